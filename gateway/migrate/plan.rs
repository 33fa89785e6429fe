//! How one migration section is run, on PostgreSQL and on CockroachDB, and which statement
//! patterns CockroachDB refuses or cannot make atomic inside a transaction.
//!
//! CockroachDB's documentation on schema changes in transactions ("Online Schema Changes",
//! Limitations) says:
//! - a schema change may not follow a write in the same transaction (SQLSTATE 0A000: the first
//!   schema change must come before the first write);
//! - only `CREATE TABLE` and `CREATE INDEX` have the same atomicity as other statements inside
//!   a transaction; any other schema change in a multi-statement transaction can fail at
//!   COMMIT after the other statements committed (SQLSTATE XXA00, "transaction committed but
//!   schema change aborted");
//! - a `CREATE TABLE` with `FOREIGN KEY` clauses cannot be followed by statements that
//!   reference the new table in the same transaction.
//!
//! So every section runs its schema changes first and writes its `schema_migrations` record
//! last. On PostgreSQL, where DDL is transactional, all of it is one transaction. On
//! CockroachDB too when the section is only statements that are atomic there; otherwise each
//! statement runs alone (its own implicit transaction, as the documentation advises) and the
//! record is written after the last one. Such statements must be idempotent (`IF [NOT]
//! EXISTS`), so that a run cut off between two of them is finished by running `migrate up`
//! again; [`cockroach_problems`] says which statements break these rules, for the lint.

/// The database behind the pool, as far as migrations care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    Postgres,
    Cockroach,
}

impl Flavor {
    /// The flavor of a server from its `SELECT version()` text.
    pub(crate) fn of_version(version: &str) -> Flavor {
        if version.contains("CockroachDB") {
            Flavor::Cockroach
        } else {
            Flavor::Postgres
        }
    }
}

/// What a statement does, as far as transactions on CockroachDB care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `INSERT`, `UPDATE`, `DELETE`, `UPSERT` (or a `WITH` around one).
    Write,
    CreateTable {
        table: String,
        foreign_keys: bool,
    },
    CreateIndex {
        table: String,
        unique: bool,
    },
    /// Any other schema change: `ALTER`, `DROP`, `TRUNCATE`, `RENAME`, `COMMENT`, `GRANT`, ...
    OtherDdl,
    /// Reads and settings (`SELECT`, `SET`, `SHOW`).
    Other,
}

impl Kind {
    pub(crate) fn is_ddl(&self) -> bool {
        matches!(
            self,
            Kind::CreateTable { .. } | Kind::CreateIndex { .. } | Kind::OtherDdl
        )
    }
}

/// One statement of a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The text, without the closing `;`.
    pub text: String,
    /// Line of its first word, counted from 1 at the start of the section.
    pub line: usize,
    pub kind: Kind,
    /// Says `IF EXISTS` or `IF NOT EXISTS`, so running it twice changes nothing.
    pub idempotent: bool,
    /// Lower-cased words, comments and string contents left out.
    words: Vec<String>,
}

/// One step of running a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Run this statement of the section.
    Run(usize),
    /// Write (`up`) or delete (`down`) the section's `schema_migrations` row.
    Record,
}

/// The transactions a section runs as, in order.
pub(crate) type Plan = Vec<Vec<Step>>;

/// How `statements` are run on `flavor`: one transaction with the record last, or on
/// CockroachDB, when a statement is not atomic there, each statement alone and then the record.
pub(crate) fn plan(statements: &[Statement], flavor: Flavor) -> Plan {
    let all: Vec<Step> = (0..statements.len()).map(Step::Run).collect();
    if flavor == Flavor::Postgres || atomic_on_cockroach(statements) {
        let mut one = all;
        one.push(Step::Record);
        return vec![one];
    }
    let mut each: Plan = all.into_iter().map(|s| vec![s]).collect();
    each.push(vec![Step::Record]);
    each
}

/// Whether CockroachDB runs all of `statements` in one transaction with the same atomicity as
/// PostgreSQL: only table and index creation, a unique index only on a table created in the
/// same section, writes only after them, and no table created with foreign keys referenced
/// again.
pub(crate) fn atomic_on_cockroach(statements: &[Statement]) -> bool {
    let mut created: Vec<&str> = Vec::new();
    let mut written = false;
    for (i, s) in statements.iter().enumerate() {
        match &s.kind {
            Kind::CreateTable { table, .. } => created.push(table),
            Kind::CreateIndex { table, unique } => {
                if *unique && !created.contains(&table.as_str()) {
                    return false;
                }
            }
            Kind::OtherDdl => return false,
            Kind::Write => written = true,
            Kind::Other => {}
        }
        if written && s.kind.is_ddl() {
            return false;
        }
        if referenced_after_foreign_key_table(statements, i) {
            return false;
        }
    }
    true
}

/// Whether statement `i` names a table that an earlier statement created with foreign keys.
fn referenced_after_foreign_key_table(statements: &[Statement], i: usize) -> bool {
    statements[..i].iter().any(|earlier| match &earlier.kind {
        Kind::CreateTable {
            table,
            foreign_keys: true,
        } => statements[i].words.iter().any(|w| w == table),
        _ => false,
    })
}

/// A statement pattern CockroachDB refuses, or cannot make atomic, in a migration.
pub const DDL_AFTER_WRITE: &str = "a schema change after a write in the same migration: CockroachDB refuses it \
     (SQLSTATE 0A000); put the data change in a later migration";
pub const FOREIGN_KEY_TABLE_REFERENCED: &str = "a table created with FOREIGN KEY clauses is referenced again in the same migration: \
     CockroachDB does not support it in one transaction; move the statement to a later migration";
pub const NOT_IDEMPOTENT: &str = "CockroachDB runs this migration statement by statement (it holds a schema change that \
     is not atomic in a transaction there), so each statement must be safe to run twice: \
     say IF [NOT] EXISTS, or make the schema change its own migration";

/// What CockroachDB refuses, or cannot make safe, in one section, as `(line, problem)`.
pub fn cockroach_problems(statements: &[Statement]) -> Vec<(usize, &'static str)> {
    let mut found = Vec::new();
    let mut written = false;
    for (i, s) in statements.iter().enumerate() {
        if written && s.kind.is_ddl() {
            found.push((s.line, DDL_AFTER_WRITE));
        }
        written |= s.kind == Kind::Write;
        if referenced_after_foreign_key_table(statements, i) {
            found.push((s.line, FOREIGN_KEY_TABLE_REFERENCED));
        }
    }
    if !atomic_on_cockroach(statements) {
        for s in statements.iter().filter(|s| !s.idempotent) {
            found.push((s.line, NOT_IDEMPOTENT));
        }
    }
    found.sort_unstable();
    found.dedup();
    found
}

/// Splits a section into statements at the `;` that are not inside a comment, a quoted
/// string or identifier, or a dollar-quoted body, and classifies each.
pub fn statements(sql: &str) -> Vec<Statement> {
    let mut out = Vec::new();
    let mut current = Scan::default();
    let chars: Vec<char> = sql.chars().collect();
    let mut line = 1;
    let mut i = 0;
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    while i < chars.len() {
        let c = chars[i];
        match c {
            '-' if at(i + 1) == '-' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '/' if at(i + 1) == '*' => {
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == '/' && at(i + 1) == '*' {
                        depth += 1;
                        i += 2;
                    } else if chars[i] == '*' && at(i + 1) == '/' {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        line += usize::from(chars[i] == '\n');
                        i += 1;
                    }
                }
                current.text.push(' ');
                continue;
            }
            '\'' | '"' => {
                let start = i;
                i += 1;
                while i < chars.len() {
                    if chars[i] == c && at(i + 1) == c {
                        i += 2;
                    } else if chars[i] == c {
                        i += 1;
                        break;
                    } else {
                        line += usize::from(chars[i] == '\n');
                        i += 1;
                    }
                }
                let quoted: String = chars[start..i].iter().collect();
                if c == '"' {
                    current.word(quoted.trim_matches('"').to_lowercase(), line);
                }
                current.text.push_str(&quoted);
                continue;
            }
            '$' if at(i + 1) == '$' => {
                let start = i;
                i += 2;
                while i < chars.len() && !(chars[i] == '$' && at(i + 1) == '$') {
                    line += usize::from(chars[i] == '\n');
                    i += 1;
                }
                i = (i + 2).min(chars.len());
                current.text.extend(&chars[start..i]);
                continue;
            }
            ';' => {
                current.finish(&mut out);
                current = Scan::default();
            }
            c if c.is_alphanumeric() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                current.word(word.to_lowercase(), line);
                current.text.push_str(&word);
                continue;
            }
            '(' | ')' | '.' => {
                current.punct(c);
                current.text.push(c);
            }
            c => {
                line += usize::from(c == '\n');
                current.text.push(c);
            }
        }
        i += 1;
    }
    current.finish(&mut out);
    out
}

/// A statement being read: its text and its words, with `(` `)` `.` kept as words of their
/// own so that names and the head of the statement can be told apart.
#[derive(Default)]
struct Scan {
    text: String,
    tokens: Vec<String>,
    line: Option<usize>,
}

impl Scan {
    fn word(&mut self, word: String, line: usize) {
        self.line.get_or_insert(line);
        self.tokens.push(word);
    }

    fn punct(&mut self, c: char) {
        self.tokens.push(c.to_string());
    }

    fn finish(self, out: &mut Vec<Statement>) {
        let Some(line) = self.line else {
            return;
        };
        let (kind, idempotent) = classify(&self.tokens);
        out.push(Statement {
            text: self.text.trim().to_string(),
            line,
            kind,
            idempotent,
            words: self
                .tokens
                .into_iter()
                .filter(|t| !matches!(t.as_str(), "(" | ")" | "."))
                .collect(),
        });
    }
}

/// The kind of a statement and whether it says `IF [NOT] EXISTS`, from its tokens.
fn classify(tokens: &[String]) -> (Kind, bool) {
    let t = |i: usize| tokens.get(i).map_or("", String::as_str);
    // The head: everything before the first parenthesis.
    let head_len = tokens.iter().position(|w| w == "(").unwrap_or(tokens.len());
    let head = &tokens[..head_len];
    let says = |w: &str| head.iter().any(|h| h == w);
    let idempotent = head
        .windows(2)
        .any(|p| p[0] == "if" && (p[1] == "exists" || p[1] == "not"));
    // The name after position `i`, skipping IF [NOT] EXISTS and ONLY and a schema qualifier.
    let name_from = |mut i: usize| {
        while matches!(t(i), "if" | "not" | "exists" | "only") {
            i += 1;
        }
        if t(i + 1) == "." {
            i += 2;
        }
        t(i).to_string()
    };
    let kind = match t(0) {
        "insert" | "update" | "delete" | "upsert" | "merge" => Kind::Write,
        "with"
            if tokens
                .iter()
                .any(|w| matches!(w.as_str(), "insert" | "update" | "delete" | "upsert")) =>
        {
            Kind::Write
        }
        "create" => {
            let mut i = 1;
            while matches!(
                t(i),
                "or" | "replace" | "unique" | "temp" | "temporary" | "unlogged"
            ) {
                i += 1;
            }
            match t(i) {
                "table" => Kind::CreateTable {
                    table: name_from(i + 1),
                    foreign_keys: tokens.iter().any(|w| w == "references"),
                },
                "index" => {
                    let on = head.iter().position(|w| w == "on").unwrap_or(head.len());
                    Kind::CreateIndex {
                        table: name_from(on + 1),
                        unique: says("unique"),
                    }
                }
                _ => Kind::OtherDdl,
            }
        }
        "alter" | "drop" | "truncate" | "rename" | "comment" | "grant" | "revoke" => Kind::OtherDdl,
        _ => Kind::Other,
    };
    (kind, idempotent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<Kind> {
        statements(sql).into_iter().map(|s| s.kind).collect()
    }

    #[test]
    fn statements_split_outside_quotes_comments_and_bodies() {
        let sql = "-- a; comment\nCREATE TABLE t (a TEXT DEFAULT ';', \"b;\" BIGINT); /* ; */\n\
                   INSERT INTO t (a) VALUES ('x;y');\n\nSELECT $$;$$;";
        let all = statements(sql);
        assert_eq!(all.len(), 3, "{all:?}");
        assert_eq!(all.iter().map(|s| s.line).collect::<Vec<_>>(), [2, 3, 5]);
        assert!(all[0].text.starts_with("CREATE TABLE t"));
        assert_eq!(
            all[0].kind,
            Kind::CreateTable {
                table: "t".into(),
                foreign_keys: false
            }
        );
        assert_eq!(all[1].kind, Kind::Write);
        assert_eq!(all[2].kind, Kind::Other);
    }

    #[test]
    fn statements_are_classified() {
        assert_eq!(
            kinds(
                "CREATE TABLE IF NOT EXISTS public.a (id UUID, u TEXT REFERENCES users (id));
                 CREATE UNIQUE INDEX IF NOT EXISTS idx_a_u ON ONLY public.a (u);
                 CREATE INDEX idx_a_id ON a (id) WHERE u IS NULL;
                 ALTER TABLE a ADD COLUMN n BIGINT; DROP TABLE IF EXISTS a;
                 WITH x AS (SELECT 1) UPDATE a SET n = 1; SET statement_timeout = 0"
            ),
            [
                Kind::CreateTable {
                    table: "a".into(),
                    foreign_keys: true
                },
                Kind::CreateIndex {
                    table: "a".into(),
                    unique: true
                },
                Kind::CreateIndex {
                    table: "a".into(),
                    unique: false
                },
                Kind::OtherDdl,
                Kind::OtherDdl,
                Kind::Write,
                Kind::Other,
            ]
        );
        let all = statements("DROP TABLE IF EXISTS a; DROP TABLE a; CREATE TABLE b (x TEXT)");
        assert_eq!(
            all.iter().map(|s| s.idempotent).collect::<Vec<_>>(),
            [true, false, false]
        );
    }

    #[test]
    fn the_record_is_written_after_every_schema_change() {
        let sql = "CREATE TABLE a (id UUID); CREATE INDEX idx_a_id ON a (id)";
        for flavor in [Flavor::Postgres, Flavor::Cockroach] {
            assert_eq!(
                plan(&statements(sql), flavor),
                [vec![Step::Run(0), Step::Run(1), Step::Record]],
                "{flavor:?}"
            );
        }
    }

    #[test]
    fn cockroach_runs_what_is_not_atomic_there_statement_by_statement() {
        let alter =
            statements("ALTER TABLE a ADD COLUMN IF NOT EXISTS n BIGINT; DROP INDEX IF EXISTS i");
        assert_eq!(
            plan(&alter, Flavor::Postgres),
            [vec![Step::Run(0), Step::Run(1), Step::Record]]
        );
        assert_eq!(
            plan(&alter, Flavor::Cockroach),
            [vec![Step::Run(0)], vec![Step::Run(1)], vec![Step::Record]]
        );
        for sql in [
            "CREATE UNIQUE INDEX i ON existing (x)",
            "CREATE TABLE a (u TEXT REFERENCES users (id)); CREATE INDEX i ON a (u)",
            "INSERT INTO a VALUES (1); CREATE TABLE b (x TEXT)",
        ] {
            assert!(!atomic_on_cockroach(&statements(sql)), "{sql}");
        }
        for sql in [
            "CREATE TABLE a (x TEXT); CREATE UNIQUE INDEX i ON a (x); INSERT INTO a VALUES ('y')",
            "CREATE TABLE a (u TEXT REFERENCES users (id)); CREATE TABLE b (x TEXT)",
        ] {
            assert!(atomic_on_cockroach(&statements(sql)), "{sql}");
        }
        assert_eq!(
            Flavor::of_version("CockroachDB CCL v24.1.0"),
            Flavor::Cockroach
        );
        assert_eq!(
            Flavor::of_version("PostgreSQL 15.2 on x86_64"),
            Flavor::Postgres
        );
    }

    #[test]
    fn problems_name_the_line() {
        let found = cockroach_problems(&statements(
            "CREATE TABLE a (x TEXT);\nINSERT INTO a VALUES ('y');\nCREATE INDEX i ON a (x)",
        ));
        assert!(found.contains(&(3, DDL_AFTER_WRITE)), "{found:?}");
        let found = cockroach_problems(&statements(
            "CREATE TABLE a (u TEXT REFERENCES users (id));\nCREATE INDEX i ON a (u)",
        ));
        assert!(
            found.contains(&(2, FOREIGN_KEY_TABLE_REFERENCED)),
            "{found:?}"
        );
        assert!(found.contains(&(1, NOT_IDEMPOTENT)), "{found:?}");
        let found = cockroach_problems(&statements("ALTER TABLE a ADD COLUMN n BIGINT"));
        assert_eq!(found, [(1, NOT_IDEMPOTENT)]);
        assert!(
            cockroach_problems(&statements(
                "ALTER TABLE a ADD COLUMN IF NOT EXISTS n BIGINT"
            ))
            .is_empty()
        );
    }
}

//! The CockroachDB compatibility lint. Production runs CockroachDB, development PostgreSQL
//! (spec section 6): SQL must avoid what only PostgreSQL has. This scans every migration and
//! every SQL string literal in `gateway/` and `loadtest/` and fails naming `file:line` and
//! the feature.
//!
//! SQL is tokenized (comments and quoted strings skipped, words compared case-insensitively
//! and whole), so `SERIALIZABLE` is not `SERIAL` and `BIGINT` is not `INT`. In Rust files only
//! string literals are looked at, never comments or code; words that are also ordinary
//! English or Rust (`LISTEN`, `INT`, `OID`, ...) count only in literals that look like SQL
//! (they start with a statement keyword, or contain an upper-case SELECT, INSERT, UPDATE,
//! DELETE, CREATE, ALTER or DROP), so `TcpListener` or a `listen` key is not an error.
//! `FOR UPDATE SKIP LOCKED` is fine: CockroachDB has it. `pg_sleep` is fine in test code (after
//! a file's `#[cfg(test)]`).
//!
//! Not caught: SQL assembled at run time from fragments that carry no statement keyword.
//!
//! Migrations also get the checks of CockroachDB's rules for schema changes in transactions
//! (`gateway::migrate::plan`: no schema change after a write, no second use of a table created
//! with foreign keys, idempotent statements where CockroachDB runs a migration statement by
//! statement), per section, as the migrator runs it.

use gateway::migrate::plan;

use std::fmt;
use std::path::{Path, PathBuf};

/// One use of a PostgreSQL-only feature.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Finding {
    file: String,
    line: usize,
    feature: &'static str,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.feature)
    }
}

const ADVISORY: &str = "advisory locks (pg_advisory_*): CockroachDB has none";
const LISTEN_NOTIFY: &str = "LISTEN/NOTIFY: CockroachDB has none";
const FULL_TEXT: &str = "full-text search (tsvector/tsquery): PostgreSQL-only";
const SERIAL: &str = "SERIAL column: a sequence-backed key (use UUID)";
const SEQUENCE: &str = "sequences (CREATE SEQUENCE, nextval): use UUID keys";
const CONCURRENTLY: &str = "CREATE INDEX CONCURRENTLY: PostgreSQL-only";
const TRIGGER: &str = "CREATE TRIGGER: no triggers (set updated_at in each UPDATE)";
const FUNCTION: &str = "stored functions (CREATE FUNCTION, LANGUAGE plpgsql, DO blocks)";
const EXTENSION: &str = "CREATE EXTENSION: PostgreSQL-only";
const RULE: &str = "CREATE RULE: PostgreSQL-only";
const INHERITS: &str = "table inheritance (INHERITS): PostgreSQL-only";
const EXCLUDE: &str = "exclusion constraint (EXCLUDE USING): PostgreSQL-only";
const REGCLASS: &str = "OID alias cast (::regclass and the like): PostgreSQL catalogs";
const LARGE_OBJECT: &str = "large objects (lo_*): PostgreSQL-only";
const BARE_INT: &str =
    "bare INT/INTEGER/INT4/SMALLINT: 32 bits on PostgreSQL, 64 on CockroachDB (use BIGINT)";
const SYSTEM_COLUMN: &str = "system column (xmin, ctid, oid, ...): PostgreSQL internals";
const LOCK_TABLE: &str = "LOCK TABLE: CockroachDB has none";
const PG_SLEEP: &str = "pg_sleep outside tests";

/// A Rust string literal starting with one of these is SQL (a lower-case `listen` or `do` is
/// too often a config key or an English word to count).
const STATEMENT_KEYWORDS: [&str; 16] = [
    "SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "ALTER", "DROP", "WITH", "BEGIN", "COMMIT",
    "LISTEN", "NOTIFY", "UNLISTEN", "LOCK", "TRUNCATE", "DO",
];
const LOWER_CASE_STATEMENT_KEYWORDS: [&str; 7] = [
    "select", "insert", "update", "delete", "create", "alter", "drop",
];

/// A Rust string literal containing one of these (in upper case, as a word) is SQL.
const SQL_KEYWORDS: [&str; 7] = [
    "SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "ALTER", "DROP",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Word,
    Punct,
}

#[derive(Debug, Clone)]
struct Token {
    /// Lower-cased.
    text: String,
    kind: Kind,
    line: usize,
}

/// Tokenizes SQL: words (`[A-Za-z0-9_]+` and quoted identifiers) and punctuation (`::` and `$$`
/// as one token). Skips `--` and `/* */` comments and `'...'` strings. `first_line` is the
/// line the text starts on.
fn sql_tokens(sql: &str, first_line: usize) -> Vec<Token> {
    let chars: Vec<char> = sql.chars().collect();
    let mut tokens = Vec::new();
    let mut line = first_line;
    let mut i = 0;
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            c if c.is_whitespace() => i += 1,
            '-' if at(i + 1) == '-' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
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
                        if chars[i] == '\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                }
            }
            '\'' => {
                i += 1;
                while i < chars.len() {
                    if chars[i] == '\'' {
                        if at(i + 1) == '\'' {
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
            '"' => {
                let start_line = line;
                let mut text = String::new();
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    text.push(chars[i]);
                    i += 1;
                }
                i += 1;
                tokens.push(Token {
                    text: text.to_lowercase(),
                    kind: Kind::Word,
                    line: start_line,
                });
            }
            c if c.is_alphanumeric() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                tokens.push(Token {
                    text: chars[start..i].iter().collect::<String>().to_lowercase(),
                    kind: Kind::Word,
                    line,
                });
            }
            ':' if at(i + 1) == ':' => {
                tokens.push(Token {
                    text: "::".into(),
                    kind: Kind::Punct,
                    line,
                });
                i += 2;
            }
            '$' if at(i + 1) == '$' => {
                tokens.push(Token {
                    text: "$$".into(),
                    kind: Kind::Punct,
                    line,
                });
                i += 2;
            }
            c => {
                tokens.push(Token {
                    text: c.to_string(),
                    kind: Kind::Punct,
                    line,
                });
                i += 1;
            }
        }
    }
    tokens
}

/// Where a piece of SQL comes from, which decides which rules apply to it.
#[derive(Debug, Clone, Copy)]
struct Context {
    /// A migration, or a Rust literal that looks like SQL: every rule applies. Else only the
    /// rules whose words never occur outside SQL.
    sql: bool,
    /// Test code, where `pg_sleep` is fine.
    test: bool,
}

/// The PostgreSQL-only features used in `sql`, as `(line, feature)`.
fn lint_sql(sql: &str, first_line: usize, context: Context) -> Vec<(usize, &'static str)> {
    let tokens = sql_tokens(sql, first_line);
    let word = |i: usize| {
        tokens
            .get(i)
            .filter(|t| t.kind == Kind::Word)
            .map(|t| t.text.as_str())
    };
    let punct = |i: usize| {
        tokens
            .get(i)
            .filter(|t| t.kind == Kind::Punct)
            .map(|t| t.text.as_str())
    };
    // `CREATE [OR REPLACE] [CONSTRAINT | TEMP | TEMPORARY | EVENT | UNLOGGED] <i>`.
    let created = |i: usize| {
        let mut j = i;
        for _ in 0..3 {
            if j == 0 {
                return false;
            }
            j -= 1;
            match word(j) {
                Some("create") => return true,
                Some(
                    "or" | "replace" | "constraint" | "temp" | "temporary" | "event" | "unlogged",
                ) => {}
                _ => return false,
            }
        }
        false
    };
    let mut found = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let mut flag = |feature: &'static str, anywhere: bool| {
            if anywhere || context.sql {
                found.push((token.line, feature));
            }
        };
        if token.kind == Kind::Punct {
            let next = word(i + 1).unwrap_or("");
            let reg = [
                "regclass",
                "regtype",
                "regproc",
                "regprocedure",
                "regoper",
                "regoperator",
                "regnamespace",
                "regrole",
                "regconfig",
                "regdictionary",
                "regcollation",
            ];
            if token.text == "::" && reg.contains(&next) {
                flag(REGCLASS, true);
            }
            continue;
        }
        let w = token.text.as_str();
        let next_is_paren = punct(i + 1) == Some("(");
        match w {
            _ if w.starts_with("pg_advisory_") || w.starts_with("pg_try_advisory_") => {
                flag(ADVISORY, true)
            }
            "pg_notify" => flag(LISTEN_NOTIFY, true),
            "listen" | "unlisten" | "notify" => flag(LISTEN_NOTIFY, false),
            _ if w.contains("tsvector") || w.contains("tsquery") => flag(FULL_TEXT, true),
            "ts_rank" | "ts_rank_cd" | "ts_headline" => flag(FULL_TEXT, true),
            "bigserial" | "smallserial" | "serial2" | "serial4" | "serial8" => flag(SERIAL, true),
            "serial" => flag(SERIAL, false),
            "sequence"
                if created(i) || matches!(word(i.wrapping_sub(1)), Some("alter" | "drop")) =>
            {
                flag(SEQUENCE, false)
            }
            "nextval" | "currval" | "setval" | "lastval" if next_is_paren => flag(SEQUENCE, true),
            "concurrently" => flag(CONCURRENTLY, false),
            "trigger" if created(i) => flag(TRIGGER, false),
            "function" | "procedure" if created(i) => flag(FUNCTION, false),
            "plpgsql" => flag(FUNCTION, true),
            "do" if punct(i + 1) == Some("$$") => flag(FUNCTION, false),
            "extension" if created(i) => flag(EXTENSION, false),
            "rule" if created(i) => flag(RULE, false),
            "inherits" => flag(INHERITS, false),
            "exclude" if word(i + 1) == Some("using") => flag(EXCLUDE, false),
            _ if w.starts_with("lo_") && next_is_paren => flag(LARGE_OBJECT, false),
            "int" | "integer" | "int4" | "int2" | "smallint" => flag(BARE_INT, false),
            "xmin" | "xmax" | "cmin" | "cmax" | "ctid" | "tableoid" => flag(SYSTEM_COLUMN, true),
            "oid" | "oids" => flag(SYSTEM_COLUMN, false),
            "lock" if word(i + 1) == Some("table") => flag(LOCK_TABLE, false),
            "pg_sleep" | "pg_sleep_for" | "pg_sleep_until" if !context.test => flag(PG_SLEEP, true),
            _ => {}
        }
    }
    found
}

/// The string literals of Rust source, as `(line of the opening quote, text between the
/// quotes)`. Skips comments, char literals and lifetimes; knows raw strings (`r#"..."#`),
/// byte and C strings. Escapes are left as they are.
fn rust_string_literals(src: &str) -> Vec<(usize, &str)> {
    let b = src.as_bytes();
    let mut literals = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80;
    while i < b.len() {
        match b[i] {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        if b[i] == b'\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                }
            }
            b'"' => {
                let (end, lines) = quoted_end(b, i + 1);
                literals.push((line, &src[i + 1..end]));
                line += lines;
                i = end + 1;
            }
            b'\'' => {
                if b.get(i + 1) == Some(&b'\\') {
                    // An escaped char literal: '\'', '\n', '\u{..}'.
                    let close = (i + 3..b.len()).find(|&j| b[j] == b'\'').unwrap_or(b.len());
                    i = close + 1;
                } else {
                    let ch_len = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                    if b.get(i + 1 + ch_len) == Some(&b'\'') {
                        i += ch_len + 2; // 'x'
                    } else {
                        i += 1; // a lifetime or label
                    }
                }
            }
            c if is_ident(c) => {
                let start = i;
                while i < b.len() && is_ident(b[i]) {
                    i += 1;
                }
                let ident = &src[start..i];
                if matches!(ident, "r" | "br" | "cr") {
                    let hashes = b[i..].iter().take_while(|&&c| c == b'#').count();
                    if b.get(i + hashes) == Some(&b'"') {
                        let open = i + hashes + 1;
                        let closing = format!("\"{}", "#".repeat(hashes));
                        let end = src[open..].find(&closing).map_or(b.len(), |p| open + p);
                        let text = &src[open..end];
                        literals.push((line, text));
                        line += text.matches('\n').count();
                        i = (end + closing.len()).min(b.len());
                    }
                } else if matches!(ident, "b" | "c") && b.get(i) == Some(&b'"') {
                    let (end, lines) = quoted_end(b, i + 1);
                    literals.push((line, &src[i + 1..end]));
                    line += lines;
                    i = end + 1;
                }
            }
            _ => i += 1,
        }
    }
    literals
}

/// The index of the closing `"` of a string whose text starts at `start`, and the newlines
/// inside it.
fn quoted_end(b: &[u8], start: usize) -> (usize, usize) {
    let mut lines = 0;
    let mut j = start;
    while j < b.len() {
        match b[j] {
            b'\\' => {
                if b.get(j + 1) == Some(&b'\n') {
                    lines += 1;
                }
                j += 2;
            }
            b'"' => return (j, lines),
            b'\n' => {
                lines += 1;
                j += 1;
            }
            _ => j += 1,
        }
    }
    (b.len(), lines)
}

fn looks_like_sql(literal: &str) -> bool {
    let mut words = literal
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty());
    let starts_like_sql = literal
        .trim_start()
        .starts_with(|c: char| c.is_alphabetic())
        && words.next().is_some_and(|first| {
            STATEMENT_KEYWORDS.contains(&first) || LOWER_CASE_STATEMENT_KEYWORDS.contains(&first)
        });
    starts_like_sql || words.any(|w| SQL_KEYWORDS.contains(&w))
}

/// Lints a Rust source file: its string literals.
fn lint_rust(file: &str, src: &str) -> Vec<Finding> {
    let tests_from = src
        .lines()
        .position(|l| l.trim_start().starts_with("#[cfg(test)]"))
        .map_or(usize::MAX, |i| i + 1);
    let mut findings = Vec::new();
    for (line, literal) in rust_string_literals(src) {
        let context = Context {
            sql: looks_like_sql(literal),
            test: line >= tests_from,
        };
        findings.extend(
            lint_sql(literal, line, context)
                .into_iter()
                .map(|(line, feature)| Finding {
                    file: file.to_string(),
                    line,
                    feature,
                }),
        );
    }
    findings
}

/// Lints an SQL file: all of it is SQL.
fn lint_sql_file(file: &str, src: &str) -> Vec<Finding> {
    let context = Context {
        sql: true,
        test: false,
    };
    lint_sql(src, 1, context)
        .into_iter()
        .map(|(line, feature)| Finding {
            file: file.to_string(),
            line,
            feature,
        })
        .collect()
}

fn files_under(dir: &Path, extension: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if path.is_dir() {
            files_under(&path, extension, out);
        } else if path.extension().is_some_and(|e| e == extension) {
            out.push(path);
        }
    }
}

#[test]
fn no_postgresql_only_sql_in_the_tree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sql_files = Vec::new();
    files_under(&root.join("migrations"), "sql", &mut sql_files);
    let mut rust_files = Vec::new();
    files_under(&root.join("gateway"), "rs", &mut rust_files);
    files_under(&root.join("loadtest"), "rs", &mut rust_files);
    assert!(
        !sql_files.is_empty(),
        "no migrations found under {}",
        root.display()
    );
    assert!(
        rust_files.iter().any(|p| p.ends_with("gateway/db.rs")),
        "gateway sources not found under {}",
        root.display()
    );

    let mut findings = Vec::new();
    let mut literals = 0;
    for path in sql_files.iter().chain(&rust_files) {
        let src =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = path
            .strip_prefix(root)
            .unwrap_or(path)
            .display()
            .to_string();
        if path.extension().is_some_and(|e| e == "sql") {
            findings.extend(lint_sql_file(&name, &src));
        } else {
            literals += rust_string_literals(&src)
                .iter()
                .filter(|(_, l)| looks_like_sql(l))
                .count();
            findings.extend(lint_rust(&name, &src));
        }
    }
    assert!(
        literals > 10,
        "only {literals} SQL literals found: is the scanner broken?"
    );
    let report: Vec<String> = findings.iter().map(ToString::to_string).collect();
    assert!(
        findings.is_empty(),
        "PostgreSQL-only SQL (the schema and queries must also run on CockroachDB):\n  {}",
        report.join("\n  ")
    );
}

/// Every sample must be caught, as a migration and inside a Rust string literal.
#[test]
fn the_lint_catches_every_forbidden_pattern() {
    let samples: &[(&str, &str)] = &[
        ("SELECT pg_advisory_lock(42)", ADVISORY),
        ("SELECT pg_try_advisory_xact_lock(1)", ADVISORY),
        ("LISTEN sessions_revoked", LISTEN_NOTIFY),
        ("NOTIFY sessions_revoked, 'x'", LISTEN_NOTIFY),
        ("SELECT pg_notify('c', 'x')", LISTEN_NOTIFY),
        ("ALTER TABLE users ADD COLUMN doc tsvector", FULL_TEXT),
        (
            "SELECT * FROM users WHERE to_tsvector(email) @@ to_tsquery($1)",
            FULL_TEXT,
        ),
        ("CREATE TABLE t (id SERIAL PRIMARY KEY)", SERIAL),
        ("CREATE TABLE t (id bigserial PRIMARY KEY)", SERIAL),
        ("CREATE TABLE t (id SmallSerial)", SERIAL),
        ("CREATE SEQUENCE user_ids", SEQUENCE),
        ("CREATE TEMP SEQUENCE s", SEQUENCE),
        ("INSERT INTO t (id) VALUES (nextval('user_ids'))", SEQUENCE),
        ("CREATE INDEX CONCURRENTLY idx_t_a ON t (a)", CONCURRENTLY),
        (
            "CREATE UNIQUE INDEX CONCURRENTLY idx_t_a ON t (a)",
            CONCURRENTLY,
        ),
        (
            "CREATE TRIGGER touch BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION f()",
            TRIGGER,
        ),
        (
            "CREATE OR REPLACE TRIGGER touch BEFORE UPDATE ON users",
            TRIGGER,
        ),
        (
            "CREATE FUNCTION f() RETURNS BIGINT AS $$ SELECT 1 $$ LANGUAGE sql",
            FUNCTION,
        ),
        (
            "CREATE OR REPLACE FUNCTION f() RETURNS trigger AS $$ BEGIN END $$ LANGUAGE plpgsql",
            FUNCTION,
        ),
        ("DO $$ BEGIN PERFORM 1; END $$", FUNCTION),
        ("CREATE EXTENSION IF NOT EXISTS pgcrypto", EXTENSION),
        ("CREATE RULE r AS ON INSERT TO t DO INSTEAD NOTHING", RULE),
        ("CREATE TABLE child (x BIGINT) INHERITS (parent)", INHERITS),
        (
            "ALTER TABLE t ADD CONSTRAINT c EXCLUDE USING gist (r WITH &&)",
            EXCLUDE,
        ),
        ("SELECT 'users'::regclass", REGCLASS),
        (
            "SELECT relname FROM pg_class WHERE oid = $1::REGCLASS",
            REGCLASS,
        ),
        ("SELECT lo_import('/etc/passwd')", LARGE_OBJECT),
        ("CREATE TABLE t (n INT NOT NULL)", BARE_INT),
        ("CREATE TABLE t (n integer)", BARE_INT),
        ("ALTER TABLE t ADD COLUMN n INT4", BARE_INT),
        ("SELECT $1::int", BARE_INT),
        ("CREATE TABLE t (n SMALLINT)", BARE_INT),
        ("SELECT xmin FROM users", SYSTEM_COLUMN),
        (
            "UPDATE users SET status = $1 WHERE ctid = $2",
            SYSTEM_COLUMN,
        ),
        ("SELECT oid FROM users", SYSTEM_COLUMN),
        (
            "INSERT INTO t VALUES (1) RETURNING (xmax = 0)",
            SYSTEM_COLUMN,
        ),
        ("LOCK TABLE users IN EXCLUSIVE MODE", LOCK_TABLE),
        ("SELECT pg_sleep(1)", PG_SLEEP),
    ];
    let all = Context {
        sql: true,
        test: false,
    };
    for (sample, feature) in samples {
        let found = lint_sql(sample, 1, all);
        assert!(
            found.iter().any(|(_, f)| f == feature),
            "{sample:?} must be flagged as {feature:?}: {found:?}"
        );
        let rust = format!("fn f() {{\n    let q = \"{sample}\";\n}}\n");
        let found = lint_rust("x.rs", &rust);
        assert!(
            found.iter().any(|f| f.feature == *feature && f.line == 2),
            "{sample:?} in a Rust literal must be flagged as {feature:?} on line 2: {found:?}"
        );
        let raw = format!("const Q: &str = r#\"\n{sample}\n\"#;\n");
        let found = lint_rust("x.rs", &raw);
        assert!(
            found.iter().any(|f| f.feature == *feature && f.line == 2),
            "{sample:?} in a raw string must be flagged as {feature:?} on line 2: {found:?}"
        );
    }
    let migration = "-- migrate:up\nCREATE TABLE t (\n    id BIGINT,\n    n INTEGER\n);\n";
    assert_eq!(
        lint_sql_file("migrations/009_x.sql", migration),
        [Finding {
            file: "migrations/009_x.sql".into(),
            line: 4,
            feature: BARE_INT,
        }]
    );
    assert_eq!(
        lint_sql_file("m.sql", "SELECT 1;\nSELECT lo_unlink(4);")
            .first()
            .map(ToString::to_string),
        Some(format!("m.sql:2: {LARGE_OBJECT}"))
    );
}

#[test]
fn ordinary_code_and_portable_sql_are_not_flagged() {
    let rust = r#"
//! LISTEN for changes: CREATE SEQUENCE in a comment, SERIAL ids, INT counters.
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// `DO $$` in a doc comment, pg_advisory_lock(1) too.
const SQL: &str = "SELECT id FROM sessions WHERE revoked_at IS NULL FOR UPDATE SKIP LOCKED";
const BEGIN: &str = "BEGIN ISOLATION LEVEL SERIALIZABLE";
const INSERT: &str = "INSERT INTO sessions (expires_at) VALUES (now() + ($7::BIGINT * INTERVAL '1 second'))";
const CREATE: &str = "CREATE TABLE t (id UUID NOT NULL DEFAULT gen_random_uuid(), n BIGINT, -- INT
    note TEXT DEFAULT 'no SERIAL or INT here', /* nextval( */ lock_id BIGINT)";
const PAIR: &str = "CREATE UNIQUE INDEX idx_t_a_b ON t (a, b) WHERE deleted_at IS NULL";

fn listen(listener: &TcpListener, notify: &Notify) {
    let quote = '"';
    let label = 'outer: loop { break 'outer 1 };
    let r#type = "x";
    let message = "takes an integer, got `{value}`; set server.listen to an address";
    let key = "listen";
    let help = "the int value of oid, see LISTEN and NOTIFY in the docs";
    let bytes = b"INT";
    let raw = r"SERIAL";
}

#[cfg(test)]
mod tests {
    const SLOW: &str = "SELECT pg_sleep(0.1)";
}
"#;
    let found = lint_rust("x.rs", rust);
    assert!(found.is_empty(), "false positives: {found:?}");
    let found = lint_sql_file(
        "m.sql",
        "-- SERIAL, INT, LISTEN in a comment\n/* CREATE TRIGGER /* nested */ DO $$ */\n\
         CREATE TABLE t (id UUID, n BIGINT, s TEXT CHECK (s IN ('int', 'serial')));\n\
         CREATE INDEX idx_t_n ON t (n) WHERE n > 0;\nSELECT 1 FROM t FOR UPDATE SKIP LOCKED;",
    );
    assert!(found.is_empty(), "false positives: {found:?}");
}

#[test]
fn pg_sleep_is_allowed_only_in_tests() {
    let rust = "const A: &str = \"SELECT pg_sleep(1)\";\n#[cfg(test)]\nmod tests {\n    const B: &str = \"SELECT pg_sleep(1)\";\n}\n";
    let found = lint_rust("x.rs", rust);
    assert_eq!(
        found,
        [Finding {
            file: "x.rs".into(),
            line: 1,
            feature: PG_SLEEP,
        }]
    );
}

#[test]
fn the_scanner_understands_rust_literals() {
    let src = "let a = '\"'; let b = \"SELECT \\\"x\\\"\";\n// \"SELECT xmin\"\nlet c = br##\"say \"#hi\"# ok\"##;\nlet d = '\\'';\nlet e = \"multi\nline\";";
    let literals = rust_string_literals(src);
    assert_eq!(
        literals,
        [
            (1, "SELECT \\\"x\\\""),
            (3, "say \"#hi\"# ok"),
            (5, "multi\nline")
        ]
    );
    let found = lint_rust(
        "x.rs",
        "let q = \"SELECT 1,\n  2,\n  xmin FROM t\";\nlet r = \"after\";",
    );
    assert_eq!(found.iter().map(|f| f.line).collect::<Vec<_>>(), [3]);
}

/// Migrations that predate the CockroachDB transaction checks, the problems they are allowed,
/// and why that is safe. 001 creates `sessions` (and others) with foreign keys and then their
/// indexes: CockroachDB documents that as unsupported in one transaction, so the migrator runs
/// 001's up section statement by statement there (see `plan::plan`), on what must be an empty
/// database (001 is the first migration), and migrations are never edited.
const BEFORE_THE_RULES: &[(i64, &str, &[&str])] = &[(
    1,
    "up",
    &[plan::FOREIGN_KEY_TABLE_REFERENCED, plan::NOT_IDEMPOTENT],
)];

/// The CockroachDB transaction problems of one migration file, as findings at file lines.
fn lint_migration_transactions(file: &str, src: &str) -> Vec<Finding> {
    let name = Path::new(file)
        .file_name()
        .map_or(file.to_string(), |n| n.to_string_lossy().into_owned());
    let migration = gateway::migrate::parse(&name, src).unwrap_or_else(|e| panic!("{e}"));
    let mut findings = Vec::new();
    for (section, marker, sql) in [
        ("up", "-- migrate:up", &migration.up),
        ("down", "-- migrate:down", &migration.down),
    ] {
        // Line of the section's first statement in the file: the parser trims the section.
        let offset = src.find(marker).map_or(0, |at| {
            let body = at + marker.len();
            let first = src[body..]
                .find(|c: char| !c.is_whitespace())
                .map_or(body, |i| body + i);
            src[..first].matches('\n').count()
        });
        let allowed = BEFORE_THE_RULES
            .iter()
            .find(|(v, s, _)| *v == migration.version && *s == section)
            .map_or(&[][..], |(_, _, problems)| *problems);
        for (line, problem) in plan::cockroach_problems(&plan::statements(sql)) {
            if !allowed.contains(&problem) {
                findings.push(Finding {
                    file: file.to_string(),
                    line: offset + line,
                    feature: problem,
                });
            }
        }
    }
    findings
}

#[test]
fn migrations_follow_cockroachdbs_rules_for_schema_changes_in_transactions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sql_files = Vec::new();
    files_under(&root.join("migrations"), "sql", &mut sql_files);
    sql_files.sort();
    assert!(sql_files.len() >= 2, "no migrations found");
    let mut findings = Vec::new();
    for path in &sql_files {
        let src = std::fs::read_to_string(path).unwrap();
        let name = path.strip_prefix(root).unwrap().display().to_string();
        findings.extend(lint_migration_transactions(&name, &src));
    }
    let report: Vec<String> = findings.iter().map(ToString::to_string).collect();
    assert!(
        findings.is_empty(),
        "migrations CockroachDB cannot run as written:\n  {}",
        report.join("\n  ")
    );
}

#[test]
fn the_migration_lint_catches_what_cockroachdb_refuses_in_transactions() {
    let samples: &[(&str, usize, &str)] = &[
        (
            "CREATE TABLE a (x TEXT);\nINSERT INTO a VALUES ('seed');\nCREATE INDEX idx_a_x ON a (x);",
            3,
            plan::DDL_AFTER_WRITE,
        ),
        (
            "UPDATE users SET status = 'active';\nALTER TABLE users ADD COLUMN IF NOT EXISTS n BIGINT;",
            2,
            plan::DDL_AFTER_WRITE,
        ),
        (
            "CREATE TABLE a (u TEXT REFERENCES users (id));\nCREATE INDEX idx_a_u ON a (u);",
            2,
            plan::FOREIGN_KEY_TABLE_REFERENCED,
        ),
        (
            "CREATE TABLE a (u TEXT, CONSTRAINT a_u_fkey FOREIGN KEY (u) REFERENCES users (id));\n\
             INSERT INTO a (u) SELECT id FROM users;",
            2,
            plan::FOREIGN_KEY_TABLE_REFERENCED,
        ),
        (
            "ALTER TABLE users ADD COLUMN n BIGINT;",
            1,
            plan::NOT_IDEMPOTENT,
        ),
        (
            "CREATE UNIQUE INDEX idx_users_x ON users (x);",
            1,
            plan::NOT_IDEMPOTENT,
        ),
        (
            "ALTER TABLE users ADD COLUMN IF NOT EXISTS n BIGINT;\nUPDATE users SET n = 0;",
            2,
            plan::NOT_IDEMPOTENT,
        ),
    ];
    for (section, line, problem) in samples {
        let file =
            format!("-- 009_x: a sample\n\n-- migrate:up\n{section}\n-- migrate:down\nSELECT 1;\n");
        let found = lint_migration_transactions("migrations/009_x.sql", &file);
        assert!(
            found
                .iter()
                .any(|f| f.feature == *problem && f.line == 3 + line),
            "{section:?} must be flagged on line {} as {problem:?}: {found:?}",
            3 + line
        );
    }
    for fine in [
        "CREATE TABLE a (x TEXT);\nCREATE UNIQUE INDEX idx_a_x ON a (x);\nINSERT INTO a VALUES ('seed');",
        "CREATE TABLE a (u TEXT REFERENCES users (id));\nCREATE TABLE b (x TEXT);",
        "CREATE INDEX idx_users_status ON users (status);",
        "ALTER TABLE users ADD COLUMN IF NOT EXISTS n BIGINT;\nDROP INDEX IF EXISTS idx_users_n;",
    ] {
        let file = format!("-- migrate:up\n{fine}\n-- migrate:down\nDROP TABLE IF EXISTS a;\n");
        let found = lint_migration_transactions("migrations/009_x.sql", &file);
        assert!(found.is_empty(), "{fine:?} flagged: {found:?}");
    }
}

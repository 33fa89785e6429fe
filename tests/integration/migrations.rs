//! The embedded migrations: they build the schema the spec asks for (section 6 and the
//! database-architect rules), roll back cleanly, refuse a changed or unknown history, and are
//! safe to run from several processes at once.

use std::collections::BTreeSet;
use std::time::Duration;

use deadpool_postgres::Pool;
use gateway::migrate::{self, MigrateError, State};

use crate::support::{TestDb, cli, gateway};

/// The tables of `001_create_users.sql`, as the seed lists them.
const AUTH_TABLES: [&str; 6] = [
    "users",
    "user_passwords",
    "sessions",
    "auth_codes",
    "user_roles",
    "oauth_connections",
];

fn all_versions() -> Vec<i64> {
    migrate::embedded().iter().map(|m| m.version).collect()
}

/// `001_create_users`: how messages name the first migration.
fn first_migration_label() -> String {
    let first = &migrate::embedded()[0];
    format!("{:03}_{}", first.version, first.name)
}

/// Everything the migrations decide about the `public` schema, one sorted line per fact:
/// relations, columns (type, nullability, default), indexes (`pg_get_indexdef`), constraints
/// (`pg_get_constraintdef`), triggers, functions, types, extensions, and the
/// `schema_migrations` rows without their `applied_at`.
async fn schema(pool: &Pool) -> Vec<String> {
    const QUERIES: &[&str] = &[
        "SELECT format('relation %s kind=%s persistence=%s', c.relname, c.relkind, c.relpersistence)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')",
        "SELECT format('column %s.%s #%s type=%s/%s len=%s nullable=%s default=%s identity=%s generated=%s collation=%s',
                table_name, column_name, ordinal_position, data_type, udt_name,
                coalesce(character_maximum_length::TEXT, '-'), is_nullable, coalesce(column_default, '-'),
                is_identity, is_generated, coalesce(collation_name, '-'))
         FROM information_schema.columns WHERE table_schema = 'public'",
        "SELECT format('index %s on %s: %s', indexname, tablename, indexdef)
         FROM pg_indexes WHERE schemaname = 'public'",
        "SELECT format('constraint %s on %s: type=%s %s', con.conname, cls.relname, con.contype,
                pg_get_constraintdef(con.oid))
         FROM pg_constraint con
         JOIN pg_class cls ON cls.oid = con.conrelid
         JOIN pg_namespace n ON n.oid = cls.relnamespace
         WHERE n.nspname = 'public'",
        "SELECT format('trigger %s on %s', t.tgname, c.relname)
         FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND NOT t.tgisinternal",
        "SELECT format('function %s(%s)', p.proname, pg_get_function_identity_arguments(p.oid))
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'",
        "SELECT format('type %s kind=%s', t.typname, t.typtype)
         FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
         WHERE n.nspname = 'public'
           AND (t.typtype IN ('e', 'd', 'r', 'm')
                OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))",
        "SELECT format('extension %s %s', extname, extversion) FROM pg_extension",
    ];
    let client = pool.get().await.expect("connection");
    let mut lines = Vec::new();
    for sql in QUERIES {
        for row in client
            .query(*sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
        {
            lines.push(row.get::<_, String>(0));
        }
    }
    let has_table = client
        .query_one(
            "SELECT count(*) FROM information_schema.tables
             WHERE table_schema = 'public' AND table_name = 'schema_migrations'",
            &[],
        )
        .await
        .expect("catalog")
        .get::<_, i64>(0)
        > 0;
    if has_table {
        let rows = client
            .query("SELECT format('migration %s %s %s', version, name, checksum) FROM schema_migrations", &[])
            .await
            .expect("schema_migrations");
        lines.extend(rows.iter().map(|r| r.get::<_, String>(0)));
    }
    lines.sort();
    lines
}

#[track_caller]
fn assert_same_schema(actual: &[String], expected: &[String], what: &str) {
    let actual_set: BTreeSet<_> = actual.iter().collect();
    let expected_set: BTreeSet<_> = expected.iter().collect();
    let missing: Vec<_> = expected_set.difference(&actual_set).collect();
    let extra: Vec<_> = actual_set.difference(&expected_set).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && actual.len() == expected.len(),
        "{what}: the schema differs\n  missing: {missing:#?}\n  extra: {extra:#?}"
    );
}

#[tokio::test]
async fn up_down_up_restores_the_identical_schema() {
    let db = TestDb::empty().await;
    let pool = db.pool();
    assert_eq!(migrate::up(pool, None).await.unwrap(), all_versions());
    let migrated = schema(pool).await;
    for table in AUTH_TABLES {
        assert!(
            migrated
                .iter()
                .any(|l| l.starts_with(&format!("relation {table} kind=r"))),
            "{table} not created: {migrated:#?}"
        );
    }

    let mut newest_first = all_versions();
    newest_first.reverse();
    assert_eq!(migrate::down(pool, Some(0)).await.unwrap(), newest_first);
    let rolled_back = schema(pool).await;
    let leftovers: Vec<_> = rolled_back
        .iter()
        .filter(|l| {
            !(l.starts_with("column schema_migrations.")
                || l.starts_with("relation schema_migrations ")
                || l.starts_with("index schema_migrations_pkey ")
                || l.starts_with("constraint schema_migrations_pkey ")
                || l.starts_with("extension "))
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "down --to 0 left these behind: {leftovers:#?}"
    );

    assert_eq!(migrate::up(pool, None).await.unwrap(), all_versions());
    assert_same_schema(&schema(pool).await, &migrated, "up, down, up");

    // The same round trip through the binary.
    let down = cli(&db, &["migrate", "down", "--to", "0"], None).await;
    down.expect_code(0)
        .expect_output(&format!("rolled back {:03}", all_versions()[0]));
    assert!(
        migrate::status(pool).await.unwrap().current_version() == 0,
        "{down}"
    );
    cli(&db, &["migrate", "up"], None).await.expect_code(0);
    assert_same_schema(
        &schema(pool).await,
        &migrated,
        "gateway migrate down --to 0, then up",
    );

    // And the template every other test clones was built the same way.
    let cloned = TestDb::new().await;
    assert_same_schema(&schema(cloned.pool()).await, &migrated, "template clone");
}

/// One index of the public schema, from the catalog.
#[derive(Debug)]
struct Index {
    table: String,
    name: String,
    primary: bool,
    unique: bool,
    definition: String,
    /// `pg_get_expr` of the WHERE clause of a partial index, else empty.
    predicate: String,
    columns: Vec<String>,
}

async fn indexes(pool: &Pool) -> Vec<Index> {
    let client = pool.get().await.expect("connection");
    let rows = client
        .query(
            "SELECT t.relname::TEXT, i.relname::TEXT, x.indisprimary, x.indisunique,
                    pg_get_indexdef(x.indexrelid), coalesce(pg_get_expr(x.indpred, x.indrelid), ''),
                    ARRAY(SELECT a.attname::TEXT
                          FROM unnest(x.indkey::INT2[]) WITH ORDINALITY AS k(attnum, ord)
                          JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
                          ORDER BY k.ord)
             FROM pg_index x
             JOIN pg_class i ON i.oid = x.indexrelid
             JOIN pg_class t ON t.oid = x.indrelid
             JOIN pg_namespace n ON n.oid = t.relnamespace
             WHERE n.nspname = 'public'",
            &[],
        )
        .await
        .expect("pg_index");
    rows.iter()
        .map(|r| Index {
            table: r.get(0),
            name: r.get(1),
            primary: r.get(2),
            unique: r.get(3),
            definition: r.get(4),
            predicate: r.get(5),
            columns: r.get(6),
        })
        .collect()
}

/// One column: table, name, type (udt name), nullable, default.
type Column = (String, String, String, bool, Option<String>);

async fn columns(pool: &Pool) -> Vec<Column> {
    let client = pool.get().await.expect("connection");
    let rows = client
        .query(
            "SELECT table_name::TEXT, column_name::TEXT, udt_name::TEXT, is_nullable = 'YES', column_default::TEXT
             FROM information_schema.columns WHERE table_schema = 'public'",
            &[],
        )
        .await
        .expect("information_schema.columns");
    rows.iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

#[tokio::test]
async fn the_schema_follows_the_data_rules() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let columns = columns(pool).await;
    let indexes = indexes(pool).await;
    let column = |table: &str, name: &str| columns.iter().find(|c| c.0 == table && c.1 == name);
    let tables: BTreeSet<&str> = columns.iter().map(|c| c.0.as_str()).collect();

    for table in AUTH_TABLES {
        assert!(
            tables.contains(table),
            "table {table} is missing; tables: {tables:?}"
        );
    }

    // The seed's key columns.
    for (table, cols) in [
        (
            "users",
            &["id", "email", "email_verified", "status", "deleted_at"][..],
        ),
        ("user_passwords", &["user_id", "password_hash"]),
        (
            "sessions",
            &[
                "id",
                "user_id",
                "token_hash",
                "ip_address",
                "device_label",
                "revoked_at",
                "expires_at",
            ],
        ),
        (
            "auth_codes",
            &[
                "id",
                "email",
                "code_hash",
                "purpose",
                "expires_at",
                "used_at",
            ],
        ),
        ("user_roles", &["user_id", "role"]),
        (
            "oauth_connections",
            &["id", "user_id", "provider", "provider_user_id"],
        ),
    ] {
        for col in cols {
            assert!(column(table, col).is_some(), "{table}.{col} is missing");
        }
    }
    assert!(
        column("auth_codes", "code").is_none(),
        "auth_codes must store code_hash, never the code"
    );
    assert_eq!(
        column("users", "deleted_at").map(|c| c.3),
        Some(true),
        "soft delete: users.deleted_at is nullable"
    );

    // created_at and updated_at everywhere, set by default (no triggers exist to set them).
    for table in tables.iter().filter(|t| **t != "schema_migrations") {
        for col in ["created_at", "updated_at"] {
            let c = column(table, col).unwrap_or_else(|| panic!("{table}.{col} is missing"));
            assert_eq!(c.2, "timestamptz", "{table}.{col} must be TIMESTAMPTZ");
            assert!(!c.3, "{table}.{col} must be NOT NULL");
            assert_eq!(
                c.4.as_deref(),
                Some("now()"),
                "{table}.{col} must default to now()"
            );
        }
    }

    // BIGINT, never bare INT, and no sequences behind any column.
    for (table, name, udt, _, default) in &columns {
        assert!(
            !["int4", "int2"].contains(&udt.as_str()),
            "{table}.{name} is {udt}: use BIGINT (INT is 64-bit on CockroachDB, 32-bit on PostgreSQL)"
        );
        assert!(
            !default.as_deref().unwrap_or("").contains("nextval("),
            "{table}.{name} is backed by a sequence: use UUID keys"
        );
    }

    // Index names: idx_{table}_{columns}, except primary keys.
    for index in indexes.iter().filter(|i| !i.primary) {
        assert!(
            index.name.starts_with(&format!("idx_{}_", index.table)),
            "index {} on {} must be named idx_{}_{{columns}}: {}",
            index.name,
            index.table,
            index.table,
            index.definition
        );
    }
    let index = |name: &str| {
        indexes
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("index {name} is missing: {indexes:#?}"))
    };

    // The two partial indexes the seed names.
    let codes = index("idx_auth_codes_email_purpose");
    assert_eq!(
        (codes.table.as_str(), &codes.columns[..]),
        ("auth_codes", &["email".to_string(), "purpose".into()][..])
    );
    assert_eq!(codes.predicate, "(used_at IS NULL)", "{}", codes.definition);
    let sessions = index("idx_sessions_user_id");
    assert_eq!(
        (sessions.table.as_str(), &sessions.columns[..]),
        ("sessions", &["user_id".to_string()][..])
    );
    assert_eq!(
        sessions.predicate, "(revoked_at IS NULL)",
        "{}",
        sessions.definition
    );

    // Uniqueness the flows rely on.
    let unique_on = |table: &str, cols: &[&str]| {
        indexes
            .iter()
            .any(|i| i.table == table && i.unique && i.predicate.is_empty() && i.columns == cols)
    };
    assert!(
        unique_on("sessions", &["token_hash"]),
        "sessions.token_hash must be unique"
    );
    assert!(unique_on("users", &["email"]), "users.email must be unique");
    assert!(
        unique_on("oauth_connections", &["provider", "provider_user_id"]),
        "oauth_connections (provider, provider_user_id) must be unique"
    );
    assert!(
        unique_on("user_roles", &["user_id", "role"]),
        "user_roles is keyed by (user_id, role)"
    );
    assert!(
        unique_on("user_passwords", &["user_id"]),
        "user_passwords is keyed by user_id"
    );

    // Every foreign key is the leading column(s) of some index.
    let client = db.client().await;
    let foreign_keys = client
        .query(
            "SELECT con.conname::TEXT, t.relname::TEXT,
                    ARRAY(SELECT a.attname::TEXT
                          FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
                          JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
                          ORDER BY k.ord)
             FROM pg_constraint con
             JOIN pg_class t ON t.oid = con.conrelid
             JOIN pg_namespace n ON n.oid = t.relnamespace
             WHERE n.nspname = 'public' AND con.contype = 'f'",
            &[],
        )
        .await
        .expect("pg_constraint");
    assert!(
        foreign_keys.len() >= 5,
        "the auth tables reference users: {foreign_keys:?}"
    );
    for fk in &foreign_keys {
        let (name, table, cols): (String, String, Vec<String>) = (fk.get(0), fk.get(1), fk.get(2));
        let wanted: BTreeSet<&String> = cols.iter().collect();
        let covered = indexes.iter().any(|i| {
            i.table == table
                && i.columns.len() >= cols.len()
                && i.columns[..cols.len()].iter().collect::<BTreeSet<_>>() == wanted
        });
        assert!(
            covered,
            "foreign key {name} on {table} ({cols:?}) has no index leading with it"
        );
    }

    // No triggers (updated_at is set by each UPDATE), no functions, no sequences.
    let count = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(sql, &[])
                .await
                .expect(sql)
                .get::<_, i64>(0)
        }
    };
    let triggers = count(
        "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND NOT t.tgisinternal",
    );
    assert_eq!(
        triggers.await,
        0,
        "no triggers: set updated_at in each UPDATE"
    );
    let functions = count(
        "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'",
    );
    assert_eq!(functions.await, 0, "no stored functions");
    let sequences = count(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind = 'S'",
    );
    assert_eq!(sequences.await, 0, "no sequences");
}

#[tokio::test]
async fn a_changed_migration_is_refused() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let label = first_migration_label();
    assert_eq!(label, "001_create_users");
    db.client()
        .await
        .execute(
            "UPDATE schema_migrations SET checksum = 'x' WHERE version = 1",
            &[],
        )
        .await
        .unwrap();

    let status = migrate::status(pool).await.unwrap();
    assert!(
        matches!(status.entries[0].1, State::ChecksumMismatch { .. }),
        "{status}"
    );
    assert!(!status.is_current());

    let err = migrate::up(pool, None)
        .await
        .expect_err("up must refuse a changed migration");
    assert!(
        matches!(err, MigrateError::ChecksumMismatch { version: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&label), "{err}");

    let err = migrate::down(pool, Some(0))
        .await
        .expect_err("down must refuse a changed migration");
    assert!(
        matches!(err, MigrateError::ChecksumMismatch { version: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&label), "{err}");
    let tables = schema(pool).await;
    assert!(
        tables.iter().any(|l| l.starts_with("relation users ")),
        "down rolled back anyway"
    );

    let err = migrate::ensure_current(pool)
        .await
        .expect_err("ensure_current must refuse");
    assert!(err.to_string().contains(&label), "{err}");

    let status = cli(&db, &["migrate", "status"], None).await;
    status
        .expect_code(2)
        .expect_output("MISMATCH")
        .expect_output("create_users");
    let up = cli(&db, &["migrate", "up"], None).await;
    up.expect_code(2);
    up.expect_output(&label);
    let serve = gateway(["serve"])
        .database(&db)
        .env("GATEWAY_AUTH__SECRET", "s".repeat(40))
        .env("GATEWAY_SESSIONS__TOKEN_KEY", "k".repeat(40))
        .timeout(Duration::from_secs(30))
        .run()
        .await;
    serve.expect_code(2).expect_output(&label);
}

#[tokio::test]
async fn an_unknown_applied_migration_is_refused() {
    let db = TestDb::new().await;
    let pool = db.pool();
    db.client()
        .await
        .execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (999, 'from_the_future', 'abc')",
            &[],
        )
        .await
        .unwrap();

    let status = migrate::status(pool).await.unwrap();
    assert_eq!(status.unknown.len(), 1, "{status}");
    assert_eq!(status.current_version(), 999);
    assert!(!status.is_current());

    let err = migrate::ensure_current(pool)
        .await
        .expect_err("ensure_current must refuse");
    assert!(err.to_string().contains("999_from_the_future"), "{err}");
    let err = migrate::up(pool, None).await.expect_err("up must refuse");
    assert!(
        matches!(err, MigrateError::UnknownApplied { version: 999, .. }),
        "{err}"
    );
    let err = migrate::down(pool, None)
        .await
        .expect_err("down must refuse");
    assert!(
        matches!(err, MigrateError::UnknownApplied { version: 999, .. }),
        "{err}"
    );

    cli(&db, &["migrate", "status"], None)
        .await
        .expect_code(2)
        .expect_output("UNKNOWN")
        .expect_output("999");
}

/// Starts 8 `migrate::up` at once, each with its own pool, and checks that all succeed and
/// each migration was applied by exactly one of them.
async fn race_runners(db: &TestDb) {
    let runners: Vec<_> = (0..8)
        .map(|_| {
            let pool = db.new_pool(&[]);
            tokio::spawn(async move {
                let result = migrate::up(&pool, None).await;
                pool.close();
                result
            })
        })
        .collect();
    let mut applied = Vec::new();
    for runner in runners {
        let versions = runner
            .await
            .expect("runner panicked")
            .unwrap_or_else(|e| panic!("a concurrent runner failed: {e}: {e:?}"));
        applied.extend(versions);
    }
    applied.sort_unstable();
    assert_eq!(
        applied,
        all_versions(),
        "each migration must be applied by exactly one runner"
    );
    assert!(migrate::status(db.pool()).await.unwrap().is_current());
}

/// The claim protocol: runners racing on every migration apply each once. (The database
/// already has its `schema_migrations` table: the race to create it is the next test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runners_apply_each_migration_once() {
    let db = TestDb::empty().await;
    assert_eq!(
        migrate::up(db.pool(), Some(0)).await.unwrap(),
        Vec::<i64>::new()
    );
    race_runners(&db).await;
    let reference = TestDb::new().await;
    assert_same_schema(
        &schema(db.pool()).await,
        &schema(reference.pool()).await,
        "after concurrent runners",
    );
}

/// Runners racing on a database without any table also race to create `schema_migrations`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runners_on_a_bare_database_all_succeed() {
    for _ in 0..5 {
        let db = TestDb::empty().await;
        race_runners(&db).await;
    }
}

#[tokio::test]
async fn concurrent_cli_runners_apply_each_migration_once() {
    let db = TestDb::empty().await;
    // Not on a bare database: see concurrent_runners_on_a_bare_database_all_succeed.
    migrate::up(db.pool(), Some(0)).await.unwrap();
    let (a, b) = tokio::join!(
        cli(&db, &["migrate", "up"], None),
        cli(&db, &["migrate", "up"], None)
    );
    a.expect_code(0);
    b.expect_code(0);
    // `applied 001` lines (the status table below them has more words per line).
    let applied_lines = |out: &str| {
        out.lines()
            .filter(|l| {
                let words: Vec<_> = l.split_whitespace().collect();
                words.len() == 2 && words[0] == "applied"
            })
            .count()
    };
    assert_eq!(
        applied_lines(&a.stdout) + applied_lines(&b.stdout),
        all_versions().len(),
        "each migration applied once:\n{a}\n{b}"
    );
    let rows = db
        .client()
        .await
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap();
    let recorded: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(recorded, all_versions());
}

#[tokio::test]
async fn to_selects_the_target_version() {
    let db = TestDb::empty().await;
    let pool = db.pool();
    let latest = migrate::latest_version();
    assert_eq!(latest, *all_versions().last().unwrap());

    let err = migrate::up(pool, Some(latest + 1))
        .await
        .expect_err("no such version");
    assert!(
        matches!(err, MigrateError::NoSuchVersion(v) if v == latest + 1),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&format!("no migration {}", latest + 1)),
        "{err}"
    );
    assert!(matches!(
        migrate::up(pool, Some(-1)).await,
        Err(MigrateError::NoSuchVersion(-1))
    ));
    assert_eq!(
        migrate::up(pool, Some(0)).await.unwrap(),
        Vec::<i64>::new(),
        "--to 0 applies nothing"
    );
    assert_eq!(migrate::status(pool).await.unwrap().current_version(), 0);

    assert_eq!(migrate::up(pool, Some(1)).await.unwrap(), vec![1]);
    let status = migrate::status(pool).await.unwrap();
    assert_eq!(status.current_version(), 1);
    for (m, state) in &status.entries {
        assert_eq!(
            matches!(state, State::Applied(_)),
            m.version <= 1,
            "{status}"
        );
    }
    assert_eq!(
        migrate::up(pool, None).await.unwrap(),
        all_versions()[1..].to_vec()
    );
    assert_eq!(
        migrate::up(pool, None).await.unwrap(),
        Vec::<i64>::new(),
        "nothing left to apply"
    );

    let err = migrate::down(pool, Some(latest + 1))
        .await
        .expect_err("no such version");
    assert!(
        matches!(err, MigrateError::NoSuchVersion(v) if v == latest + 1),
        "{err}"
    );
    assert_eq!(
        migrate::down(pool, None).await.unwrap(),
        vec![latest],
        "down rolls back the latest only"
    );
    let before_latest = all_versions()[..all_versions().len() - 1].to_vec();
    assert_eq!(
        migrate::status(pool).await.unwrap().current_version(),
        *before_latest.last().unwrap()
    );
    assert_eq!(
        migrate::down(pool, Some(0)).await.unwrap(),
        before_latest.into_iter().rev().collect::<Vec<_>>()
    );
    assert_eq!(
        migrate::down(pool, None).await.unwrap(),
        Vec::<i64>::new(),
        "nothing left to roll back"
    );

    // Through the binary.
    let to = (latest + 1).to_string();
    let out = cli(&db, &["migrate", "up", "--to", &to], None).await;
    assert!(matches!(out.code, Some(1 | 2)), "{out}");
    out.expect_output(&format!("no migration {to}"));
    cli(&db, &["migrate", "up", "--to", "one"], None)
        .await
        .expect_code(2);
    cli(&db, &["migrate", "status"], None)
        .await
        .expect_code(0)
        .expect_output("pending")
        .expect_output(&format!("schema version 0 of {latest}"));
    cli(&db, &["migrate", "up", "--to", "1"], None)
        .await
        .expect_code(0)
        .expect_output("applied 001");
    cli(&db, &["migrate", "status"], None)
        .await
        .expect_code(0)
        .expect_output(&format!("schema version 1 of {latest}"));
    cli(&db, &["migrate", "up", "--to", "1"], None)
        .await
        .expect_code(0)
        .expect_output("nothing to apply");
}

#[tokio::test]
async fn serve_refuses_an_unmigrated_database() {
    let db = TestDb::empty().await;
    let out = gateway(["serve"])
        .database(&db)
        .env("GATEWAY_AUTH__SECRET", "s".repeat(40))
        .env("GATEWAY_SESSIONS__TOKEN_KEY", "k".repeat(40))
        .env("GATEWAY_SERVER__LISTEN", "127.0.0.1:0")
        .env("GATEWAY_SERVER__ADMIN_LISTEN", "127.0.0.1:0")
        .timeout(Duration::from_secs(30))
        .run()
        .await;
    out.expect_code(2).expect_output("gateway migrate up");
}

/// On PostgreSQL a migration and its `schema_migrations` row commit together: one whose last
/// statement fails leaves neither its first table nor its record (the order CockroachDB needs,
/// schema changes before the record, kept PostgreSQL's atomicity).
#[tokio::test]
async fn a_failing_migration_leaves_neither_its_changes_nor_its_record() {
    let db = TestDb::new().await;
    let next = migrate::latest_version() + 1;
    let failing = migrate::parse(
        &format!("{next:03}_half_done.sql"),
        "-- migrate:up\nCREATE TABLE half_done (id UUID NOT NULL);\n\
         CREATE TABLE never_done (id UUID REFERENCES no_such_table (id));\n\
         -- migrate:down\nDROP TABLE IF EXISTS never_done;\nDROP TABLE IF EXISTS half_done;\n",
    )
    .unwrap();
    let mut all = migrate::embedded();
    all.push(failing);
    match migrate::up_with(db.pool(), all, None).await {
        Err(MigrateError::Failed { version, .. }) => assert_eq!(version, next),
        other => panic!("expected migration {next} to fail, got {other:?}"),
    }
    let tables: i64 = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'half_done'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "the failed migration's first table was kept");
    let status = migrate::status(db.pool()).await.unwrap();
    assert_eq!(status.current_version(), next - 1, "{status}");
    assert!(status.is_current(), "{status}");
}

//! Throwaway databases on the server named by `DATABASE_URL`.
//!
//! [`TestDb::new`] clones a template database that the embedded migrations were applied to
//! once: `CREATE DATABASE x TEMPLATE tpl` copies files, which is much faster than migrating
//! each test's database. The template's name carries a hash of every embedded migration's
//! checksum, so changing or adding a migration builds a new template instead of reusing a
//! stale one.
//!
//! The template is built once per test process (a [`OnceCell`]) and safely across processes:
//! it is migrated under a temporary name and then renamed, atomically, so a database under
//! the template's name is always complete; a process that loses the rename race drops its
//! copy. Nobody connects to the template once it is built (a database with connections
//! cannot be cloned, SQLSTATE 55006), and cloning retries on 55006 in case a backend is
//! still going away.

use std::time::Duration;

use deadpool_postgres::Pool;
use gateway::config::Config;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

/// Used when `DATABASE_URL` is not set.
pub const DEFAULT_SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Set to keep every test database (its name is printed) for a look after a failure.
const KEEP_ENV: &str = "GATEWAY_TEST_KEEP_DB";

static TEMPLATE: OnceCell<String> = OnceCell::const_new();

/// The URL of any database on the test server (`DATABASE_URL`).
pub fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_SERVER_URL.to_string())
}

/// `url` (a `postgres://` URL) with its database replaced by `name`.
pub fn url_with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    let mut out = format!("{}/{name}", &base[..path]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// A database of its own for one test, dropped (best effort) when the value is dropped.
pub struct TestDb {
    name: String,
    url: String,
    pool: Pool,
}

impl TestDb {
    /// A fresh database at the schema of the embedded migrations.
    pub async fn new() -> TestDb {
        let template = TEMPLATE.get_or_init(build_template).await;
        TestDb::create(Some(template)).await
    }

    /// A fresh database without any table.
    pub async fn empty() -> TestDb {
        TestDb::create(Some("template0")).await
    }

    async fn create(template: Option<&str>) -> TestDb {
        let name = unique_name("gw_test");
        let admin = admin().await.unwrap_or_else(|e| panic!("{e}"));
        create_database(&admin, &name, template).await;
        let url = url_with_database(&server_url(), &name);
        let pool = pool_for(&url, &[]);
        TestDb { name, url, pool }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A URL of this database, for `GATEWAY_DATABASE__URL`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A pool on this database built by `gateway::db::connect` from the default configuration.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The validated default configuration pointing at this database, with `overrides`
    /// (`GATEWAY_SECTION__KEY`, value) applied.
    pub fn config(&self, overrides: &[(&str, &str)]) -> Config {
        config_for(&self.url, overrides)
    }

    /// Another pool on this database, with its own connections.
    pub fn new_pool(&self, overrides: &[(&str, &str)]) -> Pool {
        pool_for(&self.url, overrides)
    }

    /// A pooled connection, for setting up and inspecting data.
    pub async fn client(&self) -> deadpool_postgres::Object {
        self.pool
            .get()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.name))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        self.pool.close();
        let name = std::mem::take(&mut self.name);
        if std::env::var_os(KEEP_ENV).is_some() {
            eprintln!("keeping test database {name}");
            return;
        }
        // Drop may run inside a runtime, which must not be blocked on; a thread with its own
        // runtime can be, and joining it makes sure the database is gone before the process
        // exits.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let admin = admin().await.ok()?;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .ok()
            })
        });
        let _ = cleanup.join();
    }
}

/// The validated default configuration with the database URL set and `overrides` applied.
fn config_for(url: &str, overrides: &[(&str, &str)]) -> Config {
    let env = std::iter::once(("GATEWAY_DATABASE__URL".to_string(), url.to_string())).chain(
        overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    Config::load(None, env).unwrap_or_else(|e| panic!("test configuration: {e}"))
}

fn pool_for(url: &str, overrides: &[(&str, &str)]) -> Pool {
    gateway::db::connect(&config_for(url, overrides).database)
        .unwrap_or_else(|e| panic!("pool for {url}: {e}"))
}

fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// A connection to the server's database from `DATABASE_URL`, for CREATE / DROP DATABASE.
async fn admin() -> Result<Client, String> {
    let url = server_url();
    let (client, connection) = tokio_postgres::connect(&url, NoTls)
        .await
        .map_err(|e| format!("cannot connect to PostgreSQL at {url} (set DATABASE_URL): {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// `gw_template_` and a hash of every embedded migration's version and checksum.
fn template_name() -> String {
    let mut hash = Sha256::new();
    for m in gateway::migrate::embedded() {
        hash.update(m.version.to_be_bytes());
        hash.update(m.checksum.as_bytes());
    }
    let hex: String = hash
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("gw_template_{hex}")
}

async fn build_template() -> String {
    let name = template_name();
    let admin = admin().await.unwrap_or_else(|e| panic!("{e}"));
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .unwrap_or_else(|e| panic!("looking for the template database: {e}"))
        .is_some();
    if exists {
        return name;
    }
    let building = unique_name("gw_tplbuild");
    create_database(&admin, &building, Some("template0")).await;
    let pool = pool_for(&url_with_database(&server_url(), &building), &[]);
    let migrated = gateway::migrate::up(&pool, None).await;
    pool.close();
    drop(pool);
    if let Err(e) = migrated {
        let _ = drop_database(&admin, &building).await;
        panic!("migrating the template database: {e}");
    }
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {building} WITH ALLOW_CONNECTIONS false"
        ))
        .await
        .unwrap_or_else(|e| panic!("closing the template database: {e}"));
    // The pool's connections close asynchronously: the rename waits for their backends.
    let rename = format!("ALTER DATABASE {building} RENAME TO {name}");
    match retry_while_in_use(|| admin.batch_execute(&rename)).await {
        Ok(()) => {}
        Err(e) if e.code() == Some(&SqlState::DUPLICATE_DATABASE) => {
            // Another test process built it meanwhile.
            let _ = drop_database(&admin, &building).await;
        }
        Err(e) => {
            let _ = drop_database(&admin, &building).await;
            panic!("naming the template database {name}: {e}");
        }
    }
    name
}

async fn create_database(admin: &Client, name: &str, template: Option<&str>) {
    let sql = match template {
        Some(template) => format!("CREATE DATABASE {name} TEMPLATE {template}"),
        None => format!("CREATE DATABASE {name}"),
    };
    retry_while_in_use(|| admin.batch_execute(&sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn drop_database(admin: &Client, name: &str) -> Result<(), tokio_postgres::Error> {
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
}

/// Runs `op` until it does not fail with SQLSTATE 55006 (the database is being accessed by
/// other users), for at most about ten seconds.
async fn retry_while_in_use<F, Fut>(mut op: F) -> Result<(), tokio_postgres::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), tokio_postgres::Error>>,
{
    let mut delay = Duration::from_millis(10);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match op().await {
            Err(e) if e.code() == Some(&SqlState::OBJECT_IN_USE) && attempt < 60 => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(250));
            }
            other => return other,
        }
    }
}

#[test]
fn urls_name_the_database() {
    assert_eq!(
        url_with_database("postgres://u@h:5432/postgres", "x"),
        "postgres://u@h:5432/x"
    );
    assert_eq!(
        url_with_database("postgres://u@h:5432", "x"),
        "postgres://u@h:5432/x"
    );
    assert_eq!(
        url_with_database("postgresql://u:p@h/db?sslmode=disable", "x"),
        "postgresql://u:p@h/x?sslmode=disable"
    );
}

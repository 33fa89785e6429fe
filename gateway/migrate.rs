//! The migration runner. Migrations are the `migrations/NNN_name.sql` files, embedded in the
//! binary at build time; each has a `-- migrate:up` and a `-- migrate:down` section. Applied
//! migrations are recorded in `schema_migrations` with a SHA-256 checksum of the file, so a
//! file edited after it was applied is detected and refused.
//!
//! Each migration runs its schema changes first and writes its `schema_migrations` row last,
//! as CockroachDB requires (no schema change after a write in one transaction): on PostgreSQL
//! all in one transaction, so a migration and its record commit together or not at all; on
//! CockroachDB the same when every statement is atomic there, else statement by statement
//! ([`plan`] says which, and why). Two runners at once never both apply a migration: the record
//! is written with `ON CONFLICT DO NOTHING`, and a runner that finds the row taken (or whose
//! schema change collided with the other's) rolls back and finds the migration applied. No
//! advisory locks: CockroachDB has none.

pub mod plan;

use std::fmt;

use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_postgres::error::SqlState;

use crate::db::{self, DbError};
use plan::{Flavor, Step};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/migrations.rs"));
}

const UP_MARKER: &str = "-- migrate:up";
const DOWN_MARKER: &str = "-- migrate:down";

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT NOT NULL,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT schema_migrations_pkey PRIMARY KEY (version)
)";
const SELECT_APPLIED: &str =
    "SELECT version, name, checksum, applied_at::TEXT FROM schema_migrations ORDER BY version";
const RECORD: &str = "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)
    ON CONFLICT (version) DO NOTHING";
const RELEASE: &str = "DELETE FROM schema_migrations WHERE version = $1 AND checksum = $2";
const IS_RECORDED: &str =
    "SELECT count(*) FROM schema_migrations WHERE version = $1 AND checksum = $2";
const VERSION: &str = "SELECT version()";
/// Attempts at one migration whose schema change collided with a concurrent runner's.
const ATTEMPTS: u32 = 5;
const TABLE_EXISTS: &str = "SELECT count(*) FROM information_schema.tables
    WHERE table_schema = current_schema() AND table_name = 'schema_migrations'";

/// One migration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    pub version: i64,
    pub name: String,
    pub up: String,
    pub down: String,
    /// Hex SHA-256 of the whole file.
    pub checksum: String,
}

/// A row of `schema_migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub version: i64,
    pub name: String,
    pub checksum: String,
    pub applied_at: String,
}

/// Where the database stands against the embedded migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Applied, with the same file text as embedded.
    Applied(Applied),
    /// Not applied yet.
    Pending,
    /// Applied, but the embedded file differs from what was applied.
    ChecksumMismatch { applied: Applied, embedded: String },
}

/// The status of every migration, embedded or recorded.
#[derive(Debug, Clone)]
pub struct Status {
    pub entries: Vec<(Migration, State)>,
    /// Versions recorded in the database that this binary does not know (a newer binary ran).
    pub unknown: Vec<Applied>,
}

impl Status {
    /// The highest applied version, 0 when none.
    pub fn current_version(&self) -> i64 {
        let known = self
            .entries
            .iter()
            .filter(|(_, s)| !matches!(s, State::Pending))
            .map(|(m, _)| m.version);
        known
            .chain(self.unknown.iter().map(|a| a.version))
            .max()
            .unwrap_or(0)
    }

    /// Whether the schema is exactly what this binary expects: everything applied, nothing
    /// changed, nothing unknown.
    pub fn is_current(&self) -> bool {
        self.unknown.is_empty()
            && self
                .entries
                .iter()
                .all(|(_, s)| matches!(s, State::Applied(_)))
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (m, state) in &self.entries {
            match state {
                State::Applied(a) => writeln!(
                    f,
                    "applied   {:03} {}  ({})",
                    m.version, m.name, a.applied_at
                )?,
                State::Pending => writeln!(f, "pending   {:03} {}", m.version, m.name)?,
                State::ChecksumMismatch { applied, embedded } => writeln!(
                    f,
                    "MISMATCH  {:03} {}  (applied checksum {}, file checksum {})",
                    m.version, m.name, applied.checksum, embedded
                )?,
            }
        }
        for a in &self.unknown {
            writeln!(
                f,
                "UNKNOWN   {:03} {}  (applied {}, not in this binary)",
                a.version, a.name, a.applied_at
            )?;
        }
        write!(
            f,
            "schema version {} of {} expected by this binary",
            self.current_version(),
            latest_version()
        )
    }
}

/// Why a migration command failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "migration {version:03}_{name} was changed after it was applied (applied checksum {applied}, file checksum {embedded}); \
         migrations are immutable: restore the original file and put the change in a new migration"
    )]
    ChecksumMismatch {
        version: i64,
        name: String,
        applied: String,
        embedded: String,
    },
    #[error(
        "the database has migration {version:03}_{name} which this binary does not know; \
         it was migrated by a newer gateway: run that version, or roll back with it"
    )]
    UnknownApplied { version: i64, name: String },
    #[error("no migration {0} in this binary (it has 0 to {max})", max = latest_version())]
    NoSuchVersion(i64),
    #[error(
        "the database schema is at version {at}, this gateway expects version {expected}: run `gateway migrate up` first"
    )]
    NotCurrent { at: i64, expected: i64 },
    #[error("migration {version:03}_{name} failed: {source}")]
    Failed {
        version: i64,
        name: String,
        #[source]
        source: DbError,
    },
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for MigrateError {
    fn from(e: tokio_postgres::Error) -> Self {
        MigrateError::Db(DbError::Query(e))
    }
}

/// Parses a migration file: `NNN_name.sql` with an up and a down section.
///
/// # Errors
/// A message naming the file and what is wrong with it.
pub fn parse(file_name: &str, text: &str) -> Result<Migration, String> {
    let stem = file_name
        .strip_suffix(".sql")
        .ok_or_else(|| format!("{file_name}: a migration file name ends in .sql"))?;
    let (number, name) = stem
        .split_once('_')
        .ok_or_else(|| format!("{file_name}: name it NNN_name.sql"))?;
    let version: i64 = number
        .parse()
        .ok()
        .filter(|v| *v > 0 && number.len() == 3)
        .ok_or_else(|| {
            format!("{file_name}: the name starts with a three-digit version, like 001_")
        })?;
    let up_at = text
        .find(UP_MARKER)
        .ok_or_else(|| format!("{file_name}: missing the `{UP_MARKER}` line"))?;
    let down_at = text
        .find(DOWN_MARKER)
        .ok_or_else(|| format!("{file_name}: missing the `{DOWN_MARKER}` line"))?;
    if down_at < up_at {
        return Err(format!(
            "{file_name}: the up section comes before the down section"
        ));
    }
    let up = text[up_at + UP_MARKER.len()..down_at].trim().to_string();
    let down = text[down_at + DOWN_MARKER.len()..].trim().to_string();
    if up.is_empty() || down.is_empty() {
        return Err(format!(
            "{file_name}: both the up and the down section need statements"
        ));
    }
    Ok(Migration {
        version,
        name: name.to_string(),
        up,
        down,
        checksum: hex(&Sha256::digest(text.as_bytes())),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The migrations embedded in this binary, in version order.
///
/// # Panics
/// Never in a released binary: the build script and a unit test check every embedded file.
pub fn embedded() -> Vec<Migration> {
    let mut all: Vec<Migration> = embedded::MIGRATIONS
        .iter()
        .map(|(file, text)| parse(file, text).unwrap_or_else(|e| panic!("embedded migration: {e}")))
        .collect();
    all.sort_by_key(|m| m.version);
    all
}

/// The schema version this binary expects.
pub fn latest_version() -> i64 {
    embedded().last().map_or(0, |m| m.version)
}

async fn ensure_table(client: &db::Client) -> Result<(), MigrateError> {
    // Two runners racing on CREATE TABLE IF NOT EXISTS can both pass the existence check on
    // PostgreSQL; the loser fails with a duplicate error, after which the table exists.
    for attempt in 0..3 {
        match client.batch_execute(CREATE_TABLE).await {
            Ok(()) => return Ok(()),
            Err(e)
                if attempt < 2
                    && matches!(
                        e.code(),
                        Some(c) if *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::DUPLICATE_TABLE
                            || *c == SqlState::DUPLICATE_OBJECT
                            || *c == SqlState::T_R_SERIALIZATION_FAILURE
                    ) =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn applied(client: &db::Client) -> Result<Vec<Applied>, MigrateError> {
    let exists: i64 = client.query_one(TABLE_EXISTS, &[]).await?.get(0);
    if exists == 0 {
        return Ok(Vec::new());
    }
    Ok(client
        .query(SELECT_APPLIED, &[])
        .await?
        .iter()
        .map(|r| Applied {
            version: r.get(0),
            name: r.get(1),
            checksum: r.get(2),
            applied_at: r.get(3),
        })
        .collect())
}

/// Reads where the database stands. Does not create anything.
///
/// # Errors
/// The database is unreachable.
pub async fn status(pool: &deadpool_postgres::Pool) -> Result<Status, MigrateError> {
    let client = db::client(pool).await?;
    let applied = applied(&client).await?;
    Ok(compare(embedded(), applied))
}

fn compare(embedded: Vec<Migration>, mut applied: Vec<Applied>) -> Status {
    let entries = embedded
        .into_iter()
        .map(|m| {
            let state = match applied.iter().position(|a| a.version == m.version) {
                None => State::Pending,
                Some(i) => {
                    let a = applied.swap_remove(i);
                    if a.checksum == m.checksum {
                        State::Applied(a)
                    } else {
                        State::ChecksumMismatch {
                            applied: a,
                            embedded: m.checksum.clone(),
                        }
                    }
                }
            };
            (m, state)
        })
        .collect();
    applied.sort_by_key(|a| a.version);
    Status {
        entries,
        unknown: applied,
    }
}

fn refuse_drift(status: &Status) -> Result<(), MigrateError> {
    for (m, state) in &status.entries {
        if let State::ChecksumMismatch { applied, embedded } = state {
            return Err(MigrateError::ChecksumMismatch {
                version: m.version,
                name: m.name.clone(),
                applied: applied.checksum.clone(),
                embedded: embedded.clone(),
            });
        }
    }
    if let Some(a) = status.unknown.first() {
        return Err(MigrateError::UnknownApplied {
            version: a.version,
            name: a.name.clone(),
        });
    }
    Ok(())
}

/// Applies pending migrations up to `to` (default: all), each in its own transaction.
/// Returns the versions this call applied; those applied meanwhile by a concurrent runner are
/// skipped, not applied twice.
///
/// # Errors
/// A changed or unknown applied migration (nothing is applied then), an unknown `to`, or the
/// failing migration, named, whose transaction was rolled back.
pub async fn up(pool: &deadpool_postgres::Pool, to: Option<i64>) -> Result<Vec<i64>, MigrateError> {
    up_with(pool, embedded(), to).await
}

/// [`up`] with these migrations instead of the embedded ones (tests run failing ones).
///
/// # Errors
/// As [`up`].
pub async fn up_with(
    pool: &deadpool_postgres::Pool,
    all: Vec<Migration>,
    to: Option<i64>,
) -> Result<Vec<i64>, MigrateError> {
    let latest = all.last().map_or(0, |m| m.version);
    let target = to.unwrap_or(latest);
    if target != 0 && !all.iter().any(|m| m.version == target) {
        return Err(MigrateError::NoSuchVersion(target));
    }
    let mut client = db::client(pool).await?;
    ensure_table(&client).await?;
    let status = compare(all, applied(&client).await?);
    refuse_drift(&status)?;
    let flavor = flavor(&client).await?;
    let mut done = Vec::new();
    for (m, state) in status.entries {
        if m.version > target || !matches!(state, State::Pending) {
            continue;
        }
        match run(&mut client, &m, Direction::Up, flavor).await {
            Ok(Ran::Here) => {
                tracing::info!(version = m.version, name = %m.name, "migration applied");
                done.push(m.version);
            }
            Ok(Ran::Elsewhere) => tracing::info!(
                version = m.version,
                "migration applied by a concurrent runner"
            ),
            Err(e) => {
                return Err(MigrateError::Failed {
                    version: m.version,
                    name: m.name,
                    source: e.into(),
                });
            }
        }
    }
    Ok(done)
}

/// Rolls back applied migrations down to `to` (default: the one before the latest applied;
/// `Some(0)` rolls back everything), newest first, each in its own transaction. Returns the
/// versions rolled back.
///
/// # Errors
/// A changed or unknown applied migration (nothing is rolled back then), or the failing one.
pub async fn down(
    pool: &deadpool_postgres::Pool,
    to: Option<i64>,
) -> Result<Vec<i64>, MigrateError> {
    let mut client = db::client(pool).await?;
    let status = compare(embedded(), applied(&client).await?);
    refuse_drift(&status)?;
    let current = status.current_version();
    let target = match to {
        Some(t) if t != 0 && !status.entries.iter().any(|(m, _)| m.version == t) => {
            return Err(MigrateError::NoSuchVersion(t));
        }
        Some(t) => t,
        None => status
            .entries
            .iter()
            .filter(|(m, s)| matches!(s, State::Applied(_)) && m.version < current)
            .map(|(m, _)| m.version)
            .max()
            .unwrap_or(0),
    };
    let flavor = flavor(&client).await?;
    let mut done = Vec::new();
    for (m, state) in status.entries.into_iter().rev() {
        if m.version <= target || !matches!(state, State::Applied(_)) {
            continue;
        }
        match run(&mut client, &m, Direction::Down, flavor).await {
            Ok(Ran::Here) => {
                tracing::info!(version = m.version, name = %m.name, "migration rolled back");
                done.push(m.version);
            }
            Ok(Ran::Elsewhere) => {}
            Err(e) => {
                return Err(MigrateError::Failed {
                    version: m.version,
                    name: m.name,
                    source: e.into(),
                });
            }
        }
    }
    Ok(done)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Up,
    Down,
}

/// Who ran a migration step.
enum Ran {
    Here,
    /// A concurrent runner did it first; this one changed nothing.
    Elsewhere,
}

async fn flavor(client: &db::Client) -> Result<Flavor, MigrateError> {
    let version: String = client.query_one(VERSION, &[]).await?.get(0);
    Ok(Flavor::of_version(&version))
}

/// Whether `m` still has to be applied (`Up`) or rolled back (`Down`).
async fn pending(
    client: &db::Client,
    m: &Migration,
    direction: Direction,
) -> Result<bool, tokio_postgres::Error> {
    let recorded: i64 = client
        .query_one(IS_RECORDED, &[&m.version, &m.checksum])
        .await?
        .get(0);
    Ok((recorded == 0) == (direction == Direction::Up))
}

/// Applies or rolls back `m`, as [`plan::plan`] says for `flavor`. A failure that a concurrent
/// runner explains (it recorded the migration meanwhile) is [`Ran::Elsewhere`]; a collision
/// with it that left the migration pending is tried again.
async fn run(
    client: &mut db::Client,
    m: &Migration,
    direction: Direction,
    flavor: Flavor,
) -> Result<Ran, tokio_postgres::Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        if !pending(client, m, direction).await? {
            return Ok(Ran::Elsewhere);
        }
        match run_plan(client, m, direction, flavor).await {
            Ok(ran) => return Ok(ran),
            Err(e) => {
                if !pending(client, m, direction).await? {
                    return Ok(Ran::Elsewhere);
                }
                if attempt >= ATTEMPTS || !is_collision(&e) {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
        }
    }
}

/// Runs the plan's transactions in order. The record step finding the row already written
/// (`Up`) or already gone (`Down`) means a concurrent runner got there first: its transaction
/// is rolled back.
async fn run_plan(
    client: &mut db::Client,
    m: &Migration,
    direction: Direction,
    flavor: Flavor,
) -> Result<Ran, tokio_postgres::Error> {
    let sql = match direction {
        Direction::Up => &m.up,
        Direction::Down => &m.down,
    };
    let statements = plan::statements(sql);
    for steps in plan::plan(&statements, flavor) {
        let tx = client.transaction().await?;
        for step in steps {
            match step {
                Step::Run(i) => tx.batch_execute(&statements[i].text).await?,
                Step::Record => {
                    let changed = match direction {
                        Direction::Up => {
                            tx.execute(RECORD, &[&m.version, &m.name, &m.checksum])
                                .await?
                        }
                        Direction::Down => tx.execute(RELEASE, &[&m.version, &m.checksum]).await?,
                    };
                    if changed == 0 {
                        tx.rollback().await?;
                        return Ok(Ran::Elsewhere);
                    }
                }
            }
        }
        tx.commit().await?;
    }
    Ok(Ran::Here)
}

/// Errors a concurrent runner's identical schema change can cause.
fn is_collision(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::UNIQUE_VIOLATION
            || *c == SqlState::T_R_SERIALIZATION_FAILURE
            || *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::DUPLICATE_TABLE
            || *c == SqlState::DUPLICATE_OBJECT
            || *c == SqlState::UNDEFINED_TABLE
            || *c == SqlState::UNDEFINED_OBJECT
    )
}

/// Checks that the database is at exactly the schema this binary expects.
///
/// # Errors
/// [`MigrateError::NotCurrent`] saying what to run, a changed or unknown applied migration,
/// or the database could not be asked.
pub async fn ensure_current(pool: &deadpool_postgres::Pool) -> Result<(), MigrateError> {
    let status = status(pool).await?;
    refuse_drift(&status)?;
    if !status.is_current() {
        return Err(MigrateError::NotCurrent {
            at: status.current_version(),
            expected: latest_version(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_migration_parses_and_versions_are_sequential() {
        let all = embedded();
        assert!(!all.is_empty());
        assert_eq!(all[0].version, 1, "the first migration is 001");
        // Numbers are handed out to work done in parallel (008 was given before 003 to 007
        // landed), so a gap is allowed; a duplicate or a step back is not.
        for pair in all.windows(2) {
            assert!(
                pair[1].version > pair[0].version,
                "migrations {:03} and {:03} are out of order or share a number",
                pair[0].version,
                pair[1].version
            );
        }
    }

    #[test]
    fn parse_rejects_malformed_files() {
        assert!(
            parse(
                "001_x.sql",
                "-- migrate:up\nSELECT 1;\n-- migrate:down\nSELECT 1;"
            )
            .is_ok()
        );
        assert!(
            parse(
                "1_x.sql",
                "-- migrate:up\nSELECT 1;\n-- migrate:down\nSELECT 1;"
            )
            .is_err()
        );
        assert!(parse("001_x.sql", "-- migrate:up\nSELECT 1;").is_err());
        assert!(
            parse(
                "001_x.sql",
                "-- migrate:down\nSELECT 1;\n-- migrate:up\nSELECT 1;"
            )
            .is_err()
        );
        assert!(parse("001_x.sql", "-- migrate:up\n-- migrate:down\nSELECT 1;").is_err());
        assert!(parse("001_x.txt", "").is_err());
    }

    #[test]
    fn checksum_covers_the_whole_file() {
        let a = parse(
            "001_x.sql",
            "-- migrate:up\nSELECT 1;\n-- migrate:down\nSELECT 2;",
        )
        .unwrap();
        let b = parse(
            "001_x.sql",
            "-- migrate:up\nSELECT 1;\n-- migrate:down\nSELECT 3;",
        )
        .unwrap();
        assert_ne!(a.checksum, b.checksum);
    }
}

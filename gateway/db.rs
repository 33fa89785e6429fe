//! Database access: the connection pool built from `[database]`, and [`transaction`], the one
//! way to run a read-write transaction. Transactions run SERIALIZABLE on PostgreSQL as on
//! CockroachDB and are retried on SQLSTATE 40001 with jittered exponential backoff, which is
//! CockroachDB's client-side retry protocol, and once more when the connection broke before
//! COMMIT was sent. Every wait is bounded: for a pooled connection (`pool_wait_timeout`), for
//! a new one (`connect_timeout`), and for each reply ([`reply_timeout`]).

mod watchdog;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Error as PgError, Row};

pub use watchdog::REPLY_GRACE;

pub(crate) use deadpool_postgres::Object as Client;

use crate::config;

/// Attempts of one transaction before a serialization failure is given up on.
pub const MAX_TX_ATTEMPTS: u32 = 12;
/// Extra attempts of one transaction after its connection broke before COMMIT was sent (the
/// database rolled that attempt back, so running the body again cannot write twice).
pub(crate) const MAX_RECONNECTS: u32 = 1;
const BACKOFF_BASE: Duration = Duration::from_millis(4);
const BACKOFF_CAP: Duration = Duration::from_millis(400);
/// PostgreSQL defaults to READ COMMITTED; CockroachDB runs SERIALIZABLE. Asking for it on both
/// keeps behaviour the same and exercises the 40001 retry path on PostgreSQL too.
const BEGIN: &str = "BEGIN ISOLATION LEVEL SERIALIZABLE";

/// A database failure, as the rest of the gateway sees it.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No pooled connection became free within `database.pool_wait_timeout`, or none could be
    /// opened: the database is slow, down or saturated. Callers answer 503.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The connection broke before COMMIT was sent, again after the reconnect a transaction
    /// is allowed ([`MAX_RECONNECTS`]). Callers answer 503.
    #[error("database connection lost: {0}")]
    ConnectionLost(#[source] PgError),
    /// The statement failed; `code()` tells unique violations and the like apart.
    #[error("database error: {0}")]
    Query(#[from] tokio_postgres::Error),
    /// The connection broke after COMMIT was sent: the transaction may or may not have
    /// committed. It is not retried (a non-idempotent body could write twice). Callers answer
    /// 503; the client's retry finds out what happened.
    #[error("database connection lost during COMMIT; the outcome is unknown: {0}")]
    OutcomeUnknown(#[source] PgError),
    /// `database.url` does not parse (validation checks it before the pool is built).
    #[error("database.url: {0}")]
    Url(#[source] PgError),
}

impl DbError {
    /// The SQLSTATE of a failed statement.
    pub fn code(&self) -> Option<&SqlState> {
        match self {
            DbError::Query(e) => e.code(),
            DbError::Unavailable(_)
            | DbError::ConnectionLost(_)
            | DbError::OutcomeUnknown(_)
            | DbError::Url(_) => None,
        }
    }

    /// Whether this is a unique-constraint violation.
    pub fn is_unique_violation(&self) -> bool {
        self.code() == Some(&SqlState::UNIQUE_VIOLATION)
    }

    /// Whether the database cannot answer now (a caller answers 503 and the client retries)
    /// rather than refused a statement, which is a bug (500): no connection, a connection that
    /// broke or went silent (no SQLSTATE), a commit whose outcome is unknown, or a SQLSTATE
    /// that says so ([`is_unavailable_state`]).
    pub fn is_unavailable(&self) -> bool {
        match self {
            DbError::Unavailable(_) | DbError::ConnectionLost(_) | DbError::OutcomeUnknown(_) => {
                true
            }
            DbError::Query(e) => e.code().is_none_or(is_unavailable_state),
            DbError::Url(_) => false,
        }
    }
}

/// The SQLSTATEs that mean "not now" rather than "not this statement": connection exceptions
/// (class 08), transaction rollbacks that ask for a retry (40: serialization failures left
/// after the retries, deadlocks, CockroachDB's ambiguous results), insufficient resources
/// (53), operator intervention (57: a statement timeout, a shutdown), system errors (58), and
/// a lock that was not available in time (55P03).
pub(crate) fn is_unavailable_state(state: &SqlState) -> bool {
    let code = state.code();
    ["08", "40", "53", "57", "58"]
        .iter()
        .any(|class| code.starts_with(class))
        || *state == SqlState::LOCK_NOT_AVAILABLE
}

impl From<PoolError> for DbError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) if e.code().is_some() => DbError::Query(e),
            other => DbError::Unavailable(Box::new(other)),
        }
    }
}

/// Whether `e` asks the client to retry the whole transaction (SQLSTATE 40001).
pub(crate) fn is_serialization_failure(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
}

/// How long a pooled connection waits for a reply the database owes before it fails:
/// `statement_timeout` (after which a live server cancels the statement and says so) plus
/// [`REPLY_GRACE`].
pub(crate) fn reply_timeout(cfg: &config::Database) -> Duration {
    cfg.statement_timeout + REPLY_GRACE
}

/// Builds the pool described by `[database]`. Connections are opened lazily, so this does not
/// fail when the database is down. Each one fails once the server stays silent for
/// [`reply_timeout`] while it owes a reply (a hung database), and is then discarded. At most
/// `max_connections` sockets are open at once, counting those the pool has given up on until
/// they are closed.
///
/// # Errors
/// The URL does not parse (already checked by config validation).
pub fn connect(cfg: &config::Database) -> Result<Pool, DbError> {
    let mut pg: tokio_postgres::Config = cfg.url.parse().map_err(DbError::Url)?;
    pg.connect_timeout(cfg.connect_timeout);
    if pg.get_application_name().is_none() {
        pg.application_name("gateway");
    }
    let statement_ms = cfg.statement_timeout.as_millis();
    let options = match pg.get_options() {
        Some(existing) => format!("{existing} -c statement_timeout={statement_ms}"),
        None => format!("-c statement_timeout={statement_ms}"),
    };
    pg.options(&options);
    let manager = Manager::from_connect(
        pg,
        watchdog::Connector::new(reply_timeout(cfg), cfg.max_connections),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(cfg.max_connections)
        .wait_timeout(Some(cfg.pool_wait_timeout))
        .create_timeout(Some(cfg.connect_timeout))
        .recycle_timeout(Some(cfg.connect_timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| DbError::Unavailable(Box::new(e)))
}

/// Takes a connection from the pool.
///
/// # Errors
/// [`DbError::Unavailable`] when none is free within the pool wait timeout.
pub async fn client(pool: &Pool) -> Result<Client, DbError> {
    Ok(pool.get().await?)
}

/// A transaction in progress, handed to the body of [`transaction`]. Statements are prepared
/// once per connection and cached.
#[derive(Clone)]
pub struct Tx {
    client: Arc<Client>,
}

impl Tx {
    /// Runs a statement, returning the number of rows it changed.
    ///
    /// # Errors
    /// The statement failed.
    pub async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, PgError> {
        let stmt = self.client.prepare_cached(sql).await?;
        self.client.execute(&stmt, params).await
    }

    /// Runs a query, returning its rows.
    ///
    /// # Errors
    /// The statement failed.
    pub async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, PgError> {
        let stmt = self.client.prepare_cached(sql).await?;
        self.client.query(&stmt, params).await
    }

    /// Runs a query that returns exactly one row.
    ///
    /// # Errors
    /// The statement failed or did not return exactly one row.
    pub async fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, PgError> {
        let stmt = self.client.prepare_cached(sql).await?;
        self.client.query_one(&stmt, params).await
    }

    /// Runs a query that returns at most one row.
    ///
    /// # Errors
    /// The statement failed or returned more than one row.
    pub(crate) async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, PgError> {
        let stmt = self.client.prepare_cached(sql).await?;
        self.client.query_opt(&stmt, params).await
    }
}

/// Ends the transaction if the caller is dropped halfway (a client disconnect, a timeout): a
/// connection whose transaction is still open never goes back to the pool as it is. When the
/// guard holds the last reference, the connection is discarded; otherwise (the body's future
/// is dropped after the guard) a task rolls it back, and the last reference returns it clean.
struct Guard {
    client: Option<Arc<Client>>,
}

impl Guard {
    fn release(&mut self) {
        self.client = None;
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        match Arc::try_unwrap(client) {
            Ok(object) => drop(deadpool_postgres::Object::take(object)),
            Err(shared) => {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        if shared.batch_execute("ROLLBACK").await.is_err() {
                            if let Ok(object) = Arc::try_unwrap(shared) {
                                drop(deadpool_postgres::Object::take(object));
                            }
                        }
                    });
                }
            }
        }
    }
}

/// Runs `body` in a SERIALIZABLE transaction and commits it, retrying the whole body when the
/// database reports a serialization failure (SQLSTATE 40001) at any statement or at commit,
/// and once ([`MAX_RECONNECTS`]) on another connection when the connection broke before COMMIT
/// was sent.
///
/// `body` may run more than once, so its writes must be idempotent for a retry (they are rolled
/// back before it runs again) and it must not have effects outside the transaction. Domain
/// outcomes (say, "email taken") belong in `T`; an `Err` rolls back. The body's future owns
/// its [`Tx`]; capture what it needs by reference (`let x = &x;` then `async move`).
///
/// # Errors
/// The first non-retryable error, or the last serialization failure after
/// [`MAX_TX_ATTEMPTS`] attempts; [`DbError::Unavailable`] when no connection can be had,
/// [`DbError::ConnectionLost`] when it broke again; [`DbError::OutcomeUnknown`] when it broke
/// during COMMIT.
pub async fn transaction<T, F, Fut>(pool: &Pool, mut body: F) -> Result<T, DbError>
where
    F: FnMut(Tx) -> Fut,
    Fut: Future<Output = Result<T, PgError>>,
{
    let (mut attempt, mut reconnects) = (0, 0);
    loop {
        attempt += 1;
        let client = Arc::new(client(pool).await?);
        let mut guard = Guard {
            client: Some(client.clone()),
        };
        let (outcome, clean) = run_once(&client, &mut body).await;
        if clean {
            guard.release();
        }
        let broken = client.is_closed();
        drop(client);
        drop(guard);
        let (e, stage) = match outcome {
            Ok(value) => return Ok(value),
            Err(failure) => failure,
        };
        if is_serialization_failure(&e) && attempt < MAX_TX_ATTEMPTS {
            metrics::counter!("gateway_db_tx_retries_total", "cause" => "serialization")
                .increment(1);
            tracing::debug!(attempt, "serialization failure, retrying transaction");
            tokio::time::sleep(backoff(attempt)).await;
            continue;
        }
        if !broken || e.code().is_some() {
            return Err(e.into());
        }
        if stage == Stage::Commit {
            metrics::counter!("gateway_db_commit_outcome_unknown_total").increment(1);
            return Err(DbError::OutcomeUnknown(e));
        }
        if reconnects == MAX_RECONNECTS {
            return Err(DbError::ConnectionLost(e));
        }
        reconnects += 1;
        metrics::counter!("gateway_db_tx_retries_total", "cause" => "connection_lost").increment(1);
        tracing::debug!(attempt, error = %e, "connection lost before COMMIT, retrying transaction");
    }
}

/// Where an attempt failed: only a failure at COMMIT leaves the outcome in doubt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Begin,
    Body,
    Commit,
}

/// One attempt: BEGIN, the body, COMMIT (or ROLLBACK after a failed body). Also tells whether
/// the connection ended outside any transaction, so it may go back to the pool.
async fn run_once<T, F, Fut>(
    client: &Arc<Client>,
    body: &mut F,
) -> (Result<T, (PgError, Stage)>, bool)
where
    F: FnMut(Tx) -> Fut,
    Fut: Future<Output = Result<T, PgError>>,
{
    if let Err(e) = client.batch_execute(BEGIN).await {
        return (Err((e, Stage::Begin)), false);
    }
    let tx = Tx {
        client: client.clone(),
    };
    match body(tx).await {
        Ok(value) => match client.batch_execute("COMMIT").await {
            Ok(()) => (Ok(value), true),
            // A failed COMMIT ends the transaction; the connection is clean if it is alive.
            Err(e) => (Err((e, Stage::Commit)), !client.is_closed()),
        },
        Err(e) => {
            let rolled_back = client.batch_execute("ROLLBACK").await.is_ok();
            (Err((e, Stage::Body)), rolled_back)
        }
    }
}

/// Full-jitter exponential backoff for retry number `attempt` (1-based).
fn backoff(attempt: u32) -> Duration {
    let exp = BACKOFF_BASE
        .saturating_mul(1 << attempt.min(16))
        .min(BACKOFF_CAP);
    exp.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_states_that_mean_not_now_are_unavailability() {
        for state in [
            SqlState::QUERY_CANCELED,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::CONNECTION_FAILURE,
            SqlState::LOCK_NOT_AVAILABLE,
        ] {
            assert!(is_unavailable_state(&state), "{state:?}");
        }
        for state in [
            SqlState::UNDEFINED_TABLE,
            SqlState::UNDEFINED_COLUMN,
            SqlState::SYNTAX_ERROR,
            SqlState::UNIQUE_VIOLATION,
            SqlState::INVALID_TEXT_REPRESENTATION,
            SqlState::INSUFFICIENT_PRIVILEGE,
        ] {
            assert!(!is_unavailable_state(&state), "{state:?}");
        }
    }

    #[test]
    fn backoff_is_bounded_and_jittered() {
        for attempt in 1..40 {
            assert!(backoff(attempt) <= BACKOFF_CAP);
        }
        let samples: std::collections::HashSet<_> = (0..20).map(|_| backoff(5)).collect();
        assert!(samples.len() > 1, "backoff must be jittered");
    }
}

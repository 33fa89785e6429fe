//! Failed-attempt budgets: the `auth_failures` table (migration 002). Every failed code
//! verification and every failed password check adds a row for its (email, purpose); the
//! budget is the number of rows in the last `codes.failure_window`. Being rows in the
//! database, the budget holds across gateway instances, and a new code does not reset it
//! (NIST 800-63B): only a success clears it.
//!
//! Over the budget the answer is a progressive delay, not a lockout: the `n`-th failure past
//! the budget makes the next attempt wait `DELAY_BASE * 2^n` after the latest failure, capped
//! at the window (see [`wait`]). Attempts refused for the delay are not recorded, so an
//! attacker cannot stretch the delay further than the failures they were allowed to make.
//! With the defaults (10 per hour, base 1 min) that is at most about 16 guesses an hour per
//! (email, purpose), and an owner locked out by someone else waits at most the delay.
//!
//! Rows are keyed by the normalized address as typed, whether or not an account has it, so
//! known and unknown addresses behave (and cost) the same.

use std::time::{Duration, SystemTime};

use deadpool_postgres::Pool;
use tokio_postgres::Error as PgError;

use crate::config;
use crate::db::{self, DbError, Tx};

const COUNT: &str = "SELECT count(*), max(created_at), now() FROM auth_failures
    WHERE email = $1 AND purpose = $2 AND created_at > now() - ($3::BIGINT * INTERVAL '1 millisecond')";
const INSERT: &str = "INSERT INTO auth_failures (id, email, purpose) VALUES ($1, $2, $3)";
const CLEAR: &str = "DELETE FROM auth_failures WHERE email = $1 AND purpose = $2";
const SWEEP: &str = "DELETE FROM auth_failures WHERE id IN (
    SELECT id FROM auth_failures WHERE created_at < now() - ($1::BIGINT * INTERVAL '1 millisecond') LIMIT 1000)";

/// The purpose under which failed password checks (login, password change) are counted.
pub(crate) const PASSWORD: &str = "password";
/// The delay after the first failure past the budget; it doubles with each further one.
pub(crate) const DELAY_BASE: Duration = Duration::from_secs(60);

/// A failed-attempt budget: `limit` failures per (email, purpose) within `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Budget {
    pub limit: u32,
    pub window: Duration,
}

impl Budget {
    /// The budget of `[codes]` (`failure_budget`, `failure_window`).
    pub(crate) fn from_config(codes: &config::Codes) -> Budget {
        Budget {
            limit: codes.failure_budget,
            window: codes.failure_window,
        }
    }

    fn window_ms(&self) -> i64 {
        i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX)
    }
}

/// Where an (email, purpose) stands against its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Standing {
    /// Failures within the window.
    pub failures: u64,
    /// `Some` when the next attempt must wait this long (answer 429 with `Retry-After`).
    pub wait: Option<Duration>,
}

/// How long the next attempt must wait, given `failures` within the window and the time
/// `since_last` since the latest of them: `None` within the budget or once the delay passed.
/// A pure function of its inputs.
pub(crate) fn wait(budget: &Budget, failures: u64, since_last: Duration) -> Option<Duration> {
    let over = failures.checked_sub(u64::from(budget.limit))?;
    let factor = 1u32
        .checked_shl(u32::try_from(over).unwrap_or(u32::MAX))
        .unwrap_or(u32::MAX);
    let delay = DELAY_BASE.saturating_mul(factor).min(budget.window);
    delay.checked_sub(since_last).filter(|d| !d.is_zero())
}

fn standing(budget: &Budget, row: &tokio_postgres::Row) -> Standing {
    let failures = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
    let latest: Option<SystemTime> = row.get(1);
    let now: SystemTime = row.get(2);
    let since_last = latest
        .and_then(|l| now.duration_since(l).ok())
        .unwrap_or_default();
    Standing {
        failures,
        wait: wait(budget, failures, since_last),
    }
}

/// Reads the standing of (`email`, `purpose`) inside a transaction, so that a check and the
/// failure it may record are one serializable step across instances.
///
/// # Errors
/// The statement failed.
pub(crate) async fn check_in(
    tx: &Tx,
    budget: &Budget,
    email: &str,
    purpose: &str,
) -> Result<Standing, PgError> {
    let row = tx
        .query_one(COUNT, &[&email, &purpose, &budget.window_ms()])
        .await?;
    Ok(standing(budget, &row))
}

/// Records one failure inside a transaction.
///
/// # Errors
/// The statement failed.
pub(crate) async fn record_in(tx: &Tx, email: &str, purpose: &str) -> Result<(), PgError> {
    let id = uuid::Uuid::new_v4();
    tx.execute(INSERT, &[&id, &email, &purpose]).await?;
    Ok(())
}

/// Forgets the failures of (`email`, `purpose`) after a success, inside a transaction.
///
/// # Errors
/// The statement failed.
pub(crate) async fn clear_in(tx: &Tx, email: &str, purpose: &str) -> Result<(), PgError> {
    tx.execute(CLEAR, &[&email, &purpose]).await?;
    Ok(())
}

/// Reads the standing of (`email`, `purpose`) on its own (password checks, where bcrypt runs
/// between the check and the record: concurrent attempts can overshoot the budget by the
/// number running at once, which the per-email rate limit bounds).
///
/// # Errors
/// A database error.
pub(crate) async fn check(
    pool: &Pool,
    budget: &Budget,
    email: &str,
    purpose: &str,
) -> Result<Standing, DbError> {
    let client = db::client(pool).await?;
    let stmt = client.prepare_cached(COUNT).await?;
    let row = client
        .query_one(&stmt, &[&email, &purpose, &budget.window_ms()])
        .await?;
    Ok(standing(budget, &row))
}

/// Records one failure on its own.
///
/// # Errors
/// A database error.
pub(crate) async fn record(pool: &Pool, email: &str, purpose: &str) -> Result<(), DbError> {
    db::transaction(
        pool,
        |tx| async move { record_in(&tx, email, purpose).await },
    )
    .await
}

/// Forgets the failures of (`email`, `purpose`) on its own.
///
/// # Errors
/// A database error.
pub(crate) async fn clear(pool: &Pool, email: &str, purpose: &str) -> Result<(), DbError> {
    db::transaction(
        pool,
        |tx| async move { clear_in(&tx, email, purpose).await },
    )
    .await
}

/// Deletes up to 1000 failures older than `window` (they no longer count); returns how many.
///
/// # Errors
/// A database error.
pub(crate) async fn sweep(pool: &Pool, window: Duration) -> Result<u64, DbError> {
    let ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    let ms = &ms;
    db::transaction(pool, |tx| async move { tx.execute(SWEEP, &[ms]).await }).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn budget(limit: u32) -> Budget {
        Budget {
            limit,
            window: HOUR,
        }
    }

    #[test]
    fn within_the_budget_nothing_waits() {
        let b = budget(3);
        for failures in 0..3 {
            assert_eq!(wait(&b, failures, Duration::ZERO), None);
        }
    }

    #[test]
    fn past_the_budget_the_delay_doubles_up_to_the_window() {
        let b = budget(3);
        assert_eq!(wait(&b, 3, Duration::ZERO), Some(DELAY_BASE));
        assert_eq!(wait(&b, 4, Duration::ZERO), Some(DELAY_BASE * 2));
        assert_eq!(wait(&b, 5, Duration::ZERO), Some(DELAY_BASE * 4));
        assert_eq!(wait(&b, 50, Duration::ZERO), Some(HOUR));
        assert_eq!(wait(&b, u64::MAX, Duration::ZERO), Some(HOUR));
    }

    #[test]
    fn the_delay_runs_from_the_latest_failure() {
        let b = budget(3);
        assert_eq!(
            wait(&b, 3, Duration::from_secs(45)),
            Some(Duration::from_secs(15))
        );
        assert_eq!(wait(&b, 3, DELAY_BASE), None);
        assert_eq!(wait(&b, 4, DELAY_BASE * 3), None);
    }
}

//! The fleet-wide half of the rate limits: the `rate_limits` table (migration 008), one GCRA
//! cell per (action, scope, subject), updated by one upsert per attempt at the database's
//! clock. With `count/per`, the emission interval is `per / count` and an attempt is allowed
//! while the cell's `refilled_at` is at most `per - interval` ahead of now; an allowed attempt
//! moves `refilled_at` one interval past `max(refilled_at, now)`. The same algorithm as the
//! in-memory limiters (governor's GCRA), so both agree on what `count/per` means.

use std::time::{Duration, SystemTime};

use deadpool_postgres::Pool;

use crate::config::RateLimit;
use crate::db::{self, DbError};

// clock_timestamp(), not now(): now() is when the statement's transaction began, so an
// upsert that waited for another's row lock could judge the cell by a time older than the
// one the other wrote it with, and refuse an attempt that the limit allows.
const TAKE: &str = "INSERT INTO rate_limits (action, scope, subject, refilled_at)
    VALUES ($1, $2, $3, clock_timestamp() + ($4::BIGINT * INTERVAL '1 microsecond'))
    ON CONFLICT (action, scope, subject) DO UPDATE
    SET refilled_at = GREATEST(rate_limits.refilled_at, clock_timestamp()) + ($4::BIGINT * INTERVAL '1 microsecond'),
        updated_at = clock_timestamp()
    WHERE rate_limits.refilled_at <= clock_timestamp() + ($5::BIGINT * INTERVAL '1 microsecond')
    RETURNING refilled_at";
const STANDING: &str = "SELECT refilled_at, clock_timestamp() FROM rate_limits
    WHERE action = $1 AND scope = $2 AND subject = $3";
const SWEEP: &str = "DELETE FROM rate_limits WHERE id IN (
    SELECT id FROM rate_limits WHERE refilled_at < now() LIMIT 1000)";

/// Attempts at the upsert when the database asks for a retry (SQLSTATE 40001).
const RETRIES: u32 = 5;

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// The emission interval of `limit` and the tolerance: how far ahead of now `refilled_at` may
/// be for one more attempt to pass.
fn interval_and_tolerance(limit: RateLimit) -> (Duration, Duration) {
    let interval = (limit.per / limit.count.max(1)).max(Duration::from_micros(1));
    (interval, limit.per.saturating_sub(interval))
}

/// Counts one attempt of `action` by `subject` in `scope` against `limit`, for every instance
/// at once. `None`: allowed (and counted); `Some(wait)`: refused, try again after `wait`.
///
/// # Errors
/// The database could not be asked.
pub(crate) async fn take(
    pool: &Pool,
    action: &str,
    scope: &str,
    subject: &str,
    limit: RateLimit,
) -> Result<Option<Duration>, DbError> {
    let (interval, tolerance) = interval_and_tolerance(limit);
    let (interval, tolerance) = (micros(interval), micros(tolerance));
    // One statement in its own implicit transaction: the cell's row is locked for the
    // statement and its commit only, not for the round trips of BEGIN and COMMIT (every sign-in
    // from one address queues on that row). A serialization failure (CockroachDB) is retried.
    let client = db::client(pool).await?;
    let statement = client.prepare_cached(TAKE).await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
        [&action, &scope, &subject, &interval, &tolerance];
    let mut attempt = 0;
    let taken = loop {
        attempt += 1;
        match client.query_opt(&statement, &params).await {
            Err(e) if db::is_serialization_failure(&e) && attempt < RETRIES => {
                tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
            }
            other => break other?,
        }
    };
    if taken.is_some() {
        return Ok(None);
    }
    let row = client
        .query_opt(STANDING, &[&action, &scope, &subject])
        .await?;
    let wait = row.map_or(Duration::from_secs(1), |r| {
        let (refilled, now): (SystemTime, SystemTime) = (r.get(0), r.get(1));
        refilled
            .duration_since(now)
            .unwrap_or_default()
            .saturating_sub(Duration::from_micros(u64::try_from(tolerance).unwrap_or(0)))
    });
    Ok(Some(wait))
}

/// Deletes up to 1000 cells at rest (their whole burst is back), so the table holds only the
/// keys active within one period.
///
/// # Errors
/// The database could not be asked.
pub(crate) async fn sweep(pool: &Pool) -> Result<u64, DbError> {
    db::transaction(pool, |tx| async move { tx.execute(SWEEP, &[]).await }).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_per_period_is_a_burst_then_one_per_interval() {
        let limit: RateLimit = "3/1m".parse().unwrap();
        assert_eq!(
            interval_and_tolerance(limit),
            (Duration::from_secs(20), Duration::from_secs(40))
        );
        let one: RateLimit = "1/1s".parse().unwrap();
        assert_eq!(
            interval_and_tolerance(one),
            (Duration::from_secs(1), Duration::ZERO)
        );
    }
}

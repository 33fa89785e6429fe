//! Cross-instance revocation. Every instance polls, each `revocation_poll`, for sessions
//! revoked and users changed (disabled, deleted, roles) since its watermark, and drops exactly
//! those token hashes from its cache. The watermark is the database's clock, read in the same
//! poll, minus `revocation_overlap` so that a transaction that committed late (its `now()` is
//! its start time) is still seen; the overlap also re-applies each invalidation for a while,
//! which closes the race with a cache load that read just before the commit. No
//! LISTEN/NOTIFY (CockroachDB has none); the cache TTL is the backstop when polling fails.
//!
//! A failed poll keeps the watermark, so the first poll after a database outage looks back to
//! the last one that succeeded (minus the overlap) and applies every revocation made during
//! the outage. Each poll also reports to [`Sessions::health`].

use std::time::{Duration, SystemTime};

use super::{Sessions, TokenHash};
use crate::db;

const NOW: &str = "SELECT now()";
const CHANGED_SINCE: &str = "SELECT s.token_hash FROM sessions s WHERE s.revoked_at > $1
    UNION ALL
    SELECT s.token_hash FROM users u JOIN sessions s ON s.user_id = u.id
    WHERE u.updated_at > $1 AND s.revoked_at IS NULL";

/// Polls forever (until the task is dropped) and invalidates what changed.
pub(crate) async fn poll(sessions: Sessions) {
    let period = sessions.settings().revocation_poll;
    let overlap = sessions.settings().revocation_overlap;
    let mut watermark: Option<SystemTime> = None;
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let polled = poll_once(&sessions, watermark, overlap).await;
        sessions.health().report(polled.is_ok());
        match polled {
            Ok(now) => {
                watermark = Some(now);
                metrics::gauge!("gateway_revocation_poll_lag_seconds").set(0.0);
            }
            Err(e) => {
                if let Some(w) = watermark {
                    let lag = sessions.clock().now().duration_since(w).unwrap_or_default();
                    metrics::gauge!("gateway_revocation_poll_lag_seconds").set(lag.as_secs_f64());
                }
                metrics::counter!("gateway_revocation_poll_errors_total").increment(1);
                tracing::warn!(error = %e, "revocation poll failed; cached sessions still expire at cache_ttl");
            }
        }
    }
}

/// One poll: returns the new watermark (the database's `now()` read before the query).
async fn poll_once(
    sessions: &Sessions,
    watermark: Option<SystemTime>,
    overlap: Duration,
) -> Result<SystemTime, db::DbError> {
    let client = db::client(sessions.pool()).await?;
    let now: SystemTime = client.query_one(NOW, &[]).await?.get(0);
    sessions.clock().observe(now);
    let base = watermark.unwrap_or(now);
    let since = base.checked_sub(overlap).unwrap_or(base);
    let stmt = client.prepare_cached(CHANGED_SINCE).await?;
    let rows = client.query(&stmt, &[&since]).await?;
    let hashes: Vec<TokenHash> = rows
        .iter()
        .filter_map(|r| TokenHash::try_from(r.get::<_, &[u8]>(0)).ok())
        .collect();
    drop(client);
    if !hashes.is_empty() {
        sessions.invalidate(&hashes).await;
        metrics::counter!("gateway_revocation_invalidations_total").increment(hashes.len() as u64);
    }
    Ok(now)
}

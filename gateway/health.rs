//! What the gateway knows of its database's health. Every revocation poll, session lookup on a
//! cache miss and readiness probe reports whether the database answered; the database counts
//! as down while the latest report is a failure. `sessions.serve_cached_when_db_down = false`
//! turns that into 503 for cache hits, and `/readyz` probes with a bounded wait.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deadpool_postgres::Pool;

use crate::migrate::{self, MigrateError};

/// The latest reports on the database, shared by the request path and the background tasks.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Numbers the reports, so "latest" needs no clock.
    reports: AtomicU64,
    last_ok: AtomicU64,
    last_failure: AtomicU64,
}

impl Health {
    pub(crate) fn new() -> Self {
        Health::default()
    }

    /// Records whether the database just answered.
    pub(crate) fn report(&self, answered: bool) {
        let n = self.reports.fetch_add(1, Ordering::AcqRel) + 1;
        let slot = if answered {
            &self.last_ok
        } else {
            &self.last_failure
        };
        slot.fetch_max(n, Ordering::AcqRel);
        metrics::gauge!("gateway_database_up").set(if self.is_down() { 0.0 } else { 1.0 });
    }

    /// Whether the latest report is a failure. A fresh gateway (no report yet) counts as up:
    /// it checked the schema before it started serving.
    pub(crate) fn is_down(&self) -> bool {
        self.last_failure.load(Ordering::Acquire) > self.last_ok.load(Ordering::Acquire)
    }
}

/// Why the readiness probe failed; its text is the probe's body.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotReady {
    /// The database answered, but not with the expected schema, or with an error.
    #[error(transparent)]
    Schema(#[from] MigrateError),
    /// No answer within the probe's limit.
    #[error("the database did not answer within {0:?}")]
    Timeout(Duration),
}

/// The readiness probe: the database answers and its schema is the expected one, within
/// `limit` (so a hung database fails the probe in bounded time). An answer, or no answer
/// within `limit`, is reported to `health`.
///
/// # Errors
/// Why the gateway is not ready, for the probe's body.
pub(crate) async fn probe(pool: &Pool, health: &Health, limit: Duration) -> Result<(), NotReady> {
    match tokio::time::timeout(limit, migrate::ensure_current(pool)).await {
        Ok(outcome) => {
            if outcome.is_ok() {
                health.report(true);
            }
            Ok(outcome?)
        }
        Err(_) => {
            health.report(false);
            Err(NotReady::Timeout(limit))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_report_decides() {
        let h = Health::new();
        assert!(!h.is_down(), "up until told otherwise");
        h.report(false);
        assert!(h.is_down());
        h.report(false);
        h.report(true);
        assert!(!h.is_down());
        h.report(false);
        assert!(h.is_down());
    }
}

//! The database's clock, as this instance sees it. Session rows carry the database's times
//! (`expires_at`, `last_seen_at`, set with its `now()`), so an instance whose own clock is off
//! must not compare them with its own: it keeps the offset between the database's `now()`,
//! read with every revocation poll and every session lookup, and its own clock, and
//! [`DbClock::now`] is its own clock moved by that offset. The error is at most the round trip
//! of the query that read it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

/// The offset of the database's clock from this instance's, learned from its answers.
#[derive(Debug, Default)]
pub(crate) struct DbClock {
    /// Database minus local, in microseconds; 0 until the database has answered.
    offset_us: AtomicI64,
}

impl DbClock {
    pub(crate) fn new() -> Self {
        DbClock::default()
    }

    /// Learns from a `now()` the database just returned.
    pub(crate) fn observe(&self, database_now: SystemTime) {
        let offset = match database_now.duration_since(SystemTime::now()) {
            Ok(ahead) => i64::try_from(ahead.as_micros()).unwrap_or(i64::MAX),
            Err(behind) => -i64::try_from(behind.duration().as_micros()).unwrap_or(i64::MAX),
        };
        self.offset_us.store(offset, Ordering::Relaxed);
    }

    /// The database's time now, as well as this instance can tell.
    pub(crate) fn now(&self) -> SystemTime {
        let offset = self.offset_us.load(Ordering::Relaxed);
        let local = SystemTime::now();
        let by = Duration::from_micros(offset.unsigned_abs());
        if offset >= 0 {
            local + by
        } else {
            local.checked_sub(by).unwrap_or(local)
        }
    }

    /// How far the database's clock is ahead of this instance's (negative: behind).
    #[cfg(test)]
    pub(crate) fn offset(&self) -> f64 {
        self.offset_us.load(Ordering::Relaxed) as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: SystemTime, b: SystemTime) -> bool {
        let d = a.duration_since(b).unwrap_or_else(|e| e.duration());
        d < Duration::from_millis(50)
    }

    #[test]
    fn now_follows_the_database_ahead_or_behind() {
        let clock = DbClock::new();
        assert!(
            close(clock.now(), SystemTime::now()),
            "own clock until told"
        );
        clock.observe(SystemTime::now() + Duration::from_secs(300));
        assert!(close(
            clock.now(),
            SystemTime::now() + Duration::from_secs(300)
        ));
        assert!((clock.offset() - 300.0).abs() < 0.05);
        clock.observe(SystemTime::now() - Duration::from_secs(300));
        assert!(close(
            clock.now(),
            SystemTime::now() - Duration::from_secs(300)
        ));
        assert!((clock.offset() + 300.0).abs() < 0.05);
    }
}

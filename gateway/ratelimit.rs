//! Rate limits of the auth flows, per client IP and per email address, from `[rate_limits]`.
//! A limit of `count/per` allows a burst of `count` and then one more every `per / count`
//! (GCRA).
//!
//! Two layers: keyed GCRA limiters (governor) in each instance's memory, checked first, so a
//! flood from one address is refused without database I/O; and, with
//! `rate_limits.fleet_wide` (the default), the same limits counted in the database
//! ([`store`], migration 008) at the database's clock, so they hold for the whole fleet: N
//! instances allow the same attempts as one, not N times as many.
//!
//! Limits are checked before any user lookup and keyed only by what the client sent (its
//! address and the normalized email as typed), so a known and an unknown address are limited
//! identically and a 429 tells nothing about accounts. IPv6 clients are keyed by their /64,
//! the block a single host usually controls. Keys that are back to a fresh state are dropped
//! by [`Limits::retain_recent`] (memory) and [`store::sweep`] (the table), which the server
//! calls periodically, so both stay bounded by the keys active within one period.
//!
//! The session-miss budget ([`Limits::spend_session_miss`]) is charged once for every session
//! query a client's request causes (a well-formed, correctly tagged token that is not in the
//! cache), so guessing tokens cannot flood the cache or the database from one address. It
//! stays in each instance's memory: it guards the database against one client's guesses, and
//! counting it in the database would cost the query it saves.

pub(crate) mod store;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{RateLimit, RateLimits};
use crate::db::DbError;

/// Background tasks of the flows (code issue and mail) running at once; past it new work is
/// dropped (and counted), while the client still gets the same answer.
pub(crate) const MAX_BACKGROUND: usize = 256;

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>;

/// Why an attempt was not let through.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LimitError {
    /// Over the limit: the wait in whole seconds (at least 1), for `Retry-After`.
    #[error("rate limited; retry in {0:?}")]
    Limited(Duration),
    /// The fleet-wide count could not be read or written.
    #[error("the fleet-wide rate limit could not be counted")]
    Store(#[source] DbError),
}

/// A rate-limited flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Login,
    OtpRequest,
    OtpVerify,
    Register,
    MagicRequest,
}

impl Action {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Action::Login => "login",
            Action::OtpRequest => "otp_request",
            Action::OtpVerify => "otp_verify",
            Action::Register => "register",
            Action::MagicRequest => "magic_request",
        }
    }
}

/// The governor quota for `limit`: a burst of `count`, one more every `per / count`.
pub(crate) fn quota(limit: RateLimit) -> Quota {
    let burst = NonZeroU32::new(limit.count).unwrap_or(NonZeroU32::MIN);
    let period = (limit.per / burst.get()).max(Duration::from_nanos(1));
    Quota::with_period(period)
        .expect("the period is positive")
        .allow_burst(burst)
}

struct Pair {
    ip: Keyed<IpAddr>,
    email: Keyed<String>,
    ip_limit: RateLimit,
    email_limit: RateLimit,
}

impl Pair {
    fn new(ip: RateLimit, email: RateLimit) -> Pair {
        Pair {
            ip: RateLimiter::dashmap(quota(ip)),
            email: RateLimiter::dashmap(quota(email)),
            ip_limit: ip,
            email_limit: email,
        }
    }
}

/// The limiters of every flow, shared by all connections (cheap to clone).
#[derive(Clone)]
pub(crate) struct Limits {
    inner: Arc<Inner>,
}

struct Inner {
    login: Pair,
    otp_request: Pair,
    otp_verify: Pair,
    register: Pair,
    magic_request: Pair,
    session_miss: Keyed<IpAddr>,
    background: Arc<Semaphore>,
    /// Where the fleet-wide counts live; `None`: memory only.
    store: Option<Pool>,
}

/// The key of a client address: IPv4 (also IPv4-mapped IPv6) as is, IPv6 by its /64.
pub(crate) fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

/// Retry-After is whole seconds: round up, so a client that obeys it is let through.
fn retry_after(wait: Duration) -> Duration {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    Duration::from_secs(secs.max(1))
}

fn count_refusal(action: &'static str, scope: &'static str) {
    metrics::counter!("gateway_rate_limited_total", "action" => action, "scope" => scope)
        .increment(1);
}

/// Counts one event of `key`; past the limit, the wait in whole seconds (at least 1), counted
/// in `gateway_rate_limited_total{action, scope}`.
fn spend<K: std::hash::Hash + Eq + Clone>(
    limiter: &Keyed<K>,
    key: &K,
    action: &'static str,
    scope: &'static str,
) -> Result<(), Duration> {
    limiter.check_key(key).map_err(|not_until| {
        count_refusal(action, scope);
        retry_after(not_until.wait_time_from(limiter.clock().now()))
    })
}

/// The refusal for a wait of `wait` (from the fleet-wide count), counted.
fn refused(action: Action, scope: &'static str, wait: Duration) -> LimitError {
    count_refusal(action.as_str(), scope);
    LimitError::Limited(retry_after(wait))
}

fn refusal<K: std::hash::Hash + Eq + Clone>(
    limiter: &Keyed<K>,
    key: &K,
    action: Action,
    scope: &'static str,
) -> Result<(), LimitError> {
    spend(limiter, key, action.as_str(), scope).map_err(LimitError::Limited)
}

impl Limits {
    /// Builds every limiter from `[rate_limits]`, in memory only (each instance counts alone).
    #[cfg(test)]
    pub(crate) fn new(cfg: &RateLimits) -> Limits {
        Limits::build(cfg, None)
    }

    /// Builds every limiter from `[rate_limits]`, counting in `pool`'s database as well when
    /// `rate_limits.fleet_wide` is set, so the limits hold across every instance.
    pub(crate) fn for_fleet(cfg: &RateLimits, pool: Pool) -> Limits {
        Limits::build(cfg, cfg.fleet_wide.then_some(pool))
    }

    fn build(cfg: &RateLimits, store: Option<Pool>) -> Limits {
        Limits {
            inner: Arc::new(Inner {
                login: Pair::new(cfg.login_per_ip, cfg.login_per_email),
                otp_request: Pair::new(cfg.otp_request_per_ip, cfg.otp_request_per_email),
                otp_verify: Pair::new(cfg.otp_verify_per_ip, cfg.otp_verify_per_email),
                register: Pair::new(cfg.register_per_ip, cfg.register_per_email),
                magic_request: Pair::new(cfg.magic_request_per_ip, cfg.magic_request_per_email),
                session_miss: RateLimiter::dashmap(quota(cfg.session_miss_per_ip)),
                background: Arc::new(Semaphore::new(MAX_BACKGROUND)),
                store,
            }),
        }
    }

    fn pair(&self, action: Action) -> &Pair {
        match action {
            Action::Login => &self.inner.login,
            Action::OtpRequest => &self.inner.otp_request,
            Action::OtpVerify => &self.inner.otp_verify,
            Action::Register => &self.inner.register,
            Action::MagicRequest => &self.inner.magic_request,
        }
    }

    /// Counts one `action` by the client at `ip` for `email` (normalized, whether or not an
    /// account has it): the per-IP limit first, then the per-email one.
    ///
    /// # Errors
    /// [`LimitError::Limited`] with the wait in whole seconds (at least 1), for
    /// `Retry-After`; [`LimitError::Store`] when the fleet-wide count cannot be read.
    ///
    /// # Security
    /// Call it before looking the email up, so known and unknown emails are limited alike.
    pub(crate) async fn check(
        &self,
        action: Action,
        ip: IpAddr,
        email: &str,
    ) -> Result<(), LimitError> {
        self.check_ip(action, ip).await?;
        self.check_email(action, email).await
    }

    /// The per-IP half of [`Limits::check`], for flows that validate more input between the
    /// two (a new password's strength: a user retrying weak passwords should not spend the
    /// per-email budget).
    ///
    /// # Errors
    /// As [`Limits::check`].
    pub(crate) async fn check_ip(&self, action: Action, ip: IpAddr) -> Result<(), LimitError> {
        let pair = self.pair(action);
        let key = ip_key(ip);
        refusal(&pair.ip, &key, action, "ip")?;
        self.check_fleet(action, "ip", &key.to_string(), pair.ip_limit)
            .await
    }

    /// The per-email half of [`Limits::check`].
    ///
    /// # Errors
    /// As [`Limits::check`].
    pub(crate) async fn check_email(&self, action: Action, email: &str) -> Result<(), LimitError> {
        let pair = self.pair(action);
        refusal(&pair.email, &email.to_string(), action, "email")?;
        self.check_fleet(action, "email", email, pair.email_limit)
            .await
    }

    /// The fleet-wide count, after this instance's own limiter let the attempt through.
    async fn check_fleet(
        &self,
        action: Action,
        scope: &'static str,
        subject: &str,
        limit: RateLimit,
    ) -> Result<(), LimitError> {
        let Some(pool) = &self.inner.store else {
            return Ok(());
        };
        let taken = store::take(pool, action.as_str(), scope, subject, limit)
            .await
            .map_err(LimitError::Store)?;
        match taken {
            None => Ok(()),
            Some(wait) => Err(refused(action, scope, wait)),
        }
    }

    /// Deletes fleet-wide cells at rest (a no-op without `fleet_wide`).
    ///
    /// # Errors
    /// The database could not be asked.
    pub(crate) async fn sweep(&self) -> Result<u64, DbError> {
        match &self.inner.store {
            Some(pool) => store::sweep(pool).await,
            None => Ok(0),
        }
    }

    /// Spends one session query of the client at `ip` (keyed like the other limits: IPv6 by
    /// its /64). Pass it to [`crate::sessions::Sessions::validate`], which calls it only when
    /// it is about to query.
    ///
    /// # Errors
    /// The wait in whole seconds (at least 1) when the budget is spent: the session was not
    /// checked, so the answer is 429 with `Retry-After`, never 401.
    pub(crate) fn spend_session_miss(&self, ip: IpAddr) -> Result<(), Duration> {
        spend(
            &self.inner.session_miss,
            &ip_key(ip),
            "session_lookup",
            "ip",
        )
    }

    /// Drops the keys whose state is indistinguishable from a fresh one.
    pub(crate) fn retain_recent(&self) {
        self.inner.session_miss.retain_recent();
        self.inner.session_miss.shrink_to_fit();
        for action in [
            Action::Login,
            Action::OtpRequest,
            Action::OtpVerify,
            Action::Register,
            Action::MagicRequest,
        ] {
            let pair = self.pair(action);
            pair.ip.retain_recent();
            pair.email.retain_recent();
            pair.ip.shrink_to_fit();
            pair.email.shrink_to_fit();
        }
    }

    /// Keys held across every limiter.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        [
            Action::Login,
            Action::OtpRequest,
            Action::OtpVerify,
            Action::Register,
            Action::MagicRequest,
        ]
        .iter()
        .map(|a| self.pair(*a).ip.len() + self.pair(*a).email.len())
        .sum::<usize>()
            + self.inner.session_miss.len()
    }

    /// Whether no key is held.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A permit for one background task of the flows, or `None` when [`MAX_BACKGROUND`] are
    /// already running (the caller drops the work and answers as usual).
    pub(crate) fn background(&self) -> Option<OwnedSemaphorePermit> {
        self.inner.background.clone().try_acquire_owned().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(login_per_ip: &str, login_per_email: &str) -> Limits {
        limits_with(login_per_ip, login_per_email, "1000/1s")
    }

    fn limits_with(login_per_ip: &str, login_per_email: &str, session_miss: &str) -> Limits {
        let base: RateLimit = "1000/1s".parse().unwrap();
        Limits::new(&RateLimits {
            login_per_ip: login_per_ip.parse().unwrap(),
            login_per_email: login_per_email.parse().unwrap(),
            otp_request_per_ip: base,
            otp_request_per_email: base,
            otp_verify_per_ip: base,
            otp_verify_per_email: base,
            register_per_ip: base,
            register_per_email: base,
            magic_request_per_ip: base,
            magic_request_per_email: base,
            session_miss_per_ip: session_miss.parse().unwrap(),
            fleet_wide: false,
        })
    }

    #[tokio::test]
    async fn the_burst_is_the_count_then_429_with_retry_after() {
        let l = limits("3/1m", "100/1m");
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            l.check(Action::Login, ip, "a@example.com").await.unwrap();
        }
        match l.check(Action::Login, ip, "a@example.com").await {
            Err(LimitError::Limited(wait)) => {
                assert!(
                    wait >= Duration::from_secs(19) && wait <= Duration::from_secs(20),
                    "one more every 20 s: {wait:?}"
                );
            }
            other => panic!("expected 429, got {other:?}"),
        }
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(l.check(Action::Login, other, "a@example.com").await.is_ok());
        assert!(
            l.check(Action::OtpRequest, ip, "a@example.com")
                .await
                .is_ok(),
            "flows have their own limiters"
        );
    }

    #[tokio::test]
    async fn the_email_limit_spans_addresses() {
        let l = limits("100/1m", "2/1m");
        for i in 1..=2 {
            let ip: IpAddr = format!("192.0.2.{i}").parse().unwrap();
            l.check(Action::Login, ip, "victim@example.com")
                .await
                .unwrap();
        }
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        assert!(matches!(
            l.check(Action::Login, ip, "victim@example.com").await,
            Err(LimitError::Limited(_))
        ));
        assert!(
            l.check(Action::Login, ip, "other@example.com")
                .await
                .is_ok()
        );
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
        assert_ne!(ip_key(a), ip_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(ip_key(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[tokio::test]
    async fn the_session_miss_budget_is_per_address_and_answers_a_wait() {
        let l = limits_with("1000/1s", "1000/1s", "3/1m");
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        for _ in 0..3 {
            l.spend_session_miss(ip).unwrap();
        }
        let wait = l.spend_session_miss(ip).unwrap_err();
        assert!(
            wait >= Duration::from_secs(19) && wait <= Duration::from_secs(20),
            "one more every 20 s: {wait:?}"
        );
        let neighbour: IpAddr = "198.51.100.8".parse().unwrap();
        assert!(l.spend_session_miss(neighbour).is_ok());
        assert!(
            l.check(Action::Login, ip, "a@example.com").await.is_ok(),
            "the flows' limits are apart"
        );
        let v6: IpAddr = "2001:db8:7::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:7::ffff".parse().unwrap();
        for _ in 0..3 {
            l.spend_session_miss(v6).unwrap();
        }
        assert!(
            l.spend_session_miss(same_64).is_err(),
            "IPv6 is budgeted by its /64"
        );
    }

    #[tokio::test]
    async fn fresh_keys_are_forgotten() {
        let l = limits_with("1000/1ms", "1000/1ms", "1000/1ms");
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        l.check(Action::Login, ip, "a@example.com").await.unwrap();
        l.spend_session_miss(ip).unwrap();
        assert_eq!(
            l.len(),
            3,
            "login per IP and per email, and the session miss"
        );
        std::thread::sleep(Duration::from_millis(20));
        l.retain_recent();
        assert!(l.is_empty(), "{} keys left", l.len());
    }

    #[test]
    fn background_work_is_bounded() {
        let l = limits("1/1s", "1/1s");
        let permits: Vec<_> = (0..MAX_BACKGROUND).filter_map(|_| l.background()).collect();
        assert_eq!(permits.len(), MAX_BACKGROUND);
        assert!(l.background().is_none());
        drop(permits);
        assert!(l.background().is_some());
    }
}

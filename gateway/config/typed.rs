//! The validated configuration the rest of the gateway reads: durations, socket addresses,
//! parsed URIs and header names, enums; built only by validation ([`super::Config::load`]).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use super::branding::{Accent, Branding, Logo};

/// The validated configuration. Built only by [`Config::load`] and [`Config::from_raw`].
#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub upstream: Upstream,
    pub database: Database,
    pub sessions: Sessions,
    pub auth: Auth,
    pub headers: Headers,
    pub mail: Mail,
    pub codes: Codes,
    pub rate_limits: RateLimits,
    pub log: Log,
    pub branding: Branding,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub admin_listen: SocketAddr,
    pub public_url: PublicUrl,
    pub trusted_proxies: Vec<IpNet>,
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: u64,
    pub header_read_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub shutdown_grace: Duration,
    /// After SIGTERM: how long `/readyz` answers 503 while requests are still served, before
    /// the listener closes and the drain (`shutdown_grace`) begins.
    pub accept_grace: Duration,
    pub h2_max_concurrent_streams: u32,
    /// Worker threads serving connections, each with its own single-threaded runtime
    /// (`0` in the file: one per available core).
    pub workers: usize,
    /// Origins besides `public_url` whose pages may open WebSockets authenticated by the
    /// session cookie, spelled as an `Origin` header spells them.
    pub websocket_origins: Vec<String>,
    /// The `Strict-Transport-Security` policy sent on every answer of the TLS listener;
    /// `None` without TLS or with `server.hsts = false`.
    pub hsts: Option<Hsts>,
}

/// A `Strict-Transport-Security` policy (RFC 6797).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hsts {
    pub max_age: Duration,
    pub include_subdomains: bool,
}

impl Hsts {
    /// The header value: `max-age=<seconds>[; includeSubDomains]`.
    pub fn header_value(&self) -> String {
        let mut value = format!("max-age={}", self.max_age.as_secs());
        if self.include_subdomains {
            value.push_str("; includeSubDomains");
        }
        value
    }
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The origin browsers use to reach the gateway: scheme, host and port, no path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    /// `https://host[:port]`, exactly as an `Origin` header spells it.
    pub origin: String,
    pub https: bool,
}

/// An IP network (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    /// Whether `ip` lies inside this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or CIDR network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: prefix length must be 0..={max}"))?,
        };
        Ok(IpNet { addr, prefix })
    }
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
}

#[derive(Debug, Clone)]
pub struct Database {
    pub url: String,
    pub max_connections: usize,
    pub pool_wait_timeout: Duration,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Sessions {
    pub cookie_name: String,
    pub lifetime: Duration,
    pub idle_timeout: Duration,
    pub touch_interval: Duration,
    pub touch_queue: usize,
    pub cache_ttl: Duration,
    pub cache_capacity: u64,
    pub negative_ttl: Duration,
    pub revocation_poll: Duration,
    pub revocation_overlap: Duration,
    /// Whether cached sessions are still served while the database is down (they die at
    /// `cache_ttl` all the same); when false, cache hits answer 503 then.
    pub serve_cached_when_db_down: bool,
    /// How often an open WebSocket tunnel re-validates the session that opened it.
    pub tunnel_recheck: Duration,
    /// The key of new tokens' tags. Empty when not configured: `gateway serve` refuses that
    /// ([`Config::serve_problems`]).
    pub token_key: Vec<u8>,
    /// Former token keys whose tags are still accepted while rotating.
    pub previous_token_keys: Vec<Vec<u8>>,
    /// Whether tokens issued before tags existed are still looked up.
    pub accept_legacy_tokens: bool,
}

#[derive(Debug, Clone)]
pub struct Auth {
    pub bcrypt_cost: u32,
    pub bcrypt_concurrency: usize,
    pub bcrypt_queue: usize,
    /// Empty when not configured: `gateway serve` refuses that ([`Config::serve_problems`]).
    pub secret: Vec<u8>,
    pub previous_secrets: Vec<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct Headers {
    pub user_id: http::HeaderName,
    pub user_email: http::HeaderName,
    pub user_roles: http::HeaderName,
    pub session_id: http::HeaderName,
    pub signature: http::HeaderName,
    pub user_email_verified: http::HeaderName,
    /// The HMAC key of `X-Identity-Signature`, shared with the backends; `None` when
    /// signing is off.
    pub signing_secret: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailTransport {
    Smtp,
    Log,
}

#[derive(Debug, Clone)]
pub struct Mail {
    pub transport: MailTransport,
    /// lettre's URL form: `smtp://[user:pass@]host:port[?tls=required|opportunistic]` or
    /// `smtps://...` (implicit TLS).
    pub smtp_url: String,
    pub from: String,
    /// Messages waiting to be sent; beyond it new mail is dropped and counted.
    pub queue: usize,
    /// Attempts per message after the first, with backoff.
    pub retries: u32,
    pub send_timeout: Duration,
}

/// One-time codes and magic links.
#[derive(Debug, Clone)]
pub struct Codes {
    pub ttl: Duration,
    /// Wrong guesses per code before it is dead.
    pub max_attempts: u32,
    pub magic_link_ttl: Duration,
    /// Failed guesses per (email, purpose) within `failure_window`, across re-issued codes.
    pub failure_budget: u32,
    pub failure_window: Duration,
}

/// `count` events per `per`, per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub count: u32,
    pub per: Duration,
}

impl std::str::FromStr for RateLimit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a rate; write it like \"10/1m\" (10 per minute)");
        let (count, per) = s.split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let per = parse_duration(per).map_err(|_| bad())?;
        if count == 0 || per.is_zero() {
            return Err(format!(
                "`{s}`: both the count and the period must be positive"
            ));
        }
        Ok(RateLimit { count, per })
    }
}

#[derive(Debug, Clone)]
pub struct RateLimits {
    pub login_per_ip: RateLimit,
    pub login_per_email: RateLimit,
    pub otp_request_per_ip: RateLimit,
    pub otp_request_per_email: RateLimit,
    pub otp_verify_per_ip: RateLimit,
    pub otp_verify_per_email: RateLimit,
    pub register_per_ip: RateLimit,
    pub register_per_email: RateLimit,
    pub magic_request_per_ip: RateLimit,
    pub magic_request_per_email: RateLimit,
    /// Session queries per client address (cache misses of well-formed, tagged tokens).
    pub session_miss_per_ip: RateLimit,
    /// Counted in the database, so the limits hold across every instance (`false`: in each
    /// instance's memory, so N instances allow N times as much).
    pub fleet_wide: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Log {
    pub format: LogFormat,
    pub level: String,
}

/// How a route treats requests without a valid session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AuthPolicy {
    /// Anyone; identity headers are still stripped, never added.
    Public,
    /// Identity headers are added when a valid session is presented.
    Optional,
    /// A valid session (and one of `roles`, if any) is needed.
    Required,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub path_prefix: String,
    pub upstream: http::Uri,
    pub auth: AuthPolicy,
    pub roles: Vec<String>,
    pub methods: Vec<http::Method>,
    pub strip_prefix: bool,
}

impl PublicUrl {
    /// Whether the public URL names this machine or a reserved test domain, where the dev-only
    /// `log` mail transport is allowed.
    pub fn is_local(&self) -> bool {
        let rest = self
            .origin
            .split_once("://")
            .map_or(self.origin.as_str(), |(_, r)| r);
        let host = if let Some(v6) = rest.strip_prefix('[') {
            v6.split(']').next().unwrap_or_default()
        } else {
            rest.rsplit_once(':').map_or(rest, |(h, _)| h)
        };
        matches!(host, "localhost" | "127.0.0.1" | "::1")
            || host.ends_with(".localhost")
            || host.ends_with(".test")
    }
}

/// Parses a duration string such as `500ms`, `30s`, `15m`, `30d`.
///
/// # Errors
/// A message with the accepted forms.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|_| {
        format!("`{s}` is not a duration; write it like \"500ms\", \"30s\", \"15m\" or \"30d\"")
    })
}

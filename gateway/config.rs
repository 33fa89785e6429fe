//! Configuration: a TOML file (or built-in defaults) with `GATEWAY_SECTION__KEY` environment
//! overrides, read into a raw serde struct, then validated into the typed [`Config`] the rest
//! of the gateway uses. Every problem names its key and the fix.
//!
//! Unknown keys are errors, not ignored: they are collected with `serde_ignored` (rather than
//! `deny_unknown_fields`, which stops at the first one) so that `check-config` lists all of
//! them at once, each with its full path (`server.lisen`) or environment variable.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod branding;

pub use branding::{Accent, Branding, Logo, RawBranding};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9091";
pub const DEFAULT_PUBLIC_URL: &str = "https://localhost:8443";
pub const DEFAULT_MAX_CONNECTIONS: u64 = 20_000;
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 64 * 1024;
pub const DEFAULT_MAX_HEADERS: u64 = 100;
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
pub const DEFAULT_HEADER_READ_TIMEOUT: &str = "10s";
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: &str = "10s";
pub const DEFAULT_SHUTDOWN_GRACE: &str = "30s";
/// Long enough for a balancer checking `/readyz` every second and taking an instance out after
/// two failures (HAProxy `inter 1s fall 2`, a Kubernetes readiness probe with `periodSeconds: 1`
/// and `failureThreshold: 2`) to stop sending before the listener closes.
pub const DEFAULT_ACCEPT_GRACE: &str = "5s";
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u64 = 256;
pub const DEFAULT_HSTS: bool = true;
pub const DEFAULT_HSTS_MAX_AGE: &str = "365d";
pub const DEFAULT_HSTS_INCLUDE_SUBDOMAINS: bool = false;

pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT: &str = "5s";
pub const DEFAULT_UPSTREAM_RESPONSE_TIMEOUT: &str = "60s";
pub const DEFAULT_UPSTREAM_POOL_IDLE_TIMEOUT: &str = "90s";
pub const DEFAULT_UPSTREAM_POOL_MAX_IDLE: u64 = 256;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/gateway";
pub const DEFAULT_DB_MAX_CONNECTIONS: u64 = 16;
pub const DEFAULT_DB_POOL_WAIT: &str = "2s";
pub const DEFAULT_DB_CONNECT_TIMEOUT: &str = "5s";
pub const DEFAULT_DB_STATEMENT_TIMEOUT: &str = "5s";

pub const DEFAULT_COOKIE_NAME: &str = "__Host-gw_session";
pub const DEFAULT_SESSION_LIFETIME: &str = "30d";
pub const DEFAULT_SESSION_IDLE_TIMEOUT: &str = "7d";
pub const DEFAULT_TOUCH_INTERVAL: &str = "5m";
pub const DEFAULT_TOUCH_QUEUE: u64 = 65_536;
pub const DEFAULT_CACHE_TTL: &str = "60s";
pub const DEFAULT_CACHE_CAPACITY: u64 = 2_000_000;
pub const DEFAULT_NEGATIVE_TTL: &str = "5s";
pub const DEFAULT_REVOCATION_POLL: &str = "1s";
pub const DEFAULT_REVOCATION_OVERLAP: &str = "5s";
pub const DEFAULT_SERVE_CACHED_WHEN_DB_DOWN: bool = true;
pub const DEFAULT_TUNNEL_RECHECK: &str = "1s";
/// Tokens from before token tags end at the upgrade unless the operator keeps them.
pub const DEFAULT_ACCEPT_LEGACY_TOKENS: bool = false;

pub const DEFAULT_BCRYPT_COST: u32 = 12;
pub const DEFAULT_BCRYPT_QUEUE: u64 = 256;
pub const MIN_SECRET_BYTES: usize = 32;

pub const DEFAULT_MAIL_TRANSPORT: &str = "log";
pub const DEFAULT_SMTP_URL: &str = "smtp://127.0.0.1:2525";
pub const DEFAULT_MAIL_FROM: &str = "Gateway <no-reply@example.com>";

pub const DEFAULT_MAIL_QUEUE: u64 = 1000;
pub const DEFAULT_MAIL_RETRIES: u64 = 5;
pub const DEFAULT_MAIL_SEND_TIMEOUT: &str = "10s";

pub const DEFAULT_CODE_TTL: &str = "10m";
pub const DEFAULT_CODE_MAX_ATTEMPTS: u64 = 5;
pub const DEFAULT_MAGIC_LINK_TTL: &str = "15m";
pub const DEFAULT_FAILURE_BUDGET: u64 = 10;
pub const DEFAULT_FAILURE_WINDOW: &str = "1h";

pub const DEFAULT_RATE_LOGIN_IP: &str = "30/1m";
pub const DEFAULT_RATE_LOGIN_EMAIL: &str = "10/1m";
pub const DEFAULT_RATE_OTP_REQUEST_IP: &str = "20/1m";
pub const DEFAULT_RATE_OTP_REQUEST_EMAIL: &str = "5/15m";
pub const DEFAULT_RATE_OTP_VERIFY_IP: &str = "30/1m";
pub const DEFAULT_RATE_OTP_VERIFY_EMAIL: &str = "10/15m";
pub const DEFAULT_RATE_REGISTER_IP: &str = "10/1m";
/// Each registration mails the address (a code, or an "account exists" notice): this bounds
/// how often anyone can make the gateway mail one address.
pub const DEFAULT_RATE_REGISTER_EMAIL: &str = "5/15m";
pub const DEFAULT_RATE_MAGIC_REQUEST_IP: &str = "20/1m";
pub const DEFAULT_RATE_MAGIC_REQUEST_EMAIL: &str = "5/15m";
/// Session queries (cache misses of well-formed, correctly tagged tokens) per client address:
/// a burst of 600, then 10 a second, enough for hundreds of users behind one NAT whose
/// sessions each miss once per `cache_ttl`.
pub const DEFAULT_RATE_SESSION_MISS_IP: &str = "600/1m";
/// The limits hold for the whole fleet (counted in the database), not per instance.
pub const DEFAULT_RATE_FLEET_WIDE: bool = true;

pub const DEFAULT_LOG_FORMAT: &str = "text";
pub const DEFAULT_LOG_LEVEL: &str = "info";

pub const DEFAULT_HEADER_USER_ID: &str = "x-user-id";
pub const DEFAULT_HEADER_USER_EMAIL: &str = "x-user-email";
pub const DEFAULT_HEADER_USER_ROLES: &str = "x-user-roles";
pub const DEFAULT_HEADER_SESSION_ID: &str = "x-session-id";
pub const DEFAULT_HEADER_SIGNATURE: &str = "x-identity-signature";
pub const DEFAULT_HEADER_USER_EMAIL_VERIFIED: &str = "x-user-email-verified";

/// Environment variable naming the config file when `--config` is absent.
pub const CONFIG_ENV: &str = "GATEWAY_CONFIG";
/// Prefix of the per-key overrides: `GATEWAY_SECTION__KEY`.
pub const ENV_PREFIX: &str = "GATEWAY_";

// ---------------------------------------------------------------------------------------------
// Raw configuration: exactly the file format.

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RawConfig {
    pub server: RawServer,
    pub upstream: RawUpstream,
    pub database: RawDatabase,
    pub sessions: RawSessions,
    pub auth: RawAuth,
    pub headers: RawHeaders,
    pub mail: RawMail,
    pub codes: RawCodes,
    pub rate_limits: RawRateLimits,
    pub log: RawLog,
    pub branding: RawBranding,
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RawServer {
    pub listen: String,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub admin_listen: String,
    pub public_url: String,
    pub trusted_proxies: Vec<String>,
    pub max_connections: u64,
    pub max_header_bytes: u64,
    pub max_headers: u64,
    pub max_body_bytes: u64,
    pub header_read_timeout: String,
    pub tls_handshake_timeout: String,
    pub shutdown_grace: String,
    pub accept_grace: String,
    pub h2_max_concurrent_streams: u64,
    pub workers: u64,
    pub websocket_origins: Vec<String>,
    pub hsts: bool,
    pub hsts_max_age: String,
    pub hsts_include_subdomains: bool,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.into(),
            tls_cert: None,
            tls_key: None,
            admin_listen: DEFAULT_ADMIN_LISTEN.into(),
            public_url: DEFAULT_PUBLIC_URL.into(),
            trusted_proxies: Vec::new(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT.into(),
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT.into(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE.into(),
            accept_grace: DEFAULT_ACCEPT_GRACE.into(),
            h2_max_concurrent_streams: DEFAULT_H2_MAX_CONCURRENT_STREAMS,
            workers: 0,
            websocket_origins: Vec::new(),
            hsts: DEFAULT_HSTS,
            hsts_max_age: DEFAULT_HSTS_MAX_AGE.into(),
            hsts_include_subdomains: DEFAULT_HSTS_INCLUDE_SUBDOMAINS,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RawUpstream {
    pub connect_timeout: String,
    pub response_timeout: String,
    pub pool_idle_timeout: String,
    pub pool_max_idle_per_host: u64,
}

impl Default for RawUpstream {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_UPSTREAM_CONNECT_TIMEOUT.into(),
            response_timeout: DEFAULT_UPSTREAM_RESPONSE_TIMEOUT.into(),
            pool_idle_timeout: DEFAULT_UPSTREAM_POOL_IDLE_TIMEOUT.into(),
            pool_max_idle_per_host: DEFAULT_UPSTREAM_POOL_MAX_IDLE,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RawDatabase {
    pub url: String,
    pub max_connections: u64,
    pub pool_wait_timeout: String,
    pub connect_timeout: String,
    pub statement_timeout: String,
}

impl Default for RawDatabase {
    fn default() -> Self {
        Self {
            url: DEFAULT_DATABASE_URL.into(),
            max_connections: DEFAULT_DB_MAX_CONNECTIONS,
            pool_wait_timeout: DEFAULT_DB_POOL_WAIT.into(),
            connect_timeout: DEFAULT_DB_CONNECT_TIMEOUT.into(),
            statement_timeout: DEFAULT_DB_STATEMENT_TIMEOUT.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RawSessions {
    pub cookie_name: String,
    pub lifetime: String,
    pub idle_timeout: String,
    pub touch_interval: String,
    pub touch_queue: u64,
    pub cache_ttl: String,
    pub cache_capacity: u64,
    pub negative_ttl: String,
    pub revocation_poll: String,
    pub revocation_overlap: String,
    pub serve_cached_when_db_down: bool,
    pub tunnel_recheck: String,
    pub token_key: String,
    pub previous_token_keys: Vec<String>,
    pub accept_legacy_tokens: bool,
}

impl Default for RawSessions {
    fn default() -> Self {
        Self {
            cookie_name: DEFAULT_COOKIE_NAME.into(),
            lifetime: DEFAULT_SESSION_LIFETIME.into(),
            idle_timeout: DEFAULT_SESSION_IDLE_TIMEOUT.into(),
            touch_interval: DEFAULT_TOUCH_INTERVAL.into(),
            touch_queue: DEFAULT_TOUCH_QUEUE,
            cache_ttl: DEFAULT_CACHE_TTL.into(),
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            negative_ttl: DEFAULT_NEGATIVE_TTL.into(),
            revocation_poll: DEFAULT_REVOCATION_POLL.into(),
            revocation_overlap: DEFAULT_REVOCATION_OVERLAP.into(),
            serve_cached_when_db_down: DEFAULT_SERVE_CACHED_WHEN_DB_DOWN,
            tunnel_recheck: DEFAULT_TUNNEL_RECHECK.into(),
            token_key: String::new(),
            previous_token_keys: Vec::new(),
            accept_legacy_tokens: DEFAULT_ACCEPT_LEGACY_TOKENS,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RawAuth {
    pub bcrypt_cost: u32,
    pub bcrypt_concurrency: u64,
    pub bcrypt_queue: u64,
    pub secret: String,
    pub previous_secrets: Vec<String>,
}

impl Default for RawAuth {
    fn default() -> Self {
        Self {
            bcrypt_cost: DEFAULT_BCRYPT_COST,
            bcrypt_concurrency: 0,
            bcrypt_queue: DEFAULT_BCRYPT_QUEUE,
            secret: String::new(),
            previous_secrets: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RawHeaders {
    pub user_id: String,
    pub user_email: String,
    pub user_roles: String,
    pub session_id: String,
    pub signature: String,
    pub sign: bool,
    pub signing_secret: String,
    pub user_email_verified: String,
}

impl Default for RawHeaders {
    fn default() -> Self {
        Self {
            user_id: DEFAULT_HEADER_USER_ID.into(),
            user_email: DEFAULT_HEADER_USER_EMAIL.into(),
            user_roles: DEFAULT_HEADER_USER_ROLES.into(),
            session_id: DEFAULT_HEADER_SESSION_ID.into(),
            signature: DEFAULT_HEADER_SIGNATURE.into(),
            sign: false,
            signing_secret: String::new(),
            user_email_verified: DEFAULT_HEADER_USER_EMAIL_VERIFIED.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RawMail {
    pub transport: String,
    pub smtp_url: String,
    pub from: String,
    pub queue: u64,
    pub retries: u64,
    pub send_timeout: String,
}

impl Default for RawMail {
    fn default() -> Self {
        Self {
            transport: DEFAULT_MAIL_TRANSPORT.into(),
            smtp_url: DEFAULT_SMTP_URL.into(),
            from: DEFAULT_MAIL_FROM.into(),
            queue: DEFAULT_MAIL_QUEUE,
            retries: DEFAULT_MAIL_RETRIES,
            send_timeout: DEFAULT_MAIL_SEND_TIMEOUT.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RawCodes {
    pub ttl: String,
    pub max_attempts: u64,
    pub magic_link_ttl: String,
    pub failure_budget: u64,
    pub failure_window: String,
}

impl Default for RawCodes {
    fn default() -> Self {
        Self {
            ttl: DEFAULT_CODE_TTL.into(),
            max_attempts: DEFAULT_CODE_MAX_ATTEMPTS,
            magic_link_ttl: DEFAULT_MAGIC_LINK_TTL.into(),
            failure_budget: DEFAULT_FAILURE_BUDGET,
            failure_window: DEFAULT_FAILURE_WINDOW.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RawRateLimits {
    pub login_per_ip: String,
    pub login_per_email: String,
    pub otp_request_per_ip: String,
    pub otp_request_per_email: String,
    pub otp_verify_per_ip: String,
    pub otp_verify_per_email: String,
    pub register_per_ip: String,
    pub register_per_email: String,
    pub magic_request_per_ip: String,
    pub magic_request_per_email: String,
    pub session_miss_per_ip: String,
    pub fleet_wide: bool,
}

impl Default for RawRateLimits {
    fn default() -> Self {
        Self {
            login_per_ip: DEFAULT_RATE_LOGIN_IP.into(),
            login_per_email: DEFAULT_RATE_LOGIN_EMAIL.into(),
            otp_request_per_ip: DEFAULT_RATE_OTP_REQUEST_IP.into(),
            otp_request_per_email: DEFAULT_RATE_OTP_REQUEST_EMAIL.into(),
            otp_verify_per_ip: DEFAULT_RATE_OTP_VERIFY_IP.into(),
            otp_verify_per_email: DEFAULT_RATE_OTP_VERIFY_EMAIL.into(),
            register_per_ip: DEFAULT_RATE_REGISTER_IP.into(),
            register_per_email: DEFAULT_RATE_REGISTER_EMAIL.into(),
            magic_request_per_ip: DEFAULT_RATE_MAGIC_REQUEST_IP.into(),
            magic_request_per_email: DEFAULT_RATE_MAGIC_REQUEST_EMAIL.into(),
            session_miss_per_ip: DEFAULT_RATE_SESSION_MISS_IP.into(),
            fleet_wide: DEFAULT_RATE_FLEET_WIDE,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RawLog {
    pub format: String,
    pub level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: DEFAULT_LOG_FORMAT.into(),
            level: DEFAULT_LOG_LEVEL.into(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RawRoute {
    pub path_prefix: String,
    pub upstream: String,
    #[serde(default)]
    pub auth: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub strip_prefix: bool,
}

// ---------------------------------------------------------------------------------------------
// Validated configuration.

/// The validated configuration. Built only by [`Config::load`] / [`Config::from_raw`].
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

// ---------------------------------------------------------------------------------------------
// Errors.

/// One problem in the configuration: the key it concerns and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every problem found while loading or validating a configuration, and the one way they are
/// printed (by `check-config`, `serve` and every other command): a count, then one line per
/// problem with its key.
#[derive(Debug, Clone)]
pub struct ConfigError {
    /// The file (or "built-in defaults"), when the problems are the file's.
    pub source_name: Option<String>,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid configuration")?;
        if let Some(source) = &self.source_name {
            write!(f, " ({source})")?;
        }
        writeln!(f, ": {} problem(s)", self.problems.len())?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------------------------
// Loading.

impl Config {
    /// Loads the configuration from `path` (or built-in defaults when `None`), applies the
    /// environment overrides in `env` (`GATEWAY_SECTION__KEY=value`) and validates it.
    ///
    /// # Errors
    /// A [`ConfigError`] listing every problem found, each naming its key.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let source_name = path.map_or_else(
            || "built-in defaults".to_string(),
            |p| p.display().to_string(),
        );
        let fail = |problems| ConfigError {
            source_name: Some(source_name.clone()),
            problems,
        };
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|e| {
                fail(vec![Problem {
                    key: "--config".into(),
                    message: format!("cannot read {}: {e}", p.display()),
                }])
            })?,
            None => String::new(),
        };
        let raw = parse_with_overrides(&text, env).map_err(&fail)?;
        Config::from_raw(&raw).map_err(fail)
    }

    /// Validates a raw configuration.
    ///
    /// # Errors
    /// Every problem found, each naming its key.
    pub fn from_raw(raw: &RawConfig) -> Result<Config, Vec<Problem>> {
        let mut v = Validator::default();
        let config = Config {
            server: v.server(&raw.server),
            upstream: Upstream {
                connect_timeout: v
                    .duration("upstream.connect_timeout", &raw.upstream.connect_timeout),
                response_timeout: v
                    .duration("upstream.response_timeout", &raw.upstream.response_timeout),
                pool_idle_timeout: v.duration(
                    "upstream.pool_idle_timeout",
                    &raw.upstream.pool_idle_timeout,
                ),
                pool_max_idle_per_host: v.count(
                    "upstream.pool_max_idle_per_host",
                    raw.upstream.pool_max_idle_per_host,
                    0,
                    1_000_000,
                ),
            },
            database: v.database(&raw.database),
            sessions: v.sessions(&raw.sessions),
            auth: v.auth(&raw.auth),
            headers: v.headers(&raw.headers),
            mail: v.mail(&raw.mail),
            codes: v.codes(&raw.codes),
            rate_limits: v.rate_limits(&raw.rate_limits),
            log: v.log(&raw.log),
            branding: v.branding(&raw.branding),
            routes: raw
                .routes
                .iter()
                .enumerate()
                .filter_map(|(i, r)| v.route(i, r))
                .collect(),
        };
        v.routes_unique(&config.routes);
        v.cookie_fits_the_scheme(&config);
        if v.problems.is_empty() {
            Ok(config)
        } else {
            Err(v.problems)
        }
    }

    /// Refuses what stops `gateway serve` beyond what every command needs
    /// ([`Config::serve_problems`]).
    ///
    /// # Errors
    /// Every such problem, printed as every configuration problem is.
    pub fn check_serve(&self) -> Result<(), ConfigError> {
        let problems = self.serve_problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                source_name: None,
                problems,
            })
        }
    }

    /// The problems that stop `gateway serve` beyond what every command needs: the secret.
    pub fn serve_problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.auth.secret.len() < MIN_SECRET_BYTES {
            problems.push(Problem {
                key: "auth.secret".into(),
                message: format!(
                    "must be at least {MIN_SECRET_BYTES} bytes (got {}); set it from the environment: \
                     GATEWAY_AUTH__SECRET=$(openssl rand -base64 48)",
                    self.auth.secret.len()
                ),
            });
        }
        if self.sessions.token_key.len() < MIN_SECRET_BYTES {
            problems.push(Problem {
                key: "sessions.token_key".into(),
                message: format!(
                    "must be at least {MIN_SECRET_BYTES} bytes (got {}); it signs session tokens so that \
                     forged ones cost no database query; set it from the environment: \
                     GATEWAY_SESSIONS__TOKEN_KEY=$(openssl rand -base64 48)",
                    self.sessions.token_key.len()
                ),
            });
        }
        if self.mail.transport == MailTransport::Log && !self.server.public_url.is_local() {
            problems.push(Problem {
                key: "mail.transport".into(),
                message: format!(
                    "\"log\" writes codes and links to the log and is for development only: server.public_url ({}) \
                     is not a local address (localhost, 127.0.0.1, ::1 or a .test/.localhost name); use \"smtp\"",
                    self.server.public_url.origin
                ),
            });
        }
        problems
    }
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

/// Parses the TOML `text`, then applies the environment overrides.
fn parse_with_overrides(
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<RawConfig, Vec<Problem>> {
    let deserializer =
        toml::de::Deserializer::parse(text).map_err(|e| vec![file_problem(text, &e)])?;
    let mut unknown = Vec::new();
    let raw: RawConfig =
        serde_ignored::deserialize(deserializer, |path| unknown.push(path.to_string()))
            .map_err(|e| vec![file_problem(text, &e)])?;
    let mut problems: Vec<Problem> = unknown
        .into_iter()
        .map(|key| unknown_key(key, None))
        .collect();
    let overrides: BTreeMap<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k.contains("__"))
        .collect();
    if overrides.is_empty() {
        return if problems.is_empty() {
            Ok(raw)
        } else {
            Err(problems)
        };
    }
    let mut tree = toml::Table::try_from(&raw).map_err(|e| {
        vec![Problem {
            key: "(config)".into(),
            message: format!("cannot re-encode the configuration: {e}"),
        }]
    })?;
    for (var, value) in &overrides {
        if let Err(message) = apply_override(&mut tree, var, value) {
            problems.push(Problem {
                key: var.clone(),
                message,
            });
        }
    }
    let mut unknown = Vec::new();
    let merged = serde_ignored::deserialize(toml::Value::Table(tree), |path| {
        unknown.push(path.to_string())
    });
    for key in unknown {
        let var = format!(
            "{ENV_PREFIX}{}",
            key.replacen('.', "__", 1).to_ascii_uppercase()
        );
        problems.push(unknown_key(key, Some(var)));
    }
    match merged {
        Ok(raw) if problems.is_empty() => Ok(raw),
        Ok(_) => Err(problems),
        Err(e) => {
            problems.push(Problem {
                key: "(environment)".into(),
                message: format!("{e}; check the GATEWAY_SECTION__KEY variables"),
            });
            Err(problems)
        }
    }
}

fn unknown_key(key: String, var: Option<String>) -> Problem {
    let message = match &var {
        Some(var) => {
            format!("unknown key `{key}` (from environment {var}); remove it or fix its spelling")
        }
        None => format!(
            "unknown key `{key}`; remove it or fix its spelling (see config/gateway.example.toml)"
        ),
    };
    Problem {
        key: var.unwrap_or(key),
        message,
    }
}

/// A file problem located by its line: the key (`section.key`) when the span points at one.
fn file_problem(text: &str, e: &toml::de::Error) -> Problem {
    let message = e.message().trim().to_string();
    let Some(span) = e.span() else {
        return Problem {
            key: "(file)".into(),
            message,
        };
    };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or_default().trim();
    let section = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    let key = match (line.split_once('='), section) {
        (Some((k, _)), Some(section)) => format!("{section}.{}", k.trim()),
        (Some((k, _)), None) => k.trim().to_string(),
        (None, _) => format!("(file line {line_no})"),
    };
    Problem {
        key,
        message: format!("{message} (line {line_no}: `{line}`)"),
    }
}

/// Sets `section.key` from `GATEWAY_SECTION__KEY`, typed like the value it replaces.
fn apply_override(tree: &mut toml::Table, var: &str, value: &str) -> Result<(), String> {
    let path = var[ENV_PREFIX.len()..].to_ascii_lowercase();
    let Some((section, key)) = path.split_once("__") else {
        return Err("expected GATEWAY_SECTION__KEY".into());
    };
    let Some(toml::Value::Table(table)) = tree.get_mut(section) else {
        return Err(format!(
            "no config section `[{section}]` can be set from the environment"
        ));
    };
    let typed = match table.get(key) {
        Some(toml::Value::String(_)) => toml::Value::String(value.to_string()),
        Some(toml::Value::Integer(_)) => value
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("`{section}.{key}` takes an integer, got `{value}`"))?,
        Some(toml::Value::Boolean(_)) => match value.trim() {
            "true" | "1" => toml::Value::Boolean(true),
            "false" | "0" => toml::Value::Boolean(false),
            _ => {
                return Err(format!(
                    "`{section}.{key}` takes true or false, got `{value}`"
                ));
            }
        },
        Some(toml::Value::Array(_)) => parse_toml_literal(value).unwrap_or_else(|| {
            toml::Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_string()))
                    .collect(),
            )
        }),
        Some(_) => {
            return Err(format!(
                "`{section}.{key}` cannot be set from the environment"
            ));
        }
        // Optional keys are absent from the re-encoded tree; the struct decides their type.
        None => toml::Value::String(value.to_string()),
    };
    table.insert(key.to_string(), typed);
    Ok(())
}

fn parse_toml_literal(value: &str) -> Option<toml::Value> {
    let table: toml::Table = toml::from_str(&format!("v = {value}")).ok()?;
    table.get("v").cloned()
}

/// Parses a duration string such as `500ms`, `30s`, `15m`, `30d`.
///
/// # Errors
/// A message with the accepted forms.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|_| {
        format!("`{s}` is not a duration; write it like \"500ms\", \"30s\", \"15m\" or \"30d\"")
    })
}

#[derive(Default)]
struct Validator {
    problems: Vec<Problem>,
}

impl Validator {
    fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, key: &str, value: &str) -> Duration {
        match parse_duration(value) {
            Ok(d) => d,
            Err(m) => {
                self.problem(key, m);
                Duration::ZERO
            }
        }
    }

    fn positive_duration(&mut self, key: &str, value: &str) -> Duration {
        let d = self.duration(key, value);
        if d.is_zero() && parse_duration(value).is_ok() {
            self.problem(key, "must be greater than zero");
        }
        d
    }

    fn count(&mut self, key: &str, value: u64, min: u64, max: u64) -> usize {
        if value < min || value > max {
            self.problem(key, format!("must be between {min} and {max}, got {value}"));
        }
        usize::try_from(value.clamp(min, max)).unwrap_or(usize::MAX)
    }

    fn addr(&mut self, key: &str, value: &str) -> SocketAddr {
        value.parse().unwrap_or_else(|_| {
            self.problem(
                key,
                format!("`{value}` is not a socket address; write it like \"127.0.0.1:8443\" or \"[::1]:8443\""),
            );
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    }

    fn server(&mut self, raw: &RawServer) -> Server {
        let tls = match (&raw.tls_cert, &raw.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.into(),
                key: key.into(),
            }),
            (None, None) => None,
            (Some(_), None) => {
                self.problem("server.tls_key", "is required when server.tls_cert is set");
                None
            }
            (None, Some(_)) => {
                self.problem("server.tls_cert", "is required when server.tls_key is set");
                None
            }
        };
        let hsts_max_age = self.duration("server.hsts_max_age", &raw.hsts_max_age);
        let hsts = (tls.is_some() && raw.hsts).then_some(Hsts {
            max_age: hsts_max_age,
            include_subdomains: raw.hsts_include_subdomains,
        });
        let public_url = self.origin("server.public_url", &raw.public_url);
        let websocket_origins = raw
            .websocket_origins
            .iter()
            .map(|o| self.origin("server.websocket_origins", o).origin)
            .collect();
        let trusted_proxies = raw
            .trusted_proxies
            .iter()
            .filter_map(|p| match p.parse::<IpNet>() {
                Ok(net) => Some(net),
                Err(m) => {
                    self.problem("server.trusted_proxies", m);
                    None
                }
            })
            .collect();
        Server {
            listen: self.addr("server.listen", &raw.listen),
            tls,
            admin_listen: self.addr("server.admin_listen", &raw.admin_listen),
            public_url,
            trusted_proxies,
            max_connections: self.count(
                "server.max_connections",
                raw.max_connections,
                1,
                10_000_000,
            ),
            max_header_bytes: self.count(
                "server.max_header_bytes",
                raw.max_header_bytes,
                1024,
                1 << 20,
            ),
            max_headers: self.count("server.max_headers", raw.max_headers, 8, 1000),
            max_body_bytes: raw.max_body_bytes,
            header_read_timeout: self
                .positive_duration("server.header_read_timeout", &raw.header_read_timeout),
            tls_handshake_timeout: self
                .positive_duration("server.tls_handshake_timeout", &raw.tls_handshake_timeout),
            shutdown_grace: self.duration("server.shutdown_grace", &raw.shutdown_grace),
            accept_grace: self.duration("server.accept_grace", &raw.accept_grace),
            h2_max_concurrent_streams: u32::try_from(self.count(
                "server.h2_max_concurrent_streams",
                raw.h2_max_concurrent_streams,
                1,
                10_000,
            ))
            .unwrap_or(u32::MAX),
            workers: match raw.workers {
                0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
                n => self.count("server.workers", n, 1, 1024),
            },
            websocket_origins,
            hsts,
        }
    }

    /// An origin (`https://host[:port]`) such as `server.public_url`.
    fn origin(&mut self, key: &str, value: &str) -> PublicUrl {
        let fallback = PublicUrl {
            origin: DEFAULT_PUBLIC_URL.into(),
            https: true,
        };
        let uri: http::Uri = match value.parse() {
            Ok(u) => u,
            Err(_) => {
                self.problem(
                    key,
                    format!("`{value}` is not a URL; write it like \"https://auth.example.com\""),
                );
                return fallback;
            }
        };
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                self.problem(
                    key,
                    "must start with https:// (or http:// for local development)",
                );
                return fallback;
            }
        };
        let Some(authority) = uri.authority() else {
            self.problem(key, "must name a host, like \"https://auth.example.com\"");
            return fallback;
        };
        if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
            self.problem(
                key,
                "must be an origin only (scheme, host, port), without a path",
            );
        }
        let scheme = if https { "https" } else { "http" };
        PublicUrl {
            origin: format!("{scheme}://{}", authority.as_str().to_ascii_lowercase()),
            https,
        }
    }

    fn database(&mut self, raw: &RawDatabase) -> Database {
        if let Err(e) = raw.url.parse::<tokio_postgres::Config>() {
            self.problem(
                "database.url",
                format!("is not a PostgreSQL URL ({e}); write it like \"postgres://user@host:5432/gateway\""),
            );
        }
        Database {
            url: raw.url.clone(),
            max_connections: self.count("database.max_connections", raw.max_connections, 1, 10_000),
            pool_wait_timeout: self
                .positive_duration("database.pool_wait_timeout", &raw.pool_wait_timeout),
            connect_timeout: self
                .positive_duration("database.connect_timeout", &raw.connect_timeout),
            statement_timeout: self
                .positive_duration("database.statement_timeout", &raw.statement_timeout),
        }
    }

    fn sessions(&mut self, raw: &RawSessions) -> Sessions {
        let s = Sessions {
            cookie_name: raw.cookie_name.clone(),
            lifetime: self.positive_duration("sessions.lifetime", &raw.lifetime),
            idle_timeout: self.positive_duration("sessions.idle_timeout", &raw.idle_timeout),
            touch_interval: self.positive_duration("sessions.touch_interval", &raw.touch_interval),
            touch_queue: self.count("sessions.touch_queue", raw.touch_queue, 1, 10_000_000),
            cache_ttl: self.positive_duration("sessions.cache_ttl", &raw.cache_ttl),
            cache_capacity: self.count(
                "sessions.cache_capacity",
                raw.cache_capacity,
                1,
                100_000_000,
            ) as u64,
            negative_ttl: self.positive_duration("sessions.negative_ttl", &raw.negative_ttl),
            revocation_poll: self
                .positive_duration("sessions.revocation_poll", &raw.revocation_poll),
            revocation_overlap: self
                .duration("sessions.revocation_overlap", &raw.revocation_overlap),
            serve_cached_when_db_down: raw.serve_cached_when_db_down,
            tunnel_recheck: self.positive_duration("sessions.tunnel_recheck", &raw.tunnel_recheck),
            token_key: self.secret("sessions.token_key", &raw.token_key),
            previous_token_keys: raw
                .previous_token_keys
                .iter()
                .map(|k| self.secret("sessions.previous_token_keys", k))
                .collect(),
            accept_legacy_tokens: raw.accept_legacy_tokens,
        };
        let name_ok = !s.cookie_name.is_empty()
            && s.cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !name_ok {
            self.problem(
                "sessions.cookie_name",
                "must be a cookie token (letters, digits, - _ . and the like)",
            );
        }
        if s.touch_interval >= s.idle_timeout && !s.idle_timeout.is_zero() {
            self.problem(
                "sessions.touch_interval",
                "must be shorter than sessions.idle_timeout",
            );
        }
        if s.negative_ttl > s.cache_ttl {
            self.problem(
                "sessions.negative_ttl",
                "must not exceed sessions.cache_ttl",
            );
        }
        s
    }

    fn auth(&mut self, raw: &RawAuth) -> Auth {
        if !(4..=31).contains(&raw.bcrypt_cost) {
            self.problem(
                "auth.bcrypt_cost",
                format!(
                    "must be between 4 and 31 (10 to 14 in production), got {}",
                    raw.bcrypt_cost
                ),
            );
        }
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let concurrency = match raw.bcrypt_concurrency {
            0 => cores,
            n => self.count("auth.bcrypt_concurrency", n, 1, 1024),
        };
        let secret = self.secret("auth.secret", &raw.secret);
        let previous_secrets = raw
            .previous_secrets
            .iter()
            .map(|s| self.secret("auth.previous_secrets", s))
            .collect();
        Auth {
            bcrypt_cost: raw.bcrypt_cost.clamp(4, 31),
            bcrypt_concurrency: concurrency,
            bcrypt_queue: self.count("auth.bcrypt_queue", raw.bcrypt_queue, 1, 1_000_000),
            secret,
            previous_secrets,
        }
    }

    /// A secret's bytes; a problem when it is set but shorter than [`MIN_SECRET_BYTES`] (an
    /// empty one is for [`Config::serve_problems`] to refuse, as other commands need none).
    fn secret(&mut self, key: &str, s: &str) -> Vec<u8> {
        if !s.is_empty() && s.len() < MIN_SECRET_BYTES {
            self.problem(key, format!("must be at least {MIN_SECRET_BYTES} bytes"));
        }
        s.as_bytes().to_vec()
    }

    fn header_name(&mut self, key: &str, value: &str) -> http::HeaderName {
        match http::HeaderName::from_bytes(value.as_bytes()) {
            Ok(n) => n,
            Err(_) => {
                self.problem(key, format!("`{value}` is not a valid HTTP header name"));
                http::HeaderName::from_static("x-invalid")
            }
        }
    }

    fn headers(&mut self, raw: &RawHeaders) -> Headers {
        Headers {
            user_id: self.header_name("headers.user_id", &raw.user_id),
            user_email: self.header_name("headers.user_email", &raw.user_email),
            user_roles: self.header_name("headers.user_roles", &raw.user_roles),
            session_id: self.header_name("headers.session_id", &raw.session_id),
            signature: self.header_name("headers.signature", &raw.signature),
            user_email_verified: self
                .header_name("headers.user_email_verified", &raw.user_email_verified),
            signing_secret: match raw.sign {
                false => None,
                true if raw.signing_secret.len() < MIN_SECRET_BYTES => {
                    self.problem(
                        "headers.signing_secret",
                        format!("must be at least {MIN_SECRET_BYTES} bytes when headers.sign = true; set GATEWAY_HEADERS__SIGNING_SECRET"),
                    );
                    None
                }
                true => Some(raw.signing_secret.as_bytes().to_vec()),
            },
        }
    }

    fn mail(&mut self, raw: &RawMail) -> Mail {
        let transport = match raw.transport.as_str() {
            "smtp" => MailTransport::Smtp,
            "log" => MailTransport::Log,
            other => {
                self.problem(
                    "mail.transport",
                    format!("`{other}` is not a transport; use \"smtp\" or \"log\" (dev only)"),
                );
                MailTransport::Log
            }
        };
        if transport == MailTransport::Smtp {
            let scheme_ok = ["smtp://", "smtps://"]
                .iter()
                .any(|s| raw.smtp_url.starts_with(s));
            if !scheme_ok {
                self.problem(
                    "mail.smtp_url",
                    "must start with smtp:// (STARTTLS or plain) or smtps:// (TLS)",
                );
            }
        }
        if !raw.from.contains('@') {
            self.problem(
                "mail.from",
                "must be an address, like \"Gateway <no-reply@example.com>\"",
            );
        }
        Mail {
            transport,
            smtp_url: raw.smtp_url.clone(),
            from: raw.from.clone(),
            queue: self.count("mail.queue", raw.queue, 1, 1_000_000),
            retries: u32::try_from(self.count("mail.retries", raw.retries, 0, 100)).unwrap_or(100),
            send_timeout: self.positive_duration("mail.send_timeout", &raw.send_timeout),
        }
    }

    fn codes(&mut self, raw: &RawCodes) -> Codes {
        Codes {
            ttl: self.positive_duration("codes.ttl", &raw.ttl),
            max_attempts: u32::try_from(self.count("codes.max_attempts", raw.max_attempts, 1, 100))
                .unwrap_or(100),
            magic_link_ttl: self.positive_duration("codes.magic_link_ttl", &raw.magic_link_ttl),
            failure_budget: u32::try_from(self.count(
                "codes.failure_budget",
                raw.failure_budget,
                1,
                10_000,
            ))
            .unwrap_or(10_000),
            failure_window: self.positive_duration("codes.failure_window", &raw.failure_window),
        }
    }

    fn rate(&mut self, key: &str, value: &str) -> RateLimit {
        value.parse().unwrap_or_else(|m: String| {
            self.problem(key, m);
            RateLimit {
                count: 1,
                per: Duration::from_secs(1),
            }
        })
    }

    fn rate_limits(&mut self, raw: &RawRateLimits) -> RateLimits {
        RateLimits {
            login_per_ip: self.rate("rate_limits.login_per_ip", &raw.login_per_ip),
            login_per_email: self.rate("rate_limits.login_per_email", &raw.login_per_email),
            otp_request_per_ip: self
                .rate("rate_limits.otp_request_per_ip", &raw.otp_request_per_ip),
            otp_request_per_email: self.rate(
                "rate_limits.otp_request_per_email",
                &raw.otp_request_per_email,
            ),
            otp_verify_per_ip: self.rate("rate_limits.otp_verify_per_ip", &raw.otp_verify_per_ip),
            otp_verify_per_email: self.rate(
                "rate_limits.otp_verify_per_email",
                &raw.otp_verify_per_email,
            ),
            register_per_ip: self.rate("rate_limits.register_per_ip", &raw.register_per_ip),
            register_per_email: self
                .rate("rate_limits.register_per_email", &raw.register_per_email),
            magic_request_per_ip: self.rate(
                "rate_limits.magic_request_per_ip",
                &raw.magic_request_per_ip,
            ),
            magic_request_per_email: self.rate(
                "rate_limits.magic_request_per_email",
                &raw.magic_request_per_email,
            ),
            session_miss_per_ip: self
                .rate("rate_limits.session_miss_per_ip", &raw.session_miss_per_ip),
            fleet_wide: raw.fleet_wide,
        }
    }

    fn log(&mut self, raw: &RawLog) -> Log {
        let format = match raw.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                self.problem(
                    "log.format",
                    format!("`{other}` is not a format; use \"text\" or \"json\""),
                );
                LogFormat::Text
            }
        };
        if tracing_subscriber::EnvFilter::try_new(&raw.level).is_err() {
            self.problem(
                "log.level",
                format!(
                    "`{}` is not a level or filter; use e.g. \"info\" or \"gateway=debug\"",
                    raw.level
                ),
            );
        }
        Log {
            format,
            level: raw.level.clone(),
        }
    }

    fn route(&mut self, index: usize, raw: &RawRoute) -> Option<Route> {
        let key = |k: &str| format!("routes[{index}].{k}");
        let before = self.problems.len();
        if !raw.path_prefix.starts_with('/') {
            self.problem(
                key("path_prefix"),
                format!("`{}` must start with /", raw.path_prefix),
            );
        } else if crate::path::normalize(&raw.path_prefix).as_deref()
            != Ok(raw.path_prefix.as_str())
        {
            self.problem(
                key("path_prefix"),
                format!(
                    "`{}` is not in normalized form (percent-encodings, dot segments, `//`, `\\` or `;` are not allowed)",
                    raw.path_prefix
                ),
            );
        }
        let upstream = match raw.upstream.parse::<http::Uri>() {
            Ok(u)
                if u.scheme_str() == Some("http")
                    && u.authority().is_some()
                    && u.query().is_none() =>
            {
                Some(u)
            }
            Ok(u) if u.scheme_str() == Some("https") => {
                self.problem(
                    key("upstream"),
                    "https upstreams are not supported yet; use http:// on a private network",
                );
                None
            }
            _ => {
                self.problem(
                    key("upstream"),
                    format!(
                        "`{}` must be a URL like \"http://127.0.0.1:9000\"",
                        raw.upstream
                    ),
                );
                None
            }
        };
        let auth = match raw.auth.as_deref().unwrap_or("required") {
            "required" => AuthPolicy::Required,
            "optional" => AuthPolicy::Optional,
            "public" => AuthPolicy::Public,
            other => {
                self.problem(
                    key("auth"),
                    format!(
                        "`{other}` is not a policy; use \"required\", \"optional\" or \"public\""
                    ),
                );
                AuthPolicy::Required
            }
        };
        if crate::path::has_prefix(&raw.path_prefix, "/auth") && raw.path_prefix.len() > 1 {
            self.problem(
                key("path_prefix"),
                "/auth is served by the gateway itself; choose another prefix",
            );
        }
        if !raw.roles.is_empty() && auth != AuthPolicy::Required {
            self.problem(key("roles"), "roles need auth = \"required\"");
        }
        let methods = raw
            .methods
            .iter()
            .filter_map(
                |m| match http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                    Ok(m) => Some(m),
                    Err(_) => {
                        self.problem(key("methods"), format!("`{m}` is not an HTTP method"));
                        None
                    }
                },
            )
            .collect();
        if self.problems.len() > before {
            return None;
        }
        Some(Route {
            path_prefix: raw.path_prefix.trim_end_matches('/').to_string(),
            upstream: upstream?,
            auth,
            roles: raw.roles.clone(),
            methods,
            strip_prefix: raw.strip_prefix,
        })
    }

    /// Browsers drop a `__Host-` or `__Secure-` cookie that is not `Secure`, and the gateway
    /// marks it `Secure` only when `public_url` is https: such a pair would make every login
    /// end back on the login page (the redirect loop), so it is refused here.
    fn cookie_fits_the_scheme(&mut self, config: &Config) {
        let name = &config.sessions.cookie_name;
        let prefixed = name.starts_with("__Host-") || name.starts_with("__Secure-");
        if prefixed && !config.server.public_url.https {
            self.problem(
                "sessions.cookie_name",
                format!(
                    "`{name}` needs an https server.public_url (browsers drop it otherwise and every login \
                     loops back to the login page); use a name without the __Host-/__Secure- prefix for plain HTTP"
                ),
            );
        }
    }

    fn routes_unique(&mut self, routes: &[Route]) {
        let mut seen = std::collections::HashSet::new();
        for (i, r) in routes.iter().enumerate() {
            let p = if r.path_prefix.is_empty() {
                "/"
            } else {
                &r.path_prefix
            };
            if !seen.insert(p.to_string()) {
                self.problem(
                    format!("routes[{i}].path_prefix"),
                    format!("`{p}` is configured twice"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, Vec<Problem>> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        parse_with_overrides(text, env).and_then(|raw| Config::from_raw(&raw))
    }

    #[test]
    fn defaults_are_valid() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.sessions.revocation_poll, Duration::from_secs(1));
        assert_eq!(c.sessions.cookie_name, "__Host-gw_session");
        assert!(c.server.trusted_proxies.is_empty());
        assert_eq!(c.auth.bcrypt_cost, 12);
        assert!(!c.serve_problems().is_empty(), "serve needs a secret");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = load(
            "[server]\nlisten = \"127.0.0.1:1\"\nlisen = \"x\"\n[srever]\nx = 1\n[[routes]]\npath_prefix = \"/\"\nupstream = \"http://a:1\"\nauht = \"public\"\n",
            &[],
        )
        .unwrap_err();
        let mut keys: Vec<_> = e.iter().map(|p| p.key.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["routes.0.auht", "server.lisen", "srever"], "{e:?}");
        assert!(
            e.iter()
                .any(|p| p.message.contains("unknown key `server.lisen`")),
            "{e:?}"
        );
    }

    #[test]
    fn env_overrides_are_typed_by_the_key() {
        let c = load(
            "",
            &[
                ("GATEWAY_DATABASE__URL", "postgres://u@h:1/db"),
                ("GATEWAY_AUTH__BCRYPT_COST", "4"),
                ("GATEWAY_SESSIONS__CACHE_TTL", "5m"),
                ("GATEWAY_SERVER__TRUSTED_PROXIES", "10.0.0.0/8, ::1"),
                ("GATEWAY_SERVER__TLS_CERT", "c.pem"),
                ("GATEWAY_SERVER__TLS_KEY", "k.pem"),
                ("GATEWAY_HEADERS__SIGN", "true"),
                (
                    "GATEWAY_HEADERS__SIGNING_SECRET",
                    "0123456789abcdef0123456789abcdef",
                ),
                ("GATEWAY_CONFIG", "ignored.toml"),
            ],
        )
        .unwrap();
        assert_eq!(c.database.url, "postgres://u@h:1/db");
        assert_eq!(c.auth.bcrypt_cost, 4);
        assert_eq!(c.sessions.cache_ttl, Duration::from_secs(300));
        assert_eq!(c.server.trusted_proxies.len(), 2);
        assert!(c.server.tls.is_some());
        assert!(c.headers.signing_secret.is_some());
    }

    #[test]
    fn bad_env_overrides_name_the_variable() {
        let e = load(
            "",
            &[
                ("GATEWAY_AUTH__BCRYPT_COST", "twelve"),
                ("GATEWAY_NOPE__X", "1"),
            ],
        )
        .unwrap_err();
        let keys: Vec<_> = e.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["GATEWAY_AUTH__BCRYPT_COST", "GATEWAY_NOPE__X"]);
        let e = load("", &[("GATEWAY_AUTH__NO_SUCH_KEY", "1")]).unwrap_err();
        assert_eq!(e[0].key, "GATEWAY_AUTH__NO_SUCH_KEY", "{e:?}");
        assert!(e[0].message.contains("auth.no_such_key"), "{e:?}");
    }

    #[test]
    fn every_semantic_problem_is_reported_with_its_key() {
        let text = r#"
            [server]
            listen = "nowhere"
            tls_cert = "c.pem"
            trusted_proxies = ["10.0.0.0/99"]
            [sessions]
            cache_ttl = "soon"
            [auth]
            bcrypt_cost = 2
            secret = "short"
            [log]
            format = "xml"
            [[routes]]
            path_prefix = "admin"
            upstream = "ftp://x"
            auth = "maybe"
        "#;
        let e = load(text, &[]).unwrap_err();
        let keys: Vec<_> = e.iter().map(|p| p.key.as_str()).collect();
        for k in [
            "server.listen",
            "server.tls_key",
            "server.trusted_proxies",
            "sessions.cache_ttl",
            "auth.bcrypt_cost",
            "auth.secret",
            "log.format",
            "routes[0].path_prefix",
            "routes[0].upstream",
            "routes[0].auth",
        ] {
            assert!(keys.contains(&k), "missing {k} in {keys:?}");
        }
    }

    #[test]
    fn type_errors_name_the_key_and_line() {
        let e = load("[auth]\nbcrypt_cost = \"twelve\"\n", &[]).unwrap_err();
        assert_eq!(e[0].key, "auth.bcrypt_cost", "{e:?}");
        assert!(e[0].message.contains("line 2"), "{e:?}");
        let e = load("[auth\n", &[]).unwrap_err();
        assert!(e[0].message.contains("line 1"), "{e:?}");
    }

    #[test]
    fn rates_parse() {
        assert_eq!(
            "10/1m".parse::<RateLimit>(),
            Ok(RateLimit {
                count: 10,
                per: Duration::from_secs(60)
            })
        );
        for bad in ["10", "0/1m", "10/0s", "x/1m", "10/soon"] {
            assert!(bad.parse::<RateLimit>().is_err(), "{bad}");
        }
    }

    #[test]
    fn register_per_email_is_a_rate_limit_key() {
        let c = load("", &[]).unwrap();
        assert_eq!(
            c.rate_limits.register_per_email,
            DEFAULT_RATE_REGISTER_EMAIL.parse::<RateLimit>().unwrap()
        );
        let c = load("", &[("GATEWAY_RATE_LIMITS__REGISTER_PER_EMAIL", "2/1h")]).unwrap();
        assert_eq!(c.rate_limits.register_per_email.count, 2);
        let e = load("[rate_limits]\nregister_per_email = \"often\"\n", &[]).unwrap_err();
        assert_eq!(e[0].key, "rate_limits.register_per_email", "{e:?}");
    }

    #[test]
    fn the_log_mail_transport_is_for_local_urls_only() {
        let local = |url: &str| {
            let text =
                format!("[server]\npublic_url = \"{url}\"\n[sessions]\ncookie_name = \"gw\"\n");
            let c = load(&text, &[]).unwrap();
            c.server.public_url.is_local()
        };
        for url in [
            "https://localhost:8443",
            "http://127.0.0.1:1",
            "https://[::1]:8443",
            "https://gw.test",
            "https://a.localhost",
        ] {
            assert!(local(url), "{url}");
        }
        for url in [
            "https://auth.example.com",
            "https://localhost.example.com",
            "https://test.example",
        ] {
            assert!(!local(url), "{url}");
        }
        let c = load(
            "[server]\npublic_url = \"https://auth.example.com\"\n[auth]\nsecret = \"0123456789abcdef0123456789abcdef\"\n\
             [sessions]\ntoken_key = \"fedcba9876543210fedcba9876543210\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.serve_problems()[0].key, "mail.transport");
    }

    /// Every key of every section appears in config/gateway.example.toml, and the example is
    /// valid as it stands.
    #[test]
    fn the_example_file_documents_every_key() {
        let example = include_str!("../config/gateway.example.toml");
        let defaults = toml::Table::try_from(RawConfig::default()).unwrap();
        let mut missing = Vec::new();
        for (section, table) in &defaults {
            let Some(table) = table.as_table() else {
                continue;
            };
            assert!(
                example.contains(&format!("[{section}]")),
                "[{section}] missing"
            );
            let keys = table.keys().map(String::as_str).chain(
                match section.as_str() {
                    "server" => ["tls_cert", "tls_key"].as_slice(),
                    _ => [].as_slice(),
                }
                .iter()
                .copied(),
            );
            for key in keys {
                let documented = example
                    .lines()
                    .map(|l| l.trim_start_matches(['#', ' ']))
                    .any(|l| l.starts_with(&format!("{key} =")));
                if !documented {
                    missing.push(format!("{section}.{key}"));
                }
            }
        }
        for key in [
            "path_prefix",
            "upstream",
            "auth",
            "roles",
            "methods",
            "strip_prefix",
        ] {
            if !example.lines().any(|l| {
                l.trim_start_matches(['#', ' '])
                    .starts_with(&format!("{key} ="))
            }) {
                missing.push(format!("routes.{key}"));
            }
        }
        assert!(missing.is_empty(), "undocumented keys: {missing:?}");
        let env = [("GATEWAY_AUTH__SECRET".to_string(), "x".repeat(40))];
        let raw = parse_with_overrides(example, env).expect("the example parses");
        Config::from_raw(&raw).expect("the example is valid");
    }

    #[test]
    fn token_keys_are_checked_and_serve_needs_one() {
        let c = load("", &[("GATEWAY_AUTH__SECRET", &"s".repeat(32))]).unwrap();
        let problems = c.serve_problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "sessions.token_key");
        assert!(
            problems[0].message.contains("GATEWAY_SESSIONS__TOKEN_KEY"),
            "{problems:?}"
        );

        let e = load(
            "",
            &[
                ("GATEWAY_SESSIONS__TOKEN_KEY", "short"),
                ("GATEWAY_SESSIONS__PREVIOUS_TOKEN_KEYS", "also short"),
            ],
        )
        .unwrap_err();
        let keys: Vec<&str> = e.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"sessions.token_key"), "{e:?}");
        assert!(keys.contains(&"sessions.previous_token_keys"), "{e:?}");

        let (new, old1, old2) = ("n".repeat(32), "a".repeat(40), "b".repeat(33));
        let c = load(
            "",
            &[
                ("GATEWAY_SESSIONS__TOKEN_KEY", &new),
                (
                    "GATEWAY_SESSIONS__PREVIOUS_TOKEN_KEYS",
                    &format!("{old1},{old2}"),
                ),
                ("GATEWAY_SESSIONS__ACCEPT_LEGACY_TOKENS", "true"),
            ],
        )
        .unwrap();
        assert_eq!(c.sessions.token_key, new.as_bytes());
        assert_eq!(
            c.sessions.previous_token_keys,
            [old1.into_bytes(), old2.into_bytes()]
        );
        assert!(c.sessions.accept_legacy_tokens);
        assert!(!load("", &[]).unwrap().sessions.accept_legacy_tokens);
        assert_eq!(
            load("", &[]).unwrap().rate_limits.session_miss_per_ip,
            DEFAULT_RATE_SESSION_MISS_IP.parse().unwrap()
        );
    }

    #[test]
    fn a_prefixed_cookie_needs_https() {
        let e = load("[server]\npublic_url = \"http://127.0.0.1:8080\"\n", &[]).unwrap_err();
        assert_eq!(e[0].key, "sessions.cookie_name", "{e:?}");
        let c = load(
            "[server]\npublic_url = \"http://127.0.0.1:8080\"\n[sessions]\ncookie_name = \"gw_session\"\n",
            &[],
        );
        assert!(c.is_ok());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(30 * 86400)
        );
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn ip_networks() {
        let n: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        let one: IpNet = "::1".parse().unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!(!one.contains("::2".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
    }

    #[test]
    fn public_url_is_an_origin() {
        let c = load("[server]\npublic_url = \"https://Auth.Example.com\"\n", &[]).unwrap();
        assert_eq!(c.server.public_url.origin, "https://auth.example.com");
        assert!(load("[server]\npublic_url = \"https://a.example/x\"\n", &[]).is_err());
        assert!(load("[server]\npublic_url = \"ftp://a.example\"\n", &[]).is_err());
    }

    #[test]
    fn hsts_is_on_with_tls_and_configurable() {
        let tls = [
            ("GATEWAY_SERVER__TLS_CERT", "c.pem"),
            ("GATEWAY_SERVER__TLS_KEY", "k.pem"),
        ];
        let c = load("", &tls).unwrap();
        let hsts = c.server.hsts.expect("on by default with TLS");
        assert_eq!(hsts.header_value(), "max-age=31536000");
        assert!(
            load("", &[]).unwrap().server.hsts.is_none(),
            "no TLS, no HSTS"
        );

        let text = "[server]\nhsts_max_age = \"730d\"\nhsts_include_subdomains = true\n";
        let c = load(text, &tls).unwrap();
        assert_eq!(
            c.server.hsts.unwrap().header_value(),
            "max-age=63072000; includeSubDomains"
        );
        let c = load("[server]\nhsts = false\n", &tls).unwrap();
        assert!(c.server.hsts.is_none());
        let e = load("[server]\nhsts_max_age = \"a year\"\n", &tls).unwrap_err();
        assert_eq!(e[0].key, "server.hsts_max_age", "{e:?}");
    }

    #[test]
    fn websocket_origins_are_origins() {
        let c = load(
            "[server]\nwebsocket_origins = [\"https://App.Example.com\", \"http://localhost:3000\"]\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            c.server.websocket_origins,
            ["https://app.example.com", "http://localhost:3000"]
        );
        assert!(load("", &[]).unwrap().server.websocket_origins.is_empty());
        for bad in ["https://a.example/app", "a.example", "wss://a.example"] {
            let e = load(&format!("[server]\nwebsocket_origins = [\"{bad}\"]\n"), &[]).unwrap_err();
            assert_eq!(e[0].key, "server.websocket_origins", "{bad}: {e:?}");
        }
    }
}

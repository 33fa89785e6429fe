//! The configuration as the file spells it: one struct per `[section]` (and per `[[routes]]`
//! entry), every key with its default. Each key is named once, in a [`section!`] below: the
//! macro derives the struct, its `Default`, the key paths ([`Key`]: `server.listen`, the
//! environment variable `GATEWAY_SERVER__LISTEN`) and a view of the values with their keys
//! ([`Keyed`]) that validation reads, so a problem always names the key of the value it is
//! about and the compiler checks every name.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ENV_PREFIX;
pub(crate) use super::branding::RawBranding;

pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8443";
pub(crate) const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9091";
pub(crate) const DEFAULT_PUBLIC_URL: &str = "https://localhost:8443";
pub(crate) const DEFAULT_MAX_CONNECTIONS: u64 = 20_000;
pub(crate) const DEFAULT_MAX_HEADER_BYTES: u64 = 64 * 1024;
pub(crate) const DEFAULT_MAX_HEADERS: u64 = 100;
pub(crate) const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
pub(crate) const DEFAULT_HEADER_READ_TIMEOUT: &str = "10s";
pub(crate) const DEFAULT_TLS_HANDSHAKE_TIMEOUT: &str = "10s";
pub(crate) const DEFAULT_SHUTDOWN_GRACE: &str = "30s";
/// Long enough for a balancer checking `/readyz` every second and taking an instance out after
/// two failures (HAProxy `inter 1s fall 2`, a Kubernetes readiness probe with `periodSeconds: 1`
/// and `failureThreshold: 2`) to stop sending before the listener closes.
pub(crate) const DEFAULT_ACCEPT_GRACE: &str = "5s";
pub(crate) const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u64 = 256;
/// `0`: one worker thread per available core.
pub(crate) const DEFAULT_WORKERS: u64 = 0;
pub(crate) const DEFAULT_HSTS: bool = true;
pub(crate) const DEFAULT_HSTS_MAX_AGE: &str = "365d";
pub(crate) const DEFAULT_HSTS_INCLUDE_SUBDOMAINS: bool = false;

pub(crate) const DEFAULT_UPSTREAM_CONNECT_TIMEOUT: &str = "5s";
pub(crate) const DEFAULT_UPSTREAM_RESPONSE_TIMEOUT: &str = "60s";
pub(crate) const DEFAULT_UPSTREAM_POOL_IDLE_TIMEOUT: &str = "90s";
pub(crate) const DEFAULT_UPSTREAM_POOL_MAX_IDLE: u64 = 256;

pub(crate) const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/gateway";
pub(crate) const DEFAULT_DB_MAX_CONNECTIONS: u64 = 16;
pub(crate) const DEFAULT_DB_POOL_WAIT: &str = "2s";
pub(crate) const DEFAULT_DB_CONNECT_TIMEOUT: &str = "5s";
pub(crate) const DEFAULT_DB_STATEMENT_TIMEOUT: &str = "5s";

pub(crate) const DEFAULT_COOKIE_NAME: &str = "__Host-gw_session";
pub(crate) const DEFAULT_SESSION_LIFETIME: &str = "30d";
pub(crate) const DEFAULT_SESSION_IDLE_TIMEOUT: &str = "7d";
pub(crate) const DEFAULT_TOUCH_INTERVAL: &str = "5m";
pub(crate) const DEFAULT_TOUCH_QUEUE: u64 = 65_536;
pub(crate) const DEFAULT_CACHE_TTL: &str = "60s";
pub(crate) const DEFAULT_CACHE_CAPACITY: u64 = 2_000_000;
pub(crate) const DEFAULT_NEGATIVE_TTL: &str = "5s";
pub(crate) const DEFAULT_REVOCATION_POLL: &str = "1s";
pub(crate) const DEFAULT_REVOCATION_OVERLAP: &str = "5s";
pub(crate) const DEFAULT_SERVE_CACHED_WHEN_DB_DOWN: bool = true;
pub(crate) const DEFAULT_TUNNEL_RECHECK: &str = "1s";
/// Tokens from before token tags end at the upgrade unless the operator keeps them.
pub(crate) const DEFAULT_ACCEPT_LEGACY_TOKENS: bool = false;

pub(crate) const DEFAULT_BCRYPT_COST: u32 = 12;
/// `0`: as many hashes at once as there are cores.
pub(crate) const DEFAULT_BCRYPT_CONCURRENCY: u64 = 0;
pub(crate) const DEFAULT_BCRYPT_QUEUE: u64 = 256;

pub(crate) const DEFAULT_MAIL_TRANSPORT: &str = "log";
pub(crate) const DEFAULT_SMTP_URL: &str = "smtp://127.0.0.1:2525";
pub(crate) const DEFAULT_MAIL_FROM: &str = "Gateway <no-reply@example.com>";

pub(crate) const DEFAULT_MAIL_QUEUE: u64 = 1000;
pub(crate) const DEFAULT_MAIL_RETRIES: u64 = 5;
pub(crate) const DEFAULT_MAIL_SEND_TIMEOUT: &str = "10s";

pub(crate) const DEFAULT_CODE_TTL: &str = "10m";
pub(crate) const DEFAULT_CODE_MAX_ATTEMPTS: u64 = 5;
pub(crate) const DEFAULT_MAGIC_LINK_TTL: &str = "15m";
pub(crate) const DEFAULT_FAILURE_BUDGET: u64 = 10;
pub(crate) const DEFAULT_FAILURE_WINDOW: &str = "1h";

pub(crate) const DEFAULT_RATE_LOGIN_IP: &str = "30/1m";
pub(crate) const DEFAULT_RATE_LOGIN_EMAIL: &str = "10/1m";
pub(crate) const DEFAULT_RATE_OTP_REQUEST_IP: &str = "20/1m";
pub(crate) const DEFAULT_RATE_OTP_REQUEST_EMAIL: &str = "5/15m";
pub(crate) const DEFAULT_RATE_OTP_VERIFY_IP: &str = "30/1m";
pub(crate) const DEFAULT_RATE_OTP_VERIFY_EMAIL: &str = "10/15m";
pub(crate) const DEFAULT_RATE_REGISTER_IP: &str = "10/1m";
/// Each registration mails the address (a code, or an "account exists" notice): this bounds
/// how often anyone can make the gateway mail one address.
pub(crate) const DEFAULT_RATE_REGISTER_EMAIL: &str = "5/15m";
pub(crate) const DEFAULT_RATE_MAGIC_REQUEST_IP: &str = "20/1m";
pub(crate) const DEFAULT_RATE_MAGIC_REQUEST_EMAIL: &str = "5/15m";
/// Session queries (cache misses of well-formed, correctly tagged tokens) per client address:
/// a burst of 600, then 10 a second, enough for hundreds of users behind one NAT whose
/// sessions each miss once per `cache_ttl`.
pub(crate) const DEFAULT_RATE_SESSION_MISS_IP: &str = "600/1m";
/// The limits hold for the whole fleet (counted in the database), not per instance.
pub(crate) const DEFAULT_RATE_FLEET_WIDE: bool = true;

pub(crate) const DEFAULT_LOG_FORMAT: &str = "text";
pub(crate) const DEFAULT_LOG_LEVEL: &str = "info";

pub(crate) const DEFAULT_HEADER_USER_ID: &str = "x-user-id";
pub(crate) const DEFAULT_HEADER_USER_EMAIL: &str = "x-user-email";
pub(crate) const DEFAULT_HEADER_USER_ROLES: &str = "x-user-roles";
pub(crate) const DEFAULT_HEADER_SESSION_ID: &str = "x-session-id";
pub(crate) const DEFAULT_HEADER_SIGNATURE: &str = "x-identity-signature";
pub(crate) const DEFAULT_HEADER_USER_EMAIL_VERIFIED: &str = "x-user-email-verified";
/// Identity headers are not signed unless `headers.sign` says so.
pub(crate) const DEFAULT_HEADERS_SIGN: bool = false;

/// Where a value comes from: `section.key`, or `routes[index].key` for a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// `section.key`.
    Section(&'static str),
    /// `routes[index].key`: the route's index and its key.
    Route(usize, &'static str),
}

impl Key {
    /// The environment variable that sets this key: `GATEWAY_SECTION__KEY` (routes have
    /// none: they are set in the file).
    pub fn env_var(self) -> Option<String> {
        match self {
            Key::Section(path) => Some(env_var(path)),
            Key::Route(..) => None,
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Section(path) => f.write_str(path),
            Key::Route(index, key) => write!(f, "routes[{index}].{key}"),
        }
    }
}

/// The environment variable of `section.key`: `GATEWAY_SECTION__KEY`.
pub(crate) fn env_var(path: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        path.replacen('.', "__", 1).to_ascii_uppercase()
    )
}

/// A raw value and the key it was read from.
#[derive(Debug)]
pub struct Keyed<'a, T> {
    pub key: Key,
    pub value: &'a T,
}

impl<T> Clone for Keyed<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Keyed<'_, T> {}

/// Defines the raw struct of one `[section]` (`$raw`, with `#[serde(default)]` and a
/// `Default` from each key's default), the names of its keys (`$keys`, as the constant
/// `$raw::KEYS`: `RawServer::KEYS.listen == Key::Section("server.listen")`) and the view of
/// its values with their keys (`$view`, from `$raw::keyed`).
macro_rules! section {
    (
        $(#[$meta:meta])*
        $raw:ident, $keys:ident, $view:ident = $section:literal {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty = $default:expr ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Serialize, Deserialize)]
        #[serde(default)]
        pub struct $raw {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl Default for $raw {
            fn default() -> Self {
                Self { $( $field: <$ty>::from($default), )* }
            }
        }

        #[doc = concat!("The keys of `[", $section, "]`.")]
        #[derive(Debug, Clone, Copy)]
        pub struct $keys {
            $( pub $field: $crate::config::raw::Key, )*
        }

        #[doc = concat!("The values of `[", $section, "]`, each with its key.")]
        #[derive(Debug, Clone, Copy)]
        pub struct $view<'a> {
            $( pub $field: $crate::config::raw::Keyed<'a, $ty>, )*
        }

        impl $raw {
            #[doc = concat!("The keys of `[", $section, "]`.")]
            pub const KEYS: $keys = $keys {
                $( $field: $crate::config::raw::Key::Section(
                    concat!($section, ".", stringify!($field))
                ), )*
            };

            /// The section's name in the file.
            pub const SECTION: &'static str = $section;

            /// Every key of the section, in order.
            pub const ALL_KEYS: &'static [&'static str] =
                &[ $( concat!($section, ".", stringify!($field)) ),* ];

            /// The values with their keys, for validation.
            pub fn keyed(&self) -> $view<'_> {
                $view {
                    $( $field: $crate::config::raw::Keyed {
                        key: Self::KEYS.$field,
                        value: &self.$field,
                    }, )*
                }
            }
        }
    };
}
pub(crate) use section;

/// Defines the raw struct of one entry of a list of tables (`[[routes]]`, `$raw`), the keys of
/// entry `index` (`$keys`, from `$raw::keys(index)`: `routes[index].key`) and the view of its
/// values with their keys (`$view`, from `$raw::keyed(index)`).
/// Fields without `#[serde(default)]` are required.
macro_rules! entry {
    (
        $(#[$meta:meta])*
        $raw:ident, $keys:ident, $view:ident = $list:literal {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, Serialize, Deserialize)]
        pub struct $raw {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        #[doc = concat!("The keys of a `[[", $list, "]]` entry.")]
        #[derive(Debug, Clone, Copy)]
        pub struct $keys {
            $( pub $field: Key, )*
        }

        #[doc = concat!("The values of a `[[", $list, "]]` entry, each with its key.")]
        #[derive(Debug, Clone, Copy)]
        pub struct $view<'a> {
            $( pub $field: Keyed<'a, $ty>, )*
        }

        impl $raw {
            /// The list's name in the file.
            pub const LIST: &'static str = $list;

            /// Every key of an entry, in order.
            pub const ALL_KEYS: &'static [&'static str] = &[ $( stringify!($field) ),* ];

            /// The keys of entry `index`.
            pub const fn keys(index: usize) -> $keys {
                $keys { $( $field: Key::Route(index, stringify!($field)), )* }
            }

            /// The values of entry `index`, with their keys.
            pub fn keyed(&self, index: usize) -> $view<'_> {
                let keys = Self::keys(index);
                $view {
                    $( $field: Keyed {
                        key: keys.$field,
                        value: &self.$field,
                    }, )*
                }
            }
        }
    };
}

/// The whole file.
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

impl RawConfig {
    /// Every key of every section, `section.key`, in the order of the file's sections (routes'
    /// keys are [`RawRoute::ALL_KEYS`]).
    pub fn all_keys() -> impl Iterator<Item = &'static str> {
        [
            RawServer::ALL_KEYS,
            RawUpstream::ALL_KEYS,
            RawDatabase::ALL_KEYS,
            RawSessions::ALL_KEYS,
            RawAuth::ALL_KEYS,
            RawHeaders::ALL_KEYS,
            RawMail::ALL_KEYS,
            RawCodes::ALL_KEYS,
            RawRateLimits::ALL_KEYS,
            RawLog::ALL_KEYS,
            RawBranding::ALL_KEYS,
        ]
        .into_iter()
        .flatten()
        .copied()
    }
}

section! {
    /// `[server]`: listeners, limits, timeouts, the public URL, HSTS.
    RawServer, ServerKeys, ServerView = "server" {
        listen: String = DEFAULT_LISTEN,
        tls_cert: Option<String> = None,
        tls_key: Option<String> = None,
        admin_listen: String = DEFAULT_ADMIN_LISTEN,
        public_url: String = DEFAULT_PUBLIC_URL,
        trusted_proxies: Vec<String> = Vec::new(),
        max_connections: u64 = DEFAULT_MAX_CONNECTIONS,
        max_header_bytes: u64 = DEFAULT_MAX_HEADER_BYTES,
        max_headers: u64 = DEFAULT_MAX_HEADERS,
        max_body_bytes: u64 = DEFAULT_MAX_BODY_BYTES,
        header_read_timeout: String = DEFAULT_HEADER_READ_TIMEOUT,
        tls_handshake_timeout: String = DEFAULT_TLS_HANDSHAKE_TIMEOUT,
        shutdown_grace: String = DEFAULT_SHUTDOWN_GRACE,
        accept_grace: String = DEFAULT_ACCEPT_GRACE,
        h2_max_concurrent_streams: u64 = DEFAULT_H2_MAX_CONCURRENT_STREAMS,
        workers: u64 = DEFAULT_WORKERS,
        websocket_origins: Vec<String> = Vec::new(),
        hsts: bool = DEFAULT_HSTS,
        hsts_max_age: String = DEFAULT_HSTS_MAX_AGE,
        hsts_include_subdomains: bool = DEFAULT_HSTS_INCLUDE_SUBDOMAINS,
    }
}

section! {
    /// `[upstream]`: the pooled client to the backends.
    RawUpstream, UpstreamKeys, UpstreamView = "upstream" {
        connect_timeout: String = DEFAULT_UPSTREAM_CONNECT_TIMEOUT,
        response_timeout: String = DEFAULT_UPSTREAM_RESPONSE_TIMEOUT,
        pool_idle_timeout: String = DEFAULT_UPSTREAM_POOL_IDLE_TIMEOUT,
        pool_max_idle_per_host: u64 = DEFAULT_UPSTREAM_POOL_MAX_IDLE,
    }
}

section! {
    /// `[database]`: the pool.
    RawDatabase, DatabaseKeys, DatabaseView = "database" {
        url: String = DEFAULT_DATABASE_URL,
        max_connections: u64 = DEFAULT_DB_MAX_CONNECTIONS,
        pool_wait_timeout: String = DEFAULT_DB_POOL_WAIT,
        connect_timeout: String = DEFAULT_DB_CONNECT_TIMEOUT,
        statement_timeout: String = DEFAULT_DB_STATEMENT_TIMEOUT,
    }
}

section! {
    /// `[sessions]`: the cookie, lifetimes, the cache, revocation, token keys.
    RawSessions, SessionsKeys, SessionsView = "sessions" {
        cookie_name: String = DEFAULT_COOKIE_NAME,
        lifetime: String = DEFAULT_SESSION_LIFETIME,
        idle_timeout: String = DEFAULT_SESSION_IDLE_TIMEOUT,
        touch_interval: String = DEFAULT_TOUCH_INTERVAL,
        touch_queue: u64 = DEFAULT_TOUCH_QUEUE,
        cache_ttl: String = DEFAULT_CACHE_TTL,
        cache_capacity: u64 = DEFAULT_CACHE_CAPACITY,
        negative_ttl: String = DEFAULT_NEGATIVE_TTL,
        revocation_poll: String = DEFAULT_REVOCATION_POLL,
        revocation_overlap: String = DEFAULT_REVOCATION_OVERLAP,
        serve_cached_when_db_down: bool = DEFAULT_SERVE_CACHED_WHEN_DB_DOWN,
        tunnel_recheck: String = DEFAULT_TUNNEL_RECHECK,
        token_key: String = String::new(),
        previous_token_keys: Vec<String> = Vec::new(),
        accept_legacy_tokens: bool = DEFAULT_ACCEPT_LEGACY_TOKENS,
    }
}

section! {
    /// `[auth]`: bcrypt and the flows' secret.
    RawAuth, AuthKeys, AuthView = "auth" {
        bcrypt_cost: u32 = DEFAULT_BCRYPT_COST,
        bcrypt_concurrency: u64 = DEFAULT_BCRYPT_CONCURRENCY,
        bcrypt_queue: u64 = DEFAULT_BCRYPT_QUEUE,
        secret: String = String::new(),
        previous_secrets: Vec<String> = Vec::new(),
    }
}

section! {
    /// `[headers]`: the identity headers and their signature.
    RawHeaders, HeadersKeys, HeadersView = "headers" {
        user_id: String = DEFAULT_HEADER_USER_ID,
        user_email: String = DEFAULT_HEADER_USER_EMAIL,
        user_roles: String = DEFAULT_HEADER_USER_ROLES,
        session_id: String = DEFAULT_HEADER_SESSION_ID,
        signature: String = DEFAULT_HEADER_SIGNATURE,
        sign: bool = DEFAULT_HEADERS_SIGN,
        signing_secret: String = String::new(),
        user_email_verified: String = DEFAULT_HEADER_USER_EMAIL_VERIFIED,
    }
}

section! {
    /// `[mail]`: the transport and the outbound queue.
    RawMail, MailKeys, MailView = "mail" {
        transport: String = DEFAULT_MAIL_TRANSPORT,
        smtp_url: String = DEFAULT_SMTP_URL,
        from: String = DEFAULT_MAIL_FROM,
        queue: u64 = DEFAULT_MAIL_QUEUE,
        retries: u64 = DEFAULT_MAIL_RETRIES,
        send_timeout: String = DEFAULT_MAIL_SEND_TIMEOUT,
    }
}

section! {
    /// `[codes]`: one-time codes, magic links and their failure budget.
    RawCodes, CodesKeys, CodesView = "codes" {
        ttl: String = DEFAULT_CODE_TTL,
        max_attempts: u64 = DEFAULT_CODE_MAX_ATTEMPTS,
        magic_link_ttl: String = DEFAULT_MAGIC_LINK_TTL,
        failure_budget: u64 = DEFAULT_FAILURE_BUDGET,
        failure_window: String = DEFAULT_FAILURE_WINDOW,
    }
}

section! {
    /// `[rate_limits]`: per client address and per email, for each flow.
    RawRateLimits, RateLimitsKeys, RateLimitsView = "rate_limits" {
        login_per_ip: String = DEFAULT_RATE_LOGIN_IP,
        login_per_email: String = DEFAULT_RATE_LOGIN_EMAIL,
        otp_request_per_ip: String = DEFAULT_RATE_OTP_REQUEST_IP,
        otp_request_per_email: String = DEFAULT_RATE_OTP_REQUEST_EMAIL,
        otp_verify_per_ip: String = DEFAULT_RATE_OTP_VERIFY_IP,
        otp_verify_per_email: String = DEFAULT_RATE_OTP_VERIFY_EMAIL,
        register_per_ip: String = DEFAULT_RATE_REGISTER_IP,
        register_per_email: String = DEFAULT_RATE_REGISTER_EMAIL,
        magic_request_per_ip: String = DEFAULT_RATE_MAGIC_REQUEST_IP,
        magic_request_per_email: String = DEFAULT_RATE_MAGIC_REQUEST_EMAIL,
        session_miss_per_ip: String = DEFAULT_RATE_SESSION_MISS_IP,
        fleet_wide: bool = DEFAULT_RATE_FLEET_WIDE,
    }
}

section! {
    /// `[log]`.
    RawLog, LogKeys, LogView = "log" {
        format: String = DEFAULT_LOG_FORMAT,
        level: String = DEFAULT_LOG_LEVEL,
    }
}

entry! {
    /// One `[[routes]]` entry. `path_prefix` and `upstream` have no default: a route without
    /// them is an error of the file.
    RawRoute, RouteKeys, RouteView = "routes" {
        path_prefix: String,
        upstream: String,
        #[serde(default)]
        auth: Option<String>,
        #[serde(default)]
        roles: Vec<String>,
        #[serde(default)]
        methods: Vec<String>,
        #[serde(default)]
        strip_prefix: bool,
    }
}

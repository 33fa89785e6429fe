//! Validation: every raw value checked and typed, every problem collected with the key it is
//! about (none stops the others from being found). The helpers take a [`Keyed`] value, so the
//! key of a problem is always the key of the value checked.

use std::net::SocketAddr;
use std::time::Duration;

use super::raw::{
    Key, Keyed, RawAuth, RawCodes, RawDatabase, RawHeaders, RawLog, RawMail, RawRateLimits,
    RawRoute, RawServer, RawSessions, RawUpstream,
};
use super::typed::{
    Auth, AuthPolicy, Codes, Config, Database, Headers, Hsts, IpNet, Log, LogFormat, Mail,
    MailTransport, PublicUrl, RateLimit, RateLimits, Route, Server, Sessions, TlsFiles, Upstream,
    parse_duration,
};
use super::{DEFAULT_PUBLIC_URL, MIN_SECRET_BYTES, Problem};

/// Largest `server.max_body_bytes`: 1 TiB.
pub(crate) const MAX_BODY_BYTES_LIMIT: u64 = 1 << 40;

/// Collects the problems of one validation.
#[derive(Default)]
pub(super) struct Validator {
    pub(super) problems: Vec<Problem>,
}

impl Validator {
    pub(super) fn problem(&mut self, key: Key, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.to_string(),
            message: message.into(),
        });
    }

    fn duration(&mut self, raw: Keyed<'_, String>) -> Duration {
        match parse_duration(raw.value) {
            Ok(d) => d,
            Err(m) => {
                self.problem(raw.key, m);
                Duration::ZERO
            }
        }
    }

    fn positive_duration(&mut self, raw: Keyed<'_, String>) -> Duration {
        let d = self.duration(raw);
        if d.is_zero() && parse_duration(raw.value).is_ok() {
            self.problem(raw.key, "must be greater than zero");
        }
        d
    }

    fn count(&mut self, raw: Keyed<'_, u64>, min: u64, max: u64) -> usize {
        let value = *raw.value;
        if value < min || value > max {
            self.problem(
                raw.key,
                format!("must be between {min} and {max}, got {value}"),
            );
        }
        usize::try_from(value.clamp(min, max)).unwrap_or(usize::MAX)
    }

    /// A count that `0` in the file turns into `zero` (one per core, say).
    fn count_or(&mut self, raw: Keyed<'_, u64>, zero: usize, min: u64, max: u64) -> usize {
        match raw.value {
            0 => zero,
            _ => self.count(raw, min, max),
        }
    }

    fn addr(&mut self, raw: Keyed<'_, String>) -> SocketAddr {
        raw.value.parse().unwrap_or_else(|_| {
            self.problem(
                raw.key,
                format!(
                    "`{}` is not a socket address; write it like \"127.0.0.1:8443\" or \"[::1]:8443\"",
                    raw.value
                ),
            );
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    }

    pub(super) fn server(&mut self, raw: &RawServer) -> Server {
        let r = raw.keyed();
        let tls = match (r.tls_cert.value, r.tls_key.value) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.into(),
                key: key.into(),
            }),
            (None, None) => None,
            (Some(_), None) => {
                let other = r.tls_cert.key;
                self.problem(r.tls_key.key, format!("is required when {other} is set"));
                None
            }
            (None, Some(_)) => {
                let other = r.tls_key.key;
                self.problem(r.tls_cert.key, format!("is required when {other} is set"));
                None
            }
        };
        let hsts_max_age = self.duration(r.hsts_max_age);
        let hsts = (tls.is_some() && *r.hsts.value).then_some(Hsts {
            max_age: hsts_max_age,
            include_subdomains: *r.hsts_include_subdomains.value,
        });
        let public_url = self.origin(r.public_url.key, r.public_url.value);
        let websocket_origins = r
            .websocket_origins
            .value
            .iter()
            .map(|o| self.origin(r.websocket_origins.key, o).origin)
            .collect();
        let trusted_proxies = r
            .trusted_proxies
            .value
            .iter()
            .filter_map(|p| match p.parse::<IpNet>() {
                Ok(net) => Some(net),
                Err(m) => {
                    self.problem(r.trusted_proxies.key, m);
                    None
                }
            })
            .collect();
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Server {
            listen: self.addr(r.listen),
            tls,
            admin_listen: self.addr(r.admin_listen),
            public_url,
            trusted_proxies,
            max_connections: self.count(r.max_connections, 1, 10_000_000),
            max_header_bytes: self.count(r.max_header_bytes, 1024, 1 << 20),
            max_headers: self.count(r.max_headers, 8, 1000),
            max_body_bytes: self.count(r.max_body_bytes, 1, MAX_BODY_BYTES_LIMIT) as u64,
            header_read_timeout: self.positive_duration(r.header_read_timeout),
            tls_handshake_timeout: self.positive_duration(r.tls_handshake_timeout),
            shutdown_grace: self.duration(r.shutdown_grace),
            accept_grace: self.duration(r.accept_grace),
            h2_max_concurrent_streams: u32::try_from(self.count(
                r.h2_max_concurrent_streams,
                1,
                10_000,
            ))
            .unwrap_or(u32::MAX),
            workers: self.count_or(r.workers, cores, 1, 1024),
            websocket_origins,
            hsts,
        }
    }

    /// An origin (`https://host[:port]`) such as `server.public_url`.
    fn origin(&mut self, key: Key, value: &str) -> PublicUrl {
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

    pub(super) fn upstream(&mut self, raw: &RawUpstream) -> Upstream {
        let r = raw.keyed();
        Upstream {
            connect_timeout: self.duration(r.connect_timeout),
            response_timeout: self.duration(r.response_timeout),
            pool_idle_timeout: self.duration(r.pool_idle_timeout),
            pool_max_idle_per_host: self.count(r.pool_max_idle_per_host, 0, 1_000_000),
        }
    }

    pub(super) fn database(&mut self, raw: &RawDatabase) -> Database {
        let r = raw.keyed();
        if let Err(e) = r.url.value.parse::<tokio_postgres::Config>() {
            self.problem(
                r.url.key,
                format!("is not a PostgreSQL URL ({e}); write it like \"postgres://user@host:5432/gateway\""),
            );
        }
        Database {
            url: r.url.value.clone(),
            max_connections: self.count(r.max_connections, 1, 10_000),
            pool_wait_timeout: self.positive_duration(r.pool_wait_timeout),
            connect_timeout: self.positive_duration(r.connect_timeout),
            statement_timeout: self.positive_duration(r.statement_timeout),
        }
    }

    pub(super) fn sessions(&mut self, raw: &RawSessions) -> Sessions {
        let r = raw.keyed();
        let s = Sessions {
            cookie_name: r.cookie_name.value.clone(),
            lifetime: self.positive_duration(r.lifetime),
            idle_timeout: self.positive_duration(r.idle_timeout),
            touch_interval: self.positive_duration(r.touch_interval),
            touch_queue: self.count(r.touch_queue, 1, 10_000_000),
            cache_ttl: self.positive_duration(r.cache_ttl),
            cache_capacity: self.count(r.cache_capacity, 1, 100_000_000) as u64,
            negative_ttl: self.positive_duration(r.negative_ttl),
            revocation_poll: self.positive_duration(r.revocation_poll),
            revocation_overlap: self.duration(r.revocation_overlap),
            serve_cached_when_db_down: *r.serve_cached_when_db_down.value,
            tunnel_recheck: self.positive_duration(r.tunnel_recheck),
            token_key: self.secret(r.token_key.key, r.token_key.value),
            previous_token_keys: r
                .previous_token_keys
                .value
                .iter()
                .map(|k| self.secret(r.previous_token_keys.key, k))
                .collect(),
            accept_legacy_tokens: *r.accept_legacy_tokens.value,
        };
        let name_ok = !s.cookie_name.is_empty()
            && s.cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !name_ok {
            self.problem(
                r.cookie_name.key,
                "must be a cookie token (letters, digits, - _ . and the like)",
            );
        }
        if s.touch_interval >= s.idle_timeout && !s.idle_timeout.is_zero() {
            let other = r.idle_timeout.key;
            self.problem(
                r.touch_interval.key,
                format!("must be shorter than {other}"),
            );
        }
        if s.negative_ttl > s.cache_ttl {
            let other = r.cache_ttl.key;
            self.problem(r.negative_ttl.key, format!("must not exceed {other}"));
        }
        s
    }

    pub(super) fn auth(&mut self, raw: &RawAuth) -> Auth {
        let r = raw.keyed();
        let cost = *r.bcrypt_cost.value;
        if !(4..=31).contains(&cost) {
            self.problem(
                r.bcrypt_cost.key,
                format!("must be between 4 and 31 (10 to 14 in production), got {cost}"),
            );
        }
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Auth {
            bcrypt_cost: cost.clamp(4, 31),
            bcrypt_concurrency: self.count_or(r.bcrypt_concurrency, cores, 1, 1024),
            bcrypt_queue: self.count(r.bcrypt_queue, 1, 1_000_000),
            secret: self.secret(r.secret.key, r.secret.value),
            previous_secrets: r
                .previous_secrets
                .value
                .iter()
                .map(|s| self.secret(r.previous_secrets.key, s))
                .collect(),
        }
    }

    /// A secret's bytes; a problem when it is set but shorter than [`MIN_SECRET_BYTES`] (an
    /// empty one is for [`Config::serve_problems`] to refuse, as other commands need none).
    fn secret(&mut self, key: Key, s: &str) -> Vec<u8> {
        if !s.is_empty() && s.len() < MIN_SECRET_BYTES {
            self.problem(key, format!("must be at least {MIN_SECRET_BYTES} bytes"));
        }
        s.as_bytes().to_vec()
    }

    fn header_name(&mut self, raw: Keyed<'_, String>) -> http::HeaderName {
        match http::HeaderName::from_bytes(raw.value.as_bytes()) {
            Ok(n) => n,
            Err(_) => {
                self.problem(
                    raw.key,
                    format!("`{}` is not a valid HTTP header name", raw.value),
                );
                http::HeaderName::from_static("x-invalid")
            }
        }
    }

    pub(super) fn headers(&mut self, raw: &RawHeaders) -> Headers {
        let r = raw.keyed();
        Headers {
            user_id: self.header_name(r.user_id),
            user_email: self.header_name(r.user_email),
            user_roles: self.header_name(r.user_roles),
            session_id: self.header_name(r.session_id),
            signature: self.header_name(r.signature),
            user_email_verified: self.header_name(r.user_email_verified),
            signing_secret: match r.sign.value {
                false => None,
                true if r.signing_secret.value.len() < MIN_SECRET_BYTES => {
                    let (sign, key) = (r.sign.key, r.signing_secret.key);
                    let var = key.env_var().unwrap_or_default();
                    self.problem(
                        key,
                        format!("must be at least {MIN_SECRET_BYTES} bytes when {sign} = true; set {var}"),
                    );
                    None
                }
                true => Some(r.signing_secret.value.as_bytes().to_vec()),
            },
        }
    }

    pub(super) fn mail(&mut self, raw: &RawMail) -> Mail {
        let r = raw.keyed();
        let transport = match r.transport.value.as_str() {
            "smtp" => MailTransport::Smtp,
            "log" => MailTransport::Log,
            other => {
                self.problem(
                    r.transport.key,
                    format!("`{other}` is not a transport; use \"smtp\" or \"log\" (dev only)"),
                );
                MailTransport::Log
            }
        };
        if transport == MailTransport::Smtp {
            let scheme_ok = ["smtp://", "smtps://"]
                .iter()
                .any(|s| r.smtp_url.value.starts_with(s));
            if !scheme_ok {
                self.problem(
                    r.smtp_url.key,
                    "must start with smtp:// (STARTTLS or plain) or smtps:// (TLS)",
                );
            }
        }
        if !r.from.value.contains('@') {
            self.problem(
                r.from.key,
                "must be an address, like \"Gateway <no-reply@example.com>\"",
            );
        }
        Mail {
            transport,
            smtp_url: r.smtp_url.value.clone(),
            from: r.from.value.clone(),
            queue: self.count(r.queue, 1, 1_000_000),
            retries: u32::try_from(self.count(r.retries, 0, 100)).unwrap_or(100),
            send_timeout: self.positive_duration(r.send_timeout),
        }
    }

    pub(super) fn codes(&mut self, raw: &RawCodes) -> Codes {
        let r = raw.keyed();
        Codes {
            ttl: self.positive_duration(r.ttl),
            max_attempts: u32::try_from(self.count(r.max_attempts, 1, 100)).unwrap_or(100),
            magic_link_ttl: self.positive_duration(r.magic_link_ttl),
            failure_budget: u32::try_from(self.count(r.failure_budget, 1, 10_000))
                .unwrap_or(10_000),
            failure_window: self.positive_duration(r.failure_window),
        }
    }

    fn rate(&mut self, raw: Keyed<'_, String>) -> RateLimit {
        raw.value.parse().unwrap_or_else(|m: String| {
            self.problem(raw.key, m);
            RateLimit {
                count: 1,
                per: Duration::from_secs(1),
            }
        })
    }

    pub(super) fn rate_limits(&mut self, raw: &RawRateLimits) -> RateLimits {
        let r = raw.keyed();
        RateLimits {
            login_per_ip: self.rate(r.login_per_ip),
            login_per_email: self.rate(r.login_per_email),
            otp_request_per_ip: self.rate(r.otp_request_per_ip),
            otp_request_per_email: self.rate(r.otp_request_per_email),
            otp_verify_per_ip: self.rate(r.otp_verify_per_ip),
            otp_verify_per_email: self.rate(r.otp_verify_per_email),
            register_per_ip: self.rate(r.register_per_ip),
            register_per_email: self.rate(r.register_per_email),
            magic_request_per_ip: self.rate(r.magic_request_per_ip),
            magic_request_per_email: self.rate(r.magic_request_per_email),
            session_miss_per_ip: self.rate(r.session_miss_per_ip),
            fleet_wide: *r.fleet_wide.value,
        }
    }

    pub(super) fn log(&mut self, raw: &RawLog) -> Log {
        let r = raw.keyed();
        let format = match r.format.value.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                self.problem(
                    r.format.key,
                    format!("`{other}` is not a format; use \"text\" or \"json\""),
                );
                LogFormat::Text
            }
        };
        if tracing_subscriber::EnvFilter::try_new(r.level.value).is_err() {
            self.problem(
                r.level.key,
                format!(
                    "`{}` is not a level or filter; use e.g. \"info\" or \"gateway=debug\"",
                    r.level.value
                ),
            );
        }
        Log {
            format,
            level: r.level.value.clone(),
        }
    }

    pub(super) fn route(&mut self, index: usize, raw: &RawRoute) -> Option<Route> {
        let r = raw.keyed(index);
        let prefix = r.path_prefix.value;
        let before = self.problems.len();
        if !prefix.starts_with('/') {
            self.problem(r.path_prefix.key, format!("`{prefix}` must start with /"));
        } else if crate::path::normalize(prefix).as_deref() != Ok(prefix.as_str()) {
            self.problem(
                r.path_prefix.key,
                format!(
                    "`{prefix}` is not in normalized form (percent-encodings, dot segments, `//`, `\\` or `;` are not allowed)"
                ),
            );
        }
        let upstream = match r.upstream.value.parse::<http::Uri>() {
            Ok(u)
                if u.scheme_str() == Some("http")
                    && u.authority().is_some()
                    && u.query().is_none() =>
            {
                Some(u)
            }
            Ok(u) if u.scheme_str() == Some("https") => {
                self.problem(
                    r.upstream.key,
                    "https upstreams are not supported yet; use http:// on a private network",
                );
                None
            }
            _ => {
                self.problem(
                    r.upstream.key,
                    format!(
                        "`{}` must be a URL like \"http://127.0.0.1:9000\"",
                        r.upstream.value
                    ),
                );
                None
            }
        };
        let auth = match r.auth.value.as_deref().unwrap_or("required") {
            "required" => AuthPolicy::Required,
            "optional" => AuthPolicy::Optional,
            "public" => AuthPolicy::Public,
            other => {
                self.problem(
                    r.auth.key,
                    format!(
                        "`{other}` is not a policy; use \"required\", \"optional\" or \"public\""
                    ),
                );
                AuthPolicy::Required
            }
        };
        if crate::path::has_prefix(prefix, "/auth") && prefix.len() > 1 {
            self.problem(
                r.path_prefix.key,
                "/auth is served by the gateway itself; choose another prefix",
            );
        }
        if !r.roles.value.is_empty() && auth != AuthPolicy::Required {
            self.problem(r.roles.key, "roles need auth = \"required\"");
        }
        let methods = r
            .methods
            .value
            .iter()
            .filter_map(
                |m| match http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                    Ok(m) => Some(m),
                    Err(_) => {
                        self.problem(r.methods.key, format!("`{m}` is not an HTTP method"));
                        None
                    }
                },
            )
            .collect();
        if self.problems.len() > before {
            return None;
        }
        Some(Route {
            path_prefix: prefix.trim_end_matches('/').to_string(),
            upstream: upstream?,
            auth,
            roles: r.roles.value.clone(),
            methods,
            strip_prefix: *r.strip_prefix.value,
        })
    }

    /// Browsers drop a `__Host-` or `__Secure-` cookie that is not `Secure`, and the gateway
    /// marks it `Secure` only when `public_url` is https: such a pair would make every login
    /// end back on the login page (the redirect loop), so it is refused here.
    pub(super) fn cookie_fits_the_scheme(&mut self, config: &Config) {
        let name = &config.sessions.cookie_name;
        let prefixed = name.starts_with("__Host-") || name.starts_with("__Secure-");
        if prefixed && !config.server.public_url.https {
            let public_url = RawServer::KEYS.public_url;
            self.problem(
                RawSessions::KEYS.cookie_name,
                format!(
                    "`{name}` needs an https {public_url} (browsers drop it otherwise and every login \
                     loops back to the login page); use a name without the __Host-/__Secure- prefix for plain HTTP"
                ),
            );
        }
    }

    pub(super) fn routes_unique(&mut self, routes: &[Route]) {
        let mut seen = std::collections::HashSet::new();
        for (i, r) in routes.iter().enumerate() {
            let p = if r.path_prefix.is_empty() {
                "/"
            } else {
                &r.path_prefix
            };
            if !seen.insert(p.to_string()) {
                self.problem(
                    RawRoute::keys(i).path_prefix,
                    format!("`{p}` is configured twice"),
                );
            }
        }
    }
}

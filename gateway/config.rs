//! Configuration: a TOML file (or built-in defaults) with `GATEWAY_SECTION__KEY` environment
//! overrides, read into the raw structs, then validated into the typed [`Config`] the rest of
//! the gateway uses. Every problem names its key and the fix. By concern:
//! - [`raw`]: the file's structs, each key named once with its default, and the key paths
//!   validation reports problems under;
//! - [`env`](mod@env): reading the file and applying the environment overrides;
//! - [`validate`]: checking and typing every value;
//! - [`typed`]: the validated configuration (re-exported here);
//! - [`branding`]: `[branding]`, raw, checked and typed.
//!
//! Unknown keys are errors, not ignored: they are collected with `serde_ignored` (rather than
//! `deny_unknown_fields`, which stops at the first one) so that `check-config` lists all of
//! them at once, each with its full path (`server.lisen`) or environment variable. Problems
//! are printed one way only, by [`ConfigError`], whichever command finds them.

mod branding;
mod env;
pub(crate) mod raw;
mod typed;
mod validate;

use std::fmt;
use std::path::Path;

pub(crate) use raw::*;
pub use typed::*;

use env::parse_with_overrides;
use validate::Validator;

/// Shortest secret (`auth.secret`, `sessions.token_key`, `headers.signing_secret`) accepted.
pub const MIN_SECRET_BYTES: usize = 32;
/// Environment variable naming the config file when `--config` is absent.
pub(crate) const CONFIG_ENV: &str = "GATEWAY_CONFIG";
/// Prefix of the per-key overrides: `GATEWAY_SECTION__KEY`.
pub(crate) const ENV_PREFIX: &str = "GATEWAY_";

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
            upstream: v.upstream(&raw.upstream),
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

    /// The problems that stop `gateway serve` beyond what every command needs: the secrets,
    /// and the development-only mail transport on a public URL.
    pub fn serve_problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut refuse = |key: Key, message: String| {
            problems.push(Problem {
                key: key.to_string(),
                message,
            });
        };
        let secret = RawAuth::KEYS.secret;
        if self.auth.secret.len() < MIN_SECRET_BYTES {
            refuse(
                secret,
                format!(
                    "must be at least {MIN_SECRET_BYTES} bytes (got {}); set it from the environment: \
                     {}=$(openssl rand -base64 48)",
                    self.auth.secret.len(),
                    secret.env_var().unwrap_or_default()
                ),
            );
        }
        let token_key = RawSessions::KEYS.token_key;
        if self.sessions.token_key.len() < MIN_SECRET_BYTES {
            refuse(
                token_key,
                format!(
                    "must be at least {MIN_SECRET_BYTES} bytes (got {}); it signs session tokens so that \
                     forged ones cost no database query; set it from the environment: \
                     {}=$(openssl rand -base64 48)",
                    self.sessions.token_key.len(),
                    token_key.env_var().unwrap_or_default()
                ),
            );
        }
        if self.mail.transport == MailTransport::Log && !self.server.public_url.is_local() {
            refuse(
                RawMail::KEYS.transport,
                format!(
                    "\"log\" writes codes and links to the log and is for development only: {} ({}) \
                     is not a local address (localhost, 127.0.0.1, ::1 or a .test/.localhost name); use \"smtp\"",
                    RawServer::KEYS.public_url,
                    self.server.public_url.origin
                ),
            );
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::validate::MAX_BODY_BYTES_LIMIT;
    use super::*;
    use std::time::Duration;

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
        let documented = |key: &str| {
            example
                .lines()
                .map(|l| l.trim_start_matches(['#', ' ']))
                .any(|l| l.starts_with(&format!("{key} =")))
        };
        let mut missing = Vec::new();
        for path in RawConfig::all_keys() {
            let (section, key) = path.split_once('.').expect("section.key");
            assert!(
                example.contains(&format!("[{section}]")),
                "[{section}] missing"
            );
            if !documented(key) {
                missing.push(path.to_string());
            }
        }
        for key in RawRoute::ALL_KEYS {
            if !documented(key) {
                missing.push(format!("{}.{key}", RawRoute::LIST));
            }
        }
        assert!(missing.is_empty(), "undocumented keys: {missing:?}");
        let env = [("GATEWAY_AUTH__SECRET".to_string(), "x".repeat(40))];
        let raw = parse_with_overrides(example, env).expect("the example parses");
        Config::from_raw(&raw).expect("the example is valid");
    }

    #[test]
    fn every_section_of_the_file_is_in_the_key_list() {
        let defaults = toml::Table::try_from(RawConfig::default()).unwrap();
        let listed: Vec<&str> = RawConfig::all_keys().collect();
        for (section, table) in &defaults {
            let Some(table) = table.as_table() else {
                continue;
            };
            for key in table.keys() {
                let path = format!("{section}.{key}");
                assert!(listed.contains(&path.as_str()), "{path} is not listed");
            }
        }
    }

    #[test]
    fn keys_name_their_section_and_variable() {
        let key = RawServer::KEYS.max_body_bytes;
        assert_eq!(key.to_string(), "server.max_body_bytes");
        assert_eq!(
            key.env_var().as_deref(),
            Some("GATEWAY_SERVER__MAX_BODY_BYTES")
        );
        assert_eq!(RawRoute::keys(2).upstream.to_string(), "routes[2].upstream");
        assert_eq!(RawRoute::keys(2).upstream.env_var(), None);
    }

    #[test]
    fn max_body_bytes_is_validated_like_the_rest() {
        for bad in ["0", &(MAX_BODY_BYTES_LIMIT + 1).to_string()] {
            let e = load("", &[("GATEWAY_SERVER__MAX_BODY_BYTES", bad)]).unwrap_err();
            assert_eq!(e[0].key, "server.max_body_bytes", "{bad}: {e:?}");
            assert!(e[0].message.contains("must be between 1 and"), "{e:?}");
        }
        let c = load("[server]\nmax_body_bytes = 1024\n", &[]).unwrap();
        assert_eq!(c.server.max_body_bytes, 1024);
        assert_eq!(
            load("", &[]).unwrap().server.max_body_bytes,
            DEFAULT_MAX_BODY_BYTES
        );
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

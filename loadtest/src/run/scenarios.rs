//! The scenarios of spec §7, each one step of work repeated by the load loop: `direct`,
//! `proxy`, `cold`, `login`, `otp`, `revoke` and `mixed`, and `forged` (a flood of tokens
//! nobody issued). A step records its own operations
//! (the counted one and, for compound steps, its phases) and says whether the run can go on.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue, StatusCode};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::client::{Client, Reply};
use super::stats::{ErrorKind, Failure, OpDef, Recorder};
use super::tokens::{Forge, Tokens};
use crate::smtp::Codes;

/// What a run does on each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// `GET path` against the upstream itself (`--upstream`, else `--target`): the baseline.
    /// With `--tokens`, the same `Authorization` header as `proxy` is sent (and ignored).
    Direct,
    /// `GET path` through the gateway with `Authorization: Bearer <token>` from `--tokens`.
    Proxy,
    /// Like `proxy`, but every token is used once, so each request is a cache miss; the run
    /// stops early when the tokens run out (seeding enough of them is the caller's job).
    Cold,
    /// `POST /auth/login` with `user{i}@DOMAIN` (i uniform in `0..--users`) and `--password`.
    Login,
    /// `POST /auth/otp/request`, the code read from the built-in SMTP sink, then
    /// `POST /auth/otp/verify`; the latency is the whole flow.
    Otp,
    /// Revocation latency across two instances: take a session, warm it on `--target2`, log it
    /// out on `--target`, then poll `--target2` until it answers 401.
    Revoke,
    /// A blend of proxied GETs, session checks, logins, logout + login and public GETs
    /// (`--mix`).
    Mixed,
    /// `GET path` through the gateway with a new well-formed token nobody issued for every
    /// request, of the kind `--forge` says: the guessing flood. The expected answer is 401;
    /// anything else (a 429 of the session-miss budget included) counts as an error of its
    /// kind. Read the gateway's `gateway_session_queries_total` before and after.
    Forged,
}

impl Scenario {
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Direct => "direct",
            Scenario::Proxy => "proxy",
            Scenario::Cold => "cold",
            Scenario::Login => "login",
            Scenario::Otp => "otp",
            Scenario::Revoke => "revoke",
            Scenario::Mixed => "mixed",
            Scenario::Forged => "forged",
        }
    }

    /// The operations the scenario records; index 0 is the one its name stands for.
    pub fn ops(self) -> &'static [OpDef] {
        match self {
            Scenario::Direct => DIRECT_OPS,
            Scenario::Proxy => PROXY_OPS,
            Scenario::Cold => COLD_OPS,
            Scenario::Login => LOGIN_OPS,
            Scenario::Otp => OTP_OPS,
            Scenario::Revoke => REVOKE_OPS,
            Scenario::Mixed => MIXED_OPS,
            Scenario::Forged => FORGED_OPS,
        }
    }
}

const fn op(name: &'static str, counted: bool) -> OpDef {
    OpDef { name, counted }
}

const DIRECT_OPS: &[OpDef] = &[op("direct", true)];
const PROXY_OPS: &[OpDef] = &[op("proxy", true)];
const COLD_OPS: &[OpDef] = &[op("cold", true)];
const FORGED_OPS: &[OpDef] = &[op("forged", true)];
const LOGIN_OPS: &[OpDef] = &[op("login", true)];
/// The whole flow, then its phases: the request, the wait for the mail, the verification.
const OTP_OPS: &[OpDef] = &[
    op("otp", true),
    op("otp_request", false),
    op("otp_mail", false),
    op("otp_verify", false),
];
/// The revocation latency, then the phases that set it up.
const REVOKE_OPS: &[OpDef] = &[
    op("revoke", true),
    op("login", false),
    op("warm", false),
    op("logout", false),
];
/// In the order of [`Mix`]'s weights.
const MIXED_OPS: &[OpDef] = &[
    op("proxy", true),
    op("session", true),
    op("login", true),
    op("relogin", true),
    op("public", true),
];

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The weights of `mixed`, in the order proxy, session, login, relogin, public.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; 5],
}

impl Mix {
    const NAMES: [&'static str; 5] = ["proxy", "session", "login", "relogin", "public"];

    /// The default blend: `proxy=90,session=5,login=3,relogin=1,public=1`.
    pub const DEFAULT: &'static str = "proxy=90,session=5,login=3,relogin=1,public=1";

    fn choose<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        let total: u32 = self.weights.iter().sum();
        let mut x = rng.random_range(0..total);
        for (i, w) in self.weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        0
    }

    fn uses(&self, name: &str) -> bool {
        Mix::NAMES
            .iter()
            .position(|n| *n == name)
            .is_some_and(|i| self.weights[i] > 0)
    }
}

impl FromStr for Mix {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Mix> {
        let mut weights = [0u32; 5];
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, weight) = item
                .split_once('=')
                .with_context(|| format!("{item:?} is not NAME=WEIGHT"))?;
            let i = Mix::NAMES
                .iter()
                .position(|n| *n == name.trim())
                .with_context(|| {
                    format!("unknown operation {name:?}: use {}", Mix::NAMES.join(", "))
                })?;
            weights[i] = weight
                .trim()
                .parse()
                .with_context(|| format!("{weight:?} is not a whole number"))?;
        }
        if weights.iter().map(|w| u64::from(*w)).sum::<u64>() == 0 {
            bail!("the weights add up to zero");
        }
        if weights.iter().map(|w| u64::from(*w)).sum::<u64>() > u64::from(u32::MAX) {
            bail!("the weights are too large");
        }
        Ok(Mix { weights })
    }
}

/// The fixed inputs of the steps.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Path (and query) of proxied and direct GETs.
    pub path: String,
    /// Path of the public route GETs of `mixed`.
    pub public_path: String,
    pub password: String,
    pub email_domain: String,
    /// Users `user0` … `user{users-1}` exist (as `loadtest seed` made them).
    pub users: u64,
    pub poll_interval: Duration,
    /// `revoke`: a random pause in `[0, revoke_jitter)` before each logout, so logouts fall
    /// at random points of the other instance's poll cycle instead of locking onto it.
    pub revoke_jitter: Duration,
    pub revoke_timeout: Duration,
    pub mail_timeout: Duration,
    pub mix: Mix,
    /// `forged`: what kind of token each request makes up.
    pub forge: Forge,
}

/// Whether the load loop goes on after a step.
#[derive(Debug)]
pub enum Flow {
    Continue,
    /// Nothing more can be done (e.g. the tokens ran out); the reason is reported.
    Stop(String),
}

/// What every step shares: clients, tokens, the SMTP sink's codes and the recorder.
pub struct Env {
    pub scenario: Scenario,
    pub client: Client,
    /// `--target2` for `revoke`.
    pub client2: Option<Client>,
    /// `--upstream` for `direct`.
    pub upstream: Option<Client>,
    pub recorder: Arc<Recorder>,
    pub tokens: Option<Tokens>,
    pub codes: Option<Arc<Codes>>,
    pub settings: Settings,
    next_user: AtomicU64,
}

impl Env {
    /// Checks that the scenario has what it needs.
    ///
    /// # Errors
    /// A missing token file, second target, SMTP sink or user count, named by its flag.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        scenario: Scenario,
        client: Client,
        client2: Option<Client>,
        upstream: Option<Client>,
        recorder: Arc<Recorder>,
        tokens: Option<Tokens>,
        codes: Option<Arc<Codes>>,
        settings: Settings,
    ) -> anyhow::Result<Env> {
        let needs_tokens = match scenario {
            Scenario::Proxy | Scenario::Cold => true,
            Scenario::Mixed => settings.mix.uses("proxy") || settings.mix.uses("session"),
            _ => false,
        };
        if needs_tokens && tokens.is_none() {
            bail!("--scenario {scenario} needs --tokens");
        }
        let needs_users = match scenario {
            Scenario::Login | Scenario::Otp => true,
            Scenario::Revoke => tokens.is_none(),
            Scenario::Mixed => settings.mix.uses("login") || settings.mix.uses("relogin"),
            _ => false,
        };
        if needs_users && settings.users == 0 {
            bail!("--scenario {scenario} needs --users N (how many users `loadtest seed` made)");
        }
        if scenario == Scenario::Revoke && client2.is_none() {
            bail!("--scenario revoke needs --target2 (the second gateway instance)");
        }
        if scenario == Scenario::Otp && codes.is_none() {
            bail!("--scenario otp needs the SMTP sink (--smtp-listen)");
        }
        Ok(Env {
            scenario,
            client,
            client2,
            upstream,
            recorder,
            tokens,
            codes,
            settings,
            next_user: AtomicU64::new(0),
        })
    }

    /// Runs one step that started (or was due) at `started`, recording into `shard`.
    pub async fn step(&self, shard: usize, started: Instant) -> Flow {
        match self.scenario {
            Scenario::Direct => {
                let client = self.upstream.as_ref().unwrap_or(&self.client);
                let headers = match &self.tokens {
                    Some(t) => bearer(t.pick()),
                    None => HeaderMap::new(),
                };
                let outcome = get_ok(client, &self.settings.path, &headers, "direct").await;
                self.finish(shard, 0, started, started, outcome);
            }
            Scenario::Proxy => {
                let outcome = self.proxied_get().await;
                self.finish(shard, 0, started, started, outcome);
            }
            Scenario::Cold => {
                let Some(token) = self.tokens.as_ref().and_then(Tokens::take_unused) else {
                    return self.out_of_tokens();
                };
                let outcome =
                    get_ok(&self.client, &self.settings.path, &bearer(token), "cold").await;
                self.finish(shard, 0, started, started, outcome);
            }
            Scenario::Login => {
                let user = rand::rng().random_range(0..self.settings.users);
                let outcome = self.login(&self.client, user).await.map(drop);
                self.finish(shard, 0, started, started, outcome);
            }
            Scenario::Otp => self.otp(shard, started).await,
            Scenario::Revoke => return self.revoke(shard, started).await,
            Scenario::Mixed => self.mixed(shard, started).await,
            Scenario::Forged => {
                let outcome = self.forged_get().await;
                self.finish(shard, 0, started, started, outcome);
            }
        }
        Flow::Continue
    }

    fn finish(
        &self,
        shard: usize,
        op: usize,
        window_time: Instant,
        since: Instant,
        outcome: Result<(), Failure>,
    ) {
        let outcome = outcome.map(|()| since.elapsed());
        self.recorder
            .record(shard, op, window_time, outcome.as_ref().map(|d| *d));
    }

    fn out_of_tokens(&self) -> Flow {
        let n = self.tokens.as_ref().map_or(0, Tokens::len);
        Flow::Stop(format!(
            "all {n} tokens were used (each is used once): seed more or lower --duration"
        ))
    }

    fn email(&self, user: u64) -> String {
        format!("user{user}@{}", self.settings.email_domain)
    }

    /// The next user in turn, so concurrent steps work on different users.
    fn next_user(&self) -> u64 {
        self.next_user.fetch_add(1, Ordering::Relaxed) % self.settings.users.max(1)
    }

    async fn proxied_get(&self) -> Result<(), Failure> {
        let token = self
            .tokens
            .as_ref()
            .map(Tokens::pick)
            .ok_or_else(|| Failure::new(ErrorKind::Other, "no tokens"))?;
        get_ok(&self.client, &self.settings.path, &bearer(token), "proxy").await
    }

    /// A GET with a token made up for it, which the gateway must refuse (401).
    async fn forged_get(&self) -> Result<(), Failure> {
        let token = self.settings.forge.make();
        let reply = self
            .client
            .get(&self.settings.path, &bearer(&token))
            .await?;
        expect(reply, StatusCode::UNAUTHORIZED, "forged").map(drop)
    }

    /// Password login of `user`: the new session's token as a `Bearer` value.
    async fn login(&self, client: &Client, user: u64) -> Result<HeaderValue, Failure> {
        let body = json!({"email": self.email(user), "password": self.settings.password});
        let reply = client
            .post_json("/auth/login", &HeaderMap::new(), &body)
            .await?;
        let reply = expect(reply, StatusCode::OK, "login")?;
        token_of(&reply, "login")
    }

    async fn logout(&self, client: &Client, token: &HeaderValue) -> Result<(), Failure> {
        let reply = client
            .post_json("/auth/logout", &bearer(token), &json!({}))
            .await?;
        expect(reply, StatusCode::OK, "logout").map(drop)
    }

    async fn otp(&self, shard: usize, started: Instant) {
        let outcome = self.otp_flow(shard, started).await;
        self.finish(shard, 0, started, started, outcome);
    }

    async fn otp_flow(&self, shard: usize, started: Instant) -> Result<(), Failure> {
        let codes = self
            .codes
            .as_ref()
            .ok_or_else(|| Failure::new(ErrorKind::Other, "no SMTP sink"))?;
        let email = self.email(self.next_user());
        let mailed = codes.expect(&email);

        let t = Instant::now();
        let request = json!({"email": email, "purpose": "login"});
        let sent = match self
            .client
            .post_json("/auth/otp/request", &HeaderMap::new(), &request)
            .await
        {
            Ok(reply) if reply.status.is_success() => Ok(()),
            Ok(reply) => Err(Failure::status(reply.status.as_u16(), "otp request")),
            Err(e) => Err(e),
        };
        self.finish(shard, 1, started, t, sent.clone());
        sent?;

        let t = Instant::now();
        let code = match tokio::time::timeout(self.settings.mail_timeout, mailed).await {
            Ok(Ok(code)) => Ok(code),
            Ok(Err(_)) => Err(Failure::new(
                ErrorKind::Other,
                format!("the code for {email} was claimed by another step"),
            )),
            Err(_) => Err(Failure::new(
                ErrorKind::Timeout,
                format!(
                    "no code mailed to {email} within {:?}: is the gateway's mail.smtp_url the \
                     sink (--smtp-listen) and mail.transport \"smtp\"?",
                    self.settings.mail_timeout
                ),
            )),
        };
        self.finish(
            shard,
            2,
            started,
            t,
            code.as_ref().map(drop).map_err(Clone::clone),
        );
        let code = code?;

        let t = Instant::now();
        let verify = json!({"email": email, "code": code, "purpose": "login"});
        let verified = match self
            .client
            .post_json("/auth/otp/verify", &HeaderMap::new(), &verify)
            .await
        {
            Ok(reply) => expect(reply, StatusCode::OK, "otp verify")
                .and_then(|r| token_of(&r, "otp verify"))
                .map(drop),
            Err(e) => Err(e),
        };
        self.finish(shard, 3, started, t, verified.clone());
        verified
    }

    async fn revoke(&self, shard: usize, started: Instant) -> Flow {
        let Some(instance2) = self.client2.as_ref() else {
            return Flow::Stop("no --target2".into());
        };
        let token = match &self.tokens {
            Some(tokens) => match tokens.take_unused() {
                Some(token) => token.clone(),
                None => return self.out_of_tokens(),
            },
            None => {
                let t = Instant::now();
                let token = self.login(&self.client, self.next_user()).await;
                self.finish(
                    shard,
                    1,
                    started,
                    t,
                    token.as_ref().map(drop).map_err(Clone::clone),
                );
                match token {
                    Ok(token) => token,
                    Err(failure) => {
                        self.recorder.record(shard, 0, started, Err(&failure));
                        return Flow::Continue;
                    }
                }
            }
        };
        let outcome = self.revocation(shard, started, instance2, &token).await;
        self.recorder
            .record(shard, 0, started, outcome.as_ref().map(|d| *d));
        Flow::Continue
    }

    /// Warms `token` on instance 2, logs it out on instance 1 and polls instance 2 until it
    /// refuses the token: the time from the logout's answer to the first 401.
    async fn revocation(
        &self,
        shard: usize,
        started: Instant,
        instance2: &Client,
        token: &HeaderValue,
    ) -> Result<Duration, Failure> {
        let headers = bearer(token);
        let path = &self.settings.path;

        let t = Instant::now();
        let warmed = get_ok(instance2, path, &headers, "warm on --target2").await;
        self.finish(shard, 2, started, t, warmed.clone());
        warmed?;

        let jitter = self
            .settings
            .revoke_jitter
            .mul_f64(rand::rng().random::<f64>());
        tokio::time::sleep(jitter).await;

        let t = Instant::now();
        let logged_out = self.logout(&self.client, token).await;
        self.finish(shard, 3, started, t, logged_out.clone());
        logged_out?;

        let revoked_at = Instant::now();
        loop {
            let reply = instance2.get(path, &headers).await?;
            match reply.status {
                StatusCode::UNAUTHORIZED => return Ok(revoked_at.elapsed()),
                s if s.is_success() => {}
                s => return Err(Failure::status(s.as_u16(), "poll on --target2")),
            }
            if revoked_at.elapsed() >= self.settings.revoke_timeout {
                return Err(Failure::new(
                    ErrorKind::Timeout,
                    format!(
                        "--target2 still accepted the token {:?} after the logout",
                        self.settings.revoke_timeout
                    ),
                ));
            }
            tokio::time::sleep(self.settings.poll_interval).await;
        }
    }

    async fn mixed(&self, shard: usize, started: Instant) {
        let op = self.settings.mix.choose(&mut rand::rng());
        let outcome = match op {
            0 => self.proxied_get().await,
            1 => match self.tokens.as_ref().map(Tokens::pick) {
                Some(token) => {
                    get_ok(&self.client, "/auth/session", &bearer(token), "session").await
                }
                None => Err(Failure::new(ErrorKind::Other, "no tokens")),
            },
            2 => {
                let user = rand::rng().random_range(0..self.settings.users.max(1));
                self.login(&self.client, user).await.map(drop)
            }
            3 => {
                let user = rand::rng().random_range(0..self.settings.users.max(1));
                match self.login(&self.client, user).await {
                    Ok(token) => self.logout(&self.client, &token).await,
                    Err(e) => Err(e),
                }
            }
            _ => {
                get_ok(
                    &self.client,
                    &self.settings.public_path,
                    &HeaderMap::new(),
                    "public",
                )
                .await
            }
        };
        self.finish(shard, op, started, started, outcome);
    }
}

fn bearer(token: &HeaderValue) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(1);
    headers.insert(AUTHORIZATION, token.clone());
    headers
}

/// `GET path`, expecting any 2xx.
async fn get_ok(
    client: &Client,
    path: &str,
    headers: &HeaderMap,
    context: &str,
) -> Result<(), Failure> {
    let reply = client.get(path, headers).await?;
    if reply.status.is_success() {
        Ok(())
    } else {
        Err(Failure::status(reply.status.as_u16(), context))
    }
}

fn expect(reply: Reply, status: StatusCode, context: &str) -> Result<Reply, Failure> {
    if reply.status == status {
        Ok(reply)
    } else {
        Err(Failure::status(reply.status.as_u16(), context))
    }
}

/// The `token` of a session answer, as a `Bearer` value.
fn token_of(reply: &Reply, context: &str) -> Result<HeaderValue, Failure> {
    let value: serde_json::Value = serde_json::from_slice(&reply.body)
        .map_err(|e| Failure::new(ErrorKind::Other, format!("{context}: answer not JSON: {e}")))?;
    value
        .get("token")
        .and_then(serde_json::Value::as_str)
        .and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok())
        .ok_or_else(|| {
            Failure::new(
                ErrorKind::Other,
                format!("{context}: no token in the answer"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_follows_the_mix() {
        let mix: Mix = Mix::DEFAULT.parse().unwrap();
        assert_eq!(mix.weights, [90, 5, 3, 1, 1]);
        let mut rng = rand::rng();
        let mut counts = [0u32; 5];
        for _ in 0..100_000 {
            counts[mix.choose(&mut rng)] += 1;
        }
        assert!((88_000..92_000).contains(&counts[0]), "{counts:?}");
        assert!((700..1300).contains(&counts[4]), "{counts:?}");
        let only: Mix = "public=1".parse().unwrap();
        assert!(only.uses("public") && !only.uses("proxy"));
        assert!("proxy=0".parse::<Mix>().is_err());
        assert!("bogus=1".parse::<Mix>().is_err());
    }
}

//! `loadtest run`: drives one scenario against a target for a fixed time, in a closed loop
//! (N tasks, each sending its next request when the last one answered) or an open loop
//! (request i is due at t0 + i/R whatever happened before, and its latency counts from that
//! due time, so a stalled server cannot hide its queue: no coordinated omission). Warm-up
//! requests are not measured. The result is a [`Summary`]: printed as a table, and written as
//! JSON with `--json` for `loadtest report` and the benchmark scripts.
//!
//! Submodules: [`client`] (HTTP/1.1, HTTP/2, TLS), [`scenarios`] (what one step does),
//! [`stats`] (HDR histograms, errors by kind), [`tokens`] (uniform or Zipf token choice, and
//! the made-up tokens of `forged`),
//! [`progress`] (the terminal line), [`intervals`] (per-second figures for `--interval`) and
//! [`summary`] (the result, as table and JSON).

pub mod client;
pub mod intervals;
pub mod progress;
pub mod scenarios;
pub mod stats;
pub mod summary;
pub mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use http::Uri;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use crate::seed::{DEFAULT_EMAIL_DOMAIN, DEFAULT_PASSWORD};
use crate::smtp;
use client::{Client, ClientOptions};
use intervals::Intervals;
use scenarios::{Env, Flow, Mix, Scenario, Settings};
use stats::{Recorder, SHARDS};
use tokens::Tokens;

pub use intervals::IntervalStats;
pub use summary::{OpSummary, Summary, nonzero_kinds};

/// Closed-loop tasks when neither `--concurrency` nor `--rate` is given.
const DEFAULT_CONCURRENCY: usize = 64;
/// HTTP/1.1 connections of an open-loop run unless `--connections` says otherwise.
const DEFAULT_OPEN_LOOP_CONNECTIONS: usize = 256;
/// HTTP/2 connections the requests are spread over unless `--connections` says otherwise.
const DEFAULT_H2_CONNECTIONS: usize = 4;
/// Longest `--duration` accepted.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Extra time after the end (beyond the step's own timeouts) for in-flight steps to finish.
const DRAIN_MARGIN: Duration = Duration::from_secs(1);
/// Longest single sleep of the open-loop scheduler, so it notices an early stop quickly.
const SCHEDULER_SLICE: Duration = Duration::from_millis(10);
/// Linux reports process CPU times in `USER_HZ` ticks, 100 per second on every architecture
/// (the kernel converts to this fixed ABI value).
const USER_HZ: f64 = 100.0;

/// `loadtest run`: the command line. [`RunArgs::validate`] turns it into a [`RunConfig`].
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// What each step does (see the list above).
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    /// Base URL of the gateway (or of what is measured), e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    pub target: String,
    /// `revoke`: base URL of the second gateway instance, which must see the logout.
    #[arg(long, value_name = "URL")]
    pub target2: Option<String>,
    /// `direct`: base URL of the upstream itself (default: --target).
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
    /// Path (and query) of the GETs (default: the path of --target, else /).
    #[arg(long)]
    pub path: Option<String>,
    /// `mixed`: path of the public (no auth) route.
    #[arg(long, default_value = "/public/")]
    pub public_path: String,
    /// File of session tokens, one per line (from `loadtest seed --out`).
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<PathBuf>,
    /// Skip this many tokens at the start of the file (e.g. to give `cold` unused ones).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub token_offset: usize,
    /// Use at most this many tokens (after the offset).
    #[arg(long, value_name = "N")]
    pub token_count: Option<usize>,
    /// Choose tokens by Zipf(S) over their line order (rank 1 the hottest) instead of
    /// uniformly; S = 0 is uniform, S ≈ 1 is a typical hot set.
    #[arg(long, value_name = "S")]
    pub zipf: Option<f64>,
    /// Closed loop: this many tasks, each sending its next request when the last one
    /// answered (default 64).
    #[arg(long, value_name = "N", conflicts_with = "rate")]
    pub concurrency: Option<usize>,
    /// Open loop: this many requests per second on a fixed schedule; latency counts from
    /// each request's scheduled time.
    #[arg(long, value_name = "R")]
    pub rate: Option<f64>,
    /// How long to measure, after the warm-up.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Load sent before measuring starts, not counted.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Stop after this many measured steps (or at --duration, whichever comes first).
    #[arg(long, value_name = "N")]
    pub iterations: Option<u64>,
    /// Longest one request may take, connecting included (then it counts as `timeout`).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// HTTP/1.1: most connections at once (default: --concurrency, or 256 in open loop).
    /// HTTP/2: connections the requests are multiplexed over (default 4).
    #[arg(long, value_name = "N")]
    pub connections: Option<usize>,
    /// Speak HTTP/2: h2 by ALPN over TLS, prior knowledge (h2c) on http:// targets.
    #[arg(long)]
    pub http2: bool,
    /// PEM file of the CA certificates that https:// targets are checked against.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Open a new connection (and TLS session) for every request instead of keeping them.
    #[arg(long)]
    pub new_connection_per_request: bool,
    /// Open loop: most requests outstanding at once; a request due beyond that is not sent
    /// and counts as an error of kind `backlog`.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub max_outstanding: usize,
    /// Write the summary as JSON to FILE (for `loadtest report`).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also record throughput, failures and latency percentiles per interval of this length
    /// (operations count where they finished) into the JSON's `intervals`, e.g. 1s for a soak.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub interval: Option<Duration>,
    /// Label of this run in reports (default: SCENARIO@HOST:PORT).
    #[arg(long)]
    pub name: Option<String>,
    /// Domain of the seeded users' addresses (user{i}@DOMAIN).
    #[arg(long, default_value = DEFAULT_EMAIL_DOMAIN)]
    pub email_domain: String,
    /// `login`, `otp`, `revoke`, `mixed`: users user0 … user{N-1} exist (as seeded).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub users: u64,
    /// Password of the seeded users.
    #[arg(long, default_value = DEFAULT_PASSWORD)]
    pub password: String,
    /// `otp`: where the built-in SMTP sink listens. Configure the gateway with
    /// mail.transport = "smtp" and mail.smtp_url = "smtp://ADDR", and raise its
    /// rate_limits.otp_* for the run.
    #[arg(
        long,
        alias = "smtp-sink",
        default_value = "127.0.0.1:2525",
        value_name = "ADDR"
    )]
    pub smtp_listen: SocketAddr,
    /// `otp`: longest wait for the code's mail.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub mail_timeout: Duration,
    /// `revoke`: pause between polls of --target2.
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,
    /// `revoke`: wait a random time below this before each logout, so logouts land at random
    /// points of the second instance's revocation poll (set it to sessions.revocation_poll);
    /// 0s makes back-to-back loops lock onto the poll cycle.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub revoke_jitter: Duration,
    /// `revoke`: give up (error `timeout`) when --target2 still accepts the token this long
    /// after the logout.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub revoke_timeout: Duration,
    /// `forged`: the kind of token made up for each request.
    #[arg(long, value_enum, default_value = "forged")]
    pub forge: tokens::ForgeKind,
    /// `forged` with `--forge tagged`: the gateway's `sessions.token_key`.
    #[arg(
        long,
        env = "GATEWAY_SESSIONS__TOKEN_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub token_key: Option<String>,
    /// `mixed`: the blend as NAME=WEIGHT pairs. proxy: GET --path with a Zipf/uniform token;
    /// session: GET /auth/session; login: POST /auth/login; relogin: POST /auth/login then
    /// POST /auth/logout of that new session; public: GET --public-path without a token.
    #[arg(long, default_value = Mix::DEFAULT)]
    pub mix: Mix,
}

/// Closed or open loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Closed { concurrency: usize },
    Open { rate: f64 },
}

/// A validated `loadtest run`.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub scenario: Scenario,
    pub name: String,
    pub target: Uri,
    pub target2: Option<Uri>,
    pub upstream: Option<Uri>,
    pub mode: Mode,
    pub duration: Duration,
    pub warmup: Duration,
    pub iterations: Option<u64>,
    pub max_outstanding: usize,
    pub client: ClientOptions,
    pub tokens: Option<PathBuf>,
    pub token_offset: usize,
    pub token_count: Option<usize>,
    pub zipf: Option<f64>,
    pub smtp_listen: SocketAddr,
    pub settings: Settings,
    pub json: Option<PathBuf>,
    pub interval: Option<Duration>,
}

impl RunArgs {
    /// Checks every flag and fills in the defaults.
    ///
    /// # Errors
    /// The first bad or missing flag, named.
    pub fn validate(self) -> anyhow::Result<RunConfig> {
        let target = base_url(&self.target).context("--target")?;
        let target2 = self
            .target2
            .as_deref()
            .map(base_url)
            .transpose()
            .context("--target2")?;
        let upstream = self
            .upstream
            .as_deref()
            .map(base_url)
            .transpose()
            .context("--upstream")?;
        let https = [Some(&target), target2.as_ref(), upstream.as_ref()]
            .into_iter()
            .flatten()
            .any(|u| u.scheme_str() == Some("https"));
        if https && self.ca_file.is_none() {
            bail!("https:// targets need --ca-file with the CA that signed their certificate");
        }
        let path = match self.path {
            Some(p) => p,
            None => target
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
        };
        for (flag, p) in [("--path", &path), ("--public-path", &self.public_path)] {
            if !p.starts_with('/') || p.parse::<http::uri::PathAndQuery>().is_err() {
                bail!("{flag} must be a path starting with /, not {p:?}");
            }
        }
        let mode = match (self.rate, self.concurrency) {
            (Some(rate), _) if !(0.01..=10_000_000.0).contains(&rate) => {
                bail!("--rate must be between 0.01 and 10000000 requests per second")
            }
            (Some(rate), _) => Mode::Open { rate },
            (None, Some(n)) if !(1..=100_000).contains(&n) => {
                bail!("--concurrency must be between 1 and 100000")
            }
            (None, n) => Mode::Closed {
                concurrency: n.unwrap_or(DEFAULT_CONCURRENCY),
            },
        };
        if self.scenario == Scenario::Revoke && matches!(mode, Mode::Open { .. }) {
            bail!("--scenario revoke runs a closed loop: use --concurrency, not --rate");
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            bail!("--duration must be more than 0 and at most 24h");
        }
        if self.warmup > MAX_DURATION {
            bail!("--warmup must be at most 24h");
        }
        for (flag, d) in [
            ("--timeout", self.timeout),
            ("--mail-timeout", self.mail_timeout),
            ("--revoke-timeout", self.revoke_timeout),
            ("--poll-interval", self.poll_interval),
        ] {
            if d.is_zero() || d > Duration::from_secs(3600) {
                bail!("{flag} must be more than 0 and at most 1h");
            }
        }
        if let Some(every) = self.interval {
            if every < intervals::MIN_INTERVAL || every > MAX_DURATION {
                bail!("--interval must be at least 100ms and at most 24h");
            }
        }
        if self.revoke_jitter > Duration::from_secs(3600) {
            bail!("--revoke-jitter must be at most 1h");
        }
        if self.iterations == Some(0) {
            bail!("--iterations must be at least 1");
        }
        if !(1..=1_000_000).contains(&self.max_outstanding) {
            bail!("--max-outstanding must be between 1 and 1000000");
        }
        if let Some(s) = self.zipf {
            if !s.is_finite() || s < 0.0 {
                bail!("--zipf must be a number ≥ 0");
            }
        }
        let connections = match (self.connections, self.http2, mode) {
            (Some(n), _, _) if !(1..=100_000).contains(&n) => {
                bail!("--connections must be between 1 and 100000")
            }
            (Some(n), _, _) => n,
            (None, true, Mode::Closed { concurrency }) => DEFAULT_H2_CONNECTIONS.min(concurrency),
            (None, true, Mode::Open { .. }) => DEFAULT_H2_CONNECTIONS,
            (None, false, Mode::Closed { concurrency }) => concurrency,
            (None, false, Mode::Open { .. }) => DEFAULT_OPEN_LOOP_CONNECTIONS,
        };
        if self.scenario == Scenario::Otp {
            if let Mode::Closed { concurrency } = mode {
                if self.users <= concurrency as u64 {
                    bail!(
                        "--scenario otp needs more --users than --concurrency, so no two steps \
                         wait for the same mailbox"
                    );
                }
            }
        }
        let hits = match (&upstream, self.scenario) {
            (Some(u), Scenario::Direct) => u,
            _ => &target,
        };
        let name = self.name.unwrap_or_else(|| {
            let variant = match (self.http2, self.new_connection_per_request) {
                (false, false) => "",
                (true, false) => " (h2)",
                (false, true) => " (new conn)",
                (true, true) => " (h2, new conn)",
            };
            format!(
                "{}@{}{variant}",
                self.scenario,
                hits.authority().map_or("", |a| a.as_str())
            )
        });
        Ok(RunConfig {
            scenario: self.scenario,
            name,
            target,
            target2,
            upstream,
            mode,
            duration: self.duration,
            warmup: self.warmup,
            iterations: self.iterations,
            max_outstanding: self.max_outstanding,
            client: ClientOptions {
                http2: self.http2,
                ca_file: self.ca_file,
                per_request: self.new_connection_per_request,
                connections,
                timeout: self.timeout,
            },
            tokens: self.tokens,
            token_offset: self.token_offset,
            token_count: self.token_count,
            zipf: self.zipf,
            smtp_listen: self.smtp_listen,
            settings: Settings {
                path,
                public_path: self.public_path,
                password: self.password,
                email_domain: self.email_domain,
                users: self.users,
                poll_interval: self.poll_interval,
                revoke_jitter: self.revoke_jitter,
                revoke_timeout: self.revoke_timeout,
                mail_timeout: self.mail_timeout,
                mix: self.mix,
                forge: tokens::Forge::new(self.forge, self.token_key.as_deref())?,
            },
            json: self.json,
            interval: self.interval,
        })
    }
}

impl RunConfig {
    /// The configuration of `loadtest run ARGS…`: the flags parsed and validated as on the
    /// command line, for programs and tests that drive a run in-process.
    ///
    /// # Errors
    /// A flag the parser or [`RunArgs::validate`] refuses.
    pub fn from_flags(args: &[&str]) -> anyhow::Result<RunConfig> {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            run: RunArgs,
        }
        let argv = std::iter::once("run").chain(args.iter().copied());
        Flags::try_parse_from(argv)?.run.validate()
    }
}

/// An `http://` or `https://` URL with a host.
fn base_url(raw: &str) -> anyhow::Result<Uri> {
    let uri: Uri = raw
        .parse()
        .with_context(|| format!("{raw:?} is not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => bail!("{raw:?} must start with http:// or https://"),
    }
    if uri.host().is_none_or(str::is_empty) {
        bail!("{raw:?} has no host");
    }
    Ok(uri)
}

/// Why and when the load loop stopped before its end.
struct Stop {
    set: AtomicBool,
    reason: Mutex<Option<(String, Instant)>>,
    notify: Notify,
    iterations: Option<u64>,
    counted: AtomicU64,
}

impl Stop {
    fn new(iterations: Option<u64>) -> Stop {
        Stop {
            set: AtomicBool::new(false),
            reason: Mutex::new(None),
            notify: Notify::new(),
            iterations,
            counted: AtomicU64::new(0),
        }
    }

    fn is_set(&self) -> bool {
        self.set.load(Ordering::Relaxed)
    }

    fn stop(&self, reason: String) {
        let mut slot = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some((reason, Instant::now()));
        }
        self.set.store(true, Ordering::Relaxed);
        self.notify.notify_waiters();
    }

    /// Counts one measured step; false (and stops the run) past `--iterations`.
    fn count_step(&self) -> bool {
        let Some(max) = self.iterations else {
            return true;
        };
        if self.counted.fetch_add(1, Ordering::Relaxed) < max {
            return true;
        }
        self.stop(format!("--iterations {max} reached"));
        false
    }

    fn reason(&self) -> Option<(String, Instant)> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// When the warm-up ends and when the measurement ends.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

/// Runs `config`, prints the table and writes the JSON file if asked.
///
/// # Errors
/// As [`run`], or an unwritable JSON file.
pub async fn execute(config: RunConfig) -> anyhow::Result<Summary> {
    let json = config.json.clone();
    let summary = run(config).await?;
    print!("{}", summary.table());
    if let Some(path) = json {
        summary.write_json(&path)?;
    }
    Ok(summary)
}

/// Runs the scenario of `config` to its end and summarizes it.
///
/// # Errors
/// Setting up: unreadable tokens or CA file, a host that does not resolve, an SMTP address
/// already in use. Failed requests are counted, not errors.
pub async fn run(config: RunConfig) -> anyhow::Result<Summary> {
    let started_at = SystemTime::now();
    let tokens = match &config.tokens {
        Some(path) => Some(Tokens::load(
            path,
            config.token_offset,
            config.token_count,
            config.zipf,
        )?),
        None => None,
    };
    let client = Client::new(&config.target, &config.client)
        .await
        .context("--target")?;
    let client2 = match &config.target2 {
        Some(uri) => Some(
            Client::new(uri, &config.client)
                .await
                .context("--target2")?,
        ),
        None => None,
    };
    let upstream = match &config.upstream {
        Some(uri) => Some(
            Client::new(uri, &config.client)
                .await
                .context("--upstream")?,
        ),
        None => None,
    };
    let (smtp_stop, smtp_stopped) = tokio::sync::oneshot::channel::<()>();
    let codes = if config.scenario == Scenario::Otp {
        let listener = TcpListener::bind(config.smtp_listen)
            .await
            .with_context(|| format!("the SMTP sink cannot listen on {}", config.smtp_listen))?;
        let codes = smtp::Codes::new();
        tokio::spawn(smtp::serve(listener, Arc::clone(&codes), async {
            let _ = smtp_stopped.await;
        }));
        Some(codes)
    } else {
        None
    };

    let t0 = Instant::now();
    let window = Window {
        start: t0 + config.warmup,
        end: t0 + config.warmup + config.duration,
    };
    let recorder = Recorder::new(config.scenario.ops(), window.start, window.end);
    let recorder = Arc::new(match config.interval {
        Some(_) => recorder.with_intervals(),
        None => recorder,
    });
    let intervals = config
        .interval
        .map(|every| Intervals::start(Arc::clone(&recorder), every, window.start, window.end));
    let env = Arc::new(Env::new(
        config.scenario,
        client,
        client2,
        upstream,
        Arc::clone(&recorder),
        tokens,
        codes,
        config.settings.clone(),
    )?);
    let stop = Arc::new(Stop::new(config.iterations));
    let progress = progress::Progress::start(Arc::clone(&recorder), t0, window.start, window.end);
    let cpu = tokio::spawn(window_cpu(window, Arc::clone(&stop)));

    let s = &config.settings;
    let step_budget = config.client.timeout * 3
        + match config.scenario {
            Scenario::Otp => s.mail_timeout,
            Scenario::Revoke => s.revoke_jitter + s.revoke_timeout + s.poll_interval,
            _ => Duration::ZERO,
        };
    let deadline = window.end + step_budget + DRAIN_MARGIN;
    let abandoned = match config.mode {
        Mode::Closed { concurrency } => {
            closed_loop(&env, &stop, concurrency, window, deadline).await
        }
        Mode::Open { rate } => {
            open_loop(
                &env,
                &stop,
                rate,
                t0,
                window,
                config.max_outstanding,
                deadline,
            )
            .await
        }
    };
    progress.finish();
    let _ = smtp_stop.send(());
    let cpu_seconds = cpu.await.unwrap_or(0.0);

    let stopped = stop.reason();
    let measured = match &stopped {
        Some((_, at)) if *at < window.end => at.saturating_duration_since(window.start),
        _ => config.duration,
    };
    let intervals = match intervals {
        Some(intervals) => intervals.finish(window.start + measured).await,
        None => Vec::new(),
    };
    let mut summary = summary::summarize(
        &config,
        &recorder.snapshot(),
        measured,
        cpu_seconds,
        started_at,
        stopped.map(|(reason, _)| reason),
        abandoned,
    );
    summary.intervals = intervals;
    Ok(summary)
}

/// N tasks, each running steps back to back until the end; returns the steps abandoned at
/// `deadline`.
async fn closed_loop(
    env: &Arc<Env>,
    stop: &Arc<Stop>,
    concurrency: usize,
    window: Window,
    deadline: Instant,
) -> u64 {
    let mut tasks = JoinSet::new();
    for worker in 0..concurrency {
        let (env, stop) = (Arc::clone(env), Arc::clone(stop));
        tasks.spawn(async move {
            while !stop.is_set() {
                let started = Instant::now();
                if started >= window.end || (started >= window.start && !stop.count_step()) {
                    break;
                }
                if let Flow::Stop(reason) = env.step(worker % SHARDS, started).await {
                    stop.stop(reason);
                }
            }
        });
    }
    drain(tasks, deadline).await
}

/// Request i is due at `t0 + i / rate`; each is its own task, measured from its due time.
/// Returns the steps abandoned at `deadline`.
///
/// The schedule runs on a blocking-pool thread with `std::thread::sleep` (nanosleep, tens of
/// microseconds late at most) rather than on tokio's millisecond timer wheel, whose lateness
/// would be counted into every latency.
async fn open_loop(
    env: &Arc<Env>,
    stop: &Arc<Stop>,
    rate: f64,
    t0: Instant,
    window: Window,
    max_outstanding: usize,
    deadline: Instant,
) -> u64 {
    let (env, stop) = (Arc::clone(env), Arc::clone(stop));
    let schedule = tokio::task::spawn_blocking(move || {
        let interval = 1.0 / rate;
        let outstanding = Arc::new(Semaphore::new(max_outstanding));
        let mut tasks = JoinSet::new();
        for i in 0u64.. {
            let due = t0 + Duration::from_secs_f64(i as f64 * interval);
            if due >= window.end || stop.is_set() {
                break;
            }
            continue_at(due, &stop);
            if stop.is_set() {
                break;
            }
            while tasks.try_join_next().is_some() {}
            if due >= window.start && !stop.count_step() {
                break;
            }
            match Arc::clone(&outstanding).try_acquire_owned() {
                Ok(permit) => {
                    let (env, stop) = (Arc::clone(&env), Arc::clone(&stop));
                    let shard = (i % SHARDS as u64) as usize;
                    tasks.spawn(async move {
                        let _permit = permit;
                        if let Flow::Stop(reason) = env.step(shard, due).await {
                            stop.stop(reason);
                        }
                    });
                }
                Err(_) => env.recorder.record_backlog(due),
            }
        }
        tasks
    });
    match schedule.await {
        Ok(tasks) => drain(tasks, deadline).await,
        Err(_) => 0,
    }
}

/// Sleeps in slices of [`SCHEDULER_SLICE`] until `due`, returning early once `stop` is set.
fn continue_at(due: Instant, stop: &Stop) {
    loop {
        let now = Instant::now();
        if now >= due || stop.is_set() {
            return;
        }
        std::thread::sleep((due - now).min(SCHEDULER_SLICE));
    }
}

/// Waits for `tasks` until `deadline`, then aborts the rest; returns how many were aborted.
async fn drain(mut tasks: JoinSet<()>, deadline: Instant) -> u64 {
    let finished = tokio::time::timeout_at(deadline.into(), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if finished.is_ok() {
        return 0;
    }
    let abandoned = tasks.len() as u64;
    tasks.abort_all();
    abandoned
}

/// CPU seconds this process used from the window's start to its end (or the early stop).
async fn window_cpu(window: Window, stop: Arc<Stop>) -> f64 {
    tokio::time::sleep_until(window.start.into()).await;
    let before = process_cpu_seconds();
    if !stop.is_set() {
        tokio::select! {
            () = tokio::time::sleep_until(window.end.into()) => {}
            () = stop.notify.notified() => {}
        }
    }
    match (before, process_cpu_seconds()) {
        (Some(a), Some(b)) => ((b - a) * 100.0).round() / 100.0,
        _ => 0.0,
    }
}

/// utime + stime of this process from `/proc/self/stat`, in seconds; `None` off Linux.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    cpu_seconds_of_stat(&stat)
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line, in seconds.
pub fn cpu_seconds_of_stat(stat: &str) -> Option<f64> {
    // The command name (field 2) may hold spaces and parentheses: count after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_times_after_the_command_name() {
        let stat = "4242 (load test) (x)) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0 9 0";
        assert_eq!(cpu_seconds_of_stat(stat), Some(4.0));
        assert!(process_cpu_seconds().is_some());
    }
}

//! The result of a run: the [`Summary`] built from the recorder's snapshot, printed as a
//! table and written as the `--json` document that `loadtest report` and the benchmark
//! scripts read.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::intervals::IntervalStats;
use super::scenarios::Scenario;
use super::stats::format_us;
use super::stats::{self, ErrorKind, Latency};
use super::{Mode, RunConfig};

/// The result of a run, as printed and as written by `--json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// Label of the run in reports.
    pub name: String,
    pub scenario: String,
    /// The URL the requests went to (the upstream for `direct` with `--upstream`).
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target2: Option<String>,
    /// `closed` or `open`.
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// `http1` or `http2`.
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub tls: bool,
    /// `keep-alive` or `per-request`.
    #[serde(default)]
    pub connection: String,
    /// The measured window in seconds (shorter than asked when the run stopped early).
    pub duration_s: f64,
    #[serde(default)]
    pub warmup_s: f64,
    /// Counted operations in the window: successful plus failed (backlog included).
    pub requests: u64,
    #[serde(default)]
    pub ok: u64,
    /// Successful operations per second.
    pub throughput: f64,
    /// Latency of the successful operations, in microseconds.
    pub latency_us: Latency,
    /// Failed operations by kind: connect, timeout, status_4xx, status_5xx, other, backlog.
    pub errors: BTreeMap<String, u64>,
    /// HTTP statuses among the failures.
    #[serde(default)]
    pub error_statuses: BTreeMap<String, u64>,
    /// The first message of each error kind.
    #[serde(default)]
    pub error_samples: BTreeMap<String, String>,
    /// Per operation (the blend of `mixed`, the phases of `otp` and `revoke`).
    #[serde(default)]
    pub operations: BTreeMap<String, OpSummary>,
    /// CPU time (user + system) this process used during the measured window.
    pub client_cpu_seconds: f64,
    /// Wall-clock start of the run, RFC 3339.
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_early: Option<String>,
    /// Steps still running at the drain deadline, abandoned unrecorded.
    #[serde(default)]
    pub abandoned: u64,
    /// With `--interval`: the run cut into intervals of that length, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub intervals: Vec<IntervalStats>,
}

/// The error kinds that occurred, as `kind n, kind n` (empty when none did).
pub fn nonzero_kinds(errors: &BTreeMap<String, u64>) -> String {
    errors
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One operation of a [`Summary`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpSummary {
    /// Whether it is part of `requests` and `throughput`.
    pub counted: bool,
    pub requests: u64,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub latency_us: Latency,
}

pub(super) fn summarize(
    config: &RunConfig,
    snapshot: &stats::Snapshot,
    measured: Duration,
    cpu_seconds: f64,
    started_at: SystemTime,
    stopped_early: Option<String>,
    abandoned: u64,
) -> Summary {
    let secs = measured.as_secs_f64();
    let ok = snapshot.ok();
    let kinds = |errors: &BTreeMap<ErrorKind, u64>| -> BTreeMap<String, u64> {
        errors
            .iter()
            .map(|(k, n)| (k.as_str().to_string(), *n))
            .collect()
    };
    let mut error_statuses = BTreeMap::new();
    let mut error_samples = BTreeMap::new();
    for op in snapshot.ops.iter().filter(|o| o.def.counted) {
        for (status, n) in &op.statuses {
            *error_statuses.entry(status.to_string()).or_insert(0) += n;
        }
        for (kind, message) in &op.samples {
            error_samples
                .entry(kind.as_str().to_string())
                .or_insert_with(|| format!("{}: {message}", op.def.name));
        }
    }
    let operations = snapshot
        .ops
        .iter()
        .map(|op| {
            (
                op.def.name.to_string(),
                OpSummary {
                    counted: op.def.counted,
                    requests: op.ok + op.failed(),
                    ok: op.ok,
                    errors: kinds(&op.errors),
                    latency_us: op.percentiles(),
                },
            )
        })
        .collect();
    let target = match (&config.upstream, config.scenario) {
        (Some(u), Scenario::Direct) => u,
        _ => &config.target,
    };
    let (mode, concurrency, rate) = match config.mode {
        Mode::Closed { concurrency } => ("closed", Some(concurrency as u64), None),
        Mode::Open { rate } => ("open", None, Some(rate)),
    };
    Summary {
        name: config.name.clone(),
        scenario: config.scenario.to_string(),
        target: target.to_string(),
        target2: config.target2.as_ref().map(ToString::to_string),
        mode: mode.into(),
        concurrency,
        rate,
        protocol: if config.client.http2 {
            "http2"
        } else {
            "http1"
        }
        .into(),
        tls: target.scheme_str() == Some("https"),
        connection: if config.client.per_request {
            "per-request"
        } else {
            "keep-alive"
        }
        .into(),
        duration_s: (secs * 1000.0).round() / 1000.0,
        warmup_s: config.warmup.as_secs_f64(),
        requests: snapshot.requests(),
        ok,
        throughput: if secs > 0.0 {
            (ok as f64 / secs * 10.0).round() / 10.0
        } else {
            0.0
        },
        latency_us: snapshot.latency(),
        errors: kinds(&snapshot.errors()),
        error_statuses,
        error_samples,
        operations,
        client_cpu_seconds: cpu_seconds,
        started_at: humantime::format_rfc3339_seconds(started_at).to_string(),
        stopped_early,
        abandoned,
        intervals: Vec::new(),
    }
}

impl Summary {
    /// Total failed operations.
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The human-readable result: one block of lines, then one line per operation when the
    /// scenario has several.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let load = match (self.concurrency, self.rate) {
            (Some(n), _) => format!("closed loop, concurrency {n}"),
            (_, Some(r)) => format!("open loop, {r} req/s"),
            _ => self.mode.clone(),
        };
        let protocol = match (self.protocol.as_str(), self.tls) {
            ("http2", true) => "HTTP/2 over TLS",
            ("http2", false) => "HTTP/2 (h2c)",
            (_, true) => "HTTP/1.1 over TLS",
            _ => "HTTP/1.1",
        };
        let lat = &self.latency_us;
        let errors = self
            .errors
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let per_request = if self.requests > 0 {
            format!(
                " ({:.1} µs per request)",
                self.client_cpu_seconds * 1e6 / self.requests as f64
            )
        } else {
            String::new()
        };
        let _ = writeln!(out, "run         {}", self.name);
        let _ = writeln!(out, "scenario    {} → {}", self.scenario, self.target);
        let _ = writeln!(out, "load        {load}, {protocol}, {}", self.connection);
        let _ = writeln!(
            out,
            "measured    {:.2} s after {:.2} s of warm-up",
            self.duration_s, self.warmup_s
        );
        let _ = writeln!(
            out,
            "requests    {} ({} ok, {} failed)",
            self.requests,
            self.ok,
            self.failed()
        );
        let _ = writeln!(out, "throughput  {:.1} req/s", self.throughput);
        let _ = writeln!(
            out,
            "latency     p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            format_us(lat.p50),
            format_us(lat.p90),
            format_us(lat.p99),
            format_us(lat.p999),
            format_us(lat.max)
        );
        let _ = writeln!(out, "errors      {errors}");
        if !self.error_statuses.is_empty() {
            let statuses = self
                .error_statuses
                .iter()
                .map(|(s, n)| format!("{s} ×{n}"))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(out, "statuses    {statuses}");
        }
        for (kind, sample) in &self.error_samples {
            let _ = writeln!(out, "  e.g. {kind}: {sample}");
        }
        let _ = writeln!(
            out,
            "client CPU  {:.2} s{per_request}",
            self.client_cpu_seconds
        );
        if let Some(reason) = &self.stopped_early {
            let _ = writeln!(out, "stopped     early: {reason}");
        }
        if let Some(line) = self.intervals_line() {
            let _ = writeln!(out, "intervals   {line}");
        }
        if self.abandoned > 0 {
            let _ = writeln!(
                out,
                "abandoned   {} steps still running at the deadline",
                self.abandoned
            );
        }
        if self.operations.len() > 1 {
            let _ = writeln!(
                out,
                "\n{:<12} {:>9} {:>9} {:>10} {:>10} {:>10} {:>10}  failed kinds",
                "operation", "requests", "failed", "p50", "p99", "p99.9", "max"
            );
            for (name, op) in &self.operations {
                let failed: u64 = op.errors.values().sum();
                let kinds = nonzero_kinds(&op.errors);
                let marker = if op.counted { "" } else { " (phase)" };
                let _ = writeln!(
                    out,
                    "{:<12} {:>9} {:>9} {:>10} {:>10} {:>10} {:>10}  {kinds}{marker}",
                    name,
                    op.requests,
                    failed,
                    format_us(op.latency_us.p50),
                    format_us(op.latency_us.p99),
                    format_us(op.latency_us.p999),
                    format_us(op.latency_us.max),
                );
            }
        }
        out
    }

    /// With intervals: how many, and the range of their throughput and p99.
    fn intervals_line(&self) -> Option<String> {
        let first = self.intervals.first()?;
        let (lo, hi) = self
            .intervals
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), i| {
                (lo.min(i.throughput), hi.max(i.throughput))
            });
        let p99 = self.intervals.iter().map(|i| i.latency_us.p99).max()?;
        Some(format!(
            "{} of {}: {lo:.0}–{hi:.0} req/s, worst p99 {}",
            self.intervals.len(),
            humantime::format_duration(Duration::from_secs_f64(first.duration_s)),
            format_us(p99)
        ))
    }

    /// Writes the summary as pretty JSON to `path`.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn write_json(&self, path: &std::path::Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self).context("serializing the summary")?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("writing {} (--json)", path.display()))
    }
}

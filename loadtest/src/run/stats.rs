//! What a run measured: HDR latency histograms per operation, errors by kind, and the counters
//! the progress line reads. Only operations that started inside the measured window (after
//! the warm-up, before the end) are recorded; everything else only moves the live counters.
//! With intervals on, the counted operations also go into the current interval (by the time
//! they finished), which [`Recorder::take_interval`] hands over and resets.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency a histogram holds, in microseconds (one minute); longer ones saturate.
pub const MAX_LATENCY_US: u64 = 60_000_000;
/// Significant decimal digits every histogram keeps.
const SIGNIFICANT_DIGITS: u8 = 3;
/// Independent locks the recording tasks spread over, so they rarely wait on each other.
pub const SHARDS: usize = 16;

/// A latency in microseconds for people: `850 µs`, `1.25 ms`, `2.50 s`.
pub fn format_us(us: u64) -> String {
    match us {
        0..1_000 => format!("{us} µs"),
        1_000..1_000_000 => format!("{:.2} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

/// Why an operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// TCP connect, TLS handshake or HTTP handshake failed.
    Connect,
    /// The request (or the step, e.g. waiting for a mail) took longer than its timeout.
    Timeout,
    /// The answer was a 4xx the scenario did not expect.
    Status4xx,
    /// The answer was a 5xx.
    Status5xx,
    /// Anything else: reset connections, unreadable bodies, unexpected answers.
    Other,
    /// Open loop only: the request was due while too many were outstanding, so it was not sent.
    Backlog,
}

impl ErrorKind {
    /// Every kind, in report order.
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::Status4xx,
        ErrorKind::Status5xx,
        ErrorKind::Other,
        ErrorKind::Backlog,
    ];

    /// The key in the JSON report: `connect`, `timeout`, `status_4xx`, `status_5xx`, `other`,
    /// `backlog`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Status4xx => "status_4xx",
            ErrorKind::Status5xx => "status_5xx",
            ErrorKind::Other => "other",
            ErrorKind::Backlog => "backlog",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One failed operation: its kind, the HTTP status when there was one, and a short message
/// (the first of each kind is kept as a sample for the report).
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: ErrorKind,
    pub status: Option<u16>,
    pub message: String,
}

impl Failure {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            status: None,
            message: message.into(),
        }
    }

    /// A response with a status the scenario did not expect: 4xx, 5xx, or `other` for the rest.
    pub fn status(status: u16, context: &str) -> Failure {
        let kind = match status {
            400..=499 => ErrorKind::Status4xx,
            500..=599 => ErrorKind::Status5xx,
            _ => ErrorKind::Other,
        };
        Failure {
            kind,
            status: Some(status),
            message: format!("{context}: unexpected status {status}"),
        }
    }
}

/// An operation a scenario records. `counted` operations make up the run's requests,
/// throughput and headline latency; the others (phases of a compound step) are reported
/// beside them.
#[derive(Debug, Clone, Copy)]
pub struct OpDef {
    pub name: &'static str,
    pub counted: bool,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    #[serde(default)]
    pub mean: f64,
}

impl Latency {
    /// The percentiles of a histogram of microseconds.
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: (h.mean() * 10.0).round() / 10.0,
        }
    }
}

/// Everything measured for one operation, merged over the shards.
#[derive(Debug, Clone)]
pub struct OpSnapshot {
    pub def: OpDef,
    pub ok: u64,
    pub errors: BTreeMap<ErrorKind, u64>,
    pub statuses: BTreeMap<u16, u64>,
    pub samples: BTreeMap<ErrorKind, String>,
    pub latency: Histogram<u64>,
}

impl OpSnapshot {
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn percentiles(&self) -> Latency {
        Latency::of(&self.latency)
    }
}

/// The whole measured window: every operation, plus open-loop requests never sent.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub ops: Vec<OpSnapshot>,
    pub backlog: u64,
}

impl Snapshot {
    /// Successful counted operations.
    pub fn ok(&self) -> u64 {
        self.ops
            .iter()
            .filter(|o| o.def.counted)
            .map(|o| o.ok)
            .sum()
    }

    /// Errors of counted operations by kind, backlog included; every kind is present.
    pub fn errors(&self) -> BTreeMap<ErrorKind, u64> {
        let mut out: BTreeMap<ErrorKind, u64> = ErrorKind::ALL.iter().map(|k| (*k, 0)).collect();
        for op in self.ops.iter().filter(|o| o.def.counted) {
            for (kind, n) in &op.errors {
                *out.entry(*kind).or_default() += n;
            }
        }
        *out.entry(ErrorKind::Backlog).or_default() += self.backlog;
        out
    }

    /// Counted operations that finished (ok or failed), plus the backlog.
    pub fn requests(&self) -> u64 {
        self.ok() + self.errors().values().sum::<u64>()
    }

    /// Latency of the successful counted operations, merged.
    pub fn latency(&self) -> Latency {
        Latency::of(&merge(
            self.ops
                .iter()
                .filter(|o| o.def.counted)
                .map(|o| &o.latency),
        ))
    }
}

/// A latency as the histograms record it: whole microseconds, at least 1.
pub fn micros(latency: Duration) -> u64 {
    u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// An empty latency histogram (microseconds, 1 µs to [`MAX_LATENCY_US`]).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGNIFICANT_DIGITS)
        .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"))
}

fn merge<'a>(hists: impl Iterator<Item = &'a Histogram<u64>>) -> Histogram<u64> {
    let mut out = new_histogram();
    for h in hists {
        // Same bounds everywhere, so adding cannot fail.
        let _ = out.add(h);
    }
    out
}

/// The counted operations that finished since the last [`Recorder::take_interval`].
struct IntervalData {
    ok: u64,
    failed: u64,
    latency: Histogram<u64>,
}

/// What one interval measured, over every shard.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IntervalSnapshot {
    pub ok: u64,
    /// Failed counted operations, backlog included.
    pub failed: u64,
    /// Latency of the successful ones.
    pub latency: Latency,
}

/// One lock's worth of the recorder: every operation's data, and the current interval's.
struct Shard {
    ops: Vec<OpData>,
    interval: Option<IntervalData>,
}

struct OpData {
    ok: u64,
    errors: BTreeMap<ErrorKind, u64>,
    statuses: BTreeMap<u16, u64>,
    samples: BTreeMap<ErrorKind, String>,
    latency: Histogram<u64>,
}

impl OpData {
    fn new() -> OpData {
        OpData {
            ok: 0,
            errors: BTreeMap::new(),
            statuses: BTreeMap::new(),
            samples: BTreeMap::new(),
            latency: new_histogram(),
        }
    }
}

/// Collects the outcome of every operation of a run. Shared by all tasks; each records into
/// the shard it names.
pub struct Recorder {
    ops: &'static [OpDef],
    window_start: Instant,
    window_end: Instant,
    shards: Box<[Mutex<Shard>]>,
    backlog: AtomicU64,
    interval_backlog: AtomicU64,
    finished: AtomicU64,
    failed: AtomicU64,
}

impl Recorder {
    /// A recorder for `ops` that keeps operations started in `[window_start, window_end)`.
    pub fn new(ops: &'static [OpDef], window_start: Instant, window_end: Instant) -> Recorder {
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    ops: ops.iter().map(|_| OpData::new()).collect(),
                    interval: None,
                })
            })
            .collect();
        Recorder {
            ops,
            window_start,
            window_end,
            shards,
            backlog: AtomicU64::new(0),
            interval_backlog: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// The same recorder, also keeping per-interval figures for [`Recorder::take_interval`].
    pub fn with_intervals(mut self) -> Recorder {
        for shard in self.shards.iter_mut() {
            let shard = shard.get_mut().unwrap_or_else(|p| p.into_inner());
            shard.interval = Some(IntervalData {
                ok: 0,
                failed: 0,
                latency: new_histogram(),
            });
        }
        self
    }

    /// Whether an operation started at `started` is part of the measurement.
    pub fn in_window(&self, started: Instant) -> bool {
        started >= self.window_start && started < self.window_end
    }

    /// Records operation `op` (an index into the ops given to [`Recorder::new`]) started at
    /// `started`: its latency when it succeeded, its failure otherwise.
    pub fn record(
        &self,
        shard: usize,
        op: usize,
        started: Instant,
        outcome: Result<Duration, &Failure>,
    ) {
        let Some(def) = self.ops.get(op) else { return };
        if def.counted {
            self.finished.fetch_add(1, Ordering::Relaxed);
            if outcome.is_err() {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        if !self.in_window(started) {
            return;
        }
        let mut shard = self.shards[shard % SHARDS]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let outcome = outcome.map(micros);
        if let (true, Some(interval)) = (def.counted, shard.interval.as_mut()) {
            match outcome {
                Ok(us) => {
                    interval.ok += 1;
                    interval.latency.saturating_record(us);
                }
                Err(_) => interval.failed += 1,
            }
        }
        let data = &mut shard.ops[op];
        match outcome {
            Ok(us) => {
                data.ok += 1;
                data.latency.saturating_record(us);
            }
            Err(failure) => {
                *data.errors.entry(failure.kind).or_default() += 1;
                if let Some(status) = failure.status {
                    *data.statuses.entry(status).or_default() += 1;
                }
                data.samples
                    .entry(failure.kind)
                    .or_insert_with(|| failure.message.clone());
            }
        }
    }

    /// Records an open-loop request that was due at `scheduled` but not sent.
    pub fn record_backlog(&self, scheduled: Instant) {
        self.finished.fetch_add(1, Ordering::Relaxed);
        self.failed.fetch_add(1, Ordering::Relaxed);
        if self.in_window(scheduled) {
            self.backlog.fetch_add(1, Ordering::Relaxed);
            self.interval_backlog.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// What finished since the last call (or the start), and starts the next interval;
    /// `None` unless the recorder was made [`Recorder::with_intervals`].
    pub fn take_interval(&self) -> Option<IntervalSnapshot> {
        let mut ok = 0;
        let mut failed = 0;
        let mut merged = new_histogram();
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let interval = shard.interval.as_mut()?;
            ok += interval.ok;
            failed += interval.failed;
            let _ = merged.add(&interval.latency);
            interval.ok = 0;
            interval.failed = 0;
            interval.latency.reset();
        }
        failed += self.interval_backlog.swap(0, Ordering::Relaxed);
        Some(IntervalSnapshot {
            ok,
            failed,
            latency: Latency::of(&merged),
        })
    }

    /// Counted operations finished so far and how many of them failed, warm-up included.
    pub fn live_counts(&self) -> (u64, u64) {
        (
            self.finished.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    /// The p99 in microseconds of the counted operations measured so far.
    pub fn live_p99(&self) -> Option<u64> {
        let mut merged = new_histogram();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for (def, data) in self.ops.iter().zip(shard.ops.iter()) {
                if def.counted {
                    let _ = merged.add(&data.latency);
                }
            }
        }
        (!merged.is_empty()).then(|| merged.value_at_quantile(0.99))
    }

    /// Everything measured in the window so far.
    pub fn snapshot(&self) -> Snapshot {
        let mut ops: Vec<OpSnapshot> = self
            .ops
            .iter()
            .map(|def| OpSnapshot {
                def: *def,
                ok: 0,
                errors: BTreeMap::new(),
                statuses: BTreeMap::new(),
                samples: BTreeMap::new(),
                latency: new_histogram(),
            })
            .collect();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for (out, data) in ops.iter_mut().zip(shard.ops.iter()) {
                out.ok += data.ok;
                for (k, n) in &data.errors {
                    *out.errors.entry(*k).or_default() += n;
                }
                for (s, n) in &data.statuses {
                    *out.statuses.entry(*s).or_default() += n;
                }
                for (k, m) in &data.samples {
                    out.samples.entry(*k).or_insert_with(|| m.clone());
                }
                let _ = out.latency.add(&data.latency);
            }
        }
        Snapshot {
            ops,
            backlog: self.backlog.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPS: &[OpDef] = &[
        OpDef {
            name: "main",
            counted: true,
        },
        OpDef {
            name: "phase",
            counted: false,
        },
    ];

    #[test]
    fn keeps_only_operations_started_inside_the_window() {
        let t0 = Instant::now();
        let rec = Recorder::new(
            OPS,
            t0 + Duration::from_secs(1),
            t0 + Duration::from_secs(2),
        );
        let ms = Duration::from_millis(1);
        rec.record(0, 0, t0, Ok(ms));
        rec.record(1, 0, t0 + Duration::from_millis(1500), Ok(ms));
        rec.record(2, 0, t0 + Duration::from_secs(2), Ok(ms));
        rec.record(
            3,
            0,
            t0 + Duration::from_millis(1200),
            Err(&Failure::status(503, "test")),
        );
        rec.record(4, 1, t0 + Duration::from_millis(1200), Ok(ms));
        rec.record_backlog(t0 + Duration::from_millis(1900));
        let snap = rec.snapshot();
        assert_eq!(snap.ok(), 1);
        assert_eq!(snap.requests(), 3);
        assert_eq!(snap.errors()[&ErrorKind::Status5xx], 1);
        assert_eq!(snap.errors()[&ErrorKind::Backlog], 1);
        assert_eq!(snap.ops[0].statuses[&503], 1);
        assert_eq!(snap.ops[1].ok, 1);
        assert_eq!(rec.live_counts(), (5, 2));
        let lat = snap.latency();
        assert!((999..=1001).contains(&lat.p50), "{lat:?}");
        assert_eq!(rec.take_interval(), None, "intervals are off by default");
    }

    #[test]
    fn hands_over_each_interval_once() {
        let t0 = Instant::now();
        let rec = Recorder::new(OPS, t0, t0 + Duration::from_secs(10)).with_intervals();
        let ms = Duration::from_millis(1);
        rec.record(0, 0, t0, Ok(ms));
        rec.record(7, 0, t0, Ok(ms * 3));
        rec.record(7, 1, t0, Ok(ms * 50));
        rec.record(2, 0, t0, Err(&Failure::status(502, "test")));
        rec.record_backlog(t0);
        let first = rec.take_interval().unwrap();
        assert_eq!((first.ok, first.failed), (2, 2), "{first:?}");
        assert!((2990..=3010).contains(&first.latency.max), "{first:?}");

        rec.record(3, 0, t0, Ok(ms * 2));
        let second = rec.take_interval().unwrap();
        assert_eq!((second.ok, second.failed), (1, 0), "{second:?}");
        assert!((1990..=2010).contains(&second.latency.p50), "{second:?}");
        let empty = rec.take_interval().unwrap();
        assert_eq!((empty.ok, empty.failed), (0, 0));
        assert_eq!(empty.latency, Latency::default());

        let total = rec.snapshot();
        assert_eq!(
            total.ok(),
            3,
            "the run's totals are kept apart from the intervals"
        );
    }
}

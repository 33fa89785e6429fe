//! `loadtest soak-report`: judges a soak and draws it. It reads the run (`loadtest run --json`
//! with `--interval`) and the samples of the process under load (`loadtest sample`), decides
//! whether the run had no errors and kept its memory and file descriptors flat, prints the
//! figures and checks as markdown ([`figures`]) and draws RSS, descriptors, throughput and
//! latency over time into one SVG ([`chart`]).
//!
//! "Flat", over the measured window of length L: the median of the last tenth is at most a
//! bound above the median of the second tenth (the first tenth is warm-up), and the
//! least-squares slope over the second half is at most a bound per minute (judged when that
//! half lasts two minutes or more). The descriptors
//! judged are those the process holds besides its client connections (all of them less the
//! gateway's own `gateway_connections` gauge): how many connections a client keeps open is
//! the client's choice, while a leaked descriptor, a socket of a finished connection
//! included, stays in that count.

pub mod chart;
pub mod figures;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::run::{Summary, nonzero_kinds};
use crate::sample::{self, Sample};

/// Default bound on RSS growth between the second and the last tenth, in percent.
pub const DEFAULT_MAX_RSS_GROWTH_PCT: f64 = 10.0;
/// Default bound on the RSS slope over the second half, in MiB per minute.
pub const DEFAULT_MAX_RSS_SLOPE: f64 = 0.5;
/// Default bound on the growth of open file descriptors (client connections excluded) between
/// the same tenths.
pub const DEFAULT_MAX_FD_GROWTH: f64 = 16.0;
/// Default bound on their slope over the second half, per minute.
pub const DEFAULT_MAX_FD_SLOPE: f64 = 2.0;
/// Fewest samples each judged tenth must hold.
const MIN_SAMPLES_PER_TENTH: usize = 3;
/// Share of the expected samples the window must hold (a gap means the sampler or the
/// process stopped).
const MIN_COVERAGE: f64 = 0.8;
/// Shortest second half whose slope is judged: over less, one pooled connection more or a
/// step of the allocator reads as a steep slope per minute. Growth is judged at any length.
const MIN_SLOPE_SPAN_S: f64 = 120.0;

/// `loadtest soak-report`: the command line.
#[derive(Debug, clap::Args)]
pub struct SoakReportArgs {
    /// The run: `loadtest run --json FILE --interval 1s`.
    #[arg(long, value_name = "FILE")]
    pub run: PathBuf,
    /// The samples of the process under load: `loadtest sample --out FILE`.
    #[arg(long, value_name = "FILE")]
    pub samples: PathBuf,
    /// Where to write the chart.
    #[arg(long, value_name = "OUT.svg")]
    pub svg: PathBuf,
    /// Also write the figures and checks (the markdown printed) to FILE.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Title above the chart.
    #[arg(long, default_value = "Soak")]
    pub title: String,
    /// Most RSS growth allowed, last tenth over second tenth, in percent.
    #[arg(long, default_value_t = DEFAULT_MAX_RSS_GROWTH_PCT, value_name = "PCT")]
    pub max_rss_growth_pct: f64,
    /// Most RSS slope allowed over the second half, in MiB per minute.
    #[arg(long, default_value_t = DEFAULT_MAX_RSS_SLOPE, value_name = "MIB_PER_MIN")]
    pub max_rss_slope: f64,
    /// Most growth of open file descriptors (client connections excluded) allowed, last
    /// tenth over second tenth.
    #[arg(long, default_value_t = DEFAULT_MAX_FD_GROWTH, value_name = "N")]
    pub max_fd_growth: f64,
    /// Most slope of those descriptors allowed over the second half, per minute.
    #[arg(long, default_value_t = DEFAULT_MAX_FD_SLOPE, value_name = "N_PER_MIN")]
    pub max_fd_slope: f64,
    /// Report RSS without judging it (for runs too short to get past the cache's warm-up).
    #[arg(long)]
    pub no_rss_check: bool,
}

/// The bounds a soak is judged against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_rss_growth_pct: f64,
    pub max_rss_slope: f64,
    pub max_fd_growth: f64,
    pub max_fd_slope: f64,
    pub check_rss: bool,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_rss_growth_pct: DEFAULT_MAX_RSS_GROWTH_PCT,
            max_rss_slope: DEFAULT_MAX_RSS_SLOPE,
            max_fd_growth: DEFAULT_MAX_FD_GROWTH,
            max_fd_slope: DEFAULT_MAX_FD_SLOPE,
            check_rss: true,
        }
    }
}

impl SoakReportArgs {
    /// Checks the bounds.
    ///
    /// # Errors
    /// A bound that is negative or not a number.
    pub fn validate(&self) -> anyhow::Result<Limits> {
        for (flag, v) in [
            ("--max-rss-growth-pct", self.max_rss_growth_pct),
            ("--max-rss-slope", self.max_rss_slope),
            ("--max-fd-growth", self.max_fd_growth),
            ("--max-fd-slope", self.max_fd_slope),
        ] {
            if !v.is_finite() || v < 0.0 {
                bail!("{flag} must be a number ≥ 0");
            }
        }
        Ok(Limits {
            max_rss_growth_pct: self.max_rss_growth_pct,
            max_rss_slope: self.max_rss_slope,
            max_fd_growth: self.max_fd_growth,
            max_fd_slope: self.max_fd_slope,
            check_rss: !self.no_rss_check,
        })
    }
}

/// How one series moved over the window: medians of the second and the last tenth, the
/// least-squares slope over the second half, and the largest value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trend {
    pub start: f64,
    pub end: f64,
    pub max: f64,
    /// Per minute.
    pub slope: f64,
}

impl Trend {
    pub fn growth(&self) -> f64 {
        self.end - self.start
    }

    pub fn growth_pct(&self) -> f64 {
        if self.start > 0.0 {
            100.0 * self.growth() / self.start
        } else {
            0.0
        }
    }
}

/// One judged property.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: &'static str,
    pub measured: String,
    pub limit: String,
    /// `None`: reported, not judged.
    pub pass: Option<bool>,
}

/// The process before the load began.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Idle {
    pub rss_mib: f64,
    pub fds: f64,
}

/// CPU time the process used over the sampled part of the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuUse {
    pub seconds: f64,
    /// Average cores busy.
    pub cores: f64,
    /// CPU time per successful request, in microseconds.
    pub us_per_request: f64,
}

/// Everything judged and measured about a soak.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The measured window: its start on the wall clock (ms since the Unix epoch) and length.
    pub window: Window,
    /// Samples inside the window, and the median time between samples in seconds.
    pub samples: usize,
    pub every_s: f64,
    /// RSS in MiB; `None` (like the other trends) when the window holds too few samples.
    pub rss: Option<Trend>,
    /// Every open descriptor (reported).
    pub fds: Option<Trend>,
    /// Open descriptors less client connections (judged).
    pub own_fds: Option<Trend>,
    pub threads: Option<Trend>,
    pub idle: Option<Idle>,
    pub cpu: Option<CpuUse>,
    /// The machine's one-minute load average over the window: lowest, median, highest.
    pub load: Option<(f64, f64, f64)>,
    pub checks: Vec<Check>,
    /// What the checks were judged against.
    pub limits: Limits,
}

impl Verdict {
    /// Whether every judged check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.pass != Some(false))
    }

    /// The names of the checks that failed.
    pub fn failures(&self) -> Vec<&'static str> {
        self.checks
            .iter()
            .filter(|c| c.pass == Some(false))
            .map(|c| c.name)
            .collect()
    }
}

/// The measured window of a run, from its intervals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub start_ms: f64,
    pub len_s: f64,
}

impl Window {
    /// The window of `run`, which must have intervals.
    ///
    /// # Errors
    /// A run without intervals.
    pub fn of(run: &Summary) -> anyhow::Result<Window> {
        let (Some(first), Some(last)) = (run.intervals.first(), run.intervals.last()) else {
            bail!("the run has no intervals: run `loadtest run` with --interval");
        };
        let start_ms = first.unix_ms as f64 - first.duration_s * 1e3;
        Ok(Window {
            start_ms,
            len_s: (last.unix_ms as f64 - start_ms) / 1e3,
        })
    }

    /// Seconds from the window's start to `sample`.
    pub fn t(&self, sample: &Sample) -> f64 {
        (sample.unix_ms as f64 - self.start_ms) / 1e3
    }

    /// Whether `t` (seconds into the window) falls in `[from, to)` tenths of it (the last
    /// tenth includes the end).
    fn within(&self, t: f64, from: f64, to: f64) -> bool {
        let end = if to >= 10.0 { f64::INFINITY } else { to };
        t >= from * self.len_s / 10.0 && t < end * self.len_s / 10.0 && t <= self.len_s
    }
}

/// Reads the run and the samples, writes the chart and the markdown, prints the markdown.
///
/// # Errors
/// Unreadable or malformed inputs, a run without intervals, a chart that cannot be written,
/// or a failed check (named).
pub fn execute(args: &SoakReportArgs, limits: Limits) -> anyhow::Result<()> {
    let run = load_run(&args.run)?;
    let samples = sample::load(&args.samples)?;
    let verdict = judge(&run, &samples, limits)?;
    chart::render_svg(&run, &samples, &verdict, &args.svg, &args.title)?;
    let text = figures::markdown(&run, &samples, &verdict);
    if let Some(path) = &args.markdown {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    print!("{text}");
    if !verdict.passed() {
        bail!("soak failed: {}", verdict.failures().join(", "));
    }
    Ok(())
}

fn load_run(path: &Path) -> anyhow::Result<Summary> {
    let runs = crate::report::load(&[path.to_path_buf()])?;
    let run = runs.into_iter().next().context("no run")?;
    Window::of(&run).with_context(|| path.display().to_string())?;
    Ok(run)
}

/// Open descriptors besides the client connections the gateway reports (all of them when it
/// reports none).
pub fn own_fds(s: &Sample) -> f64 {
    s.fds as f64 - s.connections.unwrap_or(0.0)
}

/// Judges `run` and `samples` against `limits`.
///
/// # Errors
/// A run without intervals.
pub fn judge(run: &Summary, samples: &[Sample], limits: Limits) -> anyhow::Result<Verdict> {
    let window = Window::of(run)?;
    let inside: Vec<&Sample> = samples
        .iter()
        .filter(|s| window.within(window.t(s), 0.0, 10.0))
        .collect();
    let every_s = median(
        &samples
            .windows(2)
            .map(|w| (w[1].unix_ms as f64 - w[0].unix_ms as f64) / 1e3)
            .collect::<Vec<_>>(),
    )
    .unwrap_or(1.0);
    let trend_of = |f: fn(&Sample) -> f64| {
        let points: Vec<(f64, f64)> = inside.iter().map(|s| (window.t(s), f(s))).collect();
        trend(&points, window.len_s)
    };
    let rss = trend_of(|s| s.rss_kib as f64 / 1024.0);
    let own = trend_of(own_fds);
    let coverage = coverage_check(&window, &inside, every_s);
    let mut checks = vec![errors_check(run), coverage.clone()];
    if let (Some(rss), Some(own), Some(true)) = (rss, own, coverage.pass) {
        let slopes = window.len_s / 2.0 >= MIN_SLOPE_SPAN_S;
        checks.extend(bound_checks(&rss, &own, &limits, slopes));
    }
    Ok(Verdict {
        window,
        samples: inside.len(),
        every_s,
        rss,
        fds: trend_of(|s| s.fds as f64),
        own_fds: own,
        threads: trend_of(|s| s.threads as f64),
        idle: idle(&window, samples),
        cpu: cpu_use(&window, &inside, run),
        load: median(&inside.iter().map(|s| s.load1).collect::<Vec<_>>()).map(|m| {
            let (lo, hi) = inside.iter().fold((f64::MAX, f64::MIN), |(lo, hi), s| {
                (lo.min(s.load1), hi.max(s.load1))
            });
            (lo, m, hi)
        }),
        checks,
        limits,
    })
}

fn errors_check(run: &Summary) -> Check {
    let kinds = nonzero_kinds(&run.errors);
    let mut measured = format!("{} failed of {} requests", run.failed(), run.requests);
    if !kinds.is_empty() {
        let _ = write!(measured, " ({kinds})");
    }
    if run.abandoned > 0 {
        let _ = write!(measured, ", {} abandoned", run.abandoned);
    }
    if let Some(reason) = &run.stopped_early {
        let _ = write!(measured, ", stopped early: {reason}");
    }
    Check {
        name: "errors",
        measured,
        limit: "0 failed, 0 abandoned, not stopped early, some requests".into(),
        pass: Some(
            run.failed() == 0 && run.abandoned == 0 && run.stopped_early.is_none() && run.ok > 0,
        ),
    }
}

/// The samples cover the window: most of the expected ones, enough in each compared tenth,
/// and up to its end (a gap means the process or the sampler stopped).
fn coverage_check(window: &Window, inside: &[&Sample], every_s: f64) -> Check {
    let in_tenth = |k: f64| {
        inside
            .iter()
            .filter(|s| window.within(window.t(s), k, k + 1.0))
            .count()
    };
    let expected = (window.len_s / every_s).floor().max(1.0);
    let last_t = inside.last().map_or(0.0, |s| window.t(s));
    let covered = inside.len() as f64 >= MIN_COVERAGE * expected
        && in_tenth(1.0) >= MIN_SAMPLES_PER_TENTH
        && in_tenth(9.0) >= MIN_SAMPLES_PER_TENTH
        && last_t >= window.len_s - 2.0 * every_s - 1.0;
    Check {
        name: "samples",
        measured: format!(
            "{} in {:.0} s, every {:.2} s, last at {:.1} s",
            inside.len(),
            window.len_s,
            every_s,
            last_t
        ),
        limit: format!(
            "≥ {:.0} % of {expected:.0}, ≥ {MIN_SAMPLES_PER_TENTH} per compared tenth, up to the end",
            MIN_COVERAGE * 100.0
        ),
        pass: Some(covered),
    }
}

/// Growth and slope of RSS (judged unless `limits.check_rss` is off) and of the descriptors;
/// the slopes only when `slopes` (the second half is long enough).
fn bound_checks(rss: &Trend, fds: &Trend, limits: &Limits, slopes: bool) -> Vec<Check> {
    let per_min = |bound: String| {
        if slopes {
            bound
        } else {
            format!("{bound}, judged from a second half of {MIN_SLOPE_SPAN_S:.0} s up")
        }
    };
    let rss_growth = format!(
        "{:.1} → {:.1} MiB ({:+.1} MiB, {:+.1} %)",
        rss.start,
        rss.end,
        rss.growth(),
        rss.growth_pct()
    );
    let fd_growth = format!("{:.0} → {:.0} ({:+.0})", fds.start, fds.end, fds.growth());
    // name, measured, limit, within the limit, judged
    let bounds = [
        (
            "rss growth",
            rss_growth,
            format!("≤ {:+.1} %", limits.max_rss_growth_pct),
            rss.growth_pct() <= limits.max_rss_growth_pct,
            limits.check_rss,
        ),
        (
            "rss slope",
            format!("{:+.3} MiB/min", rss.slope),
            per_min(format!("≤ {:.3} MiB/min", limits.max_rss_slope)),
            rss.slope <= limits.max_rss_slope,
            limits.check_rss && slopes,
        ),
        (
            "fd growth",
            fd_growth,
            format!("≤ {:+.0}", limits.max_fd_growth),
            fds.growth() <= limits.max_fd_growth,
            true,
        ),
        (
            "fd slope",
            format!("{:+.2} /min", fds.slope),
            per_min(format!("≤ {:.2} /min", limits.max_fd_slope)),
            fds.slope <= limits.max_fd_slope,
            slopes,
        ),
    ];
    bounds
        .into_iter()
        .map(|(name, measured, limit, within, judged)| Check {
            name,
            measured,
            limit,
            pass: judged.then_some(within),
        })
        .collect()
}

/// Median RSS and descriptors of the samples before the window.
fn idle(window: &Window, samples: &[Sample]) -> Option<Idle> {
    let before: Vec<&Sample> = samples.iter().filter(|s| window.t(s) < 0.0).collect();
    let of = |f: fn(&Sample) -> f64| median(&before.iter().map(|s| f(s)).collect::<Vec<_>>());
    Some(Idle {
        rss_mib: of(|s| s.rss_kib as f64 / 1024.0)?,
        fds: of(|s| s.fds as f64)?,
    })
}

/// CPU time between the first and the last sample of the window, per second and per request.
fn cpu_use(window: &Window, inside: &[&Sample], run: &Summary) -> Option<CpuUse> {
    let (first, last) = (inside.first()?, inside.last()?);
    let span = window.t(last) - window.t(first);
    if span <= 0.0 {
        return None;
    }
    let seconds = last.cpu_s - first.cpu_s;
    let requests = run.throughput * span;
    Some(CpuUse {
        seconds,
        cores: seconds / span,
        us_per_request: if requests > 0.0 {
            seconds * 1e6 / requests
        } else {
            0.0
        },
    })
}

/// The trend of `points` (seconds into the window, value) over a window of `window_s`.
pub fn trend(points: &[(f64, f64)], window_s: f64) -> Option<Trend> {
    let between = |a: f64, b: f64| -> Vec<(f64, f64)> {
        points
            .iter()
            .copied()
            .filter(|(t, _)| *t >= a * window_s && *t < b * window_s)
            .collect()
    };
    let values = |ps: &[(f64, f64)]| ps.iter().map(|p| p.1).collect::<Vec<_>>();
    let start = median(&values(&between(0.1, 0.2)))?;
    let end = median(&values(&between(0.9, 1.0 + f64::EPSILON)))?;
    let slope = slope(&between(0.5, 1.0 + f64::EPSILON))? * 60.0;
    let max = points.iter().map(|p| p.1).fold(f64::MIN, f64::max);
    Some(Trend {
        start,
        end,
        max,
        slope,
    })
}

/// The middle value (the mean of the two middle ones for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The least-squares slope of `points` (y per unit of x); `None` for fewer than two distinct x.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T0_MS: u64 = 1_700_000_000_000;

    /// A run of `secs` one-second intervals at 100 req/s starting at `T0_MS`, with `failed`
    /// failures of kind status_5xx.
    fn run(secs: u64, failed: u64) -> Summary {
        let interval = |i: u64| {
            json!({"t_s": i as f64, "unix_ms": T0_MS + i * 1000, "duration_s": 1.0, "ok": 100,
                   "failed": 0, "throughput": 100.0,
                   "latency_us": {"p50": 800, "p90": 900, "p99": 1500, "p999": 3000, "max": 4000}})
        };
        serde_json::from_value(json!({
            "name": "soak", "scenario": "mixed", "target": "http://127.0.0.1:1/x", "mode": "open",
            "rate": 100.0, "duration_s": secs as f64, "requests": secs * 100 + failed,
            "ok": secs * 100, "throughput": 100.0,
            "latency_us": {"p50": 800, "p90": 900, "p99": 1500, "p999": 3000, "max": 4000},
            "errors": {"connect": 0, "status_5xx": failed},
            "client_cpu_seconds": 1.0, "started_at": "2023-11-14T22:13:20Z",
            "intervals": (1..=secs).map(interval).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    /// One sample every `step_ms` from 5 s before the window to 2 s after it; `rss` and `fds`
    /// of the time into the window, in seconds.
    fn sampled(
        secs: i64,
        step_ms: i64,
        rss_mib: impl Fn(f64) -> f64,
        fds: impl Fn(f64) -> f64,
    ) -> Vec<Sample> {
        (-5000 / step_ms..=(secs * 1000 + 2000) / step_ms)
            .map(|i| {
                let ms = i * step_ms;
                let t = ms as f64 / 1e3;
                Sample {
                    unix_ms: (T0_MS as i64 + ms + 3) as u64,
                    rss_kib: (rss_mib(t) * 1024.0) as u64,
                    fds: fds(t) as u64,
                    threads: 4,
                    cpu_s: 100.0 + 0.25 * t,
                    load1: 0.5,
                    cache_entries: Some(1000.0),
                    connections: Some(8.0),
                }
            })
            .collect()
    }

    /// Deterministic wobble in [-1, 1].
    fn wobble(t: f64) -> f64 {
        (t * 0.7).sin()
    }

    #[test]
    fn medians_and_slopes() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        let line: Vec<(f64, f64)> = (0..10).map(|x| (x as f64, 2.0 * x as f64 + 1.0)).collect();
        assert!((slope(&line).unwrap() - 2.0).abs() < 1e-9);
        assert_eq!(slope(&[(1.0, 1.0)]), None);
        assert_eq!(slope(&[(1.0, 1.0), (1.0, 5.0)]), None);
    }

    #[test]
    fn a_flat_soak_passes() {
        let samples = sampled(
            600,
            1000,
            |t| 40.0 + 0.3 * wobble(t),
            |t| 30.0 + 2.0 * wobble(t),
        );
        let v = judge(&run(600, 0), &samples, Limits::default()).unwrap();
        assert!(v.passed(), "{:#?}", v.checks);
        assert_eq!(v.checks.len(), 6, "{:#?}", v.checks);
        let rss = v.rss.unwrap();
        assert!(
            (rss.start - 40.0).abs() < 0.5 && (rss.end - 40.0).abs() < 0.5,
            "{rss:?}"
        );
        assert!(rss.slope.abs() < 0.1, "{rss:?}");
        let idle = v.idle.unwrap();
        assert!((28.0..=32.0).contains(&idle.fds), "{idle:?}");
        let cpu = v.cpu.unwrap();
        assert!((cpu.cores - 0.25).abs() < 1e-6, "{cpu:?}");
        assert!((cpu.us_per_request - 2500.0).abs() < 1.0, "{cpu:?}");
        assert_eq!(v.samples, 600);
        assert!((v.every_s - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_leak_fails_every_check_it_breaks_and_names_them() {
        // 1 MiB and 6 descriptors more per minute.
        let samples = sampled(600, 1000, |t| 40.0 + t / 60.0, |t| 30.0 + t / 10.0);
        let v = judge(&run(600, 0), &samples, Limits::default()).unwrap();
        assert_eq!(
            v.failures(),
            ["rss growth", "rss slope", "fd growth", "fd slope"]
        );
        let rss = v.rss.unwrap();
        assert!((rss.slope - 1.0).abs() < 0.01, "{rss:?}");
        assert!((v.own_fds.unwrap().slope - 6.0).abs() < 0.1);
    }

    #[test]
    fn client_connections_do_not_count_as_leaked_descriptors() {
        // 30 more connections over the soak, each one descriptor: all of them in the gauge.
        let mut samples = sampled(600, 1000, |_| 40.0, |t| 30.0 + t / 20.0);
        for s in &mut samples {
            s.connections = Some(8.0 + (s.fds as f64 - 30.0).max(0.0));
        }
        let v = judge(&run(600, 0), &samples, Limits::default()).unwrap();
        assert!(v.passed(), "{:#?}", v.checks);
        assert!(v.fds.unwrap().growth() > 20.0, "all descriptors did grow");
        // The same descriptors, but not the gateway's connections any more: leaked.
        for s in &mut samples {
            s.connections = Some(8.0);
        }
        let v = judge(&run(600, 0), &samples, Limits::default()).unwrap();
        assert_eq!(v.failures(), ["fd growth", "fd slope"], "{:#?}", v.checks);
    }

    #[test]
    fn a_slow_leak_within_the_growth_bound_still_fails_on_its_slope() {
        let samples = sampled(600, 1000, |t| 100.0 + 0.8 * t / 60.0, |_| 30.0);
        let v = judge(&run(600, 0), &samples, Limits::default()).unwrap();
        assert_eq!(v.failures(), ["rss slope"], "{:#?}", v.checks);
    }

    #[test]
    fn errors_fail_the_soak_and_rss_can_be_reported_unjudged() {
        let samples = sampled(20, 250, |t| 20.0 + t, |_| 25.0);
        let limits = Limits {
            check_rss: false,
            ..Limits::default()
        };
        let v = judge(&run(20, 3), &samples, limits).unwrap();
        assert_eq!(v.failures(), ["errors"], "{:#?}", v.checks);
        assert!(
            v.checks[0].measured.contains("status_5xx 3"),
            "{:?}",
            v.checks[0]
        );
        let judged = |name: &str| v.checks.iter().find(|c| c.name == name).unwrap().pass;
        assert_eq!(judged("rss growth"), None);
        assert_eq!(judged("fd growth"), Some(true));
        assert_eq!(
            judged("fd slope"),
            None,
            "10 s are too short for a slope per minute"
        );
    }

    #[test]
    fn samples_that_stop_before_the_end_fail_the_soak() {
        let mut samples = sampled(600, 1000, |_| 40.0, |_| 30.0);
        samples.retain(|s| s.unix_ms < T0_MS + 300_000);
        let v = judge(&run(600, 0), &samples, Limits::default()).unwrap();
        assert_eq!(v.failures(), ["samples"], "{:#?}", v.checks);
        assert!(v.rss.is_none(), "no last tenth to compare");
        assert_eq!(v.checks.len(), 2, "nothing judged on half the samples");
    }

    #[test]
    fn writes_the_figures_and_draws_every_panel() {
        let run = run(60, 0);
        let samples = sampled(60, 1000, |t| 40.0 + 0.1 * wobble(t), |_| 30.0);
        let v = judge(&run, &samples, Limits::default()).unwrap();
        let text = figures::markdown(&run, &samples, &v);
        for needle in [
            "| errors | 0 failed of 6000 requests |",
            "p99.9 3.00 ms",
            "| open FDs, client connections excluded (judged) | 22 → 22 (+0)",
            "| open FDs, all | 30 → 30 (+0)",
            "| session cache entries (gauge) | 1000 → 1000 (+0)",
            "| gateway CPU | 14.8 s over the soak: 0.25 cores on average, 2500.0 µs per request |",
            "verdict: **pass**",
            "crossed by a steady leak of 87.4 bytes per request",
        ] {
            assert!(text.contains(needle), "{needle:?} in\n{text}");
        }
        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("soak.svg");
        chart::render_svg(&run, &samples, &v, &svg, "Soak test").unwrap();
        let drawn = std::fs::read_to_string(&svg).unwrap();
        for needle in [
            "Soak test",
            "RSS (MiB)",
            "Open FDs without client connections",
            "Throughput",
            "p99.9",
        ] {
            assert!(drawn.contains(needle), "the chart shows {needle}");
        }
    }
}

//! The soak's figures and checks as markdown: one table of what was measured, one of what
//! was judged, the smallest steady leak the slope bounds catch at the run's rate, and the
//! verdict. `scripts/soak.sh` puts it into `docs/reliability.md` as it is.

use std::fmt::Write as _;

use super::{Limits, Trend, Verdict, trend};
use crate::run::Summary;
use crate::run::stats::format_us;
use crate::sample::Sample;

/// The figures and checks as markdown.
pub fn markdown(run: &Summary, samples: &[Sample], v: &Verdict) -> String {
    let mut rows: Vec<(&str, String)> = Vec::new();
    let load = match (run.rate, run.concurrency) {
        (Some(r), _) => format!("open loop at {r} req/s"),
        (_, Some(c)) => format!("closed loop, concurrency {c}"),
        _ => run.mode.clone(),
    };
    rows.push((
        "load",
        format!(
            "`{}` scenario, {load}, {:.0} s measured",
            run.scenario, run.duration_s
        ),
    ));
    rows.push((
        "requests",
        format!(
            "{} ({} ok, {} failed), {:.1} req/s achieved",
            run.requests,
            run.ok,
            run.failed(),
            run.throughput
        ),
    ));
    let kinds: Vec<String> = run.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
    rows.push(("errors by kind", kinds.join(", ")));
    let lat = &run.latency_us;
    rows.push((
        "latency, whole run",
        format!(
            "p50 {}, p90 {}, p99 {}, p99.9 {}, max {}",
            format_us(lat.p50),
            format_us(lat.p90),
            format_us(lat.p99),
            format_us(lat.p999),
            format_us(lat.max)
        ),
    ));
    let (lo, hi) = run
        .intervals
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), i| {
            (lo.min(i.throughput), hi.max(i.throughput))
        });
    let p99s: Vec<u64> = run.intervals.iter().map(|i| i.latency_us.p99).collect();
    let mut sorted = p99s.clone();
    sorted.sort_unstable();
    rows.push((
        "per interval",
        format!(
            "{} intervals of {:.0} s: {lo:.0}–{hi:.0} req/s; p99 per interval: median {}, worst {}",
            run.intervals.len(),
            run.intervals.first().map_or(0.0, |i| i.duration_s),
            format_us(sorted.get(sorted.len() / 2).copied().unwrap_or(0)),
            format_us(sorted.last().copied().unwrap_or(0))
        ),
    ));
    for (name, op) in &run.operations {
        let failed: u64 = op.errors.values().sum();
        rows.push((
            name.as_str(),
            format!(
                "{} requests, {failed} failed, p50 {}, p99 {}, p99.9 {}",
                op.requests,
                format_us(op.latency_us.p50),
                format_us(op.latency_us.p99),
                format_us(op.latency_us.p999)
            ),
        ));
    }
    if let Some(idle) = v.idle {
        rows.push((
            "idle, before the load",
            format!("RSS {:.1} MiB, {:.0} open FDs", idle.rss_mib, idle.fds),
        ));
    }
    rows.push((
        "RSS",
        describe(v.rss, |r| {
            format!(
                "{:.1} MiB (median of the second tenth) → {:.1} MiB (median of the last tenth), \
                 {:+.1} MiB ({:+.1} %); slope over the second half {:+.3} MiB/min; max {:.1} MiB",
                r.start,
                r.end,
                r.growth(),
                r.growth_pct(),
                r.slope,
                r.max
            )
        }),
    ));
    rows.push((
        "open FDs, client connections excluded (judged)",
        describe(v.own_fds, counts),
    ));
    rows.push(("open FDs, all", describe(v.fds, counts)));
    let gauge = |f: fn(&Sample) -> Option<f64>| {
        let points: Vec<(f64, f64)> = samples
            .iter()
            .filter_map(|s| f(s).map(|g| (v.window.t(s), g)))
            .filter(|(t, _)| (0.0..=v.window.len_s).contains(t))
            .collect();
        describe(trend(&points, v.window.len_s), counts)
    };
    rows.push(("client connections (gauge)", gauge(|s| s.connections)));
    rows.push(("session cache entries (gauge)", gauge(|s| s.cache_entries)));
    rows.push(("threads", describe(v.threads, counts)));
    if let Some(cpu) = v.cpu {
        rows.push((
            "gateway CPU",
            format!(
                "{:.1} s over the soak: {:.2} cores on average, {:.1} µs per request",
                cpu.seconds, cpu.cores, cpu.us_per_request
            ),
        ));
    }
    if let Some((lo, med, hi)) = v.load {
        rows.push((
            "machine load average (1 min)",
            format!("median {med:.2}, lowest {lo:.2}, highest {hi:.2}"),
        ));
    }
    rows.push((
        "samples",
        format!("{} in the window, every {:.2} s", v.samples, v.every_s),
    ));

    let mut out = String::from("| figure | value |\n|---|---|\n");
    for (name, value) in rows {
        let _ = writeln!(out, "| {name} | {value} |");
    }
    out.push_str("\n| check | measured | limit | result |\n|---|---|---|---|\n");
    for c in &v.checks {
        let result = match c.pass {
            Some(true) => "pass",
            Some(false) => "**FAIL**",
            None => "not judged",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {result} |",
            c.name, c.measured, c.limit
        );
    }
    if let Some(line) = sensitivity(run, &v.limits) {
        let _ = writeln!(out, "\n{line}");
    }
    let verdict = if v.passed() {
        "**pass**".to_string()
    } else {
        format!("**FAIL** ({})", v.failures().join(", "))
    };
    let _ = writeln!(out, "\nverdict: {verdict}");
    out
}

fn describe(trend: Option<Trend>, f: impl Fn(&Trend) -> String) -> String {
    trend.map_or_else(|| "not measured (too few samples)".to_string(), |t| f(&t))
}

fn counts(t: &Trend) -> String {
    format!(
        "{:.0} → {:.0} ({:+.0}); slope over the second half {:+.2} /min; max {:.0}",
        t.start,
        t.end,
        t.growth(),
        t.slope,
        t.max
    )
}

/// The slope bounds as the smallest steady leak that breaks them at the run's throughput.
fn sensitivity(run: &Summary, limits: &Limits) -> Option<String> {
    if run.throughput <= 0.0 || run.duration_s <= 0.0 {
        return None;
    }
    let per_min = run.throughput * 60.0;
    let bytes = limits.max_rss_slope * 1024.0 * 1024.0;
    let logins: u64 = ["login", "relogin"]
        .iter()
        .filter_map(|op| run.operations.get(*op))
        .map(|op| op.ok)
        .sum();
    let logins_per_min = logins as f64 / run.duration_s * 60.0;
    let mut line = format!(
        "At {:.0} requests/s the RSS slope bound ({:.2} MiB/min) is crossed by a steady leak of \
         {:.1} bytes per request",
        run.throughput,
        limits.max_rss_slope,
        bytes / per_min
    );
    if logins_per_min > 0.0 {
        let _ = write!(
            line,
            " or {:.0} bytes per login ({:.0} logins/min)",
            bytes / logins_per_min,
            logins_per_min
        );
    }
    let _ = write!(
        line,
        ", and the FD slope bound ({:.1}/min) by one descriptor kept per {:.0} requests.",
        limits.max_fd_slope,
        per_min / limits.max_fd_slope.max(f64::MIN_POSITIVE)
    );
    Some(line)
}

//! `loadtest sample`: watches one process (the gateway under a soak) at a fixed interval and
//! appends a CSV row per sample: resident memory and threads from `/proc/PID/status`, open
//! file descriptors from `/proc/PID/fd`, its CPU time from `/proc/PID/stat`, the machine's
//! load average, and, with `--metrics`, the cache-entry and connection gauges of the
//! gateway's Prometheus endpoint. Each row is flushed as it is
//! written, so a crash leaves every row before it; sampling ends when the process exits, at
//! `--duration`, or on the shutdown signal.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use http::{HeaderMap, Uri};
use tokio::time::MissedTickBehavior;

use crate::run::client::{Client, ClientOptions};
use crate::run::cpu_seconds_of_stat;

/// The CSV header `loadtest sample` writes and `loadtest soak-report` reads.
pub const CSV_HEADER: &str = "unix_ms,rss_kib,fds,threads,cpu_s,load1,cache_entries,connections";
/// Gauge of the sessions held in the gateway's validation cache.
const CACHE_ENTRIES_METRIC: &str = "gateway_session_cache_entries";
/// Gauge of the gateway's open client connections.
const CONNECTIONS_METRIC: &str = "gateway_connections";
/// Shortest `--every` accepted.
const MIN_EVERY: Duration = Duration::from_millis(100);

/// `loadtest sample`: the command line.
#[derive(Debug, clap::Args)]
pub struct SampleArgs {
    /// The process to watch.
    #[arg(long)]
    pub pid: u32,
    /// The gateway's metrics URL (its admin listener), e.g. http://127.0.0.1:9091/metrics.
    #[arg(long, value_name = "URL")]
    pub metrics: Option<String>,
    /// Time between samples.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub every: Duration,
    /// Stop after this long (default: when the process exits or on SIGINT/SIGTERM).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// The CSV file to write (header first, then one row per sample).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

impl SampleArgs {
    /// Checks the flags.
    ///
    /// # Errors
    /// An interval below 100 ms or a metrics URL that is not `http://`.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.every < MIN_EVERY {
            bail!("--every must be at least 100ms");
        }
        if let Some(url) = &self.metrics {
            let uri: Uri = url
                .parse()
                .with_context(|| format!("--metrics: {url:?} is not a URL"))?;
            if uri.scheme_str() != Some("http") || uri.host().is_none() {
                bail!("--metrics must be an http:// URL with a host");
            }
        }
        Ok(())
    }
}

/// One sample of the watched process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Wall-clock time of the sample, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// Resident set size (`VmRSS`) in KiB.
    pub rss_kib: u64,
    /// Entries of `/proc/PID/fd`.
    pub fds: u64,
    pub threads: u64,
    /// CPU time (user + system) the process has used, in seconds.
    pub cpu_s: f64,
    /// The machine's load average over the last minute (`/proc/loadavg`).
    pub load1: f64,
    /// `gateway_session_cache_entries`, when `--metrics` answered.
    pub cache_entries: Option<f64>,
    /// `gateway_connections`, when `--metrics` answered.
    pub connections: Option<f64>,
}

impl Sample {
    /// The CSV row, without its line end.
    pub fn csv(&self) -> String {
        let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        format!(
            "{},{},{},{},{},{},{},{}",
            self.unix_ms,
            self.rss_kib,
            self.fds,
            self.threads,
            self.cpu_s,
            self.load1,
            opt(self.cache_entries),
            opt(self.connections)
        )
    }

    /// Parses a row written by [`Sample::csv`].
    ///
    /// # Errors
    /// A row without eight fields or with a field that is not a number.
    pub fn parse_csv(row: &str) -> anyhow::Result<Sample> {
        let fields: Vec<&str> = row.trim().split(',').collect();
        if fields.len() != 8 {
            bail!("expected 8 fields ({CSV_HEADER}), found {}", fields.len());
        }
        let field = |i: usize| {
            let name = CSV_HEADER.split(',').nth(i).unwrap_or("?");
            (name, fields[i])
        };
        let int = |i: usize| -> anyhow::Result<u64> {
            let (name, v) = field(i);
            v.parse()
                .with_context(|| format!("{name} {v:?} is not a whole number"))
        };
        let num = |i: usize| -> anyhow::Result<f64> {
            let (name, v) = field(i);
            v.parse()
                .with_context(|| format!("{name} {v:?} is not a number"))
        };
        let opt = |i: usize| (!fields[i].is_empty()).then(|| num(i)).transpose();
        Ok(Sample {
            unix_ms: int(0)?,
            rss_kib: int(1)?,
            fds: int(2)?,
            threads: int(3)?,
            cpu_s: num(4)?,
            load1: num(5)?,
            cache_entries: opt(6)?,
            connections: opt(7)?,
        })
    }
}

/// Reads every row of a `loadtest sample` CSV file.
///
/// # Errors
/// An unreadable file, a missing or different header, or a malformed row (named by line).
pub fn load(path: &Path) -> anyhow::Result<Vec<Sample>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some(CSV_HEADER) {
        bail!(
            "{} is not a `loadtest sample` file (header {CSV_HEADER})",
            path.display()
        );
    }
    lines
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            Sample::parse_csv(line).with_context(|| format!("{} line {}", path.display(), i + 2))
        })
        .collect()
}

/// `VmRSS` (KiB) and `Threads` of a `/proc/PID/status` text.
pub fn parse_status(status: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("Threads:")?))
}

/// The sum of the samples of metric `name` (any labels) in a Prometheus text exposition;
/// `None` when it has none.
pub fn metric_sum(exposition: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            if !(rest.starts_with(' ') || rest.starts_with('{')) {
                return None;
            }
            l.split_whitespace().last()?.parse::<f64>().ok()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// The first field of `/proc/loadavg`: the load average over the last minute.
pub fn parse_loadavg(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// Reads the process's memory, threads, descriptors and CPU time; `None` once it is gone.
fn read_process(pid: u32) -> Option<(u64, u64, u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let (rss, threads) = parse_status(&status)?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let cpu = cpu_seconds_of_stat(&stat)?;
    Some((rss, fds, threads, cpu))
}

/// The metrics endpoint: a one-connection client and the path to ask for.
struct Metrics {
    client: Client,
    path: String,
}

impl Metrics {
    async fn new(url: &str, timeout: Duration) -> anyhow::Result<Metrics> {
        let uri: Uri = url.parse().context("--metrics")?;
        let options = ClientOptions {
            http2: false,
            ca_file: None,
            per_request: false,
            connections: 1,
            timeout,
        };
        let client = Client::new(&uri, &options).await.context("--metrics")?;
        let path = uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), ToString::to_string);
        Ok(Metrics { client, path })
    }

    /// The two gauges, or `(None, None)` when the endpoint did not answer 200.
    async fn read(&self) -> (Option<f64>, Option<f64>) {
        match self.client.get(&self.path, &HeaderMap::new()).await {
            Ok(reply) if reply.status.is_success() => {
                let text = String::from_utf8_lossy(&reply.body);
                (
                    metric_sum(&text, CACHE_ENTRIES_METRIC),
                    metric_sum(&text, CONNECTIONS_METRIC),
                )
            }
            _ => (None, None),
        }
    }
}

/// Samples `args.pid` until it exits, `args.duration` passes or `shutdown` completes; returns
/// how many rows were written.
///
/// # Errors
/// The output file cannot be written, the process does not exist at the start, or the
/// metrics URL does not resolve.
pub async fn run(args: &SampleArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<u64> {
    if read_process(args.pid).is_none() {
        bail!("process {} does not exist or cannot be read", args.pid);
    }
    let metrics = match &args.metrics {
        Some(url) => Some(Metrics::new(url, args.every.min(Duration::from_secs(2))).await?),
        None => None,
    };
    let file = File::create(&args.out)
        .with_context(|| format!("creating {} (--out)", args.out.display()))?;
    let mut out = BufWriter::new(file);
    write_line(&mut out, CSV_HEADER, &args.out)?;

    let until = args.duration.map(|d| Instant::now() + d);
    let mut ticks = tokio::time::interval(args.every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut rows = 0;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = ticks.tick() => {}
        }
        if until.is_some_and(|u| Instant::now() >= u) {
            break;
        }
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let Some((rss_kib, fds, threads, cpu_s)) = read_process(args.pid) else {
            eprintln!("loadtest sample: process {} exited", args.pid);
            break;
        };
        let load1 = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|t| parse_loadavg(&t))
            .unwrap_or(0.0);
        let (cache_entries, connections) = match &metrics {
            Some(m) => m.read().await,
            None => (None, None),
        };
        let sample = Sample {
            unix_ms,
            rss_kib,
            fds,
            threads,
            cpu_s,
            load1,
            cache_entries,
            connections,
        };
        write_line(&mut out, &sample.csv(), &args.out)?;
        rows += 1;
    }
    Ok(rows)
}

fn write_line(out: &mut BufWriter<File>, line: &str, path: &Path) -> anyhow::Result<()> {
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_memory_and_threads_from_proc_status() {
        let status = "Name:\tgateway\nVmPeak:\t  900 kB\nVmRSS:\t   51234 kB\nThreads:\t7\n";
        assert_eq!(parse_status(status), Some((51234, 7)));
        assert_eq!(parse_status("Name:\tx\n"), None);
        let own = std::fs::read_to_string("/proc/self/status").unwrap();
        let (rss, threads) = parse_status(&own).unwrap();
        assert!(rss > 0 && threads > 0);
        assert_eq!(parse_loadavg("0.52 0.58 0.59 1/467 12345\n"), Some(0.52));
        assert_eq!(parse_loadavg(""), None);
    }

    #[test]
    fn sums_a_metric_over_its_labels_and_ignores_look_alikes() {
        let text = "# TYPE gateway_connections gauge\n\
                    gateway_connections 12\n\
                    gateway_connections_total 99\n\
                    gateway_db_pool_connections{state=\"idle\"} 3\n\
                    gateway_db_pool_connections{state=\"in_use\"} 2\n";
        assert_eq!(metric_sum(text, "gateway_connections"), Some(12.0));
        assert_eq!(metric_sum(text, "gateway_db_pool_connections"), Some(5.0));
        assert_eq!(metric_sum(text, "gateway_session_cache_entries"), None);
    }

    #[test]
    fn a_row_reads_back_as_written() {
        let sample = Sample {
            unix_ms: 1_700_000_000_123,
            rss_kib: 40_000,
            fds: 31,
            threads: 5,
            cpu_s: 12.34,
            load1: 0.5,
            cache_entries: Some(1024.0),
            connections: None,
        };
        assert_eq!(sample.csv(), "1700000000123,40000,31,5,12.34,0.5,1024,");
        assert_eq!(Sample::parse_csv(&sample.csv()).unwrap(), sample);
        assert!(Sample::parse_csv("1,2,3").is_err());
        assert!(Sample::parse_csv("1,2,x,4,0,0,,").is_err());
    }
}

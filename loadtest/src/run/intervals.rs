//! Per-interval figures of a run (`--interval`): each interval's successful requests per
//! second, failures and latency percentiles, so a long run (a soak) shows how throughput and
//! latency moved over time, not only their totals. Operations count in the interval in which
//! they finished; the last interval also takes those still finishing after the window's end,
//! so the intervals add up to the run's totals.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::stats::{IntervalSnapshot, Latency, Recorder};

/// Shortest `--interval` accepted.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// One interval of a run, as written in the summary's `intervals`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntervalStats {
    /// End of the interval, in seconds after the measured window began.
    pub t_s: f64,
    /// The same instant on the wall clock, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// Length of the interval in seconds (the last one may be shorter).
    pub duration_s: f64,
    /// Counted operations that finished successfully in the interval.
    pub ok: u64,
    /// Counted operations that failed in the interval, open-loop backlog included.
    pub failed: u64,
    /// `ok` per second of the interval.
    pub throughput: f64,
    /// Latency of the successful ones, in microseconds.
    pub latency_us: Latency,
}

/// Collects intervals in the background from the window's start until [`Intervals::finish`].
pub struct Intervals {
    done: oneshot::Sender<Instant>,
    task: JoinHandle<Vec<IntervalStats>>,
}

impl Intervals {
    /// Starts cutting `recorder`'s intervals (it must be made
    /// [`Recorder::with_intervals`]) every `every` from `start`, the measured window's start,
    /// up to `end`, its planned end.
    pub fn start(recorder: Arc<Recorder>, every: Duration, start: Instant, end: Instant) -> Self {
        let (done, finished) = oneshot::channel();
        let clock = Clock::at(start);
        let task = tokio::spawn(collect(recorder, every, start, end, clock, finished));
        Intervals { done, task }
    }

    /// Closes the last interval at `end` (the window's end, or where the run stopped early)
    /// and returns them all. Call it once every step has been recorded.
    pub async fn finish(self, end: Instant) -> Vec<IntervalStats> {
        let _ = self.done.send(end);
        self.task.await.unwrap_or_default()
    }
}

/// Maps the window's instants to seconds into it and to the wall clock.
#[derive(Clone, Copy)]
struct Clock {
    start: Instant,
    start_unix_ms: f64,
}

impl Clock {
    fn at(start: Instant) -> Clock {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let wall_ms = wall
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3);
        let ahead_ms = start.saturating_duration_since(now).as_secs_f64() * 1e3;
        let behind_ms = now.saturating_duration_since(start).as_secs_f64() * 1e3;
        Clock {
            start,
            start_unix_ms: wall_ms + ahead_ms - behind_ms,
        }
    }

    fn stats(&self, from: Instant, to: Instant, snap: IntervalSnapshot) -> IntervalStats {
        let t_s = to.saturating_duration_since(self.start).as_secs_f64();
        let duration_s = to.saturating_duration_since(from).as_secs_f64();
        IntervalStats {
            t_s: round3(t_s),
            unix_ms: (self.start_unix_ms + t_s * 1e3).round() as u64,
            duration_s: round3(duration_s),
            ok: snap.ok,
            failed: snap.failed,
            throughput: if duration_s > 0.0 {
                (snap.ok as f64 / duration_s * 10.0).round() / 10.0
            } else {
                0.0
            },
            latency_us: snap.latency,
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

async fn collect(
    recorder: Arc<Recorder>,
    every: Duration,
    start: Instant,
    end: Instant,
    clock: Clock,
    finished: oneshot::Receiver<Instant>,
) -> Vec<IntervalStats> {
    tokio::pin!(finished);
    let mut out = Vec::new();
    tokio::select! {
        () = tokio::time::sleep_until(start.into()) => {}
        // Stopped during the warm-up: nothing was measured.
        _ = &mut finished => return out,
    }
    let mut from = start;
    let last = loop {
        let to = from + every;
        if to >= end {
            break finished.await.unwrap_or(end);
        }
        tokio::select! {
            // A due interval is cut before the end is taken, so none is skipped.
            biased;
            () = tokio::time::sleep_until(to.into()) => {
                if let Some(snap) = recorder.take_interval() {
                    out.push(clock.stats(from, to, snap));
                }
                from = to;
            }
            stopped = &mut finished => break stopped.unwrap_or(end),
        }
    };
    if let Some(snap) = recorder.take_interval() {
        let to = last.clamp(from, end);
        if to > from || snap.ok + snap.failed > 0 {
            out.push(clock.stats(from, to, snap));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::stats::OpDef;

    const OPS: &[OpDef] = &[OpDef {
        name: "main",
        counted: true,
    }];

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test]
    async fn cuts_the_window_into_intervals_that_add_up() {
        let t0 = Instant::now();
        let (start, end) = (t0 + ms(100), t0 + ms(450));
        let recorder = Arc::new(Recorder::new(OPS, start, end).with_intervals());
        let intervals = Intervals::start(Arc::clone(&recorder), ms(100), start, end);
        // One step in the warm-up (not measured), steps throughout the window, and one that
        // started inside it but finishes after its end.
        recorder.record(0, 0, t0, Ok(ms(1)));
        for at in [150, 250, 260, 380, 470] {
            tokio::time::sleep_until((t0 + ms(at)).into()).await;
            recorder.record(0, 0, start, Ok(ms(1)));
        }
        let got = intervals.finish(end).await;
        let ends: Vec<f64> = got.iter().map(|i| i.t_s).collect();
        assert_eq!(ends, [0.1, 0.2, 0.3, 0.35], "{got:#?}");
        assert_eq!(got[3].duration_s, 0.05);
        assert_eq!(got[1].unix_ms - got[0].unix_ms, 100, "{got:#?}");
        let ok: u64 = got.iter().map(|i| i.ok).sum();
        assert_eq!(ok, 5, "{got:#?}");
        assert_eq!(ok, recorder.snapshot().ok());
        let rate: f64 = got.iter().map(|i| i.throughput * i.duration_s).sum();
        assert!(
            (rate - 5.0).abs() < 0.01,
            "throughput is ok per second: {got:#?}"
        );
    }

    #[tokio::test]
    async fn an_early_stop_closes_the_last_interval_where_it_stopped() {
        let t0 = Instant::now();
        let end = t0 + Duration::from_secs(10);
        let recorder = Arc::new(Recorder::new(OPS, t0, end).with_intervals());
        let intervals = Intervals::start(Arc::clone(&recorder), ms(100), t0, end);
        tokio::time::sleep_until((t0 + ms(130)).into()).await;
        recorder.record(0, 0, t0, Ok(ms(2)));
        let got = intervals.finish(t0 + ms(130)).await;
        let ends: Vec<f64> = got.iter().map(|i| i.t_s).collect();
        assert_eq!(ends, [0.1, 0.13], "{got:#?}");
        assert_eq!(got.iter().map(|i| i.ok).sum::<u64>(), 1);
    }

    #[tokio::test]
    async fn a_stop_during_the_warm_up_measures_nothing() {
        let t0 = Instant::now();
        let (start, end) = (t0 + Duration::from_secs(5), t0 + Duration::from_secs(10));
        let recorder = Arc::new(Recorder::new(OPS, start, end).with_intervals());
        let intervals = Intervals::start(Arc::clone(&recorder), ms(100), start, end);
        assert!(intervals.finish(t0).await.is_empty());
    }
}

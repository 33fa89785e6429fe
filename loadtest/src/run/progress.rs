//! The progress line of a run (indicatif): phase, elapsed time, current requests per second,
//! errors and the p99 so far, redrawn twice a second. Hidden when stdout is not a terminal, so
//! scripts and CI logs get only the final table.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;

use super::stats::Recorder;
use super::stats::format_us;

const REFRESH: Duration = Duration::from_millis(500);

/// A running progress line; [`Progress::finish`] clears it.
pub struct Progress {
    bar: ProgressBar,
    ticker: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts the line for a run that began at `t0`, warms up until `window_start` and
    /// measures until `window_end`.
    pub fn start(
        recorder: Arc<Recorder>,
        t0: Instant,
        window_start: Instant,
        window_end: Instant,
    ) -> Progress {
        if !std::io::stdout().is_terminal() {
            return Progress {
                bar: ProgressBar::hidden(),
                ticker: None,
            };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        let line = bar.clone();
        let ticker = tokio::spawn(async move {
            let (mut last_at, mut last_done) = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(REFRESH).await;
                let now = Instant::now();
                let (done, failed) = recorder.live_counts();
                let rps = (done - last_done) as f64 / (now - last_at).as_secs_f64().max(1e-3);
                (last_at, last_done) = (now, done);
                let phase = if now < window_start {
                    format!(
                        "warm-up {:.1}/{:.1} s",
                        (now - t0).as_secs_f64(),
                        (window_start - t0).as_secs_f64()
                    )
                } else {
                    format!(
                        "{:.1}/{:.1} s",
                        (now.min(window_end) - window_start).as_secs_f64(),
                        (window_end - window_start).as_secs_f64()
                    )
                };
                let p99 = recorder
                    .live_p99()
                    .map_or_else(|| "-".to_string(), format_us);
                line.set_message(format!(
                    "{phase}  {rps:.0} req/s  errors {failed}  p99 {p99}"
                ));
                line.tick();
            }
        });
        Progress {
            bar,
            ticker: Some(ticker),
        }
    }

    /// Stops updating and clears the line.
    pub fn finish(self) {
        if let Some(ticker) = self.ticker {
            ticker.abort();
        }
        self.bar.finish_and_clear();
    }
}

//! Waiting for an event with a deadline, instead of sleeping a fixed time and then asserting:
//! as fast as the event on an idle machine, as patient as the deadline on a loaded one.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`until`] looks again.
const POLL: Duration = Duration::from_millis(20);

/// Waits until `check` answers true, looking every 20 ms; panics naming `what` when `within`
/// has passed first. Returns how long it took.
pub async fn until<F, Fut>(what: &str, within: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(POLL).await;
    }
}

//! Whether this instance wants new traffic, for the load balancers that poll `/readyz`. On
//! SIGTERM an instance first says that it is leaving (`/readyz` answers 503) and goes on
//! serving for `server.accept_grace`, so that the balancer takes it out of its pool while it
//! still answers; only then does the listener close and the drain begin (the server's job).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Set once the instance is leaving; never cleared (a leaving process exits).
#[derive(Debug, Default)]
pub(crate) struct Readiness {
    leaving: AtomicBool,
}

impl Readiness {
    pub(crate) fn new() -> Self {
        Readiness::default()
    }

    /// Whether the instance has been told to stop: `/readyz` then answers 503.
    pub(crate) fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::Acquire)
    }

    /// Marks the instance as leaving.
    pub(crate) fn leave(&self) {
        self.leaving.store(true, Ordering::Release);
    }
}

/// Completes `grace` after `signal` does, having marked `readiness` as leaving the moment
/// `signal` completed: the future on which the server stops accepting.
pub(crate) async fn leave_after(
    signal: impl Future<Output = ()>,
    readiness: &Readiness,
    grace: Duration,
) {
    signal.await;
    readiness.leave();
    if !grace.is_zero() {
        tracing::info!(
            ?grace,
            "leaving: /readyz answers 503, requests are served until the grace ends"
        );
        tokio::time::sleep(grace).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn not_ready_at_the_signal_and_done_only_after_the_grace() {
        let readiness = Readiness::new();
        let grace = Duration::from_millis(300);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let leaving = leave_after(
            async {
                let _ = rx.await;
            },
            &readiness,
            grace,
        );
        tokio::pin!(leaving);
        tokio::select! {
            () = &mut leaving => panic!("done before the signal"),
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        assert!(!readiness.is_leaving(), "ready until the signal");
        tx.send(()).unwrap();
        let signalled = Instant::now();
        tokio::select! {
            () = &mut leaving => panic!("done before the grace ended"),
            () = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
        assert!(readiness.is_leaving(), "not ready from the signal on");
        leaving.await;
        assert!(
            signalled.elapsed() >= grace,
            "done {:?} after the signal",
            signalled.elapsed()
        );
    }
}

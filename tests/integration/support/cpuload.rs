//! CPU load beside a test: threads that spin until dropped, so that a test whose bounds depend
//! on scheduling proves them on a busy machine (as CI and a developer's laptop often are), not
//! only on an idle one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// Spinning threads at normal priority; they stop when this is dropped. One load at a time in
/// the test process (others wait), so that tests running side by side do not multiply it.
pub struct CpuLoad {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

/// Held by the one load running.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl CpuLoad {
    /// Starts `per_core` spinning threads per core, once no other load runs.
    pub async fn start(per_core: usize) -> CpuLoad {
        let turn = TURN.lock().await;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..per_core * cores)
            .map(|i| {
                let stop = stop.clone();
                std::thread::Builder::new()
                    .name(format!("cpu-load-{i}"))
                    .spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            std::hint::spin_loop();
                        }
                    })
                    .expect("spawn a load thread")
            })
            .collect();
        CpuLoad {
            stop,
            threads,
            _turn: turn,
        }
    }
}

impl Drop for CpuLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

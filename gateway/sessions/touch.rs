//! The `last_seen_at` batch writer: the request path pushes a session id at most once per
//! touch interval into a bounded queue (never waiting: when full, the touch is dropped and
//! counted), and one task writes them in batches, off the request path.

use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::db;

const TOUCH: &str = "UPDATE sessions SET last_seen_at = now(), updated_at = now()
    WHERE id = ANY($1) AND revoked_at IS NULL";
const MAX_BATCH: usize = 1000;
const FLUSH_EVERY: Duration = Duration::from_millis(500);

/// The sending side, cloned into every request handler.
#[derive(Clone)]
pub(crate) struct Queue {
    tx: mpsc::Sender<Uuid>,
}

impl Queue {
    /// Starts the writer task with a queue of `capacity` ids.
    pub(crate) fn start(pool: Pool, capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        tokio::spawn(write_batches(pool, rx));
        Queue { tx }
    }

    /// Queues a touch without waiting; drops and counts it when the queue is full.
    pub(crate) fn push(&self, session_id: Uuid) {
        if self.tx.try_send(session_id).is_err() {
            metrics::counter!("gateway_session_touches_dropped_total").increment(1);
        }
    }
}

async fn write_batches(pool: Pool, mut rx: mpsc::Receiver<Uuid>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let received = rx.recv_many(&mut batch, MAX_BATCH).await;
        if received == 0 {
            return;
        }
        // Let a burst accumulate into one statement.
        if batch.len() < MAX_BATCH {
            tokio::time::sleep(FLUSH_EVERY).await;
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(id) => batch.push(id),
                    Err(_) => break,
                }
            }
        }
        batch.sort_unstable();
        batch.dedup();
        // The update is idempotent, so the transaction may safely be retried.
        let ids: &[Uuid] = &batch;
        let result =
            db::transaction(&pool, |tx| async move { tx.execute(TOUCH, &[&ids]).await }).await;
        match result {
            Ok(n) => metrics::counter!("gateway_session_touches_written_total").increment(n),
            Err(e) => {
                metrics::counter!("gateway_session_touches_dropped_total")
                    .increment(batch.len() as u64);
                tracing::warn!(error = %e, count = batch.len(), "could not write last_seen_at");
            }
        }
        batch.clear();
    }
}

//! `loadtest select`: the floor under a cache miss. It runs the gateway's own session lookup
//! (`gateway::sessions::LOOKUP`, the same SQL text, prepared once per connection) for seeded
//! tokens straight against the database, through a pool of the gateway's size (an exclusive
//! connection per query, as deadpool gives one), at a fixed concurrency. Set beside the `cold`
//! scenario at the same concurrency, the difference is what the gateway adds to a miss: HTTP,
//! hashing, the cache's coalescing and the proxying.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use anyhow::{Context, bail};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio_postgres::{Client, NoTls, Statement};

use crate::run::stats::{Latency, micros, new_histogram};

/// `loadtest select`: the command line.
#[derive(Debug, clap::Args)]
pub struct SelectArgs {
    /// PostgreSQL URL of the seeded database.
    #[arg(long, env = "GATEWAY_DATABASE__URL", value_name = "URL")]
    pub database_url: String,
    /// Raw session tokens, one per line (`loadtest seed --out`).
    #[arg(long, value_name = "FILE")]
    pub tokens: PathBuf,
    /// Use the tokens from this line on (0-based).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub skip: usize,
    /// Lookups in all; each token is used once.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub count: usize,
    /// Lookups in flight at once.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub concurrency: usize,
    /// Pooled connections (the gateway's `database.max_connections`, 16 by default).
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub connections: usize,
    /// Write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// What `loadtest select` measured.
#[derive(Debug, Serialize)]
pub struct SelectSummary {
    pub lookups: u64,
    pub found: u64,
    pub errors: u64,
    pub concurrency: usize,
    pub connections: usize,
    pub seconds: f64,
    pub per_second: f64,
    /// Microseconds, as `loadtest run` reports them.
    pub latency_us: Latency,
}

/// A pool of exclusive connections, each with the lookup prepared.
struct Pool {
    free: Mutex<Vec<(Client, Statement)>>,
    available: Semaphore,
}

impl Pool {
    async fn take(&self) -> anyhow::Result<(Client, Statement)> {
        let permit = self.available.acquire().await?;
        permit.forget();
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        free.pop().context("pool accounting broken")
    }

    fn give_back(&self, conn: (Client, Statement)) {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
        self.available.add_permits(1);
    }
}

/// Runs `loadtest select` and prints its summary.
///
/// # Errors
/// An unreadable token file, too few tokens, or a database that cannot be reached.
pub async fn select(args: SelectArgs) -> anyhow::Result<SelectSummary> {
    if args.concurrency == 0 || args.connections == 0 || args.count == 0 {
        bail!("--count, --concurrency and --connections must be at least 1");
    }
    let text = std::fs::read_to_string(&args.tokens)
        .with_context(|| format!("cannot read {}", args.tokens.display()))?;
    let hashes: Vec<[u8; 32]> = text
        .lines()
        .skip(args.skip)
        .take(args.count)
        .map(|t| Sha256::digest(t.trim().as_bytes()).into())
        .collect();
    if hashes.len() < args.count {
        bail!(
            "{} holds {} tokens after --skip {}; --count asks for {}",
            args.tokens.display(),
            hashes.len(),
            args.skip,
            args.count
        );
    }
    let mut free = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let (client, connection) = tokio_postgres::connect(&args.database_url, NoTls)
            .await
            .context("cannot connect to the database")?;
        tokio::spawn(connection);
        let statement = client.prepare(gateway::sessions::LOOKUP).await?;
        free.push((client, statement));
    }
    let pool = Arc::new(Pool {
        free: Mutex::new(free),
        available: Semaphore::new(args.connections),
    });
    let hashes = Arc::new(hashes);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (pool, hashes, next) = (pool.clone(), hashes.clone(), next.clone());
            tokio::spawn(async move {
                let mut latency = new_histogram();
                let (mut found, mut errors) = (0u64, 0u64);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(hash) = hashes.get(i) else { break };
                    let t0 = Instant::now();
                    let conn = pool.take().await?;
                    let row = conn.0.query_opt(&conn.1, &[&hash.as_slice()]).await;
                    pool.give_back(conn);
                    match row {
                        Ok(Some(_)) => found += 1,
                        Ok(None) => {}
                        Err(_) => errors += 1,
                    }
                    latency.saturating_record(micros(t0.elapsed()));
                }
                anyhow::Ok((latency, found, errors))
            })
        })
        .collect();
    let mut all = new_histogram();
    let (mut found, mut errors) = (0, 0);
    for worker in workers {
        let (latency, f, e) = worker.await??;
        all.add(latency)?;
        found += f;
        errors += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    let summary = SelectSummary {
        lookups: all.len(),
        found,
        errors,
        concurrency: args.concurrency,
        connections: args.connections,
        seconds,
        per_second: all.len() as f64 / seconds,
        latency_us: Latency::of(&all),
    };
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "select: {} lookups ({} found, {} errors) in {:.1} s, {:.0}/s at concurrency {} over {} connections; \
         p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
        summary.lookups,
        summary.found,
        summary.errors,
        summary.seconds,
        summary.per_second,
        summary.concurrency,
        summary.connections,
        ms(summary.latency_us.p50),
        ms(summary.latency_us.p90),
        ms(summary.latency_us.p99),
        ms(summary.latency_us.p999),
        ms(summary.latency_us.max)
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(summary)
}

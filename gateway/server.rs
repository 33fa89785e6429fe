//! Listeners and connections: the public listener (TLS by rustls with ALPN h2/http1.1, or
//! plain HTTP for development), the admin listener, the connection cap, the TLS handshake and
//! header read timeouts, and graceful shutdown that drains in-flight requests within the grace
//! period. [`Server::bind`] owns every check that can fail before a port is bound; the caller
//! owns the shutdown future, so a test can pass its own trigger.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncRead, AsyncWrite};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_rustls::TlsAcceptor;

use crate::app::{Conn, Gateway, Worker};
use crate::config::{self, Config, ConfigError, LogFormat};
use crate::db::DbError;
use crate::mail::MailError;
use crate::migrate::MigrateError;
use crate::readiness::{self, Readiness};
use crate::sessions::{self, Sessions};
use crate::{admin, codes, db, failures, mail, migrate, proxy};

/// Why the server did not start. [`StartError::exit_code`] sorts them the way the command
/// line reports them: 2 for what the operator must fix in the configuration or the files it
/// names (or a database schema this binary does not expect), 1 for an operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Exit 2: problems in the configuration, each with its key.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Exit 2: TLS files that cannot be read or used; the message names the key.
    #[error("{0}")]
    Tls(String),
    /// Exit 2: the mail settings cannot be used.
    #[error(transparent)]
    Mail(#[from] MailError),
    /// Exit 2: the database schema is not the one this binary expects.
    #[error(transparent)]
    Schema(#[from] MigrateError),
    /// Exit 1: the database pool cannot be built.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Exit 1: a listener cannot be bound.
    #[error("{key}: cannot listen on {addr}: {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Exit 1: a worker thread (its runtime or the thread itself) cannot start.
    #[error("cannot start worker thread {index}: {source}")]
    Worker {
        index: usize,
        #[source]
        source: std::io::Error,
    },
}

impl StartError {
    /// The process exit code for this failure (see the type's documentation).
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Config(_)
            | StartError::Tls(_)
            | StartError::Mail(_)
            | StartError::Schema(_) => 2,
            StartError::Db(_) | StartError::Bind { .. } | StartError::Worker { .. } => 1,
        }
    }
}

/// A gateway whose listeners are bound, whose worker threads run and whose checks have
/// passed.
pub struct Server {
    gateway: Arc<Gateway>,
    public: TcpListener,
    admin: TcpListener,
    tls: Option<TlsAcceptor>,
    workers: Vec<WorkerHandle>,
    readiness: Arc<Readiness>,
}

impl Server {
    /// Validates the configuration, checks the database schema, loads the TLS material, binds
    /// both listeners and starts the `server.workers` worker threads.
    ///
    /// # Errors
    /// [`StartError`]: bad configuration, unreadable TLS files or an unexpected schema (exit
    /// 2); listeners that cannot be bound or a worker thread that cannot start (exit 1).
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        config.check_serve()?;
        let tls = match &config.server.tls {
            Some(files) => Some(tls_acceptor(files)?),
            None => None,
        };
        let mailer = mail::Mailer::start(&config.mail, config.branding.name.as_deref())?;
        let pool = db::connect(&config.database)?;
        migrate::ensure_current(&pool).await?;
        let public = bind(config.server.listen, "server.listen").await?;
        let admin = bind(config.server.admin_listen, "server.admin_listen").await?;
        admin::install_metrics();
        let sessions = Sessions::new(pool, &config.sessions);
        let gateway = Arc::new(Gateway::new(config, sessions, mailer));
        let workers = start_workers(&gateway, tls.as_ref(), worker_thread_named).await?;
        Ok(Server {
            gateway,
            public,
            admin,
            tls,
            workers,
            readiness: Arc::new(Readiness::new()),
        })
    }

    /// The shared request-path state (tests look at its session counters).
    pub fn gateway(&self) -> Arc<Gateway> {
        self.gateway.clone()
    }

    /// The bound public address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.public
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes; then `/readyz` fails at once while requests are
    /// still served for `server.accept_grace` (so load balancers stop sending), then the
    /// listener closes and in-flight requests finish for up to `server.shutdown_grace`.
    ///
    /// This task accepts; the `server.workers` threads [`Server::bind`] started serve. Each worker runs a single-threaded
    /// runtime and keeps every connection handed to it for the connection's whole life, with
    /// its own upstream pool, so the request path never wakes another thread (the model of
    /// nginx's worker processes). Connections go to the worker with the fewest open ones.
    /// The control tasks (revocation poll, upkeep, admin) run on the caller's runtime.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let gw = self.gateway;
        let poller = tokio::spawn(sessions::poll(gw.sessions.clone()));
        let upkeep = tokio::spawn(maintain(gw.clone()));
        let admin = tokio::spawn(admin::serve(self.admin, gw.clone(), self.readiness.clone()));
        let workers = self.workers;
        let limit = Arc::new(Semaphore::new(gw.config.server.max_connections));
        let listen = self.public.local_addr().ok();
        tracing::info!(
            ?listen,
            tls = self.tls.is_some(),
            workers = workers.len(),
            "gateway listening"
        );
        let shutdown =
            readiness::leave_after(shutdown, &self.readiness, gw.config.server.accept_grace);
        tokio::pin!(shutdown);
        let mut backoff = AcceptBackoff::default();
        loop {
            let permit = tokio::select! {
                () = &mut shutdown => break,
                p = limit.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.public.accept() => match accepted {
                    Ok(a) => {
                        backoff.succeeded();
                        a
                    }
                    Err(e) => {
                        // Out of descriptors, say: a connection must close before the next
                        // accept can succeed, so wait longer each time instead of spinning.
                        let wait = backoff.failed();
                        tracing::warn!(error = %e, ?wait, "accept failed; waiting before the next");
                        tokio::select! {
                            () = &mut shutdown => break,
                            () = tokio::time::sleep(wait) => continue,
                        }
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let Some(worker) = workers.iter().min_by_key(|w| w.open()) else {
                break;
            };
            worker.hand_over(stream, peer, permit);
        }
        drop(self.public);
        let grace = gw.config.server.shutdown_grace;
        let open: usize = workers.iter().map(WorkerHandle::open).sum();
        tracing::info!(open, ?grace, "shutting down: draining connections");
        // Every worker starts its grace period now, not after the one before it has drained.
        let ending: Vec<_> = workers.into_iter().map(WorkerHandle::close).collect();
        for ended in ending {
            let _ = ended.await;
        }
        poller.abort();
        upkeep.abort();
        admin.abort();
    }
}

/// The wait after a failed accept: doubling from [`AcceptBackoff::FIRST`] up to
/// [`AcceptBackoff::MAX`] while accepts keep failing, back to the first after one succeeds. A
/// failing accept (out of file descriptors) thus costs a few log lines a second at most, not
/// one every few milliseconds, and a transient one costs a few milliseconds.
#[derive(Debug)]
struct AcceptBackoff {
    next: Duration,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    /// The wait after this failure.
    fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        wait
    }

    fn succeeded(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        AcceptBackoff { next: Self::FIRST }
    }
}

/// The thread of worker `index`, named `gateway-worker-{index}`.
fn worker_thread_named(index: usize) -> std::thread::Builder {
    std::thread::Builder::new().name(format!("gateway-worker-{index}"))
}

/// Starts the `server.workers` worker threads, each from `thread(index)`.
///
/// # Errors
/// [`StartError::Worker`] when one cannot start: the server does not start with fewer (those
/// already started end as their handles drop).
async fn start_workers(
    gw: &Arc<Gateway>,
    tls: Option<&TlsAcceptor>,
    thread: impl Fn(usize) -> std::thread::Builder,
) -> Result<Vec<WorkerHandle>, StartError> {
    let mut workers = Vec::with_capacity(gw.config.server.workers);
    for index in 0..gw.config.server.workers {
        workers.push(WorkerHandle::start(index, thread(index), gw.clone(), tls.cloned()).await?);
    }
    Ok(workers)
}

/// A connection accepted and handed to a worker.
struct Accepted {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
}

/// The accepting task's side of one worker thread.
struct WorkerHandle {
    queue: mpsc::UnboundedSender<Accepted>,
    /// Connections handed over and not yet closed.
    open: Arc<AtomicUsize>,
    done: oneshot::Receiver<()>,
}

impl WorkerHandle {
    /// Starts worker `index` on `thread` ([`worker_thread`]): a single-threaded runtime
    /// serving the connections it is handed until the queue closes, then draining them for up
    /// to `shutdown_grace`. Returns once the runtime runs.
    ///
    /// # Errors
    /// [`StartError::Worker`] when the thread or its runtime cannot be made.
    async fn start(
        index: usize,
        thread: std::thread::Builder,
        gw: Arc<Gateway>,
        tls: Option<TlsAcceptor>,
    ) -> Result<WorkerHandle, StartError> {
        let failed = |source| StartError::Worker { index, source };
        let (queue, incoming) = mpsc::unbounded_channel::<Accepted>();
        let (ready_tx, ready) = oneshot::channel();
        let (done_tx, done) = oneshot::channel();
        let open = Arc::new(AtomicUsize::new(0));
        let open_here = open.clone();
        thread
            .spawn(move || {
                worker_thread(index, gw, tls, incoming, open_here, ready_tx);
                let _ = done_tx.send(());
            })
            .map_err(failed)?;
        match ready.await {
            Ok(Ok(())) => Ok(WorkerHandle { queue, open, done }),
            Ok(Err(e)) => Err(failed(e)),
            Err(_) => Err(failed(std::io::Error::other(
                "the worker thread ended at once",
            ))),
        }
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn hand_over(&self, stream: TcpStream, peer: SocketAddr, permit: OwnedSemaphorePermit) {
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, %peer, "cannot hand a connection over");
                return;
            }
        };
        self.open.fetch_add(1, Ordering::Relaxed);
        if self
            .queue
            .send(Accepted {
                stream,
                peer,
                permit,
            })
            .is_err()
        {
            self.open.fetch_sub(1, Ordering::Relaxed);
            tracing::error!(%peer, "a worker thread is gone; connection dropped");
        }
    }

    /// Closes the queue, so the worker starts draining, and returns what completes when the
    /// worker has ended.
    fn close(self) -> oneshot::Receiver<()> {
        drop(self.queue);
        self.done
    }
}

/// The body of worker thread `index`: its own single-threaded runtime (whether it could be
/// built goes to `ready`), running [`serve_worker`] to the end of its drain.
fn worker_thread(
    index: usize,
    gw: Arc<Gateway>,
    tls: Option<TlsAcceptor>,
    incoming: mpsc::UnboundedReceiver<Accepted>,
    open: Arc<AtomicUsize>,
    ready: oneshot::Sender<std::io::Result<()>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    runtime.block_on(serve_worker(index, gw, tls, incoming, open));
}

/// What a worker thread runs: each connection it is handed becomes a task (the TLS handshake,
/// then HTTP) on this thread, until the queue closes; then the open connections drain for up
/// to `server.shutdown_grace`, and those left are closed.
async fn serve_worker(
    index: usize,
    gw: Arc<Gateway>,
    tls: Option<TlsAcceptor>,
    mut incoming: mpsc::UnboundedReceiver<Accepted>,
    open_here: Arc<AtomicUsize>,
) {
    let grace = gw.config.server.shutdown_grace;
    let builder = connection_builder(&gw.config.server);
    let worker = Arc::new(Worker::new(gw));
    let graceful = GracefulShutdown::new();
    while let Some(accepted) = incoming.recv().await {
        let stream = match accepted
            .stream
            .set_nonblocking(true)
            .and_then(|()| TcpStream::from_std(accepted.stream))
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot register a connection");
                open_here.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
        };
        let conn = Conn {
            peer: accepted.peer,
            https: tls.is_some(),
        };
        let open = Open::new(open_here.clone(), accepted.permit);
        let (worker, builder) = (worker.clone(), builder.clone());
        let watcher = graceful.watcher();
        // One task type per listener kind, so a plain connection's task is not sized for TLS
        // state it never has.
        match &tls {
            Some(acceptor) => tokio::spawn(tls_connection(
                stream,
                acceptor.clone(),
                conn,
                worker,
                builder,
                watcher,
                open,
            )),
            None => tokio::spawn(async move {
                let _open = open;
                serve_connection(stream, conn, worker, &builder, watcher).await;
            }),
        };
    }
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            worker = index,
            "grace period over; closing the remaining connections"
        );
    }
}

/// Held by a connection's task while it lives: its slot under `max_connections` and its
/// count in the worker's open connections.
struct Open {
    count: Arc<AtomicUsize>,
    _slot: OwnedSemaphorePermit,
}

impl Open {
    fn new(count: Arc<AtomicUsize>, slot: OwnedSemaphorePermit) -> Open {
        metrics::gauge!("gateway_connections").increment(1.0);
        Open { count, _slot: slot }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("gateway_connections").decrement(1.0);
    }
}

/// One TLS client connection on its worker: the handshake (bounded by
/// `tls_handshake_timeout`, its state boxed and freed once done), then HTTP.
async fn tls_connection(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    conn: Conn,
    worker: Arc<Worker>,
    builder: auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    open: Open,
) {
    let _open = open;
    let peer = conn.peer;
    let timeout = worker.gw.config.server.tls_handshake_timeout;
    match Box::pin(tokio::time::timeout(timeout, acceptor.accept(stream))).await {
        Ok(Ok(tls_stream)) => serve_connection(tls_stream, conn, worker, &builder, watcher).await,
        Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

/// How often [`maintain`] runs.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(60);
/// How long expired codes and links are kept before the sweep deletes them.
const EXPIRED_CODES_KEPT: Duration = Duration::from_secs(24 * 3600);

/// Periodic upkeep of the auth flows' state: rate limiter keys back to a fresh state are
/// dropped (bounding their memory), and the database loses failures older than the budget
/// window and codes long expired (in batches; every instance may run it, the deletes are
/// idempotent).
async fn maintain(gw: Arc<Gateway>) {
    let mut tick = tokio::time::interval(MAINTENANCE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        gw.limits.retain_recent();
        let pool = gw.sessions.pool();
        if let Err(e) = failures::sweep(pool, gw.config.codes.failure_window).await {
            tracing::debug!(error = %e, "sweep of old auth failures skipped");
        }
        if let Err(e) = codes::sweep(pool, EXPIRED_CODES_KEPT).await {
            tracing::debug!(error = %e, "sweep of expired codes skipped");
        }
        if let Err(e) = gw.limits.sweep().await {
            tracing::debug!(error = %e, "sweep of rate limit cells at rest skipped");
        }
    }
}

async fn serve_connection<IO>(
    io: IO,
    conn: Conn,
    worker: Arc<Worker>,
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The request future is boxed: an idle connection then keeps a pointer, not the few KiB
    // of a request's state machine, and each request moves it once into its allocation.
    let service = service_fn(move |req| Box::pin(proxy::handle(worker.clone(), conn, req)));
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(connection.into_owned()).await {
        tracing::debug!(error = %e, peer = %conn.peer, "connection ended with an error");
    }
}

fn connection_builder(cfg: &config::Server) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .max_buf_size(cfg.max_header_bytes.max(8192))
        .max_headers(cfg.max_headers)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(cfg.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(Some(64))
        .max_local_error_reset_streams(Some(256))
        .keep_alive_interval(Some(std::time::Duration::from_secs(30)));
    builder
}

async fn bind(addr: SocketAddr, key: &'static str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { key, addr, source })
}

fn tls_acceptor(files: &config::TlsFiles) -> Result<TlsAcceptor, StartError> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            StartError::Tls(format!(
                "server.tls_cert: cannot read {}: {e}",
                files.cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(StartError::Tls(format!(
            "server.tls_cert: no certificate in {}",
            files.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        StartError::Tls(format!(
            "server.tls_key: cannot read {}: {e}",
            files.key.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(format!("server.tls_cert: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            StartError::Tls(format!(
                "server.tls_key: does not match server.tls_cert or is unusable: {e}"
            ))
        })?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(tls)))
}

/// Sets up logging as `[log]` says, to standard error through a background writer thread, so
/// no request waits on log I/O (under overload, lines are dropped rather than waited for).
/// Keep the returned guard alive: dropping it flushes what is buffered.
pub(crate) fn init_logging(cfg: &config::Log) -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let filter =
        tracing_subscriber::EnvFilter::try_new(&cfg.level).unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
    guard
}

/// `gateway serve`: runs until SIGTERM or SIGINT.
///
/// # Errors
/// Whatever [`Server::bind`] refuses.
pub(crate) async fn serve(config: Config) -> Result<(), StartError> {
    let _log_guard = init_logging(&config.log);
    let server = Server::bind(config).await?;
    server.run(shutdown_signal()).await;
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_back_off_exponentially_and_recover() {
        let mut backoff = AcceptBackoff::default();
        let waits: Vec<Duration> = (0..10).map(|_| backoff.failed()).collect();
        assert_eq!(waits[0], AcceptBackoff::FIRST);
        for pair in waits.windows(2) {
            assert!(
                pair[1] == (pair[0] * 2).min(AcceptBackoff::MAX),
                "{waits:?}"
            );
        }
        assert_eq!(*waits.last().unwrap(), AcceptBackoff::MAX);
        let per_minute: u32 = (0..1000)
            .map(|_| backoff.failed())
            .scan(Duration::ZERO, |spent, w| {
                *spent += w;
                (*spent <= Duration::from_secs(60)).then_some(1)
            })
            .sum();
        assert!(per_minute <= 61, "{per_minute} failures logged a minute");
        backoff.succeeded();
        assert_eq!(backoff.failed(), AcceptBackoff::FIRST);
    }

    #[tokio::test]
    async fn a_worker_that_cannot_start_fails_the_start() {
        let env = [("GATEWAY_SERVER__WORKERS".to_string(), "3".to_string())];
        let config = Config::load(None, env).unwrap();
        let pool = db::connect(&config.database).unwrap();
        let mailer = mail::Mailer::start(&config.mail, None).unwrap();
        let sessions = Sessions::new(pool, &config.sessions);
        let gw = Arc::new(Gateway::new(config, sessions, mailer));

        let started = start_workers(&gw, None, worker_thread_named).await.unwrap();
        assert_eq!(started.len(), 3);
        drop(started);

        // The third thread asks for a stack no address space holds: it cannot be made.
        let third_fails = |index: usize| {
            let thread = worker_thread_named(index);
            if index == 2 {
                thread.stack_size(1 << 50)
            } else {
                thread
            }
        };
        match start_workers(&gw, None, third_fails).await {
            Err(e @ StartError::Worker { index: 2, .. }) => assert_eq!(e.exit_code(), 1),
            Err(e) => panic!("wrong error: {e}"),
            Ok(workers) => panic!("started with {} workers and one missing", workers.len()),
        }
    }
}

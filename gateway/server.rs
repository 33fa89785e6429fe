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
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::cli::Failure;
use crate::config::{self, Config, LogFormat};
use crate::proxy::{self, Conn, Gateway};
use crate::sessions::{self, Sessions};
use crate::{admin, codes, db, failures, mail, migrate};

/// A gateway whose listeners are bound and whose checks have passed.
pub struct Server {
    gateway: Arc<Gateway>,
    public: TcpListener,
    admin: TcpListener,
    tls: Option<TlsAcceptor>,
}

impl Server {
    /// Validates the configuration, checks the database schema, loads the TLS material and
    /// binds both listeners.
    ///
    /// # Errors
    /// Exit-2 failures for bad configuration, unreadable TLS files or an unexpected schema;
    /// exit-1 failures for listeners that cannot be bound.
    pub async fn bind(config: Config) -> Result<Server, Failure> {
        let problems = config.serve_problems();
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
            return Err(Failure::config(format!(
                "invalid configuration:\n{}",
                list.join("\n")
            )));
        }
        let tls = match &config.server.tls {
            Some(files) => Some(tls_acceptor(files)?),
            None => None,
        };
        let mailer = mail::Mailer::start(&config.mail).map_err(Failure::config)?;
        let pool = db::connect(&config.database)?;
        migrate::ensure_current(&pool)
            .await
            .map_err(Failure::config)?;
        let public = bind(config.server.listen, "server.listen").await?;
        let admin = bind(config.server.admin_listen, "server.admin_listen").await?;
        admin::install_metrics();
        let sessions = Sessions::new(pool, &config.sessions);
        Ok(Server {
            gateway: Arc::new(Gateway::new(config, sessions, mailer)),
            public,
            admin,
            tls,
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

    /// Serves until `shutdown` completes, then stops accepting and lets in-flight requests
    /// finish for up to `server.shutdown_grace`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let gw = self.gateway;
        let poller = tokio::spawn(sessions::poll(gw.sessions.clone()));
        let upkeep = tokio::spawn(maintain(gw.clone()));
        let admin = tokio::spawn(admin::serve(self.admin, gw.clone()));
        let graceful = GracefulShutdown::new();
        let builder = connection_builder(&gw.config.server);
        let limit = Arc::new(Semaphore::new(gw.config.server.max_connections));
        let listen = self.public.local_addr().ok();
        tracing::info!(?listen, tls = self.tls.is_some(), "gateway listening");
        tokio::pin!(shutdown);
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
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let conn = Conn {
                peer,
                https: self.tls.is_some(),
            };
            let watcher = graceful.watcher();
            let (gw, builder, tls) = (gw.clone(), builder.clone(), self.tls.clone());
            tokio::spawn(async move {
                let _permit = permit;
                metrics::gauge!("gateway_connections").increment(1.0);
                match tls {
                    Some(acceptor) => {
                        let handshake = tokio::time::timeout(
                            gw.config.server.tls_handshake_timeout,
                            acceptor.accept(stream),
                        );
                        match handshake.await {
                            Ok(Ok(tls_stream)) => {
                                serve_connection(tls_stream, conn, gw, &builder, watcher).await
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, %peer, "TLS handshake failed")
                            }
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    }
                    None => serve_connection(stream, conn, gw, &builder, watcher).await,
                }
                metrics::gauge!("gateway_connections").decrement(1.0);
            });
        }
        drop(self.public);
        let grace = gw.config.server.shutdown_grace;
        tracing::info!(
            in_flight = graceful.count(),
            ?grace,
            "shutting down: draining connections"
        );
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("grace period over; closing the remaining connections");
        }
        poller.abort();
        upkeep.abort();
        admin.abort();
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
    }
}

async fn serve_connection<IO>(
    io: IO,
    conn: Conn,
    gw: Arc<Gateway>,
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| proxy::handle(gw.clone(), conn, req));
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

async fn bind(addr: SocketAddr, key: &str) -> Result<TcpListener, Failure> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::op(format!("{key}: cannot listen on {addr}: {e}")))
}

fn tls_acceptor(files: &config::TlsFiles) -> Result<TlsAcceptor, Failure> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            Failure::config(format!(
                "server.tls_cert: cannot read {}: {e}",
                files.cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(Failure::config(format!(
            "server.tls_cert: no certificate in {}",
            files.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        Failure::config(format!(
            "server.tls_key: cannot read {}: {e}",
            files.key.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::config(format!("server.tls_cert: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            Failure::config(format!(
                "server.tls_key: does not match server.tls_cert or is unusable: {e}"
            ))
        })?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(tls)))
}

/// Sets up logging as `[log]` says, to standard error through a background writer thread, so
/// no request waits on log I/O (under overload, lines are dropped rather than waited for).
/// Keep the returned guard alive: dropping it flushes what is buffered.
pub fn init_logging(cfg: &config::Log) -> tracing_appender::non_blocking::WorkerGuard {
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
pub async fn serve(config: Config) -> Result<(), Failure> {
    let _log_guard = init_logging(&config.log);
    let server = Server::bind(config).await?;
    server.run(shutdown_signal()).await;
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
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

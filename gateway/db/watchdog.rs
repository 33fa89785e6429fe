//! Pooled connections that notice a silent server. [`Connector`] opens each connection the way
//! tokio-postgres does (every host of the URL in turn, `hostaddr`, Unix sockets, keepalives,
//! `tcp_user_timeout`, `target_session_attrs`, `load_balance_hosts`), but over a [`Watchdog`]
//! stream: while the server owes a reply, it must send something within the reply timeout
//! (`database.statement_timeout` + [`REPLY_GRACE`]) or the connection fails.
//!
//! A live server cancels a statement at `statement_timeout` and says so, so only a hung server
//! or a dead network path trips the watchdog. Without it a query on a connection to a hung
//! database would wait forever: TCP keeps such a connection open, and tokio-postgres has no
//! client-side timeout. The failed connection reports an I/O error to every waiting query and
//! is never given out again.
//!
//! The connector also keeps the socket budget: at most `database.max_connections` sockets are
//! open at any moment, counted by the sockets themselves, not by the pool. The pool stops
//! counting a connection as soon as it lets go of it (a create that timed out, a connection
//! taken out of the pool or found broken), while the socket closes only when the task that owns
//! it next runs; without the budget its replacement could connect first.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use deadpool_postgres::Connect;
use rand::seq::SliceRandom as _;
use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};
use tokio_postgres::config::{Host, LoadBalanceHosts, TargetSessionAttrs};
use tokio_postgres::{Client, Config, Error as PgError, NoTls, SimpleQueryMessage};

/// How long past `statement_timeout` a reply may take: the server's cancellation and the trip
/// back over the network.
pub const REPLY_GRACE: Duration = Duration::from_millis(500);

/// Frontend messages that the server answers with ReadyForQuery: Query, Sync, FunctionCall.
const ANSWERED_BY_READY: [u8; 3] = [b'Q', b'S', b'F'];
/// The backend's ReadyForQuery: the answer to one of [`ANSWERED_BY_READY`] is complete.
const READY_FOR_QUERY: u8 = b'Z';
/// The type the framer reports for the untyped first frontend message (startup or SSLRequest).
const UNTYPED: u8 = 0;

/// Opens pooled connections behind a [`Watchdog`] (the pool's `Connect`).
#[derive(Debug, Clone)]
pub(super) struct Connector {
    reply_timeout: Duration,
    /// The runtime that owns every connection (its socket and its task): the one the pool was
    /// built on. The gateway serves requests on per-core worker runtimes; a connection opened
    /// by one of them would be driven by that worker alone, so a query from another worker
    /// would wait for it to get round to the socket. Owned by the control runtime, each
    /// connection is driven by a thread that is otherwise idle.
    home: Option<tokio::runtime::Handle>,
    /// One permit per socket that may be open ([`Slot`]).
    sockets: Arc<Semaphore>,
}

/// The right to hold one database socket. Taken before a connection attempt opens its socket
/// and held by the [`Watchdog`] around it, which drops it after the socket: a socket's slot is
/// free again only once the socket is closed.
type Slot = Arc<OwnedSemaphorePermit>;

impl Connector {
    /// A connector whose connections fail when a reply is `reply_timeout` late, opened and
    /// driven on the current runtime (if any), with at most `max_sockets` sockets open at
    /// once (an attempt waits for a slot, within the pool's create timeout).
    pub(super) fn new(reply_timeout: Duration, max_sockets: usize) -> Self {
        Connector {
            reply_timeout,
            home: tokio::runtime::Handle::try_current().ok(),
            sockets: Arc::new(Semaphore::new(max_sockets.max(1))),
        }
    }
}

type ConnectFuture<'a> =
    Pin<Box<dyn Future<Output = Result<(Client, JoinHandle<()>), PgError>> + Send + 'a>>;

impl Connect for Connector {
    fn connect(&self, pg: &Config) -> ConnectFuture<'_> {
        let pg = pg.clone();
        let limit = self.reply_timeout;
        let home = self.home.clone();
        let sockets = self.sockets.clone();
        Box::pin(async move {
            match home {
                Some(home) => {
                    let there = pg.clone();
                    // Aborted if the pool stops waiting (its create timeout): an abandoned
                    // attempt must not go on to hold a socket beyond max_connections.
                    let mut attempt = AbortOnDrop(home.spawn(async move {
                        let slot = take_slot(&there, sockets).await?;
                        open(&there, limit, &slot).await
                    }));
                    match (&mut attempt.0).await {
                        Ok(opened) => opened,
                        // The owning runtime is shutting down: no connection can live there.
                        Err(e) => Err(connect_error(&pg, io::Error::other(e.to_string())).await),
                    }
                }
                None => {
                    let slot = take_slot(&pg, sockets).await?;
                    open(&pg, limit, &slot).await
                }
            }
        })
    }
}

/// Waits for a free socket slot (the pool's create timeout bounds the wait).
async fn take_slot(pg: &Config, sockets: Arc<Semaphore>) -> Result<Slot, PgError> {
    match sockets.acquire_owned().await {
        Ok(permit) => Ok(Arc::new(permit)),
        Err(closed) => Err(connect_error(pg, io::Error::other(closed.to_string())).await),
    }
}

/// Aborts its task when dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Tries every host of `pg` in order (shuffled with `load_balance_hosts=random`) and returns
/// the first connection that completes its handshake and suits `target_session_attrs`.
async fn open(
    pg: &Config,
    limit: Duration,
    slot: &Slot,
) -> Result<(Client, JoinHandle<()>), PgError> {
    let (hosts, hostaddrs, ports) = (pg.get_hosts(), pg.get_hostaddrs(), pg.get_ports());
    let mut order: Vec<usize> = (0..hosts.len().max(hostaddrs.len())).collect();
    if pg.get_load_balance_hosts() == LoadBalanceHosts::Random {
        order.shuffle(&mut rand::rng());
    }
    let mut last = None;
    for i in order {
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let opened = match (hostaddrs.get(i), hosts.get(i)) {
            (Some(ip), _) => tcp(pg, &[SocketAddr::new(*ip, port)], limit, slot).await,
            (None, Some(Host::Tcp(name))) => {
                match tokio::net::lookup_host((name.as_str(), port)).await {
                    Ok(addrs) => tcp(pg, &addrs.collect::<Vec<_>>(), limit, slot).await,
                    Err(e) => Err(connect_error(pg, e).await),
                }
            }
            #[cfg(unix)]
            (None, Some(Host::Unix(dir))) => {
                let path = dir.join(format!(".s.PGSQL.{port}"));
                match within(pg, tokio::net::UnixStream::connect(path)).await {
                    Ok(stream) => {
                        handshake(pg, Watchdog::new(stream, limit).holding(slot.clone())).await
                    }
                    Err(e) => Err(connect_error(pg, e).await),
                }
            }
            (None, None) => continue,
        };
        match opened {
            Ok(pair) => return Ok(pair),
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) => Err(e),
        None => Err(connect_error(pg, io::Error::other("the database URL names no host")).await),
    }
}

/// Connects to the first address that answers, configured as tokio-postgres would.
async fn tcp(
    pg: &Config,
    addrs: &[SocketAddr],
    limit: Duration,
    slot: &Slot,
) -> Result<(Client, JoinHandle<()>), PgError> {
    let mut last = io::Error::other("the host name resolved to no address");
    for addr in addrs {
        match within(pg, TcpStream::connect(addr)).await {
            Ok(stream) => {
                if let Err(e) = configure(pg, &stream) {
                    last = e;
                    continue;
                }
                return handshake(pg, Watchdog::new(stream, limit).holding(slot.clone())).await;
            }
            Err(e) => last = e,
        }
    }
    Err(connect_error(pg, last).await)
}

/// `connect` bounded by the URL's `connect_timeout`.
async fn within<S>(pg: &Config, connect: impl Future<Output = io::Result<S>>) -> io::Result<S> {
    match pg.get_connect_timeout() {
        Some(limit) => tokio::time::timeout(*limit, connect)
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))),
        None => connect.await,
    }
}

fn configure(pg: &Config, stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let socket = SockRef::from(stream);
    #[cfg(target_os = "linux")]
    if let Some(limit) = pg.get_tcp_user_timeout() {
        socket.set_tcp_user_timeout(Some(*limit))?;
    }
    if pg.get_keepalives() {
        let mut keepalive = TcpKeepalive::new().with_time(pg.get_keepalives_idle());
        if let Some(interval) = pg.get_keepalives_interval() {
            keepalive = keepalive.with_interval(interval);
        }
        if let Some(retries) = pg.get_keepalives_retries() {
            keepalive = keepalive.with_retries(retries);
        }
        socket.set_tcp_keepalive(&keepalive)?;
    }
    Ok(())
}

/// The startup handshake on `stream`, the connection task, and the `target_session_attrs`
/// check.
async fn handshake<S>(pg: &Config, stream: S) -> Result<(Client, JoinHandle<()>), PgError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (client, connection) = pg.connect_raw(stream, NoTls).await?;
    let task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "database connection ended");
        }
    });
    let wanted = pg.get_target_session_attrs();
    if wanted == TargetSessionAttrs::Any {
        return Ok((client, task));
    }
    let read_only = client
        .simple_query("SHOW transaction_read_only")
        .await?
        .into_iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(|v| v == "on"),
            _ => None,
        });
    let suits = match wanted {
        TargetSessionAttrs::ReadWrite => read_only == Some(false),
        TargetSessionAttrs::ReadOnly => read_only == Some(true),
        _ => true,
    };
    if suits {
        Ok((client, task))
    } else {
        task.abort();
        let e = io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("the server does not match target_session_attrs={wanted:?}"),
        );
        Err(connect_error(pg, e).await)
    }
}

/// tokio-postgres offers no public constructor for a connection error; `connect_raw` over a
/// stream that fails at once with `e` reports `e` as one.
async fn connect_error(pg: &Config, e: io::Error) -> PgError {
    match pg.connect_raw(Failed(Some(e)), NoTls).await {
        Err(reported) => reported,
        Ok((client, _connection)) => {
            drop(client);
            unreachable!("a stream that fails every operation cannot complete a handshake")
        }
    }
}

/// A stream whose every operation fails (see [`connect_error`]).
struct Failed(Option<io::Error>);

impl Failed {
    fn error(&mut self) -> io::Error {
        self.0
            .take()
            .unwrap_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl AsyncRead for Failed {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Ready(Err(self.get_mut().error()))
    }
}

impl AsyncWrite for Failed {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(self.get_mut().error()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Err(self.get_mut().error()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Splits a stream of protocol messages (a type byte, then a big-endian length that counts
/// itself and the body) and reports each message's type once the whole message has passed.
#[derive(Debug)]
struct Framer {
    header: [u8; 5],
    have: usize,
    /// Body bytes of the current message still to pass.
    left: usize,
    /// The current message's type, reported when `left` reaches zero.
    current: Option<u8>,
    /// The frontend's first message (startup, or an SSLRequest) has no type byte.
    untyped_first: bool,
}

impl Framer {
    fn new(untyped_first: bool) -> Self {
        Framer {
            header: [0; 5],
            have: 0,
            left: 0,
            current: None,
            untyped_first,
        }
    }

    fn feed(&mut self, mut bytes: &[u8], mut complete: impl FnMut(u8)) {
        while !bytes.is_empty() {
            if self.current.is_some() {
                let n = self.left.min(bytes.len());
                self.left -= n;
                bytes = &bytes[n..];
            } else {
                let header_len = if self.untyped_first { 4 } else { 5 };
                let n = (header_len - self.have).min(bytes.len());
                self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
                self.have += n;
                bytes = &bytes[n..];
                if self.have < header_len {
                    continue;
                }
                let (kind, length) = if self.untyped_first {
                    (UNTYPED, &self.header[..4])
                } else {
                    (self.header[0], &self.header[1..5])
                };
                let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]);
                self.left = (length as usize).saturating_sub(4);
                self.current = Some(kind);
                self.have = 0;
                self.untyped_first = false;
            }
            if self.left == 0 {
                if let Some(kind) = self.current.take() {
                    complete(kind);
                }
            }
        }
    }
}

/// A stream that fails once the server has owed a reply and stayed silent for `limit`.
///
/// It counts the requests that the server answers with ReadyForQuery (a simple Query, a Sync
/// closing an extended-protocol batch) against the ReadyForQuery messages received; while
/// that count is above zero (or a write is stuck), any byte in either direction is progress,
/// and `limit` without progress fails the read side with [`io::ErrorKind::TimedOut`]. An idle
/// connection owes nothing and may stay silent for ever.
pub(super) struct Watchdog<S> {
    inner: S,
    limit: Duration,
    sent: Framer,
    received: Framer,
    /// Requests not yet answered with ReadyForQuery.
    owed: u64,
    write_blocked: bool,
    last_progress: Instant,
    timer: Pin<Box<Sleep>>,
    /// Declared after `inner`, so it is dropped after the socket is closed.
    _slot: Option<Slot>,
}

impl<S> Watchdog<S> {
    pub(super) fn new(inner: S, limit: Duration) -> Self {
        let now = Instant::now();
        Watchdog {
            inner,
            limit,
            sent: Framer::new(true),
            received: Framer::new(false),
            owed: 0,
            write_blocked: false,
            last_progress: now,
            timer: Box::pin(tokio::time::sleep_until(now + limit)),
            _slot: None,
        }
    }

    /// Holds `slot` until the stream, and with it the socket, is dropped.
    fn holding(mut self, slot: Slot) -> Self {
        self._slot = Some(slot);
        self
    }

    fn waiting(&self) -> bool {
        self.owed > 0 || self.write_blocked
    }

    /// Ready with an error once the silence has lasted `limit`; registers the waker otherwise.
    fn poll_silence(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            let deadline = self.last_progress + self.limit;
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            ready!(self.timer.as_mut().poll(cx));
            if Instant::now() >= self.last_progress + self.limit {
                metrics::counter!("gateway_db_stalled_connections_total").increment(1);
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the database sent nothing for {:?} while a reply was due",
                        self.limit
                    ),
                ));
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watchdog<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let fresh = &buf.filled()[before..];
                if !fresh.is_empty() {
                    this.last_progress = Instant::now();
                    let owed = &mut this.owed;
                    this.received.feed(fresh, |kind| {
                        if kind == READY_FOR_QUERY {
                            *owed = owed.saturating_sub(1);
                        }
                    });
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if this.waiting() => match this.poll_silence(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watchdog<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let was_waiting = this.waiting();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        match &written {
            Poll::Ready(Ok(n)) => {
                this.write_blocked = false;
                let owed = &mut this.owed;
                this.sent.feed(&buf[..*n], |kind| {
                    if ANSWERED_BY_READY.contains(&kind) {
                        *owed += 1;
                    }
                });
                if *n > 0 || !was_waiting {
                    this.last_progress = Instant::now();
                }
            }
            Poll::Pending => {
                if !was_waiting {
                    this.last_progress = Instant::now();
                }
                this.write_blocked = true;
            }
            Poll::Ready(Err(_)) => return written,
        }
        // The read side may be parked on a socket that will never become readable: the
        // timer must be able to wake this task.
        if this.waiting() && this.poll_silence(cx).is_ready() {
            cx.waker().wake_by_ref();
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    fn startup() -> Vec<u8> {
        let body = b"\x00\x03\x00\x00user\x00postgres\x00\x00";
        let mut m = (body.len() as u32 + 4).to_be_bytes().to_vec();
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn the_framer_reports_whole_messages_however_the_bytes_are_split() {
        let mut stream = startup();
        stream.extend(message(b'P', b"\0SELECT 1\0\0\0"));
        stream.extend(message(b'S', b""));
        stream.extend(message(b'Q', b"BEGIN\0"));
        let mut expected = vec![UNTYPED, b'P', b'S', b'Q'];
        for split in [1, 2, 3, 5, 7, stream.len()] {
            let mut framer = Framer::new(true);
            let mut seen = Vec::new();
            for chunk in stream.chunks(split) {
                framer.feed(chunk, |k| seen.push(k));
            }
            assert_eq!(seen, expected, "chunks of {split}");
        }
        // A message is reported only when its last byte has passed.
        let mut framer = Framer::new(false);
        let z = message(b'Z', b"I");
        let mut seen = Vec::new();
        framer.feed(&z[..5], |k| seen.push(k));
        assert!(seen.is_empty());
        framer.feed(&z[5..], |k| seen.push(k));
        expected = vec![b'Z'];
        assert_eq!(seen, expected);
    }

    /// `client` is the watched end; `server` plays the database.
    fn pair(limit: Duration) -> (Watchdog<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (client, server) = tokio::io::duplex(1 << 16);
        (Watchdog::new(client, limit), server)
    }

    async fn read_some(client: &mut Watchdog<tokio::io::DuplexStream>) -> io::Result<usize> {
        let mut buf = [0u8; 256];
        client.read(&mut buf).await
    }

    /// A watched connection that has sent the startup message and then `requests`.
    async fn sent(
        requests: &[Vec<u8>],
    ) -> (Watchdog<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (mut client, server) = pair(LIMIT);
        client.write_all(&startup()).await.unwrap();
        for request in requests {
            client.write_all(request).await.unwrap();
        }
        (client, server)
    }

    const LIMIT: Duration = Duration::from_millis(150);

    #[tokio::test]
    async fn an_idle_connection_may_stay_silent() {
        let (mut client, _server) = pair(LIMIT);
        let read = tokio::time::timeout(4 * LIMIT, read_some(&mut client)).await;
        assert!(read.is_err(), "nothing is owed, so no error: {read:?}");
    }

    #[tokio::test]
    async fn a_silent_server_that_owes_a_reply_fails_the_connection() {
        let (mut client, mut server) = sent(&[message(b'Q', b"SELECT 1\0")]).await;
        let started = Instant::now();
        let err = read_some(&mut client)
            .await
            .expect_err("the reply never comes");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let took = started.elapsed();
        assert!(took >= LIMIT && took < 4 * LIMIT, "{took:?}");
        let mut got = vec![0u8; 64];
        assert!(server.read(&mut got).await.unwrap() > 0);
    }

    #[tokio::test]
    async fn progress_extends_the_wait_and_ready_for_query_ends_it() {
        let (mut client, mut server) = sent(&[
            message(b'P', b"\0x\0\0\0"),
            message(b'S', b""),
            message(b'Q', b"COMMIT\0"),
        ])
        .await;
        // Two replies are owed. Rows trickle in, slower than the limit in total but never
        // silent for the whole limit.
        for _ in 0..4 {
            tokio::time::sleep(LIMIT / 2).await;
            server.write_all(&message(b'D', b"\0\0")).await.unwrap();
            read_some(&mut client)
                .await
                .expect("progress keeps it alive");
        }
        server.write_all(&message(b'Z', b"I")).await.unwrap();
        read_some(&mut client).await.unwrap();
        let err = read_some(&mut client)
            .await
            .expect_err("one reply is still owed");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn every_reply_received_means_idle_again() {
        let (mut client, mut server) = sent(&[message(b'Q', b"SELECT 1\0")]).await;
        let mut reply = message(b'C', b"SELECT 1\0");
        reply.extend(message(b'Z', b"I"));
        server.write_all(&reply).await.unwrap();
        read_some(&mut client).await.unwrap();
        let read = tokio::time::timeout(4 * LIMIT, read_some(&mut client)).await;
        assert!(
            read.is_err(),
            "all replies came, so silence is fine: {read:?}"
        );
    }
}

#[cfg(test)]
mod budget_tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    /// A "database" that accepts connections and never answers, keeping each one; reports
    /// every accept.
    async fn silent_server() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<TcpStream>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if tx.send(stream).is_err() {
                    return;
                }
            }
        });
        (addr, rx)
    }

    fn config(addr: SocketAddr) -> Config {
        format!("host=127.0.0.1 port={} user=postgres", addr.port())
            .parse()
            .unwrap()
    }

    /// With one slot, a second attempt does not open a socket while the first one's is open,
    /// and opens it once the first attempt is given up (its socket closed).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_socket_opens_beyond_the_budget_until_one_closes() {
        let (addr, mut accepted) = silent_server().await;
        let pg = config(addr);
        let connector = Connector::new(Duration::from_secs(30), 1);

        let first = tokio::spawn({
            let (connector, pg) = (connector.clone(), pg.clone());
            async move { connector.connect(&pg).await.map(|_| ()) }
        });
        let mut first_socket = tokio::time::timeout(Duration::from_secs(5), accepted.recv())
            .await
            .expect("the first attempt connects")
            .unwrap();

        let second = tokio::time::timeout(Duration::from_millis(300), connector.connect(&pg)).await;
        assert!(second.is_err(), "the second attempt waits for a slot");
        assert!(
            accepted.try_recv().is_err(),
            "no second socket while the first is open"
        );

        first.abort();
        let third = tokio::spawn({
            let (connector, pg) = (connector.clone(), pg.clone());
            async move { connector.connect(&pg).await.map(|_| ()) }
        });
        let _third_socket = tokio::time::timeout(Duration::from_secs(5), accepted.recv())
            .await
            .expect("a slot is free once the first attempt is given up")
            .unwrap();
        let mut buf = [0u8; 256];
        let closed = async {
            loop {
                match first_socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(1), closed)
            .await
            .expect("the first socket was closed");
        third.abort();
    }
}

//! A TCP fault proxy: listens on `127.0.0.1:0`, forwards every connection to a target (the
//! test database, an upstream), and misbehaves on demand, switchable at run time:
//! [`Fault::Pass`], [`Fault::Delay`] (each chunk held up), [`Fault::Hang`] (connections
//! accepted and kept, nothing forwarded), [`Fault::Reset`] (every connection reset, new ones
//! reset on arrival). Also [`FaultProxy::kill_all`] (reset what is open now),
//! [`FaultProxy::lose_reply_after`] (the server gets a request, the client never hears back)
//! and counts of open and accepted connections.
//!
//! Two counts of "open": [`FaultProxy::open`] is the proxy's own (a connection counts until
//! the proxy has noticed its end, which on a busy machine can be a while after the client
//! closed it), and [`FaultProxy::client_sockets`] is the client's (sockets of this process
//! connected to the proxy, so the client must be an in-process gateway): the one to bound a
//! client's connections with. [`FaultProxy::peak_client_sockets`] is its highest value seen at
//! any accept, the moment a new connection could make one too many.
//!
//! A reset is a real RST: the socket gets `SO_LINGER` 0 and is closed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the proxy treats its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward both ways.
    Pass,
    /// Forward both ways, each chunk after this delay.
    Delay(Duration),
    /// Accept and keep connections, forward nothing (held data flows again after `Pass`).
    Hang,
    /// Reset every open connection, and each new one as it arrives.
    Reset,
}

pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

struct State {
    target: SocketAddr,
    fault: watch::Sender<Fault>,
    /// Bumped to reset every connection open at that moment.
    kills: watch::Sender<u64>,
    open: AtomicUsize,
    accepted: AtomicUsize,
    /// One-shot: after forwarding a client chunk containing this, cut the connection.
    lose_reply_after: Mutex<Option<Vec<u8>>>,
    /// The most client sockets seen at an accept.
    peak_client_sockets: AtomicUsize,
}

impl FaultProxy {
    /// Starts a proxy to `target` in [`Fault::Pass`].
    pub async fn start(target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fault proxy");
        let addr = listener.local_addr().expect("fault proxy address");
        let state = Arc::new(State {
            target,
            fault: watch::Sender::new(Fault::Pass),
            kills: watch::Sender::new(0),
            open: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
            lose_reply_after: Mutex::new(None),
            peak_client_sockets: AtomicUsize::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, state.clone()));
        FaultProxy {
            addr,
            state,
            accept,
        }
    }

    /// A proxy in front of the database of `url` (a `postgres://` URL), and `url` rewritten
    /// to go through it.
    pub async fn for_database(url: &str) -> (FaultProxy, String) {
        let config: tokio_postgres::Config = url.parse().expect("a postgres URL");
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            other => panic!("the fault proxy needs a TCP database host, got {other:?}"),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let target = tokio::net::lookup_host((host.as_str(), port))
            .await
            .expect("resolve the database host")
            .next()
            .expect("an address for the database host");
        let proxy = FaultProxy::start(target).await;
        let proxied = with_authority(url, &proxy.addr.to_string());
        (proxy, proxied)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches the fault; [`Fault::Reset`] also resets every open connection.
    pub fn set(&self, fault: Fault) {
        self.state.fault.send_replace(fault);
        if fault == Fault::Reset {
            self.kill_all();
        }
    }

    /// Resets every connection open now (new ones are served as the fault says).
    pub fn kill_all(&self) {
        self.state.kills.send_modify(|k| *k += 1);
    }

    /// The next time a client sends a chunk containing `pattern`, the chunk is forwarded,
    /// the server side is closed cleanly (so the server acts on it) and the client side is
    /// reset (so the client never hears back).
    pub fn lose_reply_after(&self, pattern: &[u8]) {
        *self.state.lose_reply_after.lock().expect("lock") = Some(pattern.to_vec());
    }

    /// Client connections open now.
    pub fn open(&self) -> usize {
        self.state.open.load(Ordering::SeqCst)
    }

    /// Sockets of this process connected to the proxy (accepted or still in its accept queue)
    /// and not closed, whatever the proxy has noticed so far.
    pub fn client_sockets(&self) -> usize {
        client_sockets(self.addr)
    }

    /// The most [`FaultProxy::client_sockets`] seen at any accept so far.
    pub fn peak_client_sockets(&self) -> usize {
        self.state.peak_client_sockets.load(Ordering::SeqCst)
    }

    /// Client connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Waits until at most `n` client connections are open; false after `limit`.
    pub async fn settle_to(&self, n: usize, limit: Duration) -> bool {
        let started = tokio::time::Instant::now();
        while self.open() > n {
            if started.elapsed() > limit {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.kill_all();
    }
}

/// `url` with the authority's host and port replaced by `host_port`, user and the rest kept.
pub fn with_authority(url: &str, host_port: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let user = authority.rfind('@').map_or("", |i| &authority[..=i]);
    format!(
        "{}{user}{host_port}{}",
        &url[..scheme_end],
        &rest[authority_end..]
    )
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        state.accepted.fetch_add(1, Ordering::SeqCst);
        state.open.fetch_add(1, Ordering::SeqCst);
        if let Ok(me) = listener.local_addr() {
            state
                .peak_client_sockets
                .fetch_max(client_sockets(me), Ordering::SeqCst);
        }
        let state = state.clone();
        tokio::spawn(async move {
            serve(&state, client).await;
            state.open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// How a connection ended.
enum End {
    /// Both directions finished (or one failed): close normally.
    Closed,
    /// Reset both sides.
    Killed,
    /// The server got the marked request: close it cleanly, reset the client.
    ReplyLost,
}

async fn serve(state: &State, mut client: TcpStream) {
    let mut kills = state.kills.subscribe();
    let mut fault = state.fault.subscribe();
    // A new connection waits out a hang before it is forwarded anywhere, holding what the
    // client sends meanwhile (and noticing when it gives up).
    let mut early = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match *fault.borrow_and_update() {
            Fault::Reset => return reset(client),
            Fault::Pass | Fault::Delay(_) => break,
            Fault::Hang => {}
        }
        tokio::select! {
            read = client.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => early.extend_from_slice(&buf[..n]),
            },
            changed = fault.changed() => if changed.is_err() { return reset(client) },
            _ = kills.changed() => return reset(client),
        }
    }
    let mut server = match TcpStream::connect(state.target).await {
        Ok(s) => s,
        Err(_) => return reset(client),
    };
    let _ = server.set_nodelay(true);
    let _ = client.set_nodelay(true);
    if !early.is_empty() && server.write_all(&early).await.is_err() {
        return reset(client);
    }
    let end = {
        let (mut client_read, mut client_write) = client.split();
        let (mut server_read, mut server_write) = server.split();
        let upstream = pump(
            &mut client_read,
            &mut server_write,
            state.fault.subscribe(),
            Some(&state.lose_reply_after),
        );
        let downstream = pump(
            &mut server_read,
            &mut client_write,
            state.fault.subscribe(),
            None,
        );
        tokio::select! {
            _ = kills.changed() => End::Killed,
            end = async {
                tokio::pin!(upstream, downstream);
                tokio::select! {
                    end = &mut upstream => match end {
                        End::Closed => downstream.await,
                        other => other,
                    },
                    end = &mut downstream => match end {
                        End::Closed => upstream.await,
                        other => other,
                    },
                }
            } => end,
        }
    };
    match end {
        End::Closed => {}
        End::Killed => {
            reset(client);
            reset(server);
        }
        End::ReplyLost => {
            let _ = server.shutdown().await;
            drop(server);
            reset(client);
        }
    }
}

/// Copies `from` to `to` as the fault says. It keeps reading while hanging (holding the
/// data), so a peer that gives up is noticed at once; held data goes out when the hang ends.
async fn pump(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    mut fault: watch::Receiver<Fault>,
    lose_reply_after: Option<&Mutex<Option<Vec<u8>>>>,
) -> End {
    let mut buf = vec![0u8; 16 * 1024];
    let mut held = Vec::new();
    loop {
        tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return End::Closed;
                }
                Ok(n) => held.extend_from_slice(&buf[..n]),
            },
            changed = fault.changed() => if changed.is_err() { return End::Killed },
        }
        let current = *fault.borrow_and_update();
        match current {
            Fault::Hang => continue,
            Fault::Reset => return End::Killed,
            Fault::Delay(d) => tokio::time::sleep(d).await,
            Fault::Pass => {}
        }
        if held.is_empty() {
            continue;
        }
        if to.write_all(&held).await.is_err() {
            return End::Closed;
        }
        let lost = lose_reply_after.is_some_and(|marker| {
            let mut marker = marker.lock().expect("lock");
            let hit = marker
                .as_deref()
                .is_some_and(|p| held.windows(p.len()).any(|w| w == p));
            if hit {
                *marker = None;
            }
            hit
        });
        held.clear();
        if lost {
            return End::ReplyLost;
        }
    }
}

/// Sockets of this process (the test's, and the in-process gateway's) connected to `to`: every
/// open descriptor whose peer address is `to`. A socket its owner has closed is not counted,
/// whatever the other end has noticed yet.
pub fn client_sockets(to: SocketAddr) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("list /proc/self/fd")
        .filter_map(|entry| {
            entry
                .ok()?
                .file_name()
                .to_str()?
                .parse::<libc::c_int>()
                .ok()
        })
        .filter(|fd| peer_of(*fd) == Some(to))
        .count()
}

/// The peer address of descriptor `fd`, if it is a connected socket.
fn peer_of(fd: libc::c_int) -> Option<SocketAddr> {
    // SAFETY: getpeername writes at most `len` bytes into the storage socket2 provides. A
    // descriptor closed (or reused) since it was listed makes it fail (or describe another
    // socket): a miscount at worst, never memory unsafety.
    #[allow(unsafe_code)]
    let peer = unsafe {
        socket2::SockAddr::try_init(|storage, len| {
            if libc::getpeername(fd, storage.cast(), len) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        })
    };
    peer.ok()?.1.as_socket()
}

/// Closes `stream` with an RST.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

#[tokio::test]
async fn client_sockets_count_what_clients_hold() {
    let proxy = FaultProxy::start("127.0.0.1:9".parse().unwrap()).await;
    proxy.set(Fault::Hang);
    let a = TcpStream::connect(proxy.addr()).await.unwrap();
    let b = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(proxy.client_sockets(), 2);
    drop(a);
    assert_eq!(
        proxy.client_sockets(),
        1,
        "closed by its owner: no longer held"
    );
    drop(b);
    assert_eq!(proxy.client_sockets(), 0);
    assert!(proxy.settle_to(0, Duration::from_secs(2)).await);
    assert!(proxy.peak_client_sockets() >= 1);
}

#[test]
fn urls_get_the_proxy_authority() {
    assert_eq!(
        with_authority("postgres://postgres@127.0.0.1:5432/db?x=1", "127.0.0.1:9"),
        "postgres://postgres@127.0.0.1:9/db?x=1"
    );
    assert_eq!(
        with_authority("postgres://u:p@h/db", "127.0.0.1:9"),
        "postgres://u:p@127.0.0.1:9/db"
    );
    assert_eq!(
        with_authority("postgresql://localhost", "127.0.0.1:9"),
        "postgresql://127.0.0.1:9"
    );
}

//! WebSocket tunnels through the gateway to the echo upstream: an authenticated tunnel lives
//! only as long as its session (logout, revocation on another instance, disable, role loss,
//! expiry close both sides in bounded time; other tunnels stay up), and an upgrade that the
//! session cookie authenticates needs a same-site `Origin` (cross-site WebSocket hijacking).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::http;
use crate::support::{PUBLIC_ORIGIN, TestDb, TestGateway, echo, user};

const PASSWORD: &str = "correct horse battery";
const COOKIE: &str = "__Host-gw_session";
/// `sessions.tunnel_recheck` in these tests.
const RECHECK: Duration = Duration::from_millis(250);
/// `sessions.revocation_poll` in these tests.
const POLL: Duration = Duration::from_secs(1);
/// Scheduling slack on two busy cores.
const MARGIN: Duration = Duration::from_secs(1);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A TCP relay in front of an upstream that counts the connections made through it and
/// those still open, so a test sees what reached the upstream and what was closed.
struct Tap {
    addr: SocketAddr,
    opened: Arc<AtomicUsize>,
    live: Arc<AtomicUsize>,
}

impl Tap {
    async fn start(target: SocketAddr) -> Tap {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tap");
        let addr = listener.local_addr().expect("tap address");
        let (opened, live) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (o, l) = (opened.clone(), live.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                o.fetch_add(1, Ordering::SeqCst);
                l.fetch_add(1, Ordering::SeqCst);
                let l = l.clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                    l.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Tap { addr, opened, live }
    }

    fn opened(&self) -> usize {
        self.opened.load(Ordering::SeqCst)
    }

    /// Waits up to `limit` until exactly `want` upstream connections are open.
    async fn until_live(&self, want: usize, limit: Duration) {
        let started = Instant::now();
        while self.live.load(Ordering::SeqCst) != want {
            assert!(
                started.elapsed() < limit,
                "{} upstream connections still open, want {want}",
                self.live.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The credential an upgrade request presents.
#[derive(Clone, Copy)]
enum As<'a> {
    Anonymous,
    Bearer(&'a str),
    Cookie(&'a str),
}

/// Opens a WebSocket to `path` through the gateway, with `origin` as its `Origin` header;
/// the HTTP status on refusal.
async fn open(gw: SocketAddr, path: &str, who: As<'_>, origin: Option<&str>) -> Result<Ws, u16> {
    let mut request = format!("ws://{gw}{path}").into_client_request().unwrap();
    let h = request.headers_mut();
    match who {
        As::Anonymous => {}
        As::Bearer(token) => {
            h.insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        As::Cookie(token) => {
            h.insert("cookie", format!("{COOKIE}={token}").parse().unwrap());
        }
    }
    if let Some(o) = origin {
        h.insert("origin", o.parse().unwrap());
    }
    let connect = tokio_tungstenite::connect_async(request);
    match tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .expect("the upgrade hung")
    {
        Ok((mut ws, _)) => {
            // The echo upstream first describes the upgrade request it received.
            let hello = next_text(&mut ws).await;
            assert!(hello.contains("\"headers\""), "{hello}");
            Ok(ws)
        }
        Err(WsError::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

async fn next_text(ws: &mut Ws) -> String {
    let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("no message within 5 s")
        .expect("the tunnel closed")
        .expect("a message");
    msg.into_text().expect("text").to_string()
}

/// A message goes through the tunnel and comes back.
async fn echoes(ws: &mut Ws, what: &str) {
    ws.send(Message::text(what)).await.expect("send");
    assert_eq!(next_text(ws).await, what, "{what}");
}

/// Waits until the client sees the tunnel end (a close frame, an error or the end of the
/// stream); panics if it is still open after `limit`. Returns when it ended.
async fn closed_within(ws: &mut Ws, limit: Duration, what: &str) -> Duration {
    let started = Instant::now();
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => panic!("{what}: the tunnel was still open after {limit:?}"),
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => {
                let took = started.elapsed();
                eprintln!("{what}: tunnel closed after {took:?}");
                return took;
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Once closing is done, `live` tunnels remain open to the upstream behind `tap`, and several
/// rechecks later each of `others` still carries messages.
async fn the_others_stay<const N: usize>(tap: &Tap, live: usize, others: [&mut Ws; N]) {
    tap.until_live(live, MARGIN).await;
    tokio::time::sleep(3 * RECHECK).await;
    for ws in others {
        echoes(ws, "still here").await;
    }
}

/// A gateway with `/` (required) and `/admin` (role admin) through `tap`, and `/public`
/// (public) to `public`, re-checking tunnels every [`RECHECK`]; `env` on top.
async fn start(db: &TestDb, tap: &Tap, public: SocketAddr, env: &[(&str, &str)]) -> TestGateway {
    let mut builder = TestGateway::builder(db)
        .route("/", tap.addr, "required")
        .route_with("/admin", tap.addr, "required", "roles = [\"admin\"]")
        .route("/public", public, "public")
        .env("GATEWAY_SESSIONS__TUNNEL_RECHECK", "250ms")
        .env("GATEWAY_SESSIONS__REVOCATION_POLL", "1s")
        .env("GATEWAY_SESSIONS__CACHE_TTL", "5m");
    for (k, v) in env {
        builder = builder.env(k, v);
    }
    builder.start().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_closes_the_tunnel_of_that_session_only() {
    let db = TestDb::new().await;
    let tap = Tap::start(echo().await).await;
    let gw = start(&db, &tap, echo().await, &[]).await;
    user(&db, "ann@example.com", PASSWORD, &[]).await;
    let token = gw.login("ann@example.com", PASSWORD).await;
    let other = gw.login("ann@example.com", PASSWORD).await;

    let mut mine = open(gw.addr, "/ws", As::Bearer(&token), None)
        .await
        .unwrap();
    let mut theirs = open(gw.addr, "/ws", As::Bearer(&other), None)
        .await
        .unwrap();
    let mut public = open(gw.addr, "/public/ws", As::Anonymous, None)
        .await
        .unwrap();
    echoes(&mut mine, "before").await;
    tap.until_live(2, MARGIN).await;

    let out = http::req("POST", gw.addr, "/auth/logout")
        .bearer(&token)
        .send()
        .await;
    assert_eq!(out.status, 200, "{}", out.body);
    closed_within(&mut mine, RECHECK + MARGIN, "logged-out session").await;
    // The upstream side of that tunnel is closed too; the other session's is not, and the
    // public tunnel has no session to lose.
    the_others_stay(&tap, 1, [&mut theirs, &mut public]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_disable_and_role_loss_elsewhere_close_tunnels_on_every_instance() {
    let db = TestDb::new().await;
    let tap = Tap::start(echo().await).await;
    let public_up = echo().await;
    let a = start(&db, &tap, public_up, &[]).await;
    let b = start(&db, &tap, public_up, &[]).await;
    user(&db, "ann@example.com", PASSWORD, &["admin"]).await;
    user(&db, "bob@example.com", PASSWORD, &[]).await;
    user(&db, "cy@example.com", PASSWORD, &[]).await;
    let ann = a.login("ann@example.com", PASSWORD).await;
    let bob = a.login("bob@example.com", PASSWORD).await;
    let cy = a.login("cy@example.com", PASSWORD).await;

    // Every tunnel is on b; every change is made through a or the database.
    let mut ann_admin = open(b.addr, "/admin/ws", As::Bearer(&ann), None)
        .await
        .unwrap();
    let mut ann_app = open(b.addr, "/ws", As::Bearer(&ann), None).await.unwrap();
    let mut bob_ws = open(b.addr, "/ws", As::Cookie(&bob), Some(PUBLIC_ORIGIN))
        .await
        .unwrap();
    let mut cy_ws = open(b.addr, "/ws", As::Bearer(&cy), None).await.unwrap();
    let mut public = open(b.addr, "/public/ws", As::Anonymous, None)
        .await
        .unwrap();
    for ws in [&mut ann_admin, &mut ann_app, &mut bob_ws, &mut cy_ws] {
        echoes(ws, "hello").await;
    }

    let out = http::req("POST", a.addr, "/auth/logout")
        .bearer(&bob)
        .send()
        .await;
    assert_eq!(out.status, 200, "{}", out.body);
    gateway::users::set_status(
        db.pool(),
        "cy@example.com",
        gateway::users::Status::Disabled,
    )
    .await
    .unwrap();
    gateway::users::remove_role(db.pool(), "ann@example.com", "admin")
        .await
        .unwrap();
    let bound = POLL + RECHECK + MARGIN;
    let (bob_took, cy_took, role_took) = tokio::join!(
        closed_within(&mut bob_ws, bound, "logout on the other instance"),
        closed_within(&mut cy_ws, bound, "user disabled"),
        closed_within(&mut ann_admin, bound, "admin role removed"),
    );
    eprintln!("closed after {bob_took:?}, {cy_took:?}, {role_took:?} (bound {bound:?})");
    // ann keeps her session and her tunnel on the route that needs no role.
    the_others_stay(&tap, 1, [&mut ann_app, &mut public]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_closes_when_its_session_expires() {
    let db = TestDb::new().await;
    let tap = Tap::start(echo().await).await;
    let gw = start(
        &db,
        &tap,
        echo().await,
        &[("GATEWAY_SESSIONS__LIFETIME", "3s")],
    )
    .await;
    user(&db, "dee@example.com", PASSWORD, &[]).await;
    let started = Instant::now();
    let token = gw.login("dee@example.com", PASSWORD).await;
    let mut ws = open(gw.addr, "/ws", As::Bearer(&token), None)
        .await
        .unwrap();
    echoes(&mut ws, "alive").await;
    let lifetime = Duration::from_secs(3);
    closed_within(&mut ws, lifetime + RECHECK + MARGIN, "expired session").await;
    let at = started.elapsed();
    assert!(
        at >= lifetime - Duration::from_millis(500),
        "closed at {at:?}, before the session expired"
    );
    tap.until_live(0, MARGIN).await;
}

#[tokio::test]
async fn cookie_authenticated_upgrades_need_a_same_site_origin() {
    let db = TestDb::new().await;
    let tap = Tap::start(echo().await).await;
    let public_tap = Tap::start(echo().await).await;
    let app = "https://app.gw.test";
    let gw = start(
        &db,
        &tap,
        public_tap.addr,
        &[("GATEWAY_SERVER__WEBSOCKET_ORIGINS", app)],
    )
    .await;
    user(&db, "eve@example.com", PASSWORD, &[]).await;
    let token = gw.login("eve@example.com", PASSWORD).await;
    let cookie = As::Cookie(&token);

    // Refused before anything reaches the upstream.
    for (what, origin) in [
        ("cross-site", Some("https://evil.example")),
        (
            "sibling of the allowed origin",
            Some("https://evil.gw.test"),
        ),
        ("null", Some("null")),
        ("no Origin at all", None),
    ] {
        let refused = open(gw.addr, "/ws", cookie, origin).await;
        assert_eq!(refused.err(), Some(403), "{what}");
    }
    let raw = http::get(gw.addr, "/ws")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("origin", "https://evil.example")
        .header("cookie", &format!("{COOKIE}={token}"))
        .send()
        .await;
    assert_eq!(raw.status, 403);
    assert_eq!(raw.error_code(), "cross_origin");
    assert_eq!(tap.opened(), 0, "a refused upgrade reached the upstream");

    // The gateway's own origin and the configured ones are accepted.
    for origin in [PUBLIC_ORIGIN, app] {
        let mut ws = open(gw.addr, "/ws", cookie, Some(origin))
            .await
            .unwrap_or_else(|s| panic!("{origin}: {s}"));
        echoes(&mut ws, origin).await;
    }
    // A Bearer token is no ambient credential: no Origin needed, any Origin accepted.
    for origin in [None, Some("https://evil.example")] {
        let mut ws = open(gw.addr, "/ws", As::Bearer(&token), origin)
            .await
            .unwrap_or_else(|s| panic!("bearer with {origin:?}: {s}"));
        echoes(&mut ws, "bearer").await;
    }
    assert_eq!(tap.opened(), 4);
    // A public route never looks at credentials, so a cross-site page may open it (the
    // cookie is stripped before the upstream, as on every route).
    let mut ws = open(gw.addr, "/public/ws", cookie, Some("https://evil.example"))
        .await
        .expect("public routes are not checked");
    echoes(&mut ws, "public").await;
    assert_eq!(public_tap.opened(), 1);
}

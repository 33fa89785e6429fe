//! Graceful shutdown of the real binary: a SIGTERM while requests are in flight loses none of
//! them, new connections are refused, and the process exits 0 within the grace period; the
//! same under continuous load. With `server.accept_grace`, `/readyz` fails first while new
//! requests are still served, so a load balancer can take the instance out in time.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::support::http::{SendError, get};
use crate::support::{ServeProcess, TestDb, echo, sessions, user, wait};

/// The real binary with one route, `/` to `upstream` with policy `auth`, and this grace period.
async fn serve(db: &TestDb, upstream: SocketAddr, auth: &str, grace: &str) -> ServeProcess {
    serve_with(db, upstream, auth, grace, "0s").await
}

/// [`serve`] with this `server.accept_grace`.
async fn serve_with(
    db: &TestDb,
    upstream: SocketAddr,
    auth: &str,
    grace: &str,
    accept_grace: &str,
) -> ServeProcess {
    let config = format!(
        "[[routes]]\npath_prefix = \"/\"\nupstream = \"http://{upstream}\"\nauth = \"{auth}\"\n"
    );
    ServeProcess::start(
        db,
        &config,
        &[
            ("GATEWAY_SERVER__SHUTDOWN_GRACE", grace),
            ("GATEWAY_SERVER__ACCEPT_GRACE", accept_grace),
            ("GATEWAY_LOG__LEVEL", "warn"),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests() {
    let db = TestDb::new().await;
    let (up, arrived) = recording_upstream(Duration::from_millis(1500)).await;
    let mut gateway = serve(&db, up, "public", "10s").await;
    let listen = gateway.addr;
    let in_flight: Vec<_> = (0..20)
        .map(|i| {
            tokio::spawn(async move {
                let probe = i.to_string();
                get(listen, "/slow")
                    .header("x-probe", &probe)
                    .send()
                    .await
                    .status
            })
        })
        .collect();
    wait::until(
        "all 20 requests at the upstream",
        Duration::from_secs(10),
        || {
            let n = arrived.lock().unwrap().len();
            async move { n == 20 }
        },
    )
    .await;
    gateway.terminate();
    wait::until(
        "a draining gateway refuses new connections",
        Duration::from_secs(5),
        || async { tokio::net::TcpStream::connect(listen).await.is_err() },
    )
    .await;
    for call in in_flight {
        assert_eq!(
            call.await.unwrap(),
            200,
            "an in-flight request was lost during shutdown"
        );
    }
    let status = tokio::time::timeout(Duration::from_secs(10), gateway.child.wait())
        .await
        .expect("the gateway must exit within the grace period")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
}

/// An upstream that records each request's `x-probe` header as the request arrives, then
/// answers 200 after `delay`.
async fn recording_upstream(delay: Duration) -> (SocketAddr, Arc<Mutex<HashSet<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let arrived = Arc::new(Mutex::new(HashSet::new()));
    let seen = arrived.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            let service = service_fn(move |req: Request<Incoming>| {
                if let Some(probe) = req.headers().get("x-probe").and_then(|v| v.to_str().ok()) {
                    seen.lock().unwrap().insert(probe.to_string());
                }
                async move {
                    tokio::time::sleep(delay).await;
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (addr, arrived)
}

/// What one client request came to.
enum Outcome {
    /// A response, and whether the request was sent before SIGTERM and answered after it.
    Answered { status: u16, spanned_sigterm: bool },
    /// Connected, then the exchange broke off.
    Broken { probe: String, error: String },
}

/// Clients loop requests (each on a new connection, each with a session the gateway has not
/// cached, so the database is used while draining) against a 300 ms upstream while SIGTERM
/// arrives. Every response is a 200; the requests in flight at SIGTERM complete; after it,
/// new connections are refused; a connection that breaks off is one whose request never
/// reached the upstream (the kernel's accept queue, reset when the listener closes); the
/// process exits 0 within the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_continuous_load_cuts_off_no_request() {
    let db = TestDb::new().await;
    let id = user(&db, "sig@example.com", "correct horse battery", &[]).await;
    let (up, arrived) = recording_upstream(Duration::from_millis(300)).await;
    let tokens = Arc::new(Mutex::new(sessions(&db, &id, 80).await));
    let grace = Duration::from_secs(5);
    let mut gateway = serve(&db, up, "required", "5s").await;
    let listen = gateway.addr;
    let terminated = Arc::new(AtomicBool::new(false));
    let probes = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (tokens, terminated, probes) = (tokens.clone(), terminated.clone(), probes.clone());
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                loop {
                    let Some(token) = tokens.lock().unwrap().pop() else {
                        return (outcomes, false);
                    };
                    let probe = probes.fetch_add(1, Ordering::SeqCst).to_string();
                    let sent_before = !terminated.load(Ordering::SeqCst);
                    let sent = get(listen, "/slow")
                        .bearer(&token)
                        .header("x-probe", &probe)
                        .try_send();
                    match tokio::time::timeout(Duration::from_secs(10), sent).await {
                        Err(_) => panic!("request {probe} got no answer within 10 s"),
                        Ok(Ok(resp)) => outcomes.push(Outcome::Answered {
                            status: resp.status,
                            spanned_sigterm: sent_before && terminated.load(Ordering::SeqCst),
                        }),
                        Ok(Err(SendError::Connect(_))) => return (outcomes, true),
                        Ok(Err(SendError::Exchange(error))) => {
                            outcomes.push(Outcome::Broken { probe, error })
                        }
                    }
                }
            })
        })
        .collect();
    // SIGTERM once requests are flowing: some answered, more at the upstream.
    wait::until(
        "load flowing through the gateway",
        Duration::from_secs(10),
        || {
            let n = arrived.lock().unwrap().len();
            async move { n >= 8 }
        },
    )
    .await;
    terminated.store(true, Ordering::SeqCst);
    let signalled = std::time::Instant::now();
    gateway.terminate();
    let status = tokio::time::timeout(grace + Duration::from_secs(1), gateway.child.wait())
        .await
        .expect("the gateway must exit within the grace period")
        .unwrap();
    let exited_after = signalled.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        exited_after <= grace,
        "exited {exited_after:?} after SIGTERM"
    );

    let (mut answered, mut spanning, mut broken) = (0, 0, 0);
    for client in clients {
        let (outcomes, refused) = client.await.unwrap();
        assert!(refused, "a client ran out of sessions before being refused");
        for outcome in outcomes {
            match outcome {
                Outcome::Answered {
                    status,
                    spanned_sigterm,
                } => {
                    assert_eq!(status, 200, "a request failed during shutdown");
                    answered += 1;
                    spanning += usize::from(spanned_sigterm);
                }
                Outcome::Broken { probe, error } => {
                    assert!(
                        !arrived.lock().unwrap().contains(&probe),
                        "request {probe} reached the upstream and was cut off: {error}"
                    );
                    broken += 1;
                }
            }
        }
    }
    eprintln!(
        "{answered} answered ({spanning} across SIGTERM), {broken} never accepted, exit after {exited_after:?}"
    );
    assert!(
        spanning >= 2,
        "too few requests in flight at SIGTERM ({spanning}) to show anything"
    );
}

/// The status of `GET /readyz` on the admin listener (0 when nothing answers).
async fn readyz(admin: SocketAddr) -> u16 {
    match get(admin, "/readyz").try_send().await {
        Ok(resp) => resp.status,
        Err(_) => 0,
    }
}

/// With `server.accept_grace = "2s"`, SIGTERM turns `/readyz` to 503 at once while requests on
/// new connections are still answered 200 until the grace ends; then the listener closes and
/// the process exits 0. (Without the grace, the listener would close at the signal and a
/// balancer still sending there would see refused connections.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_fails_readyz_first_and_serves_through_the_accept_grace() {
    let db = TestDb::new().await;
    let accept_grace = Duration::from_secs(2);
    let mut gateway = serve_with(&db, echo().await, "public", "5s", "2s").await;
    let (listen, admin) = (gateway.addr, gateway.admin);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while readyz(admin).await != 200 {
        assert!(std::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    gateway.terminate();
    let signalled = std::time::Instant::now();
    loop {
        match readyz(admin).await {
            503 => break,
            200 => assert!(
                signalled.elapsed() < Duration::from_millis(500),
                "/readyz still 200 {:?} after SIGTERM",
                signalled.elapsed()
            ),
            other => panic!("/readyz answered {other} during the grace"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let not_ready_after = signalled.elapsed();

    let mut served = 0;
    while signalled.elapsed() + Duration::from_millis(300) < accept_grace {
        let resp = get(listen, "/served-in-the-grace").try_send().await;
        match resp {
            Ok(resp) => assert_eq!(resp.status, 200, "a request in the grace failed"),
            Err(e) => panic!(
                "a new connection {:?} after SIGTERM, within the accept grace, failed: {e:?}",
                signalled.elapsed()
            ),
        }
        served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served >= 10, "only {served} requests in the grace");

    let refused_by = signalled + accept_grace + Duration::from_secs(3);
    while tokio::net::TcpStream::connect(listen).await.is_ok() {
        assert!(
            std::time::Instant::now() < refused_by,
            "still accepting {:?} after SIGTERM",
            signalled.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let closed_after = signalled.elapsed();
    assert!(
        closed_after >= accept_grace,
        "the listener closed {closed_after:?} after SIGTERM, before the accept grace"
    );
    let status = tokio::time::timeout(Duration::from_secs(10), gateway.child.wait())
        .await
        .expect("the gateway must exit after the grace")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    eprintln!(
        "not ready {not_ready_after:?} after SIGTERM, {served} requests served in the grace, listener closed after {closed_after:?}"
    );
}

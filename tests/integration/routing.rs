//! Routing from outside, beyond the path spellings of `proxy`: a query or fragment (raw or
//! percent-encoded) never widens a public prefix, and `/auth/verify` decides every such URI
//! exactly as the proxy does; a malformed original URI from a trusted proxy is refused, never
//! allowed; and the session cache maps every token to its own identity whatever the `Host`,
//! the route, the connection or the concurrency.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::support::http::{get, raw};
use crate::support::{TestDb, TestGateway, echo};

/// `/` and `/public` public, `/private` required: a dodge shows as a 200 without credentials
/// that the upstream received under `/private`.
async fn gateway(db: &TestDb, env: &[(&str, &str)]) -> TestGateway {
    let up = echo().await;
    let mut builder = TestGateway::builder(db)
        .route("/", up, "public")
        .route("/public", up, "public")
        .route("/private", up, "required");
    for (k, v) in env {
        builder = builder.env(k, v);
    }
    builder.start().await
}

/// Whether `path` is under `/private`, the way the gateway matches prefixes.
fn is_private(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower == "/private" || lower.starts_with("/private/")
}

/// The status of a raw `GET target` (sent byte for byte), and the path and query the upstream
/// received when it answered 200.
async fn raw_get(addr: SocketAddr, target: &str) -> (u16, Option<(String, String)>) {
    let request = format!("GET {target} HTTP/1.1\r\nhost: gw.test\r\nconnection: close\r\n\r\n");
    let out = raw(addr, request.as_bytes(), Duration::from_secs(5)).await;
    let status: u16 = out
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{target}: no status line in {out:?}"));
    let seen = (status == 200).then(|| {
        let body = &out[out.find("\r\n\r\n").expect("a header block") + 4..];
        let echoed: serde_json::Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{target}: not the echo's JSON ({e}): {body}"));
        let field = |k: &str| echoed[k].as_str().unwrap_or_default().to_string();
        (field("path"), field("query"))
    });
    (status, seen)
}

/// Request targets that put `?` or `#` (raw, percent-encoded, double-encoded) between a
/// public prefix and a private path, or the other way round.
const QUERY_AND_FRAGMENT_TRICKS: &[&str] = &[
    "/public?/../private",
    "/public?x/../private",
    "/public?%2F..%2Fprivate",
    "/public/?/../private",
    "/public#/../private",
    "/public/#/../../private",
    "/private#/public",
    "/private?/public",
    "/private?x=/public#/public",
    "/public%3F/../private",
    "/public%3f/../private",
    "/public%3F%2F..%2Fprivate",
    "/public%23/../private",
    "/public%2523/../private",
    "/public%253F/../private",
    "/public/..%3F/private",
    "/public/%3F../private",
    "/private%3F/public",
    "/private%23/public",
    "/private%3f",
    "/?/private",
    "/#/private",
    "/%3F/private",
];

#[tokio::test]
async fn query_and_fragment_never_widen_a_public_prefix() {
    let db = TestDb::new().await;
    let gw = gateway(&db, &[("GATEWAY_SERVER__TRUSTED_PROXIES", "127.0.0.1")]).await;
    for target in QUERY_AND_FRAGMENT_TRICKS {
        let (status, seen) = raw_get(gw.addr, target).await;
        match (status, seen) {
            (200, Some((path, query))) => {
                assert!(
                    !is_private(&path),
                    "{target} reached {path}?{query} without credentials"
                );
                assert!(
                    !target.contains('#') || !query.contains('#'),
                    "{target}: a fragment was forwarded: {query}"
                );
            }
            (400 | 401, _) => {}
            (other, _) => panic!("{target} answered {other}"),
        }
        // Forward-auth decides the same URI the same way.
        let verify = get(gw.addr, "/auth/verify")
            .header("x-original-uri", target)
            .send()
            .await;
        assert_eq!(
            verify.status, status,
            "{target}: /auth/verify answered {} where the proxy answered {status}",
            verify.status
        );
    }
}

/// Spellings of `/private` that a backend may read as it: trailing dots and spaces (IIS),
/// an extension (Spring's suffix patterns), a dotless ı (Java's case-insensitive compare),
/// fullwidth letters (NFKC), raw or encoded.
const PREFIX_LOOK_ALIKES: &[&str] = &[
    "/private%20",
    "/private%20/x",
    "/private.",
    "/private..",
    "/private%2e",
    "/private%2E%2E",
    "/private.json",
    "/private.json?x=1",
    "/Private.JSON",
    "/pr%C4%B1vate",
    "/PR%C4%B0VATE",
    "/%EF%BD%90rivate",
    "/%EF%BC%B0RIVATE/x",
    "/pr\u{131}vate",
    "/\u{ff50}rivate",
    "/private%C2%A0",
    "/private%E2%80%8B",
];

#[tokio::test]
async fn look_alikes_of_a_protected_prefix_never_reach_a_looser_route() {
    let db = TestDb::new().await;
    let gw = gateway(&db, &[("GATEWAY_SERVER__TRUSTED_PROXIES", "127.0.0.1")]).await;
    for target in PREFIX_LOOK_ALIKES {
        let (status, seen) = raw_get(gw.addr, target).await;
        assert!(
            matches!(status, 400 | 401),
            "{target} answered {status}, the upstream saw {seen:?}"
        );
        // Forward-auth decides the same URI the same way (sent percent-encoded when raw:
        // a header value is ASCII).
        let uri: String = target
            .bytes()
            .map(|b| {
                if b.is_ascii() {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let verify = get(gw.addr, "/auth/verify")
            .header("x-original-uri", &uri)
            .send()
            .await;
        let expected = if target.is_ascii() { status } else { 400 };
        assert_eq!(
            verify.status, expected,
            "{target}: /auth/verify answered {} where the proxy answered {status}",
            verify.status
        );
    }
    // Extensions elsewhere, and names that only start like the prefix, are routed as usual.
    for target in [
        "/public/x.json",
        "/app.js",
        "/privateer.json",
        "/private/x.json",
    ] {
        let (status, _) = raw_get(gw.addr, target).await;
        let expected = if target.starts_with("/private/") {
            401
        } else {
            200
        };
        assert_eq!(status, expected, "{target}");
    }
}

#[tokio::test]
async fn verify_refuses_malformed_original_uris_from_trusted_peers() {
    let db = TestDb::new().await;
    let gw = gateway(&db, &[("GATEWAY_SERVER__TRUSTED_PROXIES", "127.0.0.1")]).await;
    // A well-formed public URI is allowed: anything below that is not 200 was refused.
    let public = get(gw.addr, "/auth/verify")
        .header("x-original-uri", "/public/x")
        .send()
        .await;
    assert_eq!(public.status, 200);
    for uri in [
        "",
        " ",
        "private",
        "*",
        "http://gw.test/private",
        "https://evil.example/public",
        "/private%",
        "/private%zz",
        "/private%00",
        "/private%0d%0ax-user-id:%201",
        "/pri vate",
        "/private\t",
        "/%2e%2e/private",
        "/public/..%2fprivate",
        "/public%2f..%2fprivate",
        "/public/../private",
        "/public/./../private",
        "/public%3F/../private",
        "/public%23/../private",
        "/public;/../private",
        "/public%ff",
    ] {
        for name in ["x-original-uri", "x-forwarded-uri"] {
            let r = get(gw.addr, "/auth/verify").header(name, uri).send().await;
            assert!(
                matches!(r.status, 400 | 401),
                "{name}: {uri:?} answered {}",
                r.status
            );
        }
    }
    // Bytes that are not ASCII, and a header the client library would refuse to send.
    for value in [&b"/public/\xff"[..], b"/public/\x80/../private"] {
        let mut request =
            b"GET /auth/verify HTTP/1.1\r\nhost: gw.test\r\nconnection: close\r\nx-original-uri: "
                .to_vec();
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n\r\n");
        let out = raw(gw.addr, &request, Duration::from_secs(5)).await;
        assert!(
            out.starts_with("HTTP/1.1 400") || out.starts_with("HTTP/1.1 401"),
            "{value:?}: {out}"
        );
    }
    for method in ["", "GE T", "GET /"] {
        let r = get(gw.addr, "/auth/verify")
            .header("x-original-uri", "/public/x")
            .header("x-forwarded-method", method)
            .send()
            .await;
        assert_eq!(r.status, 400, "method {method:?}: {}", r.body);
    }
}

#[tokio::test]
async fn verify_trusts_only_the_listed_proxies() {
    let db = TestDb::new().await;
    // A trusted network that the test client (127.0.0.1) is not in.
    let gw = gateway(
        &db,
        &[("GATEWAY_SERVER__TRUSTED_PROXIES", "10.0.0.0/8, ::1")],
    )
    .await;
    for name in ["x-original-uri", "x-forwarded-uri"] {
        let r = get(gw.addr, "/auth/verify")
            .header(name, "/public/x")
            .header("x-forwarded-for", "10.1.2.3")
            .send()
            .await;
        assert_eq!(r.status, 400, "{name} from an unlisted peer: {}", r.body);
    }
}

/// A user with `sessions` sessions made directly in the database, before the gateway starts,
/// so every token is cold for it: (user id, admin?, [(token, session id)]).
async fn cold_user(
    db: &TestDb,
    i: usize,
    sessions: usize,
) -> (String, bool, Vec<(String, String)>) {
    let admin = i % 2 == 0;
    let roles: &[&str] = if admin { &["admin"] } else { &[] };
    let email = format!("user{i}@example.com");
    let id = crate::support::user(db, &email, "correct horse battery", roles).await;
    let mut tokens = Vec::new();
    for _ in 0..sessions {
        let s = gateway::sessions::create(
            db.pool(),
            &crate::support::token_keys(),
            &id,
            &Default::default(),
            Duration::from_secs(3600),
        )
        .await
        .expect("session");
        tokens.push((s.token, s.id.to_string()));
    }
    (id, admin, tokens)
}

/// One request and the identity it must come back with.
struct Probe {
    target: &'static str,
    host: &'static str,
    token: String,
    cookie: bool,
    owner: String,
    session: String,
    want: u16,
}

impl Probe {
    /// The request, in absolute form (HTTP/2: the host is the `:authority`) or with a `Host`
    /// header (HTTP/1.1).
    fn request(&self, absolute: bool) -> Request<Full<Bytes>> {
        let mut b = if absolute {
            Request::get(format!("http://{}{}", self.host, self.target))
        } else {
            Request::get(self.target).header("host", self.host)
        };
        b = if self.cookie {
            b.header("cookie", format!("__Host-gw_session={}", self.token))
        } else {
            b.header("authorization", format!("Bearer {}", self.token))
        };
        b.body(Full::new(Bytes::new())).expect("request")
    }

    /// Checks the answer: the expected status and, when served, exactly this token's identity.
    async fn check(&self, resp: Response<Incoming>) {
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(
            status, self.want,
            "{} for {}: {body:?}",
            self.target, self.owner
        );
        if status == 200 {
            let echoed: serde_json::Value = serde_json::from_slice(&body).expect("echo JSON");
            let headers = &echoed["headers"];
            assert_eq!(
                (
                    headers["x-user-id"].as_str(),
                    headers["x-session-id"].as_str()
                ),
                (Some(self.owner.as_str()), Some(self.session.as_str())),
                "{} via host {} answered with another identity",
                self.target,
                self.host
            );
        }
    }
}

/// Sends every probe at once: those at even indexes (odd ones in the second `round`) over one
/// shared HTTP/2 connection, the others each on a fresh HTTP/1.1 connection.
async fn burst(addr: SocketAddr, probes: &[Probe], round: usize) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (shared, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    join_all(probes.iter().enumerate().map(|(i, probe)| {
        let mut shared = shared.clone();
        async move {
            let resp = if (i + round) % 2 == 0 {
                shared.send_request(probe.request(true)).await
            } else {
                let stream = TcpStream::connect(addr).await.expect("connect");
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .expect("h1 handshake");
                tokio::spawn(conn);
                sender.send_request(probe.request(false)).await
            };
            probe.check(resp.expect("a response")).await;
        }
    }))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cache_never_mixes_users_hosts_routes_or_connections() {
    let db = TestDb::new().await;
    let users = join_all((0..12).map(|i| cold_user(&db, i, 3))).await;
    let up = echo().await;
    let gw = TestGateway::builder(&db)
        .route("/a", up, "required")
        .route("/b", up, "optional")
        .route_with("/admin", up, "required", "roles = [\"admin\"]")
        .env("GATEWAY_SESSIONS__REVOCATION_OVERLAP", "0s")
        .start()
        .await;
    let hosts = [
        "gw.test",
        "a.example",
        "B.EXAMPLE",
        "gw.test:8443",
        "127.0.0.1",
    ];
    let mut probes = Vec::new();
    for (owner, admin, tokens) in &users {
        for (token, session) in tokens {
            let admin_status = if *admin { 200 } else { 403 };
            for (target, want) in [("/a/x", 200), ("/b/y", 200), ("/admin/z", admin_status)] {
                for cookie in [false, true] {
                    probes.push(Probe {
                        target,
                        host: hosts[probes.len() % hosts.len()],
                        token: token.clone(),
                        cookie,
                        owner: owner.clone(),
                        session: session.clone(),
                        want,
                    });
                }
            }
        }
    }
    // Interleave the tokens so concurrent cold loads of different tokens overlap.
    probes.sort_by_key(|p| (p.target, p.cookie, p.host));
    let tokens = users.iter().map(|(_, _, t)| t.len()).sum::<usize>() as u64;
    burst(gw.addr, &probes, 0).await;
    assert_eq!(
        gw.session_queries(),
        tokens,
        "one query per token, whatever the host, route or connection"
    );
    burst(gw.addr, &probes, 1).await;
    assert_eq!(
        gw.session_queries(),
        tokens,
        "the warm round hits the cache"
    );
}

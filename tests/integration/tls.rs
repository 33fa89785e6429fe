//! The TLS listener: rustls with ALPN (h2 and http/1.1 on one port), the handshake timeout,
//! and the header read timeout of plain connections.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{TestDb, TestGateway, echo, user};

const PASSWORD: &str = "correct horse battery";

struct Tls {
    _dir: tempfile::TempDir,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    der: rustls::pki_types::CertificateDer<'static>,
}

fn self_signed() -> Tls {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    Tls {
        der: ck.cert.der().clone(),
        _dir: dir,
        cert,
        key,
    }
}

async fn connect(
    tls: &Tls,
    addr: std::net::SocketAddr,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(tls.der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let stream = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), stream)
        .await
        .expect("TLS handshake")
}

#[tokio::test]
async fn tls_serves_h2_and_http1_by_alpn() {
    let db = TestDb::new().await;
    let tls = self_signed();
    let gw = TestGateway::builder(&db)
        .route("/", echo().await, "required")
        .tls(&tls.cert, &tls.key)
        .start()
        .await;
    user(&db, "ann@example.com", PASSWORD, &[]).await;
    // Log in over TLS with HTTP/1.1.
    let stream = connect(&tls, gw.addr, &[b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let body = serde_json::json!({"email": "ann@example.com", "password": PASSWORD}).to_string();
    let login = http::Request::post("/auth/login")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from(body)))
        .unwrap();
    let resp = sender.send_request(login).await.unwrap();
    assert_eq!(resp.status(), 200);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let token = serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();

    // And use the session over h2.
    let stream = connect(&tls, gw.addr, &[b"h2", b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("https://localhost/over-h2")
        .header("authorization", format!("Bearer {token}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let echoed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(echoed["headers"]["x-forwarded-proto"], "https");
    assert!(echoed["headers"]["x-user-id"].is_string());
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_cut_off() {
    let db = TestDb::new().await;
    let tls = self_signed();
    let gw = TestGateway::builder(&db)
        .route("/", echo().await, "public")
        .tls(&tls.cert, &tls.key)
        .env("GATEWAY_SERVER__TLS_HANDSHAKE_TIMEOUT", "300ms")
        .start()
        .await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("the server must close a silent connection")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "closed after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn slow_request_headers_are_cut_off() {
    let db = TestDb::new().await;
    let gw = TestGateway::builder(&db)
        .route("/", echo().await, "public")
        .env("GATEWAY_SERVER__HEADER_READ_TIMEOUT", "300ms")
        .start()
        .await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "closed after {:?}",
        started.elapsed()
    );
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

#[tokio::test]
async fn bad_tls_files_refuse_to_start_naming_the_key() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("missing.pem");
    let builder = TestGateway::builder(&db).tls(&cert, &cert);
    match gateway::server::Server::bind(builder.config()).await {
        Ok(_) => panic!("a missing certificate must refuse to start"),
        Err(f) => {
            assert_eq!(f.exit_code(), 2);
            assert!(f.to_string().contains("server.tls_cert"), "{f}");
        }
    }
}

/// `GET path` over TLS with the protocol `alpn` picks (`h2` or `http/1.1`); the response head.
async fn tls_get(
    tls: &Tls,
    addr: std::net::SocketAddr,
    alpn: &[u8],
    path: &str,
) -> http::Response<hyper::body::Incoming> {
    let stream = connect(tls, addr, &[alpn]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(alpn));
    let request = http::Request::get(format!("https://localhost{path}"))
        .header("accept", "text/html")
        .body(Empty::<Bytes>::new())
        .unwrap();
    if alpn == b"h2" {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        sender.send_request(request).await.unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let (mut parts, body) = request.into_parts();
        parts.uri = path.parse().unwrap();
        parts.headers.insert("host", "localhost".parse().unwrap());
        sender
            .send_request(http::Request::from_parts(parts, body))
            .await
            .unwrap()
    }
}

/// An upstream with a policy of its own: every answer says `Strict-Transport-Security:
/// max-age=0` (which would make browsers forget the host's HSTS).
async fn upstream_with_its_own_hsts() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = hyper::service::service_fn(|_req| async {
                http::Response::builder()
                    .header("strict-transport-security", "max-age=0")
                    .body(http_body_util::Full::new(Bytes::from_static(b"ok")))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

/// Every answer of the TLS listener carries `Strict-Transport-Security` (the upstreams', one
/// with a policy of its own replaced, the gateway's refusals and its own pages, over h1 and
/// h2), as configured; plain HTTP carries none, and `server.hsts = false` turns it off.
#[tokio::test]
async fn tls_answers_carry_strict_transport_security() {
    let db = TestDb::new().await;
    let tls = self_signed();
    let up = echo().await;
    let own = upstream_with_its_own_hsts().await;
    let start = |env: &'static [(&'static str, &'static str)], with_tls: bool| {
        let mut builder = TestGateway::builder(&db)
            .route("/", up, "required")
            .route("/public", up, "public")
            .route("/own", own, "public");
        if with_tls {
            builder = builder.tls(&tls.cert, &tls.key);
        }
        for (k, v) in env {
            builder = builder.env(k, v);
        }
        builder.start()
    };
    let sts = |resp: &http::Response<hyper::body::Incoming>| -> Vec<String> {
        resp.headers()
            .get_all("strict-transport-security")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    };

    let configured = start(
        &[
            ("GATEWAY_SERVER__HSTS_MAX_AGE", "30d"),
            ("GATEWAY_SERVER__HSTS_INCLUDE_SUBDOMAINS", "true"),
        ],
        true,
    )
    .await;
    for alpn in [&b"h2"[..], b"http/1.1"] {
        for (path, status) in [
            ("/public/x", 200),
            ("/own/x", 200),
            ("/x", 302),
            ("/auth/login", 200),
        ] {
            let resp = tls_get(&tls, configured.addr, alpn, path).await;
            assert_eq!(resp.status(), status, "{path}");
            assert_eq!(
                sts(&resp),
                ["max-age=2592000; includeSubDomains"],
                "{path} over {}",
                String::from_utf8_lossy(alpn)
            );
        }
    }

    let default = start(&[], true).await;
    let resp = tls_get(&tls, default.addr, b"h2", "/public/x").await;
    assert_eq!(sts(&resp), ["max-age=31536000"], "on by default with TLS");

    let off = start(&[("GATEWAY_SERVER__HSTS", "false")], true).await;
    let resp = tls_get(&tls, off.addr, b"http/1.1", "/public/x").await;
    assert!(sts(&resp).is_empty(), "hsts = false");

    let plain = start(&[], false).await;
    for path in ["/public/x", "/x", "/auth/login"] {
        let resp = crate::support::http::get(plain.addr, path).send().await;
        assert_eq!(
            resp.header("strict-transport-security"),
            None,
            "plain HTTP must not send HSTS ({path})"
        );
    }
}

//! Protocol abuse from a raw socket: request smuggling spellings, folded and oversized headers,
//! h2c upgrade attempts, dripped headers and slow bodies. Each request either gets a clear 4xx
//! or reaches the upstream exactly as the gateway understood it — never two requests where one
//! was sent.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::http::raw;
use crate::support::{TestDb, TestGateway, echo};

const WAIT: Duration = Duration::from_millis(1500);

async fn public_gateway(db: &TestDb, env: &[(&str, &str)]) -> TestGateway {
    let mut b = TestGateway::builder(db).route("/", echo().await, "public");
    for (k, v) in env {
        b = b.env(k, v);
    }
    b.start().await
}

fn status_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("HTTP/1.1 "))
        .collect()
}

/// hyper (RFC 9112 section 6.3) lets `Transfer-Encoding` win over `Content-Length`, drops
/// the `Content-Length`, and closes the connection after the response, so whatever follows
/// the chunked body is never read as a second request.
#[tokio::test]
async fn content_length_with_transfer_encoding_cannot_smuggle() {
    let db = TestDb::new().await;
    let gw = public_gateway(&db, &[]).await;
    let smuggle = "POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n\
                   0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n";
    let out = raw(gw.addr, smuggle.as_bytes(), WAIT).await;
    let lines = status_lines(&out);
    assert_eq!(lines.len(), 1, "exactly one response: {out}");
    if lines[0].starts_with("HTTP/1.1 200") {
        assert!(
            out.to_ascii_lowercase().contains("connection: close"),
            "{out}"
        );
        assert!(
            out.contains("\"body_bytes\":0"),
            "the chunked body (empty) is the body: {out}"
        );
    } else {
        assert!(lines[0].starts_with("HTTP/1.1 400"), "{out}");
    }
    assert!(
        !out.contains("/smuggled"),
        "a smuggled request reached the upstream: {out}"
    );
}

#[tokio::test]
async fn conflicting_content_lengths_are_refused() {
    let db = TestDb::new().await;
    let gw = public_gateway(&db, &[]).await;
    let out = raw(
        gw.addr,
        b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ncontent-length: 30\r\n\r\nabc",
        WAIT,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
}

#[tokio::test]
async fn obs_folded_headers_are_refused() {
    let db = TestDb::new().await;
    let gw = public_gateway(&db, &[]).await;
    let out = raw(
        gw.addr,
        b"GET /a HTTP/1.1\r\nhost: x\r\nx-note: a\r\n x-user-id: root\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
}

#[tokio::test]
async fn oversized_and_too_many_headers_are_refused() {
    let db = TestDb::new().await;
    let gw = public_gateway(
        &db,
        &[
            ("GATEWAY_SERVER__MAX_HEADER_BYTES", "16384"),
            ("GATEWAY_SERVER__MAX_HEADERS", "32"),
        ],
    )
    .await;
    let big = format!(
        "GET /a HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let out = raw(gw.addr, big.as_bytes(), WAIT).await;
    assert!(
        out.starts_with("HTTP/1.1 431"),
        "{}",
        &out[..out.len().min(200)]
    );
    let mut many = String::from("GET /a HTTP/1.1\r\nhost: x\r\n");
    for i in 0..64 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let out = raw(gw.addr, many.as_bytes(), WAIT).await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
}

#[tokio::test]
async fn an_h2c_upgrade_is_not_honoured() {
    let db = TestDb::new().await;
    let gw = public_gateway(&db, &[]).await;
    let out = raw(
        gw.addr,
        b"GET /a HTTP/1.1\r\nhost: x\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAAP__\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let body = &out[out.find("\r\n\r\n").unwrap() + 4..];
    assert!(
        !body.contains("\"upgrade\""),
        "the upgrade reached the upstream: {body}"
    );
    assert!(!body.contains("http2-settings"), "{body}");
}

#[tokio::test]
async fn a_slow_body_does_not_hold_the_gateway() {
    let db = TestDb::new().await;
    let gw = public_gateway(&db, &[("GATEWAY_UPSTREAM__RESPONSE_TIMEOUT", "1s")]).await;
    let mut slow = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    slow.write_all(b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\nabc")
        .await
        .unwrap();
    // Others are served meanwhile.
    let other = crate::support::http::get(gw.addr, "/b").send().await;
    assert_eq!(other.status, 200);
    // The stalled upload ends in bounded time (the upstream waits for a body that never comes).
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut buf)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stalled for {:?}",
        started.elapsed()
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 504") || text.starts_with("HTTP/1.1 502"),
        "{text}"
    );
}

/// Slowloris: header lines dripped one every 100 ms never reset the header read timeout; the
/// whole header block must arrive within `server.header_read_timeout`.
#[tokio::test]
async fn dripped_headers_are_cut_off_at_the_header_read_timeout() {
    let db = TestDb::new().await;
    let gw = public_gateway(&db, &[("GATEWAY_SERVER__HEADER_READ_TIMEOUT", "500ms")]).await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(b"GET /a HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut lines = 0;
    let cut_off = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if stream.write_all(b"x-drip: 1\r\n").await.is_err() {
            break started.elapsed();
        }
        lines += 1;
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break started.elapsed(),
            Ok(Ok(n)) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                assert!(text.starts_with("HTTP/1.1 408"), "{text}");
                break started.elapsed();
            }
            Err(_) if started.elapsed() > Duration::from_secs(5) => {
                panic!("still reading dripped headers after {lines} lines")
            }
            Err(_) => {}
        }
    };
    eprintln!("dripped headers cut off after {cut_off:?} ({lines} lines)");
    assert!(cut_off < Duration::from_millis(1500), "{cut_off:?}");
}

/// The echo's JSON description of what the upstream received, from a raw 200 answer.
fn echoed(out: &str) -> serde_json::Value {
    assert_eq!(out.get(8..13), Some(" 200 "), "{out}");
    let body = &out[out.find("\r\n\r\n").expect("a header block") + 4..];
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not the echo's JSON ({e}): {body}"))
}

/// RFC 9112 section 3.2: a request without a `Host` (HTTP/1.1), with two, or with one that
/// is not a host is a 400 before anything is routed; a valid one reaches the upstream as
/// `X-Forwarded-Host` in one normalized spelling.
#[tokio::test]
async fn a_missing_duplicated_listed_or_invalid_host_is_refused() {
    let db = TestDb::new().await;
    let gw = public_gateway(&db, &[]).await;
    for (what, head) in [
        ("missing", "GET /a HTTP/1.1\r\n"),
        (
            "missing, absolute-form",
            "GET http://gw.test/a HTTP/1.1\r\n",
        ),
        ("markup", "GET /a HTTP/1.1\r\nhost: a b<script>\r\n"),
        (
            "duplicated",
            "GET /a HTTP/1.1\r\nhost: gw.test\r\nhost: evil.example\r\n",
        ),
        (
            "duplicated alike",
            "GET /a HTTP/1.1\r\nhost: gw.test\r\nhost: gw.test\r\n",
        ),
        ("list", "GET /a HTTP/1.1\r\nhost: gw.test, evil.example\r\n"),
        (
            "userinfo",
            "GET /a HTTP/1.1\r\nhost: gw.test@evil.example\r\n",
        ),
        ("empty", "GET /a HTTP/1.1\r\nhost: \r\n"),
        ("numeric", "GET /a HTTP/1.1\r\nhost: 2130706433\r\n"),
        ("bad port", "GET /a HTTP/1.1\r\nhost: gw.test:99999\r\n"),
        (
            "on /auth",
            "GET /auth/login HTTP/1.1\r\nhost: a b<script>\r\n",
        ),
        (
            "invalid beside an absolute-form target",
            "GET http://gw.test/a HTTP/1.1\r\nhost: a b<script>\r\n",
        ),
    ] {
        let request = format!("{head}connection: close\r\n\r\n");
        let out = raw(gw.addr, request.as_bytes(), WAIT).await;
        assert!(out.starts_with("HTTP/1.1 400"), "{what}: {out}");
        assert!(
            !out.contains("\"headers\""),
            "{what} reached the upstream: {out}"
        );
    }
    for (head, forwarded) in [
        ("GET /a HTTP/1.1\r\nhost: GW.Test.:80\r\n", Some("gw.test")),
        (
            "GET /a HTTP/1.1\r\nhost: gw.test:8080\r\n",
            Some("gw.test:8080"),
        ),
        ("GET /a HTTP/1.1\r\nhost: [0:0::1]\r\n", Some("[::1]")),
        (
            "GET http://Other.Example/a HTTP/1.1\r\nhost: gw.test\r\n",
            Some("other.example"),
        ),
        ("GET /a HTTP/1.0\r\n", None),
    ] {
        let request = format!("{head}connection: close\r\n\r\n");
        let echoed = echoed(&raw(gw.addr, request.as_bytes(), WAIT).await);
        assert_eq!(
            echoed["headers"]["x-forwarded-host"].as_str(),
            forwarded,
            "{head}"
        );
    }
}

/// The gateway is not a forward proxy: a CONNECT, whatever its target, is a 405 and never
/// reaches an upstream.
#[tokio::test]
async fn connect_is_refused_with_405() {
    let db = TestDb::new().await;
    let gw = public_gateway(&db, &[]).await;
    for head in [
        "CONNECT /public/m HTTP/1.1\r\nhost: gw.test\r\n",
        "CONNECT gw.test:443 HTTP/1.1\r\nhost: gw.test:443\r\n",
        "CONNECT 127.0.0.1:22 HTTP/1.1\r\nhost: 127.0.0.1:22\r\n",
        "CONNECT /auth/login HTTP/1.1\r\nhost: gw.test\r\n",
    ] {
        let request = format!("{head}connection: close\r\n\r\n");
        let out = raw(gw.addr, request.as_bytes(), WAIT).await;
        assert!(out.starts_with("HTTP/1.1 405"), "{head}: {out}");
        assert!(out.contains("method_not_allowed"), "{head}: {out}");
    }
}

/// The value of a counter in the Prometheus text of `/metrics` whose labels include all of
/// `labels` (0 when there is none).
async fn counter(admin: std::net::SocketAddr, name: &str, labels: &[&str]) -> u64 {
    let text = crate::support::http::get(admin, "/metrics")
        .send()
        .await
        .body;
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// A chunked body the client garbled is the client's fault: 400, counted as a request body
/// error, never as an upstream one (which would page whoever watches upstream health).
#[tokio::test]
async fn malformed_chunked_bodies_are_the_clients_fault() {
    let db = TestDb::new().await;
    let gw = TestGateway::builder(&db)
        .route("/chunked-probe", echo().await, "public")
        .start()
        .await;
    let route = "route=\"/chunked-probe\"";
    let before = counter(
        gw.admin,
        "gateway_request_body_errors_total",
        &["kind=\"malformed\"", route],
    )
    .await;
    let bodies: &[(&str, &[u8])] = &[
        ("0x3 chunk size", b"0x3\r\nabc\r\n0\r\n\r\n"),
        (
            "overflowing chunk size",
            b"fffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        ),
        ("bare LF", b"3\nabc\n0\n\n"),
        ("newline in an extension", b"3;ext\nabc\r\n0\r\n\r\n"),
        ("data longer than its size", b"3\r\nabcdef\r\n0\r\n\r\n"),
        (
            "malformed after a good chunk",
            b"3\r\nabc\r\nzz\r\nabc\r\n0\r\n\r\n",
        ),
    ];
    for (what, body) in bodies {
        let mut request =
            b"POST /chunked-probe HTTP/1.1\r\nhost: gw.test\r\ntransfer-encoding: chunked\r\n\r\n"
                .to_vec();
        request.extend_from_slice(body);
        let out = raw(gw.addr, &request, WAIT).await;
        assert!(out.starts_with("HTTP/1.1 400"), "{what}: {out}");
        assert!(out.contains("malformed request body"), "{what}: {out}");
    }
    let after = counter(
        gw.admin,
        "gateway_request_body_errors_total",
        &["kind=\"malformed\"", route],
    )
    .await;
    assert_eq!(
        after - before,
        bodies.len() as u64,
        "counted as the client's"
    );
    assert_eq!(
        counter(gw.admin, "gateway_upstream_errors_total", &[route]).await,
        0,
        "counted as the upstream's"
    );
    // A good chunked body still goes through.
    let out = raw(
        gw.addr,
        b"POST /chunked-probe HTTP/1.1\r\nhost: gw.test\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(echoed(&out)["body_bytes"], 3);
}

/// `Transfer_Encoding` and `Content_Length` are what a CGI-style backend reads as
/// `Transfer-Encoding` and `Content-Length`: they never reach it, on any route.
#[tokio::test]
async fn underscore_spellings_of_framing_headers_never_reach_the_upstream() {
    let db = TestDb::new().await;
    let gw = public_gateway(&db, &[]).await;
    let out = raw(
        gw.addr,
        b"POST /a HTTP/1.1\r\nhost: gw.test\r\ncontent-length: 3\r\nContent_Length: 300\r\n\
          Transfer_Encoding: chunked\r\ntransfer_encoding: identity\r\nHost_: x\r\n\
          Keep_Alive: 1\r\nX_Custom: kept\r\nconnection: close\r\n\r\nabc",
        WAIT,
    )
    .await;
    let echoed = echoed(&out);
    let headers = echoed["headers"].as_object().expect("headers");
    for name in ["content_length", "transfer_encoding", "keep_alive"] {
        assert!(
            !headers.contains_key(name),
            "{name} reached the upstream: {headers:?}"
        );
    }
    assert_eq!(headers["x_custom"], "kept");
    assert_eq!(echoed["body_bytes"], 3);
}

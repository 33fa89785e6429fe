//! HTTP/2 abuse against the plain listener (h2c with prior knowledge), written frame by frame:
//! rapid reset (CVE-2023-44487), an endless CONTINUATION sequence (CVE-2024-27316 class), an
//! HPACK bomb and a header list over `server.max_header_bytes`. Each must end in a GOAWAY, a
//! closed connection or a refused stream after a bounded number of bytes, while other clients
//! keep being served.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::watch;

use crate::support::http::get;
use crate::support::{TestDb, TestGateway, echo};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const CANCEL: u32 = 0x8;
const PROTOCOL_ERROR: u32 = 0x1;
const COMPRESSION_ERROR: u32 = 0x9;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// The limit under test: below hyper's own default (16 KiB), so the test sees that the
/// gateway's setting is applied, and small enough that a few frames cross it.
const MAX_HEADER_BYTES: usize = 8 * 1024;

/// A gateway with one public route to the echo upstream, on a database of its own.
async fn gateway() -> (TestDb, TestGateway) {
    let db = TestDb::new().await;
    let gw = TestGateway::builder(&db)
        .route("/", echo().await, "public")
        .env(
            "GATEWAY_SERVER__MAX_HEADER_BYTES",
            &MAX_HEADER_BYTES.to_string(),
        )
        .start()
        .await;
    (db, gw)
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frame length");
    assert!(len < 1 << 24);
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 section 5.1); `flags` fills the rest of
/// the first byte.
fn hpack_int(out: &mut Vec<u8>, flags: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A string literal without Huffman coding.
fn hpack_str(out: &mut Vec<u8>, s: &[u8]) {
    hpack_int(out, 0, 7, s.len());
    out.extend_from_slice(s);
}

/// `GET http://gw.test{path}`: indexed `:method GET` and `:scheme http`, literal `:path` and
/// `:authority` without indexing (so every stream costs the decoder the same).
fn request_block(path: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x86];
    hpack_int(&mut b, 0x00, 4, 4);
    hpack_str(&mut b, path.as_bytes());
    hpack_int(&mut b, 0x00, 4, 1);
    hpack_str(&mut b, b"gw.test");
    b
}

/// A GOAWAY frame: the last stream the server processed and the error code.
#[derive(Debug, Clone, Copy)]
struct Goaway {
    last: u32,
    code: u32,
}

/// What the server said on a raw connection, as the reader task saw it.
struct Seen {
    goaway: watch::Receiver<Option<Goaway>>,
    closed: Arc<AtomicBool>,
}

impl Seen {
    fn ended(&self) -> bool {
        self.goaway.borrow().is_some() || self.closed.load(Ordering::SeqCst)
    }

    /// Waits up to `limit` for a GOAWAY or the end of the connection; the GOAWAY, if any.
    async fn end(&mut self, limit: Duration) -> Option<Goaway> {
        let closed = self.closed.clone();
        let _ = tokio::time::timeout(limit, async {
            while self.goaway.borrow().is_none() && !closed.load(Ordering::SeqCst) {
                tokio::select! {
                    _ = self.goaway.changed() => {}
                    () = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            }
        })
        .await;
        assert!(
            self.ended(),
            "the server neither sent GOAWAY nor closed within {limit:?}"
        );
        *self.goaway.borrow()
    }
}

/// A client connection speaking raw frames: preface and an empty SETTINGS sent, the server's
/// SETTINGS acknowledged by the reader task, which records a GOAWAY and the end.
async fn raw_h2(addr: SocketAddr) -> (OwnedWriteHalf, Seen) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut read, mut write) = stream.into_split();
    write.write_all(PREFACE).await.expect("preface");
    write
        .write_all(&frame(SETTINGS, 0, 0, &[]))
        .await
        .expect("settings");
    let (goaway_tx, goaway) = watch::channel(None);
    let closed = Arc::new(AtomicBool::new(false));
    let c = closed.clone();
    let (ack_tx, mut ack_rx) = tokio::sync::mpsc::channel::<()>(1);
    tokio::spawn(async move {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = match read.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            while buf.len() >= 9 {
                let len =
                    usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
                if buf.len() < 9 + len {
                    break;
                }
                let (kind, flags) = (buf[3], buf[4]);
                let payload = &buf[9..9 + len];
                match kind {
                    SETTINGS if flags & ACK == 0 => {
                        let _ = ack_tx.try_send(());
                    }
                    GOAWAY if payload.len() >= 8 => {
                        let last = u32::from_be_bytes(payload[0..4].try_into().expect("4 bytes"));
                        let code = u32::from_be_bytes(payload[4..8].try_into().expect("4 bytes"));
                        goaway_tx.send_replace(Some(Goaway { last, code }));
                    }
                    _ => {}
                }
                buf.drain(..9 + len);
            }
        }
        c.store(true, Ordering::SeqCst);
    });
    // The server's SETTINGS comes first; acknowledge it so the connection is established.
    if tokio::time::timeout(Duration::from_secs(5), ack_rx.recv())
        .await
        .is_ok()
    {
        let _ = write.write_all(&frame(SETTINGS, ACK, 0, &[])).await;
    }
    (write, Seen { goaway, closed })
}

/// A normal HTTP/1.1 request on a fresh connection must keep answering 200 promptly; returns
/// the slowest of the requests made until `stop` is set.
async fn probe_until(addr: SocketAddr, stop: Arc<AtomicBool>) -> (u32, Duration) {
    let (mut count, mut slowest) = (0, Duration::ZERO);
    while !stop.load(Ordering::SeqCst) || count == 0 {
        let started = Instant::now();
        let resp = tokio::time::timeout(Duration::from_secs(10), get(addr, "/probe").send())
            .await
            .expect("a probe request hung during the attack");
        assert_eq!(resp.status, 200, "{}", resp.body);
        slowest = slowest.max(started.elapsed());
        count += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (count, slowest)
}

/// One rapid-reset connection: HEADERS + RST_STREAM pairs, 100 at a time, until the server
/// ends the connection or `attempt` streams were written. Returns the GOAWAY and how long the
/// server took to send it or close.
async fn rapid_reset(addr: SocketAddr, attempt: u32) -> (Option<Goaway>, Duration) {
    let (mut attacker, mut seen) = raw_h2(addr).await;
    let block = request_block("/reset");
    let started = Instant::now();
    let mut id = 1u32;
    while id < 2 * attempt && !seen.ended() {
        let mut batch = Vec::new();
        for _ in 0..100 {
            batch.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &block));
            batch.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
            id += 2;
        }
        if attacker.write_all(&batch).await.is_err() {
            break;
        }
    }
    let goaway = seen.end(Duration::from_secs(5)).await;
    (goaway, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_ends_in_goaway_while_others_are_served() {
    let (_db, gw) = gateway().await;
    let stop = Arc::new(AtomicBool::new(false));
    let probe = tokio::spawn(probe_until(gw.addr, stop.clone()));
    // A sustained attack: the attacker reconnects as soon as a connection is ended, and offers
    // 20 000 reset streams on each.
    let attack = Instant::now();
    let (mut connections, mut most, mut slowest_end) = (0, 0, Duration::ZERO);
    while attack.elapsed() < Duration::from_millis(1500) {
        let (goaway, took) = rapid_reset(gw.addr, 20_000).await;
        let goaway = goaway.expect("a reset flood must end in a GOAWAY");
        assert_eq!(goaway.code, ENHANCE_YOUR_CALM, "{goaway:?}");
        // Client streams are odd: the GOAWAY's last stream id says how many were processed.
        let processed = goaway.last.div_ceil(2);
        most = most.max(processed);
        slowest_end = slowest_end.max(took);
        connections += 1;
    }
    stop.store(true, Ordering::SeqCst);
    let (probes, slowest) = probe.await.expect("probe task");
    eprintln!(
        "rapid reset: {connections} connections, each ended by GOAWAY after at most {most} \
         processed streams and {slowest_end:?}; {probes} probes meanwhile, slowest {slowest:?}"
    );
    assert!(
        most <= 256,
        "a connection processed {most} reset streams before the GOAWAY"
    );
    assert!(
        slowest_end < Duration::from_secs(2),
        "GOAWAY after {slowest_end:?}"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "other clients waited {slowest:?} during the attack"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_continuation_sequence_is_cut_off() {
    let (_db, gw) = gateway().await;
    let (mut attacker, mut seen) = raw_h2(gw.addr).await;
    // A header block that never ends: a HEADERS frame without END_HEADERS, then
    // CONTINUATION frames of 1 KiB of harmless literal headers, each without END_HEADERS.
    let started = Instant::now();
    attacker
        .write_all(&frame(HEADERS, END_STREAM, 1, &request_block("/flood")))
        .await
        .expect("headers");
    let mut piece = Vec::new();
    while piece.len() < 1000 {
        hpack_int(&mut piece, 0x00, 4, 0);
        hpack_str(&mut piece, b"x-flood");
        hpack_str(&mut piece, b"0123456789abcdef0123456789abcdef");
    }
    let continuation = frame(CONTINUATION, 0, 1, &piece);
    let mut written = 0usize;
    const ATTEMPT: usize = 100_000;
    while written < ATTEMPT && !seen.ended() {
        if attacker.write_all(&continuation).await.is_err() {
            break;
        }
        written += 1;
        if written % 8 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let code = seen.end(Duration::from_secs(5)).await.map(|g| g.code);
    eprintln!(
        "CONTINUATION flood: {written} frames ({} KiB) written before the end, GOAWAY {code:?}, after {:?}",
        written * continuation.len() / 1024,
        started.elapsed()
    );
    assert!(
        matches!(
            code,
            Some(ENHANCE_YOUR_CALM | COMPRESSION_ERROR | PROTOCOL_ERROR)
        ),
        "an endless header block must end in GOAWAY: {code:?}"
    );
    // The server stopped the sequence long before the attacker did, and so buffered at most
    // what it read until then.
    assert!(
        written * continuation.len() < 4 * 1024 * 1024,
        "{written} frames were accepted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hpack_bomb_is_refused() {
    let (_db, gw) = gateway().await;
    let (mut attacker, mut seen) = raw_h2(gw.addr).await;
    // One 4000-byte header stored in the dynamic table, then referenced 4000 times by its
    // one-byte index: about 4 KB on the wire, 16 MB once decoded.
    let mut block = request_block("/bomb");
    hpack_int(&mut block, 0x40, 6, 0);
    hpack_str(&mut block, b"x-bomb");
    hpack_str(&mut block, &[b'b'; 4000]);
    for _ in 0..4000 {
        hpack_int(&mut block, 0x80, 7, 62);
    }
    let mut frames = Vec::new();
    let mut chunks = block.chunks(16 * 1024).peekable();
    let first = chunks.next().expect("a block");
    let flags = if chunks.peek().is_none() {
        END_HEADERS | END_STREAM
    } else {
        END_STREAM
    };
    frames.extend(frame(HEADERS, flags, 1, first));
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        frames.extend(frame(
            CONTINUATION,
            if last { END_HEADERS } else { 0 },
            1,
            chunk,
        ));
    }
    let _ = attacker.write_all(&frames).await;
    let code = seen.end(Duration::from_secs(5)).await.map(|g| g.code);
    eprintln!("HPACK bomb: GOAWAY {code:?}");
    assert!(
        matches!(code, Some(ENHANCE_YOUR_CALM | COMPRESSION_ERROR)),
        "a header list far over the limit must end the connection: {code:?}"
    );
    // Others are unaffected.
    assert_eq!(get(gw.addr, "/after").send().await.status, 200);
}

#[tokio::test]
async fn a_header_list_over_the_limit_is_refused_and_the_connection_survives() {
    let (_db, gw) = gateway().await;
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let request = |value: String| {
        http::Request::get(format!("http://{}/big", gw.addr))
            .header("x-big", value)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let big = sender
        .send_request(request("a".repeat(MAX_HEADER_BYTES + 2048)))
        .await;
    match big {
        Ok(resp) => assert_eq!(resp.status(), 431),
        Err(e) => assert!(
            format!("{e:?}").contains("REFUSED_STREAM"),
            "an oversized header list must be refused: {e:?}"
        ),
    }
    // A stream-level refusal: the same connection serves the next request.
    let ok = sender
        .send_request(request("small".into()))
        .await
        .expect("the connection survives");
    assert_eq!(ok.status(), 200);
    let body = ok.into_body().collect().await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains("\"x-big\":\"small\""),
        "{body:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// What scanners found (issue 10): the host of an HTTP/2 request, CONNECT, early refusals.

/// An HTTP/2 client from the `h2` crate, which sends a request as it is built (a `Host`
/// beside `:authority`, a bare CONNECT) without fixing it up.
async fn h2_client(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Sends a bodiless request and reads the whole answer: status and body.
async fn h2_exchange(
    client: &h2::client::SendRequest<Bytes>,
    request: http::Request<()>,
) -> (u16, String) {
    let mut client = client.clone().ready().await.expect("connection ready");
    let (response, _) = client.send_request(request, true).expect("request sent");
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .expect("an answer within 5 s")
        .expect("an answer, not a reset");
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("body");
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// RFC 9113 section 8.3.1 and RFC 9112 section 3.2 on HTTP/2: `:authority` and `Host` must
/// name one valid host; the one believed reaches the upstream normalized.
#[tokio::test]
async fn authority_and_host_must_name_one_valid_host() {
    let (_db, gw) = gateway().await;
    let client = h2_client(gw.addr).await;
    let get = |uri: &str| http::Request::get(uri);
    for (what, request) in [
        (
            "another host",
            get("http://gw.test/a").header("host", "evil.example"),
        ),
        (
            "two hosts",
            get("http://gw.test/a")
                .header("host", "gw.test")
                .header("host", "gw.test"),
        ),
        (
            "markup",
            get("http://gw.test/a").header("host", "a b<script>"),
        ),
        (
            "a list",
            get("http://gw.test/a").header("host", "gw.test, evil.example"),
        ),
        ("a numeric authority", get("http://2130706433/a")),
        ("a userinfo", get("http://user@gw.test/a")),
    ] {
        let (status, body) = h2_exchange(&client, request.body(()).unwrap()).await;
        assert_eq!(status, 400, "{what}: {body}");
    }
    for (request, forwarded) in [
        (get("http://gw.test/a"), "gw.test"),
        (
            get("http://GW.Test.:80/a").header("host", "gw.test"),
            "gw.test",
        ),
        (get("http://gw.test:8443/a"), "gw.test:8443"),
    ] {
        let (status, body) = h2_exchange(&client, request.body(()).unwrap()).await;
        assert_eq!(status, 200, "{body}");
        let echoed: serde_json::Value = serde_json::from_str(&body).expect("echo JSON");
        assert_eq!(echoed["headers"]["x-forwarded-host"], forwarded, "{body}");
    }
    // Without `:authority` (which the h2 client always sends): a `Host` alone names the
    // host, and neither is a 400. `:status` 200 and 400 are in HPACK's static table (indexes 8
    // and 12), so the answer's first header byte tells them apart.
    let path_only = || {
        let mut b = vec![0x82, 0x86];
        hpack_int(&mut b, 0x00, 4, 4);
        hpack_str(&mut b, b"/a");
        b
    };
    let mut with_host = path_only();
    hpack_int(&mut with_host, 0x00, 4, 38);
    hpack_str(&mut with_host, b"gw.test");
    for (block, first_byte) in [(with_host, 0x88), (path_only(), 0x8c)] {
        let frames = raw_exchange(
            gw.addr,
            &[frame(HEADERS, END_HEADERS | END_STREAM, 1, &block)],
        )
        .await;
        let answer = frames
            .iter()
            .find(|f| f.kind == HEADERS && f.stream == 1)
            .unwrap_or_else(|| panic!("no answer on stream 1: {frames:?}"));
        assert_eq!(answer.payload.first(), Some(&first_byte), "{frames:?}");
    }
}

/// One frame as the server sent it.
#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// Opens a raw connection, sends `frames` after the preface and settings, and returns every
/// frame the server sends until stream 1 ends (END_STREAM or RST_STREAM), a GOAWAY, the
/// connection's end or 5 s.
async fn raw_exchange(addr: SocketAddr, frames: &[Vec<u8>]) -> Vec<Frame> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(PREFACE).await.expect("preface");
    stream
        .write_all(&frame(SETTINGS, 0, 0, &[]))
        .await
        .expect("settings");
    stream
        .write_all(&frame(SETTINGS, ACK, 0, &[]))
        .await
        .expect("ack");
    for f in frames {
        stream.write_all(f).await.expect("frame");
    }
    let mut seen = Vec::new();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        while buf.len() >= 9 {
            let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let f = Frame {
                kind: buf[3],
                flags: buf[4],
                stream: u32::from_be_bytes(buf[5..9].try_into().expect("4 bytes")) & 0x7fff_ffff,
                payload: buf[9..9 + len].to_vec(),
            };
            buf.drain(..9 + len);
            let ends = f.kind == GOAWAY
                || (f.stream == 1
                    && (f.kind == RST_STREAM || f.flags & END_STREAM != 0 && f.kind != SETTINGS));
            seen.push(f);
            if ends {
                return seen;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return seen,
        }
    }
}

/// The gateway is not a forward proxy: a CONNECT on HTTP/2 is a 405. Extended CONNECT
/// (RFC 8441, WebSockets over HTTP/2) is not offered: the server's SETTINGS do not enable it
/// and a `:protocol` request is refused by the HTTP/2 layer, so browsers open WebSockets over
/// HTTP/1.1, where they are proxied after authentication.
#[tokio::test]
async fn connect_is_refused_on_http2_and_extended_connect_is_not_offered() {
    let (_db, gw) = gateway().await;
    let client = h2_client(gw.addr).await;
    for authority in ["gw.test:443", "127.0.0.1:22"] {
        let request = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(authority)
            .body(())
            .unwrap();
        let (status, body) = h2_exchange(&client, request).await;
        assert_eq!(status, 405, "CONNECT {authority}: {body}");
    }

    const SETTINGS_ENABLE_CONNECT_PROTOCOL: u16 = 0x8;
    let mut block = Vec::new();
    hpack_int(&mut block, 0x00, 4, 2);
    hpack_str(&mut block, b"CONNECT");
    hpack_int(&mut block, 0x00, 4, 0);
    hpack_str(&mut block, b":protocol");
    hpack_str(&mut block, b"websocket");
    block.push(0x86);
    hpack_int(&mut block, 0x00, 4, 4);
    hpack_str(&mut block, b"/ws");
    hpack_int(&mut block, 0x00, 4, 1);
    hpack_str(&mut block, b"gw.test");
    let frames = raw_exchange(gw.addr, &[frame(HEADERS, END_HEADERS, 1, &block)]).await;
    for settings in frames
        .iter()
        .filter(|f| f.kind == SETTINGS && f.flags & ACK == 0)
    {
        for pair in settings.payload.chunks(6) {
            let id = u16::from_be_bytes([pair[0], pair[1]]);
            let value = u32::from_be_bytes([pair[2], pair[3], pair[4], pair[5]]);
            assert!(
                !(id == SETTINGS_ENABLE_CONNECT_PROTOCOL && value == 1),
                "extended CONNECT is offered"
            );
        }
    }
    let refused = frames.iter().any(|f| {
        (f.kind == RST_STREAM && f.stream == 1 || f.kind == GOAWAY)
            && f.payload.ends_with(&PROTOCOL_ERROR.to_be_bytes())
    });
    assert!(refused, "an extended CONNECT must be refused: {frames:?}");
    assert!(
        !frames.iter().any(|f| f.kind == HEADERS && f.stream == 1),
        "an extended CONNECT was answered: {frames:?}"
    );
}

/// An early refusal on HTTP/2 (here a cross-site login and an anonymous POST to a required
/// route, both answered before the body is read) must let the client finish its upload: no
/// `RST_STREAM` after the answer, which curl 7.88 takes as a failure and loses the answer by.
#[tokio::test]
async fn an_early_refusal_lets_the_client_finish_its_upload() {
    let db = TestDb::new().await;
    let gw = TestGateway::builder(&db)
        .route("/", echo().await, "required")
        .start()
        .await;
    let client = h2_client(gw.addr).await;
    for (path, status) in [("/auth/login", 403), ("/private/upload", 401)] {
        let request = http::Request::post(format!("http://gw.test{path}"))
            .header("origin", "https://evil.example")
            .header("cookie", "__Host-gw_session=gw_x")
            .header("content-type", "application/json")
            .body(())
            .unwrap();
        let mut ready = client.clone().ready().await.expect("connection ready");
        let (response, mut upload) = ready.send_request(request, false).expect("request sent");
        let piece = Bytes::from(vec![b' '; 16 * 1024]);
        upload.send_data(piece.clone(), false).expect("first piece");
        let response = tokio::time::timeout(Duration::from_secs(5), response)
            .await
            .expect("an answer within 5 s")
            .expect("an answer");
        assert_eq!(response.status().as_u16(), status, "{path}");
        // The rest of a 512 KiB body, after the answer.
        for i in 1..32 {
            upload
                .send_data(piece.clone(), i == 31)
                .unwrap_or_else(|e| panic!("{path}: piece {i} refused after the answer: {e}"));
        }
        let reset = tokio::time::timeout(
            Duration::from_secs(2),
            std::future::poll_fn(|cx| upload.poll_reset(cx)),
        )
        .await;
        assert!(
            reset.is_err(),
            "{path}: the stream was reset after the answer: {reset:?}"
        );
    }
}

/// The real curl (7.88 on the test machine), over TLS with ALPN h2 and over h2c, uploading a
/// 512 KiB body that the gateway refuses before reading: every one of 20 tries each way must
/// see the 403 and its JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_sees_an_early_refusal_on_http2_every_time() {
    let curl = ["/usr/bin/curl", "/usr/local/bin/curl"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(curl) = curl else {
        crate::support::skip(
            "curl_sees_an_early_refusal_on_http2_every_time",
            "curl is not installed",
        );
        return;
    };
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let body = dir.path().join("body.json");
    std::fs::write(&body, vec![b' '; 512 * 1024]).unwrap();
    let tls = TestGateway::builder(&db)
        .route("/", echo().await, "required")
        .tls(&cert, &key)
        .start()
        .await;
    let plain = TestGateway::builder(&db)
        .route("/", echo().await, "required")
        .start()
        .await;
    let runs = [
        (
            format!("https://localhost:{}/auth/login", tls.addr.port()),
            "--http2",
        ),
        (
            format!("http://127.0.0.1:{}/auth/login", plain.addr.port()),
            "--http2-prior-knowledge",
        ),
    ];
    for (url, mode) in &runs {
        let mut failures = Vec::new();
        for _ in 0..20 {
            let out = tokio::process::Command::new(curl)
                .args(["-sS", "-k", mode, "-X", "POST", "--resolve"])
                .arg(format!("localhost:{}:127.0.0.1", tls.addr.port()))
                .args([
                    "-H",
                    "origin: https://evil.example",
                    "-H",
                    "cookie: __Host-gw_session=gw_x",
                    "-H",
                    "content-type: application/json",
                    "-w",
                    "\n%{http_code} %{http_version}",
                    "--data-binary",
                ])
                .arg(format!("@{}", body.display()))
                .arg(url)
                .output()
                .await
                .expect("run curl");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            if !(out.status.success()
                && stdout.contains("cross_origin")
                && stdout.ends_with("403 2"))
            {
                failures.push(format!("{:?}: {stdout:?} {stderr:?}", out.status.code()));
            }
        }
        assert!(
            failures.is_empty(),
            "{url} {mode}: {} of 20 tries lost the answer: {failures:#?}",
            failures.len()
        );
    }
}

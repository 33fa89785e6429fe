//! A small HTTP client for the tests: one fresh connection per request (HTTP/1.1, or HTTP/2
//! with prior knowledge), so no pooling hides what a request does. Also a raw-socket helper for
//! requests no well-behaved client would send.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// What the echo upstream says it received: its `headers` object.
    pub fn echoed_headers(&self) -> serde_json::Map<String, serde_json::Value> {
        self.json()["headers"]
            .as_object()
            .cloned()
            .unwrap_or_default()
    }

    /// One header the echo upstream received.
    pub fn echoed(&self, name: &str) -> Option<String> {
        self.echoed_headers()
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    }

    /// The error code of a gateway JSON error body.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// A request under construction.
pub struct Req {
    method: Method,
    addr: SocketAddr,
    target: String,
    headers: Vec<(String, String)>,
    body: Bytes,
    http2: bool,
}

/// Starts a request to `addr` for `target` (path and query, sent as is).
pub fn req(method: &str, addr: SocketAddr, target: &str) -> Req {
    Req {
        method: Method::from_bytes(method.as_bytes()).expect("valid method"),
        addr,
        target: target.to_string(),
        headers: Vec::new(),
        body: Bytes::new(),
        http2: false,
    }
}

/// `GET target`.
pub fn get(addr: SocketAddr, target: &str) -> Req {
    req("GET", addr, target)
}

/// `POST target` with a JSON body.
pub fn post_json(addr: SocketAddr, target: &str, body: &serde_json::Value) -> Req {
    req("POST", addr, target)
        .header("content-type", "application/json")
        .body(body.to_string())
}

impl Req {
    /// Adds a header (a `host` given here replaces the default `Host: <addr>` of HTTP/1.1).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    pub fn http2(mut self) -> Self {
        self.http2 = true;
        self
    }

    /// Sends the request on a new connection and reads the whole response (a body that breaks
    /// off reads as what arrived).
    pub async fn send(self) -> Resp {
        let addr = self.addr;
        let response = self
            .exchange()
            .await
            .unwrap_or_else(|e| panic!("{addr}: {e}"));
        let (parts, body) = response.into_parts();
        let bytes = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Resp {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// Like [`Req::send`], but a failure is returned, not a panic, and a body that breaks off
    /// is a failure too.
    pub async fn try_send(self) -> Result<Resp, SendError> {
        let (parts, body) = self.exchange().await?.into_parts();
        let bytes = body
            .collect()
            .await
            .map_err(|e| SendError::Exchange(format!("body: {e}")))?
            .to_bytes();
        Ok(Resp {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }

    /// Connects, sends, and waits for the response head.
    async fn exchange(self) -> Result<http::Response<hyper::body::Incoming>, SendError> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(SendError::Connect)?;
        let mut builder = Request::builder()
            .method(self.method)
            .uri(self.target.as_str());
        let own_host = self
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("host"));
        if self.http2 {
            builder = builder.uri(format!("http://{}{}", self.addr, self.target));
        } else if !own_host {
            builder = builder.header("host", self.addr.to_string());
        }
        for (k, v) in &self.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let request = builder.body(Full::new(self.body)).expect("valid request");
        let io = TokioIo::new(stream);
        let exchange = |e: hyper::Error| SendError::Exchange(e.to_string());
        if self.http2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(exchange)?;
            tokio::spawn(conn);
            sender.send_request(request).await.map_err(exchange)
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(exchange)?;
            tokio::spawn(conn.with_upgrades());
            sender.send_request(request).await.map_err(exchange)
        }
    }
}

/// Why [`Req::try_send`] got no complete response.
#[derive(Debug)]
pub enum SendError {
    /// No connection (refused, unreachable).
    Connect(std::io::Error),
    /// Connected, but the exchange broke before the response was complete.
    Exchange(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e) => write!(f, "connect: {e}"),
            SendError::Exchange(e) => write!(f, "exchange: {e}"),
        }
    }
}

/// Writes `raw` bytes to `addr` and returns everything read until the server closes or
/// `wait` passes without data.
pub async fn raw(addr: SocketAddr, raw: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(raw).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

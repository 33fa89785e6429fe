//! The HTTP client the scenarios send through: HTTP/1.1 over a bounded pool of keep-alive
//! connections, HTTP/2 multiplexed over a few shared connections (ALPN `h2` over TLS, prior
//! knowledge on `http://`), or a new connection for every request. TLS is rustls with the
//! `ring` provider and the roots of one PEM file. Every request is read to its end and bounded
//! by a timeout; failures come back classified as [`Failure`]s.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, USER_AGENT};
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;

use super::stats::{ErrorKind, Failure};

const USER_AGENT_VALUE: HeaderValue = HeaderValue::from_static("loadtest");
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// How the client talks to its target.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// HTTP/2 (h2 by ALPN over TLS, h2c prior knowledge otherwise) instead of HTTP/1.1.
    pub http2: bool,
    /// PEM file of the CA certificates trusted for `https://` targets.
    pub ca_file: Option<std::path::PathBuf>,
    /// Open a new connection for every request instead of keeping connections alive.
    pub per_request: bool,
    /// HTTP/1.1: most connections open at once (requests wait for a free one).
    /// HTTP/2: how many connections the requests are spread over.
    pub connections: usize,
    /// Longest a request may take, connection included.
    pub timeout: Duration,
}

/// A response read to its end.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

/// A client for one target (scheme, host and port); cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    scheme: Scheme,
    authority: Authority,
    host: HeaderValue,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    http2: bool,
    per_request: bool,
    timeout: Duration,
    h1: H1Pool,
    h2: H2Lanes,
}

struct H1Pool {
    permits: Semaphore,
    idle: Mutex<Vec<http1::SendRequest<Full<Bytes>>>>,
}

struct H2Lanes {
    lanes: Vec<tokio::sync::Mutex<Option<http2::SendRequest<Full<Bytes>>>>>,
    next: AtomicUsize,
}

/// A request failure before any response, and whether a new connection may be tried.
struct SendError {
    failure: Failure,
    stale: bool,
}

impl Client {
    /// A client for `target`'s scheme, host and port (resolved once, here).
    ///
    /// # Errors
    /// A target that is not `http://` or `https://`, a host that does not resolve, an
    /// `https://` target without `ca_file`, or an unreadable CA file.
    pub async fn new(target: &Uri, options: &ClientOptions) -> anyhow::Result<Client> {
        let scheme = target.scheme().cloned().context("the URL has no scheme")?;
        let https = match scheme.as_str() {
            "http" => false,
            "https" => true,
            other => bail!("unsupported scheme {other}: use http:// or https://"),
        };
        let authority = target.authority().cloned().context("the URL has no host")?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let addr = tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("resolving {host}"))?
            .next()
            .with_context(|| format!("{host} has no address"))?;
        let tls = if https {
            let ca = options
                .ca_file
                .as_deref()
                .context("an https:// target needs --ca-file")?;
            let config = tls_config(ca, options.http2)?;
            let name = ServerName::try_from(host.to_string())
                .with_context(|| format!("{host} is not a valid TLS server name"))?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        let connections = options.connections.max(1);
        Ok(Client {
            inner: Arc::new(Inner {
                addr,
                host: HeaderValue::from_str(authority.as_str())
                    .context("the host is not a valid header value")?,
                scheme,
                authority,
                tls,
                http2: options.http2,
                per_request: options.per_request,
                timeout: options.timeout,
                h1: H1Pool {
                    permits: Semaphore::new(connections),
                    idle: Mutex::new(Vec::new()),
                },
                h2: H2Lanes {
                    lanes: (0..connections)
                        .map(|_| tokio::sync::Mutex::new(None))
                        .collect(),
                    next: AtomicUsize::new(0),
                },
            }),
        })
    }

    /// `GET path` with `headers`.
    ///
    /// # Errors
    /// See [`Client::send`].
    pub async fn get(&self, path: &str, headers: &HeaderMap) -> Result<Reply, Failure> {
        self.send(Method::GET, path, headers, None).await
    }

    /// `POST path` with `headers` and a JSON body.
    ///
    /// # Errors
    /// See [`Client::send`].
    pub async fn post_json(
        &self,
        path: &str,
        headers: &HeaderMap,
        json: &serde_json::Value,
    ) -> Result<Reply, Failure> {
        self.send(
            Method::POST,
            path,
            headers,
            Some(Bytes::from(json.to_string())),
        )
        .await
    }

    /// Sends one request and reads the response to its end. Any status is a [`Reply`]: the
    /// scenario decides what it expected.
    ///
    /// # Errors
    /// `connect` when no connection could be made, `timeout` past the timeout, `other` for a
    /// connection that failed mid-request or a body that could not be read.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &HeaderMap,
        json: Option<Bytes>,
    ) -> Result<Reply, Failure> {
        let inner = &self.inner;
        let request = || inner.request(method.clone(), path, headers, json.clone());
        let attempt = async {
            if inner.per_request {
                inner.send_fresh(request()?).await
            } else if inner.http2 {
                inner.send_h2(request()?).await
            } else {
                inner.send_h1(request).await
            }
        };
        match tokio::time::timeout(inner.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(Failure::new(
                ErrorKind::Timeout,
                format!("no complete answer within {:?}", inner.timeout),
            )),
        }
    }
}

impl Inner {
    fn request(
        &self,
        method: Method,
        path: &str,
        headers: &HeaderMap,
        json: Option<Bytes>,
    ) -> Result<Request<Full<Bytes>>, Failure> {
        let uri = if self.http2 {
            Uri::builder()
                .scheme(self.scheme.clone())
                .authority(self.authority.clone())
                .path_and_query(path)
                .build()
        } else {
            Uri::builder().path_and_query(path).build()
        };
        let uri =
            uri.map_err(|e| Failure::new(ErrorKind::Other, format!("bad path {path}: {e}")))?;
        let mut request = Request::new(Full::new(json.clone().unwrap_or_default()));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        let h = request.headers_mut();
        if !self.http2 {
            h.insert(HOST, self.host.clone());
        }
        h.insert(USER_AGENT, USER_AGENT_VALUE);
        if json.is_some() {
            h.insert(CONTENT_TYPE, APPLICATION_JSON);
        }
        for (name, value) in headers {
            h.insert(name.clone(), value.clone());
        }
        Ok(request)
    }

    async fn send_h1(
        &self,
        request: impl Fn() -> Result<Request<Full<Bytes>>, Failure>,
    ) -> Result<Reply, Failure> {
        let _permit = self
            .h1
            .permits
            .acquire()
            .await
            .map_err(|_| Failure::new(ErrorKind::Other, "connection pool closed"))?;
        let idle = self.take_idle();
        let reused = idle.is_some();
        let mut sender = match idle {
            Some(sender) => sender,
            None => self.connect_h1().await?,
        };
        let (reply, sender) = match exchange_h1(sender, request()?).await {
            Ok(done) => done,
            // A kept-alive connection the server closed meanwhile: one retry on a new one.
            Err(e) if reused && e.stale => {
                sender = self.connect_h1().await?;
                exchange_h1(sender, request()?)
                    .await
                    .map_err(|e| e.failure)?
            }
            Err(e) => return Err(e.failure),
        };
        if let Some(sender) = sender {
            self.h1
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(sender);
        }
        Ok(reply)
    }

    fn take_idle(&self) -> Option<http1::SendRequest<Full<Bytes>>> {
        let mut idle = self.h1.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    async fn send_h2(&self, request: Request<Full<Bytes>>) -> Result<Reply, Failure> {
        let lanes = &self.h2.lanes;
        let lane = &lanes[self.h2.next.fetch_add(1, Ordering::Relaxed) % lanes.len()];
        let mut sender = {
            let mut slot = lane.lock().await;
            match slot.as_ref() {
                Some(sender) if !sender.is_closed() => sender.clone(),
                _ => {
                    let sender = self.connect_h2().await?;
                    *slot = Some(sender.clone());
                    sender
                }
            }
        };
        sender
            .ready()
            .await
            .map_err(|e| Failure::new(ErrorKind::Other, format!("h2 connection: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| Failure::new(ErrorKind::Other, format!("h2 request: {e}")))?;
        read_reply(response).await
    }

    async fn send_fresh(&self, request: Request<Full<Bytes>>) -> Result<Reply, Failure> {
        if self.http2 {
            let mut sender = self.connect_h2().await?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| Failure::new(ErrorKind::Other, format!("h2 request: {e}")))?;
            read_reply(response).await
        } else {
            let sender = self.connect_h1().await?;
            exchange_h1(sender, request)
                .await
                .map(|(reply, _)| reply)
                .map_err(|e| e.failure)
        }
    }

    async fn tcp(&self) -> Result<TcpStream, Failure> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| Failure::new(ErrorKind::Connect, format!("connect {}: {e}", self.addr)))?;
        // Small requests must not wait for Nagle; a failure only costs latency.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn connect_h1(&self) -> Result<http1::SendRequest<Full<Bytes>>, Failure> {
        let tcp = self.tcp().await?;
        match &self.tls {
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| Failure::new(ErrorKind::Connect, format!("TLS: {e}")))?;
                handshake_h1(tls).await
            }
            None => handshake_h1(tcp).await,
        }
    }

    async fn connect_h2(&self) -> Result<http2::SendRequest<Full<Bytes>>, Failure> {
        let tcp = self.tcp().await?;
        match &self.tls {
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| Failure::new(ErrorKind::Connect, format!("TLS: {e}")))?;
                if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                    return Err(Failure::new(
                        ErrorKind::Connect,
                        "the server did not negotiate h2 by ALPN",
                    ));
                }
                handshake_h2(tls).await
            }
            None => handshake_h2(tcp).await,
        }
    }
}

async fn handshake_h1<I>(io: I) -> Result<http1::SendRequest<Full<Bytes>>, Failure>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| Failure::new(ErrorKind::Connect, format!("HTTP/1.1 handshake: {e}")))?;
    tokio::spawn(async move {
        // The connection's own errors surface on the request that was using it.
        let _ = conn.await;
    });
    Ok(sender)
}

async fn handshake_h2<I>(io: I) -> Result<http2::SendRequest<Full<Bytes>>, Failure>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .map_err(|e| Failure::new(ErrorKind::Connect, format!("HTTP/2 handshake: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One HTTP/1.1 request on `sender`; gives the sender back when the connection can be reused.
async fn exchange_h1(
    mut sender: http1::SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Result<(Reply, Option<http1::SendRequest<Full<Bytes>>>), SendError> {
    if let Err(e) = sender.ready().await {
        return Err(SendError {
            failure: Failure::new(ErrorKind::Other, format!("HTTP/1.1 connection: {e}")),
            stale: true,
        });
    }
    let response = sender.send_request(request).await.map_err(|e| SendError {
        stale: e.is_canceled() || e.is_incomplete_message(),
        failure: Failure::new(ErrorKind::Other, format!("HTTP/1.1 request: {e}")),
    })?;
    let reply = read_reply(response).await.map_err(|failure| SendError {
        failure,
        stale: false,
    })?;
    let reusable = !sender.is_closed();
    Ok((reply, reusable.then_some(sender)))
}

async fn read_reply(response: http::Response<hyper::body::Incoming>) -> Result<Reply, Failure> {
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| Failure::new(ErrorKind::Other, format!("reading the body: {e}")))?
        .to_bytes();
    Ok(Reply {
        status: parts.status,
        body,
    })
}

/// A rustls client configuration (ring provider) trusting the certificates of `ca_file`,
/// offering `h2` or `http/1.1` by ALPN.
///
/// # Errors
/// An unreadable file, or one without any usable certificate.
pub fn tls_config(ca_file: &Path, http2: bool) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file)
        .with_context(|| format!("reading {} (--ca-file)", ca_file.display()))?;
    for cert in certs {
        let cert = cert.with_context(|| format!("parsing {} (--ca-file)", ca_file.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("a certificate in {} is unusable", ca_file.display()))?;
    }
    if roots.is_empty() {
        bail!("{} (--ca-file) holds no certificate", ca_file.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(config)
}

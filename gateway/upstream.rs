//! The pooled HTTP/1.1 client to the upstreams: connect and response-header timeouts, bodies
//! streamed both ways, failures sorted into 502 (cannot connect, reset) and 504 (too slow), and
//! apart from them the client's own faults that surface while forwarding: a request body over
//! the limit (413) or one that breaks (400).

use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::Body;
use crate::config::{self, Route};

/// Why forwarding failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// No connection could be made, or it broke before a response: 502.
    #[error("upstream unreachable")]
    Unreachable(#[source] hyper_util::client::legacy::Error),
    /// No response headers within `upstream.response_timeout`: 504.
    #[error("upstream timed out")]
    Timeout,
    /// The client sent more than `server.max_body_bytes`: 413.
    #[error("request body too large")]
    BodyTooLarge,
    /// The client's request body broke while it was forwarded: 400, the client's fault.
    #[error("{0}")]
    RequestBody(BodyFault),
}

/// How a client's request body broke (the `kind` of `gateway_request_body_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFault {
    /// Not valid framing: a malformed chunk size or line ending, a chunk size that overflows,
    /// a bad chunk extension.
    Malformed,
    /// Cut off: the client closed or reset before the end.
    Incomplete,
}

impl BodyFault {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BodyFault::Malformed => "malformed",
            BodyFault::Incomplete => "incomplete",
        }
    }
}

impl std::fmt::Display for BodyFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BodyFault::Malformed => "malformed request body",
            BodyFault::Incomplete => "the request body was cut off",
        })
    }
}

/// An error of the client's request body, marked so that forwarding can tell it from the
/// upstream's: wrap the body's errors in it before sending (`body.map_err(RequestBodyError)`).
#[derive(Debug, thiserror::Error)]
#[error("request body: {0}")]
pub(crate) struct RequestBodyError(#[source] pub hyper::Error);

/// The shared upstream client.
#[derive(Clone)]
pub(crate) struct Upstream {
    client: Client<HttpConnector, Body>,
    response_timeout: Duration,
}

impl Upstream {
    pub(crate) fn new(cfg: &config::Upstream) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(cfg.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Upstream {
            client,
            response_timeout: cfg.response_timeout,
        }
    }

    /// Sends `req` (absolute URI, HTTP/1.1) and waits for the response headers.
    ///
    /// # Errors
    /// [`UpstreamError`], which the caller maps to 502, 504 or 413.
    pub(crate) async fn forward(
        &self,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(self.response_timeout, self.client.request(req)).await {
            Err(_) => Err(UpstreamError::Timeout),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(classify(e)),
        }
    }
}

/// The request target (path and query) the upstream of `route` receives for a request whose
/// normalized path is `normalized`: the upstream's base path, the normalized path (less the
/// prefix when `strip_prefix`), and the query exactly as received.
pub(crate) fn target(route: &Route, normalized: &str, query: Option<&str>) -> String {
    let mut path = normalized;
    if route.strip_prefix {
        path = &normalized[route.path_prefix.len()..];
    }
    let base = route.upstream.path().trim_end_matches('/');
    let path = if path.is_empty() { "/" } else { path };
    let mut target =
        String::with_capacity(base.len() + path.len() + query.map_or(0, |q| q.len() + 1));
    target.push_str(base);
    if !path.starts_with('/') {
        target.push('/');
    }
    target.push_str(path);
    if let Some(q) = query {
        target.push('?');
        target.push_str(q);
    }
    target
}

fn classify(e: hyper_util::client::legacy::Error) -> UpstreamError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return UpstreamError::BodyTooLarge;
        }
        if s.is::<RequestBodyError>() {
            return UpstreamError::RequestBody(body_fault(s));
        }
        source = s.source();
    }
    UpstreamError::Unreachable(e)
}

/// Malformed when the body's decoder refused the bytes (an I/O error of kind `InvalidData`
/// or `InvalidInput` below it), else cut off.
fn body_fault(e: &(dyn std::error::Error + 'static)) -> BodyFault {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
            ) {
                return BodyFault::Malformed;
            }
        }
        source = s.source();
    }
    BodyFault::Incomplete
}

//! The bodies of the request path: [`Body`], every response body the gateway produces or
//! relays (and every request body it sends upstream), and [`Incoming`], the client's request
//! body as every phase sees it: hyper's body, plus what happens to the part nobody read.
//!
//! An answer given before the body was read (a refusal, a redirect) would otherwise end an
//! HTTP/2 stream with `RST_STREAM(NO_ERROR)` while the client is still sending, which RFC 9113
//! section 8.1 allows but some clients (curl 7.88) take as a failure, losing the answer. So an
//! unread body is read and discarded in the background, up to [`DRAIN_MAX_BYTES`] within
//! [`DRAIN_DEADLINE`], while the answer goes out: the client finishes its upload and the stream
//! ends cleanly. Past either bound the body is dropped.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as _, Frame, SizeHint};

/// Boxed errors of streamed bodies.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every response body the gateway produces or relays.
pub(crate) type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// A complete body.
pub(crate) fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub(crate) fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// Most bytes of an unread body read and discarded after the answer.
pub(crate) const DRAIN_MAX_BYTES: usize = 1024 * 1024;
/// Longest time spent reading an unread body after the answer.
pub(crate) const DRAIN_DEADLINE: Duration = Duration::from_secs(2);

/// A request body (see the module comment): read it like any [`hyper::body::Body`]; dropped
/// unread, it is drained in the background within bounds.
#[derive(Debug)]
pub(crate) struct Incoming(Option<hyper::body::Incoming>);

impl Incoming {
    pub(crate) fn new(body: hyper::body::Incoming) -> Self {
        Incoming(Some(body))
    }
}

impl hyper::body::Body for Incoming {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut().0.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(hyper::body::Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.0
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), hyper::body::Body::size_hint)
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        let Some(body) = self.0.take() else {
            return;
        };
        if body.is_end_stream() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain(body));
        }
    }
}

/// Reads and discards `body` until it ends, breaks, passes [`DRAIN_MAX_BYTES`] or
/// [`DRAIN_DEADLINE`]; then drops it.
async fn drain(mut body: hyper::body::Incoming) {
    let mut left = DRAIN_MAX_BYTES;
    let read = async {
        while let Some(Ok(frame)) = body.frame().await {
            let len = frame.data_ref().map_or(0, Bytes::len);
            if len > left {
                return false;
            }
            left -= len;
        }
        true
    };
    let ended = tokio::time::timeout(DRAIN_DEADLINE, read)
        .await
        .unwrap_or(false);
    if !ended {
        metrics::counter!("gateway_request_bodies_cut_total").increment(1);
    }
}

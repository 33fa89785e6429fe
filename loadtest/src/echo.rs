//! The echo upstream: answers every request with a JSON description of what arrived, serves
//! the `/__echo/*` test paths and echoes WebSockets. HTTP/1.1 and h2c (prior knowledge) share
//! one port; the caller owns the listener and the shutdown trigger.
//!
//! | path | answer |
//! |---|---|
//! | anything else | 200, `{"method","path","query","headers","body_bytes"}` |
//! | `/__echo/status/{code}` | that status (200 to 599) with the same JSON |
//! | `/__echo/sleep/{ms}` | the JSON after `ms` milliseconds (at most [`MAX_SLEEP_MS`]) |
//! | `/__echo/stream/{n}` | `n` chunks of 1 KiB, 10 ms apart (at most [`MAX_STREAM_CHUNKS`]) |
//! | `/__echo/large/{bytes}` | that many bytes, streamed (at most [`MAX_LARGE_BYTES`]) |
//!
//! A request body is read fully and counted; over [`MAX_REQUEST_BODY`] it is refused with 413.
//! Errors are JSON `{"error": {"code", "message"}}`.

mod body;
mod json;
mod websocket;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::header::CONTENT_TYPE;
use http::request::Parts;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use body::EchoBody;

/// Largest request body counted; a longer one is answered with 413.
pub const MAX_REQUEST_BODY: u64 = 64 * 1024 * 1024;
/// Longest delay `/__echo/sleep/{ms}` accepts.
pub const MAX_SLEEP_MS: u64 = 60_000;
/// Most chunks `/__echo/stream/{n}` accepts (one minute of chunks at 10 ms apart).
pub const MAX_STREAM_CHUNKS: u64 = 6_000;
/// Largest body `/__echo/large/{bytes}` accepts.
pub const MAX_LARGE_BYTES: u64 = 256 * 1024 * 1024;

/// How long [`run`] waits for open connections after shutdown before returning anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (typically out of file descriptors) so the loop cannot spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Serves the echo upstream on `listener` until `shutdown` resolves.
///
/// Every accepted connection gets `TCP_NODELAY` and is served as HTTP/1.1 (keep-alive,
/// upgrades) or HTTP/2 when it opens with the h2c prior-knowledge preface. Nothing is logged
/// per request; a failed `accept` is retried after a short pause.
///
/// When `shutdown` resolves, the listener is closed, HTTP/1 connections finish their
/// in-flight request, HTTP/2 connections receive GOAWAY, WebSocket clients receive a close
/// frame with code 1001, and `run` returns once all of them have ended or after ten seconds,
/// whichever comes first.
pub async fn run(listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let (websocket_stop, websocket_stop_rx) = watch::channel(());

    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    }
                }
            },
        };
        // Small JSON answers must not wait for Nagle; a failure only costs latency.
        let _ = stream.set_nodelay(true);

        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        let stop = websocket_stop_rx.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let websocket_stop = websocket::is_upgrade(&req).then(|| stop.clone());
                respond(req, websocket_stop)
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            // Connection errors (resets, protocol violations) are the client's business.
            let _ = watcher.watch(conn).await;
        });
    }

    drop(listener);
    websocket_stop.send_replace(());
    drop(websocket_stop_rx);
    let drained = async {
        graceful.shutdown().await;
        websocket_stop.closed().await;
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, drained).await;
}

/// Answers one request; never fails, every problem becomes a JSON error response.
async fn respond(
    req: Request<Incoming>,
    websocket_stop: Option<watch::Receiver<()>>,
) -> Result<Response<EchoBody>, Infallible> {
    if let Some(stop) = websocket_stop {
        return Ok(websocket::accept(req, stop));
    }
    let route = Route::parse(req.uri().path());
    let (parts, body) = req.into_parts();
    let body_bytes = match count_body(body, MAX_REQUEST_BODY).await {
        Ok(n) => n,
        Err(rejection) => return Ok(rejection.into_response()),
    };
    let response = match route {
        Ok(Route::Echo) => describe(StatusCode::OK, &parts, body_bytes),
        Ok(Route::Status(status)) => describe(status, &parts, body_bytes),
        Ok(Route::Sleep(delay)) => {
            tokio::time::sleep(delay).await;
            describe(StatusCode::OK, &parts, body_bytes)
        }
        Ok(Route::Stream(chunks)) => octet_stream(EchoBody::paced(chunks)),
        Ok(Route::Large(len)) => octet_stream(EchoBody::filler(len)),
        Err(rejection) => rejection.into_response(),
    };
    Ok(response)
}

/// What a request path asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Echo,
    Status(StatusCode),
    Sleep(Duration),
    Stream(u64),
    Large(u64),
}

impl Route {
    fn parse(path: &str) -> Result<Route, Rejection> {
        let Some(rest) = path.strip_prefix("/__echo/") else {
            return Ok(Route::Echo);
        };
        let Some((kind, param)) = rest.split_once('/') else {
            return Err(Rejection::UnknownEchoPath);
        };
        let number = |max: u64| match param.parse::<u64>() {
            Ok(n) if n <= max => Ok(n),
            _ => Err(Rejection::BadParameter),
        };
        match kind {
            "status" => {
                let code = u16::try_from(number(599)?).map_err(|_| Rejection::BadParameter)?;
                match StatusCode::from_u16(code) {
                    Ok(status) if code >= 200 => Ok(Route::Status(status)),
                    _ => Err(Rejection::BadParameter),
                }
            }
            "sleep" => Ok(Route::Sleep(Duration::from_millis(number(MAX_SLEEP_MS)?))),
            "stream" => Ok(Route::Stream(number(MAX_STREAM_CHUNKS)?)),
            "large" => Ok(Route::Large(number(MAX_LARGE_BYTES)?)),
            _ => Err(Rejection::UnknownEchoPath),
        }
    }
}

/// Reads `body` to its end and returns how many data bytes it carried.
///
/// # Errors
/// [`Rejection::BodyTooLarge`] as soon as the declared length or the bytes read exceed
/// `limit` (the rest is not read); [`Rejection::BodyUnreadable`] if the stream fails.
async fn count_body<B>(mut body: B, limit: u64) -> Result<u64, Rejection>
where
    B: Body + Unpin,
{
    if body.size_hint().lower() > limit {
        return Err(Rejection::BodyTooLarge);
    }
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Rejection::BodyUnreadable)?;
        if let Some(data) = frame.data_ref() {
            total += hyper::body::Buf::remaining(data) as u64;
            if total > limit {
                return Err(Rejection::BodyTooLarge);
            }
        }
    }
    Ok(total)
}

/// The JSON description of the request with `status`; statuses that forbid a body get none.
fn describe(status: StatusCode, parts: &Parts, body_bytes: u64) -> Response<EchoBody> {
    if matches!(status.as_u16(), 204 | 205 | 304) {
        let mut response = Response::new(EchoBody::empty());
        *response.status_mut() = status;
        return response;
    }
    match json::describe(&parts.method, &parts.uri, &parts.headers, body_bytes) {
        Ok(document) => {
            let mut response = Response::new(EchoBody::full(document));
            *response.status_mut() = status;
            response
                .headers_mut()
                .insert(CONTENT_TYPE, APPLICATION_JSON);
            response
        }
        Err(_) => Rejection::Internal.into_response(),
    }
}

fn octet_stream(body: EchoBody) -> Response<EchoBody> {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response
}

/// Every way the echo server refuses a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rejection {
    BadParameter,
    UnknownEchoPath,
    BodyTooLarge,
    BodyUnreadable,
    WebSocketVersion,
    WebSocketKey,
    Internal,
}

impl Rejection {
    fn status(self) -> StatusCode {
        match self {
            Rejection::BadParameter | Rejection::BodyUnreadable | Rejection::WebSocketKey => {
                StatusCode::BAD_REQUEST
            }
            Rejection::UnknownEchoPath => StatusCode::NOT_FOUND,
            Rejection::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::WebSocketVersion => StatusCode::UPGRADE_REQUIRED,
            Rejection::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(self) -> &'static str {
        match self {
            Rejection::BadParameter => "bad_parameter",
            Rejection::UnknownEchoPath => "unknown_echo_path",
            Rejection::BodyTooLarge => "body_too_large",
            Rejection::BodyUnreadable => "body_unreadable",
            Rejection::WebSocketVersion => "websocket_version",
            Rejection::WebSocketKey => "websocket_key",
            Rejection::Internal => "internal",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Rejection::BadParameter => {
                "expected /__echo/status/200..599, /__echo/sleep/0..60000, \
                 /__echo/stream/0..6000 or /__echo/large/0..268435456"
            }
            Rejection::UnknownEchoPath => "known echo paths: status, sleep, stream, large",
            Rejection::BodyTooLarge => "request body over 64 MiB",
            Rejection::BodyUnreadable => "request body could not be read",
            Rejection::WebSocketVersion => "only WebSocket version 13 is supported",
            Rejection::WebSocketKey => "missing sec-websocket-key",
            Rejection::Internal => "the echo server failed to build its answer",
        }
    }

    fn into_response(self) -> Response<EchoBody> {
        let document = serde_json::json!({
            "error": { "code": self.code(), "message": self.message() }
        });
        let mut response = Response::new(EchoBody::full(document.to_string().into()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, APPLICATION_JSON);
        if self == Rejection::WebSocketVersion {
            headers.insert(
                http::header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{Full, StreamBody};
    use hyper::body::Frame;

    #[test]
    fn routes_plain_paths_to_echo() {
        assert_eq!(Route::parse("/"), Ok(Route::Echo));
        assert_eq!(Route::parse("/api/users"), Ok(Route::Echo));
        assert_eq!(Route::parse("/__echo"), Ok(Route::Echo));
    }

    #[test]
    fn routes_echo_paths_within_their_caps() {
        assert_eq!(
            Route::parse("/__echo/status/418"),
            Ok(Route::Status(StatusCode::IM_A_TEAPOT))
        );
        assert_eq!(
            Route::parse("/__echo/sleep/60000"),
            Ok(Route::Sleep(Duration::from_secs(60)))
        );
        assert_eq!(Route::parse("/__echo/stream/3"), Ok(Route::Stream(3)));
        assert_eq!(
            Route::parse("/__echo/large/268435456"),
            Ok(Route::Large(MAX_LARGE_BYTES))
        );
    }

    #[test]
    fn rejects_echo_paths_out_of_range_or_unknown() {
        for path in [
            "/__echo/status/101",
            "/__echo/status/600",
            "/__echo/status/abc",
            "/__echo/sleep/60001",
            "/__echo/stream/6001",
            "/__echo/large/268435457",
            "/__echo/sleep/-1",
            "/__echo/sleep/10/extra",
        ] {
            assert_eq!(Route::parse(path), Err(Rejection::BadParameter), "{path}");
        }
        assert_eq!(
            Route::parse("/__echo/nope/1"),
            Err(Rejection::UnknownEchoPath)
        );
        assert_eq!(Route::parse("/__echo/"), Err(Rejection::UnknownEchoPath));
    }

    #[tokio::test]
    async fn counts_streamed_body_bytes() {
        let frames = futures_util::stream::iter(
            [&b"abc"[..], b"", b"defgh"].map(|b| Ok::<_, Infallible>(Frame::data(Bytes::from(b)))),
        );
        assert_eq!(count_body(StreamBody::new(frames), 100).await, Ok(8));
    }

    #[tokio::test]
    async fn refuses_body_over_the_limit_while_streaming() {
        let frames = futures_util::stream::iter(
            std::iter::repeat_n(Bytes::from_static(&[0; 10]), 5)
                .map(|b| Ok::<_, Infallible>(Frame::data(b))),
        );
        assert_eq!(
            count_body(StreamBody::new(frames), 49).await,
            Err(Rejection::BodyTooLarge)
        );
    }

    #[tokio::test]
    async fn refuses_declared_length_over_the_limit_without_reading() {
        let body = Full::new(Bytes::from_static(&[0; 50]));
        assert_eq!(count_body(body, 49).await, Err(Rejection::BodyTooLarge));
    }
}

//! WebSocket echo: completes the RFC 6455 handshake through hyper's upgrade mechanism, sends
//! one text message with the JSON description of the upgrade request (so tests see which
//! headers crossed a proxy), then echoes every text and binary message until either side
//! closes or the server shuts down.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{
    CONNECTION, HeaderMap, HeaderName, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderValue, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::body::EchoBody;
use super::{Rejection, json};

/// How long a shutting-down server waits for the client to answer its close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether `req` asks for a WebSocket: HTTP/1.1 with `Connection: upgrade` and
/// `Upgrade: websocket` (tokens matched case-insensitively within comma-separated lists).
pub(super) fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && has_token(req.headers(), CONNECTION, b"upgrade")
        && has_token(req.headers(), UPGRADE, b"websocket")
}

fn has_token(headers: &HeaderMap, name: HeaderName, token: &[u8]) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(token))
    })
}

/// Answers an upgrade request with 101 and spawns the echo on the upgraded connection.
///
/// Refuses with 426 (and `sec-websocket-version: 13`) for another protocol version and with
/// 400 without a `sec-websocket-key`. The spawned echo ends when the client closes, the
/// connection fails, or `stop` changes, in which case the client gets close code 1001.
pub(super) fn accept(mut req: Request<Incoming>, stop: watch::Receiver<()>) -> Response<EchoBody> {
    let headers = req.headers();
    if headers
        .get(SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Rejection::WebSocketVersion.into_response();
    }
    let Some(key) = headers.get(SEC_WEBSOCKET_KEY) else {
        return Rejection::WebSocketKey.into_response();
    };
    let Ok(accept_key) = HeaderValue::try_from(derive_accept_key(key.as_bytes())) else {
        return Rejection::Internal.into_response();
    };
    let Ok(hello) = json::describe(req.method(), req.uri(), headers, 0) else {
        return Rejection::Internal.into_response();
    };

    tokio::spawn(echo(hyper::upgrade::on(&mut req), hello, stop));

    let mut response = Response::new(EchoBody::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept_key);
    response
}

async fn echo(upgrade: OnUpgrade, hello: Bytes, mut stop: watch::Receiver<()>) {
    let Ok(upgraded) = upgrade.await else {
        return;
    };
    let Ok(hello) = Utf8Bytes::try_from(hello) else {
        return;
    };
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    if ws.send(Message::Text(hello)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            incoming = ws.next() => match incoming {
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    if ws.send(message).await.is_err() {
                        return;
                    }
                }
                // Pings, pongs and the closing handshake are answered by tungstenite.
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
            _ = stop.changed() => break,
        }
    }
    let going_away = CloseFrame {
        code: CloseCode::Away,
        reason: Utf8Bytes::from_static("server shutting down"),
    };
    if ws.close(Some(going_away)).await.is_ok() {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, headers: &[(&'static str, &'static str)]) -> Request<()> {
        let mut req = Request::builder().version(version).uri("/ws");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.body(()).unwrap()
    }

    #[test]
    fn recognizes_upgrade_tokens_in_lists_and_any_case() {
        let req = request(
            Version::HTTP_11,
            &[
                ("connection", "keep-alive, Upgrade"),
                ("upgrade", "WebSocket"),
            ],
        );
        assert!(is_upgrade(&req));
    }

    #[test]
    fn ignores_requests_that_are_not_websocket_upgrades() {
        let h2c = [("connection", "upgrade"), ("upgrade", "h2c")];
        assert!(!is_upgrade(&request(Version::HTTP_11, &h2c)));
        assert!(!is_upgrade(&request(
            Version::HTTP_11,
            &[("upgrade", "websocket")]
        )));
        let both = [("connection", "upgrade"), ("upgrade", "websocket")];
        assert!(!is_upgrade(&request(Version::HTTP_10, &both)));
        assert!(!is_upgrade(&request(Version::HTTP_2, &both)));
        let partial = [("connection", "upgraded"), ("upgrade", "websocket")];
        assert!(!is_upgrade(&request(Version::HTTP_11, &partial)));
    }
}

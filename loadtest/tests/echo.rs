//! The echo upstream over real sockets: each test starts its own server on 127.0.0.1:0 and
//! talks to it with hyper's HTTP/1.1 and HTTP/2 clients, a tokio-tungstenite client, or raw
//! bytes where a client would refuse to misbehave.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A running echo server; dropping it leaves the server to die with the test's runtime.
struct Echo {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Echo {
    async fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(loadtest::echo::run(listener, async {
            let _ = stopped.await;
        }));
        Echo { addr, stop, task }
    }

    /// Triggers the shutdown and returns how long `run` took to return.
    async fn shutdown(self) -> Duration {
        let started = Instant::now();
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("run returns after shutdown")
            .unwrap();
        started.elapsed()
    }

    async fn http1(&self) -> http1::SendRequest<Full<Bytes>> {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn);
        sender
    }

    async fn http2(&self) -> http2::SendRequest<Full<Bytes>> {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        sender
    }

    /// GET `path` over a fresh HTTP/1.1 connection.
    async fn get(&self, path: &str) -> Response<Incoming> {
        let mut client = self.http1().await;
        client.send_request(get(path)).await.unwrap()
    }
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "echo.test")
        .body(Full::default())
        .unwrap()
}

async fn json_body(response: Response<Incoming>) -> Value {
    assert_eq!(response.headers()["content-type"], "application/json");
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn describes_method_path_query_headers_and_body_size() {
    let echo = Echo::start().await;
    let mut client = echo.http1().await;
    let request = Request::post("/api/items?x=1&y=two")
        .header("Host", "echo.test")
        .header("X-User-Id", "42")
        .header("x-multi", "a")
        .header("x-multi", "b")
        .header("x-raw", HeaderValue::from_bytes(b"ok\xffok").unwrap())
        .body(Full::new(Bytes::from_static(b"hello world")))
        .unwrap();
    let response = client.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let doc = json_body(response).await;
    assert_eq!(
        doc,
        json!({
            "method": "POST",
            "path": "/api/items",
            "query": "x=1&y=two",
            "headers": {
                "host": "echo.test",
                "x-user-id": "42",
                "x-multi": "a, b",
                "x-raw": "ok\u{fffd}ok",
                "content-length": "11",
            },
            "body_bytes": 11,
        })
    );
}

#[tokio::test]
async fn query_is_null_and_connection_is_kept_alive() {
    let echo = Echo::start().await;
    let mut client = echo.http1().await;
    for path in ["/first", "/second"] {
        let response = client.send_request(get(path)).await.unwrap();
        let doc = json_body(response).await;
        assert_eq!(doc["path"], path);
        assert_eq!(doc["query"], Value::Null);
        assert_eq!(doc["body_bytes"], 0);
        client
            .ready()
            .await
            .expect("same connection serves the next request");
    }
}

#[tokio::test]
async fn serves_h2c_with_prior_knowledge() {
    let echo = Echo::start().await;
    let mut client = echo.http2().await;
    let uri = format!("http://{}/over/h2?v=2", echo.addr);
    let request = Request::put(uri)
        .header("x-session-id", "s-1")
        .body(Full::new(Bytes::from(vec![7u8; 100_000])))
        .unwrap();
    let response = client.send_request(request).await.unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let doc = json_body(response).await;
    assert_eq!(doc["method"], "PUT");
    assert_eq!(doc["path"], "/over/h2");
    assert_eq!(doc["query"], "v=2");
    assert_eq!(doc["headers"]["x-session-id"], "s-1");
    assert_eq!(doc["body_bytes"], 100_000);

    let concurrent = (0..8).map(|i| {
        let mut client = client.clone();
        let uri = format!("http://{}/__echo/sleep/20?i={i}", echo.addr);
        async move {
            let response = client
                .send_request(Request::get(uri).body(Full::default()).unwrap())
                .await
                .unwrap();
            json_body(response).await["query"].clone()
        }
    });
    let queries = futures_util::future::join_all(concurrent).await;
    assert_eq!(queries.len(), 8);
    assert_eq!(queries[7], "i=7");
}

#[tokio::test]
async fn websocket_sends_the_upgrade_description_then_echoes() {
    let echo = Echo::start().await;
    let mut request = format!("ws://{}/socket?room=1", echo.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("x-user-id", HeaderValue::from_static("u-7"));
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);

    let Some(Ok(Message::Text(hello))) = ws.next().await else {
        panic!("the first message is the JSON description");
    };
    let doc: Value = serde_json::from_str(&hello).unwrap();
    assert_eq!(doc["method"], "GET");
    assert_eq!(doc["path"], "/socket");
    assert_eq!(doc["query"], "room=1");
    assert_eq!(doc["headers"]["x-user-id"], "u-7");
    assert_eq!(doc["headers"]["upgrade"], "websocket");
    assert_eq!(doc["headers"]["sec-websocket-version"], "13");
    assert_eq!(doc["body_bytes"], 0);

    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![1u8, 2, 3])
    );
    ws.send(Message::Ping(Bytes::from_static(b"p")))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::Pong(Bytes::from_static(b"p"))
    );
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
}

#[tokio::test]
async fn websocket_refuses_other_versions() {
    let echo = Echo::start().await;
    let mut client = echo.http1().await;
    let request = Request::get("/socket")
        .header("host", "echo.test")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "8")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(Full::default())
        .unwrap();
    let response = client.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
    assert_eq!(response.headers()["sec-websocket-version"], "13");
    assert_eq!(
        json_body(response).await["error"]["code"],
        "websocket_version"
    );
}

#[tokio::test]
async fn status_path_answers_that_status_with_the_description() {
    let echo = Echo::start().await;
    let response = echo.get("/__echo/status/418?why=tea").await;
    assert_eq!(response.status(), StatusCode::IM_A_TEAPOT);
    let doc = json_body(response).await;
    assert_eq!(doc["path"], "/__echo/status/418");
    assert_eq!(doc["query"], "why=tea");

    let response = echo.get("/__echo/status/503").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json_body(response).await["method"], "GET");

    let response = echo.get("/__echo/status/204").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(body.is_empty());

    let response = echo.get("/__echo/status/99").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_body(response).await["error"]["code"], "bad_parameter");

    let response = echo.get("/__echo/teapot/1").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        json_body(response).await["error"]["code"],
        "unknown_echo_path"
    );
}

#[tokio::test]
async fn sleep_path_waits_then_answers() {
    let echo = Echo::start().await;
    let started = Instant::now();
    let response = echo.get("/__echo/sleep/150").await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_body(response).await["path"], "/__echo/sleep/150");

    let response = echo.get("/__echo/sleep/60001").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn stream_path_sends_paced_chunks() {
    let echo = Echo::start().await;
    let started = Instant::now();
    let response = echo.get("/__echo/stream/5").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["transfer-encoding"], "chunked");
    let mut body = response.into_body();
    let mut total = 0;
    let mut arrivals = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            total += data.len();
            arrivals += 1;
        }
    }
    assert_eq!(total, 5 * 1024);
    assert!(arrivals > 1, "chunks arrive separately, not as one buffer");
    assert!(started.elapsed() >= Duration::from_millis(40));
}

#[tokio::test]
async fn large_path_streams_that_many_bytes() {
    let echo = Echo::start().await;
    let response = echo.get("/__echo/large/1000003").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-length"], "1000003");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 1_000_003);
    assert!(body.iter().all(|&b| b == b'x'));

    let response = echo.get("/__echo/large/268435457").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn declared_body_over_64_mib_is_refused_with_413() {
    let echo = Echo::start().await;
    let mut tcp = TcpStream::connect(echo.addr).await.unwrap();
    tcp.write_all(b"POST /upload HTTP/1.1\r\nhost: echo.test\r\ncontent-length: 67108865\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tcp.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 413");
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let echo = Echo::start().await;
    let mut idle = echo.http1().await;
    assert_eq!(idle.send_request(get("/")).await.unwrap().status(), 200);

    let mut busy = echo.http1().await;
    let in_flight = tokio::spawn(async move {
        let response = busy.send_request(get("/__echo/sleep/300")).await.unwrap();
        json_body(response).await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let took = echo.shutdown().await;

    assert_eq!(in_flight.await.unwrap()["path"], "/__echo/sleep/300");
    assert!(
        took >= Duration::from_millis(200),
        "run waits for the sleeper"
    );
    assert!(
        took < Duration::from_secs(5),
        "idle connections close at once"
    );
}

#[tokio::test]
async fn shutdown_closes_websockets_with_going_away() {
    let echo = Echo::start().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/", echo.addr))
        .await
        .unwrap();
    assert!(matches!(ws.next().await, Some(Ok(Message::Text(_)))));

    let reader = tokio::spawn(async move {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
                Some(Ok(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    });
    let took = echo.shutdown().await;
    assert_eq!(reader.await.unwrap(), Some(CloseCode::Away));
    assert!(took < Duration::from_secs(5));
}

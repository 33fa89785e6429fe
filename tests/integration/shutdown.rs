//! Graceful shutdown of the real binary: a SIGTERM while requests are in flight loses none of
//! them, new connections are refused, and the process exits 0 within the grace period.

use std::time::Duration;

use crate::support::http::get;
use crate::support::{ServeProcess, TestDb, echo};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests() {
    let db = TestDb::new().await;
    let up = echo().await;
    let config =
        format!("[[routes]]\npath_prefix = \"/\"\nupstream = \"http://{up}\"\nauth = \"public\"\n");
    let mut gateway = ServeProcess::start(
        &db,
        &config,
        &[
            ("GATEWAY_SERVER__SHUTDOWN_GRACE", "10s"),
            ("GATEWAY_LOG__LEVEL", "warn"),
        ],
    )
    .await;
    let listen = gateway.addr;
    let in_flight: Vec<_> = (0..20)
        .map(|_| tokio::spawn(async move { get(listen, "/__echo/sleep/1500").send().await.status }))
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    gateway.terminate();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio::net::TcpStream::connect(listen).await.is_err(),
        "a draining gateway must not accept new connections"
    );
    for call in in_flight {
        assert_eq!(
            call.await.unwrap(),
            200,
            "an in-flight request was lost during shutdown"
        );
    }
    let status = tokio::time::timeout(Duration::from_secs(10), gateway.child.wait())
        .await
        .expect("the gateway must exit within the grace period")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
}

//! Graceful shutdown of the real binary: a SIGTERM while requests are in flight loses none of
//! them, new connections are refused, and the process exits 0 within the grace period.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::http::get;
use crate::support::{SECRET, TestDb, echo};

fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests() {
    let db = TestDb::new().await;
    let up = echo().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!("[[routes]]\npath_prefix = \"/\"\nupstream = \"http://{up}\"\nauth = \"public\"\n"),
    )
    .unwrap();
    let (listen, admin) = (free_port(), free_port());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("GATEWAY_DATABASE__URL", db.url())
        .env("GATEWAY_AUTH__SECRET", SECRET)
        .env("GATEWAY_SERVER__LISTEN", listen.to_string())
        .env("GATEWAY_SERVER__ADMIN_LISTEN", admin.to_string())
        .env("GATEWAY_SERVER__SHUTDOWN_GRACE", "10s")
        .env("GATEWAY_LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let started = Instant::now();
    while tokio::net::TcpStream::connect(listen).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "gateway did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let in_flight: Vec<_> = (0..20)
        .map(|_| tokio::spawn(async move { get(listen, "/__echo/sleep/1500").send().await.status }))
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let pid = child.id().unwrap().to_string();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(term.success());
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
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the gateway must exit within the grace period")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
}

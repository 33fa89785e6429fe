//! `loadtest sample` over a real process (this one) and a stand-in metrics endpoint, read back
//! the way `loadtest soak-report` reads it.

use std::time::Duration;

use loadtest::sample::{self, SampleArgs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Answers every request on every connection with the same Prometheus text.
async fn metrics_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let body = "# TYPE gateway_connections gauge\ngateway_connections 3\n\
                            gateway_session_cache_entries 42\n";
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}/metrics")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_this_process_and_the_gauges_into_a_csv_it_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("samples.csv");
    let args = SampleArgs {
        pid: std::process::id(),
        metrics: Some(metrics_endpoint().await),
        every: Duration::from_millis(100),
        duration: Some(Duration::from_millis(450)),
        out: out.clone(),
    };
    args.validate().unwrap();
    let rows = sample::run(&args, std::future::pending()).await.unwrap();
    let samples = sample::load(&out).unwrap();
    assert_eq!(samples.len() as u64, rows);
    assert!((3..=6).contains(&rows), "{rows} rows in 450 ms at 100 ms");
    for s in &samples {
        assert!(s.rss_kib > 0 && s.fds > 0 && s.threads >= 2, "{s:?}");
        assert_eq!((s.cache_entries, s.connections), (Some(42.0), Some(3.0)));
    }
    assert!(samples.windows(2).all(|w| w[0].unix_ms < w[1].unix_ms));
}

#[tokio::test]
async fn stops_on_the_shutdown_signal_and_refuses_a_missing_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = SampleArgs {
        pid: std::process::id(),
        metrics: None,
        every: Duration::from_millis(100),
        duration: None,
        out: dir.path().join("samples.csv"),
    };
    let rows = sample::run(&args, tokio::time::sleep(Duration::from_millis(250)))
        .await
        .unwrap();
    assert!((1..=4).contains(&rows), "{rows}");
    let samples = sample::load(&args.out).unwrap();
    assert_eq!(samples[0].cache_entries, None);

    args.pid = u32::MAX;
    let err = sample::run(&args, std::future::pending())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("does not exist"), "{err:#}");

    args.every = Duration::from_millis(10);
    assert!(args.validate().is_err());
}

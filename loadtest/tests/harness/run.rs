//! `loadtest run` against the echo upstream: closed and open loop, HTTP/1.1 and HTTP/2,
//! the JSON summary, and the error kinds (connect, timeout, backlog).

use serde_json::Value;

use crate::support::{Echo, TlsEcho, config, free_port, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_loop_counts_requests_and_writes_a_well_formed_summary() {
    let echo = Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("direct.json");
    let summary = loadtest::run::execute(config(&[
        "--scenario",
        "direct",
        "--target",
        &echo.url(),
        "--concurrency",
        "4",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--json",
        json.to_str().unwrap(),
    ]))
    .await
    .unwrap();
    assert!(summary.requests > 0);
    assert_eq!(summary.failed(), 0, "{summary:#?}");
    assert_eq!(summary.ok, summary.requests);

    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["scenario"], "direct");
    assert_eq!(doc["target"], format!("{}/", echo.url()));
    assert_eq!(doc["mode"], "closed");
    assert_eq!(doc["concurrency"], 4);
    assert!(doc.get("rate").is_none());
    assert!(
        doc.get("intervals").is_none(),
        "intervals only with --interval"
    );
    assert_eq!(doc["duration_s"], 1.0);
    assert_eq!(doc["requests"], summary.requests);
    assert!(doc["throughput"].as_f64().unwrap() > 0.0);
    let lat = &doc["latency_us"];
    let p = |k: &str| lat[k].as_u64().unwrap_or_else(|| panic!("latency_us.{k}"));
    assert!(0 < p("p50") && p("p50") <= p("p90") && p("p90") <= p("p99"));
    assert!(p("p99") <= p("p999") && p("p999") <= p("max"));
    for kind in [
        "connect",
        "timeout",
        "status_4xx",
        "status_5xx",
        "other",
        "backlog",
    ] {
        assert_eq!(doc["errors"][kind], 0, "errors.{kind}");
    }
    assert!(doc["client_cpu_seconds"].as_f64().unwrap() >= 0.0);
    assert!(doc["started_at"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_sends_the_scheduled_number_of_requests() {
    let echo = Echo::start().await;
    let summary = run(&[
        "--scenario",
        "direct",
        "--target",
        &echo.url(),
        "--rate",
        "200",
        "--duration",
        "1s",
        "--warmup",
        "100ms",
        "--interval",
        "250ms",
    ])
    .await;
    assert_eq!(summary.mode, "open");
    assert_eq!(summary.rate, Some(200.0));
    assert!(
        (195..=205).contains(&summary.requests),
        "{} requests",
        summary.requests
    );
    assert_eq!(summary.failed(), 0, "{summary:#?}");

    // --interval cuts the window into intervals that add up to the totals.
    let ends: Vec<f64> = summary.intervals.iter().map(|i| i.t_s).collect();
    assert_eq!(ends, [0.25, 0.5, 0.75, 1.0], "{:#?}", summary.intervals);
    let ok: u64 = summary.intervals.iter().map(|i| i.ok).sum();
    assert_eq!(ok, summary.ok);
    for i in &summary.intervals {
        assert!(i.ok > 0 && i.failed == 0, "{i:?}");
        assert!(i.latency_us.p50 > 0 && i.latency_us.p99 >= i.latency_us.p50);
    }
    let table = summary.table();
    assert!(table.contains("intervals   4 of 250ms"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_multiplexes_and_new_connections_work_too() {
    let echo = Echo::start().await;
    let url = echo.url();
    for extra in [
        &["--http2", "--connections", "2"][..],
        &["--new-connection-per-request"],
        &["--http2", "--new-connection-per-request"],
    ] {
        let mut args = vec![
            "--scenario",
            "direct",
            "--target",
            &url,
            "--concurrency",
            "8",
            "--duration",
            "300ms",
        ];
        args.extend_from_slice(extra);
        let summary = run(&args).await;
        assert!(summary.ok > 0, "{extra:?}");
        assert_eq!(summary.failed(), 0, "{extra:?}: {summary:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iterations_bound_the_run() {
    let echo = Echo::start().await;
    let summary = run(&[
        "--scenario",
        "direct",
        "--target",
        &echo.url(),
        "--concurrency",
        "3",
        "--duration",
        "30s",
        "--iterations",
        "50",
    ])
    .await;
    assert_eq!(summary.requests, 50);
    assert!(summary.stopped_early.unwrap().contains("--iterations"));
    assert!(summary.duration_s < 30.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_counts_as_connect_errors() {
    let target = format!("http://127.0.0.1:{}", free_port());
    let summary = run(&[
        "--scenario",
        "direct",
        "--target",
        &target,
        "--concurrency",
        "2",
        "--duration",
        "200ms",
    ])
    .await;
    assert!(summary.errors["connect"] > 0);
    assert_eq!(summary.ok, 0);
    assert_eq!(summary.requests, summary.failed());
    assert!(summary.error_samples["connect"].contains("connect"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_answers_count_as_timeouts_and_the_run_still_ends() {
    let echo = Echo::start().await;
    let started = std::time::Instant::now();
    let summary = run(&[
        "--scenario",
        "direct",
        "--target",
        &echo.url(),
        "--path",
        "/__echo/sleep/5000",
        "--concurrency",
        "2",
        "--duration",
        "500ms",
        "--timeout",
        "200ms",
    ])
    .await;
    assert!(summary.errors["timeout"] >= 2, "{summary:#?}");
    assert_eq!(summary.ok, 0);
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_over_its_outstanding_bound_reports_backlog() {
    let echo = Echo::start().await;
    let summary = run(&[
        "--scenario",
        "direct",
        "--target",
        &echo.url(),
        "--path",
        "/__echo/sleep/100",
        "--rate",
        "200",
        "--max-outstanding",
        "5",
        "--duration",
        "500ms",
    ])
    .await;
    assert!(summary.errors["backlog"] > 0, "{summary:#?}");
    assert!(summary.ok > 0);
    // Requests waited for a free slot no longer than the sleep: latency counts from the due
    // time, so it is at least the upstream's 100 ms.
    assert!(summary.latency_us.p50 >= 100_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_ca_file_speaks_http1_and_h2_by_alpn() {
    let front = TlsEcho::start().await;
    let (url, ca) = (front.url(), front.ca_file.to_str().unwrap().to_string());
    for extra in [
        &[][..],
        &["--http2"],
        &["--new-connection-per-request"],
        &["--http2", "--new-connection-per-request"],
    ] {
        let mut args = vec![
            "--scenario",
            "direct",
            "--target",
            &url,
            "--ca-file",
            &ca,
            "--concurrency",
            "4",
            "--duration",
            "300ms",
        ];
        args.extend_from_slice(extra);
        let summary = run(&args).await;
        assert!(summary.tls);
        assert!(summary.ok > 0, "{extra:?}: {summary:#?}");
        assert_eq!(summary.failed(), 0, "{extra:?}: {summary:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refuses_a_certificate_the_ca_file_does_not_trust() {
    let front = TlsEcho::start().await;
    let other = TlsEcho::start().await;
    let summary = run(&[
        "--scenario",
        "direct",
        "--target",
        &front.url(),
        "--ca-file",
        other.ca_file.to_str().unwrap(),
        "--concurrency",
        "1",
        "--duration",
        "200ms",
    ])
    .await;
    assert_eq!(summary.ok, 0);
    assert!(summary.errors["connect"] > 0);
    assert!(
        summary.error_samples["connect"].contains("TLS"),
        "{summary:#?}"
    );
}

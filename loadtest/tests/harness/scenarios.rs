//! Every scenario end to end against in-process servers: `proxy` and `cold` on the echo
//! upstream, `login`, `otp` (through the SMTP sink), `revoke` and `mixed` on the fake gateway.

use std::net::{Ipv4Addr, SocketAddr};

use crate::support::{Echo, FakeGateway, free_port, run, token_file};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_sends_bearer_tokens_chosen_by_zipf() {
    let echo = Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(dir.path(), 100);
    let summary = run(&[
        "--scenario",
        "proxy",
        "--target",
        &echo.url(),
        "--tokens",
        &tokens,
        "--zipf",
        "1.1",
        "--concurrency",
        "4",
        "--duration",
        "300ms",
    ])
    .await;
    assert!(summary.ok > 0);
    assert_eq!(summary.failed(), 0, "{summary:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_uses_each_token_once_and_stops_when_they_run_out() {
    let echo = Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(dir.path(), 60);
    let summary = run(&[
        "--scenario",
        "cold",
        "--target",
        &echo.url(),
        "--tokens",
        &tokens,
        "--token-offset",
        "10",
        "--concurrency",
        "4",
        "--duration",
        "20s",
    ])
    .await;
    assert_eq!(summary.requests, 50);
    assert_eq!(summary.failed(), 0);
    let reason = summary.stopped_early.expect("stopped early");
    assert!(reason.contains("all 50 tokens were used"), "{reason}");
    assert!(summary.duration_s < 20.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_posts_seeded_credentials() {
    let gateway = FakeGateway::start(None).await;
    let summary = run(&[
        "--scenario",
        "login",
        "--target",
        &gateway.url(),
        "--users",
        "10",
        "--password",
        "pw",
        "--concurrency",
        "2",
        "--duration",
        "300ms",
    ])
    .await;
    assert!(summary.ok > 0);
    assert_eq!(summary.failed(), 0, "{summary:#?}");

    let wrong = run(&[
        "--scenario",
        "login",
        "--target",
        &gateway.url(),
        "--users",
        "10",
        "--password",
        "nope",
        "--concurrency",
        "1",
        "--iterations",
        "3",
        "--duration",
        "5s",
    ])
    .await;
    assert_eq!(wrong.errors["status_4xx"], 3);
    assert_eq!(wrong.error_statuses["401"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otp_reads_each_code_from_the_smtp_sink() {
    let smtp = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let gateway = FakeGateway::start(Some(smtp)).await;
    let listen = smtp.to_string();
    let summary = run(&[
        "--scenario",
        "otp",
        "--target",
        &gateway.url(),
        "--users",
        "20",
        "--smtp-listen",
        &listen,
        "--concurrency",
        "3",
        "--duration",
        "500ms",
        "--mail-timeout",
        "5s",
    ])
    .await;
    assert!(summary.ok > 0);
    assert_eq!(summary.failed(), 0, "{summary:#?}");
    for phase in ["otp_request", "otp_mail", "otp_verify"] {
        let op = &summary.operations[phase];
        assert!(!op.counted && op.ok > 0, "{phase}: {op:?}");
    }
    let whole = summary.latency_us.p50;
    assert!(whole >= summary.operations["otp_mail"].latency_us.p50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_measures_when_the_second_instance_refuses_the_token() {
    let gateway = FakeGateway::start(None).await;
    let summary = run(&[
        "--scenario",
        "revoke",
        "--target",
        &gateway.url(),
        "--target2",
        &gateway.url2(),
        "--revoke-jitter",
        "20ms",
        "--users",
        "10",
        "--password",
        "pw",
        "--concurrency",
        "2",
        "--iterations",
        "6",
        "--duration",
        "20s",
        "--poll-interval",
        "5ms",
    ])
    .await;
    assert_eq!(summary.requests, 6);
    assert_eq!(summary.failed(), 0, "{summary:#?}");
    let delay = FakeGateway::REVOCATION_DELAY.as_micros() as u64;
    let lat = summary.latency_us;
    assert!(lat.p50 >= delay && lat.max < delay + 500_000, "{lat:?}");
    assert_eq!(summary.operations["logout"].ok, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_with_seeded_tokens_uses_each_once() {
    let gateway = FakeGateway::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(dir.path(), 4);
    let summary = run(&[
        "--scenario",
        "revoke",
        "--target",
        &gateway.url(),
        "--target2",
        &gateway.url2(),
        "--revoke-jitter",
        "20ms",
        "--tokens",
        &tokens,
        "--concurrency",
        "2",
        "--duration",
        "20s",
    ])
    .await;
    assert_eq!(summary.requests, 4);
    assert_eq!(summary.failed(), 0, "{summary:#?}");
    assert!(summary.stopped_early.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_blends_every_operation() {
    let gateway = FakeGateway::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(dir.path(), 100);
    let summary = run(&[
        "--scenario",
        "mixed",
        "--target",
        &gateway.url(),
        "--tokens",
        &tokens,
        "--zipf",
        "1",
        "--users",
        "10",
        "--password",
        "pw",
        "--mix",
        "proxy=40,session=20,login=15,relogin=15,public=10",
        "--concurrency",
        "4",
        "--duration",
        "600ms",
    ])
    .await;
    assert_eq!(summary.failed(), 0, "{summary:#?}");
    for op in ["proxy", "session", "login", "relogin", "public"] {
        assert!(summary.operations[op].ok > 0, "{op} ran");
    }
    let per_op: u64 = summary.operations.values().map(|o| o.requests).sum();
    assert_eq!(per_op, summary.requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expects_401_and_counts_anything_else_as_an_error() {
    let gateway = FakeGateway::start(None).await;
    for forge in ["forged", "legacy"] {
        let summary = run(&[
            "--scenario",
            "forged",
            "--forge",
            forge,
            "--target",
            &gateway.url(),
            "--concurrency",
            "4",
            "--duration",
            "300ms",
        ])
        .await;
        assert!(summary.ok > 0, "{forge}: {summary:#?}");
        assert_eq!(summary.failed(), 0, "{forge}: {summary:#?}");
    }
    // An upstream that lets every token through is what the scenario exists to catch.
    let echo = Echo::start().await;
    let summary = run(&[
        "--scenario",
        "forged",
        "--target",
        &echo.url(),
        "--concurrency",
        "2",
        "--duration",
        "200ms",
    ])
    .await;
    assert_eq!(summary.ok, 0, "{summary:#?}");
    assert!(summary.failed() > 0);
}

#[tokio::test]
async fn scenarios_refuse_to_start_without_what_they_need() {
    for (args, flag) in [
        (&["--scenario", "proxy"][..], "--tokens"),
        (&["--scenario", "login"], "--users"),
        (&["--scenario", "revoke", "--users", "5"], "--target2"),
    ] {
        let mut argv = vec!["--target", "http://127.0.0.1:1", "--duration", "1s"];
        argv.extend_from_slice(args);
        let err = loadtest::run::run(crate::support::config(&argv))
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains(flag), "{args:?}: {err:#}");
    }
    let tagged_without_key = loadtest::run::RunConfig::from_flags(&[
        "--target",
        "http://127.0.0.1:1",
        "--scenario",
        "forged",
        "--forge",
        "tagged",
        "--token-key",
        "too short",
    ])
    .unwrap_err();
    assert!(
        format!("{tagged_without_key:#}").contains("--token-key"),
        "{tagged_without_key:#}"
    );
}

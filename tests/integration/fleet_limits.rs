//! The sign-in rate limits across a fleet: two instances on one database count together
//! (`rate_limits.fleet_wide`, the default, through the `rate_limits` table), so N instances
//! allow what one allows; with it off each instance counts alone, N times as much. The
//! database's clock decides, and a refusal names a wait that lets the next attempt through.

use serde_json::json;

use crate::support::http::{Resp, post_json};
use crate::support::{TestDb, TestGateway};

async fn instance(db: &TestDb, env: &[(&str, &str)]) -> TestGateway {
    let mut builder = TestGateway::builder(db)
        .env("GATEWAY_RATE_LIMITS__LOGIN_PER_EMAIL", "1000/1m")
        .env("GATEWAY_RATE_LIMITS__OTP_REQUEST_PER_IP", "1000/1m");
    for (k, v) in env {
        builder = builder.env(k, v);
    }
    builder.start().await
}

/// A password login of an unknown address (its own each time, so no failure budget is met).
async fn login(gw: &TestGateway, i: usize) -> Resp {
    post_json(
        gw.addr,
        "/auth/login",
        &json!({"email": format!("nobody{i}@example.com"), "password": "wrong password 1"}),
    )
    .send()
    .await
}

fn retry_after(resp: &Resp) -> u64 {
    resp.header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("429 without a Retry-After in seconds: {:?}", resp.headers))
}

#[tokio::test]
async fn the_per_ip_login_limit_holds_across_instances() {
    let db = TestDb::new().await;
    let env = [("GATEWAY_RATE_LIMITS__LOGIN_PER_IP", "3/1m")];
    let (a, b) = (instance(&db, &env).await, instance(&db, &env).await);
    for (i, gw) in [&a, &b, &a].into_iter().enumerate() {
        let resp = login(gw, i).await;
        assert_eq!(
            resp.status, 401,
            "attempt {i} is within the limit: {}",
            resp.body
        );
    }
    for (i, gw) in [(3, &b), (4, &a)] {
        let resp = login(gw, i).await;
        assert_eq!(
            resp.status, 429,
            "attempt {i}: 3/1m across the fleet, yet an instance let it through"
        );
        let wait = retry_after(&resp);
        assert!(
            (1..=20).contains(&wait),
            "one more every 20 s: Retry-After {wait}"
        );
    }
    let cells: i64 = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM rate_limits WHERE action = 'login' AND scope = 'ip'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(cells, 1, "one cell for the one client address");
}

#[tokio::test]
async fn the_per_email_limit_holds_across_instances() {
    let db = TestDb::new().await;
    let env = [("GATEWAY_RATE_LIMITS__OTP_REQUEST_PER_EMAIL", "2/15m")];
    let (a, b) = (instance(&db, &env).await, instance(&db, &env).await);
    let request = |gw: &TestGateway| {
        post_json(
            gw.addr,
            "/auth/otp/request",
            &json!({"email": "victim@example.com", "purpose": "login"}),
        )
        .send()
    };
    assert_eq!(request(&a).await.status, 202);
    assert_eq!(request(&b).await.status, 202);
    let third = request(&a).await;
    assert_eq!(third.status, 429, "2/15m per email across the fleet");
    let wait = retry_after(&third);
    assert!((1..=450).contains(&wait), "one more every 7.5 min: {wait}");
    assert_eq!(request(&b).await.status, 429);
}

/// The per-instance figure, for docs/security.md: without `fleet_wide`, each instance allows
/// the whole limit by itself.
#[tokio::test]
async fn without_fleet_wide_each_instance_counts_alone() {
    let db = TestDb::new().await;
    let env = [
        ("GATEWAY_RATE_LIMITS__LOGIN_PER_IP", "2/1m"),
        ("GATEWAY_RATE_LIMITS__FLEET_WIDE", "false"),
    ];
    let (a, b) = (instance(&db, &env).await, instance(&db, &env).await);
    for (i, gw) in [&a, &a, &b, &b].into_iter().enumerate() {
        assert_eq!(login(gw, i).await.status, 401, "attempt {i}");
    }
    assert_eq!(login(&a, 4).await.status, 429);
    assert_eq!(login(&b, 5).await.status, 429);
}

/// A refused attempt is not counted, and the cell comes back to rest: after the interval the
/// next attempt passes again (a limit of 2 per 2 s: one more every second).
#[tokio::test]
async fn a_refused_attempt_costs_nothing_and_the_budget_refills() {
    let db = TestDb::new().await;
    let env = [("GATEWAY_RATE_LIMITS__LOGIN_PER_IP", "2/2s")];
    let (a, b) = (instance(&db, &env).await, instance(&db, &env).await);
    assert_eq!(login(&a, 0).await.status, 401);
    assert_eq!(login(&b, 1).await.status, 401);
    for i in 2..6 {
        assert_eq!(login(&b, i).await.status, 429, "attempt {i}");
    }
    let started = std::time::Instant::now();
    loop {
        let resp = login(&a, 9).await;
        if resp.status == 401 {
            break;
        }
        assert_eq!(resp.status, 429);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "still refused {:?} later: refused attempts were counted",
            started.elapsed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

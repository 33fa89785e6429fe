//! Two gateway instances on one database: a logout, a role change, a `user disable` and an
//! operator revocation made through one are seen by the other within `revocation_poll` +
//! 200 ms, although the other had the session cached.

use std::time::{Duration, Instant};

use crate::support::http::get;
use crate::support::{TestDb, TestGateway, echo, user};

const PASSWORD: &str = "correct horse battery";
const POLL: Duration = Duration::from_secs(1);
const SLACK: Duration = Duration::from_millis(200);

async fn pair(db: &TestDb) -> (TestGateway, TestGateway) {
    let up = echo().await;
    let start = || {
        TestGateway::builder(db)
            .route("/", up, "required")
            .route_with("/admin", up, "required", "roles = [\"admin\"]")
            .env("GATEWAY_SESSIONS__REVOCATION_POLL", "1s")
            .env("GATEWAY_SESSIONS__CACHE_TTL", "5m")
            .start()
    };
    (start().await, start().await)
}

/// Polls `target` on `gw` every 10 ms until it answers `want`; returns how long that took.
async fn time_until(gw: &TestGateway, target: &str, token: &str, want: u16) -> Duration {
    let started = Instant::now();
    loop {
        let status = get(gw.addr, target).bearer(token).send().await.status;
        if status == want {
            let took = started.elapsed();
            eprintln!("{target} answered {want} after {took:?}");
            return took;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{target} never answered {want} (last {status})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_on_one_instance_reaches_the_other() {
    let db = TestDb::new().await;
    let (a, b) = pair(&db).await;
    user(&db, "ann@example.com", PASSWORD, &[]).await;
    let token = a.login("ann@example.com", PASSWORD).await;
    assert_eq!(
        get(b.addr, "/x").bearer(&token).send().await.status,
        200,
        "b caches the session"
    );
    let queries = b.session_queries();

    let out = crate::support::http::req("POST", a.addr, "/auth/logout")
        .bearer(&token)
        .send()
        .await;
    assert_eq!(out.status, 200);
    let seen = time_until(&b, "/x", &token, 401).await;
    assert!(seen <= POLL + SLACK, "b saw the logout after {seen:?}");
    assert!(
        b.session_queries() > queries,
        "b must have reloaded the session from the database"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_changes_reach_the_other_instance() {
    let db = TestDb::new().await;
    let (a, b) = pair(&db).await;
    user(&db, "bo@example.com", PASSWORD, &[]).await;
    let token = a.login("bo@example.com", PASSWORD).await;
    assert_eq!(
        get(b.addr, "/admin").bearer(&token).send().await.status,
        403
    );

    gateway::users::add_role(db.pool(), "bo@example.com", "admin")
        .await
        .unwrap();
    let granted = time_until(&b, "/admin", &token, 200).await;
    assert!(granted <= POLL + SLACK, "role grant seen after {granted:?}");
    let resp = get(b.addr, "/admin").bearer(&token).send().await;
    assert_eq!(resp.echoed("x-user-roles").as_deref(), Some("admin"));

    gateway::users::remove_role(db.pool(), "bo@example.com", "admin")
        .await
        .unwrap();
    let removed = time_until(&b, "/admin", &token, 403).await;
    assert!(
        removed <= POLL + SLACK,
        "role removal seen after {removed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_user_reaches_every_instance() {
    let db = TestDb::new().await;
    let (a, b) = pair(&db).await;
    user(&db, "cy@example.com", PASSWORD, &[]).await;
    let token = a.login("cy@example.com", PASSWORD).await;
    assert_eq!(get(a.addr, "/x").bearer(&token).send().await.status, 200);
    assert_eq!(get(b.addr, "/x").bearer(&token).send().await.status, 200);

    let out =
        crate::support::cli(&db, &["user", "disable", "--email", "cy@example.com"], None).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let on_a = time_until(&a, "/x", &token, 401);
    let on_b = time_until(&b, "/x", &token, 401);
    let (on_a, on_b) = tokio::join!(on_a, on_b);
    assert!(
        on_a <= POLL + SLACK + Duration::from_millis(100),
        "a saw the disable after {on_a:?}"
    );
    assert!(
        on_b <= POLL + SLACK + Duration::from_millis(100),
        "b saw the disable after {on_b:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_revocation_reaches_every_instance() {
    let db = TestDb::new().await;
    let (a, b) = pair(&db).await;
    user(&db, "di@example.com", PASSWORD, &[]).await;
    let token = a.login("di@example.com", PASSWORD).await;
    let other = a.login("di@example.com", PASSWORD).await;
    assert_eq!(get(b.addr, "/x").bearer(&token).send().await.status, 200);
    assert_eq!(get(b.addr, "/x").bearer(&other).send().await.status, 200);

    let out = crate::support::cli(
        &db,
        &["sessions", "revoke", "--user-email", "di@example.com"],
        None,
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("revoked 2 session(s)"), "{out:?}");
    let (t1, t2) = tokio::join!(
        time_until(&b, "/x", &token, 401),
        time_until(&b, "/x", &other, 401)
    );
    assert!(t1.max(t2) <= POLL + SLACK + Duration::from_millis(100));
}

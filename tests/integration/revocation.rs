//! Two gateway instances on one database: a logout, a role change, a `user disable` and an
//! operator revocation made through one are seen by the other within `revocation_poll` +
//! 200 ms, although the other had the session cached; and `user enable` brings none of a
//! disabled user's sessions back.

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

/// The session cookie carrying `token` (the default cookie name).
fn cookie(token: &str) -> String {
    format!("__Host-gw_session={token}")
}

/// `user disable` ends the user's sessions for good: revoked in the database (reason
/// `user_disabled`), refused on every instance by Bearer token and by cookie, and `user
/// enable` brings none of them back — not on the instances that had them cached, not on one
/// that reads them fresh from the database, and `sessions revoke` finds none live. The user
/// can sign in again, with a new session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_then_enable_brings_no_session_back() {
    let db = TestDb::new().await;
    let up = echo().await;
    let start = || {
        TestGateway::builder(&db)
            .route("/", up, "required")
            .env("GATEWAY_SESSIONS__REVOCATION_POLL", "1s")
            .env("GATEWAY_SESSIONS__CACHE_TTL", "5m")
            .env("GATEWAY_SESSIONS__NEGATIVE_TTL", "200ms")
            .start()
    };
    let (a, b) = (start().await, start().await);
    let email = "ed@example.com";
    user(&db, email, PASSWORD, &[]).await;
    let tokens = [
        a.login(email, PASSWORD).await,
        b.login(email, PASSWORD).await,
    ];
    for gw in [&a, &b] {
        for token in &tokens {
            assert_eq!(get(gw.addr, "/x").bearer(token).send().await.status, 200);
            let by_cookie = get(gw.addr, "/x")
                .header("cookie", &cookie(token))
                .send()
                .await;
            assert_eq!(by_cookie.status, 200, "cached by cookie too");
        }
    }

    let out = crate::support::cli(&db, &["user", "disable", "--email", email], None).await;
    out.expect_code(0).expect_output("revoked 2 session(s)");
    for gw in [&a, &b] {
        for token in &tokens {
            let took = time_until(gw, "/x", token, 401).await;
            assert!(
                took <= POLL + SLACK + Duration::from_millis(100),
                "{took:?}"
            );
        }
    }
    let reasons: Vec<Option<String>> = db
        .client()
        .await
        .query(
            "SELECT s.revoked_reason FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE u.email = $1",
            &[&email],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(reasons, vec![Some("user_disabled".to_string()); 2]);

    let queries = (a.session_queries(), b.session_queries());
    let out = crate::support::cli(&db, &["user", "enable", "--email", email], None).await;
    out.expect_code(0).expect_output("revoked 0 session(s)");
    // Long enough for every instance to poll the enable and for the negative cache to expire,
    // so that the answers below come from the database: every one of them must be 401.
    let settled = Instant::now() + POLL + SLACK + Duration::from_millis(500);
    while Instant::now() < settled {
        for gw in [&a, &b] {
            for token in &tokens {
                let bearer = get(gw.addr, "/x").bearer(token).send().await.status;
                let by_cookie = get(gw.addr, "/x")
                    .header("cookie", &cookie(token))
                    .send()
                    .await;
                assert_eq!(
                    (bearer, by_cookie.status),
                    (401, 401),
                    "a session of the disabled user came back after enable"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        a.session_queries() > queries.0 && b.session_queries() > queries.1,
        "both instances read the sessions again from the database"
    );
    let fresh = start().await;
    for token in &tokens {
        assert_eq!(get(fresh.addr, "/x").bearer(token).send().await.status, 401);
        let by_cookie = get(fresh.addr, "/x")
            .header("cookie", &cookie(token))
            .send()
            .await;
        assert_eq!(by_cookie.status, 401);
    }
    let out = crate::support::cli(&db, &["sessions", "revoke", "--user-email", email], None).await;
    out.expect_code(0).expect_output("revoked 0 session(s)");

    let again = a.login(email, PASSWORD).await;
    assert!(!tokens.contains(&again), "a new session, not an old one");
    assert_eq!(get(b.addr, "/x").bearer(&again).send().await.status, 200);
}

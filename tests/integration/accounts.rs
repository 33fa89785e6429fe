//! Account changes end sessions for good, also against a sign-in under way at that moment: a
//! password sign-in that checked the old password (or an active user) and stores its session
//! after a reset or a disable committed gets no session; enabling a user brings back no
//! session opened before or while they were disabled. (Disable then enable through the CLI and
//! two instances: [`crate::revocation`].)

use std::time::{Duration, Instant};

use gateway::password::Hasher;
use gateway::users::{self, EndSessions, Status};

use crate::support::http::{Resp, get, post_json};
use crate::support::{TestDb, TestGateway, cli, echo, sessions};

const PASSWORD: &str = "correct horse battery";
const NEW_PASSWORD: &str = "tangerine kettle orbit 93";
/// A bcrypt cost at which checking the password takes a good fraction of a second, so that a
/// change made while it runs lands between the check and the session.
const SLOW_COST: u32 = 13;

/// A gateway whose user `email` has a password hashed at [`SLOW_COST`]; returns the user id.
async fn slow_sign_in(db: &TestDb, email: &str) -> (TestGateway, String) {
    let gw = TestGateway::builder(db)
        .route("/", echo().await, "required")
        .env("GATEWAY_AUTH__BCRYPT_COST", &SLOW_COST.to_string())
        .start()
        .await;
    let hash = Hasher::new(SLOW_COST, 1, 1)
        .hash(PASSWORD)
        .await
        .expect("hash");
    let id = users::create(
        db.pool(),
        &users::NewUser {
            email,
            email_verified: true,
            password_hash: Some(&hash),
            roles: &[],
        },
    )
    .await
    .expect("create user")
    .id;
    (gw, id)
}

/// Signs in as `email` and, while the gateway checks the password, runs `change`; returns the
/// sign-in's answer.
async fn sign_in_during<F, Fut>(gw: &TestGateway, email: &str, change: F) -> Resp
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let addr = gw.addr;
    let body = serde_json::json!({"email": email, "password": PASSWORD});
    let sign_in = tokio::spawn(async move { post_json(addr, "/auth/login", &body).send().await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.gw.hasher.depth() == 0 {
        assert!(
            Instant::now() < deadline,
            "the sign-in never reached bcrypt"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    change().await;
    assert!(
        gw.gw.hasher.depth() > 0,
        "the change took longer than a cost-{SLOW_COST} bcrypt: it did not land during the sign-in"
    );
    sign_in.await.unwrap()
}

/// Sessions of `user_id` not revoked (nor expired).
async fn live_sessions(db: &TestDb, user_id: &str) -> usize {
    gateway::sessions::list(db.pool(), user_id)
        .await
        .expect("list sessions")
        .len()
}

/// The old password checked, then the password reset (which revokes every session) before the
/// session is stored: the sign-in answers 401 and leaves no live session. Without the check
/// after storing it, the old password's session outlived the reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_under_way_during_a_password_reset_gets_no_session() {
    let db = TestDb::new().await;
    let email = "flo@example.com";
    let (gw, id) = slow_sign_in(&db, email).await;
    let new_hash = Hasher::new(4, 1, 1).hash(NEW_PASSWORD).await.unwrap();
    let resp = sign_in_during(&gw, email, || async {
        let end = EndSessions::All("password_reset");
        users::set_password_hash(db.pool(), email, &new_hash, end)
            .await
            .expect("reset");
    })
    .await;
    assert_eq!(resp.status, 401, "{}", resp.body);
    assert_eq!(resp.error_code(), "invalid_credentials");
    assert!(resp.header("set-cookie").is_none());
    assert_eq!(
        live_sessions(&db, &id).await,
        0,
        "the old password's session"
    );
    let revoked: Vec<String> = db
        .client()
        .await
        .query(
            "SELECT revoked_reason FROM sessions WHERE user_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(revoked, ["credentials_changed"]);
    let with_new = post_json(
        gw.addr,
        "/auth/login",
        &serde_json::json!({"email": email, "password": NEW_PASSWORD}),
    )
    .send()
    .await;
    assert_eq!(with_new.status, 200, "{}", with_new.body);
}

/// An active user checked, then disabled (which revokes every session) before the session is
/// stored: the sign-in answers 401, no live session is left, and enabling the user brings none
/// back; the user signs in again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_under_way_when_the_user_is_disabled_gets_no_session() {
    let db = TestDb::new().await;
    let email = "gil@example.com";
    let (gw, id) = slow_sign_in(&db, email).await;
    let resp = sign_in_during(&gw, email, || async {
        users::set_status(db.pool(), email, Status::Disabled)
            .await
            .expect("disable");
    })
    .await;
    assert_eq!(resp.status, 401, "{}", resp.body);
    assert_eq!(live_sessions(&db, &id).await, 0);
    cli(&db, &["user", "enable", "--email", email], None)
        .await
        .expect_code(0);
    assert_eq!(live_sessions(&db, &id).await, 0, "enable brought one back");
    let again = gw.login(email, PASSWORD).await;
    assert_eq!(get(gw.addr, "/x").bearer(&again).send().await.status, 200);
}

/// Sessions still live when a user is enabled belong to the disabled time: opened by a sign-in
/// (code, link or password) under way when the user was disabled, or left by a disable done by
/// hand in SQL. Enabling revokes them (reason `user_disabled`); only new sign-ins work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enabling_revokes_the_sessions_of_the_disabled_time() {
    let db = TestDb::new().await;
    let email = "hal@example.com";
    let gw = TestGateway::builder(&db)
        .route("/", echo().await, "required")
        .start()
        .await;
    let id = crate::support::user(&db, email, PASSWORD, &[]).await;
    let before = sessions(&db, &id, 2).await;
    for token in &before {
        assert_eq!(get(gw.addr, "/x").bearer(token).send().await.status, 200);
    }
    db.client()
        .await
        .execute(
            "UPDATE users SET status = 'disabled', updated_at = now() WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let during = sessions(&db, &id, 1).await;

    let out = cli(&db, &["user", "enable", "--email", email], None).await;
    out.expect_code(0).expect_output("revoked 3 session(s)");
    assert_eq!(live_sessions(&db, &id).await, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    for token in before.iter().chain(&during) {
        while get(gw.addr, "/x").bearer(token).send().await.status != 401 {
            assert!(
                Instant::now() < deadline,
                "a session of the disabled time works after enable"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let reasons: Vec<String> = db
        .client()
        .await
        .query(
            "SELECT revoked_reason FROM sessions WHERE user_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(reasons, vec!["user_disabled"; 3]);
    let again = gw.login(email, PASSWORD).await;
    assert_eq!(get(gw.addr, "/x").bearer(&again).send().await.status, 200);
}

/// Enabling a user who is not disabled changes nothing: their sessions keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enabling_an_active_user_keeps_their_sessions() {
    let db = TestDb::new().await;
    let email = "ida@example.com";
    let gw = TestGateway::builder(&db)
        .route("/", echo().await, "required")
        .start()
        .await;
    let id = crate::support::user(&db, email, PASSWORD, &[]).await;
    let token = gw.login(email, PASSWORD).await;
    let out = cli(&db, &["user", "enable", "--email", email], None).await;
    out.expect_code(0).expect_output("revoked 0 session(s)");
    assert_eq!(live_sessions(&db, &id).await, 1);
    assert_eq!(get(gw.addr, "/x").bearer(&token).send().await.status, 200);
}

//! The proxy from outside: policies and their outcomes, identity headers that cannot be
//! spoofed, path spellings that cannot dodge a policy, the session cache, body limits, upstream
//! failures, streaming and WebSocket upgrades.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::http::{self, get, post_json};
use crate::support::{TestDb, TestGateway, echo, unverified_user, user};

const PASSWORD: &str = "correct horse battery";

/// `/` required, `/public` public, `/opt` optional, `/admin` required + role admin.
async fn standard(db: &TestDb) -> TestGateway {
    let up = echo().await;
    TestGateway::builder(db)
        .route("/", up, "required")
        .route("/public", up, "public")
        .route("/opt", up, "optional")
        .route_with("/admin", up, "required", "roles = [\"admin\"]")
        .start()
        .await
}

#[tokio::test]
async fn required_route_outcomes_for_api_clients_and_browsers() {
    let db = TestDb::new().await;
    let gw = standard(&db).await;

    let api = get(gw.addr, "/x")
        .header("accept", "application/json")
        .send()
        .await;
    assert_eq!(api.status, 401);
    assert_eq!(api.error_code(), "unauthenticated");
    assert_eq!(api.header("www-authenticate"), Some("Bearer"));

    let browser = get(gw.addr, "/a/b?x=1")
        .header("accept", "text/html,*/*")
        .send()
        .await;
    assert_eq!(browser.status, 302);
    assert_eq!(
        browser.header("location"),
        Some("/auth/login?return_to=%2Fa%2Fb%3Fx%3D1")
    );

    let post = http::req("POST", gw.addr, "/x")
        .header("accept", "text/html")
        .send()
        .await;
    assert_eq!(post.status, 401, "only GET/HEAD navigation is redirected");

    let bad_token = get(gw.addr, "/x")
        .bearer("gw_not-a-real-token")
        .send()
        .await;
    assert_eq!(bad_token.status, 401);
}

#[tokio::test]
async fn valid_sessions_reach_the_upstream_with_identity_headers() {
    let db = TestDb::new().await;
    let gw = standard(&db).await;
    let id = user(&db, "ann@example.com", PASSWORD, &["admin", "billing"]).await;
    let token = gw.login("ann@example.com", PASSWORD).await;

    for resp in [
        get(gw.addr, "/hello?q=1").bearer(&token).send().await,
        get(gw.addr, "/hello?q=1")
            .header("cookie", &format!("theme=dark; __Host-gw_session={token}"))
            .send()
            .await,
    ] {
        assert_eq!(resp.status, 200, "{}", resp.body);
        let echoed = resp.json();
        assert_eq!(echoed["path"], "/hello");
        assert_eq!(echoed["query"], "q=1");
        assert_eq!(resp.echoed("x-user-id").as_deref(), Some(id.as_str()));
        assert_eq!(
            resp.echoed("x-user-email").as_deref(),
            Some("ann@example.com")
        );
        assert_eq!(
            resp.echoed("x-user-roles").as_deref(),
            Some("admin,billing")
        );
        assert!(resp.echoed("x-session-id").is_some());
        assert_eq!(
            resp.echoed("x-request-id").as_deref(),
            resp.header("x-request-id")
        );
        assert_eq!(resp.echoed("x-forwarded-for").as_deref(), Some("127.0.0.1"));
        assert_eq!(resp.echoed("x-forwarded-proto").as_deref(), Some("http"));
        assert!(resp.echoed("x-forwarded-host").is_some());
        // The token itself never reaches a backend.
        assert!(
            !resp.body.contains(&token),
            "token leaked upstream: {}",
            resp.body
        );
    }
    let with_cookie = get(gw.addr, "/x")
        .header("cookie", &format!("theme=dark; __Host-gw_session={token}"))
        .send()
        .await;
    assert_eq!(with_cookie.echoed("cookie").as_deref(), Some("theme=dark"));
}

#[tokio::test]
async fn roles_and_optional_and_public_policies() {
    let db = TestDb::new().await;
    let gw = standard(&db).await;
    user(&db, "bob@example.com", PASSWORD, &["viewer"]).await;
    let token = gw.login("bob@example.com", PASSWORD).await;

    let admin = get(gw.addr, "/admin/x").bearer(&token).send().await;
    assert_eq!(admin.status, 403);
    assert_eq!(admin.error_code(), "forbidden");

    let opt_anon = get(gw.addr, "/opt").send().await;
    assert_eq!(opt_anon.status, 200);
    assert_eq!(opt_anon.echoed("x-user-id"), None);
    let opt_user = get(gw.addr, "/opt").bearer(&token).send().await;
    assert!(opt_user.echoed("x-user-id").is_some());

    let public = get(gw.addr, "/public/x").bearer(&token).send().await;
    assert_eq!(public.status, 200);
    assert_eq!(
        public.echoed("x-user-id"),
        None,
        "public routes never add identity"
    );
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let db = TestDb::new().await;
    let gw = standard(&db).await;
    let id = user(&db, "cy@example.com", PASSWORD, &["admin"]).await;
    let token = gw.login("cy@example.com", PASSWORD).await;
    let spoof = |r: http::Req| {
        r.header("X-User-Id", "root")
            .header("X_User_Id", "root")
            .header("x-user-email", "root@example.com")
            .header("X_USER_ROLES", "admin")
            .header("x-session-id", "s")
            .header("x-user-email-verified", "true")
            .header("X_User_Email_Verified", "true")
            .header("x-identity-signature", "t=1,v1=00")
            .header("x-forwarded-for", "6.6.6.6")
            .header("x_forwarded_host", "evil.example")
            .header("forwarded", "for=6.6.6.6")
            .header("x-real-ip", "6.6.6.6")
            .header("x-request-id", "chosen")
            .header("connection", "keep-alive, X-User-Id, X-User-Roles")
    };
    for target in ["/public/p", "/opt/o"] {
        let resp = spoof(get(gw.addr, target)).send().await;
        assert_eq!(resp.status, 200, "{target}");
        let h = resp.echoed_headers();
        for name in [
            "x-user-id",
            "x_user_id",
            "x-user-email",
            "x_user_roles",
            "x-user-roles",
            "x-session-id",
            "x-user-email-verified",
            "x_user_email_verified",
            "x-identity-signature",
            "x_forwarded_host",
            "forwarded",
            "x-real-ip",
        ] {
            assert!(
                !h.contains_key(name),
                "{name} reached the upstream on {target}: {h:?}"
            );
        }
        assert_eq!(resp.echoed("x-forwarded-for").as_deref(), Some("127.0.0.1"));
        assert_ne!(resp.echoed("x-request-id").as_deref(), Some("chosen"));
    }
    let resp = spoof(get(gw.addr, "/admin/a")).bearer(&token).send().await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.echoed("x-user-id").as_deref(),
        Some(id.as_str()),
        "Connection: X-User-Id must not remove ours"
    );
    assert_eq!(resp.echoed("x-user-roles").as_deref(), Some("admin"));
    assert_eq!(
        resp.echoed("x-user-email").as_deref(),
        Some("cy@example.com")
    );
    assert!(!resp.echoed_headers().contains_key("x_user_id"));
}

#[tokio::test]
async fn path_tricks_never_land_in_a_weaker_policy() {
    let db = TestDb::new().await;
    let up = echo().await;
    // Everything public except /admin: a dodge would show as a 200 without credentials.
    let gw = TestGateway::builder(&db)
        .route("/", up, "public")
        .route("/public", up, "public")
        .route_with("/admin", up, "required", "roles = [\"admin\"]")
        .start()
        .await;
    for target in [
        "/admin",
        "//admin",
        "///admin/x",
        "/%61dmin",
        "/%61%64%6d%69%6e/x",
        "/ADMIN",
        "/Admin/x",
        "/public/..%2fadmin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "/public/../admin",
        "/public/./../admin",
        "/admin;x",
        "/admin%3bx",
        "/public%2f..%2fadmin",
        "/public\\..\\admin",
        "/admin%00",
        "/admin#frag",
        "/admin?x=/public",
    ] {
        let resp = get(gw.addr, target).send().await;
        assert!(
            matches!(resp.status, 400 | 401 | 404),
            "{target} answered {} {}",
            resp.status,
            resp.body
        );
        if resp.status == 200 {
            panic!("{target} reached the upstream without credentials");
        }
    }
    // And the upstream receives exactly the normalized path that was matched.
    user(&db, "dee@example.com", PASSWORD, &["admin"]).await;
    let token = gw.login("dee@example.com", PASSWORD).await;
    let resp = get(gw.addr, "//%61dmin//x%7e").bearer(&token).send().await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["path"], "/admin/x~");
    let resp = get(gw.addr, "/public?next=/admin").send().await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.echoed("x-user-id"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_on_one_cold_token_makes_one_query_and_hits_make_none() {
    let db = TestDb::new().await;
    // The user and its session exist before the gateway starts, and there is no overlap
    // window: the revocation poller then has nothing to invalidate (a user changed after an
    // instance's watermark is reloaded on purpose, which is not what this test counts).
    user(&db, "eve@example.com", PASSWORD, &[]).await;
    let user_row = gateway::users::find_by_email(db.pool(), "eve@example.com")
        .await
        .unwrap()
        .unwrap();
    let session = gateway::sessions::create(
        db.pool(),
        &user_row.id,
        &Default::default(),
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    let gw = TestGateway::builder(&db)
        .route("/", echo().await, "required")
        .env("GATEWAY_SESSIONS__REVOCATION_OVERLAP", "0s")
        .start()
        .await;
    let before = gw.session_queries();
    let burst: Vec<_> = (0..200)
        .map(|_| {
            let token = session.token.clone();
            let addr = gw.addr;
            tokio::spawn(async move { get(addr, "/x").bearer(&token).send().await.status })
        })
        .collect();
    for call in burst {
        assert_eq!(call.await.unwrap(), 200);
    }
    assert_eq!(
        gw.session_queries() - before,
        1,
        "200 concurrent first requests must make exactly one query"
    );
    for _ in 0..50 {
        assert_eq!(
            get(gw.addr, "/x")
                .bearer(&session.token)
                .send()
                .await
                .status,
            200
        );
    }
    assert_eq!(
        gw.session_queries() - before,
        1,
        "cache hits must not query"
    );
    // Unknown tokens are cached negatively: many tries, one query.
    let unknown = gateway::sessions::new_token();
    for _ in 0..20 {
        assert_eq!(get(gw.addr, "/x").bearer(&unknown).send().await.status, 401);
    }
    assert_eq!(gw.session_queries() - before, 2);
}

#[tokio::test]
async fn logout_revokes_and_clears_the_cookie() {
    let db = TestDb::new().await;
    let gw = standard(&db).await;
    user(&db, "fay@example.com", PASSWORD, &[]).await;
    let token = gw.login("fay@example.com", PASSWORD).await;
    assert_eq!(
        get(gw.addr, "/auth/session")
            .bearer(&token)
            .send()
            .await
            .status,
        200
    );

    let cross = http::req("POST", gw.addr, "/auth/logout")
        .header("cookie", &format!("__Host-gw_session={token}"))
        .header("origin", "https://evil.example")
        .send()
        .await;
    assert_eq!(
        cross.status, 403,
        "cookie-authenticated cross-site logout must be refused"
    );
    assert_eq!(cross.error_code(), "cross_origin");

    let out = http::req("POST", gw.addr, "/auth/logout")
        .header("cookie", &format!("__Host-gw_session={token}"))
        .header("origin", crate::support::PUBLIC_ORIGIN)
        .send()
        .await;
    assert_eq!(out.status, 200, "{}", out.body);
    assert_eq!(out.json()["revoked"], true);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(get(gw.addr, "/x").bearer(&token).send().await.status, 401);
    assert_eq!(
        get(gw.addr, "/auth/session")
            .bearer(&token)
            .send()
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn login_sets_a_hardened_cookie_and_refuses_alike() {
    let db = TestDb::new().await;
    let gw = standard(&db).await;
    user(&db, "gus@example.com", PASSWORD, &[]).await;
    let ok = post_json(
        gw.addr,
        "/auth/login",
        &serde_json::json!({"email": "GUS@example.com", "password": PASSWORD, "device_label": "laptop"}),
    )
    .send()
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let cookie = ok.header("set-cookie").unwrap();
    for attr in [
        "__Host-gw_session=gw_",
        "Path=/",
        "HttpOnly",
        "SameSite=Lax",
        "Secure",
    ] {
        assert!(cookie.contains(attr), "{attr} missing in {cookie}");
    }
    let body = ok.json();
    assert!(body["token"].as_str().unwrap().starts_with("gw_"));
    assert_eq!(body["user"]["email"], "gus@example.com");

    let wrong = post_json(
        gw.addr,
        "/auth/login",
        &serde_json::json!({"email": "gus@example.com", "password": "wrong password"}),
    )
    .send()
    .await;
    let unknown = post_json(
        gw.addr,
        "/auth/login",
        &serde_json::json!({"email": "nobody@example.com", "password": "wrong password"}),
    )
    .send()
    .await;
    let malformed = post_json(
        gw.addr,
        "/auth/login",
        &serde_json::json!({"email": "not an email", "password": "wrong password"}),
    )
    .send()
    .await;
    for r in [&wrong, &unknown, &malformed] {
        assert_eq!(r.status, 401);
        assert_eq!(r.body, wrong.body, "every refusal must read the same");
        assert!(r.header("set-cookie").is_none());
    }
    gateway::users::set_status(
        db.pool(),
        "gus@example.com",
        gateway::users::Status::Disabled,
    )
    .await
    .unwrap();
    let disabled = post_json(
        gw.addr,
        "/auth/login",
        &serde_json::json!({"email": "gus@example.com", "password": PASSWORD}),
    )
    .send()
    .await;
    assert_eq!(
        (disabled.status, disabled.body.as_str()),
        (401, wrong.body.as_str())
    );

    let form = http::req("POST", gw.addr, "/auth/login")
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await;
    assert_eq!(form.status, 415);
    let foreign = post_json(
        gw.addr,
        "/auth/login",
        &serde_json::json!({"email": "gus@example.com", "password": PASSWORD}),
    )
    .header("origin", "https://evil.example")
    .send()
    .await;
    assert_eq!(foreign.status, 403, "login CSRF must be refused");
}

#[tokio::test]
async fn a_password_hashed_at_another_cost_is_rehashed_after_login() {
    let db = TestDb::new().await;
    let up = echo().await;
    user(&db, "hal@example.com", PASSWORD, &[]).await; // cost 4
    let gw = TestGateway::builder(&db)
        .route("/", up, "required")
        .env("GATEWAY_AUTH__BCRYPT_COST", "5")
        .start()
        .await;
    gw.login("hal@example.com", PASSWORD).await;
    let mut cost = String::new();
    for _ in 0..50 {
        let row = db
            .client()
            .await
            .query_one(
                "SELECT p.password_hash FROM user_passwords p JOIN users u ON u.id = p.user_id WHERE u.email = $1",
                &[&"hal@example.com"],
            )
            .await
            .unwrap();
        let hash: String = row.get(0);
        cost = hash.split('$').nth(2).unwrap().to_string();
        if cost == "05" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cost, "05");
    gw.login("hal@example.com", PASSWORD).await;
}

#[tokio::test]
async fn expired_and_idle_sessions_are_refused() {
    let db = TestDb::new().await;
    let gw = standard(&db).await;
    user(&db, "ida@example.com", PASSWORD, &[]).await;
    let a = gw.login("ida@example.com", PASSWORD).await;
    let b = gw.login("ida@example.com", PASSWORD).await;
    let c = db.client().await;
    let hash = |t: &str| gateway::sessions::hash_token(t).unwrap().to_vec();
    c.execute(
        "UPDATE sessions SET expires_at = now() - INTERVAL '1 second' WHERE token_hash = $1",
        &[&hash(&a)],
    )
    .await
    .unwrap();
    c.execute(
        "UPDATE sessions SET last_seen_at = now() - INTERVAL '8 days' WHERE token_hash = $1",
        &[&hash(&b)],
    )
    .await
    .unwrap();
    // Neither was validated yet on this instance, so both load from the database.
    assert_eq!(
        get(gw.addr, "/x").bearer(&a).send().await.status,
        401,
        "absolute expiry"
    );
    assert_eq!(
        get(gw.addr, "/x").bearer(&b).send().await.status,
        401,
        "idle expiry"
    );
}

#[tokio::test]
async fn last_seen_is_touched_in_batches_off_the_request_path() {
    let db = TestDb::new().await;
    let up = echo().await;
    let gw = TestGateway::builder(&db)
        .route("/", up, "required")
        .env("GATEWAY_SESSIONS__TOUCH_INTERVAL", "1s")
        .start()
        .await;
    user(&db, "jo@example.com", PASSWORD, &[]).await;
    let token = gw.login("jo@example.com", PASSWORD).await;
    let hash = gateway::sessions::hash_token(&token).unwrap().to_vec();
    let c = db.client().await;
    c.execute(
        "UPDATE sessions SET last_seen_at = now() - INTERVAL '1 hour' WHERE token_hash = $1",
        &[&hash],
    )
    .await
    .unwrap();
    assert_eq!(get(gw.addr, "/x").bearer(&token).send().await.status, 200);
    let mut fresh = false;
    for _ in 0..40 {
        let row = c
            .query_one("SELECT last_seen_at > now() - INTERVAL '1 minute' FROM sessions WHERE token_hash = $1", &[&hash])
            .await
            .unwrap();
        if row.get::<_, bool>(0) {
            fresh = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(fresh, "last_seen_at was not written by the batch writer");
}

#[tokio::test]
async fn body_limits_and_streaming() {
    let db = TestDb::new().await;
    let up = echo().await;
    let gw = TestGateway::builder(&db)
        .route("/", up, "public")
        .env("GATEWAY_SERVER__MAX_BODY_BYTES", "1024")
        .start()
        .await;
    let ok = http::req("POST", gw.addr, "/up")
        .body(vec![b'a'; 1024])
        .send()
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["body_bytes"], 1024);
    let declared = http::req("POST", gw.addr, "/up")
        .body(vec![b'a'; 1025])
        .send()
        .await;
    assert_eq!(declared.status, 413);
    assert_eq!(declared.error_code(), "payload_too_large");
    let chunked = http::raw(
        gw.addr,
        format!(
            "POST /up HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n800\r\n{}\r\n0\r\n\r\n",
            "b".repeat(0x800)
        )
        .as_bytes(),
        Duration::from_secs(2),
    )
    .await;
    assert!(chunked.starts_with("HTTP/1.1 413"), "{chunked}");

    let streamed = get(gw.addr, "/__echo/stream/5").send().await;
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.body.len(), 5 * 1024);
    let large = get(gw.addr, "/__echo/large/3000000").send().await;
    assert_eq!(large.body.len(), 3_000_000);
}

#[tokio::test]
async fn upstream_failures_are_502_and_504_in_bounded_time() {
    let db = TestDb::new().await;
    let up = echo().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let gw = TestGateway::builder(&db)
        .route("/", up, "public")
        .route("/dead", closed, "public")
        .env("GATEWAY_UPSTREAM__RESPONSE_TIMEOUT", "300ms")
        .start()
        .await;
    let started = std::time::Instant::now();
    let dead = get(gw.addr, "/dead").send().await;
    assert_eq!(dead.status, 502);
    assert_eq!(dead.error_code(), "bad_gateway");
    assert!(
        !dead.body.contains("127.0.0.1"),
        "internals leaked: {}",
        dead.body
    );
    let slow = get(gw.addr, "/__echo/sleep/3000").send().await;
    assert_eq!(slow.status, 504);
    assert_eq!(slow.error_code(), "gateway_timeout");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn http2_clients_are_served() {
    let db = TestDb::new().await;
    let gw = standard(&db).await;
    user(&db, "kim@example.com", PASSWORD, &[]).await;
    let token = gw.login("kim@example.com", PASSWORD).await;
    let resp = get(gw.addr, "/h2").bearer(&token).http2().send().await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(resp.echoed("x-user-id").is_some());
}

#[tokio::test]
async fn websockets_are_proxied_after_authentication() {
    let db = TestDb::new().await;
    let gw = standard(&db).await;
    let id = user(&db, "lu@example.com", PASSWORD, &[]).await;
    let token = gw.login("lu@example.com", PASSWORD).await;
    let url = format!("ws://{}/ws", gw.addr);

    let anonymous = tokio_tungstenite::connect_async(url.as_str()).await;
    assert!(
        anonymous.is_err(),
        "an unauthenticated upgrade must be refused"
    );

    let mut request = url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
        .headers_mut()
        .insert("x-user-id", "root".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade through the gateway");
    let first = ws.next().await.unwrap().unwrap();
    let described: serde_json::Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    assert_eq!(described["headers"]["x-user-id"], id.as_str());
    ws.send(Message::text("ping through")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap().to_text().unwrap(),
        "ping through"
    );
}

#[tokio::test]
async fn admin_endpoints() {
    let db = TestDb::new().await;
    let gw = standard(&db).await;
    assert_eq!(get(gw.admin, "/healthz").send().await.status, 200);
    assert_eq!(get(gw.admin, "/readyz").send().await.status, 200);
    get(gw.addr, "/public").send().await;
    let metrics = get(gw.admin, "/metrics").send().await;
    assert_eq!(metrics.status, 200);
    for name in [
        "gateway_requests_total",
        "gateway_request_duration_seconds",
        "gateway_session_cache_entries",
        "gateway_db_pool_connections",
        "gateway_bcrypt_queue_depth",
    ] {
        assert!(metrics.body.contains(name), "{name} missing from /metrics");
    }
}

/// The key the signing tests share with their "backend".
const SIGNING_KEY: &str = "backend-shared-key-0123456789abcdef";

/// `/` required, every identity signed with [`SIGNING_KEY`].
async fn signing(db: &TestDb) -> TestGateway {
    TestGateway::builder(db)
        .route("/", echo().await, "required")
        .env("GATEWAY_HEADERS__SIGN", "true")
        .env("GATEWAY_HEADERS__SIGNING_SECRET", SIGNING_KEY)
        .start()
        .await
}

#[tokio::test]
async fn signed_identity_headers_verify_for_backends() {
    let db = TestDb::new().await;
    let key = SIGNING_KEY;
    let gw = signing(&db).await;
    user(&db, "mo@example.com", PASSWORD, &["ops"]).await;
    let token = gw.login("mo@example.com", PASSWORD).await;
    let resp = get(gw.addr, "/orders/7?full=1").bearer(&token).send().await;
    assert_eq!(resp.status, 200);
    let h = |n: &str| resp.echoed(n).unwrap_or_default();
    let signature = h("x-identity-signature");
    assert!(signature.starts_with("t="), "{signature}");
    let claims = gateway::headers::Claims {
        user_id: &h("x-user-id"),
        email: &h("x-user-email"),
        email_verified: &h("x-user-email-verified"),
        roles: &h("x-user-roles"),
        session_id: &h("x-session-id"),
        request_id: &h("x-request-id"),
        method: "GET",
        path: "/orders/7?full=1",
    };
    let now = std::time::SystemTime::now();
    let max_age = Duration::from_secs(60);
    assert!(gateway::headers::verify_signature(
        key.as_bytes(),
        &signature,
        &claims,
        now,
        max_age
    ));
    let tampered = gateway::headers::Claims {
        roles: "ops,admin",
        ..claims
    };
    assert!(!gateway::headers::verify_signature(
        key.as_bytes(),
        &signature,
        &tampered,
        now,
        max_age
    ));
    let replayed = gateway::headers::Claims {
        path: "/orders/8",
        ..claims
    };
    assert!(!gateway::headers::verify_signature(
        key.as_bytes(),
        &signature,
        &replayed,
        now,
        max_age
    ));
    assert_eq!(h("x-user-email-verified"), "true");
    let unverified = gateway::headers::Claims {
        email_verified: "false",
        ..claims
    };
    assert!(!gateway::headers::verify_signature(
        key.as_bytes(),
        &signature,
        &unverified,
        now,
        max_age
    ));
}

/// The Python verifier of docs/identity-headers.md, run as written, accepts the signatures
/// of real forwarded requests and refuses a flipped verification flag.
#[tokio::test]
async fn the_python_verifier_of_the_docs_accepts_real_signatures() {
    let docs = include_str!("../../docs/identity-headers.md");
    let verifier = docs
        .split("```python\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a python block in docs/identity-headers.md");
    let db = TestDb::new().await;
    let key = SIGNING_KEY;
    let gw = signing(&db).await;
    user(&db, "py@example.com", PASSWORD, &[]).await;
    let token = gw.login("py@example.com", PASSWORD).await;
    let resp = get(gw.addr, "/orders/7?full=1&b=2")
        .bearer(&token)
        .send()
        .await;
    let mut headers = resp.echoed_headers();
    let check = |headers: serde_json::Map<String, serde_json::Value>| {
        let script = format!(
            "{verifier}\nimport json, sys\nh = json.load(sys.stdin)\n\
             print(verify({key:?}.encode(), h, 'GET', '/orders/7?full=1&b=2'))\n"
        );
        async move {
            let mut child = tokio::process::Command::new("python3")
                .args(["-c", &script])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("python3 (scripts/test.sh installs it with aiosmtpd)");
            let input = serde_json::Value::Object(headers).to_string();
            let mut stdin = child.stdin.take().unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut stdin, input.as_bytes())
                .await
                .unwrap();
            drop(stdin);
            let out = child.wait_with_output().await.unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        }
    };
    assert_eq!(check(headers.clone()).await, "True");
    headers.insert("x-user-email-verified".into(), "false".into());
    assert_eq!(check(headers).await, "False");
}

/// `X-User-Email-Verified` says whether the address was proved, and a verification made
/// after the session was cached reaches the backends within the revocation window.
#[tokio::test]
async fn email_verification_reaches_backends() {
    let db = TestDb::new().await;
    let gw = TestGateway::builder(&db)
        .route("/", echo().await, "required")
        .route("/public", echo().await, "public")
        .env("GATEWAY_SESSIONS__REVOCATION_POLL", "200ms")
        .start()
        .await;
    unverified_user(&db, "new@example.com", PASSWORD, &[]).await;
    let token = gw.login("new@example.com", PASSWORD).await;
    let resp = get(gw.addr, "/x").bearer(&token).send().await;
    assert_eq!(
        resp.echoed("x-user-email-verified").as_deref(),
        Some("false")
    );
    let spoofed = get(gw.addr, "/public/x")
        .header("x-user-email-verified", "true")
        .header("X_User_Email_Verified", "true")
        .send()
        .await;
    assert_eq!(spoofed.echoed("x-user-email-verified"), None);
    assert_eq!(spoofed.echoed("x_user_email_verified"), None);

    gateway::users::mark_verified(db.pool(), "new@example.com")
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let resp = get(gw.addr, "/x").bearer(&token).send().await;
        if resp.echoed("x-user-email-verified").as_deref() == Some("true") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the verification was not seen within 5 s: {}",
            resp.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_bcrypt_queue_answers_503_instead_of_queueing() {
    let db = TestDb::new().await;
    let gw = TestGateway::builder(&db)
        .route("/", echo().await, "required")
        .env("GATEWAY_AUTH__BCRYPT_COST", "11")
        .env("GATEWAY_AUTH__BCRYPT_CONCURRENCY", "1")
        .env("GATEWAY_AUTH__BCRYPT_QUEUE", "1")
        .env("GATEWAY_RATE_LIMITS__LOGIN_PER_IP", "1000/1m")
        .env("GATEWAY_RATE_LIMITS__LOGIN_PER_EMAIL", "1000/1m")
        .start()
        .await;
    // Unknown emails cost a verification against the dummy hash at the configured cost (11),
    // so these really occupy the hasher; one email each keeps the failure budget out of it.
    let calls: Vec<_> = (0..16)
        .map(|i| {
            let addr = gw.addr;
            tokio::spawn(async move {
                post_json(
                    addr,
                    "/auth/login",
                    &serde_json::json!({"email": format!("nobody{i}@example.com"), "password": PASSWORD}),
                )
                .send()
                .await
            })
        })
        .collect();
    let mut overloaded = 0;
    for call in calls {
        let resp = call.await.unwrap();
        match resp.status {
            401 => {}
            503 => {
                overloaded += 1;
                assert_eq!(resp.header("retry-after"), Some("1"));
                assert_eq!(resp.error_code(), "unavailable");
            }
            other => panic!("unexpected {other}: {}", resp.body),
        }
    }
    assert!(
        overloaded >= 1,
        "16 concurrent logins with room for 2 must shed some"
    );
}

#[tokio::test]
async fn the_connection_cap_holds() {
    let db = TestDb::new().await;
    let gw = TestGateway::builder(&db)
        .route("/", echo().await, "public")
        .env("GATEWAY_SERVER__MAX_CONNECTIONS", "2")
        .start()
        .await;
    let first = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let second = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let third =
        tokio::time::timeout(Duration::from_millis(500), get(gw.addr, "/waiting").send()).await;
    assert!(
        third.is_err(),
        "a third connection must wait while two are open"
    );
    drop(first);
    let served = tokio::time::timeout(Duration::from_secs(5), get(gw.addr, "/after").send()).await;
    assert_eq!(served.expect("served once a slot frees").status, 200);
    drop(second);
}

/// The client address (rate-limit key, `X-Forwarded-For`) comes from the socket, or from
/// `X-Forwarded-For` only when the peer is a trusted proxy: a client cannot dodge a per-IP
/// limit by inventing addresses.
#[tokio::test]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    let db = TestDb::new().await;
    let up = echo().await;
    let attempt = |addr, i: usize, xff: &str| {
        post_json(
            addr,
            "/auth/login",
            &serde_json::json!({"email": format!("x{i}@example.com"), "password": "wrong password"}),
        )
        .header("x-forwarded-for", xff)
    };

    let untrusting = TestGateway::builder(&db)
        .route("/", up, "public")
        .env("GATEWAY_RATE_LIMITS__LOGIN_PER_IP", "2/1m")
        .start()
        .await;
    let statuses: Vec<u16> = futures_util::future::join_all(
        (0..3).map(|i| attempt(untrusting.addr, i, &format!("10.0.0.{i}")).send()),
    )
    .await
    .iter()
    .map(|r| r.status)
    .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        1,
        "{statuses:?}"
    );
    let echoed = get(untrusting.addr, "/x")
        .header("x-forwarded-for", "1.2.3.4")
        .send()
        .await;
    assert_eq!(
        echoed.echoed("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );

    let trusting = TestGateway::builder(&db)
        .route("/", up, "public")
        .env("GATEWAY_RATE_LIMITS__LOGIN_PER_IP", "2/1m")
        .env("GATEWAY_SERVER__TRUSTED_PROXIES", "127.0.0.1")
        .start()
        .await;
    for i in 0..3 {
        let r = attempt(trusting.addr, 10 + i, &format!("10.0.1.{i}"))
            .send()
            .await;
        assert_eq!(
            r.status, 401,
            "distinct clients behind a trusted proxy: {}",
            r.body
        );
    }
    let same: Vec<u16> = futures_util::future::join_all(
        (0..3).map(|i| attempt(trusting.addr, 20 + i, "203.0.113.9").send()),
    )
    .await
    .iter()
    .map(|r| r.status)
    .collect();
    assert_eq!(same.iter().filter(|s| **s == 429).count(), 1, "{same:?}");
    let echoed = get(trusting.addr, "/x")
        .header("x-forwarded-for", "1.2.3.4")
        .send()
        .await;
    assert_eq!(
        echoed.echoed("x-forwarded-for").as_deref(),
        Some("1.2.3.4, 127.0.0.1")
    );
}

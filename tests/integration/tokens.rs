//! Session tokens the gateway never issued cost no I/O (issue 10, item 14): a token's tag is
//! checked before any cache entry or query exists for it, tags of rotated keys behave as
//! documented, tokens from before tags end unless kept, and the session-miss budget bounds the
//! queries one client address can cause even with correctly tagged guesses.

use std::sync::atomic::Ordering;
use std::time::Duration;

use gateway::sessions::{TokenKeys, token};

use crate::support::http::get;
use crate::support::{Fault, FaultProxy, TestDb, TestGateway, echo, sessions, token_keys, user};

const PASSWORD: &str = "correct horse battery";
/// A key the test gateways do not have (or had, before a rotation).
const OLD_KEY: &str = "the previous token key 0123456789abcdef";

/// Floods `gw` with `n` made-up tokens of `--forge kind` (a new one per request) through the
/// load generator's `forged` scenario; returns how many were refused with 401.
async fn flood(gw: &TestGateway, kind: &str, n: u64) -> u64 {
    let target = format!("http://{}/x", gw.addr);
    let n_text = n.to_string();
    let config = loadtest::run::RunConfig::from_flags(&[
        "--scenario",
        "forged",
        "--forge",
        kind,
        "--token-key",
        crate::support::TOKEN_KEY,
        "--target",
        &target,
        "--concurrency",
        "16",
        "--iterations",
        &n_text,
        "--duration",
        "120s",
    ])
    .expect("valid loadtest flags");
    let summary = loadtest::run::run(config).await.expect("the flood runs");
    assert_eq!(summary.requests, n, "{summary:#?}");
    summary.ok
}

async fn cached_entries(gw: &TestGateway) -> u64 {
    gw.gw.sessions.cached_entries().await
}

/// A session of a new user that no gateway has cached; returns its token.
async fn cold_session(db: &TestDb, email: &str) -> String {
    let id = user(db, email, PASSWORD, &[]).await;
    sessions(db, &id, 1).await.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_random_well_formed_tokens_makes_no_query_and_no_cache_entry() {
    let db = TestDb::new().await;
    let live = cold_session(&db, "ana@example.com").await;
    let gw = TestGateway::builder(&db)
        .route("/", echo().await, "required")
        .start()
        .await;

    // What the flood of issue 10 sent (gw_ + 43 random characters), then the current shape
    // with a random tag: every one refused, not one looked up or remembered.
    assert_eq!(flood(&gw, "legacy", 1500).await, 1500);
    assert_eq!(flood(&gw, "forged", 1500).await, 1500);
    assert_eq!(gw.session_queries(), 0, "a forged token made a query");
    assert_eq!(cached_entries(&gw).await, 0, "a forged token was cached");
    let stats = gw.gw.sessions.stats();
    assert_eq!(stats.forged.load(Ordering::Relaxed), 1500);
    assert_eq!(stats.legacy_refused.load(Ordering::Relaxed), 1500);
    assert_eq!(
        stats.throttled.load(Ordering::Relaxed),
        0,
        "no budget spent"
    );

    // As a cookie too, and on /auth/session: the same refusal, still no query.
    let forged = gateway::sessions::TokenKeys::new(OLD_KEY.as_bytes(), &[]).issue();
    let cookie = format!("__Host-gw_session={forged}");
    assert_eq!(
        get(gw.addr, "/x")
            .header("cookie", &cookie)
            .send()
            .await
            .status,
        401
    );
    assert_eq!(
        get(gw.addr, "/auth/session")
            .bearer(&forged)
            .send()
            .await
            .status,
        401
    );
    assert_eq!(gw.session_queries(), 0);

    // The issued session works, with its one query.
    assert_eq!(get(gw.addr, "/x").bearer(&live).send().await.status, 200);
    assert_eq!(gw.session_queries(), 1);

    let metrics = get(gw.admin, "/metrics").send().await.body;
    for line in [
        "gateway_session_lookups_total{result=\"forged\"}",
        "gateway_session_lookups_total{result=\"legacy_refused\"}",
    ] {
        assert!(metrics.contains(line), "{line} missing from /metrics");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_are_refused_without_the_database() {
    let db = TestDb::new().await;
    let (proxy, url) = FaultProxy::for_database(db.url()).await;
    let gw = TestGateway::builder(&db)
        .route("/", echo().await, "required")
        .env("GATEWAY_DATABASE__URL", &url)
        .env("GATEWAY_DATABASE__POOL_WAIT_TIMEOUT", "500ms")
        .env("GATEWAY_DATABASE__CONNECT_TIMEOUT", "500ms")
        .start()
        .await;
    proxy.set(Fault::Reset);
    // With the database unreachable, a lookup answers 503: a 401 proves none was tried.
    assert_eq!(flood(&gw, "forged", 500).await, 500);
    let tagged = token_keys().issue();
    assert_eq!(get(gw.addr, "/x").bearer(&tagged).send().await.status, 503);
    assert_eq!(
        gw.session_queries(),
        1,
        "only the tagged token was looked up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_the_previous_key_works_during_rotation_and_ends_with_the_key() {
    let db = TestDb::new().await;
    let id = user(&db, "rot@example.com", PASSWORD, &[]).await;
    let old_keys = TokenKeys::new(OLD_KEY.as_bytes(), &[]);
    let old = gateway::sessions::create(
        db.pool(),
        &old_keys,
        &id,
        &Default::default(),
        Duration::from_secs(3600),
    )
    .await
    .unwrap()
    .token;

    // Rotating: the new key signs, the old one still verifies.
    let rotating = TestGateway::builder(&db)
        .route("/", echo().await, "required")
        .env("GATEWAY_SESSIONS__PREVIOUS_TOKEN_KEYS", OLD_KEY)
        .start()
        .await;
    let resp = get(rotating.addr, "/x").bearer(&old).send().await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.echoed("x-user-id").as_deref(), Some(id.as_str()));
    let new = rotating.login("rot@example.com", PASSWORD).await;
    assert!(
        token_keys().verify(&new),
        "new tokens carry the current key's tag"
    );
    assert!(!old_keys.verify(&new));

    // Rotated out: the old key's tag is refused before any lookup; the new token works.
    let rotated = TestGateway::builder(&db)
        .route("/", echo().await, "required")
        .start()
        .await;
    assert_eq!(
        get(rotated.addr, "/x").bearer(&old).send().await.status,
        401
    );
    assert_eq!(
        rotated.session_queries(),
        0,
        "a rotated-out tag made a query"
    );
    assert_eq!(
        get(rotated.addr, "/x").bearer(&new).send().await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_from_before_tags_end_unless_legacy_tokens_are_accepted() {
    let db = TestDb::new().await;
    let id = user(&db, "old@example.com", PASSWORD, &[]).await;
    // A session as gateway 0.1.0 made it: gw_ + 43 characters, its SHA-256 stored.
    let legacy = format!("gw_{}", "q".repeat(42) + "A");
    let session = sessions(&db, &id, 1).await.remove(0);
    db.client()
        .await
        .execute(
            "UPDATE sessions SET token_hash = $1 WHERE token_hash = $2",
            &[
                &token::hash(&legacy).as_slice(),
                &token::hash(&session).as_slice(),
            ],
        )
        .await
        .unwrap();

    let strict = TestGateway::builder(&db)
        .route("/", echo().await, "required")
        .start()
        .await;
    assert_eq!(
        get(strict.addr, "/x").bearer(&legacy).send().await.status,
        401
    );
    assert_eq!(strict.session_queries(), 0);

    let keeping = TestGateway::builder(&db)
        .route("/", echo().await, "required")
        .env("GATEWAY_SESSIONS__ACCEPT_LEGACY_TOKENS", "true")
        .start()
        .await;
    let resp = get(keeping.addr, "/x").bearer(&legacy).send().await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.echoed("x-user-id").as_deref(), Some(id.as_str()));
    // Guesses of the legacy shape reach the database again, within the miss budget.
    let guess = format!("gw_{}", "z".repeat(43));
    assert_eq!(
        get(keeping.addr, "/x").bearer(&guess).send().await.status,
        401
    );
    assert_eq!(keeping.session_queries(), 2);
    let checked = &keeping.gw.sessions.stats().legacy_checked;
    assert_eq!(
        checked.load(Ordering::Relaxed),
        2,
        "what tells when to switch it off"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_miss_budget_bounds_queries_per_client_address_and_answers_429() {
    const BUDGET: u64 = 20;
    let db = TestDb::new().await;
    let warm = cold_session(&db, "warm@example.com").await;
    let cold = cold_session(&db, "cold@example.com").await;
    let up = echo().await;
    // The users exist before the gateway starts and there is no overlap window, so the
    // revocation poller never drops the warm session (which would make it miss again).
    let gw = TestGateway::builder(&db)
        .route("/", up, "required")
        .env("GATEWAY_RATE_LIMITS__SESSION_MISS_PER_IP", "20/1h")
        .env("GATEWAY_SERVER__TRUSTED_PROXIES", "127.0.0.1")
        .env("GATEWAY_SESSIONS__REVOCATION_OVERLAP", "0s")
        .start()
        .await;
    assert_eq!(get(gw.addr, "/x").bearer(&warm).send().await.status, 200);

    // Correctly tagged guesses (the key leaked): the budget's worth is looked up, then 429.
    let statuses = futures_util::future::join_all(
        (0..60).map(|_| get(gw.addr, "/x").bearer(&token_keys().issue()).send()),
    )
    .await;
    let refused = statuses.iter().filter(|r| r.status == 401).count() as u64;
    let throttled: Vec<_> = statuses.iter().filter(|r| r.status == 429).collect();
    assert_eq!(refused + throttled.len() as u64, 60);
    assert_eq!(refused, BUDGET - 1, "the warm session spent one");
    assert_eq!(gw.session_queries(), BUDGET);
    let retry: u64 = throttled[0]
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!(
        (1..=180).contains(&retry),
        "one more every 3 minutes: {retry}"
    );
    assert_eq!(throttled[0].error_code(), "rate_limited");

    // Hits cost nothing: the warm session still works from the same address. Forged tokens
    // never reach the budget: still 401. A cold valid session waits its turn: 429, not 401.
    assert_eq!(get(gw.addr, "/x").bearer(&warm).send().await.status, 200);
    let forged = TokenKeys::new(OLD_KEY.as_bytes(), &[]).issue();
    assert_eq!(get(gw.addr, "/x").bearer(&forged).send().await.status, 401);
    assert_eq!(get(gw.addr, "/x").bearer(&cold).send().await.status, 429);
    assert_eq!(gw.session_queries(), BUDGET);

    // Another client behind the trusted proxy has its own budget.
    let via_proxy = get(gw.addr, "/x")
        .bearer(&cold)
        .header("x-forwarded-for", "198.51.100.9")
        .send()
        .await;
    assert_eq!(via_proxy.status, 200);
    assert_eq!(gw.session_queries(), BUDGET + 1);

    // From an untrusted peer X-Forwarded-For means nothing: spoofing it escapes no budget.
    let strict = TestGateway::builder(&db)
        .route("/", up, "required")
        .env("GATEWAY_RATE_LIMITS__SESSION_MISS_PER_IP", "20/1h")
        .start()
        .await;
    let mut statuses = Vec::new();
    for i in 0..30 {
        let spoofed = get(strict.addr, "/x")
            .bearer(&token_keys().issue())
            .header("x-forwarded-for", &format!("203.0.113.{i}"))
            .send()
            .await;
        statuses.push(spoofed.status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count() as u64,
        BUDGET
    );
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 10);
    assert_eq!(strict.session_queries(), BUDGET);

    let metrics = get(gw.admin, "/metrics").send().await.body;
    for line in [
        "gateway_rate_limited_total{action=\"session_lookup\",scope=\"ip\"}",
        "gateway_session_lookups_total{result=\"throttled\"}",
    ] {
        assert!(metrics.contains(line), "{line} missing from /metrics");
    }
}

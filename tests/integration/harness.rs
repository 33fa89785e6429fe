//! The load-test harness's database tools on a real database: `loadtest seed` writes sessions
//! the gateway's own lookup finds, and `loadtest select` (the bare-query floor under a cache
//! miss in docs/benchmarks.md) finds exactly the seeded ones and nothing else.

use std::time::Duration;

use loadtest::seed::{SeedArgs, seed};
use loadtest::select::{SelectArgs, select};

use crate::support::TestDb;

fn select_args(db: &TestDb, tokens: &std::path::Path, count: usize) -> SelectArgs {
    SelectArgs {
        database_url: db.url().to_string(),
        tokens: tokens.to_path_buf(),
        skip: 0,
        count,
        concurrency: 4,
        connections: 2,
        json: None,
    }
}

#[tokio::test]
async fn select_finds_every_seeded_session_and_no_other() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let seeded = dir.path().join("tokens.txt");
    seed(&SeedArgs {
        database_url: db.url().to_string(),
        users: 30,
        sessions_per_user: 1,
        out: seeded.clone(),
        password: "correct horse battery staple".into(),
        bcrypt_cost: 4,
        email_domain: "harness.example".into(),
        roles: vec![],
        append: false,
        session_lifetime: Duration::from_secs(3600),
        connections: 2,
        token_key: crate::support::TOKEN_KEY.into(),
    })
    .await
    .unwrap();
    let keys = crate::support::token_keys();
    let text = std::fs::read_to_string(&seeded).unwrap();
    assert!(
        text.lines().all(|t| keys.verify(t)),
        "seeded tokens carry the gateway's tag"
    );

    let found = select(select_args(&db, &seeded, 30)).await.unwrap();
    assert_eq!((found.lookups, found.found, found.errors), (30, 30, 0));
    assert!(found.latency_us.p50 > 0 && found.latency_us.p99 >= found.latency_us.p50);

    // Well-formed tokens nobody issued: looked up, never found.
    let strangers = dir.path().join("strangers.txt");
    let lines: Vec<String> = (0..10).map(|_| keys.issue()).collect();
    std::fs::write(&strangers, lines.join("\n")).unwrap();
    let none = select(select_args(&db, &strangers, 10)).await.unwrap();
    assert_eq!((none.lookups, none.found, none.errors), (10, 0, 0));

    // Asking for more lookups than there are tokens is refused, not padded.
    assert!(select(select_args(&db, &strangers, 11)).await.is_err());
}

//! `db::transaction`: SERIALIZABLE on PostgreSQL as on CockroachDB, the whole body retried on
//! SQLSTATE 40001, in the body or at COMMIT (and on no other SQL error), and an error or a
//! cancelled caller never leaves a write behind or an open transaction in the pool. Broken
//! connections (retried before COMMIT, never after) are in `faults`.

use std::future::pending;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use deadpool_postgres::Pool;
use gateway::db::{self, MAX_TX_ATTEMPTS};
use tokio::sync::Barrier;
use tokio_postgres::error::SqlState;

use crate::support::TestDb;

/// Raises a serialization failure, as the database does when it aborts a transaction.
const RAISE_40001: &str = "DO $$ BEGIN RAISE EXCEPTION 'injected serialization failure' USING ERRCODE = 'serialization_failure'; END $$";

async fn probe_table(db: &TestDb) {
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE retry_probe (writer TEXT NOT NULL PRIMARY KEY, seen BIGINT NOT NULL)",
        )
        .await
        .expect("create retry_probe");
}

/// `(writer, seen)` rows of the probe table.
async fn probe_rows(pool: &Pool) -> Vec<(String, i64)> {
    let client = pool.get().await.expect("connection");
    client
        .query("SELECT writer, seen FROM retry_probe ORDER BY writer", &[])
        .await
        .expect("read retry_probe")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Write skew: each transaction counts the rows, then inserts its own row recording what it
/// saw. Run serially, one of them sees the other's row; run concurrently without
/// serializability both would see none. The bodies meet at a barrier on their first attempt
/// so they really overlap; the database aborts one with 40001 and `transaction` retries it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_skew_is_retried_until_serializable() {
    let db = TestDb::new().await;
    probe_table(&db).await;
    let barrier = Barrier::new(2);
    let calls = AtomicUsize::new(0);
    let writer = |name: &'static str| {
        let (barrier, calls, pool) = (&barrier, &calls, db.pool());
        async move {
            let mut attempt = 0;
            db::transaction(pool, |tx| {
                attempt += 1;
                let first = attempt == 1;
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    let seen: i64 = tx
                        .query_one("SELECT count(*) FROM retry_probe", &[])
                        .await?
                        .get(0);
                    if first {
                        barrier.wait().await;
                    }
                    tx.execute(
                        "INSERT INTO retry_probe (writer, seen) VALUES ($1, $2)
                         ON CONFLICT (writer) DO UPDATE SET seen = excluded.seen",
                        &[&name, &seen],
                    )
                    .await?;
                    Ok(seen)
                }
            })
            .await
        }
    };
    let (a, b) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(writer("a"), writer("b"))
    })
    .await
    .expect("the two transactions finish");
    let (a, b) = (a.expect("writer a commits"), b.expect("writer b commits"));

    let calls = calls.load(Ordering::SeqCst);
    assert!(
        calls > 2,
        "a serialization failure must have been retried ({calls} body runs)"
    );
    let mut seen = [a, b];
    seen.sort_unstable();
    assert_eq!(
        seen,
        [0, 1],
        "one transaction must see the other's row (no write skew)"
    );
    let rows = probe_rows(db.pool()).await;
    let writers: Vec<&str> = rows.iter().map(|(w, _)| w.as_str()).collect();
    assert_eq!(
        writers,
        ["a", "b"],
        "each write is present exactly once: {rows:?}"
    );
    let mut stored: Vec<i64> = rows.iter().map(|(_, s)| *s).collect();
    stored.sort_unstable();
    assert_eq!(stored, [0, 1]);
}

#[tokio::test]
async fn a_serialization_failure_reruns_the_body_on_a_clean_slate() {
    let db = TestDb::new().await;
    probe_table(&db).await;
    let calls = AtomicUsize::new(0);
    let calls = &calls;
    let seen = db::transaction(db.pool(), |tx| {
        let call = calls.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            // A plain INSERT: it fails on the retry unless the first attempt was rolled back.
            tx.execute(
                "INSERT INTO retry_probe (writer, seen) VALUES ('x', $1)",
                &[&(call as i64)],
            )
            .await?;
            if call == 1 {
                tx.execute(RAISE_40001, &[]).await?;
            }
            tx.query_one("SELECT count(*) FROM retry_probe", &[])
                .await
                .map(|r| r.get::<_, i64>(0))
        }
    })
    .await
    .expect("the retry commits");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(seen, 1, "the retry must not see the first attempt's write");
    assert_eq!(probe_rows(db.pool()).await, [("x".to_string(), 2)]);
}

/// CockroachDB reports most retry errors at COMMIT. A deferred constraint trigger raises 40001
/// at the first COMMIT (a sequence counts its runs, and sequences are not rolled back): the
/// failed COMMIT ended the transaction, so the body runs again and commits once.
#[tokio::test]
async fn a_serialization_failure_at_commit_is_retried() {
    let db = TestDb::new().await;
    probe_table(&db).await;
    db.client()
        .await
        .batch_execute(
            "CREATE SEQUENCE commit_runs;
             CREATE FUNCTION fail_first_commit() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF nextval('commit_runs') = 1 THEN
                     RAISE EXCEPTION 'injected at commit' USING ERRCODE = 'serialization_failure';
                 END IF;
                 RETURN NULL;
             END $$;
             CREATE CONSTRAINT TRIGGER fail_first_commit AFTER INSERT ON retry_probe
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fail_first_commit()",
        )
        .await
        .expect("create the commit-time failure");
    let calls = AtomicUsize::new(0);
    let calls = &calls;
    db::transaction(db.pool(), |tx| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            tx.execute(
                "INSERT INTO retry_probe (writer, seen) VALUES ('c', 0)",
                &[],
            )
            .await
        }
    })
    .await
    .expect("the retry commits");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "one retry after the failed COMMIT"
    );
    assert_eq!(probe_rows(db.pool()).await, [("c".to_string(), 0)]);
}

#[tokio::test]
async fn retries_stop_after_max_attempts() {
    let db = TestDb::new().await;
    let calls = AtomicUsize::new(0);
    let calls = &calls;
    let err = db::transaction(db.pool(), |tx| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move { tx.execute(RAISE_40001, &[]).await }
    })
    .await
    .expect_err("a body that always fails with 40001 fails");
    assert_eq!(
        err.code(),
        Some(&SqlState::T_R_SERIALIZATION_FAILURE),
        "{err}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), MAX_TX_ATTEMPTS as usize);
}

#[tokio::test]
async fn other_errors_are_not_retried() {
    let db = TestDb::new().await;
    probe_table(&db).await;
    db.client()
        .await
        .execute(
            "INSERT INTO retry_probe (writer, seen) VALUES ('taken', 0)",
            &[],
        )
        .await
        .unwrap();
    let calls = AtomicUsize::new(0);
    let calls = &calls;
    let err = db::transaction(db.pool(), |tx| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            tx.execute(
                "INSERT INTO retry_probe (writer, seen) VALUES ('taken', 1)",
                &[],
            )
            .await
        }
    })
    .await
    .expect_err("duplicate key");
    assert!(err.is_unique_violation(), "{err}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "a unique violation is returned after one attempt"
    );
    assert_eq!(probe_rows(db.pool()).await, [("taken".to_string(), 0)]);
}

/// With a pool of one connection, a connection that was not given back cleanly would make the
/// next transaction wait for the pool timeout or see leftovers.
#[tokio::test]
async fn a_failed_body_rolls_back_and_returns_a_clean_connection() {
    let db = TestDb::new().await;
    probe_table(&db).await;
    let pool = db.new_pool(&[("GATEWAY_DATABASE__MAX_CONNECTIONS", "1")]);
    let calls = AtomicUsize::new(0);
    let calls = &calls;
    let err = db::transaction(&pool, |tx| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            tx.execute(
                "INSERT INTO retry_probe (writer, seen) VALUES ('doomed', 0)",
                &[],
            )
            .await?;
            tx.query_one("SELECT 1 / 0", &[]).await
        }
    })
    .await
    .expect_err("division by zero");
    assert_eq!(err.code(), Some(&SqlState::DIVISION_BY_ZERO), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(
        probe_rows(&pool).await.is_empty(),
        "the failed body's write must be rolled back"
    );

    let isolation: String = db::transaction(&pool, |tx| async move {
        tx.execute(
            "INSERT INTO retry_probe (writer, seen) VALUES ('kept', 0)",
            &[],
        )
        .await?;
        Ok(tx
            .query_one("SHOW transaction_isolation", &[])
            .await?
            .get(0))
    })
    .await
    .expect("the next transaction runs");
    assert_eq!(isolation, "serializable");
    assert_eq!(probe_rows(&pool).await, [("kept".to_string(), 0)]);
}

#[tokio::test]
async fn a_cancelled_transaction_leaves_nothing_behind() {
    let db = TestDb::new().await;
    probe_table(&db).await;
    let pool = db.new_pool(&[("GATEWAY_DATABASE__MAX_CONNECTIONS", "1")]);
    let abandoned = db::transaction(&pool, |tx| async move {
        tx.execute(
            "INSERT INTO retry_probe (writer, seen) VALUES ('ghost', 0)",
            &[],
        )
        .await?;
        pending::<()>().await;
        Ok(())
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(200), abandoned)
            .await
            .is_err()
    );

    let rows = db::transaction(&pool, |tx| async move {
        tx.execute(
            "INSERT INTO retry_probe (writer, seen) VALUES ('next', 0)",
            &[],
        )
        .await?;
        tx.query("SELECT writer FROM retry_probe ORDER BY writer", &[])
            .await
    })
    .await
    .expect("the pool still serves transactions");
    let writers: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        writers,
        ["next"],
        "the cancelled transaction must not commit"
    );
    assert_eq!(probe_rows(db.pool()).await, [("next".to_string(), 0)]);
}

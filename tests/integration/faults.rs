//! Faults, against a real PostgreSQL behind the [`FaultProxy`] and real upstream sockets: the
//! database down, hung or slow; connections killed mid-transaction; upstreams that refuse,
//! hang or reset. Every test asserts the time bound the configuration promises, recovery
//! without a restart, and that nothing leaks (sockets, file descriptors, pooled connections).
//! SIGTERM under load is in [`crate::shutdown`].

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gateway::db::{self, DbError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::support::http::{Resp, get, post_json};
use crate::support::{
    CpuLoad, Fault, FaultProxy, ServeProcess, TestDb, TestGateway, echo, sessions, user, wait,
};

const PASSWORD: &str = "correct horse battery";

/// The short bounds every test gateway here runs with.
const POOL_WAIT: Duration = Duration::from_millis(500);
const POLL: Duration = Duration::from_millis(500);
const OVERLAP: Duration = Duration::from_millis(200);
const STATEMENT: Duration = Duration::from_millis(500);
const FAULT_ENV: [(&str, &str); 7] = [
    ("GATEWAY_DATABASE__POOL_WAIT_TIMEOUT", "500ms"),
    ("GATEWAY_DATABASE__CONNECT_TIMEOUT", "500ms"),
    ("GATEWAY_DATABASE__STATEMENT_TIMEOUT", "500ms"),
    ("GATEWAY_DATABASE__MAX_CONNECTIONS", "4"),
    ("GATEWAY_SESSIONS__REVOCATION_POLL", "500ms"),
    ("GATEWAY_SESSIONS__REVOCATION_OVERLAP", "200ms"),
    ("GATEWAY_SESSIONS__CACHE_TTL", "60s"),
];
const MAX_CONNECTIONS: usize = 4;
/// Room for scheduling on a busy machine, on top of a configured bound.
const SLACK: Duration = Duration::from_millis(700);
/// Spinning threads per core that the hung-database test runs beside, so that its bounds
/// (time, and no more than `max_connections` database sockets) are proven on a loaded machine.
/// One per core keeps every core busy; more would mostly slow the tests running beside it.
const LOAD_PER_CORE: usize = 1;
/// How long a gateway with a 250 ms connect timeout may take to open a connection again on a
/// busy machine.
const RECOVERY: Duration = Duration::from_secs(10);

/// How long a pooled connection waits for a reply before the watchdog fails it.
fn reply_timeout() -> Duration {
    STATEMENT + db::REPLY_GRACE
}

/// A refused or reset database: answers come as soon as connecting fails, well within twice
/// the pool wait.
fn refused_bound() -> Duration {
    2 * POOL_WAIT
}

/// A hung database: a request waits for a pooled connection (`POOL_WAIT`), then for a reply
/// at most `reply_timeout()`.
fn hung_bound() -> Duration {
    POOL_WAIT + reply_timeout() + SLACK
}

/// An in-process gateway whose database connections go through a fault proxy.
async fn behind_proxy(db: &TestDb, extra: &[(&str, &str)]) -> (TestGateway, FaultProxy) {
    let (proxy, url) = FaultProxy::for_database(db.url()).await;
    let mut builder = TestGateway::builder(db)
        .route("/", echo().await, "required")
        .env("GATEWAY_DATABASE__URL", &url);
    for (k, v) in FAULT_ENV.iter().chain(extra) {
        builder = builder.env(k, v);
    }
    (builder.start().await, proxy)
}

/// Concurrent GETs of `/x`, one per token, each measured.
fn spawn_requests(
    addr: SocketAddr,
    tokens: &[String],
) -> Vec<tokio::task::JoinHandle<(Resp, Duration)>> {
    tokens
        .iter()
        .map(|t| {
            let t = t.clone();
            tokio::spawn(async move { timed(get(addr, "/x").bearer(&t).send()).await })
        })
        .collect()
}

/// Runs `f` and measures it; fails the test if it has not finished within 15 s (so a
/// regression that makes something wait for ever fails instead of hanging the suite).
async fn timed<T>(f: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(15), f)
        .await
        .expect("no answer within 15 s");
    (out, started.elapsed())
}

fn login_body(email: &str) -> serde_json::Value {
    serde_json::json!({"email": email, "password": PASSWORD})
}

/// A 503 with `Retry-After`, answered within `bound`.
#[track_caller]
fn assert_unavailable(what: &str, resp: &Resp, took: Duration, bound: Duration) {
    assert_eq!(resp.status, 503, "{what}: {}", resp.body);
    assert_eq!(resp.header("retry-after"), Some("1"), "{what}: Retry-After");
    assert!(took <= bound, "{what} took {took:?}, more than {bound:?}");
    eprintln!("{what}: 503 after {took:?}");
}

/// Asks `probe` every 20 ms until it answers `want`; returns how long that took.
async fn until_status<F, Fut>(what: &str, want: u16, limit: Duration, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = u16>,
{
    let started = Instant::now();
    loop {
        let status = probe().await;
        if status == want {
            let took = started.elapsed();
            eprintln!("{what}: {want} after {took:?}");
            return took;
        }
        assert!(
            started.elapsed() < limit,
            "{what}: no {want} within {limit:?} (last {status})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Open file descriptors of process `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .count()
}

/// Pooled database connections of a gateway process, from its `/metrics`.
async fn pool_size(admin: SocketAddr) -> usize {
    let metrics = get(admin, "/metrics").send().await.body;
    metrics
        .lines()
        .filter(|l| l.starts_with("gateway_db_pool_connections{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as usize
}

/// The value of counter or gauge `name` (without labels) on the admin listener's `/metrics`;
/// 0 before it is first recorded.
async fn metric(admin: SocketAddr, name: &str) -> f64 {
    let metrics = get(admin, "/metrics").send().await.body;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Collects a child's standard error until it closes.
fn drain(stderr: Option<tokio::process::ChildStderr>) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        let mut out = String::new();
        if let Some(mut pipe) = stderr {
            let _ = pipe.read_to_string(&mut out).await;
        }
        out
    })
}

/// Clients looping authenticated GETs until stopped, counting their answers in `answered`;
/// each returns the statuses it saw.
fn load(
    addr: SocketAddr,
    token: &str,
    clients: usize,
    stop: &Arc<AtomicBool>,
    answered: &Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<Vec<u16>>> {
    (0..clients)
        .map(|_| {
            let (token, stop, answered) = (token.to_string(), stop.clone(), answered.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    seen.push(get(addr, "/x").bearer(&token).send().await.status);
                    answered.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                seen
            })
        })
        .collect()
}

/// The database goes away (every connection reset, new ones too) while clients with cached
/// sessions keep sending requests, through the real binary:
/// - cached sessions keep being served (`serve_cached_when_db_down = true`, the default);
/// - a cold token, a login and `/readyz` answer 503 + `Retry-After` within twice the pool
///   wait (never 401); `/healthz` stays 200;
/// - a session revoked in the database during the outage is refused within one
///   `revocation_poll` (+ slack) of the database's return;
/// - cold tokens, logins and `/readyz` recover with no restart;
/// - afterwards every database socket the gateway holds is a pooled connection (at most
///   `max_connections`), no file descriptor leaked (40 failed lookups would show), and the
///   process never panicked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_keeps_cached_sessions_fails_the_rest_fast_and_heals_itself() {
    let db = TestDb::new().await;
    let up = echo().await;
    let (proxy, url) = FaultProxy::for_database(db.url()).await;
    user(&db, "ann@example.com", PASSWORD, &[]).await;
    user(&db, "bob@example.com", PASSWORD, &[]).await;
    let cat = user(&db, "cat@example.com", PASSWORD, &[]).await;
    // Each poll looks back `OVERLAP` past its watermark and drops the sessions of users changed
    // since, new ones included: cache the sessions only once no poll can see these users.
    let quiet_from = tokio::time::Instant::now() + 2 * POLL + OVERLAP + SLACK;
    let config = format!(
        "[[routes]]\npath_prefix = \"/\"\nupstream = \"http://{up}\"\nauth = \"required\"\n"
    );
    let mut env: Vec<(&str, &str)> = FAULT_ENV.to_vec();
    env.extend([
        ("GATEWAY_DATABASE__URL", url.as_str()),
        ("GATEWAY_AUTH__BCRYPT_COST", "4"),
        ("GATEWAY_SERVER__SHUTDOWN_GRACE", "5s"),
        ("GATEWAY_LOG__LEVEL", "warn"),
    ]);
    let mut gw = ServeProcess::start(&db, &config, &env).await;
    let stderr = drain(gw.child.stderr.take());
    let pid = gw.child.id().expect("running");
    let (addr, admin) = (gw.addr, gw.admin);

    let login = |email: &'static str| async move {
        post_json(addr, "/auth/login", &login_body(email))
            .send()
            .await
    };
    let ann = login("ann@example.com").await.json()["token"]
        .as_str()
        .expect("token")
        .to_string();
    let bob = login("bob@example.com").await.json()["token"]
        .as_str()
        .expect("token")
        .to_string();
    tokio::time::sleep_until(quiet_from).await;
    for token in [&ann, &bob] {
        assert_eq!(get(addr, "/x").bearer(token).send().await.status, 200);
    }
    let cold = sessions(&db, &cat, 40).await;
    let bob_id = db
        .client()
        .await
        .query_one("SELECT id FROM users WHERE email = 'bob@example.com'", &[])
        .await
        .unwrap()
        .get::<_, String>(0);

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let clients = load(addr, &ann, 3, &stop, &answered);
    // The baseline counts the load's connections: every client has been answered.
    wait::until("the load under way", Duration::from_secs(5), || {
        let n = answered.load(Ordering::SeqCst);
        async move { n >= 6 }
    })
    .await;
    let baseline = fds(pid) - proxy.open();

    // Outage.
    proxy.set(Fault::Reset);
    let (resp, took) = timed(get(addr, "/x").bearer(&cold[0]).send()).await;
    assert_unavailable("cold token", &resp, took, refused_bound());
    assert_eq!(resp.error_code(), "unavailable");
    let (resp, took) = timed(login("cat@example.com")).await;
    assert_unavailable("login", &resp, took, refused_bound());
    let (resp, took) = timed(get(admin, "/readyz").send()).await;
    assert_unavailable("/readyz", &resp, took, refused_bound());
    assert_eq!(get(admin, "/healthz").send().await.status, 200);
    for token in &cold[1..] {
        assert_eq!(get(addr, "/x").bearer(token).send().await.status, 503);
    }
    let poll_errors = metric(admin, "gateway_revocation_poll_errors_total").await;
    assert_eq!(
        gateway::sessions::revoke_user(db.pool(), &bob_id, "test")
            .await
            .unwrap(),
        1
    );
    // Two polls since the revocation, both failed: the poller has tried and could not know.
    wait::until("two failed revocation polls", 10 * POLL, || async {
        metric(admin, "gateway_revocation_poll_errors_total").await >= poll_errors + 2.0
    })
    .await;
    assert_eq!(
        get(addr, "/x").bearer(&bob).send().await.status,
        200,
        "while the database is away the revocation is unknown: the cached session lives on \
         (until cache_ttl at most)"
    );

    // The database returns.
    proxy.set(Fault::Pass);
    let seen = until_status("revoked during the outage", 401, 5 * POLL, || async {
        get(addr, "/x").bearer(&bob).send().await.status
    })
    .await;
    assert!(
        seen <= POLL + SLACK,
        "revocation applied {seen:?} after recovery"
    );
    let limit = POLL + SLACK;
    until_status("cold token", 200, limit, || async {
        get(addr, "/x").bearer(&cold[0]).send().await.status
    })
    .await;
    until_status("login", 200, limit, || async {
        login("cat@example.com").await.status
    })
    .await;
    until_status("/readyz", 200, limit, || async {
        get(admin, "/readyz").send().await.status
    })
    .await;

    stop.store(true, Ordering::SeqCst);
    let mut served = 0;
    for client in clients {
        let statuses = client.await.unwrap();
        assert!(
            statuses.iter().all(|s| *s == 200),
            "a cached session was refused during the outage: {statuses:?}"
        );
        served += statuses.len();
    }
    assert!(served >= 30, "only {served} requests under load");
    eprintln!("{served} cached requests served through the outage");

    // Every database socket is a pooled connection; nothing else was left open.
    let settled = async {
        loop {
            let (open, pooled) = (proxy.open(), pool_size(admin).await);
            if open == pooled {
                return open;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let open = tokio::time::timeout(Duration::from_secs(3), settled)
        .await
        .expect("the proxy's open connections match the pool");
    assert!(open <= MAX_CONNECTIONS, "{open} database connections");
    let after = fds(pid) - proxy.open();
    assert!(
        after <= baseline + 3,
        "file descriptors other than database sockets: {baseline} before, {after} after"
    );

    gw.terminate();
    let status = tokio::time::timeout(Duration::from_secs(6), gw.child.wait())
        .await
        .expect("exit within the grace period")
        .unwrap();
    assert!(status.success(), "{status:?}");
    let log = stderr.await.unwrap();
    assert!(!log.contains("panicked"), "the gateway panicked:\n{log}");
}

/// With `serve_cached_when_db_down = false`, a cached session answers 503 + `Retry-After`
/// once the gateway has seen the database fail (one revocation poll at most), and 200 again
/// once a poll succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_serve_cached_off_cache_hits_answer_503_while_the_database_is_down() {
    let db = TestDb::new().await;
    let id = user(&db, "dee@example.com", PASSWORD, &[]).await;
    let (gw, proxy) = behind_proxy(
        &db,
        &[("GATEWAY_SESSIONS__SERVE_CACHED_WHEN_DB_DOWN", "false")],
    )
    .await;
    let token = sessions(&db, &id, 1).await.remove(0);
    assert_eq!(get(gw.addr, "/x").bearer(&token).send().await.status, 200);
    let queries = gw.session_queries();

    proxy.set(Fault::Reset);
    let took = until_status("cached session, database down", 503, 4 * POLL, || async {
        get(gw.addr, "/x").bearer(&token).send().await.status
    })
    .await;
    assert!(
        took <= POLL + SLACK,
        "the outage was noticed after {took:?}"
    );
    let resp = get(gw.addr, "/x").bearer(&token).send().await;
    assert_unavailable(
        "cached session, database down",
        &resp,
        Duration::ZERO,
        SLACK,
    );
    assert_eq!(
        gw.session_queries(),
        queries,
        "still a cache hit: the 503 comes from knowing the database is down"
    );

    proxy.set(Fault::Pass);
    let took = until_status("cached session, database back", 200, 4 * POLL, || async {
        get(gw.addr, "/x").bearer(&token).send().await.status
    })
    .await;
    assert!(took <= POLL + SLACK, "recovered after {took:?}");
}

/// A hung database (connections kept, nothing answered), with the CPU busy beside it: 40
/// concurrent cold requests, a login and `/readyz` all answer 503 + `Retry-After` within pool
/// wait + reply timeout, the gateway never holds more than `max_connections` database sockets
/// (no pile-up), nobody is left waiting for the pool, and everything works again once the
/// database answers.
///
/// Sockets are counted on the gateway's side (its open descriptors connected to the fault
/// proxy), at every accept of the proxy and every 20 ms. The proxy's own count keeps a
/// connection the gateway closed until the proxy's task gets round to noticing, which on a
/// busy machine is after the gateway opened the next one: that count made this test fail
/// with "pile-up: 5 database sockets, 1 pooled" while the gateway held 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_database_answers_503_in_bounded_time_without_pile_up() {
    let db = TestDb::new().await;
    let id = user(&db, "eve@example.com", PASSWORD, &[]).await;
    let (gw, proxy) = behind_proxy(&db, &[]).await;
    let tokens = sessions(&db, &id, 41).await;
    assert_eq!(
        get(gw.addr, "/x").bearer(&tokens[40]).send().await.status,
        200
    );

    let load = CpuLoad::start(LOAD_PER_CORE).await;
    proxy.set(Fault::Hang);
    let watching = Arc::new(AtomicBool::new(true));
    let sampler = sample_sockets(&gw, &proxy, &watching);
    let requests = async {
        let addr = gw.addr;
        let calls = spawn_requests(addr, &tokens[..40]);
        let login =
            timed(post_json(addr, "/auth/login", &login_body("eve@example.com")).send()).await;
        let ready = timed(get(gw.admin, "/readyz").send()).await;
        let mut answers = Vec::new();
        for call in calls {
            answers.push(call.await.unwrap());
        }
        watching.store(false, Ordering::SeqCst);
        (answers, login, ready)
    };
    let ((answers, (login, login_took), (ready, ready_took)), peaks) =
        tokio::join!(requests, sampler);

    let slowest = answers.iter().map(|(_, took)| *took).max().unwrap();
    for (resp, took) in &answers {
        assert_unavailable("cold token, hung database", resp, *took, hung_bound());
    }
    eprintln!("40 cold requests on a hung database: slowest 503 after {slowest:?}");
    assert_unavailable("login, hung database", &login, login_took, hung_bound());
    assert_unavailable(
        "/readyz, hung database",
        &ready,
        ready_took,
        POOL_WAIT + SLACK,
    );
    assert_no_pile_up(peaks, &proxy);
    let waiting = gw.gw.sessions.pool().status().waiting;
    assert!(
        waiting <= 2,
        "{waiting} waiting for a connection: only the revocation poller and the touch writer may"
    );

    proxy.set(Fault::Pass);
    until_status("cold token, database back", 200, hung_bound(), || async {
        get(gw.addr, "/x").bearer(&tokens[0]).send().await.status
    })
    .await;
    drop(load);
    assert_eq!(get(gw.admin, "/readyz").send().await.status, 200);
    assert_eq!(gw.gw.sessions.pool().status().waiting, 0);
    assert!(
        proxy
            .settle_to(MAX_CONNECTIONS, Duration::from_secs(2))
            .await,
        "{} database sockets after recovery",
        proxy.open()
    );
}

/// The pool lets go of a connection before its socket is closed (a create that timed out, a
/// connection taken out of the pool): the socket closes when the task that owns it next runs.
/// The gateway's socket budget (`db::watchdog`) makes a replacement wait for that. Here 30
/// connections are opened and given up (250 ms connect timeout against a hung database, 16
/// clients asking all the time): the gateway never holds more than
/// `max_connections` sockets, every answer is a timely 503, and every slot comes back, so the
/// gateway connects again once the database answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_given_up_on_a_hung_database_close_before_their_replacements_open() {
    const REPLACEMENTS: usize = 30;
    let db = TestDb::new().await;
    let id = user(&db, "ivy@example.com", PASSWORD, &[]).await;
    let (gw, proxy) = behind_proxy(
        &db,
        &[
            ("GATEWAY_DATABASE__CONNECT_TIMEOUT", "250ms"),
            ("GATEWAY_DATABASE__POOL_WAIT_TIMEOUT", "250ms"),
        ],
    )
    .await;
    let tokens = Arc::new(sessions(&db, &id, 64).await);

    proxy.set(Fault::Hang);
    let accepted_before = proxy.accepted();
    let watching = Arc::new(AtomicBool::new(true));
    let sampler = sample_sockets(&gw, &proxy, &watching);
    let clients: Vec<_> = (0..16)
        .map(|i| {
            let (addr, tokens, watching) = (gw.addr, tokens.clone(), watching.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                let mut next = i;
                while watching.load(Ordering::SeqCst) {
                    let token = &tokens[next % tokens.len()];
                    answers.push(timed(get(addr, "/x").bearer(token).send()).await);
                    next += 16;
                }
                answers
            })
        })
        .collect();
    let stopper = async {
        let started = Instant::now();
        while proxy.accepted() - accepted_before < REPLACEMENTS
            && started.elapsed() < Duration::from_secs(15)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        watching.store(false, Ordering::SeqCst);
    };
    let (peaks, ()) = tokio::join!(sampler, stopper);
    let bound = Duration::from_millis(250) + reply_timeout() + SLACK;
    let mut answered = 0;
    for client in clients {
        for (resp, took) in client.await.unwrap() {
            assert_eq!(resp.status, 503, "{}", resp.body);
            assert_eq!(resp.header("retry-after"), Some("1"));
            assert!(
                took <= bound,
                "answered after {took:?}, more than {bound:?}"
            );
            answered += 1;
        }
    }
    let given_up = proxy.accepted() - accepted_before;
    eprintln!("{answered} answers, {given_up} connections opened and given up");
    assert!(
        given_up >= REPLACEMENTS,
        "only {given_up} connections were opened in 15 s: the test did not exercise replacement"
    );
    assert_no_pile_up(peaks, &proxy);

    // Every slot came back: connections open again (each must finish its handshake within
    // the 250 ms connect timeout, so allow a few tries).
    proxy.set(Fault::Pass);
    until_status("cold token, database back", 200, RECOVERY, || async {
        get(gw.addr, "/x").bearer(&tokens[0]).send().await.status
    })
    .await;
}

/// The most database sockets seen while a test watched.
#[derive(Debug, Default, Clone, Copy)]
struct Peaks {
    /// Sockets the gateway held open (its descriptors connected to the fault proxy).
    held: usize,
    /// The pool's size.
    pooled: usize,
    /// The fault proxy's own count, which keeps a connection until the proxy has noticed it
    /// closed: on a busy machine that is after the gateway opened the next one, so it is shown
    /// but not asserted (it made this test fail with "5 database sockets, 1 pooled").
    proxied: usize,
}

/// Samples the sockets every 20 ms while `watching` (the fault proxy also counts the
/// gateway's sockets at each accept, when one too many would show).
async fn sample_sockets(gw: &TestGateway, proxy: &FaultProxy, watching: &AtomicBool) -> Peaks {
    let pool = gw.gw.sessions.pool();
    let mut peaks = Peaks::default();
    while watching.load(Ordering::SeqCst) {
        peaks.held = peaks.held.max(proxy.client_sockets());
        peaks.pooled = peaks.pooled.max(pool.status().size);
        peaks.proxied = peaks.proxied.max(proxy.open());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    peaks
}

/// Neither the sockets the gateway held (sampled, and at every accept of the proxy) nor the
/// pool ever went past `max_connections`.
#[track_caller]
fn assert_no_pile_up(peaks: Peaks, proxy: &FaultProxy) {
    let Peaks {
        held,
        pooled,
        proxied,
    } = peaks;
    let at_accept = proxy.peak_client_sockets();
    eprintln!(
        "database sockets held by the gateway: at most {held} sampled, {at_accept} at an \
         accept; pool at most {pooled}; the proxy counted at most {proxied}"
    );
    assert!(
        held.max(at_accept) <= MAX_CONNECTIONS && pooled <= MAX_CONNECTIONS,
        "pile-up: the gateway held {held} database sockets (sampled), {at_accept} at an \
         accept, {pooled} pooled (max {MAX_CONNECTIONS})"
    );
}

/// A slow database (every chunk delayed 150 ms each way) and a small pool: 20 concurrent cold
/// requests do not queue up behind it. Those that get a connection in time are served, the
/// rest answer 503 + `Retry-After` after the pool wait, all within pool wait + reply timeout,
/// and the pool never grows past `max_connections`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_database_sheds_load_after_the_pool_wait() {
    let db = TestDb::new().await;
    let id = user(&db, "fay@example.com", PASSWORD, &[]).await;
    let (gw, proxy) = behind_proxy(&db, &[("GATEWAY_DATABASE__MAX_CONNECTIONS", "2")]).await;
    let tokens = sessions(&db, &id, 22).await;
    // Two pooled connections, opened while the database is fast.
    let (a, b) = tokio::join!(
        get(gw.addr, "/x").bearer(&tokens[20]).send(),
        get(gw.addr, "/x").bearer(&tokens[21]).send()
    );
    assert_eq!((a.status, b.status), (200, 200));

    proxy.set(Fault::Delay(Duration::from_millis(150)));
    let calls = spawn_requests(gw.addr, &tokens[..20]);
    let (mut served, mut shed) = (0, 0);
    for call in calls {
        let (resp, took) = call.await.unwrap();
        assert!(
            took <= POOL_WAIT + reply_timeout() + SLACK,
            "answered after {took:?}"
        );
        match resp.status {
            200 => served += 1,
            503 => {
                shed += 1;
                assert_unavailable("cold token, slow database", &resp, took, hung_bound());
            }
            other => panic!("unexpected {other}: {}", resp.body),
        }
    }
    eprintln!("slow database: {served} served, {shed} shed");
    assert!(served >= 1, "a slow database still serves");
    assert!(
        shed >= 10,
        "20 requests on 2 slow connections must shed most: {shed}"
    );
    assert!(proxy.open() <= 2, "{} database sockets", proxy.open());
    assert_eq!(gw.gw.sessions.pool().status().waiting, 0);
}

/// A pool on `db` whose connections go through `proxy`, with one connection.
async fn proxied_pool(db: &TestDb) -> (deadpool_postgres::Pool, FaultProxy) {
    let (proxy, url) = FaultProxy::for_database(db.url()).await;
    let config = db.config(&[
        ("GATEWAY_DATABASE__URL", &url),
        ("GATEWAY_DATABASE__MAX_CONNECTIONS", "1"),
        ("GATEWAY_DATABASE__STATEMENT_TIMEOUT", "200ms"),
        ("GATEWAY_DATABASE__POOL_WAIT_TIMEOUT", "500ms"),
        ("GATEWAY_DATABASE__CONNECT_TIMEOUT", "500ms"),
    ]);
    (db::connect(&config.database).expect("pool"), proxy)
}

async fn counter_table(db: &TestDb) {
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE fault_counter (id TEXT PRIMARY KEY, n BIGINT NOT NULL);
             INSERT INTO fault_counter VALUES ('c', 0)",
        )
        .await
        .expect("create fault_counter");
}

async fn counter(db: &TestDb) -> i64 {
    db.client()
        .await
        .query_one("SELECT n FROM fault_counter WHERE id = 'c'", &[])
        .await
        .expect("read fault_counter")
        .get(0)
}

const INCREMENT: &str = "UPDATE fault_counter SET n = n + 1 WHERE id = 'c'";

/// The connection dies between two statements of a transaction (before COMMIT): the database
/// rolls the attempt back, and `db::transaction` runs the body again on a new connection. A
/// non-idempotent increment ends up applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_mid_transaction_is_retried_and_writes_once() {
    let db = TestDb::new().await;
    counter_table(&db).await;
    let (pool, proxy) = proxied_pool(&db).await;
    let (inside, resume) = (Notify::new(), Notify::new());
    let attempts = AtomicUsize::new(0);
    let run = db::transaction(&pool, |tx| {
        let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
        let (inside, resume) = (&inside, &resume);
        async move {
            tx.execute(INCREMENT, &[]).await?;
            if attempt == 1 {
                inside.notify_one();
                resume.notified().await;
            }
            tx.query_one("SELECT n FROM fault_counter WHERE id = 'c'", &[])
                .await
                .map(|r| r.get::<_, i64>(0))
        }
    });
    let kill = async {
        inside.notified().await;
        proxy.kill_all();
        assert!(proxy.settle_to(0, Duration::from_secs(2)).await);
        resume.notify_one();
    };
    let (seen, ()) =
        tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(run, kill) })
            .await
            .expect("the transaction finishes");
    assert_eq!(
        seen.expect("retried on a new connection and committed"),
        1,
        "the retry starts from a clean slate"
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 2, "one retry");
    assert_eq!(counter(&db).await, 1, "applied exactly once");
    assert_eq!(proxy.accepted(), 2, "the retry used a new connection");
}

/// The connection dies after COMMIT reached the server and before its answer came back: the
/// outcome is unknown to the gateway, so it must not run the body again. The error says so
/// (`OutcomeUnknown`, a 503 for clients) and the increment the server did commit is there
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_is_lost_is_not_run_twice() {
    let db = TestDb::new().await;
    counter_table(&db).await;
    let (pool, proxy) = proxied_pool(&db).await;
    proxy.lose_reply_after(b"COMMIT");
    let attempts = AtomicUsize::new(0);
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        db::transaction(&pool, |tx| {
            attempts.fetch_add(1, Ordering::SeqCst);
            async move { tx.execute(INCREMENT, &[]).await }
        }),
    )
    .await
    .expect("the transaction finishes");
    assert!(
        matches!(outcome, Err(DbError::OutcomeUnknown(_))),
        "{outcome:?}"
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 1, "never run again");
    let committed = until_status("the lost COMMIT", 1, Duration::from_secs(2), || async {
        u16::try_from(counter(&db).await).unwrap_or(u16::MAX)
    })
    .await;
    assert!(committed < Duration::from_secs(2));
    assert_eq!(counter(&db).await, 1, "written once, not twice");
}

/// Logins while every database connection is killed every 40 ms: each answers 200 (a working
/// token) or 503 + `Retry-After`, never anything else, and no login leaves two sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_through_killed_connections_answer_200_or_503_and_write_once() {
    let db = TestDb::new().await;
    let id = user(&db, "gus@example.com", PASSWORD, &[]).await;
    let (gw, proxy) = behind_proxy(
        &db,
        &[
            ("GATEWAY_RATE_LIMITS__LOGIN_PER_IP", "1000/1m"),
            ("GATEWAY_RATE_LIMITS__LOGIN_PER_EMAIL", "1000/1m"),
        ],
    )
    .await;
    let killing = Arc::new(AtomicBool::new(true));
    let killer = async {
        while killing.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(40)).await;
            proxy.kill_all();
        }
    };
    let logins = async {
        let mut outcomes = Vec::new();
        for _ in 0..6 {
            let round: Vec<_> = (0..4)
                .map(|_| {
                    let addr = gw.addr;
                    tokio::spawn(async move {
                        post_json(addr, "/auth/login", &login_body("gus@example.com"))
                            .send()
                            .await
                    })
                })
                .collect();
            for call in round {
                outcomes.push(call.await.unwrap());
            }
        }
        killing.store(false, Ordering::SeqCst);
        outcomes
    };
    let (outcomes, ()) = tokio::join!(logins, killer);
    let mut tokens = Vec::new();
    for resp in &outcomes {
        match resp.status {
            200 => tokens.push(resp.json()["token"].as_str().unwrap().to_string()),
            503 => assert_eq!(resp.header("retry-after"), Some("1")),
            other => panic!("login answered {other}: {}", resp.body),
        }
    }
    eprintln!(
        "{} logins under connection kills: {} succeeded",
        outcomes.len(),
        tokens.len()
    );
    let rows: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM sessions WHERE user_id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert!(
        rows as usize >= tokens.len() && rows as usize <= outcomes.len(),
        "{rows} sessions for {} logins ({} succeeded)",
        outcomes.len(),
        tokens.len()
    );
    let distinct: HashSet<&String> = tokens.iter().collect();
    assert_eq!(distinct.len(), tokens.len());
    for token in &tokens {
        assert_eq!(get(gw.addr, "/x").bearer(token).send().await.status, 200);
    }
}

/// The watchdog: a quiet (idle) connection is never mistaken for a hung one, whatever it ran
/// before (extended and simple protocol, an error, a statement cancelled by
/// `statement_timeout`, a transaction, an unnamed statement closed on drop); a connection
/// whose server stops answering fails within the reply timeout and is not given out again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_cuts_hung_connections_and_spares_quiet_ones() {
    let db = TestDb::new().await;
    let (pool, proxy) = proxied_pool(&db).await;
    let reply = Duration::from_millis(200) + db::REPLY_GRACE;
    {
        let client = db::client(&pool).await.expect("connection");
        let stmt = client.prepare_cached("SELECT $1::BIGINT").await.unwrap();
        client.query_one(&stmt, &[&1i64]).await.unwrap();
        client.query_one("SELECT 2", &[]).await.unwrap();
        assert!(client.query_one("SELECT 1 / 0", &[]).await.is_err());
        let cancelled = client
            .batch_execute("SELECT pg_sleep(1)")
            .await
            .expect_err("statement_timeout cancels it");
        assert!(
            cancelled.code().is_some(),
            "the server said so: {cancelled}"
        );
        client.batch_execute("SELECT pg_sleep(0.1)").await.unwrap();
    }
    db::transaction(
        &pool,
        |tx| async move { tx.query_one("SELECT 1", &[]).await },
    )
    .await
    .unwrap();
    tokio::time::sleep(3 * reply).await;
    let client = db::client(&pool).await.expect("connection");
    client
        .query_one("SELECT 1", &[])
        .await
        .expect("the quiet connection still works");
    assert!(!client.is_closed());
    assert_eq!(proxy.accepted(), 1, "one connection throughout");

    proxy.set(Fault::Hang);
    let (outcome, took) = timed(client.query_one("SELECT 1", &[])).await;
    assert!(outcome.is_err(), "a hung server fails the query");
    assert!(
        took >= reply - Duration::from_millis(50) && took <= reply + SLACK,
        "failed after {took:?}, reply timeout {reply:?}"
    );
    eprintln!("hung connection failed after {took:?}");
    assert!(client.is_closed());
    drop(client);
    proxy.set(Fault::Pass);
    let client = db::client(&pool).await.expect("a new connection");
    client.query_one("SELECT 1", &[]).await.unwrap();
    assert_eq!(proxy.accepted(), 2, "the hung connection was not reused");
}

/// An upstream that sends response headers and part of the body, then resets.
async fn resetting_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let mut partial = b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n".to_vec();
                partial.extend_from_slice(&[b'x'; 1000]);
                let _ = stream.write_all(&partial).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = stream.set_zero_linger();
            });
        }
    });
    addr
}

/// Upstreams that refuse (closed port), hang (accept, never answer) and reset (before the
/// response, and halfway through the body), through the real binary: 502 at once, 504 at
/// `upstream.response_timeout`, a broken-off body is never passed off as complete, the
/// gateway lets go of hung upstream connections, and 80 such requests leak no file
/// descriptor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_faults_answer_502_or_504_in_bounded_time_and_leak_nothing() {
    let db = TestDb::new().await;
    let up = echo().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let hang = FaultProxy::start(up).await;
    hang.set(Fault::Hang);
    let reset = FaultProxy::start(up).await;
    reset.set(Fault::Reset);
    let midbody = resetting_upstream().await;
    let route = |prefix: &str, to: SocketAddr| {
        format!(
            "[[routes]]\npath_prefix = \"{prefix}\"\nupstream = \"http://{to}\"\nauth = \"public\"\n"
        )
    };
    let config = [
        route("/", up),
        route("/refused", closed),
        route("/hang", hang.addr()),
        route("/reset", reset.addr()),
        route("/midbody", midbody),
    ]
    .concat();
    let response_timeout = Duration::from_secs(1);
    let mut gw = ServeProcess::start(
        &db,
        &config,
        &[
            ("GATEWAY_UPSTREAM__RESPONSE_TIMEOUT", "1s"),
            ("GATEWAY_UPSTREAM__CONNECT_TIMEOUT", "1s"),
            ("GATEWAY_SERVER__SHUTDOWN_GRACE", "5s"),
            ("GATEWAY_LOG__LEVEL", "error"),
        ],
    )
    .await;
    let stderr = drain(gw.child.stderr.take());
    let (addr, pid) = (gw.addr, gw.child.id().expect("running"));
    for _ in 0..5 {
        assert_eq!(get(addr, "/ok").send().await.status, 200);
    }
    let baseline = fds(pid);

    for round in 0..2 {
        let calls: Vec<_> = (0..10)
            .flat_map(|_| ["/refused", "/hang", "/reset", "/midbody"])
            .map(|path| {
                tokio::spawn(async move { (path, timed(get(addr, path).try_send()).await) })
            })
            .collect();
        for call in calls {
            let (path, (outcome, took)) = call.await.unwrap();
            match path {
                "/refused" | "/reset" => {
                    let resp = outcome.unwrap_or_else(|e| panic!("{path}: {e}"));
                    assert_eq!(resp.status, 502, "{path}: {}", resp.body);
                    assert_eq!(resp.error_code(), "bad_gateway");
                    assert!(took <= SLACK, "{path} took {took:?}");
                }
                "/hang" => {
                    let resp = outcome.unwrap_or_else(|e| panic!("{path}: {e}"));
                    assert_eq!(resp.status, 504, "{path}: {}", resp.body);
                    assert!(
                        took >= response_timeout && took <= response_timeout + SLACK,
                        "{path} took {took:?}"
                    );
                }
                _ => assert!(
                    outcome.is_err(),
                    "a body cut off upstream must not reach the client as complete"
                ),
            }
        }
        eprintln!("upstream faults, round {round}: all answered in bound");
    }
    assert!(
        hang.settle_to(0, Duration::from_secs(2)).await,
        "the gateway still holds {} hung upstream connections",
        hang.open()
    );
    assert_eq!(get(addr, "/ok").send().await.status, 200);
    let after = fds(pid);
    eprintln!("file descriptors: {baseline} before, {after} after 80 upstream faults");
    assert!(after <= baseline + 2, "{baseline} before, {after} after");

    gw.terminate();
    tokio::time::timeout(Duration::from_secs(6), gw.child.wait())
        .await
        .expect("exit within the grace period")
        .unwrap();
    let log = stderr.await.unwrap();
    assert!(!log.contains("panicked"), "the gateway panicked:\n{log}");
}

/// A statement the database refuses (here: the `sessions` table is gone) is a bug, not
/// unavailability: 500 `internal`, with no `Retry-After` inviting the client to hammer it. A
/// database that cannot answer stays a 503 (the tests above).
#[tokio::test]
async fn a_query_the_database_refuses_is_a_500_without_retry_after() {
    let db = TestDb::new().await;
    let up = echo().await;
    let gw = TestGateway::builder(&db)
        .route("/api", up, "required")
        .start()
        .await;
    let id = user(&db, "refused@example.com", PASSWORD, &[]).await;
    let token = sessions(&db, &id, 1).await.remove(0);
    db.client()
        .await
        .batch_execute("ALTER TABLE sessions RENAME TO sessions_elsewhere")
        .await
        .expect("rename the sessions table");
    let resp = get(gw.addr, "/api/x").bearer(&token).send().await;
    assert_eq!(resp.status, 500, "{}", resp.body);
    assert_eq!(resp.error_code(), "internal");
    assert!(resp.header("retry-after").is_none(), "{:?}", resp.headers);
    assert!(!resp.body.contains("sessions_elsewhere"), "{}", resp.body);
}

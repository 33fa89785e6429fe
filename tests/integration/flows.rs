//! The sign-in flows from outside, with codes and links received over a real SMTP socket
//! (the in-process [`CodeSink`] where only the code matters, else aiosmtpd's [`SmtpSink`],
//! which reads whole messages): every rule of spec section 5 and issue 4 has a test that tries to break it.
//! Replayed, exhausted, misdirected and expired codes; the failure budget across re-issued
//! codes and two instances; magic links that a GET never consumes and a forged `Host` never
//! redirects; password reset and change against old sessions and passwords; session
//! management; enumeration by status, body and time; cross-origin posts; rate limits; weak
//! passwords.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::http::{self, Resp, get, post_json};
use crate::support::smtp::{CodeSink, Inbox, ReceivedMail, SmtpSink};
use crate::support::{PUBLIC_ORIGIN, TestDb, TestGateway, cli, user};

const PASSWORD: &str = "correct horse battery";
const STRONG: &str = "tangerine kettle orbit 93";
const STRONGER: &str = "violet harbour quartz 17";
const WAIT: Duration = Duration::from_secs(10);
/// How long to wait before concluding that no mail is coming.
const QUIET: Duration = Duration::from_millis(1500);
const COOKIE: &str = "__Host-gw_session";

/// Limits high enough that only the tests about limits meet them.
const ROOMY: [(&str, &str); 10] = [
    ("GATEWAY_RATE_LIMITS__LOGIN_PER_IP", "10000/1m"),
    ("GATEWAY_RATE_LIMITS__LOGIN_PER_EMAIL", "10000/1m"),
    ("GATEWAY_RATE_LIMITS__OTP_REQUEST_PER_IP", "10000/1m"),
    ("GATEWAY_RATE_LIMITS__OTP_REQUEST_PER_EMAIL", "10000/1m"),
    ("GATEWAY_RATE_LIMITS__OTP_VERIFY_PER_IP", "10000/1m"),
    ("GATEWAY_RATE_LIMITS__OTP_VERIFY_PER_EMAIL", "10000/1m"),
    ("GATEWAY_RATE_LIMITS__REGISTER_PER_IP", "10000/1m"),
    ("GATEWAY_RATE_LIMITS__REGISTER_PER_EMAIL", "10000/1m"),
    ("GATEWAY_RATE_LIMITS__MAGIC_REQUEST_PER_IP", "10000/1m"),
    ("GATEWAY_RATE_LIMITS__MAGIC_REQUEST_PER_EMAIL", "10000/1m"),
];

/// A gateway on `db` mailing through `sink`, with roomy limits, then `env` on top.
async fn start(db: &TestDb, sink: &impl Inbox, env: &[(&str, &str)]) -> TestGateway {
    let mut builder = TestGateway::builder(db)
        .env("GATEWAY_MAIL__TRANSPORT", "smtp")
        .env("GATEWAY_MAIL__SMTP_URL", &sink.url());
    for (k, v) in ROOMY.iter().chain(env) {
        builder = builder.env(k, v);
    }
    builder.start().await
}

async fn post(addr: SocketAddr, target: &str, body: Value) -> Resp {
    post_json(addr, target, &body).send().await
}

async fn otp_request(addr: SocketAddr, email: &str, purpose: &str) -> Resp {
    post(
        addr,
        "/auth/otp/request",
        json!({"email": email, "purpose": purpose}),
    )
    .await
}

async fn otp_verify(addr: SocketAddr, email: &str, code: &str, purpose: &str) -> Resp {
    post(
        addr,
        "/auth/otp/verify",
        json!({"email": email, "code": code, "purpose": purpose}),
    )
    .await
}

async fn login(addr: SocketAddr, email: &str, password: &str) -> Resp {
    post(
        addr,
        "/auth/login",
        json!({"email": email, "password": password}),
    )
    .await
}

async fn token_of(addr: SocketAddr, email: &str, password: &str) -> String {
    let resp = login(addr, email, password).await;
    assert_eq!(resp.status, 200, "login of {email}: {}", resp.body);
    resp.json()["token"].as_str().expect("token").to_string()
}

async fn whoami(addr: SocketAddr, token: &str) -> u16 {
    get(addr, "/auth/session").bearer(token).send().await.status
}

/// The next mail, which must be for `to`.
async fn mail_for(sink: &SmtpSink, to: &str) -> ReceivedMail {
    let mail = sink
        .next_message(WAIT)
        .await
        .unwrap_or_else(|| panic!("no mail for {to} within {WAIT:?}"));
    assert_eq!(mail.to, to, "mail to the wrong address: {mail:?}");
    mail
}

/// The 6-digit code in a mail.
fn code_in(mail: &ReceivedMail) -> String {
    mail.text
        .split_whitespace()
        .find(|w| w.len() == 6 && w.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or_else(|| panic!("no code in {}", mail.text))
        .to_string()
}

/// The link in a mail.
fn link_in(mail: &ReceivedMail) -> String {
    mail.text
        .split_whitespace()
        .find(|w| w.starts_with("http://") || w.starts_with("https://"))
        .unwrap_or_else(|| panic!("no link in {}", mail.text))
        .to_string()
}

/// Requests a code and reads it from the mail.
async fn code_for(gw: &TestGateway, sink: &impl Inbox, email: &str, purpose: &str) -> String {
    let resp = otp_request(gw.addr, email, purpose).await;
    assert_eq!(resp.status, 202, "{}", resp.body);
    sink.code_for(email, WAIT)
        .await
        .unwrap_or_else(|| panic!("no code for {email} within {WAIT:?}"))
}

/// A code that is not `code`.
fn wrong(code: &str) -> String {
    let n: u32 = code.parse().expect("digits");
    format!("{:06}", (n + 1) % 1_000_000)
}

fn session_cookie(resp: &Resp) -> String {
    let set = resp
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{COOKIE}=gw_")))
        .unwrap_or_else(|| panic!("no session cookie: {:?}", resp.headers));
    set.split(';').next().expect("name=value").to_string()
}

fn retry_after(resp: &Resp) -> u64 {
    resp.header("retry-after")
        .unwrap_or_else(|| panic!("429 without Retry-After: {:?}", resp.headers))
        .parse()
        .expect("Retry-After in seconds")
}

/// The one BIGINT that `sql` selects.
async fn number(db: &TestDb, sql: &str) -> i64 {
    db.client()
        .await
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// Moves every recorded failure of the database `by` into the past (time passing).
async fn age_failures(db: &TestDb, by: &str) {
    db.client()
        .await
        .execute(
            &format!("UPDATE auth_failures SET created_at = created_at - INTERVAL '{by}'"),
            &[],
        )
        .await
        .expect("age failures");
}

#[tokio::test]
async fn a_login_code_signs_in_once_and_a_replay_is_refused() {
    let sink = CodeSink::start().await;
    let db = TestDb::new().await;
    let gw = start(&db, &sink, &[]).await;
    user(&db, "ann@example.com", PASSWORD, &[]).await;

    let code = code_for(&gw, &sink, "ann@example.com", "login").await;
    let ok = otp_verify(gw.addr, "ANN@example.com", &code, "login").await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let token = ok.json()["token"].as_str().unwrap().to_string();
    assert!(session_cookie(&ok).ends_with(&token));
    assert_eq!(whoami(gw.addr, &token).await, 200);

    let replay = otp_verify(gw.addr, "ann@example.com", &code, "login").await;
    assert_eq!(replay.status, 401, "a used code must not work twice");
    assert_eq!(replay.error_code(), "invalid_code");
    assert!(replay.header("set-cookie").is_none());

    let stored: Vec<Vec<u8>> = db
        .client()
        .await
        .query("SELECT code_hash FROM auth_codes", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored.len(), 1);
    assert!(
        !stored[0].windows(6).any(|w| w == code.as_bytes()),
        "only a keyed hash is stored"
    );
}

#[tokio::test]
async fn the_sixth_attempt_with_the_right_code_is_refused() {
    let sink = CodeSink::start().await;
    let db = TestDb::new().await;
    let gw = start(&db, &sink, &[("GATEWAY_CODES__FAILURE_BUDGET", "100")]).await;
    user(&db, "bo@example.com", PASSWORD, &[]).await;
    let code = code_for(&gw, &sink, "bo@example.com", "login").await;
    for _ in 0..5 {
        let r = otp_verify(gw.addr, "bo@example.com", &wrong(&code), "login").await;
        assert_eq!(r.status, 401);
        assert_eq!(r.error_code(), "invalid_code");
    }
    let sixth = otp_verify(gw.addr, "bo@example.com", &code, "login").await;
    assert_eq!(sixth.status, 401, "5 attempts per code, the right one too");
    assert_eq!(sixth.error_code(), "invalid_code");
    let attempts = number(&db, "SELECT attempts FROM auth_codes").await;
    assert_eq!(attempts, 6, "every attempt is counted in the database");

    // A new code works: the cap is per code.
    let fresh = code_for(&gw, &sink, "bo@example.com", "login").await;
    assert_eq!(
        otp_verify(gw.addr, "bo@example.com", &fresh, "login")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_code_works_only_for_its_purpose_and_email() {
    let sink = CodeSink::start().await;
    let db = TestDb::new().await;
    let gw = start(&db, &sink, &[]).await;
    user(&db, "cy@example.com", PASSWORD, &[]).await;
    user(&db, "di@example.com", PASSWORD, &[]).await;

    let code = code_for(&gw, &sink, "cy@example.com", "login").await;
    let other_email = otp_verify(gw.addr, "di@example.com", &code, "login").await;
    assert_eq!(other_email.status, 401);
    assert_eq!(other_email.error_code(), "invalid_code");
    let other_purpose = otp_verify(gw.addr, "cy@example.com", &code, "verify_email").await;
    assert_eq!(other_purpose.status, 401);
    assert_eq!(other_purpose.body, other_email.body);
    let reset = otp_verify(gw.addr, "cy@example.com", &code, "password_reset").await;
    assert_eq!(reset.status, 400, "reset codes go to /auth/password/reset");
    let reset = post(
        gw.addr,
        "/auth/password/reset",
        json!({"email": "cy@example.com", "code": code, "new_password": STRONG}),
    )
    .await;
    assert_eq!(reset.status, 401, "a login code is no reset code");
    assert_eq!(reset.body, other_email.body);
    assert_eq!(
        otp_verify(gw.addr, "cy@example.com", &code, "login")
            .await
            .status,
        200,
        "still good for what it was issued for"
    );

    // A password_reset code never opens a session through /auth/otp/verify.
    let reset_code = code_for(&gw, &sink, "cy@example.com", "password_reset").await;
    let r = otp_verify(gw.addr, "cy@example.com", &reset_code, "password_reset").await;
    assert_eq!(r.status, 400);
    assert!(r.header("set-cookie").is_none());
    let r = otp_verify(gw.addr, "cy@example.com", &reset_code, "login").await;
    assert_eq!(r.status, 401);
    assert!(r.header("set-cookie").is_none());
}

#[tokio::test]
async fn an_expired_code_is_refused() {
    let sink = CodeSink::start().await;
    let db = TestDb::new().await;
    let gw = start(&db, &sink, &[]).await;
    user(&db, "ed@example.com", PASSWORD, &[]).await;
    let code = code_for(&gw, &sink, "ed@example.com", "login").await;
    let ttl: f64 = db
        .client()
        .await
        .query_one(
            "SELECT EXTRACT(EPOCH FROM expires_at - created_at)::FLOAT8 FROM auth_codes",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!((ttl - 600.0).abs() < 2.0, "codes live 10 minutes: {ttl}");
    db.client()
        .await
        .execute(
            "UPDATE auth_codes SET expires_at = now() - INTERVAL '1 second'",
            &[],
        )
        .await
        .unwrap();
    let r = otp_verify(gw.addr, "ed@example.com", &code, "login").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.error_code(), "invalid_code");
}

#[tokio::test]
async fn a_new_code_retires_the_old_one() {
    let sink = CodeSink::start().await;
    let db = TestDb::new().await;
    let gw = start(&db, &sink, &[]).await;
    user(&db, "flo@example.com", PASSWORD, &[]).await;
    let old = code_for(&gw, &sink, "flo@example.com", "login").await;
    let new = code_for(&gw, &sink, "flo@example.com", "login").await;
    if old != new {
        let r = otp_verify(gw.addr, "flo@example.com", &old, "login").await;
        assert_eq!(r.status, 401, "the older code was retired");
    }
    let live = number(&db, "SELECT count(*) FROM auth_codes WHERE used_at IS NULL").await;
    assert_eq!(live, 1, "one live code per email and purpose");
    let r = otp_verify(gw.addr, "flo@example.com", &new, "login").await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn the_failure_budget_survives_new_codes_and_holds_across_instances() {
    let sink = CodeSink::start().await;
    let db = TestDb::new().await;
    let budget = [("GATEWAY_CODES__FAILURE_BUDGET", "3")];
    let a = start(&db, &sink, &budget).await;
    let b = start(&db, &sink, &budget).await;
    user(&db, "gil@example.com", PASSWORD, &[]).await;
    let email = "gil@example.com";

    let first = code_for(&a, &sink, email, "login").await;
    for _ in 0..2 {
        assert_eq!(
            otp_verify(a.addr, email, &wrong(&first), "login")
                .await
                .status,
            401
        );
    }
    // A new code, through the other instance, does not reset the count.
    let second = code_for(&b, &sink, email, "login").await;
    assert_eq!(
        otp_verify(b.addr, email, &wrong(&second), "login")
            .await
            .status,
        401
    );
    let refused = otp_verify(a.addr, email, &second, "login").await;
    assert_eq!(
        refused.status, 429,
        "3 failures across two codes and two instances spend the budget: {}",
        refused.body
    );
    let wait = retry_after(&refused);
    assert!(
        (50..=60).contains(&wait),
        "the first delay is a minute: {wait}"
    );
    assert_eq!(
        otp_verify(b.addr, email, &second, "login").await.status,
        429
    );
    // Another purpose has its own budget.
    let verify = otp_verify(b.addr, email, "000000", "verify_email").await;
    assert_eq!(verify.status, 401);

    // Progressive delay: once the delay passed, one more try; a failure doubles it.
    age_failures(&db, "61 seconds").await;
    assert_eq!(
        otp_verify(b.addr, email, &wrong(&second), "login")
            .await
            .status,
        401
    );
    let refused = otp_verify(a.addr, email, &second, "login").await;
    assert_eq!(refused.status, 429);
    let wait = retry_after(&refused);
    assert!((110..=120).contains(&wait), "then two minutes: {wait}");
    age_failures(&db, "121 seconds").await;
    let ok = otp_verify(a.addr, email, &second, "login").await;
    assert_eq!(
        ok.status, 200,
        "the owner gets in once the delay passed: {}",
        ok.body
    );
    let left = number(
        &db,
        "SELECT count(*) FROM auth_failures WHERE purpose = 'login'",
    )
    .await;
    assert_eq!(left, 0, "a success clears the budget");
}

#[tokio::test]
async fn the_password_budget_is_kept_in_the_database_per_email() {
    let sink = CodeSink::start().await;
    let db = TestDb::new().await;
    let budget = [("GATEWAY_CODES__FAILURE_BUDGET", "3")];
    let a = start(&db, &sink, &budget).await;
    let b = start(&db, &sink, &budget).await;
    user(&db, "hal@example.com", PASSWORD, &[]).await;
    for (gw, email) in [(&a, "hal@example.com"), (&b, "nobody@example.com")] {
        for _ in 0..3 {
            assert_eq!(login(gw.addr, email, "wrong password").await.status, 401);
        }
    }
    let known = login(b.addr, "hal@example.com", PASSWORD).await;
    let unknown = login(a.addr, "nobody@example.com", PASSWORD).await;
    assert_eq!(known.status, 429, "{}", known.body);
    assert_eq!(unknown.status, 429, "unknown emails are budgeted alike");
    assert_eq!(known.body, unknown.body);
    age_failures(&db, "61 seconds").await;
    assert_eq!(login(b.addr, "hal@example.com", PASSWORD).await.status, 200);
}

#[tokio::test]
async fn a_magic_link_is_confirmed_by_post_once_and_a_get_changes_nothing() {
    let Some(sink) = SmtpSink::start().await else {
        return;
    };
    let db = TestDb::new().await;
    let up = crate::support::echo().await;
    let gw = {
        let mut builder = TestGateway::builder(&db)
            .route("/app", up, "required")
            .env("GATEWAY_MAIL__TRANSPORT", "smtp")
            .env("GATEWAY_MAIL__SMTP_URL", &sink.url());
        for (k, v) in ROOMY {
            builder = builder.env(k, v);
        }
        builder.start().await
    };
    let id = user(&db, "ida@example.com", PASSWORD, &[]).await;
    let r = post(
        gw.addr,
        "/auth/magic/request",
        json!({"email": "ida@example.com", "return_to": "/app/inbox?x=1"}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let link = link_in(&mail_for(&sink, "ida@example.com").await);
    let path = link
        .strip_prefix(PUBLIC_ORIGIN)
        .unwrap_or_else(|| panic!("the link uses server.public_url: {link}"));
    assert!(path.starts_with("/auth/magic/"), "{link}");

    for _ in 0..2 {
        let page = get(gw.addr, path)
            .header("accept", "text/html")
            .send()
            .await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.body.contains("method=\"post\""), "{}", page.body);
        assert!(page.header("set-cookie").is_none(), "a GET never signs in");
    }

    let cross = http::req("POST", gw.addr, path)
        .header("origin", "https://evil.example")
        .send()
        .await;
    assert_eq!(cross.status, 403, "login CSRF: {}", cross.body);

    let confirm = http::req("POST", gw.addr, path)
        .header("origin", PUBLIC_ORIGIN)
        .send()
        .await;
    assert_eq!(confirm.status, 303, "{}", confirm.body);
    assert_eq!(confirm.header("location"), Some("/app/inbox?x=1"));
    let cookie = session_cookie(&confirm);
    let app = get(gw.addr, "/app/inbox")
        .header("cookie", &cookie)
        .send()
        .await;
    assert_eq!(app.status, 200, "{}", app.body);
    assert_eq!(app.echoed("x-user-id").as_deref(), Some(id.as_str()));

    let again = http::req("POST", gw.addr, path)
        .header("origin", PUBLIC_ORIGIN)
        .send()
        .await;
    assert_eq!(again.status, 401, "a link works once");
    assert_eq!(again.error_code(), "invalid_code");
    assert!(again.header("set-cookie").is_none());
    let browser = http::req("POST", gw.addr, path)
        .header("origin", PUBLIC_ORIGIN)
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await;
    assert_eq!(browser.status, 401);
    assert!(
        browser
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/html")),
        "a browser gets a page back"
    );
}

#[tokio::test]
async fn a_magic_link_ignores_a_forged_host_and_keeps_return_to_on_site() {
    let Some(sink) = SmtpSink::start().await else {
        return;
    };
    let db = TestDb::new().await;
    let gw = start(&db, &sink, &[]).await;
    user(&db, "jo@example.com", PASSWORD, &[]).await;
    let body = json!({"email": "jo@example.com", "return_to": "//evil.example/x"}).to_string();
    let raw = format!(
        "POST /auth/magic/request HTTP/1.1\r\nHost: evil.example\r\nX-Forwarded-Host: evil.example\r\n\
         Forwarded: host=evil.example\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = http::raw(gw.addr, raw.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let link = link_in(&mail_for(&sink, "jo@example.com").await);
    assert!(
        link.starts_with(&format!("{PUBLIC_ORIGIN}/auth/magic/")),
        "links are built from server.public_url only: {link}"
    );
    assert!(!link.contains("evil"), "{link}");
    let path = &link[PUBLIC_ORIGIN.len()..];
    let confirm = http::req("POST", gw.addr, path)
        .header("origin", PUBLIC_ORIGIN)
        .send()
        .await;
    assert_eq!(confirm.status, 303);
    assert_eq!(
        confirm.header("location"),
        Some("/"),
        "an off-site return_to falls back to /"
    );
}

#[tokio::test]
async fn a_password_reset_revokes_every_session_and_the_old_password() {
    let sink = CodeSink::start().await;
    let db = TestDb::new().await;
    let gw = start(&db, &sink, &[]).await;
    user(&db, "kai@example.com", PASSWORD, &[]).await;
    let t1 = token_of(gw.addr, "kai@example.com", PASSWORD).await;
    let t2 = token_of(gw.addr, "kai@example.com", PASSWORD).await;

    let code = code_for(&gw, &sink, "kai@example.com", "password_reset").await;
    let weak = post(
        gw.addr,
        "/auth/password/reset",
        json!({"email": "kai@example.com", "code": code, "new_password": "password1"}),
    )
    .await;
    assert_eq!(weak.status, 422, "{}", weak.body);
    assert_eq!(weak.error_code(), "invalid_input");

    let reset = post(
        gw.addr,
        "/auth/password/reset",
        json!({"email": "kai@example.com", "code": code, "new_password": STRONG}),
    )
    .await;
    assert_eq!(
        reset.status, 200,
        "a weak choice does not burn the code: {}",
        reset.body
    );
    assert_eq!(reset.json()["revoked_sessions"], 2);
    assert_eq!(whoami(gw.addr, &t1).await, 401, "old sessions end");
    assert_eq!(whoami(gw.addr, &t2).await, 401);
    assert_eq!(
        login(gw.addr, "kai@example.com", PASSWORD).await.status,
        401,
        "the old password is gone"
    );
    assert_eq!(login(gw.addr, "kai@example.com", STRONG).await.status, 200);

    let replay = post(
        gw.addr,
        "/auth/password/reset",
        json!({"email": "kai@example.com", "code": code, "new_password": STRONGER}),
    )
    .await;
    assert_eq!(replay.status, 401, "a reset code works once");
    assert_eq!(login(gw.addr, "kai@example.com", STRONG).await.status, 200);
}

#[tokio::test]
async fn a_password_change_revokes_the_other_sessions_but_keeps_this_one() {
    let sink = CodeSink::start().await;
    let db = TestDb::new().await;
    let gw = start(&db, &sink, &[]).await;
    user(&db, "lu@example.com", PASSWORD, &[]).await;
    let mine = token_of(gw.addr, "lu@example.com", PASSWORD).await;
    let other = token_of(gw.addr, "lu@example.com", PASSWORD).await;
    let change = |current: &'static str, new: &'static str| {
        post_json(
            gw.addr,
            "/auth/password/change",
            &json!({"current_password": current, "new_password": new}),
        )
        .bearer(&mine)
    };
    let anonymous = post(
        gw.addr,
        "/auth/password/change",
        json!({"current_password": PASSWORD, "new_password": STRONG}),
    )
    .await;
    assert_eq!(anonymous.status, 401);
    let wrong = change("not my password", STRONG).send().await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.error_code(), "invalid_credentials");
    let weak = change(PASSWORD, "qwertyuiop").send().await;
    assert_eq!(weak.status, 422, "{}", weak.body);
    assert_eq!(
        whoami(gw.addr, &other).await,
        200,
        "refusals change nothing"
    );

    let ok = change(PASSWORD, STRONG).send().await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json()["revoked_sessions"], 1);
    assert_eq!(whoami(gw.addr, &mine).await, 200, "this session stays");
    assert_eq!(whoami(gw.addr, &other).await, 401, "the others end");
    assert_eq!(login(gw.addr, "lu@example.com", PASSWORD).await.status, 401);
    assert_eq!(login(gw.addr, "lu@example.com", STRONG).await.status, 200);
}

#[tokio::test]
async fn sessions_are_listed_and_revoked_by_their_owner_only() {
    let sink = CodeSink::start().await;
    let db = TestDb::new().await;
    let gw = start(&db, &sink, &[]).await;
    user(&db, "mo@example.com", PASSWORD, &[]).await;
    user(&db, "ned@example.com", PASSWORD, &[]).await;
    let laptop = post(
        gw.addr,
        "/auth/login",
        json!({"email": "mo@example.com", "password": PASSWORD, "device_label": "laptop"}),
    )
    .await
    .json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let phone = token_of(gw.addr, "mo@example.com", PASSWORD).await;
    let neds = token_of(gw.addr, "ned@example.com", PASSWORD).await;

    let list = get(gw.addr, "/auth/sessions").bearer(&laptop).send().await;
    assert_eq!(list.status, 200, "{}", list.body);
    let sessions = list.json()["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    let current: Vec<&Value> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["device_label"], "laptop");
    for s in &sessions {
        for field in [
            "id",
            "ip_address",
            "created_at",
            "last_seen_at",
            "device_label",
        ] {
            assert!(s.get(field).is_some(), "{field} missing in {s}");
        }
        assert_eq!(s["ip_address"], "127.0.0.1");
    }
    let phone_id = sessions.iter().find(|s| s["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let neds_id = get(gw.addr, "/auth/sessions")
        .bearer(&neds)
        .send()
        .await
        .json()["sessions"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let theirs = http::req("DELETE", gw.addr, &format!("/auth/sessions/{neds_id}"))
        .bearer(&laptop)
        .send()
        .await;
    assert_eq!(theirs.status, 404, "another user's session is not found");
    assert_eq!(whoami(gw.addr, &neds).await, 200);
    let junk = http::req("DELETE", gw.addr, "/auth/sessions/not-a-uuid")
        .bearer(&laptop)
        .send()
        .await;
    assert_eq!(junk.status, 404);

    let one = http::req("DELETE", gw.addr, &format!("/auth/sessions/{phone_id}"))
        .bearer(&laptop)
        .send()
        .await;
    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(whoami(gw.addr, &phone).await, 401);
    assert_eq!(whoami(gw.addr, &laptop).await, 200);
    let twice = http::req("DELETE", gw.addr, &format!("/auth/sessions/{phone_id}"))
        .bearer(&laptop)
        .send()
        .await;
    assert_eq!(twice.status, 404);

    let tablet = token_of(gw.addr, "mo@example.com", PASSWORD).await;
    let others = http::req("POST", gw.addr, "/auth/sessions/revoke-others")
        .bearer(&laptop)
        .send()
        .await;
    assert_eq!(others.status, 200, "{}", others.body);
    assert_eq!(others.json()["revoked_sessions"], 1);
    assert_eq!(whoami(gw.addr, &tablet).await, 401);
    assert_eq!(whoami(gw.addr, &laptop).await, 200);
    assert_eq!(
        whoami(gw.addr, &neds).await,
        200,
        "other users are untouched"
    );
    assert_eq!(
        get(gw.addr, "/auth/sessions").send().await.status,
        401,
        "the list needs a session"
    );
}

#[tokio::test]
async fn cookie_authenticated_cross_origin_changes_are_refused() {
    let sink = CodeSink::start().await;
    let db = TestDb::new().await;
    let gw = start(&db, &sink, &[]).await;
    user(&db, "ola@example.com", PASSWORD, &[]).await;
    let token = token_of(gw.addr, "ola@example.com", PASSWORD).await;
    let other = token_of(gw.addr, "ola@example.com", PASSWORD).await;
    let other_id = get(gw.addr, "/auth/session")
        .bearer(&other)
        .send()
        .await
        .json()["session"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let cookie = format!("{COOKIE}={token}");
    let change = json!({"current_password": PASSWORD, "new_password": STRONG}).to_string();
    let attempts = [
        ("POST", "/auth/logout".to_string(), String::new()),
        ("POST", "/auth/password/change".to_string(), change.clone()),
        (
            "POST",
            "/auth/sessions/revoke-others".to_string(),
            String::new(),
        ),
        (
            "DELETE",
            format!("/auth/sessions/{other_id}"),
            String::new(),
        ),
    ];
    for (method, target, body) in &attempts {
        for origin in [Some("https://evil.example"), Some("null"), None] {
            let mut r = http::req(method, gw.addr, target)
                .header("cookie", &cookie)
                .header("content-type", "application/json")
                .body(body.clone());
            if let Some(o) = origin {
                r = r.header("origin", o);
            }
            let resp = r.send().await;
            assert_eq!(
                resp.status, 403,
                "{method} {target} from {origin:?}: {}",
                resp.body
            );
            assert_eq!(resp.error_code(), "cross_origin");
        }
    }
    assert_eq!(whoami(gw.addr, &token).await, 200, "nothing happened");
    assert_eq!(whoami(gw.addr, &other).await, 200);
    assert_eq!(
        login(gw.addr, "ola@example.com", PASSWORD).await.status,
        200
    );

    // The same with the matching Origin, and with a Bearer token and no Origin, goes through.
    let same = http::req("POST", gw.addr, "/auth/sessions/revoke-others")
        .header("cookie", &cookie)
        .header("origin", PUBLIC_ORIGIN)
        .send()
        .await;
    assert_eq!(same.status, 200, "{}", same.body);
    let bearer = http::req("POST", gw.addr, "/auth/password/change")
        .bearer(&token)
        .header("content-type", "application/json")
        .body(change)
        .send()
        .await;
    assert_eq!(bearer.status, 200, "{}", bearer.body);
}

#[tokio::test]
async fn weak_passwords_are_refused_at_register_reset_and_change() {
    let Some(sink) = SmtpSink::start().await else {
        return;
    };
    let db = TestDb::new().await;
    let gw = start(&db, &sink, &[]).await;
    for weak in ["password123", "qwerty123", "pat@example.com1", "short"] {
        let r = post(
            gw.addr,
            "/auth/register",
            json!({"email": "pat@example.com", "password": weak}),
        )
        .await;
        assert_eq!(r.status, 422, "{weak}: {}", r.body);
        assert_eq!(r.error_code(), "invalid_input");
    }
    assert!(
        sink.next_message(QUIET).await.is_none(),
        "nothing is created or mailed for a refused registration"
    );
    user(&db, "quin@example.com", PASSWORD, &[]).await;
    let code = code_for(&gw, &sink, "quin@example.com", "password_reset").await;
    let reset = post(
        gw.addr,
        "/auth/password/reset",
        json!({"email": "quin@example.com", "code": code, "new_password": "letmein1"}),
    )
    .await;
    assert_eq!(reset.status, 422);
    let token = token_of(gw.addr, "quin@example.com", PASSWORD).await;
    let change = post_json(
        gw.addr,
        "/auth/password/change",
        &json!({"current_password": PASSWORD, "new_password": "quin1234"}),
    )
    .bearer(&token)
    .send()
    .await;
    assert_eq!(change.status, 422, "{}", change.body);
}

#[tokio::test]
async fn registration_reads_the_same_for_taken_addresses_and_verification_works() {
    let Some(sink) = SmtpSink::start().await else {
        return;
    };
    let db = TestDb::new().await;
    let gw = start(&db, &sink, &[]).await;
    user(&db, "rae@example.com", PASSWORD, &[]).await;
    let fresh = post(
        gw.addr,
        "/auth/register",
        json!({"email": "Sam@Example.com", "password": STRONG}),
    )
    .await;
    let taken = post(
        gw.addr,
        "/auth/register",
        json!({"email": "rae@example.com", "password": STRONG}),
    )
    .await;
    assert_eq!(fresh.status, 202, "{}", fresh.body);
    assert_eq!((taken.status, &taken.body), (fresh.status, &fresh.body));

    let mut mails = [
        sink.next_message(WAIT).await.expect("a mail"),
        sink.next_message(WAIT).await.expect("another mail"),
    ];
    mails.sort_by(|a, b| a.to.cmp(&b.to));
    assert_eq!(mails[0].to, "rae@example.com");
    assert!(
        mails[0]
            .text
            .contains(&format!("{PUBLIC_ORIGIN}/auth/login")),
        "the owner is told instead: {}",
        mails[0].text
    );
    assert!(
        login(gw.addr, "rae@example.com", PASSWORD).await.status == 200,
        "the existing account is untouched"
    );
    assert_eq!(mails[1].to, "sam@example.com");
    let code = code_in(&mails[1]);
    let verified = |email: &'static str| {
        let db = &db;
        async move {
            db.client()
                .await
                .query_one(
                    "SELECT email_verified FROM users WHERE email = $1",
                    &[&email],
                )
                .await
                .unwrap()
                .get::<_, bool>(0)
        }
    };
    assert!(!verified("sam@example.com").await, "registered unverified");
    let r = otp_verify(gw.addr, "sam@example.com", &code, "verify_email").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["email_verified"], true);
    assert!(
        r.header("set-cookie").is_none(),
        "verification is not a login"
    );
    assert!(verified("sam@example.com").await);
    assert_eq!(login(gw.addr, "sam@example.com", STRONG).await.status, 200);

    // A verified address gets no more verification codes.
    assert_eq!(
        otp_request(gw.addr, "sam@example.com", "verify_email")
            .await
            .status,
        202
    );
    assert!(sink.next_message(QUIET).await.is_none());
}

/// Status and body for a known and an unknown email, which must be identical.
async fn same_answer(what: &str, known: Resp, unknown: Resp) {
    assert_eq!(
        (known.status, &known.body, known.header("content-type")),
        (
            unknown.status,
            &unknown.body,
            unknown.header("content-type")
        ),
        "{what}: a known and an unknown email must read the same"
    );
}

#[tokio::test]
async fn known_and_unknown_emails_get_the_same_status_and_body() {
    let sink = CodeSink::start().await;
    let db = TestDb::new().await;
    let gw = start(&db, &sink, &[]).await;
    user(&db, "tim@example.com", PASSWORD, &[]).await;
    let (known, unknown) = ("tim@example.com", "nobody@example.com");
    for purpose in ["login", "verify_email", "password_reset"] {
        same_answer(
            &format!("otp request {purpose}"),
            otp_request(gw.addr, known, purpose).await,
            otp_request(gw.addr, unknown, purpose).await,
        )
        .await;
        same_answer(
            &format!("otp verify {purpose}"),
            otp_verify(gw.addr, known, "123456", purpose).await,
            otp_verify(gw.addr, unknown, "123456", purpose).await,
        )
        .await;
    }
    same_answer(
        "magic request",
        post(gw.addr, "/auth/magic/request", json!({"email": known})).await,
        post(gw.addr, "/auth/magic/request", json!({"email": unknown})).await,
    )
    .await;
    same_answer(
        "login",
        login(gw.addr, known, "wrong password").await,
        login(gw.addr, unknown, "wrong password").await,
    )
    .await;
    same_answer(
        "register",
        post(
            gw.addr,
            "/auth/register",
            json!({"email": known, "password": STRONG}),
        )
        .await,
        post(
            gw.addr,
            "/auth/register",
            json!({"email": unknown, "password": STRONG}),
        )
        .await,
    )
    .await;
    same_answer(
        "password reset",
        post(
            gw.addr,
            "/auth/password/reset",
            json!({"email": known, "code": "123456", "new_password": STRONG}),
        )
        .await,
        post(
            gw.addr,
            "/auth/password/reset",
            json!({"email": "nobody2@example.com", "code": "123456", "new_password": STRONG}),
        )
        .await,
    )
    .await;
}

/// Two-sided critical value of the rank test: p < 0.001.
const Z_CRITICAL: f64 = 3.29;
/// The smallest shift the timing test reports: below it, a difference is scheduler noise on
/// two busy cores, not a bcrypt, a query or a mail that one side skips.
const SHIFT_FLOOR_MS: f64 = 2.0;
/// bcrypt cost of the login timing test: a skipped hash costs about 20 ms, well above the
/// floor. The other flows run at the tests' cost of 4, so that bcrypt's own jitter does not
/// hide a skipped query or commit.
const TIMING_COST: u32 = 8;

/// The Mann-Whitney U statistic of `a` against `b` as a z score (normal approximation, ties
/// ranked by their average): positive when `a` tends to take longer.
fn mann_whitney_z(a: &[Duration], b: &[Duration]) -> f64 {
    let mut all: Vec<(Duration, bool)> = a
        .iter()
        .map(|d| (*d, true))
        .chain(b.iter().map(|d| (*d, false)))
        .collect();
    all.sort();
    let mut rank_sum_a = 0.0;
    let mut i = 0;
    while i < all.len() {
        let tied = all[i..].iter().take_while(|(d, _)| *d == all[i].0).count();
        let rank = (2 * i + tied + 1) as f64 / 2.0;
        rank_sum_a += rank * all[i..i + tied].iter().filter(|(_, in_a)| *in_a).count() as f64;
        i += tied;
    }
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let u = rank_sum_a - n1 * (n1 + 1.0) / 2.0;
    (u - n1 * n2 / 2.0) / (n1 * n2 * (n1 + n2 + 1.0) / 12.0).sqrt()
}

/// The Hodges-Lehmann estimate of how much longer `a` takes than `b`, in milliseconds: the
/// median of every pairwise difference.
fn shift_ms(a: &[Duration], b: &[Duration]) -> f64 {
    let mut diffs: Vec<f64> = a
        .iter()
        .flat_map(|x| b.iter().map(move |y| x.as_secs_f64() - y.as_secs_f64()))
        .collect();
    diffs.sort_by(f64::total_cmp);
    diffs[diffs.len() / 2] * 1000.0
}

/// Whether the rank test and the floor, together, tell the two samples apart.
fn distinguishable(a: &[Duration], b: &[Duration]) -> bool {
    mann_whitney_z(a, b).abs() > Z_CRITICAL && shift_ms(a, b).abs() > SHIFT_FLOOR_MS
}

/// Times `rounds` interleaved pairs of requests, one for a known and one for an unknown
/// email, alternating which goes first so drift and background work hit both alike, and
/// asserts that the two samples cannot be told apart.
async fn assert_same_time<F, Fut>(what: &str, rounds: usize, mut send: F)
where
    F: FnMut(bool, usize) -> Fut,
    Fut: std::future::Future<Output = Resp>,
{
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        for is_known in [i % 2 == 0, i % 2 == 1] {
            let started = Instant::now();
            let resp = send(is_known, i).await;
            let took = started.elapsed();
            assert!(resp.status < 500, "{what}: {}", resp.body);
            if is_known {
                known.push(took);
            } else {
                unknown.push(took);
            }
        }
    }
    let (z, shift) = (mann_whitney_z(&known, &unknown), shift_ms(&known, &unknown));
    known.sort();
    unknown.sort();
    let (mk, mu) = (known[rounds / 2], unknown[rounds / 2]);
    eprintln!(
        "{what}: median known {mk:?}, unknown {mu:?}; shift {shift:+.2} ms, z {z:+.2} ({rounds} pairs)"
    );
    assert!(
        !distinguishable(&known, &unknown),
        "{what}: known and unknown emails take different times: shift {shift:+.2} ms \
         (floor {SHIFT_FLOOR_MS} ms), z {z:+.2} (critical {Z_CRITICAL})"
    );
}

/// The detector itself: a shift above the floor is found in samples as noisy as the real
/// ones, equal distributions are not, and a tiny shift stays under the floor.
#[test]
fn the_timing_test_detects_a_shift_and_ignores_noise() {
    // Deterministic uniform jitter of up to 8 ms (xorshift), a different stream per seed.
    let noisy = |base_ms: f64, seed: u64| -> Vec<Duration> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..40)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let jitter = (x % 8000) as f64 / 1000.0;
                Duration::from_secs_f64((base_ms + jitter) / 1000.0)
            })
            .collect()
    };
    for seed in 1..=50 {
        let base = noisy(20.0, seed);
        let other = seed + 1000;
        assert!(
            distinguishable(&noisy(40.0, other), &base),
            "a skipped bcrypt"
        );
        assert!(mann_whitney_z(&noisy(40.0, other), &base) > Z_CRITICAL);
        assert!(
            distinguishable(&base, &noisy(25.0, other)),
            "5 ms the other way"
        );
        assert!(
            !distinguishable(&noisy(20.0, other), &base),
            "same distribution"
        );
        assert!(
            !distinguishable(&noisy(20.5, other), &base),
            "0.5 ms is under the floor"
        );
    }
}

#[tokio::test]
async fn known_and_unknown_emails_take_the_same_time() {
    let Some(sink) = SmtpSink::start().await else {
        return;
    };
    let db = TestDb::new().await;
    let budget = ("GATEWAY_CODES__FAILURE_BUDGET", "10000");
    let cost = TIMING_COST.to_string();
    let slow = start(&db, &sink, &[budget, ("GATEWAY_AUTH__BCRYPT_COST", &cost)]).await;
    let fast = start(&db, &sink, &[budget]).await;
    // The known user's hash has the gateway's cost, as after its first login.
    let hash = gateway::password::Hasher::new(TIMING_COST, 1, 4)
        .hash(PASSWORD)
        .await
        .unwrap();
    gateway::users::create(
        db.pool(),
        &gateway::users::NewUser {
            email: "uma@example.com",
            email_verified: true,
            password_hash: Some(&hash),
            roles: &[],
        },
    )
    .await
    .unwrap();
    let addr = fast.addr;
    // Same length, so nothing that reads the address takes longer for one of them.
    let email = |known: bool| {
        if known {
            "uma@example.com"
        } else {
            "zed@example.com"
        }
    };
    // Warm up: connections, prepared statements, the dummy hash, zxcvbn's dictionaries.
    for known in [true, false] {
        login(slow.addr, email(known), "wrong password").await;
        otp_request(addr, email(known), "login").await;
        post(addr, "/auth/magic/request", json!({"email": email(known)})).await;
        post(
            addr,
            "/auth/register",
            json!({"email": format!("w{known:5}@example.com"), "password": STRONG}),
        )
        .await;
    }

    assert_same_time("login", 60, |known, _| {
        login(slow.addr, email(known), "wrong password")
    })
    .await;
    assert_same_time("otp/request", 100, |known, _| {
        otp_request(addr, email(known), "login")
    })
    .await;
    assert_same_time("magic/request", 100, |known, _| {
        post(addr, "/auth/magic/request", json!({"email": email(known)}))
    })
    .await;
    // Last: its background bcrypt runs on after the answers and would add noise to the others.
    assert_same_time("register", 200, |known, i| {
        // A new address each time for the unknown side, of the same length.
        let address = if known {
            email(true).to_string()
        } else {
            format!("n{i:03}@example.co")
        };
        post(
            addr,
            "/auth/register",
            json!({"email": address, "password": STRONG}),
        )
    })
    .await;
}

/// 429 with a sane `Retry-After` and the JSON error.
fn assert_limited(what: &str, resp: &Resp) {
    assert_eq!(resp.status, 429, "{what}: {}", resp.body);
    assert_eq!(resp.error_code(), "rate_limited", "{what}");
    let wait = retry_after(resp);
    assert!((1..=60).contains(&wait), "{what}: Retry-After {wait}");
}

#[tokio::test]
async fn every_limited_endpoint_answers_429_per_ip() {
    let sink = CodeSink::start().await;
    let db = TestDb::new().await;
    let gw = start(
        &db,
        &sink,
        &[
            ("GATEWAY_RATE_LIMITS__LOGIN_PER_IP", "2/1m"),
            ("GATEWAY_RATE_LIMITS__OTP_REQUEST_PER_IP", "2/1m"),
            ("GATEWAY_RATE_LIMITS__OTP_VERIFY_PER_IP", "2/1m"),
            ("GATEWAY_RATE_LIMITS__REGISTER_PER_IP", "2/1m"),
            ("GATEWAY_RATE_LIMITS__MAGIC_REQUEST_PER_IP", "2/1m"),
        ],
    )
    .await;
    let addr = gw.addr;
    let email = |i: usize| format!("visitor{i}@example.com");
    type Call = Box<dyn Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = Resp>>>>;
    let endpoints: Vec<(&str, Call)> = vec![
        (
            "login",
            Box::new(move |e| Box::pin(async move { login(addr, &e, "wrong password").await })),
        ),
        (
            "otp request",
            Box::new(move |e| Box::pin(async move { otp_request(addr, &e, "login").await })),
        ),
        (
            "otp verify",
            Box::new(move |e| {
                Box::pin(async move { otp_verify(addr, &e, "123456", "login").await })
            }),
        ),
        (
            "register",
            Box::new(move |e| {
                Box::pin(async move {
                    post(
                        addr,
                        "/auth/register",
                        json!({"email": e, "password": STRONG}),
                    )
                    .await
                })
            }),
        ),
        (
            "magic request",
            Box::new(move |e| {
                Box::pin(
                    async move { post(addr, "/auth/magic/request", json!({"email": e})).await },
                )
            }),
        ),
    ];
    for (what, call) in &endpoints {
        for i in 0..2 {
            let r = call(email(i)).await;
            assert_ne!(r.status, 429, "{what}: request {i} is within the limit");
        }
        assert_limited(what, &call(email(9)).await);
    }
}

#[tokio::test]
async fn the_per_email_limit_treats_unknown_emails_alike() {
    let sink = CodeSink::start().await;
    let db = TestDb::new().await;
    let gw = start(
        &db,
        &sink,
        &[
            ("GATEWAY_RATE_LIMITS__LOGIN_PER_EMAIL", "2/1m"),
            ("GATEWAY_RATE_LIMITS__OTP_REQUEST_PER_EMAIL", "2/1m"),
            ("GATEWAY_RATE_LIMITS__OTP_VERIFY_PER_EMAIL", "2/1m"),
            ("GATEWAY_RATE_LIMITS__MAGIC_REQUEST_PER_EMAIL", "2/1m"),
            ("GATEWAY_RATE_LIMITS__REGISTER_PER_EMAIL", "2/1m"),
        ],
    )
    .await;
    user(&db, "val@example.com", PASSWORD, &[]).await;
    let addr = gw.addr;
    for email in ["val@example.com", "nobody@example.com"] {
        let mut answers = Vec::new();
        for _ in 0..3 {
            answers.push((
                login(addr, email, "wrong password").await,
                otp_request(addr, email, "login").await,
                otp_verify(addr, email, "123456", "login").await,
                post(addr, "/auth/magic/request", json!({"email": email})).await,
                post(
                    addr,
                    "/auth/register",
                    json!({"email": email, "password": STRONG}),
                )
                .await,
            ));
        }
        let (login3, otp3, verify3, magic3, register3) = &answers[2];
        for (what, r) in [
            ("login", login3),
            ("otp request", otp3),
            ("otp verify", verify3),
            ("magic request", magic3),
            ("register", register3),
        ] {
            assert_limited(&format!("{what} for {email}"), r);
        }
        for (a, b) in answers[..2].iter().map(|a| (&a.0, &a.1)) {
            assert_ne!(a.status, 429, "{email}");
            assert_ne!(b.status, 429, "{email}");
        }
    }
    // Another address is not limited by them.
    assert_eq!(
        otp_request(addr, "wyn@example.com", "login").await.status,
        202
    );
    // Spelling variants share the key.
    let r = otp_request(addr, " VAL@Example.com ", "login").await;
    assert_limited("otp request, another spelling", &r);
}

#[tokio::test]
async fn cli_set_password_revokes_every_session() {
    let db = TestDb::new().await;
    let gw = TestGateway::builder(&db).start().await;
    user(&db, "xan@example.com", PASSWORD, &[]).await;
    let token = gw.login("xan@example.com", PASSWORD).await;
    let out = cli(
        &db,
        &["user", "set-password", "--email", "xan@example.com"],
        Some(format!("{STRONG}\n").as_bytes()),
    )
    .await;
    out.expect_code(0).expect_output("revoked 1 session(s)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while whoami(gw.addr, &token).await != 401 {
        assert!(
            Instant::now() < deadline,
            "the revoked session still works after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        login(gw.addr, "xan@example.com", PASSWORD).await.status,
        401
    );
    assert_eq!(login(gw.addr, "xan@example.com", STRONG).await.status, 200);
}

/// The identity behind a token, as `/auth/session` shows it: the user id, or the status.
async fn owner_of(addr: SocketAddr, token: &str) -> Result<String, u16> {
    let r = get(addr, "/auth/session").bearer(token).send().await;
    match r.status {
        200 => Ok(r.json()["user"]["id"]
            .as_str()
            .expect("user id")
            .to_string()),
        status => Err(status),
    }
}

#[tokio::test]
async fn a_well_formed_token_the_server_never_issued_is_refused_and_never_stored() {
    let db = TestDb::new().await;
    let up = crate::support::echo().await;
    let gw = TestGateway::builder(&db)
        .route("/", up, "required")
        .route("/opt", up, "optional")
        .start()
        .await;
    // Tagged under the gateway's key (as if the key had leaked), and tagged under another.
    let tagged = crate::support::token_keys().issue();
    let other_key = gateway::sessions::TokenKeys::new(&[9u8; 32], &[]).issue();
    for forged in [tagged, other_key] {
        for _ in 0..3 {
            for (what, r) in [
                ("bearer", get(gw.addr, "/x").bearer(&forged)),
                (
                    "cookie",
                    get(gw.addr, "/x").header("cookie", &format!("{COOKIE}={forged}")),
                ),
            ] {
                assert_eq!(r.send().await.status, 401, "{what}");
            }
            assert_eq!(owner_of(gw.addr, &forged).await, Err(401));
            let anonymous = get(gw.addr, "/opt").bearer(&forged).send().await;
            assert_eq!(anonymous.status, 200);
            assert_eq!(anonymous.echoed("x-user-id"), None);
        }
    }
    let rows = number(&db, "SELECT count(*) FROM sessions").await;
    assert_eq!(rows, 0, "a presented token never creates a session");
}

#[tokio::test]
async fn every_login_issues_a_new_token_and_a_planted_one_stays_what_it_was() {
    let Some(sink) = SmtpSink::start().await else {
        return;
    };
    let db = TestDb::new().await;
    let gw = start(&db, &sink, &[]).await;
    let victim = user(&db, "vic@example.com", PASSWORD, &[]).await;
    let attacker = user(&db, "mal@example.com", PASSWORD, &[]).await;
    let email = "vic@example.com";
    // What an attacker can plant in the victim's browser: a token of their own making (tagged
    // under the gateway's key, the strongest case), and a real session of their own account.
    let forged = crate::support::token_keys().issue();
    let own = token_of(gw.addr, "mal@example.com", PASSWORD).await;
    let mut issued = vec![own.clone()];
    for planted in [&forged, &own] {
        let cookie = format!("{COOKIE}={planted}");
        let with_planted = |r: http::Req| {
            r.header("cookie", &cookie)
                .header("origin", PUBLIC_ORIGIN)
                .send()
        };
        let password = with_planted(post_json(
            gw.addr,
            "/auth/login",
            &json!({"email": email, "password": PASSWORD}),
        ))
        .await;
        let form = with_planted(
            http::req("POST", gw.addr, "/auth/login")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("email={email}&password=correct+horse+battery")),
        )
        .await;
        let code = code_for(&gw, &sink, email, "login").await;
        let by_code = with_planted(post_json(
            gw.addr,
            "/auth/otp/verify",
            &json!({"email": email, "code": code, "purpose": "login"}),
        ))
        .await;
        let r = post(gw.addr, "/auth/magic/request", json!({"email": email})).await;
        assert_eq!(r.status, 202);
        let link = link_in(&mail_for(&sink, email).await);
        let by_link = with_planted(http::req("POST", gw.addr, &link[PUBLIC_ORIGIN.len()..])).await;
        for (how, resp) in [
            ("password", &password),
            ("form", &form),
            ("code", &by_code),
            ("magic link", &by_link),
        ] {
            assert!(
                matches!(resp.status, 200 | 303),
                "{how} login: {} {}",
                resp.status,
                resp.body
            );
            let token = session_cookie(resp)
                .strip_prefix(&format!("{COOKIE}="))
                .expect("the session cookie")
                .to_string();
            assert_ne!(&token, planted, "{how} login kept the planted token");
            assert!(!issued.contains(&token), "{how} login reused a token");
            assert_eq!(owner_of(gw.addr, &token).await, Ok(victim.clone()), "{how}");
            issued.push(token);
        }
        // The planted token is what it was before: nothing, or the attacker's own session,
        // never the victim's.
        let expected = if planted == &forged {
            Err(401)
        } else {
            Ok(attacker.clone())
        };
        assert_eq!(owner_of(gw.addr, planted).await, expected);
    }
    assert_eq!(issued.len(), 1 + 2 * 4);
}

#[tokio::test]
async fn no_mail_is_built_from_a_forged_host_even_through_a_trusted_proxy() {
    let Some(sink) = SmtpSink::start().await else {
        return;
    };
    let db = TestDb::new().await;
    // The peer is trusted, so its X-Forwarded-Host would count for the upstream's headers.
    let gw = start(
        &db,
        &sink,
        &[("GATEWAY_SERVER__TRUSTED_PROXIES", "127.0.0.1")],
    )
    .await;
    user(&db, "kim@example.com", PASSWORD, &[]).await;
    let email = "kim@example.com";
    let forged = |target: &str, body: Value| {
        let body = body.to_string();
        format!(
            "POST {target} HTTP/1.1\r\nHost: evil.example\r\nX-Forwarded-Host: evil.example\r\n\
             X-Forwarded-Proto: http\r\nForwarded: host=evil.example;proto=http\r\n\
             X-Original-URL: https://evil.example/\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let mut links = 0;
    for (target, body) in [
        (
            "/auth/otp/request",
            json!({"email": email, "purpose": "password_reset"}),
        ),
        (
            "/auth/otp/request",
            json!({"email": email, "purpose": "login"}),
        ),
        (
            "/auth/magic/request",
            json!({"email": email, "return_to": "/app"}),
        ),
        (
            "/auth/register",
            json!({"email": email, "password": STRONG}),
        ),
    ] {
        let answer = http::raw(gw.addr, forged(target, body).as_bytes(), WAIT).await;
        assert!(answer.starts_with("HTTP/1.1 202"), "{target}: {answer}");
        let mail = mail_for(&sink, email).await;
        for part in [&mail.text, &mail.html] {
            assert!(!part.contains("evil"), "{target}: {part}");
            for url in part
                .split(|c: char| c.is_whitespace() || c == '"')
                .filter(|w| w.starts_with("http://") || w.starts_with("https://"))
            {
                assert!(
                    url.starts_with(&format!("{PUBLIC_ORIGIN}/")),
                    "{target}: a link not built from server.public_url: {url}"
                );
                links += 1;
            }
        }
    }
    assert!(
        links >= 4,
        "the magic link and the account notice, in text and HTML: {links}"
    );
}

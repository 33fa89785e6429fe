//! The login pages in a real browser: headless Chromium, through chromedriver, signs in by
//! password, by emailed code (received by a real SMTP server) and by magic link (mailed from
//! the sign-in page's form or the API), signs up and confirms the address with the mailed code
//! (read by the in-process SMTP sink), resets a password, and lands on the proxied `return_to`
//! page, whose body is the echo upstream's view of the request, `x-user-id` included; after
//! signing out, the back button shows no private page. Then the same pages and form posts
//! without a browser, as a hostile client sends them: open redirects, cross-origin posts,
//! enumeration.
//!
//! The gateway listens on a port picked before it starts so that `server.public_url` is
//! exactly the origin the browser sends in `Origin` (the form posts' CSRF check). Plain HTTP on
//! 127.0.0.1 means the cookie cannot carry the `__Host-` prefix (it needs `Secure`, which the
//! gateway sets only for an https public URL; Chromium then drops the cookie), so these
//! gateways name it `gw_session`. Screenshots land in `target/browser/`.
//! Skipped (SKIPPED printed) only when Chromium or aiosmtpd is missing and `CI` is not set.

use std::time::Duration;

use fantoccini::{Client, Locator};

use crate::support::http;
use crate::support::smtp::{CodeSink, SmtpSink, free_port};
use crate::support::webdriver::{
    Browser, PAGE_TIMEOUT, body_text, click, fill, screenshot, wait_for_path,
};
use crate::support::{PUBLIC_ORIGIN, TestDb, TestGateway, echo, user};

const PASSWORD: &str = "correct horse battery";
const PROTECTED: &str = "/app/page?x=1";
const LOGIN_FOR_PROTECTED: &str = "/auth/login?return_to=%2Fapp%2Fpage%3Fx%3D1";

/// A gateway on `http://127.0.0.1:PORT` (its public URL too) with `/` required, in front of
/// the echo upstream; `env` adds settings.
async fn gateway_for_browser(db: &TestDb, env: &[(&str, &str)]) -> (TestGateway, String) {
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let mut builder = TestGateway::builder(db)
        .route("/", echo().await, "required")
        .env("GATEWAY_SERVER__LISTEN", &format!("127.0.0.1:{port}"))
        .env("GATEWAY_SERVER__PUBLIC_URL", &origin)
        .env("GATEWAY_SESSIONS__COOKIE_NAME", "gw_session");
    for (k, v) in env {
        builder = builder.env(k, v);
    }
    (builder.start().await, origin)
}

/// [`gateway_for_browser`] mailing through the SMTP server at `smtp_url`; `env` adds settings.
async fn mailing_gateway_for_browser(
    db: &TestDb,
    smtp_url: &str,
    env: &[(&str, &str)],
) -> (TestGateway, String) {
    let mut all = vec![
        ("GATEWAY_MAIL__TRANSPORT", "smtp"),
        ("GATEWAY_MAIL__SMTP_URL", smtp_url),
    ];
    all.extend_from_slice(env);
    gateway_for_browser(db, &all).await
}

/// The magic link to `origin` in a mail's text.
fn magic_link_in(text: &str, origin: &str) -> String {
    let prefix = format!("{origin}/auth/magic/");
    let start = text
        .find(&prefix)
        .unwrap_or_else(|| panic!("no link to {prefix} in {text}"));
    text[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '>' && *c != '"')
        .collect()
}

/// A six-digit code that is not `code`.
fn wrong_code(code: &str) -> &'static str {
    if code == "000000" { "111111" } else { "000000" }
}

/// The JSON the echo upstream answered, as the browser shows it.
async fn echoed(client: &Client) -> serde_json::Value {
    let text = match client.find(Locator::Css("pre")).await {
        Ok(pre) => pre.text().await.expect("pre text"),
        Err(_) => body_text(client).await,
    };
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not the echo JSON ({e}): {text}"))
}

/// Waits until the page shows `needle` somewhere in its text.
async fn wait_for_text(client: &Client, needle: &str) -> String {
    let deadline = std::time::Instant::now() + PAGE_TIMEOUT;
    loop {
        let text = body_text(client).await;
        if text.contains(needle) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the page never showed {needle:?}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Opens the protected page without a session: the gateway sends the browser to sign in.
async fn open_protected_page(client: &Client, origin: &str) {
    client
        .goto(&format!("{origin}{PROTECTED}"))
        .await
        .expect("open");
    wait_for_path(client, LOGIN_FOR_PROTECTED).await;
}

/// Lands on the protected page with the identity the echo upstream saw.
async fn assert_on_protected_page_as(client: &Client, user_id: &str) {
    wait_for_path(client, PROTECTED).await;
    let echo = echoed(client).await;
    assert_eq!(echo["path"], "/app/page", "{echo}");
    assert_eq!(echo["headers"]["x-user-id"], user_id, "{echo}");
    assert!(
        echo["headers"]
            .get("cookie")
            .is_none_or(|c| !c.as_str().unwrap_or_default().contains("gw_session")),
        "the session cookie must not reach the upstream: {echo}"
    );
}

#[tokio::test]
async fn password_login_in_a_browser_lands_on_return_to() {
    let Some(browser) = Browser::launch("password_login_in_a_browser").await else {
        return;
    };
    let db = TestDb::new().await;
    let id = user(&db, "alice@example.com", PASSWORD, &[]).await;
    let (_gw, origin) = gateway_for_browser(&db, &[]).await;
    let client = browser.client.clone();
    browser
        .run(async move {
            open_protected_page(&client, &origin).await;
            let shot = screenshot(&client, "login").await;
            eprintln!("screenshot: {}", shot.display());

            fill(&client, "#email", "alice@example.com").await;
            fill(&client, "#password", "wrong password!").await;
            click(&client, "#password-login button").await;
            wait_for_text(&client, "Email or password is incorrect.").await;
            screenshot(&client, "login-error").await;
            let kept = client
                .find(Locator::Css("#password-login input[name=return_to]"))
                .await
                .expect("return_to field")
                .prop("value")
                .await
                .expect("value");
            assert_eq!(
                kept.as_deref(),
                Some(PROTECTED),
                "return_to survives a failed login"
            );

            fill(&client, "#password", PASSWORD).await;
            click(&client, "#password-login button").await;
            assert_on_protected_page_as(&client, &id).await;

            client.goto(&format!("{origin}/auth/")).await.expect("open");
            wait_for_text(&client, "Signed in as alice@example.com").await;
            click(&client, "#logout button").await;
            wait_for_path(&client, "/auth/login?notice=signed_out").await;
            wait_for_text(&client, "You are signed out.").await;
            open_protected_page(&client, &origin).await;
        })
        .await;
}

/// The first run of exactly six digits in `text`.
fn six_digits(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    (0..bytes.len().saturating_sub(5)).find_map(|i| {
        let run = bytes.get(i..i + 6)?;
        let before = i.checked_sub(1).map(|j| bytes[j]);
        let after = bytes.get(i + 6).copied();
        (run.iter().all(u8::is_ascii_digit)
            && !before.is_some_and(|b| b.is_ascii_digit())
            && !after.is_some_and(|b| b.is_ascii_digit()))
        .then(|| &text[i..i + 6])
    })
}

#[tokio::test]
async fn code_login_in_a_browser_lands_on_return_to() {
    let sink = CodeSink::start().await;
    let Some(browser) = Browser::launch("code_login_in_a_browser").await else {
        return;
    };
    let db = TestDb::new().await;
    let id = user(&db, "bob@example.com", PASSWORD, &[]).await;
    let (_gw, origin) = mailing_gateway_for_browser(&db, &sink.url(), &[]).await;
    let client = browser.client.clone();
    browser
        .run(async move {
            open_protected_page(&client, &origin).await;
            fill(&client, "#code-email", "bob@example.com").await;
            click(&client, "#send-code").await;
            wait_for_path(
                &client,
                "/auth/otp?email=bob%40example.com&return_to=%2Fapp%2Fpage%3Fx%3D1",
            )
            .await;
            wait_for_text(&client, "we sent it a 6-digit code").await;
            screenshot(&client, "otp").await;

            let code = sink
                .code_for("bob@example.com", Duration::from_secs(30))
                .await
                .expect("the code by mail");

            fill(&client, "#code", wrong_code(&code)).await;
            click(&client, "#code-verify button").await;
            wait_for_text(&client, "The code is wrong or has expired.").await;
            fill(&client, "#code", &code).await;
            click(&client, "#code-verify button").await;
            assert_on_protected_page_as(&client, &id).await;
        })
        .await;
}

#[tokio::test]
async fn password_reset_in_a_browser_then_sign_in_with_the_new_password() {
    let sink = CodeSink::start().await;
    let Some(browser) = Browser::launch("password_reset_in_a_browser").await else {
        return;
    };
    let db = TestDb::new().await;
    let id = user(&db, "carol@example.com", PASSWORD, &[]).await;
    let (_gw, origin) = mailing_gateway_for_browser(&db, &sink.url(), &[]).await;
    let client = browser.client.clone();
    browser
        .run(async move {
            client
                .goto(&format!("{origin}/auth/login"))
                .await
                .expect("open");
            click(&client, "a[href='/auth/reset']").await;
            wait_for_path(&client, "/auth/reset").await;
            fill(&client, "#email", "carol@example.com").await;
            click(&client, "#reset-request button").await;
            wait_for_path(&client, "/auth/reset/confirm?email=carol%40example.com").await;
            screenshot(&client, "reset").await;

            let code = sink
                .code_for("carol@example.com", Duration::from_secs(30))
                .await
                .expect("the reset code by mail");
            let new_password = "a brand new passphrase, 42 times";
            fill(&client, "#code", &code).await;
            fill(&client, "#new_password", new_password).await;
            click(&client, "#reset-confirm button").await;
            wait_for_path(&client, "/auth/login?notice=password_reset").await;
            wait_for_text(&client, "Your password was changed").await;

            fill(&client, "#email", "carol@example.com").await;
            fill(&client, "#password", new_password).await;
            click(&client, "#password-login button").await;
            wait_for_path(&client, "/").await;
            let echo = echoed(&client).await;
            assert_eq!(echo["headers"]["x-user-id"], id.as_str(), "{echo}");
        })
        .await;
}

#[tokio::test]
async fn magic_link_in_a_browser_confirms_then_lands_on_return_to() {
    let Some(sink) = SmtpSink::start().await else {
        return;
    };
    let Some(browser) = Browser::launch("magic_link_in_a_browser").await else {
        return;
    };
    let db = TestDb::new().await;
    let id = user(&db, "ivy@example.com", PASSWORD, &[]).await;
    let (gw, origin) = mailing_gateway_for_browser(&db, &sink.url(), &[]).await;
    let asked = http::post_json(
        gw.addr,
        "/auth/magic/request",
        &serde_json::json!({"email": "ivy@example.com", "return_to": PROTECTED}),
    )
    .send()
    .await;
    assert_eq!(asked.status, 202, "{}", asked.body);
    let mail = sink
        .next_message(Duration::from_secs(30))
        .await
        .expect("the magic link by mail");
    let link = magic_link_in(&mail.text, &origin);
    let client = browser.client.clone();
    browser
        .run(async move {
            client.goto(&link).await.expect("open the link");
            wait_for_text(&client, "Continue to sign in").await;
            screenshot(&client, "magic").await;
            click(&client, "#magic-confirm button").await;
            assert_on_protected_page_as(&client, &id).await;

            client.goto(&link).await.expect("open the link again");
            click(&client, "#magic-confirm button").await;
            let page =
                wait_for_text(&client, "This sign-in link has expired or was already used").await;
            assert!(
                !page.contains("code is wrong"),
                "a link is not a code: {page}"
            );
        })
        .await;
}

/// Sign-up as a person does it: "Create an account" on the sign-in page that a protected page
/// sent them to, the verification page, the code from the mail (read by the in-process SMTP
/// sink), a wrong code first, then signed in on the page they first asked for.
#[tokio::test]
async fn sign_up_in_a_browser_confirms_the_code_then_lands_on_return_to() {
    let Some(browser) = Browser::launch("sign_up_in_a_browser").await else {
        return;
    };
    let sink = CodeSink::start().await;
    let db = TestDb::new().await;
    let (_gw, origin) = mailing_gateway_for_browser(
        &db,
        &sink.url(),
        &[
            ("GATEWAY_BRANDING__NAME", "Acme Cloud"),
            ("GATEWAY_BRANDING__ACCENT_COLOR", "#0b6e4f"),
        ],
    )
    .await;
    let client = browser.client.clone();
    let pool = db.pool().clone();
    browser
        .run(async move {
            open_protected_page(&client, &origin).await;
            click(&client, "#create-account").await;
            wait_for_path(&client, "/auth/register?return_to=%2Fapp%2Fpage%3Fx%3D1").await;
            assert_eq!(
                client.title().await.expect("title"),
                "Create an account · Acme Cloud"
            );
            wait_for_text(&client, "Acme Cloud").await;
            screenshot(&client, "register").await;
            fill(&client, "#email", "Newbie@Example.com").await;
            fill(&client, "#password", "a brand new passphrase, 42 times").await;
            click(&client, "#register button").await;
            wait_for_path(
                &client,
                "/auth/register/confirm?email=newbie%40example.com&return_to=%2Fapp%2Fpage%3Fx%3D1",
            )
            .await;
            wait_for_text(&client, "We sent a 6-digit code to newbie@example.com").await;
            screenshot(&client, "verify-email").await;

            let code = sink
                .code_for("newbie@example.com", Duration::from_secs(30))
                .await
                .expect("the verification code by mail");
            let user = gateway::users::find_by_email(&pool, "newbie@example.com")
                .await
                .expect("query")
                .expect("the account exists");
            assert!(!user.email_verified);

            fill(&client, "#code", wrong_code(&code)).await;
            click(&client, "#verify-email button").await;
            wait_for_text(&client, "The code is wrong or has expired.").await;
            client
                .find(Locator::Css("#verify-email"))
                .await
                .expect("still the verification page after a wrong code");
            fill(&client, "#code", &code).await;
            click(&client, "#verify-email button").await;
            assert_on_protected_page_as(&client, &user.id).await;
            let user = gateway::users::find_by_email(&pool, "newbie@example.com")
                .await
                .expect("query")
                .expect("the account");
            assert!(user.email_verified, "the code verified the address");
        })
        .await;
}

/// The sign-in page's "Email me a link": the "check your email" page, then the mailed link
/// signs in on the page first asked for; used again, it says *link*.
#[tokio::test]
async fn magic_link_request_form_in_a_browser_mails_a_link_that_signs_in() {
    let Some(sink) = SmtpSink::start().await else {
        return;
    };
    let Some(browser) = Browser::launch("magic_link_request_form_in_a_browser").await else {
        return;
    };
    let db = TestDb::new().await;
    let id = user(&db, "jo@example.com", PASSWORD, &[]).await;
    let (_gw, origin) = mailing_gateway_for_browser(&db, &sink.url(), &[]).await;
    let client = browser.client.clone();
    browser
        .run(async move {
            open_protected_page(&client, &origin).await;
            fill(&client, "#code-email", "jo@example.com").await;
            click(&client, "#send-link").await;
            wait_for_path(
                &client,
                "/auth/magic?email=jo%40example.com&return_to=%2Fapp%2Fpage%3Fx%3D1",
            )
            .await;
            wait_for_text(&client, "we sent it a sign-in link").await;
            screenshot(&client, "magic-sent").await;

            let mail = sink
                .next_message(Duration::from_secs(30))
                .await
                .expect("the magic link by mail");
            let link = magic_link_in(&mail.text, &origin);
            client.goto(&link).await.expect("open the link");
            click(&client, "#magic-confirm button").await;
            assert_on_protected_page_as(&client, &id).await;

            client.goto(&link).await.expect("open the link again");
            click(&client, "#magic-confirm button").await;
            wait_for_text(&client, "This sign-in link has expired or was already used").await;
        })
        .await;
}

/// After signing out, the back button shows neither the gateway's "signed in as" page nor the
/// proxied page: the gateway's pages are `no-store` and the sign-out answer clears the cache.
#[tokio::test]
async fn after_sign_out_the_back_button_shows_no_private_page() {
    let Some(browser) = Browser::launch("after_sign_out_the_back_button").await else {
        return;
    };
    let db = TestDb::new().await;
    let id = user(&db, "kim@example.com", PASSWORD, &[]).await;
    let (_gw, origin) = gateway_for_browser(&db, &[]).await;
    let client = browser.client.clone();
    browser
        .run(async move {
            open_protected_page(&client, &origin).await;
            fill(&client, "#email", "kim@example.com").await;
            fill(&client, "#password", PASSWORD).await;
            click(&client, "#password-login button").await;
            assert_on_protected_page_as(&client, &id).await;
            client.goto(&format!("{origin}/auth/")).await.expect("open");
            wait_for_text(&client, "Signed in as kim@example.com").await;
            click(&client, "#logout button").await;
            wait_for_path(&client, "/auth/login?notice=signed_out").await;

            client.back().await.expect("back");
            wait_for_path(&client, "/auth/login?return_to=%2Fauth%2F").await;
            let page = body_text(&client).await;
            assert!(!page.contains("kim@example.com"), "{page}");
            client.back().await.expect("back again");
            wait_for_path(&client, LOGIN_FOR_PROTECTED).await;
            let page = body_text(&client).await;
            assert!(!page.contains(&id), "the proxied page came back: {page}");
        })
        .await;
}

#[test]
fn finds_the_code_in_mail_text() {
    assert_eq!(six_digits("Your code: 123456."), Some("123456"));
    assert_eq!(six_digits("1234567 and 654321"), Some("654321"));
    assert_eq!(six_digits("12345"), None);
}

// ---------------------------------------------------------------------------------------------
// The same pages and form posts without a browser: what a hostile client can send.

fn form(pairs: &[(&str, &str)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    ser.finish()
}

fn post_form(addr: std::net::SocketAddr, target: &str, origin: &str, body: String) -> http::Req {
    http::req("POST", addr, target)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", origin)
        .body(body)
}

/// The `name=value` of the session cookie a response sets.
fn set_cookie(resp: &http::Resp) -> String {
    let value = resp.header("set-cookie").expect("set-cookie");
    value.split(';').next().expect("name=value").to_string()
}

#[tokio::test]
async fn pages_carry_the_security_headers_and_no_script() {
    let db = TestDb::new().await;
    let gw = TestGateway::builder(&db).start().await;
    for target in [
        "/auth/login?return_to=%2Fapp",
        "/auth/otp?email=a%40example.com&return_to=%2Fapp",
        "/auth/reset",
        "/auth/reset/confirm?email=a%40example.com",
        "/auth/logout",
        "/auth/register?return_to=%2Fapp",
        "/auth/register/confirm?email=a%40example.com&return_to=%2Fapp",
        "/auth/magic?email=a%40example.com&return_to=%2Fapp",
    ] {
        let resp = http::get(gw.addr, target).send().await;
        assert_eq!(resp.status, 200, "{target}: {}", resp.body);
        assert_eq!(
            resp.header("content-security-policy"),
            Some(gateway::pages::CONTENT_SECURITY_POLICY),
            "{target}"
        );
        assert_eq!(resp.header("x-frame-options"), Some("DENY"), "{target}");
        assert_eq!(resp.header("cache-control"), Some("no-store"), "{target}");
        assert!(resp.header("referrer-policy").is_some(), "{target}");
        assert_eq!(
            resp.header("content-type"),
            Some("text/html; charset=utf-8"),
            "{target}"
        );
        assert!(
            !resp.body.to_ascii_lowercase().contains("<script"),
            "{target}"
        );
    }
    let unauthenticated = http::get(gw.addr, "/auth/").send().await;
    assert_eq!(unauthenticated.status, 303);
    assert_eq!(
        unauthenticated.header("location"),
        Some("/auth/login?return_to=%2Fauth%2F")
    );
}

#[tokio::test]
async fn login_page_neutralizes_hostile_input() {
    let db = TestDb::new().await;
    let gw = TestGateway::builder(&db).start().await;
    for return_to in [
        "%2F%2Fevil.example",
        "https%3A%2F%2Fevil.example",
        "%2F%5Cevil.example",
        "%2F%252f%252fevil.example",
        "javascript%3Aalert(1)",
    ] {
        let resp = http::get(gw.addr, &format!("/auth/login?return_to={return_to}"))
            .send()
            .await;
        assert!(!resp.body.contains("evil.example"), "{return_to}");
        assert!(!resp.body.contains("javascript:"), "{return_to}");
        assert_eq!(
            resp.body.matches("name=\"return_to\" value=\"/\"").count(),
            2
        );
    }
    let resp = http::get(
        gw.addr,
        "/auth/otp?email=%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E&return_to=%2F",
    )
    .send()
    .await;
    assert!(!resp.body.contains("<script>"), "{}", resp.body);
    assert!(resp.body.contains("&quot;&gt;&lt;script&gt;"));
    let resp = http::get(gw.addr, "/auth/login?notice=%3Cb%3Eowned%3C%2Fb%3E")
        .send()
        .await;
    assert!(
        !resp.body.contains("owned"),
        "a link cannot put words on the page"
    );
}

#[tokio::test]
async fn form_login_redirects_only_to_same_origin_paths() {
    let db = TestDb::new().await;
    let id = user(&db, "dave@example.com", PASSWORD, &[]).await;
    let gw = TestGateway::builder(&db)
        .route("/", echo().await, "required")
        .env("GATEWAY_RATE_LIMITS__LOGIN_PER_EMAIL", "100/1m")
        .start()
        .await;
    for (return_to, expected) in [
        ("/app/page?x=1", "/app/page?x=1"),
        ("//evil.example", "/"),
        ("///evil.example", "/"),
        ("/\\evil.example", "/"),
        ("/%2f%2fevil.example", "/"),
        ("/%5cevil.example", "/"),
        ("https://evil.example/", "/"),
        ("javascript:alert(1)", "/"),
        ("/\r\nset-cookie: x=1", "/"),
        ("", "/"),
        // Dot segments: a browser resolves /.//evil.example to //evil.example.
        ("/.//evil.example", "/"),
        ("/%2e//evil.example", "/"),
        ("/a/../..//evil.example", "/"),
        ("/a/./b", "/"),
        // Normalized once, as the proxy would.
        ("/a//%62?x=1", "/a/b?x=1"),
    ] {
        let body = form(&[
            ("email", "dave@example.com"),
            ("password", PASSWORD),
            ("return_to", return_to),
        ]);
        let resp = post_form(gw.addr, "/auth/login", PUBLIC_ORIGIN, body)
            .send()
            .await;
        assert_eq!(resp.status, 303, "{return_to:?}: {}", resp.body);
        assert_eq!(resp.header("location"), Some(expected), "{return_to:?}");
        let cookie = resp.header("set-cookie").expect("cookie");
        assert!(cookie.starts_with("__Host-gw_session=gw_"), "{cookie}");
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("Secure"),
            "{cookie}"
        );
    }

    let body = form(&[("email", "dave@example.com"), ("password", PASSWORD)]);
    let resp = post_form(gw.addr, "/auth/login", PUBLIC_ORIGIN, body)
        .send()
        .await;
    let page = http::get(gw.addr, "/app/page")
        .header("cookie", &set_cookie(&resp))
        .send()
        .await;
    assert_eq!(page.echoed("x-user-id").as_deref(), Some(id.as_str()));
}

#[tokio::test]
async fn form_posts_need_a_matching_origin() {
    let db = TestDb::new().await;
    user(&db, "erin@example.com", PASSWORD, &[]).await;
    let gw = TestGateway::builder(&db).start().await;
    let login = || form(&[("email", "erin@example.com"), ("password", PASSWORD)]);
    for origin in [
        "https://evil.example",
        "null",
        "http://gw.test",
        "https://gw.test.evil.example",
    ] {
        let resp = post_form(gw.addr, "/auth/login", origin, login())
            .send()
            .await;
        assert_eq!(resp.status, 403, "{origin}: {}", resp.body);
        assert!(resp.header("set-cookie").is_none(), "{origin}");
        assert!(
            resp.body.contains("Cross-site request refused"),
            "{origin}: {}",
            resp.body
        );
    }
    for (target, body) in [
        (
            "/auth/otp/request",
            form(&[("email", "erin@example.com"), ("purpose", "login")]),
        ),
        (
            "/auth/otp/verify",
            form(&[
                ("email", "erin@example.com"),
                ("code", "123456"),
                ("purpose", "login"),
            ]),
        ),
        (
            "/auth/password/reset",
            form(&[
                ("email", "erin@example.com"),
                ("code", "123456"),
                ("new_password", "x"),
            ]),
        ),
    ] {
        let resp = post_form(gw.addr, target, "https://evil.example", body)
            .send()
            .await;
        assert_eq!(resp.status, 403, "{target}: {}", resp.body);
    }
    let resp = post_form(gw.addr, "/auth/login", PUBLIC_ORIGIN, login())
        .send()
        .await;
    assert_eq!(resp.status, 303, "{}", resp.body);
}

#[tokio::test]
async fn form_login_failures_look_the_same_for_unknown_emails() {
    let db = TestDb::new().await;
    user(&db, "frank@example.com", PASSWORD, &[]).await;
    let gw = TestGateway::builder(&db).start().await;
    let attempt = |email: &'static str| {
        let body = form(&[
            ("email", email),
            ("password", "not the password"),
            ("return_to", "/x"),
        ]);
        post_form(gw.addr, "/auth/login", PUBLIC_ORIGIN, body).send()
    };
    let known = attempt("frank@example.com").await;
    let unknown = attempt("nobody@example.com").await;
    assert_eq!(known.status, 401);
    assert_eq!(unknown.status, 401);
    assert!(known.body.contains("Email or password is incorrect."));
    assert_eq!(
        known.body.replace("frank@example.com", "EMAIL"),
        unknown.body.replace("nobody@example.com", "EMAIL"),
        "the page must not tell a known email from an unknown one"
    );
    assert!(known.body.contains("name=\"return_to\" value=\"/x\""));
}

#[tokio::test]
async fn code_request_form_answers_the_same_for_unknown_emails() {
    let db = TestDb::new().await;
    user(&db, "gina@example.com", PASSWORD, &[]).await;
    let gw = TestGateway::builder(&db).start().await;
    let request = |email: &'static str, purpose: &'static str| {
        let body = form(&[
            ("email", email),
            ("purpose", purpose),
            ("return_to", "/app?x=1"),
        ]);
        post_form(gw.addr, "/auth/otp/request", PUBLIC_ORIGIN, body).send()
    };
    for (email, encoded) in [
        ("gina@example.com", "gina%40example.com"),
        ("nobody@example.com", "nobody%40example.com"),
    ] {
        let resp = request(email, "login").await;
        assert_eq!(resp.status, 303, "{email}: {}", resp.body);
        assert_eq!(
            resp.header("location").map(str::to_string),
            Some(format!(
                "/auth/otp?email={encoded}&return_to=%2Fapp%3Fx%3D1"
            ))
        );
        let resp = request(email, "password_reset").await;
        assert_eq!(resp.status, 303, "{email}: {}", resp.body);
        assert_eq!(
            resp.header("location").map(str::to_string),
            Some(format!("/auth/reset/confirm?email={encoded}"))
        );
    }
    for (email, encoded) in [
        ("gina@example.com", "gina%40example.com"),
        ("nobody@example.com", "nobody%40example.com"),
    ] {
        let resp = request(email, "verify_email").await;
        assert_eq!(resp.status, 303, "{email}: {}", resp.body);
        assert_eq!(
            resp.header("location").map(str::to_string),
            Some(format!(
                "/auth/register/confirm?email={encoded}&return_to=%2Fapp%3Fx%3D1"
            ))
        );
    }
    let resp = request("gina@example.com", "nonsense").await;
    assert_eq!(resp.status, 400, "{}", resp.body);
    let malformed = request("not an email", "login").await;
    assert_eq!(malformed.status, 400);
    assert!(
        malformed.body.contains("role=\"alert\""),
        "{}",
        malformed.body
    );
}

#[tokio::test]
async fn logout_form_revokes_and_returns_to_the_sign_in_page() {
    let db = TestDb::new().await;
    user(&db, "hank@example.com", PASSWORD, &[]).await;
    let gw = TestGateway::builder(&db)
        .route("/", echo().await, "required")
        .start()
        .await;
    let body = form(&[("email", "hank@example.com"), ("password", PASSWORD)]);
    let login = post_form(gw.addr, "/auth/login", PUBLIC_ORIGIN, body)
        .send()
        .await;
    let cookie = set_cookie(&login);
    let page = http::get(gw.addr, "/auth/")
        .header("cookie", &cookie)
        .send()
        .await;
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains("Signed in as <strong>hank@example.com</strong>")
    );

    let cross = post_form(
        gw.addr,
        "/auth/logout",
        "https://evil.example",
        String::new(),
    )
    .header("cookie", &cookie)
    .send()
    .await;
    assert_eq!(
        cross.status, 403,
        "a cross-site page cannot sign the user out"
    );

    let out = post_form(gw.addr, "/auth/logout", PUBLIC_ORIGIN, String::new())
        .header("cookie", &cookie)
        .send()
        .await;
    assert_eq!(out.status, 303);
    assert_eq!(
        out.header("location"),
        Some("/auth/login?notice=signed_out")
    );
    assert!(
        out.header("set-cookie")
            .is_some_and(|c| c.contains("Max-Age=0"))
    );
    let after = http::get(gw.addr, "/app")
        .header("cookie", &cookie)
        .header("accept", "application/json")
        .send()
        .await;
    assert_eq!(after.status, 401, "the session is revoked");
}

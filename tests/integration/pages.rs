//! The browser side over plain HTTP (issue 10, items 15 to 18): the sign-up and magic-link
//! forms and the verification page, answering alike for taken and free addresses; branding
//! on every page, in the CSP and in the mails; messages that say how long to wait and what
//! failed; a login redirect with nothing JSON in it; and a sign-out that makes the browser
//! forget (`Clear-Site-Data`), with the gateway's authenticated pages never stored.
//! Mails are read by the in-process SMTP sink when only the code matters ([`CodeSink`]), by
//! aiosmtpd ([`SmtpSink`]) when headers or links do.

use std::net::SocketAddr;
use std::time::Duration;

use gateway::error::wait_text;
use serde_json::json;

use crate::support::http::{self, Resp, get, post_json};
use crate::support::smtp::{CodeSink, SmtpSink};
use crate::support::{PUBLIC_ORIGIN, TestDb, TestGateway, echo, user};

const PASSWORD: &str = "correct horse battery";
const STRONG: &str = "tangerine kettle orbit 93";
const WAIT: Duration = Duration::from_secs(10);
/// How long to wait before concluding that no code is coming.
const QUIET: Duration = Duration::from_millis(1500);
const CLEAR_SITE_DATA: &str = "\"cache\", \"cookies\"";

fn form(pairs: &[(&str, &str)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    ser.finish()
}

async fn post_form(addr: SocketAddr, target: &str, pairs: &[(&str, &str)]) -> Resp {
    http::req("POST", addr, target)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", PUBLIC_ORIGIN)
        .body(form(pairs))
        .send()
        .await
}

/// The `name=value` of the cookie a response sets.
fn cookie_of(resp: &Resp) -> String {
    let value = resp.header("set-cookie").expect("set-cookie");
    value.split(';').next().expect("name=value").to_string()
}

/// Status, location, content type and body of an answer, with `email` written as EMAIL (and
/// percent-encoded in a URL).
fn shape(resp: &Resp, email: &str) -> (u16, String, Option<String>, String) {
    let encoded = email.replace('@', "%40");
    let neutral = |s: &str| s.replace(&encoded, "EMAIL").replace(email, "EMAIL");
    (
        resp.status,
        neutral(resp.header("location").unwrap_or_default()),
        resp.header("content-type").map(str::to_string),
        neutral(&resp.body),
    )
}

#[tokio::test]
async fn the_sign_up_form_reads_the_same_for_taken_addresses_and_its_code_signs_in() {
    let sink = CodeSink::start().await;
    let db = TestDb::new().await;
    let gw = TestGateway::builder(&db)
        .route("/", echo().await, "required")
        .env("GATEWAY_MAIL__TRANSPORT", "smtp")
        .env("GATEWAY_MAIL__SMTP_URL", &sink.url())
        .start()
        .await;
    user(&db, "rae@example.com", PASSWORD, &[]).await;
    let register = async |email: &str, password: &str| {
        post_form(
            gw.addr,
            "/auth/register",
            &[
                ("email", email),
                ("password", password),
                ("return_to", "/app?x=1"),
            ],
        )
        .await
    };
    let taken = register("rae@example.com", STRONG).await;
    let fresh = register("sam@example.com", STRONG).await;
    assert_eq!(fresh.status, 303, "{}", fresh.body);
    assert_eq!(
        fresh.header("location"),
        Some("/auth/register/confirm?email=sam%40example.com&return_to=%2Fapp%3Fx%3D1")
    );
    assert_eq!(
        shape(&taken, "rae@example.com"),
        shape(&fresh, "sam@example.com"),
        "a taken address must read like a free one"
    );
    assert!(taken.header("set-cookie").is_none() && fresh.header("set-cookie").is_none());
    let taken_page = get(gw.addr, taken.header("location").unwrap()).send().await;
    let fresh_page = get(gw.addr, fresh.header("location").unwrap()).send().await;
    assert_eq!(fresh_page.status, 200);
    assert_eq!(
        shape(&taken_page, "rae@example.com"),
        shape(&fresh_page, "sam@example.com")
    );

    let weak = register("tom@example.com", "password").await;
    assert_eq!(weak.status, 422, "{}", weak.body);
    assert!(weak.body.contains("role=\"alert\""), "{}", weak.body);
    assert!(weak.body.contains("action=\"/auth/register\""));
    assert!(weak.body.contains("value=\"tom@example.com\""), "kept");
    assert!(weak.body.contains("name=\"return_to\" value=\"/app?x=1\""));
    let malformed = register("not an address", STRONG).await;
    assert_eq!(malformed.status, 400, "{}", malformed.body);

    let code = sink
        .code_for("sam@example.com", WAIT)
        .await
        .expect("a verification code for the new account");
    assert!(
        sink.code_for("rae@example.com", QUIET).await.is_none(),
        "the owner of a taken address gets a notice, never a code"
    );
    let verify = async |code: &str| {
        post_form(
            gw.addr,
            "/auth/otp/verify",
            &[
                ("email", "sam@example.com"),
                ("code", code),
                ("purpose", "verify_email"),
                ("return_to", "/app?x=1"),
            ],
        )
        .await
    };
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let refused = verify(wrong).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(refused.body.contains("The code is wrong or has expired."));
    assert!(
        refused.body.contains("id=\"verify-email\""),
        "the verification page again, not the sign-in code page: {}",
        refused.body
    );
    let signed_in = verify(&code).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    assert_eq!(signed_in.header("location"), Some("/app?x=1"));
    let page = get(gw.addr, "/app?x=1")
        .header("cookie", &cookie_of(&signed_in))
        .send()
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let sam = gateway::users::find_by_email(db.pool(), "sam@example.com")
        .await
        .unwrap()
        .expect("sam's account");
    assert_eq!(page.echoed("x-user-id"), Some(sam.id));
    assert!(sam.email_verified);
}

#[tokio::test]
async fn the_magic_link_form_answers_the_same_for_unknown_emails() {
    let db = TestDb::new().await;
    user(&db, "ann@example.com", PASSWORD, &[]).await;
    let gw = TestGateway::builder(&db).start().await;
    let request = async |email: &str| {
        post_form(
            gw.addr,
            "/auth/magic/request",
            &[
                ("email", email),
                ("purpose", "login"),
                ("return_to", "/app?x=1"),
            ],
        )
        .await
    };
    let known = request("ann@example.com").await;
    let unknown = request("bea@example.com").await;
    assert_eq!(known.status, 303, "{}", known.body);
    assert_eq!(
        known.header("location"),
        Some("/auth/magic?email=ann%40example.com&return_to=%2Fapp%3Fx%3D1")
    );
    assert_eq!(
        shape(&known, "ann@example.com"),
        shape(&unknown, "bea@example.com")
    );
    let known_page = get(gw.addr, known.header("location").unwrap()).send().await;
    let unknown_page = get(gw.addr, unknown.header("location").unwrap())
        .send()
        .await;
    assert!(known_page.body.contains("we sent it a sign-in link"));
    assert_eq!(
        shape(&known_page, "ann@example.com"),
        shape(&unknown_page, "bea@example.com")
    );

    let malformed = request("not an address").await;
    assert_eq!(malformed.status, 400);
    assert!(malformed.body.contains("role=\"alert\""));
    let cross = http::req("POST", gw.addr, "/auth/magic/request")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", "https://evil.example")
        .body(form(&[("email", "ann@example.com")]))
        .send()
        .await;
    assert_eq!(cross.status, 403, "{}", cross.body);
}

/// The branding of `[branding]`: on every page (escaped), in the CSP (the logo and nothing
/// more), in the subjects and the sender's display name of the mails, and in the
/// verification mail's link to its page, built from `server.public_url` even when the request
/// names another host.
#[tokio::test]
async fn branding_is_on_every_page_in_the_csp_and_in_the_mails() {
    let Some(sink) = SmtpSink::start().await else {
        return;
    };
    let db = TestDb::new().await;
    user(&db, "cy@example.com", PASSWORD, &[]).await;
    let gw = TestGateway::builder(&db)
        .env("GATEWAY_MAIL__TRANSPORT", "smtp")
        .env("GATEWAY_MAIL__SMTP_URL", &sink.url())
        .env("GATEWAY_BRANDING__NAME", "Acmé <Cloud>, Inc.")
        .env(
            "GATEWAY_BRANDING__LOGO_URL",
            "https://cdn.example.com/brand/logo.svg?v=2",
        )
        .env("GATEWAY_BRANDING__ACCENT_COLOR", "#0B6E4F")
        .start()
        .await;
    let csp = "default-src 'none'; img-src https://cdn.example.com/brand/logo.svg; \
               style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";
    assert_eq!(
        csp.replace("img-src https://cdn.example.com/brand/logo.svg; ", ""),
        gateway::pages::CONTENT_SECURITY_POLICY,
        "nothing but img-src is added"
    );
    for target in [
        "/auth/login",
        "/auth/register",
        "/auth/register/confirm?email=a%40example.com",
        "/auth/otp?email=a%40example.com",
        "/auth/magic?email=a%40example.com",
        "/auth/magic/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "/auth/reset",
        "/auth/reset/confirm?email=a%40example.com",
        "/auth/logout",
    ] {
        let page = get(gw.addr, target).send().await;
        assert_eq!(page.status, 200, "{target}: {}", page.body);
        assert_eq!(
            page.header("content-security-policy"),
            Some(csp),
            "{target}"
        );
        assert!(
            page.body.contains(
                "<header class=\"brand\"><img src=\"https://cdn.example.com/brand/logo.svg?v=2\" \
                 alt=\"Acmé &lt;Cloud&gt;, Inc.\"></header>"
            ),
            "{target}: {}",
            page.body
        );
        assert!(
            page.body.contains(" · Acmé &lt;Cloud&gt;, Inc.</title>"),
            "{target}"
        );
        assert!(page.body.contains("--accent:#0b6e4f;"), "{target}");
        assert!(!page.body.contains("<Cloud>"), "{target}: unescaped");
    }
    let token = gw.login("cy@example.com", PASSWORD).await;
    let signed_in = get(gw.addr, "/auth/").bearer(&token).send().await;
    assert!(signed_in.body.contains("alt=\"Acmé &lt;Cloud&gt;, Inc.\""));
    assert_eq!(signed_in.header("content-security-policy"), Some(csp));
    let json = get(gw.addr, "/auth/session").bearer(&token).send().await;
    assert!(
        json.header("content-security-policy").is_none(),
        "JSON answers are not pages"
    );

    let asked = post_json(
        gw.addr,
        "/auth/otp/request",
        &json!({"email": "cy@example.com", "purpose": "login"}),
    )
    .send()
    .await;
    assert_eq!(asked.status, 202, "{}", asked.body);
    let mail = sink.next_message(WAIT).await.expect("the code mail");
    assert_eq!(mail.subject, "Your sign-in code for Acmé <Cloud>, Inc.");
    assert_eq!(
        mail.from, "\"Acmé <Cloud>, Inc.\" <no-reply@example.com>",
        "the display name is the product's, the address mail.from's"
    );
    assert!(
        mail.html.contains(">Acmé &lt;Cloud&gt;, Inc.</p>"),
        "{}",
        mail.html
    );

    // A registration through a forged Host: the verification mail points at its page, on
    // server.public_url.
    let body = form(&[("email", "dee@example.com"), ("password", STRONG)]);
    let forged = format!(
        "POST /auth/register HTTP/1.1\r\nHost: evil.example\r\nOrigin: {PUBLIC_ORIGIN}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = http::raw(gw.addr, forged.as_bytes(), WAIT).await;
    assert!(answer.starts_with("HTTP/1.1 303"), "{answer}");
    let mail = sink
        .next_message(WAIT)
        .await
        .expect("the verification mail");
    assert_eq!(
        mail.subject,
        "Verify your email address for Acmé <Cloud>, Inc."
    );
    let page = format!("{PUBLIC_ORIGIN}/auth/register/confirm?email=dee%40example.com");
    assert!(mail.text.contains(&page), "{}", mail.text);
    assert!(!mail.text.contains("evil") && !mail.html.contains("evil"));
}

#[test]
fn bad_branding_stops_the_gateway_naming_the_key() {
    for (key, value) in [
        (
            "GATEWAY_BRANDING__ACCENT_COLOR",
            "red;background:url(//evil.example)",
        ),
        (
            "GATEWAY_BRANDING__LOGO_URL",
            "http://cdn.example.com/logo.png",
        ),
        (
            "GATEWAY_BRANDING__LOGO_URL",
            "/logo.png\" onerror=\"alert(1)",
        ),
        ("GATEWAY_BRANDING__NAME", "Acme\r\nBcc: victim@example.com"),
    ] {
        let env = [("GATEWAY_BRANDING__NAME", "Acme"), (key, value)]
            .map(|(k, v)| (k.to_string(), v.to_string()));
        let err = gateway::config::Config::load(None, env).unwrap_err();
        let wanted = format!(
            "branding.{}",
            key.trim_start_matches("GATEWAY_BRANDING__").to_lowercase()
        );
        assert!(
            err.problems.iter().any(|p| p.key == wanted),
            "{key}={value:?}: {err}"
        );
    }
}

/// "Too many attempts" says how long, in the page and the JSON, from the limit's own wait
/// (`Retry-After`): a per-email rate limit, and the failed-password budget.
#[tokio::test]
async fn too_many_attempts_says_how_long_to_wait() {
    let db = TestDb::new().await;
    user(&db, "eve@example.com", PASSWORD, &[]).await;
    let gw = TestGateway::builder(&db)
        .env("GATEWAY_RATE_LIMITS__LOGIN_PER_EMAIL", "2/1h")
        .start()
        .await;
    let attempt = || {
        post_form(
            gw.addr,
            "/auth/login",
            &[("email", "eve@example.com"), ("password", "wrong password")],
        )
    };
    assert_eq!(attempt().await.status, 401);
    assert_eq!(attempt().await.status, 401);
    let limited = attempt().await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    let after: u64 = limited
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(
        (1500..=1800).contains(&after),
        "one attempt per 30 minutes: {after}"
    );
    let said = format!(
        "Too many attempts; try again in {}.",
        wait_text(Duration::from_secs(after))
    );
    assert!(said.contains("minutes"), "{said}");
    assert!(limited.body.contains(&said), "{said} in {}", limited.body);

    let db = TestDb::new().await;
    user(&db, "fay@example.com", PASSWORD, &[]).await;
    let gw = TestGateway::builder(&db)
        .env("GATEWAY_CODES__FAILURE_BUDGET", "1")
        .start()
        .await;
    let login = || {
        post_json(
            gw.addr,
            "/auth/login",
            &json!({"email": "fay@example.com", "password": "wrong password"}),
        )
        .send()
    };
    assert_eq!(login().await.status, 401);
    let over = login().await;
    assert_eq!(over.status, 429, "{}", over.body);
    let after: u64 = over.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (1..=60).contains(&after),
        "the budget's first delay: {after}"
    );
    assert_eq!(
        over.json()["error"]["message"],
        format!(
            "too many attempts; try again in {}",
            wait_text(Duration::from_secs(after))
        )
    );
}

/// A spent magic link, confirmed again from a browser, says *link*.
#[tokio::test]
async fn a_spent_magic_link_says_link_not_code() {
    let Some(sink) = SmtpSink::start().await else {
        return;
    };
    let db = TestDb::new().await;
    user(&db, "gus@example.com", PASSWORD, &[]).await;
    let gw = TestGateway::builder(&db)
        .env("GATEWAY_MAIL__TRANSPORT", "smtp")
        .env("GATEWAY_MAIL__SMTP_URL", &sink.url())
        .start()
        .await;
    let sent = post_form(
        gw.addr,
        "/auth/magic/request",
        &[("email", "gus@example.com")],
    )
    .await;
    assert_eq!(sent.status, 303, "{}", sent.body);
    let mail = sink.next_message(WAIT).await.expect("the link");
    let link = mail
        .text
        .split_whitespace()
        .find(|w| w.starts_with(PUBLIC_ORIGIN))
        .expect("a link")
        .trim_start_matches(PUBLIC_ORIGIN)
        .to_string();
    let confirm = || post_form(gw.addr, &link, &[]);
    assert_eq!(confirm().await.status, 303);
    let again = confirm().await;
    assert_eq!(again.status, 401);
    assert!(
        again
            .body
            .contains("This sign-in link has expired or was already used; ask for a new one."),
        "{}",
        again.body
    );
    assert!(!again.body.contains("code is wrong"), "{}", again.body);
    assert!(
        again.body.contains("id=\"send-link\""),
        "a way to ask for a new one"
    );
    let json = http::req("POST", gw.addr, &link)
        .header("origin", PUBLIC_ORIGIN)
        .send()
        .await;
    assert_eq!(
        json.error_code(),
        "invalid_code",
        "the API's code is stable"
    );
    assert!(
        json.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("link")
    );
}

#[tokio::test]
async fn the_redirect_to_sign_in_carries_no_json() {
    let db = TestDb::new().await;
    let gw = TestGateway::builder(&db)
        .route("/", echo().await, "required")
        .start()
        .await;
    let browser = get(gw.addr, "/orders/7?full=1")
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await;
    assert_eq!(browser.status, 302);
    assert_eq!(
        browser.header("location"),
        Some("/auth/login?return_to=%2Forders%2F7%3Ffull%3D1")
    );
    assert_eq!(browser.header("content-type"), None, "no JSON content type");
    assert_eq!(browser.body, "", "no JSON body");
    assert_eq!(browser.header("cache-control"), Some("no-store"));
    let api = get(gw.addr, "/orders/7")
        .header("accept", "application/json")
        .send()
        .await;
    assert_eq!(api.status, 401);
    assert_eq!(api.header("content-type"), Some("application/json"));
    assert_eq!(api.error_code(), "unauthenticated");
}

/// Sign-out answers (JSON and form, with or without a session) carry
/// `Clear-Site-Data: "cache", "cookies"`; the gateway's authenticated answers are `no-store`.
#[tokio::test]
async fn sign_out_clears_site_data_and_private_answers_are_not_stored() {
    let db = TestDb::new().await;
    user(&db, "hal@example.com", PASSWORD, &[]).await;
    let gw = TestGateway::builder(&db).start().await;

    let token = gw.login("hal@example.com", PASSWORD).await;
    for target in ["/auth/", "/auth/session", "/auth/sessions"] {
        let resp = get(gw.addr, target).bearer(&token).send().await;
        assert_eq!(resp.status, 200, "{target}: {}", resp.body);
        assert_eq!(resp.header("cache-control"), Some("no-store"), "{target}");
    }
    let out = post_json(gw.addr, "/auth/logout", &json!({}))
        .bearer(&token)
        .send()
        .await;
    assert_eq!(out.status, 200, "{}", out.body);
    assert_eq!(out.json()["revoked"], true);
    assert_eq!(out.header("clear-site-data"), Some(CLEAR_SITE_DATA));

    let login = post_form(
        gw.addr,
        "/auth/login",
        &[("email", "hal@example.com"), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(login.status, 303);
    assert_eq!(login.header("cache-control"), Some("no-store"));
    let cookie = cookie_of(&login);
    let page = get(gw.addr, "/auth/")
        .header("cookie", &cookie)
        .send()
        .await;
    assert!(page.body.contains("Signed in as"));
    assert_eq!(page.header("cache-control"), Some("no-store"));
    let out = http::req("POST", gw.addr, "/auth/logout")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", PUBLIC_ORIGIN)
        .header("cookie", &cookie)
        .send()
        .await;
    assert_eq!(out.status, 303);
    assert_eq!(out.header("clear-site-data"), Some(CLEAR_SITE_DATA));
    assert!(
        out.header("set-cookie")
            .is_some_and(|c| c.contains("Max-Age=0"))
    );

    let anonymous = post_json(gw.addr, "/auth/logout", &json!({})).send().await;
    assert_eq!(anonymous.json()["revoked"], false);
    assert_eq!(
        anonymous.header("clear-site-data"),
        Some(CLEAR_SITE_DATA),
        "a browser whose session already ended forgets too"
    );
}

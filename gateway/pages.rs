//! The browser side of the login flows: small server-rendered pages (sign in, code entry,
//! magic-link confirm, password reset, sign out, "signed in as"), with no JavaScript and no
//! external assets. Every interpolated value is HTML-escaped; every page carries a strict CSP.
//! The form posts they make are handled in [`forms`].

pub mod forms;

use std::fmt::Write as _;

use http::{HeaderValue, Request, Response, StatusCode, Uri, header};

use crate::error::HttpError;
use crate::proxy::{Body, Ctx, Gateway, Incoming, full};
use crate::redirect::safe_return_to;

/// Nothing but the inline stylesheet, and forms that post back to the gateway.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";

/// `same-origin`, not `no-referrer`: under `no-referrer` browsers send `Origin: null` with a
/// form POST, which the CSRF check ([`crate::endpoints::check_origin`]) must refuse. `same-origin`
/// still keeps the email and tokens in our URLs from ever reaching another site.
pub const REFERRER_POLICY: &str = "same-origin";

/// Where the code entry page lives (`?email=&return_to=`).
pub const OTP_PAGE: &str = "/auth/otp";
/// Where the password reset form lives (`?email=`).
pub const RESET_CONFIRM_PAGE: &str = "/auth/reset/confirm";

const STYLE: &str = "\
:root{color-scheme:light;font:16px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1b2240}\
body{margin:0;min-height:100vh;display:grid;place-items:center;background:#f1f3f8}\
main{box-sizing:border-box;width:min(25rem,100% - 2rem);margin:2rem 0;padding:2rem;background:#fff;border-radius:.75rem;box-shadow:0 1px 4px #0002}\
h1{font-size:1.5rem;margin:0 0 1rem}h2{font-size:1.05rem;margin:0 0 .25rem}\
p{margin:.5rem 0}label{display:block;font-weight:600;margin:.9rem 0 .25rem}\
input{box-sizing:border-box;width:100%;padding:.6rem .7rem;border:1px solid #8a90a6;border-radius:.4rem;font:inherit}\
input[inputmode=numeric]{letter-spacing:.3em;font-size:1.25rem}\
button{box-sizing:border-box;width:100%;margin-top:1.1rem;padding:.65rem;border:0;border-radius:.4rem;background:#2450c4;color:#fff;font:inherit;font-weight:600;cursor:pointer}\
button.secondary{background:#e4e8f2;color:#1b2240}\
:focus-visible{outline:3px solid #f5a623;outline-offset:2px}\
a{color:#2450c4}hr{border:0;border-top:1px solid #dde1ea;margin:1.75rem 0}\
.msg{padding:.6rem .8rem;border-radius:.4rem;margin:0 0 1rem}\
.error{background:#fdecec;color:#8a1c1c}.notice{background:#e6f4ea;color:#17552e}\
.small{font-size:.9rem;color:#4a5068}";

/// A line shown above a form.
#[derive(Debug, Clone, Copy)]
pub enum Message<'a> {
    None,
    /// Something went wrong; shown with `role="alert"`.
    Error(&'a str),
    /// Information; shown with `role="status"`.
    Notice(&'a str),
}

/// Escapes text for HTML content and double-quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A query string from pairs, each percent-encoded (so always a valid header value).
pub fn query(pairs: &[(&str, &str)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    ser.finish()
}

/// An HTML response with the pages' security headers.
pub fn html(status: StatusCode, page: String) -> Response<Body> {
    let mut resp = Response::new(full(page));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static(REFERRER_POLICY),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// A `303 See Other` to a same-origin `location` (already checked or built here).
pub fn see_other(location: &str) -> Response<Body> {
    let mut resp = html(StatusCode::SEE_OTHER, String::new());
    let value = HeaderValue::from_str(location).unwrap_or_else(|_| HeaderValue::from_static("/"));
    resp.headers_mut().insert(header::LOCATION, value);
    resp
}

fn layout(title: &str, main: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{title}</title><style>{STYLE}</style></head>\
         <body><main>{main}</main></body></html>\n",
        title = escape(title),
    )
}

fn message(m: Message<'_>) -> String {
    match m {
        Message::None => String::new(),
        Message::Error(text) => format!(
            "<p class=\"msg error\" role=\"alert\">{}</p>",
            escape(&sentence(text))
        ),
        Message::Notice(text) => format!(
            "<p class=\"msg notice\" role=\"status\">{}</p>",
            escape(&sentence(text))
        ),
    }
}

/// `text` with a capital first letter and a final period.
fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default();
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
        escape(name),
        escape(value)
    )
}

fn email_input(id: &str, value: &str) -> String {
    format!(
        "<label for=\"{id}\">Email</label>\
         <input id=\"{id}\" name=\"email\" type=\"email\" autocomplete=\"username\" \
         autocapitalize=\"none\" spellcheck=\"false\" maxlength=\"320\" required value=\"{}\">",
        escape(value)
    )
}

fn code_input() -> &'static str {
    "<label for=\"code\">6-digit code</label>\
     <input id=\"code\" name=\"code\" type=\"text\" inputmode=\"numeric\" \
     autocomplete=\"one-time-code\" pattern=\"[0-9]{6}\" minlength=\"6\" maxlength=\"6\" required>"
}

/// The sign-in page: a password form posting to `/auth/login` and an "email me a code" form
/// posting to `/auth/otp/request`, both carrying `return_to`.
pub fn login_page(return_to: &str, email: &str, msg: Message<'_>) -> String {
    let return_to = safe_return_to(Some(return_to));
    let mut main = String::from("<h1>Sign in</h1>");
    main.push_str(&message(msg));
    let _ = write!(
        main,
        "<form id=\"password-login\" method=\"post\" action=\"/auth/login\">{}{}\
         <label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" \
         maxlength=\"256\" required>\
         <button type=\"submit\">Sign in</button></form>\
         <p class=\"small\"><a href=\"/auth/reset\">Forgot your password?</a></p><hr>\
         <h2>Sign in with a code</h2><p class=\"small\">We email you a 6-digit code instead.</p>\
         <form id=\"code-login\" method=\"post\" action=\"/auth/otp/request\">{}{}{}\
         <button type=\"submit\" class=\"secondary\">Email me a code</button></form>",
        hidden("return_to", &return_to),
        email_input("email", email),
        hidden("purpose", "login"),
        hidden("return_to", &return_to),
        email_input("code-email", email),
    );
    layout("Sign in", &main)
}

/// The code entry page: posts the code to `/auth/otp/verify` with purpose `login`.
pub fn otp_page(email: &str, return_to: &str, msg: Message<'_>) -> String {
    let return_to = safe_return_to(Some(return_to));
    let mut main = String::from("<h1>Check your email</h1>");
    main.push_str(&message(msg));
    let _ = write!(
        main,
        "<p>If an account exists for <strong>{}</strong>, we sent it a 6-digit code.</p>\
         <form id=\"code-verify\" method=\"post\" action=\"/auth/otp/verify\">{}{}{}{}\
         <button type=\"submit\">Sign in</button></form>\
         <p class=\"small\"><a href=\"/auth/login?{}\">Send a new code or use your password</a></p>",
        escape(email),
        hidden("purpose", "login"),
        hidden("email", email),
        hidden("return_to", &return_to),
        code_input(),
        escape(&query(&[("return_to", &return_to)])),
    );
    layout("Enter your code", &main)
}

/// The magic-link landing page: a button that POSTs the token back. A GET never signs in,
/// because mail scanners prefetch links.
pub fn magic_confirm_page(token: &str) -> String {
    let action = format!(
        "/auth/magic/{}",
        percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC)
    );
    let main = format!(
        "<h1>Sign in</h1><p>Continue to sign in with the link from your email.</p>\
         <form id=\"magic-confirm\" method=\"post\" action=\"{}\">\
         <button type=\"submit\">Sign in</button></form>\
         <p class=\"small\">Didn't ask for this? Close this page; nothing happens.</p>",
        escape(&action)
    );
    layout("Sign in", &main)
}

/// `GET /auth/magic/{token}`: the confirm page for a magic link.
pub fn magic_confirm(token: &str) -> Response<Body> {
    html(StatusCode::OK, magic_confirm_page(token))
}

/// The reset request page: an email form posting to `/auth/otp/request` with purpose
/// `password_reset`.
pub fn reset_request_page(email: &str, msg: Message<'_>) -> String {
    let mut main = String::from("<h1>Reset your password</h1>");
    main.push_str(&message(msg));
    let _ = write!(
        main,
        "<p>We email you a 6-digit code to set a new password.</p>\
         <form id=\"reset-request\" method=\"post\" action=\"/auth/otp/request\">{}{}\
         <button type=\"submit\">Email me a code</button></form>\
         <p class=\"small\"><a href=\"/auth/login\">Back to sign in</a></p>",
        hidden("purpose", "password_reset"),
        email_input("email", email),
    );
    layout("Reset your password", &main)
}

/// The reset form: code and new password, posting to `/auth/password/reset`.
pub fn reset_confirm_page(email: &str, msg: Message<'_>) -> String {
    let mut main = String::from("<h1>Choose a new password</h1>");
    main.push_str(&message(msg));
    let _ = write!(
        main,
        "<p>If an account exists for that address, we sent it a 6-digit code.</p>\
         <form id=\"reset-confirm\" method=\"post\" action=\"/auth/password/reset\">{}{}\
         <label for=\"new_password\">New password</label>\
         <input id=\"new_password\" name=\"new_password\" type=\"password\" autocomplete=\"new-password\" \
         minlength=\"8\" maxlength=\"256\" required aria-describedby=\"pw-hint\">\
         <p id=\"pw-hint\" class=\"small\">8 to 256 characters. Every signed-in device is signed out.</p>\
         <button type=\"submit\">Set password</button></form>\
         <p class=\"small\"><a href=\"/auth/reset\">Send a new code</a></p>",
        email_input("email", email),
        code_input(),
    );
    layout("Choose a new password", &main)
}

/// The sign-out page: one button that POSTs to `/auth/logout`.
pub fn logout_page() -> String {
    layout(
        "Sign out",
        "<h1>Sign out</h1><p>Sign out of this browser?</p>\
         <form id=\"logout\" method=\"post\" action=\"/auth/logout\">\
         <button type=\"submit\">Sign out</button></form>",
    )
}

/// "Signed in as": who the session belongs to, with a sign-out button.
pub fn signed_in_page(email: &str, roles: &[String]) -> String {
    let roles = if roles.is_empty() {
        String::new()
    } else {
        format!(
            "<p class=\"small\">Roles: {}</p>",
            escape(&roles.join(", "))
        )
    };
    let main = format!(
        "<h1>Signed in</h1><p>Signed in as <strong>{}</strong>.</p>{roles}\
         <form id=\"logout\" method=\"post\" action=\"/auth/logout\">\
         <button type=\"submit\" class=\"secondary\">Sign out</button></form>",
        escape(email)
    );
    layout("Signed in", &main)
}

/// The fixed notices `?notice=` may ask for; anything else shows nothing, so a link cannot
/// put words on our page.
fn notice(key: Option<&str>) -> Message<'static> {
    match key {
        Some("password_reset") => {
            Message::Notice("your password was changed; sign in with the new one")
        }
        Some("signed_out") => Message::Notice("you are signed out"),
        Some("email_verified") => Message::Notice("your email address is verified; sign in"),
        _ => Message::None,
    }
}

/// One query parameter, decoded (the first when repeated).
pub fn query_param(uri: &Uri, name: &str) -> Option<String> {
    form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Serves the pages under `GET /auth`: `/auth` ("signed in as"), `/auth/login`, `/auth/otp`,
/// `/auth/reset`, `/auth/reset/confirm` and `/auth/logout`.
///
/// # Errors
/// 404 for another path; 503 when the session store cannot answer.
pub async fn get(
    gw: &Gateway,
    req: &Request<Incoming>,
    endpoint: &str,
    ctx: &mut Ctx,
) -> Result<Response<Body>, HttpError> {
    let uri = req.uri();
    let param = |name| query_param(uri, name).unwrap_or_default();
    let page = match endpoint {
        "/auth" => match gw.authenticate(req.headers()).await? {
            Some(id) => {
                ctx.user_id = Some(id.user_id.to_string());
                signed_in_page(&id.email, &id.roles.names)
            }
            None => {
                return Ok(see_other(&format!(
                    "/auth/login?{}",
                    query(&[("return_to", "/auth/")])
                )));
            }
        },
        "/auth/login" => login_page(
            &param("return_to"),
            "",
            notice(query_param(uri, "notice").as_deref()),
        ),
        "/auth/otp" => otp_page(&param("email"), &param("return_to"), Message::None),
        "/auth/reset" => reset_request_page("", Message::None),
        "/auth/reset/confirm" => reset_confirm_page(&param("email"), Message::None),
        "/auth/logout" => logout_page(),
        _ => return Err(HttpError::NotFound),
    };
    Ok(html(StatusCode::OK, page))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVIL: &str = "\"><script>alert(1)</script>";

    fn all_pages() -> Vec<(&'static str, String)> {
        let evil = EVIL;
        vec![
            ("login", login_page("/app?x=1", evil, Message::Error(evil))),
            ("otp", otp_page(evil, "/app?x=1", Message::Notice(evil))),
            ("magic", magic_confirm_page(evil)),
            ("reset", reset_request_page(evil, Message::Error(evil))),
            (
                "reset_confirm",
                reset_confirm_page(evil, Message::Error(evil)),
            ),
            ("logout", logout_page()),
            ("signed_in", signed_in_page(evil, &[evil.to_string()])),
        ]
    }

    #[test]
    fn escapes_every_special_character() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn no_script_and_no_unescaped_input() {
        let evil = EVIL;
        for (name, page) in all_pages() {
            let lower = page.to_ascii_lowercase();
            assert!(!lower.contains("<script"), "{name}: {page}");
            assert!(
                !page.contains(evil),
                "{name} lets a value close its attribute"
            );
            assert!(!lower.contains("javascript:"), "{name}");
            assert!(
                !lower.contains("http://") && !lower.contains("https://"),
                "{name} loads something external"
            );
            assert!(
                page.starts_with("<!doctype html>\n<html lang=\"en\">"),
                "{name}"
            );
            assert!(page.contains("<title>"), "{name}");
        }
    }

    #[test]
    fn every_input_has_a_label() {
        for (name, page) in all_pages() {
            for chunk in page.split("<input ").skip(1) {
                if chunk.starts_with("type=\"hidden\"") {
                    continue;
                }
                let id = chunk
                    .split("id=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap_or_else(|| panic!("{name}: input without id: {chunk}"));
                assert!(
                    page.contains(&format!("<label for=\"{id}\">")),
                    "{name}: no label for {id}"
                );
            }
        }
    }

    #[test]
    fn login_forms_carry_return_to_and_autocomplete() {
        let page = login_page("/app/page?x=1&y=\"2\"", "a@example.com", Message::None);
        assert_eq!(
            page.matches("name=\"return_to\" value=\"/app/page?x=1&amp;y=&quot;2&quot;\"")
                .count(),
            2,
            "{page}"
        );
        assert!(page.contains("action=\"/auth/login\""));
        assert!(page.contains("action=\"/auth/otp/request\""));
        assert!(page.contains("name=\"purpose\" value=\"login\""));
        assert!(page.contains("autocomplete=\"username\""));
        assert!(page.contains("autocomplete=\"current-password\""));
        assert!(page.contains("value=\"a@example.com\""));
    }

    #[test]
    fn hostile_return_to_is_replaced() {
        for bad in ["//evil.example", "https://evil.example", "/\\evil"] {
            let page = login_page(bad, "", Message::None);
            assert!(!page.contains("evil"), "{bad}: {page}");
            assert!(page.contains("name=\"return_to\" value=\"/\""));
            assert!(!otp_page("", bad, Message::None).contains("evil"));
        }
    }

    #[test]
    fn code_pages_ask_for_a_numeric_one_time_code() {
        for page in [
            otp_page("a@example.com", "/", Message::None),
            reset_confirm_page("a@example.com", Message::None),
        ] {
            assert!(page.contains("autocomplete=\"one-time-code\""));
            assert!(page.contains("inputmode=\"numeric\""));
        }
        let otp = otp_page("a@example.com", "/x", Message::None);
        assert!(otp.contains("action=\"/auth/otp/verify\""));
        assert!(otp.contains("name=\"email\" value=\"a@example.com\""));
        assert!(otp.contains("name=\"return_to\" value=\"/x\""));
        let reset = reset_confirm_page("a@example.com", Message::None);
        assert!(reset.contains("autocomplete=\"new-password\""));
        assert!(reset.contains("action=\"/auth/password/reset\""));
        assert!(
            reset_request_page("", Message::None)
                .contains("name=\"purpose\" value=\"password_reset\"")
        );
    }

    #[test]
    fn magic_confirm_posts_the_encoded_token() {
        let page = magic_confirm_page("abc_DEF-123");
        assert!(
            page.contains("method=\"post\" action=\"/auth/magic/abc%5FDEF%2D123\""),
            "{page}"
        );
        assert!(magic_confirm_page("../x\"y").contains("action=\"/auth/magic/%2E%2E%2Fx%22y\""));
    }

    #[test]
    fn responses_carry_the_security_headers() {
        let resp = magic_confirm("t");
        let h = resp.headers();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
        assert!(CONTENT_SECURITY_POLICY.contains("default-src 'none'"));
        assert!(CONTENT_SECURITY_POLICY.contains("form-action 'self'"));
        assert!(CONTENT_SECURITY_POLICY.contains("frame-ancestors 'none'"));
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
        assert_eq!(h[header::REFERRER_POLICY], REFERRER_POLICY);
        assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
        let redirect = see_other("/x?y=1");
        assert_eq!(redirect.status(), StatusCode::SEE_OTHER);
        assert_eq!(redirect.headers()[header::LOCATION], "/x?y=1");
        assert_eq!(redirect.headers()[header::CACHE_CONTROL], "no-store");
    }

    #[test]
    fn notices_are_fixed_text() {
        assert!(matches!(notice(Some("<b>pwned</b>")), Message::None));
        assert!(matches!(notice(Some("signed_out")), Message::Notice(_)));
        let page = login_page("/", "", notice(Some("password_reset")));
        assert!(
            page.contains(
                "role=\"status\">Your password was changed; sign in with the new one.</p>"
            )
        );
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            query(&[("email", "a+b@x.com"), ("return_to", "/p?x=1&y=2")]),
            "email=a%2Bb%40x.com&return_to=%2Fp%3Fx%3D1%26y%3D2"
        );
        let uri: Uri = "/auth/otp?email=a%2Bb%40x.com&return_to=%2Fp"
            .parse()
            .unwrap();
        assert_eq!(query_param(&uri, "email").as_deref(), Some("a+b@x.com"));
        assert_eq!(query_param(&uri, "missing"), None);
    }
}

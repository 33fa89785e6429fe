//! The browser side of the login flows: small server-rendered pages (sign in, create an
//! account, code entry, email verification, magic-link request and confirm, password reset,
//! sign out, "signed in as"), with no JavaScript, branded from `[branding]`. Every
//! interpolated value is HTML-escaped; every page carries a strict CSP whose only allowance
//! beyond the inline stylesheet is the configured logo. Rendering only: the HTML front end
//! (`endpoints::forms`) serves them and handles the form posts they make.

use std::fmt::Write as _;

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{Body, full};
use crate::config::Branding;
use crate::html::escape;
use crate::http::paths::REGISTER_PAGE;
use crate::http::query;
use crate::redirect::safe_return_to;

/// Nothing but the inline stylesheet, and forms that post back to the gateway. With a
/// `branding.logo_url`, [`content_security_policy`] adds an `img-src` for that image alone.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";

/// `same-origin`, not `no-referrer`: under `no-referrer` browsers send `Origin: null` with a
/// form POST, which the CSRF check ([`crate::http::origin::check`]) must refuse. `same-origin`
/// still keeps the email and tokens in our URLs from ever reaching another site (a logo on
/// another host included).
pub(crate) const REFERRER_POLICY: &str = "same-origin";

/// The default accent (buttons, links) and the text on it.
const ACCENT: &str = "#2450c4";

const STYLE: &str = "\
:root{color-scheme:light;font:16px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1b2240;--accent:#2450c4;--on-accent:#fff;--link:#2450c4}\
body{margin:0;min-height:100vh;display:grid;place-items:center;background:#f1f3f8}\
main{box-sizing:border-box;width:min(25rem,100% - 2rem);margin:2rem 0;padding:2rem;background:#fff;border-radius:.75rem;box-shadow:0 1px 4px #0002}\
.brand{display:flex;align-items:center;margin:0 0 1.25rem;font-weight:700;font-size:1.1rem}.brand img{display:block;max-height:2.5rem;max-width:100%}\
h1{font-size:1.5rem;margin:0 0 1rem}h2{font-size:1.05rem;margin:0 0 .25rem}\
p{margin:.5rem 0}label{display:block;font-weight:600;margin:.9rem 0 .25rem}\
input{box-sizing:border-box;width:100%;padding:.6rem .7rem;border:1px solid #8a90a6;border-radius:.4rem;font:inherit}\
input[inputmode=numeric]{letter-spacing:.3em;font-size:1.25rem}\
button{box-sizing:border-box;width:100%;margin-top:1.1rem;padding:.65rem;border:0;border-radius:.4rem;background:var(--accent);color:var(--on-accent);font:inherit;font-weight:600;cursor:pointer}\
button.secondary{background:#e4e8f2;color:#1b2240}button.secondary+button.secondary{margin-top:.5rem}\
:focus-visible{outline:3px solid #f5a623;outline-offset:2px}\
a{color:var(--link)}hr{border:0;border-top:1px solid #dde1ea;margin:1.75rem 0}\
.msg{padding:.6rem .8rem;border-radius:.4rem;margin:0 0 1rem}\
.error{background:#fdecec;color:#8a1c1c}.notice{background:#e6f4ea;color:#17552e}\
.small{font-size:.9rem;color:#4a5068}";

/// A line shown above a form.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Message<'a> {
    None,
    /// Something went wrong; shown with `role="alert"`.
    Error(&'a str),
    /// Information; shown with `role="status"`.
    Notice(&'a str),
}

/// The pages' `Content-Security-Policy`: [`CONTENT_SECURITY_POLICY`], plus with a logo an
/// `img-src` naming that one image (an https logo) or this origin (a path).
pub(crate) fn content_security_policy(brand: &Branding) -> String {
    match &brand.logo {
        None => CONTENT_SECURITY_POLICY.to_string(),
        Some(logo) => CONTENT_SECURITY_POLICY.replacen(
            "default-src 'none'; ",
            &format!("default-src 'none'; img-src {}; ", logo.csp_source()),
            1,
        ),
    }
}

/// An HTML response with the pages' security headers, `Cache-Control: no-store` included:
/// no page (the "signed in as" one above all) is kept by a browser or a cache.
pub(crate) fn html(brand: &Branding, status: StatusCode, page: String) -> Response<Body> {
    let csp = HeaderValue::from_str(&content_security_policy(brand))
        .unwrap_or_else(|_| HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    with_headers(status, page, csp)
}

fn with_headers(status: StatusCode, page: String, csp: HeaderValue) -> Response<Body> {
    let mut resp = Response::new(full(page));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CONTENT_SECURITY_POLICY, csp);
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
pub(crate) fn see_other(location: &str) -> Response<Body> {
    let csp = HeaderValue::from_static(CONTENT_SECURITY_POLICY);
    let mut resp = with_headers(StatusCode::SEE_OTHER, String::new(), csp);
    let value = HeaderValue::from_str(location).unwrap_or_else(|_| HeaderValue::from_static("/"));
    resp.headers_mut().insert(header::LOCATION, value);
    resp
}

/// A whole page: the title (with the product name), the stylesheet (with the accent), the
/// brand header (logo, or name) and `main`.
fn layout(brand: &Branding, title: &str, main: &str) -> String {
    let title = match &brand.name {
        Some(name) => format!("{title} · {name}"),
        None => title.to_string(),
    };
    // Inside <style> nothing is unescaped, so the colours are not escaped but checked: `#`
    // and hex digits only (as validated), which can never close the element.
    let css_hex = |c: &str| c.starts_with('#') && c[1..].bytes().all(|b| b.is_ascii_hexdigit());
    let accent = match &brand.accent {
        Some(a) if css_hex(&a.color) && css_hex(a.text) => {
            let link = if a.text == "#fff" { &a.color } else { ACCENT };
            format!(
                ":root{{--accent:{};--on-accent:{};--link:{link}}}",
                a.color, a.text
            )
        }
        _ => String::new(),
    };
    let header = match (&brand.logo, &brand.name) {
        (Some(logo), Some(name)) => format!(
            "<header class=\"brand\"><img src=\"{}\" alt=\"{}\"></header>",
            escape(logo.src()),
            escape(name)
        ),
        (None, Some(name)) => format!("<header class=\"brand\">{}</header>", escape(name)),
        _ => String::new(),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{title}</title><style>{STYLE}{accent}</style></head>\
         <body><main>{header}{main}</main></body></html>\n",
        title = escape(&title),
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

/// The email as a hidden field when the page knows it, else as an input to fill in.
fn known_email(id: &str, email: &str) -> String {
    if email.is_empty() {
        email_input(id, "")
    } else {
        hidden("email", email)
    }
}

fn code_input() -> &'static str {
    "<label for=\"code\">6-digit code</label>\
     <input id=\"code\" name=\"code\" type=\"text\" inputmode=\"numeric\" \
     autocomplete=\"one-time-code\" pattern=\"[0-9]{6}\" minlength=\"6\" maxlength=\"6\" required>"
}

fn new_password_input(id: &str, hint: &str) -> String {
    format!(
        "<label for=\"{id}\">New password</label>\
         <input id=\"{id}\" name=\"{id}\" type=\"password\" autocomplete=\"new-password\" \
         minlength=\"8\" maxlength=\"256\" required aria-describedby=\"pw-hint\">\
         <p id=\"pw-hint\" class=\"small\">{}</p>",
        escape(hint)
    )
}

/// A link to `path` carrying `return_to`, escaped for an attribute.
fn link_with_return_to(path: &str, return_to: &str) -> String {
    escape(&format!("{path}?{}", query(&[("return_to", return_to)])))
}

/// The sign-in page: a password form posting to `/auth/login`; one email form that posts to
/// `/auth/otp/request` ("email me a code") or, by its second button, to `/auth/magic/request`
/// ("email me a link"); and a link to create an account. Every form carries `return_to`.
pub(crate) fn login_page(
    brand: &Branding,
    return_to: &str,
    email: &str,
    msg: Message<'_>,
) -> String {
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
         <h2>Sign in by email</h2><p class=\"small\">We email you a 6-digit code or a one-time link \
         instead.</p>\
         <form id=\"email-login\" method=\"post\" action=\"/auth/otp/request\">{}{}{}\
         <button type=\"submit\" id=\"send-code\" class=\"secondary\">Email me a code</button>\
         <button type=\"submit\" id=\"send-link\" class=\"secondary\" \
         formaction=\"/auth/magic/request\">Email me a link</button></form><hr>\
         <p>New here? <a id=\"create-account\" href=\"{}\">Create an account</a></p>",
        hidden("return_to", &return_to),
        email_input("email", email),
        hidden("purpose", "login"),
        hidden("return_to", &return_to),
        email_input("code-email", email),
        link_with_return_to(REGISTER_PAGE, &return_to),
    );
    layout(brand, "Sign in", &main)
}

/// The account creation page: email and new password, posting to `/auth/register` with
/// `return_to`.
pub(crate) fn register_page(
    brand: &Branding,
    email: &str,
    return_to: &str,
    msg: Message<'_>,
) -> String {
    let return_to = safe_return_to(Some(return_to));
    let mut main = String::from("<h1>Create an account</h1>");
    main.push_str(&message(msg));
    let _ = write!(
        main,
        "<form id=\"register\" method=\"post\" action=\"/auth/register\">{}{}{}\
         <button type=\"submit\">Create account</button></form>\
         <p class=\"small\">We email you a 6-digit code to confirm the address.</p>\
         <p class=\"small\">Already have an account? <a href=\"{}\">Sign in</a></p>",
        hidden("return_to", &return_to),
        email_input("email", email),
        new_password_input(
            "password",
            "8 to 256 characters; a few unusual words make a strong one."
        ),
        link_with_return_to("/auth/login", &return_to),
    );
    layout(brand, "Create an account", &main)
}

/// The email verification page, after registering (or from the link in the verification
/// mail): the code posts to `/auth/otp/verify` with purpose `verify_email`, which signs in and
/// goes on to `return_to`; a second form asks for a new code.
///
/// # Security
/// It reads the same whether or not the address was free: registration never says.
pub(crate) fn verify_email_page(
    brand: &Branding,
    email: &str,
    return_to: &str,
    msg: Message<'_>,
) -> String {
    let return_to = safe_return_to(Some(return_to));
    let mut main = String::from("<h1>Confirm your email</h1>");
    main.push_str(&message(msg));
    let sent_to = if email.is_empty() {
        "your address".to_string()
    } else {
        format!("<strong>{}</strong>", escape(email))
    };
    let _ = write!(
        main,
        "<p>We sent a 6-digit code to {sent_to}. Enter it to confirm the address and sign in.</p>\
         <p class=\"small\">If the address already had an account, we emailed its owner instead: \
         <a href=\"{login}\">sign in</a>.</p>\
         <form id=\"verify-email\" method=\"post\" action=\"/auth/otp/verify\">{}{}{}{}\
         <button type=\"submit\">Confirm and sign in</button></form>\
         <form id=\"verify-resend\" method=\"post\" action=\"/auth/otp/request\">{}{}{}\
         <button type=\"submit\" class=\"secondary\">Send a new code</button></form>",
        hidden("purpose", "verify_email"),
        known_email("email", email),
        hidden("return_to", &return_to),
        code_input(),
        hidden("purpose", "verify_email"),
        known_email("resend-email", email),
        hidden("return_to", &return_to),
        login = link_with_return_to("/auth/login", &return_to),
    );
    layout(brand, "Confirm your email", &main)
}

/// The code entry page: posts the code to `/auth/otp/verify` with purpose `login`.
pub(crate) fn otp_page(brand: &Branding, email: &str, return_to: &str, msg: Message<'_>) -> String {
    let return_to = safe_return_to(Some(return_to));
    let mut main = String::from("<h1>Check your email</h1>");
    main.push_str(&message(msg));
    let _ = write!(
        main,
        "<p>If an account exists for <strong>{}</strong>, we sent it a 6-digit code.</p>\
         <form id=\"code-verify\" method=\"post\" action=\"/auth/otp/verify\">{}{}{}{}\
         <button type=\"submit\">Sign in</button></form>\
         <p class=\"small\"><a href=\"{}\">Send a new code or use your password</a></p>",
        escape(email),
        hidden("purpose", "login"),
        hidden("email", email),
        hidden("return_to", &return_to),
        code_input(),
        link_with_return_to("/auth/login", &return_to),
    );
    layout(brand, "Enter your code", &main)
}

/// "Check your email" after a magic-link request: the same words whether or not the address
/// has an account.
pub(crate) fn magic_sent_page(brand: &Branding, email: &str, return_to: &str) -> String {
    let return_to = safe_return_to(Some(return_to));
    let main = format!(
        "<h1>Check your email</h1>\
         <p>If an account exists for <strong>{}</strong>, we sent it a sign-in link. \
         The link works once.</p>\
         <p class=\"small\">You are signed in in the browser where you open it.</p>\
         <p class=\"small\"><a href=\"{}\">Send a new link or use your password</a></p>",
        escape(email),
        link_with_return_to("/auth/login", &return_to),
    );
    layout(brand, "Check your email", &main)
}

/// The magic-link landing page: a button that POSTs the token back. A GET never signs in,
/// because mail scanners prefetch links.
pub(crate) fn magic_confirm_page(brand: &Branding, token: &str) -> String {
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
    layout(brand, "Sign in", &main)
}

/// `GET /auth/magic/{token}`: the confirm page for a magic link.
pub(crate) fn magic_confirm(brand: &Branding, token: &str) -> Response<Body> {
    html(brand, StatusCode::OK, magic_confirm_page(brand, token))
}

/// The reset request page: an email form posting to `/auth/otp/request` with purpose
/// `password_reset`.
pub(crate) fn reset_request_page(brand: &Branding, email: &str, msg: Message<'_>) -> String {
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
    layout(brand, "Reset your password", &main)
}

/// The reset form: code and new password, posting to `/auth/password/reset`.
pub(crate) fn reset_confirm_page(brand: &Branding, email: &str, msg: Message<'_>) -> String {
    let mut main = String::from("<h1>Choose a new password</h1>");
    main.push_str(&message(msg));
    let _ = write!(
        main,
        "<p>If an account exists for that address, we sent it a 6-digit code.</p>\
         <form id=\"reset-confirm\" method=\"post\" action=\"/auth/password/reset\">{}{}{}\
         <button type=\"submit\">Set password</button></form>\
         <p class=\"small\"><a href=\"/auth/reset\">Send a new code</a></p>",
        email_input("email", email),
        code_input(),
        new_password_input(
            "new_password",
            "8 to 256 characters. Every signed-in device is signed out."
        ),
    );
    layout(brand, "Choose a new password", &main)
}

/// The sign-out page: one button that POSTs to `/auth/logout`.
pub(crate) fn logout_page(brand: &Branding) -> String {
    layout(
        brand,
        "Sign out",
        "<h1>Sign out</h1><p>Sign out of this browser?</p>\
         <form id=\"logout\" method=\"post\" action=\"/auth/logout\">\
         <button type=\"submit\">Sign out</button></form>",
    )
}

/// "Signed in as": who the session belongs to, with a sign-out button.
pub(crate) fn signed_in_page(brand: &Branding, email: &str, roles: &[String]) -> String {
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
    layout(brand, "Signed in", &main)
}

/// The fixed notices `?notice=` may ask for; anything else shows nothing, so a link cannot
/// put words on our page.
pub(crate) fn notice(key: Option<&str>) -> Message<'static> {
    match key {
        Some("password_reset") => {
            Message::Notice("your password was changed; sign in with the new one")
        }
        Some("signed_out") => Message::Notice("you are signed out"),
        _ => Message::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Accent, Logo};

    const EVIL: &str = "\"><script>alert(1)</script>";

    fn plain() -> Branding {
        Branding::default()
    }

    fn branded() -> Branding {
        Branding {
            name: Some("Acme <Cloud> & \"Co\"".into()),
            logo: Some(Logo::Url {
                url: "https://cdn.example.com/brand/logo.svg?v=2".into(),
                source: "https://cdn.example.com/brand/logo.svg".into(),
            }),
            accent: Some(Accent {
                color: "#0b6e4f".into(),
                text: "#fff",
            }),
        }
    }

    fn all_pages(brand: &Branding) -> Vec<(&'static str, String)> {
        let evil = EVIL;
        vec![
            (
                "login",
                login_page(brand, "/app?x=1", evil, Message::Error(evil)),
            ),
            (
                "register",
                register_page(brand, evil, "/app?x=1", Message::Error(evil)),
            ),
            (
                "verify_email",
                verify_email_page(brand, evil, "/app?x=1", Message::Error(evil)),
            ),
            (
                "verify_email_without_email",
                verify_email_page(brand, "", "/", Message::None),
            ),
            (
                "otp",
                otp_page(brand, evil, "/app?x=1", Message::Notice(evil)),
            ),
            ("magic_sent", magic_sent_page(brand, evil, "/app?x=1")),
            ("magic", magic_confirm_page(brand, evil)),
            (
                "reset",
                reset_request_page(brand, evil, Message::Error(evil)),
            ),
            (
                "reset_confirm",
                reset_confirm_page(brand, evil, Message::Error(evil)),
            ),
            ("logout", logout_page(brand)),
            (
                "signed_in",
                signed_in_page(brand, evil, &[evil.to_string()]),
            ),
        ]
    }

    #[test]
    fn no_script_and_no_unescaped_input() {
        let evil = EVIL;
        for brand in [plain(), branded()] {
            for (name, page) in all_pages(&brand) {
                let lower = page.to_ascii_lowercase();
                assert!(!lower.contains("<script"), "{name}: {page}");
                assert!(
                    !page.contains(evil),
                    "{name} lets a value close its attribute"
                );
                assert!(!lower.contains("javascript:"), "{name}");
                assert!(
                    page.starts_with("<!doctype html>\n<html lang=\"en\">"),
                    "{name}"
                );
                assert!(page.contains("<title>"), "{name}");
            }
        }
        for (name, page) in all_pages(&plain()) {
            let lower = page.to_ascii_lowercase();
            assert!(
                !lower.contains("http://") && !lower.contains("https://"),
                "{name} loads something external"
            );
            assert!(!lower.contains("<img"), "{name}");
        }
    }

    #[test]
    fn every_page_shows_the_brand_escaped() {
        let brand = branded();
        for (name, page) in all_pages(&brand) {
            assert!(
                page.contains(
                    "<header class=\"brand\"><img src=\"https://cdn.example.com/brand/logo.svg?v=2\" \
                     alt=\"Acme &lt;Cloud&gt; &amp; &quot;Co&quot;\"></header>"
                ),
                "{name}: {page}"
            );
            assert!(
                page.contains(" · Acme &lt;Cloud&gt; &amp; &quot;Co&quot;</title>"),
                "{name}"
            );
            assert!(
                page.contains(":root{--accent:#0b6e4f;--on-accent:#fff;--link:#0b6e4f}</style>"),
                "{name}"
            );
            assert!(!page.contains("Acme <Cloud>"), "{name}");
        }
        let name_only = Branding {
            name: Some("Acme".into()),
            ..Branding::default()
        };
        let page = login_page(&name_only, "/", "", Message::None);
        assert!(page.contains("<main><header class=\"brand\">Acme</header><h1>Sign in</h1>"));
        assert!(page.contains("<title>Sign in · Acme</title>"));
        assert!(!page.contains("<img"));
        let unbranded = login_page(&plain(), "/", "", Message::None);
        assert!(unbranded.contains("<title>Sign in</title>"));
        assert!(unbranded.contains("<main><h1>Sign in</h1>"));
    }

    #[test]
    fn a_light_accent_keeps_links_readable() {
        let brand = Branding {
            accent: Some(Accent {
                color: "#ffd500".into(),
                text: "#1b2240",
            }),
            ..Branding::default()
        };
        let page = logout_page(&brand);
        assert!(
            page.contains(":root{--accent:#ffd500;--on-accent:#1b2240;--link:#2450c4}"),
            "{page}"
        );
        let forged = Branding {
            accent: Some(Accent {
                color: "#fff}</style><script>x()</script>".into(),
                text: "#fff",
            }),
            ..Branding::default()
        };
        let page = logout_page(&forged);
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("--accent:#fff}"), "{page}");
    }

    #[test]
    fn the_csp_allows_the_logo_and_nothing_more() {
        assert_eq!(content_security_policy(&plain()), CONTENT_SECURITY_POLICY);
        assert_eq!(
            content_security_policy(&branded()),
            "default-src 'none'; img-src https://cdn.example.com/brand/logo.svg; \
             style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
        );
        let path = Branding {
            name: Some("Acme".into()),
            logo: Some(Logo::Path("/public/logo.svg".into())),
            accent: None,
        };
        assert_eq!(
            content_security_policy(&path),
            "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; \
             form-action 'self'; frame-ancestors 'none'"
        );
        let resp = html(&branded(), StatusCode::OK, String::new());
        assert_eq!(
            resp.headers()[header::CONTENT_SECURITY_POLICY],
            content_security_policy(&branded()).as_str()
        );
    }

    #[test]
    fn every_input_has_a_label() {
        for (name, page) in all_pages(&plain()) {
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
        let page = login_page(
            &plain(),
            "/app/page?x=1&y='2'",
            "a@example.com",
            Message::None,
        );
        // A `"` cannot be in a URI, so `safe_return_to` refuses it; `'` can, and is escaped.
        assert_eq!(
            page.matches("name=\"return_to\" value=\"/app/page?x=1&amp;y=&#39;2&#39;\"")
                .count(),
            2,
            "{page}"
        );
        assert!(page.contains("action=\"/auth/login\""));
        assert!(page.contains("action=\"/auth/otp/request\""));
        assert!(page.contains("formaction=\"/auth/magic/request\""));
        assert!(page.contains("name=\"purpose\" value=\"login\""));
        assert!(page.contains("autocomplete=\"username\""));
        assert!(page.contains("autocomplete=\"current-password\""));
        assert!(page.contains("value=\"a@example.com\""));
        assert!(
            page.contains("href=\"/auth/register?return_to=%2Fapp%2Fpage%3Fx%3D1%26y%3D%272%27\""),
            "{page}"
        );
    }

    #[test]
    fn registration_and_verification_pages_post_where_they_should() {
        let page = register_page(&plain(), "a@example.com", "/app?x=1", Message::None);
        assert!(page.contains("action=\"/auth/register\""));
        assert!(page.contains("name=\"return_to\" value=\"/app?x=1\""));
        assert!(page.contains("name=\"password\" type=\"password\" autocomplete=\"new-password\""));
        assert!(page.contains("value=\"a@example.com\""));
        let page = verify_email_page(&plain(), "a@example.com", "/app?x=1", Message::None);
        assert!(page.contains("action=\"/auth/otp/verify\""));
        assert_eq!(
            page.matches("name=\"purpose\" value=\"verify_email\"")
                .count(),
            2
        );
        assert_eq!(
            page.matches("type=\"hidden\" name=\"email\" value=\"a@example.com\"")
                .count(),
            2
        );
        assert_eq!(
            page.matches("name=\"return_to\" value=\"/app?x=1\"")
                .count(),
            2
        );
        assert!(page.contains("autocomplete=\"one-time-code\""));
        let page = verify_email_page(&plain(), "", "/", Message::None);
        assert!(
            page.contains("type=\"email\""),
            "no address known: ask for it"
        );
        let page = magic_sent_page(&plain(), "a@example.com", "/app");
        assert!(
            page.contains("href=\"/auth/login?return_to=%2Fapp\""),
            "{page}"
        );
    }

    #[test]
    fn hostile_return_to_is_replaced() {
        for bad in ["//evil.example", "https://evil.example", "/\\evil"] {
            let brand = plain();
            let page = login_page(&brand, bad, "", Message::None);
            assert!(!page.contains("evil"), "{bad}: {page}");
            assert!(page.contains("name=\"return_to\" value=\"/\""));
            assert!(!otp_page(&brand, "", bad, Message::None).contains("evil"));
            assert!(!register_page(&brand, "", bad, Message::None).contains("evil"));
            assert!(!verify_email_page(&brand, "a@b.c", bad, Message::None).contains("evil"));
            assert!(!magic_sent_page(&brand, "a@b.c", bad).contains("evil"));
        }
    }

    #[test]
    fn code_pages_ask_for_a_numeric_one_time_code() {
        let brand = plain();
        for page in [
            otp_page(&brand, "a@example.com", "/", Message::None),
            reset_confirm_page(&brand, "a@example.com", Message::None),
            verify_email_page(&brand, "a@example.com", "/", Message::None),
        ] {
            assert!(page.contains("autocomplete=\"one-time-code\""));
            assert!(page.contains("inputmode=\"numeric\""));
        }
        let otp = otp_page(&brand, "a@example.com", "/x", Message::None);
        assert!(otp.contains("action=\"/auth/otp/verify\""));
        assert!(otp.contains("name=\"email\" value=\"a@example.com\""));
        assert!(otp.contains("name=\"return_to\" value=\"/x\""));
        let reset = reset_confirm_page(&brand, "a@example.com", Message::None);
        assert!(reset.contains("autocomplete=\"new-password\""));
        assert!(reset.contains("name=\"new_password\""));
        assert!(reset.contains("action=\"/auth/password/reset\""));
        assert!(
            reset_request_page(&brand, "", Message::None)
                .contains("name=\"purpose\" value=\"password_reset\"")
        );
    }

    #[test]
    fn magic_confirm_posts_the_encoded_token() {
        let page = magic_confirm_page(&plain(), "abc_DEF-123");
        assert!(
            page.contains("method=\"post\" action=\"/auth/magic/abc%5FDEF%2D123\""),
            "{page}"
        );
        assert!(
            magic_confirm_page(&plain(), "../x\"y")
                .contains("action=\"/auth/magic/%2E%2E%2Fx%22y\"")
        );
    }

    #[test]
    fn responses_carry_the_security_headers() {
        let resp = magic_confirm(&plain(), "t");
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
        let page = login_page(&plain(), "/", "", notice(Some("password_reset")));
        assert!(
            page.contains(
                "role=\"status\">Your password was changed; sign in with the new one.</p>"
            )
        );
    }
}

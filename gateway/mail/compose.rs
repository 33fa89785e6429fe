//! The messages the gateway sends, each as `(subject, text, html)`: a plain text body and a
//! small inline-styled HTML body with no images, scripts or external assets. Every value put
//! into the HTML goes through [`escape`]. With `branding.name` set, subjects end with the
//! product name and the HTML body starts with it (the sender's display name is set by
//! [`super::Mailer::start`]).

use super::CodePurpose;
use crate::config::Branding;
use crate::html::escape;

/// `base`, with ` {preposition} {name}` when the product has a name.
fn subject(brand: &Branding, base: &str, preposition: &str) -> String {
    match &brand.name {
        Some(name) => format!("{base} {preposition} {name}"),
        None => base.to_owned(),
    }
}

/// A one-time code mail: the 6-digit `code`, what it is for, and how long it works.
/// `page_url`, when given, is where the code can be entered (the verification page for a
/// `verify_email` code); it never carries the code.
pub fn code(
    brand: &Branding,
    purpose: CodePurpose,
    code: &str,
    minutes_valid: u64,
    page_url: Option<&str>,
) -> (String, String, String) {
    let (base, intro, ignore) = match purpose {
        CodePurpose::Login => (
            "Your sign-in code",
            "Use this code to sign in:",
            "If you did not try to sign in, you can ignore this message; nobody can sign in \
             without the code.",
        ),
        CodePurpose::VerifyEmail => (
            "Verify your email address",
            "Use this code to verify your email address:",
            "If you did not create an account, you can ignore this message.",
        ),
        CodePurpose::PasswordReset => (
            "Your password reset code",
            "Use this code to reset your password:",
            "If you did not ask to reset your password, you can ignore this message; your \
             password has not been changed.",
        ),
    };
    let subject = subject(brand, base, "for");
    let validity = valid_for(minutes_valid);
    let (page_text, page_html) = match page_url {
        Some(url) => (
            format!("Enter it on the page that asked for it, or here:\n{url}\n\n"),
            format!(
                "<p style=\"{NOTE}\">Enter it on the page that asked for it, or here:<br>\
                 <a href=\"{url}\" style=\"word-break:break-all\">{url}</a></p>",
                url = escape(url)
            ),
        ),
        None => (String::new(), String::new()),
    };
    let text = format!(
        "{intro}\n\n    {code}\n\n{page_text}The code works once and expires in {validity}. \
         Never share it: we will never ask you for it.\n\n{ignore}\n"
    );
    let body = format!(
        "<p style=\"{P}\">{intro}</p>\
         <p style=\"{CODE}\">{code}</p>{page_html}\
         <p style=\"{P}\">The code works once and expires in {validity}. \
         Never share it: we will never ask you for it.</p>\
         <p style=\"{NOTE}\">{ignore}</p>",
        intro = escape(intro),
        code = escape(code),
        validity = escape(&validity),
        ignore = escape(ignore),
    );
    let html = page(brand, &subject, &body);
    (subject, text, html)
}

/// A magic sign-in link mail. Opening `url` shows a confirmation page; the link works once.
pub fn magic_link(brand: &Branding, url: &str, minutes_valid: u64) -> (String, String, String) {
    let subject = subject(brand, "Your sign-in link", "for");
    let validity = valid_for(minutes_valid);
    let ignore = "If you did not try to sign in, you can ignore this message; nobody can sign \
                  in without the link.";
    let text = format!(
        "Open this link to sign in:\n\n{url}\n\nThe link works once and expires in {validity}. \
         Do not forward this message.\n\n{ignore}\n"
    );
    let body = format!(
        "<p style=\"{P}\">Open this link to sign in:</p>\
         <p style=\"{P}\"><a href=\"{url}\" style=\"{BUTTON}\">Sign in</a></p>\
         <p style=\"{NOTE}\">Or copy this address into your browser:<br>\
         <span style=\"word-break:break-all\">{url}</span></p>\
         <p style=\"{P}\">The link works once and expires in {validity}. \
         Do not forward this message.</p>\
         <p style=\"{NOTE}\">{ignore}</p>",
        url = escape(url),
        validity = escape(&validity),
        ignore = escape(ignore),
    );
    let html = page(brand, &subject, &body);
    (subject, text, html)
}

/// Sent to the owner of an address when someone tries to register it again, so that
/// registration answers the same whether or not the address has an account.
pub fn account_exists_notice(brand: &Branding, login_url: &str) -> (String, String, String) {
    let subject = subject(brand, "You already have an account", "with");
    let text = format!(
        "Someone, perhaps you, tried to create an account with this email address, but it \
         already has one.\n\nSign in here:\n\n{login_url}\n\nIf you forgot your password, you \
         can reset it from the sign-in page.\n\nIf this was not you, you can ignore this \
         message; nothing has changed.\n"
    );
    let body = format!(
        "<p style=\"{P}\">Someone, perhaps you, tried to create an account with this email \
         address, but it already has one.</p>\
         <p style=\"{P}\"><a href=\"{url}\" style=\"{BUTTON}\">Sign in</a></p>\
         <p style=\"{NOTE}\">Or copy this address into your browser:<br>\
         <span style=\"word-break:break-all\">{url}</span></p>\
         <p style=\"{P}\">If you forgot your password, you can reset it from the sign-in \
         page.</p>\
         <p style=\"{NOTE}\">If this was not you, you can ignore this message; nothing has \
         changed.</p>",
        url = escape(login_url),
    );
    let html = page(brand, &subject, &body);
    (subject, text, html)
}

fn valid_for(minutes: u64) -> String {
    if minutes == 1 {
        "1 minute".to_owned()
    } else {
        format!("{minutes} minutes")
    }
}

const P: &str = "margin:0 0 16px;font-size:16px;line-height:1.5";
const NOTE: &str = "margin:0 0 16px;font-size:14px;line-height:1.5;color:#555";
const CODE: &str = "margin:0 0 16px;font-size:32px;font-weight:bold;letter-spacing:6px;\
                    font-family:ui-monospace,Menlo,Consolas,monospace";
const BRAND: &str = "margin:0 0 20px;font-size:18px;font-weight:bold";
const BUTTON: &str = "display:inline-block;padding:10px 20px;background:#1a56db;color:#ffffff;\
                      text-decoration:none;border-radius:6px;font-weight:bold";

/// A whole HTML document around `body` (already escaped), titled with `title` (escaped here),
/// starting with the product name when there is one.
fn page(brand: &Branding, title: &str, body: &str) -> String {
    let name = brand.name.as_deref().map_or(String::new(), |n| {
        format!("<p style=\"{BRAND}\">{}</p>\n", escape(n))
    });
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title></head>\n\
         <body style=\"margin:0;padding:24px;background:#f4f4f5;color:#18181b;\
         font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif\">\n\
         <div style=\"max-width:480px;margin:0 auto;padding:24px;background:#ffffff;\
         border-radius:8px\">\n{name}{body}\n</div>\n</body></html>\n",
        title = escape(title),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "\"><script>alert('x')</script>&amp;<img src=x onerror=y>";

    fn plain() -> Branding {
        Branding::default()
    }

    fn named(name: &str) -> Branding {
        Branding {
            name: Some(name.into()),
            ..Branding::default()
        }
    }

    fn assert_no_raw_markup(html: &str) {
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("'x'"), "{html}");
        assert!(!html.contains(HOSTILE), "{html}");
    }

    #[test]
    fn every_interpolated_value_is_escaped() {
        let (_, _, html) = code(&named(HOSTILE), CodePurpose::Login, HOSTILE, 10, None);
        assert_no_raw_markup(&html);
        assert!(
            html.contains("&quot;&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;amp;")
        );

        let (_, text, html) = magic_link(&named(HOSTILE), HOSTILE, 15);
        assert_no_raw_markup(&html);
        assert!(html.contains("href=\"&quot;&gt;&lt;script&gt;"), "{html}");
        assert!(
            text.contains(HOSTILE),
            "the text body carries the value as is"
        );

        let (_, text, html) = account_exists_notice(&named(HOSTILE), HOSTILE);
        assert_no_raw_markup(&html);
        assert!(text.contains(HOSTILE));
    }

    #[test]
    fn code_mail_shows_the_code_and_its_validity() {
        for purpose in CodePurpose::ALL {
            let (subject, text, html) = code(&plain(), purpose, "042917", 10, None);
            assert!(!subject.is_empty());
            assert!(
                !subject.contains("042917"),
                "the code stays out of notifications"
            );
            assert!(text.contains("\n    042917\n"), "{text}");
            assert!(html.contains(">042917</p>"), "{html}");
            assert!(text.contains("expires in 10 minutes"), "{text}");
            assert!(html.contains("expires in 10 minutes"), "{html}");
            assert!(html.starts_with("<!DOCTYPE html>"));
        }
        let (_, text, _) = code(&plain(), CodePurpose::Login, "000001", 1, None);
        assert!(text.contains("expires in 1 minute."), "{text}");
        let subjects = CodePurpose::ALL.map(|p| code(&plain(), p, "123456", 10, None).0);
        assert_ne!(subjects[0], subjects[1]);
        assert_ne!(subjects[1], subjects[2]);
        assert_ne!(subjects[0], subjects[2]);
    }

    #[test]
    fn magic_link_keeps_query_strings_working() {
        let url = "https://gw.example.com/auth/magic/abc_DEF-123?return_to=%2Fapp&x=1";
        let (_, text, html) = magic_link(&plain(), url, 15);
        assert!(text.contains(url), "{text}");
        assert!(
            html.contains(
                "href=\"https://gw.example.com/auth/magic/abc_DEF-123?return_to=%2Fapp&amp;x=1\""
            ),
            "{html}"
        );
        assert!(text.contains("expires in 15 minutes"));
    }

    #[test]
    fn no_external_assets_or_scripts() {
        let url = "https://gw.example.com/auth/login";
        for (_, _, html) in [
            code(&plain(), CodePurpose::PasswordReset, "123456", 10, None),
            magic_link(&plain(), url, 15),
            account_exists_notice(&named("Acme"), url),
        ] {
            for banned in [
                "<img", "<script", "<link", "<style", "src=", "url(", "@import",
            ] {
                assert!(!html.contains(banned), "{banned} in {html}");
            }
            // The only link is the one we were given.
            assert_eq!(html.matches("href=").count(), html.matches(url).count() / 2);
        }
    }

    #[test]
    fn account_exists_notice_links_to_sign_in() {
        let (subject, text, html) =
            account_exists_notice(&plain(), "https://gw.example.com/auth/login");
        assert_eq!(subject, "You already have an account");
        assert!(text.contains("https://gw.example.com/auth/login"));
        assert!(html.contains("href=\"https://gw.example.com/auth/login\""));
    }

    #[test]
    fn the_product_name_is_in_every_subject_and_at_the_top() {
        let brand = named("Acme Cloud");
        let url = "https://gw.example.com/auth/login";
        let mails = [
            code(&brand, CodePurpose::Login, "123456", 10, None),
            code(&brand, CodePurpose::VerifyEmail, "123456", 10, None),
            code(&brand, CodePurpose::PasswordReset, "123456", 10, None),
            magic_link(&brand, url, 15),
            account_exists_notice(&brand, url),
        ];
        let subjects: Vec<&str> = mails.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(
            subjects,
            [
                "Your sign-in code for Acme Cloud",
                "Verify your email address for Acme Cloud",
                "Your password reset code for Acme Cloud",
                "Your sign-in link for Acme Cloud",
                "You already have an account with Acme Cloud",
            ]
        );
        for (subject, _, html) in &mails {
            assert!(html.contains(">Acme Cloud</p>"), "{html}");
            assert!(
                html.contains(&format!("<title>{subject}</title>")),
                "{html}"
            );
        }
        let (_, _, html) = code(&plain(), CodePurpose::Login, "123456", 10, None);
        assert!(
            !html.contains("font-size:18px;font-weight:bold"),
            "no name, no header"
        );
    }

    #[test]
    fn a_verification_code_says_where_to_enter_it_and_the_url_never_holds_the_code() {
        let url =
            "https://gw.example.com/auth/register/confirm?email=a%40example.com&return_to=%2F";
        let (_, text, html) = code(&plain(), CodePurpose::VerifyEmail, "314159", 10, Some(url));
        assert!(text.contains(&format!("or here:\n{url}\n")), "{text}");
        assert!(
            html.contains(
                "href=\"https://gw.example.com/auth/register/confirm?email=a%40example.com&amp;return_to=%2F\""
            ),
            "{html}"
        );
        assert!(!url.contains("314159"));
        assert_eq!(html.matches("href=").count(), 1);
        let (_, hostile, _) = code(&plain(), CodePurpose::VerifyEmail, "1", 1, Some(HOSTILE));
        assert!(hostile.contains(HOSTILE), "text keeps it as is");
        let (_, _, html) = code(&plain(), CodePurpose::VerifyEmail, "1", 1, Some(HOSTILE));
        assert_no_raw_markup(&html);
    }
}

//! The messages the gateway sends, each as `(subject, text, html)`: a plain text body and a
//! small inline-styled HTML body with no images, scripts or external assets. Every value put
//! into the HTML goes through [`escape`].

use super::CodePurpose;

/// A one-time code mail: the 6-digit `code`, what it is for, and how long it works.
pub fn code(purpose: CodePurpose, code: &str, minutes_valid: u64) -> (String, String, String) {
    let (subject, intro, ignore) = match purpose {
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
    let validity = valid_for(minutes_valid);
    let text = format!(
        "{intro}\n\n    {code}\n\nThe code works once and expires in {validity}. \
         Never share it: we will never ask you for it.\n\n{ignore}\n"
    );
    let body = format!(
        "<p style=\"{P}\">{intro}</p>\
         <p style=\"{CODE}\">{code}</p>\
         <p style=\"{P}\">The code works once and expires in {validity}. \
         Never share it: we will never ask you for it.</p>\
         <p style=\"{NOTE}\">{ignore}</p>",
        intro = escape(intro),
        code = escape(code),
        validity = escape(&validity),
        ignore = escape(ignore),
    );
    (subject.to_owned(), text, page(subject, &body))
}

/// A magic sign-in link mail. Opening `url` shows a confirmation page; the link works once.
pub fn magic_link(url: &str, minutes_valid: u64) -> (String, String, String) {
    let subject = "Your sign-in link";
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
    (subject.to_owned(), text, page(subject, &body))
}

/// Sent to the owner of an address when someone tries to register it again, so that
/// registration answers the same whether or not the address has an account.
pub fn account_exists_notice(login_url: &str) -> (String, String, String) {
    let subject = "You already have an account";
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
    (subject.to_owned(), text, page(subject, &body))
}

/// HTML escaping, shared with the pages: `& < > " '` become character references.
pub use crate::pages::escape;

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
const BUTTON: &str = "display:inline-block;padding:10px 20px;background:#1a56db;color:#ffffff;\
                      text-decoration:none;border-radius:6px;font-weight:bold";

/// A whole HTML document around `body` (already escaped), titled with `title` (escaped here).
fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title></head>\n\
         <body style=\"margin:0;padding:24px;background:#f4f4f5;color:#18181b;\
         font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif\">\n\
         <div style=\"max-width:480px;margin:0 auto;padding:24px;background:#ffffff;\
         border-radius:8px\">\n{body}\n</div>\n</body></html>\n",
        title = escape(title),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "\"><script>alert('x')</script>&amp;<img src=x onerror=y>";

    fn assert_no_raw_markup(html: &str) {
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("'x'"), "{html}");
        assert!(!html.contains(HOSTILE), "{html}");
    }

    #[test]
    fn escape_replaces_the_five_characters() {
        assert_eq!(escape(r#"a&b<c>d"e'f"#), "a&amp;b&lt;c&gt;d&quot;e&#39;f");
        assert_eq!(escape("plain 123 é"), "plain 123 é");
        assert_eq!(escape("&amp;"), "&amp;amp;");
        assert_eq!(escape(""), "");
    }

    #[test]
    fn every_interpolated_value_is_escaped() {
        let (_, _, html) = code(CodePurpose::Login, HOSTILE, 10);
        assert_no_raw_markup(&html);
        assert!(
            html.contains("&quot;&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;amp;")
        );

        let (_, text, html) = magic_link(HOSTILE, 15);
        assert_no_raw_markup(&html);
        assert!(html.contains("href=\"&quot;&gt;&lt;script&gt;"), "{html}");
        assert!(
            text.contains(HOSTILE),
            "the text body carries the value as is"
        );

        let (_, text, html) = account_exists_notice(HOSTILE);
        assert_no_raw_markup(&html);
        assert!(text.contains(HOSTILE));
    }

    #[test]
    fn code_mail_shows_the_code_and_its_validity() {
        for purpose in CodePurpose::ALL {
            let (subject, text, html) = code(purpose, "042917", 10);
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
        let (_, text, _) = code(CodePurpose::Login, "000001", 1);
        assert!(text.contains("expires in 1 minute."), "{text}");
        let subjects = CodePurpose::ALL.map(|p| code(p, "123456", 10).0);
        assert_ne!(subjects[0], subjects[1]);
        assert_ne!(subjects[1], subjects[2]);
        assert_ne!(subjects[0], subjects[2]);
    }

    #[test]
    fn magic_link_keeps_query_strings_working() {
        let url = "https://gw.example.com/auth/magic/abc_DEF-123?return_to=%2Fapp&x=1";
        let (_, text, html) = magic_link(url, 15);
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
            code(CodePurpose::PasswordReset, "123456", 10),
            magic_link(url, 15),
            account_exists_notice(url),
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
        let (subject, text, html) = account_exists_notice("https://gw.example.com/auth/login");
        assert_eq!(subject, "You already have an account");
        assert!(text.contains("https://gw.example.com/auth/login"));
        assert!(html.contains("href=\"https://gw.example.com/auth/login\""));
    }
}

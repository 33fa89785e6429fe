//! Where a browser goes after signing in: `return_to` is accepted only as a same-origin
//! relative path, so the login flow can never be turned into an open redirect.

use percent_encoding::percent_decode_str;

use crate::path;

/// Longest `return_to` kept; a longer one falls back to `/`.
pub(crate) const MAX_RETURN_TO: usize = 2048;

/// Where to send the browser after a login: `raw` when it is a same-origin relative path,
/// its path normalized by [`path::normalize`] (the query and fragment kept as they are),
/// else `/`.
///
/// Accepted: a path that starts with exactly one `/`, made only of visible ASCII (so it is
/// always a valid `Location` header), at most [`MAX_RETURN_TO`] bytes, whose path part the
/// one path normalization accepts and which still starts with exactly one `/` after it.
///
/// # Security
/// Refused, each falling back to `/`: absolute and scheme-relative URLs (`https://evil`,
/// `//evil`, `javascript:...`), backslashes anywhere (`/\evil`: browsers read `\` as `/`),
/// whitespace and control characters (browsers strip tabs and newlines, so `/\t/evil` would
/// become `//evil`), and the same tricks percent-encoded once (`/%2f%2fevil`, `/%5cevil`,
/// `/%0d%0a...`), in case a later hop decodes before it redirects; dot segments
/// (`/.//evil.example`, which a browser resolves to `//evil.example`) and every other path
/// the gateway would refuse as ambiguous.
pub(crate) fn safe_return_to(raw: Option<&str>) -> String {
    raw.filter(|r| is_safe(r))
        .and_then(normalized)
        .unwrap_or_else(|| "/".to_string())
}

/// `raw` with its path normalized, unless the normalization refuses it or its result could
/// be read as scheme-relative.
fn normalized(raw: &str) -> Option<String> {
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    let (target, rest) = raw.split_at(end);
    let normalized = path::normalize(target).ok()?;
    let out = format!("{normalized}{rest}");
    // A character `path::normalize` lets through but a URI may not hold (a backtick, `{`)
    // would make the redirect's `Location` unparsable for some clients: refuse it here.
    let parses = out.parse::<http::uri::PathAndQuery>().is_ok();
    (parses && is_single_slash_path(out.as_bytes()) && out.len() <= MAX_RETURN_TO).then_some(out)
}

fn is_safe(path: &str) -> bool {
    if path.len() > MAX_RETURN_TO || !path.bytes().all(|b| b.is_ascii_graphic()) {
        return false;
    }
    let decoded: Vec<u8> = percent_decode_str(path).collect();
    is_single_slash_path(path.as_bytes())
        && is_single_slash_path(&decoded)
        && !decoded.iter().any(|&b| b == b'\\' || b.is_ascii_control())
}

/// `/` followed by anything but a second `/` or `\`.
fn is_single_slash_path(path: &[u8]) -> bool {
    match path {
        [b'/', b'/' | b'\\', ..] => false,
        [b'/', ..] => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keeps_same_origin_paths() {
        for ok in [
            "/",
            "/app",
            "/app/page?x=1&y=2#frag",
            "/search?q=hello%20world",
            "/redirect?to=https://elsewhere",
            "/%C3%A9t%C3%A9",
            "/a?next=/..//evil.example",
            "/a#/../x",
        ] {
            assert_eq!(safe_return_to(Some(ok)), ok, "{ok}");
        }
    }

    #[test]
    fn paths_are_normalized_once() {
        for (raw, want) in [
            ("/a//b", "/a/b"),
            ("/%61pp?x=%61", "/app?x=%61"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/a/%7euser#top", "/a/~user#top"),
        ] {
            assert_eq!(safe_return_to(Some(raw)), want, "{raw}");
        }
    }

    #[test]
    fn dot_segments_and_ambiguous_paths_fall_back() {
        for bad in [
            "/.//evil.example",
            "/./evil.example",
            "/.//evil.example?x=1",
            "/a/../..//evil.example",
            "/a/b/../c",
            "/%2e/%2fevil.example",
            "/%2e%2e//evil.example",
            "/./\\evil.example",
            "/a%2Fb",
            "/a;b",
            "/admin%20",
            "/%EF%BC%8F%EF%BC%8Fevil.example",
        ] {
            assert_eq!(safe_return_to(Some(bad)), "/", "{bad:?}");
        }
    }

    #[test]
    fn refuses_open_redirects() {
        let long = format!("/{}", "a".repeat(MAX_RETURN_TO));
        for bad in [
            "",
            "//evil.example",
            "///evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "/a\\b",
            "/%2f%2fevil.example",
            "/%2F%2Fevil.example",
            "/%2fevil.example",
            "/%5cevil.example",
            "/%5Cevil.example",
            "/a%5cb",
            "%2f%2fevil.example",
            "https://evil.example",
            "http:/evil.example",
            "HTTPS://evil.example",
            "javascript:alert(1)",
            "data:text/html,x",
            "evil.example",
            "./x",
            " /x",
            "/ /evil",
            "/\t/evil.example",
            "/\r\nSet-Cookie: x=1",
            "/%0d%0aSet-Cookie:%20x=1",
            "/%09/evil.example",
            "/%00",
            "/\u{7f}",
            "/caf\u{e9}",
            "/\u{2028}",
            long.as_str(),
        ] {
            assert_eq!(safe_return_to(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_return_to(None), "/");
    }

    #[test]
    fn accepts_exactly_the_limit() {
        let at_limit = format!("/{}", "a".repeat(MAX_RETURN_TO - 1));
        assert_eq!(safe_return_to(Some(&at_limit)), at_limit);
    }

    /// Inputs an attacker would try: pieces of URLs glued together.
    fn hostile() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "/",
            "//",
            "\\",
            "%2f",
            "%2F",
            "%5c",
            "%5C",
            "%",
            "%0a",
            "%0d",
            "%09",
            "\t",
            "\n",
            "\r",
            " ",
            ":",
            "https:",
            "http://",
            "javascript:",
            "evil.example",
            "@",
            "?",
            "#",
            ".",
            "..",
            "a",
            "%252f",
            "\u{0}",
            "\u{a0}",
            "\u{3000}",
            "é",
            "./",
            "../",
            "%2e",
            "%2e%2e/",
            "/./",
            "/../",
        ]);
        prop::collection::vec(piece, 0..12).prop_map(|parts| parts.concat())
    }

    fn check(out: &str) -> Result<(), TestCaseError> {
        prop_assert!(out.starts_with('/'), "{out:?}");
        prop_assert!(!out.starts_with("//") && !out.starts_with("/\\"), "{out:?}");
        prop_assert!(!out.contains('\\'), "{out:?}");
        let uri: http::Uri = out
            .parse()
            .map_err(|e| TestCaseError::fail(format!("{out:?} is not a URI: {e}")))?;
        prop_assert!(
            uri.scheme().is_none() && uri.authority().is_none(),
            "{out:?}"
        );
        prop_assert!(http::HeaderValue::from_str(out).is_ok(), "{out:?}");
        let base = url::Url::parse("https://gw.test/start").expect("base URL");
        let resolved = base
            .join(out)
            .map_err(|e| TestCaseError::fail(format!("{out:?} does not resolve: {e}")))?;
        prop_assert_eq!(resolved.origin(), base.origin(), "{:?}", out);
        Ok(())
    }

    #[test]
    fn characters_a_uri_cannot_hold_fall_back_to_the_root() {
        for raw in ["/`", "/a{b}", "/a|b", "/x?y=`"] {
            let out = safe_return_to(Some(raw));
            assert!(out.parse::<http::Uri>().is_ok(), "{raw:?} gave {out:?}");
        }
    }

    proptest! {
        #[test]
        fn output_is_always_a_same_origin_path(raw in hostile()) {
            check(&safe_return_to(Some(&raw)))?;
        }

        #[test]
        fn arbitrary_text_never_escapes(raw in any::<String>()) {
            check(&safe_return_to(Some(&raw)))?;
        }

        #[test]
        fn accepted_paths_are_normalized_and_keep_their_query(raw in "/[a-z0-9/?=&%._-]{0,40}") {
            let out = safe_return_to(Some(&raw));
            if out != "/" || raw == "/" {
                let split = |s: &str| {
                    let end = s.find('?').unwrap_or(s.len());
                    (s[..end].to_string(), s[end..].to_string())
                };
                let (raw_path, raw_rest) = split(&raw);
                let (path, rest) = split(&out);
                prop_assert_eq!(rest, raw_rest);
                prop_assert_eq!(path::normalize(&raw_path), Ok(path.clone()));
                prop_assert_eq!(path::normalize(&path), Ok(path));
            }
        }

        #[test]
        fn output_paths_have_no_dot_segments(raw in hostile()) {
            let out = safe_return_to(Some(&raw));
            let end = out.find(['?', '#']).unwrap_or(out.len());
            let target = &out[..end];
            prop_assert!(!target.split('/').any(|s| s == "." || s == ".."), "{:?}", out);
            let again = path::normalize(target);
            prop_assert_eq!(again.as_deref(), Ok(target), "{:?}", out);
        }
    }
}

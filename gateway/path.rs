//! Request path normalization, applied once: the route policy is chosen on the normalized path
//! and the upstream receives exactly that path. Anything whose meaning could differ between
//! the gateway and a backend is refused (400) rather than guessed at.
//!
//! The rules:
//! - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded; every other
//!   percent-encoding is kept, with upper-case hex;
//! - encoded `/` or `\`, a raw `\`, NUL or any control character, malformed `%` escapes and
//!   percent-encoded bytes that are not UTF-8 are refused;
//! - encoded `;`, `?`, `#` and `%` are refused: a backend that decodes them (or decodes twice)
//!   would see a path parameter, a query or another path than the one the policy was chosen on;
//! - `.` and `..` segments are refused, also when spelled `%2e`;
//! - `;` (path parameters, which some servers strip before routing) is refused;
//! - runs of `/` collapse to one.
//!
//! Case is kept (paths are case-sensitive), but routes match their prefix without regard to
//! ASCII case, so a case-insensitive backend cannot be reached around a policy.

use std::fmt;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotAbsolute,
    BadEscape,
    EncodedSeparator,
    EncodedDelimiter,
    Backslash,
    ControlCharacter,
    InvalidUtf8,
    DotSegment,
    Semicolon,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotAbsolute => "the path must start with /",
            PathError::BadEscape => "malformed percent-encoding in the path",
            PathError::EncodedSeparator => "encoded / or \\ in the path",
            PathError::EncodedDelimiter => "encoded ; ? # or % in the path",
            PathError::Backslash => "\\ in the path",
            PathError::ControlCharacter => "control character in the path",
            PathError::InvalidUtf8 => "percent-encoded bytes in the path are not UTF-8",
            PathError::DotSegment => "dot segments (. or ..) in the path",
            PathError::Semicolon => "; in the path",
        })
    }
}

impl std::error::Error for PathError {}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Normalizes the path of a request target (without the query).
///
/// # Errors
/// The [`PathError`] that makes the path ambiguous; answer 400.
pub fn normalize(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut out = String::with_capacity(raw.len());
    // Bytes decoded from consecutive escapes that are kept encoded, to check they are UTF-8.
    let mut escaped_run: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex_value),
                bytes.get(i + 2).copied().and_then(hex_value),
            ) else {
                return Err(PathError::BadEscape);
            };
            let decoded = hi << 4 | lo;
            i += 3;
            match decoded {
                b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                b';' | b'?' | b'#' | b'%' => return Err(PathError::EncodedDelimiter),
                0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
                d if is_unreserved(d) => {
                    check_utf8(&mut escaped_run)?;
                    out.push(char::from(d));
                }
                d => {
                    escaped_run.push(d);
                    out.push('%');
                    out.push(char::from(b"0123456789ABCDEF"[usize::from(d >> 4)]));
                    out.push(char::from(b"0123456789ABCDEF"[usize::from(d & 0xf)]));
                }
            }
            continue;
        }
        check_utf8(&mut escaped_run)?;
        match b {
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::Semicolon),
            0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
            0x80..=0xff => return Err(PathError::InvalidUtf8),
            b'/' if out.ends_with('/') => {}
            _ => out.push(char::from(b)),
        }
        i += 1;
    }
    check_utf8(&mut escaped_run)?;
    if out.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(PathError::DotSegment);
    }
    Ok(out)
}

fn check_utf8(run: &mut Vec<u8>) -> Result<(), PathError> {
    if run.is_empty() {
        return Ok(());
    }
    let ok = std::str::from_utf8(run).is_ok();
    run.clear();
    if ok {
        Ok(())
    } else {
        Err(PathError::InvalidUtf8)
    }
}

/// Whether the normalized `path` lies under the route `prefix` (normalized, without trailing
/// slash; empty for the root route): equal to it or continuing with `/`, compared without
/// regard to ASCII case.
pub fn has_prefix(path: &str, prefix: &str) -> bool {
    if prefix.is_empty() {
        return true;
    }
    let (p, pre) = (path.as_bytes(), prefix.as_bytes());
    p.len() >= pre.len()
        && p[..pre.len()].eq_ignore_ascii_case(pre)
        && (p.len() == pre.len() || p[pre.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepted_spellings() {
        for (raw, want) in [
            ("/", "/"),
            ("/admin", "/admin"),
            ("//admin", "/admin"),
            ("/a//b///c/", "/a/b/c/"),
            ("/%61dmin", "/admin"),
            ("/%7euser", "/~user"),
            ("/a%20b", "/a%20b"),
            ("/a%2a", "/a%2A"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/Admin", "/Admin"),
            ("/.well-known/x", "/.well-known/x"),
            ("/a..b/...", "/a..b/..."),
        ] {
            assert_eq!(normalize(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn refused_spellings() {
        for (raw, why) in [
            ("admin", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
            ("/public/..%2fadmin", PathError::EncodedSeparator),
            ("/public%2F..%2Fadmin", PathError::EncodedSeparator),
            ("/public/%5c../admin", PathError::EncodedSeparator),
            ("/public/%2e%2e/admin", PathError::DotSegment),
            ("/public/%2E./admin", PathError::DotSegment),
            ("/public/../admin", PathError::DotSegment),
            ("/./admin", PathError::DotSegment),
            ("/admin/.", PathError::DotSegment),
            ("/admin;x", PathError::Semicolon),
            ("/admin%3bx", PathError::EncodedDelimiter),
            ("/admin%3Fx", PathError::EncodedDelimiter),
            ("/admin%23x", PathError::EncodedDelimiter),
            ("/%2561dmin", PathError::EncodedDelimiter),
            ("/admin\\x", PathError::Backslash),
            ("/a%00", PathError::ControlCharacter),
            ("/a%0d%0aX-User-Id:%201", PathError::ControlCharacter),
            ("/a%zz", PathError::BadEscape),
            ("/a%4", PathError::BadEscape),
            ("/a%ff", PathError::InvalidUtf8),
            ("/a%c3", PathError::InvalidUtf8),
            ("/a%c3/b", PathError::InvalidUtf8),
        ] {
            assert_eq!(normalize(raw), Err(why), "{raw}");
        }
    }

    #[test]
    fn prefixes_match_on_segment_boundaries_without_case() {
        assert!(has_prefix("/admin", "/admin"));
        assert!(has_prefix("/admin/x", "/admin"));
        assert!(has_prefix("/ADMIN/x", "/admin"));
        assert!(!has_prefix("/administrator", "/admin"));
        assert!(!has_prefix("/adm", "/admin"));
        assert!(has_prefix("/anything", ""));
    }

    proptest! {
        #[test]
        fn normalization_is_idempotent(raw in "/[a-zA-Z0-9%./;\\\\_~-]{0,40}") {
            if let Ok(once) = normalize(&raw) {
                let twice = normalize(&once);
                prop_assert_eq!(twice.as_deref(), Ok(once.as_str()));
            }
        }

        #[test]
        fn normalized_paths_are_unambiguous(raw in "/(%[0-9a-fA-F]{2}|[a-zA-Z0-9./;_~-]){0,30}") {
            if let Ok(p) = normalize(&raw) {
                prop_assert!(p.starts_with('/'));
                prop_assert!(!p.contains("//"));
                prop_assert!(!p.contains(';') && !p.contains('\\'));
                prop_assert!(!p.split('/').any(|s| s == "." || s == ".."));
                let lower = p.to_ascii_lowercase();
                for banned in ["%2f", "%5c", "%2e", "%3b", "%3f", "%23", "%25", "%00"] {
                    prop_assert!(!lower.contains(banned), "{} in {}", banned, p);
                }
            }
        }
    }

    /// Policies by strength, as routes would order them: a longer prefix may only be stronger.
    const ROUTES: &[(&str, u8)] = &[
        ("", 0),
        ("/public", 0),
        ("/api", 1),
        ("/admin", 2),
        ("/admin/public", 0),
    ];

    fn policy(normalized: &str) -> u8 {
        ROUTES
            .iter()
            .filter(|(p, _)| has_prefix(normalized, p))
            .max_by_key(|(p, _)| p.len())
            .map_or(0, |(_, s)| *s)
    }

    /// One character of a path, spelled as an attacker might.
    fn spelling(c: char) -> impl Strategy<Value = String> {
        let plain = c.to_string();
        let upper = c.to_ascii_uppercase().to_string();
        let enc_lower = format!("%{:02x}", c as u32);
        let enc_upper = format!("%{:02X}", c as u32);
        prop_oneof![
            4 => Just(plain),
            1 => Just(upper),
            1 => Just(enc_lower),
            1 => Just(enc_upper),
        ]
    }

    fn attack(canonical: &'static str) -> impl Strategy<Value = String> {
        let parts: Vec<_> = canonical
            .chars()
            .map(|c| match c {
                '/' => prop_oneof![
                    4 => Just("/".to_string()),
                    1 => Just("//".to_string()),
                    1 => Just("%2f".to_string()),
                    1 => Just("/./".to_string()),
                    1 => Just("/x/../".to_string()),
                    1 => Just("/%2e%2e/".to_string()),
                    1 => Just("\\".to_string()),
                    1 => Just(";x/".to_string()),
                    1 => Just("%3b/".to_string()),
                ]
                .boxed(),
                c => spelling(c).boxed(),
            })
            .collect();
        (
            parts,
            prop_oneof![
                Just(""),
                Just("/"),
                Just(";jsessionid=1"),
                Just("%2f..%2fpublic"),
                Just("/..")
            ],
        )
            .prop_map(|(parts, tail)| format!("{}{tail}", parts.concat()))
    }

    fn any_attack() -> impl Strategy<Value = (&'static str, String)> {
        prop_oneof![Just("/admin/users"), Just("/api/v1/items"), Just("/admin")]
            .prop_flat_map(|c| (Just(c), attack(c)))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn no_spelling_lands_in_a_weaker_policy((canonical, raw) in any_attack()) {
            if let Ok(normalized) = normalize(&raw) {
                prop_assert!(
                    policy(&normalized) >= policy(canonical),
                    "{} normalized to {} lands in a weaker policy than {}", raw, normalized, canonical
                );
            }
        }
    }
}

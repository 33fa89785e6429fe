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
//! - a segment ending in `.` or a space (`/admin.`, `/admin..`, `/admin%2e`, `/admin%20`) is
//!   refused: IIS and other Windows servers strip trailing dots and spaces, so a backend
//!   could read it as the segment without them;
//! - a percent-encoded character that a backend could fold to ASCII is refused: one whose
//!   NFKC form has an ASCII character (fullwidth `／ａ`, ligatures, `…`, no-break spaces),
//!   one that case-maps to an ASCII letter (dotless `ı` and `İ` to `i`, long `ſ` to `s`, the
//!   Kelvin sign to `k`; Java compares without case this way), and the default-ignorable
//!   characters that normalizers drop (soft hyphen, zero-width joiners, `U+FEFF`, variation
//!   selectors, tags);
//! - `;` (path parameters, which some servers strip before routing) is refused;
//! - runs of `/` collapse to one.
//!
//! Case is kept (paths are case-sensitive), but routes match their prefix without regard to
//! ASCII case, so a case-insensitive backend cannot be reached around a policy. A last
//! segment with an extension (`/admin.json`) that a backend ignoring extensions (Spring's
//! suffix patterns, Rails formats) would route under another prefix than the gateway does is
//! refused by [`route`].

use std::fmt;

use unicode_normalization::UnicodeNormalization;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathError {
    NotAbsolute,
    BadEscape,
    EncodedSeparator,
    EncodedDelimiter,
    Backslash,
    ControlCharacter,
    InvalidUtf8,
    DotSegment,
    Semicolon,
    TrailingDotOrSpace,
    FoldsToAscii,
    AmbiguousExtension,
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
            PathError::TrailingDotOrSpace => "a path segment ends in . or a space",
            PathError::FoldsToAscii => {
                "a character in the path could be read as another (ASCII) one"
            }
            PathError::AmbiguousExtension => {
                "the path's extension makes it ambiguous between two routes"
            }
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
pub(crate) fn normalize(raw: &str) -> Result<String, PathError> {
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
    if out
        .split('/')
        .any(|seg| seg.ends_with('.') || seg.ends_with("%20"))
    {
        return Err(PathError::TrailingDotOrSpace);
    }
    Ok(out)
}

/// Checks the bytes of a run of escapes kept encoded: UTF-8, and no character a backend
/// could fold to ASCII.
fn check_utf8(run: &mut Vec<u8>) -> Result<(), PathError> {
    if run.is_empty() {
        return Ok(());
    }
    let checked = match std::str::from_utf8(run) {
        Ok(text) if text.chars().any(folds_to_ascii) => Err(PathError::FoldsToAscii),
        Ok(_) => Ok(()),
        Err(_) => Err(PathError::InvalidUtf8),
    };
    run.clear();
    checked
}

/// Whether a backend could read the non-ASCII `c` as, or as containing, an ASCII character
/// (or drop it): its NFKC form has one, it case-maps to an ASCII letter (possibly followed by
/// combining marks, as `İ` lower-cases to `i` + U+0307), or it is default-ignorable.
pub(crate) fn folds_to_ascii(c: char) -> bool {
    if c.is_ascii() {
        return false;
    }
    std::iter::once(c).nfkc().any(|n| n.is_ascii())
        || is_ascii_letter_and_marks(c.to_lowercase())
        || is_ascii_letter_and_marks(c.to_uppercase())
        || is_default_ignorable(c)
}

/// An ASCII letter, then only combining diacritical marks (U+0300 to U+036F).
fn is_ascii_letter_and_marks(mut mapped: impl Iterator<Item = char>) -> bool {
    mapped
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic())
        && mapped.all(|rest| ('\u{300}'..='\u{36f}').contains(&rest))
}

/// Unicode's `Default_Ignorable_Code_Point` (DerivedCoreProperties.txt): characters that
/// normalizers and renderers may drop.
fn is_default_ignorable(c: char) -> bool {
    const RANGES: &[(u32, u32)] = &[
        (0x00AD, 0x00AD),
        (0x034F, 0x034F),
        (0x061C, 0x061C),
        (0x115F, 0x1160),
        (0x17B4, 0x17B5),
        (0x180B, 0x180F),
        (0x200B, 0x200F),
        (0x202A, 0x202E),
        (0x2060, 0x206F),
        (0x3164, 0x3164),
        (0xFE00, 0xFE0F),
        (0xFEFF, 0xFEFF),
        (0xFFA0, 0xFFA0),
        (0xFFF0, 0xFFF8),
        (0x1BCA0, 0x1BCA3),
        (0x1D173, 0x1D17A),
        (0xE0000, 0xE0FFF),
    ];
    let c = u32::from(c);
    RANGES.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c))
}

/// Whether the normalized `path` lies under the route `prefix` (normalized, without trailing
/// slash; empty for the root route): equal to it or continuing with `/`, compared without
/// regard to ASCII case.
pub(crate) fn has_prefix(path: &str, prefix: &str) -> bool {
    if prefix.is_empty() {
        return true;
    }
    let (p, pre) = (path.as_bytes(), prefix.as_bytes());
    p.len() >= pre.len()
        && p[..pre.len()].eq_ignore_ascii_case(pre)
        && (p.len() == pre.len() || p[pre.len()] == b'/')
}

/// The normalized `path` without the extension of its last segment (`/a/admin.tar.gz` →
/// `/a/admin`), as a backend with suffix patterns routes it; `None` without one (a segment
/// starting with `.`, such as `.well-known`, has none).
pub(crate) fn without_extension(path: &str) -> Option<&str> {
    let start = path.rfind('/').map_or(0, |i| i + 1);
    let dot = path[start..].find('.').filter(|d| *d > 0)?;
    Some(&path[..start + dot])
}

/// The route of a normalized `path` among `routes` (longest prefix first; `prefix` gives a
/// route's normalized prefix, empty for the root): the first whose prefix [`has_prefix`]
/// matches, `None` when none does.
///
/// # Errors
/// [`PathError::AmbiguousExtension`] when the path without the extension of its last
/// segment ([`without_extension`]: `/admin.json` → `/admin`) falls under a longer prefix,
/// so a backend that ignores extensions would read the request as another route's.
pub(crate) fn route<'a, T>(
    path: &str,
    routes: &'a [T],
    prefix: impl Fn(&T) -> &str,
) -> Result<Option<&'a T>, PathError> {
    let stem = without_extension(path);
    let first = routes.iter().position(|r| {
        has_prefix(path, prefix(r)) || stem.is_some_and(|s| has_prefix(s, prefix(r)))
    });
    match first {
        Some(i) if has_prefix(path, prefix(&routes[i])) => Ok(Some(&routes[i])),
        Some(_) => Err(PathError::AmbiguousExtension),
        None => Ok(None),
    }
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
            ("/a..b/c", "/a..b/c"),
            ("/admin.json", "/admin.json"),
            ("/a%20b/c", "/a%20b/c"),
            ("/%e6%96%87", "/%E6%96%87"),
            ("/stra%C3%9Fe", "/stra%C3%9Fe"),
            ("/%C3%A5ngstr%C3%B6m", "/%C3%A5ngstr%C3%B6m"),
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
            // Trailing dots and spaces, which Windows servers strip.
            ("/admin%20", PathError::TrailingDotOrSpace),
            ("/admin.", PathError::TrailingDotOrSpace),
            ("/admin..", PathError::TrailingDotOrSpace),
            ("/admin%2e", PathError::TrailingDotOrSpace),
            ("/admin%2E/x", PathError::TrailingDotOrSpace),
            ("/admin.%20/x", PathError::TrailingDotOrSpace),
            ("/...", PathError::TrailingDotOrSpace),
            // Characters a backend could fold to ASCII.
            ("/adm%C4%B1n", PathError::FoldsToAscii),
            ("/adm%C4%B0n", PathError::FoldsToAscii),
            ("/%EF%BD%81dmin", PathError::FoldsToAscii),
            ("/%EF%BC%A1DMIN", PathError::FoldsToAscii),
            ("/%C5%BFecret", PathError::FoldsToAscii),
            ("/%E2%84%AAey", PathError::FoldsToAscii),
            ("/admin%E2%80%A6", PathError::FoldsToAscii),
            ("/admin%C2%A0", PathError::FoldsToAscii),
            ("/admin%E3%80%80", PathError::FoldsToAscii),
            ("/adm%C2%ADin", PathError::FoldsToAscii),
            ("/adm%E2%80%8Bin", PathError::FoldsToAscii),
            ("/admin%EF%BB%BF", PathError::FoldsToAscii),
            ("/%EF%BC%8Fadmin", PathError::FoldsToAscii),
            ("/admin%EF%BC%8E", PathError::FoldsToAscii),
            ("/%EF%AC%80", PathError::FoldsToAscii),
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

    /// Policies by strength, as routes would order them (longest prefix first): a longer
    /// prefix may only be stronger, except `/admin/public`.
    const ROUTES: &[(&str, u8)] = &[
        ("/admin/public", 0),
        ("/public", 0),
        ("/admin", 2),
        ("/api", 1),
        ("", 0),
    ];

    fn route_of(path: &str) -> Result<Option<&'static str>, PathError> {
        Ok(route(path, ROUTES, |r| r.0)?.map(|r| r.0))
    }

    #[test]
    fn extensions_that_would_change_the_route_are_refused() {
        for (path, want) in [
            ("/admin.json", Err(PathError::AmbiguousExtension)),
            ("/Admin.JSON", Err(PathError::AmbiguousExtension)),
            ("/admin.tar.gz", Err(PathError::AmbiguousExtension)),
            ("/public.html", Err(PathError::AmbiguousExtension)),
            ("/admin/public.json", Err(PathError::AmbiguousExtension)),
            ("/admin/users.json", Ok(Some("/admin"))),
            ("/admin/x.json/y", Ok(Some("/admin"))),
            ("/admin.json/x", Ok(Some(""))),
            ("/app.js", Ok(Some(""))),
            ("/.well-known/x", Ok(Some(""))),
            ("/.admin", Ok(Some(""))),
            ("/admin", Ok(Some("/admin"))),
            ("/administrator.json", Ok(Some(""))),
        ] {
            assert_eq!(route_of(path), want, "{path}");
        }
        let dotted: &[(&str, u8)] = &[("/v1.0", 1), ("/v1", 0)];
        assert_eq!(route("/v1.0/x", dotted, |r| r.0), Ok(Some(&dotted[0])));
        assert_eq!(route("/v1.0", dotted, |r| r.0), Ok(Some(&dotted[0])));
        assert_eq!(
            route("/v1.5", dotted, |r| r.0),
            Err(PathError::AmbiguousExtension)
        );
        assert_eq!(route("/v1/x.5", dotted, |r| r.0), Ok(Some(&dotted[1])));
        assert_eq!(without_extension("/a/b.c.d"), Some("/a/b"));
        assert_eq!(without_extension("/a.b/c"), None);
        assert_eq!(without_extension("/a/"), None);
    }

    #[test]
    fn folding_is_about_ascii_only() {
        for c in ['é', 'ß', 'ø', 'Å', '文', 'ж', 'ı', 'ａ'] {
            let expected = matches!(c, 'ı' | 'ａ');
            assert_eq!(folds_to_ascii(c), expected, "{c}");
        }
        assert!(!folds_to_ascii('a'), "ASCII itself is not a fold");
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
                prop_assert!(!p.split('/').any(|s| s.ends_with('.') || s.ends_with("%20")));
                let lower = p.to_ascii_lowercase();
                for banned in ["%2f", "%5c", "%2e", "%3b", "%3f", "%23", "%25", "%00"] {
                    prop_assert!(!lower.contains(banned), "{} in {}", banned, p);
                }
            }
        }
    }

    /// The policy of a normalized path's route, or `None` when routing refuses it.
    fn policy(normalized: &str) -> Option<u8> {
        route(normalized, ROUTES, |r| r.0)
            .ok()
            .map(|r| r.map_or(0, |(_, s)| *s))
    }

    /// `c` percent-encoded as UTF-8.
    fn encoded(c: char) -> String {
        let mut buf = [0u8; 4];
        c.encode_utf8(&mut buf)
            .bytes()
            .map(|b| format!("%{b:02X}"))
            .collect()
    }

    /// Characters a backend may read as the ASCII letter `c`: its fullwidth form, and the
    /// letters that case-map to it (dotless and dotted I, long s, the Kelvin sign).
    fn look_alikes(c: char) -> Vec<String> {
        let mut out = Vec::new();
        if c.is_ascii_alphabetic() {
            let offset = u32::from(c.to_ascii_lowercase()) - u32::from('a');
            for base in [0xFF41, 0xFF21] {
                if let Some(wide) = char::from_u32(base + offset) {
                    out.push(encoded(wide));
                }
            }
        }
        match c {
            'i' => out.extend([encoded('ı'), encoded('İ')]),
            's' => out.push(encoded('ſ')),
            'k' => out.push(encoded('\u{212A}')),
            _ => {}
        }
        out
    }

    /// One character of a path, spelled as an attacker might.
    fn spelling(c: char) -> BoxedStrategy<String> {
        let plain = c.to_string();
        let upper = c.to_ascii_uppercase().to_string();
        let enc_lower = format!("%{:02x}", c as u32);
        let enc_upper = format!("%{:02X}", c as u32);
        let common = prop_oneof![
            4 => Just(plain),
            1 => Just(upper),
            1 => Just(enc_lower),
            1 => Just(enc_upper),
        ];
        let alikes = look_alikes(c);
        if alikes.is_empty() {
            common.boxed()
        } else {
            prop_oneof![6 => common, 1 => prop::sample::select(alikes)].boxed()
        }
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
                    1 => Just("./".to_string()),
                    1 => Just("%20/".to_string()),
                    1 => Just("%EF%BC%8F".to_string()),
                ]
                .boxed(),
                c => spelling(c),
            })
            .collect();
        (
            parts,
            prop_oneof![
                Just(""),
                Just("/"),
                Just(";jsessionid=1"),
                Just("%2f..%2fpublic"),
                Just("/.."),
                Just("%20"),
                Just("."),
                Just(".."),
                Just("%2e"),
                Just(".json"),
                Just("%C2%A0"),
                Just("%E2%80%A6"),
                Just("%E2%80%8B"),
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
            let strongest = policy(canonical).expect("canonical paths route");
            if let Some(landed) = normalize(&raw).ok().and_then(|n| policy(&n)) {
                prop_assert!(
                    landed >= strongest,
                    "{} lands in a weaker policy ({}) than {} ({})", raw, landed, canonical, strongest
                );
            }
        }
    }
}

//! The host a request names (`Host`, `:authority`, a trusted `X-Forwarded-Host`), checked and
//! normalized once: what `X-Forwarded-Host` tells backends, and the one spelling that anything
//! keyed on the host (links, routing) compares. Anything a backend or resolver could read as
//! another host is refused rather than guessed at (RFC 9112 section 3.2: answer 400).
//!
//! The rules (RFC 3986 section 3.2.2, RFC 1123 names):
//! - a name is dot-separated labels of `A-Z a-z 0-9 - _`, each 1 to 63 bytes, at most 253 in
//!   all; it is lower-cased, and one trailing dot (`example.com.`) is dropped;
//! - a name whose last label is numeric (or `0x...`) must be a dotted-quad IPv4 address in
//!   its canonical spelling: `127.1`, `0177.0.0.1` or `0x7f.0.0.1`, which resolvers read as
//!   `127.0.0.1`, are refused;
//! - an IPv6 literal is `[...]` without a zone, written back in its canonical form;
//! - the port is 1 to 65535 in decimal; an empty port (`example.com:`) and the scheme's
//!   default port (80 for http, 443 for https) are dropped;
//! - nothing else: no userinfo (`@`), percent-encoding, spaces, commas (a list of hosts),
//!   non-ASCII or empty hosts.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Longest name accepted (a DNS name is at most 253 bytes without its trailing dot).
pub(crate) const MAX_NAME: usize = 253;
/// Longest label of a name.
pub(crate) const MAX_LABEL: usize = 63;

/// A checked host: a lower-case name (or IP address) and the port when it is not the
/// scheme's default.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Host {
    name: String,
    port: Option<u16>,
}

impl Host {
    /// The name: lower-case, without a trailing dot; an IPv6 address is in brackets.
    #[cfg(test)]
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The port, unless it was absent or the scheme's default.
    #[cfg(test)]
    pub(crate) fn port(&self) -> Option<u16> {
        self.port
    }
}

/// `name[:port]`, as a `Host` header spells it.
impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Why a host was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostError {
    Empty,
    Character,
    Label,
    TooLong,
    Port,
    IpLiteral,
    NumericName,
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostError::Empty => "the host is empty",
            HostError::Character => "the host has a character no host name has",
            HostError::Label => "a label of the host name is empty or longer than 63 bytes",
            HostError::TooLong => "the host name is longer than 253 bytes",
            HostError::Port => "the port is not a number from 1 to 65535",
            HostError::IpLiteral => "the host is not a valid IPv6 literal",
            HostError::NumericName => "a numeric host must be an IPv4 address in dotted-quad form",
        })
    }
}

impl std::error::Error for HostError {}

/// Checks and normalizes `raw` (`host[:port]`, as `Host`, `:authority` or `X-Forwarded-Host`
/// carry it) for a request made with `https` or plain http.
///
/// # Errors
/// The [`HostError`] that makes `raw` no host, or a host read differently elsewhere; answer
/// 400.
pub(crate) fn normalize(raw: &str, https: bool) -> Result<Host, HostError> {
    let (name, port) = if let Some(rest) = raw.strip_prefix('[') {
        let (literal, after) = rest.split_once(']').ok_or(HostError::IpLiteral)?;
        let addr: Ipv6Addr = literal.parse().map_err(|_| HostError::IpLiteral)?;
        let port = match after {
            "" => "",
            _ => after.strip_prefix(':').ok_or(HostError::Character)?,
        };
        (format!("[{addr}]"), port)
    } else {
        let (name, port) = raw.split_once(':').unwrap_or((raw, ""));
        (reg_name(name)?, port)
    };
    let port = match port {
        "" => None,
        digits if digits.len() <= 5 && digits.bytes().all(|b| b.is_ascii_digit()) => {
            match digits.parse::<u16>() {
                Ok(0) | Err(_) => return Err(HostError::Port),
                Ok(p) => Some(p),
            }
        }
        _ => return Err(HostError::Port),
    };
    let default = if https { 443 } else { 80 };
    Ok(Host {
        name,
        port: port.filter(|p| *p != default),
    })
}

/// A registered name (or IPv4 address) lower-cased, without its trailing dot.
fn reg_name(raw: &str) -> Result<String, HostError> {
    let name = raw.strip_suffix('.').unwrap_or(raw);
    if name.is_empty() {
        return Err(HostError::Empty);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(HostError::Character);
    }
    if name.len() > MAX_NAME {
        return Err(HostError::TooLong);
    }
    if name
        .split('.')
        .any(|label| label.is_empty() || label.len() > MAX_LABEL)
    {
        return Err(HostError::Label);
    }
    let name = name.to_ascii_lowercase();
    let last = name.rsplit('.').next().unwrap_or_default();
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || last
            .strip_prefix("0x")
            .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()));
    if numeric {
        let addr: Ipv4Addr = name.parse().map_err(|_| HostError::NumericName)?;
        if addr.to_string() != name {
            return Err(HostError::NumericName);
        }
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(raw: &str, https: bool) -> String {
        normalize(raw, https)
            .unwrap_or_else(|e| panic!("{raw:?} refused: {e}"))
            .to_string()
    }

    #[test]
    fn accepted_spellings() {
        for (raw, https, want) in [
            ("gw.test", false, "gw.test"),
            ("GW.Test", false, "gw.test"),
            ("gw.test.", false, "gw.test"),
            ("gw.test:80", false, "gw.test"),
            ("gw.test:443", true, "gw.test"),
            ("gw.test:443", false, "gw.test:443"),
            ("gw.test:8443", true, "gw.test:8443"),
            ("gw.test:", false, "gw.test"),
            ("gw.test:08443", false, "gw.test:8443"),
            ("localhost", false, "localhost"),
            ("my_service-1.internal", false, "my_service-1.internal"),
            ("127.0.0.1", false, "127.0.0.1"),
            ("127.0.0.1:9000", false, "127.0.0.1:9000"),
            ("[::1]", false, "[::1]"),
            ("[0:0:0:0:0:0:0:1]:8443", false, "[::1]:8443"),
            ("[2001:DB8::1]:443", true, "[2001:db8::1]"),
            ("xn--bcher-kva.example", false, "xn--bcher-kva.example"),
            ("1.example", false, "1.example"),
            ("a.1b", false, "a.1b"),
        ] {
            assert_eq!(ok(raw, https), want, "{raw}");
        }
    }

    #[test]
    fn refused_spellings() {
        let long_label = format!("{}.example", "a".repeat(64));
        let long_name = format!("{}example", "abcdefghi.".repeat(25));
        for (raw, why) in [
            ("", HostError::Empty),
            (".", HostError::Empty),
            (":80", HostError::Empty),
            ("a b<script>", HostError::Character),
            ("gw.test, evil.example", HostError::Character),
            ("gw.test,evil.example", HostError::Character),
            ("user@gw.test", HostError::Character),
            ("gw%2etest", HostError::Character),
            ("gw.test/x", HostError::Character),
            ("gw.test\\x", HostError::Character),
            ("caf\u{e9}.example", HostError::Character),
            ("gw.test:80:80", HostError::Port),
            ("gw.test:http", HostError::Port),
            ("gw.test:0", HostError::Port),
            ("gw.test:65536", HostError::Port),
            ("gw.test:+80", HostError::Port),
            ("gw.test:000080", HostError::Port),
            ("gw..test", HostError::Label),
            (".gw.test", HostError::Label),
            ("gw.test..", HostError::Label),
            (long_label.as_str(), HostError::Label),
            (long_name.as_str(), HostError::TooLong),
            ("127.1", HostError::NumericName),
            ("0177.0.0.1", HostError::NumericName),
            ("0x7f.0.0.1", HostError::NumericName),
            ("2130706433", HostError::NumericName),
            ("1.2.3.4.5", HostError::NumericName),
            ("256.0.0.1", HostError::NumericName),
            ("[::1", HostError::IpLiteral),
            ("[fe80::1%25eth0]", HostError::IpLiteral),
            ("[v1.x]", HostError::IpLiteral),
            ("[127.0.0.1]", HostError::IpLiteral),
            ("[::1]x", HostError::Character),
            ("::1", HostError::Empty),
        ] {
            assert_eq!(normalize(raw, false), Err(why), "{raw:?}");
        }
    }

    /// What a host looks like on the wire, spelled as a client might.
    fn hostish() -> impl Strategy<Value = String> {
        let label = "[a-zA-Z0-9_-]{1,8}";
        prop_oneof![
            (prop::collection::vec(label, 1..4), prop::bool::ANY).prop_map(
                |(labels, dot)| format!("{}{}", labels.join("."), if dot { "." } else { "" })
            ),
            (0u8..=255, 0u8..=255, 0u8..=255, 0u8..=255)
                .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
            any::<[u16; 8]>().prop_map(|s| format!("[{}]", Ipv6Addr::from(s))),
        ]
    }

    fn with_port() -> impl Strategy<Value = String> {
        (hostish(), prop::option::of(0u32..70_000))
            .prop_map(|(h, port)| port.map_or(h.clone(), |p| format!("{h}:{p}")))
    }

    fn check(raw: &str, host: &Host) -> Result<(), TestCaseError> {
        let text = host.to_string();
        prop_assert!(
            text.bytes()
                .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase()),
            "{raw:?} -> {text:?}"
        );
        prop_assert!(!host.name().ends_with('.'), "{raw:?} -> {text:?}");
        let authority: http::uri::Authority = text
            .parse()
            .map_err(|e| TestCaseError::fail(format!("{raw:?} -> {text:?}: {e}")))?;
        prop_assert_eq!(authority.port_u16(), host.port());
        prop_assert!(http::HeaderValue::from_str(&text).is_ok());
        Ok(())
    }

    proptest! {
        #[test]
        fn normalization_is_idempotent(raw in with_port(), https in any::<bool>()) {
            if let Ok(once) = normalize(&raw, https) {
                check(&raw, &once)?;
                prop_assert_eq!(normalize(&once.to_string(), https), Ok(once));
            }
        }

        #[test]
        fn case_and_default_port_do_not_make_another_host(raw in hostish(), https in any::<bool>()) {
            let plain = normalize(&raw, https);
            prop_assert_eq!(&normalize(&raw.to_ascii_uppercase(), https), &plain);
            let default = if https { 443 } else { 80 };
            prop_assert_eq!(&normalize(&format!("{raw}:{default}"), https), &plain);
        }

        #[test]
        fn arbitrary_text_is_refused_or_a_clean_host(raw in any::<String>(), https in any::<bool>()) {
            if let Ok(host) = normalize(&raw, https) {
                check(&raw, &host)?;
            }
        }

        #[test]
        fn lists_and_spaces_are_never_a_host(a in hostish(), b in hostish(), sep in "[ ,\t;@/]") {
            let list = format!("{a}{sep}{b}");
            prop_assert!(normalize(&list, false).is_err(), "{:?}", list);
        }
    }
}

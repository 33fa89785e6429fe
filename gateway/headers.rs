//! Gateway-owned headers. Whatever a client sends under an identity, forwarding, request-id
//! or signature name (in any case, with `_` for `-`) is removed from every request on every
//! route, as are hop-by-hop headers and those named in `Connection`; only then are the
//! gateway's own values inserted. The optional `X-Identity-Signature` lets a backend check
//! that the identity headers came from the gateway: see [`verify_signature`].

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use sha2::Sha256;

use crate::config;
use crate::sessions::Identity;

/// Always gateway-owned, whatever the configured identity names.
const OWNED: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-forwarded-uri",
    "x-forwarded-method",
    "x-forwarded-ssl",
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "x-request-id",
    "x-original-uri",
    "x-original-url",
    "x-original-method",
    "x-rewrite-url",
    "x-identity-timestamp",
];

/// Hop-by-hop headers (RFC 9110 section 7.6.1, plus the legacy ones).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];

/// Names whose `_` spelling a backend may read as the name itself (CGI-style servers turn `-`
/// and `_` into one variable, `HTTP_CONTENT_LENGTH`): message framing, besides the hop-by-hop
/// names. The `-` spellings are hyper's to parse (or [`HOP_BY_HOP`]'s to remove); an `_`
/// spelling is removed on every route, so a backend never sees a second `Content-Length` or
/// `Transfer-Encoding` the gateway did not frame the body by.
const FRAMING: &[&str] = &["content-length", "transfer-encoding"];

/// Whether `name` is an `_` spelling of a framing or hop-by-hop header (`Transfer_Encoding`).
fn is_framing_alias(name: &HeaderName) -> bool {
    let name = name.as_str();
    name.contains('_') && {
        let canon = name.replace('_', "-");
        FRAMING.contains(&canon.as_str()) || HOP_BY_HOP.contains(&canon.as_str())
    }
}

/// The identity header names and what sanitizing removes.
#[derive(Debug, Clone)]
pub struct Names {
    pub user_id: HeaderName,
    pub user_email: HeaderName,
    pub user_roles: HeaderName,
    pub session_id: HeaderName,
    pub signature: HeaderName,
    pub user_email_verified: HeaderName,
    pub request_id: HeaderName,
    /// Every owned name, lower-case with `-`: identity names and [`OWNED`].
    owned: Vec<String>,
}

impl Names {
    pub(crate) fn new(cfg: &config::Headers) -> Self {
        let identity = [
            &cfg.user_id,
            &cfg.user_email,
            &cfg.user_roles,
            &cfg.session_id,
            &cfg.signature,
            &cfg.user_email_verified,
        ];
        let mut owned: Vec<String> = identity
            .iter()
            .map(|n| n.as_str().replace('_', "-"))
            .collect();
        owned.extend(OWNED.iter().map(|s| (*s).to_string()));
        owned.extend(
            [
                "x-user-id",
                "x-user-email",
                "x-user-roles",
                "x-session-id",
                "x-identity-signature",
                "x-user-email-verified",
            ]
            .iter()
            .map(|s| (*s).to_string()),
        );
        owned.sort();
        owned.dedup();
        Names {
            user_id: cfg.user_id.clone(),
            user_email: cfg.user_email.clone(),
            user_roles: cfg.user_roles.clone(),
            session_id: cfg.session_id.clone(),
            signature: cfg.signature.clone(),
            user_email_verified: cfg.user_email_verified.clone(),
            request_id: HeaderName::from_static("x-request-id"),
            owned,
        }
    }

    /// Every gateway-owned name, lower-case with `-` (what [`sanitize_request`] removes, in
    /// any spelling).
    pub fn owned(&self) -> impl Iterator<Item = &str> {
        self.owned.iter().map(String::as_str)
    }

    /// Whether `name` is gateway-owned, in any spelling (`X_User_Id` too). Header names are
    /// already lower-case; only names with `_` need a canonical copy.
    pub(crate) fn is_owned(&self, name: &HeaderName) -> bool {
        let name = name.as_str();
        if name.contains('_') {
            let canon = name.replace('_', "-");
            self.owned
                .binary_search_by(|o| o.as_str().cmp(&canon))
                .is_ok()
        } else {
            self.owned
                .binary_search_by(|o| o.as_str().cmp(name))
                .is_ok()
        }
    }
}

/// Removes hop-by-hop headers, every header named in `Connection`, every gateway-owned
/// header, and the `_` spellings of framing and hop-by-hop headers from an inbound request.
/// With `keep_upgrade`, `Connection: upgrade` and `Upgrade` survive (a WebSocket handshake
/// being proxied).
///
/// # Security
/// Runs before any identity header is inserted, so `Connection: X-User-Id` cannot remove the
/// gateway's own value, and a spoofed `X-User-Id` or `X_User_Id` never reaches a backend.
pub(crate) fn sanitize_request(headers: &mut HeaderMap, names: &Names, keep_upgrade: bool) {
    let upgrade = keep_upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    remove_connection_listed(headers);
    for h in HOP_BY_HOP {
        headers.remove(*h);
    }
    let owned: Vec<HeaderName> = headers
        .keys()
        .filter(|k| names.is_owned(k) || is_framing_alias(k))
        .cloned()
        .collect();
    for name in owned {
        headers.remove(&name);
    }
    if let Some(upgrade) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, upgrade);
    }
}

/// Removes hop-by-hop headers and those named in `Connection` from an upstream response.
pub(crate) fn sanitize_response(headers: &mut HeaderMap, keep_upgrade: bool) {
    let upgrade = keep_upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    remove_connection_listed(headers);
    for h in HOP_BY_HOP {
        headers.remove(*h);
    }
    if let Some(upgrade) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, upgrade);
    }
}

fn remove_connection_listed(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
}

/// Removes the session credential from what goes upstream: the gateway cookie from `Cookie`
/// (every other cookie stays, joined into one header) and every `Authorization: Bearer gw_...`
/// (other schemes stay). Backends get the identity headers, never the token.
pub(crate) fn strip_credentials(headers: &mut HeaderMap, cookie_name: &str) {
    let passed = passed_credentials(headers, cookie_name);
    headers.remove(header::AUTHORIZATION);
    headers.remove(header::COOKIE);
    for value in passed.authorization {
        headers.append(header::AUTHORIZATION, value);
    }
    if let Some(cookie) = passed.cookie {
        headers.insert(header::COOKIE, cookie);
    }
}

/// The client's credentials that may go upstream, as [`strip_credentials`] leaves them.
#[derive(Debug, Default)]
pub(crate) struct PassedCredentials {
    /// The `Authorization` values that are not a gateway Bearer token.
    pub authorization: Vec<HeaderValue>,
    /// Every cookie but the session cookie, in one `Cookie` value; `None` when none remain.
    pub cookie: Option<HeaderValue>,
}

/// What [`strip_credentials`] would leave of a request's `Authorization` and `Cookie`
/// (`/auth/verify` tells a forward-auth proxy the same, so the backend gets the same).
pub(crate) fn passed_credentials(headers: &HeaderMap, cookie_name: &str) -> PassedCredentials {
    let authorization = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter(|v| {
            !v.to_str()
                .ok()
                .and_then(bearer_token)
                .is_some_and(|t| t.starts_with(crate::sessions::TOKEN_PREFIX))
        })
        .cloned()
        .collect();
    let kept: Vec<&str> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty() && c.split('=').next().map(str::trim) != Some(cookie_name))
        .collect();
    let cookie = (!kept.is_empty())
        .then(|| HeaderValue::from_str(&kept.join("; ")).ok())
        .flatten();
    PassedCredentials {
        authorization,
        cookie,
    }
}

/// The token of an `Authorization: Bearer ...` value.
pub(crate) fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The value of cookie `name` in the request (the first one, if several).
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
}

/// What the gateway says about a request to the upstream.
#[derive(Debug)]
pub(crate) struct Forwarded<'a> {
    pub request_id: &'a str,
    pub client_ip: IpAddr,
    /// The inbound `X-Forwarded-For` chain, only when the peer is a trusted proxy.
    pub trusted_chain: Option<&'a str>,
    pub peer_ip: IpAddr,
    pub https: bool,
    pub host: Option<&'a str>,
}

/// Inserts `X-Request-Id` and the `X-Forwarded-*` headers.
pub(crate) fn inject_forwarded(headers: &mut HeaderMap, names: &Names, f: &Forwarded<'_>) {
    if let Ok(v) = HeaderValue::from_str(f.request_id) {
        headers.insert(names.request_id.clone(), v);
    }
    let chain = match f.trusted_chain {
        Some(chain) => format!("{chain}, {}", f.peer_ip),
        None => f.client_ip.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&chain) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if f.https { "https" } else { "http" }),
    );
    if let Some(host) = f.host.and_then(|h| HeaderValue::from_str(h).ok()) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
}

/// Inserts the identity headers of a validated session, and the signature when a key is given.
pub(crate) fn inject_identity(
    headers: &mut HeaderMap,
    names: &Names,
    identity: &Identity,
    signing: Option<(&[u8], &str, &str)>,
    request_id: &str,
) {
    let session_id = identity.session_id.to_string();
    let email_verified = if identity.email_verified {
        "true"
    } else {
        "false"
    };
    let pairs = [
        (&names.user_id, &*identity.user_id),
        (&names.user_email, &*identity.email),
        (&names.user_email_verified, email_verified),
        (&names.user_roles, identity.roles.header.as_str()),
        (&names.session_id, session_id.as_str()),
    ];
    for (name, value) in pairs {
        if let Ok(v) = HeaderValue::from_bytes(value.as_bytes()) {
            headers.insert(name.clone(), v);
        }
    }
    if let Some((key, method, path)) = signing {
        let claims = Claims {
            user_id: &identity.user_id,
            email: &identity.email,
            email_verified,
            roles: &identity.roles.header,
            session_id: &session_id,
            request_id,
            method,
            path,
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if let Ok(v) = HeaderValue::from_str(&sign(key, now, &claims)) {
            headers.insert(names.signature.clone(), v);
        }
    }
}

/// What the signature covers: the identity headers' values as the backend received them.
#[derive(Debug, Clone, Copy)]
pub struct Claims<'a> {
    pub user_id: &'a str,
    pub email: &'a str,
    /// `X-User-Email-Verified`: `true` or `false` (covered by `v2` only).
    pub email_verified: &'a str,
    pub roles: &'a str,
    pub session_id: &'a str,
    pub request_id: &'a str,
    pub method: &'a str,
    /// Path and query as the upstream receives them.
    pub path: &'a str,
}

/// The versions of the signed text. `v1` (the first format) lacks `X-User-Email-Verified`;
/// it is still sent beside `v2` so that verifiers written for it keep working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

fn mac(key: &[u8], version: Version, timestamp: u64, c: &Claims<'_>) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    let timestamp = timestamp.to_string();
    let fields: &[&str] = match version {
        Version::V1 => &[
            "gw-identity-v1",
            &timestamp,
            c.user_id,
            c.email,
            c.roles,
            c.session_id,
            c.request_id,
            c.method,
            c.path,
        ],
        Version::V2 => &[
            "gw-identity-v2",
            &timestamp,
            c.user_id,
            c.email,
            c.email_verified,
            c.roles,
            c.session_id,
            c.request_id,
            c.method,
            c.path,
        ],
    };
    for f in fields {
        mac.update(f.as_bytes());
        mac.update(b"\n");
    }
    mac
}

fn hex(mac: Hmac<Sha256>) -> String {
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `X-Identity-Signature` value: `t=<unix seconds>,v1=<hex>,v2=<hex>`, each an
/// HMAC-SHA256 under `key` (the bytes of `headers.signing_secret` as configured) over
/// newline-terminated fields. `v2`: `gw-identity-v2`, t, user id, email, email verified,
/// roles, session id, request id, method, path (with query). `v1`: the same without email
/// verified, starting `gw-identity-v1`.
pub(crate) fn sign(key: &[u8], timestamp: u64, claims: &Claims<'_>) -> String {
    format!(
        "t={timestamp},v1={},v2={}",
        hex(mac(key, Version::V1, timestamp, claims)),
        hex(mac(key, Version::V2, timestamp, claims))
    )
}

/// For backends: checks an `X-Identity-Signature` value against the identity headers it
/// received, with the shared key, refusing signatures older than `max_age` (or from more than
/// `max_age` in the future). Checks `v2`, which covers every claim; a value without `v2` is
/// refused (removing it must not downgrade the check). Compares in constant time.
pub fn verify_signature(
    key: &[u8],
    value: &str,
    claims: &Claims<'_>,
    now: SystemTime,
    max_age: Duration,
) -> bool {
    let mut timestamp = None;
    let mut tag = None;
    for part in value.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<u64>().ok(),
            Some(("v2", v)) => tag = decode_hex(v),
            _ => {}
        }
    }
    let (Some(timestamp), Some(tag)) = (timestamp, tag) else {
        return false;
    };
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    if now.abs_diff(timestamp) > max_age.as_secs() {
        return false;
    }
    mac(key, Version::V2, timestamp, claims)
        .verify_slice(&tag)
        .is_ok()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        let raw = config::Config::load(None, Vec::new()).unwrap();
        Names::new(&raw.headers)
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn spoofed_identity_headers_are_removed_in_every_spelling() {
        let mut h = map(&[
            ("X-User-Id", "admin"),
            ("x_user_id", "admin"),
            ("X_USER_EMAIL", "a@b.c"),
            ("x-user-roles", "admin"),
            ("x-session-id", "s"),
            ("x-user-email-verified", "true"),
            ("X_User_Email_Verified", "true"),
            ("x-identity-signature", "t=1,v1=00"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x_forwarded_host", "evil"),
            ("forwarded", "for=1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
            ("x-request-id", "mine"),
            ("x-original-uri", "/admin"),
            ("accept", "text/html"),
        ]);
        sanitize_request(&mut h, &names(), false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn underscore_spellings_of_framing_headers_are_removed() {
        let mut h = map(&[
            ("transfer_encoding", "chunked"),
            ("Content_Length", "5"),
            ("content_length", "0"),
            ("_host", "evil"),
            ("host_", "evil"),
            ("x_host", "kept"),
            ("keep_alive", "timeout=5"),
            ("proxy_connection", "close"),
            ("content_type", "text/plain"),
            ("x_custom_header", "kept"),
        ]);
        sanitize_request(&mut h, &names(), false);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            [
                "_host",
                "content_type",
                "host_",
                "x_custom_header",
                "x_host"
            ]
        );
    }

    #[test]
    fn connection_listed_headers_go_before_injection() {
        let mut h = map(&[
            ("connection", "keep-alive, X-User-Id, x-custom"),
            ("x-custom", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("x-kept", "1"),
        ]);
        sanitize_request(&mut h, &names(), false);
        assert_eq!(
            h.keys().map(HeaderName::as_str).collect::<Vec<_>>(),
            ["x-kept"]
        );
    }

    #[test]
    fn websocket_upgrade_survives_when_asked() {
        let mut h = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("x-user-id", "x"),
        ]);
        sanitize_request(&mut h, &names(), true);
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
        assert_eq!(h.get("connection").unwrap(), "upgrade");
        assert!(!h.contains_key("x-user-id"));
    }

    #[test]
    fn credentials_are_not_forwarded() {
        let mut h = map(&[
            ("cookie", "a=1; __Host-gw_session=gw_secret; b=2"),
            ("cookie", "__Host-gw_session=gw_other"),
            ("authorization", "Bearer gw_secret"),
        ]);
        strip_credentials(&mut h, "__Host-gw_session");
        assert_eq!(h.get("cookie").unwrap(), "a=1; b=2");
        assert!(!h.contains_key("authorization"));
        let mut h = map(&[("authorization", "Basic abc")]);
        strip_credentials(&mut h, "__Host-gw_session");
        assert!(
            h.contains_key("authorization"),
            "foreign credentials pass through"
        );
        // A gateway token behind another credential goes too; the other stays.
        let mut h = map(&[
            ("authorization", "Basic abc"),
            ("authorization", "bearer  gw_secret"),
            ("cookie", "__Host-gw_session=gw_secret"),
        ]);
        strip_credentials(&mut h, "__Host-gw_session");
        let left: Vec<_> = h.get_all("authorization").iter().collect();
        assert_eq!(left, ["Basic abc"]);
        assert!(!h.contains_key("cookie"), "no empty Cookie header");
    }

    #[test]
    fn passed_credentials_are_what_stripping_leaves() {
        let h = map(&[
            ("cookie", "a=1; __Host-gw_session=gw_x"),
            ("cookie", "b=2"),
            ("authorization", "Bearer gw_x"),
        ]);
        let passed = passed_credentials(&h, "__Host-gw_session");
        assert_eq!(passed.cookie.unwrap(), "a=1; b=2");
        assert!(passed.authorization.is_empty());
        let passed = passed_credentials(&map(&[]), "__Host-gw_session");
        assert!(passed.cookie.is_none() && passed.authorization.is_empty());
    }

    #[test]
    fn cookies_and_bearer_are_read() {
        let h = map(&[("cookie", "a=1; __Host-gw_session=gw_x")]);
        assert_eq!(cookie(&h, "__Host-gw_session"), Some("gw_x"));
        assert_eq!(cookie(&h, "b"), None);
        assert_eq!(bearer_token("Bearer gw_x"), Some("gw_x"));
        assert_eq!(bearer_token("bearer  gw_x "), Some("gw_x"));
        assert_eq!(bearer_token("Basic x"), None);
    }

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn claims() -> Claims<'static> {
        Claims {
            user_id: "u1",
            email: "a@example.com",
            email_verified: "true",
            roles: "admin",
            session_id: "s1",
            request_id: "r1",
            method: "GET",
            path: "/x?y=1",
        }
    }

    /// The text each version signs, spelled out as docs/identity-headers.md does, so a
    /// verifier written from the docs (and one written for v1 before v2 existed) matches.
    #[test]
    fn signatures_match_the_documented_texts() {
        let key = KEY;
        let c = Claims {
            email_verified: "false",
            roles: "",
            method: "POST",
            path: "/orders/7?full=1&b=2",
            ..claims()
        };
        let hmac_hex = |text: &str| {
            let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
            m.update(text.as_bytes());
            hex(m)
        };
        let v1 =
            "gw-identity-v1\n1700000000\nu1\na@example.com\n\ns1\nr1\nPOST\n/orders/7?full=1&b=2\n";
        let v2 = "gw-identity-v2\n1700000000\nu1\na@example.com\nfalse\n\ns1\nr1\nPOST\n/orders/7?full=1&b=2\n";
        assert_eq!(
            sign(key, 1_700_000_000, &c),
            format!("t=1700000000,v1={},v2={}", hmac_hex(v1), hmac_hex(v2))
        );
    }

    #[test]
    fn signatures_verify_and_bind_every_field() {
        let key = KEY;
        let c = claims();
        let now = SystemTime::now();
        let ts = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
        let v = sign(key, ts, &c);
        let max = Duration::from_secs(60);
        assert!(verify_signature(key, &v, &c, now, max));
        assert!(!verify_signature(
            b"another key of thirty-two bytes!",
            &v,
            &c,
            now,
            max
        ));
        assert!(!verify_signature(
            key,
            &v,
            &Claims {
                roles: "admin,root",
                ..c
            },
            now,
            max
        ));
        assert!(!verify_signature(
            key,
            &v,
            &Claims {
                path: "/other",
                ..c
            },
            now,
            max
        ));
        assert!(!verify_signature(
            key,
            &v,
            &Claims {
                email_verified: "false",
                ..c
            },
            now,
            max
        ));
        let without_v2 = v.split(",v2=").next().unwrap();
        assert!(
            !verify_signature(key, without_v2, &c, now, max),
            "dropping v2 must not downgrade the check to v1"
        );
        assert!(
            !verify_signature(key, &v, &c, now + Duration::from_secs(120), max),
            "too old"
        );
        assert!(!verify_signature(key, "t=1,v1=zz", &c, now, max));
        assert!(!verify_signature(key, "", &c, now, max));
    }
}

//! The cross-site check of state changes (CSRF, and cross-site WebSocket hijacking): a request
//! that a browser's ambient credential (the session cookie) would authenticate must come from
//! an allowed origin. Requests authenticated by `Authorization: Bearer`, which a page cannot
//! make a browser add, are not a browser's ambient credential.

use http::{HeaderMap, header};

use crate::error::HttpError;
use crate::headers;

/// Refuses a cross-site state change: an `Origin` (or, without it, a `Referer`) must match the
/// public URL. A request with neither passes only when it does not carry the session cookie
/// (an API client with a Bearer token, which a browser cannot be made to send).
///
/// # Errors
/// [`HttpError::CrossOrigin`].
pub(crate) fn check(
    headers: &HeaderMap,
    public_origin: &str,
    cookie_name: &str,
) -> Result<(), HttpError> {
    check_among(headers, &[public_origin], cookie_name)
}

/// [`check`] with several accepted origins (each spelled as an `Origin` header spells it,
/// lower-case).
///
/// # Errors
/// [`HttpError::CrossOrigin`].
pub(crate) fn check_among(
    headers: &HeaderMap,
    allowed: &[&str],
    cookie_name: &str,
) -> Result<(), HttpError> {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let referer_origin = || {
        headers
            .get(header::REFERER)
            .and_then(|v| v.to_str().ok())
            .and_then(|r| r.parse::<http::Uri>().ok())
            .and_then(|u| {
                Some(format!(
                    "{}://{}",
                    u.scheme_str()?,
                    u.authority()?.as_str().to_ascii_lowercase()
                ))
            })
    };
    let claimed = match origin {
        Some(o) => Some(o.to_ascii_lowercase()),
        None => referer_origin(),
    };
    match claimed {
        Some(o) if allowed.contains(&o.as_str()) => Ok(()),
        Some(_) => Err(HttpError::CrossOrigin),
        None if has_session_cookie(headers, cookie_name) => Err(HttpError::CrossOrigin),
        None => Ok(()),
    }
}

/// Whether the request carries the session cookie (so needs the CSRF check on state changes).
pub(crate) fn has_session_cookie(headers: &HeaderMap, cookie_name: &str) -> bool {
    headers::cookie(headers, cookie_name).is_some()
}

/// Whether the request presents `Authorization: Bearer ...`, which no page can make a browser
/// send: such a request is not a browser's ambient credential and needs no Origin check.
pub(crate) fn has_bearer(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(headers::bearer_token)
        .is_some()
}

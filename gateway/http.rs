//! What the gateway's own answers are made of and what they read, below the flows and the
//! front ends that use them: JSON bodies ([`json`]), form bodies ([`form`]), the session
//! cookie ([`cookie`]), the cross-site check of state changes ([`origin`]) and the paths of
//! the gateway's own pages ([`paths`]). Nothing here knows the shared state; callers pass the
//! settings they need.
//!
//! Never `use crate::http;` itself: the name would shadow the `http` crate in that file.
//! Import its modules (`use crate::http::json;`) or items instead.

pub(crate) mod cookie;
pub(crate) mod form;
pub(crate) mod json;
pub(crate) mod origin;
pub(crate) mod paths;

use bytes::Bytes;
use http::{HeaderMap, Uri, header};
use http_body_util::{BodyExt as _, Limited};

use crate::body::Incoming;
use crate::error::HttpError;

/// Reads a whole request body up to `max` bytes (for the gateway's own endpoints).
///
/// # Errors
/// 413 over the limit, 400 when the body cannot be read.
pub(crate) async fn read_body(body: Incoming, max: usize) -> Result<Bytes, HttpError> {
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(HttpError::PayloadTooLarge),
        Err(e) => Err(HttpError::BadRequest(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

/// A query string from pairs, each percent-encoded (so always a valid header value).
pub(crate) fn query(pairs: &[(&str, &str)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    ser.finish()
}

/// One query parameter, decoded (the first when repeated).
pub(crate) fn query_param(uri: &Uri, name: &str) -> Option<String> {
    form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Whether the client accepts HTML (a browser navigating or posting a form).
pub(crate) fn accepts_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}

#[cfg(test)]
mod tests {
    use super::*;

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

//! JSON in and out: the body of the JSON front end's requests (`application/json`, at most
//! [`MAX_JSON_BYTES`]) and its answers (`Cache-Control: no-store`).

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use serde::Deserialize;

use crate::body::{Body, Incoming, full};
use crate::error::HttpError;

/// Largest JSON body the endpoints read.
pub(crate) const MAX_JSON_BYTES: usize = 64 * 1024;

fn require_json(headers: &HeaderMap) -> Result<(), HttpError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if is_json {
        Ok(())
    } else {
        Err(HttpError::UnsupportedMediaType)
    }
}

/// Reads and parses a JSON request body.
///
/// # Errors
/// 415 for another content type, 413 over 64 KiB, 400 for JSON that does not fit `T`.
pub(crate) async fn read<T: for<'de> Deserialize<'de>>(
    req: Request<Incoming>,
) -> Result<T, HttpError> {
    require_json(req.headers())?;
    let bytes = super::read_body(req.into_body(), MAX_JSON_BYTES).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| HttpError::BadRequest(format!("invalid JSON body: {e}")))
}

/// A JSON response.
pub(crate) fn response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(full(value.to_string()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

//! `/auth/verify`, the forward-auth check for a proxy in front of the gateway (nginx
//! `auth_request`, Traefik `forwardAuth`): the route policy of the original request,
//! answered as 200 with the identity headers, or 401 / 403.

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use serde_json::json;

use crate::app::authorize::{authorize, is_browser_navigation, login_location};
use crate::app::{Conn, Ctx, Gateway};
use crate::body::{Body, Incoming};
use crate::error::HttpError;
use crate::http::json;
use crate::{headers, path, upstream};

/// `/auth/verify`: the request target (path and query) the backend must receive.
pub(crate) const UPSTREAM_URI: HeaderName = HeaderName::from_static("x-upstream-uri");
/// `/auth/verify`: the `Cookie` the backend must receive (the session cookie removed).
pub(crate) const UPSTREAM_COOKIE: HeaderName = HeaderName::from_static("x-upstream-cookie");
/// `/auth/verify`: the `Authorization` the backend must receive (never a session token).
pub(crate) const UPSTREAM_AUTHORIZATION: HeaderName =
    HeaderName::from_static("x-upstream-authorization");

/// The original request of a forward-auth check: from `X-Original-URI` (nginx) or
/// `X-Forwarded-Uri` (Traefik), with `X-Forwarded-Method` / `X-Original-Method`, honored only
/// from trusted proxies.
fn original_request(
    gw: &Gateway,
    conn: Conn,
    headers: &HeaderMap,
) -> Result<(Method, http::Uri), HttpError> {
    let untrusted = || {
        HttpError::BadRequest(
            "forward-auth needs X-Original-URI or X-Forwarded-Uri from a proxy listed in server.trusted_proxies".into(),
        )
    };
    if !gw.is_trusted(conn.peer.ip()) {
        return Err(untrusted());
    }
    let raw = ["x-original-uri", "x-forwarded-uri"]
        .iter()
        .find_map(|n| headers.get(*n))
        .ok_or_else(untrusted)?
        .to_str()
        .map_err(|_| HttpError::BadRequest("the original URI is not ASCII".into()))?;
    if !raw.starts_with('/') {
        return Err(HttpError::BadRequest(
            "the original URI must be a path starting with /".into(),
        ));
    }
    let uri: http::Uri = raw
        .parse()
        .map_err(|_| HttpError::BadRequest("the original URI is malformed".into()))?;
    let method = match ["x-forwarded-method", "x-original-method"]
        .iter()
        .find_map(|n| headers.get(*n))
    {
        Some(m) => Method::from_bytes(m.as_bytes())
            .map_err(|_| HttpError::BadRequest("malformed X-Forwarded-Method".into()))?,
        None => Method::GET,
    };
    Ok((method, uri))
}

/// `/auth/verify`: evaluates the route policy of the original request and answers 200 with
/// the identity headers, or 401 / 403. Beside the identity headers, a 200 names what the
/// backend must receive for the request to be what the gateway itself would forward:
/// [`UPSTREAM_URI`] (the request target, which the signature covers), [`UPSTREAM_COOKIE`] and
/// [`UPSTREAM_AUTHORIZATION`] (the client's credentials less the session's; absent when none
/// remain). A 401 for a browser navigation (the proxy's own rule) carries the `Location` of
/// the sign-in page that the gateway would redirect it to.
pub(crate) async fn verify(
    gw: &Gateway,
    conn: Conn,
    req: Request<Incoming>,
    ctx: &mut Ctx<'_>,
) -> Result<Response<Body>, HttpError> {
    ctx.route_name = "/auth/verify".into();
    let (method, uri) = original_request(gw, conn, req.headers())?;
    let normalized =
        path::normalize(uri.path()).map_err(|e| HttpError::BadRequest(e.to_string()))?;
    let mut resp = json::response(StatusCode::OK, &json!({"ok": true}));
    if path::has_prefix(&normalized, "/auth") {
        return Ok(resp);
    }
    let route = gw.route(&normalized)?.ok_or(HttpError::Forbidden)?;
    let identity = gw
        .authenticate_for(route, &method, req.headers(), ctx)
        .await?;
    match authorize(route, identity.as_deref()) {
        Err(HttpError::Unauthenticated) if is_browser_navigation(&method, req.headers()) => {
            let mut resp = HttpError::Unauthenticated.into_response();
            if let Ok(location) = HeaderValue::from_str(&login_location(&uri)) {
                resp.headers_mut().insert(header::LOCATION, location);
            }
            return Ok(resp);
        }
        other => other?,
    }
    let target = upstream::target(route, &normalized, uri.query());
    let headers = resp.headers_mut();
    let passed = headers::passed_credentials(req.headers(), &gw.config.sessions.cookie_name);
    if let Some(first) = passed.authorization.into_iter().next() {
        headers.insert(UPSTREAM_AUTHORIZATION, first);
    }
    if let Some(cookie) = passed.cookie {
        headers.insert(UPSTREAM_COOKIE, cookie);
    }
    if let Some(identity) = identity {
        gw.inject_identity(headers, &identity, &method, &target, &ctx.request_id);
    }
    let target = HeaderValue::from_str(&target)
        .map_err(|_| HttpError::BadRequest("invalid request target".into()))?;
    headers.insert(UPSTREAM_URI, target);
    Ok(resp)
}

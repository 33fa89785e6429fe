//! The request phases, in order: early checks → route → authenticate → authorize → dispatch
//! (`/auth/*` or upstream) → upstream request (strip, then inject identity headers) → forward
//! → response → one log line. [`handle`] turns any error into a response exactly once;
//! the phases use `?` freely.

pub mod websocket;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use http::header::AsHeaderName;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::{BodyExt, Limited};

use crate::app::authorize::{authorize, is_browser_navigation, login_location};
use crate::app::{Conn, Ctx, Gateway, Worker};
use crate::body::{Body, BoxError, Incoming, empty};
use crate::config::Route;
use crate::error::HttpError;
use crate::headers;
use crate::host::{self, Host};
use crate::sessions::Identity;
use crate::upstream::{self, RequestBodyError, UpstreamError};
use crate::{endpoints, path};

/// Serves one request: never fails, every error becomes its JSON response here.
pub async fn handle(
    worker: Arc<Worker>,
    conn: Conn,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let gw = &*worker.gw;
    let started = Instant::now();
    let req = req.map(Incoming::new);
    let method = req.method().clone();
    let mut ctx = Ctx {
        request_id: uuid::Uuid::new_v4().to_string(),
        route: "-".into(),
        user_id: None,
        client_ip: gw.client_ip(conn.peer.ip(), req.headers()),
        https: conn.https,
        host: None,
    };
    let response = match handle_inner(&worker, conn, req, &mut ctx).await {
        Ok(resp) => resp,
        Err(e) => {
            if let Some(cause) = e.internal_cause() {
                tracing::warn!(request_id = %ctx.request_id, error = %cause, "request failed");
            }
            e.into_response()
        }
    };
    let mut response = response;
    if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    if let Some(hsts) = gw.hsts.as_ref().filter(|_| conn.https) {
        response
            .headers_mut()
            .insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    worker.metrics.record(&ctx.route, status, elapsed);
    tracing::info!(
        target: "access",
        request_id = %ctx.request_id,
        method = %method,
        route = %ctx.route,
        status,
        user_id = ctx.user_id.as_deref().unwrap_or("-"),
        client_ip = %ctx.client_ip,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
    );
    Ok(response)
}

async fn handle_inner(
    worker: &Worker,
    conn: Conn,
    req: Request<Incoming>,
    ctx: &mut Ctx,
) -> Result<Response<Body>, HttpError> {
    let gw = &*worker.gw;
    // 1. Early checks.
    if req.method() == Method::CONNECT {
        // Not a forward proxy: a CONNECT has no path to route on, and would be forwarded as
        // a tunnel to wherever its target names.
        return Err(HttpError::MethodNotAllowed);
    }
    (ctx.https, ctx.host) = scheme_and_host(gw, conn, &req)?;
    let normalized =
        path::normalize(req.uri().path()).map_err(|e| HttpError::BadRequest(e.to_string()))?;
    check_body_length(req.headers(), gw.config.server.max_body_bytes)?;

    // 5a. Dispatch: the gateway's own endpoints.
    if path::has_prefix(&normalized, "/auth") {
        ctx.route = "/auth".into();
        // Boxed: the endpoints' state machines are several KiB, and a future's size is paid
        // by every request (moved into the connection) and every idle connection (the slot).
        return Box::pin(endpoints::handle(gw, conn, req, &normalized, ctx)).await;
    }

    // 2. Route.
    let route = gw.route(&normalized)?.ok_or(HttpError::NotFound)?;
    ctx.route = if route.path_prefix.is_empty() {
        "/".into()
    } else {
        route.path_prefix.clone()
    };

    // 3. Authenticate (public routes never look at credentials).
    let identity = gw
        .authenticate_for(route, req.method(), req.headers(), ctx)
        .await?;

    // 4. Authorize.
    match authorize(route, identity.as_deref()) {
        Err(HttpError::Unauthenticated) if is_browser_navigation(req.method(), req.headers()) => {
            return Err(HttpError::LoginRedirect(login_location(req.uri())));
        }
        other => other?,
    }

    // 6-8. Upstream request, forward, response.
    forward(
        worker,
        conn,
        req,
        route,
        &normalized,
        identity.as_deref(),
        ctx,
    )
    .await
}

/// Phase 1: the scheme and host the client used: the connection's scheme and the request's
/// own host (`:authority` or an absolute-form target, else `Host`), or, from a trusted proxy,
/// its `X-Forwarded-Proto` and `X-Forwarded-Host`. Checked and normalized here once
/// ([`host::normalize`]); untrusted peers' forwarded headers are not looked at (phase 6
/// removes them).
///
/// # Errors
/// 400 (RFC 9112 section 3.2, RFC 9113 section 8.3.1): more than one `Host`, an invalid one,
/// none on HTTP/1.1, neither `:authority` nor `Host` on HTTP/2 or the two naming different
/// hosts; from a trusted proxy, more than one `X-Forwarded-Proto` or one that is not `http`
/// or `https`, more than one `X-Forwarded-Host` or an invalid one.
pub fn scheme_and_host(
    gw: &Gateway,
    conn: Conn,
    req: &Request<Incoming>,
) -> Result<(bool, Option<Host>), HttpError> {
    let headers = req.headers();
    let trusted = gw.is_trusted(conn.peer.ip());
    let forwarded = |name: &'static str| {
        if trusted {
            single(headers, name, name)
        } else {
            Ok(None)
        }
    };
    let https = match forwarded("x-forwarded-proto")? {
        None => conn.https,
        Some(p) if p.eq_ignore_ascii_case("https") => true,
        Some(p) if p.eq_ignore_ascii_case("http") => false,
        Some(_) => {
            return Err(HttpError::BadRequest(
                "X-Forwarded-Proto must be http or https".into(),
            ));
        }
    };
    let check = |raw: &str, what: &str| {
        host::normalize(raw, https).map_err(|e| HttpError::BadRequest(format!("{what}: {e}")))
    };
    let named = single(headers, header::HOST, "Host")?
        .map(|raw| check(raw, "Host"))
        .transpose()?;
    let target = req
        .uri()
        .authority()
        .map(|a| check(a.as_str(), "request target"))
        .transpose()?;
    let own = match (req.version(), target, named) {
        (Version::HTTP_2, Some(a), Some(h)) if a != h => {
            return Err(HttpError::BadRequest(
                ":authority and Host name different hosts".into(),
            ));
        }
        (Version::HTTP_2, None, None) => {
            return Err(HttpError::BadRequest("no :authority and no Host".into()));
        }
        (Version::HTTP_11, _, None) => {
            return Err(HttpError::BadRequest("no Host header".into()));
        }
        // An absolute-form target names the host; Host is then only checked (RFC 9112
        // section 3.2.2).
        (_, target, named) => target.or(named),
    };
    let host = match forwarded("x-forwarded-host")? {
        Some(raw) => Some(check(raw, "X-Forwarded-Host")?),
        None => own,
    };
    Ok((https, host))
}

/// The value of a header that may appear at most once, as text.
///
/// # Errors
/// 400 when it appears more than once or is not visible ASCII.
fn single<'a>(
    headers: &'a HeaderMap,
    name: impl AsHeaderName,
    what: &str,
) -> Result<Option<&'a str>, HttpError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(HttpError::BadRequest(format!(
            "more than one {what} header"
        )));
    }
    first
        .map(|v| {
            v.to_str()
                .map_err(|_| HttpError::BadRequest(format!("{what} is not visible ASCII")))
        })
        .transpose()
}

/// Refuses a declared body over the limit before reading any of it.
fn check_body_length(headers: &HeaderMap, max: u64) -> Result<(), HttpError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > max => Err(HttpError::PayloadTooLarge),
        _ => Ok(()),
    }
}

/// The URI the upstream receives: its base, the normalized path (less the prefix when
/// `strip_prefix`), and the query exactly as received.
fn upstream_uri(route: &Route, normalized: &str, query: Option<&str>) -> Result<Uri, HttpError> {
    let target = upstream::target(route, normalized, query);
    let mut parts = route.upstream.clone().into_parts();
    parts.path_and_query = Some(
        target
            .parse()
            .map_err(|_| HttpError::BadRequest("invalid request target".into()))?,
    );
    Uri::from_parts(parts).map_err(|e| HttpError::Internal(e.to_string()))
}

async fn forward(
    worker: &Worker,
    conn: Conn,
    mut req: Request<Incoming>,
    route: &Route,
    normalized: &str,
    identity: Option<&Identity>,
    ctx: &Ctx,
) -> Result<Response<Body>, HttpError> {
    let gw = &*worker.gw;
    let websocket = websocket::is_upgrade(&req);
    let watch = if websocket {
        websocket::check_origin(gw, route, req.headers())?;
        identity.and_then(|_| websocket::Watch::new(gw, route, req.headers(), ctx))
    } else {
        None
    };
    let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
    let uri = upstream_uri(route, normalized, req.uri().query())?;
    let host = ctx.host.as_ref().map(Host::to_string);
    let peer_ip = conn.peer.ip();
    let trusted_chain = gw
        .is_trusted(peer_ip)
        .then(|| {
            req.headers()
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .flatten();

    let (mut parts, body) = req.into_parts();
    // 6. Upstream request: strip first, then inject.
    headers::sanitize_request(&mut parts.headers, &gw.names, websocket);
    headers::strip_credentials(&mut parts.headers, &gw.config.sessions.cookie_name);
    parts.headers.remove(header::HOST);
    headers::inject_forwarded(
        &mut parts.headers,
        &gw.names,
        &headers::Forwarded {
            request_id: &ctx.request_id,
            client_ip: ctx.client_ip,
            trusted_chain: trusted_chain.as_deref(),
            peer_ip,
            https: ctx.https,
            host: host.as_deref(),
        },
    );
    if let Some(identity) = identity {
        let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
        gw.inject_identity(
            &mut parts.headers,
            identity,
            &parts.method,
            path_and_query,
            &ctx.request_id,
        );
    }
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    let limited = Limited::new(
        body.map_err(RequestBodyError),
        usize::try_from(gw.config.server.max_body_bytes).unwrap_or(usize::MAX),
    );
    let upstream_req = Request::from_parts(parts, limited.boxed());

    // 7. Forward.
    let mut resp = worker
        .upstream
        .forward(upstream_req)
        .await
        .map_err(|e| forward_error(e, &ctx.route))?;

    // 8. Response.
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(websocket::tunnel(client_upgrade, upstream_upgrade, watch));
            let (mut parts, _) = resp.into_parts();
            headers::sanitize_response(&mut parts.headers, true);
            return Ok(Response::from_parts(parts, empty()));
        }
        return Err(HttpError::BadGateway(
            "upstream switched protocols unasked".into(),
        ));
    }
    let (mut parts, body) = resp.into_parts();
    headers::sanitize_response(&mut parts.headers, false);
    Ok(Response::from_parts(
        parts,
        body.map_err(BoxError::from).boxed(),
    ))
}

/// The answer to a failed forward, counted: the upstream's failures in
/// `gateway_upstream_errors_total{kind, route}`, the client's own (its body over the limit,
/// malformed or cut off) in `gateway_request_body_errors_total{kind, route}`, so that no
/// client can raise upstream alerts.
fn forward_error(e: UpstreamError, route: &str) -> HttpError {
    let route = route.to_string();
    let (client_side, kind) = match &e {
        UpstreamError::Timeout => (false, "timeout"),
        UpstreamError::Unreachable(_) => (false, "unreachable"),
        UpstreamError::BodyTooLarge => (true, "too_large"),
        UpstreamError::RequestBody(fault) => (true, fault.as_str()),
    };
    let name = if client_side {
        "gateway_request_body_errors_total"
    } else {
        "gateway_upstream_errors_total"
    };
    metrics::counter!(name, "kind" => kind, "route" => route).increment(1);
    match e {
        UpstreamError::Timeout => HttpError::GatewayTimeout,
        UpstreamError::BodyTooLarge => HttpError::PayloadTooLarge,
        UpstreamError::Unreachable(cause) => HttpError::BadGateway(cause),
        UpstreamError::RequestBody(fault) => HttpError::BadRequest(fault.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::AuthPolicy;

    fn route(prefix: &str, upstream: &str, strip: bool) -> Route {
        Route {
            path_prefix: prefix.into(),
            upstream: upstream.parse().unwrap(),
            auth: AuthPolicy::Required,
            roles: vec![],
            methods: vec![],
            strip_prefix: strip,
        }
    }

    #[test]
    fn upstream_uris() {
        let r = route("/api", "http://127.0.0.1:9000", false);
        assert_eq!(
            upstream_uri(&r, "/api/x", Some("a=1")).unwrap(),
            "http://127.0.0.1:9000/api/x?a=1"
        );
        let r = route("/api", "http://127.0.0.1:9000", true);
        assert_eq!(
            upstream_uri(&r, "/api/x", None).unwrap(),
            "http://127.0.0.1:9000/x"
        );
        assert_eq!(
            upstream_uri(&r, "/api", None).unwrap(),
            "http://127.0.0.1:9000/"
        );
        let r = route("/api", "http://127.0.0.1:9000/base/", true);
        assert_eq!(
            upstream_uri(&r, "/api/x", None).unwrap(),
            "http://127.0.0.1:9000/base/x"
        );
    }
}

//! The request phases, in order, each a function named for its phase, with the per-request
//! state carried in the context ([`Ctx`]: the normalized path, the route, the identity, the
//! scheme and host): 1 early checks → 2 route (`/auth/*` to the gateway's own endpoints) → 3
//! authenticate → 4 authorize → 5 dispatch (a WebSocket upgrade or a plain request) → 6
//! upstream request (strip, then inject identity headers) → 7 forward → 8 response → 9 one log
//! line. [`handle`] turns any error into a response exactly once; the phases use `?` freely.

pub(crate) mod websocket;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use http::header::AsHeaderName;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::{BodyExt, Limited};
use hyper::upgrade::OnUpgrade;

use crate::app::authorize::{is_browser_navigation, login_location};
use crate::app::{Conn, Ctx, Gateway, Worker, authorize};
use crate::body::{Body, BoxError, Incoming, empty};
use crate::config::Route;
use crate::error::HttpError;
use crate::headers;
use crate::host::{self, Host};
use crate::upstream::{self, RequestBodyError, UpstreamError};
use crate::{endpoints, path};

/// The request the upstream receives: its body is the client's, bounded by
/// `server.max_body_bytes`, its errors marked as the client's ([`RequestBodyError`]).
type UpstreamRequest = Request<Body>;

/// Serves one request: never fails, every error becomes its JSON response here.
pub(crate) async fn handle(
    worker: Arc<Worker>,
    conn: Conn,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let gw = &*worker.gw;
    let started = Instant::now();
    let req = req.map(Incoming::new);
    let method = req.method().clone();
    let mut ctx = Ctx::new(gw.client_ip(conn.peer.ip(), req.headers()), conn.https);
    let mut response = match phases(&worker, conn, req, &mut ctx).await {
        Ok(resp) => resp,
        Err(e) => {
            if let Some(cause) = e.internal_cause() {
                tracing::warn!(request_id = %ctx.request_id, error = %cause, "request failed");
            }
            e.into_response()
        }
    };
    log(&worker, conn, &ctx, &method, &mut response, started);
    Ok(response)
}

/// Phases 1 to 8; an error ends them, and [`handle`] answers it.
async fn phases<'g>(
    worker: &'g Worker,
    conn: Conn,
    mut req: Request<Incoming>,
    ctx: &mut Ctx<'g>,
) -> Result<Response<Body>, HttpError> {
    let gw = &*worker.gw;
    early_checks(gw, conn, &req, ctx)?;
    if path::has_prefix(&ctx.path, "/auth") {
        // Phase 2 for the gateway's own endpoints, which authenticate as each one needs.
        ctx.route_name = "/auth".into();
        // Boxed: the endpoints' state machines are several KiB, and a future's size is paid
        // by every request (moved into the connection) and every idle connection (the slot).
        return Box::pin(endpoints::handle(gw, conn, req, ctx)).await;
    }
    route(gw, ctx)?;
    authenticate(gw, &req, ctx).await?;
    authorize(&req, ctx)?;
    let upgrade = dispatch(gw, &mut req, ctx)?;
    let upstream_req = upstream_request(gw, conn, req, upgrade.is_some(), ctx)?;
    let resp = forward(worker, upstream_req, ctx).await?;
    respond(resp, upgrade)
}

/// Phase 1, early checks: not a CONNECT; the scheme and host ([`scheme_and_host`]); the path,
/// normalized once ([`path::normalize`]) into `ctx.path`, which every later phase uses; a
/// declared body within `server.max_body_bytes`.
///
/// # Errors
/// 405 for CONNECT; 400 for a bad host or an ambiguous path; 413 for a declared body over
/// the limit.
fn early_checks(
    gw: &Gateway,
    conn: Conn,
    req: &Request<Incoming>,
    ctx: &mut Ctx<'_>,
) -> Result<(), HttpError> {
    if req.method() == Method::CONNECT {
        // Not a forward proxy: a CONNECT has no path to route on, and would be forwarded as
        // a tunnel to wherever its target names.
        return Err(HttpError::MethodNotAllowed);
    }
    (ctx.https, ctx.host) = scheme_and_host(gw, conn, req)?;
    ctx.path =
        path::normalize(req.uri().path()).map_err(|e| HttpError::BadRequest(e.to_string()))?;
    check_body_length(req.headers(), gw.config.server.max_body_bytes)
}

/// Phase 2, route: the longest normalized prefix ([`Gateway::route`]) into `ctx.route`.
///
/// # Errors
/// 404 when no route matches; 400 for a path whose route is ambiguous.
fn route<'g>(gw: &'g Gateway, ctx: &mut Ctx<'g>) -> Result<(), HttpError> {
    let route = gw.route(&ctx.path)?.ok_or(HttpError::NotFound)?;
    ctx.route_name = if route.path_prefix.is_empty() {
        "/".into()
    } else {
        route.path_prefix.clone()
    };
    ctx.route = Some(route);
    Ok(())
}

/// Phase 3, authenticate: the identity into `ctx.identity`, if the route looks at credentials
/// (public routes never do).
///
/// # Errors
/// 405 for a method the route does not allow; 429 and 503 as [`Gateway::authenticate`].
async fn authenticate(
    gw: &Gateway,
    req: &Request<Incoming>,
    ctx: &mut Ctx<'_>,
) -> Result<(), HttpError> {
    let route = ctx.routed()?;
    ctx.identity = gw
        .authenticate_for(route, req.method(), req.headers(), ctx)
        .await?;
    Ok(())
}

/// Phase 4, authorize: the route's policy applied to `ctx.identity`; a browser navigation
/// without a session is sent to the sign-in page instead of a 401.
///
/// # Errors
/// 302 ([`HttpError::LoginRedirect`]), 401 or 403.
fn authorize(req: &Request<Incoming>, ctx: &Ctx<'_>) -> Result<(), HttpError> {
    match authorize::authorize(ctx.routed()?, ctx.identity.as_deref()) {
        Err(HttpError::Unauthenticated) if is_browser_navigation(req.method(), req.headers()) => {
            Err(HttpError::LoginRedirect(login_location(req.uri())))
        }
        other => other,
    }
}

/// A WebSocket upgrade on its way: the client's side of it, and for an authenticated tunnel
/// the watch that ends it when its session does.
struct Upgrade {
    client: OnUpgrade,
    watch: Option<websocket::Watch>,
}

/// Phase 5, dispatch: a WebSocket upgrade (the Origin check, the session watch, the client's
/// upgrade taken from the request) or, `None`, a plain request.
///
/// # Errors
/// 403 for a cross-site WebSocket upgrade ([`websocket::check_origin`]).
fn dispatch(
    gw: &Gateway,
    req: &mut Request<Incoming>,
    ctx: &Ctx<'_>,
) -> Result<Option<Upgrade>, HttpError> {
    if !websocket::is_upgrade(req) {
        return Ok(None);
    }
    let route = ctx.routed()?;
    websocket::check_origin(gw, route, req.headers())?;
    let watch = ctx
        .identity
        .as_ref()
        .and_then(|_| websocket::Watch::new(gw, route, req.headers(), ctx));
    Ok(Some(Upgrade {
        client: hyper::upgrade::on(req),
        watch,
    }))
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
pub(crate) fn scheme_and_host(
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
    Uri::from_parts(parts).map_err(HttpError::internal)
}

/// Phase 6, upstream request: the client's request as the upstream receives it. Headers are
/// stripped first ([`headers::sanitize_request`], the session's credentials, `Host`), then the
/// gateway's own are inserted (`X-Forwarded-*`, and the identity headers of `ctx.identity`);
/// the URI is the route's upstream with the normalized path; HTTP/1.1; the body bounded by
/// `server.max_body_bytes`.
///
/// # Errors
/// 400 for a request target the upstream URI cannot hold.
fn upstream_request(
    gw: &Gateway,
    conn: Conn,
    req: Request<Incoming>,
    websocket: bool,
    ctx: &Ctx<'_>,
) -> Result<UpstreamRequest, HttpError> {
    let uri = upstream_uri(ctx.routed()?, &ctx.path, req.uri().query())?;
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
    if let Some(identity) = &ctx.identity {
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
    Ok(Request::from_parts(parts, limited.boxed()))
}

/// Phase 7, forward: the upstream request on this worker's pool ([`upstream::Upstream`]).
///
/// # Errors
/// As [`forward_error`]: 502, 504, or the client's own 413 and 400.
async fn forward(
    worker: &Worker,
    req: UpstreamRequest,
    ctx: &Ctx<'_>,
) -> Result<Response<hyper::body::Incoming>, HttpError> {
    worker
        .upstream
        .forward(req)
        .await
        .map_err(|e| forward_error(e, &ctx.route_name))
}

/// Phase 8, response: hop-by-hop headers stripped; a `101 Switching Protocols` to an upgrade
/// the client asked for starts the tunnel ([`websocket::tunnel`]).
///
/// # Errors
/// 502 for a `101` nobody asked for.
fn respond(
    mut resp: Response<hyper::body::Incoming>,
    upgrade: Option<Upgrade>,
) -> Result<Response<Body>, HttpError> {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(upgrade) = upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(websocket::tunnel(
                upgrade.client,
                upstream_upgrade,
                upgrade.watch,
            ));
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

/// Phase 9, log: the answer's `X-Request-Id` and (on TLS) `Strict-Transport-Security`, the
/// request's metrics and one access line (target `access`).
fn log(
    worker: &Worker,
    conn: Conn,
    ctx: &Ctx<'_>,
    method: &Method,
    response: &mut Response<Body>,
    started: Instant,
) {
    if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    if let Some(hsts) = worker.gw.hsts.as_ref().filter(|_| conn.https) {
        response
            .headers_mut()
            .insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    worker.metrics.record(&ctx.route_name, status, elapsed);
    tracing::info!(
        target: "access",
        request_id = %ctx.request_id,
        method = %method,
        route = %ctx.route_name,
        status,
        user_id = ctx.user_id.as_deref().unwrap_or("-"),
        client_ip = %ctx.client_ip,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
    );
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
        UpstreamError::Unreachable(cause) => HttpError::BadGateway(Box::new(cause)),
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

//! The request phases, in order: early checks → route → authenticate → authorize → dispatch
//! (`/auth/*` or upstream) → upstream request (strip, then inject identity headers) → forward
//! → response → one log line. [`handle`] turns any error into a response exactly once;
//! the phases use `?` freely.

pub mod body;
pub mod websocket;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::AsHeaderName;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::{BodyExt, Empty, Full, Limited};
use metrics::{Counter, Histogram};

use crate::codes::Keys;
use crate::config::{AuthPolicy, Config, Route};
use crate::error::HttpError;
use crate::headers::{self, Names};
use crate::host::{self, Host};
use crate::mail::Mailer;
use crate::password::Hasher;
use crate::ratelimit::Limits;
use crate::sessions::{Identity, Sessions};
use crate::upstream::{RequestBodyError, Upstream, UpstreamError};
use crate::{endpoints, path};

pub use body::Incoming;

/// Boxed errors of streamed bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every response body the gateway produces or relays.
pub type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// A complete body.
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// Everything the request path shares, built once at start.
pub struct Gateway {
    pub config: Config,
    /// Routes, longest prefix first.
    pub routes: Vec<Route>,
    pub names: Names,
    pub sessions: Sessions,
    pub hasher: Hasher,
    /// The outbound mail queue (codes, links, notices).
    pub mailer: Mailer,
    /// Rate limits of the auth flows, per client IP and per email.
    pub limits: Limits,
    /// The HMAC keys of one-time codes and magic links.
    pub keys: Keys,
    /// `Strict-Transport-Security` for every answer on the TLS listener (`server.hsts`).
    pub hsts: Option<HeaderValue>,
}

impl Gateway {
    /// Builds the shared state from a validated configuration, the session store and a
    /// started mailer.
    pub fn new(config: Config, sessions: Sessions, mailer: Mailer) -> Self {
        let mut routes = config.routes.clone();
        routes.sort_by_key(|r| std::cmp::Reverse(r.path_prefix.len()));
        Gateway {
            mailer,
            limits: Limits::for_fleet(&config.rate_limits, sessions.pool().clone()),
            keys: Keys::new(&config.auth),
            names: Names::new(&config.headers),
            hsts: config
                .server
                .hsts
                .as_ref()
                .and_then(|h| HeaderValue::from_str(&h.header_value()).ok()),
            hasher: Hasher::new(
                config.auth.bcrypt_cost,
                config.auth.bcrypt_concurrency,
                config.auth.bcrypt_queue,
            ),
            routes,
            sessions,
            config,
        }
    }

    /// The route for a normalized path: the longest matching prefix ([`path::route`]).
    ///
    /// # Errors
    /// 400 when the path's extension makes its route ambiguous (`/admin.json` on the root
    /// route while `/admin` is another).
    pub fn route(&self, normalized: &str) -> Result<Option<&Route>, HttpError> {
        path::route(normalized, &self.routes, |r| r.path_prefix.as_str())
            .map_err(|e| HttpError::BadRequest(e.to_string()))
    }

    /// Phase 3 for a matched route: the identity, if the route looks at credentials (public
    /// routes never do). Also refuses a method the route does not allow.
    ///
    /// # Errors
    /// 405 for a method outside `route.methods`; 503 when the session store cannot answer.
    pub async fn authenticate_for(
        &self,
        route: &Route,
        method: &Method,
        headers: &HeaderMap,
        ctx: &mut Ctx,
    ) -> Result<Option<Arc<Identity>>, HttpError> {
        if !route.methods.is_empty() && !route.methods.contains(method) {
            return Err(HttpError::MethodNotAllowed);
        }
        let identity = match route.auth {
            AuthPolicy::Public => None,
            AuthPolicy::Optional | AuthPolicy::Required => {
                self.authenticate(headers, ctx.client_ip).await?
            }
        };
        ctx.user_id = identity.as_ref().map(|i| i.user_id.to_string());
        Ok(identity)
    }

    /// Phase 6, second half: inserts the identity headers (signed when `headers.sign` is on)
    /// for a request `method path_and_query` as the upstream will see it.
    pub fn inject_identity(
        &self,
        headers: &mut HeaderMap,
        identity: &Identity,
        method: &Method,
        path_and_query: &str,
        request_id: &str,
    ) {
        let signing = self
            .config
            .headers
            .signing_secret
            .as_deref()
            .map(|key| (key, method.as_str(), path_and_query));
        headers::inject_identity(headers, &self.names, identity, signing, request_id);
    }

    /// Whether `ip` is a configured trusted proxy.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.config
            .server
            .trusted_proxies
            .iter()
            .any(|n| n.contains(ip))
    }

    /// The client address: the peer, or, when the peer is a trusted proxy, the right-most
    /// untrusted address of `X-Forwarded-For`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let chain: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse().ok())
            .collect();
        chain
            .into_iter()
            .rev()
            .find(|ip| !self.is_trusted(*ip))
            .unwrap_or(peer)
    }

    /// Finds and checks the session presented by a request from `client_ip` (as
    /// [`Gateway::client_ip`] determined it): `Authorization: Bearer gw_...` first, else the
    /// session cookie. A cache miss spends the address's session-miss budget.
    ///
    /// # Errors
    /// 503 when the session store cannot answer a cache miss; 429 when the address's
    /// session-miss budget (`rate_limits.session_miss_per_ip`) is spent.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        client_ip: IpAddr,
    ) -> Result<Option<Arc<Identity>>, HttpError> {
        let Some(token) = presented_token(headers, &self.config.sessions.cookie_name) else {
            return Ok(None);
        };
        let budget = || self.limits.spend_session_miss(client_ip);
        Ok(self.sessions.validate(token, &budget).await?)
    }
}

/// The token a request presents, and how.
pub fn presented_token<'a>(headers: &'a HeaderMap, cookie_name: &str) -> Option<&'a str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(headers::bearer_token)
        .or_else(|| headers::cookie(headers, cookie_name))
}

/// Whether the request carries the session cookie (so needs the CSRF check on state changes).
pub fn has_session_cookie(headers: &HeaderMap, cookie_name: &str) -> bool {
    headers::cookie(headers, cookie_name).is_some()
}

/// What one worker thread keeps to itself: the shared gateway, and its own pool of upstream
/// connections, so a request, its client connection and the upstream connection it uses all
/// live on one thread (no cross-thread wake-ups on the request path).
pub struct Worker {
    pub gw: Arc<Gateway>,
    pub upstream: Upstream,
    metrics: RequestMetrics,
}

impl Worker {
    pub fn new(gw: Arc<Gateway>) -> Self {
        let upstream = Upstream::new(&gw.config.upstream);
        Worker {
            gw,
            upstream,
            metrics: RequestMetrics::default(),
        }
    }
}

/// The request counter and latency histogram of each (route, status), registered once per
/// worker and reused, so the metrics registry (label allocation, hashing, its locks shared
/// by all threads) is not on the request path. Bounded: routes come from the configuration
/// and statuses are three digits.
#[derive(Default)]
struct RequestMetrics(Mutex<Vec<RouteStatus>>);

/// The metric handles of one (route, status).
struct RouteStatus {
    route: String,
    status: u16,
    count: Counter,
    latency: Histogram,
}

impl RequestMetrics {
    fn record(&self, route: &str, status: u16, elapsed: Duration) {
        let mut seen = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // A few dozen entries at most: a scan is cheaper than hashing the route.
        let index = match seen
            .iter()
            .position(|m| m.status == status && m.route == route)
        {
            Some(i) => i,
            None => {
                let labels = [("route", route.to_string()), ("status", status.to_string())];
                seen.push(RouteStatus {
                    route: route.to_string(),
                    status,
                    count: metrics::counter!("gateway_requests_total", &labels),
                    latency: metrics::histogram!("gateway_request_duration_seconds", &labels),
                });
                seen.len() - 1
            }
        };
        seen[index].count.increment(1);
        seen[index].latency.record(elapsed.as_secs_f64());
    }
}

/// The connection a request came in on.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub peer: SocketAddr,
    pub https: bool,
}

/// What the log line and the metrics need about a request, and what its answer depends on:
/// the client's address, scheme and host as the gateway believes them.
#[derive(Debug)]
pub struct Ctx {
    pub request_id: String,
    pub route: String,
    pub user_id: Option<String>,
    pub client_ip: IpAddr,
    /// Whether the client used https: the connection's scheme, or a trusted proxy's
    /// `X-Forwarded-Proto` (set by phase 1, [`scheme_and_host`]).
    pub https: bool,
    /// The host the client asked for, normalized: the request's own, or a trusted proxy's
    /// `X-Forwarded-Host`; `None` only for an HTTP/1.0 request without one (phase 1).
    pub host: Option<Host>,
}

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

/// Applies a route's policy to the identity (or its absence).
///
/// # Errors
/// [`HttpError::Unauthenticated`] (401) and [`HttpError::Forbidden`] (403).
pub fn authorize(route: &Route, identity: Option<&Identity>) -> Result<(), HttpError> {
    match (route.auth, identity) {
        (AuthPolicy::Public | AuthPolicy::Optional, _) => Ok(()),
        (AuthPolicy::Required, None) => Err(HttpError::Unauthenticated),
        (AuthPolicy::Required, Some(id)) if !id.has_any_role(&route.roles) => {
            Err(HttpError::Forbidden)
        }
        (AuthPolicy::Required, Some(_)) => Ok(()),
    }
}

/// A top-level browser navigation: GET or HEAD that accepts HTML.
pub fn is_browser_navigation(method: &Method, headers: &HeaderMap) -> bool {
    (method == Method::GET || method == Method::HEAD)
        && headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("text/html"))
}

/// `/auth/login?return_to=<path and query>`: always a same-origin relative path.
pub fn login_location(uri: &Uri) -> String {
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let encoded = percent_encoding::utf8_percent_encode(target, percent_encoding::NON_ALPHANUMERIC);
    format!("/auth/login?return_to={encoded}")
}

/// The URI the upstream receives: its base, the normalized path (less the prefix when
/// `strip_prefix`), and the query exactly as received.
fn upstream_uri(route: &Route, normalized: &str, query: Option<&str>) -> Result<Uri, HttpError> {
    let target = upstream_target(route, normalized, query);
    let mut parts = route.upstream.clone().into_parts();
    parts.path_and_query = Some(
        target
            .parse()
            .map_err(|_| HttpError::BadRequest("invalid request target".into()))?,
    );
    Uri::from_parts(parts).map_err(|e| HttpError::Internal(e.to_string()))
}

/// The request target (path and query) the upstream of `route` receives for a request whose
/// normalized path is `normalized`: the upstream's base path, the normalized path (less the
/// prefix when `strip_prefix`), and the query exactly as received.
pub fn upstream_target(route: &Route, normalized: &str, query: Option<&str>) -> String {
    let mut path = normalized;
    if route.strip_prefix {
        path = &normalized[route.path_prefix.len()..];
    }
    let base = route.upstream.path().trim_end_matches('/');
    let path = if path.is_empty() { "/" } else { path };
    let mut target =
        String::with_capacity(base.len() + path.len() + query.map_or(0, |q| q.len() + 1));
    target.push_str(base);
    if !path.starts_with('/') {
        target.push('/');
    }
    target.push_str(path);
    if let Some(q) = query {
        target.push('?');
        target.push_str(q);
    }
    target
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

/// Reads a whole request body up to `max` bytes (for the gateway's own JSON endpoints).
///
/// # Errors
/// 413 over the limit, 400 when the body cannot be read.
pub async fn read_body(body: Incoming, max: usize) -> Result<Bytes, HttpError> {
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(HttpError::PayloadTooLarge),
        Err(e) => Err(HttpError::BadRequest(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn login_location_is_relative_and_encoded() {
        let uri: Uri = "/a/b?x=1&y=//evil".parse().unwrap();
        let loc = login_location(&uri);
        assert!(
            loc.starts_with("/auth/login?return_to=%2Fa%2Fb%3Fx%3D1"),
            "{loc}"
        );
        assert!(!loc.contains("//"));
    }
}

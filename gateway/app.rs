//! The shared request state, below the proxy and the endpoints that both use it: the
//! [`Gateway`] built once at start, each worker thread's [`Worker`], the connection a request
//! came in on ([`Conn`]) and the per-request context ([`Ctx`]); and the two phases every
//! request that looks at credentials goes through, [`authenticate`] and [`authorize`].

pub(crate) mod authenticate;
pub(crate) mod authorize;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method};
use metrics::{Counter, Histogram};

use crate::codes::Keys;
use crate::config::{Config, Route};
use crate::error::HttpError;
use crate::headers::{self, Names};
use crate::host::Host;
use crate::http::{cookie, origin};
use crate::mail::Mailer;
use crate::password::Hasher;
use crate::path;
use crate::ratelimit::Limits;
use crate::sessions::{Identity, NewSession, Sessions};
use crate::upstream::Upstream;

/// Everything the request path shares, built once at start.
pub struct Gateway {
    pub config: Config,
    /// Routes, longest prefix first.
    pub(crate) routes: Vec<Route>,
    pub names: Names,
    pub sessions: Sessions,
    pub hasher: Hasher,
    /// The outbound mail queue (codes, links, notices).
    pub(crate) mailer: Mailer,
    /// Rate limits of the auth flows, per client IP and per email.
    pub(crate) limits: Limits,
    /// The HMAC keys of one-time codes and magic links.
    pub(crate) keys: Keys,
    /// `Strict-Transport-Security` for every answer on the TLS listener (`server.hsts`).
    pub(crate) hsts: Option<HeaderValue>,
}

impl Gateway {
    /// Builds the shared state from a validated configuration, the session store and a
    /// started mailer.
    pub(crate) fn new(config: Config, sessions: Sessions, mailer: Mailer) -> Self {
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
    pub(crate) fn route(&self, normalized: &str) -> Result<Option<&Route>, HttpError> {
        path::route(normalized, &self.routes, |r| r.path_prefix.as_str())
            .map_err(|e| HttpError::BadRequest(e.to_string()))
    }

    /// Phase 6, second half: inserts the identity headers (signed when `headers.sign` is on)
    /// for a request `method path_and_query` as the upstream will see it.
    pub(crate) fn inject_identity(
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
    pub(crate) fn is_trusted(&self, ip: IpAddr) -> bool {
        self.config
            .server
            .trusted_proxies
            .iter()
            .any(|n| n.contains(ip))
    }

    /// The client address: the peer, or, when the peer is a trusted proxy, the right-most
    /// untrusted address of `X-Forwarded-For`.
    pub(crate) fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
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

    /// The Origin check ([`origin::check`]) against this gateway's `server.public_url` and
    /// session cookie name.
    ///
    /// # Errors
    /// [`HttpError::CrossOrigin`].
    pub(crate) fn require_same_origin(&self, headers: &HeaderMap) -> Result<(), HttpError> {
        origin::check(
            headers,
            &self.config.server.public_url.origin,
            &self.config.sessions.cookie_name,
        )
    }

    /// Refuses a cross-site state change made with the session cookie; a request
    /// authenticated by `Authorization: Bearer` is not a browser's ambient credential and
    /// passes.
    ///
    /// # Errors
    /// [`HttpError::CrossOrigin`] (403).
    pub(crate) fn check_csrf(&self, headers: &HeaderMap) -> Result<(), HttpError> {
        if origin::has_bearer(headers) {
            return Ok(());
        }
        self.require_same_origin(headers)
    }

    /// Whether the session cookie gets `Secure`: when `server.public_url` is https or the
    /// client used https (as the connection or a trusted proxy's `X-Forwarded-Proto` says),
    /// so a session cookie never travels over plain HTTP where https is used.
    fn cookie_secure(&self, ctx: &Ctx<'_>) -> bool {
        self.config.server.public_url.https || ctx.https
    }

    /// The `Set-Cookie` value carrying a new session.
    pub(crate) fn session_cookie(&self, ctx: &Ctx<'_>, session: &NewSession) -> HeaderValue {
        let name = &self.config.sessions.cookie_name;
        cookie::session(name, self.cookie_secure(ctx), session)
    }

    /// The `Set-Cookie` value that removes the session cookie.
    pub(crate) fn clear_cookie(&self, ctx: &Ctx<'_>) -> HeaderValue {
        cookie::clear(&self.config.sessions.cookie_name, self.cookie_secure(ctx))
    }
}

/// What one worker thread keeps to itself: the shared gateway, and its own pool of upstream
/// connections, so a request, its client connection and the upstream connection it uses all
/// live on one thread (no cross-thread wake-ups on the request path).
pub(crate) struct Worker {
    pub gw: Arc<Gateway>,
    pub upstream: Upstream,
    pub metrics: RequestMetrics,
}

impl Worker {
    pub(crate) fn new(gw: Arc<Gateway>) -> Self {
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
pub(crate) struct RequestMetrics(Mutex<Vec<RouteStatus>>);

/// The metric handles of one (route, status).
struct RouteStatus {
    route: String,
    status: u16,
    count: Counter,
    latency: Histogram,
}

impl RequestMetrics {
    /// Counts one answer of `status` on `route` that took `elapsed`.
    pub(crate) fn record(&self, route: &str, status: u16, elapsed: Duration) {
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
pub(crate) struct Conn {
    pub peer: SocketAddr,
    pub https: bool,
}

/// The per-request context the phases carry: what the log line and the metrics need about a
/// request, what its answer depends on (the client's address, scheme and host as the gateway
/// believes them), and what each phase found for the next: the normalized path (phase 1),
/// the route (phase 2) and the identity (phase 3).
#[derive(Debug)]
pub(crate) struct Ctx<'g> {
    pub request_id: String,
    /// The route as the access log and the metrics name it: `-` until phase 2, the route's
    /// prefix (`/` for the root route), or `/auth` (or one of its endpoints) for the gateway's
    /// own.
    pub route_name: String,
    pub user_id: Option<String>,
    pub client_ip: IpAddr,
    /// Whether the client used https: the connection's scheme, or a trusted proxy's
    /// `X-Forwarded-Proto` (set by phase 1).
    pub https: bool,
    /// The host the client asked for, normalized: the request's own, or a trusted proxy's
    /// `X-Forwarded-Host`; `None` only for an HTTP/1.0 request without one (phase 1).
    pub host: Option<Host>,
    /// The request's path, normalized once ([`path::normalize`], phase 1): routing and the
    /// upstream's request target use only this.
    pub path: String,
    /// The route the path matched (phase 2); `None` before, and for the gateway's own
    /// endpoints.
    pub route: Option<&'g Route>,
    /// The session the request presented, when its route looks at credentials (phase 3).
    pub identity: Option<Arc<Identity>>,
}

impl<'g> Ctx<'g> {
    /// The context of a new request from `client_ip`, over https or not, with a fresh
    /// request id.
    pub(crate) fn new(client_ip: IpAddr, https: bool) -> Self {
        Ctx {
            request_id: uuid::Uuid::new_v4().to_string(),
            route_name: "-".into(),
            user_id: None,
            client_ip,
            https,
            host: None,
            path: String::new(),
            route: None,
            identity: None,
        }
    }

    /// The route phase 2 matched.
    ///
    /// # Errors
    /// 500 before phase 2 matched one: a phase out of order is a bug.
    pub(crate) fn routed(&self) -> Result<&'g Route, HttpError> {
        self.route
            .ok_or_else(|| HttpError::internal("no route matched yet"))
    }
}

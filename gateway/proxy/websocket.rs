//! WebSocket upgrades through the proxy: recognizing them, the `Origin` check that stops
//! cross-site WebSocket hijacking, and the tunnel that copies bytes both ways once both sides
//! switched protocols, for as long as the session that opened it stays valid.

use std::net::IpAddr;
use std::time::Duration;

use http::{HeaderMap, Request, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::app::authenticate::presented_token;
use crate::app::authorize::authorize;
use crate::app::{Ctx, Gateway};
use crate::body::Incoming;
use crate::config::{AuthPolicy, Route};
use crate::error::HttpError;
use crate::http::origin;
use crate::ratelimit::Limits;
use crate::sessions::Sessions;

/// How long closing a tunnel may wait for each side to take its shutdown.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// Whether `req` asks for a WebSocket: HTTP/1.1 with `Connection: upgrade` and
/// `Upgrade: websocket`.
pub(crate) fn is_upgrade(req: &Request<Incoming>) -> bool {
    let h = req.headers();
    let connection_upgrade = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let websocket = h
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    req.version() == http::Version::HTTP_11 && connection_upgrade && websocket
}

/// Refuses a WebSocket upgrade that the session cookie would authenticate unless its `Origin`
/// is `server.public_url` or one of `server.websocket_origins`. Browsers send cookies with a
/// WebSocket handshake from any page they allow to (same-site pages, older browsers) and
/// always send `Origin` with it; no CORS preflight protects it. Upgrades that present a
/// Bearer token (which a page cannot make a browser add) and upgrades on public routes (which
/// never see credentials) are not checked.
///
/// # Errors
/// [`HttpError::CrossOrigin`] (403): another origin, or none, with the session cookie.
pub(crate) fn check_origin(
    gw: &Gateway,
    route: &Route,
    headers: &HeaderMap,
) -> Result<(), HttpError> {
    if route.auth == AuthPolicy::Public || origin::has_bearer(headers) {
        return Ok(());
    }
    let server = &gw.config.server;
    let allowed: Vec<&str> = std::iter::once(server.public_url.origin.as_str())
        .chain(server.websocket_origins.iter().map(String::as_str))
        .collect();
    origin::check_among(headers, &allowed, &gw.config.sessions.cookie_name)
}

/// The session behind an authenticated tunnel, re-validated every `sessions.tunnel_recheck`
/// through [`Sessions::validate`] (a cache hit costs no database I/O; after a revocation the
/// poller invalidated, one query, from the session-miss budget of the client that opened the
/// tunnel).
pub(crate) struct Watch {
    sessions: Sessions,
    limits: Limits,
    client_ip: IpAddr,
    token: String,
    route: Route,
    every: Duration,
    /// How long database errors may leave the session unconfirmed: `sessions.cache_ttl`, the
    /// bound every cached session has.
    patience: Duration,
    request_id: String,
}

impl Watch {
    /// The watch for a tunnel opened by a request that presented a session on `route`.
    /// `None` when the request presented none (such a tunnel carries no identity).
    pub(crate) fn new(
        gw: &Gateway,
        route: &Route,
        headers: &HeaderMap,
        ctx: &Ctx<'_>,
    ) -> Option<Self> {
        let token = presented_token(headers, &gw.config.sessions.cookie_name)?;
        Some(Watch {
            sessions: gw.sessions.clone(),
            limits: gw.limits.clone(),
            client_ip: ctx.client_ip,
            token: token.to_string(),
            route: route.clone(),
            every: gw.config.sessions.tunnel_recheck,
            patience: gw.config.sessions.cache_ttl,
            request_id: ctx.request_id.clone(),
        })
    }

    /// Completes, with the reason, once the tunnel must close.
    async fn ended(self) -> &'static str {
        let mut tick = tokio::time::interval_at(Instant::now() + self.every, self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut confirmed = Instant::now();
        let budget = || self.limits.spend_session_miss(self.client_ip);
        loop {
            tick.tick().await;
            let check = match self.sessions.validate(&self.token, &budget).await {
                Ok(Some(identity)) if authorize(&self.route, Some(&identity)).is_ok() => {
                    Check::Valid
                }
                Ok(Some(_)) => Check::NotAllowed,
                Ok(None) => Check::NoSession,
                Err(e) => {
                    tracing::debug!(request_id = %self.request_id, error = %e, "tunnel session check failed");
                    Check::Unavailable
                }
            };
            if check == Check::Valid {
                confirmed = Instant::now();
            }
            if let Some(reason) = check.close_reason(confirmed.elapsed(), self.patience) {
                tracing::info!(request_id = %self.request_id, reason, "closing a websocket tunnel");
                return reason;
            }
        }
    }
}

/// What one re-validation of a tunnel's session found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Valid, and still allowed on the route.
    Valid,
    /// Valid, but no longer has a role the route needs.
    NotAllowed,
    /// Revoked, expired, idle too long, user disabled or deleted.
    NoSession,
    /// The session store could not answer.
    Unavailable,
}

impl Check {
    /// Why the tunnel must close now, if it must, after its session went `unconfirmed` for
    /// this long: a definite "no" closes at once; errors only once `patience` has passed.
    fn close_reason(self, unconfirmed: Duration, patience: Duration) -> Option<&'static str> {
        match self {
            Check::Valid => None,
            Check::NotAllowed => Some("forbidden"),
            Check::NoSession => Some("session_ended"),
            Check::Unavailable if unconfirmed > patience => Some("unconfirmed"),
            Check::Unavailable => None,
        }
    }
}

/// Copies bytes between the upgraded client and upstream connections until either side
/// closes or, for an authenticated tunnel, its [`Watch`] ends; then shuts both down.
pub(crate) async fn tunnel(client: OnUpgrade, upstream: OnUpgrade, watch: Option<Watch>) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "websocket upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    metrics::gauge!("gateway_websocket_tunnels").increment(1.0);
    let copy = async {
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(error = %e, "websocket tunnel closed");
        }
    };
    let ended = match watch {
        None => {
            copy.await;
            None
        }
        Some(watch) => tokio::select! {
            () = copy => None,
            reason = watch.ended() => Some(reason),
        },
    };
    if let Some(reason) = ended {
        metrics::counter!("gateway_websocket_tunnels_closed_total", "reason" => reason)
            .increment(1);
        let _ = tokio::time::timeout(SHUTDOWN_WAIT, client.shutdown()).await;
        let _ = tokio::time::timeout(SHUTDOWN_WAIT, upstream.shutdown()).await;
    }
    metrics::gauge!("gateway_websocket_tunnels").decrement(1.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATIENCE: Duration = Duration::from_secs(60);

    #[test]
    fn a_definite_no_closes_at_once() {
        let fresh = Duration::ZERO;
        assert_eq!(Check::Valid.close_reason(fresh, PATIENCE), None);
        assert_eq!(
            Check::NoSession.close_reason(fresh, PATIENCE),
            Some("session_ended")
        );
        assert_eq!(
            Check::NotAllowed.close_reason(fresh, PATIENCE),
            Some("forbidden")
        );
    }

    #[test]
    fn database_errors_close_only_after_the_cache_ttl() {
        let s = Duration::from_secs;
        assert_eq!(Check::Unavailable.close_reason(s(1), PATIENCE), None);
        assert_eq!(Check::Unavailable.close_reason(s(60), PATIENCE), None);
        assert_eq!(
            Check::Unavailable.close_reason(s(61), PATIENCE),
            Some("unconfirmed")
        );
    }
}

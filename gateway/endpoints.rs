//! The gateway's own endpoints under `/auth`: a router over two front ends that share the
//! flows of [`crate::auth`]: [`api`] (JSON in and out) and [`forms`] (the browser pages and
//! their form posts), plus the forward-auth check [`verify`]. Errors are [`HttpError`]s,
//! which the proxy answers.

pub(crate) mod api;
pub(crate) mod forms;
pub(crate) mod verify;

use http::{Method, Request, Response};

use crate::app::{Conn, Ctx, Gateway};
use crate::body::{Body, Incoming};
use crate::error::HttpError;
use crate::http::form::is_form;
use crate::http::{accepts_html, paths};

/// Routes a request under `/auth` to its endpoint: a form post to [`forms`], JSON to
/// [`api`].
///
/// # Errors
/// Whatever the endpoint refuses with; 404 for an unknown endpoint, 405 for a wrong method.
pub(crate) async fn handle(
    gw: &Gateway,
    conn: Conn,
    req: Request<Incoming>,
    ctx: &mut Ctx<'_>,
) -> Result<Response<Body>, HttpError> {
    let path = std::mem::take(&mut ctx.path);
    let endpoint = path.trim_end_matches('/');
    let form = is_form(req.headers());
    match (req.method().clone(), endpoint) {
        (
            Method::GET,
            "/auth"
            | "/auth/login"
            | "/auth/register"
            | "/auth/register/confirm"
            | "/auth/otp"
            | "/auth/magic"
            | "/auth/reset"
            | "/auth/reset/confirm"
            | "/auth/logout",
        ) => forms::page(gw, &req, endpoint, ctx).await,
        (Method::POST, "/auth/login") if form => Ok(forms::login(gw, req, ctx).await),
        (Method::POST, "/auth/register") if form => Ok(forms::register(gw, req, ctx).await),
        (Method::POST, "/auth/otp/request") if form => Ok(forms::otp_request(gw, req, ctx).await),
        (Method::POST, "/auth/magic/request") if form => {
            Ok(forms::magic_request(gw, req, ctx).await)
        }
        (Method::POST, "/auth/otp/verify") if form => Ok(forms::otp_verify(gw, req, ctx).await),
        (Method::POST, "/auth/password/reset") if form => {
            Ok(forms::password_reset(gw, req, ctx).await)
        }
        (Method::POST, "/auth/logout") if form => forms::logout(gw, req, ctx).await,
        (Method::POST, "/auth/login") => api::login(gw, req, ctx).await,
        (Method::POST, "/auth/logout") => api::logout(gw, req, ctx).await,
        (Method::GET, "/auth/session") => api::session(gw, req, ctx).await,
        (_, "/auth/verify") => verify::verify(gw, conn, req, ctx).await,
        (Method::POST, "/auth/register") => api::register(gw, req, ctx).await,
        (Method::POST, "/auth/otp/request") => api::otp_request(gw, req, ctx).await,
        (Method::POST, "/auth/otp/verify") => api::otp_verify(gw, req, ctx).await,
        (Method::POST, "/auth/magic/request") => api::magic_request(gw, req, ctx).await,
        (method, p) if magic_token(p).is_some() => {
            let token = magic_token(p).unwrap_or_default().to_string();
            ctx.route_name = "/auth/magic".into();
            match method {
                Method::GET | Method::HEAD => forms::magic_page(gw, &token),
                Method::POST if form || accepts_html(req.headers()) => {
                    Ok(forms::magic_consume(gw, req, ctx, &token).await)
                }
                Method::POST => api::magic_consume(gw, req, ctx, &token).await,
                _ => Err(HttpError::MethodNotAllowed),
            }
        }
        (Method::POST, "/auth/password/reset") => api::password_reset(gw, req, ctx).await,
        (Method::POST, "/auth/password/change") => api::password_change(gw, req, ctx).await,
        (Method::GET, "/auth/sessions") => api::list_sessions(gw, req, ctx).await,
        (Method::POST, "/auth/sessions/revoke-others") => api::revoke_others(gw, req, ctx).await,
        (_, p) if session_id_segment(p).is_some() => {
            let id = session_id_segment(p).unwrap_or_default().to_string();
            ctx.route_name = "/auth/sessions".into();
            api::revoke_session(gw, req, ctx, &id).await
        }
        (
            _,
            "/auth/login"
            | "/auth/logout"
            | "/auth/session"
            | "/auth/register"
            | "/auth/otp/request"
            | "/auth/otp/verify"
            | "/auth/magic/request"
            | "/auth/password/reset"
            | "/auth/password/change"
            | "/auth/sessions"
            | "/auth/sessions/revoke-others",
        ) => Err(HttpError::MethodNotAllowed),
        _ => Err(HttpError::NotFound),
    }
}

/// The token of `/auth/magic/{token}` (one path segment), if `endpoint` is such a path.
fn magic_token(endpoint: &str) -> Option<&str> {
    endpoint
        .strip_prefix(paths::MAGIC_LINK_PREFIX)
        .filter(|t| !t.is_empty() && !t.contains('/') && *t != "request")
}

/// The `{id}` of `/auth/sessions/{id}` (one segment, not `revoke-others`).
fn session_id_segment(endpoint: &str) -> Option<&str> {
    endpoint
        .strip_prefix("/auth/sessions/")
        .filter(|s| !s.is_empty() && !s.contains('/') && *s != "revoke-others")
}

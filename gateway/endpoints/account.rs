//! What a signed-in user does to their own account: change the password (which revokes every
//! other session), list their sessions, revoke one, revoke all the others. Authenticated by
//! the session cookie or a Bearer token; a cookie-authenticated change must pass the `Origin`
//! check (CSRF), a Bearer one need not (browsers cannot be made to send the header).

use http::{HeaderMap, Request, Response, StatusCode, header};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::flows::check_new_password;
use crate::app::{Ctx, Gateway};
use crate::body::{Body, Incoming};
use crate::error::HttpError;
use crate::http::json::{read as read_json, response as json_response};
use crate::ratelimit::Action;
use crate::sessions::{self, Identity};
use crate::users;

/// The identity of a state-changing request: the CSRF check first (403), then authenticated
/// (401).
async fn changer(
    gw: &Gateway,
    headers: &HeaderMap,
    ctx: &mut Ctx,
) -> Result<std::sync::Arc<Identity>, HttpError> {
    gw.check_csrf(headers)?;
    gw.require_identity(headers, ctx).await
}

/// `POST /auth/password/change`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeInput {
    pub current_password: String,
    pub new_password: String,
}

/// Changes the password of the signed-in user and revokes every other session of theirs;
/// the current one stays. Returns how many sessions were revoked.
///
/// # Errors
/// 429 (login rate limits, failed-password budget), 422 weak password, 401
/// `invalid_credentials` for a wrong current password, 503.
pub async fn do_password_change(
    gw: &Gateway,
    ctx: &mut Ctx,
    identity: &Identity,
    input: &ChangeInput,
) -> Result<u64, HttpError> {
    gw.limits.check_ip(Action::Login, ctx.client_ip).await?;
    check_new_password(&input.new_password, &identity.email).await?;
    gw.limits
        .check_email(Action::Login, &identity.email)
        .await?;
    let (user, _) = super::verify_password(gw, &identity.email, &input.current_password).await?;
    if *user.id != *identity.user_id {
        return Err(HttpError::InvalidCredentials);
    }
    let hash = gw.hasher.hash(&input.new_password).await?;
    let end = users::EndSessions::AllBut(identity.session_id, "password_change");
    let (_, revoked) =
        users::set_password_hash(gw.sessions.pool(), &user.email, &hash, end).await?;
    gw.sessions.invalidate(&revoked).await;
    Ok(revoked.len() as u64)
}

/// `POST /auth/password/change` {current_password, new_password} → 200 with the number of
/// other sessions revoked.
pub async fn password_change(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx,
) -> Result<Response<Body>, HttpError> {
    let identity = changer(gw, req.headers(), ctx).await?;
    let input: ChangeInput = read_json(req).await?;
    let revoked = do_password_change(gw, ctx, &identity, &input).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"status": "password_changed", "revoked_sessions": revoked}),
    ))
}

/// `GET /auth/sessions`: the live sessions of the signed-in user, newest first, each with
/// `ip_address`, `device_label`, `user_agent`, `created_at`, `last_seen_at`, `expires_at`,
/// and `current: true` on the one making the request.
///
/// # Errors
/// 401 without a session, 503.
pub async fn list_sessions(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx,
) -> Result<Response<Body>, HttpError> {
    let identity = gw.require_identity(req.headers(), ctx).await?;
    let list = sessions::list(gw.sessions.pool(), &identity.user_id).await?;
    let rows: Vec<serde_json::Value> = list
        .into_iter()
        .map(|s| {
            let current = s.id == identity.session_id;
            let mut row = serde_json::to_value(s).unwrap_or_default();
            if let Some(obj) = row.as_object_mut() {
                obj.insert("current".into(), current.into());
            }
            row
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"sessions": rows})))
}

/// The `{id}` of `/auth/sessions/{id}` (one segment, not `revoke-others`).
pub fn session_id_segment(endpoint: &str) -> Option<&str> {
    endpoint
        .strip_prefix("/auth/sessions/")
        .filter(|s| !s.is_empty() && !s.contains('/') && *s != "revoke-others")
}

/// `DELETE /auth/sessions/{id}`: revokes one session of the signed-in user (the current one
/// too, which also clears the cookie).
///
/// # Errors
/// 405 for another method, 401, 403 cross-origin, 404 when the id is not one of the caller's
/// live sessions (another user's included), 503.
pub async fn revoke_session(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx,
    id: &str,
) -> Result<Response<Body>, HttpError> {
    ctx.route = "/auth/sessions".into();
    if req.method() != http::Method::DELETE {
        return Err(HttpError::MethodNotAllowed);
    }
    let identity = changer(gw, req.headers(), ctx).await?;
    let id: Uuid = id.parse().map_err(|_| HttpError::NotFound)?;
    let revoked = gw
        .sessions
        .revoke_own(&identity.user_id, id, "user")
        .await?;
    if revoked == 0 {
        return Err(HttpError::NotFound);
    }
    let mut resp = json_response(StatusCode::OK, &json!({"revoked": true}));
    if id == identity.session_id {
        resp.headers_mut()
            .append(header::SET_COOKIE, gw.clear_cookie(ctx));
    }
    Ok(resp)
}

/// `POST /auth/sessions/revoke-others`: revokes every session of the signed-in user but the
/// current one.
///
/// # Errors
/// 401, 403 cross-origin, 503.
pub async fn revoke_others(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx,
) -> Result<Response<Body>, HttpError> {
    let identity = changer(gw, req.headers(), ctx).await?;
    let revoked = gw
        .sessions
        .revoke_others(&identity.user_id, identity.session_id, "user")
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"revoked_sessions": revoked}),
    ))
}

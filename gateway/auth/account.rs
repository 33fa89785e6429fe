//! What a signed-in user does to their own account: change the password (which revokes every
//! other session), list their sessions, revoke one, revoke all the others, sign out. The
//! caller has authenticated the user (and, for a change made with the session cookie, passed
//! the Origin check).

use http::HeaderMap;
use uuid::Uuid;

use super::check_new_password;
use crate::app::{Ctx, Gateway};
use crate::error::HttpError;
use crate::ratelimit::Action;
use crate::sessions::{self, Identity, SessionInfo};
use crate::users;
use serde::Deserialize;

/// `POST /auth/password/change`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChangeInput {
    pub current_password: String,
    pub new_password: String,
}

/// Changes the password of the signed-in user and revokes every other session of theirs;
/// the current one stays. Returns how many sessions were revoked.
///
/// # Errors
/// 429 (login rate limits, failed-password budget), 422 weak password, 401
/// `invalid_credentials` for a wrong current password, 503.
pub(crate) async fn change_password(
    gw: &Gateway,
    ctx: &mut Ctx<'_>,
    identity: &Identity,
    input: &ChangeInput,
) -> Result<u64, HttpError> {
    gw.limits.check_ip(Action::Login, ctx.client_ip).await?;
    check_new_password(&input.new_password, &identity.email).await?;
    gw.limits
        .check_email(Action::Login, &identity.email)
        .await?;
    let (user, _) = super::password::verify(gw, &identity.email, &input.current_password).await?;
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

/// The live sessions of the signed-in user, newest first.
///
/// # Errors
/// 503.
pub(crate) async fn sessions(
    gw: &Gateway,
    identity: &Identity,
) -> Result<Vec<SessionInfo>, HttpError> {
    Ok(sessions::list(gw.sessions.pool(), &identity.user_id).await?)
}

/// Revokes session `id` of the signed-in user (the current one too). Returns whether it was
/// the current one (whose cookie the caller then clears).
///
/// # Errors
/// 404 when `id` is not a session id or not one of the caller's live sessions (another
/// user's included), 503.
pub(crate) async fn revoke_session(
    gw: &Gateway,
    identity: &Identity,
    id: &str,
) -> Result<bool, HttpError> {
    let id: Uuid = id.parse().map_err(|_| HttpError::NotFound)?;
    let revoked = gw
        .sessions
        .revoke_own(&identity.user_id, id, "user")
        .await?;
    if revoked == 0 {
        return Err(HttpError::NotFound);
    }
    Ok(id == identity.session_id)
}

/// Revokes every session of the signed-in user but the current one; returns how many.
///
/// # Errors
/// 503.
pub(crate) async fn revoke_others(gw: &Gateway, identity: &Identity) -> Result<u64, HttpError> {
    Ok(gw
        .sessions
        .revoke_others(&identity.user_id, identity.session_id, "user")
        .await?)
}

/// Signs out: revokes the session the request presents, if there is one; returns whether one
/// was revoked.
///
/// # Errors
/// 429 over the session-miss budget, 503.
pub(crate) async fn logout(
    gw: &Gateway,
    headers: &HeaderMap,
    ctx: &mut Ctx<'_>,
) -> Result<bool, HttpError> {
    let identity = gw.authenticate(headers, ctx.client_ip).await?;
    Ok(match &identity {
        Some(id) => {
            ctx.user_id = Some(id.user_id.to_string());
            gw.sessions.revoke_token(id, "logout").await? > 0
        }
        None => false,
    })
}

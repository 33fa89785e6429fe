//! Password reset: a `password_reset` code and the new password together set the password,
//! verify the address and end every session of the user.

use serde::Deserialize;

use super::{active_user, check_new_password, code, email_of, verified};
use crate::app::{Ctx, Gateway};
use crate::codes::Purpose;
use crate::error::HttpError;
use crate::ratelimit::Action;
use crate::{failures, users};

/// `POST /auth/password/reset`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResetInput {
    pub email: String,
    pub code: String,
    pub new_password: String,
}

/// Redeems a `password_reset` code, sets the new password, marks the address verified and
/// revokes every session of the user. Returns how many sessions were revoked.
///
/// # Errors
/// 400 malformed email, 422 weak password (checked before the code, so a weak choice does not
/// burn it), 429 rate limit or failure budget, 401 `invalid_code`, 503.
pub(crate) async fn reset(
    gw: &Gateway,
    ctx: &mut Ctx<'_>,
    input: &ResetInput,
) -> Result<u64, HttpError> {
    let email = email_of(&input.email)?;
    gw.limits.check_ip(Action::OtpVerify, ctx.client_ip).await?;
    check_new_password(&input.new_password, &email).await?;
    gw.limits.check_email(Action::OtpVerify, &email).await?;
    code::redeem(gw, &email, Purpose::PasswordReset, &input.code).await?;
    let mut user = active_user(gw, &email).await?;
    ctx.user_id = Some(user.id.clone());
    let hash = gw.hasher.hash(&input.new_password).await?;
    let pool = gw.sessions.pool();
    let end = users::EndSessions::All("password_reset");
    let (_, revoked) = users::set_password_hash(pool, &email, &hash, end).await?;
    gw.sessions.invalidate(&revoked).await;
    verified(gw, &mut user).await?;
    if let Err(e) = failures::clear(pool, &email, failures::PASSWORD).await {
        tracing::warn!(error = %e, "could not clear the password failure budget after a reset");
    }
    Ok(revoked.len() as u64)
}

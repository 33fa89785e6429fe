//! One-time codes by email: asking for one (`login`, `verify_email`, `password_reset`; the
//! mail goes out in the background, whether or not the address has an account) and redeeming
//! one (`login` signs in, `verify_email` verifies the address; `password_reset` codes are
//! redeemed only by [`super::reset`], together with the new password).

use serde::Deserialize;

use super::background::{self, Background};
use super::{active_user, email_of, verified};
use crate::app::{Ctx, Gateway};
use crate::codes::{self, Purpose, Redeemed};
use crate::error::HttpError;
use crate::ratelimit::Action;
use crate::users;

fn purpose_of(raw: &str) -> Result<Purpose, HttpError> {
    raw.parse::<Purpose>()
        .map_err(|e| HttpError::BadRequest(e.to_string()))
}

/// `POST /auth/otp/request`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RequestInput {
    pub email: String,
    pub purpose: String,
}

/// Sends a code for `purpose` if the address has an account that may use it (active; for
/// `verify_email`, not yet verified). The caller answers the same way either way.
///
/// # Errors
/// 400 for a malformed email or an unknown purpose, 429 over the rate limit.
pub(crate) async fn request(
    gw: &Gateway,
    ctx: &mut Ctx<'_>,
    input: RequestInput,
) -> Result<(), HttpError> {
    let email = email_of(&input.email)?;
    let purpose = purpose_of(&input.purpose)?;
    gw.limits
        .check(Action::OtpRequest, ctx.client_ip, &email)
        .await?;
    background::spawn(
        gw,
        "otp_request",
        Background::new(gw).send_code(email, purpose),
    );
    Ok(())
}

/// `POST /auth/otp/verify`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VerifyInput {
    pub email: String,
    pub code: String,
    pub purpose: String,
    #[serde(default)]
    pub device_label: Option<String>,
}

/// What a good code did.
#[derive(Debug)]
pub(crate) enum Verified {
    /// A `login` code: open a session for this user.
    Login(users::User),
    /// A `verify_email` code: the address is now verified.
    EmailVerified(users::User),
}

/// Redeems a `login` or `verify_email` code ([`codes::redeem`]). A good code of either
/// purpose also marks the address verified. `password_reset` codes are redeemed only by
/// [`super::reset::reset`], together with the new password, so a reset code never opens a
/// session.
///
/// # Errors
/// 400 for a malformed email or purpose (`password_reset` included); 429 over the rate limit
/// or past the (email, purpose) failure budget; 401 `invalid_code` for a wrong, expired, used
/// or exhausted code, whatever the reason; 503 when the database is down.
pub(crate) async fn verify(
    gw: &Gateway,
    ctx: &mut Ctx<'_>,
    input: &VerifyInput,
) -> Result<Verified, HttpError> {
    let email = email_of(&input.email)?;
    let purpose = purpose_of(&input.purpose)?;
    if purpose == Purpose::PasswordReset {
        return Err(HttpError::BadRequest(
            "password_reset codes are redeemed by POST /auth/password/reset with the new password"
                .into(),
        ));
    }
    gw.limits
        .check(Action::OtpVerify, ctx.client_ip, &email)
        .await?;
    redeem(gw, &email, purpose, &input.code).await?;
    let mut user = active_user(gw, &email).await?;
    ctx.user_id = Some(user.id.clone());
    verified(gw, &mut user).await?;
    Ok(match purpose {
        Purpose::Login => Verified::Login(user),
        Purpose::VerifyEmail | Purpose::PasswordReset => Verified::EmailVerified(user),
    })
}

/// Redeems `code` for (`email`, `purpose`), counted in `gateway_auth_outcomes_total`.
///
/// # Errors
/// 401 `invalid_code`, 429 past the failure budget, 503.
pub(super) async fn redeem(
    gw: &Gateway,
    email: &str,
    purpose: Purpose,
    code: &str,
) -> Result<(), HttpError> {
    let outcome = codes::redeem(
        gw.sessions.pool(),
        &gw.keys,
        &gw.config.codes,
        email,
        purpose,
        code.trim(),
    )
    .await?;
    let label = match outcome {
        Redeemed::Valid { .. } => "success",
        Redeemed::Invalid => "failure",
        Redeemed::Wait(_) => "over_budget",
    };
    metrics::counter!("gateway_auth_outcomes_total", "flow" => purpose.as_str(), "outcome" => label)
        .increment(1);
    match outcome {
        Redeemed::Valid { .. } => Ok(()),
        Redeemed::Invalid => Err(HttpError::InvalidCode),
        Redeemed::Wait(wait) => Err(HttpError::RateLimited(wait)),
    }
}

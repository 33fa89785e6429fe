//! Magic sign-in links: asking for one (mailed in the background when the address has an
//! active account) and consuming one (once), which signs its user in and says where to go.

use serde::Deserialize;

use super::background::{self, Background};
use super::{active_user, email_of, verified};
use crate::app::{Ctx, Gateway};
use crate::codes;
use crate::error::HttpError;
use crate::ratelimit::Action;
use crate::redirect::safe_return_to;
use crate::users;

/// `POST /auth/magic/request`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RequestInput {
    pub email: String,
    #[serde(default)]
    pub return_to: Option<String>,
}

/// Mails a magic sign-in link if the address has an active account. `return_to` is kept only
/// as a same-origin path ([`safe_return_to`], else `/`). The caller answers the same way
/// either way.
///
/// # Errors
/// 400 for a malformed email, 429 over the rate limit.
pub(crate) async fn request(
    gw: &Gateway,
    ctx: &mut Ctx<'_>,
    input: RequestInput,
) -> Result<(), HttpError> {
    let email = email_of(&input.email)?;
    let return_to = safe_return_to(input.return_to.as_deref());
    gw.limits
        .check(Action::MagicRequest, ctx.client_ip, &email)
        .await?;
    background::spawn(
        gw,
        "magic_request",
        Background::new(gw).send_link(email, return_to),
    );
    Ok(())
}

/// A consumed magic link: who signs in, and where to go.
#[derive(Debug)]
pub(crate) struct MagicLogin {
    pub user: users::User,
    /// A same-origin path, checked again on the way out.
    pub return_to: String,
}

/// Consumes a magic link (once) and returns its user; marks the address verified. The
/// per-IP limit of code verification applies first.
///
/// # Errors
/// 429 over the per-IP limit of code verification; 401 [`HttpError::InvalidLink`] (code
/// `invalid_code`) for a malformed, unknown, expired or used token, or an account that is
/// gone or disabled; 503 when the database is down.
pub(crate) async fn consume(
    gw: &Gateway,
    ctx: &mut Ctx<'_>,
    token: &str,
) -> Result<MagicLogin, HttpError> {
    gw.limits.check_ip(Action::OtpVerify, ctx.client_ip).await?;
    let link = codes::redeem_link(gw.sessions.pool(), &gw.keys, token)
        .await?
        .ok_or(HttpError::InvalidLink)?;
    metrics::counter!("gateway_auth_outcomes_total", "flow" => codes::MAGIC_LINK, "outcome" => "success")
        .increment(1);
    let mut user = active_user(gw, &link.email).await.map_err(|e| match e {
        HttpError::InvalidCode => HttpError::InvalidLink,
        other => other,
    })?;
    ctx.user_id = Some(user.id.clone());
    verified(gw, &mut user).await?;
    Ok(MagicLogin {
        user,
        return_to: safe_return_to(link.return_to.as_deref()),
    })
}

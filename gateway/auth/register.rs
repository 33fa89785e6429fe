//! Registration: checks a new account's email and password and hands the rest to the
//! background: bcrypt, the `INSERT`, and a `verify_email` code, or for a taken address an
//! "account exists" notice to its owner.

use serde::Deserialize;

use super::background::{self, Background};
use super::{check_new_password, email_of};
use crate::app::{Ctx, Gateway};
use crate::error::HttpError;
use crate::ratelimit::Action;

/// `POST /auth/register`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterInput {
    pub email: String,
    pub password: String,
}

/// Checks a registration and hands it to the background ([`Background::register`]). The
/// caller answers the same way whatever happens next (202, or the verification page).
///
/// # Errors
/// 400 for a malformed email, 429 over the rate limit, 422 for a weak password.
///
/// # Security
/// The request path does the same work whether or not the address is taken: nothing that
/// looks at accounts runs before the answer.
pub(crate) async fn register(
    gw: &Gateway,
    ctx: &mut Ctx<'_>,
    input: RegisterInput,
) -> Result<(), HttpError> {
    let email = email_of(&input.email)?;
    gw.limits.check_ip(Action::Register, ctx.client_ip).await?;
    check_new_password(&input.password, &email).await?;
    gw.limits.check_email(Action::Register, &email).await?;
    let password = zeroize::Zeroizing::new(input.password);
    let work = Background::new(gw).register(gw.hasher.clone(), email, password);
    background::spawn(gw, "register", work);
    Ok(())
}

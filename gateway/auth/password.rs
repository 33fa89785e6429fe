//! Password sign-in: the check that costs the same for every email ([`verify`]), and the
//! sign-in that opens a session only while what it checked still holds ([`login`]).

use http::HeaderMap;
use serde::Deserialize;

use super::{rate_key, session_meta};
use crate::app::{Ctx, Gateway};
use crate::error::HttpError;
use crate::ratelimit::Action;
use crate::sessions::{self, NewSession};
use crate::{failures, users};

/// `POST /auth/login`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginInput {
    pub email: String,
    pub password: String,
    #[serde(default)]
    pub device_label: Option<String>,
}

/// Checks an email and password: the same work, time and error whether the email is unknown,
/// the password wrong or the user disabled. The email's failed-password budget
/// (`auth_failures`, purpose `password`, kept in the database so it holds across instances),
/// the lookup, bcrypt (against a dummy hash for an unknown email), and the failure recorded
/// or the budget cleared. Returns the user and the stored hash.
///
/// # Errors
/// [`HttpError::InvalidCredentials`]; 429 past the email's failed-password budget
/// ([`failures`]); 503 when hashing is overloaded or the database down.
///
/// # Security
/// Unknown and known emails do the same queries, the same bcrypt and record the same
/// failure, so neither the answer nor its time tells them apart.
pub(crate) async fn verify(
    gw: &Gateway,
    email: &str,
    password: &str,
) -> Result<(users::User, Option<String>), HttpError> {
    let email = users::normalize_email(email).map_err(|_| HttpError::InvalidCredentials);
    let pool = gw.sessions.pool();
    let budget = failures::Budget::from_config(&gw.config.codes);
    let standing = match &email {
        Ok(e) => Some(failures::check(pool, &budget, e, failures::PASSWORD).await?),
        Err(_) => None,
    };
    if let Some(wait) = standing.and_then(|s| s.wait) {
        metrics::counter!("gateway_auth_outcomes_total", "flow" => "password", "outcome" => "over_budget").increment(1);
        return Err(HttpError::RateLimited(wait));
    }
    let user = match &email {
        Ok(e) => users::find_by_email(pool, e).await?,
        Err(_) => None,
    };
    let hash = user.as_ref().and_then(|u| u.password_hash.clone());
    let ok = gw.hasher.verify(password, hash.as_deref()).await?;
    let user = match user {
        Some(u) if ok && u.status == users::Status::Active => u,
        _ => {
            metrics::counter!("gateway_auth_outcomes_total", "flow" => "password", "outcome" => "failure").increment(1);
            if let Ok(e) = &email {
                if let Err(err) = failures::record(pool, e, failures::PASSWORD).await {
                    tracing::warn!(error = %err, "could not record a failed password check");
                }
            }
            return Err(HttpError::InvalidCredentials);
        }
    };
    metrics::counter!("gateway_auth_outcomes_total", "flow" => "password", "outcome" => "success")
        .increment(1);
    if standing.is_some_and(|s| s.failures > 0) {
        if let Err(err) = failures::clear(pool, &user.email, failures::PASSWORD).await {
            tracing::warn!(error = %err, "could not clear the failed-password budget");
        }
    }
    Ok((user, hash))
}

/// Password sign-in, shared by `POST /auth/login` in JSON and the sign-in form: checks the
/// password, opens a session and checks again that the password and the user's status have
/// not changed meanwhile (else the session is revoked at once and the answer is
/// [`HttpError::InvalidCredentials`]); then re-hashes a password stored at another cost. The
/// caller answers and sets the cookie.
///
/// # Errors
/// As [`verify`]; 503 when the session cannot be stored or checked.
pub(crate) async fn login(
    gw: &Gateway,
    headers: &HeaderMap,
    ctx: &mut Ctx<'_>,
    email: &str,
    password: &str,
    device_label: Option<String>,
) -> Result<(users::User, NewSession), HttpError> {
    gw.limits
        .check(Action::Login, ctx.client_ip, &rate_key(email))
        .await?;
    let (user, hash) = verify(gw, email, password).await?;
    ctx.user_id = Some(user.id.clone());
    let meta = session_meta(headers, ctx, device_label);
    let session = gw.sessions.create(&user.id, &meta).await?;
    if !credentials_hold(gw, &user.id, hash.as_deref(), password).await? {
        sessions::revoke_one(gw.sessions.pool(), session.id, "credentials_changed").await?;
        return Err(HttpError::InvalidCredentials);
    }
    rehash_if_needed(gw, &user, hash.as_deref(), password);
    Ok((user, session))
}

/// Re-hashes, off the request path, a good password whose stored `hash` was made at another
/// cost than the configured one.
fn rehash_if_needed(gw: &Gateway, user: &users::User, hash: Option<&str>, password: &str) {
    if !hash.is_some_and(|h| gw.hasher.needs_rehash(h)) {
        return;
    }
    let hasher = gw.hasher.clone();
    let pool = gw.sessions.pool().clone();
    let (email, password) = (
        user.email.clone(),
        zeroize::Zeroizing::new(password.to_string()),
    );
    tokio::spawn(async move {
        match hasher.hash(&password).await {
            Ok(new_hash) => {
                let end = users::EndSessions::None;
                if let Err(e) = users::set_password_hash(&pool, &email, &new_hash, end).await {
                    tracing::warn!(error = %e, "could not re-hash a password at the new cost");
                }
            }
            Err(e) => tracing::debug!(error = %e, "re-hash skipped"),
        }
    });
}

/// Whether what a password sign-in checked still holds once its session is stored: the user
/// is active and the password is still theirs (the hash it was checked against, or one it
/// verifies against, as after a re-hash at another cost). A password change, reset or
/// disable that committed between the check and the session was not there to revoke the
/// session; this read sees it ([`users::credentials`]).
///
/// # Errors
/// 503 when the database or the hasher cannot answer.
async fn credentials_hold(
    gw: &Gateway,
    user_id: &str,
    checked_hash: Option<&str>,
    password: &str,
) -> Result<bool, HttpError> {
    match users::credentials(gw.sessions.pool(), user_id).await? {
        Some((users::Status::Active, Some(current))) if Some(current.as_str()) == checked_hash => {
            Ok(true)
        }
        Some((users::Status::Active, Some(current))) => {
            Ok(gw.hasher.verify(password, Some(&current)).await?)
        }
        _ => Ok(false),
    }
}

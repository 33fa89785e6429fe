//! The sign-in and account flows, apart from HTTP: a file per flow ([`password`],
//! [`register`], [`code`], [`magic`], [`reset`], [`account`]). Each one checks its input,
//! applies the rate limits and failure budgets, does its work and returns what happened as
//! data (a user, a new session, a count) or an [`HttpError`] saying why not; none builds a
//! response. The front ends (the JSON API and the HTML forms, in `endpoints`) read the request,
//! call the flow, and turn its outcome into their own answer. A new sign-in method is one file
//! here plus one route in each front end.
//!
//! # Enumeration
//! No outcome depends on whether an email has an account. Input checks and rate limits come
//! first and look only at what the client sent. Flows that would mail something (register,
//! code request, magic-link request) do their lookups, code issue and mail in a background
//! task ([`background`]) after the answer is decided, so known and unknown emails get the same
//! status, the same body and the same time. Registration runs bcrypt and its `INSERT` there
//! too (a taken address fails the `INSERT` without a commit, measurably faster), and a taken
//! address gets an "account exists" mail instead of a code. Password sign-in does the same
//! work for unknown and known emails ([`password::verify`]).

pub(crate) mod account;
mod background;
pub(crate) mod code;
pub(crate) mod magic;
pub(crate) mod password;
pub(crate) mod register;
pub(crate) mod reset;

use http::{HeaderMap, header};

use crate::app::{Ctx, Gateway};
use crate::error::HttpError;
use crate::sessions::{NewSession, SessionMeta};
use crate::users;

/// The normalized email, or 400 (the format is public, so this tells nothing about accounts).
///
/// # Errors
/// [`HttpError::BadRequest`] naming what is wrong with the address.
pub(crate) fn email_of(raw: &str) -> Result<String, HttpError> {
    users::normalize_email(raw).map_err(|e| HttpError::BadRequest(e.to_string()))
}

/// The per-email rate limit key of what a client typed: the normalized email, or (malformed)
/// the trimmed, lower-cased text, so spelling variants share one key.
pub(crate) fn rate_key(email: &str) -> String {
    users::normalize_email(email).unwrap_or_else(|_| email.trim().to_lowercase())
}

/// Checks a new password with [`crate::password::check_new`] (the rule the command line
/// applies too) off the async workers (zxcvbn is CPU-bound).
///
/// # Errors
/// 422 [`HttpError::Unprocessable`] with the rule and zxcvbn's advice.
pub(crate) async fn check_new_password(password: &str, email: &str) -> Result<(), HttpError> {
    let (password, email) = (
        zeroize::Zeroizing::new(password.to_string()),
        email.to_string(),
    );
    tokio::task::spawn_blocking(move || crate::password::check_new(&password, &email))
        .await
        .map_err(HttpError::internal)?
        .map_err(|e| HttpError::Unprocessable(e.to_string()))
}

/// The live, active user of `email`, or [`HttpError::InvalidCode`] (the account went away or
/// was disabled after its code was sent).
async fn active_user(gw: &Gateway, email: &str) -> Result<users::User, HttpError> {
    match users::find_by_email(gw.sessions.pool(), email).await? {
        Some(u) if u.status == users::Status::Active => Ok(u),
        _ => Err(HttpError::InvalidCode),
    }
}

/// A code or link proves the mailbox: mark the address verified if it was not.
async fn verified(gw: &Gateway, user: &mut users::User) -> Result<(), HttpError> {
    if !user.email_verified {
        users::mark_verified(gw.sessions.pool(), &user.email).await?;
        user.email_verified = true;
    }
    Ok(())
}

/// What the session list shows about where a session was opened.
pub(crate) fn session_meta(
    headers: &HeaderMap,
    ctx: &Ctx<'_>,
    device_label: Option<String>,
) -> SessionMeta {
    SessionMeta {
        ip_address: Some(ctx.client_ip),
        device_label,
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    }
}

/// Opens a session for `user`, as signed in by the request with these `headers`.
///
/// # Errors
/// 503 when the database is down.
pub(crate) async fn start_session(
    gw: &Gateway,
    ctx: &Ctx<'_>,
    headers: &HeaderMap,
    user: &users::User,
    device_label: Option<String>,
) -> Result<NewSession, HttpError> {
    let meta = session_meta(headers, ctx, device_label);
    Ok(gw.sessions.create(&user.id, &meta).await?)
}

fn minutes(d: std::time::Duration) -> u64 {
    d.as_secs().div_ceil(60).max(1)
}

//! The sign-in flows the gateway serves without a session: registration, one-time codes
//! (`/auth/otp/*`), magic links (`/auth/magic/*`) and password reset. Each endpoint is a thin
//! JSON wrapper around a `do_*` core (parse → core → answer), so the browser forms can run the
//! same core and answer with a page or a 303 instead.
//!
//! # Enumeration
//! No answer depends on whether an email has an account. Input checks and rate limits come
//! first and look only at what the client sent. Requests that would mail something (register,
//! OTP request, magic request) do their lookups, code issue and mail in a background task
//! ([`crate::ratelimit::Limits::background`]) after the answer is decided, so known and unknown
//! emails get the same status, the same body and the same time. Registration runs bcrypt and
//! its `INSERT` there too (a taken address fails the `INSERT` without a commit, measurably
//! faster), and a taken address gets an "account exists" mail instead of a code.

use http::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{session_meta, start_session};
use crate::app::{Ctx, Gateway};
use crate::body::{Body, Incoming};
use crate::codes::{self, Purpose, Redeemed};
use crate::db::DbError;
use crate::error::HttpError;
use crate::http::form::is_form;
use crate::http::json::{read as read_json, response as json_response};
use crate::http::{self as web, accepts_html, paths};
use crate::mail::{self, Mailer, compose};
use crate::pages::{self, forms};
use crate::ratelimit::Action;
use crate::redirect::safe_return_to;
use crate::{config, failures, password, users};

/// The answer to every request that may send mail, whatever happened to the email.
fn accepted() -> Response<Body> {
    json_response(
        StatusCode::ACCEPTED,
        &json!({
            "status": "accepted",
            "message": "if the address can receive it, an email is on its way",
        }),
    )
}

/// The normalized email, or 400 (the format is public, so this tells nothing about accounts).
///
/// # Errors
/// [`HttpError::BadRequest`] naming what is wrong with the address.
pub fn email_of(raw: &str) -> Result<String, HttpError> {
    users::normalize_email(raw).map_err(|e| HttpError::BadRequest(e.to_string()))
}

fn purpose_of(raw: &str) -> Result<Purpose, HttpError> {
    raw.parse::<Purpose>()
        .map_err(|e| HttpError::BadRequest(e.to_string()))
}

/// Checks a new password with [`password::check_new`] (the rule the command line applies too)
/// off the async workers (zxcvbn is CPU-bound).
///
/// # Errors
/// 422 [`HttpError::Unprocessable`] with the rule and zxcvbn's advice.
pub async fn check_new_password(password: &str, email: &str) -> Result<(), HttpError> {
    let (password, email) = (
        zeroize::Zeroizing::new(password.to_string()),
        email.to_string(),
    );
    tokio::task::spawn_blocking(move || password::check_new(&password, &email))
        .await
        .map_err(|e| HttpError::Internal(format!("password check task: {e}")))?
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

fn minutes(d: std::time::Duration) -> u64 {
    d.as_secs().div_ceil(60).max(1)
}

// ---------------------------------------------------------------------------------------------
// Background work: lookups, codes and mail, after the answer is decided.

/// What a background task needs, owned.
#[derive(Clone)]
struct Background {
    pool: deadpool_postgres::Pool,
    mailer: Mailer,
    keys: codes::Keys,
    codes: config::Codes,
    origin: String,
    brand: config::Branding,
}

impl Background {
    fn new(gw: &Gateway) -> Background {
        Background {
            pool: gw.sessions.pool().clone(),
            mailer: gw.mailer.clone(),
            keys: gw.keys.clone(),
            codes: gw.config.codes.clone(),
            origin: gw.config.server.public_url.origin.clone(),
            brand: gw.config.branding.clone(),
        }
    }

    fn send(&self, to: &str, (subject, text, html): (String, String, String)) {
        let msg = mail::Message {
            to: to.to_string(),
            subject,
            text,
            html,
        };
        if let Err(e) = self.mailer.enqueue(msg) {
            tracing::warn!(error = %e, "auth mail not queued");
        }
    }

    async fn eligible_user(
        &self,
        email: &str,
        wants: impl Fn(&users::User) -> bool,
    ) -> Result<Option<users::User>, DbError> {
        Ok(users::find_by_email(&self.pool, email)
            .await?
            .filter(|u| u.status == users::Status::Active && wants(u)))
    }

    /// Sends a code when the address has an account that may use it: active, and for
    /// `verify_email` not verified yet.
    async fn send_code(self, email: String, purpose: Purpose) -> Result<(), DbError> {
        let wants = |u: &users::User| purpose != Purpose::VerifyEmail || !u.email_verified;
        let Some(user) = self.eligible_user(&email, wants).await? else {
            return Ok(());
        };
        let code = codes::issue(
            &self.pool,
            &self.keys,
            &email,
            Some(&user.id),
            purpose,
            self.codes.ttl,
        )
        .await?;
        // A verification code also says where to enter it (the page after registering).
        let page = (purpose == Purpose::VerifyEmail).then(|| {
            format!(
                "{}{}?{}",
                self.origin,
                paths::VERIFY_EMAIL_PAGE,
                web::query(&[("email", &email)])
            )
        });
        self.send(
            &email,
            compose::code(
                &self.brand,
                purpose,
                &code,
                minutes(self.codes.ttl),
                page.as_deref(),
            ),
        );
        Ok(())
    }

    /// Sends a magic link when the address has an active account. The URL is built from
    /// `server.public_url` only, never from the request's `Host`.
    async fn send_link(self, email: String, return_to: String) -> Result<(), DbError> {
        let Some(user) = self.eligible_user(&email, |_| true).await? else {
            return Ok(());
        };
        let token = codes::issue_link(
            &self.pool,
            &self.keys,
            &email,
            Some(&user.id),
            Some(&return_to),
            self.codes.magic_link_ttl,
        )
        .await?;
        let url = format!("{}/auth/magic/{token}", self.origin);
        self.send(
            &email,
            compose::magic_link(&self.brand, &url, minutes(self.codes.magic_link_ttl)),
        );
        Ok(())
    }

    fn account_exists(&self, email: &str) {
        let login_url = format!("{}/auth/login", self.origin);
        self.send(
            email,
            compose::account_exists_notice(&self.brand, &login_url),
        );
    }

    /// Creates the unverified account and mails it a `verify_email` code; for a taken address,
    /// mails its owner an "account exists" notice instead. A password that cannot be hashed
    /// now (bcrypt overloaded) drops the registration, which the client may repeat.
    async fn register(
        self,
        hasher: password::Hasher,
        email: String,
        password: zeroize::Zeroizing<String>,
    ) -> Result<(), DbError> {
        let hash = match hasher.hash(&password).await {
            Ok(hash) => hash,
            Err(e) => {
                metrics::counter!("gateway_auth_background_dropped_total", "flow" => "register")
                    .increment(1);
                tracing::warn!(error = %e, "registration dropped: the password was not hashed");
                return Ok(());
            }
        };
        let created = users::create(
            &self.pool,
            &users::NewUser {
                email: &email,
                email_verified: false,
                password_hash: Some(&hash),
                roles: &[],
            },
        )
        .await;
        match created {
            Ok(_) => self.send_code(email, Purpose::VerifyEmail).await,
            Err(users::UserError::DuplicateEmail(_)) => {
                self.account_exists(&email);
                Ok(())
            }
            Err(users::UserError::Db(e)) => Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "registration refused");
                Ok(())
            }
        }
    }
}

/// Runs `work` in the background, bounded by the flows' background permits: when they are
/// all taken the work is dropped and counted (the client's answer is the same either way).
fn spawn(
    gw: &Gateway,
    flow: &'static str,
    work: impl Future<Output = Result<(), DbError>> + Send + 'static,
) {
    let Some(permit) = gw.limits.background() else {
        metrics::counter!("gateway_auth_background_dropped_total", "flow" => flow).increment(1);
        tracing::warn!(flow, "auth background work dropped: too many in flight");
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        if let Err(e) = work.await {
            tracing::warn!(flow, error = %e, "auth background work failed");
        }
    });
}

// ---------------------------------------------------------------------------------------------
// POST /auth/register

/// `POST /auth/register`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterInput {
    pub email: String,
    pub password: String,
}

/// Checks a registration and hands it to the background ([`Background::register`]): bcrypt,
/// the `INSERT`, and a `verify_email` code, or for a taken address an "account exists" notice
/// to its owner. The caller answers 202 either way.
///
/// # Errors
/// 400 for a malformed email, 429 over the rate limit, 422 for a weak password.
///
/// # Security
/// The request path does the same work whether or not the address is taken: nothing that
/// looks at accounts runs before the answer.
pub async fn do_register(
    gw: &Gateway,
    ctx: &mut Ctx,
    input: RegisterInput,
) -> Result<(), HttpError> {
    let email = email_of(&input.email)?;
    gw.limits.check_ip(Action::Register, ctx.client_ip).await?;
    check_new_password(&input.password, &email).await?;
    gw.limits.check_email(Action::Register, &email).await?;
    let password = zeroize::Zeroizing::new(input.password);
    let work = Background::new(gw).register(gw.hasher.clone(), email, password);
    spawn(gw, "register", work);
    Ok(())
}

/// `POST /auth/register` {email, password} → 202.
pub async fn register(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx,
) -> Result<Response<Body>, HttpError> {
    let input: RegisterInput = read_json(req).await?;
    do_register(gw, ctx, input).await?;
    Ok(accepted())
}

// ---------------------------------------------------------------------------------------------
// POST /auth/otp/request, POST /auth/otp/verify

/// `POST /auth/otp/request`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtpRequestInput {
    pub email: String,
    pub purpose: String,
}

/// Sends a code for `purpose` if the address has an account that may use it (active; for
/// `verify_email`, not yet verified). The caller answers 202 either way.
///
/// # Errors
/// 400 for a malformed email or an unknown purpose, 429 over the rate limit.
pub async fn do_otp_request(
    gw: &Gateway,
    ctx: &mut Ctx,
    input: OtpRequestInput,
) -> Result<(), HttpError> {
    let email = email_of(&input.email)?;
    let purpose = purpose_of(&input.purpose)?;
    gw.limits
        .check(Action::OtpRequest, ctx.client_ip, &email)
        .await?;
    spawn(
        gw,
        "otp_request",
        Background::new(gw).send_code(email, purpose),
    );
    Ok(())
}

/// `POST /auth/otp/request` {email, purpose} → 202.
pub async fn otp_request(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx,
) -> Result<Response<Body>, HttpError> {
    let input: OtpRequestInput = read_json(req).await?;
    do_otp_request(gw, ctx, input).await?;
    Ok(accepted())
}

/// `POST /auth/otp/verify`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtpVerifyInput {
    pub email: String,
    pub code: String,
    pub purpose: String,
    #[serde(default)]
    pub device_label: Option<String>,
}

/// What a good code did.
#[derive(Debug)]
pub enum Verified {
    /// A `login` code: open a session for this user.
    Login(users::User),
    /// A `verify_email` code: the address is now verified.
    EmailVerified(users::User),
}

/// Redeems a `login` or `verify_email` code ([`codes::redeem`]). A good code of either
/// purpose also marks the address verified. `password_reset` codes are redeemed only by
/// `POST /auth/password/reset`, together with the new password, so a reset code never opens
/// a session.
///
/// # Errors
/// 400 for a malformed email or purpose (`password_reset` included); 429 over the rate limit
/// or past the (email, purpose) failure budget; 401 `invalid_code` for a wrong, expired, used
/// or exhausted code, whatever the reason; 503 when the database is down.
pub async fn do_otp_verify(
    gw: &Gateway,
    ctx: &mut Ctx,
    input: &OtpVerifyInput,
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

async fn redeem(gw: &Gateway, email: &str, purpose: Purpose, code: &str) -> Result<(), HttpError> {
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

/// `POST /auth/otp/verify` {email, code, purpose, device_label?}: `login` → 200 with the
/// session (cookie set, as password login); `verify_email` → 200 `{"email_verified": true}`.
pub async fn otp_verify(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx,
) -> Result<Response<Body>, HttpError> {
    gw.require_same_origin(req.headers())?;
    let headers = req.headers().clone();
    let input: OtpVerifyInput = read_json(req).await?;
    match do_otp_verify(gw, ctx, &input).await? {
        Verified::Login(user) => {
            let meta = session_meta(&headers, ctx, input.device_label);
            start_session(gw, ctx, &user, &meta, StatusCode::OK).await
        }
        Verified::EmailVerified(user) => Ok(json_response(
            StatusCode::OK,
            &json!({"email": user.email, "email_verified": true}),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// POST /auth/magic/request, GET and POST /auth/magic/{token}

/// `POST /auth/magic/request`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MagicRequestInput {
    pub email: String,
    #[serde(default)]
    pub return_to: Option<String>,
}

/// Mails a magic sign-in link if the address has an active account. `return_to` is kept only
/// as a same-origin path ([`safe_return_to`], else `/`). The caller answers 202 either way.
///
/// # Errors
/// 400 for a malformed email, 429 over the rate limit.
pub async fn do_magic_request(
    gw: &Gateway,
    ctx: &mut Ctx,
    input: MagicRequestInput,
) -> Result<(), HttpError> {
    let email = email_of(&input.email)?;
    let return_to = safe_return_to(input.return_to.as_deref());
    gw.limits
        .check(Action::MagicRequest, ctx.client_ip, &email)
        .await?;
    spawn(
        gw,
        "magic_request",
        Background::new(gw).send_link(email, return_to),
    );
    Ok(())
}

/// `POST /auth/magic/request` {email, return_to?} → 202.
pub async fn magic_request(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx,
) -> Result<Response<Body>, HttpError> {
    let input: MagicRequestInput = read_json(req).await?;
    do_magic_request(gw, ctx, input).await?;
    Ok(accepted())
}

/// `GET /auth/magic/{token}`: the confirm page, whose button POSTs the token back. It reads
/// and changes nothing: mail scanners prefetch links.
///
/// # Errors
/// 404 for a path segment that is not shaped like a token.
pub fn magic_page(gw: &Gateway, token: &str) -> Result<Response<Body>, HttpError> {
    if !codes::is_link_token(token) {
        return Err(HttpError::NotFound);
    }
    Ok(pages::magic_confirm(&gw.config.branding, token))
}

/// A consumed magic link: who signs in, and where to go.
#[derive(Debug)]
pub struct MagicLogin {
    pub user: users::User,
    /// A same-origin path, checked again on the way out.
    pub return_to: String,
}

/// Consumes a magic link (once) and returns its user; marks the address verified.
///
/// # Errors
/// 401 [`HttpError::InvalidLink`] (code `invalid_code`) for a malformed, unknown, expired or
/// used token, or an account that is gone or disabled; 503 when the database is down.
pub async fn do_magic_consume(
    gw: &Gateway,
    ctx: &mut Ctx,
    token: &str,
) -> Result<MagicLogin, HttpError> {
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

/// `POST /auth/magic/{token}`: consumes the link, opens a session, sets the cookie and answers
/// 303 to the stored `return_to`. A failure answers the sign-in page with the error for a
/// browser (form post or `Accept: text/html`), whose "email me a link" asks for a new one;
/// JSON otherwise.
///
/// # Errors
/// 403 cross-origin (login CSRF), 429 over the per-IP limit of code verification, 401
/// [`HttpError::InvalidLink`], 503.
pub async fn magic_consume(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx,
    token: &str,
) -> Result<Response<Body>, HttpError> {
    let headers = req.headers().clone();
    let browser = is_form(&headers) || accepts_html(&headers);
    let outcome = async {
        gw.require_same_origin(&headers)?;
        gw.limits.check_ip(Action::OtpVerify, ctx.client_ip).await?;
        let login = do_magic_consume(gw, ctx, token).await?;
        let meta = session_meta(&headers, ctx, None);
        let session = gw.sessions.create(&login.user.id, &meta).await?;
        Ok::<_, HttpError>((login.return_to, session))
    }
    .await;
    match outcome {
        Ok((return_to, session)) => Ok(forms::signed_in(gw, ctx, &return_to, &session)),
        Err(e) if browser => {
            let brand = &gw.config.branding;
            Ok(forms::failed(brand, ctx, e, |m| {
                pages::login_page(brand, "/", "", m)
            }))
        }
        Err(e) => Err(e),
    }
}

/// The token of `/auth/magic/{token}` (one path segment), if `endpoint` is such a path.
pub fn magic_token(endpoint: &str) -> Option<&str> {
    endpoint
        .strip_prefix("/auth/magic/")
        .filter(|t| !t.is_empty() && !t.contains('/') && *t != "request")
}

/// Routes `GET`/`POST /auth/magic/{token}`.
///
/// # Errors
/// As [`magic_page`] and [`magic_consume`]; 405 for another method.
pub async fn magic(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx,
    token: &str,
) -> Result<Response<Body>, HttpError> {
    ctx.route = "/auth/magic".into();
    match *req.method() {
        Method::GET | Method::HEAD => magic_page(gw, token),
        Method::POST => magic_consume(gw, req, ctx, token).await,
        _ => Err(HttpError::MethodNotAllowed),
    }
}

// ---------------------------------------------------------------------------------------------
// POST /auth/password/reset

/// `POST /auth/password/reset`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetInput {
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
pub async fn do_password_reset(
    gw: &Gateway,
    ctx: &mut Ctx,
    input: &ResetInput,
) -> Result<u64, HttpError> {
    let email = email_of(&input.email)?;
    gw.limits.check_ip(Action::OtpVerify, ctx.client_ip).await?;
    check_new_password(&input.new_password, &email).await?;
    gw.limits.check_email(Action::OtpVerify, &email).await?;
    redeem(gw, &email, Purpose::PasswordReset, &input.code).await?;
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

/// `POST /auth/password/reset` {email, code, new_password} → 200 with the number of sessions
/// revoked.
pub async fn password_reset(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx,
) -> Result<Response<Body>, HttpError> {
    gw.require_same_origin(req.headers())?;
    let input: ResetInput = read_json(req).await?;
    let revoked = do_password_reset(gw, ctx, &input).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"status": "password_reset", "revoked_sessions": revoked}),
    ))
}

//! The gateway's own endpoints under `/auth`: password login and logout, "who am I", and the
//! forward-auth check `/auth/verify`, and the routing of the rest: [`flows`] (register, codes,
//! magic links, password reset) and [`account`] (password change, session management). JSON
//! in and out; errors are [`HttpError`]s.

use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use serde::Deserialize;
use serde_json::json;

use crate::app::authorize::{authorize, is_browser_navigation, login_location};
use crate::app::{Conn, Ctx, Gateway};
use crate::body::{Body, Incoming};
use crate::error::HttpError;
use crate::http::cookie::{CLEAR_SITE_DATA, CLEAR_SITE_DATA_ON_LOGOUT};
use crate::http::form::is_form;
use crate::http::json::{read as read_json, response as json_response};
use crate::pages::{self, forms};
use crate::ratelimit::Action;
use crate::sessions::{self, NewSession, SessionMeta};
use crate::{failures, headers, path, upstream, users};

pub mod account;
pub mod flows;

/// `/auth/verify`: the request target (path and query) the backend must receive.
pub const UPSTREAM_URI: HeaderName = HeaderName::from_static("x-upstream-uri");
/// `/auth/verify`: the `Cookie` the backend must receive (the session cookie removed).
pub const UPSTREAM_COOKIE: HeaderName = HeaderName::from_static("x-upstream-cookie");
/// `/auth/verify`: the `Authorization` the backend must receive (never a session token).
pub const UPSTREAM_AUTHORIZATION: HeaderName = HeaderName::from_static("x-upstream-authorization");

/// Routes a request under `/auth` to its endpoint.
///
/// # Errors
/// Whatever the endpoint refuses with; 404 for an unknown endpoint, 405 for a wrong method.
pub async fn handle(
    gw: &Gateway,
    conn: Conn,
    req: Request<Incoming>,
    normalized: &str,
    ctx: &mut Ctx,
) -> Result<Response<Body>, HttpError> {
    let endpoint = normalized.trim_end_matches('/');
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
        ) => pages::get(gw, &req, endpoint, ctx).await,
        (Method::POST, "/auth/login") if is_form(req.headers()) => {
            Ok(forms::login(gw, req, ctx).await)
        }
        (Method::POST, "/auth/register") if is_form(req.headers()) => {
            Ok(forms::register(gw, req, ctx).await)
        }
        (Method::POST, "/auth/otp/request") if is_form(req.headers()) => {
            Ok(forms::otp_request(gw, req, ctx).await)
        }
        (Method::POST, "/auth/magic/request") if is_form(req.headers()) => {
            Ok(forms::magic_request(gw, req, ctx).await)
        }
        (Method::POST, "/auth/otp/verify") if is_form(req.headers()) => {
            Ok(forms::otp_verify(gw, req, ctx).await)
        }
        (Method::POST, "/auth/password/reset") if is_form(req.headers()) => {
            Ok(forms::password_reset(gw, req, ctx).await)
        }
        (Method::POST, "/auth/login") => login(gw, req, ctx).await,
        (Method::POST, "/auth/logout") => logout(gw, req, ctx).await,
        (Method::GET, "/auth/session") => session(gw, req, ctx).await,
        (_, "/auth/verify") => verify(gw, conn, req, ctx).await,
        (Method::POST, "/auth/register") => flows::register(gw, req, ctx).await,
        (Method::POST, "/auth/otp/request") => flows::otp_request(gw, req, ctx).await,
        (Method::POST, "/auth/otp/verify") => flows::otp_verify(gw, req, ctx).await,
        (Method::POST, "/auth/magic/request") => flows::magic_request(gw, req, ctx).await,
        (_, p) if flows::magic_token(p).is_some() => {
            let token = flows::magic_token(p).unwrap_or_default().to_string();
            flows::magic(gw, req, ctx, &token).await
        }
        (Method::POST, "/auth/password/reset") => flows::password_reset(gw, req, ctx).await,
        (Method::POST, "/auth/password/change") => account::password_change(gw, req, ctx).await,
        (Method::GET, "/auth/sessions") => account::list_sessions(gw, req, ctx).await,
        (Method::POST, "/auth/sessions/revoke-others") => {
            account::revoke_others(gw, req, ctx).await
        }
        (_, p) if account::session_id_segment(p).is_some() => {
            let id = account::session_id_segment(p)
                .unwrap_or_default()
                .to_string();
            account::revoke_session(gw, req, ctx, &id).await
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

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: String,
    password: String,
    #[serde(default)]
    device_label: Option<String>,
}

/// The identity of a user as `/auth/login` and `/auth/session` show it.
fn user_json(id: &str, email: &str, roles: &[String]) -> serde_json::Value {
    json!({"id": id, "email": email, "roles": roles})
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
pub async fn verify_password(
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

/// Opens a session for a user and answers with the token, the session and the user, setting
/// the cookie.
///
/// # Errors
/// 503 when the database is down.
pub async fn start_session(
    gw: &Gateway,
    ctx: &Ctx,
    user: &users::User,
    meta: &SessionMeta,
    status: StatusCode,
) -> Result<Response<Body>, HttpError> {
    let session = gw.sessions.create(&user.id, meta).await?;
    Ok(session_response(gw, ctx, user, &session, status))
}

/// The JSON answer to a new session (token, session, user), setting the cookie.
fn session_response(
    gw: &Gateway,
    ctx: &Ctx,
    user: &users::User,
    session: &NewSession,
    status: StatusCode,
) -> Response<Body> {
    let body = json!({
        "token": session.token,
        "session": {"id": session.id, "created_at": rfc3339(session.created_at), "expires_at": rfc3339(session.expires_at)},
        "user": user_json(&user.id, &user.email, &user.roles),
    });
    let mut resp = json_response(status, &body);
    resp.headers_mut()
        .append(header::SET_COOKIE, gw.session_cookie(ctx, session));
    resp
}

/// What the session list shows about where a session was opened.
pub fn session_meta(headers: &HeaderMap, ctx: &Ctx, device_label: Option<String>) -> SessionMeta {
    SessionMeta {
        ip_address: Some(ctx.client_ip),
        device_label,
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    }
}

async fn login(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx,
) -> Result<Response<Body>, HttpError> {
    gw.require_same_origin(req.headers())?;
    let headers = req.headers().clone();
    let body: LoginBody = read_json(req).await?;
    let (user, session) = password_login(
        gw,
        &headers,
        ctx,
        &body.email,
        &body.password,
        body.device_label,
    )
    .await?;
    Ok(session_response(gw, ctx, &user, &session, StatusCode::OK))
}

/// Password login, shared by `POST /auth/login` in JSON and the sign-in form: checks the
/// password, opens a session and checks again that the password and the user's status have
/// not changed meanwhile (else the session is revoked at once and the answer is
/// [`HttpError::InvalidCredentials`]); then re-hashes a password stored at another cost. The
/// caller answers and sets the cookie.
///
/// # Errors
/// As [`verify_password`]; 503 when the session cannot be stored or checked.
pub async fn password_login(
    gw: &Gateway,
    headers: &HeaderMap,
    ctx: &mut Ctx,
    email: &str,
    password: &str,
    device_label: Option<String>,
) -> Result<(users::User, NewSession), HttpError> {
    gw.limits
        .check(Action::Login, ctx.client_ip, &rate_key(email))
        .await?;
    let (user, hash) = verify_password(gw, email, password).await?;
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

/// The per-email rate limit key of what a client typed: the normalized email, or (malformed)
/// the trimmed, lower-cased text, so spelling variants share one key.
pub fn rate_key(email: &str) -> String {
    users::normalize_email(email).unwrap_or_else(|_| email.trim().to_lowercase())
}

/// `POST /auth/logout` (JSON, or the sign-out form): revokes this session if there is one,
/// removes the cookie and sends [`CLEAR_SITE_DATA_ON_LOGOUT`]; the form gets a `303` to the
/// sign-in page.
async fn logout(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx,
) -> Result<Response<Body>, HttpError> {
    gw.require_same_origin(req.headers())?;
    let identity = gw.authenticate(req.headers(), ctx.client_ip).await?;
    let revoked = match &identity {
        Some(id) => {
            ctx.user_id = Some(id.user_id.to_string());
            gw.sessions.revoke_token(id, "logout").await? > 0
        }
        None => false,
    };
    let mut resp = if is_form(req.headers()) {
        pages::see_other("/auth/login?notice=signed_out")
    } else {
        json_response(StatusCode::OK, &json!({"revoked": revoked}))
    };
    let h = resp.headers_mut();
    h.append(header::SET_COOKIE, gw.clear_cookie(ctx));
    h.insert(
        CLEAR_SITE_DATA,
        HeaderValue::from_static(CLEAR_SITE_DATA_ON_LOGOUT),
    );
    Ok(resp)
}

async fn session(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx,
) -> Result<Response<Body>, HttpError> {
    let id = gw.require_identity(req.headers(), ctx).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "user": user_json(&id.user_id, &id.email, &id.roles.names),
            "session": {"id": id.session_id, "created_at": rfc3339(id.created_at()), "expires_at": rfc3339(id.expires_at)},
        }),
    ))
}

/// The original request of a forward-auth check: from `X-Original-URI` (nginx) or
/// `X-Forwarded-Uri` (Traefik), with `X-Forwarded-Method` / `X-Original-Method`, honored only
/// from trusted proxies.
fn original_request(
    gw: &Gateway,
    conn: Conn,
    headers: &HeaderMap,
) -> Result<(Method, http::Uri), HttpError> {
    let untrusted = || {
        HttpError::BadRequest(
            "forward-auth needs X-Original-URI or X-Forwarded-Uri from a proxy listed in server.trusted_proxies".into(),
        )
    };
    if !gw.is_trusted(conn.peer.ip()) {
        return Err(untrusted());
    }
    let raw = ["x-original-uri", "x-forwarded-uri"]
        .iter()
        .find_map(|n| headers.get(*n))
        .ok_or_else(untrusted)?
        .to_str()
        .map_err(|_| HttpError::BadRequest("the original URI is not ASCII".into()))?;
    if !raw.starts_with('/') {
        return Err(HttpError::BadRequest(
            "the original URI must be a path starting with /".into(),
        ));
    }
    let uri: http::Uri = raw
        .parse()
        .map_err(|_| HttpError::BadRequest("the original URI is malformed".into()))?;
    let method = match ["x-forwarded-method", "x-original-method"]
        .iter()
        .find_map(|n| headers.get(*n))
    {
        Some(m) => Method::from_bytes(m.as_bytes())
            .map_err(|_| HttpError::BadRequest("malformed X-Forwarded-Method".into()))?,
        None => Method::GET,
    };
    Ok((method, uri))
}

/// `/auth/verify`: evaluates the route policy of the original request and answers 200 with
/// the identity headers, or 401 / 403. Beside the identity headers, a 200 names what the
/// backend must receive for the request to be what the gateway itself would forward:
/// [`UPSTREAM_URI`] (the request target, which the signature covers), [`UPSTREAM_COOKIE`] and
/// [`UPSTREAM_AUTHORIZATION`] (the client's credentials less the session's; absent when none
/// remain). A 401 for a browser navigation (the proxy's own rule) carries the `Location` of
/// the sign-in page that the gateway would redirect it to.
async fn verify(
    gw: &Gateway,
    conn: Conn,
    req: Request<Incoming>,
    ctx: &mut Ctx,
) -> Result<Response<Body>, HttpError> {
    ctx.route = "/auth/verify".into();
    let (method, uri) = original_request(gw, conn, req.headers())?;
    let normalized =
        path::normalize(uri.path()).map_err(|e| HttpError::BadRequest(e.to_string()))?;
    let mut resp = json_response(StatusCode::OK, &json!({"ok": true}));
    if path::has_prefix(&normalized, "/auth") {
        return Ok(resp);
    }
    let route = gw.route(&normalized)?.ok_or(HttpError::Forbidden)?;
    let identity = gw
        .authenticate_for(route, &method, req.headers(), ctx)
        .await?;
    match authorize(route, identity.as_deref()) {
        Err(HttpError::Unauthenticated) if is_browser_navigation(&method, req.headers()) => {
            let mut resp = HttpError::Unauthenticated.into_response();
            if let Ok(location) = HeaderValue::from_str(&login_location(&uri)) {
                resp.headers_mut().insert(header::LOCATION, location);
            }
            return Ok(resp);
        }
        other => other?,
    }
    let target = upstream::target(route, &normalized, uri.query());
    let headers = resp.headers_mut();
    let passed = headers::passed_credentials(req.headers(), &gw.config.sessions.cookie_name);
    if let Some(first) = passed.authorization.into_iter().next() {
        headers.insert(UPSTREAM_AUTHORIZATION, first);
    }
    if let Some(cookie) = passed.cookie {
        headers.insert(UPSTREAM_COOKIE, cookie);
    }
    if let Some(identity) = identity {
        gw.inject_identity(headers, &identity, &method, &target, &ctx.request_id);
    }
    let target = HeaderValue::from_str(&target)
        .map_err(|_| HttpError::BadRequest("invalid request target".into()))?;
    headers.insert(UPSTREAM_URI, target);
    Ok(resp)
}

//! The JSON front end under `/auth`: each endpoint reads its JSON body, calls its flow in
//! [`crate::auth`] and answers in JSON; errors are [`HttpError`]s, answered by the proxy. A
//! state change made with the session cookie passes the Origin check first (CSRF); one
//! authenticated by `Authorization: Bearer` need not (browsers cannot be made to send it).

use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use serde_json::json;

use crate::app::{Ctx, Gateway};
use crate::auth::code::{self, Verified};
use crate::auth::{self, account, magic, password, register, reset};
use crate::body::{Body, Incoming};
use crate::error::HttpError;
use crate::http::cookie::{CLEAR_SITE_DATA, CLEAR_SITE_DATA_ON_LOGOUT};
use crate::http::json::{read as read_json, response as json_response};
use crate::sessions::{Identity, NewSession};
use crate::users;

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

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The identity of a user as `/auth/login` and `/auth/session` show it.
fn user_json(id: &str, email: &str, roles: &[String]) -> serde_json::Value {
    json!({"id": id, "email": email, "roles": roles})
}

/// The JSON answer to a new session (token, session, user), setting the cookie.
fn session_response(
    gw: &Gateway,
    ctx: &Ctx<'_>,
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

/// The identity of a state-changing request: the CSRF check first (403), then authenticated
/// (401).
async fn changer(
    gw: &Gateway,
    headers: &HeaderMap,
    ctx: &mut Ctx<'_>,
) -> Result<Arc<Identity>, HttpError> {
    gw.check_csrf(headers)?;
    gw.require_identity(headers, ctx).await
}

/// `POST /auth/login` {email, password, device_label?} → 200 with the session (token, session,
/// user), the cookie set.
pub(crate) async fn login(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx<'_>,
) -> Result<Response<Body>, HttpError> {
    gw.require_same_origin(req.headers())?;
    let headers = req.headers().clone();
    let body: password::LoginInput = read_json(req).await?;
    let (user, session) = password::login(
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

/// `POST /auth/logout` → 200 `{"revoked": bool}`: revokes this session if there is one,
/// removes the cookie and sends [`CLEAR_SITE_DATA_ON_LOGOUT`].
pub(crate) async fn logout(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx<'_>,
) -> Result<Response<Body>, HttpError> {
    gw.require_same_origin(req.headers())?;
    let revoked = account::logout(gw, req.headers(), ctx).await?;
    let mut resp = json_response(StatusCode::OK, &json!({"revoked": revoked}));
    signed_out(gw, ctx, &mut resp);
    Ok(resp)
}

/// What every sign-out answer carries: the cookie removed and [`CLEAR_SITE_DATA_ON_LOGOUT`].
pub(crate) fn signed_out(gw: &Gateway, ctx: &Ctx<'_>, resp: &mut Response<Body>) {
    let h = resp.headers_mut();
    h.append(header::SET_COOKIE, gw.clear_cookie(ctx));
    h.insert(
        CLEAR_SITE_DATA,
        HeaderValue::from_static(CLEAR_SITE_DATA_ON_LOGOUT),
    );
}

/// `GET /auth/session` → 200 with the user and the session ("who am I").
pub(crate) async fn session(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx<'_>,
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

/// `POST /auth/register` {email, password} → 202.
pub(crate) async fn register(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx<'_>,
) -> Result<Response<Body>, HttpError> {
    let input: register::RegisterInput = read_json(req).await?;
    register::register(gw, ctx, input).await?;
    Ok(accepted())
}

/// `POST /auth/otp/request` {email, purpose} → 202.
pub(crate) async fn otp_request(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx<'_>,
) -> Result<Response<Body>, HttpError> {
    let input: code::RequestInput = read_json(req).await?;
    code::request(gw, ctx, input).await?;
    Ok(accepted())
}

/// `POST /auth/otp/verify` {email, code, purpose, device_label?}: `login` → 200 with the
/// session (cookie set, as password login); `verify_email` → 200 `{"email_verified": true}`.
pub(crate) async fn otp_verify(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx<'_>,
) -> Result<Response<Body>, HttpError> {
    gw.require_same_origin(req.headers())?;
    let headers = req.headers().clone();
    let input: code::VerifyInput = read_json(req).await?;
    match code::verify(gw, ctx, &input).await? {
        Verified::Login(user) => {
            let session = auth::start_session(gw, ctx, &headers, &user, input.device_label).await?;
            Ok(session_response(gw, ctx, &user, &session, StatusCode::OK))
        }
        Verified::EmailVerified(user) => Ok(json_response(
            StatusCode::OK,
            &json!({"email": user.email, "email_verified": true}),
        )),
    }
}

/// `POST /auth/magic/request` {email, return_to?} → 202.
pub(crate) async fn magic_request(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx<'_>,
) -> Result<Response<Body>, HttpError> {
    let input: magic::RequestInput = read_json(req).await?;
    magic::request(gw, ctx, input).await?;
    Ok(accepted())
}

/// `POST /auth/magic/{token}` from an API client: consumes the link, opens a session, sets
/// the cookie and answers 303 to the stored `return_to`, as for a browser; a failure is a
/// JSON error.
///
/// # Errors
/// 403 cross-origin (login CSRF), 429 over the per-IP limit of code verification, 401
/// [`HttpError::InvalidLink`], 503.
pub(crate) async fn magic_consume(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx<'_>,
    token: &str,
) -> Result<Response<Body>, HttpError> {
    let headers = req.headers().clone();
    gw.require_same_origin(&headers)?;
    let login = magic::consume(gw, ctx, token).await?;
    let session = auth::start_session(gw, ctx, &headers, &login.user, None).await?;
    Ok(super::forms::signed_in(gw, ctx, &login.return_to, &session))
}

/// `POST /auth/password/reset` {email, code, new_password} → 200 with the number of sessions
/// revoked.
pub(crate) async fn password_reset(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx<'_>,
) -> Result<Response<Body>, HttpError> {
    gw.require_same_origin(req.headers())?;
    let input: reset::ResetInput = read_json(req).await?;
    let revoked = reset::reset(gw, ctx, &input).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"status": "password_reset", "revoked_sessions": revoked}),
    ))
}

/// `POST /auth/password/change` {current_password, new_password} → 200 with the number of
/// other sessions revoked.
pub(crate) async fn password_change(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx<'_>,
) -> Result<Response<Body>, HttpError> {
    let identity = changer(gw, req.headers(), ctx).await?;
    let input: account::ChangeInput = read_json(req).await?;
    let revoked = account::change_password(gw, ctx, &identity, &input).await?;
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
pub(crate) async fn list_sessions(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx<'_>,
) -> Result<Response<Body>, HttpError> {
    let identity = gw.require_identity(req.headers(), ctx).await?;
    let list = account::sessions(gw, &identity).await?;
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

/// `DELETE /auth/sessions/{id}`: revokes one session of the signed-in user (the current one
/// too, which also clears the cookie).
///
/// # Errors
/// 405 for another method, 401, 403 cross-origin, 404 when the id is not one of the caller's
/// live sessions (another user's included), 503.
pub(crate) async fn revoke_session(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx<'_>,
    id: &str,
) -> Result<Response<Body>, HttpError> {
    if req.method() != http::Method::DELETE {
        return Err(HttpError::MethodNotAllowed);
    }
    let identity = changer(gw, req.headers(), ctx).await?;
    let current = account::revoke_session(gw, &identity, id).await?;
    let mut resp = json_response(StatusCode::OK, &json!({"revoked": true}));
    if current {
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
pub(crate) async fn revoke_others(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx<'_>,
) -> Result<Response<Body>, HttpError> {
    let identity = changer(gw, req.headers(), ctx).await?;
    let revoked = account::revoke_others(gw, &identity).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"revoked_sessions": revoked}),
    ))
}

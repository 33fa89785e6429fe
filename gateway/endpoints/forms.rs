//! The HTML front end under `/auth`: the pages a browser gets (`GET`, rendered by
//! [`crate::pages`]) and the form posts they make (`application/x-www-form-urlencoded`). Each
//! post runs the same flow in [`crate::auth`] as its JSON endpoint and answers `303 See Other`
//! on success, or the same page again with the error's status and its public (generic)
//! message. Every one passes the CSRF check first: browsers send `Origin` with a form POST.

use http::{Request, Response, StatusCode, header};

use crate::app::{Ctx, Gateway};
use crate::auth::code::{self, Verified};
use crate::auth::{self, account, magic, password, register, reset};
use crate::body::{Body, Incoming};
use crate::codes;
use crate::config::Branding;
use crate::error::HttpError;
use crate::http::form::{self, Form};
use crate::http::paths::{
    MAGIC_SENT_PAGE, OTP_PAGE, REGISTER_PAGE, RESET_CONFIRM_PAGE, VERIFY_EMAIL_PAGE,
};
use crate::http::{query, query_param};
use crate::pages::{
    Message, html, login_page, logout_page, magic_confirm, magic_sent_page, notice, otp_page,
    register_page, reset_confirm_page, reset_request_page, see_other, signed_in_page,
    verify_email_page,
};
use crate::redirect::safe_return_to;
use crate::sessions::NewSession;

/// Serves the pages under `GET /auth`: `/auth` ("signed in as"), `/auth/login`,
/// `/auth/register`, `/auth/register/confirm`, `/auth/otp`, `/auth/magic`, `/auth/reset`,
/// `/auth/reset/confirm` and `/auth/logout`.
///
/// # Errors
/// 404 for another path; 503 when the session store cannot answer.
pub(crate) async fn page(
    gw: &Gateway,
    req: &Request<Incoming>,
    endpoint: &str,
    ctx: &mut Ctx<'_>,
) -> Result<Response<Body>, HttpError> {
    let uri = req.uri();
    let brand = &gw.config.branding;
    let param = |name| query_param(uri, name).unwrap_or_default();
    let page = match endpoint {
        "/auth" => match gw.authenticate(req.headers(), ctx.client_ip).await? {
            Some(id) => {
                ctx.user_id = Some(id.user_id.to_string());
                signed_in_page(brand, &id.email, &id.roles.names)
            }
            None => {
                return Ok(see_other(&format!(
                    "/auth/login?{}",
                    query(&[("return_to", "/auth/")])
                )));
            }
        },
        "/auth/login" => login_page(
            brand,
            &param("return_to"),
            "",
            notice(query_param(uri, "notice").as_deref()),
        ),
        REGISTER_PAGE => register_page(brand, "", &param("return_to"), Message::None),
        VERIFY_EMAIL_PAGE => {
            verify_email_page(brand, &param("email"), &param("return_to"), Message::None)
        }
        OTP_PAGE => otp_page(brand, &param("email"), &param("return_to"), Message::None),
        MAGIC_SENT_PAGE => magic_sent_page(brand, &param("email"), &param("return_to")),
        "/auth/reset" => reset_request_page(brand, "", Message::None),
        RESET_CONFIRM_PAGE => reset_confirm_page(brand, &param("email"), Message::None),
        "/auth/logout" => logout_page(brand),
        _ => return Err(HttpError::NotFound),
    };
    Ok(html(brand, StatusCode::OK, page))
}

/// The page again after a failed post: the error's status, its public message (a rate limit
/// says how long to wait) and its `Retry-After`; the internal cause, if any, goes to the log
/// only.
pub(crate) fn failed(
    brand: &Branding,
    ctx: &Ctx<'_>,
    e: HttpError,
    render: impl FnOnce(Message<'_>) -> String,
) -> Response<Body> {
    if let Some(cause) = e.internal_cause() {
        tracing::warn!(request_id = %ctx.request_id, error = %cause, "form post failed");
    }
    let text = e.to_string();
    let json = e.into_response();
    let mut resp = html(brand, json.status(), render(Message::Error(&text)));
    if let Some(after) = json.headers().get(header::RETRY_AFTER) {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, after.clone());
    }
    resp
}

/// `303` to `location` with the new session's cookie.
pub(crate) fn signed_in(
    gw: &Gateway,
    ctx: &Ctx<'_>,
    location: &str,
    session: &NewSession,
) -> Response<Body> {
    let mut resp = see_other(location);
    resp.headers_mut()
        .append(header::SET_COOKIE, gw.session_cookie(ctx, session));
    resp
}

/// The CSRF check ([`Gateway::require_same_origin`]), then the form.
async fn checked_form(gw: &Gateway, req: Request<Incoming>) -> Result<Form, HttpError> {
    gw.require_same_origin(req.headers())?;
    form::read(req).await
}

/// `path?email=…&return_to=…`, the pages that follow an emailed code or link.
fn page_for(path: &str, email: &str, return_to: &str) -> String {
    format!(
        "{path}?{}",
        query(&[("email", email), ("return_to", return_to)])
    )
}

/// The address as the flows store it, or as typed when it is malformed (then only shown).
fn shown_email(email: &str) -> String {
    auth::email_of(email).unwrap_or_else(|_| email.to_string())
}

/// `POST /auth/login` as a form (`email`, `password`, `return_to`): `303` to
/// `safe_return_to(return_to)` with the session cookie, or the sign-in page again with 401
/// and the same message whatever was wrong.
pub(crate) async fn login(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx<'_>,
) -> Response<Body> {
    let brand = &gw.config.branding;
    let headers = req.headers().clone();
    let form = match checked_form(gw, req).await {
        Ok(form) => form,
        Err(e) => return failed(brand, ctx, e, |m| login_page(brand, "/", "", m)),
    };
    let return_to = safe_return_to(form.field("return_to"));
    let email = form.get("email");
    match password::login(gw, &headers, ctx, email, form.get("password"), None).await {
        Ok((_, session)) => signed_in(gw, ctx, &return_to, &session),
        Err(e) => failed(brand, ctx, e, |m| login_page(brand, &return_to, email, m)),
    }
}

/// `POST /auth/register` as a form (`email`, `password`, `return_to`): `303` to the
/// verification page, whether the address was free or taken (the core,
/// [`register::register`], does the same work either way); a malformed email, a weak password
/// or a rate limit shows the form again.
pub(crate) async fn register(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx<'_>,
) -> Response<Body> {
    let brand = &gw.config.branding;
    let form = match checked_form(gw, req).await {
        Ok(form) => form,
        Err(e) => return failed(brand, ctx, e, |m| register_page(brand, "", "/", m)),
    };
    let email = form.get("email");
    let return_to = safe_return_to(form.field("return_to"));
    let input = register::RegisterInput {
        email: email.to_string(),
        password: form.get("password").to_string(),
    };
    match register::register(gw, ctx, input).await {
        Ok(()) => see_other(&page_for(
            VERIFY_EMAIL_PAGE,
            &shown_email(email),
            &return_to,
        )),
        Err(e) => failed(brand, ctx, e, |m| {
            register_page(brand, email, &return_to, m)
        }),
    }
}

/// `POST /auth/otp/request` as a form (`email`, `purpose`, `return_to`): `303` to the code
/// entry page (purpose `login`), the verification page (`verify_email`) or the reset form
/// (`password_reset`), whether or not the address has an account; a malformed email or a
/// rate limit shows the page again.
pub(crate) async fn otp_request(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx<'_>,
) -> Response<Body> {
    let brand = &gw.config.branding;
    let form = match checked_form(gw, req).await {
        Ok(form) => form,
        Err(e) => return failed(brand, ctx, e, |m| login_page(brand, "/", "", m)),
    };
    let (email, purpose) = (form.get("email"), form.get("purpose"));
    let return_to = safe_return_to(form.field("return_to"));
    let render = |m: Message<'_>| match purpose {
        "password_reset" => reset_request_page(brand, email, m),
        "verify_email" => verify_email_page(brand, email, &return_to, m),
        _ => login_page(brand, &return_to, email, m),
    };
    let input = code::RequestInput {
        email: email.to_string(),
        purpose: purpose.to_string(),
    };
    if let Err(e) = code::request(gw, ctx, input).await {
        return failed(brand, ctx, e, render);
    }
    let email = shown_email(email);
    match purpose {
        "password_reset" => see_other(&format!(
            "{RESET_CONFIRM_PAGE}?{}",
            query(&[("email", &email)])
        )),
        "verify_email" => see_other(&page_for(VERIFY_EMAIL_PAGE, &email, &return_to)),
        _ => see_other(&page_for(OTP_PAGE, &email, &return_to)),
    }
}

/// `POST /auth/otp/verify` as a form (`email`, `code`, `purpose`, `return_to`): a good
/// `login` code, or a good `verify_email` code (which proves the same mailbox), answers `303`
/// to `safe_return_to(return_to)` with the session cookie. A wrong, expired or used code
/// shows its page again with 401.
pub(crate) async fn otp_verify(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx<'_>,
) -> Response<Body> {
    let brand = &gw.config.branding;
    let headers = req.headers().clone();
    let form = match checked_form(gw, req).await {
        Ok(form) => form,
        Err(e) => return failed(brand, ctx, e, |m| login_page(brand, "/", "", m)),
    };
    let email = form.get("email");
    let return_to = safe_return_to(form.field("return_to"));
    let input = code::VerifyInput {
        email: email.to_string(),
        code: form.get("code").to_string(),
        purpose: form.get("purpose").to_string(),
        device_label: None,
    };
    let outcome = async {
        let (Verified::Login(user) | Verified::EmailVerified(user)) =
            code::verify(gw, ctx, &input).await?;
        let session = auth::start_session(gw, ctx, &headers, &user, None).await?;
        Ok::<_, HttpError>(signed_in(gw, ctx, &return_to, &session))
    }
    .await;
    outcome.unwrap_or_else(|e| {
        failed(brand, ctx, e, |m| match input.purpose.as_str() {
            "verify_email" => verify_email_page(brand, email, &return_to, m),
            _ => otp_page(brand, email, &return_to, m),
        })
    })
}

/// `POST /auth/magic/request` as a form (`email`, `return_to`; the sign-in page's "email me a
/// link" button): `303` to the "check your email" page whether or not the address has an
/// account; a malformed email or a rate limit shows the sign-in page again.
pub(crate) async fn magic_request(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx<'_>,
) -> Response<Body> {
    let brand = &gw.config.branding;
    let form = match checked_form(gw, req).await {
        Ok(form) => form,
        Err(e) => return failed(brand, ctx, e, |m| login_page(brand, "/", "", m)),
    };
    let email = form.get("email");
    let return_to = safe_return_to(form.field("return_to"));
    let input = magic::RequestInput {
        email: email.to_string(),
        return_to: Some(return_to.clone()),
    };
    match magic::request(gw, ctx, input).await {
        Ok(()) => see_other(&page_for(MAGIC_SENT_PAGE, &shown_email(email), &return_to)),
        Err(e) => failed(brand, ctx, e, |m| login_page(brand, &return_to, email, m)),
    }
}

/// `POST /auth/password/reset` as a form (`email`, `code`, `new_password`): `303` to the
/// sign-in page with a notice; any failure shows the reset form again.
pub(crate) async fn password_reset(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx<'_>,
) -> Response<Body> {
    let brand = &gw.config.branding;
    let form = match checked_form(gw, req).await {
        Ok(form) => form,
        Err(e) => return failed(brand, ctx, e, |m| reset_confirm_page(brand, "", m)),
    };
    let email = form.get("email");
    let input = reset::ResetInput {
        email: email.to_string(),
        code: form.get("code").to_string(),
        new_password: form.get("new_password").to_string(),
    };
    match reset::reset(gw, ctx, &input).await {
        Ok(_) => see_other("/auth/login?notice=password_reset"),
        Err(e) => failed(brand, ctx, e, |m| reset_confirm_page(brand, email, m)),
    }
}

/// `GET /auth/magic/{token}`: the confirm page, whose button POSTs the token back. It reads
/// and changes nothing: mail scanners prefetch links.
///
/// # Errors
/// 404 for a path segment that is not shaped like a token.
pub(crate) fn magic_page(gw: &Gateway, token: &str) -> Result<Response<Body>, HttpError> {
    if !codes::is_link_token(token) {
        return Err(HttpError::NotFound);
    }
    Ok(magic_confirm(&gw.config.branding, token))
}

/// `POST /auth/magic/{token}` from a browser (a form post, or `Accept: text/html`): consumes
/// the link, opens a session, sets the cookie and answers 303 to the stored `return_to`; a
/// failure answers the sign-in page with the error, whose "email me a link" asks for a new
/// one.
pub(crate) async fn magic_consume(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx<'_>,
    token: &str,
) -> Response<Body> {
    let headers = req.headers().clone();
    let outcome = async {
        gw.require_same_origin(&headers)?;
        let login = magic::consume(gw, ctx, token).await?;
        let session = auth::start_session(gw, ctx, &headers, &login.user, None).await?;
        Ok::<_, HttpError>((login.return_to, session))
    }
    .await;
    match outcome {
        Ok((return_to, session)) => signed_in(gw, ctx, &return_to, &session),
        Err(e) => {
            let brand = &gw.config.branding;
            failed(brand, ctx, e, |m| login_page(brand, "/", "", m))
        }
    }
}

/// `POST /auth/logout` as the sign-out form: revokes this session if there is one, removes
/// the cookie, sends `Clear-Site-Data` and answers `303` to the sign-in page.
///
/// # Errors
/// 403 cross-origin (as JSON: the form is not shown again), 503.
pub(crate) async fn logout(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &mut Ctx<'_>,
) -> Result<Response<Body>, HttpError> {
    gw.require_same_origin(req.headers())?;
    account::logout(gw, req.headers(), ctx).await?;
    let mut resp = see_other("/auth/login?notice=signed_out");
    super::api::signed_out(gw, ctx, &mut resp);
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_render_the_page_with_status_and_retry_after() {
        let ctx = Ctx::new(std::net::Ipv4Addr::LOCALHOST.into(), false);
        let brand = Branding::default();
        let resp = failed(&brand, &ctx, HttpError::InvalidCredentials, |m| {
            login_page(&brand, "/x", "a@example.com", m)
        });
        assert_eq!(resp.status(), http::StatusCode::UNAUTHORIZED);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let resp = failed(
            &brand,
            &ctx,
            HttpError::RateLimited(std::time::Duration::from_secs(30)),
            |m| {
                assert!(
                    matches!(
                        m,
                        Message::Error("too many attempts; try again in 30 seconds")
                    ),
                    "{m:?}"
                );
                login_page(&brand, "/", "", m)
            },
        );
        assert_eq!(resp.status(), http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "30");
    }
}

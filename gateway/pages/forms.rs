//! Form posts from the pages (`application/x-www-form-urlencoded`). Each one runs the same
//! core as its JSON endpoint and answers `303 See Other` on success, or the same page again
//! with the error's status and its public (generic) message. Every one passes the CSRF check
//! first: browsers send `Origin` with a form POST.

use http::{Request, Response, header};

use super::{
    Message, html, login_page, otp_page, register_page, reset_confirm_page, reset_request_page,
    see_other, verify_email_page,
};
use crate::app::{Ctx, Gateway};
use crate::body::{Body, Incoming};
use crate::config::Branding;
use crate::endpoints::flows::{
    self, MagicRequestInput, OtpRequestInput, OtpVerifyInput, RegisterInput, ResetInput, Verified,
};
use crate::endpoints::{self, session_meta};
use crate::error::HttpError;
use crate::http::form::{self, Form};
use crate::http::paths::{MAGIC_SENT_PAGE, OTP_PAGE, RESET_CONFIRM_PAGE, VERIFY_EMAIL_PAGE};
use crate::http::query;
use crate::redirect::safe_return_to;
use crate::sessions::NewSession;

/// The page again after a failed post: the error's status, its public message (a rate limit
/// says how long to wait) and its `Retry-After`; the internal cause, if any, goes to the log
/// only.
pub fn failed(
    brand: &Branding,
    ctx: &Ctx,
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
pub fn signed_in(gw: &Gateway, ctx: &Ctx, location: &str, session: &NewSession) -> Response<Body> {
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
    flows::email_of(email).unwrap_or_else(|_| email.to_string())
}

/// `POST /auth/login` as a form (`email`, `password`, `return_to`): `303` to
/// `safe_return_to(return_to)` with the session cookie, or the sign-in page again with 401
/// and the same message whatever was wrong.
pub async fn login(gw: &Gateway, req: Request<Incoming>, ctx: &mut Ctx) -> Response<Body> {
    let brand = &gw.config.branding;
    let headers = req.headers().clone();
    let form = match checked_form(gw, req).await {
        Ok(form) => form,
        Err(e) => return failed(brand, ctx, e, |m| login_page(brand, "/", "", m)),
    };
    let return_to = safe_return_to(form.field("return_to"));
    let email = form.get("email");
    match endpoints::password_login(gw, &headers, ctx, email, form.get("password"), None).await {
        Ok((_, session)) => signed_in(gw, ctx, &return_to, &session),
        Err(e) => failed(brand, ctx, e, |m| login_page(brand, &return_to, email, m)),
    }
}

/// `POST /auth/register` as a form (`email`, `password`, `return_to`): `303` to the
/// verification page, whether the address was free or taken (the core,
/// [`flows::do_register`], does the same work either way); a malformed email, a weak password
/// or a rate limit shows the form again.
pub async fn register(gw: &Gateway, req: Request<Incoming>, ctx: &mut Ctx) -> Response<Body> {
    let brand = &gw.config.branding;
    let form = match checked_form(gw, req).await {
        Ok(form) => form,
        Err(e) => return failed(brand, ctx, e, |m| register_page(brand, "", "/", m)),
    };
    let email = form.get("email");
    let return_to = safe_return_to(form.field("return_to"));
    let input = RegisterInput {
        email: email.to_string(),
        password: form.get("password").to_string(),
    };
    match flows::do_register(gw, ctx, input).await {
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
pub async fn otp_request(gw: &Gateway, req: Request<Incoming>, ctx: &mut Ctx) -> Response<Body> {
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
    let input = OtpRequestInput {
        email: email.to_string(),
        purpose: purpose.to_string(),
    };
    if let Err(e) = flows::do_otp_request(gw, ctx, input).await {
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
pub async fn otp_verify(gw: &Gateway, req: Request<Incoming>, ctx: &mut Ctx) -> Response<Body> {
    let brand = &gw.config.branding;
    let headers = req.headers().clone();
    let form = match checked_form(gw, req).await {
        Ok(form) => form,
        Err(e) => return failed(brand, ctx, e, |m| login_page(brand, "/", "", m)),
    };
    let email = form.get("email");
    let return_to = safe_return_to(form.field("return_to"));
    let input = OtpVerifyInput {
        email: email.to_string(),
        code: form.get("code").to_string(),
        purpose: form.get("purpose").to_string(),
        device_label: None,
    };
    let outcome = async {
        let (Verified::Login(user) | Verified::EmailVerified(user)) =
            flows::do_otp_verify(gw, ctx, &input).await?;
        let meta = session_meta(&headers, ctx, None);
        let session = gw.sessions.create(&user.id, &meta).await?;
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
pub async fn magic_request(gw: &Gateway, req: Request<Incoming>, ctx: &mut Ctx) -> Response<Body> {
    let brand = &gw.config.branding;
    let form = match checked_form(gw, req).await {
        Ok(form) => form,
        Err(e) => return failed(brand, ctx, e, |m| login_page(brand, "/", "", m)),
    };
    let email = form.get("email");
    let return_to = safe_return_to(form.field("return_to"));
    let input = MagicRequestInput {
        email: email.to_string(),
        return_to: Some(return_to.clone()),
    };
    match flows::do_magic_request(gw, ctx, input).await {
        Ok(()) => see_other(&page_for(MAGIC_SENT_PAGE, &shown_email(email), &return_to)),
        Err(e) => failed(brand, ctx, e, |m| login_page(brand, &return_to, email, m)),
    }
}

/// `POST /auth/password/reset` as a form (`email`, `code`, `new_password`): `303` to the
/// sign-in page with a notice; any failure shows the reset form again.
pub async fn password_reset(gw: &Gateway, req: Request<Incoming>, ctx: &mut Ctx) -> Response<Body> {
    let brand = &gw.config.branding;
    let form = match checked_form(gw, req).await {
        Ok(form) => form,
        Err(e) => return failed(brand, ctx, e, |m| reset_confirm_page(brand, "", m)),
    };
    let email = form.get("email");
    let input = ResetInput {
        email: email.to_string(),
        code: form.get("code").to_string(),
        new_password: form.get("new_password").to_string(),
    };
    match flows::do_password_reset(gw, ctx, &input).await {
        Ok(_) => see_other("/auth/login?notice=password_reset"),
        Err(e) => failed(brand, ctx, e, |m| reset_confirm_page(brand, email, m)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_render_the_page_with_status_and_retry_after() {
        let ctx = Ctx {
            request_id: "r".into(),
            route: "/auth".into(),
            user_id: None,
            client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            https: false,
            host: None,
        };
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

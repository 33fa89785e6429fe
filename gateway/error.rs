//! The one error type at the HTTP boundary. Each variant chooses its status in an exhaustive
//! match (no catch-all, so a new variant must choose) and a stable `code` for the JSON body
//! `{"error":{"code","message"}}`. Internal causes are kept as the error's source, logged once
//! ([`HttpError::internal_cause`]), never sent to the client.
//!
//! Failures below the HTTP layer are sorted by kind, not by where they happened: a dependency
//! that cannot answer now (the database down, saturated or timing out, the hasher overloaded)
//! is [`HttpError::Unavailable`], 503 with `Retry-After`; a statement the database refused, or
//! anything else that should not happen, is a bug: [`HttpError::Internal`], 500.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{Body, BoxError, full};

#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    #[error("{0}")]
    BadRequest(String),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("authentication required")]
    Unauthenticated,
    /// Browser navigation without a session: 302 to this same-origin login location.
    #[error("authentication required")]
    LoginRedirect(String),
    #[error("email or password is incorrect")]
    InvalidCredentials,
    #[error("the code is wrong or has expired")]
    InvalidCode,
    /// A magic link that is unknown, used or expired (or whose account cannot sign in). Its
    /// `code()` stays `invalid_code`, as API clients of 0.1.0 match on it; the message says
    /// *link*.
    #[error("this sign-in link has expired or was already used; ask for a new one")]
    InvalidLink,
    #[error("you do not have access to this resource")]
    Forbidden,
    #[error("cross-site request refused: the Origin does not match")]
    CrossOrigin,
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("unsupported content type; send application/json")]
    UnsupportedMediaType,
    #[error("{0}")]
    Unprocessable(String),
    /// The wait is the rate limit's or the failure budget's, as `Retry-After` gives it.
    #[error("too many attempts; try again in {}", wait_text(*.0))]
    RateLimited(Duration),
    /// A dependency cannot answer now: 503 with `Retry-After`.
    #[error("temporarily unavailable; retry shortly")]
    Unavailable(#[source] BoxError),
    /// The upstream could not be reached, broke, or answered what nobody asked for: 502.
    #[error("upstream unreachable")]
    BadGateway(#[source] BoxError),
    #[error("upstream timed out")]
    GatewayTimeout,
    /// A bug: 500.
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl HttpError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::NotFound => StatusCode::NOT_FOUND,
            HttpError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            HttpError::Unauthenticated
            | HttpError::InvalidCredentials
            | HttpError::InvalidCode
            | HttpError::InvalidLink => StatusCode::UNAUTHORIZED,
            HttpError::LoginRedirect(_) => StatusCode::FOUND,
            HttpError::Forbidden | HttpError::CrossOrigin => StatusCode::FORBIDDEN,
            HttpError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            HttpError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            HttpError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            HttpError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            HttpError::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            HttpError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub(crate) fn code(&self) -> &'static str {
        match self {
            HttpError::BadRequest(_) => "bad_request",
            HttpError::NotFound => "not_found",
            HttpError::MethodNotAllowed => "method_not_allowed",
            HttpError::Unauthenticated | HttpError::LoginRedirect(_) => "unauthenticated",
            HttpError::InvalidCredentials => "invalid_credentials",
            HttpError::InvalidCode | HttpError::InvalidLink => "invalid_code",
            HttpError::Forbidden => "forbidden",
            HttpError::CrossOrigin => "cross_origin",
            HttpError::PayloadTooLarge => "payload_too_large",
            HttpError::UnsupportedMediaType => "unsupported_media_type",
            HttpError::Unprocessable(_) => "invalid_input",
            HttpError::RateLimited(_) => "rate_limited",
            HttpError::Unavailable(_) => "unavailable",
            HttpError::BadGateway(_) => "bad_gateway",
            HttpError::GatewayTimeout => "gateway_timeout",
            HttpError::Internal(_) => "internal",
        }
    }

    /// A bug (500), for a cause that is not one of the gateway's own error types.
    pub(crate) fn internal(cause: impl Into<BoxError>) -> Self {
        HttpError::Internal(cause.into())
    }

    /// The message for the client: never the internal cause (the variants that have one
    /// display a fixed text; the cause is their source).
    fn public_message(&self) -> String {
        self.to_string()
    }

    /// The cause to log, with everything below it (`a: b: c`), for the errors whose cause the
    /// client does not see.
    pub(crate) fn internal_cause(&self) -> Option<Chain<'_>> {
        match self {
            HttpError::Unavailable(c) | HttpError::BadGateway(c) | HttpError::Internal(c) => {
                Some(Chain(c.as_ref()))
            }
            _ => None,
        }
    }

    /// The JSON response for this error; for [`HttpError::LoginRedirect`] a bare `302` (a
    /// browser follows it, and nothing in it is JSON).
    pub(crate) fn into_response(self) -> Response<Body> {
        let mut resp = match &self {
            HttpError::LoginRedirect(_) => Response::new(full(String::new())),
            _ => {
                let body = serde_json::json!({"error": {"code": self.code(), "message": self.public_message()}});
                let mut resp = Response::new(full(body.to_string()));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                resp
            }
        };
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match &self {
            HttpError::RateLimited(after) => {
                let secs = (after.as_secs() + u64::from(after.subsec_nanos() > 0))
                    .max(1)
                    .to_string();
                if let Ok(v) = HeaderValue::from_str(&secs) {
                    h.insert(header::RETRY_AFTER, v);
                }
            }
            HttpError::Unavailable(_) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            HttpError::Unauthenticated => {
                h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            HttpError::LoginRedirect(location) => {
                if let Ok(v) = HeaderValue::from_str(location) {
                    h.insert(header::LOCATION, v);
                }
            }
            _ => {}
        }
        resp
    }
}

/// An error and its sources, displayed as `error: source: source...`; a source whose text
/// the error before it already shows (`database error: {0}`) is not repeated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chain<'a>(&'a (dyn StdError + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.to_string();
        f.write_str(&shown)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            let text = s.to_string();
            if !shown.contains(&text) {
                write!(f, ": {text}")?;
            }
            shown = text;
            source = s.source();
        }
        Ok(())
    }
}

/// A wait as people say it, rounded up: "1 second", "45 seconds", "15 minutes", "2 hours".
pub fn wait_text(wait: Duration) -> String {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let (n, unit) = match secs.max(1) {
        s @ ..60 => (s, "second"),
        s @ ..3600 => (s.div_ceil(60), "minute"),
        s => (s.div_ceil(3600), "hour"),
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// By kind: the database cannot answer now (503), or it refused a statement (a bug, 500).
impl From<crate::db::DbError> for HttpError {
    fn from(e: crate::db::DbError) -> Self {
        if e.is_unavailable() {
            HttpError::Unavailable(Box::new(e))
        } else {
            HttpError::Internal(Box::new(e))
        }
    }
}

/// For the flows that change a user found moments before: anything but a database failure
/// (the user vanished meanwhile) is a bug.
impl From<crate::users::UserError> for HttpError {
    fn from(e: crate::users::UserError) -> Self {
        match e {
            crate::users::UserError::Db(db) => HttpError::from(db),
            other => HttpError::Internal(Box::new(other)),
        }
    }
}

impl From<crate::sessions::SessionError> for HttpError {
    fn from(e: crate::sessions::SessionError) -> Self {
        use crate::sessions::SessionError;
        match e {
            SessionError::Throttled(wait) => HttpError::RateLimited(wait),
            SessionError::Unavailable(_) if e.is_bug() => HttpError::Internal(Box::new(e)),
            SessionError::Unavailable(_) => HttpError::Unavailable(Box::new(e)),
        }
    }
}

impl From<crate::ratelimit::LimitError> for HttpError {
    fn from(e: crate::ratelimit::LimitError) -> Self {
        use crate::ratelimit::LimitError;
        match e {
            LimitError::Limited(wait) => HttpError::RateLimited(wait),
            LimitError::Store(db) => HttpError::from(db),
        }
    }
}

/// An overloaded hasher can answer shortly (503); one that failed is a bug (500).
impl From<crate::password::HashError> for HttpError {
    fn from(e: crate::password::HashError) -> Self {
        match e {
            crate::password::HashError::Overloaded => HttpError::Unavailable(Box::new(e)),
            crate::password::HashError::Failed(_) => HttpError::Internal(Box::new(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[test]
    fn waits_read_as_people_say_them() {
        for (secs, text) in [
            (0.2, "1 second"),
            (1.0, "1 second"),
            (29.5, "30 seconds"),
            (59.0, "59 seconds"),
            (60.0, "1 minute"),
            (61.0, "2 minutes"),
            (900.0, "15 minutes"),
            (3599.0, "60 minutes"),
            (3600.0, "1 hour"),
            (3601.0, "2 hours"),
        ] {
            assert_eq!(wait_text(Duration::from_secs_f64(secs)), text, "{secs}");
        }
    }

    #[test]
    fn too_many_attempts_says_how_long_to_wait() {
        let e = HttpError::RateLimited(Duration::from_millis(14 * 60_000 + 1));
        assert_eq!(e.to_string(), "too many attempts; try again in 15 minutes");
        let resp = e.into_response();
        assert_eq!(resp.headers()[header::RETRY_AFTER], "841");
    }

    #[test]
    fn internal_causes_keep_their_chain_and_stay_out_of_the_body() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let e = HttpError::internal(Outer(std::io::Error::other("inner")));
        assert_eq!(e.internal_cause().unwrap().to_string(), "outer: inner");
        assert_eq!(e.to_string(), "internal error");
        assert!(HttpError::NotFound.internal_cause().is_none());

        #[derive(Debug, thiserror::Error)]
        #[error("database error: {0}")]
        struct Shows(#[source] std::io::Error);
        let e = HttpError::internal(Shows(std::io::Error::other("boom")));
        assert_eq!(
            e.internal_cause().unwrap().to_string(),
            "database error: boom",
            "a source the error already shows is not repeated"
        );
    }

    #[test]
    fn only_unavailability_asks_for_a_retry() {
        let down = HttpError::Unavailable("down".into()).into_response();
        assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(down.headers()[header::RETRY_AFTER], "1");
        let bug = HttpError::internal("bug").into_response();
        assert_eq!(bug.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(bug.headers().get(header::RETRY_AFTER).is_none());
        let overloaded = HttpError::from(crate::password::HashError::Overloaded);
        assert_eq!(overloaded.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn a_spent_link_says_link() {
        let e = HttpError::InvalidLink;
        assert!(e.to_string().contains("link"), "{e}");
        assert!(!e.to_string().contains("code"), "{e}");
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::UNAUTHORIZED, "invalid_code")
        );
    }

    #[tokio::test]
    async fn the_login_redirect_carries_no_json() {
        let resp = HttpError::LoginRedirect("/auth/login?return_to=%2Fapp".into()).into_response();
        assert_eq!(resp.status(), StatusCode::FOUND);
        assert_eq!(
            resp.headers()[header::LOCATION],
            "/auth/login?return_to=%2Fapp"
        );
        assert!(resp.headers().get(header::CONTENT_TYPE).is_none());
        assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(body.is_empty(), "{body:?}");
    }
}

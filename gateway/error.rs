//! The one error type at the HTTP boundary. Each variant chooses its status in an exhaustive
//! match (no catch-all, so a new variant must choose) and a stable `code` for the JSON body
//! `{"error":{"code","message"}}`. Internal causes are logged once, never sent to the client.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use crate::proxy::{Body, full};

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
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
    #[error("too many attempts; retry later")]
    RateLimited(Duration),
    #[error("temporarily unavailable; retry shortly")]
    Unavailable(String),
    #[error("upstream unreachable")]
    BadGateway(String),
    #[error("upstream timed out")]
    GatewayTimeout,
    #[error("internal error")]
    Internal(String),
}

impl HttpError {
    pub fn status(&self) -> StatusCode {
        match self {
            HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::NotFound => StatusCode::NOT_FOUND,
            HttpError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            HttpError::Unauthenticated | HttpError::InvalidCredentials | HttpError::InvalidCode => {
                StatusCode::UNAUTHORIZED
            }
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

    pub fn code(&self) -> &'static str {
        match self {
            HttpError::BadRequest(_) => "bad_request",
            HttpError::NotFound => "not_found",
            HttpError::MethodNotAllowed => "method_not_allowed",
            HttpError::Unauthenticated | HttpError::LoginRedirect(_) => "unauthenticated",
            HttpError::InvalidCredentials => "invalid_credentials",
            HttpError::InvalidCode => "invalid_code",
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

    /// The message for the client: never the internal cause.
    fn public_message(&self) -> String {
        match self {
            HttpError::Unavailable(_) => "temporarily unavailable; retry shortly".into(),
            HttpError::BadGateway(_) => "upstream unreachable".into(),
            HttpError::Internal(_) => "internal error".into(),
            other => other.to_string(),
        }
    }

    /// The cause to log, if it differs from what the client sees.
    pub fn internal_cause(&self) -> Option<&str> {
        match self {
            HttpError::Unavailable(c) | HttpError::BadGateway(c) | HttpError::Internal(c) => {
                Some(c)
            }
            _ => None,
        }
    }

    /// The JSON response for this error.
    pub fn into_response(self) -> Response<Body> {
        let body =
            serde_json::json!({"error": {"code": self.code(), "message": self.public_message()}});
        let mut resp = Response::new(full(body.to_string()));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match &self {
            HttpError::RateLimited(after) => {
                let secs = after.as_secs().max(1).to_string();
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

impl From<crate::db::DbError> for HttpError {
    fn from(e: crate::db::DbError) -> Self {
        HttpError::Unavailable(e.to_string())
    }
}

/// For the flows that change a user found moments before: anything but a database failure
/// (the user vanished meanwhile) is a bug.
impl From<crate::users::UserError> for HttpError {
    fn from(e: crate::users::UserError) -> Self {
        match e {
            crate::users::UserError::Db(db) => HttpError::from(db),
            other => HttpError::Internal(other.to_string()),
        }
    }
}

impl From<crate::sessions::SessionError> for HttpError {
    fn from(e: crate::sessions::SessionError) -> Self {
        HttpError::Unavailable(e.to_string())
    }
}

impl From<crate::password::HashError> for HttpError {
    fn from(e: crate::password::HashError) -> Self {
        HttpError::Unavailable(e.to_string())
    }
}

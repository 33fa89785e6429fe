//! Phase 3, authenticate: the session a request presents (`Authorization: Bearer gw_...`
//! first, else the session cookie), checked by [`Sessions::validate`]; a cache miss spends the
//! client address's session-miss budget.
//!
//! [`Sessions::validate`]: crate::sessions::Sessions::validate

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, Method, header};

use super::{Ctx, Gateway};
use crate::config::{AuthPolicy, Route};
use crate::error::HttpError;
use crate::headers;
use crate::sessions::Identity;

/// The token a request presents, and how.
pub(crate) fn presented_token<'a>(headers: &'a HeaderMap, cookie_name: &str) -> Option<&'a str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(headers::bearer_token)
        .or_else(|| headers::cookie(headers, cookie_name))
}

impl Gateway {
    /// Phase 3 for a matched route: the identity, if the route looks at credentials (public
    /// routes never do). Also refuses a method the route does not allow.
    ///
    /// # Errors
    /// 405 for a method outside `route.methods`; 503 when the session store cannot answer.
    pub(crate) async fn authenticate_for(
        &self,
        route: &Route,
        method: &Method,
        headers: &HeaderMap,
        ctx: &mut Ctx<'_>,
    ) -> Result<Option<Arc<Identity>>, HttpError> {
        if !route.methods.is_empty() && !route.methods.contains(method) {
            return Err(HttpError::MethodNotAllowed);
        }
        let identity = match route.auth {
            AuthPolicy::Public => None,
            AuthPolicy::Optional | AuthPolicy::Required => {
                self.authenticate(headers, ctx.client_ip).await?
            }
        };
        ctx.user_id = identity.as_ref().map(|i| i.user_id.to_string());
        Ok(identity)
    }

    /// Finds and checks the session presented by a request from `client_ip` (as
    /// [`Gateway::client_ip`] determined it): `Authorization: Bearer gw_...` first, else the
    /// session cookie. A cache miss spends the address's session-miss budget.
    ///
    /// # Errors
    /// 503 when the session store cannot answer a cache miss; 429 when the address's
    /// session-miss budget (`rate_limits.session_miss_per_ip`) is spent.
    pub(crate) async fn authenticate(
        &self,
        headers: &HeaderMap,
        client_ip: IpAddr,
    ) -> Result<Option<Arc<Identity>>, HttpError> {
        let Some(token) = presented_token(headers, &self.config.sessions.cookie_name) else {
            return Ok(None);
        };
        let budget = || self.limits.spend_session_miss(client_ip);
        Ok(self.sessions.validate(token, &budget).await?)
    }

    /// The identity of the request, or 401; names the user in `ctx`.
    ///
    /// # Errors
    /// 401 without a valid session; 503 when the store cannot answer.
    pub(crate) async fn require_identity(
        &self,
        headers: &HeaderMap,
        ctx: &mut Ctx<'_>,
    ) -> Result<Arc<Identity>, HttpError> {
        let identity = self
            .authenticate(headers, ctx.client_ip)
            .await?
            .ok_or(HttpError::Unauthenticated)?;
        ctx.user_id = Some(identity.user_id.to_string());
        Ok(identity)
    }
}

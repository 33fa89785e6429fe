//! Phase 4, authorize: a route's policy applied to the identity (or its absence), and what a
//! browser navigation without a session gets instead of a 401: the sign-in page.

use http::{HeaderMap, Method, Uri};

use crate::config::{AuthPolicy, Route};
use crate::error::HttpError;
use crate::http::{accepts_html, paths};
use crate::sessions::Identity;

/// Applies a route's policy to the identity (or its absence).
///
/// # Errors
/// [`HttpError::Unauthenticated`] (401) and [`HttpError::Forbidden`] (403).
pub(crate) fn authorize(route: &Route, identity: Option<&Identity>) -> Result<(), HttpError> {
    match (route.auth, identity) {
        (AuthPolicy::Public | AuthPolicy::Optional, _) => Ok(()),
        (AuthPolicy::Required, None) => Err(HttpError::Unauthenticated),
        (AuthPolicy::Required, Some(id)) if !id.has_any_role(&route.roles) => {
            Err(HttpError::Forbidden)
        }
        (AuthPolicy::Required, Some(_)) => Ok(()),
    }
}

/// A top-level browser navigation: GET or HEAD that accepts HTML.
pub(crate) fn is_browser_navigation(method: &Method, headers: &HeaderMap) -> bool {
    (method == Method::GET || method == Method::HEAD) && accepts_html(headers)
}

/// `/auth/login?return_to=<path and query>`: always a same-origin relative path.
pub(crate) fn login_location(uri: &Uri) -> String {
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let encoded = percent_encoding::utf8_percent_encode(target, percent_encoding::NON_ALPHANUMERIC);
    format!("{}?return_to={encoded}", paths::LOGIN_PAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_location_is_relative_and_encoded() {
        let uri: Uri = "/a/b?x=1&y=//evil".parse().unwrap();
        let loc = login_location(&uri);
        assert!(
            loc.starts_with("/auth/login?return_to=%2Fa%2Fb%3Fx%3D1"),
            "{loc}"
        );
        assert!(!loc.contains("//"));
    }
}

//! The session cookie as the gateway sets and clears it (`HttpOnly; SameSite=Lax; Path=/`,
//! `Secure` when the client uses https), and what a sign-out asks the browser to forget.

use std::time::SystemTime;

use http::{HeaderName, HeaderValue};

use crate::sessions::NewSession;

/// `Clear-Site-Data` (W3C), which `http` has no constant for.
pub(crate) const CLEAR_SITE_DATA: HeaderName = HeaderName::from_static("clear-site-data");
/// What a sign-out asks the browser to forget: its HTTP cache (so the back button cannot show
/// a private page from it) and the cookies of this site. Browsers honour it on secure
/// origins (https, or localhost) and apply it to the whole registrable domain.
pub(crate) const CLEAR_SITE_DATA_ON_LOGOUT: &str = "\"cache\", \"cookies\"";

fn secure_attribute(secure: bool) -> &'static str {
    if secure { "; Secure" } else { "" }
}

/// The `Set-Cookie` value carrying a new session under `name`.
pub(crate) fn session(name: &str, secure: bool, session: &NewSession) -> HeaderValue {
    let max_age = session
        .expires_at
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        .as_secs();
    let secure = secure_attribute(secure);
    let value = format!(
        "{name}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}",
        session.token
    );
    HeaderValue::from_str(&value).expect("token and cookie name are header-safe")
}

/// The `Set-Cookie` value that removes the session cookie `name`.
pub(crate) fn clear(name: &str, secure: bool) -> HeaderValue {
    let secure = secure_attribute(secure);
    let value = format!("{name}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}");
    HeaderValue::from_str(&value).expect("cookie name is header-safe")
}

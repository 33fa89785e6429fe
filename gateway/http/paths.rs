//! The paths of the gateway's own pages, named once: the pages link to them, the form posts
//! answer `303` to them and the mails point at them.

/// The sign-in page (`?return_to=&notice=`).
pub const LOGIN_PAGE: &str = "/auth/login";
/// Where the code entry page lives (`?email=&return_to=`).
pub const OTP_PAGE: &str = "/auth/otp";
/// Where the password reset request form lives.
pub const RESET_PAGE: &str = "/auth/reset";
/// Where the password reset form lives (`?email=`).
pub const RESET_CONFIRM_PAGE: &str = "/auth/reset/confirm";
/// Where the account creation form lives (`?return_to=`).
pub const REGISTER_PAGE: &str = "/auth/register";
/// Where the email verification code is entered after registering (`?email=&return_to=`).
pub const VERIFY_EMAIL_PAGE: &str = "/auth/register/confirm";
/// "Check your email for a link", after a magic-link request (`?email=&return_to=`).
pub const MAGIC_SENT_PAGE: &str = "/auth/magic";
/// The sign-out page.
pub const LOGOUT_PAGE: &str = "/auth/logout";
/// "Signed in as".
pub const SIGNED_IN_PAGE: &str = "/auth";
/// A magic link: `MAGIC_LINK_PREFIX` then the token.
pub const MAGIC_LINK_PREFIX: &str = "/auth/magic/";

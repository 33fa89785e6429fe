//! The paths of the gateway's own pages, named once: the pages link to them, the form posts
//! answer `303` to them and the mails point at them.

/// The sign-in page (`?return_to=&notice=`).
pub(crate) const LOGIN_PAGE: &str = "/auth/login";
/// Where the code entry page lives (`?email=&return_to=`).
pub(crate) const OTP_PAGE: &str = "/auth/otp";
/// Where the password reset form lives (`?email=`).
pub(crate) const RESET_CONFIRM_PAGE: &str = "/auth/reset/confirm";
/// Where the account creation form lives (`?return_to=`).
pub(crate) const REGISTER_PAGE: &str = "/auth/register";
/// Where the email verification code is entered after registering (`?email=&return_to=`).
pub(crate) const VERIFY_EMAIL_PAGE: &str = "/auth/register/confirm";
/// "Check your email for a link", after a magic-link request (`?email=&return_to=`).
pub(crate) const MAGIC_SENT_PAGE: &str = "/auth/magic";
/// A magic link: `MAGIC_LINK_PREFIX` then the token.
pub(crate) const MAGIC_LINK_PREFIX: &str = "/auth/magic/";

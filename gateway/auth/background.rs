//! The work of the flows that runs after their answer is decided: lookups, code issue and
//! mail ([`Background`]), in tasks bounded by the flows' background permits ([`spawn`]), so
//! that what the client sees never depends on whether an email has an account.

use super::minutes;
use crate::app::Gateway;
use crate::codes::{self, Purpose};
use crate::db::DbError;
use crate::http::{paths, query};
use crate::mail::{self, Mailer, compose};
use crate::{config, password, users};

/// What a background task needs, owned.
#[derive(Clone)]
pub(super) struct Background {
    pool: deadpool_postgres::Pool,
    mailer: Mailer,
    keys: codes::Keys,
    codes: config::Codes,
    origin: String,
    brand: config::Branding,
}

impl Background {
    pub(super) fn new(gw: &Gateway) -> Background {
        Background {
            pool: gw.sessions.pool().clone(),
            mailer: gw.mailer.clone(),
            keys: gw.keys.clone(),
            codes: gw.config.codes.clone(),
            origin: gw.config.server.public_url.origin.clone(),
            brand: gw.config.branding.clone(),
        }
    }

    fn send(&self, to: &str, (subject, text, html): (String, String, String)) {
        let msg = mail::Message {
            to: to.to_string(),
            subject,
            text,
            html,
        };
        if let Err(e) = self.mailer.enqueue(msg) {
            tracing::warn!(error = %e, "auth mail not queued");
        }
    }

    async fn eligible_user(
        &self,
        email: &str,
        wants: impl Fn(&users::User) -> bool,
    ) -> Result<Option<users::User>, DbError> {
        Ok(users::find_by_email(&self.pool, email)
            .await?
            .filter(|u| u.status == users::Status::Active && wants(u)))
    }

    /// Sends a code when the address has an account that may use it: active, and for
    /// `verify_email` not verified yet.
    pub(super) async fn send_code(self, email: String, purpose: Purpose) -> Result<(), DbError> {
        let wants = |u: &users::User| purpose != Purpose::VerifyEmail || !u.email_verified;
        let Some(user) = self.eligible_user(&email, wants).await? else {
            return Ok(());
        };
        let code = codes::issue(
            &self.pool,
            &self.keys,
            &email,
            Some(&user.id),
            purpose,
            self.codes.ttl,
        )
        .await?;
        // A verification code also says where to enter it (the page after registering).
        let page = (purpose == Purpose::VerifyEmail).then(|| {
            format!(
                "{}{}?{}",
                self.origin,
                paths::VERIFY_EMAIL_PAGE,
                query(&[("email", &email)])
            )
        });
        self.send(
            &email,
            compose::code(
                &self.brand,
                purpose,
                &code,
                minutes(self.codes.ttl),
                page.as_deref(),
            ),
        );
        Ok(())
    }

    /// Sends a magic link when the address has an active account. The URL is built from
    /// `server.public_url` only, never from the request's `Host`.
    pub(super) async fn send_link(self, email: String, return_to: String) -> Result<(), DbError> {
        let Some(user) = self.eligible_user(&email, |_| true).await? else {
            return Ok(());
        };
        let token = codes::issue_link(
            &self.pool,
            &self.keys,
            &email,
            Some(&user.id),
            Some(&return_to),
            self.codes.magic_link_ttl,
        )
        .await?;
        let url = format!("{}{}{token}", self.origin, paths::MAGIC_LINK_PREFIX);
        self.send(
            &email,
            compose::magic_link(&self.brand, &url, minutes(self.codes.magic_link_ttl)),
        );
        Ok(())
    }

    fn account_exists(&self, email: &str) {
        let login_url = format!("{}{}", self.origin, paths::LOGIN_PAGE);
        self.send(
            email,
            compose::account_exists_notice(&self.brand, &login_url),
        );
    }

    /// Creates the unverified account and mails it a `verify_email` code; for a taken address,
    /// mails its owner an "account exists" notice instead. A password that cannot be hashed
    /// now (bcrypt overloaded) drops the registration, which the client may repeat.
    pub(super) async fn register(
        self,
        hasher: password::Hasher,
        email: String,
        password: zeroize::Zeroizing<String>,
    ) -> Result<(), DbError> {
        let hash = match hasher.hash(&password).await {
            Ok(hash) => hash,
            Err(e) => {
                metrics::counter!("gateway_auth_background_dropped_total", "flow" => "register")
                    .increment(1);
                tracing::warn!(error = %e, "registration dropped: the password was not hashed");
                return Ok(());
            }
        };
        let created = users::create(
            &self.pool,
            &users::NewUser {
                email: &email,
                email_verified: false,
                password_hash: Some(&hash),
                roles: &[],
            },
        )
        .await;
        match created {
            Ok(_) => self.send_code(email, Purpose::VerifyEmail).await,
            Err(users::UserError::DuplicateEmail(_)) => {
                self.account_exists(&email);
                Ok(())
            }
            Err(users::UserError::Db(e)) => Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "registration refused");
                Ok(())
            }
        }
    }
}

/// Runs `work` in the background, bounded by the flows' background permits: when they are
/// all taken the work is dropped and counted (the client's answer is the same either way).
pub(super) fn spawn(
    gw: &Gateway,
    flow: &'static str,
    work: impl Future<Output = Result<(), DbError>> + Send + 'static,
) {
    let Some(permit) = gw.limits.background() else {
        metrics::counter!("gateway_auth_background_dropped_total", "flow" => flow).increment(1);
        tracing::warn!(flow, "auth background work dropped: too many in flight");
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        if let Err(e) = work.await {
            tracing::warn!(flow, error = %e, "auth background work failed");
        }
    });
}

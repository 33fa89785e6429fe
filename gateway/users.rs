//! Users, their passwords and roles: the `users`, `user_passwords` and `user_roles` tables.
//! Every change that affects sessions (status, roles, deletion) also sets `users.updated_at`
//! in the same transaction: that is what the revocation poll of every instance reads.
//!
//! A change that ends sessions ends them for good, in its own transaction: disabling a user
//! and setting a password revoke the sessions (`revoked_at`, `revoked_reason`), so nothing
//! done later (enabling the user again) can bring them back.

use deadpool_postgres::Pool;
use uuid::Uuid;

use crate::db::{self, DbError};
use crate::sessions::{self, TokenHash};

const INSERT_USER: &str =
    "INSERT INTO users (id, email, email_verified, status) VALUES ($1, $2, $3, 'active')";
const UPSERT_PASSWORD: &str = "INSERT INTO user_passwords (user_id, password_hash) VALUES ($1, $2)
    ON CONFLICT (user_id) DO UPDATE SET password_hash = excluded.password_hash, updated_at = now()";
const INSERT_ROLE: &str =
    "INSERT INTO user_roles (user_id, role) VALUES ($1, $2) ON CONFLICT (user_id, role) DO NOTHING";
const DELETE_ROLE: &str = "DELETE FROM user_roles WHERE user_id = $1 AND role = $2";
const TOUCH_USER: &str = "UPDATE users SET updated_at = now() WHERE id = $1";
const SELECT_STATUS: &str = "SELECT status FROM users WHERE id = $1";
const SET_STATUS: &str =
    "UPDATE users SET status = $2, updated_at = now() WHERE id = $1 AND deleted_at IS NULL";
const SET_VERIFIED: &str =
    "UPDATE users SET email_verified = true, updated_at = now() WHERE id = $1";
const SELECT_BY_EMAIL: &str = "SELECT u.id, u.email, u.email_verified, u.status, p.password_hash
    FROM users u LEFT JOIN user_passwords p ON p.user_id = u.id
    WHERE u.email = $1 AND u.deleted_at IS NULL";
const SELECT_ROLES: &str = "SELECT role FROM user_roles WHERE user_id = $1 ORDER BY role";
const SELECT_CREDENTIALS: &str = "SELECT u.status, p.password_hash
    FROM users u LEFT JOIN user_passwords p ON p.user_id = u.id
    WHERE u.id = $1 AND u.deleted_at IS NULL";

/// `sessions.revoked_reason` of the sessions that disabling a user ended.
pub(crate) const REVOKED_DISABLED: &str = "user_disabled";

/// Longest accepted email address (RFC 5321 path limit).
pub(crate) const MAX_EMAIL_BYTES: usize = 254;
/// Longest role name.
pub(crate) const MAX_ROLE_BYTES: usize = 64;

/// A user as the auth flows need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub email_verified: bool,
    pub status: Status,
    pub password_hash: Option<String>,
    pub roles: Vec<String>,
}

/// `users.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    Disabled,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Disabled => "disabled",
        }
    }

    fn parse(s: &str) -> Status {
        // The CHECK constraint admits only these two; anything else fails closed.
        if s == "active" {
            Status::Active
        } else {
            Status::Disabled
        }
    }
}

/// Why a user operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("invalid email address: {0}")]
    InvalidEmail(String),
    #[error("invalid role `{0}`: use 1 to {MAX_ROLE_BYTES} of a-z 0-9 _ - . :")]
    InvalidRole(String),
    #[error("a user with email {0} already exists")]
    DuplicateEmail(String),
    #[error("no user with email {0}")]
    NotFound(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Lower-cases and validates an email address: one `@`, a non-empty local part, a domain with
/// a dot and no empty labels, no whitespace or control characters, at most 254 bytes.
///
/// # Errors
/// [`UserError::InvalidEmail`] saying what is wrong.
pub(crate) fn normalize_email(raw: &str) -> Result<String, UserError> {
    let email = raw.trim().to_lowercase();
    let bad = |why: &str| Err(UserError::InvalidEmail(format!("`{}`: {why}", raw.trim())));
    if email.len() > MAX_EMAIL_BYTES {
        return bad("longer than 254 bytes");
    }
    if email
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "<>(),;:\\\"[]".contains(c))
    {
        return bad("contains spaces, control characters or <>(),;:\\\"[]");
    }
    let Some((local, domain)) = email.split_once('@') else {
        return bad("missing @");
    };
    if local.is_empty() || local.len() > 64 {
        return bad("the part before @ must be 1 to 64 bytes");
    }
    if domain.contains('@') {
        return bad("more than one @");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2
        || labels
            .iter()
            .any(|l| l.is_empty() || l.starts_with('-') || l.ends_with('-'))
    {
        return bad("the domain must look like example.com");
    }
    Ok(email)
}

/// Validates a role name: 1 to 64 of `a-z 0-9 _ - . :` (roles travel comma-separated in a
/// header, so no commas or spaces).
///
/// # Errors
/// [`UserError::InvalidRole`].
pub(crate) fn check_role(role: &str) -> Result<(), UserError> {
    let ok = !role.is_empty()
        && role.len() <= MAX_ROLE_BYTES
        && role
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(UserError::InvalidRole(role.to_string()))
    }
}

/// A new user.
#[derive(Debug, Clone)]
pub struct NewUser<'a> {
    /// Already normalized by [`normalize_email`].
    pub email: &'a str,
    pub email_verified: bool,
    pub password_hash: Option<&'a str>,
    pub roles: &'a [String],
}

/// Creates a user with its password and roles in one transaction.
///
/// # Errors
/// [`UserError::DuplicateEmail`], [`UserError::InvalidRole`], or a database error.
pub async fn create(pool: &Pool, new: &NewUser<'_>) -> Result<User, UserError> {
    for role in new.roles {
        check_role(role)?;
    }
    let id = &uuid::Uuid::new_v4().to_string();
    let result = db::transaction(pool, |tx| async move {
        tx.execute(INSERT_USER, &[&id, &new.email, &new.email_verified])
            .await?;
        if let Some(hash) = new.password_hash {
            tx.execute(UPSERT_PASSWORD, &[&id, &hash]).await?;
        }
        for role in new.roles {
            tx.execute(INSERT_ROLE, &[&id, role]).await?;
        }
        Ok(())
    })
    .await;
    match result {
        Ok(()) => {}
        Err(e) if e.is_unique_violation() => {
            return Err(UserError::DuplicateEmail(new.email.to_string()));
        }
        Err(e) => return Err(e.into()),
    }
    let mut roles = new.roles.to_vec();
    roles.sort();
    roles.dedup();
    Ok(User {
        id: id.clone(),
        email: new.email.to_string(),
        email_verified: new.email_verified,
        status: Status::Active,
        password_hash: new.password_hash.map(str::to_string),
        roles,
    })
}

/// Finds a live (not deleted) user by normalized email, with password hash and roles.
///
/// # Errors
/// A database error.
pub async fn find_by_email(pool: &Pool, email: &str) -> Result<Option<User>, DbError> {
    let client = db::client(pool).await?;
    let stmt = client.prepare_cached(SELECT_BY_EMAIL).await?;
    let Some(row) = client.query_opt(&stmt, &[&email]).await? else {
        return Ok(None);
    };
    let id: String = row.get(0);
    let roles_stmt = client.prepare_cached(SELECT_ROLES).await?;
    let roles = client
        .query(&roles_stmt, &[&id])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(Some(User {
        id,
        email: row.get(1),
        email_verified: row.get(2),
        status: Status::parse(row.get(3)),
        password_hash: row.get(4),
        roles,
    }))
}

async fn require(pool: &Pool, email: &str) -> Result<User, UserError> {
    find_by_email(pool, email)
        .await?
        .ok_or_else(|| UserError::NotFound(email.to_string()))
}

/// Adds a role (no-op if present). Cached sessions see it within the revocation window.
///
/// # Errors
/// [`UserError::NotFound`], [`UserError::InvalidRole`], or a database error.
pub async fn add_role(pool: &Pool, email: &str, role: &str) -> Result<(), UserError> {
    check_role(role)?;
    let user = &require(pool, email).await?;
    db::transaction(pool, |tx| async move {
        tx.execute(INSERT_ROLE, &[&user.id, &role]).await?;
        tx.execute(TOUCH_USER, &[&user.id]).await?;
        Ok(())
    })
    .await?;
    Ok(())
}

/// Removes a role (no-op if absent). Cached sessions see it within the revocation window.
///
/// # Errors
/// [`UserError::NotFound`], or a database error.
pub async fn remove_role(pool: &Pool, email: &str, role: &str) -> Result<(), UserError> {
    let user = &require(pool, email).await?;
    db::transaction(pool, |tx| async move {
        tx.execute(DELETE_ROLE, &[&user.id, &role]).await?;
        tx.execute(TOUCH_USER, &[&user.id]).await?;
        Ok(())
    })
    .await?;
    Ok(())
}

/// Sets the status and, in the same transaction, revokes every session of the user still
/// live (reason [`REVOKED_DISABLED`]) when the user is or was disabled; returns their token
/// hashes (drop them from the local cache; other instances follow within the revocation
/// window).
///
/// Disabling ends every session for good. Enabling a disabled user lets the person sign in
/// again, nothing more: a session still live at that moment was opened by a sign-in already
/// under way when the user was disabled (or the user was disabled by hand in SQL), and is
/// revoked as one of the disabled user's. Enabling an active user changes nothing.
///
/// # Errors
/// [`UserError::NotFound`], or a database error.
pub async fn set_status(
    pool: &Pool,
    email: &str,
    status: Status,
) -> Result<Vec<TokenHash>, UserError> {
    let user = &require(pool, email).await?;
    let revoked = db::transaction(pool, |tx| async move {
        let was = match tx.query_opt(SELECT_STATUS, &[&user.id]).await? {
            Some(row) => Status::parse(row.get(0)),
            None => return Ok(Vec::new()),
        };
        tx.execute(SET_STATUS, &[&user.id, &status.as_str()])
            .await?;
        if was == Status::Active && status == Status::Active {
            return Ok(Vec::new());
        }
        sessions::revoke_user_in(&tx, &user.id, REVOKED_DISABLED).await
    })
    .await?;
    sessions::count_revoked(revoked.len());
    Ok(revoked)
}

/// Which sessions a new password ends, in the same transaction as the new hash.
#[derive(Debug, Clone, Copy)]
pub enum EndSessions<'a> {
    /// None (the same password re-hashed at another cost).
    None,
    /// Every session of the user, with this `revoked_reason`.
    All(&'a str),
    /// Every session but this one (the one that changed the password), with this reason.
    AllBut(Uuid, &'a str),
}

/// Sets (or replaces) the password hash of a user and ends the sessions `end` names, in one
/// transaction; returns the user and the token hashes revoked (drop them from the local
/// cache).
///
/// # Errors
/// [`UserError::NotFound`], or a database error.
pub async fn set_password_hash(
    pool: &Pool,
    email: &str,
    hash: &str,
    end: EndSessions<'_>,
) -> Result<(User, Vec<TokenHash>), UserError> {
    let user = &require(pool, email).await?;
    let revoked = db::transaction(pool, |tx| async move {
        tx.execute(UPSERT_PASSWORD, &[&user.id, &hash]).await?;
        match end {
            EndSessions::None => Ok(Vec::new()),
            EndSessions::All(reason) => sessions::revoke_user_in(&tx, &user.id, reason).await,
            EndSessions::AllBut(keep, reason) => {
                sessions::revoke_others_in(&tx, &user.id, keep, reason).await
            }
        }
    })
    .await?;
    sessions::count_revoked(revoked.len());
    Ok((user.clone(), revoked))
}

/// The status and password hash of user `id` as they are now (`None`: the user is gone),
/// read in a SERIALIZABLE transaction. A password sign-in reads them again after storing its
/// session: a password change or disable that ran meanwhile (it revokes sessions in its own
/// SERIALIZABLE transaction) has then either revoked the new session or is seen here, as
/// the database aborts and retries whichever transaction would break that.
///
/// # Errors
/// A database error.
pub(crate) async fn credentials(
    pool: &Pool,
    id: &str,
) -> Result<Option<(Status, Option<String>)>, DbError> {
    db::transaction(pool, |tx| async move {
        let row = tx.query_opt(SELECT_CREDENTIALS, &[&id]).await?;
        Ok(row.map(|r| (Status::parse(r.get(0)), r.get(1))))
    })
    .await
}

/// Marks the email of a user as verified.
///
/// # Errors
/// [`UserError::NotFound`], or a database error.
pub async fn mark_verified(pool: &Pool, email: &str) -> Result<(), UserError> {
    let user = &require(pool, email).await?;
    db::transaction(pool, |tx| async move {
        tx.execute(SET_VERIFIED, &[&user.id]).await?;
        Ok(())
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_lowercased_and_validated() {
        assert_eq!(
            normalize_email("  Alice@Example.COM ").unwrap(),
            "alice@example.com"
        );
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "alice@example",
            "a@b@example.com",
            "alice @example.com",
            "alice@example..com",
            "alice@-example.com",
            "al<ice@example.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(normalize_email("alice@example.com\r\nbcc: x@y.z").is_err());
        assert!(normalize_email(&format!("{}@example.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn roles_are_header_safe() {
        assert!(check_role("admin").is_ok());
        assert!(check_role("team:billing.read").is_ok());
        for bad in ["", "Admin", "a,b", "a b", "é", &"r".repeat(65)] {
            assert!(check_role(bad).is_err(), "{bad:?} must be refused");
        }
    }
}

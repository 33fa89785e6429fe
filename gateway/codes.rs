//! One-time codes and magic links: the `auth_codes` table.
//!
//! - A code is 6 digits from the OS CSPRNG, for `login`, `verify_email` or `password_reset`;
//!   a magic link token is 32 random bytes, base64url (purpose `magic_link`).
//! - Only a keyed hash is stored: HMAC-SHA-256 with `auth.secret` over
//!   `purpose || 0 || email || 0 || code` (a link token's input has an empty email, as it is
//!   looked up by its hash alone). Verification also accepts hashes made with each of
//!   `auth.previous_secrets`, so the secret can be rotated without voiding live codes.
//! - Issuing a code retires (sets `used_at` on) the unused codes of the same email and
//!   purpose in the same transaction: one live code per (email, purpose).
//! - [`redeem`] is one serializable transaction: the failed-attempt budget of the (email,
//!   purpose) is checked ([`crate::failures`]: kept in the database, survives re-issued
//!   codes, progressive delay past it), the attempt is counted first (`UPDATE ... SET
//!   attempts = attempts + 1 ... RETURNING`, so the per-code cap of `codes.max_attempts`
//!   holds across instances), the keyed hash is compared in constant time, and `used_at` is
//!   set (`WHERE used_at IS NULL`), so a code works once. A failure adds to the budget; a
//!   success clears it. Wrong, expired, used and exhausted codes are one outcome,
//!   [`Redeemed::Invalid`].
//! - Magic links ([`redeem_link`]) are consumed by one `UPDATE ... WHERE code_hash = ANY(..)
//!   AND used_at IS NULL ... RETURNING`. The lookup by hash is not constant-time, which is
//!   safe: the key is an HMAC of 256 random bits, so timing tells nothing about a token.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use deadpool_postgres::Pool;
use hmac::{Hmac, Mac};
use rand::TryRngCore as _;
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};
use uuid::Uuid;

use crate::config;
use crate::db::{self, DbError};
use crate::failures::{self, Budget};

const RETIRE: &str = "UPDATE auth_codes SET used_at = now(), updated_at = now()
    WHERE email = $1 AND purpose = $2 AND used_at IS NULL";
const INSERT: &str =
    "INSERT INTO auth_codes (id, email, user_id, purpose, code_hash, return_to, expires_at)
    VALUES ($1, $2, $3, $4, $5, $6, now() + ($7::BIGINT * INTERVAL '1 millisecond'))";
const ATTEMPT: &str = "UPDATE auth_codes SET attempts = attempts + 1, updated_at = now()
    WHERE email = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > now()
    RETURNING id, attempts, code_hash, user_id";
const CONSUME: &str = "UPDATE auth_codes SET used_at = now(), updated_at = now()
    WHERE id = $1 AND used_at IS NULL RETURNING id";
const CONSUME_LINK: &str =
    "UPDATE auth_codes SET used_at = now(), attempts = attempts + 1, updated_at = now()
    WHERE code_hash = ANY($1) AND purpose = 'magic_link' AND used_at IS NULL AND expires_at > now()
    RETURNING email, user_id, return_to";
const SWEEP: &str = "DELETE FROM auth_codes WHERE id IN (
    SELECT id FROM auth_codes WHERE expires_at < now() - ($1::BIGINT * INTERVAL '1 millisecond') LIMIT 1000)";

/// Digits in a code.
pub(crate) const CODE_DIGITS: usize = 6;
/// The `purpose` of magic link rows.
pub(crate) const MAGIC_LINK: &str = "magic_link";
/// Random bytes in a magic link token.
const LINK_BYTES: usize = 32;
/// Length of a magic link token (base64url, no padding).
pub(crate) const LINK_TOKEN_LEN: usize = 43;
/// The largest multiple of 10^6 below 2^32: draws at or above it are redrawn, so every code
/// is equally likely.
const UNBIASED_BOUND: u32 = 4_294_000_000;

/// What a one-time code is for (`login`, `verify_email`, `password_reset`): one enum with the
/// mail templates. Magic links have their own functions.
pub(crate) use crate::mail::CodePurpose as Purpose;

/// The HMAC keys: the current secret (for new codes) and the previous ones (still accepted).
#[derive(Clone)]
pub(crate) struct Keys {
    keys: std::sync::Arc<[Vec<u8>]>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} secret(s))", self.keys.len())
    }
}

impl Keys {
    /// `auth.secret` then each of `auth.previous_secrets`.
    pub(crate) fn new(auth: &config::Auth) -> Keys {
        let keys: Vec<Vec<u8>> = std::iter::once(auth.secret.clone())
            .chain(auth.previous_secrets.iter().cloned())
            .collect();
        Keys { keys: keys.into() }
    }

    fn current(&self) -> &[u8] {
        &self.keys[0]
    }

    /// The keyed hashes of one input under every key, current first.
    fn candidates(&self, purpose: &str, email: &str, code: &str) -> Vec<[u8; 32]> {
        self.keys
            .iter()
            .map(|k| keyed_hash(k, purpose, email, code))
            .collect()
    }
}

/// HMAC-SHA-256(`key`, `purpose || 0 || email || 0 || code`): what `auth_codes.code_hash`
/// holds. The zero bytes keep the fields apart (purposes are fixed names and normalized
/// emails hold no control characters), so no two inputs share a hash input.
pub(crate) fn keyed_hash(key: &[u8], purpose: &str, email: &str, code: &str) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(purpose.as_bytes());
    mac.update(&[0]);
    mac.update(email.as_bytes());
    mac.update(&[0]);
    mac.update(code.as_bytes());
    mac.finalize().into_bytes().into()
}

/// A new 6-digit code, uniformly drawn from the OS CSPRNG.
pub(crate) fn new_code() -> String {
    loop {
        let draw = rand::rngs::OsRng
            .try_next_u32()
            .expect("the OS random number generator failed");
        if draw < UNBIASED_BOUND {
            return format!("{:0width$}", draw % 1_000_000, width = CODE_DIGITS);
        }
    }
}

/// A new magic link token: 32 bytes from the OS CSPRNG, base64url without padding.
pub(crate) fn new_link_token() -> String {
    let mut bytes = [0u8; LINK_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the OS random number generator failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `token` has the shape of a magic link token (anything else is never looked up).
pub(crate) fn is_link_token(token: &str) -> bool {
    token.len() == LINK_TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

async fn insert(
    pool: &Pool,
    email: &str,
    user_id: Option<&str>,
    purpose: &str,
    hash: &[u8; 32],
    return_to: Option<&str>,
    ttl: Duration,
) -> Result<(), DbError> {
    let id = &Uuid::new_v4();
    let ttl = &millis(ttl);
    let hash = &hash.as_slice();
    db::transaction(pool, |tx| async move {
        tx.execute(RETIRE, &[&email, &purpose]).await?;
        tx.execute(
            INSERT,
            &[&id, &email, &user_id, &purpose, hash, &return_to, ttl],
        )
        .await?;
        Ok(())
    })
    .await
}

/// Issues a code for (`email`, `purpose`), valid for `ttl`, retiring the older unused ones of
/// the same email and purpose. Returns the code, to be mailed and never stored or logged.
///
/// # Errors
/// A database error.
pub(crate) async fn issue(
    pool: &Pool,
    keys: &Keys,
    email: &str,
    user_id: Option<&str>,
    purpose: Purpose,
    ttl: Duration,
) -> Result<String, DbError> {
    let code = new_code();
    let hash = keyed_hash(keys.current(), purpose.as_str(), email, &code);
    insert(pool, email, user_id, purpose.as_str(), &hash, None, ttl).await?;
    Ok(code)
}

/// The outcome of [`redeem`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Redeemed {
    /// The code was right and is now used; the user it was issued for, if any.
    Valid { user_id: Option<String> },
    /// Wrong, expired, already used, retired, or out of attempts: one answer for all.
    Invalid,
    /// The (email, purpose) is past its failure budget: try again after this long. The code
    /// was not looked at and no attempt was counted.
    Wait(Duration),
}

/// Redeems a code in one transaction: budget check, attempt counted first, constant-time
/// compare against the hashes under every key, `used_at` set atomically. See the module
/// documentation.
///
/// # Errors
/// A database error (answer 503).
///
/// # Security
/// The per-code cap and the per-(email, purpose) budget are enforced by the database inside
/// one SERIALIZABLE transaction, so they hold across instances and concurrent requests.
pub(crate) async fn redeem(
    pool: &Pool,
    keys: &Keys,
    settings: &config::Codes,
    email: &str,
    purpose: Purpose,
    code: &str,
) -> Result<Redeemed, DbError> {
    let candidates = &keys.candidates(purpose.as_str(), email, code);
    let budget = &Budget::from_config(settings);
    let max_attempts = i64::from(settings.max_attempts);
    let purpose = purpose.as_str();
    db::transaction(pool, |tx| async move {
        let standing = failures::check_in(&tx, budget, email, purpose).await?;
        if let Some(wait) = standing.wait {
            return Ok(Redeemed::Wait(wait));
        }
        let rows = tx.query(ATTEMPT, &[&email, &purpose]).await?;
        let mut matched = None;
        for row in &rows {
            let attempts: i64 = row.get(1);
            let stored: &[u8] = row.get(2);
            let same = candidates
                .iter()
                .fold(Choice::from(0), |acc, c| acc | stored.ct_eq(c.as_slice()));
            if bool::from(same) && attempts <= max_attempts && matched.is_none() {
                matched = Some((row.get::<_, Uuid>(0), row.get::<_, Option<String>>(3)));
            }
        }
        if let Some((id, user_id)) = matched {
            if tx.query_opt(CONSUME, &[&id]).await?.is_some() {
                if standing.failures > 0 {
                    failures::clear_in(&tx, email, purpose).await?;
                }
                return Ok(Redeemed::Valid { user_id });
            }
        }
        failures::record_in(&tx, email, purpose).await?;
        Ok(Redeemed::Invalid)
    })
    .await
}

/// Issues a magic link token for `email`, valid for `ttl`, remembering `return_to` (already
/// validated as a same-origin path) and retiring the older unused links of the email.
///
/// # Errors
/// A database error.
pub(crate) async fn issue_link(
    pool: &Pool,
    keys: &Keys,
    email: &str,
    user_id: Option<&str>,
    return_to: Option<&str>,
    ttl: Duration,
) -> Result<String, DbError> {
    let token = new_link_token();
    let hash = keyed_hash(keys.current(), MAGIC_LINK, "", &token);
    insert(pool, email, user_id, MAGIC_LINK, &hash, return_to, ttl).await?;
    Ok(token)
}

/// A magic link just consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    pub email: String,
    pub user_id: Option<String>,
    pub return_to: Option<String>,
}

fn link_hashes(keys: &Keys, token: &str) -> Vec<Vec<u8>> {
    keys.candidates(MAGIC_LINK, "", token)
        .into_iter()
        .map(|h| h.to_vec())
        .collect()
}

/// Consumes a magic link token: `Some` once for a live token, `None` for a malformed,
/// unknown, expired or already used one.
///
/// # Errors
/// A database error.
pub(crate) async fn redeem_link(
    pool: &Pool,
    keys: &Keys,
    token: &str,
) -> Result<Option<Link>, DbError> {
    if !is_link_token(token) {
        return Ok(None);
    }
    let hashes = &link_hashes(keys, token);
    let row = db::transaction(pool, |tx| async move {
        tx.query_opt(CONSUME_LINK, &[hashes]).await
    })
    .await?;
    Ok(row.map(|r| Link {
        email: r.get(0),
        user_id: r.get(1),
        return_to: r.get(2),
    }))
}

/// Deletes up to 1000 codes and links that expired more than `grace` ago; returns how many.
///
/// # Errors
/// A database error.
pub(crate) async fn sweep(pool: &Pool, grace: Duration) -> Result<u64, DbError> {
    let ms = &millis(grace);
    db::transaction(pool, |tx| async move { tx.execute(SWEEP, &[ms]).await }).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_six_digits_and_vary() {
        let codes: std::collections::HashSet<String> = (0..50).map(|_| new_code()).collect();
        assert!(codes.len() > 40, "{codes:?}");
        for c in &codes {
            assert_eq!(c.len(), CODE_DIGITS);
            assert!(c.bytes().all(|b| b.is_ascii_digit()), "{c}");
        }
    }

    #[test]
    fn link_tokens_have_their_shape() {
        let t = new_link_token();
        assert!(is_link_token(&t), "{t}");
        assert_ne!(new_link_token(), t);
        assert!(!is_link_token(&t[1..]));
        assert!(!is_link_token(&format!("{}+", &t[1..])));
    }

    #[test]
    fn the_hash_binds_key_purpose_email_and_code() {
        let k = b"0123456789abcdef0123456789abcdef";
        let h = keyed_hash(k, "login", "a@example.com", "123456");
        assert_eq!(h, keyed_hash(k, "login", "a@example.com", "123456"));
        assert_ne!(
            h,
            keyed_hash(
                b"another key of enough length!!!!",
                "login",
                "a@example.com",
                "123456"
            )
        );
        assert_ne!(h, keyed_hash(k, "verify_email", "a@example.com", "123456"));
        assert_ne!(h, keyed_hash(k, "login", "b@example.com", "123456"));
        assert_ne!(h, keyed_hash(k, "login", "a@example.com", "123457"));
        // The separators keep fields apart (normalized emails hold no NUL).
        assert_ne!(
            keyed_hash(k, "login", "a@example.com", "1"),
            keyed_hash(k, "login", "a@example.co", "m\u{0}1")
        );
    }

    #[test]
    fn previous_secrets_give_more_candidates() {
        let auth = config::Auth {
            bcrypt_cost: 4,
            bcrypt_concurrency: 1,
            bcrypt_queue: 1,
            secret: b"new secret 0123456789abcdef012345".to_vec(),
            previous_secrets: vec![b"old secret 0123456789abcdef012345".to_vec()],
        };
        let keys = Keys::new(&auth);
        let c = keys.candidates("login", "a@example.com", "000001");
        assert_eq!(c.len(), 2);
        assert_eq!(
            c[1],
            keyed_hash(
                &auth.previous_secrets[0],
                "login",
                "a@example.com",
                "000001"
            )
        );
    }
}

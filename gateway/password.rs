//! Passwords: the one rule for a new password ([`check_new`]), and bcrypt hashing and
//! verification on the blocking pool, bounded by a semaphore sized to the cores and an
//! admission queue that refuses work (callers answer 503) instead of growing without bound. This is the only module allowed to call
//! bcrypt (`clippy.toml` enforces it), so bcrypt never runs on a runtime worker.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use tokio::sync::{OnceCell, Semaphore};
use zeroize::Zeroizing;

/// Shortest accepted password, in bytes.
pub(crate) const MIN_BYTES: usize = 8;
/// Longest accepted password, in bytes.
pub(crate) const MAX_BYTES: usize = 256;
/// bcrypt reads only this many bytes; longer passwords are pre-hashed.
const BCRYPT_LIMIT: usize = 72;

/// Why a new password is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PasswordRuleError {
    #[error("the password is too short: use at least {MIN_BYTES} bytes")]
    TooShort,
    #[error("the password is too long: use at most {MAX_BYTES} bytes")]
    TooLong,
    /// Common, breached-style or guessable (zxcvbn score below 3); the text says why.
    #[error("the password is too easy to guess: {0}")]
    Weak(String),
}

/// The length rules for a new password (8 to 256 bytes).
fn check_length(password: &str) -> Result<(), PasswordRuleError> {
    match password.len() {
        n if n < MIN_BYTES => Err(PasswordRuleError::TooShort),
        n if n > MAX_BYTES => Err(PasswordRuleError::TooLong),
        _ => Ok(()),
    }
}

/// The lowest zxcvbn score accepted for a new password: 3, "safely unguessable" (more than
/// 10^8 guesses), zxcvbn's own advice.
pub(crate) const MIN_STRENGTH: zxcvbn::Score = zxcvbn::Score::Three;

/// The one rule for a new password of the user with (normalized) `email`, however it is set:
/// `/auth/register`, the password reset and change (JSON and forms), and the command line's
/// `user create --password-stdin` and `user set-password`. First the length rules, then its
/// strength with zxcvbn and its dictionaries (common passwords, names, words, keyboard
/// patterns, dates), also against the email and its local part, so `alice@...` cannot pick
/// `alice2024!`. CPU-bound for a few milliseconds (zxcvbn reads at most 100 characters): call
/// it from a blocking task on a hot path.
///
/// # Errors
/// The rule it breaks; for [`PasswordRuleError::Weak`], zxcvbn's warning and suggestions.
pub(crate) fn check_new(password: &str, email: &str) -> Result<(), PasswordRuleError> {
    let local = email.split('@').next().unwrap_or_default();
    check_strength(password, &[email, local])
}

fn check_strength(password: &str, user_inputs: &[&str]) -> Result<(), PasswordRuleError> {
    check_length(password)?;
    let entropy = zxcvbn::zxcvbn(password, user_inputs);
    if entropy.score() >= MIN_STRENGTH {
        return Ok(());
    }
    let mut advice: Vec<String> = Vec::new();
    if let Some(feedback) = entropy.feedback() {
        advice.extend(feedback.warning().map(|w| w.to_string()));
        advice.extend(feedback.suggestions().iter().map(ToString::to_string));
    }
    if advice.is_empty() {
        advice.push("Add another word or two. Uncommon words are better.".into());
    }
    Err(PasswordRuleError::Weak(advice.join(" ")))
}

/// What bcrypt is given: the password itself up to 72 bytes, else base64(SHA-256(password)),
/// so that no byte of a long password is ignored.
fn bcrypt_input(password: &str) -> Zeroizing<Vec<u8>> {
    if password.len() > BCRYPT_LIMIT {
        Zeroizing::new(
            STANDARD
                .encode(Sha256::digest(password.as_bytes()))
                .into_bytes(),
        )
    } else {
        Zeroizing::new(password.as_bytes().to_vec())
    }
}

/// Why hashing could not be done.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The bcrypt queue is full: answer 503 with `Retry-After`.
    #[error("password hashing is overloaded")]
    Overloaded,
    /// bcrypt or its blocking task failed: a bug.
    #[error("password hashing failed")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Runs bcrypt off the async workers with bounded concurrency and a bounded queue.
#[derive(Debug, Clone)]
pub struct Hasher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cost: u32,
    running: Semaphore,
    admitted: AtomicUsize,
    max_admitted: usize,
    dummy: OnceCell<String>,
}

impl Hasher {
    /// `concurrency` hashes run at once; up to `queue` more wait; beyond that calls fail fast
    /// with [`HashError::Overloaded`].
    pub fn new(cost: u32, concurrency: usize, queue: usize) -> Self {
        Hasher {
            inner: Arc::new(Inner {
                cost,
                running: Semaphore::new(concurrency.max(1)),
                admitted: AtomicUsize::new(0),
                max_admitted: concurrency.max(1) + queue,
                dummy: OnceCell::new(),
            }),
        }
    }

    /// Requests admitted and not finished (running + waiting): the queue depth metric.
    pub fn depth(&self) -> usize {
        self.inner.admitted.load(Ordering::Relaxed)
    }

    /// Hashes a new password at the configured cost. Check its rules first.
    ///
    /// # Errors
    /// [`HashError::Overloaded`] when the queue is full.
    pub async fn hash(&self, password: &str) -> Result<String, HashError> {
        let input = bcrypt_input(password);
        let cost = self.inner.cost;
        self.run(move || blocking::hash(&input, cost)).await
    }

    /// Verifies `password` against `hash`. With `hash == None` (unknown user, or a user
    /// without a password) it verifies against a dummy hash of the same cost and answers
    /// false, so the caller spends the same time either way.
    ///
    /// # Errors
    /// [`HashError::Overloaded`] when the queue is full.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> Result<bool, HashError> {
        let input = bcrypt_input(password);
        let (target, real) = match hash {
            Some(h) => (h.to_string(), true),
            None => (self.dummy_hash().await?, false),
        };
        let ok = self
            .run(move || Ok(blocking::verify(&input, &target)))
            .await?;
        Ok(ok && real)
    }

    /// Whether a stored hash was made at another cost and should be re-hashed after a good
    /// login.
    pub(crate) fn needs_rehash(&self, hash: &str) -> bool {
        hash.split('$').nth(2).and_then(|c| c.parse::<u32>().ok()) != Some(self.inner.cost)
    }

    async fn dummy_hash(&self) -> Result<String, HashError> {
        self.inner
            .dummy
            .get_or_try_init(|| async {
                let cost = self.inner.cost;
                self.run(move || blocking::hash(b"dummy password for unknown users", cost))
                    .await
            })
            .await
            .cloned()
    }

    async fn run<T, F>(&self, work: F) -> Result<T, HashError>
    where
        F: FnOnce() -> Result<T, HashError> + Send + 'static,
        T: Send + 'static,
    {
        let inner = &self.inner;
        if inner.admitted.fetch_add(1, Ordering::AcqRel) >= inner.max_admitted {
            inner.admitted.fetch_sub(1, Ordering::AcqRel);
            return Err(HashError::Overloaded);
        }
        let _admission = Admission(&inner.admitted);
        let _permit = inner
            .running
            .acquire()
            .await
            .map_err(|e| HashError::Failed(Box::new(e)))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| HashError::Failed(Box::new(e)))?
    }
}

struct Admission<'a>(&'a AtomicUsize);

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The only calls into bcrypt; they block for tens to hundreds of milliseconds.
#[allow(clippy::disallowed_methods)]
mod blocking {
    use super::HashError;

    pub(super) fn hash(input: &[u8], cost: u32) -> Result<String, HashError> {
        yield_to_requests();
        bcrypt::hash(input, cost).map_err(|e| HashError::Failed(Box::new(e)))
    }

    pub(super) fn verify(input: &[u8], hash: &str) -> bool {
        yield_to_requests();
        bcrypt::verify(input, hash).unwrap_or(false)
    }

    /// The nice value of a thread that hashes passwords.
    const HASHING_NICE: i32 = 10;

    /// Lowers the calling thread's scheduling priority, once per thread: when the cores are
    /// busy, the workers that proxy requests get the CPU before password hashing does, so a
    /// login storm delays logins (bounded by the admission queue) rather than every proxied
    /// request. On an idle machine hashing still gets whole cores. On Linux the nice value
    /// belongs to the thread (`setpriority(2)`, with `who` = 0 meaning the calling thread).
    fn yield_to_requests() {
        thread_local! {
            static LOWERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        }
        #[cfg(target_os = "linux")]
        LOWERED.with(|lowered| {
            if !lowered.replace(true) {
                // SAFETY: setpriority only reads its integer arguments; it touches no memory of
                // ours. Its effect outlives the hash: this is a thread of tokio's blocking pool,
                // which runs every `spawn_blocking` of the process, so once it has hashed, the
                // other blocking work it picks up runs at the lower priority too: zxcvbn's
                // strength check of new passwords (auth::check_new_password), and hyper's DNS
                // resolver (the upstream client's GaiResolver, on every new upstream connection
                // to a host name), which under CPU contention then waits behind the request
                // path as hashing does. Moving bcrypt to threads of its own would confine the
                // nice value to hashing.
                #[allow(unsafe_code)]
                let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, HASHING_NICE) };
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_rules() {
        assert_eq!(check_length("1234567"), Err(PasswordRuleError::TooShort));
        assert!(check_length("12345678").is_ok());
        assert!(check_length(&"x".repeat(256)).is_ok());
        assert_eq!(
            check_length(&"x".repeat(257)),
            Err(PasswordRuleError::TooLong)
        );
    }

    #[test]
    fn weak_passwords_are_refused_with_advice() {
        for weak in [
            "password",
            "password1",
            "qwertyuiop",
            "12345678",
            "iloveyou2",
        ] {
            match check_strength(weak, &[]) {
                Err(PasswordRuleError::Weak(advice)) => assert!(!advice.is_empty(), "{weak}"),
                other => panic!("{weak:?} must be weak, got {other:?}"),
            }
        }
        assert_eq!(
            check_strength("short", &[]),
            Err(PasswordRuleError::TooShort)
        );
        assert!(check_strength("correct horse battery staple 42", &[]).is_ok());
        assert!(check_strength("vUq8-Lm2r-Xo9t", &[]).is_ok());
    }

    #[test]
    fn the_users_own_details_count_as_guessable() {
        let pw = "margaretthatcher1979";
        assert!(
            check_new(pw, "someone@example.com").is_ok(),
            "strong on its own"
        );
        assert!(matches!(
            check_new(pw, "margaretthatcher1979@example.com"),
            Err(PasswordRuleError::Weak(_))
        ));
    }

    #[test]
    fn the_one_rule_includes_the_length_rules() {
        let email = "someone@example.com";
        assert_eq!(
            check_new("Zx9#qT4", email),
            Err(PasswordRuleError::TooShort)
        );
        assert_eq!(
            check_new(&"vUq8-Lm2r".repeat(29), email),
            Err(PasswordRuleError::TooLong)
        );
        assert!(check_new("correct horse battery staple 42", email).is_ok());
    }

    #[tokio::test]
    async fn long_passwords_use_every_byte() {
        let h = Hasher::new(4, 2, 8);
        let a = format!("{}a", "x".repeat(100));
        let b = format!("{}b", "x".repeat(100));
        let hash = h.hash(&a).await.unwrap();
        assert!(h.verify(&a, Some(&hash)).await.unwrap());
        assert!(
            !h.verify(&b, Some(&hash)).await.unwrap(),
            "bytes past 72 must count"
        );
    }

    #[tokio::test]
    async fn unknown_user_verifies_false() {
        let h = Hasher::new(4, 2, 8);
        assert!(
            !h.verify("dummy password for unknown users", None)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn rehash_follows_cost() {
        let h4 = Hasher::new(4, 1, 1);
        let h5 = Hasher::new(5, 1, 1);
        let hash = h4.hash("password1").await.unwrap();
        assert!(!h4.needs_rehash(&hash));
        assert!(h5.needs_rehash(&hash));
    }

    #[tokio::test]
    async fn a_full_queue_refuses_instead_of_growing() {
        let h = Hasher::new(10, 1, 1);
        let calls: Vec<_> = (0..6)
            .map(|_| {
                let h = h.clone();
                tokio::spawn(async move { h.hash("password1").await })
            })
            .collect();
        let mut overloaded = 0;
        for c in calls {
            if matches!(c.await.unwrap(), Err(HashError::Overloaded)) {
                overloaded += 1;
            }
        }
        assert!(
            overloaded >= 1,
            "6 concurrent hashes with room for 2 must refuse some"
        );
        assert_eq!(h.depth(), 0);
    }
}

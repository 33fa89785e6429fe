//! The session token format. A token is `gw_` + base64url (no padding) of 32 random bytes
//! from the OS CSPRNG followed by a 16-byte tag: HMAC-SHA-256 under `sessions.token_key` of
//! a label and the random bytes, truncated. 67 characters in all.
//!
//! The tag lets the gateway refuse a token it never issued without any I/O: no cache entry,
//! no query. It proves nothing more: the session itself is the row whose `token_hash` is the
//! SHA-256 of the whole token, so a leaked key lets an attacker reach the database with
//! guesses (bounded by the miss budget) but never sign anyone in.
//!
//! Tokens issued before the tag existed (`gw_` + 43 characters, 32 random bytes) are
//! [`Shape::Legacy`]: accepted only while `sessions.accept_legacy_tokens` is on.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::TryRngCore as _;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

/// Prefix of every session token.
pub const TOKEN_PREFIX: &str = "gw_";
/// Random bytes in a token (256 bits from the OS CSPRNG).
const RANDOM_BYTES: usize = 32;
/// Bytes of the truncated HMAC-SHA-256 tag.
const TAG_BYTES: usize = 16;
/// Length of the base64url part of a signed token: 48 bytes, a multiple of 3, so every
/// string of this length and alphabet decodes to exactly one byte string (no spare bits).
const SIGNED_B64_LEN: usize = (RANDOM_BYTES + TAG_BYTES) / 3 * 4;
/// Length of the base64url part of a token issued before tags (32 bytes, unpadded).
const LEGACY_B64_LEN: usize = 43;
/// What the tag covers besides the random bytes: keeps these MACs apart from any other use
/// an operator might make of the same key.
const TAG_LABEL: &[u8] = b"gateway session token v1\0";

/// The SHA-256 of a raw token: what the database and the cache are keyed by.
pub type TokenHash = [u8; 32];

/// What a presented string looks like, judged from its characters alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `gw_` + 64 base64url characters: random bytes and a tag.
    Signed,
    /// `gw_` + 43 base64url characters: a token from before tags.
    Legacy,
}

/// The shape of `token`; `None` for anything else, which is never looked up, neither in the
/// cache nor in the database.
pub fn shape(token: &str) -> Option<Shape> {
    let body = token.strip_prefix(TOKEN_PREFIX)?;
    if !body
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    match body.len() {
        SIGNED_B64_LEN => Some(Shape::Signed),
        LEGACY_B64_LEN => Some(Shape::Legacy),
        _ => None,
    }
}

/// SHA-256 of the whole token (prefix and tag included): the `sessions.token_hash` column.
pub fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Hashes a token of either shape; `None` for anything else.
pub fn hash_token(token: &str) -> Option<TokenHash> {
    shape(token).map(|_| hash(token))
}

/// The keys of the token tags: the current one (every new token) and the previous ones
/// (still accepted), each held as a keyed HMAC state, so a check costs two SHA-256 blocks
/// per key and no key schedule.
#[derive(Clone)]
pub struct TokenKeys {
    keys: Arc<[Hmac<Sha256>]>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenKeys({} key(s))", self.keys.len())
    }
}

impl TokenKeys {
    /// `current` signs new tokens; it and each of `previous` verify.
    pub fn new(current: &[u8], previous: &[Vec<u8>]) -> TokenKeys {
        let mac = |key: &[u8]| {
            <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length")
        };
        let keys: Vec<Hmac<Sha256>> = std::iter::once(mac(current))
            .chain(previous.iter().map(|k| mac(k)))
            .collect();
        TokenKeys { keys: keys.into() }
    }

    /// `sessions.token_key` then each of `sessions.previous_token_keys`.
    pub(crate) fn from_config(sessions: &crate::config::Sessions) -> TokenKeys {
        TokenKeys::new(&sessions.token_key, &sessions.previous_token_keys)
    }

    /// A new token: 32 bytes from the OS CSPRNG and their tag under the current key.
    pub fn issue(&self) -> String {
        let mut raw = [0u8; RANDOM_BYTES + TAG_BYTES];
        let (random, tag) = raw.split_at_mut(RANDOM_BYTES);
        rand::rngs::OsRng
            .try_fill_bytes(random)
            .expect("the OS random number generator failed");
        tag.copy_from_slice(&tag_of(&self.keys[0], random));
        format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw))
    }

    /// Whether `token` is a [`Shape::Signed`] token whose tag one of the keys made.
    ///
    /// # Security
    /// The tag is compared with every key's in constant time (`subtle`), and every key is
    /// tried whatever the first ones gave, so the time tells neither how much of a tag was
    /// right nor which key made it.
    pub fn verify(&self, token: &str) -> bool {
        let Some(body) = token.strip_prefix(TOKEN_PREFIX) else {
            return false;
        };
        if body.len() != SIGNED_B64_LEN {
            return false;
        }
        let mut raw = [0u8; RANDOM_BYTES + TAG_BYTES];
        if URL_SAFE_NO_PAD.decode_slice(body, &mut raw) != Ok(raw.len()) {
            return false;
        }
        let (random, tag) = raw.split_at(RANDOM_BYTES);
        self.keys
            .iter()
            .fold(Choice::from(0), |ok, key| {
                ok | tag_of(key, random).as_slice().ct_eq(tag)
            })
            .into()
    }
}

/// The truncated HMAC-SHA-256 of the label and `random` under `key`.
fn tag_of(key: &Hmac<Sha256>, random: &[u8]) -> [u8; TAG_BYTES] {
    let mut mac = key.clone();
    mac.update(TAG_LABEL);
    mac.update(random);
    let full = mac.finalize().into_bytes();
    let mut tag = [0u8; TAG_BYTES];
    tag.copy_from_slice(&full[..TAG_BYTES]);
    tag
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &[u8] = b"current key 0123456789abcdef0123456789";
    const OLD: &[u8] = b"previous key 0123456789abcdef012345678";

    fn keys() -> TokenKeys {
        TokenKeys::new(KEY, &[])
    }

    /// `gw_` + base64url of `bytes`.
    fn encode(bytes: &[u8]) -> String {
        format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    #[test]
    fn tokens_have_the_documented_shape_and_verify() {
        let t = keys().issue();
        assert!(t.starts_with("gw_"));
        assert_eq!(t.len(), 3 + 64);
        assert_eq!(shape(&t), Some(Shape::Signed));
        assert!(keys().verify(&t));
        assert_ne!(keys().issue(), t);
        assert_eq!(hash_token(&t), Some(hash(&t)));
    }

    #[test]
    fn a_tag_under_another_key_or_a_changed_byte_is_refused() {
        let t = keys().issue();
        assert!(!TokenKeys::new(OLD, &[]).verify(&t), "another key");
        let mut raw = URL_SAFE_NO_PAD.decode(&t[3..]).unwrap();
        for i in [0, RANDOM_BYTES - 1, RANDOM_BYTES, raw.len() - 1] {
            raw[i] ^= 1;
            assert!(!keys().verify(&encode(&raw)), "byte {i} flipped");
            raw[i] ^= 1;
        }
        assert!(keys().verify(&encode(&raw)));
    }

    #[test]
    fn previous_keys_verify_and_new_tokens_use_the_current_one() {
        let old_token = TokenKeys::new(OLD, &[]).issue();
        let rotating = TokenKeys::new(KEY, &[OLD.to_vec()]);
        assert!(
            rotating.verify(&old_token),
            "the previous key is still accepted"
        );
        let new_token = rotating.issue();
        assert!(
            keys().verify(&new_token),
            "new tokens carry the current key's tag"
        );
        assert!(!TokenKeys::new(OLD, &[]).verify(&new_token));
        assert!(!keys().verify(&old_token), "a rotated-out key is refused");
    }

    #[test]
    fn legacy_tokens_have_their_own_shape_and_no_tag() {
        let legacy = encode(&[7u8; 32]);
        assert_eq!(legacy.len(), 3 + 43);
        assert_eq!(shape(&legacy), Some(Shape::Legacy));
        assert!(!keys().verify(&legacy));
    }

    #[test]
    fn malformed_tokens_have_no_shape() {
        let t = keys().issue();
        for bad in [
            "",
            "gw_",
            &t[..t.len() - 1],
            &format!("{t}A"),
            &t.replace("gw_", "xx_"),
            &t.replace("gw_", "GW_"),
            &format!("gw_{}", "+".repeat(64)),
            &format!("gw_{}=", "A".repeat(63)),
            &format!("gw_{}=", "A".repeat(42)),
            &format!("gw_{}", "A".repeat(44)),
            &format!(" {t}"),
        ] {
            assert_eq!(shape(bad), None, "{bad:?}");
            assert!(hash_token(bad).is_none(), "{bad:?}");
            assert!(!keys().verify(bad), "{bad:?}");
        }
    }

    proptest! {
        /// Any string: the parser never panics, and a shape means exactly the documented
        /// prefix, length and alphabet.
        #[test]
        fn the_parser_accepts_exactly_the_documented_shapes(s in "\\PC{0,80}") {
            let expected = s.strip_prefix("gw_").and_then(|body| {
                let alphabet = body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                match (alphabet, body.len()) {
                    (true, 64) => Some(Shape::Signed),
                    (true, 43) => Some(Shape::Legacy),
                    _ => None,
                }
            });
            prop_assert_eq!(shape(&s), expected);
            prop_assert!(!keys().verify(&s) || expected == Some(Shape::Signed));
        }

        /// Strings built from the token alphabet around the two lengths, with or without the
        /// prefix, often hit the shapes the generator above rarely reaches.
        #[test]
        fn near_misses_of_the_token_alphabet(
            prefix in prop_oneof!["gw_", "gw", "g_", "", "gw__"],
            body in "[A-Za-z0-9_+/=-]{40,68}",
        ) {
            let s = format!("{prefix}{body}");
            let alphabet = body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            let expected = match (s.strip_prefix("gw_"), alphabet) {
                (Some(b), true) if b.len() == 64 => Some(Shape::Signed),
                (Some(b), true) if b.len() == 43 => Some(Shape::Legacy),
                _ => None,
            };
            prop_assert_eq!(shape(&s), expected);
        }

        /// Random bytes with a random tag: the shape of a current token, which only the key
        /// could have made (a 2^-128 chance otherwise).
        #[test]
        fn random_tags_are_refused(raw in proptest::array::uniform32(any::<u8>()), tag in proptest::array::uniform16(any::<u8>())) {
            let mut bytes = raw.to_vec();
            bytes.extend_from_slice(&tag);
            let t = encode(&bytes);
            prop_assert_eq!(shape(&t), Some(Shape::Signed));
            prop_assert!(!keys().verify(&t));
        }

        /// Signing random bytes and parsing the result round-trips, for every key of a
        /// rotation.
        #[test]
        fn signed_tokens_round_trip(raw in proptest::array::uniform32(any::<u8>()), old in any::<bool>()) {
            let key = if old { OLD } else { KEY };
            let mut bytes = raw.to_vec();
            bytes.extend_from_slice(&tag_of(&TokenKeys::new(key, &[]).keys[0], &raw));
            let t = encode(&bytes);
            prop_assert_eq!(shape(&t), Some(Shape::Signed));
            prop_assert!(TokenKeys::new(KEY, &[OLD.to_vec()]).verify(&t));
            prop_assert_eq!(TokenKeys::new(KEY, &[]).verify(&t), !old);
        }
    }
}

//! The session tokens a run sends: read from the seed file, then chosen uniformly, by a Zipf
//! law over their rank (line order), or each one once (for cache misses and revocations);
//! or, for the `forged` scenario, made up anew for every request ([`Forge`]).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gateway::sessions::{TOKEN_PREFIX, TokenKeys};
use http::HeaderValue;
use rand::{Rng, RngCore as _};

/// What kind of token `--scenario forged` makes up (`--forge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ForgeKind {
    /// `gw_` + 64 random base64url characters: the current shape with a random tag, what a
    /// guesser without the key sends.
    Forged,
    /// `gw_` + 43 random base64url characters: the shape of tokens from before tags (what
    /// the flood of issue 10 sent).
    Legacy,
    /// Correctly tagged under `--token-key` but never issued: what a guesser who has the key
    /// sends (only the session-miss budget stands in the way).
    Tagged,
}

/// Makes up the tokens of `--scenario forged`.
#[derive(Debug, Clone)]
pub enum Forge {
    Forged,
    Legacy,
    Tagged(TokenKeys),
}

impl Forge {
    /// The generator for `kind`; `tagged` needs the gateway's token key.
    ///
    /// # Errors
    /// `tagged` without a key, or a key shorter than the gateway accepts.
    pub fn new(kind: ForgeKind, key: Option<&str>) -> anyhow::Result<Forge> {
        Ok(match (kind, key) {
            (ForgeKind::Forged, _) => Forge::Forged,
            (ForgeKind::Legacy, _) => Forge::Legacy,
            (ForgeKind::Tagged, Some(k)) if k.len() >= gateway::config::MIN_SECRET_BYTES => {
                Forge::Tagged(TokenKeys::new(k.as_bytes(), &[]))
            }
            (ForgeKind::Tagged, _) => bail!(
                "--forge tagged needs --token-key (GATEWAY_SESSIONS__TOKEN_KEY): the gateway's \
                 sessions.token_key, at least {} bytes",
                gateway::config::MIN_SECRET_BYTES
            ),
        })
    }

    /// A new token nobody issued, as a `Bearer` value.
    pub fn make(&self) -> HeaderValue {
        let random = |n: usize| {
            let mut bytes = vec![0u8; n];
            rand::rng().fill_bytes(&mut bytes);
            format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
        };
        let token = match self {
            Forge::Forged => random(48),
            Forge::Legacy => random(32),
            Forge::Tagged(keys) => keys.issue(),
        };
        HeaderValue::from_str(&format!("Bearer {token}")).expect("base64url is a header value")
    }
}

/// Zipf sampling over ranks `0..n`: rank `k` (0-based) has weight `1 / (k + 1)^s`, so rank 0
/// is the most frequent and `s = 0` is uniform. Sampling is a binary search in the
/// precomputed cumulative weights: O(log n) per draw, 8 bytes of memory per rank.
#[derive(Debug, Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// The distribution over `n` ranks with exponent `s`.
    ///
    /// # Errors
    /// `n == 0`, or `s` negative or not finite.
    pub fn new(n: usize, s: f64) -> anyhow::Result<Zipf> {
        if n == 0 {
            bail!("Zipf over zero items");
        }
        if !s.is_finite() || s < 0.0 {
            bail!("the Zipf exponent must be a finite number ≥ 0, not {s}");
        }
        let mut total = 0.0;
        let cdf = (1..=n)
            .map(|k| {
                total += (k as f64).powf(-s);
                total
            })
            .collect();
        Ok(Zipf { cdf })
    }

    /// How many ranks there are.
    pub fn len(&self) -> usize {
        self.cdf.len()
    }

    /// Always false: a `Zipf` has at least one rank.
    pub fn is_empty(&self) -> bool {
        self.cdf.is_empty()
    }

    /// A random rank in `0..len()`.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        let total = self.cdf.last().copied().unwrap_or(0.0);
        let u = rng.random::<f64>() * total;
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }
}

/// How a token is chosen for each request.
#[derive(Debug, Clone)]
pub enum Choice {
    Uniform,
    Zipf(Zipf),
}

/// The tokens of a run, as ready `Authorization` values.
#[derive(Debug)]
pub struct Tokens {
    bearers: Vec<HeaderValue>,
    choice: Choice,
    next_unused: AtomicUsize,
}

impl Tokens {
    /// Reads one token per line from `path` (blank lines ignored), skips the first `offset`,
    /// keeps at most `limit`, and chooses among them uniformly or by Zipf(`zipf`).
    ///
    /// # Errors
    /// An unreadable file, a line that is not a valid header value, or no token left.
    pub fn load(
        path: &Path,
        offset: usize,
        limit: Option<usize>,
        zipf: Option<f64>,
    ) -> anyhow::Result<Tokens> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading {} (--tokens)", path.display()))?;
        let bearers = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .skip(offset)
            .take(limit.unwrap_or(usize::MAX))
            .enumerate()
            .map(|(i, token)| {
                HeaderValue::from_str(&format!("Bearer {token}")).with_context(|| {
                    format!(
                        "line {} of {} is not a token",
                        i + offset + 1,
                        path.display()
                    )
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Tokens::new(bearers, zipf)
            .with_context(|| format!("{} (--tokens, --token-offset)", path.display()))
    }

    /// Tokens from `bearers` (`Bearer …` values).
    ///
    /// # Errors
    /// `bearers` is empty, or `zipf` is not a valid exponent.
    pub fn new(bearers: Vec<HeaderValue>, zipf: Option<f64>) -> anyhow::Result<Tokens> {
        if bearers.is_empty() {
            bail!("no tokens to use");
        }
        let choice = match zipf {
            Some(s) => Choice::Zipf(Zipf::new(bearers.len(), s)?),
            None => Choice::Uniform,
        };
        Ok(Tokens {
            bearers,
            choice,
            next_unused: AtomicUsize::new(0),
        })
    }

    pub fn len(&self) -> usize {
        self.bearers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bearers.is_empty()
    }

    /// A token chosen uniformly or by Zipf rank (line order), reusable.
    pub fn pick(&self) -> &HeaderValue {
        let mut rng = rand::rng();
        let index = match &self.choice {
            Choice::Uniform => rng.random_range(0..self.bearers.len()),
            Choice::Zipf(z) => z.sample(&mut rng),
        };
        &self.bearers[index]
    }

    /// The next token nobody took yet, in file order; `None` once all are used.
    pub fn take_unused(&self) -> Option<&HeaderValue> {
        self.bearers
            .get(self.next_unused.fetch_add(1, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use gateway::sessions::{Shape, token};

    use super::*;

    fn token_of(bearer: &HeaderValue) -> String {
        let value = bearer.to_str().unwrap();
        value.strip_prefix("Bearer ").unwrap().to_string()
    }

    #[test]
    fn forged_tokens_have_the_shapes_the_gateway_parses_and_each_is_new() {
        let key = "k".repeat(gateway::config::MIN_SECRET_BYTES);
        let keys = TokenKeys::new(key.as_bytes(), &[]);
        for (kind, shape, tagged) in [
            (ForgeKind::Forged, Shape::Signed, false),
            (ForgeKind::Legacy, Shape::Legacy, false),
            (ForgeKind::Tagged, Shape::Signed, true),
        ] {
            let forge = Forge::new(kind, Some(&key)).unwrap();
            let (a, b) = (token_of(&forge.make()), token_of(&forge.make()));
            assert_ne!(a, b, "{kind:?}: a new token per request");
            assert_eq!(token::shape(&a), Some(shape), "{kind:?}: {a}");
            assert_eq!(keys.verify(&a), tagged, "{kind:?}: {a}");
        }
        assert!(Forge::new(ForgeKind::Tagged, None).is_err());
        assert!(Forge::new(ForgeKind::Tagged, Some("short")).is_err());
    }
}

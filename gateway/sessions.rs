//! Sessions: creation and revocation in the `sessions` table, and [`Sessions::validate`],
//! the request-path check through a bounded moka cache. The token format (a tag under
//! `sessions.token_key`) is [`token`].
//!
//! On the request path: shape → SHA-256 → cache. A hit does no database I/O at all (the
//! `last_seen_at` touch is queued to a batch writer, dropped and counted when the queue is
//! full). A miss first checks the token's tag in constant time: a token the gateway never
//! issued ends there, with no cache entry and no query. Then it spends one unit of the
//! client address's miss budget (429 when spent) and runs one indexed query, coalesced per
//! token, so a burst on one cold token makes one query. Unknown tokens are cached negatively
//! for `negative_ttl`. A database error on a miss is [`SessionError::Unavailable`] (answer
//! 503), never "no session", and is never cached. Every positive entry dies `cache_ttl` after
//! it was read from the database.
//!
//! The tag is checked on a miss only: the cache is keyed by the SHA-256 of the whole token,
//! tag included, and holds only what a query of a tagged (or, when allowed, legacy) token
//! returned, so a hit is a token that passed the check when it was loaded.
//!
//! Revocation across instances is the [`poll`] loop in [`revocation`].

pub(crate) mod revocation;
pub mod token;
pub(crate) mod touch;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use deadpool_postgres::Pool;
use moka::Expiry;
use moka::future::Cache;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::clock::DbClock;
use crate::config;
use crate::db::{self, DbError};
use crate::health::Health;

pub(crate) use revocation::poll;
pub use token::{Shape, TOKEN_PREFIX, TokenHash, TokenKeys, hash_token};

const INSERT: &str = "INSERT INTO sessions (id, user_id, token_hash, ip_address, device_label, user_agent, expires_at)
    VALUES ($1, $2, $3, $4, $5, $6, now() + ($7::BIGINT * INTERVAL '1 second'))
    RETURNING created_at, expires_at";
/// The session lookup of a cache miss (public for `loadtest select`, which measures it bare).
pub const LOOKUP: &str =
    "SELECT s.id, s.user_id, u.email, u.status, s.expires_at, s.last_seen_at, s.revoked_at,
        ARRAY(SELECT r.role FROM user_roles r WHERE r.user_id = s.user_id ORDER BY r.role) AS roles,
        s.created_at, u.email_verified, now()
    FROM sessions s JOIN users u ON u.id = s.user_id
    WHERE s.token_hash = $1 AND u.deleted_at IS NULL";
const REVOKE_ONE: &str =
    "UPDATE sessions SET revoked_at = now(), revoked_reason = $2, updated_at = now()
    WHERE id = $1 AND revoked_at IS NULL RETURNING token_hash";
const REVOKE_ONE_OF_USER: &str =
    "UPDATE sessions SET revoked_at = now(), revoked_reason = $3, updated_at = now()
    WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL RETURNING token_hash";
const REVOKE_USER: &str =
    "UPDATE sessions SET revoked_at = now(), revoked_reason = $2, updated_at = now()
    WHERE user_id = $1 AND revoked_at IS NULL RETURNING token_hash";
const REVOKE_OTHERS: &str =
    "UPDATE sessions SET revoked_at = now(), revoked_reason = $3, updated_at = now()
    WHERE user_id = $1 AND id <> $2 AND revoked_at IS NULL RETURNING token_hash";
const LIST_FOR_USER: &str =
    "SELECT id, ip_address, device_label, user_agent, created_at, last_seen_at, expires_at
    FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()
    ORDER BY created_at DESC LIMIT 100";

/// The identity of a validated session, as the proxy forwards it.
///
/// Kept compact: one of these lives in the cache for every active session (a million
/// sessions means a million of them), so strings are boxed slices and the role set is shared
/// between every identity with the same roles.
#[derive(Debug)]
pub(crate) struct Identity {
    pub session_id: Uuid,
    pub user_id: Box<str>,
    pub email: Box<str>,
    pub roles: Arc<RoleSet>,
    pub expires_at: SystemTime,
    /// Whether the user proved they receive mail at `email` (`users.email_verified`); a
    /// verification is seen within the revocation window, like a role change.
    pub email_verified: bool,
    /// Seconds since the epoch of the session's creation (whole seconds keep the entry
    /// within its allocator size class; see [`Identity::created_at`]).
    created_secs: u64,
    /// Seconds since the epoch of the last activity this instance knows of.
    last_seen: AtomicU64,
    /// When this entry was read from the database.
    loaded_at: Instant,
}

impl Identity {
    /// When the session was created, to the second.
    pub(crate) fn created_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.created_secs)
    }

    pub(crate) fn has_any_role(&self, wanted: &[String]) -> bool {
        wanted.is_empty()
            || wanted
                .iter()
                .any(|w| self.roles.names.iter().any(|r| r == w))
    }
}

/// A user's roles, sorted, and the header value that lists them.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RoleSet {
    pub names: Vec<String>,
    /// `names` joined with commas, ready for the header.
    pub header: String,
}

/// The shared [`RoleSet`] for these (sorted) roles. Role sets are few (an administrator
/// assigns them), so identities share one allocation per distinct set instead of each
/// holding its own copy; sets nobody holds any more are dropped from the table as it grows.
fn role_set(names: Vec<String>) -> Arc<RoleSet> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock, Weak};
    static SETS: OnceLock<Mutex<HashMap<String, Weak<RoleSet>>>> = OnceLock::new();
    let header = names.join(",");
    let mut sets = SETS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(set) = sets.get(&header).and_then(Weak::upgrade) {
        return set;
    }
    if sets.len() >= 1024 {
        sets.retain(|_, set| set.strong_count() > 0);
    }
    let set = Arc::new(RoleSet {
        names,
        header: header.clone(),
    });
    sets.insert(header, Arc::downgrade(&set));
    set
}

#[derive(Debug, Clone)]
enum Lookup {
    Found(Arc<Identity>),
    /// Unknown, revoked, expired or disabled: negatively cached.
    Missing,
}

/// Why a session could not be checked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    /// The session store could not answer: the database failed a cache miss (the cause), or
    /// it is down and `sessions.serve_cached_when_db_down` is false (no cause). Answer 503
    /// with `Retry-After`, unless [`SessionError::is_bug`].
    #[error("session store unavailable")]
    Unavailable(#[source] StoreError),
    /// The client's miss budget is spent, so the token was not looked up: answer 429 with
    /// `Retry-After` (whole seconds), never 401 (the session may well be valid).
    #[error("session lookups of this client address are over budget; retry in {0:?}")]
    Throttled(Duration),
}

/// What a cache miss may cost the client that causes it: called once, just before the
/// query, by the request that runs it; `Err(wait)` refuses the query. The gateway passes
/// the rate limits' session-miss budget (`Limits::spend_session_miss`) for the client's address.
pub(crate) type MissBudget<'a> = &'a (dyn Fn() -> Result<(), Duration> + Sync);

/// Why the session store could not answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// Cached sessions are not served while the database is down.
    #[error("the database is down and sessions.serve_cached_when_db_down is false")]
    Down,
    /// The lookup of a cache miss failed (shared by every request that waited for it).
    #[error(transparent)]
    Load(Arc<LoadError>),
}

impl SessionError {
    /// Whether the database refused the lookup's statement rather than could not answer it
    /// ([`DbError::is_unavailable`]): a bug, not unavailability.
    pub(crate) fn is_bug(&self) -> bool {
        match self {
            SessionError::Unavailable(StoreError::Load(load)) => match load.as_ref() {
                LoadError::Db(db) => !db.is_unavailable(),
                LoadError::Throttled(_) => false,
            },
            SessionError::Unavailable(StoreError::Down) | SessionError::Throttled(_) => false,
        }
    }
}

/// Why a load failed (the error type of the coalesced load, shared by its waiters).
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("over the miss budget")]
    Throttled(Duration),
}

struct LookupExpiry {
    positive: Duration,
    negative: Duration,
    clock: Arc<DbClock>,
}

impl Expiry<TokenHash, Lookup> for LookupExpiry {
    fn expire_after_create(
        &self,
        _key: &TokenHash,
        value: &Lookup,
        _now: Instant,
    ) -> Option<Duration> {
        Some(match value {
            Lookup::Found(identity) => {
                let left = identity
                    .expires_at
                    .duration_since(self.clock.now())
                    .unwrap_or_default();
                self.positive.min(left)
            }
            Lookup::Missing => self.negative,
        })
    }
}

/// Counters of one [`Sessions`] instance (the metrics are process-wide; these are per
/// instance, so tests running several gateways in one process can tell them apart).
#[derive(Debug, Default)]
pub struct Stats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Session queries sent to the database.
    pub queries: AtomicU64,
    /// Tokens of the current shape whose tag no key made: refused with no cache entry and no
    /// query.
    pub forged: AtomicU64,
    /// Tokens of the legacy shape refused because `accept_legacy_tokens` is off.
    pub legacy_refused: AtomicU64,
    /// Tokens of the legacy shape checked (hit or miss) because `accept_legacy_tokens` is on:
    /// when this stays at zero, the switch can go off.
    pub legacy_checked: AtomicU64,
    /// Misses refused because the client's miss budget was spent (no query).
    pub throttled: AtomicU64,
}

/// Session validation for the request path, shared by all connections.
#[derive(Clone)]
pub struct Sessions {
    pool: Pool,
    cache: Cache<TokenHash, Lookup>,
    keys: TokenKeys,
    touch: touch::Queue,
    settings: Arc<config::Sessions>,
    stats: Arc<Stats>,
    /// `gateway_session_cache_total` by result, registered once.
    hit_counter: metrics::Counter,
    miss_counter: metrics::Counter,
    /// `gateway_session_lookups_total` of the refusals that cost nothing, registered once.
    forged_counter: metrics::Counter,
    legacy_counter: metrics::Counter,
    legacy_checked_counter: metrics::Counter,
    health: Arc<Health>,
    /// Expiry is judged by the database's clock, not this instance's.
    clock: Arc<DbClock>,
}

impl Sessions {
    /// Builds the cache and starts the `last_seen_at` batch writer. New tokens are tagged
    /// with `settings.token_key`.
    pub(crate) fn new(pool: Pool, settings: &config::Sessions) -> Self {
        let clock = Arc::new(DbClock::new());
        let cache = Cache::builder()
            .max_capacity(settings.cache_capacity)
            .expire_after(LookupExpiry {
                positive: settings.cache_ttl,
                negative: settings.negative_ttl,
                clock: clock.clone(),
            })
            .build();
        Sessions {
            touch: touch::Queue::start(pool.clone(), settings.touch_queue),
            pool,
            cache,
            keys: TokenKeys::from_config(settings),
            settings: Arc::new(settings.clone()),
            stats: Arc::new(Stats::default()),
            hit_counter: metrics::counter!("gateway_session_cache_total", "result" => "hit"),
            miss_counter: metrics::counter!("gateway_session_cache_total", "result" => "miss"),
            forged_counter: metrics::counter!("gateway_session_lookups_total", "result" => "forged"),
            legacy_counter: metrics::counter!("gateway_session_lookups_total", "result" => "legacy_refused"),
            legacy_checked_counter: metrics::counter!("gateway_session_lookups_total", "result" => "legacy_checked"),
            health: Arc::new(Health::new()),
            clock,
        }
    }

    /// The database's clock as this instance knows it (fed by lookups and the poller).
    pub(crate) fn clock(&self) -> &DbClock {
        &self.clock
    }

    /// This instance's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub(crate) fn settings(&self) -> &config::Sessions {
        &self.settings
    }

    /// The keys that tag new tokens and check presented ones.
    #[cfg(test)]
    pub(crate) fn keys(&self) -> &TokenKeys {
        &self.keys
    }

    /// What this instance knows of the database's health (fed by lookups and the poller).
    pub(crate) fn health(&self) -> &Health {
        &self.health
    }

    /// Entries in the cache, for the metrics (runs the cache's pending maintenance first).
    pub async fn cached_entries(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.entry_count()
    }

    /// Checks a presented token. `Ok(None)` means no valid session: malformed, a tag no key
    /// made, a legacy token while `accept_legacy_tokens` is off, unknown, revoked, expired
    /// (absolute or idle), or the user is disabled or deleted. `budget` is spent only by a
    /// request that is about to query.
    ///
    /// # Errors
    /// [`SessionError::Unavailable`] when the cache misses and the database cannot answer, and
    /// on a hit while the database is down if `serve_cached_when_db_down` is false;
    /// [`SessionError::Throttled`] when the cache misses and `budget` refuses the query.
    ///
    /// # Security
    /// A positive answer was read from the database at most `cache_ttl` ago (or less, when
    /// the revocation poll invalidated it). Errors are never cached. A token whose tag fails
    /// (compared in constant time) is refused before any cache entry or query exists for it.
    pub(crate) async fn validate(
        &self,
        token: &str,
        budget: MissBudget<'_>,
    ) -> Result<Option<Arc<Identity>>, SessionError> {
        let signed = match token::shape(token) {
            None => {
                metrics::counter!("gateway_session_lookups_total", "result" => "malformed")
                    .increment(1);
                return Ok(None);
            }
            Some(Shape::Legacy) if !self.settings.accept_legacy_tokens => {
                self.stats.legacy_refused.fetch_add(1, Ordering::Relaxed);
                self.legacy_counter.increment(1);
                return Ok(None);
            }
            Some(Shape::Legacy) => {
                self.stats.legacy_checked.fetch_add(1, Ordering::Relaxed);
                self.legacy_checked_counter.increment(1);
                false
            }
            Some(Shape::Signed) => true,
        };
        let hash = token::hash(token);
        let cached = match self.cache.get(&hash).await {
            // The cache counts an entry's lifetime from its insertion, a moment after
            // `loaded_at`: an entry it still hands out in between is a miss, read again, and
            // must not be taken for a dead session (that cached a live one as unknown).
            Some(Lookup::Found(identity))
                if identity.loaded_at.elapsed() > self.settings.cache_ttl =>
            {
                self.cache.invalidate(&hash).await;
                None
            }
            cached => cached,
        };
        // A hit is a plain lookup; the loading path (moka's coalescing and the query) is a
        // large state machine, boxed so that its size is paid only on a miss, not by every
        // request and every idle connection.
        let (lookup, missed) = match cached {
            Some(lookup) => (lookup, false),
            None if signed && !self.keys.verify(token) => {
                self.stats.forged.fetch_add(1, Ordering::Relaxed);
                self.forged_counter.increment(1);
                return Ok(None);
            }
            None => Box::pin(self.load_coalesced(hash, budget)).await?,
        };
        let (counter, metric) = if missed {
            (&self.stats.misses, &self.miss_counter)
        } else {
            (&self.stats.hits, &self.hit_counter)
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metric.increment(1);
        let Lookup::Found(identity) = lookup else {
            return Ok(None);
        };
        if !missed && !self.settings.serve_cached_when_db_down && self.health.is_down() {
            return Err(SessionError::Unavailable(StoreError::Down));
        }
        let now = self.clock.now();
        if !self.is_live(&identity, now) {
            self.cache.insert(hash, Lookup::Missing).await;
            return Ok(None);
        }
        self.touch_if_due(&identity, now);
        Ok(Some(identity))
    }

    /// A cache miss: one query per token however many requests wait for it (moka coalesces
    /// them), paid from the `budget` of the request that runs it; errors are returned to
    /// every waiter and never cached. Also says whether this caller ran the query: a caller
    /// that waited for another's query (or found the entry loaded meanwhile) cost no query,
    /// and counts as a hit, so misses equal queries.
    async fn load_coalesced(
        &self,
        hash: TokenHash,
        budget: MissBudget<'_>,
    ) -> Result<(Lookup, bool), SessionError> {
        let mut queried = false;
        let lookup = self
            .cache
            .try_get_with(hash, async {
                budget().map_err(LoadError::Throttled)?;
                queried = true;
                self.stats.queries.fetch_add(1, Ordering::Relaxed);
                let loaded = load(&self.pool, &self.clock, &hash).await;
                self.health.report(loaded.is_ok());
                Ok(loaded?)
            })
            .await
            .map_err(|e| match *e {
                LoadError::Throttled(wait) => {
                    self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("gateway_session_lookups_total", "result" => "throttled")
                        .increment(1);
                    SessionError::Throttled(wait)
                }
                LoadError::Db(_) => {
                    metrics::counter!("gateway_session_lookups_total", "result" => "error")
                        .increment(1);
                    SessionError::Unavailable(StoreError::Load(e))
                }
            })?;
        Ok((lookup, queried))
    }

    /// Not expired, absolutely or by inactivity. (Age in the cache is handled by the caller.)
    fn is_live(&self, identity: &Identity, now: SystemTime) -> bool {
        let last_seen =
            UNIX_EPOCH + Duration::from_secs(identity.last_seen.load(Ordering::Relaxed));
        now < identity.expires_at && now < last_seen + self.settings.idle_timeout
    }

    fn touch_if_due(&self, identity: &Identity, now: SystemTime) {
        let now_secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let last = identity.last_seen.load(Ordering::Relaxed);
        if now_secs.saturating_sub(last) < self.settings.touch_interval.as_secs().max(1) {
            return;
        }
        // One request per interval wins the right to queue the touch.
        if identity
            .last_seen
            .compare_exchange(last, now_secs, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.touch.push(identity.session_id);
        }
    }

    /// Drops the cached entries of these token hashes (after a revocation).
    pub(crate) async fn invalidate(&self, hashes: &[TokenHash]) {
        for h in hashes {
            self.cache.invalidate(h).await;
        }
    }

    /// Creates a session for `user_id` and returns the raw token (shown once, never stored).
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn create(
        &self,
        user_id: &str,
        meta: &SessionMeta,
    ) -> Result<NewSession, DbError> {
        create(
            &self.pool,
            &self.keys,
            user_id,
            meta,
            self.settings.lifetime,
        )
        .await
    }

    /// Revokes the session of this token (logout) and forgets it here at once; other
    /// instances follow within the revocation window.
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn revoke_token(
        &self,
        identity: &Identity,
        reason: &str,
    ) -> Result<u64, DbError> {
        let hashes = revoke(&self.pool, REVOKE_ONE, &[&identity.session_id, &reason]).await?;
        self.invalidate(&hashes).await;
        Ok(hashes.len() as u64)
    }

    /// Revokes one session of `user_id` by id (a user can revoke only their own).
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn revoke_own(
        &self,
        user_id: &str,
        session_id: Uuid,
        reason: &str,
    ) -> Result<u64, DbError> {
        let hashes = revoke(
            &self.pool,
            REVOKE_ONE_OF_USER,
            &[&session_id, &user_id, &reason],
        )
        .await?;
        self.invalidate(&hashes).await;
        Ok(hashes.len() as u64)
    }

    /// Revokes every session of `user_id` except `keep`.
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn revoke_others(
        &self,
        user_id: &str,
        keep: Uuid,
        reason: &str,
    ) -> Result<u64, DbError> {
        let hashes = revoke(&self.pool, REVOKE_OTHERS, &[&user_id, &keep, &reason]).await?;
        self.invalidate(&hashes).await;
        Ok(hashes.len() as u64)
    }
}

/// Who opened a session: shown in the session list.
#[derive(Debug, Clone, Default)]
pub struct SessionMeta {
    pub ip_address: Option<IpAddr>,
    pub device_label: Option<String>,
    pub user_agent: Option<String>,
}

/// A session just created.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: Uuid,
    /// The raw token: give it to the client, never store or log it.
    pub token: String,
    pub created_at: SystemTime,
    pub expires_at: SystemTime,
}

/// A row of the session list.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionInfo {
    pub id: Uuid,
    pub ip_address: Option<String>,
    pub device_label: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: String,
    pub last_seen_at: String,
    pub expires_at: String,
}

/// Creates a session row with a new token tagged by the current key of `keys`; the token is
/// new, so a client can never choose its own (no fixation).
///
/// # Errors
/// A database error.
pub async fn create(
    pool: &Pool,
    keys: &TokenKeys,
    user_id: &str,
    meta: &SessionMeta,
    lifetime: Duration,
) -> Result<NewSession, DbError> {
    let id = Uuid::new_v4();
    let token = keys.issue();
    let hash = token::hash(&token);
    let ip = meta.ip_address.map(|ip| ip.to_string());
    let device = meta.device_label.as_deref().map(|s| truncate(s, 200));
    let agent = meta.user_agent.as_deref().map(|s| truncate(s, 400));
    let lifetime_secs = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
    let params: [&(dyn ToSql + Sync); 7] = [
        &id,
        &user_id,
        &hash.as_slice(),
        &ip,
        &device,
        &agent,
        &lifetime_secs,
    ];
    let params = &params;
    let row = db::transaction(pool, |tx| async move { tx.query_one(INSERT, params).await }).await?;
    Ok(NewSession {
        id,
        token,
        created_at: row.get(0),
        expires_at: row.get(1),
    })
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].chars().filter(|c| !c.is_control()).collect()
}

async fn load(pool: &Pool, clock: &DbClock, hash: &TokenHash) -> Result<Lookup, DbError> {
    metrics::counter!("gateway_session_queries_total").increment(1);
    let client = db::client(pool).await?;
    let stmt = client.prepare_cached(LOOKUP).await?;
    let Some(row) = client.query_opt(&stmt, &[&hash.as_slice()]).await? else {
        return Ok(Lookup::Missing);
    };
    let status: &str = row.get(3);
    let revoked: Option<SystemTime> = row.get(6);
    let expires_at: SystemTime = row.get(4);
    let database_now: SystemTime = row.get(10);
    clock.observe(database_now);
    if status != "active" || revoked.is_some() || expires_at <= database_now {
        return Ok(Lookup::Missing);
    }
    let last_seen: SystemTime = row.get(5);
    let roles: Vec<String> = row.get(7);
    let (user_id, email): (String, String) = (row.get(1), row.get(2));
    Ok(Lookup::Found(Arc::new(Identity {
        session_id: row.get(0),
        user_id: user_id.into_boxed_str(),
        email: email.into_boxed_str(),
        roles: role_set(roles),
        expires_at,
        created_secs: unix_secs(row.get(8)),
        email_verified: row.get(9),
        last_seen: AtomicU64::new(unix_secs(last_seen)),
        loaded_at: Instant::now(),
    })))
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

async fn revoke(
    pool: &Pool,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<TokenHash>, DbError> {
    let rows = db::transaction(pool, |tx| async move { tx.query(sql, params).await }).await?;
    count_revoked(rows.len());
    Ok(token_hashes(&rows))
}

fn token_hashes(rows: &[tokio_postgres::Row]) -> Vec<TokenHash> {
    rows.iter()
        .filter_map(|r| <TokenHash>::try_from(r.get::<_, &[u8]>(0)).ok())
        .collect()
}

/// Counts sessions revoked (`gateway_sessions_revoked_total`), once their transaction has
/// committed.
pub(crate) fn count_revoked(n: usize) {
    metrics::counter!("gateway_sessions_revoked_total").increment(n as u64);
}

/// Revokes every live session of `user_id` inside the caller's transaction, so that the
/// revocation commits (or not) with the change that calls for it: disabling the user, a new
/// password. Returns the token hashes; once committed, count them ([`count_revoked`]) and drop
/// them from this instance's cache ([`Sessions::invalidate`]); other instances follow within
/// the revocation window.
///
/// # Errors
/// The statement failed.
pub(crate) async fn revoke_user_in(
    tx: &db::Tx,
    user_id: &str,
    reason: &str,
) -> Result<Vec<TokenHash>, tokio_postgres::Error> {
    Ok(token_hashes(
        &tx.query(REVOKE_USER, &[&user_id, &reason]).await?,
    ))
}

/// As [`revoke_user_in`], but keeps session `keep` (a password change keeps the session that
/// made it).
///
/// # Errors
/// The statement failed.
pub(crate) async fn revoke_others_in(
    tx: &db::Tx,
    user_id: &str,
    keep: Uuid,
    reason: &str,
) -> Result<Vec<TokenHash>, tokio_postgres::Error> {
    Ok(token_hashes(
        &tx.query(REVOKE_OTHERS, &[&user_id, &keep, &reason]).await?,
    ))
}

/// Revokes one session by id (operator command). Returns how many were revoked (0 or 1).
///
/// # Errors
/// A database error.
pub(crate) async fn revoke_one(pool: &Pool, id: Uuid, reason: &str) -> Result<u64, DbError> {
    Ok(revoke(pool, REVOKE_ONE, &[&id, &reason]).await?.len() as u64)
}

/// Revokes every session of a user (operator command, password reset).
///
/// # Errors
/// A database error.
pub async fn revoke_user(pool: &Pool, user_id: &str, reason: &str) -> Result<u64, DbError> {
    Ok(revoke(pool, REVOKE_USER, &[&user_id, &reason]).await?.len() as u64)
}

/// The live sessions of a user, newest first (at most 100).
///
/// # Errors
/// A database error.
pub async fn list(pool: &Pool, user_id: &str) -> Result<Vec<SessionInfo>, DbError> {
    let client = db::client(pool).await?;
    let stmt = client.prepare_cached(LIST_FOR_USER).await?;
    let rfc3339 = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    Ok(client
        .query(&stmt, &[&user_id])
        .await?
        .iter()
        .map(|r| SessionInfo {
            id: r.get(0),
            ip_address: r.get(1),
            device_label: r.get(2),
            user_agent: r.get(3),
            created_at: rfc3339(r.get(4)),
            last_seen_at: rfc3339(r.get(5)),
            expires_at: rfc3339(r.get(6)),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "unit-test token key 0123456789abcdef";

    /// Sessions over a database that refuses connections: every read is an error, so any
    /// answer other than `Unavailable` on a miss proves that no query was tried.
    fn unreachable_sessions(extra: &[(&str, &str)]) -> Sessions {
        let env = [
            (
                "GATEWAY_DATABASE__URL",
                "postgres://postgres@127.0.0.1:1/none",
            ),
            ("GATEWAY_DATABASE__CONNECT_TIMEOUT", "1s"),
            ("GATEWAY_SESSIONS__TOKEN_KEY", KEY),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let config = config::Config::load(None, env).unwrap();
        let pool = db::connect(&config.database).unwrap();
        Sessions::new(pool, &config.sessions)
    }

    /// A budget that is never spent.
    fn unmetered() -> Result<(), Duration> {
        Ok(())
    }

    /// A budget that refuses, and says that it was asked.
    fn spent(asked: &AtomicU64) -> impl Fn() -> Result<(), Duration> + Sync + '_ {
        move || {
            asked.fetch_add(1, Ordering::Relaxed);
            Err(Duration::from_secs(7))
        }
    }

    /// `gw_` + base64url of `n` random bytes: the shape of a token, made by no key.
    fn random_token(n: usize) -> String {
        use base64::Engine as _;
        use rand::TryRngCore as _;
        let mut bytes = vec![0u8; n];
        rand::rngs::OsRng.try_fill_bytes(&mut bytes).unwrap();
        format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        )
    }

    async fn entries(sessions: &Sessions) -> u64 {
        sessions.cache.run_pending_tasks().await;
        sessions.cache.entry_count()
    }

    #[tokio::test]
    async fn forged_and_legacy_tokens_cost_no_query_no_entry_and_no_budget() {
        let sessions = unreachable_sessions(&[]);
        let asked = AtomicU64::new(0);
        let budget = spent(&asked);
        let other_key = TokenKeys::new(b"another key 0123456789abcdef0123456", &[]);
        for token in [
            random_token(48),
            random_token(48),
            other_key.issue(),
            random_token(32),
        ] {
            for _ in 0..3 {
                // The database is unreachable: a query would be an error, not `None`.
                let answer = sessions.validate(&token, &budget).await;
                assert!(matches!(answer, Ok(None)), "{token}: {answer:?}");
            }
        }
        let stats = sessions.stats();
        assert_eq!(stats.forged.load(Ordering::Relaxed), 9);
        assert_eq!(stats.legacy_refused.load(Ordering::Relaxed), 3);
        assert_eq!(stats.queries.load(Ordering::Relaxed), 0);
        assert_eq!(asked.load(Ordering::Relaxed), 0, "no budget spent");
        assert_eq!(entries(&sessions).await, 0, "no cache entry");
    }

    #[tokio::test]
    async fn a_tagged_miss_spends_the_budget_first_and_a_spent_one_is_throttled() {
        let sessions = unreachable_sessions(&[]);
        let asked = AtomicU64::new(0);
        let token = sessions.keys().issue();
        let answer = sessions.validate(&token, &spent(&asked)).await;
        assert!(
            matches!(answer, Err(SessionError::Throttled(w)) if w == Duration::from_secs(7)),
            "{answer:?}"
        );
        assert_eq!(asked.load(Ordering::Relaxed), 1);
        assert_eq!(sessions.stats().queries.load(Ordering::Relaxed), 0);
        assert_eq!(sessions.stats().throttled.load(Ordering::Relaxed), 1);
        assert_eq!(entries(&sessions).await, 0, "a refusal is not cached");
        // With budget left, the same token is queried (and the database is down: 503).
        let answer = sessions.validate(&token, &unmetered).await;
        assert!(
            matches!(answer, Err(SessionError::Unavailable(_))),
            "{answer:?}"
        );
        assert_eq!(sessions.stats().queries.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn legacy_tokens_are_looked_up_only_when_accepted() {
        let sessions = unreachable_sessions(&[("GATEWAY_SESSIONS__ACCEPT_LEGACY_TOKENS", "true")]);
        let legacy = random_token(32);
        let answer = sessions.validate(&legacy, &unmetered).await;
        assert!(
            matches!(answer, Err(SessionError::Unavailable(_))),
            "{answer:?}"
        );
        assert_eq!(sessions.stats().queries.load(Ordering::Relaxed), 1);
        assert_eq!(sessions.stats().legacy_refused.load(Ordering::Relaxed), 0);
        assert_eq!(sessions.stats().legacy_checked.load(Ordering::Relaxed), 1);
        // Accepting legacy tokens changes nothing for forged current ones.
        let forged = random_token(48);
        assert!(matches!(
            sessions.validate(&forged, &unmetered).await,
            Ok(None)
        ));
        assert_eq!(sessions.stats().queries.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_cached_session_is_served_without_a_tag_check_or_budget() {
        let sessions = unreachable_sessions(&[]);
        let asked = AtomicU64::new(0);
        let token = sessions.keys().issue();
        sessions
            .cache
            .insert(token::hash(&token), identity(Instant::now()))
            .await;
        let hit = sessions.validate(&token, &spent(&asked)).await.unwrap();
        assert_eq!(&*hit.unwrap().user_id, "u1");
        assert_eq!(asked.load(Ordering::Relaxed), 0);
    }

    fn identity(loaded_at: Instant) -> Lookup {
        let now = SystemTime::now();
        Lookup::Found(Arc::new(Identity {
            session_id: Uuid::nil(),
            user_id: "u1".into(),
            email: "u1@example.com".into(),
            roles: role_set(Vec::new()),
            expires_at: now + Duration::from_secs(3600),
            created_secs: unix_secs(now),
            email_verified: true,
            last_seen: AtomicU64::new(now.duration_since(UNIX_EPOCH).unwrap().as_secs()),
            loaded_at,
        }))
    }

    #[tokio::test]
    async fn an_entry_older_than_the_cache_ttl_is_read_again_not_refused() {
        let sessions = unreachable_sessions(&[]);
        let token = sessions.keys().issue();
        let hash = hash_token(&token).unwrap();
        let ttl = sessions.settings.cache_ttl;

        sessions.cache.insert(hash, identity(Instant::now())).await;
        let fresh = sessions.validate(&token, &unmetered).await.unwrap();
        assert_eq!(&*fresh.unwrap().user_id, "u1", "a fresh entry is a hit");

        // What the cache can still hand out for a moment: read from the database longer than
        // cache_ttl ago. It must be read again (here: the database is down, so 503), never
        // answered, and never remembered as an unknown token.
        let stale = Instant::now()
            .checked_sub(ttl + Duration::from_secs(1))
            .unwrap();
        sessions.cache.insert(hash, identity(stale)).await;
        let again = sessions.validate(&token, &unmetered).await;
        assert!(
            matches!(again, Err(SessionError::Unavailable(_))),
            "{again:?}"
        );
        assert!(
            !matches!(sessions.cache.get(&hash).await, Some(Lookup::Missing)),
            "a live session is not cached as unknown"
        );
        let stats = sessions.stats();
        let (hits, misses) = (
            stats.hits.load(Ordering::Relaxed),
            stats.misses.load(Ordering::Relaxed),
        );
        assert_eq!(
            (hits, misses),
            (1, 0),
            "the stale entry was not counted as a hit"
        );
    }

    /// An instance whose own clock is 5 minutes behind the database's must not serve a
    /// session the database's clock says has expired (and one ahead must not refuse one
    /// that has not).
    #[tokio::test]
    async fn expiry_is_judged_by_the_database_clock() {
        let sessions = unreachable_sessions(&[]);
        let token = sessions.keys().issue();
        let hash = hash_token(&token).unwrap();
        // Expires in 100 s by this machine's clock...
        sessions.cache.insert(hash, identity(Instant::now())).await;
        if let Some(Lookup::Found(found)) = sessions.cache.get(&hash).await {
            assert!(found.expires_at > SystemTime::now());
        }
        // ...which is 5 minutes behind the database: there it expired 200 s ago.
        sessions
            .clock
            .observe(SystemTime::now() + Duration::from_secs(3600 + 300));
        let seen = sessions.validate(&token, &unmetered).await.unwrap();
        assert!(
            seen.is_none(),
            "served a session expired by the database's clock"
        );

        sessions
            .clock
            .observe(SystemTime::now() - Duration::from_secs(300));
        let other = sessions.keys().issue();
        let other_hash = hash_token(&other).unwrap();
        sessions
            .cache
            .insert(other_hash, identity(Instant::now()))
            .await;
        assert!(
            sessions
                .validate(&other, &unmetered)
                .await
                .unwrap()
                .is_some(),
            "a clock ahead of the database refused a live session"
        );
    }

    #[test]
    fn truncation_keeps_utf8_and_drops_controls() {
        assert_eq!(truncate("héllo\r\nx", 3), "hé");
        assert_eq!(truncate("ab\ncd", 10), "abcd");
    }

    #[test]
    fn identities_with_the_same_roles_share_one_role_set_and_keep_their_own() {
        let admin = role_set(vec!["admin".into(), "ops".into()]);
        let again = role_set(vec!["admin".into(), "ops".into()]);
        let other = role_set(vec!["admin".into()]);
        assert!(Arc::ptr_eq(&admin, &again));
        assert!(!Arc::ptr_eq(&admin, &other));
        assert_eq!(admin.header, "admin,ops");
        assert_eq!(other.names, vec!["admin".to_string()]);
        assert_eq!(role_set(Vec::new()).header, "");
        // A set nobody holds any more is rebuilt, never resurrected with stale contents.
        drop((admin, again));
        let rebuilt = role_set(vec!["admin".into(), "ops".into()]);
        assert_eq!(rebuilt.names, vec!["admin".to_string(), "ops".to_string()]);
    }

    /// One cache entry is an `Arc<Identity>`: two counters and the identity. At 128 bytes it
    /// fills mimalloc's 128-byte size class; one byte more costs the next class, 160.
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    #[test]
    fn a_cached_identity_fits_its_allocation_class() {
        assert!(
            std::mem::size_of::<Identity>() + 2 * std::mem::size_of::<usize>() <= 128,
            "Identity is {} bytes",
            std::mem::size_of::<Identity>()
        );
    }
}

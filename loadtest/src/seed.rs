//! `loadtest seed`: fills a database migrated by `gateway migrate up` with users
//! `user{i}@DOMAIN`, one password hash (bcrypt, computed once and shared), K sessions each and
//! optional roles, fast: binary `COPY` in batches of 5,000 users, one transaction per batch,
//! over a few connections at once. The raw session tokens (made as the gateway makes them:
//! 32 bytes from the OS CSPRNG tagged under `--token-key`, which must be the gateway's
//! `sessions.token_key`, stored as SHA-256 of the whole string) go to a file, one per line,
//! user by user: line `i*K + j` is session `j` of `user{i}`.

use std::io::Write as _;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gateway::sessions::{TokenKeys, token};
use sha2::{Digest, Sha256};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, Transaction};

/// The password `loadtest seed` gives every user unless told otherwise.
pub const DEFAULT_PASSWORD: &str = "loadtest-password-1";
/// Domain of the seeded addresses unless `--email-domain` says otherwise.
pub const DEFAULT_EMAIL_DOMAIN: &str = "loadtest.example";
/// Users per batch: one transaction with one `COPY` per table.
const BATCH_USERS: u64 = 5_000;
/// bcrypt reads at most this many bytes; the gateway pre-hashes longer passwords.
const BCRYPT_LIMIT: usize = 72;

const CHECK_SCHEMA: &str = "SELECT to_regclass('users') IS NOT NULL \
     AND to_regclass('user_passwords') IS NOT NULL \
     AND to_regclass('sessions') IS NOT NULL AND to_regclass('user_roles') IS NOT NULL";
const EXISTING_USERS: &str = "SELECT count(*), \
     coalesce(max(substring(email FROM '^user([0-9]+)@')::BIGINT), -1) \
     FROM users WHERE email LIKE 'user%' AND split_part(email, '@', 2) = $1";
const COPY_USERS: &str =
    "COPY users (id, email, email_verified, status) FROM STDIN (FORMAT binary)";
const COPY_PASSWORDS: &str =
    "COPY user_passwords (user_id, password_hash) FROM STDIN (FORMAT binary)";
const COPY_SESSIONS: &str =
    "COPY sessions (id, user_id, token_hash, expires_at) FROM STDIN (FORMAT binary)";
const COPY_ROLES: &str = "COPY user_roles (user_id, role) FROM STDIN (FORMAT binary)";
const ANALYZE: &str = "ANALYZE users, user_passwords, sessions, user_roles";

/// `loadtest seed`: the command line.
#[derive(Debug, clap::Args)]
pub struct SeedArgs {
    /// PostgreSQL URL of a database migrated by `gateway migrate up`.
    #[arg(long, env = "GATEWAY_DATABASE__URL", value_name = "URL")]
    pub database_url: String,
    /// How many users to create.
    #[arg(long, value_name = "N")]
    pub users: u64,
    /// Sessions per user.
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub sessions_per_user: u64,
    /// File to write the raw session tokens to, one per line.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Password of every user (for the `login` scenario).
    #[arg(long, default_value = DEFAULT_PASSWORD)]
    pub password: String,
    /// bcrypt cost of the shared hash. 4 seeds fastest; use the gateway's auth.bcrypt_cost
    /// for login benchmarks, or every first login re-hashes at the configured cost.
    #[arg(long, default_value_t = 4, value_name = "C")]
    pub bcrypt_cost: u32,
    /// Domain of the addresses user{i}@DOMAIN.
    #[arg(long, default_value = DEFAULT_EMAIL_DOMAIN)]
    pub email_domain: String,
    /// Roles given to every user, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub roles: Vec<String>,
    /// Add users after the highest existing user{i} instead of refusing when some exist.
    #[arg(long)]
    pub append: bool,
    /// How long the sessions are valid.
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    pub session_lifetime: Duration,
    /// Database connections copying at once.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub connections: usize,
    /// The gateway's `sessions.token_key` (at least 32 bytes): the seeded tokens carry its
    /// tag, or the gateway refuses them without a lookup.
    #[arg(
        long,
        env = "GATEWAY_SESSIONS__TOKEN_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub token_key: String,
}

/// What [`seed`] did.
#[derive(Debug, Clone)]
pub struct SeedSummary {
    /// Index of the first user created (0 unless `--append`).
    pub first_user: u64,
    pub users: u64,
    pub sessions: u64,
    pub rows: u64,
    pub elapsed: Duration,
}

impl SeedSummary {
    pub fn rows_per_second(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl SeedArgs {
    /// Checks the flags.
    ///
    /// # Errors
    /// The first out-of-range flag, named.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(1..=10_000_000).contains(&self.users) {
            bail!("--users must be between 1 and 10000000");
        }
        if !(1..=100).contains(&self.sessions_per_user) {
            bail!("--sessions-per-user must be between 1 and 100");
        }
        if !(4..=31).contains(&self.bcrypt_cost) {
            bail!("--bcrypt-cost must be between 4 and 31");
        }
        if !(1..=32).contains(&self.connections) {
            bail!("--connections must be between 1 and 32");
        }
        let domain_ok = !self.email_domain.is_empty()
            && self.email_domain.len() <= 200
            && self
                .email_domain
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !domain_ok {
            bail!("--email-domain must be a lower-case domain name");
        }
        if self.roles.iter().any(|r| r.is_empty() || r.len() > 64) {
            bail!("--roles must be names of 1 to 64 characters");
        }
        if self.session_lifetime.is_zero() {
            bail!("--session-lifetime must be more than 0");
        }
        if self.token_key.len() < gateway::config::MIN_SECRET_BYTES {
            bail!(
                "--token-key (GATEWAY_SESSIONS__TOKEN_KEY) must be the gateway's \
                 sessions.token_key, at least {} bytes",
                gateway::config::MIN_SECRET_BYTES
            );
        }
        Ok(())
    }
}

/// Runs `loadtest seed` and prints what it did.
///
/// # Errors
/// As [`seed`].
pub async fn execute(args: SeedArgs) -> anyhow::Result<SeedSummary> {
    let summary = seed(&args).await?;
    println!(
        "seeded user{}..user{} ({} users, {} sessions, {} rows) in {:.2} s: {:.0} rows/s; \
         tokens in {}",
        summary.first_user,
        summary.first_user + summary.users - 1,
        summary.users,
        summary.sessions,
        summary.rows,
        summary.elapsed.as_secs_f64(),
        summary.rows_per_second(),
        args.out.display(),
    );
    Ok(summary)
}

/// Seeds the database of `args` and writes the tokens file.
///
/// # Errors
/// The database cannot be reached or is not migrated; seed users already exist (without
/// `--append`); a `COPY` fails (committed batches stay); the tokens file cannot be written.
pub async fn seed(args: &SeedArgs) -> anyhow::Result<SeedSummary> {
    args.validate()?;
    let started = Instant::now();
    let first = connect(&args.database_url).await?;
    let migrated: bool = first
        .query_one(CHECK_SCHEMA, &[])
        .await
        .context("checking the schema")?
        .get(0);
    if !migrated {
        bail!("the database has no gateway tables: run `gateway migrate up` first");
    }
    let existing = first
        .query_one(EXISTING_USERS, &[&args.email_domain])
        .await
        .context("counting existing seed users")?;
    let (count, highest): (i64, i64) = (existing.get(0), existing.get(1));
    if count > 0 && !args.append {
        bail!(
            "{count} seed users (user…@{}) already exist: pass --append to add more after \
             them, or seed a fresh database",
            args.email_domain
        );
    }
    let first_user = u64::try_from(highest + 1).unwrap_or(0);

    let password_hash = hash_password(&args.password, args.bcrypt_cost).await?;
    let plan = Arc::new(Plan {
        first_user,
        users: args.users,
        sessions_per_user: args.sessions_per_user,
        domain: args.email_domain.clone(),
        roles: args.roles.clone(),
        password_hash,
        keys: TokenKeys::new(args.token_key.as_bytes(), &[]),
        expires_at: SystemTime::now() + args.session_lifetime,
        next_batch: AtomicU64::new(0),
    });

    let mut clients = vec![first];
    let batches = args.users.div_ceil(BATCH_USERS);
    let workers = (args.connections as u64).min(batches) as usize;
    for _ in 1..workers {
        clients.push(connect(&args.database_url).await?);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for client in clients {
        let plan = Arc::clone(&plan);
        tasks.spawn(async move { copy_batches(client, &plan).await });
    }
    let mut done: Vec<(u64, Vec<String>)> = Vec::with_capacity(batches as usize);
    while let Some(joined) = tasks.join_next().await {
        let batches = joined.context("a seeding task failed")?.inspect_err(|_| {
            tasks.abort_all();
        })?;
        done.extend(batches);
    }
    done.sort_unstable_by_key(|(batch, _)| *batch);
    write_tokens(&args.out, &done)?;

    let analyzer = connect(&args.database_url).await?;
    analyzer.batch_execute(ANALYZE).await.context("ANALYZE")?;

    let sessions = args.users * args.sessions_per_user;
    let roles = args.users * args.roles.len() as u64;
    Ok(SeedSummary {
        first_user,
        users: args.users,
        sessions,
        rows: args.users * 2 + sessions + roles,
        elapsed: started.elapsed(),
    })
}

/// What every batch needs to know.
struct Plan {
    first_user: u64,
    users: u64,
    sessions_per_user: u64,
    domain: String,
    roles: Vec<String>,
    password_hash: String,
    keys: TokenKeys,
    expires_at: SystemTime,
    next_batch: AtomicU64,
}

async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .context("connecting to the database (--database-url)")?;
    tokio::spawn(async move {
        // A broken connection shows up as an error of the next query.
        let _ = connection.await;
    });
    Ok(client)
}

/// The bcrypt hash of `password` at `cost`, as the gateway would make it.
async fn hash_password(password: &str, cost: u32) -> anyhow::Result<String> {
    let input = if password.len() > BCRYPT_LIMIT {
        STANDARD
            .encode(Sha256::digest(password.as_bytes()))
            .into_bytes()
    } else {
        password.as_bytes().to_vec()
    };
    // One hash for the whole seed, on the blocking pool: the gateway's rule against bcrypt on
    // runtime workers is about request paths.
    #[allow(clippy::disallowed_methods)]
    let hashed = tokio::task::spawn_blocking(move || bcrypt::hash(input, cost))
        .await
        .context("the bcrypt task failed")?
        .context("bcrypt")?;
    Ok(hashed)
}

/// Takes batches until none is left, each in its own transaction; returns each batch's
/// tokens.
async fn copy_batches(mut client: Client, plan: &Plan) -> anyhow::Result<Vec<(u64, Vec<String>)>> {
    let mut out = Vec::new();
    loop {
        let batch = plan.next_batch.fetch_add(1, Ordering::Relaxed);
        let start = batch * BATCH_USERS;
        if start >= plan.users {
            return Ok(out);
        }
        let count = BATCH_USERS.min(plan.users - start);
        let rows = Batch::generate(plan, plan.first_user + start, count)?;
        let tx = client.transaction().await.context("BEGIN")?;
        rows.copy(&tx, plan)
            .await
            .with_context(|| format!("copying users {} to {}", start, start + count - 1))?;
        tx.commit().await.context("COMMIT")?;
        out.push((batch, rows.tokens));
    }
}

/// The rows of one batch.
struct Batch {
    user_ids: Vec<String>,
    emails: Vec<String>,
    session_ids: Vec<uuid::Uuid>,
    token_hashes: Vec<Vec<u8>>,
    tokens: Vec<String>,
}

impl Batch {
    fn generate(plan: &Plan, first: u64, count: u64) -> anyhow::Result<Batch> {
        let sessions = (count * plan.sessions_per_user) as usize;
        let tokens: Vec<String> = (0..sessions).map(|_| plan.keys.issue()).collect();
        Ok(Batch {
            user_ids: (0..count)
                .map(|_| uuid::Uuid::new_v4().to_string())
                .collect(),
            emails: (first..first + count)
                .map(|i| format!("user{i}@{}", plan.domain))
                .collect(),
            session_ids: (0..sessions).map(|_| uuid::Uuid::new_v4()).collect(),
            token_hashes: tokens.iter().map(|t| token::hash(t).to_vec()).collect(),
            tokens,
        })
    }

    async fn copy(&self, tx: &Transaction<'_>, plan: &Plan) -> anyhow::Result<()> {
        let (verified, active) = (true, "active");
        let mut users = copier(
            tx,
            COPY_USERS,
            &[Type::TEXT, Type::TEXT, Type::BOOL, Type::TEXT],
        )
        .await
        .context("users")?;
        for (id, email) in self.user_ids.iter().zip(&self.emails) {
            users
                .as_mut()
                .write(&[id, email, &verified, &active])
                .await?;
        }
        users.as_mut().finish().await.context("users")?;

        let mut passwords = copier(tx, COPY_PASSWORDS, &[Type::TEXT, Type::TEXT])
            .await
            .context("user_passwords")?;
        for id in &self.user_ids {
            passwords.as_mut().write(&[id, &plan.password_hash]).await?;
        }
        passwords
            .as_mut()
            .finish()
            .await
            .context("user_passwords")?;

        let types = [Type::UUID, Type::TEXT, Type::BYTEA, Type::TIMESTAMPTZ];
        let mut sessions = copier(tx, COPY_SESSIONS, &types)
            .await
            .context("sessions")?;
        let k = plan.sessions_per_user as usize;
        for (s, (id, hash)) in self.session_ids.iter().zip(&self.token_hashes).enumerate() {
            let user_id = &self.user_ids[s / k];
            sessions
                .as_mut()
                .write(&[id, user_id, hash, &plan.expires_at])
                .await?;
        }
        sessions.as_mut().finish().await.context("sessions")?;

        if !plan.roles.is_empty() {
            let mut roles = copier(tx, COPY_ROLES, &[Type::TEXT, Type::TEXT])
                .await
                .context("user_roles")?;
            for id in &self.user_ids {
                for role in &plan.roles {
                    roles.as_mut().write(&[id, role]).await?;
                }
            }
            roles.as_mut().finish().await.context("user_roles")?;
        }
        Ok(())
    }
}

/// A binary `COPY … FROM STDIN` writer for `statement` with columns of `types`.
async fn copier(
    tx: &Transaction<'_>,
    statement: &str,
    types: &[Type],
) -> Result<Pin<Box<BinaryCopyInWriter>>, tokio_postgres::Error> {
    let sink = tx.copy_in(statement).await?;
    Ok(Box::pin(BinaryCopyInWriter::new(sink, types)))
}

fn write_tokens(path: &PathBuf, batches: &[(u64, Vec<String>)]) -> anyhow::Result<()> {
    let file = std::fs::File::create(path)
        .with_context(|| format!("creating {} (--out)", path.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    for token in batches.iter().flat_map(|(_, tokens)| tokens) {
        writeln!(out, "{token}").with_context(|| format!("writing {}", path.display()))?;
    }
    out.flush()
        .with_context(|| format!("writing {}", path.display()))
}

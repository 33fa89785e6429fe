//! The command line (`gateway serve | migrate | check-config | user | sessions`): argument
//! definitions and what each command does. Exit codes: 0 success, 1 the operation failed,
//! 2 bad usage, bad configuration or a database schema this binary does not expect.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use zeroize::Zeroizing;

use crate::config::{self, Config, ConfigError};
use crate::server::{self, StartError};
use crate::{db, migrate, password, sessions, users};

/// Edge auth gateway: TLS reverse proxy with session validation and login flows.
#[derive(Debug, Parser)]
#[command(name = "gateway", version, about)]
pub struct Cli {
    /// Config file (TOML). Default: $GATEWAY_CONFIG, else built-in defaults. Any key can be
    /// overridden by GATEWAY_SECTION__KEY, e.g. GATEWAY_DATABASE__URL.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (refuses to start unless the schema is at the expected version).
    Serve,
    /// Apply, roll back or list the embedded database migrations.
    #[command(subcommand)]
    Migrate(MigrateCommand),
    /// Validate the configuration, printing every problem with its key.
    CheckConfig,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage sessions.
    #[command(subcommand)]
    Sessions(SessionsCommand),
}

#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Apply pending migrations (up to --to N).
    Up {
        #[arg(long, value_name = "N")]
        to: Option<i64>,
    },
    /// Roll back the latest migration (or down to --to N; --to 0 rolls back everything).
    Down {
        #[arg(long, value_name = "N")]
        to: Option<i64>,
    },
    /// List applied and pending migrations and any checksum mismatch.
    Status,
}

#[derive(Debug, Args)]
pub struct EmailArg {
    #[arg(long, value_name = "EMAIL")]
    pub email: String,
}

#[derive(Debug, Args)]
pub struct EmailRoleArgs {
    #[arg(long, value_name = "EMAIL")]
    pub email: String,
    #[arg(long, value_name = "ROLE")]
    pub role: String,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user (email lowercased, marked verified).
    Create {
        #[arg(long, value_name = "EMAIL")]
        email: String,
        /// Read the password from standard input (one trailing newline is removed). It must
        /// pass the same rule as /auth/register: 8 to 256 bytes and not easy to guess.
        /// Without it the user can sign in only by email code or link.
        #[arg(long)]
        password_stdin: bool,
        /// A role to grant; repeat for several.
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
    },
    /// Grant a role.
    AddRole(EmailRoleArgs),
    /// Revoke a role.
    RemoveRole(EmailRoleArgs),
    /// Disable the user and revoke every session of theirs (for good: enabling the user again
    /// does not bring them back); other gateways see it within the revocation window.
    Disable(EmailArg),
    /// Re-enable a disabled user: they may sign in again; no old session comes back.
    Enable(EmailArg),
    /// Set the password from standard input (the same rule as /auth/register), then revoke
    /// every session of the user.
    SetPassword(EmailArg),
    /// Mark the email address as verified.
    Verify(EmailArg),
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// Revoke every session of a user, or one session.
    Revoke {
        #[arg(
            long,
            value_name = "EMAIL",
            required_unless_present = "session_id",
            conflicts_with = "session_id"
        )]
        user_email: Option<String>,
        #[arg(long, value_name = "ID")]
        session_id: Option<uuid::Uuid>,
    },
}

/// A command's failure: the message for the operator and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    /// The operation failed (exit 1).
    pub fn op(message: impl std::fmt::Display) -> Self {
        Failure {
            code: 1,
            message: message.to_string(),
        }
    }

    /// Bad configuration or unexpected schema (exit 2).
    pub fn config(message: impl std::fmt::Display) -> Self {
        Failure {
            code: 2,
            message: message.to_string(),
        }
    }
}

impl From<users::UserError> for Failure {
    fn from(e: users::UserError) -> Self {
        Failure::op(e)
    }
}

impl From<migrate::MigrateError> for Failure {
    fn from(e: migrate::MigrateError) -> Self {
        use migrate::MigrateError as M;
        match e {
            M::ChecksumMismatch { .. }
            | M::UnknownApplied { .. }
            | M::NoSuchVersion(_)
            | M::NotCurrent { .. } => Failure::config(e),
            M::Failed { .. } | M::Db(_) => Failure::op(e),
        }
    }
}

impl From<StartError> for Failure {
    fn from(e: StartError) -> Self {
        Failure {
            code: e.exit_code(),
            message: e.to_string(),
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::config(e)
    }
}

impl From<db::DbError> for Failure {
    fn from(e: db::DbError) -> Self {
        Failure::op(e)
    }
}

/// Loads the configuration named by `--config`, else `$GATEWAY_CONFIG`, else defaults.
///
/// # Errors
/// Every problem, for printing (exit 2).
pub fn load_config(path: Option<PathBuf>) -> Result<Config, Failure> {
    let path = path.or_else(|| std::env::var_os(config::CONFIG_ENV).map(PathBuf::from));
    Ok(Config::load(path.as_deref(), std::env::vars())?)
}

/// Runs a parsed command line to completion.
pub async fn run(cli: Cli) -> ExitCode {
    match dispatch(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message.trim_end());
            ExitCode::from(f.code)
        }
    }
}

async fn dispatch(cli: Cli) -> Result<(), Failure> {
    let config = load_config(cli.config)?;
    match cli.command {
        Command::CheckConfig => check_config(&config),
        Command::Serve => Ok(server::serve(config).await?),
        Command::Migrate(m) => run_migrate(&config, m).await,
        Command::User(u) => run_user(&config, u).await,
        Command::Sessions(s) => run_sessions(&config, s).await,
    }
}

fn check_config(config: &Config) -> Result<(), Failure> {
    config.check_serve()?;
    println!("configuration is valid: {} route(s)", config.routes.len());
    Ok(())
}

async fn run_migrate(config: &Config, command: MigrateCommand) -> Result<(), Failure> {
    let pool = db::connect(&config.database)?;
    match command {
        MigrateCommand::Up { to } => {
            let applied = migrate::up(&pool, to).await?;
            if applied.is_empty() {
                println!("nothing to apply");
            }
            for v in applied {
                println!("applied {v:03}");
            }
            println!("{}", migrate::status(&pool).await?);
        }
        MigrateCommand::Down { to } => {
            let undone = migrate::down(&pool, to).await?;
            if undone.is_empty() {
                println!("nothing to roll back");
            }
            for v in undone {
                println!("rolled back {v:03}");
            }
            println!("{}", migrate::status(&pool).await?);
        }
        MigrateCommand::Status => {
            let status = migrate::status(&pool).await?;
            println!("{status}");
            if status
                .entries
                .iter()
                .any(|(_, s)| matches!(s, migrate::State::ChecksumMismatch { .. }))
                || !status.unknown.is_empty()
            {
                return Err(Failure::config(
                    "the applied migrations do not match this binary (see above)",
                ));
            }
        }
    }
    Ok(())
}

/// Reads the new password of the user with (normalized) `email` from standard input, removing
/// one trailing newline, and checks it with the rule every other way of setting a password
/// applies ([`password::check_new`]): a refused password fails the command (exit 1) with the
/// reason and advice.
fn read_new_password(email: &str) -> Result<Zeroizing<String>, Failure> {
    let mut buf = Zeroizing::new(String::new());
    std::io::stdin()
        .read_to_string(&mut buf)
        .map_err(|e| Failure::op(format!("cannot read the password from standard input: {e}")))?;
    let password = Zeroizing::new(
        buf.strip_suffix("\r\n")
            .or_else(|| buf.strip_suffix('\n'))
            .unwrap_or(&buf)
            .to_string(),
    );
    password::check_new(&password, email)
        .map_err(|e| Failure::op(format!("password refused: {e}")))?;
    Ok(password)
}

fn hasher(config: &Config) -> password::Hasher {
    password::Hasher::new(
        config.auth.bcrypt_cost,
        config.auth.bcrypt_concurrency,
        config.auth.bcrypt_queue,
    )
}

async fn run_user(config: &Config, command: UserCommand) -> Result<(), Failure> {
    let email_of = |raw: &str| users::normalize_email(raw).map_err(Failure::from);
    match command {
        UserCommand::Create {
            email,
            password_stdin,
            roles,
        } => {
            let email = email_of(&email)?;
            for role in &roles {
                users::check_role(role)?;
            }
            let hash = match password_stdin {
                true => {
                    let password = read_new_password(&email)?;
                    Some(hasher(config).hash(&password).await.map_err(Failure::op)?)
                }
                false => None,
            };
            let pool = db::connect(&config.database)?;
            let user = users::create(
                &pool,
                &users::NewUser {
                    email: &email,
                    email_verified: true,
                    password_hash: hash.as_deref(),
                    roles: &roles,
                },
            )
            .await?;
            println!(
                "created user {} <{}> roles [{}]",
                user.id,
                user.email,
                user.roles.join(",")
            );
        }
        UserCommand::AddRole(a) => {
            let pool = db::connect(&config.database)?;
            users::add_role(&pool, &email_of(&a.email)?, &a.role).await?;
            println!("granted role {} to {}", a.role, a.email);
        }
        UserCommand::RemoveRole(a) => {
            let pool = db::connect(&config.database)?;
            users::remove_role(&pool, &email_of(&a.email)?, &a.role).await?;
            println!("removed role {} from {}", a.role, a.email);
        }
        UserCommand::Disable(a) => {
            let pool = db::connect(&config.database)?;
            let email = email_of(&a.email)?;
            let revoked = users::set_status(&pool, &email, users::Status::Disabled).await?;
            println!("disabled {email}; revoked {} session(s)", revoked.len());
        }
        UserCommand::Enable(a) => {
            let pool = db::connect(&config.database)?;
            let email = email_of(&a.email)?;
            let revoked = users::set_status(&pool, &email, users::Status::Active).await?;
            println!("enabled {email}; revoked {} session(s)", revoked.len());
        }
        UserCommand::SetPassword(a) => {
            let email = email_of(&a.email)?;
            let password = read_new_password(&email)?;
            let hash = hasher(config).hash(&password).await.map_err(Failure::op)?;
            let pool = db::connect(&config.database)?;
            let end = users::EndSessions::All("password_set");
            let (_, revoked) = users::set_password_hash(&pool, &email, &hash, end).await?;
            println!(
                "password set for {email}; revoked {} session(s)",
                revoked.len()
            );
        }
        UserCommand::Verify(a) => {
            let pool = db::connect(&config.database)?;
            users::mark_verified(&pool, &email_of(&a.email)?).await?;
            println!("verified {}", a.email);
        }
    }
    Ok(())
}

async fn run_sessions(config: &Config, command: SessionsCommand) -> Result<(), Failure> {
    let SessionsCommand::Revoke {
        user_email,
        session_id,
    } = command;
    let pool = db::connect(&config.database)?;
    let revoked = match (user_email, session_id) {
        (Some(email), _) => {
            let email = users::normalize_email(&email)?;
            let user = users::find_by_email(&pool, &email)
                .await?
                .ok_or_else(|| Failure::op(format!("no user with email {email}")))?;
            sessions::revoke_user(&pool, &user.id, "operator").await?
        }
        (None, Some(id)) => sessions::revoke_one(&pool, id, "operator").await?,
        (None, None) => return Err(Failure::config("give --user-email or --session-id")),
    };
    println!("revoked {revoked} session(s)");
    Ok(())
}

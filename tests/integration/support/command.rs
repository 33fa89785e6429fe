//! Runs the `gateway` binary the way an operator does: arguments, environment, stdin.

use std::ffi::OsStr;
use std::fmt;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;

use super::TestDb;

/// How long one command may run before the test fails.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// What a finished `gateway` command left behind.
pub struct Output {
    /// The arguments, for messages.
    pub args: String,
    /// The exit code; `None` when it was killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Fails the test, showing the whole output, unless the command exited with `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "unexpected exit code\n{self}");
        self
    }

    /// Fails the test unless standard output or standard error contains `needle`.
    #[track_caller]
    pub fn expect_output(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle) || self.stderr.contains(needle),
            "expected {needle:?} in the output\n{self}"
        );
        self
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "`gateway {}` exited with {:?}", self.args, self.code)?;
        writeln!(f, "--- stdout\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr\n{}", self.stderr.trim_end())
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A `gateway` command being set up. Starts with no `GATEWAY_*` variable from the test's
/// environment and with `GATEWAY_AUTH__BCRYPT_COST=4`, so hashing is quick.
pub struct Gateway {
    command: tokio::process::Command,
    args: Vec<String>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

/// The `gateway` binary with `args`.
pub fn gateway<I, S>(args: I) -> Gateway
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_gateway"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GATEWAY_") {
            command.env_remove(key);
        }
    }
    command
        .env("GATEWAY_AUTH__BCRYPT_COST", "4")
        .env("NO_COLOR", "1");
    let mut shown = Vec::new();
    for arg in args {
        shown.push(arg.as_ref().to_string_lossy().into_owned());
        command.arg(arg);
    }
    Gateway {
        command,
        args: shown,
        stdin: None,
        timeout: DEFAULT_TIMEOUT,
    }
}

/// Runs `gateway args` against `db`, with `stdin` as its standard input.
pub async fn cli(db: &TestDb, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut command = gateway(args).database(db);
    if let Some(input) = stdin {
        command = command.stdin(input);
    }
    command.run().await
}

impl Gateway {
    /// Adds an argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_string_lossy().into_owned());
        self.command.arg(arg);
        self
    }

    /// Points the command at `db` (`GATEWAY_DATABASE__URL`).
    pub fn database(self, db: &TestDb) -> Self {
        self.env("GATEWAY_DATABASE__URL", db.url())
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    /// Removes an environment variable (say the default `GATEWAY_AUTH__BCRYPT_COST`).
    pub fn env_remove(mut self, key: &str) -> Self {
        self.command.env_remove(key);
        self
    }

    /// Runs in `dir`.
    pub fn current_dir(mut self, dir: impl AsRef<std::path::Path>) -> Self {
        self.command.current_dir(dir);
        self
    }

    /// Gives the command this standard input (else it reads end of file).
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    /// Fails the test if the command runs longer than `timeout` (default 60 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs the command to completion.
    pub async fn run(mut self) -> Output {
        let args = self.args.join(" ");
        let mut child = self
            .command
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `gateway {args}`: {e}"));
        if let (Some(input), Some(mut pipe)) = (self.stdin.take(), child.stdin.take()) {
            // The command may exit without reading it all; that is its business.
            let _ = pipe.write_all(&input).await;
            drop(pipe);
        }
        let output = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("`gateway {args}` did not exit within {:?}", self.timeout))
            .unwrap_or_else(|e| panic!("waiting for `gateway {args}`: {e}"));
        Output {
            args,
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

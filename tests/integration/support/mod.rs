//! The harness shared by every test module: throwaway databases ([`TestDb`]) and a runner for
//! the `gateway` binary ([`gateway`], [`cli`]). Nothing here knows about a particular test;
//! more harness (a `TestGateway` builder, upstream mocks) goes beside these files.

// Not every test module uses every helper.
#![allow(dead_code)]

mod command;
mod cpuload;
mod db;
pub mod faultproxy;
pub mod http;
mod server;
pub mod smtp;
pub mod wait;
pub mod webdriver;

// Re-exported for every test module, whether or not one uses it yet.
#[allow(unused_imports)]
pub use command::{Gateway, Output, cli, gateway};
pub use cpuload::CpuLoad;
#[allow(unused_imports)]
pub use db::{TestDb, server_url, url_with_database};
pub use faultproxy::{Fault, FaultProxy};
/// Whether the tests run under CI (`CI` set, and not `0` or `false`), where a missing tool is
/// a failure rather than a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Skips the test `test` because `missing` is not installed, loudly: the line goes straight to
/// the process's standard error, which the test harness does not capture, so every run shows
/// it, passing or not. Under CI a missing tool fails the test instead.
///
/// # Panics
/// Under CI ([`in_ci`]).
pub fn skip(test: &str, missing: &str) {
    use std::io::Write as _;
    assert!(
        !in_ci(),
        "{test}: CI is set but {missing}; scripts/test.sh installs it"
    );
    let _ = writeln!(
        std::io::stderr().lock(),
        "SKIPPED {test}: {missing} (scripts/test.sh installs it as root or under CI)"
    );
}

pub use server::{
    PUBLIC_ORIGIN, SECRET, ServeProcess, TOKEN_KEY, TestGateway, echo, sessions, token_keys,
    unverified_user, user,
};

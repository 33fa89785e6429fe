//! Integration tests of the gateway against a real PostgreSQL server, as one test binary.
//!
//! The server comes from `DATABASE_URL` (any database on it; default
//! `postgres://postgres@127.0.0.1:5432/postgres`). Every test gets its own database, cloned
//! from a migrated template, so the tests run in parallel and leave nothing behind.
//!
//! - [`support`]: the harness (`TestDb`, the `gateway` binary runner).
//! - [`migrations`]: the embedded migrations and the schema they build, against the spec.
//! - [`db_retry`]: `db::transaction` retries serialization failures and nothing else.
//! - [`cli`]: every `gateway user` / `sessions` / `check-config` path, through the binary.
//! - [`sql_lint`]: no PostgreSQL-only SQL (the schema must also run on CockroachDB).
//! - [`proxy`]: policies, identity headers, path tricks, the session cache, limits, upstreams.
//! - [`revocation`]: two instances; logout, role change, disable seen within the poll window;
//!   disable then enable brings no session back.
//! - [`accounts`]: a reset or disable during a sign-in leaves it no session; enabling revokes
//!   the sessions of the disabled time.
//! - [`forward_auth`]: `/auth/verify` and the example nginx configuration.
//! - [`routing`]: `?` and `#` never widen a prefix; malformed forward-auth URIs; cache keys.
//! - [`tls`]: ALPN h2/http1.1, handshake and header read timeouts.
//! - [`shutdown`]: SIGTERM under load loses no request.
//! - [`faults`]: the database down, hung or slow, connections killed mid-transaction,
//!   upstreams that refuse, hang or reset (through a TCP fault proxy).
//! - [`logs`]: tokens and passwords never reach the logs.
//! - [`abuse`]: smuggling spellings, folded and oversized headers, h2c, slow headers and bodies.
//! - [`http2`]: rapid reset, CONTINUATION floods, HPACK bombs and oversized header lists.
//! - [`fleet_limits`]: the sign-in rate limits hold across instances (the `rate_limits` table).
//! - [`flows`]: codes, magic links, register, reset and change, sessions, limits, enumeration.
//! - [`websocket`]: tunnels end with their session on every instance; `Origin` checks.
//! - [`browser`]: the login pages in headless Chromium: password, code and link sign-in,
//!   sign-up with the verification code, `return_to`, the back button after sign-out.
//! - [`pages`]: sign-up and magic-link forms, branding, helpful messages, sign-out over HTTP.
//! - [`tokens`]: forged tokens cost no I/O; key rotation; legacy tokens; the miss budget.

// The harness's modules share items among themselves; this binary exports nothing. Its
// helpers are test code, where `unwrap` is the assertion (Cargo.toml [lints]: outside tests).
#![allow(unreachable_pub, clippy::unwrap_used)]

mod support;

mod abuse;
mod accounts;
mod browser;
mod cli;
mod db_retry;
mod faults;
mod fleet_limits;
mod flows;
mod forward_auth;
mod harness;
mod http2;
mod logs;
mod mail;
mod migrations;
mod pages;
mod proxy;
mod revocation;
mod routing;
mod shutdown;
mod sql_lint;
mod tls;
mod tokens;
mod websocket;

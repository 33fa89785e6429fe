//! An edge auth gateway: one process in front of every service of a platform. It terminates
//! TLS, checks session tokens against a cached view of the `sessions` table, forwards trusted
//! identity headers to the backends, and serves the login flows itself.
//!
//! # Module map
//! - [`cli`]: the command line; [`config`]: the TOML file and its validation.
//! - [`server`]: listeners, connections, TLS, shutdown; [`admin`]: `/metrics`, `/healthz`, `/readyz`;
//!   [`readiness`]: `/readyz` fails first on SIGTERM, for load balancers.
//! - [`proxy`]: the request phases below; [`path`]: the one path normalization; [`host`]:
//!   the one host check and normalization (`Host`, `:authority`, `X-Forwarded-Host`);
//!   [`headers`]: stripping and injecting identity headers; [`upstream`]: the pooled client.
//! - [`sessions`]: tokens, the validation cache, touch batching, cross-instance revocation;
//!   [`clock`]: the database's clock, by which session expiry is judged.
//! - [`users`], [`password`]: accounts (changes that end sessions revoke them in their own
//!   transaction), the one rule for new passwords, and bcrypt; [`endpoints`]: `/auth/*`.
//! - [`codes`]: one-time codes and magic links; [`failures`]: failed-attempt budgets;
//!   [`ratelimit`]: per-IP and per-email limits of the auth flows; [`mail`]: the outbound queue.
//! - [`pages`]: the browser pages and their form posts; [`redirect`]: `return_to` checks.
//! - [`db`]: the pool (at most `max_connections` sockets) and the retrying transaction;
//!   [`migrate`]: the embedded migrations;
//!   [`health`]: whether the database answers (`/readyz`, `serve_cached_when_db_down`).
//!
//! # Request flow
//! ```text
//! client ──TLS──▶ server (conn cap, handshake + header timeouts, h1/h2 by ALPN)
//!   └▶ proxy::handle
//!        1 early checks   CONNECT → 405; Host / :authority (host::normalize) and a trusted
//!                         proxy's X-Forwarded-Proto/-Host; path::normalize (400 on
//!                         ambiguity); body limit; request id
//!        2 route          /auth/* → endpoints (the gateway's own); else the longest
//!                         normalized prefix (path::route) → policy, roles, methods
//!        3 authenticate   cookie / Bearer → sessions::validate (moka; miss → tag check,
//!                         miss budget of the client address, one query)
//!        4 authorize      required / optional / public, roles → 302 / 401 / 403
//!        5 dispatch       upstream (or, for /auth/verify, the answer itself)
//!        6 upstream req   headers::sanitize_request, then headers::inject_identity
//!        7 forward        upstream::forward (pooled, streamed, timeouts → 502 / 504)
//!        8 response       hop-by-hop headers stripped; WebSocket upgrades tunnelled
//!                         (proxy::websocket: Origin check, session re-checked)
//!        9 log            one access line (target "access"), metrics
//!   a body left unread by an early answer is drained in the background (proxy::body)
//! ```

pub(crate) mod admin;
pub mod app;
pub(crate) mod auth;
pub(crate) mod body;
pub mod cli;
pub(crate) mod clock;
pub(crate) mod codes;
pub mod config;
pub mod db;
pub(crate) mod endpoints;
pub mod error;
pub(crate) mod failures;
pub mod headers;
pub(crate) mod health;
pub(crate) mod host;
pub(crate) mod html;
pub(crate) mod http;
pub mod mail;
pub mod migrate;
pub mod pages;
pub mod password;
pub(crate) mod path;
pub(crate) mod proxy;
pub(crate) mod ratelimit;
pub(crate) mod readiness;
pub(crate) mod redirect;
pub mod server;
pub mod sessions;
pub(crate) mod upstream;
pub mod users;

//! An edge auth gateway: one process in front of every service of a platform. It terminates
//! TLS, checks session tokens against a cached view of the `sessions` table, forwards trusted
//! identity headers to the backends, and serves the login flows itself.
//!
//! # Module map
//! Layers, highest first; a module names only its own layer and lower ones, never a higher
//! one, and no two modules import each other (`scripts/check-layers.py` checks both, in
//! `scripts/test.sh`).
//!
//! 1. Command line: `cli` (`gateway serve | migrate | check-config | user | sessions`, exit
//!    codes).
//! 2. Listeners: `server` (the public and admin listeners, TLS, the worker threads, the
//!    connection cap, graceful shutdown).
//! 3. Request path: `proxy` (the request phases below; `proxy::websocket`: upgrades and
//!    tunnels) and `admin` (`/metrics`, `/healthz`, `/readyz`).
//! 4. Front ends of the gateway's own `/auth/*`: `endpoints` (a router over `endpoints::api`,
//!    JSON in and out, and `endpoints::forms`, the browser pages and their form posts, plus
//!    `endpoints::verify`, the forward-auth check) and `pages` (the HTML those pages render).
//! 5. Flows: `auth`, a file per sign-in or account flow (`auth::password`, `auth::register`,
//!    `auth::code`, `auth::magic`, `auth::reset`, `auth::account`), each deciding and
//!    returning data, building no response. A new sign-in method is one file here and one
//!    route in each front end.
//! 6. Shared request state: `app` (the `Gateway` built at start, a worker thread's `Worker`,
//!    the connection's `Conn`, the per-request `Ctx`; `app::authenticate` and
//!    `app::authorize`, phases 3 and 4).
//! 7. Answers: `error` (the one HTTP error type, statuses by kind) and `http` (JSON and form
//!    bodies, the session cookie, the Origin check, the paths of the pages).
//! 8. Domain: `config` (raw file, environment, validation, typed), `db` (the pool, the
//!    retrying transaction, errors by kind) and `migrate`; `users`, `password` (the rule for
//!    new passwords, bcrypt off the request path), `sessions` (tokens, the cache, touches,
//!    revocation) and `clock` (the database's time); `codes`, `failures`, `ratelimit` and
//!    `mail`; `health` and `readiness`; `path`, `host`, `headers`, `redirect` (the request
//!    checks and the identity headers); `upstream` (the pooled client); `body` (the bodies of
//!    the request path) and `html` (escaping).
//!
//! The public modules are what the integration tests and `loadtest` use; everything else is
//! `pub(crate)`.
//!
//! # Request flow
//! ```text
//! client ──TLS──▶ server (conn cap, handshake + header timeouts, h1/h2 by ALPN; a worker
//!   │              thread per core keeps each connection)
//!   └▶ proxy::handle, one function per phase, the state in app::Ctx
//!        1 early checks   CONNECT → 405; Host / :authority (host::normalize) and a trusted
//!                         proxy's X-Forwarded-Proto/-Host; path::normalize (400 on
//!                         ambiguity) → ctx.path; body limit; request id
//!        2 route          /auth/* → endpoints (the gateway's own; each authenticates as it
//!                         needs, /auth/verify runs 2-4 on the original request and answers
//!                         itself); else the longest normalized prefix (path::route) → ctx.route
//!        3 authenticate   the route's methods (405); public routes never look; cookie /
//!                         Bearer → sessions::validate (moka; miss → tag check, miss budget of
//!                         the client address, one query) → ctx.identity
//!        4 authorize      required / optional / public, roles → 302 / 401 / 403
//!        5 dispatch       a WebSocket upgrade (proxy::websocket: Origin check, session
//!                         watch) or a plain request
//!        6 upstream req   headers::sanitize_request, credentials stripped, X-Forwarded-*,
//!                         then headers::inject_identity; the route's upstream URI
//!        7 forward        upstream::Upstream::forward (pooled, streamed, timeouts → 502 / 504)
//!        8 response       hop-by-hop headers stripped; a 101 starts the tunnel
//!        9 log            X-Request-Id, HSTS, one access line (target "access"), metrics
//!   errors become their answer once, in proxy::handle (error::HttpError, its cause logged)
//!   a body left unread by an early answer is drained in the background (body::Incoming)
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

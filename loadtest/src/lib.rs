//! Load-test harness for the gateway: the pieces that drive it, feed it and stand behind it.
//!
//! Module map:
//! - [`echo`]: the fast upstream behind `loadtest echo` and the gateway's integration tests;
//!   answers every request with a JSON description of what arrived, serves the `/__echo/*`
//!   test paths and echoes WebSockets.
//!
//! Request flow through the echo upstream:
//!
//! ```text
//! accept ─▶ TCP_NODELAY ─▶ auto::Builder (HTTP/1.1 or h2c by preface)
//!   └─▶ respond: WebSocket upgrade? ─yes─▶ 101 ─▶ JSON hello ─▶ echo messages
//!                  │ no
//!                  ▼
//!         route (/__echo/*) ─▶ count request body (≤ 64 MiB) ─▶ JSON / status / sleep / stream / large
//! ```

pub mod echo;

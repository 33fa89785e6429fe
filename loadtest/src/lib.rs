//! Load-test harness for the gateway: the pieces that drive it, feed it and stand behind it.
//!
//! Module map:
//! - [`echo`]: the fast upstream behind `loadtest echo` and the gateway's integration tests;
//!   answers every request with a JSON description of what arrived, serves the `/__echo/*`
//!   test paths and echoes WebSockets.
//! - [`seed`]: `loadtest seed`, users, password hashes and sessions by binary `COPY`, and the
//!   raw tokens written to a file.
//! - [`run`]: `loadtest run`, one scenario in a closed or open loop with HDR histograms;
//!   submodules [`run::client`] (HTTP/1.1, HTTP/2, TLS), [`run::scenarios`],
//!   [`run::stats`], [`run::tokens`] (uniform or Zipf choice), [`run::progress`] and
//!   [`run::summary`].
//! - [`smtp`]: the SMTP sink the `otp` scenario reads its codes from.
//! - [`report`]: `loadtest report`, SVG charts and a markdown table of several runs.
//! - [`sample`]: `loadtest sample`, a process's RSS, threads and open descriptors (and the
//!   gateway's gauges) over time, as CSV.
//! - [`soak`]: `loadtest soak-report`, judges a soak from a run's intervals and those samples
//!   (no errors, RSS and descriptors flat) and charts it.
//! - [`netem`]: `loadtest netem`, packet delay and loss through an NFQUEUE, for the fleet
//!   harness (`scripts/fleet.sh`) on kernels without `sch_netem`.
//! - [`select`]: `loadtest select`, the gateway's session lookup straight against the database,
//!   the floor under a cache miss.
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
//!
//! A run:
//!
//! ```text
//! RunArgs ─validate─▶ RunConfig ─▶ tokens, clients, SMTP sink ─▶ t0
//!   closed loop: N tasks ─▶ step ─▶ step ─▶ …            (until t0 + warm-up + duration)
//!   open loop:   request i due at t0 + i/R ─▶ own task ─▶ step   (latency from the due time)
//!      step ─▶ Recorder (kept only if it started after the warm-up) ─▶ Summary ─▶ table, JSON
//! ```

pub mod echo;
pub mod netem;
pub mod report;
pub mod run;
pub mod sample;
pub mod seed;
pub mod select;
pub mod smtp;
pub mod soak;

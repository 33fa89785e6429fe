//! The harness tested in-process over loopback: `run` against the echo upstream and a fake
//! gateway (every scenario), the Zipf sampler, the SMTP sink over raw TCP, `report`, and
//! `sample` over this very process.
//! Every server binds 127.0.0.1:0; every run is bounded by its duration or iterations.

mod report;
mod run;
mod scenarios;
mod smtp;
mod soak;
mod support;
mod zipf;

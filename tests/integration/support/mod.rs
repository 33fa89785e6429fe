//! The harness shared by every test module: throwaway databases ([`TestDb`]) and a runner for
//! the `gateway` binary ([`gateway`], [`cli`]). Nothing here knows about a particular test;
//! more harness (a `TestGateway` builder, upstream mocks) goes beside these files.

// Not every test module uses every helper.
#![allow(dead_code)]

mod command;
mod db;
pub mod faultproxy;
pub mod http;
mod server;
pub mod smtp;
pub mod webdriver;

// Re-exported for every test module, whether or not one uses it yet.
#[allow(unused_imports)]
pub use command::{Gateway, Output, cli, gateway};
#[allow(unused_imports)]
pub use db::{TestDb, server_url, url_with_database};
pub use faultproxy::{Fault, FaultProxy};
pub use server::{
    PUBLIC_ORIGIN, SECRET, ServeProcess, TestGateway, echo, sessions, unverified_user, user,
};

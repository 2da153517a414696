//! Test support shared by Confab's Rust suites (not published).
//!
//! - [`client`]: a small client for the LeanCloud v2 JSON protocol that keeps every
//!   received frame in arrival order, so a test can wait for a reply by serial or for
//!   a push matching a predicate. [`Client`] is re-exported here.
//! - [`server`]: a launcher that runs the real `confab` binary on a free port with its
//!   own data directory, plus small helpers (create a conversation, send a message,
//!   match pushes, read error codes).
//! - [`redis`]: a throw-away Redis server for the cluster suites, and [`balancer`]: a
//!   round-robin TCP balancer in front of a cluster's nodes.
//! - [`postgres`]: a throw-away PostgreSQL server ([`TempPostgres`]) on a free port
//!   with its own data directory, for the PostgreSQL store's tests.
//! - [`tls`]: self-signed certificates made at test time (with the `openssl` command)
//!   and client configurations trusting them, for servers with `tls_cert`.
//!
//! # Finding the binary
//!
//! The kit does not build or locate `confab` itself: every launch takes the binary's
//! path explicitly ([`Server::start_with_bin`], or a [`Launcher`] holding the path).
//! Inside `cargo test` the robust source of that path is
//! `env!("CARGO_BIN_EXE_confab")`, which cargo defines (and builds the binary for)
//! only in the integration tests of the package that owns the binary,
//! `confab-server`. Its `tests/common/mod.rs` therefore supplies that path and wraps
//! the launcher so the test files keep calling `Server::start(dir)` and friends. A
//! suite in another package has to obtain the path on its own (for example from a
//! variable its runner sets after `cargo build -p confab-server`) and pass it in.

pub mod balancer;
pub mod client;
pub mod postgres;
pub mod redis;
pub mod server;
pub mod tls;

pub use client::{Client, ClientError, WAIT};
pub use postgres::TempPostgres;
pub use server::{
    APP, Launcher, Server, TEST_APP, TEST_STORE_VAR, create, error_code, is_conv, is_direct, send, test_store,
};

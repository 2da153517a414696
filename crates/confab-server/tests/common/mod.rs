//! Test support: the shared kit (`confab-testkit`) pointed at this package's own
//! `confab` binary, which cargo builds for these tests and names in
//! `CARGO_BIN_EXE_confab`. [`Start`] gives the kit's `Server` the binary-less
//! constructors the test files call (`Server::start(dir)` and friends).
#![allow(dead_code, unused_imports)]

pub mod rest;

pub use confab_testkit::{APP, Launcher, Server, TEST_APP, create, error_code, is_conv, is_direct, send};
use std::path::Path;

/// The `confab` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_confab")
}

/// A launcher for the `confab` binary under test.
pub fn launcher() -> Launcher {
    Launcher::new(bin())
}

/// [`Launcher`]'s constructors on [`Server`], with the binary under test.
pub trait Start {
    /// Starts with the default test app.
    fn start(dir: &Path) -> Server;
    /// Starts with a config file holding `toml`.
    fn start_config(dir: &Path, toml: &str) -> Server;
    /// Starts with the test app and these lines of its `[apps.limits]` table.
    fn start_with_limits(dir: &Path, limits: &str) -> Server;
    /// Starts with these extra command-line arguments after `serve`.
    fn start_with(dir: &Path, args: &[&str]) -> Server;
}

impl Start for Server {
    fn start(dir: &Path) -> Server {
        launcher().start(dir)
    }

    fn start_config(dir: &Path, toml: &str) -> Server {
        launcher().start_config(dir, toml)
    }

    fn start_with_limits(dir: &Path, limits: &str) -> Server {
        launcher().start_with_limits(dir, limits)
    }

    fn start_with(dir: &Path, args: &[&str]) -> Server {
        launcher().start_with(dir, args)
    }
}

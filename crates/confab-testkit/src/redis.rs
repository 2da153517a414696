//! A throw-away Redis server for tests: Debian's `redis-server` on a free loopback
//! port with its own directory, no persistence, stopped when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's package puts the server.
const BINARY: &str = "redis-server";

/// A running Redis server of its own.
#[derive(Debug)]
pub struct TempRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// Whether `redis-server` can be run here.
pub fn available() -> bool {
    Command::new(BINARY).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// Skips (returns `None` with a loud note) when `redis-server` is missing outside CI;
/// in CI (`CI=true`) a missing server is a failure.
pub fn start_or_skip(test: &str) -> Option<TempRedis> {
    if !available() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "redis-server is required in CI (apt-get install redis-server)"
        );
        eprintln!("!!! SKIPPING {test}: redis-server not found (apt-get install redis-server)");
        return None;
    }
    Some(TempRedis::start())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl TempRedis {
    /// Starts a server on a free port. Panics when it does not come up.
    pub fn start() -> TempRedis {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut redis = TempRedis { port: free_port(), dir, child: None };
        redis.spawn();
        redis
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn spawn(&mut self) {
        let dir: PathBuf = self.dir.path().to_owned();
        let child = Command::new(BINARY)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills it and starts it again, empty, on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for TempRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

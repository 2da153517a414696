//! A throw-away PostgreSQL server for tests: Debian's server binaries
//! (`/usr/lib/postgresql/*/bin`), a fresh data directory under the system temp dir, a
//! free loopback port, `fsync` and `synchronous_commit` on (acknowledged means durable
//! here too), trust authentication for the `postgres` user on loopback only. It never
//! touches a cluster the machine already runs (Debian's package starts one on 5432).
//!
//! PostgreSQL refuses to run as root: when the tests run as root (CI does), the server
//! programs run as the `postgres` user through `runuser`, and the data directory is
//! handed to that user.
//!
//! The server is stopped and its directory removed when the [`TempPostgres`] is dropped
//! — and also when the test process exits without dropping it (a value in a `static`
//! is never dropped): a small guardian shell holds a pipe from this process and stops
//! the server when the pipe closes.
//!
//! Everything here panics on failure: in a test the panic is the report.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The database [`TempPostgres::new`] creates and [`TempPostgres::url`] names.
pub const DATABASE: &str = "confab";

/// A running throw-away PostgreSQL server.
#[derive(Debug)]
pub struct TempPostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
    /// The guardian: stops the server and removes `dir` when its stdin closes.
    guardian: Option<(Child, ChildStdin)>,
}

/// The directory of Debian's PostgreSQL server programs (the newest version installed),
/// if any.
pub fn server_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("postgres").is_file() && bin.join("initdb").is_file()).then_some((version, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    // `id -u` rather than libc: the kit has no unsafe code and no libc dependency.
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

impl TempPostgres {
    /// Starts a server, or — when no PostgreSQL server programs are installed — panics
    /// under CI (`CI=true`, where nothing may be skipped) and otherwise prints a loud
    /// banner and returns `None`, so the calling test can skip.
    pub fn start_or_skip(test: &str) -> Option<TempPostgres> {
        if server_bin_dir().is_some() {
            return Some(TempPostgres::new());
        }
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{test}: PostgreSQL server programs are required in CI (apt-get install postgresql)");
        }
        eprintln!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !!! SKIPPING {test}: no PostgreSQL server in /usr/lib/postgresql/*/bin.\n\
             !!! Install it with: apt-get install postgresql\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
        None
    }

    /// Starts a server with a database named [`DATABASE`]; panics if the programs are
    /// missing (see [`TempPostgres::start_or_skip`]).
    pub fn new() -> TempPostgres {
        let bin = server_bin_dir().expect("PostgreSQL server programs in /usr/lib/postgresql/*/bin");
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "confab-pg-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let as_postgres = is_root();
        if as_postgres {
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status().unwrap();
            assert!(status.success(), "chown {} to postgres", dir.display());
        }
        let mut pg = TempPostgres { bin, dir, port: 0, as_postgres, guardian: None };
        pg.run(
            "initdb",
            &[
                "-D",
                pg.data().to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                // The init files only; the server below syncs everything it writes.
                "--no-sync",
            ],
        );
        pg.guard();
        pg.start_on_free_port();
        pg.create_database(DATABASE);
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The directory holding the data directory and the server's log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/confab`.
    pub fn url(&self) -> String {
        self.url_of(DATABASE)
    }

    /// The URL of another database of this server.
    pub fn url_of(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// A command running `program` of the server's bin directory, as `postgres` when
    /// this process is root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self.command(program).args(args).stdin(Stdio::null()).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}\n{}\nlog: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.log()).unwrap_or_default()
        );
    }

    /// Starts the guardian: a shell that waits for its stdin to close, then stops the
    /// server (immediately: it is thrown away) and removes the directory.
    fn guard(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = if self.as_postgres {
            format!(
                "runuser -u postgres -- '{}' -D '{}' -m immediate stop",
                pg_ctl.display(),
                self.data().display()
            )
        } else {
            format!("'{}' -D '{}' -m immediate stop", pg_ctl.display(), self.data().display())
        };
        let script = format!("cat >/dev/null; {stop} >/dev/null 2>&1; rm -rf '{}'", self.dir.display());
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        self.guardian = Some((child, stdin));
    }

    fn start_on_free_port(&mut self) {
        // Another process may take the port between the probe and the start: try again.
        for attempt in 0.. {
            self.port = free_port();
            if self.try_start() {
                return;
            }
            assert!(
                attempt < 5,
                "PostgreSQL did not start: {}",
                std::fs::read_to_string(self.log()).unwrap_or_default()
            );
        }
    }

    fn try_start(&self) -> bool {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{}' -c fsync=on \
             -c synchronous_commit=on -c max_connections=200",
            self.port,
            self.dir.display()
        );
        self.command("pg_ctl")
            .args(["-D", self.data().to_str().unwrap(), "-l", self.log().to_str().unwrap(), "-w", "-t", "60"])
            .args(["-o", &options, "start"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    /// Starts the server again on its port (after [`TempPostgres::stop`]).
    pub fn start(&self) {
        assert!(self.try_start(), "PostgreSQL did not restart on port {}", self.port);
    }

    /// Stops the server (fast shutdown: sessions are ended, transactions in progress
    /// roll back); its data stays for [`TempPostgres::start`].
    pub fn stop(&self) {
        self.run("pg_ctl", &["-D", self.data().to_str().unwrap(), "-m", "fast", "-w", "stop"]);
    }

    /// Creates a database; returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        let port = self.port.to_string();
        let host = self.dir.to_str().unwrap();
        self.run("createdb", &["-h", host, "-p", &port, "-U", "postgres", name]);
        self.url_of(name)
    }

    /// Runs SQL with `psql` in `database`; returns what it printed (unaligned, tuples
    /// only).
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let port = self.port.to_string();
        let host = self.dir.to_str().unwrap();
        let out = self
            .command("psql")
            .args([
                "-h",
                host,
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                database,
                "-XAtq",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args(["-c", sql])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Default for TempPostgres {
    fn default() -> Self {
        TempPostgres::new()
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        if let Some((mut child, mut stdin)) = self.guardian.take() {
            let _ = stdin.flush();
            drop(stdin);
            let _ = child.wait();
        }
    }
}

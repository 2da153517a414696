//! Starts the server under test as a child process (a fresh one per scenario) and reads
//! its memory and CPU from /proc.

use crate::wire::Target;
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where the servers come from.
#[derive(Clone, Debug)]
pub struct Programs {
    /// The `confab` binary (use the release build).
    pub confab: PathBuf,
    /// The folder holding socketio.mjs and bare.mjs (with node_modules installed). The
    /// bare-rust server is this program itself (`confab-bench serve-bare`).
    pub peers: PathBuf,
    /// `durability` for Confab's store: "full" (fsync per commit) or "normal".
    pub durability: String,
}

/// A running server.
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `target` on a free loopback port and waits for its `listening on` line.
    pub fn start(target: Target, programs: &Programs) -> Result<Server> {
        let dir = tempfile::Builder::new().prefix("confab-bench-").tempdir()?;
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let mut cmd = match target {
            Target::Confab => {
                let config = dir.path().join("confab.toml");
                std::fs::write(
                    &config,
                    format!(
                        "durability = {:?}\n\n[[apps]]\nid = \"{}\"\nkey = \"bench-key\"\nmaster_key = \"bench-master\"\n\n[apps.limits]\nconversation_members = 1000000\n",
                        programs.durability,
                        crate::wire::APP
                    ),
                )?;
                let mut c = Command::new(&programs.confab);
                c.arg("serve")
                    .args(["--listen", "127.0.0.1:0", "--config"])
                    .arg(&config)
                    .arg("--data-dir")
                    .arg(dir.path().join("data"))
                    .env("CONFAB_LOG", "warn");
                c
            }
            Target::Socketio | Target::Bare => {
                let script =
                    programs.peers.join(if target == Target::Socketio { "socketio.mjs" } else { "bare.mjs" });
                let mut c = Command::new("node");
                c.arg(script);
                c
            }
            Target::BareRust => {
                let mut c = Command::new(std::env::current_exe().context("the load tool's own path")?);
                c.args(["serve-bare", "--listen", "127.0.0.1:0"]);
                c
            }
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting the {} server", target.name()))?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                bail!("the {} server did not start within 30 s", target.name());
            }
        };
        let Some(http) = line.trim().strip_prefix("listening on http://") else {
            let _ = child.kill();
            let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
            bail!("unexpected first line {line:?} from the {} server; log:\n{log}", target.name());
        };
        let addr: SocketAddr = http.trim_end_matches('/').parse().context("listen address")?;
        if !addr.ip().is_loopback() {
            bail!("server listens on a non-loopback address {addr}");
        }
        Ok(Server { child, addr, _dir: dir })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in bytes.
    pub fn rss(&self) -> u64 {
        rss_of(self.pid())
    }

    /// User + system CPU time consumed so far, in microseconds.
    pub fn cpu_us(&self) -> u64 {
        cpu_us_of(self.pid())
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// VmRSS of a process, in bytes (0 when unreadable).
pub fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// utime + stime of a process, in microseconds (clock ticks are 1/100 s on Linux).
pub fn cpu_us_of(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after ")" (state is 0).
    (ticks(11) + ticks(12)) * 10_000
}

/// Kernel memory held by TCP sockets machine-wide (pages of /proc/net/sockstat), in bytes.
pub fn tcp_kernel_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.iter().position(|w| *w == "mem").and_then(|i| f.get(i + 1)).and_then(|v| v.parse::<u64>().ok())
        })
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

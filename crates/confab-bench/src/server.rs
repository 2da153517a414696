//! Starts the server under test as child processes (fresh ones per scenario) — one
//! process, or a cluster of nodes with a throw-away PostgreSQL and Redis — and reads
//! their memory and CPU from /proc.

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
    /// Nodes of a cluster; `None`: one process with its embedded store (SQLite for
    /// Confab, memory for the peers).
    pub cluster: Option<usize>,
}

/// What the nodes of a cluster share: the PostgreSQL database (Confab only) and the
/// Redis server (Confab's broker and presence; Socket.IO's adapter).
struct Links {
    store: Option<String>,
    broker: String,
}

/// A running server.
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `target` on a free loopback port and waits for its `listening on` line;
    /// with `links`, as node `node` of a cluster.
    fn start(target: Target, programs: &Programs, links: Option<&Links>, node: usize) -> Result<Server> {
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
                if let Some(l) = links {
                    let store = l.store.as_deref().context("a Confab cluster needs its PostgreSQL")?;
                    c.args(["--store", store, "--broker", &l.broker, "--node-id", &format!("bench-{node}")]);
                }
                c
            }
            Target::Socketio | Target::Bare => {
                let script =
                    programs.peers.join(if target == Target::Socketio { "socketio.mjs" } else { "bare.mjs" });
                let mut c = Command::new("node");
                c.arg(script);
                if let Some(l) = links {
                    c.env("REDIS_URL", &l.broker);
                }
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

/// The server under test: one process, or the nodes of a cluster and what they share.
/// Fields drop in order: the nodes go before the PostgreSQL and Redis they use.
pub struct Deployment {
    nodes: Vec<Server>,
    addrs: Vec<SocketAddr>,
    redis: Option<confab_testkit::redis::TempRedis>,
    postgres: Option<confab_testkit::TempPostgres>,
}

impl Deployment {
    /// Starts `target` as `programs` says: one process, or `programs.cluster` nodes on a
    /// fresh PostgreSQL (Confab's store: fsync and synchronous_commit on, as the test
    /// suites run it) and a fresh Redis (Confab's broker; Socket.IO's adapter), each
    /// with its own data directory and free loopback port, stopped when this is dropped.
    pub async fn start(target: Target, programs: &Programs) -> Result<Deployment> {
        let Some(n) = programs.cluster else {
            let node = Server::start(target, programs, None, 0)?;
            let addrs = vec![node.addr];
            return Ok(Deployment { nodes: vec![node], addrs, redis: None, postgres: None });
        };
        if !matches!(target, Target::Confab | Target::Socketio) {
            bail!("--cluster runs confab and socketio only, not {}", target.name());
        }
        // The kit's servers report failure by panicking (they serve tests): run them on
        // a blocking thread, where a panic becomes this scenario's error.
        let postgres = if target == Target::Confab {
            Some(
                tokio::task::spawn_blocking(confab_testkit::TempPostgres::new)
                    .await
                    .map_err(|e| anyhow::anyhow!("starting PostgreSQL: {e}"))?,
            )
        } else {
            None
        };
        let redis = tokio::task::spawn_blocking(confab_testkit::redis::TempRedis::start)
            .await
            .map_err(|e| anyhow::anyhow!("starting Redis: {e}"))?;
        let links = Links { store: postgres.as_ref().map(|p| p.url()), broker: redis.url() };
        let mut d = Deployment { nodes: Vec::new(), addrs: Vec::new(), redis: Some(redis), postgres };
        // One after the other: the first node runs the migrations, the next find them done.
        for node in 0..n.max(1) {
            let s = Server::start(target, programs, Some(&links), node)?;
            d.addrs.push(s.addr);
            d.nodes.push(s);
        }
        Ok(d)
    }

    /// The process id of the (first) node.
    pub fn first_pid(&self) -> u32 {
        self.nodes.first().map_or(0, Server::pid)
    }

    /// Every node's address.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The node the `k`th client connects to: round-robin, no balancer.
    pub fn addr(&self, k: usize) -> SocketAddr {
        self.addrs[k % self.addrs.len()]
    }

    /// SIGKILLs node `i` and reaps it: no goodbye to its clients, PostgreSQL or Redis.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(node) = self.nodes.get_mut(i) {
            node.kill();
        }
    }

    /// CPU time of each node so far, in microseconds (0 for one that is gone).
    pub fn node_cpu_us(&self) -> Vec<u64> {
        self.nodes.iter().map(Server::cpu_us).collect()
    }

    /// Resident memory of every node, in bytes.
    pub fn node_rss(&self) -> Vec<u64> {
        self.nodes.iter().map(Server::rss).collect()
    }

    /// Resident memory of all nodes together, in bytes.
    pub fn rss(&self) -> u64 {
        self.node_rss().iter().sum()
    }

    /// CPU time of all nodes together, in microseconds.
    pub fn cpu_us(&self) -> u64 {
        self.nodes.iter().map(Server::cpu_us).sum()
    }

    /// The processes of the shared PostgreSQL (the postmaster and its backends) and
    /// Redis, when there are.
    fn backing_pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        if let Some(pg) = &self.postgres {
            let pidfile = std::fs::read_to_string(pg.dir().join("data/postmaster.pid")).unwrap_or_default();
            if let Some(pid) = pidfile.lines().next().and_then(|l| l.trim().parse::<u32>().ok()) {
                pids.push(pid);
                pids.extend(children_of(pid));
            }
        }
        if let Some(redis) = &self.redis {
            pids.extend(redis_pid(redis.port()));
        }
        pids
    }

    /// CPU time of the shared PostgreSQL and Redis so far, in microseconds (backends
    /// that have exited are not counted; the nodes' pools keep theirs open).
    pub fn backing_cpu_us(&self) -> u64 {
        self.backing_pids().into_iter().map(cpu_us_of).sum()
    }

    /// Resident memory of the shared Redis, in bytes (0 without one). PostgreSQL's is
    /// left out: its shared buffers count again in every backend's RSS.
    pub fn redis_rss(&self) -> u64 {
        self.redis.as_ref().and_then(|r| redis_pid(r.port())).map_or(0, rss_of)
    }

    /// What the nodes share, for the report.
    pub fn describe(&self) -> Option<serde_json::Value> {
        self.redis.as_ref()?;
        Some(serde_json::json!({
            "nodes": self.nodes.len(),
            "store": if self.postgres.is_some() { "PostgreSQL (fsync=on, synchronous_commit=on)" } else { "none" },
            "broker": "Redis (no persistence)",
        }))
    }
}

/// The parent process id of `pid` (from /proc/PID/stat), if readable.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Every process id in /proc.
fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// The direct children of `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    all_pids().into_iter().filter(|&p| parent_of(p) == Some(pid)).collect()
}

/// The `redis-server` listening on `port` of 127.0.0.1 (it names its address in its
/// command line).
fn redis_pid(port: u16) -> Option<u32> {
    let needle = format!(":{port}");
    all_pids().into_iter().find(|p| {
        let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        cmdline.starts_with("redis-server") && cmdline.trim_end_matches(['\0', ' ']).ends_with(&needle)
    })
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

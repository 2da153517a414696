//! Runs the real `confab` binary on a free port with its own data directory, and opens
//! clients against it. The binary's path is always passed in; see the crate docs.
//!
//! Everything here panics on failure: in a test the panic is the report.
#![allow(clippy::unwrap_used)]

use crate::Client;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use tokio_rustls::rustls::ClientConfig;

/// The environment variable that picks the store every launched server runs on:
/// unset or `sqlite`, the default embedded store in the server's data directory;
/// `postgres`, a database of its own (one per server directory, so a restarted server
/// finds its data) on one throw-away PostgreSQL server per test process
/// ([`crate::TempPostgres`]); `cluster`, the same database shared by [`CLUSTER_NODES`]
/// nodes joined by one throw-away Redis per test process, behind a round-robin
/// [`Balancer`](crate::balancer::Balancer) that is the server's address.
pub const TEST_STORE_VAR: &str = "CONFAB_TEST_STORE";

/// How many nodes a server is under `CONFAB_TEST_STORE=cluster`.
pub const CLUSTER_NODES: usize = 3;

/// Whether launched servers are clusters (`CONFAB_TEST_STORE=cluster`).
pub fn cluster_mode() -> bool {
    std::env::var(TEST_STORE_VAR).as_deref() == Ok("cluster")
}

/// The throw-away Redis of this test process's clusters.
fn test_broker() -> String {
    static SERVER: OnceLock<crate::redis::TempRedis> = OnceLock::new();
    SERVER.get_or_init(crate::redis::TempRedis::start).url()
}

/// The `--store` a server in `dir` runs with under [`TEST_STORE_VAR`], if any.
pub fn test_store(dir: &Path) -> Option<String> {
    match std::env::var(TEST_STORE_VAR).as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => None,
        Ok("postgres" | "cluster") => {
            static SERVER: OnceLock<crate::TempPostgres> = OnceLock::new();
            static DATABASES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
            let server = SERVER.get_or_init(crate::TempPostgres::new);
            let mut databases = DATABASES.lock().unwrap_or_else(|p| p.into_inner());
            let index = match databases.iter().position(|d| d == dir) {
                Some(i) => i,
                None => {
                    databases.push(dir.to_owned());
                    server.create_database(&format!("server_{}", databases.len() - 1));
                    databases.len() - 1
                }
            };
            Some(server.url_of(&format!("server_{index}")))
        }
        Ok(other) => panic!("{TEST_STORE_VAR} must be sqlite, postgres or cluster, got {other:?}"),
    }
}

/// The app id the default test server ([`Launcher::start`]) and [`TEST_APP`] serve.
pub const APP: &str = "test-app";

/// The test app as a config-file table, for tests that add settings to it.
pub const TEST_APP: &str = "[[apps]]\nid = \"test-app\"\nkey = \"k\"\nmaster_key = \"m\"\n";

/// Starts `confab` servers from one binary.
#[derive(Debug, Clone)]
pub struct Launcher {
    bin: PathBuf,
}

impl Launcher {
    /// A launcher for the `confab` binary at `bin`.
    pub fn new(bin: impl Into<PathBuf>) -> Launcher {
        Launcher { bin: bin.into() }
    }

    /// The binary this launcher runs.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Starts with the default test app.
    pub fn start(&self, dir: &Path) -> Server {
        self.start_with(dir, &["--app", "test-app:test-key:test-master"])
    }

    /// Starts with a config file holding `toml`.
    pub fn start_config(&self, dir: &Path, toml: &str) -> Server {
        let path = dir.join("confab.toml");
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(&path, toml).unwrap();
        self.start_with(dir, &["--config", path.to_str().unwrap()])
    }

    /// Starts with the test app (id `test-app`, master key `m`) and these lines of its
    /// `[apps.limits]` table.
    pub fn start_with_limits(&self, dir: &Path, limits: &str) -> Server {
        self.start_config(dir, &format!("{TEST_APP}[apps.limits]\n{limits}\n"))
    }

    /// Starts with these extra command-line arguments after `serve`.
    pub fn start_with(&self, dir: &Path, args: &[&str]) -> Server {
        Server::start_with_bin(&self.bin, dir, args)
    }
}

/// A running `confab serve` (under `CONFAB_TEST_STORE=cluster`, several nodes behind
/// a balancer), killed when dropped.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// The other nodes of a cluster, each with its own address.
    others: Vec<(Child, String)>,
    /// The first node's own address (the same as `http` for a single node).
    first: String,
    /// Runs as long as the server: dropped with it.
    _balancer: Option<crate::balancer::Balancer>,
    /// The HTTP base URL, e.g. `http://127.0.0.1:40123` (`https://` when the server
    /// speaks TLS).
    pub http: String,
    /// The WebSocket URL, e.g. `ws://127.0.0.1:40123/` (`wss://` with TLS).
    pub ws: String,
    /// What [`Server::open`] trusts when the server speaks TLS (set it to a
    /// [`crate::tls::client_config`]); unused without TLS.
    pub tls: Option<Arc<ClientConfig>>,
    /// The directory holding the server's data (`data/`), log (`server.log`) and any
    /// config file.
    pub dir: PathBuf,
}

impl Server {
    /// Runs `bin serve` listening on a free port of 127.0.0.1, with its data under
    /// `dir/data`, its log appended to `dir/server.log` and these extra `args`; returns
    /// once the server has printed the address it listens on. Unless `args` name a
    /// store, the store is the one [`TEST_STORE_VAR`] picks.
    pub fn start_with_bin(bin: impl AsRef<Path>, dir: &Path, args: &[&str]) -> Server {
        std::fs::create_dir_all(dir).unwrap();
        let own_store = args.iter().any(|a| a.starts_with("--store"));
        let store = test_store(dir).filter(|_| !own_store);
        let cluster = cluster_mode() && !own_store;
        let broker = cluster.then(test_broker);
        let nodes = if cluster { CLUSTER_NODES } else { 1 };
        Server::spawn(bin.as_ref(), dir, args, store, broker, nodes)
    }

    /// Runs `nodes` nodes of `bin serve` sharing the store `store` (a PostgreSQL URL)
    /// and the broker `broker` (a Redis URL), with these extra `args`, behind a
    /// round-robin balancer that is the server's address; whatever
    /// `CONFAB_TEST_STORE` says.
    pub fn start_cluster_with_bin(
        bin: impl AsRef<Path>,
        dir: &Path,
        store: &str,
        broker: &str,
        nodes: usize,
        args: &[&str],
    ) -> Server {
        std::fs::create_dir_all(dir).unwrap();
        Server::spawn(bin.as_ref(), dir, args, Some(store.to_owned()), Some(broker.to_owned()), nodes)
    }

    fn spawn(
        bin: &Path,
        dir: &Path,
        args: &[&str],
        store: Option<String>,
        broker: Option<String>,
        nodes: usize,
    ) -> Server {
        let cluster = broker.is_some();
        let mut started = Vec::new();
        for node in 0..nodes {
            let log_name = if node == 0 { "server.log".to_owned() } else { format!("server-{node}.log") };
            let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(log_name)).unwrap();
            let node_id = format!("node-{node}");
            let cluster_args: Vec<&str> = match &broker {
                Some(url) => vec!["--broker", url.as_str(), "--node-id", node_id.as_str()],
                None => Vec::new(),
            };
            let mut child = Command::new(bin)
                .arg("serve")
                .args(["--listen", "127.0.0.1:0", "--data-dir"])
                .arg(dir.join("data"))
                .args(args)
                .args(store.iter().flat_map(|url| ["--store", url.as_str()]))
                .args(cluster_args)
                .env("CONFAB_LOG", "confab=debug,info")
                .stdout(Stdio::piped())
                .stderr(log)
                .spawn()
                .expect("confab binary runs");
            let stdout = child.stdout.take().unwrap();
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).unwrap();
            let http = line
                .trim()
                .strip_prefix("listening on ")
                .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
                .to_owned();
            started.push((child, http));
        }
        let (child, first) = started.remove(0);
        // The balancer passes bytes: TLS goes through it to the nodes.
        let scheme = if first.starts_with("https://") { "https" } else { "http" };
        let balancer = cluster.then(|| {
            let addr = |http: &str| authority(http).parse().unwrap();
            let mut nodes = vec![addr(&first)];
            nodes.extend(started.iter().map(|(_, http)| addr(http)));
            crate::balancer::Balancer::start(nodes)
        });
        let http = match &balancer {
            Some(b) => format!("{scheme}://{}", b.addr()),
            None => first.clone(),
        };
        let ws = websocket_url(&http);
        Server {
            child,
            others: started,
            first,
            _balancer: balancer,
            http,
            ws,
            tls: None,
            dir: dir.to_owned(),
        }
    }

    /// The address (`HOST:PORT`) clients connect to.
    pub fn addr(&self) -> &str {
        authority(&self.http)
    }

    /// The HTTP base URLs of each node itself (one for a single node).
    pub fn node_https(&self) -> Vec<String> {
        let mut urls = vec![self.first.clone()];
        urls.extend(self.others.iter().map(|(_, http)| http.clone()));
        urls
    }

    /// The WebSocket URLs of each node itself (one for a single node), to place
    /// clients on a chosen node.
    pub fn node_urls(&self) -> Vec<String> {
        self.node_https().iter().map(|http| websocket_url(http)).collect()
    }

    /// Every node's log (`server.log`, then `server-N.log` of the other nodes).
    pub fn logs(&self) -> String {
        let mut text = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        for node in 1..=self.others.len() {
            text.push_str(
                &std::fs::read_to_string(self.dir.join(format!("server-{node}.log"))).unwrap_or_default(),
            );
        }
        text
    }

    /// The process id of one node (0: the first).
    pub fn node_pid(&self, node: usize) -> u32 {
        if node == 0 { self.child.id() } else { self.others[node - 1].0.id() }
    }

    /// SIGKILL to one node of a cluster (0: the first); the others keep serving.
    pub fn kill_node(&mut self, node: usize) {
        let child = if node == 0 { &mut self.child } else { &mut self.others[node - 1].0 };
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Sends SIGHUP to every node (a server with TLS reads its certificate again).
    pub fn hangup(&self) {
        for pid in std::iter::once(self.child.id()).chain(self.others.iter().map(|(c, _)| c.id())) {
            let sent = Command::new("kill").arg("-HUP").arg(pid.to_string()).status();
            assert!(sent.is_ok_and(|s| s.success()), "kill -HUP failed");
        }
    }

    /// SIGTERM, then waits for the process to exit (every node of a cluster); true if
    /// each exited successfully.
    pub fn terminate(&mut self) -> bool {
        let mut ok = true;
        for child in std::iter::once(&mut self.child).chain(self.others.iter_mut().map(|(c, _)| c)) {
            let sent = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            assert!(sent.is_ok_and(|s| s.success()), "kill -TERM failed");
            ok &= child.wait().is_ok_and(|s| s.success());
        }
        ok
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server process's resident memory (VmRSS), in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap();
        kb.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap() * 1024
    }

    /// SIGKILL (every node of a cluster): no shutdown, no flushing.
    pub fn kill(&mut self) {
        for child in std::iter::once(&mut self.child).chain(self.others.iter_mut().map(|(c, _)| c)) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Opens a session for `peer` in [`APP`] (over `wss://` with [`Server::tls`] when
    /// the server speaks TLS).
    pub async fn open(&self, peer: &str) -> Client {
        self.open_in(APP, peer).await
    }

    /// Opens a session for `peer` in `app`.
    pub async fn open_in(&self, app: &str, peer: &str) -> Client {
        if self.ws.starts_with("wss://") {
            let tls = self.tls.as_ref().expect("a TLS server: set Server::tls to a client configuration");
            Client::open_tls(&self.ws, tls, app, peer, json!({})).await.unwrap()
        } else {
            Client::open(&self.ws, app, peer, json!({})).await.unwrap()
        }
    }
}

/// `HOST:PORT` of `http://HOST:PORT` or `https://HOST:PORT`.
fn authority(http: &str) -> &str {
    http.strip_prefix("https://")
        .or_else(|| http.strip_prefix("http://"))
        .unwrap_or(http)
        .trim_end_matches('/')
}

/// The WebSocket URL of an HTTP base URL: `ws://HOST:PORT/`, or `wss://` for `https://`.
fn websocket_url(http: &str) -> String {
    let scheme = if http.starts_with("https://") { "wss" } else { "ws" };
    format!("{scheme}://{}/", authority(http))
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Creates a normal conversation and returns its id (pushes stay in the inboxes).
pub async fn create(client: &mut Client, members: &[&str]) -> String {
    let reply = client
        .request(json!({"cmd": "conv", "op": "start", "m": members, "attr": {"name": "test"}}))
        .await
        .unwrap();
    assert_eq!(reply["op"], "started", "{reply}");
    reply["cid"].as_str().unwrap().to_owned()
}

/// Sends a message and returns the ack.
pub async fn send(client: &mut Client, cid: &str, msg: &str) -> Value {
    let ack = client.request(json!({"cmd": "direct", "cid": cid, "msg": msg})).await.unwrap();
    assert_eq!(ack["cmd"], "ack", "{ack}");
    ack
}

/// Matches a message push in conversation `cid`.
pub fn is_direct(cid: &str) -> impl Fn(&Value) -> bool + '_ {
    move |f: &Value| f["cmd"] == "direct" && f["cid"] == cid
}

/// Matches a conversation push (no serial) with this `op`.
pub fn is_conv(op: &'static str) -> impl Fn(&Value) -> bool {
    move |f: &Value| f["cmd"] == "conv" && f["op"] == op && f.get("i").is_none()
}

/// The code of an error frame; panics unless `frame` is an error with a reason.
pub fn error_code(frame: &Value) -> i64 {
    assert_eq!(frame["cmd"], "error", "expected an error frame, got {frame}");
    assert!(frame["reason"].as_str().is_some_and(|r| !r.is_empty()), "{frame}");
    frame["code"].as_i64().unwrap()
}

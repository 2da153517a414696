//! Kill-a-node recovery (`failover`, Confab on a cluster only): N devices with a device
//! tag hold sessions spread round-robin over the nodes' own ports (worker processes of
//! `--idle-per-worker` connections each); one node is SIGKILLed; each of its devices
//! notices the lost connection, connects to a surviving node (the nodes in turn, as a
//! load balancer would send it) and re-opens its session as an SDK does after a lost
//! connection (`session open` with `r: true` and the same tag). A refused re-open (4111
//! while the dead node's sessions still count as live, or any other failure) is tried
//! again after a short backoff, counted. Reported: the devices that were on the killed
//! node, the time from the kill to the last of them back in session (and per device),
//! retries and refusals by code, and those not back within `--failover-bound`.
//!
//! Socket.IO has no session to restore (a reconnecting Socket.IO client is a new
//! connection with nothing to claim), so only Confab runs it.

use crate::scenarios::{Load, RAMP, Window, machine_cpu_us, new_histogram, summary};
use crate::server::{Deployment, Programs, cpu_us_of};
use crate::wire::{self, OpenFailure, Target, Ws};
use crate::ws::Opcode;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The device tag every client logs in with (as an SDK sends `tag` when one is set).
pub const TAG: &str = "Mobile";
/// The first retry of a failed re-open waits about this long; each next one twice as
/// long, up to [`BACKOFF_MAX`] (each with jitter: half to all of it).
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long the devices keep their sessions before the kill (liveness renewals and
/// registrations settle).
const SETTLE: Duration = Duration::from_secs(1);

/// The wait before retry `attempt` (1 for the first): [`BACKOFF_MIN`] doubling up to
/// [`BACKOFF_MAX`], of which a `jitter` share (0..1) is taken off half, as the SDKs
/// spread their retries.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let d = BACKOFF_MIN.saturating_mul(1 << attempt.clamp(1, 8).saturating_sub(1)).min(BACKOFF_MAX);
    d.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// A cheap, well-spread number in 0..1 for device `n`'s `attempt`th retry.
fn jitter(n: usize, attempt: u32) -> f64 {
    let mut x = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ u64::from(attempt).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 29;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// What one device did.
#[derive(Clone, Default)]
struct Device {
    /// Whether its first session opened.
    opened: bool,
    /// The node it first logged in on.
    node: usize,
    /// When it first noticed its connection lost (ns since the epoch; 0: never).
    dropped_ns: u64,
    /// When it was back in session after that (0: not yet).
    back_ns: u64,
    /// How long the successful re-open took (connect to `opened`), µs.
    reopen_us: u64,
    /// Re-opens tried until then (1: the first worked).
    attempts: u32,
    /// Not back within the bound: it stopped trying.
    gave_up: bool,
}

/// What a worker's devices share.
struct Ctx {
    addrs: Vec<SocketAddr>,
    bound: Duration,
    devices: Mutex<Vec<Device>>,
    /// Refused re-opens by code.
    refused: Mutex<BTreeMap<i64, u64>>,
    /// Other failed re-opens by kind (connect, timeout, closed, unexpected).
    other: Mutex<BTreeMap<&'static str, u64>>,
    /// Failed re-opens, each tried again unless the bound had passed.
    retries: AtomicU64,
    /// Connections lost again after a device was back.
    dropped_again: AtomicU64,
}

impl Ctx {
    fn device(&self, k: usize, f: impl FnOnce(&mut Device)) {
        if let Some(d) = self.devices.lock().unwrap_or_else(|p| p.into_inner()).get_mut(k) {
            f(d);
        }
    }
}

/// Waits until the connection is lost (closed, reset or a Close frame), answering pings.
async fn lost(ws: &mut Ws) {
    loop {
        match ws.next_frame().await {
            Ok(Some(frame)) if frame.opcode != Opcode::Close => {}
            _ => return,
        }
    }
}

/// Device `n` (the `k`th of its worker): holds its session on `node`; when the
/// connection is lost, re-opens it on the other nodes in turn until it is back or the
/// bound has passed. Ends when the run stops.
async fn device(
    ctx: Arc<Ctx>,
    k: usize,
    n: usize,
    mut node: usize,
    mut ws: Ws,
    mut stop: watch::Receiver<bool>,
) {
    let peer = format!("f{n}");
    let mut first = true;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = lost(&mut ws) => {}
        }
        let dropped = wire::now_ns();
        if first {
            ctx.device(k, |d| d.dropped_ns = dropped);
        } else {
            ctx.dropped_again.fetch_add(1, Relaxed);
        }
        let deadline = Instant::now() + ctx.bound;
        let survivors: Vec<usize> = (0..ctx.addrs.len()).filter(|&i| i != node).collect();
        let mut attempt: u32 = 0;
        ws = loop {
            let to = survivors[(n + attempt as usize) % survivors.len()];
            let src = wire::source_addr(n + 1 + attempt as usize);
            let t = Instant::now();
            let opened = wire::open_device(ctx.addrs[to], src, &peer, TAG, true).await;
            attempt += 1;
            match opened {
                Ok(ws) => {
                    let (back, took) = (wire::now_ns(), t.elapsed().as_micros() as u64);
                    if first {
                        ctx.device(k, |d| (d.back_ns, d.reopen_us, d.attempts) = (back, took, attempt));
                    }
                    node = to;
                    break ws;
                }
                Err(OpenFailure::Refused(code)) => {
                    *ctx.refused.lock().unwrap_or_else(|p| p.into_inner()).entry(code).or_default() += 1;
                }
                Err(OpenFailure::Other(kind)) => {
                    *ctx.other.lock().unwrap_or_else(|p| p.into_inner()).entry(kind).or_default() += 1;
                }
            }
            ctx.retries.fetch_add(1, Relaxed);
            if Instant::now() >= deadline {
                if first {
                    ctx.device(k, |d| (d.gave_up, d.attempts) = (true, attempt));
                }
                return;
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(backoff(attempt, jitter(n, attempt))) => {}
            }
        };
        first = false;
    }
}

/// A failover worker process: opens `count` tagged sessions (device `first + k` on
/// `addrs[(first + k) % len]`), prints `ready OPENED FAILED`, and keeps them. Told
/// `killed NODE T0_NS` on stdin, it waits until each of its devices that were on that
/// node is back in session or has given up (at most the bound and a margin), prints one
/// JSON line with what they did, and ends when told `stop` (or stdin closes), at most
/// 10 minutes later.
pub async fn worker(addrs: Vec<SocketAddr>, first: usize, count: usize, bound: Duration) -> Result<()> {
    if addrs.len() < 2 {
        bail!("a failover worker needs two nodes or more");
    }
    let ctx = Arc::new(Ctx {
        addrs,
        bound,
        devices: Mutex::new(vec![Device::default(); count]),
        refused: Mutex::default(),
        other: Mutex::default(),
        retries: AtomicU64::new(0),
        dropped_again: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut ramp = JoinSet::new();
    for _ in 0..RAMP.min(count) {
        let (ctx, next, failed, stop_rx) = (ctx.clone(), next.clone(), failed.clone(), stop_rx.clone());
        ramp.spawn(async move {
            loop {
                let k = next.fetch_add(1, Relaxed);
                if k >= count {
                    return;
                }
                let n = first + k;
                let node = n % ctx.addrs.len();
                let peer = format!("f{n}");
                match wire::open_device(ctx.addrs[node], wire::source_addr(n), &peer, TAG, false).await {
                    Ok(ws) => {
                        ctx.device(k, |d| (d.opened, d.node) = (true, node));
                        tokio::spawn(device(ctx.clone(), k, n, node, ws, stop_rx.clone()));
                    }
                    Err(_) => {
                        failed.fetch_add(1, Relaxed);
                    }
                }
            }
        });
    }
    while ramp.join_next().await.is_some() {}
    let failed = failed.load(Relaxed);
    println!("ready {} {failed}", count as u64 - failed);
    std::io::stdout().flush()?;
    // The parent's lines, read on a blocking thread.
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::task::spawn_blocking(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let limit = Duration::from_secs(600);
    let killed = tokio::time::timeout(limit, lines.recv()).await.ok().flatten().unwrap_or_default();
    let mut f = killed.split_whitespace();
    let (Some("killed"), Some(victim), Some(t0)) = (f.next(), f.next(), f.next()) else {
        let _ = stop_tx.send(true);
        bail!("expected `killed NODE T0_NS`, got {killed:?}");
    };
    let (victim, t0): (usize, u64) = (victim.parse()?, t0.parse()?);
    // Until each of the victim's devices is back or has given up; a device that never
    // noticed the loss is waited for as long as one that kept failing.
    let hard = Instant::now() + bound + Duration::from_secs(5);
    loop {
        let pending = {
            let devices = ctx.devices.lock().unwrap_or_else(|p| p.into_inner());
            devices.iter().any(|d| d.opened && d.node == victim && d.back_ns == 0 && !d.gave_up)
        };
        if !pending || Instant::now() >= hard {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("{}", report(&ctx, victim, t0));
    std::io::stdout().flush()?;
    let _ = tokio::time::timeout(limit, lines.recv()).await;
    let _ = stop_tx.send(true);
    Ok(())
}

/// One worker's outcome, as one JSON line: counts, and per device of the victim the
/// times (µs after the kill) it noticed the loss and was back, and its re-open's length.
fn report(ctx: &Ctx, victim: usize, t0: u64) -> Value {
    let devices = ctx.devices.lock().unwrap_or_else(|p| p.into_inner());
    let on_victim: Vec<&Device> = devices.iter().filter(|d| d.opened && d.node == victim).collect();
    let after = |ns: u64| ns.saturating_sub(t0) / 1000;
    let back: Vec<&&Device> = on_victim.iter().filter(|d| d.back_ns != 0).collect();
    let refused: BTreeMap<String, u64> = ctx
        .refused
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(code, n)| (code.to_string(), *n))
        .collect();
    let other = ctx.other.lock().unwrap_or_else(|p| p.into_inner()).clone();
    json!({
        "on_killed_node": on_victim.len(),
        "noticed": on_victim.iter().filter(|d| d.dropped_ns != 0).count(),
        "back": back.len(),
        "gave_up": on_victim.iter().filter(|d| d.gave_up).count(),
        "recovery_us": back.iter().map(|d| after(d.back_ns)).collect::<Vec<_>>(),
        "noticed_us": on_victim.iter().filter(|d| d.dropped_ns != 0).map(|d| after(d.dropped_ns)).collect::<Vec<_>>(),
        "reopen_us": back.iter().map(|d| d.reopen_us).collect::<Vec<_>>(),
        "attempts_max": on_victim.iter().map(|d| d.attempts).max().unwrap_or(0),
        "retried_clients": on_victim.iter().filter(|d| d.attempts > 1 || d.gave_up).count(),
        "retries": ctx.retries.load(Relaxed),
        "refused": refused,
        "other_failures": other,
        "dropped_elsewhere": devices.iter().filter(|d| d.opened && d.node != victim && d.dropped_ns != 0).count(),
        "dropped_again": ctx.dropped_again.load(Relaxed),
    })
}

/// A worker process and its stdout (one reader for every line it prints).
struct Worker {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Worker {
    fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        self.out.read_line(&mut line)?;
        Ok(line)
    }

    fn tell(&mut self, line: &str) {
        if let Some(stdin) = self.child.stdin.as_mut() {
            let _ = writeln!(stdin, "{line}");
            let _ = stdin.flush();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.tell("stop");
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The scenario (see the module's documentation): Confab on a cluster of two nodes or more.
pub async fn failover(target: Target, programs: &Programs, load: &Load) -> Result<Value> {
    if target != Target::Confab {
        bail!("failover restores LeanCloud sessions: Confab only");
    }
    let nodes = programs.cluster.unwrap_or(1);
    if nodes < 2 {
        bail!("failover kills one node of a cluster: run it with --cluster --nodes 2 or more");
    }
    let mut server = Deployment::start(target, programs).await?;
    let exe = std::env::current_exe()?;
    let per = load.idle_per_worker.clamp(1, 18_000);
    let addrs: Vec<String> = server.addrs().iter().map(ToString::to_string).collect();
    let addrs = addrs.join(",");
    let bound = load.failover_bound.as_secs_f64().to_string();
    let mut workers = Vec::new();
    let mut first = 0;
    while first < load.failover_clients {
        let n = per.min(load.failover_clients - first);
        let mut child = Command::new(&exe)
            .args(["failover-worker", "--addr", &addrs, "--bound", &bound])
            .args(["--first", &first.to_string(), "--count", &n.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let out = BufReader::new(child.stdout.take().context("worker stdout")?);
        workers.push(Worker { child, out });
        first += n;
    }
    let (mut opened, mut open_failed) = (0u64, 0u64);
    for w in &mut workers {
        let line = w.line()?;
        let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
        if !line.starts_with("ready") || f.len() != 2 {
            bail!("failover worker said {line:?}");
        }
        opened += f[0];
        open_failed += f[1];
    }
    tokio::time::sleep(SETTLE).await;
    // The last node: its devices are every `nodes`th, in every worker.
    let victim = nodes - 1;
    let survivors =
        |cpu: &[u64]| cpu.iter().enumerate().filter(|(i, _)| *i != victim).map(|(_, c)| c).sum::<u64>();
    let worker_cpu = |ws: &[Worker]| ws.iter().map(|w| cpu_us_of(w.child.id())).sum::<u64>();
    let (node0, backing0, load0, all0) =
        (survivors(&server.node_cpu_us()), server.backing_cpu_us(), worker_cpu(&workers), machine_cpu_us());
    let t0 = wire::now_ns();
    let started = Instant::now();
    server.kill_node(victim);
    eprintln!("   killed node {victim} with {opened} sessions open in all");
    for w in &mut workers {
        w.tell(&format!("killed {victim} {t0}"));
    }
    let mut reports = Vec::new();
    for w in &mut workers {
        let line = w.line()?;
        reports.push(
            serde_json::from_str::<Value>(&line).with_context(|| format!("failover worker said {line:?}"))?,
        );
    }
    let cpu = Window {
        secs: started.elapsed().as_secs_f64(),
        server_cpu: survivors(&server.node_cpu_us()).saturating_sub(node0),
        client_cpu: worker_cpu(&workers).saturating_sub(load0),
        backing_cpu: Some(server.backing_cpu_us().saturating_sub(backing0)),
        machine_cpu: machine_cpu_us().saturating_sub(all0),
    };
    let nworkers = workers.len();
    drop(workers);
    let mut out = merge(&reports);
    out["clients"] = json!(load.failover_clients);
    out["opened"] = json!(opened);
    out["open_failed"] = json!(open_failed);
    // As in idle: sessions that could not be opened (those not back are `not_back`).
    out["failed"] = json!(open_failed);
    out["workers"] = json!(nworkers);
    out["nodes"] = json!(nodes);
    out["killed_node"] = json!(victim);
    out["bound_s"] = json!(load.failover_bound.as_secs_f64());
    out["tag"] = json!(TAG);
    out["reopen"] = json!(
        "session open with r: true and the same tag, on the surviving nodes in turn; \
                           a failure is tried again after 250 ms doubling to 1 s (jittered)"
    );
    out["cpu"] = cpu.json();
    if let Some(c) = server.describe() {
        out["cluster"] = c;
    }
    Ok(out)
}

/// The workers' reports together: counts added, per-device times as summaries (ms).
pub fn merge(reports: &[Value]) -> Value {
    let sum = |k: &str| reports.iter().map(|r| r[k].as_u64().unwrap_or(0)).sum::<u64>();
    let hist = |k: &str| {
        let mut h = new_histogram();
        for r in reports {
            for v in r[k].as_array().into_iter().flatten().filter_map(Value::as_u64) {
                let _ = h.record(v.clamp(1, 60_000_000));
            }
        }
        h
    };
    let counts = |k: &str| {
        let mut m: BTreeMap<String, u64> = BTreeMap::new();
        for r in reports {
            for (code, n) in r[k].as_object().into_iter().flatten() {
                *m.entry(code.clone()).or_default() += n.as_u64().unwrap_or(0);
            }
        }
        m
    };
    let recovery = hist("recovery_us");
    let (on_killed, back) = (sum("on_killed_node"), sum("back"));
    let refused = counts("refused");
    json!({
        "on_killed_node": on_killed,
        "noticed": sum("noticed"),
        "back": back,
        "not_back": on_killed.saturating_sub(back),
        "all_back": on_killed > 0 && back == on_killed,
        "last_back_ms": if recovery.is_empty() { Value::Null } else { json!(recovery.max() as f64 / 1000.0) },
        "recovery": summary(&recovery),
        "noticed_after": summary(&hist("noticed_us")),
        "reopen_latency": summary(&hist("reopen_us")),
        "retries": sum("retries"),
        "attempts_max": reports.iter().map(|r| r["attempts_max"].as_u64().unwrap_or(0)).max().unwrap_or(0),
        "retried_clients": sum("retried_clients"),
        "refused_total": refused.values().sum::<u64>(),
        "refused": refused,
        "other_failures": counts("other_failures"),
        "dropped_connections": sum("dropped_elsewhere") + sum("dropped_again"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_second_with_jitter() {
        assert_eq!(backoff(1, 1.0), Duration::from_millis(250));
        assert_eq!(backoff(1, 0.0), Duration::from_millis(125));
        assert_eq!(backoff(2, 1.0), Duration::from_millis(500));
        assert_eq!(backoff(3, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(30, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(0, 1.0), backoff(1, 1.0));
        for n in 0..1000 {
            let j = jitter(n, 3);
            assert!((0.0..1.0).contains(&j), "{j}");
        }
        assert_ne!(jitter(1, 1), jitter(2, 1));
    }

    #[test]
    fn reports_merge_into_counts_and_summaries() {
        let a = json!({
            "on_killed_node": 2, "noticed": 2, "back": 2, "gave_up": 0,
            "recovery_us": [4_000_000, 4_500_000], "noticed_us": [1_000, 2_000], "reopen_us": [3_000, 4_000],
            "attempts_max": 3, "retried_clients": 2, "retries": 4, "refused": {"4111": 4}, "other_failures": {},
            "dropped_elsewhere": 0, "dropped_again": 0,
        });
        let b = json!({
            "on_killed_node": 2, "noticed": 1, "back": 1, "gave_up": 1,
            "recovery_us": [9_000_000], "noticed_us": [1_500], "reopen_us": [5_000],
            "attempts_max": 7, "retried_clients": 1, "retries": 9, "refused": {"4111": 2, "4103": 1}, "other_failures": {"timeout": 1},
            "dropped_elsewhere": 1, "dropped_again": 0,
        });
        let m = merge(&[a, b]);
        assert_eq!(
            (m["on_killed_node"].as_u64(), m["back"].as_u64(), m["not_back"].as_u64()),
            (Some(4), Some(3), Some(1))
        );
        assert_eq!(m["all_back"], json!(false));
        assert_eq!(m["refused"], json!({"4103": 1, "4111": 6}));
        assert_eq!((m["refused_total"].as_u64(), m["retries"].as_u64()), (Some(7), Some(13)));
        assert_eq!(m["other_failures"], json!({"timeout": 1}));
        assert_eq!((m["attempts_max"].as_u64(), m["dropped_connections"].as_u64()), (Some(7), Some(1)));
        assert_eq!(m["retried_clients"].as_u64(), Some(3));
        assert_eq!(m["recovery"]["count"].as_u64(), Some(3));
        let last = m["last_back_ms"].as_f64().expect("a number");
        assert!((last - 9000.0).abs() < 10.0, "{last}");
        let none = merge(&[json!({"on_killed_node": 0})]);
        assert_eq!((none["all_back"].clone(), none["last_back_ms"].clone()), (json!(false), Value::Null));
    }
}

//! `confab-bench`: drives a real Confab server (and, for comparison, the Socket.IO and
//! bare-broadcast peers in `bench/peers` and its own do-nothing Rust broadcaster) over
//! loopback WebSockets, prints a table with ratios and writes JSON. Every scenario
//! starts a fresh server and is bounded in count and time. See docs/performance.md.

mod bare;
mod failover;
mod scenarios;
mod server;
mod wire;
mod ws;

use anyhow::Result;
use clap::{Parser, Subcommand};
use scenarios::Load;
use serde_json::{Value, json};
use server::Programs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use wire::{MemberAcks, Target};

#[derive(Parser)]
#[command(about = "Confab load tool and benchmarks (loopback only)")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs the scenarios against each target in turn and prints ratios Confab/peer.
    #[command(args_override_self = true)]
    Run(Box<RunArgs>),
    /// Runs the do-nothing Rust WebSocket broadcaster (the bare-rust target: tokio
    /// multi-threaded + tungstenite, the dialect of bench/peers/bare.mjs) until killed.
    ServeBare {
        /// Loopback address to listen on; port 0 picks a free one (printed on stdout).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// (internal) Holds idle connections for the idle scenario.
    #[command(hide = true)]
    Worker {
        #[arg(long, value_enum)]
        target: Target,
        /// The server's address, or a cluster's nodes' (comma-separated, used round-robin).
        #[arg(long, value_delimiter = ',', required = true)]
        addr: Vec<SocketAddr>,
        #[arg(long)]
        first: usize,
        #[arg(long)]
        count: usize,
    },
    /// (internal) Holds tagged sessions for the failover scenario and re-opens those
    /// whose node dies.
    #[command(hide = true)]
    FailoverWorker {
        /// The cluster's nodes (comma-separated; device n logs in on the n % len th).
        #[arg(long, value_delimiter = ',', required = true)]
        addr: Vec<SocketAddr>,
        #[arg(long)]
        first: usize,
        #[arg(long)]
        count: usize,
        /// Seconds a device keeps trying to come back.
        #[arg(long)]
        bound: f64,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Servers to measure, in order (Confab first: its maximum sets the half-rate load):
    /// confab, socketio, bare (Node), bare-rust (this program's `serve-bare`).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "confab", action = clap::ArgAction::Set)]
    targets: Vec<Target>,
    /// Scenarios: idle, fanout, fanout-half, durable, opens; failover (with --cluster,
    /// Confab only: kill a node, time its clients' return); and the older, kinder
    /// shapes as secondary rows: fanout-silent (members never ack), durable-burst
    /// (`--burst-window` sends in flight per 1:1 sender).
    #[arg(long, value_delimiter = ',', default_value = "idle,fanout,fanout-half,durable,opens", action = clap::ArgAction::Set)]
    scenarios: Vec<String>,
    /// The confab binary (the release build).
    #[arg(long, default_value = "target/release/confab")]
    confab_bin: PathBuf,
    /// Folder of the peer servers (npm ci already run there).
    #[arg(long, default_value = "bench/peers")]
    peers_dir: PathBuf,
    /// Confab's store durability: full (fsync) or normal (one process only; a cluster's
    /// PostgreSQL always runs with fsync and synchronous_commit on).
    #[arg(long, default_value = "full")]
    durability: String,
    /// Runs each target as a cluster of `--nodes` processes on this machine, clients
    /// connecting round-robin straight to each node (no balancer): Confab on a fresh
    /// PostgreSQL (store) and Redis (broker and presence); Socket.IO with
    /// `@socket.io/redis-adapter` on a fresh Redis. Targets: confab, socketio.
    #[arg(long)]
    cluster: bool,
    /// Nodes per cluster (with --cluster).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=16))]
    nodes: u16,
    /// Idle connections.
    #[arg(long, default_value_t = 2000)]
    idle: usize,
    /// Idle connections (and failover devices) per load-tool process.
    #[arg(long, default_value_t = 10_000)]
    idle_per_worker: usize,
    /// Room members receiving the fan-out.
    #[arg(long, default_value_t = 200)]
    members: usize,
    /// Publishers in the room.
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// Unacknowledged publishes per publisher.
    #[arg(long, default_value_t = 4)]
    window: usize,
    /// Undelivered messages per member before publishers wait.
    #[arg(long, default_value_t = 32)]
    fanout_budget: u64,
    /// How room members and 1:1 recipients acknowledge deliveries: 2.4 (leancloud-realtime
    /// 2.4.0: `ack {cid, mid}` for every message, chat rooms included), 4x (4.x:
    /// `ack {cid, fromts, tots}` batches at most once a second, never in chat rooms) or
    /// none. The peers get frames of the same size in their own dialect.
    #[arg(long, value_enum, default_value = "2.4")]
    member_acks: MemberAcks,
    /// Fixed publish rate (messages/s, all publishers) for fanout-half; default: half of
    /// the first target's measured maximum.
    #[arg(long)]
    half_rate: Option<f64>,
    /// 1:1 pairs in the durable scenarios.
    #[arg(long, default_value_t = 200)]
    pairs: usize,
    /// Unacknowledged sends per 1:1 sender (1: send, wait for the ack, send the next, as
    /// a chat client does).
    #[arg(long, default_value_t = 1)]
    pair_window: usize,
    /// Unacknowledged sends per 1:1 sender in durable-burst (the older, kinder shape).
    #[arg(long, default_value_t = 8)]
    burst_window: usize,
    /// Session opens.
    #[arg(long, default_value_t = 2000)]
    opens: usize,
    /// Opens in flight at once.
    #[arg(long, default_value_t = 64)]
    open_concurrency: usize,
    /// Message body bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Devices in the failover scenario: tagged sessions spread round-robin over the
    /// nodes; one node is killed and its devices re-open elsewhere.
    #[arg(long, default_value_t = 10_000)]
    failover_clients: usize,
    /// Seconds a device of the killed node keeps trying before it counts as not back (a
    /// failure).
    #[arg(long, default_value_t = 60.0)]
    failover_bound: f64,
    /// Measured seconds per throughput scenario.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Warm-up seconds before each measured window.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Where to write the JSON results [default: bench/results/latest.json, with
    /// --cluster bench/results/cluster-latest.json].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Exits non-zero (after writing the results) when a scenario failed, a session
    /// could not be opened, a connection dropped, a server answered with an error, or
    /// a throughput scenario counted nothing: for smoke runs in test scripts.
    #[arg(long)]
    strict: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Cmd::Worker { target, addr, first, count } => {
            let r = rt.block_on(scenarios::worker(target, addr, first, count));
            rt.shutdown_background();
            r?;
            std::process::exit(0);
        }
        Cmd::FailoverWorker { addr, first, count, bound } => {
            let bound = Duration::try_from_secs_f64(bound).unwrap_or(Duration::from_secs(60));
            let r = rt.block_on(failover::worker(addr, first, count, bound));
            rt.shutdown_background();
            r?;
            std::process::exit(0);
        }
        Cmd::ServeBare { listen } => rt.block_on(bare::serve(listen)),
        Cmd::Run(args) => rt.block_on(run(*args)),
    }
}

async fn run(a: RunArgs) -> Result<()> {
    let cluster = a.cluster.then_some(usize::from(a.nodes));
    if cluster.is_some()
        && let Some(t) = a.targets.iter().find(|t| !matches!(t, Target::Confab | Target::Socketio))
    {
        anyhow::bail!("--cluster runs the confab and socketio targets only, not {}", t.name());
    }
    let out_path = a.out.clone().unwrap_or_else(|| {
        PathBuf::from(if a.cluster {
            "bench/results/cluster-latest.json"
        } else {
            "bench/results/latest.json"
        })
    });
    let programs = Programs {
        confab: a.confab_bin.clone(),
        peers: a.peers_dir.clone(),
        durability: a.durability.clone(),
        cluster,
    };
    let load = Load {
        idle: a.idle,
        idle_per_worker: a.idle_per_worker,
        members: a.members,
        publishers: a.publishers,
        window: a.window,
        fanout_budget: a.fanout_budget,
        member_acks: a.member_acks,
        pairs: a.pairs,
        pair_window: a.pair_window,
        burst_window: a.burst_window,
        opens: a.opens,
        open_concurrency: a.open_concurrency,
        size: a.size,
        seconds: a.seconds,
        warmup: a.warmup,
        failover_clients: a.failover_clients,
        failover_bound: Duration::try_from_secs_f64(a.failover_bound)
            .map_err(|_| anyhow::anyhow!("--failover-bound: {} is not a duration", a.failover_bound))?,
    };
    let mut results = serde_json::Map::new();
    let mut half_rate = a.half_rate;
    for &target in &a.targets {
        let mut r = serde_json::Map::new();
        for s in &a.scenarios {
            eprintln!("== {} {s}", target.name());
            let out = match s.as_str() {
                "idle" => scenarios::idle(target, &programs, &load).await,
                "fanout" => scenarios::fanout(target, &programs, &load, None, load.member_acks).await,
                "fanout-silent" => scenarios::fanout(target, &programs, &load, None, MemberAcks::None).await,
                "fanout-half" => {
                    let rate = match (half_rate, r.get("fanout")) {
                        (Some(h), _) => Some(h),
                        (None, Some(f)) => f["published_per_s"].as_f64().map(|p| p / 2.0),
                        (None, None) => None,
                    };
                    match rate {
                        Some(rate) => {
                            half_rate = Some(rate);
                            scenarios::fanout(target, &programs, &load, Some(rate), load.member_acks).await
                        }
                        None => Err(anyhow::anyhow!("fanout-half needs fanout first or --half-rate")),
                    }
                }
                "durable" => scenarios::durable(target, &programs, &load, load.pair_window).await,
                "durable-burst" => scenarios::durable(target, &programs, &load, load.burst_window).await,
                "opens" => scenarios::opens(target, &programs, &load).await,
                // Socket.IO has no session to restore: a reconnecting client is a new
                // connection with nothing to claim or be refused.
                "failover" if target != Target::Confab => {
                    Ok(json!({"skipped": "Confab only: Socket.IO has no sessions to restore"}))
                }
                "failover" => failover::failover(target, &programs, &load).await,
                other => Err(anyhow::anyhow!("unknown scenario {other}")),
            };
            let v = out.unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
            eprintln!("   {v}");
            r.insert(s.clone(), v);
        }
        results.insert(target.name().into(), Value::Object(r));
    }
    let results = Value::Object(results);
    let mut report = json!({
        "machine": machine(),
        "load": {
            "idle": a.idle, "members": a.members, "publishers": a.publishers, "window": a.window,
            "fanout_budget": a.fanout_budget, "member_acks": a.member_acks.name(),
            "pairs": a.pairs, "pair_window": a.pair_window, "burst_window": a.burst_window,
            "opens": a.opens, "open_concurrency": a.open_concurrency, "size": a.size,
            "seconds": a.seconds, "warmup": a.warmup, "durability": a.durability,
            "failover_clients": a.failover_clients, "failover_bound_s": a.failover_bound,
        },
        "results": results,
        "ratios": ratios(&results),
    });
    if let Some(n) = cluster {
        report["cluster"] = json!({
            "nodes": n,
            "placement": "clients round-robin straight to each node, no balancer; 1:1 pairs on neighbouring nodes",
            "confab": "nodes share one PostgreSQL (fsync=on, synchronous_commit=on) and one Redis",
            "socketio": "@socket.io/redis-adapter on one Redis",
        });
    }
    println!("{}", table(&report));
    if let Some(dir) = out_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out_path, serde_json::to_string_pretty(&report)?)?;
    eprintln!("wrote {}", out_path.display());
    let problems = problems(&report["results"]);
    if a.strict && !problems.is_empty() {
        anyhow::bail!("--strict: {}", problems.join("; "));
    }
    Ok(())
}

/// The headline metrics, real shapes first: (scenario, JSON pointer inside it, label,
/// higher is better). Rows of [`SECONDARY`] scenarios come last, under their own heading.
const METRICS: &[(&str, &str, &str, bool)] = &[
    ("fanout", "/delivered_per_s", "room: delivered msg/s (max)", true),
    ("fanout", "/member_acks_per_s", "room: member acks sent/s", true),
    ("fanout", "/delivery_latency/p99_ms", "room: p99 ms (max rate)", false),
    ("fanout", "/server_cpu_us_per_delivery", "room: server CPU µs/delivery", false),
    ("fanout", "/cpu/server_cores_busy", "room: server cores busy", false),
    ("fanout", "/cpu/load_tool_cores_busy", "room: load tool cores busy", false),
    ("fanout", "/cpu/postgres_redis_cores_busy", "room: PostgreSQL+Redis cores busy", false),
    ("fanout", "/postgres_redis_cpu_us_per_delivery", "room: PostgreSQL+Redis CPU µs/delivery", false),
    ("fanout", "/cpu/machine_cores_busy", "room: machine cores busy (all)", false),
    ("fanout-half", "/delivered_per_s", "room at half rate: delivered msg/s", true),
    ("fanout-half", "/delivery_latency/p50_ms", "room at half rate: p50 ms", false),
    ("fanout-half", "/delivery_latency/p99_ms", "room at half rate: p99 ms", false),
    ("fanout-half", "/delivery_latency/p999_ms", "room at half rate: p999 ms", false),
    ("durable", "/acked_per_s", "1:1 pairs: acked msg/s", true),
    ("durable", "/ack_latency/p50_ms", "1:1 pairs: ack p50 ms", false),
    ("durable", "/ack_latency/p99_ms", "1:1 pairs: ack p99 ms", false),
    ("durable", "/delivered_per_s", "1:1 pairs: delivered msg/s", true),
    ("durable", "/delivery_latency/p99_ms", "1:1 pairs: delivery p99 ms", false),
    ("durable", "/server_cpu_us_per_message", "1:1 pairs: server CPU µs/acked msg", false),
    ("durable", "/cpu/server_cores_busy", "1:1 pairs: server cores busy", false),
    ("durable", "/cpu/load_tool_cores_busy", "1:1 pairs: load tool cores busy", false),
    ("durable", "/cpu/postgres_redis_cores_busy", "1:1 pairs: PostgreSQL+Redis cores busy", false),
    ("durable", "/postgres_redis_cpu_us_per_message", "1:1 pairs: PostgreSQL+Redis CPU µs/msg", false),
    ("durable", "/cpu/machine_cores_busy", "1:1 pairs: machine cores busy (all)", false),
    ("idle", "/server_kb_per_conn", "idle: server KB/connection", false),
    ("idle", "/redis_kb_per_conn", "idle: Redis KB/connection", false),
    ("opens", "/opens_per_s", "session opens/s", true),
    ("failover", "/on_killed_node", "failover: clients on the killed node", true),
    ("failover", "/back", "failover: of them back in session", true),
    ("failover", "/last_back_ms", "failover: kill → last one back, ms", false),
    ("failover", "/recovery/p50_ms", "failover: kill → back p50 ms", false),
    ("failover", "/recovery/p99_ms", "failover: kill → back p99 ms", false),
    ("failover", "/retried_clients", "failover: clients that had to retry", false),
    ("failover", "/retries", "failover: re-opens tried again", false),
    ("failover", "/refused_total", "failover: re-opens refused (any code)", false),
    ("opens", "/server_cpu_us_per_open", "session open: server CPU µs", false),
    ("fanout-silent", "/delivered_per_s", "room, silent: delivered msg/s", true),
    ("fanout-silent", "/delivery_latency/p99_ms", "room, silent: p99 ms", false),
    ("fanout-silent", "/server_cpu_us_per_delivery", "room, silent: server CPU µs/delivery", false),
    ("durable-burst", "/acked_per_s", "1:1 burst window: acked msg/s", true),
    ("durable-burst", "/ack_latency/p50_ms", "1:1 burst window: ack p50 ms", false),
    ("durable-burst", "/ack_latency/p99_ms", "1:1 burst window: ack p99 ms", false),
    ("durable-burst", "/server_cpu_us_per_message", "1:1 burst window: server CPU µs/msg", false),
];

/// The older, kinder shapes, reported after the real ones.
const SECONDARY: &[&str] = &["fanout-silent", "durable-burst"];

/// Every target in table order, and the peers Confab is compared with.
const TARGETS: &[&str] = &["confab", "socketio", "bare", "bare-rust"];
const PEERS: &[&str] = &["socketio", "bare", "bare-rust"];

/// What went wrong in a run, one line per target and scenario (empty: nothing).
fn problems(results: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(targets) = results.as_object() else { return out };
    for (target, scenarios) in targets {
        let Some(scenarios) = scenarios.as_object() else { continue };
        for (name, r) in scenarios {
            let count = |k: &str| r[k].as_u64().unwrap_or(0);
            let mut bad = Vec::new();
            if let Some(e) = r["error"].as_str() {
                bad.push(format!("failed: {e}"));
            }
            for k in ["failed", "dropped_connections", "errors"] {
                if count(k) > 0 {
                    bad.push(format!("{k} {}", count(k)));
                }
            }
            for k in ["delivered_per_s", "acked_per_s", "opens_per_s"] {
                if r.get(k).is_some_and(|v| v.as_f64().unwrap_or(0.0) <= 0.0) {
                    bad.push(format!("{k} 0"));
                }
            }
            if r.get("connections").is_some() && count("connections") == 0 {
                bad.push("no idle connection".into());
            }
            // Failover: every client of the killed node back in session, and none refused
            // (a refused re-login strands a 4.x SDK: it reports RECONNECT_ERROR and stops).
            if r.get("on_killed_node").is_some() {
                if count("on_killed_node") == 0 {
                    bad.push("no client on the killed node".into());
                }
                if count("not_back") > 0 {
                    bad.push(format!(
                        "{} of {} never back in session",
                        count("not_back"),
                        count("on_killed_node")
                    ));
                }
                if count("refused_total") > 0 {
                    bad.push(format!("re-opens refused {}", r["refused"]));
                }
            }
            if !bad.is_empty() {
                out.push(format!("{target} {name}: {}", bad.join(", ")));
            }
        }
    }
    out
}

fn ratios(results: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for peer in PEERS {
        let mut m = serde_json::Map::new();
        for (s, p, label, _) in METRICS {
            let c = results["confab"][s].pointer(p).and_then(Value::as_f64);
            let o = results[peer][s].pointer(p).and_then(Value::as_f64);
            if let (Some(c), Some(o)) = (c, o)
                && o > 0.0
            {
                m.insert((*label).into(), json!((c / o * 1000.0).round() / 1000.0));
            }
        }
        if !m.is_empty() {
            out.insert(format!("confab/{peer}"), Value::Object(m));
        }
    }
    Value::Object(out)
}

fn table(report: &Value) -> String {
    let results = &report["results"];
    let targets: Vec<&str> = TARGETS.iter().copied().filter(|t| results.get(t).is_some()).collect();
    let peers: Vec<&str> =
        PEERS.iter().copied().filter(|p| targets.contains(&"confab") && targets.contains(p)).collect();
    let load = &report["load"];
    let mut s = String::new();
    if let Some(n) = report["cluster"]["nodes"].as_u64() {
        s += &format!(
            "cluster: {n} nodes per target, clients round-robin straight to the nodes, 1:1 pairs across nodes; \
             Confab on PostgreSQL (fsync on) + Redis, Socket.IO with @socket.io/redis-adapter on Redis; \
             {} idle sessions asked for\n",
            load["idle"]
        );
    }
    s += &format!(
        "load: room of {} members ({} publishers, {} in flight each), {} 1:1 pairs ({} in flight per sender), \
         member acks {}, {}-byte bodies\n",
        load["members"],
        load["publishers"],
        load["window"],
        load["pairs"],
        load["pair_window"],
        match load["member_acks"].as_str() {
            Some("2.4") => "2.4 (each message, chat rooms too)",
            Some("4x") => "4x (batched once a second, none in chat rooms)",
            Some("none") => "none",
            _ => "?",
        },
        load["size"],
    );
    if targets.iter().any(|t| results[t]["failover"].get("on_killed_node").is_some()) {
        s += &format!(
            "failover: {} tagged sessions round-robin over the nodes, one node SIGKILLed, its clients re-open \
             (r: true, same tag) on the others, a failure tried again after 250 ms doubling to 1 s; bound {} s\n",
            load["failover_clients"], load["failover_bound_s"]
        );
    }
    s += &format!("{:<42}", "metric");
    for t in &targets {
        s += &format!("{t:>12}");
    }
    for peer in &peers {
        s += &format!("{:>18}", format!("confab/{peer}"));
    }
    s.push('\n');
    let mut secondary_heading = false;
    for (sc, p, label, _) in METRICS {
        // Rows nobody has a value for (a scenario that did not run, a cluster-only
        // metric in a one-process run) are left out.
        if targets.iter().all(|t| results[t][sc].pointer(p).and_then(Value::as_f64).is_none()) {
            continue;
        }
        if SECONDARY.contains(sc) && !secondary_heading {
            secondary_heading = true;
            s += &format!(
                "-- older, kinder shapes: members silent; {} in flight per 1:1 sender\n",
                load["burst_window"]
            );
        }
        s += &format!("{label:<42}");
        for t in &targets {
            s += &match results[t][sc].pointer(p).and_then(Value::as_f64) {
                Some(v) => format!("{:>12}", fmt(v)),
                None => format!("{:>12}", "-"),
            };
        }
        for peer in &peers {
            s += &match report["ratios"][format!("confab/{peer}")][label].as_f64() {
                Some(v) => format!("{:>18}", format!("{v:.2}×")),
                None => format!("{:>18}", "-"),
            };
        }
        s.push('\n');
    }
    s
}

fn fmt(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().to_owned()));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
    json!({"cpu": model, "cores": cores, "memory": mem, "kernel": kernel})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Value {
        let results = json!({
            "confab": {"fanout": {"delivered_per_s": 400.0, "cpu": {"server_cores_busy": 1.0}},
                       "durable-burst": {"acked_per_s": 30.0}},
            "socketio": {"fanout": {"delivered_per_s": 100.0}},
            "bare-rust": {"fanout": {"delivered_per_s": 800.0}, "durable-burst": {"acked_per_s": 0.0}},
        });
        let ratios = ratios(&results);
        json!({
            "load": {"members": 30, "publishers": 4, "window": 4, "pairs": 3, "pair_window": 1,
                     "burst_window": 8, "member_acks": "2.4", "size": 64},
            "results": results, "ratios": ratios,
        })
    }

    #[test]
    fn ratios_against_each_peer_present() {
        let r = report();
        let label = "room: delivered msg/s (max)";
        assert_eq!(r["ratios"]["confab/socketio"][label], json!(4.0));
        assert_eq!(r["ratios"]["confab/bare-rust"][label], json!(0.5));
        assert!(r["ratios"].get("confab/bare").is_none(), "bare did not run");
        assert!(
            r["ratios"]["confab/bare-rust"].get("1:1 burst window: acked msg/s").is_none(),
            "no ratio against a zero"
        );
    }

    #[test]
    fn table_puts_real_shapes_first() {
        let t = table(&report());
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].contains("member acks 2.4") && lines[0].contains("3 1:1 pairs (1 in flight"), "{t}");
        assert!(lines[1].contains("bare-rust") && lines[1].contains("confab/bare-rust"), "{t}");
        assert!(!lines[1].contains("confab/bare "), "{t}");
        let real = t.find("room: delivered").expect("real row");
        let heading = t.find("-- older, kinder shapes").expect("secondary heading");
        let kind = t.find("1:1 burst window: acked").expect("secondary row");
        assert!(real < heading && heading < kind, "{t}");
        assert!(t.contains("0.50×") && t.contains("4.00×"), "{t}");
        assert!(!t.contains("idle:"), "rows of scenarios that did not run are left out: {t}");
    }

    #[test]
    fn run_defaults_are_the_real_shapes() {
        let cli = Cli::try_parse_from(["confab-bench", "run"]).expect("parse");
        let Cmd::Run(a) = cli.command else { panic!("run expected") };
        assert_eq!(a.member_acks, MemberAcks::V24);
        assert_eq!((a.pairs, a.pair_window, a.burst_window), (200, 1, 8));
        let cli = Cli::try_parse_from([
            "confab-bench",
            "run",
            "--member-acks",
            "4x",
            "--targets",
            "confab,bare-rust",
        ])
        .expect("parse");
        let Cmd::Run(a) = cli.command else { panic!("run expected") };
        assert_eq!(a.member_acks, MemberAcks::V4x);
        assert_eq!(a.targets, vec![Target::Confab, Target::BareRust]);
        assert!(Cli::try_parse_from(["confab-bench", "run", "--member-acks", "3"]).is_err());
    }

    #[test]
    fn later_lists_replace_earlier_ones() {
        // What bench/run relies on: its defaults first, the caller's flags after them.
        let cli = Cli::try_parse_from([
            "confab-bench",
            "run",
            "--targets",
            "confab,socketio",
            "--scenarios",
            "idle,fanout,durable",
            "--idle",
            "45000",
            "--targets",
            "confab",
            "--scenarios",
            "durable",
            "--idle",
            "300",
        ])
        .expect("parse");
        let Cmd::Run(a) = cli.command else { panic!("run expected") };
        assert_eq!(a.targets, vec![Target::Confab]);
        assert_eq!(a.scenarios, vec!["durable".to_owned()]);
        assert_eq!(a.idle, 300);
    }

    #[test]
    fn cluster_mode_takes_confab_and_socketio_only() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["confab-bench", "run", "--cluster"];
            argv.extend_from_slice(extra);
            let cli = Cli::try_parse_from(argv).expect("parse");
            let Cmd::Run(a) = cli.command else { panic!("run expected") };
            a
        };
        let a = parse(&["--targets", "confab,socketio"]);
        assert!(a.cluster && a.nodes == 3 && a.out.is_none());
        assert!(Cli::try_parse_from(["confab-bench", "run", "--cluster", "--nodes", "0"]).is_err());
        // Refused before any server starts.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let err = rt.block_on(run(*parse(&["--targets", "confab,bare-rust"]))).expect_err("refused");
        assert!(err.to_string().contains("bare-rust"), "{err}");
    }

    #[test]
    fn strict_finds_what_went_wrong() {
        let ok = json!({"confab": {"fanout": {"delivered_per_s": 5.0, "errors": 0, "dropped_connections": 0},
                                   "idle": {"connections": 10, "failed": 0}}});
        assert!(problems(&ok).is_empty(), "{:?}", problems(&ok));
        let bad = json!({
            "confab": {"durable": {"acked_per_s": 0.0, "delivered_per_s": 0.0, "errors": 2}},
            "socketio": {"idle": {"connections": 0, "failed": 3}, "fanout": {"error": "no node"}},
        });
        let p = problems(&bad).join("\n");
        for needle in [
            "confab durable: errors 2, delivered_per_s 0, acked_per_s 0",
            "failed 3",
            "no idle connection",
            "failed: no node",
        ] {
            assert!(p.contains(needle), "{needle}: {p}");
        }
    }

    #[test]
    fn strict_wants_every_client_of_the_killed_node_back_unrefused() {
        let ok = json!({"confab": {"failover": {
            "on_killed_node": 3334, "back": 3334, "not_back": 0, "failed": 0, "refused_total": 0,
            "refused": {}, "dropped_connections": 0, "retries": 0}},
            "socketio": {"failover": {"skipped": "Confab only"}}});
        assert!(problems(&ok).is_empty(), "{:?}", problems(&ok));
        let bad = json!({"confab": {"failover": {
            "on_killed_node": 3334, "back": 3330, "not_back": 4, "failed": 0, "refused_total": 9,
            "refused": {"4111": 9}, "dropped_connections": 1}}});
        let p = problems(&bad).join("\n");
        for needle in ["4 of 3334 never back", "re-opens refused {\"4111\":9}", "dropped_connections 1"] {
            assert!(p.contains(needle), "{needle}: {p}");
        }
        let nobody = json!({"confab": {"failover": {"on_killed_node": 0, "not_back": 0}}});
        assert!(problems(&nobody).join("").contains("no client on the killed node"));
    }

    #[test]
    fn failover_rows_and_options() {
        let mut r = report();
        r["cluster"] = json!({"nodes": 3});
        r["load"]["failover_clients"] = json!(10000);
        r["load"]["failover_bound_s"] = json!(60.0);
        r["results"]["confab"]["failover"] = json!({"on_killed_node": 3333, "back": 3333, "last_back_ms": 4321.5, "recovery": {"p50_ms": 4000.0}});
        r["results"]["socketio"]["failover"] = json!({"skipped": "Confab only"});
        let t = table(&r);
        assert!(t.contains("failover: 10000 tagged sessions") && t.contains("bound 60.0 s"), "{t}");
        let last = t.lines().find(|l| l.starts_with("failover: kill → last one back")).expect("row");
        assert!(last.contains("4322") && last.trim_end().ends_with('-'), "{last}");
        assert!(!table(&report()).contains("failover"), "no failover line without the scenario");
        let cli = Cli::try_parse_from(["confab-bench", "run", "--cluster", "--scenarios", "failover"])
            .expect("parse");
        let Cmd::Run(a) = cli.command else { panic!("run expected") };
        assert_eq!((a.failover_clients, a.failover_bound), (10_000, 60.0));
        assert_eq!(a.scenarios, vec!["failover".to_owned()]);
    }

    #[test]
    fn cluster_table_names_the_cluster_and_its_rows() {
        let mut r = report();
        r["results"]["confab"]["fanout"]["cpu"]["postgres_redis_cores_busy"] = json!(0.5);
        r["results"]["confab"]["fanout"]["postgres_redis_cpu_us_per_delivery"] = json!(1.5);
        r["results"]["bare-rust"]["fanout"]["postgres_redis_cpu_us_per_delivery"] = Value::Null;
        r["cluster"] = json!({"nodes": 3});
        r["load"]["idle"] = json!(45000);
        let t = table(&r);
        let first = t.lines().next().expect("a line");
        assert!(first.starts_with("cluster: 3 nodes") && first.contains("45000 idle"), "{t}");
        assert!(t.contains("room: PostgreSQL+Redis cores busy"), "{t}");
        assert!(t.contains("room: PostgreSQL+Redis CPU µs/delivery"), "{t}");
        let mut one = report();
        one["results"]["confab"]["fanout"]["postgres_redis_cpu_us_per_delivery"] = Value::Null;
        let single = table(&one);
        assert!(!single.contains("cluster:") && !single.contains("PostgreSQL"), "{single}");
        assert!(!single.contains("room: p99 ms"), "rows without any value are left out: {single}");
    }
}

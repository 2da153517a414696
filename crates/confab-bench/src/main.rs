//! `confab-bench`: drives a real Confab server (and, for comparison, the Socket.IO and
//! bare-broadcast peers in `bench/peers`) over loopback WebSockets, prints a table with
//! ratios and writes JSON. Every scenario starts a fresh server and is bounded in count
//! and time. See docs/performance.md.

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
use wire::Target;

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
    /// (internal) Holds idle connections for the idle scenario.
    #[command(hide = true)]
    Worker {
        #[arg(long, value_enum)]
        target: Target,
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        first: usize,
        #[arg(long)]
        count: usize,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Servers to measure, in order (Confab first: its maximum sets the half-rate load).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "confab")]
    targets: Vec<Target>,
    /// Scenarios: idle, fanout, fanout-half, durable, opens.
    #[arg(long, value_delimiter = ',', default_value = "idle,fanout,fanout-half,durable,opens")]
    scenarios: Vec<String>,
    /// The confab binary (the release build).
    #[arg(long, default_value = "target/release/confab")]
    confab_bin: PathBuf,
    /// Folder of the peer servers (npm ci already run there).
    #[arg(long, default_value = "bench/peers")]
    peers_dir: PathBuf,
    /// Confab's store durability: full (fsync) or normal.
    #[arg(long, default_value = "full")]
    durability: String,
    /// Idle connections.
    #[arg(long, default_value_t = 2000)]
    idle: usize,
    /// Idle connections per load-tool process.
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
    /// Fixed publish rate (messages/s, all publishers) for fanout-half; default: half of
    /// the first target's measured maximum.
    #[arg(long)]
    half_rate: Option<f64>,
    /// 1:1 pairs in the durable scenario.
    #[arg(long, default_value_t = 20)]
    pairs: usize,
    /// Unacknowledged sends per 1:1 sender.
    #[arg(long, default_value_t = 8)]
    pair_window: usize,
    /// Session opens.
    #[arg(long, default_value_t = 2000)]
    opens: usize,
    /// Opens in flight at once.
    #[arg(long, default_value_t = 64)]
    open_concurrency: usize,
    /// Message body bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Measured seconds per throughput scenario.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Warm-up seconds before each measured window.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench/results/latest.json")]
    out: PathBuf,
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
        Cmd::Run(args) => rt.block_on(run(*args)),
    }
}

async fn run(a: RunArgs) -> Result<()> {
    let programs = Programs {
        confab: a.confab_bin.clone(),
        peers: a.peers_dir.clone(),
        durability: a.durability.clone(),
    };
    let load = Load {
        idle: a.idle,
        idle_per_worker: a.idle_per_worker,
        members: a.members,
        publishers: a.publishers,
        window: a.window,
        fanout_budget: a.fanout_budget,
        pairs: a.pairs,
        pair_window: a.pair_window,
        opens: a.opens,
        open_concurrency: a.open_concurrency,
        size: a.size,
        seconds: a.seconds,
        warmup: a.warmup,
    };
    let mut results = serde_json::Map::new();
    let mut half_rate = a.half_rate;
    for &target in &a.targets {
        let mut r = serde_json::Map::new();
        for s in &a.scenarios {
            eprintln!("== {} {s}", target.name());
            let out = match s.as_str() {
                "idle" => scenarios::idle(target, &programs, &load).await,
                "fanout" => scenarios::fanout(target, &programs, &load, None).await,
                "fanout-half" => {
                    let rate = match (half_rate, r.get("fanout")) {
                        (Some(h), _) => Some(h),
                        (None, Some(f)) => f["published_per_s"].as_f64().map(|p| p / 2.0),
                        (None, None) => None,
                    };
                    match rate {
                        Some(rate) => {
                            half_rate = Some(rate);
                            scenarios::fanout(target, &programs, &load, Some(rate)).await
                        }
                        None => Err(anyhow::anyhow!("fanout-half needs fanout first or --half-rate")),
                    }
                }
                "durable" => scenarios::durable(target, &programs, &load).await,
                "opens" => scenarios::opens(target, &programs, &load).await,
                other => Err(anyhow::anyhow!("unknown scenario {other}")),
            };
            let v = out.unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
            eprintln!("   {v}");
            r.insert(s.clone(), v);
        }
        results.insert(target.name().into(), Value::Object(r));
    }
    let results = Value::Object(results);
    let report = json!({
        "machine": machine(),
        "load": {
            "idle": a.idle, "members": a.members, "publishers": a.publishers, "window": a.window,
            "fanout_budget": a.fanout_budget, "pairs": a.pairs, "pair_window": a.pair_window,
            "opens": a.opens, "open_concurrency": a.open_concurrency, "size": a.size,
            "seconds": a.seconds, "warmup": a.warmup, "durability": a.durability,
        },
        "results": results,
        "ratios": ratios(&results),
    });
    println!("{}", table(&report));
    if let Some(dir) = a.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&a.out, serde_json::to_string_pretty(&report)?)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

/// The headline metrics: (scenario, JSON pointer inside it, label, higher is better).
const METRICS: &[(&str, &str, &str, bool)] = &[
    ("idle", "/server_kb_per_conn", "idle: server KB/connection", false),
    ("fanout", "/delivered_per_s", "fan-out: delivered msg/s (max)", true),
    ("fanout", "/delivery_latency/p99_ms", "fan-out: p99 ms (max rate)", false),
    ("fanout", "/server_cpu_us_per_delivery", "fan-out: server CPU µs/delivery", false),
    ("fanout", "/cpu/server_cores_busy", "fan-out: server cores busy", false),
    ("fanout", "/cpu/load_tool_cores_busy", "fan-out: load tool cores busy", false),
    ("fanout-half", "/delivered_per_s", "fan-out at half rate: delivered msg/s", true),
    ("fanout-half", "/delivery_latency/p50_ms", "fan-out at half rate: p50 ms", false),
    ("fanout-half", "/delivery_latency/p99_ms", "fan-out at half rate: p99 ms", false),
    ("fanout-half", "/delivery_latency/p999_ms", "fan-out at half rate: p999 ms", false),
    ("durable", "/acked_per_s", "1:1: acked msg/s", true),
    ("durable", "/ack_latency/p50_ms", "1:1: ack p50 ms", false),
    ("durable", "/ack_latency/p99_ms", "1:1: ack p99 ms", false),
    ("durable", "/server_cpu_us_per_message", "1:1: server CPU µs/message", false),
    ("durable", "/cpu/server_cores_busy", "1:1: server cores busy", false),
    ("opens", "/opens_per_s", "session opens/s", true),
    ("opens", "/server_cpu_us_per_open", "session open: server CPU µs", false),
];

fn ratios(results: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for peer in ["socketio", "bare"] {
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
    let targets: Vec<&str> =
        ["confab", "socketio", "bare"].into_iter().filter(|t| results.get(t).is_some()).collect();
    let mut s = format!("{:<42}", "metric");
    for t in &targets {
        s += &format!("{t:>12}");
    }
    for peer in ["socketio", "bare"] {
        if targets.contains(&"confab") && targets.contains(&peer) {
            s += &format!("{:>16}", format!("confab/{peer}"));
        }
    }
    s.push('\n');
    for (sc, p, label, _) in METRICS {
        if targets.iter().all(|t| results[t].get(*sc).is_none()) {
            continue;
        }
        s += &format!("{label:<42}");
        for t in &targets {
            s += &match results[t][sc].pointer(p).and_then(Value::as_f64) {
                Some(v) => format!("{:>12}", fmt(v)),
                None => format!("{:>12}", "-"),
            };
        }
        for peer in ["socketio", "bare"] {
            if targets.contains(&"confab") && targets.contains(&peer) {
                s += &match report["ratios"][format!("confab/{peer}")][label].as_f64() {
                    Some(v) => format!("{:>16}", format!("{v:.2}×")),
                    None => format!("{:>16}", "-"),
                };
            }
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

//! The scenarios: idle connections, room fan-out, durable 1:1 and session opens. Each
//! starts a fresh server (one process, or a cluster whose nodes the clients are spread
//! over round-robin), is bounded in count and time, and returns a JSON object.

use crate::server::{Deployment, Programs, cpu_us_of, rss_of, tcp_kernel_bytes};
use crate::wire::{self, AckBatch, Incoming, MemberAcks, Target, Ws};
use crate::ws::Opcode;
use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Connections opened at once while setting up a scenario.
pub(crate) const RAMP: usize = 128;
/// Reads without waiting that one burst may do before yielding (see `chatter`).
const MAX_REFILLS: usize = 8;
/// How long tasks may take to finish after the measured window.
const GRACE: Duration = Duration::from_secs(3);

/// Latency histograms in microseconds, sharded so a thousand tasks rarely share a lock.
pub struct Latencies(Vec<Mutex<Histogram<u64>>>);

impl Latencies {
    fn new() -> Latencies {
        Latencies((0..16).map(|_| Mutex::new(new_histogram())).collect())
    }

    fn record(&self, shard: usize, micros: u64) {
        if let Ok(mut h) = self.0[shard % self.0.len()].lock() {
            let _ = h.record(micros.clamp(1, 60_000_000));
        }
    }

    fn merged(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for shard in &self.0 {
            if let Ok(h) = shard.lock() {
                let _ = all.add(&*h);
            }
        }
        all
    }
}

pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// p50/p99/p999/max in milliseconds.
pub fn summary(h: &Histogram<u64>) -> Value {
    let ms = |q: f64| (h.value_at_quantile(q) as f64 / 1000.0 * 1000.0).round() / 1000.0;
    json!({
        "count": h.len(),
        "p50_ms": ms(0.5), "p99_ms": ms(0.99), "p999_ms": ms(0.999),
        "max_ms": (h.max() as f64 / 1000.0 * 1000.0).round() / 1000.0,
    })
}

/// Counters shared by every task of a run.
#[derive(Default)]
struct Shared {
    measuring: AtomicBool,
    measure_from_ns: AtomicU64,
    delivered: AtomicU64,
    delivered_total: AtomicU64,
    acked: AtomicU64,
    member_acks: AtomicU64,
    sent_total: AtomicU64,
    errors: AtomicU64,
    dropped: AtomicU64,
}

struct Stats {
    c: Shared,
    delivery: Latencies,
    ack: Latencies,
    /// Counted deliveries each sent message makes (room members, or 1 for a pair): once
    /// sending has stopped and all have arrived, the receivers leave without waiting
    /// out the grace period.
    per_message: u64,
}

impl Stats {
    fn new(per_message: u64) -> Arc<Stats> {
        Arc::new(Stats {
            c: Shared::default(),
            delivery: Latencies::new(),
            ack: Latencies::new(),
            per_message,
        })
    }

    /// Whether every message sent so far has been delivered to every counted receiver.
    fn all_delivered(&self) -> bool {
        self.c.delivered_total.load(Relaxed)
            >= self.c.sent_total.load(Relaxed).saturating_mul(self.per_message)
    }
}

/// How often receivers check, after the sending stopped, whether all has arrived.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// What a connection does during a run.
#[derive(Clone)]
struct Role {
    /// Publishes to this room/conversation when set.
    publish: Option<Publish>,
    /// Counts (and times) the messages it receives.
    count_deliveries: bool,
    /// How it acknowledges the messages delivered to it (already `None` where the
    /// client it plays would not ack, e.g. a 4.x client in a chat room).
    acks: MemberAcks,
    /// The room/conversation it is in (what its acks name).
    room: Arc<str>,
}

impl Role {
    fn new(
        publish: Option<Publish>,
        count_deliveries: bool,
        acks: MemberAcks,
        room: &str,
        chat_room: bool,
    ) -> Role {
        let acks = if acks.acks_in(chat_room) { acks } else { MemberAcks::None };
        Role { publish, count_deliveries, acks, room: room.into() }
    }
}

#[derive(Clone)]
struct Publish {
    room: String,
    /// Unacknowledged publishes at most.
    window: usize,
    /// Time between publishes (rate mode); none = as fast as acks allow.
    interval: Option<Duration>,
    /// When the first publish is due (rate mode): publishers start staggered across one
    /// interval, so a fixed total rate means evenly spaced messages, not every
    /// publisher's message at the same instant.
    offset: Duration,
    size: usize,
    /// Flow control on deliveries: receivers per message and how many deliveries may be
    /// outstanding (over all senders) before publishers wait — so no receiver is overrun
    /// into a 1013 close, and a server that acknowledges faster than it delivers is
    /// measured at what it delivers, not at what it queues.
    fanout: Option<(u64, u64)>,
}

async fn chatter(
    target: Target,
    mut ws: Ws,
    role: Role,
    stats: Arc<Stats>,
    shard: usize,
    stop_send: tokio::time::Instant,
    stop_all: tokio::time::Instant,
) {
    let mut inflight: VecDeque<(i64, Instant)> = VecDeque::new();
    let mut batch = AckBatch::default();
    let mut serial: i64 = 1000;
    let mut next_tick =
        tokio::time::Instant::now() + role.publish.as_ref().map_or(Duration::ZERO, |p| p.offset);
    // One timer for the task's life, moved only when the wake-up time changes: a new
    // timer per frame cost the load tool more than the frame.
    let timer = tokio::time::sleep_until(stop_all);
    tokio::pin!(timer);
    loop {
        let now = tokio::time::Instant::now();
        if now >= stop_all {
            break;
        }
        let mut wake = stop_all;
        if role.count_deliveries {
            if now < stop_send {
                wake = wake.min(stop_send);
            } else if stats.all_delivered() && (role.publish.is_none() || inflight.is_empty()) {
                break;
            } else {
                wake = wake.min(now + DRAIN_POLL);
            }
        }
        if role.acks == MemberAcks::V4x {
            match batch.due(Instant::now()) {
                Ok((from, to)) => {
                    ws.feed_text(&wire::member_ack_range(target, &role.room, from, to));
                    if stats.c.measuring.load(Relaxed) {
                        stats.c.member_acks.fetch_add(1, Relaxed);
                    }
                    if ws.flush().await.is_err() {
                        stats.c.dropped.fetch_add(1, Relaxed);
                        return;
                    }
                }
                Err(Some(at)) => wake = wake.min(tokio::time::Instant::from_std(at)),
                Err(None) => {}
            }
        }
        if let Some(p) = &role.publish {
            if now < stop_send {
                loop {
                    if inflight.len() >= p.window {
                        break;
                    }
                    if let Some((per, budget)) = p.fanout {
                        let out = stats.c.sent_total.load(Relaxed) * per;
                        if out.saturating_sub(stats.c.delivered_total.load(Relaxed)) > budget {
                            wake = wake.min(now + Duration::from_millis(1));
                            break;
                        }
                    }
                    if p.interval.is_some() && tokio::time::Instant::now() < next_tick {
                        wake = wake.min(next_tick);
                        break;
                    }
                    serial += 1;
                    let frame = wire::publish(target, &p.room, serial, &wire::payload(p.size));
                    inflight.push_back((serial, Instant::now()));
                    stats.c.sent_total.fetch_add(1, Relaxed);
                    if wire::send(&mut ws, frame).await.is_err() {
                        stats.c.dropped.fetch_add(1, Relaxed);
                        return;
                    }
                    if let Some(i) = p.interval {
                        next_tick += i;
                    }
                }
            } else if inflight.is_empty() && !role.count_deliveries {
                break;
            }
        }
        if timer.deadline() != wake {
            timer.as_mut().reset(wake);
        }
        if !ws.has_buffered_frame() {
            let filled = tokio::select! {
                r = ws.fill() => r,
                _ = &mut timer => continue,
            };
            if !matches!(filled, Ok(true)) {
                stats.c.dropped.fetch_add(1, Relaxed);
                return;
            }
        }
        // Handle everything that has already arrived in one go: one clock read, one
        // update of the shared counters and one write of our answers per burst.
        let mut burst = Burst { received_ns: wire::now_ns(), delivered: 0, acks: 0 };
        // A few refills at most, then back through the loop (and the scheduler), so a
        // connection that keeps receiving cannot starve the others of this thread.
        let mut refills = 0;
        let handled = loop {
            match ws.next_buffered() {
                Ok(Some(frame)) if frame.opcode == Opcode::Close => break Err(()),
                Ok(Some(frame)) => {
                    let answer = handle_frame(
                        target,
                        ws.text(&frame),
                        &role,
                        &stats,
                        shard,
                        &mut inflight,
                        &mut batch,
                        &mut burst,
                    );
                    if let Some(answer) = answer {
                        ws.feed_text(&answer);
                    }
                }
                Ok(None) if refills == MAX_REFILLS => break Ok(()),
                Ok(None) => match ws.try_fill() {
                    Ok(true) => refills += 1,
                    Ok(false) => break Ok(()),
                    Err(_) => break Err(()),
                },
                Err(_) => break Err(()),
            }
        };
        if burst.delivered > 0 {
            stats.c.delivered_total.fetch_add(burst.delivered, Relaxed);
            if stats.c.measuring.load(Relaxed) {
                stats.c.delivered.fetch_add(burst.delivered, Relaxed);
            }
        }
        if burst.acks > 0 && stats.c.measuring.load(Relaxed) {
            stats.c.member_acks.fetch_add(burst.acks, Relaxed);
        }
        if handled.is_err() || ws.flush().await.is_err() {
            stats.c.dropped.fetch_add(1, Relaxed);
            return;
        }
    }
    ws.close().await;
}

/// What one burst of frames has done so far.
struct Burst {
    /// When the burst was read (the receive time of each of its frames).
    received_ns: u64,
    delivered: u64,
    /// Acks it answered deliveries with.
    acks: u64,
}

/// Handles one incoming text frame ("" for others); returns the frame to answer with.
// The per-frame hot path: plain borrows of the task's state rather than a struct of them.
#[allow(clippy::too_many_arguments)]
fn handle_frame(
    target: Target,
    text: &str,
    role: &Role,
    stats: &Stats,
    shard: usize,
    inflight: &mut VecDeque<(i64, Instant)>,
    batch: &mut AckBatch,
    burst: &mut Burst,
) -> Option<String> {
    if text.is_empty() {
        return None;
    }
    let measuring = stats.c.measuring.load(Relaxed);
    match wire::classify(target, text) {
        Incoming::Ack(serial) => {
            let pos = match serial {
                Some(s) => inflight.iter().position(|(i, _)| *i == s),
                None if inflight.is_empty() => None,
                None => Some(0),
            };
            if let Some((_, at)) = pos.and_then(|p| inflight.remove(p))
                && measuring
            {
                stats.c.acked.fetch_add(1, Relaxed);
                stats.ack.record(shard, at.elapsed().as_micros() as u64);
            }
            None
        }
        Incoming::Delivery => {
            if role.count_deliveries {
                burst.delivered += 1;
                if measuring
                    && let Some(sent) = wire::sent_ns(text)
                    && sent >= stats.c.measure_from_ns.load(Relaxed)
                {
                    stats.delivery.record(shard, burst.received_ns.saturating_sub(sent) / 1000);
                }
            }
            match role.acks {
                MemberAcks::None => None,
                MemberAcks::V24 => {
                    let (mid, _) = wire::delivered_id(target, text)?;
                    burst.acks += 1;
                    Some(wire::member_ack(target, &role.room, mid))
                }
                MemberAcks::V4x => {
                    if let Some((_, ts)) = wire::delivered_id(target, text) {
                        batch.add(ts);
                    }
                    None
                }
            }
        }
        Incoming::Ping => Some("3".into()),
        Incoming::Error => {
            stats.c.errors.fetch_add(1, Relaxed);
            // An error answering one of our publishes frees its window slot.
            if let Some(at) = text.find(r#""i":"#) {
                let digits: String = text[at + 4..].chars().take_while(char::is_ascii_digit).collect();
                if let Ok(s) = digits.parse::<i64>() {
                    inflight.retain(|(i, _)| *i != s);
                }
            }
            None
        }
        Incoming::Other => None,
    }
}

/// Opens `n` sessions (and joins `room` unless it is empty), `RAMP` at a time; the
/// `k`th goes to `addrs[(first + k) % len]` (round-robin over a cluster's nodes).
async fn open_many(
    target: Target,
    addrs: Arc<Vec<SocketAddr>>,
    first: usize,
    n: usize,
    prefix: &str,
    room: Arc<String>,
    join: bool,
) -> Result<Vec<Ws>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..RAMP.min(n) {
        let (next, room, prefix, addrs) = (next.clone(), room.clone(), prefix.to_owned(), addrs.clone());
        set.spawn(async move {
            let mut out = Vec::new();
            loop {
                let k = next.fetch_add(1, Relaxed);
                if k >= n {
                    return Ok::<_, anyhow::Error>(out);
                }
                let peer = format!("{prefix}{}", first + k);
                let addr = addrs[(first + k) % addrs.len()];
                let mut ws = wire::open(target, addr, wire::source_addr(first + k), &room, &peer).await?;
                if join {
                    wire::join(target, &mut ws, &room, &peer, 2).await?;
                }
                out.push(ws);
            }
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        all.extend(r??);
    }
    Ok(all)
}

/// Sizes and timing shared by the scenarios.
#[derive(Clone, Debug)]
pub struct Load {
    /// Idle connections.
    pub idle: usize,
    /// Idle connections per load-tool worker process (each process may hold < 20,000 files).
    pub idle_per_worker: usize,
    /// Room members (receivers) in the fan-out scenario.
    pub members: usize,
    /// Publishers in the room.
    pub publishers: usize,
    /// Unacknowledged publishes per publisher.
    pub window: usize,
    /// Outstanding deliveries per member before publishers wait.
    pub fanout_budget: u64,
    /// How room members and 1:1 recipients acknowledge deliveries.
    pub member_acks: MemberAcks,
    /// Pairs in the durable 1:1 scenario.
    pub pairs: usize,
    /// Unacknowledged sends per 1:1 sender.
    pub pair_window: usize,
    /// Unacknowledged sends per 1:1 sender in the secondary `durable-burst` scenario.
    pub burst_window: usize,
    /// Session opens in the opens scenario.
    pub opens: usize,
    /// Opens in flight at once.
    pub open_concurrency: usize,
    /// Message body size in bytes.
    pub size: usize,
    /// Measured seconds per throughput scenario.
    pub seconds: f64,
    /// Unmeasured warm-up seconds before each window.
    pub warmup: f64,
    /// Devices (tagged sessions) in the failover scenario.
    pub failover_clients: usize,
    /// How long a device of the killed node keeps trying before it counts as not back.
    pub failover_bound: Duration,
}

fn window(load: &Load) -> (tokio::time::Instant, tokio::time::Instant, tokio::time::Instant) {
    let start = tokio::time::Instant::now();
    let measure = start + Duration::from_secs_f64(load.warmup);
    let stop_send = measure + Duration::from_secs_f64(load.seconds);
    (measure, stop_send, stop_send + GRACE)
}

/// What one measured window cost: seconds, server CPU µs, and the load tool's own CPU µs
/// (on a 2-core machine the two compete; the "cores busy" fields show which one bounds).
pub(crate) struct Window {
    pub(crate) secs: f64,
    pub(crate) server_cpu: u64,
    pub(crate) client_cpu: u64,
    /// A cluster's PostgreSQL and Redis (`None` for one process).
    pub(crate) backing_cpu: Option<u64>,
    /// Every process on the machine (from /proc/stat), µs.
    pub(crate) machine_cpu: u64,
}

impl Window {
    pub(crate) fn json(&self) -> Value {
        let mut v = json!({
            "server_cores_busy": self.server_cpu as f64 / 1e6 / self.secs,
            "load_tool_cores_busy": self.client_cpu as f64 / 1e6 / self.secs,
        });
        if let Some(b) = self.backing_cpu {
            v["postgres_redis_cores_busy"] = json!(b as f64 / 1e6 / self.secs);
        }
        v["machine_cores_busy"] = json!(self.machine_cpu as f64 / 1e6 / self.secs);
        v
    }

    /// The shared PostgreSQL's and Redis's CPU µs per operation, when there are.
    fn backing_per(&self, ops: u64) -> Option<f64> {
        self.backing_cpu.filter(|_| ops > 0).map(|b| b as f64 / ops as f64)
    }
}

/// CPU time every process on the machine has used so far (the busy fields of the
/// `cpu` line of /proc/stat, in 1/100 s), in microseconds.
pub(crate) fn machine_cpu_us() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else { return 0 };
    // user nice system idle iowait irq softirq steal: all but idle and iowait.
    let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let busy: u64 = f.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    busy * 10_000
}

async fn measure(
    stats: &Stats,
    server: &Deployment,
    measure: tokio::time::Instant,
    stop_send: tokio::time::Instant,
) -> Window {
    tokio::time::sleep_until(measure).await;
    stats.c.measure_from_ns.store(wire::now_ns(), Relaxed);
    stats.c.measuring.store(true, Relaxed);
    let me = std::process::id();
    let clustered = server.describe().is_some();
    let backing0 = clustered.then(|| server.backing_cpu_us());
    let (t0, cpu0, own0, all0) = (Instant::now(), server.cpu_us(), cpu_us_of(me), machine_cpu_us());
    tokio::time::sleep_until(stop_send).await;
    stats.c.measuring.store(false, Relaxed);
    Window {
        secs: t0.elapsed().as_secs_f64(),
        server_cpu: server.cpu_us().saturating_sub(cpu0),
        client_cpu: cpu_us_of(me).saturating_sub(own0),
        backing_cpu: backing0.map(|b0| server.backing_cpu_us().saturating_sub(b0)),
        machine_cpu: machine_cpu_us().saturating_sub(all0),
    }
}

/// Room fan-out: `members` receivers and `publishers` senders in one chat room. With
/// `rate` (messages/s over all publishers) it publishes at that pace, otherwise as fast
/// as acks and the delivery budget allow.
///
/// Members acknowledge what they receive as `acks` says. With 2.4 (leancloud-realtime
/// 2.4.0, which acks every non-transient message, chat rooms included) each delivery is
/// answered at once: Confab gets `ack {cid, mid}`; Socket.IO and the bare servers get a
/// frame of the same size in their own dialect (Socket.IO event `a` with no ack callback,
/// bare `k…`) that they read and drop, the cheapest handling each can do — so every
/// server reads one client frame per delivery. 4.x never acks in chat rooms, so with 4x
/// (and none) the members stay silent, the older and kinder shape.
pub async fn fanout(
    target: Target,
    programs: &Programs,
    load: &Load,
    rate: Option<f64>,
    acks: MemberAcks,
) -> Result<Value> {
    let server = Deployment::start(target, programs).await?;
    let addrs = Arc::new(server.addrs().to_vec());
    let room = match target {
        Target::Confab => {
            let mut admin = wire::open(target, server.addr(0), wire::source_addr(0), "", "admin").await?;
            let cid = wire::confab_start(&mut admin, &[], true, 2).await?;
            admin.close().await;
            cid
        }
        _ => "bench".to_owned(),
    };
    let room = Arc::new(room);
    // Members and publishers spread over the nodes, so most deliveries cross nodes.
    let members = open_many(target, addrs.clone(), 1, load.members, "m", room.clone(), true)
        .await
        .context("members")?;
    let pubs = open_many(target, addrs.clone(), 1_000_000, load.publishers, "p", room.clone(), true)
        .await
        .context("publishers")?;
    let stats = Stats::new(load.members as u64);
    let (m0, stop_send, stop_all) = window(load);
    let per = load.members as u64;
    let interval = rate.map(|r| Duration::from_secs_f64(load.publishers as f64 / r.max(1.0)));
    let mut tasks = JoinSet::new();
    for (k, ws) in members.into_iter().enumerate() {
        let role = Role::new(None, true, acks, &room, true);
        tasks.spawn(chatter(target, ws, role, stats.clone(), k, stop_send, stop_all));
    }
    for (k, ws) in pubs.into_iter().enumerate() {
        let offset = interval.map_or(Duration::ZERO, |i| i * k as u32 / load.publishers.max(1) as u32);
        let publish = Publish {
            room: room.to_string(),
            window: load.window,
            interval,
            offset,
            size: load.size,
            fanout: Some((per, per * load.fanout_budget)),
        };
        // A publisher is a member too: it acks the others' messages like the rest.
        let role = Role::new(Some(publish), false, acks, &room, true);
        tasks.spawn(chatter(target, ws, role, stats.clone(), k, stop_send, stop_all));
    }
    let w = measure(&stats, &server, m0, stop_send).await;
    let (secs, cpu) = (w.secs, w.server_cpu);
    let rss = server.rss();
    while tasks.join_next().await.is_some() {}
    let c = &stats.c;
    let delivered = c.delivered.load(Relaxed);
    Ok(json!({
        "members": load.members, "publishers": load.publishers, "window": load.window,
        "member_acks": acks.name(), "target_rate": rate, "seconds": secs,
        "published_per_s": c.acked.load(Relaxed) as f64 / secs,
        "delivered_per_s": delivered as f64 / secs,
        "member_acks_per_s": c.member_acks.load(Relaxed) as f64 / secs,
        "delivery_latency": summary(&stats.delivery.merged()),
        "ack_latency": summary(&stats.ack.merged()),
        "server_cpu_us_per_delivery": if delivered > 0 { cpu as f64 / delivered as f64 } else { 0.0 },
        "postgres_redis_cpu_us_per_delivery": w.backing_per(delivered),
        "server_rss_mb": rss as f64 / 1048576.0,
        "errors": c.errors.load(Relaxed), "dropped_connections": c.dropped.load(Relaxed),
        "cpu": w.json(),
    }))
    .map(|v| with_cluster(v, &server))
}

/// Durable 1:1: `pairs` conversations of two, both sides sending acknowledged messages
/// with `in_flight` unacknowledged (1 as a chat client does: send, wait for the server's ack,
/// send the next); recipients acknowledge deliveries as `load.member_acks` says (2.4:
/// each message at once; 4x: `fromts`/`tots` batches at most once a second; the peers
/// get frames of the same size in their own dialect, read and dropped, as in
/// [`fanout`]); senders also wait while deliveries lag by more than all their windows
/// together. Reports acknowledged and delivered messages/s, the sender's ack latency,
/// the delivery latency and the server CPU per acknowledged message. On a cluster each
/// pair's two ends sit on neighbouring nodes.
pub async fn durable(target: Target, programs: &Programs, load: &Load, in_flight: usize) -> Result<Value> {
    let server = Deployment::start(target, programs).await?;
    let mut conns = Vec::new();
    for i in 0..load.pairs {
        let room = format!("p{i}");
        let (pa, pb) = (format!("a{i}"), format!("b{i}"));
        // On a cluster the two ends sit on neighbouring nodes: every message crosses.
        let (node_a, node_b) = (server.addr(i), server.addr(i + 1));
        let mut a = wire::open(target, node_a, wire::source_addr(2 * i), &room, &pa).await?;
        let mut b = wire::open(target, node_b, wire::source_addr(2 * i + 1), &room, &pb).await?;
        let room = match target {
            Target::Confab => wire::confab_start(&mut a, &[pb.as_str()], false, 2).await?,
            _ => {
                wire::join(target, &mut a, &room, &pa, 2).await?;
                wire::join(target, &mut b, &room, &pb, 2).await?;
                room
            }
        };
        conns.push((a, room.clone()));
        conns.push((b, room));
    }
    let stats = Stats::new(1);
    let (m0, stop_send, stop_all) = window(load);
    // Senders also wait while deliveries lag by more than their windows together: a
    // server whose ack does not wait for delivery (Socket.IO's answers at once, and
    // over its Redis adapter delivery is a queue without back-pressure) would
    // otherwise take sends as fast as it can answer them while its deliveries fall
    // further behind without bound. A server that delivers as fast as it acks never
    // reaches this limit.
    let budget = (conns.len() * in_flight.max(1)) as u64;
    let mut tasks = JoinSet::new();
    for (k, (ws, room)) in conns.into_iter().enumerate() {
        let publish = Publish {
            room: room.clone(),
            window: in_flight,
            interval: None,
            offset: Duration::ZERO,
            size: load.size,
            fanout: Some((1, budget)),
        };
        let role = Role::new(Some(publish), true, load.member_acks, &room, false);
        tasks.spawn(chatter(target, ws, role, stats.clone(), k, stop_send, stop_all));
    }
    let w = measure(&stats, &server, m0, stop_send).await;
    let (secs, cpu) = (w.secs, w.server_cpu);
    while tasks.join_next().await.is_some() {}
    let c = &stats.c;
    let acked = c.acked.load(Relaxed);
    Ok(json!({
        "pairs": load.pairs, "window": in_flight, "member_acks": load.member_acks.name(), "seconds": secs,
        "durability": match (target, programs.cluster) {
            (Target::Confab, Some(_)) => "PostgreSQL fsync=on, synchronous_commit=on",
            (Target::Confab, None) => programs.durability.as_str(),
            _ => "none (memory only)",
        },
        "acked_per_s": acked as f64 / secs,
        "delivered_per_s": c.delivered.load(Relaxed) as f64 / secs,
        "member_acks_per_s": c.member_acks.load(Relaxed) as f64 / secs,
        "ack_latency": summary(&stats.ack.merged()),
        "delivery_latency": summary(&stats.delivery.merged()),
        "server_cpu_us_per_message": if acked > 0 { cpu as f64 / acked as f64 } else { 0.0 },
        "postgres_redis_cpu_us_per_message": w.backing_per(acked),
        "errors": c.errors.load(Relaxed), "dropped_connections": c.dropped.load(Relaxed),
        "cpu": w.json(),
    }))
    .map(|v| with_cluster(v, &server))
}

/// `v` with the cluster's description, when the server is one.
fn with_cluster(mut v: Value, server: &Deployment) -> Value {
    if let Some(c) = server.describe() {
        v["cluster"] = c;
    }
    v
}

/// Session opens: `opens` connect + open + drop, `open_concurrency` at a time.
pub async fn opens(target: Target, programs: &Programs, load: &Load) -> Result<Value> {
    let server = Deployment::start(target, programs).await?;
    let addrs = Arc::new(server.addrs().to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let lat = Arc::new(Latencies::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let started = Instant::now();
    let (cpu0, own0, all0) = (server.cpu_us(), cpu_us_of(std::process::id()), machine_cpu_us());
    let mut set = JoinSet::new();
    for w in 0..load.open_concurrency.min(load.opens).max(1) {
        let (next, failed, lat, n, addrs) =
            (next.clone(), failed.clone(), lat.clone(), load.opens, addrs.clone());
        set.spawn(async move {
            let mut ok = 0u64;
            while tokio::time::Instant::now() < deadline {
                let k = next.fetch_add(1, Relaxed);
                if k >= n {
                    break;
                }
                let t = Instant::now();
                let addr = addrs[k % addrs.len()];
                match wire::open(target, addr, wire::source_addr(k), "open", &format!("o{k}")).await {
                    Ok(ws) => {
                        lat.record(w, t.elapsed().as_micros() as u64);
                        ok += 1;
                        drop(ws);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Relaxed);
                    }
                }
            }
            ok
        });
    }
    let mut ok = 0;
    while let Some(r) = set.join_next().await {
        ok += r.unwrap_or(0);
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = server.cpu_us().saturating_sub(cpu0);
    let w = Window {
        secs,
        server_cpu: cpu,
        client_cpu: cpu_us_of(std::process::id()).saturating_sub(own0),
        backing_cpu: None,
        machine_cpu: machine_cpu_us().saturating_sub(all0),
    };
    Ok(json!({
        "opens": ok, "failed": failed.load(Relaxed), "concurrency": load.open_concurrency, "seconds": secs,
        "opens_per_s": ok as f64 / secs,
        "open_latency": summary(&lat.merged()),
        "server_cpu_us_per_open": if ok > 0 { cpu as f64 / ok as f64 } else { 0.0 },
        "cpu": w.json(),
    }))
}

/// Idle: `idle` open sessions held by worker processes (spread round-robin over a
/// cluster's nodes); the server's resident memory per connection (on a cluster: the
/// growth of every node's RSS, summed, over all sessions; the shared Redis's growth
/// apart).
pub async fn idle(target: Target, programs: &Programs, load: &Load) -> Result<Value> {
    let server = Deployment::start(target, programs).await?;
    // One session opened and dropped first on each node, so lazily built state is in
    // the baseline.
    for (k, &addr) in server.addrs().iter().enumerate() {
        drop(wire::open(target, addr, wire::source_addr(k), "idle", &format!("warm{k}")).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (nodes0, redis0, kernel0) = (server.node_rss(), server.redis_rss(), tcp_kernel_bytes());
    let rss0: u64 = nodes0.iter().sum();
    // CONFAB_BENCH_SMAPS=DIR keeps the server's /proc/PID/smaps before and after, to see
    // which mappings the per-connection memory lands in.
    let smaps_dir = std::env::var_os("CONFAB_BENCH_SMAPS").map(PathBuf::from);
    let keep_smaps = |when: &str| {
        if let Some(dir) = &smaps_dir {
            let _ = std::fs::create_dir_all(dir);
            let _ = std::fs::copy(
                format!("/proc/{}/smaps", server.first_pid()),
                dir.join(format!("{}-{when}.smaps", target.name())),
            );
        }
    };
    keep_smaps("before");
    let exe = std::env::current_exe()?;
    let per = load.idle_per_worker.clamp(1, 18_000);
    let addrs: Vec<String> = server.addrs().iter().map(ToString::to_string).collect();
    let addrs = addrs.join(",");
    let mut workers = Vec::new();
    let mut first = 1;
    while first <= load.idle {
        let n = per.min(load.idle + 1 - first);
        let child = Command::new(&exe)
            .args(["worker", "--target", target.name(), "--addr", &addrs])
            .args(["--first", &first.to_string(), "--count", &n.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        workers.push(child);
        first += n;
    }
    let mut ok = 0u64;
    let mut failed = 0u64;
    for w in &mut workers {
        let mut line = String::new();
        BufReader::new(w.stdout.as_mut().context("worker stdout")?).read_line(&mut line)?;
        let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
        if !line.starts_with("ready") || f.len() != 2 {
            bail!("worker said {line:?}");
        }
        ok += f[0];
        failed += f[1];
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (nodes1, redis1, kernel1) = (server.node_rss(), server.redis_rss(), tcp_kernel_bytes());
    let rss1: u64 = nodes1.iter().sum();
    keep_smaps("after");
    let client_rss: u64 = workers.iter().map(|w| rss_of(w.id())).sum();
    for w in &mut workers {
        if let Some(mut stdin) = w.stdin.take() {
            let _ = stdin.write_all(b"stop\n");
        }
    }
    for w in &mut workers {
        let _ = w.wait();
    }
    let n = ok.max(1) as f64;
    let mb = |b: &u64| *b as f64 / 1048576.0;
    let mut out = json!({
        "connections": ok, "failed": failed, "workers": workers.len(),
        "server_rss_base_mb": rss0 as f64 / 1048576.0,
        "server_rss_mb": rss1 as f64 / 1048576.0,
        "server_kb_per_conn": (rss1.saturating_sub(rss0)) as f64 / 1024.0 / n,
        "kernel_tcp_kb_per_conn_both_ends": (kernel1.saturating_sub(kernel0)) as f64 / 1024.0 / n,
        "load_tool_kb_per_conn": client_rss as f64 / 1024.0 / n,
    });
    if let Some(cluster) = server.describe() {
        out["node_rss_base_mb"] = json!(nodes0.iter().map(mb).collect::<Vec<_>>());
        out["node_rss_mb"] = json!(nodes1.iter().map(mb).collect::<Vec<_>>());
        out["redis_rss_mb"] = json!(redis1 as f64 / 1048576.0);
        out["redis_kb_per_conn"] = json!(redis1.saturating_sub(redis0) as f64 / 1024.0 / n);
        out["cluster"] = cluster;
    }
    Ok(out)
}

/// A load-tool worker process: holds `count` idle sessions (the `n`th on
/// `addrs[n % len]`) until told to stop (a line or EOF on stdin), at most 10 minutes.
pub async fn worker(target: Target, addrs: Vec<SocketAddr>, first: usize, count: usize) -> Result<()> {
    if addrs.is_empty() {
        bail!("a worker needs at least one address");
    }
    let addrs = Arc::new(addrs);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let opened = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let mut ramp = JoinSet::new();
    for _ in 0..RAMP.min(count) {
        let (next, opened, failed, stop_rx, addrs) =
            (next.clone(), opened.clone(), failed.clone(), stop_rx.clone(), addrs.clone());
        ramp.spawn(async move {
            loop {
                let k = next.fetch_add(1, Relaxed);
                if k >= count {
                    return;
                }
                let n = first + k;
                let addr = addrs[n % addrs.len()];
                match wire::open(target, addr, wire::source_addr(n), "idle", &format!("i{n}")).await {
                    Ok(ws) => {
                        opened.fetch_add(1, Relaxed);
                        tokio::spawn(hold(ws, stop_rx.clone()));
                    }
                    Err(_) => {
                        failed.fetch_add(1, Relaxed);
                    }
                }
            }
        });
    }
    while ramp.join_next().await.is_some() {}
    println!("ready {} {}", opened.load(Relaxed), failed.load(Relaxed));
    let _ = std::io::stdout().flush();
    // Wait for the parent on a blocking thread, bounded.
    let waited = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    });
    let _ = tokio::time::timeout(Duration::from_secs(600), waited).await;
    let _ = stop_tx.send(true);
    Ok(())
}

async fn hold(mut ws: Ws, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            frame = ws.next_frame() => match frame {
                // An Engine.IO ping: answer, or the peer drops us.
                Ok(Some(f)) if ws.text(&f) == "2" => {
                    if ws.send_text("3").await.is_err() {
                        break;
                    }
                }
                Ok(Some(f)) if f.opcode != Opcode::Close => {}
                _ => break,
            },
        }
    }
}

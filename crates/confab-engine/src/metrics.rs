//! Prometheus metrics, in the text exposition format (version 0.0.4), written by hand.
//!
//! One process-wide [`Metrics`] of plain atomics ([`METRICS`]): every hot-path update is
//! a few relaxed atomic adds, and nothing is kept per connection, so a connection costs
//! no memory for being counted. Labels come from fixed lists (protocol and version,
//! command, outcome, backlog mode): no client or conversation id ever becomes a label.
//! Gauges that can be read from the live state (sessions, store and broker health, the
//! hook outbox, process memory) are read when scraped instead of being kept.
//!
//! The delivery latency histogram is the one updated per delivered message (the others
//! once per message or request): every delivery of a message to at most
//! [`crate::outbound::TIMED_DELIVERIES`] recipients, about that many of a larger fan-out
//! ([`crate::SharedPush::live`]). Its buckets are sharded per thread ([`DELIVERY_SHARDS`]
//! cache-line-aligned copies, summed when scraped), so writers on different threads never
//! contend for one cache line.

use confab_types::Request;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The process's metrics: the engine and the gateway count here.
pub static METRICS: Metrics = Metrics::new();

/// The wire protocols a connection may speak (the `protocol` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// LeanCloud's v2 JSON.
    Json,
    /// Protobuf in binary frames.
    Protobuf,
    /// Protobuf as base64 text frames.
    Base64,
}

/// The `(protocol, version)` label pairs of `confab_connections` and `confab_sessions`,
/// in [`wire_index`] order: the v2 JSON protocol of the 2.x SDKs, and protobuf (binary
/// or base64 framing) at protocol version 1 (`lc.protobuf2.1`, offline messages pushed
/// at login) or 3 (`lc.protobuf2.3`, unread counts instead).
pub const WIRES: [(&str, &str); 5] =
    [("json", "2"), ("protobuf", "1"), ("protobuf", "3"), ("base64", "1"), ("base64", "3")];

/// The index in [`WIRES`] of a connection speaking `protocol` at protocol `version`.
/// Negotiation only yields version 2 for JSON and 1 or 3 for protobuf; any other
/// protobuf version counts as 3 (the unread-count behaviour every version above 1 has).
pub fn wire_index(protocol: Protocol, version: u8) -> usize {
    match (protocol, version) {
        (Protocol::Json, _) => 0,
        (Protocol::Protobuf, 1) => 1,
        (Protocol::Protobuf, _) => 2,
        (Protocol::Base64, 1) => 3,
        (Protocol::Base64, _) => 4,
    }
}

/// The `command` label of each [`Request`] variant, in [`command_index`] order.
pub const COMMANDS: [&str; 21] = [
    "heartbeat",
    "session_open",
    "session_close",
    "session_refresh",
    "session_query",
    "conv_start",
    "conv_add",
    "conv_remove",
    "conv_query",
    "conv_count",
    "conv_update",
    "conv_mute",
    "direct",
    "ack",
    "logs",
    "read",
    "conv_max_read",
    "patch",
    "member_role",
    "restrict",
    "restricted_query",
];

/// [`command_index`] of an `ack`, for an ack handled without a [`Request`].
pub const ACK_COMMAND: usize = 13;

/// The index of a request's command in [`COMMANDS`].
pub fn command_index(request: &Request) -> usize {
    match request {
        Request::Heartbeat => 0,
        Request::SessionOpen(_) => 1,
        Request::SessionClose => 2,
        Request::SessionRefresh => 3,
        Request::SessionQuery { .. } => 4,
        Request::ConvStart(_) => 5,
        Request::ConvAdd(_) => 6,
        Request::ConvRemove(_) => 7,
        Request::ConvQuery(_) => 8,
        Request::ConvCount { .. } => 9,
        Request::ConvUpdate { .. } => 10,
        Request::ConvMute { .. } => 11,
        Request::Direct(_) => 12,
        Request::Ack(_) => ACK_COMMAND,
        Request::Logs(_) => 14,
        Request::Read { .. } => 15,
        Request::ConvMaxRead { .. } => 16,
        Request::Patch { .. } => 17,
        Request::MemberRole { .. } => 18,
        Request::Restrict(_) => 19,
        Request::RestrictedQuery { .. } => 20,
    }
}

/// A histogram's bucket bounds: the upper bounds in the observed unit (microseconds for
/// latencies, messages for backlogs) and the same bounds as rendered in `le`.
#[derive(Debug)]
struct Bounds<const N: usize> {
    upper: [u64; N],
    le: [&'static str; N],
    /// How many units make one rendered unit (1e6: microseconds rendered as seconds).
    per_rendered: f64,
}

impl<const N: usize> Bounds<N> {
    /// The index of the bucket of `value` (`N`: above every bound).
    fn index(&self, value: u64) -> usize {
        self.upper.iter().position(|b| value <= *b).unwrap_or(N)
    }
}

/// Upper bounds of the commit latency buckets: an fsync on a fast disk takes well under
/// a millisecond, a batched commit a few, a struggling disk seconds.
const COMMIT_BOUNDS: Bounds<13> = Bounds {
    upper: [
        500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
        5_000_000,
    ],
    le: [
        "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
    ],
    per_rendered: 1e6,
};

/// Upper bounds (seconds) of the commit latency buckets, as rendered.
pub const COMMIT_BUCKETS: [f64; 13] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// Upper bounds of the delivery latency buckets: on one machine a live push is written
/// within a fraction of a millisecond; a busy room, a slow reader or a loaded machine
/// push it to milliseconds and beyond.
const DELIVERY_BOUNDS: Bounds<15> = Bounds {
    upper: [
        100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
        2_500_000, 5_000_000,
    ],
    le: [
        "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
        "0.5", "1", "2.5", "5",
    ],
    per_rendered: 1e6,
};

/// Upper bounds (seconds) of the delivery latency buckets, as rendered.
pub const DELIVERY_BUCKETS: [f64; 15] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// Upper bounds of the offline backlog buckets, in messages.
const BACKLOG_BOUNDS: Bounds<9> = Bounds {
    upper: [0, 1, 5, 20, 100, 500, 2_000, 10_000, 50_000],
    le: ["0", "1", "5", "20", "100", "500", "2000", "10000", "50000"],
    per_rendered: 1.0,
};

/// The `mode` label of `confab_offline_backlog_messages`: what a login was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backlog {
    /// Protocol versions 1 and 2: the messages pushed by the login's replay.
    Replayed,
    /// Protocol version 3: the unread messages announced in the login's unread counts.
    Unread,
}

const BACKLOG_MODES: [&str; 2] = ["replayed", "unread"];

/// How many per-thread copies of the delivery latency histogram there are (threads
/// beyond this many share copies).
pub const DELIVERY_SHARDS: usize = 8;

/// A histogram with fixed buckets: per-bucket counts (made cumulative when rendered),
/// the sum and the count.
#[derive(Debug)]
struct Histogram<const N: usize> {
    bounds: &'static Bounds<N>,
    /// `buckets[i]` counts observations in `(bounds[i-1], bounds[i]]`.
    buckets: [AtomicU64; N],
    /// Observations above every bound.
    over: AtomicU64,
    sum: AtomicU64,
    count: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    const fn new(bounds: &'static Bounds<N>) -> Self {
        Histogram {
            bounds,
            buckets: [const { AtomicU64::new(0) }; N],
            over: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation of `value` units.
    fn observe(&self, value: u64) {
        match self.buckets.get(self.bounds.index(value)) {
            Some(bucket) => bucket.fetch_add(1, Ordering::Relaxed),
            None => self.over.fetch_add(1, Ordering::Relaxed),
        };
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn read(&self) -> HistogramSnapshot {
        let mut counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        counts.push(self.over.load(Ordering::Relaxed));
        let total: u64 = counts.iter().sum();
        // The count is read after the buckets, so it is never below their total
        // (observations in flight land in both or show in the next scrape).
        let count = self.count.load(Ordering::Relaxed).max(total);
        let sum = self.sum.load(Ordering::Relaxed) as f64 / self.bounds.per_rendered;
        HistogramSnapshot { le: &self.bounds.le, counts, sum, count }
    }
}

/// One thread's copy of the delivery latency histogram, on cache lines of its own.
#[derive(Debug)]
#[repr(align(128))]
struct DeliveryShard {
    buckets: [AtomicU64; 15],
    over: AtomicU64,
    sum_micros: AtomicU64,
}

/// The delivery latency histogram: [`DELIVERY_SHARDS`] copies, each thread writing
/// its own; the count is the buckets' total.
#[derive(Debug)]
struct DeliveryHistogram {
    shards: [DeliveryShard; DELIVERY_SHARDS],
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's delivery histogram copy.
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % DELIVERY_SHARDS;
}

impl DeliveryHistogram {
    const fn new() -> Self {
        DeliveryHistogram {
            shards: [const {
                DeliveryShard {
                    buckets: [const { AtomicU64::new(0) }; 15],
                    over: AtomicU64::new(0),
                    sum_micros: AtomicU64::new(0),
                }
            }; DELIVERY_SHARDS],
        }
    }

    fn observe(&self, micros: u64) {
        let shard = SHARD.try_with(|s| *s).unwrap_or(0);
        let Some(shard) = self.shards.get(shard) else { return };
        match shard.buckets.get(DELIVERY_BOUNDS.index(micros)) {
            Some(bucket) => bucket.fetch_add(1, Ordering::Relaxed),
            None => shard.over.fetch_add(1, Ordering::Relaxed),
        };
        shard.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn read(&self) -> HistogramSnapshot {
        let mut counts = vec![0u64; DELIVERY_BOUNDS.upper.len() + 1];
        let mut sum = 0u64;
        for shard in &self.shards {
            for (i, b) in shard.buckets.iter().chain(std::iter::once(&shard.over)).enumerate() {
                counts[i] += b.load(Ordering::Relaxed);
            }
            sum = sum.saturating_add(shard.sum_micros.load(Ordering::Relaxed));
        }
        let count = counts.iter().sum();
        HistogramSnapshot {
            le: &DELIVERY_BOUNDS.le,
            counts,
            sum: sum as f64 / DELIVERY_BOUNDS.per_rendered,
            count,
        }
    }
}

/// A histogram as read at one moment.
#[derive(Debug, Clone)]
pub struct HistogramSnapshot {
    le: &'static [&'static str],
    /// Observations per bucket, not cumulative, in bound order; the last entry counts
    /// those above every bound (`+Inf`).
    pub counts: Vec<u64>,
    /// The sum of the observations, in the rendered unit (seconds, or messages).
    pub sum: f64,
    /// How many observations.
    pub count: u64,
}

impl HistogramSnapshot {
    /// The upper bounds as rendered in `le` (without `+Inf`).
    pub fn bounds(&self) -> &'static [&'static str] {
        self.le
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (le, n) in self.le.iter().chain(std::iter::once(&"+Inf")).zip(&self.counts) {
            cumulative += n;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}");
        }
        let labels = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{labels} {}", self.sum);
        let _ = writeln!(out, "{name}_count{labels} {}", self.count.max(cumulative));
    }
}

/// Every counter and kept gauge of the process.
#[derive(Debug)]
pub struct Metrics {
    /// Open connections by [`WIRES`] entry.
    connections: [AtomicI64; WIRES.len()],
    /// `[command][ok, error]`.
    requests: [[AtomicU64; 2]; COMMANDS.len()],
    messages_stored: AtomicU64,
    messages_delivered: AtomicU64,
    acks: AtomicU64,
    slow_consumer_closes: AtomicU64,
    /// `[ok, failed]` hook calls (blocking and notifying).
    hook_calls: [AtomicU64; 2],
    hooks_given_up: AtomicU64,
    commit: Histogram<13>,
    delivery: DeliveryHistogram,
    /// By [`Backlog`] mode.
    backlog: [Histogram<9>; 2],
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Counts a connection in `confab_connections` while it lives.
#[derive(Debug)]
#[must_use = "the connection is uncounted when this is dropped"]
pub struct OpenConnection {
    metrics: &'static Metrics,
    wire: usize,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if let Some(n) = self.metrics.connections.get(self.wire) {
            n.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// What is read from the live state when scraped rather than counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    /// Sessions open on this node, by [`WIRES`] entry of their connection.
    pub sessions: [usize; WIRES.len()],
    /// The store answered its health check.
    pub store_up: bool,
    /// The broker answered (always true on a single node, which has none).
    pub broker_up: bool,
    /// Notifying hook calls waiting in the store's outbox (`None`: not read, the store
    /// did not answer in time). At most [`OUTBOX_DEPTH_MAX`]: a count at the cap means
    /// "at least this many".
    pub hook_outbox: Option<u64>,
}

/// The most outbox rows a scrape counts (the count costs a scan of that many rows).
pub const OUTBOX_DEPTH_MAX: u64 = 100_000;

impl Metrics {
    /// All zero.
    pub const fn new() -> Metrics {
        Metrics {
            connections: [const { AtomicI64::new(0) }; WIRES.len()],
            requests: [const { [const { AtomicU64::new(0) }; 2] }; COMMANDS.len()],
            messages_stored: AtomicU64::new(0),
            messages_delivered: AtomicU64::new(0),
            acks: AtomicU64::new(0),
            slow_consumer_closes: AtomicU64::new(0),
            hook_calls: [const { AtomicU64::new(0) }; 2],
            hooks_given_up: AtomicU64::new(0),
            commit: Histogram::new(&COMMIT_BOUNDS),
            delivery: DeliveryHistogram::new(),
            backlog: [Histogram::new(&BACKLOG_BOUNDS), Histogram::new(&BACKLOG_BOUNDS)],
        }
    }

    /// Counts a connection speaking `protocol` at protocol `version` until the guard is
    /// dropped.
    pub fn connection(&'static self, protocol: Protocol, version: u8) -> OpenConnection {
        let wire = wire_index(protocol, version);
        if let Some(n) = self.connections.get(wire) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        OpenConnection { metrics: self, wire }
    }

    /// A request of command `command` (a [`command_index`]) was answered. A message
    /// send counts as `ok` once accepted: a commit that fails later is answered with
    /// its error then, and logged, but not counted again here.
    pub fn request(&self, command: usize, ok: bool) {
        if let Some(c) = self.requests.get(command) {
            c[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A message was stored (its commit succeeded).
    pub fn message_stored(&self) {
        self.messages_stored.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages stored so far.
    pub fn messages_stored(&self) -> u64 {
        self.messages_stored.load(Ordering::Relaxed)
    }

    /// A stored message was queued to a session (live or from the backlog).
    pub fn message_delivered(&self) {
        self.messages_delivered.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` messages were queued to sessions (a fan-out counts once, not per recipient:
    /// one shared counter touched per delivery is contended across cores).
    pub fn messages_delivered_n(&self, n: u64) {
        if n > 0 {
            self.messages_delivered.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Messages queued to sessions so far.
    pub fn messages_delivered(&self) -> u64 {
        self.messages_delivered.load(Ordering::Relaxed)
    }

    /// `n` delivered messages were acknowledged by their recipients.
    pub fn acked(&self, n: usize) {
        if n > 0 {
            self.acks.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Acknowledgements so far.
    pub fn acks(&self) -> u64 {
        self.acks.load(Ordering::Relaxed)
    }

    /// A connection was closed as a slow consumer.
    pub fn slow_consumer_closed(&self) {
        self.slow_consumer_closes.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections closed as slow consumers so far.
    pub fn slow_consumer_closes(&self) -> u64 {
        self.slow_consumer_closes.load(Ordering::Relaxed)
    }

    /// A call to an app's hook backend ended, answered (`ok`) or failed.
    pub fn hook_called(&self, ok: bool) {
        self.hook_calls[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
    }

    /// A notifying hook call was given up after failing for 24 hours.
    pub fn hook_given_up(&self) {
        self.hooks_given_up.fetch_add(1, Ordering::Relaxed);
    }

    /// A message's commit took `elapsed` from its append.
    pub fn commit_latency(&self, elapsed: Duration) {
        self.commit.observe(micros(elapsed));
    }

    /// A live push made at `since` ([`crate::SharedPush::timed_since`]) is being
    /// written to a recipient's socket now. One clock read and two relaxed adds on this
    /// thread's copy of the histogram.
    pub fn delivered_since(&self, since: Instant) {
        self.delivery.observe(micros(since.elapsed()));
    }

    /// A login was given a backlog of `messages`.
    pub fn backlog(&self, mode: Backlog, messages: u64) {
        self.backlog[mode as usize].observe(messages);
    }

    /// The delivery latency histogram now (seconds).
    pub fn delivery(&self) -> HistogramSnapshot {
        self.delivery.read()
    }

    /// The commit latency histogram now (seconds).
    pub fn commit(&self) -> HistogramSnapshot {
        self.commit.read()
    }

    /// Open connections now, by [`WIRES`] entry.
    pub fn connections(&self) -> [u64; WIRES.len()] {
        std::array::from_fn(|i| self.connections[i].load(Ordering::Relaxed).max(0) as u64)
    }

    /// The exposition text.
    pub fn render(&self, snapshot: Snapshot) -> String {
        let mut out = String::with_capacity(8192);
        header(
            &mut out,
            "confab_connections",
            "Open WebSocket connections by protocol and version.",
            "gauge",
        );
        for ((protocol, version), n) in WIRES.iter().zip(self.connections()) {
            let _ = writeln!(out, "confab_connections{{protocol=\"{protocol}\",version=\"{version}\"}} {n}");
        }
        header(
            &mut out,
            "confab_sessions",
            "Open client sessions on this node, by protocol and version.",
            "gauge",
        );
        for ((protocol, version), n) in WIRES.iter().zip(snapshot.sessions) {
            let _ = writeln!(out, "confab_sessions{{protocol=\"{protocol}\",version=\"{version}\"}} {n}");
        }
        header(&mut out, "confab_requests_total", "Requests answered, by command and outcome.", "counter");
        for (i, command) in COMMANDS.iter().enumerate() {
            for (j, outcome) in ["ok", "error"].iter().enumerate() {
                let n = self.requests[i][j].load(Ordering::Relaxed);
                let _ =
                    writeln!(out, "confab_requests_total{{command=\"{command}\",outcome=\"{outcome}\"}} {n}");
            }
        }
        counter(
            &mut out,
            "confab_messages_stored_total",
            "Messages committed to the store.",
            &self.messages_stored,
        );
        counter(
            &mut out,
            "confab_messages_delivered_total",
            "Stored messages queued to sessions, live or from the offline backlog.",
            &self.messages_delivered,
        );
        counter(&mut out, "confab_acks_total", "Delivered messages acknowledged by recipients.", &self.acks);
        counter(
            &mut out,
            "confab_slow_consumer_closes_total",
            "Connections closed because they did not read fast enough.",
            &self.slow_consumer_closes,
        );
        header(&mut out, "confab_hook_calls_total", "Calls to apps' hook backends, by outcome.", "counter");
        for (j, outcome) in ["ok", "failed"].iter().enumerate() {
            let n = self.hook_calls[j].load(Ordering::Relaxed);
            let _ = writeln!(out, "confab_hook_calls_total{{outcome=\"{outcome}\"}} {n}");
        }
        counter(
            &mut out,
            "confab_hook_calls_given_up_total",
            "Notifying hook calls dropped after failing for 24 hours.",
            &self.hooks_given_up,
        );
        header(
            &mut out,
            "confab_hook_outbox_depth",
            "Notifying hook calls waiting in the store's outbox (counted up to 100000).",
            "gauge",
        );
        if let Some(n) = snapshot.hook_outbox {
            let _ = writeln!(out, "confab_hook_outbox_depth {n}");
        }
        header(&mut out, "confab_commit_seconds", "Time from a message's append to its commit.", "histogram");
        self.commit.read().render(&mut out, "confab_commit_seconds", "");
        header(
            &mut out,
            "confab_delivery_seconds",
            "Time from a live message's fan-out on this node (after its commit) to its frame being written to a recipient's socket; about 64 deliveries a message are timed in larger fan-outs.",
            "histogram",
        );
        self.delivery.read().render(&mut out, "confab_delivery_seconds", "");
        header(
            &mut out,
            "confab_offline_backlog_messages",
            "Messages waiting for a client at its login: replayed (protocol 1 and 2) or announced as unread (protocol 3).",
            "histogram",
        );
        for (mode, histogram) in BACKLOG_MODES.iter().zip(&self.backlog) {
            histogram.read().render(&mut out, "confab_offline_backlog_messages", &format!("mode=\"{mode}\""));
        }
        gauge(
            &mut out,
            "confab_store_up",
            "1 while the store answers, else 0.",
            u64::from(snapshot.store_up),
        );
        gauge(
            &mut out,
            "confab_broker_up",
            "1 while the cluster's broker answers (always 1 on a single node), else 0.",
            u64::from(snapshot.broker_up),
        );
        if let Some(bytes) = resident_bytes() {
            gauge(&mut out, "confab_process_resident_bytes", "Resident memory of the process.", bytes);
        }
        header(&mut out, "confab_build_info", "The running build; the value is always 1.", "gauge");
        let version = escape_label(env!("CARGO_PKG_VERSION"));
        let _ = writeln!(out, "confab_build_info{{version=\"{version}\"}} 1");
        out
    }
}

/// A duration in whole microseconds (saturating).
fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, help, "gauge");
    let _ = writeln!(out, "{name} {value}");
}

fn counter(out: &mut String, name: &str, help: &str, value: &AtomicU64) {
    header(out, name, help, "counter");
    let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
}

/// A label value as the exposition format quotes it: `\`, `"` and newlines escaped.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The process's resident memory: `VmRSS` of `/proc/self/status` (in kB there, so no
/// page size is needed). `None` off Linux.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.trim_start_matches("VmRSS:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    fn values(lines: &[&str]) -> Vec<u64> {
        lines.iter().map(|l| l.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or(99)).collect()
    }

    #[test]
    fn the_exposition_format() {
        static M: Metrics = Metrics::new();
        let conn = M.connection(Protocol::Protobuf, 3);
        M.request(command_index(&Request::Heartbeat), true);
        M.request(COMMANDS.iter().position(|c| *c == "direct").unwrap_or(0), false);
        M.message_stored();
        M.acked(3);
        M.commit_latency(Duration::from_micros(300));
        M.commit_latency(Duration::from_millis(3));
        M.commit_latency(Duration::from_secs(60));
        let snapshot =
            Snapshot { sessions: [2, 0, 1, 0, 0], store_up: true, broker_up: false, hook_outbox: Some(7) };
        let text = M.render(snapshot);

        // Every metric has its HELP and TYPE lines, HELP first, once.
        for (name, kind) in [
            ("confab_connections", "gauge"),
            ("confab_sessions", "gauge"),
            ("confab_requests_total", "counter"),
            ("confab_messages_stored_total", "counter"),
            ("confab_messages_delivered_total", "counter"),
            ("confab_acks_total", "counter"),
            ("confab_slow_consumer_closes_total", "counter"),
            ("confab_hook_calls_total", "counter"),
            ("confab_hook_calls_given_up_total", "counter"),
            ("confab_hook_outbox_depth", "gauge"),
            ("confab_commit_seconds", "histogram"),
            ("confab_delivery_seconds", "histogram"),
            ("confab_offline_backlog_messages", "histogram"),
            ("confab_store_up", "gauge"),
            ("confab_broker_up", "gauge"),
            ("confab_build_info", "gauge"),
        ] {
            let help = format!("# HELP {name} ");
            let typ = format!("# TYPE {name} {kind}");
            assert_eq!(lines_of(&text, &help).len(), 1, "{name}: {text}");
            let h = text.find(&help).unwrap_or(usize::MAX);
            let t = text.find(&format!("{typ}\n")).unwrap_or(0);
            assert!(h < t, "{name}: HELP then TYPE");
        }
        assert!(text.contains("\nconfab_connections{protocol=\"protobuf\",version=\"3\"} 1\n"), "{text}");
        assert!(text.contains("\nconfab_connections{protocol=\"json\",version=\"2\"} 0\n"));
        assert!(text.contains("\nconfab_sessions{protocol=\"json\",version=\"2\"} 2\n"));
        assert!(text.contains("\nconfab_sessions{protocol=\"protobuf\",version=\"3\"} 1\n"));
        assert_eq!(lines_of(&text, "confab_sessions{").len(), WIRES.len());
        assert!(text.contains("\nconfab_requests_total{command=\"heartbeat\",outcome=\"ok\"} 1\n"));
        assert!(text.contains("\nconfab_requests_total{command=\"direct\",outcome=\"error\"} 1\n"));
        assert!(text.contains("\nconfab_messages_stored_total 1\n"));
        assert!(text.contains("\nconfab_acks_total 3\n"));
        assert!(text.contains("\nconfab_store_up 1\n"));
        assert!(text.contains("\nconfab_broker_up 0\n"));
        assert!(text.contains("\nconfab_hook_outbox_depth 7\n"));
        assert!(
            text.contains(&format!("\nconfab_build_info{{version=\"{}\"}} 1\n", env!("CARGO_PKG_VERSION")))
        );
        if cfg!(target_os = "linux") {
            assert!(text.contains("\n# TYPE confab_process_resident_bytes gauge\n"));
        }
        drop(conn);
        let unread = M.render(Snapshot::default());
        assert!(unread.contains("\nconfab_connections{protocol=\"protobuf\",version=\"3\"} 0\n"));
        // An outbox not read has its type but no sample.
        assert!(unread.contains("# TYPE confab_hook_outbox_depth gauge\n"));
        assert!(lines_of(&unread, "confab_hook_outbox_depth ").is_empty());

        // Buckets: cumulative, in order, ending with +Inf equal to the count.
        let buckets = lines_of(&text, "confab_commit_seconds_bucket");
        assert_eq!(buckets.len(), COMMIT_BUCKETS.len() + 1);
        let counts = values(&buckets);
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "cumulative: {counts:?}");
        assert_eq!(counts[0], 1, "300 µs is under 0.5 ms");
        assert_eq!(buckets[3], "confab_commit_seconds_bucket{le=\"0.005\"} 2");
        assert_eq!(buckets[12], "confab_commit_seconds_bucket{le=\"5\"} 2");
        assert_eq!(buckets[13], "confab_commit_seconds_bucket{le=\"+Inf\"} 3");
        assert!(text.contains("\nconfab_commit_seconds_count 3\n"));
        assert!(text.contains("\nconfab_commit_seconds_sum 60.0033\n"), "{text}");

        // Every sample line is `name{labels} value` with a number.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap_or("");
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(line.starts_with("confab_"), "{line}");
        }
    }

    #[test]
    fn the_rendered_bounds_are_the_documented_ones() {
        for (le, b) in COMMIT_BOUNDS.le.iter().zip(COMMIT_BUCKETS) {
            assert_eq!(le.parse::<f64>().ok(), Some(b));
        }
        for (le, b) in DELIVERY_BOUNDS.le.iter().zip(DELIVERY_BUCKETS) {
            assert_eq!(le.parse::<f64>().ok(), Some(b));
        }
        for (upper, b) in COMMIT_BOUNDS.upper.iter().zip(COMMIT_BUCKETS) {
            assert_eq!(*upper as f64 / 1e6, b);
        }
        for (upper, b) in DELIVERY_BOUNDS.upper.iter().zip(DELIVERY_BUCKETS) {
            assert_eq!(*upper as f64 / 1e6, b);
        }
        for (upper, le) in BACKLOG_BOUNDS.upper.iter().zip(BACKLOG_BOUNDS.le) {
            assert_eq!(upper.to_string(), le);
        }
    }

    #[test]
    fn delivery_latency_is_summed_over_the_threads_copies() {
        static M: Metrics = Metrics::new();
        // More threads than copies: some share one, and nothing is lost.
        let threads: Vec<_> = (0..DELIVERY_SHARDS + 3)
            .map(|_| {
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        M.delivery.observe(2_000_000);
                    }
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().is_ok());
        }
        M.delivery.observe(60_000_000);
        M.delivery.observe(90);
        // Through the clock: one more observation, of whatever it took.
        M.delivered_since(Instant::now());
        let snapshot = M.delivery();
        let n = (DELIVERY_SHARDS as u64 + 3) * 100;
        assert_eq!(snapshot.count, n + 3);
        assert_eq!(snapshot.counts.len(), DELIVERY_BUCKETS.len() + 1);
        assert_eq!(snapshot.counts[13], n, "2 s is in the 2.5 s bucket: {:?}", snapshot.counts);
        assert_eq!(snapshot.counts[15], 1, "60 s is above every bound");
        assert!(snapshot.counts[0] >= 1, "90 µs is in the first bucket");
        assert!(snapshot.sum >= 60.0 + 2.0 * n as f64, "{}", snapshot.sum);
        let text = M.render(Snapshot::default());
        let buckets = lines_of(&text, "confab_delivery_seconds_bucket");
        assert_eq!(buckets.len(), DELIVERY_BUCKETS.len() + 1);
        assert!(buckets[0].starts_with("confab_delivery_seconds_bucket{le=\"0.0001\"} "), "{}", buckets[0]);
        assert_eq!(buckets[15], format!("confab_delivery_seconds_bucket{{le=\"+Inf\"}} {}", n + 3));
        assert!(text.contains(&format!("\nconfab_delivery_seconds_count {}\n", n + 3)));
    }

    #[test]
    fn backlogs_are_counted_by_mode() {
        static M: Metrics = Metrics::new();
        M.backlog(Backlog::Replayed, 0);
        M.backlog(Backlog::Replayed, 30);
        M.backlog(Backlog::Unread, 100_000);
        let text = M.render(Snapshot::default());
        let replayed = lines_of(&text, "confab_offline_backlog_messages_bucket{mode=\"replayed\"");
        assert_eq!(replayed.len(), BACKLOG_BOUNDS.upper.len() + 1);
        assert_eq!(replayed[0], "confab_offline_backlog_messages_bucket{mode=\"replayed\",le=\"0\"} 1");
        assert_eq!(replayed[3], "confab_offline_backlog_messages_bucket{mode=\"replayed\",le=\"20\"} 1");
        assert_eq!(replayed[4], "confab_offline_backlog_messages_bucket{mode=\"replayed\",le=\"100\"} 2");
        assert!(text.contains("\nconfab_offline_backlog_messages_sum{mode=\"replayed\"} 30\n"), "{text}");
        assert!(text.contains("\nconfab_offline_backlog_messages_count{mode=\"replayed\"} 2\n"));
        assert!(text.contains("\nconfab_offline_backlog_messages_bucket{mode=\"unread\",le=\"50000\"} 0\n"));
        assert!(text.contains("\nconfab_offline_backlog_messages_bucket{mode=\"unread\",le=\"+Inf\"} 1\n"));
        assert!(text.contains("\nconfab_offline_backlog_messages_count{mode=\"unread\"} 1\n"));
    }

    #[test]
    fn every_wire_has_its_own_series() {
        let mut seen = std::collections::HashSet::new();
        for protocol in [Protocol::Json, Protocol::Protobuf, Protocol::Base64] {
            for version in [1, 2, 3] {
                seen.insert(wire_index(protocol, version));
            }
        }
        assert_eq!(seen.len(), WIRES.len());
        assert_eq!(WIRES[wire_index(Protocol::Json, 2)], ("json", "2"));
        assert_eq!(WIRES[wire_index(Protocol::Protobuf, 1)], ("protobuf", "1"));
        assert_eq!(WIRES[wire_index(Protocol::Base64, 3)], ("base64", "3"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("line\nbreak"), "line\\nbreak");
        assert_eq!(escape_label("1.2.3"), "1.2.3");
    }
}

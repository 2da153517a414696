//! Prometheus metrics, in the text exposition format (version 0.0.4), written by hand.
//!
//! One process-wide [`Metrics`] of plain atomics ([`METRICS`]): every hot-path update is
//! one relaxed atomic add, and nothing is kept per connection, so a connection costs no
//! memory for being counted. Labels come from fixed lists (protocol, command, outcome):
//! no client or conversation id ever becomes a label. Gauges that can be read from the
//! live state (sessions, process memory) are read when scraped instead of being kept.

use confab_types::Request;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

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

const PROTOCOLS: [&str; 3] = ["json", "protobuf", "base64"];

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
        Request::Ack(_) => 13,
        Request::Logs(_) => 14,
        Request::Read { .. } => 15,
        Request::ConvMaxRead { .. } => 16,
        Request::Patch { .. } => 17,
        Request::MemberRole { .. } => 18,
        Request::Restrict(_) => 19,
        Request::RestrictedQuery { .. } => 20,
    }
}

/// Upper bounds (seconds) of the commit latency buckets: an fsync on a fast disk takes
/// well under a millisecond, a batched commit a few, a struggling disk seconds.
pub const COMMIT_BUCKETS: [f64; N] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// How many commit latency buckets (besides `+Inf`).
const N: usize = 13;

/// A histogram with fixed buckets: per-bucket counts (made cumulative when rendered),
/// the sum in microseconds and the count.
#[derive(Debug)]
pub struct Histogram {
    bounds: [f64; N],
    /// `buckets[i]` counts observations in `(bounds[i-1], bounds[i]]`; the last one
    /// those above every bound.
    buckets: [AtomicU64; N + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    const fn new(bounds: [f64; N]) -> Self {
        Histogram {
            bounds,
            buckets: [const { AtomicU64::new(0) }; N + 1],
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let i = self.bounds.iter().position(|b| secs <= *b).unwrap_or(N);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, help, "histogram");
        let mut cumulative = 0u64;
        for (i, bound) in self.bounds.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.buckets[N].load(Ordering::Relaxed);
        // The count is read after the buckets, so it is never below the +Inf bucket
        // (observations in flight land in both or show in the next scrape).
        let count = self.count.load(Ordering::Relaxed).max(cumulative);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Every counter and kept gauge of the process.
#[derive(Debug)]
pub struct Metrics {
    connections: [AtomicI64; 3],
    /// `[command][ok, error]`.
    requests: [[AtomicU64; 2]; COMMANDS.len()],
    messages_stored: AtomicU64,
    messages_delivered: AtomicU64,
    acks: AtomicU64,
    slow_consumer_closes: AtomicU64,
    /// `[ok, failed]` hook calls (blocking and notifying).
    hook_calls: [AtomicU64; 2],
    hooks_given_up: AtomicU64,
    commit: Histogram,
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
    protocol: Protocol,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics.connections[self.protocol as usize].fetch_sub(1, Ordering::Relaxed);
    }
}

/// What is read from the live state when scraped rather than counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    /// Sessions open on this node.
    pub sessions: usize,
}

impl Metrics {
    /// All zero.
    pub const fn new() -> Metrics {
        Metrics {
            connections: [const { AtomicI64::new(0) }; 3],
            requests: [const { [const { AtomicU64::new(0) }; 2] }; COMMANDS.len()],
            messages_stored: AtomicU64::new(0),
            messages_delivered: AtomicU64::new(0),
            acks: AtomicU64::new(0),
            slow_consumer_closes: AtomicU64::new(0),
            hook_calls: [const { AtomicU64::new(0) }; 2],
            hooks_given_up: AtomicU64::new(0),
            commit: Histogram::new(COMMIT_BUCKETS),
        }
    }

    /// Counts a connection speaking `protocol` until the guard is dropped.
    pub fn connection(&'static self, protocol: Protocol) -> OpenConnection {
        self.connections[protocol as usize].fetch_add(1, Ordering::Relaxed);
        OpenConnection { metrics: self, protocol }
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

    /// A stored message was queued to a session (live or from the backlog).
    pub fn message_delivered(&self) {
        self.messages_delivered.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` delivered messages were acknowledged by their recipients.
    pub fn acked(&self, n: usize) {
        if n > 0 {
            self.acks.fetch_add(n as u64, Ordering::Relaxed);
        }
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
        self.commit.observe(elapsed);
    }

    /// The exposition text.
    pub fn render(&self, snapshot: Snapshot) -> String {
        let mut out = String::with_capacity(4096);
        header(&mut out, "confab_connections", "Open WebSocket connections by protocol.", "gauge");
        for (i, protocol) in PROTOCOLS.iter().enumerate() {
            let n = self.connections[i].load(Ordering::Relaxed).max(0);
            let _ = writeln!(out, "confab_connections{{protocol=\"{protocol}\"}} {n}");
        }
        gauge(&mut out, "confab_sessions", "Open client sessions on this node.", snapshot.sessions as u64);
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
        self.commit.render(&mut out, "confab_commit_seconds", "Time from a message's append to its commit.");
        if let Some(bytes) = resident_bytes() {
            gauge(&mut out, "confab_process_resident_bytes", "Resident memory of the process.", bytes);
        }
        header(&mut out, "confab_build_info", "The running build; the value is always 1.", "gauge");
        let version = escape_label(env!("CARGO_PKG_VERSION"));
        let _ = writeln!(out, "confab_build_info{{version=\"{version}\"}} 1");
        out
    }
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
fn resident_bytes() -> Option<u64> {
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

    #[test]
    fn the_exposition_format() {
        static M: Metrics = Metrics::new();
        let conn = M.connection(Protocol::Protobuf);
        M.request(command_index(&Request::Heartbeat), true);
        M.request(COMMANDS.iter().position(|c| *c == "direct").unwrap_or(0), false);
        M.message_stored();
        M.acked(3);
        M.commit_latency(Duration::from_micros(300));
        M.commit_latency(Duration::from_millis(3));
        M.commit_latency(Duration::from_secs(60));
        let text = M.render(Snapshot { sessions: 2 });

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
            ("confab_commit_seconds", "histogram"),
            ("confab_build_info", "gauge"),
        ] {
            let help = format!("# HELP {name} ");
            let typ = format!("# TYPE {name} {kind}");
            assert_eq!(lines_of(&text, &help).len(), 1, "{name}: {text}");
            let h = text.find(&help).unwrap_or(usize::MAX);
            let t = text.find(&format!("{typ}\n")).unwrap_or(0);
            assert!(h < t, "{name}: HELP then TYPE");
        }
        assert!(text.contains("\nconfab_connections{protocol=\"protobuf\"} 1\n"), "{text}");
        assert!(text.contains("\nconfab_connections{protocol=\"json\"} 0\n"));
        assert!(text.contains("\nconfab_sessions 2\n"));
        assert!(text.contains("\nconfab_requests_total{command=\"heartbeat\",outcome=\"ok\"} 1\n"));
        assert!(text.contains("\nconfab_requests_total{command=\"direct\",outcome=\"error\"} 1\n"));
        assert!(text.contains("\nconfab_messages_stored_total 1\n"));
        assert!(text.contains("\nconfab_acks_total 3\n"));
        assert!(
            text.contains(&format!("\nconfab_build_info{{version=\"{}\"}} 1\n", env!("CARGO_PKG_VERSION")))
        );
        if cfg!(target_os = "linux") {
            assert!(text.contains("\n# TYPE confab_process_resident_bytes gauge\n"));
        }
        drop(conn);
        assert!(M.render(Snapshot::default()).contains("\nconfab_connections{protocol=\"protobuf\"} 0\n"));

        // Buckets: cumulative, in order, ending with +Inf equal to the count.
        let buckets = lines_of(&text, "confab_commit_seconds_bucket");
        assert_eq!(buckets.len(), COMMIT_BUCKETS.len() + 1);
        let counts: Vec<u64> =
            buckets.iter().map(|l| l.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or(99)).collect();
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
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("line\nbreak"), "line\\nbreak");
        assert_eq!(escape_label("1.2.3"), "1.2.3");
    }
}

//! A measurement, not a check (ignored by default): the store's share of the durable 1:1
//! benchmark. `pairs` senders each keep one message in flight; once a message is
//! committed its sender passes it and its recipient acknowledges it (two delivery
//! cursors), then the next one is sent — what the engine asks of the store per message.
//!
//! `cargo test -p confab-store-sqlite --release --test durable_shape -- --ignored --nocapture`
//! (`CONFAB_SHAPE_PAIRS`, default 200; `CONFAB_SHAPE_SECS`, default 5). Count the fsyncs
//! with `strace -f -c -e trace=fdatasync,fsync` on the test binary.
#![allow(clippy::unwrap_used, missing_docs)]

use confab_engine::ports::{ConvKind, ConversationRecord, Store, StoredMessage};
use confab_store_sqlite::{Durability, SqliteStore};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// This process's user + system CPU time (Linux, 100 ticks per second).
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; see the file's documentation"]
async fn durable_one_to_one_shape() {
    let pairs = env_u64("CONFAB_SHAPE_PAIRS", 200);
    let secs = env_u64("CONFAB_SHAPE_SECS", 5);
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path(), Durability::Full).unwrap());
    for p in 0..pairs {
        let record = ConversationRecord {
            app: "a".into(),
            id: format!("c{p}"),
            kind: ConvKind::Normal,
            creator: format!("s{p}"),
            members: vec![format!("s{p}"), format!("r{p}")],
            muted: Vec::new(),
            managers: Vec::new(),
            shut_up: Vec::new(),
            blocked: Vec::new(),
            expires_at: None,
            attrs: serde_json::Map::new(),
            unique_key: None,
            created_at: 1,
            updated_at: 1,
            last_message: None,
        };
        store.create_conversation(record).await.unwrap();
    }
    let sent = Arc::new(AtomicU64::new(0));
    let (start, cpu0) = (Instant::now(), cpu());
    let end = start + Duration::from_secs(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..pairs {
        let (store, sent) = (store.clone(), sent.clone());
        tasks.spawn(async move {
            let (cid, sender, recipient) = (format!("c{p}"), format!("s{p}"), format!("r{p}"));
            let mut ts = 1;
            while Instant::now() < end {
                let message = StoredMessage {
                    app: "a".into(),
                    cid: cid.clone(),
                    id: format!("m{p}-{ts}"),
                    ts,
                    from: sender.clone(),
                    data: "{\"_lctype\":-1,\"_lctext\":\"hello there\"}".into(),
                    receipt: false,
                    patched_at: None,
                    binary: false,
                    mentions: confab_types::Mentions::default(),
                    recipients: None,
                };
                store.append_message(message).await.unwrap();
                store.save_cursor("a", &sender, &cid, ts);
                store.save_cursor("a", &recipient, &cid, ts);
                sent.fetch_add(1, Ordering::Relaxed);
                ts += 1;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let (elapsed, cpu) = (start.elapsed(), cpu() - cpu0);
    store.flush().await.unwrap();
    let n = sent.load(Ordering::Relaxed);
    eprintln!(
        "durable shape: {pairs} pairs, {n} messages in {elapsed:.2?}: {:.0} msg/s, {:.1} µs CPU per message",
        n as f64 / elapsed.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / n as f64
    );
}

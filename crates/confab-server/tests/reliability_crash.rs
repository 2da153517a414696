//! Crash under load: publishers send acknowledged messages while the server is killed
//! with SIGKILL at random moments and restarted on the same data directory, over and
//! over. Afterwards every acknowledged message is in the history exactly once and has
//! reached every member at least once — exactly once after de-duplication by message id —
//! and at most [`MAX_DELIVERIES_PER_MESSAGE`] times on average before it: a kill may
//! redeliver what was acknowledged just before it, not the whole backlog again (2.4.0
//! does not de-duplicate, its users would see every redelivery).
//!
//! `CONFAB_CRASH_CYCLES` (default 20) sets the number of kills, `CONFAB_CRASH_SEED` the
//! random kill moments (printed, so a failure can be replayed).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::{APP, Server, Start, create};
use confab_testkit::{Client, ClientError};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

const ARGS: &[&str] = &["--app", "test-app:test-key:test-master"];
const PUBLISHERS: [&str; 2] = ["alice", "bob"];
const RECEIVERS: [&str; 2] = ["carol", "dave"];
/// Sends per publisher and cycle at most (the kill usually comes first).
const MAX_PER_CYCLE: usize = 3000;
/// Unacknowledged sends per publisher.
const WINDOW: usize = 8;
/// Deliveries per distinct message a receiver may see, redeliveries after kills included.
const MAX_DELIVERIES_PER_MESSAGE: f64 = 1.5;
/// The same on a cluster (`CONFAB_TEST_STORE=cluster`, every node killed at once): each
/// node buffers the cursors of its own clients, and a client comes back through any
/// node, so a kill loses a little more cursor progress.
const MAX_DELIVERIES_PER_MESSAGE_CLUSTER: f64 = 2.0;

type Log = Arc<Mutex<Vec<(String, String)>>>;
/// Deliveries: (id, body, when it arrived).
type Got = Arc<Mutex<Vec<(String, String, Instant)>>>;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// xorshift64*: reproducible kill moments from a printed seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Sends numbered messages with `WINDOW` in flight until the connection dies; records
/// every acknowledged (uid, body). Acks the messages it receives, like an SDK. Never
/// re-sends: a message whose ack was lost may or may not be stored, and is not counted.
async fn publish(ws: String, me: &'static str, cid: String, cycle: u64, acked: Log) {
    let Ok(mut c) = Client::open(&ws, APP, me, json!({})).await else { return };
    let mut pending: HashMap<i64, String> = HashMap::new();
    let mut n = 0;
    loop {
        while pending.len() < WINDOW && n < MAX_PER_CYCLE {
            let body = format!("{me}-{cycle}-{n}");
            let i = 100 + n as i64;
            if c.send(&json!({"cmd": "direct", "cid": cid, "msg": body, "i": i})).await.is_err() {
                return;
            }
            pending.insert(i, body);
            n += 1;
        }
        if pending.is_empty() {
            return;
        }
        let frame = match c
            .wait_for("ack or direct", |f| f["cmd"] == "ack" || f["cmd"] == "direct" || f["cmd"] == "error")
            .await
        {
            Ok(f) => f,
            Err(_) => return,
        };
        match frame["cmd"].as_str() {
            Some("ack") => {
                let body = pending.remove(&frame["i"].as_i64().unwrap()).expect("an ack for a pending send");
                acked.lock().unwrap().push((frame["uid"].as_str().unwrap().to_owned(), body));
            }
            Some("direct") => {
                let _ = c.send(&json!({"cmd": "ack", "cid": frame["cid"], "mid": frame["id"]})).await;
            }
            _ => panic!("{me} got an error: {frame}"),
        }
    }
}

/// Receives and acknowledges messages until the connection dies, or — with `quiet` —
/// until nothing arrives for that long. Records every delivery, duplicates included.
async fn receive(ws: String, me: &'static str, got: Got, quiet: Option<Duration>) {
    let Ok(mut c) = Client::open(&ws, APP, me, json!({})).await else { return };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while tokio::time::Instant::now() < deadline {
        match c
            .wait_for_within("direct", quiet.unwrap_or(Duration::from_secs(1)), |f| f["cmd"] == "direct")
            .await
        {
            Ok(d) => {
                let (id, body) =
                    (d["id"].as_str().unwrap().to_owned(), d["msg"].as_str().unwrap().to_owned());
                got.lock().unwrap().push((id, body, Instant::now()));
                let _ = c.send(&json!({"cmd": "ack", "cid": d["cid"], "mid": d["id"]})).await;
            }
            Err(ClientError::Timeout(_)) if quiet.is_none() => {}
            Err(_) => return,
        }
    }
}

/// The whole history, oldest first: (id, body).
async fn history(c: &mut Client, cid: &str) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = Vec::new();
    let mut anchor: Option<(Value, Value)> = None;
    for _ in 0..10_000 {
        let mut q = json!({"cmd": "logs", "cid": cid, "limit": 1000});
        if let Some((t, mid)) = &anchor {
            q["t"] = t.clone();
            q["mid"] = mid.clone();
        }
        let r = c.request(q).await.unwrap();
        let logs = r["logs"].as_array().unwrap_or_else(|| panic!("logs reply {r}"));
        if logs.is_empty() {
            break;
        }
        anchor = Some((logs[0]["timestamp"].clone(), logs[0]["msgId"].clone()));
        let page: Vec<(String, String)> = logs
            .iter()
            .map(|l| (l["msgId"].as_str().unwrap().to_owned(), l["data"].as_str().unwrap().to_owned()))
            .collect();
        all.splice(0..0, page);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_repeated_sigkill_under_load() {
    let cycles = env_u64("CONFAB_CRASH_CYCLES", 20);
    let seed = env_u64(
        "CONFAB_CRASH_SEED",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1,
    );
    eprintln!("crash test: {cycles} cycles, CONFAB_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let cid = {
        let server = Server::start_with(dir.path(), ARGS);
        let mut alice = server.open("alice").await;
        create(&mut alice, &["bob", "carol", "dave"]).await
    };
    let acked: Log = Arc::default();
    let received: HashMap<&str, Got> = RECEIVERS.iter().map(|r| (*r, Got::default())).collect();
    let mut acked_per_cycle = Vec::new();
    let mut kills = Vec::new();
    for cycle in 0..cycles {
        let mut server = Server::start_with(dir.path(), ARGS);
        let before = acked.lock().unwrap().len();
        let mut tasks = JoinSet::new();
        for r in RECEIVERS {
            tasks.spawn(receive(server.ws.clone(), r, received[r].clone(), None));
        }
        for p in PUBLISHERS {
            tasks.spawn(publish(server.ws.clone(), p, cid.clone(), cycle, acked.clone()));
        }
        // Kill at a random moment 20–520 ms into the load: during the ramp, mid-commit,
        // between a commit and its ack, while offline backlogs are replayed, …
        tokio::time::sleep(Duration::from_millis(20 + rng.next() % 500)).await;
        kills.push(Instant::now());
        server.kill();
        let all_done = async { while tasks.join_next().await.is_some() {} };
        tokio::time::timeout(Duration::from_secs(60), all_done).await.expect("clients notice the kill");
        acked_per_cycle.push(acked.lock().unwrap().len() - before);
    }

    // The last restart: receivers collect what they have not acknowledged yet.
    let server = Server::start_with(dir.path(), ARGS);
    let mut tasks = JoinSet::new();
    for r in RECEIVERS {
        tasks.spawn(receive(server.ws.clone(), r, received[r].clone(), Some(Duration::from_secs(3))));
    }
    while tasks.join_next().await.is_some() {}
    let mut alice = server.open("alice").await;
    let history = history(&mut alice, &cid).await;

    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "crash test: {} acknowledged, {} in history, acked per cycle {acked_per_cycle:?}",
        acked.len(),
        history.len()
    );
    let fifth = acked_per_cycle.len().div_ceil(5).max(1);
    let mean = |s: &[usize]| s.iter().sum::<usize>() as f64 / s.len().max(1) as f64;
    eprintln!(
        "crash test: acked per cycle: mean {:.0}, first fifth {:.0}, last fifth {:.0}",
        mean(&acked_per_cycle),
        mean(&acked_per_cycle[..fifth.min(acked_per_cycle.len())]),
        mean(&acked_per_cycle[acked_per_cycle.len().saturating_sub(fifth)..]),
    );
    assert!(acked.len() >= cycles as usize, "too little load to test anything: {acked_per_cycle:?}");

    // History: unique ids, each body stored once, every acknowledged message in it.
    let hist_ids: HashMap<&str, &str> = history.iter().map(|(i, b)| (i.as_str(), b.as_str())).collect();
    assert_eq!(hist_ids.len(), history.len(), "a message id appears twice in the history");
    let bodies: HashSet<&str> = history.iter().map(|(_, b)| b.as_str()).collect();
    assert_eq!(bodies.len(), history.len(), "a message was stored twice");
    for (uid, body) in &acked {
        assert_eq!(hist_ids.get(uid.as_str()), Some(&body.as_str()), "acknowledged {uid} ({body}) lost");
    }

    // Every member got every stored (so every acknowledged) message at least once, and
    // after de-duplication by id each exactly once, with its body.
    for r in RECEIVERS {
        let got = received[r].lock().unwrap().clone();
        let mut by_id: HashMap<&str, &str> = HashMap::new();
        // How long before the next kill each redelivered message had first arrived.
        let mut first: HashMap<&str, Instant> = HashMap::new();
        let mut ages: Vec<Duration> = Vec::new();
        for (id, body, at) in &got {
            let prev = by_id.insert(id.as_str(), body.as_str());
            assert!(prev.is_none_or(|p| p == body), "{r}: {id} arrived with two bodies");
            match first.get(id.as_str()) {
                None => {
                    first.insert(id.as_str(), *at);
                }
                Some(t0) => {
                    let kill = kills.iter().find(|k| *k >= t0).copied().unwrap_or(*at);
                    ages.push(kill - *t0);
                }
            }
        }
        ages.sort();
        if let Some(max) = ages.last() {
            eprintln!(
                "crash test: {r}: {} redeliveries, first arrived before the kill: median {:?}, max {max:?}",
                ages.len(),
                ages[ages.len() / 2]
            );
        }
        let distinct_bodies: HashSet<&str> = by_id.values().copied().collect();
        assert_eq!(distinct_bodies.len(), by_id.len(), "{r}: one message arrived under two ids");
        for (uid, body) in &acked {
            assert!(by_id.contains_key(uid.as_str()), "{r} never got acknowledged {uid} ({body})");
        }
        for (id, _) in &history {
            assert!(by_id.contains_key(id.as_str()), "{r} never got stored message {id}");
        }
        assert!(
            by_id.keys().all(|id| hist_ids.contains_key(id)),
            "{r} got a message that is not in the history"
        );
        let per_message = got.len() as f64 / by_id.len().max(1) as f64;
        eprintln!(
            "crash test: {r} received {} deliveries, {} distinct: {per_message:.2} per message",
            got.len(),
            by_id.len()
        );
        let max = if confab_testkit::server::cluster_mode() {
            MAX_DELIVERIES_PER_MESSAGE_CLUSTER
        } else {
            MAX_DELIVERIES_PER_MESSAGE
        };
        assert!(
            per_message <= max,
            "{r} got each message {per_message:.2} times on average (CONFAB_CRASH_SEED={seed}): \
             kills redeliver more than what was acknowledged just before them"
        );
    }
}

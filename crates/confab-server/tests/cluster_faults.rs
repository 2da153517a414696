//! Faults of a three-node cluster under load, against real servers: the nodes, a
//! throw-away PostgreSQL and a throw-away Redis. Senders keep one message in flight
//! each, receivers on other nodes ack every message, and meanwhile a node is killed
//! (SIGKILL) or Redis is restarted. Afterwards every acknowledged message is in its
//! conversation's history exactly once and reached its receiver (after de-duplication by
//! id); a client whose node died comes back through another.
#![allow(clippy::unwrap_used)]

mod common;

use common::{APP, bin};
use confab_testkit::redis::TempRedis;
use confab_testkit::{Client, ClientError, Server, TempPostgres};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Messages each sender sends.
const PER_SENDER: usize = 90;
/// Senders (one conversation each, sender and receiver on different nodes).
const PAIRS: usize = 3;

/// What a pair's sender had acknowledged and its receiver got.
#[derive(Default)]
struct Tally {
    acked: HashSet<String>,
    received: Vec<String>,
    /// Sends tried again after a broken connection (the first may have been stored).
    retried: usize,
}

/// Opens `peer` on the first node of `urls` that accepts it, starting at `first`.
async fn open_anywhere(urls: &[String], first: usize, peer: &str) -> Client {
    for attempt in 0..200 {
        let url = &urls[(first + attempt) % urls.len()];
        if let Ok(client) = Client::open(url, APP, peer, json!({})).await {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{peer} could not log in on any node");
}

/// Sends `PER_SENDER` messages one at a time; a send whose connection broke is sent
/// again with the same dedupe token through another node, so it is stored once.
async fn sender(urls: Arc<Vec<String>>, node: usize, peer: String, cid: String, tally: Arc<Mutex<Tally>>) {
    let mut client = open_anywhere(&urls, node, &peer).await;
    let mut n = 0;
    while n < PER_SENDER {
        let frame =
            json!({"cmd": "direct", "cid": cid, "msg": format!("{peer} {n}"), "dt": format!("{peer}-{n}")});
        match client.request(frame).await {
            Ok(ack) if ack["cmd"] == "ack" => {
                tally.lock().unwrap().acked.insert(ack["uid"].as_str().unwrap().to_owned());
                n += 1;
            }
            // Not acknowledged (the store refused, or the node went away): try again.
            Ok(_) | Err(_) => {
                tally.lock().unwrap().retried += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                client = open_anywhere(&urls, node + 1, &peer).await;
            }
        }
    }
}

/// Acks every message of `cid` until told to stop; comes back through another node
/// when its own goes away (the offline backlog brings what it missed).
async fn receiver(
    urls: Arc<Vec<String>>,
    node: usize,
    peer: String,
    cid: String,
    tally: Arc<Mutex<Tally>>,
    done: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut client = open_anywhere(&urls, node, &peer).await;
    let is_message = |f: &Value| f["cmd"] == "direct";
    loop {
        match client.wait_for_within("a message", Duration::from_millis(200), is_message).await {
            Ok(f) => {
                let id = f["id"].as_str().unwrap().to_owned();
                tally.lock().unwrap().received.push(id.clone());
                let _ = client.send(&json!({"cmd": "ack", "cid": cid, "mid": id})).await;
            }
            Err(ClientError::Timeout(_)) => {
                if done.load(std::sync::atomic::Ordering::Acquire) {
                    return;
                }
            }
            // Its node went away: log in through another.
            Err(_) => client = open_anywhere(&urls, node + 1, &peer).await,
        }
    }
}

/// Runs the pairs against `server`, calling `fault` once a third of the messages are
/// acknowledged, and checks that nothing acknowledged was lost or doubled.
async fn under_load(server: &Server, fault: impl AsyncFnOnce()) {
    let urls = Arc::new(server.node_urls());
    let nodes = urls.len();
    let mut admin = open_anywhere(&urls, 0, "admin").await;
    let mut pairs = Vec::new();
    for i in 0..PAIRS {
        let (from, to) = (format!("sender{i}"), format!("receiver{i}"));
        let start = json!({"cmd": "conv", "op": "start", "m": [from, to], "attr": {"name": "pair"}});
        let cid = admin.request(start).await.unwrap()["cid"].as_str().unwrap().to_owned();
        pairs.push((from, to, cid, Arc::new(Mutex::new(Tally::default()))));
    }
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    for (i, (from, to, cid, tally)) in pairs.iter().enumerate() {
        let r = receiver(urls.clone(), (i + 1) % nodes, to.clone(), cid.clone(), tally.clone(), done.clone());
        receivers.push(tokio::spawn(r));
        senders.push(tokio::spawn(sender(urls.clone(), i % nodes, from.clone(), cid.clone(), tally.clone())));
    }
    let acked = || pairs.iter().map(|p| p.3.lock().unwrap().acked.len()).sum::<usize>();
    while acked() < PAIRS * PER_SENDER / 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fault().await;
    for s in senders {
        tokio::time::timeout(Duration::from_secs(120), s).await.expect("senders finish").unwrap();
    }
    // Every acknowledged message reaches its receiver, live or by the backlog.
    for (_, to, _, tally) in &pairs {
        for _ in 0..600 {
            let all_there = {
                let t = tally.lock().unwrap();
                t.acked.iter().all(|id| t.received.contains(id))
            };
            if all_there {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let t = tally.lock().unwrap();
        let missing = t.acked.iter().filter(|id| !t.received.contains(id)).count();
        assert_eq!(missing, 0, "{to} never got {missing} acknowledged messages");
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    for r in receivers {
        tokio::time::timeout(Duration::from_secs(30), r).await.expect("receivers finish").unwrap();
    }
    // History: every acknowledged message exactly once, in one order.
    for (from, _, cid, tally) in &pairs {
        let mut history = open_anywhere(&urls, 2, from).await;
        let reply = history.request(json!({"cmd": "logs", "cid": cid, "limit": 100})).await.unwrap();
        let logs = reply["logs"].as_array().unwrap_or_else(|| panic!("{reply}"));
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for l in logs {
            *seen.entry(l["msgId"].as_str().unwrap()).or_default() += 1;
        }
        let t = tally.lock().unwrap();
        for id in &t.acked {
            assert_eq!(seen.get(id.as_str()), Some(&1), "{from}'s acknowledged {id} is not in history once");
        }
        // A send that lost its ack with its node is sent again through another node with
        // the same token: the store answers with the message it holds, never a second.
        assert_eq!(
            logs.len(),
            PER_SENDER,
            "{from}: {} stored for {PER_SENDER} sent ({} retried)",
            logs.len(),
            t.retried
        );
        let times: Vec<i64> = logs.iter().map(|l| l["timestamp"].as_i64().unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{from}: one strictly increasing order");
    }
}

fn cluster(dir: &std::path::Path, pg: &TempPostgres, redis: &TempRedis) -> Server {
    let store = pg.create_database("cluster");
    Server::start_cluster_with_bin(
        bin(),
        dir,
        &store,
        &redis.url(),
        3,
        &["--app", "test-app:test-key:test-master"],
    )
}

#[tokio::test]
async fn a_node_killed_under_load_loses_no_acknowledged_message() {
    let Some(pg) = TempPostgres::start_or_skip("a_node_killed_under_load") else { return };
    let Some(_redis) = confab_testkit::redis::start_or_skip("a_node_killed_under_load") else { return };
    let redis = _redis;
    let dir = tempfile::tempdir().unwrap();
    let server = cluster(dir.path(), &pg, &redis);
    let victim = server.node_pid(1);
    under_load(&server, async || {
        // SIGKILL: its clients' connections drop, and they come back through the others.
        let killed = std::process::Command::new("kill").args(["-KILL", &victim.to_string()]).status();
        assert!(killed.unwrap().success());
    })
    .await;
}

#[tokio::test]
async fn a_redis_restart_under_load_loses_no_acknowledged_message() {
    let Some(pg) = TempPostgres::start_or_skip("a_redis_restart_under_load") else { return };
    let Some(mut redis) = confab_testkit::redis::start_or_skip("a_redis_restart_under_load") else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = cluster(dir.path(), &pg, &redis);
    under_load(&server, async || {
        // Redis comes back empty: the nodes register again and resync; what was
        // published meanwhile is lost, and the receivers catch up from the store.
        redis.restart();
    })
    .await;
}

#[tokio::test]
async fn a_tagged_client_of_a_killed_node_logs_in_again_elsewhere_without_4111() {
    let Some(pg) = TempPostgres::start_or_skip("a_tagged_client_of_a_killed_node") else { return };
    let Some(redis) = confab_testkit::redis::start_or_skip("a_tagged_client_of_a_killed_node") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut server = cluster(dir.path(), &pg, &redis);
    let urls = server.node_urls();
    let first = Client::open(&urls[1], APP, "erin", json!({"tag": "Mobile"})).await.unwrap();
    // Her node dies without a word; its sessions count as live until its liveness lapses.
    server.kill_node(1);
    drop(first);
    // Her SDK logs in again at once through another node, insisting on its device tag
    // (`r: true`): her own stale session does not refuse her.
    let relogin = json!({"tag": "Mobile", "r": true});
    let back = Client::open(&urls[2], APP, "erin", relogin.clone()).await;
    assert!(back.is_ok(), "re-login refused: {:?}", back.err());
    // The tag is hers again: another re-login with it, on another node, is refused.
    let other = Client::open(&urls[0], APP, "erin", relogin).await;
    assert!(matches!(&other, Err(ClientError::BadFrame(f)) if f.contains("4111")), "{:?}", other.err());
}

/// `GET /1.2/rtm/stats` through one node: (online, today).
async fn stats_at(node: &str) -> (u64, u64) {
    let master = [("X-LC-Id", APP), ("X-LC-Key", "test-master,master")];
    let answer = common::rest::http_to(node, "GET", "/1.2/rtm/stats", &master, None).await.ok();
    let result = &answer["result"];
    (result["online_user_count"].as_u64().unwrap(), result["user_count_today"].as_u64().unwrap())
}

#[tokio::test]
async fn stats_answer_with_the_nodes_own_numbers_while_redis_is_down() {
    let Some(pg) = TempPostgres::start_or_skip("stats_while_redis_is_down") else { return };
    let Some(mut redis) = confab_testkit::redis::start_or_skip("stats_while_redis_is_down") else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = cluster(dir.path(), &pg, &redis);
    let (urls, nodes) = (server.node_urls(), server.node_https());
    let _alice = Client::open(&urls[0], APP, "alice", json!({})).await.unwrap();
    let _bob = Client::open(&urls[1], APP, "bob", json!({})).await.unwrap();
    assert_eq!(stats_at(&nodes[0]).await, (2, 2), "both nodes' clients");
    // Redis gone: the request still succeeds, with what node 0 knows, and says so in the log.
    redis.stop();
    assert_eq!(stats_at(&nodes[0]).await, (1, 1), "node 0's own");
    assert!(server.logs().contains("stats of this node only"), "logged");
    broker_up_becomes(&nodes[0], "0").await;
    // Redis back (empty): the nodes register their sessions again.
    redis.restart();
    for _ in 0..300 {
        if stats_at(&nodes[0]).await.0 == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stats_at(&nodes[0]).await.0, 2, "both nodes' clients again");
    broker_up_becomes(&nodes[0], "1").await;
}

/// Waits (up to 15 s: the node notices at its next heartbeat) until one node's
/// `confab_broker_up` reads `want`.
async fn broker_up_becomes(node: &str, want: &str) {
    for _ in 0..300 {
        if broker_up_at(node).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(broker_up_at(node).await, want, "confab_broker_up");
}

/// `confab_broker_up` as one node's `/metrics` shows it.
async fn broker_up_at(node: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = node.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_string(&mut text)).await.unwrap().unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("confab_broker_up "))
        .unwrap_or_else(|| panic!("no confab_broker_up in:\n{text}"))
        .trim()
        .to_owned()
}

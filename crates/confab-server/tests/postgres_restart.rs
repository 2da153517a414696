//! PostgreSQL restarted under a sending client: sends during the outage get an error
//! reply and no ack, `/healthz` answers 503, the node says so in its log, service
//! resumes after the restart without reconnecting, and every acknowledged message is in
//! history exactly once. Runs its own throw-away PostgreSQL (skipped loudly without the
//! server programs, never in CI).
#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, Start, create};
use confab_testkit::TempPostgres;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// The status code and body of `GET path`.
async fn get(server: &Server, path: &str) -> (u16, String) {
    let addr = server.http.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_string(&mut response)).await.unwrap().unwrap();
    let status =
        response.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("{response:?}"));
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// The status code of `GET /healthz`.
async fn health(server: &Server) -> u16 {
    get(server, "/healthz").await.0
}

/// `confab_store_up` as `/metrics` shows it.
async fn store_up(server: &Server) -> String {
    let (status, text) = get(server, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("confab_store_up "))
        .unwrap_or_else(|| panic!("no confab_store_up in:\n{text}"))
        .trim()
        .to_owned()
}

/// What became of one send.
#[derive(Debug)]
enum Outcome {
    Acked { uid: String, text: String },
    Refused { text: String, code: i64 },
}

/// Polls `check` every 100 ms until it holds, for at most `secs` seconds.
async fn eventually(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..secs * 10 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not within {secs}s: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_postgres_under_a_sending_client() {
    let Some(pg) = TempPostgres::start_or_skip("restarting_postgres_under_a_sending_client") else { return };
    let dir = tempfile::tempdir().unwrap();
    // The store named on the command line, so CONFAB_TEST_STORE does not pick another.
    let url = pg.url();
    let server = Server::start_with(dir.path(), &["--app", "test-app:test-key:test-master", "--store", &url]);
    assert_eq!(health(&server).await, 200);
    assert_eq!(store_up(&server).await, "1");
    let mut alice = server.open("alice").await;
    let cid = create(&mut alice, &["bob"]).await;

    // One message in flight at a time, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sender = tokio::spawn({
        let (stop, cid) = (stop.clone(), cid.clone());
        async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let text = format!("message {n}");
                let reply = alice.request(json!({"cmd": "direct", "cid": cid, "msg": text})).await.unwrap();
                let outcome = match reply["uid"].as_str() {
                    Some(uid) if reply["cmd"] == "ack" && reply.get("code").is_none() => {
                        Outcome::Acked { uid: uid.to_owned(), text }
                    }
                    _ => Outcome::Refused {
                        text,
                        code: reply["code"].as_i64().unwrap_or_else(|| panic!("{reply}")),
                    },
                };
                tx.send(outcome).unwrap();
                // Paced, so the outage sees a handful of sends, not thousands.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            alice
        }
    });
    let mut outcomes = Vec::new();
    let mut drain = |outcomes: &mut Vec<Outcome>| {
        while let Ok(o) = rx.try_recv() {
            outcomes.push(o);
        }
    };
    let acked = |o: &[Outcome]| o.iter().filter(|o| matches!(o, Outcome::Acked { .. })).count();
    let refused = |o: &[Outcome]| o.iter().filter(|o| matches!(o, Outcome::Refused { .. })).count();

    eventually(30, "20 acks before the outage", || {
        drain(&mut outcomes);
        acked(&outcomes) >= 20
    })
    .await;
    pg.stop();
    let before_outage = outcomes.len();
    eventually(30, "3 refused sends during the outage", || {
        drain(&mut outcomes);
        refused(&outcomes[before_outage..]) >= 3
    })
    .await;
    assert_eq!(health(&server).await, 503, "healthz while PostgreSQL is down");
    assert_eq!(store_up(&server).await, "0", "the metric while PostgreSQL is down");
    pg.start();
    let restarted = outcomes.len();
    eventually(60, "20 acks after the restart", || {
        drain(&mut outcomes);
        acked(&outcomes[restarted..]) >= 20
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let mut alice = sender.await.unwrap();
    drain(&mut outcomes);
    assert_eq!(health(&server).await, 200, "healthz after the restart");
    assert_eq!(store_up(&server).await, "1", "the metric after the restart");

    for o in &outcomes {
        if let Outcome::Refused { code, text } = o {
            assert_eq!(*code, 4200, "{text}: a store failure is INTERNAL_ERROR");
        }
    }
    // Every acknowledged message is in history, once; nothing is in history twice.
    let logs = alice.request(json!({"cmd": "logs", "cid": cid, "limit": 1000})).await.unwrap();
    let history: Vec<&Value> = logs["logs"].as_array().unwrap().iter().collect();
    assert!(history.len() < 1000, "the history fits one page");
    let ids: Vec<&str> = history.iter().map(|m| m["msgId"].as_str().unwrap()).collect();
    let texts: Vec<&str> = history.iter().map(|m| m["data"].as_str().unwrap()).collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len(), "an id twice in history");
    assert_eq!(texts.iter().collect::<HashSet<_>>().len(), texts.len(), "a message stored twice");
    for o in &outcomes {
        if let Outcome::Acked { uid, text } = o {
            let at = ids.iter().position(|id| id == uid);
            assert!(at.is_some_and(|i| texts[i] == text), "acked {text} ({uid}) missing from history");
        }
    }
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert!(log.contains("lost PostgreSQL"), "the node said it lost its store:\n{log}");
    assert!(log.contains("PostgreSQL is reachable again"), "and that it came back:\n{log}");
}

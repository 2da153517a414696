//! `GET /metrics`: the Prometheus exposition of the real binary, counting what clients
//! did, and its optional bearer token.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;

/// A minimal HTTP/1.1 GET on loopback, to the first node (each node of a cluster counts
/// its own); returns (status, body).
async fn get(server: &Server, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.node_https()[0].trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// The value of the sample `series` (name and labels exactly as exposed).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

#[tokio::test]
async fn metrics_count_sessions_messages_and_acks() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    // Both on the first node, whose metrics are read.
    let node = &server.node_urls()[0];
    let mut alice = confab_testkit::Client::open(node, APP, "alice", json!({})).await.unwrap();
    let mut bob = confab_testkit::Client::open(node, APP, "bob", json!({})).await.unwrap();
    let cid = create(&mut alice, &["bob"]).await;
    for n in 0..3 {
        send(&mut alice, &cid, &format!("hello {n}")).await;
        let d = bob.wait_for("direct", is_direct(&cid)).await.unwrap();
        bob.send(&json!({"cmd": "ack", "cid": cid, "mid": d["id"]})).await.unwrap();
    }
    // The acks have no answer: a request after them is answered after they were handled.
    bob.request(json!({"cmd": "session", "op": "query", "sessionPeerIds": ["alice"]})).await.unwrap();

    let (status, text) = get(&server, "/metrics", &[]).await;
    assert_eq!(status, 200, "open without metrics_token: {text}");
    assert!(text.contains("# TYPE confab_requests_total counter\n"), "{text}");
    assert!(sample(&text, "confab_sessions") >= 2.0);
    assert!(sample(&text, "confab_connections{protocol=\"json\"}") >= 2.0);
    assert!(sample(&text, "confab_messages_stored_total") >= 3.0);
    assert!(sample(&text, "confab_messages_delivered_total") >= 3.0);
    assert!(sample(&text, "confab_acks_total") >= 3.0);
    assert!(sample(&text, "confab_requests_total{command=\"direct\",outcome=\"ok\"}") >= 3.0);
    assert!(sample(&text, "confab_commit_seconds_count") >= 3.0);
    assert!(sample(&text, "confab_commit_seconds_bucket{le=\"+Inf\"}") >= 3.0);
    assert!(sample(&text, "confab_process_resident_bytes") > 1e6);
    assert!(text.contains("confab_build_info{version=\""), "{text}");
    assert!(!text.contains(&cid) && !text.contains("alice"), "no ids as labels");
}

#[tokio::test]
async fn metrics_token_guards_the_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), &format!("metrics_token = \"s3cret\"\n{TEST_APP}"));
    let (status, body) = get(&server, "/metrics", &[]).await;
    assert_eq!(status, 401, "no token: {body}");
    assert!(!body.contains("confab_"), "{body}");
    let (status, _) = get(&server, "/metrics", &[("Authorization", "Bearer wrong")]).await;
    assert_eq!(status, 401, "wrong token");
    let (status, body) = get(&server, "/metrics", &[("Authorization", "Bearer s3cret")]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("# TYPE confab_sessions gauge\n"), "{body}");
}

//! Memory limits: a client that stops reading its socket cannot make the server queue
//! replies without bound. Its outbound queue is bounded in bytes
//! (`outbound_queue_bytes`); at the budget the server stops reading its requests (TCP
//! pushes back) instead of answering them into memory, and nothing is lost once the
//! client reads again. Memory is judged by the server's RSS, in bytes.
#![allow(clippy::unwrap_used)]

mod common;

use common::{APP, Server, Start, create, send};
use confab_testkit::Client;
use serde_json::json;
use std::time::Duration;

const BUDGET: u64 = 256 * 1024;
/// Stored messages and their body size: one history page is ~200 KB.
const STORED: usize = 40;
const BODY: usize = 5000;
/// History requests pipelined without reading: ~40 MB of replies.
const REQUESTS: i64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_history_requests_that_are_not_read_are_not_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_limits(dir.path(), &format!("outbound_queue_bytes = {BUDGET}"));
    // Alice's socket keeps a small fixed receive buffer, so the kernel absorbs little
    // of what the server writes once she stops reading.
    let mut alice = Client::connect_with_recv_buffer(&server.ws, 16 * 1024).await.unwrap();
    alice.open_session(APP, "alice", json!({})).await.unwrap();
    let cid = create(&mut alice, &["bob"]).await;
    let body = "z".repeat(BODY);
    for _ in 0..STORED {
        send(&mut alice, &cid, &body).await;
    }
    // Carol watches a conversation of her own with alice, for alice's marker.
    let marker_cid = create(&mut alice, &["carol"]).await;
    let mut carol = server.open("carol").await;
    // One page read and written once, so caches and buffers are warm before measuring.
    let page = alice.request(json!({"cmd": "logs", "cid": cid, "limit": 1000})).await.unwrap();
    assert_eq!(page["logs"].as_array().unwrap().len(), STORED);
    let before = server.rss();

    // Alice pipelines the requests and a marker message after them, then reads nothing.
    for n in 0..REQUESTS {
        alice.send(&json!({"cmd": "logs", "cid": cid, "limit": 1000, "i": 1000 + n})).await.unwrap();
    }
    alice.send(&json!({"cmd": "direct", "cid": marker_cid, "msg": "marker", "i": 9999})).await.unwrap();
    // Without backpressure the server reads everything and carol gets the marker; with
    // it, the reader stops once the queue holds the budget, long before the marker.
    let marker = carol.wait_for_within("marker", Duration::from_secs(5), |f| f["cid"] == marker_cid).await;
    let grew = server.rss().saturating_sub(before);
    eprintln!("server RSS {before} bytes before, grew {grew} while the client read nothing");
    // Budget + one reply queued, about as much again taken by the blocked writer, the
    // socket's buffers: far below the ~40 MB of replies asked for.
    assert!(grew < 16 * 1024 * 1024, "server RSS grew {grew} bytes for a client that reads nothing");
    assert!(marker.is_err(), "the server kept reading requests of a client that reads nothing");

    // Alice reads again: every reply comes, whole and in order, then the marker's ack.
    for n in 0..REQUESTS {
        let reply = alice.wait_for("reply", |f| f.get("i").is_some()).await.unwrap();
        assert_eq!(reply["i"], json!(1000 + n), "{}", reply["cmd"]);
        assert_eq!(reply["logs"].as_array().unwrap().len(), STORED);
    }
    let ack = alice.wait_for("marker ack", |f| f.get("i").is_some()).await.unwrap();
    assert_eq!((ack["cmd"].as_str(), ack["i"].as_i64()), (Some("ack"), Some(9999)), "{ack}");
    let marker = carol.wait_for("marker", |f| f["cid"] == marker_cid).await.unwrap();
    assert_eq!(marker["msg"], "marker");
    let online =
        alice.request(json!({"cmd": "session", "op": "query", "sessionPeerIds": ["alice"]})).await.unwrap();
    assert_eq!(online["onlineSessionPeerIds"], json!(["alice"]));
}

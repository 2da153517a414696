//! A graceful shutdown (SIGTERM): every session is closed with 1001 so clients reconnect
//! at once, and what the store buffers (delivery cursors) is written before the exit.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, Start, create, is_direct};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn sigterm_closes_sessions_with_1001_and_keeps_the_delivery_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let mut alice = server.open("alice").await;
    let mut bob = server.open("bob").await;
    let cid = create(&mut alice, &["alice", "bob"]).await;
    // A receipt is requested so alice learns when the server has taken bob's ack.
    let ack = alice.request(json!({"cmd": "direct", "cid": cid, "msg": "before", "r": true})).await.unwrap();
    let delivered = bob.wait_for("direct", is_direct(&cid)).await.unwrap();
    bob.send(&json!({"cmd": "ack", "cid": cid, "mid": delivered["id"]})).await.unwrap();
    let rcp = alice.wait_for("rcp", |f| f["cmd"] == "rcp").await.unwrap();
    assert_eq!(rcp["id"], ack["uid"]);

    // At once, well within the cursor buffer's interval.
    assert!(server.terminate(), "the server exits cleanly on SIGTERM");
    assert_eq!(bob.closed().await.unwrap(), Some(1001), "a Close frame, not a reset");
    assert_eq!(alice.closed().await.unwrap(), Some(1001));

    // After the restart bob is not sent the message he acknowledged again.
    let server = Server::start(dir.path());
    let mut bob = server.open("bob").await;
    let replayed = bob.drain(Duration::from_millis(500), is_direct(&cid)).await.unwrap();
    assert!(replayed.is_empty(), "acknowledged before the shutdown, delivered again: {replayed:?}");
    // The message is there all the same.
    let mut alice = server.open("alice").await;
    let log = alice.request(json!({"cmd": "logs", "cid": cid, "limit": 10})).await.unwrap();
    assert_eq!(log["logs"][0]["data"], "before", "{log}");
}

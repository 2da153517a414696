//! Hostile input against the real binary: every request over a limit is refused with a
//! clear code naming the limit, changes nothing, and leaves the server serving everyone.
#![allow(clippy::unwrap_used)]

mod common;

use common::{APP, Server, Start, TEST_APP, create, error_code, send};
use confab_testkit::Client;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha1::Sha1;

/// The key a 16,000-segment dotted attribute key: it used to build a value so deep
/// that serializing it overflowed the stack and aborted the process.
fn deep_key(segments: usize) -> String {
    format!("d{}", ".d".repeat(segments - 1))
}

/// Asserts a refusal with `code` whose detail names the limit `key`.
fn refused(frame: &Value, code: i64, key: &str) {
    assert_eq!(error_code(frame), code, "{frame}");
    let text = frame.to_string();
    assert!(text.contains(key), "the refusal should name {key}: {frame}");
}

/// The conversation's attributes as a query returns them.
async fn attributes(client: &mut Client, cid: &str) -> Value {
    let reply = client
        .request(json!({"cmd": "conv", "op": "query", "where": {"objectId": cid}, "limit": 1}))
        .await
        .unwrap();
    reply["results"][0].clone()
}

#[tokio::test]
async fn deep_dotted_keys_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut alice = server.open("alice").await;

    // D1: conv start with a 16,000-segment key (32 KB frame).
    let start = json!({"cmd": "conv", "op": "start", "m": ["x"], "attr": {deep_key(16_000): 1}});
    let reply = alice.request(start).await.unwrap();
    refused(&reply, 4114, "attr_key_depth");

    // D1 and D2 through conv update: refused, and the attributes are still there.
    let reply = alice
        .request(
            json!({"cmd": "conv", "op": "start", "m": ["bob"], "attr": {"name": "keep", "attr": {"a": 1}}}),
        )
        .await
        .unwrap();
    let cid = reply["cid"].as_str().unwrap().to_owned();
    for segments in [16_000, 201, 9] {
        let update = json!({"cmd": "conv", "op": "update", "cid": cid, "attr": {deep_key(segments): 1}});
        refused(&alice.request(update).await.unwrap(), 4114, "attr_key_depth");
    }
    // A value nested past json_depth (32) under an allowed key.
    let mut deep = json!(1);
    for _ in 0..40 {
        deep = json!({ "x": deep });
    }
    let update = json!({"cmd": "conv", "op": "update", "cid": cid, "attr": {"attr.b": deep}});
    refused(&alice.request(update).await.unwrap(), 4114, "json_depth");
    // A legitimate update still works, and nothing else changed.
    let update = json!({"cmd": "conv", "op": "update", "cid": cid, "attr": {"attr.c.d": 2}});
    assert_eq!(alice.request(update).await.unwrap()["op"], "updated");
    let conv = attributes(&mut alice, &cid).await;
    assert_eq!(conv["name"], "keep", "{conv}");
    assert_eq!(conv["attr"], json!({"a": 1, "c": {"d": 2}}), "{conv}");

    // The server is alive for everyone, and keeps the attributes across a restart.
    drop(alice);
    let mut server = server;
    assert!(server.terminate());
    let server = Server::start(dir.path());
    let mut bob = server.open("bob").await;
    let conv = attributes(&mut bob, &cid).await;
    assert_eq!(conv["attr"], json!({"a": 1, "c": {"d": 2}}), "{conv}");
}

#[tokio::test]
async fn attribute_documents_are_bounded_in_bytes_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_limits(dir.path(), "attr_bytes = 2048\nattr_keys = 20");
    let mut alice = server.open("alice").await;
    let cid = create(&mut alice, &["bob"]).await;
    // Grows by 600 bytes an update: the fourth would pass 2048 bytes.
    for i in 0..3 {
        let update =
            json!({"cmd": "conv", "op": "update", "cid": cid, "attr": {format!("k{i}"): "v".repeat(600)}});
        assert_eq!(alice.request(update).await.unwrap()["op"], "updated");
    }
    let update = json!({"cmd": "conv", "op": "update", "cid": cid, "attr": {"k3": "v".repeat(600)}});
    refused(&alice.request(update).await.unwrap(), 4114, "attr_bytes");
    let many: serde_json::Map<String, Value> = (0..20).map(|i| (format!("n{i}"), json!(i))).collect();
    let update = json!({"cmd": "conv", "op": "update", "cid": cid, "attr": {"many": many}});
    refused(&alice.request(update).await.unwrap(), 4114, "attr_keys");
    let conv = attributes(&mut alice, &cid).await;
    assert!(conv.get("k3").is_none() && conv.get("many").is_none(), "{conv}");
    assert_eq!(conv["k2"].as_str().map(str::len), Some(600));
}

#[tokio::test]
async fn the_rest_admin_path_applies_the_same_limits() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), TEST_APP);
    let http = reqwest_like_post(
        &server.http,
        "/1.2/rtm/service-conversations",
        &json!({"name": "news", deep_key(16_000): 1}).to_string(),
    )
    .await;
    assert!(http.starts_with("HTTP/1.1 400"), "{http}");
    assert!(http.contains("attr_key_depth"), "{http}");
    // Still serving.
    let ok = reqwest_like_post(&server.http, "/1.2/rtm/service-conversations", r#"{"name":"news"}"#).await;
    assert!(ok.starts_with("HTTP/1.1 201"), "{ok}");
}

/// A POST with the test app's master key over a plain TCP connection; returns the raw
/// response.
async fn reqwest_like_post(base: &str, path: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = base.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nX-LC-Id: test-app\r\nX-LC-Key: m,master\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    response
}

const MASTER: &str = "sig-master";

fn sign(message: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(MASTER.as_bytes()).unwrap();
    mac.update(message.as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_chat_room_is_written_only_by_who_is_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(
        dir.path(),
        &format!(
            "[[apps]]\nid = \"test-app\"\nkey = \"k\"\nmaster_key = \"{MASTER}\"\n\
             [apps.signatures]\nconversation = true\nwindow_secs = 600\n"
        ),
    );
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut owner = server.open("owner").await;
    let s = sign(&format!("{APP}:owner::{t}:n1"));
    let reply = owner
        .request(json!({"cmd": "conv", "op": "start", "m": [], "transient": true, "t": t, "n": "n1", "s": s}))
        .await
        .unwrap();
    assert_eq!(reply["op"], "started", "{reply}");
    let room = reply["cid"].as_str().unwrap().to_owned();

    let mut mallory = server.open("mallory").await;
    let join = json!({"cmd": "conv", "op": "add", "cid": room, "m": ["mallory"]});
    assert_eq!(error_code(&mallory.request(join).await.unwrap()), 4302);
    // D3: refused to join, so refused to send.
    let reply = mallory.request(json!({"cmd": "direct", "cid": room, "msg": "spam"})).await.unwrap();
    assert_eq!(reply["code"], 4401, "{reply}");
    // The owner is in the room and sends; nothing of mallory's was stored.
    send(&mut owner, &room, "hello").await;
    let logs = owner.request(json!({"cmd": "logs", "cid": room, "limit": 10})).await.unwrap();
    let bodies: Vec<&str> =
        logs["logs"].as_array().unwrap().iter().filter_map(|m| m["data"].as_str()).collect();
    assert_eq!(bodies, ["hello"], "{logs}");
}

#[tokio::test]
async fn queries_are_bounded_in_size_regexes_and_steps() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_limits(dir.path(), "query_budget = 400\nwhere_bytes = 4096");
    let mut alice = server.open("alice").await;
    for i in 0..30 {
        alice
            .request(
                json!({"cmd": "conv", "op": "start", "m": ["bob"], "attr": {"name": format!("room {i}")}}),
            )
            .await
            .unwrap();
    }
    let regexes: Vec<Value> = (0..17).map(|i| json!({"name": {"$regex": format!("^x{i}")}})).collect();
    let query = |w: Value| json!({"cmd": "conv", "op": "query", "where": w, "limit": 100});
    let reply = alice.request(query(json!({"$or": regexes[..17]}))).await.unwrap();
    refused(&reply, 4310, "query_regexes");
    let reply = alice.request(query(json!({"name": {"$regex": "a".repeat(257)}}))).await.unwrap();
    refused(&reply, 4310, "regex_chars");
    let ids: Vec<String> = (0..300).map(|i| format!("{i:024}")).collect();
    let reply = alice.request(query(json!({"objectId": {"$in": ids}}))).await.unwrap();
    refused(&reply, 4310, "where_bytes");
    // 16 regexes over 30 conversations: ~16 steps each, past a budget of 400.
    let reply = alice.request(query(json!({"m": "alice", "$or": regexes[..16]}))).await.unwrap();
    refused(&reply, 4310, "query_budget");
    // A cheap query over the same conversations is answered.
    let reply = alice.request(query(json!({"m": "alice", "name": "room 7"}))).await.unwrap();
    assert_eq!(reply["results"].as_array().map(Vec::len), Some(1), "{reply}");
}

#[tokio::test]
async fn resend_tokens_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut alice = server.open("alice").await;
    let cid = create(&mut alice, &["bob"]).await;
    let reply =
        alice.request(json!({"cmd": "direct", "cid": cid, "msg": "m", "dt": "t".repeat(129)})).await.unwrap();
    refused(&reply, 4114, "dedupe_token_bytes");
    let reply =
        alice.request(json!({"cmd": "direct", "cid": cid, "msg": "m", "dt": "t".repeat(128)})).await.unwrap();
    assert_eq!(reply["cmd"], "ack", "{reply}");
    assert!(reply.get("code").is_none(), "{reply}");
}

#[tokio::test]
async fn client_ids_are_checked_and_signature_strings_stay_unambiguous() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let open = |peer: &str| json!({"cmd": "session", "op": "open", "appId": APP, "peerId": peer, "i": 1});
    for bad in ["alice:x", "ali\u{202e}ecl", "zero\u{200b}width", "two words", "line\nbreak"] {
        let mut c = Client::connect(&server.ws).await.unwrap();
        c.send(&open(bad)).await.unwrap();
        assert_eq!(c.closed().await.unwrap(), Some(4103), "{bad:?}");
    }
    for good in
        ["5f3a9c1e2b7d4a0012345678", "user@example.com", "123e4567-e89b-12d3-a456-426614174000", "用户一"]
    {
        let mut c = Client::connect(&server.ws).await.unwrap();
        assert_eq!(c.request(open(good)).await.unwrap()["op"], "opened", "{good:?}");
    }
    let mut alice = server.open("alice").await;
    let reply = alice.request(json!({"cmd": "conv", "op": "start", "m": ["x:"]})).await.unwrap();
    assert_eq!(error_code(&reply), 4114, "{reply}");
}

#[tokio::test]
async fn sessions_per_connection_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_limits(dir.path(), "sessions_per_connection = 3");
    let mut c = Client::connect(&server.ws).await.unwrap();
    let open = |peer: &str| json!({"cmd": "session", "op": "open", "appId": APP, "peerId": peer});
    for peer in ["a", "b", "c", "a"] {
        assert_eq!(c.request(open(peer)).await.unwrap()["op"], "opened", "{peer}");
    }
    refused(&c.request(open("d")).await.unwrap(), 4114, "sessions_per_connection");
    // The connection and its sessions still work.
    let reply = c
        .request(json!({"cmd": "session", "op": "query", "peerId": "a", "sessionPeerIds": ["b", "d"]}))
        .await
        .unwrap();
    assert_eq!(reply["onlineSessionPeerIds"], json!(["b"]), "{reply}");
}

//! HMAC-SHA1 signatures keyed with the master key (protocol §5), per app.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, Start, error_code};
use confab_testkit::Client;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha1::Sha1;

const MASTER: &str = "sig-master";

fn sign(message: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(MASTER.as_bytes()).unwrap();
    mac.update(message.as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn login_sig(peer: &str, t: i64, n: &str) -> Value {
    json!({"t": t, "n": n, "s": sign(&format!("sig-app:{peer}::{t}:{n}"))})
}

fn start() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(
        dir.path(),
        &format!(
            r#"
[[apps]]
id = "sig-app"
key = "k"
master_key = "{MASTER}"
[apps.signatures]
login = true
conversation = true
window_secs = 600

[[apps]]
id = "open-app"
key = "k2"
master_key = "other"
"#
        ),
    );
    (dir, server)
}

async fn open_frame(server: &Server, peer: &str, extra: Value) -> (Client, Value) {
    let mut c = Client::connect(&server.ws).await.unwrap();
    let mut frame = json!({"cmd": "session", "op": "open", "appId": "sig-app", "peerId": peer});
    if let (Value::Object(f), Value::Object(e)) = (&mut frame, extra) {
        f.extend(e);
    }
    let reply = c.request(frame).await.unwrap();
    (c, reply)
}

#[tokio::test]
async fn login_signatures() {
    let (_dir, server) = start();
    let t = now_secs();
    let (_, r) = open_frame(&server, "alice", json!({})).await;
    assert_eq!(error_code(&r), 4102, "missing signature");
    assert_eq!(r["reason"], "SIGNATURE_FAILED");
    let (_, r) = open_frame(&server, "alice", login_sig("alice", t, "n1")).await;
    assert_eq!(r["op"], "opened", "seconds");
    let (_, r) = open_frame(&server, "alice", login_sig("alice", t, "n1")).await;
    assert_eq!(error_code(&r), 4102, "replayed nonce");
    let (_, r) = open_frame(&server, "alice", login_sig("alice", t * 1000 + 5, "n2")).await;
    assert_eq!(r["op"], "opened", "milliseconds");
    let (_, r) = open_frame(&server, "alice", login_sig("alice", t - 3600, "n3")).await;
    assert_eq!(error_code(&r), 4102, "outside the window");
    let (_, r) = open_frame(&server, "alice", login_sig("mallory", t, "n4")).await;
    assert_eq!(error_code(&r), 4102, "signed for someone else");
    // Apps are separate: the other app enforces nothing.
    let c = Client::open(&server.ws, "open-app", "alice", json!({})).await.unwrap();
    assert_eq!(c.peer_id.as_deref(), Some("alice"));
}

#[tokio::test]
async fn conversation_signatures() {
    let (_dir, server) = start();
    let t = now_secs();
    let (mut a, r) = open_frame(&server, "a", login_sig("a", t, "la")).await;
    assert_eq!(r["op"], "opened");
    let start = |m: Value, sig: Value| {
        let mut f = json!({"cmd": "conv", "op": "start", "m": m, "attr": {"name": "x"}});
        if let (Value::Object(f), Value::Object(e)) = (&mut f, sig) {
            f.extend(e);
        }
        f
    };
    let r = a.request(start(json!(["c", "b"]), json!({}))).await.unwrap();
    assert_eq!(error_code(&r), 4302);
    // Sorted member ids exactly as sent (2.4.0 leaves the creator out).
    let s = sign(&format!("sig-app:a:b:c:{t}:n1"));
    let r = a.request(start(json!(["c", "b"]), json!({"t": t, "n": "n1", "s": s}))).await.unwrap();
    assert_eq!(r["op"], "started", "{r}");
    let cid = r["cid"].as_str().unwrap().to_owned();
    let invite = sign(&format!("sig-app:a:{cid}:d:{t}:n2:invite"));
    let r = a
        .request(json!({"cmd": "conv", "op": "add", "cid": cid, "m": ["d"], "t": t, "n": "n2", "s": invite}))
        .await
        .unwrap();
    assert_eq!(r["op"], "added", "{r}");
    let r = a
        .request(
            json!({"cmd": "conv", "op": "remove", "cid": cid, "m": ["d"], "t": t, "n": "n3", "s": invite}),
        )
        .await
        .unwrap();
    assert_eq!(error_code(&r), 4302, "an invite signature does not kick");
    let kick = sign(&format!("sig-app:a:{cid}:d:{t}:n4:kick"));
    let r = a
        .request(json!({"cmd": "conv", "op": "remove", "cid": cid, "m": ["d"], "t": t, "n": "n4", "s": kick}))
        .await
        .unwrap();
    assert_eq!(r["op"], "removed", "{r}");
    // Leaving needs no signature.
    let r = a.request(json!({"cmd": "conv", "op": "remove", "cid": cid, "m": ["a"]})).await.unwrap();
    assert_eq!(r["op"], "removed", "{r}");
}

//! The app's hooks against a real LeanEngine app: `compat/hooks/server.js` on the
//! unmodified `leanengine@3.8.0` npm package (installed by `npm ci` in that directory;
//! test.sh does it), driven through the real `confab` binary.
//!
//! Without `compat/hooks/node_modules` these tests are skipped with a loud warning,
//! except with CI=true, where they fail.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use confab_httpc::{Client as Http, ClientConfig};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const HOOK_KEY: &str = "hook-secret";

fn receiver_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../compat/hooks")
}

/// Whether the receiver is installed; panics in CI when it is not.
fn installed() -> bool {
    if receiver_dir().join("node_modules/leanengine").is_dir() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("compat/hooks/node_modules is missing: run `npm ci` in compat/hooks (test.sh does)");
    }
    eprintln!("\n!!! SKIPPING the LeanEngine hook tests: run `npm ci` in compat/hooks first !!!\n");
    false
}

/// The LeanEngine app, killed when dropped.
struct Receiver {
    child: Child,
    url: String,
}

impl Receiver {
    /// Starts the app on `port` (0: any free port).
    fn start(port: u16) -> Receiver {
        // Its stderr goes to a file (a pipe nobody reads could fill and stall it), shown
        // if it fails to start.
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new("node")
            .arg("server.js")
            .current_dir(receiver_dir())
            .env("LEANCLOUD_APP_ID", APP)
            .env("LEANCLOUD_APP_KEY", "k")
            .env("LEANCLOUD_APP_MASTER_KEY", "m")
            .env("LEANCLOUD_APP_HOOK_KEY", HOOK_KEY)
            .env("LEANCLOUD_APP_PORT", port.to_string())
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().unwrap())
            .spawn()
            .expect("node runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let Some(port) = line.trim().strip_prefix("listening on ").map(str::to_owned) else {
            let status = child.wait();
            let why = std::fs::read_to_string(stderr.path()).unwrap_or_default();
            panic!("the LeanEngine app did not start ({status:?}): {line:?}\n{why}");
        };
        Receiver { child, url: format!("http://127.0.0.1:{port}") }
    }

    /// Every hook call the app received so far.
    async fn log(&self) -> Vec<Value> {
        http().get(&format!("{}/__log", self.url)).send_json().await.unwrap()
    }

    /// Waits until the log holds a call `pred` accepts.
    async fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        // Generous: retries back off (1 s, 2 s, 4 s, ...) and CI machines are slow.
        for _ in 0..1200 {
            if let Some(call) = self.log().await.into_iter().find(&pred) {
                return call;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no {what} in {:#?}", self.log().await);
    }

    async fn set_failing(&self, failing: bool) {
        self.set_mode(if failing { "fail" } else { "ok" }).await;
    }

    /// How the app answers notifying hooks: `ok`, `fail` (500), `hang` (never),
    /// `garbage` (200, not JSON).
    async fn set_mode(&self, mode: &str) {
        http().post(&format!("{}/__mode/{mode}", self.url)).send().await.unwrap();
    }

    /// How many notifying calls the app refused (500, hang, garbage) so far.
    async fn refused(&self) -> u64 {
        http().get(&format!("{}/__refused", self.url)).send_json().await.unwrap()
    }

    /// Waits until the app refused at least `n` notifying calls.
    async fn wait_refused(&self, n: u64) {
        for _ in 0..1200 {
            if self.refused().await >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the app refused only {} calls, not {n}", self.refused().await);
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http() -> Http {
    Http::new(ClientConfig::default()).unwrap()
}

fn hooked(url: &str, extra: &str) -> String {
    format!("{TEST_APP}[apps.hooks]\nurl = \"{url}\"\nkey = \"{HOOK_KEY}\"\n{extra}\n")
}

fn calls<'a>(log: &'a [Value], hook: &str) -> Vec<&'a Value> {
    log.iter().filter(|c| c["hook"] == hook).collect()
}

async fn send_raw(client: &mut confab_testkit::Client, cid: &str, msg: &str) -> Value {
    client.request(json!({"cmd": "direct", "cid": cid, "msg": msg})).await.unwrap()
}

#[tokio::test]
async fn blocking_hooks_take_effect() {
    if !installed() {
        return;
    }
    let receiver = Receiver::start(0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), &hooked(&receiver.url, ""));
    let mut alice = server.open("alice").await;
    let mut bob = server.open("bob").await;
    let mut carol = server.open("carol").await;

    // _conversationStart: a refusal is 4305 with the hook's own code and detail.
    let refused = alice
        .request(json!({"cmd": "conv", "op": "start", "m": ["bob"], "attr": {"name": "forbidden"}}))
        .await
        .unwrap();
    assert_eq!(error_code(&refused), 4305, "{refused}");
    assert_eq!((refused["appCode"].clone(), refused["appMsg"].clone()), (json!(4242), json!("no such name")));
    let cid = create(&mut alice, &["bob", "carol"]).await;
    let start = calls(&receiver.log().await, "_conversationStart").last().map(|c| (*c).clone()).unwrap();
    assert_eq!(start["params"]["initBy"], "alice");
    assert_eq!(start["params"]["attr"]["name"], "test");

    // _messageReceived: drop, rewrite, narrow the recipients.
    let dropped = send_raw(&mut alice, &cid, "forbidden").await;
    assert_eq!(error_code(&dropped), 4402, "{dropped}");
    assert_eq!((dropped["appCode"].clone(), dropped["appMsg"].clone()), (json!(1234), json!("no bad words")));
    send(&mut alice, &cid, "rewrite me").await;
    let got = bob.wait_for("rewritten", is_direct(&cid)).await.unwrap();
    assert_eq!(got["msg"], "rewritten by the hook", "the dropped message never came first: {got}");
    let got = carol.wait_for("rewritten", is_direct(&cid)).await.unwrap();
    assert_eq!(got["msg"], "rewritten by the hook");
    send(&mut alice, &cid, "only bob").await;
    send(&mut alice, &cid, "for everyone").await;
    assert_eq!(bob.wait_for("only bob", is_direct(&cid)).await.unwrap()["msg"], "only bob");
    assert_eq!(bob.wait_for("everyone", is_direct(&cid)).await.unwrap()["msg"], "for everyone");
    let next = carol.wait_for("everyone", is_direct(&cid)).await.unwrap();
    assert_eq!(next["msg"], "for everyone", "carol was left out of `only bob`: {next}");
    let received = calls(&receiver.log().await, "_messageReceived").first().map(|c| (*c).clone()).unwrap();
    assert_eq!(received["params"]["fromPeer"], "alice");
    assert_eq!(received["params"]["convId"], cid.as_str());
    let mut to: Vec<String> = received["params"]["toPeers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    to.sort();
    assert_eq!(to, ["bob", "carol"]);

    // _conversationAdd / _conversationRemove refuse; the others go through.
    let add = |m: &str| json!({"cmd": "conv", "op": "add", "cid": cid, "m": [m]});
    let refused = alice.request(add("banned")).await.unwrap();
    assert_eq!(error_code(&refused), 4305, "{refused}");
    assert_eq!(refused["appCode"], 11);
    assert_eq!(alice.request(add("keeper")).await.unwrap()["op"], "added");
    let refused =
        alice.request(json!({"cmd": "conv", "op": "remove", "cid": cid, "m": ["keeper"]})).await.unwrap();
    assert_eq!(error_code(&refused), 4305, "{refused}");
    let removed =
        alice.request(json!({"cmd": "conv", "op": "remove", "cid": cid, "m": ["carol"]})).await.unwrap();
    assert_eq!(removed["op"], "removed", "{removed}");

    // _conversationUpdate: refuse, or replace the attributes.
    let update = |name: &str| json!({"cmd": "conv", "op": "update", "cid": cid, "attr": {"name": name}});
    let refused = alice.request(update("bad")).await.unwrap();
    assert_eq!(error_code(&refused), 4305, "{refused}");
    assert_eq!(alice.request(update("rename")).await.unwrap()["op"], "updated");
    let pushed = bob.wait_for("updated push", is_conv("updated")).await.unwrap();
    assert_eq!(pushed["attr"]["name"], "renamed by the hook", "{pushed}");
}

#[tokio::test]
async fn notifying_hooks_arrive_once_each_with_an_idempotency_key() {
    if !installed() {
        return;
    }
    let receiver = Receiver::start(0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), &hooked(&receiver.url, ""));
    let mut alice = server.open("alice").await;
    let bob = server.open("bob").await;
    let cid = create(&mut alice, &["bob", "dave"]).await;
    let ack = send(&mut alice, &cid, "hello").await;
    let uid = ack["uid"].as_str().unwrap().to_owned();
    alice.request(json!({"cmd": "conv", "op": "add", "cid": cid, "m": ["erin"]})).await.unwrap();
    alice.request(json!({"cmd": "conv", "op": "remove", "cid": cid, "m": ["erin"]})).await.unwrap();
    bob.close().await;

    let online = receiver
        .wait_for("_clientOnline", |c| c["hook"] == "_clientOnline" && c["params"]["peerId"] == "alice")
        .await;
    assert_eq!(online["params"]["reconnect"], 0);
    let sent = receiver.wait_for("_messageSent", |c| c["hook"] == "_messageSent").await;
    assert_eq!(sent["params"]["msgId"], uid.as_str());
    assert_eq!(sent["params"]["content"], "hello");
    assert_eq!(sent["params"]["fromPeer"], "alice");
    assert_eq!(sent["params"]["offlinePeers"], json!(["dave"]));
    assert_eq!(sent["params"]["onlinePeers"], json!(["bob"]));
    let offline = receiver.wait_for("_receiversOffline", |c| c["hook"] == "_receiversOffline").await;
    assert_eq!(offline["params"]["offlinePeers"], json!(["dave"]));
    let started = receiver.wait_for("_conversationStarted", |c| c["hook"] == "_conversationStarted").await;
    assert_eq!(started["params"]["convId"], cid.as_str());
    let added = receiver.wait_for("_conversationAdded", |c| c["hook"] == "_conversationAdded").await;
    assert_eq!(
        (added["params"]["members"].clone(), added["params"]["initBy"].clone()),
        (json!(["erin"]), json!("alice"))
    );
    let removed = receiver.wait_for("_conversationRemoved", |c| c["hook"] == "_conversationRemoved").await;
    assert_eq!(removed["params"]["members"], json!(["erin"]));
    let gone = receiver
        .wait_for("_clientOffline", |c| c["hook"] == "_clientOffline" && c["params"]["peerId"] == "bob")
        .await;
    assert_eq!(gone["params"]["closeCode"], 2, "a closed socket without a logout: {gone}");

    // Each notifying call carries its own key; nothing arrived twice.
    let log = receiver.log().await;
    let notifying: Vec<&Value> = log.iter().filter(|c| !c["key"].is_null()).collect();
    let mut keys: Vec<&str> = notifying.iter().map(|c| c["key"].as_str().unwrap()).collect();
    assert!(notifying.len() >= 7, "{log:#?}");
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), notifying.len(), "a call was delivered twice: {log:#?}");
    assert!(
        calls(&log, "_messageReceived").iter().all(|c| c["key"].is_null()),
        "blocking hooks carry no key"
    );
}

/// Chat goes on while the backend is down; the calls wait in the outbox across a
/// restart of confab and arrive once the backend is back.
#[tokio::test]
async fn the_outbox_survives_a_restart_while_the_backend_is_down() {
    if !installed() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let config = hooked(&url, "timeout_ms = 500");
    let mut uids = Vec::new();
    {
        let mut server = Server::start_config(dir.path(), &config);
        let mut alice = server.open("alice").await;
        let mut bob = server.open("bob").await;
        let cid = create(&mut alice, &["bob"]).await;
        for text in ["one", "two", "three"] {
            // The dead backend fails `_messageReceived` open: chat flows.
            let ack = send(&mut alice, &cid, text).await;
            uids.push(ack["uid"].as_str().unwrap().to_owned());
            assert_eq!(bob.wait_for(text, is_direct(&cid)).await.unwrap()["msg"], text);
        }
        assert!(server.terminate(), "clean shutdown");
    }
    let _server = Server::start_config(dir.path(), &config);
    let receiver = Receiver::start(port);
    for uid in &uids {
        receiver
            .wait_for("a _messageSent from before the restart", |c| {
                c["hook"] == "_messageSent" && c["params"]["msgId"] == uid.as_str()
            })
            .await;
    }
    receiver.wait_for("_conversationStarted", |c| c["hook"] == "_conversationStarted").await;
}

/// A notifying call that fails (500) is retried until it succeeds, and arrives once.
#[tokio::test]
async fn a_failing_backend_gets_the_calls_again_later() {
    if !installed() {
        return;
    }
    let receiver = Receiver::start(0);
    receiver.set_failing(true).await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), &hooked(&receiver.url, ""));
    let mut alice = server.open("alice").await;
    let cid = create(&mut alice, &["bob"]).await;
    let uid = send(&mut alice, &cid, "retried").await["uid"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(calls(&receiver.log().await, "_messageSent").is_empty(), "the backend refused it so far");
    receiver.set_failing(false).await;
    receiver
        .wait_for("the retried call", |c| c["hook"] == "_messageSent" && c["params"]["msgId"] == uid.as_str())
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(calls(&receiver.log().await, "_messageSent").len(), 1, "delivered once");
}

/// A backend that hangs or answers 500: with the default (fail open) the message goes
/// through unchanged after at most `timeout_ms`, and other clients are never held up;
/// with `fail_closed` it is refused with 4402.
#[tokio::test]
async fn a_hanging_or_failing_backend_fails_open_or_closed_as_configured() {
    if !installed() {
        return;
    }
    let receiver = Receiver::start(0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), &hooked(&receiver.url, "timeout_ms = 1500"));
    let mut alice = server.open("alice").await;
    let mut bob = server.open("bob").await;
    let mut carol = server.open("carol").await;
    let cid = create(&mut alice, &["bob"]).await;
    let other = create(&mut bob, &["carol"]).await;
    // Alice's message waits on the hanging hook; meanwhile bob and carol chat. Her SDK
    // sends it again with the same `dt` (it thinks the first was lost).
    let hung = json!({"cmd": "direct", "cid": cid, "msg": "hang", "dt": "dt-hang", "i": 900});
    alice.send(&hung).await.unwrap();
    for text in ["a", "b", "c"] {
        send(&mut bob, &other, text).await;
        assert_eq!(carol.wait_for(text, is_direct(&other)).await.unwrap()["msg"], text);
    }
    let mut again = hung.clone();
    again["i"] = json!(901);
    alice.send(&again).await.unwrap();
    let ack = alice.wait_for("the hung message's ack", |f| f["i"] == 900).await.unwrap();
    assert_eq!(ack["cmd"], "ack", "failed open: {ack}");
    let ack2 = alice.wait_for("the re-send's ack", |f| f["i"] == 901).await.unwrap();
    assert_eq!(ack2["uid"], ack["uid"], "the re-send is the same message: {ack2}");
    assert_eq!(bob.wait_for("hang", is_direct(&cid)).await.unwrap()["msg"], "hang");
    send(&mut alice, &cid, "boom").await;
    assert_eq!(bob.wait_for("boom", is_direct(&cid)).await.unwrap()["msg"], "boom", "a 500 fails open");
    // The store holds what was accepted, once each.
    assert_eq!(history(&mut alice, &cid).await, ["hang", "boom"]);
    assert_eq!(history(&mut bob, &other).await, ["a", "b", "c"]);

    let dir = tempfile::tempdir().unwrap();
    let closed =
        Server::start_config(dir.path(), &hooked(&receiver.url, "timeout_ms = 500\nfail_closed = true"));
    let mut alice = closed.open("alice").await;
    let cid = create(&mut alice, &["bob"]).await;
    for text in ["hang", "boom"] {
        let refused = send_raw(&mut alice, &cid, text).await;
        assert_eq!(error_code(&refused), 4402, "{text}: {refused}");
    }
    send(&mut alice, &cid, "fine").await;
    assert_eq!(history(&mut alice, &cid).await, ["fine"], "refused messages are not stored");
}

/// A backend answering garbage (not HTTP, or not JSON) counts as failed.
#[tokio::test]
async fn a_backend_answering_garbage_fails_open_or_closed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut n = 0;
        while let Ok((mut sock, _)) = listener.accept().await {
            n += 1;
            let reply: &[u8] = if n % 2 == 0 {
                b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\n{not json"
            } else {
                b"garbage garbage\r\n\r\n"
            };
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await;
            let _ = sock.write_all(reply).await;
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let open = Server::start_config(dir.path(), &hooked(&url, ""));
    let mut alice = open.open("alice").await;
    let mut bob = open.open("bob").await;
    let cid = create(&mut alice, &["bob"]).await;
    for text in ["x", "y"] {
        send(&mut alice, &cid, text).await;
        assert_eq!(bob.wait_for(text, is_direct(&cid)).await.unwrap()["msg"], text);
    }
    assert_eq!(history(&mut alice, &cid).await, ["x", "y"], "stored once each");
    let dir = tempfile::tempdir().unwrap();
    let closed = Server::start_config(dir.path(), &hooked(&url, "fail_closed = true"));
    let mut alice = closed.open("alice").await;
    for _ in 0..2 {
        let refused = alice.request(json!({"cmd": "conv", "op": "start", "m": ["bob"]})).await.unwrap();
        assert_eq!(error_code(&refused), 4305, "_conversationStart fails closed: {refused}");
    }
    let query = alice.request(json!({"cmd": "conv", "op": "query", "where": {"m": "alice"}})).await.unwrap();
    assert_eq!(query["results"], json!([]), "no refused conversation was created: {query}");
}

/// LeanEngine refuses a call with the wrong hook key (401 "Hook key check failed"), and
/// its hook function never runs: Confab fails open (or closed) as for any failure.
#[tokio::test]
async fn a_wrong_hook_key_is_refused_by_leanengine() {
    if !installed() {
        return;
    }
    let receiver = Receiver::start(0);
    let direct = http()
        .post(&format!("{}/1.1/functions/_messageReceived", receiver.url))
        .header("X-LC-Id", APP)
        .header("X-LC-Key", "m,master")
        .header("X-LC-Hook-Key", "wrong")
        .json(&json!({"content": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status().as_u16(), 401);
    let config = format!("{TEST_APP}[apps.hooks]\nurl = \"{}\"\nkey = \"wrong\"\n", receiver.url);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), &config);
    let mut alice = server.open("alice").await;
    let mut bob = server.open("bob").await;
    let cid = create(&mut alice, &["bob"]).await;
    send(&mut alice, &cid, "forbidden").await;
    assert_eq!(bob.wait_for("delivered", is_direct(&cid)).await.unwrap()["msg"], "forbidden");
    assert!(receiver.log().await.is_empty(), "no hook function ran: {:#?}", receiver.log().await);
}

/// `POST /1.1/rtm/sign` and `GET /1.2/rtm/clients/sign` ask `_rtmClientSign`, and the
/// signature they return logs the client in under login signatures.
#[tokio::test]
async fn login_signing_is_delegated_to_rtm_client_sign() {
    if !installed() {
        return;
    }
    let receiver = Receiver::start(0);
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{TEST_APP}[apps.signatures]\nlogin = true\n[apps.hooks]\nurl = \"{}\"\nkey = \"{HOOK_KEY}\"\n",
        receiver.url
    );
    let server = Server::start_config(dir.path(), &config);
    let rest = |path: &str| format!("{}{path}", server.http);
    let signed: Value = http()
        .post(&rest("/1.1/rtm/sign"))
        .header("X-LC-Id", APP)
        .header("X-LC-Key", "k")
        .json(&json!({"session_token": "good-token"}))
        .send_json()
        .await
        .unwrap();
    assert_eq!(signed["client_id"], "signed-user", "{signed}");
    let hook = receiver.wait_for("_rtmClientSign", |c| c["hook"] == "_rtmClientSign").await;
    assert_eq!(hook["params"]["sessionToken"], "good-token");
    let open = json!({"t": signed["timestamp"], "n": signed["nonce"], "s": signed["signature"]});
    let client = confab_testkit::Client::open(&server.ws, APP, "signed-user", open).await;
    assert!(client.is_ok(), "the signature logs signed-user in: {client:?}");

    let refused = http()
        .get(&rest("/1.2/rtm/clients/sign?session_token=bad-token"))
        .header("X-LC-Id", APP)
        .header("X-LC-Key", "k")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 400);
    assert_eq!(refused.json::<Value>().unwrap()["code"], 211);
    let v2: Value = http()
        .get(&rest("/1.2/rtm/clients/sign?session_token=good-token"))
        .header("X-LC-Id", APP)
        .header("X-LC-Key", "k")
        .send_json()
        .await
        .unwrap();
    assert_eq!(v2["client_id"], "signed-user");
}

/// A REST call to `server` with the master key: its 2xx answer.
async fn rest(server: &Server, method: &str, path: &str, body: Value) -> Value {
    let answer =
        common::rest::http(server, method, path, common::rest::MASTER, Some(&body.to_string())).await;
    assert!((200..300).contains(&answer.status), "{method} {path}: {} {}", answer.status, answer.body);
    answer.body
}

/// The last call of `hook` matching `pred`, waiting for it.
async fn last_call(receiver: &Receiver, hook: &str, pred: impl Fn(&Value) -> bool) -> Value {
    receiver.wait_for(hook, |c| c["hook"] == hook && pred(&c["params"])).await
}

/// The bodies of a conversation's history, oldest first.
async fn history(client: &mut confab_testkit::Client, cid: &str) -> Vec<String> {
    let reply = client.request(json!({"cmd": "logs", "cid": cid, "limit": 100})).await.unwrap();
    let mut logs = reply["logs"].as_array().unwrap_or_else(|| panic!("{reply}")).clone();
    logs.sort_by_key(|l| l["timestamp"].as_i64());
    logs.iter().map(|l| l["data"].as_str().unwrap().to_owned()).collect()
}

/// `sourceIP` is the client's address: the TCP peer, or what a trusted proxy put in
/// `X-Forwarded-For`. The app's own REST calls carry none.
#[tokio::test]
async fn source_ip_is_the_clients_address() {
    if !installed() {
        return;
    }
    let receiver = Receiver::start(0);
    let dir = tempfile::tempdir().unwrap();
    let config = format!("trusted_proxies = [\"127.0.0.1\", \"::1\"]\n{}", hooked(&receiver.url, ""));
    let server = Server::start_config(dir.path(), &config);
    let mut alice = server.open("alice").await;
    let mut bob = confab_testkit::Client::connect_with(&server.ws, &[("X-Forwarded-For", "203.0.113.9")])
        .await
        .unwrap();
    bob.open_session(APP, "bob", json!({})).await.unwrap();
    let cid = create(&mut alice, &["bob"]).await;
    let alice_uid = send(&mut alice, &cid, "from alice").await["uid"].as_str().unwrap().to_owned();
    let bob_uid = send(&mut bob, &cid, "from bob").await["uid"].as_str().unwrap().to_owned();
    let edited = bob
        .request(json!({"cmd": "patch", "op": "modify", "patches": [{"cid": cid, "mid": bob_uid, "data": "fixed"}]}))
        .await
        .unwrap();
    assert_eq!(edited["op"], "modified", "{edited}");

    let local = "127.0.0.1";
    let proxied = "203.0.113.9";
    let received = last_call(&receiver, "_messageReceived", |p| p["content"] == "from alice").await;
    assert_eq!(received["params"]["sourceIP"], local, "{received}");
    let received = last_call(&receiver, "_messageReceived", |p| p["content"] == "from bob").await;
    assert_eq!(received["params"]["sourceIP"], proxied, "{received}");
    let sent = last_call(&receiver, "_messageSent", |p| p["msgId"] == alice_uid.as_str()).await;
    assert_eq!(sent["params"]["sourceIP"], local, "{sent}");
    let sent = last_call(&receiver, "_messageSent", |p| p["msgId"] == bob_uid.as_str()).await;
    assert_eq!(sent["params"]["sourceIP"], proxied, "{sent}");
    let update = last_call(&receiver, "_messageUpdate", |p| p["msgId"] == bob_uid.as_str()).await;
    assert_eq!(update["params"]["sourceIP"], proxied, "{update}");
    let online = last_call(&receiver, "_clientOnline", |p| p["peerId"] == "alice").await;
    assert_eq!(online["params"]["sourceIP"], local, "{online}");
    let online = last_call(&receiver, "_clientOnline", |p| p["peerId"] == "bob").await;
    assert_eq!(online["params"]["sourceIP"], proxied, "{online}");
    drop(bob);
    let offline = last_call(&receiver, "_clientOffline", |p| p["peerId"] == "bob").await;
    assert_eq!(offline["params"]["sourceIP"], proxied, "{offline}");

    // The backend's own REST send: no sourceIP (it is no client's), no _messageReceived.
    let path = format!("/1.2/rtm/conversations/{cid}/messages");
    let rest_sent =
        rest(&server, "POST", &path, json!({"from_client": "alice", "message": "via rest"})).await;
    let rest_uid = rest_sent["msg-id"].as_str().unwrap_or_else(|| panic!("{rest_sent}")).to_owned();
    let sent = last_call(&receiver, "_messageSent", |p| p["msgId"] == rest_uid.as_str()).await;
    assert!(sent["params"].get("sourceIP").is_none(), "{sent}");
    assert_eq!(sent["params"]["content"], "via rest");
    let log = receiver.log().await;
    assert!(
        calls(&log, "_messageReceived").iter().all(|c| c["params"]["content"] != "via rest"),
        "REST sends are not judged by blocking hooks: {log:#?}"
    );
}

/// `_messageUpdate` sees edits and recalls; it may refuse one (4405 with the hook's own
/// code) or rewrite the new body, which is what the others see and what history keeps.
#[tokio::test]
async fn message_update_refuses_or_rewrites_edits() {
    if !installed() {
        return;
    }
    let receiver = Receiver::start(0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), &hooked(&receiver.url, ""));
    let mut alice = server.open("alice").await;
    let mut bob = server.open("bob").await;
    let cid = create(&mut alice, &["bob"]).await;
    let mut uids = Vec::new();
    for text in ["one", "two", "three", "four"] {
        uids.push(send(&mut alice, &cid, text).await["uid"].as_str().unwrap().to_owned());
        bob.wait_for(text, is_direct(&cid)).await.unwrap();
    }
    let patch = |mid: &str, data: Option<&str>| {
        let mut item = json!({"cid": cid, "mid": mid});
        match data {
            Some(d) => item["data"] = json!(d),
            None => item["recall"] = json!(true),
        }
        json!({"cmd": "patch", "op": "modify", "patches": [item]})
    };
    let refused = alice.request(patch(&uids[0], Some("forbidden edit"))).await.unwrap();
    assert_eq!(error_code(&refused), 4405, "{refused}");
    assert_eq!((refused["appCode"].clone(), refused["appMsg"].clone()), (json!(77), json!("no")));
    let rewritten = alice.request(patch(&uids[1], Some("rewrite edit"))).await.unwrap();
    assert_eq!(rewritten["op"], "modified", "{rewritten}");
    let pushed = bob.wait_for("the edit", |f| f["cmd"] == "patch").await.unwrap();
    assert_eq!(pushed["patches"][0]["data"], "edit rewritten", "{pushed}");
    assert_eq!(pushed["patches"][0]["mid"], uids[1].as_str());
    let recalled = alice.request(patch(&uids[2], None)).await.unwrap();
    assert_eq!(recalled["op"], "modified", "{recalled}");

    let edit = last_call(&receiver, "_messageUpdate", |p| p["content"] == "rewrite edit").await;
    let p = &edit["params"];
    assert_eq!((p["fromPeer"].clone(), p["convId"].clone()), (json!("alice"), json!(cid)));
    assert_eq!((p["msgId"].clone(), p["recall"].clone()), (json!(uids[1]), json!(false)));
    assert_eq!(p["toPeers"], json!(["bob"]));
    let recall = last_call(&receiver, "_messageUpdate", |p| p["msgId"] == uids[2].as_str()).await;
    assert_eq!(recall["params"]["recall"], true, "{recall}");
    let log = history(&mut bob, &cid).await;
    assert_eq!(log[0], "one", "the refused edit changed nothing: {log:?}");
    assert_eq!(log[1], "edit rewritten", "{log:?}");
    assert_ne!(log[2], "three", "recalled: {log:?}");
    assert_eq!(log.len(), 4, "{log:?}");

    // The answer's `bin` makes the edit binary: pushed so, and stored so.
    let binary = alice.request(patch(&uids[3], Some("binary edit"))).await.unwrap();
    assert_eq!(binary["op"], "modified", "{binary}");
    let pushed = bob
        .wait_for("the binary edit", |f| f["cmd"] == "patch" && f["patches"][0]["mid"] == uids[3].as_str())
        .await
        .unwrap();
    assert_eq!(
        (pushed["patches"][0]["data"].clone(), pushed["patches"][0]["bin"].clone()),
        (json!("AAEC"), json!(true)),
        "{pushed}"
    );
    let path = format!("/1.2/rtm/conversations/{cid}/messages?limit=10");
    let records = common::rest::http(&server, "GET", &path, common::rest::MASTER, None).await.ok();
    let record = records.as_array().unwrap().iter().find(|r| r["msg-id"] == uids[3].as_str()).cloned();
    let record = record.unwrap_or_else(|| panic!("{records}"));
    assert_eq!((record["data"].clone(), record["bin"].clone()), (json!("AAEC"), json!(true)), "{record}");
    let text = records.as_array().unwrap().iter().find(|r| r["msg-id"] == uids[1].as_str()).cloned().unwrap();
    assert_eq!(text["bin"], false, "an edit without `bin` keeps the flag: {text}");
}

/// `_messageReceived` may turn a message binary (`bin` + base64 `content`); the mute form
/// of `_conversationUpdate` carries `mute` (no `attr`) and may be refused.
#[tokio::test]
async fn binary_replacement_and_the_mute_form_of_conversation_update() {
    if !installed() {
        return;
    }
    let receiver = Receiver::start(0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), &hooked(&receiver.url, ""));
    let mut alice = server.open("alice").await;
    let mut bob = server.open("bob").await;
    let mut carol = server.open("carol").await;
    let cid = create(&mut alice, &["bob", "carol"]).await;
    send(&mut alice, &cid, "make binary").await;
    let got = bob.wait_for("the binary message", is_direct(&cid)).await.unwrap();
    assert_eq!((got["msg"].clone(), got["bin"].clone()), (json!("AAEC"), json!(true)), "{got}");
    carol.wait_for("the binary message", is_direct(&cid)).await.unwrap();

    // `_messageUpdate`'s `toPeers`: only bob is pushed that edit; the next reaches both.
    let uid = send(&mut alice, &cid, "to edit").await["uid"].as_str().unwrap().to_owned();
    for client in [&mut bob, &mut carol] {
        client.wait_for("to edit", is_direct(&cid)).await.unwrap();
    }
    for data in ["only bob edit", "for all"] {
        let patch =
            json!({"cmd": "patch", "op": "modify", "patches": [{"cid": cid, "mid": uid, "data": data}]});
        assert_eq!(alice.request(patch).await.unwrap()["op"], "modified");
    }
    let first = bob.wait_for("an edit", |f| f["cmd"] == "patch").await.unwrap();
    assert_eq!(first["patches"][0]["data"], "only bob edit", "{first}");
    let next = carol.wait_for("an edit", |f| f["cmd"] == "patch").await.unwrap();
    assert_eq!(next["patches"][0]["data"], "for all", "carol was left out of the first: {next}");

    let muted = bob.request(json!({"cmd": "conv", "op": "mute", "cid": cid})).await.unwrap();
    assert_eq!(muted["op"], "updated", "{muted}");
    let update = last_call(&receiver, "_conversationUpdate", |p| p["initBy"] == "bob").await;
    assert_eq!(update["params"]["mute"], true, "{update}");
    assert_eq!(update["params"]["convId"], cid.as_str());
    assert!(update["params"].get("attr").is_none(), "{update}");
    let refused = carol.request(json!({"cmd": "conv", "op": "mute", "cid": cid})).await.unwrap();
    assert_eq!(error_code(&refused), 4305, "{refused}");
    assert_eq!(
        (refused["appCode"].clone(), refused["appMsg"].clone()),
        (json!(14), json!("carol may not mute"))
    );
    let unmute = bob.request(json!({"cmd": "conv", "op": "unmute", "cid": cid})).await.unwrap();
    assert_eq!(unmute["op"], "updated", "{unmute}");
    let update =
        last_call(&receiver, "_conversationUpdate", |p| p["initBy"] == "bob" && p["mute"] == false).await;
    assert!(update["params"].get("attr").is_none(), "{update}");
}

/// `_clientOffline`'s `closeCode`: 1 logout, 2 connection lost (also a plain close of
/// the socket), 3 displaced by a login with the same tag, 4 kicked through the REST
/// API; `_clientOnline`'s `reconnect` is 1 for a re-login with the session token.
#[tokio::test]
async fn client_offline_close_codes_and_reconnects() {
    if !installed() {
        return;
    }
    let receiver = Receiver::start(0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), &hooked(&receiver.url, ""));
    let code_of = |peer: &'static str| {
        let receiver = &receiver;
        async move {
            let call = last_call(receiver, "_clientOffline", |p| p["peerId"] == peer).await;
            (call["params"]["closeCode"].clone(), call)
        }
    };

    let mut leaver = server.open("leaver").await;
    let bye = leaver.request(json!({"cmd": "session", "op": "close"})).await.unwrap();
    assert_eq!(bye["op"], "closed", "{bye}");
    let (code, call) = code_of("leaver").await;
    assert_eq!(code, 1, "logout: {call}");

    let lost = server.open("lost").await;
    drop(lost);
    let (code, call) = code_of("lost").await;
    assert_eq!(code, 2, "connection lost: {call}");

    let closer = server.open("closer").await;
    closer.close().await;
    let (code, call) = code_of("closer").await;
    assert_eq!(code, 2, "the socket closed without a logout: {call}");

    let mut first = confab_testkit::Client::connect(&server.ws).await.unwrap();
    first.open_session(APP, "tagged", json!({"tag": "mobile"})).await.unwrap();
    let mut second = confab_testkit::Client::connect(&server.ws).await.unwrap();
    second.open_session(APP, "tagged", json!({"tag": "mobile"})).await.unwrap();
    let (code, call) = code_of("tagged").await;
    assert_eq!(code, 3, "displaced by the same tag: {call}");
    assert_eq!(call["params"]["tag"], "mobile");
    assert_eq!(call["params"]["errorCode"], 4111, "{call}");

    let _kicked = server.open("kicked").await;
    rest(&server, "POST", "/1.2/rtm/clients/kicked/kick", json!({"reason": "bye"})).await;
    let (code, call) = code_of("kicked").await;
    assert_eq!(code, 4, "kicked through the API: {call}");
    assert_eq!(call["params"]["errorCode"], 4115, "{call}");

    let mut comer = server.open("comer").await;
    let refreshed = comer.request(json!({"cmd": "session", "op": "refresh"})).await.unwrap();
    let token = refreshed["st"].as_str().unwrap_or_else(|| panic!("{refreshed}")).to_owned();
    drop(comer);
    code_of("comer").await;
    let mut back = confab_testkit::Client::connect(&server.ws).await.unwrap();
    back.open_session(APP, "comer", json!({"r": true, "st": token})).await.unwrap();
    let online =
        last_call(&receiver, "_clientOnline", |p| p["peerId"] == "comer" && p["reconnect"] == 1).await;
    assert_eq!(online["params"]["tag"], "default", "{online}");
    let first_login =
        last_call(&receiver, "_clientOnline", |p| p["peerId"] == "comer" && p["reconnect"] == 0).await;
    assert_eq!(first_login["params"]["peerId"], "comer");
}

/// The backend's own REST operations produce the notifying hooks (`_messageSent`,
/// `_conversationAdded`, `_conversationRemoved`) and are not judged by the blocking ones
/// (`_messageReceived`, `_conversationAdd`, `_conversationRemove`): docs/decisions.md.
#[tokio::test]
async fn rest_operations_produce_notifying_hooks_and_skip_blocking_ones() {
    if !installed() {
        return;
    }
    let receiver = Receiver::start(0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), &hooked(&receiver.url, ""));
    let mut alice = server.open("alice").await;
    let cid = create(&mut alice, &["bob"]).await;
    let members = format!("/1.2/rtm/conversations/{cid}/members");
    rest(&server, "POST", &members, json!({"client_ids": ["banned"]})).await;
    let added = last_call(&receiver, "_conversationAdded", |p| p["members"] == json!(["banned"])).await;
    assert_eq!(added["params"]["convId"], cid.as_str(), "{added}");
    rest(&server, "DELETE", &members, json!({"client_ids": ["banned"]})).await;
    last_call(&receiver, "_conversationRemoved", |p| p["members"] == json!(["banned"])).await;
    let path = format!("/1.2/rtm/conversations/{cid}/messages");
    let sent = rest(&server, "POST", &path, json!({"from_client": "alice", "message": "forbidden"})).await;
    let uid = sent["msg-id"].as_str().unwrap_or_else(|| panic!("{sent}")).to_owned();
    let hook = last_call(&receiver, "_messageSent", |p| p["msgId"] == uid.as_str()).await;
    assert_eq!(hook["params"]["content"], "forbidden", "not dropped: the backend sent it");
    assert_eq!(history(&mut alice, &cid).await, ["forbidden"]);
    let log = receiver.log().await;
    assert!(calls(&log, "_conversationAdd").is_empty(), "{log:#?}");
    assert!(calls(&log, "_conversationRemove").is_empty(), "{log:#?}");
    assert!(calls(&log, "_messageReceived").is_empty(), "{log:#?}");
}

/// Every call of `hook` in `log` about message `uid`.
fn calls_about<'a>(log: &'a [Value], hook: &str, uid: &str) -> Vec<&'a Value> {
    log.iter().filter(|c| c["hook"] == hook && c["params"]["msgId"] == uid).collect()
}

/// SIGKILL while notifying calls wait in the outbox (the backend answering 500): after
/// a restart with the backend fixed, every call arrives, at least once, and a repeat
/// carries the same idempotency key.
#[tokio::test]
async fn the_outbox_survives_sigkill_while_calls_are_failing() {
    if !installed() {
        return;
    }
    let receiver = Receiver::start(0);
    receiver.set_failing(true).await;
    let dir = tempfile::tempdir().unwrap();
    let config = hooked(&receiver.url, "timeout_ms = 1000");
    let mut uids = Vec::new();
    let cid;
    {
        let mut server = Server::start_config(dir.path(), &config);
        let mut alice = server.open("alice").await;
        let mut bob = server.open("bob").await;
        cid = create(&mut alice, &["bob"]).await;
        alice.request(json!({"cmd": "conv", "op": "add", "cid": cid, "m": ["erin"]})).await.unwrap();
        for text in ["one", "two", "three", "four"] {
            uids.push((send(&mut alice, &cid, text).await["uid"].as_str().unwrap().to_owned(), text));
            assert_eq!(bob.wait_for(text, is_direct(&cid)).await.unwrap()["msg"], text, "chat flows");
        }
        // Each message's _messageSent and _receiversOffline (erin is offline), the start
        // and the add were all tried and refused at least once: they wait for a retry.
        receiver.wait_refused(10).await;
        server.kill();
    }
    receiver.set_failing(false).await;
    let _server = Server::start_config(dir.path(), &config);
    for (uid, text) in &uids {
        last_call(&receiver, "_messageSent", |p| p["msgId"] == uid.as_str()).await;
        // `_receiversOffline` names no message id (LeanCloud's parameters): its body.
        last_call(&receiver, "_receiversOffline", |p| p["content"] == *text).await;
    }
    receiver.wait_for("_conversationStarted", |c| c["hook"] == "_conversationStarted").await;
    receiver.wait_for("_conversationAdded", |c| c["hook"] == "_conversationAdded").await;
    let log = receiver.log().await;
    for (uid, _) in &uids {
        let sent = calls_about(&log, "_messageSent", uid);
        let key = format!("_messageSent:{cid}:{uid}");
        assert!(sent.iter().all(|c| c["key"] == key.as_str()), "one key on every repeat: {sent:#?}");
    }
    for hook in ["_conversationStarted", "_conversationAdded"] {
        let mut keys: Vec<&Value> = calls(&log, hook).iter().map(|c| &c["key"]).collect();
        keys.dedup();
        assert_eq!(keys.len(), 1, "{hook}: a repeat carries the same key: {log:#?}");
    }
}

/// A backend that hangs, then answers garbage, on notifying hooks: chat never waits for
/// it, and every call is made again until the backend answers; then each arrives once.
#[tokio::test]
async fn notifying_calls_are_retried_past_a_hanging_or_garbage_backend() {
    if !installed() {
        return;
    }
    let receiver = Receiver::start(0);
    receiver.set_mode("hang").await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), &hooked(&receiver.url, "timeout_ms = 500"));
    let mut alice = server.open("alice").await;
    let mut bob = server.open("bob").await;
    let cid = create(&mut alice, &["bob"]).await;
    let mut uids = Vec::new();
    for text in ["h1", "h2", "h3"] {
        uids.push(send(&mut alice, &cid, text).await["uid"].as_str().unwrap().to_owned());
        assert_eq!(bob.wait_for(text, is_direct(&cid)).await.unwrap()["msg"], text, "chat flows");
    }
    receiver.wait_refused(4).await;
    receiver.set_mode("garbage").await;
    let hung = receiver.refused().await;
    for text in ["g1", "g2"] {
        uids.push(send(&mut alice, &cid, text).await["uid"].as_str().unwrap().to_owned());
        assert_eq!(bob.wait_for(text, is_direct(&cid)).await.unwrap()["msg"], text, "chat flows");
    }
    receiver.wait_refused(hung + 4).await;
    assert!(calls(&receiver.log().await, "_messageSent").is_empty(), "nothing was accepted yet");
    receiver.set_mode("ok").await;
    for uid in &uids {
        receiver
            .wait_for("_messageSent", |c| c["hook"] == "_messageSent" && c["params"]["msgId"] == uid.as_str())
            .await;
    }
    // Settled calls are not made again: a later message's call comes after them all.
    let last = send(&mut alice, &cid, "last").await["uid"].as_str().unwrap().to_owned();
    receiver
        .wait_for("_messageSent", |c| c["hook"] == "_messageSent" && c["params"]["msgId"] == last.as_str())
        .await;
    let log = receiver.log().await;
    for uid in &uids {
        assert_eq!(calls_about(&log, "_messageSent", uid).len(), 1, "once each: {log:#?}");
    }
    assert_eq!(history(&mut bob, &cid).await, ["h1", "h2", "h3", "g1", "g2", "last"]);
}

/// Joining or leaving a chat room, and subscribing to or unsubscribing from a service
/// conversation, are membership changes like any other: `_conversationAdd` judges a
/// join, `_conversationAdded` / `_conversationRemoved` report the change (a leave by
/// oneself is not judged by `_conversationRemove`, as for normal conversations).
#[tokio::test]
async fn rooms_and_service_conversations_report_membership_changes() {
    if !installed() {
        return;
    }
    let receiver = Receiver::start(0);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), &hooked(&receiver.url, ""));
    let mut alice = server.open("alice").await;
    let mut bob = server.open("bob").await;
    let started = alice.request(json!({"cmd": "conv", "op": "start", "transient": true})).await.unwrap();
    let room = started["cid"].as_str().unwrap_or_else(|| panic!("{started}")).to_owned();
    let joined = bob.request(json!({"cmd": "conv", "op": "add", "cid": room, "m": ["bob"]})).await.unwrap();
    assert_eq!(joined["op"], "added", "{joined}");
    let check = last_call(&receiver, "_conversationAdd", |p| p["convId"] == room.as_str()).await;
    assert_eq!(
        (check["params"]["initBy"].clone(), check["params"]["members"].clone()),
        (json!("bob"), json!(["bob"]))
    );
    let added = last_call(&receiver, "_conversationAdded", |p| p["convId"] == room.as_str()).await;
    assert_eq!(
        (added["params"]["initBy"].clone(), added["params"]["members"].clone()),
        (json!("bob"), json!(["bob"]))
    );
    let left = bob.request(json!({"cmd": "conv", "op": "remove", "cid": room, "m": ["bob"]})).await.unwrap();
    assert_eq!(left["op"], "removed", "{left}");
    let removed = last_call(&receiver, "_conversationRemoved", |p| p["convId"] == room.as_str()).await;
    assert_eq!(removed["params"]["members"], json!(["bob"]), "{removed}");

    let svc = rest(&server, "POST", "/1.2/rtm/service-conversations", json!({"name": "news"})).await;
    let svc = svc["objectId"].as_str().unwrap_or_else(|| panic!("{svc}")).to_owned();
    let sub = bob.request(json!({"cmd": "conv", "op": "add", "cid": svc, "m": ["bob"]})).await.unwrap();
    assert_eq!(sub["op"], "added", "{sub}");
    let added = last_call(&receiver, "_conversationAdded", |p| p["convId"] == svc.as_str()).await;
    assert_eq!(added["params"]["members"], json!(["bob"]), "{added}");
    let unsub = bob.request(json!({"cmd": "conv", "op": "remove", "cid": svc, "m": ["bob"]})).await.unwrap();
    assert_eq!(unsub["op"], "removed", "{unsub}");
    let removed = last_call(&receiver, "_conversationRemoved", |p| p["convId"] == svc.as_str()).await;
    assert_eq!(removed["params"]["initBy"], "bob", "{removed}");
    // Through the REST API, too (the backend's own: no blocking hook).
    rest(
        &server,
        "POST",
        &format!("/1.2/rtm/service-conversations/{svc}/subscribers"),
        json!({"client_id": "carol"}),
    )
    .await;
    last_call(&receiver, "_conversationAdded", |p| {
        p["convId"] == svc.as_str() && p["members"] == json!(["carol"])
    })
    .await;
    let log = receiver.log().await;
    assert!(calls(&log, "_conversationRemove").is_empty(), "leaving by oneself is not judged: {log:#?}");
    assert!(
        calls(&log, "_conversationAdd").iter().all(|c| c["params"]["members"] != json!(["carol"])),
        "REST is not judged: {log:#?}"
    );
}

/// A call the backend received but never answered (it was cut off by a SIGKILL of
/// confab) is made again after the restart, with the same idempotency key: the
/// backend deduplicates with it.
#[tokio::test]
async fn a_call_cut_off_by_sigkill_is_made_again_with_the_same_key() {
    if !installed() {
        return;
    }
    let receiver = Receiver::start(0);
    receiver.set_mode("record-hang").await;
    let dir = tempfile::tempdir().unwrap();
    // Long enough that no retry comes before the kill; short enough that a cluster's
    // lease on the call (timeout + 5 s) ends well within the wait below.
    let config = hooked(&receiver.url, "timeout_ms = 5000");
    let uid;
    {
        let mut server = Server::start_config(dir.path(), &config);
        let mut alice = server.open("alice").await;
        let cid = create(&mut alice, &["bob"]).await;
        uid = send(&mut alice, &cid, "cut off").await["uid"].as_str().unwrap().to_owned();
        last_call(&receiver, "_messageSent", |p| p["msgId"] == uid.as_str()).await;
        server.kill();
    }
    receiver.set_mode("ok").await;
    let _server = Server::start_config(dir.path(), &config);
    for _ in 0..1200 {
        if calls_about(&receiver.log().await, "_messageSent", &uid).len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = receiver.log().await;
    let sent = calls_about(&log, "_messageSent", &uid);
    assert!(sent.len() >= 2, "made again after the restart: {log:#?}");
    assert!(sent.iter().all(|c| c["key"] == sent[0]["key"]), "one key: {sent:#?}");
    assert!(sent[0]["key"].as_str().is_some_and(|k| k.ends_with(uid.as_str())), "{sent:#?}");
}

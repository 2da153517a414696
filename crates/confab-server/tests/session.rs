//! Sessions, heartbeats, presence, HTTP routes, bad input and connection-level errors.
#![allow(clippy::unwrap_used)]

mod common;

use common::{APP, Server, Start, error_code};
use confab_testkit::Client;
use serde_json::json;
use std::time::Duration;

const ORIGIN_APP: &str = "[[apps]]\nid = \"test-app\"\nkey = \"k\"\nmaster_key = \"m\"\nallowed_origins = [\"https://good.example\"]\n";

#[tokio::test]
async fn open_heartbeat_and_anonymous_login() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut c = Client::connect(&server.ws).await.unwrap();
    c.send_text("{}".into()).await.unwrap();
    let hb = c.wait_for("heartbeat", |f| f == &json!({})).await.unwrap();
    assert_eq!(hb, json!({}));
    let opened = c
        .request(json!({"cmd": "session", "op": "open", "appId": APP, "peerId": "alice", "ua": "js/2.4.0"}))
        .await
        .unwrap();
    assert_eq!(opened["op"], "opened");
    assert_eq!(opened["peerId"], "alice");
    // No peerId: the server assigns one.
    let mut anon = Client::connect(&server.ws).await.unwrap();
    let opened = anon.request(json!({"cmd": "session", "op": "open", "appId": APP})).await.unwrap();
    assert!(opened["peerId"].as_str().is_some_and(|p| p.starts_with("anon-")), "{opened}");
}

#[tokio::test]
async fn connection_level_errors_close_with_their_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), ORIGIN_APP);
    let open =
        |app: &str, peer: &str| json!({"cmd": "session", "op": "open", "appId": app, "peerId": peer, "i": 1});
    let mut c = Client::connect(&server.ws).await.unwrap();
    c.send(&open("no-such-app", "alice")).await.unwrap();
    assert_eq!(c.closed().await.unwrap(), Some(4100));

    let mut c = Client::connect(&server.ws).await.unwrap();
    c.send(&open(APP, "")).await.unwrap();
    assert_eq!(c.closed().await.unwrap(), Some(4103));

    let mut c = Client::connect(&server.ws).await.unwrap();
    c.send(&open(APP, &"x".repeat(65))).await.unwrap();
    assert_eq!(c.closed().await.unwrap(), Some(4103));

    let mut c = Client::connect_with(&server.ws, &[("Origin", "https://evil.example")]).await.unwrap();
    c.send(&open(APP, "alice")).await.unwrap();
    assert_eq!(c.closed().await.unwrap(), Some(4110));

    let mut c = Client::connect_with(&server.ws, &[("Origin", "https://good.example")]).await.unwrap();
    assert_eq!(c.request(open(APP, "alice")).await.unwrap()["op"], "opened");
    // Without an Origin header (native clients) the allow-list does not apply.
    let mut c = Client::connect(&server.ws).await.unwrap();
    assert_eq!(c.request(open(APP, &"y".repeat(64))).await.unwrap()["op"], "opened");
}

#[tokio::test]
async fn bad_input_gets_error_frames_and_the_connection_survives() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut c = Client::connect(&server.ws).await.unwrap();
    // Before a session: 4105.
    let r = c.request(json!({"cmd": "conv", "op": "query"})).await.unwrap();
    assert_eq!(error_code(&r), 4105);
    let mut c = server.open("alice").await;
    for bad in ["not json", "[1,2,3]", "\"str\"", r#"{"cmd":5}"#] {
        c.send_text(bad.into()).await.unwrap();
        let e = c.wait_for("error", |f| f["cmd"] == "error").await.unwrap();
        assert_eq!(error_code(&e), 4114, "{bad}");
    }
    for frame in [
        json!({"cmd": "nope"}),
        json!({"cmd": "conv", "op": "explode"}),
        json!({"cmd": "direct", "msg": "no cid"}),
        json!({"cmd": "direct", "cid": 12, "msg": "x"}),
        json!({"cmd": "conv", "op": "start", "m": [1, 2]}),
        json!({"cmd": "logs", "cid": "c", "limit": "ten"}),
    ] {
        let r = c.request(frame.clone()).await.unwrap();
        assert_eq!(error_code(&r), 4114, "{frame}");
    }
    c.send_binary(vec![0, 1, 2]).await.unwrap();
    let e = c.wait_for("error", |f| f["cmd"] == "error").await.unwrap();
    assert_eq!(error_code(&e), 4114);
    // Still alive and serving.
    let r = c.request(json!({"cmd": "session", "op": "query", "sessionPeerIds": ["alice"]})).await.unwrap();
    assert_eq!(r["onlineSessionPeerIds"], json!(["alice"]));
}

#[tokio::test]
async fn oversized_frame_closes_with_4109_and_limits_are_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_limits(
        dir.path(),
        r#"
frame_bytes = 2048
message_bytes = 100
ping_ids = 2
conversation_members = 3
"#,
    );
    let mut c = server.open("alice").await;
    let cid = common::create(&mut c, &["bob"]).await;
    let r = c.request(json!({"cmd": "direct", "cid": cid, "msg": "x".repeat(101)})).await.unwrap();
    assert_eq!(error_code(&r), 4109);
    common::send(&mut c, &cid, &"x".repeat(100)).await;
    let r = c.request(json!({"cmd": "conv", "op": "add", "cid": cid, "m": ["carol", "dave"]})).await.unwrap();
    assert_eq!(r["allowedPids"], json!(["carol"]));
    assert_eq!(r["failedPids"][0]["code"], 4304);
    assert_eq!(r["failedPids"][0]["pids"], json!(["dave"]));
    let r = c.request(json!({"cmd": "conv", "op": "start", "m": ["b", "c", "d"]})).await.unwrap();
    assert_eq!(error_code(&r), 4304);
    let _bob = server.open("bob").await;
    let _carol = server.open("carol").await;
    let r = c
        .request(json!({"cmd": "session", "op": "query", "sessionPeerIds": ["bob", "nobody", "carol"]}))
        .await
        .unwrap();
    assert_eq!(r["onlineSessionPeerIds"], json!(["bob"]), "only the first ping_ids ids are looked up");
    c.send_text(format!("{{\"cmd\":\"direct\",\"cid\":\"{cid}\",\"msg\":\"{}\"}}", "y".repeat(3000)))
        .await
        .unwrap();
    assert_eq!(c.closed().await.unwrap(), Some(4109));
}

#[tokio::test]
async fn rate_limits_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_limits(
        dir.path(),
        r#"
sends_per_minute = 3
ops_per_minute = 100
"#,
    );
    let mut c = server.open("alice").await;
    let cid = common::create(&mut c, &["bob"]).await;
    for _ in 0..3 {
        common::send(&mut c, &cid, "x").await;
    }
    let r = c.request(json!({"cmd": "direct", "cid": cid, "msg": "x"})).await.unwrap();
    assert_eq!(error_code(&r), 4116);
}

#[tokio::test]
async fn presence_follows_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut alice = server.open("alice").await;
    let bob = server.open("bob").await;
    let q = json!({"cmd": "session", "op": "query", "sessionPeerIds": ["bob", "carol", "alice"]});
    assert_eq!(alice.request(q.clone()).await.unwrap()["onlineSessionPeerIds"], json!(["bob", "alice"]));
    bob.close().await;
    let mut online = json!(null);
    for _ in 0..50 {
        online = alice.request(q.clone()).await.unwrap()["onlineSessionPeerIds"].clone();
        if online == json!(["alice"]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(online, json!(["alice"]));
}

#[tokio::test]
async fn router_answers_with_cors_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), ORIGIN_APP);
    let get = |path: &str, origin: Option<&str>| {
        let addr = server.http.trim_start_matches("http://").to_owned();
        let path = path.to_owned();
        let origin = origin.map(str::to_owned);
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let origin = origin.map(|o| format!("Origin: {o}\r\n")).unwrap_or_default();
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{origin}Connection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        }
    };
    let ok = get("/v1/route?appId=test-app&secure=1&_t=1", Some("https://good.example")).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.to_ascii_lowercase().contains("access-control-allow-origin: https://good.example"), "{ok}");
    let body: serde_json::Value = serde_json::from_str(ok.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["server"], json!(server.ws));
    assert_eq!(body["ttl"], 3600);
    let evil = get("/v1/route?appId=test-app", Some("https://evil.example")).await;
    assert!(!evil.to_ascii_lowercase().contains("access-control-allow-origin"), "{evil}");
    let missing = get("/v1/route?appId=nope", None).await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    assert!(get("/healthz", None).await.ends_with("ok\n"));
    let demo = get("/demo/", None).await;
    assert!(
        demo.starts_with("HTTP/1.1 303")
            || demo.starts_with("HTTP/1.1 302")
            || demo.starts_with("HTTP/1.1 307"),
        "{demo}"
    );
    assert!(demo.to_ascii_lowercase().contains("location: /demo/?appid=test-app"), "{demo}");
    let page = get("/demo/?appId=test-app", None).await;
    assert!(page.starts_with("HTTP/1.1 200") && page.contains("AV.realtime.js"), "{page}");
    let sdk = get("/demo/AV.realtime.js", None).await;
    assert!(sdk.starts_with("HTTP/1.1 200") && sdk.contains("realtime"), "{sdk}");
}

#[tokio::test]
async fn idle_clients_are_pinged_and_silent_ones_closed() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("read_timeout_secs = 2\nlogin_timeout_secs = 1\n{}", common::TEST_APP);
    let server = Server::start_config(dir.path(), &config);
    // A client that answers pings (tungstenite does while reading) stays connected
    // although it sends nothing itself, like 2.4.0 after a reconnect.
    let mut live = server.open("live").await;
    let waited = live.wait_for_within("nothing", Duration::from_millis(4500), |_| true).await;
    assert!(matches!(waited, Err(confab_testkit::ClientError::Timeout(_))), "{waited:?}");
    let r = live.request(json!({"cmd": "session", "op": "query", "sessionPeerIds": ["live"]})).await.unwrap();
    assert_eq!(r["onlineSessionPeerIds"], json!(["live"]));
    // A client that reads nothing and answers nothing is closed with 4107.
    let mut silent = server.open("silent").await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(silent.closed().await.unwrap(), Some(4107));
    // A connection that never logs in is closed with 4108.
    let mut lurker = Client::connect(&server.ws).await.unwrap();
    assert_eq!(lurker.closed().await.unwrap(), Some(4108));
}

#[tokio::test]
async fn a_reconnect_storm_is_accepted_without_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    // Every client at once, as after a restart: no connection is refused or dropped.
    let opens = (0..1500).map(|n| {
        let ws = server.ws.clone();
        tokio::spawn(async move { Client::open(&ws, APP, &format!("storm-{n}"), json!({})).await })
    });
    let clients = futures_util::future::join_all(opens).await;
    let opened = clients.iter().filter(|c| matches!(c, Ok(Ok(_)))).count();
    assert_eq!(opened, 1500);
    let mut probe = server.open("probe").await;
    let r = probe
        .request(json!({"cmd": "session", "op": "query", "sessionPeerIds": ["storm-0", "storm-1499"]}))
        .await
        .unwrap();
    assert_eq!(r["onlineSessionPeerIds"], json!(["storm-0", "storm-1499"]));
}

#[tokio::test]
async fn page_and_scan_limits_are_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_limits(
        dir.path(),
        r#"
query_default_limit = 2
query_max_limit = 3
query_scan_max = 5
history_default_limit = 2
history_max_limit = 3
client_id_chars = 8
"#,
    );
    let mut c = server.open("alice").await;
    let mut cids = Vec::new();
    for _ in 0..4 {
        cids.push(common::create(&mut c, &["bob"]).await);
    }
    for n in 0..5 {
        common::send(&mut c, &cids[0], &format!("m{n}")).await;
    }
    let len = |r: &serde_json::Value, key: &str| r[key].as_array().map_or(0, Vec::len);
    let q = c.request(json!({"cmd": "conv", "op": "query"})).await.unwrap();
    assert_eq!(len(&q, "results"), 2, "query_default_limit");
    let q = c.request(json!({"cmd": "conv", "op": "query", "limit": 100})).await.unwrap();
    assert_eq!(len(&q, "results"), 3, "query_max_limit");
    let h = c.request(json!({"cmd": "logs", "cid": cids[0]})).await.unwrap();
    assert_eq!(len(&h, "logs"), 2, "history_default_limit");
    let h = c.request(json!({"cmd": "logs", "cid": cids[0], "limit": 100})).await.unwrap();
    assert_eq!(len(&h, "logs"), 3, "history_max_limit");
    for _ in 0..2 {
        common::create(&mut c, &["bob"]).await;
    }
    let q = c.request(json!({"cmd": "conv", "op": "query", "where": {"name": "test"}})).await.unwrap();
    assert_eq!(error_code(&q), 4310, "query_scan_max: 6 candidates > 5");
    let mut long = Client::connect(&server.ws).await.unwrap();
    long.send(&json!({"cmd": "session", "op": "open", "appId": APP, "peerId": "ninechars", "i": 1}))
        .await
        .unwrap();
    assert_eq!(long.closed().await.unwrap(), Some(4103), "client_id_chars");
}

/// The server log's session-close lines of `client`, once `want` of them are there or
/// after a few seconds.
async fn close_lines(server: &Server, client: &str, want: usize) -> Vec<String> {
    let needle = format!(" client={client} ");
    let read = || {
        server
            .logs()
            .lines()
            .filter(|l| l.contains("session closed") && l.contains(&needle))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    for _ in 0..100 {
        if read().len() >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A second line, if any, would come right after the first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    read()
}

#[tokio::test]
async fn every_session_end_is_logged_once_with_its_code_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    // The client closes its connection.
    let alice = server.open("alice").await;
    alice.close().await;
    let lines = close_lines(&server, "alice", 1).await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    // The kit's client sends a Close frame without a code: 1005.
    assert!(lines[0].contains(&format!("app={APP}")) && lines[0].contains("code=1005"), "{lines:#?}");
    assert!(lines[0].contains("reason=\"closed by the client\""), "{lines:#?}");
    assert!(lines[0].contains("INFO") && lines[0].contains("reason="), "{lines:#?}");
    // The client goes away without a Close frame: 1006.
    let dave = server.open("dave").await;
    drop(dave);
    let lines = close_lines(&server, "dave", 1).await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("code=1006") && lines[0].contains("connection lost"), "{lines:#?}");
    // A logout, then the connection ends: one line, the logout's.
    let mut bob = server.open("bob").await;
    let closed = bob.request(json!({"cmd": "session", "op": "close"})).await.unwrap();
    assert_eq!(closed["op"], "closed", "{closed}");
    bob.close().await;
    let lines = close_lines(&server, "bob", 1).await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("reason=\"logout\""), "{lines:#?}");
    // A second login with the same tag ends the first (4111), whose connection then
    // closes: one line, the conflict's.
    let tag = json!({"tag": "mobile"});
    let mut first = Client::open(&server.ws, APP, "carol", tag.clone()).await.unwrap();
    let second = Client::open(&server.ws, APP, "carol", tag).await.unwrap();
    // The conflict reaches the first session after the second's login reply: wait for it,
    // or the client's own close could overtake it.
    let kicked = first.wait_for("the conflict", |f| f["op"] == "closed").await.unwrap();
    assert_eq!(kicked["code"], 4111, "{kicked}");
    first.close().await;
    let lines = close_lines(&server, "carol", 1).await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("code=4111"), "{lines:#?}");
    second.close().await;
    assert_eq!(close_lines(&server, "carol", 2).await.len(), 2);
    // The app's backend kicks a client (4115): one line, the kick's.
    let erin = server.open("erin").await;
    let master = [("X-LC-Id", APP), ("X-LC-Key", "test-master,master")];
    let kicked = common::rest::http(
        &server,
        "POST",
        "/1.2/rtm/clients/erin/kick",
        &master,
        Some(r#"{"reason": "spam"}"#),
    )
    .await;
    assert_eq!(kicked.status, 200, "{:?}", kicked.body);
    let lines = close_lines(&server, "erin", 1).await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("code=4115"), "{lines:#?}");
    drop(erin);
    assert_eq!(
        close_lines(&server, "erin", 2).await.len(),
        1,
        "the dropped connection logged its session again"
    );
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_without_message_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let mut server =
        Server::start_with(dir.path(), &["--app", "test-app:test-key:test-master", "--log-format", "json"]);
    let mut alice = server.open("alice").await;
    let cid = common::create(&mut alice, &["bob"]).await;
    common::send(&mut alice, &cid, "SECRET-BODY-8f3a").await;
    alice.close().await;
    // Whether the server saw the close first or the shutdown ended the session, it is
    // logged exactly once.
    assert!(server.terminate());
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    let lines = json_lines(&log);
    assert!(lines.iter().all(|l| l["level"].is_string() && l["fields"].is_object()), "{log}");
    let closed: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "session closed" && l["fields"]["client"] == "alice")
        .collect();
    assert_eq!(closed.len(), 1, "{log}");
    assert!(closed[0]["fields"]["code"].is_number(), "{log}");
    assert!(!log.contains("SECRET-BODY-8f3a"), "a message body reached the log");
    assert!(!log.contains("test-master"), "a master key reached the log");
}

/// `CONFAB_LOG_FORMAT=json` alone (no flag) switches the format, and the development
/// app's start-up line names the file holding its master key, never the key.
#[test]
fn the_environment_picks_json_logs_and_no_line_holds_the_dev_master_key() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let mut child = Command::new(common::bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env_remove("CONFAB_APPS")
        .env_remove("CONFAB_STORE")
        .env("CONFAB_LOG_FORMAT", "json")
        .env("CONFAB_LOG", "confab=debug,info")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut ready).unwrap();
    assert!(ready.starts_with("listening on http://"), "{ready:?}");
    let sent = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(sent.success());
    assert!(child.wait().unwrap().success());
    let master = std::fs::read_to_string(data.join("dev-master-key")).unwrap();
    let master = master.trim();
    assert_eq!(master.len(), 32, "{master:?}");
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    let lines = json_lines(&log);
    let dev: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["fields"]["app_id"] == "confab-dev").collect();
    assert_eq!(dev.len(), 1, "{log}");
    assert!(
        dev[0]["fields"]["master_key_file"].as_str().is_some_and(|f| f.ends_with("dev-master-key")),
        "{log}"
    );
    assert!(!log.contains(master), "the development master key reached the log:\n{log}");
}

/// Every line of a JSON log, parsed; a line that is not JSON fails the test.
fn json_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

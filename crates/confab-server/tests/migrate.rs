//! Moving data: `confab pull` from one running Confab (seeded through REST and
//! clients) into a directory, `confab import` into a second, stopped data directory,
//! and what clients see once it runs; a second import adds nothing; a delta with
//! `--since`; an interrupted pull continues; hand-made export files with ties and
//! malformed records; message files downloaded and re-hosted; the storage API's IM
//! classes the pull reads. Through a fault-injecting proxy in front of the source:
//! 429 and 5xx answers retried, wrong keys stopping the run, the requests counted, a
//! pull killed mid-scan continuing, an expired scan cursor scanning again, and history
//! pages meeting inside a millisecond of tied timestamps.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, Start, TEST_APP, is_direct};
use confab_testkit::Client;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const APP: &str = "test-app";
const MASTER: &[(&str, &str)] = &[("X-LC-Id", "test-app"), ("X-LC-Key", "m,master")];
const APP_KEY: &[(&str, &str)] = &[("X-LC-Id", "test-app"), ("X-LC-Key", "k")];
const QUIET: Duration = Duration::from_millis(500);

struct Answer {
    status: u16,
    body: Value,
}

/// One HTTP/1.1 request on its own connection.
async fn http(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Answer {
    let addr = base.trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let body = body.map(Value::to_string).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let out = String::from_utf8_lossy(&out).into_owned();
    let (head, rest) = out.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP answer: {out:?}"));
    let status = head[9..12].parse().unwrap();
    Answer { status, body: serde_json::from_str(rest).unwrap_or(Value::Null) }
}

async fn get(server: &Server, path: &str, headers: &[(&str, &str)]) -> Answer {
    http(&server.http, "GET", path, headers, None).await
}

async fn post(server: &Server, path: &str, body: Value) -> Value {
    let a = http(&server.http, "POST", path, MASTER, Some(&body)).await;
    assert!(a.status == 200 || a.status == 201, "{path}: {} {}", a.status, a.body);
    a.body
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// Every record of a conversation's history over REST, oldest first, as (id, ts, data).
async fn history(server: &Server, family: &str, cid: &str) -> Vec<(String, i64, String)> {
    let a = get(server, &format!("/1.2/rtm/{family}/{cid}/messages?limit=1000&reversed=true"), MASTER).await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap().to_owned();
            (s("msg-id"), r["timestamp"].as_i64().unwrap(), s("data"))
        })
        .collect()
}

/// `_Conversation` rows by id, without the dates the import keeps as its own.
async fn conversation_rows(server: &Server) -> Vec<Value> {
    let a = get(server, "/1.1/classes/_Conversation?limit=1000&order=objectId", MASTER).await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body["results"].as_array().unwrap().clone()
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(common::bin()).args(args).env("CONFAB_LOG", "warn").output().unwrap();
    assert!(
        out.status.success(),
        "confab {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

fn report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn pull(server: &Server, out: &Path, extra: &[&str]) -> Value {
    let mut args =
        vec!["pull", "--from", &server.http, "--app-id", APP, "--master-key", "m", "--rate", "1000"];
    let out = out.to_str().unwrap();
    args.extend(["--out", out]);
    args.extend(extra);
    report(&run(&args))
}

/// Imports into the store `Server::start_config(dir, …)` serves: `dir/data`, or under
/// `CONFAB_TEST_STORE=postgres` the server's database (`--store`).
fn import(dir: &Path, export: &Path, extra: &[&str]) -> (Value, String) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("confab.toml"), TEST_APP).unwrap();
    let (config, data) = (dir.join("confab.toml"), dir.join("data"));
    let store = confab_testkit::test_store(dir);
    let mut args = vec!["import", "--config", config.to_str().unwrap(), "--data-dir", data.to_str().unwrap()];
    if let Some(url) = &store {
        args.extend(["--store", url.as_str()]);
    }
    args.extend(["--app", APP]);
    args.extend(extra);
    args.push(export.to_str().unwrap());
    let out = run(&args);
    (report(&out), String::from_utf8_lossy(&out.stderr).into_owned())
}

async fn open(server: &Server, peer: &str) -> Client {
    Client::open(&server.ws, APP, peer, json!({})).await.unwrap()
}

/// The client's history of `cid` over WebSocket, oldest first, as (id, ts).
async fn client_history(client: &mut Client, cid: &str) -> Vec<(String, i64)> {
    let reply = client.request(json!({"cmd": "logs", "cid": cid, "limit": 1000})).await.unwrap();
    let mut logs: Vec<(String, i64)> = reply["logs"]
        .as_array()
        .unwrap_or_else(|| panic!("{reply}"))
        .iter()
        .map(|l| (l["msgId"].as_str().unwrap().to_owned(), l["timestamp"].as_i64().unwrap()))
        .collect();
    logs.sort_by_key(|l| l.1);
    logs
}

fn ids_ts(h: &[(String, i64, String)]) -> Vec<(String, i64)> {
    h.iter().map(|(i, t, _)| (i.clone(), *t)).collect()
}

#[tokio::test]
async fn pull_from_one_confab_import_into_another_then_a_delta() {
    let src_dir = tempfile::tempdir().unwrap();
    let src = Server::start_config(src_dir.path(), TEST_APP);
    // Seeded through REST …
    let group = post(&src, "/1.2/rtm/conversations", json!({"name": "team", "c": "alice", "m": ["alice", "bob", "carol"], "attr": {"topic": "launch"}, "level": 3})).await;
    let group = group["objectId"].as_str().unwrap().to_owned();
    let pair =
        post(&src, "/1.2/rtm/conversations", json!({"m": ["alice", "bob"], "unique": true, "c": "alice"}))
            .await;
    let pair = pair["objectId"].as_str().unwrap().to_owned();
    let room = post(&src, "/1.2/rtm/chatrooms", json!({"name": "lobby"})).await["objectId"]
        .as_str()
        .unwrap()
        .to_owned();
    let service = post(&src, "/1.2/rtm/service-conversations", json!({"name": "news"})).await["objectId"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 0..5 {
        post(
            &src,
            &format!("/1.2/rtm/conversations/{group}/messages"),
            json!({"from_client": "carol", "message": format!("rest {i}")}),
        )
        .await;
    }
    post(
        &src,
        &format!("/1.2/rtm/chatrooms/{room}/messages"),
        json!({"from_client": "dave", "message": "in the room"}),
    )
    .await;
    // … and clients: alice sends and mutes, dave subscribes and writes to the service.
    let mut alice = open(&src, "alice").await;
    for i in 0..3 {
        let ack =
            alice.request(json!({"cmd": "direct", "cid": group, "msg": format!("ws {i}")})).await.unwrap();
        assert_eq!(ack["cmd"], "ack");
    }
    alice.request(json!({"cmd": "direct", "cid": pair, "msg": "hi bob"})).await.unwrap();
    alice.request(json!({"cmd": "conv", "op": "mute", "cid": group})).await.unwrap();
    let mut dave = open(&src, "dave").await;
    dave.request(json!({"cmd": "conv", "op": "add", "cid": service, "m": ["dave"]})).await.unwrap();
    dave.request(json!({"cmd": "direct", "cid": service, "msg": "feedback"})).await.unwrap();
    alice.close().await;
    dave.close().await;
    let src_rows = conversation_rows(&src).await;
    let src_group = history(&src, "conversations", &group).await;
    let src_room = history(&src, "chatrooms", &room).await;
    assert_eq!(src_group.len(), 8);

    let export = tempfile::tempdir().unwrap();
    let exp = export.path().join("full");
    let pulled = pull(&src, &exp, &[]);
    assert_eq!(
        (pulled["conversations"].as_u64(), pulled["messages"].as_u64()),
        (Some(4), Some(10)),
        "{pulled}"
    );
    assert_eq!(pulled["sys_messages"], 1);
    assert_eq!((pulled["subscriber_lists"].as_u64(), pulled["subscribers"].as_u64()), (Some(1), Some(1)));
    let subscribers: Value = serde_json::from_slice(
        &std::fs::read(exp.join("subscribers").join(format!("{service}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(subscribers[0]["subscriber"], "dave");

    // Into a second, stopped data directory; then serve it.
    let dst_dir = tempfile::tempdir().unwrap();
    let (imported, log) = import(dst_dir.path(), &exp, &[]);
    assert_eq!(imported["conversations"]["created"], 4, "{imported}\n{log}");
    assert_eq!(
        (imported["messages"]["imported"].as_u64(), imported["messages"]["shifted"].as_u64()),
        (Some(10), Some(0))
    );
    assert_eq!(imported["sys_messages"]["imported"], 1);
    assert_eq!(imported["skipped"], json!({}), "{log}");
    let mut dst = Server::start_config(dst_dir.path(), TEST_APP);

    // The same rows (ids, members, attributes, mutes, kinds), the same histories.
    let dst_rows = conversation_rows(&dst).await;
    assert_eq!(dst_rows.len(), src_rows.len());
    for (a, b) in src_rows.iter().zip(&dst_rows) {
        for key in [
            "objectId",
            "name",
            "c",
            "m",
            "mu",
            "tr",
            "sys",
            "unique",
            "attr",
            "level",
            "createdAt",
            "updatedAt",
            "lm",
        ] {
            assert_eq!(a.get(key), b.get(key), "{key} of {a} vs {b}");
        }
    }
    assert_eq!(ids_ts(&history(&dst, "conversations", &group).await), ids_ts(&src_group));
    assert_eq!(history(&dst, "conversations", &group).await, src_group);
    assert_eq!(history(&dst, "chatrooms", &room).await, src_room);
    let infos = get(
        &dst,
        &format!("/1.1/classes/_ConversationMemberInfo?where={}", enc(&json!({"cid": group}).to_string())),
        MASTER,
    )
    .await;
    assert_eq!(infos.body["results"][0]["clientId"], "alice");
    assert_eq!(infos.body["results"][0]["role"], "Owner");
    let sys = get(&dst, "/1.1/classes/_SysMessage", MASTER).await;
    assert_eq!(sys.body["results"][0]["data"], "feedback", "{}", sys.body);
    assert_eq!(sys.body["results"][0]["conv"]["objectId"], service.as_str());

    // Clients see their conversations and history; nothing imported comes again as an
    // offline message, nothing counts as unread; new messages follow the imported ones.
    let mut bob = open(&dst, "bob").await;
    let pushed = bob.drain(QUIET, |f| f["cmd"] == "direct" || f["cmd"] == "unreads").await.unwrap();
    assert!(pushed.iter().all(|f| f["cmd"] != "direct"), "replayed: {pushed:?}");
    let found =
        bob.request(json!({"cmd": "conv", "op": "query", "where": {"m": "bob"}, "limit": 10})).await.unwrap();
    let mut cids: Vec<&str> =
        found["results"].as_array().unwrap().iter().map(|c| c["objectId"].as_str().unwrap()).collect();
    cids.sort();
    let mut expected = vec![group.as_str(), pair.as_str()];
    expected.sort();
    assert_eq!(cids, expected);
    assert_eq!(client_history(&mut bob, &group).await, ids_ts(&src_group));
    let mut carol = open(&dst, "carol").await;
    let ack = carol.request(json!({"cmd": "direct", "cid": group, "msg": "after the move"})).await.unwrap();
    assert!(ack["t"].as_i64().unwrap() > src_group.last().unwrap().1);
    let got = bob.wait_for("the new message", is_direct(&group)).await.unwrap();
    assert_eq!(got["msg"], "after the move");
    bob.close().await;
    carol.close().await;
    assert!(dst.terminate());

    // A second import adds nothing.
    let (again, _) = import(dst_dir.path(), &exp, &[]);
    assert_eq!(again["conversations"], json!({"created": 0, "updated": 0, "unchanged": 4}));
    assert_eq!(
        (again["messages"]["imported"].as_u64(), again["messages"]["present"].as_u64()),
        (Some(0), Some(10))
    );
    assert_eq!(
        (again["sys_messages"]["imported"].as_u64(), again["members_added"].as_u64()),
        (Some(0), Some(0))
    );

    // The delta at cutover: what changed on the source since the full pull started.
    // The cutover time: after everything pulled, before what changes next (both on
    // this machine's clock, as the server's).
    tokio::time::sleep(Duration::from_millis(5)).await;
    let since =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let a = http(
        &src.http,
        "PUT",
        &format!("/1.2/rtm/conversations/{group}"),
        MASTER,
        Some(&json!({"name": "team 2"})),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    post(
        &src,
        &format!("/1.2/rtm/conversations/{group}/messages"),
        json!({"from_client": "bob", "message": "late"}),
    )
    .await;
    let delta = export.path().join("delta");
    let since_arg = since.to_string();
    let pulled = pull(&src, &delta, &["--since", &since_arg]);
    assert_eq!(
        (pulled["conversations"].as_u64(), pulled["messages"].as_u64()),
        (Some(1), Some(1)),
        "{pulled}"
    );
    let (applied, log) = import(dst_dir.path(), &delta, &[]);
    assert_eq!(applied["conversations"]["updated"], 1, "{applied}\n{log}");
    assert_eq!(applied["messages"]["imported"], 1);
    let dst = Server::start_config(dst_dir.path(), TEST_APP);
    let after = history(&dst, "conversations", &group).await;
    assert_eq!(after.len(), 10, "the 8 imported, carol's, and the delta's");
    assert_eq!(after[..8], src_group[..]);
    assert_eq!(after.last().unwrap().2, "late");
    let row = conversation_rows(&dst).await.into_iter().find(|r| r["objectId"] == group.as_str()).unwrap();
    assert_eq!(row["name"], "team 2");
}

/// An export of `n` messages in one conversation, for seeding a source server fast.
fn seed_export(dir: &Path, cid: &str, n: usize) {
    std::fs::create_dir_all(dir.join("messages")).unwrap();
    let row = json!({"objectId": cid, "c": "alice", "m": ["alice", "bob"], "name": "big",
        "createdAt": "2024-01-01T00:00:00.000Z", "updatedAt": "2024-01-01T00:00:00.000Z"});
    std::fs::write(dir.join("_Conversation.jsonl"), format!("{row}\n")).unwrap();
    let records: Vec<Value> = (0..n)
        .map(|i| json!({"msg-id": format!("m{i:05}"), "timestamp": 1_700_000_000_000i64 + i as i64, "from": "alice", "data": format!("#{i}")}))
        .collect();
    std::fs::write(dir.join("messages").join(format!("{cid}.json")), Value::Array(records).to_string())
        .unwrap();
}

#[tokio::test]
async fn an_interrupted_pull_continues_where_it_stopped() {
    let src_dir = tempfile::tempdir().unwrap();
    let seed = tempfile::tempdir().unwrap();
    let cid = "5f0000000000000000000001";
    seed_export(seed.path(), cid, 2500);
    import(src_dir.path(), seed.path(), &[]);
    let src = Server::start_config(src_dir.path(), TEST_APP);

    let out = tempfile::tempdir().unwrap();
    let exp = out.path().join("exp");
    // Slow enough to stop between history pages; killed once a page is saved.
    let mut child = Command::new(common::bin())
        .args(["pull", "--from", &src.http, "--app-id", APP, "--master-key", "m", "--rate", "4", "--out"])
        .arg(&exp)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let state_path = exp.join(".pull-state.json");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let state: Value = std::fs::read(&state_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        if state["fetching"]["items"].as_u64().is_some_and(|n| n >= 1000) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the pull never saved a history page");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!exp.join("messages").join(format!("{cid}.json")).exists());
    // A crash may leave a torn tail after the last saved page: it is cut off.
    let part = exp.join("messages").join(format!("{cid}.json.part"));
    let mut f = std::fs::OpenOptions::new().append(true).open(&part).unwrap();
    std::io::Write::write_all(&mut f, b",\n{\"msg-id\": \"torn").unwrap();
    drop(f);
    // Another directory's arguments are refused.
    let other = Command::new(common::bin())
        .args(["pull", "--from", &src.http, "--app-id", "other", "--master-key", "m", "--out"])
        .arg(&exp)
        .output()
        .unwrap();
    assert!(!other.status.success());
    assert!(String::from_utf8_lossy(&other.stderr).contains("holds a pull from"));

    let done = pull(&src, &exp, &[]);
    assert_eq!(done["messages"], 2500, "{done}");
    let records: Vec<Value> =
        serde_json::from_slice(&std::fs::read(exp.join("messages").join(format!("{cid}.json"))).unwrap())
            .unwrap();
    let mut ids: Vec<&str> = records.iter().map(|r| r["msg-id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2500);
    assert!(!part.exists());
    // Done is done.
    let again = pull(&src, &exp, &[]);
    assert_eq!(again["messages"], 2500);
}

#[tokio::test]
async fn hand_made_exports_with_ties_and_malformed_lines() {
    let export = tempfile::tempdir().unwrap();
    let d = export.path();
    std::fs::create_dir_all(d.join("messages")).unwrap();
    let row = |id: &str| {
        json!({"objectId": id, "c": "alice", "m": ["alice", "bob"], "mu": ["bob"], "name": id,
            "createdAt": "2024-01-01T00:00:00.000Z", "updatedAt": "2024-01-02T00:00:00.000Z"})
    };
    let convs = format!(
        "{}\nnot json at all\n{{\"objectId\": \"x/../../y\"}}\n\n{}\n",
        row("aaaaaaaaaaaaaaaaaaaaaaaa"),
        row("bbbbbbbbbbbbbbbbbbbbbbbb")
    );
    std::fs::write(d.join("_Conversation.jsonl"), convs).unwrap();
    let t = 1_700_000_000_000i64;
    let rec = |id: &str, ts: i64, from: &str| json!({"msg-id": id, "timestamp": ts, "from": from, "data": id, "bin": false});
    let records = json!([rec("zz", t + 1, "bob"), rec("b", t, "bob"), {"msg-id": "bad", "data": "no time"}, rec("a", t, "alice"), rec("c", t, "alice")]);
    std::fs::write(d.join("messages/aaaaaaaaaaaaaaaaaaaaaaaa.json"), records.to_string()).unwrap();
    std::fs::write(d.join("messages/cccccccccccccccccccccccc.json"), "[]").unwrap();
    std::fs::write(
        d.join("_ConversationMemberInfo.jsonl"),
        "{\"cid\": \"aaaaaaaaaaaaaaaaaaaaaaaa\", \"clientId\": \"bob\", \"role\": \"Manager\"}\n{broken\n",
    )
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (report, log) = import(dir.path(), d, &[]);
    assert_eq!(report["conversations"]["created"], 2, "{log}");
    assert_eq!(
        (report["messages"]["imported"].as_u64(), report["messages"]["shifted"].as_u64()),
        (Some(4), Some(3))
    );
    assert_eq!(report["roles_changed"], 1);
    for reason in [
        "_Conversation.jsonl line 2: malformed JSON",
        "_Conversation.jsonl line 3: objectId must be",
        "messages/aaaaaaaaaaaaaaaaaaaaaaaa.json record 2: timestamp missing",
        "messages/cccccccccccccccccccccccc.json: no conversation",
        "_ConversationMemberInfo.jsonl line 2: malformed JSON",
    ] {
        assert!(log.contains(reason), "{reason:?} not reported in\n{log}");
    }
    assert_eq!(report["skipped"], json!({"conversation": 2, "message": 2, "role": 1}), "{log}");

    let server = Server::start_config(dir.path(), TEST_APP);
    // Ties in timestamp order by id, each a millisecond after the one before.
    let h = history(&server, "conversations", "aaaaaaaaaaaaaaaaaaaaaaaa").await;
    let expected = [("a", t), ("b", t + 1), ("c", t + 2), ("zz", t + 3)];
    assert_eq!(ids_ts(&h), expected.map(|(i, ts)| (i.to_owned(), ts)));
    let mut bob = open(&server, "bob").await;
    let pushed = bob.drain(QUIET, |f| f["cmd"] == "direct").await.unwrap();
    assert!(pushed.is_empty(), "replayed: {pushed:?}");
    let rows = conversation_rows(&server).await;
    assert_eq!(rows[0]["mu"], json!(["bob"]));
    bob.close().await;
}

/// A file host for the test: `GET /<path>` answers the body registered for it, else 404.
async fn file_host(files: Vec<(&'static str, &'static [u8])>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let files = files.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                let answer = match files.iter().find(|(p, _)| *p == path) {
                    Some((_, body)) => {
                        let mut a = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        a.extend_from_slice(body);
                        a
                    }
                    None => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
                    }
                };
                let _ = s.write_all(&answer).await;
            });
        }
    });
    format!("127.0.0.1:{}", addr.port())
}

// Multi-threaded: the file host answers while the test thread waits for `confab pull`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_files_are_downloaded_and_rehosted() {
    let host = file_host(vec![("/abc/p.png", b"PNG bytes")]).await;
    let src_dir = tempfile::tempdir().unwrap();
    let src = Server::start_config(src_dir.path(), TEST_APP);
    let cid = post(&src, "/1.2/rtm/conversations", json!({"m": ["alice", "bob"]})).await["objectId"]
        .as_str()
        .unwrap()
        .to_owned();
    let image = json!({"_lctype": -2, "_lctext": "", "_lcfile": {"url": format!("http://{host}/abc/p.png"), "objId": "o1"}});
    let gone = json!({"_lctype": -6, "_lcfile": {"url": format!("http://{host}/gone.bin"), "objId": "o2"}});
    let elsewhere = json!({"_lctype": -2, "_lcfile": {"url": "http://example.invalid/x.png"}});
    for m in [&image, &gone, &elsewhere] {
        post(
            &src,
            &format!("/1.2/rtm/conversations/{cid}/messages"),
            json!({"from_client": "alice", "message": m.to_string()}),
        )
        .await;
    }
    let out = tempfile::tempdir().unwrap();
    let exp = out.path().join("exp");
    let pulled = pull(&src, &exp, &["--files", "--file-domain", "127.0.0.1"]);
    assert_eq!((pulled["files"].as_u64(), pulled["failed"].as_u64()), (Some(1), Some(1)), "{pulled}");
    let host_dir = host.replace(':', "_");
    assert_eq!(std::fs::read(exp.join("files").join(&host_dir).join("abc/p.png")).unwrap(), b"PNG bytes");

    let dir = tempfile::tempdir().unwrap();
    let (report, _) = import(
        dir.path(),
        &exp,
        &["--file-base-url", "https://cdn.example.com/lc", "--file-domain", "127.0.0.1"],
    );
    assert_eq!(report["messages"]["files_rewritten"], 2);
    let dst = Server::start_config(dir.path(), TEST_APP);
    let h = history(&dst, "conversations", &cid).await;
    let body = |i: usize| serde_json::from_str::<Value>(&h[i].2).unwrap();
    assert_eq!(body(0)["_lcfile"]["url"], format!("https://cdn.example.com/lc/{host_dir}/abc/p.png"));
    assert_eq!(body(0)["_lcfile"]["objId"], "o1");
    assert_eq!(body(1)["_lcfile"]["url"], format!("https://cdn.example.com/lc/{host_dir}/gone.bin"));
    assert_eq!(body(2)["_lcfile"]["url"], "http://example.invalid/x.png");
}

#[tokio::test]
async fn storage_classes_answer_queries_scans_and_clients_own_member_infos() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), TEST_APP);
    let mut cids = Vec::new();
    for i in 0..5 {
        let body = json!({"name": format!("c{i}"), "c": "alice", "m": ["alice", format!("u{i}")], "rank": i});
        cids.push(
            post(&server, "/1.2/rtm/conversations", body).await["objectId"].as_str().unwrap().to_owned(),
        );
    }
    cids.sort();
    let q = |p: &str| format!("/1.1/classes/_Conversation?{p}");
    // where / order / skip / limit / keys / count
    let a = get(
        &server,
        &q(&format!("where={}&order=-rank&limit=2&skip=1&keys=name&count=1", enc(r#"{"rank":{"$gte":1}}"#))),
        MASTER,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["count"], 4);
    let names: Vec<&str> =
        a.body["results"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["c3", "c2"]);
    let keys: Vec<&String> = a.body["results"][0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["createdAt", "name", "objectId", "updatedAt"]);
    // Scans walk every row once, in objectId order, a cursor between pages.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/1.1/scan/classes/_Conversation?limit=2".to_owned(),
            Some(c) => format!("/1.1/scan/classes/_Conversation?limit=2&cursor={c}"),
        };
        let page = get(&server, &path, MASTER).await;
        assert_eq!(page.status, 200, "{}", page.body);
        seen.extend(
            page.body["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["objectId"].as_str().unwrap().to_owned()),
        );
        match page.body["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, cids);
    let filtered =
        get(&server, &format!("/1.1/scan/classes/_Conversation?where={}", enc(r#"{"m":"u2"}"#)), MASTER)
            .await;
    assert_eq!(filtered.body["results"].as_array().unwrap().len(), 1);
    // Member infos: the master key sees all; a member's own session its conversation's.
    let all = get(&server, "/1.1/scan/classes/_ConversationMemberInfo", MASTER).await;
    assert_eq!(all.body["results"].as_array().unwrap().len(), 5, "{}", all.body);
    let mut alice = open(&server, "alice").await;
    let st = alice.request(json!({"cmd": "session", "op": "refresh"})).await.unwrap()["st"]
        .as_str()
        .unwrap()
        .to_owned();
    let mine = format!(
        "/1.1/classes/_ConversationMemberInfo?client_id=alice&where={}",
        enc(&json!({"cid": cids[0]}).to_string())
    );
    let with = |st: &'static str| [("X-LC-Id", "test-app"), ("X-LC-Key", "k"), ("X-LC-IM-Session-Token", st)];
    let st: &'static str = Box::leak(st.into_boxed_str());
    let a = get(&server, &mine, &with(st)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["results"][0]["role"], "Owner");
    let a = get(&server, &mine, &with("1.bad.token")).await;
    assert_eq!((a.status, a.body["code"].as_i64()), (401, Some(401)));
    let a = get(&server, &mine, APP_KEY).await;
    assert_eq!(a.status, 401);
    let mut u9 = open(&server, "u9").await;
    let st9 = u9.request(json!({"cmd": "session", "op": "refresh"})).await.unwrap()["st"]
        .as_str()
        .unwrap()
        .to_owned();
    let st9: &'static str = Box::leak(st9.into_boxed_str());
    let theirs = mine.replace("client_id=alice", "client_id=u9");
    let a = get(&server, &theirs, &with(st9)).await;
    assert_eq!((a.status, a.body["code"].as_i64()), (403, Some(119)));
    // Other classes are not served; bad parameters are LeanCloud errors.
    let a = get(&server, "/1.1/classes/_User", MASTER).await;
    assert_eq!((a.status, a.body["code"].as_i64()), (404, Some(101)));
    let a = get(&server, "/1.1/classes/_Conversation?where=%7Bbroken", MASTER).await;
    assert_eq!((a.status, a.body["code"].as_i64()), (400, Some(107)));
    let a = get(&server, "/1.1/scan/classes/_Conversation?cursor=%%%", MASTER).await;
    assert_eq!(a.status, 400);
    let a = get(&server, "/1.1/classes/_Conversation", APP_KEY).await;
    assert_eq!(a.status, 401);
    alice.close().await;
    u9.close().await;
}

// ---- pull against a fault-injecting proxy ---------------------------------------------

/// What the proxy does with a request.
enum Step {
    /// Pass it on to the server, with this path and query.
    Forward(String),
    /// Answer this instead.
    Answer(u16, Value),
    /// Never answer (the test kills the pull while it waits).
    Hang,
}

type Rule = dyn Fn(&str) -> Step + Send + Sync;
type Rewrite = dyn Fn(&str, Value) -> Value + Send + Sync;

/// A fault-injecting HTTP proxy in front of a real Confab: it records every request's
/// path and query, lets `rule` forward (maybe rewritten), answer or hang it, and passes
/// the server's JSON answers through `rewrite`. One request per connection.
struct Proxy {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Proxy {
    async fn start(
        upstream: &str,
        rule: impl Fn(&str) -> Step + Send + Sync + 'static,
        rewrite: impl Fn(&str, Value) -> Value + Send + Sync + 'static,
    ) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (rule, rewrite): (std::sync::Arc<Rule>, std::sync::Arc<Rewrite>) =
            (std::sync::Arc::new(rule), std::sync::Arc::new(rewrite));
        let (upstream, log) = (upstream.to_owned(), seen.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else { return };
                let (rule, rewrite, upstream, log) =
                    (rule.clone(), rewrite.clone(), upstream.clone(), log.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let headers: Vec<(String, String)> = head
                        .lines()
                        .filter_map(|l| l.split_once(": "))
                        .filter(|(k, _)| k.to_ascii_lowercase().starts_with("x-lc-"))
                        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
                        .collect();
                    log.lock().unwrap().push(path.clone());
                    let (status, body) = match rule(&path) {
                        Step::Answer(status, body) => (status, body),
                        Step::Hang => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            return;
                        }
                        Step::Forward(to) => {
                            let h: Vec<(&str, &str)> =
                                headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                            let a = http(&upstream, "GET", &to, &h, None).await;
                            (a.status, rewrite(&to, a.body))
                        }
                    };
                    let body = body.to_string();
                    let answer = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(answer.as_bytes()).await;
                });
            }
        });
        Proxy { url, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn as_is(_: &str, body: Value) -> Value {
    body
}

/// `confab pull` from `from` with short retry waits, whatever its exit status.
fn pull_via(from: &str, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "pull",
        "--from",
        from,
        "--app-id",
        APP,
        "--master-key",
        "m",
        "--rate",
        "1000",
        "--rate-limited-wait-ms",
        "1",
        "--backoff-ms",
        "1",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    Command::new(common::bin()).args(&args).env("CONFAB_LOG", "warn").output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// Multi-threaded: the proxy answers while the test thread waits for `confab pull`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_retries_429_and_5xx_counts_its_requests_and_stops_on_a_wrong_key() {
    let src_dir = tempfile::tempdir().unwrap();
    let src = Server::start_config(src_dir.path(), TEST_APP);
    let cid =
        post(&src, "/1.2/rtm/conversations", json!({"m": ["alice", "bob"], "c": "alice"})).await["objectId"]
            .as_str()
            .unwrap()
            .to_owned();
    for i in 0..2 {
        post(
            &src,
            &format!("/1.2/rtm/conversations/{cid}/messages"),
            json!({"from_client": "alice", "message": format!("m{i}")}),
        )
        .await;
    }
    let out = tempfile::tempdir().unwrap();

    // The first scan request gets a 429, the next two a 503 and a 502, the first history
    // request a 500: each is asked again, and the pull completes.
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let history_failed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let proxy = Proxy::start(
        &src.http,
        move |path| {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let busy = json!({"code": 1, "error": "busy"});
            match i {
                0 => Step::Answer(429, json!({"code": 429, "error": "Too many requests."})),
                1 => Step::Answer(503, busy),
                2 => Step::Answer(502, busy),
                _ if path.contains("/messages")
                    && !history_failed.swap(true, std::sync::atomic::Ordering::SeqCst) =>
                {
                    Step::Answer(500, busy)
                }
                _ => Step::Forward(path.to_owned()),
            }
        },
        as_is,
    )
    .await;
    let exp = out.path().join("retried");
    let done = pull_via(&proxy.url, &exp, &[]);
    assert!(done.status.success(), "{}", stderr(&done));
    let pulled = report(&done);
    assert_eq!(
        (pulled["conversations"].as_u64(), pulled["messages"].as_u64()),
        (Some(1), Some(2)),
        "{pulled}"
    );
    let seen = proxy.seen();
    assert!(
        seen[..3].iter().all(|p| p == &seen[0] && p.starts_with("/1.1/scan/classes/_Conversation")),
        "{seen:?}"
    );
    assert_eq!(seen[3], seen[0], "asked again after the 502");
    let histories: Vec<&String> = seen.iter().filter(|p| p.contains("/messages")).collect();
    assert_eq!(histories[0], histories[1], "asked again after the 500");
    // The throttle counts every request, retries included: the report's count is the
    // proxy's.
    assert_eq!(pulled["requests"].as_u64(), Some(seen.len() as u64), "{seen:?}");
    let log = stderr(&done);
    assert!(log.contains("429") && log.contains("retry 1 of 8"), "{log}");

    // A server that keeps failing: `--retries` more tries, then a resumable stop.
    let proxy =
        Proxy::start(&src.http, |_| Step::Answer(503, json!({"code": 1, "error": "down"})), as_is).await;
    let stopped = pull_via(&proxy.url, &out.path().join("down"), &["--retries", "2"]);
    assert!(!stopped.status.success());
    assert_eq!(proxy.seen().len(), 3);
    assert!(stderr(&stopped).contains("run the same command again to continue"), "{}", stderr(&stopped));

    // A wrong master key (Confab's own answer) and a 403 (the proxy's): one request,
    // no retry, a message about the keys, exit status 1.
    let wrong = Command::new(common::bin())
        .args(["pull", "--from", &src.http, "--app-id", APP, "--master-key", "wrong", "--out"])
        .arg(out.path().join("wrong"))
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(1));
    let log = stderr(&wrong);
    assert!(log.contains("check --app-id and --master-key"), "{log}");
    assert!(!log.contains("run the same command again"), "{log}");
    let proxy =
        Proxy::start(&src.http, |_| Step::Answer(403, json!({"code": 403, "error": "Forbidden"})), as_is)
            .await;
    let refused = pull_via(&proxy.url, &out.path().join("forbidden"), &[]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("check --app-id and --master-key"), "{}", stderr(&refused));
    assert_eq!(proxy.seen().len(), 1);

    // The rate must be a positive number.
    let bad = Command::new(common::bin())
        .args(["pull", "--from", &src.http, "--app-id", APP, "--master-key", "m", "--rate", "0", "--out"])
        .arg(out.path().join("rate"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("--rate must be a positive number"), "{}", stderr(&bad));
}

/// Polls the pull's state file until `ready` says so.
async fn wait_for_state(exp: &Path, ready: impl Fn(&Value) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let state: Value = std::fs::read(exp.join(".pull-state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        if ready(&state) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the pull never got there: {state}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn object_ids(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["objectId"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_killed_mid_scan_continues_and_an_expired_cursor_scans_again() {
    let src_dir = tempfile::tempdir().unwrap();
    let src = Server::start_config(src_dir.path(), TEST_APP);
    let mut cids = Vec::new();
    for i in 0..5 {
        let body = json!({"name": format!("c{i}"), "c": "alice", "m": ["alice"]});
        cids.push(post(&src, "/1.2/rtm/conversations", body).await["objectId"].as_str().unwrap().to_owned());
    }
    cids.sort();
    // Scans come 2 rows a page. Mode 0: a page asked for with a cursor never comes;
    // 1: everything passes; 2: the first cursor is refused as expired, then all passes.
    let mode = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(0));
    let m = mode.clone();
    let proxy = Proxy::start(
        &src.http,
        move |path| {
            let path = path.replace("limit=1000", "limit=2");
            let scan_cursor = path.starts_with("/1.1/scan/classes/_Conversation") && path.contains("cursor=");
            match m.load(std::sync::atomic::Ordering::SeqCst) {
                0 if scan_cursor => Step::Hang,
                2 if scan_cursor => {
                    m.store(1, std::sync::atomic::Ordering::SeqCst);
                    Step::Answer(400, json!({"code": 1, "error": "cursor expired"}))
                }
                _ => Step::Forward(path),
            }
        },
        as_is,
    )
    .await;
    let out = tempfile::tempdir().unwrap();
    for then in [1u8, 2] {
        mode.store(0, std::sync::atomic::Ordering::SeqCst);
        let exp = out.path().join(format!("mode{then}"));
        let mut child = Command::new(common::bin())
            .args([
                "pull",
                "--from",
                &proxy.url,
                "--app-id",
                APP,
                "--master-key",
                "m",
                "--rate",
                "1000",
                "--out",
            ])
            .arg(&exp)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Killed while it waits for the second page of _Conversation.
        wait_for_state(&exp, |s| {
            s["scanning"]["name"] == "_Conversation.jsonl" && s["scanning"]["items"] == 2
        })
        .await;
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!exp.join("_Conversation.jsonl").exists());
        let before = proxy.seen().len();
        mode.store(then, std::sync::atomic::Ordering::SeqCst);
        let done = pull_via(&proxy.url, &exp, &[]);
        assert!(done.status.success(), "{}", stderr(&done));
        assert_eq!(report(&done)["conversations"], 5);
        assert_eq!(object_ids(&exp.join("_Conversation.jsonl")), cids, "every row once, in order");
        let seen = proxy.seen();
        assert!(seen[before].contains("cursor="), "continued from the saved cursor: {:?}", &seen[before..]);
        if then == 2 {
            assert!(
                !seen[before + 1].contains("cursor="),
                "scanned again from the start: {:?}",
                &seen[before..]
            );
            assert!(stderr(&done).contains("scanning from the start"), "{}", stderr(&done));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_meeting_in_a_tied_millisecond_lose_and_repeat_nothing() {
    // Seven messages at distinct positions on Confab; the proxy shows them as LeanCloud
    // might: pairs sharing a millisecond, and within a pair the older message has the
    // larger id. Pages hold 3, so pages end inside a tie; the proxy honours `msgid`.
    let t0 = 1_700_000_000_000i64;
    let ids = ["a0", "z1", "b2", "y3", "c4", "x5", "d6"];
    let shown = move |ts: i64| {
        let p = ts - t0;
        if p > 0 && p % 2 == 0 { ts - 1 } else { ts }
    };
    let seed = tempfile::tempdir().unwrap();
    let cid = "5f0000000000000000000002";
    std::fs::create_dir_all(seed.path().join("messages")).unwrap();
    let row = json!({"objectId": cid, "c": "alice", "m": ["alice", "bob"],
        "createdAt": "2024-01-01T00:00:00.000Z", "updatedAt": "2024-01-01T00:00:00.000Z"});
    std::fs::write(seed.path().join("_Conversation.jsonl"), format!("{row}\n")).unwrap();
    let records: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(p, id)| json!({"msg-id": id, "timestamp": t0 + p as i64, "from": "alice", "data": id}))
        .collect();
    std::fs::write(
        seed.path().join("messages").join(format!("{cid}.json")),
        Value::Array(records).to_string(),
    )
    .unwrap();
    let src_dir = tempfile::tempdir().unwrap();
    import(src_dir.path(), seed.path(), &[]);
    let src = Server::start_config(src_dir.path(), TEST_APP);
    let proxy = Proxy::start(
        &src.http,
        move |path| {
            if !path.contains("/messages") {
                return Step::Forward(path.to_owned());
            }
            // The shown (timestamp, msgid) start → Confab's position of that message.
            let (base, query) = path.split_once('?').unwrap();
            let msgid = query.split('&').find_map(|kv| kv.strip_prefix("msgid=")).map(str::to_owned);
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some(("limit", _)) => "limit=3".to_owned(),
                    Some(("timestamp", _)) => {
                        let p = ids.iter().position(|i| Some(*i) == msgid.as_deref()).unwrap();
                        format!("timestamp={}", t0 + p as i64)
                    }
                    _ => kv.to_owned(),
                })
                .collect();
            Step::Forward(format!("{base}?{}", query.join("&")))
        },
        move |path, mut body| {
            if path.contains("/messages")
                && let Some(records) = body.as_array_mut()
            {
                for r in records {
                    r["timestamp"] = json!(shown(r["timestamp"].as_i64().unwrap()));
                }
            }
            body
        },
    )
    .await;
    let out = tempfile::tempdir().unwrap();
    let exp = out.path().join("exp");
    let done = pull_via(&proxy.url, &exp, &[]);
    assert!(done.status.success(), "{}", stderr(&done));
    assert_eq!(report(&done)["messages"], 7, "{}", stderr(&done));
    let pulled: Vec<Value> =
        serde_json::from_slice(&std::fs::read(exp.join("messages").join(format!("{cid}.json"))).unwrap())
            .unwrap();
    let got: Vec<(&str, i64)> =
        pulled.iter().map(|r| (r["msg-id"].as_str().unwrap(), r["timestamp"].as_i64().unwrap())).collect();
    let expected: Vec<(&str, i64)> =
        ids.iter().enumerate().rev().map(|(p, id)| (*id, shown(t0 + p as i64))).collect();
    assert_eq!(got, expected, "newest first, each once, as shown");
    // Every next page started at the last record of the page before.
    let starts: Vec<String> = proxy
        .seen()
        .iter()
        .filter(|p| p.contains("/messages"))
        .filter_map(|p| p.split('&').find_map(|kv| kv.strip_prefix("msgid=")).map(str::to_owned))
        .collect();
    assert_eq!(starts, ["c4", "b2", "a0"]);
}

#[tokio::test]
async fn progress_is_a_bar_redrawn_in_place_on_a_terminal_and_lines_elsewhere() {
    let src_dir = tempfile::tempdir().unwrap();
    let src = Server::start_config(src_dir.path(), TEST_APP);
    for i in 0..2 {
        let cid =
            post(&src, "/1.2/rtm/conversations", json!({"m": ["alice", "bob"], "name": format!("c{i}")}))
                .await["objectId"]
                .as_str()
                .unwrap()
                .to_owned();
        post(
            &src,
            &format!("/1.2/rtm/conversations/{cid}/messages"),
            json!({"from_client": "alice", "message": "hi"}),
        )
        .await;
    }
    let out = tempfile::tempdir().unwrap();
    let mut texts = Vec::new();
    for bar in [true, false] {
        let mut opts =
            confab_migrate::PullOptions::new(&src.http, APP, "m", &out.path().join(format!("{bar}")));
        opts.rate = 1000.0;
        opts.bar = bar;
        let mut log = Vec::new();
        let report = confab_migrate::pull(&opts, &mut log).await.unwrap();
        assert_eq!(report.messages, 2);
        texts.push(String::from_utf8(log).unwrap());
    }
    let (bar, lines) = (&texts[0], &texts[1]);
    // The first progress of each step is shown at once: the scan's, then the bar.
    assert!(bar.contains("\r_Conversation: 2 rows\x1b[K"), "{bar:?}");
    assert!(bar.contains("\r[------------------------] 0/2 conversations, 1 messages, "), "{bar:?}");
    assert!(bar.contains(" msg/s, ETA "), "{bar:?}");
    // A line of the log takes the bar off first; nothing is left drawn at the end.
    for (i, _) in bar.match_indices("pull: ") {
        let before = &bar[..i];
        assert!(before.is_empty() || before.ends_with('\n') || before.ends_with("\r\x1b[K"), "{bar:?}");
        let last_line = before.rsplit('\n').next().unwrap();
        assert!(last_line.is_empty() || last_line.ends_with("\r\x1b[K"), "a bar left under a line: {bar:?}");
    }
    assert!(bar.ends_with('\n') || bar.ends_with("\r\x1b[K"), "{bar:?}");
    // Not a terminal: lines only, no carriage returns.
    assert!(!lines.contains('\r') && lines.contains("pull: histories of 2 conversations\n"), "{lines:?}");
}

/// A subscriber's service-conversation history over REST, oldest first, as (id, text).
async fn subscriber_history(server: &Server, sid: &str, client: &str) -> Vec<(String, String)> {
    let path = format!(
        "/1.2/rtm/service-conversations/{sid}/subscribers/{client}/messages?limit=1000&reversed=true"
    );
    let a = get(server, &path, MASTER).await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["msg-id"].as_str().unwrap().to_owned(), r["data"].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_history_moves_broadcasts_and_targeted_messages_once_each() {
    let src_dir = tempfile::tempdir().unwrap();
    let src = Server::start_config(src_dir.path(), TEST_APP);
    let sid = post(&src, "/1.2/rtm/service-conversations", json!({"name": "news"})).await["objectId"]
        .as_str()
        .unwrap()
        .to_owned();
    let base = format!("/1.2/rtm/service-conversations/{sid}");
    for client in ["ann", "ben", "cat"] {
        post(&src, &format!("{base}/subscribers"), json!({"client_id": client})).await;
    }
    post(&src, &format!("{base}/broadcasts"), json!({"from_client": "sys", "message": "to all 1"})).await;
    post(
        &src,
        &format!("{base}/messages"),
        json!({"from_client": "sys", "to_clients": ["ben"], "message": "ben only"}),
    )
    .await;
    post(
        &src,
        &format!("{base}/messages"),
        json!({"from_client": "sys", "to_clients": ["ann", "cat"], "message": "ann and cat"}),
    )
    .await;
    post(&src, &format!("{base}/broadcasts"), json!({"from_client": "sys", "message": "to all 2"})).await;
    let before: Vec<Vec<(String, String)>> = {
        let mut v = Vec::new();
        for c in ["ann", "ben", "cat"] {
            v.push(subscriber_history(&src, &sid, c).await);
        }
        v
    };
    assert_eq!(
        before[1].iter().map(|m| m.1.as_str()).collect::<Vec<_>>(),
        ["to all 1", "ben only", "to all 2"]
    );

    // LeanCloud does not document `to-clients` on these records: the proxy drops it, so
    // the pull must tell broadcasts from targeted messages by who had them.
    // Until `hang` is cleared, ben's history never comes (the first run is killed there).
    let hang = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let h = hang.clone();
    let proxy = Proxy::start(
        &src.http,
        move |path| {
            if path.contains("/subscribers/ben/messages") && h.load(std::sync::atomic::Ordering::SeqCst) {
                Step::Hang
            } else {
                Step::Forward(path.to_owned())
            }
        },
        |path, mut body| {
            if path.contains("/subscribers/")
                && let Some(records) = body.as_array_mut()
            {
                for r in records {
                    r.as_object_mut().unwrap().remove("to-clients");
                }
            }
            body
        },
    )
    .await;
    let out = tempfile::tempdir().unwrap();
    // Without the option nothing of it is pulled.
    let plain = pull_via(&proxy.url, &out.path().join("plain"), &[]);
    assert!(plain.status.success(), "{}", stderr(&plain));
    assert!(!out.path().join("plain/messages").join(format!("{sid}.json")).exists());
    let exp = out.path().join("exp");
    let mut child = Command::new(common::bin())
        .args(["pull", "--from", &proxy.url, "--app-id", APP, "--master-key", "m", "--rate", "1000"])
        .args(["--service-history", "--out"])
        .arg(&exp)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !proxy.seen().iter().any(|p| p.contains("/subscribers/ben/messages")) {
        assert!(std::time::Instant::now() < deadline, "the pull never asked for ben's history");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    hang.store(false, std::sync::atomic::Ordering::SeqCst);
    let before_resume = proxy.seen().len();
    let done = pull_via(&proxy.url, &exp, &["--service-history"]);
    let resumed = proxy.seen()[before_resume..].to_vec();
    assert!(
        !resumed.iter().any(|p| p.contains("/subscribers?")),
        "the subscribers were written before the interruption: {resumed:?}"
    );
    assert!(resumed.iter().any(|p| p.contains("/subscribers/ann/messages")), "{resumed:?}");
    assert!(done.status.success(), "{}", stderr(&done));
    let pulled = report(&done);
    assert_eq!(
        (pulled["service_histories"].as_u64(), pulled["service_messages"].as_u64()),
        (Some(1), Some(4)),
        "{pulled}"
    );
    let records: Vec<Value> =
        serde_json::from_slice(&std::fs::read(exp.join("messages").join(format!("{sid}.json"))).unwrap())
            .unwrap();
    let to = |text: &str| records.iter().find(|r| r["data"] == text).unwrap().get("to-clients").cloned();
    assert_eq!(to("to all 1"), None);
    assert_eq!(to("to all 2"), None);
    assert_eq!(to("ben only"), Some(json!(["ben"])));
    assert_eq!(to("ann and cat"), Some(json!(["ann", "cat"])));

    // Imported, each subscriber reads what it read before, with the same ids.
    let dst_dir = tempfile::tempdir().unwrap();
    let (imported, log) = import(dst_dir.path(), &exp, &[]);
    assert_eq!(imported["messages"]["imported"], 4, "{imported}\n{log}");
    let mut dst = Server::start_config(dst_dir.path(), TEST_APP);
    for (i, c) in ["ann", "ben", "cat"].into_iter().enumerate() {
        assert_eq!(subscriber_history(&dst, &sid, c).await, before[i], "{c}");
    }
    // A second import adds nothing.
    assert!(dst.terminate());
    let (again, _) = import(dst_dir.path(), &exp, &[]);
    assert_eq!(
        (again["messages"]["imported"].as_u64(), again["messages"]["present"].as_u64()),
        (Some(0), Some(4))
    );
}

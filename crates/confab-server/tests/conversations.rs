//! Conversations: creation, the membership push matrix (protocol §6.16), unique
//! conversations, chat rooms, queries, count and update.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, Start, create, error_code, is_conv, is_direct, send};
use confab_testkit::Client;
use serde_json::{Value, json};
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);

/// Every conversation push a client received within the quiet period, as (op, initBy, m).
async fn conv_pushes(c: &mut Client, cid: &str) -> Vec<(String, String, Value)> {
    c.drain(QUIET, |f| f["cmd"] == "conv" && f.get("i").is_none() && f["cid"] == cid)
        .await
        .unwrap()
        .into_iter()
        .map(|f| {
            assert!(f["udate"].as_str().is_some(), "{f}");
            assert_eq!(f["peerId"], json!(c.peer_id), "pushes name their recipient");
            (
                f["op"].as_str().unwrap().to_owned(),
                f["initBy"].as_str().unwrap().to_owned(),
                f.get("m").cloned().unwrap_or(Value::Null),
            )
        })
        .collect()
}

fn p(op: &str, by: &str, m: Value) -> (String, String, Value) {
    (op.to_owned(), by.to_owned(), m)
}

#[tokio::test]
async fn membership_push_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut a = server.open("a").await;
    let mut t = server.open("t").await;
    let mut o = server.open("o").await;

    // A creates with O: both get joined + members-joined listing everyone.
    let cid = create(&mut a, &["o"]).await;
    assert_eq!(
        conv_pushes(&mut a, &cid).await,
        [p("joined", "a", Value::Null), p("members-joined", "a", json!(["a", "o"]))]
    );
    assert_eq!(
        conv_pushes(&mut o, &cid).await,
        [p("joined", "a", Value::Null), p("members-joined", "a", json!(["a", "o"]))]
    );
    assert!(conv_pushes(&mut t, &cid).await.is_empty());

    // A adds T.
    let r = a.request(json!({"cmd": "conv", "op": "add", "cid": cid, "m": ["t"]})).await.unwrap();
    assert_eq!(
        (r["op"].clone(), r["allowedPids"].clone(), r["failedPids"].clone()),
        (json!("added"), json!(["t"]), json!([]))
    );
    assert_eq!(conv_pushes(&mut a, &cid).await, [p("members-joined", "a", json!(["t"]))]);
    assert_eq!(
        conv_pushes(&mut t, &cid).await,
        [p("joined", "a", Value::Null), p("members-joined", "a", json!(["t"]))]
    );
    assert_eq!(conv_pushes(&mut o, &cid).await, [p("members-joined", "a", json!(["t"]))]);

    // A removes T.
    let r = a.request(json!({"cmd": "conv", "op": "remove", "cid": cid, "m": ["t"]})).await.unwrap();
    assert_eq!(r["op"], "removed");
    assert_eq!(conv_pushes(&mut a, &cid).await, [p("members-left", "a", json!(["t"]))]);
    assert_eq!(conv_pushes(&mut t, &cid).await, [p("left", "a", Value::Null)]);
    assert_eq!(conv_pushes(&mut o, &cid).await, [p("members-left", "a", json!(["t"]))]);

    // T joins itself.
    let r = t.request(json!({"cmd": "conv", "op": "add", "cid": cid, "m": ["t"]})).await.unwrap();
    assert_eq!(r["op"], "added");
    assert_eq!(
        conv_pushes(&mut t, &cid).await,
        [p("joined", "t", Value::Null), p("members-joined", "t", json!(["t"]))]
    );
    assert_eq!(conv_pushes(&mut a, &cid).await, [p("members-joined", "t", json!(["t"]))]);
    assert_eq!(conv_pushes(&mut o, &cid).await, [p("members-joined", "t", json!(["t"]))]);

    // T quits.
    let r = t.request(json!({"cmd": "conv", "op": "remove", "cid": cid, "m": ["t"]})).await.unwrap();
    assert_eq!(r["op"], "removed");
    assert_eq!(conv_pushes(&mut t, &cid).await, [p("left", "t", Value::Null)]);
    assert_eq!(conv_pushes(&mut a, &cid).await, [p("members-left", "t", json!(["t"]))]);
    assert_eq!(conv_pushes(&mut o, &cid).await, [p("members-left", "t", json!(["t"]))]);

    // A non-member may not add or remove others; a missing conversation is 4303.
    let r = t.request(json!({"cmd": "conv", "op": "add", "cid": cid, "m": ["x"]})).await.unwrap();
    assert_eq!(error_code(&r), 4317);
    let r = t.request(json!({"cmd": "conv", "op": "remove", "cid": cid, "m": ["o"]})).await.unwrap();
    assert_eq!(error_code(&r), 4317);
    let r = t
        .request(json!({"cmd": "conv", "op": "add", "cid": "000000000000000000000000", "m": ["t"]}))
        .await
        .unwrap();
    assert_eq!(error_code(&r), 4303);
}

#[tokio::test]
async fn unique_conversations_are_found_again() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut a = server.open("a").await;
    let mut b = server.open("b").await;
    let start =
        |m: Value| json!({"cmd": "conv", "op": "start", "m": m, "unique": true, "attr": {"name": "dm"}});
    let first = a.request(start(json!(["b"]))).await.unwrap()["cid"].clone();
    let again = b.request(start(json!(["a", "b"]))).await.unwrap()["cid"].clone();
    assert_eq!(first, again);
    let other = a.request(start(json!(["b", "c"]))).await.unwrap()["cid"].clone();
    assert_ne!(first, other);
    let not_unique =
        a.request(json!({"cmd": "conv", "op": "start", "m": ["b"]})).await.unwrap()["cid"].clone();
    assert_ne!(first, not_unique);
}

#[tokio::test]
async fn chat_rooms_have_online_members_and_no_membership_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut a = server.open("a").await;
    let mut b = server.open("b").await;
    let r = a
        .request(json!({"cmd": "conv", "op": "start", "m": [], "transient": true, "attr": {"name": "lobby"}}))
        .await
        .unwrap();
    let cid = r["cid"].as_str().unwrap().to_owned();
    assert!(conv_pushes(&mut a, &cid).await.is_empty());
    let r = b.request(json!({"cmd": "conv", "op": "add", "cid": cid, "m": ["b"]})).await.unwrap();
    assert_eq!(r["allowedPids"], json!(["b"]));
    let r = b.request(json!({"cmd": "conv", "op": "count", "cid": cid})).await.unwrap();
    assert_eq!((r["op"].clone(), r["count"].clone()), (json!("result"), json!(2)));
    let r = b.request(json!({"cmd": "conv", "op": "add", "cid": cid, "m": ["c"]})).await.unwrap();
    assert_eq!(r["failedPids"][0]["pids"], json!(["c"]), "others cannot be invited to a room");
    common::send(&mut a, &cid, "hello room").await;
    let d = b.wait_for("room message", common::is_direct(&cid)).await.unwrap();
    assert_eq!(d["msg"], "hello room");
    let q = b.request(json!({"cmd": "conv", "op": "query", "where": {"tr": true}})).await.unwrap();
    assert_eq!(q["results"][0]["objectId"], json!(cid));
    assert_eq!(q["results"][0]["tr"], true);
    b.request(json!({"cmd": "conv", "op": "remove", "cid": cid, "m": ["b"]})).await.unwrap();
    a.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = b.request(json!({"cmd": "conv", "op": "count", "cid": cid})).await.unwrap();
    assert_eq!(r["count"], 0);
    assert!(conv_pushes(&mut b, &cid).await.is_empty());
}

#[tokio::test]
async fn queries() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut a = server.open("alice").await;
    let mut ids = Vec::new();
    for (i, name) in ["Lunch Club", "lunch plans", "Work", "a.b*c"].iter().enumerate() {
        let r = a.request(json!({"cmd": "conv", "op": "start", "m": ["bob"], "attr": {"name": name, "attr": {"level": i, "type": if i % 2 == 0 { "even" } else { "odd" }}}})).await.unwrap();
        ids.push(r["cid"].as_str().unwrap().to_owned());
    }
    common::send(&mut a, &ids[2], "latest").await;
    let mut c = server.open("carol").await;
    let carols = create(&mut c, &["dave"]).await;
    let query = |w: Value, extra: Value| {
        let mut q = json!({"cmd": "conv", "op": "query", "where": w, "sort": "-lm", "limit": 10});
        if let (Value::Object(q), Value::Object(e)) = (&mut q, extra) {
            q.extend(e);
        }
        q
    };
    let names = |r: &Value| {
        r["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };

    // 2.4.0's default query: array-contains on m, sorted by last message.
    let r = a.request(query(json!({"m": "alice"}), json!({}))).await.unwrap();
    assert_eq!(r["op"], "results");
    assert_eq!(r["results"].as_array().unwrap().len(), 4);
    assert_eq!(r["results"][0]["name"], "Work", "-lm puts the conversation with a message first");
    assert_eq!(r["results"][0]["lm"]["__type"], "Date");
    assert!(r["results"][0]["createdAt"].as_str().unwrap().ends_with('Z'));
    assert!(r["results"][0].get("msg").is_none(), "last message only on request");
    // Empty where = my conversations.
    let r = c.request(json!({"cmd": "conv", "op": "query"})).await.unwrap();
    assert_eq!(r["results"].as_array().unwrap().len(), 1);
    assert_eq!(r["results"][0]["objectId"], json!(carols));
    // $regex with \Q..\E and options, dotted paths, $in on objectId with limit 999.
    let r = a
        .request(query(json!({"name": {"$regex": "^\\Qlunch\\E", "$options": "i"}}), json!({"sort": "name"})))
        .await
        .unwrap();
    assert_eq!(names(&r), ["Lunch Club", "lunch plans"]);
    let r = a.request(query(json!({"name": {"$regex": "\\Qa.b*c\\E"}}), json!({}))).await.unwrap();
    assert_eq!(names(&r), ["a.b*c"]);
    let r =
        a.request(query(json!({"attr.type": "even", "attr.level": {"$gt": 0}}), json!({}))).await.unwrap();
    assert_eq!(names(&r), ["Work"]);
    let r = a
        .request(query(
            json!({"objectId": {"$in": [ids[0], ids[3], carols]}}),
            json!({"limit": 999, "sort": "createdAt"}),
        ))
        .await
        .unwrap();
    assert_eq!(r["results"].as_array().unwrap().len(), 3);
    assert!(r["results"][2].get("m").is_none(), "a non-member does not see members");
    assert_eq!(r["results"][0]["m"], json!(["alice", "bob"]));
    let r = a
        .request(query(
            json!({"m": {"$all": ["alice", "bob"]}, "name": {"$ne": "Work"}}),
            json!({"skip": 1, "limit": 1, "sort": "createdAt"}),
        ))
        .await
        .unwrap();
    assert_eq!(names(&r), ["lunch plans"]);
    let r = a
        .request(query(json!({"$or": [{"name": "Work"}, {"name": "a.b*c"}]}), json!({"sort": "-name"})))
        .await
        .unwrap();
    assert_eq!(names(&r), ["a.b*c", "Work"]);
    let r = a
        .request(query(
            json!({"m": {"$size": 2}, "name": {"$exists": true}, "nope": {"$exists": false}}),
            json!({}),
        ))
        .await
        .unwrap();
    assert_eq!(
        r["results"].as_array().unwrap().len(),
        4,
        "conditions on m only see the caller's conversations"
    );
    let r = a.request(query(json!({"m": "dave"}), json!({}))).await.unwrap();
    assert_eq!(r["results"], json!([]), "membership of others' conversations is private");
    // flag: 1 = compact, 2 = with last messages.
    let r = a.request(query(json!({"objectId": ids[2]}), json!({"flag": 3}))).await.unwrap();
    let conv = &r["results"][0];
    assert!(conv.get("m").is_none());
    assert_eq!(conv["msg"], "latest", "compact keeps the last message");
    let r = a.request(query(json!({"objectId": ids[2]}), json!({"flag": 2}))).await.unwrap();
    let conv = &r["results"][0];
    assert_eq!((conv["msg"].clone(), conv["msg_from"].clone()), (json!("latest"), json!("alice")));
    assert!(conv["msg_mid"].as_str().is_some() && conv["msg_timestamp"].as_i64().is_some());
    // Bad queries are 4310.
    let r = a.request(query(json!({"name": {"$near": 1}}), json!({}))).await.unwrap();
    assert_eq!(error_code(&r), 4310);
    let r = a.request(query(json!({"name": {"$regex": "("}}), json!({}))).await.unwrap();
    assert_eq!(error_code(&r), 4310);
}

#[tokio::test]
async fn count_and_update() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut a = server.open("a").await;
    let mut b = server.open("b").await;
    let mut x = server.open("x").await;
    let cid = create(&mut a, &["b", "c"]).await;
    let r = a.request(json!({"cmd": "conv", "op": "count", "cid": cid})).await.unwrap();
    assert_eq!(r["count"], 3);
    let r = a.request(json!({"cmd": "conv", "op": "update", "cid": cid, "attr": {"name": "renamed", "attr.color": "red"}})).await.unwrap();
    assert_eq!(r["op"], "updated");
    assert!(r["udate"].as_str().is_some());
    for c in [&mut a, &mut b] {
        let push = c.wait_for("updated push", is_conv("updated")).await.unwrap();
        assert_eq!(push["attr"], json!({"name": "renamed", "attr.color": "red"}));
        assert_eq!(push["initBy"], "a");
    }
    let r = x
        .request(json!({"cmd": "conv", "op": "update", "cid": cid, "attr": {"name": "hijack"}}))
        .await
        .unwrap();
    assert_eq!(error_code(&r), 4309);
    let r =
        a.request(json!({"cmd": "conv", "op": "update", "cid": cid, "attr": {"m": ["evil"]}})).await.unwrap();
    assert_eq!(error_code(&r), 4306);
    let r = a.request(json!({"cmd": "conv", "op": "query", "where": {"objectId": cid}})).await.unwrap();
    assert_eq!(r["results"][0]["name"], "renamed");
    assert_eq!(r["results"][0]["attr"], json!({"color": "red"}));
    let r =
        a.request(json!({"cmd": "conv", "op": "count", "cid": "000000000000000000000000"})).await.unwrap();
    assert_eq!(error_code(&r), 4303);
}

#[tokio::test]
async fn temporary_conversations() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut a = server.open("a").await;
    let mut b = server.open("b").await;
    let start = |m: Value, ttl: i64| json!({"cmd": "conv", "op": "start", "m": m, "tempConv": true, "tempConvTTL": ttl});
    let r = a.request(start(json!(["b"]), 3600)).await.unwrap();
    let cid = r["cid"].as_str().unwrap().to_owned();
    assert!(cid.starts_with("_tmp:"), "{r}");
    assert!((3590..=3600).contains(&r["tempConvTTL"].as_i64().unwrap()));
    assert_eq!(
        conv_pushes(&mut b, &cid).await,
        [p("joined", "a", Value::Null), p("members-joined", "a", json!(["a", "b"]))]
    );
    // The same member set, created by the other member: the same conversation.
    let again = b.request(start(json!(["a"]), 60)).await.unwrap();
    assert_eq!(again["cid"], json!(cid));
    // Not found by where, found by id, with its remaining ttl.
    let q = a.request(json!({"cmd": "conv", "op": "query", "where": {"m": "a"}})).await.unwrap();
    assert!(q["results"].as_array().unwrap().iter().all(|c| c["objectId"] != json!(cid)));
    let q = a.request(json!({"cmd": "conv", "op": "query", "tempConvIds": [cid]})).await.unwrap();
    assert_eq!(q["results"][0]["objectId"], json!(cid));
    assert_eq!(q["results"][0]["m"], json!(["a", "b"]));
    assert!(q["results"][0]["ttl"].as_i64().unwrap() > 3500);
    // Membership and attributes are fixed; more than 10 members is refused.
    let r = a.request(json!({"cmd": "conv", "op": "add", "cid": cid, "m": ["c"]})).await.unwrap();
    assert_eq!(error_code(&r), 4314);
    let r =
        a.request(json!({"cmd": "conv", "op": "update", "cid": cid, "attr": {"name": "x"}})).await.unwrap();
    assert_eq!(error_code(&r), 4314);
    let many: Vec<String> = (0..10).map(|n| format!("u{n}")).collect();
    let r = a.request(start(json!(many), 60)).await.unwrap();
    assert_eq!(error_code(&r), 4304);
    // Messages work; after expiry everything is 4323 and a new one replaces it.
    common::send(&mut a, &cid, "short-lived").await;
    let short = a.request(start(json!(["z"]), 1)).await.unwrap();
    let short_id = short["cid"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = a.request(json!({"cmd": "direct", "cid": short_id, "msg": "late"})).await.unwrap();
    assert_eq!(error_code(&r), 4323);
    let r = a.request(json!({"cmd": "logs", "cid": short_id})).await.unwrap();
    assert_eq!(error_code(&r), 4323);
    let renewed = a.request(start(json!(["z"]), 60)).await.unwrap();
    assert_ne!(renewed["cid"], json!(short_id));
}

#[tokio::test]
async fn mute_and_receipt_positions() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut a = server.open("a").await;
    let mut b = server.open("b").await;
    let cid = create(&mut a, &["b"]).await;
    let r = a.request(json!({"cmd": "conv", "op": "mute", "cid": cid})).await.unwrap();
    assert_eq!(r["op"], "updated");
    let q = a.request(json!({"cmd": "conv", "op": "query", "where": {"objectId": cid}})).await.unwrap();
    assert_eq!(q["results"][0]["mu"], json!(["a"]));
    a.request(json!({"cmd": "conv", "op": "unmute", "cid": cid})).await.unwrap();
    let q = a.request(json!({"cmd": "conv", "op": "query", "where": {"mu": "a"}})).await.unwrap();
    assert_eq!(q["results"], json!([]));
    let ack = common::send(&mut a, &cid, "hi").await;
    let d = b.wait_for("direct", common::is_direct(&cid)).await.unwrap();
    b.send(&json!({"cmd": "ack", "cid": cid, "mid": d["id"]})).await.unwrap();
    let t = ack["t"].as_i64().unwrap();
    let mut positions = json!(null);
    for _ in 0..50 {
        positions = a.request(json!({"cmd": "conv", "op": "max-read", "cid": cid})).await.unwrap();
        if positions["maxAckTimestamp"] == json!(t) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        (positions["maxAckTimestamp"].clone(), positions["maxReadTimestamp"].clone()),
        (json!(t), json!(0))
    );
    let all = a
        .request(json!({"cmd": "conv", "op": "max-read", "cid": cid, "queryAllMembers": true}))
        .await
        .unwrap();
    assert_eq!(
        all["maxReadTuples"],
        json!([
            {"pid": "a", "maxAckTimestamp": t, "maxReadTimestamp": 0},
            {"pid": "b", "maxAckTimestamp": t, "maxReadTimestamp": 0},
        ])
    );
    let r = server.open("x").await.request(json!({"cmd": "conv", "op": "mute", "cid": cid})).await.unwrap();
    assert_eq!(error_code(&r), 4317);
}

/// The v2 JSON protocol has no roles and 2.x SDKs ignore `failedPids`: the creator's own
/// leave succeeds, and a removal of the creator by anyone else is refused whole with an
/// error (a partial success would read as complete). The protobuf side is in protobuf.rs.
#[tokio::test]
async fn a_v2_creator_leaves_but_nobody_else_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut owner = server.open("owner").await;
    let mut b = server.open("b").await;
    let mut c = server.open("c").await;
    let cid = create(&mut owner, &["b", "c"]).await;
    for m in [json!(["owner"]), json!(["owner", "c"])] {
        let r = b.request(json!({"cmd": "conv", "op": "remove", "cid": cid, "m": m})).await.unwrap();
        assert_eq!(error_code(&r), 4326, "{r}");
        assert_eq!(r["reason"], "CONVERSATION_NEED_OWNER");
    }
    let count = b.request(json!({"cmd": "conv", "op": "count", "cid": cid})).await.unwrap();
    assert_eq!(count["count"], 3, "a refused removal removes nobody");
    // Drop the creation pushes, then the creator leaves.
    for cl in [&mut owner, &mut b, &mut c] {
        conv_pushes(cl, &cid).await;
    }
    let r = owner.request(json!({"cmd": "conv", "op": "remove", "cid": cid, "m": ["owner"]})).await.unwrap();
    assert_eq!(
        (r["op"].clone(), r["allowedPids"].clone(), r["failedPids"].clone()),
        (json!("removed"), json!(["owner"]), json!([]))
    );
    assert_eq!(conv_pushes(&mut owner, &cid).await, [p("left", "owner", Value::Null)]);
    assert_eq!(conv_pushes(&mut b, &cid).await, [p("members-left", "owner", json!(["owner"]))]);
    // It no longer receives the conversation's messages and is no longer a member.
    let ack = send(&mut b, &cid, "after the creator left").await;
    let got = c.wait_for("message", is_direct(&cid)).await.unwrap();
    assert_eq!(got["id"], ack["uid"]);
    assert!(owner.drain(QUIET, is_direct(&cid)).await.unwrap().is_empty(), "the creator left");
    let q = b.request(json!({"cmd": "conv", "op": "query", "where": {"objectId": cid}})).await.unwrap();
    assert_eq!(q["results"][0]["m"], json!(["b", "c"]));
    assert_eq!(q["results"][0]["c"], "owner", "the record still names its creator");
    let r = owner.request(json!({"cmd": "direct", "cid": cid, "msg": "x"})).await.unwrap();
    assert_eq!(error_code(&r), 4401, "a former member cannot send");
}

/// A minimal HTTP/1.1 POST on loopback; returns (status, JSON body).
async fn post(server: &Server, path: &str, headers: &[(&str, &str)], body: &Value) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.http.trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = body.to_string();
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let json = out.split("\r\n\r\n").nth(1).and_then(|b| serde_json::from_str(b).ok()).unwrap_or(Value::Null);
    (status, json)
}

#[tokio::test]
async fn system_conversations() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let admin = [("X-LC-Id", "test-app"), ("X-LC-Key", "test-master,master")];
    // Only the app's backend, with the master key, creates them.
    let (status, _) = post(
        &server,
        "/1.2/rtm/service-conversations",
        &[("X-LC-Id", "test-app"), ("X-LC-Key", "test-key")],
        &json!({"name": "news"}),
    )
    .await;
    assert_eq!(status, 401);
    let (status, created) =
        post(&server, "/1.2/rtm/service-conversations", &admin, &json!({"name": "news"})).await;
    assert_eq!(status, 201, "{created}");
    let cid = created["objectId"].as_str().unwrap().to_owned();
    let mut a = server.open("a").await;
    let mut b = server.open("b").await;
    let q = a.request(json!({"cmd": "conv", "op": "query", "where": {"sys": true}})).await.unwrap();
    assert_eq!(
        (q["results"][0]["objectId"].clone(), q["results"][0]["name"].clone()),
        (json!(cid), json!("news"))
    );
    // Subscribing is joining oneself; others cannot be subscribed.
    for c in [&mut a, &mut b] {
        let r = c
            .request(json!({"cmd": "conv", "op": "add", "cid": cid, "m": [c.peer_id.clone()]}))
            .await
            .unwrap();
        assert_eq!(r["op"], "added");
    }
    let r = a.request(json!({"cmd": "conv", "op": "add", "cid": cid, "m": ["zed"]})).await.unwrap();
    assert_eq!(r["failedPids"][0]["pids"], json!(["zed"]));
    // A broadcast reaches every subscriber.
    let (status, sent) = post(
        &server,
        &format!("/1.2/rtm/service-conversations/{cid}/broadcasts"),
        &admin,
        &json!({"from_client": "sys", "message": "hello all"}),
    )
    .await;
    assert_eq!(status, 200, "{sent}");
    for c in [&mut a, &mut b] {
        let d = c.wait_for("broadcast", common::is_direct(&cid)).await.unwrap();
        assert_eq!((d["msg"].clone(), d["fromPeerId"].clone()), (json!("hello all"), json!("sys")));
        assert_eq!(d["id"], sent["msg-id"]);
    }
    // A subscriber's own message goes to the app, not to the other subscribers.
    common::send(&mut a, &cid, "feedback").await;
    assert!(b.drain(QUIET, common::is_direct(&cid)).await.unwrap().is_empty());
    // Unsubscribed: no more broadcasts.
    b.request(json!({"cmd": "conv", "op": "remove", "cid": cid, "m": ["b"]})).await.unwrap();
    post(
        &server,
        &format!("/1.2/rtm/service-conversations/{cid}/broadcasts"),
        &admin,
        &json!({"from_client": "sys", "message": "second"}),
    )
    .await;
    a.wait_for("second broadcast", |f| f["msg"] == "second").await.unwrap();
    assert!(b.drain(QUIET, common::is_direct(&cid)).await.unwrap().is_empty());
    let (status, _) = post(
        &server,
        "/1.2/rtm/service-conversations/000000000000000000000000/broadcasts",
        &admin,
        &json!({"from_client": "sys", "message": "x"}),
    )
    .await;
    assert_eq!(status, 404);
}

//! Messages: ack after commit, fan-out to every device but the sending one, receipts,
//! transient messages, history paging, offline delivery by cursor, slow consumers and
//! survival across a SIGKILL.
#![allow(clippy::unwrap_used)]

mod common;

use common::{APP, Server, Start, create, error_code, is_direct, send};
use confab_testkit::Client;
use serde_json::{Value, json};
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn send_ack_fan_out_receipts_and_multi_device() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut alice = server.open("alice").await;
    let mut alice2 = server.open("alice").await;
    let mut bob = server.open("bob").await;
    let mut eve = server.open("eve").await;
    let cid = create(&mut alice, &["bob"]).await;

    let ack = alice.request(json!({"cmd": "direct", "cid": cid, "msg": "hi", "r": 1})).await.unwrap();
    let (uid, t) = (ack["uid"].as_str().unwrap().to_owned(), ack["t"].as_i64().unwrap());
    assert_eq!(uid.len(), 22);
    let d = bob.wait_for("direct", is_direct(&cid)).await.unwrap();
    assert_eq!(
        (
            d["id"].as_str().unwrap(),
            d["timestamp"].as_i64().unwrap(),
            d["fromPeerId"].as_str().unwrap(),
            d["msg"].as_str().unwrap()
        ),
        (uid.as_str(), t, "alice", "hi")
    );
    assert!(d.get("i").is_none());
    // The sender's other device gets it, the sending socket does not.
    let d2 = alice2.wait_for("direct on the other device", is_direct(&cid)).await.unwrap();
    assert_eq!(d2["id"], json!(uid));
    assert!(alice.drain(QUIET, is_direct(&cid)).await.unwrap().is_empty());
    assert!(eve.drain(QUIET, is_direct(&cid)).await.unwrap().is_empty(), "non-members get nothing");

    // Bob acks: alice's devices get the receipt.
    bob.send(&json!({"cmd": "ack", "cid": cid, "mid": uid})).await.unwrap();
    for a in [&mut alice, &mut alice2] {
        let rcp = a.wait_for("rcp", |f| f["cmd"] == "rcp").await.unwrap();
        assert_eq!(
            (rcp["cid"].clone(), rcp["id"].clone(), rcp["from"].clone()),
            (json!(cid), json!(uid), json!("bob"))
        );
        assert!(rcp["t"].as_i64().unwrap() >= t);
    }
    // No receipt requested, none sent.
    let ack = send(&mut alice, &cid, "no receipt").await;
    let d = bob.wait_for("direct", is_direct(&cid)).await.unwrap();
    bob.send(&json!({"cmd": "ack", "cid": cid, "mid": d["id"]})).await.unwrap();
    assert!(alice.drain(QUIET, |f| f["cmd"] == "rcp").await.unwrap().is_empty());
    assert!(ack["t"].as_i64().unwrap() > t, "timestamps grow within a conversation");

    // Non-members cannot send; unknown conversations are 4401 too.
    let r = eve.request(json!({"cmd": "direct", "cid": cid, "msg": "spam"})).await.unwrap();
    assert_eq!(error_code(&r), 4401);
    let r =
        eve.request(json!({"cmd": "direct", "cid": "000000000000000000000000", "msg": "x"})).await.unwrap();
    assert_eq!(error_code(&r), 4401);
    let r = eve.request(json!({"cmd": "logs", "cid": cid})).await.unwrap();
    assert_eq!(error_code(&r), 4312);
}

#[tokio::test]
async fn messages_arrive_in_send_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut alice = server.open("alice").await;
    let mut bob = server.open("bob").await;
    let cid = create(&mut alice, &["bob"]).await;
    // Pipelined sends: no waiting for acks in between.
    for n in 0..300 {
        alice
            .send(&json!({"cmd": "direct", "cid": cid, "msg": format!("{n}"), "i": 10_000 + n}))
            .await
            .unwrap();
    }
    let mut acks = Vec::new();
    for n in 0..300 {
        acks.push(alice.wait_for("ack", |f| f["i"] == json!(10_000 + n)).await.unwrap());
    }
    let mut got = Vec::new();
    while got.len() < 300 {
        got.push(bob.wait_for("direct", is_direct(&cid)).await.unwrap());
    }
    let bodies: Vec<String> = got.iter().map(|d| d["msg"].as_str().unwrap().to_owned()).collect();
    assert_eq!(bodies, (0..300).map(|n| n.to_string()).collect::<Vec<_>>());
    assert!(got.windows(2).all(|w| w[0]["timestamp"].as_i64() < w[1]["timestamp"].as_i64()));
    assert!(acks.windows(2).all(|w| w[0]["t"].as_i64() < w[1]["t"].as_i64()));
}

#[tokio::test]
async fn transient_messages_are_live_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut alice = server.open("alice").await;
    let mut bob = server.open("bob").await;
    let cid = create(&mut alice, &["bob", "carol"]).await;
    alice.send(&json!({"cmd": "direct", "cid": cid, "msg": "typing", "transient": true})).await.unwrap();
    let d = bob.wait_for("transient direct", is_direct(&cid)).await.unwrap();
    assert_eq!((d["msg"].clone(), d["transient"].clone()), (json!("typing"), json!(true)));
    let logs = alice.request(json!({"cmd": "logs", "cid": cid})).await.unwrap();
    assert_eq!(logs["logs"], json!([]));
    // carol was offline: she does not get it later.
    let mut carol = server.open("carol").await;
    assert!(carol.drain(QUIET, is_direct(&cid)).await.unwrap().is_empty());
}

#[tokio::test]
async fn history_pages_oldest_first_without_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut alice = server.open("alice").await;
    let cid = create(&mut alice, &["bob"]).await;
    let mut sent = Vec::new();
    for n in 0..30 {
        let body = if n % 3 == 0 { json!({"_lctype": -2, "n": n}).to_string() } else { format!("m{n}") };
        let ack = send(&mut alice, &cid, &body).await;
        sent.push((ack["uid"].as_str().unwrap().to_owned(), ack["t"].as_i64().unwrap(), body));
    }
    let ids = |r: &Value| {
        r["logs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["msgId"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let expect = |range: std::ops::Range<usize>| sent[range].iter().map(|s| s.0.clone()).collect::<Vec<_>>();
    // 2.4.0 paging: newest page first, then older pages anchored at logs[0].
    let page1 = alice.request(json!({"cmd": "logs", "cid": cid, "limit": 10})).await.unwrap();
    assert_eq!(ids(&page1), expect(20..30));
    let first = &page1["logs"][0];
    assert_eq!(
        (first["from"].clone(), first["data"].clone(), first["timestamp"].clone()),
        (json!("alice"), json!(sent[20].2), json!(sent[20].1))
    );
    let page2 = alice
        .request(
            json!({"cmd": "logs", "cid": cid, "limit": 10, "t": first["timestamp"], "mid": first["msgId"]}),
        )
        .await
        .unwrap();
    assert_eq!(ids(&page2), expect(10..20));
    let page3 = alice.request(json!({"cmd": "logs", "cid": cid, "limit": 20, "t": page2["logs"][0]["timestamp"], "mid": page2["logs"][0]["msgId"]})).await.unwrap();
    assert_eq!(ids(&page3), expect(0..10));
    // Default limit 20; explicit 0 is empty.
    assert_eq!(ids(&alice.request(json!({"cmd": "logs", "cid": cid})).await.unwrap()), expect(10..30));
    assert!(ids(&alice.request(json!({"cmd": "logs", "cid": cid, "limit": 0})).await.unwrap()).is_empty());
    // Boundaries (protocol §6.14) on m1 < m2 < m3 = sent[5..8].
    let (t1, t3) = (sent[5].1, sent[7].1);
    let q = |extra: Value| {
        let mut q = json!({"cmd": "logs", "cid": cid, "t": t3, "tt": t1, "limit": 10});
        if let (Value::Object(q), Value::Object(e)) = (&mut q, extra) {
            q.extend(e);
        }
        q
    };
    assert_eq!(ids(&alice.request(q(json!({}))).await.unwrap()), expect(6..7));
    assert_eq!(ids(&alice.request(q(json!({"tIncluded": true}))).await.unwrap()), expect(6..8));
    assert_eq!(ids(&alice.request(q(json!({"ttIncluded": true}))).await.unwrap()), expect(5..7));
    let newer = json!({"cmd": "logs", "cid": cid, "t": t1, "tt": t3, "direction": 2, "limit": 10});
    assert_eq!(ids(&alice.request(newer.clone()).await.unwrap()), expect(6..7));
    let mut with_start = newer.clone();
    with_start["tIncluded"] = json!(true);
    assert_eq!(ids(&alice.request(with_start).await.unwrap()), expect(5..7));
    // NEW from the beginning takes the oldest messages.
    assert_eq!(
        ids(&alice.request(json!({"cmd": "logs", "cid": cid, "direction": 2, "limit": 3})).await.unwrap()),
        expect(0..3)
    );
    // _lctype filter.
    let typed = alice.request(json!({"cmd": "logs", "cid": cid, "lctype": -2, "limit": 100})).await.unwrap();
    assert_eq!(typed["logs"].as_array().unwrap().len(), 10);
    assert!(
        ids(&alice.request(json!({"cmd": "logs", "cid": cid, "lctype": 1000})).await.unwrap()).is_empty()
    );
    assert!(ids(&alice.request(json!({"cmd": "logs", "cid": cid, "t": 1})).await.unwrap()).is_empty());
}

/// Collects `n` directs for `cid`, acking each as 2.4.0 does.
async fn receive_and_ack(c: &mut Client, cid: &str, n: usize) -> Vec<Value> {
    let mut got = Vec::new();
    while got.len() < n {
        let d = c.wait_for("direct", is_direct(cid)).await.unwrap();
        c.send(&json!({"cmd": "ack", "cid": cid, "mid": d["id"]})).await.unwrap();
        got.push(d);
    }
    got
}

#[tokio::test]
async fn offline_backlog_is_delivered_whole_in_order_once_acked() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_limits(
        dir.path(),
        r#"
offline_page = 7
offline_window = 10
"#,
    );
    let mut alice = server.open("alice").await;
    let cid = create(&mut alice, &["bob"]).await;
    let other = create(&mut alice, &["bob"]).await;
    let mut bodies = Vec::new();
    for n in 0..45 {
        bodies.push(format!("offline {n}"));
        send(&mut alice, &cid, &bodies[n]).await;
    }
    send(&mut alice, &other, "elsewhere").await;
    // Bob logs in: everything, oldest first, more than 20, paced by his acks.
    let mut bob = server.open("bob").await;
    let got = receive_and_ack(&mut bob, &cid, 45).await;
    assert_eq!(got.iter().map(|d| d["msg"].as_str().unwrap().to_owned()).collect::<Vec<_>>(), bodies);
    assert!(got.iter().all(|d| d["offline"] == true && d["fromPeerId"] == "alice"));
    let elsewhere = receive_and_ack(&mut bob, &other, 1).await;
    assert_eq!(elsewhere[0]["msg"], "elsewhere");
    // Live messages continue after the backlog.
    send(&mut alice, &cid, "live").await;
    let live = receive_and_ack(&mut bob, &cid, 1).await;
    assert_eq!((live[0]["msg"].clone(), live[0].get("offline")), (json!("live"), None));
    tokio::time::sleep(Duration::from_millis(300)).await;
    bob.close().await;
    // Acknowledged: nothing comes again.
    let mut bob = server.open("bob").await;
    assert!(bob.drain(Duration::from_millis(500), |f| f["cmd"] == "direct").await.unwrap().is_empty());
}

#[tokio::test]
async fn unacknowledged_messages_come_again_and_gaps_are_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut alice = server.open("alice").await;
    let cid = create(&mut alice, &["bob"]).await;
    let mut bob = server.open("bob").await;
    for n in 0..3 {
        send(&mut alice, &cid, &format!("m{n}")).await;
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(bob.wait_for("direct", is_direct(&cid)).await.unwrap());
    }
    // Ack only the last one: the first two were never acknowledged.
    bob.send(&json!({"cmd": "ack", "cid": cid, "mid": got[2]["id"]})).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    bob.close().await;
    let mut bob = server.open("bob").await;
    let again = receive_and_ack(&mut bob, &cid, 3).await;
    assert_eq!(
        again.iter().map(|d| d["msg"].clone()).collect::<Vec<_>>(),
        [json!("m0"), json!("m1"), json!("m2")]
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    bob.close().await;
    let mut bob = server.open("bob").await;
    assert!(bob.drain(Duration::from_millis(500), is_direct(&cid)).await.unwrap().is_empty());
}

#[tokio::test]
async fn acknowledged_messages_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let mut alice = server.open("alice").await;
    let cid = create(&mut alice, &["bob"]).await;
    let mut acked = Vec::new();
    for n in 0..200 {
        alice
            .send(&json!({"cmd": "direct", "cid": cid, "msg": format!("{n}"), "i": 1000 + n}))
            .await
            .unwrap();
    }
    for n in 0..200 {
        acked.push(
            alice.wait_for("ack", |f| f["i"] == json!(1000 + n)).await.unwrap()["uid"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    server.kill();
    let server = Server::start_with(dir.path(), &["--app", "test-app:test-key:test-master"]);
    let mut alice = server.open("alice").await;
    let logs = alice.request(json!({"cmd": "logs", "cid": cid, "limit": 1000})).await.unwrap();
    let ids: Vec<String> =
        logs["logs"].as_array().unwrap().iter().map(|l| l["msgId"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, acked);
    // Bob was offline all along: he gets all 200 after the restart.
    let mut bob = server.open("bob").await;
    let got = receive_and_ack(&mut bob, &cid, 200).await;
    assert_eq!(got.iter().map(|d| d["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>(), acked);
    // New messages continue after the old ones.
    let ack = send(&mut alice, &cid, "after restart").await;
    let last_before: i64 = logs["logs"][199]["timestamp"].as_i64().unwrap();
    assert!(ack["t"].as_i64().unwrap() > last_before);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_not_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_limits(
        dir.path(),
        r#"
outbound_queue_bytes = 262144
message_bytes = 5120
"#,
    );
    let mut alice = server.open("alice").await;
    let cid = create(&mut alice, &["bob"]).await;
    // bob opens and then never reads. He connects to a node directly: a balancer in
    // between (a cluster's) would buffer megabytes more before the node sees him stall.
    let node = server.node_urls().pop().unwrap();
    let mut bob = Client::open(&node, APP, "bob", json!({})).await.unwrap();
    let body = "z".repeat(5000);
    let mut closed = false;
    for batch in 0..200 {
        // Pipelined in windows of 20 (within alice's own queue), reading her acks so she
        // is not a slow consumer herself.
        for n in 0..20 {
            alice
                .send(&json!({"cmd": "direct", "cid": cid, "msg": body, "i": batch * 20 + n + 10}))
                .await
                .unwrap();
        }
        for n in 0..20 {
            alice.wait_for("ack", |f| f["i"] == json!(batch * 20 + n + 10)).await.unwrap();
        }
        let online =
            alice.request(json!({"cmd": "session", "op": "query", "sessionPeerIds": ["bob"]})).await.unwrap();
        if online["onlineSessionPeerIds"] == json!([]) {
            closed = true;
            break;
        }
    }
    assert!(closed, "the slow consumer was never disconnected");
    // bob's socket carries the close code once he reads again.
    let code = loop {
        match bob.wait_for("close", |_| false).await {
            Err(confab_testkit::ClientError::Closed(code)) => break code,
            Err(e) => panic!("{e}"),
            Ok(_) => {}
        }
    };
    assert_eq!(code, Some(1013));
    // The close is logged once, with its code.
    let bob_closed = || {
        server
            .logs()
            .lines()
            .filter(|l| l.contains("session closed") && l.contains(" client=bob "))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    for _ in 0..100 {
        if !bob_closed().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let lines = bob_closed();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("code=1013"), "{lines:#?}");
    // He loses nothing: a new session gets everything after his cursor.
    let mut bob = server.open("bob").await;
    let first = bob.wait_for("direct", is_direct(&cid)).await.unwrap();
    assert_eq!(first["offline"], true);
}

#[tokio::test]
async fn a_resent_message_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut alice = server.open("alice").await;
    let mut bob = server.open("bob").await;
    let cid = create(&mut alice, &["bob"]).await;
    // Pipelined duplicate (the original is still committing) and a late duplicate.
    let frame = |i: i32| json!({"cmd": "direct", "cid": cid, "msg": "once", "dt": "token-1", "i": i});
    alice.send(&frame(901)).await.unwrap();
    alice.send(&frame(902)).await.unwrap();
    let a1 = alice.wait_for("ack 901", |f| f["i"] == 901).await.unwrap();
    let a2 = alice.wait_for("ack 902", |f| f["i"] == 902).await.unwrap();
    let a3 =
        alice.request(json!({"cmd": "direct", "cid": cid, "msg": "once", "dt": "token-1"})).await.unwrap();
    assert_eq!((a1["uid"].clone(), a1["t"].clone()), (a2["uid"].clone(), a2["t"].clone()));
    assert_eq!((a1["uid"].clone(), a1["t"].clone()), (a3["uid"].clone(), a3["t"].clone()));
    // Another sender's token is its own.
    let mut bob_send =
        bob.request(json!({"cmd": "direct", "cid": cid, "msg": "mine", "dt": "token-1"})).await.unwrap();
    assert_ne!(bob_send["uid"].take(), a1["uid"]);
    let got = bob.drain(QUIET, is_direct(&cid)).await.unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    let logs = alice.request(json!({"cmd": "logs", "cid": cid})).await.unwrap();
    assert_eq!(logs["logs"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn edit_and_recall() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut alice = server.open("alice").await;
    let mut alice2 = server.open("alice").await;
    let mut bob = server.open("bob").await;
    let cid = create(&mut alice, &["bob"]).await;
    let first = send(&mut alice, &cid, "typo").await;
    let last = send(&mut alice, &cid, "oops").await;
    let patch = |mid: &Value, recall: bool, data: Option<&str>| json!({"cmd": "patch", "op": "modify", "patches": [{"cid": cid, "mid": mid, "recall": recall, "data": data}]});
    let r = alice.request(patch(&first["uid"], false, Some("fixed"))).await.unwrap();
    assert_eq!(r["op"], "modified");
    let edited_at = r["lastPatchTime"].as_i64().unwrap();
    for c in [&mut bob, &mut alice2] {
        let push = c.wait_for("patch", |f| f["cmd"] == "patch").await.unwrap();
        let p = &push["patches"][0];
        assert_eq!(
            (p["mid"].clone(), p["data"].clone(), p["recall"].clone(), p["from"].clone()),
            (first["uid"].clone(), json!("fixed"), json!(false), json!("alice"))
        );
        assert_eq!(p["timestamp"], first["t"]);
    }
    assert!(
        alice.drain(QUIET, |f| f["cmd"] == "patch").await.unwrap().is_empty(),
        "not echoed to the editing session"
    );
    alice.request(patch(&last["uid"], true, None)).await.unwrap();
    // Others may not touch alice's messages; unknown ids are 4404.
    let r = bob.request(patch(&first["uid"], true, None)).await.unwrap();
    assert_eq!(error_code(&r), 4403);
    let r = alice.request(patch(&json!("no-such-id"), true, None)).await.unwrap();
    assert_eq!(error_code(&r), 4404);
    // History and the last message show the new bodies at the same positions.
    let logs = alice.request(json!({"cmd": "logs", "cid": cid})).await.unwrap();
    let logs = logs["logs"].as_array().unwrap();
    assert_eq!((logs[0]["data"].clone(), logs[0]["timestamp"].clone()), (json!("fixed"), first["t"].clone()));
    assert_eq!(logs[0]["patchTimestamp"], json!(edited_at));
    assert_eq!(logs[1]["data"], json!(r#"{"_lctype":-127}"#));
    let q = alice
        .request(json!({"cmd": "conv", "op": "query", "where": {"objectId": cid}, "flag": 2}))
        .await
        .unwrap();
    assert_eq!(q["results"][0]["msg"], json!(r#"{"_lctype":-127}"#));
}

#[tokio::test]
async fn a_will_is_sent_when_the_session_ends_abnormally() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut alice = server.open("alice").await;
    let mut bob = server.open("bob").await;
    let cid = create(&mut alice, &["bob"]).await;
    let ack = alice
        .request(json!({"cmd": "direct", "cid": cid, "msg": "alice went away", "will": true}))
        .await
        .unwrap();
    assert_eq!(ack["cmd"], "ack");
    assert!(bob.drain(QUIET, is_direct(&cid)).await.unwrap().is_empty(), "held while alice is connected");
    drop(alice); // the socket just goes away
    let d = bob.wait_for("the will", is_direct(&cid)).await.unwrap();
    assert_eq!((d["msg"].clone(), d["fromPeerId"].clone()), (json!("alice went away"), json!("alice")));
    // A logout drops the will.
    let mut carol = server.open("carol").await;
    let cid2 = create(&mut carol, &["bob"]).await;
    carol.request(json!({"cmd": "direct", "cid": cid2, "msg": "never", "will": true})).await.unwrap();
    carol.request(json!({"cmd": "session", "op": "close"})).await.unwrap();
    drop(carol);
    assert!(bob.drain(QUIET, is_direct(&cid2)).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_fast_sender_with_thousands_in_flight_gets_every_ack_and_stays_connected() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut alice = server.open("alice").await;
    let cid = create(&mut alice, &["bob"]).await;
    // 3000 messages pipelined without reading a single ack: the store commits them in
    // groups, and the acks of a group land on alice's queue together.
    const N: i64 = 3000;
    for n in 0..N {
        alice
            .send(&json!({"cmd": "direct", "cid": cid, "msg": format!("m{n}"), "i": 10_000 + n}))
            .await
            .unwrap();
    }
    let mut acks = 0;
    for n in 0..N {
        let ack = alice.wait_for("ack", |f| f["i"] == json!(10_000 + n)).await.unwrap();
        assert_eq!(ack["cmd"], "ack", "{ack}");
        assert!(ack.get("code").is_none(), "{ack}");
        acks += 1;
    }
    assert_eq!(acks, N);
    // Still connected: a request after the burst is answered.
    let online =
        alice.request(json!({"cmd": "session", "op": "query", "sessionPeerIds": ["alice"]})).await.unwrap();
    assert_eq!(online["onlineSessionPeerIds"], json!(["alice"]));
}

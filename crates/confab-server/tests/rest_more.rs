//! The rest of LeanCloud's realtime REST API against the real binary: mutes, message
//! edits, recalls and deletions, service conversations (subscribers, broadcasts,
//! targeted messages, app-wide broadcasts), roles, silences, blacklists, stats, the
//! app's and a client's messages, the legacy `/1.1/rtm/…` calls and the 4.x SDK's
//! `/1.1/rtm/notifications` — each with what clients see over WebSocket, and bad input.
#![allow(clippy::unwrap_used)]

mod common;

use common::rest::{APP_KEY, Answer, MASTER, http, http_to};
use common::{Server, Start, is_conv, is_direct};
use serde_json::{Value, json};
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);

const APPS: &str = "[[apps]]\nid = \"test-app\"\nkey = \"k\"\nmaster_key = \"m\"\n\
    [[apps]]\nid = \"other-app\"\nkey = \"ok\"\nmaster_key = \"om\"\n";

const OTHER_MASTER: &[(&str, &str)] = &[("X-LC-Id", "test-app"), ("X-LC-Key", "om,master")];

async fn call(server: &Server, method: &str, path: &str, body: &Value) -> Answer {
    http(server, method, path, MASTER, Some(&body.to_string())).await
}

async fn get(server: &Server, path: &str) -> Answer {
    http(server, "GET", path, MASTER, None).await
}

async fn create(server: &Server, path: &str, body: Value) -> String {
    let a = call(server, "POST", path, &body).await;
    assert_eq!(a.status, 201, "{}", a.body);
    a.body["objectId"].as_str().unwrap().to_owned()
}

async fn rest_send(server: &Server, path: &str, body: Value) -> (String, i64) {
    let b = call(server, "POST", path, &body).await.ok();
    (b["msg-id"].as_str().unwrap().to_owned(), b["timestamp"].as_i64().unwrap())
}

fn ids(records: &Value) -> Vec<String> {
    records.as_array().unwrap().iter().map(|r| r["msg-id"].as_str().unwrap().to_owned()).collect()
}

fn is_patch(f: &Value) -> bool {
    f["cmd"] == "patch" && f["op"] == "modify"
}

#[tokio::test]
async fn mutes_edits_recalls_and_deletes_over_rest() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), APPS);
    let mut b = server.open("b").await;
    let cid = create(&server, "/1.2/rtm/conversations", json!({"m": ["a", "b"], "c": "a"})).await;
    let conv = format!("/1.2/rtm/conversations/{cid}");

    // Mutes: maintained in `mu`, members only.
    let muted =
        call(&server, "POST", &format!("{conv}/mutes"), &json!({"client_ids": ["b", "stranger"]})).await;
    assert_eq!(muted.ok()["objectId"], json!(cid));
    assert_eq!(get(&server, &format!("{conv}/mutes")).await.ok(), json!({"result": ["b"]}));
    let q =
        get(&server, &format!("/1.2/rtm/conversations?where=%7B%22objectId%22%3A%22{cid}%22%7D")).await.ok();
    assert_eq!(q["results"][0]["mu"], json!(["b"]), "{q}");
    call(&server, "DELETE", &format!("{conv}/mutes"), &json!({"client_ids": ["b"]})).await.ok();
    assert_eq!(get(&server, &format!("{conv}/mutes")).await.ok(), json!({"result": []}));

    // An edit reaches the members as a client's edit does.
    let messages = format!("{conv}/messages");
    let (mid, t) = rest_send(&server, &messages, json!({"from_client": "a", "message": "first"})).await;
    b.wait_for("message", is_direct(&cid)).await.unwrap();
    let edit = json!({"from_client": "a", "message": "edited", "timestamp": t});
    assert_eq!(call(&server, "PUT", &format!("{messages}/{mid}"), &edit).await.ok(), json!({}));
    let p = b.wait_for("edit", is_patch).await.unwrap();
    let item = &p["patches"][0];
    assert_eq!(
        (item["mid"].clone(), item["data"].clone(), item["recall"].clone()),
        (json!(mid), json!("edited"), json!(false))
    );
    assert_eq!(get(&server, &messages).await.ok()[0]["data"], json!("edited"));
    // Only the sender's messages, named with their own timestamp.
    let wrong = json!({"from_client": "b", "message": "x", "timestamp": t});
    call(&server, "PUT", &format!("{messages}/{mid}"), &wrong).await.error(400, 4403);
    let stale = json!({"from_client": "a", "message": "x", "timestamp": t + 1});
    call(&server, "PUT", &format!("{messages}/{mid}"), &stale).await.error(404, 4404);
    call(&server, "PUT", &format!("{messages}/nope"), &edit).await.error(404, 4404);
    call(&server, "PUT", &format!("{messages}/{mid}"), &json!({"from_client": "a", "message": "x"}))
        .await
        .error(400, 107);
    // A recall.
    let recall = json!({"from_client": "a", "timestamp": t});
    call(&server, "PUT", &format!("{messages}/{mid}/recall"), &recall).await.ok();
    let p = b.wait_for("recall", is_patch).await.unwrap();
    assert_eq!(p["patches"][0]["recall"], json!(true), "{p}");
    // A delete removes the server's copy only: no push.
    let (mid2, t2) = rest_send(&server, &messages, json!({"from_client": "b", "message": "second"})).await;
    let del = format!("{messages}/{mid2}?from_client=b&timestamp={t2}");
    assert_eq!(http(&server, "DELETE", &del, MASTER, None).await.ok(), json!({}));
    assert_eq!(ids(&get(&server, &messages).await.ok()), vec![mid.clone()]);
    http(&server, "DELETE", &del, MASTER, None).await.error(404, 4404);
    assert!(b.drain(QUIET, is_patch).await.unwrap().is_empty());
    // Chat rooms: edits too.
    let room = create(&server, "/1.2/rtm/chatrooms", json!({"name": "r"})).await;
    let room_msgs = format!("/1.2/rtm/chatrooms/{room}/messages");
    let (rm, rt) = rest_send(&server, &room_msgs, json!({"from_client": "host", "message": "hi"})).await;
    call(
        &server,
        "PUT",
        &format!("{room_msgs}/{rm}"),
        &json!({"from_client": "host", "message": "hey", "timestamp": rt}),
    )
    .await
    .ok();
    assert_eq!(get(&server, &room_msgs).await.ok()[0]["data"], json!("hey"));
    // Unknown conversations.
    let missing = "/1.2/rtm/conversations/000000000000000000000000";
    call(&server, "POST", &format!("{missing}/mutes"), &json!({"client_ids": ["a"]})).await.error(404, 4303);
    call(&server, "PUT", &format!("{missing}/messages/{mid}"), &edit).await.error(404, 4303);
    http(&server, "DELETE", &format!("{missing}/messages/{mid}"), MASTER, None).await.error(404, 4303);
}

#[tokio::test]
async fn service_conversations_subscribers_targeted_messages_and_broadcasts() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), APPS);
    let mut a = server.open("a").await;
    let mut b = server.open("b").await;
    let mut c = server.open("c").await;
    let cid = create(&server, "/1.2/rtm/service-conversations", json!({"name": "news"})).await;
    let svc = format!("/1.2/rtm/service-conversations/{cid}");
    for client in ["b", "a"] {
        assert_eq!(
            call(&server, "POST", &format!("{svc}/subscribers"), &json!({"client_id": client})).await.ok(),
            json!({})
        );
    }
    let list = get(&server, &format!("{svc}/subscribers")).await.ok();
    let subs: Vec<&str> =
        list.as_array().unwrap().iter().map(|s| s["subscriber"].as_str().unwrap()).collect();
    assert_eq!(subs, ["a", "b"], "{list}");
    assert!(list[0]["timestamp"].as_i64().unwrap() > 0 && list[0]["conv_id"] == json!(cid));
    let next = get(&server, &format!("{svc}/subscribers?limit=1&client_id=a")).await.ok();
    assert_eq!(next.as_array().unwrap().len(), 1);
    assert_eq!(next[0]["subscriber"], json!("b"));
    assert_eq!(get(&server, &format!("{svc}/subscribers/count")).await.ok(), json!({"count": 2}));
    let mine = get(&server, "/1.2/rtm/clients/a/service-conversations").await.ok();
    assert_eq!(
        (mine[0]["conv_id"].clone(), mine[0]["subscriber"].clone()),
        (json!(cid), json!("a")),
        "{mine}"
    );
    let t = mine[0]["timestamp"].as_i64().unwrap();
    let after =
        get(&server, &format!("/1.2/rtm/clients/a/service-conversations?conv_id={cid}&timestamp={t}"))
            .await
            .ok();
    assert_eq!(after, json!([]));
    get(&server, "/1.2/rtm/clients/a/service-conversations?direction=sideways").await.error(400, 107);
    // direction=old: the newest subscription first, paging towards older ones.
    let cid2 = create(&server, "/1.2/rtm/service-conversations", json!({"name": "more"})).await;
    let sub2 = format!("/1.2/rtm/service-conversations/{cid2}/subscribers");
    call(&server, "POST", &sub2, &json!({"client_id": "a"})).await.ok();
    let convs = |v: &Value| -> Vec<String> {
        v.as_array().unwrap().iter().map(|s| s["conv_id"].as_str().unwrap().to_owned()).collect()
    };
    let newest = get(&server, "/1.2/rtm/clients/a/service-conversations").await.ok();
    assert_eq!(convs(&newest), [cid.clone(), cid2.clone()], "{newest}");
    let old = get(&server, "/1.2/rtm/clients/a/service-conversations?direction=old").await.ok();
    assert_eq!(convs(&old), [cid2.clone(), cid.clone()], "{old}");
    let t2 = old[0]["timestamp"].as_i64().unwrap();
    let older =
        format!("/1.2/rtm/clients/a/service-conversations?direction=old&conv_id={cid2}&timestamp={t2}");
    assert_eq!(convs(&get(&server, &older).await.ok()), [cid.as_str()]);
    let one = get(&server, "/1.2/rtm/clients/a/service-conversations?direction=old&limit=1").await.ok();
    assert_eq!(convs(&one), [cid2.as_str()]);

    // A broadcast to the subscribers: the documented {msg-id, timestamp}.
    let sent =
        call(&server, "POST", &format!("{svc}/broadcasts"), &json!({"from_client": "sys", "message": "all"}))
            .await
            .ok();
    let mut keys: Vec<&String> = sent.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["msg-id", "timestamp"]);
    for s in [&mut a, &mut b] {
        assert_eq!(s.wait_for("broadcast", is_direct(&cid)).await.unwrap()["id"], sent["msg-id"]);
    }
    // A targeted message: to b only.
    let to_b = json!({"from_client": "sys", "to_clients": ["b"], "message": "just you"});
    let (tid, tt) = rest_send(&server, &format!("{svc}/messages"), to_b).await;
    let d = b.wait_for("targeted", is_direct(&cid)).await.unwrap();
    assert_eq!((d["id"].clone(), d["msg"].clone()), (json!(tid), json!("just you")));
    assert!(a.drain(QUIET, is_direct(&cid)).await.unwrap().is_empty());
    let history = |client: &'static str| {
        let path = format!("{svc}/subscribers/{client}/messages");
        let server = &server;
        async move { ids(&get(server, &path).await.ok()) }
    };
    let broadcast_id = sent["msg-id"].as_str().unwrap().to_owned();
    assert_eq!(history("b").await, [tid.clone(), broadcast_id.clone()]);
    assert_eq!(history("a").await, vec![broadcast_id.clone()]);
    // Edit it for b, then delete it.
    let edit = json!({"from_client": "sys", "message": "edited", "timestamp": tt, "to_clients": ["b"]});
    call(&server, "PUT", &format!("{svc}/messages/{tid}"), &edit).await.ok();
    let p = b.wait_for("edit", is_patch).await.unwrap();
    assert_eq!(p["patches"][0]["data"], json!("edited"), "{p}");
    let del = format!("{svc}/subscribers/b/messages/{tid}?from_client=sys&timestamp={tt}");
    http(&server, "DELETE", &del, MASTER, None).await.ok();
    assert_eq!(history("b").await, vec![broadcast_id.clone()]);
    http(&server, "DELETE", &del, MASTER, None).await.error(404, 4404);
    let many: Vec<String> = (0..21).map(|i| format!("c{i}")).collect();
    call(
        &server,
        "POST",
        &format!("{svc}/messages"),
        &json!({"from_client": "s", "to_clients": many, "message": "x"}),
    )
    .await
    .error(400, 107);

    // App-wide broadcast: subscribers and everyone else online get it; listed; deleted.
    let g = json!({"from_client": "sys", "conv_id": cid, "message": "everyone"});
    let (gid, _) = rest_send(&server, "/1.2/rtm/broadcasts", g).await;
    for s in [&mut a, &mut c] {
        assert_eq!(s.wait_for("global broadcast", is_direct(&cid)).await.unwrap()["id"], json!(gid));
    }
    assert_eq!(
        ids(&get(&server, &format!("/1.2/rtm/broadcasts?conv_id={cid}")).await.ok()),
        vec![gid.clone()]
    );
    // Edited through the service conversation: the list shows the new text.
    let listed = get(&server, &format!("/1.2/rtm/broadcasts?conv_id={cid}")).await.ok();
    let gt = listed[0]["timestamp"].as_i64().unwrap();
    let edit = json!({"from_client": "sys", "message": "everyone, edited", "timestamp": gt});
    call(&server, "PUT", &format!("{svc}/messages/{gid}"), &edit).await.ok();
    assert_eq!(a.wait_for("edit", is_patch).await.unwrap()["patches"][0]["data"], json!("everyone, edited"));
    let listed = get(&server, &format!("/1.2/rtm/broadcasts?conv_id={cid}")).await.ok();
    assert_eq!(listed[0]["data"], json!("everyone, edited"), "{listed}");
    assert!(listed[0]["patch-timestamp"].as_i64().is_some(), "{listed}");
    // Recalled in a service conversation: subscribers get the patch, list and history the placeholder.
    let recall = json!({"from_client": "sys", "timestamp": gt});
    assert_eq!(call(&server, "PUT", &format!("{svc}/messages/{gid}/recall"), &recall).await.ok(), json!({}));
    let p = a.wait_for("recall", is_patch).await.unwrap();
    assert_eq!(
        (p["patches"][0]["mid"].clone(), p["patches"][0]["recall"].clone()),
        (json!(gid), json!(true))
    );
    let listed = get(&server, &format!("/1.2/rtm/broadcasts?conv_id={cid}")).await.ok();
    assert_eq!(listed[0]["data"], json!("{\"_lctype\":-127}"), "{listed}");
    let a_got = get(&server, &format!("{svc}/subscribers/a/messages")).await.ok();
    let record = a_got.as_array().unwrap().iter().find(|r| r["msg-id"] == json!(gid)).unwrap().clone();
    assert_eq!(record["data"], json!("{\"_lctype\":-127}"), "{record}");
    // Someone else cannot recall it.
    let theirs = json!({"from_client": "a", "timestamp": gt});
    call(&server, "PUT", &format!("{svc}/messages/{gid}/recall"), &theirs).await.error(400, 4403);
    assert_eq!(
        http(&server, "DELETE", &format!("/1.2/rtm/broadcasts/{gid}"), MASTER, None).await.ok(),
        json!({})
    );
    assert_eq!(get(&server, &format!("/1.2/rtm/broadcasts?conv_id={cid}")).await.ok(), json!([]));
    assert!(!history("a").await.contains(&gid));
    http(&server, "DELETE", &format!("/1.2/rtm/broadcasts/{gid}"), MASTER, None).await.error(404, 4404);
    get(&server, "/1.2/rtm/broadcasts").await.error(400, 107);
    call(&server, "POST", "/1.2/rtm/broadcasts", &json!({"from_client": "s", "message": "x"}))
        .await
        .error(400, 107);

    // Unsubscribe; blacklisted clients are unsubscribed and cannot come back.
    http(&server, "DELETE", &format!("{svc}/subscribers/b"), MASTER, None).await.ok();
    assert_eq!(get(&server, &format!("{svc}/subscribers/count")).await.ok(), json!({"count": 1}));
    call(&server, "POST", &format!("{svc}/blacklists"), &json!({"client_ids": ["a"]})).await.ok();
    assert_eq!(get(&server, &format!("{svc}/subscribers/count")).await.ok(), json!({"count": 0}));
    assert_eq!(get(&server, &format!("{svc}/blacklists")).await.ok(), json!({"client_ids": ["a"]}));
    call(&server, "POST", &format!("{svc}/subscribers"), &json!({"client_id": "a"})).await.error(400, 4315);
    let r = a.request(json!({"cmd": "conv", "op": "add", "cid": cid, "m": ["a"]})).await.unwrap();
    assert!(r["failedPids"].as_array().is_some_and(|f| !f.is_empty()) || r["cmd"] == "error", "{r}");
    // Unknown service conversations; a normal one is not one.
    let missing = "/1.2/rtm/service-conversations/000000000000000000000000";
    call(&server, "POST", &format!("{missing}/subscribers"), &json!({"client_id": "a"}))
        .await
        .error(404, 4303);
    get(&server, &format!("{missing}/subscribers")).await.error(404, 4303);
    call(&server, "POST", &format!("{missing}/broadcasts"), &json!({"from_client": "s", "message": "x"}))
        .await
        .error(404, 4303);
    let normal = create(&server, "/1.2/rtm/conversations", json!({"m": ["a"]})).await;
    get(&server, &format!("/1.2/rtm/service-conversations/{normal}/subscribers")).await.error(404, 4303);
    call(&server, "POST", &format!("{svc}/subscribers"), &json!({})).await.error(400, 107);
}

#[tokio::test]
async fn roles_silences_and_blacklists_over_rest() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), APPS);
    let mut m2 = server.open("m2").await;
    let cid = create(&server, "/1.2/rtm/conversations", json!({"m": ["o", "m1", "m2"], "c": "o"})).await;
    let conv = format!("/1.2/rtm/conversations/{cid}");

    // Roles: the owner is listed; a manager added, changed back, removed.
    let added =
        call(&server, "POST", &format!("{conv}/member-infos"), &json!({"clientId": "m1", "role": "Manager"}))
            .await
            .ok();
    let info = added["objectId"].as_str().unwrap().to_owned();
    let roles = get(&server, &format!("{conv}/member-infos")).await.ok();
    let pairs: Vec<(String, String)> = roles["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["clientId"].as_str().unwrap().into(), r["role"].as_str().unwrap().into()))
        .collect();
    assert_eq!(pairs, [("o".to_string(), "Owner".to_string()), ("m1".into(), "Manager".into())], "{roles}");
    assert_eq!(roles["results"][1]["objectId"], json!(info));
    let managers = get(&server, &format!("{conv}/member-infos?role=Manager")).await.ok();
    assert_eq!(managers["results"].as_array().unwrap().len(), 1);
    call(&server, "PUT", &format!("{conv}/member-infos/{info}"), &json!({"role": "Member"})).await.ok();
    assert_eq!(get(&server, &format!("{conv}/member-infos?role=Manager")).await.ok()["results"], json!([]));
    http(&server, "DELETE", &format!("{conv}/member-infos/{info}"), MASTER, None).await.ok();
    http(&server, "DELETE", &format!("{conv}/member-infos/000000000000000000000000"), MASTER, None)
        .await
        .error(404, 4317);
    call(&server, "POST", &format!("{conv}/member-infos"), &json!({"clientId": "m1", "role": "Owner"}))
        .await
        .error(400, 4325);
    call(&server, "POST", &format!("{conv}/member-infos"), &json!({"clientId": "nobody", "role": "Manager"}))
        .await
        .error(400, 4317);
    call(&server, "POST", &format!("{conv}/member-infos"), &json!({"role": "Manager"})).await.error(400, 107);

    // Permanent silence: the member cannot send until lifted; members are told.
    let silenced = format!("{conv}/permanent-silenceds");
    assert_eq!(call(&server, "POST", &silenced, &json!({"client_ids": ["m2"]})).await.ok(), json!({}));
    m2.wait_for("shut up", is_conv("shutuped")).await.unwrap();
    assert_eq!(get(&server, &silenced).await.ok(), json!({"client_ids": ["m2"]}));
    let refused = m2.request(json!({"cmd": "direct", "cid": cid, "msg": "x"})).await.unwrap();
    assert_eq!(refused["code"], 4308, "{refused}");
    call(&server, "DELETE", &silenced, &json!({"client_ids": ["m2"]})).await.ok();
    common::send(&mut m2, &cid, "free again").await;
    // The owner cannot be restricted.
    let owner = call(&server, "POST", &silenced, &json!({"client_ids": ["o"]})).await.ok();
    assert_eq!(owner["failed"][0]["client_ids"], json!(["o"]), "{owner}");

    // Temporary silence: refused with 4315 until lifted; ttl bounded.
    let temp = format!("{conv}/temporary-silenceds");
    call(&server, "POST", &temp, &json!({"client_id": "m2", "ttl": 60})).await.ok();
    let refused = m2.request(json!({"cmd": "direct", "cid": cid, "msg": "x"})).await.unwrap();
    assert_eq!(refused["code"], 4315, "{refused}");
    http(&server, "DELETE", &format!("{temp}?client_id=m2"), MASTER, None).await.ok();
    common::send(&mut m2, &cid, "free again").await;
    call(&server, "POST", &temp, &json!({"client_id": "m2", "ttl": 0})).await.error(400, 107);
    call(&server, "POST", &temp, &json!({"client_id": "m2", "ttl": 86_401})).await.error(400, 107);
    http(&server, "DELETE", &temp, MASTER, None).await.error(400, 107);

    // Blacklist: removed (as a client's block), cannot be added back; paged by `next`.
    let black = format!("{conv}/blacklists");
    call(&server, "POST", &black, &json!({"client_ids": ["m2", "x1", "x2"]})).await.ok();
    m2.wait_for("left", is_conv("left")).await.unwrap();
    assert_eq!(get(&server, &format!("{conv}/members")).await.ok(), json!({"result": ["o", "m1"]}));
    let page = get(&server, &format!("{black}?limit=2")).await.ok();
    assert_eq!(page, json!({"client_ids": ["m2", "x1"], "next": "2"}));
    assert_eq!(get(&server, &format!("{black}?limit=2&next=2")).await.ok(), json!({"client_ids": ["x2"]}));
    get(&server, &format!("{black}?next=abc")).await.error(400, 107);
    let again = call(&server, "POST", &format!("{conv}/members"), &json!({"client_ids": ["m2"]})).await.ok();
    assert_eq!(again["failed"][0]["client_ids"], json!(["m2"]), "{again}");
    call(&server, "DELETE", &black, &json!({"client_ids": ["m2"]})).await.ok();
    call(&server, "POST", &format!("{conv}/members"), &json!({"client_ids": ["m2"]})).await.ok();
    assert_eq!(get(&server, &format!("{conv}/members")).await.ok(), json!({"result": ["o", "m1", "m2"]}));

    // Unknown conversations and bad bodies.
    let missing = "/1.2/rtm/conversations/000000000000000000000000";
    for tail in ["member-infos", "permanent-silenceds", "blacklists"] {
        get(&server, &format!("{missing}/{tail}")).await.error(404, 4303);
    }
    call(&server, "POST", &format!("{missing}/temporary-silenceds"), &json!({"client_id": "a", "ttl": 5}))
        .await
        .error(404, 4303);
    http(&server, "POST", &black, MASTER, Some("{oops")).await.error(400, 107);
    call(&server, "POST", &black, &json!({"client_ids": "m2"})).await.error(400, 107);
}

#[tokio::test]
async fn stats_all_conversations_and_the_apps_messages() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), APPS);
    let _a = server.open("a").await;
    let _a2 = server.open("a").await;
    let _b = server.open("b").await;
    let stats = get(&server, "/1.2/rtm/stats").await.ok();
    assert_eq!(stats["result"]["online_user_count"], json!(2), "{stats}");
    assert!(stats["result"]["user_count_today"].as_u64().unwrap() >= 2, "{stats}");

    let c1 = create(&server, "/1.2/rtm/conversations", json!({"m": ["a"], "name": "one"})).await;
    let c2 = create(&server, "/1.2/rtm/conversations", json!({"m": ["b"], "name": "two"})).await;
    let room = create(&server, "/1.2/rtm/chatrooms", json!({"name": "room"})).await;
    let svc = create(&server, "/1.2/rtm/service-conversations", json!({"name": "svc"})).await;
    let all = get(&server, "/1.2/rtm/all-conversations?limit=100").await.ok();
    let mut found: Vec<&str> =
        all["results"].as_array().unwrap().iter().map(|c| c["objectId"].as_str().unwrap()).collect();
    found.sort_unstable();
    let mut expected = [c1.as_str(), c2.as_str(), room.as_str(), svc.as_str()];
    expected.sort_unstable();
    assert_eq!(found, expected);
    let q = get(&server, "/1.2/rtm/all-conversations?where=%7B%22sys%22%3Atrue%7D").await.ok();
    assert_eq!(q["results"].as_array().unwrap().len(), 1, "{q}");
    let services = get(&server, "/1.2/rtm/service-conversations").await.ok();
    assert_eq!(services["results"][0]["objectId"], json!(svc));
    get(&server, "/1.2/rtm/all-conversations?skip=-1").await.error(400, 107);

    let (m1, _) = rest_send(
        &server,
        &format!("/1.2/rtm/conversations/{c1}/messages"),
        json!({"from_client": "a", "message": "1"}),
    )
    .await;
    let (m2, t2) = rest_send(
        &server,
        &format!("/1.2/rtm/conversations/{c2}/messages"),
        json!({"from_client": "b", "message": "2"}),
    )
    .await;
    let (m3, _) = rest_send(
        &server,
        &format!("/1.2/rtm/conversations/{c2}/messages"),
        json!({"from_client": "a", "message": "3"}),
    )
    .await;
    assert_eq!(ids(&get(&server, "/1.2/rtm/messages").await.ok()), [m3.clone(), m2.clone(), m1.clone()]);
    assert_eq!(
        ids(&get(&server, "/1.2/rtm/messages?reversed=true&limit=2").await.ok()),
        [m1.clone(), m2.clone()]
    );
    assert_eq!(ids(&get(&server, &format!("/1.2/rtm/messages?timestamp={t2}")).await.ok()), vec![m1.clone()]);
    let by_a = get(&server, "/1.2/rtm/clients/a/messages").await.ok();
    assert_eq!(ids(&by_a), [m3.clone(), m1.clone()]);
    assert_eq!(by_a[0]["conv-id"], json!(c2));
    get(&server, "/1.2/rtm/messages?limit=x").await.error(400, 107);
    // The other app sees none of it.
    let other = [("X-LC-Id", "other-app"), ("X-LC-Key", "om,master")];
    assert_eq!(http(&server, "GET", "/1.2/rtm/messages", &other, None).await.ok(), json!([]));
    assert_eq!(
        http(&server, "GET", "/1.2/rtm/all-conversations", &other, None).await.ok(),
        json!({"results": []})
    );
}

/// `GET /1.2/rtm/stats` through one node: (online, today).
async fn stats_at(node: &str) -> (u64, u64) {
    let r = http_to(node, "GET", "/1.2/rtm/stats", MASTER, None).await.ok();
    (r["result"]["online_user_count"].as_u64().unwrap(), r["result"]["user_count_today"].as_u64().unwrap())
}

/// Opens, on every node of the server (one, or each of a cluster's under
/// `CONFAB_TEST_STORE=cluster`), a session of the subscriber `sub`, one of a client
/// online on every node, and one of a client of its own, `only<node>`.
async fn everywhere(server: &Server) -> Vec<(String, confab_testkit::Client)> {
    let mut sessions = Vec::new();
    for (i, url) in server.node_urls().iter().enumerate() {
        for peer in ["sub".to_owned(), "everywhere".to_owned(), format!("only{i}")] {
            let client = confab_testkit::Client::open(url, "test-app", &peer, json!({})).await.unwrap();
            sessions.push((format!("{peer} on node {i}"), client));
        }
    }
    sessions
}

/// An app-wide broadcast sent through one node reaches every session on every node
/// once: subscribers through the service conversation, everyone else through the push
/// of the node holding the session.
#[tokio::test]
async fn an_app_wide_broadcast_reaches_every_session_on_every_node_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), APPS);
    let cid = create(&server, "/1.2/rtm/service-conversations", json!({"name": "news"})).await;
    let subscribe = json!({"client_id": "sub"});
    call(&server, "POST", &format!("/1.2/rtm/service-conversations/{cid}/subscribers"), &subscribe)
        .await
        .ok();
    let mut sessions = everywhere(&server).await;
    // Through the last node: the others push it to their own.
    let body = json!({"from_client": "sys", "conv_id": cid, "message": "everyone"}).to_string();
    let last = server.node_https().pop().unwrap();
    let sent = http_to(&last, "POST", "/1.2/rtm/broadcasts", MASTER, Some(&body)).await.ok();
    for (name, client) in &mut sessions {
        let got = client.wait_for(name, is_direct(&cid)).await.unwrap();
        assert_eq!(
            (got["id"].clone(), got["msg"].clone()),
            (sent["msg-id"].clone(), json!("everyone")),
            "{name}"
        );
        assert!(client.drain(QUIET, is_direct(&cid)).await.unwrap().is_empty(), "{name} got it twice");
    }
}

/// The stats, asked of any node, count the clients online on every node (each once)
/// and the clients that logged in today on any.
#[tokio::test]
async fn stats_count_the_clients_of_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), APPS);
    let nodes = server.node_https();
    let mut sessions = everywhere(&server).await;
    let clients = 2 + nodes.len() as u64;
    for node in &nodes {
        assert_eq!(stats_at(node).await, (clients, clients), "through {node}");
    }
    // only0 leaves: offline everywhere, still one of today's.
    let at = sessions.iter().position(|(name, _)| name == "only0 on node 0").unwrap();
    let (_, only0) = sessions.remove(at);
    only0.close().await;
    for _ in 0..300 {
        if stats_at(&nodes[0]).await.0 == clients - 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for node in &nodes {
        assert_eq!(stats_at(node).await, (clients - 1, clients), "through {node}");
    }
}

#[tokio::test]
async fn legacy_1_1_calls_of_old_backends_and_the_python_sdk() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), APPS);
    let mut b = server.open("b").await;
    let cid = create(&server, "/1.2/rtm/conversations", json!({"m": ["a", "b"]})).await;
    // 1.1's transient defaults to true: pushed, not stored.
    let sent = call(
        &server,
        "POST",
        "/1.1/rtm/messages",
        &json!({"from_peer": "a", "conv_id": cid, "message": "typing"}),
    )
    .await
    .ok();
    assert!(sent["msg-id"].is_string(), "{sent}");
    assert_eq!(b.wait_for("transient", is_direct(&cid)).await.unwrap()["transient"], json!(true));
    let stored = json!({"from_peer": "a", "conv_id": cid, "message": {"_lctype": -1, "_lctext": "hi"}, "transient": false});
    let (mid, t) = rest_send(&server, "/1.1/rtm/messages", stored).await;
    // History as Python's Message.find_by_conversation asks for it (a float max_ts,
    // `True`; reversed, max_ts is the oldest bound).
    let h = get(&server, &format!("/1.1/rtm/messages/history?convid={cid}&max_ts={}.0&limit=10", t + 1))
        .await
        .ok();
    assert_eq!(ids(&h), vec![mid.clone()]);
    let h = get(&server, &format!("/1.1/rtm/messages/history?convid={cid}&max_ts={}.0&reversed=True", t - 1))
        .await;
    assert_eq!(ids(&h.ok()), vec![mid.clone()]);
    let h = get(&server, &format!("/1.1/rtm/messages/history?convid={cid}&max_ts={}.0&reversed=True", t + 1))
        .await;
    assert_eq!(h.ok(), json!([]));
    assert_eq!(
        ids(&get(&server, &format!("/1.1/rtm/messages/logs?convid={cid}")).await.ok()),
        vec![mid.clone()]
    );
    assert_eq!(ids(&get(&server, "/1.1/rtm/messages/history?from=a").await.ok()), vec![mid.clone()]);
    assert_eq!(ids(&get(&server, "/1.1/rtm/messages/history").await.ok()), vec![mid.clone()]);
    // Patch (edit, then recall) as 1.1 does it.
    let p = json!({"from_peer": "a", "conv_id": cid, "msg_id": mid, "timestamp": t, "message": "edited"});
    call(&server, "POST", "/1.1/rtm/patch/message", &p).await.ok();
    assert_eq!(b.wait_for("edit", is_patch).await.unwrap()["patches"][0]["data"], json!("edited"));
    let r = json!({"from_peer": "a", "conv_id": cid, "msg_id": mid, "timestamp": t, "recall": true});
    call(&server, "POST", "/1.1/rtm/patch/message", &r).await.ok();
    b.wait_for("recall", is_patch).await.unwrap();
    // Unread (app key allowed).
    let unread = http(&server, "GET", "/1.1/rtm/messages/unread/b", APP_KEY, None).await.ok();
    assert_eq!(unread, json!({"count": 1}));
    let unread = http(&server, "GET", &format!("/1.1/rtm/messages/unread/b/{cid}"), APP_KEY, None).await.ok();
    assert_eq!(unread, json!({"count": 1}));
    // Delete a record.
    http(
        &server,
        "DELETE",
        &format!("/1.1/rtm/messages/logs?convid={cid}&msgid={mid}&timestamp={t}"),
        MASTER,
        None,
    )
    .await
    .ok();
    assert_eq!(get(&server, &format!("/1.1/rtm/messages/history?convid={cid}")).await.ok(), json!([]));

    // Service conversations: subscription, subscribers, broadcasts, targeted messages.
    let svc = create(&server, "/1.2/rtm/service-conversations", json!({"name": "svc"})).await;
    call(&server, "POST", "/1.1/rtm/conversation/subscription", &json!({"conv_id": svc, "client_id": "b"}))
        .await
        .ok();
    assert_eq!(
        get(&server, &format!("/1.1/rtm/conversation/subscribed?conv_id={svc}&client_id=b")).await.ok(),
        json!(true)
    );
    assert_eq!(
        get(&server, &format!("/1.1/rtm/conversation/subscribed?conv_id={svc}&client_id=a")).await.ok(),
        json!(false)
    );
    assert_eq!(
        get(&server, &format!("/1.1/rtm/conversation/subscribers/count?conv_id={svc}")).await.ok(),
        json!({"count": 1})
    );
    let subs = get(&server, &format!("/1.1/rtm/conversation/subscribers?conv_id={svc}")).await.ok();
    assert_eq!(subs[0]["subscriber"], json!("b"));
    let mine = get(&server, "/1.1/rtm/conversation/subscription?client_id=b").await.ok();
    assert_eq!(mine[0]["conv_id"], json!(svc));
    let s = json!({"from_peer": "sys", "conv_id": svc, "message": "news"});
    call(&server, "POST", "/1.1/rtm/broadcast/subscriber", &s).await.ok();
    assert_eq!(b.wait_for("subscriber broadcast", is_direct(&svc)).await.unwrap()["msg"], json!("news"));
    let targeted =
        json!({"from_peer": "sys", "conv_id": svc, "message": "psst", "to_peers": "b", "transient": false});
    call(&server, "POST", "/1.1/rtm/messages", &targeted).await.ok();
    assert_eq!(b.wait_for("targeted", is_direct(&svc)).await.unwrap()["msg"], json!("psst"));
    let g = json!({"from_peer": "sys", "conv_id": svc, "message": "everyone"});
    let gid =
        call(&server, "POST", "/1.1/rtm/broadcast", &g).await.ok()["msg-id"].as_str().unwrap().to_owned();
    assert_eq!(
        ids(&get(&server, &format!("/1.1/rtm/broadcast?conv_id={svc}")).await.ok()),
        vec![gid.clone()]
    );
    http(&server, "DELETE", &format!("/1.1/rtm/broadcast?mid={gid}"), MASTER, None).await.ok();
    http(
        &server,
        "DELETE",
        "/1.1/rtm/conversation/subscription",
        MASTER,
        Some(&json!({"conv_id": svc, "client_id": "b"}).to_string()),
    )
    .await
    .ok();
    assert_eq!(
        get(&server, &format!("/1.1/rtm/conversation/subscribers/count?conv_id={svc}")).await.ok(),
        json!({"count": 0})
    );

    // 1.1's "blacklist" is a temporary silence.
    call(
        &server,
        "POST",
        "/1.1/rtm/conversation/blacklist",
        &json!({"conv_id": cid, "client_id": "b", "ttl": 30}),
    )
    .await
    .ok();
    let refused = b.request(json!({"cmd": "direct", "cid": cid, "msg": "x"})).await.unwrap();
    assert_eq!(refused["code"], 4315, "{refused}");
    call(&server, "DELETE", "/1.1/rtm/conversation/blacklist", &json!({"conv_id": cid, "client_id": "b"}))
        .await
        .ok();
    common::send(&mut b, &cid, "ok").await;
    // Online check, chat-room presence, kick.
    assert_eq!(
        call(&server, "POST", "/1.1/rtm/online", &json!({"peers": ["a", "b"]})).await.ok(),
        json!({"results": ["b"]})
    );
    let room = create(&server, "/1.2/rtm/chatrooms", json!({"name": "r"})).await;
    b.request(json!({"cmd": "conv", "op": "add", "cid": room, "m": ["b"]})).await.unwrap();
    let onlines =
        http(&server, "GET", &format!("/1.1/rtm/transient_group/onlines?gid={room}"), APP_KEY, None)
            .await
            .ok();
    assert_eq!(onlines, json!({"result": 1}));
    let members =
        http(&server, "GET", &format!("/1.1/rtm/transient_group/members?gid={room}"), APP_KEY, None)
            .await
            .ok();
    assert_eq!(members, json!({"result": ["b"]}));
    assert_eq!(
        get(&server, &format!("/1.2/rtm/chatrooms/{room}/members")).await.ok(),
        json!({"result": ["b"]})
    );
    assert_eq!(
        get(&server, &format!("/1.2/rtm/chatrooms/{room}/members/online-count")).await.ok(),
        json!({"result": 1})
    );
    call(&server, "POST", "/1.1/rtm/client/kick", &json!({"client_id": "b", "reason": "bye"})).await.ok();
    let closed = b.wait_for("kicked", |f| f["cmd"] == "session" && f["op"] == "closed").await.unwrap();
    assert_eq!(closed["code"], json!(4115));

    // Bad input.
    call(&server, "POST", "/1.1/rtm/messages", &json!({"conv_id": cid, "message": "x"}))
        .await
        .error(400, 107);
    call(
        &server,
        "POST",
        "/1.1/rtm/messages",
        &json!({"from_peer": "a", "conv_id": cid, "message": "x", "transient": "maybe"}),
    )
    .await
    .error(400, 107);
    let peers: Vec<String> = (0..21).map(|i| format!("p{i}")).collect();
    call(&server, "POST", "/1.1/rtm/online", &json!({"peers": peers})).await.error(400, 107);
    call(
        &server,
        "POST",
        "/1.1/rtm/messages",
        &json!({"from_peer": "a", "conv_id": "000000000000000000000000", "message": "x"}),
    )
    .await
    .error(404, 4303);
    http(&server, "GET", "/1.1/rtm/messages/history", APP_KEY, None).await.error(401, 401);
    http(&server, "GET", "/1.1/rtm/messages/history", OTHER_MASTER, None).await.error(401, 401);
}

#[tokio::test]
async fn notifications_tell_a_reconnecting_4x_client_what_it_joined() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), APPS);
    let mut a = server.open("a").await;
    let st = a.request(json!({"cmd": "session", "op": "refresh"})).await.unwrap();
    let st = st["st"].as_str().unwrap().to_owned();
    let opened = get(&server, "/1.2/rtm/stats").await.ok();
    assert_eq!(opened["result"]["online_user_count"], json!(1));
    let cid = create(&server, "/1.2/rtm/conversations", json!({"m": ["a"], "c": "z"})).await;
    let joined = a.wait_for("joined", is_conv("joined")).await.unwrap();
    let with = |token: &str| {
        let mut h = APP_KEY.to_vec();
        h.push(("X-LC-IM-Session-Token", token));
        h.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect::<Vec<(String, String)>>()
    };
    let fetch = |since: i64, client: &'static str, token: String| {
        let server = &server;
        let headers = with(&token);
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let path = format!(
                "/1.1/rtm/notifications?client_id={client}&start_ts={since}&notification_type=permanent"
            );
            http(server, "GET", &path, &h, None).await
        }
    };
    let n = fetch(0, "a", st.clone()).await.ok();
    assert_eq!(n["hasMore"], json!(false));
    let item = &n["notifications"][0];
    assert_eq!(
        (item["cmd"].clone(), item["op"].clone(), item["cid"].clone(), item["initBy"].clone()),
        (json!("conv"), json!("joined"), json!(cid), json!("z")),
        "{n}"
    );
    // Nothing newer than what the client already saw (the push's serverTs is the join time).
    let seen = item["serverTs"].as_i64().unwrap();
    assert_eq!(fetch(seen, "a", st.clone()).await.ok()["notifications"], json!([]));
    assert!(joined["cid"] == json!(cid));
    // Another client's token, a forged one, or none: 401.
    fetch(0, "b", st.clone()).await.error(401, 401);
    fetch(0, "a", "1.forged.".into()).await.error(401, 401);
    http(&server, "GET", "/1.1/rtm/notifications?client_id=a", APP_KEY, None).await.error(401, 401);
}

#[tokio::test]
async fn bad_input_on_the_new_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), APPS);
    let cid = create(&server, "/1.2/rtm/conversations", json!({"m": ["a"]})).await;
    let svc = create(&server, "/1.2/rtm/service-conversations", json!({"name": "s"})).await;
    let posts = [
        format!("/1.2/rtm/conversations/{cid}/mutes"),
        format!("/1.2/rtm/conversations/{cid}/member-infos"),
        format!("/1.2/rtm/conversations/{cid}/permanent-silenceds"),
        format!("/1.2/rtm/conversations/{cid}/temporary-silenceds"),
        format!("/1.2/rtm/conversations/{cid}/blacklists"),
        format!("/1.2/rtm/service-conversations/{svc}/subscribers"),
        format!("/1.2/rtm/service-conversations/{svc}/broadcasts"),
        format!("/1.2/rtm/service-conversations/{svc}/messages"),
        "/1.2/rtm/broadcasts".to_owned(),
        "/1.1/rtm/messages".to_owned(),
        "/1.1/rtm/broadcast".to_owned(),
    ];
    let big = json!({"client_ids": ["x".repeat(70_000)]}).to_string();
    for path in &posts {
        // Malformed JSON, a non-object, oversized, wrong keys, another app's key.
        http(&server, "POST", path, MASTER, Some("{nope")).await.error(400, 107);
        http(&server, "POST", path, MASTER, Some("[1]")).await.error(400, 107);
        http(&server, "POST", path, MASTER, Some(&big)).await.error(413, 107);
        http(&server, "POST", path, APP_KEY, Some("{}")).await.error(401, 401);
        http(&server, "POST", path, OTHER_MASTER, Some("{}")).await.error(401, 401);
        http(&server, "POST", path, &[("X-LC-Id", "test-app"), ("X-LC-Key", "wrong")], Some("{}"))
            .await
            .error(401, 401);
    }
    for path in
        ["/1.2/rtm/stats", "/1.2/rtm/all-conversations", "/1.2/rtm/messages", "/1.2/rtm/clients/a/messages"]
    {
        http(&server, "GET", path, APP_KEY, None).await.error(401, 401);
        http(&server, "GET", path, &[("X-LC-Id", "nope"), ("X-LC-Key", "m,master")], None)
            .await
            .error(401, 401);
    }
    // A client id that is not one.
    call(&server, "POST", &format!("/1.2/rtm/conversations/{cid}/mutes"), &json!({"client_ids": ["a:b"]}))
        .await
        .error(400, 4114);
}

/// Every operation of docs/openapi.json is answered by the real binary with a JSON
/// body (a result or a LeanCloud error), never the 404 (code 404) or 405 of an
/// unrouted request: the document lists nothing that is not served.
#[tokio::test]
async fn every_documented_operation_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), APPS);
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json")).unwrap(),
    )
    .unwrap();
    let mut count = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let concrete: String = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "000000000000000000000000" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for method in ops.as_object().unwrap().keys() {
            let m = method.to_uppercase();
            let body = if m == "GET" { None } else { Some("{}") };
            let a = http(&server, &m, &concrete, MASTER, body).await;
            assert_ne!(a.status, 405, "{m} {path}");
            // Code 404 is the answer to an unrouted path (LeanCloud's codes are others).
            assert_ne!(a.body["code"], json!(404), "{m} {path}: not routed");
            assert!(
                a.body.is_object() || a.body.is_array() || a.body.is_boolean(),
                "{m} {path}: {} {}",
                a.status,
                a.body
            );
            if a.status >= 400 {
                assert!(a.body["code"].is_i64(), "{m} {path}: {}", a.body);
            }
            count += 1;
        }
    }
    assert!(count >= 90, "{count} operations");
}

/// Joins chat room `room` (`conv add` of oneself) and returns the reply.
async fn join_room(client: &mut confab_testkit::Client, room: &str, me: &str) -> Value {
    client.request(json!({"cmd": "conv", "op": "add", "cid": room, "m": [me]})).await.unwrap()
}

#[tokio::test]
async fn a_clients_own_blacklist_keeps_others_from_adding_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_config(dir.path(), APPS);
    let cid = create(&server, "/1.2/rtm/conversations", json!({"m": ["a"], "c": "a"})).await;
    let svc = create(&server, "/1.2/rtm/service-conversations", json!({"name": "news"})).await;
    let mine = "/1.2/rtm/clients/z/blacklists";
    for conv in [&cid, &svc] {
        assert_eq!(call(&server, "POST", mine, &json!({"conv_id": conv})).await.ok(), json!({}));
    }
    let mut sorted = vec![cid.clone(), svc.clone()];
    sorted.sort();
    assert_eq!(get(&server, mine).await.ok(), json!({"conv_ids": sorted}));
    let first = get(&server, &format!("{mine}?limit=1")).await.ok();
    assert_eq!(first, json!({"conv_ids": [sorted[0]], "next": sorted[0]}));
    let rest = get(&server, &format!("{mine}?limit=1&next={}", sorted[0])).await.ok();
    assert_eq!(rest, json!({"conv_ids": [sorted[1]]}));

    // Nobody else adds it (the backend, a member), and it hears of nothing; a
    // service conversation cannot subscribe it either. It survives a restart.
    server.kill();
    let server = Server::start_config(dir.path(), APPS);
    let mut z = server.open("z").await;
    let mut a = server.open("a").await;
    let added = call(
        &server,
        "POST",
        &format!("/1.2/rtm/conversations/{cid}/members"),
        &json!({"client_ids": ["z"]}),
    )
    .await
    .ok();
    assert_eq!(added["failed"][0]["code"], json!(4315), "{added}");
    assert_eq!(added["failed"][0]["client_ids"], json!(["z"]), "{added}");
    let r = a.request(json!({"cmd": "conv", "op": "add", "cid": cid, "m": ["z"]})).await.unwrap();
    assert_eq!(
        (r["allowedPids"].clone(), r["failedPids"][0]["code"].clone()),
        (json!([]), json!(4315)),
        "{r}"
    );
    let heard = z.drain(QUIET, is_conv("joined")).await.unwrap();
    assert!(heard.is_empty(), "{heard:?}");
    assert_eq!(
        get(&server, &format!("/1.2/rtm/conversations/{cid}/members")).await.ok(),
        json!({"result": ["a"]})
    );
    let subscribe = format!("/1.2/rtm/service-conversations/{svc}/subscribers");
    call(&server, "POST", &subscribe, &json!({"client_id": "z"})).await.error(400, 4315);

    // Taken off the list (DELETE with a body, or conv_id in the query): added again.
    call(&server, "DELETE", mine, &json!({"conv_id": cid})).await.ok();
    http(&server, "DELETE", &format!("{mine}?conv_id={svc}"), MASTER, None).await.ok();
    assert_eq!(get(&server, mine).await.ok(), json!({"conv_ids": []}));
    call(&server, "POST", &format!("/1.2/rtm/conversations/{cid}/members"), &json!({"client_ids": ["z"]}))
        .await
        .ok();
    z.wait_for("joined", is_conv("joined")).await.unwrap();
    call(&server, "POST", &subscribe, &json!({"client_id": "z"})).await.ok();

    // Bad input.
    call(&server, "POST", mine, &json!({})).await.error(400, 107);
    call(&server, "POST", mine, &json!({"conv_id": 5})).await.error(400, 107);
    call(&server, "POST", mine, &json!({"conv_id": "000000000000000000000000"})).await.error(404, 4303);
    http(&server, "DELETE", mine, MASTER, None).await.error(400, 107);
    get(&server, &format!("{mine}?limit=x")).await.error(400, 107);
    call(&server, "POST", "/1.2/rtm/clients/bad:id/blacklists", &json!({"conv_id": cid}))
        .await
        .error(400, 4114);
    http(&server, "GET", mine, APP_KEY, None).await.error(401, 401);
}

#[tokio::test]
async fn chat_room_roles_silences_and_blacklists_over_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_config(dir.path(), APPS);
    let id = create(&server, "/1.2/rtm/chatrooms", json!({"name": "lobby", "c": "o"})).await;
    let room = format!("/1.2/rtm/chatrooms/{id}");
    let mut r1 = server.open("r1").await;
    let mut r2 = server.open("r2").await;
    for (c, me) in [(&mut r1, "r1"), (&mut r2, "r2")] {
        assert_eq!(join_room(c, &id, me).await["allowedPids"], json!([me]));
    }

    // Roles: the creator is the owner; any client can be made a manager.
    let added =
        call(&server, "POST", &format!("{room}/member-infos"), &json!({"clientId": "r1", "role": "Manager"}))
            .await
            .ok();
    let info = added["objectId"].as_str().unwrap().to_owned();
    let roles = get(&server, &format!("{room}/member-infos")).await.ok();
    let pairs: Vec<(&str, &str)> = roles["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["clientId"].as_str().unwrap(), r["role"].as_str().unwrap()))
        .collect();
    assert_eq!(pairs, [("o", "Owner"), ("r1", "Manager")], "{roles}");
    call(&server, "POST", &format!("{room}/member-infos"), &json!({"clientId": "r9", "role": "Manager"}))
        .await
        .ok();
    let nine = call(
        &server,
        "PUT",
        &format!("{room}/member-infos/{}", roles["results"][0]["objectId"].as_str().unwrap()),
        &json!({"role": "Member"}),
    )
    .await;
    nine.error(400, 4317);
    call(&server, "POST", &format!("{room}/member-infos"), &json!({"clientId": "r2", "role": "Owner"}))
        .await
        .error(400, 4325);

    // Permanent silence: the client is told, its sends get 4308, others still talk.
    let silenced = format!("{room}/permanent-silenceds");
    assert_eq!(
        call(&server, "POST", &silenced, &json!({"client_ids": ["r2", "o"]})).await.ok()["failed"][0]["client_ids"],
        json!(["o"])
    );
    r2.wait_for("shut up", is_conv("shutuped")).await.unwrap();
    let refused = r2.request(json!({"cmd": "direct", "cid": id, "msg": "x"})).await.unwrap();
    assert_eq!(refused["code"], 4308, "{refused}");
    common::send(&mut r1, &id, "still here").await;
    r2.wait_for("r1's message", is_direct(&id)).await.unwrap();
    assert_eq!(get(&server, &silenced).await.ok(), json!({"client_ids": ["r2"]}));

    // Blacklist: the client is told and leaves the room; it cannot join again.
    let black = format!("{room}/blacklists");
    call(&server, "POST", &black, &json!({"client_ids": ["r2", "x1"]})).await.ok();
    r2.wait_for("blocked", is_conv("blocked")).await.unwrap();
    r2.wait_for("left", is_conv("left")).await.unwrap();
    assert_eq!(get(&server, &format!("{room}/members")).await.ok(), json!({"result": ["r1"]}));
    let again = join_room(&mut r2, &id, "r2").await;
    assert_eq!(again["failedPids"][0]["code"], json!(4315), "{again}");
    common::send(&mut r1, &id, "r2 is gone").await;
    let heard = r2.drain(QUIET, is_direct(&id)).await.unwrap();
    assert!(heard.is_empty(), "{heard:?}");
    assert_eq!(get(&server, &black).await.ok(), json!({"client_ids": ["r2", "x1"]}));

    // All of it is stored: after a restart the lists are the same and still enforced.
    drop((r1, r2));
    server.kill();
    let server = Server::start_config(dir.path(), APPS);
    assert_eq!(get(&server, &silenced).await.ok(), json!({"client_ids": ["r2"]}));
    assert_eq!(get(&server, &black).await.ok(), json!({"client_ids": ["r2", "x1"]}));
    let roles = get(&server, &format!("{room}/member-infos?role=Manager")).await.ok();
    let managers: Vec<&str> =
        roles["results"].as_array().unwrap().iter().map(|r| r["clientId"].as_str().unwrap()).collect();
    assert_eq!(managers, ["r1", "r9"], "{roles}");
    let mut r2 = server.open("r2").await;
    assert_eq!(join_room(&mut r2, &id, "r2").await["failedPids"][0]["code"], json!(4315));
    call(&server, "DELETE", &black, &json!({"client_ids": ["r2"]})).await.ok();
    assert_eq!(join_room(&mut r2, &id, "r2").await["allowedPids"], json!(["r2"]));
    let refused = r2.request(json!({"cmd": "direct", "cid": id, "msg": "x"})).await.unwrap();
    assert_eq!(refused["code"], 4308, "still shut up: {refused}");
    call(&server, "DELETE", &silenced, &json!({"client_ids": ["r2"]})).await.ok();
    common::send(&mut r2, &id, "free again").await;
    http(&server, "DELETE", &format!("{room}/member-infos/{info}"), MASTER, None).await.ok();
    let roles = get(&server, &format!("{room}/member-infos?role=Manager")).await.ok();
    assert_eq!(roles["results"].as_array().unwrap().len(), 1, "{roles}");

    // Only chat rooms under /chatrooms.
    let normal = create(&server, "/1.2/rtm/conversations", json!({"m": ["a"]})).await;
    get(&server, &format!("/1.2/rtm/chatrooms/{normal}/blacklists")).await.error(404, 4303);
    get(&server, &format!("/1.2/rtm/chatrooms/{normal}/member-infos")).await.error(404, 4303);
}

#[tokio::test]
async fn temporary_silences_expire_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_config(dir.path(), APPS);
    let cid = create(&server, "/1.2/rtm/conversations", json!({"m": ["o", "m2"], "c": "o"})).await;
    let temp = format!("/1.2/rtm/conversations/{cid}/temporary-silenceds");
    call(&server, "POST", &temp, &json!({"client_id": "m2", "ttl": 3})).await.ok();
    let silenced_at = std::time::Instant::now();
    server.kill();
    let server = Server::start_config(dir.path(), APPS);
    let mut m2 = server.open("m2").await;
    let refused = m2.request(json!({"cmd": "direct", "cid": cid, "msg": "x"})).await.unwrap();
    assert_eq!(refused["code"], 4315, "still silenced after a restart: {refused}");
    // Then it runs out.
    tokio::time::sleep(Duration::from_millis(3200).saturating_sub(silenced_at.elapsed())).await;
    common::send(&mut m2, &cid, "the silence is over").await;
    // A silence can be lifted before its time, and a new one replaces the old.
    call(&server, "POST", &temp, &json!({"client_id": "m2", "ttl": 3600})).await.ok();
    call(&server, "POST", &temp, &json!({"client_id": "m2", "ttl": 1})).await.ok();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    common::send(&mut m2, &cid, "the shorter one won").await;
    call(&server, "POST", &temp, &json!({"client_id": "m2", "ttl": 3600})).await.ok();
    let refused = m2.request(json!({"cmd": "direct", "cid": cid, "msg": "x"})).await.unwrap();
    assert_eq!(refused["code"], 4315, "{refused}");
    http(&server, "DELETE", &format!("{temp}?client_id=m2"), MASTER, None).await.ok();
    common::send(&mut m2, &cid, "lifted").await;
    // The same for a chat room.
    let room = create(&server, "/1.2/rtm/chatrooms", json!({"name": "r"})).await;
    join_room(&mut m2, &room, "m2").await;
    let room_temp = format!("/1.2/rtm/chatrooms/{room}/temporary-silenceds");
    call(&server, "POST", &room_temp, &json!({"client_id": "m2", "ttl": 60})).await.ok();
    let refused = m2.request(json!({"cmd": "direct", "cid": room, "msg": "x"})).await.unwrap();
    assert_eq!(refused["code"], 4315, "{refused}");
}

#[tokio::test]
async fn legacy_put_of_a_log_edits_as_the_1_2_edit_does() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_config(dir.path(), APPS);
    let mut b = server.open("b").await;
    let cid = create(&server, "/1.2/rtm/conversations", json!({"m": ["a", "b"], "c": "a"})).await;
    let messages = format!("/1.2/rtm/conversations/{cid}/messages");
    let (mid, t) = rest_send(&server, &messages, json!({"from_client": "a", "message": "first"})).await;
    b.wait_for("message", is_direct(&cid)).await.unwrap();

    // The record as history gave it, with a new `data`.
    let mut record = get(&server, &messages).await.ok()[0].clone();
    record["data"] = json!("edited");
    assert_eq!(call(&server, "PUT", "/1.1/rtm/messages/logs", &record).await.ok(), json!({}));
    let p = b.wait_for("edit", is_patch).await.unwrap();
    assert_eq!(
        (p["patches"][0]["mid"].clone(), p["patches"][0]["data"].clone()),
        (json!(mid), json!("edited"))
    );
    // 1.1's parameter names work too.
    let legacy = json!({"convid": cid, "msgid": mid, "timestamp": t, "from": "a", "data": {"_lctype": -1, "_lctext": "json"}});
    call(&server, "PUT", "/1.1/rtm/messages/logs", &legacy).await.ok();
    b.wait_for("second edit", is_patch).await.unwrap();

    // Stored before the answer: the edit is in history after a restart.
    drop(b);
    server.kill();
    let server = Server::start_config(dir.path(), APPS);
    let history = get(&server, &messages).await.ok();
    let data: Value = serde_json::from_str(history[0]["data"].as_str().unwrap()).unwrap();
    assert_eq!(data, json!({"_lctype": -1, "_lctext": "json"}), "{history}");
    assert!(history[0]["patch-timestamp"].as_i64().is_some(), "{history}");

    // Only the sender's message changes; unknown ones are 4404; the body is needed.
    let wrong = json!({"conv-id": cid, "msg-id": mid, "timestamp": t, "from": "b", "data": "x"});
    call(&server, "PUT", "/1.1/rtm/messages/logs", &wrong).await.error(400, 4403);
    let stale = json!({"conv-id": cid, "msg-id": mid, "timestamp": t + 1, "from": "a", "data": "x"});
    call(&server, "PUT", "/1.1/rtm/messages/logs", &stale).await.error(404, 4404);
    let bodiless = json!({"conv-id": cid, "msg-id": mid, "timestamp": t, "from": "a"});
    call(&server, "PUT", "/1.1/rtm/messages/logs", &bodiless).await.error(400, 107);
    call(&server, "PUT", "/1.1/rtm/messages/logs", &json!({"data": "x"})).await.error(400, 107);
    let missing = json!({"conv-id": "000000000000000000000000", "msg-id": mid, "from": "a", "data": "x"});
    call(&server, "PUT", "/1.1/rtm/messages/logs", &missing).await.error(404, 4303);
}

/// Asserts a 400 with 4543 whose message names the limit `key = max`.
fn list_full(a: Answer, limit: &str) {
    a.error(400, 4543);
    assert!(a.body["error"].as_str().unwrap().contains(limit), "should name {limit}: {}", a.body);
}

/// Every list the REST API grows is bounded by its `[apps.limits]` key: a call that
/// would take it over is refused whole (400, code 4543, the key named) and stores
/// nothing, what fits passes, and the lists read back hold exactly what was accepted.
#[tokio::test]
async fn blacklists_and_silences_are_bounded_over_rest() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_limits(
        dir.path(),
        "blacklist_max = 2\nsilenced_max = 2\nroom_blacklist_max = 3\nroom_silenced_max = 1\n\
         room_managers_max = 1\nclient_blacklist_max = 2",
    );
    let cid =
        create(&server, "/1.2/rtm/conversations", json!({"m": ["o", "m1", "m2", "m3"], "c": "o"})).await;
    let conv = format!("/1.2/rtm/conversations/{cid}");

    // Blacklist of a conversation: 2.
    let black = format!("{conv}/blacklists");
    list_full(
        call(&server, "POST", &black, &json!({"client_ids": ["m1", "x1", "x2"]})).await,
        "blacklist_max = 2",
    );
    assert_eq!(get(&server, &black).await.ok(), json!({"client_ids": []}));
    assert_eq!(
        get(&server, &format!("{conv}/members")).await.ok(),
        json!({"result": ["o", "m1", "m2", "m3"]})
    );
    call(&server, "POST", &black, &json!({"client_ids": ["x1", "x2"]})).await.ok();
    list_full(call(&server, "POST", &black, &json!({"client_ids": ["x3"]})).await, "blacklist_max = 2");
    call(&server, "POST", &black, &json!({"client_ids": ["x2"]})).await.ok();
    assert_eq!(get(&server, &black).await.ok(), json!({"client_ids": ["x1", "x2"]}));

    // Permanent silences: 2 members.
    let silenced = format!("{conv}/permanent-silenceds");
    list_full(
        call(&server, "POST", &silenced, &json!({"client_ids": ["m1", "m2", "m3"]})).await,
        "silenced_max = 2",
    );
    assert_eq!(get(&server, &silenced).await.ok(), json!({"client_ids": []}));
    call(&server, "POST", &silenced, &json!({"client_ids": ["m1", "m2"]})).await.ok();
    list_full(call(&server, "POST", &silenced, &json!({"client_ids": ["m3"]})).await, "silenced_max = 2");
    assert_eq!(get(&server, &silenced).await.ok(), json!({"client_ids": ["m1", "m2"]}));

    // Temporary silences: 2 as well, a list of their own; silences that ran out make room.
    let temp = format!("{conv}/temporary-silenceds");
    call(&server, "POST", &temp, &json!({"client_id": "m1", "ttl": 60})).await.ok();
    call(&server, "POST", &temp, &json!({"client_id": "m2", "ttl": 2})).await.ok();
    list_full(call(&server, "POST", &temp, &json!({"client_id": "m3", "ttl": 60})).await, "silenced_max = 2");
    call(&server, "POST", &temp, &json!({"client_id": "m1", "ttl": 120})).await.ok();
    let mut m3 = server.open("m3").await;
    common::send(&mut m3, &cid, "not silenced: the third silence was refused").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    call(&server, "POST", &temp, &json!({"client_id": "m3", "ttl": 60})).await.ok();
    let refused = m3.request(json!({"cmd": "direct", "cid": cid, "msg": "x"})).await.unwrap();
    assert_eq!(refused["code"], 4315, "{refused}");

    // A chat room: blacklist 3, shut-up 1, managers 1.
    let id = create(&server, "/1.2/rtm/chatrooms", json!({"name": "lobby", "c": "o"})).await;
    let room = format!("/1.2/rtm/chatrooms/{id}");
    let room_black = format!("{room}/blacklists");
    let four = json!({"client_ids": ["r1", "r2", "r3", "r4"]});
    list_full(call(&server, "POST", &room_black, &four).await, "room_blacklist_max = 3");
    call(&server, "POST", &room_black, &json!({"client_ids": ["r1", "r2", "r3"]})).await.ok();
    list_full(
        call(&server, "POST", &room_black, &json!({"client_ids": ["r4"]})).await,
        "room_blacklist_max = 3",
    );
    assert_eq!(get(&server, &room_black).await.ok(), json!({"client_ids": ["r1", "r2", "r3"]}));
    let room_silenced = format!("{room}/permanent-silenceds");
    call(&server, "POST", &room_silenced, &json!({"client_ids": ["s1"]})).await.ok();
    list_full(
        call(&server, "POST", &room_silenced, &json!({"client_ids": ["s2"]})).await,
        "room_silenced_max = 1",
    );
    assert_eq!(get(&server, &room_silenced).await.ok(), json!({"client_ids": ["s1"]}));
    let room_temp = format!("{room}/temporary-silenceds");
    call(&server, "POST", &room_temp, &json!({"client_id": "s1", "ttl": 60})).await.ok();
    let second = call(&server, "POST", &room_temp, &json!({"client_id": "s2", "ttl": 60})).await;
    list_full(second, "room_silenced_max = 1");
    let infos = format!("{room}/member-infos");
    call(&server, "POST", &infos, &json!({"clientId": "g1", "role": "Manager"})).await.ok();
    list_full(
        call(&server, "POST", &infos, &json!({"clientId": "g2", "role": "Manager"})).await,
        "room_managers_max = 1",
    );
    let managers = get(&server, &format!("{infos}?role=Manager")).await.ok();
    let names: Vec<&str> =
        managers["results"].as_array().unwrap().iter().map(|r| r["clientId"].as_str().unwrap()).collect();
    assert_eq!(names, ["g1"], "{managers}");

    // A service conversation's blacklist takes the room value.
    let svc = create(&server, "/1.2/rtm/service-conversations", json!({"name": "news"})).await;
    let svc_black = format!("/1.2/rtm/service-conversations/{svc}/blacklists");
    list_full(call(&server, "POST", &svc_black, &four).await, "room_blacklist_max = 3");
    assert_eq!(get(&server, &svc_black).await.ok(), json!({"client_ids": []}));

    // A client's own blacklist: 2 conversations; the same one again adds nothing.
    let mine = "/1.2/rtm/clients/z/blacklists";
    let mut convs = Vec::new();
    for _ in 0..3 {
        convs.push(create(&server, "/1.2/rtm/conversations", json!({"m": ["a"], "c": "a"})).await);
    }
    for c in &convs[..2] {
        call(&server, "POST", mine, &json!({"conv_id": c})).await.ok();
    }
    list_full(call(&server, "POST", mine, &json!({"conv_id": convs[2]})).await, "client_blacklist_max = 2");
    call(&server, "POST", mine, &json!({"conv_id": convs[0]})).await.ok();
    let mut two = convs[..2].to_vec();
    two.sort();
    assert_eq!(get(&server, mine).await.ok(), json!({"conv_ids": two}));
    // Another client's list is its own.
    call(&server, "POST", "/1.2/rtm/clients/y/blacklists", &json!({"conv_id": convs[2]})).await.ok();
    // Room again after a removal.
    call(&server, "DELETE", mine, &json!({"conv_id": convs[0]})).await.ok();
    call(&server, "POST", mine, &json!({"conv_id": convs[2]})).await.ok();
    let mut now = vec![convs[1].clone(), convs[2].clone()];
    now.sort();
    assert_eq!(get(&server, mine).await.ok(), json!({"conv_ids": now}));
}

/// §3.8 row 1: `_Conversation` written through the storage API, as old backends and the
/// Python SDK's `Conversation().save()` / `add_member` do — with the pushes, and the
/// same answers to bad input, as the 1.2 calls.
#[tokio::test]
async fn conversations_written_through_the_storage_api() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), APPS);
    let mut a = server.open("a").await;
    let mut c = server.open("c").await;
    let classes = "/1.1/classes/_Conversation";

    // Create: `m` as the SDK's `Add` operation, `c`, a name and an attribute.
    let body =
        json!({"name": "old", "m": {"__op": "Add", "objects": ["a", "b"]}, "c": "a", "attr": {"x": 1}});
    let made = call(&server, "POST", &format!("{classes}?fetchWhenSave=false"), &body).await;
    assert_eq!(made.status, 201, "{}", made.body);
    let cid = made.body["objectId"].as_str().unwrap().to_owned();
    assert!(made.body["createdAt"].as_str().unwrap().ends_with('Z'), "{}", made.body);
    a.wait_for("joined", is_conv("joined")).await.unwrap();
    let row = get(&server, &format!("{classes}/{cid}")).await.ok();
    assert_eq!(
        (row["name"].clone(), row["m"].clone(), row["c"].clone(), row["attr"].clone()),
        (json!("old"), json!(["a", "b"]), json!("a"), json!({"x": 1})),
        "{row}"
    );

    // AddUnique and Remove on `m` are the 1.2 member calls, pushes included.
    let add = json!({"m": {"__op": "AddUnique", "objects": ["c", "a"]}});
    let added = call(&server, "PUT", &format!("{classes}/{cid}?fetchWhenSave=false"), &add).await.ok();
    assert_eq!(added["objectId"], json!(cid));
    assert!(added["updatedAt"].is_string(), "{added}");
    c.wait_for("joined", is_conv("joined")).await.unwrap();
    a.wait_for("members-joined", is_conv("members-joined")).await.unwrap();
    let remove = json!({"m": {"__op": "Remove", "objects": ["b"]}});
    call(&server, "PUT", &format!("{classes}/{cid}"), &remove).await.ok();
    a.wait_for("members-left", is_conv("members-left")).await.unwrap();
    assert_eq!(
        get(&server, &format!("/1.2/rtm/conversations/{cid}/members")).await.ok()["result"],
        json!(["a", "c"])
    );

    // Nothing to change (an SDK saving an unchanged object): answered, nothing pushed.
    let same =
        call(&server, "PUT", &format!("{classes}/{cid}"), &json!({"ACL": {"*": {"read": true}}})).await.ok();
    assert!(same["updatedAt"].as_str().is_some_and(|u| u.ends_with('Z')), "{same}");
    assert!(c.drain(QUIET, is_conv("updated")).await.unwrap().is_empty());
    // Plain fields are an attribute update, pushed as `updated`.
    call(&server, "PUT", &format!("{classes}/{cid}"), &json!({"name": "new", "attr.y": 2})).await.ok();
    c.wait_for("updated", is_conv("updated")).await.unwrap();
    let row = get(&server, &format!("{classes}/{cid}?keys=name")).await.ok();
    assert_eq!(row["name"], json!("new"));
    assert!(row.get("m").is_none(), "{row}");
    let q = get(&server, &format!("{classes}?where=%7B%22objectId%22%3A%22{cid}%22%7D")).await.ok();
    assert_eq!(q["results"][0]["attr"], json!({"x": 1, "y": 2}), "{q}");

    // `tr` makes a chat room, `sys` a service conversation; fetchWhenSave answers the row.
    let room =
        call(&server, "POST", &format!("{classes}?fetchWhenSave=true"), &json!({"name": "r", "tr": true}))
            .await;
    assert_eq!(
        (room.status, room.body["tr"].clone(), room.body["name"].clone()),
        (201, json!(true), json!("r"))
    );
    let sys = create(&server, classes, json!({"name": "s", "sys": true})).await;
    let service =
        get(&server, &format!("/1.2/rtm/service-conversations?where=%7B%22objectId%22%3A%22{sys}%22%7D"))
            .await
            .ok();
    assert_eq!(service["results"].as_array().unwrap().len(), 1, "{service}");

    // Bad input: the app key, server-kept keys, a plain `m`, another op, unknown ids, other classes.
    http(&server, "POST", classes, APP_KEY, Some("{}")).await.error(401, 401);
    http(&server, "PUT", &format!("{classes}/{cid}"), APP_KEY, Some("{}")).await.error(401, 401);
    call(&server, "PUT", &format!("{classes}/{cid}"), &json!({"c": "x"})).await.error(400, 107);
    call(&server, "PUT", &format!("{classes}/{cid}"), &json!({"m": ["x"]})).await.error(400, 107);
    call(&server, "PUT", &format!("{classes}/{cid}"), &json!({"m": {"__op": "Increment", "amount": 1}}))
        .await
        .error(400, 107);
    call(&server, "POST", classes, &json!({"tr": "yes"})).await.error(400, 107);
    call(&server, "PUT", &format!("{classes}/nope"), &json!({"name": "x"})).await.error(404, 4303);
    call(&server, "PUT", &format!("{classes}/nope"), &add).await.error(404, 4303);
    call(&server, "PUT", &format!("{classes}/nope"), &json!({})).await.error(404, 4303);
    call(&server, "POST", "/1.1/classes/_SysMessage", &json!({})).await.error(403, 119);
    call(&server, "POST", "/1.1/classes/_User", &json!({})).await.error(404, 101);
    get(&server, &format!("{classes}/nope")).await.error(404, 101);

    // Delete: gone for the class API and the 1.2 API alike.
    assert_eq!(call(&server, "DELETE", &format!("{classes}/{cid}"), &json!({})).await.ok(), json!({}));
    get(&server, &format!("{classes}/{cid}")).await.error(404, 101);
    call(&server, "DELETE", &format!("{classes}/{cid}"), &json!({})).await.error(404, 4303);
}

/// The REST quotas of LeanCloud's §6, when configured: message calls, broadcasts to
/// subscribers and app-wide broadcasts each have their own per-minute count; over it
/// the call is refused with HTTP 429 before anything is sent, and other apps and other
/// kinds of calls are unaffected. Counted per node.
#[tokio::test]
async fn rest_quotas_refuse_with_429_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let apps = "[[apps]]\nid = \"test-app\"\nkey = \"k\"\nmaster_key = \"m\"\n\
        [apps.limits]\nrest_messages_per_minute = 2\nrest_subscriber_broadcasts_per_minute = 1\n\
        rest_app_broadcasts_per_minute = 1\n\
        [[apps]]\nid = \"other-app\"\nkey = \"ok\"\nmaster_key = \"om\"\n";
    let server = Server::start_config(dir.path(), apps);
    // Quotas count per node: the counted calls all go to the first one.
    let node = server.node_https()[0].clone();
    let at = |method: &'static str, path: String, body: Value| {
        let node = node.clone();
        async move { http_to(&node, method, &path, MASTER, Some(&body.to_string())).await }
    };
    let mut b = server.open("b").await;
    let cid = create(&server, "/1.2/rtm/conversations", json!({"m": ["a", "b"]})).await;
    let messages = format!("/1.2/rtm/conversations/{cid}/messages");
    let sent = at("POST", messages.clone(), json!({"from_client": "a", "message": "1"})).await.ok();
    let (mid, t) = (sent["msg-id"].as_str().unwrap().to_owned(), sent["timestamp"].as_i64().unwrap());
    // An edit counts as a message call.
    let edit = json!({"from_client": "a", "message": "1'", "timestamp": t});
    at("PUT", format!("{messages}/{mid}"), edit).await.ok();
    let over = at("POST", messages.clone(), json!({"from_client": "a", "message": "2"})).await;
    over.error(429, 429);
    assert!(over.body["error"].as_str().unwrap().contains("rest_messages_per_minute = 2"), "{}", over.body);
    // 1.1's send shares the quota; nothing refused was stored or pushed.
    let legacy = json!({"from_peer": "a", "conv_id": cid, "message": "3", "transient": false});
    at("POST", "/1.1/rtm/messages".into(), legacy).await.error(429, 429);
    assert_eq!(ids(&get(&server, &messages).await.ok()), vec![mid.clone()]);
    let got = b.drain(QUIET, is_direct(&cid)).await.unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    // Other calls and other apps are not counted.
    get(&server, &messages).await.ok();
    let other = [("X-LC-Id", "other-app"), ("X-LC-Key", "om,master")];
    let other_conv = http(&server, "POST", "/1.2/rtm/conversations", &other, Some(r#"{"m":["x"]}"#)).await;
    let other_cid = other_conv.body["objectId"].as_str().unwrap().to_owned();
    let path = format!("/1.2/rtm/conversations/{other_cid}/messages");
    for i in 0..3 {
        let body = json!({"from_client": "x", "message": i.to_string()}).to_string();
        assert_eq!(http(&server, "POST", &path, &other, Some(&body)).await.status, 200);
    }

    // Broadcasts have quotas of their own.
    let svc = create(&server, "/1.2/rtm/service-conversations", json!({"name": "news"})).await;
    let to_subs = format!("/1.2/rtm/service-conversations/{svc}/broadcasts");
    let body = json!({"from_client": "sys", "message": "all"});
    at("POST", to_subs.clone(), body.clone()).await.ok();
    at("POST", to_subs, body).await.error(429, 429);
    let legacy = json!({"from_peer": "sys", "conv_id": svc, "message": "all"});
    at("POST", "/1.1/rtm/broadcast/subscriber".into(), legacy.clone()).await.error(429, 429);
    let global = json!({"from_client": "sys", "conv_id": svc, "message": "everyone"});
    at("POST", "/1.2/rtm/broadcasts".into(), global.clone()).await.ok();
    at("POST", "/1.2/rtm/broadcasts".into(), global).await.error(429, 429);
    at("POST", "/1.1/rtm/broadcast".into(), legacy).await.error(429, 429);
}

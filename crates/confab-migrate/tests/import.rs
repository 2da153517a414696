//! `import` against the in-memory store: hand-made export files with ties, malformed
//! and hostile records, a second run, a delta, roles, mutes, subscribers and
//! `_SysMessage`.
#![allow(clippy::unwrap_used)]

use confab_engine::AppConfig;
use confab_engine::ports::{ConvKind, MessageRange, Store};
use confab_migrate::files::FileDomains;
use confab_migrate::{ImportOptions, ImportReport, import};
use confab_store_memory::MemoryStore;
use serde_json::{Value, json};
use std::path::Path;

const APP: &str = "app";

fn app() -> AppConfig {
    AppConfig::new(APP, "k", "m")
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn jsonl(rows: &[Value]) -> String {
    rows.iter().map(|r| format!("{r}\n")).collect()
}

async fn run(store: &MemoryStore, dir: &Path, opts: &ImportOptions) -> (ImportReport, String) {
    let mut log = Vec::new();
    let report = import(store, &app(), dir, opts, &mut log).await.unwrap();
    (report, String::from_utf8(log).unwrap())
}

async fn history(store: &MemoryStore, cid: &str) -> Vec<(String, i64, String)> {
    let range = MessageRange { limit: 1000, ..Default::default() };
    store.messages(APP, cid, range).await.unwrap().into_iter().map(|m| (m.id, m.ts, m.data)).collect()
}

fn conv_row(id: &str, members: &[&str], updated: &str) -> Value {
    json!({
        "objectId": id, "name": format!("n-{id}"), "c": members.first().copied().unwrap_or(""),
        "m": members, "attr": {"k": 1}, "ACL": {"*": {"read": true}},
        "createdAt": "2024-01-01T00:00:00.000Z", "updatedAt": updated,
    })
}

fn rec(id: &str, ts: i64, from: &str, data: &str) -> Value {
    json!({"msg-id": id, "timestamp": ts, "conv-id": "x", "from": from, "data": data, "bin": false, "is-conv": true})
}

#[tokio::test]
async fn ties_order_by_id_and_take_the_next_free_millisecond() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "_Conversation.jsonl", &jsonl(&[conv_row("c1", &["alice", "bob"], "2024-01-02T00:00:00.000Z")]));
    // Any order; three at 1000 (ids b < c < d), one at 1001 and one at 1002.
    let records = json!([
        rec("d", 1000, "bob", "4th"),
        rec("m2", 1002, "alice", "6th"),
        rec("b", 1000, "alice", "2nd"),
        rec("a", 999, "alice", "1st"),
        rec("c", 1000, "bob", "3rd"),
        rec("m1", 1001, "bob", "5th"),
    ]);
    write(d, "messages/c1.json", &records.to_string());
    let store = MemoryStore::new();
    let (report, _) = run(&store, d, &ImportOptions::default()).await;
    assert_eq!((report.messages.imported, report.messages.shifted), (6, 4));
    let h: Vec<(String, i64)> = history(&store, "c1").await.into_iter().map(|(id, ts, _)| (id, ts)).collect();
    let expected = [("a", 999), ("b", 1000), ("c", 1001), ("d", 1002), ("m1", 1003), ("m2", 1004)];
    assert_eq!(h, expected.map(|(i, t)| (i.to_owned(), t)));
    // Every member delivered and read up to the last one.
    let positions = store.member_positions(APP, "c1").await.unwrap();
    assert!(positions.iter().all(|p| p.acked_upto == 1004 && p.read_upto == 1004), "{positions:?}");
    assert!(store.unread(APP, "alice", 100).await.unwrap().is_empty());

    // A second run adds nothing.
    let (again, _) = run(&store, d, &ImportOptions::default()).await;
    assert_eq!(again.conversations.unchanged, 1);
    assert_eq!((again.messages.imported, again.messages.present), (0, 6));
    assert_eq!(history(&store, "c1").await.len(), 6);
}

#[tokio::test]
async fn malformed_and_hostile_records_are_reported_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut convs = jsonl(&[conv_row("good", &["alice", "bad id:x", "bob"], "2024-01-02T00:00:00.000Z")]);
    convs.push_str("{not json\n\n");
    convs.push_str(&format!("{}\n", json!({"objectId": "../../etc", "m": []})));
    convs.push_str(&format!("{}\n", json!({"objectId": "big", "m": [], "blob": "x".repeat(5000)})));
    convs.push_str(&format!("{}\n", json!({"objectId": "deep", "attr": {"a": {"b": {"c": 1}}}})));
    convs.push_str(&format!("{}\n", json!({"objectId": "_tmp:x", "m": ["alice"]})));
    write(d, "_Conversation.jsonl", &convs);
    let records = json!([
        rec("ok1", 10, "alice", "fine"), {"msg-id": "nots", "data": "x"}, rec("ok1", 11, "bob", "dup"),
        "a string", rec("ok2", 12, "bob", "fine too"),
    ]);
    write(d, "messages/good.json", &records.to_string());
    write(d, "messages/missing.json", "[]");
    write(d, "messages/bad name.json", "[]");
    write(d, "messages/broken.json", "[1,");
    // A file cut off inside its array: what came before is imported.
    let more = jsonl(&[
        conv_row("cut", &["alice"], "2024-01-02T00:00:00.000Z"),
        conv_row("broken", &[], "2024-01-02T00:00:00.000Z"),
    ]);
    write(d, "_Conversation.jsonl", &format!("{convs}{more}"));
    write(
        d,
        "messages/cut.json",
        &format!("[{}, {}, {{\"msg-id\": ", rec("c1", 5, "alice", "x"), rec("c2", 6, "alice", "y")),
    );
    write(
        d,
        "_ConversationMemberInfo.jsonl",
        "{\"cid\": \"good\", \"clientId\": \"carol\", \"role\": \"Manager\"}\n",
    );
    let store = MemoryStore::new();
    let mut app = app();
    app.limits.attr_bytes = 1000;
    app.limits.json_depth = 3;
    let opts = ImportOptions { max_record_bytes: 4000, ..Default::default() };
    let mut log = Vec::new();
    let report = import(&store, &app, d, &opts, &mut log).await.unwrap();
    let log = String::from_utf8(log).unwrap();
    assert_eq!(report.conversations.created, 3, "{log}");
    let good = store.conversation(APP, "good").await.unwrap().unwrap();
    assert_eq!(good.members, ["alice", "bob"]);
    assert_eq!(
        history(&store, "good").await.iter().map(|m| m.0.as_str()).collect::<Vec<_>>(),
        ["ok1", "ok2"]
    );
    assert_eq!(history(&store, "cut").await.len(), 2);
    for gone in ["etc", "big", "deep", "_tmp:x", "missing"] {
        assert!(store.conversation(APP, gone).await.unwrap().is_none(), "{gone}");
    }
    for expected in [
        "_Conversation.jsonl line 2: malformed JSON",
        "_Conversation.jsonl line 4: objectId must be",
        "line 5: ", // over the record limit
        "attributes over the limit json_depth = 3",
        "temporary conversation",
        "member \"bad id:x\"",
        "messages/good.json record 1: timestamp missing",
        "msg-id ok1 appears twice",
        "messages/good.json record 3: not a JSON object",
        "messages/missing.json: no conversation missing",
        "messages/bad name.json: the file name is not",
        "messages/broken.json: malformed JSON",
        "messages/cut.json: malformed JSON at element 2",
        "carol is not a member of good",
    ] {
        assert!(log.contains(expected), "{expected:?} not in\n{log}");
    }
    assert!(report.skipped_total() >= 13, "{report:?}");
}

#[tokio::test]
async fn roles_mutes_kinds_subscribers_and_sys_messages() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut group = conv_row("g", &["alice", "bob", "carol"], "2024-01-02T00:00:00.000Z");
    group["mu"] = json!(["bob", "stranger"]);
    group["unique"] = json!(true);
    group["uniqueId"] = json!("0123456789abcdef0123456789abcdef");
    let room = json!({"objectId": "room", "tr": true, "name": "lobby", "m": ["x"],
        "createdAt": "2024-01-01T00:00:00.000Z", "updatedAt": "2024-01-01T00:00:00.000Z"});
    let sys = json!({"objectId": "sys", "sys": true, "name": "news", "m": ["carol"],
        "createdAt": "2024-01-01T00:00:00.000Z", "updatedAt": "2024-01-01T00:00:00.000Z"});
    write(d, "_Conversation.jsonl", &jsonl(&[group, room, sys]));
    write(
        d,
        "_ConversationMemberInfo.jsonl",
        &jsonl(&[
            json!({"objectId": "i1", "cid": "g", "clientId": "bob", "role": "Manager"}),
            json!({"objectId": "i2", "cid": "g", "clientId": "alice", "role": "Owner"}),
            json!({"objectId": "i3", "cid": "g", "clientId": "carol", "role": "Owner"}),
        ]),
    );
    write(
        d,
        "subscribers/sys.json",
        &json!([{"subscriber": "dave", "timestamp": 1, "conv_id": "sys"}, "erin"]).to_string(),
    );
    write(d, "messages/room.json", &json!([rec("r1", 50, "x", "hello room")]).to_string());
    write(d, "messages/sys.json", &json!([rec("b1", 70, "admin", "broadcast")]).to_string());
    let sysmsg = |id: &str, ts: i64| {
        json!({"objectId": format!("o{id}"), "conv": {"__type": "Pointer", "className": "_Conversation", "objectId": "sys"},
            "msgId": id, "timestamp": ts, "from": "dave", "data": "to the app", "bin": false})
    };
    write(
        d,
        "_SysMessage.jsonl",
        &jsonl(&[
            sysmsg("s2", 90),
            sysmsg("s1", 90),
            json!({"msgId": "s3", "conv": "nope", "timestamp": 5, "data": ""}),
        ]),
    );
    let store = MemoryStore::new();
    let (report, log) = run(&store, d, &ImportOptions::default()).await;
    let g = store.conversation(APP, "g").await.unwrap().unwrap();
    assert_eq!(
        (g.creator.as_str(), g.managers.clone(), g.muted.clone()),
        ("alice", vec!["bob".to_owned()], vec!["bob".to_owned()])
    );
    assert!(g.unique_key.is_some());
    assert_eq!(g.attrs, *json!({"name": "n-g", "attr": {"k": 1}}).as_object().unwrap());
    assert!(log.contains("Owner carol is not the creator"), "{log}");
    let room = store.conversation(APP, "room").await.unwrap().unwrap();
    assert_eq!((room.kind, room.members.len()), (ConvKind::Transient, 0));
    assert_eq!(history(&store, "room").await.len(), 1);
    let sys = store.conversation(APP, "sys").await.unwrap().unwrap();
    assert_eq!(
        (sys.kind, sys.members.clone()),
        (ConvKind::System, vec!["carol".to_owned(), "dave".to_owned(), "erin".to_owned()])
    );
    let positions = store.member_positions(APP, "sys").await.unwrap();
    assert!(positions.iter().all(|p| p.acked_upto == 70 && p.read_upto == 70), "{positions:?}");
    let inbox: Vec<(String, i64)> =
        history(&store, "sys:inbox").await.into_iter().map(|(i, t, _)| (i, t)).collect();
    assert_eq!(inbox, [("s1".to_owned(), 90), ("s2".to_owned(), 91)]);
    assert!(log.contains("no service conversation nope"), "{log}");
    assert_eq!((report.roles_changed, report.subscribers_added, report.sys_messages.imported), (1, 3, 2));

    let (again, _) = run(&store, d, &ImportOptions::default()).await;
    assert_eq!(again.conversations.unchanged, 3);
    assert_eq!(
        (
            again.roles_changed,
            again.subscribers_added,
            again.sys_messages.imported,
            again.sys_messages.present
        ),
        (0, 0, 0, 2)
    );
    assert_eq!(history(&store, "sys:inbox").await.len(), 2);
}

#[tokio::test]
async fn a_delta_updates_newer_rows_and_merges_history() {
    let full = tempfile::tempdir().unwrap();
    write(
        full.path(),
        "_Conversation.jsonl",
        &jsonl(&[conv_row("c", &["alice", "bob"], "2024-01-02T00:00:00.000Z")]),
    );
    write(
        full.path(),
        "messages/c.json",
        &json!([rec("m1", 100, "alice", "a"), rec("m2", 100, "bob", "b")]).to_string(),
    );
    let store = MemoryStore::new();
    run(&store, full.path(), &ImportOptions::default()).await;
    // A message sent on Confab in the meantime holds position 103.
    let live = confab_engine::ports::StoredMessage {
        app: APP.into(),
        cid: "c".into(),
        id: "live".into(),
        ts: 103,
        from: "alice".into(),
        data: "live".into(),
        receipt: false,
        patched_at: None,
        binary: false,
        mentions: Default::default(),
        recipients: None,
    };
    store.append_message(live).await.unwrap();

    let delta = tempfile::tempdir().unwrap();
    let mut row = conv_row("c", &["bob", "carol"], "2024-01-03T00:00:00.000Z");
    row["name"] = json!("renamed");
    row["mu"] = json!(["carol"]);
    write(delta.path(), "_Conversation.jsonl", &jsonl(&[row]));
    // m2 again (present; the full import moved it to 101), m3 at 101 and m4 at 103:
    // older than the newest stored message (the live one), so they go after it.
    write(
        delta.path(),
        "messages/c.json",
        &json!([rec("m2", 100, "bob", "b"), rec("m3", 101, "bob", "c"), rec("m4", 103, "carol", "d")])
            .to_string(),
    );
    let (report, _) = run(&store, delta.path(), &ImportOptions::default()).await;
    assert_eq!(report.conversations.updated, 1);
    assert_eq!((report.members_added, report.members_removed, report.mutes_changed), (1, 1, 1));
    assert_eq!((report.messages.imported, report.messages.present), (2, 1));
    let c = store.conversation(APP, "c").await.unwrap().unwrap();
    assert_eq!(
        (c.members.clone(), c.muted.clone()),
        (vec!["bob".to_owned(), "carol".to_owned()], vec!["carol".to_owned()])
    );
    assert_eq!(c.attrs["name"], "renamed");
    let h: Vec<(String, i64)> = history(&store, "c").await.into_iter().map(|(i, t, _)| (i, t)).collect();
    let expected = [("m1", 100), ("m2", 101), ("live", 103), ("m3", 104), ("m4", 105)];
    assert_eq!(h, expected.map(|(i, t)| (i.to_owned(), t)));
    // Delivered and read up to the delta's last message.
    let positions = store.member_positions(APP, "c").await.unwrap();
    assert!(positions.iter().all(|p| p.acked_upto == 105 && p.read_upto == 105), "{positions:?}");
}

#[tokio::test]
async fn file_urls_are_rewritten_and_large_histories_sort_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "_Conversation.jsonl", &jsonl(&[conv_row("c", &["alice"], "2024-01-02T00:00:00.000Z")]));
    let image =
        json!({"_lctype": -2, "_lcfile": {"url": "https://lc-x.cn-n1.lcfile.com/abc/p.png", "objId": "o"}})
            .to_string();
    let mut records: Vec<Value> =
        (0..300).rev().map(|i| rec(&format!("m{i:03}"), 1000 + i / 3, "alice", "t")).collect();
    records.push(rec("img", 5000, "alice", &image));
    write(d, "messages/c.json", &Value::Array(records).to_string());
    let store = MemoryStore::new();
    let opts = ImportOptions {
        sort_memory_bytes: 1000,
        work_dir: Some(d.to_owned()),
        file_base_url: Some("https://files.example.com/lc".into()),
        file_domains: FileDomains::new(&[]),
        ..Default::default()
    };
    let (report, _) = run(&store, d, &opts).await;
    assert_eq!((report.messages.imported, report.messages.files_rewritten), (301, 1));
    let h = history(&store, "c").await;
    let ids: Vec<&str> = h.iter().map(|m| m.0.as_str()).collect();
    let mut sorted = ids[..300].to_vec();
    sorted.sort();
    assert_eq!(ids[..300], sorted[..]);
    assert!(h.windows(2).all(|w| w[0].1 < w[1].1));
    assert!(
        h[300].2.contains("https://files.example.com/lc/lc-x.cn-n1.lcfile.com/abc/p.png"),
        "{}",
        h[300].2
    );
    // The sort's temporary directory is gone.
    assert!(
        std::fs::read_dir(d).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("confab-import-"))
    );
}

#[tokio::test]
async fn an_empty_or_missing_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStore::new();
    let mut log = Vec::new();
    let e = import(&store, &app(), dir.path(), &ImportOptions::default(), &mut log).await.unwrap_err();
    assert!(e.to_string().contains("nothing to import"), "{e}");
    let e = import(&store, &app(), &dir.path().join("nope"), &ImportOptions::default(), &mut log)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
}

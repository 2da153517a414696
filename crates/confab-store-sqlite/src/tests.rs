use super::*;
use serde_json::json;

fn record(app: &str, id: &str, members: &[&str], unique: Option<&str>) -> ConversationRecord {
    let Value::Object(attrs) = json!({"name": id}) else { unreachable!() };
    ConversationRecord {
        app: app.into(),
        id: id.into(),
        kind: ConvKind::Normal,
        creator: members[0].into(),
        members: members.iter().map(|m| m.to_string()).collect(),
        muted: Vec::new(),
        managers: Vec::new(),
        shut_up: Vec::new(),
        blocked: Vec::new(),
        expires_at: None,
        attrs,
        unique_key: unique.map(str::to_owned),
        created_at: 1,
        updated_at: 1,
        last_message: None,
    }
}

fn message(cid: &str, ts: i64) -> StoredMessage {
    StoredMessage {
        app: "a".into(),
        cid: cid.into(),
        id: format!("m{ts}"),
        ts,
        from: "alice".into(),
        data: format!("{{\"_lctype\":{}}}", if ts % 2 == 0 { -1 } else { -2 }),
        receipt: ts == 3,
        patched_at: None,
        binary: false,
        mentions: confab_types::Mentions {
            all: false,
            pids: if ts == 2 { vec!["bob".into()] } else { Vec::new() },
        },
    }
}

#[tokio::test]
async fn conversations_members_messages_and_cursors_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = SqliteStore::open(dir.path(), Durability::Full).expect("open");
        store.create_conversation(record("a", "c1", &["alice", "bob"], Some("k"))).await.expect("create");
        store.create_conversation(record("b", "c1", &["mallory"], None)).await.expect("other app, same id");
        assert!(
            store.create_conversation(record("a", "c2", &["x"], Some("k"))).await.is_err(),
            "unique key enforced"
        );
        let commits: Vec<_> = (1..=5).map(|ts| store.append_message(message("c1", ts))).collect();
        for c in commits {
            c.await.expect("append");
        }
        store.add_members("a", "c1", vec!["carol".into()], 9).await.expect("add");
        store.save_cursor("a", "bob", "c1", 3);
        store.save_cursor("a", "bob", "c1", 2);
        store.remove_members("a", "c1", vec!["alice".into()], 10).await.expect("remove");
    }
    let store = SqliteStore::open(dir.path(), Durability::Full).expect("reopen");
    let c1 = store.conversation("a", "c1").await.expect("read").expect("exists");
    assert_eq!(c1.members, ["bob", "carol"]);
    assert_eq!(c1.last_message.as_ref().map(|m| (m.id.as_str(), m.ts)), Some(("m5", 5)));
    assert_eq!(c1.updated_at, 10);
    assert_eq!(store.find_unique("a", "k").await.expect("read").map(|r| r.id), Some("c1".into()));
    let other = store.conversation("b", "c1").await.expect("read").expect("exists");
    assert_eq!(other.members, ["mallory"], "apps are isolated");
    let cursors = store.member_cursors("a", "bob").await.expect("cursors");
    assert_eq!(cursors, [MemberCursor { cid: "c1".into(), cursor: 3, last_ts: 5 }]);
    let carol = store.member_cursors("a", "carol").await.expect("cursors");
    assert_eq!(carol[0].cursor, 5, "a new member starts at the newest message");
    let page = |range| store.messages("a", "c1", range);
    let ts = |v: Vec<StoredMessage>| v.into_iter().map(|m| m.ts).collect::<Vec<_>>();
    assert_eq!(
        ts(page(MessageRange { limit: 2, newest_first: true, ..Default::default() }).await.expect("read")),
        [4, 5]
    );
    assert_eq!(
        ts(page(MessageRange {
            limit: 10,
            before: Some((4, false)),
            newest_first: true,
            ..Default::default()
        })
        .await
        .expect("read")),
        [1, 2, 3]
    );
    assert_eq!(
        ts(page(MessageRange {
            limit: 10,
            after: Some((2, true)),
            before: Some((4, true)),
            ..Default::default()
        })
        .await
        .expect("read")),
        [2, 3, 4]
    );
    assert_eq!(
        ts(page(MessageRange { limit: 10, lctype: Some(-2), ..Default::default() }).await.expect("read")),
        [1, 3, 5]
    );
    let scan = store
        .scan_conversations("a", ScanFilter { member: Some("carol".into()), max: 10, ..Default::default() })
        .await
        .expect("scan");
    assert_eq!(scan.len(), 1);
    let scan = store
        .scan_conversations(
            "a",
            ScanFilter { ids: Some(vec!["c1".into(), "zz".into()]), max: 10, ..Default::default() },
        )
        .await
        .expect("scan");
    assert_eq!(scan.len(), 1);
}

#[tokio::test]
async fn concurrent_appends_are_grouped_and_all_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path(), Durability::Normal).expect("open");
    store.create_conversation(record("a", "c", &["alice"], None)).await.expect("create");
    let commits: Vec<_> = (1..=2000).map(|ts| store.append_message(message("c", ts))).collect();
    for c in commits {
        c.await.expect("append");
    }
    let all =
        store.messages("a", "c", MessageRange { limit: 5000, ..Default::default() }).await.expect("read");
    assert_eq!(all.len(), 2000);
    assert!(all.windows(2).all(|w| w[0].ts < w[1].ts));
    assert!(store.append_message(message("c", 5)).await.is_err(), "a duplicate position is refused alone");
    store.append_message(message("c", 2001)).await.expect("the writer keeps going");
}

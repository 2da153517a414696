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
        recipients: None,
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
        store.flush().await.expect("flush writes the buffered cursors");
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
    let late = store.append_message(message("c", 5)).await.expect("an old position moves to the end");
    assert_eq!(late, Appended::new(2001, 2000));
    store.append_message(message("c", 2002)).await.expect("the writer keeps going");
}

#[tokio::test]
async fn one_bad_write_in_a_batch_fails_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path(), Durability::Normal).expect("open");
    store.create_conversation(record("a", "c", &["alice"], None)).await.expect("create");
    store.append_message(message("c", 1)).await.expect("append");
    // Queued back to back so they share a transaction: an append proposing a taken
    // position gets the next free one, the edit sees the appends queued before it, and
    // the edit of a missing message fails alone.
    let good = store.append_message(message("c", 2));
    let taken = store.append_message(message("c", 1));
    let newest = store.append_message(message("c", 3));
    let edit = store.patch_message("a", "c", 4, "edited".into(), None, 7);
    let missing = store.patch_message("a", "c", 99, "nothing there".into(), None, 7);
    let after = store.append_message(message("c", 5));
    assert_eq!(good.await.expect("good"), Appended::new(2, 1));
    assert_eq!(taken.await.expect("taken"), Appended::new(3, 2));
    assert_eq!(newest.await.expect("newest"), Appended::new(4, 3));
    assert!(edit.await.is_ok());
    assert!(missing.await.is_err(), "editing a missing message is refused");
    assert_eq!(after.await.expect("after"), Appended::new(5, 4));
    let all = store.messages("a", "c", MessageRange { limit: 10, ..Default::default() }).await.expect("read");
    assert_eq!(all.iter().map(|m| m.ts).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    let edited = all.iter().find(|m| m.ts == 4).expect("the edited message");
    assert_eq!(edited.data, "edited");
    let c = store.conversation("a", "c").await.expect("read").expect("exists");
    let last = c.last_message.expect("last message");
    assert_eq!((last.ts, last.data), (5, message("c", 5).data));
}

#[tokio::test]
async fn batched_appends_leave_the_newest_as_last_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path(), Durability::Normal).expect("open");
    store.create_conversation(record("a", "c", &["alice"], None)).await.expect("create");
    store.create_conversation(record("a", "d", &["alice"], None)).await.expect("create");
    let commits: Vec<_> =
        (1..=50).map(|ts| store.append_message(message(if ts % 2 == 0 { "c" } else { "d" }, ts))).collect();
    for c in commits {
        c.await.expect("append");
    }
    for (cid, ts) in [("c", 50), ("d", 49)] {
        let conv = store.conversation("a", cid).await.expect("read").expect("exists");
        assert_eq!(conv.last_message.map(|m| m.ts), Some(ts), "{cid}");
    }
}

/// The cursor column as committed, read past the store's buffer.
fn committed_cursor(dir: &Path, client: &str) -> i64 {
    let conn = Connection::open(dir.join("confab.db")).expect("open db");
    conn.query_row("SELECT cursor_ts FROM members WHERE client = ?1", [client], |r| r.get(0))
        .expect("member row")
}

#[tokio::test]
async fn cursors_are_buffered_merged_and_written_within_the_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path(), Durability::Full).expect("open");
    store.create_conversation(record("a", "c", &["alice", "bob"], None)).await.expect("create");
    for ts in 1..=5 {
        store.append_message(message("c", ts)).await.expect("append");
    }
    store.save_cursor("a", "bob", "c", 4);
    store.save_cursor("a", "bob", "c", 2);
    // Readers see the newest position before it is written.
    let cursors = store.member_cursors("a", "bob").await.expect("cursors");
    assert_eq!(cursors[0].cursor, 4);
    let positions = store.member_positions("a", "c").await.expect("positions");
    let bob = MemberPosition { client: "bob".into(), acked_upto: 4, read_upto: 0 };
    assert!(positions.contains(&bob), "{positions:?}");
    // Written by the writer on its own, with no other write to carry it.
    let deadline = Instant::now() + CURSOR_FLUSH_INTERVAL * 20;
    while committed_cursor(dir.path(), "bob") != 4 {
        assert!(Instant::now() < deadline, "cursor not written within {:?}", CURSOR_FLUSH_INTERVAL * 20);
        tokio::time::sleep(CURSOR_FLUSH_INTERVAL / 4).await;
    }
    // The acks of a quiet moment share one commit.
    let before = store.commits();
    for ts in 1..=100 {
        store.save_cursor("a", "alice", "c", ts);
    }
    while committed_cursor(dir.path(), "alice") != 100 {
        assert!(Instant::now() < deadline, "cursor not written within {:?}", CURSOR_FLUSH_INTERVAL * 20);
        tokio::time::sleep(CURSOR_FLUSH_INTERVAL / 4).await;
    }
    assert!(store.commits() - before <= 2, "{} commits for one quiet moment", store.commits() - before);
    // A flush writes at once, and never moves a cursor back.
    store.save_cursor("a", "bob", "c", 5);
    store.save_cursor("a", "alice", "c", 3);
    store.save_cursor("a", "alice", "c", 1);
    store.flush().await.expect("flush");
    assert_eq!(committed_cursor(dir.path(), "bob"), 5);
    assert_eq!(committed_cursor(dir.path(), "alice"), 100);
}

#[tokio::test]
async fn cursors_ride_along_with_the_next_write_without_a_commit_of_their_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path(), Durability::Full).expect("open");
    store.create_conversation(record("a", "c", &["alice", "bob"], None)).await.expect("create");
    store.append_message(message("c", 1)).await.expect("append");
    // Old enough to be written, but not yet alone: the next message carries it.
    store.save_cursor("a", "bob", "c", 1);
    tokio::time::sleep(CURSOR_FLUSH_INTERVAL + Duration::from_millis(5)).await;
    let before = store.commits();
    store.append_message(message("c", 2)).await.expect("append");
    assert_eq!(committed_cursor(dir.path(), "bob"), 1, "committed with the message");
    // One transaction (one fsync), unless this thread stalled until the cursor went alone.
    let commits = store.commits() - before;
    assert!((1..=2).contains(&commits), "{commits} commits for one message and one cursor");
    // A younger cursor waits for a later transaction.
    store.save_cursor("a", "bob", "c", 2);
    store.append_message(message("c", 3)).await.expect("append");
    assert_eq!(store.member_cursors("a", "bob").await.expect("cursors")[0].cursor, 2, "readers see it");
}

#[tokio::test]
async fn the_login_reads_are_not_prepared_again_on_every_call() {
    // Joins here made SQLite re-prepare the cached statements on every call (rusqlite
    // clears the bindings of a statement returned to its cache, which expires
    // statements whose plan looked at a bound value): a third of a session open's CPU.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path(), Durability::Normal).expect("open");
    store.create_conversation(record("a", "c", &["alice", "bob"], None)).await.expect("create");
    store.append_message(message("c", 1)).await.expect("append");
    for (name, sql) in [
        ("cursors", MEMBER_CURSORS),
        ("reads", MEMBER_READS),
        ("unread", UNREAD_IN_CONVERSATION),
        ("conversations", CLIENT_CONVERSATIONS),
        ("patched", PATCHED_IN_CONVERSATION),
    ] {
        let mut outcomes = Vec::new();
        for (client, since) in [("alice", 0i64), ("bob", 5), ("alice", 0)] {
            let outcome = store
                .read(move |c| {
                    let mut stmt = c.prepare_cached(sql)?;
                    let rows = match stmt.parameter_count() {
                        2 => stmt.query_map(params!["a", client], |_| Ok(()))?.count(),
                        3 => stmt.query_map(params!["a", "c", since], |_| Ok(()))?.count(),
                        _ => stmt.query_map(params!["a", "c", since, client], |_| Ok(()))?.count(),
                    };
                    Ok((rows, stmt.get_status(rusqlite::StatementStatus::RePrepare)))
                })
                .await
                .expect("read");
            outcomes.push(outcome.1);
        }
        assert_eq!(outcomes, [0, 0, 0], "{name} was prepared again");
    }
}

#[tokio::test]
async fn an_unreadable_attribute_document_is_an_error_not_an_empty_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = SqliteStore::open(dir.path(), Durability::Full).expect("open");
        store.create_conversation(record("a", "c1", &["alice"], None)).await.expect("create");
        store.flush().await.expect("flush");
    }
    // Deeper than the JSON parser reads, as an attribute update could once store it.
    let deep = format!("{}1{}", "{\"d\":".repeat(200), "}".repeat(200));
    let conn = Connection::open(dir.path().join("confab.db")).expect("open the file");
    conn.execute("UPDATE conversations SET attrs = ?1 WHERE id = 'c1'", [&deep]).expect("update");
    drop(conn);
    let store = SqliteStore::open(dir.path(), Durability::Full).expect("reopen");
    // Read as `{}`, the next update would write `{}` back and erase the document.
    assert!(store.conversation("a", "c1").await.is_err());
}

/// A store on a fresh temporary directory, removed when the test ends.
struct TempStore {
    store: SqliteStore,
    _dir: tempfile::TempDir,
}

impl TempStore {
    fn new() -> TempStore {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path(), Durability::Normal).expect("open");
        TempStore { store, _dir: dir }
    }
}

impl confab_store_tests::AsStore for TempStore {
    fn as_store(&self) -> &dyn Store {
        &self.store
    }
}

mod conformance {
    use super::TempStore;

    confab_store_tests::store_conformance_tests!(TempStore::new());
}

fn hook_call(key: &str, at: i64) -> HookCall {
    HookCall {
        app: "a".into(),
        key: key.into(),
        hook: "_messageSent".into(),
        params: "{}".into(),
        created_at: at,
    }
}

/// A batch with a failing write (a conversation id that exists) keeps every other
/// write's hook calls and drops the failing one's; an append at a taken position moves
/// with its call (reporting the new position); the outbox, with its attempts, survives
/// a reopen.
#[tokio::test]
async fn hook_calls_share_their_write_in_a_batch_and_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = SqliteStore::open(dir.path(), Durability::Full).expect("open");
        store.create_conversation(record("a", "c", &["alice"], None)).await.expect("create");
        store.append_message(message("c", 1)).await.expect("append");
        let good = store.append_message_notify(message("c", 2), vec![hook_call("m2", 2)], None);
        let duplicate =
            store.create_conversation_notify(record("a", "c", &["bob"], None), vec![hook_call("dup", 2)]);
        let mut moved_call = hook_call("m1-again", 1);
        moved_call.params = json!({ "timestamp": 1 }).to_string();
        let moved = store.append_message_notify(message("c", 1), vec![moved_call], None);
        assert!(good.await.is_ok());
        assert!(duplicate.await.is_err(), "an existing id is refused");
        assert_eq!(moved.await.expect("moved").ts, 3, "a taken position moves to the next free one");
        store.outbox_retry("a", "m2", 2, 50).await.expect("retry");
    }
    let store = SqliteStore::open(dir.path(), Durability::Full).expect("reopen");
    let due = store.outbox_due(100, 10).await.expect("due");
    let got: Vec<_> =
        due.iter().map(|e| (e.call.key.as_str(), e.call.params.as_str(), e.attempts, e.due_at)).collect();
    assert_eq!(got, [("m1-again", "{\"timestamp\":3}", 0, 1), ("m2", "{}", 2, 50)]);
}

/// Targeted messages stored by a build before migration 12, one copy per recipient in
/// `<cid>:to:<client>`, become one message of the conversation's log naming every
/// recipient, at the first copy's position with the copy edited last; the recipients
/// see them and nobody else does. A copy whose position the log holds stays behind.
#[tokio::test]
async fn targeted_messages_of_earlier_builds_join_their_conversation() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = SqliteStore::open(dir.path(), Durability::Full).expect("open");
        let mut svc = record("a", "s", &["alice", "bob", "carol"], None);
        svc.kind = ConvKind::System;
        store.create_conversation(svc).await.expect("create");
        for (ts, id) in [(10, "b10"), (40, "b40")] {
            let m = StoredMessage { id: id.into(), from: "sys".into(), data: id.into(), ..message("s", ts) };
            store.append_message(m).await.expect("append");
        }
        store.flush().await.expect("flush");
    }
    // What the earlier build left: its schema, and copies in side logs.
    let conn = Connection::open(dir.path().join("confab.db")).expect("open db");
    conn.execute_batch(
        "ALTER TABLE messages DROP COLUMN recipients; ALTER TABLE conversations DROP COLUMN shown_ts;
         PRAGMA user_version = 11;
         INSERT INTO messages (app, cid, ts, id, sender, body, patched_at) VALUES
            ('a', 's:to:bob', 20, 't20', 'sys', 'hi', NULL),
            ('a', 's:to:carol', 20, 't20', 'sys', 'hi edited', 25),
            ('a', 's:to:carol', 50, 't50', 'sys', 'newest, carol only', NULL),
            ('a', 's:to:alice', 10, 't10', 'sys', 'position taken', NULL);",
    )
    .expect("downgrade");
    drop(conn);
    let store = SqliteStore::open(dir.path(), Durability::Full).expect("reopen");
    let all = MessageRange { limit: 10, ..MessageRange::default() };
    let log = store.messages("a", "s", all.clone()).await.expect("read");
    let rows: Vec<(i64, &str, &str, Option<Vec<String>>)> =
        log.iter().map(|m| (m.ts, m.id.as_str(), m.data.as_str(), m.recipients.clone())).collect();
    let to = |c: &[&str]| Some(c.iter().map(|c| c.to_string()).collect::<Vec<_>>());
    assert_eq!(
        rows,
        [
            (10, "b10", "b10", None),
            (20, "t20", "hi edited", to(&["bob", "carol"])),
            (40, "b40", "b40", None),
            (50, "t50", "newest, carol only", to(&["carol"])),
        ]
    );
    assert_eq!(log[1].patched_at, Some(25));
    let side = |client: &'static str| {
        let (store, all) = (store.clone(), all.clone());
        async move { store.messages("a", &format!("s:to:{client}"), all).await.expect("side log").len() }
    };
    assert_eq!((side("bob").await, side("carol").await, side("alice").await), (0, 0, 1));
    let record = store.conversation("a", "s").await.expect("read").expect("exists");
    assert_eq!(record.last_message.map(|m| (m.ts, m.id)), Some((40, "b40".to_owned())));
    assert_eq!(store.member_cursors("a", "bob").await.expect("cursors")[0].last_ts, 50);
    let alice = MessageRange { visible_to: Some("alice".into()), ..all };
    assert_eq!(store.messages("a", "s", alice).await.expect("read").len(), 2);
    let unread = store.unread("a", "carol", 10).await.expect("unread");
    assert_eq!((unread[0].unread, unread[0].last.as_ref().map(|m| m.ts)), (4, Some(50)));
    let at = store.append_message(message("s", 41)).await.expect("append");
    assert_eq!((at.ts, at.prev_ts), (51, 50));
}

#[tokio::test]
async fn remembered_positions_follow_appends_and_are_forgotten_when_a_position_can_move() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path(), Durability::Full).expect("open");
    store.create_conversation(record("a", "c1", &["alice", "bob"], None)).await.expect("create");
    // One append per batch: every later one takes its predecessor from memory.
    let mut prev = 0;
    for ts in [10, 20, 30] {
        let appended = store.append_message(message("c1", ts)).await.expect("append");
        assert_eq!((appended.ts, appended.prev_ts), (ts, prev));
        prev = ts;
    }
    // A time behind the newest position still goes after it.
    let behind = store.append_message(message("c1", 5)).await.expect("append");
    assert_eq!((behind.ts, behind.prev_ts), (31, 30));
    // Deleting the newest message keeps its position taken (the conversation's last
    // position), in memory as in the file.
    store.delete_message("a", "c1", 31).await.expect("delete");
    let after_delete = store.append_message(message("c1", 32)).await.expect("append");
    assert_eq!((after_delete.ts, after_delete.prev_ts), (32, 31));
    // A conversation deleted and created again: the position is what the file says.
    store.delete_conversation("a", "c1").await.expect("delete conversation");
    store.create_conversation(record("a", "c1", &["alice"], None)).await.expect("create again");
    store.flush().await.expect("flush");
    let file_says = {
        let conn = Connection::open(dir.path().join("confab.db")).expect("open file");
        newest_position(&conn, &message("c1", 0)).expect("read")
    };
    let fresh = store.append_message(message("c1", 7)).await.expect("append");
    assert_eq!((fresh.ts, fresh.prev_ts), (7.max(file_says + 1), file_says));
}

#[tokio::test]
async fn the_wal_starts_over_under_steady_writes_instead_of_growing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path(), Durability::Normal).expect("open");
    store.create_conversation(record("a", "c1", &["alice", "bob"], None)).await.expect("create");
    let wal = dir.path().join("confab.db-wal");
    let wal_bytes = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    let body = "x".repeat(4000);
    // The writer is never idle: 100 appends stay queued, a new one for each one done,
    // so the checkpoint thread never finds it between transactions.
    let mut in_flight = std::collections::VecDeque::new();
    // Up to 80 MB of writes; the log must start over and its file be cut back while
    // they go on (without the writer's share of the checkpoint it only ever grew).
    let (mut largest, mut shrank) = (0, false);
    for ts in 1..=20_000 {
        in_flight.push_back(store.append_message(StoredMessage { data: body.clone(), ..message("c1", ts) }));
        if in_flight.len() > 100 {
            in_flight.pop_front().expect("queued").await.expect("append");
        }
        let now = wal_bytes();
        if now < largest {
            shrank = true;
            break;
        }
        largest = now;
    }
    for appended in in_flight {
        appended.await.expect("append");
    }
    assert!(shrank, "the WAL only grew, to {largest} bytes");
}

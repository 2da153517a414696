//! What the PostgreSQL store adds to the shared rules: positions assigned by the
//! database when several stores (nodes) write one conversation, batched commits,
//! migrations that several nodes may run at once, and losing the server.
#![allow(clippy::unwrap_used)]

use confab_engine::ports::{
    Appended, ConvKind, ConversationRecord, HookCall, MessageRange, Store, StoreError, StoredMessage,
};
use confab_store_postgres::{PostgresStore, SCHEMA_VERSION};
use confab_testkit::TempPostgres;
use std::time::Duration;

const APP: &str = "app";

fn conv(id: &str) -> ConversationRecord {
    ConversationRecord {
        app: APP.into(),
        id: id.into(),
        kind: ConvKind::Normal,
        creator: "alice".into(),
        members: vec!["alice".into(), "bob".into()],
        muted: Vec::new(),
        managers: Vec::new(),
        shut_up: Vec::new(),
        blocked: Vec::new(),
        expires_at: None,
        attrs: serde_json::Map::new(),
        unique_key: None,
        created_at: 1,
        updated_at: 1,
        last_message: None,
    }
}

fn msg(cid: &str, id: &str, ts: i64, data: &str) -> StoredMessage {
    StoredMessage {
        app: APP.into(),
        cid: cid.into(),
        id: id.into(),
        ts,
        from: "alice".into(),
        data: data.into(),
        receipt: false,
        patched_at: None,
        binary: false,
        mentions: Default::default(),
        recipients: None,
    }
}

async fn history(store: &PostgresStore, cid: &str) -> Vec<StoredMessage> {
    store.messages(APP, cid, MessageRange { limit: 100_000, ..Default::default() }).await.unwrap()
}

/// Two stores on one database (two nodes) append to one conversation at once, with
/// clocks that disagree: every message gets its own position, positions increase in
/// each writer's call order, each `prev_ts` is the position before it in the log, and
/// the dense sequence has no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_order_per_conversation() {
    let Some(pg) = TempPostgres::start_or_skip("two_nodes_share_one_order_per_conversation") else { return };
    let url = pg.url();
    let (a, b) = tokio::join!(PostgresStore::connect(&url), PostgresStore::connect(&url));
    let (a, b) = (a.unwrap(), b.unwrap());
    a.create_conversation(conv("c")).await.unwrap();
    const EACH: i64 = 300;
    // Node A's clock is far ahead of node B's.
    let write = |store: PostgresStore, node: &'static str, clock: i64| async move {
        let pending: Vec<_> = (0..EACH)
            .map(|i| store.append_message(msg("c", &format!("{node}{i}"), clock + i, node)))
            .collect();
        let mut got = Vec::new();
        for p in pending {
            got.push(p.await.unwrap());
        }
        got
    };
    let (from_a, from_b) = tokio::join!(
        tokio::spawn(write(a.clone(), "a", 1_000_000)),
        tokio::spawn(write(b.clone(), "b", 1_000))
    );
    let (from_a, from_b) = (from_a.unwrap(), from_b.unwrap());
    for got in [&from_a, &from_b] {
        assert!(got.windows(2).all(|w| w[0].ts < w[1].ts), "each writer's order is kept");
    }
    let log = history(&a, "c").await;
    assert_eq!(log.len() as i64, 2 * EACH);
    let mut prev = 0;
    let by_ts: std::collections::HashMap<i64, Appended> =
        from_a.iter().chain(&from_b).map(|p| (p.ts, p.clone())).collect();
    for m in &log {
        assert!(m.ts > prev);
        assert_eq!(by_ts[&m.ts].prev_ts, prev, "prev_ts is the position before {}", m.ts);
        prev = m.ts;
    }
    let seqs = pg.psql(
        "confab",
        "SELECT count(*), min(seq), max(seq), count(DISTINCT seq) FROM messages WHERE cid = 'c'",
    );
    assert_eq!(seqs.trim(), format!("{n}|1|{n}|{n}", n = 2 * EACH));
    assert_eq!(b.conversation(APP, "c").await.unwrap().unwrap().last_message.map(|m| m.ts), Some(prev));
}

/// A client re-sending through two nodes at once (its ack lost, both attempts racing)
/// has its message stored once: each node's check runs under the conversation's row
/// lock, so the later sees the earlier's commit. Every attempt is answered with the
/// one stored message, and messages without the token interleave unharmed.
#[tokio::test]
async fn a_resend_racing_through_two_nodes_is_stored_once() {
    let Some(pg) = TempPostgres::start_or_skip("a_resend_racing_through_two_nodes") else { return };
    let url = pg.url();
    let (a, b) = tokio::join!(PostgresStore::connect(&url), PostgresStore::connect(&url));
    let (a, b) = (a.unwrap(), b.unwrap());
    a.create_conversation(conv("c")).await.unwrap();
    const TOKENS: i64 = 100;
    // Token by token, both nodes at once: each attempt races the other's.
    let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
    for i in 0..TOKENS {
        let attempt = |store: &PostgresStore, node: &str| {
            let tokened = msg("c", &format!("{node}{i}"), i, "hi");
            let plain = msg("c", &format!("{node}-plain{i}"), i, "plain");
            let tokened = store.append_message_notify(tokened, Vec::new(), Some(format!("dt{i}")));
            let plain = store.append_message_notify(plain, Vec::new(), None);
            async move { (tokened.await.unwrap(), plain.await.unwrap()) }
        };
        let ((x, _), (y, _)) = tokio::join!(attempt(&a, "a"), attempt(&b, "b"));
        from_a.push(x);
        from_b.push(y);
    }
    let log = history(&a, "c").await;
    assert_eq!(log.len() as i64, 3 * TOKENS, "each token once, every plain message");
    let stored: std::collections::HashMap<i64, &str> = log.iter().map(|m| (m.ts, m.id.as_str())).collect();
    for i in 0..TOKENS as usize {
        let (x, y) = (&from_a[i], &from_b[i]);
        assert_eq!(x.ts, y.ts, "token {i}: both nodes answer with the one message");
        let id = stored[&x.ts];
        assert!(
            x.original.as_deref().is_none_or(|o| o == id) && y.original.as_deref().is_none_or(|o| o == id)
        );
        assert!(x.original.is_some() != y.original.is_some(), "token {i}: exactly one attempt wrote");
    }
}

/// Appends queued together commit together: far fewer transactions than messages.
#[tokio::test]
async fn queued_appends_share_transactions() {
    let Some(pg) = TempPostgres::start_or_skip("queued_appends_share_transactions") else { return };
    let store = PostgresStore::connect(&pg.url()).await.unwrap();
    store.create_conversation(conv("c")).await.unwrap();
    let before = store.commits();
    let pending: Vec<_> =
        (1..=500).map(|ts| store.append_message(msg("c", &format!("m{ts}"), ts, "x"))).collect();
    for p in pending {
        p.await.unwrap();
    }
    let commits = store.commits() - before;
    assert!(commits <= 10, "500 queued appends took {commits} transactions");
    assert_eq!(history(&store, "c").await.len(), 500);
}

/// Bodies are bytes: U+0000, which PostgreSQL's text type refuses, round-trips.
#[tokio::test]
async fn any_string_round_trips() {
    let Some(pg) = TempPostgres::start_or_skip("any_string_round_trips") else { return };
    let store = PostgresStore::connect(&pg.url()).await.unwrap();
    store.create_conversation(conv("c")).await.unwrap();
    let body = "nul \u{0} and \u{1F600}";
    store.append_message(msg("c", "m1", 1, body)).await.unwrap();
    assert_eq!(history(&store, "c").await[0].data, body);
    assert_eq!(store.conversation(APP, "c").await.unwrap().unwrap().last_message.unwrap().data, body);
}

/// A message's hook calls report the position the database assigned even when the
/// content holds U+0000 (the position is set in SQL as text, not through `jsonb`, which
/// refuses it), and a second node's message at a taken position is stored with its
/// calls in the same transaction.
#[tokio::test]
async fn hook_calls_follow_the_assigned_position() {
    let Some(pg) = TempPostgres::start_or_skip("hook_calls_follow_the_assigned_position") else { return };
    let node_a = PostgresStore::connect(&pg.url()).await.unwrap();
    let node_b = PostgresStore::connect(&pg.url()).await.unwrap();
    node_a.create_conversation(conv("c")).await.unwrap();
    let body = "nul \u{0} and \u{1F600}";
    let sent = |key: &str, ts: i64| HookCall {
        app: APP.into(),
        key: key.into(),
        hook: "_messageSent".into(),
        params:
            serde_json::json!({ "content": body, "msgId": key, "timestamp": ts, "z": [1, {"timestamp": ts}] })
                .to_string(),
        created_at: ts,
    };
    let a = node_a.append_message_notify(msg("c", "a", 10, body), vec![sent("a", 10)], None).await.unwrap();
    let b = node_b.append_message_notify(msg("c", "b", 10, body), vec![sent("b", 10)], None).await.unwrap();
    assert_eq!((a, b), (Appended::new(10, 0), Appended::new(11, 10)));
    let due = node_a.outbox_due(100, 10).await.unwrap();
    let params: Vec<serde_json::Value> =
        due.iter().map(|e| serde_json::from_str(&e.call.params).unwrap()).collect();
    let nested = serde_json::json!([1, {"timestamp": 10}]);
    assert_eq!(
        params,
        [
            serde_json::json!({ "content": body, "msgId": "a", "timestamp": 10, "z": nested }),
            serde_json::json!({ "content": body, "msgId": "b", "timestamp": 11, "z": nested }),
        ],
        "only the top-level timestamp moves"
    );
}

/// Two nodes' outbox workers take due calls from one database: each call goes to one
/// of them, earliest due first, reporting its due time before the lease; a leased call
/// is due again once the lease ends (its taker died), unless settled before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_claims_give_each_call_to_one_node() {
    let Some(pg) = TempPostgres::start_or_skip("outbox_claims_give_each_call_to_one_node") else { return };
    let node_a = PostgresStore::connect(&pg.url()).await.unwrap();
    let node_b = PostgresStore::connect(&pg.url()).await.unwrap();
    let call = |i: i64| HookCall {
        app: APP.into(),
        key: format!("k{i:03}"),
        hook: "_clientOnline".into(),
        params: "{}".into(),
        created_at: i,
    };
    node_a.outbox_put((1..=200).map(call).collect()).await.unwrap();
    let lease = 10_000;
    let mut taken = Vec::new();
    loop {
        let (a, b) = tokio::join!(node_a.outbox_claim(1_000, 7, lease), node_b.outbox_claim(1_000, 7, lease));
        let (a, b) = (a.unwrap(), b.unwrap());
        for batch in [&a, &b] {
            let due: Vec<i64> = batch.iter().map(|e| e.due_at).collect();
            assert!(due.is_sorted(), "earliest due first: {due:?}");
            assert!(batch.iter().all(|e| e.due_at == e.call.created_at), "the due time before the lease");
        }
        if a.is_empty() && b.is_empty() {
            break;
        }
        taken.extend(a.into_iter().chain(b).map(|e| e.call.created_at));
    }
    taken.sort_unstable();
    assert_eq!(taken, (1..=200).collect::<Vec<_>>(), "every call once, to one node");
    assert!(node_b.outbox_due(lease - 1, 500).await.unwrap().is_empty(), "leased");
    node_a.outbox_done(APP, "k001").await.unwrap();
    node_a.outbox_retry(APP, "k002", 1, 20_000).await.unwrap();
    let again = node_b.outbox_claim(lease, 500, 2 * lease).await.unwrap();
    assert_eq!(again.len(), 198, "the lease ended: due again, except the settled two");
    assert!(again.iter().all(|e| e.due_at == lease));
}

/// Nodes starting together migrate once; a second run has nothing to do; the
/// versions are recorded.
#[tokio::test]
async fn migrations_run_once_even_when_nodes_start_together() {
    let Some(pg) = TempPostgres::start_or_skip("migrations_run_once_even_when_nodes_start_together") else {
        return;
    };
    let url = pg.url();
    let runs = futures_util::future::join_all((0..4).map(|_| PostgresStore::migrate(&url))).await;
    let ran: usize = runs.into_iter().map(|r| r.unwrap()).sum();
    assert_eq!(ran as i64, SCHEMA_VERSION, "each migration applied once, by one of the nodes");
    assert_eq!(PostgresStore::migrate(&url).await.unwrap(), 0);
    let versions = (1..=SCHEMA_VERSION).map(|v| v.to_string()).collect::<Vec<_>>().join(",");
    let recorded = "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations";
    assert_eq!(pg.psql("confab", recorded).trim(), versions);
    // A database of a build before the two newest migrations (marks, targeted
    // messages) gains them.
    let newest = format!(
        "DROP TABLE marks; ALTER TABLE messages DROP COLUMN recipients;
         ALTER TABLE conversations DROP COLUMN shown_ts;
         DELETE FROM schema_migrations WHERE version >= {}",
        SCHEMA_VERSION - 1
    );
    pg.psql("confab", &newest);
    assert_eq!(PostgresStore::migrate(&url).await.unwrap(), 2);
    assert_eq!(pg.psql("confab", recorded).trim(), versions);
    let column = "SELECT count(*) FROM information_schema.columns
                  WHERE table_name = 'messages' AND column_name = 'recipients'";
    assert_eq!(pg.psql("confab", column).trim(), "1");
    assert_eq!(pg.psql("confab", "SELECT count(*) FROM marks").trim(), "0");
    // A database from a newer Confab is refused rather than used.
    pg.psql("confab", "INSERT INTO schema_migrations (version) VALUES (99)");
    let err = PostgresStore::connect(&url).await.unwrap_err().to_string();
    assert!(err.contains("newer"), "{err}");
}

/// Targeted messages stored by a build before migration 6, one copy per recipient in
/// `<cid>:to:<client>`, become one message of the conversation's log naming every
/// recipient, at the first copy's position with the copy edited last, after which the
/// recipients see them and nobody else does; a copy whose position the log holds stays
/// in its side log.
#[tokio::test]
async fn targeted_messages_of_earlier_builds_join_their_conversation() {
    let Some(pg) = TempPostgres::start_or_skip("targeted_messages_of_earlier_builds") else { return };
    let url = pg.url();
    {
        let store = PostgresStore::connect(&url).await.unwrap();
        let mut svc = conv("s");
        svc.kind = ConvKind::System;
        svc.members = vec!["alice".into(), "bob".into(), "carol".into()];
        store.create_conversation(svc).await.unwrap();
        store.append_message(msg("s", "b10", 10, "to all")).await.unwrap();
        store.append_message(msg("s", "b40", 40, "to all again")).await.unwrap();
    }
    // What the earlier build left: its schema, and copies in side logs with their heads.
    pg.psql(
        "confab",
        "ALTER TABLE messages DROP COLUMN recipients; ALTER TABLE conversations DROP COLUMN shown_ts;
         DELETE FROM schema_migrations WHERE version = 6;
         INSERT INTO messages (app, cid, ts, seq, id, sender, body, patched_at) VALUES
            ('app', 's:to:bob', 20, 1, 't20', 'sys', 'hi', NULL),
            ('app', 's:to:carol', 20, 1, 't20', 'sys', 'hi edited', 25),
            ('app', 's:to:carol', 50, 2, 't50', 'sys', 'newest, carol only', NULL),
            ('app', 's:to:alice', 10, 1, 't10', 'sys', 'position taken', NULL);
         INSERT INTO heads (app, cid, last_ts, prev_ts, seq) VALUES
            ('app', 's:to:bob', 20, 0, 1), ('app', 's:to:carol', 50, 20, 2), ('app', 's:to:alice', 10, 0, 1);",
    );
    assert_eq!(PostgresStore::migrate(&url).await.unwrap(), 1);
    let store = PostgresStore::connect(&url).await.unwrap();
    let log = history(&store, "s").await;
    let rows: Vec<(i64, &str, &str, Option<Vec<String>>)> =
        log.iter().map(|m| (m.ts, m.id.as_str(), m.data.as_str(), m.recipients.clone())).collect();
    let to = |c: &[&str]| Some(c.iter().map(|c| c.to_string()).collect::<Vec<_>>());
    assert_eq!(
        rows,
        [
            (10, "b10", "to all", None),
            (20, "t20", "hi edited", to(&["bob", "carol"])),
            (40, "b40", "to all again", None),
            (50, "t50", "newest, carol only", to(&["carol"])),
        ]
    );
    assert_eq!(log[1].patched_at, Some(25));
    assert!(history(&store, "s:to:bob").await.is_empty() && history(&store, "s:to:carol").await.is_empty());
    assert_eq!(history(&store, "s:to:alice").await.len(), 1, "a copy whose position is taken stays");
    assert_eq!(pg.psql("confab", "SELECT count(*) FROM heads WHERE cid LIKE 's:to:%'").trim(), "1");
    // The conversation's position is the newest; its last message the broadcast.
    let record = store.conversation(APP, "s").await.unwrap().unwrap();
    assert_eq!(record.last_message.map(|m| (m.ts, m.id)), Some((40, "b40".to_owned())));
    assert_eq!(store.member_cursors(APP, "bob").await.unwrap()[0].last_ts, 50);
    let alice = MessageRange { visible_to: Some("alice".into()), limit: 10, ..Default::default() };
    assert_eq!(store.messages(APP, "s", alice).await.unwrap().len(), 2);
    let unread = store.unread(APP, "carol", 10).await.unwrap();
    assert_eq!((unread[0].unread, unread[0].last.as_ref().map(|m| m.ts)), (4, Some(50)));
    // The next message goes after everything, with the next sequence number.
    let at = store.append_message(msg("s", "b41", 41, "after")).await.unwrap();
    assert_eq!((at.ts, at.prev_ts), (51, 50));
    let seqs = pg.psql("confab", "SELECT count(DISTINCT seq), count(*) FROM messages WHERE cid = 's'");
    assert_eq!(seqs.trim(), "5|5");
}

/// The server goes away under a running store: writes fail as unavailable (nothing
/// acknowledged), health says so, and once the server is back writes resume with the
/// acknowledged messages all there, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_server_fails_writes_until_it_is_back() {
    let Some(pg) = TempPostgres::start_or_skip("losing_the_server_fails_writes_until_it_is_back") else {
        return;
    };
    let store = PostgresStore::connect(&pg.url()).await.unwrap();
    store.create_conversation(conv("c")).await.unwrap();
    store.append_message(msg("c", "before", 1, "x")).await.unwrap();
    store.health().await.unwrap();
    pg.stop();
    let failed = store.append_message(msg("c", "during", 2, "x")).await;
    assert!(matches!(failed, Err(StoreError::Unavailable(_))), "{failed:?}");
    assert!(matches!(store.health().await, Err(StoreError::Unavailable(_))));
    assert!(store.conversation(APP, "c").await.is_err(), "reads fail too");
    pg.start();
    let mut resumed = None;
    for _ in 0..100 {
        match store.append_message(msg("c", "after", 3, "x")).await {
            Ok(p) => {
                resumed = Some(p);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(resumed.is_some(), "writes resume once the server is back");
    store.health().await.unwrap();
    let ids: Vec<String> = history(&store, "c").await.into_iter().map(|m| m.id).collect();
    assert_eq!(ids, ["before", "after"]);
}

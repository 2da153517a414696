//! The store conformance suite: the rules of [`Store`] (see its docs) as one async
//! function per rule, each taking a fresh, empty store. A store crate runs them all
//! with one line in its tests:
//!
//! ```ignore
//! confab_store_tests::store_conformance_tests!(MemoryStore::new());
//! ```
//!
//! The expression is evaluated once per test and must give a value implementing
//! [`AsStore`] (every [`Store`] does; a fixture that owns a temporary directory
//! implements it to lend its store). The calling crate needs `tokio` (with `macros`
//! and `rt`) as a dev-dependency.
//!
//! Positions (`ts`) used here are small numbers and every write is awaited before the
//! read that checks it, except [`Store::save_cursor`], whose effect reads must show at
//! once.

use confab_engine::ports::{
    Appended, ClientMark, ConvKind, ConversationRecord, HookCall, LastMessage, MarkKind, MemberCursor,
    MemberPosition, MessageRange, ScanFilter, Store, StoredMessage, UnreadCount,
};
use confab_types::Mentions;
use serde_json::{Map, Value, json};

/// Lends the store a conformance test runs against.
pub trait AsStore {
    /// The store under test.
    fn as_store(&self) -> &dyn Store;
}

impl<T: Store> AsStore for T {
    fn as_store(&self) -> &dyn Store {
        self
    }
}

/// Expands to one `#[tokio::test]` per rule of the suite, each running against a
/// store made by evaluating `$make` (a value implementing [`AsStore`]).
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::__store_rules!($crate::__each_rule, $make);
    };
}

/// Calls `$then!($arg; rule, rule, …)` with every rule's name: the one list of rules.
#[doc(hidden)]
#[macro_export]
macro_rules! __store_rules {
    ($then:path, $arg:expr) => {
        $then!(
            $arg;
            conversations_round_trip,
            an_existing_id_is_refused,
            unique_keys_are_held_and_released,
            a_deleted_conversation_leaves_nothing,
            apps_are_isolated,
            members_are_added_and_removed_in_join_order,
            new_members_start_at_the_newest_message,
            attributes_are_replaced,
            scans_apply_every_filter_and_max,
            pages_walk_every_conversation_in_id_order,
            messages_round_trip_in_append_order,
            a_taken_position_moves_to_the_next_free_one,
            a_resend_with_the_same_dedupe_token_is_stored_once,
            queued_writes_apply_in_call_order,
            history_pages_towards_older_messages,
            history_pages_towards_newer_messages,
            offline_replay_pages_until_empty,
            lctype_filters_before_the_limit,
            last_message_follows_the_newest_append,
            cursors_never_go_back_and_show_at_once,
            member_cursors_cover_every_membership,
            read_positions_never_go_back,
            unread_counts_others_messages_after_the_read_position,
            unread_is_newest_first_and_capped,
            patches_replace_the_body_in_place,
            a_patch_may_set_the_binary_flag,
            patched_since_orders_and_caps_changes,
            message_by_id,
            ids_holding_nul_match_nothing,
            roles_apply_to_members,
            shut_up_applies_to_members,
            blocking_removes_members,
            muting_applies_to_members,
            member_positions_in_join_order,
            deleting_a_message_keeps_the_last_message,
            app_messages_span_conversations_only,
            joined_at_is_the_membership_time,
            hook_calls_commit_with_their_message,
            hook_calls_commit_with_their_membership_event,
            outbox_calls_come_due_in_order_and_settle,
            outbox_keys_are_idempotent_per_app,
            marks_are_set_replaced_and_removed,
            marks_are_apart_from_membership,
            client_marks_page_in_id_order,
            client_marks_are_counted,
            targeted_messages_keep_their_recipients,
            targeted_messages_show_only_to_their_recipients,
            targeted_messages_count_as_unread_for_their_recipients_only,
            edits_of_targeted_messages_reach_their_recipients_only,
            recipients_are_removed_one_at_a_time,
            outbox_len_counts_every_call_up_to_the_cap,
        );
    };
}

/// Emits one test per rule name.
#[doc(hidden)]
#[macro_export]
macro_rules! __each_rule {
    ($make:expr; $($rule:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $rule() {
                let fixture = $make;
                $crate::$rule($crate::AsStore::as_store(&fixture)).await;
            }
        )*
    };
}

const APP: &str = "app";

fn attrs(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// A normal conversation of [`APP`] created at `created_at`, the first member its creator.
fn conv(id: &str, members: &[&str], created_at: i64) -> ConversationRecord {
    ConversationRecord {
        app: APP.into(),
        id: id.into(),
        kind: ConvKind::Normal,
        creator: members.first().copied().unwrap_or("").into(),
        members: members.iter().map(|m| m.to_string()).collect(),
        muted: Vec::new(),
        managers: Vec::new(),
        shut_up: Vec::new(),
        blocked: Vec::new(),
        expires_at: None,
        attrs: attrs(json!({ "name": id })),
        unique_key: None,
        created_at,
        updated_at: created_at,
        last_message: None,
    }
}

/// A message of [`APP`] with id `m<cid>-<ts>`.
fn msg(cid: &str, ts: i64, from: &str, data: &str) -> StoredMessage {
    StoredMessage {
        app: APP.into(),
        cid: cid.into(),
        id: format!("m{cid}-{ts}"),
        ts,
        from: from.into(),
        data: data.into(),
        receipt: false,
        patched_at: None,
        binary: false,
        mentions: Mentions::default(),
        recipients: None,
    }
}

async fn create(store: &dyn Store, record: ConversationRecord) {
    let id = record.id.clone();
    store.create_conversation(record).await.unwrap_or_else(|e| panic!("create {id}: {e}"));
}

async fn append(store: &dyn Store, message: StoredMessage) {
    let at = (message.cid.clone(), message.ts);
    store.append_message(message).await.unwrap_or_else(|e| panic!("append {at:?}: {e}"));
}

/// Appends messages from `from` at each position, bodies `"<ts>"`.
async fn fill(store: &dyn Store, cid: &str, from: &str, positions: impl IntoIterator<Item = i64>) {
    for ts in positions {
        append(store, msg(cid, ts, from, &ts.to_string())).await;
    }
}

async fn read(store: &dyn Store, cid: &str) -> ConversationRecord {
    store.conversation(APP, cid).await.expect("read conversation").expect("conversation exists")
}

async fn page(store: &dyn Store, cid: &str, range: MessageRange) -> Vec<i64> {
    store.messages(APP, cid, range).await.expect("read messages").iter().map(|m| m.ts).collect()
}

fn range(
    after: Option<(i64, bool)>,
    before: Option<(i64, bool)>,
    newest_first: bool,
    limit: usize,
) -> MessageRange {
    MessageRange { after, before, newest_first, limit, lctype: None, visible_to: None }
}

fn pos(client: &str, acked_upto: i64, read_upto: i64) -> MemberPosition {
    MemberPosition { client: client.to_owned(), acked_upto, read_upto }
}

async fn positions(store: &dyn Store, cid: &str) -> Vec<MemberPosition> {
    store.member_positions(APP, cid).await.expect("member positions")
}

async fn cursors(store: &dyn Store, client: &str) -> Vec<MemberCursor> {
    let mut c = store.member_cursors(APP, client).await.expect("member cursors");
    c.sort_by(|a, b| a.cid.cmp(&b.cid));
    c
}

fn owned(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn summary(unread: &[UnreadCount]) -> Vec<(&str, i64, bool)> {
    unread.iter().map(|u| (u.cid.as_str(), u.unread, u.mentioned)).collect()
}

/// A conversation reads back as created (duplicate members once), missing ones as `None`.
pub async fn conversations_round_trip(store: &dyn Store) {
    let mut record = conv("c1", &["alice", "bob", "alice", "carol"], 100);
    record.kind = ConvKind::Temporary;
    record.expires_at = Some(9_000);
    record.updated_at = 150;
    record.unique_key = Some("alice,bob,carol".into());
    record.attrs = attrs(json!({ "name": "trip", "attr": { "a": [1, 2], "b": null }, "x": 1.5 }));
    create(store, record.clone()).await;
    let mut expected = record;
    expected.members = owned(&["alice", "bob", "carol"]);
    assert_eq!(read(store, "c1").await, expected);

    let mut system = conv("sys", &[], 200);
    system.kind = ConvKind::System;
    create(store, system.clone()).await;
    assert_eq!(read(store, "sys").await, system);

    assert_eq!(store.conversation(APP, "nope").await.expect("read"), None);
}

/// Creating an id that exists fails and leaves the first conversation as it was.
pub async fn an_existing_id_is_refused(store: &dyn Store) {
    create(store, conv("c1", &["alice"], 1)).await;
    let mut again = conv("c1", &["mallory"], 2);
    again.attrs = attrs(json!({ "name": "other" }));
    assert!(store.create_conversation(again).await.is_err(), "an existing id is refused");
    let kept = read(store, "c1").await;
    assert_eq!((kept.members, kept.created_at), (owned(&["alice"]), 1));
    assert_eq!(kept.attrs, attrs(json!({ "name": "c1" })));
}

/// A unique key finds its conversation, cannot be taken twice, and once released is
/// free for another conversation.
pub async fn unique_keys_are_held_and_released(store: &dyn Store) {
    let mut first = conv("c1", &["alice", "bob"], 1);
    first.unique_key = Some("alice,bob".into());
    create(store, first).await;
    let found = store.find_unique(APP, "alice,bob").await.expect("find").expect("found");
    assert_eq!((found.id.as_str(), found.members), ("c1", owned(&["alice", "bob"])));
    assert_eq!(store.find_unique(APP, "bob,carol").await.expect("find"), None);

    let mut rival = conv("c2", &["alice", "bob"], 2);
    rival.unique_key = Some("alice,bob".into());
    assert!(store.create_conversation(rival.clone()).await.is_err(), "a held key is refused");
    assert_eq!(store.conversation(APP, "c2").await.expect("read"), None, "nothing stored");

    store.release_unique(APP, "c1").await.expect("release");
    assert_eq!(store.find_unique(APP, "alice,bob").await.expect("find"), None);
    let released = read(store, "c1").await;
    assert_eq!((released.unique_key, released.members), (None, owned(&["alice", "bob"])));

    create(store, rival).await;
    let found = store.find_unique(APP, "alice,bob").await.expect("find").expect("found");
    assert_eq!(found.id, "c2");
}

/// Deleting a conversation removes it, its memberships, its messages (and a system
/// conversation's inbox) and frees its unique key; other conversations stay; deleting
/// again, or a conversation that never was, is no error.
pub async fn a_deleted_conversation_leaves_nothing(store: &dyn Store) {
    let mut doomed = conv("c1", &["alice", "bob"], 1);
    doomed.unique_key = Some("alice,bob".into());
    create(store, doomed).await;
    create(store, conv("c2", &["alice"], 2)).await;
    append(store, msg("c1", 10, "alice", "gone")).await;
    append(store, msg("c1:inbox", 11, "bob", "gone too")).await;
    append(store, msg("c1:to:bob", 11, "sys", "gone as well")).await;
    append(store, msg("c2", 12, "alice", "kept")).await;
    append(store, msg("c10", 13, "alice", "another log, kept")).await;

    store.delete_conversation(APP, "c1").await.expect("delete");
    assert_eq!(store.conversation(APP, "c1").await.expect("read"), None);
    assert_eq!(store.find_unique(APP, "alice,bob").await.expect("find"), None, "the key is free");
    let everything = MessageRange { limit: 100, ..Default::default() };
    for cid in ["c1", "c1:inbox", "c1:to:bob"] {
        assert!(store.messages(APP, cid, everything.clone()).await.expect("messages").is_empty(), "{cid}");
    }
    let cursors = store.member_cursors(APP, "alice").await.expect("cursors");
    assert_eq!(cursors.iter().map(|c| c.cid.as_str()).collect::<Vec<_>>(), ["c2"]);
    assert!(store.member_cursors(APP, "bob").await.expect("cursors").is_empty());
    assert_eq!(store.messages(APP, "c2", everything.clone()).await.expect("messages").len(), 1);
    assert_eq!(store.messages(APP, "c10", everything).await.expect("messages").len(), 1);

    store.delete_conversation(APP, "c1").await.expect("again");
    store.delete_conversation(APP, "never").await.expect("never was");
    let mut reborn = conv("c3", &["alice", "bob"], 3);
    reborn.unique_key = Some("alice,bob".into());
    create(store, reborn).await;
}

/// The same conversation id, unique key and client ids in two apps are unrelated.
pub async fn apps_are_isolated(store: &dyn Store) {
    let mut mine = conv("c1", &["alice", "bob"], 1);
    mine.unique_key = Some("k".into());
    let mut theirs = conv("c1", &["mallory", "bob"], 2);
    theirs.app = "other".into();
    theirs.unique_key = Some("k".into());
    create(store, mine).await;
    create(store, theirs).await;
    fill(store, "c1", "alice", [1, 2]).await;
    let mut foreign = msg("c1", 1, "mallory", "theirs");
    foreign.app = "other".into();
    store.append_message(foreign).await.expect("the same position in another app");
    store.save_cursor(APP, "bob", "c1", 2);
    store.save_read(APP, "bob", "c1", 2).await.expect("read position");

    assert_eq!(read(store, "c1").await.members, owned(&["alice", "bob"]));
    let other = store.conversation("other", "c1").await.expect("read").expect("exists");
    assert_eq!(other.members, owned(&["mallory", "bob"]));
    assert_eq!(other.last_message.map(|m| m.data), Some("theirs".into()));
    let found = store.find_unique("other", "k").await.expect("find").expect("found");
    assert_eq!(found.created_at, 2);
    let history = store.messages("other", "c1", range(None, None, false, 10)).await.expect("read");
    assert_eq!(history.iter().map(|m| m.data.as_str()).collect::<Vec<_>>(), ["theirs"]);
    assert_eq!(
        store.member_cursors("other", "bob").await.expect("cursors"),
        [MemberCursor { cid: "c1".into(), cursor: 0, last_ts: 1 }]
    );
    assert_eq!(
        store.member_positions("other", "c1").await.expect("positions"),
        [pos("mallory", 0, 0), pos("bob", 0, 0)]
    );
    let unread = store.unread("other", "bob", 10).await.expect("unread");
    assert_eq!(summary(&unread), [("c1", 1, false)]);
    let scan = store.scan_conversations("third", ScanFilter { max: 10, ..Default::default() }).await;
    assert_eq!(scan.expect("scan").len(), 0);
}

/// Members keep join order; adding a member again changes nothing; removing takes the
/// member out; both set `updated_at`; a member added again goes to the end.
pub async fn members_are_added_and_removed_in_join_order(store: &dyn Store) {
    create(store, conv("c", &["alice", "bob"], 1)).await;
    store.add_members(APP, "c", owned(&["carol", "bob", "dave", "carol"]), 5).await.expect("add");
    let c = read(store, "c").await;
    assert_eq!((c.members, c.updated_at, c.created_at), (owned(&["alice", "bob", "carol", "dave"]), 5, 1));

    store.remove_members(APP, "c", owned(&["bob", "zed"]), 7).await.expect("remove");
    let c = read(store, "c").await;
    assert_eq!((c.members, c.updated_at), (owned(&["alice", "carol", "dave"]), 7));

    store.add_members(APP, "c", owned(&["bob"]), 9).await.expect("add again");
    let c = read(store, "c").await;
    assert_eq!((c.members, c.updated_at), (owned(&["alice", "carol", "dave", "bob"]), 9));
    let filter = ScanFilter { member: Some("carol".into()), max: 10, ..Default::default() };
    assert_eq!(store.scan_conversations(APP, filter).await.expect("scan").len(), 1);
    store.remove_members(APP, "c", owned(&["carol"]), 10).await.expect("remove");
    let filter = ScanFilter { member: Some("carol".into()), max: 10, ..Default::default() };
    assert_eq!(store.scan_conversations(APP, filter).await.expect("scan").len(), 0);
    assert_eq!(cursors(store, "carol").await, []);
}

/// Creation starts cursors and read positions at 0; a member added later starts its
/// cursor at the newest message (read position 0); a current member keeps its own.
pub async fn new_members_start_at_the_newest_message(store: &dyn Store) {
    create(store, conv("c", &["alice", "bob"], 1)).await;
    create(store, conv("empty", &["alice"], 1)).await;
    fill(store, "c", "alice", [10, 20, 30]).await;
    assert_eq!(positions(store, "c").await, [pos("alice", 0, 0), pos("bob", 0, 0)]);
    store.save_cursor(APP, "bob", "c", 10);
    store.add_members(APP, "c", owned(&["carol", "bob"]), 40).await.expect("add");
    store.add_members(APP, "empty", owned(&["carol"]), 40).await.expect("add");
    assert_eq!(positions(store, "c").await, [pos("alice", 0, 0), pos("bob", 10, 0), pos("carol", 30, 0)]);
    assert_eq!(
        cursors(store, "carol").await,
        [
            MemberCursor { cid: "c".into(), cursor: 30, last_ts: 30 },
            MemberCursor { cid: "empty".into(), cursor: 0, last_ts: 0 },
        ]
    );
    // Removed and added again: a fresh start at the newest message.
    store.save_read(APP, "bob", "c", 20).await.expect("read");
    store.remove_members(APP, "c", owned(&["bob"]), 41).await.expect("remove");
    fill(store, "c", "alice", [50]).await;
    store.add_members(APP, "c", owned(&["bob"]), 42).await.expect("add");
    assert_eq!(positions(store, "c").await.last(), Some(&pos("bob", 50, 0)));
}

/// Attributes are replaced whole, with `updated_at`; nothing else changes.
pub async fn attributes_are_replaced(store: &dyn Store) {
    let mut record = conv("c", &["alice"], 1);
    record.attrs = attrs(json!({ "name": "old", "attr": { "k": 1 }, "gone": true }));
    create(store, record).await;
    let new = attrs(json!({ "name": "new", "attr": { "k": 2, "deep": { "x": [1, "two"] } } }));
    store.set_attributes(APP, "c", new.clone(), 77).await.expect("set");
    let c = read(store, "c").await;
    assert_eq!((c.attrs, c.updated_at, c.created_at, c.members), (new, 77, 1, owned(&["alice"])));
}

/// Scans match every filter that is set, oldest created first, at most `max + 1`.
pub async fn scans_apply_every_filter_and_max(store: &dyn Store) {
    create(store, conv("n3", &["alice", "bob"], 30)).await;
    create(store, conv("n1", &["alice"], 10)).await;
    let mut room = conv("room", &[], 20);
    room.kind = ConvKind::Transient;
    create(store, room).await;
    let mut tmp = conv("tmp", &["bob"], 40);
    tmp.kind = ConvKind::Temporary;
    create(store, tmp).await;
    let mut elsewhere = conv("n0", &["alice"], 5);
    elsewhere.app = "other".into();
    create(store, elsewhere).await;

    let scan = |filter: ScanFilter| async move {
        let found = store.scan_conversations(APP, filter).await.expect("scan");
        found.into_iter().map(|r| r.id).collect::<Vec<_>>()
    };
    let all = ScanFilter { max: 100, ..Default::default() };
    assert_eq!(scan(all.clone()).await, ["n1", "room", "n3", "tmp"]);
    let ids = |ids: &[&str]| ScanFilter { ids: Some(owned(ids)), ..all.clone() };
    assert_eq!(scan(ids(&["tmp", "n1", "missing", "n0"])).await, ["n1", "tmp"]);
    assert_eq!(scan(ids(&[])).await, Vec::<String>::new());
    let member = |m: &str| ScanFilter { member: Some(m.into()), ..all.clone() };
    assert_eq!(scan(member("alice")).await, ["n1", "n3"]);
    assert_eq!(scan(member("bob")).await, ["n3", "tmp"]);
    assert_eq!(scan(member("nobody")).await, Vec::<String>::new());
    let kind = |k: ConvKind| ScanFilter { kind: Some(k), ..all.clone() };
    assert_eq!(scan(kind(ConvKind::Transient)).await, ["room"]);
    assert_eq!(scan(kind(ConvKind::Normal)).await, ["n1", "n3"]);
    assert_eq!(scan(kind(ConvKind::System)).await, Vec::<String>::new());
    let both = ScanFilter { kind: Some(ConvKind::Temporary), ..ids(&["tmp", "n3"]) };
    assert_eq!(scan(both).await, ["tmp"]);
    let both = ScanFilter { kind: Some(ConvKind::Normal), ..member("bob") };
    assert_eq!(scan(both).await, ["n3"]);

    // Past `max`: `max + 1` candidates say "too many"; exactly `max` are all returned.
    assert_eq!(scan(ScanFilter { max: 2, ..Default::default() }).await, ["n1", "room", "n3"]);
    assert_eq!(scan(ScanFilter { max: 0, ..Default::default() }).await, ["n1"]);
    assert_eq!(scan(ScanFilter { max: 2, ..member("alice") }).await, ["n1", "n3"]);

    // Records come whole, as `conversation` reads them.
    let full = store.scan_conversations(APP, ids(&["n3"])).await.expect("scan");
    assert_eq!(full, [read(store, "n3").await]);
}

/// Pages of conversations in bytewise id order, after an exclusive start, of one kind
/// when asked, never another app's; each record whole.
pub async fn pages_walk_every_conversation_in_id_order(store: &dyn Store) {
    // Created out of id order: the walk follows ids, not creation.
    create(store, conv("b", &["alice"], 10)).await;
    create(store, conv("a2", &["bob"], 20)).await;
    create(store, conv("B", &["carol"], 30)).await;
    let mut sys = conv("a10", &["dave"], 40);
    sys.kind = ConvKind::System;
    create(store, sys).await;
    let mut elsewhere = conv("a1", &["alice"], 5);
    elsewhere.app = "other".into();
    create(store, elsewhere).await;

    let walk = |after: Option<&'static str>, kind: Option<ConvKind>, limit: usize| async move {
        let found = store.conversations_after(APP, after, kind, limit).await.expect("page");
        found.into_iter().map(|r| r.id).collect::<Vec<_>>()
    };
    assert_eq!(walk(None, None, 10).await, ["B", "a10", "a2", "b"]);
    assert_eq!(walk(None, None, 2).await, ["B", "a10"]);
    assert_eq!(walk(Some("a10"), None, 2).await, ["a2", "b"]);
    assert_eq!(walk(Some("b"), None, 2).await, Vec::<String>::new());
    assert_eq!(walk(Some("a"), None, 1).await, ["a10"]);
    assert_eq!(walk(None, None, 0).await, Vec::<String>::new());
    assert_eq!(walk(None, Some(ConvKind::System), 10).await, ["a10"]);
    assert_eq!(walk(Some("a10"), Some(ConvKind::System), 10).await, Vec::<String>::new());
    assert_eq!(walk(None, Some(ConvKind::Normal), 2).await, ["B", "a2"]);

    let full = store.conversations_after(APP, Some("a2"), None, 1).await.expect("page");
    assert_eq!(full, [read(store, "b").await]);
}

/// Every field of a message reads back as appended, oldest first.
pub async fn messages_round_trip_in_append_order(store: &dyn Store) {
    create(store, conv("c", &["alice", "bob"], 1)).await;
    let mut rich = msg("c", 5, "bob", "AAEC");
    rich.receipt = true;
    rich.binary = true;
    rich.mentions = Mentions { all: true, pids: owned(&["alice", "carol"]) };
    let plain = msg("c", 3, "alice", "{\"_lctype\":-1,\"_lctext\":\"hi\"}");
    let mut later = msg("c", 8, "alice", "text with \u{1F600} and 'quotes'");
    later.mentions = Mentions { all: false, pids: owned(&["bob"]) };
    for m in [plain.clone(), rich.clone(), later.clone()] {
        append(store, m).await;
    }
    let all = store.messages(APP, "c", range(None, None, false, 10)).await.expect("read");
    assert_eq!(all, [plain, rich.clone(), later]);
    assert_eq!(store.messages(APP, "nope", range(None, None, false, 10)).await.expect("read"), []);
    assert_eq!(store.message(APP, "c", &rich.id).await.expect("read"), Some(rich));
}

/// An append proposing a position at or before the conversation's newest message gets
/// the next free one (several writers share one order); positions are per conversation.
pub async fn a_taken_position_moves_to_the_next_free_one(store: &dyn Store) {
    create(store, conv("c", &["alice"], 1)).await;
    create(store, conv("d", &["alice"], 1)).await;
    fill(store, "c", "alice", [1]).await;
    let good = store.append_message(msg("c", 2, "alice", "two"));
    let taken = store.append_message(msg("c", 1, "mallory", "again"));
    let other = store.append_message(msg("d", 1, "alice", "same position, other conversation"));
    let newest = store.append_message(msg("c", 10, "alice", "ten"));
    assert_eq!(good.await.expect("good"), Appended::new(2, 1));
    assert_eq!(taken.await.expect("taken"), Appended::new(3, 2));
    assert_eq!(other.await.expect("other"), Appended::new(1, 0), "positions are per conversation");
    assert_eq!(newest.await.expect("newest"), Appended::new(10, 3), "a later proposal is kept");
    let all = store.messages(APP, "c", range(None, None, false, 10)).await.expect("read");
    let got: Vec<_> = all.iter().map(|m| (m.ts, m.from.as_str(), m.data.as_str())).collect();
    assert_eq!(got, [(1, "alice", "1"), (2, "alice", "two"), (3, "mallory", "again"), (10, "alice", "ten")]);
    assert_eq!(read(store, "c").await.last_message.map(|m| m.ts), Some(10));
    // A system conversation's inbox (no conversation of its own) is ordered the same way.
    let inbox = store.append_message(msg("c:inbox", 1, "alice", "to the app")).await.expect("inbox");
    assert_eq!(inbox, Appended::new(1, 0));
    let again = store.append_message(msg("c:inbox", 1, "bob", "to the app")).await.expect("inbox");
    assert_eq!(again, Appended::new(2, 1));
}

/// An append carrying a dedupe token its sender already stored in the conversation
/// writes nothing (neither the message nor its hook calls) and answers with the
/// original's id and position; another sender, another conversation or no token is
/// a new message; a deleted original no longer counts.
pub async fn a_resend_with_the_same_dedupe_token_is_stored_once(store: &dyn Store) {
    create(store, conv("c", &["alice", "bob"], 1)).await;
    create(store, conv("d", &["alice"], 1)).await;
    let token = || Some("tok-1".to_owned());
    let first = msg("c", 5, "alice", "hi");
    let first_id = first.id.clone();
    let stored = store.append_message_notify(first, vec![call("sent-1", "_messageSent", 5)], token());
    assert_eq!(stored.await.expect("append"), Appended::new(5, 0));
    // Queued behind the first without waiting for it: still one message.
    let resend = store.append_message_notify(
        msg("c", 9, "alice", "hi again"),
        vec![call("sent-2", "_messageSent", 9)],
        token(),
    );
    assert_eq!(resend.await.expect("re-send"), Appended::resent(first_id.clone(), 5));
    let other_sender = store.append_message_notify(msg("c", 6, "bob", "bob's"), Vec::new(), token());
    assert_eq!(other_sender.await.expect("other sender"), Appended::new(6, 5));
    let other_conv = store.append_message_notify(msg("d", 1, "alice", "d"), Vec::new(), token());
    assert_eq!(other_conv.await.expect("other conversation"), Appended::new(1, 0));
    let untokened = store.append_message_notify(msg("c", 7, "alice", "no token"), Vec::new(), None);
    assert_eq!(untokened.await.expect("no token"), Appended::new(7, 6));
    let all = store.messages(APP, "c", range(None, None, false, 10)).await.expect("read");
    let got: Vec<_> = all.iter().map(|m| (m.ts, m.data.as_str())).collect();
    assert_eq!(got, [(5, "hi"), (6, "bob's"), (7, "no token")]);
    let keys: Vec<String> =
        store.outbox_due(i64::MAX, 10).await.expect("outbox").into_iter().map(|e| e.call.key).collect();
    assert_eq!(keys, ["sent-1"], "a re-send stores no hook calls");
    // Once the original is deleted, the token stores a new message.
    store.delete_message(APP, "c", 5).await.expect("delete");
    let after = store.append_message_notify(msg("c", 8, "alice", "after delete"), Vec::new(), token());
    assert_eq!(after.await.expect("after delete"), Appended::new(8, 7));
}

/// Writes queued without awaiting apply in call order: a patch queued after an
/// append sees it, and every append is there once the futures resolve.
pub async fn queued_writes_apply_in_call_order(store: &dyn Store) {
    create(store, conv("c", &["alice", "bob"], 1)).await;
    let appends: Vec<_> = (1..=200).map(|ts| store.append_message(msg("c", ts, "alice", "x"))).collect();
    let patch = store.patch_message(APP, "c", 200, "edited".into(), None, 500);
    let add = store.add_members(APP, "c", owned(&["carol"]), 501);
    for (ts, a) in (1..).zip(appends) {
        assert_eq!(a.await.expect("append"), Appended::new(ts, ts - 1));
    }
    patch.await.expect("patch");
    add.await.expect("add");
    let all = page(store, "c", range(None, None, false, 1000)).await;
    assert_eq!(all, (1..=200).collect::<Vec<_>>());
    let c = read(store, "c").await;
    assert_eq!(c.last_message.map(|m| (m.ts, m.data)), Some((200, "edited".into())));
    assert_eq!(positions(store, "c").await.last(), Some(&pos("carol", 200, 0)));
}

/// `logs` towards older messages: `before` = start anchor, `after` = end anchor,
/// newest first, returned oldest first.
pub async fn history_pages_towards_older_messages(store: &dyn Store) {
    create(store, conv("c", &["alice"], 1)).await;
    fill(store, "c", "alice", [10, 20, 30, 40, 50, 60]).await;
    let older = |start, end, limit| page(store, "c", range(end, start, true, limit));
    assert_eq!(older(None, None, 3).await, [40, 50, 60]);
    assert_eq!(older(None, None, 100).await, [10, 20, 30, 40, 50, 60]);
    assert_eq!(older(Some((50, false)), None, 2).await, [30, 40]);
    assert_eq!(older(Some((50, true)), None, 2).await, [40, 50]);
    assert_eq!(older(Some((45, false)), None, 2).await, [30, 40], "an anchor between messages");
    assert_eq!(older(Some((50, false)), Some((20, false)), 10).await, [30, 40]);
    assert_eq!(older(Some((50, false)), Some((20, true)), 10).await, [20, 30, 40]);
    assert_eq!(older(Some((50, true)), Some((20, true)), 10).await, [20, 30, 40, 50]);
    assert_eq!(older(Some((50, true)), Some((20, true)), 2).await, [40, 50], "the newest of the window");
    assert_eq!(older(None, Some((40, false)), 10).await, [50, 60]);
    assert_eq!(older(Some((10, false)), None, 10).await, Vec::<i64>::new());
    assert_eq!(older(Some((30, true)), Some((30, true)), 10).await, [30]);
    assert_eq!(older(Some((30, false)), Some((30, true)), 10).await, Vec::<i64>::new());
    assert_eq!(older(Some((30, true)), Some((30, false)), 10).await, Vec::<i64>::new());
    assert_eq!(older(Some((30, false)), Some((30, false)), 10).await, Vec::<i64>::new());
    assert_eq!(older(Some((20, true)), Some((50, true)), 10).await, Vec::<i64>::new(), "inverted");
    assert_eq!(older(None, None, 0).await, Vec::<i64>::new());
}

/// `logs` towards newer messages: `after` = start anchor, `before` = end anchor,
/// oldest first.
pub async fn history_pages_towards_newer_messages(store: &dyn Store) {
    create(store, conv("c", &["alice"], 1)).await;
    fill(store, "c", "alice", [10, 20, 30, 40, 50, 60]).await;
    let newer = |start, end, limit| page(store, "c", range(start, end, false, limit));
    assert_eq!(newer(None, None, 3).await, [10, 20, 30]);
    assert_eq!(newer(Some((20, false)), None, 2).await, [30, 40]);
    assert_eq!(newer(Some((20, true)), None, 2).await, [20, 30]);
    assert_eq!(newer(Some((25, true)), None, 2).await, [30, 40], "an anchor between messages");
    assert_eq!(newer(Some((20, false)), Some((50, false)), 10).await, [30, 40]);
    assert_eq!(newer(Some((20, false)), Some((50, true)), 10).await, [30, 40, 50]);
    assert_eq!(newer(Some((20, true)), Some((50, true)), 10).await, [20, 30, 40, 50]);
    assert_eq!(newer(Some((20, true)), Some((50, true)), 2).await, [20, 30], "the oldest of the window");
    assert_eq!(newer(None, Some((30, false)), 10).await, [10, 20]);
    assert_eq!(newer(None, Some((30, true)), 10).await, [10, 20, 30]);
    assert_eq!(newer(Some((60, false)), None, 10).await, Vec::<i64>::new());
    assert_eq!(newer(Some((-5, false)), Some((1_000, false)), 10).await, [10, 20, 30, 40, 50, 60]);
    assert_eq!(newer(Some((50, true)), Some((20, true)), 10).await, Vec::<i64>::new(), "inverted");
    assert_eq!(newer(Some((20, false)), None, 0).await, Vec::<i64>::new());
}

/// The offline replay's reads: strictly after the cursor, a page at a time.
pub async fn offline_replay_pages_until_empty(store: &dyn Store) {
    create(store, conv("c", &["alice", "bob"], 1)).await;
    fill(store, "c", "alice", 1..=7).await;
    let mut from = 2;
    let mut pages = Vec::new();
    loop {
        let got =
            page(store, "c", MessageRange { after: Some((from, false)), limit: 2, ..Default::default() })
                .await;
        let Some(last) = got.last() else { break };
        from = *last;
        pages.push(got);
    }
    assert_eq!(pages, [vec![3, 4], vec![5, 6], vec![7]]);
}

/// `lctype` keeps bodies that are JSON objects with that `_lctype` number, before
/// the limit applies.
pub async fn lctype_filters_before_the_limit(store: &dyn Store) {
    create(store, conv("c", &["alice"], 1)).await;
    let bodies = [
        (1, "{\"_lctype\":-1}"),
        (2, "{\"_lctype\":-2,\"_lctext\":\"image\"}"),
        (3, "plain text"),
        (4, "{\"_lctype\":\"-2\"}"),
        (5, "[{\"_lctype\":-2}]"),
        (6, "{\"_lctype\":-2.0}"),
        (7, "{\"nested\":{\"_lctype\":-2}}"),
        (8, "{\"_lctype\":-2}"),
        (9, "{not json"),
        (10, "{\"_lctype\":-1}"),
        (11, "{\"_lctype\":-2}"),
        (12, "{\"_lctype\":true}"),
        (13, "{\"_lctype\":1}"),
    ];
    for (ts, body) in bodies {
        append(store, msg("c", ts, "alice", body)).await;
    }
    let typed = |after, before, newest_first, limit| {
        page(store, "c", MessageRange { lctype: Some(-2), ..range(after, before, newest_first, limit) })
    };
    assert_eq!(typed(None, None, false, 10).await, [2, 6, 8, 11]);
    assert_eq!(typed(None, None, false, 2).await, [2, 6]);
    assert_eq!(typed(None, None, true, 2).await, [8, 11]);
    assert_eq!(typed(Some((2, false)), Some((11, false)), false, 10).await, [6, 8]);
    assert_eq!(typed(None, Some((8, false)), true, 1).await, [6]);
    let minus_one = MessageRange { lctype: Some(-1), ..range(None, None, false, 10) };
    assert_eq!(page(store, "c", minus_one).await, [1, 10]);
    // A boolean is not a number (SQLite's json_extract reads `true` as 1).
    let one = MessageRange { lctype: Some(1), ..range(None, None, false, 10) };
    assert_eq!(page(store, "c", one).await, [13]);
}

/// The record's last message is the newest message appended, and shows edits of that
/// message only.
pub async fn last_message_follows_the_newest_append(store: &dyn Store) {
    create(store, conv("c", &["alice", "bob"], 1)).await;
    assert_eq!(read(store, "c").await.last_message, None);
    append(store, msg("c", 10, "alice", "ten")).await;
    let last = LastMessage { id: "mc-10".into(), ts: 10, from: "alice".into(), data: "ten".into() };
    assert_eq!(read(store, "c").await.last_message, Some(last));
    append(store, msg("c", 20, "bob", "twenty")).await;
    let last = LastMessage { id: "mc-20".into(), ts: 20, from: "bob".into(), data: "twenty".into() };
    assert_eq!(read(store, "c").await.last_message, Some(last.clone()));
    store.patch_message(APP, "c", 10, "edited older".into(), None, 30).await.expect("patch");
    assert_eq!(read(store, "c").await.last_message, Some(last.clone()));
    store.patch_message(APP, "c", 20, "edited newest".into(), None, 31).await.expect("patch");
    let edited = LastMessage { data: "edited newest".into(), ..last };
    assert_eq!(read(store, "c").await.last_message, Some(edited));
    assert_eq!(cursors(store, "bob").await, [MemberCursor { cid: "c".into(), cursor: 0, last_ts: 20 }]);
}

/// A delivery cursor moves forward only, members only, and reads see it at once.
pub async fn cursors_never_go_back_and_show_at_once(store: &dyn Store) {
    create(store, conv("c", &["alice", "bob"], 1)).await;
    fill(store, "c", "alice", 1..=5).await;
    store.save_cursor(APP, "bob", "c", 3);
    assert_eq!(cursors(store, "bob").await, [MemberCursor { cid: "c".into(), cursor: 3, last_ts: 5 }]);
    store.save_cursor(APP, "bob", "c", 2);
    assert_eq!(cursors(store, "bob").await, [MemberCursor { cid: "c".into(), cursor: 3, last_ts: 5 }]);
    store.save_cursor(APP, "bob", "c", 5);
    store.save_cursor(APP, "bob", "c", 4);
    store.save_cursor(APP, "mallory", "c", 5);
    store.save_cursor(APP, "bob", "missing", 5);
    assert_eq!(positions(store, "c").await, [pos("alice", 0, 0), pos("bob", 5, 0)]);
    assert_eq!(cursors(store, "bob").await, [MemberCursor { cid: "c".into(), cursor: 5, last_ts: 5 }]);
    assert_eq!(cursors(store, "mallory").await, []);
    // Other writes do not move it back.
    store.add_members(APP, "c", owned(&["bob", "carol"]), 9).await.expect("add");
    fill(store, "c", "alice", [6]).await;
    assert_eq!(cursors(store, "bob").await, [MemberCursor { cid: "c".into(), cursor: 5, last_ts: 6 }]);
}

/// `member_cursors` lists each conversation the client is in, of any kind, with the
/// newest position (0 without messages); none it left, none of another app.
pub async fn member_cursors_cover_every_membership(store: &dyn Store) {
    create(store, conv("a1", &["alice", "bob"], 1)).await;
    create(store, conv("a2", &["bob"], 2)).await;
    let mut sys = conv("a3", &["carol"], 3);
    sys.kind = ConvKind::System;
    create(store, sys).await;
    create(store, conv("a4", &["alice"], 4)).await;
    create(store, conv("a5", &["alice", "bob"], 5)).await;
    let mut foreign = conv("a6", &["bob"], 6);
    foreign.app = "other".into();
    create(store, foreign).await;
    store.add_members(APP, "a3", owned(&["bob"]), 7).await.expect("add");
    fill(store, "a1", "alice", [3, 8]).await;
    fill(store, "a3", "carol", [4]).await;
    store.remove_members(APP, "a5", owned(&["bob"]), 9).await.expect("remove");
    store.save_cursor(APP, "bob", "a1", 3);
    assert_eq!(
        cursors(store, "bob").await,
        [
            MemberCursor { cid: "a1".into(), cursor: 3, last_ts: 8 },
            MemberCursor { cid: "a2".into(), cursor: 0, last_ts: 0 },
            MemberCursor { cid: "a3".into(), cursor: 0, last_ts: 4 },
        ]
    );
    assert_eq!(cursors(store, "nobody").await, []);
}

/// A read position moves forward only, members only.
pub async fn read_positions_never_go_back(store: &dyn Store) {
    create(store, conv("c", &["alice", "bob"], 1)).await;
    fill(store, "c", "alice", 1..=5).await;
    store.save_read(APP, "bob", "c", 4).await.expect("read");
    store.save_read(APP, "bob", "c", 2).await.expect("an older read is not an error");
    store.save_read(APP, "mallory", "c", 5).await.expect("a non-member is not an error");
    assert_eq!(positions(store, "c").await, [pos("alice", 0, 0), pos("bob", 0, 4)]);
    let unread = store.unread(APP, "bob", 10).await.expect("unread");
    assert_eq!(summary(&unread), [("c", 1, false)]);
    store.save_read(APP, "bob", "c", 5).await.expect("read");
    assert_eq!(positions(store, "c").await, [pos("alice", 0, 0), pos("bob", 0, 5)]);
    assert_eq!(store.unread(APP, "bob", 10).await.expect("unread"), []);
}

/// `unread` counts messages from others after the read position, notes mentions among
/// those only, carries the last message, skips transient conversations and those
/// with nothing unread.
pub async fn unread_counts_others_messages_after_the_read_position(store: &dyn Store) {
    create(store, conv("c", &["alice", "bob", "carol"], 1)).await;
    let mut room = conv("room", &["alice", "bob"], 1);
    room.kind = ConvKind::Transient;
    create(store, room).await;
    create(store, conv("own", &["alice", "bob"], 1)).await;
    create(store, conv("quiet", &["alice", "bob"], 1)).await;
    let mentioning = |ts, from: &str, mentions| {
        let mut m = msg("c", ts, from, &format!("m{ts}"));
        m.mentions = mentions;
        m
    };
    // bob reads up to 2; 1 mentions him (already read); 4 is his own and mentions him.
    append(store, mentioning(1, "alice", Mentions { all: false, pids: owned(&["bob"]) })).await;
    fill(store, "c", "alice", [2]).await;
    append(store, mentioning(3, "carol", Mentions { all: false, pids: owned(&["alice"]) })).await;
    append(store, mentioning(4, "bob", Mentions { all: true, pids: owned(&["bob"]) })).await;
    fill(store, "c", "alice", [5]).await;
    fill(store, "room", "alice", [1, 2]).await;
    fill(store, "own", "bob", [1, 2]).await;
    fill(store, "quiet", "alice", [1]).await;
    store.save_read(APP, "bob", "c", 2).await.expect("read");
    store.save_read(APP, "bob", "quiet", 1).await.expect("read");

    let unread = store.unread(APP, "bob", 10).await.expect("unread");
    let last = LastMessage { id: "mc-5".into(), ts: 5, from: "alice".into(), data: "5".into() };
    assert_eq!(unread, [UnreadCount { cid: "c".into(), unread: 2, last: Some(last), mentioned: false }]);

    // alice: bob's "all" at 4 and carol's at 3 mention her; her own 5 does not count.
    let alice = store.unread(APP, "alice", 10).await.expect("unread");
    let mut alice = summary(&alice);
    alice.sort();
    assert_eq!(alice, [("c", 2, true), ("own", 2, false)]);
    // carol reads nothing yet: everything but her own.
    assert_eq!(summary(&store.unread(APP, "carol", 10).await.expect("unread")), [("c", 4, true)]);

    // Mentioned by `all` alone.
    append(store, mentioning(6, "carol", Mentions { all: true, pids: Vec::new() })).await;
    assert_eq!(summary(&store.unread(APP, "bob", 10).await.expect("unread")), [("c", 3, true)]);
    assert_eq!(store.unread(APP, "nobody", 10).await.expect("unread"), []);
}

/// `unread` lists the conversations with the newest last message first, at most
/// `max`, counting only conversations that have unread messages.
pub async fn unread_is_newest_first_and_capped(store: &dyn Store) {
    for cid in ["c1", "c2", "c3", "c4"] {
        create(store, conv(cid, &["alice", "bob"], 1)).await;
    }
    fill(store, "c1", "alice", [10, 50]).await;
    fill(store, "c2", "alice", [20]).await;
    fill(store, "c3", "bob", [60]).await;
    fill(store, "c4", "alice", [30, 40]).await;
    store.save_read(APP, "bob", "c4", 30).await.expect("read");
    let unread = store.unread(APP, "bob", 10).await.expect("unread");
    assert_eq!(summary(&unread), [("c1", 2, false), ("c4", 1, false), ("c2", 1, false)]);
    assert_eq!(
        unread.iter().map(|u| u.last.as_ref().map(|l| l.ts)).collect::<Vec<_>>(),
        [Some(50), Some(40), Some(20)]
    );
    // c3 (newest, but only bob's own) does not take a place.
    let two = store.unread(APP, "bob", 2).await.expect("unread");
    assert_eq!(summary(&two), [("c1", 2, false), ("c4", 1, false)]);
    assert_eq!(store.unread(APP, "bob", 0).await.expect("unread"), []);
}

/// A patch replaces the body in place (same id and position) and sets `patched_at`;
/// patching a missing position fails.
pub async fn patches_replace_the_body_in_place(store: &dyn Store) {
    create(store, conv("c", &["alice", "bob"], 1)).await;
    let mut original = msg("c", 7, "alice", "typo");
    original.receipt = true;
    original.mentions = Mentions { all: false, pids: owned(&["bob"]) };
    append(store, original.clone()).await;
    fill(store, "c", "bob", [8]).await;
    store.patch_message(APP, "c", 7, "fixed".into(), None, 100).await.expect("patch");
    let patched = StoredMessage { data: "fixed".into(), patched_at: Some(100), ..original };
    assert_eq!(store.message(APP, "c", "mc-7").await.expect("read"), Some(patched.clone()));
    let all = store.messages(APP, "c", range(None, None, false, 10)).await.expect("read");
    assert_eq!(all.first(), Some(&patched));
    assert_eq!(all.get(1).map(|m| m.patched_at), Some(None));
    store.patch_message(APP, "c", 7, "recalled".into(), None, 120).await.expect("patch again");
    let again = store.message(APP, "c", "mc-7").await.expect("read").expect("found");
    assert_eq!((again.data.as_str(), again.patched_at, again.ts), ("recalled", Some(120), 7));
    assert!(
        store.patch_message(APP, "c", 99, "nothing".into(), None, 130).await.is_err(),
        "missing position"
    );
    assert!(
        store.patch_message(APP, "nope", 7, "nothing".into(), None, 130).await.is_err(),
        "missing conversation"
    );
}

/// `patch_message` with a binary flag sets it with the body; without one it keeps it.
pub async fn a_patch_may_set_the_binary_flag(store: &dyn Store) {
    create(store, conv("c", &["alice", "bob"], 1)).await;
    append(store, msg("c", 7, "alice", "text")).await;
    store.patch_message(APP, "c", 7, "AAEC".into(), Some(true), 100).await.expect("patch");
    let binary = store.message(APP, "c", "mc-7").await.expect("read").expect("found");
    assert_eq!((binary.data.as_str(), binary.binary, binary.patched_at), ("AAEC", true, Some(100)));
    store.patch_message(APP, "c", 7, "AAED".into(), None, 110).await.expect("patch");
    let kept = store.message(APP, "c", "mc-7").await.expect("read").expect("found");
    assert_eq!((kept.data.as_str(), kept.binary), ("AAED", true), "an ordinary patch keeps the flag");
    store.patch_message(APP, "c", 7, "text again".into(), Some(false), 120).await.expect("patch");
    let text = store.messages(APP, "c", range(None, None, false, 10)).await.expect("read");
    assert_eq!(text.first().map(|m| (m.data.as_str(), m.binary)), Some(("text again", false)));
    assert!(
        store.patch_message(APP, "c", 99, "x".into(), Some(true), 130).await.is_err(),
        "missing position"
    );
}

/// `patched_since`: the client's conversations' changes strictly after `since`, by
/// `patched_at`, conversation id, position; the first `limit`.
pub async fn patched_since_orders_and_caps_changes(store: &dyn Store) {
    for cid in ["c1", "c2", "c3"] {
        let members: &[&str] = if cid == "c3" { &["alice"] } else { &["alice", "bob"] };
        create(store, conv(cid, members, 1)).await;
        fill(store, cid, "alice", 1..=4).await;
    }
    // (cid, ts, patched_at): c3 is not bob's; the edit at 10 is not after `since`.
    for (cid, ts, at) in [
        ("c1", 1, 10),
        ("c2", 2, 30),
        ("c1", 3, 40),
        ("c2", 1, 20),
        ("c3", 1, 25),
        ("c1", 4, 30),
        ("c2", 3, 15),
    ] {
        store.patch_message(APP, cid, ts, format!("edited {at}"), None, at).await.expect("patch");
    }
    let seen = |changes: Vec<StoredMessage>| {
        changes.into_iter().map(|m| (m.cid, m.ts, m.patched_at, m.data)).collect::<Vec<_>>()
    };
    let e = |cid: &str, ts, at: i64| (cid.to_string(), ts, Some(at), format!("edited {at}"));
    let all = store.patched_since(APP, "bob", 15, 100).await.expect("read");
    assert_eq!(seen(all), [e("c2", 1, 20), e("c1", 4, 30), e("c2", 2, 30), e("c1", 3, 40)]);
    let first = store.patched_since(APP, "bob", 15, 2).await.expect("read");
    assert_eq!(seen(first), [e("c2", 1, 20), e("c1", 4, 30)]);
    assert_eq!(store.patched_since(APP, "bob", 40, 100).await.expect("read"), []);
    let alice = store.patched_since(APP, "alice", 0, 100).await.expect("read");
    assert_eq!(alice.len(), 7);
    // Patched again: it moves to its new time.
    store.patch_message(APP, "c2", 1, "edited 50".into(), None, 50).await.expect("patch");
    let all = store.patched_since(APP, "bob", 15, 100).await.expect("read");
    assert_eq!(seen(all), [e("c1", 4, 30), e("c2", 2, 30), e("c1", 3, 40), e("c2", 1, 50)]);
    // Leaving a conversation leaves its changes out.
    store.remove_members(APP, "c1", owned(&["bob"]), 60).await.expect("remove");
    let all = store.patched_since(APP, "bob", 15, 100).await.expect("read");
    assert_eq!(seen(all), [e("c2", 2, 30), e("c2", 1, 50)]);
}

/// `message` finds a message of the conversation by id, only there.
pub async fn message_by_id(store: &dyn Store) {
    create(store, conv("c", &["alice"], 1)).await;
    create(store, conv("d", &["alice"], 1)).await;
    fill(store, "c", "alice", [1, 2, 3]).await;
    fill(store, "d", "alice", [1]).await;
    let found = store.message(APP, "c", "mc-2").await.expect("read");
    assert_eq!(found, Some(msg("c", 2, "alice", "2")));
    assert_eq!(store.message(APP, "c", "mc-9").await.expect("read"), None);
    assert_eq!(store.message(APP, "c", "md-1").await.expect("read"), None, "another conversation's id");
    assert_eq!(store.message("other", "c", "mc-2").await.expect("read"), None, "another app");
}

/// Ids come from requests and may hold U+0000, which no stored id holds (PostgreSQL's
/// text cannot): a lookup by one finds nothing, as for any unknown id, and is no error.
pub async fn ids_holding_nul_match_nothing(store: &dyn Store) {
    create(store, conv("c", &["alice"], 1)).await;
    fill(store, "c", "alice", [1]).await;
    assert_eq!(store.conversation(APP, "c\0").await.expect("read"), None);
    assert_eq!(store.message(APP, "c", "mc-1\0").await.expect("read"), None);
    assert_eq!(store.message(APP, "c\0", "mc-1").await.expect("read"), None);
    assert!(store.unread(APP, "alice\0", 10).await.expect("read").is_empty());
    assert_eq!(store.message(APP, "c", "mc-1").await.expect("read"), Some(msg("c", 1, "alice", "1")));
}

/// `Manager` makes a member a manager, `Member` undoes it; non-members are skipped;
/// the role goes with the membership.
pub async fn roles_apply_to_members(store: &dyn Store) {
    create(store, conv("c", &["alice", "bob", "carol", "dave"], 1)).await;
    for who in ["dave", "bob", "mallory"] {
        store.set_role(APP, "c", who, "Manager").await.expect("role");
    }
    assert_eq!(read(store, "c").await.managers, owned(&["bob", "dave"]));
    store.set_role(APP, "c", "dave", "Member").await.expect("role");
    let c = read(store, "c").await;
    assert_eq!((c.managers, c.members.len()), (owned(&["bob"]), 4));
    store.remove_members(APP, "c", owned(&["bob"]), 2).await.expect("remove");
    store.add_members(APP, "c", owned(&["bob", "mallory"]), 3).await.expect("add");
    assert_eq!(read(store, "c").await.managers, Vec::<String>::new());
}

/// Shut-up flags are set and cleared on members, in join order; non-members are
/// skipped; the flag goes with the membership.
pub async fn shut_up_applies_to_members(store: &dyn Store) {
    create(store, conv("c", &["alice", "bob", "carol", "dave"], 1)).await;
    store.set_shut_up(APP, "c", owned(&["dave", "bob", "mallory"]), true).await.expect("shut up");
    assert_eq!(read(store, "c").await.shut_up, owned(&["bob", "dave"]));
    store.set_shut_up(APP, "c", owned(&["bob", "carol"]), false).await.expect("let speak");
    assert_eq!(read(store, "c").await.shut_up, owned(&["dave"]));
    store.add_members(APP, "c", owned(&["mallory"]), 2).await.expect("add");
    assert_eq!(read(store, "c").await.shut_up, owned(&["dave"]), "not shut up before joining");
    store.remove_members(APP, "c", owned(&["dave"]), 3).await.expect("remove");
    store.add_members(APP, "c", owned(&["dave"]), 4).await.expect("add");
    assert_eq!(read(store, "c").await.shut_up, Vec::<String>::new());
}

/// Blocking records clients (sorted), members or not, and removes members with their
/// positions; unblocking does not make them members again.
pub async fn blocking_removes_members(store: &dyn Store) {
    create(store, conv("c", &["alice", "zoe", "bob"], 1)).await;
    fill(store, "c", "alice", [1, 2]).await;
    store.save_cursor(APP, "zoe", "c", 2);
    store.set_blocked(APP, "c", owned(&["zoe", "mallory"]), true).await.expect("block");
    let c = read(store, "c").await;
    assert_eq!(
        (c.members, c.blocked, c.updated_at),
        (owned(&["alice", "bob"]), owned(&["mallory", "zoe"]), 1)
    );
    assert_eq!(cursors(store, "zoe").await, []);
    assert_eq!(positions(store, "c").await, [pos("alice", 0, 0), pos("bob", 0, 0)]);
    let filter = ScanFilter { member: Some("zoe".into()), max: 10, ..Default::default() };
    assert_eq!(store.scan_conversations(APP, filter).await.expect("scan"), []);

    store.set_blocked(APP, "c", owned(&["zoe", "nobody"]), false).await.expect("unblock");
    let c = read(store, "c").await;
    assert_eq!((c.members, c.blocked), (owned(&["alice", "bob"]), owned(&["mallory"])));
}

/// Muting is per member, set and cleared; non-members are skipped.
pub async fn muting_applies_to_members(store: &dyn Store) {
    create(store, conv("c", &["alice", "bob", "carol"], 1)).await;
    store.set_muted(APP, "c", "carol", true).await.expect("mute");
    store.set_muted(APP, "c", "alice", true).await.expect("mute");
    store.set_muted(APP, "c", "mallory", true).await.expect("a non-member is not an error");
    assert_eq!(read(store, "c").await.muted, owned(&["alice", "carol"]));
    store.set_muted(APP, "c", "alice", false).await.expect("unmute");
    store.set_muted(APP, "c", "bob", false).await.expect("unmute an unmuted member");
    assert_eq!(read(store, "c").await.muted, owned(&["carol"]));
    store.remove_members(APP, "c", owned(&["carol"]), 2).await.expect("remove");
    store.add_members(APP, "c", owned(&["carol", "mallory"]), 3).await.expect("add");
    assert_eq!(read(store, "c").await.muted, Vec::<String>::new());
}

/// Each member's delivery cursor and read position, in join order.
pub async fn member_positions_in_join_order(store: &dyn Store) {
    create(store, conv("c", &["carol", "alice"], 1)).await;
    fill(store, "c", "carol", 1..=6).await;
    store.add_members(APP, "c", owned(&["bob"]), 2).await.expect("add");
    store.save_cursor(APP, "alice", "c", 5);
    store.save_read(APP, "alice", "c", 3).await.expect("read");
    store.save_read(APP, "carol", "c", 6).await.expect("read");
    assert_eq!(positions(store, "c").await, [pos("carol", 0, 6), pos("alice", 5, 3), pos("bob", 6, 0)]);
    assert_eq!(positions(store, "missing").await, []);
}

/// Deleting a message removes it from history; the last message stays what it was and
/// its position is not assigned again. An absent position is no error.
pub async fn deleting_a_message_keeps_the_last_message(store: &dyn Store) {
    create(store, conv("c", &["alice", "bob"], 1)).await;
    fill(store, "c", "alice", [10, 20, 30]).await;
    store.delete_message(APP, "c", 20).await.expect("delete middle");
    assert_eq!(page(store, "c", range(None, None, false, 10)).await, [10, 30]);
    assert_eq!(store.message(APP, "c", "mc-20").await.expect("by id"), None);
    store.delete_message(APP, "c", 30).await.expect("delete last");
    assert_eq!(page(store, "c", range(None, None, false, 10)).await, [10]);
    let last = read(store, "c").await.last_message.expect("a last message");
    assert_eq!((last.ts, last.id.as_str(), last.data.as_str()), (30, "mc-30", "30"));
    store.delete_message(APP, "c", 99).await.expect("absent");
    store.delete_message(APP, "missing", 1).await.expect("no conversation");
    // A new message proposed at the deleted position goes after it.
    let at = store.append_message(msg("c", 30, "bob", "again")).await.expect("append");
    assert_eq!((at.ts, at.prev_ts), (31, 30));
    assert_eq!(read(store, "c").await.last_message.map(|m| m.ts), Some(31));
}

/// The app's messages across its conversations, by position (ties by conversation id),
/// optionally of one sender; side logs without a conversation and other apps are not
/// included.
pub async fn app_messages_span_conversations_only(store: &dyn Store) {
    create(store, conv("a", &["alice"], 1)).await;
    create(store, conv("b", &["bob"], 2)).await;
    append(store, msg("a", 10, "alice", "a10")).await;
    append(store, msg("b", 10, "bob", "b10")).await;
    append(store, msg("b", 20, "alice", "b20")).await;
    append(store, msg("a", 30, "bob", "a30")).await;
    append(store, msg("a:inbox", 25, "alice", "side")).await;
    let mut other = msg("a", 15, "alice", "other app");
    other.app = "other".into();
    store.append_message(other).await.expect("other app");
    let ids = |v: Vec<StoredMessage>| v.into_iter().map(|m| m.id).collect::<Vec<_>>();
    let all = store.app_messages(APP, None, range(None, None, false, 10)).await.expect("all");
    assert_eq!(ids(all), ["ma-10", "mb-10", "mb-20", "ma-30"]);
    let newest = store.app_messages(APP, None, range(None, None, true, 2)).await.expect("newest");
    assert_eq!(ids(newest), ["mb-20", "ma-30"]);
    let before = range(None, Some((20, false)), true, 10);
    assert_eq!(ids(store.app_messages(APP, None, before).await.expect("before")), ["ma-10", "mb-10"]);
    let after = range(Some((10, false)), Some((30, true)), false, 10);
    assert_eq!(ids(store.app_messages(APP, None, after).await.expect("after")), ["mb-20", "ma-30"]);
    let alice = store.app_messages(APP, Some("alice"), range(None, None, false, 10)).await.expect("alice");
    assert_eq!(ids(alice), ["ma-10", "mb-20"]);
    let none = store.app_messages(APP, Some("nobody"), range(None, None, false, 10)).await.expect("none");
    assert!(none.is_empty());
    assert!(store.app_messages(APP, None, range(None, None, false, 0)).await.expect("zero").is_empty());
}

/// `joined_at` is the creation time for the first members, the add time for later
/// ones, and `None` once a member left.
pub async fn joined_at_is_the_membership_time(store: &dyn Store) {
    create(store, conv("c", &["alice"], 5)).await;
    store.add_members(APP, "c", owned(&["bob"]), 9).await.expect("add");
    store.add_members(APP, "c", owned(&["bob"]), 12).await.expect("add again");
    assert_eq!(store.joined_at(APP, "c", "alice").await.expect("alice"), Some(5));
    assert_eq!(store.joined_at(APP, "c", "bob").await.expect("bob"), Some(9));
    assert_eq!(store.joined_at(APP, "c", "carol").await.expect("carol"), None);
    assert_eq!(store.joined_at(APP, "missing", "alice").await.expect("missing"), None);
    store.remove_members(APP, "c", owned(&["bob"]), 13).await.expect("remove");
    assert_eq!(store.joined_at(APP, "c", "bob").await.expect("bob left"), None);
}

/// A hook call of [`APP`] with key `key`, stored at `at`.
fn call(key: &str, hook: &str, at: i64) -> HookCall {
    HookCall {
        app: APP.into(),
        key: key.into(),
        hook: hook.into(),
        params: json!({ "k": key }).to_string(),
        created_at: at,
    }
}

async fn due_keys(store: &dyn Store, now: i64) -> Vec<String> {
    let due = store.outbox_due(now, 100).await.expect("outbox");
    due.into_iter().map(|e| e.call.key).collect()
}

/// A message's hook calls are stored with it, and report the position the store gave
/// the message: a proposal at a taken position moves, and so does its calls'
/// `timestamp` (other parameters, and calls without it, stay as built). The plain
/// append stores none.
pub async fn hook_calls_commit_with_their_message(store: &dyn Store) {
    create(store, conv("c", &["alice", "bob"], 1)).await;
    let sent = |key: &str, ts: i64| {
        let mut c = call(key, "_messageSent", ts);
        c.params = json!({ "k": key, "timestamp": ts }).to_string();
        c
    };
    let first = store
        .append_message_notify(msg("c", 5, "alice", "hi"), vec![sent("sent-a", 5)], None)
        .await
        .expect("append");
    assert_eq!(first, Appended::new(5, 0));
    let moved = store
        .append_message_notify(
            msg("c", 5, "bob", "at a taken position"),
            vec![sent("sent-b", 5), call("plain-b", "_receiversOffline", 5)],
            None,
        )
        .await
        .expect("append");
    assert_eq!(moved, Appended::new(6, 5));
    append(store, msg("c", 7, "alice", "no hooks")).await;
    let due = store.outbox_due(100, 100).await.expect("outbox");
    let got: Vec<(HookCall, u32, i64)> = due.into_iter().map(|e| (e.call, e.attempts, e.due_at)).collect();
    let params = |c: &HookCall| serde_json::from_str::<Value>(&c.params).expect("JSON");
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(
        (got[0].0.key.as_str(), params(&got[0].0)),
        ("sent-a", json!({ "k": "sent-a", "timestamp": 5 }))
    );
    assert_eq!(
        (got[1].0.key.as_str(), params(&got[1].0)),
        ("sent-b", json!({ "k": "sent-b", "timestamp": 6 }))
    );
    assert_eq!(got[2].0, call("plain-b", "_receiversOffline", 5), "no proposed position reported");
    assert!(
        got.iter().all(|(c, attempts, due_at)| *attempts == 0 && *due_at == c.created_at),
        "due when created"
    );
}

/// Conversation events carry their calls the same way: a failed create leaves none;
/// deleting the conversation later does not take them back.
pub async fn hook_calls_commit_with_their_membership_event(store: &dyn Store) {
    store
        .create_conversation_notify(
            conv("c", &["alice"], 1),
            vec![call("started", "_conversationStarted", 1)],
        )
        .await
        .expect("create");
    let again = store
        .create_conversation_notify(
            conv("c", &["bob"], 2),
            vec![call("started-again", "_conversationStarted", 2)],
        )
        .await;
    assert!(again.is_err(), "an existing id is refused");
    store
        .add_members_notify(APP, "c", owned(&["bob"]), 3, vec![call("added", "_conversationAdded", 3)])
        .await
        .expect("add");
    store
        .remove_members_notify(APP, "c", owned(&["bob"]), 4, vec![call("removed", "_conversationRemoved", 4)])
        .await
        .expect("remove");
    store.outbox_put(vec![call("online", "_clientOnline", 4)]).await.expect("put");
    store.delete_conversation(APP, "c").await.expect("delete");
    assert_eq!(due_keys(store, 10).await, ["started", "added", "removed", "online"]);
    assert_eq!(read_members(store, "c").await, None, "the conversation itself is gone");
}

async fn read_members(store: &dyn Store, cid: &str) -> Option<Vec<String>> {
    store.conversation(APP, cid).await.expect("read").map(|c| c.members)
}

/// Due calls come earliest due first (ties in the order stored), only when due, at most
/// `limit`; a retry moves a call and counts its attempts; done removes it; unknown keys
/// are no error.
pub async fn outbox_calls_come_due_in_order_and_settle(store: &dyn Store) {
    store
        .outbox_put(vec![
            call("a", "_clientOnline", 10),
            call("b", "_clientOffline", 5),
            call("c", "_clientOnline", 10),
        ])
        .await
        .expect("put");
    assert_eq!(due_keys(store, 4).await, Vec::<String>::new(), "nothing is due before its time");
    assert_eq!(due_keys(store, 10).await, ["b", "a", "c"]);
    let first = store.outbox_due(10, 1).await.expect("outbox");
    assert_eq!(first.len(), 1, "limit");
    store.outbox_retry(APP, "b", 1, 20).await.expect("retry");
    store.outbox_retry(APP, "nope", 1, 20).await.expect("unknown key");
    assert_eq!(due_keys(store, 10).await, ["a", "c"]);
    let due = store.outbox_due(20, 100).await.expect("outbox");
    assert_eq!(
        due.iter().map(|e| (e.call.key.as_str(), e.attempts, e.due_at)).collect::<Vec<_>>(),
        [("a", 0, 10), ("c", 0, 10), ("b", 1, 20)]
    );
    store.outbox_done(APP, "a").await.expect("done");
    store.outbox_done(APP, "nope").await.expect("unknown key");
    assert_eq!(due_keys(store, 20).await, ["c", "b"]);
}

/// A key is stored once per app (the first call wins); the same key in another app is
/// another call, settled apart.
pub async fn outbox_keys_are_idempotent_per_app(store: &dyn Store) {
    let mut first = call("k", "_messageSent", 1);
    first.params = "{\"first\":true}".into();
    let mut second = call("k", "_messageSent", 2);
    second.params = "{\"first\":false}".into();
    let mut other = call("k", "_messageSent", 3);
    other.app = "other".into();
    store.outbox_put(vec![first.clone()]).await.expect("put");
    store.outbox_put(vec![second, other.clone()]).await.expect("put");
    let due = store.outbox_due(10, 100).await.expect("outbox");
    let calls: Vec<HookCall> = due.into_iter().map(|e| e.call).collect();
    assert_eq!(calls, [first, other.clone()]);
    store.outbox_done(APP, "k").await.expect("done");
    let due = store.outbox_due(10, 100).await.expect("outbox");
    assert_eq!(due.into_iter().map(|e| e.call).collect::<Vec<_>>(), [other]);
}

fn mark(client: &str, kind: MarkKind, until: Option<i64>) -> ClientMark {
    ClientMark { client: client.to_owned(), kind, until }
}

/// Marks are set (the latest `until` wins), listed by kind then client, removed per
/// kind; clients without one are skipped when removing.
pub async fn marks_are_set_replaced_and_removed(store: &dyn Store) {
    create(store, conv("c", &["alice"], 1)).await;
    assert_eq!(store.marks(APP, "c").await.expect("marks"), []);
    store
        .set_marks(APP, "c", MarkKind::Silenced, owned(&["zoe", "bob"]), true, Some(50))
        .await
        .expect("silence");
    store.set_marks(APP, "c", MarkKind::RoomShutUp, owned(&["bob"]), true, None).await.expect("shut up");
    store.set_marks(APP, "c", MarkKind::Silenced, owned(&["bob"]), true, Some(90)).await.expect("again");
    assert_eq!(
        store.marks(APP, "c").await.expect("marks"),
        [
            mark("bob", MarkKind::Silenced, Some(90)),
            mark("zoe", MarkKind::Silenced, Some(50)),
            mark("bob", MarkKind::RoomShutUp, None),
        ]
    );
    store
        .set_marks(APP, "c", MarkKind::Silenced, owned(&["bob", "nobody"]), false, None)
        .await
        .expect("lift");
    assert_eq!(
        store.marks(APP, "c").await.expect("marks"),
        [mark("zoe", MarkKind::Silenced, Some(50)), mark("bob", MarkKind::RoomShutUp, None)]
    );
    assert_eq!(store.marks(APP, "other").await.expect("marks"), []);
    assert_eq!(store.marks("another-app", "c").await.expect("marks"), [], "apps are isolated");
}

/// Any client id carries a mark, member or not; adding and removing members leaves
/// marks alone; deleting the conversation removes them.
pub async fn marks_are_apart_from_membership(store: &dyn Store) {
    create(store, conv("c", &["alice", "bob"], 1)).await;
    store
        .set_marks(APP, "c", MarkKind::RoomManager, owned(&["bob", "carol"]), true, None)
        .await
        .expect("mark");
    store.remove_members(APP, "c", owned(&["bob"]), 2).await.expect("remove");
    store.add_members(APP, "c", owned(&["carol"]), 3).await.expect("add");
    store.set_blocked(APP, "c", owned(&["carol"]), true).await.expect("block");
    assert_eq!(
        store.marks(APP, "c").await.expect("marks"),
        [mark("bob", MarkKind::RoomManager, None), mark("carol", MarkKind::RoomManager, None)]
    );
    store.set_marks(APP, "c", MarkKind::ClientBlocked, owned(&["bob"]), true, None).await.expect("client");
    store.delete_conversation(APP, "c").await.expect("delete");
    assert_eq!(store.marks(APP, "c").await.expect("marks"), []);
    let left = store.client_marks(APP, "bob", MarkKind::ClientBlocked, None, 10).await.expect("client marks");
    assert!(left.is_empty(), "{left:?}");
}

/// A client's marks of one kind page by conversation id, after an exclusive id.
pub async fn client_marks_page_in_id_order(store: &dyn Store) {
    for (id, at) in [("c3", 1), ("c1", 2), ("c2", 3), ("c4", 4)] {
        create(store, conv(id, &["alice"], at)).await;
    }
    for cid in ["c3", "c1", "c2"] {
        store.set_marks(APP, cid, MarkKind::ClientBlocked, owned(&["zoe"]), true, None).await.expect("mark");
    }
    store.set_marks(APP, "c4", MarkKind::Silenced, owned(&["zoe"]), true, Some(9)).await.expect("other kind");
    store
        .set_marks(APP, "c4", MarkKind::ClientBlocked, owned(&["bob"]), true, None)
        .await
        .expect("other client");
    let page = |after: Option<&'static str>, limit| {
        store.client_marks(APP, "zoe", MarkKind::ClientBlocked, after, limit)
    };
    assert_eq!(page(None, 2).await.expect("first"), owned(&["c1", "c2"]));
    assert_eq!(page(Some("c2"), 2).await.expect("next"), owned(&["c3"]));
    assert_eq!(page(Some("c3"), 2).await.expect("end"), Vec::<String>::new());
    assert_eq!(page(None, 0).await.expect("none"), Vec::<String>::new());
    assert_eq!(
        store.client_marks(APP, "zoe", MarkKind::Silenced, None, 10).await.expect("silences"),
        owned(&["c4"])
    );
}

/// A client's marks of one kind are counted as `client_marks` lists them: per app,
/// client and kind, a replaced mark once, a removed or deleted one no more.
pub async fn client_marks_are_counted(store: &dyn Store) {
    let count = |app: &'static str, client: &'static str, kind| store.count_client_marks(app, client, kind);
    assert_eq!(count(APP, "zoe", MarkKind::ClientBlocked).await.expect("none yet"), 0);
    for id in ["c1", "c2", "c3"] {
        create(store, conv(id, &["alice"], 1)).await;
    }
    for cid in ["c1", "c2", "c3"] {
        store.set_marks(APP, cid, MarkKind::ClientBlocked, owned(&["zoe"]), true, None).await.expect("mark");
    }
    store.set_marks(APP, "c1", MarkKind::ClientBlocked, owned(&["zoe"]), true, None).await.expect("again");
    store.set_marks(APP, "c1", MarkKind::Silenced, owned(&["zoe"]), true, Some(9)).await.expect("other kind");
    store.set_marks(APP, "c2", MarkKind::ClientBlocked, owned(&["bob"]), true, None).await.expect("other");
    assert_eq!(count(APP, "zoe", MarkKind::ClientBlocked).await.expect("three"), 3);
    assert_eq!(count(APP, "zoe", MarkKind::Silenced).await.expect("one"), 1);
    assert_eq!(count(APP, "bob", MarkKind::ClientBlocked).await.expect("bob's"), 1);
    assert_eq!(count("other", "zoe", MarkKind::ClientBlocked).await.expect("other app"), 0);
    store.set_marks(APP, "c2", MarkKind::ClientBlocked, owned(&["zoe"]), false, None).await.expect("off");
    store.delete_conversation(APP, "c3").await.expect("delete");
    assert_eq!(count(APP, "zoe", MarkKind::ClientBlocked).await.expect("one left"), 1);
    let listed = store.client_marks(APP, "zoe", MarkKind::ClientBlocked, None, 10).await.expect("listed");
    assert_eq!(listed, owned(&["c1"]));
}

/// A message of [`APP`] for `to` only (a service conversation's targeted message).
fn targeted(cid: &str, ts: i64, from: &str, to: &[&str]) -> StoredMessage {
    StoredMessage { recipients: Some(owned(to)), ..msg(cid, ts, from, &format!("to {}", to.join(","))) }
}

/// The ids a read returns.
fn ids_of(messages: Vec<StoredMessage>) -> Vec<String> {
    messages.into_iter().map(|m| m.id).collect()
}

/// A targeted message is read back with its recipients (by range, by id, across the
/// app); it takes a position in the conversation's order (the newest position, where a
/// new member's cursor starts and the next message goes after) but does not become the
/// conversation's last message, even when appended in one batch with others.
pub async fn targeted_messages_keep_their_recipients(store: &dyn Store) {
    let mut svc = conv("s", &["alice", "bob", "carol"], 1);
    svc.kind = ConvKind::System;
    create(store, svc).await;
    // Queued together: a store that commits a batch at once sees them in one.
    let queued = [
        store.append_message(msg("s", 10, "sys", "all")),
        store.append_message(targeted("s", 20, "sys", &["bob", "carol"])),
        store.append_message(targeted("s", 30, "sys", &["carol"])),
    ];
    for at in queued {
        at.await.expect("append");
    }
    let all = store.messages(APP, "s", range(None, None, false, 10)).await.expect("read");
    let recipients: Vec<Option<Vec<String>>> = all.iter().map(|m| m.recipients.clone()).collect();
    assert_eq!(recipients, [None, Some(owned(&["bob", "carol"])), Some(owned(&["carol"]))]);
    let by_id = store.message(APP, "s", "ms-20").await.expect("by id").expect("stored");
    assert_eq!((by_id.ts, by_id.recipients), (20, Some(owned(&["bob", "carol"]))));
    let app = store.app_messages(APP, None, range(None, None, false, 10)).await.expect("app");
    assert_eq!(app.iter().map(|m| m.recipients.is_some()).collect::<Vec<_>>(), [false, true, true]);
    // The last message every member sees is the broadcast; the position is the newest.
    let last = LastMessage { id: "ms-10".into(), ts: 10, from: "sys".into(), data: "all".into() };
    assert_eq!(read(store, "s").await.last_message, Some(last.clone()));
    assert_eq!(cursors(store, "alice").await, [MemberCursor { cid: "s".into(), cursor: 0, last_ts: 30 }]);
    store.add_members(APP, "s", owned(&["dave"]), 40).await.expect("add");
    assert_eq!(cursors(store, "dave").await, [MemberCursor { cid: "s".into(), cursor: 30, last_ts: 30 }]);
    let at = store.append_message(msg("s", 25, "sys", "late clock")).await.expect("append");
    assert_eq!((at.ts, at.prev_ts), (31, 30));
    assert_eq!(read(store, "s").await.last_message.map(|m| m.ts), Some(31));
    // A targeted message after it leaves it the last; an edit of that one shows.
    append(store, targeted("s", 40, "sys", &["bob"])).await;
    store.patch_message(APP, "s", 40, "edited for bob".into(), None, 41).await.expect("patch targeted");
    store.patch_message(APP, "s", 31, "edited".into(), None, 42).await.expect("patch last");
    let last = read(store, "s").await.last_message.expect("a last message");
    assert_eq!((last.ts, last.data.as_str()), (31, "edited"));
}

/// A read for one client (`visible_to`) leaves out targeted messages for others, before
/// the limit, in both directions; without it every message is read.
pub async fn targeted_messages_show_only_to_their_recipients(store: &dyn Store) {
    let mut svc = conv("s", &["alice", "bob", "carol"], 1);
    svc.kind = ConvKind::System;
    create(store, svc).await;
    append(store, msg("s", 1, "sys", "one")).await;
    append(store, targeted("s", 2, "sys", &["bob", "carol"])).await;
    append(store, targeted("s", 3, "sys", &["carol"])).await;
    append(store, msg("s", 4, "sys", "four")).await;
    append(store, targeted("s", 5, "sys", &["carol"])).await;
    let for_client = |client: &str, newest_first: bool, limit: usize| MessageRange {
        visible_to: Some(client.to_owned()),
        ..range(None, None, newest_first, limit)
    };
    assert_eq!(page(store, "s", for_client("alice", false, 10)).await, [1, 4]);
    assert_eq!(page(store, "s", for_client("bob", false, 10)).await, [1, 2, 4]);
    assert_eq!(page(store, "s", for_client("carol", false, 10)).await, [1, 2, 3, 4, 5]);
    assert_eq!(page(store, "s", for_client("nobody", false, 10)).await, [1, 4]);
    // The filter comes before the limit.
    assert_eq!(page(store, "s", for_client("alice", true, 1)).await, [4]);
    assert_eq!(page(store, "s", for_client("alice", false, 2)).await, [1, 4]);
    assert_eq!(page(store, "s", for_client("bob", true, 2)).await, [2, 4]);
    let after_one = MessageRange { after: Some((1, false)), ..for_client("bob", false, 1) };
    assert_eq!(page(store, "s", after_one).await, [2]);
    // With the lctype filter too.
    let typed = MessageRange { lctype: Some(7), ..for_client("alice", false, 10) };
    assert!(page(store, "s", typed).await.is_empty());
    assert_eq!(page(store, "s", range(None, None, false, 10)).await, [1, 2, 3, 4, 5]);
    let ids = ids_of(store.messages(APP, "s", for_client("bob", false, 10)).await.expect("read"));
    assert_eq!(ids, ["ms-1", "ms-2", "ms-4"]);
}

/// Unread counts leave out targeted messages for others (and their mentions); a
/// recipient's `last` is its newest targeted message when one came after the
/// conversation's last message. A conversation whose only unread messages are for
/// others is not listed.
pub async fn targeted_messages_count_as_unread_for_their_recipients_only(store: &dyn Store) {
    let mut svc = conv("s", &["alice", "bob", "carol"], 1);
    svc.kind = ConvKind::System;
    create(store, svc).await;
    create(store, conv("quiet", &["alice", "carol"], 1)).await;
    append(store, msg("s", 1, "sys", "one")).await;
    let mut to_carol = targeted("s", 2, "sys", &["carol"]);
    to_carol.mentions = Mentions { all: true, pids: Vec::new() };
    append(store, to_carol).await;
    append(store, targeted("s", 3, "sys", &["bob", "carol"])).await;
    let one = LastMessage { id: "ms-1".into(), ts: 1, from: "sys".into(), data: "one".into() };
    let three = LastMessage { id: "ms-3".into(), ts: 3, from: "sys".into(), data: "to bob,carol".into() };
    let unread = |client: &'static str| async move { store.unread(APP, client, 10).await.expect("unread") };
    assert_eq!(
        unread("alice").await,
        [UnreadCount { cid: "s".into(), unread: 1, last: Some(one.clone()), mentioned: false }]
    );
    assert_eq!(
        unread("bob").await,
        [UnreadCount { cid: "s".into(), unread: 2, last: Some(three.clone()), mentioned: false }]
    );
    assert_eq!(
        unread("carol").await,
        [UnreadCount { cid: "s".into(), unread: 3, last: Some(three.clone()), mentioned: true }]
    );
    // alice read the broadcast: what comes after is not hers.
    store.save_read(APP, "alice", "s", 1).await.expect("read");
    assert_eq!(unread("alice").await, []);
    // Only targeted messages: no last message for everyone, the recipient's own.
    append(store, targeted("quiet", 5, "sys", &["carol"])).await;
    assert_eq!(read(store, "quiet").await.last_message, None);
    let five = LastMessage { id: "mquiet-5".into(), ts: 5, from: "sys".into(), data: "to carol".into() };
    let carol = unread("carol").await;
    assert_eq!(carol.iter().find(|u| u.cid == "quiet").and_then(|u| u.last.clone()), Some(five));
    assert!(unread("alice").await.is_empty());
}

/// The edits a client catches up on at login (`patched_since`) leave out targeted
/// messages for others.
pub async fn edits_of_targeted_messages_reach_their_recipients_only(store: &dyn Store) {
    let mut svc = conv("s", &["alice", "bob"], 1);
    svc.kind = ConvKind::System;
    create(store, svc).await;
    append(store, msg("s", 1, "sys", "one")).await;
    append(store, targeted("s", 2, "sys", &["bob"])).await;
    store.patch_message(APP, "s", 1, "one edited".into(), None, 10).await.expect("patch");
    store.patch_message(APP, "s", 2, "two edited".into(), None, 11).await.expect("patch");
    let edits = |client: &'static str| async move {
        ids_of(store.patched_since(APP, client, 0, 10).await.expect("patched since"))
    };
    assert_eq!(edits("alice").await, ["ms-1"]);
    assert_eq!(edits("bob").await, ["ms-1", "ms-2"]);
    let bob = store.patched_since(APP, "bob", 0, 10).await.expect("patched since");
    assert_eq!(bob[1].recipients, Some(owned(&["bob"])));
}

/// Taking recipients off a targeted message one by one: the others keep it, the last
/// one's removal deletes it (its position stays taken, the last message stays). A
/// message for every member, a client it is not for and an absent position change
/// nothing.
pub async fn recipients_are_removed_one_at_a_time(store: &dyn Store) {
    let mut svc = conv("s", &["alice", "bob", "carol"], 1);
    svc.kind = ConvKind::System;
    create(store, svc).await;
    append(store, msg("s", 1, "sys", "one")).await;
    append(store, targeted("s", 2, "sys", &["bob", "carol"])).await;
    store.remove_recipient(APP, "s", 2, "bob").await.expect("remove bob");
    let m = store.message(APP, "s", "ms-2").await.expect("by id").expect("still stored");
    assert_eq!(m.recipients, Some(owned(&["carol"])));
    store.remove_recipient(APP, "s", 2, "alice").await.expect("not a recipient");
    store.remove_recipient(APP, "s", 1, "alice").await.expect("a message for everyone");
    store.remove_recipient(APP, "s", 9, "carol").await.expect("absent");
    assert_eq!(page(store, "s", range(None, None, false, 10)).await, [1, 2]);
    assert_eq!(store.message(APP, "s", "ms-1").await.expect("by id").and_then(|m| m.recipients), None);
    store.remove_recipient(APP, "s", 2, "carol").await.expect("remove the last");
    assert_eq!(page(store, "s", range(None, None, false, 10)).await, [1]);
    assert_eq!(read(store, "s").await.last_message.map(|m| m.ts), Some(1));
    let at = store.append_message(msg("s", 2, "sys", "again")).await.expect("append");
    assert_eq!((at.ts, at.prev_ts), (3, 2));
}

/// The outbox's length counts every stored call, of every app, due or not, and stops
/// at the cap; a settled call no longer counts.
pub async fn outbox_len_counts_every_call_up_to_the_cap(store: &dyn Store) {
    assert_eq!(store.outbox_len(100).await.expect("len"), 0);
    let mut other = call("x", "_clientOnline", 1);
    other.app = "other".into();
    store
        .outbox_put(vec![call("a", "_clientOnline", 10), call("b", "_clientOffline", 1_000_000), other])
        .await
        .expect("put");
    assert_eq!(store.outbox_len(100).await.expect("len"), 3);
    assert_eq!(store.outbox_len(2).await.expect("len"), 2, "capped");
    store.outbox_done(APP, "a").await.expect("done");
    assert_eq!(store.outbox_len(100).await.expect("len"), 2);
}

//! A Confab [`Store`] held in process memory: the engine's unit tests use it to run
//! without a socket or a file, and a server may run on it when nothing needs to
//! survive a restart.
//!
//! Every method applies its change under one lock before it returns, and the future it
//! returns is already complete. So writes are applied (and their futures complete) in
//! call order, as [`Store::append_message`] requires, and a delivery cursor saved with
//! [`Store::save_cursor`] is visible to the next read at once — which the contract
//! allows, since the SQLite store's reads see its buffered cursors too. "Durable" here
//! means "in this process": everything is lost when the store is dropped.
//!
//! The observable behaviour is that of the SQLite store, as written down in the
//! [`Store`] docs and checked by the `confab-store-tests` suite.

use confab_engine::ports::{
    Appended, ClientMark, ConvKind, ConversationRecord, HookCall, LastMessage, MarkKind, MemberCursor,
    MemberPosition, MessageRange, OutboxEntry, ScanFilter, Store, StoreError, StoreFuture, StoredMessage,
    UnreadCount,
};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

/// The in-memory store. Cheap to create; share it behind an `Arc`.
#[derive(Debug, Default)]
pub struct MemoryStore {
    apps: Mutex<HashMap<String, AppData>>,
}

/// A stored hook call: the entry plus the order it was stored in (ties of `due_at`).
#[derive(Debug)]
struct Queued {
    entry: OutboxEntry,
    seq: u64,
}

/// One app's data.
#[derive(Debug, Default)]
struct AppData {
    conversations: HashMap<String, Conversation>,
    /// Unique key → conversation id.
    unique: HashMap<String, String>,
    /// Client → the conversations it is a member of.
    memberships: HashMap<String, BTreeSet<String>>,
    /// Messages by conversation, kept apart from the conversations as SQLite keeps them.
    messages: HashMap<String, MessageLog>,
    /// Creation counter, to keep the scan order stable for equal creation times.
    created: u64,
    /// The hook outbox, by idempotency key.
    outbox: HashMap<String, Queued>,
    /// Marks by (conversation, kind, client): their `until`.
    marks: BTreeMap<(String, MarkKind, String), Option<i64>>,
}

#[derive(Debug)]
struct Conversation {
    id: String,
    kind: ConvKind,
    creator: String,
    unique_key: Option<String>,
    attrs: Map<String, Value>,
    created_at: i64,
    updated_at: i64,
    expires_at: Option<i64>,
    /// Position of the newest message, 0 for none (positions are > 0).
    last_ts: i64,
    /// Position of the last message: the newest for every member (a targeted message
    /// takes a position but never becomes it); the message itself is read from the log,
    /// so an edit of it shows.
    shown_ts: i64,
    /// In join order.
    members: Vec<Member>,
    blocked: BTreeSet<String>,
    order: u64,
    /// The last message, when it was deleted from the log (it stays the last).
    deleted_last: Option<LastMessage>,
}

#[derive(Debug)]
struct Member {
    client: String,
    cursor: i64,
    read: i64,
    role: Option<String>,
    muted: bool,
    shut_up: bool,
    /// When it became a member (ms).
    joined_at: i64,
}

impl Member {
    fn new(client: String, cursor: i64, joined_at: i64) -> Member {
        Member { client, cursor, read: 0, role: None, muted: false, shut_up: false, joined_at }
    }
}

#[derive(Debug, Default)]
struct MessageLog {
    by_ts: BTreeMap<i64, StoredMessage>,
    /// Message id → position (the first message stored with that id).
    by_id: HashMap<String, i64>,
    /// Positions of messages ever edited or recalled.
    patched: BTreeSet<i64>,
    /// (sender, dedupe token) → id of the message stored with them.
    by_dedupe: HashMap<(String, String), String>,
}

impl Conversation {
    fn member_mut(&mut self, client: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.client == client)
    }

    fn last_ts(&self) -> i64 {
        self.last_ts
    }
}

impl AppData {
    /// The conversation as the [`Store`] returns it.
    fn record(&self, app: &str, c: &Conversation) -> ConversationRecord {
        let pick = |keep: fn(&Member) -> bool| {
            c.members.iter().filter(|m| keep(m)).map(|m| m.client.clone()).collect::<Vec<_>>()
        };
        ConversationRecord {
            app: app.to_owned(),
            id: c.id.clone(),
            kind: c.kind,
            creator: c.creator.clone(),
            members: pick(|_| true),
            muted: pick(|m| m.muted),
            managers: pick(|m| m.role.as_deref() == Some("Manager")),
            shut_up: pick(|m| m.shut_up),
            blocked: c.blocked.iter().cloned().collect(),
            expires_at: c.expires_at,
            attrs: c.attrs.clone(),
            unique_key: c.unique_key.clone(),
            created_at: c.created_at,
            updated_at: c.updated_at,
            last_message: self.last_message(c),
        }
    }

    fn last_message(&self, c: &Conversation) -> Option<LastMessage> {
        if c.shown_ts <= 0 {
            return None;
        }
        match self.messages.get(&c.id).and_then(|log| log.by_ts.get(&c.shown_ts)) {
            Some(m) => Some(last_of(m)),
            None => c.deleted_last.clone().filter(|m| m.ts == c.shown_ts),
        }
    }

    /// The newest message `client` may see: a targeted message for it newer than the
    /// conversation's last message, or that one.
    fn last_for(&self, c: &Conversation, client: &str) -> Option<LastMessage> {
        let newer = self.messages.get(&c.id).and_then(|log| {
            let after = log.by_ts.range((Bound::Excluded(c.shown_ts), Bound::Unbounded));
            after.rev().map(|(_, m)| m).find(|m| m.is_for(client))
        });
        newer.map(last_of).or_else(|| self.last_message(c))
    }

    fn conversation_mut(&mut self, cid: &str) -> Result<&mut Conversation, StoreError> {
        self.conversations.get_mut(cid).ok_or_else(|| missing(cid))
    }

    /// Removes `client` as a member of `cid`, if it is one.
    fn remove_member(&mut self, cid: &str, client: &str) {
        let Some(c) = self.conversations.get_mut(cid) else { return };
        c.members.retain(|m| m.client != client);
        if let Some(set) = self.memberships.get_mut(client) {
            set.remove(cid);
            if set.is_empty() {
                self.memberships.remove(client);
            }
        }
    }

    /// Deletes the message at `ts` of log `cid`, if any. The last message stays what it
    /// was, and its position is not used again.
    fn delete_at(&mut self, cid: &str, ts: i64) {
        let Some(log) = self.messages.get_mut(cid) else { return };
        let Some(m) = log.by_ts.remove(&ts) else { return };
        if log.by_id.get(&m.id) == Some(&ts) {
            log.by_id.remove(&m.id);
        }
        log.patched.remove(&ts);
        if let Some(c) = self.conversations.get_mut(cid)
            && c.shown_ts == ts
        {
            c.deleted_last = Some(LastMessage { id: m.id, ts: m.ts, from: m.from, data: m.data });
        }
    }

    fn member_cids(&self, client: &str) -> impl Iterator<Item = &String> {
        self.memberships.get(client).into_iter().flatten()
    }
}

fn last_of(m: &StoredMessage) -> LastMessage {
    LastMessage { id: m.id.clone(), ts: m.ts, from: m.from.clone(), data: m.data.clone() }
}

fn missing(cid: &str) -> StoreError {
    StoreError::Backend(format!("no conversation {cid}"))
}

/// Whether a body is a JSON object whose `_lctype` is the number `lctype` (compared by
/// value: `1.0` is `1`).
fn has_lctype(body: &str, lctype: i64) -> bool {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(body) else { return false };
    match map.get("_lctype") {
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) => v == lctype,
            None => n.as_f64() == Some(lctype as f64),
        },
        _ => false,
    }
}

fn bound((ts, inclusive): (i64, bool)) -> Bound<i64> {
    if inclusive { Bound::Included(ts) } else { Bound::Excluded(ts) }
}

/// Stores hook calls, each in its app's outbox, keeping the first of a key.
fn put_calls(apps: &mut HashMap<String, AppData>, notify: Vec<HookCall>) {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    for call in notify {
        let a = apps.entry(call.app.clone()).or_default();
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        a.outbox.entry(call.key.clone()).or_insert_with(|| Queued {
            entry: OutboxEntry { due_at: call.created_at, attempts: 0, call },
            seq,
        });
    }
}

fn done<'a, T: Send + 'a>(result: Result<T, StoreError>) -> StoreFuture<'a, T> {
    Box::pin(std::future::ready(result))
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, AppData>> {
        // Every change is made whole under the lock, so a panic elsewhere while it was
        // held leaves nothing half-written.
        self.apps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the app's data (created empty if needed) under the lock.
    fn with_app<T>(
        &self,
        app: &str,
        f: impl FnOnce(&mut AppData) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut apps = self.lock();
        f(apps.entry(app.to_owned()).or_default())
    }

    /// Replaces a message's body (and its binary flag, when `binary` is set).
    fn patch(
        &self,
        app: &str,
        cid: &str,
        ts: i64,
        data: String,
        binary: Option<bool>,
        patched_at: i64,
    ) -> Result<(), StoreError> {
        self.with_app(app, |a| {
            let log = a.messages.get_mut(cid);
            let Some((log, m)) = log.and_then(|l| l.by_ts.get_mut(&ts).map(|m| (&mut l.patched, m))) else {
                return Err(StoreError::Backend(format!("no message at {ts} in {cid}")));
            };
            m.data = data;
            if let Some(binary) = binary {
                m.binary = binary;
            }
            m.patched_at = Some(patched_at);
            log.insert(ts);
            Ok(())
        })
    }

    /// Runs `f` on the app's data, then stores `notify` in the outbox, all under one
    /// lock: both or (when `f` fails) neither.
    fn with_app_notify<T>(
        &self,
        app: &str,
        notify: Vec<HookCall>,
        f: impl FnOnce(&mut AppData) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut apps = self.lock();
        let out = f(apps.entry(app.to_owned()).or_default())?;
        put_calls(&mut apps, notify);
        Ok(out)
    }

    /// A write on one conversation, as an already-complete future.
    fn update<'a>(
        &self,
        app: &str,
        cid: &str,
        f: impl FnOnce(&mut Conversation) -> Result<(), StoreError>,
    ) -> StoreFuture<'a, ()> {
        done(self.with_app(app, |a| f(a.conversation_mut(cid)?)))
    }

    /// Sets one flag of the members among `clients`.
    fn set_member_flag<'a>(
        &self,
        app: &str,
        cid: &str,
        clients: &[String],
        set: impl Fn(&mut Member),
    ) -> StoreFuture<'a, ()> {
        self.update(app, cid, |c| {
            for client in clients {
                if let Some(m) = c.member_mut(client) {
                    set(m);
                }
            }
            Ok(())
        })
    }
}

impl Store for MemoryStore {
    fn create_conversation_notify(
        &self,
        record: ConversationRecord,
        notify: Vec<HookCall>,
    ) -> StoreFuture<'_, ()> {
        done(self.with_app_notify(&record.app.clone(), notify, |a| {
            if a.conversations.contains_key(&record.id) {
                return Err(StoreError::Backend(format!("conversation {} exists", record.id)));
            }
            if let Some(key) = &record.unique_key
                && a.unique.contains_key(key)
            {
                return Err(StoreError::Backend(format!("unique key {key} is taken")));
            }
            let mut members: Vec<Member> = Vec::with_capacity(record.members.len());
            for client in record.members {
                if !members.iter().any(|m| m.client == client) {
                    a.memberships.entry(client.clone()).or_default().insert(record.id.clone());
                    members.push(Member::new(client, 0, record.created_at));
                }
            }
            if let Some(key) = &record.unique_key {
                a.unique.insert(key.clone(), record.id.clone());
            }
            a.created += 1;
            let conversation = Conversation {
                id: record.id.clone(),
                kind: record.kind,
                creator: record.creator,
                unique_key: record.unique_key,
                attrs: record.attrs,
                created_at: record.created_at,
                updated_at: record.updated_at,
                expires_at: record.expires_at,
                last_ts: 0,
                shown_ts: 0,
                members,
                blocked: BTreeSet::new(),
                order: a.created,
                deleted_last: None,
            };
            a.conversations.insert(record.id, conversation);
            Ok(())
        }))
    }

    fn conversation<'a>(&'a self, app: &'a str, cid: &'a str) -> StoreFuture<'a, Option<ConversationRecord>> {
        done(self.with_app(app, |a| Ok(a.conversations.get(cid).map(|c| a.record(app, c)))))
    }

    fn find_unique<'a>(&'a self, app: &'a str, key: &'a str) -> StoreFuture<'a, Option<ConversationRecord>> {
        done(self.with_app(app, |a| {
            Ok(a.unique.get(key).and_then(|cid| a.conversations.get(cid)).map(|c| a.record(app, c)))
        }))
    }

    fn scan_conversations<'a>(
        &'a self,
        app: &'a str,
        filter: ScanFilter,
    ) -> StoreFuture<'a, Vec<ConversationRecord>> {
        done(self.with_app(app, |a| {
            // Candidates from the narrowest index the filter allows, then every condition.
            let candidates: Vec<&Conversation> = match (&filter.ids, &filter.member) {
                (Some(ids), _) => {
                    let unique: BTreeSet<&String> = ids.iter().collect();
                    unique.into_iter().filter_map(|id| a.conversations.get(id)).collect()
                }
                (None, Some(member)) => {
                    a.member_cids(member).filter_map(|cid| a.conversations.get(cid)).collect()
                }
                (None, None) => a.conversations.values().collect(),
            };
            let mut found: Vec<&Conversation> = candidates
                .into_iter()
                .filter(|c| filter.ids.as_ref().is_none_or(|ids| ids.contains(&c.id)))
                .filter(|c| filter.member.as_ref().is_none_or(|m| c.members.iter().any(|x| &x.client == m)))
                .filter(|c| filter.kind.is_none_or(|k| c.kind == k))
                .collect();
            found.sort_by_key(|c| (c.created_at, c.order));
            Ok(found.into_iter().take(filter.max.saturating_add(1)).map(|c| a.record(app, c)).collect())
        }))
    }

    fn conversations_after<'a>(
        &'a self,
        app: &'a str,
        after: Option<&'a str>,
        kind: Option<ConvKind>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<ConversationRecord>> {
        done(self.with_app(app, |a| {
            let mut found: Vec<&Conversation> = a
                .conversations
                .values()
                .filter(|c| after.is_none_or(|after| c.id.as_str() > after))
                .filter(|c| kind.is_none_or(|k| c.kind == k))
                .collect();
            found.sort_by(|x, y| x.id.cmp(&y.id));
            Ok(found.into_iter().take(limit).map(|c| a.record(app, c)).collect())
        }))
    }

    fn set_attributes<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        attrs: Map<String, Value>,
        updated_at: i64,
    ) -> StoreFuture<'a, ()> {
        self.update(app, cid, |c| {
            c.attrs = attrs;
            c.updated_at = updated_at;
            Ok(())
        })
    }

    fn add_members_notify<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        members: Vec<String>,
        updated_at: i64,
        notify: Vec<HookCall>,
    ) -> StoreFuture<'a, ()> {
        done(self.with_app_notify(app, notify, |a| {
            let c = a.conversations.get_mut(cid).ok_or_else(|| missing(cid))?;
            let last_ts = c.last_ts();
            for client in members {
                if !c.members.iter().any(|m| m.client == client) {
                    a.memberships.entry(client.clone()).or_default().insert(cid.to_owned());
                    c.members.push(Member::new(client, last_ts, updated_at));
                }
            }
            c.updated_at = updated_at;
            Ok(())
        }))
    }

    fn remove_members_notify<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        members: Vec<String>,
        updated_at: i64,
        notify: Vec<HookCall>,
    ) -> StoreFuture<'a, ()> {
        done(self.with_app_notify(app, notify, |a| {
            a.conversation_mut(cid)?.updated_at = updated_at;
            for client in &members {
                a.remove_member(cid, client);
            }
            Ok(())
        }))
    }

    fn append_message_notify(
        &self,
        mut message: StoredMessage,
        mut notify: Vec<HookCall>,
        dedupe: Option<String>,
    ) -> StoreFuture<'static, Appended> {
        let mut apps = self.lock();
        let a = apps.entry(message.app.clone()).or_default();
        let log = a.messages.entry(message.cid.clone()).or_default();
        let dedupe = dedupe.map(|token| (message.from.clone(), token));
        // A re-send of a message still stored: its original (a deleted one is gone, and
        // the re-send is a new message, as in the other stores).
        if let Some(original) = dedupe.as_ref().and_then(|key| log.by_dedupe.get(key))
            && let Some(ts) = log.by_id.get(original)
            && log.by_ts.get(ts).is_some_and(|m| &m.id == original)
        {
            return done(Ok(Appended::resent(original.clone(), *ts)));
        }
        // The newest position of the log (a system conversation's inbox has no
        // conversation of its own to keep it).
        let prev_ts = log.by_ts.last_key_value().map_or(0, |(ts, _)| *ts);
        // A deleted newest message keeps its position taken.
        let prev_ts = prev_ts.max(a.conversations.get(&message.cid).map_or(0, |c| c.last_ts));
        let proposed = message.ts;
        message.ts = message.ts.max(prev_ts + 1);
        log.by_id.entry(message.id.clone()).or_insert(message.ts);
        if let Some(key) = dedupe {
            log.by_dedupe.insert(key, message.id.clone());
        }
        if let Some(c) = a.conversations.get_mut(&message.cid)
            && message.ts > c.last_ts()
        {
            c.last_ts = message.ts;
            if message.recipients.is_none() {
                c.shown_ts = message.ts;
            }
        }
        let appended = Appended::new(message.ts, prev_ts);
        HookCall::restamp(&mut notify, proposed, message.ts);
        log.by_ts.insert(message.ts, message);
        put_calls(&mut apps, notify);
        done(Ok(appended))
    }

    fn messages<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        range: MessageRange,
    ) -> StoreFuture<'a, Vec<StoredMessage>> {
        done(self.with_app(app, |a| {
            let Some(log) = a.messages.get(cid) else { return Ok(Vec::new()) };
            let lower = range.after.map_or(Bound::Unbounded, bound);
            let upper = range.before.map_or(Bound::Unbounded, bound);
            // An empty or inverted range: BTreeMap::range would panic on some of these.
            let empty = match (lower, upper) {
                (Bound::Included(l), Bound::Included(u)) => l > u,
                (Bound::Included(l) | Bound::Excluded(l), Bound::Included(u) | Bound::Excluded(u)) => l >= u,
                _ => false,
            };
            if empty || range.limit == 0 {
                return Ok(Vec::new());
            }
            let matches = |m: &&StoredMessage| {
                range.lctype.is_none_or(|t| has_lctype(&m.data, t))
                    && range.visible_to.as_ref().is_none_or(|client| m.is_for(client))
            };
            let window = log.by_ts.range((lower, upper)).map(|(_, m)| m);
            let mut page: Vec<StoredMessage> = if range.newest_first {
                window.rev().filter(matches).take(range.limit).cloned().collect()
            } else {
                window.filter(matches).take(range.limit).cloned().collect()
            };
            if range.newest_first {
                page.reverse();
            }
            Ok(page)
        }))
    }

    fn member_cursors<'a>(&'a self, app: &'a str, client: &'a str) -> StoreFuture<'a, Vec<MemberCursor>> {
        done(self.with_app(app, |a| {
            Ok(a.member_cids(client)
                .filter_map(|cid| a.conversations.get(cid))
                .filter_map(|c| {
                    let m = c.members.iter().find(|m| m.client == client)?;
                    Some(MemberCursor { cid: c.id.clone(), cursor: m.cursor, last_ts: c.last_ts() })
                })
                .collect())
        }))
    }

    fn save_cursor(&self, app: &str, client: &str, cid: &str, ts: i64) {
        // Nothing to report to: a cursor for a missing conversation changes nothing.
        let _ = self.with_app(app, |a| {
            if let Some(m) = a.conversations.get_mut(cid).and_then(|c| c.member_mut(client)) {
                m.cursor = m.cursor.max(ts);
            }
            Ok(())
        });
    }

    fn save_read<'a>(&'a self, app: &'a str, client: &'a str, cid: &'a str, ts: i64) -> StoreFuture<'a, ()> {
        self.set_member_flag(app, cid, &[client.to_owned()], |m| m.read = m.read.max(ts))
    }

    fn message<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        id: &'a str,
    ) -> StoreFuture<'a, Option<StoredMessage>> {
        done(self.with_app(app, |a| {
            Ok(a.messages
                .get(cid)
                .and_then(|log| log.by_id.get(id).and_then(|ts| log.by_ts.get(ts)))
                .cloned())
        }))
    }

    fn patch_message<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        ts: i64,
        data: String,
        binary: Option<bool>,
        patched_at: i64,
    ) -> StoreFuture<'a, ()> {
        done(self.patch(app, cid, ts, data, binary, patched_at))
    }

    fn set_role<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        client: &'a str,
        role: &'a str,
    ) -> StoreFuture<'a, ()> {
        self.set_member_flag(app, cid, &[client.to_owned()], |m| m.role = Some(role.to_owned()))
    }

    fn set_shut_up<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        clients: Vec<String>,
        on: bool,
    ) -> StoreFuture<'a, ()> {
        self.set_member_flag(app, cid, &clients, |m| m.shut_up = on)
    }

    fn set_blocked<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        clients: Vec<String>,
        on: bool,
    ) -> StoreFuture<'a, ()> {
        done(self.with_app(app, |a| {
            let c = a.conversation_mut(cid)?;
            for client in &clients {
                if on {
                    c.blocked.insert(client.clone());
                } else {
                    c.blocked.remove(client);
                }
            }
            if on {
                for client in &clients {
                    a.remove_member(cid, client);
                }
            }
            Ok(())
        }))
    }

    fn patched_since<'a>(
        &'a self,
        app: &'a str,
        client: &'a str,
        since: i64,
        limit: usize,
    ) -> StoreFuture<'a, Vec<StoredMessage>> {
        done(self.with_app(app, |a| {
            let mut changes: Vec<&StoredMessage> = a
                .member_cids(client)
                .filter_map(|cid| a.messages.get(cid))
                .flat_map(|log| log.patched.iter().filter_map(|ts| log.by_ts.get(ts)))
                .filter(|m| m.patched_at.is_some_and(|at| at > since) && m.is_for(client))
                .collect();
            changes.sort_by(|x, y| (x.patched_at, &x.cid, x.ts).cmp(&(y.patched_at, &y.cid, y.ts)));
            Ok(changes.into_iter().take(limit).cloned().collect())
        }))
    }

    fn set_muted<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        client: &'a str,
        muted: bool,
    ) -> StoreFuture<'a, ()> {
        self.set_member_flag(app, cid, &[client.to_owned()], |m| m.muted = muted)
    }

    fn set_marks<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        kind: MarkKind,
        clients: Vec<String>,
        on: bool,
        until: Option<i64>,
    ) -> StoreFuture<'a, ()> {
        done(self.with_app(app, |a| {
            for client in clients {
                let key = (cid.to_owned(), kind, client);
                if on {
                    a.marks.insert(key, until);
                } else {
                    a.marks.remove(&key);
                }
            }
            Ok(())
        }))
    }

    fn marks<'a>(&'a self, app: &'a str, cid: &'a str) -> StoreFuture<'a, Vec<ClientMark>> {
        done(self.with_app(app, |a| {
            Ok(a.marks
                .iter()
                .filter(|((c, _, _), _)| c == cid)
                .map(|((_, kind, client), until)| ClientMark {
                    client: client.clone(),
                    kind: *kind,
                    until: *until,
                })
                .collect())
        }))
    }

    fn client_marks<'a>(
        &'a self,
        app: &'a str,
        client: &'a str,
        kind: MarkKind,
        after: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<String>> {
        done(self.with_app(app, |a| {
            let mut cids: Vec<String> = a
                .marks
                .keys()
                .filter(|(c, k, who)| {
                    *k == kind && who == client && after.is_none_or(|after| c.as_str() > after)
                })
                .map(|(c, _, _)| c.clone())
                .collect();
            cids.sort();
            cids.truncate(limit);
            Ok(cids)
        }))
    }

    fn count_client_marks<'a>(
        &'a self,
        app: &'a str,
        client: &'a str,
        kind: MarkKind,
    ) -> StoreFuture<'a, usize> {
        done(
            self.with_app(app, |a| {
                Ok(a.marks.keys().filter(|(_, k, who)| *k == kind && who == client).count())
            }),
        )
    }

    fn member_positions<'a>(&'a self, app: &'a str, cid: &'a str) -> StoreFuture<'a, Vec<MemberPosition>> {
        done(self.with_app(app, |a| {
            Ok(a.conversations
                .get(cid)
                .map(|c| {
                    c.members
                        .iter()
                        .map(|m| MemberPosition {
                            client: m.client.clone(),
                            acked_upto: m.cursor,
                            read_upto: m.read,
                        })
                        .collect()
                })
                .unwrap_or_default())
        }))
    }

    fn delete_conversation<'a>(&'a self, app: &'a str, cid: &'a str) -> StoreFuture<'a, ()> {
        done(self.with_app(app, |a| {
            let Some(c) = a.conversations.remove(cid) else { return Ok(()) };
            if let Some(key) = &c.unique_key
                && a.unique.get(key).is_some_and(|holder| holder == cid)
            {
                a.unique.remove(key);
            }
            for member in &c.members {
                if let Some(set) = a.memberships.get_mut(&member.client) {
                    set.remove(cid);
                    if set.is_empty() {
                        a.memberships.remove(&member.client);
                    }
                }
            }
            a.messages.remove(cid);
            a.marks.retain(|(c, _, _), _| c != cid);
            let side = format!("{cid}:");
            a.messages.retain(|log, _| !log.starts_with(&side));
            Ok(())
        }))
    }

    fn delete_message<'a>(&'a self, app: &'a str, cid: &'a str, ts: i64) -> StoreFuture<'a, ()> {
        done(self.with_app(app, |a| {
            a.delete_at(cid, ts);
            Ok(())
        }))
    }

    fn remove_recipient<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        ts: i64,
        client: &'a str,
    ) -> StoreFuture<'a, ()> {
        done(self.with_app(app, |a| {
            let Some(m) = a.messages.get_mut(cid).and_then(|log| log.by_ts.get_mut(&ts)) else {
                return Ok(());
            };
            let Some(to) = m.recipients.as_mut() else { return Ok(()) };
            to.retain(|c| c != client);
            if to.is_empty() {
                a.delete_at(cid, ts);
            }
            Ok(())
        }))
    }

    fn app_messages<'a>(
        &'a self,
        app: &'a str,
        from: Option<&'a str>,
        range: MessageRange,
    ) -> StoreFuture<'a, Vec<StoredMessage>> {
        done(self.with_app(app, |a| {
            let inside = |ts: i64| {
                range.after.is_none_or(|(t, inc)| if inc { ts >= t } else { ts > t })
                    && range.before.is_none_or(|(t, inc)| if inc { ts <= t } else { ts < t })
            };
            let mut all: Vec<&StoredMessage> = a
                .messages
                .iter()
                .filter(|(cid, _)| a.conversations.contains_key(*cid))
                .flat_map(|(_, log)| log.by_ts.values())
                .filter(|m| inside(m.ts) && from.is_none_or(|f| m.from == f))
                .collect();
            all.sort_by(|x, y| (x.ts, &x.cid).cmp(&(y.ts, &y.cid)));
            let page: Vec<StoredMessage> = if range.newest_first {
                let skip = all.len().saturating_sub(range.limit);
                all.into_iter().skip(skip).cloned().collect()
            } else {
                all.into_iter().take(range.limit).cloned().collect()
            };
            Ok(page)
        }))
    }

    fn joined_at<'a>(&'a self, app: &'a str, cid: &'a str, client: &'a str) -> StoreFuture<'a, Option<i64>> {
        done(self.with_app(app, |a| {
            Ok(a.conversations
                .get(cid)
                .and_then(|c| c.members.iter().find(|m| m.client == client))
                .map(|m| m.joined_at))
        }))
    }

    fn release_unique<'a>(&'a self, app: &'a str, cid: &'a str) -> StoreFuture<'a, ()> {
        done(self.with_app(app, |a| {
            let c = a.conversation_mut(cid)?;
            if let Some(key) = c.unique_key.take()
                && a.unique.get(&key).is_some_and(|holder| holder == cid)
            {
                a.unique.remove(&key);
            }
            Ok(())
        }))
    }

    fn unread<'a>(&'a self, app: &'a str, client: &'a str, max: usize) -> StoreFuture<'a, Vec<UnreadCount>> {
        done(self.with_app(app, |a| {
            let mut candidates: Vec<(&Conversation, i64)> = a
                .member_cids(client)
                .filter_map(|cid| a.conversations.get(cid))
                .filter(|c| c.kind != ConvKind::Transient)
                .filter_map(|c| {
                    let read = c.members.iter().find(|m| m.client == client)?.read;
                    (c.last_ts() > read).then_some((c, read))
                })
                .collect();
            candidates.sort_by(|x, y| y.0.last_ts().cmp(&x.0.last_ts()).then_with(|| x.0.id.cmp(&y.0.id)));
            let mut unread = Vec::new();
            for (c, read) in candidates {
                if unread.len() >= max {
                    break;
                }
                let Some(log) = a.messages.get(&c.id) else { continue };
                let (mut count, mut mentioned) = (0, false);
                for m in log.by_ts.range((Bound::Excluded(read), Bound::Unbounded)).map(|(_, m)| m) {
                    if m.from != client && m.is_for(client) {
                        count += 1;
                        mentioned |= m.mentions.includes(client);
                    }
                }
                if count > 0 {
                    unread.push(UnreadCount {
                        cid: c.id.clone(),
                        unread: count,
                        last: a.last_for(c, client),
                        mentioned,
                    });
                }
            }
            Ok(unread)
        }))
    }

    fn outbox_put(&self, notify: Vec<HookCall>) -> StoreFuture<'static, ()> {
        put_calls(&mut self.lock(), notify);
        done(Ok(()))
    }

    fn outbox_due(&self, now: i64, limit: usize) -> StoreFuture<'_, Vec<OutboxEntry>> {
        let apps = self.lock();
        let mut due: Vec<&Queued> =
            apps.values().flat_map(|a| a.outbox.values()).filter(|q| q.entry.due_at <= now).collect();
        due.sort_by_key(|q| (q.entry.due_at, q.seq));
        done(Ok(due.into_iter().take(limit).map(|q| q.entry.clone()).collect()))
    }

    fn outbox_len(&self, max: u64) -> StoreFuture<'_, u64> {
        let n: usize = self.lock().values().map(|a| a.outbox.len()).sum();
        done(Ok((n as u64).min(max)))
    }

    fn outbox_done<'a>(&'a self, app: &'a str, key: &'a str) -> StoreFuture<'a, ()> {
        if let Some(a) = self.lock().get_mut(app) {
            a.outbox.remove(key);
        }
        done(Ok(()))
    }

    fn outbox_retry<'a>(
        &'a self,
        app: &'a str,
        key: &'a str,
        attempts: u32,
        due_at: i64,
    ) -> StoreFuture<'a, ()> {
        if let Some(q) = self.lock().get_mut(app).and_then(|a| a.outbox.get_mut(key)) {
            q.entry.attempts = attempts;
            q.entry.due_at = due_at;
        }
        done(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::MemoryStore;
    use confab_engine::ports::{ConvKind, ConversationRecord, MessageRange, Store, StoredMessage};
    use std::future::Future;
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};

    confab_store_tests::store_conformance_tests!(MemoryStore::new());

    /// Polls a future once: the memory store's are complete when returned.
    fn ready<T>(f: impl Future<Output = T>) -> T {
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("the memory store's futures are complete when returned"),
        }
    }

    #[test]
    fn writes_apply_before_the_call_returns() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let record = ConversationRecord {
            app: "a".into(),
            id: "c".into(),
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
        };
        ready(store.create_conversation(record)).unwrap();
        // Not polled: the appends are in the store already, in call order.
        let pending: Vec<_> = (1..=3)
            .map(|ts| {
                store.append_message(StoredMessage {
                    app: "a".into(),
                    cid: "c".into(),
                    id: format!("m{ts}"),
                    ts,
                    from: "alice".into(),
                    data: format!("{ts}"),
                    receipt: false,
                    patched_at: None,
                    binary: false,
                    mentions: Default::default(),
                    recipients: None,
                })
            })
            .collect();
        let all = ready(store.messages("a", "c", MessageRange { limit: 10, ..Default::default() })).unwrap();
        assert_eq!(all.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["m1", "m2", "m3"]);
        for p in pending {
            ready(p).unwrap();
        }
        store.save_cursor("a", "bob", "c", 2);
        assert_eq!(ready(store.member_positions("a", "c")).unwrap()[1].acked_upto, 2);
    }
}

//! In-memory state of a conversation: members (or a chat room's online sessions) for
//! fan-out, and the sequencer that keeps one order per conversation from timestamp
//! assignment through commit to delivery. The store stays the source of truth; this is
//! loaded from it on first use and changed only together with it.

use crate::ports::{Appended, ClientMark, ConvKind, ConversationRecord, MarkKind, StoreError, StoredMessage};
use crate::session::Session;
use confab_types::time::iso8601;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

/// Attribute keys the server owns; clients cannot set them.
pub const RESERVED_KEYS: &[&str] = &[
    "objectId",
    "c",
    "m",
    "mu",
    "tr",
    "sys",
    "unique",
    "uniqueId",
    "createdAt",
    "updatedAt",
    "lm",
    "msg",
    "msg_from",
    "msg_mid",
    "msg_timestamp",
    "bin",
    "conv_type",
    "ttl",
    "temp",
];

/// A message waiting for its commit, in sequence order.
#[derive(Debug)]
pub(crate) struct PendingSend {
    pub message: StoredMessage,
    pub origin: Arc<Session>,
    pub serial: Option<i32>,
    pub result: Option<Result<Appended, StoreError>>,
    /// Re-sends of the same message (same dedupe token) waiting for the same ack.
    pub also_ack: Vec<(Arc<Session>, Option<i32>)>,
    /// The dedupe key, to record the outcome under.
    pub dedupe_key: Option<String>,
    /// Recipients chosen by the app's `_messageReceived` hook (`toPeers`), if it chose,
    /// or those of a targeted message (also stored with it).
    pub to: Option<std::collections::HashSet<String>>,
}

/// What the server remembers of a recently sent message by its dedupe token.
#[derive(Debug, Clone)]
pub(crate) enum Recent {
    /// Waiting for its commit, at this sequence number.
    Pending(u64),
    /// Stored with this id and timestamp.
    Stored { uid: String, t: i64 },
}

/// Dedupe tokens remembered per conversation.
pub(crate) const RECENT_TOKENS: usize = 1024;

#[derive(Debug, Default)]
pub(crate) struct ConvState {
    pub members: HashSet<String>,
    /// Members with the `Manager` role.
    pub managers: HashSet<String>,
    /// Members who may not send.
    pub shut_up: HashSet<String>,
    /// Clients who may not join.
    pub blocked: HashSet<String>,
    /// Temporarily silenced clients, until when (ms); stored as marks.
    pub silenced: HashMap<String, i64>,
    /// Clients that put this conversation on their own blacklist: nobody else adds them.
    pub blocked_by: HashSet<String>,
    /// Chat rooms: the sessions currently in the room.
    pub room: Vec<Arc<Session>>,
    /// Last timestamp handed out; the next is strictly greater.
    pub last_assigned_ts: i64,
    /// The same for a system conversation's inbox (subscribers' messages to the app).
    pub last_inbox_ts: i64,
    /// Position of the last message delivered (the predecessor of the next).
    pub last_delivered_ts: i64,
    pub next_seq: u64,
    pub deliver_seq: u64,
    pub pending: BTreeMap<u64, PendingSend>,
    /// Recent dedupe tokens (`sender\u{1f}token`), oldest first in `recent_order`.
    pub recent: HashMap<String, Recent>,
    pub recent_order: VecDeque<String>,
}

impl ConvState {
    pub(crate) fn remember(&mut self, key: String, value: Recent) {
        if self.recent.insert(key.clone(), value).is_none() {
            self.recent_order.push_back(key);
            while self.recent_order.len() > RECENT_TOKENS {
                if let Some(old) = self.recent_order.pop_front() {
                    self.recent.remove(&old);
                }
            }
        }
    }
}

/// A cached conversation.
#[derive(Debug)]
pub struct Conv {
    /// Conversation id.
    pub cid: String,
    /// Kind.
    pub kind: ConvKind,
    /// When a temporary conversation expires (ms).
    pub expires_at: Option<i64>,
    /// The creator, who owns it.
    pub creator: String,
    pub(crate) state: Mutex<ConvState>,
}

impl Conv {
    pub(crate) fn from_record(record: &ConversationRecord) -> Conv {
        let last = record.last_message.as_ref().map_or(0, |m| m.ts);
        Conv {
            cid: record.id.clone(),
            kind: record.kind,
            expires_at: record.expires_at,
            creator: record.creator.clone(),
            state: Mutex::new(ConvState {
                members: record.members.iter().cloned().collect(),
                managers: record.managers.iter().cloned().collect(),
                shut_up: record.shut_up.iter().cloned().collect(),
                blocked: record.blocked.iter().cloned().collect(),
                last_assigned_ts: last,
                last_delivered_ts: last,
                ..ConvState::default()
            }),
        }
    }

    /// Takes the stored marks ([`crate::ports::Store::marks`]) as the conversation's
    /// silences, the clients that blocked it, and a chat room's shut-up clients and
    /// managers (added to what the record gave), replacing what marks gave before.
    pub(crate) fn apply_marks(&self, marks: &[ClientMark]) {
        let mut state = self.state();
        state.silenced.clear();
        state.blocked_by.clear();
        let room = self.kind == ConvKind::Transient;
        if room {
            state.shut_up.clear();
            state.managers.clear();
        }
        for m in marks {
            let client = m.client.clone();
            match m.kind {
                MarkKind::Silenced => {
                    state.silenced.insert(client, m.until.unwrap_or(i64::MAX));
                }
                MarkKind::ClientBlocked => {
                    state.blocked_by.insert(client);
                }
                MarkKind::RoomShutUp if room => {
                    state.shut_up.insert(client);
                }
                MarkKind::RoomManager if room => {
                    state.managers.insert(client);
                }
                MarkKind::RoomShutUp | MarkKind::RoomManager => {}
            }
        }
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, ConvState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `client` is a member (chat rooms: in the room now).
    pub fn has_member(&self, client: &str) -> bool {
        let state = self.state();
        match self.kind {
            ConvKind::Transient => state.room.iter().any(|s| &*s.client_id == client),
            _ => state.members.contains(client),
        }
    }

    /// Distinct client ids in a chat room now.
    pub(crate) fn room_clients(&self) -> Vec<String> {
        let state = self.state();
        let mut seen = HashSet::new();
        state
            .room
            .iter()
            .filter(|s| seen.insert(s.client_id.clone()))
            .map(|s| s.client_id.to_string())
            .collect()
    }
}

/// The document a query is evaluated on: dates as epoch milliseconds.
pub(crate) fn query_doc(
    record: &ConversationRecord,
    room_members: Option<Vec<String>>,
) -> Map<String, Value> {
    let mut doc = Map::new();
    for (k, v) in &record.attrs {
        doc.insert(k.clone(), v.clone());
    }
    doc.insert("objectId".into(), json!(record.id));
    doc.insert("c".into(), json!(record.creator));
    doc.insert("m".into(), json!(room_members.unwrap_or_else(|| record.members.clone())));
    doc.insert("mu".into(), json!(record.muted));
    doc.insert("tr".into(), json!(record.kind == ConvKind::Transient));
    if record.kind == ConvKind::System {
        doc.insert("sys".into(), json!(true));
    }
    if record.kind == ConvKind::Temporary {
        doc.insert("temp".into(), json!(true));
    }
    doc.insert("unique".into(), json!(record.unique_key.is_some()));
    if record.kind == ConvKind::Normal
        && let Some(key) = &record.unique_key
    {
        doc.insert("uniqueId".into(), json!(unique_id(key)));
    }
    doc.insert("conv_type".into(), json!(record.kind as i64));
    doc.insert("createdAt".into(), json!(record.created_at));
    doc.insert("updatedAt".into(), json!(record.updated_at));
    if let Some(last) = &record.last_message {
        doc.insert("lm".into(), json!(last.ts));
    }
    doc
}

/// The record as a client sees it: dates in LeanStorage form; members hidden when
/// `compact` or when the viewer may not see them; last message when asked for (the
/// caller passes `false` for viewers who may not see it).
pub(crate) fn result_json(
    record: &ConversationRecord,
    mut doc: Map<String, Value>,
    show_members: bool,
    with_last_message: bool,
) -> Value {
    if !show_members {
        doc.remove("m");
        doc.remove("mu");
    }
    doc.insert("createdAt".into(), json!(iso8601(record.created_at)));
    doc.insert("updatedAt".into(), json!(iso8601(record.updated_at)));
    if let Some(last) = &record.last_message {
        doc.insert("lm".into(), json!({"__type": "Date", "iso": iso8601(last.ts)}));
        if with_last_message {
            doc.insert("msg".into(), json!(last.data));
            doc.insert("msg_from".into(), json!(last.from));
            doc.insert("msg_mid".into(), json!(last.id));
            doc.insert("msg_timestamp".into(), json!(last.ts));
        }
    }
    Value::Object(doc)
}

/// Applies an attribute update: plain keys replace, dotted keys set nested values.
pub(crate) fn apply_attributes(
    attrs: &mut Map<String, Value>,
    update: &Map<String, Value>,
) -> Result<(), String> {
    for (key, value) in update {
        let mut parts = key.split('.');
        let Some(first) = parts.next().filter(|p| !p.is_empty()) else {
            return Err(format!("invalid attribute key {key:?}"));
        };
        if RESERVED_KEYS.contains(&first) {
            return Err(format!("attribute {first:?} is reserved"));
        }
        let rest: Vec<&str> = parts.collect();
        if rest.iter().any(|p| p.is_empty()) {
            return Err(format!("invalid attribute key {key:?}"));
        }
        if rest.is_empty() {
            attrs.insert(first.to_owned(), value.clone());
            continue;
        }
        let mut cur = attrs.entry(first.to_owned()).or_insert_with(|| Value::Object(Map::new()));
        for (i, part) in rest.iter().enumerate() {
            if !cur.is_object() {
                *cur = Value::Object(Map::new());
            }
            let Value::Object(map) = cur else { break };
            if i + 1 == rest.len() {
                map.insert((*part).to_owned(), value.clone());
                break;
            }
            cur = map.entry((*part).to_owned()).or_insert_with(|| Value::Object(Map::new()));
        }
    }
    Ok(())
}

/// A unique conversation's `uniqueId` (LeanCloud's rows carry one): 32 hex digits of
/// SHA-1 over its member set, so the same members always give the same id.
pub fn unique_id(key: &str) -> String {
    use sha1::{Digest, Sha1};
    let mut id = hex::encode(Sha1::digest(key.as_bytes()));
    id.truncate(32);
    id
}

/// The canonical member set of a unique conversation.
pub fn unique_key(members: &[String]) -> String {
    let mut sorted: Vec<&str> = members.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    sorted.join("\u{1f}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_keys_set_nested_values() {
        let mut attrs = Map::new();
        attrs.insert("attr".into(), json!({"a": 1}));
        let update = json!({"name": "n", "attr.lee": "yeh", "x.y.z": 1});
        let Value::Object(update) = update else { panic!() };
        apply_attributes(&mut attrs, &update).expect("valid");
        assert_eq!(
            Value::Object(attrs),
            json!({"attr": {"a": 1, "lee": "yeh"}, "name": "n", "x": {"y": {"z": 1}}})
        );
        let mut attrs = Map::new();
        let Value::Object(bad) = json!({"m": ["x"]}) else { panic!() };
        assert!(apply_attributes(&mut attrs, &bad).is_err());
        let Value::Object(bad) = json!({"a..b": 1}) else { panic!() };
        assert!(apply_attributes(&mut attrs, &bad).is_err());
    }

    #[test]
    fn unique_key_ignores_order_and_duplicates() {
        let a = unique_key(&["b".into(), "a".into(), "b".into()]);
        assert_eq!(a, unique_key(&["a".into(), "b".into()]));
        assert_ne!(a, unique_key(&["a".into(), "b".into(), "c".into()]));
    }
}

//! LeanCloud's export shapes (LEANCLOUD-REST-HOOKS-EXPORT §2): storage rows of
//! `_Conversation`, `_ConversationMemberInfo` and `_SysMessage`, history records and
//! service-conversation subscribers, read into what the import needs. Every reader
//! returns why a record cannot be used instead of failing the import.

use confab_engine::ports::ConvKind;
use confab_types::time::parse_iso8601;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Keys of a `_Conversation` row that are not custom attributes: the server's own
/// fields (the engine's reserved keys), the storage ACL, and what the SDKs read from
/// realtime query results that a row may carry.
const NOT_ATTRIBUTES: &[&str] = &[
    "ACL",
    "joined",
    "joinedAt",
    "muted",
    "mention_all",
    "mention_pids",
    "patch_timestamp",
    "msg_timestamp",
    "temp_ttl",
];

/// Longest conversation or message id accepted (LeanCloud's are 24 and 22 characters).
pub const MAX_ID_CHARS: usize = 64;

/// A conversation or message id safe to use as a file name and a key: 1 to
/// [`MAX_ID_CHARS`] ASCII letters, digits, `_` or `-` (conversation ids) — message ids
/// may also hold `=`, `+`, `/` (base64).
pub fn valid_conversation_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_CHARS
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn valid_message_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_CHARS
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'=' | b'+' | b'/'))
}

/// A date as the export writes it: an ISO-8601 string, `{"__type":"Date","iso":…}`, or
/// epoch milliseconds.
pub fn date_ms(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => parse_iso8601(s),
        Value::Object(m) if m.get("__type").and_then(Value::as_str) == Some("Date") => {
            m.get("iso").and_then(Value::as_str).and_then(parse_iso8601)
        }
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        _ => None,
    }
}

/// A positive integer timestamp (ms); floats are truncated.
fn timestamp(v: &Value) -> Option<i64> {
    let t = match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
        other => date_ms(other),
    }?;
    (t > 0).then_some(t)
}

fn string_list(v: Option<&Value>, key: &str) -> Result<Vec<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str().map(str::to_owned).ok_or_else(|| format!("{key} must be a list of client ids"))
            })
            .collect(),
        Some(_) => Err(format!("{key} must be a list of client ids")),
    }
}

fn flag(row: &Map<String, Value>, key: &str) -> bool {
    matches!(row.get(key), Some(Value::Bool(true)))
}

/// A `_Conversation` row.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationRow {
    /// `objectId`.
    pub id: String,
    /// From `tr` / `sys`.
    pub kind: ConvKind,
    /// `c`.
    pub creator: String,
    /// `m` (normal conversations only), as listed.
    pub members: Vec<String>,
    /// `mu`.
    pub muted: Vec<String>,
    /// `unique`.
    pub unique: bool,
    /// Every other key.
    pub attrs: Map<String, Value>,
    /// `createdAt` (ms).
    pub created_at: Option<i64>,
    /// `updatedAt` (ms).
    pub updated_at: Option<i64>,
}

impl ConversationRow {
    /// Reads a row; the error says why it cannot be imported.
    pub fn parse(v: Value) -> Result<ConversationRow, String> {
        let Value::Object(mut row) = v else { return Err("not a JSON object".into()) };
        let id = match row.get("objectId") {
            Some(Value::String(id)) if valid_conversation_id(id) => id.clone(),
            Some(Value::String(id)) if id.starts_with("_tmp:") => {
                return Err("a temporary conversation (LeanCloud never stored those)".into());
            }
            Some(Value::String(_)) => {
                return Err(format!("objectId must be 1 to {MAX_ID_CHARS} letters, digits, _ or -"));
            }
            _ => return Err("objectId missing".into()),
        };
        if flag(&row, "temp") {
            return Err("a temporary conversation (LeanCloud never stored those)".into());
        }
        let kind = if flag(&row, "sys") {
            ConvKind::System
        } else if flag(&row, "tr") {
            ConvKind::Transient
        } else {
            ConvKind::Normal
        };
        let creator = match row.get("c") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(c)) => c.clone(),
            Some(_) => return Err("c must be a client id".into()),
        };
        let members = string_list(row.get("m"), "m")?;
        let muted = string_list(row.get("mu"), "mu")?;
        let date = |row: &Map<String, Value>, key: &str| match row.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => date_ms(v).map(Some).ok_or_else(|| format!("{key} is not a date")),
        };
        let created_at = date(&row, "createdAt")?;
        let updated_at = date(&row, "updatedAt")?;
        let unique = flag(&row, "unique");
        for key in confab_engine::conversation::RESERVED_KEYS.iter().chain(NOT_ATTRIBUTES) {
            row.remove(*key);
        }
        if let Some(key) = row.keys().find(|k| k.is_empty() || k.starts_with('$') || k.contains('.')) {
            return Err(format!("attribute name {key:?} is not allowed (empty, $ or .)"));
        }
        Ok(ConversationRow { id, kind, creator, members, muted, unique, attrs: row, created_at, updated_at })
    }
}

/// A `_ConversationMemberInfo` row.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberInfoRow {
    /// `cid`.
    pub cid: String,
    /// `clientId`.
    pub client: String,
    /// `role`: `Owner`, `Manager` or `Member`.
    pub role: String,
}

impl MemberInfoRow {
    /// Reads a row; the error says why it cannot be imported.
    pub fn parse(v: Value) -> Result<MemberInfoRow, String> {
        let Value::Object(row) = v else { return Err("not a JSON object".into()) };
        let text = |key: &str| row.get(key).and_then(Value::as_str).map(str::to_owned);
        // `cid` may also be a pointer to the conversation.
        let cid = text("cid")
            .or_else(|| {
                row.get("cid").and_then(|c| c.get("objectId")).and_then(Value::as_str).map(str::to_owned)
            })
            .filter(|c| valid_conversation_id(c))
            .ok_or("cid missing or not a conversation id")?;
        let client = text("clientId").filter(|c| !c.is_empty()).ok_or("clientId missing")?;
        let role = text("role").ok_or("role missing")?;
        if !matches!(role.as_str(), "Owner" | "Manager" | "Member") {
            return Err(format!("role {role:?} is not Owner, Manager or Member"));
        }
        Ok(MemberInfoRow { cid, client, role })
    }
}

/// A message to import: a history record, or a `_SysMessage` row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Sender.
    pub from: String,
    /// Body (base64 when `binary`).
    pub data: String,
    /// Binary body.
    pub binary: bool,
    /// Last edit or recall (ms).
    pub patched_at: Option<i64>,
    /// Mentions everyone.
    pub mention_all: bool,
    /// Mentioned client ids.
    pub mention_pids: Vec<String>,
    /// A service conversation's targeted message: its recipients (`to-clients`; sorted,
    /// distinct). `None`: for every member.
    #[serde(default)]
    pub recipients: Option<Vec<String>>,
}

/// A message with its id and timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// `msg-id`.
    pub id: String,
    /// `timestamp` (ms, > 0).
    pub ts: i64,
    /// The rest.
    pub message: Message,
}

fn first<'a>(row: &'a Map<String, Value>, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().find_map(|k| row.get(*k).filter(|v| !v.is_null()))
}

fn message_fields(row: &Map<String, Value>) -> Result<Message, String> {
    let from = match first(row, &["from"]) {
        Some(Value::String(f)) => f.clone(),
        None => String::new(),
        Some(_) => return Err("from must be a client id".into()),
    };
    let data = match first(row, &["data"]) {
        Some(Value::String(d)) => d.clone(),
        // A body exported as parsed JSON: kept as its text.
        Some(v @ (Value::Object(_) | Value::Array(_))) => v.to_string(),
        _ => return Err("data missing".into()),
    };
    let binary = matches!(first(row, &["bin"]), Some(Value::Bool(true)));
    let patched_at =
        first(row, &["patch-timestamp", "patchTimestamp", "patch_timestamp"]).and_then(timestamp);
    let mention_all =
        matches!(first(row, &["mention-all", "mentionAll", "mention_all"]), Some(Value::Bool(true)));
    let mention_pids =
        string_list(first(row, &["mention-pids", "mentionPids", "mention_pids"]), "mention-pids")?;
    let recipients = match first(row, &["to-clients", "toClients", "to_clients"]) {
        None => None,
        some => {
            let mut to = string_list(some, "to-clients")?;
            if to.is_empty() {
                return Err("to-clients is empty".into());
            }
            to.sort();
            to.dedup();
            Some(to)
        }
    };
    Ok(Message { from, data, binary, patched_at, mention_all, mention_pids, recipients })
}

impl Record {
    /// Reads a history record (`msg-id`, `timestamp`, `from`, `data`, `bin`, and what
    /// edits and mentions left; other keys are ignored).
    pub fn parse_history(v: Value) -> Result<Record, String> {
        let Value::Object(row) = v else { return Err("not a JSON object".into()) };
        let id = match first(&row, &["msg-id", "msgId", "id"]) {
            Some(Value::String(id)) if valid_message_id(id) => id.clone(),
            Some(_) => return Err(format!("msg-id must be 1 to {MAX_ID_CHARS} base64 characters")),
            None => return Err("msg-id missing".into()),
        };
        let ts =
            first(&row, &["timestamp"]).and_then(timestamp).ok_or("timestamp missing or not positive")?;
        Ok(Record { id, ts, message: message_fields(&row)? })
    }

    /// Reads a `_SysMessage` row: its conversation (`conv`, a pointer) and the message
    /// (`msgId`, `timestamp` or else `createdAt`, `from`, `data`, `bin`).
    pub fn parse_sys_message(v: Value) -> Result<(String, Record), String> {
        let Value::Object(row) = v else { return Err("not a JSON object".into()) };
        let cid = match row.get("conv") {
            Some(Value::String(c)) => Some(c.as_str()),
            Some(p) => p.get("objectId").and_then(Value::as_str),
            None => None,
        }
        .filter(|c| valid_conversation_id(c))
        .ok_or("conv missing or not a conversation")?
        .to_owned();
        let id = match first(&row, &["msgId", "objectId"]) {
            Some(Value::String(id)) if valid_message_id(id) => id.clone(),
            _ => return Err("msgId missing or not an id".into()),
        };
        let ts = first(&row, &["timestamp"])
            .or_else(|| first(&row, &["createdAt"]))
            .and_then(timestamp)
            .ok_or("timestamp missing")?;
        Ok((cid, Record { id, ts, message: message_fields(&row)? }))
    }
}

/// A subscriber of a service conversation: `{"subscriber": id, …}` as the REST API
/// lists them, or a bare client id.
pub fn subscriber(v: Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s),
        Value::Object(mut m) => match m.remove("subscriber").or_else(|| m.remove("client_id")) {
            Some(Value::String(s)) => Ok(s),
            _ => Err("subscriber missing".into()),
        },
        _ => Err("not a subscriber".into()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn conversation_rows_keep_custom_keys_as_attributes() {
        let row = ConversationRow::parse(json!({
            "objectId": "5e8a0c1d2f3a4b5c6d7e8f90", "name": "team", "attr": {"a": 1}, "topic": "x",
            "c": "alice", "m": ["alice", "bob"], "mu": ["bob"], "unique": true, "uniqueId": "abc",
            "lm": {"__type": "Date", "iso": "2020-01-01T00:00:00.000Z"}, "ACL": {"*": {"read": true}},
            "createdAt": "2019-12-31T00:00:00.000Z", "updatedAt": "2020-01-01T00:00:00.000Z",
        }))
        .unwrap();
        assert_eq!(row.kind, ConvKind::Normal);
        assert_eq!(
            (row.creator.as_str(), row.members.len(), row.muted.len(), row.unique),
            ("alice", 2, 1, true)
        );
        assert_eq!(Value::Object(row.attrs), json!({"name": "team", "attr": {"a": 1}, "topic": "x"}));
        assert_eq!(row.updated_at, Some(1_577_836_800_000));
        let kind = |v: Value| ConversationRow::parse(v).map(|r| r.kind);
        assert_eq!(kind(json!({"objectId": "a", "tr": true})), Ok(ConvKind::Transient));
        assert_eq!(kind(json!({"objectId": "a", "sys": true})), Ok(ConvKind::System));
        assert!(kind(json!({"objectId": "../x"})).is_err());
        assert!(kind(json!({"objectId": "_tmp:abc"})).is_err());
        assert!(kind(json!({"name": "no id"})).is_err());
        assert!(kind(json!({"objectId": "a", "m": "alice"})).is_err());
        assert!(kind(json!({"objectId": "a", "createdAt": "yesterday"})).is_err());
        assert!(kind(json!({"objectId": "a", "a.b": 1})).is_err());
    }

    #[test]
    fn targeted_records_name_their_recipients() {
        let r = Record::parse_history(
            json!({"msg-id": "m1", "timestamp": 5, "data": "x", "to-clients": ["cat", "ann", "cat"]}),
        )
        .unwrap();
        assert_eq!(r.message.recipients, Some(vec!["ann".to_owned(), "cat".to_owned()]));
        let r = Record::parse_history(json!({"msg-id": "m1", "timestamp": 5, "data": "x"})).unwrap();
        assert_eq!(r.message.recipients, None);
        let e = Record::parse_history(json!({"msg-id": "m1", "timestamp": 5, "data": "x", "to-clients": []}));
        assert_eq!(e.unwrap_err(), "to-clients is empty");
    }

    #[test]
    fn history_records_and_sys_messages() {
        let r = Record::parse_history(json!({
            "msg-id": "AbC-_12", "timestamp": 1_600_000_000_123u64, "conv-id": "x", "from": "bob",
            "data": "{\"_lctype\":-1,\"_lctext\":\"hi\"}", "bin": false, "patch-timestamp": 1_600_000_001_000u64,
            "mention-pids": ["alice"], "is-conv": true,
        }))
        .unwrap();
        assert_eq!(
            (r.id.as_str(), r.ts, r.message.patched_at),
            ("AbC-_12", 1_600_000_000_123, Some(1_600_000_001_000))
        );
        assert_eq!(r.message.mention_pids, ["alice"]);
        assert!(Record::parse_history(json!({"msg-id": "a", "data": "x"})).is_err());
        assert!(Record::parse_history(json!({"msg-id": "a", "timestamp": -5, "data": "x"})).is_err());
        assert!(Record::parse_history(json!({"msg-id": "a", "timestamp": 5})).is_err());
        assert!(Record::parse_history(json!({"msg-id": "a b", "timestamp": 5, "data": ""})).is_err());
        let (cid, r) = Record::parse_sys_message(json!({
            "conv": {"__type": "Pointer", "className": "_Conversation", "objectId": "sys1"},
            "msgId": "m1", "from": "carol", "data": "hello",
            "createdAt": "2020-01-01T00:00:00.000Z",
        }))
        .unwrap();
        assert_eq!((cid.as_str(), r.ts, r.message.from.as_str()), ("sys1", 1_577_836_800_000, "carol"));
    }

    #[test]
    fn member_infos_and_subscribers() {
        let m = MemberInfoRow::parse(json!({"cid": "c1", "clientId": "bob", "role": "Manager"})).unwrap();
        assert_eq!(m.role, "Manager");
        assert!(MemberInfoRow::parse(json!({"cid": "c1", "clientId": "bob", "role": "King"})).is_err());
        assert_eq!(subscriber(json!({"subscriber": "x", "timestamp": 1})), Ok("x".to_owned()));
        assert_eq!(subscriber(json!("y")), Ok("y".to_owned()));
        assert!(subscriber(json!(3)).is_err());
    }
}

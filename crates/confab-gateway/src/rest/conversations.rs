//! `/1.2/rtm/conversations`, `/1.2/rtm/chatrooms` and `/1.2/rtm/service-conversations`.

use super::auth::authenticate;
use super::{RestError, Routes, client_ids, json_object};
use crate::Gateway;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use confab_engine::Engine;
use confab_engine::engine::{AdminConversation, AdminMessage};
use confab_engine::ports::{ConvKind, MessageRange, StoredMessage};
use confab_types::time::iso8601;
use serde_json::{Map, Value, json};
use std::collections::HashMap;

pub(super) type Body = Result<Bytes, BytesRejection>;
pub(super) type Params = Query<HashMap<String, String>>;

/// At most this many members are added or removed by one call.
const MEMBERS_PER_CALL: usize = 1000;
/// At most this many clients are mentioned by name (LeanCloud's REST limit).
const MENTIONS_MAX: usize = 20;
/// History page size: default and maximum (§2.4).
const HISTORY_DEFAULT_LIMIT: usize = 100;
const HISTORY_MAX_LIMIT: usize = 1000;
/// Conversation query page size: default and maximum (LeanStorage's, §2.1 and §3.9).
const QUERY_DEFAULT_LIMIT: usize = 100;
const QUERY_MAX_LIMIT: usize = 1000;
/// A chat room's member sample: at most this many (LeanCloud's documented cap).
const ROOM_SAMPLE_MAX: usize = 50;

/// Which path family a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    Conversations,
    ChatRooms,
    Service,
}

impl Family {
    fn kind(self) -> ConvKind {
        match self {
            Family::Conversations => ConvKind::Normal,
            Family::ChatRooms => ConvKind::Transient,
            Family::Service => ConvKind::System,
        }
    }

    /// The kinds reachable by id under this path.
    pub(super) fn kinds(self) -> &'static [ConvKind] {
        match self {
            Family::Conversations => &[ConvKind::Normal, ConvKind::Temporary],
            Family::ChatRooms => &[ConvKind::Transient],
            Family::Service => &[ConvKind::System],
        }
    }

    /// The path prefix.
    pub(super) fn base(self) -> &'static str {
        match self {
            Family::Conversations => "/1.2/rtm/conversations",
            Family::ChatRooms => "/1.2/rtm/chatrooms",
            Family::Service => "/1.2/rtm/service-conversations",
        }
    }
}

pub(super) fn routes() -> Routes {
    use Family::{ChatRooms, Conversations, Service};
    let mut routes = Routes::new();
    for family in [Conversations, ChatRooms, Service] {
        let base = family.base();
        let collection = get(move |s: State<Gateway>, h: HeaderMap, q: Params| query(s, h, q, family));
        let collection = if family == Service {
            collection.post(create_service_conversation)
        } else {
            collection.post(move |s: State<Gateway>, h: HeaderMap, b: Body| create(s, h, b, family))
        };
        routes = routes.at(base, &["GET", "POST"], collection).at(
            &format!("{base}/{{cid}}"),
            &["PUT", "DELETE"],
            put(move |s: State<Gateway>, p: Path<String>, h: HeaderMap, b: Body| update(s, p, h, b, family))
                .delete(move |s: State<Gateway>, p: Path<String>, h: HeaderMap| delete(s, p, h, family)),
        );
        if family != Service {
            routes = routes.at(
                &format!("{base}/{{cid}}/messages"),
                &["GET", "POST"],
                post(move |s: State<Gateway>, p: Path<String>, h: HeaderMap, b: Body| {
                    send(s, p, h, b, family)
                })
                .get(move |s: State<Gateway>, p: Path<String>, h: HeaderMap, q: Params| {
                    history(s, p, h, q, family)
                }),
            );
        }
    }
    routes
        .at(
            "/1.2/rtm/conversations/{cid}/members",
            &["GET", "POST", "DELETE"],
            get(members)
                .post(|s: State<Gateway>, p: Path<String>, h: HeaderMap, b: Body| {
                    change_members(s, p, h, b, true)
                })
                .delete(|s: State<Gateway>, p: Path<String>, h: HeaderMap, b: Body| {
                    change_members(s, p, h, b, false)
                }),
        )
        .at("/1.2/rtm/chatrooms/{cid}/members", &["GET"], get(room_members))
        .at("/1.2/rtm/chatrooms/{cid}/members/online-count", &["GET"], get(room_online_count))
}

pub(super) fn created(body: Value) -> Response {
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

/// `POST /1.2/rtm/conversations` (`/chatrooms`): `m`, `c`, `unique` and attributes.
async fn create(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    body: Body,
    family: Family,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let mut body = json_object(body, false)?;
    let members = match body.remove("m") {
        None | Some(Value::Null) => Vec::new(),
        Some(m) => client_ids(&Map::from_iter([("m".to_owned(), m)]), "m", usize::MAX)?,
    };
    let creator = match body.remove("c") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(c)) => c,
        Some(_) => return Err(RestError::bad_request("c must be a client id")),
    };
    let flag = |body: &mut Map<String, Value>, key: &str| match body.remove(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(b),
        Some(_) => Err(RestError::bad_request(format!("{key} must be a boolean"))),
    };
    let unique = flag(&mut body, "unique")?;
    // The storage API's way to ask for a chat room.
    let kind = if flag(&mut body, "tr")? { ConvKind::Transient } else { family.kind() };
    let new = AdminConversation { creator, members, unique, attrs: body };
    let record = gateway.engine.admin_create_conversation(&caller.app_id, kind, new).await?;
    Ok(match family {
        Family::Conversations => created(Engine::conversation_json(&record)),
        Family::ChatRooms | Family::Service => {
            created(json!({"objectId": record.id, "createdAt": iso8601(record.created_at)}))
        }
    })
}

/// `GET /1.2/rtm/conversations` (`/chatrooms`, `/service-conversations`): `where`,
/// `order`, `skip`, `limit` (1 to 1000; absent or out of range: 100).
async fn query(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Query(q): Params,
    family: Family,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    query_kind(&gateway, &caller.app_id, &q, Some(family.kind())).await
}

/// A conversation query of one kind (`None`: every kind) as `{"results": […]}`.
pub(super) async fn query_kind(
    gateway: &Gateway,
    app_id: &str,
    q: &HashMap<String, String>,
    kind: Option<ConvKind>,
) -> Result<Response, RestError> {
    let where_ = match q.get("where").filter(|w| !w.is_empty()) {
        None => None,
        Some(w) => Some(
            serde_json::from_str::<Value>(w)
                .ok()
                .filter(Value::is_object)
                .ok_or_else(|| RestError::bad_request("where must be a JSON object"))?,
        ),
    };
    // LeanStorage's `limit`: 1 to 1000, anything else (none, 0, more) is 100.
    let limit =
        number(q, "limit")?.filter(|l| (1..=QUERY_MAX_LIMIT).contains(l)).unwrap_or(QUERY_DEFAULT_LIMIT);
    let (skip, limit) = (number(q, "skip")?.unwrap_or(0), Some(limit));
    let order = q.get("order").map(String::as_str);
    let results = gateway.engine.admin_query_conversations(app_id, kind, where_, order, skip, limit).await?;
    Ok(axum::Json(json!({ "results": results })).into_response())
}

/// A non-negative number parameter (`skip`, `limit`), if given.
pub(super) fn number(q: &HashMap<String, String>, key: &str) -> Result<Option<usize>, RestError> {
    q.get(key)
        .filter(|v| !v.is_empty())
        .map(|v| v.parse::<usize>().map_err(|_| RestError::bad_request(format!("{key} must be a number"))))
        .transpose()
}

/// `PUT /1.2/rtm/conversations/{cid}`: any attribute but `m`.
async fn update(
    State(gateway): State<Gateway>,
    Path(cid): Path<String>,
    headers: HeaderMap,
    body: Body,
    family: Family,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let attrs = json_object(body, false)?;
    if attrs.contains_key("m") {
        return Err(RestError::bad_request("m cannot be updated; use the members endpoints"));
    }
    let updated =
        gateway.engine.admin_update_conversation(&caller.app_id, family.kinds(), &cid, attrs).await?;
    Ok(axum::Json(json!({"updatedAt": iso8601(updated), "objectId": cid})).into_response())
}

/// `DELETE /1.2/rtm/conversations/{cid}` (`/chatrooms/{cid}`): the conversation with its
/// members and history; `{}`.
async fn delete(
    State(gateway): State<Gateway>,
    Path(cid): Path<String>,
    headers: HeaderMap,
    family: Family,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    gateway.engine.admin_delete_conversation(&caller.app_id, family.kinds(), &cid).await?;
    Ok(axum::Json(json!({})).into_response())
}

/// `GET /1.2/rtm/conversations/{cid}/members`.
async fn members(
    State(gateway): State<Gateway>,
    Path(cid): Path<String>,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let members = gateway.engine.admin_members(&caller.app_id, &cid).await?;
    Ok(axum::Json(json!({ "result": members })).into_response())
}

/// `POST` / `DELETE /1.2/rtm/conversations/{cid}/members` with `{"client_ids": […]}`.
/// Ids refused (blocked, over the member limit, the owner) are listed under `failed`.
async fn change_members(
    State(gateway): State<Gateway>,
    Path(cid): Path<String>,
    headers: HeaderMap,
    body: Body,
    add: bool,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let ids = client_ids(&json_object(body, false)?, "client_ids", MEMBERS_PER_CALL)?;
    let (result, updated) = gateway.engine.admin_change_members(&caller.app_id, &cid, ids, add).await?;
    let mut answer = json!({"updatedAt": iso8601(updated), "objectId": cid});
    if !result.failed.is_empty() {
        let failed: Vec<Value> = result
            .failed
            .iter()
            .map(|f| json!({"code": f.error.code.number(), "error": f.error.detail, "client_ids": f.members}))
            .collect();
        answer["failed"] = Value::Array(failed);
    }
    Ok(axum::Json(answer).into_response())
}

/// A message body as given: a string, or any other JSON as its text.
pub(super) fn message_text(body: &Map<String, Value>) -> Result<String, RestError> {
    match body.get("message") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) if !other.is_null() => Ok(other.to_string()),
        _ => Err(RestError::bad_request("message is required")),
    }
}

pub(super) fn from_client(body: &Map<String, Value>) -> Result<String, RestError> {
    let from = body.get("from_client").and_then(Value::as_str).filter(|f| !f.is_empty());
    Ok(from.ok_or_else(|| RestError::bad_request("from_client is required"))?.to_owned())
}

/// `POST /1.2/rtm/conversations/{cid}/messages` (`/chatrooms`): `from_client`,
/// `message`, `transient`, `mention_all`, `mention_client_ids`; answered after the
/// commit with `{"msg-id", "timestamp"}`.
async fn send(
    State(gateway): State<Gateway>,
    Path(cid): Path<String>,
    headers: HeaderMap,
    body: Body,
    family: Family,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    super::quota(&gateway, &caller.app_id, confab_engine::rate::RestRate::Messages)?;
    let body = json_object(body, false)?;
    let bool_of = |key: &str| match body.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(RestError::bad_request(format!("{key} must be a boolean"))),
    };
    let pids = match body.get("mention_client_ids") {
        None | Some(Value::Null) => Vec::new(),
        Some(_) => client_ids(&body, "mention_client_ids", MENTIONS_MAX)?,
    };
    let message = AdminMessage {
        from: from_client(&body)?,
        msg: message_text(&body)?,
        transient: bool_of("transient")?,
        mentions: confab_types::Mentions { all: bool_of("mention_all")?, pids },
    };
    let (id, t) = gateway.engine.admin_send(&caller.app_id, family.kinds(), &cid, message).await?;
    Ok(axum::Json(json!({"msg-id": id, "timestamp": t})).into_response())
}

/// The store range and output order (`true`: oldest first) of §2.4's parameters:
/// `timestamp` (or `max_ts`) + `msgid` start, `till_timestamp` + `till_msgid` end,
/// `include_start`, `include_stop`, `reversed`, `limit`. Positions are unique within a
/// conversation, so the message ids add nothing to a timestamp and are accepted
/// unchecked; a timestamp of 0 is the documented default (no bound).
pub(super) fn history_range(q: &HashMap<String, String>) -> Result<(MessageRange, bool), RestError> {
    let int = |key: &str| -> Result<Option<i64>, RestError> {
        q.get(key).map(|v| timestamp_param(key, v)).transpose().map(|v| v.flatten().filter(|t| *t > 0))
    };
    let flag = |key: &str| flag_param(q, key);
    let start = match int("timestamp")? {
        Some(t) => Some(t),
        None => int("max_ts")?,
    };
    let stop = int("till_timestamp")?;
    let (include_start, include_stop, reversed) =
        (flag("include_start")?, flag("include_stop")?, flag("reversed")?);
    let limit = match q.get("limit").filter(|v| !v.is_empty()) {
        None => HISTORY_DEFAULT_LIMIT,
        Some(v) => {
            v.parse::<i64>().map_err(|_| RestError::bad_request("limit must be a number"))?.max(0) as usize
        }
    }
    .min(HISTORY_MAX_LIMIT);
    let start = start.map(|t| (t, include_start));
    let stop = stop.map(|t| (t, include_stop));
    let range = if reversed {
        MessageRange {
            after: start,
            before: stop,
            newest_first: false,
            limit,
            lctype: None,
            visible_to: None,
        }
    } else {
        MessageRange { before: start, after: stop, newest_first: true, limit, lctype: None, visible_to: None }
    };
    Ok((range, reversed))
}

/// A timestamp parameter in ms: an integer, or a number with a fraction (the Python
/// SDK sends `max_ts` as a float); empty is absent.
pub(super) fn timestamp_param(key: &str, v: &str) -> Result<Option<i64>, RestError> {
    let bad = || RestError::bad_request(format!("{key} must be a number"));
    if v.is_empty() {
        return Ok(None);
    }
    match v.parse::<i64>() {
        Ok(t) => Ok(Some(t)),
        Err(_) => {
            let f = v.parse::<f64>().map_err(|_| bad())?;
            if !f.is_finite() || f.abs() > 9.0e15 {
                return Err(bad());
            }
            Ok(Some(f.trunc() as i64))
        }
    }
}

/// A boolean parameter: `true`/`false` in any case (Python sends `True`), `1`/`0`.
pub(super) fn flag_param(q: &HashMap<String, String>, key: &str) -> Result<bool, RestError> {
    match q.get(key).map(|v| v.to_ascii_lowercase()).as_deref() {
        None | Some("" | "false" | "0") => Ok(false),
        Some("true" | "1") => Ok(true),
        Some(_) => Err(RestError::bad_request(format!("{key} must be true or false"))),
    }
}

/// A history record as LeanCloud's REST API returns it (§2.4).
pub(super) fn record(m: &StoredMessage) -> Value {
    let mut r = json!({
        "msg-id": m.id,
        "timestamp": m.ts,
        "conv-id": m.cid,
        "to": m.cid,
        "from": m.from,
        "data": m.data,
        "bin": m.binary,
        "is-conv": true,
        "is-room": false,
    });
    if let Some(p) = m.patched_at {
        r["patch-timestamp"] = json!(p);
    }
    if m.mentions.all {
        r["mention-all"] = json!(true);
    }
    if !m.mentions.pids.is_empty() {
        r["mention-pids"] = json!(m.mentions.pids);
    }
    // A service conversation's targeted message: whom it was sent to.
    if let Some(to) = &m.recipients {
        r["to-clients"] = json!(to);
    }
    r
}

/// `GET /1.2/rtm/conversations/{cid}/messages` (`/chatrooms`): a JSON array of records,
/// newest first unless `reversed`.
async fn history(
    State(gateway): State<Gateway>,
    Path(cid): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
    family: Family,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let (range, oldest_first) = history_range(&q)?;
    let mut messages = gateway.engine.admin_history(&caller.app_id, family.kinds(), &cid, range).await?;
    if !oldest_first {
        messages.reverse();
    }
    Ok(axum::Json(Value::Array(messages.iter().map(record).collect())).into_response())
}

/// `POST /1.2/rtm/service-conversations`: a system conversation with these attributes.
async fn create_service_conversation(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let attrs = json_object(body, false)?;
    let (cid, created_at) = gateway.engine.admin_create_system_conversation(&caller.app_id, attrs).await?;
    Ok(created(json!({"objectId": cid, "createdAt": iso8601(created_at)})))
}

/// `GET /1.2/rtm/chatrooms/{cid}/members`: up to 50 of the clients in the room now.
async fn room_members(
    State(gateway): State<Gateway>,
    Path(cid): Path<String>,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let mut clients = gateway.engine.admin_room_clients(&caller.app_id, &cid).await?;
    clients.truncate(ROOM_SAMPLE_MAX);
    Ok(axum::Json(json!({ "result": clients })).into_response())
}

/// `GET /1.2/rtm/chatrooms/{cid}/members/online-count`: `{"result": n}`.
async fn room_online_count(
    State(gateway): State<Gateway>,
    Path(cid): Path<String>,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let clients = gateway.engine.admin_room_clients(&caller.app_id, &cid).await?;
    Ok(axum::Json(json!({ "result": clients.len() })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(pairs: &[(&str, &str)]) -> (MessageRange, bool) {
        let q = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        history_range(&q).expect("valid parameters")
    }

    #[test]
    fn paging_parameters_map_to_store_ranges() {
        let (r, oldest_first) = range(&[("timestamp", "30"), ("till_timestamp", "10")]);
        assert_eq!(
            (r.before, r.after, r.newest_first, r.limit, oldest_first),
            (Some((30, false)), Some((10, false)), true, 100, false)
        );
        let (r, _) = range(&[("max_ts", "30"), ("include_start", "true"), ("include_stop", "1")]);
        assert_eq!((r.before, r.after), (Some((30, true)), None));
        let (r, oldest_first) = range(&[
            ("reversed", "true"),
            ("timestamp", "10"),
            ("till_timestamp", "30"),
            ("include_stop", "true"),
        ]);
        assert_eq!(
            (r.after, r.before, r.newest_first, oldest_first),
            (Some((10, false)), Some((30, true)), false, true)
        );
        assert_eq!(range(&[("limit", "5000")]).0.limit, 1000);
        assert_eq!(range(&[("limit", "-1")]).0.limit, 0);
        assert_eq!(range(&[("timestamp", "0")]).0.before, None);
        let bad =
            |k: &str, v: &str| history_range(&[(k.to_owned(), v.to_owned())].into_iter().collect()).is_err();
        assert!(bad("timestamp", "x") && bad("reversed", "yes") && bad("limit", "many"));
    }
}

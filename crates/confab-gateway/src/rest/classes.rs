//! LeanStorage's class endpoints for the IM classes, as the app's backend, the SDKs and
//! `confab pull` read them (LEANCLOUD-REST-HOOKS-EXPORT §2.1):
//!
//! - `GET /1.1/classes/{_Conversation|_ConversationMemberInfo|_SysMessage}` with
//!   `where`, `order`, `skip`, `limit` (1 to 1000, else 100, as LeanCloud), `keys` and
//!   `count=1`;
//! - `GET /1.1/scan/classes/{…}` with `where`, `limit` (1 to 1000, default 100) and
//!   `cursor`: `{"results": […], "cursor": "…" | null}`.
//!
//! Writes, for `_Conversation` only (§3.8: how old backends and the Python SDK's
//! `Conversation().save()` create conversations and change members):
//!
//! - `POST /1.1/classes/_Conversation`: `name`, `m` (an array, or an `Add` /
//!   `AddUnique` operation, as the SDK sends it), `c`, `tr` (a chat room), `sys` (a
//!   service conversation), `unique` and attributes: `201 {"objectId", "createdAt"}`
//!   (every field with `fetchWhenSave=true`);
//! - `PUT /1.1/classes/_Conversation/{id}`: attributes, and `m` as an `Add` /
//!   `AddUnique` / `Remove` operation: `{"updatedAt", "objectId"}` (plus `failed` as in
//!   1.2 when some ids were refused);
//! - `DELETE /1.1/classes/_Conversation/{id}`: `{}`;
//! - `GET /1.1/classes/{class}/{id}`: one row (what the SDK's `fetch()` reads).
//!
//! They take the 1.2 calls' engine paths (the same limits, pushes, hooks and
//! durability).
//!
//! Master key only, as under LeanCloud's default ACLs — except what
//! leancloud-realtime 4.x's `getAllMemberInfo` sends: `GET
//! /1.1/classes/_ConversationMemberInfo?where={"cid":…}&client_id=…` with the app key
//! and `X-LC-IM-Session-Token`, answered for a member of that conversation.

use super::auth::authenticate;
use super::{RestError, Routes};
use crate::Gateway;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use confab_engine::Engine;
use confab_engine::engine::{AdminConversation, ClassQuery, ImClass};
use confab_engine::ports::ConvKind;
use confab_types::time::iso8601;
use serde_json::{Map, Value, json};
use std::collections::HashMap;

type Params = Query<HashMap<String, String>>;

/// A class query (`/1.1/classes/…`) or a scan (`/1.1/scan/classes/…`).
#[derive(Debug, Clone, Copy)]
enum ScanOrQuery {
    /// Cursor paging.
    Scan,
    /// `where` / `order` / `skip` / `limit`.
    Query,
}

/// Page size of a class query or scan: default and maximum (LeanCloud's).
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

pub(super) fn routes() -> Routes {
    Routes::new()
        .at(
            "/1.1/classes/{class}",
            &["GET", "POST"],
            get(|s: State<Gateway>, p: Path<String>, h: HeaderMap, q: Params| {
                class(s, p, h, q, ScanOrQuery::Query)
            })
            .post(create_conversation),
        )
        .at(
            "/1.1/classes/{class}/{id}",
            &["GET", "PUT", "DELETE"],
            get(object).put(update_conversation).delete(delete_conversation),
        )
        .at(
            "/1.1/scan/classes/{class}",
            &["GET"],
            get(|s: State<Gateway>, p: Path<String>, h: HeaderMap, q: Params| {
                class(s, p, h, q, ScanOrQuery::Scan)
            }),
        )
}

fn im_class(name: &str) -> Result<ImClass, RestError> {
    ImClass::from_name(name).ok_or_else(|| RestError {
        status: StatusCode::NOT_FOUND,
        code: 101,
        error: format!("Class or object doesn't exists: Confab serves only the IM classes, not {name:?}"),
    })
}

fn where_of(q: &HashMap<String, String>) -> Result<Option<Value>, RestError> {
    match q.get("where").filter(|w| !w.trim().is_empty()) {
        None => Ok(None),
        Some(w) => serde_json::from_str::<Value>(w)
            .ok()
            .filter(Value::is_object)
            .map(Some)
            .ok_or_else(|| RestError::bad_request("where must be a JSON object")),
    }
}

/// LeanCloud's `limit`: 1 to 1000; anything else (0, too large, not a number) is the
/// default.
fn limit_of(q: &HashMap<String, String>) -> usize {
    q.get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| (1..=MAX_LIMIT).contains(l))
        .unwrap_or(DEFAULT_LIMIT)
}

/// `keys=a,b`: those keys plus `objectId`, `createdAt` and `updatedAt` (a dotted key
/// keeps its top-level field).
fn project(row: Value, keys: Option<&str>) -> Value {
    let (Some(keys), Value::Object(mut fields)) = (keys.filter(|k| !k.trim().is_empty()), row.clone()) else {
        return row;
    };
    let wanted: Vec<&str> = keys.split(',').map(|k| k.trim().split('.').next().unwrap_or("")).collect();
    fields.retain(|k, _| {
        matches!(k.as_str(), "objectId" | "createdAt" | "updatedAt") || wanted.contains(&k.as_str())
    });
    Value::Object(fields)
}

/// Whether a request may read `class` rows: the master key, or a client's own session
/// asking for the member infos of a conversation it is a member of.
async fn allowed(
    gateway: &Gateway,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    class: ImClass,
    where_: Option<&Value>,
) -> Result<String, RestError> {
    let caller = authenticate(gateway, headers)?;
    if caller.master {
        return Ok(caller.app_id);
    }
    let token = headers.get("x-lc-im-session-token").and_then(|v| v.to_str().ok());
    let (Some(token), ImClass::MemberInfo) = (token, class) else { return Err(RestError::unauthorized()) };
    let client = q.get("client_id").ok_or_else(RestError::unauthorized)?;
    let app = gateway.engine.app(&caller.app_id).ok_or_else(RestError::unauthorized)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    confab_engine::session_token::check(&app.config.master_key, &app.config.id, client, token, now)
        .ok_or_else(RestError::unauthorized)?;
    let cid = where_.and_then(|w| w.get("cid")).and_then(Value::as_str).ok_or_else(|| RestError {
        status: StatusCode::FORBIDDEN,
        code: 119,
        error: "a client reads the member infos of one conversation: where={\"cid\": …}".into(),
    })?;
    if !gateway.engine.is_member(&caller.app_id, cid, client).await? {
        return Err(RestError {
            status: StatusCode::FORBIDDEN,
            code: 119,
            error: format!("{client} is not a member of {cid}"),
        });
    }
    Ok(caller.app_id)
}

async fn class(
    State(gateway): State<Gateway>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
    how: ScanOrQuery,
) -> Result<Response, RestError> {
    let class = im_class(&name)?;
    let where_ = where_of(&q)?;
    let app_id = allowed(&gateway, &headers, &q, class, where_.as_ref()).await?;
    let keys = q.get("keys").map(String::as_str);
    let limit = limit_of(&q);
    match how {
        ScanOrQuery::Scan => {
            let cursor = q.get("cursor").map(String::as_str).filter(|c| !c.is_empty());
            let page = gateway.engine.class_scan(&app_id, class, where_.as_ref(), cursor, limit).await?;
            let results: Vec<Value> = page.results.into_iter().map(|r| project(r, keys)).collect();
            Ok(axum::Json(json!({"results": results, "cursor": page.cursor})).into_response())
        }
        ScanOrQuery::Query => {
            let skip = match q.get("skip").filter(|s| !s.is_empty()) {
                None => 0,
                Some(s) => s.parse::<usize>().map_err(|_| RestError::bad_request("skip must be a number"))?,
            };
            let count = q.get("count").is_some_and(|c| c == "1" || c == "true");
            // `count=1&limit=0` asks for the count alone.
            let zero = q.get("limit").is_some_and(|l| l.trim() == "0");
            let query = ClassQuery {
                where_,
                order: q.get("order").filter(|o| !o.is_empty()).cloned(),
                skip,
                limit: Some(if count && zero { 0 } else { limit }),
            };
            let (rows, total) = gateway.engine.class_query(&app_id, class, query).await?;
            let results: Vec<Value> = rows.into_iter().map(|r| project(r, keys)).collect();
            let mut body = Map::new();
            body.insert("results".into(), Value::Array(results));
            if count {
                body.insert("count".into(), Value::from(total));
            }
            Ok(axum::Json(Value::Object(body)).into_response())
        }
    }
}

/// The kinds `_Conversation` holds (temporary conversations were never stored rows).
const STORED_KINDS: &[ConvKind] = &[ConvKind::Normal, ConvKind::Transient, ConvKind::System];

/// Keys of a `_Conversation` row the server keeps: not writable by `PUT`.
const SERVER_KEYS: &[&str] =
    &["objectId", "createdAt", "updatedAt", "c", "mu", "tr", "sys", "unique", "uniqueId", "lm"];

/// Only `_Conversation` is written through the class API: 404 (101) for a class
/// Confab does not serve, 403 (119) for the other IM classes, which are views.
fn writable(name: &str) -> Result<(), RestError> {
    match im_class(name)? {
        ImClass::Conversation => Ok(()),
        _ => Err(RestError::new(
            StatusCode::FORBIDDEN,
            119,
            format!("{name} is read-only in Confab: change roles and messages through /1.2/rtm"),
        )),
    }
}

/// What `m` asks for: `(ids, add)`, `add` true for an `Add`/`AddUnique` and false for a
/// `Remove` operation; a plain array counts as `Add` when `plain_ok`.
fn members_op(m: Value, plain_ok: bool) -> Result<(Vec<String>, bool), RestError> {
    let ids = |v: &Value| -> Option<Vec<String>> {
        v.as_array()?.iter().map(|i| i.as_str().map(str::to_owned)).collect()
    };
    let bad = || {
        RestError::bad_request(
            "m must be {\"__op\": \"AddUnique\" | \"Add\" | \"Remove\", \"objects\": [client ids]}",
        )
    };
    if plain_ok && m.is_array() {
        return Ok((ids(&m).ok_or_else(bad)?, true));
    }
    let add = match m.get("__op").and_then(Value::as_str) {
        Some("Add" | "AddUnique") => true,
        Some("Remove") => false,
        _ => return Err(bad()),
    };
    Ok((m.get("objects").and_then(ids).ok_or_else(bad)?, add))
}

/// `POST /1.1/classes/_Conversation`: creates as `POST /1.2/rtm/conversations` does
/// (`tr`: a chat room, `sys`: a service conversation).
async fn create_conversation(
    State(gateway): State<Gateway>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
    body: super::conversations::Body,
) -> Result<Response, RestError> {
    writable(&name)?;
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let mut body = super::json_object(body, false)?;
    let members = match body.remove("m") {
        None | Some(Value::Null) => Vec::new(),
        Some(m) => match members_op(m, true)? {
            (ids, true) => ids,
            (_, false) => return Err(RestError::bad_request("a new conversation has no members to remove")),
        },
    };
    let creator = match body.remove("c") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(c)) => c,
        Some(_) => return Err(RestError::bad_request("c must be a client id")),
    };
    let mut flag = |key: &str| match body.remove(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(b),
        Some(_) => Err(RestError::bad_request(format!("{key} must be a boolean"))),
    };
    let (unique, tr, sys) = (flag("unique")?, flag("tr")?, flag("sys")?);
    let kind = match (tr, sys) {
        (true, true) => return Err(RestError::bad_request("a conversation is not both tr and sys")),
        (true, false) => ConvKind::Transient,
        (false, true) => ConvKind::System,
        (false, false) => ConvKind::Normal,
    };
    // An `ACL` is dropped: Confab has none (the master key writes, members read).
    for key in SERVER_KEYS.iter().chain(&["ACL"]) {
        body.remove(*key);
    }
    let new = AdminConversation { creator, members, unique, attrs: body };
    let record = gateway.engine.admin_create_conversation(&caller.app_id, kind, new).await?;
    let answer = if q.get("fetchWhenSave").is_some_and(|f| f == "true") {
        Engine::conversation_json(&record)
    } else {
        json!({"objectId": record.id, "createdAt": iso8601(record.created_at)})
    };
    Ok(super::conversations::created(answer))
}

/// `PUT /1.1/classes/_Conversation/{id}`: attributes as `PUT /1.2/rtm/conversations/{id}`,
/// then `m`'s operation as `POST`/`DELETE …/members`.
async fn update_conversation(
    State(gateway): State<Gateway>,
    Path((name, cid)): Path<(String, String)>,
    headers: HeaderMap,
    body: super::conversations::Body,
) -> Result<Response, RestError> {
    writable(&name)?;
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let mut attrs = super::json_object(body, false)?;
    let members = attrs.remove("m").map(|m| members_op(m, false)).transpose()?;
    attrs.remove("ACL");
    if let Some(key) = SERVER_KEYS.iter().find(|k| attrs.contains_key(**k)) {
        return Err(RestError::bad_request(format!("{key} is kept by the server and cannot be set")));
    }
    let mut updated = None;
    if !attrs.is_empty() {
        updated =
            Some(gateway.engine.admin_update_conversation(&caller.app_id, STORED_KINDS, &cid, attrs).await?);
    } else if members.is_none() {
        // Nothing to change (an SDK saving an unchanged object): no update, no push.
        let query =
            ClassQuery { where_: Some(json!({"objectId": cid})), order: None, skip: 0, limit: Some(1) };
        let (rows, _) = gateway.engine.class_query(&caller.app_id, ImClass::Conversation, query).await?;
        let row = rows.into_iter().next().ok_or_else(|| {
            RestError::new(StatusCode::NOT_FOUND, 4303, format!("CONVERSATION_NOT_FOUND: {cid}"))
        })?;
        return Ok(axum::Json(json!({"objectId": cid, "updatedAt": row["updatedAt"]})).into_response());
    }
    let mut answer = json!({"objectId": cid});
    if let Some((ids, add)) = members {
        if ids.is_empty() {
            return Err(RestError::bad_request("m's objects must name at least one client"));
        }
        let (result, at) = gateway.engine.admin_change_members(&caller.app_id, &cid, ids, add).await?;
        updated = Some(at);
        if !result.failed.is_empty() {
            let failed: Vec<Value> = result
                .failed
                .iter()
                .map(|f| json!({"code": f.error.code.number(), "error": f.error.detail, "client_ids": f.members}))
                .collect();
            answer["failed"] = Value::Array(failed);
        }
    }
    answer["updatedAt"] = json!(updated.map(iso8601));
    Ok(axum::Json(answer).into_response())
}

/// `DELETE /1.1/classes/_Conversation/{id}`: as `DELETE /1.2/rtm/conversations/{id}`.
async fn delete_conversation(
    State(gateway): State<Gateway>,
    Path((name, cid)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    writable(&name)?;
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    gateway.engine.admin_delete_conversation(&caller.app_id, STORED_KINDS, &cid).await?;
    Ok(axum::Json(json!({})).into_response())
}

/// `GET /1.1/classes/{class}/{id}`: one row, or 404 with 101 (master key).
async fn object(
    State(gateway): State<Gateway>,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, RestError> {
    let class = im_class(&name)?;
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let query = ClassQuery { where_: Some(json!({"objectId": id})), order: None, skip: 0, limit: Some(1) };
    let (rows, _) = gateway.engine.class_query(&caller.app_id, class, query).await?;
    let row = rows.into_iter().next().ok_or_else(|| {
        RestError::new(StatusCode::NOT_FOUND, 101, format!("Object not found: no {name} {id:?}"))
    })?;
    Ok(axum::Json(project(row, q.get("keys").map(String::as_str))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_the_ids_and_dates() {
        let row = json!({"objectId": "a", "createdAt": "t", "updatedAt": "u", "name": "n", "m": [1], "attr": {"x": 1}});
        assert_eq!(
            project(row.clone(), Some("name,attr.x")),
            json!({"objectId": "a", "createdAt": "t", "updatedAt": "u", "name": "n", "attr": {"x": 1}})
        );
        assert_eq!(project(row.clone(), None), row);
    }

    #[test]
    fn limits_out_of_range_are_the_default() {
        let q = |l: &str| HashMap::from([("limit".to_owned(), l.to_owned())]);
        assert_eq!(
            (limit_of(&q("5")), limit_of(&q("0")), limit_of(&q("1001")), limit_of(&q("x"))),
            (5, 100, 100, 100)
        );
        assert_eq!(limit_of(&HashMap::new()), 100);
    }
}

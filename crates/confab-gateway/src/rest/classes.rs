//! LeanStorage's class endpoints for the IM classes, as the app's backend, the SDKs and
//! `confab pull` read them (LEANCLOUD-REST-HOOKS-EXPORT §2.1):
//!
//! - `GET /1.1/classes/{_Conversation|_ConversationMemberInfo|_SysMessage}` with
//!   `where`, `order`, `skip`, `limit` (1 to 1000, else 100, as LeanCloud), `keys` and
//!   `count=1`;
//! - `GET /1.1/scan/classes/{…}` with `where`, `limit` (1 to 1000, default 100) and
//!   `cursor`: `{"results": […], "cursor": "…" | null}`.
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
use confab_engine::engine::{ClassQuery, ImClass};
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
            &["GET"],
            get(|s: State<Gateway>, p: Path<String>, h: HeaderMap, q: Params| {
                class(s, p, h, q, ScanOrQuery::Query)
            }),
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

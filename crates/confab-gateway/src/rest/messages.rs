//! Messages after they were sent: edits, recalls and deletions in conversations, chat
//! rooms and service conversations; the messages one client sent; all messages of the
//! app.

use super::auth::authenticate;
use super::conversations::{Body, Family, Params, from_client, history_range, message_text, record};
use super::{RestError, Routes, client_ids, json_object};
use crate::Gateway;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use confab_engine::engine::AdminPatch;
use serde_json::{Map, Value, json};

/// At most this many recipients of a targeted message (LeanCloud's limit).
pub(super) const TO_CLIENTS_MAX: usize = confab_engine::engine::TARGETED_RECIPIENTS_MAX;

pub(super) fn routes() -> Routes {
    use Family::{ChatRooms, Conversations, Service};
    let mut routes = Routes::new();
    for family in [Conversations, ChatRooms, Service] {
        let base = family.base();
        let edit = put(move |s: State<Gateway>, p: Path<(String, String)>, h: HeaderMap, b: Body| {
            patch(s, p, h, b, family, false)
        });
        let (edit, methods): (_, &[&str]) = if family == Service {
            (edit, &["PUT"])
        } else {
            (
                edit.delete(move |s: State<Gateway>, p: Path<(String, String)>, h: HeaderMap, q: Params| {
                    delete(s, p, h, q, family)
                }),
                &["PUT", "DELETE"],
            )
        };
        routes = routes.at(&format!("{base}/{{cid}}/messages/{{mid}}"), methods, edit).at(
            &format!("{base}/{{cid}}/messages/{{mid}}/recall"),
            &["PUT"],
            put(move |s: State<Gateway>, p: Path<(String, String)>, h: HeaderMap, b: Body| {
                patch(s, p, h, b, family, true)
            }),
        );
    }
    routes.at("/1.2/rtm/clients/{client}/messages", &["GET"], get(client_messages)).at(
        "/1.2/rtm/messages",
        &["GET"],
        get(app_messages),
    )
}

/// `timestamp` of a body: the original message's (an integer, ms).
fn body_timestamp(body: &Map<String, Value>, required: bool) -> Result<Option<i64>, RestError> {
    match body.get("timestamp") {
        None | Some(Value::Null) if !required => Ok(None),
        Some(Value::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64()),
        Some(Value::String(s)) if s.parse::<i64>().is_ok() => Ok(s.parse().ok()),
        _ => Err(RestError::bad_request("timestamp (the message's, in ms) is required")),
    }
}

/// `PUT …/messages/{mid}` `{from_client, message, timestamp}` (an edit) and
/// `PUT …/messages/{mid}/recall` `{from_client, timestamp}`; in a service conversation
/// `to_clients` names the recipients of a targeted message. `{}` once done.
async fn patch(
    State(gateway): State<Gateway>,
    Path((cid, mid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
    family: Family,
    recall: bool,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    super::quota(&gateway, &caller.app_id, confab_engine::rate::RestRate::Messages)?;
    let body = json_object(body, false)?;
    let p = AdminPatch {
        from: from_client(&body)?,
        mid,
        timestamp: body_timestamp(&body, true)?,
        data: if recall { None } else { Some(message_text(&body)?) },
    };
    let engine = &gateway.engine;
    match body.get("to_clients") {
        Some(v) if family == Family::Service && !v.is_null() => {
            let to = client_ids(&body, "to_clients", TO_CLIENTS_MAX)?;
            engine.admin_patch_targeted(&caller.app_id, &cid, &to, p).await?;
        }
        _ => {
            engine.admin_patch(&caller.app_id, family.kinds(), &cid, p).await?;
        }
    }
    Ok(axum::Json(json!({})).into_response())
}

/// `DELETE …/messages/{mid}?from_client=…&timestamp=…`: the server's copy only; `{}`.
async fn delete(
    State(gateway): State<Gateway>,
    Path((cid, mid)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Params,
    family: Family,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let timestamp = query_timestamp(&q)?;
    gateway.engine.admin_delete_message(&caller.app_id, family.kinds(), &cid, &mid, timestamp).await?;
    Ok(axum::Json(json!({})).into_response())
}

/// The `timestamp` query parameter of a deletion, when given.
pub(super) fn query_timestamp(
    q: &std::collections::HashMap<String, String>,
) -> Result<Option<i64>, RestError> {
    q.get("timestamp")
        .map(|t| super::conversations::timestamp_param("timestamp", t))
        .transpose()
        .map(Option::flatten)
}

/// `GET /1.2/rtm/clients/{client}/messages`: what the client sent, §2.4's parameters.
async fn client_messages(
    State(gateway): State<Gateway>,
    Path(client): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    app_history(&gateway, &caller.app_id, Some(&client), &q).await
}

/// `GET /1.2/rtm/messages`: every message of the app, §2.4's parameters.
async fn app_messages(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    app_history(&gateway, &caller.app_id, None, &q).await
}

/// History across the app's conversations as a JSON array of records.
pub(super) async fn app_history(
    gateway: &Gateway,
    app_id: &str,
    from: Option<&str>,
    q: &std::collections::HashMap<String, String>,
) -> Result<Response, RestError> {
    let (range, oldest_first) = history_range(q)?;
    let mut messages = gateway.engine.admin_app_messages(app_id, from, range).await?;
    if !oldest_first {
        messages.reverse();
    }
    Ok(axum::Json(Value::Array(messages.iter().map(record).collect())).into_response())
}

//! `/1.2/rtm/clients`: who is online, a client's sessions (devices), kicking a client,
//! unread counts.

use super::auth::authenticate;
use super::{RestError, Routes, client_ids, json_object};
use crate::Gateway;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::HashMap;

/// At most this many ids per online check (LeanCloud's limit).
const CHECK_ONLINE_MAX: usize = 20;
/// A kick's reason: at most this many characters (LeanCloud's limit).
const KICK_REASON_CHARS: usize = 20;

pub(super) fn routes() -> Routes {
    Routes::new()
        .at("/1.2/rtm/clients/check-online", &["POST"], post(check_online))
        .at("/1.2/rtm/clients/{client}/kick", &["POST"], post(kick))
        .at("/1.2/rtm/clients/{client}/unread-count", &["GET"], get(unread_count))
        .at("/1.2/rtm/clients/{client}/sessions", &["GET"], get(sessions))
}

/// `POST /1.2/rtm/clients/check-online` `{"client_ids": […]}` (≤ 20) →
/// `{"results": [online ids]}`.
async fn check_online(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let ids = client_ids(&json_object(body, false)?, "client_ids", CHECK_ONLINE_MAX)?;
    let online = gateway.engine.admin_online(&caller.app_id, ids).await?;
    Ok(axum::Json(json!({ "results": online })).into_response())
}

/// `POST /1.2/rtm/clients/{client}/kick` `{"reason"}` → `{}`: every session of the
/// client ends with 4115 KICKED_BY_APP.
async fn kick(
    State(gateway): State<Gateway>,
    Path(client): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let body = json_object(body, true)?;
    let reason = match body.get("reason") {
        None | Some(Value::Null) => "",
        Some(Value::String(r)) if r.chars().count() <= KICK_REASON_CHARS => r,
        Some(_) => {
            return Err(RestError::bad_request(format!(
                "reason must be a string of at most {KICK_REASON_CHARS} characters"
            )));
        }
    };
    gateway.engine.admin_kick(&caller.app_id, &client, reason).await?;
    Ok(axum::Json(json!({})).into_response())
}

/// `GET /1.2/rtm/clients/{client}/unread-count[?conv_id=…]` (app key allowed) →
/// `{"count": n}`.
async fn unread_count(
    State(gateway): State<Gateway>,
    Path(client): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?;
    let cid = q.get("conv_id").map(String::as_str).filter(|c| !c.is_empty());
    let count = gateway.engine.admin_unread(&caller.app_id, &client, cid).await?;
    Ok(axum::Json(json!({ "count": count })).into_response())
}

/// `GET /1.2/rtm/clients/{client}/sessions` (a Confab extension, for the console) →
/// `{"online": bool, "count": n, "sessions": [{"tag", "protocol", "version", "since"}]}`:
/// whether the client is online (on any node), and its sessions on the node answering,
/// at most [`confab_engine::engine::CLIENT_SESSIONS_MAX`] of them, oldest login first
/// (`count` is how many it has there).
async fn sessions(
    State(gateway): State<Gateway>,
    Path(client): Path<String>,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let online = !gateway.engine.admin_online(&caller.app_id, vec![client.clone()]).await?.is_empty();
    let (sessions, count) = gateway.engine.admin_client_sessions(&caller.app_id, &client)?;
    let sessions: Vec<Value> = sessions
        .into_iter()
        .map(|s| json!({"tag": s.tag, "protocol": s.wire.0, "version": s.wire.1, "since": s.since}))
        .collect();
    Ok(axum::Json(json!({"online": online, "count": count, "sessions": sessions})).into_response())
}

//! Service (system) conversations: subscribers, broadcasts to them, messages to given
//! clients, a client's subscriptions, and the app-wide broadcasts of `/1.2/rtm/broadcasts`.

use super::auth::authenticate;
use super::conversations::{Body, Params, from_client, history_range, message_text, record};
use super::messages::{TO_CLIENTS_MAX, query_timestamp};
use super::{RestError, Routes, client_ids, json_object};
use crate::Gateway;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use confab_engine::engine::{AdminMessage, TargetedMessage};
use confab_engine::ports::ConvKind;
use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// Subscribers per page: default and maximum (LeanCloud: 50 and 50).
const SUBSCRIBERS_PAGE: usize = 50;
/// A client's subscriptions per page: default (LeanCloud) and our maximum.
const SUBSCRIPTIONS_DEFAULT: usize = 50;
const SUBSCRIPTIONS_MAX: usize = 1000;
/// Broadcasts listed per page: default and maximum.
const BROADCASTS_DEFAULT: usize = 100;
const BROADCASTS_MAX: usize = 1000;

const BASE: &str = "/1.2/rtm/service-conversations";

pub(super) fn routes() -> Routes {
    Routes::new()
        .at(&format!("{BASE}/{{cid}}/subscribers"), &["GET", "POST"], get(subscribers).post(subscribe))
        .at(&format!("{BASE}/{{cid}}/subscribers/count"), &["GET"], get(subscriber_count))
        .at(&format!("{BASE}/{{cid}}/subscribers/{{client}}"), &["DELETE"], delete(unsubscribe))
        .at(&format!("{BASE}/{{cid}}/subscribers/{{client}}/messages"), &["GET"], get(subscriber_history))
        .at(
            &format!("{BASE}/{{cid}}/subscribers/{{client}}/messages/{{mid}}"),
            &["DELETE"],
            delete(delete_targeted),
        )
        .at(&format!("{BASE}/{{cid}}/broadcasts"), &["POST"], post(broadcast))
        .at(&format!("{BASE}/{{cid}}/messages"), &["POST"], post(send_targeted))
        .at("/1.2/rtm/broadcasts", &["GET", "POST"], get(list_broadcasts).post(global_broadcast))
        .at("/1.2/rtm/broadcasts/{mid}", &["DELETE"], delete(delete_broadcast))
        .at("/1.2/rtm/clients/{client}/service-conversations", &["GET"], get(subscriptions))
}

fn ok_empty() -> Response {
    axum::Json(json!({})).into_response()
}

fn limit_param(q: &HashMap<String, String>, default: usize, max: usize) -> Result<usize, RestError> {
    Ok(super::conversations::number(q, "limit")?.map_or(default, |l| l.min(max)))
}

fn bool_field(body: &Map<String, Value>, key: &str) -> Result<bool, RestError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(RestError::bad_request(format!("{key} must be a boolean"))),
    }
}

/// `POST …/{cid}/subscribers` `{"client_id"}` → `{}`.
async fn subscribe(
    State(gateway): State<Gateway>,
    Path(cid): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let body = json_object(body, false)?;
    let client = body
        .get("client_id")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| RestError::bad_request("client_id is required"))?;
    gateway.engine.admin_subscribe(&caller.app_id, &cid, client, true).await?;
    Ok(ok_empty())
}

/// `DELETE …/{cid}/subscribers/{client}` → `{}`.
async fn unsubscribe(
    State(gateway): State<Gateway>,
    Path((cid, client)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    gateway.engine.admin_subscribe(&caller.app_id, &cid, &client, false).await?;
    Ok(ok_empty())
}

/// `GET …/{cid}/subscribers?limit=&client_id=`: subscribers by client id, after
/// `client_id` (exclusive), at most 50: `[{"timestamp","subscriber","conv_id"}]`.
async fn subscribers(
    State(gateway): State<Gateway>,
    Path(cid): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    subscribers_page(&gateway, &caller.app_id, &cid, &q).await
}

/// One page of a service conversation's subscribers (also `/1.1/rtm/conversation/subscribers`).
pub(super) async fn subscribers_page(
    gateway: &Gateway,
    app_id: &str,
    cid: &str,
    q: &HashMap<String, String>,
) -> Result<Response, RestError> {
    let limit = limit_param(q, SUBSCRIBERS_PAGE, SUBSCRIBERS_PAGE)?;
    let after = q.get("client_id").map(String::as_str).unwrap_or("");
    let engine = &gateway.engine;
    let mut all = engine.admin_member_list(app_id, &[ConvKind::System], cid).await?;
    all.sort_unstable();
    let mut page = Vec::new();
    for client in all.into_iter().filter(|c| c.as_str() > after).take(limit) {
        // A subscriber who left meanwhile has no time: skipped.
        if let Some(t) = engine.admin_subscribed_at(app_id, cid, &client).await? {
            page.push(json!({"timestamp": t, "subscriber": client, "conv_id": cid}));
        }
    }
    Ok(axum::Json(Value::Array(page)).into_response())
}

/// `GET …/{cid}/subscribers/count` → `{"count": n}`.
async fn subscriber_count(
    State(gateway): State<Gateway>,
    Path(cid): Path<String>,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let all = gateway.engine.admin_member_list(&caller.app_id, &[ConvKind::System], &cid).await?;
    Ok(axum::Json(json!({"count": all.len()})).into_response())
}

/// `POST …/{cid}/broadcasts` `{from_client, message, push}` → `{"msg-id","timestamp"}`:
/// to every subscriber, stored and delivered as any message (`push` is accepted; Confab
/// sends no mobile push notifications).
async fn broadcast(
    State(gateway): State<Gateway>,
    Path(cid): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    super::quota(&gateway, &caller.app_id, confab_engine::rate::RestRate::SubscriberBroadcasts)?;
    let body = json_object(body, false)?;
    let (from, msg) = (from_client(&body)?, message_text(&body)?);
    let m = AdminMessage { from, msg, ..Default::default() };
    let (id, t) = gateway.engine.admin_send(&caller.app_id, &[ConvKind::System], &cid, m).await?;
    Ok(axum::Json(json!({"msg-id": id, "timestamp": t})).into_response())
}

/// `POST …/{cid}/messages` `{from_client, to_clients (≤ 20), message, transient}` →
/// `{"msg-id","timestamp"}`: to those clients only.
async fn send_targeted(
    State(gateway): State<Gateway>,
    Path(cid): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    super::quota(&gateway, &caller.app_id, confab_engine::rate::RestRate::Messages)?;
    let body = json_object(body, false)?;
    let m = TargetedMessage {
        from: from_client(&body)?,
        to: client_ids(&body, "to_clients", TO_CLIENTS_MAX)?,
        msg: message_text(&body)?,
        transient: bool_field(&body, "transient")?,
    };
    let (id, t) = gateway.engine.admin_send_targeted(&caller.app_id, &cid, m).await?;
    Ok(axum::Json(json!({"msg-id": id, "timestamp": t})).into_response())
}

/// `GET …/{cid}/subscribers/{client}/messages`: the broadcasts and the messages sent
/// to that client alone, §2.4's parameters.
async fn subscriber_history(
    State(gateway): State<Gateway>,
    Path((cid, client)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let (range, oldest_first) = history_range(&q)?;
    let mut messages = gateway.engine.admin_subscriber_history(&caller.app_id, &cid, &client, range).await?;
    if !oldest_first {
        messages.reverse();
    }
    Ok(axum::Json(Value::Array(messages.iter().map(record).collect())).into_response())
}

/// `DELETE …/{cid}/subscribers/{client}/messages/{mid}?timestamp=`: a message sent to
/// that client alone (the server's copy) → `{}`.
async fn delete_targeted(
    State(gateway): State<Gateway>,
    Path((cid, client, mid)): Path<(String, String, String)>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let timestamp = query_timestamp(&q)?;
    gateway.engine.admin_delete_targeted(&caller.app_id, &cid, &client, &mid, timestamp).await?;
    Ok(ok_empty())
}

/// `POST /1.2/rtm/broadcasts` `{from_client, conv_id, message, valid_till, push,
/// transient}` → `{"msg-id","timestamp"}`: to every client of the app.
async fn global_broadcast(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    super::quota(&gateway, &caller.app_id, confab_engine::rate::RestRate::AppBroadcasts)?;
    let body = json_object(body, false)?;
    let cid = body
        .get("conv_id")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| RestError::bad_request("conv_id (a service conversation) is required"))?
        .to_owned();
    let (from, msg) = (from_client(&body)?, message_text(&body)?);
    let transient = bool_field(&body, "transient")?;
    match body.get("valid_till") {
        None | Some(Value::Null | Value::Number(_)) => {}
        Some(_) => return Err(RestError::bad_request("valid_till must be a timestamp in ms")),
    }
    let (id, t) = gateway.engine.admin_global_broadcast(&caller.app_id, &cid, &from, msg, transient).await?;
    Ok(axum::Json(json!({"msg-id": id, "timestamp": t})).into_response())
}

/// `GET /1.2/rtm/broadcasts?conv_id=&limit=&skip=`: the app-wide broadcasts of a
/// service conversation, newest first, as history records.
async fn list_broadcasts(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let cid = q
        .get("conv_id")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| RestError::bad_request("conv_id is required"))?;
    let limit = limit_param(&q, BROADCASTS_DEFAULT, BROADCASTS_MAX)?;
    let skip = super::conversations::number(&q, "skip")?.unwrap_or(0);
    let all = gateway.engine.admin_broadcasts(&caller.app_id, cid, skip, limit).await?;
    Ok(axum::Json(Value::Array(all.iter().map(record).collect())).into_response())
}

/// `DELETE /1.2/rtm/broadcasts/{mid}` → `{}`; unknown ids: 404 with 4404.
async fn delete_broadcast(
    State(gateway): State<Gateway>,
    Path(mid): Path<String>,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    if !gateway.engine.admin_delete_broadcast(&caller.app_id, &mid).await? {
        let e = confab_types::ProtocolError::new(confab_types::ErrorCode::MessageNotFound, mid);
        return Err(e.into());
    }
    Ok(ok_empty())
}

/// `GET /1.2/rtm/clients/{client}/service-conversations?conv_id=&timestamp=&limit=&direction=`:
/// the client's subscriptions by subscription time, `new` (oldest first, the default)
/// or `old`, after the (`conv_id`, `timestamp`) of the previous page's last one.
async fn subscriptions(
    State(gateway): State<Gateway>,
    Path(client): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    subscriptions_page(&gateway, &caller.app_id, &client, &q).await
}

/// One page of a client's subscriptions (also `GET /1.1/rtm/conversation/subscription`).
pub(super) async fn subscriptions_page(
    gateway: &Gateway,
    app_id: &str,
    client: &str,
    q: &HashMap<String, String>,
) -> Result<Response, RestError> {
    let limit = limit_param(q, SUBSCRIPTIONS_DEFAULT, SUBSCRIPTIONS_MAX)?;
    let newest_first = match q.get("direction").map(String::as_str) {
        None | Some("" | "new") => false,
        Some("old") => true,
        Some(_) => return Err(RestError::bad_request("direction must be new or old")),
    };
    let start = match (q.get("conv_id").filter(|c| !c.is_empty()), q.get("timestamp")) {
        (None, _) => None,
        (Some(cid), Some(t)) => {
            let t = super::conversations::timestamp_param("timestamp", t)?
                .ok_or_else(|| RestError::bad_request("timestamp is required with conv_id"))?;
            Some((t, cid.clone()))
        }
        (Some(_), None) => return Err(RestError::bad_request("timestamp is required with conv_id")),
    };
    let engine = &gateway.engine;
    let max = engine.app(app_id).map_or(0, |a| a.config.limits.query_scan_max);
    let convs = engine.admin_subscriptions(app_id, client, max).await?;
    let mut subs = Vec::new();
    for conv in convs {
        if let Some(t) = engine.admin_subscribed_at(app_id, &conv.id, client).await? {
            subs.push((t, conv.id));
        }
    }
    subs.sort();
    if newest_first {
        subs.reverse();
    }
    let page: Vec<Value> = subs
        .into_iter()
        .filter(|key| match &start {
            None => true,
            Some(s) if newest_first => key < s,
            Some(s) => key > s,
        })
        .take(limit)
        .map(|(t, cid)| json!({"timestamp": t, "subscriber": client, "conv_id": cid}))
        .collect();
    Ok(axum::Json(Value::Array(page)).into_response())
}

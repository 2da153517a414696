//! The `/1.1/rtm/…` calls that old backends, the Python SDK (`leancloud` 3.x:
//! `Message.find_*`, `Conversation.send`, `Conversation.broadcast`) and the 4.x client
//! SDK (`/1.1/rtm/notifications`) still make. Each maps onto the operation of the
//! 1.2 API; parameters come in the JSON body or the query string, either.

use super::auth::authenticate;
use super::conversations::{Body, Params, history_range, record};
use super::{RestError, Routes, json_object};
use crate::Gateway;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use confab_engine::engine::{AdminMessage, AdminPatch, SILENCE_MAX_SECS, TargetedMessage};
use confab_engine::ports::ConvKind;
use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// Every kind: 1.1 paths are not split by kind.
const ALL_KINDS: &[ConvKind] =
    &[ConvKind::Normal, ConvKind::Temporary, ConvKind::Transient, ConvKind::System];
/// At most this many peers per `to_peers` or online check (LeanCloud's limit).
const PEERS_MAX: usize = 20;
/// A chat room's member sample (LeanCloud: at most 50).
const ROOM_SAMPLE_MAX: usize = 50;
/// At most this many notifications per answer; `hasMore` says when more follow.
const NOTIFICATIONS_PAGE: usize = 100;

pub(super) fn routes() -> Routes {
    Routes::new()
        .at("/1.1/rtm/messages/history", &["GET"], get(history))
        .at("/1.1/rtm/messages/logs", &["GET", "PUT", "DELETE"], get(history).put(put_log).delete(delete_log))
        .at("/1.1/rtm/messages", &["POST"], post(send))
        .at("/1.1/rtm/patch/message", &["POST"], post(patch))
        .at("/1.1/rtm/messages/unread/{client}", &["GET"], get(unread))
        .at("/1.1/rtm/messages/unread/{client}/{cid}", &["GET"], get(unread_in))
        .at(
            "/1.1/rtm/broadcast",
            &["GET", "POST", "DELETE"],
            get(broadcasts).post(broadcast).delete(delete_broadcast),
        )
        .at("/1.1/rtm/broadcast/subscriber", &["POST"], post(broadcast_to_subscribers))
        .at(
            "/1.1/rtm/conversation/subscription",
            &["GET", "POST", "DELETE"],
            get(subscriptions)
                .post(|s: State<Gateway>, h: HeaderMap, q: Params, b: Body| subscribe(s, h, q, b, true))
                .delete(|s: State<Gateway>, h: HeaderMap, q: Params, b: Body| subscribe(s, h, q, b, false)),
        )
        .at("/1.1/rtm/conversation/subscribers", &["GET"], get(subscribers))
        .at("/1.1/rtm/conversation/subscribers/count", &["GET"], get(subscriber_count))
        .at("/1.1/rtm/conversation/subscribed", &["GET"], get(subscribed))
        .at(
            "/1.1/rtm/conversation/blacklist",
            &["POST", "DELETE"],
            post(|s: State<Gateway>, h: HeaderMap, q: Params, b: Body| silence(s, h, q, b, true))
                .delete(|s: State<Gateway>, h: HeaderMap, q: Params, b: Body| silence(s, h, q, b, false)),
        )
        .at("/1.1/rtm/transient_group/onlines", &["GET"], get(room_online_count))
        .at("/1.1/rtm/transient_group/members", &["GET"], get(room_members))
        .at("/1.1/rtm/online", &["POST"], post(online))
        .at("/1.1/rtm/client/kick", &["POST"], post(kick))
        .at("/1.1/rtm/notifications", &["GET"], get(notifications))
}

/// The parameters of a 1.1 call: the JSON body's, completed by the query string's.
struct Input(Map<String, Value>);

impl Input {
    fn new(q: HashMap<String, String>, body: Option<Body>) -> Result<Input, RestError> {
        let mut map = match body {
            Some(body) => json_object(body, true)?,
            None => Map::new(),
        };
        for (k, v) in q {
            map.entry(k).or_insert(Value::String(v));
        }
        Ok(Input(map))
    }

    fn opt(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str).filter(|v| !v.is_empty())
    }

    fn required(&self, key: &str) -> Result<String, RestError> {
        self.opt(key).map(str::to_owned).ok_or_else(|| RestError::bad_request(format!("{key} is required")))
    }

    fn flag(&self, key: &str, default: bool) -> Result<bool, RestError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
                "" => Ok(default),
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(RestError::bad_request(format!("{key} must be true or false"))),
            },
            Some(_) => Err(RestError::bad_request(format!("{key} must be true or false"))),
        }
    }

    fn int(&self, key: &str) -> Result<Option<i64>, RestError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.is_finite() && f.abs() < 9.0e15).map(|f| f as i64))
                .map(Some)
                .ok_or_else(|| RestError::bad_request(format!("{key} must be a number"))),
            Some(Value::String(s)) => super::conversations::timestamp_param(key, s),
            Some(_) => Err(RestError::bad_request(format!("{key} must be a number"))),
        }
    }

    /// A list of client ids: a JSON array, or one comma-separated string.
    fn peers(&self, key: &str) -> Result<Option<Vec<String>>, RestError> {
        let bad = || RestError::bad_request(format!("{key} must be up to {PEERS_MAX} client ids"));
        let ids: Vec<String> = match self.0.get(key) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Array(items)) => {
                items.iter().map(|v| v.as_str().map(str::to_owned)).collect::<Option<_>>().ok_or_else(bad)?
            }
            Some(Value::String(s)) if s.is_empty() => return Ok(None),
            Some(Value::String(s)) => s.split(',').map(|p| p.trim().to_owned()).collect(),
            Some(_) => return Err(bad()),
        };
        if ids.is_empty() || ids.len() > PEERS_MAX || ids.iter().any(String::is_empty) {
            return Err(bad());
        }
        Ok(Some(ids))
    }

    /// `message`: a string, or other JSON sent as its text.
    fn message(&self) -> Result<String, RestError> {
        match self.0.get("message") {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) if !v.is_null() => Ok(v.to_string()),
            _ => Err(RestError::bad_request("message is required")),
        }
    }

    /// The query string view §2.4's paging reads (`peerid` is 1.1's `client_id`).
    fn strings(&self) -> HashMap<String, String> {
        self.0
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
            .collect()
    }
}

fn json(v: Value) -> Response {
    axum::Json(v).into_response()
}

/// `GET /1.1/rtm/messages/history` (and the older `/1.1/rtm/messages/logs`): with
/// `convid` one conversation's records, with `from` one sender's, else the app's.
async fn history(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let input = Input::new(q, None)?;
    let q = input.strings();
    if let Some(cid) = input.opt("convid") {
        let (range, oldest_first) = history_range(&q)?;
        let mut messages = gateway.engine.admin_history(&caller.app_id, ALL_KINDS, cid, range).await?;
        if !oldest_first {
            messages.reverse();
        }
        return Ok(json(Value::Array(messages.iter().map(record).collect())));
    }
    super::messages::app_history(&gateway, &caller.app_id, input.opt("from"), &q).await
}

/// `DELETE /1.1/rtm/messages/logs` (`convid`, `msgid`, `timestamp`) → `{}`.
async fn delete_log(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Query(q): Params,
    body: Body,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let input = Input::new(q, Some(body))?;
    let (cid, mid) = (input.required("convid")?, input.required("msgid")?);
    let ts = input.int("timestamp")?;
    gateway.engine.admin_delete_message(&caller.app_id, ALL_KINDS, &cid, &mid, ts).await?;
    Ok(json(json!({})))
}

/// `PUT /1.1/rtm/messages/logs` with a history record (`conv-id`, `msg-id`,
/// `timestamp`, `from`, `data`; the query's or 1.1's `convid`/`msgid` also do) → `{}`:
/// the message's new body, applied as the 1.2 edit applies it (the sender's `patch`, the
/// same push to members, the same hooks, stored before the answer). `msg-id` and
/// `timestamp` name the message and cannot change.
async fn put_log(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Query(q): Params,
    body: Body,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    super::quota(&gateway, &caller.app_id, confab_engine::rate::RestRate::Messages)?;
    let input = Input::new(q, Some(body))?;
    let either = |a: &str, b: &str| input.required(a).or_else(|_| input.required(b));
    let cid = either("conv-id", "convid")?;
    let p = AdminPatch {
        from: input.required("from")?,
        mid: either("msg-id", "msgid")?,
        timestamp: input.int("timestamp")?,
        data: Some(match input.0.get("data") {
            Some(Value::String(s)) => s.clone(),
            Some(v) if !v.is_null() => v.to_string(),
            _ => return Err(RestError::bad_request("data is required")),
        }),
    };
    gateway.engine.admin_patch(&caller.app_id, ALL_KINDS, &cid, p).await?;
    Ok(json(json!({})))
}

/// `POST /1.1/rtm/messages` (`from_peer`, `conv_id`, `message`, `transient` — true
/// unless told otherwise, as 1.1 defines it — and `to_peers` for a service
/// conversation's targeted message) → `{"msg-id","timestamp"}`.
async fn send(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Query(q): Params,
    body: Body,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    super::quota(&gateway, &caller.app_id, confab_engine::rate::RestRate::Messages)?;
    let input = Input::new(q, Some(body))?;
    let (from, cid, msg) = (input.required("from_peer")?, input.required("conv_id")?, input.message()?);
    let transient = input.flag("transient", true)?;
    let engine = &gateway.engine;
    let (id, t) = match input.peers("to_peers")? {
        Some(to) => {
            let m = TargetedMessage { from, to, msg, transient };
            engine.admin_send_targeted(&caller.app_id, &cid, m).await?
        }
        None => {
            let m = AdminMessage { from, msg, transient, ..Default::default() };
            engine.admin_send(&caller.app_id, ALL_KINDS, &cid, m).await?
        }
    };
    Ok(json(json!({"msg-id": id, "timestamp": t})))
}

/// `POST /1.1/rtm/patch/message` (`from_peer`, `conv_id`, `msg_id`, `timestamp`,
/// `message`, `recall`, `to_peers`) → `{}`.
async fn patch(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Query(q): Params,
    body: Body,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    super::quota(&gateway, &caller.app_id, confab_engine::rate::RestRate::Messages)?;
    let input = Input::new(q, Some(body))?;
    let cid = input.required("conv_id")?;
    let recall = input.flag("recall", false)?;
    let p = AdminPatch {
        from: input.required("from_peer")?,
        mid: input.required("msg_id")?,
        timestamp: input.int("timestamp")?,
        data: if recall { None } else { Some(input.message()?) },
    };
    let engine = &gateway.engine;
    match input.peers("to_peers")? {
        Some(to) => engine.admin_patch_targeted(&caller.app_id, &cid, &to, p).await?,
        None => engine.admin_patch(&caller.app_id, ALL_KINDS, &cid, p).await?,
    };
    Ok(json(json!({})))
}

/// `GET /1.1/rtm/messages/unread/{client}` (app key allowed) → `{"count": n}`.
async fn unread(
    State(gateway): State<Gateway>,
    Path(client): Path<String>,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?;
    let count = gateway.engine.admin_unread(&caller.app_id, &client, None).await?;
    Ok(json(json!({ "count": count })))
}

/// `GET /1.1/rtm/messages/unread/{client}/{cid}` (app key allowed) → `{"count": n}`.
async fn unread_in(
    State(gateway): State<Gateway>,
    Path((client, cid)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?;
    let count = gateway.engine.admin_unread(&caller.app_id, &client, Some(&cid)).await?;
    Ok(json(json!({ "count": count })))
}

/// `POST /1.1/rtm/broadcast` (`from_peer`, `conv_id`, `message`, `valid_till`, `push`,
/// `transient`) → `{"msg-id","timestamp"}`: to every client of the app.
async fn broadcast(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Query(q): Params,
    body: Body,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    super::quota(&gateway, &caller.app_id, confab_engine::rate::RestRate::AppBroadcasts)?;
    let input = Input::new(q, Some(body))?;
    let (from, cid, msg) = (input.required("from_peer")?, input.required("conv_id")?, input.message()?);
    let transient = input.flag("transient", false)?;
    let (id, t) = gateway.engine.admin_global_broadcast(&caller.app_id, &cid, &from, msg, transient).await?;
    Ok(json(json!({"msg-id": id, "timestamp": t})))
}

/// `GET /1.1/rtm/broadcast?conv_id=&limit=&skip=`: the app-wide broadcasts, newest first.
async fn broadcasts(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let input = Input::new(q, None)?;
    let cid = input.required("conv_id")?;
    let q = input.strings();
    let limit = super::conversations::number(&q, "limit")?.unwrap_or(100).min(1000);
    let skip = super::conversations::number(&q, "skip")?.unwrap_or(0);
    let all = gateway.engine.admin_broadcasts(&caller.app_id, &cid, skip, limit).await?;
    Ok(json(Value::Array(all.iter().map(record).collect())))
}

/// `DELETE /1.1/rtm/broadcast?mid=` → `{}`.
async fn delete_broadcast(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Query(q): Params,
    body: Body,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let mid = Input::new(q, Some(body))?.required("mid")?;
    if !gateway.engine.admin_delete_broadcast(&caller.app_id, &mid).await? {
        let e = confab_types::ProtocolError::new(confab_types::ErrorCode::MessageNotFound, mid);
        return Err(e.into());
    }
    Ok(json(json!({})))
}

/// `POST /1.1/rtm/broadcast/subscriber` (`from_peer`, `conv_id`, `message`) →
/// `{"msg-id","timestamp"}`: to the service conversation's subscribers.
async fn broadcast_to_subscribers(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Query(q): Params,
    body: Body,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    super::quota(&gateway, &caller.app_id, confab_engine::rate::RestRate::SubscriberBroadcasts)?;
    let input = Input::new(q, Some(body))?;
    let (from, cid, msg) = (input.required("from_peer")?, input.required("conv_id")?, input.message()?);
    let m = AdminMessage { from, msg, ..Default::default() };
    let (id, t) = gateway.engine.admin_send(&caller.app_id, &[ConvKind::System], &cid, m).await?;
    Ok(json(json!({"msg-id": id, "timestamp": t})))
}

/// `POST` / `DELETE /1.1/rtm/conversation/subscription` (`conv_id`, `client_id`) → `{}`.
async fn subscribe(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Query(q): Params,
    body: Body,
    on: bool,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let input = Input::new(q, Some(body))?;
    let (cid, client) = (input.required("conv_id")?, input.required("client_id")?);
    gateway.engine.admin_subscribe(&caller.app_id, &cid, &client, on).await?;
    Ok(json(json!({})))
}

/// `GET /1.1/rtm/conversation/subscription?client_id=&conv_id=&timestamp=&limit=&direction=`.
async fn subscriptions(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let input = Input::new(q, None)?;
    let client = input.required("client_id")?;
    super::service::subscriptions_page(&gateway, &caller.app_id, &client, &input.strings()).await
}

/// `GET /1.1/rtm/conversation/subscribers?conv_id=&client_id=&limit=`.
async fn subscribers(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let input = Input::new(q, None)?;
    let cid = input.required("conv_id")?;
    super::service::subscribers_page(&gateway, &caller.app_id, &cid, &input.strings()).await
}

/// `GET /1.1/rtm/conversation/subscribers/count?conv_id=` → `{"count": n}`.
async fn subscriber_count(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let cid = Input::new(q, None)?.required("conv_id")?;
    let all = gateway.engine.admin_member_list(&caller.app_id, &[ConvKind::System], &cid).await?;
    Ok(json(json!({"count": all.len()})))
}

/// `GET /1.1/rtm/conversation/subscribed?conv_id=&client_id=` → `true` / `false`.
async fn subscribed(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let input = Input::new(q, None)?;
    let (cid, client) = (input.required("conv_id")?, input.required("client_id")?);
    let all = gateway.engine.admin_member_list(&caller.app_id, &[ConvKind::System], &cid).await?;
    Ok(json(Value::Bool(all.contains(&client))))
}

/// `POST` / `DELETE /1.1/rtm/conversation/blacklist` (`client_id`, `conv_id`, `ttl`):
/// 1.1's "blacklist" is a temporary silence (`ttl` seconds, ≤ 24 h) → `{}`.
async fn silence(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Query(q): Params,
    body: Body,
    on: bool,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let input = Input::new(q, Some(body))?;
    let (cid, client) = (input.required("conv_id")?, input.required("client_id")?);
    let ttl =
        if on {
            let ttl = input.int("ttl")?.filter(|t| (1..=SILENCE_MAX_SECS).contains(t));
            Some(ttl.ok_or_else(|| {
                RestError::bad_request(format!("ttl must be 1 to {SILENCE_MAX_SECS} seconds"))
            })?)
        } else {
            None
        };
    gateway.engine.admin_silence(&caller.app_id, ALL_KINDS, &cid, &client, ttl).await?;
    Ok(json(json!({})))
}

/// `GET /1.1/rtm/transient_group/onlines?gid=` (app key allowed) → `{"result": n}`.
async fn room_online_count(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?;
    let gid = Input::new(q, None)?.required("gid")?;
    let clients = gateway.engine.admin_room_clients(&caller.app_id, &gid).await?;
    Ok(json(json!({"result": clients.len()})))
}

/// `GET /1.1/rtm/transient_group/members?gid=` (app key allowed) → `{"result": [ids]}`
/// (at most 50).
async fn room_members(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?;
    let gid = Input::new(q, None)?.required("gid")?;
    let mut clients = gateway.engine.admin_room_clients(&caller.app_id, &gid).await?;
    clients.truncate(ROOM_SAMPLE_MAX);
    Ok(json(json!({"result": clients})))
}

/// `POST /1.1/rtm/online` `{"peers": […]}` (≤ 20) → `{"results": [online ids]}`.
async fn online(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Query(q): Params,
    body: Body,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let input = Input::new(q, Some(body))?;
    let peers = input.peers("peers")?.ok_or_else(|| RestError::bad_request("peers is required"))?;
    let online = gateway.engine.admin_online(&caller.app_id, peers).await?;
    Ok(json(json!({ "results": online })))
}

/// `POST /1.1/rtm/client/kick` (`client_id`, `reason`) → `{}`.
async fn kick(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Query(q): Params,
    body: Body,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let input = Input::new(q, Some(body))?;
    let client = input.required("client_id")?;
    let reason = input.opt("reason").unwrap_or("");
    if reason.chars().count() > 20 {
        return Err(RestError::bad_request("reason must be at most 20 characters"));
    }
    gateway.engine.admin_kick(&caller.app_id, &client, reason).await?;
    Ok(json(json!({})))
}

/// `GET /1.1/rtm/notifications?client_id=&start_ts=&notification_type=permanent` with
/// `X-LC-IM-Session-Token` (what 4.x asks after a reconnect) →
/// `{"hasMore": bool, "notifications": [{"cmd": "conv", "op": "joined", "serverTs",
/// "cid", "initBy"}]}`: the conversations the client joined since `start_ts`.
async fn notifications(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?;
    let input = Input::new(q, None)?;
    let client = input.required("client_id")?;
    let since = input.int("start_ts")?.unwrap_or(0);
    let token = headers
        .get("x-lc-im-session-token")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(RestError::unauthorized)?;
    let joined = gateway
        .engine
        .admin_notifications(&caller.app_id, &client, token, since, NOTIFICATIONS_PAGE + 1)
        .await?
        .ok_or_else(RestError::unauthorized)?;
    let has_more = joined.len() > NOTIFICATIONS_PAGE;
    let notifications: Vec<Value> = joined
        .into_iter()
        .take(NOTIFICATIONS_PAGE)
        .map(|(cid, at, by)| json!({"cmd": "conv", "op": "joined", "serverTs": at, "cid": cid, "initBy": by}))
        .collect();
    Ok(json(json!({"hasMore": has_more, "notifications": notifications})))
}

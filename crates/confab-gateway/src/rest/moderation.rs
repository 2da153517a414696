//! Mutes, member roles (`member-infos`), temporary and permanent silences, and
//! conversation blacklists (§3.7 of LeanCloud's pre-2024 REST documentation).
//!
//! Roles, permanent silences and blacklists act through the same engine paths as an
//! owner's requests (same pushes; blocking removes members). Chat rooms keep no members
//! in Confab: their roles and silences are held per client, and a blocked client's
//! sessions leave the room. Service conversations have blacklists (blocked clients are
//! unsubscribed and cannot subscribe again). A client's own blacklist of conversations
//! (`/1.2/rtm/clients/{client}/blacklists`) keeps others from adding it.

use super::auth::authenticate;
use super::conversations::{Body, Family, Params};
use super::{RestError, Routes, client_ids, json_object};
use crate::Gateway;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use confab_engine::engine::{SILENCE_MAX_SECS, member_info_id};
use confab_engine::ports::ConvKind;
use confab_types::time::iso8601;
use confab_types::{RestrictionKind, RestrictionOp};
use serde_json::{Value, json};

/// At most this many clients per mute, silence or blacklist call.
const CLIENTS_PER_CALL: usize = 500;
/// Page size of the silence and blacklist lists: default (LeanCloud) and our maximum.
const LIST_DEFAULT: usize = 10;
const LIST_MAX: usize = 1000;

pub(super) fn routes() -> Routes {
    use Family::{ChatRooms, Conversations, Service};
    let conv = Conversations.base();
    let mut routes = Routes::new()
        .at(
            &format!("{conv}/{{cid}}/mutes"),
            &["GET", "POST", "DELETE"],
            get(muted)
                .post(|s: State<Gateway>, p: Path<String>, h: HeaderMap, b: Body| mute(s, p, h, b, true))
                .delete(|s: State<Gateway>, p: Path<String>, h: HeaderMap, b: Body| mute(s, p, h, b, false)),
        )
        .at(
            "/1.2/rtm/clients/{client}/blacklists",
            &["GET", "POST", "DELETE"],
            get(client_blocks)
                .post(|s: State<Gateway>, p: Path<String>, h: HeaderMap, q: Params, b: Body| {
                    client_block(s, p, h, q, b, true)
                })
                .delete(|s: State<Gateway>, p: Path<String>, h: HeaderMap, q: Params, b: Body| {
                    client_block(s, p, h, q, b, false)
                }),
        );
    for family in [Conversations, ChatRooms] {
        let base = family.base();
        routes = routes
            .at(
                &format!("{base}/{{cid}}/member-infos"),
                &["GET", "POST"],
                get(move |s: State<Gateway>, p: Path<String>, h: HeaderMap, q: Params| {
                    roles(s, p, h, q, family)
                })
                .post(move |s: State<Gateway>, p: Path<String>, h: HeaderMap, b: Body| {
                    add_role(s, p, h, b, family)
                }),
            )
            .at(
                &format!("{base}/{{cid}}/member-infos/{{info}}"),
                &["PUT", "DELETE"],
                put(move |s: State<Gateway>, p: Path<(String, String)>, h: HeaderMap, b: Body| {
                    update_role(s, p, h, b, family)
                })
                .delete(
                    move |s: State<Gateway>, p: Path<(String, String)>, h: HeaderMap| {
                        delete_role(s, p, h, family)
                    },
                ),
            )
            .at(
                &format!("{base}/{{cid}}/permanent-silenceds"),
                &["GET", "POST", "DELETE"],
                restriction_routes(family, RestrictionKind::ShutUp),
            )
            .at(
                &format!("{base}/{{cid}}/temporary-silenceds"),
                &["POST", "DELETE"],
                post(move |s: State<Gateway>, p: Path<String>, h: HeaderMap, b: Body| {
                    silence(s, p, h, b, family)
                })
                .delete(
                    move |s: State<Gateway>, p: Path<String>, h: HeaderMap, q: Params| {
                        unsilence(s, p, h, q, family)
                    },
                ),
            );
    }
    for family in [Conversations, ChatRooms, Service] {
        routes = routes.at(
            &format!("{}/{{cid}}/blacklists", family.base()),
            &["GET", "POST", "DELETE"],
            restriction_routes(family, RestrictionKind::Block),
        );
    }
    routes
}

fn restriction_routes(family: Family, kind: RestrictionKind) -> axum::routing::MethodRouter<Gateway> {
    let (on, off) = match kind {
        RestrictionKind::ShutUp => (RestrictionOp::ShutUp, RestrictionOp::Unshut),
        RestrictionKind::Block => (RestrictionOp::Block, RestrictionOp::Unblock),
    };
    get(move |s: State<Gateway>, p: Path<String>, h: HeaderMap, q: Params| {
        restricted(s, p, h, q, family, kind)
    })
    .post(move |s: State<Gateway>, p: Path<String>, h: HeaderMap, b: Body| restrict(s, p, h, b, family, on))
    .delete(move |s: State<Gateway>, p: Path<String>, h: HeaderMap, b: Body| {
        restrict(s, p, h, b, family, off)
    })
}

fn updated(at: i64, cid: &str) -> Response {
    axum::Json(json!({"updatedAt": iso8601(at), "objectId": cid})).into_response()
}

/// `POST` / `DELETE /1.2/rtm/conversations/{cid}/mutes` `{"client_ids": […]}`.
async fn mute(
    State(gateway): State<Gateway>,
    Path(cid): Path<String>,
    headers: HeaderMap,
    body: Body,
    on: bool,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let ids = client_ids(&json_object(body, false)?, "client_ids", CLIENTS_PER_CALL)?;
    let at = gateway.engine.admin_mute(&caller.app_id, &cid, &ids, on).await?;
    Ok(updated(at, &cid))
}

/// `GET /1.2/rtm/conversations/{cid}/mutes` → `{"result": […]}`.
async fn muted(
    State(gateway): State<Gateway>,
    Path(cid): Path<String>,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let muted = gateway.engine.admin_muted(&caller.app_id, &cid).await?;
    Ok(axum::Json(json!({ "result": muted })).into_response())
}

fn string_field<'a>(body: &'a serde_json::Map<String, Value>, key: &str) -> Result<&'a str, RestError> {
    body.get(key)
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| RestError::bad_request(format!("{key} is required")))
}

/// `GET …/member-infos?skip=&limit=&role=` → `{"results": [{clientId, objectId, role}]}`:
/// the owner and the managers (plain members have no record).
async fn roles(
    State(gateway): State<Gateway>,
    Path(cid): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
    family: Family,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let skip = super::conversations::number(&q, "skip")?.unwrap_or(0);
    let limit = super::conversations::number(&q, "limit")?.unwrap_or(LIST_MAX).min(LIST_MAX);
    let role = q.get("role").filter(|r| !r.is_empty());
    let all = gateway.engine.admin_roles(&caller.app_id, role_kinds(family), &cid).await?;
    let results: Vec<Value> = all
        .into_iter()
        .filter(|r| role.is_none_or(|role| *role == r.role))
        .skip(skip)
        .take(limit)
        .map(|r| json!({"clientId": r.client, "objectId": r.info_id, "role": r.role, "cid": cid}))
        .collect();
    Ok(axum::Json(json!({ "results": results })).into_response())
}

/// `POST …/member-infos` `{clientId, role}` → `{"updatedAt","objectId"}` (the record's
/// id). `Owner` cannot be given, as for clients.
async fn add_role(
    State(gateway): State<Gateway>,
    Path(cid): Path<String>,
    headers: HeaderMap,
    body: Body,
    family: Family,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let body = json_object(body, false)?;
    let (client, role) = (string_field(&body, "clientId")?, string_field(&body, "role")?);
    let at = gateway.engine.admin_set_role(&caller.app_id, role_kinds(family), &cid, client, role).await?;
    Ok(updated(at, &member_info_id(&cid, client)))
}

/// The kinds that have roles under a path: normal conversations (not temporary ones)
/// and chat rooms.
fn role_kinds(family: Family) -> &'static [ConvKind] {
    match family {
        Family::ChatRooms => &[ConvKind::Transient],
        Family::Conversations | Family::Service => &[ConvKind::Normal],
    }
}

/// The client an info id names: a current member whose derived id it is (in a chat
/// room, which keeps no members: a client with a role record).
async fn info_member(
    gateway: &Gateway,
    app_id: &str,
    family: Family,
    cid: &str,
    info: &str,
) -> Result<String, RestError> {
    let candidates = if family == Family::ChatRooms {
        let roles = gateway.engine.admin_roles(app_id, role_kinds(family), cid).await?;
        roles.into_iter().map(|r| r.client).collect()
    } else {
        gateway.engine.admin_member_list(app_id, role_kinds(family), cid).await?
    };
    candidates.into_iter().find(|m| member_info_id(cid, m) == info).ok_or_else(|| {
        let e =
            confab_types::ProtocolError::new(confab_types::ErrorCode::ConversationMembershipRequired, info);
        RestError::from(e).with_status(axum::http::StatusCode::NOT_FOUND)
    })
}

/// `PUT …/member-infos/{info}` `{role}` → `{"updatedAt","objectId"}`.
async fn update_role(
    State(gateway): State<Gateway>,
    Path((cid, info)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
    family: Family,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let body = json_object(body, false)?;
    let role = string_field(&body, "role")?;
    let client = info_member(&gateway, &caller.app_id, family, &cid, &info).await?;
    let at = gateway.engine.admin_set_role(&caller.app_id, role_kinds(family), &cid, &client, role).await?;
    Ok(updated(at, &info))
}

/// `DELETE …/member-infos/{info}` → `{}`: back to a plain member.
async fn delete_role(
    State(gateway): State<Gateway>,
    Path((cid, info)): Path<(String, String)>,
    headers: HeaderMap,
    family: Family,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let client = info_member(&gateway, &caller.app_id, family, &cid, &info).await?;
    gateway.engine.admin_set_role(&caller.app_id, role_kinds(family), &cid, &client, "Member").await?;
    Ok(axum::Json(json!({})).into_response())
}

/// `POST …/temporary-silenceds` `{client_id, ttl}` (seconds, ≤ 24 h) → `{}`.
async fn silence(
    State(gateway): State<Gateway>,
    Path(cid): Path<String>,
    headers: HeaderMap,
    body: Body,
    family: Family,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let body = json_object(body, false)?;
    let client = string_field(&body, "client_id")?;
    let ttl = body
        .get("ttl")
        .and_then(Value::as_i64)
        .filter(|t| (1..=SILENCE_MAX_SECS).contains(t))
        .ok_or_else(|| RestError::bad_request(format!("ttl must be 1 to {SILENCE_MAX_SECS} seconds")))?;
    gateway.engine.admin_silence(&caller.app_id, family.kinds(), &cid, client, Some(ttl)).await?;
    Ok(axum::Json(json!({})).into_response())
}

/// `DELETE …/temporary-silenceds?client_id=` → `{}`.
async fn unsilence(
    State(gateway): State<Gateway>,
    Path(cid): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
    family: Family,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let client = q
        .get("client_id")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| RestError::bad_request("client_id is required"))?;
    gateway.engine.admin_silence(&caller.app_id, family.kinds(), &cid, client, None).await?;
    Ok(axum::Json(json!({})).into_response())
}

/// `POST` / `DELETE …/permanent-silenceds` or `…/blacklists` `{"client_ids": […]}` →
/// `{}` (clients that could not be changed, such as the owner, under `failed`).
async fn restrict(
    State(gateway): State<Gateway>,
    Path(cid): Path<String>,
    headers: HeaderMap,
    body: Body,
    family: Family,
    op: RestrictionOp,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let ids = client_ids(&json_object(body, false)?, "client_ids", CLIENTS_PER_CALL)?;
    let result = gateway.engine.admin_restrict(&caller.app_id, family.kinds(), &cid, op, ids).await?;
    let mut answer = json!({});
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

/// `GET …/permanent-silenceds` or `…/blacklists?limit=&next=` →
/// `{"client_ids": […], "next": "…"}` (`next` only when more follow).
async fn restricted(
    State(gateway): State<Gateway>,
    Path(cid): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
    family: Family,
    kind: RestrictionKind,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let limit = super::conversations::number(&q, "limit")?.map_or(LIST_DEFAULT, |l| l.clamp(1, LIST_MAX));
    let start = match q.get("next").filter(|n| !n.is_empty()) {
        None => 0,
        Some(n) => {
            n.parse::<usize>().map_err(|_| RestError::bad_request("next must come from a previous page"))?
        }
    };
    let all = gateway.engine.admin_restricted(&caller.app_id, family.kinds(), &cid, kind).await?;
    let page: Vec<&String> = all.iter().skip(start).take(limit).collect();
    let mut answer = json!({ "client_ids": page });
    if start + page.len() < all.len() {
        answer["next"] = json!((start + page.len()).to_string());
    }
    Ok(axum::Json(answer).into_response())
}

/// `POST` / `DELETE /1.2/rtm/clients/{client}/blacklists` `{"conv_id"}` (DELETE also
/// takes `conv_id` in the query) → `{}`: the client blocks a conversation of any kind,
/// so nobody else adds it there (4315), or unblocks it.
async fn client_block(
    State(gateway): State<Gateway>,
    Path(client): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
    body: Body,
    on: bool,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let body = json_object(body, !on)?;
    let cid = match body.get("conv_id") {
        Some(_) => string_field(&body, "conv_id")?,
        None if !on => q
            .get("conv_id")
            .map(String::as_str)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| RestError::bad_request("conv_id is required"))?,
        None => return Err(RestError::bad_request("conv_id is required")),
    };
    gateway.engine.admin_client_block(&caller.app_id, &client, cid, on).await?;
    Ok(axum::Json(json!({})).into_response())
}

/// `GET /1.2/rtm/clients/{client}/blacklists?limit=&next=` →
/// `{"conv_ids": […], "next": "…"}`: the conversations the client blocked, by id;
/// `next` (the last id of the page) only when more follow.
async fn client_blocks(
    State(gateway): State<Gateway>,
    Path(client): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let limit = super::conversations::number(&q, "limit")?.map_or(LIST_DEFAULT, |l| l.clamp(1, LIST_MAX));
    let after = q.get("next").map(String::as_str).filter(|n| !n.is_empty());
    let mut page = gateway.engine.admin_client_blocks(&caller.app_id, &client, after, limit + 1).await?;
    let more = page.len() > limit;
    page.truncate(limit);
    let mut answer = json!({ "conv_ids": page });
    if more && let Some(last) = page.last() {
        answer["next"] = json!(last);
    }
    Ok(axum::Json(answer).into_response())
}

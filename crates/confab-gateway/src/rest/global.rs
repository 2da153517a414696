//! App-wide calls: `GET /1.2/rtm/stats` and `GET /1.2/rtm/all-conversations`.

use super::auth::authenticate;
use super::conversations::{Params, query_kind};
use super::{RestError, Routes};
use crate::Gateway;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

pub(super) fn routes() -> Routes {
    Routes::new().at("/1.2/rtm/stats", &["GET"], get(stats)).at(
        "/1.2/rtm/all-conversations",
        &["GET"],
        get(all_conversations),
    )
}

/// `GET /1.2/rtm/stats` →
/// `{"result": {"online_user_count": n, "user_count_today": n}}`: distinct clients
/// online now, and distinct clients that logged in since midnight UTC (an estimate),
/// on every node of a cluster (this node's while its registry is unreachable; see
/// docs/decisions.md).
async fn stats(State(gateway): State<Gateway>, headers: HeaderMap) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    let (online, today) = gateway.engine.admin_stats(&caller.app_id).await?;
    let result = json!({"online_user_count": online, "user_count_today": today.max(online)});
    Ok(axum::Json(json!({ "result": result })).into_response())
}

/// `GET /1.2/rtm/all-conversations?where=&skip=&limit=&order=`: every kind.
async fn all_conversations(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?.require_master()?;
    query_kind(&gateway, &caller.app_id, &q, None).await
}

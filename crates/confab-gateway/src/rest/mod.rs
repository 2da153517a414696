//! LeanCloud's realtime REST API (`/1.2/rtm/…`) for the app's own backend, on the
//! WebSocket's port.
//!
//! - `auth`: `X-LC-Id` / `X-LC-Key` / `X-LC-Sign` and the legacy `X-AVOSCloud-*`;
//! - `conversations`: conversations, chat rooms and service conversations: create,
//!   query, update, members, send and history;
//! - `clients`: online check, kick and unread counts;
//! - `messages`: edits, recalls and deletions, a client's and the app's messages;
//! - `service`: service conversations' subscribers, broadcasts and targeted messages;
//! - `moderation`: mutes, roles, silences and blacklists;
//! - `global`: stats and every conversation;
//! - `legacy`: the `/1.1/rtm/…` calls of old backends and SDKs;
//! - `sign`: login signatures for LeanStorage users, decided by the `_rtmClientSign` hook.
//! - `classes`: the storage API's IM classes (`/1.1/classes/…`, `/1.1/scan/classes/…`).
//!
//! Every route is listed with its methods (`Routes`), so a test can hold the list
//! against the OpenAPI document (`docs/openapi.json`).
//!
//! Errors are `{"code": N, "error": "…"}` with LeanCloud's HTTP statuses; bodies are
//! bounded by the gateway's `frame_bytes` (a REST body carries what one WebSocket
//! frame would); CORS follows each app's `allowed_origins`.

pub(crate) mod auth;
mod classes;
mod clients;
mod conversations;
mod global;
mod legacy;
mod messages;
mod moderation;
mod service;
mod sign;

use crate::Gateway;
use axum::Router;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use serde_json::{Map, Value, json};

/// Routes with the methods each path answers, for the OpenAPI check.
pub(crate) struct Routes {
    router: Router<Gateway>,
    /// `(method, path)`, path in axum's (and OpenAPI's) `{param}` form.
    pub(crate) list: Vec<(&'static str, String)>,
}

impl Routes {
    pub(crate) fn new() -> Routes {
        Routes { router: Router::new(), list: Vec::new() }
    }

    /// Serves `path` with `handler`, which answers `methods` (e.g. `["GET", "POST"]`).
    pub(crate) fn at(
        mut self,
        path: &str,
        methods: &[&'static str],
        handler: MethodRouter<Gateway>,
    ) -> Routes {
        self.router = self.router.route(path, handler);
        self.list.extend(methods.iter().map(|m| (*m, path.to_owned())));
        self
    }

    pub(crate) fn merge(mut self, other: Routes) -> Routes {
        self.router = self.router.merge(other.router);
        self.list.extend(other.list);
        self
    }
}

/// Every REST route.
pub(crate) fn routes() -> Routes {
    conversations::routes()
        .merge(clients::routes())
        .merge(messages::routes())
        .merge(service::routes())
        .merge(moderation::routes())
        .merge(global::routes())
        .merge(legacy::routes())
        .merge(sign::routes())
        .merge(classes::routes())
}

/// The REST routes, with their body limit and CORS.
pub(crate) fn router(gateway: Gateway) -> Router<Gateway> {
    let body_limit = gateway.config.frame_bytes;
    routes()
        .router
        // Set before the layers, so a preflight (`OPTIONS`) still reaches `cors`.
        .method_not_allowed_fallback(crate::routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(gateway, cors))
}

/// An error of the REST API: HTTP status plus LeanCloud's `{code, error}`.
#[derive(Debug)]
pub(crate) struct RestError {
    status: StatusCode,
    code: u16,
    error: String,
}

impl RestError {
    /// 400 with code 107, LeanCloud's "malformed" code, for a body or parameter that
    /// does not have the documented shape.
    pub(crate) fn bad_request(error: impl Into<String>) -> RestError {
        RestError { status: StatusCode::BAD_REQUEST, code: 107, error: error.into() }
    }

    /// Any status and code.
    pub(crate) fn new(status: StatusCode, code: u16, error: impl Into<String>) -> RestError {
        RestError { status, code, error: error.into() }
    }

    /// The same error with another HTTP status.
    pub(crate) fn with_status(self, status: StatusCode) -> RestError {
        RestError { status, ..self }
    }

    /// 401 with code 401: wrong or missing keys, or the app key where the master key
    /// is needed.
    pub(crate) fn unauthorized() -> RestError {
        RestError { status: StatusCode::UNAUTHORIZED, code: 401, error: "Unauthorized.".to_owned() }
    }
}

impl From<confab_types::ProtocolError> for RestError {
    fn from(e: confab_types::ProtocolError) -> RestError {
        use confab_types::ErrorCode;
        let status = match e.code {
            ErrorCode::ConversationNotFound | ErrorCode::MessageNotFound => StatusCode::NOT_FOUND,
            ErrorCode::AppNotAvailable => StatusCode::UNAUTHORIZED,
            ErrorCode::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        RestError { status, code: e.code.number(), error: format!("{}: {}", e.code.reason(), e.detail) }
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({"code": self.code, "error": self.error}))).into_response()
    }
}

/// Counts a REST call against the app's per-minute quota of `class` (off unless
/// configured): over it, HTTP 429 with code 429, naming the limit.
pub(crate) fn quota(
    gateway: &Gateway,
    app_id: &str,
    class: confab_engine::rate::RestRate,
) -> Result<(), RestError> {
    gateway.engine.admit_rest(app_id, class).map_err(|(key, limit)| RestError {
        status: StatusCode::TOO_MANY_REQUESTS,
        code: 429,
        error: format!("Too Many Requests: over the limit {key} = {limit}; try again in the next minute"),
    })
}

/// A request body that must be a JSON object; an empty body is `{}` when `empty_ok`.
pub(crate) fn json_object(
    body: Result<axum::body::Bytes, BytesRejection>,
    empty_ok: bool,
) -> Result<Map<String, Value>, RestError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            RestError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: 107,
                error: "request body too large".into(),
            }
        } else {
            RestError::bad_request(e.body_text())
        }
    })?;
    if empty_ok && body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(&body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(RestError::bad_request("Malformed json object. A json dictionary is expected.")),
    }
}

/// A list of client ids under `key` (`client_ids`), 1 to `max` of them.
pub(crate) fn client_ids(body: &Map<String, Value>, key: &str, max: usize) -> Result<Vec<String>, RestError> {
    let ids = match body.get(key) {
        Some(Value::Array(items)) => {
            items.iter().map(|v| v.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>()
        }
        _ => None,
    };
    let ids = ids.ok_or_else(|| RestError::bad_request(format!("{key} must be an array of client ids")))?;
    if ids.is_empty() || ids.len() > max {
        return Err(RestError::bad_request(format!("{key} must hold 1 to {max} client ids")));
    }
    Ok(ids)
}

/// Headers a browser may send to the REST API.
const ALLOWED_HEADERS: &str = "Content-Type, X-LC-Id, X-LC-Key, X-LC-Sign, X-LC-Session, X-LC-Prod, \
    X-LC-UA, X-LC-IM-Session-Token, X-AVOSCloud-Application-Id, X-AVOSCloud-Application-Key, \
    X-AVOSCloud-Master-Key, X-AVOSCloud-Request-Sign, X-AVOSCloud-Session-Token";

/// CORS: a response is readable from an origin the named app allows. A preflight
/// carries no app id, so it is answered for an origin that any app allows; the real
/// request is then checked against its own app.
async fn cors(State(gateway): State<Gateway>, request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_owned);
    if request.method() == Method::OPTIONS {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let allowed =
            origin.as_deref().is_some_and(|o| gateway.engine.apps().any(|app| app.origin_allowed(Some(o))));
        if let (true, Some(o)) = (allowed, &origin) {
            let h = response.headers_mut();
            allow_origin(h, o);
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
            );
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOWED_HEADERS));
            h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        }
        return response;
    }
    let app_id = auth::claimed_app(request.headers()).map(str::to_owned);
    let mut response = next.run(request).await;
    if let Some(o) = &origin
        && app_id.and_then(|id| gateway.engine.app(&id).map(|a| a.config.origin_allowed(Some(o))))
            == Some(true)
    {
        allow_origin(response.headers_mut(), o);
    }
    response
}

fn allow_origin(headers: &mut HeaderMap, origin: &str) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeSet;

    /// Every served route is in docs/openapi.json, and everything there is served.
    #[test]
    fn openapi_lists_every_route() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(p, ops)| ops.as_object().unwrap().keys().map(|m| (m.to_uppercase(), p.clone())))
            .collect();
        let served: BTreeSet<(String, String)> =
            super::routes().list.into_iter().map(|(m, p)| (m.to_owned(), p)).collect();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty() && unserved.is_empty(),
            "served but not in docs/openapi.json: {undocumented:?}\nin docs/openapi.json but not served: \
             {unserved:?}\n(edit docs/openapi.py and run it)"
        );
    }
}

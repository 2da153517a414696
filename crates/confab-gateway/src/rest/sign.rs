//! Login signatures for LeanStorage users (`createIMClient(AV.User)`): `POST /1.1/rtm/sign`
//! `{"session_token"}` (the call JS SDK 4.3.1 makes) and `GET /1.2/rtm/clients/sign
//! ?session_token=`. Confab keeps no `_User` store, so the app's `_rtmClientSign` hook
//! decides who the token belongs to (see docs/hooks.md); the answer is LeanCloud's
//! `{signature, nonce, client_id, timestamp}`, a login signature valid with the app's
//! login-signature policy.

use super::auth::authenticate;
use super::{RestError, Routes, json_object};
use crate::Gateway;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use confab_engine::SignRefusal;
use confab_engine::signature::{Signed, sign, signed_string};
use serde_json::{Value, json};
use std::collections::HashMap;

/// The longest session token accepted (LeanCloud's are 25 characters).
const SESSION_TOKEN_MAX: usize = 256;

pub(super) fn routes() -> Routes {
    Routes::new().at("/1.1/rtm/sign", &["POST"], post(sign_v1)).at(
        "/1.2/rtm/clients/sign",
        &["GET"],
        get(sign_v2),
    )
}

/// `POST /1.1/rtm/sign` `{"session_token", "client_id"?}`.
async fn sign_v1(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?;
    let body = json_object(body, false)?;
    let token = body.get("session_token").and_then(Value::as_str);
    let client = body.get("client_id").and_then(Value::as_str);
    issue(&gateway, &caller.app_id, token, client).await
}

/// `GET /1.2/rtm/clients/sign?session_token=…[&client_id=…]`.
async fn sign_v2(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, RestError> {
    let caller = authenticate(&gateway, &headers)?;
    let token = query.get("session_token").map(String::as_str);
    let client = query.get("client_id").map(String::as_str);
    issue(&gateway, &caller.app_id, token, client).await
}

async fn issue(
    gateway: &Gateway,
    app_id: &str,
    token: Option<&str>,
    client: Option<&str>,
) -> Result<Response, RestError> {
    let token = token.filter(|t| !t.is_empty() && t.len() <= SESSION_TOKEN_MAX).ok_or_else(|| {
        RestError::bad_request(format!("session_token (1 to {SESSION_TOKEN_MAX} chars) is required"))
    })?;
    let engine = &gateway.engine;
    let client_id = engine.rtm_client_sign(app_id, token, client).await.map_err(|e| match e {
        // LeanCloud's "invalid session token" is 211 with 400; a hook that said no is the same to the SDK.
        SignRefusal::Refused(why) => RestError::new(StatusCode::BAD_REQUEST, 211, why),
        e @ SignRefusal::NoHook => RestError::new(StatusCode::NOT_FOUND, 404, e.to_string()),
        e @ SignRefusal::Failed(_) => RestError::new(StatusCode::SERVICE_UNAVAILABLE, 503, e.to_string()),
    })?;
    let Some(app) = engine.app(app_id) else {
        return Err(RestError::unauthorized());
    };
    let timestamp = engine.now_ms();
    let nonce = confab_engine::ids::message_id();
    let text = signed_string(app_id, &client_id, Signed::Login, &timestamp.to_string(), &nonce);
    let signature = sign(&app.config.master_key, &text);
    let reply =
        json!({ "signature": signature, "nonce": nonce, "client_id": client_id, "timestamp": timestamp });
    Ok(axum::Json(reply).into_response())
}

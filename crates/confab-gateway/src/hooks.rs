//! The HTTP side of the app's hooks: calls a LeanEngine-style backend exactly as
//! LeanCloud's realtime service did, so an unchanged LeanEngine app (the `leanengine` npm
//! package) receives them:
//!
//! - `POST {url}/1.1/functions/{hookName}` with the parameters as a JSON body;
//! - `X-LC-Id: <app id>`, `X-LC-Key: <master key>,master` (LeanEngine's `leancloud-headers`
//!   checks them) and `X-LC-Hook-Key: <key>` (its `checkHookKey`), `X-LC-Prod: 1`;
//! - for notifying hooks, `Idempotency-Key: <key>`, the same on every retry of a call;
//! - the answer `{"result": …}` unwrapped; any non-2xx status, an answer that is not a
//!   JSON object, or a body over 1 MiB is a failure.

use confab_engine::AppConfig;
use confab_engine::ports::{HookCaller, HookError, HookFuture};
use confab_httpc::{Client, ClientConfig};
use serde_json::Value;
use std::time::Duration;

/// The largest hook answer read (a larger one is a failure).
pub const MAX_HOOK_REPLY_BYTES: usize = 1024 * 1024;

/// Calls hook backends over HTTP(S) with one shared connection pool.
#[derive(Debug, Clone)]
pub struct HttpHooks {
    client: Client,
}

impl HttpHooks {
    /// A caller with Mozilla's root certificates for `https://` backends.
    pub fn new() -> Result<HttpHooks, confab_httpc::Error> {
        let config = ClientConfig {
            max_response_bytes: MAX_HOOK_REPLY_BYTES,
            user_agent: concat!("confab-hooks/", env!("CARGO_PKG_VERSION")).to_owned(),
            ..ClientConfig::default()
        };
        Ok(HttpHooks { client: Client::new(config)? })
    }
}

fn failure(e: confab_httpc::Error) -> HookError {
    use confab_httpc::Error as E;
    match e {
        E::Timeout(_) => HookError::Timeout,
        E::Status { status, body_excerpt } => {
            HookError::Status { status: status.as_u16(), detail: body_excerpt }
        }
        E::BodyTooLarge { limit } => HookError::BadReply(format!("answer over {limit} bytes")),
        E::DecodeJson(e) => HookError::BadReply(e.to_string()),
        other => HookError::Unreachable(other.to_string()),
    }
}

impl HookCaller for HttpHooks {
    fn call<'a>(
        &'a self,
        app: &'a AppConfig,
        hook: &'a str,
        params: &'a Value,
        idempotency_key: Option<&'a str>,
    ) -> HookFuture<'a> {
        Box::pin(async move {
            let Some(settings) = &app.hooks else {
                return Err(HookError::Unreachable("the app has no [apps.hooks]".into()));
            };
            let url = format!("{}/1.1/functions/{hook}", settings.url.trim_end_matches('/'));
            let mut request = self
                .client
                .post(&url)
                .header("X-LC-Id", &app.id)
                .header("X-LC-Key", &format!("{},master", app.master_key))
                .header("X-LC-Hook-Key", &settings.key)
                .header("X-LC-Prod", "1")
                .json(params)
                .timeout(Duration::from_millis(settings.timeout_ms));
            if let Some(key) = idempotency_key {
                request = request.header("Idempotency-Key", key);
            }
            let answer: Value = request.send_json().await.map_err(failure)?;
            match answer {
                Value::Object(mut m) => Ok(m.remove("result").unwrap_or(Value::Null)),
                other => Err(HookError::BadReply(format!("not a JSON object: {:.80}", other.to_string()))),
            }
        })
    }
}

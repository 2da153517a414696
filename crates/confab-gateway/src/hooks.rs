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
//!
//! A failure names the status, the body's length and the kind of error, never the
//! body: a backend may echo the message it was judging, and failures are logged.

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
        E::Status { status, body_excerpt } => HookError::Status {
            status: status.as_u16(),
            detail: format!("a body of {} bytes or more", body_excerpt.len()),
        },
        E::BodyTooLarge { limit } => HookError::BadReply(format!("answer over {limit} bytes")),
        // serde_json's position, not its message: a type error quotes the input.
        E::DecodeJson(e) => HookError::BadReply(format!(
            "not JSON ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        )),
        other => HookError::Unreachable(other.to_string()),
    }
}

/// The kind of a JSON value, for a failure that must not quote it.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
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
            let response = request.send().await.map_err(failure)?;
            if !response.status().is_success() {
                return Err(HookError::Status {
                    status: response.status().as_u16(),
                    detail: format!("a body of {} bytes", response.body().len()),
                });
            }
            match response.json::<Value>().map_err(failure)? {
                Value::Object(mut m) => Ok(m.remove("result").unwrap_or(Value::Null)),
                other => Err(HookError::BadReply(format!("a JSON {}, not an object", json_kind(&other)))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_engine::HookSettings;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A backend answering `reply` to every request.
    async fn backend(reply: &'static str) -> AppConfig {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock.write_all(reply.as_bytes()).await;
            }
        });
        let mut app = AppConfig::new("app", "key", "master");
        app.hooks = Some(HookSettings { url, key: "hook".into(), timeout_ms: 2000, fail_closed: false });
        app
    }

    /// Failures are logged: they must not quote a body that may echo a message.
    #[tokio::test]
    async fn a_failure_never_quotes_the_backends_answer() {
        let hooks = HttpHooks::new().expect("a client");
        let replies = [
            "HTTP/1.1 500 Oops\r\nContent-Length: 24\r\nConnection: close\r\n\r\n{\"error\":\"secret words\"}",
            "HTTP/1.1 200 OK\r\nContent-Length: 14\r\nConnection: close\r\n\r\n\"secret words\"",
            "HTTP/1.1 200 OK\r\nContent-Length: 16\r\nConnection: close\r\n\r\n{\"result\": secre",
            "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nsecret!",
        ];
        for reply in replies {
            let app = backend(reply).await;
            let params = serde_json::json!({"content": "secret words"});
            let error = hooks.call(&app, "_messageReceived", &params, None).await.expect_err(reply);
            let shown = format!("{error} {error:?}");
            assert!(!shown.contains("secre"), "{shown}");
        }
    }
}

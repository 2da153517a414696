//! The hook ports: [`HookCaller`], how the engine reaches an app's hook backend, and the
//! outbox records ([`HookCall`], [`OutboxEntry`]) a [`super::Store`] keeps for the notifying
//! hooks.
//!
//! The engine decides *which* hook to call with *what* and what the answer means
//! (`engine/hooks.rs`); a caller only moves the call over the network, so the engine's
//! rules are tested with an in-process caller and no socket.

use crate::app::AppConfig;
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;

/// A boxed future returned by a [`HookCaller`].
pub type HookFuture<'a> = Pin<Box<dyn Future<Output = Result<Value, HookError>> + Send + 'a>>;

/// Why a hook call failed. Every failure is the same to the engine's policy (fail open
/// or closed for a blocking hook, retry for a notifying one); the kinds are for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// No complete answer within the app's `timeout_ms`.
    #[error("no answer within the hook timeout")]
    Timeout,
    /// The backend could not be reached, or the connection broke.
    #[error("backend unreachable: {0}")]
    Unreachable(String),
    /// The backend answered with a status other than 2xx (LeanEngine answers 401 to a
    /// wrong hook key, 404 to a hook it does not define).
    #[error("backend answered HTTP {status}: {detail}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// What the body was like (its length), never its content: a backend may
        /// echo the message it judged, and this error is logged.
        detail: String,
    },
    /// A 2xx answer that is not a JSON object (LeanEngine wraps every result in
    /// `{"result": …}`), or larger than allowed; says what was wrong, never quoting
    /// the answer.
    #[error("unreadable answer: {0}")]
    BadReply(String),
}

/// Calls an app's hook backend.
pub trait HookCaller: Send + Sync + std::fmt::Debug + 'static {
    /// Calls `hook` (`_messageReceived`, …) on `app`'s backend (`app.hooks` is set) with
    /// `params` as the JSON body, and resolves to the reply's `result` (`Value::Null`
    /// when the reply has none). `idempotency_key` is set for notifying hooks: the same
    /// key on a retry lets the backend ignore a call it already handled.
    ///
    /// Should give up after `app.hooks.timeout_ms`; the engine bounds every call by it
    /// anyway.
    fn call<'a>(
        &'a self,
        app: &'a AppConfig,
        hook: &'a str,
        params: &'a Value,
        idempotency_key: Option<&'a str>,
    ) -> HookFuture<'a>;
}

/// A notifying hook call to be made: what the outbox stores. Written with the event it
/// reports (see the `*_notify` methods of [`super::Store`]), so a call is queued exactly
/// when its event is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookCall {
    /// The app whose backend is called.
    pub app: String,
    /// The idempotency key: unique within the app. Storing a call whose key the app's
    /// outbox already holds keeps the first and ignores the second.
    pub key: String,
    /// The hook's name (`_messageSent`, …).
    pub hook: String,
    /// The JSON parameters (a JSON object as text).
    pub params: String,
    /// When the event happened (ms): the first attempt is due then.
    pub created_at: i64,
}

/// A call waiting in the outbox, as [`super::Store::outbox_due`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The call.
    pub call: HookCall,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When the next attempt is due (ms).
    pub due_at: i64,
}

impl HookCall {
    /// Calls stored with a message ([`super::Store::append_message_notify`]) are built
    /// before the store assigns the message's position, so they report the proposed one
    /// as their `timestamp`. When the store assigned another (another node wrote the
    /// conversation meanwhile), it calls this in the same transaction so the hook
    /// backend sees the position the clients see. Calls that do not report the proposed
    /// position are left alone.
    pub fn restamp(calls: &mut [HookCall], proposed: i64, assigned: i64) {
        if proposed == assigned {
            return;
        }
        for call in calls {
            let Ok(Value::Object(mut params)) = serde_json::from_str::<Value>(&call.params) else {
                continue;
            };
            if params.get("timestamp").and_then(Value::as_i64) == Some(proposed) {
                params.insert("timestamp".to_owned(), Value::from(assigned));
                call.params = Value::Object(params).to_string();
            }
        }
    }
}

//! The app's hooks: LeanCloud's realtime hooks, called on the app's backend as LeanCloud
//! called a LeanEngine app (the [`HookCaller`] port does the HTTP).
//!
//! - **Blocking hooks** (`_messageReceived`, `_messageUpdate`, `_conversationStart`,
//!   `_conversationAdd`, `_conversationRemove`, `_conversationUpdate`, `_rtmClientSign`)
//!   are awaited by the one request they judge, never under a conversation's lock, and
//!   for at most the app's `timeout_ms`. A failure (timeout, non-2xx, unreadable reply)
//!   lets the request through, or refuses it when the app sets `fail_closed`.
//! - **Notifying hooks** (`_messageSent`, `_receiversOffline`, `_conversationStarted`,
//!   `_conversationAdded`, `_conversationRemoved`, `_clientOnline`, `_clientOffline`) are
//!   [`HookCall`]s stored with their event (see the Store's outbox) and delivered by
//!   [`Engine::run_outbox`], at least once, with the call's idempotency key, retried with
//!   backoff; nothing about chat waits for them.
//!
//! The app's backend itself (REST calls with the master key) is not judged by its own
//! blocking hooks; its operations still produce the notifying ones.

use super::{AppState, Engine, perr};
use crate::app::AppConfig;
use crate::conversation::Conv;
use crate::ids;
use crate::ports::{ConvKind, HookCall, HookError, OutboxEntry, StoredMessage};
use crate::session::Session;
use confab_types::{DirectRequest, ErrorCode, ProtocolError};
use serde_json::{Map, Value, json};
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long the outbox worker sleeps when nothing is due and nobody woke it.
const OUTBOX_POLL: Duration = Duration::from_secs(1);
/// Calls attempted per round of the outbox worker (all at once).
const OUTBOX_BATCH: usize = 32;
/// First retry delay of a failed notifying call; it doubles per failure up to
/// [`OUTBOX_MAX_BACKOFF_MS`].
const OUTBOX_FIRST_BACKOFF_MS: i64 = 1_000;
/// Longest delay between two attempts of a notifying call.
const OUTBOX_MAX_BACKOFF_MS: i64 = 300_000;
/// How long a call taken for delivery ([`crate::ports::Store::outbox_claim`]) is kept
/// from the other nodes' outbox workers beyond the longest time the call may take (the
/// apps' longest hook deadline): time to record its outcome. A node that stops
/// mid-call (or shuts down) leaves it due again this long after the deadline.
const OUTBOX_LEASE_MARGIN_MS: i64 = 5_000;
/// A notifying call still failing this long after its event is given up (logged).
pub const OUTBOX_GIVE_UP_MS: i64 = 24 * 3600 * 1000;

/// What a blocking hook said.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// No hook configured, or it failed and the app fails open: go on unchanged.
    Unchanged,
    /// The hook answered: its `result` (an object; anything else reads as `{}`).
    Answer(Map<String, Value>),
}

impl Verdict {
    /// The answer's field, if the hook answered with one.
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Verdict::Answer(m) => m.get(key),
            Verdict::Unchanged => None,
        }
    }

    /// Whether the answer sets `key` to something truthy (as JavaScript reads it).
    pub(crate) fn truthy(&self, key: &str) -> bool {
        match self.get(key) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
            Some(Value::String(s)) => !s.is_empty(),
            Some(_) => true,
        }
    }

    /// A refusal with `code`, carrying the hook's own `code` and `detail` as
    /// `appCode`/`appMsg`.
    pub(crate) fn refusal(&self, code: ErrorCode, hook: &str) -> ProtocolError {
        let app_code = self.get("code").and_then(Value::as_i64).and_then(|c| i32::try_from(c).ok());
        let app_msg = self.get("detail").and_then(Value::as_str).map(str::to_owned);
        let detail = match &app_msg {
            Some(m) => format!("rejected by the app's {hook} hook: {m}"),
            None => format!("rejected by the app's {hook} hook"),
        };
        perr(code, detail).with_app(app_code, app_msg)
    }

    /// The answer's `toPeers` as a set, when it gives a list of strings.
    pub(crate) fn to_peers(&self) -> Option<HashSet<String>> {
        let list = self.get("toPeers")?.as_array()?;
        Some(list.iter().filter_map(Value::as_str).map(str::to_owned).collect())
    }
}

/// Adds `sourceIP` to a hook's parameters when the client's address is known (it is
/// not for the app's own backend acting through the REST API: see docs/hooks.md).
fn with_source_ip(mut params: Value, ip: Option<IpAddr>) -> Value {
    if let (Some(ip), Value::Object(m)) = (ip, &mut params) {
        m.insert("sourceIP".into(), json!(ip.to_string()));
    }
    params
}

/// How long the engine waits for a hook of `app`: its `timeout_ms`, plus a little for
/// the caller to report its own timeout first.
fn deadline(config: &AppConfig) -> Option<Duration> {
    config.hooks.as_ref().map(|h| Duration::from_millis(h.timeout_ms.saturating_add(250)))
}

impl Engine {
    /// Whether `app` has a hook backend (and this engine a way to call it).
    pub(crate) fn hooks_on(&self, app: &AppState) -> bool {
        app.config.hooks.is_some() && self.inner.hooks.is_some()
    }

    /// Calls a blocking hook. `refuse_with` is the code of a refusal when the call fails
    /// and the app fails closed.
    pub(crate) async fn blocking_hook(
        &self,
        app: &AppState,
        hook: &str,
        params: Value,
        refuse_with: ErrorCode,
    ) -> Result<Verdict, ProtocolError> {
        let (Some(caller), Some(settings), Some(wait)) =
            (self.inner.hooks.as_ref(), app.config.hooks.as_ref(), deadline(&app.config))
        else {
            return Ok(Verdict::Unchanged);
        };
        let outcome = match tokio::time::timeout(wait, caller.call(&app.config, hook, &params, None)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(HookError::Timeout),
        };
        crate::metrics::METRICS.hook_called(outcome.is_ok());
        match outcome {
            Ok(Value::Object(answer)) => Ok(Verdict::Answer(answer)),
            Ok(_) => Ok(Verdict::Answer(Map::new())),
            Err(e) if settings.fail_closed => {
                tracing::warn!(app = %app.config.id, hook, error = %e, "blocking hook failed; refusing (fail_closed)");
                Err(perr(refuse_with, format!("the app's {hook} hook failed: {e}")))
            }
            Err(e) => {
                tracing::warn!(app = %app.config.id, hook, error = %e, "blocking hook failed; going on");
                Ok(Verdict::Unchanged)
            }
        }
    }

    /// A notifying call of `app` to store with its event, or none when the app has no
    /// hooks. `key` is its idempotency key (unique in the app).
    pub(crate) fn hook_call(
        &self,
        app: &AppState,
        hook: &str,
        key: String,
        params: Value,
    ) -> Option<HookCall> {
        if !self.hooks_on(app) {
            return None;
        }
        Some(HookCall {
            app: app.config.id.clone(),
            key,
            hook: hook.to_owned(),
            params: params.to_string(),
            created_at: self.now(),
        })
    }

    /// A notifying call with a fresh random idempotency key.
    pub(crate) fn hook_event(&self, app: &AppState, hook: &str, params: Value) -> Option<HookCall> {
        self.hook_call(app, hook, format!("{hook}:{}", ids::message_id()), params)
    }

    /// Stores notifying calls of an event that has no write of its own (a client going
    /// online or offline), without waiting; a failed write is logged (the event itself
    /// already happened).
    pub(crate) fn queue_hook_calls(&self, calls: Vec<HookCall>) {
        if calls.is_empty() {
            return;
        }
        let write = self.inner.store.outbox_put(calls);
        let wake = self.inner.outbox_wake.clone();
        tokio::spawn(async move {
            match write.await {
                Ok(()) => wake.notify_one(),
                Err(e) => tracing::error!(error = %e, "hook calls not stored"),
            }
        });
    }

    /// Wakes the outbox worker: calls were just committed.
    pub(crate) fn outbox_written(&self) {
        self.inner.outbox_wake.notify_one();
    }

    /// The outbox worker: delivers due notifying calls until the engine is dropped.
    /// Start it once per process (the server does; tests may). Each round takes up to 32
    /// due calls and makes them concurrently, so one slow call delays the next round by
    /// at most the app's `timeout_ms`.
    pub async fn run_outbox(self) {
        let weak = Arc::downgrade(&self.inner);
        drop(self);
        loop {
            let Some(inner) = weak.upgrade() else { return };
            let engine = Engine { inner };
            let wake = engine.inner.outbox_wake.clone();
            let notified = wake.notified();
            let worked = engine.outbox_round().await;
            drop(engine);
            if !worked {
                let _ = tokio::time::timeout(OUTBOX_POLL, notified).await;
            }
        }
    }

    /// One round: returns whether any call was due.
    async fn outbox_round(&self) -> bool {
        let now = self.now();
        let longest =
            self.inner.apps.values().filter_map(|a| deadline(&a.config)).max().unwrap_or(OUTBOX_POLL);
        let lease =
            i64::try_from(longest.as_millis()).unwrap_or(i64::MAX).saturating_add(OUTBOX_LEASE_MARGIN_MS);
        let due = match self.inner.store.outbox_claim(now, OUTBOX_BATCH, now.saturating_add(lease)).await {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(error = %e, "hook outbox unreadable");
                return false;
            }
        };
        if due.is_empty() {
            return false;
        }
        let mut calls = tokio::task::JoinSet::new();
        for entry in due {
            let engine = self.clone();
            calls.spawn(async move { engine.deliver(entry).await });
        }
        while calls.join_next().await.is_some() {}
        true
    }

    /// Makes one notifying call and settles it in the outbox.
    async fn deliver(&self, entry: OutboxEntry) {
        let store = &self.inner.store;
        let OutboxEntry { call, attempts, .. } = entry;
        let app = self.app(&call.app).cloned();
        let (Some(app), Some(caller)) = (app.filter(|a| a.config.hooks.is_some()), self.inner.hooks.as_ref())
        else {
            tracing::warn!(app = %call.app, hook = %call.hook, "hook call dropped: the app has no hook backend now");
            let _ = store.outbox_done(&call.app, &call.key).await;
            return;
        };
        let params: Value = serde_json::from_str(&call.params).unwrap_or_else(|_| json!({}));
        let wait = deadline(&app.config).unwrap_or(OUTBOX_POLL);
        let outcome =
            match tokio::time::timeout(wait, caller.call(&app.config, &call.hook, &params, Some(&call.key)))
                .await
            {
                Ok(outcome) => outcome,
                Err(_) => Err(HookError::Timeout),
            };
        crate::metrics::METRICS.hook_called(outcome.is_ok());
        let now = self.now();
        let settled = match outcome {
            Ok(_) => store.outbox_done(&call.app, &call.key).await,
            Err(e) if now - call.created_at >= OUTBOX_GIVE_UP_MS => {
                tracing::error!(app = %call.app, hook = %call.hook, key = %call.key, attempts, error = %e,
                    "notifying hook given up after 24 hours of failures");
                crate::metrics::METRICS.hook_given_up();
                store.outbox_done(&call.app, &call.key).await
            }
            Err(e) => {
                let attempts = attempts.saturating_add(1);
                let backoff = OUTBOX_FIRST_BACKOFF_MS
                    .saturating_mul(1i64 << attempts.saturating_sub(1).min(20))
                    .min(OUTBOX_MAX_BACKOFF_MS);
                tracing::warn!(app = %call.app, hook = %call.hook, key = %call.key, attempts, error = %e,
                    retry_in_ms = backoff, "notifying hook failed; will retry");
                store.outbox_retry(&call.app, &call.key, attempts, now + backoff).await
            }
        };
        if let Err(e) = settled {
            tracing::error!(error = %e, "hook outbox not updated; the call may be made again");
        }
    }
}

/// What `_messageReceived` decided for a message that goes on.
#[derive(Debug, Default)]
pub(crate) struct Received {
    /// The hook replaced the recipients: only these members are pushed the message (the
    /// others' sessions move past it silently; it stays in the history for everyone).
    pub to: Option<HashSet<String>>,
}

/// What `_messageUpdate` decided for an edit or recall that goes on.
#[derive(Debug)]
pub(crate) struct Update {
    /// The body to store.
    pub data: String,
    /// The hook's binary flag for it (`None`: the original message's stays).
    pub binary: Option<bool>,
    /// The hook replaced the recipients: only these members are pushed the change (it
    /// is stored for everyone, as `_messageReceived`'s `toPeers`).
    pub to: Option<HashSet<String>>,
}

impl Engine {
    /// `_messageReceived`: before a message is stored or delivered. May drop it (4402),
    /// replace its body (`content`, `bin`) or its recipients (`toPeers`, members only).
    pub(crate) async fn message_received(
        &self,
        app: &AppState,
        conv: &Conv,
        from: &str,
        req: &mut DirectRequest,
        session: &Session,
    ) -> Result<Received, ProtocolError> {
        if session.admin || !self.hooks_on(app) {
            return Ok(Received::default());
        }
        let to_peers: Vec<String> = match conv.kind {
            ConvKind::Transient | ConvKind::System => Vec::new(),
            _ => conv.state().members.iter().filter(|m| *m != from).cloned().collect(),
        };
        let params = json!({
            "fromPeer": from,
            "convId": conv.cid,
            "toPeers": to_peers,
            "transient": req.transient,
            "bin": req.binary,
            "content": req.msg,
            "receipt": req.receipt,
            "timestamp": self.now(),
            "system": conv.kind == ConvKind::System,
            "mentionAll": req.mentions.all,
            "mentionPids": req.mentions.pids,
        });
        let params = with_source_ip(params, session.conn.source_ip());
        let verdict =
            self.blocking_hook(app, "_messageReceived", params, ErrorCode::MessageRejectedByApp).await?;
        if verdict.truthy("drop") {
            return Err(verdict.refusal(ErrorCode::MessageRejectedByApp, "_messageReceived"));
        }
        if let Some(content) = verdict.get("content").and_then(Value::as_str) {
            if content.len() > app.config.limits.message_bytes {
                return Err(perr(
                    ErrorCode::FrameTooLong,
                    format!(
                        "the _messageReceived hook's content is over {} bytes",
                        app.config.limits.message_bytes
                    ),
                ));
            }
            req.msg = content.to_owned();
        }
        if let Some(bin) = verdict.get("bin").and_then(Value::as_bool) {
            req.binary = bin;
        }
        let to = verdict.to_peers().map(|peers| {
            let members = &conv.state().members;
            peers.into_iter().filter(|p| members.contains(p) || conv.kind == ConvKind::Transient).collect()
        });
        Ok(Received { to })
    }

    /// Which of a message's possible recipients have a session on another node, for
    /// [`Engine::message_calls`]: asked of the cluster's registry before the
    /// conversation's lock is taken (`None`: one node, no hooks, or no recipients to ask
    /// about). `to` is the hook's choice of recipients, if it made one.
    pub(crate) async fn online_elsewhere(
        &self,
        app: &AppState,
        conv: &Conv,
        to: Option<&HashSet<String>>,
    ) -> Option<HashSet<String>> {
        let cluster = self.inner.cluster.as_ref()?;
        if !self.hooks_on(app) {
            return None;
        }
        let ask: Vec<String> = match to {
            Some(to) => to.iter().cloned().collect(),
            None if conv.kind == ConvKind::Transient => return None,
            None => conv.state().members.iter().cloned().collect(),
        };
        if ask.is_empty() {
            return None;
        }
        let online = cluster.online(&app.config.id, ask).await;
        if online.is_none() {
            tracing::warn!("hook onlinePeers from this node only: the cluster registry is unavailable");
        }
        online.map(|o| o.into_iter().collect())
    }

    /// The notifying calls of a stored message, made under the conversation's lock just
    /// before it is queued to the store: `_messageSent` always, `_receiversOffline` when
    /// recipients are offline (never for chat rooms). Online means "has a session now",
    /// on this node or (`elsewhere`, see [`Engine::online_elsewhere`]) on another.
    pub(crate) fn message_calls(
        &self,
        app: &AppState,
        conv: &Conv,
        recipients: &[String],
        elsewhere: Option<&HashSet<String>>,
        m: &StoredMessage,
        source_ip: Option<IpAddr>,
    ) -> Vec<HookCall> {
        if !self.hooks_on(app) {
            return Vec::new();
        }
        let is_online = |r: &String| app.is_online(r) || elsewhere.is_some_and(|e| e.contains(r));
        let (online, offline): (Vec<String>, Vec<String>) =
            recipients.iter().filter(|r| **r != m.from).cloned().partition(is_online);
        let mut calls = Vec::new();
        let sent = json!({
            "fromPeer": m.from,
            "convId": m.cid,
            "msgId": m.id,
            "onlinePeers": online,
            "offlinePeers": offline,
            "transient": false,
            "system": conv.kind == ConvKind::System,
            "bin": m.binary,
            "content": m.data,
            "receipt": m.receipt,
            "timestamp": m.ts,
        });
        let sent = with_source_ip(sent, source_ip);
        calls.extend(self.hook_call(app, "_messageSent", format!("_messageSent:{}:{}", m.cid, m.id), sent));
        if conv.kind != ConvKind::Transient && !offline.is_empty() {
            let mentioned: Vec<&String> = if m.mentions.all {
                Vec::new()
            } else {
                offline.iter().filter(|p| m.mentions.pids.contains(p)).collect()
            };
            let params = json!({
                "fromPeer": m.from,
                "convId": m.cid,
                "offlinePeers": offline,
                "content": m.data,
                "timestamp": m.ts,
                "mentionAll": m.mentions.all,
                "mentionOfflinePeers": mentioned,
            });
            let key = format!("_receiversOffline:{}:{}", m.cid, m.id);
            calls.extend(self.hook_call(app, "_receiversOffline", key, params));
        }
        calls
    }

    /// `_messageUpdate`: before an edit or recall is applied. May refuse it (4405),
    /// replace the new body (`content`) and its binary flag (`bin`), or name who is
    /// pushed the change (`toPeers`, members only, as for `_messageReceived`).
    pub(crate) async fn message_update(
        &self,
        app: &AppState,
        conv: &Conv,
        session: &Session,
        original: &StoredMessage,
        data: String,
        recall: bool,
    ) -> Result<Update, ProtocolError> {
        if !self.hooks_on(app) {
            return Ok(Update { data, binary: None, to: None });
        }
        let from = &*session.client_id;
        let to_peers: Vec<String> = conv.state().members.iter().filter(|m| *m != from).cloned().collect();
        let params = json!({
            "fromPeer": from,
            "convId": conv.cid,
            "toPeers": to_peers,
            "bin": original.binary,
            "content": data,
            "timestamp": original.ts,
            "msgId": original.id,
            "recall": recall,
            "system": conv.kind == ConvKind::System,
        });
        let params = with_source_ip(params, session.conn.source_ip());
        let code = ErrorCode::MessageUpdateRejectedByApp;
        let verdict = self.blocking_hook(app, "_messageUpdate", params, code).await?;
        if verdict.truthy("drop") {
            return Err(verdict.refusal(code, "_messageUpdate"));
        }
        let to = verdict.to_peers().map(|peers| {
            let members = &conv.state().members;
            peers.into_iter().filter(|p| members.contains(p) || conv.kind == ConvKind::Transient).collect()
        });
        let binary = verdict.get("bin").and_then(Value::as_bool);
        match verdict.get("content").and_then(Value::as_str) {
            Some(content) if content.len() > app.config.limits.message_bytes => Err(perr(
                ErrorCode::FrameTooLong,
                format!(
                    "the _messageUpdate hook's content is over {} bytes",
                    app.config.limits.message_bytes
                ),
            )),
            Some(content) => Ok(Update { data: content.to_owned(), binary, to }),
            None => Ok(Update { data, binary, to }),
        }
    }

    /// A conversation hook that may only refuse (`_conversationStart`, `_conversationAdd`,
    /// `_conversationRemove`): 4305 with the hook's `code`/`detail` when it sets `reject`.
    pub(crate) async fn conversation_check(
        &self,
        app: &AppState,
        hook: &str,
        params: Value,
        admin: bool,
    ) -> Result<(), ProtocolError> {
        if admin || !self.hooks_on(app) {
            return Ok(());
        }
        let code = ErrorCode::ConversationRejectedByApp;
        let verdict = self.blocking_hook(app, hook, params, code).await?;
        if verdict.truthy("reject") {
            return Err(verdict.refusal(code, hook));
        }
        Ok(())
    }

    /// `_conversationUpdate` for an attribute update: may refuse (4305) or replace the
    /// update with its own `attr` (a `mute` in the answer is ignored).
    pub(crate) async fn conversation_update_attr(
        &self,
        app: &AppState,
        cid: &str,
        init_by: &str,
        attr: Map<String, Value>,
        admin: bool,
    ) -> Result<Map<String, Value>, ProtocolError> {
        if admin || !self.hooks_on(app) {
            return Ok(attr);
        }
        let params = json!({ "initBy": init_by, "convId": cid, "attr": attr });
        let code = ErrorCode::ConversationRejectedByApp;
        let verdict = self.blocking_hook(app, "_conversationUpdate", params, code).await?;
        if verdict.truthy("reject") {
            return Err(verdict.refusal(code, "_conversationUpdate"));
        }
        Ok(verdict.get("attr").and_then(Value::as_object).cloned().unwrap_or(attr))
    }

    /// `_conversationUpdate` for a mute or unmute: may refuse (4305) or replace the
    /// `mute` flag (an `attr` in the answer is ignored).
    pub(crate) async fn conversation_update_mute(
        &self,
        app: &AppState,
        cid: &str,
        init_by: &str,
        mute: bool,
    ) -> Result<bool, ProtocolError> {
        if !self.hooks_on(app) {
            return Ok(mute);
        }
        let params = json!({ "initBy": init_by, "convId": cid, "mute": mute });
        let code = ErrorCode::ConversationRejectedByApp;
        let verdict = self.blocking_hook(app, "_conversationUpdate", params, code).await?;
        if verdict.truthy("reject") {
            return Err(verdict.refusal(code, "_conversationUpdate"));
        }
        Ok(verdict.get("mute").and_then(Value::as_bool).unwrap_or(mute))
    }

    /// `_clientOnline`, queued after a login.
    pub(crate) fn client_online(&self, app: &AppState, session: &Session, reconnect: bool) {
        if session.admin {
            return;
        }
        let params = json!({
            "peerId": &*session.client_id,
            "tag": session.tag.as_deref().unwrap_or("default"),
            "reconnect": i32::from(reconnect),
        });
        let params = with_source_ip(params, session.conn.source_ip());
        self.queue_hook_calls(self.hook_event(app, "_clientOnline", params).into_iter().collect());
    }

    /// `_clientOffline`, queued when a session ends. `closeCode`: 1 logout, 2 connection
    /// lost, 3 displaced by a login with the same tag, 4 kicked through the API.
    pub(crate) fn client_offline(&self, app: &AppState, session: &Session, code: u16, reason: &str) {
        if session.admin {
            return;
        }
        let close_code = if code == ErrorCode::SessionConflict.number() {
            3
        } else if code == ErrorCode::KickedByApp.number() {
            4
        } else if reason == "logout" {
            1
        } else {
            2
        };
        let mut params = json!({
            "peerId": &*session.client_id,
            "closeCode": close_code,
            "closeMsg": reason,
            "tag": session.tag.as_deref().unwrap_or("default"),
        });
        if let Some(error) = ErrorCode::from_number(code).filter(|c| c.number() >= 4000)
            && let Value::Object(m) = &mut params
        {
            m.insert("errorCode".into(), json!(error.number()));
            m.insert("errorMsg".into(), json!(error.reason()));
        }
        let params = with_source_ip(params, session.conn.source_ip());
        self.queue_hook_calls(self.hook_event(app, "_clientOffline", params).into_iter().collect());
    }

    /// `_rtmClientSign`: whether the app's backend lets the holder of `session_token`
    /// log in, and as which client. The hook answers `true` (sign for `client_id`, which
    /// the request then must carry), an object naming the client (`client_id` or
    /// `objectId`), or `false` / `{"reject": true, "error": …}` to refuse. Without a hook
    /// backend, or when the hook fails, nobody is signed.
    pub async fn rtm_client_sign(
        &self,
        app_id: &str,
        session_token: &str,
        client_id: Option<&str>,
    ) -> Result<String, SignRefusal> {
        let Some(app) = self.app(app_id).cloned() else {
            return Err(SignRefusal::Refused("unknown app".into()));
        };
        if !self.hooks_on(&app) {
            return Err(SignRefusal::NoHook);
        }
        let mut params = json!({ "sessionToken": session_token });
        if let (Some(id), Value::Object(m)) = (client_id, &mut params) {
            m.insert("objectId".into(), json!(id));
            m.insert("client_id".into(), json!(id));
        }
        let (Some(caller), Some(wait)) = (self.inner.hooks.as_ref(), deadline(&app.config)) else {
            return Err(SignRefusal::NoHook);
        };
        let outcome =
            match tokio::time::timeout(wait, caller.call(&app.config, "_rtmClientSign", &params, None)).await
            {
                Ok(outcome) => outcome,
                Err(_) => Err(HookError::Timeout),
            };
        crate::metrics::METRICS.hook_called(outcome.is_ok());
        let named = |m: &Map<String, Value>| {
            ["client_id", "clientId", "objectId"]
                .iter()
                .find_map(|k| m.get(*k).and_then(Value::as_str))
                .map(str::to_owned)
        };
        let chosen = match outcome {
            Err(e) => {
                tracing::warn!(app = %app_id, error = %e, "_rtmClientSign failed");
                return Err(SignRefusal::Failed(e.to_string()));
            }
            Ok(Value::Bool(true)) => client_id.map(str::to_owned),
            Ok(Value::Object(m)) if m.get("reject").is_none_or(|r| r.as_bool() != Some(true)) => {
                named(&m).or_else(|| client_id.map(str::to_owned))
            }
            Ok(Value::Object(m)) => {
                let why = m
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("refused by the app's _rtmClientSign hook");
                return Err(SignRefusal::Refused(why.to_owned()));
            }
            Ok(_) => return Err(SignRefusal::Refused("refused by the app's _rtmClientSign hook".into())),
        };
        let chosen = chosen.ok_or_else(|| {
            SignRefusal::Refused("the _rtmClientSign hook answered true but named no client id".into())
        })?;
        if client_id.is_some_and(|asked| asked != chosen) {
            return Err(SignRefusal::Refused("the hook named another client id than the request".into()));
        }
        crate::bounds::check_client_id(&chosen, app.config.limits.client_id_chars)
            .map_err(|why| SignRefusal::Refused(format!("client id from the hook: {why}")))?;
        Ok(chosen)
    }
}

/// Why `_rtmClientSign` signed nobody.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignRefusal {
    /// The app has no hook backend.
    #[error("the app has no _rtmClientSign hook backend ([apps.hooks])")]
    NoHook,
    /// The hook could not be called or answered garbage.
    #[error("the _rtmClientSign hook failed: {0}")]
    Failed(String),
    /// The hook said no (or named no usable client id).
    #[error("{0}")]
    Refused(String),
}

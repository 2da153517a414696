//! The engine and the per-connection request handler.

use crate::app::AppConfig;
use crate::bounds;
use crate::conversation::{Conv, query_doc, result_json, unique_key};
use crate::ids;
use crate::outbound::{ConnHandle, Next, Outbound, OutboundReceiver, SharedPush};
use crate::ports::{Clock, ConvKind, ConversationRecord, MessageRange, ScanFilter, Store, StoreError};
use crate::query::{Budget, QueryBounds, QueryError, compare_docs, parse_sort, parse_where};
use crate::rate::RateClass;
use crate::session::Session;
use crate::session_token;
use crate::sharded::Sharded;
use crate::signature::{Signed, Verifier};
use confab_types::{
    ConvEvent, ConvPush, ConvQuery, ConvStart, Direction, ErrorCode, Inbound, LogItem, LogsQuery,
    MembersChange, MembersResult, ProtocolError, Push, Reply, Request, SessionOpen, Signature, UnreadEntry,
};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A conversation event about to be pushed (per recipient).
struct Notice<'a> {
    event: ConvEvent,
    cid: &'a str,
    init_by: &'a str,
    members: &'a [String],
    attr: Option<&'a Map<String, Value>>,
    udate: i64,
}

/// One app's live state.
#[derive(Debug)]
pub struct AppState {
    /// Configuration.
    pub config: AppConfig,
    /// Online sessions by client id.
    pub(crate) sessions: Sharded<Vec<Arc<Session>>>,
    /// Cached conversations by id.
    pub(crate) convs: Sharded<Arc<Conv>>,
    /// Serializes membership and attribute changes per conversation.
    pub(crate) conv_ops: Sharded<Arc<tokio::sync::Mutex<()>>>,
}

impl AppState {
    /// The online sessions of a client.
    pub(crate) fn sessions_of(&self, client: &str) -> Vec<Arc<Session>> {
        self.sessions.get(client).unwrap_or_default()
    }

    /// Whether a client has at least one live session.
    pub fn is_online(&self, client: &str) -> bool {
        self.sessions.shard(client).get(client).is_some_and(|v| v.iter().any(|s| !s.is_closed()))
    }

    fn conv_lock(&self, cid: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.conv_ops.shard(cid).entry(cid.to_owned()).or_default().clone()
    }
}

pub(crate) struct Inner {
    pub apps: HashMap<String, Arc<AppState>>,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    verifier: Verifier,
    next_conn: AtomicU64,
    /// Connections opened and not yet dropped.
    live_connections: AtomicUsize,
}

/// The engine: cheap to clone, shared by every connection.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("apps", &self.inner.apps.keys().collect::<Vec<_>>()).finish()
    }
}

/// The ids in order of first appearance, without repeats.
fn distinct(ids: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for id in ids {
        if !out.contains(&id) {
            out.push(id);
        }
    }
    out
}

fn store_error(e: StoreError) -> ProtocolError {
    tracing::error!(error = %e, "store failure");
    ProtocolError::new(ErrorCode::InternalError, "storage failure; the request may be retried")
}

fn perr(code: ErrorCode, detail: impl Into<String>) -> ProtocolError {
    ProtocolError::new(code, detail)
}

impl Engine {
    /// An engine serving `apps` on `store`.
    pub fn new(apps: Vec<AppConfig>, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Engine {
        let apps = apps
            .into_iter()
            .map(|config| {
                let id = config.id.clone();
                let state = AppState {
                    config,
                    sessions: Sharded::default(),
                    convs: Sharded::default(),
                    conv_ops: Sharded::default(),
                };
                (id, Arc::new(state))
            })
            .collect();
        Engine {
            inner: Arc::new(Inner {
                apps,
                store,
                clock,
                verifier: Verifier::default(),
                next_conn: AtomicU64::new(1),
                live_connections: AtomicUsize::new(0),
            }),
        }
    }

    /// Connections opened and not yet ended.
    pub fn live_connections(&self) -> usize {
        self.inner.live_connections.load(Ordering::Relaxed)
    }

    /// Asks every connection with a session to close with `reason` (a shutdown): each
    /// writes what it has queued, then its Close frame.
    pub fn close_all(&self, reason: &ProtocolError) {
        for app in self.inner.apps.values() {
            app.sessions.for_each(|sessions| {
                for session in sessions {
                    session.conn.close(reason.clone());
                }
            });
        }
    }

    /// An app's state.
    pub fn app(&self, id: &str) -> Option<&Arc<AppState>> {
        self.inner.apps.get(id)
    }

    /// Every app.
    pub fn apps(&self) -> impl Iterator<Item = &AppConfig> {
        self.inner.apps.values().map(|a| &a.config)
    }

    pub(crate) fn now(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// Starts serving a connection. The receiver is the connection's outbound queue,
    /// sized by the largest `outbound_queue` limit of any app.
    ///
    /// `version` is the protocol version the client negotiated: 1 and 2 (the v2 JSON
    /// protocol) have their offline backlog pushed on login; 3 gets unread counts instead
    /// and reads history itself. Version 2 has no roles (see `conv_remove`).
    pub fn open_connection(&self, origin: Option<String>, version: u8) -> (Connection, OutboundReceiver) {
        let capacity = self.inner.apps.values().map(|a| a.config.limits.outbound_queue).max().unwrap_or(1024);
        let id = self.inner.next_conn.fetch_add(1, Ordering::Relaxed);
        let (handle, rx) = ConnHandle::new(id, origin, capacity);
        self.inner.live_connections.fetch_add(1, Ordering::Relaxed);
        (
            Connection { engine: self.clone(), handle, sessions: Vec::new(), push_offline: version < 3, v2: version == 2 },
            rx,
        )
    }

    /// A conversation from the cache, loading it from the store on first use.
    pub(crate) async fn conv(&self, app: &AppState, cid: &str) -> Result<Option<Arc<Conv>>, ProtocolError> {
        if let Some(conv) = app.convs.get(cid) {
            return Self::unexpired(conv, self.now()).map(Some);
        }
        let Some(record) = self.inner.store.conversation(&app.config.id, cid).await.map_err(store_error)?
        else {
            return Ok(None);
        };
        let loaded = Arc::new(Conv::from_record(&record));
        let conv = app.convs.shard(cid).entry(cid.to_owned()).or_insert(loaded).clone();
        Self::unexpired(conv, self.now()).map(Some)
    }

    fn unexpired(conv: Arc<Conv>, now: i64) -> Result<Arc<Conv>, ProtocolError> {
        match conv.expires_at {
            Some(expires) if expires <= now => {
                Err(perr(ErrorCode::TemporaryConversationExpired, "temporary conversation expired"))
            }
            _ => Ok(conv),
        }
    }

    /// Queues a push to every online session of `client`.
    pub(crate) fn push_to_client(&self, app: &AppState, client: &str, push: &Arc<SharedPush>) {
        for session in app.sessions_of(client) {
            session.push(push.clone());
        }
    }

    /// Sends a conversation event to every online session of `recipient`.
    fn notify(&self, app: &AppState, recipient: &str, notice: &Notice<'_>) {
        let push = SharedPush::new(Push::Conv(ConvPush {
            event: notice.event,
            peer_id: recipient.to_owned(),
            cid: notice.cid.to_owned(),
            init_by: notice.init_by.to_owned(),
            members: notice.members.to_vec(),
            attr: notice.attr.cloned(),
            role: None,
            udate: notice.udate,
        }));
        self.push_to_client(app, recipient, &push);
    }

    fn check_signature(
        &self,
        app: &AppState,
        client: &str,
        op: Signed<'_>,
        sig: Option<&Signature>,
        code: ErrorCode,
    ) -> Result<(), ProtocolError> {
        let c = &app.config;
        self.inner
            .verifier
            .check(&c.id, &c.master_key, client, op, sig, self.now(), c.signatures.window_secs)
            .map_err(|p| perr(code, p.detail()))
    }
}

/// The engine's side of one network connection: at most one session (the v2 protocol
/// logs in one client id per connection).
#[derive(Debug)]
pub struct Connection {
    engine: Engine,
    /// The connection's outbound handle.
    pub handle: Arc<ConnHandle>,
    /// The sessions on this connection: usually one; the 3.x+ SDKs put every client of
    /// one `Realtime` on one socket and address commands by `peerId`.
    sessions: Vec<Arc<Session>>,
    /// Push the offline backlog on login (protocol version 1) rather than unread counts.
    push_offline: bool,
    /// The v2 JSON protocol (2.x SDKs): no roles, and no way to read a partial failure.
    v2: bool,
}

impl Drop for Connection {
    /// The connection ended without a logout: deliver the session's will, if any.
    fn drop(&mut self) {
        self.engine.inner.live_connections.fetch_sub(1, Ordering::Relaxed);
        for session in std::mem::take(&mut self.sessions) {
            self.engine.end_session(&session);
            let will = session.will.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let (Some(will), Some(app)) = (will, self.engine.app(&session.app_id).cloned()) {
                let engine = self.engine.clone();
                tokio::spawn(async move {
                    if let Err(e) = engine.send(&app, &session, None, will).await {
                        tracing::debug!(error = %e, "will message not sent");
                    }
                });
            }
        }
    }
}

impl Connection {
    /// Whether a session is open on this connection.
    pub fn has_session(&self) -> bool {
        self.sessions.iter().any(|s| !s.is_closed())
    }

    /// The session a command addresses: by `peerId`, or the first when it has none
    /// (4.3.1 omits `peerId` while it has a single client).
    fn addressed(&mut self, peer_id: Option<&str>) -> Option<Arc<Session>> {
        self.sessions.retain(|s| !s.is_closed());
        match peer_id {
            Some(peer) => self.sessions.iter().find(|s| &*s.client_id == peer).cloned(),
            None => self.sessions.first().cloned(),
        }
    }

    fn remove_session(&mut self, session: &Arc<Session>) {
        self.sessions.retain(|s| !Arc::ptr_eq(s, session));
        self.engine.end_session(session);
    }

    /// Handles one request. Replies are returned (or, where pushes must follow the
    /// reply, queued directly); errors come back typed for the caller to encode by
    /// their disposition.
    pub async fn handle(&mut self, inbound: Inbound) -> Result<Option<Reply>, ProtocolError> {
        let Inbound { serial, peer_id, request } = inbound;
        let session = match &request {
            Request::Heartbeat => return Ok(Some(Reply::Heartbeat)),
            Request::SessionOpen(open) => return self.open(serial, peer_id, open).await,
            _ => match self.addressed(peer_id.as_deref()) {
                Some(session) => session,
                None => return Err(perr(ErrorCode::SessionRequired, "open a session first")),
            },
        };
        let engine = self.engine.clone();
        let app = engine
            .app(&session.app_id)
            .cloned()
            .ok_or_else(|| perr(ErrorCode::AppNotAvailable, "app removed"))?;
        let limits = &app.config.limits;
        let class = match &request {
            Request::Direct(_) => {
                Some((RateClass::Send, limits.sends_per_minute, ErrorCode::MessageSentQuotaExceeded))
            }
            Request::Logs(_) => {
                Some((RateClass::History, limits.history_per_minute, ErrorCode::ConversationApiQuotaExceeded))
            }
            Request::Ack(_)
            | Request::Read { .. }
            | Request::SessionClose
            | Request::SessionRefresh
            | Request::SessionQuery { .. } => None,
            _ => Some((RateClass::Op, limits.ops_per_minute, ErrorCode::ConversationApiQuotaExceeded)),
        };
        if let Some((class, limit, code)) = class {
            let admitted =
                session.rate.lock().unwrap_or_else(|p| p.into_inner()).admit(class, limit, engine.now());
            if !admitted {
                return Err(perr(code, format!("rate limit of {limit} per minute exceeded")));
            }
        }
        match request {
            Request::Heartbeat | Request::SessionOpen(_) => Ok(None),
            Request::SessionRefresh => {
                let c = &app.config;
                let token = session_token::issue(
                    &c.master_key,
                    &c.id,
                    &session.client_id,
                    session.tag.as_deref(),
                    engine.now(),
                );
                Ok(Some(Reply::SessionRefreshed { token }))
            }
            Request::SessionClose => {
                // A logout is not an abnormal end: the will is dropped.
                session.will.lock().unwrap_or_else(|p| p.into_inner()).take();
                self.remove_session(&session);
                Ok(Some(Reply::SessionClosed))
            }
            Request::SessionQuery { mut peer_ids } => {
                peer_ids.truncate(limits.ping_ids);
                let mut seen = HashSet::new();
                let online =
                    peer_ids.into_iter().filter(|id| seen.insert(id.clone()) && app.is_online(id)).collect();
                Ok(Some(Reply::SessionQueryResult { online }))
            }
            Request::ConvStart(start) => engine.conv_start(&app, &session, serial, start).await,
            Request::ConvAdd(change) => engine.conv_add(&app, &session, serial, change).await,
            Request::ConvRemove(change) => engine.conv_remove(&app, &session, serial, change, self.v2).await,
            Request::ConvQuery(query) => engine.conv_query(&app, &session, query).await.map(Some),
            Request::ConvCount { cid } => {
                let conv = engine
                    .conv(&app, &cid)
                    .await?
                    .ok_or_else(|| perr(ErrorCode::ConversationNotFound, cid))?;
                let count = match conv.kind {
                    ConvKind::Transient => conv.room_clients().len(),
                    _ => conv.state().members.len(),
                };
                Ok(Some(Reply::ConvCount { count }))
            }
            Request::ConvUpdate { cid, attr } => engine.conv_update(&app, &session, serial, &cid, attr).await,
            Request::Direct(direct) => engine.send(&app, &session, serial, direct).await,
            Request::Ack(ack) => {
                engine.ack(&app, &session, ack);
                Ok(None)
            }
            Request::Logs(query) => engine.logs(&app, &session, query).await.map(Some),
            Request::ConvMute { cid, muted } => {
                let conv = engine
                    .conv(&app, &cid)
                    .await?
                    .ok_or_else(|| perr(ErrorCode::ConversationNotFound, &cid))?;
                if !conv.has_member(&session.client_id) {
                    return Err(perr(ErrorCode::ConversationMembershipRequired, "only members can mute"));
                }
                let store = &engine.inner.store;
                store
                    .set_muted(&app.config.id, &cid, &session.client_id, muted)
                    .await
                    .map_err(store_error)?;
                Ok(Some(Reply::ConvUpdated { updated_at: engine.now() }))
            }
            Request::Patch { items } => engine.patch(&app, &session, items).await.map(Some),
            Request::MemberRole { cid, member, role } => {
                engine.member_role(&app, &session, &cid, member, role).await.map(Some)
            }
            Request::Restrict(r) => engine.restrict(&app, &session, serial, r).await,
            Request::RestrictedQuery { cid, blocked, limit, next } => {
                let conv = engine
                    .conv(&app, &cid)
                    .await?
                    .ok_or_else(|| perr(ErrorCode::ConversationNotFound, &cid))?;
                if !conv.has_member(&session.client_id) {
                    return Err(perr(ErrorCode::ConversationMembershipRequired, "only members can look"));
                }
                let mut all: Vec<String> = {
                    let state = conv.state();
                    if blocked {
                        state.blocked.iter().cloned().collect()
                    } else {
                        state.shut_up.iter().cloned().collect()
                    }
                };
                all.sort_unstable();
                let start = next.and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
                let limit = limit
                    .filter(|l| *l > 0)
                    .map_or(10, |l| l as usize)
                    .min(app.config.limits.query_max_limit);
                let members: Vec<String> = all.iter().skip(start).take(limit).cloned().collect();
                let next = (start + members.len() < all.len()).then(|| (start + members.len()).to_string());
                Ok(Some(Reply::RestrictedPage { blocked, members, next }))
            }
            Request::ConvMaxRead { cid, all_members } => {
                let conv = engine
                    .conv(&app, &cid)
                    .await?
                    .ok_or_else(|| perr(ErrorCode::ConversationNotFound, &cid))?;
                if !conv.has_member(&session.client_id) {
                    return Err(perr(ErrorCode::ConversationMembershipRequired, "only members see receipts"));
                }
                let positions =
                    engine.inner.store.member_positions(&app.config.id, &cid).await.map_err(store_error)?;
                let others = positions.iter().filter(|(client, _, _)| **client != *session.client_id);
                let (max_ack, max_read) =
                    others.fold((0, 0), |(a, r), (_, ack, read)| (a.max(*ack).max(*read), r.max(*read)));
                // Reading implies having received.
                let members = if all_members {
                    positions.into_iter().map(|(client, ack, read)| (client, ack.max(read), read)).collect()
                } else {
                    Vec::new()
                };
                Ok(Some(Reply::ConvMaxRead { max_ack, max_read, members }))
            }
            Request::Read { convs } => {
                engine.read(&app, &session, convs).await;
                Ok(None)
            }
        }
    }

    async fn open(
        &mut self,
        serial: Option<i32>,
        peer_id: Option<String>,
        open: &SessionOpen,
    ) -> Result<Option<Reply>, ProtocolError> {
        let engine = self.engine.clone();
        let app = engine
            .app(&open.app_id)
            .cloned()
            .ok_or_else(|| perr(ErrorCode::AppNotAvailable, format!("unknown app {:?}", open.app_id)))?;
        if !app.config.origin_allowed(self.handle.origin.as_deref()) {
            return Err(perr(ErrorCode::InvalidOrigin, "origin not allowed for this app"));
        }
        let client_id = match peer_id {
            None => ids::anonymous_client_id(),
            Some(id) => {
                bounds::check_client_id(&id, app.config.limits.client_id_chars)
                    .map_err(|why| perr(ErrorCode::InvalidLogin, why))?;
                id
            }
        };
        // Opening a client id again on the same connection replaces its session, so only
        // a new id counts against the connection's share.
        let max_sessions = app.config.limits.sessions_per_connection;
        if self.sessions.len() >= max_sessions && !self.sessions.iter().any(|s| *s.client_id == *client_id) {
            return Err(bounds::over_limit(
                ErrorCode::UnparseableRawMsg,
                "sessions_per_connection",
                max_sessions,
            ));
        }
        let config = &app.config;
        let tag = match (&open.session_token, open.reconnect) {
            // A re-login after a reconnect presents its token instead of a signature; the
            // token carries the device tag, which the re-login does not resend.
            (Some(token), true) => {
                session_token::check(&config.master_key, &config.id, &client_id, token, engine.now())
                    .ok_or_else(|| perr(ErrorCode::SessionTokenExpired, "session token unknown or expired"))?
            }
            _ => {
                if config.signatures.login {
                    let sig = open.signature.as_ref();
                    engine.check_signature(
                        &app,
                        &client_id,
                        Signed::Login,
                        sig,
                        ErrorCode::SignatureFailed,
                    )?;
                }
                open.tag.clone().filter(|t| !t.is_empty() && t != "default")
            }
        };
        // Single-device login: a login with a tag ends the client's other sessions with
        // the same tag; a re-login finding its tag taken is refused instead.
        if let Some(tag) = &tag {
            let holders: Vec<Arc<Session>> = app
                .sessions_of(&client_id)
                .into_iter()
                .filter(|s| {
                    s.tag.as_deref() == Some(tag.as_str()) && s.conn.id != self.handle.id && !s.is_closed()
                })
                .collect();
            if !holders.is_empty() && open.reconnect {
                return Err(perr(ErrorCode::SessionConflict, "this device tag is logged in elsewhere"));
            }
            for holder in holders {
                let error = perr(ErrorCode::SessionConflict, "logged in on another device with the same tag");
                holder.push(SharedPush::new(Push::SessionClosed { peer_id: client_id.clone(), error }));
                engine.end_session(&holder);
            }
        }
        // Opening a client id again on the same connection replaces its session.
        if let Some(old) = self.sessions.iter().find(|s| *s.client_id == *client_id).cloned() {
            self.remove_session(&old);
        }
        let session = Session::new(
            self.handle.clone(),
            Arc::from(app.config.id.as_str()),
            Arc::from(client_id.as_str()),
            tag.clone(),
        );
        app.sessions.shard(&client_id).entry(client_id.clone()).or_default().push(session.clone());
        self.sessions.push(session.clone());
        let cursors = match engine.inner.store.member_cursors(&app.config.id, &client_id).await {
            Ok(c) => c,
            Err(e) => {
                self.remove_session(&session);
                return Err(store_error(e));
            }
        };
        tracing::debug!(app = %app.config.id, client = %client_id, conn = self.handle.id, "session opened");
        let now = engine.now();
        let token = session_token::issue(&config.master_key, &config.id, &client_id, tag.as_deref(), now);
        self.handle.reply(
            serial,
            Reply::SessionOpened { peer_id: client_id, session_token: Some(token), server_ts: now },
        );
        // A client in no conversation has nothing to catch up on: conversations it joins
        // from now on start at their newest message.
        let member_anywhere = !cursors.is_empty();
        {
            let mut delivery = session.delivery();
            for c in cursors {
                // Version 3 clients start caught up: what they missed shows up as unread
                // counts and they read it from history.
                let from = if self.push_offline { c.cursor } else { c.last_ts };
                delivery.convs.insert(c.cid, crate::session::ConvDelivery::at(from));
            }
            delivery.ready = true;
        }
        let last_patch_time = open.last_patch_time;
        if !member_anywhere {
            return Ok(None);
        }
        if self.push_offline {
            tokio::spawn(async move {
                engine.push_patches(&app, &session, last_patch_time).await;
                crate::delivery::replay_backlog(engine, app, session).await;
            });
        } else {
            tokio::spawn(async move {
                engine.push_patches(&app, &session, last_patch_time).await;
                engine.push_unread(&app, &session).await;
            });
        }
        Ok(None)
    }
}

impl Engine {
    /// Ends a session: it stops receiving, leaves its chat rooms, and its client goes
    /// offline when it was the last session.
    pub(crate) fn end_session(&self, session: &Arc<Session>) {
        session.closed.store(true, Ordering::Release);
        let Some(app) = self.app(&session.app_id) else {
            return;
        };
        {
            let mut shard = app.sessions.shard(&session.client_id);
            if let Some(list) = shard.get_mut(&*session.client_id) {
                list.retain(|s| !Arc::ptr_eq(s, session));
                if list.is_empty() {
                    shard.remove(&*session.client_id);
                }
            }
        }
        let rooms = std::mem::take(&mut *session.rooms.lock().unwrap_or_else(|p| p.into_inner()));
        for cid in rooms {
            if let Some(conv) = app.convs.get(&cid) {
                conv.state().room.retain(|s| !Arc::ptr_eq(s, session));
            }
        }
    }

    fn valid_member_ids(app: &AppState, members: &[String]) -> Result<(), ProtocolError> {
        let max = app.config.limits.client_id_chars;
        for member in members {
            if let Err(why) = bounds::check_client_id(member, max) {
                return Err(perr(
                    ErrorCode::UnparseableRawMsg,
                    format!("invalid client id {member:?} in m: {why}"),
                ));
            }
        }
        Ok(())
    }

    async fn conv_start(
        &self,
        app: &Arc<AppState>,
        session: &Arc<Session>,
        serial: Option<i32>,
        start: ConvStart,
    ) -> Result<Option<Reply>, ProtocolError> {
        let me = session.client_id.to_string();
        if app.config.signatures.conversation {
            self.check_signature(
                app,
                &me,
                Signed::Start { members: &start.members },
                start.signature.as_ref(),
                ErrorCode::ConversationSignatureFailed,
            )?;
        }
        Self::valid_member_ids(app, &start.members)?;
        let mut members = distinct(std::iter::once(me.clone()).chain(start.members));
        let limits = &app.config.limits;
        let kind = match (start.transient, start.temporary_ttl) {
            (true, _) => ConvKind::Transient,
            (false, Some(_)) => ConvKind::Temporary,
            (false, None) => ConvKind::Normal,
        };
        let max_members = match kind {
            ConvKind::Temporary => limits.temporary_members,
            _ => limits.conversation_members,
        };
        if kind == ConvKind::Transient {
            members.clear();
        } else if members.len() > max_members {
            return Err(perr(ErrorCode::ConversationFull, format!("at most {max_members} members")));
        }
        let attrs = bounds::updated_attributes(limits, &Map::new(), &start.attr)?;
        // The same member set finds the same unique (or live temporary) conversation.
        let unique = match kind {
            ConvKind::Normal if start.unique => Some(unique_key(&members)),
            ConvKind::Temporary => Some(format!("tmp\u{1e}{}", unique_key(&members))),
            _ => None,
        };
        let now = self.now();
        let started = |r: &ConversationRecord| Reply::ConvStarted {
            cid: r.id.clone(),
            created_at: r.created_at,
            temporary_ttl: r.expires_at.map(|e| (e - now).max(0) / 1000),
        };
        let store = &self.inner.store;
        if let Some(key) = &unique
            && let Some(found) = store.find_unique(&app.config.id, key).await.map_err(store_error)?
        {
            match found.expires_at {
                Some(expires) if expires <= now => {
                    store.release_unique(&app.config.id, &found.id).await.map_err(store_error)?;
                }
                _ => return Ok(Some(started(&found))),
            }
        }
        let (id, expires_at) = match start.temporary_ttl {
            Some(ttl) if kind == ConvKind::Temporary => {
                let ttl = if ttl <= 0 { 86_400 } else { ttl.min(limits.temporary_ttl_max_secs) };
                (ids::temporary_conversation_id(), Some(now + ttl * 1000))
            }
            _ => (ids::conversation_id(now), None),
        };
        let record = ConversationRecord {
            app: app.config.id.clone(),
            id,
            kind,
            creator: me.clone(),
            members: members.clone(),
            muted: Vec::new(),
            managers: Vec::new(),
            shut_up: Vec::new(),
            blocked: Vec::new(),
            expires_at,
            attrs,
            unique_key: unique.clone(),
            created_at: now,
            updated_at: now,
            last_message: None,
        };
        if let Err(e) = store.create_conversation(record.clone()).await {
            // A concurrent creation of the same unique conversation wins the race.
            if let Some(key) = &unique
                && let Ok(Some(found)) = store.find_unique(&app.config.id, key).await
            {
                return Ok(Some(started(&found)));
            }
            return Err(store_error(e));
        }
        let conv = Arc::new(Conv::from_record(&record));
        app.convs.shard(&record.id).insert(record.id.clone(), conv.clone());
        session.conn.reply(serial, started(&record));
        if kind == ConvKind::Transient {
            self.join_room(&conv, session);
        } else {
            for member in &members {
                for s in app.sessions_of(member) {
                    s.reset_conv(&record.id);
                }
                self.notify(
                    app,
                    member,
                    &Notice {
                        event: ConvEvent::Joined,
                        cid: &record.id,
                        init_by: &me,
                        members: &[],
                        attr: None,
                        udate: now,
                    },
                );
                self.notify(
                    app,
                    member,
                    &Notice {
                        event: ConvEvent::MembersJoined,
                        cid: &record.id,
                        init_by: &me,
                        members: &members,
                        attr: None,
                        udate: now,
                    },
                );
            }
        }
        Ok(None)
    }

    /// Membership of conversations other than normal ones: a chat room or a system
    /// conversation is joined and left by each client itself; temporary ones are fixed.
    async fn self_membership(
        &self,
        app: &AppState,
        conv: &Conv,
        session: &Arc<Session>,
        requested: Vec<String>,
        join: bool,
    ) -> Result<MembersResult, ProtocolError> {
        match conv.kind {
            ConvKind::Transient => Ok(self.room_membership(conv, session, requested, join)),
            ConvKind::System => self.subscription(app, conv, session, requested, join).await,
            _ => Err(perr(
                ErrorCode::NormalConversationRequired,
                "membership of this conversation cannot change",
            )),
        }
    }

    /// System conversations: a client subscribes or unsubscribes itself; no events.
    async fn subscription(
        &self,
        app: &AppState,
        conv: &Conv,
        session: &Arc<Session>,
        requested: Vec<String>,
        subscribe: bool,
    ) -> Result<MembersResult, ProtocolError> {
        let me = session.client_id.to_string();
        let mut result = MembersResult::default();
        for id in requested {
            if id != me {
                let error = perr(
                    ErrorCode::NormalConversationRequired,
                    "clients subscribe and unsubscribe themselves",
                );
                result.failed.push((error, vec![id]));
                continue;
            }
            let (store, now) = (&self.inner.store, self.now());
            if subscribe {
                if !conv.has_member(&me) {
                    store
                        .add_members(&app.config.id, &conv.cid, vec![me.clone()], now)
                        .await
                        .map_err(store_error)?;
                    conv.state().members.insert(me.clone());
                }
            } else if conv.has_member(&me) {
                store
                    .remove_members(&app.config.id, &conv.cid, vec![me.clone()], now)
                    .await
                    .map_err(store_error)?;
                conv.state().members.remove(&me);
            }
            for s in app.sessions_of(&me) {
                s.reset_conv(&conv.cid);
            }
            result.allowed.push(id);
        }
        Ok(result)
    }

    /// Chat rooms: a session joins or leaves itself; nobody adds or removes others.
    fn room_membership(
        &self,
        conv: &Conv,
        session: &Arc<Session>,
        requested: Vec<String>,
        join: bool,
    ) -> MembersResult {
        let mut result = MembersResult::default();
        for id in requested {
            if *id != *session.client_id {
                let error = perr(
                    ErrorCode::NormalConversationRequired,
                    "chat room members join and leave themselves",
                );
                result.failed.push((error, vec![id]));
            } else if join {
                self.join_room(conv, session);
                result.allowed.push(id);
            } else {
                conv.state().room.retain(|s| !Arc::ptr_eq(s, session));
                session.rooms.lock().unwrap_or_else(|p| p.into_inner()).retain(|c| *c != conv.cid);
                result.allowed.push(id);
            }
        }
        result
    }

    fn join_room(&self, conv: &Conv, session: &Arc<Session>) {
        let mut state = conv.state();
        if !state.room.iter().any(|s| Arc::ptr_eq(s, session)) {
            state.room.push(session.clone());
            session.rooms.lock().unwrap_or_else(|p| p.into_inner()).push(conv.cid.clone());
        }
    }

    async fn conv_add(
        &self,
        app: &Arc<AppState>,
        session: &Arc<Session>,
        serial: Option<i32>,
        change: MembersChange,
    ) -> Result<Option<Reply>, ProtocolError> {
        let me = session.client_id.to_string();
        let cid = change.cid.clone();
        let conv = self.conv(app, &cid).await?.ok_or_else(|| perr(ErrorCode::ConversationNotFound, &cid))?;
        if app.config.signatures.conversation {
            self.check_signature(
                app,
                &me,
                Signed::Invite { cid: &cid, members: &change.members },
                change.signature.as_ref(),
                ErrorCode::ConversationSignatureFailed,
            )?;
        }
        Self::valid_member_ids(app, &change.members)?;
        let requested = distinct(change.members.iter().cloned());
        let only_me = requested.len() == 1 && requested[0] == me;
        if conv.kind != ConvKind::Normal {
            return Ok(Some(Reply::ConvAdded(
                self.self_membership(app, &conv, session, requested, true).await?,
            )));
        }
        let lock = app.conv_lock(&cid);
        let _guard = lock.lock().await;
        if !only_me && !conv.has_member(&me) {
            return Err(perr(ErrorCode::ConversationMembershipRequired, "only members can add others"));
        }
        let (existing, current, blocked) = {
            let state = conv.state();
            (state.members.clone(), state.members.len(), state.blocked.clone())
        };
        if only_me && blocked.contains(&me) {
            return Err(perr(ErrorCode::ConversationBlacklisted, "blocked from this conversation"));
        }
        let mut result = MembersResult::default();
        let mut added = Vec::new();
        let room = app.config.limits.conversation_members.saturating_sub(current);
        let mut full = Vec::new();
        let mut refused = Vec::new();
        for id in requested {
            if blocked.contains(&id) {
                refused.push(id);
            } else if existing.contains(&id) {
                result.allowed.push(id);
            } else if added.len() < room {
                added.push(id.clone());
                result.allowed.push(id);
            } else {
                full.push(id);
            }
        }
        if !full.is_empty() {
            result.failed.push((perr(ErrorCode::ConversationFull, "member limit reached"), full));
        }
        if !refused.is_empty() {
            result
                .failed
                .push((perr(ErrorCode::ConversationBlacklisted, "blocked from this conversation"), refused));
        }
        let now = self.now();
        if !added.is_empty() {
            self.inner
                .store
                .add_members(&app.config.id, &cid, added.clone(), now)
                .await
                .map_err(store_error)?;
            conv.state().members.extend(added.iter().cloned());
        }
        session.conn.reply(serial, Reply::ConvAdded(result));
        if !added.is_empty() {
            let members: Vec<String> = conv.state().members.iter().cloned().collect();
            for member in &members {
                if added.contains(member) {
                    for s in app.sessions_of(member) {
                        s.reset_conv(&cid);
                    }
                    self.notify(
                        app,
                        member,
                        &Notice {
                            event: ConvEvent::Joined,
                            cid: &cid,
                            init_by: &me,
                            members: &[],
                            attr: None,
                            udate: now,
                        },
                    );
                }
                self.notify(
                    app,
                    member,
                    &Notice {
                        event: ConvEvent::MembersJoined,
                        cid: &cid,
                        init_by: &me,
                        members: &added,
                        attr: None,
                        udate: now,
                    },
                );
            }
        }
        Ok(None)
    }

    async fn conv_remove(
        &self,
        app: &Arc<AppState>,
        session: &Arc<Session>,
        serial: Option<i32>,
        change: MembersChange,
        v2: bool,
    ) -> Result<Option<Reply>, ProtocolError> {
        let me = session.client_id.to_string();
        let cid = change.cid.clone();
        let conv = self.conv(app, &cid).await?.ok_or_else(|| perr(ErrorCode::ConversationNotFound, &cid))?;
        let requested = distinct(change.members.iter().cloned());
        let only_me = requested.len() == 1 && requested[0] == me;
        // Leaving needs no signature (2.x sends none for it).
        if app.config.signatures.conversation && !only_me {
            self.check_signature(
                app,
                &me,
                Signed::Kick { cid: &cid, members: &change.members },
                change.signature.as_ref(),
                ErrorCode::ConversationSignatureFailed,
            )?;
        }
        if conv.kind != ConvKind::Normal {
            return Ok(Some(Reply::ConvRemoved(
                self.self_membership(app, &conv, session, requested, false).await?,
            )));
        }
        let lock = app.conv_lock(&cid);
        let _guard = lock.lock().await;
        if !only_me && !conv.has_member(&me) {
            return Err(perr(ErrorCode::ConversationMembershipRequired, "only members can remove others"));
        }
        let existing = conv.state().members.clone();
        // The owner stays: removing it (or it leaving) fails for the owner alone. The v2
        // protocol has no roles and its SDKs ignore `failedPids` (2.4.0 would report a
        // refused leave as done): there the creator may leave, and a removal of the
        // creator by anyone else is refused whole, as an error the SDK does see.
        let (owner, requested): (Vec<String>, Vec<String>) =
            requested.into_iter().partition(|id| *id == conv.creator && existing.contains(id) && !(v2 && *id == me));
        if v2 && !owner.is_empty() {
            return Err(perr(ErrorCode::ConversationNeedOwner, "only the creator can remove itself"));
        }
        let removed: Vec<String> = requested.iter().filter(|id| existing.contains(*id)).cloned().collect();
        let now = self.now();
        if !removed.is_empty() {
            self.inner
                .store
                .remove_members(&app.config.id, &cid, removed.clone(), now)
                .await
                .map_err(store_error)?;
            let mut state = conv.state();
            for id in &removed {
                state.members.remove(id);
            }
        }
        let failed = if owner.is_empty() {
            Vec::new()
        } else {
            vec![(perr(ErrorCode::ConversationNeedOwner, "the owner cannot leave or be removed"), owner)]
        };
        session.conn.reply(serial, Reply::ConvRemoved(MembersResult { allowed: requested, failed }));
        if !removed.is_empty() {
            for id in &removed {
                for s in app.sessions_of(id) {
                    s.reset_conv(&cid);
                }
                self.notify(
                    app,
                    id,
                    &Notice {
                        event: ConvEvent::Left,
                        cid: &cid,
                        init_by: &me,
                        members: &[],
                        attr: None,
                        udate: now,
                    },
                );
            }
            let remaining: Vec<String> = conv.state().members.iter().cloned().collect();
            for member in &remaining {
                self.notify(
                    app,
                    member,
                    &Notice {
                        event: ConvEvent::MembersLeft,
                        cid: &cid,
                        init_by: &me,
                        members: &removed,
                        attr: None,
                        udate: now,
                    },
                );
            }
        }
        Ok(None)
    }

    async fn conv_query(
        &self,
        app: &Arc<AppState>,
        session: &Arc<Session>,
        query: ConvQuery,
    ) -> Result<Reply, ProtocolError> {
        let me = session.client_id.to_string();
        let limits = &app.config.limits;
        let where_ = match query.where_ {
            Some(Value::Object(m)) if !m.is_empty() => Value::Object(m),
            _ => serde_json::json!({ "m": me }),
        };
        bounds::check_depth(limits, &where_)?;
        if bounds::json_bytes(&where_) > limits.where_bytes {
            return Err(bounds::over_limit(
                ErrorCode::ConversationQueryFailed,
                "where_bytes",
                limits.where_bytes,
            ));
        }
        let query_failed = |e: QueryError| perr(ErrorCode::ConversationQueryFailed, e.to_string());
        let cond = parse_where(&where_, &QueryBounds::of(limits)).map_err(query_failed)?;
        // Temporary conversations are found only by id, never by `where`.
        let temporary = !query.temporary_ids.is_empty();
        let filter = if temporary {
            ScanFilter {
                ids: Some(query.temporary_ids.clone()),
                kind: Some(ConvKind::Temporary),
                max: limits.query_scan_max,
                ..ScanFilter::default()
            }
        } else {
            cond.scan_filter(limits.query_scan_max)
        };
        let now = self.now();
        let records =
            self.inner.store.scan_conversations(&app.config.id, filter).await.map_err(store_error)?;
        if records.len() > limits.query_scan_max {
            return Err(perr(
                ErrorCode::ConversationQueryFailed,
                format!("query examines more than {} conversations; narrow it", limits.query_scan_max),
            ));
        }
        // Evaluated on a blocking thread within a budget of steps: a costly query takes
        // no async worker from other clients, and stops at the same point however busy
        // the machine is.
        let keys = parse_sort(query.sort.as_deref().unwrap_or("-lm"));
        let (steps, app_state) = (limits.query_budget, app.clone());
        let evaluate = move || {
            let spent = || QueryError::Limit { key: "query_budget", max: steps };
            let mut budget = Budget::new(steps);
            let mut matched = Vec::new();
            for record in records {
                if (record.kind == ConvKind::Temporary) != temporary
                    || record.expires_at.is_some_and(|e| e <= now)
                {
                    continue;
                }
                budget.charge(1).ok_or_else(spent)?;
                let room = (record.kind == ConvKind::Transient)
                    .then(|| app_state.convs.get(&record.id).map(|c| c.room_clients()).unwrap_or_default());
                let mut doc = query_doc(&record, room);
                // A query sees what its caller may see: members only of its own conversations.
                let visible = match record.kind {
                    ConvKind::Normal | ConvKind::Temporary => record.members.iter().any(|m| m == &me),
                    _ => true,
                };
                if !visible {
                    doc.remove("m");
                    doc.remove("mu");
                }
                if let Some(expires) = record.expires_at {
                    doc.insert("ttl".into(), Value::from((expires - now) / 1000));
                }
                let hit = temporary || cond.matches_within(&doc, &mut budget).ok_or_else(spent)?;
                if hit {
                    matched.push((record, doc, visible));
                }
            }
            matched.sort_by(|a, b| compare_docs(&keys, &a.1, &b.1));
            Ok(matched)
        };
        let matched = tokio::task::spawn_blocking(evaluate)
            .await
            .map_err(|e| perr(ErrorCode::InternalError, format!("query evaluation failed: {e}")))?
            .map_err(query_failed)?;
        let skip = query.skip.unwrap_or(0).max(0) as usize;
        let limit = match query.limit {
            Some(l) if l > 0 => (l as usize).min(limits.query_max_limit),
            _ => limits.query_default_limit,
        };
        let compact = query.flag & 1 != 0;
        let with_last = query.flag & 2 != 0;
        let results = matched
            .into_iter()
            .skip(skip)
            .take(limit)
            .map(|(record, doc, visible)| {
                result_json(&record, doc, visible && !compact, with_last && visible)
            })
            .collect();
        Ok(Reply::ConvResults { results })
    }

    async fn conv_update(
        &self,
        app: &Arc<AppState>,
        session: &Arc<Session>,
        serial: Option<i32>,
        cid: &str,
        attr: Map<String, Value>,
    ) -> Result<Option<Reply>, ProtocolError> {
        let me = session.client_id.to_string();
        let conv = self.conv(app, cid).await?.ok_or_else(|| perr(ErrorCode::ConversationNotFound, cid))?;
        if !conv.has_member(&me) {
            return Err(perr(
                ErrorCode::ConversationUpdateRejected,
                "only members can update a conversation",
            ));
        }
        if conv.kind == ConvKind::Temporary {
            return Err(perr(ErrorCode::NormalConversationRequired, "temporary conversations cannot change"));
        }
        let lock = app.conv_lock(cid);
        let _guard = lock.lock().await;
        let store = &self.inner.store;
        let record = store
            .conversation(&app.config.id, cid)
            .await
            .map_err(store_error)?
            .ok_or_else(|| perr(ErrorCode::ConversationNotFound, cid))?;
        let attrs = bounds::updated_attributes(&app.config.limits, &record.attrs, &attr)?;
        let now = self.now();
        store.set_attributes(&app.config.id, cid, attrs, now).await.map_err(store_error)?;
        session.conn.reply(serial, Reply::ConvUpdated { updated_at: now });
        let recipients: Vec<String> = match conv.kind {
            ConvKind::Transient => conv.room_clients(),
            _ => conv.state().members.iter().cloned().collect(),
        };
        for member in recipients {
            self.notify(
                app,
                &member,
                &Notice {
                    event: ConvEvent::Updated,
                    cid,
                    init_by: &me,
                    members: &[],
                    attr: Some(&attr),
                    udate: now,
                },
            );
        }
        Ok(None)
    }

    async fn logs(
        &self,
        app: &Arc<AppState>,
        session: &Arc<Session>,
        q: LogsQuery,
    ) -> Result<Reply, ProtocolError> {
        let conv =
            self.conv(app, &q.cid).await?.ok_or_else(|| perr(ErrorCode::ConversationNotFound, &q.cid))?;
        if matches!(conv.kind, ConvKind::Normal | ConvKind::Temporary) && !conv.has_member(&session.client_id)
        {
            return Err(perr(ErrorCode::ConversationLogRejected, "only members can read history"));
        }
        let limits = &app.config.limits;
        let limit = match q.limit {
            None => limits.history_default_limit,
            Some(l) if l <= 0 => return Ok(Reply::Logs { logs: Vec::new() }),
            Some(l) => (l as usize).min(limits.history_max_limit),
        };
        let start = q.t.map(|t| (t, q.t_included));
        let end = q.tt.map(|t| (t, q.tt_included));
        let range = match q.direction {
            Direction::Older => {
                MessageRange { before: start, after: end, newest_first: true, limit, lctype: q.lctype }
            }
            Direction::Newer => {
                MessageRange { after: start, before: end, newest_first: false, limit, lctype: q.lctype }
            }
        };
        let messages = self.inner.store.messages(&app.config.id, &q.cid, range).await.map_err(store_error)?;
        let logs = messages
            .into_iter()
            .map(|m| LogItem {
                from: m.from,
                data: m.data,
                timestamp: m.ts,
                msg_id: m.id,
                patched_at: m.patched_at,
                binary: m.binary,
                mentions: m.mentions,
            })
            .collect();
        Ok(Reply::Logs { logs })
    }
}

/// Edits and recalls caught up at login, at most (older ones are in history).
const PATCH_CATCH_UP: usize = 500;

/// Conversations reported in one `unread` push (LeanCloud tracked at most 50).
const UNREAD_CONVERSATIONS: usize = 50;

impl Engine {
    /// Edits and recalls the client missed since its `lastPatchTime`, in one push.
    async fn push_patches(&self, app: &AppState, session: &Arc<Session>, since: Option<i64>) {
        let Some(since) = since else { return };
        let store = &self.inner.store;
        let patched =
            match store.patched_since(&app.config.id, &session.client_id, since, PATCH_CATCH_UP).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "missed patches");
                    return;
                }
            };
        let Some(latest) = patched.iter().filter_map(|m| m.patched_at).max() else { return };
        let items = patched
            .into_iter()
            .map(|m| confab_types::PatchedMessage {
                recall: m.data == RECALLED_BODY,
                patched_at: m.patched_at.unwrap_or(since),
                cid: m.cid,
                mid: m.id,
                timestamp: m.ts,
                data: m.data,
                from: m.from,
            })
            .collect();
        session.push(SharedPush::new(Push::Patch { items, patched_at: latest }));
    }

    /// Pushes the client's unread counts to a freshly opened version-3 session.
    async fn push_unread(&self, app: &AppState, session: &Arc<Session>) {
        let counts =
            match self.inner.store.unread(&app.config.id, &session.client_id, UNREAD_CONVERSATIONS).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "unread counts");
                    return;
                }
            };
        if counts.is_empty() {
            return;
        }
        let convs = counts
            .into_iter()
            .map(|u| UnreadEntry {
                cid: u.cid,
                unread: u.unread,
                last: u.last.map(|l| (l.id, l.ts, l.from, l.data)),
                mentioned: u.mentioned,
            })
            .collect();
        session.push(SharedPush::new(Push::Unread { convs, notif_time: self.now() }));
    }

    /// `read`: moves the reader's read positions, zeroes the count on its other devices
    /// and sends read receipts to the other members.
    async fn read(&self, app: &AppState, session: &Arc<Session>, convs: Vec<(String, Option<i64>)>) {
        let me = session.client_id.to_string();
        for (cid, ts) in convs {
            let Ok(Some(conv)) = self.conv(app, &cid).await else { continue };
            if conv.kind == ConvKind::Transient || !conv.has_member(&me) {
                continue;
            }
            let Ok(Some(record)) = self.inner.store.conversation(&app.config.id, &cid).await else {
                continue;
            };
            let now = self.now();
            let Some(last) = record.last_message else { continue };
            let upto = ts.filter(|t| *t > 0).unwrap_or(last.ts).min(last.ts);
            if let Err(e) = self.inner.store.save_read(&app.config.id, &me, &cid, upto).await {
                tracing::warn!(error = %e, "read position not saved");
                continue;
            }
            let zero = UnreadEntry {
                cid: cid.clone(),
                unread: 0,
                last: Some((last.id.clone(), last.ts, last.from.clone(), last.data.clone())),
                mentioned: false,
            };
            let unread = SharedPush::new(Push::Unread { convs: vec![zero], notif_time: now });
            for other in app.sessions_of(&me).into_iter().filter(|s| !Arc::ptr_eq(s, session)) {
                other.push(unread.clone());
            }
            let receipt = SharedPush::new(Push::Receipt {
                cid: cid.clone(),
                id: last.id.clone(),
                t: now,
                from: me.clone(),
                read: true,
            });
            for member in record.members.iter().filter(|m| **m != me) {
                self.push_to_client(app, member, &receipt);
            }
        }
    }
}

/// The body a recalled message keeps: the recall placeholder of the 4.x SDKs.
pub const RECALLED_BODY: &str = r#"{"_lctype":-127}"#;

impl Engine {
    /// Edits or recalls messages the caller sent, and tells the other sessions.
    async fn patch(
        &self,
        app: &AppState,
        session: &Arc<Session>,
        items: Vec<confab_types::PatchRequest>,
    ) -> Result<Reply, ProtocolError> {
        let me = session.client_id.to_string();
        let store = &self.inner.store;
        let now = self.now();
        let mut done = Vec::new();
        let mut recipients: Vec<String> = Vec::new();
        for item in items {
            let not_target =
                || perr(ErrorCode::InvalidMessagingTarget, "conversation missing or not a member");
            let conv = self.conv(app, &item.cid).await?.ok_or_else(not_target)?;
            if !conv.has_member(&me) {
                return Err(not_target());
            }
            let message = store
                .message(&app.config.id, &item.cid, &item.mid)
                .await
                .map_err(store_error)?
                .ok_or_else(|| perr(ErrorCode::MessageNotFound, &item.mid))?;
            if message.from != me {
                return Err(perr(
                    ErrorCode::MessageOwnershipRequired,
                    "only the sender can change a message",
                ));
            }
            let data = match (item.recall, item.data) {
                (true, _) => RECALLED_BODY.to_owned(),
                (false, Some(data)) if data.len() <= app.config.limits.message_bytes => data,
                (false, Some(_)) => return Err(perr(ErrorCode::FrameTooLong, "message body over the limit")),
                (false, None) => {
                    return Err(perr(ErrorCode::UnparseableRawMsg, "an edit needs the new body"));
                }
            };
            store
                .patch_message(&app.config.id, &item.cid, message.ts, data.clone(), now)
                .await
                .map_err(store_error)?;
            match conv.kind {
                ConvKind::Transient => recipients.extend(conv.room_clients()),
                _ => recipients.extend(conv.state().members.iter().cloned()),
            }
            done.push(confab_types::PatchedMessage {
                cid: item.cid,
                mid: item.mid,
                timestamp: message.ts,
                recall: item.recall,
                data,
                from: me.clone(),
                patched_at: now,
            });
        }
        recipients.sort_unstable();
        recipients.dedup();
        let push = SharedPush::new(Push::Patch { items: done, patched_at: now });
        for client in recipients {
            for s in app.sessions_of(&client).into_iter().filter(|s| !Arc::ptr_eq(s, session)) {
                s.push(push.clone());
            }
        }
        Ok(Reply::Patched { patched_at: now })
    }
}

impl Engine {
    /// Owners (creators) and managers may manage a conversation.
    fn may_manage(conv: &Conv, client: &str) -> bool {
        conv.creator == client || conv.state().managers.contains(client)
    }

    async fn managed_conv(&self, app: &AppState, cid: &str, me: &str) -> Result<Arc<Conv>, ProtocolError> {
        let conv = self.conv(app, cid).await?.ok_or_else(|| perr(ErrorCode::ConversationNotFound, cid))?;
        if conv.kind != ConvKind::Normal {
            return Err(perr(ErrorCode::NormalConversationRequired, "only normal conversations have roles"));
        }
        if !Self::may_manage(&conv, me) {
            return Err(perr(
                ErrorCode::ConversationOperationUnauthorized,
                "only the owner or a manager may do this",
            ));
        }
        Ok(conv)
    }

    /// `member_info_update`: the owner or a manager makes a member a `Manager` or a
    /// plain `Member`; nobody can be made owner.
    async fn member_role(
        &self,
        app: &AppState,
        session: &Arc<Session>,
        cid: &str,
        member: String,
        role: String,
    ) -> Result<Reply, ProtocolError> {
        let me = session.client_id.to_string();
        let conv = self.managed_conv(app, cid, &me).await?;
        if role != "Manager" && role != "Member" {
            return Err(perr(
                ErrorCode::ConversationOperationUnauthorized,
                format!("role {role:?} cannot be given"),
            ));
        }
        if !conv.has_member(&member) || member == conv.creator {
            return Err(perr(
                ErrorCode::ConversationMembershipRequired,
                "the target must be a member other than the owner",
            ));
        }
        self.inner.store.set_role(&app.config.id, cid, &member, &role).await.map_err(store_error)?;
        let members: Vec<String> = {
            let mut state = conv.state();
            if role == "Manager" {
                state.managers.insert(member.clone());
            } else {
                state.managers.remove(&member);
            }
            state.members.iter().cloned().collect()
        };
        let now = self.now();
        for recipient in members {
            let push = SharedPush::new(Push::Conv(ConvPush {
                event: ConvEvent::MemberInfoChanged,
                peer_id: recipient.clone(),
                cid: cid.to_owned(),
                init_by: me.clone(),
                members: Vec::new(),
                attr: None,
                role: Some((member.clone(), role.clone())),
                udate: now,
            }));
            self.push_to_client(app, &recipient, &push);
        }
        Ok(Reply::MemberRoleUpdated)
    }

    /// Shut members up or block clients (and the reverse). Blocking also removes the
    /// clients from the conversation, and blocked clients cannot join again.
    async fn restrict(
        &self,
        app: &AppState,
        session: &Arc<Session>,
        serial: Option<i32>,
        r: confab_types::Restriction,
    ) -> Result<Option<Reply>, ProtocolError> {
        let me = session.client_id.to_string();
        let conv = self.managed_conv(app, &r.cid, &me).await?;
        if r.blocked && app.config.signatures.conversation {
            let op = if r.on {
                Signed::Block { cid: &r.cid, members: &r.members }
            } else {
                Signed::Unblock { cid: &r.cid, members: &r.members }
            };
            self.check_signature(app, &me, op, r.signature.as_ref(), ErrorCode::ConversationSignatureFailed)?;
        }
        let lock = app.conv_lock(&r.cid);
        let _guard = lock.lock().await;
        let mut result = MembersResult::default();
        let mut refused = Vec::new();
        let mut changed = Vec::new();
        for id in r.members.iter() {
            if changed.contains(id) {
                continue;
            }
            // Nobody restricts the owner or themselves; shut-up applies to members only.
            if *id == conv.creator || *id == me || (!r.blocked && !conv.has_member(id)) {
                refused.push(id.clone());
            } else {
                changed.push(id.clone());
            }
        }
        if !refused.is_empty() {
            result.failed.push((
                perr(ErrorCode::ConversationOperationUnauthorized, "cannot restrict these clients"),
                refused,
            ));
        }
        let store = &self.inner.store;
        let app_id = &app.config.id;
        if !changed.is_empty() {
            if r.blocked {
                store.set_blocked(app_id, &r.cid, changed.clone(), r.on).await.map_err(store_error)?;
            } else {
                store.set_shut_up(app_id, &r.cid, changed.clone(), r.on).await.map_err(store_error)?;
            }
        }
        let (removed, remaining) = {
            let mut state = conv.state();
            let mut removed = Vec::new();
            for id in &changed {
                match (r.blocked, r.on) {
                    (true, true) => {
                        state.blocked.insert(id.clone());
                        if state.members.remove(id) {
                            removed.push(id.clone());
                        }
                    }
                    (true, false) => {
                        state.blocked.remove(id);
                    }
                    (false, true) => {
                        state.shut_up.insert(id.clone());
                    }
                    (false, false) => {
                        state.shut_up.remove(id);
                    }
                }
            }
            (removed, state.members.iter().cloned().collect::<Vec<_>>())
        };
        result.allowed = changed.clone();
        session.conn.reply(serial, Reply::Restricted { blocked: r.blocked, on: r.on, result });
        if changed.is_empty() {
            return Ok(None);
        }
        let now = self.now();
        let (to_all, to_each) = match (r.blocked, r.on) {
            (true, true) => (ConvEvent::MembersBlocked, ConvEvent::Blocked),
            (true, false) => (ConvEvent::MembersUnblocked, ConvEvent::Unblocked),
            (false, true) => (ConvEvent::MembersShutUp, ConvEvent::ShutUp),
            (false, false) => (ConvEvent::MembersUnshutup, ConvEvent::Unshutup),
        };
        fn notice<'a>(
            event: ConvEvent,
            cid: &'a str,
            me: &'a str,
            members: &'a [String],
            now: i64,
        ) -> Notice<'a> {
            Notice { event, cid, init_by: me, members, attr: None, udate: now }
        }
        for member in &remaining {
            self.notify(app, member, &notice(to_all, &r.cid, &me, &changed, now));
        }
        for id in &changed {
            self.notify(app, id, &notice(to_each, &r.cid, &me, &[], now));
        }
        for id in &removed {
            for s in app.sessions_of(id) {
                s.reset_conv(&r.cid);
            }
            self.notify(app, id, &notice(ConvEvent::Left, &r.cid, &me, &[], now));
        }
        if !removed.is_empty() {
            for member in &remaining {
                self.notify(app, member, &notice(ConvEvent::MembersLeft, &r.cid, &me, &removed, now));
            }
        }
        Ok(None)
    }
}

/// The app's own backend: creating system conversations and broadcasting to their
/// subscribers (the REST admin API of the gateway calls these).
impl Engine {
    /// Creates a system (service) conversation; returns its id and creation time.
    pub async fn admin_create_system_conversation(
        &self,
        app_id: &str,
        attrs: Map<String, Value>,
    ) -> Result<(String, i64), ProtocolError> {
        let app = self.app(app_id).ok_or_else(|| perr(ErrorCode::AppNotAvailable, "unknown app"))?;
        let checked = bounds::updated_attributes(&app.config.limits, &Map::new(), &attrs)?;
        let now = self.now();
        let record = ConversationRecord {
            app: app.config.id.clone(),
            id: ids::conversation_id(now),
            kind: ConvKind::System,
            creator: String::new(),
            members: Vec::new(),
            muted: Vec::new(),
            managers: Vec::new(),
            shut_up: Vec::new(),
            blocked: Vec::new(),
            expires_at: None,
            attrs: checked,
            unique_key: None,
            created_at: now,
            updated_at: now,
            last_message: None,
        };
        self.inner.store.create_conversation(record.clone()).await.map_err(store_error)?;
        Ok((record.id, now))
    }

    /// Sends `msg` from `from` to every subscriber of a system conversation, stored and
    /// acknowledged like any message; returns its id and timestamp.
    pub async fn admin_broadcast(
        &self,
        app_id: &str,
        cid: &str,
        from: &str,
        msg: String,
    ) -> Result<(String, i64), ProtocolError> {
        let app = self.app(app_id).cloned().ok_or_else(|| perr(ErrorCode::AppNotAvailable, "unknown app"))?;
        let conv = self.conv(&app, cid).await?.ok_or_else(|| perr(ErrorCode::ConversationNotFound, cid))?;
        if conv.kind != ConvKind::System {
            return Err(perr(ErrorCode::ConversationNotFound, "not a system conversation"));
        }
        // A session of the backend, on a connection nobody reads but this call.
        let (handle, mut replies) = ConnHandle::new(0, None, 4);
        let mut session = Session::new(handle, Arc::from(app_id), Arc::from(from), None);
        if let Some(s) = Arc::get_mut(&mut session) {
            s.admin = true;
        }
        let request = confab_types::DirectRequest { cid: cid.to_owned(), msg, ..Default::default() };
        if let Some(reply) = self.send(&app, &session, Some(1), request).await? {
            return match reply {
                Reply::MessageAck { uid, t } => Ok((uid, t)),
                _ => Err(perr(ErrorCode::InternalError, "unexpected reply")),
            };
        }
        match replies.recv().await {
            Next::Item(Outbound::Reply { reply, .. }) => match *reply {
                Reply::MessageAck { uid, t } => Ok((uid, t)),
                Reply::Error(e) => Err(e),
                _ => Err(perr(ErrorCode::InternalError, "unexpected reply")),
            },
            _ => Err(perr(ErrorCode::InternalError, "message not stored")),
        }
    }
}

//! The engine's side of one network connection and the router of its requests: each
//! request is rate-limited by its class and handed to the one feature module that
//! serves it.

use super::*;
use crate::metrics::METRICS;
use confab_types::{InboundAck, Limits};

/// The close code logged for a session that ended normally: a logout, or a connection
/// the client closed (WebSocket 1000).
pub(super) const NORMAL_CLOSE: u16 = 1000;

/// The engine's side of one network connection: at most one session (the v2 protocol
/// logs in one client id per connection).
#[derive(Debug)]
pub struct Connection {
    pub(super) engine: Engine,
    /// The connection's outbound handle.
    pub handle: Arc<ConnHandle>,
    /// The sessions on this connection: usually one; the 3.x+ SDKs put every client of
    /// one `Realtime` on one socket and address commands by `peerId`.
    pub(super) sessions: Vec<Arc<Session>>,
    /// Push the offline backlog on login (protocol version 1) rather than unread counts.
    pub(super) push_offline: bool,
    /// The v2 JSON protocol (2.x SDKs): no roles, and no way to read a partial failure.
    pub(super) v2: bool,
    /// The [`crate::metrics::WIRES`] entry its sessions are counted under.
    pub(super) wire: u8,
}

impl Drop for Connection {
    /// The connection ended without a logout: deliver the session's will, if any. A close
    /// the server requested names the code logged; otherwise the client left (1000).
    fn drop(&mut self) {
        self.engine.inner.live_connections.fetch_sub(1, Ordering::Relaxed);
        if self.sessions.is_empty() {
            return;
        }
        match self.handle.close_reason() {
            Some(e) => self.end_sessions(e.code.number(), &e.detail),
            None => self.end_sessions(NORMAL_CLOSE, "connection closed"),
        }
    }
}

impl Connection {
    /// Names the wire protocol the connection speaks, for the metrics
    /// (`confab_sessions` counts its sessions under it). [`Engine::open_connection`]
    /// assumes JSON for version 2 and binary protobuf otherwise.
    pub fn set_protocol(&mut self, protocol: crate::metrics::Protocol, version: u8) {
        self.wire = u8::try_from(crate::metrics::wire_index(protocol, version)).unwrap_or(0);
    }

    /// The connection ended because the client closed it or went away: its sessions end
    /// with `code` (the client's close code, or 1006 when the connection was lost) and
    /// `reason` in the log, as when it is dropped otherwise.
    pub fn end(mut self, code: u16, reason: &str) {
        if self.handle.close_reason().is_none() {
            self.end_sessions(code, reason);
        }
    }

    /// Ends every session of the connection and delivers their wills.
    fn end_sessions(&mut self, code: u16, reason: &str) {
        for session in std::mem::take(&mut self.sessions) {
            self.engine.end_session(&session, code, reason);
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

    pub(super) fn remove_session(&mut self, session: &Arc<Session>, code: u16, reason: &str) {
        self.sessions.retain(|s| !Arc::ptr_eq(s, session));
        self.engine.end_session(session, code, reason);
    }

    /// Handles one request and answers it: the reply, or the error (an error frame or a
    /// close, as the error table says), goes on this connection's queue. Returns whether
    /// the connection stays open. Every answer goes through here or, for a frame that
    /// could not be decoded, through [`ConnHandle::fail`], which decides the same way; a
    /// handler whose pushes must follow its reply queues the reply first on the same
    /// queue, and a send is acknowledged when its commit settles.
    pub async fn handle(&mut self, inbound: Inbound) -> bool {
        let serial = inbound.serial;
        let command = crate::metrics::command_index(&inbound.request);
        let outcome = self.route(inbound).await;
        METRICS.request(command, outcome.is_ok());
        self.answer(serial, outcome)
    }

    fn answer(&self, serial: Option<i32>, outcome: Result<Option<Reply>, ProtocolError>) -> bool {
        match outcome {
            Ok(Some(reply)) => {
                self.handle.reply(serial, reply);
                true
            }
            Ok(None) => true,
            Err(error) => self.handle.fail(serial, error),
        }
    }

    /// Handles, without waiting, a request whose handling never waits (a heartbeat, a
    /// recipient's `ack`: in a busy room, one per member per message): the same
    /// answer, metrics and errors as [`Connection::handle`], without a future per
    /// request. Any other request is handed back for [`Connection::handle`].
    #[allow(clippy::result_large_err, reason = "the request is handed straight back, never stored")]
    pub fn handle_now(&mut self, inbound: Inbound) -> Result<bool, Inbound> {
        if !matches!(inbound.request, Request::Heartbeat | Request::Ack(_)) {
            return Err(inbound);
        }
        let serial = inbound.serial;
        let command = crate::metrics::command_index(&inbound.request);
        let Inbound { peer_id, request, .. } = inbound;
        let outcome = match request {
            Request::Ack(ack) => {
                return Ok(self.ack_now(InboundAck {
                    serial,
                    peer_id: peer_id.as_deref(),
                    ack: ack.as_ref(),
                }));
            }
            _ => Ok(Some(Reply::Heartbeat)),
        };
        METRICS.request(command, outcome.is_ok());
        Ok(self.answer(serial, outcome))
    }

    /// Handles a recipient's `ack` read in place from its frame (the JSON codec's `scan_ack`):
    /// what [`Connection::handle`] does with it decoded, without a copy of its ids or a
    /// clone of the session. Returns whether the connection stays open.
    pub fn ack_now(&mut self, inbound: InboundAck<'_>) -> bool {
        // Acks are never rate-limited, so this is `admit` without the limits; the app
        // is looked up only by an ack that needs it (apps are fixed for the engine's life).
        self.sessions.retain(|s| !s.is_closed());
        let session = match inbound.peer_id {
            Some(peer) => self.sessions.iter().find(|s| &*s.client_id == peer),
            None => self.sessions.first(),
        };
        let outcome = match session {
            Some(session) => {
                self.engine.ack(session, inbound.ack);
                Ok(None)
            }
            None => Err(perr(ErrorCode::SessionRequired, "open a session first")),
        };
        METRICS.request(crate::metrics::ACK_COMMAND, outcome.is_ok());
        self.answer(inbound.serial, outcome)
    }

    /// The session a request addresses and its app, once `request` (if it counts
    /// against a rate limit) is within its limit.
    fn admit(
        &mut self,
        peer_id: Option<&str>,
        request: Option<&Request>,
    ) -> Result<(Arc<Session>, Arc<AppState>), ProtocolError> {
        let Some(session) = self.addressed(peer_id) else {
            return Err(perr(ErrorCode::SessionRequired, "open a session first"));
        };
        let app = self
            .engine
            .app(&session.app_id)
            .cloned()
            .ok_or_else(|| perr(ErrorCode::AppNotAvailable, "app removed"))?;
        if let Some((class, limit, code)) = request.and_then(|r| rate_class(r, &app.config.limits)) {
            let now = self.engine.now();
            let admitted = session.rate.lock().unwrap_or_else(|p| p.into_inner()).admit(class, limit, now);
            if !admitted {
                return Err(perr(code, format!("rate limit of {limit} per minute exceeded")));
            }
        }
        Ok((session, app))
    }

    /// Routes a request to the feature that serves it: its reply, `None` when it was
    /// queued already or there is none by protocol (acks, read marks), or its error.
    async fn route(&mut self, inbound: Inbound) -> Result<Option<Reply>, ProtocolError> {
        let Inbound { serial, peer_id, request } = inbound;
        match &request {
            Request::Heartbeat => return Ok(Some(Reply::Heartbeat)),
            Request::SessionOpen(open) => return self.open(serial, peer_id, open).await,
            _ => {}
        }
        let (session, app) = self.admit(peer_id.as_deref(), Some(&request))?;
        let engine = self.engine.clone();
        match request {
            Request::Heartbeat | Request::SessionOpen(_) => Ok(None),
            Request::SessionRefresh => Ok(Some(engine.session_refresh(&app, &session))),
            Request::SessionClose => Ok(Some(self.session_close(&session))),
            Request::SessionQuery { peer_ids } => Ok(Some(engine.session_query(&app, peer_ids).await)),
            Request::ConvStart(start) => engine.conv_start(&app, &session, serial, start).await,
            Request::ConvAdd(change) => engine.conv_add(&app, &session, serial, change).await,
            Request::ConvRemove(change) => engine.conv_remove(&app, &session, serial, change, self.v2).await,
            Request::ConvQuery(query) => engine.conv_query(&app, &session, query).await.map(Some),
            Request::ConvCount { cid } => engine.conv_count(&app, &cid).await.map(Some),
            Request::ConvUpdate { cid, attr } => engine.conv_update(&app, &session, serial, &cid, attr).await,
            Request::ConvMute { cid, muted } => engine.conv_mute(&app, &session, &cid, muted).await.map(Some),
            Request::Direct(direct) => engine.send(&app, &session, serial, direct).await,
            Request::Ack(ack) => {
                engine.ack(&session, ack.as_ref());
                Ok(None)
            }
            Request::Logs(query) => engine.logs(&app, &session, query).await.map(Some),
            Request::Read { convs } => {
                engine.read(&app, &session, convs).await;
                Ok(None)
            }
            Request::ConvMaxRead { cid, all_members } => {
                engine.max_read(&app, &session, &cid, all_members).await.map(Some)
            }
            Request::Patch { items } => engine.patch(&app, &session, items).await.map(Some),
            Request::MemberRole { cid, member, role } => {
                engine.member_role(&app, &session, &cid, member, role).await.map(Some)
            }
            Request::Restrict(r) => engine.restrict(&app, &session, serial, r).await,
            Request::RestrictedQuery { cid, kind, limit, next } => {
                engine.restricted_page(&app, &session, &cid, kind, limit, next).await.map(Some)
            }
        }
    }
}

/// The rate limit a request counts against: its class, the per-minute limit and the
/// code of a refusal. Acks, reads and the session's own housekeeping are never limited.
fn rate_class(request: &Request, limits: &Limits) -> Option<(RateClass, u32, ErrorCode)> {
    match request {
        Request::Direct(_) => {
            Some((RateClass::Send, limits.sends_per_minute, ErrorCode::MessageSentQuotaExceeded))
        }
        Request::Logs(_) => {
            Some((RateClass::History, limits.history_per_minute, ErrorCode::ConversationApiQuotaExceeded))
        }
        Request::Heartbeat
        | Request::SessionOpen(_)
        | Request::Ack(_)
        | Request::Read { .. }
        | Request::SessionClose
        | Request::SessionRefresh
        | Request::SessionQuery { .. } => None,
        _ => Some((RateClass::Op, limits.ops_per_minute, ErrorCode::ConversationApiQuotaExceeded)),
    }
}

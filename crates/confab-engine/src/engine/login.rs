//! Sessions: open (signatures, tokens, device-tag conflicts, the login catch-up), refresh,
//! close, and presence queries.

use super::dispatch::NORMAL_CLOSE;
use super::*;
use crate::ports::TagClaim;

impl Connection {
    pub(super) async fn open(
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
                    engine
                        .check_signature(&app, &client_id, Signed::Login, sig, ErrorCode::SignatureFailed)
                        .await?;
                }
                open.tag.clone().filter(|t| !t.is_empty() && t != "default")
            }
        };
        // Single-device login: a login with a tag ends the client's other sessions with
        // the same tag; a re-login finding its tag taken is refused instead. The check and
        // the registration are one step of the presence registry, so two logins with one
        // tag cannot both win.
        let mut session = Session::new(
            self.handle.clone(),
            Arc::from(app.config.id.as_str()),
            Arc::from(client_id.as_str()),
            tag.clone(),
        );
        if let Some(s) = Arc::get_mut(&mut session) {
            s.wire = self.wire;
            s.since_secs = u32::try_from(engine.now().div_euclid(1000)).unwrap_or(u32::MAX);
        }
        let claim = if open.reconnect { TagClaim::Keep } else { TagClaim::Take };
        let displaced = app
            .presence
            .register(&session, claim)
            .map_err(|_| perr(ErrorCode::SessionConflict, "this device tag is logged in elsewhere"))?;
        // Then across nodes (a re-login refused there leaves no trace here).
        if let Err(e) = engine.claim_cluster(&app, &session, claim).await {
            app.presence.unregister(&session);
            return Err(e);
        }
        for holder in displaced {
            let error = perr(ErrorCode::SessionConflict, "logged in on another device with the same tag");
            engine.end_session_telling(&holder, error);
        }
        // Opening a client id again on the same connection replaces its session.
        if let Some(old) = self.sessions.iter().find(|s| *s.client_id == *client_id).cloned() {
            self.remove_session(&old, NORMAL_CLOSE, "replaced by a new login on the same connection");
        }
        self.sessions.push(session.clone());
        app.logins_today.login(&client_id, engine.now());
        let cursors = match engine.inner.store.member_cursors(&app.config.id, &client_id).await {
            Ok(c) => c,
            Err(e) => {
                self.remove_session(&session, ErrorCode::InternalError.number(), "store error at login");
                return Err(store_error(e));
            }
        };
        tracing::debug!(app = %app.config.id, client = %client_id, conn = self.handle.id, "session opened");
        engine.client_online(&app, &session, open.reconnect);
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
            // Live messages the session skips meanwhile are in the replay's pages.
            session.catching_up.store(true, Ordering::Release);
            tokio::spawn(async move {
                engine.push_patches(&app, &session, last_patch_time).await;
                let replayed = delivery::replay_backlog(engine, app, session.clone(), false).await;
                crate::metrics::METRICS.backlog(crate::metrics::Backlog::Replayed, replayed);
                session.catching_up.store(false, Ordering::Release);
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

impl Connection {
    /// A logout: the session ends without its will (it is not an abnormal end).
    pub(super) fn session_close(&mut self, session: &Arc<Session>) -> Reply {
        session.will.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.remove_session(session, NORMAL_CLOSE, "logout");
        Reply::SessionClosed
    }
}

impl Engine {
    /// A fresh session token for the addressed session.
    pub(super) fn session_refresh(&self, app: &AppState, session: &Session) -> Reply {
        let c = &app.config;
        let token = session_token::issue(
            &c.master_key,
            &c.id,
            &session.client_id,
            session.tag.as_deref(),
            self.now(),
        );
        Reply::SessionRefreshed { token }
    }

    /// Which of `peer_ids` (the first `ping_ids` of them) are online, on any node.
    pub(super) async fn session_query(&self, app: &AppState, mut peer_ids: Vec<String>) -> Reply {
        peer_ids.truncate(app.config.limits.ping_ids);
        Reply::SessionQueryResult { online: self.online(app, peer_ids).await }
    }

    /// Ends a session the server takes away (a displaced login, a kick): it gets a
    /// `session closed` push with `error` first, so the SDK knows why (its socket stays
    /// open).
    pub(crate) fn end_session_telling(&self, session: &Arc<Session>, error: ProtocolError) {
        let (code, reason) = (error.code.number(), error.detail.clone());
        session.push(SharedPush::new(Push::SessionClosed { error }));
        self.end_session(session, code, &reason);
    }

    /// Ends a session: it stops receiving, leaves its chat rooms, and its client goes
    /// offline when it was the last session. The first end of a session is logged with
    /// its close `code` and `reason` (an error code of the table; 1000 for a logout; the
    /// client's own close code when it closed its connection, 1006 when the connection
    /// was lost); ending it again (its connection ends after a kick) is quiet.
    pub(crate) fn end_session(&self, session: &Arc<Session>, code: u16, reason: &str) {
        let first_end = !session.closed.swap(true, Ordering::AcqRel);
        if first_end {
            tracing::info!(app = %session.app_id, client = %session.client_id, code, reason, "session closed");
        }
        let Some(app) = self.app(&session.app_id) else {
            return;
        };
        if first_end {
            self.client_offline(app, session, code, reason);
        }
        app.presence.unregister(session);
        self.release_cluster(session);
        if self.inner.cluster.is_some() {
            // Its client may come back through another node, which reads only what
            // this node has committed.
            self.inner.store.commit_cursors_soon();
        }
        let rooms = std::mem::take(&mut *session.rooms.lock().unwrap_or_else(|p| p.into_inner()));
        for cid in rooms {
            if let Some(conv) = app.convs.get(&cid) {
                conv.state().room.retain(|s| !Arc::ptr_eq(s, session));
            }
            self.room_left(app, &cid, session);
        }
    }
}

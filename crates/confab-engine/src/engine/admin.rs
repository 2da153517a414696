//! The app's own backend: creating system conversations and broadcasting to their
//! subscribers (the REST admin API of the gateway calls these).

use super::*;

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
        let (handle, mut replies) = ConnHandle::new(0, None, app.config.limits.outbound_queue_bytes);
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

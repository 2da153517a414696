//! Conversation attributes and muting.

use super::*;

impl Engine {
    pub(super) async fn conv_update(
        &self,
        app: &Arc<AppState>,
        session: &Arc<Session>,
        serial: Option<i32>,
        cid: &str,
        attr: Map<String, Value>,
    ) -> Result<Option<Reply>, ProtocolError> {
        let me = session.client_id.to_string();
        let conv = self.conv(app, cid).await?.ok_or_else(|| perr(ErrorCode::ConversationNotFound, cid))?;
        if !session.admin && !conv.has_member(&me) {
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
            ConvKind::Transient => self.room_clients(app, &conv).await,
            _ => conv.state().members.iter().cloned().collect(),
        };
        let updated = conv_event(ConvEvent::Updated, cid, &me, &[], Some(&attr), now);
        self.push_to_clients(app, &recipients, &updated);
        Ok(None)
    }

    /// Mutes or unmutes a conversation for the caller (shown in `mu`).
    pub(super) async fn conv_mute(
        &self,
        app: &AppState,
        session: &Session,
        cid: &str,
        muted: bool,
    ) -> Result<Reply, ProtocolError> {
        let conv = self.conv(app, cid).await?.ok_or_else(|| perr(ErrorCode::ConversationNotFound, cid))?;
        if !conv.has_member(&session.client_id) {
            return Err(perr(ErrorCode::ConversationMembershipRequired, "only members can mute"));
        }
        let store = &self.inner.store;
        store.set_muted(&app.config.id, cid, &session.client_id, muted).await.map_err(store_error)?;
        Ok(Reply::ConvUpdated { updated_at: self.now() })
    }
}

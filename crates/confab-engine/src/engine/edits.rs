//! Edits and recalls of sent messages.

use super::*;

/// Edits and recalls caught up at login, at most (older ones are in history).
const PATCH_CATCH_UP: usize = 500;

/// The body a recalled message keeps: the recall placeholder of the 4.x SDKs.
pub const RECALLED_BODY: &str = r#"{"_lctype":-127}"#;

impl Engine {
    /// Edits and recalls the client missed since its `lastPatchTime`, in one push.
    pub(super) async fn push_patches(&self, app: &AppState, session: &Arc<Session>, since: Option<i64>) {
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
                binary: m.binary,
                from: m.from,
            })
            .collect();
        session.push(SharedPush::new(Push::Patch { items, patched_at: latest }));
    }

    /// Edits or recalls messages the caller sent, and tells the other sessions.
    pub(super) async fn patch(
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
        // Edits of targeted messages, each with who may see it (none in most requests).
        let mut targeted: Vec<(confab_types::PatchedMessage, Vec<String>)> = Vec::new();
        for item in items {
            let not_target =
                || perr(ErrorCode::InvalidMessagingTarget, "conversation missing or not a member");
            let conv = self.conv(app, &item.cid).await?.ok_or_else(not_target)?;
            // The app's backend edits in any conversation (LeanCloud's REST API).
            if !session.admin && !conv.has_member(&me) {
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
            // The app's `_messageUpdate` may refuse the change, rewrite the new body (and
            // its binary flag), or choose who is pushed it.
            let update = if session.admin {
                super::hooks::Update { data, binary: None, to: None }
            } else {
                self.message_update(app, &conv, session, &message, data, item.recall).await?
            };
            let (data, hook_to) = (update.data, update.to);
            // An app-wide broadcast is listed from its own copy (`GET
            // /1.2/rtm/broadcasts`): it changes too.
            let mut targets = vec![(item.cid.clone(), message.ts)];
            if conv.kind == ConvKind::System {
                let log = super::backend::broadcast_log(&item.cid);
                if let Some(copy) =
                    store.message(&app.config.id, &log, &item.mid).await.map_err(store_error)?
                {
                    targets.push((log, copy.ts));
                }
            }
            for (cid, ts) in targets {
                store
                    .patch_message(&app.config.id, &cid, ts, data.clone(), update.binary, now)
                    .await
                    .map_err(store_error)?;
            }
            let patched = confab_types::PatchedMessage {
                cid: item.cid,
                mid: item.mid,
                timestamp: message.ts,
                recall: item.recall,
                data,
                binary: update.binary.unwrap_or(message.binary),
                from: me.clone(),
                patched_at: now,
            };
            // Who may see the change: a targeted message's recipients, narrowed to the
            // hook's choice when it made one (the change is stored for everyone, as
            // `_messageReceived`'s `toPeers`).
            let to = match (message.recipients, hook_to) {
                (Some(to), Some(chosen)) => Some(to.into_iter().filter(|c| chosen.contains(c)).collect()),
                (Some(to), None) => Some(to),
                (None, Some(chosen)) => Some(chosen.into_iter().collect::<Vec<String>>()),
                (None, None) => None,
            };
            if let Some(to) = to {
                // A targeted message's change reaches its recipients (and the sender's
                // other sessions, when it is a member) only.
                let mut audience = to;
                if conv.has_member(&me) {
                    audience.push(me.clone());
                }
                audience.sort_unstable();
                audience.dedup();
                targeted.push((patched, audience));
                continue;
            }
            match conv.kind {
                ConvKind::Transient => recipients.extend(self.room_clients(app, &conv).await),
                _ => recipients.extend(conv.state().members.iter().cloned()),
            }
            done.push(patched);
        }
        recipients.sort_unstable();
        recipients.dedup();
        if targeted.is_empty() {
            let push = SharedPush::new(Push::Patch { items: done, patched_at: now });
            for client in recipients {
                app.broker.to_client(&client, ClientEvent::Push(&push), Some(session));
            }
            return Ok(Reply::Patched { patched_at: now });
        }
        // Each client gets the changes it may see, in one push.
        let mut per_client: std::collections::BTreeMap<String, Vec<confab_types::PatchedMessage>> =
            recipients.into_iter().map(|c| (c, done.clone())).collect();
        for (patched, audience) in targeted {
            for client in audience {
                per_client.entry(client).or_default().push(patched.clone());
            }
        }
        for (client, items) in per_client.into_iter().filter(|(_, items)| !items.is_empty()) {
            let push = SharedPush::new(Push::Patch { items, patched_at: now });
            app.broker.to_client(&client, ClientEvent::Push(&push), Some(session));
        }
        Ok(Reply::Patched { patched_at: now })
    }
}

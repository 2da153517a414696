//! Message history.

use super::*;

impl Engine {
    pub(super) async fn logs(
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
        // A service conversation's targeted messages show only to their recipients.
        let visible_to =
            (conv.kind == ConvKind::System && !session.admin).then(|| session.client_id.to_string());
        let range = match q.direction {
            Direction::Older => MessageRange {
                before: start,
                after: end,
                newest_first: true,
                limit,
                lctype: q.lctype,
                visible_to,
            },
            Direction::Newer => MessageRange {
                after: start,
                before: end,
                newest_first: false,
                limit,
                lctype: q.lctype,
                visible_to,
            },
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

//! Read positions, unread counts and read receipts.

use super::*;
use crate::ports::LastMessage;
use confab_types::{MemberReceipt, ReadMark};

/// Conversations reported in one `unread` push (LeanCloud tracked at most 50).
const UNREAD_CONVERSATIONS: usize = 50;

impl Engine {
    /// Pushes the client's unread counts to a freshly opened version-3 session.
    pub(super) async fn push_unread(&self, app: &AppState, session: &Arc<Session>) {
        let counts =
            match self.inner.store.unread(&app.config.id, &session.client_id, UNREAD_CONVERSATIONS).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "unread counts");
                    return;
                }
            };
        let unread: i64 = counts.iter().map(|u| u.unread.max(0)).sum();
        crate::metrics::METRICS.backlog(crate::metrics::Backlog::Unread, unread.unsigned_abs());
        if counts.is_empty() {
            return;
        }
        let convs = counts
            .into_iter()
            .map(|u| UnreadEntry { cid: u.cid, unread: u.unread, last: u.last, mentioned: u.mentioned })
            .collect();
        session.push(SharedPush::new(Push::Unread { convs, notif_time: self.now() }));
    }

    /// `read`: moves the reader's read positions, zeroes the count on its other devices
    /// and sends read receipts to the other members (none in a service conversation).
    pub(super) async fn read(&self, app: &AppState, session: &Arc<Session>, convs: Vec<ReadMark>) {
        let me = session.client_id.to_string();
        for ReadMark { cid, ts } in convs {
            let Ok(Some(conv)) = self.conv(app, &cid).await else { continue };
            if conv.kind == ConvKind::Transient || !conv.has_member(&me) {
                continue;
            }
            let now = self.now();
            // A service conversation: the newest message the reader may see (a message
            // targeted at it may come after the last broadcast), read without loading
            // the conversation's subscribers, and nobody else to tell.
            let (last, shared, members) = if conv.kind == ConvKind::System {
                let Some(last) = self.newest_for(app, &cid, &me).await else { continue };
                (last, None, Vec::new())
            } else {
                let Ok(Some(record)) = self.inner.store.conversation(&app.config.id, &cid).await else {
                    continue;
                };
                let Some(last) = record.last_message.clone() else { continue };
                (last, record.last_message, record.members)
            };
            let upto = ts.filter(|t| *t > 0).unwrap_or(last.ts).min(last.ts);
            if let Err(e) = self.inner.store.save_read(&app.config.id, &me, &cid, upto).await {
                tracing::warn!(error = %e, "read position not saved");
                continue;
            }
            let zero = UnreadEntry { cid: cid.clone(), unread: 0, last: Some(last), mentioned: false };
            let unread = SharedPush::new(Push::Unread { convs: vec![zero], notif_time: now });
            app.broker.to_client(&me, ClientEvent::Push(&unread), Some(session));
            // The others hear of the last message they all have. Not in a service
            // conversation: its subscribers do not see each other (and one read would
            // otherwise push to every one of them).
            let Some(shared) = shared else { continue };
            let receipt = SharedPush::new(Push::Receipt {
                cid: cid.clone(),
                id: shared.id,
                t: now,
                from: me.clone(),
                read: true,
            });
            for member in members.iter().filter(|m| **m != me) {
                self.push_to_client(app, member, &receipt);
            }
        }
    }

    /// The newest message of conversation `cid` that `client` may see, as stored now.
    async fn newest_for(&self, app: &AppState, cid: &str, client: &str) -> Option<LastMessage> {
        let range = MessageRange {
            newest_first: true,
            limit: 1,
            visible_to: Some(client.to_owned()),
            ..MessageRange::default()
        };
        let page = self.inner.store.messages(&app.config.id, cid, range).await.ok()?;
        page.into_iter().next().map(|m| LastMessage { id: m.id, ts: m.ts, from: m.from, data: m.data })
    }

    /// The latest delivery and read positions among the other members (and, when
    /// asked, every member's).
    pub(super) async fn max_read(
        &self,
        app: &AppState,
        session: &Session,
        cid: &str,
        all_members: bool,
    ) -> Result<Reply, ProtocolError> {
        let conv = self.conv(app, cid).await?.ok_or_else(|| perr(ErrorCode::ConversationNotFound, cid))?;
        if !conv.has_member(&session.client_id) {
            return Err(perr(ErrorCode::ConversationMembershipRequired, "only members see receipts"));
        }
        let positions = self.inner.store.member_positions(&app.config.id, cid).await.map_err(store_error)?;
        let others = positions.iter().filter(|p| *p.client != *session.client_id);
        let (max_ack, max_read) =
            others.fold((0, 0), |(a, r), p| (a.max(p.acked_upto).max(p.read_upto), r.max(p.read_upto)));
        // Reading implies having received.
        let members = if all_members {
            positions
                .into_iter()
                .map(|p| MemberReceipt {
                    max_ack: p.acked_upto.max(p.read_upto),
                    max_read: p.read_upto,
                    client: p.client,
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(Reply::ConvMaxRead { max_ack, max_read, members })
    }
}

//! More of the app backend's operations (the REST API beyond `admin`): mutes, edits,
//! recalls and deletions of messages, subscriptions, roles, shut-up and blocking,
//! statistics. Like `admin`, each goes through the path a client's request takes, with
//! a backend session that may act on any conversation.

use super::admin::{BACKEND, unexpected};
use super::moderation::{List, check_list};
use super::*;
use crate::ports::{MarkKind, StoredMessage};
use confab_types::{PatchRequest, RestrictionKind, RestrictionOp};
use std::collections::HashSet;

/// The key of the lock under which clients' own blacklists grow (no conversation id
/// contains a control character).
const CLIENT_BLACKLISTS: &str = "\u{1f}client-blacklists";

/// At most this many seconds of temporary silence (LeanCloud: 24 hours).
pub const SILENCE_MAX_SECS: i64 = 24 * 3600;

/// At most this many recipients of one targeted message (LeanCloud's `to_clients`
/// limit): they are stored with the message and checked whenever a client reads the
/// conversation's log.
pub const TARGETED_RECIPIENTS_MAX: usize = 20;

/// A member's role as `_ConversationMemberInfo` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRole {
    /// The synthetic `objectId` of the member-info record ([`member_info_id`]).
    pub info_id: String,
    /// The member.
    pub client: String,
    /// `Owner` (the creator) or `Manager`.
    pub role: String,
}

/// The `objectId` of a `_ConversationMemberInfo` record: Confab keeps roles with the
/// members, not as objects, so the id is derived from the pair (the first 24 hex digits
/// of `sha1("<cid>:<client>")`), stable across restarts and nodes.
pub fn member_info_id(cid: &str, client: &str) -> String {
    use sha1::{Digest, Sha1};
    let mut h = Sha1::new();
    h.update(cid.as_bytes());
    h.update(b":");
    h.update(client.as_bytes());
    let mut id = hex::encode(h.finalize());
    id.truncate(24);
    id
}

/// A message edit or recall by the backend.
#[derive(Debug, Clone)]
pub struct AdminPatch {
    /// The original sender (`from_client`): only the sender's messages change, as for
    /// clients.
    pub from: String,
    /// The message id.
    pub mid: String,
    /// The original message's timestamp, when given: it must match.
    pub timestamp: Option<i64>,
    /// The new body; `None` recalls the message.
    pub data: Option<String>,
}

impl Engine {
    /// Mutes (or unmutes) a conversation for each of `clients` that is a member, as
    /// each of them muting it would; returns the conversation's update time.
    pub async fn admin_mute(
        &self,
        app_id: &str,
        cid: &str,
        clients: &[String],
        muted: bool,
    ) -> Result<i64, ProtocolError> {
        let app = self.backend_app(app_id)?;
        self.backend_conv(&app, cid, &[ConvKind::Normal, ConvKind::Temporary]).await?;
        Self::valid_member_ids(&app, clients)?;
        let store = &self.inner.store;
        for client in distinct(clients.iter().cloned()) {
            store.set_muted(&app.config.id, cid, &client, muted).await.map_err(store_error)?;
        }
        let record = store.conversation(&app.config.id, cid).await.map_err(store_error)?;
        Ok(record.map_or_else(|| self.now(), |r| r.updated_at))
    }

    /// Who muted a conversation (`mu`), in join order.
    pub async fn admin_muted(&self, app_id: &str, cid: &str) -> Result<Vec<String>, ProtocolError> {
        let app = self.backend_app(app_id)?;
        self.backend_conv(&app, cid, &[ConvKind::Normal, ConvKind::Temporary]).await?;
        let record = self.inner.store.conversation(&app.config.id, cid).await.map_err(store_error)?;
        Ok(record.map(|r| r.muted).unwrap_or_default())
    }

    /// The stored message `mid` of a conversation of one of `kinds`, checked against
    /// the timestamp the backend names (LeanCloud keys a message by both).
    async fn backend_message(
        &self,
        app: &AppState,
        kinds: &[ConvKind],
        cid: &str,
        mid: &str,
        timestamp: Option<i64>,
    ) -> Result<StoredMessage, ProtocolError> {
        self.backend_conv(app, cid, kinds).await?;
        let message = self.inner.store.message(&app.config.id, cid, mid).await.map_err(store_error)?;
        message
            .filter(|m| timestamp.is_none_or(|t| t == m.ts))
            .ok_or_else(|| perr(ErrorCode::MessageNotFound, mid))
    }

    /// Edits or recalls a message as its sender's `patch modify` does: the same store
    /// write and the same `patch` push to every member's sessions (the sender's too);
    /// returns the patch time.
    pub async fn admin_patch(
        &self,
        app_id: &str,
        kinds: &[ConvKind],
        cid: &str,
        p: AdminPatch,
    ) -> Result<i64, ProtocolError> {
        let app = self.backend_app(app_id)?;
        Self::valid_member_ids(&app, std::slice::from_ref(&p.from))?;
        self.backend_message(&app, kinds, cid, &p.mid, p.timestamp).await?;
        let (session, _replies) = Self::backend_session(&app, &p.from);
        let item = PatchRequest { cid: cid.to_owned(), mid: p.mid, recall: p.data.is_none(), data: p.data };
        match self.patch(&app, &session, vec![item]).await? {
            Reply::Patched { patched_at } => Ok(patched_at),
            _ => Err(unexpected()),
        }
    }

    /// Subscribes `client` to a system conversation (or unsubscribes it), as its own
    /// `conv add` / `conv remove` would.
    pub async fn admin_subscribe(
        &self,
        app_id: &str,
        cid: &str,
        client: &str,
        subscribe: bool,
    ) -> Result<(), ProtocolError> {
        let app = self.backend_app(app_id)?;
        Self::valid_member_ids(&app, &[client.to_owned()])?;
        let conv = self.backend_conv(&app, cid, &[ConvKind::System]).await?;
        if subscribe && !conv.has_member(client) && conv.state().blocked_by.contains(client) {
            return Err(perr(ErrorCode::ConversationBlacklisted, "the client blocked this conversation"));
        }
        let (session, _replies) = Self::backend_session(&app, client);
        let result = self.subscription(&app, &conv, &session, vec![client.to_owned()], subscribe).await?;
        match result.failed.into_iter().next() {
            Some(failure) => Err(failure.error),
            None => Ok(()),
        }
    }

    /// The members of a conversation of one of `kinds` (a system conversation's
    /// subscribers), in join order.
    pub async fn admin_member_list(
        &self,
        app_id: &str,
        kinds: &[ConvKind],
        cid: &str,
    ) -> Result<Vec<String>, ProtocolError> {
        let app = self.backend_app(app_id)?;
        self.backend_conv(&app, cid, kinds).await?;
        let record = self.inner.store.conversation(&app.config.id, cid).await.map_err(store_error)?;
        Ok(record.map(|r| r.members).unwrap_or_default())
    }

    /// The distinct clients in a chat room now (its online members).
    pub async fn admin_room_clients(&self, app_id: &str, cid: &str) -> Result<Vec<String>, ProtocolError> {
        let app = self.backend_app(app_id)?;
        let conv = self.backend_conv(&app, cid, &[ConvKind::Transient]).await?;
        Ok(self.room_clients(&app, &conv).await)
    }

    /// The system conversations `client` subscribes to (at most `max`, oldest created
    /// first).
    pub async fn admin_subscriptions(
        &self,
        app_id: &str,
        client: &str,
        max: usize,
    ) -> Result<Vec<ConversationRecord>, ProtocolError> {
        let app = self.backend_app(app_id)?;
        let filter = ScanFilter {
            member: Some(client.to_owned()),
            kind: Some(ConvKind::System),
            max,
            ..ScanFilter::default()
        };
        let mut found =
            self.inner.store.scan_conversations(&app.config.id, filter).await.map_err(store_error)?;
        found.truncate(max);
        Ok(found)
    }

    /// Distinct clients online now and distinct clients that logged in since midnight
    /// (UTC). On a node of a cluster both count every node, from the cluster's registry
    /// (never less than this node's own numbers); while the registry cannot be reached,
    /// this node's numbers (logged).
    pub async fn admin_stats(&self, app_id: &str) -> Result<(u64, u64), ProtocolError> {
        let app = self.backend_app(app_id)?;
        let mut online = HashSet::new();
        app.presence.for_each_session(&mut |s| {
            online.insert(s.client_id.clone());
        });
        let now = self.now();
        let (online, today) = (online.len() as u64, app.logins_today.count(now));
        if let Some(cluster) = &self.inner.cluster {
            match cluster.app_counts(&app.config.id, now.div_euclid(DAY_MS)).await {
                Some(all) => return Ok((all.online.max(online), all.today.max(today))),
                None => tracing::warn!(
                    app = %app.config.id,
                    "stats of this node only: the cluster registry is unavailable"
                ),
            }
        }
        Ok((online, today))
    }

    /// Owner and managers of a normal conversation (of one of `kinds`) or of a chat
    /// room (its creator and the clients made managers, sorted).
    pub async fn admin_roles(
        &self,
        app_id: &str,
        kinds: &[ConvKind],
        cid: &str,
    ) -> Result<Vec<MemberRole>, ProtocolError> {
        let app = self.backend_app(app_id)?;
        let conv = self.backend_conv(&app, cid, kinds).await?;
        let role = |client: &str, role: &str| MemberRole {
            info_id: member_info_id(cid, client),
            client: client.to_owned(),
            role: role.to_owned(),
        };
        if conv.kind == ConvKind::Transient {
            let mut managers: Vec<String> = conv.state().managers.iter().cloned().collect();
            managers.sort_unstable();
            let owner = (!conv.creator.is_empty()).then(|| role(&conv.creator, "Owner"));
            return Ok(owner.into_iter().chain(managers.iter().map(|m| role(m, "Manager"))).collect());
        }
        let record = self
            .inner
            .store
            .conversation(&app.config.id, cid)
            .await
            .map_err(store_error)?
            .ok_or_else(|| perr(ErrorCode::ConversationNotFound, cid))?;
        let mut roles = Vec::new();
        if !record.creator.is_empty() && record.members.contains(&record.creator) {
            roles.push(role(&record.creator, "Owner"));
        }
        roles.extend(record.managers.iter().map(|m| role(m, "Manager")));
        Ok(roles)
    }

    /// Gives a member the `Manager` or `Member` role as the owner's
    /// `member_info_update` does (same checks and `member_info_changed` push).
    pub async fn admin_set_role(
        &self,
        app_id: &str,
        kinds: &[ConvKind],
        cid: &str,
        client: &str,
        role: &str,
    ) -> Result<i64, ProtocolError> {
        let app = self.backend_app(app_id)?;
        Self::valid_member_ids(&app, &[client.to_owned()])?;
        self.backend_conv(&app, cid, kinds).await?;
        let (session, _replies) = Self::backend_session(&app, BACKEND);
        self.member_role(&app, &session, cid, client.to_owned(), role.to_owned()).await?;
        Ok(self.now())
    }

    /// Shuts members up, blocks clients, or lifts either, as an owner's request does
    /// (same pushes; blocking removes members); returns who was and was not changed.
    pub async fn admin_restrict(
        &self,
        app_id: &str,
        kinds: &[ConvKind],
        cid: &str,
        op: RestrictionOp,
        clients: Vec<String>,
    ) -> Result<MembersResult, ProtocolError> {
        let app = self.backend_app(app_id)?;
        Self::valid_member_ids(&app, &clients)?;
        let conv = self.backend_conv(&app, cid, kinds).await?;
        if conv.kind == ConvKind::System {
            return self.restrict_subscribers(&app, &conv, op, clients).await;
        }
        let (session, mut replies) = Self::backend_session(&app, BACKEND);
        let r = confab_types::Restriction { cid: cid.to_owned(), members: clients, op, signature: None };
        let first = self.restrict(&app, &session, Some(1), r).await?;
        match super::admin::backend_reply(first, &mut replies).await? {
            Reply::Restricted { result, .. } => Ok(result),
            _ => Err(unexpected()),
        }
    }

    /// Blocking on a system conversation: blocked clients are unsubscribed and cannot
    /// subscribe again (no pushes: subscriptions have none).
    async fn restrict_subscribers(
        &self,
        app: &AppState,
        conv: &Conv,
        op: RestrictionOp,
        clients: Vec<String>,
    ) -> Result<MembersResult, ProtocolError> {
        let on = match op {
            RestrictionOp::Block => true,
            RestrictionOp::Unblock => false,
            RestrictionOp::ShutUp | RestrictionOp::Unshut => {
                return Err(perr(ErrorCode::NormalConversationRequired, "subscribers cannot be shut up"));
            }
        };
        let clients = distinct(clients);
        let lock = app.conv_lock(&conv.cid);
        let _guard = lock.lock().await;
        if on {
            let state = conv.state();
            let adding = clients.iter().filter(|c| !state.blocked.contains(*c)).count();
            check_list(state.blocked.len(), adding, List::Blocked.limit(&app.config.limits, conv.kind))?;
        }
        let store = &self.inner.store;
        store.set_blocked(&app.config.id, &conv.cid, clients.clone(), on).await.map_err(store_error)?;
        let mut state = conv.state();
        for client in &clients {
            if on {
                state.blocked.insert(client.clone());
                if state.members.remove(client) {
                    app.membership_changed(client, &conv.cid);
                }
            } else {
                state.blocked.remove(client);
            }
        }
        Ok(MembersResult { allowed: clients, failed: Vec::new() })
    }

    /// The shut-up members (or blocked clients) of a conversation, sorted.
    pub async fn admin_restricted(
        &self,
        app_id: &str,
        kinds: &[ConvKind],
        cid: &str,
        kind: RestrictionKind,
    ) -> Result<Vec<String>, ProtocolError> {
        let app = self.backend_app(app_id)?;
        let conv = self.backend_conv(&app, cid, kinds).await?;
        let state = conv.state();
        let set = match kind {
            RestrictionKind::Block => &state.blocked,
            RestrictionKind::ShutUp => &state.shut_up,
        };
        let mut all: Vec<String> = set.iter().cloned().collect();
        all.sort_unstable();
        Ok(all)
    }

    /// Silences `client` in a conversation for `ttl_secs` (≤ 24 h), or lifts the
    /// silence (`None`). A silenced sender is refused with 4315 until the time is up.
    /// Stored (a mark with its end), so a restart keeps it (see docs/decisions.md).
    pub async fn admin_silence(
        &self,
        app_id: &str,
        kinds: &[ConvKind],
        cid: &str,
        client: &str,
        ttl_secs: Option<i64>,
    ) -> Result<(), ProtocolError> {
        let app = self.backend_app(app_id)?;
        Self::valid_member_ids(&app, &[client.to_owned()])?;
        let conv = self.backend_conv(&app, cid, kinds).await?;
        let now = self.now();
        let until = ttl_secs.map(|ttl| now + ttl.clamp(0, SILENCE_MAX_SECS) * 1000);
        let lock = app.conv_lock(cid);
        let _guard = lock.lock().await;
        if until.is_some() {
            self.make_room_for_silence(&app, &conv, client, now).await?;
        }
        self.inner
            .store
            .set_marks(
                &app.config.id,
                cid,
                MarkKind::Silenced,
                vec![client.to_owned()],
                until.is_some(),
                until,
            )
            .await
            .map_err(store_error)?;
        {
            let mut state = conv.state();
            match until {
                Some(until) => state.silenced.insert(client.to_owned(), until),
                None => state.silenced.remove(client),
            };
        }
        app.conv_changed(cid);
        Ok(())
    }

    /// Checks that one more temporary silence (of `client`) fits the conversation's
    /// limit, first dropping the silences that have run out (their marks stay stored
    /// until then, so they count) when the list is full. The caller holds the
    /// conversation's lock.
    async fn make_room_for_silence(
        &self,
        app: &AppState,
        conv: &Conv,
        client: &str,
        now: i64,
    ) -> Result<(), ProtocolError> {
        let limit = List::Silenced.limit(&app.config.limits, conv.kind);
        let expired: Vec<String> = {
            let state = conv.state();
            if state.silenced.contains_key(client) || state.silenced.len() < limit.1 {
                return Ok(());
            }
            state.silenced.iter().filter(|(_, until)| **until <= now).map(|(c, _)| c.clone()).collect()
        };
        if !expired.is_empty() {
            let store = &self.inner.store;
            store
                .set_marks(&app.config.id, &conv.cid, MarkKind::Silenced, expired.clone(), false, None)
                .await
                .map_err(store_error)?;
            let mut state = conv.state();
            for c in &expired {
                state.silenced.remove(c);
            }
        }
        let len = conv.state().silenced.len();
        check_list(len, 1, limit)
    }

    /// `client` puts a conversation (any kind) on its own blacklist, or takes it off:
    /// while there, nobody else adds it to the conversation or subscribes it (4315);
    /// it stays a member if it is one, and may still join by itself.
    pub async fn admin_client_block(
        &self,
        app_id: &str,
        client: &str,
        cid: &str,
        on: bool,
    ) -> Result<(), ProtocolError> {
        let app = self.backend_app(app_id)?;
        Self::valid_member_ids(&app, &[client.to_owned()])?;
        let all = [ConvKind::Normal, ConvKind::Transient, ConvKind::System, ConvKind::Temporary];
        let conv = self.backend_conv(&app, cid, &all).await?;
        // One client's additions in different conversations are counted one at a
        // time (a lock for the app's client blacklists, taken before any
        // conversation's), so two at once cannot both take the last place.
        let counting = app.conv_lock(CLIENT_BLACKLISTS);
        let _counting = if on { Some(counting.lock().await) } else { None };
        let lock = app.conv_lock(cid);
        let _guard = lock.lock().await;
        let clients = vec![client.to_owned()];
        let store = &self.inner.store;
        if on && !conv.state().blocked_by.contains(client) {
            let max = app.config.limits.client_blacklist_max;
            let count = store
                .count_client_marks(&app.config.id, client, MarkKind::ClientBlocked)
                .await
                .map_err(store_error)?;
            check_list(count, 1, ("client_blacklist_max", max))?;
        }
        store
            .set_marks(&app.config.id, cid, MarkKind::ClientBlocked, clients, on, None)
            .await
            .map_err(store_error)?;
        {
            let mut state = conv.state();
            if on {
                state.blocked_by.insert(client.to_owned());
            } else {
                state.blocked_by.remove(client);
            }
        }
        app.conv_changed(cid);
        Ok(())
    }

    /// The conversations on `client`'s own blacklist, by id, after `after`, at most
    /// `limit`.
    pub async fn admin_client_blocks(
        &self,
        app_id: &str,
        client: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, ProtocolError> {
        let app = self.backend_app(app_id)?;
        Self::valid_member_ids(&app, &[client.to_owned()])?;
        let store = &self.inner.store;
        store
            .client_marks(&app.config.id, client, MarkKind::ClientBlocked, after, limit)
            .await
            .map_err(store_error)
    }
}

/// The log of a system conversation's app-wide broadcasts (copies, for listing them).
pub(super) fn broadcast_log(cid: &str) -> String {
    format!("{cid}:broadcasts")
}

/// A message the backend sends to given clients of a system conversation.
#[derive(Debug, Clone, Default)]
pub struct TargetedMessage {
    /// The sender (any client id).
    pub from: String,
    /// The recipients (any client ids, subscribed or not; 1 to
    /// [`TARGETED_RECIPIENTS_MAX`]).
    pub to: Vec<String>,
    /// The body.
    pub msg: String,
    /// Not stored; only for who is online now.
    pub transient: bool,
}

impl Engine {
    /// Deletes one stored message (the server's copy only: clients keep theirs).
    pub async fn admin_delete_message(
        &self,
        app_id: &str,
        kinds: &[ConvKind],
        cid: &str,
        mid: &str,
        timestamp: Option<i64>,
    ) -> Result<(), ProtocolError> {
        let app = self.backend_app(app_id)?;
        let m = self.backend_message(&app, kinds, cid, mid, timestamp).await?;
        self.inner.store.delete_message(&app.config.id, cid, m.ts).await.map_err(store_error)
    }

    /// Messages of the whole app (or of one sender) within `range`, oldest first.
    pub async fn admin_app_messages(
        &self,
        app_id: &str,
        from: Option<&str>,
        range: MessageRange,
    ) -> Result<Vec<StoredMessage>, ProtocolError> {
        let app = self.backend_app(app_id)?;
        self.inner.store.app_messages(&app.config.id, from, range).await.map_err(store_error)
    }

    /// When `client` subscribed to a system conversation (`None`: it does not).
    pub async fn admin_subscribed_at(
        &self,
        app_id: &str,
        cid: &str,
        client: &str,
    ) -> Result<Option<i64>, ProtocolError> {
        let app = self.backend_app(app_id)?;
        self.inner.store.joined_at(&app.config.id, cid, client).await.map_err(store_error)
    }

    /// Sends a message of a system conversation to given clients only (LeanCloud's
    /// "targeted" service messages, no membership check), through the path of every
    /// message: stored once in the conversation's log with its recipients, in the
    /// conversation's order, answered after the commit, pushed to the recipients'
    /// online sessions; subscribers among them who are offline get it at their next
    /// login. Other subscribers never see it (not live, not in their replay, history or
    /// unread counts). A recipient who does not subscribe gets it only if online now.
    /// Returns the message's id and timestamp.
    pub async fn admin_send_targeted(
        &self,
        app_id: &str,
        cid: &str,
        m: TargetedMessage,
    ) -> Result<(String, i64), ProtocolError> {
        let app = self.backend_app(app_id)?;
        if m.to.is_empty() || m.to.len() > TARGETED_RECIPIENTS_MAX {
            return Err(perr(
                ErrorCode::UnparseableRawMsg,
                format!("a targeted message names 1 to {TARGETED_RECIPIENTS_MAX} recipients"),
            ));
        }
        Self::valid_member_ids(&app, std::slice::from_ref(&m.from))?;
        Self::valid_member_ids(&app, &m.to)?;
        let mut to = distinct(m.to);
        to.sort_unstable();
        let conv = self.backend_conv(&app, cid, &[ConvKind::System]).await?;
        let (session, mut replies) = Self::backend_session(&app, &m.from);
        let request = confab_types::DirectRequest {
            cid: cid.to_owned(),
            msg: m.msg.clone(),
            transient: m.transient,
            ..Default::default()
        };
        let first = self.send_to(&app, &session, Some(1), request, Some(to.clone())).await?;
        let (id, ts) = match super::admin::backend_reply(first, &mut replies).await? {
            Reply::MessageAck { uid, t } => (uid, t),
            _ => return Err(unexpected()),
        };
        // Recipients who do not subscribe have no place in the conversation's delivery:
        // they get it now if online, as LeanCloud names no membership check.
        let outsiders: HashSet<String> = to.into_iter().filter(|c| !conv.has_member(c)).collect();
        if !outsiders.is_empty() {
            let push = SharedPush::new(Push::Direct(confab_types::DirectPush {
                cid: cid.to_owned(),
                id: id.clone(),
                timestamp: ts,
                from: m.from,
                msg: m.msg,
                transient: m.transient,
                ..confab_types::DirectPush::default()
            }));
            self.push_to_clients(&app, &outsiders, &push);
        }
        Ok((id, ts))
    }

    /// A subscriber's messages of a system conversation within `range`, oldest first:
    /// the conversation's broadcasts and the targeted messages for it.
    pub async fn admin_subscriber_history(
        &self,
        app_id: &str,
        cid: &str,
        client: &str,
        range: MessageRange,
    ) -> Result<Vec<StoredMessage>, ProtocolError> {
        let app = self.backend_app(app_id)?;
        self.backend_conv(&app, cid, &[ConvKind::System]).await?;
        let range = MessageRange { visible_to: Some(client.to_owned()), ..range };
        self.inner.store.messages(&app.config.id, cid, range).await.map_err(store_error)
    }

    /// Deletes a targeted message for `client` (the server's copy) from what `client`
    /// got: it stops being one of the recipients, and the message goes when it has none.
    pub async fn admin_delete_targeted(
        &self,
        app_id: &str,
        cid: &str,
        client: &str,
        mid: &str,
        timestamp: Option<i64>,
    ) -> Result<(), ProtocolError> {
        let app = self.backend_app(app_id)?;
        let m = self.backend_message(&app, &[ConvKind::System], cid, mid, timestamp).await?;
        if !m.recipients.as_ref().is_some_and(|to| to.iter().any(|c| c == client)) {
            return Err(perr(ErrorCode::MessageNotFound, mid));
        }
        self.inner.store.remove_recipient(&app.config.id, cid, m.ts, client).await.map_err(store_error)
    }

    /// Edits or recalls a targeted message that `to` names recipients of, as
    /// [`Engine::admin_patch`] does: the message changes (it is stored once for all its
    /// recipients) and its recipients' online sessions get the `patch` push. Returns
    /// the patch time.
    pub async fn admin_patch_targeted(
        &self,
        app_id: &str,
        cid: &str,
        to: &[String],
        p: AdminPatch,
    ) -> Result<i64, ProtocolError> {
        let app = self.backend_app(app_id)?;
        Self::valid_member_ids(&app, to)?;
        let m = self.backend_message(&app, &[ConvKind::System], cid, &p.mid, p.timestamp).await?;
        if !m.recipients.as_ref().is_some_and(|r| to.iter().any(|c| r.contains(c))) {
            return Err(perr(ErrorCode::MessageNotFound, &p.mid));
        }
        self.admin_patch(app_id, &[ConvKind::System], cid, p).await
    }

    /// An app-wide broadcast from a system conversation (`POST /1.2/rtm/broadcasts`):
    /// stored in the conversation like a broadcast to its subscribers (who get it, online
    /// or later, as any message), kept in the conversation's broadcast list, and pushed
    /// to every other client online now, on every node. `transient`: only the push,
    /// nothing stored.
    pub async fn admin_global_broadcast(
        &self,
        app_id: &str,
        cid: &str,
        from: &str,
        msg: String,
        transient: bool,
    ) -> Result<(String, i64), ProtocolError> {
        let m = AdminMessage { from: from.to_owned(), msg: msg.clone(), transient, ..Default::default() };
        let (id, ts) = self.admin_send(app_id, &[ConvKind::System], cid, m).await?;
        let app = self.backend_app(app_id)?;
        let conv = self.backend_conv(&app, cid, &[ConvKind::System]).await?;
        if !transient {
            let copy = StoredMessage {
                app: app.config.id.clone(),
                cid: broadcast_log(cid),
                id: id.clone(),
                ts,
                from: from.to_owned(),
                data: msg.clone(),
                receipt: false,
                patched_at: None,
                binary: false,
                mentions: confab_types::Mentions::default(),
                recipients: None,
            };
            self.inner.store.append_message(copy).await.map_err(store_error)?;
        }
        let push = SharedPush::new(Push::Direct(confab_types::DirectPush {
            cid: cid.to_owned(),
            id: id.clone(),
            timestamp: ts,
            from: from.to_owned(),
            msg,
            transient,
            ..confab_types::DirectPush::default()
        }));
        // Subscribers got it as the conversation's message; everyone else online, on
        // every node, gets this push once per session.
        app.broker.app_wide(cid, &push, &|c| conv.has_member(c));
        Ok((id, ts))
    }

    /// The app-wide broadcasts of a system conversation, newest first.
    pub async fn admin_broadcasts(
        &self,
        app_id: &str,
        cid: &str,
        skip: usize,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, ProtocolError> {
        let app = self.backend_app(app_id)?;
        self.backend_conv(&app, cid, &[ConvKind::System]).await?;
        let range =
            MessageRange { newest_first: true, limit: skip.saturating_add(limit), ..MessageRange::default() };
        let mut all = self
            .inner
            .store
            .messages(&app.config.id, &broadcast_log(cid), range)
            .await
            .map_err(store_error)?;
        all.reverse();
        Ok(all
            .into_iter()
            .skip(skip)
            .take(limit)
            .map(|m| StoredMessage { cid: cid.to_owned(), ..m })
            .collect())
    }

    /// Deletes an app-wide broadcast by id (of any system conversation): from the list
    /// and from the conversation's history, so clients that have not received it yet
    /// never will. Returns whether it was found.
    pub async fn admin_delete_broadcast(&self, app_id: &str, mid: &str) -> Result<bool, ProtocolError> {
        let app = self.backend_app(app_id)?;
        let store = &self.inner.store;
        let max = app.config.limits.query_scan_max;
        let filter = ScanFilter { kind: Some(ConvKind::System), max, ..ScanFilter::default() };
        let systems = store.scan_conversations(&app.config.id, filter).await.map_err(store_error)?;
        for conv in systems.iter().take(max) {
            let log = broadcast_log(&conv.id);
            if let Some(m) = store.message(&app.config.id, &log, mid).await.map_err(store_error)? {
                store.delete_message(&app.config.id, &log, m.ts).await.map_err(store_error)?;
                // The conversation's copy by its id (its position may differ in a cluster).
                if let Some(main) = store.message(&app.config.id, &conv.id, mid).await.map_err(store_error)? {
                    store.delete_message(&app.config.id, &conv.id, main.ts).await.map_err(store_error)?;
                }
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl Engine {
    /// The conversation events a 4.x client asks for after a reconnect
    /// (`GET /1.1/rtm/notifications`), for the client a valid session token names:
    /// the conversations it became a member of after `since` (ms), as `(cid, when,
    /// creator)`, oldest first, at most `max`. `None` for a token that is not valid for
    /// this client. Confab keeps no log of other events (see docs/decisions.md).
    pub async fn admin_notifications(
        &self,
        app_id: &str,
        client: &str,
        token: &str,
        since: i64,
        max: usize,
    ) -> Result<Option<Vec<(String, i64, String)>>, ProtocolError> {
        let app = self.backend_app(app_id)?;
        let c = &app.config;
        if crate::session_token::check(&c.master_key, &c.id, client, token, self.now()).is_none() {
            return Ok(None);
        }
        let filter = ScanFilter {
            member: Some(client.to_owned()),
            max: c.limits.query_scan_max,
            ..ScanFilter::default()
        };
        let convs = self.inner.store.scan_conversations(&c.id, filter).await.map_err(store_error)?;
        let mut joined = Vec::new();
        for conv in convs.into_iter().take(c.limits.query_scan_max) {
            if conv.kind == ConvKind::Transient {
                continue;
            }
            if let Some(t) = self.inner.store.joined_at(&c.id, &conv.id, client).await.map_err(store_error)?
                && t > since
            {
                joined.push((conv.id, t, conv.creator));
            }
        }
        joined.sort_by_key(|j| j.1);
        joined.truncate(max);
        Ok(Some(joined))
    }
}

/// How many distinct clients logged in since midnight (UTC), in bounded memory: a
/// HyperLogLog of 2^14 one-byte registers (16 KiB per app; exact in practice for
/// small counts, about 1 % off for large ones), reset when the day changes.
#[derive(Debug)]
pub(crate) struct DailyClients {
    inner: std::sync::Mutex<(i64, Vec<u8>)>,
}

const HLL_BITS: u32 = 14;
pub(crate) const DAY_MS: i64 = 86_400_000;

impl Default for DailyClients {
    fn default() -> DailyClients {
        DailyClients { inner: std::sync::Mutex::new((0, vec![0; 1 << HLL_BITS])) }
    }
}

impl DailyClients {
    fn day(&self, now: i64) -> std::sync::MutexGuard<'_, (i64, Vec<u8>)> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let today = now.div_euclid(DAY_MS);
        if g.0 != today {
            g.0 = today;
            g.1.iter_mut().for_each(|r| *r = 0);
        }
        g
    }

    /// Counts a login of `client` at `now` (ms).
    pub(crate) fn login(&self, client: &str, now: i64) {
        use std::hash::{Hash, Hasher};
        // SipHash with fixed keys: the same client always lands in the same register.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        client.hash(&mut h);
        let hash = h.finish();
        let index = (hash >> (64 - HLL_BITS)) as usize;
        let rank = ((hash << HLL_BITS) | (1 << (HLL_BITS - 1))).leading_zeros() as u8 + 1;
        let mut g = self.day(now);
        if let Some(r) = g.1.get_mut(index) {
            *r = (*r).max(rank);
        }
    }

    /// The estimated number of distinct clients today.
    pub(crate) fn count(&self, now: i64) -> u64 {
        let g = self.day(now);
        let m = g.1.len() as f64;
        let zeros = g.1.iter().filter(|r| **r == 0).count();
        let sum: f64 = g.1.iter().map(|r| 2f64.powi(-i32::from(*r))).sum();
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / sum;
        let estimate = if raw <= 2.5 * m && zeros > 0 { m * (m / zeros as f64).ln() } else { raw };
        estimate.round() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daily_clients_count_distinct_ids_and_reset_each_day() {
        let d = DailyClients::default();
        assert_eq!(d.count(0), 0);
        for c in ["a", "b", "a", "c", "b"] {
            d.login(c, 1000);
        }
        assert_eq!(d.count(2000), 3);
        for i in 0..10_000 {
            d.login(&format!("client{i}"), 3000);
        }
        let n = d.count(3000) as f64;
        assert!((n - 10_003.0).abs() < 300.0, "{n}");
        assert_eq!(d.count(DAY_MS + 1), 0);
    }

    #[test]
    fn member_info_ids_are_stable_object_ids() {
        let id = member_info_id("c1", "alice");
        assert_eq!(id.len(), 24);
        assert_eq!(id, member_info_id("c1", "alice"));
        assert_ne!(id, member_info_id("c1", "bob"));
    }
}

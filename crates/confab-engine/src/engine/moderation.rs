//! Roles, shut-up and blocking (the 3.x+ protocol).

use super::*;
use crate::ports::MarkKind;
use confab_types::{Limits, RestrictionKind, RestrictionOp, RoleChange};

/// A list of a conversation that `[apps.limits]` bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum List {
    /// Blocked clients (the conversation's blacklist).
    Blocked,
    /// Shut-up (permanently silenced) members or, in a chat room, clients.
    ShutUp,
    /// Temporarily silenced clients.
    Silenced,
    /// A chat room's managers (a normal conversation's managers are members).
    Managers,
}

impl List {
    /// The list a restriction adds to.
    fn of(kind: RestrictionKind) -> List {
        match kind {
            RestrictionKind::Block => List::Blocked,
            RestrictionKind::ShutUp => List::ShutUp,
        }
    }

    /// The limit of this list in a conversation of `kind`: its `[apps.limits]` key
    /// and value. Chat rooms and service conversations take the larger room values
    /// (LeanCloud: 10,000 against 500).
    pub(super) fn limit(self, limits: &Limits, kind: ConvKind) -> (&'static str, usize) {
        let room = matches!(kind, ConvKind::Transient | ConvKind::System);
        match (self, room) {
            (List::Blocked, false) => ("blacklist_max", limits.blacklist_max),
            (List::Blocked, true) => ("room_blacklist_max", limits.room_blacklist_max),
            (List::ShutUp | List::Silenced, false) => ("silenced_max", limits.silenced_max),
            (List::ShutUp | List::Silenced, true) => ("room_silenced_max", limits.room_silenced_max),
            (List::Managers, _) => ("room_managers_max", limits.room_managers_max),
        }
    }
}

/// Refuses, with 4543 naming the limit, a change that would take a list of `len`
/// entries over the limit `(key, max)` by adding `adding` new ones. Removals and
/// changes that add nothing always pass, so a list over a lowered limit can shrink.
pub(super) fn check_list(len: usize, adding: usize, (key, max): (&str, usize)) -> Result<(), ProtocolError> {
    if adding > 0 && len.saturating_add(adding) > max {
        return Err(bounds::over_limit(ErrorCode::ListFull, key, max));
    }
    Ok(())
}

/// How many of `ids` a set does not hold yet.
fn new_entries(set: &std::collections::HashSet<String>, ids: &[String]) -> usize {
    ids.iter().filter(|id| !set.contains(*id)).count()
}

impl Engine {
    /// Owners (creators) and managers may manage a conversation.
    pub(super) fn may_manage(conv: &Conv, client: &str) -> bool {
        conv.creator == client || conv.state().managers.contains(client)
    }

    pub(super) async fn managed_conv(
        &self,
        app: &AppState,
        cid: &str,
        session: &Session,
    ) -> Result<Arc<Conv>, ProtocolError> {
        let me = &*session.client_id;
        let conv = self.conv(app, cid).await?.ok_or_else(|| perr(ErrorCode::ConversationNotFound, cid))?;
        if !matches!(conv.kind, ConvKind::Normal | ConvKind::Transient) {
            return Err(perr(
                ErrorCode::NormalConversationRequired,
                "only normal conversations and chat rooms have roles",
            ));
        }
        // The app's backend manages every conversation (LeanCloud's REST API).
        if !session.admin && !Self::may_manage(&conv, me) {
            return Err(perr(
                ErrorCode::ConversationOperationUnauthorized,
                "only the owner or a manager may do this",
            ));
        }
        Ok(conv)
    }

    /// `member_info_update`: the owner or a manager makes a member a `Manager` or a
    /// plain `Member`; nobody can be made owner.
    pub(super) async fn member_role(
        &self,
        app: &AppState,
        session: &Arc<Session>,
        cid: &str,
        member: String,
        role: String,
    ) -> Result<Reply, ProtocolError> {
        let me = session.client_id.to_string();
        let conv = self.managed_conv(app, cid, session).await?;
        if role != "Manager" && role != "Member" {
            return Err(perr(
                ErrorCode::ConversationOperationUnauthorized,
                format!("role {role:?} cannot be given"),
            ));
        }
        // A chat room keeps no members: its roles are marks on any client but the owner.
        let room = conv.kind == ConvKind::Transient;
        if (!room && !conv.has_member(&member)) || member == conv.creator {
            return Err(perr(
                ErrorCode::ConversationMembershipRequired,
                "the target must be a member other than the owner",
            ));
        }
        let lock = app.conv_lock(cid);
        let _guard = lock.lock().await;
        if room && role == "Manager" {
            let state = conv.state();
            let adding = new_entries(&state.managers, std::slice::from_ref(&member));
            check_list(state.managers.len(), adding, List::Managers.limit(&app.config.limits, conv.kind))?;
        }
        let store = &self.inner.store;
        if room {
            let on = role == "Manager";
            store.set_marks(&app.config.id, cid, MarkKind::RoomManager, vec![member.clone()], on, None).await
        } else {
            store.set_role(&app.config.id, cid, &member, &role).await
        }
        .map_err(store_error)?;
        let members: Vec<String> = {
            let mut state = conv.state();
            if role == "Manager" {
                state.managers.insert(member.clone());
            } else {
                state.managers.remove(&member);
            }
            // A chat room's change is told to the client concerned (and the one who
            // made it), not to a member list the room does not keep.
            if room {
                let actor = (!session.admin).then(|| me.clone());
                std::iter::once(member.clone()).chain(actor).collect()
            } else {
                state.members.iter().cloned().collect()
            }
        };
        app.conv_changed(cid);
        let push = SharedPush::new(Push::Conv(ConvPush {
            event: ConvEvent::MemberInfoChanged,
            cid: cid.to_owned(),
            init_by: me,
            members: Vec::new(),
            attr: None,
            role: Some(RoleChange { member, role }),
            udate: self.now(),
        }));
        self.push_to_clients(app, &members, &push);
        Ok(Reply::MemberRoleUpdated)
    }

    /// Shut members up or block clients (and the reverse). Blocking also removes the
    /// clients from the conversation, and blocked clients cannot join again.
    pub(super) async fn restrict(
        &self,
        app: &AppState,
        session: &Arc<Session>,
        serial: Option<i32>,
        r: confab_types::Restriction,
    ) -> Result<Option<Reply>, ProtocolError> {
        let me = session.client_id.to_string();
        let conv = self.managed_conv(app, &r.cid, session).await?;
        let signed = match r.op {
            RestrictionOp::Block => Some(Signed::Block { cid: &r.cid, members: &r.members }),
            RestrictionOp::Unblock => Some(Signed::Unblock { cid: &r.cid, members: &r.members }),
            RestrictionOp::ShutUp | RestrictionOp::Unshut => None,
        };
        if let Some(op) = signed
            && app.config.signatures.conversation
            && !session.admin
        {
            self.check_signature(app, &me, op, r.signature.as_ref(), ErrorCode::ConversationSignatureFailed)
                .await?;
        }
        if conv.kind == ConvKind::Transient {
            return self.restrict_room(app, session, serial, &conv, r).await;
        }
        let kind = r.op.kind();
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
            if *id == conv.creator || *id == me || (kind == RestrictionKind::ShutUp && !conv.has_member(id)) {
                refused.push(id.clone());
            } else {
                changed.push(id.clone());
            }
        }
        if r.op.imposes() {
            // Over the list's limit, nothing is changed (not even the clients that fit).
            let state = conv.state();
            let set = match kind {
                RestrictionKind::Block => &state.blocked,
                RestrictionKind::ShutUp => &state.shut_up,
            };
            let limit = List::of(kind).limit(&app.config.limits, conv.kind);
            check_list(set.len(), new_entries(set, &changed), limit)?;
        }
        if !refused.is_empty() {
            let error = perr(ErrorCode::ConversationOperationUnauthorized, "cannot restrict these clients");
            result.failed.push(MemberFailure { error, members: refused });
        }
        let store = &self.inner.store;
        let app_id = &app.config.id;
        if !changed.is_empty() {
            let on = r.op.imposes();
            match kind {
                RestrictionKind::Block => store.set_blocked(app_id, &r.cid, changed.clone(), on).await,
                RestrictionKind::ShutUp => store.set_shut_up(app_id, &r.cid, changed.clone(), on).await,
            }
            .map_err(store_error)?;
        }
        let (removed, remaining) = {
            let mut state = conv.state();
            let mut removed = Vec::new();
            for id in &changed {
                match r.op {
                    RestrictionOp::Block => {
                        state.blocked.insert(id.clone());
                        if state.members.remove(id) {
                            removed.push(id.clone());
                        }
                    }
                    RestrictionOp::Unblock => {
                        state.blocked.remove(id);
                    }
                    RestrictionOp::ShutUp => {
                        state.shut_up.insert(id.clone());
                    }
                    RestrictionOp::Unshut => {
                        state.shut_up.remove(id);
                    }
                }
            }
            (removed, state.members.iter().cloned().collect::<Vec<_>>())
        };
        if !changed.is_empty() {
            app.conv_changed(&r.cid);
        }
        result.allowed = changed.clone();
        session.conn.reply(serial, Reply::Restricted { op: r.op, result });
        if changed.is_empty() {
            return Ok(None);
        }
        let now = self.now();
        let (to_all, to_each) = match r.op {
            RestrictionOp::Block => (ConvEvent::MembersBlocked, ConvEvent::Blocked),
            RestrictionOp::Unblock => (ConvEvent::MembersUnblocked, ConvEvent::Unblocked),
            RestrictionOp::ShutUp => (ConvEvent::MembersShutUp, ConvEvent::ShutUp),
            RestrictionOp::Unshut => (ConvEvent::MembersUnshutup, ConvEvent::Unshutup),
        };
        let event = |event, members: &[String]| conv_event(event, &r.cid, &me, members, None, now);
        self.push_to_clients(app, &remaining, &event(to_all, &changed));
        self.push_to_clients(app, &changed, &event(to_each, &[]));
        let left = event(ConvEvent::Left, &[]);
        for id in &removed {
            app.membership_changed(id, &r.cid);
            self.push_to_client(app, id, &left);
        }
        if !removed.is_empty() {
            self.push_to_clients(app, &remaining, &event(ConvEvent::MembersLeft, &removed));
        }
        Ok(None)
    }

    /// Shut-up and blocking in a chat room, which keeps no members: any client but the
    /// owner and the one asking can be restricted. Shut-up clients are stored as marks
    /// (their sends get 4308); blocked clients' sessions leave the room (on every node)
    /// and their joins get 4315. Only the clients concerned are told (`shutuped`,
    /// `blocked` + `left`, …): a room announces no membership.
    async fn restrict_room(
        &self,
        app: &AppState,
        session: &Arc<Session>,
        serial: Option<i32>,
        conv: &Conv,
        r: confab_types::Restriction,
    ) -> Result<Option<Reply>, ProtocolError> {
        let me = session.client_id.to_string();
        let lock = app.conv_lock(&r.cid);
        let _guard = lock.lock().await;
        let mut result = MembersResult::default();
        let (mut changed, mut refused) = (Vec::new(), Vec::new());
        for id in distinct(r.members.iter().cloned()) {
            if id == conv.creator || id == me {
                refused.push(id);
            } else {
                changed.push(id);
            }
        }
        if r.op.imposes() {
            let state = conv.state();
            let set = match r.op.kind() {
                RestrictionKind::Block => &state.blocked,
                RestrictionKind::ShutUp => &state.shut_up,
            };
            let limit = List::of(r.op.kind()).limit(&app.config.limits, conv.kind);
            check_list(set.len(), new_entries(set, &changed), limit)?;
        }
        if !refused.is_empty() {
            let error = perr(ErrorCode::ConversationOperationUnauthorized, "cannot restrict these clients");
            result.failed.push(MemberFailure { error, members: refused });
        }
        let (store, app_id, on) = (&self.inner.store, &app.config.id, r.op.imposes());
        if !changed.is_empty() {
            match r.op.kind() {
                RestrictionKind::Block => store.set_blocked(app_id, &r.cid, changed.clone(), on).await,
                RestrictionKind::ShutUp => {
                    store.set_marks(app_id, &r.cid, MarkKind::RoomShutUp, changed.clone(), on, None).await
                }
            }
            .map_err(store_error)?;
        }
        let left = {
            let mut state = conv.state();
            for id in &changed {
                let set = match r.op.kind() {
                    RestrictionKind::Block => &mut state.blocked,
                    RestrictionKind::ShutUp => &mut state.shut_up,
                };
                if on {
                    set.insert(id.clone());
                } else {
                    set.remove(id);
                }
            }
            let mut left = Vec::new();
            if r.op == RestrictionOp::Block {
                let (out, stay): (Vec<_>, Vec<_>) =
                    state.room.drain(..).partition(|s| changed.iter().any(|c| **c == *s.client_id));
                state.room = stay;
                left = out;
            }
            left
        };
        for s in &left {
            s.rooms.lock().unwrap_or_else(|p| p.into_inner()).retain(|c| *c != r.cid);
            self.room_left(app, &r.cid, s);
        }
        if !changed.is_empty() {
            app.conv_changed(&r.cid);
        }
        result.allowed = changed.clone();
        session.conn.reply(serial, Reply::Restricted { op: r.op, result });
        let now = self.now();
        let to_each = match r.op {
            RestrictionOp::Block => ConvEvent::Blocked,
            RestrictionOp::Unblock => ConvEvent::Unblocked,
            RestrictionOp::ShutUp => ConvEvent::ShutUp,
            RestrictionOp::Unshut => ConvEvent::Unshutup,
        };
        self.push_to_clients(app, &changed, &conv_event(to_each, &r.cid, &me, &[], None, now));
        if r.op == RestrictionOp::Block {
            self.push_to_clients(app, &changed, &conv_event(ConvEvent::Left, &r.cid, &me, &[], None, now));
        }
        Ok(None)
    }

    /// A page of the shut-up (or, with `blocked`, the blocked) clients, by a numeric
    /// offset in `next`.
    pub(super) async fn restricted_page(
        &self,
        app: &AppState,
        session: &Session,
        cid: &str,
        kind: RestrictionKind,
        limit: Option<i64>,
        next: Option<String>,
    ) -> Result<Reply, ProtocolError> {
        let conv = self.conv(app, cid).await?.ok_or_else(|| perr(ErrorCode::ConversationNotFound, cid))?;
        if !conv.has_member(&session.client_id) {
            return Err(perr(ErrorCode::ConversationMembershipRequired, "only members can look"));
        }
        let mut all: Vec<String> = {
            let state = conv.state();
            let set = match kind {
                RestrictionKind::Block => &state.blocked,
                RestrictionKind::ShutUp => &state.shut_up,
            };
            set.iter().cloned().collect()
        };
        all.sort_unstable();
        let start = next.and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
        let limit =
            limit.filter(|l| *l > 0).map_or(10, |l| l as usize).min(app.config.limits.query_max_limit);
        let members: Vec<String> = all.iter().skip(start).take(limit).cloned().collect();
        let next = (start + members.len() < all.len()).then(|| (start + members.len()).to_string());
        Ok(Reply::RestrictedPage { kind, members, next })
    }
}

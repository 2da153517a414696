//! Membership: starting conversations, adding and removing members, joining and leaving
//! chat rooms and system conversations.

use super::*;

impl Engine {
    pub(super) fn valid_member_ids(app: &AppState, members: &[String]) -> Result<(), ProtocolError> {
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

    pub(super) async fn conv_start(
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
            )
            .await?;
        }
        Self::valid_member_ids(app, &start.members)?;
        let hook_params = serde_json::json!({
            "initBy": me,
            "members": distinct(std::iter::once(me.clone()).chain(start.members.iter().cloned())),
            "attr": start.attr,
        });
        self.conversation_check(app, "_conversationStart", hook_params, session.admin).await?;
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
        let started_params = serde_json::json!({ "convId": record.id, "initBy": me, "members": members });
        let calls: Vec<_> =
            self.hook_event(app, "_conversationStarted", started_params).into_iter().collect();
        let has_calls = !calls.is_empty();
        if let Err(e) = store.create_conversation_notify(record.clone(), calls).await {
            // A concurrent creation of the same unique conversation wins the race.
            if let Some(key) = &unique
                && let Ok(Some(found)) = store.find_unique(&app.config.id, key).await
            {
                return Ok(Some(started(&found)));
            }
            return Err(store_error(e));
        }
        if has_calls {
            self.outbox_written();
        }
        let conv = Arc::new(Conv::from_record(&record));
        app.convs.shard(&record.id).insert(record.id.clone(), conv.clone());
        session.conn.reply(serial, started(&record));
        if kind == ConvKind::Transient {
            self.join_room(app, &conv, session).await;
        } else {
            let event = |event, members: &[String]| conv_event(event, &record.id, &me, members, None, now);
            let joined = event(ConvEvent::Joined, &[]);
            let members_joined = event(ConvEvent::MembersJoined, &members);
            for member in &members {
                app.membership_changed(member, &record.id);
                self.push_to_client(app, member, &joined);
                self.push_to_client(app, member, &members_joined);
            }
        }
        Ok(None)
    }

    /// Membership of conversations other than normal ones: a chat room or a system
    /// conversation is joined and left by each client itself; temporary ones are fixed.
    pub(super) async fn self_membership(
        &self,
        app: &AppState,
        conv: &Conv,
        session: &Arc<Session>,
        requested: Vec<String>,
        join: bool,
    ) -> Result<MembersResult, ProtocolError> {
        match conv.kind {
            ConvKind::Transient => Ok(self.room_membership(app, conv, session, requested, join).await),
            ConvKind::System => self.subscription(app, conv, session, requested, join).await,
            _ => Err(perr(
                ErrorCode::NormalConversationRequired,
                "membership of this conversation cannot change",
            )),
        }
    }

    /// System conversations: a client subscribes or unsubscribes itself; no events to
    /// clients. The app's `_conversationAdded` / `_conversationRemoved` are stored with
    /// the change, as for a normal conversation.
    pub(super) async fn subscription(
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
                result.failed.push(MemberFailure { error, members: vec![id] });
                continue;
            }
            if subscribe && conv.state().blocked.contains(&me) {
                let error = perr(ErrorCode::ConversationBlacklisted, "blocked from this conversation");
                result.failed.push(MemberFailure { error, members: vec![id] });
                continue;
            }
            let (store, now) = (&self.inner.store, self.now());
            let hook = |name: &str| {
                let params = serde_json::json!({ "initBy": me, "convId": conv.cid, "members": [me] });
                self.hook_event(app, name, params).into_iter().collect::<Vec<_>>()
            };
            if subscribe {
                if !conv.has_member(&me) {
                    let calls = hook("_conversationAdded");
                    let has_calls = !calls.is_empty();
                    store
                        .add_members_notify(&app.config.id, &conv.cid, vec![me.clone()], now, calls)
                        .await
                        .map_err(store_error)?;
                    if has_calls {
                        self.outbox_written();
                    }
                    conv.state().members.insert(me.clone());
                }
            } else if conv.has_member(&me) {
                let calls = hook("_conversationRemoved");
                let has_calls = !calls.is_empty();
                store
                    .remove_members_notify(&app.config.id, &conv.cid, vec![me.clone()], now, calls)
                    .await
                    .map_err(store_error)?;
                if has_calls {
                    self.outbox_written();
                }
                conv.state().members.remove(&me);
            }
            app.conv_changed(&conv.cid);
            app.membership_changed(&me, &conv.cid);
            result.allowed.push(id);
        }
        Ok(result)
    }

    /// Chat rooms: a session joins or leaves itself; nobody adds or removes others. A
    /// join or leave that changed something queues `_conversationAdded` /
    /// `_conversationRemoved` (stored on their own: a room's membership is not stored).
    pub(super) async fn room_membership(
        &self,
        app: &AppState,
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
                result.failed.push(MemberFailure { error, members: vec![id] });
            } else if join && self.blocked_from_room(app, conv, &id).await {
                let error = perr(ErrorCode::ConversationBlacklisted, "blocked from this chat room");
                result.failed.push(MemberFailure { error, members: vec![id] });
            } else if join {
                if self.join_room(app, conv, session).await {
                    self.room_hook(app, conv, session, "_conversationAdded");
                }
                result.allowed.push(id);
            } else {
                let was_in = {
                    let mut state = conv.state();
                    let before = state.room.len();
                    state.room.retain(|s| !Arc::ptr_eq(s, session));
                    state.room.len() != before
                };
                session.rooms.lock().unwrap_or_else(|p| p.into_inner()).retain(|c| *c != conv.cid);
                self.room_left(app, &conv.cid, session);
                if was_in {
                    self.room_hook(app, conv, session, "_conversationRemoved");
                }
                result.allowed.push(id);
            }
        }
        result
    }

    /// Whether `client` is blocked from a chat room. In a cluster this node's copy may
    /// predate an unblock another node made a moment ago: a refusal is checked against
    /// the store first (refusals are rare, so the extra read is cheap).
    async fn blocked_from_room(&self, app: &AppState, conv: &Conv, client: &str) -> bool {
        if !conv.state().blocked.contains(client) {
            return false;
        }
        if self.inner.cluster.is_some() {
            self.reload_conv(app, conv).await;
        }
        conv.state().blocked.contains(client)
    }

    /// Queues `_conversationAdded` or `_conversationRemoved` for a session that joined
    /// or left chat room `conv` by itself (not when its session ends).
    fn room_hook(&self, app: &AppState, conv: &Conv, session: &Session, hook: &str) {
        if session.admin {
            return;
        }
        let me = &*session.client_id;
        let params = serde_json::json!({ "initBy": me, "convId": conv.cid, "members": [me] });
        self.queue_hook_calls(self.hook_event(app, hook, params).into_iter().collect());
    }

    /// A session enters a chat room: here, and in the cluster's view of the room.
    /// Returns whether it was not in it already.
    pub(super) async fn join_room(&self, app: &AppState, conv: &Conv, session: &Arc<Session>) -> bool {
        let joined = {
            let mut state = conv.state();
            let new = !state.room.iter().any(|s| Arc::ptr_eq(s, session));
            if new {
                state.room.push(session.clone());
                session.rooms.lock().unwrap_or_else(|p| p.into_inner()).push(conv.cid.clone());
            }
            new
        };
        if joined {
            self.room_joined(app, &conv.cid, session).await;
        }
        joined
    }

    pub(super) async fn conv_add(
        &self,
        app: &Arc<AppState>,
        session: &Arc<Session>,
        serial: Option<i32>,
        change: MembersChange,
    ) -> Result<Option<Reply>, ProtocolError> {
        let me = session.client_id.to_string();
        let cid = change.cid.clone();
        let conv = self.conv(app, &cid).await?.ok_or_else(|| perr(ErrorCode::ConversationNotFound, &cid))?;
        if app.config.signatures.conversation && !session.admin {
            self.check_signature(
                app,
                &me,
                Signed::Invite { cid: &cid, members: &change.members },
                change.signature.as_ref(),
                ErrorCode::ConversationSignatureFailed,
            )
            .await?;
        }
        Self::valid_member_ids(app, &change.members)?;
        let requested = distinct(change.members.iter().cloned());
        let only_me = requested.len() == 1 && requested[0] == me;
        let hook_params = serde_json::json!({ "initBy": me, "members": requested, "convId": cid });
        self.conversation_check(app, "_conversationAdd", hook_params, session.admin).await?;
        if conv.kind != ConvKind::Normal {
            return Ok(Some(Reply::ConvAdded(
                self.self_membership(app, &conv, session, requested, true).await?,
            )));
        }
        let lock = app.conv_lock(&cid);
        let _guard = lock.lock().await;
        if !only_me && !session.admin && !conv.has_member(&me) {
            return Err(perr(ErrorCode::ConversationMembershipRequired, "only members can add others"));
        }
        let (existing, current, blocked, blocked_by) = {
            let state = conv.state();
            (state.members.clone(), state.members.len(), state.blocked.clone(), state.blocked_by.clone())
        };
        if only_me && blocked.contains(&me) {
            return Err(perr(ErrorCode::ConversationBlacklisted, "blocked from this conversation"));
        }
        let mut result = MembersResult::default();
        let mut added = Vec::new();
        let room = app.config.limits.conversation_members.saturating_sub(current);
        let mut full = Vec::new();
        let mut refused = Vec::new();
        let mut declined = Vec::new();
        for id in requested {
            if blocked.contains(&id) {
                refused.push(id);
            } else if existing.contains(&id) {
                result.allowed.push(id);
            } else if id != me && blocked_by.contains(&id) {
                // The client put this conversation on its own blacklist: nobody adds it.
                declined.push(id);
            } else if added.len() < room {
                added.push(id.clone());
                result.allowed.push(id);
            } else {
                full.push(id);
            }
        }
        if !full.is_empty() {
            let error = perr(ErrorCode::ConversationFull, "member limit reached");
            result.failed.push(MemberFailure { error, members: full });
        }
        if !refused.is_empty() {
            let error = perr(ErrorCode::ConversationBlacklisted, "blocked from this conversation");
            result.failed.push(MemberFailure { error, members: refused });
        }
        if !declined.is_empty() {
            let error = perr(ErrorCode::ConversationBlacklisted, "the client blocked this conversation");
            result.failed.push(MemberFailure { error, members: declined });
        }
        let now = self.now();
        if !added.is_empty() {
            let params = serde_json::json!({ "initBy": me, "convId": cid, "members": added });
            let calls: Vec<_> = self.hook_event(app, "_conversationAdded", params).into_iter().collect();
            let has_calls = !calls.is_empty();
            self.inner
                .store
                .add_members_notify(&app.config.id, &cid, added.clone(), now, calls)
                .await
                .map_err(store_error)?;
            if has_calls {
                self.outbox_written();
            }
            conv.state().members.extend(added.iter().cloned());
            app.conv_changed(&cid);
        }
        session.conn.reply(serial, Reply::ConvAdded(result));
        if !added.is_empty() {
            let members: Vec<String> = conv.state().members.iter().cloned().collect();
            let event = |event, members: &[String]| conv_event(event, &cid, &me, members, None, now);
            let joined = event(ConvEvent::Joined, &[]);
            let members_joined = event(ConvEvent::MembersJoined, &added);
            for member in &members {
                if added.contains(member) {
                    app.membership_changed(member, &cid);
                    self.push_to_client(app, member, &joined);
                }
                self.push_to_client(app, member, &members_joined);
            }
        }
        Ok(None)
    }

    pub(super) async fn conv_remove(
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
        if app.config.signatures.conversation && !only_me && !session.admin {
            self.check_signature(
                app,
                &me,
                Signed::Kick { cid: &cid, members: &change.members },
                change.signature.as_ref(),
                ErrorCode::ConversationSignatureFailed,
            )
            .await?;
        }
        // Leaving by oneself is not judged by `_conversationRemove` (LeanCloud's rule).
        if !only_me {
            let hook_params = serde_json::json!({ "initBy": me, "members": requested, "convId": cid });
            self.conversation_check(app, "_conversationRemove", hook_params, session.admin).await?;
        }
        if conv.kind != ConvKind::Normal {
            return Ok(Some(Reply::ConvRemoved(
                self.self_membership(app, &conv, session, requested, false).await?,
            )));
        }
        let lock = app.conv_lock(&cid);
        let _guard = lock.lock().await;
        if !only_me && !session.admin && !conv.has_member(&me) {
            return Err(perr(ErrorCode::ConversationMembershipRequired, "only members can remove others"));
        }
        let existing = conv.state().members.clone();
        // The owner stays: removing it (or it leaving) fails for the owner alone. The v2
        // protocol has no roles and its SDKs ignore `failedPids` (2.4.0 would report a
        // refused leave as done): there the creator may leave, and a removal of the
        // creator by anyone else is refused whole, as an error the SDK does see.
        let (owner, requested): (Vec<String>, Vec<String>) = requested
            .into_iter()
            .partition(|id| *id == conv.creator && existing.contains(id) && !(v2 && *id == me));
        if v2 && !owner.is_empty() {
            return Err(perr(ErrorCode::ConversationNeedOwner, "only the creator can remove itself"));
        }
        let removed: Vec<String> = requested.iter().filter(|id| existing.contains(*id)).cloned().collect();
        let now = self.now();
        if !removed.is_empty() {
            let params = serde_json::json!({ "initBy": me, "convId": cid, "members": removed });
            let calls: Vec<_> = self.hook_event(app, "_conversationRemoved", params).into_iter().collect();
            let has_calls = !calls.is_empty();
            self.inner
                .store
                .remove_members_notify(&app.config.id, &cid, removed.clone(), now, calls)
                .await
                .map_err(store_error)?;
            if has_calls {
                self.outbox_written();
            }
            let mut state = conv.state();
            for id in &removed {
                state.members.remove(id);
            }
            drop(state);
            app.conv_changed(&cid);
        }
        let failed = if owner.is_empty() {
            Vec::new()
        } else {
            let error = perr(ErrorCode::ConversationNeedOwner, "the owner cannot leave or be removed");
            vec![MemberFailure { error, members: owner }]
        };
        session.conn.reply(serial, Reply::ConvRemoved(MembersResult { allowed: requested, failed }));
        if !removed.is_empty() {
            let event = |event, members: &[String]| conv_event(event, &cid, &me, members, None, now);
            let left = event(ConvEvent::Left, &[]);
            for id in &removed {
                app.membership_changed(id, &cid);
                self.push_to_client(app, id, &left);
            }
            let remaining: Vec<String> = conv.state().members.iter().cloned().collect();
            self.push_to_clients(app, &remaining, &event(ConvEvent::MembersLeft, &removed));
        }
        Ok(None)
    }
}

//! The app's own backend: the operations of the REST API (the gateway's `rest` module).
//!
//! Each goes through the code path a client's request takes, with a *backend session*:
//! a session on a connection nobody reads but the call itself, never registered as
//! online, marked `admin` so that it may act on conversations it is not a member of
//! (LeanCloud's REST API does not check membership). The same store calls, locks,
//! ordering and pushes follow as for a client.

use super::*;
use crate::ports::StoredMessage;

/// The client id a backend session acts as when no client is named (`initBy` of the
/// pushes of a REST membership or attribute change): empty, as no client did it.
pub(super) const BACKEND: &str = "";

/// At most this many conversations are summed for a client's unread count.
const UNREAD_MAX_CONVERSATIONS: usize = 10_000;

/// A message the backend sends as a client (`POST …/messages`).
#[derive(Debug, Clone, Default)]
pub struct AdminMessage {
    /// The sender (any client id; it need not be a member).
    pub from: String,
    /// The body.
    pub msg: String,
    /// Not stored; only for who is online now.
    pub transient: bool,
    /// Who it mentions.
    pub mentions: confab_types::Mentions,
}

/// One of a client's sessions on this node, as the console shows a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSession {
    /// The device tag of a single-device login (`None`: untagged or `default`).
    pub tag: Option<String>,
    /// The connection's wire protocol and version ([`crate::metrics::WIRES`]).
    pub wire: (&'static str, &'static str),
    /// When it logged in (milliseconds since the Unix epoch, to the second).
    pub since: i64,
}

/// The most sessions of one client [`Engine::admin_client_sessions`] lists.
pub const CLIENT_SESSIONS_MAX: usize = 100;

/// A new conversation made by the backend (`POST /1.2/rtm/conversations`, `/chatrooms`).
#[derive(Debug, Clone, Default)]
pub struct AdminConversation {
    /// Creator (`c`); may be empty.
    pub creator: String,
    /// Members (`m`); ignored for chat rooms.
    pub members: Vec<String>,
    /// One conversation per member set: an existing one is returned.
    pub unique: bool,
    /// Attributes (`name`, `attr`, custom keys).
    pub attrs: Map<String, Value>,
}

/// Reads the reply a request queued to a backend session.
pub(super) async fn backend_reply(
    first: Option<Reply>,
    replies: &mut OutboundReceiver,
) -> Result<Reply, ProtocolError> {
    let reply = match first {
        Some(reply) => reply,
        None => match replies.recv().await {
            Next::Item(Outbound::Reply { reply, .. }) => *reply,
            _ => return Err(perr(ErrorCode::InternalError, "no reply to the backend's request")),
        },
    };
    match reply {
        Reply::Error(e) => Err(e),
        reply => Ok(reply),
    }
}

pub(super) fn unexpected() -> ProtocolError {
    perr(ErrorCode::InternalError, "unexpected reply")
}

impl Engine {
    pub(super) fn backend_app(&self, app_id: &str) -> Result<Arc<AppState>, ProtocolError> {
        self.app(app_id).cloned().ok_or_else(|| perr(ErrorCode::AppNotAvailable, "unknown app"))
    }

    /// A session of the backend acting as `client`, with the queue its replies go to.
    pub(super) fn backend_session(app: &AppState, client: &str) -> (Arc<Session>, OutboundReceiver) {
        let (handle, replies) = ConnHandle::new(0, None, app.config.limits.outbound_queue_bytes);
        let mut session = Session::new(handle, Arc::from(app.config.id.as_str()), Arc::from(client), None);
        if let Some(s) = Arc::get_mut(&mut session) {
            s.admin = true;
        }
        (session, replies)
    }

    /// A conversation of one of `kinds` (another kind is not found under this path).
    pub(super) async fn backend_conv(
        &self,
        app: &AppState,
        cid: &str,
        kinds: &[ConvKind],
    ) -> Result<Arc<crate::conversation::Conv>, ProtocolError> {
        // Another node may have changed it a moment ago, its event still on the way:
        // the app's backend reads what it wrote, whichever node it reaches.
        if self.inner.cluster.is_some()
            && let Some(cached) = app.convs.get(cid)
        {
            self.reload_conv(app, &cached).await;
        }
        let conv = self.conv(app, cid).await?;
        conv.filter(|c| kinds.contains(&c.kind)).ok_or_else(|| perr(ErrorCode::ConversationNotFound, cid))
    }

    /// A conversation as the REST API shows it: every field, members included.
    pub fn conversation_json(record: &ConversationRecord) -> Value {
        result_json(record, query_doc(record, None), true, false)
    }

    /// Creates a system (service) conversation; returns its id and creation time.
    pub async fn admin_create_system_conversation(
        &self,
        app_id: &str,
        attrs: Map<String, Value>,
    ) -> Result<(String, i64), ProtocolError> {
        let record = self
            .admin_create_conversation(
                app_id,
                ConvKind::System,
                AdminConversation { attrs, ..Default::default() },
            )
            .await?;
        Ok((record.id, record.created_at))
    }

    /// Creates a normal conversation or a chat room as `conv start` does (without adding
    /// a caller): the same limits, the same unique lookup, `joined` and `members-joined`
    /// to every member. A unique conversation that exists is returned as it is.
    pub async fn admin_create_conversation(
        &self,
        app_id: &str,
        kind: ConvKind,
        new: AdminConversation,
    ) -> Result<ConversationRecord, ProtocolError> {
        let app = self.backend_app(app_id)?;
        let limits = &app.config.limits;
        if !new.creator.is_empty() {
            Self::valid_member_ids(&app, std::slice::from_ref(&new.creator))?;
        }
        Self::valid_member_ids(&app, &new.members)?;
        let members = match kind {
            ConvKind::Normal => distinct(new.members),
            _ => Vec::new(),
        };
        if members.len() > limits.conversation_members {
            return Err(perr(
                ErrorCode::ConversationFull,
                format!("at most {} members", limits.conversation_members),
            ));
        }
        let attrs = bounds::updated_attributes(limits, &Map::new(), &new.attrs)?;
        let store = &self.inner.store;
        let unique = (kind == ConvKind::Normal && new.unique).then(|| unique_key(&members));
        if let Some(key) = &unique
            && let Some(found) = store.find_unique(&app.config.id, key).await.map_err(store_error)?
        {
            return Ok(found);
        }
        let now = self.now();
        let record = ConversationRecord {
            app: app.config.id.clone(),
            id: ids::conversation_id(now),
            kind,
            creator: new.creator,
            members: members.clone(),
            muted: Vec::new(),
            managers: Vec::new(),
            shut_up: Vec::new(),
            blocked: Vec::new(),
            expires_at: None,
            attrs,
            unique_key: unique.clone(),
            created_at: now,
            updated_at: now,
            last_message: None,
        };
        if let Err(e) = store.create_conversation(record.clone()).await {
            // A concurrent creation of the same unique conversation wins the race.
            if let Some(key) = &unique
                && let Ok(Some(found)) = store.find_unique(&app.config.id, key).await
            {
                return Ok(found);
            }
            return Err(store_error(e));
        }
        let conv = Arc::new(Conv::from_record(&record));
        app.convs.shard(&record.id).insert(record.id.clone(), conv);
        let event = |event, list: &[String]| conv_event(event, &record.id, &record.creator, list, None, now);
        let joined = event(ConvEvent::Joined, &[]);
        let members_joined = event(ConvEvent::MembersJoined, &members);
        for member in &members {
            app.membership_changed(member, &record.id);
            self.push_to_client(&app, member, &joined);
            self.push_to_client(&app, member, &members_joined);
        }
        Ok(record)
    }

    /// Queries conversations of `kind` (`None`: every kind) as `conv query` does (the same evaluator, scan
    /// and step limits), seeing every field: the backend is no member to hide them from.
    /// `where_` `None` matches every conversation of the kind; `order` is LeanStorage's
    /// (`-updatedAt,name`), oldest created first by default.
    pub async fn admin_query_conversations(
        &self,
        app_id: &str,
        kind: Option<ConvKind>,
        where_: Option<Value>,
        order: Option<&str>,
        skip: usize,
        limit: Option<usize>,
    ) -> Result<Vec<Value>, ProtocolError> {
        let app = self.backend_app(app_id)?;
        let limits = &app.config.limits;
        let where_ = where_.unwrap_or_else(|| Value::Object(Map::new()));
        let cond = super::queries::parse_checked(limits, &where_)?;
        let mut filter = cond.scan_filter(limits.query_scan_max);
        if let Some(kind) = kind {
            if filter.kind.is_some_and(|k| k != kind) {
                return Ok(Vec::new());
            }
            filter.kind = Some(kind);
        }
        let keys = parse_sort(order.unwrap_or("createdAt"));
        let matched = self.run_query(&app, filter, Some(cond), keys, |_, doc| Some((doc, ()))).await?;
        let limit = limit.map_or(limits.query_default_limit, |l| l.min(limits.query_max_limit));
        Ok(matched
            .into_iter()
            .skip(skip)
            .take(limit)
            .map(|(record, doc, ())| result_json(&record, doc, true, false))
            .collect())
    }

    /// Updates attributes as `conv update` does (same limits, `updated` to the members);
    /// returns the update time.
    pub async fn admin_update_conversation(
        &self,
        app_id: &str,
        kinds: &[ConvKind],
        cid: &str,
        attrs: Map<String, Value>,
    ) -> Result<i64, ProtocolError> {
        let app = self.backend_app(app_id)?;
        self.backend_conv(&app, cid, kinds).await?;
        let (session, mut replies) = Self::backend_session(&app, BACKEND);
        let first = self.conv_update(&app, &session, Some(1), cid, attrs).await?;
        match backend_reply(first, &mut replies).await? {
            Reply::ConvUpdated { updated_at } => Ok(updated_at),
            _ => Err(unexpected()),
        }
    }

    /// Deletes a conversation of one of `kinds` with its members and history (LeanCloud's
    /// `DELETE /1.2/rtm/conversations/{id}`): its members' sessions forget it, those in a
    /// chat room leave it, and from then on it is unknown (4303 to operations, 4401 to
    /// sends). No push announces it: LeanCloud sent none.
    pub async fn admin_delete_conversation(
        &self,
        app_id: &str,
        kinds: &[ConvKind],
        cid: &str,
    ) -> Result<(), ProtocolError> {
        let app = self.backend_app(app_id)?;
        let conv = self.backend_conv(&app, cid, kinds).await?;
        // Serialized with membership and attribute changes of the same conversation.
        let lock = app.conv_lock(cid);
        let _guard = lock.lock().await;
        self.inner.store.delete_conversation(&app.config.id, cid).await.map_err(store_error)?;
        app.convs.shard(cid).remove(cid);
        app.conv_changed(cid);
        let (members, room) = {
            let mut state = conv.state();
            (state.members.iter().cloned().collect::<Vec<_>>(), std::mem::take(&mut state.room))
        };
        for member in &members {
            app.membership_changed(member, cid);
        }
        for session in room {
            session.rooms.lock().unwrap_or_else(|p| p.into_inner()).retain(|r| r != cid);
        }
        Ok(())
    }

    /// Adds (`add`) or removes members of a normal conversation as `conv add` / `conv
    /// remove` do (same limits, blocks and pushes); returns what the client would get
    /// and the conversation's update time.
    pub async fn admin_change_members(
        &self,
        app_id: &str,
        cid: &str,
        members: Vec<String>,
        add: bool,
    ) -> Result<(MembersResult, i64), ProtocolError> {
        let app = self.backend_app(app_id)?;
        self.backend_conv(&app, cid, &[ConvKind::Normal]).await?;
        let (session, mut replies) = Self::backend_session(&app, BACKEND);
        let change = MembersChange { cid: cid.to_owned(), members, signature: None };
        let first = if add {
            self.conv_add(&app, &session, Some(1), change).await?
        } else {
            self.conv_remove(&app, &session, Some(1), change, false).await?
        };
        let result = match backend_reply(first, &mut replies).await? {
            Reply::ConvAdded(r) | Reply::ConvRemoved(r) => r,
            _ => return Err(unexpected()),
        };
        let record = self.inner.store.conversation(&app.config.id, cid).await.map_err(store_error)?;
        Ok((result, record.map_or_else(|| self.now(), |r| r.updated_at)))
    }

    /// Members of a normal conversation, in join order.
    pub async fn admin_members(&self, app_id: &str, cid: &str) -> Result<Vec<String>, ProtocolError> {
        let app = self.backend_app(app_id)?;
        self.backend_conv(&app, cid, &[ConvKind::Normal, ConvKind::Temporary]).await?;
        let record = self.inner.store.conversation(&app.config.id, cid).await.map_err(store_error)?;
        Ok(record.map(|r| r.members).unwrap_or_default())
    }

    /// Sends a message as `m.from` through the clients' send path (ordered, stored,
    /// acknowledged after the commit, pushed to the members and to the sender's other
    /// sessions), without a membership check; returns its id and timestamp.
    pub async fn admin_send(
        &self,
        app_id: &str,
        kinds: &[ConvKind],
        cid: &str,
        m: AdminMessage,
    ) -> Result<(String, i64), ProtocolError> {
        let app = self.backend_app(app_id)?;
        Self::valid_member_ids(&app, std::slice::from_ref(&m.from))?;
        self.backend_conv(&app, cid, kinds).await?;
        let (session, mut replies) = Self::backend_session(&app, &m.from);
        let request = confab_types::DirectRequest {
            cid: cid.to_owned(),
            msg: m.msg,
            transient: m.transient,
            mentions: m.mentions,
            ..Default::default()
        };
        let first = self.send(&app, &session, Some(1), request).await?;
        match backend_reply(first, &mut replies).await? {
            Reply::MessageAck { uid, t } => Ok((uid, t)),
            _ => Err(unexpected()),
        }
    }

    /// Counts one REST call of `class` against the app's per-minute quota on this node
    /// (`rest_messages_per_minute`, …): `Err` with the limit's key and value when over it.
    pub fn admit_rest(&self, app_id: &str, class: crate::rate::RestRate) -> Result<(), (&'static str, u32)> {
        use crate::rate::RestRate;
        let Some(app) = self.app(app_id) else { return Ok(()) };
        let limits = &app.config.limits;
        let (key, limit) = match class {
            RestRate::Messages => ("rest_messages_per_minute", limits.rest_messages_per_minute),
            RestRate::SubscriberBroadcasts => {
                ("rest_subscriber_broadcasts_per_minute", limits.rest_subscriber_broadcasts_per_minute)
            }
            RestRate::AppBroadcasts => {
                ("rest_app_broadcasts_per_minute", limits.rest_app_broadcasts_per_minute)
            }
        };
        let now = self.now();
        let admitted = app.rest_rate.lock().unwrap_or_else(|p| p.into_inner()).admit_rest(class, limit, now);
        if admitted { Ok(()) } else { Err((key, limit)) }
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
        let m = AdminMessage { from: from.to_owned(), msg, ..Default::default() };
        self.admin_send(app_id, &[ConvKind::System], cid, m).await
    }

    /// Stored messages of a conversation within `range` (oldest first), read as a
    /// member's history query reads them, without the membership check.
    pub async fn admin_history(
        &self,
        app_id: &str,
        kinds: &[ConvKind],
        cid: &str,
        range: MessageRange,
    ) -> Result<Vec<StoredMessage>, ProtocolError> {
        let app = self.backend_app(app_id)?;
        self.backend_conv(&app, cid, kinds).await?;
        self.inner.store.messages(&app.config.id, cid, range).await.map_err(store_error)
    }

    /// Which of `ids` are online, as `session query` answers a client.
    pub async fn admin_online(&self, app_id: &str, ids: Vec<String>) -> Result<Vec<String>, ProtocolError> {
        let app = self.backend_app(app_id)?;
        match self.session_query(&app, ids).await {
            Reply::SessionQueryResult { online } => Ok(online),
            _ => Err(unexpected()),
        }
    }

    /// Ends every session of `client` as a login with the same tag ends another: a
    /// `session closed` push with 4115 KICKED_BY_APP, then the session is gone (its
    /// socket stays open). Returns how many sessions ended on this node; the other
    /// nodes end theirs.
    pub async fn admin_kick(&self, app_id: &str, client: &str, reason: &str) -> Result<usize, ProtocolError> {
        let app = self.backend_app(app_id)?;
        let sessions = app.presence.local_sessions(client);
        let detail = if reason.is_empty() { "kicked by the app" } else { reason };
        for session in &sessions {
            self.end_session_telling(session, perr(ErrorCode::KickedByApp, detail));
        }
        self.end_sessions_elsewhere(&app, client, perr(ErrorCode::KickedByApp, detail)).await;
        Ok(sessions.len())
    }

    /// A client's sessions on this node (at most [`CLIENT_SESSIONS_MAX`], oldest
    /// login first) and how many it has here. Other nodes' sessions are theirs to list.
    pub fn admin_client_sessions(
        &self,
        app_id: &str,
        client: &str,
    ) -> Result<(Vec<ClientSession>, usize), ProtocolError> {
        let app = self.backend_app(app_id)?;
        let mut sessions: Vec<ClientSession> = app
            .presence
            .local_sessions(client)
            .iter()
            .filter(|s| !s.is_closed())
            .map(|s| ClientSession {
                tag: s.tag.clone(),
                wire: crate::metrics::WIRES.get(usize::from(s.wire)).copied().unwrap_or(("json", "2")),
                since: s.since_ms(),
            })
            .collect();
        let total = sessions.len();
        sessions.sort_by_key(|s| s.since);
        sessions.truncate(CLIENT_SESSIONS_MAX);
        Ok((sessions, total))
    }

    /// A client's unread messages: in one conversation, or in all of them.
    pub async fn admin_unread(
        &self,
        app_id: &str,
        client: &str,
        cid: Option<&str>,
    ) -> Result<i64, ProtocolError> {
        let app = self.backend_app(app_id)?;
        // An unknown conversation is 4303, as everywhere else, not a count of 0.
        if let Some(cid) = cid {
            let kinds = [ConvKind::Normal, ConvKind::Temporary, ConvKind::Transient, ConvKind::System];
            self.backend_conv(&app, cid, &kinds).await?;
        }
        let counts = self
            .inner
            .store
            .unread(&app.config.id, client, UNREAD_MAX_CONVERSATIONS)
            .await
            .map_err(store_error)?;
        Ok(counts.iter().filter(|c| cid.is_none_or(|cid| c.cid == cid)).map(|c| c.unread).sum())
    }
}

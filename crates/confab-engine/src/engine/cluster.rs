//! One node among several: what the other nodes tell this one, and the cluster-wide
//! half of presence (device tags, who is online, kicks). A single node has no
//! [`Cluster`](crate::ports::Cluster) and none of this runs.

use super::{AppState, Engine, perr, store_error};
use crate::conversation::Conv;
use crate::outbound::SharedPush;
use crate::ports::{
    Broker, ClaimError, ClientEvent, ClusterFuture, Committed, NodeEvent, NodeEvents, SessionRef, TagClaim,
};
use crate::session::Session;
use confab_types::{ErrorCode, ProtocolError};
use std::collections::HashSet;
use std::sync::Arc;

impl NodeEvents for Engine {
    fn node_event(&self, app_id: &str, event: NodeEvent) -> ClusterFuture<'static, ()> {
        let Some(app) = self.app(app_id).cloned() else {
            return Box::pin(std::future::ready(()));
        };
        match event {
            NodeEvent::ToClient { client, push } => {
                app.local.to_client(&client, ClientEvent::Push(&SharedPush::new(push)), None);
            }
            NodeEvent::MembershipChanged { client, cid } => {
                app.local.to_client(&client, ClientEvent::MembershipChanged { cid: &cid }, None);
            }
            NodeEvent::Message {
                cid,
                members,
                prev,
                ts,
                id,
                from,
                receipt,
                push,
                inflight_max,
                recipients,
            } => {
                // This node's next position for the conversation starts past it.
                if let Some(conv) = app.convs.get(&cid) {
                    let mut state = conv.state();
                    state.last_assigned_ts = state.last_assigned_ts.max(ts);
                }
                let members: HashSet<String> = members.into_iter().collect();
                let recipients: Option<HashSet<String>> = recipients.map(|r| r.into_iter().collect());
                let push = SharedPush::live(push, members.len());
                let behind = app.local.message(&Committed {
                    cid: &cid,
                    members: &members,
                    prev,
                    ts,
                    id: &id,
                    from: &from,
                    receipt,
                    push: &push,
                    origin: None,
                    inflight_max,
                    recipients: recipients.as_ref(),
                });
                for session in behind {
                    self.catch_up(&app, session);
                }
            }
            NodeEvent::Room { cid, push, recipients, except_client } => {
                if let Some(conv) = app.convs.get(&cid) {
                    let room = conv.state().room.clone();
                    let push = SharedPush::live(push, room.len());
                    let recipients: Option<HashSet<String>> = recipients.map(|r| r.into_iter().collect());
                    // As the sending node filters its own room: only the chosen clients.
                    let chosen = |s: &Arc<Session>| {
                        recipients.as_ref().is_none_or(|r| r.contains(&*s.client_id))
                            && except_client.as_deref() != Some(&*s.client_id)
                    };
                    for s in room.iter().filter(|s| chosen(s)) {
                        s.push(push.clone());
                    }
                }
            }
            NodeEvent::AppWide { cid, push } => {
                // Nothing to do for a node with no session of the app.
                let mut any = false;
                app.presence.for_each_session(&mut |_| any = true);
                if any {
                    let engine = self.clone();
                    return Box::pin(async move { engine.app_wide_here(&app, &cid, push).await });
                }
            }
            NodeEvent::ConvChanged { cid } => {
                if let Some(conv) = app.convs.get(&cid) {
                    let engine = self.clone();
                    return Box::pin(async move { engine.reload_conv(&app, &conv).await });
                }
            }
            NodeEvent::EndSessions { client, session, error } => {
                let instance = self.inner.cluster.as_ref().map(|c| c.instance().to_owned());
                for s in app.presence.local_sessions(&client) {
                    let named = session.as_ref().is_none_or(|r| {
                        instance.as_deref() == Some(r.node.as_str()) && r.session == s.serial
                    });
                    if named {
                        self.end_session_telling(&s, error.clone());
                    }
                }
            }
        }
        Box::pin(std::future::ready(()))
    }

    fn resync(&self) -> ClusterFuture<'static, ()> {
        let engine = self.clone();
        Box::pin(async move {
            for app in engine.inner.apps.values() {
                let mut cached = Vec::new();
                app.convs.for_each(|conv| cached.push(conv.clone()));
                for conv in cached {
                    engine.reload_conv(app, &conv).await;
                }
                // A conversation gone quiet after a lost message shows no gap until its
                // next one: every session catches up now.
                let mut sessions = Vec::new();
                app.presence.for_each_session(&mut |s| sessions.push(s.clone()));
                for session in sessions {
                    engine.catch_up(app, session);
                }
            }
        })
    }
}

impl Engine {
    /// Refreshes this node's copy of a conversation another node changed: members,
    /// roles and flags as the store has them now; a deleted one leaves the cache.
    pub(crate) async fn reload_conv(&self, app: &AppState, conv: &Conv) {
        let record = match self.inner.store.conversation(&app.config.id, &conv.cid).await {
            Ok(record) => record,
            Err(e) => {
                // The next change reloads it; meanwhile the copy may be stale.
                let _ = store_error(e);
                return;
            }
        };
        let Some(record) = record else {
            app.convs.shard(&conv.cid).remove(&conv.cid);
            return;
        };
        let marks = match self.inner.store.marks(&app.config.id, &conv.cid).await {
            Ok(marks) => marks,
            Err(e) => {
                let _ = store_error(e);
                return;
            }
        };
        let left = {
            let fresh = Conv::from_record(&record);
            let fresh = fresh.state();
            let mut state = conv.state();
            state.members = fresh.members.clone();
            state.managers = fresh.managers.clone();
            state.shut_up = fresh.shut_up.clone();
            state.blocked = fresh.blocked.clone();
            state.last_assigned_ts = state.last_assigned_ts.max(fresh.last_assigned_ts);
            // Sessions of a client blocked from a chat room (on another node) leave it.
            let blocked = state.blocked.clone();
            let (left, stay): (Vec<_>, Vec<_>) =
                state.room.drain(..).partition(|s| blocked.contains(&*s.client_id));
            state.room = stay;
            left
        };
        conv.apply_marks(&marks);
        for session in left {
            session.rooms.lock().unwrap_or_else(|p| p.into_inner()).retain(|c| *c != conv.cid);
            self.room_left(app, &conv.cid, &session);
        }
    }

    /// Another node's app-wide broadcast from system conversation `cid`, for this
    /// node's sessions of clients that do not subscribe to it (by this node's copy of
    /// the conversation, loaded if it has none: the events that changed its members
    /// came before this one).
    async fn app_wide_here(&self, app: &AppState, cid: &str, push: confab_types::Push) {
        let conv = match self.conv(app, cid).await {
            Ok(Some(conv)) => conv,
            Ok(None) => {
                tracing::warn!(cid, "app-wide broadcast of a conversation this node cannot find: not pushed");
                return;
            }
            Err(e) => {
                tracing::warn!(cid, error = %e, "app-wide broadcast not pushed on this node");
                return;
            }
        };
        app.local.app_wide(cid, &SharedPush::new(push), &|c| conv.has_member(c));
    }

    fn session_ref(&self, session: &Session) -> Option<SessionRef> {
        let cluster = self.inner.cluster.as_ref()?;
        Some(SessionRef { node: cluster.instance().to_owned(), session: session.serial })
    }

    /// Registers a new session with the other nodes, and counts its client among the
    /// app's logins today on every node: a tag held elsewhere is taken
    /// (its holder, on whatever node, is told and ended) or, for a re-login, refused —
    /// once the holder's node is known to be alive: a re-login whose tag a just-killed
    /// node still holds waits for that node's liveness to lapse (see
    /// [`Cluster::claim`](crate::ports::Cluster::claim)).
    /// While the registry cannot be reached the login goes on with this node's check.
    pub(crate) async fn claim_cluster(
        &self,
        app: &AppState,
        session: &Arc<Session>,
        claim: TagClaim,
    ) -> Result<(), ProtocolError> {
        let (Some(cluster), Some(me)) = (self.inner.cluster.as_ref(), self.session_ref(session)) else {
            return Ok(());
        };
        // Counted among today's logins alongside the claim (no extra round trip).
        let day = self.now().div_euclid(super::backend::DAY_MS);
        let (claimed, ()) = tokio::join!(
            cluster.claim(&app.config.id, &session.client_id, me, session.tag.as_deref(), claim),
            cluster.count_login(&app.config.id, &session.client_id, day),
        );
        match claimed {
            Ok(displaced) => {
                for holder in displaced {
                    let error =
                        perr(ErrorCode::SessionConflict, "logged in on another device with the same tag");
                    let event = NodeEvent::EndSessions {
                        client: session.client_id.to_string(),
                        session: Some(holder),
                        error,
                    };
                    cluster.publish(&app.config.id, event);
                }
                Ok(())
            }
            Err(ClaimError::Held) => {
                Err(perr(ErrorCode::SessionConflict, "this device tag is logged in elsewhere"))
            }
            Err(ClaimError::Unavailable(e)) => {
                tracing::warn!(error = %e, "login checked on this node only: the cluster registry is unavailable");
                Ok(())
            }
        }
    }

    /// Unregisters an ended session from the other nodes' view.
    pub(crate) fn release_cluster(&self, session: &Session) {
        if let (Some(cluster), Some(me)) = (self.inner.cluster.as_ref(), self.session_ref(session)) {
            cluster.release(&session.app_id, &session.client_id, me);
        }
    }

    /// Which of `ids` have a live session on any node (this node's view when the
    /// cluster's registry cannot be reached), in the order given, without repeats.
    pub(crate) async fn online(&self, app: &AppState, ids: Vec<String>) -> Vec<String> {
        let mut seen = HashSet::new();
        let ids: Vec<String> = ids.into_iter().filter(|id| seen.insert(id.clone())).collect();
        if let Some(cluster) = &self.inner.cluster {
            if let Some(online) = cluster.online(&app.config.id, ids.clone()).await {
                let online: HashSet<String> = online.into_iter().collect();
                return ids.into_iter().filter(|id| online.contains(id) || app.is_online(id)).collect();
            }
            tracing::warn!("online check on this node only: the cluster registry is unavailable");
        }
        ids.into_iter().filter(|id| app.is_online(id)).collect()
    }

    /// Records in the cluster's view that `session` entered chat room `cid` (done when
    /// this returns, so a count on any node sees it).
    pub(crate) async fn room_joined(&self, app: &AppState, cid: &str, session: &Session) {
        if let (Some(cluster), Some(me)) = (self.inner.cluster.as_ref(), self.session_ref(session)) {
            cluster.room_join(&app.config.id, cid, &session.client_id, me).await;
        }
    }

    /// Records that `session` left chat room `cid` (not awaited).
    pub(crate) fn room_left(&self, app: &AppState, cid: &str, session: &Session) {
        if let (Some(cluster), Some(me)) = (self.inner.cluster.as_ref(), self.session_ref(session)) {
            cluster.room_leave(&app.config.id, cid, me);
        }
    }

    /// The distinct clients in chat room `cid` now, on every node (this node's when the
    /// cluster cannot be reached).
    pub(crate) async fn room_clients(&self, app: &AppState, conv: &Conv) -> Vec<String> {
        let mut clients = conv.room_clients();
        if let Some(cluster) = &self.inner.cluster {
            match cluster.room_members(&app.config.id, &conv.cid).await {
                Some(elsewhere) => {
                    for c in elsewhere {
                        if !clients.contains(&c) {
                            clients.push(c);
                        }
                    }
                }
                None => tracing::warn!("chat room members of this node only: the cluster is unreachable"),
            }
        }
        clients
    }

    /// Ends `client`'s sessions on the other nodes with `error` (a kick); when this
    /// returns, no node counts the client online any more, whenever the others act.
    pub(crate) async fn end_sessions_elsewhere(&self, app: &AppState, client: &str, error: ProtocolError) {
        if let Some(cluster) = &self.inner.cluster {
            let event = NodeEvent::EndSessions { client: client.to_owned(), session: None, error };
            cluster.publish(&app.config.id, event);
            cluster.forget_client(&app.config.id, client).await;
        }
    }
}

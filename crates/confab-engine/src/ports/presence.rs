//! The presence port: which sessions are online, with their device tags.

use crate::session::Session;
use crate::sharded::Sharded;
use std::sync::Arc;

/// How a login treats other live sessions of its client that hold its device tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagClaim {
    /// A fresh login: it takes the tag, and the holders are displaced.
    Take,
    /// A re-login after a reconnect: it keeps the tag only if nobody else holds it.
    Keep,
}

/// A re-login refused: another live session holds its device tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the device tag is held by another session")]
pub struct TagHeld;

/// Who is online: every live session of one app, by client id, with its device tag.
///
/// The single-node mode keeps the registry in this process ([`LocalPresence`]); several
/// nodes share one, where each entry also names the node its session lives on. The
/// engine never looks at sessions of other nodes directly: it reaches them through the
/// [`Broker`](super::Broker).
pub trait Presence: Send + Sync + std::fmt::Debug + 'static {
    /// Registers a session. For a tagged session the tag check and the registration are
    /// one atomic step, so two logins with the same tag cannot both win: with
    /// [`TagClaim::Take`] the other live sessions holding the tag are unregistered and
    /// returned (the caller tells and ends them); with [`TagClaim::Keep`] the login is
    /// refused while another live session holds it. Sessions of the same connection
    /// never conflict.
    fn register(&self, session: &Arc<Session>, claim: TagClaim) -> Result<Vec<Arc<Session>>, TagHeld>;
    /// Removes a session (a logout, a closed connection, a displaced login).
    fn unregister(&self, session: &Arc<Session>);
    /// Whether a client has at least one live session.
    fn is_online(&self, client: &str) -> bool;
    /// This node's sessions of `client` (a kick ends them; a cluster's broker carries the
    /// kick to the other nodes).
    fn local_sessions(&self, client: &str) -> Vec<Arc<Session>>;
    /// Calls `f` with every session registered here (a shutdown closes them all).
    fn for_each_session(&self, f: &mut dyn FnMut(&Arc<Session>));
}

/// The in-process [`Presence`]: sessions in a sharded map, so the per-message lookups
/// of different clients never wait for one lock.
#[derive(Debug, Default)]
pub struct LocalPresence {
    sessions: Sharded<Vec<Arc<Session>>>,
}

impl LocalPresence {
    /// Calls `f` with this node's sessions of `client` under their shard's lock: the
    /// per-message path walks them without copying the list. `f` must not register or
    /// unregister sessions.
    pub fn with_sessions<R>(&self, client: &str, f: impl FnOnce(&[Arc<Session>]) -> R) -> R {
        let shard = self.sessions.shard(client);
        f(shard.get(client).map_or(&[][..], Vec::as_slice))
    }

    /// A copy of this node's sessions of `client`.
    pub fn sessions_of(&self, client: &str) -> Vec<Arc<Session>> {
        self.with_sessions(client, <[Arc<Session>]>::to_vec)
    }
}

impl Presence for LocalPresence {
    fn register(&self, session: &Arc<Session>, claim: TagClaim) -> Result<Vec<Arc<Session>>, TagHeld> {
        let client = &*session.client_id;
        let mut shard = self.sessions.shard(client);
        let holds_tag = |s: &Arc<Session>| {
            session.tag.is_some() && s.tag == session.tag && s.conn.id != session.conn.id && !s.is_closed()
        };
        let held = shard.get(client).is_some_and(|list| list.iter().any(holds_tag));
        if held && claim == TagClaim::Keep {
            return Err(TagHeld);
        }
        let list = shard.entry(client.to_owned()).or_default();
        let displaced: Vec<Arc<Session>> = list.iter().filter(|s| holds_tag(s)).cloned().collect();
        list.retain(|s| !displaced.iter().any(|d| Arc::ptr_eq(d, s)));
        list.push(session.clone());
        Ok(displaced)
    }

    fn unregister(&self, session: &Arc<Session>) {
        let mut shard = self.sessions.shard(&session.client_id);
        if let Some(list) = shard.get_mut(&*session.client_id) {
            list.retain(|s| !Arc::ptr_eq(s, session));
            if list.is_empty() {
                shard.remove(&*session.client_id);
            }
        }
    }

    fn is_online(&self, client: &str) -> bool {
        self.with_sessions(client, |sessions| sessions.iter().any(|s| !s.is_closed()))
    }

    fn local_sessions(&self, client: &str) -> Vec<Arc<Session>> {
        self.sessions_of(client)
    }

    fn for_each_session(&self, f: &mut dyn FnMut(&Arc<Session>)) {
        self.sessions.for_each(|sessions| sessions.iter().for_each(&mut *f));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::outbound::ConnHandle;

    /// Connections stay open while their receivers live: the test keeps them.
    #[derive(Default)]
    struct Conns(Vec<crate::outbound::OutboundReceiver>);

    impl Conns {
        fn session(&mut self, conn: u64, client: &str, tag: Option<&str>) -> Arc<Session> {
            let (handle, rx) = ConnHandle::new(conn, None, 1 << 20);
            self.0.push(rx);
            Session::new(handle, Arc::from("app"), Arc::from(client), tag.map(str::to_owned))
        }
    }

    #[test]
    fn a_tag_is_taken_or_kept_in_one_step() {
        let presence = LocalPresence::default();
        let mut conns = Conns::default();
        let mut session = |conn, client, tag| conns.session(conn, client, tag);
        let phone = session(1, "bob", Some("mobile"));
        let pad = session(2, "bob", Some("pad"));
        let web = session(3, "bob", None);
        for s in [&phone, &pad, &web] {
            assert!(presence.register(s, TagClaim::Take).unwrap().is_empty());
        }
        // A re-login with a held tag is refused and changes nothing.
        let relogin = session(4, "bob", Some("mobile"));
        assert_eq!(presence.register(&relogin, TagClaim::Keep).unwrap_err(), TagHeld);
        assert_eq!(presence.sessions_of("bob").len(), 3);
        // A fresh login takes it: the holder is displaced and no longer registered.
        let phone2 = session(5, "bob", Some("mobile"));
        let displaced = presence.register(&phone2, TagClaim::Take).unwrap();
        assert_eq!(displaced.len(), 1);
        assert!(Arc::ptr_eq(&displaced[0], &phone));
        let ids: Vec<u64> = presence.sessions_of("bob").iter().map(|s| s.conn.id).collect();
        assert_eq!(ids, [2, 3, 5]);
        // The same connection never conflicts with itself.
        let same_conn = session(5, "bob", Some("mobile"));
        assert!(presence.register(&same_conn, TagClaim::Keep).unwrap().is_empty());
        assert!(presence.is_online("bob"));
        for s in presence.sessions_of("bob") {
            presence.unregister(&s);
        }
        assert!(!presence.is_online("bob"));
        assert!(presence.sessions_of("bob").is_empty());
    }
}

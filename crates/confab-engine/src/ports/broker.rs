//! The broker port: fan-out to the sessions of clients, wherever they are connected.

use super::cluster::{Cluster, NodeEvent};
use super::presence::{LocalPresence, Presence};
use crate::outbound::SharedPush;
use crate::session::{Inflight, Offer, Session};
use std::collections::HashSet;
use std::sync::Arc;

/// What a client's sessions are told.
#[derive(Debug, Clone, Copy)]
pub enum ClientEvent<'a> {
    /// A push with no delivery tracking: a conversation event, a receipt, an edit,
    /// unread counts, a transient message.
    Push(&'a Arc<SharedPush>),
    /// The client's membership of a conversation changed: its sessions forget their
    /// delivery state there (the next message starts them afresh).
    MembershipChanged {
        /// The conversation.
        cid: &'a str,
    },
}

/// A stored message, committed, for the sessions of its conversation's members.
#[derive(Debug, Clone, Copy)]
pub struct Committed<'a> {
    /// The conversation.
    pub cid: &'a str,
    /// Its members at the moment of delivery.
    pub members: &'a HashSet<String>,
    /// The message's position (timestamp) and its predecessor's: a session takes the
    /// message only if the predecessor is the last it was given; otherwise it is behind
    /// and its backlog replay catches up in order.
    pub prev: i64,
    /// The message's position.
    pub ts: i64,
    /// Message id.
    pub id: &'a str,
    /// Sender.
    pub from: &'a str,
    /// The sender asked for a delivery receipt.
    pub receipt: bool,
    /// The push, encoded at most once per codec for every recipient.
    pub push: &'a Arc<SharedPush>,
    /// The sending session, on this node: it does not get its own message back.
    pub origin: Option<&'a Arc<Session>>,
    /// Unacknowledged messages a session may hold before it counts as a slow consumer.
    pub inflight_max: usize,
    /// When the app's `_messageReceived` hook chose the recipients (`toPeers`), or the
    /// message is a service conversation's targeted message: only these members are
    /// pushed the message; the other members' sessions move past it without it (as the
    /// sender's own do), so it is not taken for a gap.
    pub recipients: Option<&'a HashSet<String>>,
}

/// Fan-out between the engine and every session of a client, on any node.
///
/// In one process, [`LocalBroker`] hands each delivery straight to this node's sessions:
/// no copy of the push, no encoding, the same path as a direct call. A cluster's broker
/// also publishes it to the nodes where the recipients have sessions, each of which hands
/// it to its own. Calls never wait: a broker queues what it cannot hand over at once.
pub trait Broker: Send + Sync + std::fmt::Debug + 'static {
    /// `event` for every session of `client`, except `except`.
    fn to_client(&self, client: &str, event: ClientEvent<'_>, except: Option<&Arc<Session>>);
    /// A committed message for every session of every member, except the sender's.
    /// Returns this node's sessions that turned out to be behind (a message before this
    /// one never reached them): the caller has them caught up from the store.
    fn message(&self, message: &Committed<'_>) -> Vec<Arc<Session>>;
    /// A push for the sessions in chat room `cid` on the other nodes (this node's
    /// sessions in the room are reached by the caller); with `recipients` (the app's
    /// `_messageReceived` chose them), only for the sessions of those clients.
    /// `except_client`: none of that client's sessions get it.
    fn room_elsewhere(
        &self,
        _cid: &str,
        _push: &Arc<SharedPush>,
        _recipients: Option<&HashSet<String>>,
        _except_client: Option<&str>,
    ) {
    }
    /// Conversation `cid` changed in the store: the other nodes reload their copies.
    fn conv_changed(&self, _cid: &str) {}
    /// An app-wide broadcast from system conversation `cid`: `push` for every session
    /// of the app, on every node, whose client is not a subscriber of `cid` (they get it
    /// as the conversation's message). `subscriber` says who is one, on this node;
    /// another node asks its own copy of the conversation.
    fn app_wide(&self, cid: &str, push: &Arc<SharedPush>, subscriber: &dyn Fn(&str) -> bool);
}

/// The in-process [`Broker`]: delivers to the sessions of a [`LocalPresence`].
#[derive(Debug)]
pub struct LocalBroker {
    presence: Arc<LocalPresence>,
}

impl LocalBroker {
    /// A broker for the sessions registered in `presence`.
    pub fn new(presence: Arc<LocalPresence>) -> LocalBroker {
        LocalBroker { presence }
    }
}

impl Broker for LocalBroker {
    fn to_client(&self, client: &str, event: ClientEvent<'_>, except: Option<&Arc<Session>>) {
        self.presence.with_sessions(client, |sessions| {
            for s in sessions.iter().filter(|s| !except.is_some_and(|e| Arc::ptr_eq(e, s))) {
                match event {
                    ClientEvent::Push(push) => {
                        s.push(push.clone());
                    }
                    ClientEvent::MembershipChanged { cid } => s.reset_conv(cid),
                }
            }
        });
    }

    fn message(&self, m: &Committed<'_>) -> Vec<Arc<Session>> {
        let meta =
            Inflight { id: m.id.to_owned(), from: m.from.to_owned(), receipt: m.receipt, acked: false };
        let mut behind = Vec::new();
        for member in m.members {
            // Walked under the shard lock: no per-member copy of the session list on the
            // per-message path (offering takes no shard lock).
            let chosen = m.recipients.is_none_or(|r| r.contains(member));
            self.presence.with_sessions(member, |sessions| {
                for s in sessions.iter().filter(|s| !m.origin.is_some_and(|o| Arc::ptr_eq(s, o))) {
                    if !chosen {
                        s.pass_own(m.cid, m.prev, m.ts);
                    } else if let Offer::Behind =
                        s.offer_live(m.cid, m.prev, m.ts, &meta, m.push, m.inflight_max)
                    {
                        behind.push(s.clone());
                    }
                }
            });
        }
        behind
    }

    fn app_wide(&self, _cid: &str, push: &Arc<SharedPush>, subscriber: &dyn Fn(&str) -> bool) {
        // Chosen under the shard locks, pushed after: no lock held for the whole app.
        let mut chosen = Vec::new();
        self.presence.for_each_session(&mut |s| {
            if !subscriber(&s.client_id) {
                chosen.push(s.clone());
            }
        });
        for s in chosen {
            s.push(push.clone());
        }
    }
}

/// The [`Broker`] of a node in a cluster: delivers to this node's sessions as
/// [`LocalBroker`] does, and publishes the same to the other nodes.
#[derive(Debug)]
pub struct ClusterBroker {
    app: String,
    local: LocalBroker,
    cluster: Arc<dyn Cluster>,
}

impl ClusterBroker {
    /// The broker of `app` on this node.
    pub fn new(app: &str, presence: Arc<LocalPresence>, cluster: Arc<dyn Cluster>) -> ClusterBroker {
        ClusterBroker { app: app.to_owned(), local: LocalBroker::new(presence), cluster }
    }
}

impl Broker for ClusterBroker {
    fn to_client(&self, client: &str, event: ClientEvent<'_>, except: Option<&Arc<Session>>) {
        self.local.to_client(client, event, except);
        let event = match event {
            ClientEvent::Push(push) => {
                NodeEvent::ToClient { client: client.to_owned(), push: push.push.clone() }
            }
            ClientEvent::MembershipChanged { cid } => {
                NodeEvent::MembershipChanged { client: client.to_owned(), cid: cid.to_owned() }
            }
        };
        self.cluster.publish(&self.app, event);
    }

    fn message(&self, m: &Committed<'_>) -> Vec<Arc<Session>> {
        let behind = self.local.message(m);
        self.cluster.publish(
            &self.app,
            NodeEvent::Message {
                cid: m.cid.to_owned(),
                members: m.members.iter().cloned().collect(),
                prev: m.prev,
                ts: m.ts,
                id: m.id.to_owned(),
                from: m.from.to_owned(),
                receipt: m.receipt,
                push: m.push.push.clone(),
                inflight_max: m.inflight_max,
                recipients: m.recipients.map(|r| r.iter().cloned().collect()),
            },
        );
        behind
    }

    fn room_elsewhere(
        &self,
        cid: &str,
        push: &Arc<SharedPush>,
        recipients: Option<&HashSet<String>>,
        except_client: Option<&str>,
    ) {
        let recipients = recipients.map(|r| r.iter().cloned().collect());
        let except_client = except_client.map(str::to_owned);
        self.cluster.publish(
            &self.app,
            NodeEvent::Room { cid: cid.to_owned(), push: push.push.clone(), recipients, except_client },
        );
    }

    fn conv_changed(&self, cid: &str) {
        self.cluster.publish(&self.app, NodeEvent::ConvChanged { cid: cid.to_owned() });
    }

    /// This node's sessions, then one event every other node acts on for its own: each
    /// session is pushed once, by the node holding it.
    fn app_wide(&self, cid: &str, push: &Arc<SharedPush>, subscriber: &dyn Fn(&str) -> bool) {
        self.local.app_wide(cid, push, subscriber);
        self.cluster.publish(&self.app, NodeEvent::AppWide { cid: cid.to_owned(), push: push.push.clone() });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::outbound::{ConnHandle, Outbound, OutboundReceiver};
    use crate::ports::{ClusterFuture, ClusterHub, NodeEvents, TagClaim};
    use confab_types::{DirectPush, Push};

    /// Sessions registered in one presence, each with its connection's queue.
    #[derive(Default)]
    struct Node {
        presence: Arc<LocalPresence>,
        queues: Vec<(String, OutboundReceiver)>,
    }

    impl Node {
        fn login(&mut self, client: &str) {
            let (handle, rx) = ConnHandle::new(self.queues.len() as u64 + 1, None, 1 << 20);
            let session = Session::new(handle, Arc::from("app"), Arc::from(client), None);
            self.presence.register(&session, TagClaim::Take).unwrap();
            self.queues.push((client.to_owned(), rx));
        }

        /// Pushes each session got, in login order.
        fn pushed(&mut self) -> Vec<(String, usize)> {
            let mut out = Vec::new();
            for (client, rx) in &mut self.queues {
                let mut n = 0;
                while let Some(item) = rx.try_recv() {
                    if matches!(item, Outbound::Push { .. }) {
                        n += 1;
                    }
                }
                out.push((client.clone(), n));
            }
            out
        }
    }

    fn push() -> Arc<SharedPush> {
        SharedPush::new(Push::Direct(DirectPush {
            cid: "svc".into(),
            msg: "all".into(),
            ..Default::default()
        }))
    }

    fn pushes(list: &[(&str, usize)]) -> Vec<(String, usize)> {
        list.iter().map(|(c, n)| (c.to_string(), *n)).collect()
    }

    #[test]
    fn an_app_wide_push_reaches_each_session_of_a_non_subscriber_once() {
        let mut node = Node::default();
        for client in ["alice", "sub", "alice", "bob"] {
            node.login(client);
        }
        let broker = LocalBroker::new(node.presence.clone());
        broker.app_wide("svc", &push(), &|c| c == "sub");
        assert_eq!(node.pushed(), pushes(&[("alice", 1), ("sub", 0), ("alice", 1), ("bob", 1)]));
    }

    /// Collects the events a node hears.
    struct Heard(tokio::sync::mpsc::UnboundedSender<NodeEvent>);

    impl NodeEvents for Heard {
        fn node_event(&self, _: &str, event: NodeEvent) -> ClusterFuture<'static, ()> {
            let _ = self.0.send(event);
            Box::pin(std::future::ready(()))
        }

        fn resync(&self) -> ClusterFuture<'static, ()> {
            Box::pin(std::future::ready(()))
        }
    }

    #[tokio::test]
    async fn a_cluster_broker_pushes_its_own_sessions_and_tells_the_others_once() {
        let hub = ClusterHub::new();
        let (a, b) = (hub.node("a"), hub.node("b"));
        let (tx, mut heard) = tokio::sync::mpsc::unbounded_channel();
        b.attach(Arc::new(Heard(tx)));
        let mut node = Node::default();
        node.login("alice");
        node.login("sub");
        let broker = ClusterBroker::new("app", node.presence.clone(), a);
        let push = push();
        broker.app_wide("svc", &push, &|c| c == "sub");
        assert_eq!(node.pushed(), pushes(&[("alice", 1), ("sub", 0)]));
        let event = tokio::time::timeout(std::time::Duration::from_secs(5), heard.recv()).await.unwrap();
        assert_eq!(event, Some(NodeEvent::AppWide { cid: "svc".into(), push: push.push.clone() }));
        tokio::task::yield_now().await;
        assert!(heard.try_recv().is_err(), "one event per broadcast");
    }
}

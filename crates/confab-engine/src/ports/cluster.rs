//! The cluster port: what one node tells the others, and the registry of every node's
//! sessions. A single node has none; several nodes sharing one store share one
//! [`Cluster`] (Redis in production, [`ClusterHub`] in tests).
//!
//! The store stays the source of truth: events carry pushes for sessions on other nodes
//! and tell them what changed, and a node that misses one catches up from the store (a
//! session that sees a message whose predecessor it was not given replays its backlog).

use super::presence::TagClaim;
use confab_types::{ProtocolError, Push};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// A boxed future returned by a [`Cluster`].
pub type ClusterFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One session, named so that any node can find it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionRef {
    /// The node instance holding it ([`Cluster::instance`] of that node).
    pub node: String,
    /// The session's number on that node.
    pub session: u64,
}

/// What a node tells the other nodes about one app. Each node acts on the events of
/// the others for its own sessions only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NodeEvent {
    /// A push for every session of `client`.
    ToClient {
        /// The recipient.
        client: String,
        /// What it is told.
        push: Push,
    },
    /// `client`'s membership of `cid` changed: its sessions forget their delivery state
    /// there.
    MembershipChanged {
        /// The client.
        client: String,
        /// The conversation.
        cid: String,
    },
    /// A committed message for the sessions of `members`.
    Message {
        /// The conversation.
        cid: String,
        /// Its members when it was committed.
        members: Vec<String>,
        /// The predecessor's position.
        prev: i64,
        /// The message's position.
        ts: i64,
        /// Message id.
        id: String,
        /// Sender.
        from: String,
        /// The sender asked for a delivery receipt.
        receipt: bool,
        /// The push.
        push: Push,
        /// Unacknowledged messages a session may hold before it counts as slow.
        inflight_max: usize,
        /// The members the app's `_messageReceived` hook chose (`toPeers`), when it
        /// chose, or a targeted message's recipients: the other members' sessions move
        /// past the message without it. Absent in events of nodes that predate hooks,
        /// which meant every member.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recipients: Option<Vec<String>>,
    },
    /// A push for the sessions in chat room `cid`.
    Room {
        /// The chat room.
        cid: String,
        /// What they are told.
        push: Push,
        /// Only the sessions of these clients, when the app's `_messageReceived` hook
        /// chose them (`toPeers`). Absent in events of nodes that predate hooks, which
        /// meant every session in the room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recipients: Option<Vec<String>>,
        /// None of this client's sessions: the sender of a message the app's backend
        /// sent in its name (LeanCloud's REST does not echo it). Absent in events of
        /// older nodes, which echoed it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        except_client: Option<String>,
    },
    /// An app-wide broadcast from system conversation `cid`: a push for every session
    /// of the app whose client is not a subscriber (a member) of `cid` — subscribers
    /// get it once, as a message of the conversation (a [`NodeEvent::Message`]).
    AppWide {
        /// The system conversation it was sent from.
        cid: String,
        /// What they are told.
        push: Push,
    },
    /// Conversation `cid` changed in the store (members, roles, flags, or it is gone):
    /// a node holding a copy reloads it.
    ConvChanged {
        /// The conversation.
        cid: String,
    },
    /// End sessions of `client` with `error`: the one at `session`, or every one of
    /// them (a kick) when `session` is `None`.
    EndSessions {
        /// The client.
        client: String,
        /// One session, or all.
        session: Option<SessionRef>,
        /// What the session is told.
        error: ProtocolError,
    },
}

/// An app's numbers across every node (`GET /1.2/rtm/stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AppCounts {
    /// Distinct clients with a session registered on any node (a node killed without
    /// warning may still count until the implementation purges its registrations).
    pub online: u64,
    /// Distinct clients that logged in on any node during the day asked for (an
    /// estimate where the implementation says so).
    pub today: u64,
}

/// Why a [`Cluster::claim`] did not register the session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// A re-login's device tag is held by a live session elsewhere.
    #[error("the device tag is held by another session")]
    Held,
    /// The registry cannot be reached; the login goes on with the local check only.
    #[error("cluster registry unavailable: {0}")]
    Unavailable(String),
}

/// The nodes of a cluster, as one node sees them. Calls never block on the network
/// for longer than the implementation's timeout; `publish` never waits.
pub trait Cluster: Send + Sync + std::fmt::Debug + 'static {
    /// This node's instance: unique per process start, so a restarted node never
    /// mistakes an old registration for one of its own.
    fn instance(&self) -> &str;
    /// Whether the other nodes are reachable now (`/healthz` answers 503 while not).
    fn is_healthy(&self) -> bool {
        true
    }
    /// Tells the other nodes.
    fn publish(&self, app: &str, event: NodeEvent);
    /// Registers a session of `client` cluster-wide. For a tagged session the tag check
    /// and the registration are one atomic step across nodes: with [`TagClaim::Take`]
    /// the live sessions elsewhere holding the tag are unregistered and returned (the
    /// caller ends them); with [`TagClaim::Keep`] the login is refused while one holds it.
    /// A holder on a node that may have died without a word (its liveness not yet
    /// lapsed) is waited for, boundedly, rather than refused: the re-login is likely its
    /// own client coming back through another node.
    fn claim<'a>(
        &'a self,
        app: &'a str,
        client: &'a str,
        session: SessionRef,
        tag: Option<&'a str>,
        claim: TagClaim,
    ) -> ClusterFuture<'a, Result<Vec<SessionRef>, ClaimError>>;
    /// Unregisters a session (never waits).
    fn release(&self, app: &str, client: &str, session: SessionRef);
    /// Unregisters every session of `client` on every node (a kick); done when it
    /// resolves.
    fn forget_client<'a>(&'a self, app: &'a str, client: &'a str) -> ClusterFuture<'a, ()>;
    /// Spends a signature's nonce for `ttl_ms`: `Some(true)` the first time any node
    /// spends it, `Some(false)` afterwards (a replay), `None` when the registry cannot
    /// be reached.
    fn spend_nonce<'a>(
        &'a self,
        app: &'a str,
        nonce: &'a str,
        ttl_ms: u64,
    ) -> ClusterFuture<'a, Option<bool>>;
    /// Records that `session` (of `client`) is in chat room `cid`; done when it resolves.
    fn room_join<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        client: &'a str,
        session: SessionRef,
    ) -> ClusterFuture<'a, ()>;
    /// Records that `session` left chat room `cid` (never waits).
    fn room_leave(&self, app: &str, cid: &str, session: SessionRef);
    /// The distinct clients in chat room `cid` on live nodes (`None`: the registry
    /// cannot be reached).
    fn room_members<'a>(&'a self, app: &'a str, cid: &'a str) -> ClusterFuture<'a, Option<Vec<String>>>;
    /// Which of `clients` have a live session on any node (`None`: the registry cannot
    /// be reached).
    fn online<'a>(&'a self, app: &'a str, clients: Vec<String>) -> ClusterFuture<'a, Option<Vec<String>>>;
    /// Counts `client` among the distinct clients of `app` that logged in on `day`
    /// (days since the Unix epoch, UTC); done when it resolves. A failure is logged and
    /// the login goes on (it is counted on its node only).
    fn count_login<'a>(&'a self, app: &'a str, client: &'a str, day: i64) -> ClusterFuture<'a, ()>;
    /// The app's distinct clients online now (see [`AppCounts::online`]), and those that
    /// logged in on `day` on any node (`None`: the registry cannot be reached). Called
    /// often (a console polls it): its cost should not grow with the clients online.
    fn app_counts<'a>(&'a self, app: &'a str, day: i64) -> ClusterFuture<'a, Option<AppCounts>>;
}

/// Where a node's incoming events go: the engine of that node.
pub trait NodeEvents: Send + Sync + 'static {
    /// An event another node published for `app`. The caller awaits each before the
    /// next, so a conversation's reload finishes before the events that follow it.
    fn node_event(&self, app: &str, event: NodeEvent) -> ClusterFuture<'static, ()>;
    /// Events may have been lost (a subscription was lost and is back): reload
    /// everything kept from the store, as if every conversation had changed.
    fn resync(&self) -> ClusterFuture<'static, ()>;
}

/// An in-process [`Cluster`]: several engines in one process, each a node, sharing one
/// registry and one event bus. The engine's cross-node rules are tested on it; events
/// reach the other nodes in publish order, as Redis PUB/SUB delivers them.
#[derive(Debug, Default)]
pub struct ClusterHub {
    state: Mutex<HubState>,
}

/// A client's registered sessions, each with its device tag.
type Registered = Vec<(SessionRef, Option<String>)>;

#[derive(Default)]
struct HubState {
    /// Every node's event queue.
    nodes: Vec<(String, tokio::sync::mpsc::UnboundedSender<(String, NodeEvent)>)>,
    /// Registered sessions: (app, client) -> sessions with their tags.
    sessions: std::collections::HashMap<(String, String), Registered>,
    /// Spent signature nonces, by app.
    nonces: std::collections::HashSet<(String, String)>,
    /// Chat rooms: (app, cid) -> sessions in the room with their clients.
    rooms: std::collections::HashMap<(String, String), Vec<(SessionRef, String)>>,
    /// Logins counted: (app, day, client).
    logins: std::collections::HashSet<(String, i64, String)>,
}

impl std::fmt::Debug for HubState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubState").field("nodes", &self.nodes.len()).finish()
    }
}

impl ClusterHub {
    /// A new, empty hub.
    pub fn new() -> Arc<ClusterHub> {
        Arc::new(ClusterHub::default())
    }

    /// A node named `instance`; its events are handed to `events` once it is attached.
    pub fn node(self: &Arc<Self>, instance: &str) -> Arc<HubNode> {
        Arc::new(HubNode { hub: self.clone(), instance: instance.to_owned(), queue: Mutex::new(None) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One node of a [`ClusterHub`].
#[derive(Debug)]
pub struct HubNode {
    hub: Arc<ClusterHub>,
    instance: String,
    queue: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl HubNode {
    /// Starts handing the other nodes' events to `events`, in order (on a task of the
    /// current tokio runtime).
    pub fn attach(&self, events: Arc<dyn NodeEvents>) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, NodeEvent)>();
        self.hub.lock().nodes.push((self.instance.clone(), tx));
        let task = tokio::spawn(async move {
            while let Some((app, event)) = rx.recv().await {
                events.node_event(&app, event).await;
            }
        });
        *self.queue.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
    }

    /// Stops the node as a crash would: it hears nothing more, and its registrations
    /// are gone (its liveness expired).
    pub fn kill(&self) {
        let mut hub = self.hub.lock();
        hub.nodes.retain(|(name, _)| *name != self.instance);
        for list in hub.sessions.values_mut() {
            list.retain(|(s, _)| s.node != self.instance);
        }
        for room in hub.rooms.values_mut() {
            room.retain(|(s, _)| s.node != self.instance);
        }
        if let Some(task) = self.queue.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

impl Cluster for HubNode {
    fn instance(&self) -> &str {
        &self.instance
    }

    fn publish(&self, app: &str, event: NodeEvent) {
        for (name, tx) in &self.hub.lock().nodes {
            if *name != self.instance {
                let _ = tx.send((app.to_owned(), event.clone()));
            }
        }
    }

    fn claim<'a>(
        &'a self,
        app: &'a str,
        client: &'a str,
        session: SessionRef,
        tag: Option<&'a str>,
        claim: TagClaim,
    ) -> ClusterFuture<'a, Result<Vec<SessionRef>, ClaimError>> {
        let mut hub = self.hub.lock();
        let list = hub.sessions.entry((app.to_owned(), client.to_owned())).or_default();
        let holds = |(s, t): &(SessionRef, Option<String>)| {
            tag.is_some() && t.as_deref() == tag && *s != session && s.node != session.node
        };
        let result = if claim == TagClaim::Keep && list.iter().any(holds) {
            Err(ClaimError::Held)
        } else {
            let displaced: Vec<SessionRef> =
                list.iter().filter(|e| holds(e)).map(|(s, _)| s.clone()).collect();
            list.retain(|e| !holds(e) && e.0 != session);
            list.push((session, tag.map(str::to_owned)));
            Ok(displaced)
        };
        Box::pin(std::future::ready(result))
    }

    fn release(&self, app: &str, client: &str, session: SessionRef) {
        let mut hub = self.hub.lock();
        if let Some(list) = hub.sessions.get_mut(&(app.to_owned(), client.to_owned())) {
            list.retain(|(s, _)| *s != session);
        }
    }

    fn room_join<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        client: &'a str,
        session: SessionRef,
    ) -> ClusterFuture<'a, ()> {
        let mut hub = self.hub.lock();
        hub.rooms.entry((app.to_owned(), cid.to_owned())).or_default().push((session, client.to_owned()));
        Box::pin(std::future::ready(()))
    }

    fn room_leave(&self, app: &str, cid: &str, session: SessionRef) {
        if let Some(room) = self.hub.lock().rooms.get_mut(&(app.to_owned(), cid.to_owned())) {
            room.retain(|(s, _)| *s != session);
        }
    }

    fn room_members<'a>(&'a self, app: &'a str, cid: &'a str) -> ClusterFuture<'a, Option<Vec<String>>> {
        let hub = self.hub.lock();
        let mut clients: Vec<String> = Vec::new();
        for (_, client) in hub.rooms.get(&(app.to_owned(), cid.to_owned())).into_iter().flatten() {
            if !clients.contains(client) {
                clients.push(client.clone());
            }
        }
        Box::pin(std::future::ready(Some(clients)))
    }

    fn spend_nonce<'a>(
        &'a self,
        app: &'a str,
        nonce: &'a str,
        _ttl_ms: u64,
    ) -> ClusterFuture<'a, Option<bool>> {
        let fresh = self.hub.lock().nonces.insert((app.to_owned(), nonce.to_owned()));
        Box::pin(std::future::ready(Some(fresh)))
    }

    fn forget_client<'a>(&'a self, app: &'a str, client: &'a str) -> ClusterFuture<'a, ()> {
        self.hub.lock().sessions.remove(&(app.to_owned(), client.to_owned()));
        Box::pin(std::future::ready(()))
    }

    fn online<'a>(&'a self, app: &'a str, clients: Vec<String>) -> ClusterFuture<'a, Option<Vec<String>>> {
        let hub = self.hub.lock();
        let online = clients
            .into_iter()
            .filter(|c| hub.sessions.get(&(app.to_owned(), c.clone())).is_some_and(|l| !l.is_empty()))
            .collect();
        Box::pin(std::future::ready(Some(online)))
    }

    fn count_login<'a>(&'a self, app: &'a str, client: &'a str, day: i64) -> ClusterFuture<'a, ()> {
        self.hub.lock().logins.insert((app.to_owned(), day, client.to_owned()));
        Box::pin(std::future::ready(()))
    }

    fn app_counts<'a>(&'a self, app: &'a str, day: i64) -> ClusterFuture<'a, Option<AppCounts>> {
        let hub = self.hub.lock();
        let online = hub.sessions.iter().filter(|((a, _), list)| a == app && !list.is_empty()).count();
        let today = hub.logins.iter().filter(|(a, d, _)| a == app && *d == day).count();
        Box::pin(std::future::ready(Some(AppCounts { online: online as u64, today: today as u64 })))
    }
}

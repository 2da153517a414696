//! The engine: apps, their live state, and what every feature shares. One module per
//! feature adds its requests to [`Engine`] (or, for the session's own lifecycle, to
//! [`Connection`]); `dispatch` routes each decoded request to one of them.
//!
//! - `dispatch`: [`Connection`], rate limits and the request router;
//! - `login`: session open, refresh, close, presence;
//! - `membership`: start, add, remove, join and leave;
//! - `attributes`: attribute updates and muting;
//! - `queries`: conversation queries and member counts;
//! - `history`: message history;
//! - `delivery`: sending, ordered fan-out, acks and the offline backlog;
//! - `receipts`: read positions, unread counts and receipts;
//! - `edits`: edits and recalls;
//! - `moderation`: roles, shut-up and blocking;
//! - `hooks`: the app's blocking and notifying hooks, and the outbox worker;
//! - `admin`, `backend`: the app backend's operations (the REST API).

mod admin;
mod attributes;
mod backend;
mod classes;
mod cluster;
pub(crate) mod delivery;
mod dispatch;
mod edits;
mod history;
mod hooks;
mod login;
mod membership;
mod moderation;
mod queries;
mod receipts;

pub use admin::{AdminConversation, AdminMessage, CLIENT_SESSIONS_MAX, ClientSession};
pub use backend::{
    AdminPatch, MemberRole, SILENCE_MAX_SECS, TARGETED_RECIPIENTS_MAX, TargetedMessage, member_info_id,
};
pub use classes::{ClassQuery, ImClass, ScanPage};
pub use dispatch::Connection;
pub use edits::RECALLED_BODY;
pub use hooks::{OUTBOX_GIVE_UP_MS, SignRefusal};

use crate::app::AppConfig;
use crate::bounds;
use crate::conversation::{Conv, query_doc, result_json, unique_key};
use crate::ids;
use crate::metrics::Protocol;
use crate::outbound::{ConnHandle, Next, Outbound, OutboundReceiver, SharedPush};
use crate::ports::{
    Broker, ClientEvent, Clock, Cluster, ClusterBroker, ConvKind, ConversationRecord, HookCaller,
    LocalBroker, LocalPresence, MessageRange, Presence, ScanFilter, Store, StoreError,
};
use crate::query::{Budget, QueryBounds, QueryError, compare_docs, parse_sort, parse_where};
use crate::rate::RateClass;
use crate::session::Session;
use crate::session_token;
use crate::sharded::Sharded;
use crate::signature::{Signed, Verifier};
use confab_types::{
    ConvEvent, ConvPush, ConvQuery, ConvStart, Direction, ErrorCode, Inbound, LogItem, LogsQuery,
    MemberFailure, MembersChange, MembersResult, ProtocolError, Push, Reply, Request, SessionOpen, Signature,
    UnreadEntry,
};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// How long a scrape of `/metrics` waits for the store (its health and the hook
/// outbox's count) before it answers without them.
pub const METRICS_STORE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A conversation event, as one push for all its recipients: its content is the same
/// for each of them (the framing adds the recipient), so it is built and encoded once.
fn conv_event(
    event: ConvEvent,
    cid: &str,
    init_by: &str,
    members: &[String],
    attr: Option<&Map<String, Value>>,
    udate: i64,
) -> Arc<SharedPush> {
    SharedPush::new(Push::Conv(ConvPush {
        event,
        cid: cid.to_owned(),
        init_by: init_by.to_owned(),
        members: members.to_vec(),
        attr: attr.cloned(),
        role: None,
        udate,
    }))
}

/// One app's live state.
#[derive(Debug)]
pub struct AppState {
    /// Configuration.
    pub config: AppConfig,
    /// Who is online (the live sessions, with their device tags).
    pub(crate) presence: Arc<dyn Presence>,
    /// Fan-out to the sessions of clients.
    pub(crate) broker: Arc<dyn Broker>,
    /// Fan-out to this node's sessions only: where other nodes' events go.
    pub(crate) local: LocalBroker,
    /// Cached conversations by id.
    pub(crate) convs: Sharded<Arc<Conv>>,
    /// Serializes membership and attribute changes per conversation.
    pub(crate) conv_ops: Sharded<Arc<tokio::sync::Mutex<()>>>,
    /// Distinct clients that logged in today (`GET /1.2/rtm/stats`).
    pub(crate) logins_today: backend::DailyClients,
    /// The app's REST quotas on this node, this minute.
    pub(crate) rest_rate: std::sync::Mutex<crate::rate::RateWindow>,
}

impl AppState {
    /// Whether a client has at least one live session.
    pub fn is_online(&self, client: &str) -> bool {
        self.presence.is_online(client)
    }

    /// Tells every session of `client` (except `except`) that its membership of `cid`
    /// changed.
    pub(crate) fn membership_changed(&self, client: &str, cid: &str) {
        self.broker.to_client(client, ClientEvent::MembershipChanged { cid }, None);
    }

    /// Tells the other nodes that `cid` changed in the store (members, roles, flags).
    pub(crate) fn conv_changed(&self, cid: &str) {
        self.broker.conv_changed(cid);
    }

    fn conv_lock(&self, cid: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.conv_ops.shard(cid).entry(cid.to_owned()).or_default().clone()
    }
}

pub(crate) struct Inner {
    pub apps: HashMap<String, Arc<AppState>>,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    /// The other nodes, when this node is one of several.
    pub cluster: Option<Arc<dyn Cluster>>,
    verifier: Verifier,
    /// How the apps' hook backends are reached (none: hooks are never called).
    pub hooks: Option<Arc<dyn HookCaller>>,
    /// Wakes the outbox worker when hook calls were committed.
    pub outbox_wake: Arc<tokio::sync::Notify>,
    next_conn: AtomicU64,
    /// Connections opened and not yet dropped.
    live_connections: AtomicUsize,
}

/// The engine: cheap to clone, shared by every connection.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("apps", &self.inner.apps.keys().collect::<Vec<_>>()).finish()
    }
}

/// The ids in order of first appearance, without repeats.
fn distinct(ids: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for id in ids {
        if !out.contains(&id) {
            out.push(id);
        }
    }
    out
}

fn store_error(e: StoreError) -> ProtocolError {
    tracing::error!(error = %e, "store failure");
    ProtocolError::new(ErrorCode::InternalError, "storage failure; the request may be retried")
}

fn perr(code: ErrorCode, detail: impl Into<String>) -> ProtocolError {
    ProtocolError::new(code, detail)
}

impl Engine {
    /// An engine serving `apps` on `store`, in one process: presence and fan-out are
    /// the in-process [`LocalPresence`] and [`LocalBroker`].
    pub fn new(apps: Vec<AppConfig>, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Engine {
        Engine::with_ports(apps, store, clock, None, None)
    }

    /// An engine that is one node of a cluster when `cluster` is set: fan-out also
    /// reaches the other nodes' sessions, and presence and device tags are cluster-wide.
    /// The node must be attached to the cluster's events (see [`crate::ports::NodeEvents`]).
    pub fn with_cluster(
        apps: Vec<AppConfig>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        cluster: Option<Arc<dyn Cluster>>,
    ) -> Engine {
        Engine::with_ports(apps, store, clock, cluster, None)
    }

    /// [`Engine::new`] with a way to call the apps' hook backends (`[apps.hooks]`). Start
    /// [`Engine::run_outbox`] too, or notifying hooks stay queued in the store.
    pub fn with_hooks(
        apps: Vec<AppConfig>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        hooks: Arc<dyn HookCaller>,
    ) -> Engine {
        Engine::with_ports(apps, store, clock, None, Some(hooks))
    }

    /// An engine with every optional port: one node of a cluster when `cluster` is set
    /// (see [`Engine::with_cluster`]), calling the apps' hook backends when `hooks` is
    /// set (see [`Engine::with_hooks`]).
    pub fn with_ports(
        apps: Vec<AppConfig>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        cluster: Option<Arc<dyn Cluster>>,
        hooks: Option<Arc<dyn HookCaller>>,
    ) -> Engine {
        let apps = apps
            .into_iter()
            .map(|config| {
                let id = config.id.clone();
                let presence = Arc::new(LocalPresence::default());
                let broker: Arc<dyn Broker> = match &cluster {
                    Some(cluster) => Arc::new(ClusterBroker::new(&id, presence.clone(), cluster.clone())),
                    None => Arc::new(LocalBroker::new(presence.clone())),
                };
                let state = AppState {
                    config,
                    broker,
                    local: LocalBroker::new(presence.clone()),
                    presence,
                    convs: Sharded::default(),
                    conv_ops: Sharded::default(),
                    logins_today: backend::DailyClients::default(),
                    rest_rate: std::sync::Mutex::default(),
                };
                (id, Arc::new(state))
            })
            .collect();
        Engine {
            inner: Arc::new(Inner {
                apps,
                store,
                clock,
                cluster,
                verifier: Verifier::default(),
                hooks,
                outbox_wake: Arc::new(tokio::sync::Notify::new()),
                next_conn: AtomicU64::new(1),
                live_connections: AtomicUsize::new(0),
            }),
        }
    }

    /// Whether the store answers now ([`Store::health`]); `/healthz` reports it.
    pub async fn store_health(&self) -> Result<(), StoreError> {
        self.inner.store.health().await
    }

    /// Whether this node reaches the rest of its cluster (always, for a single node);
    /// `/healthz` reports it.
    pub fn cluster_health(&self) -> bool {
        self.inner.cluster.as_ref().is_none_or(|c| c.is_healthy())
    }

    /// Connections opened and not yet ended.
    pub fn live_connections(&self) -> usize {
        self.inner.live_connections.load(Ordering::Relaxed)
    }

    /// The Prometheus exposition text of the process's [`crate::metrics::METRICS`],
    /// with the gauges read from this engine's live state: sessions, store and broker
    /// health, and the hook outbox (counted up to [`crate::metrics::OUTBOX_DEPTH_MAX`]
    /// rows, given [`METRICS_STORE_WAIT`] to answer; the gauge has no sample when the
    /// store does not answer in time).
    pub async fn metrics_text(&self) -> String {
        let store_up = tokio::time::timeout(METRICS_STORE_WAIT, self.store_health()).await;
        let store_up = matches!(store_up, Ok(Ok(())));
        let outbox = self.inner.store.outbox_len(crate::metrics::OUTBOX_DEPTH_MAX);
        let hook_outbox = match tokio::time::timeout(METRICS_STORE_WAIT, outbox).await {
            Ok(Ok(n)) => Some(n),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "metrics: hook outbox not counted");
                None
            }
            Err(_) => None,
        };
        let snapshot = crate::metrics::Snapshot {
            sessions: self.sessions_by_wire(None),
            store_up,
            broker_up: self.cluster_health(),
            hook_outbox,
        };
        crate::metrics::METRICS.render(snapshot)
    }

    /// This node's open sessions by [`crate::metrics::WIRES`] entry: of one app, or of
    /// every app. One pass over the sessions.
    pub fn sessions_by_wire(&self, app: Option<&str>) -> [usize; crate::metrics::WIRES.len()] {
        let mut counts = [0; crate::metrics::WIRES.len()];
        for state in self.inner.apps.values().filter(|a| app.is_none_or(|id| a.config.id == id)) {
            state.presence.for_each_session(&mut |s| {
                if let Some(n) = counts.get_mut(usize::from(s.wire)) {
                    *n += 1;
                }
            });
        }
        counts
    }

    /// Asks every connection with a session to close with `reason` (a shutdown): each
    /// writes what it has queued, then its Close frame.
    pub fn close_all(&self, reason: &ProtocolError) {
        for app in self.inner.apps.values() {
            app.presence.for_each_session(&mut |session| session.conn.close(reason.clone()));
        }
    }

    /// An app's state.
    pub fn app(&self, id: &str) -> Option<&Arc<AppState>> {
        self.inner.apps.get(id)
    }

    /// Every app.
    pub fn apps(&self) -> impl Iterator<Item = &AppConfig> {
        self.inner.apps.values().map(|a| &a.config)
    }

    pub(crate) fn now(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// The engine's clock, in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        self.now()
    }

    /// Starts serving a connection. The receiver is the connection's outbound queue,
    /// bounded by the largest `outbound_queue_bytes` limit of any app.
    ///
    /// `version` is the protocol version the client negotiated: 1 and 2 (the v2 JSON
    /// protocol) have their offline backlog pushed on login; 3 gets unread counts instead
    /// and reads history itself. Version 2 has no roles (see `conv_remove`).
    pub fn open_connection(&self, origin: Option<String>, version: u8) -> (Connection, OutboundReceiver) {
        let budget = self.inner.apps.values().map(|a| a.config.limits.outbound_queue_bytes).max();
        let budget = budget.unwrap_or_else(|| confab_types::Limits::default().outbound_queue_bytes);
        let id = self.inner.next_conn.fetch_add(1, Ordering::Relaxed);
        let (handle, rx) = ConnHandle::new(id, origin, budget);
        self.inner.live_connections.fetch_add(1, Ordering::Relaxed);
        let mut connection = Connection {
            engine: self.clone(),
            handle,
            sessions: Vec::new(),
            push_offline: version < 3,
            v2: version == 2,
            wire: 0,
        };
        // The gateway names the framing (binary or base64) with `set_protocol`.
        let protocol = if version == 2 { Protocol::Json } else { Protocol::Protobuf };
        connection.set_protocol(protocol, version);
        (connection, rx)
    }

    /// A conversation from the cache, loading it from the store on first use.
    pub(crate) async fn conv(&self, app: &AppState, cid: &str) -> Result<Option<Arc<Conv>>, ProtocolError> {
        if let Some(conv) = app.convs.get(cid) {
            return Self::unexpired(conv, self.now()).map(Some);
        }
        let Some(record) = self.inner.store.conversation(&app.config.id, cid).await.map_err(store_error)?
        else {
            return Ok(None);
        };
        let loaded = Arc::new(Conv::from_record(&record));
        let marks = self.inner.store.marks(&app.config.id, cid).await.map_err(store_error)?;
        loaded.apply_marks(&marks);
        let conv = app.convs.shard(cid).entry(cid.to_owned()).or_insert(loaded).clone();
        Self::unexpired(conv, self.now()).map(Some)
    }

    fn unexpired(conv: Arc<Conv>, now: i64) -> Result<Arc<Conv>, ProtocolError> {
        match conv.expires_at {
            Some(expires) if expires <= now => {
                Err(perr(ErrorCode::TemporaryConversationExpired, "temporary conversation expired"))
            }
            _ => Ok(conv),
        }
    }

    /// Queues a push to every online session of `client`.
    pub(crate) fn push_to_client(&self, app: &AppState, client: &str, push: &Arc<SharedPush>) {
        app.broker.to_client(client, ClientEvent::Push(push), None);
    }

    /// Sends one push to every online session of each recipient.
    fn push_to_clients<'r>(
        &self,
        app: &AppState,
        recipients: impl IntoIterator<Item = &'r String>,
        push: &Arc<SharedPush>,
    ) {
        for recipient in recipients {
            self.push_to_client(app, recipient, push);
        }
    }

    /// Verifies a signature and spends its nonce, on every node: a nonce another node
    /// saw within the window is a replay too.
    async fn check_signature(
        &self,
        app: &AppState,
        client: &str,
        op: Signed<'_>,
        sig: Option<&Signature>,
        code: ErrorCode,
    ) -> Result<(), ProtocolError> {
        let c = &app.config;
        self.inner
            .verifier
            .check(&c.id, &c.master_key, client, op, sig, self.now(), c.signatures.window_secs)
            .map_err(|p| perr(code, p.detail()))?;
        if let (Some(cluster), Some(sig)) = (&self.inner.cluster, sig) {
            let ttl_ms = c.signatures.window_secs.saturating_mul(2000).max(1000);
            match cluster.spend_nonce(&c.id, &sig.nonce, ttl_ms).await {
                Some(true) => {}
                Some(false) => return Err(perr(code, "signature nonce already used")),
                None => {
                    tracing::warn!("signature nonce checked on this node only: the cluster is unreachable")
                }
            }
        }
        Ok(())
    }
}

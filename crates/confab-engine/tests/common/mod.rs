//! The test harness of the engine's rule tests: an [`Engine`] on the in-memory store
//! and a manual clock, driven through [`Connection::handle`] as the gateway drives it,
//! with each connection's outbound queue read directly.
#![allow(clippy::unwrap_used, missing_docs, dead_code)]

use confab_engine::ports::{Cluster, ClusterHub, HubNode, ManualClock};
use confab_engine::{AppConfig, Connection, Engine, Next, Outbound, OutboundReceiver};
use confab_store_memory::MemoryStore;
use confab_types::{
    AckRequest, ConvStart, DirectPush, DirectRequest, Inbound, Limits, ProtocolError, Push, Reply, Request,
    SessionOpen,
};
use std::sync::Arc;
use std::time::Duration;

pub const APP: &str = "app";
pub const T0: i64 = 1_800_000_000_000;

pub struct World {
    pub engine: Engine,
    pub clock: Arc<ManualClock>,
    pub store: Arc<MemoryStore>,
}

impl World {
    pub fn new() -> World {
        World::with_limits(Limits::default())
    }

    pub fn with_limits(limits: Limits) -> World {
        let mut app = AppConfig::new(APP, "key", "master");
        app.limits = limits;
        let clock = Arc::new(ManualClock::at(T0));
        let store = Arc::new(MemoryStore::new());
        let engine = Engine::new(vec![app], store.clone(), clock.clone());
        World { engine, clock, store }
    }

    /// `n` nodes of one cluster: engines sharing one store and one [`ClusterHub`], their
    /// clocks apart. Must run inside a tokio runtime (each node's events run on a task).
    pub fn cluster(n: usize) -> (Vec<World>, Vec<Arc<HubNode>>) {
        let hub = ClusterHub::new();
        let store = Arc::new(MemoryStore::new());
        let mut worlds = Vec::new();
        let mut nodes = Vec::new();
        for i in 0..n {
            let node = hub.node(&format!("node-{i}"));
            let clock = Arc::new(ManualClock::at(T0));
            let cluster: Arc<dyn Cluster> = node.clone();
            let app = AppConfig::new(APP, "key", "master");
            let engine = Engine::with_cluster(vec![app], store.clone(), clock.clone(), Some(cluster));
            node.attach(Arc::new(engine.clone()));
            worlds.push(World { engine, clock, store: store.clone() });
            nodes.push(node);
        }
        (worlds, nodes)
    }

    /// A connection of protocol `version` (1: offline backlog pushed on login).
    pub fn connect(&self, version: u8) -> Peer {
        let (conn, rx) = self.engine.open_connection(None, version);
        Peer { conn, rx, serial: 0, replies: Vec::new(), pushes: Vec::new() }
    }

    /// A logged-in client on a version-1 connection.
    pub async fn login(&self, client: &str) -> Peer {
        let mut peer = self.connect(1);
        let reply = peer.open(client, SessionOpen { app_id: APP.into(), ..SessionOpen::default() }).await;
        assert!(matches!(reply, Ok(Reply::SessionOpened { .. })), "{reply:?}");
        peer
    }
}

/// One connection: what the gateway would have written to it, split into replies (by
/// serial) and pushes.
pub struct Peer {
    pub conn: Connection,
    pub rx: OutboundReceiver,
    pub serial: i32,
    pub replies: Vec<(Option<i32>, Reply)>,
    pub pushes: Vec<Push>,
}

impl Peer {
    pub fn take_queued(&mut self) {
        while let Some(item) = self.rx.try_recv() {
            self.file(item);
        }
    }

    pub fn file(&mut self, item: Outbound) {
        match item {
            Outbound::Reply { serial, reply } => self.replies.push((serial, *reply)),
            Outbound::Push { push, .. } => self.pushes.push(push.push.clone()),
            Outbound::Ping => {}
        }
    }

    /// Waits (in virtual terms: until the engine's tasks have run) for an item.
    pub async fn wait_for_item(&mut self) -> bool {
        match tokio::time::timeout(Duration::from_secs(5), self.rx.recv()).await {
            Ok(Next::Item(item)) => {
                self.file(item);
                true
            }
            _ => false,
        }
    }

    /// Sends a request as the gateway does and returns its reply, however it travels
    /// (returned, or queued by the engine ahead of the pushes that follow it).
    pub async fn request(&mut self, request: Request) -> Result<Reply, ProtocolError> {
        self.serial += 1;
        let serial = Some(self.serial);
        self.request_with(serial, None, request).await
    }

    pub async fn request_with(
        &mut self,
        serial: Option<i32>,
        peer_id: Option<String>,
        request: Request,
    ) -> Result<Reply, ProtocolError> {
        assert!(self.conn.handle(Inbound { serial, peer_id, request }).await, "the connection closed");
        loop {
            self.take_queued();
            if let Some(at) = self.replies.iter().position(|(s, _)| *s == serial) {
                return match self.replies.remove(at).1 {
                    Reply::Error(e) => Err(e),
                    reply => Ok(reply),
                };
            }
            assert!(self.wait_for_item().await, "no reply to request {serial:?}");
        }
    }

    pub async fn open(&mut self, client: &str, open: SessionOpen) -> Result<Reply, ProtocolError> {
        self.serial += 1;
        self.request_with(Some(self.serial), Some(client.into()), Request::SessionOpen(open)).await
    }

    pub async fn start(&mut self, members: &[&str]) -> String {
        let start =
            ConvStart { members: members.iter().map(|m| m.to_string()).collect(), ..ConvStart::default() };
        match self.request(Request::ConvStart(start)).await.unwrap() {
            Reply::ConvStarted { cid, .. } => cid,
            other => panic!("{other:?}"),
        }
    }

    pub async fn send(&mut self, direct: DirectRequest) -> Result<(String, i64), ProtocolError> {
        match self.request(Request::Direct(direct)).await? {
            Reply::MessageAck { uid, t } => Ok((uid, t)),
            other => panic!("{other:?}"),
        }
    }

    pub async fn say(&mut self, cid: &str, msg: &str) -> (String, i64) {
        self.send(DirectRequest { cid: cid.into(), msg: msg.into(), ..DirectRequest::default() })
            .await
            .unwrap()
    }

    /// Waits until `n` direct pushes have arrived and returns them all (in order).
    pub async fn messages(&mut self, n: usize) -> Vec<DirectPush> {
        loop {
            self.take_queued();
            let got: Vec<DirectPush> = self
                .pushes
                .iter()
                .filter_map(|p| match p {
                    Push::Direct(d) => Some(d.clone()),
                    _ => None,
                })
                .collect();
            if got.len() >= n {
                return got;
            }
            assert!(self.wait_for_item().await, "only {} of {n} messages arrived", got.len());
        }
    }

    /// Lets the engine's spawned tasks run, then returns the direct pushes so far.
    pub async fn settled_messages(&mut self) -> Vec<DirectPush> {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        self.messages(0).await
    }

    /// Acknowledges a message (no reply by protocol).
    pub async fn ack(&mut self, cid: &str, mid: &str) {
        let ack = AckRequest { cid: Some(cid.into()), mid: Some(mid.into()), from_ts: None, to_ts: None };
        let inbound = Inbound { serial: None, peer_id: None, request: Request::Ack(ack) };
        assert!(self.conn.handle(inbound).await, "the connection closed");
    }
}

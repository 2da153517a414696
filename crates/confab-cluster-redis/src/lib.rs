//! Confab's cluster back end on Redis: the [`Cluster`] port of the engine for several
//! nodes sharing one PostgreSQL store.
//!
//! - **Events** between nodes travel over one PUB/SUB channel, `confab:events`: every
//!   node publishes what the others must act on and hears everything, each acting for
//!   its own sessions only (three to a few nodes: every node reads all events, as
//!   Socket.IO's Redis adapter does). PUB/SUB is at most once; nothing durable travels
//!   here: a session that misses a message sees the gap at the next one and replays
//!   from the store, and after a lost subscription every node reloads what it caches.
//! - **The session registry**: per client a hash `confab:p:<app>:<client>` of
//!   `<instance>/<session>` → device tag, changed by Lua scripts so that a tag check and
//!   a registration are one atomic step across nodes. Liveness: each instance renews its
//!   score in the sorted set `confab:nodes` (its expiry, by Redis's clock) every second;
//!   a registration of an instance that stopped renewing no longer counts, and is purged.
//! - **Counts** for `GET /1.2/rtm/stats`, read in one round trip whatever the number of
//!   clients: per app a set `confab:online:<app>` of the clients with an entry in the
//!   registry, kept exact as it changes (a registration adds its client; every step that
//!   removes an entry — a session's end, a kick, the purge of a dead node, a node's
//!   clean leave — removes the client in the same script once its hash is empty), and
//!   counted with `SCARD` (each count also repairs a small batch of the set, for what a
//!   failed removal left behind); and per app and UTC day a HyperLogLog
//!   `confab:logins:<app>:<day>` of the clients that logged in (kept two days; Redis's
//!   HyperLogLog is off by 0.81 % (standard error) for large counts, exact in practice
//!   for small ones). The online count does not check liveness: the clients of a node
//!   killed without warning still count until its entries are purged, 14 s after its
//!   last renewal (its liveness, then the purge's grace; the purge runs every 5 s),
//!   where device tags and online checks stop counting them after 4 s.
//! - Redis is never the source of truth: when it restarts empty, every node registers
//!   its sessions again.

use confab_engine::ports::{
    AppCounts, ClaimError, Cluster, ClusterFuture, NodeEvent, NodeEvents, SessionRef, TagClaim,
};
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// The channel every node publishes to and hears (after the cluster's prefix).
const EVENTS: &str = "events";
/// The sorted set of node instances, scored by when their liveness expires (ms).
const NODES: &str = "nodes";
/// How often a node renews its liveness.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a node counts as live after its last renewal (ms). A node killed without
/// warning stops counting this long after. A client of it reconnecting elsewhere with
/// the same device tag (a re-login, which may not take the tag from a live session)
/// meanwhile waits for that instead of being refused (see `RedisCluster::claim`), so
/// this stays well under the 10 s a reconnecting client may take.
const LIVENESS_MS: u64 = 4000;
/// How many liveness renewals of a node holding the tag a waiting re-login must see
/// before it is refused: two, as one may have been on its way when the node died.
const RENEWALS_OF_A_LIVE_HOLDER: u32 = 2;
/// After how long past its expiry a dead node's registrations are purged (ms).
const PURGE_AFTER_MS: u64 = 10_000;
/// The longest any registry call may take before it counts as unavailable.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a day's HyperLogLog of logins is kept after its last login (s): past the
/// day it counts, so that a count at midnight by a node whose clock is behind still
/// finds it.
const LOGINS_TTL_SECS: u64 = 2 * 86_400;
/// Events waiting to be published; beyond this they are dropped (and counted): a node
/// cut off from Redis must not grow without bound, and receivers repair from the store.
const PUBLISH_QUEUE: usize = 65_536;
/// How many members of an app's online set each count checks on the way (see
/// [`COUNT_LUA`]).
const REPAIR_BATCH: u32 = 100;

/// A Redis failure.
#[derive(Debug, thiserror::Error)]
pub enum RedisClusterError {
    /// The URL is not a Redis URL.
    #[error("invalid Redis URL: {0}")]
    Url(String),
    /// Redis cannot be reached or answered with an error.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// One event on the wire: who sent it, for which app.
#[derive(Serialize, Deserialize)]
struct Envelope {
    /// The publishing instance (a node ignores its own events).
    n: String,
    /// The app.
    a: String,
    /// The event.
    e: NodeEvent,
}

/// This node's registrations, to register again after Redis lost them: sessions by
/// (app, client) with their tags, and chat-room entries by (app, room) with their clients.
type Registrations = HashMap<(String, String, SessionRef), Option<String>>;
/// This node's sessions in chat rooms: (app, room, session) -> client.
type RoomEntries = HashMap<(String, String, SessionRef), String>;
/// One field of a hash in Redis: (key, field, value).
type HashEntry = (String, String, String);

/// A node's link to the cluster through Redis. Cheap to share; its background tasks
/// run on the tokio runtime that called [`RedisCluster::connect`].
pub struct RedisCluster {
    client: redis::Client,
    conn: ConnectionManager,
    /// `confab:<cluster>:`, before every key.
    prefix: String,
    instance: String,
    publish: mpsc::Sender<(String, NodeEvent)>,
    registered: Mutex<Registrations>,
    rooms: Mutex<RoomEntries>,
    healthy: AtomicBool,
    /// Set by [`RedisCluster::leave`]: liveness is no longer renewed.
    left: AtomicBool,
    dropped: std::sync::atomic::AtomicU64,
    scripts: Scripts,
}

impl std::fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCluster").field("instance", &self.instance).finish()
    }
}

struct Scripts {
    claim: redis::Script,
    online: redis::Script,
    room: redis::Script,
    heartbeat: redis::Script,
    purge: redis::Script,
    leave: redis::Script,
    forget: redis::Script,
    count: redis::Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            claim: redis::Script::new(CLAIM_LUA),
            online: redis::Script::new(ONLINE_LUA),
            room: redis::Script::new(ROOM_LUA),
            heartbeat: redis::Script::new(HEARTBEAT_LUA),
            purge: redis::Script::new(PURGE_LUA),
            leave: redis::Script::new(LEAVE_LUA),
            forget: redis::Script::new(FORGET_LUA),
            count: redis::Script::new(COUNT_LUA),
        }
    }
}

/// Sets `now` to milliseconds by Redis's clock, so that nodes whose clocks disagree agree
/// on who is live. Every script starts with it.
macro_rules! lua_now {
    () => {
        "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    };
}

/// KEYS: the client's hash, the nodes set, this instance's key set, the app's online set.
/// ARGV: field (`instance/session`), tag (`""`: none), `take` or `keep`, the client.
/// Returns the displaced fields, or, when a re-login finds its tag held on a live node,
/// `{"held", ms until the last holder's node stops counting as live, that expiry}`.
const CLAIM_LUA: &str = concat!(
    lua_now!(),
    r#"
local field, tag, claim = ARGV[1], ARGV[2], ARGV[3]
local mine = string.match(field, '^(.*)/')
local displaced = {}
local held = nil
if tag ~= '' then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    local f, v = all[i], all[i + 1]
    local node = string.match(f, '^(.*)/')
    if f ~= field and v == tag and node ~= mine then
      local expires = redis.call('ZSCORE', KEYS[2], node)
      if expires and tonumber(expires) >= now then
        if claim == 'keep' then
          if held == nil or tonumber(expires) > held then held = tonumber(expires) end
        else
          table.insert(displaced, f)
        end
      else
        redis.call('HDEL', KEYS[1], f)
      end
    end
  end
end
if held then
  return {'held', string.format('%.0f', held - now), string.format('%.0f', held)}
end
for _, f in ipairs(displaced) do redis.call('HDEL', KEYS[1], f) end
redis.call('HSET', KEYS[1], field, tag)
redis.call('SADD', KEYS[3], KEYS[1])
redis.call('SADD', KEYS[4], ARGV[4])
return displaced
"#
);

/// KEYS: the clients' hashes, then the nodes set (last). Returns 1 or 0 per client.
const ONLINE_LUA: &str = concat!(
    lua_now!(),
    r#"
local nodes = KEYS[#KEYS]
local live = {}
local out = {}
for i = 1, #KEYS - 1 do
  local found = 0
  for _, f in ipairs(redis.call('HKEYS', KEYS[i])) do
    local node = string.match(f, '^(.*)/')
    if live[node] == nil then
      local expires = redis.call('ZSCORE', nodes, node)
      live[node] = (expires and tonumber(expires) >= now) and 1 or 0
    end
    if live[node] == 1 then found = 1 break end
  end
  out[i] = found
end
return out
"#
);

/// KEYS: a client's hash, the app's online set. ARGV: the field (`instance/session`), the
/// client. Removes the entry, and the client from the online set once it has none left.
const FORGET_LUA: &str = r#"
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[2]) end
return 0
"#;

/// KEYS: the app's online set, the nodes set, the day's HyperLogLog of logins, the
/// cursor of the online set's repair. ARGV: the prefix of the app's client hashes
/// (`…p:<app>:`), the repair's batch. Returns the size of the online set and the day's
/// estimate of logins. On the way, one batch of the online set (`SSCAN`, resuming where
/// the last count stopped) is repaired: entries of instances no longer in the nodes set
/// are dropped (they left, or were purged: nothing else removes what a failed removal
/// left behind after a clean leave, or a node of an older version that left clients in
/// the set), and a client with none left leaves the set. The cost is the batch's, not the
/// set's.
const COUNT_LUA: &str = r#"
local cursor = redis.call('GET', KEYS[4]) or '0'
local scan = redis.call('SSCAN', KEYS[1], cursor, 'COUNT', ARGV[2])
if scan[1] == '0' then redis.call('DEL', KEYS[4]) else redis.call('SET', KEYS[4], scan[1], 'EX', 86400) end
local known = {}
for _, client in ipairs(scan[2]) do
  local h = ARGV[1] .. client
  for _, f in ipairs(redis.call('HKEYS', h)) do
    local node = string.match(f, '^(.*)/') or f
    if known[node] == nil then known[node] = redis.call('ZSCORE', KEYS[2], node) and 1 or 0 end
    if known[node] == 0 then redis.call('HDEL', h, f) end
  end
  if redis.call('EXISTS', h) == 0 then redis.call('SREM', KEYS[1], client) end
end
return {redis.call('SCARD', KEYS[1]), redis.call('PFCOUNT', KEYS[3])}
"#;

/// KEYS: a chat room's hash (`instance/session` -> client), the nodes set. Returns the
/// distinct clients of its entries on live nodes.
const ROOM_LUA: &str = concat!(
    lua_now!(),
    r#"
local live = {}
local seen = {}
local out = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local node = string.match(all[i], '^(.*)/')
  if live[node] == nil then
    local expires = redis.call('ZSCORE', KEYS[2], node)
    live[node] = (expires and tonumber(expires) >= now) and 1 or 0
  end
  if live[node] == 1 and not seen[all[i + 1]] then
    seen[all[i + 1]] = true
    table.insert(out, all[i + 1])
  end
end
return out
"#
);

/// KEYS: the nodes set. ARGV: instance, liveness (ms). Returns 1 when the instance was
/// not there (Redis lost it: restarted empty, or purged it after a long outage).
const HEARTBEAT_LUA: &str = concat!(
    lua_now!(),
    r#"
return redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
"#
);

/// Lua: `purge(node, prefix)` removes every entry of instance `node` from the hashes its
/// key set `<prefix>node:<node>` names, and that set. A client hash (`<prefix>p:<app>:<client>`;
/// client ids hold no ':') left empty takes its client out of the app's online set.
macro_rules! lua_purge {
    () => {
        r#"
local function purge(node, prefix)
  local set = prefix .. 'node:' .. node
  local mine = node .. '/'
  local clients = prefix .. 'p:'
  for _, h in ipairs(redis.call('SMEMBERS', set)) do
    for _, f in ipairs(redis.call('HKEYS', h)) do
      if string.sub(f, 1, #mine) == mine then redis.call('HDEL', h, f) end
    end
    if string.sub(h, 1, #clients) == clients and redis.call('EXISTS', h) == 0 then
      local app, client = string.match(string.sub(h, #clients + 1), '^(.*):([^:]*)$')
      if app then redis.call('SREM', prefix .. 'online:' .. app, client) end
    end
  end
  redis.call('DEL', set)
end
"#
    };
}

/// KEYS: the nodes set. ARGV: grace (ms), the cluster's key prefix. Removes the
/// registrations of instances whose liveness expired more than the grace ago. Returns
/// how many instances were purged.
const PURGE_LUA: &str = concat!(
    lua_now!(),
    lua_purge!(),
    r#"
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
for _, node in ipairs(dead) do
  purge(node, ARGV[2])
  redis.call('ZREM', KEYS[1], node)
end
return #dead
"#
);

/// KEYS: the nodes set. ARGV: the instance, the cluster's key prefix. The instance leaves
/// the live set and removes its registrations (the purge only finds instances in it).
const LEAVE_LUA: &str = concat!(
    lua_purge!(),
    r#"
redis.call('ZREM', KEYS[1], ARGV[1])
purge(ARGV[1], ARGV[2])
return 0
"#
);

fn field(session: &SessionRef) -> String {
    format!("{}/{}", session.node, session.session)
}

fn parse_field(field: &str) -> Option<SessionRef> {
    let (node, session) = field.rsplit_once('/')?;
    Some(SessionRef { node: node.to_owned(), session: session.parse().ok()? })
}

impl RedisCluster {
    /// Connects to Redis at `url` as node `node` of cluster `cluster` (its instance adds
    /// a random suffix, so a restarted node is a new instance), and starts renewing its
    /// liveness. Every key and the events channel are prefixed `confab:<cluster>:`, so
    /// clusters sharing one Redis never see each other; nodes of one cluster must agree
    /// on the name (the server derives it from the database they share). Fails when
    /// Redis cannot be reached now.
    pub async fn connect(
        url: &str,
        cluster: &str,
        node: &str,
    ) -> Result<Arc<RedisCluster>, RedisClusterError> {
        let client = redis::Client::open(url).map_err(|e| RedisClusterError::Url(e.to_string()))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_max_delay(Duration::from_secs(2));
        let conn = client.get_connection_manager_with_config(config).await?;
        let mut suffix = [0u8; 4];
        getrandom::fill(&mut suffix).map_err(|e| RedisClusterError::Url(e.to_string()))?;
        let instance = format!("{node}#{}", hex::encode(suffix));
        let (publish, queue) = mpsc::channel(PUBLISH_QUEUE);
        let cluster = Arc::new(RedisCluster {
            client,
            conn,
            prefix: format!("confab:{cluster}:"),
            instance,
            publish,
            registered: Mutex::new(HashMap::new()),
            rooms: Mutex::new(HashMap::new()),
            healthy: AtomicBool::new(false),
            left: AtomicBool::new(false),
            dropped: std::sync::atomic::AtomicU64::new(0),
            scripts: Scripts::new(),
        });
        cluster.heartbeat().await?;
        cluster.healthy.store(true, Ordering::Release);
        tokio::spawn(publisher(cluster.conn.clone(), cluster.instance.clone(), cluster.key(EVENTS), queue));
        tokio::spawn(keep_alive(Arc::downgrade(&cluster)));
        Ok(cluster)
    }

    /// Starts handing the other nodes' events to `events`, in the order published.
    /// After a lost subscription it subscribes again and tells `events` to resync.
    pub fn attach(self: &Arc<Self>, events: Arc<dyn NodeEvents>) {
        tokio::spawn(subscriber(Arc::downgrade(self), events));
    }

    /// `suffix` in this cluster's key space.
    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    fn client_key(&self, app: &str, client: &str) -> String {
        self.key(&format!("p:{app}:{client}"))
    }

    /// The set of the app's clients with an entry in the registry (see the module docs).
    fn online_key(&self, app: &str) -> String {
        self.key(&format!("online:{app}"))
    }

    /// The HyperLogLog of the app's clients that logged in on `day` (days since the
    /// Unix epoch).
    fn logins_key(&self, app: &str, day: i64) -> String {
        self.key(&format!("logins:{app}:{day}"))
    }

    fn room_key(&self, app: &str, cid: &str) -> String {
        self.key(&format!("room:{app}:{cid}"))
    }

    /// The set of every key holding this instance's entries (for the purge).
    fn own_key(&self) -> String {
        self.key(&format!("node:{}", self.instance))
    }

    /// Events dropped because the publish queue was full (Redis unreachable for long).
    pub fn dropped_events(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Leaves the cluster at a clean shutdown (after this node's sessions ended): drops
    /// this instance from the live set at once, so its sessions stop counting — a client
    /// that reconnects elsewhere within the liveness window is not refused its device tag
    /// by a session of a node that is gone — and removes its entries in the same script
    /// (entries whose removal failed earlier included; the purge of dead nodes no longer
    /// finds an instance that left, and the online counts would keep its clients).
    /// Bounded like every call; a failure leaves the liveness to expire on its own and
    /// the entries to the purge.
    pub async fn leave(&self) {
        self.left.store(true, Ordering::Release);
        let mut conn = self.conn.clone();
        let mut call = self.scripts.leave.prepare_invoke();
        call.key(self.key(NODES)).arg(&self.instance).arg(&self.prefix);
        if let Err(e) = timed(call.invoke_async::<i64>(&mut conn)).await {
            tracing::warn!(error = %e, "cluster: could not leave at shutdown; the liveness expires on its own");
        }
    }

    /// Renews this instance's liveness; `true` when Redis had lost it.
    async fn heartbeat(&self) -> Result<bool, RedisClusterError> {
        let mut conn = self.conn.clone();
        let mut call = self.scripts.heartbeat.prepare_invoke();
        call.key(self.key(NODES)).arg(&self.instance).arg(LIVENESS_MS);
        let added: i64 = timed(call.invoke_async(&mut conn)).await?;
        Ok(added == 1)
    }

    /// Registers this node's sessions again (after Redis came back empty).
    async fn reregister(&self) -> Result<(), RedisClusterError> {
        // (hash key, field, value) of every entry this node holds: sessions, then rooms;
        // and (the app's online set, client) of each session.
        let (mut entries, online): (Vec<HashEntry>, Vec<(String, String)>) = {
            let registered = self.registered.lock().unwrap_or_else(|p| p.into_inner());
            let session = |((app, client, s), tag): (&(String, String, SessionRef), &Option<String>)| {
                (
                    (self.client_key(app, client), field(s), tag.clone().unwrap_or_default()),
                    (self.online_key(app), client.clone()),
                )
            };
            registered.iter().map(session).unzip()
        };
        {
            let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
            entries.extend(
                rooms
                    .iter()
                    .map(|((app, cid, s), client)| (self.room_key(app, cid), field(s), client.clone())),
            );
        }
        let mut conn = self.conn.clone();
        let own = self.own_key();
        for chunk in entries.chunks(512) {
            let mut pipe = redis::pipe();
            for (key, field, value) in chunk {
                pipe.hset(key, field, value).ignore();
                pipe.sadd(&own, key).ignore();
            }
            let _: () = timed(pipe.query_async(&mut conn)).await?;
        }
        for chunk in online.chunks(512) {
            let mut pipe = redis::pipe();
            for (key, client) in chunk {
                pipe.sadd(key, client).ignore();
            }
            let _: () = timed(pipe.query_async(&mut conn)).await?;
        }
        Ok(())
    }

    /// Removes `session`'s entry from the hash `key` without waiting; for a client's hash
    /// (`online`: the app's online set and the client) the client leaves the online set in
    /// the same script once it has no entry left. A failure leaves the entry for the purge
    /// of this node's entries, or for its leave.
    fn forget_later(&self, key: String, session: &SessionRef, online: Option<(String, &str)>) {
        let mut conn = self.conn.clone();
        let field = field(session);
        let online = online.map(|(set, client)| (self.scripts.forget.clone(), set, client.to_owned()));
        tokio::spawn(async move {
            let del = async {
                match online {
                    Some((script, set, client)) => {
                        script.key(&key).key(set).arg(&field).arg(client).invoke_async::<i64>(&mut conn).await
                    }
                    None => redis::cmd("HDEL").arg(&key).arg(&field).query_async::<i64>(&mut conn).await,
                }
            };
            if let Err(e) = timed(del).await {
                tracing::warn!(error = %e, %key, "cluster registry: an entry stays until its node is purged or leaves");
            }
        });
    }
}

async fn timed<T>(
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, RedisClusterError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(RedisClusterError::Redis(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "redis call timed out",
        )))),
    }
}

/// Publishes queued events, as many per round trip as are waiting.
async fn publisher(
    mut conn: ConnectionManager,
    instance: String,
    channel: String,
    mut queue: mpsc::Receiver<(String, NodeEvent)>,
) {
    let mut batch = Vec::new();
    let mut failing = false;
    while queue.recv_many(&mut batch, 512).await > 0 {
        let mut pipe = redis::pipe();
        for (app, event) in batch.drain(..) {
            let envelope = Envelope { n: instance.clone(), a: app, e: event };
            match serde_json::to_vec(&envelope) {
                Ok(bytes) => {
                    pipe.publish(&channel, bytes).ignore();
                }
                Err(e) => tracing::error!(error = %e, "cluster event not encoded"),
            }
        }
        match timed(pipe.query_async::<()>(&mut conn)).await {
            Ok(()) => {
                if failing {
                    tracing::info!("cluster events flow again");
                    failing = false;
                }
            }
            Err(e) => {
                if !failing {
                    tracing::error!(error = %e, "cluster events not published: other nodes repair from the store");
                    failing = true;
                }
            }
        }
    }
}

/// Renews liveness every second, registers the sessions again when Redis restarted,
/// and purges dead nodes' registrations.
async fn keep_alive(cluster: std::sync::Weak<RedisCluster>) {
    let mut ticks: u64 = 0;
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        let Some(cluster) = cluster.upgrade() else { return };
        if cluster.left.load(Ordering::Acquire) {
            return;
        }
        ticks += 1;
        let was_healthy = cluster.is_healthy();
        match cluster.heartbeat().await {
            Ok(lost) => {
                // Redis restarted empty, or purged this node after a long outage: put its
                // sessions back.
                if lost || !was_healthy {
                    match cluster.reregister().await {
                        Ok(()) => {
                            tracing::info!(instance = %cluster.instance, "cluster registry reachable again");
                            cluster.healthy.store(true, Ordering::Release);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cluster registry: sessions not registered again yet")
                        }
                    }
                }
            }
            Err(e) => {
                if was_healthy {
                    tracing::error!(error = %e, "cluster registry unreachable: logins are checked on this node only");
                }
                cluster.healthy.store(false, Ordering::Release);
                continue;
            }
        }
        if ticks.is_multiple_of(5) {
            let mut conn = cluster.conn.clone();
            let mut purge = cluster.scripts.purge.prepare_invoke();
            purge.key(cluster.key(NODES)).arg(PURGE_AFTER_MS).arg(&cluster.prefix);
            match timed(purge.invoke_async::<i64>(&mut conn)).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "dead nodes' sessions removed from the registry"),
                Err(e) => tracing::warn!(error = %e, "cluster registry: purge failed"),
            }
        }
    }
}

/// Hears the other nodes' events; resubscribes after a lost link.
async fn subscriber(cluster: std::sync::Weak<RedisCluster>, events: Arc<dyn NodeEvents>) {
    let mut first = true;
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some((client, instance, channel)) =
            cluster.upgrade().map(|c| (c.client.clone(), c.instance.clone(), c.key(EVENTS)))
        else {
            return;
        };
        let pubsub = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let mut pubsub = match timed(pubsub).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cluster events: cannot subscribe yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        if !first {
            // Whatever was published meanwhile is lost: reload what this node caches.
            tracing::info!("cluster events: subscribed again, resyncing");
            events.resync().await;
        }
        first = false;
        let mut stream = pubsub.on_message();
        while let Some(msg) = stream.next().await {
            let envelope: Envelope = match serde_json::from_slice(msg.get_payload_bytes()) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "cluster event not understood (another version?)");
                    continue;
                }
            };
            if envelope.n != instance {
                events.node_event(&envelope.a, envelope.e).await;
            }
        }
        tracing::warn!("cluster events: subscription lost");
    }
}

impl Cluster for RedisCluster {
    fn instance(&self) -> &str {
        &self.instance
    }

    /// Whether Redis answered this node's last liveness renewal.
    fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    fn publish(&self, app: &str, event: NodeEvent) {
        if self.publish.try_send((app.to_owned(), event)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A re-login ([`TagClaim::Keep`]) finding its tag held by a session of another node
    /// is not refused at once: that node may have just died, its client being the one
    /// logging in again here, and it counts as live until 4 s after its last renewal.
    /// The claim is asked again until the holder's node stops counting (the stale entry
    /// is dropped and the re-login goes through) or has renewed its liveness twice
    /// meanwhile (it is alive: refused as before; one renewal may have been on its way
    /// when the node died), at most until the liveness could have lapsed twice over.
    fn claim<'a>(
        &'a self,
        app: &'a str,
        client: &'a str,
        session: SessionRef,
        tag: Option<&'a str>,
        claim: TagClaim,
    ) -> ClusterFuture<'a, Result<Vec<SessionRef>, ClaimError>> {
        Box::pin(async move {
            self.registered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((app.to_owned(), client.to_owned(), session.clone()), tag.map(str::to_owned));
            let mode = if claim == TagClaim::Keep { "keep" } else { "take" };
            let deadline = tokio::time::Instant::now() + Duration::from_millis(2 * LIVENESS_MS);
            // The latest expiry of the holders' nodes seen so far, and how often it moved.
            let mut seen: Option<u64> = None;
            let mut renewals = 0;
            loop {
                let mut conn = self.conn.clone();
                let mut call = self.scripts.claim.prepare_invoke();
                call.key(self.client_key(app, client))
                    .key(self.key(NODES))
                    .key(self.own_key())
                    .key(self.online_key(app))
                    .arg(field(&session))
                    .arg(tag.unwrap_or(""))
                    .arg(mode)
                    .arg(client);
                let out: Vec<String> = match timed(call.invoke_async(&mut conn)).await {
                    Ok(out) => out,
                    Err(e) => return Err(ClaimError::Unavailable(e.to_string())),
                };
                let Some(("held", rest)) = out.split_first().map(|(f, rest)| (f.as_str(), rest)) else {
                    return Ok(out.iter().filter_map(|f| parse_field(f)).collect());
                };
                let number = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                let (lapses_in, expires) = (number(0), number(1));
                match seen {
                    Some(before) if expires > before => renewals += 1,
                    _ => {}
                }
                seen = Some(seen.unwrap_or(0).max(expires));
                let now = tokio::time::Instant::now();
                if renewals >= RENEWALS_OF_A_LIVE_HOLDER || now >= deadline {
                    self.registered.lock().unwrap_or_else(|p| p.into_inner()).remove(&(
                        app.to_owned(),
                        client.to_owned(),
                        session,
                    ));
                    return Err(ClaimError::Held);
                }
                // At the holder's expiry, and at least once a renewal period to see it renew.
                let wait = Duration::from_millis(lapses_in + 10).min(HEARTBEAT);
                tracing::debug!(
                    app,
                    client,
                    wait_ms = wait.as_millis() as u64,
                    "re-login: device tag held elsewhere, waiting"
                );
                tokio::time::sleep_until((now + wait).min(deadline)).await;
            }
        })
    }

    fn release(&self, app: &str, client: &str, session: SessionRef) {
        let removed = self.registered.lock().unwrap_or_else(|p| p.into_inner()).remove(&(
            app.to_owned(),
            client.to_owned(),
            session.clone(),
        ));
        if removed.is_none() {
            return;
        }
        // Left behind, it is purged with the node (or at its leave).
        self.forget_later(self.client_key(app, client), &session, Some((self.online_key(app), client)));
    }

    fn spend_nonce<'a>(
        &'a self,
        app: &'a str,
        nonce: &'a str,
        ttl_ms: u64,
    ) -> ClusterFuture<'a, Option<bool>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let mut set = redis::cmd("SET");
            set.arg(self.key(&format!("nonce:{app}:{nonce}"))).arg(1).arg("NX").arg("PX").arg(ttl_ms);
            match timed(set.query_async::<Option<String>>(&mut conn)).await {
                Ok(reply) => Some(reply.is_some()),
                Err(e) => {
                    tracing::warn!(error = %e, "cluster registry: nonce check failed");
                    None
                }
            }
        })
    }

    fn forget_client<'a>(&'a self, app: &'a str, client: &'a str) -> ClusterFuture<'a, ()> {
        Box::pin(async move {
            self.registered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|(a, c, _), _| !(a == app && c == client));
            let mut conn = self.conn.clone();
            // One step, so that a registration in between is not left out of the set.
            let mut del = redis::pipe();
            del.atomic()
                .del(self.client_key(app, client))
                .ignore()
                .srem(self.online_key(app), client)
                .ignore();
            let del = del.query_async::<()>(&mut conn);
            if let Err(e) = timed(del).await {
                tracing::warn!(error = %e, "cluster registry: a kicked client stays registered until its nodes act");
            }
        })
    }

    fn room_join<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        client: &'a str,
        session: SessionRef,
    ) -> ClusterFuture<'a, ()> {
        Box::pin(async move {
            let (key, field) = (self.room_key(app, cid), field(&session));
            self.rooms
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((app.to_owned(), cid.to_owned(), session), client.to_owned());
            let mut conn = self.conn.clone();
            let mut pipe = redis::pipe();
            pipe.hset(&key, field, client).ignore();
            pipe.sadd(self.own_key(), &key).ignore();
            if let Err(e) = timed(pipe.query_async::<()>(&mut conn)).await {
                // Registered again once Redis answers (the entry is kept here).
                tracing::warn!(error = %e, "cluster registry: a chat-room entry is not registered yet");
                self.healthy.store(false, Ordering::Release);
            }
        })
    }

    fn room_leave(&self, app: &str, cid: &str, session: SessionRef) {
        let removed = self.rooms.lock().unwrap_or_else(|p| p.into_inner()).remove(&(
            app.to_owned(),
            cid.to_owned(),
            session.clone(),
        ));
        if removed.is_none() {
            return;
        }
        self.forget_later(self.room_key(app, cid), &session, None);
    }

    fn room_members<'a>(&'a self, app: &'a str, cid: &'a str) -> ClusterFuture<'a, Option<Vec<String>>> {
        Box::pin(async move {
            let mut call = self.scripts.room.prepare_invoke();
            call.key(self.room_key(app, cid)).key(self.key(NODES));
            let mut conn = self.conn.clone();
            match timed(call.invoke_async::<Vec<String>>(&mut conn)).await {
                Ok(clients) => Some(clients),
                Err(e) => {
                    tracing::warn!(error = %e, "cluster registry: chat-room members not read");
                    None
                }
            }
        })
    }

    fn online<'a>(&'a self, app: &'a str, clients: Vec<String>) -> ClusterFuture<'a, Option<Vec<String>>> {
        Box::pin(async move {
            if clients.is_empty() {
                return Some(Vec::new());
            }
            let mut call = self.scripts.online.prepare_invoke();
            for c in &clients {
                call.key(self.client_key(app, c));
            }
            call.key(self.key(NODES));
            let mut conn = self.conn.clone();
            match timed(call.invoke_async::<Vec<i64>>(&mut conn)).await {
                Ok(flags) => {
                    Some(clients.into_iter().zip(flags).filter(|(_, on)| *on == 1).map(|(c, _)| c).collect())
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cluster registry: online check failed");
                    None
                }
            }
        })
    }

    fn count_login<'a>(&'a self, app: &'a str, client: &'a str, day: i64) -> ClusterFuture<'a, ()> {
        Box::pin(async move {
            let key = self.logins_key(app, day);
            let mut pipe = redis::pipe();
            pipe.pfadd(&key, client).ignore();
            pipe.expire(&key, LOGINS_TTL_SECS as i64).ignore();
            let mut conn = self.conn.clone();
            if let Err(e) = timed(pipe.query_async::<()>(&mut conn)).await {
                tracing::warn!(error = %e, "cluster registry: a login is counted on its node only");
            }
        })
    }

    /// One script: the size of the app's online set and the day's logins, after repairing
    /// one batch of the set: the cost does not grow with the clients online. Clients of a
    /// node killed without warning count until its entries are purged (see the module
    /// docs).
    fn app_counts<'a>(&'a self, app: &'a str, day: i64) -> ClusterFuture<'a, Option<AppCounts>> {
        Box::pin(async move {
            let mut call = self.scripts.count.prepare_invoke();
            call.key(self.online_key(app))
                .key(self.key(NODES))
                .key(self.logins_key(app, day))
                .key(self.key(&format!("online-repair:{app}")))
                .arg(self.key(&format!("p:{app}:")))
                .arg(REPAIR_BATCH);
            let mut conn = self.conn.clone();
            match timed(call.invoke_async::<(u64, u64)>(&mut conn)).await {
                Ok((online, today)) => Some(AppCounts { online, today }),
                Err(e) => {
                    tracing::warn!(error = %e, "cluster registry: the app's counts not read");
                    None
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn fields_name_a_session_and_parse_back() {
        let s = SessionRef { node: "host:7878#0a1b2c3d".into(), session: 42 };
        assert_eq!(field(&s), "host:7878#0a1b2c3d/42");
        assert_eq!(parse_field(&field(&s)), Some(s));
        assert_eq!(parse_field("no-slash"), None);
        assert_eq!(parse_field("node/not-a-number"), None);
    }
}

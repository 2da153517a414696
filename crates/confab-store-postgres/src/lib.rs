//! Confab's store on PostgreSQL, for several nodes sharing one database.
//!
//! - **Positions come from the database.** An append locks its conversation's row
//!   inside the insert's transaction and assigns `ts = max(proposed, last_ts + 1)` and
//!   the next dense `seq` there (one statement, `sql::APPEND`), so every node writing the
//!   conversation sees one order. Not a `SEQUENCE`: its values are handed out at call
//!   time and commit out of order, so a reader could see 7 before 6.
//! - **One writer task per store** takes writes off a channel in call order and commits
//!   everything queued in one transaction: its statements are pipelined on one
//!   connection (one round trip for the batch, not one per write), then one `COMMIT`
//!   with `synchronous_commit = on`: one WAL flush for many messages. A caller hears
//!   "done" only after the commit. A write that must fail alone (an existing id, a
//!   missing position) reports it in its result rows; any other error rolls the batch
//!   back and replays it write by write under savepoints, so one bad write fails alone.
//!   Deadlocks between nodes are avoided by locking a batch's conversation rows in one
//!   order first, and a batch that still hits one is retried whole (it committed
//!   nothing).
//! - **Delivery cursors** are buffered as in the SQLite store: they ride along with a
//!   transaction once the oldest is [`CURSOR_FLUSH_INTERVAL`] old, or are committed
//!   alone after [`CURSOR_ALONE_AFTER`]; this node's reads see them at once.
//! - **Losing the database**: writes fail with [`StoreError::Unavailable`] (the engine
//!   then acknowledges nothing), the store logs the loss once and checks every second
//!   until the database answers again, and [`Store::health`] reports it.
//! - Migrations are numbered SQL scripts recorded in `schema_migrations`, applied under
//!   an advisory lock so nodes starting together do not race.
//!
//! TLS is not used: run PostgreSQL on the same host or a private network.

mod schema;
mod sql;

pub use schema::MigrateError;

/// The schema version this build migrates a database to.
pub const SCHEMA_VERSION: i64 = schema::LATEST;

use confab_engine::ports::{
    Appended, ClientMark, ConvKind, ConversationRecord, HookCall, LastMessage, MarkKind, MemberCursor,
    MemberPosition, MessageRange, OutboxEntry, ScanFilter, Store, StoreError, StoreFuture, StoredMessage,
    UnreadCount,
};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::future::{MaybeDone, join_all, maybe_done};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

/// How long delivery cursors collect acks before they ride along with the next
/// transaction (as in the SQLite store: a member's acks collapse into one row update).
pub const CURSOR_FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// How long delivery cursors wait for another write to carry them before they are
/// committed alone.
pub const CURSOR_ALONE_AFTER: Duration = Duration::from_millis(100);

/// Most writes folded into one transaction.
const MAX_BATCH: usize = 1024;

/// Connections per store: the writer's plus readers.
const POOL_SIZE: usize = 16;

/// How long connecting, or waiting for a pooled connection, may take before the
/// operation fails as unavailable (a node never hangs on a dead database).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How often a store that lost its database checks whether it is back.
const PROBE_DOWN: Duration = Duration::from_secs(1);

/// How often a healthy store checks its database when nothing else would notice.
const PROBE_UP: Duration = Duration::from_secs(5);

/// Longest a batch's transaction or a read may take. Past it the database counts as
/// lost (a hung server, a dropped network path that TCP has not noticed), the connection
/// is closed rather than returned to the pool (it may hold an open transaction), and the
/// callers get an error instead of waiting forever.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Times a batch that hit a deadlock or serialization failure is tried again.
const RETRIES: usize = 3;

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL does not parse.
    #[error("store: invalid PostgreSQL URL: {0}")]
    Url(String),
    /// No connection could be made.
    #[error("PostgreSQL at {target} is unreachable: {error}")]
    Unreachable {
        /// Where (host, port, database; no password).
        target: String,
        /// What the connection attempt said.
        error: String,
    },
    /// The server answered and refused (authentication, a missing database, …):
    /// retrying will not help.
    #[error("PostgreSQL at {target} refused the connection: {error}")]
    Refused {
        /// Where.
        target: String,
        /// What the server said.
        error: String,
    },
    /// The schema could not be brought up to date.
    #[error("migrating PostgreSQL at {target}: {error}")]
    Migrate {
        /// Where.
        target: String,
        /// What failed.
        error: MigrateError,
    },
}

/// The PostgreSQL store. Cheap to clone; every clone shares one writer and one pool.
#[derive(Clone)]
pub struct PostgresStore {
    shared: Arc<Shared>,
    writer: mpsc::UnboundedSender<WriteRequest>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("target", &self.shared.target).finish()
    }
}

/// State shared by the handles, the writer and the health monitor.
struct Shared {
    pool: Pool,
    /// For the health probe's own connection, outside the pool: a pool busy with reads
    /// must not look like a lost database.
    config: tokio_postgres::Config,
    /// host:port/database, for logs (the URL may hold a password).
    target: String,
    cursors: Mutex<PendingCursors>,
    /// Wakes the writer, idle without a deadline, when the first cursor is buffered.
    wake: Notify,
    reachable: AtomicBool,
    commits: AtomicU64,
}

impl Shared {
    fn cursors(&self) -> std::sync::MutexGuard<'_, PendingCursors> {
        self.cursors.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that the database answered; logs the recovery once.
    fn mark_up(&self) {
        if !self.reachable.swap(true, Ordering::SeqCst) {
            tracing::warn!(target_db = %self.target, "PostgreSQL is reachable again; writes resume");
        }
    }

    /// Records that the database did not answer; logs the loss once.
    fn mark_down(&self, error: &str) {
        if self.reachable.swap(false, Ordering::SeqCst) {
            tracing::error!(
                target_db = %self.target,
                %error,
                "lost PostgreSQL: writes fail (nothing is acknowledged) until it answers again; retrying every {}s",
                PROBE_DOWN.as_secs()
            );
        }
    }
}

/// (app, cid, client) of a member's delivery cursor.
type CursorKey = (String, String, String);

/// Delivery cursors saved but not yet committed.
#[derive(Default)]
struct PendingCursors {
    waiting: HashMap<CursorKey, i64>,
    /// When the oldest of `waiting` was buffered.
    since: Option<Instant>,
    /// In the transaction being committed (readers must still see those).
    writing: HashMap<CursorKey, i64>,
}

impl PendingCursors {
    fn get(&self, key: &CursorKey) -> Option<i64> {
        match (self.waiting.get(key), self.writing.get(key)) {
            (Some(a), Some(b)) => Some(*a.max(b)),
            (a, b) => a.or(b).copied(),
        }
    }
}

/// Where an append landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The position assigned.
    pub ts: i64,
    /// The conversation's newest position before it (0 for its first message).
    pub prev_ts: i64,
    /// The message's dense sequence number in its conversation (1, 2, 3, …).
    pub seq: i64,
    /// `Some(id)`: a re-send of the message `id` at `ts`, nothing written (`prev_ts`
    /// and `seq` are 0).
    pub original: Option<String>,
}

/// What a write produced.
#[derive(Debug, Clone)]
enum Written {
    Done,
    Appended(Position),
}

type Reply = Result<Written, StoreError>;

enum WriteOp {
    CreateConversation(Box<ConversationRecord>, Vec<HookCall>),
    SetAttributes {
        app: String,
        cid: String,
        attrs: String,
        updated_at: i64,
    },
    AddMembers {
        app: String,
        cid: String,
        members: Vec<String>,
        updated_at: i64,
        notify: Vec<HookCall>,
    },
    RemoveMembers {
        app: String,
        cid: String,
        members: Vec<String>,
        updated_at: i64,
        notify: Vec<HookCall>,
    },
    /// A message, its hook calls and its dedupe token.
    Append(StoredMessage, Vec<HookCall>, Option<String>),
    OutboxPut(Vec<HookCall>),
    OutboxDone {
        app: String,
        key: String,
    },
    OutboxRetry {
        app: String,
        key: String,
        attempts: u32,
        due_at: i64,
    },
    SaveRead {
        app: String,
        client: String,
        cid: String,
        ts: i64,
    },
    SetRole {
        app: String,
        cid: String,
        client: String,
        role: String,
    },
    SetShutUp {
        app: String,
        cid: String,
        clients: Vec<String>,
        on: bool,
    },
    SetBlocked {
        app: String,
        cid: String,
        clients: Vec<String>,
        on: bool,
    },
    SetMarks {
        app: String,
        cid: String,
        kind: MarkKind,
        clients: Vec<String>,
        on: bool,
        until: Option<i64>,
    },
    Patch {
        app: String,
        cid: String,
        ts: i64,
        data: String,
        /// The new binary flag (`None`: unchanged).
        binary: Option<bool>,
        patched_at: i64,
    },
    SetMuted {
        app: String,
        cid: String,
        client: String,
        muted: bool,
    },
    DeleteConversation {
        app: String,
        cid: String,
    },
    ReleaseUnique {
        app: String,
        cid: String,
    },
    DeleteMessage {
        app: String,
        cid: String,
        ts: i64,
    },
    RemoveRecipient {
        app: String,
        cid: String,
        ts: i64,
        client: String,
    },
    /// Nothing to write: completes when everything queued before it is committed,
    /// buffered cursors included.
    Flush,
}

struct WriteRequest {
    op: WriteOp,
    done: oneshot::Sender<Reply>,
}

/// Parameters of one statement, owned so they outlive the pipelined futures.
type Params = Vec<Box<dyn ToSql + Sync + Send>>;

impl WriteOp {
    /// The conversation whose row this write locks, if any.
    fn conversation(&self) -> Option<(&str, &str)> {
        match self {
            WriteOp::CreateConversation(..)
            | WriteOp::Flush
            | WriteOp::OutboxPut(_)
            | WriteOp::OutboxDone { .. }
            | WriteOp::OutboxRetry { .. } => None,
            WriteOp::Append(m, ..) => Some((&m.app, &m.cid)),
            WriteOp::SetAttributes { app, cid, .. }
            | WriteOp::AddMembers { app, cid, .. }
            | WriteOp::RemoveMembers { app, cid, .. }
            | WriteOp::SaveRead { app, cid, .. }
            | WriteOp::SetRole { app, cid, .. }
            | WriteOp::SetShutUp { app, cid, .. }
            | WriteOp::SetBlocked { app, cid, .. }
            | WriteOp::SetMarks { app, cid, .. }
            | WriteOp::Patch { app, cid, .. }
            | WriteOp::SetMuted { app, cid, .. }
            | WriteOp::DeleteConversation { app, cid }
            | WriteOp::ReleaseUnique { app, cid }
            | WriteOp::DeleteMessage { app, cid, .. }
            | WriteOp::RemoveRecipient { app, cid, .. } => Some((app, cid)),
        }
    }

    /// The statement and parameters of this write (`None`: nothing to run).
    fn statement(&self) -> Option<(&'static str, Params)> {
        fn own<T: ToSql + Sync + Send + 'static>(v: T) -> Box<dyn ToSql + Sync + Send> {
            Box::new(v)
        }
        Some(match self {
            WriteOp::Flush => return None,
            WriteOp::CreateConversation(r, notify) => {
                let mut params = vec![
                    own(r.app.clone()),
                    own(r.id.clone()),
                    own(r.kind as i64),
                    own(r.creator.clone()),
                    own(r.unique_key.clone()),
                    own(Value::Object(r.attrs.clone()).to_string()),
                    own(r.created_at),
                    own(r.updated_at),
                    own(r.expires_at),
                    own(distinct(&r.members)),
                ];
                if notify.is_empty() {
                    (sql::CREATE_CONVERSATION, params)
                } else {
                    params.extend(call_params(notify));
                    (sql::CREATE_CONVERSATION_NOTIFY, params)
                }
            }
            WriteOp::SetAttributes { app, cid, attrs, updated_at } => (
                sql::SET_ATTRIBUTES,
                vec![own(app.clone()), own(cid.clone()), own(attrs.clone()), own(*updated_at)],
            ),
            WriteOp::AddMembers { app, cid, members, updated_at, notify } => {
                let params =
                    vec![own(app.clone()), own(cid.clone()), own(distinct(members)), own(*updated_at)];
                with_calls(sql::ADD_MEMBERS, sql::ADD_MEMBERS_NOTIFY, params, notify)
            }
            WriteOp::RemoveMembers { app, cid, members, updated_at, notify } => {
                let params = vec![own(app.clone()), own(cid.clone()), own(members.clone()), own(*updated_at)];
                with_calls(sql::REMOVE_MEMBERS, sql::REMOVE_MEMBERS_NOTIFY, params, notify)
            }
            WriteOp::OutboxPut(notify) => (sql::OUTBOX_PUT, call_params(notify).collect()),
            WriteOp::OutboxDone { app, key } => (sql::OUTBOX_DONE, vec![own(app.clone()), own(key.clone())]),
            WriteOp::OutboxRetry { app, key, attempts, due_at } => (
                sql::OUTBOX_RETRY,
                vec![own(app.clone()), own(key.clone()), own(i64::from(*attempts)), own(*due_at)],
            ),
            WriteOp::Append(m, notify, dedupe) => {
                let mut params = vec![
                    own(m.app.clone()),
                    own(m.cid.clone()),
                    own(m.ts),
                    own(m.id.clone()),
                    own(m.from.clone()),
                    own(m.data.as_bytes().to_vec()),
                    own(m.receipt),
                    own(m.binary),
                    own(m.mentions.all),
                    own((!m.mentions.pids.is_empty()).then(|| m.mentions.pids.clone())),
                    own(lctype_of(&m.data)),
                    own(dedupe.clone()),
                    own(m.recipients.clone()),
                ];
                if notify.is_empty() {
                    (sql::APPEND, params)
                } else {
                    let tails: Vec<Option<String>> =
                        notify.iter().map(|c| timestamp_tail(&c.params, m.ts)).collect();
                    let mut calls = call_params(notify);
                    // $14-$17 as every call list, then the tails, then created_at.
                    params.extend(calls.by_ref().take(4));
                    params.push(own(tails));
                    params.extend(calls);
                    (sql::APPEND_NOTIFY, params)
                }
            }
            WriteOp::SaveRead { app, client, cid, ts } => {
                (sql::SAVE_READ, vec![own(app.clone()), own(cid.clone()), own(client.clone()), own(*ts)])
            }
            WriteOp::SetRole { app, cid, client, role } => (
                sql::SET_ROLE,
                vec![own(app.clone()), own(cid.clone()), own(client.clone()), own(role.clone())],
            ),
            WriteOp::SetShutUp { app, cid, clients, on } => {
                (sql::SET_SHUT_UP, vec![own(app.clone()), own(cid.clone()), own(clients.clone()), own(*on)])
            }
            WriteOp::SetBlocked { app, cid, clients, on } => (
                if *on { sql::BLOCK } else { sql::UNBLOCK },
                vec![own(app.clone()), own(cid.clone()), own(distinct(clients))],
            ),
            WriteOp::SetMarks { app, cid, kind, clients, on: true, until } => (
                sql::MARK,
                vec![
                    own(app.clone()),
                    own(cid.clone()),
                    own(*kind as i64),
                    own(distinct(clients)),
                    own(*until),
                ],
            ),
            WriteOp::SetMarks { app, cid, kind, clients, on: false, .. } => (
                sql::UNMARK,
                vec![own(app.clone()), own(cid.clone()), own(*kind as i64), own(distinct(clients))],
            ),
            WriteOp::Patch { app, cid, ts, data, binary, patched_at } => (
                sql::PATCH,
                vec![
                    own(app.clone()),
                    own(cid.clone()),
                    own(*ts),
                    own(data.as_bytes().to_vec()),
                    own(*patched_at),
                    own(lctype_of(data)),
                    own(*binary),
                ],
            ),
            WriteOp::SetMuted { app, cid, client, muted } => {
                (sql::SET_MUTED, vec![own(app.clone()), own(cid.clone()), own(client.clone()), own(*muted)])
            }
            WriteOp::DeleteConversation { app, cid } => (
                sql::DELETE_CONVERSATION,
                vec![own(app.clone()), own(cid.clone()), own(format!("{cid}:")), own(format!("{cid};"))],
            ),
            WriteOp::DeleteMessage { app, cid, ts } => {
                (sql::DELETE_MESSAGE, vec![own(app.clone()), own(cid.clone()), own(*ts)])
            }
            WriteOp::RemoveRecipient { app, cid, ts, client } => (
                sql::REMOVE_RECIPIENT,
                vec![own(app.clone()), own(cid.clone()), own(*ts), own(client.clone())],
            ),
            WriteOp::ReleaseUnique { app, cid } => {
                (sql::RELEASE_UNIQUE, vec![own(app.clone()), own(cid.clone())])
            }
        })
    }

    /// This write's outcome from its statement's rows (the statement itself succeeded).
    fn outcome(&self, rows: &[Row]) -> Reply {
        match self {
            WriteOp::CreateConversation(r, _) if rows.is_empty() => Err(StoreError::Backend(format!(
                "conversation {} exists, or its unique key is held by another",
                r.id
            ))),
            WriteOp::Patch { cid, ts, .. } if rows.is_empty() => {
                Err(StoreError::Backend(format!("no message at position {ts} of {cid}")))
            }
            WriteOp::Append(m, ..) => match rows.first() {
                Some(row) => Ok(Written::Appended(Position {
                    ts: row.try_get(0).map_err(backend)?,
                    prev_ts: row.try_get(1).map_err(backend)?,
                    seq: row.try_get(2).map_err(backend)?,
                    original: row.try_get(3).map_err(backend)?,
                })),
                None => Err(StoreError::Backend(format!("no position assigned in {}", m.cid))),
            },
            _ => Ok(Written::Done),
        }
    }
}

/// The outbox columns of `calls` as statement parameters, in the order every statement
/// takes them: apps, keys, hooks, params, created_at.
fn call_params(calls: &[HookCall]) -> impl Iterator<Item = Box<dyn ToSql + Sync + Send>> {
    let column = |f: fn(&HookCall) -> String| -> Box<dyn ToSql + Sync + Send> {
        Box::new(calls.iter().map(f).collect::<Vec<String>>())
    };
    let created: Box<dyn ToSql + Sync + Send> =
        Box::new(calls.iter().map(|c| c.created_at).collect::<Vec<i64>>());
    [
        column(|c| c.app.clone()),
        column(|c| c.key.clone()),
        column(|c| c.hook.clone()),
        column(|c| c.params.clone()),
        created,
    ]
    .into_iter()
}

/// `plain` with `params`, or `notify` with the calls' columns after them when there are
/// calls.
fn with_calls(
    plain: &'static str,
    notify: &'static str,
    mut params: Params,
    calls: &[HookCall],
) -> (&'static str, Params) {
    if calls.is_empty() {
        return (plain, params);
    }
    params.extend(call_params(calls));
    (notify, params)
}

/// For a call whose parameters are a JSON object reporting `"timestamp": proposed`: the
/// object's text without that member and its opening brace, so that
/// `{"timestamp":<ts>` followed by it reports `ts` instead (what
/// [`HookCall::restamp`] stores). `None` for any other call: it is stored as built.
fn timestamp_tail(params: &str, proposed: i64) -> Option<String> {
    let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(params) else { return None };
    if map.get("timestamp").and_then(Value::as_i64) != Some(proposed) {
        return None;
    }
    map.remove("timestamp");
    let rest = Value::Object(map).to_string();
    Some(match rest.strip_prefix('{') {
        Some("}") | None => "}".to_owned(),
        Some(members) => format!(",{members}"),
    })
}

/// The names once each, in first-seen order.
fn distinct(names: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    names.iter().filter(|n| seen.insert(n.as_str())).cloned().collect()
}

/// The `_lctype` of a body that is a JSON object with an integral number there: what
/// [`MessageRange::lctype`] matches (`1.0` is 1; a string, a boolean or 1.5 is none).
fn lctype_of(body: &str) -> Option<i64> {
    // Only bodies that look like an object are parsed: most are plain text.
    if !body.trim_start().starts_with('{') {
        return None;
    }
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(body) else { return None };
    match map.get("_lctype") {
        Some(Value::Number(n)) => n.as_i64().or_else(|| {
            let f = n.as_f64()?;
            (f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64).then_some(f as i64)
        }),
        _ => None,
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// A connection-level failure (the database is gone or unreachable), as opposed to a
/// statement the database refused.
fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // No SQLSTATE: an I/O or protocol error on the socket.
        None => true,
        // Class 08 (connection exception), 57P01-57P03 (admin shutdown, crash
        // shutdown, cannot connect now).
        Some(code) => {
            code.code().starts_with("08")
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
        }
    }
}

fn pg_error(e: tokio_postgres::Error) -> StoreError {
    if is_connection_error(&e) {
        StoreError::Unavailable(format!("PostgreSQL: {e}"))
    } else {
        StoreError::Backend(format!("PostgreSQL: {e}"))
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg_error(e),
        other => StoreError::Unavailable(format!("PostgreSQL: {other}")),
    }
}

/// host:port/database of a configuration, for logs.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or(""))
}

fn pool_for(url: &str) -> Result<(Pool, String, tokio_postgres::Config), OpenError> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| OpenError::Url(format!("{e}")))?;
    config.connect_timeout(CONNECT_TIMEOUT);
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(10));
    config.application_name("confab");
    // Acknowledged means flushed to the WAL on disk, whatever the server's default.
    config.options("-c synchronous_commit=on");
    let target = describe(&config);
    let manager = Manager::from_config(
        config.clone(),
        NoTls,
        ManagerConfig { recycling_method: RecyclingMethod::Fast },
    );
    let pool = Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| OpenError::Url(e.to_string()))?;
    Ok((pool, target, config))
}

/// Connects and brings the schema up to date; returns the pool, the target and how
/// many migrations ran.
async fn open_pool(url: &str) -> Result<(Pool, String, tokio_postgres::Config, usize), OpenError> {
    let (pool, target, config) = pool_for(url)?;
    let mut client = pool.get().await.map_err(|e| match e {
        deadpool_postgres::PoolError::Backend(e) if !is_connection_error(&e) => {
            OpenError::Refused { target: target.clone(), error: e.to_string() }
        }
        e => OpenError::Unreachable { target: target.clone(), error: e.to_string() },
    })?;
    let ran = schema::migrate(&mut client)
        .await
        .map_err(|error| OpenError::Migrate { target: target.clone(), error })?;
    drop(client);
    Ok((pool, target, config, ran))
}

impl PostgresStore {
    /// Connects to `url` (`postgres://USER[:PASSWORD]@HOST:PORT/DB`), runs the
    /// migrations and starts the writer. Fails when the database cannot be reached:
    /// a node does not start without its store.
    pub async fn connect(url: &str) -> Result<PostgresStore, OpenError> {
        let (pool, target, config, ran) = open_pool(url).await?;
        tracing::info!(target_db = %target, migrations = ran, schema = schema::LATEST, "PostgreSQL store ready");
        let shared = Arc::new(Shared {
            pool,
            config,
            target,
            cursors: Mutex::new(PendingCursors::default()),
            wake: Notify::new(),
            reachable: AtomicBool::new(true),
            commits: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(Writer { shared: shared.clone(), rx }.run());
        tokio::spawn(monitor(Arc::downgrade(&shared)));
        Ok(PostgresStore { shared, writer: tx })
    }

    /// Checks that `url` is a PostgreSQL connection URL this store accepts, without
    /// connecting (`confab check-config`).
    pub fn check_url(url: &str) -> Result<(), OpenError> {
        url.parse::<tokio_postgres::Config>().map(|_| ()).map_err(|e| OpenError::Url(e.to_string()))
    }

    /// Connects to `url` and runs the migrations only (`confab migrate`); returns how
    /// many ran.
    pub async fn migrate(url: &str) -> Result<usize, OpenError> {
        let (pool, _, _, ran) = open_pool(url).await?;
        pool.close();
        Ok(ran)
    }

    /// host:port/database this store writes to.
    pub fn target(&self) -> &str {
        &self.shared.target
    }

    /// A name of this database that every node reads the same however its URL spells
    /// the host: derived from the database's name and when its schema was first
    /// created. Nodes sharing a broker use it to keep apart from other clusters on the
    /// same Redis.
    pub async fn cluster_id(&self) -> Result<String, StoreError> {
        let rows = self
            .query(
                "SELECT left(md5(current_database() || ':' || applied_at::text), 12)
                 FROM schema_migrations WHERE version = 1",
                &[],
            )
            .await?;
        rows.first()
            .map(|r| r.get::<_, String>(0))
            .ok_or_else(|| StoreError::Backend("the schema has no first migration".into()))
    }

    /// Transactions the writer has committed since the store was opened.
    pub fn commits(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }

    /// Resolves once every write queued before the call is committed, buffered
    /// delivery cursors included (the server calls it on shutdown).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.write(WriteOp::Flush).await.map(|_| ())
    }

    /// Appends like [`Store::append_message`] and tells where the message landed.
    pub fn append(&self, message: StoredMessage) -> StoreFuture<'static, Position> {
        self.append_notify(message, Vec::new(), None)
    }

    /// Appends like [`Store::append_message_notify`] and tells where the message landed.
    pub fn append_notify(
        &self,
        message: StoredMessage,
        notify: Vec<HookCall>,
        dedupe: Option<String>,
    ) -> StoreFuture<'static, Position> {
        let reply = self.write(WriteOp::Append(message, notify, dedupe));
        Box::pin(async move {
            match reply.await? {
                Written::Appended(p) => Ok(p),
                Written::Done => Err(StoreError::Backend("append assigned no position".into())),
            }
        })
    }

    /// Queues a write (before returning: the contract's call order) and resolves with
    /// its outcome once committed.
    fn write(&self, op: WriteOp) -> impl Future<Output = Reply> + Send + 'static {
        let (done, rx) = oneshot::channel();
        let sent = self.writer.send(WriteRequest { op, done });
        async move {
            sent.map_err(|_| StoreError::Unavailable("PostgreSQL writer stopped".into()))?;
            rx.await.map_err(|_| StoreError::Unavailable("PostgreSQL writer stopped".into()))?
        }
    }

    fn write_unit(&self, op: WriteOp) -> StoreFuture<'static, ()> {
        let reply = self.write(op);
        Box::pin(async move { reply.await.map(|_| ()) })
    }

    /// A pooled connection for a read.
    async fn reader(&self) -> Result<deadpool_postgres::Object, StoreError> {
        let client = self.shared.pool.get().await.map_err(|e| {
            let e = pool_error(e);
            if let StoreError::Unavailable(m) = &e {
                self.shared.mark_down(m);
            }
            e
        })?;
        Ok(client)
    }

    /// Runs one read statement with a cached prepare, bounded by [`STATEMENT_TIMEOUT`].
    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        let client = self.reader().await?;
        let read = async {
            let stmt = client.prepare_cached(sql).await.map_err(pg_error)?;
            match client.query(&stmt, params).await {
                // A parameter holding U+0000 (an id from a request): PostgreSQL's text
                // cannot hold it, so no stored row has it and nothing matches.
                Err(e) if e.code() == Some(&SqlState::CHARACTER_NOT_IN_REPERTOIRE) => Ok(Vec::new()),
                rows => rows.map_err(pg_error),
            }
        };
        match tokio::time::timeout(STATEMENT_TIMEOUT, read).await {
            Ok(rows) => rows,
            Err(_) => {
                drop(deadpool_postgres::Object::take(client));
                let e = format!("PostgreSQL did not answer a read within {}s", STATEMENT_TIMEOUT.as_secs());
                self.shared.mark_down(&e);
                Err(StoreError::Unavailable(e))
            }
        }
    }

    async fn read_conversation(
        &self,
        app: &str,
        condition: &str,
        key: &str,
    ) -> Result<Option<ConversationRecord>, StoreError> {
        let sql = format!("{} WHERE c.app = $1::text AND {condition} = $2::text", sql::CONVERSATION);
        let rows = self.query(&sql, &[&app, &key]).await?;
        rows.first().map(|r| conversation_row(app, r)).transpose()
    }

    /// Merges this node's unwritten delivery cursors into positions read.
    fn pending_cursor(&self, app: &str, cid: &str, client: &str) -> Option<i64> {
        self.shared.cursors().get(&(app.to_owned(), cid.to_owned(), client.to_owned()))
    }
}

/// Checks the database every [`PROBE_UP`] (every [`PROBE_DOWN`] while it is lost) so a
/// quiet node notices, logs and reports a loss and a recovery. Ends with the store.
async fn monitor(shared: Weak<Shared>) {
    let mut probe_client: Option<tokio_postgres::Client> = None;
    loop {
        let up = match shared.upgrade() {
            Some(s) => s.reachable.load(Ordering::SeqCst),
            None => return,
        };
        tokio::time::sleep(if up { PROBE_UP } else { PROBE_DOWN }).await;
        let Some(shared) = shared.upgrade() else { return };
        match tokio::time::timeout(CONNECT_TIMEOUT, probe(&shared.config, &mut probe_client)).await {
            Ok(Ok(())) => shared.mark_up(),
            Ok(Err(e)) => {
                probe_client = None;
                shared.mark_down(&e.to_string());
            }
            Err(_) => {
                probe_client = None;
                shared.mark_down("PostgreSQL did not answer the health probe in time");
            }
        }
    }
}

/// `SELECT 1` on the probe's own connection, connecting it first if needed.
async fn probe(
    config: &tokio_postgres::Config,
    client: &mut Option<tokio_postgres::Client>,
) -> Result<(), StoreError> {
    if client.as_ref().is_none_or(|c| c.is_closed()) {
        let (new, connection) = config.connect(NoTls).await.map_err(pg_error)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        *client = Some(new);
    }
    match client {
        Some(c) => c.simple_query("SELECT 1").await.map(|_| ()).map_err(pg_error),
        None => Err(StoreError::Unavailable("no probe connection".into())),
    }
}

/// The writer task: takes writes in call order, commits them in batches.
struct Writer {
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<WriteRequest>,
}

/// Why a batch did not commit.
enum BatchError {
    /// A deadlock or serialization failure: nothing committed, try again.
    Retry(tokio_postgres::Error),
    /// A statement failed: replay write by write.
    Statement(tokio_postgres::Error),
    /// The database is gone, or the commit's outcome is unknown.
    Down(StoreError),
}

fn classify(e: tokio_postgres::Error) -> BatchError {
    if is_connection_error(&e) {
        BatchError::Down(pg_error(e))
    } else if matches!(e.code(), Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE)
    {
        BatchError::Retry(e)
    } else {
        BatchError::Statement(e)
    }
}

type RowsFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send + 'a>>;

/// Runs the futures' queries in the order given: each is polled once in turn first, and
/// that first poll hands its query to the connection, which sends queries in the order
/// it receives them. Then all are awaited together.
async fn pipeline(futures: Vec<RowsFuture<'_>>) -> Vec<Result<Vec<Row>, tokio_postgres::Error>> {
    let mut futures: Vec<MaybeDone<RowsFuture<'_>>> = futures.into_iter().map(maybe_done).collect();
    std::future::poll_fn(|cx| {
        for f in futures.iter_mut() {
            let _ = Pin::new(f).poll(cx);
        }
        Poll::Ready(())
    })
    .await;
    join_all(futures.iter_mut()).await;
    futures.iter_mut().map(|f| Pin::new(f).take_output().unwrap_or_else(|| Ok(Vec::new()))).collect()
}

impl Writer {
    async fn run(mut self) {
        loop {
            let since = self.shared.cursors().since;
            let first = match since {
                None => tokio::select! {
                    biased;
                    req = self.rx.recv() => match req { Some(r) => Some(r), None => break },
                    () = self.shared.wake.notified() => None,
                },
                Some(since) => tokio::select! {
                    biased;
                    req = self.rx.recv() => match req { Some(r) => Some(r), None => break },
                    () = tokio::time::sleep_until((since + CURSOR_ALONE_AFTER).into()) => None,
                },
            };
            let mut batch: Vec<WriteRequest> = first.into_iter().collect();
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(req) => batch.push(req),
                    Err(_) => break,
                }
            }
            let flush_cursors =
                self.shared.cursors().since.is_some_and(|s| s.elapsed() >= CURSOR_FLUSH_INTERVAL)
                    || batch.iter().any(|r| matches!(r.op, WriteOp::Flush));
            self.commit(batch, flush_cursors).await;
        }
        // Every handle is gone: write what is left.
        self.commit(Vec::new(), true).await;
    }

    async fn commit(&mut self, batch: Vec<WriteRequest>, flush_cursors: bool) {
        let cursors: BTreeMap<CursorKey, i64> = if flush_cursors {
            let mut pending = self.shared.cursors();
            let waiting = std::mem::take(&mut pending.waiting);
            pending.since = None;
            pending.writing = waiting;
            pending.writing.iter().map(|(k, v)| (k.clone(), *v)).collect()
        } else {
            BTreeMap::new()
        };
        let ops: Vec<&WriteOp> = batch.iter().map(|r| &r.op).collect();
        let results = if cursors.is_empty() && ops.iter().all(|op| matches!(op, WriteOp::Flush)) {
            vec![Ok(Written::Done); ops.len()]
        } else {
            self.commit_with_retries(&ops, &cursors).await
        };
        let cursors_failed = results.iter().any(|r| matches!(r, Err(StoreError::Unavailable(_))));
        {
            let mut pending = self.shared.cursors();
            let writing = std::mem::take(&mut pending.writing);
            if cursors_failed && !writing.is_empty() {
                // Not written: keep them for the next transaction.
                for (key, ts) in writing {
                    let cursor = pending.waiting.entry(key).or_insert(ts);
                    *cursor = (*cursor).max(ts);
                }
                pending.since.get_or_insert_with(Instant::now);
            }
        }
        for (req, result) in batch.into_iter().zip(results) {
            let _ = req.done.send(result);
        }
    }

    async fn commit_with_retries(&self, ops: &[&WriteOp], cursors: &BTreeMap<CursorKey, i64>) -> Vec<Reply> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.commit_batch(ops, cursors).await {
                Ok(results) => {
                    self.shared.mark_up();
                    return results;
                }
                Err(BatchError::Retry(e)) if attempt < RETRIES => {
                    tracing::debug!(error = %e, attempt, "PostgreSQL batch conflicted with another writer; retrying");
                }
                Err(BatchError::Retry(e) | BatchError::Statement(e)) => {
                    tracing::debug!(error = %e, "PostgreSQL batch failed; replaying write by write");
                    return match self.commit_each(ops, cursors).await {
                        Ok(results) => results,
                        Err(e) => self.fail_all(ops, e),
                    };
                }
                Err(BatchError::Down(e)) => return self.fail_all(ops, e),
            }
        }
    }

    fn fail_all(&self, ops: &[&WriteOp], error: StoreError) -> Vec<Reply> {
        match &error {
            StoreError::Unavailable(m) => self.shared.mark_down(m),
            StoreError::Backend(m) => tracing::error!(error = %m, "PostgreSQL commit failed"),
        }
        vec![Err(error); ops.len()]
    }

    /// The fast path: the whole batch in one transaction, its statements pipelined,
    /// bounded by [`STATEMENT_TIMEOUT`].
    async fn commit_batch(
        &self,
        ops: &[&WriteOp],
        cursors: &BTreeMap<CursorKey, i64>,
    ) -> Result<Vec<Reply>, BatchError> {
        let mut client = self.shared.pool.get().await.map_err(|e| BatchError::Down(pool_error(e)))?;
        match tokio::time::timeout(STATEMENT_TIMEOUT, run_batch(&mut client, ops, cursors)).await {
            Ok(result) => {
                if result.is_ok() {
                    self.shared.commits.fetch_add(1, Ordering::Relaxed);
                }
                result
            }
            Err(_) => {
                // The connection may hold the transaction open: close it, never reuse it.
                drop(deadpool_postgres::Object::take(client));
                Err(BatchError::Down(timed_out()))
            }
        }
    }

    /// The slow path after a failed batch: a savepoint per write, so one bad write fails
    /// alone. Returns each write's outcome, or the error that failed the transaction.
    async fn commit_each(
        &self,
        ops: &[&WriteOp],
        cursors: &BTreeMap<CursorKey, i64>,
    ) -> Result<Vec<Reply>, StoreError> {
        let mut client = self.shared.pool.get().await.map_err(pool_error)?;
        match tokio::time::timeout(STATEMENT_TIMEOUT, run_each(&mut client, ops, cursors)).await {
            Ok(result) => {
                if result.is_ok() {
                    self.shared.commits.fetch_add(1, Ordering::Relaxed);
                }
                result
            }
            Err(_) => {
                drop(deadpool_postgres::Object::take(client));
                Err(timed_out())
            }
        }
    }
}

fn timed_out() -> StoreError {
    StoreError::Unavailable(format!("PostgreSQL did not commit within {}s", STATEMENT_TIMEOUT.as_secs()))
}

/// [`Writer::commit_batch`]'s transaction.
async fn run_batch(
    client: &mut deadpool_postgres::Object,
    ops: &[&WriteOp],
    cursors: &BTreeMap<CursorKey, i64>,
) -> Result<Vec<Reply>, BatchError> {
    let tx = client.transaction().await.map_err(classify)?;
    let statements: Vec<Option<(&'static str, Params)>> = ops.iter().map(|op| op.statement()).collect();
    let mut prepared = HashMap::new();
    let lock = lock_order(ops);
    let cursor_params = cursor_params(cursors);
    for sql in statements
        .iter()
        .flatten()
        .map(|(sql, _)| *sql)
        .chain(lock.is_some().then_some(sql::LOCK_CONVERSATIONS))
        .chain(cursor_params.is_some().then_some(sql::SAVE_CURSORS))
    {
        if !prepared.contains_key(sql) {
            prepared.insert(sql, tx.prepare_cached(sql).await.map_err(classify)?);
        }
    }
    let lock_refs: Option<Vec<&(dyn ToSql + Sync)>> = lock.as_ref().map(refs);
    let op_refs: Vec<Option<Vec<&(dyn ToSql + Sync)>>> =
        statements.iter().map(|s| s.as_ref().map(|(_, p)| refs(p))).collect();
    let cursor_refs: Option<Vec<&(dyn ToSql + Sync)>> = cursor_params.as_ref().map(refs);
    let mut futures: Vec<RowsFuture<'_>> = Vec::new();
    if let (Some(params), Some(stmt)) = (&lock_refs, prepared.get(sql::LOCK_CONVERSATIONS)) {
        futures.push(Box::pin(tx.query(stmt, params)));
    }
    let mut slots = Vec::with_capacity(ops.len());
    for (statement, params) in statements.iter().zip(&op_refs) {
        match (statement, params) {
            (Some((sql, _)), Some(params)) => {
                let Some(stmt) = prepared.get(sql) else {
                    return Err(BatchError::Down(StoreError::Backend("statement not prepared".into())));
                };
                slots.push(Some(futures.len()));
                futures.push(Box::pin(tx.query(stmt, params)));
            }
            _ => slots.push(None),
        }
    }
    if let (Some(params), Some(stmt)) = (&cursor_refs, prepared.get(sql::SAVE_CURSORS)) {
        futures.push(Box::pin(tx.query(stmt, params)));
    }
    let mut outputs = pipeline(futures).await;
    // The first failure is the cause; later ones only say the transaction aborted.
    if let Some(pos) = outputs.iter().position(Result::is_err) {
        let Err(e) = outputs.swap_remove(pos) else { unreachable!("position found an error") };
        return Err(classify(e));
    }
    let results = ops
        .iter()
        .zip(&slots)
        .map(|(op, slot)| match slot.and_then(|i| outputs.get(i)) {
            Some(Ok(rows)) => op.outcome(rows),
            _ => Ok(Written::Done),
        })
        .collect();
    tx.commit().await.map_err(classify)?;
    Ok(results)
}

/// [`Writer::commit_each`]'s transaction.
async fn run_each(
    client: &mut deadpool_postgres::Object,
    ops: &[&WriteOp],
    cursors: &BTreeMap<CursorKey, i64>,
) -> Result<Vec<Reply>, StoreError> {
    let mut tx = client.transaction().await.map_err(pg_error)?;
    if let Some(lock) = lock_order(ops) {
        tx.query(sql::LOCK_CONVERSATIONS, &refs(&lock)).await.map_err(pg_error)?;
    }
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        let Some((sql, params)) = op.statement() else {
            results.push(Ok(Written::Done));
            continue;
        };
        let sp = tx.transaction().await.map_err(pg_error)?;
        match sp.query(sql, &refs(&params)).await {
            Ok(rows) => {
                sp.commit().await.map_err(pg_error)?;
                results.push(op.outcome(&rows));
            }
            Err(e) if is_connection_error(&e) => return Err(pg_error(e)),
            Err(e) => {
                sp.rollback().await.map_err(pg_error)?;
                results.push(Err(pg_error(e)));
            }
        }
    }
    if let Some(params) = cursor_params(cursors) {
        tx.query(sql::SAVE_CURSORS, &refs(&params)).await.map_err(pg_error)?;
    }
    tx.commit().await.map_err(pg_error)?;
    Ok(results)
}

/// The parameters of [`sql::LOCK_CONVERSATIONS`] when the batch touches more than one
/// conversation (one cannot deadlock against another batch's order) or appends with a
/// dedupe token (whose check must run after the lock is held).
fn lock_order(ops: &[&WriteOp]) -> Option<Params> {
    let mut keys: Vec<(&str, &str)> = ops.iter().filter_map(|op| op.conversation()).collect();
    keys.sort_unstable();
    keys.dedup();
    // One conversation locks itself in its statement, unless a dedupe check must see
    // what other nodes committed before it (see `sql::APPEND`).
    let checks_dedupe = ops.iter().any(|op| matches!(op, WriteOp::Append(_, _, Some(_))));
    if keys.is_empty() || (keys.len() < 2 && !checks_dedupe) {
        return None;
    }
    let apps: Vec<String> = keys.iter().map(|k| k.0.to_owned()).collect();
    let ids: Vec<String> = keys.iter().map(|k| k.1.to_owned()).collect();
    Some(vec![Box::new(apps), Box::new(ids)])
}

/// The parameters of [`sql::SAVE_CURSORS`], if there are cursors (sorted: the
/// `BTreeMap` order, the same on every node).
fn cursor_params(cursors: &BTreeMap<CursorKey, i64>) -> Option<Params> {
    if cursors.is_empty() {
        return None;
    }
    let mut apps = Vec::with_capacity(cursors.len());
    let mut cids = Vec::with_capacity(cursors.len());
    let mut clients = Vec::with_capacity(cursors.len());
    let mut positions = Vec::with_capacity(cursors.len());
    for ((app, cid, client), ts) in cursors {
        apps.push(app.clone());
        cids.push(cid.clone());
        clients.push(client.clone());
        positions.push(*ts);
    }
    Some(vec![Box::new(apps), Box::new(cids), Box::new(clients), Box::new(positions)])
}

fn text(bytes: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(bytes).map_err(|e| StoreError::Backend(format!("stored body is not UTF-8: {e}")))
}

/// A message from the columns of [`sql::MESSAGE_COLUMNS`], starting at `at`.
fn message_row(app: &str, cid: &str, r: &Row, at: usize) -> Result<StoredMessage, StoreError> {
    Ok(StoredMessage {
        app: app.to_owned(),
        cid: cid.to_owned(),
        id: r.try_get(at).map_err(backend)?,
        ts: r.try_get(at + 1).map_err(backend)?,
        from: r.try_get(at + 2).map_err(backend)?,
        data: text(r.try_get(at + 3).map_err(backend)?)?,
        receipt: r.try_get(at + 4).map_err(backend)?,
        patched_at: r.try_get(at + 5).map_err(backend)?,
        binary: r.try_get(at + 6).map_err(backend)?,
        mentions: confab_types::Mentions {
            all: r.try_get(at + 7).map_err(backend)?,
            pids: r.try_get::<_, Option<Vec<String>>>(at + 8).map_err(backend)?.unwrap_or_default(),
        },
        recipients: r.try_get(at + 9).map_err(backend)?,
    })
}

fn conversation_row(app: &str, r: &Row) -> Result<ConversationRecord, StoreError> {
    let attrs: String = r.try_get(4).map_err(backend)?;
    // An unreadable document is an error, not `{}`: read as empty, the next attribute
    // update would write the empty document back and erase it.
    let attrs = match serde_json::from_str::<Value>(&attrs) {
        Ok(Value::Object(m)) => m,
        Ok(_) => Map::new(),
        Err(e) => return Err(StoreError::Backend(format!("stored attributes do not parse: {e}"))),
    };
    let last_ts: i64 = r.try_get(7).map_err(backend)?;
    let last_mid: Option<String> = r.try_get(8).map_err(backend)?;
    let last_message = match last_mid {
        Some(id) if last_ts > 0 => Some(LastMessage {
            id,
            ts: last_ts,
            from: r.try_get::<_, Option<String>>(9).map_err(backend)?.unwrap_or_default(),
            data: text(r.try_get::<_, Option<Vec<u8>>>(10).map_err(backend)?.unwrap_or_default())?,
        }),
        _ => None,
    };
    let list = |i: usize| -> Result<Vec<String>, StoreError> {
        Ok(r.try_get::<_, Option<Vec<String>>>(i).map_err(backend)?.unwrap_or_default())
    };
    Ok(ConversationRecord {
        app: app.to_owned(),
        id: r.try_get(0).map_err(backend)?,
        kind: ConvKind::from_i64(r.try_get(1).map_err(backend)?),
        creator: r.try_get(2).map_err(backend)?,
        unique_key: r.try_get(3).map_err(backend)?,
        attrs,
        created_at: r.try_get(5).map_err(backend)?,
        updated_at: r.try_get(6).map_err(backend)?,
        expires_at: r.try_get(11).map_err(backend)?,
        members: list(12)?,
        muted: list(13)?,
        managers: list(14)?,
        shut_up: list(15)?,
        blocked: list(16)?,
        last_message,
    })
}

/// An outbox entry from app, key, hook, params, created_at, attempts, due_at.
fn outbox_row(r: &Row) -> Result<OutboxEntry, StoreError> {
    let attempts: i64 = r.try_get(5).map_err(backend)?;
    Ok(OutboxEntry {
        call: HookCall {
            app: r.try_get(0).map_err(backend)?,
            key: r.try_get(1).map_err(backend)?,
            hook: r.try_get(2).map_err(backend)?,
            params: r.try_get(3).map_err(backend)?,
            created_at: r.try_get(4).map_err(backend)?,
        },
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        due_at: r.try_get(6).map_err(backend)?,
    })
}

/// Borrows owned parameters the way `query` takes them.
fn refs(params: &Params) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store for PostgresStore {
    fn create_conversation_notify(
        &self,
        record: ConversationRecord,
        notify: Vec<HookCall>,
    ) -> StoreFuture<'_, ()> {
        self.write_unit(WriteOp::CreateConversation(Box::new(record), notify))
    }

    fn conversation<'a>(&'a self, app: &'a str, cid: &'a str) -> StoreFuture<'a, Option<ConversationRecord>> {
        Box::pin(self.read_conversation(app, "c.id", cid))
    }

    fn find_unique<'a>(&'a self, app: &'a str, key: &'a str) -> StoreFuture<'a, Option<ConversationRecord>> {
        Box::pin(self.read_conversation(app, "c.unique_key", key))
    }

    fn scan_conversations<'a>(
        &'a self,
        app: &'a str,
        filter: ScanFilter,
    ) -> StoreFuture<'a, Vec<ConversationRecord>> {
        Box::pin(async move {
            let sql = format!(
                "{} WHERE c.app = $1::text AND ($2::text[] IS NULL OR c.id = ANY($2::text[]))
                   AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM members x
                         WHERE x.app = c.app AND x.cid = c.id AND x.client = $3::text))
                   AND ($4::bigint IS NULL OR c.kind = $4::bigint)
                 ORDER BY c.created_at LIMIT $5::bigint",
                sql::CONVERSATION
            );
            let kind = filter.kind.map(|k| k as i64);
            let max = limit(filter.max.saturating_add(1));
            let rows = self.query(&sql, &[&app, &filter.ids, &filter.member, &kind, &max]).await?;
            rows.iter().map(|r| conversation_row(app, r)).collect()
        })
    }

    fn conversations_after<'a>(
        &'a self,
        app: &'a str,
        after: Option<&'a str>,
        kind: Option<ConvKind>,
        limit_to: usize,
    ) -> StoreFuture<'a, Vec<ConversationRecord>> {
        Box::pin(async move {
            // The primary key (app, id) orders the walk and seeks to its start (each
            // condition present only when set, so the plan is the index range, not a
            // scan and sort); `id` is COLLATE "C", so ids compare bytewise as in the
            // other stores.
            let kind = kind.map(|k| k as i64);
            let max = limit(limit_to);
            let mut conditions = String::new();
            let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&app];
            if let Some(after) = &after {
                params.push(after);
                conditions.push_str(&format!(" AND c.id > ${}::text", params.len()));
            }
            if let Some(kind) = &kind {
                params.push(kind);
                conditions.push_str(&format!(" AND c.kind = ${}::bigint", params.len()));
            }
            params.push(&max);
            let sql = format!(
                "{} WHERE c.app = $1::text{conditions} ORDER BY c.id LIMIT ${}::bigint",
                sql::CONVERSATION,
                params.len()
            );
            let rows = self.query(&sql, &params).await?;
            rows.iter().map(|r| conversation_row(app, r)).collect()
        })
    }

    fn set_attributes<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        attrs: Map<String, Value>,
        updated_at: i64,
    ) -> StoreFuture<'a, ()> {
        self.write_unit(WriteOp::SetAttributes {
            app: app.into(),
            cid: cid.into(),
            attrs: Value::Object(attrs).to_string(),
            updated_at,
        })
    }

    fn add_members_notify<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        members: Vec<String>,
        updated_at: i64,
        notify: Vec<HookCall>,
    ) -> StoreFuture<'a, ()> {
        self.write_unit(WriteOp::AddMembers { app: app.into(), cid: cid.into(), members, updated_at, notify })
    }

    fn remove_members_notify<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        members: Vec<String>,
        updated_at: i64,
        notify: Vec<HookCall>,
    ) -> StoreFuture<'a, ()> {
        self.write_unit(WriteOp::RemoveMembers {
            app: app.into(),
            cid: cid.into(),
            members,
            updated_at,
            notify,
        })
    }

    fn append_message_notify(
        &self,
        message: StoredMessage,
        notify: Vec<HookCall>,
        dedupe: Option<String>,
    ) -> StoreFuture<'static, Appended> {
        let appended = self.append_notify(message, notify, dedupe);
        Box::pin(async move {
            appended.await.map(|p| match p.original {
                Some(id) => Appended::resent(id, p.ts),
                None => Appended::new(p.ts, p.prev_ts),
            })
        })
    }

    fn outbox_put(&self, notify: Vec<HookCall>) -> StoreFuture<'static, ()> {
        if notify.is_empty() {
            return Box::pin(std::future::ready(Ok(())));
        }
        self.write_unit(WriteOp::OutboxPut(notify))
    }

    fn outbox_due(&self, now: i64, limit_to: usize) -> StoreFuture<'_, Vec<OutboxEntry>> {
        Box::pin(async move {
            let rows = self.query(sql::OUTBOX_DUE, &[&now, &limit(limit_to)]).await?;
            rows.iter().map(outbox_row).collect()
        })
    }

    fn outbox_claim(&self, now: i64, limit_to: usize, lease_until: i64) -> StoreFuture<'_, Vec<OutboxEntry>> {
        Box::pin(async move {
            // One statement on a pooled connection: the lease commits at once, apart
            // from the writer's batches (a claim need not wait behind them).
            let rows = self.query(sql::OUTBOX_CLAIM, &[&now, &limit(limit_to), &lease_until]).await?;
            let mut claimed = rows
                .iter()
                .map(|r| Ok((outbox_row(r)?, r.try_get::<_, i64>(7).map_err(backend)?)))
                .collect::<Result<Vec<_>, StoreError>>()?;
            // `RETURNING` keeps no order.
            claimed.sort_by_key(|(e, seq)| (e.due_at, *seq));
            Ok(claimed.into_iter().map(|(e, _)| e).collect())
        })
    }

    fn outbox_len(&self, max: u64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let max = i64::try_from(max).unwrap_or(i64::MAX);
            let rows = self.query(sql::OUTBOX_LEN, &[&max]).await?;
            let n: i64 = rows.first().map(|r| r.try_get(0).map_err(backend)).transpose()?.unwrap_or(0);
            Ok(n.unsigned_abs())
        })
    }

    fn outbox_done<'a>(&'a self, app: &'a str, key: &'a str) -> StoreFuture<'a, ()> {
        self.write_unit(WriteOp::OutboxDone { app: app.into(), key: key.into() })
    }

    fn outbox_retry<'a>(
        &'a self,
        app: &'a str,
        key: &'a str,
        attempts: u32,
        due_at: i64,
    ) -> StoreFuture<'a, ()> {
        self.write_unit(WriteOp::OutboxRetry { app: app.into(), key: key.into(), attempts, due_at })
    }

    fn messages<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        range: MessageRange,
    ) -> StoreFuture<'a, Vec<StoredMessage>> {
        Box::pin(async move {
            let mut sql = format!(
                "SELECT {} FROM messages WHERE app = $1::text AND cid = $2::text",
                sql::MESSAGE_COLUMNS
            );
            let mut params: Vec<Box<dyn ToSql + Sync + Send>> =
                vec![Box::new(app.to_owned()), Box::new(cid.to_owned())];
            if let Some((ts, inclusive)) = range.after {
                params.push(Box::new(ts));
                sql.push_str(&format!(
                    " AND ts {} ${}::bigint",
                    if inclusive { ">=" } else { ">" },
                    params.len()
                ));
            }
            if let Some((ts, inclusive)) = range.before {
                params.push(Box::new(ts));
                sql.push_str(&format!(
                    " AND ts {} ${}::bigint",
                    if inclusive { "<=" } else { "<" },
                    params.len()
                ));
            }
            if let Some(lctype) = range.lctype {
                params.push(Box::new(lctype));
                sql.push_str(&format!(" AND lctype = ${}::bigint", params.len()));
            }
            if let Some(client) = range.visible_to {
                params.push(Box::new(client));
                sql.push_str(&format!(
                    " AND (recipients IS NULL OR ${}::text = ANY(recipients))",
                    params.len()
                ));
            }
            sql.push_str(if range.newest_first { " ORDER BY ts DESC" } else { " ORDER BY ts ASC" });
            params.push(Box::new(limit(range.limit)));
            sql.push_str(&format!(" LIMIT ${}::bigint", params.len()));
            let rows = self.query(&sql, &refs(&params)).await?;
            let mut messages =
                rows.iter().map(|r| message_row(app, cid, r, 0)).collect::<Result<Vec<_>, _>>()?;
            if range.newest_first {
                messages.reverse();
            }
            Ok(messages)
        })
    }

    fn member_cursors<'a>(&'a self, app: &'a str, client: &'a str) -> StoreFuture<'a, Vec<MemberCursor>> {
        Box::pin(async move {
            let rows = self.query(sql::MEMBER_CURSORS, &[&app, &client]).await?;
            let mut cursors = rows
                .iter()
                .map(|r| {
                    Ok(MemberCursor {
                        cid: r.try_get(0).map_err(backend)?,
                        cursor: r.try_get(1).map_err(backend)?,
                        last_ts: r.try_get(2).map_err(backend)?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            for c in &mut cursors {
                c.cursor = c.cursor.max(self.pending_cursor(app, &c.cid, client).unwrap_or(0));
            }
            Ok(cursors)
        })
    }

    fn save_cursor(&self, app: &str, client: &str, cid: &str, ts: i64) {
        let wake = {
            let mut pending = self.shared.cursors();
            let first = pending.since.is_none();
            if first {
                pending.since = Some(Instant::now());
            }
            let cursor = pending.waiting.entry((app.into(), cid.into(), client.into())).or_insert(ts);
            *cursor = (*cursor).max(ts);
            first
        };
        // The writer is woken only when it may be idle without a deadline; otherwise
        // the cursor rides along with a transaction it is about to start.
        if wake {
            self.shared.wake.notify_one();
        }
    }

    fn commit_cursors_soon(&self) {
        // Queued now (in call order) and left to commit with the next batch.
        drop(self.write(WriteOp::Flush));
    }

    fn save_read<'a>(&'a self, app: &'a str, client: &'a str, cid: &'a str, ts: i64) -> StoreFuture<'a, ()> {
        self.write_unit(WriteOp::SaveRead { app: app.into(), client: client.into(), cid: cid.into(), ts })
    }

    fn message<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        id: &'a str,
    ) -> StoreFuture<'a, Option<StoredMessage>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT {} FROM messages WHERE app = $1::text AND cid = $2::text AND id = $3::text LIMIT 1",
                sql::MESSAGE_COLUMNS
            );
            let rows = self.query(&sql, &[&app, &cid, &id]).await?;
            rows.first().map(|r| message_row(app, cid, r, 0)).transpose()
        })
    }

    fn patch_message<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        ts: i64,
        data: String,
        binary: Option<bool>,
        patched_at: i64,
    ) -> StoreFuture<'a, ()> {
        self.write_unit(WriteOp::Patch { app: app.into(), cid: cid.into(), ts, data, binary, patched_at })
    }

    fn set_role<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        client: &'a str,
        role: &'a str,
    ) -> StoreFuture<'a, ()> {
        self.write_unit(WriteOp::SetRole {
            app: app.into(),
            cid: cid.into(),
            client: client.into(),
            role: role.into(),
        })
    }

    fn set_shut_up<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        clients: Vec<String>,
        on: bool,
    ) -> StoreFuture<'a, ()> {
        self.write_unit(WriteOp::SetShutUp { app: app.into(), cid: cid.into(), clients, on })
    }

    fn set_blocked<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        clients: Vec<String>,
        on: bool,
    ) -> StoreFuture<'a, ()> {
        self.write_unit(WriteOp::SetBlocked { app: app.into(), cid: cid.into(), clients, on })
    }

    fn set_marks<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        kind: MarkKind,
        clients: Vec<String>,
        on: bool,
        until: Option<i64>,
    ) -> StoreFuture<'a, ()> {
        self.write_unit(WriteOp::SetMarks { app: app.into(), cid: cid.into(), kind, clients, on, until })
    }

    fn marks<'a>(&'a self, app: &'a str, cid: &'a str) -> StoreFuture<'a, Vec<ClientMark>> {
        Box::pin(async move {
            let rows = self.query(sql::MARKS, &[&app, &cid]).await?;
            let mut marks = Vec::with_capacity(rows.len());
            for r in &rows {
                // A kind this build does not know (written by a newer one) is skipped.
                let Some(kind) = MarkKind::from_i64(r.try_get(0).map_err(backend)?) else { continue };
                marks.push(ClientMark {
                    kind,
                    client: r.try_get(1).map_err(backend)?,
                    until: r.try_get(2).map_err(backend)?,
                });
            }
            Ok(marks)
        })
    }

    fn client_marks<'a>(
        &'a self,
        app: &'a str,
        client: &'a str,
        kind: MarkKind,
        after: Option<&'a str>,
        limit_to: usize,
    ) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async move {
            let (kind, max) = (kind as i64, limit(limit_to));
            let rows = self.query(sql::CLIENT_MARKS, &[&app, &client, &kind, &after, &max]).await?;
            rows.iter().map(|r| r.try_get(0).map_err(backend)).collect()
        })
    }

    fn count_client_marks<'a>(
        &'a self,
        app: &'a str,
        client: &'a str,
        kind: MarkKind,
    ) -> StoreFuture<'a, usize> {
        Box::pin(async move {
            let kind = kind as i64;
            let rows = self.query(sql::COUNT_CLIENT_MARKS, &[&app, &client, &kind]).await?;
            let n: i64 = rows.first().map_or(Ok(0), |r| r.try_get(0).map_err(backend))?;
            Ok(usize::try_from(n).unwrap_or(0))
        })
    }

    fn patched_since<'a>(
        &'a self,
        app: &'a str,
        client: &'a str,
        since: i64,
        limit_to: usize,
    ) -> StoreFuture<'a, Vec<StoredMessage>> {
        Box::pin(async move {
            let max = limit(limit_to);
            let rows = self.query(sql::PATCHED_SINCE, &[&app, &client, &since, &max]).await?;
            rows.iter()
                .map(|r| {
                    let cid: String = r.try_get(0).map_err(backend)?;
                    message_row(app, &cid, r, 1)
                })
                .collect()
        })
    }

    fn set_muted<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        client: &'a str,
        muted: bool,
    ) -> StoreFuture<'a, ()> {
        self.write_unit(WriteOp::SetMuted { app: app.into(), cid: cid.into(), client: client.into(), muted })
    }

    fn member_positions<'a>(&'a self, app: &'a str, cid: &'a str) -> StoreFuture<'a, Vec<MemberPosition>> {
        Box::pin(async move {
            let rows = self.query(sql::MEMBER_POSITIONS, &[&app, &cid]).await?;
            rows.iter()
                .map(|r| {
                    let client: String = r.try_get(0).map_err(backend)?;
                    let stored: i64 = r.try_get(1).map_err(backend)?;
                    let acked_upto = stored.max(self.pending_cursor(app, cid, &client).unwrap_or(0));
                    Ok(MemberPosition { client, acked_upto, read_upto: r.try_get(2).map_err(backend)? })
                })
                .collect()
        })
    }

    fn release_unique<'a>(&'a self, app: &'a str, cid: &'a str) -> StoreFuture<'a, ()> {
        self.write_unit(WriteOp::ReleaseUnique { app: app.into(), cid: cid.into() })
    }

    fn delete_conversation<'a>(&'a self, app: &'a str, cid: &'a str) -> StoreFuture<'a, ()> {
        self.write_unit(WriteOp::DeleteConversation { app: app.into(), cid: cid.into() })
    }

    fn delete_message<'a>(&'a self, app: &'a str, cid: &'a str, ts: i64) -> StoreFuture<'a, ()> {
        self.write_unit(WriteOp::DeleteMessage { app: app.into(), cid: cid.into(), ts })
    }

    fn remove_recipient<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        ts: i64,
        client: &'a str,
    ) -> StoreFuture<'a, ()> {
        self.write_unit(WriteOp::RemoveRecipient {
            app: app.into(),
            cid: cid.into(),
            ts,
            client: client.into(),
        })
    }

    fn app_messages<'a>(
        &'a self,
        app: &'a str,
        from: Option<&'a str>,
        range: MessageRange,
    ) -> StoreFuture<'a, Vec<StoredMessage>> {
        Box::pin(async move {
            // Only the logs of conversations: side logs have no conversation row.
            let mut sql = format!(
                "SELECT g.cid, {} FROM messages g JOIN conversations c ON c.app = g.app AND c.id = g.cid
                  WHERE g.app = $1::text",
                sql::MESSAGE_COLUMNS.split(", ").map(|c| format!("g.{c}")).collect::<Vec<_>>().join(", ")
            );
            let mut params: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(app.to_owned())];
            if let Some(from) = from {
                params.push(Box::new(from.to_owned()));
                sql.push_str(&format!(" AND g.sender = ${}::text", params.len()));
            }
            if let Some((ts, inclusive)) = range.after {
                params.push(Box::new(ts));
                sql.push_str(&format!(
                    " AND g.ts {} ${}::bigint",
                    if inclusive { ">=" } else { ">" },
                    params.len()
                ));
            }
            if let Some((ts, inclusive)) = range.before {
                params.push(Box::new(ts));
                sql.push_str(&format!(
                    " AND g.ts {} ${}::bigint",
                    if inclusive { "<=" } else { "<" },
                    params.len()
                ));
            }
            sql.push_str(if range.newest_first {
                " ORDER BY g.ts DESC, g.cid DESC"
            } else {
                " ORDER BY g.ts ASC, g.cid ASC"
            });
            params.push(Box::new(limit(range.limit)));
            sql.push_str(&format!(" LIMIT ${}::bigint", params.len()));
            let rows = self.query(&sql, &refs(&params)).await?;
            let mut messages = rows
                .iter()
                .map(|r| {
                    let cid: String = r.try_get(0).map_err(backend)?;
                    message_row(app, &cid, r, 1)
                })
                .collect::<Result<Vec<_>, _>>()?;
            if range.newest_first {
                messages.reverse();
            }
            Ok(messages)
        })
    }

    fn joined_at<'a>(&'a self, app: &'a str, cid: &'a str, client: &'a str) -> StoreFuture<'a, Option<i64>> {
        Box::pin(async move {
            let rows = self.query(sql::JOINED_AT, &[&app, &cid, &client]).await?;
            rows.first().map(|r| r.try_get(0).map_err(backend)).transpose()
        })
    }

    /// What the writer, the reads and the probe (every second while lost, every 5 s
    /// otherwise) last saw: answering costs no query, so `/healthz` polled often does not
    /// load the database, and a pool busy with reads does not look like a lost database.
    fn health(&self) -> StoreFuture<'_, ()> {
        let result = if self.shared.reachable.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!("PostgreSQL at {} is unreachable", self.shared.target)))
        };
        Box::pin(std::future::ready(result))
    }

    fn unread<'a>(&'a self, app: &'a str, client: &'a str, max: usize) -> StoreFuture<'a, Vec<UnreadCount>> {
        Box::pin(async move {
            let max = limit(max);
            let rows = self.query(sql::UNREAD, &[&app, &client, &max]).await?;
            rows.iter()
                .map(|r| {
                    let last_mid: Option<String> = r.try_get(2).map_err(backend)?;
                    let newer: Option<String> = r.try_get(7).map_err(backend)?;
                    let last = match (newer, last_mid) {
                        // A targeted message for the client after the conversation's last.
                        (Some(id), _) => Some(LastMessage {
                            id,
                            ts: r.try_get(8).map_err(backend)?,
                            from: r.try_get(9).map_err(backend)?,
                            data: text(r.try_get(10).map_err(backend)?)?,
                        }),
                        (None, Some(id)) => Some(LastMessage {
                            id,
                            ts: r.try_get(1).map_err(backend)?,
                            from: r.try_get::<_, Option<String>>(3).map_err(backend)?.unwrap_or_default(),
                            data: text(
                                r.try_get::<_, Option<Vec<u8>>>(4).map_err(backend)?.unwrap_or_default(),
                            )?,
                        }),
                        (None, None) => None,
                    };
                    Ok(UnreadCount {
                        cid: r.try_get(0).map_err(backend)?,
                        unread: r.try_get(5).map_err(backend)?,
                        last,
                        mentioned: r.try_get(6).map_err(backend)?,
                    })
                })
                .collect()
        })
    }
}

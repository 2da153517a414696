//! Confab's embedded store: SQLite (bundled) in WAL mode.
//!
//! - **One writer thread** owns the write connection. Writes arrive on a channel in call
//!   order; the thread commits everything queued in one transaction (group commit, one
//!   fsync for many messages) and then completes each caller. A caller is told "done"
//!   only after the commit, which is what lets the engine acknowledge a message only
//!   once it is durable. Within a transaction the writes run without a savepoint each;
//!   only when one fails is the batch rolled back and replayed write by write, so one
//!   bad write fails alone.
//! - **Delivery cursors** are positions, not facts: the acks of one member collapse into
//!   one row update. Buffered cursors ride along with the first transaction the writer
//!   commits anyway once the oldest of them is [`CURSOR_FLUSH_INTERVAL`] old (no fsync
//!   of their own while other writes flow); if no write comes, they are committed alone
//!   at [`CURSOR_ALONE_AFTER`] (and on [`SqliteStore::flush`]). Reads see unwritten
//!   positions too; a crash loses that much cursor progress, which redelivers only the
//!   messages acknowledged in the moment before it.
//! - **Readers** use a small pool of read-only connections on blocking threads; WAL lets
//!   them run beside the writer. The one read of every session open (a client's
//!   cursors, a few index entries) runs on the caller's thread instead: the hop to a
//!   blocking thread and back cost more than the read.
//! - Migrations are numbered SQL scripts applied in order; the version lives in
//!   `PRAGMA user_version`.

mod schema;

use confab_engine::ports::{
    Appended, ClientMark, ConvKind, ConversationRecord, HookCall, LastMessage, MarkKind, MemberCursor,
    MemberPosition, MessageRange, OutboxEntry, ScanFilter, Store, StoreError, StoreFuture, StoredMessage,
    UnreadCount,
};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

pub use confab_types::Durability;

/// The writer connection's page cache, in KiB (SQLite reads a negative `cache_size` as
/// KiB).
const WRITER_CACHE_KIB: i64 = -65536;

/// Most writes folded into one transaction.
const MAX_BATCH: usize = 1024;

/// A client's cursors, read at every session open. A correlated subquery, not a join:
/// SQLite re-prepared the join form on every call (see the test of that name).
const MEMBER_CURSORS: &str = "SELECT m.cid, m.cursor_ts,
        (SELECT c.last_ts FROM conversations c WHERE c.app = m.app AND c.id = m.cid)
    FROM members m WHERE m.app = ?1 AND m.client = ?2";

/// A client's read positions and its conversations' newest message, for unread counts
/// (a v3 login). Like [`MEMBER_CURSORS`] and [`UNREAD_IN_CONVERSATION`], no join: the
/// bundled SQLite (built with STAT4) marks a join with bound parameters as depending on
/// their values, and rusqlite clears a cached statement's bindings, so SQLite prepared
/// the joined form again on every call.
const MEMBER_READS: &str = "SELECT m.cid, m.read_ts,
        (SELECT c.last_ts FROM conversations c WHERE c.app = m.app AND c.id = m.cid AND c.kind <> 2)
    FROM members m WHERE m.app = ?1 AND m.client = ?2";

/// Whether the message `g` is for the client `?4`: every member, or one it names.
macro_rules! for_client {
    () => {
        "(g.recipients IS NULL OR EXISTS (SELECT 1 FROM json_each(g.recipients) r WHERE r.value = ?4))"
    };
}

/// One conversation's last message, how many messages for `?4` after `?3` are from
/// others than `?4`, whether one of them mentions `?4`, and whether targeted messages
/// came after the last message (then [`NEWEST_FOR_CLIENT`] finds `?4`'s newest).
const UNREAD_IN_CONVERSATION: &str = concat!(
    "SELECT COALESCE(c.shown_ts, c.last_ts), c.last_mid, c.last_from, c.last_data,
        (SELECT COUNT(*) FROM messages g
          WHERE g.app = c.app AND g.cid = c.id AND g.ts > ?3 AND g.sender <> ?4 AND ",
    for_client!(),
    "),
        EXISTS (SELECT 1 FROM messages g
          WHERE g.app = c.app AND g.cid = c.id AND g.ts > ?3 AND g.sender <> ?4 AND ",
    for_client!(),
    "
            AND (g.mention_all OR EXISTS (SELECT 1 FROM json_each(g.mention_pids) j WHERE j.value = ?4))),
        c.shown_ts IS NOT NULL
    FROM conversations c WHERE c.app = ?1 AND c.id = ?2"
);

/// The newest targeted message for `?4` after position `?3` (the last message's).
const NEWEST_FOR_CLIENT: &str = concat!(
    "SELECT id, ts, sender, body FROM messages g
      WHERE g.app = ?1 AND g.cid = ?2 AND g.ts > ?3 AND g.recipients IS NOT NULL AND ",
    for_client!(),
    " ORDER BY g.ts DESC LIMIT 1"
);

/// The columns [`message_row`] reads, in its order.
const MESSAGE_COLUMNS: &str =
    "id, ts, sender, body, receipt, patched_at, binary, mention_all, mention_pids, recipients";

/// The conversations a client is a member of.
const CLIENT_CONVERSATIONS: &str = "SELECT cid FROM members WHERE app = ?1 AND client = ?2";

/// A conversation's messages edited or recalled after `?3`, in no particular order: with
/// `ORDER BY patched_at` (or a join with `members`) SQLite prepared the statement again on
/// every call, as with [`MEMBER_READS`]. Edits are rare; the caller sorts and limits.
const PATCHED_IN_CONVERSATION: &str = concat!(
    "SELECT id, ts, sender, body, receipt, patched_at, binary, mention_all, mention_pids, recipients
    FROM messages g WHERE app = ?1 AND cid = ?2 AND patched_at > ?3 AND ",
    for_client!()
);

/// How long delivery cursors collect acks before they ride along with the next
/// transaction. Short, so a crash redelivers little; long enough that a member's acks in
/// a busy conversation collapse into one row update (with every commit instead, the
/// store spent ~15% more CPU per message in the durable 1:1 shape).
pub const CURSOR_FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// How long delivery cursors wait for another write to carry them before they are
/// committed alone (a quiet server: little to redeliver, and no fsync of their own
/// while messages flow).
pub const CURSOR_ALONE_AFTER: Duration = Duration::from_millis(100);

/// What a write reports: an append its position, other writes nothing.
type Done = oneshot::Sender<Result<Option<Appended>, StoreError>>;

/// (app, cid, client) of a member's delivery cursor.
type CursorKey = (String, String, String);

/// Delivery cursors saved but not yet committed: `waiting` for the next transaction,
/// `writing` in the transaction being committed (readers must still see those).
#[derive(Default)]
struct PendingCursors {
    waiting: HashMap<CursorKey, i64>,
    /// When the oldest of `waiting` was buffered.
    since: Option<Instant>,
    /// The writer waits for a write without a deadline: the next cursor must wake it.
    parked: bool,
    writing: HashMap<CursorKey, i64>,
}

impl PendingCursors {
    /// The newest unwritten position of a member's cursor, if any.
    fn get(&self, key: &CursorKey) -> Option<i64> {
        match (self.waiting.get(key), self.writing.get(key)) {
            (Some(a), Some(b)) => Some(*a.max(b)),
            (a, b) => a.or(b).copied(),
        }
    }
}

/// Shared between the store handles (which add and read) and the writer thread.
#[derive(Default)]
struct CursorBuffer(Mutex<PendingCursors>);

impl CursorBuffer {
    fn lock(&self) -> std::sync::MutexGuard<'_, PendingCursors> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

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
    /// A message, the hook calls that report it and its dedupe token, in one
    /// transaction.
    Append(StoredMessage, Vec<HookCall>, Option<String>),
    /// Hook calls of an event that has no other write.
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
    /// Nothing to write: completes when everything queued before it is committed.
    Flush,
    /// Nothing to write: wakes the writer, idle without a deadline, so it times the
    /// commit of the cursors just buffered (it waits for them only when it knows of them).
    Wake,
    SetRole {
        app: String,
        cid: String,
        client: String,
        role: String,
    },
    SetFlags {
        app: String,
        cid: String,
        clients: Vec<String>,
        on: bool,
        blocked: bool,
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
    SaveRead {
        app: String,
        client: String,
        cid: String,
        ts: i64,
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
}

struct WriteRequest {
    op: WriteOp,
    done: Option<Done>,
}

/// The SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    writer: mpsc::Sender<WriteRequest>,
    readers: Arc<ReadPool>,
    cursors: Arc<CursorBuffer>,
    commits: Arc<AtomicU64>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.readers.path).finish()
    }
}

struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    fn take(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(backend)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(backend)?;
        plan_once(&conn)?;
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < 8 {
            idle.push(conn);
        }
    }
}

/// How often the checkpoint thread looks for new commits to copy out of the WAL.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// WAL frames (pages) past which the log must start over: the writer then copies what
/// the checkpoint thread has not (see [`checkpoint_while_open`]). 4,096 frames: 16 MiB
/// with SQLite's 4 KiB pages.
const WAL_RESTART_FRAMES: i64 = if cfg!(test) { 64 } else { 4096 };

/// The size the WAL file is cut back to when the log starts over (`journal_size_limit`).
const WAL_KEEP_BYTES: i64 = if cfg!(test) { 256 << 10 } else { 64 << 20 };

/// Copies committed WAL frames into the database file beside the writer (a passive
/// checkpoint never blocks it), after each interval with new commits and at once while
/// it is behind, until the store is dropped (`commits` gone).
///
/// The log starts over from its beginning only when a write transaction begins with
/// every frame copied, which a busy writer never finds: its next transaction has begun
/// before this thread's copy ends. Without more, the WAL grew without bound under
/// steady load (2.7 GB in 8 s of the durable benchmark, every read searching a growing
/// index). So once the log is past [`WAL_RESTART_FRAMES`], this thread asks the writer
/// (`finish`) to copy the rest itself right after a commit — little, this thread copied
/// the rest — so that its next transaction begins with everything copied and starts
/// the log over.
fn checkpoint_while_open(conn: &Connection, commits: &std::sync::Weak<AtomicU64>, finish: &AtomicBool) {
    let mut copied = 0;
    // Whether the last checkpoint left frames behind and made progress: go again at
    // once. A reader holding an old snapshot stops the copy short; then wait, rather
    // than spin on checkpoints that cannot move.
    let mut behind = false;
    let mut done_before = 0;
    loop {
        if !behind {
            std::thread::sleep(CHECKPOINT_EVERY);
        }
        let Some(now) = commits.upgrade().map(|c| c.load(Ordering::Relaxed)) else { return };
        if now == copied {
            behind = false;
            continue;
        }
        match passive_checkpoint(conn) {
            Ok((log, done)) => {
                copied = now;
                behind = done < log && done != done_before;
                done_before = done;
                if log >= WAL_RESTART_FRAMES {
                    finish.store(true, Ordering::Release);
                }
            }
            Err(e) => {
                behind = false;
                tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
            }
        }
    }
}

/// Runs a passive checkpoint on `conn`: the frames in the log and those copied into
/// the database file.
fn passive_checkpoint(conn: &Connection) -> Result<(i64, i64), rusqlite::Error> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(1)?, r.get(2)?)))
}

/// Plans each cached statement once. Without the query planner stability guarantee,
/// SQLite lets the values bound to a statement steer its plan (may `?1` stand for the
/// constant it is compared with? could a term imply a partial index's condition?) and
/// then re-prepares the statement whenever those values change: for the position read
/// of every append that was ~40% of the writer's instructions (callgrind, durable 1:1).
fn plan_once(conn: &Connection) -> Result<(), StoreError> {
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true).map_err(backend)?;
    Ok(())
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) `confab.db` in `dir`, creating `dir`.
    pub fn open(dir: &Path, durability: Durability) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_file(&dir.join("confab.db"), durability)
    }

    /// Opens (creating and migrating if needed) the database file `path`, creating its
    /// directory if needed (`--store sqlite:PATH`).
    pub fn open_file(path: &Path, durability: Durability) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("{}: {e}", dir.display())))?;
        }
        let path = path.to_path_buf();
        let mut conn = Connection::open(&path).map_err(backend)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(backend)?;
        plan_once(&conn)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(backend)?;
        let sync = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync).map_err(backend)?;
        // The writer revisits the same B-tree pages (each conversation's newest leaf,
        // its index pages, member rows) batch after batch; with SQLite's default 2 MiB
        // cache it re-read them from the file about twice per message (pread counted in
        // the durable benchmark: 143k -> 47k per 2 s with 64 MiB).
        conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB).map_err(backend)?;
        schema::migrate(&mut conn).map_err(backend)?;
        // Checkpoints run on a thread of their own (below), not inside the writer's
        // commits: copying the WAL into the database file (reads, writes, an fsync)
        // stalled every few commits of the writer, which every acknowledgement waits for.
        conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(backend)?;
        conn.pragma_update(None, "journal_size_limit", WAL_KEEP_BYTES).map_err(backend)?;
        let finish_checkpoint = Arc::new(AtomicBool::new(false));
        let checkpointer = Connection::open(&path).map_err(backend)?;
        checkpointer.busy_timeout(std::time::Duration::from_secs(5)).map_err(backend)?;
        let (tx, rx) = mpsc::channel();
        let cursors = Arc::new(CursorBuffer::default());
        let commits = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            conn,
            cursors: cursors.clone(),
            commits: commits.clone(),
            positions: Positions::default(),
            finish_checkpoint: finish_checkpoint.clone(),
        };
        std::thread::Builder::new()
            .name("confab-sqlite-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let written = Arc::downgrade(&commits);
        std::thread::Builder::new()
            .name("confab-sqlite-checkpoint".into())
            .spawn(move || checkpoint_while_open(&checkpointer, &written, &finish_checkpoint))
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(SqliteStore {
            writer: tx,
            readers: Arc::new(ReadPool { path, idle: Mutex::new(Vec::new()) }),
            cursors,
            commits,
        })
    }

    /// Transactions the writer has committed since the store was opened: with
    /// `synchronous = FULL` in WAL mode, one fsync each.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Resolves once every write queued before the call is committed (writes apply in
    /// order), buffered delivery cursors included. The server calls it on shutdown so
    /// fire-and-forget cursor updates are not lost.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.write(WriteOp::Flush).await
    }

    fn write(&self, op: WriteOp) -> StoreFuture<'static, ()> {
        let written = self.send(op);
        Box::pin(async move { written.await.map(|_| ()) })
    }

    /// Queues a write (in call order) and resolves with its outcome once committed.
    fn send(&self, op: WriteOp) -> StoreFuture<'static, Option<Appended>> {
        let (done, rx) = oneshot::channel();
        let sent = self.writer.send(WriteRequest { op, done: Some(done) });
        Box::pin(async move {
            sent.map_err(|_| StoreError::Unavailable("writer stopped".into()))?;
            rx.await.map_err(|_| StoreError::Unavailable("writer stopped".into()))?
        })
    }

    /// Runs a short indexed read on the calling (async) thread. Only for lookups that
    /// touch a few index entries per row of a small result: handing one to the blocking
    /// pool and back (two thread wake-ups) cost a third of a session open's CPU.
    /// Everything else goes through [`SqliteStore::read`].
    fn read_inline<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> StoreFuture<'static, T> {
        let result = self.readers.take().and_then(|conn| {
            let result = f(&conn).map_err(backend);
            self.readers.give_back(conn);
            result
        });
        Box::pin(std::future::ready(result))
    }

    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> StoreFuture<'static, T> {
        let pool = self.readers.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let conn = pool.take()?;
                let result = f(&conn).map_err(backend);
                pool.give_back(conn);
                result
            })
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?
        })
    }
}

/// The writer thread: owns the write connection.
struct Writer {
    conn: Connection,
    cursors: Arc<CursorBuffer>,
    commits: Arc<AtomicU64>,
    positions: Positions,
    /// Set by the checkpoint thread when the log must start over: the writer copies
    /// what is left after its next commit ([`checkpoint_while_open`]).
    finish_checkpoint: Arc<AtomicBool>,
}

/// Most conversations whose newest position [`Positions`] remembers.
const POSITIONS_MAX: usize = 100_000;

/// The newest position of the conversations this writer appended to, so that an
/// append need not read it from the file (a sixth of a 1:1 message's writer work).
/// The writer is the file's only writer, so what it committed is what the file says.
/// Updated only after a commit succeeds; emptied by a failed batch, by any write that
/// could move a position other than up (deleting messages or conversations), and when
/// full.
#[derive(Default)]
struct Positions {
    by_app: HashMap<String, HashMap<String, i64>>,
    len: usize,
}

impl Positions {
    fn get(&self, app: &str, cid: &str) -> Option<i64> {
        self.by_app.get(app)?.get(cid).copied()
    }

    fn set(&mut self, app: &str, cid: &str, ts: i64) {
        if self.len >= POSITIONS_MAX {
            self.clear();
        }
        let convs = match self.by_app.get_mut(app) {
            Some(convs) => convs,
            None => self.by_app.entry(app.to_owned()).or_default(),
        };
        match convs.get_mut(cid) {
            Some(known) => *known = ts,
            None => {
                convs.insert(cid.to_owned(), ts);
                self.len += 1;
            }
        }
    }

    fn clear(&mut self) {
        self.by_app.clear();
        self.len = 0;
    }
}

/// Whether `op` can leave a conversation's newest position anywhere but where the
/// appends put it. Every write is named, so a new one has to be decided.
fn moves_positions(op: &WriteOp) -> bool {
    match op {
        WriteOp::CreateConversation(..)
        | WriteOp::DeleteConversation { .. }
        | WriteOp::DeleteMessage { .. }
        | WriteOp::RemoveRecipient { .. }
        | WriteOp::ReleaseUnique { .. } => true,
        WriteOp::SetAttributes { .. }
        | WriteOp::AddMembers { .. }
        | WriteOp::RemoveMembers { .. }
        | WriteOp::Append(..)
        | WriteOp::OutboxPut(..)
        | WriteOp::OutboxDone { .. }
        | WriteOp::OutboxRetry { .. }
        | WriteOp::Flush
        | WriteOp::Wake
        | WriteOp::SetRole { .. }
        | WriteOp::SetFlags { .. }
        | WriteOp::SetMarks { .. }
        | WriteOp::Patch { .. }
        | WriteOp::SetMuted { .. }
        | WriteOp::SaveRead { .. } => false,
    }
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<WriteRequest>) {
        loop {
            // Buffered cursors wait for a write to carry them, but not forever.
            let since = {
                let mut pending = self.cursors.lock();
                pending.parked = pending.since.is_none();
                pending.since
            };
            let first = match since {
                None => match rx.recv() {
                    Ok(req) => Some(req),
                    Err(_) => break,
                },
                Some(since) => match rx.recv_timeout(CURSOR_ALONE_AFTER.saturating_sub(since.elapsed())) {
                    Ok(req) => Some(req),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                },
            };
            if since.is_none() {
                self.cursors.lock().parked = false;
            }
            let mut batch: Vec<WriteRequest> = first.into_iter().collect();
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(req) => batch.push(req),
                    Err(_) => break,
                }
            }
            // Cursors that have waited the interval ride along with this transaction,
            // or are committed alone if no other write came.
            let flush_cursors =
                self.cursors.lock().since.is_some_and(|s| s.elapsed() >= CURSOR_FLUSH_INTERVAL)
                    || batch.iter().any(|r| matches!(r.op, WriteOp::Flush));
            self.commit(batch, flush_cursors);
        }
        // Every handle is gone: write what is left.
        self.commit(Vec::new(), true);
    }

    /// Commits one batch (and the buffered cursors when `flush_cursors`), then
    /// completes each caller.
    fn commit(&mut self, batch: Vec<WriteRequest>, flush_cursors: bool) {
        let cursors = if flush_cursors {
            let mut pending = self.cursors.lock();
            let waiting = std::mem::take(&mut pending.waiting);
            pending.since = None;
            pending.writing = waiting;
            pending.writing.clone()
        } else {
            HashMap::new()
        };
        if cursors.is_empty() && batch.iter().all(|r| matches!(r.op, WriteOp::Wake)) {
            return;
        }
        self.commits.fetch_add(1, Ordering::Relaxed);
        let ops: Vec<&WriteOp> = batch.iter().map(|r| &r.op).collect();
        let outcome = match commit_batch(&mut self.conn, &ops, &cursors, &mut self.positions) {
            Ok(results) => Ok(results.into_iter().map(Ok).collect()),
            // One write failed: replay them one by one so only that one fails.
            Err(_) => {
                self.positions.clear();
                commit_each(&mut self.conn, &ops, &cursors)
            }
        };
        self.cursors.lock().writing.clear();
        match outcome {
            Ok(results) => {
                for (req, result) in batch.into_iter().zip(results) {
                    if let Some(done) = req.done {
                        let _ = done.send(result);
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "sqlite commit failed");
                let error = backend(e);
                for req in batch {
                    if let Some(done) = req.done {
                        let _ = done.send(Err(error.clone()));
                    }
                }
            }
        }
        // After the callers heard back: nothing waits on this but the next batch.
        if self.finish_checkpoint.swap(false, Ordering::Acquire)
            && let Err(e) = passive_checkpoint(&self.conn)
        {
            tracing::warn!(error = %e, "WAL checkpoint in the writer failed");
        }
    }
}

/// The fast path: every write of the batch in one transaction, no savepoints; the
/// conversation's "last message" columns are updated once per conversation (the newest
/// message of the batch) rather than once per message. Fails as a whole.
fn commit_batch(
    conn: &mut Connection,
    ops: &[&WriteOp],
    cursors: &HashMap<CursorKey, i64>,
    positions: &mut Positions,
) -> Result<Vec<Option<Appended>>, rusqlite::Error> {
    let tx = conn.transaction()?;
    let mut results = Vec::with_capacity(ops.len());
    // Each conversation's appends of the batch so far.
    let mut newest: HashMap<(&str, &str), Head<'_>> = HashMap::new();
    // The positions the batch leaves, remembered once it commits.
    let mut moved: Vec<(&str, &str, i64)> = Vec::new();
    let forget_all = ops.iter().any(|op| moves_positions(op));
    for op in ops {
        match op {
            WriteOp::Append(m, notify, dedupe) => {
                if let Some(original) = stored_before(&tx, m, dedupe.as_deref())? {
                    results.push(Some(original));
                    continue;
                }
                let known = || positions.get(&m.app, &m.cid).filter(|_| !forget_all);
                let prev_ts = match newest.get(&(m.app.as_str(), m.cid.as_str())) {
                    Some(head) => head.ts,
                    None => match known() {
                        Some(ts) => ts,
                        None => newest_position(&tx, m)?,
                    },
                };
                let ts = m.ts.max(prev_ts + 1);
                insert_message(&tx, m, ts, dedupe.as_deref())?;
                insert_message_calls(&tx, notify, m.ts, ts)?;
                let head = newest.entry((&m.app, &m.cid)).or_insert(Head { ts, last: None });
                head.ts = ts;
                if m.recipients.is_none() {
                    head.last = Some((m, ts));
                }
                results.push(Some(Appended::new(ts, prev_ts)));
            }
            _ => {
                // Later writes (an edit of the newest message) must see the columns
                // as they would be after the appends before them.
                for ((app, cid), head) in newest.drain() {
                    head.write(&tx, app, cid)?;
                    moved.push((app, cid, head.ts));
                }
                apply(&tx, op)?;
                results.push(None);
            }
        }
    }
    for ((app, cid), head) in newest {
        head.write(&tx, app, cid)?;
        moved.push((app, cid, head.ts));
    }
    save_cursors(&tx, cursors)?;
    tx.commit()?;
    if forget_all {
        positions.clear();
    } else {
        for (app, cid, ts) in moved {
            positions.set(app, cid, ts);
        }
    }
    Ok(results)
}

/// A conversation's appends in a batch: its newest position, and its newest message for
/// every member with that one's position.
struct Head<'a> {
    ts: i64,
    last: Option<(&'a StoredMessage, i64)>,
}

impl Head<'_> {
    /// Writes the conversation's last-message columns once for the batch.
    fn write(&self, c: &Connection, app: &str, cid: &str) -> Result<(), rusqlite::Error> {
        if let Some((m, ts)) = self.last {
            set_last_message(c, m, ts)?;
        }
        // Targeted messages after it move only the position.
        if self.last.is_none_or(|(_, ts)| ts < self.ts) {
            set_newest_position(c, app, cid, self.ts)?;
        }
        Ok(())
    }
}

/// The position of the newest message of `m`'s conversation (0 without messages),
/// read from the messages themselves: a system conversation's inbox has no
/// conversation row.
fn newest_position(c: &Connection, m: &StoredMessage) -> Result<i64, rusqlite::Error> {
    // The conversation's last position too: a deleted newest message keeps it taken.
    c.prepare_cached(
        "SELECT MAX(COALESCE((SELECT MAX(ts) FROM messages WHERE app = ?1 AND cid = ?2), 0),
                    COALESCE((SELECT last_ts FROM conversations WHERE app = ?1 AND id = ?2), 0))",
    )?
    .query_row(params![m.app, m.cid], |r| r.get(0))
}

/// The slow path after a failed batch: a savepoint per write, so one bad write fails
/// alone. Returns each write's outcome, or the error that failed the transaction.
fn commit_each(
    conn: &mut Connection,
    ops: &[&WriteOp],
    cursors: &HashMap<CursorKey, i64>,
) -> Result<Vec<Result<Option<Appended>, StoreError>>, rusqlite::Error> {
    let mut results = Vec::with_capacity(ops.len());
    let mut tx = conn.transaction()?;
    for op in ops {
        let mut sp = tx.savepoint()?;
        match apply(&sp, op) {
            Ok(appended) => {
                sp.commit()?;
                results.push(Ok(appended));
            }
            Err(e) => {
                sp.rollback()?;
                drop(sp);
                results.push(Err(backend(e)));
            }
        }
    }
    save_cursors(&tx, cursors)?;
    tx.commit()?;
    Ok(results)
}

/// Stores hook calls in the outbox; a key the app already holds keeps its first call.
fn insert_calls(c: &Connection, notify: &[HookCall]) -> Result<(), rusqlite::Error> {
    if notify.is_empty() {
        return Ok(());
    }
    let mut ins = c.prepare_cached(
        "INSERT OR IGNORE INTO hook_outbox (app, key, hook, params, created_at, attempts, due_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 0, ?5)",
    )?;
    for call in notify {
        ins.execute(params![call.app, call.key, call.hook, call.params, call.created_at])?;
    }
    Ok(())
}

/// Stores a message's hook calls, reporting the position `ts` the message was given
/// rather than the `proposed` one they were built with.
fn insert_message_calls(
    c: &Connection,
    notify: &[HookCall],
    proposed: i64,
    ts: i64,
) -> Result<(), rusqlite::Error> {
    if proposed == ts || notify.is_empty() {
        return insert_calls(c, notify);
    }
    let mut calls = notify.to_vec();
    HookCall::restamp(&mut calls, proposed, ts);
    insert_calls(c, &calls)
}

/// The message `m`'s sender already stored in its conversation with the same dedupe
/// token, if any: the answer to a re-send.
fn stored_before(
    c: &Connection,
    m: &StoredMessage,
    dedupe: Option<&str>,
) -> Result<Option<Appended>, rusqlite::Error> {
    let Some(token) = dedupe else { return Ok(None) };
    c.prepare_cached(
        "SELECT id, ts FROM messages WHERE app = ?1 AND cid = ?2 AND sender = ?3 AND dedupe = ?4",
    )?
    .query_row(params![m.app, m.cid, m.from, token], |r| Ok(Appended::resent(r.get(0)?, r.get(1)?)))
    .optional()
}

fn insert_message(
    c: &Connection,
    m: &StoredMessage,
    ts: i64,
    dedupe: Option<&str>,
) -> Result<(), rusqlite::Error> {
    let pids = (!m.mentions.pids.is_empty()).then(|| Value::from(m.mentions.pids.clone()).to_string());
    let recipients = m.recipients.as_ref().map(|to| Value::from(to.clone()).to_string());
    c.prepare_cached(
        "INSERT INTO messages
            (app, cid, ts, id, sender, body, receipt, binary, mention_all, mention_pids, dedupe, recipients)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        m.app,
        m.cid,
        ts,
        m.id,
        m.from,
        m.data,
        m.receipt,
        m.binary,
        m.mentions.all,
        pids,
        dedupe,
        recipients
    ])?;
    Ok(())
}

/// `m` at `ts` becomes the conversation's last message (and newest position).
fn set_last_message(c: &Connection, m: &StoredMessage, ts: i64) -> Result<(), rusqlite::Error> {
    c.prepare_cached(
        "UPDATE conversations SET last_ts = ?3, shown_ts = NULL, last_mid = ?4, last_from = ?5, last_data = ?6
         WHERE app = ?1 AND id = ?2 AND last_ts < ?3",
    )?
    .execute(params![m.app, m.cid, ts, m.id, m.from, m.data])?;
    Ok(())
}

/// A targeted message at `ts`: the conversation's newest position moves, its last
/// message stays (`shown_ts` keeps where it is).
fn set_newest_position(c: &Connection, app: &str, cid: &str, ts: i64) -> Result<(), rusqlite::Error> {
    c.prepare_cached(
        "UPDATE conversations SET shown_ts = COALESCE(shown_ts, last_ts), last_ts = ?3
         WHERE app = ?1 AND id = ?2 AND last_ts < ?3",
    )?
    .execute(params![app, cid, ts])?;
    Ok(())
}

fn save_cursors(c: &Connection, cursors: &HashMap<CursorKey, i64>) -> Result<(), rusqlite::Error> {
    let mut stmt = c.prepare_cached(
        "UPDATE members SET cursor_ts = ?4 WHERE app = ?1 AND cid = ?2 AND client = ?3 AND cursor_ts < ?4",
    )?;
    for ((app, cid, client), ts) in cursors {
        stmt.execute(params![app, cid, client, ts])?;
    }
    Ok(())
}

/// Applies one write; an append reports where it went.
fn apply(c: &Connection, op: &WriteOp) -> Result<Option<Appended>, rusqlite::Error> {
    match op {
        WriteOp::CreateConversation(r, notify) => {
            insert_calls(c, notify)?;
            let attrs = Value::Object(r.attrs.clone()).to_string();
            c.prepare_cached(
                "INSERT INTO conversations
                 (app, id, kind, creator, unique_key, attrs, created_at, updated_at, last_ts, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9)",
            )?
            .execute(params![
                r.app,
                r.id,
                r.kind as i64,
                r.creator,
                r.unique_key,
                attrs,
                r.created_at,
                r.updated_at,
                r.expires_at
            ])?;
            let mut ins = c.prepare_cached(
                "INSERT OR IGNORE INTO members (app, cid, client, cursor_ts, joined_at) VALUES (?1, ?2, ?3, 0, ?4)",
            )?;
            for m in &r.members {
                ins.execute(params![r.app, r.id, m, r.created_at])?;
            }
        }
        WriteOp::SetAttributes { app, cid, attrs, updated_at } => {
            c.prepare_cached(
                "UPDATE conversations SET attrs = ?3, updated_at = ?4 WHERE app = ?1 AND id = ?2",
            )?
            .execute(params![app, cid, attrs, updated_at])?;
        }
        WriteOp::AddMembers { app, cid, members, updated_at, notify } => {
            insert_calls(c, notify)?;
            let mut ins = c.prepare_cached(
                "INSERT OR IGNORE INTO members (app, cid, client, cursor_ts, joined_at)
                 VALUES (?1, ?2, ?3, (SELECT last_ts FROM conversations WHERE app = ?1 AND id = ?2), ?4)",
            )?;
            for m in members {
                ins.execute(params![app, cid, m, updated_at])?;
            }
            c.prepare_cached("UPDATE conversations SET updated_at = ?3 WHERE app = ?1 AND id = ?2")?
                .execute(params![app, cid, updated_at])?;
        }
        WriteOp::RemoveMembers { app, cid, members, updated_at, notify } => {
            insert_calls(c, notify)?;
            let mut del =
                c.prepare_cached("DELETE FROM members WHERE app = ?1 AND cid = ?2 AND client = ?3")?;
            for m in members {
                del.execute(params![app, cid, m])?;
            }
            c.prepare_cached("UPDATE conversations SET updated_at = ?3 WHERE app = ?1 AND id = ?2")?
                .execute(params![app, cid, updated_at])?;
        }
        WriteOp::Append(m, notify, dedupe) => {
            if let Some(original) = stored_before(c, m, dedupe.as_deref())? {
                return Ok(Some(original));
            }
            let prev_ts = newest_position(c, m)?;
            let ts = m.ts.max(prev_ts + 1);
            insert_message(c, m, ts, dedupe.as_deref())?;
            insert_message_calls(c, notify, m.ts, ts)?;
            match m.recipients {
                None => set_last_message(c, m, ts)?,
                Some(_) => set_newest_position(c, &m.app, &m.cid, ts)?,
            }
            return Ok(Some(Appended::new(ts, prev_ts)));
        }
        WriteOp::OutboxPut(notify) => insert_calls(c, notify)?,
        WriteOp::OutboxDone { app, key } => {
            c.prepare_cached("DELETE FROM hook_outbox WHERE app = ?1 AND key = ?2")?
                .execute(params![app, key])?;
        }
        WriteOp::OutboxRetry { app, key, attempts, due_at } => {
            c.prepare_cached(
                "UPDATE hook_outbox SET attempts = ?3, due_at = ?4 WHERE app = ?1 AND key = ?2",
            )?
            .execute(params![app, key, attempts, due_at])?;
        }
        WriteOp::SaveRead { app, client, cid, ts } => {
            c.prepare_cached(
                "UPDATE members SET read_ts = ?4 WHERE app = ?1 AND cid = ?2 AND client = ?3 AND read_ts < ?4",
            )?
            .execute(params![app, cid, client, ts])?;
        }
        WriteOp::SetRole { app, cid, client, role } => {
            c.prepare_cached("UPDATE members SET role = ?4 WHERE app = ?1 AND cid = ?2 AND client = ?3")?
                .execute(params![app, cid, client, role])?;
        }
        WriteOp::SetFlags { app, cid, clients, on, blocked: false } => {
            let mut stmt = c.prepare_cached(
                "UPDATE members SET shut_up = ?4 WHERE app = ?1 AND cid = ?2 AND client = ?3",
            )?;
            for client in clients {
                stmt.execute(params![app, cid, client, on])?;
            }
        }
        WriteOp::SetFlags { app, cid, clients, on, blocked: true } => {
            let sql = if *on {
                "INSERT OR IGNORE INTO blocked (app, cid, client) VALUES (?1, ?2, ?3)"
            } else {
                "DELETE FROM blocked WHERE app = ?1 AND cid = ?2 AND client = ?3"
            };
            let mut stmt = c.prepare_cached(sql)?;
            let mut remove =
                c.prepare_cached("DELETE FROM members WHERE app = ?1 AND cid = ?2 AND client = ?3")?;
            for client in clients {
                stmt.execute(params![app, cid, client])?;
                if *on {
                    remove.execute(params![app, cid, client])?;
                }
            }
        }
        WriteOp::SetMarks { app, cid, kind, clients, on, until } => {
            if *on {
                let mut stmt = c.prepare_cached(
                    "INSERT INTO marks (app, cid, kind, client, until) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (app, cid, kind, client) DO UPDATE SET until = excluded.until",
                )?;
                for client in clients {
                    stmt.execute(params![app, cid, *kind as i64, client, until])?;
                }
            } else {
                let mut stmt = c.prepare_cached(
                    "DELETE FROM marks WHERE app = ?1 AND cid = ?2 AND kind = ?3 AND client = ?4",
                )?;
                for client in clients {
                    stmt.execute(params![app, cid, *kind as i64, client])?;
                }
            }
        }
        WriteOp::Patch { app, cid, ts, data, binary, patched_at } => {
            let changed = c
                .prepare_cached(
                    "UPDATE messages SET body = ?4, patched_at = ?5, binary = COALESCE(?6, binary)
                     WHERE app = ?1 AND cid = ?2 AND ts = ?3",
                )?
                .execute(params![app, cid, ts, data, patched_at, binary])?;
            if changed == 0 {
                return Err(rusqlite::Error::QueryReturnedNoRows);
            }
            c.prepare_cached(
                "UPDATE conversations SET last_data = ?4
                 WHERE app = ?1 AND id = ?2 AND COALESCE(shown_ts, last_ts) = ?3",
            )?
            .execute(params![app, cid, ts, data])?;
        }
        WriteOp::SetMuted { app, cid, client, muted } => {
            c.prepare_cached("UPDATE members SET muted = ?4 WHERE app = ?1 AND cid = ?2 AND client = ?3")?
                .execute(params![app, cid, client, muted])?;
        }
        WriteOp::DeleteConversation { app, cid } => {
            // Its side logs `<cid>:…`: ids from `<cid>:` up to `<cid>;` (';' follows ':').
            let (side_from, side_until) = (format!("{cid}:"), format!("{cid};"));
            c.prepare_cached(
                "DELETE FROM messages WHERE app = ?1 AND (cid = ?2 OR (cid >= ?3 AND cid < ?4))",
            )?
            .execute(params![app, cid, side_from, side_until])?;
            for table in ["members", "blocked", "marks"] {
                c.prepare_cached(&format!("DELETE FROM {table} WHERE app = ?1 AND cid = ?2"))?
                    .execute(params![app, cid])?;
            }
            c.prepare_cached("DELETE FROM conversations WHERE app = ?1 AND id = ?2")?
                .execute(params![app, cid])?;
        }
        WriteOp::ReleaseUnique { app, cid } => {
            c.prepare_cached("UPDATE conversations SET unique_key = NULL WHERE app = ?1 AND id = ?2")?
                .execute(params![app, cid])?;
        }
        WriteOp::DeleteMessage { app, cid, ts } => {
            // The conversation's last-message columns stay: clients keep their copies,
            // and `newest_position` keeps the position taken.
            c.prepare_cached("DELETE FROM messages WHERE app = ?1 AND cid = ?2 AND ts = ?3")?
                .execute(params![app, cid, ts])?;
        }
        WriteOp::RemoveRecipient { app, cid, ts, client } => {
            c.prepare_cached(
                "UPDATE messages
                    SET recipients = (SELECT json_group_array(r.value) FROM json_each(recipients) r
                                       WHERE r.value <> ?4)
                  WHERE app = ?1 AND cid = ?2 AND ts = ?3 AND recipients IS NOT NULL",
            )?
            .execute(params![app, cid, ts, client])?;
            c.prepare_cached(
                "DELETE FROM messages WHERE app = ?1 AND cid = ?2 AND ts = ?3 AND json_array_length(recipients) = 0",
            )?
            .execute(params![app, cid, ts])?;
        }
        WriteOp::Flush | WriteOp::Wake => {}
    }
    Ok(None)
}

fn message_row(app: &str, cid: &str, r: &rusqlite::Row<'_>) -> Result<StoredMessage, rusqlite::Error> {
    // A list that does not parse is an error, not "every member": read as that, a
    // targeted message would reach everyone.
    let recipients = match r.get::<_, Option<String>>(9)? {
        None => None,
        Some(text) => Some(serde_json::from_str::<Vec<String>>(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(9, rusqlite::types::Type::Text, Box::new(e))
        })?),
    };
    Ok(StoredMessage {
        app: app.to_owned(),
        cid: cid.to_owned(),
        id: r.get(0)?,
        ts: r.get(1)?,
        from: r.get(2)?,
        data: r.get(3)?,
        receipt: r.get(4)?,
        patched_at: r.get(5)?,
        binary: r.get(6)?,
        mentions: confab_types::Mentions {
            all: r.get(7)?,
            pids: r
                .get::<_, Option<String>>(8)?
                .and_then(|p| serde_json::from_str(&p).ok())
                .unwrap_or_default(),
        },
        recipients,
    })
}

/// Column 7 is the last message's position: `shown_ts` when a targeted message came
/// after it, else `last_ts`.
const CONV_COLUMNS: &str = "id, kind, creator, unique_key, attrs, created_at, updated_at, COALESCE(shown_ts, last_ts), last_mid, last_from, last_data, expires_at";

fn row_to_record(app: &str, row: &rusqlite::Row<'_>) -> Result<ConversationRecord, rusqlite::Error> {
    let attrs: String = row.get(4)?;
    // An unreadable document is an error, not `{}`: read as empty, the next attribute
    // update would write the empty document back and erase it.
    let attrs = match serde_json::from_str::<Value>(&attrs) {
        Ok(Value::Object(m)) => m,
        Ok(_) => Map::new(),
        Err(e) => {
            return Err(rusqlite::Error::FromSqlConversionFailure(
                4,
                rusqlite::types::Type::Text,
                Box::new(e),
            ));
        }
    };
    let last_ts: i64 = row.get(7)?;
    let last_mid: Option<String> = row.get(8)?;
    let last_message = match last_mid {
        Some(id) if last_ts > 0 => Some(LastMessage {
            id,
            ts: last_ts,
            from: row.get::<_, Option<String>>(9)?.unwrap_or_default(),
            data: row.get::<_, Option<String>>(10)?.unwrap_or_default(),
        }),
        _ => None,
    };
    Ok(ConversationRecord {
        app: app.to_owned(),
        id: row.get(0)?,
        kind: ConvKind::from_i64(row.get(1)?),
        creator: row.get(2)?,
        members: Vec::new(),
        muted: Vec::new(),
        managers: Vec::new(),
        shut_up: Vec::new(),
        blocked: Vec::new(),
        expires_at: row.get(11)?,
        attrs,
        unique_key: row.get(3)?,
        created_at: row.get(5)?,
        updated_at: row.get(6)?,
        last_message,
    })
}

fn load_members(c: &Connection, record: &mut ConversationRecord) -> Result<(), rusqlite::Error> {
    let mut stmt = c.prepare_cached(
        "SELECT client, muted, role, shut_up FROM members WHERE app = ?1 AND cid = ?2 ORDER BY rowid",
    )?;
    let rows = stmt
        .query_map(params![record.app, record.id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, bool>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, bool>(3)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    record.muted = rows.iter().filter(|r| r.1).map(|r| r.0.clone()).collect();
    record.managers =
        rows.iter().filter(|r| r.2.as_deref() == Some("Manager")).map(|r| r.0.clone()).collect();
    record.shut_up = rows.iter().filter(|r| r.3).map(|r| r.0.clone()).collect();
    record.members = rows.into_iter().map(|r| r.0).collect();
    let mut blocked =
        c.prepare_cached("SELECT client FROM blocked WHERE app = ?1 AND cid = ?2 ORDER BY client")?;
    record.blocked =
        blocked.query_map(params![record.app, record.id], |r| r.get(0))?.collect::<Result<_, _>>()?;
    Ok(())
}

fn read_conversation(
    c: &Connection,
    app: &str,
    sql_where: &str,
    key: &str,
) -> Result<Option<ConversationRecord>, rusqlite::Error> {
    let sql = format!("SELECT {CONV_COLUMNS} FROM conversations WHERE app = ?1 AND {sql_where} = ?2");
    let mut record =
        c.prepare_cached(&sql)?.query_row(params![app, key], |r| row_to_record(app, r)).optional()?;
    if let Some(r) = record.as_mut() {
        load_members(c, r)?;
    }
    Ok(record)
}

impl Store for SqliteStore {
    fn create_conversation_notify(
        &self,
        record: ConversationRecord,
        notify: Vec<HookCall>,
    ) -> StoreFuture<'_, ()> {
        self.write(WriteOp::CreateConversation(Box::new(record), notify))
    }

    fn conversation<'a>(&'a self, app: &'a str, cid: &'a str) -> StoreFuture<'a, Option<ConversationRecord>> {
        let (app, cid) = (app.to_owned(), cid.to_owned());
        self.read(move |c| read_conversation(c, &app, "id", &cid))
    }

    fn find_unique<'a>(&'a self, app: &'a str, key: &'a str) -> StoreFuture<'a, Option<ConversationRecord>> {
        let (app, key) = (app.to_owned(), key.to_owned());
        self.read(move |c| read_conversation(c, &app, "unique_key", &key))
    }

    fn scan_conversations<'a>(
        &'a self,
        app: &'a str,
        filter: ScanFilter,
    ) -> StoreFuture<'a, Vec<ConversationRecord>> {
        let app = app.to_owned();
        self.read(move |c| {
            let mut sql = format!("SELECT {CONV_COLUMNS} FROM conversations WHERE app = ?1");
            let mut args: Vec<rusqlite::types::Value> = vec![app.clone().into()];
            if let Some(ids) = &filter.ids {
                args.push(Value::from(ids.clone()).to_string().into());
                sql.push_str(&format!(" AND id IN (SELECT value FROM json_each(?{}))", args.len()));
            }
            if let Some(member) = &filter.member {
                args.push(member.clone().into());
                sql.push_str(&format!(
                    " AND id IN (SELECT cid FROM members WHERE app = ?1 AND client = ?{})",
                    args.len()
                ));
            }
            if let Some(kind) = filter.kind {
                args.push((kind as i64).into());
                sql.push_str(&format!(" AND kind = ?{}", args.len()));
            }
            sql.push_str(&format!(" ORDER BY created_at LIMIT {}", filter.max.saturating_add(1)));
            let mut stmt = c.prepare(&sql)?;
            let mut records = stmt
                .query_map(rusqlite::params_from_iter(args), |r| row_to_record(&app, r))?
                .collect::<Result<Vec<_>, _>>()?;
            for r in &mut records {
                load_members(c, r)?;
            }
            Ok(records)
        })
    }

    fn conversations_after<'a>(
        &'a self,
        app: &'a str,
        after: Option<&'a str>,
        kind: Option<ConvKind>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<ConversationRecord>> {
        let (app, after) = (app.to_owned(), after.map(str::to_owned));
        self.read(move |c| {
            // The primary key (app, id) orders the walk and seeks to its start (a
            // condition written `?2 IS NULL OR id > ?2` would not); ids compare
            // bytewise (BINARY).
            let mut sql = format!("SELECT {CONV_COLUMNS} FROM conversations WHERE app = ?1");
            let mut args: Vec<rusqlite::types::Value> = vec![app.clone().into()];
            if let Some(after) = after {
                args.push(after.into());
                sql.push_str(&format!(" AND id > ?{}", args.len()));
            }
            if let Some(kind) = kind {
                args.push((kind as i64).into());
                sql.push_str(&format!(" AND kind = ?{}", args.len()));
            }
            args.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
            sql.push_str(&format!(" ORDER BY id LIMIT ?{}", args.len()));
            let mut stmt = c.prepare_cached(&sql)?;
            let mut records = stmt
                .query_map(rusqlite::params_from_iter(args), |r| row_to_record(&app, r))?
                .collect::<Result<Vec<_>, _>>()?;
            for r in &mut records {
                load_members(c, r)?;
            }
            Ok(records)
        })
    }

    fn set_attributes<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        attrs: Map<String, Value>,
        updated_at: i64,
    ) -> StoreFuture<'a, ()> {
        self.write(WriteOp::SetAttributes {
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
        self.write(WriteOp::AddMembers { app: app.into(), cid: cid.into(), members, updated_at, notify })
    }

    fn remove_members_notify<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        members: Vec<String>,
        updated_at: i64,
        notify: Vec<HookCall>,
    ) -> StoreFuture<'a, ()> {
        self.write(WriteOp::RemoveMembers { app: app.into(), cid: cid.into(), members, updated_at, notify })
    }

    fn append_message_notify(
        &self,
        message: StoredMessage,
        notify: Vec<HookCall>,
        dedupe: Option<String>,
    ) -> StoreFuture<'static, Appended> {
        let written = self.send(WriteOp::Append(message, notify, dedupe));
        Box::pin(async move {
            written.await?.ok_or_else(|| StoreError::Backend("the writer lost an append's position".into()))
        })
    }

    fn outbox_put(&self, notify: Vec<HookCall>) -> StoreFuture<'static, ()> {
        self.write(WriteOp::OutboxPut(notify))
    }

    fn outbox_due(&self, now: i64, limit: usize) -> StoreFuture<'_, Vec<OutboxEntry>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT app, key, hook, params, created_at, attempts, due_at FROM hook_outbox
                 WHERE due_at <= ?1 ORDER BY due_at, seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![now, limit], |r| {
                Ok(OutboxEntry {
                    call: HookCall {
                        app: r.get(0)?,
                        key: r.get(1)?,
                        hook: r.get(2)?,
                        params: r.get(3)?,
                        created_at: r.get(4)?,
                    },
                    attempts: r.get(5)?,
                    due_at: r.get(6)?,
                })
            })?;
            rows.collect()
        })
    }

    fn outbox_len(&self, max: u64) -> StoreFuture<'_, u64> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        self.read(move |c| {
            let mut stmt = c.prepare_cached("SELECT count(*) FROM (SELECT 1 FROM hook_outbox LIMIT ?1)")?;
            let n: i64 = stmt.query_row(params![max], |r| r.get(0))?;
            Ok(n.unsigned_abs())
        })
    }

    fn outbox_done<'a>(&'a self, app: &'a str, key: &'a str) -> StoreFuture<'a, ()> {
        self.write(WriteOp::OutboxDone { app: app.into(), key: key.into() })
    }

    fn outbox_retry<'a>(
        &'a self,
        app: &'a str,
        key: &'a str,
        attempts: u32,
        due_at: i64,
    ) -> StoreFuture<'a, ()> {
        self.write(WriteOp::OutboxRetry { app: app.into(), key: key.into(), attempts, due_at })
    }

    fn messages<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        range: MessageRange,
    ) -> StoreFuture<'a, Vec<StoredMessage>> {
        let (app, cid) = (app.to_owned(), cid.to_owned());
        self.read(move |c| {
            let mut sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages g WHERE app = ?1 AND cid = ?2");
            let mut args: Vec<rusqlite::types::Value> = vec![app.clone().into(), cid.clone().into()];
            if let Some((ts, inclusive)) = range.after {
                args.push(ts.into());
                sql.push_str(&format!(" AND ts {} ?{}", if inclusive { ">=" } else { ">" }, args.len()));
            }
            if let Some((ts, inclusive)) = range.before {
                args.push(ts.into());
                sql.push_str(&format!(" AND ts {} ?{}", if inclusive { "<=" } else { "<" }, args.len()));
            }
            if let Some(lctype) = range.lctype {
                args.push(lctype.into());
                sql.push_str(&format!(
                    // Numbers only: json_extract reads a JSON `true` as 1.
                    " AND json_valid(body) AND json_type(body, '$._lctype') IN ('integer', 'real')
                      AND json_extract(body, '$._lctype') = ?{}",
                    args.len()
                ));
            }
            if let Some(client) = range.visible_to {
                args.push(client.into());
                sql.push_str(&format!(
                    " AND (g.recipients IS NULL OR EXISTS (SELECT 1 FROM json_each(g.recipients) r WHERE r.value = ?{}))",
                    args.len()
                ));
            }
            sql.push_str(if range.newest_first { " ORDER BY ts DESC" } else { " ORDER BY ts ASC" });
            sql.push_str(&format!(" LIMIT {}", range.limit));
            let mut stmt = c.prepare_cached(&sql)?;
            let mut rows = stmt
                .query_map(rusqlite::params_from_iter(args), |r| message_row(&app, &cid, r))?
                .collect::<Result<Vec<_>, _>>()?;
            if range.newest_first {
                rows.reverse();
            }
            Ok(rows)
        })
    }

    fn member_cursors<'a>(&'a self, app: &'a str, client: &'a str) -> StoreFuture<'a, Vec<MemberCursor>> {
        let (app, client) = (app.to_owned(), client.to_owned());
        let cursors = self.cursors.clone();
        self.read_inline(move |c| {
            let mut stmt = c.prepare_cached(MEMBER_CURSORS)?;
            let mut rows: Vec<MemberCursor> = stmt
                .query_map(params![app, client], |r| {
                    // No conversation row (a member row left behind): nothing to deliver.
                    let Some(last_ts) = r.get::<_, Option<i64>>(2)? else { return Ok(None) };
                    Ok(Some(MemberCursor { cid: r.get(0)?, cursor: r.get(1)?, last_ts }))
                })?
                .filter_map(Result::transpose)
                .collect::<Result<_, _>>()?;
            let pending = cursors.lock();
            for row in &mut rows {
                let key = (app.clone(), row.cid.clone(), client.clone());
                row.cursor = row.cursor.max(pending.get(&key).unwrap_or(0));
            }
            Ok(rows)
        })
    }

    fn message<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        id: &'a str,
    ) -> StoreFuture<'a, Option<StoredMessage>> {
        let (app, cid, id) = (app.to_owned(), cid.to_owned(), id.to_owned());
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE app = ?1 AND cid = ?2 AND id = ?3"
            ))?
            .query_row(params![app, cid, id], |r| message_row(&app, &cid, r))
            .optional()
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
        self.write(WriteOp::Patch { app: app.into(), cid: cid.into(), ts, data, binary, patched_at })
    }

    fn set_role<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        client: &'a str,
        role: &'a str,
    ) -> StoreFuture<'a, ()> {
        self.write(WriteOp::SetRole {
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
        self.write(WriteOp::SetFlags { app: app.into(), cid: cid.into(), clients, on, blocked: false })
    }

    fn set_blocked<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        clients: Vec<String>,
        on: bool,
    ) -> StoreFuture<'a, ()> {
        self.write(WriteOp::SetFlags { app: app.into(), cid: cid.into(), clients, on, blocked: true })
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
        self.write(WriteOp::SetMarks { app: app.into(), cid: cid.into(), kind, clients, on, until })
    }

    fn marks<'a>(&'a self, app: &'a str, cid: &'a str) -> StoreFuture<'a, Vec<ClientMark>> {
        let (app, cid) = (app.to_owned(), cid.to_owned());
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT kind, client, until FROM marks WHERE app = ?1 AND cid = ?2 ORDER BY kind, client",
            )?;
            let rows = stmt.query_map(params![app, cid], |r| {
                let kind = MarkKind::from_i64(r.get(0)?);
                Ok(kind.map(|kind| Ok(ClientMark { client: r.get(1)?, kind, until: r.get(2)? })))
            })?;
            // A kind this build does not know (written by a newer one) is skipped.
            rows.filter_map(|r| r.transpose()).map(|r| r.and_then(|m| m)).collect()
        })
    }

    fn client_marks<'a>(
        &'a self,
        app: &'a str,
        client: &'a str,
        kind: MarkKind,
        after: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<String>> {
        let (app, client, after) = (app.to_owned(), client.to_owned(), after.map(str::to_owned));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT cid FROM marks WHERE app = ?1 AND client = ?2 AND kind = ?3 AND (?4 IS NULL OR cid > ?4)
                 ORDER BY cid LIMIT ?5",
            )?;
            let rows = stmt.query_map(params![app, client, kind as i64, after, limit], |r| r.get(0))?;
            rows.collect()
        })
    }

    fn count_client_marks<'a>(
        &'a self,
        app: &'a str,
        client: &'a str,
        kind: MarkKind,
    ) -> StoreFuture<'a, usize> {
        let (app, client) = (app.to_owned(), client.to_owned());
        self.read(move |c| {
            // An index range (marks_by_client), not a scan of the table.
            let mut stmt =
                c.prepare_cached("SELECT COUNT(*) FROM marks WHERE app = ?1 AND client = ?2 AND kind = ?3")?;
            let n: i64 = stmt.query_row(params![app, client, kind as i64], |r| r.get(0))?;
            Ok(usize::try_from(n).unwrap_or(0))
        })
    }

    fn patched_since<'a>(
        &'a self,
        app: &'a str,
        client: &'a str,
        since: i64,
        limit: usize,
    ) -> StoreFuture<'a, Vec<StoredMessage>> {
        let (app, client) = (app.to_owned(), client.to_owned());
        self.read(move |c| {
            // Per conversation and sorted here: see PATCHED_IN_CONVERSATION.
            let mut convs = c.prepare_cached(CLIENT_CONVERSATIONS)?;
            let cids: Vec<String> =
                convs.query_map(params![app, client], |r| r.get(0))?.collect::<Result<_, _>>()?;
            let mut patched = c.prepare_cached(PATCHED_IN_CONVERSATION)?;
            let mut changes = Vec::new();
            for cid in &cids {
                for row in
                    patched.query_map(params![app, cid, since, client], |r| message_row(&app, cid, r))?
                {
                    changes.push(row?);
                }
            }
            // Oldest change first (ties in a fixed order), at most `limit`.
            changes.sort_by(|a, b| (a.patched_at, &a.cid, a.ts).cmp(&(b.patched_at, &b.cid, b.ts)));
            changes.truncate(limit);
            Ok(changes)
        })
    }

    fn set_muted<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        client: &'a str,
        muted: bool,
    ) -> StoreFuture<'a, ()> {
        self.write(WriteOp::SetMuted { app: app.into(), cid: cid.into(), client: client.into(), muted })
    }

    fn member_positions<'a>(&'a self, app: &'a str, cid: &'a str) -> StoreFuture<'a, Vec<MemberPosition>> {
        let (app, cid) = (app.to_owned(), cid.to_owned());
        let cursors = self.cursors.clone();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT client, cursor_ts, read_ts FROM members WHERE app = ?1 AND cid = ?2 ORDER BY rowid",
            )?;
            let mut rows: Vec<MemberPosition> = stmt
                .query_map(params![app, cid], |r| {
                    Ok(MemberPosition { client: r.get(0)?, acked_upto: r.get(1)?, read_upto: r.get(2)? })
                })?
                .collect::<Result<_, _>>()?;
            let pending = cursors.lock();
            for row in &mut rows {
                let key = (app.clone(), cid.clone(), row.client.clone());
                row.acked_upto = row.acked_upto.max(pending.get(&key).unwrap_or(0));
            }
            Ok(rows)
        })
    }

    fn release_unique<'a>(&'a self, app: &'a str, cid: &'a str) -> StoreFuture<'a, ()> {
        self.write(WriteOp::ReleaseUnique { app: app.into(), cid: cid.into() })
    }

    fn delete_conversation<'a>(&'a self, app: &'a str, cid: &'a str) -> StoreFuture<'a, ()> {
        self.write(WriteOp::DeleteConversation { app: app.into(), cid: cid.into() })
    }

    fn delete_message<'a>(&'a self, app: &'a str, cid: &'a str, ts: i64) -> StoreFuture<'a, ()> {
        self.write(WriteOp::DeleteMessage { app: app.into(), cid: cid.into(), ts })
    }

    fn remove_recipient<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        ts: i64,
        client: &'a str,
    ) -> StoreFuture<'a, ()> {
        self.write(WriteOp::RemoveRecipient { app: app.into(), cid: cid.into(), ts, client: client.into() })
    }

    fn app_messages<'a>(
        &'a self,
        app: &'a str,
        from: Option<&'a str>,
        range: MessageRange,
    ) -> StoreFuture<'a, Vec<StoredMessage>> {
        let (app, from) = (app.to_owned(), from.map(str::to_owned));
        self.read(move |c| {
            // Only the logs of conversations: side logs have no conversation row.
            let mut sql = String::from(
                "SELECT m.id, m.ts, m.sender, m.body, m.receipt, m.patched_at, m.binary, m.mention_all,
                        m.mention_pids, m.recipients, m.cid
                 FROM messages m JOIN conversations c ON c.app = m.app AND c.id = m.cid
                 WHERE m.app = ?1",
            );
            let mut args: Vec<rusqlite::types::Value> = vec![app.clone().into()];
            if let Some(from) = &from {
                args.push(from.clone().into());
                sql.push_str(&format!(" AND m.sender = ?{}", args.len()));
            }
            if let Some((ts, inclusive)) = range.after {
                args.push(ts.into());
                sql.push_str(&format!(" AND m.ts {} ?{}", if inclusive { ">=" } else { ">" }, args.len()));
            }
            if let Some((ts, inclusive)) = range.before {
                args.push(ts.into());
                sql.push_str(&format!(" AND m.ts {} ?{}", if inclusive { "<=" } else { "<" }, args.len()));
            }
            sql.push_str(if range.newest_first {
                " ORDER BY m.ts DESC, m.cid DESC"
            } else {
                " ORDER BY m.ts ASC, m.cid ASC"
            });
            sql.push_str(&format!(" LIMIT {}", range.limit));
            let mut stmt = c.prepare_cached(&sql)?;
            let mut rows = stmt
                .query_map(rusqlite::params_from_iter(args), |r| {
                    let cid: String = r.get(10)?;
                    message_row(&app, &cid, r)
                })?
                .collect::<Result<Vec<_>, _>>()?;
            if range.newest_first {
                rows.reverse();
            }
            Ok(rows)
        })
    }

    fn joined_at<'a>(&'a self, app: &'a str, cid: &'a str, client: &'a str) -> StoreFuture<'a, Option<i64>> {
        let (app, cid, client) = (app.to_owned(), cid.to_owned(), client.to_owned());
        self.read(move |c| {
            c.prepare_cached("SELECT joined_at FROM members WHERE app = ?1 AND cid = ?2 AND client = ?3")?
                .query_row(params![app, cid, client], |r| r.get(0))
                .optional()
        })
    }

    fn save_read<'a>(&'a self, app: &'a str, client: &'a str, cid: &'a str, ts: i64) -> StoreFuture<'a, ()> {
        self.write(WriteOp::SaveRead { app: app.into(), client: client.into(), cid: cid.into(), ts })
    }

    fn unread<'a>(&'a self, app: &'a str, client: &'a str, max: usize) -> StoreFuture<'a, Vec<UnreadCount>> {
        let (app, client) = (app.to_owned(), client.to_owned());
        self.read(move |c| {
            // Join-free, in two cached statements: see MEMBER_READS.
            let mut members = c.prepare_cached(MEMBER_READS)?;
            let mut candidates: Vec<(String, i64, i64)> = members
                .query_map(params![app, client], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, Option<i64>>(2)?))
                })?
                .filter_map(|row| match row {
                    Ok((cid, read_ts, Some(last_ts))) if last_ts > read_ts => {
                        Some(Ok((cid, read_ts, last_ts)))
                    }
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<_, _>>()?;
            // Newest conversation first; those with unread messages, at most `max`.
            candidates.sort_by_key(|c| std::cmp::Reverse(c.2));
            let mut counts = c.prepare_cached(UNREAD_IN_CONVERSATION)?;
            let mut newest_for_client = c.prepare_cached(NEWEST_FOR_CLIENT)?;
            let mut unread = Vec::new();
            for (cid, read_ts, _) in candidates {
                if unread.len() >= max {
                    break;
                }
                let count = counts
                    .query_row(params![app, cid, read_ts, client], |r| {
                        let last_mid: Option<String> = r.get(1)?;
                        let shown_ts: i64 = r.get(0)?;
                        let count = UnreadCount {
                            cid: cid.clone(),
                            unread: r.get(4)?,
                            mentioned: r.get(5)?,
                            last: last_mid
                                .filter(|_| shown_ts > 0)
                                .map(|id| -> Result<LastMessage, rusqlite::Error> {
                                    Ok(LastMessage {
                                        id,
                                        ts: shown_ts,
                                        from: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                                        data: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                                    })
                                })
                                .transpose()?,
                        };
                        Ok((count, r.get::<_, bool>(6)?.then_some(shown_ts)))
                    })
                    .optional()?;
                let Some((mut count, targeted_after)) = count.filter(|(u, _)| u.unread > 0) else {
                    continue;
                };
                // A targeted message for the client after the last message is its last.
                if let Some(shown_ts) = targeted_after {
                    let newer = newest_for_client
                        .query_row(params![app, cid, shown_ts, client], |r| {
                            Ok(LastMessage { id: r.get(0)?, ts: r.get(1)?, from: r.get(2)?, data: r.get(3)? })
                        })
                        .optional()?;
                    if newer.is_some() {
                        count.last = newer;
                    }
                }
                unread.push(count);
            }
            Ok(unread)
        })
    }

    fn save_cursor(&self, app: &str, client: &str, cid: &str, ts: i64) {
        // The writer is woken only when it waits for nothing; otherwise the cursor rides
        // along with the transaction it is busy with or about to start.
        let wake = {
            let mut pending = self.cursors.lock();
            if pending.since.is_none() {
                pending.since = Some(Instant::now());
            }
            let cursor = pending.waiting.entry((app.into(), cid.into(), client.into())).or_insert(ts);
            *cursor = (*cursor).max(ts);
            std::mem::take(&mut pending.parked)
        };
        if wake {
            let _ = self.writer.send(WriteRequest { op: WriteOp::Wake, done: None });
        }
    }
}

#[cfg(test)]
mod tests;

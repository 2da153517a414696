//! `confab import`: loads an export directory (the layout of [`crate::layout`]) into a
//! store, through the engine's [`Store`] trait only, while the server is stopped.
//!
//! - **Idempotent.** A conversation that exists is updated only from a row whose
//!   `updatedAt` is newer than the stored one; a message whose id is stored in its
//!   conversation is skipped. A second run of the same directory adds nothing, and a
//!   run that was interrupted is finished by running it again.
//! - **Ids and timestamps are kept.** Within a conversation, records are placed in
//!   (timestamp, id) order; a message keeps its timestamp as its position unless the
//!   message before it has that position or a later one (LeanCloud timestamps may tie,
//!   Confab's positions are unique and increasing), then it takes the millisecond after
//!   it (docs/decisions.md).
//! - **Nothing is delivered again.** After a conversation's history, every member's
//!   delivery cursor and read position move to its last imported message.
//! - **Bounded memory.** Files are read one record at a time; a conversation's history
//!   is sorted in memory up to a budget and on disk past it.
//! - **Reported, not fatal:** a record that cannot be imported is skipped with the
//!   reason on the log; only an unreadable directory or a failing store stop the run.

use crate::files::{FileDomains, rewrite_body};
use crate::layout;
use crate::lean::{ConversationRow, MemberInfoRow, Message, Record, subscriber, valid_conversation_id};
use crate::read::{ArrayError, Line, Lines, each_element};
use crate::sort::{Keyed, SortError, Sorted, Sorter};
use confab_engine::AppConfig;
use confab_engine::bounds::{MAX_JSON_DEPTH, check_client_id, json_bytes, shape};
use confab_engine::conversation::unique_key;
use confab_engine::ports::{
    ConvKind, ConversationRecord, MessageRange, Store, StoreError, StoreFuture, StoredMessage,
};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt::Display;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

/// Store writes in flight at once: enough for the SQLite writer to commit them in large
/// groups, few enough to bound what waits in memory.
const WINDOW: usize = 512;
/// Records read from the sort buffer at a time.
const PAGE: usize = 512;
/// Members added by one store call.
const MEMBER_BATCH: usize = 500;
/// A progress line every this many messages.
const PROGRESS_EVERY: u64 = 10_000;

/// How an import runs.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Largest record (a line of a `.jsonl` file, an element of a `.json` array), in
    /// bytes; larger ones are skipped (in an array, with the rest of its file).
    pub max_record_bytes: usize,
    /// Bytes of one conversation's history sorted in memory; past it the sort moves to
    /// a temporary file.
    pub sort_memory_bytes: usize,
    /// Where that temporary file goes (the system's temporary directory by default).
    pub work_dir: Option<PathBuf>,
    /// Rewrite file URLs on these domains (`_lcfile.url`) to this base URL.
    pub file_base_url: Option<String>,
    /// The file domains.
    pub file_domains: FileDomains,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            max_record_bytes: 1024 * 1024,
            sort_memory_bytes: 64 * 1024 * 1024,
            work_dir: None,
            file_base_url: None,
            file_domains: FileDomains::new(&[]),
        }
    }
}

/// Conversations by outcome.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ConversationCounts {
    /// Created.
    pub created: u64,
    /// Existed and were brought up to a newer row.
    pub updated: u64,
    /// Existed with the same or a newer `updatedAt`.
    pub unchanged: u64,
}

/// Messages by outcome.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct MessageCounts {
    /// Stored by this run.
    pub imported: u64,
    /// Already stored (same id in the conversation).
    pub present: u64,
    /// Stored at a later millisecond than their timestamp, the position being taken.
    pub shifted: u64,
    /// Bodies whose file URL was rewritten.
    pub files_rewritten: u64,
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// `_Conversation` rows.
    pub conversations: ConversationCounts,
    /// Members added to conversations (created or updated).
    pub members_added: u64,
    /// Members removed from updated conversations.
    pub members_removed: u64,
    /// Mute flags changed.
    pub mutes_changed: u64,
    /// Roles changed (`_ConversationMemberInfo`).
    pub roles_changed: u64,
    /// Subscribers added to service conversations.
    pub subscribers_added: u64,
    /// History records.
    pub messages: MessageCounts,
    /// `_SysMessage` rows (subscribers' messages to a service conversation).
    pub sys_messages: MessageCounts,
    /// Members whose delivery cursor and read position were moved to the last
    /// imported message (one per member per conversation).
    pub positions_set: u64,
    /// Records skipped, by kind (`conversation`, `member`, `role`, `subscriber`,
    /// `message`, `sys_message`, `file`); each with its reason on the log.
    pub skipped: BTreeMap<String, u64>,
}

impl ImportReport {
    /// Everything skipped.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }
}

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A file or directory of the export could not be read.
    #[error("{path}: {source}")]
    Io {
        /// Which.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The directory holds none of the export's files.
    #[error(
        "{0}: nothing to import (expected _Conversation.jsonl, _ConversationMemberInfo.jsonl, \
         _SysMessage.jsonl, messages/ or subscribers/)"
    )]
    NothingToImport(PathBuf),
    /// The store failed; nothing after it was written. Running the import again
    /// continues where it stopped.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The sort buffer failed.
    #[error("{0}")]
    Sort(#[from] SortError),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ImportError + '_ {
    move |source| ImportError::Io { path: path.to_owned(), source }
}

/// Imports `dir` into `app` of `store`, writing skips and progress to `log`. Buffered
/// writes of the store (SQLite's delivery cursors) are the caller's to flush.
pub async fn import(
    store: &dyn Store,
    app: &AppConfig,
    dir: &Path,
    opts: &ImportOptions,
    log: &mut dyn Write,
) -> Result<ImportReport, ImportError> {
    let meta = std::fs::metadata(dir).map_err(io_error(dir))?;
    if !meta.is_dir() {
        return Err(ImportError::Io {
            path: dir.to_owned(),
            source: std::io::Error::other("not a directory"),
        });
    }
    let known = [
        layout::CONVERSATIONS,
        layout::MEMBER_INFOS,
        layout::SYS_MESSAGES,
        layout::MESSAGES_DIR,
        layout::SUBSCRIBERS_DIR,
    ];
    if !known.iter().any(|name| dir.join(name).exists()) {
        return Err(ImportError::NothingToImport(dir.to_owned()));
    }
    let mut run = Importer {
        store,
        app,
        dir,
        opts,
        log,
        report: ImportReport::default(),
        pending: VecDeque::new(),
        progress: 0,
    };
    run.conversations().await?;
    run.subscribers().await?;
    run.member_infos().await?;
    run.histories().await?;
    run.sys_messages().await?;
    run.drain().await?;
    Ok(run.report)
}

struct Importer<'a> {
    store: &'a dyn Store,
    app: &'a AppConfig,
    dir: &'a Path,
    opts: &'a ImportOptions,
    log: &'a mut dyn Write,
    report: ImportReport,
    pending: VecDeque<StoreFuture<'a, ()>>,
    progress: u64,
}

/// Where the next message of one conversation goes.
struct Placement {
    /// The store's conversation key (a conversation id, or `<id>:inbox`).
    cid: String,
    /// The newest stored position, this run's appends included: the store puts a
    /// message at `max(timestamp, newest + 1)` (`Store::append_message`).
    newest: i64,
    /// Newest position of this run's records (present or new).
    last: i64,
    /// The conversation had messages before the run: look ids up.
    check_present: bool,
    /// A service conversation's log: records naming recipients (`to-clients`) are stored
    /// as targeted messages.
    targeted: bool,
}

enum Placed {
    Present,
    Imported { shifted: bool, rewritten: bool },
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A file of the export opened for reading, `None` when it does not exist.
fn open_optional(path: &Path) -> Result<Option<std::fs::File>, ImportError> {
    match std::fs::File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ImportError::Io { path: path.to_owned(), source: e }),
    }
}

/// The `<id>.json` files of a directory of the layout, with their conversation ids
/// (`None` for a name that is not one), in directory order and read as they are
/// needed (a directory of a million histories is not listed into memory); nothing
/// when the directory does not exist.
struct ConversationFiles {
    dir: PathBuf,
    entries: Option<std::fs::ReadDir>,
}

fn conversation_files(dir: &Path) -> Result<ConversationFiles, ImportError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => Some(e),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(ImportError::Io { path: dir.to_owned(), source: e }),
    };
    Ok(ConversationFiles { dir: dir.to_owned(), entries })
}

impl Iterator for ConversationFiles {
    type Item = Result<(PathBuf, Option<String>), ImportError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let entry = match self.entries.as_mut()?.next()? {
                Ok(entry) => entry,
                Err(e) => return Some(Err(ImportError::Io { path: self.dir.clone(), source: e })),
            };
            let name = entry.file_name().to_string_lossy().into_owned();
            // A download in progress (`pull` writes `<id>.json.part`) is not an export file.
            if name.ends_with(".part") || name.starts_with('.') {
                continue;
            }
            let cid = name.strip_suffix(".json").filter(|c| valid_conversation_id(c)).map(str::to_owned);
            return Some(Ok((entry.path(), cid)));
        }
    }
}

impl<'a> Importer<'a> {
    fn skip(&mut self, kind: &str, place: impl Display, why: impl Display) {
        *self.report.skipped.entry(kind.to_owned()).or_default() += 1;
        let _ = writeln!(self.log, "import: skipped {place}: {why}");
    }

    fn note(&mut self, line: impl Display) {
        let _ = writeln!(self.log, "import: {line}");
    }

    async fn queue(&mut self, write: StoreFuture<'a, ()>) -> Result<(), ImportError> {
        self.pending.push_back(write);
        while self.pending.len() > WINDOW {
            if let Some(w) = self.pending.pop_front() {
                w.await?;
            }
        }
        Ok(())
    }

    async fn drain(&mut self) -> Result<(), ImportError> {
        while let Some(w) = self.pending.pop_front() {
            w.await?;
        }
        Ok(())
    }

    fn app_id(&self) -> &'a str {
        &self.app.id
    }

    /// Reads a JSON Lines file a record at a time: `None` at its end, a record with
    /// its place, or `Err` with a skip already reported.
    fn next_row<R: std::io::BufRead>(
        &mut self,
        lines: &mut Lines<R>,
        name: &str,
        kind: &str,
    ) -> Result<Option<(String, Option<Value>)>, ImportError> {
        let path = self.dir.join(name);
        let Some(line) = lines.next_line().map_err(io_error(&path))? else { return Ok(None) };
        let place = format!("{name} line {}", lines.number);
        let text = match line {
            Line::TooLong(n) => {
                let max = self.opts.max_record_bytes;
                self.skip(kind, &place, format!("{n} bytes, over the record limit of {max}"));
                return Ok(Some((place, None)));
            }
            Line::Text(t) => t,
        };
        if text.iter().all(u8::is_ascii_whitespace) {
            return Ok(Some((place, None)));
        }
        match serde_json::from_slice::<Value>(&text) {
            Ok(v) => Ok(Some((place, Some(v)))),
            Err(e) => {
                self.skip(kind, &place, format!("malformed JSON: {e}"));
                Ok(Some((place, None)))
            }
        }
    }

    // ---- _Conversation -------------------------------------------------------------

    async fn conversations(&mut self) -> Result<(), ImportError> {
        let path = self.dir.join(layout::CONVERSATIONS);
        let Some(file) = open_optional(&path)? else { return Ok(()) };
        let mut lines = Lines::new(BufReader::new(file), self.opts.max_record_bytes);
        while let Some((place, value)) = self.next_row(&mut lines, layout::CONVERSATIONS, "conversation")? {
            let Some(value) = value else { continue };
            match ConversationRow::parse(value) {
                Ok(row) => self.conversation(&place, row).await?,
                Err(why) => self.skip("conversation", &place, why),
            }
        }
        Ok(())
    }

    /// Why a row's attributes cannot be stored under the app's limits, if they cannot.
    fn attributes_over_limits(&self, row: &ConversationRow) -> Option<String> {
        let limits = &self.app.limits;
        let doc = Value::Object(row.attrs.clone());
        let (depth, keys) = shape(&doc);
        let max_depth = limits.json_depth.min(MAX_JSON_DEPTH);
        let over = |key: &str, max: usize| {
            Some(format!("attributes over the limit {key} = {max}; raise it and import again"))
        };
        if depth > max_depth {
            return over("json_depth", max_depth);
        }
        if keys > limits.attr_keys {
            return over("attr_keys", limits.attr_keys);
        }
        if json_bytes(&doc) > limits.attr_bytes {
            return over("attr_bytes", limits.attr_bytes);
        }
        None
    }

    async fn conversation(&mut self, place: &str, row: ConversationRow) -> Result<(), ImportError> {
        let limits = &self.app.limits;
        let place = format!("{place} (conversation {})", row.id);
        // Members count for normal conversations, as on LeanCloud. A service
        // conversation's `m`, when its row has one, lists its subscribers (Confab's rows
        // do; LeanCloud's carry none, its subscribers come from subscribers/). Chat rooms
        // keep no members.
        let mut members = Vec::new();
        if row.kind == ConvKind::System {
            let mut seen = HashSet::new();
            for m in &row.members {
                match check_client_id(m, limits.client_id_chars) {
                    Err(why) => self.skip("subscriber", &place, format!("subscriber {m:?}: {why}")),
                    Ok(()) => {
                        if seen.insert(m.clone()) {
                            members.push(m.clone());
                        }
                    }
                }
            }
        }
        if row.kind == ConvKind::Normal {
            let mut seen = HashSet::new();
            for m in &row.members {
                match check_client_id(m, limits.client_id_chars) {
                    Err(why) => self.skip("member", &place, format!("member {m:?}: {why}")),
                    Ok(()) => {
                        if seen.insert(m.clone()) {
                            members.push(m.clone());
                        }
                    }
                }
            }
            if members.len() > limits.conversation_members {
                let max = limits.conversation_members;
                let why = format!(
                    "{} members, over the limit conversation_members = {max}; raise it and import again",
                    members.len()
                );
                self.skip("conversation", &place, why);
                return Ok(());
            }
        }
        if let Some(why) = self.attributes_over_limits(&row) {
            self.skip("conversation", &place, why);
            return Ok(());
        }
        let created_at = row.created_at.or(row.updated_at).unwrap_or_else(now_ms);
        let updated_at = row.updated_at.unwrap_or(created_at);
        let muted: Vec<String> = row.muted.iter().filter(|m| members.contains(m)).cloned().collect();
        let (store, app) = (self.store, self.app_id());
        let Some(stored) = store.conversation(app, &row.id).await? else {
            let mut unique = None;
            if row.unique && row.kind == ConvKind::Normal {
                let key = unique_key(&members);
                match store.find_unique(app, &key).await? {
                    Some(other) => self.note(format!(
                        "{place}: its member set is unique to conversation {} already; imported as not unique",
                        other.id
                    )),
                    None => unique = Some(key),
                }
            }
            let record = ConversationRecord {
                app: app.to_owned(),
                id: row.id.clone(),
                kind: row.kind,
                creator: row.creator.clone(),
                members: members.clone(),
                muted: Vec::new(),
                managers: Vec::new(),
                shut_up: Vec::new(),
                blocked: Vec::new(),
                expires_at: None,
                attrs: row.attrs.clone(),
                unique_key: unique,
                created_at,
                updated_at,
                last_message: None,
            };
            store.create_conversation(record).await?;
            for m in &muted {
                self.queue(mute(store, app, &row.id, m, true)).await?;
            }
            self.report.conversations.created += 1;
            if row.kind == ConvKind::System {
                self.report.subscribers_added += members.len() as u64;
            } else {
                self.report.members_added += members.len() as u64;
            }
            self.report.mutes_changed += muted.len() as u64;
            return Ok(());
        };
        if stored.kind != row.kind {
            let why = format!("exists as a {:?} conversation, the row is {:?}", stored.kind, row.kind);
            self.skip("conversation", &place, why);
            return Ok(());
        }
        if updated_at <= stored.updated_at {
            self.report.conversations.unchanged += 1;
            return Ok(());
        }
        // A newer row (a delta): attributes, members and mutes become the row's. The
        // attributes are written even when equal, for the row's `updatedAt`.
        let (cid, attrs) = (row.id.clone(), row.attrs.clone());
        self.queue(Box::pin(async move { store.set_attributes(app, &cid, attrs, updated_at).await })).await?;
        if row.kind == ConvKind::Normal {
            let wanted: HashSet<&String> = members.iter().collect();
            let current: HashSet<&String> = stored.members.iter().collect();
            let removed: Vec<String> =
                stored.members.iter().filter(|m| !wanted.contains(m)).cloned().collect();
            let added: Vec<String> = members.iter().filter(|m| !current.contains(m)).cloned().collect();
            if !removed.is_empty() {
                self.report.members_removed += removed.len() as u64;
                let cid = row.id.clone();
                self.queue(Box::pin(
                    async move { store.remove_members(app, &cid, removed, updated_at).await },
                ))
                .await?;
            }
            if !added.is_empty() {
                self.report.members_added += added.len() as u64;
                let (cid, list) = (row.id.clone(), added.clone());
                self.queue(Box::pin(async move { store.add_members(app, &cid, list, updated_at).await }))
                    .await?;
                // A new member starts at the newest message (delivery), and has read it.
                let last = stored.last_message.as_ref().map_or(0, |m| m.ts);
                self.set_positions(&row.id, &added, last).await?;
            }
            for m in &members {
                let want = muted.contains(m);
                if want != stored.muted.contains(m) {
                    self.report.mutes_changed += 1;
                    self.queue(mute(store, app, &row.id, m, want)).await?;
                }
            }
        }
        if row.kind == ConvKind::System {
            // Subscribers listed in a newer row are added; none are removed (a row may
            // list only some).
            let current: HashSet<&String> = stored.members.iter().collect();
            let added: Vec<String> = members.iter().filter(|m| !current.contains(m)).cloned().collect();
            if !added.is_empty() {
                self.report.subscribers_added += added.len() as u64;
                let last = stored.last_message.as_ref().map_or(0, |m| m.ts);
                let (cid, list, at) = (row.id.clone(), added.clone(), stored.updated_at);
                self.queue(Box::pin(async move { store.add_members(app, &cid, list, at).await })).await?;
                self.set_positions(&row.id, &added, last).await?;
            }
        }
        self.report.conversations.updated += 1;
        Ok(())
    }

    /// Moves members' delivery cursors and read positions to `ts` (never back).
    async fn set_positions(&mut self, cid: &str, members: &[String], ts: i64) -> Result<(), ImportError> {
        if ts <= 0 {
            return Ok(());
        }
        let (store, app) = (self.store, self.app_id());
        for m in members {
            store.save_cursor(app, m, cid, ts);
            let (m, cid) = (m.clone(), cid.to_owned());
            self.queue(Box::pin(async move { store.save_read(app, &m, &cid, ts).await })).await?;
            self.report.positions_set += 1;
        }
        Ok(())
    }

    // ---- subscribers/ --------------------------------------------------------------

    async fn subscribers(&mut self) -> Result<(), ImportError> {
        let dir = self.dir.join(layout::SUBSCRIBERS_DIR);
        for file in conversation_files(&dir)? {
            let (path, cid) = file?;
            let place = format!(
                "{}/{}",
                layout::SUBSCRIBERS_DIR,
                path.file_name().unwrap_or_default().to_string_lossy()
            );
            let Some(cid) = cid else {
                self.skip("subscriber", &place, "the file name is not <conversation id>.json");
                continue;
            };
            let (store, app) = (self.store, self.app_id());
            let stored = match store.conversation(app, &cid).await? {
                Some(s) if s.kind == ConvKind::System => s,
                Some(_) => {
                    self.skip("subscriber", &place, format!("{cid} is not a service conversation"));
                    continue;
                }
                None => {
                    self.skip("subscriber", &place, format!("no conversation {cid}"));
                    continue;
                }
            };
            let mut have: HashSet<String> = stored.members.iter().cloned().collect();
            let last = stored.last_message.as_ref().map_or(0, |m| m.ts);
            let mut batch = Vec::new();
            let (mut elements, reader) = stream_array(&path, self.opts.max_record_bytes)?;
            while let Some((i, v)) = elements.recv().await {
                let id = match subscriber(v) {
                    Ok(id) => id,
                    Err(why) => {
                        self.skip("subscriber", format!("{place} element {i}"), why);
                        continue;
                    }
                };
                if let Err(why) = check_client_id(&id, self.app.limits.client_id_chars) {
                    self.skip("subscriber", format!("{place} element {i}"), format!("{id:?}: {why}"));
                    continue;
                }
                if have.insert(id.clone()) {
                    batch.push(id);
                }
                if batch.len() >= MEMBER_BATCH {
                    self.add_subscribers(&stored, std::mem::take(&mut batch), last).await?;
                }
            }
            self.add_subscribers(&stored, batch, last).await?;
            if let Err(e) = finish_stream(reader).await {
                self.skip("subscriber", &place, e);
            }
        }
        Ok(())
    }

    async fn add_subscribers(
        &mut self,
        stored: &ConversationRecord,
        batch: Vec<String>,
        last: i64,
    ) -> Result<(), ImportError> {
        if batch.is_empty() {
            return Ok(());
        }
        let (store, app) = (self.store, self.app_id());
        self.report.subscribers_added += batch.len() as u64;
        // The conversation's update time stays: subscribing is not an update.
        let (cid, list, updated_at) = (stored.id.clone(), batch.clone(), stored.updated_at);
        self.queue(Box::pin(async move { store.add_members(app, &cid, list, updated_at).await })).await?;
        self.set_positions(&stored.id, &batch, last).await
    }

    // ---- _ConversationMemberInfo ---------------------------------------------------

    async fn member_infos(&mut self) -> Result<(), ImportError> {
        let path = self.dir.join(layout::MEMBER_INFOS);
        let Some(file) = open_optional(&path)? else { return Ok(()) };
        let mut lines = Lines::new(BufReader::new(file), self.opts.max_record_bytes);
        // Rows of one conversation usually come together: keep the last one read.
        let mut cached: Option<ConversationRecord> = None;
        while let Some((place, value)) = self.next_row(&mut lines, layout::MEMBER_INFOS, "role")? {
            let Some(value) = value else { continue };
            let row = match MemberInfoRow::parse(value) {
                Ok(row) => row,
                Err(why) => {
                    self.skip("role", &place, why);
                    continue;
                }
            };
            let (store, app) = (self.store, self.app_id());
            if cached.as_ref().is_none_or(|c| c.id != row.cid) {
                self.drain().await?;
                cached = store.conversation(app, &row.cid).await?;
            }
            let Some(conv) = cached.as_mut().filter(|c| c.id == row.cid) else {
                self.skip("role", &place, format!("no conversation {}", row.cid));
                continue;
            };
            if !conv.members.contains(&row.client) {
                let why = format!("{} is not a member of {}", row.client, row.cid);
                self.skip("role", &place, why);
                continue;
            }
            let is_manager = conv.managers.contains(&row.client);
            match row.role.as_str() {
                "Owner" if row.client == conv.creator => {}
                "Owner" => {
                    let why = format!(
                        "Owner {} is not the creator {:?}: Confab's owner is the creator (c)",
                        row.client, conv.creator
                    );
                    self.skip("role", &place, why);
                }
                "Manager" if !is_manager => {
                    conv.managers.push(row.client.clone());
                    self.report.roles_changed += 1;
                    let (cid, client) = (row.cid.clone(), row.client.clone());
                    self.queue(Box::pin(async move { store.set_role(app, &cid, &client, "Manager").await }))
                        .await?;
                }
                "Member" if is_manager => {
                    conv.managers.retain(|m| m != &row.client);
                    self.report.roles_changed += 1;
                    let (cid, client) = (row.cid.clone(), row.client.clone());
                    self.queue(Box::pin(async move { store.set_role(app, &cid, &client, "Member").await }))
                        .await?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    // ---- messages/ -----------------------------------------------------------------

    async fn histories(&mut self) -> Result<(), ImportError> {
        let dir = self.dir.join(layout::MESSAGES_DIR);
        for file in conversation_files(&dir)? {
            let (path, cid) = file?;
            let place = format!(
                "{}/{}",
                layout::MESSAGES_DIR,
                path.file_name().unwrap_or_default().to_string_lossy()
            );
            let Some(cid) = cid else {
                self.skip("message", &place, "the file name is not <conversation id>.json; file not read");
                continue;
            };
            self.history(&path, &place, &cid).await?;
        }
        Ok(())
    }

    async fn history(&mut self, path: &Path, place: &str, cid: &str) -> Result<(), ImportError> {
        let (store, app) = (self.store, self.app_id());
        // Writes of earlier files land before this one is read from the store.
        self.drain().await?;
        let stored = match store.conversation(app, cid).await? {
            Some(s) if s.kind == ConvKind::Temporary => {
                self.skip("message", place, "a temporary conversation; file not read");
                return Ok(());
            }
            Some(s) => s,
            None => {
                let why = format!(
                    "no conversation {cid} (in neither _Conversation.jsonl nor the store); file not read"
                );
                self.skip("message", place, why);
                return Ok(());
            }
        };
        let mut sorter: Sorter<Message> =
            Sorter::new(self.opts.sort_memory_bytes, self.opts.work_dir.as_deref());
        let (mut elements, reader) = stream_array(path, self.opts.max_record_bytes)?;
        while let Some((i, v)) = elements.recv().await {
            match Record::parse_history(v) {
                Ok(r) => {
                    let size = r.message.data.len() + r.message.from.len() + 64;
                    let id = r.id.clone();
                    let keyed = Keyed { group: String::new(), ts: r.ts, id: r.id, value: r.message };
                    if !sorter.push(keyed, size)? {
                        self.skip(
                            "message",
                            format!("{place} record {i}"),
                            format!("msg-id {id} appears twice"),
                        );
                    }
                }
                Err(why) => self.skip("message", format!("{place} record {i}"), why),
            }
        }
        if let Err(e) = finish_stream(reader).await {
            self.skip("message", place, e);
        }
        // A service conversation's targeted messages are never its last message: its
        // newest position is read from the log.
        let newest = if stored.kind == ConvKind::System {
            let range = MessageRange { newest_first: true, limit: 1, ..Default::default() };
            store.messages(app, cid, range).await?.first().map_or(0, |m| m.ts)
        } else {
            stored.last_message.as_ref().map_or(0, |m| m.ts)
        };
        let mut at = Placement {
            cid: cid.to_owned(),
            newest,
            last: 0,
            check_present: newest > 0,
            targeted: stored.kind == ConvKind::System,
        };
        let mut sorted = sorter.finish()?;
        loop {
            let page = sorted.next_page(PAGE)?;
            if page.is_empty() {
                break;
            }
            for k in page {
                let placed = self.place(&mut at, k).await?;
                count(&mut self.report.messages, placed);
                self.tick();
            }
        }
        drop(sorted);
        // Delivered and read up to the last imported message: nothing imported is
        // pushed again, nothing imported counts as unread. A chat room keeps no members.
        if stored.kind != ConvKind::Transient {
            self.set_positions(cid, &stored.members, at.last).await?;
        }
        Ok(())
    }

    fn tick(&mut self) {
        self.progress += 1;
        if self.progress.is_multiple_of(PROGRESS_EVERY) {
            let n = self.progress;
            self.note(format!("{n} messages read"));
        }
    }

    /// Stores one record unless its id is stored already: at its timestamp, or just
    /// after the newest stored message when that is not older (ties; a delta older than
    /// what is stored), which is where the store puts it.
    async fn place(&mut self, at: &mut Placement, k: Keyed<Message>) -> Result<Placed, ImportError> {
        let (store, app) = (self.store, self.app_id());
        if at.check_present
            && let Some(m) = store.message(app, &at.cid, &k.id).await?
        {
            at.last = at.last.max(m.ts);
            return Ok(Placed::Present);
        }
        let pos = k.ts.max(at.newest + 1);
        let mut data = k.value.data;
        let mut rewritten = false;
        if let Some(base) = &self.opts.file_base_url
            && !k.value.binary
            && let Some(new) = rewrite_body(&data, &self.opts.file_domains, base)
        {
            data = new;
            rewritten = true;
        }
        let message = StoredMessage {
            app: app.to_owned(),
            cid: at.cid.clone(),
            id: k.id,
            ts: pos,
            from: k.value.from,
            data: data.clone(),
            receipt: false,
            patched_at: k.value.patched_at,
            binary: k.value.binary,
            mentions: confab_types::Mentions { all: k.value.mention_all, pids: k.value.mention_pids },
            // Only a service conversation's log holds targeted messages.
            recipients: if at.targeted { k.value.recipients } else { None },
        };
        let append = store.append_message(message);
        // Writes are pipelined: the position is known ahead, and checked when it lands
        // (nothing else writes while the server is stopped).
        self.queue(Box::pin(async move {
            let appended = append.await?;
            if appended.ts != pos {
                return Err(StoreError::Backend(format!(
                    "the store put a message at {} instead of {pos}: is the server running?",
                    appended.ts
                )));
            }
            Ok(())
        }))
        .await?;
        if let Some(patched_at) = k.value.patched_at {
            let cid = at.cid.clone();
            self.queue(Box::pin(
                async move { store.patch_message(app, &cid, pos, data, None, patched_at).await },
            ))
            .await?;
        }
        at.newest = pos;
        at.last = at.last.max(pos);
        Ok(Placed::Imported { shifted: pos != k.ts, rewritten })
    }

    // ---- _SysMessage ---------------------------------------------------------------

    async fn sys_messages(&mut self) -> Result<(), ImportError> {
        let path = self.dir.join(layout::SYS_MESSAGES);
        let Some(file) = open_optional(&path)? else { return Ok(()) };
        let mut lines = Lines::new(BufReader::new(file), self.opts.max_record_bytes);
        let mut sorter: Sorter<Message> =
            Sorter::new(self.opts.sort_memory_bytes, self.opts.work_dir.as_deref());
        while let Some((place, value)) = self.next_row(&mut lines, layout::SYS_MESSAGES, "sys_message")? {
            let Some(value) = value else { continue };
            match Record::parse_sys_message(value) {
                Ok((cid, r)) => {
                    let size = r.message.data.len() + r.message.from.len() + 64;
                    let id = r.id.clone();
                    if !sorter.push(Keyed { group: cid, ts: r.ts, id: r.id, value: r.message }, size)? {
                        self.skip("sys_message", &place, format!("msgId {id} appears twice"));
                    }
                }
                Err(why) => self.skip("sys_message", &place, why),
            }
        }
        self.drain().await?;
        let mut sorted = sorter.finish()?;
        self.place_sys_messages(&mut sorted).await
    }

    async fn place_sys_messages(&mut self, sorted: &mut Sorted<Message>) -> Result<(), ImportError> {
        let mut current: Option<(String, Option<Placement>)> = None;
        loop {
            let page = sorted.next_page(PAGE)?;
            if page.is_empty() {
                return Ok(());
            }
            for k in page {
                if current.as_ref().is_none_or(|(cid, _)| *cid != k.group) {
                    let conv = self.store.conversation(self.app_id(), &k.group).await?;
                    let placement = match conv.filter(|c| c.kind == ConvKind::System) {
                        None => None,
                        Some(_) => {
                            // The inbox has no conversation row to keep its newest.
                            let inbox = format!("{}:inbox", k.group);
                            let newest = MessageRange { newest_first: true, limit: 1, ..Default::default() };
                            let newest = self.store.messages(self.app_id(), &inbox, newest).await?;
                            let newest = newest.first().map_or(0, |m| m.ts);
                            Some(Placement {
                                cid: inbox,
                                newest,
                                last: 0,
                                check_present: newest > 0,
                                targeted: false,
                            })
                        }
                    };
                    current = Some((k.group.clone(), placement));
                }
                let Some((_, Some(at))) = current.as_mut() else {
                    let why = format!("no service conversation {}", k.group);
                    self.skip("sys_message", format!("{} msgId {}", layout::SYS_MESSAGES, k.id), why);
                    continue;
                };
                let mut at = std::mem::replace(
                    at,
                    Placement {
                        cid: String::new(),
                        newest: 0,
                        last: 0,
                        check_present: false,
                        targeted: false,
                    },
                );
                let placed = self.place(&mut at, k).await;
                if let Some((_, Some(slot))) = current.as_mut() {
                    *slot = at;
                }
                count(&mut self.report.sys_messages, placed?);
            }
        }
    }
}

/// A queued mute change, owning what it names.
fn mute<'a>(store: &'a dyn Store, app: &'a str, cid: &str, client: &str, on: bool) -> StoreFuture<'a, ()> {
    let (cid, client) = (cid.to_owned(), client.to_owned());
    Box::pin(async move { store.set_muted(app, &cid, &client, on).await })
}

fn count(counts: &mut MessageCounts, placed: Placed) {
    match placed {
        Placed::Present => counts.present += 1,
        Placed::Imported { shifted, rewritten } => {
            counts.imported += 1;
            counts.shifted += u64::from(shifted);
            counts.files_rewritten += u64::from(rewritten);
        }
    }
}

type Reader = tokio::task::JoinHandle<Result<u64, ArrayError<()>>>;

/// Reads a JSON array file on a blocking thread, handing its elements over one at a
/// time (a small queue: the reader waits for the importer).
fn stream_array(
    path: &Path,
    max: usize,
) -> Result<(tokio::sync::mpsc::Receiver<(u64, Value)>, Reader), ImportError> {
    let file = std::fs::File::open(path).map_err(io_error(path))?;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let reader = tokio::task::spawn_blocking(move || {
        each_element(BufReader::new(file), max, |i, v| tx.blocking_send((i, v)).map_err(|_| ()))
    });
    Ok((rx, reader))
}

/// How the reading of an array file ended: `Err` with what to report.
async fn finish_stream(reader: Reader) -> Result<(), String> {
    match reader.await {
        Ok(Ok(_)) | Ok(Err(ArrayError::Callback(()))) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("reader failed: {e}")),
    }
}

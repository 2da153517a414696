//! The engine's ports: the [`Store`] that is the source of truth, and the [`Clock`].
//! The engine does I/O only through these, so its rules do not depend on a back end.

use serde_json::{Map, Value};
use std::future::Future;
use std::pin::Pin;

/// A boxed future returned by a [`Store`].
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A storage failure. The engine reports it to the client as 4200 INTERNAL_ERROR and
/// never acknowledges what it could not store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The back end is gone (writer stopped, pool closed).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The back end reported an error.
    #[error("store failure: {0}")]
    Backend(String),
}

/// Kinds of conversation (protocol §4.7 `conv_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvKind {
    /// Members, history, offline delivery.
    Normal = 1,
    /// A chat room: no persistent members, members are whoever is online.
    Transient = 2,
    /// A system (service) conversation.
    System = 3,
    /// A temporary conversation.
    Temporary = 4,
}

impl ConvKind {
    /// From the stored number.
    pub fn from_i64(n: i64) -> ConvKind {
        match n {
            2 => ConvKind::Transient,
            3 => ConvKind::System,
            4 => ConvKind::Temporary,
            _ => ConvKind::Normal,
        }
    }
}

/// The newest stored message of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct LastMessage {
    /// Message id.
    pub id: String,
    /// Timestamp (ms).
    pub ts: i64,
    /// Sender.
    pub from: String,
    /// Body.
    pub data: String,
}

/// A stored conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationRecord {
    /// Owning app.
    pub app: String,
    /// Conversation id.
    pub id: String,
    /// Kind.
    pub kind: ConvKind,
    /// Creator (`c`).
    pub creator: String,
    /// Members (`m`), in join order.
    pub members: Vec<String>,
    /// Members who muted the conversation (`mu`: no offline notifications for them).
    pub muted: Vec<String>,
    /// Members with the `Manager` role (the creator is the owner).
    pub managers: Vec<String>,
    /// Members who may not send (shut up).
    pub shut_up: Vec<String>,
    /// Clients blocked from the conversation.
    pub blocked: Vec<String>,
    /// When a temporary conversation expires (ms).
    pub expires_at: Option<i64>,
    /// Custom attributes, including `name` and `attr`.
    pub attrs: Map<String, Value>,
    /// For unique conversations: the canonical member set.
    pub unique_key: Option<String>,
    /// Creation time (ms).
    pub created_at: i64,
    /// Last update time (ms).
    pub updated_at: i64,
    /// Newest message, if any.
    pub last_message: Option<LastMessage>,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    /// Owning app.
    pub app: String,
    /// Conversation id.
    pub cid: String,
    /// Message id.
    pub id: String,
    /// Timestamp (ms), strictly increasing within a conversation: the message's position.
    pub ts: i64,
    /// Sender.
    pub from: String,
    /// Body.
    pub data: String,
    /// The sender asked for receipts.
    pub receipt: bool,
    /// When the body was last edited or recalled (ms).
    pub patched_at: Option<i64>,
    /// `data` is the base64 of a binary body.
    pub binary: bool,
    /// Who the message mentions.
    pub mentions: confab_types::Mentions,
}

/// Which messages to read, by position. Bounds are `(ts, inclusive)`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MessageRange {
    /// Lower bound.
    pub after: Option<(i64, bool)>,
    /// Upper bound.
    pub before: Option<(i64, bool)>,
    /// Take the newest matching messages first (the result is still returned oldest first).
    pub newest_first: bool,
    /// At most this many.
    pub limit: usize,
    /// Only bodies whose JSON has this `_lctype`.
    pub lctype: Option<i64>,
}

/// A client's delivery cursor in one conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberCursor {
    /// Conversation id.
    pub cid: String,
    /// Position up to which the client acknowledged, contiguously.
    pub cursor: i64,
    /// Position of the conversation's newest message.
    pub last_ts: i64,
}

/// Narrows a conversation scan; the engine still evaluates the full query.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScanFilter {
    /// Only these ids.
    pub ids: Option<Vec<String>>,
    /// Only conversations with this member.
    pub member: Option<String>,
    /// Only this kind.
    pub kind: Option<ConvKind>,
    /// Fail rather than return more than this many candidates.
    pub max: usize,
}

/// Persistent state. Writes complete only once durable: the engine acknowledges a
/// message to its sender after [`Store::append_message`] resolves.
pub trait Store: Send + Sync + 'static {
    /// Creates a conversation with its members (their cursors start at 0).
    fn create_conversation(&self, record: ConversationRecord) -> StoreFuture<'_, ()>;
    /// Reads one conversation with its members.
    fn conversation<'a>(&'a self, app: &'a str, cid: &'a str) -> StoreFuture<'a, Option<ConversationRecord>>;
    /// Finds the unique conversation with this canonical member set.
    fn find_unique<'a>(&'a self, app: &'a str, key: &'a str) -> StoreFuture<'a, Option<ConversationRecord>>;
    /// Candidate conversations for a query; fails past `filter.max` candidates.
    fn scan_conversations<'a>(
        &'a self,
        app: &'a str,
        filter: ScanFilter,
    ) -> StoreFuture<'a, Vec<ConversationRecord>>;
    /// Replaces the attributes.
    fn set_attributes<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        attrs: Map<String, Value>,
        updated_at: i64,
    ) -> StoreFuture<'a, ()>;
    /// Adds members; each new member's cursor starts at the newest message.
    fn add_members<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        members: Vec<String>,
        updated_at: i64,
    ) -> StoreFuture<'a, ()>;
    /// Removes members and their cursors.
    fn remove_members<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        members: Vec<String>,
        updated_at: i64,
    ) -> StoreFuture<'a, ()>;
    /// Appends a message and makes it the conversation's last message.
    ///
    /// Contract: the write is queued before this method returns, and queued writes are
    /// applied in call order; the future resolves once the write is durable. The engine
    /// relies on this to keep one order per conversation without holding a lock across
    /// the commit.
    fn append_message(&self, message: StoredMessage) -> StoreFuture<'static, ()>;
    /// Reads messages of a conversation, returned oldest first.
    fn messages<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        range: MessageRange,
    ) -> StoreFuture<'a, Vec<StoredMessage>>;
    /// The client's cursors in all its conversations.
    fn member_cursors<'a>(&'a self, app: &'a str, client: &'a str) -> StoreFuture<'a, Vec<MemberCursor>>;
    /// Moves a cursor forward (never back). Not awaited by the engine: a lost cursor
    /// update only means a message is delivered again.
    fn save_cursor(&self, app: &str, client: &str, cid: &str, ts: i64);
    /// Moves a client's read position forward (never back); completes once committed.
    /// The engine tells the reader's other devices only then, so a device that logs in
    /// after seeing "0 unread" never reads the old position.
    fn save_read<'a>(&'a self, app: &'a str, client: &'a str, cid: &'a str, ts: i64) -> StoreFuture<'a, ()>;
    /// One message by id.
    fn message<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        id: &'a str,
    ) -> StoreFuture<'a, Option<StoredMessage>>;
    /// Replaces a message's body (an edit, or the recall placeholder), keeping its
    /// position; the conversation's last message follows if it was that one.
    fn patch_message<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        ts: i64,
        data: String,
        patched_at: i64,
    ) -> StoreFuture<'a, ()>;
    /// Sets a member's role (`Manager` or `Member`).
    fn set_role<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        client: &'a str,
        role: &'a str,
    ) -> StoreFuture<'a, ()>;
    /// Shuts members up (or lets them speak again).
    fn set_shut_up<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        clients: Vec<String>,
        on: bool,
    ) -> StoreFuture<'a, ()>;
    /// Blocks clients (removing them as members) or unblocks them.
    fn set_blocked<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        clients: Vec<String>,
        on: bool,
    ) -> StoreFuture<'a, ()>;
    /// Messages of the client's conversations edited or recalled after `since` (ms),
    /// oldest change first, at most `limit`.
    fn patched_since<'a>(
        &'a self,
        app: &'a str,
        client: &'a str,
        since: i64,
        limit: usize,
    ) -> StoreFuture<'a, Vec<StoredMessage>>;
    /// Mutes or unmutes the conversation for one member.
    fn set_muted<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        client: &'a str,
        muted: bool,
    ) -> StoreFuture<'a, ()>;
    /// Each member's delivery cursor and read position: `(client, acked_upto, read_upto)`.
    fn member_positions<'a>(&'a self, app: &'a str, cid: &'a str)
    -> StoreFuture<'a, Vec<(String, i64, i64)>>;
    /// Frees a unique key (an expired temporary conversation gives its member set up).
    fn release_unique<'a>(&'a self, app: &'a str, cid: &'a str) -> StoreFuture<'a, ()>;
    /// Unread counts of the client's conversations that have any, newest first, at
    /// most `max` of them.
    fn unread<'a>(&'a self, app: &'a str, client: &'a str, max: usize) -> StoreFuture<'a, Vec<UnreadCount>>;
}

/// A conversation with unread messages.
#[derive(Debug, Clone, PartialEq)]
pub struct UnreadCount {
    /// Conversation id.
    pub cid: String,
    /// Messages from others after the client's read position.
    pub unread: i64,
    /// The newest message.
    pub last: Option<LastMessage>,
    /// One of the unread messages mentions the client.
    pub mentioned: bool,
}

/// Where time comes from, so tests can control it.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

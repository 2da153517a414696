//! The engine's ports: the [`Store`] that is the source of truth, the [`Clock`], the
//! [`Presence`] registry of live sessions and the [`Broker`] that fans out to them. The
//! engine does I/O and crosses processes only through these, so its rules do not depend
//! on a back end; each has an in-process implementation that the single-node mode uses.

mod broker;
mod cluster;
mod hooks;
mod presence;

pub use broker::{Broker, ClientEvent, ClusterBroker, Committed, LocalBroker};
pub use cluster::{
    AppCounts, ClaimError, Cluster, ClusterFuture, ClusterHub, HubNode, NodeEvent, NodeEvents, SessionRef,
};
pub use hooks::{HookCall, HookCaller, HookError, HookFuture, OutboxEntry};
pub use presence::{LocalPresence, Presence, TagClaim, TagHeld};

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

/// The newest stored message of a conversation (the type the unread push reports).
pub use confab_types::LastMessage;

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
    /// Newest message for every member, if any (a targeted message never is one).
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
    /// Who it is for: `None` for every member (every message but one kind); a service
    /// conversation's targeted message names its recipients (distinct, sorted). Only
    /// they see it when a client reads the log ([`MessageRange::visible_to`],
    /// [`Store::unread`], [`Store::patched_since`]); it takes its position in the
    /// conversation's order like any message, but it never becomes the conversation's
    /// last message, which every member sees.
    pub recipients: Option<Vec<String>>,
}

impl StoredMessage {
    /// Whether `client` is one the message is for (every member, unless it names its
    /// recipients).
    pub fn is_for(&self, client: &str) -> bool {
        self.recipients.as_ref().is_none_or(|to| to.iter().any(|c| c == client))
    }
}

/// Which messages to read, by position. Bounds are `(ts, inclusive)`.
///
/// The engine builds two shapes: history walks (`logs`: towards older messages with
/// `before` = the start anchor, `after` = the end anchor and `newest_first`; towards
/// newer ones with `after` = start, `before` = end, oldest first; each bound inclusive
/// or not as the client asked) and the offline replay (`after: Some((cursor, false))`,
/// oldest first, a page at a time until a page comes back empty).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MessageRange {
    /// Lower bound.
    pub after: Option<(i64, bool)>,
    /// Upper bound.
    pub before: Option<(i64, bool)>,
    /// Take the newest matching messages first (the result is still returned oldest first).
    pub newest_first: bool,
    /// At most this many (0: none), counted after the `lctype` filter.
    pub limit: usize,
    /// Only bodies that are a JSON object whose `_lctype` is this number (`1.0` matches
    /// `1`; a string `"1"` does not); other bodies, JSON or not, never match.
    pub lctype: Option<i64>,
    /// Only messages this client may see ([`StoredMessage::is_for`]): a client's history
    /// of a service conversation leaves out the targeted messages of others. Like
    /// `lctype`, applied before the limit.
    pub visible_to: Option<String>,
}

/// Where [`Store::append_message`] put a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The message's position (its timestamp, ms).
    pub ts: i64,
    /// The position of the message before it in the conversation (0: it is the first).
    pub prev_ts: i64,
    /// `Some(id)`: nothing was written: the message is a re-send of the message `id`,
    /// stored before at `ts` under the same sender and dedupe token (see
    /// [`Store::append_message_notify`]); `prev_ts` is then 0.
    pub original: Option<String>,
}

impl Appended {
    /// A message written at `ts`, after the one at `prev_ts`.
    pub fn new(ts: i64, prev_ts: i64) -> Self {
        Self { ts, prev_ts, original: None }
    }

    /// A re-send of the message `id` stored at `ts`: nothing written.
    pub fn resent(id: String, ts: i64) -> Self {
        Self { ts, prev_ts: 0, original: Some(id) }
    }
}

/// How far one member has received and read a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberPosition {
    /// The member.
    pub client: String,
    /// Delivery cursor: position up to which the client acknowledged, contiguously.
    pub acked_upto: i64,
    /// Read position.
    pub read_upto: i64,
}

/// A client's delivery cursor in one conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberCursor {
    /// Conversation id.
    pub cid: String,
    /// Position up to which the client acknowledged, contiguously.
    pub cursor: i64,
    /// Position of the conversation's newest message (0 when it has none).
    pub last_ts: i64,
}

/// Narrows a conversation scan; the engine still evaluates the full query. The
/// conditions that are set must all hold.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScanFilter {
    /// Only these ids (an empty list matches nothing; unknown ids are skipped).
    pub ids: Option<Vec<String>>,
    /// Only conversations this client is currently a member of.
    pub member: Option<String>,
    /// Only this kind.
    pub kind: Option<ConvKind>,
    /// The most candidates the caller accepts: the store returns at most `max + 1`, and
    /// `max + 1` records tell the caller there are too many (the engine then refuses
    /// the query).
    pub max: usize,
}

/// What a [`ClientMark`] says about a client in one conversation. Marks are kept apart
/// from membership: any client id may carry one, member or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MarkKind {
    /// The client put the conversation on its own blacklist: nobody else brings it in.
    ClientBlocked = 1,
    /// A temporary silence: the client may not send until the mark's `until`.
    Silenced = 2,
    /// Shut up in a chat room (a room keeps no members to carry the flag).
    RoomShutUp = 3,
    /// A chat room's manager.
    RoomManager = 4,
}

impl MarkKind {
    /// From the stored number (`None` for a number this build does not know).
    pub fn from_i64(n: i64) -> Option<MarkKind> {
        match n {
            1 => Some(MarkKind::ClientBlocked),
            2 => Some(MarkKind::Silenced),
            3 => Some(MarkKind::RoomShutUp),
            4 => Some(MarkKind::RoomManager),
            _ => None,
        }
    }
}

/// A mark on a client in a conversation ([`Store::set_marks`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMark {
    /// The client.
    pub client: String,
    /// What it says.
    pub kind: MarkKind,
    /// Until when it holds (ms); `None`: until removed.
    pub until: Option<i64>,
}

/// Persistent state. Writes complete only once durable: the engine acknowledges a
/// message to its sender after [`Store::append_message`] resolves.
///
/// Rules every implementation keeps (the `confab-store-tests` crate checks them):
///
/// - **Apps are isolated**: every key is scoped by `app`; the same conversation id,
///   unique key or client id in two apps names unrelated things.
/// - **Members** are kept in join order. A member carries a delivery cursor, a read
///   position, a role, a mute flag and a shut-up flag; all of them go when the member
///   is removed or blocked, and a member added again starts afresh at the end of the
///   list. Adding a current member changes nothing about them.
/// - **Member-only writes**: [`Store::save_cursor`], [`Store::save_read`],
///   [`Store::set_role`], [`Store::set_shut_up`] and [`Store::set_muted`] change
///   members only; naming a non-member is not an error and changes nothing.
/// - **Positions never go back**: a cursor or read position lower than the stored one
///   is ignored.
/// - A write that resolves `Ok` is visible to every read started afterwards.
/// - The engine never writes to a conversation it has not created; what a store does
///   with such a write (ignore or refuse it) is not part of the contract.
///
/// **The hook outbox.** Notifying hooks (`_messageSent`, `_conversationAdded`, …) are
/// delivered at least once, even across restarts, so their calls ([`HookCall`]) are
/// stored: with the event they report, in the same transaction (the `*_notify` variants
/// of [`Store::append_message`], [`Store::create_conversation`], [`Store::add_members`]
/// and [`Store::remove_members`]; the plain methods store none), or alone with
/// [`Store::outbox_put`]. The engine's outbox worker takes due calls with
/// [`Store::outbox_claim`] and settles each with [`Store::outbox_done`] or
/// [`Store::outbox_retry`]. Outbox rows are scoped by app and key; a call whose key is
/// already stored is ignored (the first is kept); deleting a conversation leaves its
/// calls alone (they report what already happened).
pub trait Store: Send + Sync + 'static {
    /// Creates a conversation with its members (duplicates in `record.members` are
    /// kept once, in first-seen order; their cursors and read positions start at 0).
    /// Only the conversation's own fields and its members are stored: `muted`,
    /// `managers`, `shut_up`, `blocked` and `last_message` of `record` are ignored (a
    /// new conversation has none). Fails, storing nothing, when the id exists in the
    /// app or when `unique_key` is held by another conversation of the app.
    fn create_conversation(&self, record: ConversationRecord) -> StoreFuture<'_, ()> {
        self.create_conversation_notify(record, Vec::new())
    }
    /// [`Store::create_conversation`], storing `notify` in the outbox in the same
    /// transaction (see *The hook outbox* above): both or neither.
    fn create_conversation_notify(
        &self,
        record: ConversationRecord,
        notify: Vec<HookCall>,
    ) -> StoreFuture<'_, ()>;
    /// Reads one conversation with its members: `members`, `muted`, `managers` (role
    /// `Manager`) and `shut_up` in join order, `blocked` sorted by client id,
    /// `last_message` the newest appended message for every member (with its current
    /// body), if any.
    fn conversation<'a>(&'a self, app: &'a str, cid: &'a str) -> StoreFuture<'a, Option<ConversationRecord>>;
    /// Finds the conversation holding this unique key (a canonical member set), unless
    /// [`Store::release_unique`] gave the key up.
    fn find_unique<'a>(&'a self, app: &'a str, key: &'a str) -> StoreFuture<'a, Option<ConversationRecord>>;
    /// Candidate conversations for a query, read like [`Store::conversation`]: those
    /// matching every condition of `filter`, oldest created first (ties in no
    /// particular order), at most `filter.max + 1` of them (see [`ScanFilter::max`]).
    fn scan_conversations<'a>(
        &'a self,
        app: &'a str,
        filter: ScanFilter,
    ) -> StoreFuture<'a, Vec<ConversationRecord>>;
    /// A page of the app's conversations in id order (bytewise): those whose id comes
    /// strictly after `after` (from the first with `None`), only of `kind` when given,
    /// at most `limit`, each read like [`Store::conversation`]. It walks every
    /// conversation of an app a page at a time however many there are (the storage
    /// API's scan, an export), where [`Store::scan_conversations`] refuses past its
    /// `max`.
    fn conversations_after<'a>(
        &'a self,
        app: &'a str,
        after: Option<&'a str>,
        kind: Option<ConvKind>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<ConversationRecord>>;
    /// Replaces the attributes (keys not in `attrs` are gone) and sets `updated_at`.
    fn set_attributes<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        attrs: Map<String, Value>,
        updated_at: i64,
    ) -> StoreFuture<'a, ()>;
    /// Adds members at the end of the member list and sets `updated_at`. Each new
    /// member's delivery cursor starts at the newest message (0 without messages), its
    /// read position at 0 (so earlier messages from others count in [`Store::unread`]);
    /// current members are left as they are.
    fn add_members<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        members: Vec<String>,
        updated_at: i64,
    ) -> StoreFuture<'a, ()> {
        self.add_members_notify(app, cid, members, updated_at, Vec::new())
    }
    /// [`Store::add_members`], storing `notify` in the outbox in the same transaction.
    fn add_members_notify<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        members: Vec<String>,
        updated_at: i64,
        notify: Vec<HookCall>,
    ) -> StoreFuture<'a, ()>;
    /// Removes members with their cursors, read positions, roles and flags, and sets
    /// `updated_at`. Naming a non-member is not an error.
    fn remove_members<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        members: Vec<String>,
        updated_at: i64,
    ) -> StoreFuture<'a, ()> {
        self.remove_members_notify(app, cid, members, updated_at, Vec::new())
    }
    /// [`Store::remove_members`], storing `notify` in the outbox in the same transaction.
    fn remove_members_notify<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        members: Vec<String>,
        updated_at: i64,
        notify: Vec<HookCall>,
    ) -> StoreFuture<'a, ()>;
    /// Appends a message at the next free position of its conversation and, unless it
    /// names its recipients ([`StoredMessage::recipients`], stored with it), makes it the
    /// conversation's last message. `message.ts` is the position the caller proposes;
    /// the store assigns `max(message.ts, newest + 1)` (`newest`: the position of the
    /// conversation's newest message, 0 without messages) in the same atomic step as
    /// the insert, and returns it with `newest` as [`Appended`]. So several processes
    /// writing one store keep one strictly increasing order per conversation; one
    /// process that proposes increasing positions gets them unchanged.
    ///
    /// Contract: the write is queued before this method returns, and queued writes are
    /// applied in call order; the future resolves once the write is durable. The engine
    /// relies on this to keep one order per conversation without holding a lock across
    /// the commit.
    fn append_message(&self, message: StoredMessage) -> StoreFuture<'static, Appended> {
        self.append_message_notify(message, Vec::new(), None)
    }
    /// [`Store::append_message`], storing `notify` in the outbox in the same transaction
    /// as the message: a message whose write fails leaves no call behind, and a committed
    /// message always has its calls. The calls are built before the store assigns the
    /// position: when it assigns another than `message.ts`, a call whose parameters
    /// report `"timestamp": message.ts` is stored reporting the assigned one (see
    /// [`HookCall::restamp`]).
    ///
    /// `dedupe` is the client's token for the message (`dt`): when the conversation
    /// already holds a message from the same sender stored with the same token, nothing
    /// is written (neither the message nor its calls) and the store answers
    /// [`Appended::resent`] with that message's id and position. The check and the
    /// insert are one atomic step even with several processes writing the store: a
    /// client that re-sends after a lost ack, through any node and after any restart,
    /// never has its message stored twice.
    fn append_message_notify(
        &self,
        message: StoredMessage,
        notify: Vec<HookCall>,
        dedupe: Option<String>,
    ) -> StoreFuture<'static, Appended>;
    /// Reads messages of a conversation within `range`'s bounds (and for
    /// `range.visible_to` only, when set), returned oldest first, each with its
    /// recipients. With `newest_first` the `limit` newest matching messages are taken,
    /// otherwise the `limit` oldest.
    fn messages<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        range: MessageRange,
    ) -> StoreFuture<'a, Vec<StoredMessage>>;
    /// The client's cursors in every conversation it is a member of (any kind), in no
    /// particular order, each with the conversation's newest position (of any message,
    /// targeted ones included: the offline replay walks past those of others).
    fn member_cursors<'a>(&'a self, app: &'a str, client: &'a str) -> StoreFuture<'a, Vec<MemberCursor>>;
    /// Moves a member's delivery cursor forward (never back; non-members: nothing).
    /// Not awaited by the engine: a lost cursor update only means a message is
    /// delivered again. A store may write it later, but [`Store::member_cursors`] and
    /// [`Store::member_positions`] called after this returns see the new position.
    fn save_cursor(&self, app: &str, client: &str, cid: &str, ts: i64);
    /// Commit the buffered delivery cursors now rather than after the usual interval,
    /// without waiting (a session ended, and its client may log in on another node
    /// next, which reads only committed cursors). A store whose reads all see its
    /// buffer may do nothing.
    fn commit_cursors_soon(&self) {}
    /// Moves a member's read position forward (never back; non-members: nothing);
    /// completes once committed.
    /// The engine tells the reader's other devices only then, so a device that logs in
    /// after seeing "0 unread" never reads the old position.
    fn save_read<'a>(&'a self, app: &'a str, client: &'a str, cid: &'a str, ts: i64) -> StoreFuture<'a, ()>;
    /// One message of the conversation by id (`None` if the id is in another
    /// conversation). Ids are unique within a conversation.
    fn message<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        id: &'a str,
    ) -> StoreFuture<'a, Option<StoredMessage>>;
    /// Replaces a message's body (an edit, or the recall placeholder), keeping its
    /// position and id and setting its `patched_at`, and sets its binary flag when
    /// `binary` is given (an edit the app's `_messageUpdate` hook turned binary or
    /// text; `None` keeps it); the conversation's last message follows if it was that
    /// one. Fails when no message has position `ts`.
    fn patch_message<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        ts: i64,
        data: String,
        binary: Option<bool>,
        patched_at: i64,
    ) -> StoreFuture<'a, ()>;
    /// Sets a member's role (`Manager` or `Member`); only `Manager` puts the member in
    /// [`ConversationRecord::managers`].
    fn set_role<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        client: &'a str,
        role: &'a str,
    ) -> StoreFuture<'a, ()>;
    /// Shuts members up (or lets them speak again); non-members are skipped.
    fn set_shut_up<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        clients: Vec<String>,
        on: bool,
    ) -> StoreFuture<'a, ()>;
    /// Blocks clients, members or not (members are removed as by
    /// [`Store::remove_members`], without touching `updated_at`), or unblocks them
    /// (they do not become members again).
    fn set_blocked<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        clients: Vec<String>,
        on: bool,
    ) -> StoreFuture<'a, ()>;
    /// Messages of the conversations the client is a member of, edited or recalled
    /// strictly after `since` (ms), those for the client only
    /// ([`StoredMessage::is_for`]): ordered by `patched_at`, then conversation id, then
    /// position, and cut to the first `limit`.
    fn patched_since<'a>(
        &'a self,
        app: &'a str,
        client: &'a str,
        since: i64,
        limit: usize,
    ) -> StoreFuture<'a, Vec<StoredMessage>>;
    /// Mutes or unmutes the conversation for one member (non-members: nothing).
    fn set_muted<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        client: &'a str,
        muted: bool,
    ) -> StoreFuture<'a, ()>;
    /// Puts mark `kind` on each of `clients` in conversation `cid`, replacing the one
    /// they carry (so `until` is the latest given; `None`: until removed), or with
    /// `on == false` removes it. Marks are not membership: any client id may carry one,
    /// and adding or removing members leaves them alone; deleting the conversation
    /// removes them.
    fn set_marks<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        kind: MarkKind,
        clients: Vec<String>,
        on: bool,
        until: Option<i64>,
    ) -> StoreFuture<'a, ()>;
    /// Every mark in conversation `cid`, ordered by kind, then client; expired ones too
    /// (the reader compares `until` with its clock).
    fn marks<'a>(&'a self, app: &'a str, cid: &'a str) -> StoreFuture<'a, Vec<ClientMark>>;
    /// The conversations in which `client` carries mark `kind`, ordered by id, those
    /// after `after` (exclusive) only, at most `limit`.
    fn client_marks<'a>(
        &'a self,
        app: &'a str,
        client: &'a str,
        kind: MarkKind,
        after: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<String>>;
    /// In how many conversations `client` carries mark `kind`: as many as
    /// [`Store::client_marks`] lists without a limit, counted without reading them.
    fn count_client_marks<'a>(
        &'a self,
        app: &'a str,
        client: &'a str,
        kind: MarkKind,
    ) -> StoreFuture<'a, usize>;
    /// Each member's delivery cursor and read position, in join order. Cursors saved
    /// by [`Store::save_cursor`] show at once.
    fn member_positions<'a>(&'a self, app: &'a str, cid: &'a str) -> StoreFuture<'a, Vec<MemberPosition>>;
    /// Frees a unique key (an expired temporary conversation gives its member set up):
    /// the conversation keeps existing with `unique_key: None`, and another
    /// conversation may take the key.
    fn release_unique<'a>(&'a self, app: &'a str, cid: &'a str) -> StoreFuture<'a, ()>;
    /// Deletes a conversation with everything kept for it: its members (with their
    /// cursors, read positions, roles and flags), its blocked list, its messages and
    /// those of its side logs (every log whose id starts with `<cid>:`, such as a
    /// system conversation's inbox `<cid>:inbox`), and frees its unique key. A
    /// conversation that does not exist is not an error.
    fn delete_conversation<'a>(&'a self, app: &'a str, cid: &'a str) -> StoreFuture<'a, ()>;
    /// Unread counts of the client's conversations that have any, at most `max` of
    /// them. Only conversations the client is a member of and that are not
    /// [`ConvKind::Transient`] count; a conversation has unread messages when messages
    /// from others come after the client's read position (its own messages never
    /// count, nor targeted messages for others). Conversations come newest position
    /// first (of any message; ties in no particular order); `max` counts only the
    /// conversations returned.
    fn unread<'a>(&'a self, app: &'a str, client: &'a str, max: usize) -> StoreFuture<'a, Vec<UnreadCount>>;
    /// Deletes the message at position `ts` of a log (none there: not an error). The
    /// conversation's last message stays what it was (clients keep their copies), and
    /// the position is never assigned again.
    fn delete_message<'a>(&'a self, app: &'a str, cid: &'a str, ts: i64) -> StoreFuture<'a, ()>;
    /// Takes `client` off the recipients of the targeted message at position `ts`; the
    /// message is deleted (as by [`Store::delete_message`]) when nobody is left. A
    /// message for every member, a client it is not for, or no message there: nothing
    /// changes. One atomic step, so two recipients removed at once both go.
    fn remove_recipient<'a>(
        &'a self,
        app: &'a str,
        cid: &'a str,
        ts: i64,
        client: &'a str,
    ) -> StoreFuture<'a, ()>;
    /// Messages of every conversation of the app (only logs whose id is a stored
    /// conversation's: no side logs), sent by `from` when given, within `range`'s
    /// bounds, returned oldest first; ties of position order by conversation id. With
    /// `newest_first` the `limit` newest are taken. `range.lctype` is ignored.
    fn app_messages<'a>(
        &'a self,
        app: &'a str,
        from: Option<&'a str>,
        range: MessageRange,
    ) -> StoreFuture<'a, Vec<StoredMessage>>;
    /// When `client` became a member of the conversation (ms; `updated_at` of the
    /// [`Store::add_members`] call, or the creation time for initial members), `None`
    /// for a non-member.
    fn joined_at<'a>(&'a self, app: &'a str, cid: &'a str, client: &'a str) -> StoreFuture<'a, Option<i64>>;
    /// Whether the back end answers now (`/healthz` reports 503 while it does not). An
    /// embedded store is as healthy as its process: the default says yes.
    fn health(&self) -> StoreFuture<'_, ()> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// Stores hook calls for events that have no other write (a client going online or
    /// offline); queued like the other writes, resolved once durable.
    fn outbox_put(&self, notify: Vec<HookCall>) -> StoreFuture<'static, ()>;
    /// Calls of every app whose next attempt is due at `now` (ms) or earlier: earliest
    /// due first, calls due at the same time in the order they were stored, at most
    /// `limit`.
    fn outbox_due(&self, now: i64, limit: usize) -> StoreFuture<'_, Vec<OutboxEntry>>;
    /// The calls [`Store::outbox_due`] returns, taken for delivery: until `lease_until`
    /// (ms) no other caller of this method gets them again (their next attempt is due
    /// then, unless [`Store::outbox_done`] or [`Store::outbox_retry`] settles them
    /// first), so several processes delivering from one store do not make the same
    /// call at once, and a call whose deliverer died comes due again. Entries report
    /// `due_at` as it was before the lease.
    ///
    /// A store that only one process uses has one outbox worker and no one to share
    /// with: the default returns [`Store::outbox_due`] and leases nothing.
    fn outbox_claim(&self, now: i64, limit: usize, lease_until: i64) -> StoreFuture<'_, Vec<OutboxEntry>> {
        let _ = lease_until;
        self.outbox_due(now, limit)
    }
    /// Removes a call (delivered, or given up). An unknown key is not an error.
    fn outbox_done<'a>(&'a self, app: &'a str, key: &'a str) -> StoreFuture<'a, ()>;
    /// Records a failed attempt: the call's attempt count becomes `attempts` and its next
    /// attempt is due at `due_at`. An unknown key is not an error.
    fn outbox_retry<'a>(
        &'a self,
        app: &'a str,
        key: &'a str,
        attempts: u32,
        due_at: i64,
    ) -> StoreFuture<'a, ()>;
    /// How many calls the outbox holds, of every app, due or not, counting at most
    /// `max` (the count scans that many rows at most): `/metrics` reports it.
    fn outbox_len(&self, max: u64) -> StoreFuture<'_, u64>;
}

/// A conversation with unread messages.
#[derive(Debug, Clone, PartialEq)]
pub struct UnreadCount {
    /// Conversation id.
    pub cid: String,
    /// Messages from others after the client's read position.
    pub unread: i64,
    /// The newest message the client may see (its current body): the conversation's
    /// last message, or a targeted message for the client that came after it.
    pub last: Option<LastMessage>,
    /// One of the unread messages mentions the client (by id or `all`).
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

/// A clock that moves only when told to: the engine's tests use it so that timestamps,
/// expiry and signature windows do not depend on how fast the machine runs.
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    /// A clock standing at `ms`.
    pub fn at(ms: i64) -> ManualClock {
        ManualClock(std::sync::atomic::AtomicI64::new(ms))
    }

    /// Moves the clock to `ms` (it may go back: a test can model a clock step).
    pub fn set(&self, ms: i64) {
        self.0.store(ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

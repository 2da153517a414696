//! The protocol-neutral command set. Codecs decode frames into [`Inbound`] and encode
//! [`Reply`] and [`Push`] values; the engine only ever sees these types.

use crate::error::ProtocolError;
use serde_json::{Map, Value};

/// A signature triple `(t, n, s)` as sent by the client (protocol §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The timestamp exactly as its decimal text (seconds or milliseconds).
    pub timestamp: String,
    /// The nonce.
    pub nonce: String,
    /// Lower-case hex HMAC-SHA1.
    pub signature: String,
}

/// One decoded client frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    /// The request serial `i`, echoed in the reply.
    pub serial: Option<i32>,
    /// The client id the frame names (`peerId`), if any.
    pub peer_id: Option<String>,
    /// What the client asks for.
    pub request: Request,
}

/// Everything a client can ask of the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// A heartbeat; answered with a heartbeat.
    Heartbeat,
    /// `session open`: log a client id in on this connection.
    SessionOpen(SessionOpen),
    /// `session close`: log out.
    SessionClose,
    /// `session refresh`: a fresh session token.
    SessionRefresh,
    /// `session query`: which of these client ids are online (presence).
    SessionQuery {
        /// Ids to look up.
        peer_ids: Vec<String>,
    },
    /// `conv start`: create a conversation (or find a unique one).
    ConvStart(ConvStart),
    /// `conv add`: add members (or join, when the list is the caller).
    ConvAdd(MembersChange),
    /// `conv remove`: remove members (or leave, when the list is the caller).
    ConvRemove(MembersChange),
    /// `conv query`: find conversations.
    ConvQuery(ConvQuery),
    /// `conv count`: how many members.
    ConvCount {
        /// Conversation id.
        cid: String,
    },
    /// `conv update`: change attributes.
    ConvUpdate {
        /// Conversation id.
        cid: String,
        /// Keys to set; dotted keys set nested values.
        attr: Map<String, Value>,
    },
    /// `direct`: send a message.
    Direct(DirectRequest),
    /// `ack` from a recipient: messages received.
    Ack(AckRequest),
    /// `logs`: history.
    Logs(LogsQuery),
    /// `conv mute` / `conv unmute`: (no) offline notifications for the caller.
    ConvMute {
        /// Conversation id.
        cid: String,
        /// Mute (`true`) or unmute.
        muted: bool,
    },
    /// `conv max_read`: how far the other members have received and read.
    ConvMaxRead {
        /// Conversation id.
        cid: String,
        /// Each member's positions too (`queryAllMembers`).
        all_members: bool,
    },
    /// `conv member_info_update`: give a member a role.
    MemberRole {
        /// Conversation id.
        cid: String,
        /// The member.
        member: String,
        /// `Manager` or `Member`.
        role: String,
    },
    /// `conv add_shutup` / `remove_shutup`, `blacklist block` / `unblock`.
    Restrict(Restriction),
    /// `conv query_shutup`, `blacklist query`: one page of restricted clients.
    RestrictedQuery {
        /// Conversation id.
        cid: String,
        /// Shut-up members or blocked clients.
        kind: RestrictionKind,
        /// Page size.
        limit: Option<i64>,
        /// Where the previous page ended.
        next: Option<String>,
    },
    /// `patch modify`: edit or recall messages the caller sent.
    Patch {
        /// The changes.
        items: Vec<PatchRequest>,
    },
    /// `read`: the client has read these conversations (3.x+ protocol).
    Read {
        /// How far each conversation was read.
        convs: Vec<ReadMark>,
    },
}

/// How far a client has read one conversation (`read`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadMark {
    /// Conversation id.
    pub cid: String,
    /// Timestamp of the last message read; `None`: everything up to the newest.
    pub ts: Option<i64>,
}

/// Login parameters.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SessionOpen {
    /// The app.
    pub app_id: String,
    /// User agent string, for logs.
    pub ua: Option<String>,
    /// Login signature, if sent.
    pub signature: Option<Signature>,
    /// An automatic re-login after a reconnect (`r`), not a user's login.
    pub reconnect: bool,
    /// The session token from an earlier `opened` (`st`), which replaces a signature.
    pub session_token: Option<String>,
    /// Device tag for single-device login (`tag`).
    pub tag: Option<String>,
    /// The newest edit/recall the client has seen (ms); newer ones are sent at login.
    pub last_patch_time: Option<i64>,
}

/// Conversation creation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConvStart {
    /// Members as the client listed them (the creator may be absent).
    pub members: Vec<String>,
    /// Attributes to store (`name`, `attr`, custom keys).
    pub attr: Map<String, Value>,
    /// A chat room (`tr`).
    pub transient: bool,
    /// Reuse a conversation with the same member set.
    pub unique: bool,
    /// Conversation signature, if sent.
    pub signature: Option<Signature>,
    /// A temporary conversation living this many seconds.
    pub temporary_ttl: Option<i64>,
}

/// Adding or removing members.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MembersChange {
    /// Conversation id.
    pub cid: String,
    /// Client ids to add or remove.
    pub members: Vec<String>,
    /// Conversation signature, if sent.
    pub signature: Option<Signature>,
}

/// A conversation query.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConvQuery {
    /// Mongo-style condition; `None` or `{}` means "conversations I am in".
    pub where_: Option<Value>,
    /// Comma-separated sort keys, `-` for descending.
    pub sort: Option<String>,
    /// Page size.
    pub limit: Option<i64>,
    /// Results to skip.
    pub skip: Option<i64>,
    /// Bit 0: compact (no members); bit 1: with last messages.
    pub flag: i64,
    /// Look these temporary conversations up instead of evaluating `where`.
    pub temporary_ids: Vec<String>,
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DirectRequest {
    /// Conversation id.
    pub cid: String,
    /// The body, opaque to the server.
    pub msg: String,
    /// The sender wants delivery receipts.
    pub receipt: bool,
    /// Deliver only to online members; do not store.
    pub transient: bool,
    /// The client's own id for this message (`dt`): a re-sent message with the same
    /// token is acknowledged again, not stored twice.
    pub dedupe: Option<String>,
    /// `msg` is the base64 of a binary body.
    pub binary: bool,
    /// Who the message mentions.
    pub mentions: Mentions,
    /// A will: hold it and deliver it only if the sender's session ends abnormally.
    pub will: bool,
}

/// Who a message mentions (`mentionAll`, `mentionPids`).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Mentions {
    /// Everyone in the conversation.
    pub all: bool,
    /// These client ids.
    pub pids: Vec<String>,
}

impl Mentions {
    /// Whether `client` is mentioned.
    pub fn includes(&self, client: &str) -> bool {
        self.all || self.pids.iter().any(|p| p == client)
    }
}

/// Which list a restriction puts clients on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestrictionKind {
    /// Members who may not send (`shutup`).
    ShutUp,
    /// Clients who may not be or become members (`blacklist`).
    Block,
}

/// A restriction operation: imposing or lifting one kind of restriction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestrictionOp {
    /// `conv add_shutup`: members may no longer send.
    ShutUp,
    /// `conv remove_shutup`: members may send again.
    Unshut,
    /// `blacklist block`: clients are removed and may not join again.
    Block,
    /// `blacklist unblock`: clients may join again.
    Unblock,
}

impl RestrictionOp {
    /// The list the operation changes.
    pub fn kind(self) -> RestrictionKind {
        match self {
            RestrictionOp::ShutUp | RestrictionOp::Unshut => RestrictionKind::ShutUp,
            RestrictionOp::Block | RestrictionOp::Unblock => RestrictionKind::Block,
        }
    }

    /// Whether the operation imposes the restriction (rather than lifting it).
    pub fn imposes(self) -> bool {
        matches!(self, RestrictionOp::ShutUp | RestrictionOp::Block)
    }
}

/// Shutting members up or blocking clients, or undoing it.
#[derive(Debug, Clone, PartialEq)]
pub struct Restriction {
    /// Conversation id.
    pub cid: String,
    /// The clients.
    pub members: Vec<String>,
    /// What to do to them.
    pub op: RestrictionOp,
    /// Blacklist signature, if sent.
    pub signature: Option<Signature>,
}

/// One edit or recall.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PatchRequest {
    /// Conversation id.
    pub cid: String,
    /// Message id.
    pub mid: String,
    /// Recall (replace the body with the recall placeholder).
    pub recall: bool,
    /// The new body of an edit.
    pub data: Option<String>,
}

/// A recipient's acknowledgement.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AckRequest {
    /// Conversation id.
    pub cid: Option<String>,
    /// One message id (v2 JSON).
    pub mid: Option<String>,
    /// Start of an inclusive timestamp range (4.x).
    pub from_ts: Option<i64>,
    /// End of an inclusive timestamp range (4.x).
    pub to_ts: Option<i64>,
}

impl AckRequest {
    /// The same acknowledgement, borrowed.
    pub fn as_ref(&self) -> AckRef<'_> {
        AckRef {
            cid: self.cid.as_deref(),
            mid: self.mid.as_deref(),
            from_ts: self.from_ts,
            to_ts: self.to_ts,
        }
    }
}

/// A recipient's acknowledgement read in place from its frame: [`AckRequest`] without
/// a copy of its ids (a busy room's members send one per message they receive).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AckRef<'a> {
    /// Conversation id.
    pub cid: Option<&'a str>,
    /// One message id (v2 JSON).
    pub mid: Option<&'a str>,
    /// Start of an inclusive timestamp range (4.x).
    pub from_ts: Option<i64>,
    /// End of an inclusive timestamp range (4.x).
    pub to_ts: Option<i64>,
}

impl AckRef<'_> {
    /// The owned acknowledgement.
    pub fn to_request(&self) -> AckRequest {
        AckRequest {
            cid: self.cid.map(str::to_owned),
            mid: self.mid.map(str::to_owned),
            from_ts: self.from_ts,
            to_ts: self.to_ts,
        }
    }
}

/// An `ack` frame read in place: [`Inbound`] for the one request decoded without
/// copies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InboundAck<'a> {
    /// The request serial `i`.
    pub serial: Option<i32>,
    /// The client id the frame names (`peerId`), if any.
    pub peer_id: Option<&'a str>,
    /// The acknowledgement.
    pub ack: AckRef<'a>,
}

impl InboundAck<'_> {
    /// The owned request.
    pub fn to_inbound(&self) -> Inbound {
        Inbound {
            serial: self.serial,
            peer_id: self.peer_id.map(str::to_owned),
            request: Request::Ack(self.ack.to_request()),
        }
    }
}

/// Direction of a history walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// From the start anchor towards older messages (the default).
    #[default]
    Older,
    /// From the start anchor towards newer messages.
    Newer,
}

/// A history query (protocol §6.14).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogsQuery {
    /// Conversation id.
    pub cid: String,
    /// Start anchor timestamp.
    pub t: Option<i64>,
    /// Start anchor message id.
    pub mid: Option<String>,
    /// End anchor timestamp.
    pub tt: Option<i64>,
    /// End anchor message id.
    pub tmid: Option<String>,
    /// Page size; `Some(0)` means an empty page.
    pub limit: Option<i64>,
    /// Walking direction.
    pub direction: Direction,
    /// The start anchor itself is included.
    pub t_included: bool,
    /// The end anchor itself is included.
    pub tt_included: bool,
    /// Only messages whose JSON body has this `_lctype`.
    pub lctype: Option<i64>,
}

/// A reply to one request (carries the request's serial when encoded).
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Heartbeat answer.
    Heartbeat,
    /// Login succeeded.
    SessionOpened {
        /// The client id (server-assigned for anonymous logins).
        peer_id: String,
        /// A token for re-opening the session without a signature.
        session_token: Option<SessionToken>,
        /// Server time (ms).
        server_ts: i64,
    },
    /// Logout done.
    SessionClosed,
    /// A fresh session token.
    SessionRefreshed {
        /// The token.
        token: SessionToken,
    },
    /// Presence answer.
    SessionQueryResult {
        /// The subset of asked ids that are online.
        online: Vec<String>,
    },
    /// Conversation created or found.
    ConvStarted {
        /// Conversation id.
        cid: String,
        /// Creation time (ms).
        created_at: i64,
        /// Remaining lifetime of a temporary conversation, in seconds.
        temporary_ttl: Option<i64>,
    },
    /// A role changed.
    MemberRoleUpdated,
    /// Restriction changed: who was affected, who not.
    Restricted {
        /// What was asked.
        op: RestrictionOp,
        /// Outcome.
        result: MembersResult,
    },
    /// One page of restricted clients.
    RestrictedPage {
        /// Shut-up members or blocked clients.
        kind: RestrictionKind,
        /// The clients.
        members: Vec<String>,
        /// Cursor of the next page, when there is one.
        next: Option<String>,
    },
    /// Edits or recalls done.
    Patched {
        /// Server time of the change (ms).
        patched_at: i64,
    },
    /// Receipt positions of the other members.
    ConvMaxRead {
        /// Latest delivery (ms) among the other members.
        max_ack: i64,
        /// Latest read (ms) among the other members.
        max_read: i64,
        /// Each member's positions, when every member was asked for.
        members: Vec<MemberReceipt>,
    },
    /// Members added.
    ConvAdded(MembersResult),
    /// Members removed.
    ConvRemoved(MembersResult),
    /// Query results: LeanStorage-style conversation records.
    ConvResults {
        /// The records.
        results: Vec<Value>,
    },
    /// Member count.
    ConvCount {
        /// The count.
        count: usize,
    },
    /// Attributes updated.
    ConvUpdated {
        /// Update time (ms).
        updated_at: i64,
    },
    /// A message was stored.
    MessageAck {
        /// Server message id.
        uid: String,
        /// Server timestamp (ms).
        t: i64,
    },
    /// History page, oldest first.
    Logs {
        /// The messages.
        logs: Vec<LogItem>,
    },
    /// The request failed.
    Error(ProtocolError),
}

/// A session token (`st`) and its lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionToken {
    /// The token the client presents to re-open its session.
    pub token: String,
    /// Its lifetime in seconds (`stTtl`).
    pub ttl_secs: i32,
}

/// How far one member has received and read a conversation (`maxReadTuples`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberReceipt {
    /// The member.
    pub client: String,
    /// Delivered up to (ms).
    pub max_ack: i64,
    /// Read up to (ms).
    pub max_read: i64,
}

/// Outcome of add/remove: who changed and who could not.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MembersResult {
    /// Ids actually added or removed.
    pub allowed: Vec<String>,
    /// Ids that failed, grouped by error.
    pub failed: Vec<MemberFailure>,
}

/// Members an add, remove or restriction failed for, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberFailure {
    /// Why.
    pub error: ProtocolError,
    /// The client ids.
    pub members: Vec<String>,
}

/// One history entry.
#[derive(Debug, Clone, PartialEq)]
pub struct LogItem {
    /// Sender.
    pub from: String,
    /// Body.
    pub data: String,
    /// Server timestamp (ms).
    pub timestamp: i64,
    /// Message id.
    pub msg_id: String,
    /// When the body was last edited or recalled (ms).
    pub patched_at: Option<i64>,
    /// `data` is the base64 of a binary body.
    pub binary: bool,
    /// Who the message mentions.
    pub mentions: Mentions,
}

/// A server-initiated frame.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Push {
    /// A message for a member.
    Direct(DirectPush),
    /// A delivery receipt for the sender.
    Receipt {
        /// Conversation id.
        cid: String,
        /// Message id.
        id: String,
        /// When it was delivered (ms).
        t: i64,
        /// Who received (or read) it.
        from: String,
        /// A read receipt rather than a delivery receipt.
        read: bool,
    },
    /// Messages were edited or recalled.
    Patch {
        /// The changed messages.
        items: Vec<PatchedMessage>,
        /// Server time of the change (ms), the client's catch-up point.
        patched_at: i64,
    },
    /// Unread counts (protocol version 3): after login, and when another device reads.
    Unread {
        /// One entry per conversation.
        convs: Vec<UnreadEntry>,
        /// Server time (ms) the client echoes as `lastUnreadNotifTime`.
        notif_time: i64,
    },
    /// A membership or attribute change.
    Conv(ConvPush),
    /// The session was ended by the server (the framing names the session).
    SessionClosed {
        /// Why.
        error: ProtocolError,
    },
}

/// A message after an edit or recall.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PatchedMessage {
    /// Conversation id.
    pub cid: String,
    /// Message id.
    pub mid: String,
    /// The message's timestamp (ms).
    pub timestamp: i64,
    /// Recalled rather than edited.
    pub recall: bool,
    /// The new body.
    pub data: String,
    /// The body is base64 of binary content (`binaryMsg` in protobuf, `bin` in JSON).
    #[serde(default)]
    pub binary: bool,
    /// The original sender.
    pub from: String,
    /// When it was changed (ms).
    pub patched_at: i64,
}

/// Unread state of one conversation for one client.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UnreadEntry {
    /// Conversation id.
    pub cid: String,
    /// Messages from others after the client's read position.
    pub unread: i64,
    /// The conversation's last message.
    pub last: Option<LastMessage>,
    /// An unread message mentions the client.
    pub mentioned: bool,
}

/// A conversation's newest message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// A message delivered to a member.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct DirectPush {
    /// Conversation id.
    pub cid: String,
    /// Server message id.
    pub id: String,
    /// Server timestamp (ms).
    pub timestamp: i64,
    /// Sender.
    pub from: String,
    /// Body.
    pub msg: String,
    /// Sent as transient.
    pub transient: bool,
    /// Replayed from the offline backlog.
    pub offline: bool,
    /// `msg` is the base64 of a binary body.
    pub binary: bool,
    /// Who the message mentions.
    pub mentions: Mentions,
    /// When the body was last edited or recalled (ms).
    pub patched_at: Option<i64>,
}

/// Which conversation event a [`ConvPush`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ConvEvent {
    /// The recipient was added.
    Joined,
    /// The recipient was removed.
    Left,
    /// Others were added.
    MembersJoined,
    /// Others were removed.
    MembersLeft,
    /// Attributes changed.
    Updated,
    /// A member's role changed (`ConvPush::role`).
    MemberInfoChanged,
    /// The recipient was shut up.
    ShutUp,
    /// The recipient may speak again.
    Unshutup,
    /// Members were shut up.
    MembersShutUp,
    /// Members may speak again.
    MembersUnshutup,
    /// The recipient was blocked.
    Blocked,
    /// The recipient was unblocked.
    Unblocked,
    /// Clients were blocked.
    MembersBlocked,
    /// Clients were unblocked.
    MembersUnblocked,
}

impl ConvEvent {
    /// Whether the event lists the members it is about (`m`).
    pub fn lists_members(self) -> bool {
        matches!(
            self,
            ConvEvent::MembersJoined
                | ConvEvent::MembersLeft
                | ConvEvent::MembersShutUp
                | ConvEvent::MembersUnshutup
                | ConvEvent::MembersBlocked
                | ConvEvent::MembersUnblocked
        )
    }
}

/// A conversation event. The recipient is not part of it: the framing names the
/// session it goes to, so an event with the same content for several members is one
/// push.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConvPush {
    /// The event.
    pub event: ConvEvent,
    /// Conversation id.
    pub cid: String,
    /// Who did it.
    pub init_by: String,
    /// The members added or removed (for `Members*`).
    pub members: Vec<String>,
    /// The attributes as requested (for `Updated`).
    pub attr: Option<Map<String, Value>>,
    /// The member and its new role, for `MemberInfoChanged`.
    pub role: Option<RoleChange>,
    /// Event time (ms).
    pub udate: i64,
}

/// A member's new role (`info` of `member-info-changed`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoleChange {
    /// The member.
    pub member: String,
    /// `Manager` or `Member`.
    pub role: String,
}

/// Estimated encoded size of one field besides its text: key, quotes and separators in
/// JSON, tag and length in protobuf.
const FIELD_BYTES: usize = 16;
/// Estimated encoded size of a frame besides its fields (`cmd`, `op`, serial, framing).
const FRAME_BYTES: usize = 64;

fn text_bytes(s: &str) -> usize {
    s.len() + FIELD_BYTES
}

fn texts_bytes(items: &[String]) -> usize {
    items.iter().map(|s| text_bytes(s)).sum::<usize>() + FIELD_BYTES
}

fn error_bytes(e: &ProtocolError) -> usize {
    text_bytes(&e.detail) + text_bytes(e.code.reason()) + FIELD_BYTES
}

fn members_result_bytes(r: &MembersResult) -> usize {
    texts_bytes(&r.allowed)
        + r.failed.iter().map(|f| error_bytes(&f.error) + texts_bytes(&f.members)).sum::<usize>()
}

/// Estimated encoded size of a JSON value, without encoding it.
fn value_bytes(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => FIELD_BYTES,
        Value::String(s) => text_bytes(s),
        Value::Array(items) => items.iter().map(value_bytes).sum::<usize>() + FIELD_BYTES,
        Value::Object(map) => map.iter().map(|(k, v)| k.len() + value_bytes(v)).sum::<usize>() + FIELD_BYTES,
    }
}

fn attr_bytes(attr: &Map<String, Value>) -> usize {
    attr.iter().map(|(k, v)| k.len() + value_bytes(v)).sum::<usize>() + FIELD_BYTES
}

impl Mentions {
    fn approx_bytes(&self) -> usize {
        FIELD_BYTES + texts_bytes(&self.pids)
    }
}

impl LogItem {
    /// Estimated encoded size of this history entry.
    pub fn approx_bytes(&self) -> usize {
        text_bytes(&self.from)
            + text_bytes(&self.data)
            + text_bytes(&self.msg_id)
            + 4 * FIELD_BYTES
            + self.mentions.approx_bytes()
    }
}

impl Reply {
    /// Estimated size of the encoded frame, computed from its text lengths without
    /// encoding it (the outbound queue's byte budget counts replies by it). Within a
    /// small factor of any codec's encoding; a history page is the sum of its messages.
    pub fn approx_bytes(&self) -> usize {
        FRAME_BYTES
            + match self {
                Reply::Heartbeat
                | Reply::SessionClosed
                | Reply::MemberRoleUpdated
                | Reply::Patched { .. }
                | Reply::ConvCount { .. }
                | Reply::ConvUpdated { .. } => 0,
                Reply::SessionOpened { peer_id, session_token, .. } => {
                    text_bytes(peer_id)
                        + session_token.as_ref().map_or(0, |t| text_bytes(&t.token))
                        + FIELD_BYTES
                }
                Reply::SessionRefreshed { token } => text_bytes(&token.token) + FIELD_BYTES,
                Reply::SessionQueryResult { online } => texts_bytes(online),
                Reply::ConvStarted { cid, .. } => text_bytes(cid) + 2 * FIELD_BYTES,
                Reply::Restricted { result, .. } => members_result_bytes(result),
                Reply::RestrictedPage { members, next, .. } => {
                    texts_bytes(members) + next.as_deref().map_or(0, text_bytes)
                }
                Reply::ConvMaxRead { members, .. } => {
                    2 * FIELD_BYTES
                        + members.iter().map(|m| text_bytes(&m.client) + 2 * FIELD_BYTES).sum::<usize>()
                }
                Reply::ConvAdded(result) | Reply::ConvRemoved(result) => members_result_bytes(result),
                Reply::ConvResults { results } => {
                    results.iter().map(value_bytes).sum::<usize>() + FIELD_BYTES
                }
                Reply::MessageAck { uid, .. } => text_bytes(uid) + FIELD_BYTES,
                Reply::Logs { logs } => logs.iter().map(LogItem::approx_bytes).sum::<usize>() + FIELD_BYTES,
                Reply::Error(e) => error_bytes(e),
            }
    }
}

impl Push {
    /// Estimated size of the encoded frame for one recipient, computed from its text
    /// lengths without encoding it (see [`Reply::approx_bytes`]).
    pub fn approx_bytes(&self) -> usize {
        FRAME_BYTES
            + match self {
                Push::Direct(d) => {
                    text_bytes(&d.cid)
                        + text_bytes(&d.id)
                        + text_bytes(&d.from)
                        + text_bytes(&d.msg)
                        + 5 * FIELD_BYTES
                        + d.mentions.approx_bytes()
                }
                Push::Receipt { cid, id, from, .. } => {
                    text_bytes(cid) + text_bytes(id) + text_bytes(from) + 2 * FIELD_BYTES
                }
                Push::Patch { items, .. } => {
                    FIELD_BYTES
                        + items
                            .iter()
                            .map(|p| {
                                text_bytes(&p.cid)
                                    + text_bytes(&p.mid)
                                    + text_bytes(&p.data)
                                    + text_bytes(&p.from)
                                    + 3 * FIELD_BYTES
                            })
                            .sum::<usize>()
                }
                Push::Unread { convs, .. } => {
                    FIELD_BYTES
                        + convs
                            .iter()
                            .map(|c| {
                                text_bytes(&c.cid)
                                    + 2 * FIELD_BYTES
                                    + c.last.as_ref().map_or(0, |l| {
                                        text_bytes(&l.id)
                                            + text_bytes(&l.from)
                                            + text_bytes(&l.data)
                                            + FIELD_BYTES
                                    })
                            })
                            .sum::<usize>()
                }
                // The recipient's field, which the framing adds: one more field.
                Push::Conv(c) => {
                    FIELD_BYTES
                        + text_bytes(&c.cid)
                        + text_bytes(&c.init_by)
                        + texts_bytes(&c.members)
                        + c.attr.as_ref().map_or(0, attr_bytes)
                        + c.role.as_ref().map_or(0, |r| text_bytes(&r.member) + text_bytes(&r.role))
                        + FIELD_BYTES
                }
                Push::SessionClosed { error } => FIELD_BYTES + error_bytes(error),
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(body: &str) -> LogItem {
        LogItem {
            from: "alice".into(),
            data: body.into(),
            timestamp: 1,
            msg_id: "0123456789abcdef".into(),
            patched_at: None,
            binary: false,
            mentions: Mentions::default(),
        }
    }

    #[test]
    fn a_history_page_counts_every_message_body() {
        let body = "z".repeat(5000);
        let page = Reply::Logs { logs: (0..40).map(|_| log(&body)).collect() };
        let bytes = page.approx_bytes();
        assert!(bytes >= 40 * 5000, "{bytes}");
        assert!(bytes < 40 * 5000 + 40 * 512, "{bytes}");
        // Small frames count a fixed overhead, never zero.
        assert!(Reply::Heartbeat.approx_bytes() > 0);
        assert!(Reply::Logs { logs: Vec::new() }.approx_bytes() < 256);
    }

    #[test]
    fn a_push_counts_its_body() {
        let push = Push::Direct(DirectPush {
            cid: "c".into(),
            id: "m".into(),
            msg: "z".repeat(4000),
            ..DirectPush::default()
        });
        let bytes = push.approx_bytes();
        assert!((4000..4000 + 512).contains(&bytes), "{bytes}");
    }
}

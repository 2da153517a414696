//! Every limit Confab enforces, with LeanCloud's documented values as defaults
//! (protocol §6.24). Each is configurable per app in `confab.toml`.

use serde::{Deserialize, Serialize};

/// Limits applied to one app's clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest WebSocket frame (message) accepted, in bytes; larger closes with 4109.
    pub frame_bytes: usize,
    /// Largest message body (`msg`), in bytes of UTF-8; larger is refused with 4109.
    pub message_bytes: usize,
    /// Most members of a normal conversation; more is refused with 4304.
    pub conversation_members: usize,
    /// Most members of a temporary conversation.
    pub temporary_members: usize,
    /// Longest lifetime of a temporary conversation, in seconds.
    pub temporary_ttl_max_secs: i64,
    /// Most client ids in one presence query (`ping`); extra ids are ignored.
    pub ping_ids: usize,
    /// Longest client id, in characters; longer closes with 4103.
    pub client_id_chars: usize,
    /// Default page size of a conversation query when the client sends none.
    pub query_default_limit: usize,
    /// Largest page of a conversation query (4.x looks up 999 ids at once).
    pub query_max_limit: usize,
    /// Most conversations one query may examine before failing with 4310.
    pub query_scan_max: usize,
    /// Default page size of a history query.
    pub history_default_limit: usize,
    /// Largest page of a history query.
    pub history_max_limit: usize,
    /// Messages per page when replaying an offline backlog.
    pub offline_page: usize,
    /// Unacknowledged messages one session may hold per conversation before the
    /// backlog replay waits for acks.
    pub offline_window: usize,
    /// Estimated bytes of frames queued for one connection (replies and pushes the
    /// client has not read yet). A push that would take the queue over it closes the
    /// connection with 1013 as a slow consumer (it reconnects and resyncs by its
    /// cursors; nothing is lost). At or over it, the connection's requests are not read
    /// (replies never close it: a client that pipelines requests without reading the
    /// answers is slowed down by TCP instead); waiting longer than the read timeout for
    /// the queue to drain closes it with 1013. Messages a client has sent that await
    /// their commit count towards it too. A connection holds at most about this much
    /// plus one reply (a history page of up to `history_max_limit` messages).
    pub outbound_queue_bytes: usize,
    /// Sends per client per minute; 0 = unlimited (the default).
    pub sends_per_minute: u32,
    /// History queries per client per minute; 0 = unlimited (the default).
    pub history_per_minute: u32,
    /// Other conversation operations per client per minute; 0 = unlimited (the default).
    pub ops_per_minute: u32,
    /// REST message calls per app per minute, counted on each node: sends, edits and
    /// recalls in conversations, chat rooms and service conversations (targeted
    /// messages), and 1.1's `messages`, `patch/message` and `messages/logs` edits.
    /// Over it: HTTP 429. 0 = unlimited (the default; LeanCloud's was 1800).
    pub rest_messages_per_minute: u32,
    /// REST broadcasts to a service conversation's subscribers per app per minute, on
    /// each node (`…/service-conversations/{id}/broadcasts`, 1.1 `broadcast/subscriber`).
    /// Over it: HTTP 429. 0 = unlimited (the default; LeanCloud's was 30).
    pub rest_subscriber_broadcasts_per_minute: u32,
    /// REST app-wide broadcasts per app per minute, on each node (`/1.2/rtm/broadcasts`,
    /// 1.1 `broadcast`). Over it: HTTP 429. 0 = unlimited (the default; LeanCloud's was 10).
    pub rest_app_broadcasts_per_minute: u32,
    /// Deepest nesting of a JSON value in a request (conversation attributes, a query's
    /// `where`), and of a stored attribute document; at most 100. Deeper is refused
    /// with 4114.
    pub json_depth: usize,
    /// Most segments of a dotted attribute key (`attr.a.b` has 3); more is refused
    /// with 4114.
    pub attr_key_depth: usize,
    /// Largest attribute document of a conversation, in bytes of JSON; an update that
    /// would make it larger is refused with 4114 and changes nothing.
    pub attr_bytes: usize,
    /// Most keys in a conversation's attribute document, counted at every level.
    pub attr_keys: usize,
    /// Longest re-send token (`dt`) of a message, in bytes; longer is refused with 4114.
    pub dedupe_token_bytes: usize,
    /// Largest `where` of a conversation query, in bytes of JSON.
    pub where_bytes: usize,
    /// Most `$regex` conditions in one conversation query.
    pub query_regexes: usize,
    /// Longest `$regex` pattern of a conversation query, in characters.
    pub regex_chars: usize,
    /// Evaluation steps one conversation query may take: about one per condition per
    /// conversation examined, more for long values. Past it the query fails with 4310.
    /// Counted in steps rather than time, so the outcome does not depend on load.
    pub query_budget: u64,
    /// Most sessions (client ids) open on one connection at once; one more is refused
    /// with 4114.
    pub sessions_per_connection: usize,
    /// Most clients on the blacklist (blocked clients) of a normal conversation. A
    /// block that would take the list over it is refused whole with 4543.
    pub blacklist_max: usize,
    /// Most clients on the blacklist of a chat room or a service conversation.
    pub room_blacklist_max: usize,
    /// Most members of a normal conversation shut up (permanently silenced), and,
    /// apart from them, most clients temporarily silenced in it; past it: 4543.
    pub silenced_max: usize,
    /// The same for a chat room (or a service conversation's temporary silences).
    pub room_silenced_max: usize,
    /// Most managers of a chat room (a normal conversation's managers are members,
    /// bounded by `conversation_members`); past it: 4543.
    pub room_managers_max: usize,
    /// Most conversations on one client's own blacklist; past it: 4543.
    pub client_blacklist_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            frame_bytes: 64 * 1024,
            message_bytes: 5 * 1024,
            conversation_members: 500,
            temporary_members: 10,
            temporary_ttl_max_secs: 30 * 86_400,
            ping_ids: 20,
            client_id_chars: 64,
            query_default_limit: 10,
            query_max_limit: 1000,
            query_scan_max: 10_000,
            history_default_limit: 20,
            history_max_limit: 1000,
            offline_page: 100,
            offline_window: 500,
            outbound_queue_bytes: 4 * 1024 * 1024,
            sends_per_minute: 0,
            history_per_minute: 0,
            ops_per_minute: 0,
            rest_messages_per_minute: 0,
            rest_subscriber_broadcasts_per_minute: 0,
            rest_app_broadcasts_per_minute: 0,
            json_depth: 32,
            attr_key_depth: 8,
            attr_bytes: 64 * 1024,
            attr_keys: 1000,
            dedupe_token_bytes: 128,
            where_bytes: 48 * 1024,
            query_regexes: 16,
            regex_chars: 256,
            query_budget: 2_000_000,
            sessions_per_connection: 64,
            blacklist_max: 500,
            room_blacklist_max: 10_000,
            silenced_max: 500,
            room_silenced_max: 10_000,
            room_managers_max: 500,
            client_blacklist_max: 1000,
        }
    }
}

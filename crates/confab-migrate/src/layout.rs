//! The export directory, as `confab pull` writes it and `confab import` reads it (and
//! as an operator can assemble it by hand from LeanCloud's console export):
//!
//! ```text
//! DIR/_Conversation.jsonl              one _Conversation row per line
//! DIR/_ConversationMemberInfo.jsonl    one member role per line
//! DIR/_SysMessage.jsonl                subscribers' messages to service conversations
//! DIR/messages/<conversation id>.json  that conversation's history records (a JSON
//!                                      array, as the history endpoint returns them,
//!                                      any order; chat rooms too)
//! DIR/subscribers/<conversation id>.json  a service conversation's subscribers
//! DIR/files/<host>/<path>              message files (`pull --files`)
//! ```

/// `_Conversation` rows.
pub const CONVERSATIONS: &str = "_Conversation.jsonl";
/// `_ConversationMemberInfo` rows.
pub const MEMBER_INFOS: &str = "_ConversationMemberInfo.jsonl";
/// `_SysMessage` rows.
pub const SYS_MESSAGES: &str = "_SysMessage.jsonl";
/// Histories, one file per conversation.
pub const MESSAGES_DIR: &str = "messages";
/// Subscribers, one file per service conversation.
pub const SUBSCRIBERS_DIR: &str = "subscribers";
/// Downloaded message files.
pub const FILES_DIR: &str = "files";

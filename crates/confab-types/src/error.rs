//! The one error table: every LeanCloud error code Confab can emit, its number, its
//! symbolic reason (what the official SDKs show and match on) and how it travels.
//!
//! Every layer returns typed errors that carry an [`ErrorCode`]; only the codecs turn an
//! [`ErrorCode`] into a wire shape (an error frame, an ack with a code, or a close code).

/// How an error reaches the client. The table is the one authority: the gateway
/// answers or closes by [`ErrorCode::disposition`] for every error a request earns, and
/// the engine closes a connection only with codes whose disposition is `Close`. The one
/// exception is a connection whose transport failed (an oversized or malformed
/// WebSocket frame): nothing more can be read from it, so it closes with its error's
/// code whatever the table says for that code as a request error (4109).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Answer the failed request with an error frame and keep the connection.
    Reply,
    /// Close the WebSocket with the code as the close status.
    Close,
}

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $name:ident = $num:literal, $reason:literal, $disp:ident; )*) => {
        /// A LeanCloud-compatible error code (protocol §7).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[$doc])* $name, )*
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            /// The numeric code on the wire.
            pub const fn number(self) -> u16 {
                match self { $( ErrorCode::$name => $num, )* }
            }

            /// The symbolic reason, e.g. `SIGNATURE_FAILED`.
            pub const fn reason(self) -> &'static str {
                match self { $( ErrorCode::$name => $reason, )* }
            }

            /// Whether the error closes the connection or answers the request.
            pub const fn disposition(self) -> Disposition {
                match self { $( ErrorCode::$name => Disposition::$disp, )* }
            }

            /// Looks a code up by its number.
            pub fn from_number(n: u16) -> Option<ErrorCode> {
                ErrorCode::ALL.iter().copied().find(|c| c.number() == n)
            }
        }
    };
}

error_codes! {
    /// App unknown or disabled. Fatal for 4.x clients (no reconnect).
    AppNotAvailable = 4100, "APP_NOT_AVAILABLE", Close;
    /// Login signature mismatch, missing, expired or replayed.
    SignatureFailed = 4102, "SIGNATURE_FAILED", Reply;
    /// Malformed client id (empty or longer than the limit). Fatal.
    InvalidLogin = 4103, "INVALID_LOGIN", Close;
    /// A command that needs an open session arrived before one was opened.
    SessionRequired = 4105, "SESSION_REQUIRED", Reply;
    /// Nothing was received from the client for too long.
    ReadTimeout = 4107, "READ_TIMEOUT", Close;
    /// No session was opened in time after connecting.
    LoginTimeout = 4108, "LOGIN_TIMEOUT", Close;
    /// A frame or message body over its limit (an oversized WebSocket frame also
    /// closes the connection with this code).
    FrameTooLong = 4109, "FRAME_TOO_LONG", Reply;
    /// The page's Origin is not in the app's allow-list. Fatal.
    InvalidOrigin = 4110, "INVALID_ORIGIN", Close;
    /// Kicked by a login with the same tag, or a re-login refused.
    SessionConflict = 4111, "SESSION_CONFLICT", Reply;
    /// Unknown or expired session token.
    SessionTokenExpired = 4112, "SESSION_TOKEN_EXPIRED", Reply;
    /// A frame that cannot be decoded, or an unknown command.
    UnparseableRawMsg = 4114, "UNPARSEABLE_RAW_MSG", Reply;
    /// Kicked through the admin API.
    KickedByApp = 4115, "KICKED_BY_APP", Reply;
    /// The client sends messages faster than the app's rate limit.
    MessageSentQuotaExceeded = 4116, "MESSAGE_SENT_QUOTA_EXCEEDED", Reply;
    /// The server failed; the request may be retried.
    InternalError = 4200, "INTERNAL_ERROR", Reply;
    /// A conversation-operation signature mismatch.
    ConversationSignatureFailed = 4302, "CONVERSATION_SIGNATURE_FAILED", Reply;
    /// The conversation does not exist.
    ConversationNotFound = 4303, "CONVERSATION_NOT_FOUND", Reply;
    /// The member limit is reached.
    ConversationFull = 4304, "CONVERSATION_FULL", Reply;
    /// The app's `_conversationStart`, `_conversationAdd`, `_conversationRemove` or
    /// `_conversationUpdate` hook refused (its `code`/`detail` travel as `appCode`/`appMsg`).
    ConversationRejectedByApp = 4305, "CONVERSATION_REJECTED_BY_APP", Reply;
    /// An attribute update failed (bad attributes).
    ConversationUpdateFailed = 4306, "CONVERSATION_UPDATE_FAILED", Reply;
    /// The updater is not a member.
    ConversationUpdateRejected = 4309, "CONVERSATION_UPDATE_REJECTED", Reply;
    /// The query is invalid or too expensive.
    ConversationQueryFailed = 4310, "CONVERSATION_QUERY_FAILED", Reply;
    /// The caller may not send here (it was shut up).
    ConversationNotAllowed = 4308, "CONVERSATION_NOT_ALLOWED", Reply;
    /// History query failed.
    ConversationLogFailed = 4311, "CONVERSATION_LOG_FAILED", Reply;
    /// The history requester is not a member.
    ConversationLogRejected = 4312, "CONVERSATION_LOG_REJECTED", Reply;
    /// Only allowed on normal conversations.
    NormalConversationRequired = 4314, "NORMAL_CONVERSATION_REQUIRED", Reply;
    /// The client is blocked from the conversation.
    ConversationBlacklisted = 4315, "CONVERSATION_BLACKLISTED", Reply;
    /// The caller must be a member.
    ConversationMembershipRequired = 4317, "CONVERSATION_MEMBERSHIP_REQUIRED", Reply;
    /// The client uses the conversation API faster than the app's rate limit.
    ConversationApiQuotaExceeded = 4318, "CONVERSATION_API_QUOTA_EXCEEDED", Reply;
    /// Only the owner or a manager may do this. (LeanCloud's number for this reason is
    /// unknown; see docs/decisions.md.)
    ConversationOperationUnauthorized = 4325, "CONVERSATION_OPERATION_UNAUTHORIZED", Reply;
    /// The owner cannot leave or be removed. (LeanCloud's number for this reason is
    /// unknown; see docs/decisions.md.)
    ConversationNeedOwner = 4326, "CONVERSATION_NEED_OWNER", Reply;
    /// The temporary conversation expired.
    TemporaryConversationExpired = 4323, "TEMPORARY_CONVERSATION_EXPIRED", Reply;
    /// A blacklist, silence list or chat room's manager list (or a client's own
    /// blacklist of conversations) is full: the request would take it over its limit
    /// (`blacklist_max`, `silenced_max`, …) and changed nothing. LeanCloud documents
    /// 4543 for a full blacklist; the reason name is Confab's (see docs/decisions.md).
    ListFull = 4543, "LIST_FULL", Reply;
    /// The conversation is missing or the sender is not a member.
    InvalidMessagingTarget = 4401, "INVALID_MESSAGING_TARGET", Reply;
    /// The app's `_messageReceived` hook dropped the message (its `code`/`detail` travel
    /// as `appCode`/`appMsg`).
    MessageRejectedByApp = 4402, "MESSAGE_REJECTED_BY_APP", Reply;
    /// Only the sender may edit or recall a message.
    MessageOwnershipRequired = 4403, "MESSAGE_OWNERSHIP_REQUIRED", Reply;
    /// The message to edit or recall does not exist.
    MessageNotFound = 4404, "MESSAGE_NOT_FOUND", Reply;
    /// The app's `_messageUpdate` hook refused an edit or recall.
    MessageUpdateRejectedByApp = 4405, "MESSAGE_UPDATE_REJECTED_BY_APP", Reply;
    /// The client did not read its frames fast enough; it reconnects and resyncs.
    /// A standard WebSocket code (1013 "try again later"), so every SDK reconnects.
    SlowConsumer = 1013, "SLOW_CONSUMER", Close;
    /// The server is shutting down (a restart, a deploy): the client reconnects. A
    /// standard WebSocket code (1001 "going away"), so every SDK reconnects.
    ServerShutdown = 1001, "SERVER_SHUTDOWN", Close;
    /// A text frame whose payload is not valid UTF-8. A standard WebSocket code (1007
    /// "invalid frame payload data", RFC 6455 §7.4.1).
    InvalidFramePayload = 1007, "INVALID_FRAME_PAYLOAD", Close;
    /// A WebSocket protocol violation other than size or encoding (reserved bits, bad
    /// opcodes, unmasked client frames). A standard WebSocket code (1002 "protocol
    /// error", RFC 6455 §7.4.1).
    ProtocolViolation = 1002, "PROTOCOL_ERROR", Close;
}

/// Travels between nodes as its number.
impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.number())
    }
}

impl<'de> serde::Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ErrorCode, D::Error> {
        let n = u16::deserialize(d)?;
        ErrorCode::from_number(n).ok_or_else(|| serde::de::Error::custom(format!("unknown error code {n}")))
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.number(), self.reason())
    }
}

/// An error as it travels to a client: the code plus a human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{code}: {detail}")]
pub struct ProtocolError {
    /// The code from the table.
    pub code: ErrorCode,
    /// A human-readable explanation (never empty).
    pub detail: String,
    /// The app's own code, when its hook refused the request (`appCode` on the wire).
    pub app_code: Option<i32>,
    /// The app's own message, when its hook refused the request (`appMsg` on the wire).
    pub app_msg: Option<String>,
}

impl ProtocolError {
    /// Builds an error with a detail message.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        let detail = if detail.is_empty() { code.reason().to_owned() } else { detail };
        ProtocolError { code, detail, app_code: None, app_msg: None }
    }

    /// The same error carrying the app's own code and message (a hook's refusal).
    pub fn with_app(mut self, app_code: Option<i32>, app_msg: Option<String>) -> Self {
        self.app_code = app_code;
        self.app_msg = app_msg;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_reasons_are_unique() {
        let mut numbers: Vec<u16> = ErrorCode::ALL.iter().map(|c| c.number()).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), ErrorCode::ALL.len());
        let mut reasons: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.reason()).collect();
        reasons.sort_unstable();
        reasons.dedup();
        assert_eq!(reasons.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn exactly_these_codes_close_the_connection() {
        let closing = [
            ErrorCode::AppNotAvailable,
            ErrorCode::InvalidLogin,
            ErrorCode::ReadTimeout,
            ErrorCode::LoginTimeout,
            ErrorCode::InvalidOrigin,
            ErrorCode::SlowConsumer,
            ErrorCode::ServerShutdown,
            ErrorCode::InvalidFramePayload,
            ErrorCode::ProtocolViolation,
        ];
        for code in ErrorCode::ALL.iter().copied() {
            let expected = if closing.contains(&code) { Disposition::Close } else { Disposition::Reply };
            assert_eq!(code.disposition(), expected, "{code}");
        }
        // Request errors that keep the connection, among them the ones a client could
        // mistake for fatal: a kicked or displaced session ends, its connection stays.
        for code in [
            ErrorCode::FrameTooLong,
            ErrorCode::SessionConflict,
            ErrorCode::SessionTokenExpired,
            ErrorCode::KickedByApp,
            ErrorCode::SignatureFailed,
            ErrorCode::InternalError,
        ] {
            assert_eq!(code.disposition(), Disposition::Reply, "{code}");
        }
    }

    #[test]
    fn fatal_login_errors_close_the_socket() {
        for code in [ErrorCode::AppNotAvailable, ErrorCode::InvalidLogin, ErrorCode::InvalidOrigin] {
            assert_eq!(code.disposition(), Disposition::Close, "{code}");
        }
        assert_eq!(ErrorCode::from_number(4302), Some(ErrorCode::ConversationSignatureFailed));
        assert_eq!(ProtocolError::new(ErrorCode::InternalError, "").detail, "INTERNAL_ERROR");
    }
}

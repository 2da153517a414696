//! The domain engine of Confab: sessions, conversations, membership, delivery,
//! receipts and presence. It speaks the protocol-neutral commands of [`confab_types`],
//! does I/O only through its ports ([`ports::Store`], [`ports::Clock`]) and never touches
//! a socket: the gateway feeds it decoded requests and writes out what it queues.
//!
//! Module map:
//! - [`engine`]: the entry point, [`Engine`] and the per-connection [`Connection`], with
//!   one module per feature (delivery: ordered, durable sending, fan-out, acks and the
//!   offline backlog);
//! - [`conversation`]: cached conversation state and record shapes;
//! - [`session`]: per-session delivery state (cursors, in-flight messages);
//! - [`bounds`]: the limits every request is checked against before it acts;
//! - [`query`]: the conversation query language;
//! - [`signature`]: HMAC-SHA1 signatures; [`session_token`]: re-login tokens;
//! - [`outbound`]: the bounded per-connection queue and encode-once pushes;
//! - [`ports`]: the store and clock traits;
//! - [`metrics`]: the Prometheus counters and their exposition text.

pub mod app;
pub mod bounds;
pub mod conversation;
pub mod engine;
pub mod ids;
pub mod metrics;
pub mod outbound;
pub mod ports;
pub mod query;
pub mod rate;
pub mod session;
pub mod session_token;
pub mod sharded;
pub mod signature;

pub use app::{AppConfig, HookSettings, SignaturePolicy};
pub use engine::{Connection, Engine, SignRefusal};
pub use outbound::{ConnHandle, Next, Outbound, OutboundReceiver, SharedPush};

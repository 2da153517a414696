//! Shared vocabulary of Confab, with no I/O:
//!
//! - [`error`]: the single table of LeanCloud error codes;
//! - [`limits`]: every configurable limit with its default;
//! - [`command`]: the protocol-neutral requests, replies and pushes that every codec
//!   produces and consumes, so the engine never sees a wire format;
//! - [`time`]: millisecond timestamps and their ISO-8601 form;
//! - [`durability`]: how hard a commit pushes data to disk;
//! - [`net`]: IP networks of the configuration (trusted proxies).

pub mod command;
pub mod durability;
pub mod error;
pub mod limits;
pub mod net;
pub mod time;

pub use command::*;
pub use durability::Durability;
pub use error::{Disposition, ErrorCode, ProtocolError};
pub use limits::Limits;

//! Confab's wire codecs: pure functions between frames and the protocol-neutral
//! commands of [`confab_types`]. No I/O, no clocks, no global state, so every codec can
//! be fuzzed and tested byte for byte.
//!
//! - [`subprotocol`]: which codec serves a connection, decided from the WebSocket
//!   handshake (what to echo in `Sec-WebSocket-Protocol`).
//! - [`json_v2`]: the text protocol of `leancloud-realtime` 2.x (one JSON object per
//!   text frame, no subprotocol).
//!
//! The protobuf codec of the 3.x+ SDKs will sit beside `json_v2` behind the same
//! [`Codec`] enum.

pub mod json_v2;
pub mod subprotocol;

use confab_types::{Inbound, ProtocolError, Push, Reply};

/// A frame as it travels on the WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireFrame {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
}

/// A frame that could not be decoded, with the request serial when one was readable
/// (so the error reply can be matched to the request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct DecodeError {
    /// The request serial, if the frame got far enough to show one.
    pub serial: Option<i32>,
    /// What was wrong.
    pub error: ProtocolError,
}

/// The codecs a connection can speak. An enum, not a trait object: the set is closed
/// and small, and a match is cheaper than a vtable on the per-frame path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// LeanCloud v2 JSON (`leancloud-realtime` 2.x).
    JsonV2,
}

impl Codec {
    /// Number of codecs; sizes per-codec caches of encoded pushes.
    pub const COUNT: usize = 1;

    /// A dense index for per-codec caches.
    pub fn index(self) -> usize {
        match self {
            Codec::JsonV2 => 0,
        }
    }

    /// Whether pushes travel as binary frames.
    pub fn is_binary(self) -> bool {
        match self {
            Codec::JsonV2 => false,
        }
    }

    /// Decodes one client frame.
    pub fn decode(self, frame: &WireFrame) -> Result<Inbound, DecodeError> {
        match self {
            Codec::JsonV2 => json_v2::decode_frame(frame),
        }
    }

    /// Encodes the reply to a request with serial `serial`.
    pub fn encode_reply(self, serial: Option<i32>, reply: &Reply) -> WireFrame {
        match self {
            Codec::JsonV2 => WireFrame::Text(json_v2::encode_reply(serial, reply)),
        }
    }

    /// Encodes a push. The result depends only on the push, so it may be encoded once
    /// and shared by every recipient speaking this codec.
    pub fn encode_push(self, push: &Push) -> WireFrame {
        match self {
            Codec::JsonV2 => WireFrame::Text(json_v2::encode_push(push)),
        }
    }
}

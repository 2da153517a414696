//! Confab's wire codecs: pure functions between frames and the protocol-neutral
//! commands of [`confab_types`]. No I/O, no clocks, no global state, so every codec can
//! be fuzzed and tested byte for byte.
//!
//! - [`subprotocol`]: which codec serves a connection, decided from the WebSocket
//!   handshake (what to echo in `Sec-WebSocket-Protocol`).
//! - [`json_v2`]: the text protocol of `leancloud-realtime` 2.x (one JSON object per
//!   text frame, no subprotocol).
//!
//! - [`protobuf`]: the protobuf protocol of the 3.x+ SDKs (binary or base64 frames).

pub mod json_v2;
pub mod protobuf;
pub mod subprotocol;

use bytes::Bytes;
use confab_types::{Inbound, InboundAck, ProtocolError, Push, Reply};

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
    /// Protobuf in binary frames (`lc.protobuf2.*`).
    Protobuf,
    /// Protobuf as base64 text frames (`lc.proto2base64.*`).
    ProtobufBase64,
}

impl Codec {
    /// Whether pushes travel as binary frames.
    pub fn is_binary(self) -> bool {
        self == Codec::Protobuf
    }

    /// The slot of a push's encode-once cache this codec uses: both protobuf codecs
    /// share the serialized body and differ only in framing.
    pub fn push_cache_slot(self) -> usize {
        match self {
            Codec::JsonV2 => 0,
            Codec::Protobuf | Codec::ProtobufBase64 => 1,
        }
    }

    /// Decodes one client frame.
    pub fn decode(self, frame: &WireFrame) -> Result<Inbound, DecodeError> {
        match frame {
            WireFrame::Text(text) => self.decode_text(text),
            WireFrame::Binary(bytes) => self.decode_binary(bytes),
        }
    }

    /// Decodes a text frame's payload where it lies (no copy of the frame).
    pub fn decode_text(self, text: &str) -> Result<Inbound, DecodeError> {
        match self {
            Codec::JsonV2 => json_v2::decode(text),
            Codec::Protobuf | Codec::ProtobufBase64 => protobuf::decode_base64(text),
        }
    }

    /// A text frame that is a plain JSON `ack`, read where it lies ([`json_v2::scan_ack`]);
    /// `None` for anything else, which [`Codec::decode_text`] then decodes.
    pub fn scan_ack(self, text: &str) -> Option<InboundAck<'_>> {
        match self {
            Codec::JsonV2 => json_v2::scan_ack(text),
            Codec::Protobuf | Codec::ProtobufBase64 => None,
        }
    }

    /// Decodes a binary frame's payload where it lies (no copy of the frame).
    pub fn decode_binary(self, bytes: &[u8]) -> Result<Inbound, DecodeError> {
        match self {
            Codec::JsonV2 => Err(json_v2::binary_refused()),
            Codec::Protobuf | Codec::ProtobufBase64 => protobuf::decode(bytes),
        }
    }

    /// Encodes the reply to a request with serial `serial`.
    pub fn encode_reply(self, serial: Option<i32>, reply: &Reply) -> WireFrame {
        match self {
            Codec::JsonV2 => WireFrame::Text(json_v2::encode_reply(serial, reply)),
            Codec::Protobuf => WireFrame::Binary(protobuf::encode_reply(serial, reply)),
            Codec::ProtobufBase64 => {
                WireFrame::Text(protobuf::to_base64(&protobuf::encode_reply(serial, reply)))
            }
        }
    }

    /// Encodes the recipient-independent body of a push, to be shared by every
    /// recipient with the same [`Codec::push_cache_slot`].
    pub fn encode_push_body(self, push: &Push) -> Bytes {
        match self {
            Codec::JsonV2 => Bytes::from(json_v2::encode_push(push)),
            Codec::Protobuf | Codec::ProtobufBase64 => Bytes::from(protobuf::encode_push(push)),
        }
    }

    /// Frames a shared push body for one recipient.
    pub fn frame_push(self, body: &Bytes, recipient: Option<&str>) -> PushFrame {
        match self {
            Codec::JsonV2 => PushFrame::Text(json_v2::with_peer(body, recipient)),
            Codec::Protobuf => PushFrame::Binary(protobuf::with_peer(body, recipient)),
            Codec::ProtobufBase64 => {
                PushFrame::Text(Bytes::from(protobuf::to_base64(&protobuf::with_peer(body, recipient))))
            }
        }
    }
}

/// A push ready for the socket; text frames hold UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushFrame {
    /// A text frame (UTF-8 bytes).
    Text(Bytes),
    /// A binary frame.
    Binary(Bytes),
}

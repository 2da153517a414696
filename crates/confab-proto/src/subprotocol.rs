//! Choosing a codec from the WebSocket handshake.
//!
//! `leancloud-realtime` 2.x asks for no subprotocol and aborts if the server names one,
//! so a request without subprotocols gets the v2 JSON codec and no
//! `Sec-WebSocket-Protocol` header. The 3.x+ SDKs ask for exactly one `lc.*` name (or pass
//! it as the `subprotocol` URL parameter) and need it echoed.

use crate::Codec;

/// The outcome of negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The codec that serves the connection.
    pub codec: Codec,
    /// The subprotocol to echo, if any.
    pub echo: Option<String>,
}

/// Picks the codec for the offered subprotocols (header values, in order) and the
/// `subprotocol` query parameter. `None` means nothing offered is supported: the
/// handshake should proceed without echoing, and the client will give up.
pub fn negotiate<'a>(offered: impl IntoIterator<Item = &'a str>, query: Option<&str>) -> Option<Negotiated> {
    let offered: Vec<&str> =
        offered.into_iter().flat_map(|v| v.split(',')).map(str::trim).filter(|s| !s.is_empty()).collect();
    let query = query.map(str::trim).filter(|s| !s.is_empty());
    if offered.is_empty() && query.is_none() {
        return Some(Negotiated { codec: Codec::JsonV2, echo: None });
    }
    // No `lc.*` subprotocol is served yet; the protobuf codec adds them here.
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_subprotocol_means_json_v2_without_echo() {
        assert_eq!(negotiate([], None), Some(Negotiated { codec: Codec::JsonV2, echo: None }));
        assert_eq!(negotiate([" "], Some("")), Some(Negotiated { codec: Codec::JsonV2, echo: None }));
    }

    #[test]
    fn unsupported_subprotocols_are_not_echoed() {
        assert_eq!(negotiate(["chat, superchat"], None), None);
        assert_eq!(negotiate([], Some("lc.protobuf2.3")), None);
    }
}

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
    /// Protocol version: 1 pushes offline messages, 3 reports unread counts instead;
    /// 2 is the v2 JSON protocol (offline messages pushed as for 1, and no roles).
    pub version: u8,
    /// The subprotocol to echo, if any.
    pub echo: Option<String>,
}

/// Parses one `lc.<format>.<version>` name.
fn parse(name: &str) -> Option<(Codec, u8)> {
    let rest = name.strip_prefix("lc.")?;
    let (format, version) = rest.rsplit_once('.')?;
    let version: u8 = match version {
        "1" => 1,
        "3" => 3,
        _ => return None,
    };
    let codec = match format {
        "protobuf2" => Codec::Protobuf,
        "proto2base64" => Codec::ProtobufBase64,
        _ => return None,
    };
    Some((codec, version))
}

/// Picks the codec for the offered subprotocols (header values, in order) and the
/// `subprotocol` query parameter (mini-program clients cannot set the header). `None`
/// means nothing offered is supported: refuse the handshake.
pub fn negotiate<'a>(offered: impl IntoIterator<Item = &'a str>, query: Option<&str>) -> Option<Negotiated> {
    let offered: Vec<&str> =
        offered.into_iter().flat_map(|v| v.split(',')).map(str::trim).filter(|s| !s.is_empty()).collect();
    let query = query.map(str::trim).filter(|s| !s.is_empty());
    if offered.is_empty() && query.is_none() {
        return Some(Negotiated { codec: Codec::JsonV2, version: 2, echo: None });
    }
    if let Some(name) = offered.iter().copied().find(|n| parse(n).is_some()) {
        let (codec, version) = parse(name)?;
        return Some(Negotiated { codec, version, echo: Some(name.to_owned()) });
    }
    // Only from the URL: nothing to echo (the client did not ask in the header).
    let (codec, version) = parse(query?)?;
    if offered.is_empty() { Some(Negotiated { codec, version, echo: None }) } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_subprotocol_means_json_v2_without_echo() {
        let json = Some(Negotiated { codec: Codec::JsonV2, version: 2, echo: None });
        assert_eq!(negotiate([], None), json);
        assert_eq!(negotiate([" "], Some("")), json);
    }

    #[test]
    fn lc_subprotocols_are_echoed() {
        let n = negotiate(["lc.protobuf2.3"], None).expect("supported");
        assert_eq!((n.codec, n.version, n.echo.as_deref()), (Codec::Protobuf, 3, Some("lc.protobuf2.3")));
        let n = negotiate(["lc.proto2base64.1"], None).expect("supported");
        assert_eq!((n.codec, n.version), (Codec::ProtobufBase64, 1));
        let n = negotiate(["chat, lc.protobuf2.1"], None).expect("supported");
        assert_eq!(n.echo.as_deref(), Some("lc.protobuf2.1"));
        let n = negotiate([], Some("lc.proto2base64.3")).expect("from the URL");
        assert_eq!((n.codec, n.version, n.echo), (Codec::ProtobufBase64, 3, None));
    }

    #[test]
    fn unsupported_subprotocols_are_refused() {
        assert_eq!(negotiate(["chat, superchat"], None), None);
        assert_eq!(negotiate(["lc.json.3"], None), None);
        assert_eq!(negotiate([], Some("lc.protobuf2.2")), None);
    }
}

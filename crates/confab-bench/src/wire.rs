//! The three dialects the load tool speaks, over its own lean WebSocket client
//! ([`crate::ws`]): Confab's LeanCloud v2 JSON protocol, Socket.IO 4 (Engine.IO v4 over
//! a WebSocket, no polling) and the bare broadcasters, Node's and Rust's (raw text,
//! room = URL path, a member's ack = a text frame starting with `k`).

use crate::ws::{Client, Opcode};
use anyhow::{Context, Result, anyhow, bail};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpSocket;

/// One client connection.
pub type Ws = Client;

/// How long one handshake or request may take before it counts as failed.
pub const STEP: Duration = Duration::from_secs(15);

/// Which server the load is aimed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// Confab (LeanCloud v2 JSON).
    Confab,
    /// The Socket.IO 4 peer in bench/peers/socketio.mjs.
    Socketio,
    /// The bare broadcaster in bench/peers/bare.mjs (single-threaded Node).
    Bare,
    /// The bare broadcaster of `confab-bench serve-bare` (tokio multi-threaded +
    /// tungstenite): the machine's limit.
    BareRust,
}

impl Target {
    /// The name used in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Target::Confab => "confab",
            Target::Socketio => "socketio",
            Target::Bare => "bare",
            Target::BareRust => "bare-rust",
        }
    }
}

/// How receivers acknowledge the messages delivered to them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MemberAcks {
    /// leancloud-realtime 2.4.0: `ack {cid, mid}` for every non-transient message, right
    /// away, in chat rooms too.
    #[value(name = "2.4")]
    V24,
    /// leancloud-realtime 4.x: `ack {cid, fromts, tots}` per conversation, at most once a
    /// second (the SDK's `throttle(1000)`), never in chat rooms.
    #[value(name = "4x")]
    V4x,
    /// Receivers never answer (the older, kinder shape).
    None,
}

impl MemberAcks {
    /// The name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            MemberAcks::V24 => "2.4",
            MemberAcks::V4x => "4x",
            MemberAcks::None => "none",
        }
    }

    /// Whether a receiver in a conversation of this kind acknowledges at all.
    pub fn acks_in(self, chat_room: bool) -> bool {
        match self {
            MemberAcks::V24 => true,
            MemberAcks::V4x => !chat_room,
            MemberAcks::None => false,
        }
    }
}

/// How often a 4.x client sends its batched acks, at most.
pub const BATCH_ACK_EVERY: Duration = Duration::from_secs(1);

/// The app id the load tool logs into on Confab.
pub const APP: &str = "bench";

/// The loopback source address for the `n`th connection: 127.0.1.1 … 127.0.1.250, so
/// no single (source, destination) pair runs out of its 28k ephemeral ports.
pub fn source_addr(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 1, 1 + (n % 250) as u8)
}

/// Opens a TCP connection from `src` and does the WebSocket handshake on `path`.
pub async fn connect(server: SocketAddr, src: Ipv4Addr, path: &str) -> Result<Ws> {
    if !server.ip().is_loopback() || !src.is_loopback() {
        bail!("the load tool only talks to loopback addresses");
    }
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(src.into(), 0)).with_context(|| format!("bind {src}"))?;
    let stream = tokio::time::timeout(STEP, socket.connect(server)).await.context("connect timed out")??;
    stream.set_nodelay(true)?;
    tokio::time::timeout(STEP, Client::handshake(stream, &server.to_string(), path))
        .await
        .context("websocket handshake timed out")?
}

/// The URL path a client of `target` connects to; `room` matters to the bare server only.
pub fn path(target: Target, room: &str) -> String {
    match target {
        Target::Confab => "/".into(),
        Target::Socketio => "/socket.io/?EIO=4&transport=websocket".into(),
        Target::Bare | Target::BareRust => format!("/r/{room}"),
    }
}

/// Connects and establishes a session: Confab `session open`, Socket.IO's Engine.IO
/// open and namespace connect, nothing more for the bare server.
pub async fn open(target: Target, server: SocketAddr, src: Ipv4Addr, room: &str, peer: &str) -> Result<Ws> {
    let mut ws = connect(server, src, &path(target, room)).await?;
    match target {
        Target::Confab => {
            let frame = format!(
                r#"{{"cmd":"session","op":"open","appId":"{APP}","peerId":"{peer}","ua":"confab-bench","i":1}}"#
            );
            send(&mut ws, frame).await?;
            let reply = recv_until(&mut ws, |t| t.contains(r#""i":1"#)).await?;
            if !reply.contains(r#""opened""#) {
                bail!("session open refused: {reply}");
            }
        }
        Target::Socketio => {
            let open = recv_until(&mut ws, |t| t.starts_with('0')).await?;
            if !open.contains("sid") {
                bail!("engine.io open expected, got {open}");
            }
            send(&mut ws, "40".into()).await?;
            recv_until(&mut ws, |t| t.starts_with("40")).await?;
        }
        Target::Bare | Target::BareRust => {}
    }
    Ok(ws)
}

/// Why a device could not (re)open its session.
#[derive(Debug)]
pub enum OpenFailure {
    /// The server refused the open: the error frame's code (4111: the device tag is
    /// held by another session), or the code it closed the WebSocket with.
    Refused(i64),
    /// No answer: `connect` (TCP or the WebSocket upgrade failed), `timeout` (no reply
    /// within [`STEP`]), `closed` (the connection ended first) or `unexpected` (a reply
    /// that is neither).
    Other(&'static str),
}

/// The `session open` of a device with a tag, as the SDKs send it when a tag is set:
/// the first login (`reconnect` false: it takes the tag, ending any other session with
/// it) or the re-login after a lost connection (`r: true`: refused with 4111 while
/// another session holds the tag).
pub fn device_open(peer: &str, tag: &str, reconnect: bool) -> String {
    format!(
        r#"{{"cmd":"session","op":"open","appId":"{APP}","peerId":"{peer}","tag":"{tag}","r":{reconnect},"ua":"confab-bench","i":1}}"#
    )
}

/// Connects to Confab and opens `peer`'s session with device tag `tag` (see
/// [`device_open`]), telling a refusal (with its code) from other failures.
pub async fn open_device(
    server: SocketAddr,
    src: Ipv4Addr,
    peer: &str,
    tag: &str,
    reconnect: bool,
) -> Result<Ws, OpenFailure> {
    let mut ws =
        connect(server, src, &path(Target::Confab, "")).await.map_err(|_| OpenFailure::Other("connect"))?;
    ws.send_text(&device_open(peer, tag, reconnect)).await.map_err(|_| OpenFailure::Other("closed"))?;
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let frame = match tokio::time::timeout_at(deadline, ws.next_frame()).await {
            Err(_) => return Err(OpenFailure::Other("timeout")),
            Ok(Err(_) | Ok(None)) => return Err(OpenFailure::Other("closed")),
            Ok(Ok(Some(frame))) => frame,
        };
        match frame.opcode {
            Opcode::Close => {
                return Err(match ws.close_code(&frame) {
                    Some(code) if code >= 4000 => OpenFailure::Refused(i64::from(code)),
                    _ => OpenFailure::Other("closed"),
                });
            }
            Opcode::Binary => {}
            Opcode::Text => {
                let text = ws.text(&frame);
                if !text.contains(r#""i":1"#) {
                    continue;
                }
                if text.contains(r#""op":"opened""#) {
                    return Ok(ws);
                }
                return Err(match number_after(text, r#""code":"#) {
                    Some(code) if text.contains(r#""cmd":"error""#) => OpenFailure::Refused(code),
                    _ => OpenFailure::Other("unexpected"),
                });
            }
        }
    }
}

/// Sends one text frame.
pub async fn send(ws: &mut Ws, text: String) -> Result<()> {
    ws.send_text(&text).await
}

/// Reads frames (answering Engine.IO pings) until one satisfies `pred`; returns it.
pub async fn recv_until(ws: &mut Ws, pred: impl Fn(&str) -> bool) -> Result<String> {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next_frame()).await.context("reply timed out")??;
        let Some(frame) = frame else { bail!("connection closed") };
        match frame.opcode {
            Opcode::Text => {
                let text = ws.text(&frame);
                if text == "2" {
                    ws.send_text("3").await?;
                    continue;
                }
                if pred(text) {
                    return Ok(text.to_owned());
                }
            }
            Opcode::Close => bail!("closed by the server"),
            Opcode::Binary => {}
        }
    }
}

/// Confab: creates a conversation (a chat room when `transient`) and returns its id.
pub async fn confab_start(ws: &mut Ws, members: &[&str], transient: bool, serial: i64) -> Result<String> {
    let m = serde_json::to_string(members)?;
    send(
        ws,
        format!(
            r#"{{"cmd":"conv","op":"start","m":{m},"transient":{transient},"attr":{{"name":"bench"}},"i":{serial}}}"#
        ),
    )
    .await?;
    let marker = format!(r#""i":{serial}"#);
    let reply = recv_until(ws, |t| t.contains(&marker)).await?;
    let v: serde_json::Value = serde_json::from_str(&reply)?;
    v["cid"].as_str().map(str::to_owned).ok_or_else(|| anyhow!("conv start failed: {reply}"))
}

/// Joins `room` as `peer` (Confab `conv add [self]`, Socket.IO `join` with ack; the bare
/// server's room is the URL path, so nothing to do).
pub async fn join(target: Target, ws: &mut Ws, room: &str, peer: &str, serial: i64) -> Result<()> {
    match target {
        Target::Confab => {
            send(ws, format!(r#"{{"cmd":"conv","op":"add","cid":"{room}","m":["{peer}"],"i":{serial}}}"#))
                .await?;
            let marker = format!(r#""i":{serial}"#);
            let reply = recv_until(ws, |t| t.contains(&marker)).await?;
            if reply.contains(r#""cmd":"error""#) || reply.contains("failedPids\":[{") {
                bail!("join refused: {reply}");
            }
        }
        Target::Socketio => {
            send(ws, format!(r#"42{serial}["join","{room}"]"#)).await?;
            let marker = format!("43{serial}[");
            recv_until(ws, |t| t.starts_with(&marker)).await?;
        }
        Target::Bare | Target::BareRust => {}
    }
    Ok(())
}

/// The frame that publishes `payload` to `room` with request serial `serial`.
pub fn publish(target: Target, room: &str, serial: i64, payload: &str) -> String {
    match target {
        Target::Confab => format!(r#"{{"cmd":"direct","cid":"{room}","msg":"{payload}","i":{serial}}}"#),
        Target::Socketio => format!(r#"42{serial}["m","{room}","{payload}"]"#),
        Target::Bare | Target::BareRust => payload.to_owned(),
    }
}

/// What an incoming frame is.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// The answer to one of our publishes (with its serial when the dialect has one).
    Ack(Option<i64>),
    /// A message from someone else.
    Delivery,
    /// An Engine.IO ping (answer "3").
    Ping,
    /// An error frame.
    Error,
    /// Anything else.
    Other,
}

/// Classifies a text frame without parsing it as JSON.
pub fn classify(target: Target, text: &str) -> Incoming {
    match target {
        Target::Confab => {
            if text.contains(r#""cmd":"direct""#) {
                Incoming::Delivery
            } else if text.contains(r#""cmd":"ack""#) {
                Incoming::Ack(number_after(text, r#""i":"#))
            } else if text.contains(r#""cmd":"error""#) {
                Incoming::Error
            } else {
                Incoming::Other
            }
        }
        Target::Socketio => {
            if text == "2" {
                Incoming::Ping
            } else if let Some(rest) = text.strip_prefix("43") {
                Incoming::Ack(leading_number(rest))
            } else if text.starts_with("42[\"m\"") {
                Incoming::Delivery
            } else {
                Incoming::Other
            }
        }
        Target::Bare | Target::BareRust => {
            if text == "a" {
                Incoming::Ack(None)
            } else {
                Incoming::Delivery
            }
        }
    }
}

/// The id and timestamp (ms) of a delivered message, found with byte searches (no JSON
/// tree: the load tool decodes as many frames as the server sends). Confab: the push's
/// `id` and `timestamp`. The peers give messages no id: there the send stamp carried in
/// the body (`~T<ns>~`) stands in for both.
pub fn delivered_id(target: Target, text: &str) -> Option<(&str, i64)> {
    match target {
        Target::Confab => Some((string_after(text, r#""id":""#)?, number_after(text, r#""timestamp":"#)?)),
        _ => {
            let at = text.find("~T")? + 2;
            let digits = &text[at..];
            let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
            let ns: i64 = digits[..end].parse().ok()?;
            Some((&digits[..end], ns / 1_000_000))
        }
    }
}

/// Length of Confab's `ack {cid, mid}` with its 24-character conversation ids and
/// 22-character message ids; the peers' per-message acks are padded to it.
const ACK_LEN: usize = r#"{"cmd":"ack","cid":"","mid":""}"#.len() + 24 + 22;
/// Length of Confab's batched `ack {cid, fromts, tots}` (13-digit millisecond times).
const BATCH_ACK_LEN: usize = r#"{"cmd":"ack","cid":"","fromts":,"tots":}"#.len() + 24 + 13 + 13;

/// The ack a receiver sends for one delivered message (leancloud-realtime 2.4.0 shape):
/// Confab `ack {cid, mid}`; the peers get a frame of the same size in their own dialect
/// that their server reads and drops: Socket.IO event `a` (room, id) without an ack
/// callback, bare `k<room> <id>`.
pub fn member_ack(target: Target, room: &str, mid: &str) -> String {
    match target {
        Target::Confab => format!(r#"{{"cmd":"ack","cid":"{room}","mid":"{mid}"}}"#),
        Target::Socketio => padded(format!(r#"42["a","{room}","{mid}"#), "\"]", ACK_LEN),
        Target::Bare | Target::BareRust => padded(format!("k{room} {mid}"), "", ACK_LEN),
    }
}

/// The batched ack a receiver sends for the messages of `room` with timestamps
/// `from..=to` (leancloud-realtime 4.x shape); the peers' frames are padded like
/// [`member_ack`]'s.
pub fn member_ack_range(target: Target, room: &str, from: i64, to: i64) -> String {
    match target {
        Target::Confab => format!(r#"{{"cmd":"ack","cid":"{room}","fromts":{from},"tots":{to}}}"#),
        Target::Socketio => padded(format!(r#"42["a","{room}","{from}-{to}"#), "\"]", BATCH_ACK_LEN),
        Target::Bare | Target::BareRust => padded(format!("k{room} {from}-{to}"), "", BATCH_ACK_LEN),
    }
}

/// `head`, `.` padding, then `tail`, `len` bytes in all (longer if `head` and `tail` are).
fn padded(mut head: String, tail: &str, len: usize) -> String {
    while head.len() + tail.len() < len {
        head.push('.');
    }
    head.push_str(tail);
    head
}

/// A 4.x client's ack buffer for one conversation: the range of timestamps delivered
/// since the last ack, sent at most once per [`BATCH_ACK_EVERY`] (the first at once).
#[derive(Debug, Default)]
pub struct AckBatch {
    range: Option<(i64, i64)>,
    last_sent: Option<std::time::Instant>,
}

impl AckBatch {
    /// Notes a delivered message's timestamp.
    pub fn add(&mut self, ts: i64) {
        self.range = Some(match self.range {
            Some((f, t)) => (f.min(ts), t.max(ts)),
            None => (ts, ts),
        });
    }

    /// The range to ack now, if one is pending and the throttle allows it (then it
    /// counts as sent); otherwise when to ask again, if anything is pending.
    pub fn due(&mut self, now: std::time::Instant) -> Result<(i64, i64), Option<std::time::Instant>> {
        let Some(range) = self.range else { return Err(None) };
        match self.last_sent {
            Some(last) if now < last + BATCH_ACK_EVERY => Err(Some(last + BATCH_ACK_EVERY)),
            _ => {
                self.range = None;
                self.last_sent = Some(now);
                Ok(range)
            }
        }
    }
}

/// Nanoseconds since the Unix epoch: comparable across the load tool's processes.
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// A message body carrying its send time, padded with `x` to `size` bytes.
pub fn payload(size: usize) -> String {
    let mut p = format!("~T{}~", now_ns());
    while p.len() < size {
        p.push('x');
    }
    p
}

/// The send time carried by a delivered frame's body: the digits after the first
/// `~T` (found with a byte search: the frame's other fields never hold a `~`).
pub fn sent_ns(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(at) = bytes[from..].iter().position(|&b| b == b'~') {
        let marker = from + at;
        if bytes.get(marker + 1) == Some(&b'T') {
            return leading_number(&text[marker + 2..]).and_then(|n| u64::try_from(n).ok());
        }
        from = marker + 1;
    }
    None
}

/// The JSON string value right after `marker` (which ends with its opening quote); ids
/// and conversation ids hold no escapes.
fn string_after<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    let at = text.find(marker)? + marker.len();
    let len = text[at..].find('"')?;
    Some(&text[at..at + len])
}

fn number_after(text: &str, marker: &str) -> Option<i64> {
    let at = text.find(marker)? + marker.len();
    leading_number(&text[at..])
}

fn leading_number(s: &str) -> Option<i64> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_each_dialect() {
        let d = r#"{"cmd":"direct","cid":"c","id":"m","timestamp":1,"fromPeerId":"a","msg":"~T123~xx"}"#;
        assert_eq!(classify(Target::Confab, d), Incoming::Delivery);
        assert_eq!(sent_ns(d), Some(123));
        assert_eq!(
            classify(Target::Confab, r#"{"cmd":"ack","i":42,"t":5,"uid":"u"}"#),
            Incoming::Ack(Some(42))
        );
        assert_eq!(delivered_id(Target::Confab, d), Some(("m", 1)));
        assert_eq!(classify(Target::Socketio, "437[{}]"), Incoming::Ack(Some(7)));
        assert_eq!(classify(Target::Socketio, r#"42["m","~T9~"]"#), Incoming::Delivery);
        assert_eq!(classify(Target::Socketio, "2"), Incoming::Ping);
        assert_eq!(classify(Target::Bare, "a"), Incoming::Ack(None));
        assert_eq!(payload(40).len(), 40);
        assert!(sent_ns(&publish(Target::Socketio, "r", 1, &payload(10))).is_some());
    }

    #[test]
    fn device_opens_carry_the_tag_and_the_reconnect_flag() {
        let first: serde_json::Value =
            serde_json::from_str(&device_open("f7", "Mobile", false)).expect("JSON");
        assert_eq!((first["cmd"].as_str(), first["op"].as_str()), (Some("session"), Some("open")));
        assert_eq!((first["peerId"].as_str(), first["tag"].as_str()), (Some("f7"), Some("Mobile")));
        assert_eq!((first["r"].as_bool(), first["i"].as_i64()), (Some(false), Some(1)));
        let again: serde_json::Value =
            serde_json::from_str(&device_open("f7", "Mobile", true)).expect("JSON");
        assert_eq!((again["r"].as_bool(), again["tag"].as_str()), (Some(true), Some("Mobile")));
    }

    #[test]
    fn finds_the_id_of_each_delivery() {
        let d = r#"{"cid":"0123","cmd":"direct","fromPeerId":"p1","id":"Ab-_9","msg":"~T5~x","timestamp":1700000000123}"#;
        assert_eq!(delivered_id(Target::Confab, d), Some(("Ab-_9", 1_700_000_000_123)));
        assert_eq!(delivered_id(Target::Confab, r#"{"cmd":"direct","cid":"c"}"#), None);
        let sio = r#"42["m","~T1700000000123456789~xx"]"#;
        assert_eq!(delivered_id(Target::Socketio, sio), Some(("1700000000123456789", 1_700_000_000_123)));
        assert_eq!(delivered_id(Target::BareRust, "~T2000000~x"), Some(("2000000", 2)));
        assert_eq!(delivered_id(Target::Bare, "no stamp"), None);
    }

    #[test]
    fn member_acks_have_the_same_size_in_every_dialect() {
        let (cid, mid) = ("0".repeat(24), "m".repeat(22));
        let confab = member_ack(Target::Confab, &cid, &mid);
        assert_eq!(confab, format!(r#"{{"cmd":"ack","cid":"{cid}","mid":"{mid}"}}"#));
        let sio = member_ack(Target::Socketio, "bench", "1700000000123456789");
        assert!(
            sio.starts_with(r#"42["a","bench","1700000000123456789"#) && sio.ends_with(r#"."]"#),
            "{sio}"
        );
        assert!(serde_json::from_str::<serde_json::Value>(&sio[2..]).is_ok(), "{sio}");
        let bare = member_ack(Target::Bare, "p1", "17");
        assert!(bare.starts_with("kp1 17"), "{bare}");
        for ack in [&sio, &bare, &member_ack(Target::BareRust, "r", "1")] {
            assert_eq!(ack.len(), confab.len(), "{ack}");
        }
        let ts = 1_700_000_000_123;
        let confab = member_ack_range(Target::Confab, &cid, ts, ts + 9);
        assert_eq!(confab, format!(r#"{{"cmd":"ack","cid":"{cid}","fromts":{ts},"tots":{}}}"#, ts + 9));
        let sio = member_ack_range(Target::Socketio, "p1", ts, ts + 9);
        assert!(serde_json::from_str::<serde_json::Value>(&sio[2..]).is_ok(), "{sio}");
        for ack in [&sio, &member_ack_range(Target::Bare, "p1", ts, ts + 9)] {
            assert_eq!(ack.len(), confab.len(), "{ack}");
        }
    }

    #[test]
    fn batched_acks_go_at_most_once_a_second() {
        let t0 = std::time::Instant::now();
        let mut b = AckBatch::default();
        assert_eq!(b.due(t0), Err(None), "nothing to ack");
        b.add(10);
        assert_eq!(b.due(t0), Ok((10, 10)), "the first goes at once");
        b.add(12);
        b.add(11);
        let next = t0 + BATCH_ACK_EVERY;
        assert_eq!(b.due(t0 + Duration::from_millis(300)), Err(Some(next)));
        b.add(13);
        assert_eq!(b.due(next), Ok((11, 13)));
        assert_eq!(b.due(next + BATCH_ACK_EVERY), Err(None));
    }

    #[test]
    fn member_ack_modes() {
        use clap::ValueEnum;
        assert_eq!(MemberAcks::from_str("2.4", false), Ok(MemberAcks::V24));
        assert_eq!(MemberAcks::from_str("4x", false), Ok(MemberAcks::V4x));
        assert_eq!(MemberAcks::from_str("none", false), Ok(MemberAcks::None));
        assert!(MemberAcks::from_str("3", false).is_err());
        assert!(MemberAcks::V24.acks_in(true) && MemberAcks::V24.acks_in(false));
        assert!(!MemberAcks::V4x.acks_in(true) && MemberAcks::V4x.acks_in(false));
        assert!(!MemberAcks::None.acks_in(false));
        for m in [MemberAcks::V24, MemberAcks::V4x, MemberAcks::None] {
            assert_eq!(MemberAcks::from_str(m.name(), false), Ok(m));
        }
        assert_eq!(Target::from_str("bare-rust", false), Ok(Target::BareRust));
        assert_eq!(Target::BareRust.name(), "bare-rust");
    }
}

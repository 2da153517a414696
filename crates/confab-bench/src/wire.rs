//! The three dialects the load tool speaks, over its own lean WebSocket client
//! ([`crate::ws`]): Confab's LeanCloud v2 JSON protocol, Socket.IO 4 (Engine.IO v4 over
//! a WebSocket, no polling) and the bare broadcaster (raw text, room = URL path).

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
    /// The bare broadcaster in bench/peers/bare.mjs.
    Bare,
}

impl Target {
    /// The name used in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Target::Confab => "confab",
            Target::Socketio => "socketio",
            Target::Bare => "bare",
        }
    }
}

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
        Target::Bare => format!("/r/{room}"),
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
        Target::Bare => {}
    }
    Ok(ws)
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
        Target::Bare => {}
    }
    Ok(())
}

/// The frame that publishes `payload` to `room` with request serial `serial`.
pub fn publish(target: Target, room: &str, serial: i64, payload: &str) -> String {
    match target {
        Target::Confab => format!(r#"{{"cmd":"direct","cid":"{room}","msg":"{payload}","i":{serial}}}"#),
        Target::Socketio => format!(r#"42{serial}["m","{room}","{payload}"]"#),
        Target::Bare => payload.to_owned(),
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
        Target::Bare => {
            if text == "a" {
                Incoming::Ack(None)
            } else {
                Incoming::Delivery
            }
        }
    }
}

/// Confab: the `ack` a recipient sends for a delivered `direct` (what the SDKs do).
pub fn confab_receipt(text: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    Some(format!(r#"{{"cmd":"ack","cid":"{}","mid":"{}"}}"#, v["cid"].as_str()?, v["id"].as_str()?))
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
        assert_eq!(confab_receipt(d).as_deref(), Some(r#"{"cmd":"ack","cid":"c","mid":"m"}"#));
        assert_eq!(classify(Target::Socketio, "437[{}]"), Incoming::Ack(Some(7)));
        assert_eq!(classify(Target::Socketio, r#"42["m","~T9~"]"#), Incoming::Delivery);
        assert_eq!(classify(Target::Socketio, "2"), Incoming::Ping);
        assert_eq!(classify(Target::Bare, "a"), Incoming::Ack(None));
        assert_eq!(payload(40).len(), 40);
        assert!(sent_ns(&publish(Target::Socketio, "r", 1, &payload(10))).is_some());
    }
}

//! A minimal WebSocket client for the load tool (RFC 6455, client side, over plain TCP).
//!
//! The load tool parses about as many frames as the server sends, on the same two cores;
//! every microsecond it spends per frame is taken from the server it measures. So frames
//! are read into one reusable buffer (no zeroing, no allocation per frame), parsed in
//! place, and handed out as borrowed slices; outgoing frames collect in a buffer that
//! one `flush` writes. It speaks exactly what the three servers send: unfragmented text
//! and binary frames, ping (answered with pong), close.

use anyhow::{Context, Result, bail};
use std::hash::{BuildHasher, Hasher};
use std::ops::Range;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest frame accepted from a server.
const MAX_FRAME: usize = 1 << 20;
/// Free space kept in the read buffer before each read.
const READ_CHUNK: usize = 4096;
/// Largest HTTP response head accepted for the upgrade.
const MAX_HEAD: usize = 16 * 1024;

/// What a frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    /// UTF-8 text (checked).
    Text,
    /// Binary data.
    Binary,
    /// The server closed the WebSocket.
    Close,
}

/// A frame in the read buffer: valid until the next read into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Its kind.
    pub opcode: Opcode,
    payload: Range<usize>,
}

/// One client connection.
pub struct Client {
    stream: TcpStream,
    /// Bytes read; `read_at..` not yet parsed.
    rbuf: Vec<u8>,
    read_at: usize,
    /// Frames waiting for `flush`.
    wbuf: Vec<u8>,
    /// Masking-key generator (xorshift): RFC 6455 wants client frames masked.
    mask_state: u32,
}

impl Client {
    /// Performs the opening handshake for `path` on a connected stream.
    pub async fn handshake(mut stream: TcpStream, host: &str, path: &str) -> Result<Client> {
        let mut seed = std::collections::hash_map::RandomState::new().build_hasher();
        seed.write_usize(path.len());
        let seed = seed.finish();
        let key = encode_key(seed);
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut client = Client {
            stream,
            rbuf: Vec::with_capacity(READ_CHUNK),
            read_at: 0,
            wbuf: Vec::new(),
            mask_state: (seed as u32) | 1,
        };
        let head_end = loop {
            if let Some(at) = client.rbuf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if client.rbuf.len() > MAX_HEAD {
                bail!("upgrade response head over {MAX_HEAD} bytes");
            }
            if !client.fill().await? {
                bail!("connection closed during the upgrade");
            }
        };
        let head = String::from_utf8_lossy(&client.rbuf[..head_end]);
        let status = head.lines().next().unwrap_or_default();
        if !status.starts_with("HTTP/1.1 101") {
            bail!("upgrade refused: {status}");
        }
        // Frames the server sent right behind its response stay in the buffer.
        client.read_at = head_end;
        Ok(client)
    }

    /// Reads more bytes, waiting for them. `Ok(false)` when the server closed the TCP
    /// connection. Cancel-safe: nothing is lost if the future is dropped.
    pub async fn fill(&mut self) -> Result<bool> {
        self.make_room();
        Ok(self.stream.read_buf(&mut self.rbuf).await? > 0)
    }

    /// Reads whatever bytes have already arrived, without waiting. `Ok(false)` when none
    /// have (or the server closed: the next [`Client::fill`] reports that).
    pub fn try_fill(&mut self) -> Result<bool> {
        self.make_room();
        match self.stream.try_read_buf(&mut self.rbuf) {
            Ok(n) => Ok(n > 0),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn make_room(&mut self) {
        if self.read_at == self.rbuf.len() {
            self.rbuf.clear();
            self.read_at = 0;
        } else if self.read_at > self.rbuf.capacity() / 2 {
            self.rbuf.drain(..self.read_at);
            self.read_at = 0;
        }
        self.rbuf.reserve(READ_CHUNK);
    }

    /// The next complete frame already in the buffer, if any. Pings are answered (the
    /// pong waits for the next flush) and skipped.
    pub fn next_buffered(&mut self) -> Result<Option<Frame>> {
        loop {
            let buf = &self.rbuf[self.read_at..];
            let Some((header, len, opcode_bits, fin)) = parse_header(buf)? else {
                return Ok(None);
            };
            if buf.len() < header + len {
                return Ok(None);
            }
            let payload = self.read_at + header..self.read_at + header + len;
            self.read_at += header + len;
            if !fin || opcode_bits == 0 {
                bail!("fragmented frames are not expected from these servers");
            }
            let opcode = match opcode_bits {
                0x1 => {
                    std::str::from_utf8(&self.rbuf[payload.clone()]).context("text frame not UTF-8")?;
                    Opcode::Text
                }
                0x2 => Opcode::Binary,
                0x8 => Opcode::Close,
                0x9 => {
                    let data = self.rbuf[payload].to_vec();
                    self.feed(0xA, &data);
                    continue;
                }
                0xA => continue,
                other => bail!("unknown opcode {other:#x}"),
            };
            return Ok(Some(Frame { opcode, payload }));
        }
    }

    /// Whether a complete frame is waiting in the buffer.
    pub fn has_buffered_frame(&self) -> bool {
        match parse_header(&self.rbuf[self.read_at..]) {
            Ok(Some((header, len, _, _))) => self.rbuf.len() - self.read_at >= header + len,
            Ok(None) => false,
            // Let next_buffered report it.
            Err(_) => true,
        }
    }

    /// The text of a text frame ("" for any other frame).
    pub fn text(&self, frame: &Frame) -> &str {
        match frame.opcode {
            // Checked in next_buffered.
            Opcode::Text => std::str::from_utf8(&self.rbuf[frame.payload.clone()]).unwrap_or_default(),
            _ => "",
        }
    }

    /// The status code of a Close frame, if it carries one.
    pub fn close_code(&self, frame: &Frame) -> Option<u16> {
        match (frame.opcode, self.rbuf.get(frame.payload.clone())) {
            (Opcode::Close, Some([a, b, ..])) => Some(u16::from_be_bytes([*a, *b])),
            _ => None,
        }
    }

    /// Waits for the next frame (reading as needed); `None` once the TCP connection is closed.
    pub async fn next_frame(&mut self) -> Result<Option<Frame>> {
        loop {
            if let Some(frame) = self.next_buffered()? {
                return Ok(Some(frame));
            }
            self.flush().await?;
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    /// Queues a text frame for the next flush.
    pub fn feed_text(&mut self, text: &str) {
        self.feed(0x1, text.as_bytes());
    }

    fn feed(&mut self, opcode: u8, payload: &[u8]) {
        self.wbuf.push(0x80 | opcode);
        match payload.len() {
            n @ 0..=125 => self.wbuf.push(0x80 | n as u8),
            n @ 126..=0xFFFF => {
                self.wbuf.push(0x80 | 126);
                self.wbuf.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                self.wbuf.push(0x80 | 127);
                self.wbuf.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask_state = x;
        let mask = x.to_be_bytes();
        self.wbuf.extend_from_slice(&mask);
        self.wbuf.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    }

    /// Writes every queued frame.
    pub async fn flush(&mut self) -> Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Sends one text frame now.
    pub async fn send_text(&mut self, text: &str) -> Result<()> {
        self.feed_text(text);
        self.flush().await
    }

    /// Sends a Close frame (code 1000) and drops the connection.
    pub async fn close(mut self) {
        self.feed(0x8, &1000u16.to_be_bytes());
        let _ = self.flush().await;
    }
}

/// `(header length, payload length, opcode, FIN)` of the frame at the start of `buf`,
/// or `None` if its header is not complete yet.
fn parse_header(buf: &[u8]) -> Result<Option<(usize, usize, u8, bool)>> {
    let [b0, b1, rest @ ..] = buf else { return Ok(None) };
    if b1 & 0x80 != 0 {
        bail!("a server frame must not be masked");
    }
    let (header, len) = match b1 & 0x7F {
        126 => match rest {
            [a, b, ..] => (4, u16::from_be_bytes([*a, *b]) as usize),
            _ => return Ok(None),
        },
        127 => match rest.get(..8) {
            Some(bytes) => {
                let mut raw = [0u8; 8];
                raw.copy_from_slice(bytes);
                (10, usize::try_from(u64::from_be_bytes(raw)).unwrap_or(usize::MAX))
            }
            None => return Ok(None),
        },
        n => (2, n as usize),
    };
    if len > MAX_FRAME {
        bail!("frame of {len} bytes over the {MAX_FRAME}-byte limit");
    }
    Ok(Some((header, len, b0 & 0x0F, b0 & 0x80 != 0)))
}

/// A Sec-WebSocket-Key: 16 bytes, base64.
fn encode_key(seed: u64) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut raw = [0u8; 18];
    raw[..8].copy_from_slice(&seed.to_le_bytes());
    raw[8..16].copy_from_slice(&seed.rotate_left(29).wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    let mut key = String::with_capacity(24);
    for chunk in raw.chunks(3) {
        let n = (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8) | u32::from(chunk[2]);
        for shift in [18, 12, 6, 0] {
            key.push(ALPHABET[(n >> shift) as usize & 63] as char);
        }
    }
    // 16 bytes encode to 22 characters and "==".
    key.truncate(22);
    key.push_str("==");
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_headers_of_each_length() {
        assert_eq!(parse_header(&[0x81]).ok().flatten(), None);
        assert_eq!(parse_header(&[0x81, 5]).ok().flatten(), Some((2, 5, 1, true)));
        assert_eq!(parse_header(&[0x82, 126, 1, 0]).ok().flatten(), Some((4, 256, 2, true)));
        assert_eq!(parse_header(&[0x01, 126, 1]).ok().flatten(), None);
        let mut long = vec![0x81, 127];
        long.extend_from_slice(&70_000u64.to_be_bytes());
        assert_eq!(parse_header(&long).ok().flatten(), Some((10, 70_000, 1, true)));
        assert!(parse_header(&[0x81, 0x85]).is_err(), "masked server frame");
        let mut huge = vec![0x81, 127];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        assert!(parse_header(&huge).is_err(), "over the limit");
    }

    #[test]
    fn keys_are_24_base64_characters() {
        let key = encode_key(0x0123_4567_89AB_CDEF);
        assert_eq!(key.len(), 24);
        assert!(key.ends_with("=="));
        assert_ne!(key, encode_key(1));
    }

    #[tokio::test]
    async fn talks_to_a_websocket_server() {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut ws = tokio_tungstenite::accept_async(tcp).await.expect("upgrade");
            // Sent before the client asks for anything: must survive the handshake read.
            ws.send(Message::Text("hello".into())).await.expect("send");
            ws.send(Message::Ping(vec![7u8].into())).await.expect("ping");
            ws.send(Message::Text("x".repeat(70_000).into())).await.expect("send long");
            // The client answered the ping as soon as it read it, before its own text.
            let pong = ws.next().await.expect("frame").expect("ok");
            assert_eq!(pong, Message::Pong(vec![7u8].into()));
            let echo = ws.next().await.expect("frame").expect("ok");
            ws.send(echo).await.expect("echo");
            ws.close(None).await.expect("close");
        });
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let mut client = Client::handshake(tcp, &addr.to_string(), "/").await.expect("handshake");
        let first = client.next_frame().await.expect("read").expect("frame");
        assert_eq!(client.text(&first), "hello");
        let long = client.next_frame().await.expect("read").expect("frame");
        assert_eq!(client.text(&long).len(), 70_000);
        client.send_text("ping? no: echo").await.expect("send");
        let echo = client.next_frame().await.expect("read").expect("frame");
        assert_eq!(client.text(&echo), "ping? no: echo");
        let close = client.next_frame().await.expect("read").expect("frame");
        assert_eq!(close.opcode, Opcode::Close);
        server.await.expect("server");
    }
}

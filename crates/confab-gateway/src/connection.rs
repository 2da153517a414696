//! One WebSocket connection: a reader that decodes frames and feeds the engine, and a
//! writer that drains the connection's bounded queue, encodes, and writes; both run in
//! the connection's one task. A request's error becomes a frame or a close code by its
//! disposition in the error table ([`ConnHandle::fail`]); the connection closes on its
//! own only for what is no request's error: timeouts, a client that does not read, and
//! a broken WebSocket stream.

use crate::Gateway;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use confab_engine::metrics::{METRICS, OpenConnection, Protocol};
use confab_engine::{ConnHandle, Connection, Next, Outbound, OutboundReceiver};
use confab_proto::{Codec, PushFrame, WireFrame};
use confab_types::{ErrorCode, ProtocolError};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::future::Future;
use std::pin::pin;
use std::time::Duration;

/// How long to wait for the client's answer to our Close frame.
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(2);

/// Most queued frames written before one flush.
const WRITE_BATCH: usize = 64;

fn frame_to_message(frame: WireFrame) -> Message {
    match frame {
        WireFrame::Text(s) => Message::Text(Utf8Bytes::from(s)),
        WireFrame::Binary(b) => Message::Binary(Bytes::from(b)),
    }
}

/// A frame for `item`, written on connection `conn`.
fn encode(codec: Codec, conn: u64, item: Outbound) -> Message {
    match item {
        Outbound::Reply { serial, reply } => frame_to_message(codec.encode_reply(serial, &reply)),
        Outbound::Ping => Message::Ping(Bytes::new()),
        Outbound::Push { push: shared, to } => {
            // A live message's delivery latency ends here, if this delivery is timed:
            // its frame goes to the socket in this batch (flushed after the batch).
            if let Some(since) = shared.timed_since(conn) {
                METRICS.delivered_since(since);
            }
            let body = shared.encoded(codec.push_cache_slot(), |push| codec.encode_push_body(push));
            match codec.frame_push(&body, Some(&to)) {
                // Encoded from Strings, so always UTF-8.
                PushFrame::Text(bytes) => Message::Text(Utf8Bytes::try_from(bytes).unwrap_or_default()),
                PushFrame::Binary(bytes) => Message::Binary(bytes),
            }
        }
    }
}

/// What a connection needs from its handshake.
///
/// Captured boxed by the upgrade callback: axum's upgrade task keeps the callback's
/// captures for the connection's whole life, so it should capture one pointer, not
/// the gateway and the origin (~100 B per connection).
#[derive(Debug)]
pub struct Handshake {
    /// The gateway.
    pub gateway: Gateway,
    /// The negotiated codec.
    pub codec: Codec,
    /// The negotiated protocol version.
    pub version: u8,
    /// The `Origin` header, if any.
    pub origin: Option<String>,
    /// The client's address (see `routes::client_ip`), if the server knows its peer.
    pub source_ip: Option<std::net::IpAddr>,
}

/// Serves one upgraded socket until it closes.
///
/// Not an `async fn`: an async fn's future keeps its by-value arguments (here the
/// 368-byte socket and the handshake) for the connection's whole life. The future
/// returned here holds only what the connection uses.
pub fn serve_socket(handshake: Handshake, socket: WebSocket) -> impl Future<Output = ()> + Send {
    let Handshake { gateway, codec, version, origin, source_ip } = handshake;
    let (sink, stream) = socket.split();
    let (mut conn, rx) = gateway.engine.open_connection(origin, version);
    if let Some(ip) = source_ip {
        conn.handle.set_source_ip(ip);
    }
    conn.set_protocol(protocol_of(codec), version);
    let timeouts = Timeouts { login: gateway.config.login_timeout, read: gateway.config.read_timeout };
    let counted = METRICS.connection(protocol_of(codec), version);
    serve(Halves { conn, rx, sink, stream }, codec, timeouts, counted)
}

/// The metrics' name of a codec.
fn protocol_of(codec: Codec) -> Protocol {
    match codec {
        Codec::JsonV2 => Protocol::Json,
        Codec::Protobuf => Protocol::Protobuf,
        Codec::ProtobufBase64 => Protocol::Base64,
    }
}

/// The timeouts of the gateway's settings a connection needs.
struct Timeouts {
    login: Duration,
    read: Duration,
}

/// A connection's state, moved into its task in one piece.
struct Halves {
    conn: Connection,
    rx: OutboundReceiver,
    sink: SplitSink<WebSocket, Message>,
    stream: SplitStream<WebSocket>,
}

/// The connection's task. Not an `async fn`, and the halves are used in place: an
/// async fn (or a `let` that moves them) keeps a second copy of them in the future
/// (112 B per connection).
#[allow(clippy::manual_async_fn, reason = "an async fn would store the halves twice")]
fn serve(
    mut halves: Halves,
    codec: Codec,
    timeouts: Timeouts,
    counted: OpenConnection,
) -> impl Future<Output = ()> + Send {
    async move {
        // Counted in `confab_connections` until the task ends.
        let _counted = counted;
        let (conn, rx, sink, stream) =
            (&mut halves.conn, &mut halves.rx, &mut halves.sink, &mut halves.stream);
        let handle = conn.handle.clone();
        // The writer is polled inside this task, next to the reader, rather than spawned:
        // a task of its own costs every idle connection ~0.5 KB (a 128-byte-aligned cell).
        // Each wake-up polls both; the idle one returns at once. The writer goes first:
        // a reader waiting for room in the queue (`ConnHandle::room_to_read`) then sees
        // what the writer drained in the same wake-up.
        let mut writer = pin!(write_loop(sink, rx, codec));
        let mut writer_done = false;
        let left = {
            let mut reader = pin!(read_loop(conn, stream, &handle, codec, &timeouts));
            std::future::poll_fn(|cx| {
                if !writer_done {
                    writer_done = writer.as_mut().poll(cx).is_ready();
                }
                reader.as_mut().poll(cx)
            })
            .await
        };
        // The sessions end here, logged with the client's close code when it left.
        match left {
            Some(ClientLeft::Closed(code)) => halves.conn.end(code, "closed by the client"),
            Some(ClientLeft::Lost) => halves.conn.end(1006, "connection lost"),
            None => drop(halves.conn),
        }
        if handle.close_reason().is_some() {
            // Finish the close handshake: wait for our Close frame to be written, then for
            // the client's answer. Dropping the TCP connection at once makes some clients
            // (ws@0.8 in 2.4.0) see 1006 instead of our code.
            if !writer_done {
                let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
            }
            let _ = tokio::time::timeout(CLOSE_HANDSHAKE, async {
                while let Some(Ok(message)) = stream.next().await {
                    if matches!(message, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
    }
}

/// Drains the queue to the socket, a batch per flush, until a close was requested (and
/// its Close frame written). A failed write closes the queue; the loop still waits for
/// the close request, so that it wakes this task for the reader to see it.
async fn write_loop(sink: &mut SplitSink<WebSocket, Message>, rx: &mut OutboundReceiver, codec: Codec) {
    let mut failed = false;
    loop {
        match rx.recv().await {
            Next::Close(reason) => {
                if !failed {
                    let code = reason.code;
                    let frame = CloseFrame { code: code.number(), reason: Utf8Bytes::from(code.reason()) };
                    // Boxed: this runs once per connection, and inline its timer would
                    // sit in every idle connection's task.
                    let close = sink.send(Message::Close(Some(frame)));
                    let _ = Box::pin(tokio::time::timeout(Duration::from_secs(5), close)).await;
                }
                return;
            }
            Next::Item(item) => {
                if !failed && write_batch(sink, rx, codec, item).await.is_err() {
                    failed = true;
                    rx.close();
                }
            }
        }
    }
}

/// Writes `first` and up to `WRITE_BATCH - 1` more queued items, then flushes once.
async fn write_batch(
    sink: &mut SplitSink<WebSocket, Message>,
    rx: &mut OutboundReceiver,
    codec: Codec,
    first: Outbound,
) -> Result<(), axum::Error> {
    sink.feed(encode(codec, rx.conn_id(), first)).await?;
    for _ in 1..WRITE_BATCH {
        let Some(item) = rx.try_recv() else { break };
        sink.feed(encode(codec, rx.conn_id(), item)).await?;
    }
    sink.flush().await
}

/// A request handled at once (whether the connection stays open), or the future that
/// handles it.
enum Step<F> {
    Done(bool),
    Wait(std::pin::Pin<Box<F>>),
}

/// How the client ended its connection.
enum ClientLeft {
    /// It sent a Close frame with this code (1005: with none).
    Closed(u16),
    /// The stream ended without a Close frame.
    Lost,
}

/// Reads and handles requests until the client leaves (returned), a close is requested,
/// or the connection times out.
async fn read_loop(
    conn: &mut Connection,
    stream: &mut SplitStream<WebSocket>,
    handle: &ConnHandle,
    codec: Codec,
    timeouts: &Timeouts,
) -> Option<ClientLeft> {
    // Silence for half the read timeout earns a ping; silence for the whole of it (no
    // pong either) closes the connection.
    let mut pinged = false;
    // Without a session the login timeout is a deadline, not an idle timer: frames that
    // open no session (heartbeats, bad requests) do not keep the connection. A connection
    // whose sessions all ended gets a fresh deadline.
    let mut login_deadline = tokio::time::Instant::now() + timeouts.login;
    let mut had_session = false;
    loop {
        // Replies the client has not read fill its queue: read no further request until
        // the writer has drained it below the budget (TCP then slows a client that
        // pipelines requests without reading the answers). No progress for the whole
        // read timeout: the client reads nothing at all.
        if !handle.may_read() && tokio::time::timeout(timeouts.read, handle.room_to_read()).await.is_err() {
            handle.close(ProtocolError::new(ErrorCode::SlowConsumer, "replies not read in time"));
            return None;
        }
        let logged_in = conn.has_session();
        if had_session && !logged_in {
            login_deadline = tokio::time::Instant::now() + timeouts.login;
        }
        had_session = logged_in;
        let deadline =
            if logged_in { tokio::time::Instant::now() + timeouts.read / 2 } else { login_deadline };
        // A close request wakes this task, even while its writer is stuck on a client
        // that stopped reading, and the reader stops at once.
        let close_requested = std::future::poll_fn(|cx| handle.poll_close_requested(cx));
        // A timer per wait, not one kept for the connection's life: kept, it sat in
        // every idle connection's task (+0.13 KB each, measured), for ~3% of a room
        // member's CPU per delivery.
        let next = tokio::select! {
            biased;
            () = close_requested => return None,
            next = tokio::time::timeout_at(deadline, stream.next()) => next.ok(),
        };
        if next.is_none() {
            // At most once per half read timeout of silence: a connection that received
            // pushes frees its queue's buffer while it is quiet.
            handle.release_idle_buffer();
        }
        let message = match next {
            None if logged_in && !pinged => {
                pinged = true;
                handle.send(Outbound::Ping);
                continue;
            }
            None => {
                let code = if logged_in { ErrorCode::ReadTimeout } else { ErrorCode::LoginTimeout };
                handle.close(ProtocolError::new(code, "nothing received in time"));
                return None;
            }
            Some(None) => return Some(ClientLeft::Lost),
            Some(Some(Err(e))) => {
                tracing::debug!(error = %e, "websocket read failed");
                if peer_gone(&e) {
                    return Some(ClientLeft::Lost);
                }
                handle.close(read_error(&e));
                return None;
            }
            Some(Some(Ok(m))) => m,
        };
        pinged = false;
        // Decoded in a block of its own, so that neither the frame nor the decoded
        // request (hundreds of bytes) is kept across the await in every connection's task.
        let step = {
            // Moved in, so that the frame is not kept across the await below.
            let message = message;
            // Decoded where the frame lies, without a copy.
            let decoded = match &message {
                // A member's ack (one per message it receives in a busy room): read in
                // place and handled at once.
                Message::Text(t) if let Some(ack) = codec.scan_ack(t.as_str()) => {
                    if conn.ack_now(ack) {
                        continue;
                    }
                    return None;
                }
                Message::Text(t) => codec.decode_text(t.as_str()),
                Message::Binary(b) => codec.decode_binary(b),
                Message::Ping(_) | Message::Pong(_) => continue,
                Message::Close(frame) => {
                    return Some(ClientLeft::Closed(frame.as_ref().map_or(1005, |f| f.code)));
                }
            };
            match decoded {
                Ok(inbound) => match conn.handle_now(inbound) {
                    // A request that never waits (a heartbeat, a protobuf ack) is handled
                    // here and now.
                    Ok(open) => Step::Done(open),
                    // Boxed: the engine's request future is large, and inline it would
                    // sit in every idle connection's task (~3 KB each).
                    Err(inbound) => Step::Wait(Box::pin(conn.handle(inbound))),
                },
                Err(e) => Step::Done(handle.fail(e.serial, e.error)),
            }
        };
        // The engine answers (a reply, an error frame, or a close by the error table);
        // this loop only stops reading when the connection is closing.
        let open = match step {
            Step::Done(open) => open,
            Step::Wait(request) => request.await,
        };
        if !open {
            return None;
        }
    }
}

/// Whether a failed read means the client is gone (the connection reset or ended
/// without a Close frame) rather than that it sent something invalid: nobody is left to
/// read a Close frame, and its sessions end as lost (1006).
fn peer_gone(e: &axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error as WsError;
    use tokio_tungstenite::tungstenite::error::ProtocolError as WsProtocolError;
    let source = std::error::Error::source(e).and_then(|s| s.downcast_ref::<WsError>());
    matches!(
        source,
        Some(
            WsError::Io(_)
                | WsError::ConnectionClosed
                | WsError::AlreadyClosed
                | WsError::Protocol(WsProtocolError::ResetWithoutClosingHandshake)
        )
    )
}

/// The close a failed WebSocket read earns: an oversized frame or message closes with
/// 4109, a text frame that is not UTF-8 with 1007 and any other protocol violation with
/// 1002 (RFC 6455 §7.4.1). I/O errors (the peer is gone) close with 1002 too; nobody is
/// left to read it.
fn read_error(e: &axum::Error) -> ProtocolError {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let source = std::error::Error::source(e).and_then(|s| s.downcast_ref::<WsError>());
    match source {
        Some(WsError::Capacity(_) | WsError::WriteBufferFull(_)) => {
            ProtocolError::new(ErrorCode::FrameTooLong, "frame over the size limit")
        }
        Some(WsError::Utf8(_)) => {
            ProtocolError::new(ErrorCode::InvalidFramePayload, "text frame is not valid UTF-8")
        }
        _ => ProtocolError::new(ErrorCode::ProtocolViolation, "invalid WebSocket frame"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::Error as WsError;
    use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError as WsProtocolError};

    #[test]
    fn read_errors_map_to_their_close_codes() {
        let code = |e: WsError| read_error(&axum::Error::new(e)).code;
        let too_long = CapacityError::MessageTooLong { size: 10, max_size: 5 };
        assert_eq!(code(WsError::Capacity(too_long)), ErrorCode::FrameTooLong);
        assert_eq!(code(WsError::Utf8("bad".into())), ErrorCode::InvalidFramePayload);
        assert_eq!(
            code(WsError::Protocol(WsProtocolError::NonZeroReservedBits)),
            ErrorCode::ProtocolViolation
        );
        assert_eq!(code(WsError::AttackAttempt), ErrorCode::ProtocolViolation);
        // An error that is not tungstenite's.
        let other = read_error(&axum::Error::new(std::io::Error::other("gone")));
        assert_eq!(other.code, ErrorCode::ProtocolViolation);
    }

    #[test]
    fn a_reset_or_an_end_without_close_means_the_client_is_gone() {
        let gone = |e: WsError| peer_gone(&axum::Error::new(e));
        assert!(gone(WsError::Protocol(WsProtocolError::ResetWithoutClosingHandshake)));
        assert!(gone(WsError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset))));
        assert!(gone(WsError::ConnectionClosed));
        assert!(!gone(WsError::Protocol(WsProtocolError::NonZeroReservedBits)));
        assert!(!gone(WsError::Utf8("bad".into())));
    }
}

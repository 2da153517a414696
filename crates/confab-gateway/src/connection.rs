//! One WebSocket connection: a reader (this task) that decodes frames and feeds the
//! engine, and a writer task that drains the connection's bounded queue, encodes, and
//! writes. Errors become frames or close codes here, by their disposition.

use crate::Gateway;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use confab_engine::Outbound;
use confab_proto::{Codec, PushFrame, WireFrame};
use confab_types::{Disposition, ErrorCode, ProtocolError, Reply};
use futures_util::{SinkExt, StreamExt};
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

fn encode(codec: Codec, item: Outbound) -> Message {
    match item {
        Outbound::Reply { serial, reply } => frame_to_message(codec.encode_reply(serial, &reply)),
        Outbound::Ping => Message::Ping(Bytes::new()),
        Outbound::Push { push: shared, to } => {
            let body = shared.encoded(codec.push_cache_slot(), |push| codec.encode_push_body(push));
            match codec.frame_push(&body, Some(&to)) {
                // Encoded from Strings, so always UTF-8.
                PushFrame::Text(bytes) => Message::Text(Utf8Bytes::try_from(bytes).unwrap_or_default()),
                PushFrame::Binary(bytes) => Message::Binary(bytes),
            }
        }
    }
}

/// Serves one upgraded socket until it closes.
pub async fn serve_socket(
    gateway: Gateway,
    socket: WebSocket,
    codec: Codec,
    version: u8,
    origin: Option<String>,
) {
    let (mut sink, mut stream) = socket.split();
    let (mut conn, mut rx) = gateway.engine.open_connection(origin, version);
    let handle = conn.handle.clone();

    let writer_handle = handle.clone();
    let writer = tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                reason = writer_handle.close_requested() => {
                    let frame = CloseFrame { code: reason.code.number(), reason: Utf8Bytes::from(reason.code.reason()) };
                    let _ = tokio::time::timeout(Duration::from_secs(5), sink.send(Message::Close(Some(frame)))).await;
                    break;
                }
                item = rx.recv() => {
                    if sink.feed(encode(codec, item)).await.is_err() {
                        break;
                    }
                    let mut failed = false;
                    for _ in 1..WRITE_BATCH {
                        match rx.try_recv() {
                            Some(item) => if sink.feed(encode(codec, item)).await.is_err() { failed = true; break; },
                            None => break,
                        }
                    }
                    if failed || sink.flush().await.is_err() {
                        break;
                    }
                }
            }
        }
    });

    // Silence for half the read timeout earns a ping; silence for the whole of it (no
    // pong either) closes the connection.
    let mut pinged = false;
    loop {
        let logged_in = conn.has_session();
        let timeout = if logged_in { gateway.config.read_timeout / 2 } else { gateway.config.login_timeout };
        let next = tokio::select! {
            _ = handle.close_requested() => break,
            next = tokio::time::timeout(timeout, stream.next()) => next,
        };
        let message = match next {
            Err(_) if logged_in && !pinged => {
                pinged = true;
                handle.send(Outbound::Ping);
                continue;
            }
            Err(_) => {
                let code = if logged_in { ErrorCode::ReadTimeout } else { ErrorCode::LoginTimeout };
                handle.close(ProtocolError::new(code, "nothing received in time"));
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                // tungstenite reports oversized frames (and protocol violations) here.
                tracing::debug!(error = %e, "websocket read failed");
                handle.close(ProtocolError::new(
                    ErrorCode::FrameTooLong,
                    "frame over the size limit or invalid",
                ));
                break;
            }
            Ok(Some(Ok(m))) => m,
        };
        pinged = false;
        let frame = match message {
            Message::Text(t) => WireFrame::Text(t.as_str().to_owned()),
            Message::Binary(b) => WireFrame::Binary(b.to_vec()),
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => break,
        };
        let (serial, result) = match codec.decode(&frame) {
            Err(e) => (e.serial, Err(e.error)),
            Ok(inbound) => {
                let serial = inbound.serial;
                // Boxed: the engine's request future is large, and inline it would sit
                // in every idle connection's task (~3 KB each).
                (serial, Box::pin(conn.handle(inbound)).await)
            }
        };
        match result {
            Ok(Some(reply)) => {
                handle.reply(serial, reply);
            }
            Ok(None) => {}
            Err(error) => match error.code.disposition() {
                Disposition::Close => {
                    handle.close(error);
                    break;
                }
                Disposition::Reply => {
                    handle.reply(serial, Reply::Error(error));
                }
            },
        }
    }
    drop(conn);
    if handle.close_reason().is_some() {
        // Finish the close handshake: wait for our Close frame to be written, then for
        // the client's answer. Dropping the TCP connection at once makes some clients
        // (ws@0.8 in 2.4.0) see 1006 instead of our code.
        let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE, async {
            while let Some(Ok(message)) = stream.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    } else {
        writer.abort();
    }
}

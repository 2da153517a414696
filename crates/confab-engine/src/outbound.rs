//! What the engine hands to a connection: replies and pushes on a bounded queue, and
//! a close request when the connection must end.

use bytes::Bytes;
use confab_types::{ErrorCode, ProtocolError, Push, Reply};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::{Notify, mpsc};

/// Per-codec slots in a [`SharedPush`] cache; at least the number of codecs.
pub const CODEC_SLOTS: usize = 4;

/// A push shared by every recipient, encoded at most once per codec: the first
/// connection that writes it encodes it, the others reuse the bytes.
#[derive(Debug)]
pub struct SharedPush {
    /// The push.
    pub push: Push,
    cache: [OnceLock<Bytes>; CODEC_SLOTS],
}

impl SharedPush {
    /// Wraps a push for sharing.
    pub fn new(push: Push) -> Arc<SharedPush> {
        Arc::new(SharedPush { push, cache: Default::default() })
    }

    /// The encoding for codec `slot`, computed on first use.
    pub fn encoded(&self, slot: usize, encode: impl FnOnce(&Push) -> Bytes) -> Bytes {
        match self.cache.get(slot) {
            Some(cell) => cell.get_or_init(|| encode(&self.push)).clone(),
            None => encode(&self.push),
        }
    }
}

/// One item on a connection's outbound queue.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// The answer to a request (boxed: queue slots stay small, and an idle
    /// connection's queue costs little memory).
    Reply {
        /// The request's serial.
        serial: Option<i32>,
        /// The answer.
        reply: Box<Reply>,
    },
    /// A server push for one session of the connection.
    Push {
        /// The push, shared by all recipients.
        push: Arc<SharedPush>,
        /// The recipient's client id (codecs that address pushes add it per session).
        to: Arc<str>,
    },
    /// A transport-level keep-alive probe (a WebSocket ping). 2.4.0 stops sending its
    /// own heartbeats after a reconnect but answers pings.
    Ping,
}

/// The engine's handle on one network connection.
#[derive(Debug)]
pub struct ConnHandle {
    /// Unique per process.
    pub id: u64,
    /// The `Origin` header of the handshake, if any.
    pub origin: Option<String>,
    tx: mpsc::Sender<Outbound>,
    close_reason: Mutex<Option<ProtocolError>>,
    close_notify: Notify,
}

impl ConnHandle {
    /// A handle with a queue of `capacity` items; the receiver goes to the writer.
    pub fn new(
        id: u64,
        origin: Option<String>,
        capacity: usize,
    ) -> (Arc<ConnHandle>, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let handle =
            ConnHandle { id, origin, tx, close_reason: Mutex::new(None), close_notify: Notify::new() };
        (Arc::new(handle), rx)
    }

    /// Queues an item without waiting. A full queue means the client does not read
    /// fast enough: the connection is closed rather than buffered without limit; the
    /// client reconnects and resyncs from its cursors.
    pub fn send(&self, item: Outbound) -> bool {
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close(ProtocolError::new(ErrorCode::SlowConsumer, "outbound queue full"));
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// For a background producer (the backlog replay): waits until at least half the
    /// queue is free and returns how many items it may queue now while leaving a quarter
    /// for live traffic. `None` once the connection is gone.
    pub async fn wait_for_room(&self) -> Option<usize> {
        let max = self.tx.max_capacity();
        loop {
            if self.is_closed() {
                return None;
            }
            let free = self.tx.capacity();
            if free * 2 >= max {
                return Some(free.saturating_sub(max / 4).max(1));
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    /// Queues a reply.
    pub fn reply(&self, serial: Option<i32>, reply: Reply) -> bool {
        self.send(Outbound::Reply { serial, reply: Box::new(reply) })
    }

    /// Asks the connection to close with this error's code; the first reason wins.
    pub fn close(&self, reason: ProtocolError) {
        let mut slot = self.close_reason.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(reason);
            self.close_notify.notify_one();
        }
    }

    /// Resolves once a close was requested, with its reason.
    pub async fn close_requested(&self) -> ProtocolError {
        loop {
            if let Some(reason) = self.close_reason() {
                return reason;
            }
            self.close_notify.notified().await;
        }
    }

    /// The close reason, if a close was requested.
    pub fn close_reason(&self) -> Option<ProtocolError> {
        self.close_reason.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the writer is gone or a close was requested.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed() || self.close_reason().is_some()
    }
}

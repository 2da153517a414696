//! What the engine hands to a connection: replies and pushes on a bounded queue, and
//! a close request when the connection must end.

use bytes::Bytes;
use confab_types::{ErrorCode, ProtocolError, Push, Reply};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use tokio::sync::Notify;

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

/// The items a connection's writer has not taken yet, and the close request.
#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Outbound>,
    /// The writer is gone: nothing queued would ever be written.
    receiver_gone: bool,
    /// Why the connection must close; the first reason wins.
    close_reason: Option<ProtocolError>,
}

/// The engine's handle on one network connection.
///
/// The outbound queue is a `VecDeque` under a mutex rather than a tokio channel: a
/// bounded tokio channel allocates its state (512 B, cache-padded) and a first block of
/// 32 slots (1 KB) up front, ~1.5 KB for every idle connection; this queue allocates
/// nothing until an item is queued and frees its buffer whenever the writer drains it.
#[derive(Debug)]
pub struct ConnHandle {
    /// Unique per process.
    pub id: u64,
    /// The `Origin` header of the handshake, if any.
    pub origin: Option<String>,
    capacity: usize,
    queue: Mutex<Queue>,
    /// Wakes the receiver when an item lands in an empty queue or a close is requested
    /// (a stored permit covers one that happens before it waits). One receiver, one
    /// waiter: whoever else must see a close checks [`ConnHandle::close_requested`] when
    /// the receiver's task wakes.
    wake: Notify,
}

/// What the writer takes from the queue next.
#[derive(Debug)]
pub enum Next {
    /// A close was requested (it comes before any item still queued).
    Close(ProtocolError),
    /// The oldest queued item.
    Item(Outbound),
}

/// The writer's end of a connection's outbound queue: a single consumer, items in the
/// order they were queued. Dropping it makes every later [`ConnHandle::send`] fail.
#[derive(Debug)]
pub struct OutboundReceiver {
    handle: Arc<ConnHandle>,
}

impl OutboundReceiver {
    /// Waits for a close request or the next item.
    pub async fn recv(&mut self) -> Next {
        loop {
            let wake = self.handle.wake.notified();
            {
                let queue = &mut *self.handle.queue();
                if let Some(reason) = &queue.close_reason {
                    return Next::Close(reason.clone());
                }
                if let Some(item) = pop(queue) {
                    return Next::Item(item);
                }
            }
            wake.await;
        }
    }

    /// The next item, if one is queued.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        pop(&mut self.handle.queue())
    }

    /// Stops receiving (the writer can write no more): queued items are dropped and
    /// later sends fail, as when the receiver is dropped. [`Self::recv`] still reports
    /// a close request.
    pub fn close(&mut self) {
        let mut queue = self.handle.queue();
        queue.receiver_gone = true;
        queue.items = VecDeque::new();
    }
}

impl Drop for OutboundReceiver {
    fn drop(&mut self) {
        self.close();
    }
}

/// Takes the oldest item. Emptying the queue frees its buffer, so an idle connection
/// holds none (one allocation per burst for a busy one).
fn pop(queue: &mut Queue) -> Option<Outbound> {
    let item = queue.items.pop_front();
    if queue.items.is_empty() && queue.items.capacity() > 0 {
        queue.items = VecDeque::new();
    }
    item
}

impl ConnHandle {
    /// A handle with a queue of at most `capacity` items; the receiver goes to the writer.
    pub fn new(id: u64, origin: Option<String>, capacity: usize) -> (Arc<ConnHandle>, OutboundReceiver) {
        let handle = Arc::new(ConnHandle {
            id,
            origin,
            capacity: capacity.max(1),
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
        });
        (handle.clone(), OutboundReceiver { handle })
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an item without waiting. A full queue means the client does not read
    /// fast enough: the connection is closed rather than buffered without limit; the
    /// client reconnects and resyncs from its cursors.
    pub fn send(&self, item: Outbound) -> bool {
        let mut queue = self.queue();
        if queue.receiver_gone {
            return false;
        }
        if queue.items.len() >= self.capacity {
            drop(queue);
            self.close(ProtocolError::new(ErrorCode::SlowConsumer, "outbound queue full"));
            return false;
        }
        let was_empty = queue.items.is_empty();
        queue.items.push_back(item);
        drop(queue);
        // The writer drains the queue before it waits, so only the first item of a
        // burst needs to wake it.
        if was_empty {
            self.wake.notify_one();
        }
        true
    }

    /// For a background producer (the backlog replay): waits until at least half the
    /// queue is free and returns how many items it may queue now while leaving a quarter
    /// for live traffic. `None` once the connection is gone.
    pub async fn wait_for_room(&self) -> Option<usize> {
        let max = self.capacity;
        loop {
            if self.is_closed() {
                return None;
            }
            let free = max.saturating_sub(self.queue().items.len());
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

    /// Asks the connection to close with this error's code; the first reason wins. The
    /// receiver's [`OutboundReceiver::recv`] returns it before any queued item.
    pub fn close(&self, reason: ProtocolError) {
        let mut queue = self.queue();
        if queue.close_reason.is_none() {
            queue.close_reason = Some(reason);
            drop(queue);
            self.wake.notify_one();
        }
    }

    /// Whether a close was requested.
    pub fn close_requested(&self) -> bool {
        self.queue().close_reason.is_some()
    }

    /// The close reason, if a close was requested.
    pub fn close_reason(&self) -> Option<ProtocolError> {
        self.queue().close_reason.clone()
    }

    /// Whether the writer is gone or a close was requested.
    pub fn is_closed(&self) -> bool {
        let queue = self.queue();
        queue.receiver_gone || queue.close_reason.is_some()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn serial(next: Next) -> Option<i32> {
        match next {
            Next::Item(Outbound::Reply { serial, .. }) => serial,
            _ => None,
        }
    }

    #[tokio::test]
    async fn fifo_bounded_and_a_full_queue_closes_as_slow_consumer() {
        let (handle, mut rx) = ConnHandle::new(1, None, 3);
        for i in 0..3 {
            assert!(handle.reply(Some(i), Reply::Heartbeat));
        }
        assert!(!handle.is_closed());
        assert!(!handle.reply(Some(3), Reply::Heartbeat));
        assert_eq!(handle.close_reason().unwrap().code, ErrorCode::SlowConsumer);
        // The close comes first; the queued items stay in order behind it.
        assert!(matches!(rx.recv().await, Next::Close(e) if e.code == ErrorCode::SlowConsumer));
        for i in 0..3 {
            assert_eq!(serial(Next::Item(rx.try_recv().unwrap())), Some(i));
        }
        assert!(rx.try_recv().is_none());
    }

    #[tokio::test]
    async fn the_writer_is_woken_and_the_drained_queue_holds_no_buffer() {
        let (handle, mut rx) = ConnHandle::new(1, None, 8);
        let writer = tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..4 {
                got.push(serial(rx.recv().await));
            }
            (got, rx)
        });
        tokio::task::yield_now().await;
        for i in 0..4 {
            assert!(handle.reply(Some(i), Reply::Heartbeat));
            tokio::task::yield_now().await;
        }
        let (got, rx) = writer.await.unwrap();
        assert_eq!(got, vec![Some(0), Some(1), Some(2), Some(3)]);
        assert_eq!(handle.queue().items.capacity(), 0);
        drop(rx);
        assert!(handle.is_closed());
        assert!(!handle.reply(Some(9), Reply::Heartbeat));
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_for_a_close_even_after_it_closed_the_queue() {
        let (handle, mut rx) = ConnHandle::new(1, None, 8);
        rx.close();
        assert!(!handle.reply(Some(1), Reply::Heartbeat));
        let waiter = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        assert!(!handle.close_requested());
        handle.close(ProtocolError::new(ErrorCode::ReadTimeout, "t"));
        handle.close(ProtocolError::new(ErrorCode::SlowConsumer, "later reasons lose"));
        assert!(handle.close_requested());
        assert!(matches!(waiter.await.unwrap(), Next::Close(e) if e.code == ErrorCode::ReadTimeout));
    }
}

//! What the engine hands to a connection: replies and pushes on a queue bounded in
//! bytes, and a close request when the connection must end.

use bytes::Bytes;
use confab_types::{Disposition, ErrorCode, ProtocolError, Push, Reply};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::Poll;
use std::time::Instant;
use tokio::sync::Notify;

/// Per-codec slots in a [`SharedPush`] cache; at least the number of codecs.
pub const CODEC_SLOTS: usize = 4;

/// What a queued WebSocket ping counts towards the byte budget.
const PING_BYTES: usize = 16;

/// A push shared by every recipient, encoded at most once per codec: the first
/// connection that writes it encodes it, the others reuse the bytes.
#[derive(Debug)]
pub struct SharedPush {
    /// The push.
    pub push: Push,
    /// [`Push::approx_bytes`], computed once for every recipient.
    bytes: usize,
    cache: [OnceLock<Bytes>; CODEC_SLOTS],
    /// A live message's delivery timing ([`SharedPush::live`]).
    live: Option<LiveStamp>,
}

/// When a live message's fan-out began, and which of its deliveries are timed.
#[derive(Debug, Clone, Copy)]
struct LiveStamp {
    since: Instant,
    /// Deliveries to connections whose number is `phase` modulo `stride` are timed.
    stride: u32,
    phase: u32,
}

/// A live message to at most this many recipients has every delivery timed; a larger
/// fan-out has about this many timed (`confab_delivery_seconds` is sampled there).
pub const TIMED_DELIVERIES: usize = 64;

/// Rotates which recipients of a large fan-out are timed, message by message.
static NEXT_PHASE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl SharedPush {
    /// Wraps a push for sharing.
    pub fn new(push: Push) -> Arc<SharedPush> {
        let bytes = push.approx_bytes();
        Arc::new(SharedPush { push, bytes, cache: Default::default(), live: None })
    }

    /// Wraps a live message for about `recipients` sessions, stamped now: the writers
    /// of the recipients' connections observe the time from here to their write in the
    /// delivery latency histogram. For a stored message "now" is after its commit (the
    /// fan-out), for a transient one its acceptance, for one from another node the
    /// arrival of its event.
    ///
    /// Up to [`TIMED_DELIVERIES`] recipients every delivery is timed. Beyond, one
    /// connection in `stride` is (`stride` = recipients / [`TIMED_DELIVERIES`], rounded
    /// up), by connection number, starting at a phase that changes with every message:
    /// each connection is timed as often as any other, and a 1,000-member room pays for
    /// about 64 clock reads per message rather than 1,000.
    pub fn live(push: Push, recipients: usize) -> Arc<SharedPush> {
        let bytes = push.approx_bytes();
        let stride = u32::try_from(recipients.div_ceil(TIMED_DELIVERIES)).unwrap_or(u32::MAX).max(1);
        let phase = if stride == 1 {
            0
        } else {
            NEXT_PHASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % stride
        };
        let live = Some(LiveStamp { since: Instant::now(), stride, phase });
        Arc::new(SharedPush { push, bytes, cache: Default::default(), live })
    }

    /// When the live message's fan-out began, if its delivery on connection `conn`
    /// ([`ConnHandle::id`]) is one of those timed; `None` for other pushes (offline
    /// replays, receipts, patches, membership changes).
    pub fn timed_since(&self, conn: u64) -> Option<Instant> {
        let live = self.live?;
        (live.stride == 1 || conn % u64::from(live.stride) == u64::from(live.phase)).then_some(live.since)
    }

    /// The push's estimated encoded size ([`Push::approx_bytes`]).
    pub fn approx_bytes(&self) -> usize {
        self.bytes
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

impl Outbound {
    /// What the item counts towards the connection's byte budget: an estimate of its
    /// encoded size, computed without encoding it.
    pub fn approx_bytes(&self) -> usize {
        match self {
            Outbound::Reply { reply, .. } => reply.approx_bytes(),
            Outbound::Push { push, to } => push.approx_bytes() + to.len(),
            Outbound::Ping => PING_BYTES,
        }
    }
}

/// The items a connection's writer has not taken yet, and the close request.
#[derive(Debug, Default)]
struct Queue {
    /// Each item with what it counts towards the budget.
    items: VecDeque<(usize, Outbound)>,
    /// The sum of the queued items' counts.
    bytes: usize,
    /// Bytes held for requests in flight (see [`ConnHandle::hold`]).
    held: usize,
    /// The writer is gone: nothing queued would ever be written.
    receiver_gone: bool,
    /// Why the connection must close; the first reason wins.
    close_reason: Option<ProtocolError>,
}

/// The engine's handle on one network connection.
///
/// The queue is bounded in bytes (estimated encoded sizes), not items: a history page
/// of large messages weighs as much as a thousand acks. Over the budget a push closes
/// the connection as a slow consumer; replies never do: the reader waits for room
/// before it reads the next request ([`ConnHandle::room_to_read`]), so replies are only
/// queued below the budget and one connection holds at most the budget plus one reply.
///
/// The outbound queue is a `VecDeque` under a mutex rather than a tokio channel: a
/// bounded tokio channel allocates its state (512 B, cache-padded) and a first block of
/// 32 slots (1 KB) up front, ~1.5 KB for every idle connection; this queue allocates
/// nothing until an item is queued and frees its buffer when the writer drains it with
/// a reply, or when the connection falls quiet after pushes ([`ConnHandle::release_idle_buffer`]).
#[derive(Debug)]
pub struct ConnHandle {
    /// Unique per process.
    pub id: u64,
    /// The `Origin` header of the handshake, if any.
    pub origin: Option<String>,
    /// The client's address, as the gateway resolved it (see
    /// [`ConnHandle::set_source_ip`]): the hooks' `sourceIP`.
    source_ip: std::sync::OnceLock<std::net::IpAddr>,
    /// The byte budget.
    budget: usize,
    queue: Mutex<Queue>,
    /// Wakes the receiver when an item lands in an empty queue or a close is requested
    /// (a stored permit covers one that happens before it waits). One receiver, one
    /// waiter: whoever else must see a close, or room in the queue, checks
    /// [`ConnHandle::close_requested`] or [`ConnHandle::room_to_read`] when the
    /// receiver's task wakes.
    wake: Notify,
    /// Wakes the connection's task when a close is requested: its writer may be stuck
    /// writing to a client that stopped reading, and its reader waiting for a frame
    /// that never comes, yet the sessions must end now (other nodes see them online
    /// until they do).
    closing: atomic_waker::AtomicWaker,
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
    /// The number of the connection whose queue this is ([`ConnHandle::id`]).
    pub fn conn_id(&self) -> u64 {
        self.handle.id
    }

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
        queue.bytes = 0;
    }
}

impl Drop for OutboundReceiver {
    fn drop(&mut self) {
        self.close();
    }
}

/// Takes the oldest item. Emptying the queue with a reply frees its buffer, so an idle
/// connection holds none; emptying it with a push keeps the buffer for the next one
/// (a room member gets one push at a time: freeing would cost an allocation and a free
/// per delivery) until the connection falls quiet ([`ConnHandle::release_idle_buffer`]).
fn pop(queue: &mut Queue) -> Option<Outbound> {
    let (bytes, item) = queue.items.pop_front()?;
    queue.bytes = queue.bytes.saturating_sub(bytes);
    if queue.items.is_empty() && queue.items.capacity() > 0 && !matches!(item, Outbound::Push { .. }) {
        queue.items = VecDeque::new();
    }
    Some(item)
}

impl ConnHandle {
    /// A handle with a queue of `budget` bytes (see [`Outbound::approx_bytes`]); the
    /// receiver goes to the writer.
    pub fn new(id: u64, origin: Option<String>, budget: usize) -> (Arc<ConnHandle>, OutboundReceiver) {
        let handle = Arc::new(ConnHandle {
            id,
            origin,
            source_ip: std::sync::OnceLock::new(),
            budget: budget.max(1),
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            closing: atomic_waker::AtomicWaker::new(),
        });
        (handle.clone(), OutboundReceiver { handle })
    }

    /// Records the client's address (the TCP peer, or the client a trusted proxy
    /// names); the first call wins. The app's hooks report it as `sourceIP`.
    pub fn set_source_ip(&self, ip: std::net::IpAddr) {
        let _ = self.source_ip.set(ip);
    }

    /// The client's address, when the gateway recorded one (not for the app's own
    /// backend acting through the REST API).
    pub fn source_ip(&self) -> Option<std::net::IpAddr> {
        self.source_ip.get().copied()
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an item without waiting. A push that would take a non-empty queue over
    /// the byte budget means the client does not read fast enough: the connection is
    /// closed rather than buffered without limit; the client reconnects and resyncs
    /// from its cursors. Replies and pings are always queued: the reader bounds them by
    /// not reading requests while the queue is full ([`ConnHandle::room_to_read`]).
    pub fn send(&self, item: Outbound) -> bool {
        self.send_releasing(item, 0)
    }

    /// [`ConnHandle::send`], releasing `held` bytes of [`ConnHandle::hold`] under the
    /// same lock.
    fn send_releasing(&self, item: Outbound, held: usize) -> bool {
        let bytes = item.approx_bytes();
        let mut queue = self.queue();
        queue.held = queue.held.saturating_sub(held);
        if queue.receiver_gone {
            return false;
        }
        if matches!(item, Outbound::Push { .. })
            && queue.bytes > 0
            && queue.bytes.saturating_add(bytes) > self.budget
        {
            drop(queue);
            self.close(ProtocolError::new(ErrorCode::SlowConsumer, "outbound queue over its byte budget"));
            return false;
        }
        let was_empty = queue.items.is_empty();
        queue.bytes = queue.bytes.saturating_add(bytes);
        queue.items.push_back((bytes, item));
        drop(queue);
        // The writer drains the queue before it waits, so only the first item of a
        // burst needs to wake it.
        if was_empty {
            self.wake.notify_one();
        }
        true
    }

    /// Frees the queue's buffer if it is empty: called when the connection has been
    /// quiet for a while, so that a connection that once received pushes holds no
    /// buffer while idle.
    pub fn release_idle_buffer(&self) {
        let mut queue = self.queue();
        if queue.items.is_empty() && queue.items.capacity() > 0 {
            queue.items = VecDeque::new();
        }
    }

    /// For a background producer (the backlog replay): waits until at least half the
    /// byte budget is free and returns how many bytes it may queue now while leaving a
    /// quarter of the budget for live traffic. `None` once the connection is gone.
    pub async fn wait_for_room(&self) -> Option<usize> {
        let max = self.budget;
        loop {
            let free = {
                let queue = self.queue();
                if queue.receiver_gone || queue.close_reason.is_some() {
                    return None;
                }
                max.saturating_sub(queue.bytes)
            };
            if free.saturating_mul(2) >= max {
                return Some(free.saturating_sub(max / 4).max(1));
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    /// Resolves when the connection may read its next request: its queued bytes and the
    /// bytes held for requests in flight are under the budget, or the connection is
    /// closing (the caller then finds out on its own).
    ///
    /// Registers no waker of its own (an idle connection stays as small as it is): it
    /// must be polled in the receiver's task, after the receiver, so that the task's
    /// wake-ups see the room the writer made (a drained queue, a reply or a close
    /// wakes the writer's wait).
    pub fn room_to_read(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|_| if self.may_read() { Poll::Ready(()) } else { Poll::Pending })
    }

    /// Whether [`ConnHandle::room_to_read`] would resolve now.
    pub fn may_read(&self) -> bool {
        let queue = self.queue();
        queue.bytes.saturating_add(queue.held) < self.budget
            || queue.receiver_gone
            || queue.close_reason.is_some()
    }

    /// Counts `bytes` towards the budget for a request whose reply comes later (a sent
    /// message until its commit), so that the reader stops reading when the requests in
    /// flight would fill the queue with their replies; [`ConnHandle::reply_held`]
    /// releases them.
    pub fn hold(&self, bytes: usize) {
        let mut queue = self.queue();
        queue.held = queue.held.saturating_add(bytes);
    }

    /// Queues a reply.
    pub fn reply(&self, serial: Option<i32>, reply: Reply) -> bool {
        self.send(Outbound::Reply { serial, reply: Box::new(reply) })
    }

    /// Queues the reply of a request that [held](ConnHandle::hold) `held` bytes, and
    /// releases them.
    pub fn reply_held(&self, serial: Option<i32>, reply: Reply, held: usize) -> bool {
        self.send_releasing(Outbound::Reply { serial, reply: Box::new(reply) }, held)
    }

    /// Reports a request's error as the error table says ([`ErrorCode::disposition`]):
    /// an error frame answering request `serial`, or a close with the error's code.
    /// Returns whether the connection stays open. Every request error reaches its client
    /// through here.
    pub fn fail(&self, serial: Option<i32>, error: ProtocolError) -> bool {
        self.fail_held(serial, error, 0)
    }

    /// [`ConnHandle::fail`] for a request that [held](ConnHandle::hold) `held` bytes,
    /// releasing them.
    pub fn fail_held(&self, serial: Option<i32>, error: ProtocolError, held: usize) -> bool {
        match error.code.disposition() {
            Disposition::Reply => {
                self.send_releasing(Outbound::Reply { serial, reply: Box::new(Reply::Error(error)) }, held);
                true
            }
            Disposition::Close => {
                {
                    let mut queue = self.queue();
                    queue.held = queue.held.saturating_sub(held);
                }
                self.close(error);
                false
            }
        }
    }

    /// Asks the connection to close with this error's code; the first reason wins. The
    /// receiver's [`OutboundReceiver::recv`] returns it before any queued item.
    pub fn close(&self, reason: ProtocolError) {
        let mut queue = self.queue();
        if queue.close_reason.is_none() {
            if reason.code == ErrorCode::SlowConsumer {
                crate::metrics::METRICS.slow_consumer_closed();
            }
            queue.close_reason = Some(reason);
            drop(queue);
            self.wake.notify_one();
            self.closing.wake();
        }
    }

    /// Ready once a close was requested; until then the task polling it is woken by
    /// the request.
    pub fn poll_close_requested(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.closing.register(cx.waker());
        match self.close_requested() {
            true => std::task::Poll::Ready(()),
            false => std::task::Poll::Pending,
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
    use std::pin::pin;

    fn serial(next: Next) -> Option<i32> {
        match next {
            Next::Item(Outbound::Reply { serial, .. }) => serial,
            _ => None,
        }
    }

    fn push(body: usize) -> Outbound {
        let push = Push::Direct(confab_types::DirectPush { msg: "z".repeat(body), ..Default::default() });
        Outbound::Push { push: SharedPush::new(push), to: Arc::from("bob") }
    }

    fn bytes(handle: &ConnHandle) -> usize {
        handle.queue().bytes
    }

    #[test]
    fn small_fan_outs_time_every_delivery_and_large_ones_a_rotating_share() {
        let direct = || Push::Direct(confab_types::DirectPush::default());
        let small = SharedPush::live(direct(), TIMED_DELIVERIES);
        assert!((0..1000).all(|conn| small.timed_since(conn).is_some()));
        assert!(SharedPush::new(direct()).timed_since(0).is_none(), "only live messages");
        // 1,000 recipients: one connection in 16, 62 or 63 of 1,000 consecutive ones.
        let timed = |p: &SharedPush| (0..1000u64).filter(|c| p.timed_since(*c).is_some()).collect::<Vec<_>>();
        let first = SharedPush::live(direct(), 1000);
        let second = SharedPush::live(direct(), 1000);
        let (a, b) = (timed(&first), timed(&second));
        assert!((62..=63).contains(&a.len()) && (62..=63).contains(&b.len()), "{} {}", a.len(), b.len());
        assert!(a.windows(2).all(|w| w[1] - w[0] == 16));
        assert_ne!(a, b, "the next message times other connections");
        // Every delivery of one message is stamped with the same start.
        let since: Vec<Instant> = a.iter().filter_map(|c| first.timed_since(*c)).collect();
        assert!(since.windows(2).all(|w| w[0] == w[1]));
    }

    #[tokio::test]
    async fn bytes_are_counted_on_push_and_pop_and_the_drained_queue_holds_no_buffer() {
        let (handle, mut rx) = ConnHandle::new(1, None, 1 << 20);
        let (small, large) = (push(10), push(5000));
        let (small_bytes, large_bytes) = (small.approx_bytes(), large.approx_bytes());
        assert!(large_bytes >= 5000 && small_bytes < large_bytes);
        let heartbeat = Reply::Heartbeat.approx_bytes();
        assert!(handle.reply(Some(1), Reply::Heartbeat));
        assert!(handle.send(large));
        assert!(handle.send(small));
        assert_eq!(bytes(&handle), heartbeat + large_bytes + small_bytes);
        assert_eq!(serial(Next::Item(rx.try_recv().unwrap())), Some(1));
        assert_eq!(bytes(&handle), large_bytes + small_bytes);
        assert!(matches!(rx.try_recv(), Some(Outbound::Push { .. })));
        assert_eq!(bytes(&handle), small_bytes);
        assert!(matches!(rx.try_recv(), Some(Outbound::Push { .. })));
        assert!(rx.try_recv().is_none());
        assert_eq!(bytes(&handle), 0);
        // Drained by a push: the buffer is kept for the next push, until the
        // connection falls quiet.
        assert!(handle.queue().items.capacity() > 0);
        assert!(handle.send(push(10)));
        assert!(matches!(rx.try_recv(), Some(Outbound::Push { .. })));
        handle.release_idle_buffer();
        assert_eq!(handle.queue().items.capacity(), 0);
        // Drained by a reply: freed at once.
        assert!(handle.send(push(10)));
        assert!(handle.reply(Some(2), Reply::Heartbeat));
        assert!(rx.try_recv().is_some() && rx.try_recv().is_some());
        assert_eq!(handle.queue().items.capacity(), 0);
        // Releasing never drops what is queued.
        assert!(handle.send(push(10)));
        handle.release_idle_buffer();
        assert!(matches!(rx.try_recv(), Some(Outbound::Push { .. })));
    }

    #[tokio::test]
    async fn a_push_over_the_byte_budget_closes_as_slow_consumer() {
        let one = push(1000).approx_bytes();
        let (handle, mut rx) = ConnHandle::new(1, None, 3 * one);
        for _ in 0..3 {
            assert!(handle.send(push(1000)));
        }
        assert!(!handle.is_closed());
        let closes = crate::metrics::METRICS.slow_consumer_closes();
        assert!(!handle.send(push(1000)));
        assert_eq!(handle.close_reason().unwrap().code, ErrorCode::SlowConsumer);
        // Other tests may close slow consumers meanwhile: at least this one is counted.
        assert!(crate::metrics::METRICS.slow_consumer_closes() > closes, "counted in the metrics");
        assert_eq!(bytes(&handle), 3 * one);
        // The close comes first; the queued items stay in order behind it.
        assert!(matches!(rx.recv().await, Next::Close(e) if e.code == ErrorCode::SlowConsumer));
        for _ in 0..3 {
            assert!(matches!(rx.try_recv(), Some(Outbound::Push { .. })));
        }
        assert!(rx.try_recv().is_none());
    }

    #[tokio::test]
    async fn a_push_larger_than_the_budget_still_reaches_an_empty_queue() {
        let (handle, mut rx) = ConnHandle::new(1, None, 100);
        assert!(handle.send(push(1000)));
        assert!(!handle.is_closed());
        assert!(matches!(rx.try_recv(), Some(Outbound::Push { .. })));
    }

    #[tokio::test]
    async fn replies_over_the_budget_never_close_but_stop_the_reader() {
        let (handle, mut rx) = ConnHandle::new(1, None, 10 * Reply::Heartbeat.approx_bytes());
        assert!(handle.may_read());
        for i in 0..100 {
            assert!(handle.reply(Some(i), Reply::Heartbeat));
            assert!(handle.send(Outbound::Ping));
        }
        assert!(!handle.is_closed());
        assert!(!handle.may_read());
        // The reader's wait resolves once the writer has drained below the budget.
        let mut wait = pin!(handle.room_to_read());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        let mut got = Vec::new();
        while let Some(item) = rx.try_recv() {
            if let Outbound::Reply { serial, .. } = item {
                got.push(serial.unwrap());
            }
        }
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert!(wait.as_mut().poll(&mut cx).is_ready());
        assert!(!handle.is_closed());
        // A push still closes a queue the replies filled.
        for i in 0..10 {
            assert!(handle.reply(Some(i), Reply::Heartbeat));
        }
        assert!(!handle.send(push(10)));
        assert_eq!(handle.close_reason().unwrap().code, ErrorCode::SlowConsumer);
    }

    #[tokio::test]
    async fn a_request_error_replies_or_closes_as_the_table_says() {
        let (handle, mut rx) = ConnHandle::new(1, None, 1 << 20);
        handle.hold(100);
        let stored = ProtocolError::new(ErrorCode::InternalError, "retry");
        assert!(handle.fail_held(Some(3), stored.clone(), 100));
        assert_eq!(handle.queue().held, 0);
        assert!(matches!(
            rx.try_recv(),
            Some(Outbound::Reply { serial: Some(3), reply }) if *reply == Reply::Error(stored)
        ));
        assert!(!handle.is_closed());
        assert!(!handle.fail(Some(4), ProtocolError::new(ErrorCode::InvalidLogin, "bad id")));
        assert_eq!(handle.close_reason().unwrap().code, ErrorCode::InvalidLogin);
        assert!(rx.try_recv().is_none());
    }

    #[tokio::test]
    async fn held_bytes_stop_the_reader_until_their_reply_releases_them() {
        let budget = 10_000;
        let (handle, mut rx) = ConnHandle::new(1, None, budget);
        handle.hold(6000);
        assert!(handle.may_read());
        handle.hold(6000);
        assert!(!handle.may_read());
        // Held bytes are not queued: a push still fits.
        assert!(handle.send(push(100)));
        assert!(!handle.is_closed());
        let ack = Reply::MessageAck { uid: "u".into(), t: 1 };
        assert!(handle.reply_held(Some(1), ack.clone(), 6000));
        assert!(handle.may_read());
        assert!(handle.reply_held(Some(2), ack, 6000));
        assert_eq!(handle.queue().held, 0);
        assert!(rx.try_recv().is_some());
        assert_eq!(serial(Next::Item(rx.try_recv().unwrap())), Some(1));
        assert_eq!(serial(Next::Item(rx.try_recv().unwrap())), Some(2));
        assert_eq!(bytes(&handle), 0);
    }

    #[tokio::test]
    async fn the_replay_waits_for_half_the_bytes_and_leaves_a_quarter() {
        let one = push(1000).approx_bytes();
        let budget = 8 * one;
        let (handle, mut rx) = ConnHandle::new(1, None, budget);
        assert_eq!(handle.wait_for_room().await, Some(budget - budget / 4));
        for _ in 0..6 {
            assert!(handle.send(push(1000)));
        }
        let waiter = {
            let handle = handle.clone();
            tokio::spawn(async move { handle.wait_for_room().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        for _ in 0..3 {
            assert!(rx.try_recv().is_some());
        }
        // 3 pushes left: 5 of 8 free.
        assert_eq!(waiter.await.unwrap(), Some(5 * one - budget / 4));
        handle.close(ProtocolError::new(ErrorCode::SlowConsumer, "gone"));
        assert_eq!(handle.wait_for_room().await, None);
    }

    #[tokio::test]
    async fn the_writer_is_woken_and_the_drained_queue_holds_no_buffer() {
        let (handle, mut rx) = ConnHandle::new(1, None, 1 << 20);
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
        assert_eq!(bytes(&handle), 0);
        drop(rx);
        assert!(handle.is_closed());
        assert!(!handle.reply(Some(9), Reply::Heartbeat));
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_for_a_close_even_after_it_closed_the_queue() {
        let (handle, mut rx) = ConnHandle::new(1, None, 1 << 20);
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

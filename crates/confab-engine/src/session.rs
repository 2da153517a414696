//! A session: one client id logged in on one connection. It owns the per-conversation
//! delivery state that makes delivery ordered, gap-free and at-least-once:
//!
//! - `pushed_upto`: position of the last message queued to this session. A live message
//!   is queued only if its predecessor is the one last queued; otherwise the session is
//!   behind and the backlog replay fetches it from the store, in order.
//! - `inflight`: queued messages not yet acknowledged. The client's delivery cursor moves
//!   to the end of the contiguous acknowledged prefix, so an ack beyond a gap never
//!   skips the gap.

use crate::outbound::{ConnHandle, Outbound, SharedPush};
use confab_types::{ErrorCode, ProtocolError};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// A message queued to a session and not yet acknowledged.
#[derive(Debug, Clone)]
pub(crate) struct Inflight {
    pub id: String,
    pub from: String,
    pub receipt: bool,
    pub acked: bool,
}

/// Delivery state of one conversation in one session.
#[derive(Debug, Default)]
pub(crate) struct ConvDelivery {
    pub pushed_upto: i64,
    pub acked_upto: i64,
    pub inflight: BTreeMap<i64, Inflight>,
}

impl ConvDelivery {
    /// Caught up to position `pos`: everything up to it queued and acknowledged.
    pub(crate) fn at(pos: i64) -> ConvDelivery {
        ConvDelivery { pushed_upto: pos, acked_upto: pos, inflight: BTreeMap::new() }
    }

    /// Moves past the message at `ts`, the next after `pushed_upto`, without queuing it
    /// (the session's own message, or a targeted one for others): it counts as
    /// acknowledged. Returns the new cursor when it moved (nothing unacknowledged
    /// before it).
    pub(crate) fn pass(&mut self, ts: i64) -> Option<i64> {
        let prev = self.pushed_upto;
        self.pushed_upto = ts;
        if self.inflight.is_empty() && self.acked_upto == prev {
            self.acked_upto = ts;
            return Some(ts);
        }
        self.inflight
            .insert(ts, Inflight { id: String::new(), from: String::new(), receipt: false, acked: true });
        None
    }
}

#[derive(Debug, Default)]
pub(crate) struct Delivery {
    /// Live pushes are held back until the login has loaded the cursors.
    pub ready: bool,
    pub convs: HashMap<String, ConvDelivery>,
}

/// Outcome of offering a live message to a session.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    Queued,
    Skipped,
    /// A message before this one never reached the session (lost between nodes): it
    /// needs a catch-up from the store.
    Behind,
}

/// A message that a session acknowledged.
#[derive(Debug)]
pub(crate) struct Acked {
    pub id: String,
    pub from: String,
    pub receipt: bool,
}

/// One logged-in client id on one connection.
#[derive(Debug)]
pub struct Session {
    /// The connection.
    pub conn: Arc<ConnHandle>,
    /// The app id.
    pub app_id: Arc<str>,
    /// The client id.
    pub client_id: Arc<str>,
    pub(crate) delivery: Mutex<Delivery>,
    /// Woken when acks make room in the replay window.
    pub(crate) acked: Notify,
    /// Chat rooms this session is in.
    pub(crate) rooms: Mutex<Vec<String>>,
    pub(crate) closed: AtomicBool,
    /// Device tag of a single-device login (`None` for untagged or `default`).
    pub tag: Option<String>,
    /// A will message, sent if the session ends without logging out.
    pub(crate) will: Mutex<Option<confab_types::DirectRequest>>,
    pub(crate) rate: Mutex<crate::rate::RateWindow>,
    /// The app's own backend (the REST admin API), not a client: its messages to a
    /// system conversation reach the subscribers.
    pub(crate) admin: bool,
    /// Unique among this process's sessions: names it in the cluster's registry, where
    /// a connection's new session for the same client must not be taken for the old.
    pub(crate) serial: u64,
    /// A replay from the store runs for this session (its login backlog, or a
    /// catch-up after a gap): live messages it skips meanwhile are in its pages.
    pub(crate) catching_up: AtomicBool,
    /// The [`crate::metrics::WIRES`] entry of its connection: how `confab_sessions`
    /// labels it, and what the console shows of the client's device.
    pub wire: u8,
    /// When it logged in, in whole seconds since the Unix epoch (the engine's clock):
    /// 32 bits fit in the struct's padding, where milliseconds would grow every session
    /// by 16 bytes. [`Session::since_ms`] reads it.
    pub(crate) since_secs: u32,
}

/// Numbers sessions for [`Session::serial`].
static NEXT_SESSION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Session {
    pub(crate) fn new(
        conn: Arc<ConnHandle>,
        app_id: Arc<str>,
        client_id: Arc<str>,
        tag: Option<String>,
    ) -> Arc<Session> {
        Arc::new(Session {
            conn,
            app_id,
            client_id,
            tag,
            will: Mutex::new(None),
            delivery: Mutex::new(Delivery::default()),
            acked: Notify::new(),
            rooms: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            rate: Mutex::new(crate::rate::RateWindow::default()),
            admin: false,
            serial: NEXT_SESSION.fetch_add(1, Ordering::Relaxed),
            catching_up: AtomicBool::new(false),
            wire: 0,
            since_secs: 0,
        })
    }

    /// When it logged in, in milliseconds since the Unix epoch (to the second).
    pub fn since_ms(&self) -> i64 {
        i64::from(self.since_secs) * 1000
    }

    pub(crate) fn delivery(&self) -> MutexGuard<'_, Delivery> {
        self.delivery.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the session ended.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.conn.is_closed()
    }

    /// Queues a push that needs no delivery tracking.
    pub(crate) fn push(&self, push: Arc<SharedPush>) -> bool {
        !self.is_closed() && self.conn.send(Outbound::Push { push, to: self.client_id.clone() })
    }

    /// Offers a committed message at position `ts` whose predecessor is `prev`.
    pub(crate) fn offer_live(
        &self,
        cid: &str,
        prev: i64,
        ts: i64,
        meta: &Inflight,
        push: &Arc<SharedPush>,
        inflight_max: usize,
    ) -> Offer {
        if self.is_closed() {
            return Offer::Skipped;
        }
        let mut delivery = self.delivery();
        if !delivery.ready {
            return Offer::Skipped;
        }
        let state = delivery.convs.entry(cid.to_owned()).or_insert_with(|| ConvDelivery::at(prev));
        if state.pushed_upto != prev {
            // Already queued (ts <= pushed_upto), or behind: a replay catches up in order.
            return if prev > state.pushed_upto { Offer::Behind } else { Offer::Skipped };
        }
        if state.inflight.len() >= inflight_max {
            drop(delivery);
            self.conn.close(ProtocolError::new(ErrorCode::SlowConsumer, "too many unacknowledged messages"));
            return Offer::Skipped;
        }
        state.pushed_upto = ts;
        state.inflight.insert(ts, meta.clone());
        drop(delivery);
        if self.conn.send(Outbound::Push { push: push.clone(), to: self.client_id.clone() }) {
            crate::metrics::METRICS.message_delivered();
            Offer::Queued
        } else {
            Offer::Skipped
        }
    }

    /// The sending session does not get its own message back; it only moves its
    /// pointers past it so later messages are not taken for a gap.
    pub(crate) fn pass_own(&self, cid: &str, prev: i64, ts: i64) -> Option<i64> {
        let mut delivery = self.delivery();
        if !delivery.ready {
            return None;
        }
        let state = delivery.convs.entry(cid.to_owned()).or_insert_with(|| ConvDelivery::at(prev));
        if state.pushed_upto != prev {
            return None;
        }
        state.pass(ts)
    }

    /// Marks messages acknowledged (by id, or by inclusive timestamp range) and returns
    /// them plus the new cursor if it moved.
    pub(crate) fn ack(
        &self,
        cid: &str,
        mid: Option<&str>,
        range: Option<(i64, i64)>,
    ) -> (Vec<Acked>, Option<i64>) {
        let mut delivery = self.delivery();
        let Some(state) = delivery.convs.get_mut(cid) else {
            return (Vec::new(), None);
        };
        let mut acked = Vec::new();
        let mut mark = |item: &mut Inflight| {
            if !item.acked {
                item.acked = true;
                acked.push(Acked { id: item.id.clone(), from: item.from.clone(), receipt: item.receipt });
            }
        };
        if let Some(mid) = mid
            && let Some(item) = state.inflight.values_mut().find(|i| i.id == mid)
        {
            mark(item);
        }
        if let Some((from, to)) = range {
            for (_, item) in state.inflight.range_mut(from.min(to)..=to.max(from)) {
                mark(item);
            }
        }
        let before = state.acked_upto;
        while let Some(entry) = state.inflight.first_entry() {
            if !entry.get().acked {
                break;
            }
            state.acked_upto = *entry.key();
            entry.remove();
        }
        let moved = (state.acked_upto > before).then_some(state.acked_upto);
        drop(delivery);
        if !acked.is_empty() {
            self.acked.notify_waiters();
        }
        (acked, moved)
    }

    /// Forgets the delivery state of a conversation (membership changed).
    pub(crate) fn reset_conv(&self, cid: &str) {
        self.delivery().convs.remove(cid);
    }
}

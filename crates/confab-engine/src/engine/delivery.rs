//! Sending and delivering messages.
//!
//! 1. **Order.** A message gets its timestamp (its position: strictly increasing per
//!    conversation) and a sequence number under the conversation's lock, and is queued
//!    to the store in that order without holding the lock across the commit.
//! 2. **Ack after commit.** When the store reports the commit, the message waits in a
//!    per-conversation reorder buffer until every earlier message is settled; then it is
//!    fanned out and acknowledged to its sender, so delivery order equals commit order.
//! 3. **Encode once.** One [`SharedPush`] goes to every recipient; each codec encodes it
//!    once.
//! 4. **Offline by cursor.** Nothing is written per recipient on the hot path. A session
//!    that is behind (just logged in, or skipped a message) is caught up from the store
//!    by [`replay_backlog`], oldest first, in pages, paced by the client's acks.

use super::{AppState, Engine};
use crate::conversation::{Conv, PendingSend, Recent};
use crate::ids;
use crate::metrics::METRICS;
use crate::outbound::SharedPush;
use crate::ports::{Appended, ClientEvent, Committed, ConvKind, MessageRange, StoreError, StoredMessage};
use crate::session::{ConvDelivery, Inflight, Session};
use confab_types::{AckRef, DirectPush, DirectRequest, ErrorCode, ProtocolError, Push, Reply};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a backlog replay waits for acks before giving up (the rest is replayed on
/// the next login).
const REPLAY_ACK_TIMEOUT: Duration = Duration::from_secs(60);

/// What a sent message awaiting its commit counts towards its sender's outbound byte
/// budget besides its body and mentions: its ids, its ack to come and the bookkeeping.
const HELD_OVERHEAD: usize = 256;

/// What a message in flight holds of its sender's outbound byte budget until its ack is
/// queued ([`crate::ConnHandle::hold`]): the memory it pins meanwhile (pending here and
/// in the store's queue), so a sender that pipelines without waiting for acks is read
/// no faster than its messages commit and its acks fit in its queue.
fn held_bytes(m: &StoredMessage) -> usize {
    m.data.len() + m.mentions.pids.iter().map(String::len).sum::<usize>() + HELD_OVERHEAD
}

impl Engine {
    pub(crate) async fn send(
        &self,
        app: &Arc<AppState>,
        session: &Arc<Session>,
        serial: Option<i32>,
        req: DirectRequest,
    ) -> Result<Option<Reply>, ProtocolError> {
        self.send_to(app, session, serial, req, None).await
    }

    /// [`Engine::send`], for `recipients` only when given (distinct, sorted): the app's
    /// backend sending a service conversation's targeted message. It is stored with its
    /// recipients in the conversation's log, ordered, acknowledged after the commit and
    /// fanned out as any message; members who are not recipients have their sessions
    /// moved past it, and neither their replay nor their history shows it.
    pub(crate) async fn send_to(
        &self,
        app: &Arc<AppState>,
        session: &Arc<Session>,
        serial: Option<i32>,
        req: DirectRequest,
        recipients: Option<Vec<String>>,
    ) -> Result<Option<Reply>, ProtocolError> {
        let me = session.client_id.to_string();
        let limits = &app.config.limits;
        if req.msg.len() > limits.message_bytes {
            return Err(ProtocolError::new(
                ErrorCode::FrameTooLong,
                format!("message body over {} bytes", limits.message_bytes),
            ));
        }
        let not_target = || {
            ProtocolError::new(
                ErrorCode::InvalidMessagingTarget,
                "conversation missing or sender not a member",
            )
        };
        if let Some(dt) = &req.dedupe
            && dt.len() > limits.dedupe_token_bytes
        {
            return Err(crate::bounds::over_limit(
                ErrorCode::UnparseableRawMsg,
                "dedupe_token_bytes",
                limits.dedupe_token_bytes,
            ));
        }
        let conv = self.conv(app, &req.cid).await?.ok_or_else(not_target)?;
        let refused = |conv: &Conv| -> Option<ProtocolError> {
            match conv.kind {
                // A chat room is written by who is in it: a client whose join was refused
                // (a failed signature, a block) must not reach the room by sending. The
                // app's backend sends as any client, member or not (LeanCloud's REST).
                // Clients write to a system conversation once subscribed; only the app's
                // backend reaches the subscribers.
                ConvKind::Normal | ConvKind::Temporary | ConvKind::Transient | ConvKind::System
                    if !session.admin && !conv.has_member(&me) =>
                {
                    return Some(not_target());
                }
                _ => {}
            }
            conv.state().shut_up.contains(&me).then(|| {
                ProtocolError::new(ErrorCode::ConversationNotAllowed, "shut up in this conversation")
            })
        };
        if let Some(error) = refused(&conv) {
            // In a cluster this node's copy may predate a change another node made a
            // moment ago (the member added, the shut-up lifted): refuse only what the
            // store still says. A refusal is rare, so the extra read is cheap.
            if self.inner.cluster.is_none() {
                return Err(error);
            }
            self.reload_conv(app, &conv).await;
            if let Some(error) = refused(&conv) {
                return Err(error);
            }
        }
        if conv.state().silenced.get(&me).is_some_and(|until| *until > self.now()) {
            return Err(ProtocolError::new(
                ErrorCode::ConversationBlacklisted,
                "temporarily silenced in this conversation",
            ));
        }
        if conv.kind == ConvKind::System && !session.admin {
            return self.send_to_app(app, &conv, session, req).await.map(Some);
        }
        if req.will && !session.is_closed() {
            // Held until the session ends abnormally (then sent by the connection's end).
            let ack = Reply::MessageAck { uid: ids::message_id(), t: self.now() };
            *session.will.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(DirectRequest { will: false, ..req });
            return Ok(Some(ack));
        }
        // The app's `_messageReceived` may drop the message, rewrite it or narrow who
        // gets it; awaited before any lock is taken, so a slow backend holds only this
        // request.
        let mut req = req;
        let received = self.message_received(app, &conv, &me, &mut req, session).await?;
        let to = match &recipients {
            Some(list) => Some(list.iter().cloned().collect()),
            None => received.to,
        };
        if req.transient {
            // Not stored, not ordered with stored messages, only for who is online now.
            let (uid, t) = (ids::message_id(), self.now());
            let direct = Push::Direct(DirectPush {
                cid: req.cid.clone(),
                id: uid.clone(),
                timestamp: t,
                from: me,
                msg: req.msg,
                transient: true,
                binary: req.binary,
                mentions: req.mentions,
                ..DirectPush::default()
            });
            match conv.kind {
                ConvKind::Transient => {
                    let room = conv.state().room.clone();
                    let push = SharedPush::live(direct, to.as_ref().map_or(room.len(), |to| to.len()));
                    // The backend's send in a client's name echoes to none of its sessions.
                    let except = session.admin.then_some(&*session.client_id);
                    let chosen = |s: &Arc<Session>| {
                        to.as_ref().is_none_or(|to| to.contains(&*s.client_id))
                            && except != Some(&*s.client_id)
                    };
                    for s in room.iter().filter(|s| !Arc::ptr_eq(s, session) && chosen(s)) {
                        s.push(push.clone());
                    }
                    app.broker.room_elsewhere(&conv.cid, &push, to.as_ref(), except);
                }
                ConvKind::System if !session.admin => {}
                _ => {
                    let members: Vec<String> = conv.state().members.iter().cloned().collect();
                    let push = SharedPush::live(direct, to.as_ref().map_or(members.len(), |to| to.len()));
                    for member in members.iter().filter(|m| to.as_ref().is_none_or(|to| to.contains(*m))) {
                        app.broker.to_client(member, ClientEvent::Push(&push), Some(session));
                    }
                }
            }
            return Ok(Some(Reply::MessageAck { uid, t }));
        }
        // A recipient with a session on another node is online for the hooks too.
        let elsewhere = self.online_elsewhere(app, &conv, to.as_ref()).await;
        let now = self.now();
        let dedupe_key = req.dedupe.as_ref().map(|dt| format!("{me}\u{1f}{dt}"));
        let (seq, commit, appended, has_calls) = {
            let mut state = conv.state();
            // A re-send of a message we already have (the client lost our ack): answer
            // with the original's ack instead of storing it twice.
            if let Some(key) = &dedupe_key {
                match state.recent.get(key).cloned() {
                    Some(Recent::Stored { uid, t }) => return Ok(Some(Reply::MessageAck { uid, t })),
                    Some(Recent::Pending(seq)) => {
                        if let Some(p) = state.pending.get_mut(&seq) {
                            p.also_ack.push((session.clone(), serial));
                            return Ok(None);
                        }
                    }
                    None => {}
                }
            }
            let ts = now.max(state.last_assigned_ts + 1);
            state.last_assigned_ts = ts;
            let seq = state.next_seq;
            state.next_seq += 1;
            let message = StoredMessage {
                app: app.config.id.clone(),
                cid: req.cid.clone(),
                id: ids::message_id(),
                ts,
                from: me,
                data: req.msg,
                receipt: req.receipt,
                patched_at: None,
                binary: req.binary,
                mentions: req.mentions,
                recipients,
            };
            // The notifying hooks' calls are stored with the message, in its transaction.
            let calls = {
                let recipients: Vec<String> = match &to {
                    Some(to) => to.iter().cloned().collect(),
                    None if conv.kind == ConvKind::Transient => Vec::new(),
                    None => state.members.iter().cloned().collect(),
                };
                self.message_calls(
                    app,
                    &conv,
                    &recipients,
                    elsewhere.as_ref(),
                    &message,
                    session.conn.source_ip(),
                )
            };
            let has_calls = !calls.is_empty();
            // Queued under the lock: the store applies writes in call order.
            let appended = Instant::now();
            // The store checks the token too: a re-send through another node or after
            // a restart finds the original there, not in this process's memory.
            let commit = self.inner.store.append_message_notify(message.clone(), calls, req.dedupe.clone());
            // Released when the ack (or the error) is queued, in `settle`.
            session.conn.hold(held_bytes(&message));
            if let Some(key) = &dedupe_key {
                state.remember(key.clone(), Recent::Pending(seq));
            }
            let pending = PendingSend {
                message,
                origin: session.clone(),
                serial,
                result: None,
                also_ack: Vec::new(),
                dedupe_key,
                to,
            };
            state.pending.insert(seq, pending);
            (seq, commit, appended, has_calls)
        };
        let engine = self.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let result = commit.await;
            if result.as_ref().is_ok_and(|at| at.original.is_none()) {
                METRICS.commit_latency(appended.elapsed());
                METRICS.message_stored();
                if has_calls {
                    engine.outbox_written();
                }
            }
            engine.settle(&app, &conv, seq, result);
        });
        Ok(None)
    }

    /// A subscriber's message to a system conversation is for the app, not the other
    /// subscribers: it is stored apart (`<cid>:inbox`), outside the conversation's
    /// history and delivery order, and acknowledged once committed.
    async fn send_to_app(
        &self,
        app: &AppState,
        conv: &Conv,
        session: &Session,
        req: DirectRequest,
    ) -> Result<Reply, ProtocolError> {
        let ts = {
            let mut state = conv.state();
            state.last_inbox_ts = self.now().max(state.last_inbox_ts + 1);
            state.last_inbox_ts
        };
        let message = StoredMessage {
            app: app.config.id.clone(),
            cid: format!("{}:inbox", req.cid),
            id: ids::message_id(),
            ts,
            from: session.client_id.to_string(),
            data: req.msg,
            receipt: false,
            patched_at: None,
            binary: req.binary,
            mentions: req.mentions,
            recipients: None,
        };
        let uid = message.id.clone();
        let at = self.inner.store.append_message(message).await.map_err(|e| {
            tracing::error!(error = %e, "system conversation message not stored");
            ProtocolError::new(ErrorCode::InternalError, "message not stored; retry")
        })?;
        METRICS.message_stored();
        Ok(Reply::MessageAck { uid, t: at.ts })
    }

    /// Records a commit outcome and delivers every settled message in sequence order.
    fn settle(&self, app: &AppState, conv: &Conv, seq: u64, result: Result<Appended, StoreError>) {
        let mut state = conv.state();
        if let Some(p) = state.pending.get_mut(&seq) {
            p.result = Some(result);
        }
        loop {
            let next = state.deliver_seq;
            let ready = state.pending.get(&next).is_some_and(|p| p.result.is_some());
            if !ready {
                break;
            }
            let Some(mut p) = state.pending.remove(&next) else {
                break;
            };
            state.deliver_seq += 1;
            match p.result.take() {
                Some(Ok(Appended { ts: t, original: Some(uid), .. })) => {
                    // A re-send of a message the store already held (stored through
                    // another node, or before a restart): acknowledged as the original,
                    // delivered when it was.
                    if let Some(key) = p.dedupe_key.clone() {
                        state.recent.insert(key, Recent::Stored { uid: uid.clone(), t });
                    }
                    let ack = Reply::MessageAck { uid: uid.clone(), t };
                    p.origin.conn.reply_held(p.serial, ack, held_bytes(&p.message));
                    for (session, serial) in &p.also_ack {
                        session.conn.reply(*serial, Reply::MessageAck { uid: uid.clone(), t });
                    }
                }
                Some(Ok(at)) => {
                    // The store decides the position (another node may have written the
                    // conversation meanwhile); alone, it keeps the one proposed.
                    p.message.ts = at.ts;
                    let prev = at.prev_ts;
                    state.last_delivered_ts = state.last_delivered_ts.max(at.ts);
                    state.last_assigned_ts = state.last_assigned_ts.max(at.ts);
                    let (uid, t) = (p.message.id.clone(), p.message.ts);
                    if let Some(key) = p.dedupe_key.clone() {
                        state.recent.insert(key, Recent::Stored { uid: uid.clone(), t });
                    }
                    // The sender's ack first: in a large room it would otherwise wait
                    // behind every member's delivery.
                    let ack = Reply::MessageAck { uid: uid.clone(), t };
                    p.origin.conn.reply_held(p.serial, ack, held_bytes(&p.message));
                    for (session, serial) in &p.also_ack {
                        session.conn.reply(*serial, Reply::MessageAck { uid: uid.clone(), t });
                    }
                    self.fan_out(app, conv, &state, &p, prev);
                }
                Some(Err(e)) => {
                    tracing::error!(error = %e, cid = %conv.cid, "message not stored");
                    if let Some(key) = &p.dedupe_key {
                        state.recent.remove(key);
                    }
                    let error = ProtocolError::new(ErrorCode::InternalError, "message not stored; retry");
                    p.origin.conn.fail_held(p.serial, error.clone(), held_bytes(&p.message));
                    for (session, serial) in p.also_ack {
                        session.conn.fail(serial, error.clone());
                    }
                }
                None => {}
            }
        }
    }

    fn fan_out(
        &self,
        app: &AppState,
        conv: &Conv,
        state: &crate::conversation::ConvState,
        p: &PendingSend,
        prev: i64,
    ) {
        let m = &p.message;
        // A targeted message goes to its named recipients only: they set how many
        // deliveries are timed.
        let everyone = if conv.kind == ConvKind::Transient { state.room.len() } else { state.members.len() };
        let recipients = p.to.as_ref().map_or(everyone, |to| to.len().min(everyone));
        let push = SharedPush::live(
            Push::Direct(DirectPush {
                cid: m.cid.clone(),
                id: m.id.clone(),
                timestamp: m.ts,
                from: m.from.clone(),
                msg: m.data.clone(),
                binary: m.binary,
                mentions: m.mentions.clone(),
                ..DirectPush::default()
            }),
            recipients,
        );
        if conv.kind == ConvKind::Transient {
            // The backend's send in a client's name echoes to none of its sessions
            // (LeanCloud's REST, §3.3); a client's own send reaches its other sessions.
            let except = p.origin.admin.then_some(&*p.origin.client_id);
            let chosen = |s: &Arc<Session>| {
                p.to.as_ref().is_none_or(|to| to.contains(&*s.client_id)) && except != Some(&*s.client_id)
            };
            let queued = state
                .room
                .iter()
                .filter(|s| !Arc::ptr_eq(s, &p.origin) && chosen(s))
                .filter(|s| s.push(push.clone()))
                .count();
            METRICS.messages_delivered_n(queued as u64);
            app.broker.room_elsewhere(&conv.cid, &push, p.to.as_ref(), except);
            return;
        }
        // The sending session only moves its pointers past its own message.
        if !p.origin.closed.load(std::sync::atomic::Ordering::Acquire)
            && let Some(cursor) = p.origin.pass_own(&m.cid, prev, m.ts)
        {
            self.inner.store.save_cursor(&app.config.id, &p.origin.client_id, &m.cid, cursor);
        }
        let behind = app.broker.message(&Committed {
            cid: &m.cid,
            members: &state.members,
            prev,
            ts: m.ts,
            id: &m.id,
            from: &m.from,
            receipt: m.receipt,
            push: &push,
            origin: Some(&p.origin),
            inflight_max: app.config.limits.offline_window.saturating_mul(4).max(64),
            recipients: p.to.as_ref(),
        });
        for session in behind {
            self.catch_up(app, session);
        }
    }

    /// A live session missed a message (lost between nodes, or skipped while its queue
    /// was full): it is caught up from the store, once at a time, in the conversations
    /// it follows live. A later message reveals a gap left meanwhile.
    pub(crate) fn catch_up(&self, app: &AppState, session: Arc<Session>) {
        if session.catching_up.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let Some(app) = self.app(&app.config.id).cloned() else {
            return;
        };
        let engine = self.clone();
        tokio::spawn(async move {
            replay_backlog(engine, app, session.clone(), true).await;
            session.catching_up.store(false, std::sync::atomic::Ordering::Release);
        });
    }

    /// A recipient acknowledged messages: move its cursor, send delivery receipts.
    pub(crate) fn ack(&self, session: &Arc<Session>, ack: AckRef<'_>) {
        let Some(cid) = ack.cid else {
            return;
        };
        let range = match (ack.from_ts, ack.to_ts) {
            (Some(f), Some(t)) => Some((f, t)),
            (Some(f), None) => Some((f, f)),
            (None, Some(t)) => Some((t, t)),
            (None, None) => None,
        };
        let (acked, cursor) = session.ack(cid, ack.mid, range);
        METRICS.acked(acked.len());
        if cursor.is_none() && acked.is_empty() {
            // Nothing was waiting for it (a chat room's message, or an ack again).
            return;
        }
        let Some(app) = self.app(&session.app_id) else {
            return;
        };
        if let Some(ts) = cursor {
            self.inner.store.save_cursor(&app.config.id, &session.client_id, cid, ts);
        }
        let now = self.now();
        for a in acked.into_iter().filter(|a| a.receipt && a.from != *session.client_id) {
            let push = SharedPush::new(Push::Receipt {
                cid: cid.to_owned(),
                id: a.id,
                t: now,
                from: session.client_id.to_string(),
                read: false,
            });
            self.push_to_client(app, &a.from, &push);
        }
    }
}

/// Pushes every stored message the session's client has not acknowledged, per
/// conversation oldest first, in pages, never more than the window unacknowledged.
///
/// With `known_only` (a catch-up of a live session) only the conversations it follows
/// live are replayed: a version 3 client reads the others from history.
///
/// Returns how many messages it queued (the login's offline backlog, as far as the
/// replay went).
pub(crate) async fn replay_backlog(
    engine: Engine,
    app: Arc<AppState>,
    session: Arc<Session>,
    known_only: bool,
) -> u64 {
    let mut replayed = 0;
    replay_pages(engine, app, session, known_only, &mut replayed).await;
    replayed
}

async fn replay_pages(
    engine: Engine,
    app: Arc<AppState>,
    session: Arc<Session>,
    known_only: bool,
    replayed: &mut u64,
) {
    // Read after the session became ready, so anything it skipped meanwhile is here.
    let store = &engine.inner.store;
    let cursors = match store.member_cursors(&app.config.id, &session.client_id).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "offline replay: cannot read cursors");
            return;
        }
    };
    let limits = &app.config.limits;
    for c in cursors {
        if known_only && !session.delivery().convs.contains_key(&c.cid) {
            continue;
        }
        let pushed = |s: &Session| s.delivery().convs.get(&c.cid).map_or(c.cursor, |d| d.pushed_upto);
        if pushed(&session) >= c.last_ts {
            continue;
        }
        if let Ok(Some(conv)) = engine.conv(&app, &c.cid).await
            && conv.kind == ConvKind::Transient
        {
            continue;
        }
        // Stop only on an empty page: a message committed while a page was being queued
        // may have been skipped live (the session looked behind), and the next read
        // picks it up.
        loop {
            if !wait_for_window(&session, &c.cid, limits.offline_window).await {
                return;
            }
            // Bytes it may queue now; a page holds as many messages of the largest size.
            let Some(room) = session.conn.wait_for_room().await else {
                return;
            };
            let from = pushed(&session);
            let range = MessageRange {
                after: Some((from, false)),
                limit: limits.offline_page.min((room / limits.message_bytes.max(1)).max(1)),
                ..MessageRange::default()
            };
            let page = match store.messages(&app.config.id, &c.cid, range).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "offline replay: cannot read messages");
                    return;
                }
            };
            if page.is_empty() {
                break;
            }
            // Queued under the session's lock, like live pushes, so the two never
            // interleave out of order.
            let mut delivery = session.delivery();
            let state = delivery.convs.entry(c.cid.clone()).or_insert_with(|| ConvDelivery::at(from));
            let mut queued = 0;
            let mut passed = None;
            for m in page {
                if m.ts <= state.pushed_upto {
                    continue;
                }
                if !m.is_for(&session.client_id) {
                    // A targeted message for others: passed over as the sender's own
                    // are, so the cursor moves past it and it is not read again.
                    passed = state.pass(m.ts).or(passed);
                    continue;
                }
                if queued >= room {
                    // The rest of the page waits for the next room (re-read from the
                    // store: pushed_upto stops here).
                    break;
                }
                state.pushed_upto = m.ts;
                let meta =
                    Inflight { id: m.id.clone(), from: m.from.clone(), receipt: m.receipt, acked: false };
                state.inflight.insert(m.ts, meta);
                let push = SharedPush::new(Push::Direct(DirectPush {
                    cid: m.cid,
                    id: m.id,
                    timestamp: m.ts,
                    from: m.from,
                    msg: m.data,
                    offline: true,
                    binary: m.binary,
                    mentions: m.mentions,
                    patched_at: m.patched_at,
                    ..DirectPush::default()
                }));
                queued += push.approx_bytes();
                if !session.push(push) {
                    return;
                }
                *replayed += 1;
                METRICS.message_delivered();
            }
            drop(delivery);
            if let Some(cursor) = passed {
                store.save_cursor(&app.config.id, &session.client_id, &c.cid, cursor);
            }
        }
    }
}

/// Waits until fewer than `window` messages of `cid` are unacknowledged; `false` if the
/// session ended or the client stopped acknowledging.
async fn wait_for_window(session: &Session, cid: &str, window: usize) -> bool {
    loop {
        let notified = session.acked.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if session.is_closed() {
            return false;
        }
        if session.delivery().convs.get(cid).map_or(0, |d| d.inflight.len()) < window {
            return true;
        }
        if tokio::time::timeout(REPLAY_ACK_TIMEOUT, notified).await.is_err() {
            return false;
        }
    }
}

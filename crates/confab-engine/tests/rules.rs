//! The engine's delivery rules, tested without a socket: an [`Engine`] on the in-memory
//! store and a manual clock, driven through [`Connection::handle`] as the gateway drives
//! it, with each connection's outbound queue read directly.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::{APP, T0, World};
use confab_engine::ports::{ManualClock, Store};
use confab_engine::{AppConfig, Engine};
use confab_types::{
    ConvStart, DirectRequest, ErrorCode, Limits, LogsQuery, Push, Reply, Request, SessionOpen,
};
use std::sync::Arc;

#[tokio::test]
async fn timestamps_strictly_increase_while_the_clock_stands_still_and_delivery_follows_them() {
    let world = World::new();
    let mut alice = world.login("alice").await;
    let mut bob = world.login("bob").await;
    let cid = alice.start(&["bob"]).await;
    let mut acks = Vec::new();
    for i in 0..5 {
        acks.push(alice.say(&cid, &format!("m{i}")).await);
    }
    let times: Vec<i64> = acks.iter().map(|(_, t)| *t).collect();
    assert_eq!(times, [T0, T0 + 1, T0 + 2, T0 + 3, T0 + 4]);
    // A clock that steps back does not reorder either.
    world.clock.set(T0 - 60_000);
    let (_, t) = alice.say(&cid, "m5").await;
    assert_eq!(t, T0 + 5);
    let got = bob.messages(6).await;
    let bodies: Vec<&str> = got.iter().map(|d| d.msg.as_str()).collect();
    assert_eq!(bodies, ["m0", "m1", "m2", "m3", "m4", "m5"]);
    assert!(got.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
}

/// Two engines on one store stand for two nodes: their clocks disagree, yet the store
/// keeps one strictly increasing order per conversation, and each sender's ack carries
/// the position its message really got.
#[tokio::test]
async fn two_nodes_on_one_store_keep_one_order_whatever_their_clocks_say() {
    let node_a = World::new();
    let clock_b = Arc::new(ManualClock::at(T0 - 5_000));
    let node_b =
        Engine::new(vec![AppConfig::new(APP, "key", "master")], node_a.store.clone(), clock_b.clone());
    let node_b = World { engine: node_b, clock: clock_b, store: node_a.store.clone() };
    let mut alice = node_a.login("alice").await;
    let mut bob = node_b.login("bob").await;
    let cid = alice.start(&["bob"]).await;
    let (_, t1) = alice.say(&cid, "from a").await;
    assert_eq!(t1, T0);
    // Node B's clock is behind: its proposal would go before node A's message.
    let (_, t2) = bob.say(&cid, "from b, behind").await;
    assert_eq!(t2, T0 + 1, "the store moved it after the newest message");
    let (_, t3) = alice.say(&cid, "from a again").await;
    assert_eq!(t3, T0 + 2, "node A proposes past what node B wrote");
    node_b.clock.set(T0 + 10_000);
    let (_, t4) = bob.say(&cid, "from b, ahead").await;
    assert_eq!(t4, T0 + 10_000, "a later proposal is kept");
    let logs = LogsQuery { cid: cid.clone(), limit: Some(10), ..LogsQuery::default() };
    let Reply::Logs { logs } = bob.request(Request::Logs(logs)).await.unwrap() else { panic!() };
    let got: Vec<(i64, &str)> = logs.iter().map(|l| (l.timestamp, l.data.as_str())).collect();
    assert_eq!(
        got,
        [
            (T0, "from a"),
            (T0 + 1, "from b, behind"),
            (T0 + 2, "from a again"),
            (T0 + 10_000, "from b, ahead")
        ]
    );
}

#[tokio::test]
async fn a_resend_with_the_same_token_is_acknowledged_as_the_original_and_stored_once() {
    let world = World::new();
    let mut alice = world.login("alice").await;
    let cid = alice.start(&["bob"]).await;
    let direct = DirectRequest {
        cid: cid.clone(),
        msg: "hi".into(),
        dedupe: Some("tok-1".into()),
        ..DirectRequest::default()
    };
    let first = alice.send(direct.clone()).await.unwrap();
    world.clock.advance(1000);
    let again = alice.send(direct.clone()).await.unwrap();
    assert_eq!(first, again, "the same id and timestamp");
    // Another sender's equal token is another message.
    let mut bob = world.login("bob").await;
    let bobs = bob.send(direct).await.unwrap();
    assert_ne!(bobs.0, first.0);
    let logs = LogsQuery { cid: cid.clone(), limit: Some(10), ..LogsQuery::default() };
    let Reply::Logs { logs } = alice.request(Request::Logs(logs)).await.unwrap() else { panic!() };
    assert_eq!(logs.len(), 2, "{logs:?}");
}

#[tokio::test]
async fn the_offline_backlog_comes_oldest_first_and_the_cursor_follows_the_acks() {
    let world = World::new();
    let mut alice = world.login("alice").await;
    let cid = alice.start(&["bob"]).await;
    let sent: Vec<(String, i64)> =
        [alice.say(&cid, "a").await, alice.say(&cid, "b").await, alice.say(&cid, "c").await].into();

    let mut bob = world.login("bob").await;
    let got = bob.messages(3).await;
    assert_eq!(
        got.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
        sent.iter().map(|s| s.0.clone()).collect::<Vec<_>>()
    );
    assert!(got.iter().all(|d| d.offline), "{got:?}");
    // Bob acknowledges a and b, not c, and goes away.
    bob.ack(&cid, &got[0].id).await;
    bob.ack(&cid, &got[1].id).await;
    drop(bob);
    let cursors = world.store.member_cursors(APP, "bob").await.unwrap();
    let cursor = cursors.iter().find(|c| c.cid == cid).unwrap();
    assert_eq!(cursor.cursor, sent[1].1, "the cursor is at b");

    // Only c is delivered again.
    let mut bob = world.login("bob").await;
    let again = bob.messages(1).await;
    assert_eq!(again[0].id, sent[2].0);
    assert_eq!(bob.settled_messages().await.len(), 1);
}

#[tokio::test]
async fn an_ack_beyond_a_gap_does_not_move_the_cursor_past_the_gap() {
    let world = World::new();
    let mut alice = world.login("alice").await;
    let cid = alice.start(&["bob"]).await;
    let mut bob = world.login("bob").await;
    for m in ["a", "b", "c"] {
        alice.say(&cid, m).await;
    }
    let got = bob.messages(3).await;
    bob.ack(&cid, &got[2].id).await;
    let cursors = world.store.member_cursors(APP, "bob").await.unwrap();
    let before = cursors.iter().find(|c| c.cid == cid).unwrap().cursor;
    assert!(before < got[0].timestamp, "c's ack alone leaves the cursor before a");
    bob.ack(&cid, &got[0].id).await;
    bob.ack(&cid, &got[1].id).await;
    let cursors = world.store.member_cursors(APP, "bob").await.unwrap();
    assert_eq!(cursors.iter().find(|c| c.cid == cid).unwrap().cursor, got[2].timestamp);
}

#[tokio::test]
async fn the_offline_replay_waits_for_acks_beyond_its_window() {
    let world = World::with_limits(Limits { offline_window: 2, offline_page: 2, ..Limits::default() });
    let mut alice = world.login("alice").await;
    let cid = alice.start(&["bob"]).await;
    for i in 0..5 {
        alice.say(&cid, &format!("m{i}")).await;
    }
    let mut bob = world.login("bob").await;
    let first = bob.messages(2).await;
    assert_eq!(bob.settled_messages().await.len(), 2, "at most the window unacknowledged");
    for d in &first {
        bob.ack(&cid, &d.id).await;
    }
    let all = bob.messages(4).await;
    assert_eq!(bob.settled_messages().await.len(), 4);
    for d in &all[2..] {
        bob.ack(&cid, &d.id).await;
    }
    let all = bob.messages(5).await;
    let bodies: Vec<&str> = all.iter().map(|d| d.msg.as_str()).collect();
    assert_eq!(bodies, ["m0", "m1", "m2", "m3", "m4"]);
}

#[tokio::test]
async fn a_receipt_goes_to_the_sender_when_the_recipient_acks() {
    let world = World::new();
    let mut alice = world.login("alice").await;
    let mut bob = world.login("bob").await;
    let cid = alice.start(&["bob"]).await;
    let receipted =
        DirectRequest { cid: cid.clone(), msg: "r".into(), receipt: true, ..DirectRequest::default() };
    let (id, _) = alice.send(receipted).await.unwrap();
    alice.say(&cid, "no receipt asked").await;
    let got = bob.messages(2).await;
    alice.take_queued();
    assert!(!alice.pushes.iter().any(|p| matches!(p, Push::Receipt { .. })), "nothing before the ack");
    for d in &got {
        bob.ack(&cid, &d.id).await;
    }
    alice.take_queued();
    let receipts: Vec<&Push> = alice.pushes.iter().filter(|p| matches!(p, Push::Receipt { .. })).collect();
    assert_eq!(receipts.len(), 1, "{receipts:?}");
    assert!(
        matches!(receipts[0], Push::Receipt { id: rid, from, read: false, .. } if *rid == id && from == "bob")
    );
}

#[tokio::test]
async fn a_login_with_a_taken_device_tag_ends_the_other_session_and_a_relogin_is_refused() {
    let world = World::new();
    let tagged = || SessionOpen { app_id: APP.into(), tag: Some("mobile".into()), ..SessionOpen::default() };
    let mut phone1 = world.connect(3);
    let token = match phone1.open("bob", tagged()).await.unwrap() {
        Reply::SessionOpened { session_token: Some(st), .. } => st.token,
        other => panic!("{other:?}"),
    };
    let mut phone2 = world.connect(3);
    assert!(matches!(phone2.open("bob", tagged()).await, Ok(Reply::SessionOpened { .. })));
    phone1.take_queued();
    let closed = phone1.pushes.iter().find_map(|p| match p {
        Push::SessionClosed { error, .. } => Some(error.code),
        _ => None,
    });
    assert_eq!(closed, Some(ErrorCode::SessionConflict));
    assert!(!phone1.conn.has_session());
    // phone1 reconnects with its token while phone2 holds the tag: refused.
    let mut phone1_again = world.connect(3);
    let relogin = SessionOpen { reconnect: true, session_token: Some(token), ..tagged() };
    let refused = phone1_again.open("bob", relogin).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::SessionConflict);
    // A different tag lives beside it.
    let mut pad = world.connect(3);
    let other = SessionOpen { tag: Some("pad".into()), ..tagged() };
    assert!(matches!(pad.open("bob", other).await, Ok(Reply::SessionOpened { .. })));
    assert!(phone2.conn.has_session());
}

#[tokio::test]
async fn a_temporary_conversation_expires_by_the_clock() {
    let world = World::new();
    let mut alice = world.login("alice").await;
    let start = ConvStart { members: vec!["bob".into()], temporary_ttl: Some(10), ..ConvStart::default() };
    let Reply::ConvStarted { cid, temporary_ttl, .. } =
        alice.request(Request::ConvStart(start)).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(temporary_ttl, Some(10));
    world.clock.advance(9_999);
    alice.say(&cid, "in time").await;
    world.clock.advance(1);
    let late = alice.send(DirectRequest { cid, msg: "late".into(), ..DirectRequest::default() }).await;
    assert_eq!(late.unwrap_err().code, ErrorCode::TemporaryConversationExpired);
}

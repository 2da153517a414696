//! A service conversation's targeted messages (sent by the app's backend to some
//! subscribers): stored in the conversation's order and delivered like any message,
//! only to their recipients — live, in the offline replay, in history, in unread
//! counts, in edits — on one node and across a cluster.
#![allow(clippy::unwrap_used)]

mod common;

use common::{APP, Peer, World};
use confab_engine::engine::{AdminPatch, TARGETED_RECIPIENTS_MAX, TargetedMessage};
use confab_engine::ports::Store;
use confab_types::{DirectPush, ErrorCode, Inbound, LogsQuery, Push, ReadMark, Reply, Request, SessionOpen};
use serde_json::Map;

/// A service conversation with these subscribers.
async fn service(world: &World, subscribers: &[&str]) -> String {
    let (cid, _) = world.engine.admin_create_system_conversation(APP, Map::new()).await.unwrap();
    for client in subscribers {
        world.engine.admin_subscribe(APP, &cid, client, true).await.unwrap();
    }
    cid
}

fn to(clients: &[&str], msg: &str) -> TargetedMessage {
    TargetedMessage {
        from: "sys".into(),
        to: clients.iter().map(|c| c.to_string()).collect(),
        msg: msg.into(),
        transient: false,
    }
}

fn bodies(messages: &[DirectPush]) -> Vec<&str> {
    messages.iter().map(|m| m.msg.as_str()).collect()
}

/// What `logs` shows the peer, oldest first.
async fn history(peer: &mut Peer, cid: &str) -> Vec<String> {
    let q = LogsQuery { cid: cid.into(), limit: Some(100), ..LogsQuery::default() };
    let Reply::Logs { logs } = peer.request(Request::Logs(q)).await.unwrap() else { panic!() };
    logs.into_iter().map(|l| l.data).collect()
}

/// A version-3 login's unread push for the conversation: (count, last message body).
async fn unread_at_login(world: &World, client: &str, cid: &str) -> Option<(i64, String)> {
    let mut peer = world.connect(3);
    let open = SessionOpen { app_id: APP.into(), ..SessionOpen::default() };
    peer.open(client, open).await.unwrap();
    let _ = peer.settled_messages().await;
    peer.pushes.iter().find_map(|p| match p {
        Push::Unread { convs, .. } => convs
            .iter()
            .find(|u| u.cid == cid)
            .map(|u| (u.unread, u.last.as_ref().map(|l| l.data.clone()).unwrap_or_default())),
        _ => None,
    })
}

#[tokio::test]
async fn a_targeted_message_reaches_its_recipients_online_and_offline_only() {
    let world = World::new();
    let cid = service(&world, &["alice", "bob", "carol"]).await;
    let mut alice = world.login("alice").await;
    let mut bob = world.login("bob").await;
    // carol is offline.
    world.engine.admin_broadcast(APP, &cid, "sys", "first".into()).await.unwrap();
    let (tid, tt) = world.engine.admin_send_targeted(APP, &cid, to(&["bob", "carol"], "psst")).await.unwrap();
    world.engine.admin_broadcast(APP, &cid, "sys", "second".into()).await.unwrap();
    // Live: bob gets all three in order, alice the broadcasts only.
    let got = bob.messages(3).await;
    assert_eq!(bodies(&got), ["first", "psst", "second"]);
    assert_eq!((got[1].id.as_str(), got[1].timestamp), (tid.as_str(), tt));
    let got = alice.messages(2).await;
    assert_eq!(bodies(&got), ["first", "second"]);
    assert_eq!(bodies(&alice.settled_messages().await), ["first", "second"]);
    // History shows it to its recipients only.
    assert_eq!(history(&mut alice, &cid).await, ["first", "second"]);
    assert_eq!(history(&mut bob, &cid).await, ["first", "psst", "second"]);
    // carol, offline when it was sent, gets it at login, in order, as an offline message.
    let mut carol = world.login("carol").await;
    let got = carol.messages(3).await;
    assert_eq!(bodies(&got), ["first", "psst", "second"]);
    assert!(got.iter().all(|m| m.offline));
    assert_eq!(history(&mut carol, &cid).await, ["first", "psst", "second"]);
    // Someone who does not subscribe reads none of it but the broadcasts.
    let mut dave = world.login("dave").await;
    assert_eq!(history(&mut dave, &cid).await, ["first", "second"]);
}

#[tokio::test]
async fn the_cursor_of_a_subscriber_it_is_not_for_moves_past_it() {
    let world = World::new();
    let cid = service(&world, &["alice", "bob"]).await;
    let (_, first) = world.engine.admin_broadcast(APP, &cid, "sys", "first".into()).await.unwrap();
    let (_, tt) = world.engine.admin_send_targeted(APP, &cid, to(&["bob"], "for bob")).await.unwrap();
    assert!(tt > first);
    // alice was offline: her replay holds the broadcast only; her ack of it takes her
    // cursor past bob's message, which is never replayed to her.
    let mut alice = world.login("alice").await;
    let got = alice.messages(1).await;
    assert_eq!(bodies(&got), ["first"]);
    assert_eq!(bodies(&alice.settled_messages().await), ["first"]);
    alice.ack(&cid, &got[0].id).await;
    let cursor = |world: &World| {
        let store = world.store.clone();
        let cid = cid.clone();
        async move {
            let positions = store.member_positions(APP, &cid).await.unwrap();
            positions.into_iter().find(|p| p.client == "alice").unwrap().acked_upto
        }
    };
    assert_eq!(cursor(&world).await, tt);
    drop(alice);
    let mut again = world.login("alice").await;
    assert!(again.settled_messages().await.is_empty());
    // A login whose whole backlog is for others moves the cursor too.
    let (_, t2) = world.engine.admin_send_targeted(APP, &cid, to(&["bob"], "again for bob")).await.unwrap();
    drop(again);
    let mut third = world.login("alice").await;
    assert!(third.settled_messages().await.is_empty());
    assert_eq!(cursor(&world).await, t2);
}

#[tokio::test]
async fn unread_counts_and_edits_are_for_its_recipients_only() {
    let world = World::new();
    let cid = service(&world, &["alice", "bob"]).await;
    world.engine.admin_broadcast(APP, &cid, "sys", "news".into()).await.unwrap();
    let (tid, tt) = world.engine.admin_send_targeted(APP, &cid, to(&["bob"], "for bob")).await.unwrap();
    // Version 3 logins: alice has the broadcast unread, bob both, his newest last.
    assert_eq!(unread_at_login(&world, "alice", &cid).await, Some((1, "news".into())));
    assert_eq!(unread_at_login(&world, "bob", &cid).await, Some((2, "for bob".into())));
    // bob reads "everything": his read position reaches his newest, the targeted one.
    let mut phone = world.connect(3);
    phone.open("bob", SessionOpen { app_id: APP.into(), ..SessionOpen::default() }).await.unwrap();
    let read = Request::Read { convs: vec![ReadMark { cid: cid.clone(), ts: None }] };
    assert!(phone.conn.handle(Inbound { serial: None, peer_id: None, request: read }).await);
    let _ = phone.settled_messages().await;
    assert_eq!(unread_at_login(&world, "bob", &cid).await, None);
    assert_eq!(unread_at_login(&world, "alice", &cid).await, Some((1, "news".into())));
    // An edit reaches the recipient's sessions, not the other subscriber's.
    let mut alice = world.login("alice").await;
    let mut bob = world.login("bob").await;
    let _ = (alice.settled_messages().await, bob.settled_messages().await);
    let edit =
        AdminPatch { from: "sys".into(), mid: tid.clone(), timestamp: Some(tt), data: Some("edited".into()) };
    world.engine.admin_patch_targeted(APP, &cid, &["bob".into()], edit.clone()).await.unwrap();
    let _ = (alice.settled_messages().await, bob.settled_messages().await);
    let patched = |peer: &Peer| {
        peer.pushes
            .iter()
            .filter_map(|p| match p {
                Push::Patch { items, .. } => Some(items.iter().map(|i| i.data.clone()).collect::<Vec<_>>()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(patched(&bob), [vec!["edited".to_owned()]]);
    assert!(patched(&alice).is_empty());
    // Named for another subscriber it is not found.
    let other = world.engine.admin_patch_targeted(APP, &cid, &["alice".into()], edit).await.unwrap_err();
    assert_eq!(other.code, ErrorCode::MessageNotFound);
    // A subscriber's own deletion: gone from its history only.
    world.engine.admin_delete_targeted(APP, &cid, "bob", &tid, Some(tt)).await.unwrap();
    assert_eq!(history(&mut bob, &cid).await, ["news"]);
    let again = world.engine.admin_delete_targeted(APP, &cid, "bob", &tid, Some(tt)).await.unwrap_err();
    assert_eq!(again.code, ErrorCode::MessageNotFound);
}

#[tokio::test]
async fn recipients_are_bounded_and_outsiders_get_it_live_only() {
    let world = World::new();
    let cid = service(&world, &["alice"]).await;
    let too_many: Vec<String> = (0..=TARGETED_RECIPIENTS_MAX).map(|i| format!("c{i}")).collect();
    let refs: Vec<&str> = too_many.iter().map(String::as_str).collect();
    let e = world.engine.admin_send_targeted(APP, &cid, to(&refs, "x")).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::UnparseableRawMsg);
    let e = world.engine.admin_send_targeted(APP, &cid, to(&[], "x")).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::UnparseableRawMsg);
    let e = world.engine.admin_send_targeted(APP, &cid, to(&["bad id"], "x")).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::UnparseableRawMsg);
    // Exactly the most, duplicates counted once.
    let most = &refs[..TARGETED_RECIPIENTS_MAX];
    world.engine.admin_send_targeted(APP, &cid, to(most, "to twenty")).await.unwrap();
    // A recipient who does not subscribe gets it while online, not at a later login.
    let mut dave = world.login("dave").await;
    world.engine.admin_send_targeted(APP, &cid, to(&["dave", "dave"], "outside")).await.unwrap();
    assert_eq!(bodies(&dave.messages(1).await), ["outside"]);
    drop(dave);
    let mut dave = world.login("dave").await;
    assert!(dave.settled_messages().await.is_empty());
    // Transient: only who is online among the recipients, nothing stored.
    let mut alice = world.login("alice").await;
    let _ = alice.settled_messages().await;
    let mut quick = to(&["alice"], "now only");
    quick.transient = true;
    world.engine.admin_send_targeted(APP, &cid, quick).await.unwrap();
    let got = alice.messages(1).await;
    assert_eq!((got[0].msg.as_str(), got[0].transient), ("now only", true));
    assert!(!history(&mut alice, &cid).await.contains(&"now only".to_owned()));
}

#[tokio::test]
async fn a_recipient_on_another_node_gets_it_and_the_others_do_not() {
    let (nodes, _hub) = World::cluster(2);
    let cid = service(&nodes[0], &["alice", "bob", "carol"]).await;
    let mut alice = nodes[1].login("alice").await;
    let mut bob = nodes[1].login("bob").await;
    nodes[0].engine.admin_send_targeted(APP, &cid, to(&["bob", "carol"], "psst")).await.unwrap();
    nodes[0].engine.admin_broadcast(APP, &cid, "sys", "all".into()).await.unwrap();
    assert_eq!(bodies(&bob.messages(2).await), ["psst", "all"]);
    assert_eq!(bodies(&alice.messages(1).await), ["all"]);
    assert_eq!(bodies(&alice.settled_messages().await), ["all"]);
    // carol logs in through the other node later and gets it.
    let mut carol = nodes[1].login("carol").await;
    assert_eq!(bodies(&carol.messages(2).await), ["psst", "all"]);
}

#[tokio::test]
async fn a_subscriber_reading_tells_no_other_subscriber() {
    let world = World::new();
    let cid = service(&world, &["alice", "bob"]).await;
    let mut alice = world.login("alice").await;
    let mut bob = world.login("bob").await;
    world.engine.admin_broadcast(APP, &cid, "sys", "news".into()).await.unwrap();
    assert_eq!(bodies(&alice.messages(1).await), ["news"]);
    assert_eq!(bodies(&bob.messages(1).await), ["news"]);
    let read = Request::Read { convs: vec![ReadMark { cid: cid.clone(), ts: None }] };
    assert!(bob.conn.handle(Inbound { serial: None, peer_id: None, request: read }).await);
    let _ = (alice.settled_messages().await, bob.settled_messages().await);
    // bob's read position moved (nothing unread at his next login) ...
    assert_eq!(unread_at_login(&world, "bob", &cid).await, None);
    // ... and alice, subscribed too, heard nothing of it.
    let receipts = alice.pushes.iter().filter(|p| matches!(p, Push::Receipt { .. })).count();
    assert_eq!(receipts, 0, "{:?}", alice.pushes);
}

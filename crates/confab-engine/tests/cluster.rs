//! The engine's cross-node rules, tested without a socket or a network: several engines
//! in one process sharing one in-memory store and one in-process [`ClusterHub`], each
//! an independent node, driven as the gateway drives them.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::{APP, Peer, World};
use confab_engine::AppConfig;
use confab_engine::ports::{HookCaller, HookFuture, Store};
use confab_types::{ConvEvent, ConvStart, ErrorCode, MembersChange, Push, Reply, Request, SessionOpen};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// An app backend whose `_messageReceived` sends a message whose content is
/// `"only bob"` to bob alone (`toPeers`), and lets everything else through unchanged.
#[derive(Debug)]
struct OnlyBob;

impl HookCaller for OnlyBob {
    fn call<'a>(
        &'a self,
        _: &'a AppConfig,
        hook: &'a str,
        params: &'a Value,
        _: Option<&'a str>,
    ) -> HookFuture<'a> {
        let answer = match (hook, params["content"].as_str()) {
            ("_messageReceived", Some("only bob")) => json!({ "toPeers": ["bob"] }),
            _ => json!({}),
        };
        Box::pin(async move { Ok(answer) })
    }
}

/// The message contents `peer` was pushed, once `n` have come.
async fn contents(peer: &mut Peer, n: usize) -> Vec<String> {
    peer.messages(n).await.into_iter().map(|d| d.msg).collect()
}

/// Waits until `peer` got a push that `pick` recognises.
async fn push_matching<T>(peer: &mut Peer, mut pick: impl FnMut(&Push) -> Option<T>) -> T {
    loop {
        peer.take_queued();
        if let Some(found) = peer.pushes.iter().find_map(&mut pick) {
            return found;
        }
        assert!(peer.wait_for_item().await, "the push never came: {:?}", peer.pushes);
    }
}

#[tokio::test]
async fn messages_and_conversation_events_reach_clients_on_other_nodes() {
    let (nodes, _hub) = World::cluster(3);
    let mut alice = nodes[0].login("alice").await;
    let mut bob = nodes[1].login("bob").await;
    let mut carol = nodes[2].login("carol").await;
    let cid = alice.start(&["bob"]).await;
    // bob, on another node, is told he joined.
    let joined = push_matching(&mut bob, |p| match p {
        Push::Conv(c) if c.event == ConvEvent::Joined => Some(c.cid.clone()),
        _ => None,
    })
    .await;
    assert_eq!(joined, cid);
    let (id, t) = alice.say(&cid, "hello from node 0").await;
    let got = bob.messages(1).await;
    assert_eq!(
        (got[0].id.as_str(), got[0].timestamp, got[0].msg.as_str()),
        (id.as_str(), t, "hello from node 0")
    );
    // bob answers from node 1; alice gets it on node 0, after her own message.
    let (_, t2) = bob.say(&cid, "hi from node 1").await;
    assert!(t2 > t);
    let got = alice.messages(1).await;
    assert_eq!(got[0].msg, "hi from node 1");
    // A member added on node 0 is a member on node 1 at once: bob's next message,
    // sent through node 1, reaches carol on node 2.
    let add =
        confab_types::MembersChange { cid: cid.clone(), members: vec!["carol".into()], ..Default::default() };
    assert!(matches!(alice.request(Request::ConvAdd(add)).await, Ok(Reply::ConvAdded(_))));
    push_matching(&mut bob, |p| match p {
        Push::Conv(c) if c.event == ConvEvent::MembersJoined => Some(()),
        _ => None,
    })
    .await;
    bob.say(&cid, "welcome carol").await;
    let got = carol.messages(1).await;
    assert_eq!(got[0].msg, "welcome carol");
}

#[tokio::test]
async fn a_resend_through_another_node_is_acknowledged_as_the_original_and_stored_once() {
    let (nodes, _hub) = World::cluster(2);
    let mut alice = nodes[0].login("alice").await;
    let cid = alice.start(&["bob"]).await;
    let direct = confab_types::DirectRequest {
        cid: cid.clone(),
        msg: "hi".into(),
        dedupe: Some("tok-1".into()),
        ..Default::default()
    };
    let first = alice.send(direct.clone()).await.unwrap();
    // alice's ack was lost with her connection; she comes back through node 1, whose
    // memory never saw the token, and sends again.
    drop(alice);
    nodes[1].clock.advance(5_000);
    let mut again = nodes[1].login("alice").await;
    assert_eq!(again.send(direct).await.unwrap(), first, "the original's id and timestamp");
    let logs = confab_types::LogsQuery { cid, limit: Some(10), ..Default::default() };
    let Reply::Logs { logs } = again.request(Request::Logs(logs)).await.unwrap() else { panic!() };
    assert_eq!(logs.len(), 1, "{logs:?}");
}

#[tokio::test]
async fn a_device_tag_is_one_login_across_nodes() {
    let (nodes, _hub) = World::cluster(2);
    let tagged = || SessionOpen { app_id: APP.into(), tag: Some("mobile".into()), ..SessionOpen::default() };
    let mut phone1 = nodes[0].connect(3);
    let token = match phone1.open("bob", tagged()).await.unwrap() {
        Reply::SessionOpened { session_token: Some(st), .. } => st.token,
        other => panic!("{other:?}"),
    };
    // The same tag logs in on the other node: the first session is told and ended.
    let mut phone2 = nodes[1].connect(3);
    assert!(matches!(phone2.open("bob", tagged()).await, Ok(Reply::SessionOpened { .. })));
    let code = push_matching(&mut phone1, |p| match p {
        Push::SessionClosed { error } => Some(error.code),
        _ => None,
    })
    .await;
    assert_eq!(code, ErrorCode::SessionConflict);
    assert!(!phone1.conn.has_session());
    // Its re-login on the first node finds the tag held on the second: refused.
    let mut again = nodes[0].connect(3);
    let relogin = SessionOpen { reconnect: true, session_token: Some(token), ..tagged() };
    assert_eq!(again.open("bob", relogin).await.unwrap_err().code, ErrorCode::SessionConflict);
    assert!(phone2.conn.has_session());
    // Another tag, on the first node, lives beside it.
    let mut pad = nodes[0].connect(3);
    let pad_open = SessionOpen { tag: Some("pad".into()), ..tagged() };
    assert!(matches!(pad.open("bob", pad_open).await, Ok(Reply::SessionOpened { .. })));
    assert!(phone2.conn.has_session());
}

#[tokio::test]
async fn who_is_online_and_kicks_span_the_nodes() {
    let (nodes, hub) = World::cluster(3);
    let mut alice = nodes[0].login("alice").await;
    let mut bob = nodes[1].login("bob").await;
    let _carol = nodes[2].login("carol").await;
    let query =
        Request::SessionQuery { peer_ids: vec!["bob".into(), "carol".into(), "dave".into(), "bob".into()] };
    let Reply::SessionQueryResult { online } = alice.request(query.clone()).await.unwrap() else { panic!() };
    assert_eq!(online, ["bob", "carol"]);
    // The app's backend kicks bob through node 0; his session on node 1 ends with 4115.
    assert_eq!(nodes[0].engine.admin_kick(APP, "bob", "").await.unwrap(), 0, "no session of bob on node 0");
    let code = push_matching(&mut bob, |p| match p {
        Push::SessionClosed { error } => Some(error.code),
        _ => None,
    })
    .await;
    assert_eq!(code, ErrorCode::KickedByApp);
    // A node that dies takes its sessions with it.
    hub[2].kill();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let Reply::SessionQueryResult { online } = alice.request(query).await.unwrap() else { panic!() };
    assert!(online.is_empty(), "{online:?}");
}

/// `_messageReceived` choosing the recipients (`toPeers`) holds on every node: a
/// member on another node who was not chosen never gets the message, and does not take
/// it for a gap either (no backlog replay brings it); the chosen one gets it.
#[tokio::test]
async fn hook_chosen_recipients_hold_on_other_nodes() {
    let (nodes, _hub) = World::cluster_with_hooks(3, Arc::new(OnlyBob));
    let mut alice = nodes[0].login("alice").await;
    let mut bob = nodes[1].login("bob").await;
    let mut carol = nodes[2].login("carol").await;
    let cid = alice.start(&["bob", "carol"]).await;
    alice.say(&cid, "only bob").await;
    alice.say(&cid, "for all").await;
    assert_eq!(contents(&mut bob, 2).await, ["only bob", "for all"]);
    assert_eq!(contents(&mut carol, 1).await, ["for all"]);
    bob.say(&cid, "from node 1").await;
    assert_eq!(contents(&mut carol, 2).await, ["for all", "from node 1"]);
    assert_eq!(carol.settled_messages().await.len(), 2, "nothing more came to carol");
}

/// The same in a chat room whose sessions are on several nodes.
#[tokio::test]
async fn hook_chosen_recipients_hold_in_chat_rooms_across_nodes() {
    let (nodes, _hub) = World::cluster_with_hooks(3, Arc::new(OnlyBob));
    let mut alice = nodes[0].login("alice").await;
    let mut bob = nodes[1].login("bob").await;
    let mut carol = nodes[2].login("carol").await;
    let start = ConvStart { transient: true, ..ConvStart::default() };
    let Reply::ConvStarted { cid, .. } = alice.request(Request::ConvStart(start)).await.unwrap() else {
        panic!()
    };
    for (peer, me) in [(&mut bob, "bob"), (&mut carol, "carol")] {
        let join = MembersChange { cid: cid.clone(), members: vec![me.into()], ..MembersChange::default() };
        peer.request(Request::ConvAdd(join)).await.unwrap();
    }
    alice.say(&cid, "only bob").await;
    alice.say(&cid, "for all").await;
    assert_eq!(contents(&mut bob, 2).await, ["only bob", "for all"]);
    assert_eq!(contents(&mut carol, 1).await, ["for all"]);
    assert_eq!(carol.settled_messages().await.len(), 1, "nothing more came to carol");
}

/// The notifying hooks count a recipient with a session on another node as online: it
/// is in `_messageSent`'s `onlinePeers` and not in `_receiversOffline` (which would
/// have the backend push it an offline notification).
#[tokio::test]
async fn hook_online_peers_span_the_nodes() {
    let (nodes, _hub) = World::cluster_with_hooks(2, Arc::new(OnlyBob));
    let mut alice = nodes[0].login("alice").await;
    let _bob = nodes[1].login("bob").await;
    let cid = alice.start(&["bob", "dave"]).await;
    let (id, _) = alice.say(&cid, "hello").await;
    let due = nodes[0].store.outbox_due(i64::MAX, 100).await.unwrap();
    let params = |hook: &str| -> Value {
        let call = due.iter().find(|e| e.call.hook == hook && e.call.key.ends_with(&id)).unwrap();
        serde_json::from_str(&call.call.params).unwrap()
    };
    let sent = params("_messageSent");
    assert_eq!((&sent["onlinePeers"], &sent["offlinePeers"]), (&json!(["bob"]), &json!(["dave"])));
    assert_eq!(params("_receiversOffline")["offlinePeers"], json!(["dave"]));
}

/// The app-wide broadcasts `id` has been pushed to `peer` so far (after letting every
/// node's events run).
async fn broadcasts_got(peer: &mut Peer, id: &str) -> usize {
    peer.settled_messages().await.iter().filter(|d| d.id == id).count()
}

/// An app-wide broadcast (`POST /1.2/rtm/broadcasts`) sent through one node reaches
/// every client online on any node: each session once — a subscriber through the
/// service conversation, everyone else through the app-wide push of its own node.
#[tokio::test]
async fn an_app_wide_broadcast_reaches_every_session_on_every_node_once() {
    let (nodes, _hub) = World::cluster(3);
    let (cid, _) = nodes[0].engine.admin_create_system_conversation(APP, Default::default()).await.unwrap();
    nodes[0].engine.admin_subscribe(APP, &cid, "sub", true).await.unwrap();
    // Node 2 holds a copy of the conversation from before "late" subscribed (through
    // node 0): the event that changed it comes before the broadcast's.
    let mut sub = nodes[2].login("sub").await;
    let mut watcher = nodes[2].login("watcher").await;
    nodes[2].engine.admin_broadcasts(APP, &cid, 0, 10).await.unwrap();
    nodes[0].engine.admin_subscribe(APP, &cid, "late", true).await.unwrap();
    let mut late = nodes[2].login("late").await;
    // Non-subscribers: one on the sending node, one elsewhere, one on two nodes.
    let mut here = nodes[0].login("here").await;
    let mut there = nodes[1].login("there").await;
    let mut both0 = nodes[0].login("both").await;
    let mut both1 = nodes[1].login("both").await;
    let (id, _) =
        nodes[0].engine.admin_global_broadcast(APP, &cid, "sys", "to all".into(), false).await.unwrap();
    for (name, peer) in [
        ("sub", &mut sub),
        ("late", &mut late),
        ("watcher", &mut watcher),
        ("here", &mut here),
        ("there", &mut there),
        ("both on node 0", &mut both0),
        ("both on node 1", &mut both1),
    ] {
        let got = peer.messages(1).await;
        assert!(got.iter().any(|d| d.id == id && d.cid == cid && d.msg == "to all"), "{name}: {got:?}");
        assert_eq!(broadcasts_got(peer, &id).await, 1, "{name} got it once");
    }
}

/// `GET /1.2/rtm/stats` on any node counts the clients online on every node, each
/// once, and the distinct clients that logged in today on any node.
#[tokio::test]
async fn stats_count_clients_on_every_node() {
    let (nodes, hub) = World::cluster(3);
    assert_eq!(nodes[1].engine.admin_stats(APP).await.unwrap(), (0, 0));
    let _a = nodes[0].login("a").await;
    let _a2 = nodes[1].login("a").await;
    let b = nodes[1].login("b").await;
    let _c = nodes[2].login("c").await;
    for node in &nodes {
        assert_eq!(node.engine.admin_stats(APP).await.unwrap(), (3, 3), "online, today");
    }
    // b leaves: offline, still one of today's.
    drop(b);
    assert_eq!(nodes[0].engine.admin_stats(APP).await.unwrap(), (2, 3));
    // A node that dies takes its clients offline (a is still on node 0).
    hub[2].kill();
    assert_eq!(nodes[0].engine.admin_stats(APP).await.unwrap(), (1, 3));
    // Another day: only who logs in from now on.
    for node in &nodes {
        node.clock.advance(86_400_000);
    }
    let _d = nodes[1].login("d").await;
    assert_eq!(nodes[0].engine.admin_stats(APP).await.unwrap(), (2, 1), "a is online since yesterday");
}

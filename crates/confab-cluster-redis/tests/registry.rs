//! The Redis cluster back end against a real, throw-away `redis-server`: events between
//! nodes, the atomic device-tag claim, liveness of dead nodes, and a Redis restart.
#![allow(clippy::unwrap_used, missing_docs)]

use confab_cluster_redis::RedisCluster;
use confab_engine::ports::{
    AppCounts, ClaimError, Cluster, ClusterFuture, NodeEvent, NodeEvents, SessionRef, TagClaim,
};
use confab_testkit::redis::start_or_skip;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Collects the events a node hears, and counts its resyncs.
struct Heard(mpsc::UnboundedSender<(String, Option<NodeEvent>)>);

impl NodeEvents for Heard {
    fn node_event(&self, app: &str, event: NodeEvent) -> ClusterFuture<'static, ()> {
        let _ = self.0.send((app.to_owned(), Some(event)));
        Box::pin(std::future::ready(()))
    }

    fn resync(&self) -> ClusterFuture<'static, ()> {
        let _ = self.0.send(("*".into(), None));
        Box::pin(std::future::ready(()))
    }
}

fn heard() -> (Arc<Heard>, mpsc::UnboundedReceiver<(String, Option<NodeEvent>)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Arc::new(Heard(tx)), rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<(String, Option<NodeEvent>)>) -> (String, Option<NodeEvent>) {
    tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("an event in time").expect("open")
}

fn changed(cid: &str) -> NodeEvent {
    NodeEvent::ConvChanged { cid: cid.into() }
}

fn session(node: &RedisCluster, n: u64) -> SessionRef {
    SessionRef { node: node.instance().to_owned(), session: n }
}

/// Polls `f` until it holds (liveness expiry takes seconds by Redis's clock).
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn events_reach_the_other_nodes_in_order_and_never_their_sender() {
    let Some(redis) = start_or_skip("events_reach_the_other_nodes") else { return };
    let a = RedisCluster::connect(&redis.url(), "one", "a").await.unwrap();
    let b = RedisCluster::connect(&redis.url(), "one", "b").await.unwrap();
    let (to_a, mut at_a) = heard();
    let (to_b, mut at_b) = heard();
    a.attach(to_a);
    b.attach(to_b);
    // Subscriptions are live once an event goes through.
    eventually("b subscribed", async || {
        a.publish("app", changed("probe"));
        tokio::time::timeout(Duration::from_millis(200), at_b.recv()).await.is_ok()
    })
    .await;
    while at_b.try_recv().is_ok() {}
    for i in 0..100 {
        a.publish("app", changed(&format!("c{i}")));
    }
    for i in 0..100 {
        assert_eq!(next(&mut at_b).await, ("app".into(), Some(changed(&format!("c{i}")))));
    }
    b.publish("other", changed("from b"));
    assert_eq!(next(&mut at_a).await, ("other".into(), Some(changed("from b"))));
    // a heard none of its own.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(at_a.try_recv().is_err());
}

#[tokio::test]
async fn a_device_tag_is_claimed_atomically_across_nodes_and_dead_nodes_stop_counting() {
    let Some(redis) = start_or_skip("a_device_tag_is_claimed_atomically") else { return };
    let a = RedisCluster::connect(&redis.url(), "one", "a").await.unwrap();
    let b = RedisCluster::connect(&redis.url(), "one", "b").await.unwrap();
    let mobile = Some("mobile");
    assert_eq!(a.claim("app", "bob", session(&a, 1), mobile, TagClaim::Take).await, Ok(vec![]));
    assert_eq!(a.claim("app", "bob", session(&a, 2), None, TagClaim::Take).await, Ok(vec![]));
    // The same tag on node b takes it from node a.
    assert_eq!(b.claim("app", "bob", session(&b, 7), mobile, TagClaim::Take).await, Ok(vec![session(&a, 1)]));
    // A re-login on node a finds it held on node b.
    assert_eq!(a.claim("app", "bob", session(&a, 3), mobile, TagClaim::Keep).await, Err(ClaimError::Held));
    // Apps are apart.
    assert_eq!(a.claim("other", "bob", session(&a, 4), mobile, TagClaim::Keep).await, Ok(vec![]));
    let online = a.online("app", vec!["bob".into(), "carol".into()]).await;
    assert_eq!(online, Some(vec!["bob".to_owned()]));
    // Released sessions no longer count (the release does not wait for Redis).
    a.release("app", "bob", session(&a, 2));
    b.release("app", "bob", session(&b, 7));
    eventually("bob offline once his sessions are released", async || {
        a.online("app", vec!["bob".into()]).await == Some(vec![])
    })
    .await;
    // A node that dies (stops renewing) stops counting: its tag can be kept by a
    // re-login elsewhere, and its clients are offline.
    let c = RedisCluster::connect(&redis.url(), "one", "c").await.unwrap();
    assert_eq!(c.claim("app", "carol", session(&c, 1), mobile, TagClaim::Take).await, Ok(vec![]));
    assert_eq!(b.claim("app", "carol", session(&b, 9), mobile, TagClaim::Keep).await, Err(ClaimError::Held));
    drop(c);
    eventually("carol offline after her node died", async || {
        a.online("app", vec!["carol".into()]).await == Some(vec![])
    })
    .await;
    assert_eq!(b.claim("app", "carol", session(&b, 9), mobile, TagClaim::Keep).await, Ok(vec![]));
}

#[tokio::test]
async fn a_re_login_right_after_its_node_died_waits_for_the_liveness_instead_of_4111() {
    let Some(redis) = start_or_skip("a_re_login_right_after_its_node_died") else { return };
    let a = RedisCluster::connect(&redis.url(), "one", "a").await.unwrap();
    let b = RedisCluster::connect(&redis.url(), "one", "b").await.unwrap();
    let mobile = Some("mobile");
    // dave's device is on c, which dies without a word (no leave: its renewals just stop)
    // while his entry still counts as live.
    let c = RedisCluster::connect(&redis.url(), "one", "c").await.unwrap();
    assert_eq!(c.claim("app", "dave", session(&c, 1), mobile, TagClaim::Take).await, Ok(vec![]));
    drop(c);
    assert_eq!(a.online("app", vec!["dave".into()]).await, Some(vec!["dave".to_owned()]), "c still counts");
    // His SDK logs in again at once through b, insisting on its tag: not refused; it
    // gets in once c stops counting.
    assert_eq!(b.claim("app", "dave", session(&b, 5), mobile, TagClaim::Keep).await, Ok(vec![]));
    // A holder that is alive is still refused to a re-login (after it renewed).
    assert_eq!(a.claim("app", "dave", session(&a, 6), mobile, TagClaim::Keep).await, Err(ClaimError::Held));
    assert_eq!(a.online("app", vec!["dave".into()]).await, Some(vec!["dave".to_owned()]));
    // A login that takes the tag still does so at once.
    assert_eq!(
        a.claim("app", "dave", session(&a, 7), mobile, TagClaim::Take).await,
        Ok(vec![session(&b, 5)])
    );
}

#[tokio::test]
async fn after_a_redis_restart_nodes_register_again_and_resync() {
    let Some(mut redis) = start_or_skip("after_a_redis_restart") else { return };
    let a = RedisCluster::connect(&redis.url(), "one", "a").await.unwrap();
    let b = RedisCluster::connect(&redis.url(), "one", "b").await.unwrap();
    let (to_b, mut at_b) = heard();
    b.attach(to_b);
    // b's first subscription must be live before the restart: one that is first made
    // against the restarted Redis has missed nothing and rightly does not resync.
    eventually("b subscribed", async || {
        a.publish("app", changed("probe"));
        tokio::time::timeout(Duration::from_millis(200), at_b.recv()).await.is_ok()
    })
    .await;
    while at_b.try_recv().is_ok() {}
    assert_eq!(a.claim("app", "bob", session(&a, 1), Some("mobile"), TagClaim::Take).await, Ok(vec![]));
    redis.restart();
    // Redis came back empty: a registers bob again, b subscribes again and resyncs.
    eventually("bob registered again", async || {
        b.online("app", vec!["bob".into()]).await == Some(vec!["bob".to_owned()])
    })
    .await;
    assert_eq!(
        b.claim("app", "bob", session(&b, 2), Some("mobile"), TagClaim::Keep).await,
        Err(ClaimError::Held),
        "the tag is held again"
    );
    eventually("b resynced", async || matches!(at_b.try_recv(), Ok((_, None)))).await;
    eventually("events flow again", async || {
        a.publish("app", changed("after"));
        tokio::time::timeout(Duration::from_millis(200), at_b.recv()).await.is_ok_and(|e| e.is_some())
    })
    .await;
}

#[tokio::test]
async fn clusters_sharing_one_redis_never_see_each_other() {
    let Some(redis) = start_or_skip("clusters_sharing_one_redis") else { return };
    let a = RedisCluster::connect(&redis.url(), "one", "a").await.unwrap();
    let b = RedisCluster::connect(&redis.url(), "one", "b").await.unwrap();
    let other = RedisCluster::connect(&redis.url(), "two", "a").await.unwrap();
    let (to_b, mut at_b) = heard();
    let (to_other, mut at_other) = heard();
    b.attach(to_b);
    other.attach(to_other);
    eventually("b subscribed", async || {
        a.publish("app", changed("probe"));
        tokio::time::timeout(Duration::from_millis(200), at_b.recv()).await.is_ok()
    })
    .await;
    // The same app, client and tag in another cluster are someone else.
    let mobile = Some("mobile");
    assert_eq!(a.claim("app", "bob", session(&a, 1), mobile, TagClaim::Take).await, Ok(vec![]));
    assert_eq!(other.claim("app", "bob", session(&other, 1), mobile, TagClaim::Keep).await, Ok(vec![]));
    assert_eq!(b.claim("app", "bob", session(&b, 1), mobile, TagClaim::Keep).await, Err(ClaimError::Held));
    assert_eq!(other.online("app", vec!["carol".into()]).await, Some(vec![]));
    assert_eq!(a.spend_nonce("app", "n1", 60_000).await, Some(true));
    assert_eq!(other.spend_nonce("app", "n1", 60_000).await, Some(true), "nonces are per cluster");
    assert_eq!(b.spend_nonce("app", "n1", 60_000).await, Some(false));
    // Events stay in their cluster.
    a.publish("app", changed("only for one"));
    assert_eq!(next(&mut at_b).await, ("app".into(), Some(changed("only for one"))));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(at_other.try_recv().is_err(), "cluster two heard cluster one");
}

#[tokio::test]
async fn a_node_that_leaves_stops_counting_at_once() {
    let Some(redis) = start_or_skip("a_node_that_leaves") else { return };
    let a = RedisCluster::connect(&redis.url(), "one", "a").await.unwrap();
    let b = RedisCluster::connect(&redis.url(), "one", "b").await.unwrap();
    let mobile = Some("mobile");
    assert_eq!(a.claim("app", "bob", session(&a, 1), mobile, TagClaim::Take).await, Ok(vec![]));
    assert_eq!(b.claim("app", "bob", session(&b, 2), mobile, TagClaim::Keep).await, Err(ClaimError::Held));
    // A clean shutdown: no waiting for a's liveness (seconds) to run out.
    a.leave().await;
    assert_eq!(b.online("app", vec!["bob".into()]).await, Some(vec![]));
    assert_eq!(b.claim("app", "bob", session(&b, 2), mobile, TagClaim::Keep).await, Ok(vec![]));
    // a's renewals have stopped: it does not come back and register bob again.
    b.release("app", "bob", session(&b, 2));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(b.online("app", vec!["bob".into()]).await, Some(vec![]));
}

fn counts(online: u64, today: u64) -> Option<AppCounts> {
    Some(AppCounts { online, today })
}

#[tokio::test]
async fn app_counts_are_distinct_clients_registered_and_the_days_logins() {
    let Some(mut redis) = start_or_skip("app_counts_are_distinct_clients") else { return };
    let a = RedisCluster::connect(&redis.url(), "one", "a").await.unwrap();
    let b = RedisCluster::connect(&redis.url(), "one", "b").await.unwrap();
    assert_eq!(a.app_counts("app", 1).await, counts(0, 0));
    // bob on both nodes, carol on b; dave in another app.
    let logins =
        [(&a, "app", "bob", 1), (&b, "app", "bob", 2), (&b, "app", "carol", 3), (&a, "other", "dave", 4)];
    for (node, app, client, n) in logins {
        assert_eq!(node.claim(app, client, session(node, n), None, TagClaim::Take).await, Ok(vec![]));
        node.count_login(app, client, 1).await;
    }
    a.count_login("app", "bob", 1).await;
    for node in [&a, &b] {
        assert_eq!(node.app_counts("app", 1).await, counts(2, 2), "bob once, carol");
    }
    assert_eq!(a.app_counts("other", 1).await, counts(1, 1));
    assert_eq!(a.app_counts("app", 2).await, counts(2, 0), "nobody logged in the next day yet");
    // bob stays online while one of his sessions does; then he is one of today's only.
    a.release("app", "bob", session(&a, 1));
    b.release("app", "bob", session(&b, 2));
    eventually("bob offline", async || a.app_counts("app", 1).await == counts(1, 2)).await;
    // A node that dies takes its clients offline once its entries are purged.
    drop(b);
    eventually("carol offline with her node", async || a.app_counts("app", 1).await == counts(0, 2)).await;
    // Redis restarting empty loses the day's logins; the sessions are registered again.
    assert_eq!(a.claim("app", "erin", session(&a, 5), None, TagClaim::Take).await, Ok(vec![]));
    redis.restart();
    eventually("erin registered again", async || a.app_counts("app", 1).await == counts(1, 0)).await;
}

/// The members of a set, read directly (not through the count).
async fn members(redis: &confab_testkit::redis::TempRedis, key: &str) -> u64 {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("SCARD").arg(key).query_async(&mut conn).await.unwrap()
}

async fn online(node: &RedisCluster) -> u64 {
    node.app_counts("app", 1).await.unwrap().online
}

#[tokio::test]
async fn the_online_count_follows_logins_logouts_kicks_purges_and_leaves_without_walking_the_set() {
    let Some(redis) = start_or_skip("the_online_count_follows") else { return };
    let set = "confab:one:online:app";
    let a = RedisCluster::connect(&redis.url(), "one", "a").await.unwrap();
    let b = RedisCluster::connect(&redis.url(), "one", "b").await.unwrap();
    let client = |i: u64| format!("c{i}");
    for i in 0..50 {
        assert_eq!(a.claim("app", &client(i), session(&a, i), None, TagClaim::Take).await, Ok(vec![]));
    }
    // c0 has a second session on a, c1 one on b.
    assert_eq!(a.claim("app", "c0", session(&a, 100), None, TagClaim::Take).await, Ok(vec![]));
    assert_eq!(b.claim("app", "c1", session(&b, 1), None, TagClaim::Take).await, Ok(vec![]));
    assert_eq!(online(&a).await, 50);
    assert_eq!(online(&b).await, 50);
    // Every session on a but c0's second ends: the set itself shrinks as they do, with
    // no count in between (a count no longer walks it to drop who left).
    for i in 0..50 {
        a.release("app", &client(i), session(&a, i));
    }
    eventually("48 clients out of the online set", async || members(&redis, set).await == 2).await;
    assert_eq!(online(&a).await, 2, "c0 and c1 keep a session each");
    // A kick takes every session of the client at once.
    a.forget_client("app", "c0").await;
    assert_eq!(members(&redis, set).await, 1);
    assert_eq!(online(&b).await, 1);
    // A node killed without warning: its clients count until its entries are purged
    // (the purge's grace is far longer than this test's next steps).
    let c = RedisCluster::connect(&redis.url(), "one", "c").await.unwrap();
    for n in 1..=2 {
        assert_eq!(c.claim("app", &format!("d{n}"), session(&c, n), None, TagClaim::Take).await, Ok(vec![]));
    }
    c.room_join("app", "room", "d1", session(&c, 1)).await;
    assert_eq!(online(&a).await, 3);
    drop(c);
    assert_eq!(online(&a).await, 3, "c's clients count until the purge");
    eventually("c's clients purged", async || online(&a).await == 1).await;
    assert_eq!(members(&redis, set).await, 1);
    assert_eq!(a.room_members("app", "room").await, Some(vec![]));
    // A node that leaves removes its entries, one its release never removed included
    // (as when Redis failed that call): the purge never finds a node that left.
    assert_eq!(b.claim("app", "e1", session(&b, 2), None, TagClaim::Take).await, Ok(vec![]));
    assert_eq!(online(&a).await, 2);
    b.leave().await;
    assert_eq!(online(&a).await, 0, "c1 and e1 went with b");
    assert_eq!(members(&redis, set).await, 0);
    assert_eq!(members(&redis, &format!("confab:one:node:{}", b.instance())).await, 0, "b's key set is gone");
    // Left behind by a node that is gone (one that left while a removal failed, or an
    // older version's): the counts repair the set as they go.
    {
        let client = redis::Client::open(redis.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut pipe = redis::pipe();
        pipe.hset("confab:one:p:app:ghost", "gone#00000000/1", "").ignore();
        pipe.sadd(set, "ghost").ignore().sadd(set, "nobody").ignore();
        pipe.query_async::<()>(&mut conn).await.unwrap();
    }
    assert_eq!(a.claim("app", "f1", session(&a, 200), None, TagClaim::Take).await, Ok(vec![]));
    eventually("leftovers repaired", async || online(&a).await == 1).await;
    assert_eq!(members(&redis, set).await, 1, "f1");
}

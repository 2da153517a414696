//! `GET /metrics`: the Prometheus exposition of the real binary, counting what clients
//! did (sessions by protocol, messages, acks, delivery and commit latency, offline
//! backlogs, hook calls and the outbox), its health gauges, its optional bearer token,
//! and that the Grafana dashboard in `deploy/grafana/` queries only what a real scrape
//! shows.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use confab_proto::protobuf::wire::{CommandType, GenericCommand, OpType, SessionCommand};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A minimal HTTP/1.1 GET on loopback, to the first node (each node of a cluster counts
/// its own); returns (status, body).
async fn get(server: &Server, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.node_https()[0].trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// The first node's metrics text.
async fn scrape(server: &Server) -> String {
    let (status, text) = get(server, "/metrics", &[]).await;
    assert_eq!(status, 200, "{text}");
    text
}

/// The value of the sample `series` (name and labels exactly as exposed).
fn sample(text: &str, series: &str) -> f64 {
    try_sample(text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

fn try_sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
}

/// Scrapes until `done` holds for the text (what a login's background work records
/// lands a moment after the client sees its result), at most 10 s; returns the text.
async fn scrape_until(server: &Server, what: &str, done: impl Fn(&str) -> bool) -> String {
    for _ in 0..200 {
        let text = scrape(server).await;
        if done(&text) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("metrics never showed {what}:\n{}", scrape(server).await);
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A protobuf client (`subprotocol`, binary frames) logged in as `peer` on `url`.
async fn protobuf_login(url: &str, subprotocol: &str, peer: &str) -> Ws {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", subprotocol.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let open = GenericCommand {
        cmd: Some(CommandType::Session as i32),
        op: Some(OpType::Open as i32),
        i: Some(1),
        app_id: Some(APP.into()),
        peer_id: Some(peer.into()),
        session_message: Some(SessionCommand::default()),
        ..GenericCommand::default()
    };
    ws.send(Message::Binary(open.encode_to_vec().into())).await.unwrap();
    let opened = protobuf_recv(&mut ws, |g| g.i == Some(1)).await;
    assert_eq!(opened.op, Some(OpType::Opened as i32), "{opened:?}");
    ws
}

async fn protobuf_recv(ws: &mut Ws, pred: impl Fn(&GenericCommand) -> bool) -> GenericCommand {
    let wait = async {
        loop {
            if let Message::Binary(b) = ws.next().await.unwrap().unwrap() {
                let g = GenericCommand::decode(b.as_ref()).unwrap();
                if pred(&g) {
                    return g;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await.expect("a frame in time")
}

#[tokio::test]
async fn metrics_count_sessions_messages_acks_and_delivery_latency() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    // Both on the first node, whose metrics are read.
    let node = &server.node_urls()[0];
    let mut alice = confab_testkit::Client::open(node, APP, "alice", json!({})).await.unwrap();
    let mut bob = confab_testkit::Client::open(node, APP, "bob", json!({})).await.unwrap();
    let before = scrape(&server).await;
    let cid = create(&mut alice, &["bob"]).await;
    for n in 0..3 {
        send(&mut alice, &cid, &format!("hello {n}")).await;
        let d = bob.wait_for("direct", is_direct(&cid)).await.unwrap();
        bob.send(&json!({"cmd": "ack", "cid": cid, "mid": d["id"]})).await.unwrap();
    }
    // The acks have no answer: a request after them is answered after they were handled.
    bob.request(json!({"cmd": "session", "op": "query", "sessionPeerIds": ["alice"]})).await.unwrap();

    let text = scrape(&server).await;
    let moved = |series: &str| sample(&text, series) - sample(&before, series);
    assert!(text.contains("# TYPE confab_requests_total counter\n"), "{text}");
    assert!(sample(&text, "confab_sessions{protocol=\"json\",version=\"2\"}") >= 2.0);
    assert!(sample(&text, "confab_connections{protocol=\"json\",version=\"2\"}") >= 2.0);
    assert!(moved("confab_messages_stored_total") >= 3.0);
    assert!(moved("confab_messages_delivered_total") >= 3.0);
    assert!(moved("confab_acks_total") >= 3.0);
    assert!(moved("confab_requests_total{command=\"direct\",outcome=\"ok\"}") >= 3.0);
    assert!(moved("confab_commit_seconds_count") >= 3.0);
    assert!(moved("confab_commit_seconds_bucket{le=\"+Inf\"}") >= 3.0);
    // Each live message was observed as its frame went to bob's socket, before bob read it.
    assert!(moved("confab_delivery_seconds_count") >= 3.0, "{text}");
    assert_eq!(
        sample(&text, "confab_delivery_seconds_bucket{le=\"+Inf\"}"),
        sample(&text, "confab_delivery_seconds_count")
    );
    assert!(moved("confab_delivery_seconds_sum") > 0.0);
    assert_eq!(sample(&text, "confab_store_up"), 1.0);
    assert_eq!(sample(&text, "confab_broker_up"), 1.0);
    assert_eq!(sample(&text, "confab_hook_outbox_depth"), 0.0, "no hooks, no outbox");
    assert!(sample(&text, "confab_process_resident_bytes") > 1e6);
    assert!(text.contains("confab_build_info{version=\""), "{text}");
    assert!(!text.contains(&cid) && !text.contains("alice"), "no ids as labels");
}

#[tokio::test]
async fn sessions_and_connections_are_labelled_by_protocol_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let node = &server.node_urls()[0];
    let before = scrape(&server).await;
    let _json = confab_testkit::Client::open(node, APP, "j", json!({})).await.unwrap();
    let _v3 = protobuf_login(node, "lc.protobuf2.3", "p3").await;
    let _v1 = protobuf_login(node, "lc.protobuf2.1", "p1").await;
    let text = scrape(&server).await;
    for (labels, at_least) in [
        ("protocol=\"json\",version=\"2\"", 1.0),
        ("protocol=\"protobuf\",version=\"3\"", 1.0),
        ("protocol=\"protobuf\",version=\"1\"", 1.0),
    ] {
        let sessions = format!("confab_sessions{{{labels}}}");
        let connections = format!("confab_connections{{{labels}}}");
        assert!(sample(&text, &sessions) - sample(&before, &sessions) >= at_least, "{sessions}: {text}");
        assert!(sample(&text, &connections) - sample(&before, &connections) >= at_least, "{connections}");
    }
    // The five series of each, whatever is connected.
    assert_eq!(text.lines().filter(|l| l.starts_with("confab_sessions{")).count(), 5);
    assert_eq!(text.lines().filter(|l| l.starts_with("confab_connections{")).count(), 5);
}

#[tokio::test]
async fn offline_backlogs_are_observed_at_login() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let node = &server.node_urls()[0];
    let mut alice = confab_testkit::Client::open(node, APP, "alice", json!({})).await.unwrap();
    let cid = create(&mut alice, &["bob", "carol"]).await;
    for n in 0..4 {
        send(&mut alice, &cid, &format!("while you were away {n}")).await;
    }
    let replayed = "confab_offline_backlog_messages_sum{mode=\"replayed\"}";
    let replays = "confab_offline_backlog_messages_count{mode=\"replayed\"}";
    let unread = "confab_offline_backlog_messages_sum{mode=\"unread\"}";
    let before = scrape(&server).await;

    // bob speaks the v2 JSON protocol: the four messages are pushed at his login.
    let mut bob = confab_testkit::Client::open(node, APP, "bob", json!({})).await.unwrap();
    for _ in 0..4 {
        let d = bob.wait_for("direct", is_direct(&cid)).await.unwrap();
        assert_eq!(d["offline"], true, "{d}");
        bob.send(&json!({"cmd": "ack", "cid": cid, "mid": d["id"]})).await.unwrap();
    }
    let text = scrape_until(&server, "bob's replay", |t| {
        try_sample(t, replays).unwrap_or(0.0) > sample(&before, replays)
    })
    .await;
    assert_eq!(sample(&text, replays) - sample(&before, replays), 1.0, "one login, one observation");
    assert_eq!(sample(&text, replayed) - sample(&before, replayed), 4.0);
    assert!(
        sample(&text, "confab_offline_backlog_messages_bucket{mode=\"replayed\",le=\"5\"}")
            > sample(&before, "confab_offline_backlog_messages_bucket{mode=\"replayed\",le=\"5\"}"),
        "4 is in the bucket of at most 5"
    );

    // carol speaks protobuf version 3: she is told of four unread messages instead.
    let mut carol = protobuf_login(node, "lc.protobuf2.3", "carol").await;
    let counts = protobuf_recv(&mut carol, |g| g.cmd == Some(CommandType::Unread as i32)).await;
    let told: i32 = counts.unread_message.unwrap().convs.iter().map(|c| c.unread).sum();
    assert_eq!(told, 4);
    let text = scrape(&server).await;
    assert_eq!(sample(&text, unread) - sample(&before, unread), 4.0, "{text}");
}

#[tokio::test]
async fn the_hook_outbox_depth_counts_calls_not_yet_delivered() {
    let dir = tempfile::tempdir().unwrap();
    // A hook backend nobody listens on: every notifying call fails and stays queued.
    let config =
        format!("{TEST_APP}[apps.hooks]\nurl = \"http://127.0.0.1:9\"\nkey = \"k\"\ntimeout_ms = 500\n");
    let server = Server::start_config(dir.path(), &config);
    let node = &server.node_urls()[0];
    let before = scrape(&server).await;
    let _alice = confab_testkit::Client::open(node, APP, "alice", json!({})).await.unwrap();
    let failed = "confab_hook_calls_total{outcome=\"failed\"}";
    let text = scrape_until(&server, "a failed hook call", |t| {
        try_sample(t, failed).unwrap_or(0.0) > sample(&before, failed)
    })
    .await;
    assert!(sample(&text, "confab_hook_outbox_depth") >= 1.0, "alice's _clientOnline waits: {text}");
    assert_eq!(sample(&text, "confab_store_up"), 1.0);
}

#[tokio::test]
async fn metrics_token_guards_the_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), &format!("metrics_token = \"s3cret\"\n{TEST_APP}"));
    let (status, body) = get(&server, "/metrics", &[]).await;
    assert_eq!(status, 401, "no token: {body}");
    assert!(!body.contains("confab_"), "{body}");
    let (status, _) = get(&server, "/metrics", &[("Authorization", "Bearer wrong")]).await;
    assert_eq!(status, 401, "wrong token");
    let (status, body) = get(&server, "/metrics", &[("Authorization", "Bearer s3cret")]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("# TYPE confab_sessions gauge\n"), "{body}");
    // The scheme is case-insensitive (RFC 7235): Prometheus and curl users write it either way.
    for header in ["bearer s3cret", "BEARER s3cret", "Bearer  s3cret"] {
        let (status, _) = get(&server, "/metrics", &[("Authorization", header)]).await;
        assert_eq!(status, 200, "{header}");
    }
    for header in ["Basic s3cret", "Bearers3cret", "s3cret", "Bearer"] {
        let (status, _) = get(&server, "/metrics", &[("Authorization", header)]).await;
        assert_eq!(status, 401, "{header}");
    }
}

/// Every `confab_…` identifier in a PromQL string.
fn metric_names(expr: &str, out: &mut BTreeSet<String>) {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut rest = expr;
    while let Some(i) = rest.find("confab_") {
        let preceded = rest[..i].chars().next_back().is_some_and(is_ident);
        let len = rest[i..].find(|c: char| !is_ident(c)).unwrap_or(rest.len() - i);
        if !preceded {
            out.insert(rest[i..i + len].to_string());
        }
        rest = &rest[i + len..];
    }
}

/// Every `expr` of the dashboard, wherever it is nested, and the template queries.
fn dashboard_queries(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "query" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_queries(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

/// The dashboard never rots: each series it queries has a sample in a real scrape of a
/// server that did some work (a delivered, acknowledged message; a login backlog).
#[tokio::test]
async fn the_grafana_dashboard_queries_only_series_a_real_scrape_has() {
    let dashboard: Value =
        serde_json::from_str(include_str!("../../../deploy/grafana/confab-dashboard.json")).unwrap();
    let mut exprs = Vec::new();
    dashboard_queries(&dashboard, &mut exprs);
    let mut used = BTreeSet::new();
    exprs.iter().for_each(|e| metric_names(e, &mut used));
    for required in [
        "confab_delivery_seconds_bucket",
        "confab_offline_backlog_messages_bucket",
        "confab_store_up",
        "confab_broker_up",
        "confab_hook_outbox_depth",
        "confab_sessions",
    ] {
        assert!(used.contains(required), "the dashboard shows {required}: {used:?}");
    }

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let node = &server.node_urls()[0];
    let mut alice = confab_testkit::Client::open(node, APP, "alice", json!({})).await.unwrap();
    let mut bob = confab_testkit::Client::open(node, APP, "bob", json!({})).await.unwrap();
    let cid = create(&mut alice, &["bob"]).await;
    send(&mut alice, &cid, "hi").await;
    let d = bob.wait_for("direct", is_direct(&cid)).await.unwrap();
    bob.send(&json!({"cmd": "ack", "cid": cid, "mid": d["id"]})).await.unwrap();
    bob.request(json!({"cmd": "session", "op": "query", "sessionPeerIds": ["alice"]})).await.unwrap();
    let text = scrape(&server).await;
    let samples: BTreeSet<&str> =
        text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
    for name in &used {
        assert!(
            samples.contains(name.as_str()),
            "the dashboard queries {name}, which a scrape does not show"
        );
    }
}

//! Native TLS (`tls_cert` / `tls_key`): the one port speaks `wss://` and `https://`
//! only, the router hands out `wss://`, plain HTTP is refused without harm, SIGHUP swaps
//! the certificate for new handshakes while open sessions go on, a bad file on reload
//! keeps the old certificate, and a handshake that never comes is cut off.
//!
//! The certificates are self-signed, made at test time by the `openssl` command
//! (`confab_testkit::tls`). Nothing here measures time: waits poll with a generous
//! deadline.
#![allow(clippy::unwrap_used)]

mod common;

use common::{APP, Server, Start, TEST_APP, create, is_direct, send};
use confab_httpc::{Client as Https, ClientConfig as HttpsConfig, StatusCode};
use confab_testkit::tls::{TestCert, client_config, presented_certificate};
use confab_testkit::{Client, WAIT};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A config file serving the test app with TLS from `cert` and `key`, plus `extra`
/// top-level lines.
fn tls_config(cert: &Path, key: &Path, extra: &str) -> String {
    format!("tls_cert = \"{}\"\ntls_key = \"{}\"\n{extra}\n{TEST_APP}", cert.display(), key.display())
}

/// The files a server reads (`live.pem`, `live.key` in `certs`), holding `cert` for now.
fn live_files(certs: &Path, cert: &TestCert) -> (PathBuf, PathBuf) {
    let (live_cert, live_key) = (certs.join("live.pem"), certs.join("live.key"));
    cert.install(&live_cert, &live_key);
    (live_cert, live_key)
}

/// An HTTPS client trusting `cert` (and Mozilla's roots).
fn https(cert: &TestCert) -> Https {
    Https::new(HttpsConfig { extra_roots_pem: cert.pem(), ..HttpsConfig::default() }).unwrap()
}

/// `HOST:PORT` of each node of `server` (one for a single node).
fn node_addrs(server: &Server) -> Vec<String> {
    server.node_https().iter().map(|url| url.trim_start_matches("https://").to_owned()).collect()
}

/// Waits until a new handshake with every node presents `expected` (polling, with a
/// generous deadline); panics if one presents something else than `expected` or
/// `before`.
async fn wait_for_certificate(server: &Server, expected: &TestCert, before: &TestCert) {
    let trust = client_config(&[expected, before]);
    let deadline = Instant::now() + WAIT * 3;
    for addr in node_addrs(server) {
        loop {
            let (der, _) = presented_certificate(&addr, &trust).await.unwrap();
            if der == expected.der {
                break;
            }
            assert_eq!(der, before.der, "{addr} presents a certificate that is neither");
            assert!(Instant::now() < deadline, "{addr} still presents the old certificate");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Waits until every node has logged `line` at least `times` times.
async fn wait_for_log(server: &Server, line: &str, times: usize) {
    let nodes = server.node_https().len();
    let deadline = Instant::now() + WAIT * 3;
    while server.logs().matches(line).count() < times * nodes {
        assert!(Instant::now() < deadline, "{line:?} not logged {times} time(s):\n{}", server.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for the server to close `tcp` (end of file or a reset); panics if it does not
/// within a generous deadline.
async fn closed_by_the_server(tcp: &mut TcpStream) {
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + WAIT * 3;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => panic!("the server left the connection open"),
            Ok(Ok(0) | Err(_)) => return,
            // The server has nothing to say before a handshake; a TLS alert is fine.
            Ok(Ok(_)) => {}
        }
    }
}

/// alice sends `text` in `cid`; bob gets it.
async fn exchange(alice: &mut Client, bob: &mut Client, cid: &str, text: &str) {
    send(alice, cid, text).await;
    let got = bob.wait_for(text, |f| is_direct(cid)(f) && f["msg"] == text).await.unwrap();
    assert_eq!(got["msg"], text);
}

/// `newcomer` joins `cid`; returns once `member` was told, so that on a cluster the
/// node of `member` (who sends next) knows the new member list.
async fn join(newcomer: &mut Client, member: &mut Client, cid: &str) {
    let id = json!(newcomer.peer_id);
    let reply = newcomer.request(json!({"cmd": "conv", "op": "add", "cid": cid, "m": [id]})).await.unwrap();
    assert_eq!(reply["op"], "added", "{reply}");
    let told = |f: &Value| {
        f["cmd"] == "conv"
            && f["op"] == "members-joined"
            && f["cid"] == cid
            && f["m"].as_array().is_some_and(|m| m.contains(&id))
    };
    member.wait_for("members-joined", told).await.unwrap();
}

#[tokio::test]
async fn wss_and_https_share_the_tls_port_and_plain_http_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let a = TestCert::generate(&certs, "a");
    let mut server = Server::start_config(dir.path(), &tls_config(&a.cert, &a.key, ""));
    assert!(server.http.starts_with("https://"), "the ready line names https: {}", server.http);
    assert!(server.ws.starts_with("wss://"), "{}", server.ws);
    let trust = client_config(&[&a]);
    server.tls = Some(trust.clone());

    // Every node presents the configured certificate and agrees on HTTP/1.1.
    for addr in node_addrs(&server) {
        let (der, alpn) = presented_certificate(&addr, &trust).await.unwrap();
        assert_eq!(der, a.der, "{addr}");
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]), "{addr}");
    }

    // A real conversation over wss://.
    let mut alice = server.open("alice").await;
    let mut bob = server.open("bob").await;
    let cid = create(&mut alice, &["alice", "bob"]).await;
    exchange(&mut alice, &mut bob, &cid, "over tls").await;

    // https:// on the same port: the router hands out wss://, health and the REST API answer.
    let client = https(&a);
    let route: Value =
        client.get(&format!("{}/v1/route?appId={APP}", server.http)).send_json().await.unwrap();
    assert_eq!(route["server"], json!(server.ws), "{route}");
    assert!(route["server"].as_str().unwrap().starts_with("wss://"), "{route}");
    let health = client.get(&format!("{}/healthz", server.http)).send().await.unwrap();
    assert_eq!((health.status(), &health.body()[..]), (StatusCode::OK, &b"ok\n"[..]));
    let members = client
        .get(&format!("{}/1.2/rtm/conversations/{cid}/members", server.http))
        .header("X-LC-Id", APP)
        .header("X-LC-Key", "m,master")
        .send_json::<Value>()
        .await
        .unwrap();
    assert_eq!(members["result"].as_array().map(Vec::len), Some(2), "{members}");

    // Plain http:// and ws:// to the TLS port fail cleanly: a 400 that names https.
    let plain = format!("http://{}", server.addr());
    let refused = Https::new(HttpsConfig::default()).unwrap().get(&format!("{plain}/healthz")).send().await;
    let refused = refused.unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(refused.body()).contains("https://"), "{refused:?}");
    let ws = Client::connect(&format!("ws://{}/", server.addr())).await;
    assert!(ws.is_err(), "a plain WebSocket handshake on the TLS port succeeded");
    // A client that does not trust the certificate cannot connect.
    let stranger = client_config(&[&TestCert::generate(&certs, "stranger")]);
    assert!(
        Client::connect_tls(&server.ws, &stranger).await.is_err(),
        "an untrusted certificate was accepted"
    );
    // Bytes that are neither TLS nor HTTP: the connection is closed.
    let mut junk = TcpStream::connect(server.addr()).await.unwrap();
    junk.write_all(b"\x00\x01\x02 not tls\r\n").await.unwrap();
    closed_by_the_server(&mut junk).await;

    // Sockets that connect and say nothing wait in their own tasks: they hold up neither
    // the accept loop nor other clients' handshakes.
    let mut silent = Vec::new();
    for _ in 0..64 {
        silent.push(TcpStream::connect(server.addr()).await.unwrap());
    }
    let mut carol = server.open("carol").await;
    join(&mut carol, &mut alice, &cid).await;

    // None of it disturbed the sessions already open.
    exchange(&mut bob, &mut alice, &cid, "still here").await;
    exchange(&mut alice, &mut carol, &cid, "and carol").await;
    drop(silent);
}

#[tokio::test]
async fn sighup_swaps_the_certificate_for_new_handshakes_and_keeps_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let (a, b) = (TestCert::generate(&certs, "a"), TestCert::generate(&certs, "b"));
    let (live_cert, live_key) = live_files(&certs, &a);
    let mut server = Server::start_config(dir.path(), &tls_config(&live_cert, &live_key, ""));
    server.tls = Some(client_config(&[&a]));
    let mut alice = server.open("alice").await;
    let mut bob = server.open("bob").await;
    let cid = create(&mut alice, &["alice", "bob"]).await;
    exchange(&mut alice, &mut bob, &cid, "before").await;

    b.install(&live_cert, &live_key);
    server.hangup();
    wait_for_certificate(&server, &b, &a).await;
    wait_for_log(&server, "TLS certificate reloaded", 1).await;

    // The sessions opened under the old certificate go on, both ways.
    exchange(&mut alice, &mut bob, &cid, "after the reload").await;
    exchange(&mut bob, &mut alice, &cid, "and back").await;
    // New connections get the new certificate: trusting it alone works, the old alone not.
    let mut carol =
        Client::open_tls(&server.ws, &client_config(&[&b]), APP, "carol", json!({})).await.unwrap();
    join(&mut carol, &mut alice, &cid).await;
    exchange(&mut alice, &mut carol, &cid, "to carol").await;
    assert!(
        Client::connect_tls(&server.ws, &client_config(&[&a])).await.is_err(),
        "a new handshake still presented the old certificate"
    );
    let route: Value =
        https(&b).get(&format!("{}/v1/route?appId={APP}", server.http)).send_json().await.unwrap();
    assert_eq!(route["server"], json!(server.ws));
}

#[tokio::test]
async fn a_reload_with_bad_files_keeps_the_old_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let (a, b) = (TestCert::generate(&certs, "a"), TestCert::generate(&certs, "b"));
    let (live_cert, live_key) = live_files(&certs, &a);
    let mut server = Server::start_config(dir.path(), &tls_config(&live_cert, &live_key, ""));
    let trust_a = client_config(&[&a]);
    server.tls = Some(trust_a.clone());
    let mut alice = server.open("alice").await;
    let mut bob = server.open("bob").await;
    let cid = create(&mut alice, &["alice", "bob"]).await;

    let refused = "TLS certificate not reloaded";
    let bad_cases: [(&str, &dyn Fn()); 3] = [
        ("a certificate file that is not PEM", &|| {
            std::fs::write(&live_cert, "not a certificate\n").unwrap()
        }),
        ("another certificate's key", &|| {
            std::fs::copy(&a.cert, &live_cert).unwrap();
            std::fs::copy(&b.key, &live_key).unwrap();
        }),
        ("no key file", &|| std::fs::remove_file(&live_key).unwrap()),
    ];
    for (times, (case, spoil)) in (1..).zip(bad_cases) {
        spoil();
        server.hangup();
        wait_for_log(&server, refused, times).await;
        for addr in node_addrs(&server) {
            let (der, _) = presented_certificate(&addr, &trust_a).await.unwrap();
            assert_eq!(der, a.der, "{case}: {addr} dropped the old certificate");
        }
        exchange(&mut alice, &mut bob, &cid, case).await;
        let mut carol = server.open("carol").await;
        carol.request(json!({"cmd": "conv", "op": "query", "limit": 1})).await.unwrap();
    }
    // Good files again: the next SIGHUP takes them.
    b.install(&live_cert, &live_key);
    server.hangup();
    wait_for_certificate(&server, &b, &a).await;
    exchange(&mut bob, &mut alice, &cid, "after the good reload").await;
}

#[tokio::test]
async fn a_handshake_that_never_comes_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let a = TestCert::generate(&certs, "a");
    // The header timeout is far longer: what closes the sockets is the TLS deadline.
    let extra = "tls_handshake_timeout_ms = 200\nhttp_header_timeout_secs = 600";
    let mut server = Server::start_config(dir.path(), &tls_config(&a.cert, &a.key, extra));
    let trust = client_config(&[&a]);
    server.tls = Some(trust.clone());
    for addr in node_addrs(&server) {
        // Connects and sends nothing.
        let mut silent = TcpStream::connect(&addr).await.unwrap();
        closed_by_the_server(&mut silent).await;
        // Starts a TLS record and stops.
        let mut halfway = TcpStream::connect(&addr).await.unwrap();
        halfway.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.unwrap();
        closed_by_the_server(&mut halfway).await;
        // A plain HTTP request that never ends its headers is cut off as well.
        let mut slow = TcpStream::connect(&addr).await.unwrap();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        closed_by_the_server(&mut slow).await;
        // A real client still gets through.
        let (der, _) = presented_certificate(&addr, &trust).await.unwrap();
        assert_eq!(der, a.der);
    }
    let mut alice = server.open("alice").await;
    let mut bob = server.open("bob").await;
    let cid = create(&mut alice, &["alice", "bob"]).await;
    exchange(&mut alice, &mut bob, &cid, "fast enough").await;
}

#[tokio::test]
async fn without_tls_sighup_is_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    assert!(server.http.starts_with("http://"), "{}", server.http);
    let mut alice = server.open("alice").await;
    let mut bob = server.open("bob").await;
    let cid = create(&mut alice, &["alice", "bob"]).await;
    server.hangup();
    wait_for_log(&server, "SIGHUP: nothing to reload", 1).await;
    exchange(&mut alice, &mut bob, &cid, "still serving").await;
    let mut carol = server.open("carol").await;
    carol.request(json!({"cmd": "conv", "op": "query", "limit": 1})).await.unwrap();
}

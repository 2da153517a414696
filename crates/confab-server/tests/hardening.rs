//! A hostile client must not stall or exhaust the server: deadlines that chatter does not
//! extend, frames that break the WebSocket rules, sockets that never finish a request.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, Start};
use confab_testkit::{Client, ClientError};
use futures_util::StreamExt;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn heartbeats_do_not_extend_the_login_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("login_timeout_secs = 2\n{}", common::TEST_APP);
    let server = Server::start_config(dir.path(), &config);
    let mut c = Client::connect(&server.ws).await.unwrap();
    // A heartbeat every 500 ms and never a session: at most 40 rounds (20 s, ten times
    // the deadline) before the test gives up.
    let mut code = None;
    for _ in 0..40 {
        if c.send_text("{}".into()).await.is_err() {
            code = Some(c.closed().await.unwrap());
            break;
        }
        match c.wait_for_within("the close", Duration::from_millis(500), |_| false).await {
            Err(ClientError::Closed(closed)) => {
                code = Some(closed);
                break;
            }
            Err(ClientError::Timeout(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // The heartbeats were answered, so the connection was alive and chattering.
    let answered = c.pending().iter().filter(|f| **f == serde_json::json!({})).count();
    assert!(answered >= 2, "only {answered} heartbeats answered");
    assert_eq!(code, Some(Some(4108)), "closed with LOGIN_TIMEOUT despite the heartbeats");
}

#[tokio::test]
async fn a_connection_whose_session_ended_gets_a_fresh_login_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("login_timeout_secs = 2\n{}", common::TEST_APP);
    let server = Server::start_config(dir.path(), &config);
    let mut c = server.open("alice").await;
    // Logged in past the first deadline.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let closed = c.request(serde_json::json!({"cmd": "session", "op": "close"})).await.unwrap();
    assert_eq!(closed["op"], "closed", "{closed}");
    // Not closed at once for the deadline that passed while the session was open...
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.send_text("{}".into()).await.unwrap();
    let hb = c.wait_for_within("heartbeat", Duration::from_secs(1), |f| *f == serde_json::json!({})).await;
    assert!(hb.is_ok(), "{hb:?}");
    // ...but when the new one passes.
    assert_eq!(c.closed().await.unwrap(), Some(4108));
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_closes_with_1007() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws.as_str()).await.unwrap();
    // tungstenite only sends valid text, so the frame is written by hand: FIN + text,
    // masked, 2 bytes, a zero mask (the payload goes as is), and 0xC3 0x28, an invalid
    // two-byte sequence.
    let frame = [0x81, 0x82, 0, 0, 0, 0, 0xC3, 0x28];
    let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = ws.get_mut() else { panic!("plain TCP") };
    tcp.write_all(&frame).await.unwrap();
    let code = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(message) = ws.next().await {
            if let Message::Close(frame) = message.unwrap() {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    })
    .await
    .unwrap();
    assert_eq!(code, Some(1007));
}

/// Reads until the server closes the socket (EOF or a reset); false if it is still open
/// after `bound`. Whatever the server sends first (a response) is skipped.
async fn closed_within(stream: &mut (impl tokio::io::AsyncRead + Unpin), bound: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    tokio::time::timeout(bound, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

fn addr(server: &Server) -> String {
    server.http.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn request_headers_sent_a_line_at_a_time_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("http_header_timeout_secs = 1\n{}", common::TEST_APP);
    let server = Server::start_config(dir.path(), &config);
    let stream = tokio::net::TcpStream::connect(addr(&server)).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    // Slowloris: a request line, then a header line a second, never the blank line.
    let trickle = tokio::spawn(async move {
        write.write_all(b"GET / HTTP/1.1\r\n").await?;
        for n in 0..30 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            write.write_all(format!("X-Slow-{n}: x\r\n").as_bytes()).await?;
        }
        Ok::<_, std::io::Error>(())
    });
    assert!(closed_within(&mut read, Duration::from_secs(15)).await, "the trickling request is still open");
    trickle.abort();

    // A socket that never sends a byte is closed by the same timer.
    let config = format!("http_header_timeout_secs = 1\nhttp_idle_timeout_secs = 300\n{}", common::TEST_APP);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), &config);
    let mut silent = tokio::net::TcpStream::connect(addr(&server)).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(15)).await, "the silent socket is still open");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    // The header timer (which also runs between requests) far away: the idle limit acts.
    let config = format!("http_header_timeout_secs = 300\nhttp_idle_timeout_secs = 1\n{}", common::TEST_APP);
    let server = Server::start_config(dir.path(), &config);
    let mut s = tokio::net::TcpStream::connect(addr(&server)).await.unwrap();
    s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", addr(&server)).as_bytes())
        .await
        .unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    while !response.ends_with(b"ok\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed before the response: {}", String::from_utf8_lossy(&response));
        response.extend_from_slice(&buf[..n]);
    }
    assert!(response.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&response));
    // Kept alive (no `Connection: close`), then idle: closed well before the header timer.
    assert!(closed_within(&mut s, Duration::from_secs(10)).await, "the idle connection is still open");
}

#[tokio::test]
async fn sigterm_ends_with_a_slowloris_socket_open() {
    let dir = tempfile::tempdir().unwrap();
    // Timeouts far beyond the test: only the shutdown can end the half-sent request.
    let config =
        format!("http_header_timeout_secs = 600\nhttp_idle_timeout_secs = 600\n{}", common::TEST_APP);
    let mut server = Server::start_config(dir.path(), &config);
    let mut slow = tokio::net::TcpStream::connect(addr(&server)).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut session = server.open("alice").await;
    // Past the accept, so the server holds the half-sent request.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let exited = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || {
            let exited = server.terminate();
            (exited, server)
        }),
    )
    .await
    .expect("the server exits on SIGTERM although a request is half sent")
    .unwrap();
    assert!(exited.0, "the server exits 0");
    assert_eq!(session.closed().await.unwrap(), Some(1001), "sessions still get their Close frame");
    assert!(
        closed_within(&mut slow, Duration::from_secs(5)).await,
        "the half-sent request's socket is closed"
    );
}

/// `GET /v1/route?appId=test-app` with `headers`; the `server` URL of the answer.
async fn routed_url(server: &Server, headers: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut s = tokio::net::TcpStream::connect(addr(server)).await.unwrap();
    let request = format!(
        "GET /v1/route?appId=test-app HTTP/1.1\r\nHost: {}\r\n{headers}Connection: close\r\n\r\n",
        addr(server)
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let body: serde_json::Value = serde_json::from_str(out.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    body["server"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn forwarded_headers_are_believed_only_from_trusted_proxies() {
    let forwarded = "X-Forwarded-Host: attacker.example\r\nX-Forwarded-Proto: https\r\n";
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let url = routed_url(&server, forwarded).await;
    assert!(!url.contains("attacker.example"), "{url}");
    assert_eq!(url, server.ws, "the Host header, as if nothing was forwarded");
    // A Host that would smuggle a path into the URL is not used either.
    let mut s = tokio::net::TcpStream::connect(addr(&server)).await.unwrap();
    s.write_all(
        b"GET /v1/route?appId=test-app HTTP/1.1\r\nHost: evil.example/x?\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut out = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut s, &mut out).await.unwrap();
    assert!(!out.contains("evil.example"), "{out}");

    // The test client connects from 127.0.0.1: now a trusted proxy.
    let dir = tempfile::tempdir().unwrap();
    let config = format!("trusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\", \"::1\"]\n{}", common::TEST_APP);
    let server = Server::start_config(dir.path(), &config);
    assert_eq!(routed_url(&server, forwarded).await, "wss://attacker.example/");
    assert_eq!(routed_url(&server, "").await, server.ws, "without forwarded headers, the Host");
}

/// Runs `confab serve` with `toml` as its config file to its exit; its status and stderr.
fn run_to_exit(dir: &std::path::Path, toml: &str) -> (std::process::ExitStatus, String) {
    let path = dir.join("confab.toml");
    std::fs::write(&path, toml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test]
async fn a_bad_trusted_proxy_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let (status, stderr) =
        run_to_exit(dir.path(), &format!("trusted_proxies = [\"10.0.0.0/33\"]\n{}", common::TEST_APP));
    assert!(!status.success());
    assert!(stderr.contains("trusted_proxies") && stderr.contains("10.0.0.0/33"), "{stderr}");
    assert!(stderr.contains("prefix length"), "says what is wrong: {stderr}");
}

#[tokio::test]
async fn apps_without_login_signatures_are_warned_about() {
    let warnings = |dir: &std::path::Path| {
        let log = std::fs::read_to_string(dir.join("server.log")).unwrap();
        log.lines()
            .filter(|l| l.contains("WARN") && l.contains("signatures"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}[[apps]]\nid = \"signed-app\"\nkey = \"k\"\nmaster_key = \"m\"\n[apps.signatures]\nlogin = true\n",
        common::TEST_APP
    );
    let _server = Server::start_config(dir.path(), &config);
    let warned = warnings(dir.path());
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains("test-app"), "{warned:?}");
    // The development app on loopback is what it says: no warning.
    let dir = tempfile::tempdir().unwrap();
    let _server = Server::start_with(dir.path(), &[]);
    assert_eq!(warnings(dir.path()), Vec::<String>::new());
}

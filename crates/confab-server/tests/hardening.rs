//! A hostile client must not stall or exhaust the server: deadlines that chatter does not
//! extend, frames that break the WebSocket rules, sockets that never finish a request.
#![allow(clippy::unwrap_used)]

mod common;

use common::Server;
use confab_client::{Client, ClientError};
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

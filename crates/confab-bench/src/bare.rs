//! `confab-bench serve-bare`: a do-nothing WebSocket broadcaster on tokio (multi-threaded)
//! and tungstenite — the `bare-rust` target, the machine's limit beside the
//! single-threaded Node one (bench/peers/bare.mjs). It speaks exactly what bare.mjs
//! speaks: a client's room is its URL path (`/r/NAME`); every text or binary frame it
//! sends is forwarded as is to the other clients of that room and the sender gets "a" —
//! except a text frame starting with `k`, a member's ack, which is read and dropped.
//! It runs as its own process (started by the load tool like the other servers), so its
//! CPU and memory are measured apart from the load tool's.
//!
//! Per connection: one task reads, one writes; the writer drains everything queued for
//! its client into tungstenite's write buffer and flushes once, so a burst of deliveries
//! leaves in one `send`. Frames are shared, not copied, between the members' queues.

use anyhow::{Result, bail};
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// The clients of one room, each with the queue its writer drains.
type Members = RwLock<Vec<(u64, UnboundedSender<Message>)>>;

#[derive(Default)]
struct Rooms {
    rooms: Mutex<HashMap<String, Arc<Members>>>,
    next_id: AtomicU64,
}

impl Rooms {
    fn join(&self, name: &str, tx: UnboundedSender<Message>) -> (u64, Arc<Members>) {
        let id = self.next_id.fetch_add(1, Relaxed);
        // Under the registry's lock, so a concurrent `leave` cannot drop the room between.
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let room = rooms.entry(name.to_owned()).or_default().clone();
        room.write().unwrap_or_else(|e| e.into_inner()).push((id, tx));
        (id, room)
    }

    fn leave(&self, name: &str, id: u64, room: &Members) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let mut members = room.write().unwrap_or_else(|e| e.into_inner());
        members.retain(|(m, _)| *m != id);
        if members.is_empty() {
            rooms.remove(name);
        }
    }
}

/// Whether a text frame is a member's ack (read and dropped, never forwarded).
pub fn is_member_ack(text: &str) -> bool {
    text.as_bytes().first() == Some(&b'k')
}

/// Listens on `listen` (loopback only), prints `listening on http://ADDR` and serves
/// until killed.
pub async fn serve(listen: SocketAddr) -> Result<()> {
    if !listen.ip().is_loopback() {
        bail!("serve-bare listens on loopback addresses only");
    }
    let socket = if listen.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(listen)?;
    // The same backlog as the Node servers.
    let listener = socket.listen(4096)?;
    println!("listening on http://{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let rooms = Arc::new(Rooms::default());
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            // Out of files for a moment: the client sees its connect fail.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        tokio::spawn(connection(tcp, rooms.clone()));
    }
}

async fn connection(tcp: TcpStream, rooms: Arc<Rooms>) {
    if tcp.set_nodelay(true).is_err() {
        return;
    }
    let mut path = String::new();
    // The signature is tungstenite's (its error type is a whole HTTP response).
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| {
        path = req.uri().path().to_owned();
        Ok(resp)
    };
    // The buffer sizes Confab's gateway uses, so idle memory compares like with like.
    let config = WebSocketConfig::default().read_buffer_size(1024).write_buffer_size(4096);
    let Ok(ws) = tokio_tungstenite::accept_hdr_async_with_config(tcp, callback, Some(config)).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = unbounded_channel::<Message>();
    let (id, room) = rooms.join(&path, tx.clone());
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.feed(m).await.is_err() {
                return;
            }
            while let Ok(m) = rx.try_recv() {
                if sink.feed(m).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    let sent = Message::Text(Utf8Bytes::from_static("a"));
    while let Some(Ok(msg)) = stream.next().await {
        match &msg {
            Message::Text(t) if is_member_ack(t.as_str()) => continue,
            Message::Text(_) | Message::Binary(_) => {}
            Message::Close(_) => break,
            _ => continue,
        }
        for (other, queue) in room.read().unwrap_or_else(|e| e.into_inner()).iter() {
            if *other != id {
                let _ = queue.send(msg.clone());
            }
        }
        if tx.send(sent.clone()).is_err() {
            break;
        }
    }
    rooms.leave(&path, id, &room);
    drop(tx);
    writer.abort();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{self, Target};

    #[test]
    fn acks_are_told_from_messages() {
        assert!(is_member_ack(&wire::member_ack(Target::BareRust, "r", "1")));
        assert!(is_member_ack(&wire::member_ack_range(Target::BareRust, "r", 1, 2)));
        assert!(!is_member_ack(&wire::payload(64)));
        assert!(!is_member_ack(""));
    }

    #[tokio::test]
    async fn broadcasts_to_the_room_and_drops_acks() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let rooms = Arc::new(Rooms::default());
        let accept = {
            let rooms = rooms.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else { return };
                    tokio::spawn(connection(tcp, rooms.clone()));
                }
            })
        };
        let src = wire::source_addr(0);
        let mut a = wire::open(Target::BareRust, addr, src, "x", "a").await.expect("a");
        let mut b = wire::open(Target::BareRust, addr, src, "x", "b").await.expect("b");
        let mut c = wire::open(Target::BareRust, addr, src, "y", "c").await.expect("c");
        // Both joined before anyone sends: wait until the server has registered them.
        for _ in 0..100 {
            let n = rooms
                .rooms
                .lock()
                .map_or(0, |r| r.get("/r/x").map_or(0, |m| m.read().map_or(0, |m| m.len())));
            if n == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        b.send_text(&wire::member_ack(Target::BareRust, "x", "1")).await.expect("ack");
        a.send_text("hello").await.expect("send");
        let got = wire::recv_until(&mut a, |_| true).await.expect("a's ack");
        assert_eq!(got, "a");
        // b's own ack was neither forwarded nor answered: the first frame b sees is a's.
        let got = wire::recv_until(&mut b, |_| true).await.expect("delivery");
        assert_eq!(got, "hello");
        c.send_text("other room").await.expect("send");
        assert_eq!(wire::recv_until(&mut c, |_| true).await.expect("c's ack"), "a");
        b.send_text("back").await.expect("send");
        assert_eq!(wire::recv_until(&mut b, |_| true).await.expect("b's ack"), "a");
        assert_eq!(wire::recv_until(&mut a, |_| true).await.expect("delivery"), "back");
        drop((a, b, c));
        for _ in 0..100 {
            if rooms.rooms.lock().map(|r| r.is_empty()).unwrap_or(false) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(rooms.rooms.lock().map(|r| r.is_empty()).unwrap_or(false), "rooms emptied on close");
        accept.abort();
    }
}

//! Hostile input against the real binary: every request over a limit is refused with a
//! clear code naming the limit, changes nothing, and leaves the server serving everyone.
#![allow(clippy::unwrap_used)]

mod common;

use common::{APP, Server, Start, TEST_APP, create, error_code, send};
use confab_testkit::Client;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha1::Sha1;

/// The key a 16,000-segment dotted attribute key: it used to build a value so deep
/// that serializing it overflowed the stack and aborted the process.
fn deep_key(segments: usize) -> String {
    format!("d{}", ".d".repeat(segments - 1))
}

/// Asserts a refusal with `code` whose detail names the limit `key`.
fn refused(frame: &Value, code: i64, key: &str) {
    assert_eq!(error_code(frame), code, "{frame}");
    let text = frame.to_string();
    assert!(text.contains(key), "the refusal should name {key}: {frame}");
}

/// The conversation's attributes as a query returns them.
async fn attributes(client: &mut Client, cid: &str) -> Value {
    let reply = client
        .request(json!({"cmd": "conv", "op": "query", "where": {"objectId": cid}, "limit": 1}))
        .await
        .unwrap();
    reply["results"][0].clone()
}

#[tokio::test]
async fn deep_dotted_keys_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut alice = server.open("alice").await;

    // D1: conv start with a 16,000-segment key (32 KB frame).
    let start = json!({"cmd": "conv", "op": "start", "m": ["x"], "attr": {deep_key(16_000): 1}});
    let reply = alice.request(start).await.unwrap();
    refused(&reply, 4114, "attr_key_depth");

    // D1 and D2 through conv update: refused, and the attributes are still there.
    let reply = alice
        .request(
            json!({"cmd": "conv", "op": "start", "m": ["bob"], "attr": {"name": "keep", "attr": {"a": 1}}}),
        )
        .await
        .unwrap();
    let cid = reply["cid"].as_str().unwrap().to_owned();
    for segments in [16_000, 201, 9] {
        let update = json!({"cmd": "conv", "op": "update", "cid": cid, "attr": {deep_key(segments): 1}});
        refused(&alice.request(update).await.unwrap(), 4114, "attr_key_depth");
    }
    // A value nested past json_depth (32) under an allowed key.
    let mut deep = json!(1);
    for _ in 0..40 {
        deep = json!({ "x": deep });
    }
    let update = json!({"cmd": "conv", "op": "update", "cid": cid, "attr": {"attr.b": deep}});
    refused(&alice.request(update).await.unwrap(), 4114, "json_depth");
    // A legitimate update still works, and nothing else changed.
    let update = json!({"cmd": "conv", "op": "update", "cid": cid, "attr": {"attr.c.d": 2}});
    assert_eq!(alice.request(update).await.unwrap()["op"], "updated");
    let conv = attributes(&mut alice, &cid).await;
    assert_eq!(conv["name"], "keep", "{conv}");
    assert_eq!(conv["attr"], json!({"a": 1, "c": {"d": 2}}), "{conv}");

    // The server is alive for everyone, and keeps the attributes across a restart.
    drop(alice);
    let mut server = server;
    assert!(server.terminate());
    let server = Server::start(dir.path());
    let mut bob = server.open("bob").await;
    let conv = attributes(&mut bob, &cid).await;
    assert_eq!(conv["attr"], json!({"a": 1, "c": {"d": 2}}), "{conv}");
}

#[tokio::test]
async fn attribute_documents_are_bounded_in_bytes_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_limits(dir.path(), "attr_bytes = 2048\nattr_keys = 20");
    let mut alice = server.open("alice").await;
    let cid = create(&mut alice, &["bob"]).await;
    // Grows by 600 bytes an update: the fourth would pass 2048 bytes.
    for i in 0..3 {
        let update =
            json!({"cmd": "conv", "op": "update", "cid": cid, "attr": {format!("k{i}"): "v".repeat(600)}});
        assert_eq!(alice.request(update).await.unwrap()["op"], "updated");
    }
    let update = json!({"cmd": "conv", "op": "update", "cid": cid, "attr": {"k3": "v".repeat(600)}});
    refused(&alice.request(update).await.unwrap(), 4114, "attr_bytes");
    let many: serde_json::Map<String, Value> = (0..20).map(|i| (format!("n{i}"), json!(i))).collect();
    let update = json!({"cmd": "conv", "op": "update", "cid": cid, "attr": {"many": many}});
    refused(&alice.request(update).await.unwrap(), 4114, "attr_keys");
    let conv = attributes(&mut alice, &cid).await;
    assert!(conv.get("k3").is_none() && conv.get("many").is_none(), "{conv}");
    assert_eq!(conv["k2"].as_str().map(str::len), Some(600));
}

#[tokio::test]
async fn the_rest_admin_path_applies_the_same_limits() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(dir.path(), TEST_APP);
    let http = reqwest_like_post(
        &server.http,
        "/1.2/rtm/service-conversations",
        &json!({"name": "news", deep_key(16_000): 1}).to_string(),
    )
    .await;
    assert!(http.starts_with("HTTP/1.1 400"), "{http}");
    assert!(http.contains("attr_key_depth"), "{http}");
    // Still serving.
    let ok = reqwest_like_post(&server.http, "/1.2/rtm/service-conversations", r#"{"name":"news"}"#).await;
    assert!(ok.starts_with("HTTP/1.1 201"), "{ok}");
}

/// A POST with the test app's master key over a plain TCP connection; returns the raw
/// response.
async fn reqwest_like_post(base: &str, path: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = base.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nX-LC-Id: test-app\r\nX-LC-Key: m,master\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    response
}

const MASTER: &str = "sig-master";

fn sign(message: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(MASTER.as_bytes()).unwrap();
    mac.update(message.as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_chat_room_is_written_only_by_who_is_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_config(
        dir.path(),
        &format!(
            "[[apps]]\nid = \"test-app\"\nkey = \"k\"\nmaster_key = \"{MASTER}\"\n\
             [apps.signatures]\nconversation = true\nwindow_secs = 600\n"
        ),
    );
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut owner = server.open("owner").await;
    let s = sign(&format!("{APP}:owner::{t}:n1"));
    let reply = owner
        .request(json!({"cmd": "conv", "op": "start", "m": [], "transient": true, "t": t, "n": "n1", "s": s}))
        .await
        .unwrap();
    assert_eq!(reply["op"], "started", "{reply}");
    let room = reply["cid"].as_str().unwrap().to_owned();

    let mut mallory = server.open("mallory").await;
    let join = json!({"cmd": "conv", "op": "add", "cid": room, "m": ["mallory"]});
    assert_eq!(error_code(&mallory.request(join).await.unwrap()), 4302);
    // D3: refused to join, so refused to send.
    let reply = mallory.request(json!({"cmd": "direct", "cid": room, "msg": "spam"})).await.unwrap();
    assert_eq!(reply["code"], 4401, "{reply}");
    // The owner is in the room and sends; nothing of mallory's was stored.
    send(&mut owner, &room, "hello").await;
    let logs = owner.request(json!({"cmd": "logs", "cid": room, "limit": 10})).await.unwrap();
    let bodies: Vec<&str> =
        logs["logs"].as_array().unwrap().iter().filter_map(|m| m["data"].as_str()).collect();
    assert_eq!(bodies, ["hello"], "{logs}");
}

#[tokio::test]
async fn queries_are_bounded_in_size_regexes_and_steps() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_limits(dir.path(), "query_budget = 400\nwhere_bytes = 4096");
    let mut alice = server.open("alice").await;
    for i in 0..30 {
        alice
            .request(
                json!({"cmd": "conv", "op": "start", "m": ["bob"], "attr": {"name": format!("room {i}")}}),
            )
            .await
            .unwrap();
    }
    let regexes: Vec<Value> = (0..17).map(|i| json!({"name": {"$regex": format!("^x{i}")}})).collect();
    let query = |w: Value| json!({"cmd": "conv", "op": "query", "where": w, "limit": 100});
    let reply = alice.request(query(json!({"$or": regexes[..17]}))).await.unwrap();
    refused(&reply, 4310, "query_regexes");
    let reply = alice.request(query(json!({"name": {"$regex": "a".repeat(257)}}))).await.unwrap();
    refused(&reply, 4310, "regex_chars");
    let ids: Vec<String> = (0..300).map(|i| format!("{i:024}")).collect();
    let reply = alice.request(query(json!({"objectId": {"$in": ids}}))).await.unwrap();
    refused(&reply, 4310, "where_bytes");
    // 16 regexes over 30 conversations: ~16 steps each, past a budget of 400.
    let reply = alice.request(query(json!({"m": "alice", "$or": regexes[..16]}))).await.unwrap();
    refused(&reply, 4310, "query_budget");
    // A cheap query over the same conversations is answered.
    let reply = alice.request(query(json!({"m": "alice", "name": "room 7"}))).await.unwrap();
    assert_eq!(reply["results"].as_array().map(Vec::len), Some(1), "{reply}");
}

#[tokio::test]
async fn resend_tokens_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut alice = server.open("alice").await;
    let cid = create(&mut alice, &["bob"]).await;
    let reply =
        alice.request(json!({"cmd": "direct", "cid": cid, "msg": "m", "dt": "t".repeat(129)})).await.unwrap();
    refused(&reply, 4114, "dedupe_token_bytes");
    let reply =
        alice.request(json!({"cmd": "direct", "cid": cid, "msg": "m", "dt": "t".repeat(128)})).await.unwrap();
    assert_eq!(reply["cmd"], "ack", "{reply}");
    assert!(reply.get("code").is_none(), "{reply}");
}

#[tokio::test]
async fn client_ids_are_checked_and_signature_strings_stay_unambiguous() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let open = |peer: &str| json!({"cmd": "session", "op": "open", "appId": APP, "peerId": peer, "i": 1});
    for bad in ["alice:x", "ali\u{202e}ecl", "zero\u{200b}width", "two words", "line\nbreak"] {
        let mut c = Client::connect(&server.ws).await.unwrap();
        c.send(&open(bad)).await.unwrap();
        assert_eq!(c.closed().await.unwrap(), Some(4103), "{bad:?}");
    }
    for good in
        ["5f3a9c1e2b7d4a0012345678", "user@example.com", "123e4567-e89b-12d3-a456-426614174000", "用户一"]
    {
        let mut c = Client::connect(&server.ws).await.unwrap();
        assert_eq!(c.request(open(good)).await.unwrap()["op"], "opened", "{good:?}");
    }
    let mut alice = server.open("alice").await;
    let reply = alice.request(json!({"cmd": "conv", "op": "start", "m": ["x:"]})).await.unwrap();
    assert_eq!(error_code(&reply), 4114, "{reply}");
}

#[tokio::test]
async fn sessions_per_connection_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_limits(dir.path(), "sessions_per_connection = 3");
    let mut c = Client::connect(&server.ws).await.unwrap();
    let open = |peer: &str| json!({"cmd": "session", "op": "open", "appId": APP, "peerId": peer});
    for peer in ["a", "b", "c", "a"] {
        assert_eq!(c.request(open(peer)).await.unwrap()["op"], "opened", "{peer}");
    }
    refused(&c.request(open("d")).await.unwrap(), 4114, "sessions_per_connection");
    // The connection and its sessions still work.
    let reply = c
        .request(json!({"cmd": "session", "op": "query", "peerId": "a", "sessionPeerIds": ["b", "d"]}))
        .await
        .unwrap();
    assert_eq!(reply["onlineSessionPeerIds"], json!(["b"]), "{reply}");
}

/// The protobuf protocol of the 3.x+ SDKs, where the owner's `blacklist` and `shutup`
/// commands live: just enough of it to log in, send a command and read its answer.
mod pb {
    use confab_proto::protobuf::wire::{
        BlacklistCommand, CommandType, ConvCommand, ConvMemberInfo, ErrorCommand, GenericCommand, OpType,
        SessionCommand,
    };
    use futures_util::{SinkExt, StreamExt};
    use prost::Message as _;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

    /// A logged-in protobuf client that numbers its requests.
    pub struct Pb {
        ws: Ws,
        next: i32,
    }

    fn cmd(cmd: CommandType, op: OpType) -> GenericCommand {
        GenericCommand { cmd: Some(cmd as i32), op: Some(op as i32), ..GenericCommand::default() }
    }

    impl Pb {
        pub async fn login(server: &super::Server, peer: &str) -> Pb {
            let mut req = server.ws.as_str().into_client_request().unwrap();
            req.headers_mut().insert("Sec-WebSocket-Protocol", "lc.protobuf2.3".parse().unwrap());
            let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
            let mut pb = Pb { ws, next: 1 };
            let open = GenericCommand {
                app_id: Some(super::APP.into()),
                peer_id: Some(peer.into()),
                session_message: Some(SessionCommand::default()),
                ..cmd(CommandType::Session, OpType::Open)
            };
            let opened = pb.request(open).await;
            assert!(opened.error_message.is_none(), "{opened:?}");
            pb
        }

        /// Sends `g` and waits for its answer (by serial), skipping pushes.
        pub async fn request(&mut self, mut g: GenericCommand) -> GenericCommand {
            let i = self.next;
            self.next += 1;
            g.i = Some(i);
            self.ws.send(Message::Binary(g.encode_to_vec().into())).await.unwrap();
            let wait = async {
                loop {
                    if let Message::Binary(b) = self.ws.next().await.unwrap().unwrap() {
                        let answer = GenericCommand::decode(&b[..]).unwrap();
                        if answer.i == Some(i) {
                            return answer;
                        }
                    }
                }
            };
            tokio::time::timeout(std::time::Duration::from_secs(10), wait).await.expect("an answer in time")
        }

        /// Starts a conversation (a chat room with `room`) of these members.
        pub async fn start(&mut self, members: &[&str], room: bool) -> String {
            let c = ConvCommand {
                m: members.iter().map(|m| (*m).to_owned()).collect(),
                transient: room.then_some(true),
                ..ConvCommand::default()
            };
            let started = self
                .request(GenericCommand { conv_message: Some(c), ..cmd(CommandType::Conv, OpType::Start) });
            started.await.conv_message.unwrap().cid.unwrap()
        }

        /// Shuts members up (`on`) or lets them speak.
        pub async fn shut_up(&mut self, cid: &str, members: &[&str], on: bool) -> GenericCommand {
            let c = ConvCommand {
                cid: Some(cid.into()),
                m: members.iter().map(|m| (*m).to_owned()).collect(),
                ..ConvCommand::default()
            };
            let op = if on { OpType::AddShutup } else { OpType::RemoveShutup };
            self.request(GenericCommand { conv_message: Some(c), ..cmd(CommandType::Conv, op) }).await
        }

        /// Blocks clients (`on`) or unblocks them.
        pub async fn block(&mut self, cid: &str, members: &[&str], on: bool) -> GenericCommand {
            let b = BlacklistCommand {
                src_cid: Some(cid.into()),
                to_pids: members.iter().map(|m| (*m).to_owned()).collect(),
                ..BlacklistCommand::default()
            };
            let op = if on { OpType::Block } else { OpType::Unblock };
            self.request(GenericCommand { blacklist_message: Some(b), ..cmd(CommandType::Blacklist, op) })
                .await
        }

        /// Makes `member` a manager.
        pub async fn promote(&mut self, cid: &str, member: &str) -> GenericCommand {
            let c = ConvCommand {
                cid: Some(cid.into()),
                target_client_id: Some(member.into()),
                info: Some(ConvMemberInfo {
                    pid: Some(member.into()),
                    role: Some("Manager".into()),
                    info_id: None,
                }),
                ..ConvCommand::default()
            };
            self.request(GenericCommand {
                conv_message: Some(c),
                ..cmd(CommandType::Conv, OpType::MemberInfoUpdate)
            })
            .await
        }

        /// The shut-up members, sorted.
        pub async fn shut_up_list(&mut self, cid: &str) -> Vec<String> {
            let c = ConvCommand { cid: Some(cid.into()), limit: Some(100), ..ConvCommand::default() };
            let page = self
                .request(GenericCommand {
                    conv_message: Some(c),
                    ..cmd(CommandType::Conv, OpType::QueryShutup)
                })
                .await;
            let mut m = page.conv_message.unwrap().m;
            m.sort();
            m
        }

        /// The blocked clients, sorted.
        pub async fn blacklist(&mut self, cid: &str) -> Vec<String> {
            let b = BlacklistCommand {
                src_cid: Some(cid.into()),
                limit: Some(100),
                ..BlacklistCommand::default()
            };
            let page = self
                .request(GenericCommand {
                    blacklist_message: Some(b),
                    ..cmd(CommandType::Blacklist, OpType::Query)
                })
                .await;
            let mut m = page.blacklist_message.unwrap().blocked_pids;
            m.sort();
            m
        }
    }

    /// Asserts an answer is the error `code` whose detail names `key = max`.
    pub fn refused(answer: &GenericCommand, code: i32, limit: &str) -> ErrorCommand {
        let e = answer.error_message.clone().unwrap_or_else(|| panic!("not an error: {answer:?}"));
        assert_eq!(e.code, code, "{e:?}");
        assert!(e.detail.as_deref().is_some_and(|d| d.contains(limit)), "should name {limit}: {e:?}");
        e
    }
}

/// Blacklists and silence lists are bounded: an owner's `blacklist` or `shutup` command
/// that would take one over its limit is refused whole with 4543 naming the limit, and
/// nothing of it is stored; what fits (or adds nothing) still passes.
#[tokio::test]
async fn blacklists_and_silences_are_bounded_for_clients() {
    use pb::{Pb, refused};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_limits(
        dir.path(),
        "blacklist_max = 3\nsilenced_max = 2\nroom_blacklist_max = 2\nroom_silenced_max = 1\nroom_managers_max = 1",
    );
    let mut owner = Pb::login(&server, "owner").await;
    let cid = owner.start(&["m1", "m2", "m3", "m4"], false).await;

    // Shut-up: two fit; two more (one new) would make three, refused whole.
    assert_eq!(
        owner.shut_up(&cid, &["m1", "m2"], true).await.conv_message.unwrap().allowed_pids,
        ["m1", "m2"]
    );
    let e = refused(&owner.shut_up(&cid, &["m2", "m3"], true).await, 4543, "silenced_max = 2");
    assert_eq!(e.reason, "LIST_FULL");
    assert_eq!(owner.shut_up_list(&cid).await, ["m1", "m2"]);
    // Adding nothing new passes; after a removal there is room again.
    owner.shut_up(&cid, &["m2"], true).await.conv_message.unwrap();
    owner.shut_up(&cid, &["m1"], false).await.conv_message.unwrap();
    owner.shut_up(&cid, &["m3"], true).await.conv_message.unwrap();
    assert_eq!(owner.shut_up_list(&cid).await, ["m2", "m3"]);

    // Blacklist: a block that would pass three is refused whole, and the member it
    // named is not removed.
    owner.block(&cid, &["x1", "x2"], true).await.blacklist_message.unwrap();
    refused(&owner.block(&cid, &["x3", "m4"], true).await, 4543, "blacklist_max = 3");
    assert_eq!(owner.blacklist(&cid).await, ["x1", "x2"]);
    let mut m4 = Pb::login(&server, "m4").await;
    assert!(m4.shut_up_list(&cid).await.len() == 2, "m4 is still a member and may look");
    owner.block(&cid, &["x3"], true).await.blacklist_message.unwrap();
    refused(&owner.block(&cid, &["m4"], true).await, 4543, "blacklist_max = 3");
    assert_eq!(owner.blacklist(&cid).await, ["x1", "x2", "x3"]);

    // A chat room takes the room limits: blacklist, shut-up and managers.
    let room = owner.start(&[], true).await;
    refused(&owner.block(&room, &["y1", "y2", "y3"], true).await, 4543, "room_blacklist_max = 2");
    owner.block(&room, &["y1", "y2"], true).await.blacklist_message.unwrap();
    refused(&owner.block(&room, &["y3"], true).await, 4543, "room_blacklist_max = 2");
    owner.shut_up(&room, &["y4"], true).await.conv_message.unwrap();
    refused(&owner.shut_up(&room, &["y5"], true).await, 4543, "room_silenced_max = 1");
    assert!(owner.promote(&room, "y6").await.error_message.is_none());
    refused(&owner.promote(&room, "y7").await, 4543, "room_managers_max = 1");

    // All of it as stored: after a restart the lists hold exactly what was accepted.
    drop((owner, m4));
    let mut server = server;
    assert!(server.terminate());
    let server =
        Server::start_with_limits(dir.path(), "blacklist_max = 3\nsilenced_max = 2\nroom_blacklist_max = 2");
    let mut owner = Pb::login(&server, "owner").await;
    assert_eq!(owner.blacklist(&cid).await, ["x1", "x2", "x3"]);
    assert_eq!(owner.shut_up_list(&cid).await, ["m2", "m3"]);
    let mut y6 = Pb::login(&server, "y6").await;
    // y6 is the room's manager (and y7 is not): y6 may manage, y7 may not.
    let mut y7 = Pb::login(&server, "y7").await;
    assert_eq!(y7.block(&room, &["z"], false).await.error_message.unwrap().code, 4325);
    assert!(y6.block(&room, &["y1"], false).await.error_message.is_none());
}

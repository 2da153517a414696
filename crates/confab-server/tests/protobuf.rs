//! The protobuf protocol of the 3.x+ SDKs: subprotocol negotiation, session tokens,
//! and one conversation shared by protobuf and JSON clients.
#![allow(clippy::unwrap_used)]

mod common;

use common::{APP, Server, Start, create, is_direct};
use confab_proto::protobuf::wire::{
    CommandType, ConvCommand, DirectCommand, GenericCommand, JsonObjectMessage, OpType, SessionCommand,
};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str, subprotocol: &str) -> (Ws, Option<String>) {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", subprotocol.parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    let echoed = resp.headers().get("sec-websocket-protocol").map(|v| v.to_str().unwrap().to_owned());
    (ws, echoed)
}

fn cmd(cmd: CommandType, op: Option<OpType>, i: Option<i32>) -> GenericCommand {
    GenericCommand { cmd: Some(cmd as i32), op: op.map(|o| o as i32), i, ..GenericCommand::default() }
}

async fn send(ws: &mut Ws, g: &GenericCommand, base64: bool) {
    let bytes = g.encode_to_vec();
    let msg = if base64 {
        Message::Text(confab_proto::protobuf::to_base64(&bytes).into())
    } else {
        Message::Binary(bytes.into())
    };
    ws.send(msg).await.unwrap();
}

async fn recv(ws: &mut Ws, pred: impl Fn(&GenericCommand) -> bool) -> GenericCommand {
    let wait = async {
        loop {
            let bytes = match ws.next().await.unwrap().unwrap() {
                Message::Binary(b) => b.to_vec(),
                Message::Text(t) => {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD.decode(t.as_str()).unwrap()
                }
                _ => continue,
            };
            let g = GenericCommand::decode(bytes.as_slice()).unwrap();
            if pred(&g) {
                return g;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), wait).await.expect("frame in time")
}

fn open(peer: &str, i: i32, session: SessionCommand) -> GenericCommand {
    GenericCommand {
        app_id: Some(APP.into()),
        peer_id: Some(peer.into()),
        session_message: Some(session),
        ..cmd(CommandType::Session, Some(OpType::Open), Some(i))
    }
}

#[tokio::test]
async fn handshake_echo_login_tokens_and_echo() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    for (sub, base64) in [("lc.protobuf2.3", false), ("lc.proto2base64.3", true), ("lc.protobuf2.1", false)] {
        let (mut ws, echoed) = connect(&server.ws, sub).await;
        assert_eq!(echoed.as_deref(), Some(sub));
        let login =
            SessionCommand { ua: Some("js/4.3.1".into()), config_bitmap: Some(59), ..Default::default() };
        send(&mut ws, &open("alice", 1, login), base64).await;
        let opened = recv(&mut ws, |g| g.i == Some(1)).await;
        assert_eq!(opened.op, Some(OpType::Opened as i32));
        assert_eq!(opened.peer_id.as_deref(), Some("alice"));
        let s = opened.session_message.unwrap();
        let st = s.st.clone().unwrap();
        assert!(s.st_ttl.unwrap() > 0);
        send(&mut ws, &cmd(CommandType::Echo, None, Some(2)), base64).await;
        let echo = recv(&mut ws, |g| g.i == Some(2)).await;
        assert_eq!(echo.cmd, Some(CommandType::Echo as i32));
        // Re-open after a reconnect with the token.
        let (mut ws2, _) = connect(&server.ws, sub).await;
        let again = SessionCommand { r: Some(true), st: Some(st.clone()), ..Default::default() };
        send(&mut ws2, &open("alice", 1, again), base64).await;
        assert_eq!(recv(&mut ws2, |g| g.i == Some(1)).await.op, Some(OpType::Opened as i32));
        // Someone else's token, or garbage: 4112, with code and reason.
        let (mut ws3, _) = connect(&server.ws, sub).await;
        let stolen = SessionCommand { r: Some(true), st: Some(st), ..Default::default() };
        send(&mut ws3, &open("mallory", 1, stolen), base64).await;
        let e = recv(&mut ws3, |g| g.i == Some(1)).await;
        assert_eq!(e.cmd, Some(CommandType::Error as i32));
        let e = e.error_message.unwrap();
        assert_eq!((e.code, e.reason.as_str()), (4112, "SESSION_TOKEN_EXPIRED"));
        // Close answers with the same serial.
        send(&mut ws, &cmd(CommandType::Session, Some(OpType::Close), Some(3)), base64).await;
        assert_eq!(recv(&mut ws, |g| g.i == Some(3)).await.op, Some(OpType::Closed as i32));
    }
}

#[tokio::test]
async fn unsupported_subprotocols_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut req = server.ws.as_str().into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "lc.json.3".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
}

#[tokio::test]
async fn protobuf_and_json_clients_share_a_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut json_alice = server.open("alice").await;
    let (mut bob, _) = connect(&server.ws, "lc.protobuf2.3").await;
    send(&mut bob, &open("bob", 1, SessionCommand::default()), false).await;
    recv(&mut bob, |g| g.i == Some(1)).await;
    let cid = create(&mut json_alice, &["bob"]).await;
    // bob (protobuf) sees the membership pushes, addressed to him, service 2.
    let joined = recv(&mut bob, |g| g.op == Some(OpType::Joined as i32)).await;
    assert_eq!((joined.peer_id.as_deref(), joined.service, joined.i), (Some("bob"), Some(2), None));
    assert_eq!(joined.conv_message.unwrap().init_by.as_deref(), Some("alice"));
    let mj = recv(&mut bob, |g| g.op == Some(OpType::MembersJoined as i32)).await;
    assert_eq!(mj.conv_message.unwrap().m, ["alice", "bob"]);
    // JSON -> protobuf.
    let ack = common::send(&mut json_alice, &cid, "from json").await;
    let d = recv(&mut bob, |g| g.cmd == Some(CommandType::Direct as i32)).await;
    let dm = d.direct_message.unwrap();
    assert_eq!(
        (dm.msg.as_deref(), dm.id.as_deref(), dm.from_peer_id.as_deref()),
        (Some("from json"), ack["uid"].as_str(), Some("alice"))
    );
    assert_eq!(d.peer_id.as_deref(), Some("bob"));
    // protobuf -> JSON, with a receipt back to protobuf.
    let direct = GenericCommand {
        direct_message: Some(DirectCommand {
            cid: Some(cid.clone()),
            msg: Some("from protobuf".into()),
            r: Some(true),
            ..Default::default()
        }),
        ..cmd(CommandType::Direct, None, Some(5))
    };
    send(&mut bob, &direct, false).await;
    let ack = recv(&mut bob, |g| g.i == Some(5)).await;
    let am = ack.ack_message.unwrap();
    assert!(am.code.is_none(), "success acks carry no code");
    let uid = am.uid.unwrap();
    let got = json_alice.wait_for("direct", is_direct(&cid)).await.unwrap();
    assert_eq!((got["msg"].as_str(), got["id"].as_str()), (Some("from protobuf"), Some(uid.as_str())));
    json_alice.send(&json!({"cmd": "ack", "cid": cid, "mid": uid})).await.unwrap();
    let rcp = recv(&mut bob, |g| g.cmd == Some(CommandType::Rcp as i32)).await.rcp_message.unwrap();
    assert_eq!((rcp.id.as_deref(), rcp.from.as_deref()), (Some(uid.as_str()), Some("alice")));
    // Queries answer with JSON inside the protobuf.
    let query = GenericCommand {
        conv_message: Some(ConvCommand {
            r#where: Some(JsonObjectMessage { data: json!({"objectId": cid}).to_string() }),
            flag: Some(2),
            ..Default::default()
        }),
        ..cmd(CommandType::Conv, Some(OpType::Query), Some(6))
    };
    send(&mut bob, &query, false).await;
    let results = recv(&mut bob, |g| g.i == Some(6)).await.conv_message.unwrap().results.unwrap();
    let results: serde_json::Value = serde_json::from_str(&results.data).unwrap();
    assert_eq!(results[0]["objectId"], json!(cid));
    assert_eq!(results[0]["msg"], "from protobuf");
    // Unsupported commands fail fast with an error frame instead of a 20 s timeout.
    let pubsub = cmd(CommandType::Pubsub, Some(OpType::Subscribe), Some(7));
    send(&mut bob, &pubsub, false).await;
    let e = recv(&mut bob, |g| g.i == Some(7)).await.error_message.unwrap();
    assert_eq!(e.code, 4114);
}

async fn login(server: &Server, sub: &str, peer: &str, session: SessionCommand) -> (Ws, GenericCommand) {
    let (mut ws, _) = connect(&server.ws, sub).await;
    send(&mut ws, &open(peer, 1, session), false).await;
    let opened = recv(&mut ws, |g| g.i == Some(1)).await;
    (ws, opened)
}

#[tokio::test]
async fn version_3_gets_unread_counts_and_read_syncs_devices() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut alice = server.open("alice").await;
    let cid = create(&mut alice, &["carol", "dave"]).await;
    common::send(&mut alice, &cid, "one").await;
    let last = common::send(&mut alice, &cid, "two").await;
    // Version 3: no backlog, one unread push with the count and the last message.
    let (mut carol, _) = login(&server, "lc.protobuf2.3", "carol", SessionCommand::default()).await;
    let unread = recv(&mut carol, |g| g.cmd == Some(CommandType::Unread as i32)).await;
    let u = unread.unread_message.unwrap();
    assert!(u.notif_time.is_some());
    assert_eq!(u.convs.len(), 1);
    let t = &u.convs[0];
    assert_eq!(
        (t.cid.as_str(), t.unread, t.mid.as_deref(), t.data.as_deref()),
        (cid.as_str(), 2, last["uid"].as_str(), Some("two"))
    );
    // Version 1: the backlog itself.
    let (mut dave, _) = login(&server, "lc.protobuf2.1", "dave", SessionCommand::default()).await;
    for body in ["one", "two"] {
        let d = recv(&mut dave, |g| g.cmd == Some(CommandType::Direct as i32)).await.direct_message.unwrap();
        assert_eq!((d.msg.as_deref(), d.offline), (Some(body), Some(true)));
    }
    // A second device of carol; the first reads: the second is told 0, alice gets a read receipt.
    let (mut carol2, _) = login(&server, "lc.proto2base64.3", "carol", SessionCommand::default()).await;
    recv(&mut carol2, |g| g.cmd == Some(CommandType::Unread as i32)).await;
    let read = GenericCommand {
        read_message: Some(confab_proto::protobuf::wire::ReadCommand {
            convs: vec![confab_proto::protobuf::wire::ReadTuple {
                cid: cid.clone(),
                timestamp: last["t"].as_i64(),
                mid: None,
            }],
            ..Default::default()
        }),
        ..cmd(CommandType::Read, None, None)
    };
    send(&mut carol, &read, false).await;
    let zero = recv(&mut carol2, |g| g.cmd == Some(CommandType::Unread as i32)).await.unread_message.unwrap();
    assert_eq!((zero.convs[0].cid.as_str(), zero.convs[0].unread), (cid.as_str(), 0));
    let rcp = alice.wait_for("read receipt", |f| f["cmd"] == "rcp").await.unwrap();
    assert_eq!(
        (rcp["read"].clone(), rcp["from"].clone(), rcp["id"].clone()),
        (json!(true), json!("carol"), last["uid"].clone())
    );
    // Read: nothing unread at the next login.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (mut carol3, _) = login(&server, "lc.protobuf2.3", "carol", SessionCommand::default()).await;
    let none = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        recv(&mut carol3, |g| g.cmd == Some(CommandType::Unread as i32)),
    )
    .await;
    assert!(none.is_err(), "no unread push when nothing is unread");
}

#[tokio::test]
async fn a_device_tag_allows_one_session() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mobile = || SessionCommand { tag: Some("Mobile".into()), ..Default::default() };
    let (mut first, opened) = login(&server, "lc.protobuf2.3", "alice", mobile()).await;
    let st = opened.session_message.unwrap().st.unwrap();
    // Untagged and default-tagged sessions coexist with it.
    let (_web, ok) = login(
        &server,
        "lc.protobuf2.3",
        "alice",
        SessionCommand { tag: Some("default".into()), ..Default::default() },
    )
    .await;
    assert_eq!(ok.op, Some(OpType::Opened as i32));
    // A new login with the same tag ends the first session (the socket stays).
    let (_second, ok) = login(&server, "lc.protobuf2.3", "alice", mobile()).await;
    assert_eq!(ok.op, Some(OpType::Opened as i32));
    let closed = recv(&mut first, |g| g.op == Some(OpType::Closed as i32)).await;
    assert_eq!((closed.i, closed.peer_id.as_deref()), (None, Some("alice")));
    assert_eq!(closed.session_message.unwrap().code, Some(4111));
    send(&mut first, &cmd(CommandType::Session, Some(OpType::Query), Some(9)), false).await;
    assert_eq!(recv(&mut first, |g| g.i == Some(9)).await.error_message.unwrap().code, 4105);
    // The kicked device's automatic re-login (its token carries the tag) is refused.
    let (mut retry, _) = connect(&server.ws, "lc.protobuf2.3").await;
    send(
        &mut retry,
        &open("alice", 1, SessionCommand { r: Some(true), st: Some(st), ..Default::default() }),
        false,
    )
    .await;
    assert_eq!(recv(&mut retry, |g| g.i == Some(1)).await.error_message.unwrap().code, 4111);
}

#[tokio::test]
async fn roles_shut_up_and_blacklist() {
    use confab_proto::protobuf::wire::{BlacklistCommand, ConvMemberInfo};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (mut owner, _) = login(&server, "lc.protobuf2.3", "owner", SessionCommand::default()).await;
    let (mut mgr, _) = login(&server, "lc.protobuf2.3", "mgr", SessionCommand::default()).await;
    let (mut xx, _) = login(&server, "lc.protobuf2.3", "xx", SessionCommand::default()).await;
    let start = GenericCommand {
        conv_message: Some(ConvCommand {
            m: vec!["owner".into(), "mgr".into(), "xx".into()],
            ..Default::default()
        }),
        ..cmd(CommandType::Conv, Some(OpType::Start), Some(2))
    };
    send(&mut owner, &start, false).await;
    let cid = recv(&mut owner, |g| g.i == Some(2)).await.conv_message.unwrap().cid.unwrap();
    let conv_cmd = |op: OpType, i: i32, c: ConvCommand| GenericCommand {
        conv_message: Some(ConvCommand { cid: Some(cid.clone()), ..c }),
        ..cmd(CommandType::Conv, Some(op), Some(i))
    };
    // A plain member may not manage; the owner makes mgr a manager, everyone is told.
    let promote = |i| {
        conv_cmd(
            OpType::MemberInfoUpdate,
            i,
            ConvCommand {
                target_client_id: Some("mgr".into()),
                info: Some(ConvMemberInfo {
                    pid: Some("mgr".into()),
                    role: Some("Manager".into()),
                    info_id: None,
                }),
                ..Default::default()
            },
        )
    };
    send(&mut xx, &promote(3), false).await;
    let e = recv(&mut xx, |g| g.i == Some(3)).await.error_message.unwrap();
    assert_eq!((e.code, e.reason.as_str()), (4325, "CONVERSATION_OPERATION_UNAUTHORIZED"));
    send(&mut owner, &promote(4), false).await;
    assert_eq!(recv(&mut owner, |g| g.i == Some(4)).await.op, Some(OpType::MemberInfoUpdated as i32));
    let changed =
        recv(&mut xx, |g| g.op == Some(OpType::MemberInfoChanged as i32)).await.conv_message.unwrap();
    assert_eq!(changed.info.unwrap().role.as_deref(), Some("Manager"));
    // The manager shuts xx up: xx is told, cannot send, shows in the list.
    let shut = conv_cmd(
        OpType::AddShutup,
        5,
        ConvCommand { m: vec!["xx".into(), "owner".into()], ..Default::default() },
    );
    send(&mut mgr, &shut, false).await;
    let r = recv(&mut mgr, |g| g.i == Some(5)).await.conv_message.unwrap();
    assert_eq!(r.allowed_pids, ["xx"]);
    assert_eq!(r.failed_pids[0].pids, ["owner"], "nobody shuts the owner up");
    assert_eq!(
        recv(&mut xx, |g| g.op == Some(OpType::Shutuped as i32))
            .await
            .conv_message
            .unwrap()
            .init_by
            .as_deref(),
        Some("mgr")
    );
    let members_shut = recv(&mut owner, |g| g.op == Some(OpType::MembersShutuped as i32)).await;
    assert_eq!(members_shut.conv_message.unwrap().m, ["xx"]);
    let direct = GenericCommand {
        direct_message: Some(DirectCommand {
            cid: Some(cid.clone()),
            msg: Some("hey".into()),
            ..Default::default()
        }),
        ..cmd(CommandType::Direct, None, Some(6))
    };
    send(&mut xx, &direct, false).await;
    assert_eq!(recv(&mut xx, |g| g.i == Some(6)).await.error_message.unwrap().code, 4308);
    send(&mut owner, &conv_cmd(OpType::QueryShutup, 7, ConvCommand::default()), false).await;
    assert_eq!(recv(&mut owner, |g| g.i == Some(7)).await.conv_message.unwrap().m, ["xx"]);
    // Blocking removes xx, who cannot join again until unblocked.
    let block = |op: OpType, i| GenericCommand {
        blacklist_message: Some(BlacklistCommand {
            src_cid: Some(cid.clone()),
            to_pids: vec!["xx".into()],
            ..Default::default()
        }),
        ..cmd(CommandType::Blacklist, Some(op), Some(i))
    };
    send(&mut owner, &block(OpType::Block, 8), false).await;
    assert_eq!(recv(&mut owner, |g| g.i == Some(8)).await.blacklist_message.unwrap().allowed_pids, ["xx"]);
    recv(&mut xx, |g| g.op == Some(OpType::Blocked as i32)).await;
    recv(&mut xx, |g| g.op == Some(OpType::Left as i32)).await;
    assert_eq!(
        recv(&mut mgr, |g| g.op == Some(OpType::MembersLeft as i32)).await.conv_message.unwrap().m,
        ["xx"]
    );
    let join = conv_cmd(OpType::Add, 9, ConvCommand { m: vec!["xx".into()], ..Default::default() });
    send(&mut xx, &join, false).await;
    assert_eq!(recv(&mut xx, |g| g.i == Some(9)).await.error_message.unwrap().code, 4315);
    let query = GenericCommand {
        blacklist_message: Some(BlacklistCommand { src_cid: Some(cid.clone()), ..Default::default() }),
        ..cmd(CommandType::Blacklist, Some(OpType::Query), Some(10))
    };
    send(&mut mgr, &query, false).await;
    assert_eq!(recv(&mut mgr, |g| g.i == Some(10)).await.blacklist_message.unwrap().blocked_pids, ["xx"]);
    send(&mut owner, &block(OpType::Unblock, 11), false).await;
    recv(&mut owner, |g| g.i == Some(11)).await;
    recv(&mut xx, |g| g.op == Some(OpType::Unblocked as i32)).await;
    let rejoin = conv_cmd(OpType::Add, 12, ConvCommand { m: vec!["xx".into()], ..Default::default() });
    send(&mut xx, &rejoin, false).await;
    assert_eq!(recv(&mut xx, |g| g.i == Some(12)).await.conv_message.unwrap().allowed_pids, ["xx"]);
}

#[tokio::test]
async fn binary_bodies_and_mentions() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (mut a, _) = login(&server, "lc.protobuf2.3", "a", SessionCommand::default()).await;
    let start = GenericCommand {
        conv_message: Some(ConvCommand { m: vec!["a".into(), "b".into()], ..Default::default() }),
        ..cmd(CommandType::Conv, Some(OpType::Start), Some(2))
    };
    send(&mut a, &start, false).await;
    let cid = recv(&mut a, |g| g.i == Some(2)).await.conv_message.unwrap().cid.unwrap();
    let bytes = vec![0u8, 1, 2, 250, 255];
    let binary = GenericCommand {
        direct_message: Some(DirectCommand {
            cid: Some(cid.clone()),
            binary_msg: Some(bytes.clone()),
            ..Default::default()
        }),
        ..cmd(CommandType::Direct, None, Some(3))
    };
    send(&mut a, &binary, false).await;
    recv(&mut a, |g| g.i == Some(3)).await;
    let mention = GenericCommand {
        direct_message: Some(DirectCommand {
            cid: Some(cid.clone()),
            msg: Some("@b".into()),
            mention_pids: vec!["b".into()],
            ..Default::default()
        }),
        ..cmd(CommandType::Direct, None, Some(4))
    };
    send(&mut a, &mention, false).await;
    recv(&mut a, |g| g.i == Some(4)).await;
    // b (version 3) is told it was mentioned; its version-1 device gets the bytes back.
    let (mut b, _) = login(&server, "lc.protobuf2.3", "b", SessionCommand::default()).await;
    let u = recv(&mut b, |g| g.cmd == Some(CommandType::Unread as i32)).await.unread_message.unwrap();
    assert_eq!((u.convs[0].unread, u.convs[0].mentioned), (2, Some(true)));
    let (mut b1, _) = login(&server, "lc.protobuf2.1", "b", SessionCommand::default()).await;
    let first = recv(&mut b1, |g| g.cmd == Some(CommandType::Direct as i32)).await.direct_message.unwrap();
    assert_eq!((first.binary_msg.as_deref(), first.msg.as_deref()), (Some(bytes.as_slice()), None));
    let second = recv(&mut b1, |g| g.cmd == Some(CommandType::Direct as i32)).await.direct_message.unwrap();
    assert_eq!(second.mention_pids, ["b"]);
    // History marks the binary body and carries it as base64.
    let logs = GenericCommand {
        logs_message: Some(confab_proto::protobuf::wire::LogsCommand {
            cid: Some(cid.clone()),
            ..Default::default()
        }),
        ..cmd(CommandType::Logs, None, Some(5))
    };
    send(&mut a, &logs, false).await;
    let items = recv(&mut a, |g| g.i == Some(5)).await.logs_message.unwrap().logs;
    assert_eq!(
        (items[0].bin, items[0].data.as_deref()),
        (Some(true), Some(confab_proto::protobuf::to_base64(&bytes).as_str()))
    );
    assert_eq!(items[1].mention_pids, ["b"]);
}

#[tokio::test]
async fn several_clients_share_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (mut ws, _) = connect(&server.ws, "lc.protobuf2.3").await;
    send(&mut ws, &open("a", 1, SessionCommand::default()), false).await;
    assert_eq!(recv(&mut ws, |g| g.i == Some(1)).await.peer_id.as_deref(), Some("a"));
    send(&mut ws, &open("b", 2, SessionCommand::default()), false).await;
    assert_eq!(recv(&mut ws, |g| g.i == Some(2)).await.peer_id.as_deref(), Some("b"));
    // a creates (addressed by peerId); both clients on the socket get their own pushes.
    let start = GenericCommand {
        peer_id: Some("a".into()),
        conv_message: Some(ConvCommand { m: vec!["a".into(), "b".into()], ..Default::default() }),
        ..cmd(CommandType::Conv, Some(OpType::Start), Some(3))
    };
    send(&mut ws, &start, false).await;
    let cid = recv(&mut ws, |g| g.i == Some(3)).await.conv_message.unwrap().cid.unwrap();
    let mut joined = Vec::new();
    for _ in 0..2 {
        let j = recv(&mut ws, |g| g.op == Some(OpType::Joined as i32)).await;
        assert_eq!(j.conv_message.unwrap().init_by.as_deref(), Some("a"));
        joined.push(j.peer_id.unwrap());
    }
    joined.sort();
    assert_eq!(joined, ["a", "b"]);
    // b sends on the shared socket; a (same socket, other client) receives it.
    let direct = GenericCommand {
        peer_id: Some("b".into()),
        direct_message: Some(DirectCommand {
            cid: Some(cid.clone()),
            msg: Some("hi a".into()),
            ..Default::default()
        }),
        ..cmd(CommandType::Direct, None, Some(4))
    };
    send(&mut ws, &direct, false).await;
    let d = recv(&mut ws, |g| g.cmd == Some(CommandType::Direct as i32)).await;
    assert_eq!(d.peer_id.as_deref(), Some("a"));
    assert_eq!(d.direct_message.unwrap().from_peer_id.as_deref(), Some("b"));
    // Closing b leaves a logged in.
    let close = GenericCommand {
        peer_id: Some("b".into()),
        ..cmd(CommandType::Session, Some(OpType::Close), Some(5))
    };
    send(&mut ws, &close, false).await;
    recv(&mut ws, |g| g.i == Some(5)).await;
    let query = GenericCommand {
        session_message: Some(SessionCommand {
            session_peer_ids: vec!["a".into(), "b".into()],
            ..Default::default()
        }),
        ..cmd(CommandType::Session, Some(OpType::Query), Some(6))
    };
    send(&mut ws, &query, false).await;
    let online = recv(&mut ws, |g| g.i == Some(6)).await.session_message.unwrap().online_session_peer_ids;
    assert_eq!(online, ["a"]);
}

#[tokio::test]
async fn session_tokens_can_be_refreshed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (mut ws, opened) = login(&server, "lc.protobuf2.3", "alice", SessionCommand::default()).await;
    let old = opened.session_message.unwrap().st.unwrap();
    let refresh = GenericCommand {
        session_message: Some(SessionCommand { st: Some(old.clone()), ..Default::default() }),
        ..cmd(CommandType::Session, Some(OpType::Refresh), Some(7))
    };
    send(&mut ws, &refresh, false).await;
    let r = recv(&mut ws, |g| g.i == Some(7)).await;
    assert_eq!(r.op, Some(OpType::Refreshed as i32));
    let s = r.session_message.unwrap();
    let fresh = s.st.unwrap();
    assert!(s.st_ttl.unwrap() > 0);
    // The fresh token re-opens the session.
    let (mut ws2, _) = connect(&server.ws, "lc.protobuf2.3").await;
    send(
        &mut ws2,
        &open("alice", 1, SessionCommand { r: Some(true), st: Some(fresh), ..Default::default() }),
        false,
    )
    .await;
    assert_eq!(recv(&mut ws2, |g| g.i == Some(1)).await.op, Some(OpType::Opened as i32));
}

#[tokio::test]
async fn missed_edits_and_recalls_are_sent_at_login() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut alice = server.open("alice").await;
    let cid = create(&mut alice, &["bob"]).await;
    let first = common::send(&mut alice, &cid, "typo").await;
    let second = common::send(&mut alice, &cid, "oops").await;
    // A time before both edits (they may share a millisecond with the messages).
    let before = first["t"].as_i64().unwrap() - 1;
    let patch = |mid: &serde_json::Value, recall: bool| json!({"cmd": "patch", "op": "modify", "patches": [{"cid": cid, "mid": mid, "recall": recall, "data": "fixed"}]});
    alice.request(patch(&first["uid"], false)).await.unwrap();
    let recalled = alice.request(patch(&second["uid"], true)).await.unwrap();
    // bob was offline; he saw nothing newer than `before`.
    let session = SessionCommand { last_patch_time: Some(before), ..Default::default() };
    let (mut bob, _) = login(&server, "lc.protobuf2.3", "bob", session).await;
    let p = recv(&mut bob, |g| g.cmd == Some(CommandType::Patch as i32)).await.patch_message.unwrap();
    assert_eq!(p.patches.len(), 2);
    assert_eq!(
        (p.patches[0].mid.as_deref(), p.patches[0].data.as_deref(), p.patches[0].recall),
        (first["uid"].as_str(), Some("fixed"), Some(false))
    );
    assert_eq!((p.patches[1].mid.as_deref(), p.patches[1].recall), (second["uid"].as_str(), Some(true)));
    assert_eq!(p.last_patch_time, recalled["lastPatchTime"].as_i64());
    // Up to date: nothing is sent.
    let session = SessionCommand { last_patch_time: p.last_patch_time, ..Default::default() };
    let (mut bob2, _) = login(&server, "lc.protobuf2.3", "bob", session).await;
    let none = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        recv(&mut bob2, |g| g.cmd == Some(CommandType::Patch as i32)),
    )
    .await;
    assert!(none.is_err());
}

/// The owner rule still holds for protobuf clients, push mode (version 1) included: the
/// owner's own removal lands in `failedPids` (4326) and it stays a member.
#[tokio::test]
async fn a_protobuf_owner_cannot_leave() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (mut owner, _) = login(&server, "lc.protobuf2.1", "owner", SessionCommand::default()).await;
    let start = GenericCommand {
        conv_message: Some(ConvCommand { m: vec!["b".into()], ..Default::default() }),
        ..cmd(CommandType::Conv, Some(OpType::Start), Some(2))
    };
    send(&mut owner, &start, false).await;
    let cid = recv(&mut owner, |g| g.i == Some(2)).await.conv_message.unwrap().cid.unwrap();
    let leave = GenericCommand {
        conv_message: Some(ConvCommand {
            cid: Some(cid.clone()),
            m: vec!["owner".into()],
            ..Default::default()
        }),
        ..cmd(CommandType::Conv, Some(OpType::Remove), Some(3))
    };
    send(&mut owner, &leave, false).await;
    let r = recv(&mut owner, |g| g.i == Some(3)).await;
    assert_eq!(r.op, Some(OpType::Removed as i32));
    let r = r.conv_message.unwrap();
    assert!(r.allowed_pids.is_empty(), "{:?}", r.allowed_pids);
    assert_eq!((r.failed_pids[0].code, r.failed_pids[0].pids.clone()), (4326, vec!["owner".to_owned()]));
    let count = GenericCommand {
        conv_message: Some(ConvCommand { cid: Some(cid.clone()), ..Default::default() }),
        ..cmd(CommandType::Conv, Some(OpType::Count), Some(4))
    };
    send(&mut owner, &count, false).await;
    assert_eq!(recv(&mut owner, |g| g.i == Some(4)).await.conv_message.unwrap().count, Some(2));
}

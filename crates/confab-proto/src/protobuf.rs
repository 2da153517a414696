//! The protobuf protocol of the 3.x+ SDKs (protocol §4): one `GenericCommand` per
//! binary frame (`lc.protobuf2.*`) or per base64 text frame (`lc.proto2base64.*`).
//!
//! prost does not enforce proto2 `required` fields; the SDK (protobufjs 5) drops any
//! frame that lacks one, so every encoder here fills them (`ErrorCommand.code/reason`,
//! `JsonObjectMessage.data`).

use crate::{DecodeError, WireFrame};
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use confab_types::time::iso8601;
use confab_types::{
    AckRequest, ConvEvent, ConvQuery, ConvStart, DirectRequest, Direction, ErrorCode, Inbound, LogsQuery,
    MembersChange, MembersResult, Mentions, PatchRequest, ProtocolError, Push, ReadMark, Reply, Request,
    Restriction, RestrictionKind, RestrictionOp, SessionOpen, Signature,
};
use prost::Message as _;
use serde_json::{Map, Value};

/// The generated protocol types (`push_server.messages2`).
#[allow(missing_docs, clippy::all, clippy::unwrap_used, rust_2018_idioms)]
pub mod wire {
    include!(concat!(env!("OUT_DIR"), "/push_server.messages2.rs"));
}

use wire::{
    AckCommand, BlacklistCommand, CommandType, ConvCommand, ConvMemberInfo, DirectCommand, ErrorCommand,
    GenericCommand, JsonObjectMessage, LogItem, LogsCommand, MaxReadTuple, OpType, PatchCommand, PatchItem,
    RcpCommand, SessionCommand, UnreadCommand, UnreadTuple, logs_command::QueryDirection,
};

/// `service` of instant-messaging pushes (the Swift SDK ignores others).
const IM_SERVICE: i32 = 2;

fn unparseable(serial: Option<i32>, detail: impl Into<String>) -> DecodeError {
    DecodeError { serial, error: ProtocolError::new(ErrorCode::UnparseableRawMsg, detail) }
}

/// Decodes a binary frame, or a text frame carrying base64 (protobufjs accepts both
/// forms in either mode, and so does Confab).
pub fn decode_frame(frame: &WireFrame) -> Result<Inbound, DecodeError> {
    match frame {
        WireFrame::Binary(bytes) => decode(bytes),
        WireFrame::Text(text) => decode_base64(text),
    }
}

/// Decodes a text frame carrying a base64 `GenericCommand`.
pub fn decode_base64(text: &str) -> Result<Inbound, DecodeError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| unparseable(None, format!("invalid base64: {e}")))?;
    decode(&bytes)
}

/// Decodes one serialized `GenericCommand`.
pub fn decode(bytes: &[u8]) -> Result<Inbound, DecodeError> {
    let g = GenericCommand::decode(bytes).map_err(|e| unparseable(None, format!("invalid protobuf: {e}")))?;
    let serial = g.i;
    let request = decode_request(&g).map_err(|error| DecodeError { serial, error })?;
    Ok(Inbound { serial, peer_id: g.peer_id.clone(), request })
}

fn unsupported(what: &str) -> ProtocolError {
    ProtocolError::new(ErrorCode::UnparseableRawMsg, format!("{what} is not supported by this server yet"))
}

fn json_object(field: &str, m: Option<&JsonObjectMessage>) -> Result<Map<String, Value>, ProtocolError> {
    match m {
        None => Ok(Map::new()),
        Some(m) if m.data.trim().is_empty() => Ok(Map::new()),
        Some(m) => match serde_json::from_str::<Value>(&m.data) {
            Ok(Value::Object(o)) => Ok(o),
            Ok(_) => Err(ProtocolError::new(
                ErrorCode::UnparseableRawMsg,
                format!("{field} must be a JSON object"),
            )),
            Err(e) => Err(ProtocolError::new(ErrorCode::UnparseableRawMsg, format!("{field}: {e}"))),
        },
    }
}

fn signature(t: Option<i64>, n: &Option<String>, s: &Option<String>) -> Option<Signature> {
    match (t, n, s) {
        (Some(t), Some(n), Some(s)) => {
            Some(Signature { timestamp: t.to_string(), nonce: n.clone(), signature: s.clone() })
        }
        _ => None,
    }
}

fn decode_request(g: &GenericCommand) -> Result<Request, ProtocolError> {
    let cmd = CommandType::try_from(g.cmd.unwrap_or(0))
        .map_err(|_| ProtocolError::new(ErrorCode::UnparseableRawMsg, "unknown cmd"))?;
    let op = g.op.and_then(|o| OpType::try_from(o).ok());
    let conv = || g.conv_message.clone().unwrap_or_default();
    let cid = |c: &ConvCommand| {
        c.cid
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| ProtocolError::new(ErrorCode::UnparseableRawMsg, "missing convMessage.cid"))
    };
    Ok(match (cmd, op) {
        (CommandType::Echo, _) => Request::Heartbeat,
        (CommandType::Session, Some(OpType::Open)) => {
            let s = g.session_message.clone().unwrap_or_default();
            Request::SessionOpen(SessionOpen {
                app_id: g.app_id.clone().unwrap_or_default(),
                ua: s.ua.clone(),
                signature: signature(s.t, &s.n, &s.s),
                reconnect: s.r.unwrap_or(false),
                session_token: s.st.clone().filter(|t| !t.is_empty()),
                tag: s.tag.clone(),
                last_patch_time: s.last_patch_time.filter(|t| *t > 0),
            })
        }
        (CommandType::Session, Some(OpType::Close)) => Request::SessionClose,
        (CommandType::Session, Some(OpType::Refresh)) => Request::SessionRefresh,
        (CommandType::Session, Some(OpType::Query)) => Request::SessionQuery {
            peer_ids: g.session_message.as_ref().map(|s| s.session_peer_ids.clone()).unwrap_or_default(),
        },
        (CommandType::Conv, Some(OpType::Start)) => {
            let c = conv();
            Request::ConvStart(ConvStart {
                temporary_ttl: c.temp_conv.unwrap_or(false).then(|| c.temp_conv_ttl.map_or(0, i64::from)),
                members: c.m.clone(),
                attr: json_object("attr", c.attr.as_ref())?,
                transient: c.transient.unwrap_or(false),
                unique: c.unique.unwrap_or(false),
                signature: signature(c.t, &c.n, &c.s),
            })
        }
        (CommandType::Conv, Some(op @ (OpType::Add | OpType::Remove))) => {
            let c = conv();
            let change =
                MembersChange { cid: cid(&c)?, members: c.m.clone(), signature: signature(c.t, &c.n, &c.s) };
            if op == OpType::Add { Request::ConvAdd(change) } else { Request::ConvRemove(change) }
        }
        (CommandType::Conv, Some(OpType::Query)) => {
            let c = conv();
            let where_ = json_object("where", c.r#where.as_ref())?;
            Request::ConvQuery(ConvQuery {
                where_: (!where_.is_empty()).then_some(Value::Object(where_)),
                sort: c.sort.clone().filter(|s| !s.is_empty()),
                limit: c.limit.map(i64::from),
                skip: c.skip.map(i64::from),
                flag: c.flag.map(i64::from).unwrap_or(0),
                temporary_ids: c.temp_conv_ids.clone(),
            })
        }
        (CommandType::Conv, Some(op @ (OpType::Mute | OpType::Unmute))) => {
            Request::ConvMute { cid: cid(&conv())?, muted: op == OpType::Mute }
        }
        (CommandType::Conv, Some(OpType::MaxRead)) => {
            let c = conv();
            Request::ConvMaxRead { cid: cid(&c)?, all_members: c.query_all_members.unwrap_or(false) }
        }
        (CommandType::Conv, Some(OpType::MemberInfoUpdate)) => {
            let c = conv();
            let info = c.info.clone().unwrap_or_default();
            Request::MemberRole {
                cid: cid(&c)?,
                member: c.target_client_id.clone().or(info.pid).unwrap_or_default(),
                role: info.role.unwrap_or_default(),
            }
        }
        (CommandType::Conv, Some(op @ (OpType::AddShutup | OpType::RemoveShutup))) => {
            let c = conv();
            Request::Restrict(Restriction {
                cid: cid(&c)?,
                members: c.m.clone(),
                op: if op == OpType::AddShutup { RestrictionOp::ShutUp } else { RestrictionOp::Unshut },
                signature: None,
            })
        }
        (CommandType::Conv, Some(OpType::QueryShutup)) => {
            let c = conv();
            Request::RestrictedQuery {
                cid: cid(&c)?,
                kind: RestrictionKind::ShutUp,
                limit: c.limit.map(i64::from),
                next: c.next.clone(),
            }
        }
        (CommandType::Blacklist, Some(op @ (OpType::Block | OpType::Unblock | OpType::Query))) => {
            let b = g.blacklist_message.clone().unwrap_or_default();
            let cid = b.src_cid.clone().filter(|c| !c.is_empty()).ok_or_else(|| {
                ProtocolError::new(ErrorCode::UnparseableRawMsg, "missing blacklistMessage.srcCid")
            })?;
            if op == OpType::Query {
                Request::RestrictedQuery {
                    cid,
                    kind: RestrictionKind::Block,
                    limit: b.limit.map(i64::from),
                    next: b.next.clone(),
                }
            } else {
                Request::Restrict(Restriction {
                    cid,
                    members: b.to_pids.clone(),
                    op: if op == OpType::Block { RestrictionOp::Block } else { RestrictionOp::Unblock },
                    signature: signature(b.t, &b.n, &b.s),
                })
            }
        }
        (CommandType::Conv, Some(OpType::Count)) => Request::ConvCount { cid: cid(&conv())? },
        (CommandType::Conv, Some(OpType::Update)) => {
            let c = conv();
            Request::ConvUpdate { cid: cid(&c)?, attr: json_object("attr", c.attr.as_ref())? }
        }
        (CommandType::Direct, _) => {
            let d = g.direct_message.clone().unwrap_or_default();
            let (msg, binary) = match &d.binary_msg {
                Some(bytes) => (to_base64(bytes), true),
                None => (d.msg.clone().unwrap_or_default(), false),
            };
            Request::Direct(DirectRequest {
                cid: d.cid.clone().filter(|c| !c.is_empty()).ok_or_else(|| {
                    ProtocolError::new(ErrorCode::UnparseableRawMsg, "missing directMessage.cid")
                })?,
                msg,
                receipt: d.r.unwrap_or(false),
                transient: d.transient.unwrap_or(false),
                dedupe: d.dt.clone().filter(|t| !t.is_empty()),
                binary,
                mentions: Mentions { all: d.mention_all.unwrap_or(false), pids: d.mention_pids.clone() },
                will: d.will.unwrap_or(false),
            })
        }
        (CommandType::Ack, _) => {
            let a = g.ack_message.clone().unwrap_or_default();
            Request::Ack(AckRequest { cid: a.cid, mid: a.mid, from_ts: a.fromts, to_ts: a.tots })
        }
        (CommandType::Logs, _) => {
            let l = g.logs_message.clone().unwrap_or_default();
            Request::Logs(LogsQuery {
                cid: l.cid.clone().filter(|c| !c.is_empty()).ok_or_else(|| {
                    ProtocolError::new(ErrorCode::UnparseableRawMsg, "missing logsMessage.cid")
                })?,
                t: l.t,
                mid: l.mid.clone(),
                tt: l.tt,
                tmid: l.tmid.clone(),
                limit: l.l.or(l.limit).map(i64::from),
                direction: match l.direction() {
                    QueryDirection::New => Direction::Newer,
                    QueryDirection::Old => Direction::Older,
                },
                t_included: l.t_included.unwrap_or(false),
                tt_included: l.tt_included.unwrap_or(false),
                lctype: l.lctype.map(i64::from),
            })
        }
        (CommandType::Patch, Some(OpType::Modify)) => {
            let p = g.patch_message.clone().unwrap_or_default();
            let items = p
                .patches
                .into_iter()
                .map(|item| {
                    if item.binary_msg.is_some() {
                        return Err(unsupported("binary messages"));
                    }
                    Ok(PatchRequest {
                        cid: item.cid.unwrap_or_default(),
                        mid: item.mid.unwrap_or_default(),
                        recall: item.recall.unwrap_or(false),
                        data: item.data,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Request::Patch { items }
        }
        (CommandType::Read, _) => {
            let r = g.read_message.clone().unwrap_or_default();
            let mut convs: Vec<ReadMark> =
                r.convs.into_iter().map(|t| ReadMark { cid: t.cid, ts: t.timestamp }).collect();
            convs.extend(r.cid.into_iter().chain(r.cids).map(|cid| ReadMark { cid, ts: None }));
            Request::Read { convs }
        }
        (cmd, op) => {
            let name = match op {
                Some(op) => format!("{} {}", cmd.as_str_name(), op.as_str_name()),
                None => cmd.as_str_name().to_owned(),
            };
            return Err(unsupported(&name));
        }
    })
}

fn envelope(cmd: CommandType, op: Option<OpType>, serial: Option<i32>) -> GenericCommand {
    GenericCommand { cmd: Some(cmd as i32), op: op.map(|o| o as i32), i: serial, ..GenericCommand::default() }
}

fn error_command(e: &ProtocolError) -> ErrorCommand {
    ErrorCommand {
        code: i32::from(e.code.number()),
        reason: e.code.reason().to_owned(),
        detail: Some(e.detail.clone()),
        app_code: e.app_code,
        app_msg: e.app_msg.clone(),
        ..ErrorCommand::default()
    }
}

fn failed_pids(r: &MembersResult) -> Vec<ErrorCommand> {
    r.failed.iter().map(|f| ErrorCommand { pids: f.members.clone(), ..error_command(&f.error) }).collect()
}

fn members_reply(op: OpType, serial: Option<i32>, r: &MembersResult) -> GenericCommand {
    let failed = failed_pids(r);
    GenericCommand {
        conv_message: Some(ConvCommand {
            allowed_pids: r.allowed.clone(),
            failed_pids: failed,
            ..ConvCommand::default()
        }),
        ..envelope(CommandType::Conv, Some(op), serial)
    }
}

fn json(value: &impl serde::Serialize) -> JsonObjectMessage {
    JsonObjectMessage { data: serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned()) }
}

/// Encodes the reply to a request.
pub fn encode_reply(serial: Option<i32>, reply: &Reply) -> Vec<u8> {
    let g = match reply {
        Reply::Heartbeat => envelope(CommandType::Echo, None, serial),
        Reply::SessionOpened { peer_id, session_token, server_ts } => GenericCommand {
            peer_id: Some(peer_id.clone()),
            server_ts: Some(*server_ts),
            session_message: Some(SessionCommand {
                st: session_token.as_ref().map(|t| t.token.clone()),
                st_ttl: session_token.as_ref().map(|t| t.ttl_secs),
                ..SessionCommand::default()
            }),
            ..envelope(CommandType::Session, Some(OpType::Opened), serial)
        },
        Reply::SessionClosed => envelope(CommandType::Session, Some(OpType::Closed), serial),
        Reply::SessionRefreshed { token } => GenericCommand {
            session_message: Some(SessionCommand {
                st: Some(token.token.clone()),
                st_ttl: Some(token.ttl_secs),
                ..SessionCommand::default()
            }),
            ..envelope(CommandType::Session, Some(OpType::Refreshed), serial)
        },
        Reply::SessionQueryResult { online } => GenericCommand {
            session_message: Some(SessionCommand {
                online_session_peer_ids: online.clone(),
                ..SessionCommand::default()
            }),
            ..envelope(CommandType::Session, Some(OpType::QueryResult), serial)
        },
        Reply::MemberRoleUpdated => envelope(CommandType::Conv, Some(OpType::MemberInfoUpdated), serial),
        Reply::Restricted { op: RestrictionOp::ShutUp, result } => {
            members_reply(OpType::ShutupAdded, serial, result)
        }
        Reply::Restricted { op: RestrictionOp::Unshut, result } => {
            members_reply(OpType::ShutupRemoved, serial, result)
        }
        Reply::Restricted { op: op @ (RestrictionOp::Block | RestrictionOp::Unblock), result } => {
            GenericCommand {
                blacklist_message: Some(BlacklistCommand {
                    allowed_pids: result.allowed.clone(),
                    failed_pids: failed_pids(result),
                    ..BlacklistCommand::default()
                }),
                ..envelope(
                    CommandType::Blacklist,
                    Some(if op.imposes() { OpType::Blocked } else { OpType::Unblocked }),
                    serial,
                )
            }
        }
        Reply::RestrictedPage { kind: RestrictionKind::ShutUp, members, next } => GenericCommand {
            conv_message: Some(ConvCommand {
                m: members.clone(),
                next: next.clone(),
                ..ConvCommand::default()
            }),
            ..envelope(CommandType::Conv, Some(OpType::ShutupResult), serial)
        },
        Reply::RestrictedPage { kind: RestrictionKind::Block, members, next } => GenericCommand {
            blacklist_message: Some(BlacklistCommand {
                blocked_pids: members.clone(),
                next: next.clone(),
                ..BlacklistCommand::default()
            }),
            ..envelope(CommandType::Blacklist, Some(OpType::QueryResult), serial)
        },
        Reply::Patched { patched_at } => GenericCommand {
            patch_message: Some(PatchCommand {
                last_patch_time: Some(*patched_at),
                ..PatchCommand::default()
            }),
            ..envelope(CommandType::Patch, Some(OpType::Modified), serial)
        },
        Reply::ConvMaxRead { max_ack, max_read, members } => GenericCommand {
            conv_message: Some(ConvCommand {
                max_ack_timestamp: Some(*max_ack),
                max_read_timestamp: Some(*max_read),
                max_read_tuples: members
                    .iter()
                    .map(|m| MaxReadTuple {
                        pid: Some(m.client.clone()),
                        max_ack_timestamp: Some(m.max_ack),
                        max_read_timestamp: Some(m.max_read),
                    })
                    .collect(),
                ..ConvCommand::default()
            }),
            ..envelope(CommandType::Conv, Some(OpType::MaxRead), serial)
        },
        Reply::ConvStarted { cid, created_at, temporary_ttl } => GenericCommand {
            conv_message: Some(ConvCommand {
                cid: Some(cid.clone()),
                cdate: Some(iso8601(*created_at)),
                temp_conv_ttl: temporary_ttl.map(|t| i32::try_from(t).unwrap_or(i32::MAX)),
                ..ConvCommand::default()
            }),
            ..envelope(CommandType::Conv, Some(OpType::Started), serial)
        },
        Reply::ConvAdded(r) => members_reply(OpType::Added, serial, r),
        Reply::ConvRemoved(r) => members_reply(OpType::Removed, serial, r),
        Reply::ConvResults { results } => GenericCommand {
            conv_message: Some(ConvCommand { results: Some(json(results)), ..ConvCommand::default() }),
            ..envelope(CommandType::Conv, Some(OpType::Results), serial)
        },
        Reply::ConvCount { count } => GenericCommand {
            conv_message: Some(ConvCommand {
                count: Some(i32::try_from(*count).unwrap_or(i32::MAX)),
                ..ConvCommand::default()
            }),
            ..envelope(CommandType::Conv, Some(OpType::Result), serial)
        },
        Reply::ConvUpdated { updated_at } => GenericCommand {
            conv_message: Some(ConvCommand { udate: Some(iso8601(*updated_at)), ..ConvCommand::default() }),
            ..envelope(CommandType::Conv, Some(OpType::Updated), serial)
        },
        Reply::MessageAck { uid, t } => GenericCommand {
            ack_message: Some(AckCommand { uid: Some(uid.clone()), t: Some(*t), ..AckCommand::default() }),
            ..envelope(CommandType::Ack, None, serial)
        },
        Reply::Logs { logs } => GenericCommand {
            logs_message: Some(LogsCommand {
                logs: logs
                    .iter()
                    .map(|l| LogItem {
                        from: Some(l.from.clone()),
                        data: Some(l.data.clone()),
                        timestamp: Some(l.timestamp),
                        msg_id: Some(l.msg_id.clone()),
                        patch_timestamp: l.patched_at,
                        bin: l.binary.then_some(true),
                        mention_all: l.mentions.all.then_some(true),
                        mention_pids: l.mentions.pids.clone(),
                        ..LogItem::default()
                    })
                    .collect(),
                ..LogsCommand::default()
            }),
            ..envelope(CommandType::Logs, None, serial)
        },
        Reply::Error(e) => GenericCommand {
            error_message: Some(error_command(e)),
            ..envelope(CommandType::Error, None, serial)
        },
    };
    g.encode_to_vec()
}

/// Encodes a push without its recipient; [`with_peer`] adds the recipient per
/// connection, so the body is encoded once for every recipient.
pub fn encode_push(push: &Push) -> Vec<u8> {
    let g = match push {
        Push::Direct(d) => {
            let binary = d.binary.then(|| from_base64(&d.msg)).flatten();
            GenericCommand {
                direct_message: Some(DirectCommand {
                    cid: Some(d.cid.clone()),
                    id: Some(d.id.clone()),
                    timestamp: Some(d.timestamp),
                    from_peer_id: Some(d.from.clone()),
                    msg: if binary.is_some() { None } else { Some(d.msg.clone()) },
                    binary_msg: binary,
                    transient: d.transient.then_some(true),
                    offline: d.offline.then_some(true),
                    mention_all: d.mentions.all.then_some(true),
                    mention_pids: d.mentions.pids.clone(),
                    patch_timestamp: d.patched_at,
                    ..DirectCommand::default()
                }),
                ..envelope(CommandType::Direct, None, None)
            }
        }
        Push::Receipt { cid, id, t, from, read } => GenericCommand {
            rcp_message: Some(RcpCommand {
                id: Some(id.clone()),
                cid: Some(cid.clone()),
                t: Some(*t),
                from: Some(from.clone()),
                read: read.then_some(true),
            }),
            ..envelope(CommandType::Rcp, None, None)
        },
        Push::Patch { items, patched_at } => GenericCommand {
            patch_message: Some(PatchCommand {
                patches: items
                    .iter()
                    .map(|p| {
                        // A binary body travels as bytes, as in a direct push.
                        let binary = p.binary.then(|| from_base64(&p.data)).flatten();
                        PatchItem {
                            cid: Some(p.cid.clone()),
                            mid: Some(p.mid.clone()),
                            timestamp: Some(p.timestamp),
                            recall: Some(p.recall),
                            data: if binary.is_some() { None } else { Some(p.data.clone()) },
                            binary_msg: binary,
                            patch_timestamp: Some(p.patched_at),
                            from: Some(p.from.clone()),
                            ..PatchItem::default()
                        }
                    })
                    .collect(),
                last_patch_time: Some(*patched_at),
            }),
            ..envelope(CommandType::Patch, Some(OpType::Modify), None)
        },
        Push::Unread { convs, notif_time } => GenericCommand {
            unread_message: Some(UnreadCommand {
                convs: convs
                    .iter()
                    .map(|u| UnreadTuple {
                        cid: u.cid.clone(),
                        unread: i32::try_from(u.unread).unwrap_or(i32::MAX),
                        mid: u.last.as_ref().map(|l| l.id.clone()),
                        timestamp: u.last.as_ref().map(|l| l.ts),
                        from: u.last.as_ref().map(|l| l.from.clone()),
                        data: u.last.as_ref().map(|l| l.data.clone()),
                        mentioned: Some(u.mentioned),
                        ..UnreadTuple::default()
                    })
                    .collect(),
                notif_time: Some(*notif_time),
            }),
            ..envelope(CommandType::Unread, None, None)
        },
        Push::Conv(c) => {
            let op = match c.event {
                ConvEvent::Joined => OpType::Joined,
                ConvEvent::Left => OpType::Left,
                ConvEvent::MembersJoined => OpType::MembersJoined,
                ConvEvent::MembersLeft => OpType::MembersLeft,
                ConvEvent::Updated => OpType::Updated,
                ConvEvent::MemberInfoChanged => OpType::MemberInfoChanged,
                ConvEvent::ShutUp => OpType::Shutuped,
                ConvEvent::Unshutup => OpType::Unshutuped,
                ConvEvent::MembersShutUp => OpType::MembersShutuped,
                ConvEvent::MembersUnshutup => OpType::MembersUnshutuped,
                ConvEvent::Blocked => OpType::Blocked,
                ConvEvent::Unblocked => OpType::Unblocked,
                ConvEvent::MembersBlocked => OpType::MembersBlocked,
                ConvEvent::MembersUnblocked => OpType::MembersUnblocked,
            };
            let members = c.event.lists_members();
            GenericCommand {
                server_ts: Some(c.udate),
                conv_message: Some(ConvCommand {
                    cid: Some(c.cid.clone()),
                    init_by: Some(c.init_by.clone()),
                    m: if members { c.members.clone() } else { Vec::new() },
                    udate: Some(iso8601(c.udate)),
                    attr: c.attr.as_ref().map(json),
                    attr_modified: c.attr.as_ref().map(json),
                    info: c.role.as_ref().map(|r| ConvMemberInfo {
                        pid: Some(r.member.clone()),
                        role: Some(r.role.clone()),
                        info_id: None,
                    }),
                    ..ConvCommand::default()
                }),
                ..envelope(CommandType::Conv, Some(op), None)
            }
        }
        Push::SessionClosed { error } => GenericCommand {
            session_message: Some(SessionCommand {
                code: Some(i32::from(error.code.number())),
                reason: Some(error.code.reason().to_owned()),
                detail: Some(error.detail.clone()),
                ..SessionCommand::default()
            }),
            ..envelope(CommandType::Session, Some(OpType::Closed), None)
        },
    };
    GenericCommand { service: Some(IM_SERVICE), ..g }.encode_to_vec()
}

/// Appends `peerId` (field 4) to an encoded command: protobuf merges fields that come
/// later, so this addresses a shared encoded push to one recipient without re-encoding.
pub fn with_peer(body: &Bytes, peer: Option<&str>) -> Bytes {
    let Some(peer) = peer else { return body.clone() };
    let mut out = BytesMut::with_capacity(body.len() + peer.len() + 6);
    out.extend_from_slice(body);
    prost::encoding::string::encode(4, &peer.to_owned(), &mut out);
    out.freeze()
}

fn from_base64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// Base64 text of bytes, for the `proto2base64` subprotocols.
pub fn to_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_types::{ConvPush, DirectPush};

    fn encode_request(g: GenericCommand) -> Vec<u8> {
        g.encode_to_vec()
    }

    #[test]
    fn session_open_as_4_3_1_sends_it() {
        let g = GenericCommand {
            app_id: Some("app".into()),
            peer_id: Some("alice".into()),
            session_message: Some(SessionCommand {
                ua: Some("js/4.3.1".into()),
                r: Some(true),
                st: Some("tok".into()),
                config_bitmap: Some(59),
                ..SessionCommand::default()
            }),
            ..envelope(CommandType::Session, Some(OpType::Open), Some(1))
        };
        let inbound = decode(&encode_request(g)).expect("decodes");
        assert_eq!((inbound.serial, inbound.peer_id.as_deref()), (Some(1), Some("alice")));
        let Request::SessionOpen(open) = inbound.request else { panic!("not an open") };
        assert_eq!(
            (open.app_id.as_str(), open.reconnect, open.session_token.as_deref()),
            ("app", true, Some("tok"))
        );
    }

    #[test]
    fn a_binary_patch_travels_as_bytes() {
        let item = |binary: bool, data: &str| confab_types::PatchedMessage {
            cid: "c".into(),
            mid: "m".into(),
            timestamp: 1,
            recall: false,
            data: data.into(),
            binary,
            from: "alice".into(),
            patched_at: 2,
        };
        let push = Push::Patch { items: vec![item(true, "AAEC"), item(false, "text")], patched_at: 2 };
        let g = GenericCommand::decode(encode_push(&push).as_slice()).expect("decodes");
        let patches = g.patch_message.expect("a patch").patches;
        assert_eq!(
            (patches[0].binary_msg.as_deref(), patches[0].data.as_deref()),
            (Some(&[0u8, 1, 2][..]), None)
        );
        assert_eq!((patches[1].binary_msg.as_deref(), patches[1].data.as_deref()), (None, Some("text")));
    }

    #[test]
    fn base64_text_frames_decode_too() {
        let bytes = encode_request(envelope(CommandType::Echo, None, Some(7)));
        let inbound = decode_frame(&WireFrame::Text(to_base64(&bytes))).expect("decodes");
        assert_eq!((inbound.serial, inbound.request), (Some(7), Request::Heartbeat));
        assert!(decode_frame(&WireFrame::Text("***".into())).is_err());
    }

    #[test]
    fn conv_start_and_query_parse_their_json() {
        let g = GenericCommand {
            conv_message: Some(ConvCommand {
                m: vec!["alice".into(), "bob".into()],
                attr: Some(JsonObjectMessage { data: r#"{"name":"n","x":1}"#.into() }),
                unique: Some(true),
                ..ConvCommand::default()
            }),
            ..envelope(CommandType::Conv, Some(OpType::Start), Some(2))
        };
        let Request::ConvStart(start) = decode(&encode_request(g)).expect("decodes").request else {
            panic!()
        };
        assert_eq!((start.members.len(), start.unique, start.attr["name"].as_str()), (2, true, Some("n")));
        let g = GenericCommand {
            conv_message: Some(ConvCommand {
                r#where: Some(JsonObjectMessage { data: r#"{"objectId":{"$in":["a"]}}"#.into() }),
                limit: Some(999),
                flag: Some(0),
                ..ConvCommand::default()
            }),
            ..envelope(CommandType::Conv, Some(OpType::Query), Some(3))
        };
        let Request::ConvQuery(q) = decode(&encode_request(g)).expect("decodes").request else { panic!() };
        assert_eq!(q.limit, Some(999));
        assert!(q.where_.is_some());
        let bad = GenericCommand {
            conv_message: Some(ConvCommand {
                r#where: Some(JsonObjectMessage { data: "not json".into() }),
                ..ConvCommand::default()
            }),
            ..envelope(CommandType::Conv, Some(OpType::Query), Some(4))
        };
        let err = decode(&encode_request(bad)).expect_err("bad where");
        assert_eq!((err.serial, err.error.code), (Some(4), ErrorCode::UnparseableRawMsg));
    }

    #[test]
    fn errors_always_carry_code_and_reason() {
        let bytes = encode_reply(Some(9), &Reply::Error(ProtocolError::new(ErrorCode::SignatureFailed, "")));
        let g = GenericCommand::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(g.cmd, Some(CommandType::Error as i32));
        assert_eq!(g.i, Some(9));
        let e = g.error_message.expect("error message");
        assert_eq!((e.code, e.reason.as_str()), (4102, "SIGNATURE_FAILED"));
        // An empty reason must still be on the wire (proto2 required).
        let empty =
            ErrorCommand { code: 1, reason: String::new(), ..ErrorCommand::default() }.encode_to_vec();
        assert!(empty.windows(2).any(|w| w == [0x12, 0x00]), "{empty:?}");
    }

    #[test]
    fn pushes_are_shared_and_addressed_per_recipient() {
        let push = Push::Direct(DirectPush {
            cid: "c".into(),
            id: "m".into(),
            timestamp: 5,
            from: "alice".into(),
            msg: "hi".into(),
            ..DirectPush::default()
        });
        let body = Bytes::from(encode_push(&push));
        let for_bob = with_peer(&body, Some("bob"));
        let g = GenericCommand::decode(for_bob.as_ref()).expect("decodes");
        assert_eq!((g.peer_id.as_deref(), g.service, g.i), (Some("bob"), Some(2), None));
        let d = g.direct_message.expect("direct");
        assert_eq!(
            (d.id.as_deref(), d.timestamp, d.msg.as_deref(), d.transient),
            (Some("m"), Some(5), Some("hi"), None)
        );
        let joined = encode_push(&Push::Conv(ConvPush {
            event: ConvEvent::MembersJoined,
            cid: "c".into(),
            init_by: "alice".into(),
            members: vec!["bob".into()],
            attr: None,
            role: None,
            udate: 0,
        }));
        let g = GenericCommand::decode(joined.as_slice()).expect("decodes");
        assert_eq!(g.op, Some(OpType::MembersJoined as i32));
        assert_eq!(g.conv_message.expect("conv").m, ["bob"]);
    }
}

//! The v2 JSON text protocol of `leancloud-realtime` 2.x (protocol §3).
//!
//! Frames are flat JSON objects: `cmd`, `op`, `i` (serial), `peerId` and the fields of
//! one command. A frame without `cmd` is a heartbeat (`{}`) and is answered with `{}`.
//! Failures are reported as `{"cmd":"error","code","reason","detail","i"}`, a frame the
//! 2.x SDK turns into its `error` event; `conv error` would make it throw from inside
//! its socket handler (docs/decisions.md, "v2 error frames").

use crate::{DecodeError, WireFrame};
use bytes::Bytes;
use confab_types::time::iso8601;
use confab_types::{
    AckRef, AckRequest, ConvEvent, ConvQuery, ConvStart, DirectPush, DirectRequest, Direction, ErrorCode,
    Inbound, InboundAck, LogsQuery, MembersChange, MembersResult, Mentions, PatchRequest, ProtocolError,
    Push, Reply, Request, RestrictionKind, RestrictionOp, SessionOpen, Signature,
};
use serde_json::{Map, Value, json};

/// Decodes one frame; binary frames are not part of this protocol.
pub fn decode_frame(frame: &WireFrame) -> Result<Inbound, DecodeError> {
    match frame {
        WireFrame::Text(text) => decode(text),
        WireFrame::Binary(_) => Err(binary_refused()),
    }
}

/// The answer to a binary frame, which this protocol does not use.
pub(crate) fn binary_refused() -> DecodeError {
    DecodeError {
        serial: None,
        error: ProtocolError::new(
            ErrorCode::UnparseableRawMsg,
            "binary frames are not part of the JSON protocol",
        ),
    }
}

/// Decodes one text frame.
pub fn decode(text: &str) -> Result<Inbound, DecodeError> {
    // A recipient's ack is most of what a busy room's members send (2.4.0 acks every
    // message, chat rooms too): it is read without a JSON tree. Whatever the scanner
    // does not take whole goes the general way, which decides exactly as before.
    if let Some(ack) = scan_ack(text) {
        return Ok(ack.to_inbound());
    }
    decode_tree(text)
}

/// Decodes one text frame through a JSON tree: every command. [`decode`] without the
/// ack scanner, and the reference the scanner is checked against (tests, fuzzing).
pub fn decode_tree(text: &str) -> Result<Inbound, DecodeError> {
    let value: Value = serde_json::from_str(text).map_err(|e| DecodeError {
        serial: None,
        error: ProtocolError::new(ErrorCode::UnparseableRawMsg, format!("malformed JSON: {e}")),
    })?;
    let Value::Object(obj) = value else {
        return Err(DecodeError {
            serial: None,
            error: ProtocolError::new(ErrorCode::UnparseableRawMsg, "a frame must be a JSON object"),
        });
    };
    let fields = Fields(&obj);
    let serial = fields.serial();
    let wrap = |error: ProtocolError| DecodeError { serial, error };
    let peer_id = fields.opt_str("peerId").map_err(wrap)?;
    let request = decode_request(&fields).map_err(wrap)?;
    Ok(Inbound { serial, peer_id, request })
}

/// An `ack` frame read where it lies: no JSON tree, no copy of its ids.
///
/// Takes only the plain shape the SDKs send — a flat object whose values are strings
/// without escapes or non-negative integers of up to 18 digits, each known key at most
/// once and of the type [`decode`] expects, `cmd` = `"ack"` and no `op` — and answers
/// `None` for anything else (another command, an escape, a float, `null`, a nested
/// value, a duplicate key, malformed JSON), which [`decode`] then reads the general
/// way. Whatever it takes, the general way would decode to the same request.
pub fn scan_ack(text: &str) -> Option<InboundAck<'_>> {
    let mut s = Scan { text, pos: 0 };
    let (mut cmd, mut serial, mut peer_id) = (false, None, None);
    let mut ack = AckRef::default();
    // One bit per known key: a second occurrence goes the general way.
    let mut seen = 0u8;
    s.skip_ws();
    s.expect(b'{')?;
    s.skip_ws();
    if !s.eat(b'}') {
        loop {
            s.skip_ws();
            let key = s.string()?;
            s.skip_ws();
            s.expect(b':')?;
            s.skip_ws();
            let value = s.scalar()?;
            let bit = match key {
                "cmd" => 1,
                "i" => 2,
                "peerId" => 4,
                "cid" => 8,
                "mid" => 16,
                "fromts" => 32,
                "tots" => 64,
                "op" => return None,
                _ => 0,
            };
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
            match (key, value) {
                ("cmd", Scalar::Str("ack")) => cmd = true,
                ("cmd", _) => return None,
                // As the general way reads a serial: a string or a number outside
                // 32 bits is no serial.
                ("i", Scalar::Int(i)) => serial = i32::try_from(i).ok(),
                ("i", Scalar::Str(_)) => serial = None,
                ("peerId", Scalar::Str(v)) => peer_id = Some(v),
                ("cid", Scalar::Str(v)) => ack.cid = Some(v),
                ("mid", Scalar::Str(v)) => ack.mid = Some(v),
                ("fromts", Scalar::Int(v)) => ack.from_ts = Some(v),
                ("tots", Scalar::Int(v)) => ack.to_ts = Some(v),
                // A known key of another type: the general way answers the error.
                _ if bit != 0 => return None,
                // Keys no command reads are ignored, as the general way ignores them.
                _ => {}
            }
            s.skip_ws();
            if s.eat(b',') {
                continue;
            }
            s.expect(b'}')?;
            break;
        }
    }
    s.skip_ws();
    (cmd && s.pos == text.len()).then_some(InboundAck { serial, peer_id, ack })
}

/// How many bytes at the start of `bytes` may stand in a JSON string as they are: up
/// to the first quote, backslash or control character (or the end).
///
/// Eight bytes per step (the ids in an ack are most of its bytes): for each of the
/// three tests a byte that passes it sets its high bit in `hits`. Carries can only set
/// bits above the first real hit, so the lowest set bit is exact.
fn plain_len(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v;
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8).and_then(|c| <[u8; 8]>::try_from(c).ok()) {
        let x = u64::from_le_bytes(chunk);
        let quote = zero_byte(x ^ (ONES * u64::from(b'"')));
        let backslash = zero_byte(x ^ (ONES * u64::from(b'\\')));
        let control = x.wrapping_sub(ONES * 0x20) & !x;
        let hits = (quote | backslash | control) & HIGH;
        if hits != 0 {
            return at + (hits.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    let tail = bytes.get(at..).unwrap_or_default();
    at + tail.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20).unwrap_or(tail.len())
}

/// A scalar value [`scan_ack`] takes.
#[derive(Clone, Copy)]
enum Scalar<'a> {
    Str(&'a str),
    Int(i64),
}

/// A cursor over a frame's bytes for [`scan_ack`].
struct Scan<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// Consumes `byte` if it is next.
    fn eat(&mut self, byte: u8) -> bool {
        let next = self.peek() == Some(byte);
        self.pos += usize::from(next);
        next
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.eat(byte).then_some(())
    }

    /// A string without escapes or control characters, borrowed.
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.pos;
        let rest = self.text.as_bytes().get(start..)?;
        let len = plain_len(rest);
        if rest.get(len) != Some(&b'"') {
            return None;
        }
        self.pos = start + len + 1;
        // Both ends are ASCII quotes, so the slice falls on character boundaries.
        self.text.get(start..start + len)
    }

    /// A string, or a non-negative integer of at most 18 digits without a fraction
    /// or exponent (so it fits an `i64`, and JSON's no-leading-zero rule holds).
    fn scalar(&mut self) -> Option<Scalar<'a>> {
        match self.peek()? {
            b'"' => self.string().map(Scalar::Str),
            b'0'..=b'9' => {
                let start = self.pos;
                let digits = self.text.as_bytes()[start..].iter().take_while(|b| b.is_ascii_digit()).count();
                let number = &self.text[start..start + digits];
                if digits > 18 || (digits > 1 && number.starts_with('0')) {
                    return None;
                }
                self.pos = start + digits;
                if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
                    return None;
                }
                number.parse().ok().map(Scalar::Int)
            }
            _ => None,
        }
    }
}

fn decode_request(f: &Fields<'_>) -> Result<Request, ProtocolError> {
    let Some(cmd) = f.opt_str("cmd")? else {
        return Ok(Request::Heartbeat);
    };
    let op = f.opt_str("op")?;
    let request = match (cmd.as_str(), op.as_deref()) {
        ("session", Some("open")) => Request::SessionOpen(SessionOpen {
            app_id: f.req_str("appId")?,
            ua: f.opt_str("ua")?,
            signature: f.signature()?,
            reconnect: f.flag("r")?,
            session_token: f.opt_str("st")?,
            tag: f.opt_str("tag")?,
            last_patch_time: f.opt_int("lastPatchTime")?.filter(|t| *t > 0),
        }),
        ("session", Some("close")) => Request::SessionClose,
        ("session", Some("refresh")) => Request::SessionRefresh,
        ("session", Some("query")) => {
            Request::SessionQuery { peer_ids: f.str_list("sessionPeerIds")?.unwrap_or_default() }
        }
        ("conv", Some("start")) => Request::ConvStart(ConvStart {
            members: f.str_list("m")?.unwrap_or_default(),
            attr: f.opt_object("attr")?.unwrap_or_default(),
            transient: f.flag("transient")?,
            unique: f.flag("unique")?,
            signature: f.signature()?,
            temporary_ttl: if f.flag("tempConv")? {
                Some(f.opt_int("tempConvTTL")?.unwrap_or(0))
            } else {
                None
            },
        }),
        ("conv", Some(op @ ("add" | "remove"))) => {
            let change = MembersChange {
                cid: f.req_str("cid")?,
                members: f.str_list("m")?.unwrap_or_default(),
                signature: f.signature()?,
            };
            if op == "add" { Request::ConvAdd(change) } else { Request::ConvRemove(change) }
        }
        ("conv", Some("query")) => {
            Request::ConvQuery(ConvQuery {
                where_: match f.0.get("where") {
                    None | Some(Value::Null) => None,
                    // Some clients send `where` as JSON text.
                    Some(Value::String(s)) => Some(serde_json::from_str(s).map_err(|e| {
                        ProtocolError::new(ErrorCode::UnparseableRawMsg, format!("where: {e}"))
                    })?),
                    Some(v @ Value::Object(_)) => Some(v.clone()),
                    Some(_) => return Err(type_error("where", "an object")),
                },
                sort: f.opt_str("sort")?,
                limit: f.opt_int("limit")?,
                skip: f.opt_int("skip")?,
                flag: f.opt_int("flag")?.unwrap_or(0),
                temporary_ids: f.str_list("tempConvIds")?.unwrap_or_default(),
            })
        }
        ("conv", Some("count")) => Request::ConvCount { cid: f.req_str("cid")? },
        ("conv", Some(op @ ("mute" | "unmute"))) => {
            Request::ConvMute { cid: f.req_str("cid")?, muted: op == "mute" }
        }
        ("conv", Some("max-read" | "max_read")) => {
            Request::ConvMaxRead { cid: f.req_str("cid")?, all_members: f.flag("queryAllMembers")? }
        }
        ("conv", Some("update")) => {
            Request::ConvUpdate { cid: f.req_str("cid")?, attr: f.opt_object("attr")?.unwrap_or_default() }
        }
        ("direct", None) => Request::Direct(DirectRequest {
            cid: f.req_str("cid")?,
            msg: match f.0.get("msg") {
                Some(Value::String(s)) => s.clone(),
                None | Some(Value::Null) => return Err(missing("msg")),
                // A non-string body is sent as its JSON text.
                Some(other) => other.to_string(),
            },
            receipt: f.flag("r")?,
            transient: f.flag("transient")?,
            dedupe: f.opt_str("dt")?,
            binary: false,
            mentions: Mentions {
                all: f.flag("mentionAll")?,
                pids: f.str_list("mentionPids")?.unwrap_or_default(),
            },
            will: f.flag("will")?,
        }),
        ("patch", Some("modify")) => {
            let Some(Value::Array(patches)) = f.0.get("patches") else { return Err(missing("patches")) };
            let items = patches
                .iter()
                .map(|p| {
                    let Value::Object(p) = p else { return Err(type_error("patches", "a list of objects")) };
                    let p = Fields(p);
                    Ok(PatchRequest {
                        cid: p.req_str("cid")?,
                        mid: p.req_str("mid")?,
                        recall: p.flag("recall")?,
                        data: p.opt_str("data")?,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Request::Patch { items }
        }
        ("ack", None) => Request::Ack(AckRequest {
            cid: f.opt_str("cid")?,
            mid: f.opt_str("mid")?,
            from_ts: f.opt_int("fromts")?,
            to_ts: f.opt_int("tots")?,
        }),
        ("logs", None) => Request::Logs(LogsQuery {
            cid: f.req_str("cid")?,
            t: f.opt_int("t")?,
            mid: f.opt_str("mid")?,
            tt: f.opt_int("tt")?,
            tmid: f.opt_str("tmid")?,
            limit: match f.opt_int("limit")? {
                Some(l) => Some(l),
                None => f.opt_int("l")?,
            },
            direction: match f.0.get("direction") {
                None | Some(Value::Null) => Direction::Older,
                Some(Value::Number(n)) if n.as_i64() == Some(2) => Direction::Newer,
                Some(Value::Number(n)) if n.as_i64() == Some(1) => Direction::Older,
                Some(Value::String(s)) if s.eq_ignore_ascii_case("new") => Direction::Newer,
                Some(Value::String(s)) if s.eq_ignore_ascii_case("old") => Direction::Older,
                Some(_) => {
                    return Err(type_error("direction", "1 (old), 2 (new), \"OLD\" or \"NEW\""));
                }
            },
            t_included: f.flag("tIncluded")?,
            tt_included: f.flag("ttIncluded")?,
            lctype: f.opt_int("lctype")?,
        }),
        (cmd, op) => {
            return Err(ProtocolError::new(
                ErrorCode::UnparseableRawMsg,
                format!("unknown command {cmd}{}", op.map(|o| format!(" {o}")).unwrap_or_default()),
            ));
        }
    };
    Ok(request)
}

fn missing(field: &str) -> ProtocolError {
    ProtocolError::new(ErrorCode::UnparseableRawMsg, format!("missing field `{field}`"))
}

fn type_error(field: &str, expected: &str) -> ProtocolError {
    ProtocolError::new(ErrorCode::UnparseableRawMsg, format!("field `{field}` must be {expected}"))
}

/// Typed access to the fields of one frame.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn serial(&self) -> Option<i32> {
        self.0.get("i").and_then(Value::as_i64).and_then(|i| i32::try_from(i).ok())
    }

    fn opt_str(&self, key: &str) -> Result<Option<String>, ProtocolError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(type_error(key, "a string")),
        }
    }

    fn req_str(&self, key: &str) -> Result<String, ProtocolError> {
        self.opt_str(key)?.ok_or_else(|| missing(key))
    }

    fn opt_int(&self, key: &str) -> Result<Option<i64>, ProtocolError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Ok(Some(i)),
                (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Some(f as i64)),
                _ => Err(type_error(key, "an integer")),
            },
            Some(_) => Err(type_error(key, "an integer")),
        }
    }

    /// Booleans as 2.x sends them: `true`/`false`, or `1`/`0` (`r` is `1` or `false`).
    fn flag(&self, key: &str) -> Result<bool, ProtocolError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::Number(n)) => Ok(n.as_f64().is_some_and(|f| f != 0.0)),
            Some(_) => Err(type_error(key, "a boolean")),
        }
    }

    fn opt_object(&self, key: &str) -> Result<Option<Map<String, Value>>, ProtocolError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m.clone())),
            Some(_) => Err(type_error(key, "an object")),
        }
    }

    /// A list of strings; a single string counts as a list of one.
    fn str_list(&self, key: &str) -> Result<Option<Vec<String>>, ProtocolError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| type_error(key, "a list of strings")))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(type_error(key, "a list of strings")),
        }
    }

    /// `t`/`n`/`s`, present only when the client signed the command.
    fn signature(&self) -> Result<Option<Signature>, ProtocolError> {
        let s = self.opt_str("s")?;
        let n = self.opt_str("n")?;
        let t = match self.0.get("t") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(type_error("t", "a number")),
        };
        Ok(match (t, n, s) {
            (Some(timestamp), Some(nonce), Some(signature)) => {
                Some(Signature { timestamp, nonce, signature })
            }
            _ => None,
        })
    }
}

fn frame(mut obj: Map<String, Value>, serial: Option<i32>) -> String {
    if let Some(i) = serial {
        obj.insert("i".into(), json!(i));
    }
    Value::Object(obj).to_string()
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn members_reply(op: &str, result: &MembersResult) -> Map<String, Value> {
    let failed: Vec<Value> = result
        .failed
        .iter()
        .map(|f| {
            let e = &f.error;
            json!({"code": e.code.number(), "reason": e.code.reason(), "detail": e.detail, "pids": f.members})
        })
        .collect();
    object(json!({"cmd": "conv", "op": op, "allowedPids": result.allowed, "failedPids": failed}))
}

/// Encodes the reply to the request with serial `serial`.
pub fn encode_reply(serial: Option<i32>, reply: &Reply) -> String {
    let obj = match reply {
        Reply::Heartbeat => return "{}".to_owned(),
        Reply::SessionOpened { peer_id, .. } => {
            object(json!({"cmd": "session", "op": "opened", "peerId": peer_id}))
        }
        Reply::SessionClosed => object(json!({"cmd": "session", "op": "closed"})),
        Reply::SessionRefreshed { token } => {
            object(json!({"cmd": "session", "op": "refreshed", "st": token.token, "stTtl": token.ttl_secs}))
        }
        Reply::SessionQueryResult { online } => {
            object(json!({"cmd": "session", "op": "query-result", "onlineSessionPeerIds": online}))
        }
        Reply::ConvStarted { cid, created_at, temporary_ttl } => {
            let mut m =
                object(json!({"cmd": "conv", "op": "started", "cid": cid, "cdate": iso8601(*created_at)}));
            if let Some(ttl) = temporary_ttl {
                m.insert("tempConvTTL".into(), json!(ttl));
            }
            m
        }
        Reply::MemberRoleUpdated => object(json!({"cmd": "conv", "op": "member-info-updated"})),
        Reply::Restricted { op, result } => {
            let name = match op {
                RestrictionOp::ShutUp => "shutup-added",
                RestrictionOp::Unshut => "shutup-removed",
                RestrictionOp::Block => "blocked",
                RestrictionOp::Unblock => "unblocked",
            };
            let mut m = members_reply(name, result);
            if op.kind() == RestrictionKind::Block {
                m.insert("cmd".into(), json!("blacklist"));
            }
            m
        }
        Reply::RestrictedPage { kind, members, next } => {
            let mut m = match kind {
                RestrictionKind::Block => {
                    object(json!({"cmd": "blacklist", "op": "query-result", "blockedPids": members}))
                }
                RestrictionKind::ShutUp => {
                    object(json!({"cmd": "conv", "op": "shutup-result", "m": members}))
                }
            };
            if let Some(next) = next {
                m.insert("next".into(), json!(next));
            }
            m
        }
        Reply::Patched { patched_at } => {
            object(json!({"cmd": "patch", "op": "modified", "lastPatchTime": patched_at}))
        }
        Reply::ConvMaxRead { max_ack, max_read, members } => {
            let mut m = object(
                json!({"cmd": "conv", "op": "max-read", "maxAckTimestamp": max_ack, "maxReadTimestamp": max_read}),
            );
            if !members.is_empty() {
                let tuples: Vec<Value> = members
                    .iter()
                    .map(|r| {
                        json!({"pid": r.client, "maxAckTimestamp": r.max_ack, "maxReadTimestamp": r.max_read})
                    })
                    .collect();
                m.insert("maxReadTuples".into(), Value::Array(tuples));
            }
            m
        }
        Reply::ConvAdded(result) => members_reply("added", result),
        Reply::ConvRemoved(result) => members_reply("removed", result),
        Reply::ConvResults { results } => object(json!({"cmd": "conv", "op": "results", "results": results})),
        Reply::ConvCount { count } => object(json!({"cmd": "conv", "op": "result", "count": count})),
        Reply::ConvUpdated { updated_at } => {
            object(json!({"cmd": "conv", "op": "updated", "udate": iso8601(*updated_at)}))
        }
        // Every message sent: written straight, without a JSON tree.
        Reply::MessageAck { uid, t } => {
            let mut w = ObjectWriter::with_capacity(48 + uid.len());
            w.str("cmd", "ack");
            if let Some(i) = serial {
                w.int("i", i64::from(i));
            }
            w.int("t", *t);
            w.str("uid", uid);
            return w.finish();
        }
        Reply::Logs { logs } => {
            let logs: Vec<Value> = logs
                .iter()
                .map(|l| {
                    let mut item =
                        json!({"from": l.from, "data": l.data, "timestamp": l.timestamp, "msgId": l.msg_id});
                    if let Some(t) = l.patched_at {
                        item["patchTimestamp"] = json!(t);
                    }
                    item
                })
                .collect();
            object(json!({"cmd": "logs", "logs": logs}))
        }
        Reply::Error(e) => error_object(e),
    };
    frame(obj, serial)
}

/// A `direct` push as the general encoder writes it (compact, keys sorted as in a
/// `serde_json::Map`), without building one.
fn direct_push(d: &DirectPush) -> String {
    let mut w = ObjectWriter::with_capacity(96 + d.cid.len() + d.id.len() + d.from.len() + d.msg.len());
    if d.binary {
        w.raw("bin", "true");
    }
    w.str("cid", &d.cid);
    w.str("cmd", "direct");
    w.str("fromPeerId", &d.from);
    w.str("id", &d.id);
    if d.mentions.all {
        w.raw("mentionAll", "true");
    }
    if !d.mentions.pids.is_empty() {
        w.key("mentionPids");
        w.out.push('[');
        for (n, pid) in d.mentions.pids.iter().enumerate() {
            if n > 0 {
                w.out.push(',');
            }
            json_string(&mut w.out, pid);
        }
        w.out.push(']');
    }
    w.str("msg", &d.msg);
    if d.offline {
        w.raw("offline", "true");
    }
    if let Some(t) = d.patched_at {
        w.int("patchTimestamp", t);
    }
    w.int("timestamp", d.timestamp);
    if d.transient {
        w.raw("transient", "true");
    }
    w.finish()
}

/// Writes a compact JSON object entry by entry, byte for byte as serde_json writes a
/// `Map`: the caller gives the keys in the map's (sorted) order, and keys that need
/// no escaping.
struct ObjectWriter {
    out: String,
}

impl ObjectWriter {
    fn with_capacity(bytes: usize) -> ObjectWriter {
        let mut out = String::with_capacity(bytes);
        out.push('{');
        ObjectWriter { out }
    }

    fn key(&mut self, key: &str) {
        if self.out.len() > 1 {
            self.out.push(',');
        }
        self.out.push('"');
        self.out.push_str(key);
        self.out.push_str("\":");
    }

    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        json_string(&mut self.out, value);
    }

    fn int(&mut self, key: &str, value: i64) {
        use std::fmt::Write;
        self.key(key);
        let _ = write!(self.out, "{value}");
    }

    fn raw(&mut self, key: &str, json: &str) {
        self.key(key);
        self.out.push_str(json);
    }

    fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

/// Appends `s` as a JSON string, escaped exactly as serde_json escapes it.
fn json_string(out: &mut String, s: &str) {
    if plain_len(s.as_bytes()) == s.len() {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&Value::String(s.to_owned()).to_string());
    }
}

fn error_object(e: &ProtocolError) -> Map<String, Value> {
    let mut m = object(
        json!({"cmd": "error", "code": e.code.number(), "reason": e.code.reason(), "detail": e.detail}),
    );
    if let Some(code) = e.app_code {
        m.insert("appCode".into(), json!(code));
    }
    if let Some(msg) = &e.app_msg {
        m.insert("appMsg".into(), json!(msg));
    }
    m
}

/// Marks the body of a push addressed to its recipient (first byte) and the place of
/// its `peerId` (an entry of its own): a NUL byte, which serde_json never writes (it
/// escapes control characters inside strings).
const PEER_SLOT: char = '\0';

/// Writes an object as serde_json does (compact, keys in the map's order), with
/// [`PEER_SLOT`] where a `peerId` key would sort, and a leading [`PEER_SLOT`] that tells
/// [`with_peer`] to fill it.
fn addressed(obj: &Map<String, Value>) -> String {
    let mut out = String::from("\0{");
    let mut entries = 0;
    let mut slot = false;
    let separate = |out: &mut String, entries: &mut usize| {
        if *entries > 0 {
            out.push(',');
        }
        *entries += 1;
    };
    for (key, value) in obj {
        if !slot && key.as_str() > "peerId" {
            separate(&mut out, &mut entries);
            out.push(PEER_SLOT);
            slot = true;
        }
        separate(&mut out, &mut entries);
        out.push_str(&Value::String(key.clone()).to_string());
        out.push(':');
        out.push_str(&value.to_string());
    }
    if !slot {
        separate(&mut out, &mut entries);
        out.push(PEER_SLOT);
    }
    out.push('}');
    out
}

/// Frames a push body for one recipient: a body from [`encode_push`] that is addressed
/// (a conversation event, a session close) gets the recipient as `peerId` where the
/// encoder left its place; any other body is sent as it is, without a copy. Without a
/// recipient the place is dropped.
pub fn with_peer(body: &Bytes, peer: Option<&str>) -> Bytes {
    if body.first() != Some(&(PEER_SLOT as u8)) {
        return body.clone();
    }
    let json = &body[1..];
    let Some(at) = json.iter().position(|b| *b == PEER_SLOT as u8) else {
        return Bytes::copy_from_slice(json);
    };
    let (before, after) = (&json[..at], &json[at + 1..]);
    match peer {
        Some(peer) => {
            let field = format!("\"peerId\":{}", Value::String(peer.to_owned()));
            let mut out = Vec::with_capacity(json.len() + field.len());
            out.extend_from_slice(before);
            out.extend_from_slice(field.as_bytes());
            out.extend_from_slice(after);
            Bytes::from(out)
        }
        None => {
            // Drop the place with one of its separators.
            let (before, after) = match after.strip_prefix(b",") {
                Some(rest) => (before, rest),
                None => (before.strip_suffix(b",").unwrap_or(before), after),
            };
            Bytes::from([before, after].concat())
        }
    }
}

/// Encodes a push (never carries a serial). The body is the same for every recipient;
/// frame it for one with [`with_peer`].
pub fn encode_push(push: &Push) -> String {
    let obj = match push {
        // Every message delivered: written straight, without a JSON tree.
        Push::Direct(d) => return direct_push(d),
        Push::Receipt { cid, id, t, from, read } => {
            let mut m = object(json!({"cmd": "rcp", "cid": cid, "id": id, "t": t, "from": from}));
            if *read {
                m.insert("read".into(), Value::Bool(true));
            }
            m
        }
        Push::Patch { items, patched_at } => {
            let patches: Vec<Value> = items
                .iter()
                .map(|p| {
                    let mut item = json!({"cid": p.cid, "mid": p.mid, "timestamp": p.timestamp, "recall": p.recall,
                           "data": p.data, "patchTimestamp": p.patched_at, "from": p.from});
                    if p.binary {
                        item["bin"] = Value::Bool(true);
                    }
                    item
                })
                .collect();
            object(json!({"cmd": "patch", "op": "modify", "patches": patches, "lastPatchTime": patched_at}))
        }
        Push::Unread { convs, notif_time } => {
            let convs: Vec<Value> = convs
                .iter()
                .map(|u| {
                    let mut e = json!({"cid": u.cid, "unread": u.unread, "mentioned": u.mentioned});
                    if let Some(last) = &u.last {
                        e["mid"] = json!(last.id);
                        e["timestamp"] = json!(last.ts);
                        e["from"] = json!(last.from);
                        e["data"] = json!(last.data);
                    }
                    e
                })
                .collect();
            object(json!({"cmd": "unread", "convs": convs, "notifTime": notif_time}))
        }
        Push::Conv(c) => {
            let op = match c.event {
                ConvEvent::Joined => "joined",
                ConvEvent::Left => "left",
                ConvEvent::MembersJoined => "members-joined",
                ConvEvent::MembersLeft => "members-left",
                ConvEvent::Updated => "updated",
                ConvEvent::MemberInfoChanged => "member-info-changed",
                ConvEvent::ShutUp => "shutuped",
                ConvEvent::Unshutup => "unshutuped",
                ConvEvent::MembersShutUp => "members-shutuped",
                ConvEvent::MembersUnshutup => "members-unshutuped",
                ConvEvent::Blocked => "blocked",
                ConvEvent::Unblocked => "unblocked",
                ConvEvent::MembersBlocked => "members-blocked",
                ConvEvent::MembersUnblocked => "members-unblocked",
            };
            let mut m = object(json!({
                "cmd": "conv", "op": op, "cid": c.cid, "initBy": c.init_by, "udate": iso8601(c.udate),
            }));
            if let Some(r) = &c.role {
                m.insert("info".into(), json!({"pid": r.member, "role": r.role}));
            }
            if c.event.lists_members() {
                m.insert("m".into(), json!(c.members));
            }
            if let Some(attr) = &c.attr {
                m.insert("attr".into(), Value::Object(attr.clone()));
                m.insert("attrModified".into(), Value::Object(attr.clone()));
            }
            return addressed(&m);
        }
        Push::SessionClosed { error } => {
            return addressed(&object(json!({
                "cmd": "session", "op": "closed",
                "code": error.code.number(), "reason": error.code.reason(), "detail": error.detail,
            })));
        }
    };
    frame(obj, None)
}

#[cfg(test)]
mod tests {
    #[test]
    fn plain_len_stops_at_the_first_quote_backslash_or_control_character() {
        let slow = |b: &[u8]| b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20).unwrap_or(b.len());
        let mut cases: Vec<Vec<u8>> = vec![Vec::new(), b"abc".to_vec(), "会话ü\"x".as_bytes().to_vec()];
        // Every position of every stop byte, after runs that cross the 8-byte steps,
        // with bytes that borrow (0x00, 0x01, 0x21, 0x23, 0x5d, 0x80, 0xff) around it.
        for stop in [b'"', b'\\', 0x00, 0x01, 0x1f] {
            for at in 0..20 {
                for fill in [b'a', 0x21, 0x23, 0x5d, 0x80, 0xff, 0x20] {
                    let mut v = vec![fill; 24];
                    v[at] = stop;
                    cases.push(v);
                }
            }
        }
        for fill in 0u8..=255 {
            cases.push(vec![fill; 19]);
        }
        for case in cases {
            assert_eq!(super::plain_len(&case), slow(&case), "{case:?}");
        }
    }

    /// Flags a message carries only when set: `bin` (the body is base64), mentions, and
    /// the time of its last edit.
    fn insert_message_flags(
        m: &mut Map<String, Value>,
        binary: bool,
        mentions: &Mentions,
        patched_at: Option<i64>,
    ) {
        if binary {
            m.insert("bin".into(), Value::Bool(true));
        }
        if mentions.all {
            m.insert("mentionAll".into(), Value::Bool(true));
        }
        if !mentions.pids.is_empty() {
            m.insert("mentionPids".into(), json!(mentions.pids));
        }
        if let Some(t) = patched_at {
            m.insert("patchTimestamp".into(), json!(t));
        }
    }

    /// A `direct` push as the general encoder writes it: through a `serde_json::Map`.
    fn direct_push_through_a_tree(d: &DirectPush) -> String {
        let mut m = object(json!({
            "cmd": "direct", "cid": d.cid, "id": d.id, "timestamp": d.timestamp,
            "fromPeerId": d.from, "msg": d.msg,
        }));
        if d.transient {
            m.insert("transient".into(), Value::Bool(true));
        }
        if d.offline {
            m.insert("offline".into(), Value::Bool(true));
        }
        insert_message_flags(&mut m, d.binary, &d.mentions, d.patched_at);
        frame(m, None)
    }

    #[test]
    fn pushes_and_acks_written_straight_match_the_tree_encoding() {
        let bodies = [
            "hi",
            "",
            "{\"_lctype\":-1,\"_lctext\":\"a\\\"b\"}",
            "tab\there\nline\u{1}\u{1f}",
            "会话 ü € 😀",
            "\\/\u{7f}",
        ];
        let mut n = 0;
        for (i, body) in bodies.iter().enumerate() {
            for flags in 0..32u32 {
                let bit = |b: u32| flags & (1 << b) != 0;
                let d = DirectPush {
                    cid: format!("conv-{i}\"x"),
                    id: "Ab3dE5gH7jK9mN1pQ3sT5v".into(),
                    timestamp: 1_700_000_000_000 + i64::from(flags),
                    from: bodies[(i + 1) % bodies.len()].into(),
                    msg: (*body).into(),
                    transient: bit(0),
                    offline: bit(1),
                    binary: bit(2),
                    mentions: Mentions {
                        all: bit(3),
                        pids: if bit(4) {
                            vec!["bob".into(), "c\"d".into(), (*body).into()]
                        } else {
                            Vec::new()
                        },
                    },
                    patched_at: bit(1).then_some(-5),
                };
                assert_eq!(direct_push(&d), direct_push_through_a_tree(&d), "{d:?}");
                n += 1;
            }
            for serial in [None, Some(0), Some(-3), Some(i32::MAX)] {
                let ack = Reply::MessageAck { uid: (*body).into(), t: -1 - i as i64 };
                let tree = object(json!({"cmd": "ack", "uid": body, "t": -1 - i as i64}));
                assert_eq!(encode_reply(serial, &ack), frame(tree, serial));
            }
        }
        assert_eq!(n, bodies.len() * 32);
    }

    #[test]
    fn the_ack_scanner_decides_as_the_tree_does() {
        let frames = [
            r#"{"cmd":"ack","cid":"c1","mid":"m1"}"#,
            r#"{"cmd":"ack","cid":"c1","mid":"m1","i":7,"peerId":"bob"}"#,
            r#"{"cmd":"ack","cid":"c\u0031","mid":"m\"1","fromts":1,"tots":2}"#,
            r#"{ "cmd" : "ack" , "cid" : null , "mid" : null , "fromts" : null }"#,
            r#"{"cmd":"ack","cid":"c","i":99999999999}"#,
            r#"{"cmd":"ack","cid":"c","i":"7"}"#,
            r#"{"cmd":"ack","cid":"c","fromts":1.0,"tots":2.5}"#,
            r#"{"cmd":"ack","cid":5}"#,
            r#"{"cmd":"ack","cid":"a","cid":"b"}"#,
            r#"{"cmd":"ack","op":"x","cid":"c"}"#,
            r#"{"cmd":"ack","op":null,"cid":"c","extra":{"deep":[1,2]}}"#,
            r#"{"cmd":"ack","peerId":3}"#,
            r#"{"cmd":"direct","cid":"c","msg":"\"ack\""}"#,
            r#"{"cmd":"ack""#,
            r#"["ack"]"#,
            " {\t\"cmd\":\"ack\",\r\n\"cid\":\"会话\",\"x\":\"y\",\"n\":0} ",
            r#"{"cmd":"ack","cid":"c","fromts":01}"#,
            r#"{"cmd":"ack","cid":"c","fromts":-1}"#,
            r#"{"cmd":"ack","cid":"c","tots":1e3}"#,
            r#"{"cmd":"ack","cid":"c","tots":123456789012345678}"#,
            r#"{"cmd":"ack","cid":"c","tots":1234567890123456789}"#,
            r#"{"cmd":"ack","cid":"c",}"#,
            r#"{"cmd":"ack","cid":"c"} x"#,
            r#"{"cmd":"ack","cid":"c"}}"#,
            r#"{"cmd":"ack","cid":"c""mid":"m"}"#,
            r#"{"cmd":"ack","cid":"c","flag":true}"#,
            r#"{"cmd":"ack","i":1,"i":2}"#,
            r#"{"cmd":"ack","cmd":"ack"}"#,
            r#"{"cid":"c","cmd":"ack"}"#,
            r#"{"cmd":"ACK","cid":"c"}"#,
            "{\"cmd\":\"ack\",\"cid\":\"a\u{1}b\"}",
            r#"{}"#,
            r#"{"cmd":"ack"}"#,
            r#"{"cmd":"ack","cid":"c","mid":""}"#,
        ];
        for frame in frames {
            assert_eq!(super::decode(frame), super::decode_tree(frame), "{frame}");
        }
        let taken = |f: &str| super::scan_ack(f).is_some();
        let fast = super::scan_ack(frames[1]).expect("taken by the scanner");
        assert_eq!(
            (fast.serial, fast.peer_id, fast.ack.cid, fast.ack.mid),
            (Some(7), Some("bob"), Some("c1"), Some("m1"))
        );
        assert!(
            taken(frames[0])
                && taken(frames[4])
                && taken(frames[5])
                && taken(frames[15])
                && taken(frames[19])
        );
        assert!(taken(frames[28]) && taken(frames[32]) && taken(frames[33]));
        for general in
            [2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 18, 20, 21, 22, 23, 24, 25, 26, 27, 29, 30, 31]
        {
            assert!(!taken(frames[general]), "the general way decides {}", frames[general]);
        }
    }

    use super::*;
    use confab_types::{ConvPush, DirectPush, LogItem};

    fn req(text: &str) -> Request {
        match decode(text) {
            Ok(inbound) => inbound.request,
            Err(e) => panic!("decode {text}: {e}"),
        }
    }

    #[test]
    fn heartbeat_round_trip() {
        assert_eq!(req("{}"), Request::Heartbeat);
        assert_eq!(encode_reply(None, &Reply::Heartbeat), "{}");
    }

    #[test]
    fn session_open_as_2_4_0_sends_it() {
        let inbound = decode(r#"{"cmd":"session","op":"open","appId":"app","ua":"js/2.4.0","i":2016,"peerId":"alice","t":1700000000,"n":"nonce","s":"abc"}"#)
            .expect("decodes");
        assert_eq!(inbound.serial, Some(2016));
        assert_eq!(inbound.peer_id.as_deref(), Some("alice"));
        assert_eq!(
            inbound.request,
            Request::SessionOpen(SessionOpen {
                app_id: "app".into(),
                ua: Some("js/2.4.0".into()),
                signature: Some(Signature {
                    timestamp: "1700000000".into(),
                    nonce: "nonce".into(),
                    signature: "abc".into()
                }),
                ..SessionOpen::default()
            })
        );
    }

    #[test]
    fn direct_receipt_flag_accepts_one_and_false() {
        let Request::Direct(d) = req(r#"{"cmd":"direct","cid":"c","msg":"hi","r":1,"i":3}"#) else {
            panic!()
        };
        assert!(d.receipt && !d.transient);
        let Request::Direct(d) =
            req(r#"{"cmd":"direct","cid":"c","msg":{"a":1},"r":false,"transient":true}"#)
        else {
            panic!()
        };
        assert!(!d.receipt && d.transient);
        assert_eq!(d.msg, r#"{"a":1}"#);
    }

    #[test]
    fn logs_accepts_limit_and_l() {
        let Request::Logs(q) = req(r#"{"cmd":"logs","cid":"c","limit":5,"t":10,"mid":"m"}"#) else {
            panic!()
        };
        assert_eq!((q.limit, q.t, q.mid.as_deref()), (Some(5), Some(10), Some("m")));
        let Request::Logs(q) = req(r#"{"cmd":"logs","cid":"c","l":0,"direction":2}"#) else { panic!() };
        assert_eq!((q.limit, q.direction), (Some(0), Direction::Newer));
    }

    #[test]
    fn bad_frames_are_typed_errors_with_serial() {
        for (text, serial) in [
            ("not json", None),
            ("[1,2]", None),
            (r#"{"cmd":"conv","op":"nope","i":7}"#, Some(7)),
            (r#"{"cmd":"direct","i":8}"#, Some(8)),
            (r#"{"cmd":"direct","cid":5,"msg":"x","i":9}"#, Some(9)),
            (r#"{"cmd":"session","op":"open","i":1}"#, Some(1)),
            (r#"{"cmd":7}"#, None),
        ] {
            let err = decode(text).expect_err(text);
            assert_eq!(err.serial, serial, "{text}");
            assert_eq!(err.error.code, ErrorCode::UnparseableRawMsg, "{text}");
        }
    }

    #[test]
    fn replies_and_pushes_have_the_shapes_2_4_0_reads() {
        let ack: Value =
            serde_json::from_str(&encode_reply(Some(5), &Reply::MessageAck { uid: "u".into(), t: 9 }))
                .expect("json");
        assert_eq!(ack, json!({"cmd": "ack", "i": 5, "uid": "u", "t": 9}));
        let err: Value = serde_json::from_str(&encode_reply(
            Some(6),
            &Reply::Error(ProtocolError::new(ErrorCode::InvalidMessagingTarget, "not a member")),
        ))
        .expect("json");
        assert_eq!(
            err,
            json!({"cmd": "error", "i": 6, "code": 4401, "reason": "INVALID_MESSAGING_TARGET", "detail": "not a member"})
        );
        let logs: Value = serde_json::from_str(&encode_reply(
            Some(1),
            &Reply::Logs {
                logs: vec![LogItem {
                    from: "a".into(),
                    data: "d".into(),
                    timestamp: 3,
                    msg_id: "m".into(),
                    patched_at: None,
                    binary: false,
                    mentions: Mentions::default(),
                }],
            },
        ))
        .expect("json");
        assert_eq!(logs["logs"][0], json!({"from": "a", "data": "d", "timestamp": 3, "msgId": "m"}));
        let direct: Value = serde_json::from_str(&encode_push(&Push::Direct(DirectPush {
            cid: "c".into(),
            id: "m".into(),
            timestamp: 4,
            from: "a".into(),
            msg: "hi".into(),
            offline: true,
            ..DirectPush::default()
        })))
        .expect("json");
        assert_eq!(
            direct,
            json!({"cmd": "direct", "cid": "c", "id": "m", "timestamp": 4, "fromPeerId": "a", "msg": "hi", "offline": true})
        );
        let body = Bytes::from(encode_push(&Push::Conv(ConvPush {
            event: ConvEvent::MembersJoined,
            cid: "c".into(),
            init_by: "a".into(),
            members: vec!["b".into()],
            attr: None,
            role: None,
            udate: 0,
        })));
        let joined: Value = serde_json::from_slice(&with_peer(&body, Some("b"))).expect("json");
        assert_eq!(joined["op"], "members-joined");
        assert_eq!(joined["m"], json!(["b"]));
        assert_eq!(joined["peerId"], "b");
        assert!(joined.get("i").is_none());
        // Other pushes are framed as they are.
        let direct = Bytes::from(encode_push(&Push::Direct(DirectPush::default())));
        assert_eq!(with_peer(&direct, Some("b")), direct);
    }

    /// The recipient lands where it did when the push body carried it: the bytes are
    /// those of the object with `peerId` among its keys.
    #[test]
    fn addressed_pushes_frame_byte_for_byte_as_objects_with_their_recipient() {
        let mut attr = Map::new();
        attr.insert("name".into(), json!("x\u{0}\"peerId\":,y"));
        attr.insert("udate".into(), json!(1));
        let pushes = [
            Push::Conv(ConvPush {
                event: ConvEvent::Updated,
                cid: "c".into(),
                init_by: "a".into(),
                members: Vec::new(),
                attr: Some(attr),
                role: None,
                udate: 1_700_000_000_123,
            }),
            Push::Conv(ConvPush {
                event: ConvEvent::MemberInfoChanged,
                cid: "c".into(),
                init_by: "a".into(),
                members: Vec::new(),
                attr: None,
                role: Some(confab_types::RoleChange { member: "m".into(), role: "Manager".into() }),
                udate: 5,
            }),
            Push::SessionClosed { error: ProtocolError::new(ErrorCode::SessionConflict, "kicked \"out\"") },
        ];
        for push in pushes {
            let body = Bytes::from(encode_push(&push));
            for peer in ["bob", "é\"\\\u{1}"] {
                let framed = with_peer(&body, Some(peer));
                let mut expected: Map<String, Value> = serde_json::from_slice(&framed).expect("json");
                assert_eq!(expected["peerId"], peer);
                expected.insert("peerId".into(), json!(peer));
                assert_eq!(std::str::from_utf8(&framed).expect("utf-8"), Value::Object(expected).to_string());
            }
            let bare: Map<String, Value> = serde_json::from_slice(&with_peer(&body, None)).expect("json");
            assert!(bare.get("peerId").is_none());
        }
    }
}

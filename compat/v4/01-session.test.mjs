// Scenario 1 (handshake + login), anonymous clients, close, ping (session query), echo, the
// ?subprotocol= URL parameter and connection-level refusals (4100, 4103). Protocol §1.5, §2, §4.4 R1–R5, R29.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serverFixture } from '../lib/fixture4.mjs';
import { WS, LC, MODE, decodeFrame, sleep, uid, withTimeout } from '../lib/sdk4.mjs';

const ctx = serverFixture();
const kind = MODE === 'base64' ? 'text' : 'binary';

test(`scenario 1: handshake echoes the subprotocol; session/open → session/opened with st/stTtl (${MODE})`, async () => {
  const rt = ctx.rt();
  const id = uid('alice');
  const alice = await rt.createClient(id);
  const ws = await rt.ws();
  assert.equal(ws.protocol, rt.protocol, 'Sec-WebSocket-Protocol echoed');
  const [open] = rt.frames('out');
  assert.equal(open.kind, kind, 'client frames are binary / base64 text');
  assert.equal(open.cmd.cmd, 'session');
  assert.equal(open.cmd.op, 'open');
  assert.equal(open.cmd.appId, ctx.app.id);
  assert.equal(open.cmd.peerId, id);
  assert.equal(open.cmd.i, 1);
  assert.equal(open.cmd.sessionMessage.ua, 'js/4.3.1');
  assert.equal(open.cmd.sessionMessage.configBitmap, 59);
  assert.equal(open.cmd.sessionMessage.r, false);
  const opened = rt.frames('in').find((f) => f.cmd.i === 1);
  assert.ok(opened, 'a reply with i=1');
  assert.equal(opened.kind, kind, 'server answers in the client\'s framing');
  assert.equal(opened.cmd.cmd, 'session');
  assert.equal(opened.cmd.op, 'opened');
  assert.equal(opened.cmd.peerId, id);
  assert.equal(typeof opened.cmd.sessionMessage.st, 'string');
  assert.ok(opened.cmd.sessionMessage.st.length > 0);
  assert.ok(opened.cmd.sessionMessage.stTtl > 0, 'stTtl in seconds');
  assert.equal(opened.cmd.sessionMessage.code, undefined, 'no code on success');
  assert.equal(alice.id, id);
  for (const f of rt.frames('in')) assert.equal(f.error, undefined, `every frame decodes: ${f.error}`);
});

test('anonymous client: open without peerId, the server assigns an id and the SDK adopts it', async () => {
  const rt = ctx.rt();
  const anon = await rt.createClient();
  const [open] = rt.frames('out');
  assert.equal(open.cmd.op, 'open');
  assert.equal(open.cmd.peerId, undefined, 'anonymous open has no peerId');
  assert.equal(typeof anon.id, 'string');
  assert.ok(anon.id.length > 0 && anon.id.length <= 64);
  const opened = rt.frames('in').find((f) => f.cmd.i === open.cmd.i);
  assert.equal(opened.cmd.peerId, anon.id);
  // the anonymous client is usable: it can create a conversation with itself as member
  const conv = await anon.im.createConversation({ members: [] });
  assert.deepEqual(conv.members, [anon.id]);
});

test('two anonymous clients get different ids', async () => {
  const a = await ctx.open();
  const b = await ctx.open();
  assert.notEqual(a.id, b.id);
});

test('close(): session/close answered with the same i; close event; last client closes the socket', async () => {
  const rt = ctx.rt();
  const c = await rt.createClient(uid('closer'));
  const ws = await rt.ws();
  const since = rt.frames().length;
  await withTimeout(c.im.close(), 5000, 'close');
  c.closed = true;
  const out = rt.frames('out').find((f) => f.cmd.cmd === 'session' && f.cmd.op === 'close');
  assert.ok(out, 'session/close sent');
  const reply = rt.frames('in').find((f) => f.cmd.i === out.cmd.i);
  assert.ok(reply, 'answered');
  assert.notEqual(reply.cmd.cmd, 'error', `close must not fail: ${JSON.stringify(reply.cmd)}`);
  assert.deepEqual(c.seen('close')[0][0], { code: 0 });
  await withTimeout(new Promise((r) => (ws.readyState === WS.CLOSED ? r() : ws.once('close', r))), 5000, 'socket closed by the SDK');
  assert.ok(rt.frames().length > since);
});

test('ping(ids): session/query answers onlineSessionPeerIds = the online subset', async () => {
  const a = await ctx.open(uid('pa'));
  const b = await ctx.open(uid('pb'));
  const ghost = uid('ghost');
  const online = await a.im.ping([b.id, ghost, a.id]);
  assert.deepEqual([...online].sort(), [a.id, b.id].sort());
  const q = a.frames('out').find((f) => f.cmd.op === 'query');
  assert.equal(q.cmd.cmd, 'session');
  assert.deepEqual(q.cmd.sessionMessage.sessionPeerIds, [b.id, ghost, a.id]);
  assert.equal(q.cmd.peerId, undefined, 'single client on the socket omits peerId');
  await b.close();
  await sleep(200);
  assert.deepEqual(await a.im.ping([b.id]), [], 'closed client is offline');
});

test('echo (the 180 s keep-alive): answered with cmd echo and the same i', async () => {
  const rt = ctx.rt();
  await rt.createClient(uid('echo'));
  const conn = await rt.connection();
  const reply = await withTimeout(conn.ping(), 5000, 'echo reply');
  assert.equal(reply.cmd, LC.Protocals.CommandType.echo);
  const out = rt.frames('out').find((f) => f.cmd.cmd === 'echo');
  assert.ok(out.cmd.i > 0);
  const inn = rt.frames('in').find((f) => f.cmd.i === out.cmd.i);
  assert.equal(inn.cmd.cmd, 'echo');
});

test('?subprotocol= URL parameter selects the protocol when no header is sent (mini-program builds)', async () => {
  const proto = MODE === 'base64' ? 'lc.proto2base64.3' : 'lc.protobuf2.3';
  const url = `${ctx.server.wsUrl}?subprotocol=${encodeURIComponent(proto)}`;
  const ws = new WS(url);
  try {
    await withTimeout(new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); }), 5000, 'ws open');
    const P = LC.Protocals;
    const cmd = new P.GenericCommand({ cmd: 'session', op: 'open', appId: ctx.app.id, peerId: uid('url'), i: 1,
      sessionMessage: new P.SessionCommand({ ua: 'js/4.3.1', configBitmap: 59 }) });
    const reply = new Promise((resolve) => ws.once('message', resolve));
    ws.send(MODE === 'base64' ? cmd.toBase64() : Buffer.from(cmd.toArrayBuffer()));
    const data = await withTimeout(reply, 5000, 'opened');
    if (MODE === 'base64') assert.equal(typeof data, 'string', 'base64 text frame');
    else assert.ok(typeof data !== 'string', 'binary frame');
    const got = decodeFrame(typeof data === 'string' ? data : new Uint8Array(data));
    assert.equal(got.op, 'opened');
    assert.equal(got.i, 1);
  } finally {
    ws.terminate();
  }
});

test('unknown appId: socket closed with 4100 (fatal: the SDK does not reconnect)', async () => {
  const rt = ctx.rt({ app: { id: 'no-such-app', key: 'k' } });
  const p = rt.realtime.createIMClient(uid('x'));
  p.catch(() => {});
  const closed = async () => { for (;;) { const ws = rt.sockets[0]; if (ws && ws.__closeCode) return ws.__closeCode; await sleep(20); } };
  assert.equal(await withTimeout(closed(), 8000, 'socket close'), 4100);
  await sleep(2500);
  assert.equal(rt.events.filter((e) => e.name === 'retry').length, 0, 'no reconnect attempt after 4100');
});

test('client id longer than 64 characters: refused with 4103 (close or error)', async () => {
  const rt = ctx.rt();
  const p = rt.realtime.createIMClient('x'.repeat(65));
  p.catch(() => {});
  // 4103 is fatal for the SDK: the connection enters its error state and the pending open only
  // times out (20 s), so the close code on the socket is what is observable.
  const outcome = await Promise.race([p.then(() => 'opened', (e) => e), sleep(3000).then(() => ({}))]);
  if (outcome === 'opened') assert.fail('a 65-character client id must be refused');
  const ws = rt.sockets[0];
  const closeCode = ws && ws.__closeCode;
  const err = rt.frames('in').find((f) => f.cmd.cmd === 'error' || (f.cmd.sessionMessage && f.cmd.sessionMessage.code));
  assert.ok(outcome.code === 4103 || closeCode === 4103 || (err && (err.cmd.errorMessage || err.cmd.sessionMessage).code === 4103),
    `4103 expected; got ${outcome.message} code=${outcome.code} close=${closeCode}`);
});

// The SDK against the REAL Confab server: every API and event, the manual's own example,
// offline delivery and reconnect across a server restart. No mocks here.
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import realtime from '../../src/index.js';
import { startConfab, APP } from './confab.js';

let server;
const clients = [];
const uniq = (name) => `${name}-${Math.random().toString(36).slice(2, 8)}`;
const client = (clientId, opts = {}) => {
  const rt = realtime({ appId: APP.id, clientId, server: server.http, WebSocket, minDelay: 100, maxDelay: 1000, timeout: 10000, ...opts });
  rt.on('error', (e) => rt.errors.push(e));
  rt.errors = [];
  clients.push(rt);
  return rt;
};
/** Next emission of `name` (optionally matching pred) within `ms`. */
const next = (rt, name, pred = () => true, ms = 5000) =>
  new Promise((ok, ko) => {
    const t = setTimeout(() => {
      rt.off(name, f);
      ko(new Error(`no "${name}" event within ${ms} ms`));
    }, ms);
    const f = (d) => {
      if (!pred(d)) return;
      clearTimeout(t);
      rt.off(name, f);
      ok(d);
    };
    rt.on(name, f);
  });
/** Collect events of `name` into an array. */
const collect = (rt, name) => {
  const out = [];
  rt.on(name, (d) => out.push(d));
  return out;
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const until = async (fn, ms = 5000, what = 'condition') => {
  const t0 = Date.now();
  while (!(await fn())) {
    if (Date.now() - t0 > ms) throw new Error('timed out waiting for ' + what);
    await sleep(25);
  }
};

before(async () => {
  server = await startConfab();
});
after(async () => {
  for (const rt of clients.splice(0)) rt.close();
  if (server) {
    await server.stop();
    server.cleanup();
  }
});
afterEach(() => {
  for (const rt of clients.splice(0)) rt.close();
});

describe('connecting', { timeout: 20000 }, () => {
  it('http(s) base URL goes through /v1/route', async () => {
    const r = await fetch(`${server.http}/v1/route?appId=${APP.id}`);
    assert.equal(r.status, 200);
    const j = await r.json();
    assert.match(j.server, /^wss?:\/\//);
    assert.equal(typeof j.ttl, 'number');
    const rt = client(uniq('route'));
    let cb = 0;
    rt.open(() => cb++);
    await rt.openAsync();
    assert.equal(cb, 1);
  });

  it('ws(s) URL connects directly', async () => {
    const rt = client(uniq('direct'), { server: server.ws });
    await rt.openAsync();
    assert.equal(rt.errors.length, 0);
  });

  it('a signed login opens (authFun, HMAC-SHA1 with the master key)', async () => {
    const id = uniq('signed');
    const authFun = (d, cb) => {
      const t = Date.now();
      const n = Math.random().toString(36).slice(2);
      cb({ nonce: n, timestamp: t, signature: createHmac('sha1', APP.master).update(`${APP.id}:${d.clientId}::${t}:${n}`).digest('hex') });
    };
    await client(id, { authFun }).openAsync();
  });

  it('heartbeats are answered: no reconnect while idle', async () => {
    const rt = client(uniq('beat'), { heartbeat: 200 });
    await rt.openAsync();
    const reuse = collect(rt, 'reuse');
    await sleep(1200);
    assert.deepEqual(reuse, [], 'the server must answer {} with a frame within the heartbeat interval');
  });
});

describe("the manual's example (two clients)", { timeout: 30000 }, () => {
  it('create, add, remove, send, log, receive, list, count, events', async () => {
    const A = uniq('LeanCloud01');
    const B = uniq('LeanCloud02');
    const C = uniq('LeanCloud03');
    const D = uniq('LeanCloud04');
    const a = client(A);
    const b = client(B);
    await Promise.all([a.openAsync(), b.openAsync()]);
    const invited = next(b, 'invited');
    const bMembersJoined = next(b, 'membersjoined');
    const created = next(a, 'create');
    let conversationObj;
    const cbConv = new Promise((r) => (conversationObj = a.conv({ members: [B], data: { name: 'LeanCloud', m: 123 } }, r)));
    const ev = await created;
    const conv = conversationObj;
    assert.equal(await cbConv, conv, 'the callback gets the object conv() returned');
    assert.equal(ev.cid, conv.id);
    assert.ok(conv.id);
    const inv = await invited;
    assert.equal(inv.cid, conv.id);
    assert.equal(inv.initBy, A);
    const mj = await bMembersJoined;
    assert.equal(mj.cid, conv.id);

    const added = await new Promise((r) => conversationObj.add([C, D], r));
    assert.equal(added.cmd, 'conv');
    const removed = await new Promise((r) => conversationObj.remove(C, r));
    assert.equal(removed.cmd, 'conv');

    const received = [];
    const got = next(b, 'message');
    b.conv(conv.id).receive((d) => received.push(d));
    const ack = await new Promise((r) => conversationObj.send({ abc: 123 }, r));
    assert.ok(ack.uid, 'ack carries uid');
    assert.equal(typeof ack.t, 'number');
    const m = await got;
    assert.equal(m.cid, conv.id);
    assert.equal(m.id, ack.uid, 'receiver sees the id the sender got');
    assert.equal(m.timestamp, ack.t);
    assert.equal(m.fromPeerId, A);
    assert.deepEqual(m.msg, { abc: 123 });
    await until(() => received.length === 1, 2000, 'receive() callback');

    const logs = await new Promise((r) => conversationObj.log(r));
    assert.equal(logs.length, 1);
    assert.deepEqual(logs[0].data, { abc: 123 });
    assert.equal(logs[0].from, A);
    assert.equal(logs[0].fromPeerId, A);
    assert.equal(logs[0].msgId, ack.uid);

    const members = await new Promise((r) => conversationObj.list(r));
    assert.deepEqual([...members].sort(), [A, B, D].sort());
    const n = await new Promise((r) => conversationObj.count(r));
    assert.equal(n, 3);
    assert.deepEqual(a.errors, []);
  });

  it('join and leave: members-joined / members-left pushes, join/left legacy events', async () => {
    const A = uniq('owner');
    const B = uniq('joiner');
    const a = client(A);
    const b = client(B);
    await Promise.all([a.openAsync(), b.openAsync()]);
    const conv = await a.convAsync({ members: [], name: 'open room' });
    const aJoin = next(a, 'membersjoined', (d) => d.cid === conv.id && d.m.includes(B));
    const legacy = next(a, 'join', (d) => d.cid === conv.id && (d.m || []).includes(B));
    const bInvited = next(b, 'invited', (d) => d.cid === conv.id);
    const joinReply = await new Promise((r) => b.conv(conv.id).join(r));
    assert.equal(joinReply.op, 'added');
    assert.equal((await aJoin).initBy, B);
    await legacy;
    await bInvited;
    const aLeft = next(a, 'membersleft', (d) => d.cid === conv.id && d.m.includes(B));
    const bKicked = next(b, 'kicked', (d) => d.cid === conv.id);
    await b.conv(conv.id).leaveAsync();
    assert.equal((await aLeft).initBy, B);
    assert.equal((await bKicked).initBy, B);
  });

  it('remove kicks: kicked + left for the removed client, membersleft for the others', async () => {
    const [A, B, C] = [uniq('ka'), uniq('kb'), uniq('kc')];
    const [a, b, c] = [client(A), client(B), client(C)];
    await Promise.all([a.openAsync(), b.openAsync(), c.openAsync()]);
    // Listen before creating: the push can arrive before the creation promise settles.
    const invited = next(c, 'invited');
    const conv = await a.convAsync({ members: [B, C] });
    assert.equal((await invited).cid, conv.id);
    const kicked = next(b, 'kicked', (d) => d.cid === conv.id);
    const bLeft = next(b, 'left', (d) => d.cid === conv.id);
    const cLeft = next(c, 'membersleft', (d) => d.cid === conv.id);
    await conv.removeAsync(B);
    assert.equal((await kicked).initBy, A);
    await bLeft;
    assert.deepEqual((await cLeft).m, [B]);
  });
});

describe('messages', { timeout: 30000 }, () => {
  it('receipts, transient messages, rich media, HTML escaping', async () => {
    const [A, B] = [uniq('ra'), uniq('rb')];
    const a = client(A);
    const b = client(B, { encodeHTML: true });
    await Promise.all([a.openAsync(), b.openAsync()]);
    // Listen before creating: the push can arrive before the creation promise settles.
    const invited = next(b, 'invited');
    const conv = await a.convAsync({ members: [B] });
    assert.equal((await invited).cid, conv.id);
    const receipts = [];
    conv.receipt((r) => receipts.push(r));
    const gotRcp = next(a, 'receipt', (r) => r.cid === conv.id);
    const ack = await conv.sendAsync('needs a receipt', { receipt: true });
    const rcp = await gotRcp;
    assert.equal(rcp.id, ack.uid);
    assert.equal(typeof rcp.t, 'number');
    assert.equal(receipts.length, 1);

    const flash = next(b, 'message', (m) => m.msg === 'flash');
    assert.equal(await conv.sendAsync('flash', { transient: true }), undefined);
    assert.equal((await flash).transient, true);

    const img = next(b, 'message', (m) => m.msg && m.msg.type === 'image');
    await conv.sendAsync({ text: '<cat>', url: 'https://x/cat.png', metaData: { name: 'cat', format: 'png', width: 2, height: 3, size: 4 } }, { type: 'image' });
    const im = (await img).msg;
    assert.equal(im.text, '&lt;cat&gt;');
    assert.equal(im.url, 'https://x/cat.png');
    assert.equal(im.metaData.width, 2);
    const html = next(b, 'message', (m) => typeof m.msg === 'string' && m.msg.includes('script'));
    await conv.sendAsync('<script>alert(1)</script>');
    assert.equal((await html).msg, '&lt;script&gt;alert(1)&lt;/script&gt;');

    const logs = await conv.logAsync();
    assert.equal(logs.some((l) => l.data === 'flash'), false, 'transient messages are not stored');
    assert.equal(logs.at(-1).data, '<script>alert(1)</script>');
  });

  it('history pages oldest-first with t/mid', async () => {
    const a = client(uniq('hist'));
    await a.openAsync();
    const conv = await a.convAsync({ members: [] });
    const acks = [];
    for (let k = 0; k < 5; k++) acks.push(await conv.sendAsync('m' + k));
    const last3 = await conv.logAsync({ limit: 3 });
    assert.deepEqual(last3.map((l) => l.data), ['m2', 'm3', 'm4']);
    assert.deepEqual(last3.map((l) => l.msgId), acks.slice(2).map((x) => x.uid));
    const older = await conv.logAsync({ t: last3[0].timestamp, mid: last3[0].msgId, limit: 10 });
    assert.deepEqual(older.map((l) => l.data), ['m0', 'm1']);
  });

  it('offline delivery: messages sent while a member is away arrive when it comes back', async () => {
    const [A, B] = [uniq('oa'), uniq('ob')];
    const a = client(A);
    let b = client(B);
    await Promise.all([a.openAsync(), b.openAsync()]);
    // Listen before creating: the push can arrive before the creation promise settles.
    const invited = next(b, 'invited');
    const conv = await a.convAsync({ members: [B] });
    assert.equal((await invited).cid, conv.id);
    b.close();
    await sleep(200);
    const sent = [await conv.sendAsync('while away 1'), await conv.sendAsync('while away 2')];
    b = client(B);
    const got = collect(b, 'message');
    await b.openAsync();
    await until(() => got.length >= 2, 5000, 'offline messages');
    await sleep(300);
    assert.deepEqual(got.map((m) => m.msg), ['while away 1', 'while away 2']);
    assert.deepEqual(got.map((m) => m.id), sent.map((s) => s.uid));
    // acked: a new session gets nothing again
    b.close();
    const b2 = client(B);
    const again = collect(b2, 'message');
    await b2.openAsync();
    await sleep(500);
    assert.deepEqual(again, [], 'acknowledged offline messages are not delivered twice');
  });
});

describe('queries, presence, update, errors', { timeout: 30000 }, () => {
  it('query, conv(id), ping on realtime and room, update', async () => {
    const [A, B] = [uniq('qa'), uniq('qb')];
    const a = client(A);
    const b = client(B);
    await Promise.all([a.openAsync(), b.openAsync()]);
    const title = uniq('title');
    const conv = await a.roomAsync({ members: [B], name: title, attr: { topic: 'x' } });
    const mine = await new Promise((r) => a.query(r));
    assert.ok(mine.some((c) => c.objectId === conv.id), 'default query: my conversations');
    const byName = await a.queryAsync({ where: { name: title } });
    assert.deepEqual(byName.map((c) => c.objectId), [conv.id]);
    const compact = await a.queryAsync({ where: { name: title }, compact: true });
    assert.equal(compact[0].m, undefined, 'compact drops members');
    const found = await b.convAsync(conv.id);
    assert.equal(found.id, conv.id);
    assert.equal(found.name, title);
    assert.equal(await b.convAsync('000000000000000000000000'), null);

    const offline = uniq('nobody');
    assert.deepEqual(await a.pingAsync([B, offline]), [B]);
    assert.deepEqual(await conv.pingAsync(A), [A]);
    let pinged;
    await new Promise((r) => a.ping(B, (d) => r((pinged = d))));
    assert.deepEqual(pinged, [B]);

    const upd = next(b, 'update', (d) => d.cid === conv.id);
    await conv.updateAsync({ name: title + '!' });
    assert.equal(conv.name, title + '!');
    await upd;
    const again = await b.convAsync(conv.id);
    assert.equal(again.name, title + '!');
  });

  it('server errors reject with code and reason, fire error, keep the connection', async () => {
    const a = client(uniq('err'));
    await a.openAsync();
    const ghost = a.conv('000000000000000000000000');
    const ev = next(a, 'error', (e) => e.request && e.request.cmd === 'direct');
    await assert.rejects(ghost.sendAsync('into the void'), (e) => {
      assert.equal(typeof e.code, 'number');
      assert.match(e.reason, /^[A-Z_]+$/);
      assert.equal(e.request.msg, 'into the void');
      return true;
    });
    const e = await ev;
    assert.ok(e.code >= 4000);
    const conv = await a.convAsync({ members: [] });
    assert.ok((await conv.sendAsync('still connected')).uid);
  });
});

describe('close()', { timeout: 20000 }, () => {
  it('a Node process exits by itself after close() (no timer, no socket left)', async () => {
    const script = `
      import WebSocket from 'ws';
      import realtime from ${JSON.stringify(fileURLToPath(new URL('../../src/index.js', import.meta.url)))};
      const rt = await realtime({ appId: ${JSON.stringify(APP.id)}, clientId: 'exiter', server: process.argv[1], WebSocket }).openAsync();
      const room = await rt.convAsync({ members: ['someone'] });
      await room.sendAsync('bye');
      rt.close();
      console.log('closed at', Date.now());
    `;
    const t0 = Date.now();
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, server.http], {
      cwd: fileURLToPath(new URL('../..', import.meta.url)),
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const code = await new Promise((ok, ko) => {
      const t = setTimeout(() => {
        child.kill();
        ko(new Error('process still alive 8 s after close()'));
      }, 8000);
      child.on('exit', (c) => {
        clearTimeout(t);
        ok(c);
      });
    });
    assert.equal(code, 0);
    assert.match(out, /closed at/);
    assert.ok(Date.now() - t0 < 8000);
  });
});

describe('reconnect across a server restart', { timeout: 60000 }, () => {
  it('emits reuse then open, flushes queued sends in order, keeps history', async () => {
    const [A, B] = [uniq('sa'), uniq('sb')];
    const a = client(A);
    const b = client(B);
    await Promise.all([a.openAsync(), b.openAsync()]);
    // Listen before creating: the push can arrive before the creation promise settles.
    const invited = next(b, 'invited');
    const conv = await a.convAsync({ members: [B] });
    assert.equal((await invited).cid, conv.id);
    const first = next(b, 'message', (m) => m.msg === 'before restart');
    await conv.sendAsync('before restart');
    await first;
    await sleep(200); // let bob's ack reach the server
    const aEvents = [];
    for (const n of ['close', 'reuse', 'open']) a.on(n, () => aEvents.push(n));
    const bGot = collect(b, 'message');
    const aReopened = next(a, 'open', () => true, 30000);
    const bReopened = next(b, 'open', () => true, 30000);
    const stopped = server.stop();
    await next(a, 'reuse', () => true, 10000);
    await stopped;
    const queued = [conv.sendAsync('queued 1'), conv.sendAsync('queued 2'), conv.sendAsync('queued 3')];
    server = await server.restart();
    await Promise.all([aReopened, bReopened]);
    assert.deepEqual(aEvents.slice(0, 2), ['close', 'reuse']);
    assert.equal(aEvents.at(-1), 'open');
    const acks = await Promise.all(queued);
    assert.ok(acks.every((x) => x.uid));
    await until(() => bGot.length >= 3, 10000, 'queued messages at the other client');
    assert.deepEqual(bGot.map((m) => m.msg), ['queued 1', 'queued 2', 'queued 3']);
    const logs = await conv.logAsync();
    assert.deepEqual(logs.map((l) => l.data), ['before restart', 'queued 1', 'queued 2', 'queued 3']);
  });
});

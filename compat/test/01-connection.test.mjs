// AV.realtime(options, cb), version, open/close, the event center, router, heartbeats, login refusals.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { serverFixture } from '../lib/fixture.mjs';
import { realtime, redirect, Client, sleep, uid, withTimeout } from '../lib/sdk.mjs';

const require = createRequire(import.meta.url);
const ctx = serverFixture();

test('router: GET /v1/route?appId=… answers {server, ttl} pointing at the WebSocket endpoint', async () => {
  for (const q of ['', '&secure=1']) {
    const res = await redirect.httpGetJson(`${ctx.server.url}/v1/route?_t=${Date.now()}&appId=${ctx.app.id}${q}`);
    assert.equal(res.status, 200, res.body);
    assert.equal(typeof res.json.server, 'string');
    assert.equal(res.json.server, ctx.server.wsUrl, `router server for query "${q}"`);
    assert.equal(typeof res.json.ttl, 'number');
    assert.ok(res.json.ttl > 0);
  }
});

test("router: the SDK's own XMLHttpRequest ajax tool can read the answer", async () => {
  const data = await withTimeout(new Promise((resolve, reject) => {
    realtime._tool.ajax(`${ctx.server.url}/v1/route?_t=${Date.now()}&appId=${ctx.app.id}&secure=1`,
      (err, d) => (err ? reject(new Error(JSON.stringify(err))) : resolve(d)));
  }), 5000, 'ajax');
  assert.equal(data.server, ctx.server.wsUrl);
  assert.equal(typeof data.ttl, 'number');
});

test('AV.realtime.version is 2.4.0 and matches the package', () => {
  assert.equal(realtime.version, '2.4.0');
  assert.equal(require('leancloud-realtime/package.json').version, realtime.version);
});

test('AV.realtime() without options / without appId throws', () => {
  assert.throws(() => realtime());
  assert.throws(() => realtime({}));
  assert.throws(() => realtime({ clientId: 'x' }), /appId/);
});

test('AV.realtime(options, callback): callback and "open" event after session opened; router was used', async () => {
  const id = uid('alice');
  const since = redirect.routerLog.length;
  let openEvent;
  const c = await new Promise((resolve, reject) => {
    const rt = realtime({ appId: ctx.app.id, clientId: id }, () => resolve(client));
    const client = ctx.track(new Client(rt, id));
    rt.on('open', (d) => { openEvent = d; });
    rt.on('error', (e) => reject(new Error(JSON.stringify(e))));
  });
  assert.ok(openEvent, 'open event');
  assert.equal(openEvent.cmd, 'session');
  assert.equal(openEvent.op, 'opened');
  assert.equal(openEvent.peerId, id);
  assert.equal(c.rt.clientId, id);
  // The SDK asked the router exactly like it asks LeanCloud's (appId, secure=1 in Node).
  const calls = redirect.routerLog.slice(since).filter((r) => r.appId === ctx.app.id);
  assert.ok(calls.length >= 1);
  assert.match(calls[0].url, /\/v1\/route\?_t=\d+&appId=[^&]+&secure=1$/);
  assert.equal(calls[0].status, 200);
  // What 2.4.0 sent: session open with appId, ua, i starting at 2016, and peerId.
  const open = c.frames('out').map((f) => JSON.parse(f.data)).find((f) => f.cmd === 'session');
  assert.deepEqual({ ...open }, { cmd: 'session', op: 'open', appId: ctx.app.id, ua: 'js/2.4.0', i: 2016, peerId: id });
  // No WebSocket subprotocol was negotiated (ws@0.8 would have aborted otherwise).
  assert.ok(!c.rt.cache.ws.protocol, `protocol=${c.rt.cache.ws.protocol}`);
});

test('open(callback) after close() reconnects and calls back', async () => {
  const c = await ctx.open(uid('reopen'));
  c.rt.close();
  await c.closed();
  const since = c.mark();
  await withTimeout(new Promise((resolve) => c.rt.open(resolve)), 10_000, 'open(cb)');
  assert.equal(c.seen('open', since).length, 1);
  // the re-opened session works
  const online = await c.ping([c.id]);
  assert.deepEqual(online, [c.id]);
});

test('close(): emits "close", closes the socket, and the session goes offline for others', async () => {
  const a = await ctx.open(uid('a'));
  const b = await ctx.open(uid('b'));
  assert.deepEqual(await b.ping([a.id]), [a.id]);
  const since = a.mark();
  a.rt.close();
  await a.waitFor('close', () => true, { since });
  assert.equal(a.rt.cache.ws.readyState, 3 /* CLOSED */);
  let online = [a.id];
  for (let n = 0; n < 20 && online.length; n++) {
    online = await b.ping([a.id]);
    if (online.length) await sleep(100);
  }
  assert.deepEqual(online, []);
  // close() must not trigger the SDK's reconnect
  await sleep(300);
  assert.equal(a.seen('reuse', since).length, 0);
});

test('close() before open has succeeded throws (2.4.0 contract)', () => {
  const c = ctx.start(uid('early'));
  assert.throws(() => c.rt.close(), /open/);
});

test('on/emit, once, off (the RealtimeObject event center)', async () => {
  const c = await ctx.open(uid('ev'));
  const got = [];
  const fn = (d) => got.push(['on', d]);
  assert.equal(c.rt.on('custom', fn), c.rt, 'on is chainable');
  assert.equal(c.rt.once('custom', (d) => got.push(['once', d])), c.rt);
  assert.equal(c.rt.emit('custom', { aaa: 'test' }), c.rt);
  c.rt.emit('custom', { aaa: 2 });
  assert.equal(c.rt.off('custom', fn), c.rt);
  c.rt.emit('custom', { aaa: 3 });
  assert.deepEqual(got, [['on', { aaa: 'test' }], ['once', { aaa: 'test' }], ['on', { aaa: 2 }]]);
});

test('anonymous client (no clientId): 2.4.0 omits peerId; the server assigns one', async () => {
  const c = await withTimeout(new Promise((resolve, reject) => {
    const rt = realtime({ appId: ctx.app.id }, () => resolve(client));
    const client = ctx.track(new Client(rt, undefined));
    rt.on('error', (e) => reject(new Error(JSON.stringify(e))));
  }), 10_000, 'anonymous open');
  const opened = c.seen('open')[0];
  assert.equal(typeof opened.peerId, 'string');
  assert.ok(opened.peerId.length > 0 && opened.peerId.length <= 64);
  const sent = JSON.parse(c.frames('out').find((f) => f.data.includes('"session"')).data);
  assert.ok(!('peerId' in sent));
});

async function expectClose(client, code) {
  const ev = await client.waitFor('close', () => true, { timeout: 10_000 });
  assert.equal(client.seen('open').length, 0, 'must not open');
  assert.equal(ev.code, code, `close code (reason ${ev.reason})`);
  client.close();
}

test('unknown appId: the WebSocket is closed with 4100 (APP_NOT_AVAILABLE)', async () => {
  const appId = uid('no-such-app');
  // What the router says for an unknown app is the server's choice; the socket must refuse it.
  const res = await redirect.httpGetJson(`${ctx.server.url}/v1/route?appId=${appId}`);
  redirect.pin(appId, ctx.server.wsUrl);
  try {
    const c = ctx.track(Client.start({ appId, clientId: 'x' }));
    await expectClose(c, 4100);
  } finally {
    redirect.pin(appId, undefined);
  }
  assert.ok(res.status > 0);
});

test('clientId longer than 64 characters: closed with 4103 (INVALID_LOGIN)', async () => {
  await expectClose(ctx.start('x'.repeat(65)), 4103);
});

test('clientId of exactly 64 characters is accepted', async () => {
  const c = await ctx.open('y'.repeat(64));
  assert.equal(c.seen('open')[0].peerId, 'y'.repeat(64));
});

test('empty-string clientId: closed with 4103 (INVALID_LOGIN)', async () => {
  await expectClose(ctx.start(''), 4103);
});

test('heartbeat: every "{}" the SDK sends is answered, so the SDK keeps beating on one socket', async () => {
  realtime.config({ heartbeatsTime: 200 });
  try {
    const c = await ctx.open(uid('hb'));
    const ws = c.rt.cache.ws;
    await sleep(1500);
    const out = ws.__log.filter((f) => f.dir === 'out' && f.data === '{}').length;
    const inn = ws.__log.filter((f) => f.dir === 'in' && f.data.trim() === '{}').length;
    // The SDK re-arms its 200 ms timer only when a frame arrives: >= 3 beats means >= 2 were answered.
    assert.ok(out >= 3, `heartbeats sent: ${out}`);
    assert.ok(inn >= out - 1, `heartbeat replies: ${inn} for ${out} sent`);
    assert.equal(c.rt.cache.ws, ws, 'same socket');
    assert.equal(c.seen('reuse').length, 0);
  } finally {
    realtime.config({ heartbeatsTime: 60 * 1000 });
  }
});

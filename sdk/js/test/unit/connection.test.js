// The connection that survives the real world: reconnect with backoff, queueing, timeouts,
// heartbeats, fatal codes, online/offline, close() without leftovers, independent instances.
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import realtime from '../../src/index.js';
import { startFake, once, sleep } from './fake-server.js';

let fake;
const clients = [];
const open = (opts = {}) => {
  const rt = realtime({ appId: 'app', clientId: 'alice', server: fake.url, WebSocket, minDelay: 20, maxDelay: 200, ...opts });
  clients.push(rt);
  return rt;
};
/** The same, once its session is open (the Promise-style name of open()). */
const opened = (...a) => open(...a).openAsync();
const events = (rt, names) => {
  const log = [];
  for (const n of names) rt.on(n, () => log.push(n));
  return log;
};

before(async () => {
  fake = await startFake();
});
after(() => fake.stop());
afterEach(() => {
  for (const rt of clients.splice(0)) rt.close();
});

describe('reconnect', () => {
  it('emits close, reuse, then open again and opens a new session', async () => {
    const rt = await opened();
    const log = events(rt, ['close', 'reuse', 'open']);
    const opens = fake.sent((f) => f.op === 'open').length;
    const reopened = once(rt, 'open');
    fake.dropAll();
    await reopened;
    assert.deepEqual(log.slice(0, 2), ['close', 'reuse']);
    assert.equal(log.at(-1), 'open');
    assert.equal(fake.sent((f) => f.op === 'open').length, opens + 1);
    const room = await rt.convAsync({ members: [] });
    assert.ok(room.id);
  });

  it('backs off exponentially with jitter up to maxDelay, and resets after success', async () => {
    const down = await startFake();
    const url = down.url;
    await down.stop(); // nothing listens there now
    const rt = open({ server: url, minDelay: 10, maxDelay: 80 });
    const delays = [];
    rt.on('reuse', (d) => delays.push(d.delay));
    while (delays.length < 5) await sleep(20);
    rt.close();
    assert.deepEqual(delays.slice(0, 5), [10, 20, 40, 80, 80]);
  });

  it('queues requests while disconnected and flushes them in call order', async () => {
    const rt = await opened();
    const room = await rt.convAsync({ members: [] });
    const saved = fake.reply['session open'];
    fake.reply['session open'] = () => undefined; // hold the next session open
    const lost = once(rt, 'reuse');
    fake.dropAll();
    await lost;
    const from = fake.frames.length;
    const sends = ['one', 'two', 'three'].map((m) => room.sendAsync(m));
    const counted = room.countAsync();
    await sleep(100);
    assert.equal(fake.frames.slice(from).filter((x) => x.frame.cmd === 'direct').length, 0, 'nothing written before the session is open');
    fake.reply['session open'] = saved;
    fake.dropAll(); // next attempt gets its session
    const acks = await Promise.all(sends);
    assert.equal(await counted, 2);
    const order = fake.frames.slice(from).map((x) => x.frame).filter((f) => f.cmd === 'direct').map((f) => f.msg);
    assert.deepEqual(order, ['one', 'two', 'three']);
    assert.ok(acks.every((a) => a.uid));
  });

  it('re-sends requests whose answer was lost in a dropped connection (same i)', async () => {
    const rt = await opened();
    const room = await rt.convAsync({ members: [] });
    const saved = fake.reply.direct;
    fake.reply.direct = () => undefined; // swallow
    const p = room.sendAsync('retry me');
    const first = await fake.next((f) => f.msg === 'retry me');
    fake.reply.direct = saved;
    const from = fake.frames.length;
    fake.dropAll();
    const again = await fake.next((f) => f.msg === 'retry me', { from });
    assert.equal(again.i, first.i);
    assert.equal(again.dt, first.dt, 'the same dedupe token, so the server stores it once');
    assert.ok((await p).uid);
  });

  it('fails queued requests after the documented timeout with code TIMEOUT', async () => {
    const rt = await opened({ timeout: 150 });
    const room = await rt.convAsync({ members: [] });
    const saved = fake.reply['session open'];
    fake.reply['session open'] = () => undefined;
    fake.dropAll();
    await once(rt, 'reuse');
    const err = once(rt, 'error');
    const t0 = Date.now();
    await assert.rejects(room.sendAsync('late'), (e) => e.code === 'TIMEOUT' && e.request.msg === 'late');
    assert.ok(Date.now() - t0 >= 140);
    assert.equal((await err).code, 'TIMEOUT');
    fake.reply['session open'] = saved;
  });

  it('server-closed session: reconnects, except for fatal codes', async () => {
    const rt = await opened();
    const log = events(rt, ['error', 'close', 'open']);
    fake.push({ cmd: 'session', op: 'closed', code: 4200, reason: 'INTERNAL_ERROR' }, 'alice');
    await once(rt, 'open');
    assert.deepEqual(log, ['error', 'close', 'open']);
    const errs = [];
    rt.on('error', (e) => errs.push(e.code));
    const closed = once(rt, 'close');
    const opens = fake.sent((f) => f.op === 'open').length;
    fake.push({ cmd: 'session', op: 'closed', code: 4111, reason: 'SESSION_CONFLICT' }, 'alice');
    await closed;
    await sleep(100);
    assert.deepEqual(errs, [4111]);
    assert.equal(fake.sent((f) => f.op === 'open').length, opens, 'no reconnect after a conflict');
    await assert.rejects(rt.convAsync({ members: [] }), { code: 'CLOSED' });
  });

  it('fatal WebSocket close codes stop reconnecting', async () => {
    const rt = await opened({ clientId: 'fatal' });
    const err = once(rt, 'error');
    const closed = once(rt, 'close');
    fake.conns.find((c) => c.peerId === 'fatal').ws.close(4100);
    assert.equal((await err).code, 4100);
    await closed;
    await sleep(80);
    assert.equal(fake.conns.some((c) => c.peerId === 'fatal'), false);
  });

  it('a failed session open is reported and retried', async () => {
    let n = 0;
    const saved = fake.reply['session open'];
    fake.reply['session open'] = (f) =>
      n++ ? saved(f) : { cmd: 'error', code: 4102, reason: 'SIGNATURE_FAILED', i: f.i };
    try {
      const rt = open({ clientId: 'retry' });
      const e = await once(rt, 'error');
      assert.equal(e.code, 4102);
      assert.equal(e.reason, 'SIGNATURE_FAILED');
      await rt.openAsync();
    } finally {
      fake.reply['session open'] = saved;
    }
  });
});

describe('login signature', () => {
  it('a refused login signature is reported and the login retried', async () => {
    let n = 0;
    const rt = open({ clientId: 'signer', authFun: (d, cb) => cb(n++ ? { signature: 's', timestamp: 1, nonce: 'n' } : null) });
    const e = await once(rt, 'error');
    assert.equal(e.code, 'SIGNATURE');
    await rt.openAsync();
    assert.equal(fake.sent((f) => f.op === 'open' && f.peerId === 'signer').pop().s, 's');
  });
});

describe('heartbeat', () => {
  it('sends {} after idle time and keeps the connection while answered', async () => {
    const rt = await opened({ heartbeat: 60 });
    const log = events(rt, ['reuse']);
    const from = fake.frames.length;
    await sleep(300);
    const beats = fake.frames.slice(from).filter((x) => !x.frame.cmd).length;
    assert.ok(beats >= 3, 'heartbeats sent: ' + beats);
    assert.deepEqual(log, []);
  });

  it('reconnects when heartbeats stay unanswered', async () => {
    const saved = fake.reply.heartbeat;
    fake.reply.heartbeat = () => undefined;
    try {
      const rt = await opened({ heartbeat: 50 });
      const log = events(rt, ['close', 'reuse']);
      await once(rt, 'reuse', 1000);
      assert.deepEqual(log.slice(0, 2), ['close', 'reuse']);
    } finally {
      fake.reply.heartbeat = saved;
    }
  });
});

describe('router', () => {
  it('caches the route for ttl, asks again after a failed connection', async () => {
    const before = fake.routeRequests.length;
    const rt = await opened({ server: fake.http });
    fake.dropAll();
    await once(rt, 'open');
    assert.equal(fake.routeRequests.length, before + 1, 'still within ttl: no new route request');
    const saved = fake.reply['session open'];
    fake.reply['session open'] = () => undefined;
    const from = fake.frames.length;
    fake.dropAll();
    await fake.next((f) => f.op === 'open', { from }); // the held session open
    fake.dropAll(); // fails before the session opened: forget the route
    fake.reply['session open'] = saved;
    await once(rt, 'open');
    assert.ok(fake.routeRequests.length >= before + 2);
  });

  it('router failure is reported as an error and retried', async () => {
    fake.routeStatus = 503;
    try {
      const rt = open({ server: fake.http, clientId: 'r503' });
      const e = await once(rt, 'error');
      assert.equal(e.code, 'ROUTE');
      fake.routeStatus = 200;
      await rt.openAsync();
    } finally {
      fake.routeStatus = 200;
    }
  });
});

describe('close()', () => {
  it('works before the connection opened (manual example) and rejects what is pending', async () => {
    const rt = open();
    const room = rt.conv({ members: [] });
    const creating = rt.convAsync({ members: [] });
    const opening = rt.openAsync();
    assert.equal(rt.close(), rt);
    let closed = false;
    rt.on('close', () => (closed = true));
    await assert.rejects(room.sendAsync('x'), { code: 'CLOSED' });
    await assert.rejects(creating, { code: 'CLOSED' });
    await assert.rejects(opening, { code: 'CLOSED' });
    await sleep(10);
    assert.equal(closed, true);
  });

  it('leaves no timer or socket behind: a Node process exits by itself', async () => {
    const script = `
      import WebSocket from 'ws';
      import realtime from ${JSON.stringify(fileURLToPath(new URL('../../src/index.js', import.meta.url)))};
      const rt = await realtime({ appId: 'app', clientId: 'exiter', server: process.argv[1], WebSocket }).openAsync();
      const room = await rt.convAsync({ members: [] });
      await room.sendAsync('bye');
      room.send('pending forever?');
      rt.close();
      console.log('closed');
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, fake.http], {
      cwd: fileURLToPath(new URL('../..', import.meta.url)),
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const code = await new Promise((ok, ko) => {
      const t = setTimeout(() => {
        child.kill();
        ko(new Error('process did not exit after close()'));
      }, 5000);
      child.on('exit', (c) => {
        clearTimeout(t);
        ok(c);
      });
    });
    assert.equal(code, 0);
    assert.equal(out.trim(), 'closed');
  });

  it('open() after close() connects again', async () => {
    const rt = await opened();
    rt.close();
    await once(rt, 'close');
    const back = await rt.openAsync();
    assert.equal(back, rt);
    assert.ok((await rt.convAsync({ members: [] })).id);
  });
});

describe('several instances', () => {
  it('are independent (events, state, serials)', async () => {
    const a = await opened({ clientId: 'ia' });
    const b = await opened({ clientId: 'ib' });
    const la = events(a, ['close', 'message']);
    const lb = events(b, ['close', 'message']);
    fake.conns.find((c) => c.peerId === 'ia').ws.terminate();
    await once(a, 'open');
    fake.push({ cmd: 'direct', cid: 'c', id: 'only-b', msg: 'x' }, 'ib');
    await once(b, 'message');
    assert.deepEqual(la, ['close']);
    assert.deepEqual(lb, ['message']);
    b.close();
    assert.ok((await a.convAsync({ members: [] })).id);
  });
});

describe('browser online/offline', () => {
  it('drops the socket when offline and reconnects at once when online', async () => {
    const target = new EventTarget();
    globalThis.addEventListener = target.addEventListener.bind(target);
    globalThis.removeEventListener = target.removeEventListener.bind(target);
    try {
      const rt = await opened({ minDelay: 60000, maxDelay: 60000 });
      const log = events(rt, ['close', 'reuse', 'open']);
      target.dispatchEvent(new Event('offline'));
      assert.deepEqual(log, ['close', 'reuse']);
      const t0 = Date.now();
      target.dispatchEvent(new Event('online'));
      await once(rt, 'open');
      assert.ok(Date.now() - t0 < 2000, 'did not wait for the 60 s backoff');
      rt.close();
    } finally {
      delete globalThis.addEventListener;
      delete globalThis.removeEventListener;
    }
  });
});

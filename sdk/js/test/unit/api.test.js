// Every method, overload, option and event of the v2 manual, against the fake server:
// exact request frames, callback arguments, promise results and emitted events.
import { describe, it, before, after, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import realtime from '../../src/index.js';
import { startFake, once, sleep } from './fake-server.js';

let fake;
const clients = [];
const open = (opts = {}, cb) => {
  const rt = realtime({ appId: 'app', clientId: 'alice', server: fake.url, WebSocket, ...opts }, cb);
  clients.push(rt);
  return rt;
};
/** The same, once its session is open (the Promise-style name of open()). */
const opened = (...a) => open(...a).openAsync();
const strip = ({ i, peerId, ...rest }) => rest;

before(async () => {
  fake = await startFake();
});
after(() => fake.stop());
afterEach(() => {
  for (const rt of clients.splice(0)) rt.close();
});

describe('AV.realtime()', () => {
  it('exposes version, config, encodeHTML and the 2.x aliases', () => {
    assert.match(realtime.version, /^\d+\.\d+\.\d+/);
    assert.equal(typeof realtime.config, 'function');
    assert.equal(realtime.realtime, realtime);
    assert.equal(realtime.default, realtime);
    assert.equal(realtime.encodeHTML('<a href="x">&\'</a>'), '&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;');
  });

  it('opens a session: frame, callback, open event and openAsync()', async () => {
    let cbArg;
    const rt = open({}, (x) => (cbArg = x));
    assert.equal(typeof rt.then, 'undefined', 'AV.realtime() returns the object itself, not a thenable');
    const ev = once(rt, 'open');
    const f = await fake.next((f) => f.cmd === 'session');
    assert.deepEqual(strip(f), { cmd: 'session', op: 'open', appId: 'app', ua: 'js/' + realtime.version });
    assert.equal(typeof f.i, 'number');
    assert.equal(f.peerId, 'alice');
    const data = await ev;
    assert.equal(data.op, 'opened');
    assert.equal(await rt.openAsync(), rt);
    assert.equal(cbArg, rt, 'the callback gets the object itself');
    assert.equal(rt.clientId, 'alice');
  });

  it('open(callback) on an open object calls back and returns the object', async () => {
    const rt = await opened();
    const called = new Promise((r) => assert.equal(rt.open(r), rt));
    assert.equal(await called, rt);
    assert.equal(await rt.openAsync(), rt);
  });

  it('an async function returning AV.realtime() resolves to the object (no thenable trap)', async () => {
    const connect = async () => open();
    const rt = await connect();
    assert.equal(typeof rt.on, 'function');
    assert.equal(typeof rt.then, 'undefined');
    assert.equal(await rt.openAsync(), rt);
  });

  it('on/once/off/emit work as in the manual (custom events, chaining)', async () => {
    const rt = await opened();
    const got = [];
    const fun = (d) => got.push(d.aaa);
    assert.equal(rt.on('LeanCloud123', fun), rt);
    rt.once('LeanCloud123', (d) => got.push('once:' + d.aaa));
    rt.emit('LeanCloud123', { aaa: 'test' }).emit('LeanCloud123', { aaa: 'again' });
    rt.off('LeanCloud123', fun).emit('LeanCloud123', { aaa: 'gone' });
    assert.deepEqual(got, ['test', 'once:test', 'again']);
    const once2 = () => got.push('x');
    rt.once('e2', once2).off('e2', once2).emit('e2');
    rt.on('e3', once2).on('e3', once2).off('e3', once2).emit('e3'); // every registration of the function
    assert.equal(got.length, 3);
  });

  it('a throwing listener does not stop other listeners', async () => {
    const rt = await opened();
    const seen = [];
    const orig = process.listeners('uncaughtException');
    process.removeAllListeners('uncaughtException');
    const caught = new Promise((r) => process.once('uncaughtException', r));
    rt.on('x', () => {
      throw new Error('boom');
    }).on('x', () => seen.push(1));
    rt.emit('x');
    assert.equal((await caught).message, 'boom');
    for (const l of orig) process.on('uncaughtException', l);
    assert.deepEqual(seen, [1]);
  });
});

describe('conv / room', () => {
  it('creates a conversation: frame, callback, create event, promise', async () => {
    const rt = await opened();
    const created = once(rt, 'create');
    let room;
    const called = new Promise((r) => (room = rt.conv({ members: ['LeanCloud02'], data: { name: 'LeanCloud', m: 123 } }, r)));
    assert.equal(typeof room.add, 'function', 'returns a conversation object synchronously');
    const f = await fake.next((f) => f.op === 'start');
    assert.deepEqual(strip(f), {
      cmd: 'conv',
      op: 'start',
      m: ['LeanCloud02'],
      attr: { name: 'LeanCloud', attr: { name: 'LeanCloud', m: 123 } },
      unique: false,
      transient: false,
    });
    const ev = await created;
    assert.match(room.id, /^conv\d+$/);
    assert.equal(ev.cid, room.id);
    assert.equal(await called, room, 'the callback gets the very object conv() returned');
    assert.equal(room.name, 'LeanCloud');
  });

  it('room is conv; name/attr/unique/transient options', async () => {
    const rt = await opened();
    assert.equal(rt.room, rt.conv);
    const c = await rt.roomAsync({ members: ['a', 'b'], name: 'n', attr: { x: 1 }, unique: true, transient: true });
    const f = fake.sent((f) => f.op === 'start').pop();
    assert.deepEqual(f.attr, { name: 'n', attr: { x: 1 } });
    assert.equal(f.unique, true);
    assert.equal(f.transient, true);
    assert.equal(c.name, 'n');
    assert.deepEqual(c.attr, { x: 1 });
  });

  it('conv(callback) creates an empty conversation', async () => {
    const rt = await opened();
    let room;
    const c = await new Promise((r) => (room = rt.conv(r)));
    assert.equal(c, room);
    assert.ok(c.id);
  });

  it('methods called before the conversation exists wait for its id', async () => {
    const rt = open();
    const room = rt.conv({ members: ['bob'] });
    const ack = room.sendAsync('early');
    const f = await fake.next((f) => f.cmd === 'direct');
    assert.equal(f.cid, room.id);
    assert.ok((await ack).uid);
  });

  it('conv(id) looks the conversation up; callback gets it or null', async () => {
    const rt = await opened();
    fake.reply['conv query'] = (f) => ({
      cmd: 'conv',
      op: 'results',
      i: f.i,
      results: f.where.objectId === 'known' ? [{ objectId: 'known', name: 'Known', attr: { a: 1 }, m: ['alice', 'x'] }] : [],
    });
    try {
      let got;
      const room = rt.conv('known', (c) => (got = c));
      assert.equal(room.id, 'known', 'id is usable immediately');
      const c = await rt.convAsync('known');
      assert.equal(c, room, 'the same object for the same id');
      const f = fake.sent((f) => f.op === 'query').pop();
      assert.deepEqual(f.where, { objectId: 'known' });
      assert.equal(got, c);
      assert.equal(c.name, 'Known');
      assert.deepEqual(c.attr, { a: 1 });
      assert.equal(rt.conv('known').id, 'known');
      let missing = 'unset';
      await new Promise((r) => rt.conv('nope', (c) => r((missing = c))));
      assert.equal(missing, null);
      assert.equal(await rt.convAsync('nope'), null);
      assert.deepEqual(await c.listAsync(), ['alice', 'x']);
      const listed = await new Promise((r) => rt.room('nope').list(r));
      assert.deepEqual(listed, []);
    } finally {
      delete fake.reply['conv query'];
      fake.reply['conv query'] = (f) => ({ cmd: 'conv', op: 'results', i: f.i, results: [] });
    }
  });
});

describe('conversation methods', () => {
  let rt, room;
  beforeEach(async () => {
    rt = await opened();
    room = await rt.convAsync({ members: ['LeanCloud02'] });
  });

  it('add/remove with one id or a list; callbacks get the reply; chaining', async () => {
    const got = [];
    const r = room.add('LeanCloud03', (d) => got.push(d.op)).add(['LeanCloud04', 'LeanCloud05'], (d) => got.push(d.op));
    assert.equal(r, room);
    await new Promise((done) => room.remove('LeanCloud03', (d) => done(got.push(d.op))).remove(['LeanCloud04', 'LeanCloud05']));
    await room.countAsync(); // answered after the removals
    const fs = fake.sent((f) => f.op === 'add' || f.op === 'remove').slice(-4).map(strip);
    assert.deepEqual(fs, [
      { cmd: 'conv', op: 'add', cid: room.id, m: ['LeanCloud03'] },
      { cmd: 'conv', op: 'add', cid: room.id, m: ['LeanCloud04', 'LeanCloud05'] },
      { cmd: 'conv', op: 'remove', cid: room.id, m: ['LeanCloud03'] },
      { cmd: 'conv', op: 'remove', cid: room.id, m: ['LeanCloud04', 'LeanCloud05'] },
    ]);
    assert.deepEqual(got, ['added', 'added', 'removed']);
  });

  it('join/leave add and remove the current client', async () => {
    let joined;
    await new Promise((r) => room.join((d) => r((joined = d))));
    assert.equal(joined.op, 'added');
    await room.leaveAsync();
    const fs = fake.sent((f) => f.op === 'add' || f.op === 'remove').slice(-2);
    assert.deepEqual(fs.map((f) => [f.op, f.m]), [
      ['add', ['alice']],
      ['remove', ['alice']],
    ]);
  });

  it('send: string, object, receipt, callback gets the ack', async () => {
    let ack;
    await new Promise((r) => room.send('hello', (d) => r((ack = d))));
    assert.equal(ack.cmd, 'ack');
    assert.ok(ack.uid && ack.t);
    const a2 = await room.sendAsync({ abc: 123 }, { receipt: true });
    assert.ok(a2.uid);
    await new Promise((r) => room.send({ testMsg: 'abcde' }, {}, r));
    const sent = fake.sent((f) => f.cmd === 'direct').slice(-3);
    const tokens = sent.map((f) => f.dt);
    assert.ok(tokens.every((t) => typeof t == 'string' && t.length >= 8), 'each message carries a dedupe token');
    assert.equal(new Set(tokens).size, 3, 'tokens differ per message');
    const fs = sent.map(strip).map(({ dt, ...f }) => f);
    assert.deepEqual(fs, [
      { cmd: 'direct', cid: room.id, msg: 'hello', r: false, transient: false },
      { cmd: 'direct', cid: room.id, msg: '{"abc":123}', r: 1, transient: false },
      { cmd: 'direct', cid: room.id, msg: '{"testMsg":"abcde"}', r: false, transient: false },
    ]);
  });

  it('transient send resolves once written (no ack exists)', async () => {
    const from = fake.frames.length;
    assert.equal(await room.sendAsync('blink', { transient: true }), undefined);
    const f = await fake.next((f) => f.cmd === 'direct', { from });
    assert.equal(f.transient, true);
    assert.equal(f.msg, 'blink');
  });

  it('rich media bodies (_lctype)', async () => {
    await room.sendAsync({ text: 'hi', attr: { a: 1 } }, { type: 'text' });
    await room.sendAsync(
      { text: 'pic', url: 'http://x/p.png', objectId: 'o1', metaData: { name: 'p', format: 'png', height: 1, width: 2, size: 3 } },
      { type: 'image' },
    );
    await room.sendAsync({ metaData: { longitude: 1.5, latitude: 2.5 } }, { type: 'location' });
    await room.sendAsync({ url: 'http://x/f', metaData: { name: 'f.txt', size: 9 } }, { type: 'file' });
    const bodies = fake.sent((f) => f.cmd === 'direct').slice(-4).map((f) => JSON.parse(f.msg));
    assert.deepEqual(bodies[0], { _lctype: -1, _lctext: 'hi', _lcattrs: { a: 1 } });
    assert.deepEqual(bodies[1], {
      _lctype: -2,
      _lctext: 'pic',
      _lcfile: { url: 'http://x/p.png', objId: 'o1', metaData: { name: 'p', format: 'png', height: 1, width: 2, size: 3 } },
    });
    assert.deepEqual(bodies[2], { _lctype: -5, _lcloc: { longitude: 1.5, latitude: 2.5 } });
    assert.deepEqual(bodies[3], { _lctype: -6, _lcfile: { url: 'http://x/f', name: 'f.txt', size: 9 } });
  });

  it('log: defaults, options, decoded items oldest first', async () => {
    fake.reply.logs = (f) => ({
      cmd: 'logs',
      i: f.i,
      logs: [
        { from: 'bob', data: '{"_lctype":-1,"_lctext":"<b>"}', timestamp: 1, msgId: 'a' },
        { from: 'alice', data: 'plain', timestamp: 2, msgId: 'b' },
      ],
    });
    try {
      let got;
      await new Promise((r) => room.log((l) => r((got = l))));
      assert.deepEqual(strip(fake.sent((f) => f.cmd === 'logs').pop()), { cmd: 'logs', cid: room.id, limit: 20 });
      assert.equal(got.length, 2);
      assert.deepEqual(got[0].data, { type: 'text', text: '<b>', attr: undefined, url: undefined, metaData: undefined, location: undefined });
      assert.equal(got[0].msg, got[0].data);
      assert.equal(got[0].fromPeerId, 'bob');
      assert.equal(got[1].msg, 'plain');
      const l2 = await room.logAsync({ t: 5, mid: 'b', limit: 3 });
      assert.equal(l2.length, 2);
      assert.deepEqual(strip(fake.sent((f) => f.cmd === 'logs').pop()), { cmd: 'logs', cid: room.id, t: 5, mid: 'b', limit: 3 });
    } finally {
      fake.reply.logs = (f) => ({ cmd: 'logs', i: f.i, logs: [] });
    }
  });

  it('count, update, list', async () => {
    let n;
    await new Promise((r) => room.count((x) => r((n = x))));
    assert.equal(n, 2);
    assert.equal(await room.countAsync(), 2);
    assert.deepEqual(strip(fake.sent((f) => f.op === 'count').pop()), { cmd: 'conv', op: 'count', cid: room.id });
    const up = await room.updateAsync({ name: 'renamed', attr: { t: 1 } });
    assert.equal(up.op, 'updated');
    assert.deepEqual(strip(fake.sent((f) => f.op === 'update').pop()), {
      cmd: 'conv',
      op: 'update',
      cid: room.id,
      attr: { name: 'renamed', attr: { t: 1 } },
    });
    assert.equal(room.name, 'renamed');
    assert.deepEqual(await room.listAsync(), []);
  });

  it('receive and receipt only see their own conversation; messages are acked', async () => {
    const mine = [];
    const receipts = [];
    const all = [];
    room.receive((d) => mine.push(d.msg)).receipt((d) => receipts.push(d.id));
    rt.on('message', (d) => all.push(d.cid));
    const conn = fake.conns.find((c) => c.peerId === 'alice');
    const m = { cmd: 'direct', cid: room.id, id: 'mid1', msg: '{"_lctype":-1,"_lctext":"yo"}', fromPeerId: 'bob', timestamp: 5 };
    conn.push(m);
    conn.push({ ...m, cid: 'other', id: 'mid2', msg: 'x' });
    conn.push({ ...m, id: 'mid1' }); // redelivery of an already-seen message
    conn.push({ ...m, id: 'mid3', msg: 'flash', transient: true });
    conn.push({ cmd: 'rcp', cid: room.id, id: 'mid0', t: 9, from: 'bob' });
    conn.push({ cmd: 'rcp', cid: 'other', id: 'midX', t: 9, from: 'bob' });
    await once(rt, 'receipt');
    await sleep(50);
    assert.deepEqual(mine, [{ type: 'text', text: 'yo', attr: undefined, url: undefined, metaData: undefined, location: undefined }, 'flash']);
    assert.deepEqual(all, [room.id, 'other', room.id]);
    assert.deepEqual(receipts, ['mid0']);
    const acks = fake.sent((f) => f.cmd === 'ack');
    assert.deepEqual(acks.slice(-3).map(strip), [
      { cmd: 'ack', cid: room.id, mid: 'mid1' },
      { cmd: 'ack', cid: 'other', mid: 'mid2' },
      { cmd: 'ack', cid: room.id, mid: 'mid1' },
    ]);
    assert.equal(acks.at(-1).i, undefined, 'acks carry no i');
  });

  it('ping on the realtime object and on the room object', async () => {
    fake.online.add('LeanCloud02');
    let got;
    await new Promise((r) => rt.ping(['LeanCloud01', 'LeanCloud02'], (d) => r((got = d))));
    assert.deepEqual(got, ['LeanCloud02']);
    assert.deepEqual(strip(fake.sent((f) => f.op === 'query').pop()), {
      cmd: 'session',
      op: 'query',
      sessionPeerIds: ['LeanCloud01', 'LeanCloud02'],
    });
    assert.deepEqual(await room.pingAsync('LeanCloud01'), []);
    let r;
    const online = await new Promise((done) => (r = room.ping('alice', done)));
    assert.equal(r, room, 'room.ping chains on the room');
    assert.deepEqual(online, ['alice']);
    fake.online.delete('LeanCloud02');
  });
});

describe('query', () => {
  it('defaults to my conversations, sorted by last message', async () => {
    const rt = await opened();
    let res;
    await new Promise((r) => rt.query((d) => r((res = d))));
    assert.deepEqual(res, []);
    assert.deepEqual(strip(fake.sent((f) => f.op === 'query').pop()), {
      cmd: 'conv',
      op: 'query',
      where: { m: 'alice' },
      sort: '-lm',
      limit: 10,
      skip: 0,
      flag: 0,
    });
  });

  it('passes options and rewrites members lists and roomIds', async () => {
    const rt = await opened();
    await rt.queryAsync({ where: { m: 'abc123' }, sort: '-lm', limit: 100, skip: 200, compact: false });
    assert.deepEqual(strip(fake.sent((f) => f.op === 'query').pop()), {
      cmd: 'conv',
      op: 'query',
      where: { m: 'abc123' },
      sort: '-lm',
      limit: 100,
      skip: 200,
      flag: 0,
    });
    const where = { m: ['a', 'b'], roomIds: ['r1'] };
    await rt.queryAsync({ where, compact: true, withLastMessages: true });
    const f = fake.sent((f) => f.op === 'query').pop();
    assert.deepEqual(f.where, { m: { $all: ['a', 'b'] }, objectId: { $in: ['r1'] } });
    assert.equal(f.flag, 3);
    assert.deepEqual(where, { m: ['a', 'b'], roomIds: ['r1'] }, 'the caller object is not modified');
    await rt.queryAsync({ where: { convIds: ['c1', 'c2'] } });
    assert.deepEqual(fake.sent((f) => f.op === 'query').pop().where, { objectId: { $in: ['c1', 'c2'] } });
  });
});

describe('membership and update pushes', () => {
  it('maps conv pushes to the 2.x events', async () => {
    const rt = await opened();
    const room = await rt.convAsync({ members: [] });
    const log = [];
    for (const n of ['join', 'left', 'invited', 'kicked', 'membersjoined', 'membersleft', 'update']) rt.on(n, (d) => log.push(n + ':' + d.op));
    const push = (o) => fake.push({ cmd: 'conv', cid: room.id, peerId: 'alice', ...o }, 'alice');
    push({ op: 'joined', initBy: 'alice' });
    push({ op: 'joined', initBy: 'bob' });
    push({ op: 'members-joined', initBy: 'bob', m: ['carol'] });
    push({ op: 'members-left', initBy: 'bob', m: ['carol'] });
    push({ op: 'left', initBy: 'bob' });
    push({ op: 'updated', initBy: 'bob', attr: { name: 'new name', attr: { k: 2 } } });
    await once(rt, 'update');
    assert.deepEqual(log, [
      'invited:joined',
      'join:joined',
      'invited:joined',
      'join:members-joined',
      'membersjoined:members-joined',
      'left:members-left',
      'membersleft:members-left',
      'left:left',
      'kicked:left',
      'update:updated',
    ]);
    assert.equal(room.name, 'new name');
    assert.deepEqual(room.attr, { k: 2 });
  });
});

describe('errors', () => {
  it('an error frame rejects the request, fires error, never calls the callback', async () => {
    const rt = await opened();
    const room = await rt.convAsync({ members: [] });
    fake.reply.direct = (f) => ({ cmd: 'error', code: 4401, reason: 'INVALID_MESSAGING_TARGET', i: f.i, detail: 'not a member' });
    try {
      const ev = once(rt, 'error');
      let called = false;
      assert.equal(room.send('x', () => (called = true)), room);
      await assert.rejects(room.sendAsync('x'), (e) => {
        assert.equal(e.code, 4401);
        assert.equal(e.reason, 'INVALID_MESSAGING_TARGET');
        assert.equal(e.message, 'INVALID_MESSAGING_TARGET');
        assert.equal(e.detail, 'not a member');
        assert.equal(e.request.cmd, 'direct');
        assert.equal(e.request.msg, 'x');
        return true;
      });
      const e = await ev;
      assert.equal(e.code, 4401);
      assert.equal(e.request.cid, room.id);
      assert.equal(called, false);
    } finally {
      fake.reply.direct = (f) => (f.transient ? undefined : { cmd: 'ack', i: f.i, uid: 'm' + Date.now(), t: Date.now() });
    }
  });

  it('a failed conversation creation fails the calls made on it', async () => {
    const rt = await opened();
    const saved = fake.reply['conv start'];
    fake.reply['conv start'] = (f) => ({ cmd: 'conv', op: 'error', code: 4304, reason: 'CONVERSATION_FULL', i: f.i });
    try {
      rt.on('error', () => {});
      let called = false;
      const room = rt.conv({ members: ['x'] }, () => (called = true));
      await assert.rejects(room.sendAsync('x'), { code: 4304 });
      await assert.rejects(rt.convAsync({ members: ['x'] }), { code: 4304 });
      assert.equal(called, false, 'the creation callback is a success callback');
    } finally {
      fake.reply['conv start'] = saved;
    }
  });

  it('wrong arguments throw synchronously with a clear message', async () => {
    assert.throws(() => realtime(), /options must be an object/);
    assert.throws(() => realtime({ clientId: 'a', server: fake.url, WebSocket }), /appId/);
    assert.throws(() => realtime({ appId: 'a', server: fake.url, WebSocket }), /clientId/);
    assert.throws(() => realtime({ appId: 'a', clientId: 'b', server: 'ftp://x', WebSocket }), /server/);
    const globalWS = globalThis.WebSocket; // present on Node >= 22 or with --experimental-websocket
    delete globalThis.WebSocket;
    try {
      assert.throws(() => realtime({ appId: 'a', clientId: 'b', server: fake.url }), /WebSocket/);
    } finally {
      if (globalWS) globalThis.WebSocket = globalWS;
    }
    assert.throws(() => realtime({ appId: 'a', clientId: 'b', server: fake.url, WebSocket, authFun: 3 }), /authFun/);
    const rt = open();
    const room = rt.conv('c1');
    const f = () => {};
    assert.throws(() => rt.on('x', 'nope'), TypeError);
    // on, once, off and emit check their required arguments alike (the manual marks them 必须)
    for (const [name, call] of [
      ['on', () => rt.on('x')],
      ['on', () => rt.on(f)],
      ['on', () => rt.on('', f)],
      ['once', () => rt.once('x')],
      ['once', () => rt.once(f)],
      ['off', () => rt.off('x')],
      ['off', () => rt.off()],
      ['emit', () => rt.emit()],
      ['emit', () => rt.emit({ aaa: 1 })],
    ]) {
      assert.throws(call, (e) => e instanceof TypeError && e.message.startsWith('AV.realtime: ' + name + '(eventName'));
    }
    // callbacks the manual marks 必须: the manual's form throws without one; the *Async form needs none
    for (const [name, call] of [
      ['query', () => rt.query()],
      ['query', () => rt.query({ limit: 1 })],
      ['ping', () => rt.ping(['a'])],
      ['ping', () => room.ping('a')],
      ['list', () => room.list()],
      ['count', () => room.count()],
    ]) {
      assert.throws(call, new RegExp('^TypeError: AV\\.realtime: ' + name + '\\(\\) needs a callback \\(or use ' + name + 'Async\\(\\)\\)$'));
    }
    assert.throws(() => room.receipt(), /callback/);
    assert.throws(() => rt.ping(5, f), /ping\(\)/);
    assert.throws(() => rt.ping(['a', 2], f), /ping\(\)/);
    assert.throws(() => rt.pingAsync(5), /ping\(\)/);
    assert.throws(() => rt.conv(42), /conv\(\)/);
    assert.throws(() => rt.conv(''), /empty/);
    assert.throws(() => rt.conv({ members: 'bob' }), /members/);
    assert.throws(() => rt.query({}, 'cb'), /callback/);
    assert.throws(() => room.add(7), /add\(\)/);
    assert.throws(() => room.remove([1]), /remove\(\)/);
    assert.throws(() => room.send(), /send\(\)/);
    assert.throws(() => room.send({}, { type: 'bogus' }), /unknown message type/);
    assert.throws(() => room.send({ text: 'x' }, { type: 'image' }), /metaData/);
    assert.throws(() => room.send({}, { type: 'location' }), /location/);
    assert.throws(() => room.update(), /update\(\)/);
    assert.throws(() => room.receive(), /callback/);
    await rt.openAsync();
  });
});

describe('options', () => {
  it('encodeHTML escapes received text', async () => {
    const rt = await opened({ encodeHTML: true });
    const room = rt.conv('c-html');
    const got = [];
    room.receive((d) => got.push(d.msg));
    fake.push({ cmd: 'direct', cid: 'c-html', id: 'h1', msg: '<img src=x onerror=alert(1)>' }, 'alice');
    fake.push({ cmd: 'direct', cid: 'c-html', id: 'h2', msg: '{"_lctype":-1,"_lctext":"<b>"}' }, 'alice');
    fake.push({ cmd: 'direct', cid: 'c-html', id: 'h3', msg: '{"x":"<b>"}' }, 'alice');
    await sleep(100);
    assert.equal(got[0], '&lt;img src=x onerror=alert(1)&gt;');
    assert.equal(got[1].text, '&lt;b&gt;');
    assert.deepEqual(got[2], { x: '<b>' });
  });

  it('authFun signs open, start, add, remove (callback or promise); auth is an alias', async () => {
    const calls = [];
    const authFun = (data, cb) => {
      calls.push(data);
      cb({ signature: 'sig' + calls.length, timestamp: 1000 + calls.length, nonce: 'n' + calls.length });
    };
    const rt = await opened({ authFun });
    const f0 = fake.sent((f) => f.op === 'open').pop();
    assert.deepEqual([f0.s, f0.t, f0.n], ['sig1', 1001, 'n1']);
    const room = await rt.convAsync({ members: ['bob'] });
    await room.addAsync('carol');
    await room.removeAsync(['carol']);
    await room.leaveAsync();
    assert.deepEqual(calls, [
      { clientId: 'alice' },
      { clientId: 'alice', members: ['bob'] },
      { clientId: 'alice', members: ['carol'], convId: room.id, action: 'invite' },
      { clientId: 'alice', members: ['carol'], convId: room.id, action: 'kick' },
    ]);
    const [start, add, rm, leave] = fake.sent((f) => f.cmd === 'conv').slice(-4);
    assert.equal(start.s, 'sig2');
    assert.equal(add.s, 'sig3');
    assert.equal(rm.s, 'sig4');
    assert.equal(leave.s, undefined, 'leaving needs no signature');

    const rt2 = await opened({ clientId: 'dave', auth: async (d) => ({ signature: 'p-' + d.clientId, timestamp: 1, nonce: 'x' }) });
    assert.equal(fake.sent((f) => f.op === 'open' && f.peerId === 'dave').pop().s, 'p-dave');
    rt2.close();
  });

  it('a refused signature fails the request', async () => {
    let n = 0;
    const rt = await opened({ authFun: (d, cb) => cb(n++ ? null : { signature: 's', timestamp: 1, nonce: 'n' }) });
    rt.on('error', () => {});
    await assert.rejects(rt.convAsync({ members: ['x'] }), { code: 'SIGNATURE' });
  });

  it('server: an http(s) base asks the router, a ws(s) URL connects directly', async () => {
    const before = fake.routeRequests.length;
    await opened({ server: fake.http + '/', appId: 'my app' });
    assert.deepEqual(fake.routeRequests.slice(before), ['my app']);
    await opened({ server: fake.url });
    assert.equal(fake.routeRequests.length, before + 1);
  });

  it('AV.realtime.config({WebSocket}) injects a WebSocket for all instances', async () => {
    let made = 0;
    class Counting extends WebSocket {
      constructor(...a) {
        super(...a);
        made++;
      }
    }
    realtime.config({ WebSocket: Counting });
    try {
      const rt = realtime({ appId: 'app', clientId: 'cfg', server: fake.url });
      clients.push(rt);
      await rt.openAsync();
      assert.equal(made, 1);
    } finally {
      realtime.config({ WebSocket: undefined });
    }
  });
});

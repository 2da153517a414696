// The manual's contract for return values (js-realtime-sdk-v2-api.md, every 返回 section:
// "返回 RealtimeObject / RoomObject，其中有后续调用的方法，支持链式调用"): every documented method
// returns the very object it was called on (===), with and without its optional callbacks, and
// every callback still fires with its result. Methods whose callback the manual marks 必须, and
// on/once/off/emit without their required arguments, throw synchronously.
//
// Self-contained (no imports, nothing from module scope): the browser test runs this very
// function in a page through Function.prototype.toString, against the built dist/AV.realtime.js.
//
// Returns {checks, callbacks, missing}: checks and callbacks are [label, ok] pairs (ok must be
// true), missing lists the callbacks that never fired.

/**
 * @param {any} realtime AV.realtime
 * @param {{appId: string, server: string, WebSocket?: any}} options
 */
export async function checkIdentity(realtime, options) {
  const tag = Math.random().toString(36).slice(2, 8);
  const clientId = 'identity-' + tag;
  const peer = 'identity-peer-' + tag;
  /** @type {[string, boolean][]} */
  const checks = [];
  /** @type {Record<string, boolean>} */
  const callbacks = {};
  /** @type {Promise<void>[]} */
  const pending = [];
  const is = (/** @type {string} */ label, /** @type {any} */ got, /** @type {any} */ want) => checks.push([label, got === want]);
  /** A callback that records whether `ok(argument)` held when it fired. */
  const cb = (/** @type {string} */ label, /** @type {(v: any) => boolean} */ ok) => {
    /** @type {any} */
    let done;
    pending.push(new Promise((r) => (done = r)));
    return (/** @type {any} */ v) => {
      callbacks[label] = !!ok(v);
      done();
    };
  };
  const throws = (/** @type {string} */ label, /** @type {() => any} */ f) => {
    try {
      f();
      checks.push([label + ' throws', false]);
    } catch (e) {
      checks.push([label + ' throws', e instanceof Error && /^AV\.realtime: /.test(e.message)]);
    }
  };
  const noop = () => {};

  /** @type {any} */
  let rt;
  rt = realtime(Object.assign({}, options, { clientId }), cb('AV.realtime(options, cb) calls back with the object', (x) => x === rt));
  is('AV.realtime() returns a RealtimeObject', typeof rt.on, 'function');
  is('the RealtimeObject is not a thenable', typeof rt.then, 'undefined');
  is('rt.open()', rt.open(), rt);
  is('rt.open(cb)', rt.open(cb('rt.open(cb) calls back with the object', (x) => x === rt)), rt);
  is('rt.on(name, cb)', rt.on('identity-x', noop), rt);
  is('rt.once(name, cb)', rt.once('identity-y', cb('rt.once listener gets the data', (d) => d.n === 1)), rt);
  is('rt.emit(name)', rt.emit('identity-x'), rt);
  is('rt.emit(name, data)', rt.emit('identity-y', { n: 1 }), rt);
  is('rt.off(name, cb)', rt.off('identity-x', noop), rt);
  is('rt.on().once().emit().off() chains', rt.on('identity-z', noop).once('identity-z', noop).emit('identity-z').off('identity-z', noop), rt);

  throws('rt.on(name)', () => rt.on('x'));
  throws('rt.on(cb)', () => rt.on(noop));
  throws('rt.once(name)', () => rt.once('x'));
  throws('rt.once(cb)', () => rt.once(noop));
  throws('rt.off(name)', () => rt.off('x'));
  throws('rt.off()', () => rt.off());
  throws('rt.emit()', () => rt.emit());
  throws('rt.emit(data)', () => rt.emit({ n: 1 }));
  throws('rt.query()', () => rt.query());
  throws('rt.query(options)', () => rt.query({ limit: 1 }));
  throws('rt.ping(ids)', () => rt.ping([clientId]));
  throws('rt.conv()', () => rt.conv());

  /** @type {any} */
  let room;
  room = rt.conv({ members: [peer], name: 'identity' }, cb('rt.conv(options, cb) calls back with the returned room', (c) => c === room));
  is('rt.conv(options) returns a room, not the RealtimeObject', room !== rt && typeof room.send == 'function', true);
  is('the room is not a thenable', typeof room.then, 'undefined');
  /** @type {any} */
  let other;
  other = rt.room({ members: [peer] }, cb('rt.room(options, cb) calls back with the returned room', (c) => c === other));
  is('rt.room(options) returns a room', typeof rt.room({ members: [peer] }).send, 'function');
  const existing = await rt.convAsync({ members: [peer] });
  /** @type {any} */
  let byId;
  byId = rt.conv(existing.id, cb('rt.conv(id, cb) calls back with the returned room', (c) => c === byId));
  is('rt.conv(id) returns the known room object', byId, existing);
  is('rt.room(id) returns the known room object', rt.room(existing.id, cb('rt.room(id, cb) calls back with it', (c) => c === existing)), existing);
  const unknown = rt.conv('ffffffffffffffffffffffff', cb('rt.conv(unknown id, cb) calls back with null', (c) => c === null));
  is('rt.conv(unknown id) returns a room', typeof unknown.send, 'function');
  is('rt.query(cb)', rt.query(cb('rt.query(cb) gets my conversations', (l) => Array.isArray(l) && l.length > 0)), rt);
  is('rt.query(options, cb)', rt.query({ limit: 1 }, cb('rt.query(options, cb) gets a list', (l) => l.length == 1)), rt);
  is('rt.ping(ids, cb)', rt.ping([clientId, peer], cb('rt.ping(ids, cb) gets who is online', (o) => o.join() == clientId)), rt);
  is('rt.ping(id, cb)', rt.ping(clientId, cb('rt.ping(id, cb) gets who is online', (o) => o.join() == clientId)), rt);

  const r = room;
  throws('room.list()', () => r.list());
  throws('room.count()', () => r.count());
  throws('room.ping(ids)', () => r.ping(clientId));
  throws('room.receive()', () => r.receive());
  throws('room.receipt()', () => r.receipt());
  throws('room.send()', () => r.send());
  throws('room.add()', () => r.add());
  throws('room.remove()', () => r.remove());
  is('room.add(id)', r.add('identity-a-' + tag), r);
  is('room.add(id, cb)', r.add('identity-b-' + tag, cb('room.add(id, cb) gets the reply', (d) => d.op == 'added')), r);
  is('room.add(ids, cb)', r.add(['identity-c-' + tag, 'identity-d-' + tag], cb('room.add(ids, cb) gets the reply', (d) => d.op == 'added')), r);
  is('room.remove(id)', r.remove('identity-a-' + tag), r);
  is('room.remove(id, cb)', r.remove('identity-b-' + tag, cb('room.remove(id, cb) gets the reply', (d) => d.op == 'removed')), r);
  is('room.remove(ids, cb)', r.remove(['identity-c-' + tag, 'identity-d-' + tag], cb('room.remove(ids, cb) gets the reply', (d) => d.op == 'removed')), r);
  is('room.join()', r.join(), r);
  is('room.join(cb)', r.join(cb('room.join(cb) gets the reply', (d) => d.op == 'added')), r);
  is('room.send(data)', r.send('one'), r);
  is('room.send(a).send(b) chains', r.send('two').send({ n: 3 }), r);
  is('room.send(data, cb)', r.send('four', cb('room.send(data, cb) gets the ack', (a) => !!a.uid)), r);
  is('room.send(data, options)', r.send('five', { receipt: true }), r);
  is('room.send(data, options, cb)', r.send('six', {}, cb('room.send(data, options, cb) gets the ack', (a) => !!a.uid)), r);
  is('room.receive(cb)', r.receive(noop), r);
  is('room.receipt(cb)', r.receipt(noop), r);
  is('room.list(cb)', r.list(cb('room.list(cb) gets the members', (m) => m.includes(clientId) && m.includes(peer))), r);
  is('room.count(cb)', r.count(cb('room.count(cb) gets the member count', (n) => n == 2)), r);
  is('room.ping(ids, cb)', r.ping([peer], cb('room.ping(ids, cb) gets who is online', (o) => o.length == 0)), r);
  is('room.log()', r.log(), r);
  // (the sends above may still be committing: only the shape of the history is certain)
  is('room.log(cb)', r.log(cb('room.log(cb) gets the history', (l) => Array.isArray(l) && l.every((m) => !!m.msgId))), r);
  is('room.log(options, cb)', r.log({ limit: 2 }, cb('room.log(options, cb) gets the history', (l) => Array.isArray(l) && l.length <= 2)), r);
  is('room.update(data)', r.update({ attr: { k: 1 } }), r);
  is('room.update(data, cb)', r.update({ name: 'identity 2' }, cb('room.update(data, cb) gets the reply', (d) => d.op == 'updated')), r);
  is('room.leave()', r.leave(), r);
  is('room.leave(cb)', other.leave(cb('room.leave(cb) gets the reply', (d) => d.op == 'removed')), other);

  let timer;
  const late = new Promise((r) => (timer = setTimeout(r, 10000)));
  await Promise.race([Promise.all(pending), late]);
  clearTimeout(timer);
  is('rt.close()', rt.close(), rt);
  const labels = Object.keys(callbacks);
  return {
    checks,
    callbacks: labels.map((l) => [l, callbacks[l]]),
    missing: pending.length - labels.length,
  };
}

// Helpers for driving the unmodified leancloud-realtime@4.3.1 SDK (npm alias `leancloud-realtime-4`)
// from node:test scenarios against a real Confab server.
//
// The SDK is pointed at Confab only through its public `RTMServers` option (protocol §1.3 e, §1.5):
// no router, no REST. Nothing here changes SDK behaviour on the wire. For assertions on exact frames,
// the `ws@5` module the SDK itself requires gets two transparent taps on its prototype (`send` and
// `emit('message')`) that record every frame, decoded with the SDK's own protobuf descriptor
// (`Protocals`). The SDK is otherwise untouched.
//
// Mode: CONFAB_V4_MODE=binary (default, lc.protobuf2.*) or base64 (`noBinary: true`, lc.proto2base64.*);
// push mode (`pushOfflineMessages: true`, version 1) is chosen per client with `{push: true}`.
import { createRequire } from 'node:module';
import { DEFAULT_TIMEOUT, describe, sign, sleep, withTimeout } from './util.mjs';

export { DEFAULT_TIMEOUT, describe, sign, sleep, uid, withTimeout } from './util.mjs';

const require = createRequire(import.meta.url);
export const LC = require('leancloud-realtime-4');
// The very `ws` module the SDK requires (ws@5.x).
export const WS = createRequire(require.resolve('leancloud-realtime-4'))('ws');
const P = LC.Protocals;
export const { CommandType, OpType } = P;
const CMD_NAMES = Object.fromEntries(Object.entries(CommandType).map(([k, v]) => [v, k]));
const OP_NAMES = Object.fromEntries(Object.entries(OpType).map(([k, v]) => [v, k]));

export const MODE = process.env.CONFAB_V4_MODE === 'base64' ? 'base64' : 'binary';

// ---- frame taps ----------------------------------------------------------------------------------

/** Converts a decoded protobufjs-5 message into a plain object: no nulls/empty lists, Longs as numbers, bytes as Buffer. */
export function plain(v) {
  if (v === null || v === undefined) return undefined;
  if (Array.isArray(v)) {
    const a = v.map(plain).filter((x) => x !== undefined);
    return a.length ? a : undefined;
  }
  if (typeof v !== 'object') return v;
  if (typeof v.toNumber === 'function' && 'low' in v && 'high' in v) return v.toNumber();
  if (!v.$type && typeof v.offset === 'number' && typeof v.limit === 'number' && typeof v.toBuffer === 'function') {
    return Buffer.from(v.toBuffer()); // ByteBuffer (bytes field)
  }
  const out = {};
  for (const k of Object.keys(v)) {
    if (k.startsWith('$')) continue;
    const x = plain(v[k]);
    if (x !== undefined) out[k] = x;
  }
  return out;
}

/** Decodes one frame (ArrayBuffer/Buffer or base64 string) into a plain GenericCommand with named cmd/op. */
export function decodeFrame(data) {
  const raw = typeof data === 'string' ? P.GenericCommand.decode64(data) : P.GenericCommand.decode(data);
  const cmd = plain(raw);
  if (cmd.cmd !== undefined) cmd.cmd = CMD_NAMES[cmd.cmd] ?? cmd.cmd;
  if (cmd.op !== undefined) cmd.op = OP_NAMES[cmd.op] ?? cmd.op;
  return cmd;
}

/** Every SDK socket that opened (ws@5 instances; `__closeCode` once closed). */
export const allSockets = [];

/** Every frame seen on any SDK socket: {ws, dir: 'in'|'out', kind: 'binary'|'text', cmd, error, at}. */
export const allFrames = [];

function record(ws, dir, data) {
  const kind = typeof data === 'string' ? 'text' : 'binary';
  const f = { ws, dir, kind, at: Date.now() };
  try {
    f.cmd = decodeFrame(data);
  } catch (e) {
    f.error = e.message;
    f.raw = data;
  }
  if (!allSockets.includes(ws)) allSockets.push(ws);
  allFrames.push(f);
}

if (!WS.prototype.__confabTapped) {
  WS.prototype.__confabTapped = true;
  const rawSend = WS.prototype.send;
  WS.prototype.send = function send(data, ...rest) {
    if (this.readyState === WS.OPEN) record(this, 'out', data);
    return rawSend.call(this, data, ...rest);
  };
  const rawEmit = WS.prototype.emit;
  WS.prototype.emit = function emit(event, ...args) {
    if (event === 'message') record(this, 'in', args[0]);
    if (event === 'open' && !allSockets.includes(this)) allSockets.push(this);
    if (event === 'close') this.__closeCode = args[0];
    return rawEmit.call(this, event, ...args);
  };
}

/** All event names the SDK can emit (IMClient and Realtime). */
export const EVENTS = [...new Set(Object.values(LC.Event))];

// ---- Realtime (one WebSocket) ----------------------------------------------------------------------

let rtCounter = 0;

/**
 * A `new Realtime()` plus the sockets it used. Each RT gets its own RTMServers URL (`/?rt=N`, a
 * query parameter the server ignores) so that frames and sockets, including those of reconnects,
 * can be attributed to it.
 */
export class RT {
  constructor(server, app, { push = false, noBinary = MODE === 'base64', extra = {} } = {}) {
    this.url = `${server.wsUrl}?rt=${process.pid}-${rtCounter++}`;
    this.options = { appId: app.id, appKey: app.key, RTMServers: [this.url], noBinary, pushOfflineMessages: push, ...extra };
    this.realtime = new LC.Realtime(this.options);
    this.protocol = `lc.${noBinary ? 'proto2base64' : 'protobuf2'}.${push ? 1 : 3}`;
    this.events = [];
    for (const name of ['disconnect', 'reconnect', 'retry', 'schedule', 'offline', 'online']) {
      this.realtime.on(name, (...args) => this.events.push({ name, args, at: Date.now() }));
    }
    this.clients = [];
  }

  async connection() {
    return this.realtime._openPromise ? this.realtime._openPromise : undefined;
  }

  /** Every ws@5 socket this Realtime opened, oldest first. */
  get sockets() {
    return allSockets.filter((ws) => ws.url === this.url);
  }

  /** Current WebSocket (ws@5 instance) or undefined. */
  async ws() {
    const c = await this.connection();
    return c ? c._ws : undefined;
  }

  /** Decoded frames on this Realtime's sockets (dir 'in'/'out' or both). */
  frames(dir) {
    return allFrames.filter((f) => f.ws.url === this.url && (!dir || f.dir === dir));
  }

  /** createIMClient(id, options) wrapped in a recording Client. */
  async createClient(id, options = {}, { timeout = DEFAULT_TIMEOUT } = {}) {
    const p = this.realtime.createIMClient(id, options);
    const im = await withTimeout(p, timeout, `createIMClient(${id})`);
    const c = new Client(this, im);
    this.clients.push(c);
    return c;
  }

  /** Closes every client, then the connection. Never throws, bounded in time. */
  async close() {
    for (const c of this.clients.splice(0)) await c.close();
    const p = this.realtime._openPromise;
    delete this.realtime._openPromise;
    if (p) {
      const conn = await withTimeout(p, 1000, 'connection').catch(() => undefined);
      try { if (conn && conn.can('close')) conn.close(); } catch { /* ignore */ }
    }
    for (const ws of this.sockets) {
      try { if (ws.readyState !== WS.CLOSED) ws.terminate(); } catch { /* ignore */ }
    }
  }
}

// ---- IMClient wrapper ---------------------------------------------------------------------------------

export class Client {
  constructor(rt, im) {
    this.rt = rt;
    this.im = im;
    this.id = im.id;
    this.events = []; // {name, args, at}
    this.waiters = new Set();
    this.closed = false;
    for (const name of EVENTS) {
      im.on(name, (...args) => {
        const ev = { name, args, at: Date.now() };
        this.events.push(ev);
        for (const w of [...this.waiters]) w(ev);
      });
    }
  }

  mark() {
    return this.events.length;
  }

  /** Argument lists of the events `name` seen since `since`. */
  seen(name, since = 0) {
    return this.events.slice(since).filter((e) => e.name === name).map((e) => e.args);
  }

  /** Resolves with the args of the first event `name` (after `since`) for which pred(...args) holds. */
  waitFor(name, pred = () => true, { since = 0, timeout = DEFAULT_TIMEOUT } = {}) {
    const hit = this.events.slice(since).find((e) => e.name === name && pred(...e.args));
    if (hit) return Promise.resolve(hit.args);
    let waiter;
    const p = new Promise((resolve) => {
      waiter = (ev) => { if (ev.name === name && pred(...ev.args)) resolve(ev.args); };
      this.waiters.add(waiter);
    });
    return withTimeout(p, timeout, `${this.id}: event ${name}`).finally(() => this.waiters.delete(waiter));
  }

  /** Resolves once `count` events `name` satisfying pred were seen since `since`. */
  async waitForCount(name, count, pred = () => true, { since = 0, timeout = DEFAULT_TIMEOUT } = {}) {
    const matching = () => this.seen(name, since).filter((args) => pred(...args));
    if (matching().length >= count) return matching();
    let waiter;
    const p = new Promise((resolve) => {
      waiter = () => { const m = matching(); if (m.length >= count) resolve(m); };
      this.waiters.add(waiter);
    });
    try {
      return await withTimeout(p, timeout, `${this.id}: ${count} × ${name} (have ${matching().length})`);
    } finally {
      this.waiters.delete(waiter);
    }
  }

  /** Decoded frames of this client's Realtime (shared socket!). */
  frames(dir) {
    return this.rt.frames(dir);
  }

  /** Waits for a decoded frame on this client's sockets matching pred (after index `since` of frames()). */
  async waitFrame(dir, pred, { since = 0, timeout = DEFAULT_TIMEOUT, what = 'frame' } = {}) {
    const deadline = Date.now() + timeout;
    for (;;) {
      const f = this.frames(dir).slice(since).find((x) => x.cmd && pred(x.cmd, x));
      if (f) return f;
      if (Date.now() > deadline) throw new Error(`${this.id}: no ${dir} ${what} within ${timeout} ms; frames: ${describe(this.frames(dir).slice(since).map((x) => x.cmd))}`);
      await sleep(20);
    }
  }

  async close() {
    if (this.closed) return;
    this.closed = true;
    try {
      await withTimeout(this.im.close(), 3000, `${this.id}: close`);
    } catch { /* connection may be gone: the RT close below takes care of the socket */ }
  }
}

/** Runs a promise-returning SDK call and resolves with the rejection (fails if it resolves). */
export async function rejects(promise, what = 'call') {
  try {
    const v = await promise;
    throw Object.assign(new Error(`${what} unexpectedly succeeded: ${describe(v)}`), { unexpected: true });
  } catch (e) {
    if (e.unexpected) throw e;
    return e;
  }
}

/**
 * A conversationSignatureFactory / signatureFactory pair signing like an app backend (protocol §5.2)
 * with the master key; 4.3.1's actions create/add/remove are mapped to the signed strings
 * (create ⇒ no action, add ⇒ invite, remove ⇒ kick). `tweak(kind, params, out)` may corrupt a result.
 */
export function makeSigners({ appId, masterKey, tweak }) {
  let counter = 0;
  const calls = [];
  const nonce = () => `n${process.pid}${Date.now()}${counter++}${Math.random().toString(36).slice(2, 8)}`;
  const signatureFactory = (clientId) => {
    calls.push({ kind: 'login', clientId });
    const timestamp = Date.now();
    const n = nonce();
    let out = { signature: sign(masterKey, [appId, clientId, '', timestamp, n]), timestamp, nonce: n };
    if (tweak) out = tweak('login', { clientId }, out) || out;
    return out;
  };
  const conversationSignatureFactory = (conversationId, clientId, targetIds, action) => {
    calls.push({ kind: 'conversation', conversationId, clientId, targetIds: [...targetIds], action });
    const timestamp = Date.now();
    const n = nonce();
    const members = [...targetIds].sort().join(':');
    const parts = action === 'create'
      ? [appId, clientId, members, timestamp, n]
      : [appId, clientId, conversationId, members, timestamp, n, action === 'add' ? 'invite' : 'kick'];
    let out = { signature: sign(masterKey, parts), timestamp, nonce: n };
    if (tweak) out = tweak('conversation', { conversationId, clientId, targetIds, action }, out) || out;
    return out;
  };
  const blacklistSignatureFactory = (clientId, conversationId, targetIds, action) => {
    calls.push({ kind: 'blacklist', conversationId, clientId, targetIds: [...targetIds], action });
    const timestamp = Date.now();
    const n = nonce();
    const parts = [appId, clientId, conversationId, [...targetIds].sort().join(':'), timestamp, n, action];
    let out = { signature: sign(masterKey, parts), timestamp, nonce: n };
    if (tweak) out = tweak('blacklist', { conversationId, clientId, targetIds, action }, out) || out;
    return out;
  };
  return { signatureFactory, conversationSignatureFactory, blacklistSignatureFactory, calls };
}

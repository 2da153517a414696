// Helpers for driving the unmodified leancloud-realtime@2.4.0 SDK from node:test scenarios.
//
// Nothing here changes SDK behaviour on the wire. Two documented hooks are used:
//  * `realtime._engine.getServer` is replaced (lib/redirect.cjs) so the SDK asks Confab's router;
//  * `realtime.config({WebSocket})` (the SDK's own pluggable-transport hook, used in browsers for the
//    Flash polyfill) gets a thin wrapper around the SDK's own `ws@0.8` client that
//      - can send an `Origin` header (a browser always does; ws@0.8 only when given `origin`),
//      - records raw frames for assertions,
//      - ignores `send()` on a closed socket as browsers do (ws@0.8 throws, which would turn the SDK's
//        60 s heartbeat timer of an already closed client into an uncaught exception).
import { createRequire } from 'node:module';
import { DEFAULT_TIMEOUT, describe, sign, withTimeout } from './util.mjs';

export { DEFAULT_TIMEOUT, describe, sign, sleep, uid, withTimeout } from './util.mjs';

const require = createRequire(import.meta.url);
export const realtime = require('leancloud-realtime');
// The very `ws` module the SDK itself requires (ws@0.8.x).
const WS = createRequire(require.resolve('leancloud-realtime'))('ws');
export const redirect = require('./redirect.cjs');

redirect.install(realtime);

let currentOrigin; // Origin header sent by sockets created from now on (undefined = none)
export const sockets = new Set();
/** Exceptions thrown by SDK listeners (see ConfabTestWebSocket). */
export const listenerErrors = [];

function ConfabTestWebSocket(url, protocols) {
  const ws = new WS(url, protocols || [], currentOrigin ? { origin: currentOrigin } : {});
  ws.__url = url;
  ws.__origin = currentOrigin;
  ws.__log = []; // {dir:'in'|'out', data, at}
  ws.__closeInfo = undefined;
  const rawSend = ws.send;
  ws.send = function send(data, options, cb) {
    if (ws.readyState !== WS.OPEN) return undefined;
    ws.__log.push({ dir: 'out', data: String(data), at: Date.now() });
    return rawSend.call(ws, data, options, cb);
  };
  ws.on('message', (data) => ws.__log.push({ dir: 'in', data: String(data), at: Date.now() }));
  ws.on('close', (code, reason) => { ws.__closeInfo = { code, reason }; sockets.delete(ws); });
  // Browser semantics for the SDK's listeners: an exception thrown inside an event listener is
  // reported, not propagated (2.4.0 throws from its `error` listener and on `conv error` frames,
  // which in Node would kill the process). Recorded in `listenerErrors` for the tests to inspect.
  const rawAdd = ws.addEventListener;
  ws.addEventListener = function addEventListener(method, listener) {
    return rawAdd.call(ws, method, function guarded(...args) {
      try {
        return listener.apply(this, args);
      } catch (err) {
        listenerErrors.push({ method, url, err, at: Date.now() });
        return undefined;
      }
    });
  };
  sockets.add(ws);
  return ws;
}
ConfabTestWebSocket.OPEN = WS.OPEN;
ConfabTestWebSocket.CLOSED = WS.CLOSED;

realtime.config({ WebSocket: ConfabTestWebSocket });

export function setOrigin(origin) {
  currentOrigin = origin;
}

/** Registers a running ConfabServer with the redirect (its apps, and as default for unknown ids). */
export function useServer(server) {
  redirect.route(server.url, server.appIds());
}

export const EVENTS = ['open', 'close', 'reuse', 'create', 'join', 'left', 'invited', 'kicked',
  'membersjoined', 'membersleft', 'message', 'receipt', 'update', 'error'];


/** A 2.4.0 RealtimeObject plus a record of every app-visible event it emitted. */
export class Client {
  constructor(rt, clientId) {
    this.rt = rt;
    this.id = clientId;
    this.events = []; // {name, data, at}
    this.waiters = new Set();
    for (const name of EVENTS) {
      rt.on(name, (data) => {
        const ev = { name, data, at: Date.now() };
        this.events.push(ev);
        for (const w of [...this.waiters]) w(ev);
      });
    }
  }

  /**
   * Creates `AV.realtime(options, cb)` and resolves once the callback ran (i.e. `open`).
   * Rejects on an `error` event or `close` before open.
   */
  static open(options, { timeout = DEFAULT_TIMEOUT } = {}) {
    let client;
    const p = new Promise((resolve, reject) => {
      const rt = realtime(options, () => resolve(client));
      client = new Client(rt, options.clientId);
      client.waiters.add((ev) => {
        if (ev.name === 'error' || ev.name === 'close') reject(Object.assign(new Error(`${ev.name} before open: ${describe(ev.data)}`), { event: ev }));
      });
    });
    return withTimeout(p, timeout, `open ${options.clientId}`).catch((e) => { if (client) client.close(); throw e; });
  }

  /** Starts a client without waiting for `open` (for refusal tests). */
  static start(options) {
    const rt = realtime(options);
    return new Client(rt, options.clientId);
  }

  mark() {
    return this.events.length;
  }

  /** Events named `name` recorded since `since`. */
  seen(name, since = 0) {
    return this.events.slice(since).filter((e) => e.name === name).map((e) => e.data);
  }

  /** Resolves with the first event `name` (after `since`) whose data satisfies `pred`. */
  waitFor(name, pred = () => true, { since = 0, timeout = DEFAULT_TIMEOUT } = {}) {
    const hit = this.events.slice(since).find((e) => e.name === name && pred(e.data));
    if (hit) return Promise.resolve(hit.data);
    let waiter;
    const p = new Promise((resolve) => {
      waiter = (ev) => { if (ev.name === name && pred(ev.data)) resolve(ev.data); };
      this.waiters.add(waiter);
    });
    return withTimeout(p, timeout, `${this.id}: event ${name}`).finally(() => this.waiters.delete(waiter));
  }

  /** Resolves when `count` events named `name` (after `since`) satisfy `pred`; returns them. */
  async waitForCount(name, count, pred = () => true, { since = 0, timeout = DEFAULT_TIMEOUT } = {}) {
    const matching = () => this.seen(name, since).filter(pred);
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

  /**
   * Runs an SDK call that takes a callback. `invoke(cb)` must perform exactly one request.
   * Rejects when the server answers the request's serial `i` with an error frame.
   */
  request(invoke, { timeout = DEFAULT_TIMEOUT, what = 'request' } = {}) {
    const cache = this.rt.cache;
    let serial;
    let errWaiter;
    const p = new Promise((resolve, reject) => {
      const before = cache.serialId;
      const ret = invoke((...args) => resolve(args.length > 1 ? args : args[0]));
      serial = cache.serialId !== before ? cache.serialId : undefined;
      errWaiter = (ev) => {
        if (ev.name === 'error' && ev.data && serial !== undefined && ev.data.i === serial) {
          reject(Object.assign(new Error(`server error for ${what}: ${describe(ev.data)}`), { frame: ev.data }));
        }
      };
      this.waiters.add(errWaiter);
      this.lastReturn = ret;
    });
    return withTimeout(p, timeout, `${this.id}: ${what}`).finally(() => this.waiters.delete(errWaiter));
  }

  /** Like request() but resolves with the error frame the server answered with (fails if it succeeds). */
  async expectError(invoke, { timeout = DEFAULT_TIMEOUT, what = 'request' } = {}) {
    try {
      const r = await this.request(invoke, { timeout, what });
      throw Object.assign(new Error(`${what} unexpectedly succeeded: ${describe(r)}`), { unexpected: true });
    } catch (e) {
      if (e.frame) return e.frame;
      throw e;
    }
  }

  // ---- promisified SDK API -------------------------------------------------------------------
  createConv(options) { return this.request((cb) => this.rt.conv(options, cb), { what: 'conv(create)' }); }
  createRoom(options) { return this.request((cb) => this.rt.room(options, cb), { what: 'room(create)' }); }
  openConv(id) { return this.request((cb) => this.rt.conv(id, cb), { what: `conv(${id})` }); }
  query(options) {
    return options === undefined
      ? this.request((cb) => this.rt.query(cb), { what: 'query()' })
      : this.request((cb) => this.rt.query(options, cb), { what: 'query(options)' });
  }
  ping(ids) { return this.request((cb) => this.rt.ping(ids, cb), { what: 'ping' }); }

  /** Raw frames seen on the current socket. */
  frames(dir) {
    const ws = this.rt.cache.ws;
    const log = (ws && ws.__log) || [];
    return dir ? log.filter((f) => f.dir === dir) : log;
  }

  /** Closes the SDK instance and makes sure nothing reconnects afterwards. */
  close() {
    const cache = this.rt.cache;
    if (cache.reuseTimer) clearTimeout(cache.reuseTimer);
    try {
      if (cache.openFlag && !cache.closeFlag) {
        this.rt.close();
      } else {
        cache.closeFlag = true;
        if (cache.ws) cache.ws.close();
      }
    } catch { /* already closed */ }
    cache.closeFlag = true;
  }

  /** Resolves once the current socket is closed. */
  async closed(timeout = DEFAULT_TIMEOUT) {
    const ws = this.rt.cache.ws;
    if (!ws || ws.readyState === WS.CLOSED) return;
    await withTimeout(new Promise((r) => ws.once('close', r)), timeout, `${this.id}: socket close`);
  }
}

/** Promisified conversation-object calls. */
export function convCall(client, conv, method, ...args) {
  return client.request((cb) => conv[method](...args, cb), { what: `conv.${method}` });
}


/**
 * A 2.4.0 `auth` function signing like an app backend would (protocol §5.2):
 * open: appId:clientId::t:n; start: appId:clientId:sorted(m):t:n;
 * add/remove: appId:clientId:convId:sorted(m):t:n:invite|kick.
 */
export function makeSigner({ appId, masterKey, tweak }) {
  const calls = [];
  let counter = 0;
  const fn = (params, cb) => {
    calls.push(params);
    const t = Math.floor(Date.now() / 1000);
    const n = `nonce-${process.pid}-${Date.now()}-${counter++}-${Math.random().toString(36).slice(2)}`;
    const members = params.members ? [...params.members].sort() : [];
    let parts;
    if (params.action) parts = [appId, params.clientId, params.convId, members.join(':'), t, n, params.action];
    else if (params.members) parts = [appId, params.clientId, members.join(':'), t, n];
    else parts = [appId, params.clientId, '', t, n];
    let out = { signature: sign(masterKey, parts), timestamp: t, nonce: n };
    if (tweak) out = tweak(params, out, parts) || out;
    setImmediate(() => cb(out));
  };
  fn.calls = calls;
  return fn;
}

/** Closes every given client; tolerant of already closed ones. */
export function closeAll(...clients) {
  for (const c of clients.flat()) if (c) c.close();
}

// The v2 `AV.realtime` API over Confab's JSON protocol (LEANCLOUD-PROTOCOL.md §3).
//
// Layout: one factory per RealtimeObject; everything an instance owns lives in its closure, so
// several instances never share state (only `config.WebSocket` is global, as in 2.x).
//
// Connection state machine (`state`):
//   0 CLOSED      close() was called, a fatal error happened, or never opened
//   1 WAITING     lost; a reconnect timer (exponential backoff + jitter) is pending; emits `reuse`
//   2 CONNECTING  fetching the route / opening the socket / waiting for `session opened`
//   3 OPEN        session opened: requests are written as they are made
// Requests made in any state are kept in `pending` (keyed by their serial `i`, so iteration
// order is call order) until answered, written on every `session opened`, and rejected after
// `timeout` ms (default 30 s, counted from the call) or on close().

import { encodeHTML, encodeMedia, decodeMedia } from './media.js';
import { version } from './version.js';

/** Global defaults shared by all instances: `AV.realtime.config({WebSocket})`. */
const config = /** @type {{WebSocket?: any}} */ ({});
const noop = () => {};
const isStr = (/** @type {any} */ x) => typeof x == 'string';
const isFn = (/** @type {any} */ x) => typeof x == 'function';
const isArr = Array.isArray;
/** WebSocket close codes / session-closed codes after which reconnecting is pointless. */
const FATAL = [4100, 4103, 4110, 4111, 4115];

/** @param {any} ok @param {string} what */
const check = (ok, what) => {
  if (!ok) throw new TypeError('AV.realtime: ' + what);
};

/**
 * Error with a LeanCloud numeric `code` (server errors) or a string code
 * ('TIMEOUT', 'CLOSED', 'ROUTE', 'SIGNATURE').
 * @param {string} message @param {any} code @param {object} [extra]
 */
const fail = (message, code, extra) => Object.assign(new Error(message), { code }, extra);

/**
 * Attach an optional success callback to a request's promise and return the promise.
 * Callback-style users must not get unhandled rejections: the promise is marked handled.
 * @param {Promise<any>} p @param {any} cb
 */
const out = (p, cb) => {
  check(!cb || isFn(cb), 'callback must be a function');
  p.catch(noop);
  if (cb) p.then(cb, noop);
  return p;
};

/**
 * Give `o` every request method of `fns` twice: `name(...args[, callback])`, the manual's
 * method, which returns `o` itself (so calls chain on the very object), and
 * `nameAsync(...args)`, which returns the Promise of the result. The methods named in `need`
 * have a callback the manual marks required (必须): without one, the manual's form throws.
 * @param {any} o @param {Record<string, Function>} fns @param {string[]} need
 */
const both = (o, fns, need) => {
  for (const k in fns) {
    o[k + 'Async'] = fns[k];
    o[k] = (/** @type {any[]} */ ...a) => {
      check(!need.includes(k) || isFn(a[a.length - 1]), k + '() needs a callback (or use ' + k + 'Async())');
      fns[k](...a);
      return o;
    };
  }
  return o;
};

/** eventName must be a non-empty string; `f` a function unless `f === 0` is passed (emit). @param {string} what @param {any} name @param {any} f */
const evArgs = (what, name, f) =>
  check(name && isStr(name) && (f === 0 || isFn(f)), what + ' needs an event name' + (f === 0 ? '' : ' and a callback function'));

/** @param {any} ids @param {string} what */
const idList = (ids, what) => {
  ids = isStr(ids) ? [ids] : ids;
  check(isArr(ids) && ids.every(isStr), what + ' needs a client id or an array of client ids');
  return ids;
};

/**
 * Create a RealtimeObject and start connecting. See README.md for every option.
 * @param {any} options
 * @param {Function} [callback] called once the session is open
 */
export default function realtime(options, callback) {
  check(options && typeof options == 'object', 'options must be an object');
  const appId = options.appId;
  const clientId = options.clientId;
  const WS = options.WebSocket || config.WebSocket || globalThis.WebSocket;
  const server = options.server || (globalThis.location && location.origin);
  const auth = options.authFun || options.auth;
  const heartbeat = options.heartbeat || 6e4;
  const timeout = options.timeout || 3e4;
  const minDelay = options.minDelay || 1e3;
  const maxDelay = options.maxDelay || 3e4;
  check(appId && isStr(appId), 'options.appId must be a non-empty string');
  check(clientId && isStr(clientId), 'options.clientId must be a non-empty string');
  check(isFn(WS), 'no WebSocket implementation: pass options.WebSocket or call AV.realtime.config({WebSocket})');
  check(/^(http|ws)s?:\/\//.test(server), 'options.server must be an http(s):// or ws(s):// URL');
  check(!auth || isFn(auth), 'options.authFun must be a function');

  /** @type {Record<string, Function[]>} */
  let listeners = {};
  /** @type {Record<number, any>} */
  const pending = {};
  /** @type {Record<string, any>} */
  const convs = {};
  /** @type {[Function, Function][]} */
  let waiters = [];
  const seen = new Set();
  const g = /** @type {any} */ (globalThis);
  const browser = isFn(g.addEventListener);
  let state = 0;
  let serial = 0;
  let attempt = 0;
  let openI = 0;
  let pinged = 0;
  let routeUntil = 0;
  /** @type {any} */ let ws;
  /** @type {any} */ let route;
  /** @type {any} */ let retryTimer;
  /** @type {any} */ let beatTimer;
  /** @type {any} */ let abort;

  /** @param {string} name @param {any} [data] */
  const emit = (name, data) => {
    for (const f of (listeners[name] || []).slice()) {
      try {
        f(data);
      } catch (e) {
        // a throwing listener must not break frame processing; report it as uncaught
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  };

  /** @param {any} o a command; every command carries peerId (§3.1) */
  const send = (o) => {
    o.peerId = clientId;
    ws.send(JSON.stringify(o));
  };

  /** Settle request `i` (no-op when it is already settled). @param {any} i @param {any} e @param {any} [v] */
  const settle = (i, e, v) => {
    const r = pending[i];
    if (r) {
      delete pending[i];
      clearTimeout(r.t);
      if (e) {
        e.request = r.f;
        r.ko(e);
      } else r.ok(v);
    }
  };

  /** @param {any} i write request `i` now; requests without a reply settle once written */
  const write = (i) => {
    send(pending[i].f);
    if (pending[i].n) settle(i, 0);
  };

  /**
   * Sign `f` with the app's authFun (§5): authFun(data, callback) or authFun(data) -> Promise.
   * @param {any} f @param {any} data
   */
  const sign = (f, data) =>
    auth &&
    data &&
    new Promise((ok, ko) => {
      const r = auth(data, ok);
      if (r && isFn(r.then)) r.then(ok, ko);
    }).then((/** @type {any} */ a) => {
      if (!a || !a.signature) throw fail('authFun refused to sign ' + f.cmd + ' ' + (f.op || ''), 'SIGNATURE');
      f.s = a.signature;
      f.t = a.timestamp;
      f.n = a.nonce;
    });

  /**
   * Send a request. Resolves with map(reply); rejects on an error frame, timeout or close().
   * @param {any} f frame without `i` @param {(reply: any) => any} [map] @param {any} [sig] authFun data
   * @param {any} [noReply] transient messages get no ack: resolve once written
   * @returns {Promise<any>}
   */
  const req = (f, map, sig, noReply) => {
    const p = Promise.resolve(sig && sign(f, sig))
      .then(
        () =>
          new Promise((ok, ko) => {
            const i = (f.i = ++serial);
            pending[i] = {
              f,
              ok,
              ko,
              n: noReply,
              t: setTimeout(() => settle(i, fail('request timed out after ' + timeout + ' ms', 'TIMEOUT')), timeout),
            };
            if (!state) settle(i, fail('closed by the application', 'CLOSED'));
            else if (state == 3) write(i);
          }),
      )
      .then(map);
    p.catch((e) => e.code != 'CLOSED' && emit('error', e));
    return p;
  };

  /** Restart the heartbeat timer: `{}` after `heartbeat` ms of silence, drop after twice that. */
  const arm = () => {
    clearTimeout(beatTimer);
    beatTimer = setTimeout(() => {
      if (pinged) return lost();
      pinged = 1;
      ws.send('{}');
      arm();
    }, heartbeat);
  };

  /** Forget the current socket (and an in-flight route request) without triggering events. */
  const detach = () => {
    clearTimeout(beatTimer);
    clearTimeout(retryTimer);
    if (abort) abort.abort();
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = noop;
      try {
        ws.close();
      } catch (e) {}
    }
    abort = ws = 0;
  };

  /** Connection lost (not by the app): emit close (if it was open) and reuse; retry with backoff. */
  const lost = () => {
    if (!state) return;
    const was = state;
    detach();
    if (was < 3) routeUntil = 0; // never reached the session: ask the router again next time
    state = 1;
    if (was == 3) emit('close', { reconnecting: true });
    const d = Math.min(maxDelay, minDelay * 2 ** attempt++);
    retryTimer = setTimeout(connect, d / 2 + (Math.random() * d) / 2);
    emit('reuse', { attempt, delay: d });
  };

  /** Stop for good: reject everything, remove listeners and timers, emit close. @param {any} e */
  const shutdown = (e) => {
    if (!state) return;
    state = 0;
    detach();
    if (browser) {
      g.removeEventListener('online', online);
      g.removeEventListener('offline', offline);
    }
    for (const i in pending) settle(i, e);
    for (const w of waiters.splice(0)) w[1](e);
    queueMicrotask(() => emit('close', { code: e.code }));
  };

  const online = () => {
    if (state == 1) {
      attempt = 0;
      detach();
      connect();
    }
  };
  const offline = () => state > 1 && lost();

  /** Resolve the WebSocket URL (router for http(s) bases, §1.1) and open the socket. */
  const connect = async () => {
    state = 2;
    const a = (abort = new AbortController());
    try {
      let url = server;
      if (/^http/.test(server)) {
        if (Date.now() > routeUntil) {
          const r = await fetch(server.replace(/\/+$/, '') + '/v1/route?appId=' + encodeURIComponent(appId), {
            signal: a.signal,
          });
          const j = r.ok && (await r.json().catch(noop));
          if (!j || !isStr(j.server)) throw fail('router answered HTTP ' + r.status + ' without a server', 'ROUTE');
          route = j.server;
          routeUntil = Date.now() + (j.ttl || 0) * 1e3;
        }
        url = route;
      }
      if (a != abort) return;
      const s = (ws = new WS(url));
      pinged = 1;
      arm(); // doubles as the connect timeout: no frame within `heartbeat` ms means lost
      s.onopen = () => {
        const f = { cmd: 'session', op: 'open', appId, ua: 'js/' + version, i: (openI = ++serial) };
        Promise.resolve(sign(f, { clientId })).then(
          () => s == ws && send(f),
          (e) => {
            emit('error', e);
            if (s == ws) lost();
          },
        );
      };
      s.onmessage = (/** @type {any} */ e) => s == ws && frame(String(e.data));
      s.onclose = (/** @type {any} */ e) =>
        s == ws &&
        (FATAL.includes(e.code) ? stop(fail('connection closed by the server: ' + e.code, e.code)) : lost());
      s.onerror = noop; // a close event follows
    } catch (e) {
      if (a == abort) {
        if (/** @type {any} */ (e).code) emit('error', e); // a bad router answer; network failures only retry
        lost();
      }
    }
  };

  /** @param {any} e */
  const stop = (e) => {
    emit('error', e);
    shutdown(e);
  };

  /** Dispatch one server frame. @param {string} text */
  const frame = (text) => {
    /** @type {any} */
    let d;
    pinged = 0;
    arm();
    try {
      d = JSON.parse(text);
    } catch (e) {
      return;
    }
    const { cmd, op, i } = d || {};
    if (!cmd) return; // heartbeat answer `{}`
    if (cmd == 'error' || op == 'error' || (cmd == 'session' && op == 'closed')) {
      const e = fail(d.reason || 'error ' + d.code, d.code, { reason: d.reason, detail: d.detail });
      if (pending[i]) return settle(i, e);
      if (i && i != openI) return; // a late answer to a request that already failed
      if (FATAL.includes(d.code)) return stop(e);
      emit('error', e);
      if (i || op == 'closed') lost(); // the session is gone: open a new one
    }
    if (cmd == 'session' && op == 'opened') {
      if (state != 2) return;
      state = 3;
      attempt = 0;
      for (const i in pending) write(i); // queued and unanswered requests, in call order
      for (const w of waiters.splice(0)) w[0](rt);
      return emit('open', d);
    }
    if (pending[i]) return settle(i, 0, d);
    if (cmd == 'direct') {
      d.msg = decodeMedia(d.msg, options.encodeHTML);
      if (!d.transient) send({ cmd: 'ack', cid: d.cid, mid: d.id });
      if (seen.has(d.id)) return; // redelivered after a lost ack
      seen.add(d.id);
      if (seen.size > 999) seen.delete(seen.values().next().value);
      return emit('message', d);
    }
    if (cmd == 'rcp') return emit('receipt', d);
    if (cmd == 'conv') {
      const c = convs[d.cid];
      if (op == 'updated' && c && d.attr) apply(c, d.attr);
      const names = {
        joined: [(d.peerId || clientId) != d.initBy && 'join', 'invited'],
        left: ['left', 'kicked'],
        'members-joined': ['join', 'membersjoined'],
        'members-left': ['left', 'membersleft'],
        updated: ['update'],
      }[/** @type {string} */ (op)];
      for (const n of names || []) if (n) emit(n, d);
    }
  };

  /** Mirror an update's attributes on the local conversation object. @param {any} c @param {any} a */
  const apply = (c, a) => {
    if ('name' in a) c.name = a.name;
    if (a.attr) c.attr = a.attr;
  };

  /** conv query (§3.2). @param {any} o */
  const query = (o) => {
    const w = Object.assign({}, o.where || { m: clientId });
    const ids = w.roomIds || w.convIds;
    if (isArr(w.m)) w.m = { $all: w.m };
    if (ids) w.objectId = { $in: ids };
    delete w.roomIds;
    delete w.convIds;
    return req(
      {
        cmd: 'conv',
        op: 'query',
        where: w,
        sort: o.sort || '-lm',
        limit: o.limit || 10,
        skip: o.skip || 0,
        flag: (o.compact ? 1 : 0) | (o.withLastMessages ? 2 : 0),
      },
      (/** @type {any} */ d) => d.results || [],
    );
  };

  /** session query = presence. @param {any} ids @param {any} [cb] */
  const ping = (ids, cb) =>
    out(req({ cmd: 'session', op: 'query', sessionPeerIds: idList(ids, 'ping()') }, (/** @type {any} */ d) => d.onlineSessionPeerIds || []), cb);

  /**
   * A conversation object; `ready` resolves once it has an id (immediately for existing ones,
   * after `conv started` for new ones), so methods may be called right after conv().
   * @param {string} id @param {string} name @param {any} attr @param {Promise<any>} ready
   */
  const makeConv = (id, name, attr, ready) => {
    /** Conversation request: frame built once the id is known. @param {Function} build @param {any} [cb] @param {any} [map] @param {any} [sig] @param {any} [noReply] */
    const creq = (build, cb, map, sig, noReply) =>
      out(
        ready.then(() => {
          const f = build();
          return req(f, map, sig && sig(f), noReply);
        }),
        cb,
      );
    /** @param {string} op @param {any} ids @param {any} cb */
    const members = (op, ids, cb) => {
      ids = idList(ids, op + '()');
      return creq(
        () => ({ cmd: 'conv', op, cid: c.id, m: ids }),
        cb,
        0,
        (/** @type {any} */ f) =>
          (op == 'add' || ids.length > 1 || ids[0] != clientId) && {
            clientId,
            members: ids,
            convId: f.cid,
            action: op == 'add' ? 'invite' : 'kick',
          },
      );
    };
    /** @param {string} name @param {any} cb */
    const sub = (name, cb) => {
      check(isFn(cb), 'callback must be a function');
      listeners[name] = (listeners[name] || []).concat((/** @type {any} */ d) => d.cid == c.id && cb(d));
      return c;
    };
    /** @type {any} */
    const c = {
      id,
      name,
      attr,
      receive: (/** @type {any} */ cb) => sub('message', cb),
      receipt: (/** @type {any} */ cb) => sub('receipt', cb),
    };
    both(c, {
      add: (/** @type {any} */ ids, /** @type {any} */ cb) => members('add', ids, cb),
      remove: (/** @type {any} */ ids, /** @type {any} */ cb) => members('remove', ids, cb),
      join: (/** @type {any} */ cb) => members('add', clientId, cb),
      leave: (/** @type {any} */ cb) => members('remove', clientId, cb),
      send(/** @type {any} */ data, /** @type {any} */ opts, /** @type {any} */ cb) {
        if (isFn(opts)) {
          cb = opts;
          opts = 0;
        }
        opts = opts || {};
        check(isStr(data) || (data && typeof data == 'object'), 'send() needs a string or an object');
        const msg = opts.type ? encodeMedia(opts.type, data) : isStr(data) ? data : JSON.stringify(data);
        return creq(
          // `dt` names this message: if its ack is lost and the request is re-sent after a
          // reconnect, the server acknowledges it again instead of storing it twice.
          () => ({
            cmd: 'direct',
            cid: c.id,
            msg,
            r: opts.receipt ? 1 : false,
            transient: !!opts.transient,
            dt: Math.random().toString(36).slice(2) + Date.now().toString(36),
          }),
          cb,
          0,
          0,
          opts.transient,
        );
      },
      log(/** @type {any} */ opts, /** @type {any} */ cb) {
        if (isFn(opts)) {
          cb = opts;
          opts = 0;
        }
        opts = opts || {};
        return creq(
          () => ({ cmd: 'logs', cid: c.id, t: opts.t, mid: opts.mid, limit: opts.limit || 20 }),
          cb,
          (/** @type {any} */ d) =>
            (d.logs || []).map((/** @type {any} */ l) => {
              l.fromPeerId = l.from;
              l.msg = l.data = decodeMedia(l.data, options.encodeHTML);
              return l;
            }),
        );
      },
      list: (/** @type {any} */ cb) =>
        out(
          ready.then(() => query({ where: { objectId: c.id } })).then((r) => (r[0] && r[0].m) || []),
          cb,
        ),
      count: (/** @type {any} */ cb) =>
        creq(() => ({ cmd: 'conv', op: 'count', cid: c.id }), cb, (/** @type {any} */ d) => d.count),
      update(/** @type {any} */ data, /** @type {any} */ cb) {
        check(data && typeof data == 'object', 'update() needs an object');
        return creq(() => ({ cmd: 'conv', op: 'update', cid: c.id, attr: data }), cb, (/** @type {any} */ d) => {
          apply(c, data);
          return d;
        });
      },
      ping,
    }, ['list', 'count', 'ping']);
    if (id) convs[id] = c;
    return c;
  };

  /**
   * conv(options, cb) creates; conv(id, cb) opens an existing one. Returns [the conversation
   * object, the promise the callback is attached to].
   * @param {any} arg @param {any} [cb] @returns {[any, Promise<any>]}
   */
  const conv = (arg, cb) => {
    if (isStr(arg)) {
      check(arg, 'conversation id must not be empty');
      const c = convs[arg] || makeConv(arg, '', {}, Promise.resolve());
      return [
        c,
        out(
          query({ where: { objectId: arg } }).then((r) => {
            if (r[0]) apply(c, r[0]);
            return r[0] ? c : null;
          }),
          cb,
        ),
      ];
    }
    if (isFn(arg)) {
      cb = arg;
      arg = {};
    }
    check(arg && typeof arg == 'object', 'conv() needs an options object or a conversation id');
    const m = arg.members || [];
    check(isArr(m) && m.every(isStr), 'options.members must be an array of client ids');
    const attr = arg.attr || arg.data || {};
    const name = arg.name || attr.name || '';
    /** @type {any} */
    let c;
    const started = req(
      { cmd: 'conv', op: 'start', m, attr: { name, attr }, unique: !!arg.unique, transient: !!arg.transient },
      (/** @type {any} */ d) => {
        convs[(c.id = d.cid)] = c;
        emit('create', d);
        return c;
      },
      { clientId, members: m },
    );
    c = makeConv('', name, attr, started);
    return [c, out(started, cb)];
  };

  /** @type {any} */
  const rt = {
    clientId,
    close() {
      shutdown(fail('closed by the application', 'CLOSED'));
      return rt;
    },
    /** @param {string} name @param {Function} f */
    on(name, f) {
      evArgs('on(eventName, callback)', name, f);
      listeners[name] = (listeners[name] || []).concat(f);
      return rt;
    },
    /** @param {string} name @param {Function} f */
    once(name, f) {
      evArgs('once(eventName, callback)', name, f);
      /** @type {any} */
      const w = (/** @type {any} */ d) => {
        rt.off(name, w);
        f(d);
      };
      w.f = f;
      return rt.on(name, w);
    },
    /** @param {string} name @param {Function} f the function given to on() or once() */
    off(name, f) {
      evArgs('off(eventName, callback)', name, f);
      listeners[name] = (listeners[name] || []).filter((/** @type {any} */ x) => x != f && x.f != f);
      return rt;
    },
    /** @param {string} name @param {any} [data] */
    emit(name, data) {
      evArgs('emit(eventName[, data])', name, 0);
      emit(name, data);
      return rt;
    },
    /** @param {any} arg @param {any} [cb] */
    conv: (arg, cb) => conv(arg, cb)[0],
    /** @param {any} arg */
    convAsync: (arg) => conv(arg)[1],
  };
  rt.room = rt.conv;
  rt.roomAsync = rt.convAsync;
  both(
    rt,
    {
      /** @param {any} [cb] */
      open(cb) {
        const p = state == 3 ? Promise.resolve(rt) : new Promise((ok, ko) => waiters.push([ok, ko]));
        if (!state) {
          attempt = 0;
          if (browser) {
            g.addEventListener('online', online);
            g.addEventListener('offline', offline);
          }
          connect();
        }
        return out(p, cb);
      },
      /** @param {any} [opts] @param {any} [cb] */
      query(opts, cb) {
        if (isFn(opts)) {
          cb = opts;
          opts = 0;
        }
        return out(query(opts || {}), cb);
      },
      ping,
    },
    ['query', 'ping'],
  );
  return rt.open(callback);
}

realtime.version = version;
realtime.encodeHTML = encodeHTML;
/** @param {{WebSocket?: any}} c */
realtime.config = (c) => {
  Object.assign(config, c);
};
realtime.realtime = realtime;
realtime.default = realtime;

/*! confab-realtime 2.5.0 | MIT | AV.realtime v2 API for Confab */

// src/media.js
var TYPES = ["text", "image", "audio", "video", "location", "file"];
var ENTITIES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
var encodeHTML = (s) => (
  /** @type {any} */
  typeof s == "string" ? s.replace(/[&<>"']/g, (c) => ENTITIES[c]) : s
);
var encodeMedia = (type, data) => {
  const n = TYPES.indexOf(type);
  const m = data && data.metaData;
  if (n < 0) throw new TypeError('AV.realtime: unknown message type "' + type + '"; use ' + TYPES.join("|"));
  if (n && n != 4 && !m) throw new TypeError("AV.realtime: a " + type + " message needs data.metaData");
  const o = { _lctype: -n - 1, _lctext: data.text, _lcattrs: data.attr };
  if (n == 4) {
    const l = data.location || m;
    if (!l) throw new TypeError("AV.realtime: a location message needs data.location {longitude, latitude}");
    o._lcloc = { longitude: l.longitude, latitude: l.latitude };
  } else if (n == 5) o._lcfile = { url: data.url, name: m.name, size: m.size };
  else if (n) o._lcfile = { url: data.url, objId: data.objectId, metaData: m };
  return JSON.stringify(o);
};
var decodeMedia = (msg, html) => {
  let o;
  if (typeof msg != "string") return msg;
  if (/^\{[^]*\}$/.test(msg)) {
    try {
      o = JSON.parse(msg);
    } catch (e) {
    }
  }
  if (!o) return html ? encodeHTML(msg) : msg;
  const type = TYPES[-o._lctype - 1];
  if (!type) return o;
  const f = o._lcfile || {};
  return {
    type,
    text: html ? encodeHTML(o._lctext) : o._lctext,
    attr: o._lcattrs,
    url: f.url,
    metaData: f.metaData || (f.name != null ? { name: f.name, size: f.size } : void 0),
    location: o._lcloc
  };
};

// src/version.js
var version = "2.5.0";

// src/realtime.js
var config = (
  /** @type {{WebSocket?: any}} */
  {}
);
var noop = () => {
};
var isStr = (x) => typeof x == "string";
var isFn = (x) => typeof x == "function";
var isArr = Array.isArray;
var FATAL = [4100, 4103, 4110, 4111, 4115];
var check = (ok, what) => {
  if (!ok) throw new TypeError("AV.realtime: " + what);
};
var fail = (message, code, extra) => Object.assign(new Error(message), { code }, extra);
var out = (p, cb) => {
  check(!cb || isFn(cb), "callback must be a function");
  p.catch(noop);
  if (cb) p.then(cb, noop);
  return p;
};
var both = (o, fns, need) => {
  for (const k in fns) {
    o[k + "Async"] = fns[k];
    o[k] = (...a) => {
      check(!need.includes(k) || isFn(a[a.length - 1]), k + "() needs a callback (or use " + k + "Async())");
      fns[k](...a);
      return o;
    };
  }
  return o;
};
var evArgs = (what, name, f) => check(name && isStr(name) && (f === 0 || isFn(f)), what + " needs an event name" + (f === 0 ? "" : " and a callback function"));
var idList = (ids, what) => {
  ids = isStr(ids) ? [ids] : ids;
  check(isArr(ids) && ids.every(isStr), what + " needs a client id or an array of client ids");
  return ids;
};
function realtime(options, callback) {
  check(options && typeof options == "object", "options must be an object");
  const appId = options.appId;
  const clientId = options.clientId;
  const WS = options.WebSocket || config.WebSocket || globalThis.WebSocket;
  const server = options.server || globalThis.location && location.origin;
  const auth = options.authFun || options.auth;
  const heartbeat = options.heartbeat || 6e4;
  const timeout = options.timeout || 3e4;
  const minDelay = options.minDelay || 1e3;
  const maxDelay = options.maxDelay || 3e4;
  check(appId && isStr(appId), "options.appId must be a non-empty string");
  check(clientId && isStr(clientId), "options.clientId must be a non-empty string");
  check(isFn(WS), "no WebSocket implementation: pass options.WebSocket or call AV.realtime.config({WebSocket})");
  check(/^(http|ws)s?:\/\//.test(server), "options.server must be an http(s):// or ws(s):// URL");
  check(!auth || isFn(auth), "options.authFun must be a function");
  let listeners = {};
  const pending = {};
  const convs = {};
  let waiters = [];
  const seen = /* @__PURE__ */ new Set();
  const g = (
    /** @type {any} */
    globalThis
  );
  const browser = isFn(g.addEventListener);
  let state = 0;
  let serial = 0;
  let attempt = 0;
  let openI = 0;
  let pinged = 0;
  let routeUntil = 0;
  let ws;
  let route;
  let retryTimer;
  let beatTimer;
  let abort;
  const emit = (name, data) => {
    for (const f of (listeners[name] || []).slice()) {
      try {
        f(data);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  };
  const send = (o) => {
    o.peerId = clientId;
    ws.send(JSON.stringify(o));
  };
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
  const write = (i) => {
    send(pending[i].f);
    if (pending[i].n) settle(i, 0);
  };
  const sign = (f, data) => auth && data && new Promise((ok, ko) => {
    const r = auth(data, ok);
    if (r && isFn(r.then)) r.then(ok, ko);
  }).then((a) => {
    if (!a || !a.signature) throw fail("authFun refused to sign " + f.cmd + " " + (f.op || ""), "SIGNATURE");
    f.s = a.signature;
    f.t = a.timestamp;
    f.n = a.nonce;
  });
  const req = (f, map, sig, noReply) => {
    const p = Promise.resolve(sig && sign(f, sig)).then(
      () => new Promise((ok, ko) => {
        const i = f.i = ++serial;
        pending[i] = {
          f,
          ok,
          ko,
          n: noReply,
          t: setTimeout(() => settle(i, fail("request timed out after " + timeout + " ms", "TIMEOUT")), timeout)
        };
        if (!state) settle(i, fail("closed by the application", "CLOSED"));
        else if (state == 3) write(i);
      })
    ).then(map);
    p.catch((e) => e.code != "CLOSED" && emit("error", e));
    return p;
  };
  const arm = () => {
    clearTimeout(beatTimer);
    beatTimer = setTimeout(() => {
      if (pinged) return lost();
      pinged = 1;
      ws.send("{}");
      arm();
    }, heartbeat);
  };
  const detach = () => {
    clearTimeout(beatTimer);
    clearTimeout(retryTimer);
    if (abort) abort.abort();
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = noop;
      try {
        ws.close();
      } catch (e) {
      }
    }
    abort = ws = 0;
  };
  const lost = () => {
    if (!state) return;
    const was = state;
    detach();
    if (was < 3) routeUntil = 0;
    state = 1;
    if (was == 3) emit("close", { reconnecting: true });
    const d = Math.min(maxDelay, minDelay * 2 ** attempt++);
    retryTimer = setTimeout(connect, d / 2 + Math.random() * d / 2);
    emit("reuse", { attempt, delay: d });
  };
  const shutdown = (e) => {
    if (!state) return;
    state = 0;
    detach();
    if (browser) {
      g.removeEventListener("online", online);
      g.removeEventListener("offline", offline);
    }
    for (const i in pending) settle(i, e);
    for (const w of waiters.splice(0)) w[1](e);
    queueMicrotask(() => emit("close", { code: e.code }));
  };
  const online = () => {
    if (state == 1) {
      attempt = 0;
      detach();
      connect();
    }
  };
  const offline = () => state > 1 && lost();
  const connect = async () => {
    state = 2;
    const a = abort = new AbortController();
    try {
      let url = server;
      if (/^http/.test(server)) {
        if (Date.now() > routeUntil) {
          const r = await fetch(server.replace(/\/+$/, "") + "/v1/route?appId=" + encodeURIComponent(appId), {
            signal: a.signal
          });
          const j = r.ok && await r.json().catch(noop);
          if (!j || !isStr(j.server)) throw fail("router answered HTTP " + r.status + " without a server", "ROUTE");
          route = j.server;
          routeUntil = Date.now() + (j.ttl || 0) * 1e3;
        }
        url = route;
      }
      if (a != abort) return;
      const s = ws = new WS(url);
      pinged = 1;
      arm();
      s.onopen = () => {
        const f = { cmd: "session", op: "open", appId, ua: "js/" + version, i: openI = ++serial };
        Promise.resolve(sign(f, { clientId })).then(
          () => s == ws && send(f),
          (e) => {
            emit("error", e);
            if (s == ws) lost();
          }
        );
      };
      s.onmessage = (e) => s == ws && frame(String(e.data));
      s.onclose = (e) => s == ws && (FATAL.includes(e.code) ? stop(fail("connection closed by the server: " + e.code, e.code)) : lost());
      s.onerror = noop;
    } catch (e) {
      if (a == abort) {
        if (
          /** @type {any} */
          e.code
        ) emit("error", e);
        lost();
      }
    }
  };
  const stop = (e) => {
    emit("error", e);
    shutdown(e);
  };
  const frame = (text) => {
    let d;
    pinged = 0;
    arm();
    try {
      d = JSON.parse(text);
    } catch (e) {
      return;
    }
    const { cmd, op, i } = d || {};
    if (!cmd) return;
    if (cmd == "error" || op == "error" || cmd == "session" && op == "closed") {
      const e = fail(d.reason || "error " + d.code, d.code, { reason: d.reason, detail: d.detail });
      if (pending[i]) return settle(i, e);
      if (i && i != openI) return;
      if (FATAL.includes(d.code)) return stop(e);
      emit("error", e);
      if (i || op == "closed") lost();
    }
    if (cmd == "session" && op == "opened") {
      if (state != 2) return;
      state = 3;
      attempt = 0;
      for (const i2 in pending) write(i2);
      for (const w of waiters.splice(0)) w[0](rt);
      return emit("open", d);
    }
    if (pending[i]) return settle(i, 0, d);
    if (cmd == "direct") {
      d.msg = decodeMedia(d.msg, options.encodeHTML);
      if (!d.transient) send({ cmd: "ack", cid: d.cid, mid: d.id });
      if (seen.has(d.id)) return;
      seen.add(d.id);
      if (seen.size > 999) seen.delete(seen.values().next().value);
      return emit("message", d);
    }
    if (cmd == "rcp") return emit("receipt", d);
    if (cmd == "conv") {
      const c = convs[d.cid];
      if (op == "updated" && c && d.attr) apply(c, d.attr);
      const names = {
        joined: [(d.peerId || clientId) != d.initBy && "join", "invited"],
        left: ["left", "kicked"],
        "members-joined": ["join", "membersjoined"],
        "members-left": ["left", "membersleft"],
        updated: ["update"]
      }[
        /** @type {string} */
        op
      ];
      for (const n of names || []) if (n) emit(n, d);
    }
  };
  const apply = (c, a) => {
    if ("name" in a) c.name = a.name;
    if (a.attr) c.attr = a.attr;
  };
  const query = (o) => {
    const w = Object.assign({}, o.where || { m: clientId });
    const ids = w.roomIds || w.convIds;
    if (isArr(w.m)) w.m = { $all: w.m };
    if (ids) w.objectId = { $in: ids };
    delete w.roomIds;
    delete w.convIds;
    return req(
      {
        cmd: "conv",
        op: "query",
        where: w,
        sort: o.sort || "-lm",
        limit: o.limit || 10,
        skip: o.skip || 0,
        flag: (o.compact ? 1 : 0) | (o.withLastMessages ? 2 : 0)
      },
      (d) => d.results || []
    );
  };
  const ping = (ids, cb) => out(req({ cmd: "session", op: "query", sessionPeerIds: idList(ids, "ping()") }, (d) => d.onlineSessionPeerIds || []), cb);
  const makeConv = (id, name, attr, ready) => {
    const creq = (build, cb, map, sig, noReply) => out(
      ready.then(() => {
        const f = build();
        return req(f, map, sig && sig(f), noReply);
      }),
      cb
    );
    const members = (op, ids, cb) => {
      ids = idList(ids, op + "()");
      return creq(
        () => ({ cmd: "conv", op, cid: c.id, m: ids }),
        cb,
        0,
        (f) => (op == "add" || ids.length > 1 || ids[0] != clientId) && {
          clientId,
          members: ids,
          convId: f.cid,
          action: op == "add" ? "invite" : "kick"
        }
      );
    };
    const sub = (name2, cb) => {
      check(isFn(cb), "callback must be a function");
      listeners[name2] = (listeners[name2] || []).concat((d) => d.cid == c.id && cb(d));
      return c;
    };
    const c = {
      id,
      name,
      attr,
      receive: (cb) => sub("message", cb),
      receipt: (cb) => sub("receipt", cb)
    };
    both(c, {
      add: (ids, cb) => members("add", ids, cb),
      remove: (ids, cb) => members("remove", ids, cb),
      join: (cb) => members("add", clientId, cb),
      leave: (cb) => members("remove", clientId, cb),
      send(data, opts, cb) {
        if (isFn(opts)) {
          cb = opts;
          opts = 0;
        }
        opts = opts || {};
        check(isStr(data) || data && typeof data == "object", "send() needs a string or an object");
        const msg = opts.type ? encodeMedia(opts.type, data) : isStr(data) ? data : JSON.stringify(data);
        return creq(
          // `dt` names this message: if its ack is lost and the request is re-sent after a
          // reconnect, the server acknowledges it again instead of storing it twice.
          () => ({
            cmd: "direct",
            cid: c.id,
            msg,
            r: opts.receipt ? 1 : false,
            transient: !!opts.transient,
            dt: Math.random().toString(36).slice(2) + Date.now().toString(36)
          }),
          cb,
          0,
          0,
          opts.transient
        );
      },
      log(opts, cb) {
        if (isFn(opts)) {
          cb = opts;
          opts = 0;
        }
        opts = opts || {};
        return creq(
          () => ({ cmd: "logs", cid: c.id, t: opts.t, mid: opts.mid, limit: opts.limit || 20 }),
          cb,
          (d) => (d.logs || []).map((l) => {
            l.fromPeerId = l.from;
            l.msg = l.data = decodeMedia(l.data, options.encodeHTML);
            return l;
          })
        );
      },
      list: (cb) => out(
        ready.then(() => query({ where: { objectId: c.id } })).then((r) => r[0] && r[0].m || []),
        cb
      ),
      count: (cb) => creq(() => ({ cmd: "conv", op: "count", cid: c.id }), cb, (d) => d.count),
      update(data, cb) {
        check(data && typeof data == "object", "update() needs an object");
        return creq(() => ({ cmd: "conv", op: "update", cid: c.id, attr: data }), cb, (d) => {
          apply(c, data);
          return d;
        });
      },
      ping
    }, ["list", "count", "ping"]);
    if (id) convs[id] = c;
    return c;
  };
  const conv = (arg, cb) => {
    if (isStr(arg)) {
      check(arg, "conversation id must not be empty");
      const c2 = convs[arg] || makeConv(arg, "", {}, Promise.resolve());
      return [
        c2,
        out(
          query({ where: { objectId: arg } }).then((r) => {
            if (r[0]) apply(c2, r[0]);
            return r[0] ? c2 : null;
          }),
          cb
        )
      ];
    }
    if (isFn(arg)) {
      cb = arg;
      arg = {};
    }
    check(arg && typeof arg == "object", "conv() needs an options object or a conversation id");
    const m = arg.members || [];
    check(isArr(m) && m.every(isStr), "options.members must be an array of client ids");
    const attr = arg.attr || arg.data || {};
    const name = arg.name || attr.name || "";
    let c;
    const started = req(
      { cmd: "conv", op: "start", m, attr: { name, attr }, unique: !!arg.unique, transient: !!arg.transient },
      (d) => {
        convs[c.id = d.cid] = c;
        emit("create", d);
        return c;
      },
      { clientId, members: m }
    );
    c = makeConv("", name, attr, started);
    return [c, out(started, cb)];
  };
  const rt = {
    clientId,
    close() {
      shutdown(fail("closed by the application", "CLOSED"));
      return rt;
    },
    /** @param {string} name @param {Function} f */
    on(name, f) {
      evArgs("on(eventName, callback)", name, f);
      listeners[name] = (listeners[name] || []).concat(f);
      return rt;
    },
    /** @param {string} name @param {Function} f */
    once(name, f) {
      evArgs("once(eventName, callback)", name, f);
      const w = (d) => {
        rt.off(name, w);
        f(d);
      };
      w.f = f;
      return rt.on(name, w);
    },
    /** @param {string} name @param {Function} f the function given to on() or once() */
    off(name, f) {
      evArgs("off(eventName, callback)", name, f);
      listeners[name] = (listeners[name] || []).filter((x) => x != f && x.f != f);
      return rt;
    },
    /** @param {string} name @param {any} [data] */
    emit(name, data) {
      evArgs("emit(eventName[, data])", name, 0);
      emit(name, data);
      return rt;
    },
    /** @param {any} arg @param {any} [cb] */
    conv: (arg, cb) => conv(arg, cb)[0],
    /** @param {any} arg */
    convAsync: (arg) => conv(arg)[1]
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
            g.addEventListener("online", online);
            g.addEventListener("offline", offline);
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
      ping
    },
    ["query", "ping"]
  );
  return rt.open(callback);
}
realtime.version = version;
realtime.encodeHTML = encodeHTML;
realtime.config = (c) => {
  Object.assign(config, c);
};
realtime.realtime = realtime;
realtime.default = realtime;

// src/index.js
var index_default = realtime;
export {
  index_default as default,
  realtime,
  version
};

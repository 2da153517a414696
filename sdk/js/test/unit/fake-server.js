// An in-process stand-in for Confab, for unit tests only: an HTTP router (/v1/route) and a
// WebSocket endpoint speaking the JSON frames of LEANCLOUD-PROTOCOL.md §3 with scripted replies.
//
//   const fake = await startFake();
//   fake.reply['conv start'] = (f, conn) => ({ cmd: 'conv', op: 'started', i: f.i, cid: 'x' });
//   const f = await fake.next((f) => f.cmd === 'direct');   // wait for a client frame
//   fake.conns[0].push({ cmd: 'direct', ... });             // server push
//   fake.conns[0].ws.close(4111);                           // forced disconnect
//
// Every received frame is recorded in fake.frames as {conn, frame} (heartbeats as {}).
// A reply handler returning undefined sends nothing (useful to simulate a lost reply).
import { createServer } from 'node:http';
import { WebSocketServer } from 'ws';

export async function startFake({ ttl = 3600, port = 0 } = {}) {
  const http = createServer((req, res) => {
    const u = new URL(req.url, 'http://x');
    if (u.pathname === '/v1/route') {
      fake.routeRequests.push(u.searchParams.get('appId'));
      if (fake.routeStatus !== 200) {
        res.writeHead(fake.routeStatus).end('no');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ server: fake.url, ttl: fake.ttl }));
      return;
    }
    res.writeHead(404).end();
  });
  const wss = new WebSocketServer({ server: http });
  let cid = 0;
  let uid = 0;
  const waiters = [];
  const fake = {
    ttl,
    routeStatus: 200,
    routeRequests: [],
    frames: [],
    conns: [],
    online: new Set(),
    reply: {
      'session open': (f) => ({ cmd: 'session', op: 'opened', i: f.i, peerId: f.peerId }),
      'session query': (f) => ({
        cmd: 'session',
        op: 'query-result',
        i: f.i,
        onlineSessionPeerIds: f.sessionPeerIds.filter((p) => fake.online.has(p)),
      }),
      'conv start': (f) => ({ cmd: 'conv', op: 'started', i: f.i, cid: 'conv' + ++cid }),
      'conv add': (f) => ({ cmd: 'conv', op: 'added', i: f.i }),
      'conv remove': (f) => ({ cmd: 'conv', op: 'removed', i: f.i }),
      'conv update': (f) => ({ cmd: 'conv', op: 'updated', i: f.i }),
      'conv count': (f) => ({ cmd: 'conv', op: 'result', i: f.i, count: 2 }),
      'conv query': (f) => ({ cmd: 'conv', op: 'results', i: f.i, results: [] }),
      direct: (f) => (f.transient ? undefined : { cmd: 'ack', i: f.i, uid: 'm' + ++uid, t: 1700000000000 + uid }),
      logs: (f) => ({ cmd: 'logs', i: f.i, logs: [] }),
      heartbeat: () => ({}),
    },
    get url() {
      return `ws://127.0.0.1:${http.address().port}/`;
    },
    get http() {
      return `http://127.0.0.1:${http.address().port}`;
    },
    /** Resolve with the next recorded frame (from now on, or already recorded after `from`) matching pred. */
    next(pred = () => true, { timeout = 3000, from = fake.frames.length } = {}) {
      for (let k = from; k < fake.frames.length; k++) if (pred(fake.frames[k].frame)) return Promise.resolve(fake.frames[k].frame);
      return new Promise((ok, ko) => {
        const w = { pred, ok };
        waiters.push(w);
        setTimeout(() => {
          const k = waiters.indexOf(w);
          if (k >= 0) {
            waiters.splice(k, 1);
            ko(new Error('fake server: no matching frame within ' + timeout + ' ms'));
          }
        }, timeout).unref();
      });
    },
    sent(pred) {
      return fake.frames.map((x) => x.frame).filter(pred);
    },
    /** Push a frame to every connection of `peerId` (or all). */
    push(obj, peerId) {
      for (const c of fake.conns) if (!peerId || c.peerId === peerId) c.push(obj);
    },
    dropAll(code) {
      for (const c of fake.conns) code ? c.ws.close(code) : c.ws.terminate();
    },
    async stop() {
      for (const c of fake.conns) c.ws.terminate();
      await new Promise((r) => wss.close(r));
      await new Promise((r) => http.close(r));
    },
  };
  wss.on('connection', (ws) => {
    const conn = {
      ws,
      peerId: null,
      push: (o) => ws.readyState === 1 && ws.send(typeof o === 'string' ? o : JSON.stringify(o)),
    };
    fake.conns.push(conn);
    ws.on('close', () => {
      fake.conns.splice(fake.conns.indexOf(conn), 1);
      if (conn.peerId && !fake.conns.some((c) => c.peerId === conn.peerId)) fake.online.delete(conn.peerId);
    });
    ws.on('message', (data) => {
      const frame = JSON.parse(String(data));
      fake.frames.push({ conn, frame });
      if (frame.cmd === 'session' && frame.op === 'open') {
        conn.peerId = frame.peerId;
        fake.online.add(frame.peerId);
      }
      const key = frame.cmd ? frame.cmd + (frame.op ? ' ' + frame.op : '') : 'heartbeat';
      const h = fake.reply[key];
      const out = h && h(frame, conn);
      if (out !== undefined) conn.push(out);
      for (const w of waiters.slice()) {
        if (w.pred(frame)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.ok(frame);
        }
      }
    });
  });
  await new Promise((r) => http.listen(port, '127.0.0.1', r));
  return fake;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Resolve with the next emission of `name` on a realtime object. */
export const once = (rt, name, timeout = 3000) =>
  new Promise((ok, ko) => {
    const t = setTimeout(() => ko(new Error('event ' + name + ' not emitted within ' + timeout + ' ms')), timeout);
    rt.once(name, (d) => {
      clearTimeout(t);
      ok(d);
    });
  });

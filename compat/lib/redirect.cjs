// Points the unmodified leancloud-realtime@2.4.0 SDK at a Confab server (protocol §1.5).
//
// 2.4.0 exposes its private engine as `realtime._engine`, and every (re)connect goes through
// `engine.getServer(cache, options, callback)`. We replace only that function: it calls the
// server's own v2 router (`GET /v1/route?appId=…[&secure=1]`) over HTTP(S), exactly the request the
// SDK would send to router-g0-push.leancloud.cn, stores `{server, expires}` in `cache.server`
// and calls `callback(cache.server)`, which makes the SDK's own `open()` connect the WebSocket.
//
// CommonJS on purpose: the official mocha suite loads it with `--require`.
'use strict';

const http = require('node:http');
const https = require('node:https');

const ROUTER_RETRY_MS = 250;
const ROUTER_DEADLINE_MS = 30000;

// appId -> router base URL (http://HOST:PORT); `default` is used for unknown app ids.
const routes = new Map();
let defaultBase;
// appId -> fixed WebSocket URL (bypasses the router; used to reach the socket with an app id the router refuses)
const pinned = new Map();
// every router answer, for assertions: {appId, url, status, body}
const routerLog = [];

function httpGetJson(url) {
  return new Promise((resolve, reject) => {
    const get = url.startsWith('https:') ? https.get : http.get;
    const req = get(url, { headers: { Accept: 'application/json' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => {
        let json;
        try { json = body ? JSON.parse(body) : undefined; } catch (e) { json = undefined; }
        resolve({ status: res.statusCode, headers: res.headers, body, json });
      });
    });
    req.setTimeout(5000, () => req.destroy(new Error('router request timed out')));
    req.on('error', reject);
  });
}

// Retries connection errors (a restarting server) until the deadline.
async function routerGet(url) {
  const deadline = Date.now() + ROUTER_DEADLINE_MS;
  for (;;) {
    try {
      return await httpGetJson(url);
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, ROUTER_RETRY_MS));
    }
  }
}

function install(realtime) {
  if (realtime._engine.__confabRedirected) return realtime;
  const engine = realtime._engine;
  engine.getServer = function confabGetServer(cache, options, callback) {
    const appId = options.appId;
    if (pinned.has(appId)) {
      cache.server = { server: pinned.get(appId), expires: Date.now() + 3600 * 1000 };
      setImmediate(() => callback(cache.server));
      return;
    }
    const base = routes.get(appId) || defaultBase;
    if (!base) throw new Error('compat redirect: no Confab server registered');
    // Same query the SDK builds itself (src/realtime.js engine.getServer).
    let url = `${base}/v1/route?_t=${Date.now()}&appId=${encodeURIComponent(appId)}`;
    if (options.secure) url += '&secure=1';
    routerGet(url).then((res) => {
      routerLog.push({ appId, url, status: res.status, body: res.body });
      if (cache.closeFlag) return; // app closed meanwhile
      const data = res.json;
      if (res.status >= 200 && res.status < 300 && data && typeof data.server === 'string' && typeof data.ttl === 'number') {
        // What the SDK's own getServer does with the router answer.
        data.expires = Date.now() + data.ttl * 1000;
        cache.server = data;
        callback(data);
      } else {
        // The SDK's own getServer emits a bare `error` when the router fails.
        cache.ec.emit('error', { cmd: 'router', status: res.status, body: res.body });
      }
    }, (err) => {
      routerLog.push({ appId, url, status: 0, body: String(err) });
      if (!cache.closeFlag) cache.ec.emit('error', { cmd: 'router', status: 0, body: String(err) });
    });
  };
  engine.__confabRedirected = true;
  return realtime;
}

/** Routes the given app ids (and, by default, any unknown id) to a server base URL. */
function route(base, appIds, { asDefault = true } = {}) {
  for (const id of appIds || []) routes.set(id, base);
  if (asDefault) defaultBase = base;
}

function pin(appId, wsUrl) {
  if (wsUrl) pinned.set(appId, wsUrl);
  else pinned.delete(appId);
}

module.exports = { install, route, pin, routerLog, httpGetJson };

// `mocha --require lib/redirect.cjs`: configure from the environment.
if (process.env.CONFAB_ROUTER_BASE) {
  install(require('leancloud-realtime'));
  route(process.env.CONFAB_ROUTER_BASE, []);
}

// Origin allow-list (protocol §7.2, 4110 INVALID_ORIGIN). ws@0.8 — the SDK's WebSocket in Node — sends
// an Origin header only when given the `origin` option, so the test transport (lib/sdk.mjs, installed
// through the SDK's own `realtime.config({WebSocket})` hook) adds the header a browser page would send.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { serverFixture } from '../lib/fixture.mjs';
import { Client, setOrigin, uid } from '../lib/sdk.mjs';

const LOCKED = { id: 'origin-app', key: 'origin-key', master_key: 'origin-master', allowed_origins: ['http://allowed.example'] };
const OPEN = { id: 'any-origin-app', key: 'k2', master_key: 'm2', allowed_origins: [] };
const ctx = serverFixture({ config: { apps: [LOCKED, OPEN] } });
ctx.allowSocketErrors = true;

async function withOrigin(origin, fn) {
  setOrigin(origin);
  try {
    return await fn();
  } finally {
    setOrigin(undefined);
  }
}

test('allowed Origin: the 2.4.0 client opens', async () => {
  const c = await withOrigin('http://allowed.example', () => Client.open({ appId: LOCKED.id, clientId: uid('ok') }));
  ctx.track(c);
  assert.equal(c.rt.cache.ws.__origin, 'http://allowed.example');
  assert.equal(c.seen('open').length, 1);
  const conv = await c.createConv({ members: ['x'] });
  assert.match(conv.id, /^[0-9a-f]{24}$/);
});

test('disallowed Origin: the WebSocket is closed with 4110 (INVALID_ORIGIN), no session', async () => {
  // the origin must stay set until the SDK has created its socket (after its async router call)
  const { c, ev } = await withOrigin('http://evil.example', async () => {
    const client = ctx.track(Client.start({ appId: LOCKED.id, clientId: uid('evil') }));
    return { c: client, ev: await client.waitFor('close', () => true, { timeout: 10_000 }) };
  });
  assert.equal(c.rt.cache.ws.__origin, 'http://evil.example');
  assert.equal(ev.code, 4110, `close code ${ev.code} reason ${ev.reason}`);
  assert.equal(c.seen('open').length, 0);
  c.close();
});

test('a client that sends no Origin (a non-browser app) is not refused by the allow-list', async () => {
  const c = await Client.open({ appId: LOCKED.id, clientId: uid('native') });
  ctx.track(c);
  assert.equal(c.rt.cache.ws.__origin, undefined);
  assert.equal(c.seen('open').length, 1);
});

test('an app with an empty allow-list accepts any Origin', async () => {
  const c = await withOrigin('http://evil.example', () => Client.open({ appId: OPEN.id, clientId: uid('any') }));
  ctx.track(c);
  assert.equal(c.seen('open').length, 1);
});

test('router CORS: allowed Origin is echoed in Access-Control-Allow-Origin, a disallowed one is not', async () => {
  const get = (origin, appId) => new Promise((resolve, reject) => {
    http.get(`${ctx.server.url}/v1/route?appId=${appId}&secure=1`, { headers: { Origin: origin } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res));
    }).on('error', reject);
  });
  const ok = await get('http://allowed.example', LOCKED.id);
  assert.equal(ok.statusCode, 200);
  assert.ok(['http://allowed.example', '*'].includes(ok.headers['access-control-allow-origin']), `ACAO=${ok.headers['access-control-allow-origin']}`);
  const bad = await get('http://evil.example', LOCKED.id);
  assert.notEqual(bad.headers['access-control-allow-origin'], 'http://evil.example');
  assert.notEqual(bad.headers['access-control-allow-origin'], '*');
  const any = await get('http://evil.example', OPEN.id);
  assert.ok(['http://evil.example', '*'].includes(any.headers['access-control-allow-origin']));
});

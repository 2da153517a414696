// Scenario 13 (tags and conflicts), 14 (reconnect with a session token across a server-side
// disconnect; 4112 on a bad token), session refresh (R6). §2.2, §4.4 R2/R3/R6, §6.22.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serverFixture } from '../lib/fixture4.mjs';
import { LC, sleep, uid, withTimeout } from '../lib/sdk4.mjs';

const ctx = serverFixture();
const ofConv = (cid) => (p, c) => c && c.id === cid;

test('scenario 13: same tag on a second device ⇒ first gets session/closed{4111} (conflict event); second opened', async () => {
  const id = uid('tagged');
  const first = await ctx.open(id, { tag: 'Mobile' });
  const second = await ctx.open(id, { tag: 'Mobile' });
  const [payload] = await first.waitFor('conflict');
  assert.ok(typeof payload.reason === 'string');
  const closed = first.frames('in').find((f) => f.cmd.op === 'closed');
  assert.equal(closed.cmd.sessionMessage.code, 4111);
  assert.equal(closed.cmd.peerId, id);
  assert.equal(closed.cmd.i, undefined);
  assert.equal(second.frames('out')[0].cmd.sessionMessage.tag, 'Mobile');
  assert.deepEqual(await second.im.ping([id]), [id]);
});

test('scenario 13: no tag ⇒ both sessions coexist and both receive messages', async () => {
  const id = uid('multi');
  const d1 = await ctx.open(id);
  const d2 = await ctx.open(id);
  const alice = await ctx.open(uid('alice'));
  const conv = await alice.im.createConversation({ members: [id] });
  const m = await conv.send(new LC.TextMessage('both'));
  await d1.waitFor('message', (x) => x.id === m.id);
  await d2.waitFor('message', (x) => x.id === m.id);
  assert.equal(d1.seen('conflict').length + d2.seen('conflict').length, 0);
});

test('scenario 14: server restart (server-side disconnect) ⇒ SDK reconnects with session/open{r:true, st}, no tag/deviceId ⇒ reconnect; messaging works', async () => {
  const id = uid('recon');
  const c = await ctx.open(id, { tag: 'Desk' });
  const firstOpened = c.frames('in').find((f) => f.cmd.op === 'opened');
  const st = firstOpened.cmd.sessionMessage.st;
  await ctx.server.restart();
  await c.waitFor('reconnect', () => true, { timeout: 20_000 }).catch((e) => {
    // What the SDK did meanwhile (its connection events, the frames of each socket), for the report.
    const events = c.rt.events.map((x) => `${x.name}${JSON.stringify(x.args)}@${x.at}`);
    const frames = c.frames().slice(-12).map((f) => `${f.dir} ${f.cmd ? `${f.cmd.cmd}/${f.cmd.op ?? ''} i=${f.cmd.i ?? ''}` : f.error} ws=${c.rt.sockets.indexOf(f.ws)}@${f.at}`);
    const closes = c.rt.sockets.map((ws) => ws.__closeCode);
    throw new Error(`${e.message}\nevents: ${events.join(', ')}\nim events: ${c.events.map((x) => x.name).join(', ')}\nframes: ${frames.join('; ')}\nsocket close codes: ${closes}\nnow ${Date.now()}\n${ctx.logTail()}`);
  });
  const reopen = c.frames('out').filter((f) => f.cmd.op === 'open').at(-1);
  assert.equal(reopen.cmd.sessionMessage.r, true);
  assert.equal(reopen.cmd.sessionMessage.st, st, 'cached token presented');
  assert.equal(reopen.cmd.sessionMessage.tag, undefined);
  assert.equal(reopen.cmd.sessionMessage.deviceId, undefined);
  assert.equal(reopen.cmd.sessionMessage.s, undefined);
  const reply = c.frames('in').find((f) => f.cmd.i === reopen.cmd.i && f.ws === reopen.ws);
  assert.equal(reply.cmd.op, 'opened');
  assert.ok(reply.cmd.sessionMessage.st, 'fresh st');
  assert.equal(c.seen('reconnecterror').length, 0);
  const alice = await ctx.open(uid('alice'));
  const conv = await alice.im.createConversation({ members: [id] });
  const m = await conv.send(new LC.TextMessage('after restart'));
  await c.waitFor('message', (x) => x.id === m.id);
});

test('scenario 14: invalid st ⇒ error 4112 ⇒ the SDK re-opens without st and succeeds', async () => {
  const id = uid('badst');
  const c = await ctx.open(id);
  c.im._sessionManager.setSessionToken('forged.token.value', 3600); // what a stale/forged token looks like to the server
  const ws = await c.rt.ws();
  ws.terminate(); // network drop ⇒ automatic reconnect
  await c.waitFor('reconnect', () => true, { timeout: 20_000 });
  const opens = c.frames('out').filter((f) => f.cmd.op === 'open' && f.cmd.sessionMessage.r === true);
  assert.ok(opens.length >= 2, `two re-opens expected, got ${opens.length}`);
  assert.equal(opens[0].cmd.sessionMessage.st, 'forged.token.value');
  const err = c.frames('in').find((f) => f.cmd.i === opens[0].cmd.i && f.ws === opens[0].ws);
  const code = err.cmd.cmd === 'error' ? err.cmd.errorMessage.code : err.cmd.sessionMessage.code;
  assert.equal(code, 4112);
  assert.ok((err.cmd.errorMessage || err.cmd.sessionMessage).reason, 'reason present');
  assert.equal(opens[1].cmd.sessionMessage.st, undefined, 'retry without st');
  assert.equal(c.seen('reconnecterror').length, 0);
});

test('scenario 13: after a kick, the kicked device\'s automatic re-open (r:true) is refused with 4111', async () => {
  const id = uid('kick');
  const first = await ctx.open(id, { tag: 'Pad' });
  await ctx.open(id, { tag: 'Pad' });
  await first.waitFor('conflict');
  // the kicked client is de-registered by the SDK; a new Realtime re-opening with its token and r:true
  const st = first.frames('in').find((f) => f.cmd.op === 'opened').cmd.sessionMessage.st;
  const rt = ctx.rt();
  const p = rt.realtime.createIMClient(id, { isReconnect: true });
  // isReconnect on a first open makes 4.3.1 dereference a missing session manager (SDK bug, §6.22):
  // so drive the raw re-open through the SDK's own command classes on this Realtime's connection.
  p.catch(() => {});
  const conn = await withTimeout(rt.connection(), 5000, 'connection');
  const P = LC.Protocals;
  const reply = await conn.send(new P.GenericCommand({ cmd: 'session', op: 'open', appId: ctx.app.id, peerId: id,
    sessionMessage: new P.SessionCommand({ ua: 'js/4.3.1', r: true, st, configBitmap: 59 }) })).then((x) => x, (e) => e);
  const code = reply instanceof Error ? reply.code : reply.sessionMessage && reply.sessionMessage.code;
  assert.equal(code, 4111, `refused with 4111, got ${reply instanceof Error ? reply.message : JSON.stringify(reply)}`);
});

test('R6 session/refresh: an expired token is refreshed ⇒ sessionMessage{st, stTtl}', async () => {
  const c = await ctx.open(uid('refresh'));
  const sm = c.im._sessionManager;
  sm.revoke();
  // 4.3.1 itself returns undefined here: its refresh path wraps setSessionTokenAsync twice and
  // spreads an Expirable; so assert the frames, not the SDK's return value.
  await withTimeout(sm.getSessionToken(), 5000, 'refresh');
  const out = c.frames('out').find((f) => f.cmd.op === 'refresh');
  assert.ok(out, 'session/refresh sent');
  assert.ok(out.cmd.sessionMessage.st, 'expired token presented');
  const reply = c.frames('in').find((f) => f.cmd.i === out.cmd.i);
  assert.notEqual(reply.cmd.cmd, 'error', JSON.stringify(reply.cmd));
  assert.equal(reply.cmd.op, 'refreshed');
  assert.match(String(reply.cmd.sessionMessage.st), /^\d+\.[0-9a-f]{40}\./, 'a fresh session token');
  assert.ok(reply.cmd.sessionMessage.stTtl > 0);
  void ofConv; void sleep;
});

// Every method of the manual returns the very object it was called on, with and without its
// optional callbacks, and every callback fires — against the real server (identity.js; the
// browser test runs the same function against dist/AV.realtime.js in Chromium).
import { it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import realtime from '../../src/index.js';
import { startConfab, APP } from './confab.js';
import { checkIdentity } from './identity.js';

let server;
before(async () => {
  server = await startConfab();
});
after(async () => {
  await server.stop();
  server.cleanup();
});

it('every documented method returns its own object (===); every callback fires', { timeout: 20000 }, async () => {
  const { checks, callbacks, missing } = await checkIdentity(realtime, { appId: APP.id, server: server.http, WebSocket });
  assert.deepEqual(checks.filter(([, ok]) => !ok).map(([label]) => label), [], 'checks that failed');
  assert.deepEqual(callbacks.filter(([, ok]) => !ok).map(([label]) => label), [], 'callbacks with a wrong argument');
  assert.equal(missing, 0, 'callbacks that never fired');
  assert.ok(checks.length > 60 && callbacks.length > 25, `${checks.length} checks, ${callbacks.length} callbacks`);
});

it("a conversation's creator can leave: its leave() callback fires and it gets no more messages", { timeout: 20000 }, async () => {
  const tag = Math.random().toString(36).slice(2, 8);
  const open = (id) => realtime({ appId: APP.id, clientId: id + '-' + tag, server: server.http, WebSocket });
  const [owner, bob] = [open('owner'), open('bob')];
  try {
    await Promise.all([owner.openAsync(), bob.openAsync()]);
    const room = await owner.convAsync({ members: [bob.clientId] });
    const messages = [];
    owner.on('message', (m) => messages.push(m.msg));
    const bobSawLeave = new Promise((r) => bob.on('membersleft', (d) => d.cid === room.id && r(d)));
    const reply = await new Promise((r) => room.leave(r));
    assert.deepEqual([reply.op, reply.allowedPids, reply.failedPids], ['removed', [owner.clientId], []]);
    assert.deepEqual((await bobSawLeave).m, [owner.clientId]);
    const bobRoom = bob.conv(room.id);
    assert.deepEqual(await bobRoom.listAsync(), [bob.clientId]);
    const ack = await bobRoom.sendAsync('after the creator left');
    assert.ok(ack.uid);
    // A push to the creator would be queued on its connection before the ack reached bob, so
    // before the answer to a request the creator makes now.
    await owner.pingAsync(owner.clientId);
    assert.deepEqual(messages, []);
    assert.equal((await bobRoom.logAsync()).at(-1).msgId, ack.uid, 'the message was sent and stored');
  } finally {
    owner.close();
    bob.close();
  }
});

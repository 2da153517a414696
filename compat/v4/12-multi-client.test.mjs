// Several IM clients of one Realtime on one socket (protocol §2): commands and pushes are
// routed by peerId.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serverFixture } from '../lib/fixture4.mjs';
import { LC, uid } from '../lib/sdk4.mjs';

const ctx = serverFixture();

test('two IM clients on one Realtime share the socket; once there are two, every command carries peerId', async () => {
  const rt = ctx.rt();
  const a = await rt.createClient(uid('multiA'));
  const b = await rt.createClient(uid('multiB'));
  assert.equal(rt.sockets.length, 1, 'one socket');
  const since = rt.frames('out').length;
  const conv = await a.im.createConversation({ members: [b.id] });
  await b.waitFor('membersjoined', (p, c) => c.id === conv.id);
  const start = rt.frames('out').slice(since).find((f) => f.cmd.op === 'start');
  assert.equal(start.cmd.peerId, a.id);
  // pushes are routed by peerId: each client got its own invited
  await a.waitFor('invited', (p, c) => c.id === conv.id);
  await b.waitFor('invited', (p, c) => c.id === conv.id);
  const msg = await a.im.getConversation(conv.id).then((c) => c.send(new LC.TextMessage('to b')));
  const [m] = await b.waitFor('message', (x) => x.id === msg.id);
  assert.equal(m.text, 'to b');
  assert.equal(a.seen('message').length, 0, 'the sending client does not get its own message back');
});


// Recall / edit (patch modify): messagerecall / messageupdate, ownership, history and lastMessage. §4.4 R28, §6.23.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serverFixture } from '../lib/fixture4.mjs';
import { LC, uid, rejects } from '../lib/sdk4.mjs';

const ctx = serverFixture();
const ofConv = (cid) => (p, c) => c && c.id === cid;

async function pair() {
  const alice = await ctx.open(uid('alice'));
  const bob = await ctx.open(uid('bob'));
  const conv = await alice.im.createConversation({ members: [bob.id] });
  await bob.waitFor('membersjoined', ofConv(conv.id));
  return { alice, bob, conv };
}

test('update(): patch/modify answered; the other member gets patch{patches[{cid, mid, data, patchTimestamp, from}]} ⇒ messageupdate', async () => {
  const { alice, bob, conv } = await pair();
  const sent = await conv.send(new LC.TextMessage('typo'));
  await bob.waitFor('message', (m) => m.id === sent.id);
  const edited = await conv.update(sent, new LC.TextMessage('fixed'));
  assert.equal(edited.id, sent.id);
  const out = alice.frames('out').find((f) => f.cmd.cmd === 'patch');
  assert.equal(out.cmd.op, 'modify');
  assert.equal(out.cmd.patchMessage.patches[0].mid, sent.id);
  const [m, c] = await bob.waitFor('messageupdate', (x) => x.id === sent.id);
  assert.equal(c.id, conv.id);
  assert.equal(m.text, 'fixed');
  assert.equal(m.from, alice.id);
  assert.ok(m.updatedAt.getTime() >= sent.timestamp.getTime());
  const push = bob.frames('in').find((f) => f.cmd.cmd === 'patch');
  assert.equal(push.cmd.op, 'modify');
  assert.equal(push.cmd.i, undefined);
  const p = push.cmd.patchMessage.patches[0];
  assert.equal(p.cid, conv.id);
  assert.equal(p.timestamp, sent.timestamp.getTime());
  assert.ok(p.patchTimestamp > 0);
  const [h] = await conv.queryMessages({ limit: 1 });
  assert.equal(h.id, sent.id);
  assert.equal(h.text, 'fixed', 'history shows the new body');
  assert.ok(h.updatedAt.getTime() > h.timestamp.getTime() - 1);
});

test('recall(): the other member gets messagerecall with a RecalledMessage; history shows the placeholder', async () => {
  const { bob, conv } = await pair();
  const sent = await conv.send(new LC.TextMessage('oops'));
  await bob.waitFor('message', (m) => m.id === sent.id);
  const recalled = await conv.recall(sent);
  assert.ok(recalled instanceof LC.RecalledMessage);
  const [m] = await bob.waitFor('messagerecall', (x) => x.id === sent.id);
  assert.ok(m instanceof LC.RecalledMessage);
  const [h] = await conv.queryMessages({ limit: 1 });
  assert.ok(h instanceof LC.RecalledMessage);
  const fresh = await bob.im.getQuery().equalTo('objectId', conv.id).withLastMessagesRefreshed(true).find();
  assert.ok(fresh[0].lastMessage instanceof LC.RecalledMessage, 'last message follows the recall');
});

test('patching someone else\'s message ⇒ 4403 MESSAGE_OWNERSHIP_REQUIRED; unknown message ⇒ 4404', async () => {
  const { bob, conv } = await pair();
  const sent = await conv.send(new LC.TextMessage('mine'));
  const [m] = await bob.waitFor('message', (x) => x.id === sent.id);
  const bconv = await bob.im.getConversation(conv.id);
  // 4.3.1 refuses other people's messages client-side; a plain {id, timestamp} object reaches the server.
  const err = await rejects(bconv.recall({ id: m.id, timestamp: m.timestamp }), 'recall of another member\'s message');
  assert.equal(err.code, 4403);
  const err2 = await rejects(conv.recall({ id: 'no-such-message-id-0000', timestamp: new Date() }), 'recall of unknown message');
  assert.equal(err2.code, 4404);
});

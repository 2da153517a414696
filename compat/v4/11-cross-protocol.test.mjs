// A 4.3.1 (protobuf) client and a 2.4.0 (JSON) client in the same conversation see each other's
// messages and membership changes (issue 4, "Done when"). One engine, two codecs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serverFixture } from '../lib/fixture4.mjs';
import { LC, uid } from '../lib/sdk4.mjs';
import { Client as V2, useServer, convCall } from '../lib/sdk.mjs';

const ctx = serverFixture();
const v2clients = [];
const ofConv = (cid) => (p, c) => c && c.id === cid;

async function openV2(id) {
  useServer(ctx.server);
  const c = await V2.open({ appId: ctx.app.id, clientId: id });
  v2clients.push(c);
  return c;
}

test('4.3.1 creates with a 2.4.0 member: JSON client gets joined/members-joined; messages both ways; receipts', async (t) => {
  t.after(() => v2clients.splice(0).forEach((c) => c.close()));
  const bobId = uid('v2bob');
  const bob = await openV2(bobId);
  const alice = await ctx.open(uid('v4alice'));
  const since = bob.mark();
  const conv = await alice.im.createConversation({ members: [bobId], name: 'mixed' });
  const inv = await bob.waitFor('invited', (d) => d.cid === conv.id, { since });
  assert.equal(inv.initBy, alice.id);
  const mj = await bob.waitFor('membersjoined', (d) => d.cid === conv.id, { since });
  assert.deepEqual([...mj.m].sort(), [alice.id, bobId].sort());
  // 4.3.1 → 2.4.0
  const sent = await conv.send(new LC.TextMessage('from v4'), { receipt: true });
  const got = await bob.waitFor('message', (d) => d.cid === conv.id, { since });
  assert.equal(got.id, sent.id);
  assert.equal(got.fromPeerId, alice.id);
  assert.equal(got.timestamp, sent.timestamp.getTime());
  assert.equal(got.msg.type, 'text', '4.x TextMessage parsed by 2.4.0 as a typed text message');
  assert.equal(got.msg.text, 'from v4');
  const rcp = await alice.waitFrame('in', (x) => x.cmd === 'rcp' && x.rcpMessage.id === sent.id, { what: 'rcp after the v2 ack', timeout: 5000 });
  assert.equal(rcp.cmd.rcpMessage.cid, conv.id);
  // 2.4.0 → 4.3.1
  const bconv = await bob.openConv(conv.id);
  const ack = await convCall(bob, bconv, 'send', { text: 'from v2' }, { type: 'text' });
  assert.equal(ack.cmd, 'ack');
  const [m] = await alice.waitFor('message', (x) => x.from === bobId);
  assert.equal(m.text, 'from v2');
  assert.ok(m instanceof LC.TextMessage, 'v2 typed text parses as a 4.x TextMessage');
  const history = await conv.queryMessages({ limit: 10 });
  assert.deepEqual(history.map((x) => x.from), [alice.id, bobId]);
});

test('2.4.0 creates with a 4.3.1 member; 4.3.1 adds/removes: both sides see membersjoined / membersleft', async (t) => {
  t.after(() => v2clients.splice(0).forEach((c) => c.close()));
  const aliceId = uid('v2alice');
  const alice = await openV2(aliceId);
  const bob = await ctx.open(uid('v4bob'));
  const conv = await alice.createConv({ members: [bob.id] });
  await alice.waitFor('membersjoined', (d) => d.cid === conv.id);
  const [inv] = await bob.waitFor('invited', ofConv(conv.id));
  assert.equal(inv.invitedBy, aliceId);
  const bconv = await bob.im.getConversation(conv.id);
  assert.deepEqual([...bconv.members].sort(), [aliceId, bob.id].sort());
  const carolId = uid('carol');
  const since = alice.mark();
  await bconv.add([carolId]);
  const mj = await alice.waitFor('membersjoined', (d) => d.cid === conv.id, { since });
  assert.deepEqual(mj.m, [carolId]);
  assert.equal(mj.initBy, bob.id);
  await bconv.remove([carolId]);
  const ml = await alice.waitFor('membersleft', (d) => d.cid === conv.id, { since });
  assert.deepEqual(ml.m, [carolId]);
  const bsince = bob.mark();
  await convCall(alice, conv, 'add', [uid('dave')]);
  const [bj] = await bob.waitFor('membersjoined', ofConv(conv.id), { since: bsince });
  assert.equal(bj.invitedBy, aliceId);
});

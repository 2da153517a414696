// Scenarios 4 (send, ack, fan-out, recipient range ack), 5 (receipts DELIVERED / read), 6 (transient);
// text, custom JSON, typed and binary bodies; mentions; fetchReceiptTimestamps. §4.4 R24–R26, §6.3–6.9.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serverFixture } from '../lib/fixture4.mjs';
import { LC, sleep, uid, rejects } from '../lib/sdk4.mjs';

const ctx = serverFixture();
const ofConv = (cid) => (p, c) => c && c.id === cid;

class CardMessage extends LC.TypedMessage {}
LC.messageType(17)(CardMessage);
LC.messageField(['title'])(CardMessage);

async function pair() {
  const alice = await ctx.open(uid('alice'));
  const bob = await ctx.open(uid('bob'));
  const conv = await alice.im.createConversation({ members: [bob.id] });
  await bob.waitFor('membersjoined', ofConv(conv.id));
  const bconv = await bob.im.getConversation(conv.id);
  return { alice, bob, conv, bconv };
}

test('scenario 4: direct → ack{uid,t} without code; recipient gets direct{id,timestamp,fromPeerId}; range ack fromts/tots', async () => {
  const { alice, bob, conv } = await pair();
  const sent = await conv.send(new LC.TextMessage('hi'));
  assert.equal(sent.status, LC.MessageStatus.SENT);
  const out = alice.frames('out').find((f) => f.cmd.cmd === 'direct');
  assert.equal(out.cmd.directMessage.msg, '{"_lctext":"hi","_lctype":-1}');
  assert.equal(out.cmd.directMessage.cid, conv.id);
  assert.ok(out.cmd.directMessage.dt, 'dt');
  const ack = alice.frames('in').find((f) => f.cmd.i === out.cmd.i);
  assert.equal(ack.cmd.cmd, 'ack');
  assert.equal(ack.cmd.ackMessage.code, undefined, 'no code on success');
  assert.equal(ack.cmd.ackMessage.uid, sent.id);
  assert.equal(ack.cmd.ackMessage.t, sent.timestamp.getTime());
  const [m, c] = await bob.waitFor('message', (x) => x.id === sent.id);
  assert.equal(c.id, conv.id);
  assert.equal(m.text, 'hi');
  assert.equal(m.from, alice.id);
  assert.equal(m.timestamp.getTime(), sent.timestamp.getTime());
  assert.ok(m instanceof LC.TextMessage);
  const push = bob.frames('in').find((f) => f.cmd.cmd === 'direct');
  assert.equal(push.cmd.i, undefined, 'pushes carry no i');
  assert.equal(push.cmd.peerId, bob.id);
  assert.equal(push.cmd.service, 2);
  assert.equal(push.cmd.directMessage.fromPeerId, alice.id);
  const rack = await bob.waitFrame('out', (x) => x.cmd === 'ack', { what: 'range ack', timeout: 3000 });
  assert.equal(rack.cmd.ackMessage.cid, conv.id);
  assert.equal(rack.cmd.ackMessage.fromts, sent.timestamp.getTime());
  assert.equal(rack.cmd.ackMessage.tots, sent.timestamp.getTime());
  assert.equal(rack.cmd.i, undefined);
  await sleep(500);
  assert.equal(bob.frames('in').filter((f) => f.cmd.cmd === 'error').length, 0, 'recipient ack needs no reply and gets no error');
  assert.equal(alice.frames('in').filter((f) => f.cmd.cmd === 'direct').length, 0, 'the sending socket does not get its own message');
});

test('scenario 4: a second device of the sender receives the message (fromPeerId = self: no ack, no unread)', async () => {
  const { alice, conv } = await pair();
  const alice2 = await ctx.open(alice.id);
  const sent = await conv.send(new LC.TextMessage('sync'));
  const [m, c] = await alice2.waitFor('message', (x) => x.id === sent.id);
  assert.equal(m.from, alice.id);
  assert.equal(c.unreadMessagesCount, 0);
  await sleep(1200);
  assert.equal(alice2.frames('out').filter((f) => f.cmd.cmd === 'ack').length, 0);
});

test('bodies: custom JSON object, typed message with custom field, binary (binaryMsg) arrive intact and in order', async () => {
  const { alice, bob, conv } = await pair();
  bob.rt.realtime.register(CardMessage);
  const json = await conv.send(new LC.Message({ custom: 'yes', n: [1, 2] }));
  const card = new CardMessage();
  card.title = 'T';
  card.setText('card text');
  card.setAttributes({ a: 1 });
  const typed = await conv.send(card);
  const bytes = new Uint8Array([0, 1, 2, 250, 255]).buffer;
  const bin = await conv.send(new LC.BinaryMessage(bytes));
  const got = await bob.waitForCount('message', 3);
  assert.deepEqual(got.map(([m]) => m.id), [json.id, typed.id, bin.id], 'delivery order = send order');
  assert.deepEqual(got[0][0].content, { custom: 'yes', n: [1, 2] });
  assert.ok(got[1][0] instanceof CardMessage);
  assert.equal(got[1][0].title, 'T');
  assert.equal(got[1][0].text, 'card text');
  assert.deepEqual(got[1][0].attributes, { a: 1 });
  assert.ok(got[2][0] instanceof LC.BinaryMessage);
  assert.deepEqual([...new Uint8Array(got[2][0].buffer)], [0, 1, 2, 250, 255]);
  const binOut = alice.frames('out').find((f) => f.cmd.directMessage && f.cmd.directMessage.binaryMsg);
  assert.equal(binOut.cmd.directMessage.msg, undefined);
  const binIn = bob.frames('in').find((f) => f.cmd.directMessage && f.cmd.directMessage.id === bin.id);
  assert.deepEqual([...binIn.cmd.directMessage.binaryMsg], [0, 1, 2, 250, 255], 'pushed as binaryMsg');
});

test('mentions: mentionPids / mentionAll reach the recipient; message.mentioned', async () => {
  const { bob, conv } = await pair();
  const m1 = new LC.TextMessage('@bob').setMentionList([bob.id]);
  await conv.send(m1);
  const m2 = new LC.TextMessage('@all').mentionAll();
  await conv.send(m2);
  const got = await bob.waitForCount('message', 2);
  assert.deepEqual(got[0][0].mentionList, [bob.id]);
  assert.equal(got[0][0].mentioned, true);
  assert.equal(got[1][0].mentionedAll, true);
  assert.equal(got[1][0].mentioned, true);
});

test('scenario 5: receipt:true ⇒ rcp after the recipient ack ⇒ DELIVERED, deliveredAt, lastDeliveredAt; read ⇒ rcp{read} ⇒ lastReadAt', async () => {
  const { alice, bob, conv, bconv } = await pair();
  const sent = await conv.send(new LC.TextMessage('receipt please'), { receipt: true });
  assert.equal(alice.frames('out').find((f) => f.cmd.cmd === 'direct').cmd.directMessage.r, true);
  await bob.waitFor('message', (x) => x.id === sent.id);
  const rcp = await alice.waitFrame('in', (x) => x.cmd === 'rcp' && !(x.rcpMessage && x.rcpMessage.read), { what: 'rcp', timeout: 5000 });
  assert.equal(rcp.cmd.rcpMessage.id, sent.id);
  assert.equal(rcp.cmd.rcpMessage.cid, conv.id);
  assert.ok(rcp.cmd.rcpMessage.t > 0);
  assert.equal(rcp.cmd.peerId, alice.id);
  await sleep(50);
  assert.equal(sent.status, LC.MessageStatus.DELIVERED);
  assert.equal(sent.deliveredAt.getTime(), rcp.cmd.rcpMessage.t);
  assert.equal(conv.lastDeliveredAt.getTime(), rcp.cmd.rcpMessage.t);
  await bconv.read();
  const read = await bob.waitFrame('out', (x) => x.cmd === 'read', { what: 'read', timeout: 3000 });
  assert.deepEqual(read.cmd.readMessage.convs.map((t) => t.cid), [conv.id]);
  assert.equal(read.cmd.readMessage.convs[0].mid, sent.id);
  const rr = await alice.waitFrame('in', (x) => x.cmd === 'rcp' && x.rcpMessage.read === true, { what: 'read receipt', timeout: 5000 });
  assert.equal(rr.cmd.rcpMessage.cid, conv.id);
  assert.ok(rr.cmd.rcpMessage.t >= sent.timestamp.getTime());
  await sleep(50);
  assert.equal(conv.lastReadAt.getTime(), rr.cmd.rcpMessage.t);
});

test('fetchReceiptTimestamps: conv/max_read answers maxAckTimestamp / maxReadTimestamp of the other member', async () => {
  const { bob, conv, bconv } = await pair();
  const sent = await conv.send(new LC.TextMessage('x'));
  await bob.waitFor('message', (x) => x.id === sent.id);
  await bob.waitFrame('out', (x) => x.cmd === 'ack', { timeout: 3000 });
  await bconv.read();
  await bob.waitFrame('out', (x) => x.cmd === 'read', { timeout: 3000 });
  await sleep(300);
  await conv.fetchReceiptTimestamps();
  assert.ok(conv.lastDeliveredAt instanceof Date && conv.lastDeliveredAt.getTime() >= sent.timestamp.getTime(), `lastDeliveredAt ${conv.lastDeliveredAt}`);
  assert.ok(conv.lastReadAt instanceof Date && conv.lastReadAt.getTime() >= sent.timestamp.getTime(), `lastReadAt ${conv.lastReadAt}`);
});

test('scenario 6: transient send is acked (same i); online recipient gets direct{transient}; no ack back; not in history; no unread', async () => {
  const { alice, bob, conv, bconv } = await pair();
  const before = bconv.unreadMessagesCount;
  const sent = await conv.send(new LC.TextMessage('ephemeral'), { transient: true });
  const out = alice.frames('out').find((f) => f.cmd.cmd === 'direct');
  assert.equal(out.cmd.directMessage.transient, true);
  const ack = alice.frames('in').find((f) => f.cmd.i === out.cmd.i);
  assert.equal(ack.cmd.cmd, 'ack');
  const [m] = await bob.waitFor('message', (x) => x.text === 'ephemeral');
  void m;
  const push = bob.frames('in').find((f) => f.cmd.cmd === 'direct');
  assert.equal(push.cmd.directMessage.transient, true);
  await sleep(1200);
  assert.equal(bob.frames('out').filter((f) => f.cmd.cmd === 'ack').length, 0, 'no ack for transient');
  const history = await conv.queryMessages({ limit: 10 });
  assert.ok(!history.some((x) => x.text === 'ephemeral' || (sent.id && x.id === sent.id)), 'transient not stored');
  assert.equal(conv.lastMessage, undefined, 'transient does not become lastMessage');
  void before;
});

test('sending to a conversation one is not a member of ⇒ refused with a code and reason (4401 family)', async () => {
  const { conv } = await pair();
  const carol = await ctx.open(uid('carol'));
  const cconv = await carol.im.getConversation(conv.id);
  const err = await rejects(cconv.send(new LC.TextMessage('intruder')), 'non-member send');
  assert.ok(err.code >= 4300 && err.code < 4500, `code ${err.code}`);
  assert.ok(err.message && err.message.length > 0, 'reason');
});

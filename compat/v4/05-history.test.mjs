// Scenario 9: history (logs) paging, iterator, inclusive/exclusive anchors, direction, lctype, limit 0.
// §4.4 R27, §6.14.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serverFixture } from '../lib/fixture4.mjs';
import { LC, uid } from '../lib/sdk4.mjs';

const ctx = serverFixture();
const { NEW_TO_OLD, OLD_TO_NEW } = LC.MessageQueryDirection;

class PingMessage extends LC.TypedMessage {}
LC.messageType(42)(PingMessage);

let aliceId;
let convId;
const sent = []; // 30 messages in send order (every 10th a PingMessage)

let seeded;
function seed() {
  seeded = seeded || doSeed();
  return seeded;
}
async function doSeed() {
  aliceId = uid('hist');
  const rt = ctx.rt();
  const alice = await rt.createClient(aliceId);
  const conv = await alice.im.createConversation({ members: [uid('other')] });
  convId = conv.id;
  for (let i = 0; i < 30; i++) {
    const m = i % 10 === 9 ? new PingMessage().setText(`m${i}`) : new LC.TextMessage(`m${i}`);
    sent.push(await conv.send(m));
  }
  await rt.close();
}

async function openConv() {
  await seed();
  const alice = await ctx.open(aliceId);
  alice.rt.realtime.register(PingMessage);
  return { alice, conv: await alice.im.getConversation(convId) };
}
const ids = (ms) => ms.map((m) => m.id);

test('scenario 9: logs{l:10} ⇒ the 10 newest, ascending; next page from the oldest (t+mid) ⇒ the 10 before, no overlap', async () => {
  const { alice, conv } = await openConv();
  const page1 = await conv.queryMessages({ limit: 10 });
  assert.deepEqual(ids(page1), ids(sent.slice(20)));
  const out = alice.frames('out').find((f) => f.cmd.cmd === 'logs');
  assert.equal(out.cmd.logsMessage.l, 10, 'limit travels as field l (2)');
  assert.equal(out.cmd.logsMessage.cid, convId);
  const page2 = await conv.queryMessages({ limit: 10, startTime: page1[0].timestamp, startMessageId: page1[0].id });
  assert.deepEqual(ids(page2), ids(sent.slice(10, 20)));
  assert.equal(page2[0].from, aliceId);
  assert.equal(page2[0].text, 'm10');
  assert.equal(page2[9].text, 'm19');
  assert.ok(page2[9] instanceof PingMessage, 'typed message parsed from history');
});

test('createMessagesIterator pages through everything, newest page first, each page ascending', async () => {
  const { conv } = await openConv();
  const it = conv.createMessagesIterator({ limit: 12 });
  const r1 = await it.next();
  const r2 = await it.next();
  const r3 = await it.next();
  assert.deepEqual(ids(r1.value), ids(sent.slice(18)));
  assert.deepEqual(ids(r2.value), ids(sent.slice(6, 18)));
  assert.deepEqual(ids(r3.value), ids(sent.slice(0, 6)));
  assert.equal(r1.done, false);
  assert.equal(r3.done, true);
});

test('anchors: start exclusive / startClosed, end exclusive / endClosed, both directions (§6.14 table)', async () => {
  const { conv } = await openConv();
  const [m1, m2, m3] = sent.slice(3, 6);
  const q = (o) => conv.queryMessages({ startTime: m3.timestamp, startMessageId: m3.id, endTime: m1.timestamp, endMessageId: m1.id, direction: NEW_TO_OLD, ...o });
  assert.deepEqual(ids(await q({})), [m2.id]);
  assert.deepEqual(ids(await q({ startClosed: true })), [m2.id, m3.id]);
  assert.deepEqual(ids(await q({ endClosed: true })), [m1.id, m2.id]);
  const n = (o) => conv.queryMessages({ startTime: m1.timestamp, startMessageId: m1.id, endTime: m3.timestamp, endMessageId: m3.id, direction: OLD_TO_NEW, ...o });
  assert.deepEqual(ids(await n({})), [m2.id]);
  assert.deepEqual(ids(await n({ startClosed: true })), [m1.id, m2.id]);
  assert.deepEqual(ids(await n({ endClosed: true })), [m2.id, m3.id]);
  // no direction given and endTime > startTime: the SDK itself picks NEW
  assert.deepEqual(ids(await conv.queryMessages({ startTime: m1.timestamp, startMessageId: m1.id, endTime: m3.timestamp, endMessageId: m3.id })), [m2.id]);
});

test('direction NEW from the start: oldest first; limit applies from the anchor', async () => {
  const { conv } = await openConv();
  const r = await conv.queryMessages({ direction: OLD_TO_NEW, startTime: sent[0].timestamp, startMessageId: sent[0].id, startClosed: true, limit: 5 });
  assert.deepEqual(ids(r), ids(sent.slice(0, 5)));
});

test('lctype filter, limit 0, t=1 and far-future anchors', async () => {
  const { conv } = await openConv();
  const pings = await conv.queryMessages({ type: 42, limit: 100 });
  assert.deepEqual(ids(pings), [sent[9].id, sent[19].id, sent[29].id]);
  assert.deepEqual(await conv.queryMessages({ type: 1000, limit: 10 }), []);
  assert.deepEqual(await conv.queryMessages({ limit: 0 }), []);
  assert.deepEqual(await conv.queryMessages({ startTime: 1, limit: 10 }), []);
  assert.deepEqual(await conv.queryMessages({ direction: OLD_TO_NEW, startTime: Date.now() + 86400_000, limit: 10 }), []);
  const dflt = await conv.queryMessages();
  assert.deepEqual(ids(dflt), ids(sent.slice(10)), 'default limit 20');
});

test('history of a conversation one is not a member of ⇒ refused (4312) with a reason', async () => {
  await seed();
  const stranger = await ctx.open(uid('stranger'));
  const conv = await stranger.im.getConversation(convId);
  let err;
  try { await conv.queryMessages({ limit: 5 }); } catch (e) { err = e; }
  assert.ok(err, 'refused');
  assert.equal(err.code, 4312);
  assert.ok(err.message);
});

// Offline delivery to 2.4.0 clients (push mode, protocol §6.8 — but nothing may be dropped at 20):
// everything a member missed arrives after it logs in, oldest first, exactly once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serverFixture } from '../lib/fixture.mjs';
import { convCall, sleep, uid } from '../lib/sdk.mjs';

const ctx = serverFixture();
const QUIET_MS = 1500;

test('a member offline while 45 messages are sent receives all 45 on login, in order, once', async () => {
  const alice = await ctx.open(uid('alice'));
  const bobId = uid('bob');
  const conv = await alice.createConv({ members: [bobId], name: 'offline' });
  const acks = [];
  for (let n = 0; n < 45; n++) acks.push(await convCall(alice, conv, 'send', { n }));
  conv.send({ transient: 'never replayed' }, { transient: true }, () => {});
  await sleep(200);

  const bob = await ctx.open(bobId);
  const got = await bob.waitForCount('message', 45, (m) => m.cid === conv.id, { timeout: 30_000 });
  assert.deepEqual(got.map((m) => m.msg.n), [...Array(45).keys()], 'all, oldest first');
  assert.deepEqual(got.map((m) => m.id), acks.map((a) => a.uid));
  assert.deepEqual(got.map((m) => m.timestamp), acks.map((a) => a.t));
  for (const m of got) assert.equal(m.fromPeerId, alice.id);
  await sleep(QUIET_MS);
  assert.equal(bob.seen('message').length, 45, 'no duplicates, no transient replay');

  // bob acked them (2.4.0 acks every non-transient direct): a second login gets nothing again
  bob.rt.close();
  await bob.closed();
  const bobAgain = await ctx.open(bobId);
  await sleep(QUIET_MS);
  assert.equal(bobAgain.seen('message').length, 0, 'acknowledged messages are not re-delivered');
});

test('offline backlog in several conversations: every conversation complete and in order', async () => {
  const alice = await ctx.open(uid('alice'));
  const carol = await ctx.open(uid('carol'));
  const bobId = uid('bob');
  const c1 = await alice.createConv({ members: [bobId], name: 'one' });
  const c2 = await carol.createConv({ members: [bobId, alice.id], name: 'two' });
  const sent = { [c1.id]: [], [c2.id]: [] };
  for (let n = 0; n < 22; n++) {
    sent[c1.id].push((await convCall(alice, c1, 'send', { c: 1, n })).uid);
    sent[c2.id].push((await convCall(carol, c2, 'send', { c: 2, n })).uid);
  }
  const bob = await ctx.open(bobId);
  const got = await bob.waitForCount('message', 44, () => true, { timeout: 30_000 });
  for (const cid of [c1.id, c2.id]) {
    assert.deepEqual(got.filter((m) => m.cid === cid).map((m) => m.id), sent[cid], `conversation ${cid}`);
  }
  await sleep(QUIET_MS);
  assert.equal(bob.seen('message').length, 44);
});

test('a member that was online, went offline, and came back gets only what it missed', async () => {
  const alice = await ctx.open(uid('alice'));
  const bobId = uid('bob');
  let bob = await ctx.open(bobId);
  const conv = await alice.createConv({ members: [bobId] });
  const live = await convCall(alice, conv, 'send', 'while online');
  await bob.waitFor('message', (m) => m.id === live.uid);
  await sleep(300); // let bob's ack reach the server
  bob.rt.close();
  await bob.closed();
  const missed = [];
  for (let n = 0; n < 25; n++) missed.push((await convCall(alice, conv, 'send', `missed ${n}`)).uid);
  bob = await ctx.open(bobId);
  const got = await bob.waitForCount('message', 25, () => true, { timeout: 30_000 });
  assert.deepEqual(got.map((m) => m.id), missed);
  await sleep(QUIET_MS);
  assert.equal(bob.seen('message').length, 25, 'the message acked while online is not replayed');
});

test('a client added to a conversation while offline gets the messages sent after it was added', async () => {
  const alice = await ctx.open(uid('alice'));
  const bobId = uid('bob');
  const conv = await alice.createConv({ name: 'late' });
  await convCall(alice, conv, 'send', 'before bob was added');
  await convCall(alice, conv, 'add', bobId);
  const after = [];
  for (let n = 0; n < 3; n++) after.push((await convCall(alice, conv, 'send', { n })).uid);
  const bob = await ctx.open(bobId);
  const got = await bob.waitForCount('message', 3, () => true, { timeout: 15_000 });
  assert.deepEqual(got.map((m) => m.id), after);
});

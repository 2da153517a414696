// conv.log(cb) / conv.log({limit, t, mid}, cb): ascending pages, cursor paging without overlap.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serverFixture } from '../lib/fixture.mjs';
import { convCall, uid } from '../lib/sdk.mjs';

const ctx = serverFixture();

function assertAscending(logs) {
  for (let n = 1; n < logs.length; n++) {
    assert.ok(logs[n].timestamp >= logs[n - 1].timestamp, `ascending at ${n}: ${logs[n - 1].timestamp} then ${logs[n].timestamp}`);
  }
}

async function seeded(count, { rapid = false } = {}) {
  const alice = await ctx.open(uid('alice'));
  const conv = await alice.createConv({ members: ['hist-peer'], name: 'history' });
  let acks = [];
  if (rapid) {
    // all sent at once: many share a millisecond, so paging must use (t, mid)
    acks = await Promise.all([...Array(count).keys()].map((n) => convCall(alice, conv, 'send', { n })));
  } else {
    for (let n = 0; n < count; n++) acks.push(await convCall(alice, conv, 'send', { n }));
  }
  return { alice, conv, acks };
}

test('log(cb): the 20 newest messages, oldest first, with msgId/timestamp/from and parsed data', async () => {
  const { alice, conv, acks } = await seeded(30);
  const logs = await convCall(alice, conv, 'log');
  assert.equal(logs.length, 20);
  assert.deepEqual(logs.map((l) => l.data.n), [...Array(20).keys()].map((n) => n + 10));
  assert.deepEqual(logs.map((l) => l.msgId), acks.slice(10).map((a) => a.uid));
  assert.deepEqual(logs.map((l) => l.timestamp), acks.slice(10).map((a) => a.t));
  assertAscending(logs);
  for (const l of logs) {
    assert.equal(l.from, alice.id);
    assert.equal(l.fromPeerId, alice.id);
    assert.deepEqual(l.msg, l.data);
  }
  const sent = alice.frames('out').map((f) => JSON.parse(f.data)).filter((f) => f.cmd === 'logs').at(-1);
  assert.deepEqual(Object.keys(sent).sort(), ['cid', 'cmd', 'i', 'limit', 'peerId']);
  assert.equal(sent.limit, 20);
});

test('log({limit}) then log({t, mid, limit}) pages backwards: each page ascending, no overlap, all covered', async () => {
  const { alice, conv, acks } = await seeded(30);
  const pages = [];
  let page = await convCall(alice, conv, 'log', { limit: 10 });
  while (page.length) {
    assertAscending(page);
    pages.unshift(page);
    assert.ok(pages.length <= 4, 'terminates');
    page = await convCall(alice, conv, 'log', { limit: 10, t: page[0].timestamp, mid: page[0].msgId });
  }
  assert.deepEqual(pages.map((p) => p.length), [10, 10, 10]);
  const all = pages.flat();
  assert.deepEqual(all.map((l) => l.msgId), acks.map((a) => a.uid));
  assert.equal(new Set(all.map((l) => l.msgId)).size, 30);
  assert.deepEqual(all.map((l) => l.data.n), [...Array(30).keys()]);
});

test('paging stays exact when many messages share a millisecond (t + mid cursor)', async () => {
  const { alice, conv, acks } = await seeded(24, { rapid: true });
  const order = [...acks].sort((a, b) => a.t - b.t); // server order is by (t, id); compare as sets per page
  const collected = [];
  let page = await convCall(alice, conv, 'log', { limit: 5 });
  let guard = 0;
  while (page.length && guard++ < 10) {
    assertAscending(page);
    collected.unshift(...page);
    page = await convCall(alice, conv, 'log', { limit: 5, t: page[0].timestamp, mid: page[0].msgId });
  }
  assert.equal(collected.length, 24, 'every message exactly once');
  assert.equal(new Set(collected.map((l) => l.msgId)).size, 24);
  assert.deepEqual(new Set(collected.map((l) => l.msgId)), new Set(order.map((a) => a.uid)));
  assertAscending(collected);
  // one full page equals the concatenation of the small ones
  const big = await convCall(alice, conv, 'log', { limit: 24 });
  assert.deepEqual(big.map((l) => l.msgId), collected.map((l) => l.msgId));
});

test('log({limit: 1}) returns just the newest message', async () => {
  const { alice, conv, acks } = await seeded(3);
  const logs = await convCall(alice, conv, 'log', { limit: 1 });
  assert.deepEqual(logs.map((l) => l.msgId), [acks[2].uid]);
});

test('log of a conversation without messages is an empty array', async () => {
  const alice = await ctx.open(uid('alice'));
  const conv = await alice.createConv({ name: 'empty' });
  assert.deepEqual(await convCall(alice, conv, 'log'), []);
});

test('another member reads the same history; string bodies stay strings', async () => {
  const alice = await ctx.open(uid('alice'));
  const bob = await ctx.open(uid('bob'));
  const conv = await alice.createConv({ members: [bob.id] });
  const a1 = await convCall(alice, conv, 'send', 'plain');
  const bconv = await bob.openConv(conv.id);
  const a2 = await convCall(bob, bconv, 'send', { from: 'bob' });
  const logs = await convCall(bob, bconv, 'log');
  assert.deepEqual(logs.map((l) => [l.msgId, l.from, l.msg]), [[a1.uid, alice.id, 'plain'], [a2.uid, bob.id, { from: 'bob' }]]);
});

test('log by a non-member is refused with error 4312 (CONVERSATION_LOG_REJECTED)', async () => {
  const { conv } = await seeded(2);
  const mallory = await ctx.open(uid('mallory'));
  const mconv = await mallory.openConv(conv.id);
  const err = await mallory.expectError((cb) => mconv.log(cb), { what: 'log' });
  assert.equal(err.cmd, 'error');
  assert.equal(err.code, 4312);
  assert.equal(err.reason, 'CONVERSATION_LOG_REJECTED');
});

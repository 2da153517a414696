// Cluster mode only (CONFAB_COMPAT_CLUSTER=1): proves from the servers' side that the balancer
// spreads 2.4.0 clients over the nodes — without it every other scenario could pass on one node —
// and that the basic round trips hold between clients on three different nodes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { clusterMode } from '../lib/cluster.mjs';
import { serverFixture } from '../lib/fixture.mjs';
import { convCall, sleep, uid } from '../lib/sdk.mjs';

const skip = clusterMode() ? false : 'single-node run (CONFAB_COMPAT_CLUSTER is not set)';
const skipRandom = skip || (process.env.CONFAB_COMPAT_BALANCE === 'random'
  ? 'random placement (CONFAB_COMPAT_BALANCE=random): one client per node is not promised' : false);
const ctx = serverFixture();

test('three 2.4.0 clients land on three nodes and talk across them', { skip: skipRandom }, async () => {
  const before = await ctx.server.nodeSessions();
  const alice = await ctx.open(uid('alice'));
  const bob = await ctx.open(uid('bob'));
  const carol = await ctx.open(uid('carol'));
  const after = await ctx.server.nodeSessions();
  const added = after.map((n, i) => n - before[i]);
  assert.deepEqual(added, [1, 1, 1], `one new session on each node (before ${before}, after ${after})`);

  const conv = await alice.createConv({ members: [bob.id, carol.id], name: 'across nodes' });
  await bob.waitFor('membersjoined', (d) => d.cid === conv.id);
  await carol.waitFor('membersjoined', (d) => d.cid === conv.id);
  const ack = await convCall(alice, conv, 'send', { from: 'alice' });
  for (const c of [bob, carol]) {
    const m = await c.waitFor('message', (d) => d.id === ack.uid);
    assert.deepEqual(m.msg, { from: 'alice' });
  }
  const cconv = await carol.openConv(conv.id);
  const reply = await convCall(carol, cconv, 'send', 'from carol');
  for (const c of [alice, bob]) await c.waitFor('message', (d) => d.id === reply.uid);
  // Membership changes made on one node reach members on the others.
  await convCall(bob, await bob.openConv(conv.id), 'remove', carol.id);
  await alice.waitFor('membersleft', (d) => d.cid === conv.id && d.m.includes(carol.id));
  await carol.waitFor('kicked', (d) => d.cid === conv.id);
});

test('a node dies: its 2.4.0 client reconnects through the router to another node and gets what it missed', { skip, timeout: 120_000 }, async () => {
  // Opens a client and tells which node its session landed on (each node's own session gauge).
  const located = async (id) => {
    const before = await ctx.server.nodeSessions();
    const c = await ctx.open(id);
    const grew = (await ctx.server.nodeSessions()).map((n, i) => n - before[i]);
    assert.equal(grew.filter((d) => d !== 0).length, 1, `one node got ${id}'s session: ${grew}`);
    return { c, node: grew.findIndex((d) => d === 1) };
  };
  // The previous test's clients were closed without waiting: let their sessions end first.
  await ctx.server.waitForSessions(0);
  const { c: alice, node: aliceNode } = await located(uid('alice'));
  let bob;
  let bobNode;
  for (let attempt = 0; attempt < 10 && (bob === undefined || bobNode === aliceNode); attempt++) {
    if (bob) {
      bob.close();
      await ctx.server.waitForSessions(1);
    }
    ({ c: bob, node: bobNode } = await located(uid('bob')));
  }
  assert.notEqual(bobNode, aliceNode, 'bob on another node than alice');
  // The node going away surfaces as a socket error in 2.4.0 (rethrown from its listener): expected.
  ctx.allowSocketErrors = true;
  const conv = await alice.createConv({ members: [bob.id] });
  const first = await convCall(alice, conv, 'send', 'before');
  await bob.waitFor('message', (d) => d.id === first.uid);
  // Acknowledged positions are committed in batches (within 100 ms): an ack in flight when a node
  // is killed may be lost (the message then comes again, at least once). Let it land first.
  const acked = () => bob.frames('out').some((f) => f.data.includes('"ack"') && f.data.includes(first.uid));
  while (!acked()) await sleep(20);
  await sleep(500);

  const since = bob.mark();
  await ctx.server.killNode(bobNode);
  const missed = [];
  for (let i = 0; i < 3; i++) missed.push(await convCall(alice, conv, 'send', { away: i }));
  // 2.4.0 waits 5 s, asks the router again (through the balancer) and opens a new socket.
  await bob.waitFor('reuse', () => true, { since, timeout: 30_000 });
  await bob.waitFor('open', () => true, { since, timeout: 30_000 });
  const got = await bob.waitForCount('message', 3, (d) => d.cid === conv.id, { since, timeout: 30_000 });
  assert.deepEqual(got.map((d) => d.id), missed.map((m) => m.uid), 'each missed message once, in order, and not the acked one');
  const live = await convCall(alice, conv, 'send', 'after');
  await bob.waitFor('message', (d) => d.id === live.uid, { since });
  await ctx.server.startNode(bobNode);
});

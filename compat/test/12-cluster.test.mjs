// Cluster mode only (CONFAB_COMPAT_CLUSTER=1): proves from the servers' side that the balancer
// spreads 2.4.0 clients over the nodes — without it every other scenario could pass on one node —
// and that the basic round trips hold between clients on three different nodes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { clusterMode } from '../lib/cluster.mjs';
import { serverFixture } from '../lib/fixture.mjs';
import { convCall, uid } from '../lib/sdk.mjs';

const skip = !clusterMode() ? 'single-node run (CONFAB_COMPAT_CLUSTER is not set)'
  : process.env.CONFAB_COMPAT_BALANCE === 'random' ? 'random placement (CONFAB_COMPAT_BALANCE=random): one per node is not promised'
  : false;
const ctx = serverFixture();

test('three 2.4.0 clients land on three nodes and talk across them', { skip }, async () => {
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

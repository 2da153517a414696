// Scenario 11: add/remove/join/quit matrix with invited/kicked/membersjoined/membersleft (§6.16),
// allowedPids/failedPids (R13/R14, configBitmap bit 5), partial failure.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serverFixture } from '../lib/fixture4.mjs';
import { sleep, uid } from '../lib/sdk4.mjs';

const ctx = serverFixture();
const QUIET_MS = 700;
const ofConv = (cid) => (p, c) => c && c.id === cid;
const sorted = (a) => [...a].sort();

async function setup(n) {
  const names = ['alice', 'bob', 'carol', 'dave'].slice(0, n);
  const cs = [];
  for (const name of names) cs.push(await ctx.open(uid(name)));
  return cs;
}

async function created(conv, ...clients) {
  for (const c of clients) await c.waitFor('membersjoined', ofConv(conv.id));
}

test('add: reply allowedPids + empty failedPids; actor membersjoined; added invited + membersjoined; others membersjoined', async () => {
  const [alice, bob, carol] = await setup(3);
  const conv = await alice.im.createConversation({ members: [bob.id] });
  await created(conv, alice, bob);
  const [ma, mb, mc] = [alice.mark(), bob.mark(), carol.mark()];
  const res = await conv.add([carol.id]);
  assert.deepEqual(res.successfulClientIds, [carol.id]);
  assert.deepEqual(res.failures, []);
  const reply = alice.frames('in').filter((f) => f.cmd.op === 'added' || (f.cmd.convMessage && f.cmd.convMessage.allowedPids)).at(-1);
  assert.deepEqual(reply.cmd.convMessage.allowedPids, [carol.id]);
  const [inv] = await carol.waitFor('invited', ofConv(conv.id), { since: mc });
  assert.equal(inv.invitedBy, alice.id);
  for (const [c, since] of [[alice, ma], [bob, mb], [carol, mc]]) {
    const [mj] = await c.waitFor('membersjoined', ofConv(conv.id), { since });
    assert.deepEqual(mj.members, [carol.id]);
    assert.equal(mj.invitedBy, alice.id);
  }
  await sleep(QUIET_MS);
  assert.equal(alice.seen('invited', ma).length, 0, 'actor not invited');
  assert.equal(bob.seen('invited', mb).length, 0, 'others not invited');
  assert.deepEqual(sorted(conv.members), sorted([alice.id, bob.id, carol.id]));
  assert.equal(await conv.count(), 3);
});

test('join: joiner gets invited{invitedBy: self} + membersjoined; others membersjoined{initBy: joiner}', async () => {
  const [alice, bob] = await setup(2);
  const conv = await alice.im.createConversation({ members: [] });
  await created(conv, alice);
  const bconv = await bob.im.getConversation(conv.id);
  const [ma, mb] = [alice.mark(), bob.mark()];
  await bconv.join();
  const [inv] = await bob.waitFor('invited', ofConv(conv.id), { since: mb });
  assert.equal(inv.invitedBy, bob.id);
  const [mj] = await bob.waitFor('membersjoined', ofConv(conv.id), { since: mb });
  assert.deepEqual(mj.members, [bob.id]);
  const [amj] = await alice.waitFor('membersjoined', ofConv(conv.id), { since: ma });
  assert.deepEqual(amj.members, [bob.id]);
  assert.equal(amj.invitedBy, bob.id);
  assert.ok(bconv.members.includes(bob.id));
});

test('remove: actor membersleft; removed gets kicked only; others membersleft', async () => {
  const [alice, bob, carol] = await setup(3);
  const conv = await alice.im.createConversation({ members: [bob.id, carol.id] });
  await created(conv, alice, bob, carol);
  const [ma, mb, mc] = [alice.mark(), bob.mark(), carol.mark()];
  const res = await conv.remove(carol.id);
  assert.deepEqual(res.successfulClientIds, [carol.id]);
  assert.deepEqual(res.failures, []);
  const [k] = await carol.waitFor('kicked', ofConv(conv.id), { since: mc });
  assert.equal(k.kickedBy, alice.id);
  for (const [c, since] of [[alice, ma], [bob, mb]]) {
    const [ml] = await c.waitFor('membersleft', ofConv(conv.id), { since });
    assert.deepEqual(ml.members, [carol.id]);
    assert.equal(ml.kickedBy, alice.id);
  }
  await sleep(QUIET_MS);
  assert.equal(carol.seen('membersleft', mc).length, 0, 'the removed client gets only kicked');
  assert.equal(alice.seen('kicked', ma).length + bob.seen('kicked', mb).length, 0);
  assert.deepEqual(sorted(conv.members), sorted([alice.id, bob.id]));
});

test('quit: quitter gets kicked{kickedBy: self} only; others membersleft{initBy: quitter}', async () => {
  const [alice, bob] = await setup(2);
  const conv = await alice.im.createConversation({ members: [bob.id] });
  await created(conv, alice, bob);
  const bconv = await bob.im.getConversation(conv.id);
  const [ma, mb] = [alice.mark(), bob.mark()];
  await bconv.quit();
  const [k] = await bob.waitFor('kicked', ofConv(conv.id), { since: mb });
  assert.equal(k.kickedBy, bob.id);
  const [ml] = await alice.waitFor('membersleft', ofConv(conv.id), { since: ma });
  assert.deepEqual(ml.members, [bob.id]);
  assert.equal(ml.kickedBy, bob.id);
  await sleep(QUIET_MS);
  assert.equal(bob.seen('membersleft', mb).length, 0);
  assert.ok(!bconv.members.includes(bob.id));
});

test('removing [owner, x] as owner: x removed, owner refused (failedPids with code, reason, pids)', async () => {
  const [alice, bob] = await setup(2);
  const conv = await alice.im.createConversation({ members: [bob.id] });
  await created(conv, alice, bob);
  const res = await conv.remove([alice.id, bob.id]);
  assert.deepEqual(res.successfulClientIds, [bob.id]);
  assert.equal(res.failures.length, 1);
  assert.deepEqual(res.failures[0].clientIds, [alice.id]);
  assert.ok(res.failures[0].code > 0, 'failure has a code');
  assert.equal(res.failures[0].message, 'CONVERSATION_NEED_OWNER');
});

test('non-member cannot add others (error frame with code + reason), and membership is unchanged', async () => {
  const [alice, bob, carol] = await setup(3);
  const conv = await alice.im.createConversation({ members: [bob.id] });
  await created(conv, alice, bob);
  const cconv = await carol.im.getConversation(conv.id);
  let outcome;
  try {
    outcome = await cconv.add([uid('z')]);
  } catch (e) {
    outcome = e;
  }
  if (outcome instanceof Error) {
    assert.ok(outcome.code >= 4300, `conversation error code, got ${outcome.code}`);
  } else {
    assert.deepEqual(outcome.successfulClientIds, [], 'nothing allowed');
    assert.ok(outcome.failures.length === 1 && outcome.failures[0].code > 0);
  }
  assert.equal(await conv.count(), 2);
});

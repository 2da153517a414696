// add(id|list), remove(id|list), join, leave, list, count and the membership events
// invited / kicked / membersjoined / membersleft (+ legacy join / left), protocol §6.16.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serverFixture } from '../lib/fixture.mjs';
import { convCall, sleep, uid } from '../lib/sdk.mjs';

const ctx = serverFixture();
const QUIET_MS = 600; // how long we wait to be sure an event does NOT arrive

const sorted = (a) => [...a].sort();
const ofConv = (cid) => (d) => d.cid === cid;

/** Waits until every given client got the creation membersjoined push of `conv`. */
async function created(conv, ...clients) {
  for (const c of clients) await c.waitFor('membersjoined', ofConv(conv.id));
}

async function setup(n = 4) {
  const names = ['alice', 'bob', 'carol', 'dave', 'erin'].slice(0, n);
  const cs = {};
  for (const name of names) cs[name] = await ctx.open(uid(name));
  return cs;
}

test('creation pushes: creator and members get invited + membersjoined (m = all, initBy = creator)', async () => {
  const { alice, bob, carol } = await setup(3);
  const marks = [alice.mark(), bob.mark(), carol.mark()];
  const conv = await alice.createConv({ members: [bob.id] });
  for (const [c, since] of [[alice, marks[0]], [bob, marks[1]]]) {
    const inv = await c.waitFor('invited', ofConv(conv.id), { since });
    assert.equal(inv.cmd, 'conv');
    assert.equal(inv.op, 'joined');
    assert.equal(inv.initBy, alice.id);
    assert.equal(inv.peerId, c.id, 'peerId is the recipient');
    const mj = await c.waitFor('membersjoined', ofConv(conv.id), { since });
    assert.equal(mj.op, 'members-joined');
    assert.deepEqual(sorted(mj.m), sorted([alice.id, bob.id]));
    assert.equal(mj.initBy, alice.id);
  }
  // legacy "join": emitted for members-joined always, for joined only when peerId !== initBy
  await sleep(QUIET_MS);
  assert.equal(alice.seen('join', marks[0]).filter(ofConv(conv.id)).length, 1);
  assert.equal(bob.seen('join', marks[1]).filter(ofConv(conv.id)).length, 2);
  // non-members hear nothing
  assert.equal(carol.events.slice(marks[2]).filter((e) => e.data && e.data.cid === conv.id).length, 0);
});

test('add(id): actor gets membersjoined; added client gets invited + membersjoined; others membersjoined', async () => {
  const { alice, bob, carol } = await setup(3);
  const conv = await alice.createConv({ members: [bob.id] });
  await created(conv, alice, bob);
  const [ma, mb, mc] = [alice.mark(), bob.mark(), carol.mark()];
  const reply = await convCall(alice, conv, 'add', carol.id);
  assert.equal(reply.cmd, 'conv');
  assert.equal(reply.op, 'added');
  const inv = await carol.waitFor('invited', ofConv(conv.id), { since: mc });
  assert.equal(inv.initBy, alice.id);
  assert.equal(inv.peerId, carol.id);
  for (const [c, since] of [[alice, ma], [bob, mb], [carol, mc]]) {
    const mj = await c.waitFor('membersjoined', ofConv(conv.id), { since });
    assert.deepEqual(mj.m, [carol.id], `${c.id} membersjoined.m`);
    assert.equal(mj.initBy, alice.id);
  }
  await sleep(QUIET_MS);
  assert.equal(alice.seen('invited', ma).length, 0, 'actor is not invited');
  assert.equal(bob.seen('invited', mb).length, 0, 'other member is not invited');
  assert.equal(carol.seen('membersjoined', mc).length, 1);
  assert.deepEqual(sorted(await convCall(alice, conv, 'list')), sorted([alice.id, bob.id, carol.id]));
  assert.equal(await convCall(bob, conv, 'count'), 3);
});

test('add(list): several clients at once; each one invited; membersjoined lists all of them', async () => {
  const { alice, bob, carol, dave } = await setup(4);
  const conv = await alice.createConv({ members: [] });
  await created(conv, alice);
  const [mb, mc, md] = [bob.mark(), carol.mark(), dave.mark()];
  await convCall(alice, conv, 'add', [bob.id, carol.id, dave.id]);
  for (const [c, since] of [[bob, mb], [carol, mc], [dave, md]]) {
    const inv = await c.waitFor('invited', ofConv(conv.id), { since });
    assert.equal(inv.initBy, alice.id);
    const mj = await c.waitFor('membersjoined', ofConv(conv.id), { since });
    assert.deepEqual(sorted(mj.m), sorted([bob.id, carol.id, dave.id]));
  }
  assert.deepEqual(sorted(await convCall(dave, conv, 'list')), sorted([alice.id, bob.id, carol.id, dave.id]));
  assert.equal(await convCall(alice, conv, 'count'), 4);
});

test('remove(id): removed client gets kicked only; actor and others get membersleft', async () => {
  const { alice, bob, carol } = await setup(3);
  const conv = await alice.createConv({ members: [bob.id, carol.id] });
  await created(conv, alice, bob, carol);
  const [ma, mb, mc] = [alice.mark(), bob.mark(), carol.mark()];
  const reply = await convCall(alice, conv, 'remove', carol.id);
  assert.equal(reply.op, 'removed');
  const kicked = await carol.waitFor('kicked', ofConv(conv.id), { since: mc });
  assert.equal(kicked.cmd, 'conv');
  assert.equal(kicked.op, 'left');
  assert.equal(kicked.initBy, alice.id);
  assert.equal(carol.seen('left', mc).filter(ofConv(conv.id)).length >= 1, true, 'legacy left');
  for (const [c, since] of [[alice, ma], [bob, mb]]) {
    const ml = await c.waitFor('membersleft', ofConv(conv.id), { since });
    assert.equal(ml.op, 'members-left');
    assert.deepEqual(ml.m, [carol.id]);
    assert.equal(ml.initBy, alice.id);
  }
  await sleep(QUIET_MS);
  assert.equal(carol.seen('membersleft', mc).length, 0, 'removed client gets no membersleft');
  assert.equal(alice.seen('kicked', ma).length, 0);
  assert.deepEqual(sorted(await convCall(alice, conv, 'list')), sorted([alice.id, bob.id]));
  assert.equal(await convCall(alice, conv, 'count'), 2);
  // the removed client no longer receives messages
  const ack = await convCall(alice, conv, 'send', 'after-kick');
  await bob.waitFor('message', (m) => m.id === ack.uid);
  await sleep(QUIET_MS);
  assert.equal(carol.seen('message', mc).length, 0);
});

test('remove(list): several clients at once', async () => {
  const { alice, bob, carol, dave } = await setup(4);
  const conv = await alice.createConv({ members: [bob.id, carol.id, dave.id] });
  await created(conv, alice, bob, carol, dave);
  const [ma, mb, mc] = [alice.mark(), bob.mark(), carol.mark()];
  await convCall(alice, conv, 'remove', [carol.id, dave.id]);
  await carol.waitFor('kicked', ofConv(conv.id), { since: mc });
  for (const [c, since] of [[alice, ma], [bob, mb]]) {
    const ml = await c.waitFor('membersleft', ofConv(conv.id), { since });
    assert.deepEqual(sorted(ml.m), sorted([carol.id, dave.id]));
    assert.equal(ml.initBy, alice.id);
  }
  assert.deepEqual(sorted(await convCall(bob, conv, 'list')), sorted([alice.id, bob.id]));
});

test('join(): the joiner gets invited (initBy self) + membersjoined; others membersjoined', async () => {
  const { alice, bob, carol } = await setup(3);
  const conv = await alice.createConv({ members: [bob.id], name: 'joinable' });
  await created(conv, alice, bob);
  const cconv = await carol.openConv(conv.id);
  const [ma, mb, mc] = [alice.mark(), bob.mark(), carol.mark()];
  const reply = await convCall(carol, cconv, 'join');
  assert.equal(reply.op, 'added');
  const inv = await carol.waitFor('invited', ofConv(conv.id), { since: mc });
  assert.equal(inv.initBy, carol.id);
  const mine = await carol.waitFor('membersjoined', ofConv(conv.id), { since: mc });
  assert.deepEqual(mine.m, [carol.id]);
  assert.equal(mine.initBy, carol.id);
  for (const [c, since] of [[alice, ma], [bob, mb]]) {
    const mj = await c.waitFor('membersjoined', ofConv(conv.id), { since });
    assert.deepEqual(mj.m, [carol.id]);
    assert.equal(mj.initBy, carol.id);
  }
  await sleep(QUIET_MS);
  // legacy "join" for the joiner: only from members-joined (joined has peerId === initBy)
  assert.equal(carol.seen('join', mc).filter(ofConv(conv.id)).length, 1);
  assert.deepEqual(sorted(await convCall(carol, cconv, 'list')), sorted([alice.id, bob.id, carol.id]));
  // and now receives messages
  const ack = await convCall(alice, conv, 'send', { after: 'join' });
  const got = await carol.waitFor('message', (m) => m.id === ack.uid);
  assert.deepEqual(got.msg, { after: 'join' });
});

test('leave(): the leaver gets kicked (initBy self) only; others get membersleft', async () => {
  const { alice, bob, carol } = await setup(3);
  const conv = await alice.createConv({ members: [bob.id, carol.id] });
  await created(conv, alice, bob, carol);
  const cconv = await carol.openConv(conv.id);
  const [ma, mb, mc] = [alice.mark(), bob.mark(), carol.mark()];
  const reply = await convCall(carol, cconv, 'leave');
  assert.equal(reply.op, 'removed');
  const k = await carol.waitFor('kicked', ofConv(conv.id), { since: mc });
  assert.equal(k.initBy, carol.id);
  for (const [c, since] of [[alice, ma], [bob, mb]]) {
    const ml = await c.waitFor('membersleft', ofConv(conv.id), { since });
    assert.deepEqual(ml.m, [carol.id]);
    assert.equal(ml.initBy, carol.id);
  }
  await sleep(QUIET_MS);
  assert.equal(carol.seen('membersleft', mc).length, 0);
  assert.deepEqual(sorted(await convCall(alice, conv, 'list')), sorted([alice.id, bob.id]));
});

test("the creator's leave(): done as 2.4.0 reports it; no more messages, not in list(); others cannot remove it", async () => {
  const { alice, bob, carol } = await setup(3);
  const conv = await alice.createConv({ members: [bob.id, carol.id] });
  await created(conv, alice, bob, carol);
  const bconv = await bob.openConv(conv.id);
  // 2.4.0 ignores failedPids: removing the creator is refused as an error it does see
  const err = await bob.expectError((cb) => bconv.remove(alice.id, cb), { what: 'remove(creator)' });
  assert.equal(err.code, 4326);
  assert.equal(err.reason, 'CONVERSATION_NEED_OWNER');
  assert.equal(await convCall(bob, bconv, 'count'), 3, 'nobody was removed');
  const [ma, mb] = [alice.mark(), bob.mark()];
  const reply = await convCall(alice, conv, 'leave');
  assert.equal(reply.op, 'removed');
  assert.deepEqual(reply.allowedPids, [alice.id]);
  assert.deepEqual(reply.failedPids, []);
  assert.equal((await alice.waitFor('kicked', ofConv(conv.id), { since: ma })).initBy, alice.id);
  assert.deepEqual((await bob.waitFor('membersleft', ofConv(conv.id), { since: mb })).m, [alice.id]);
  assert.deepEqual(sorted(await convCall(bob, bconv, 'list')), sorted([bob.id, carol.id]));
  const ack = await convCall(bob, bconv, 'send', 'after the creator left');
  await carol.waitFor('message', (m) => m.id === ack.uid);
  await sleep(QUIET_MS);
  assert.equal(alice.seen('message', ma).length, 0, 'the creator left: no more messages');
  assert.equal(alice.seen('error', ma).length, 0);
});

test('add/remove of offline clients: list() and count() reflect the stored membership', async () => {
  const { alice } = await setup(1);
  const conv = await alice.createConv({ members: ['ghost-1'] });
  await convCall(alice, conv, 'add', ['ghost-2', 'ghost-3']);
  await convCall(alice, conv, 'remove', 'ghost-1');
  assert.deepEqual(sorted(await convCall(alice, conv, 'list')), sorted([alice.id, 'ghost-2', 'ghost-3']));
  assert.equal(await convCall(alice, conv, 'count'), 3);
});

test('non-member sending to a conversation gets error 4401 and members receive nothing', async () => {
  const { alice, bob } = await setup(2);
  const conv = await alice.createConv({ members: [] });
  const bconv = await bob.openConv(conv.id);
  const since = alice.mark();
  const err = await bob.expectError((cb) => bconv.send({ nope: 1 }, cb), { what: 'send' });
  assert.equal(err.cmd, 'error');
  assert.equal(err.code, 4401);
  assert.equal(err.reason, 'INVALID_MESSAGING_TARGET');
  await sleep(QUIET_MS);
  assert.equal(alice.seen('message', since).length, 0);
});

// RealtimeObject.query(cb) / query(options, cb) (where, sort, limit, skip, compact, withLastMessages,
// roomIds/convIds, member arrays) and ping(list) / ping(string).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serverFixture } from '../lib/fixture.mjs';
import { convCall, sleep, uid } from '../lib/sdk.mjs';

const ctx = serverFixture();
const ids = (rs) => rs.map((r) => r.objectId);

test('query(cb): conversations containing me, most recent message first (-lm), at most 10', async () => {
  const alice = await ctx.open(uid('alice'));
  const other = await ctx.open(uid('other'));
  await other.createConv({ members: ['x'], name: 'not-mine' });
  const convs = [];
  for (let n = 0; n < 12; n++) convs.push(await alice.createConv({ members: [`peer-${n}`], name: `q-${n}` }));
  // messages in a known order: the last one sent is the most recent
  const order = [3, 0, 7, 5, 11, 1, 2, 4, 6, 8, 9, 10];
  for (const n of order) {
    await convCall(alice, convs[n], 'send', { n });
    await sleep(3); // distinct lm
  }
  const res = await alice.query();
  assert.equal(res.length, 10, 'default limit is 10');
  const expected = [...order].reverse().slice(0, 10).map((n) => convs[n].id);
  assert.deepEqual(ids(res), expected);
  for (const r of res) assert.ok(r.m.includes(alice.id));
  // what 2.4.0 sent for it
  const q = alice.frames('out').map((f) => JSON.parse(f.data)).filter((f) => f.op === 'query').at(-1);
  assert.deepEqual(q.where, { m: alice.id });
  assert.equal(q.sort, '-lm');
  assert.equal(q.limit, 10);
  assert.equal(q.skip, 0);
  assert.equal(q.flag, 0);
});

test('query({where, sort, limit, skip}): filter on attr.*, sort by createdAt both ways, paging', async () => {
  const alice = await ctx.open(uid('alice'));
  const topic = uid('topic');
  const made = [];
  for (let n = 0; n < 5; n++) {
    made.push(await alice.createConv({ name: `${topic}-${n}`, attr: { topic, n } }));
    await sleep(5); // distinct createdAt
  }
  await alice.createConv({ name: 'unrelated', attr: { topic: 'other' } });
  const asc = await alice.query({ where: { 'attr.topic': topic }, sort: 'createdAt', limit: 100 });
  assert.deepEqual(ids(asc), made.map((c) => c.id));
  const desc = await alice.query({ where: { 'attr.topic': topic }, sort: '-createdAt', limit: 100 });
  assert.deepEqual(ids(desc), made.map((c) => c.id).reverse());
  const p1 = await alice.query({ where: { 'attr.topic': topic }, sort: 'createdAt', limit: 2, skip: 0 });
  const p2 = await alice.query({ where: { 'attr.topic': topic }, sort: 'createdAt', limit: 2, skip: 2 });
  const p3 = await alice.query({ where: { 'attr.topic': topic }, sort: 'createdAt', limit: 2, skip: 4 });
  assert.deepEqual([...ids(p1), ...ids(p2), ...ids(p3)], made.map((c) => c.id));
  assert.equal(p3.length, 1);
  // comparison operator on a nested attribute
  const big = await alice.query({ where: { 'attr.topic': topic, 'attr.n': { $gte: 3 } }, sort: 'createdAt' });
  assert.deepEqual(ids(big), [made[3].id, made[4].id]);
  // $regex on name
  const rx = await alice.query({ where: { name: { $regex: `^${topic}-[12]$` } }, sort: 'createdAt' });
  assert.deepEqual(ids(rx), [made[1].id, made[2].id]);
});

test('query({where:{m:[a,b]}}): member arrays become $all (conversations containing both)', async () => {
  const alice = await ctx.open(uid('alice'));
  const b = uid('b'); const c = uid('c');
  const ab = await alice.createConv({ members: [b] });
  const abc = await alice.createConv({ members: [b, c] });
  await alice.createConv({ members: [c] });
  const res = await alice.query({ where: { m: [alice.id, b] }, sort: 'createdAt' });
  assert.deepEqual(ids(res), [ab.id, abc.id]);
  const sent = alice.frames('out').map((f) => JSON.parse(f.data)).filter((f) => f.op === 'query').at(-1);
  assert.deepEqual(sent.where, { m: { $all: [alice.id, b] } });
  // a single id is array-contains
  const withC = await alice.query({ where: { m: c }, sort: 'createdAt' });
  assert.equal(withC.length, 2);
  assert.ok(withC.every((r) => r.m.includes(c)));
});

test('query({where:{roomIds|convIds:[…]}}): batch lookup by id ($in)', async () => {
  const alice = await ctx.open(uid('alice'));
  const a = await alice.createConv({ name: 'a' });
  const b = await alice.createConv({ name: 'b' });
  await alice.createConv({ name: 'c' });
  const r1 = await alice.query({ where: { roomIds: [a.id, b.id] }, limit: 100 });
  assert.deepEqual(ids(r1).sort(), [a.id, b.id].sort());
  const r2 = await alice.query({ where: { convIds: [b.id] } });
  assert.deepEqual(ids(r2), [b.id]);
  const sent = alice.frames('out').map((f) => JSON.parse(f.data)).filter((f) => f.op === 'query').at(-1);
  assert.deepEqual(sent.where, { objectId: { $in: [b.id] } });
});

test('query({compact:true}): results without the member list', async () => {
  const alice = await ctx.open(uid('alice'));
  const conv = await alice.createConv({ members: ['zz'], name: 'compact' });
  const full = await alice.query({ where: { objectId: conv.id } });
  assert.ok(Array.isArray(full[0].m));
  const compact = await alice.query({ where: { objectId: conv.id }, compact: true });
  assert.equal(compact.length, 1);
  assert.equal(compact[0].objectId, conv.id);
  assert.equal(compact[0].name, 'compact');
  assert.ok(!('m' in compact[0]), 'no m');
});

test('query({withLastMessages:true}): msg, msg_from, msg_mid, msg_timestamp of the last message', async () => {
  const alice = await ctx.open(uid('alice'));
  const conv = await alice.createConv({ members: ['lm-peer'], name: 'with-last' });
  await convCall(alice, conv, 'send', { first: 1 });
  const ack = await convCall(alice, conv, 'send', { second: 2 });
  const [plain] = await alice.query({ where: { objectId: conv.id } });
  assert.ok(!('msg' in plain), 'no msg without the flag');
  const [r] = await alice.query({ where: { objectId: conv.id }, withLastMessages: true });
  assert.deepEqual(JSON.parse(r.msg), { second: 2 });
  assert.equal(r.msg_from, alice.id);
  assert.equal(r.msg_mid, ack.uid);
  assert.equal(r.msg_timestamp, ack.t);
  const both = await alice.query({ where: { objectId: conv.id }, withLastMessages: true, compact: true });
  assert.ok(!('m' in both[0]));
  assert.ok('msg' in both[0]);
  const sent = alice.frames('out').map((f) => JSON.parse(f.data)).filter((f) => f.op === 'query').at(-1);
  assert.equal(sent.flag, 3);
});

test('query: a conversation without messages sorts after those with messages under -lm', async () => {
  const alice = await ctx.open(uid('alice'));
  const withMsg = await alice.createConv({ name: 'has-message' });
  await convCall(alice, withMsg, 'send', 'hi');
  await sleep(5);
  const empty = await alice.createConv({ name: 'no-message-yet' });
  const res = await alice.query({ withLastMessages: true });
  assert.deepEqual(ids(res), [withMsg.id, empty.id]);
  assert.ok('msg' in res[0]);
});

test('ping(list) and ping(string): which of the given clients are online', async () => {
  const alice = await ctx.open(uid('alice'));
  const bob = await ctx.open(uid('bob'));
  const offline = uid('offline');
  const online = await alice.ping([alice.id, bob.id, offline]);
  assert.deepEqual([...online].sort(), [alice.id, bob.id].sort());
  assert.deepEqual(await alice.ping(bob.id), [bob.id]);
  assert.deepEqual(await alice.ping(offline), []);
  const sent = alice.frames('out').map((f) => JSON.parse(f.data)).filter((f) => f.cmd === 'session' && f.op === 'query');
  assert.deepEqual(sent[0].sessionPeerIds, [alice.id, bob.id, offline]);
  assert.deepEqual(sent[1].sessionPeerIds, [bob.id]);
  // after bob closes he is reported offline
  bob.rt.close();
  let now = [bob.id];
  for (let n = 0; n < 20 && now.length; n++) { now = await alice.ping(bob.id); if (now.length) await sleep(100); }
  assert.deepEqual(now, []);
});

test('ping() without a callback throws (2.4.0 contract)', async () => {
  const alice = await ctx.open(uid('alice'));
  assert.throws(() => alice.rt.ping(['x']), /callback/);
});

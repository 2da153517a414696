// conv()/room(): create (members, name, attr, data, transient, unique), open by id, update.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serverFixture } from '../lib/fixture.mjs';
import { convCall, uid } from '../lib/sdk.mjs';

const ctx = serverFixture();
const CID = /^[0-9a-f]{24}$/;

async function record(client, id) {
  const r = await client.query({ where: { objectId: id } });
  assert.equal(r.length, 1, `conversation ${id} found`);
  return r[0];
}

test('conv({members, name, attr}, cb): started → callback, "create" event, stored record', async () => {
  const alice = await ctx.open(uid('alice'));
  const bob = await ctx.open(uid('bob'));
  const since = alice.mark();
  const conv = await alice.createConv({ members: [bob.id], name: 'first', attr: { k: 'v', n: 1, nested: { x: [1, 2] } } });
  assert.match(conv.id, CID);
  assert.equal(conv.name, 'first');
  assert.deepEqual(conv.attr, { k: 'v', n: 1, nested: { x: [1, 2] } });
  const created = await alice.waitFor('create', (d) => d.cid === conv.id, { since });
  assert.equal(created.cmd, 'conv');
  assert.equal(created.op, 'started');
  const rec = await record(alice, conv.id);
  assert.equal(rec.objectId, conv.id);
  assert.equal(rec.name, 'first');
  assert.deepEqual(rec.attr, { k: 'v', n: 1, nested: { x: [1, 2] } });
  assert.deepEqual([...rec.m].sort(), [alice.id, bob.id].sort());
  assert.equal(rec.c, alice.id);
  assert.ok(rec.createdAt, 'createdAt');
  // the member sees it too, with the same data
  const asBob = await bob.openConv(conv.id);
  assert.equal(asBob.id, conv.id);
  assert.equal(asBob.name, 'first');
  assert.deepEqual(asBob.attr, { k: 'v', n: 1, nested: { x: [1, 2] } });
});

test('room() is the same as conv(): creates, and opens by id', async () => {
  const alice = await ctx.open(uid('alice'));
  const room = await alice.createRoom({ members: ['someone-offline'], name: 'a room' });
  assert.match(room.id, CID);
  const other = await ctx.open(uid('other'));
  const opened = await other.request((cb) => other.rt.room(room.id, cb), { what: 'room(id)' });
  assert.equal(opened.id, room.id);
  assert.equal(opened.name, 'a room');
});

test('conv({members}) without name/attr: creator is a member; name is empty', async () => {
  const alice = await ctx.open(uid('alice'));
  const conv = await alice.createConv({ members: ['p1', 'p2'] });
  const rec = await record(alice, conv.id);
  assert.deepEqual([...rec.m].sort(), [alice.id, 'p1', 'p2'].sort());
  assert.ok(rec.name === '' || rec.name === undefined, `name ${rec.name}`);
});

test('conv({}) with no members: a conversation of the creator alone', async () => {
  const alice = await ctx.open(uid('alice'));
  const conv = await alice.createConv({ name: 'solo' });
  const rec = await record(alice, conv.id);
  assert.deepEqual(rec.m, [alice.id]);
});

test("manual's conv({members, data}) form: 2.4.0 ignores `data`, creation still succeeds", async () => {
  const alice = await ctx.open(uid('alice'));
  const conv = await alice.createConv({ members: ['LeanCloud02'], data: { title: 'testTitle' } });
  assert.match(conv.id, CID);
  const sent = alice.frames('out').map((f) => JSON.parse(f.data)).find((f) => f.op === 'start');
  assert.deepEqual(sent.attr, { name: '', attr: {} });
  const rec = await record(alice, conv.id);
  assert.deepEqual([...rec.m].sort(), [alice.id, 'LeanCloud02'].sort());
});

test('conv(id, cb) returns the cached object for a conversation created in this instance', async () => {
  const alice = await ctx.open(uid('alice'));
  const conv = await alice.createConv({ name: 'cached' });
  const again = await alice.openConv(conv.id);
  assert.equal(again, conv);
});

test('conv(id, cb) for an unknown id calls back with null (malformed and well-formed ids)', async () => {
  const alice = await ctx.open(uid('alice'));
  assert.equal(await alice.openConv('noneexistingroomid'), null);
  assert.equal(await alice.openConv('559d08a1e4b0a35bc5062ba1'), null);
});

test('conv(id, cb) of a conversation the caller is not a member of still resolves (lookup by id)', async () => {
  const alice = await ctx.open(uid('alice'));
  const conv = await alice.createConv({ name: 'public-ish', attr: { open: true } });
  const stranger = await ctx.open(uid('stranger'));
  const seen = await stranger.openConv(conv.id);
  assert.equal(seen.id, conv.id);
  assert.equal(seen.name, 'public-ish');
});

test('unique: same member set gives the same conversation, whoever creates it', async () => {
  const alice = await ctx.open(uid('alice'));
  const bob = await ctx.open(uid('bob'));
  const c1 = await alice.createConv({ members: [bob.id], unique: true, name: 'u' });
  const c2 = await alice.createConv({ members: [bob.id], unique: true, name: 'u' });
  assert.equal(c2.id, c1.id);
  // bob creating it with alice: the set {alice, bob} is the same
  const c3 = await bob.createConv({ members: [alice.id], unique: true });
  assert.equal(c3.id, c1.id);
  // listing self explicitly does not change the set
  const c4 = await alice.createConv({ members: [bob.id, alice.id], unique: true });
  assert.equal(c4.id, c1.id);
  // a different set is a different conversation
  const c5 = await alice.createConv({ members: [bob.id, 'carol'], unique: true });
  assert.notEqual(c5.id, c1.id);
  // without unique a new conversation is created every time
  const n1 = await alice.createConv({ members: [bob.id] });
  const n2 = await alice.createConv({ members: [bob.id] });
  assert.notEqual(n1.id, n2.id);
  assert.notEqual(n1.id, c1.id);
  const rec = await record(alice, c1.id);
  assert.deepEqual([...rec.m].sort(), [alice.id, bob.id].sort());
});

test('transient: room({transient:true}) is a chat room (tr:true) that others join and message in', async () => {
  const alice = await ctx.open(uid('alice'));
  const bob = await ctx.open(uid('bob'));
  const carol = await ctx.open(uid('carol'));
  const room = await alice.createRoom({ transient: true, name: 'lobby' });
  assert.match(room.id, CID);
  const rec = await record(alice, room.id);
  assert.equal(rec.tr, true);
  const bobRoom = await bob.openConv(room.id);
  await convCall(bob, bobRoom, 'join');
  const count = await convCall(alice, room, 'count');
  assert.equal(count, 2, 'online members of the chat room');
  // a message reaches the joined member, not the bystander
  const since = carol.mark();
  const ack = await convCall(alice, room, 'send', { hello: 'room' });
  const got = await bob.waitFor('message', (m) => m.id === ack.uid);
  assert.deepEqual(got.msg, { hello: 'room' });
  assert.equal(got.cid, room.id);
  assert.equal(got.fromPeerId, alice.id);
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(carol.seen('message', since).length, 0);
  // chat rooms are found by {tr: true}
  const rooms = await alice.query({ where: { tr: true, objectId: room.id } });
  assert.deepEqual(rooms.map((r) => r.objectId), [room.id]);
});

test('conv.update(data, cb): name and attr are replaced for everyone', async () => {
  const alice = await ctx.open(uid('alice'));
  const bob = await ctx.open(uid('bob'));
  const conv = await alice.createConv({ members: [bob.id], name: 'before', attr: { a: 1 } });
  const reply = await convCall(alice, conv, 'update', { name: 'after', attr: { a: 2, b: 'x' } });
  assert.equal(reply.cmd, 'conv');
  assert.equal(reply.op, 'updated');
  const seen = await bob.openConv(conv.id);
  assert.equal(seen.name, 'after');
  assert.deepEqual(seen.attr, { a: 2, b: 'x' });
});

test('conv.update by a non-member is refused with an error frame (4309), not applied', async () => {
  const alice = await ctx.open(uid('alice'));
  const conv = await alice.createConv({ name: 'mine' });
  const mallory = await ctx.open(uid('mallory'));
  const mconv = await mallory.openConv(conv.id);
  const err = await mallory.expectError((cb) => mconv.update({ name: 'pwned' }, cb), { what: 'update' });
  assert.equal(err.cmd, 'error');
  assert.equal(err.code, 4309);
  assert.equal(err.reason, 'CONVERSATION_UPDATE_REJECTED');
  assert.equal((await record(alice, conv.id)).name, 'mine');
});

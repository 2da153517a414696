// Scenario 3 (create + membership pushes), 10 (query), 12 (unique, temporary), chat rooms, save
// (update, dotted keys), count, mute/unmute. Protocol §4.4 R7–R12, R15, R16; §4.7; §6.10–6.12, §6.15–6.18.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serverFixture } from '../lib/fixture4.mjs';
import { LC, sleep, uid, rejects } from '../lib/sdk4.mjs';

const ctx = serverFixture();
const ofConv = (cid) => (p, c) => c && c.id === cid;
const sorted = (a) => [...a].sort();

test('scenario 3: conv/start → started{cid,cdate}; joined then members_joined to creator and member (peerId, service 2, no i)', async () => {
  const alice = await ctx.open(uid('alice'));
  const bob = await ctx.open(uid('bob'));
  const conv = await alice.im.createConversation({ members: [bob.id], name: 'n', color: 'red' });
  assert.match(conv.id, /^[0-9a-f]{24}$/, 'LeanStorage-style id');
  assert.ok(conv.createdAt instanceof Date && !Number.isNaN(conv.createdAt.getTime()), 'cdate parsed');
  assert.equal(conv.name, 'n');
  assert.equal(conv.creator, alice.id);
  const start = alice.frames('out').find((f) => f.cmd.op === 'start');
  assert.deepEqual(start.cmd.convMessage.m, sorted([alice.id, bob.id]));
  assert.deepEqual(JSON.parse(start.cmd.convMessage.attr.data), { color: 'red', name: 'n' });
  for (const c of [alice, bob]) {
    const [inv] = await c.waitFor('invited', ofConv(conv.id));
    assert.equal(inv.invitedBy, alice.id);
    const [mj] = await c.waitFor('membersjoined', ofConv(conv.id));
    assert.deepEqual(sorted(mj.members), sorted([alice.id, bob.id]));
    assert.equal(mj.invitedBy, alice.id);
    const pushes = c.frames('in').filter((f) => f.cmd.cmd === 'conv' && f.cmd.convMessage && f.cmd.convMessage.cid === conv.id && !f.cmd.i);
    const ops = pushes.map((f) => f.cmd.op);
    assert.ok(ops.indexOf('joined') >= 0 && ops.indexOf('joined') < ops.indexOf('members_joined'), `joined before members_joined: ${ops}`);
    for (const f of pushes.filter((x) => ['joined', 'members_joined'].includes(x.cmd.op))) {
      assert.equal(f.cmd.peerId, c.id, 'push carries the recipient peerId');
      assert.equal(f.cmd.service, 2, 'service = 2');
      assert.equal(f.cmd.convMessage.initBy, alice.id);
      assert.ok(f.cmd.convMessage.udate, 'udate on membership pushes');
      assert.ok(f.cmd.serverTs > 0, 'serverTs on conv pushes');
    }
  }
  // bob's SDK fetched the unknown conversation and got it with the custom attribute
  const bconv = await bob.im.getConversation(conv.id);
  assert.equal(bconv.get('color'), 'red');
  assert.equal(bconv.name, 'n');
  assert.equal(bconv.creator, alice.id);
  assert.deepEqual(sorted(bconv.members), sorted([alice.id, bob.id]));
});

test('scenario 12: unique conversations: the same member set gives the same cid, whoever creates it', async () => {
  const alice = await ctx.open(uid('ua'));
  const bob = await ctx.open(uid('ub'));
  const c1 = await alice.im.createConversation({ members: [bob.id], unique: true, name: 'first' });
  const c2 = await bob.im.createConversation({ members: [alice.id], unique: true, name: 'second' });
  assert.equal(c2.id, c1.id);
  const again = await alice.im.createConversation({ members: [bob.id], unique: true });
  assert.equal(again.id, c1.id);
  const plainConv = await alice.im.createConversation({ members: [bob.id] });
  assert.notEqual(plainConv.id, c1.id, 'without unique a new conversation is created');
  const fetched = await bob.im.getConversation(c1.id, true);
  assert.equal(fetched.name, 'first', 'original attributes kept');
});

test('createChatRoom: conv/start{transient:true, m:[self]}; ChatRoom; others join; count = online participants', async () => {
  const alice = await ctx.open(uid('ra'));
  const bob = await ctx.open(uid('rb'));
  const room = await alice.im.createChatRoom({ name: 'room' });
  assert.ok(room instanceof LC.ChatRoom);
  const start = alice.frames('out').find((f) => f.cmd.op === 'start');
  assert.equal(start.cmd.convMessage.transient, true);
  assert.deepEqual(start.cmd.convMessage.m, [alice.id]);
  const broom = await bob.im.getConversation(room.id);
  assert.ok(broom instanceof LC.ChatRoom, 'query result tr:true ⇒ ChatRoom');
  await broom.join();
  assert.equal(await room.count(), 2);
  const msg = await room.send(new LC.TextMessage('hello room'));
  const [m] = await bob.waitFor('message', (x) => x.id === msg.id);
  assert.equal(m.text, 'hello room');
  await sleep(1200);
  const acks = bob.frames('out').filter((f) => f.cmd.cmd === 'ack');
  assert.equal(acks.length, 0, 'no recipient ack in chat rooms');
  const rooms = await bob.im.getChatRoomQuery().find();
  assert.ok(rooms.some((r) => r.id === room.id), 'getChatRoomQuery {tr:true} finds it');
  await broom.quit();
  assert.equal(await room.count(), 1);
});

test('scenario 12: createTemporaryConversation: _tmp: id, tempConvTTL, same members ⇒ same cid, tempConvIds query', async () => {
  const alice = await ctx.open(uid('ta'));
  const bob = await ctx.open(uid('tb'));
  const tmp = await alice.im.createTemporaryConversation({ members: [bob.id], ttl: 3600 });
  assert.ok(tmp instanceof LC.TemporaryConversation);
  assert.match(tmp.id, /^_tmp:/);
  const start = alice.frames('out').find((f) => f.cmd.op === 'start');
  assert.equal(start.cmd.convMessage.tempConv, true);
  assert.equal(start.cmd.convMessage.tempConvTTL, 3600);
  const started = alice.frames('in').find((f) => f.cmd.i === start.cmd.i);
  assert.ok(started.cmd.convMessage.tempConvTTL > 3500 && started.cmd.convMessage.tempConvTTL <= 3600);
  assert.ok(tmp.expiredAt > new Date(Date.now() + 3500_000));
  await bob.waitFor('invited', ofConv(tmp.id));
  await bob.waitFor('membersjoined', ofConv(tmp.id));
  const btmp = await bob.im.getConversation(tmp.id);
  assert.ok(btmp instanceof LC.TemporaryConversation);
  const q = bob.frames('out').find((f) => f.cmd.op === 'query' && f.cmd.convMessage.tempConvIds);
  assert.deepEqual(q.cmd.convMessage.tempConvIds, [tmp.id]);
  assert.ok(btmp.expiredAt > new Date(Date.now() + 3000_000), 'ttl in results ⇒ expiredAt');
  assert.deepEqual(sorted(btmp.members), sorted([alice.id, bob.id]));
  const again = await bob.im.createTemporaryConversation({ members: [alice.id], ttl: 3600 });
  assert.equal(again.id, tmp.id, 'same member set ⇒ same temporary conversation');
  const msg = await tmp.send(new LC.TextMessage('tmp'));
  const [m] = await bob.waitFor('message', (x) => x.cid === tmp.id);
  assert.equal(m.id, msg.id, 'receiver sees the sender\'s message id');
  const found = await alice.im.getQuery().find();
  assert.ok(!found.some((c) => c.id === tmp.id), 'temporary conversations are not matched by where queries');
});

test('temporary conversation expiry: after the ttl every operation fails with 4323', async () => {
  const alice = await ctx.open(uid('xa'));
  const bob = await ctx.open(uid('xb'));
  const tmp = await alice.im.createTemporaryConversation({ members: [bob.id], ttl: 1 });
  await sleep(2200);
  // The SDK refuses client-side once expiredAt has passed; move its local expiry forward so the
  // request reaches the server, which must refuse it (4323, or 4303 which 4.3.1 maps to 4323).
  tmp.expiredAt = Date.now() + 3600_000;
  const err = await rejects(tmp.send(new LC.TextMessage('late')), 'send to expired');
  assert.equal(err.code, 4323, `got ${err.code} ${err.message}`);
  const frame = alice.frames('in').filter((f) => f.cmd.cmd === 'error' || (f.cmd.cmd === 'ack' && f.cmd.ackMessage.code)).at(-1);
  const e = frame.cmd.errorMessage || frame.cmd.ackMessage;
  assert.ok(e.reason, 'the refusal carries a reason');
  assert.equal(await bob.im.getConversation(tmp.id, true), null, 'an expired temporary conversation is not found');
});

test('queries: where {} ⇒ only mine; getConversations uses $in + limit 999; compact; withLastMessagesRefreshed; sort/limit/skip', async () => {
  const alice = await ctx.open(uid('qa'));
  const bob = await ctx.open(uid('qb'));
  const carol = await ctx.open(uid('qc'));
  const mine = [];
  for (let i = 0; i < 3; i++) mine.push(await alice.im.createConversation({ members: [bob.id], name: `q${i}`, rank: i }));
  const other = await carol.im.createConversation({ members: [], name: 'carol only' });
  const last = await mine[1].send(new LC.TextMessage('latest'));
  const all = await alice.im.getQuery().find();
  const ids = all.map((c) => c.id);
  for (const c of mine) assert.ok(ids.includes(c.id), 'own conversations found');
  assert.ok(!ids.includes(other.id), 'empty where ⇒ only conversations containing the caller');
  const q0 = alice.frames('out').filter((f) => f.cmd.op === 'query').at(-1);
  assert.equal(q0.cmd.convMessage.where.data, '{}');
  assert.equal(q0.cmd.convMessage.flag, 0);
  // getConversations: every id, even others' conversations
  const got = await alice.im.getConversations([other.id, mine[0].id], true);
  assert.deepEqual(got.map((c) => c && c.id), [other.id, mine[0].id]);
  const inq = alice.frames('out').filter((f) => f.cmd.op === 'query').at(-1);
  assert.equal(inq.cmd.convMessage.limit, 999);
  assert.deepEqual(JSON.parse(inq.cmd.convMessage.where.data), { objectId: { $in: [other.id, mine[0].id] } });
  // compact: no members
  const compact = await alice.im.getQuery().equalTo('objectId', mine[2].id).compact(true).find();
  const cres = alice.frames('in').filter((f) => f.cmd.op === 'results').at(-1);
  const craw = JSON.parse(cres.cmd.convMessage.results.data);
  assert.equal(craw.length, 1);
  assert.equal(craw[0].m, undefined, 'flag 1 ⇒ no m');
  assert.equal(compact.length, 1);
  // last message
  const withLast = await alice.im.getQuery().equalTo('objectId', mine[1].id).withLastMessagesRefreshed(true).find();
  assert.equal(withLast[0].lastMessage.id, last.id);
  assert.equal(withLast[0].lastMessage.text, 'latest');
  assert.equal(withLast[0].lastMessage.from, alice.id);
  assert.ok(withLast[0].lastMessageAt instanceof Date);
  const lraw = JSON.parse(alice.frames('in').filter((f) => f.cmd.op === 'results').at(-1).cmd.convMessage.results.data)[0];
  assert.equal(lraw.msg_mid, last.id);
  assert.equal(lraw.msg_from, alice.id);
  assert.equal(lraw.msg_timestamp, last.timestamp.getTime());
  // custom attribute conditions, sort, limit, skip
  const byRank = await alice.im.getQuery().containsMembers([alice.id]).greaterThanOrEqualTo('rank', 0).addDescending('rank').limit(2).find();
  assert.deepEqual(byRank.map((c) => c.get('rank')), [2, 1]);
  const skipped = await alice.im.getQuery().greaterThanOrEqualTo('rank', 0).addAscending('rank').skip(1).limit(5).find();
  assert.deepEqual(skipped.map((c) => c.get('rank')), [1, 2]);
  const byName = await alice.im.getQuery().startsWith('name', 'q1').find();
  assert.deepEqual(byName.map((c) => c.id), [mine[1].id]);
  const withMembers = await alice.im.getQuery().withMembers([bob.id], true).find();
  assert.deepEqual(sorted(withMembers.map((c) => c.id)), sorted(mine.map((c) => c.id)));
  const none = await alice.im.getQuery().equalTo('objectId', '000000000000000000000000').find();
  assert.deepEqual(none, []);
  assert.equal(await alice.im.getConversation('000000000000000000000000'), null);
});

test('save(): conv/update{attr} → udate; dotted keys; other member gets conversationinfoupdated', async () => {
  const alice = await ctx.open(uid('sa'));
  const bob = await ctx.open(uid('sb'));
  const conv = await alice.im.createConversation({ members: [bob.id], name: 'before', attr: { lee: 'x', keep: 1 } });
  await bob.waitFor('membersjoined', ofConv(conv.id));
  const bconv = await bob.im.getConversation(conv.id);
  const before = conv.updatedAt;
  await sleep(5);
  conv.name = 'after';
  conv.set('attr.lee', 'yeh');
  await conv.save();
  assert.ok(conv.updatedAt >= before, 'updatedAt from udate');
  const up = alice.frames('out').find((f) => f.cmd.op === 'update');
  assert.deepEqual(JSON.parse(up.cmd.convMessage.attr.data), { name: 'after', 'attr.lee': 'yeh' });
  const reply = alice.frames('in').find((f) => f.cmd.i === up.cmd.i);
  assert.ok(reply.cmd.convMessage.udate, 'udate in reply');
  const [payload] = await bob.waitFor('conversationinfoupdated', ofConv(conv.id));
  assert.equal(payload.updatedBy, alice.id);
  assert.equal(bconv.name, 'after');
  assert.deepEqual(bconv.get('attr'), { lee: 'yeh', keep: 1 });
  const fresh = await bob.im.getConversation(conv.id, true);
  assert.deepEqual(fresh.get('attr'), { lee: 'yeh', keep: 1 }, 'dotted key stored as a nested set');
  assert.equal(fresh.name, 'after');
});

test('count(): conv/count answers the member count', async () => {
  const alice = await ctx.open(uid('ca'));
  const conv = await alice.im.createConversation({ members: [uid('x'), uid('y')] });
  assert.equal(await conv.count(), 3);
});

test('mute()/unmute(): conv/mute and conv/unmute answered; mu reflects it in query results', async () => {
  const alice = await ctx.open(uid('ma'));
  const conv = await alice.im.createConversation({ members: [uid('x')] });
  await conv.mute();
  assert.equal(conv.muted, true);
  let fresh = await alice.im.getConversation(conv.id, true);
  assert.deepEqual(fresh.mutedMembers, [alice.id]);
  await conv.unmute();
  fresh = await alice.im.getConversation(conv.id, true);
  assert.deepEqual(fresh.mutedMembers, []);
});

test('errors: update of an unknown conversation ⇒ error frame with code and reason (4303 family)', async () => {
  const alice = await ctx.open(uid('ea'));
  const conv = await alice.im.createConversation({ members: [] });
  // make a handle to a conversation that does not exist by reusing the object with another id
  const ghost = Object.create(conv);
  ghost.id = '0123456789abcdef01234567';
  const err = await rejects(LC.Conversation.prototype.count.call(ghost), 'count on unknown conversation');
  assert.ok(err.code >= 4300 && err.code < 4400, `conversation error code, got ${err.code}`);
  const frame = alice.frames('in').filter((f) => f.cmd.cmd === 'error').at(-1);
  assert.ok(frame, 'an error frame');
  assert.ok(frame.cmd.errorMessage.code > 0 && frame.cmd.errorMessage.reason, 'code + reason present');
  assert.equal(err.message, frame.cmd.errorMessage.reason);
});

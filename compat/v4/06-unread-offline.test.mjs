// Scenario 7 (unread on login + read sync, version 3) and scenario 8 (offline push, version 1:
// pushOfflineMessages). §6.7, §6.8; unreadmessagescountupdate.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serverFixture } from '../lib/fixture4.mjs';
import { LC, sleep, uid } from '../lib/sdk4.mjs';

const ctx = serverFixture();
const ofConv = (cid) => (p, c) => c && c.id === cid;

test('scenario 7: offline member logs in ⇒ opened then unread{convs[{cid, unread:2, mid, from, mentioned}], notifTime} ⇒ event', async () => {
  const alice = await ctx.open(uid('alice'));
  const carolId = uid('carol');
  const conv = await alice.im.createConversation({ members: [carolId] });
  const m1 = await conv.send(new LC.TextMessage('one').mentionAll());
  const m2 = await conv.send(new LC.TextMessage('two'));
  const carol = await ctx.open(carolId);
  const [convs] = await carol.waitFor('unreadmessagescountupdate', (cs) => cs.some((c) => c.id === conv.id));
  const c = convs.find((x) => x.id === conv.id);
  assert.equal(c.unreadMessagesCount, 2);
  assert.equal(c.unreadMessagesMentioned, true);
  assert.equal(c.lastMessage.id, m2.id);
  assert.equal(c.lastMessage.text, 'two');
  assert.equal(c.lastMessage.from, alice.id);
  const frames = carol.frames('in');
  const openedAt = frames.findIndex((f) => f.cmd.op === 'opened');
  const unreadAt = frames.findIndex((f) => f.cmd.cmd === 'unread');
  assert.ok(openedAt >= 0 && unreadAt > openedAt, 'unread after opened');
  const u = frames[unreadAt].cmd;
  assert.equal(u.i, undefined);
  assert.ok(u.unreadMessage.notifTime > 0);
  const t = u.unreadMessage.convs.find((x) => x.cid === conv.id);
  assert.equal(t.unread, 2);
  assert.equal(t.mid, m2.id);
  assert.equal(t.timestamp, m2.timestamp.getTime());
  assert.equal(t.from, alice.id);
  assert.equal(t.mentioned, true);
  assert.equal(carol.frames('in').filter((f) => f.cmd.cmd === 'direct').length, 0, 'version 3: no offline direct pushes');
  void m1;
});

test('scenario 7: read() on one device ⇒ the other device gets unread{unread:0}; next login reports nothing for it', async () => {
  const alice = await ctx.open(uid('alice'));
  const carolId = uid('carol');
  const conv = await alice.im.createConversation({ members: [carolId] });
  await conv.send(new LC.TextMessage('a'));
  const last = await conv.send(new LC.TextMessage('b'));
  const carol1 = await ctx.open(carolId);
  await carol1.waitFor('unreadmessagescountupdate', (cs) => cs.some((c) => c.id === conv.id && c.unreadMessagesCount === 2));
  const carol2 = await ctx.open(carolId);
  const [cs2] = await carol2.waitFor('unreadmessagescountupdate', (cs) => cs.some((c) => c.id === conv.id));
  const c2 = cs2.find((c) => c.id === conv.id);
  assert.equal(c2.unreadMessagesCount, 2, 'second device sees the same tuple');
  const since = carol1.mark();
  await c2.read();
  const [cs1] = await carol1.waitFor('unreadmessagescountupdate', (cs) => cs.some((c) => c.id === conv.id && c.unreadMessagesCount === 0), { since });
  const c1 = cs1.find((c) => c.id === conv.id);
  assert.equal(c1.unreadMessagesMentioned, false);
  assert.equal(c1.lastMessage.id, last.id);
  const carol3 = await ctx.open(carolId);
  await sleep(800);
  const u = carol3.frames('in').find((f) => f.cmd.cmd === 'unread');
  const tuple = u && u.cmd.unreadMessage.convs && u.cmd.unreadMessage.convs.find((x) => x.cid === conv.id);
  assert.ok(!tuple || tuple.unread === 0, `after read the conversation has no unread (got ${JSON.stringify(tuple)})`);
});

test('unread counts grow while online too; own messages do not count', async () => {
  const alice = await ctx.open(uid('alice'));
  const bob = await ctx.open(uid('bob'));
  const conv = await alice.im.createConversation({ members: [bob.id] });
  await bob.waitFor('membersjoined', ofConv(conv.id));
  await conv.send(new LC.TextMessage('1'));
  await conv.send(new LC.TextMessage('2'));
  const bconv = await bob.im.getConversation(conv.id);
  await bob.waitForCount('message', 2);
  assert.equal(bconv.unreadMessagesCount, 2);
  await bconv.send(new LC.TextMessage('mine'));
  assert.equal(bconv.unreadMessagesCount, 2);
  const bob2 = await ctx.open(bob.id);
  const [cs] = await bob2.waitFor('unreadmessagescountupdate', (x) => x.some((c) => c.id === conv.id));
  assert.equal(cs.find((c) => c.id === conv.id).unreadMessagesCount, 2, 'server count: others\' messages since the last read');
});

test('scenario 8: push mode (lc.*.1): 25 offline messages ⇒ pushed as direct oldest first (Confab drops none, issue 4), acked; no unread; no re-push', async () => {
  const alice = await ctx.open(uid('alice'));
  const daveId = uid('dave');
  const conv = await alice.im.createConversation({ members: [daveId] });
  const sent = [];
  for (let i = 0; i < 25; i++) sent.push(await conv.send(new LC.TextMessage(`o${i}`)));
  const dave = await ctx.open(daveId, {}, { push: true });
  const ws = await dave.rt.ws();
  assert.equal(ws.protocol, dave.rt.protocol, `${dave.rt.protocol} negotiated`);
  await sleep(1500);
  await dave.waitForCount('message', 25);
  const got = dave.seen('message').map(([m]) => m.id);
  // LeanCloud pushed at most 20 per conversation (§6.8); Confab's decision (issue 4) is to drop nothing.
  assert.deepEqual(got, sent.map((m) => m.id), 'every offline message once, oldest first');
  const offline = dave.frames('in').filter((f) => f.cmd.cmd === 'direct');
  assert.ok(offline.every((f) => f.cmd.directMessage.offline === true), 'offline: true on replayed messages');
  assert.equal(dave.frames('in').filter((f) => f.cmd.cmd === 'unread').length, 0, 'no unread in version 1');
  const acks = dave.frames('out').filter((f) => f.cmd.cmd === 'ack');
  assert.ok(acks.length >= 1, 'offline messages are acked');
  await dave.rt.close();
  const again = await ctx.open(daveId, {}, { push: true });
  await sleep(1500);
  assert.equal(again.seen('message').length, 0, 'acked messages are not pushed again');
});

test('push mode: a live message still arrives as direct and is acked', async () => {
  const alice = await ctx.open(uid('alice'));
  const erin = await ctx.open(uid('erin'), {}, { push: true });
  const conv = await alice.im.createConversation({ members: [erin.id] });
  const m = await conv.send(new LC.TextMessage('live'));
  const [got] = await erin.waitFor('message', (x) => x.id === m.id);
  assert.equal(got.text, 'live');
  await erin.waitFrame('out', (x) => x.cmd === 'ack', { timeout: 3000 });
});

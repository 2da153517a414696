// Member roles (updateMemberRole), shut-up (muteMembers / queryMutedMembers), blacklist (blockMembers /
// queryBlockedMembers). §4.4 R19–R23, §4.5, §6.19–6.21.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serverFixture } from '../lib/fixture4.mjs';
import { LC, sleep, uid, rejects } from '../lib/sdk4.mjs';

const ctx = serverFixture();
const ofConv = (cid) => (p, c) => c && c.id === cid;

async function trio() {
  const alice = await ctx.open(uid('owner'));
  const bob = await ctx.open(uid('bob'));
  const carol = await ctx.open(uid('carol'));
  const conv = await alice.im.createConversation({ members: [bob.id, carol.id] });
  await bob.waitFor('membersjoined', ofConv(conv.id));
  await carol.waitFor('membersjoined', ofConv(conv.id));
  return { alice, bob, carol, conv, bconv: await bob.im.getConversation(conv.id), cconv: await carol.im.getConversation(conv.id) };
}

test('updateMemberRole: owner makes bob Manager ⇒ member_info_update answered; members get member_info_changed{info{pid, role}, initBy}', async () => {
  const { alice, bob, conv } = await trio();
  await conv.updateMemberRole(bob.id, LC.ConversationMemberRole.MANAGER);
  const out = alice.frames('out').find((f) => f.cmd.op === 'member_info_update');
  assert.equal(out.cmd.convMessage.targetClientId, bob.id);
  assert.deepEqual(out.cmd.convMessage.info, { pid: bob.id, role: 'Manager' });
  // 4.3.1 needs REST (/classes/_ConversationMemberInfo) to raise memberinfoupdated, so assert the push frame.
  const push = await bob.waitFrame('in', (x) => x.op === 'member_info_changed', { what: 'member_info_changed' });
  assert.equal(push.cmd.convMessage.cid, conv.id);
  assert.equal(push.cmd.convMessage.info.pid, bob.id);
  assert.equal(push.cmd.convMessage.info.role, 'Manager');
  assert.equal(push.cmd.convMessage.initBy, alice.id);
});

test('updateMemberRole by a plain member ⇒ refused with CONVERSATION_OPERATION_UNAUTHORIZED-like error (code + reason); Owner refused client-side (5130)', async () => {
  const { bob, carol, bconv } = await trio();
  const err = await rejects(bconv.updateMemberRole(carol.id, LC.ConversationMemberRole.MANAGER), 'member promotes');
  assert.ok(err.code > 0 && err.message, `code ${err.code} reason ${err.message}`);
  const err2 = await rejects(bconv.updateMemberRole(bob.id, LC.ConversationMemberRole.OWNER), 'owner promotion');
  assert.equal(err2.code, 5130);
});

test('muteMembers: allowedPids; membersmuted to members, muted to the target; muted member cannot send; queryMutedMembers; unmute', async () => {
  const { alice, bob, carol, conv, cconv } = await trio();
  const res = await conv.muteMembers([carol.id]);
  assert.deepEqual(res.successfulClientIds, [carol.id]);
  assert.deepEqual(res.failures, []);
  const [mm] = await bob.waitFor('membersmuted', ofConv(conv.id));
  assert.deepEqual(mm.members, [carol.id]);
  assert.equal(mm.mutedBy, alice.id);
  const [mu] = await carol.waitFor('muted', ofConv(conv.id));
  assert.equal(mu.mutedBy, alice.id);
  const err = await rejects(cconv.send(new LC.TextMessage('muted talk')), 'muted member send');
  assert.ok(err.code > 0 && err.message, `refused with code ${err.code}`);
  const q = await conv.queryMutedMembers();
  assert.deepEqual(q.results, [carol.id]);
  assert.ok(!q.next, 'no next cursor on the last page');
  await conv.unmuteMembers([carol.id]);
  await carol.waitFor('unmuted', ofConv(conv.id));
  await bob.waitFor('membersunmuted', ofConv(conv.id));
  assert.deepEqual((await conv.queryMutedMembers()).results || [], []);
  await cconv.send(new LC.TextMessage('free again'));
});

test('queryMutedMembers pages with limit/next', async () => {
  const { conv } = await trio();
  const extra = [uid('m1'), uid('m2'), uid('m3')];
  await conv.add(extra);
  await conv.muteMembers(extra);
  const p1 = await conv.queryMutedMembers({ limit: 2 });
  assert.equal(p1.results.length, 2);
  assert.ok(p1.next, 'next cursor when more remain');
  const p2 = await conv.queryMutedMembers({ limit: 2, next: p1.next });
  assert.deepEqual([...p1.results, ...p2.results].sort(), [...extra].sort());
  assert.ok(!p2.next, 'no next on the last page');
});

test('blockMembers: removed + blocked; blocked client gets blocked + kicked; others membersblocked + membersleft; cannot rejoin (4315); query; unblock', async () => {
  const { alice, bob, carol, conv, cconv } = await trio();
  const res = await conv.blockMembers([carol.id]);
  assert.deepEqual(res.successfulClientIds, [carol.id]);
  const out = alice.frames('out').find((f) => f.cmd.cmd === 'blacklist');
  assert.equal(out.cmd.op, 'block');
  assert.equal(out.cmd.blacklistMessage.srcCid, conv.id);
  const [b] = await carol.waitFor('blocked', ofConv(conv.id));
  assert.equal(b.blockedBy, alice.id);
  await carol.waitFor('kicked', ofConv(conv.id));
  const [mb] = await bob.waitFor('membersblocked', ofConv(conv.id));
  assert.deepEqual(mb.members, [carol.id]);
  const [ml] = await bob.waitFor('membersleft', ofConv(conv.id));
  assert.deepEqual(ml.members, [carol.id]);
  assert.equal(await conv.count(), 2);
  const err = await rejects(cconv.join(), 'blocked rejoin');
  assert.equal(err.code, 4315);
  const q = await conv.queryBlockedMembers();
  assert.deepEqual(q.results, [carol.id]);
  await conv.unblockMembers([carol.id]);
  await carol.waitFor('unblocked', ofConv(conv.id));
  await bob.waitFor('membersunblocked', ofConv(conv.id));
  assert.deepEqual((await conv.queryBlockedMembers()).results || [], []);
  await cconv.join();
  await sleep(100);
  assert.equal(await conv.count(), 3);
});

test('a plain member cannot shut up or block others (refused or failedPids with code + reason)', async () => {
  const { alice, bconv } = await trio();
  for (const op of ['muteMembers', 'blockMembers']) {
    let out;
    try { out = await bconv[op]([alice.id]); } catch (e) { out = e; }
    if (out instanceof Error) assert.ok(out.code > 0 && out.message, `${op}: ${out.code}`);
    else {
      assert.deepEqual(out.successfulClientIds || [], [], `${op}: nothing allowed`);
      assert.ok(out.failures.length === 1 && out.failures[0].code > 0 && out.failures[0].message, `${op}: failure with code + reason`);
    }
  }
});

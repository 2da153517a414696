// Scenario 15: signatures through signatureFactory / conversationSignatureFactory /
// blacklistSignatureFactory (HMAC-SHA1 hex, master key, strings of §5.2; add→invite, remove→kick),
// refusals 4102 / 4302 as error frames with code and reason.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serverFixture } from '../lib/fixture4.mjs';
import { makeSigners, sign, uid, rejects } from '../lib/sdk4.mjs';

const ctx = serverFixture({ appSettings: { signatures: { login: true, conversation: true } } });
const signers = (tweak) => makeSigners({ appId: ctx.app.id, masterKey: ctx.app.masterKey, tweak });
const ofConv = (cid) => (p, c) => c && c.id === cid;

test('login signature appId:clientId::t:n opens; n/t/s on sessionMessage', async () => {
  const s = signers();
  const id = uid('signed');
  const c = await ctx.open(id, { signatureFactory: s.signatureFactory });
  const open = c.frames('out')[0].cmd.sessionMessage;
  assert.match(open.s, /^[0-9a-f]{40}$/);
  assert.equal(open.s, sign(ctx.app.masterKey, [ctx.app.id, id, '', open.t, open.n]));
});

test('wrong login signature ⇒ error{code 4102, reason SIGNATURE_FAILED} for the open request', async () => {
  const s = signers((kind, p, out) => ({ ...out, signature: 'f'.repeat(40) }));
  const rt = ctx.rt();
  const err = await rejects(rt.realtime.createIMClient(uid('bad'), { signatureFactory: s.signatureFactory }), 'bad login');
  assert.equal(err.code, 4102);
  assert.equal(err.message, 'SIGNATURE_FAILED');
  const f = rt.frames('in').find((x) => x.cmd.i === 1);
  const e = f.cmd.errorMessage || f.cmd.sessionMessage;
  assert.equal(e.code, 4102);
  assert.ok(e.reason, 'reason present');
});

test('missing login signature when enforced ⇒ 4102', async () => {
  const rt = ctx.rt();
  const err = await rejects(rt.realtime.createIMClient(uid('nosig')), 'unsigned login');
  assert.equal(err.code, 4102);
});

test('conversation signatures: create (sorted m incl. self), add ⇒ invite, remove ⇒ kick; all accepted', async () => {
  const s = signers();
  const alice = await ctx.open(uid('alice'), { signatureFactory: s.signatureFactory, conversationSignatureFactory: s.conversationSignatureFactory });
  const bobId = uid('bob');
  const conv = await alice.im.createConversation({ members: [bobId] });
  const create = s.calls.find((c) => c.action === 'create');
  assert.deepEqual(create.targetIds, [alice.id, bobId].sort());
  const start = alice.frames('out').find((f) => f.cmd.op === 'start').cmd.convMessage;
  assert.equal(start.s, sign(ctx.app.masterKey, [ctx.app.id, alice.id, [alice.id, bobId].sort().join(':'), start.t, start.n]));
  const carolId = uid('carol');
  const added = await conv.add([carolId]);
  assert.deepEqual(added.successfulClientIds, [carolId]);
  const removed = await conv.remove([carolId]);
  assert.deepEqual(removed.successfulClientIds, [carolId]);
  assert.deepEqual(s.calls.filter((c) => c.kind === 'conversation').map((c) => c.action), ['create', 'add', 'remove']);
});

test('bad conversation signatures ⇒ 4302 for start, add and remove', async () => {
  let corrupt = false;
  const s = signers((kind, p, out) => (corrupt && kind === 'conversation' ? { ...out, signature: '0'.repeat(40) } : out));
  const alice = await ctx.open(uid('alice'), { signatureFactory: s.signatureFactory, conversationSignatureFactory: s.conversationSignatureFactory });
  const conv = await alice.im.createConversation({ members: [uid('bob')] });
  corrupt = true;
  const e1 = await rejects(alice.im.createConversation({ members: [uid('x')] }), 'bad start');
  assert.equal(e1.code, 4302);
  const e2 = await rejects(conv.add([uid('y')]), 'bad add');
  assert.equal(e2.code, 4302);
  const e3 = await rejects(conv.remove([conv.members.find((m) => m !== alice.id)]), 'bad remove');
  assert.equal(e3.code, 4302);
  const errs = alice.frames('in').filter((f) => f.cmd.cmd === 'error');
  assert.ok(errs.length >= 3);
  for (const f of errs) assert.ok(f.cmd.errorMessage.reason, 'every error frame has a reason');
});

test('self-quit needs no valid signature (2.4.0 sends none); blacklist signature conversation-block-clients accepted', async () => {
  let corrupt = false;
  const s = signers((kind, p, out) => (corrupt && kind === 'conversation' ? { ...out, signature: '0'.repeat(40) } : out));
  const opts = { signatureFactory: s.signatureFactory, conversationSignatureFactory: s.conversationSignatureFactory, blacklistSignatureFactory: s.blacklistSignatureFactory };
  const alice = await ctx.open(uid('alice'), opts);
  const bob = await ctx.open(uid('bob'), opts);
  const carolId = uid('carol');
  const conv = await alice.im.createConversation({ members: [bob.id, carolId] });
  await bob.waitFor('membersjoined', ofConv(conv.id));
  const res = await conv.blockMembers([carolId]);
  assert.deepEqual(res.successfulClientIds, [carolId]);
  const bl = alice.frames('out').find((f) => f.cmd.cmd === 'blacklist').cmd.blacklistMessage;
  assert.equal(bl.s, sign(ctx.app.masterKey, [ctx.app.id, alice.id, conv.id, carolId, bl.t, bl.n, 'conversation-block-clients']));
  corrupt = true;
  const bconv = await bob.im.getConversation(conv.id);
  await bconv.quit();
});

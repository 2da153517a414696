// Signatures (protocol §5): 2.4.0's `auth` option signs session open, conv start, add (invite) and
// remove (kick) with HMAC-SHA1(masterKey) hex; wrong ones are refused with 4102 / 4302 error frames.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serverFixture } from '../lib/fixture.mjs';
import { Client, convCall, makeSigner, sign, sleep, uid } from '../lib/sdk.mjs';

const SIG = { id: 'sig-app', key: 'sig-key', master_key: 'sig-master', signatures: { login: true, conversation: true } };
const ctx = serverFixture({ config: { apps: [SIG] } });
ctx.allowSocketErrors = true;

const signer = (tweak) => makeSigner({ appId: SIG.id, masterKey: SIG.master_key, tweak });

async function openSigned(clientId, auth = signer()) {
  const c = ctx.track(await Client.open({ appId: SIG.id, clientId, auth }));
  return c;
}

/** Starts a client expected to be refused at login; resolves with the error event. */
async function refusedLogin(options) {
  const c = ctx.track(Client.start({ appId: SIG.id, ...options }));
  const err = await c.waitFor('error', (d) => d && typeof d.code === 'number', { timeout: 10_000 });
  await sleep(300);
  assert.equal(c.seen('open').length, 0, 'must not open');
  c.close();
  return err;
}

test('login signature: appId:clientId::timestamp:nonce (seconds) opens; n/t/s are on the session open frame', async () => {
  const auth = signer();
  const c = await openSigned(uid('alice'), auth);
  assert.deepEqual(auth.calls[0], { clientId: c.id });
  const open = JSON.parse(c.frames('out').find((f) => f.data.includes('"open"')).data);
  assert.equal(typeof open.s, 'string');
  assert.match(open.s, /^[0-9a-f]{40}$/);
  assert.equal(typeof open.t, 'number');
  assert.equal(typeof open.n, 'string');
  assert.equal(open.s, sign(SIG.master_key, [SIG.id, c.id, '', open.t, open.n]));
});

test('login signature with a millisecond timestamp is accepted too', async () => {
  const auth = signer((params, out, parts) => {
    const t = Date.now();
    const p = [...parts]; p[3] = t;
    return { ...out, timestamp: t, signature: sign(SIG.master_key, p) };
  });
  await openSigned(uid('ms'), auth);
});

test('wrong login signature: error frame code 4102 SIGNATURE_FAILED for the open request', async () => {
  const err = await refusedLogin({ clientId: uid('bad'), auth: signer((p, out) => ({ ...out, signature: 'f'.repeat(40) })) });
  assert.equal(err.cmd, 'error');
  assert.equal(err.code, 4102);
  assert.equal(err.reason, 'SIGNATURE_FAILED');
  assert.equal(err.i, 2016, 'answers the session open serial');
});

test('signature made with the app key instead of the master key is refused (4102)', async () => {
  const err = await refusedLogin({
    clientId: uid('wrongkey'),
    auth: makeSigner({ appId: SIG.id, masterKey: SIG.key }),
  });
  assert.equal(err.code, 4102);
});

test("the manual's `authFun` option name is ignored by 2.4.0: no signature is sent, login refused (4102)", async () => {
  const err = await refusedLogin({ clientId: uid('authfun'), authFun: signer() });
  assert.equal(err.code, 4102);
});

test('a replayed login signature (same nonce) is refused (4102)', async () => {
  const clientId = uid('replay');
  let first;
  await openSigned(clientId, signer((p, out) => { first = out; return out; }));
  const err = await refusedLogin({ clientId, auth: (params, cb) => setImmediate(() => cb(first)) });
  assert.equal(err.code, 4102);
});

test('a login signature 25 hours old is refused (4102)', async () => {
  const auth = signer((params, out, parts) => {
    const t = Math.floor(Date.now() / 1000) - 25 * 3600;
    const p = [...parts]; p[3] = t;
    return { ...out, timestamp: t, signature: sign(SIG.master_key, p) };
  });
  const err = await refusedLogin({ clientId: uid('old'), auth });
  assert.equal(err.code, 4102);
});

test('conv start signed over appId:clientId:sorted(m):t:n is accepted; auth gets {clientId, members}', async () => {
  const auth = signer();
  const alice = await openSigned(uid('alice'), auth);
  const conv = await alice.createConv({ members: ['zed', 'amy'], name: 'signed' });
  assert.match(conv.id, /^[0-9a-f]{24}$/);
  assert.deepEqual(auth.calls.at(-1), { clientId: alice.id, members: ['zed', 'amy'] });
});

test('wrong conv start signature: error 4302 CONVERSATION_SIGNATURE_FAILED, nothing created', async () => {
  const auth = signer((params, out) => (params.members && !params.action ? { ...out, signature: '0'.repeat(40) } : out));
  const alice = await openSigned(uid('alice'), auth);
  const since = alice.mark();
  const err = await alice.expectError((cb) => alice.rt.conv({ members: ['bob'], name: 'nope' }, cb), { what: 'start' });
  assert.equal(err.cmd, 'error');
  assert.equal(err.code, 4302);
  assert.equal(err.reason, 'CONVERSATION_SIGNATURE_FAILED');
  assert.equal(alice.seen('create', since).length, 0);
  assert.deepEqual(await alice.query({ where: { name: 'nope' } }), []);
});

test('add (…:invite) and remove (…:kick) signed are accepted; wrong ones are refused with 4302', async () => {
  let breakAction;
  const auth = signer((params, out) => (params.action && params.action === breakAction ? { ...out, signature: '1'.repeat(40) } : out));
  const alice = await openSigned(uid('alice'), auth);
  const conv = await alice.createConv({ members: ['m1'] });
  await convCall(alice, conv, 'add', ['m3', 'm2']);
  assert.deepEqual(auth.calls.at(-1), { clientId: alice.id, members: ['m3', 'm2'], convId: conv.id, action: 'invite' });
  await convCall(alice, conv, 'remove', 'm1');
  assert.deepEqual(auth.calls.at(-1), { clientId: alice.id, members: ['m1'], convId: conv.id, action: 'kick' });
  assert.deepEqual([...(await convCall(alice, conv, 'list'))].sort(), [alice.id, 'm2', 'm3'].sort());

  breakAction = 'invite';
  const e1 = await alice.expectError((cb) => conv.add('m4', cb), { what: 'add' });
  assert.equal(e1.code, 4302);
  breakAction = 'kick';
  const e2 = await alice.expectError((cb) => conv.remove('m2', cb), { what: 'remove' });
  assert.equal(e2.code, 4302);
  assert.deepEqual([...(await convCall(alice, conv, 'list'))].sort(), [alice.id, 'm2', 'm3'].sort());
});

test('join() is signed as invite of self; leave() sends no signature and is accepted', async () => {
  const alice = await openSigned(uid('alice'));
  const conv = await alice.createConv({ name: 'club' });
  const bobAuth = signer();
  const bob = await openSigned(uid('bob'), bobAuth);
  const bconv = await bob.openConv(conv.id);
  await convCall(bob, bconv, 'join');
  assert.deepEqual(bobAuth.calls.at(-1), { clientId: bob.id, members: [bob.id], convId: conv.id, action: 'invite' });
  const callsBefore = bobAuth.calls.length;
  await convCall(bob, bconv, 'leave');
  assert.equal(bobAuth.calls.length, callsBefore, 'no signature requested for self-removal');
  const sent = bob.frames('out').map((f) => JSON.parse(f.data)).filter((f) => f.op === 'remove').at(-1);
  assert.ok(!('s' in sent));
  assert.deepEqual([...(await convCall(alice, conv, 'list'))], [alice.id]);
});

test('an app without signatures enabled ignores n/t/s (even garbage ones)', async () => {
  const garbage = (params, cb) => setImmediate(() => cb({ signature: 'garbage', timestamp: 1, nonce: 'x' }));
  const c = ctx.track(await Client.open({ appId: ctx.app.id, clientId: uid('free'), auth: garbage }));
  const conv = await c.createConv({ members: ['someone'] });
  assert.match(conv.id, /^[0-9a-f]{24}$/);
});

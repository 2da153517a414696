// send (object, string, {receipt}, {transient}, rich media {type}), receive, receipt, "message" and
// "receipt" events, multi-device delivery, encodeHTML.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serverFixture } from '../lib/fixture.mjs';
import { convCall, sleep, uid } from '../lib/sdk.mjs';

const ctx = serverFixture();
const QUIET_MS = 700;

async function pair() {
  const alice = await ctx.open(uid('alice'));
  const bob = await ctx.open(uid('bob'));
  const conv = await alice.createConv({ members: [bob.id], name: 'chat' });
  await bob.waitFor('membersjoined', (d) => d.cid === conv.id);
  const bconv = await bob.openConv(conv.id);
  return { alice, bob, conv, bconv };
}

test('send(object, cb): ack {uid, t}; peer gets "message" with id, timestamp, fromPeerId, parsed msg', async () => {
  const { alice, bob, conv } = await pair();
  const before = Date.now();
  const ack = await convCall(alice, conv, 'send', { testMsg: 'abcde', n: 1 });
  assert.equal(ack.cmd, 'ack');
  assert.equal(typeof ack.uid, 'string');
  assert.ok(ack.uid.length > 0);
  assert.equal(typeof ack.t, 'number');
  assert.ok(ack.t >= before - 5000 && ack.t <= Date.now() + 5000, `t=${ack.t} is server time in ms`);
  const m = await bob.waitFor('message', (d) => d.id === ack.uid);
  assert.equal(m.cmd, 'direct');
  assert.equal(m.cid, conv.id);
  assert.equal(m.timestamp, ack.t);
  assert.equal(m.fromPeerId, alice.id);
  assert.deepEqual(m.msg, { testMsg: 'abcde', n: 1 });
  assert.ok(!m.transient);
  // bob's SDK acknowledged it with {cmd:'ack', cid, mid} (no i)
  await sleep(100);
  const acks = bob.frames('out').map((f) => JSON.parse(f.data)).filter((f) => f.cmd === 'ack');
  assert.deepEqual(acks.at(-1), { cmd: 'ack', cid: conv.id, mid: ack.uid, peerId: bob.id });
});

test('send(string): plain text arrives as the same string; a JSON-looking string arrives parsed', async () => {
  const { alice, bob, conv } = await pair();
  const a1 = await convCall(alice, conv, 'send', 'hello, <world> 你好');
  const a2 = await convCall(alice, conv, 'send', '{"looks":"json"}');
  assert.equal((await bob.waitFor('message', (d) => d.id === a1.uid)).msg, 'hello, <world> 你好');
  assert.deepEqual((await bob.waitFor('message', (d) => d.id === a2.uid)).msg, { looks: 'json' });
});

test('messages arrive in send order with distinct ids', async () => {
  const { alice, bob, conv } = await pair();
  const acks = [];
  for (let n = 0; n < 15; n++) acks.push(await convCall(alice, conv, 'send', { n }));
  const got = await bob.waitForCount('message', 15, (d) => d.cid === conv.id);
  assert.deepEqual(got.map((m) => m.msg.n), [...Array(15).keys()]);
  assert.deepEqual(got.map((m) => m.id), acks.map((a) => a.uid));
  assert.equal(new Set(acks.map((a) => a.uid)).size, 15);
  for (let n = 1; n < acks.length; n++) assert.ok(acks[n].t >= acks[n - 1].t, 'timestamps non-decreasing');
});

test('conv.receive(cb) only sees its own conversation; the "message" event sees all', async () => {
  const { alice, bob, conv, bconv } = await pair();
  const other = await alice.createConv({ members: [bob.id], name: 'other' });
  const mine = [];
  bconv.receive((d) => mine.push(d));
  const a1 = await convCall(alice, other, 'send', { where: 'other' });
  const a2 = await convCall(alice, conv, 'send', { where: 'chat' });
  await bob.waitFor('message', (d) => d.id === a1.uid);
  await bob.waitFor('message', (d) => d.id === a2.uid);
  await sleep(100);
  assert.deepEqual(mine.map((d) => d.id), [a2.uid]);
  assert.deepEqual(mine[0].msg, { where: 'chat' });
});

test('send(data, {receipt:true}, cb): sender gets "receipt" (rcp {cid, id, t, from}) and conv.receipt(cb) sees it', async () => {
  const { alice, bob, conv } = await pair();
  const receipts = [];
  conv.receipt((d) => receipts.push(d));
  const since = alice.mark();
  const ack = await alice.request((cb) => conv.send({ abc: 123 }, { receipt: true }, cb), { what: 'send receipt' });
  const sent = alice.frames('out').map((f) => JSON.parse(f.data)).find((f) => f.cmd === 'direct' && f.i === ack.i);
  assert.equal(sent.r, 1);
  await bob.waitFor('message', (d) => d.id === ack.uid);
  const rcp = await alice.waitFor('receipt', (d) => d.cid === conv.id, { since });
  assert.equal(rcp.cmd, 'rcp');
  assert.equal(rcp.id, ack.uid);
  assert.equal(typeof rcp.t, 'number');
  assert.ok(rcp.t >= ack.t);
  assert.equal(rcp.from, bob.id);
  await sleep(50);
  assert.deepEqual(receipts.map((r) => r.id), [ack.uid]);
  // a message without receipt produces none
  const since2 = alice.mark();
  const plain = await convCall(alice, conv, 'send', { no: 'receipt' });
  await bob.waitFor('message', (d) => d.id === plain.uid);
  await sleep(QUIET_MS);
  assert.equal(alice.seen('receipt', since2).length, 0);
});

test('send(data, {transient:true}): delivered to online members with transient:true, never stored', async () => {
  const { alice, bob, conv, bconv } = await pair();
  const bobSince = bob.mark();
  conv.send({ typing: true }, { transient: true }, () => {});
  const m = await bob.waitFor('message', (d) => d.cid === conv.id && d.msg && d.msg.typing === true, { since: bobSince });
  assert.equal(m.transient, true);
  assert.equal(m.fromPeerId, alice.id);
  // the SDK does not ack transient messages
  await sleep(100);
  assert.ok(!bob.frames('out').some((f) => { const j = JSON.parse(f.data); return j.cmd === 'ack' && j.mid === m.id; }));
  // not in history
  const ack = await convCall(alice, conv, 'send', { durable: true });
  await bob.waitFor('message', (d) => d.id === ack.uid);
  const logs = await convCall(bob, bconv, 'log');
  assert.deepEqual(logs.map((l) => l.msg), [{ durable: true }]);
});

const media = {
  text: [{ text: 'hi there', attr: { a: 1 } }, (m) => { assert.equal(m.text, 'hi there'); assert.deepEqual(m.attr, { a: 1 }); }],
  image: [{ text: 'pic', url: 'http://files.example/p.png', objectId: 'f1', metaData: { name: 'p.png', format: 'png', height: 10, width: 20, size: 300 } },
    (m) => { assert.equal(m.url, 'http://files.example/p.png'); assert.deepEqual(m.metaData, { name: 'p.png', format: 'png', height: 10, width: 20, size: 300 }); }],
  audio: [{ text: 'song', url: 'http://files.example/a.mp3', metaData: { name: 'a.mp3', format: 'mp3', duration: 3.5, size: 1000 } },
    (m) => { assert.equal(m.url, 'http://files.example/a.mp3'); assert.equal(m.metaData.duration, 3.5); }],
  video: [{ text: 'clip', url: 'http://files.example/v.mp4', metaData: { name: 'v.mp4', format: 'mp4', duration: 9, size: 5000 } },
    (m) => { assert.equal(m.url, 'http://files.example/v.mp4'); assert.equal(m.metaData.format, 'mp4'); }],
  location: [{ text: 'here', metaData: { longitude: 116.4, latitude: 39.9 } },
    (m) => { assert.deepEqual(m.location, { longitude: 116.4, latitude: 39.9 }); }],
  file: [{ text: 'doc', metaData: { name: 'a.pdf', size: 42 } }, (m) => { assert.equal(m.text, 'doc'); }],
};

test('rich media: send(data, {type}, cb) for text/image/audio/video/location/file arrives typed (live and in log)', async () => {
  const { alice, bob, conv, bconv } = await pair();
  const acks = {};
  for (const [type, [data]] of Object.entries(media)) {
    acks[type] = await alice.request((cb) => conv.send(data, { type }, cb), { what: `send ${type}` });
  }
  for (const [type, [, check]] of Object.entries(media)) {
    const m = await bob.waitFor('message', (d) => d.id === acks[type].uid);
    assert.equal(m.msg.type, type);
    check(m.msg);
  }
  const logs = await convCall(bob, bconv, 'log');
  assert.deepEqual(logs.map((l) => l.msg.type), Object.keys(media));
  // the wire body is the _lctype JSON, passed through untouched
  const img = logs.find((l) => l.msgId === acks.image.uid);
  assert.equal(img.data.url, 'http://files.example/p.png');
});

test('custom typed body (_lctype > 0) arrives as the whole parsed object', async () => {
  const { alice, bob, conv } = await pair();
  const ack = await convCall(alice, conv, 'send', { _lctype: 7, card: 'ace' });
  const m = await bob.waitFor('message', (d) => d.id === ack.uid);
  assert.deepEqual(m.msg, { _lctype: 7, card: 'ace' });
});

test('the same clientId on two devices: the other device gets the message, the sending socket does not', async () => {
  const { alice, bob, conv } = await pair();
  const alice2 = await ctx.open(alice.id);
  const [s1, s2, sb] = [alice.mark(), alice2.mark(), bob.mark()];
  const ack = await convCall(alice, conv, 'send', { multi: 'device' });
  const other = await alice2.waitFor('message', (d) => d.id === ack.uid, { since: s2 });
  assert.equal(other.fromPeerId, alice.id);
  await bob.waitFor('message', (d) => d.id === ack.uid, { since: sb });
  await sleep(QUIET_MS);
  assert.equal(alice.seen('message', s1).length, 0, 'sender socket does not get its own message');
  // and bob's reply reaches both of alice's devices
  const bconv = await bob.openConv(conv.id);
  const back = await convCall(bob, bconv, 'send', 'reply');
  await alice.waitFor('message', (d) => d.id === back.uid);
  await alice2.waitFor('message', (d) => d.id === back.uid);
});

test('encodeHTML option: string messages arrive HTML-escaped for that client', async () => {
  const { alice, conv } = await pair();
  const carol = await ctx.open(uid('carol'), { encodeHTML: true });
  await convCall(alice, conv, 'add', carol.id);
  const ack = await convCall(alice, conv, 'send', '<b>bold</b>');
  const m = await carol.waitFor('message', (d) => d.id === ack.uid);
  assert.equal(m.msg, '&lt;b&gt;bold&lt;/b&gt;');
});

test('a message of 5 KB or less is accepted; the ack uid is unique per message', async () => {
  const { alice, bob, conv } = await pair();
  const body = 'x'.repeat(5000);
  const ack = await convCall(alice, conv, 'send', body);
  const m = await bob.waitFor('message', (d) => d.id === ack.uid);
  assert.equal(m.msg.length, 5000);
});

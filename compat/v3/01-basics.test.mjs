// leancloud-realtime@3.5.7, the older protobuf client (configBitmap 1, no RTMServers option):
// pointed at Confab by replacing its router lookup, then the APIs it shares with 4.x.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { startServer, randomApp } from '../lib/server.mjs';

const require = createRequire(import.meta.url);
const { Realtime, TextMessage } = require('leancloud-realtime-3');

let server;
let app;
const clients = [];

before(async () => {
  app = randomApp('v3');
  server = await startServer({ apps: [app] });
  const ws = server.url.replace('http://', 'ws://') + '/';
  // 3.5.7 asks https routers for the WebSocket URL; answer it locally instead.
  Realtime._fetchEndpointsInfo = () => Promise.resolve({ server: ws, secondary: ws, ttl: 3600 });
});

after(async () => {
  await Promise.all(clients.map((c) => c.close().catch(() => {})));
  await server.dispose();
});

const uid = (p) => `${p}-${Math.random().toString(36).slice(2, 8)}`;

async function client(id) {
  const c = await new Realtime({ appId: app.id, appKey: app.key }).createIMClient(id);
  clients.push(c);
  return c;
}

function waitFor(emitter, event, pred = () => true, ms = 10000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out waiting for ${event}`)), ms);
    const on = (...args) => {
      if (!pred(...args)) return;
      clearTimeout(t);
      emitter.off(event, on);
      resolve(args);
    };
    emitter.on(event, on);
  });
}

test('3.5.7: create, invite, send and receive, history, query, receipts', async () => {
  const [aId, bId] = [uid('a'), uid('b')];
  const a = await client(aId);
  const b = await client(bId);
  const invited = waitFor(b, 'invited');
  const conv = await a.createConversation({ members: [bId], name: 'v3 chat' });
  const [payload, invitedTo] = await invited;
  assert.equal(invitedTo.id, conv.id);
  assert.equal(payload.invitedBy, aId);
  const received = waitFor(b, 'message', (m) => m.text === 'hello from 3.5.7');
  // Listen before sending: the receipt can come back before the receive is awaited.
  const receipt = waitFor(conv, 'receipt');
  const sent = await conv.send(new TextMessage('hello from 3.5.7'), { receipt: true });
  const [message, inConv] = await received;
  assert.equal(message.id, sent.id, 'the receiver sees the id the sender was acknowledged with');
  assert.equal(message.from, aId);
  assert.equal(inConv.id, conv.id);
  await receipt;
  const history = await conv.queryMessages({ limit: 10 });
  assert.deepEqual(history.map((m) => m.text), ['hello from 3.5.7']);
  const found = await b.getQuery().equalTo('objectId', conv.id).find();
  assert.equal(found[0].name, 'v3 chat');
  assert.deepEqual([...found[0].members].sort(), [aId, bId].sort());
});

test('3.5.7: unread counts on login (version 3); pushOfflineMessages gets the messages themselves', async () => {
  const [aId, bId, cId] = [uid('a'), uid('b'), uid('c')];
  const a = await client(aId);
  const conv = await a.createConversation({ members: [bId, cId] });
  for (let n = 0; n < 3; n += 1) await conv.send(new TextMessage(`offline ${n}`));
  // Default (version 3): one unread count update with the last message.
  const b = await new Realtime({ appId: app.id, appKey: app.key }).createIMClient(bId);
  clients.push(b);
  const [updated] = await waitFor(b, 'unreadmessagescountupdate', (convs) => convs.some((c) => c.id === conv.id));
  const entry = updated.find((c) => c.id === conv.id);
  assert.equal(entry.unreadMessagesCount, 3);
  assert.equal(entry.lastMessage.text, 'offline 2');
  // pushOfflineMessages (version 1): the messages, oldest first.
  const c = await new Realtime({ appId: app.id, appKey: app.key, pushOfflineMessages: true }).createIMClient(cId);
  clients.push(c);
  const texts = [];
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`got ${JSON.stringify(texts)}`)), 10000);
    c.on('message', (m) => {
      texts.push(m.text);
      if (texts.length === 3) {
        clearTimeout(t);
        resolve();
      }
    });
  });
  assert.deepEqual(texts, ['offline 0', 'offline 1', 'offline 2']);
});

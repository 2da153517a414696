// After `confab import`: the unmodified 2.4.0 SDK lists its conversations and reads their history
// with the original ids and timestamps, and gets no imported message again at login.
import { after, afterEach, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { EXPECTED, GROUP, importedServer } from '../lib/imported.mjs';
import { Client, convCall, sleep, uid, useServer } from '../lib/sdk.mjs';

const [alice, bob, carol] = [uid('alice'), uid('bob'), uid('carol')];
let server;
let app;
const clients = [];

before(async () => {
  ({ server, app } = await importedServer([alice, bob, carol]));
  await server.start();
  useServer(server);
});
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});
after(async () => {
  if (server) await server.dispose();
});

async function open(id) {
  const c = await Client.open({ appId: app.id, clientId: id });
  clients.push(c);
  return c;
}

test('2.4.0 lists the imported conversation and reads its history as it was', async () => {
  const b = await open(bob);
  const found = await b.query();
  const conv = found.find((c) => c.objectId === GROUP);
  assert.ok(conv, `the imported conversation is listed: ${JSON.stringify(found.map((c) => c.objectId))}`);
  assert.equal(conv.name, 'imported team');
  assert.deepEqual([...conv.m].sort(), [alice, bob, carol].sort());
  const room = await b.openConv(GROUP);
  const logs = await convCall(b, room, 'log', { limit: 10 });
  // 2.4.0 turns rich-media text bodies into {type: 'text', text}.
  assert.deepEqual(logs.map((l) => [l.msgId, l.timestamp, l.data.text]), EXPECTED);
});

test('2.4.0 gets no imported message again at login', async () => {
  const a = await open(alice);
  await sleep(1000);
  assert.deepEqual(a.seen('message'), []);
});

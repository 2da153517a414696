// After `confab import`: the unmodified 4.3.1 SDK sees its conversations, members, attributes, roles
// (getAllMemberInfo over REST with its session token) and history with the original ids and
// timestamps, and nothing imported arrives again as a new or unread message.
import { after, afterEach, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { EXPECTED, GROUP, ROOM, importedServer } from '../lib/imported.mjs';
import { LC, RT, sleep, uid } from '../lib/sdk4.mjs';

const require = createRequire(import.meta.url);
// The SDK calls its REST API at https://<api>/…; Confab here speaks plain HTTP. Only the scheme
// changes, on the SDK's own axios, before the request leaves.
const axios = createRequire(require.resolve('leancloud-realtime-4'))('axios');
axios.interceptors.request.use((config) => ({ ...config, url: config.url.replace(/^https:\/\/127\.0\.0\.1:/, 'http://127.0.0.1:') }));

const [alice, bob, carol] = [uid('alice'), uid('bob'), uid('carol')];
let server;
let app;
const rts = [];

before(async () => {
  ({ server, app } = await importedServer([alice, bob, carol]));
  await server.start();
});
afterEach(async () => {
  await Promise.all(rts.splice(0).map((rt) => rt.close()));
});
after(async () => {
  if (server) await server.dispose();
});

async function open(id) {
  const rt = new RT(server, app, { extra: { server: { RTMRouter: `127.0.0.1:${server.port}`, api: `127.0.0.1:${server.port}` } } });
  rts.push(rt);
  return rt.createClient(id);
}

test('conversations, attributes and members are there, with nothing unread and nothing pushed again', async () => {
  const c = await open(carol);
  const convs = await c.im.getQuery().containsMembers([carol]).find();
  assert.deepEqual(convs.map((x) => x.id), [GROUP]);
  const conv = convs[0];
  assert.equal(conv.name, 'imported team');
  assert.equal(conv.creator, alice);
  assert.deepEqual([...conv.members].sort(), [alice, bob, carol].sort());
  assert.deepEqual(conv.get('attr'), { topic: 'launch' });
  assert.deepEqual(conv.mutedMembers, [carol]);
  await sleep(1000);
  assert.equal(c.seen('message').length, 0, 'no imported message arrives as new');
  const unread = c.seen('unreadmessagescountupdate').flatMap((args) => args[0]).filter((x) => x.id === GROUP);
  assert.ok(unread.every((x) => x.unreadMessagesCount === 0), JSON.stringify(unread.map((x) => x.unreadMessagesCount)));
});

test('history keeps ids and timestamps; the tied message comes 1 ms later, in id order', async () => {
  const b = await open(bob);
  const conv = await b.im.getConversation(GROUP);
  const page = await conv.queryMessages({ limit: 10 });
  assert.deepEqual(page.map((m) => [m.id, m.timestamp.getTime(), m.text]), EXPECTED);
  const older = await conv.queryMessages({ limit: 2, startTime: page[2].timestamp, startMessageId: page[2].id });
  assert.deepEqual(older.map((m) => m.id), EXPECTED.slice(0, 2).map((e) => e[0]));
  const room = await b.im.getConversation(ROOM);
  const inRoom = await room.queryMessages({ limit: 10 });
  assert.deepEqual(inRoom.map((m) => m.text), ['in the room']);
});

test('getAllMemberInfo reads the imported roles over REST with the session token', async () => {
  const a = await open(alice);
  const conv = await a.im.getConversation(GROUP);
  const infos = await conv.getAllMemberInfo({ noCache: true });
  const roles = Object.fromEntries(infos.map((i) => [i.memberId, i.role]));
  assert.deepEqual(roles, { [alice]: LC.ConversationMemberRole.OWNER, [bob]: LC.ConversationMemberRole.MANAGER, [carol]: LC.ConversationMemberRole.MEMBER });
});

test('new messages follow the imported ones', async () => {
  const a = await open(alice);
  const b = await open(bob);
  const conv = await a.im.getConversation(GROUP);
  const sent = await conv.send(new LC.TextMessage('after the move'));
  assert.ok(sent.timestamp.getTime() > EXPECTED.at(-1)[1]);
  const [got] = await b.waitFor('message', (m) => m.id === sent.id);
  assert.equal(got.text, 'after the move');
});

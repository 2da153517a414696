// An export directory as LeanCloud's console and `confab pull` write it (hand-made here, with a
// tie of timestamps, a role, a mute and a chat room), imported with `confab import` into a server's
// data directory before the server starts: what unmodified SDKs must see after a move.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { confabBinary, createServer, randomApp } from './server.mjs';

export const GROUP = '5c4a0e1d2f3a4b5c6d7e8f90';
export const ROOM = '5c4a0e1d2f3a4b5c6d7e8f91';
export const T0 = 1_700_000_000_000;

const body = (text) => JSON.stringify({ _lctype: -1, _lctext: text });

/** The group's records in the file (any order), and as Confab keeps them: b ties with a, so it moves 1 ms. */
export const RECORDS = [
  { 'msg-id': 'HistMsg00000000000000c', timestamp: T0 + 10, from: 'bob', data: body('third'), bin: false },
  { 'msg-id': 'HistMsg00000000000000a', timestamp: T0, from: 'alice', data: body('first'), bin: false },
  { 'msg-id': 'HistMsg00000000000000b', timestamp: T0, from: 'carol', data: body('second'), bin: false },
  { 'msg-id': 'HistMsg00000000000000d', timestamp: T0 + 20, from: 'alice', data: body('fourth'), bin: false },
];
export const EXPECTED = [
  ['HistMsg00000000000000a', T0, 'first'],
  ['HistMsg00000000000000b', T0 + 1, 'second'],
  ['HistMsg00000000000000c', T0 + 10, 'third'],
  ['HistMsg00000000000000d', T0 + 20, 'fourth'],
];

function writeExport(dir, clients) {
  const [alice, bob, carol] = clients;
  const date = (ms) => new Date(ms).toISOString();
  const rows = [
    { objectId: GROUP, name: 'imported team', c: alice, m: [alice, bob, carol], mu: [carol], attr: { topic: 'launch' },
      ACL: { '*': { read: true, write: true } }, lm: { __type: 'Date', iso: date(T0 + 20) },
      createdAt: date(T0 - 86_400_000), updatedAt: date(T0 - 3_600_000) },
    { objectId: ROOM, name: 'imported lobby', tr: true, c: alice, m: [],
      createdAt: date(T0 - 86_400_000), updatedAt: date(T0 - 86_400_000) },
  ];
  writeFileSync(path.join(dir, '_Conversation.jsonl'), rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  writeFileSync(path.join(dir, '_ConversationMemberInfo.jsonl'),
    JSON.stringify({ objectId: 'info1', cid: GROUP, clientId: bob, role: 'Manager' }) + '\n');
  mkdirSync(path.join(dir, 'messages'));
  const records = RECORDS.map((r) => ({ ...r, from: { alice, bob, carol }[r.from], 'conv-id': GROUP, to: GROUP, 'is-conv': true }));
  writeFileSync(path.join(dir, 'messages', `${GROUP}.json`), JSON.stringify(records));
  writeFileSync(path.join(dir, 'messages', `${ROOM}.json`),
    JSON.stringify([{ 'msg-id': 'RoomMsg0000000000000001', timestamp: T0 + 5, from: bob, data: body('in the room') }]));
}

/**
 * A server (not started) of a fresh app whose store (data directory, or a cluster's database) holds
 * the import of an export for the clients [alice, bob, carol]; resolves to {server, app, report}.
 */
export async function importedServer(clients) {
  const app = randomApp('imp');
  const server = createServer({ apps: [app] });
  await server.prepare();
  const exportDir = mkdtempSync(path.join(tmpdir(), 'confab-export-'));
  try {
    writeExport(exportDir, clients);
    const r = spawnSync(confabBinary(), ['import', ...server.storeArgs(), '--app', app.id, exportDir], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`confab import failed (${r.status}): ${r.stderr}`);
    return { server, app, report: JSON.parse(r.stdout) };
  } finally {
    rmSync(exportDir, { recursive: true, force: true });
  }
}

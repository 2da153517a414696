// Compile-only checks of the declarations (tsc --strict). Lines marked @ts-expect-error must fail.
import realtime, { type Conversation, type RealtimeObject, type Message } from './index.js';
import './global.js';

async function main() {
  const rt = realtime({ appId: 'a', clientId: 'c', server: 'https://im.example.com' }, (r) => r.clientId);
  const same: RealtimeObject = rt.on('open', () => {}).once('close', () => {}).off('open').emit('x', { y: 1 });
  rt.on('message', (m) => m.msg);
  rt.on('error', (e) => (e.code === 'TIMEOUT' ? 0 : e.code));
  rt.on('custom-event', (d) => d);
  const opened: RealtimeObject = await rt;
  const room = rt.conv({ members: ['b'], data: { title: 't' } }, (c) => c.id);
  const created: Conversation = await room;
  const found: Conversation | null = await opened.room('cid');
  room.add('x', (d) => d.op).remove(['x']).join().leave();
  const ack = await room.send({ a: 1 }, { receipt: true });
  const mid: string = ack.uid;
  const nothing: void = await room.send('x', { transient: true });
  room.send({ text: 'hi' }, { type: 'text' }, (a) => a.t);
  const logs = await room.log({ limit: 5 });
  logs[0].fromPeerId.toUpperCase();
  room.receive((m: Message) => m.cid).receipt((r) => r.t);
  const n: number = await room.count();
  const members: string[] = await room.list();
  const online: string[] = await rt.ping(['a', 'b']);
  await room.ping('a');
  await room.update({ name: 'n' });
  const convs = await rt.query({ where: { m: 'c' }, limit: 5 });
  convs[0].objectId;
  rt.query((r) => r.length);
  realtime.config({ WebSocket: class { constructor(public url: string) {} } });
  const v: string = realtime.version;
  const esc: string = realtime.encodeHTML('<b>');
  AV.realtime({ appId: 'a', clientId: 'c' }).close();
  void [same, created, found, mid, nothing, n, members, online, v, esc];

  // @ts-expect-error appId is required
  realtime({ clientId: 'c' });
  // @ts-expect-error clientId must be a string
  realtime({ appId: 'a', clientId: 1 });
  // @ts-expect-error unknown media type
  room.send('x', { type: 'sticker' });
  // @ts-expect-error ping needs ids
  rt.ping();
  // @ts-expect-error members must be strings
  room.add([1, 2]);
  // @ts-expect-error count() resolves to a number
  const s: string = await room.count();
  // @ts-expect-error the error listener gets an error, not a message
  rt.on('error', (e: Message) => e);
  // @ts-expect-error close() is not a request
  await rt.close().then;
  void s;
}
void main;

// Compile-only checks of the declarations (tsc --strict). Lines marked @ts-expect-error must fail.
import realtime, { type Conversation, type RealtimeObject, type Message, type Ack, type Frame } from './index.js';
import './global.js';

/** Exactly-equal types (not merely assignable). */
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
/** exact<Want>()(value) compiles only when value's type is exactly Want. */
const exact =
  <Want>() =>
  <Got>(got: Got, ..._: Equal<Got, Want> extends true ? [] : [never]) =>
    got;
const isRt = exact<RealtimeObject>();
const isRoom = exact<Conversation>();

async function main() {
  const f = () => {};
  // AV.realtime() returns the RealtimeObject itself (not a thenable); its callback gets it.
  const rt = isRt(realtime({ appId: 'a', clientId: 'c', server: 'https://im.example.com' }, (r) => isRt(r).clientId));
  // Every RealtimeObject method of the manual returns the RealtimeObject, with or without callbacks.
  isRt(rt.open());
  isRt(rt.open((r) => isRt(r)));
  isRt(rt.on('open', f).once('close', f).off('open', f).emit('x', { y: 1 }).emit('x'));
  isRt(rt.query((list) => list.length));
  isRt(rt.query({ where: { m: 'c' }, limit: 5 }, (list) => list[0].objectId));
  isRt(rt.ping(['a', 'b'], (online) => online.length));
  isRt(rt.ping('a', (online) => online.length));
  isRt(rt.close());
  rt.on('message', (m) => m.msg);
  rt.on('error', (e) => (e.code === 'TIMEOUT' ? 0 : e.code));
  rt.on('custom-event', (d) => d);
  // conv/room return the room; their callback gets a room (the same one, at run time).
  const room = isRoom(rt.conv({ members: ['b'], data: { title: 't' } }, (c) => isRoom(c).id));
  isRoom(rt.room({ members: ['b'] }));
  isRoom(rt.conv((c) => isRoom(c)));
  isRoom(rt.conv('cid', (c) => c?.id));
  isRoom(rt.room('cid'));
  // Every room method of the manual returns the room, with or without the optional callbacks.
  isRoom(room.add('x').add(['x', 'y'], (d) => d.op));
  isRoom(room.remove('x').remove(['x'], (d) => d.op));
  isRoom(room.join().join((d) => d.op));
  isRoom(room.leave().leave((d) => d.op));
  isRoom(room.send('a').send({ b: 1 }).send('c', (a) => a.uid));
  isRoom(room.send('d', { receipt: true }).send('e', { type: 'text' }, (a) => a.t));
  isRoom(room.send('f', { transient: true }, () => {}));
  isRoom(room.log().log((l) => l[0].fromPeerId).log({ limit: 5 }, (l) => l.length));
  isRoom(room.receive((m: Message) => m.cid).receipt((r) => r.t));
  isRoom(room.list((m) => m.length).count((n) => n.toFixed()));
  isRoom(room.update({ name: 'n' }).update({ attr: {} }, (d) => d.op));
  isRoom(room.ping('a', (online) => online.length));

  // The Promise style lives under its own names.
  const opened = isRt(await rt.openAsync());
  const created: Conversation = await rt.convAsync({ members: ['b'] });
  const found: Conversation | null = await opened.roomAsync('cid');
  const ack: Ack = await room.sendAsync({ a: 1 }, { receipt: true });
  const mid: string = ack.uid;
  const nothing: void = await room.sendAsync('x', { transient: true });
  const logs = await room.logAsync({ limit: 5 });
  logs[0].fromPeerId.toUpperCase();
  const n: number = await room.countAsync();
  const members: string[] = await room.listAsync();
  const online: string[] = await rt.pingAsync(['a', 'b']);
  await room.pingAsync('a');
  const reply: Frame = await room.updateAsync({ name: 'n' });
  await Promise.all([room.addAsync('x'), room.removeAsync(['x']), room.joinAsync(), room.leaveAsync()]);
  const convs = await rt.queryAsync({ where: { m: 'c' }, limit: 5 });
  convs[0].objectId;
  realtime.config({ WebSocket: class { constructor(public url: string) {} } });
  const v: string = realtime.version;
  const esc: string = realtime.encodeHTML('<b>');
  isRt(AV.realtime({ appId: 'a', clientId: 'c' }).close());
  void [created, found, mid, nothing, n, members, online, v, esc, reply];

  // @ts-expect-error appId is required
  realtime({ clientId: 'c' });
  // @ts-expect-error clientId must be a string
  realtime({ appId: 'a', clientId: 1 });
  // @ts-expect-error a RealtimeObject is not a thenable
  rt.then;
  // @ts-expect-error a room is not a thenable
  room.then;
  // @ts-expect-error send() returns the room, not a Promise of the ack
  const notAck: Ack = room.send('x');
  // @ts-expect-error unknown media type
  room.send('x', { type: 'sticker' });
  // @ts-expect-error ping needs ids
  rt.ping();
  // @ts-expect-error ping needs a callback (必须); pingAsync does not
  rt.ping(['a']);
  // @ts-expect-error room.ping needs a callback (必须)
  room.ping('a');
  // @ts-expect-error query needs a callback (必须)
  rt.query();
  // @ts-expect-error query(options) needs a callback (必须)
  rt.query({ limit: 1 });
  // @ts-expect-error list needs a callback (必须)
  room.list();
  // @ts-expect-error count needs a callback (必须)
  room.count();
  // @ts-expect-error receive needs a callback (必须)
  room.receive();
  // @ts-expect-error once needs a callback
  rt.once('open');
  // @ts-expect-error off needs the function to remove
  rt.off('open');
  // @ts-expect-error emit needs an event name
  rt.emit();
  // @ts-expect-error members must be strings
  room.add([1, 2]);
  // @ts-expect-error countAsync() resolves to a number
  const s: string = await room.countAsync();
  // @ts-expect-error the error listener gets an error, not a message
  rt.on('error', (e: Message) => e);
  // @ts-expect-error close() is not a request: no closeAsync
  rt.closeAsync();
  void [s, notAck];
}
void main;

// The standard WHATWG WebSocket path (browsers, Node >= 22, or Node 20 with
// --experimental-websocket): no WebSocket passed in, globalThis.WebSocket is used.
import { it } from 'node:test';
import assert from 'node:assert/strict';
import realtime from '../../src/index.js';
import { startFake, once } from './fake-server.js';

it('uses globalThis.WebSocket when none is injected', { skip: typeof globalThis.WebSocket != 'function' && 'no global WebSocket in this Node' }, async () => {
  const fake = await startFake();
  try {
    const rt = realtime({ appId: 'app', clientId: 'std', server: fake.http });
    assert.equal(await rt.openAsync(), rt);
    const room = await rt.convAsync({ members: [] });
    assert.ok((await room.sendAsync('hi')).uid);
    const got = once(rt, 'message');
    fake.push({ cmd: 'direct', cid: room.id, id: 'w1', msg: 'back' });
    assert.equal((await got).msg, 'back');
    fake.dropAll();
    await once(rt, 'open', 5000);
    rt.close();
  } finally {
    await fake.stop();
  }
});

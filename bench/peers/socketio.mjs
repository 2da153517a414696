// Socket.IO 4 peer for confab-bench: the equivalent of Confab's chat room and 1:1 sends.
//   join(room, ack)          -> socket joins the room, ack()
//   m(room, body, ack)       -> everyone else in the room gets m(body); the sender gets ack({t})
//   a(room, id)              -> a member's ack of a delivered message (the load tool's
//                               stand-in for Confab's `ack {cid, mid}`, same frame size):
//                               decoded by Socket.IO, then nothing, no answer
// No persistence, no per-message ids: this is what Socket.IO does out of the box.
//
// With REDIS_URL=redis://HOST:PORT set, this process is one node of a cluster: rooms span
// every process started with the same REDIS_URL, through `@socket.io/redis-adapter` (its
// documented setup: one publishing and one subscribing node-redis client). It prints its
// address only once both Redis connections are up.
// Listens on 127.0.0.1 only, on a free port; prints "listening on http://HOST:PORT".
import { createServer } from 'node:http';
import { Server } from 'socket.io';

const http = createServer();
const io = new Server(http, { transports: ['websocket'], serveClient: false, perMessageDeflate: false });
const redisUrl = process.env.REDIS_URL;
if (redisUrl) {
  const { createClient } = await import('redis');
  const { createAdapter } = await import('@socket.io/redis-adapter');
  const pub = createClient({ url: redisUrl });
  const sub = pub.duplicate();
  for (const c of [pub, sub]) c.on('error', (e) => process.stderr.write(`redis: ${e}\n`));
  await Promise.all([pub.connect(), sub.connect()]);
  io.adapter(createAdapter(pub, sub));
}
io.on('connection', (socket) => {
  socket.on('join', (room, ack) => {
    socket.join(room);
    if (typeof ack === 'function') ack();
  });
  socket.on('a', () => {});
  socket.on('m', (room, body, ack) => {
    socket.to(room).emit('m', body);
    if (typeof ack === 'function') ack({ t: Date.now() });
  });
});
http.listen(Number(process.env.PORT || 0), '127.0.0.1', 4096, () => {
  const { address, port } = http.address();
  process.stdout.write(`listening on http://${address}:${port}\n`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));

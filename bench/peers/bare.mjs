// Bare broadcaster for confab-bench: the reference for what this machine can do with no
// protocol work (single-threaded Node; `confab-bench serve-bare` is the same in Rust). A
// client's room is its URL path (/r/NAME); every frame it sends is forwarded as is to
// the other clients of that room, and the sender gets "a" — except a text frame starting
// with "k": a member's ack of a delivered message (the load tool's stand-in for Confab's
// `ack {cid, mid}`, same size), read and dropped, the least a server can do with it.
// Listens on 127.0.0.1 only, on a free port; prints "listening on http://HOST:PORT".
import { createServer } from 'node:http';
import { WebSocketServer } from 'ws';

const http = createServer();
const wss = new WebSocketServer({ server: http, perMessageDeflate: false, clientTracking: false });
const rooms = new Map();
wss.on('connection', (ws, req) => {
  const room = req.url || '/';
  let members = rooms.get(room);
  if (!members) rooms.set(room, (members = new Set()));
  members.add(ws);
  ws.on('message', (data, isBinary) => {
    if (!isBinary && data[0] === 0x6b) return; // "k…": a member's ack
    for (const other of members) if (other !== ws) other.send(data, { binary: isBinary });
    ws.send('a');
  });
  ws.on('close', () => {
    members.delete(ws);
    if (members.size === 0) rooms.delete(room);
  });
  ws.on('error', () => {});
});
http.listen(Number(process.env.PORT || 0), '127.0.0.1', 4096, () => {
  const { address, port } = http.address();
  process.stdout.write(`listening on http://${address}:${port}\n`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));

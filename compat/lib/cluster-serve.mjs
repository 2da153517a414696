// `node lib/cluster-serve.mjs --for PID --config FILE`: runs one cluster (three nodes, PostgreSQL,
// Redis and the round-robin balancer of cluster.mjs) for a shell script such as rest/run.sh.
// Prints `listening on http://127.0.0.1:PORT` (the balancer) on stdout once every node is ready;
// node logs go to stderr. Stops everything on SIGTERM/SIGINT or when PID is gone; exits 1 as soon as
// a node dies, so the script's `kill -0` check of this process sees a dead node too.
import { ClusterServer } from './server.mjs';

const arg = (name) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
};
const owner = Number(arg('--for'));
const configFile = arg('--config');
if (!Number.isInteger(owner) || owner <= 0 || !configFile) {
  process.stderr.write('usage: node lib/cluster-serve.mjs --for PID --config FILE\n');
  process.exit(2);
}

const server = new ClusterServer({ configFile });
let stopping = false;
async function shutdown(code) {
  if (stopping) return;
  stopping = true;
  try {
    await server.dispose();
  } finally {
    process.stderr.write(server.tail(1000) + '\n');
    process.exit(code);
  }
}
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(sig, () => shutdown(0));
setInterval(() => {
  try { process.kill(owner, 0); } catch { shutdown(0); }
}, 500);

try {
  await server.start();
} catch (e) {
  process.stderr.write(`cluster did not start: ${e.stack}\n`);
  await shutdown(1);
}
for (const node of server.nodes) {
  node.exited.then((e) => {
    if (stopping) return;
    process.stderr.write(`[compat] ${node.name} exited (${JSON.stringify(e)})\n`);
    shutdown(1);
  });
}
process.stdout.write(`listening on ${server.url}\n`);

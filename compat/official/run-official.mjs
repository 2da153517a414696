// Runs leancloud-realtime@2.4.0's OWN mocha suite (node_modules/leancloud-realtime/test/specs.js,
// unmodified, in place) against a freshly started Confab server.
//
// The spec reads its fixtures from the environment: APP_ID (app id) and EXSITING_ROOM_ID (sic; an
// existing conversation it opens by id). It also expects that `query({withLastMessages:true})` for
// its client 'js-realtime-sdk-test-client1' returns, first, a conversation that has a last message.
// We seed both with a 2.4.0 client first, then start mocha with `--require lib/redirect.cjs`, which
// installs the router redirect (protocol §1.5) inside the mocha process.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { COMPAT_DIR, startServer, randomApp } from '../lib/server.mjs';
import { Client, useServer, convCall } from '../lib/sdk.mjs';

const require = createRequire(import.meta.url);
const pkgDir = path.dirname(require.resolve('leancloud-realtime/package.json'));
const spec = path.join(pkgDir, 'test', 'specs.js');
const mochaBin = require.resolve('mocha/bin/mocha.js');

const app = randomApp('official');
const server = await startServer({ apps: [app] });
let status = 1;
try {
  useServer(server);
  // Seed: client1 creates a conversation with client2 and sends a message into it, so the spec's
  // "fetch an existing room" and "withLastMessages" cases have data (LeanCloud's test app had them).
  const c1 = await Client.open({ appId: app.id, clientId: 'js-realtime-sdk-test-client1' });
  const conv = await c1.createConv({ name: 'js-realtime-sdk-seed', members: ['js-realtime-sdk-test-client2'], attr: { seeded: true } });
  await convCall(c1, conv, 'send', { seed: 'hello from the seed script' });
  c1.close();
  await c1.closed();
  process.stdout.write(`[compat] official suite: app ${app.id}, seeded room ${conv.id}, server ${server.url}\n`);

  const child = spawn(process.execPath, [
    mochaBin, '--require', path.join(COMPAT_DIR, 'lib', 'redirect.cjs'),
    '--ui', 'bdd', '--timeout', '20000', '--exit', '--reporter', 'spec', spec,
  ], {
    cwd: pkgDir,
    stdio: 'inherit',
    env: { ...process.env, APP_ID: app.id, EXSITING_ROOM_ID: conv.id, CONFAB_ROUTER_BASE: server.url },
  });
  status = await new Promise((resolve) => child.on('exit', (code, signal) => resolve(code ?? (signal ? 1 : 0))));
  if (status !== 0) process.stderr.write(`[compat] server log tail:\n${server.tail()}\n`);
} catch (e) {
  process.stderr.write(`[compat] official suite setup failed: ${e.stack}\n[compat] server log tail:\n${server.tail()}\n`);
  status = 1;
} finally {
  await server.dispose();
}
process.exit(status);

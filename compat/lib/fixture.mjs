// node:test fixture: one Confab server per test file, clients closed after each test.
import { after, afterEach, before } from 'node:test';
import { startServer, randomApp } from './server.mjs';
import { Client, useServer, listenerErrors, describe as show } from './sdk.mjs';

/**
 * Registers before/after hooks and returns a context:
 *   ctx.server, ctx.app (the --app triple), ctx.open(clientId, extraOptions) -> Client (tracked),
 *   ctx.start(clientId, extraOptions) -> Client not waited for.
 */
export function serverFixture(serverOpts = {}) {
  const ctx = { clients: [] };
  before(async () => {
    ctx.app = randomApp();
    // confab: `--app` replaces the apps of a config file, so with a config file the fixture's own
    // app goes into the file too.
    if (serverOpts.config) {
      const { id, key, masterKey } = ctx.app;
      const config = { ...serverOpts.config, apps: [{ id, key, master_key: masterKey }, ...serverOpts.config.apps] };
      ctx.server = await startServer({ config });
    } else {
      ctx.server = await startServer({ apps: [ctx.app] });
    }
    useServer(ctx.server);
  });
  afterEach(async () => {
    const clients = ctx.clients.splice(0);
    for (const c of clients) c.close();
    // The server must never die under a 2.4.0 client: report it (with its log) and restart it so
    // the remaining tests still say something.
    if (ctx.server && !ctx.server.proc) {
      const exits = JSON.stringify(ctx.server.exits.at(-1));
      const tail = ctx.server.tail();
      await ctx.server.start({ port: ctx.server.port });
      throw new Error(`confab exited during the test (${exits}); log tail:\n${tail}`);
    }
    // A 2.4.0 listener threw (e.g. on a `conv error` frame, which makes the SDK throw): that would
    // crash a Node app, so it is a compatibility failure unless the test expected it.
    const unexpected = listenerErrors.splice(0).filter((e) => !(e.method === 'error' && ctx.allowSocketErrors));
    if (unexpected.length) {
      throw new Error(`2.4.0 listener threw ${unexpected.length}×: ${unexpected.map((e) => `${e.method}: ${e.err && e.err.message ? e.err.message : show(e.err)}`).join('; ')}`);
    }
  });
  after(async () => {
    for (const c of ctx.clients.splice(0)) c.close();
    if (ctx.server) await ctx.server.dispose();
  });
  ctx.options = (clientId, extra = {}) => ({ appId: ctx.app.id, clientId, ...extra });
  ctx.open = async (clientId, extra = {}) => {
    const c = await Client.open(ctx.options(clientId, extra));
    ctx.clients.push(c);
    return c;
  };
  ctx.start = (clientId, extra = {}) => {
    const c = Client.start(ctx.options(clientId, extra));
    ctx.clients.push(c);
    return c;
  };
  ctx.track = (c) => { ctx.clients.push(c); return c; };
  ctx.logTail = () => (ctx.server ? ctx.server.tail() : '');
  return ctx;
}

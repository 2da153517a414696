// node:test fixture for the 4.3.1 suite: one Confab server per test file, every Realtime/IMClient
// opened through the context is closed after each test (bounded), and a dead server fails the test.
import { after, afterEach, before } from 'node:test';
import { startServer, randomApp } from './server.mjs';
import { RT, MODE } from './sdk4.mjs';

/**
 * Returns a context: ctx.server, ctx.app ({id,key,masterKey}), ctx.rt(opts) -> RT (tracked),
 * ctx.open(id, clientOptions, rtOptions) -> Client on its own Realtime (tracked).
 * serverOpts.config: extra config (TOML via server.mjs); the fixture's own app is added to it,
 * merged with serverOpts.appSettings (e.g. {signatures: {...}}).
 */
export function serverFixture(serverOpts = {}) {
  const ctx = { rts: [], mode: MODE };
  before(async () => {
    ctx.app = randomApp('v4');
    if (serverOpts.config || serverOpts.appSettings) {
      const { id, key, masterKey } = ctx.app;
      const base = serverOpts.config ?? {};
      const config = { ...base, apps: [{ id, key, master_key: masterKey, ...(serverOpts.appSettings ?? {}) }, ...(base.apps ?? [])] };
      ctx.server = await startServer({ config });
    } else {
      ctx.server = await startServer({ apps: [ctx.app] });
    }
  });
  afterEach(async () => {
    await ctx.closeAll();
    if (ctx.server && !ctx.server.proc) {
      const exits = JSON.stringify(ctx.server.exits.at(-1));
      const tail = ctx.server.tail();
      await ctx.server.start({ port: ctx.server.port });
      throw new Error(`confab exited during the test (${exits}); log tail:\n${tail}`);
    }
  });
  after(async () => {
    await ctx.closeAll();
    if (ctx.server) await ctx.server.dispose();
  });
  ctx.closeAll = async () => {
    const rts = ctx.rts.splice(0);
    await Promise.all(rts.map((rt) => rt.close()));
  };
  ctx.rt = (opts = {}) => {
    const rt = new RT(ctx.server, opts.app ?? ctx.app, opts);
    ctx.rts.push(rt);
    return rt;
  };
  ctx.open = async (id, clientOptions = {}, rtOptions = {}) => {
    const rt = ctx.rt(rtOptions);
    return rt.createClient(id, clientOptions);
  };
  ctx.logTail = () => (ctx.server ? ctx.server.tail() : '');
  return ctx;
}

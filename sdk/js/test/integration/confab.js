// Start the real Confab server binary for integration tests.
//   ../../target/debug/confab serve --listen 127.0.0.1:0 --data-dir <tmp> --app test-app:test-key:test-master
// It prints exactly one stdout line `listening on http://HOST:PORT` when ready.
// CONFAB_BIN overrides the binary path.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const BIN = process.env.CONFAB_BIN || fileURLToPath(new URL('../../../../target/debug/confab', import.meta.url));
export const APP = { id: 'test-app', key: 'test-key', master: 'test-master' };

/** @returns {Promise<{http: string, ws: string, port: number, dataDir: string, stop(): Promise<void>, restart(): Promise<any>, cleanup(): void}>} */
export async function startConfab({ dataDir, port = 0 } = {}) {
  if (!existsSync(BIN)) throw new Error(`Confab binary not found at ${BIN}: build the server (cargo build) or set CONFAB_BIN`);
  dataDir = dataDir || mkdtempSync(join(tmpdir(), 'confab-sdk-js-'));
  const child = spawn(BIN, ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, '--app', `${APP.id}:${APP.key}:${APP.master}`], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' },
  });
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
    if (process.env.CONFAB_LOG) process.stderr.write(d);
  });
  const exited = new Promise((r) => child.once('exit', r));
  const http = await new Promise((ok, ko) => {
    let out = '';
    const t = setTimeout(() => ko(new Error('confab did not print "listening on" within 20 s; stderr:\n' + stderr)), 20000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = /listening on (http:\/\/[^\s]+)/.exec(out);
      if (m) {
        clearTimeout(t);
        ok(m[1].replace(/\/$/, ''));
      }
    });
    child.once('exit', (code) => {
      clearTimeout(t);
      ko(new Error(`confab exited with ${code} before listening; stderr:\n${stderr}`));
    });
  });
  const u = new URL(http);
  const server = {
    http,
    ws: `ws://${u.host}/`,
    port: Number(u.port),
    dataDir,
    get stderr() {
      return stderr;
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
    /** Stop, then start again on the same port with the same data directory. */
    async restart() {
      await server.stop();
      for (let k = 0; ; k++) {
        try {
          return await startConfab({ dataDir, port: server.port });
        } catch (e) {
          if (k > 20) throw e;
          await new Promise((r) => setTimeout(r, 250)); // port still in TIME_WAIT etc.
        }
      }
    },
    cleanup() {
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return server;
}

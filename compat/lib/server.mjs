// Starts and stops the real Confab server binary for the compatibility suite.
//
// Contract (see the project issue / README): `confab serve [--config FILE] [--listen ADDR]
// [--data-dir DIR] [--app ID:KEY:MASTER_KEY]...`; when it accepts connections it prints exactly
// one line `listening on http://HOST:PORT` on stdout; logs go to stderr.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const COMPAT_DIR = path.resolve(here, '..');
export const REPO_ROOT = path.resolve(COMPAT_DIR, '..');

const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;
const STDERR_KEEP = 200; // lines of server log kept for failure reports

/** Path of the server binary; builds it once if it is missing and CONFAB_BIN is not set. */
export function confabBinary() {
  if (process.env.CONFAB_BIN) return process.env.CONFAB_BIN;
  const bin = path.join(REPO_ROOT, 'target', 'debug', 'confab');
  if (!existsSync(bin)) {
    process.stderr.write(`[compat] ${bin} missing: running cargo build -p confab-server\n`);
    const r = spawnSync('cargo', ['build', '-p', 'confab-server'], { cwd: REPO_ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
    if (r.status !== 0 || !existsSync(bin)) throw new Error(`cargo build -p confab-server failed (status ${r.status})`);
  }
  return bin;
}

/** Serialises a config object ({apps:[{id,key,master_key,allowed_origins,signatures:{login,conversation}}]}) as TOML. */
export function toToml(config) {
  const q = (s) => JSON.stringify(String(s)); // TOML basic strings accept JSON escapes for our ASCII ids
  const lines = [];
  for (const [k, v] of Object.entries(config)) {
    if (k === 'apps') continue;
    lines.push(`${k} = ${typeof v === 'string' ? q(v) : JSON.stringify(v)}`);
  }
  for (const app of config.apps ?? []) {
    lines.push('', '[[apps]]', `id = ${q(app.id)}`, `key = ${q(app.key)}`, `master_key = ${q(app.master_key)}`);
    if (app.allowed_origins) lines.push(`allowed_origins = [${app.allowed_origins.map(q).join(', ')}]`);
    if (app.signatures) {
      lines.push('[apps.signatures]');
      for (const [k, v] of Object.entries(app.signatures)) lines.push(`${k} = ${typeof v === 'number' ? v : v ? 'true' : 'false'}`);
    }
  }
  return lines.join('\n') + '\n';
}

let tmpCounter = 0;

export class ConfabServer {
  /**
   * @param {object} opts
   * @param {{id:string,key:string,masterKey:string}[]} [opts.apps] apps given with --app
   * @param {object} [opts.config] config written as TOML and passed with --config
   * @param {string} [opts.dataDir] reuse a data dir (default: fresh temp dir, removed on dispose)
   */
  constructor(opts = {}) {
    this.apps = opts.apps ?? [];
    this.config = opts.config;
    this.ownsDataDir = !opts.dataDir;
    this.workDir = mkdtempSync(path.join(tmpdir(), `confab-compat-${process.pid}-${tmpCounter++}-`));
    this.dataDir = opts.dataDir ?? path.join(this.workDir, 'data');
    this.configFile = undefined;
    if (this.config) {
      this.configFile = path.join(this.workDir, 'confab.toml');
      writeFileSync(this.configFile, toToml(this.config));
    }
    this.proc = undefined;
    this.url = undefined; // http://HOST:PORT
    this.port = undefined;
    this.log = [];
    this.exits = [];
  }

  /** All app ids this server knows (CLI and config file). */
  appIds() {
    return [...this.apps.map((a) => a.id), ...((this.config && this.config.apps) || []).map((a) => a.id)];
  }

  args(listen) {
    const a = ['serve', '--listen', listen, '--data-dir', this.dataDir];
    if (this.configFile) a.push('--config', this.configFile);
    for (const app of this.apps) a.push('--app', `${app.id}:${app.key}:${app.masterKey}`);
    return a;
  }

  /** Starts the server; resolves once it printed its `listening on` line. */
  async start({ port } = {}) {
    if (this.proc) throw new Error('server already running');
    const listen = `127.0.0.1:${port ?? this.port ?? 0}`;
    const bin = confabBinary();
    const proc = spawn(bin, this.args(listen), {
      cwd: this.workDir,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_BACKTRACE: '1' },
    });
    this.proc = proc;
    const pushLog = (prefix) => (chunk) => {
      for (const line of chunk.toString().split('\n')) {
        if (!line) continue;
        this.log.push(prefix + line);
        if (this.log.length > STDERR_KEEP) this.log.shift();
      }
    };
    proc.stderr.on('data', pushLog(''));
    const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
    this.exited = exited;
    exited.then((e) => { this.exits.push(e); if (this.proc === proc) this.proc = undefined; });

    const url = await new Promise((resolve, reject) => {
      let buf = '';
      let lines = 0;
      const timer = setTimeout(() => reject(new Error(`confab did not print "listening on" within ${START_TIMEOUT_MS} ms\n${this.tail()}`)), START_TIMEOUT_MS);
      proc.stdout.on('data', (chunk) => {
        buf += chunk.toString();
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          lines++;
          this.log.push('[stdout] ' + line);
          const m = /^listening on (http:\/\/[^\s/]+)\/?$/.exec(line);
          if (m) { clearTimeout(timer); resolve(m[1]); }
        }
      });
      exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`confab exited before listening (code ${code}, signal ${signal}, stdout lines ${lines})\n${this.tail()}`));
      });
    });
    this.url = url;
    this.port = Number(new URL(url).port);
    return this;
  }

  /** Stops the server: SIGTERM, then SIGKILL after a grace period. */
  async stop({ signal = 'SIGTERM' } = {}) {
    const proc = this.proc;
    if (!proc) return undefined;
    proc.kill(signal);
    const timer = setTimeout(() => proc.kill('SIGKILL'), STOP_TIMEOUT_MS);
    const r = await this.exited;
    clearTimeout(timer);
    this.proc = undefined;
    return r;
  }

  /** Stops and starts again on the same data dir and (if possible) the same port. */
  async restart(opts = {}) {
    await this.stop(opts);
    await this.start({ port: this.port });
    return this;
  }

  /** Stops the server and removes its temp dir. */
  async dispose() {
    await this.stop();
    try {
      rmSync(this.workDir, { recursive: true, force: true });
    } catch { /* ignore */ }
  }

  tail(n = 40) {
    return this.log.slice(-n).join('\n');
  }

  /** The WebSocket URL the router is expected to hand out. */
  get wsUrl() {
    return this.url.replace(/^http/, 'ws') + '/';
  }
}

/** Convenience: a started server with the given apps. */
export async function startServer(opts) {
  const s = new ConfabServer(opts);
  try {
    await s.start();
  } catch (e) {
    await s.dispose();
    throw e;
  }
  return s;
}

/** A fresh random app triple for --app. */
export function randomApp(prefix = 'app') {
  const r = () => Math.random().toString(36).slice(2, 10);
  return { id: `${prefix}-${r()}`, key: `key-${r()}`, masterKey: `master-${r()}` };
}

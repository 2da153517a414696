// Starts and stops the real Confab server binary for the compatibility suite.
//
// Contract (see the project issue / README): `confab serve [--config FILE] [--listen ADDR]
// [--data-dir DIR] [--app ID:KEY:MASTER_KEY]...`; when it accepts connections it prints exactly
// one line `listening on http://HOST:PORT` on stdout (`https://` with tls_cert/tls_key); logs go to stderr.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Balancer, CLUSTER_NODES, clusterMode, clusterServices, createDatabase, dropDatabase } from './cluster.mjs';

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
   * @param {string[]} [opts.extraArgs] more `serve` arguments (a cluster node's store, broker, node id)
   * @param {string} [opts.name] prefix of log lines in tail() (a cluster node's name)
   * @param {string} [opts.configFile] an existing config file, passed with --config as it is
   */
  constructor(opts = {}) {
    this.extraArgs = opts.extraArgs ?? [];
    this.name = opts.name;
    this.apps = opts.apps ?? [];
    this.config = opts.config;
    this.ownsDataDir = !opts.dataDir;
    this.workDir = mkdtempSync(path.join(tmpdir(), `confab-compat-${process.pid}-${tmpCounter++}-`));
    this.dataDir = opts.dataDir ?? path.join(this.workDir, 'data');
    this.configFile = opts.configFile; // an existing TOML file, used as it is
    if (this.config) {
      this.configFile = path.join(this.workDir, 'confab.toml');
      writeFileSync(this.configFile, toToml(this.config));
    }
    this.proc = undefined;
    this.url = undefined; // http://HOST:PORT (https:// when the server speaks TLS)
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
    a.push(...this.extraArgs);
    return a;
  }

  /** Nothing to prepare for a single node (a cluster creates its database here). */
  async prepare() {
    return this;
  }

  /** The arguments that name this server's data for `confab import` and `migrate`. */
  storeArgs() {
    return ['--data-dir', this.dataDir];
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
          const m = /^listening on (https?:\/\/[^\s/]+)\/?$/.exec(line);
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
    const lines = this.log.slice(-n);
    return (this.name ? lines.map((l) => `[${this.name}] ${l}`) : lines).join('\n');
  }

  /** The WebSocket URL the router is expected to hand out. */
  get wsUrl() {
    return this.url.replace(/^http/, 'ws') + '/';
  }
}

/**
 * Cluster mode (CONFAB_COMPAT_CLUSTER=1, see cluster.mjs): the same interface as ConfabServer, but
 * CLUSTER_NODES nodes sharing a database of their own and the run's Redis, behind a round-robin
 * balancer whose address is `url` / `port` / `wsUrl`. The balancer keeps its port across stop and
 * start, so a restart (all nodes, same database) looks like one server restarting on its port.
 */
export class ClusterServer {
  constructor(opts = {}) {
    this.apps = opts.apps ?? [];
    this.config = opts.config;
    this.opts = opts;
    this.database = undefined; // {name, url}
    this.nodes = [];
    this.balancer = undefined;
    this.url = undefined;
    this.port = undefined;
    this.pastExits = [];
  }

  appIds() {
    return [...this.apps.map((a) => a.id), ...((this.config && this.config.apps) || []).map((a) => a.id)];
  }

  /** Creates the cluster's database (once) and the nodes' definitions. */
  async prepare() {
    if (this.database) return this;
    const services = await clusterServices();
    this.database = await createDatabase();
    for (let i = 0; i < CLUSTER_NODES; i++) {
      this.nodes.push(new ConfabServer({
        apps: this.apps,
        config: this.config,
        configFile: this.opts.configFile,
        name: `node-${i}`,
        extraArgs: ['--store', this.database.url, '--broker', services.redis.url, '--node-id', `node-${i}`],
      }));
    }
    return this;
  }

  storeArgs() {
    if (!this.database) throw new Error('ClusterServer.storeArgs() before prepare()');
    return ['--store', this.database.url];
  }

  /** The first node's process while every node runs (fixtures check `proc` to see a dead server). */
  get proc() {
    return this.nodes.length && this.nodes.every((n) => n.proc) ? this.nodes[0].proc : undefined;
  }

  /** Every node's exits, tagged with the node's name. */
  get exits() {
    return this.nodes.flatMap((n) => n.exits.map((e) => ({ node: n.name, ...e })));
  }

  /** Starts (or, after a node died, restarts) every node, then points the balancer at them. */
  async start({ port } = {}) {
    await this.prepare();
    // After one node died the others still run: a start is a restart of all of them.
    await Promise.all(this.nodes.map((n) => n.stop()));
    if (!this.balancer) {
      this.balancer = new Balancer();
      await this.balancer.listen(port ?? 0);
      this.port = this.balancer.port;
    }
    // The first node alone runs the store's migrations, then the others join.
    await this.nodes[0].start({ port: 0 });
    // The balancer passes bytes: with TLS on the nodes, clients speak TLS through it.
    this.url = `${new URL(this.nodes[0].url).protocol}//127.0.0.1:${this.port}`;
    await Promise.all(this.nodes.slice(1).map((n) => n.start({ port: 0 })));
    this.balancer.setNodes(this.nodes.map((n) => n.url));
    return this;
  }

  /** Stops every node (SIGTERM, then SIGKILL after a grace period); the balancer keeps its port. */
  async stop(opts = {}) {
    const results = await Promise.all(this.nodes.map((n) => n.stop(opts)));
    return results[0];
  }

  /** SIGKILL to one node, as a crash; the balancer skips it while it refuses. */
  async killNode(i) {
    await this.nodes[i].stop({ signal: 'SIGKILL' });
  }

  /** Starts one stopped node again (a new port) and gives it back to the balancer. */
  async startNode(i) {
    await this.nodes[i].start({ port: 0 });
    this.balancer.setNodes(this.nodes.map((n) => n.url));
  }

  /** Each node's own `confab_sessions` gauge (open sessions on it), asked of the node directly. */
  async nodeSessions() {
    return Promise.all(this.nodes.map(async (node) => {
      const text = await (await fetch(`${node.url}/metrics`)).text();
      // One series per protocol and version (`confab_sessions{protocol="json",version="2"} 3`): their sum.
      const series = [...text.matchAll(/^confab_sessions(?:\{[^}]*\})? (\d+)$/gm)];
      if (series.length === 0) throw new Error(`no confab_sessions in ${node.name}'s /metrics`);
      return series.reduce((sum, m) => sum + Number(m[1]), 0);
    }));
  }

  /** Waits (bounded) until the nodes hold `total` sessions together, e.g. after clients closed. */
  async waitForSessions(total, timeout = 10_000) {
    const deadline = Date.now() + timeout;
    for (;;) {
      const sessions = await this.nodeSessions();
      if (sessions.reduce((a, b) => a + b, 0) === total) return sessions;
      if (Date.now() > deadline) throw new Error(`sessions per node ${sessions}, expected ${total} in all`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Stops every node and starts them again on the same database; same balancer port. */
  async restart(opts = {}) {
    const began = Date.now();
    await this.stop(opts);
    const stopped = Date.now();
    await this.start();
    // Slow restarts explain SDK reconnects that come late (4.3.1 backs off 1, 2, 4, 8, 16 s).
    process.stderr.write(`[compat] cluster ${this.database.name} restarted: stop ${stopped - began} ms, start ${Date.now() - stopped} ms\n`);
    return this;
  }

  /** Stops everything, removes the nodes' temp dirs and drops the database. */
  async dispose() {
    await Promise.all(this.nodes.map((n) => n.dispose()));
    if (this.balancer) {
      // Shows that the connections did spread (one line per cluster, on stderr).
      const counts = [...this.balancer.counts.values()];
      process.stderr.write(`[compat] cluster ${this.database?.name}: connections per node (each start) ${JSON.stringify(counts)}\n`);
      await this.balancer.close();
    }
    this.balancer = undefined;
    if (this.database) await dropDatabase(this.database.name);
  }

  /** The last lines of every node's log, each line tagged with its node. */
  tail(n = 40) {
    return this.nodes.map((node) => node.tail(n)).filter(Boolean).join('\n');
  }

  get wsUrl() {
    return this.url.replace(/^http/, 'ws') + '/';
  }
}

/** A server, not started: a ClusterServer in cluster mode, else a ConfabServer. */
export function createServer(opts) {
  return clusterMode() ? new ClusterServer(opts) : new ConfabServer(opts);
}

/** Convenience: a started server with the given apps. */
export async function startServer(opts) {
  const s = createServer(opts);
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

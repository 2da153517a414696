// Cluster mode of the compatibility suite (CONFAB_COMPAT_CLUSTER=1): every "server" a suite starts
// is three `confab serve` nodes sharing one PostgreSQL database and one Redis, behind a round-robin
// TCP balancer whose address is the server URL the suites and the SDKs use — so the SDKs' router
// calls, WebSocket connections and REST calls spread over the nodes as they would behind a
// production balancer without sticky sessions.
//
// The services are real and thrown away: Debian's PostgreSQL server programs (initdb + pg_ctl on a
// free port, own data directory, fsync on; as `postgres` through runuser when we are root, as
// PostgreSQL refuses root) and Debian's `redis-server` (free port, no persistence). They are what
// crates/confab-testkit (postgres.rs, redis.rs, balancer.rs) runs for the Rust suites, redone here
// for Node. Each runs under a guardian shell holding a pipe from this process: when this process
// ends, however it ends, the pipe closes and the guardian stops the service and removes its
// directory.
//
// run.sh starts the services once (`node lib/cluster.mjs --services-for PID`, which prints them as
// one JSON line and lives as long as PID) and hands them to every suite in CONFAB_COMPAT_SERVICES;
// a suite file run on its own starts its own. Each cluster gets a database of its own (dropped when
// the cluster is disposed), so clusters never share data; the nodes derive their Redis key space
// from the database, so clusters sharing the Redis never see each other's events either.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** How many nodes a cluster has. */
export const CLUSTER_NODES = 3;

/** Whether suites run against clusters (CONFAB_COMPAT_CLUSTER=1). */
export function clusterMode() {
  return /^(1|true|yes|on)$/i.test(process.env.CONFAB_COMPAT_CLUSTER ?? '');
}

const SERVICE_TIMEOUT_MS = 60_000;

function isRoot() {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/** The newest /usr/lib/postgresql/N/bin holding the server programs, or undefined. */
export function postgresBinDir() {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter((v) => /^\d+$/.test(v))
    .map(Number)
    .filter((v) => existsSync(path.join(root, String(v), 'bin', 'postgres')) && existsSync(path.join(root, String(v), 'bin', 'initdb')))
    .sort((a, b) => a - b);
  return versions.length ? path.join(root, String(versions.at(-1)), 'bin') : undefined;
}

/** A port of 127.0.0.1 that was free a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/** A command line for `program` of PostgreSQL's bin dir, as `postgres` when we are root. */
function pgCommand(pg, program, args) {
  const bin = path.join(pg.bin, program);
  return pg.asPostgres ? ['runuser', ['-u', 'postgres', '--', bin, ...args]] : [bin, args];
}

function runPg(pg, program, args) {
  const [cmd, argv] = pgCommand(pg, program, args);
  const r = spawnSync(cmd, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.status !== 0) throw new Error(`${program} ${args.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr}${r.error ?? ''}`);
  return r.stdout;
}

/**
 * A guardian: `sh -c script` that first waits for its stdin (a pipe from this process) to close,
 * then runs the rest of the script. Unreferenced, so it never keeps this process alive.
 */
function guardian(script) {
  const child = spawn('sh', ['-c', script], { stdio: ['pipe', 'ignore', 'ignore'], detached: true });
  child.unref();
  child.stdin.unref?.();
  child.stdin.on('error', () => {});
  return child;
}

const q = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`;

async function startPostgres() {
  const bin = postgresBinDir();
  if (!bin) throw new Error('cluster mode needs PostgreSQL server programs in /usr/lib/postgresql/*/bin (apt-get install postgresql)');
  const dir = mkdtempSync(path.join(tmpdir(), 'confab-compat-pg-'));
  const pg = { bin, dir, data: path.join(dir, 'data'), log: path.join(dir, 'server.log'), port: 0, asPostgres: isRoot() };
  if (pg.asPostgres) {
    const r = spawnSync('chown', ['-R', 'postgres:postgres', dir]);
    if (r.status !== 0) throw new Error(`chown ${dir} to postgres failed`);
  }
  // The init files only are written without syncing; the server below syncs everything it writes.
  runPg(pg, 'initdb', ['-D', pg.data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync']);
  const [stopCmd, stopArgs] = pgCommand(pg, 'pg_ctl', ['-D', pg.data, '-m', 'immediate', 'stop']);
  pg.guardian = guardian(`cat >/dev/null; ${[stopCmd, ...stopArgs].map(q).join(' ')} >/dev/null 2>&1; rm -rf ${q(dir)}`);
  // Another process may take the port between the probe and the start: try again.
  for (let attempt = 0; ; attempt++) {
    pg.port = await freePort();
    const options = `-p ${pg.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='${dir}' -c fsync=on -c synchronous_commit=on -c max_connections=300`;
    const [cmd, argv] = pgCommand(pg, 'pg_ctl', ['-D', pg.data, '-l', pg.log, '-w', '-t', '60', '-o', options, 'start']);
    const r = spawnSync(cmd, argv, { stdio: 'ignore' });
    if (r.status === 0) break;
    if (attempt >= 5) throw new Error(`PostgreSQL did not start (see ${pg.log})`);
  }
  return { bin: pg.bin, dir: pg.dir, port: pg.port, asPostgres: pg.asPostgres };
}

async function startRedis() {
  const r = spawnSync('redis-server', ['--version'], { stdio: 'ignore' });
  if (r.status !== 0) throw new Error('cluster mode needs redis-server (apt-get install redis-server)');
  const dir = mkdtempSync(path.join(tmpdir(), 'confab-compat-redis-'));
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const g = guardian(
      `redis-server --port ${port} --bind 127.0.0.1 --save '' --appendonly no --dir ${q(dir)} >${q(path.join(dir, 'redis.log'))} 2>&1 & ` +
      `server=$!; cat >/dev/null; kill -9 $server; wait $server; rm -rf ${q(dir)}`,
    );
    const exited = new Promise((resolve) => g.once('exit', () => resolve(true)));
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const ok = await new Promise((resolve) => {
        const s = net.connect(port, '127.0.0.1');
        s.once('connect', () => { s.destroy(); resolve(true); });
        s.once('error', () => resolve(false));
      });
      // Our redis-server, not something else that took the port: it answers PING.
      if (ok && spawnSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' }).stdout?.trim() === 'PONG') {
        return { url: `redis://127.0.0.1:${port}`, port, guardian: g };
      }
      if (await Promise.race([exited, sleep(50).then(() => false)])) break;
    }
    g.stdin.end();
    if (attempt >= 3) throw new Error(`redis-server did not start (see ${dir}/redis.log)`);
  }
}

let servicesPromise;

/**
 * The PostgreSQL server and Redis of this run: those run.sh started (CONFAB_COMPAT_SERVICES), else
 * our own, started once per process. {pg: {bin, dir, port, asPostgres}, redis: {url}}.
 */
export function clusterServices() {
  if (!servicesPromise) {
    servicesPromise = (async () => {
      if (process.env.CONFAB_COMPAT_SERVICES) return JSON.parse(process.env.CONFAB_COMPAT_SERVICES);
      const pg = await startPostgres();
      const redis = await startRedis();
      return { pg, redis: { url: redis.url } };
    })();
  }
  return servicesPromise;
}

let dbCounter = 0;

/** Creates a fresh database on the run's PostgreSQL; returns {name, url}. */
export async function createDatabase() {
  const { pg } = await clusterServices();
  const name = `compat_${process.pid}_${dbCounter++}`;
  runPg(pg, 'createdb', ['-h', pg.dir, '-p', String(pg.port), '-U', 'postgres', name]);
  return { name, url: `postgres://postgres@127.0.0.1:${pg.port}/${name}` };
}

/** Drops a database made by createDatabase (its nodes stopped), so a long run keeps the disk small. */
export async function dropDatabase(name) {
  const { pg } = await clusterServices();
  try {
    runPg(pg, 'dropdb', ['-h', pg.dir, '-p', String(pg.port), '-U', 'postgres', '--force', '--if-exists', name]);
  } catch (e) {
    process.stderr.write(`[compat] could not drop database ${name}: ${e.message}\n`);
  }
}

/**
 * A plain TCP balancer: each new connection goes to the next node in turn (no stickiness); a node
 * that refuses is skipped; with no node reachable the connection is closed. The node list can be
 * replaced (a restarted cluster's nodes listen on new ports) while the balancer keeps its own port.
 */
export class Balancer {
  constructor() {
    this.nodes = []; // [{host, port}]
    this.next = 0;
    this.counts = new Map(); // "host:port" -> connections handed to that node
    this.open = new Set();
    this.server = net.createServer((inbound) => this.handle(inbound));
    this.port = undefined;
  }

  /** Listens on 127.0.0.1:port (0: a free one). */
  listen(port = 0) {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', () => {
        this.server.off('error', reject);
        this.port = this.server.address().port;
        resolve(this);
      });
    });
  }

  /** Replaces the nodes: `http://HOST:PORT` URLs. */
  setNodes(urls) {
    this.nodes = urls.map((u) => {
      const { hostname, port } = new URL(u);
      return { host: hostname, port: Number(port) };
    });
  }

  handle(inbound) {
    this.open.add(inbound);
    inbound.once('close', () => this.open.delete(inbound));
    inbound.on('error', () => inbound.destroy());
    inbound.pause();
    const nodes = this.nodes.slice();
    // CONFAB_COMPAT_BALANCE=random: a random node per connection instead of the next one, to try
    // other placements of a scenario's clients (round-robin puts consecutive clients apart).
    const first = process.env.CONFAB_COMPAT_BALANCE === 'random' ? Math.floor(Math.random() * 1e9) : this.next++;
    const attempt = (i) => {
      if (inbound.destroyed) return;
      if (i >= nodes.length) { inbound.destroy(); return; }
      const node = nodes[(first + i) % nodes.length];
      const outbound = net.connect(node.port, node.host);
      let connected = false;
      outbound.once('connect', () => {
        connected = true;
        const key = `${node.host}:${node.port}`;
        this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
        this.open.add(outbound);
        outbound.once('close', () => this.open.delete(outbound));
        inbound.setNoDelay(true);
        outbound.setNoDelay(true);
        // pipe() ends the other side when one side ends, after what was read was written; a
        // reset on either side resets the other.
        inbound.pipe(outbound);
        outbound.pipe(inbound);
        // A clean close ends the other side after what it still has to write (a client's last
        // frames before it hangs up reach the node); a reset resets it.
        inbound.once('close', (hadError) => { if (hadError) outbound.destroy(); else outbound.end(); });
        outbound.once('close', (hadError) => { if (hadError) inbound.destroy(); else inbound.end(); });
        inbound.resume();
      });
      outbound.on('error', () => {
        if (!connected) attempt(i + 1);
        else outbound.destroy();
      });
    };
    attempt(0);
  }

  /** Stops listening and closes every connection. */
  close() {
    for (const s of this.open) s.destroy();
    this.open.clear();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

// `node lib/cluster.mjs --services-for PID`: starts the services, prints them as one JSON line on
// stdout and lives until PID is gone (or SIGTERM/SIGINT); the guardians then clean up.
if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf('--services-for');
  const owner = i >= 0 ? Number(process.argv[i + 1]) : NaN;
  if (!Number.isInteger(owner) || owner <= 0) {
    process.stderr.write('usage: node lib/cluster.mjs --services-for PID\n');
    process.exit(2);
  }
  delete process.env.CONFAB_COMPAT_SERVICES;
  const services = await clusterServices();
  process.stdout.write(JSON.stringify(services) + '\n');
  const alive = () => { try { process.kill(owner, 0); return true; } catch { return false; } };
  const timer = setInterval(() => { if (!alive()) process.exit(0); }, 500);
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(sig, () => { clearInterval(timer); process.exit(0); });
}

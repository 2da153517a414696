// Helpers of the console test: the real binary with its development app, JSON v2
// WebSocket clients, REST calls with the master key, and a PNG reader for screenshots.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inflateSync } from 'node:zlib';
import WebSocket from 'ws';

export const BIN =
  process.env.CONFAB_BIN || fileURLToPath(new URL('../../target/debug/confab', import.meta.url));
export const DEV_APP = 'confab-dev';
export const DEV_APP_KEY = 'confab-dev-key';

/**
 * Starts `confab serve` with no app configured, so it makes its development app
 * (`confab-dev`, master key generated into DATA_DIR/dev-master-key), on a free port of
 * 127.0.0.1 and a throw-away data directory.
 */
export async function startConfab() {
  if (!existsSync(BIN)) throw new Error(`Confab binary not found at ${BIN}: cargo build -p confab-server, or set CONFAB_BIN`);
  const dataDir = mkdtempSync(join(tmpdir(), 'confab-console-'));
  // No configuration from the environment: the development app only.
  const env = { ...process.env, CONFAB_LOG: process.env.CONFAB_LOG || 'warn' };
  for (const k of ['CONFAB_CONFIG', 'CONFAB_APPS', 'CONFAB_STORE', 'CONFAB_BROKER', 'CONFAB_LISTEN', 'CONFAB_DATA_DIR']) delete env[k];
  const child = spawn(BIN, ['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  const exited = new Promise((r) => child.once('exit', r));
  const http = await new Promise((ok, ko) => {
    let out = '';
    const timer = setTimeout(() => ko(new Error('confab did not print "listening on" within 30 s; stderr:\n' + stderr)), 30000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        ok(m[1].replace(/\/$/, ''));
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      ko(new Error(`confab exited with ${code} before listening; stderr:\n${stderr}`));
    });
  });
  const masterKey = readFileSync(join(dataDir, 'dev-master-key'), 'utf8').trim();
  return {
    http,
    ws: http.replace(/^http/, 'ws') + '/',
    masterKey,
    get stderr() {
      return stderr;
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** A REST call to `server` with the development app's master key; resolves to { status, body }. */
export async function rest(server, method, path, body) {
  const headers = { 'X-LC-Id': DEV_APP, 'X-LC-Key': `${server.masterKey},master` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(server.http + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** A client of the v2 JSON protocol (what leancloud-realtime 2.x speaks) on its own socket. */
export class Client {
  static async open(server, peerId) {
    const ws = new WebSocket(server.ws);
    await new Promise((ok, ko) => {
      ws.once('open', ok);
      ws.once('error', ko);
    });
    const client = new Client(ws, peerId);
    const reply = await client.request({ cmd: 'session', op: 'open', appId: DEV_APP, peerId, ua: 'console-test' });
    if (reply.op !== 'opened') throw new Error(`${peerId} did not log in: ${JSON.stringify(reply)}`);
    return client;
  }

  constructor(ws, peerId) {
    this.ws = ws;
    this.peerId = peerId;
    this.frames = [];
    this.serial = 0;
    this.waiters = new Set();
    this.closeCode = null;
    ws.on('message', (data) => {
      const frame = JSON.parse(String(data));
      this.frames.push(frame);
      for (const w of this.waiters) w();
    });
    ws.on('close', (code) => {
      this.closeCode = code;
      for (const w of this.waiters) w();
    });
  }

  send(frame) {
    this.ws.send(JSON.stringify(frame));
  }

  /** Sends a request with a fresh serial and resolves to its answer. */
  async request(frame) {
    const i = ++this.serial;
    const from = this.frames.length;
    this.send({ ...frame, i });
    return this.waitFor((f) => f.i === i, { from });
  }

  /** The first frame (at or after index `from`) matching `pred`, waiting up to `timeout` ms for it. */
  waitFor(pred, { from = 0, timeout = 10000 } = {}) {
    return new Promise((ok, ko) => {
      const check = () => {
        const found = this.frames.slice(from).find(pred);
        if (found) {
          this.waiters.delete(check);
          clearTimeout(timer);
          ok(found);
        }
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        ko(new Error(`${this.peerId}: no matching frame within ${timeout} ms; got ${JSON.stringify(this.frames.slice(from))}`));
      }, timeout);
      this.waiters.add(check);
      check();
    });
  }

  close() {
    this.ws.close();
  }
}

/**
 * Decodes a PNG as Chromium writes screenshots (8-bit RGB or RGBA, not interlaced):
 * { width, height, channels, pixels }.
 */
export function decodePng(buf) {
  const signature = Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]);
  if (!buf.subarray(0, 8).equals(signature)) throw new Error('not a PNG');
  let pos = 8;
  let header = null;
  const idat = [];
  while (pos + 8 <= buf.length) {
    const len = buf.readUInt32BE(pos);
    const type = buf.toString('ascii', pos + 4, pos + 8);
    const data = buf.subarray(pos + 8, pos + 8 + len);
    if (type === 'IHDR') {
      header = { width: data.readUInt32BE(0), height: data.readUInt32BE(4), depth: data[8], color: data[9], interlace: data[12] };
    } else if (type === 'IDAT') idat.push(data);
    else if (type === 'IEND') break;
    pos += 12 + len;
  }
  if (!header || header.depth !== 8 || ![2, 6].includes(header.color) || header.interlace !== 0) {
    throw new Error(`unsupported PNG: ${JSON.stringify(header)}`);
  }
  const channels = header.color === 6 ? 4 : 3;
  const stride = header.width * channels;
  const raw = inflateSync(Buffer.concat(idat));
  const pixels = Buffer.alloc(header.height * stride);
  for (let y = 0; y < header.height; y++) {
    const filter = raw[y * (stride + 1)];
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    const out = pixels.subarray(y * stride, (y + 1) * stride);
    const up = y > 0 ? pixels.subarray((y - 1) * stride, y * stride) : Buffer.alloc(stride);
    for (let x = 0; x < stride; x++) {
      const a = x >= channels ? out[x - channels] : 0;
      const b = up[x];
      const c = x >= channels ? up[x - channels] : 0;
      let v = line[x];
      if (filter === 1) v += a;
      else if (filter === 2) v += b;
      else if (filter === 3) v += (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c;
        const pa = Math.abs(p - a);
        const pb = Math.abs(p - b);
        const pc = Math.abs(p - c);
        v += pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      } else if (filter !== 0) throw new Error(`PNG filter ${filter}`);
      out[x] = v & 0xff;
    }
  }
  return { width: header.width, height: header.height, channels, pixels };
}

/** `#rrggbb` as [r, g, b]. */
export const rgb = (hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));

/**
 * Pixels of an image close to `color` ([r, g, b], within `tolerance` summed over the
 * channels), in rows `[top, bottom)`.
 */
export function countColor(image, color, { top = 0, bottom = image.height, tolerance = 60 } = {}) {
  let n = 0;
  for (let y = top; y < bottom; y++) {
    for (let x = 0; x < image.width; x++) {
      const i = (y * image.width + x) * image.channels;
      const d = Math.abs(image.pixels[i] - color[0]) + Math.abs(image.pixels[i + 1] - color[1]) + Math.abs(image.pixels[i + 2] - color[2]);
      if (d <= tolerance) n++;
    }
  }
  return n;
}

/**
 * Lines of dark text in an image: bands of consecutive pixel rows that hold at least
 * `minInk` pixels darker than `dark` in every channel (text, not the light borders,
 * stripes or coloured buttons of a table). A table body's screenshot with N rows of
 * text has at least N such bands.
 */
export function textLines(image, { dark = 120, minInk = 2 } = {}) {
  let lines = 0;
  let inLine = false;
  for (let y = 0; y < image.height; y++) {
    let ink = 0;
    for (let x = 0; x < image.width && ink < minInk; x++) {
      const i = (y * image.width + x) * image.channels;
      if (image.pixels[i] < dark && image.pixels[i + 1] < dark && image.pixels[i + 2] < dark) ink++;
    }
    const has = ink >= minInk;
    if (has && !inLine) lines++;
    inLine = has;
  }
  return lines;
}

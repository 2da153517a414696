// Small helpers shared by the 2.4.0 (sdk.mjs) and 4.3.1 (sdk4.mjs) drivers.
import crypto from 'node:crypto';

export const DEFAULT_TIMEOUT = 10_000;

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timeout after ${ms} ms: ${what}`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

export function uid(prefix = 'c') {
  return `${prefix}-${process.pid}-${Math.random().toString(36).slice(2, 9)}`;
}

/** JSON for error messages, without the sockets SDK events carry (`target` in 2.4.0, `ws` in 4.x). */
export function describe(x) {
  try {
    return JSON.stringify(x, (k, v) => (k === 'target' || k === 'ws' ? undefined : v));
  } catch {
    return String(x);
  }
}

/** HMAC-SHA1 hex over parts joined with ':' (protocol §5). */
export function sign(masterKey, parts) {
  return crypto.createHmac('sha1', masterKey).update(parts.join(':')).digest('hex');
}

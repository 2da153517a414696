// Native TLS: the unmodified 2.4.0 SDK against a server with tls_cert/tls_key. The router is
// asked over https://, hands out wss://, and the SDK's own ws@0.8 client connects to it. The
// certificate is self-signed, made here with the openssl command, and trusted as this process's
// only extra CA (https.globalAgent, which both the router request and ws@0.8 use): verification
// stays on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { serverFixture } from '../lib/fixture.mjs';
import { convCall, redirect, uid } from '../lib/sdk.mjs';

const certDir = mkdtempSync(path.join(tmpdir(), 'confab-compat-tls-'));
const cert = path.join(certDir, 'server.pem');
const key = path.join(certDir, 'server.key');
const cnf = path.join(certDir, 'openssl.cnf');
writeFileSync(cnf, [
  '[req]', 'distinguished_name = dn', 'prompt = no', 'x509_extensions = ext',
  '[dn]', 'CN = localhost',
  '[ext]', 'basicConstraints = critical,CA:FALSE', 'subjectAltName = DNS:localhost,IP:127.0.0.1', '',
].join('\n'));
const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
  '-nodes', '-days', '2', '-keyout', key, '-out', cert, '-config', cnf], { encoding: 'utf8' });
if (made.status !== 0) throw new Error(`openssl (apt-get install openssl) failed: ${made.error ?? made.stderr}`);
https.globalAgent.options.ca = readFileSync(cert);

const ctx = serverFixture({ config: { tls_cert: cert, tls_key: key, apps: [] } });

test('the router answers over https:// with a wss:// server', async () => {
  assert.match(ctx.server.url, /^https:\/\/127\.0\.0\.1:\d+$/, 'the ready line names https');
  const res = await redirect.httpGetJson(`${ctx.server.url}/v1/route?_t=${Date.now()}&appId=${ctx.app.id}&secure=1`);
  assert.equal(res.status, 200, res.body);
  assert.equal(res.json.server, ctx.server.wsUrl);
  assert.match(res.json.server, /^wss:\/\//);
});

test('two 2.4.0 clients over wss:// talk: conversation, message, receipt', async () => {
  const alice = await ctx.open(uid('alice'));
  const bob = await ctx.open(uid('bob'));
  assert.match(alice.rt.cache.server.server, /^wss:\/\//, 'the SDK connected where the router said');
  const conv = await alice.createConv({ members: [bob.id], name: 'over tls' });
  await bob.waitFor('membersjoined', (d) => d.cid === conv.id);
  const ack = await convCall(alice, conv, 'send', 'hello over tls', { receipt: true });
  const m = await bob.waitFor('message', (d) => d.id === ack.uid);
  assert.equal(m.msg, 'hello over tls');
  assert.equal(m.fromPeerId, alice.id);
  await alice.waitFor('receipt', (d) => d.id === ack.uid);
});

// The admin console (/console/) end to end: Debian's Chromium (headless, through
// playwright-core) against the real confab binary with its development app, and real
// clients of the v2 JSON protocol on WebSockets. Every step checks what happened on the
// server's side too: the message a client received, the recall it was told about, the
// kick that closed its session with 4115, the broadcast a subscriber got.
//
// Screenshots go to $CONSOLE_SCREENSHOTS (else a fresh temporary directory, printed);
// the charts' screenshots are decoded and their line colour counted, and the tables'
// lines of text counted, so an empty chart or table fails the test.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { Client, DEV_APP, DEV_APP_KEY, countColor, decodePng, rest, rgb, startConfab, textLines } from './lib.mjs';

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const ARGS = ['--no-sandbox', '--headless', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];
const SHOTS = process.env.CONSOLE_SCREENSHOTS || mkdtempSync(join(tmpdir(), 'confab-console-shots-'));
/** Each chart's series colours (console.js COLORS). */
const SERIES = {
  'chart-sessions': [rgb('#2563eb'), rgb('#9333ea')],
  'chart-messages': [rgb('#2563eb'), rgb('#16a34a')],
  'chart-latency': [rgb('#2563eb'), rgb('#ea580c')],
};

let server;
let browser;
let context;
let page;
let alice;
let bob;
let cid;
/** How much the server had logged when it started. */
let startupLog = 0;
/** Problems the page reported: uncaught errors, console errors (CSP violations among them). */
const problems = [];
/** Every URL the console page requested. */
const requested = [];

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: apt-get install -y chromium`);
  mkdirSync(SHOTS, { recursive: true });
  console.log(`# screenshots: ${SHOTS}`);
  server = await startConfab();
  startupLog = server.stderr.length;
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
  context = await browser.newContext({ locale: 'en-US', viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    // A refused sign-in is a 401 the browser logs as a failed load; anything else counts.
    if (m.type() === 'error' && !/Failed to load resource.*401/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  page.on('request', (r) => requested.push(r.url()));
  // Recall and kick ask for confirmation.
  page.on('dialog', (d) => d.accept());
});

after(async () => {
  for (const c of [alice, bob]) if (c) c.close();
  if (browser) await browser.close();
  if (server) await server.stop();
});

/** Saves a screenshot of the page (or of one element) and returns the PNG. */
async function shot(name, selector) {
  const path = join(SHOTS, `${name}.png`);
  if (selector) await page.locator(selector).screenshot({ path });
  else await page.screenshot({ path, fullPage: true });
  return readFileSync(path);
}

/** Pixels of a chart's series drawn above its zero line, counted in a screenshot of the chart. */
async function chartPixelsInScreenshot(id) {
  const image = decodePng(await shot(id, `#${id}`));
  // The zero line sits 10 px (times the device ratio) above the bottom; count above it.
  return SERIES[id].reduce((n, color) => n + countColor(image, color, { bottom: Math.floor(image.height * 0.85) }), 0);
}

/** The same, read from the canvas itself. */
function chartPixelsInCanvas(id) {
  return page.evaluate(
    ([id, colors]) => {
      const canvas = document.getElementById(id);
      const { data, width, height } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
      let n = 0;
      for (let y = 0; y < Math.floor(height * 0.85); y++) {
        for (let x = 0; x < width; x++) {
          const i = (y * width + x) * 4;
          const near = ([r, g, b]) => Math.abs(data[i] - r) + Math.abs(data[i + 1] - g) + Math.abs(data[i + 2] - b) <= 60;
          if (colors.some(near)) n++;
        }
      }
      return n;
    },
    [id, SERIES[id]],
  );
}

const rows = (selector) => page.locator(`${selector} tbody tr:not(.empty)`);

/**
 * Screenshots a table's body and checks the picture, not only the DOM: at least `count`
 * rows of text are drawn in it.
 */
async function assertTableShot(name, selector, count) {
  const lines = textLines(decodePng(await shot(name, `${selector} tbody`)));
  assert.ok(lines >= count, `${name}: ${lines} lines of text drawn in ${selector}, expected ≥ ${count}`);
}
const cellTexts = (selector, column) =>
  page.$$eval(`${selector} tbody tr:not(.empty)`, (trs, c) => trs.map((tr) => tr.children[c].textContent), column);

describe('the admin console in headless Chromium', { timeout: 180000 }, () => {
  it('is served from the binary with a strict CSP, its own content types and revalidation', async () => {
    const redirect = await fetch(`${server.http}/console`, { redirect: 'manual' });
    assert.equal(redirect.status, 308);
    assert.equal(redirect.headers.get('location'), '/console/');
    const expected = {
      '/console/': 'text/html; charset=utf-8',
      '/console/console.js': 'text/javascript; charset=utf-8',
      '/console/console.css': 'text/css; charset=utf-8',
    };
    for (const [path, type] of Object.entries(expected)) {
      const res = await fetch(server.http + path);
      assert.equal(res.status, 200, path);
      assert.equal(res.headers.get('content-type'), type, path);
      const csp = res.headers.get('content-security-policy');
      for (const part of ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"]) {
        assert.ok(csp.includes(part), `${path}: ${csp}`);
      }
      assert.ok(!/unsafe-inline|unsafe-eval/.test(csp), csp);
      assert.equal(res.headers.get('cache-control'), 'no-cache', path);
      assert.equal(res.headers.get('x-content-type-options'), 'nosniff', path);
      const etag = res.headers.get('etag');
      const again = await fetch(server.http + path, { headers: { 'If-None-Match': etag } });
      assert.equal(again.status, 304, `${path} revalidates`);
      const html = await res.text();
      if (path === '/console/') assert.ok(!/<script>|\son\w+=|<style/i.test(html), 'no inline script or style');
    }
    const stats = await fetch(`${server.http}/console/api/stats`);
    assert.equal(stats.status, 401, 'the numbers need the master key');
    const withAppKey = await fetch(`${server.http}/console/api/stats`, { headers: { 'X-LC-Id': DEV_APP, 'X-LC-Key': DEV_APP_KEY } });
    assert.equal(withAppKey.status, 401, 'the app key is not enough');
  });

  it('signs in with the master key only, kept in the tab and never in a URL', async () => {
    await page.goto(`${server.http}/console/`);
    assert.equal(await page.textContent('#signin h2'), 'Sign in', 'English for an English browser');
    await page.fill('#app-id', DEV_APP);
    await page.fill('#master-key', DEV_APP_KEY);
    await page.click('#signin-button');
    await page.waitForSelector('#signin-error:not([hidden])');
    assert.equal(await page.textContent('#signin-error'), 'Wrong app id or master key.');
    await page.fill('#master-key', server.masterKey);
    await page.click('#signin-button');
    await page.waitForSelector('body[data-signed-in="yes"]');
    assert.equal(await page.textContent('#who'), DEV_APP);
    const stored = await page.evaluate(() => ({ session: sessionStorage.getItem('confab-console'), local: JSON.stringify(localStorage) }));
    assert.equal(JSON.parse(stored.session).masterKey, server.masterKey);
    assert.ok(!stored.local.includes(server.masterKey), 'not in localStorage');
    assert.equal(await page.inputValue('#master-key'), '', 'the key field is cleared');
  });

  it('charts online sessions, messages per second and delivery latency', async () => {
    alice = await Client.open(server, 'alice');
    bob = await Client.open(server, 'bob');
    await page.waitForFunction(() => Number(document.getElementById('chart-sessions').dataset.last) >= 2, null, { timeout: 15000 });
    // Bob acknowledges what he receives, as the SDKs do.
    bob.ws.on('message', (data) => {
      const f = JSON.parse(String(data));
      if (f.cmd === 'direct' && f.id) bob.send({ cmd: 'ack', cid: f.cid, mid: f.id });
    });
    const started = await alice.request({ cmd: 'conv', op: 'start', m: ['bob'], attr: { name: 'Weekly sync', attr: { team: 'core' } } });
    assert.equal(started.op, 'started');
    cid = started.cid;
    for (let n = 0; n < 25; n++) {
      const ack = await alice.request({ cmd: 'direct', cid, msg: `m${String(n).padStart(2, '0')}` });
      assert.equal(ack.cmd, 'ack');
    }
    await bob.waitFor((f) => f.cmd === 'direct' && f.msg === 'm24');
    await page.waitForFunction(
      () => {
        const c = (id) => document.getElementById(id).dataset;
        return Number(c('chart-messages').peak) > 0 && Number(c('chart-latency').points) > 0;
      },
      null,
      { timeout: 15000 },
    );
    for (const id of ['chart-sessions', 'chart-messages', 'chart-latency']) {
      const inCanvas = await chartPixelsInCanvas(id);
      const inShot = await chartPixelsInScreenshot(id);
      assert.ok(inCanvas > 20, `${id}: ${inCanvas} line pixels above zero in the canvas`);
      assert.ok(inShot > 20, `${id}: ${inShot} line pixels above zero in its screenshot`);
    }
    const now = await page.textContent('#now-sessions');
    assert.match(now, /this app [2-9]/, now);
    await shot('dashboard');
  });

  it('finds the conversation by member and by name, shows members, attributes, roles and pages its history', async () => {
    await page.click('button[data-tab="conversations"]');
    await page.selectOption('#conv-field', 'member');
    await page.fill('#conv-q', 'bob');
    await page.click('#conv-search button[type="submit"]');
    await page.waitForSelector(`#conv-results tr[data-cid="${cid}"]`);
    assert.ok((await rows('#conv-results').count()) > 0);
    await page.selectOption('#conv-field', 'name');
    await page.fill('#conv-q', 'weekly S');
    await page.click('#conv-search button[type="submit"]');
    await page.waitForSelector(`#conv-results tr[data-cid="${cid}"]`);
    assert.equal(await rows('#conv-results').count(), 1, 'the name search finds only it');
    await assertTableShot('conversations', '#conv-results', 1);
    await page.selectOption('#conv-field', 'id');
    await page.fill('#conv-q', cid);
    await page.click('#conv-search button[type="submit"]');
    await page.waitForFunction(
      (cid) => {
        const trs = document.querySelectorAll('#conv-results tbody tr:not(.empty)');
        return trs.length === 1 && trs[0].dataset.cid === cid;
      },
      cid,
    );
    await page.fill('#conv-q', 'no-such-conversation-id');
    await page.click('#conv-search button[type="submit"]');
    await page.waitForFunction(() => document.querySelectorAll('#conv-results tbody tr:not(.empty)').length === 0);
    await page.fill('#conv-q', cid);
    await page.click('#conv-search button[type="submit"]');
    await page.waitForSelector(`#conv-results tr[data-cid="${cid}"]`);

    await page.click(`#conv-results tr[data-cid="${cid}"] button`);
    await page.waitForSelector('#history tbody tr[data-mid]');
    assert.equal(await page.textContent('#conv-id'), cid);
    assert.equal(await page.textContent('#conv-kind'), 'Normal');
    assert.deepEqual((await page.$$eval('#conv-members li', (lis) => lis.map((l) => l.textContent))).sort(), ['alice', 'bob']);
    assert.deepEqual(JSON.parse(await page.textContent('#conv-attrs')), { name: 'Weekly sync', attr: { team: 'core' } });
    assert.deepEqual(await cellTexts('#conv-roles', 0), ['alice'], 'the creator owns it');

    // 25 messages: a page of the newest 20, then the oldest 5, then back.
    assert.equal(await rows('#history').count(), 20);
    const first = await cellTexts('#history', 2);
    assert.equal(first[0], 'm24');
    assert.equal(first[19], 'm05');
    assert.equal(await page.textContent('#history-page'), 'Page 1');
    await assertTableShot('history-page-1', '#history', 20);
    await page.click('#history-older');
    await page.waitForFunction(() => document.querySelectorAll('#history tbody tr[data-mid]').length === 5);
    assert.deepEqual(await cellTexts('#history', 2), ['m04', 'm03', 'm02', 'm01', 'm00']);
    assert.equal(await page.textContent('#history-page'), 'Page 2');
    assert.equal(await page.isDisabled('#history-older'), true);
    await page.click('#history-newer');
    await page.waitForFunction(() => document.querySelectorAll('#history tbody tr[data-mid]').length === 20);
  });

  it('sends a message as a client, which a connected member receives, and recalls it', async () => {
    const from = bob.frames.length;
    await page.fill('#send-from', 'alice');
    await page.fill('#send-text', 'hello <b>from</b> the console');
    await page.click('#send-form button[type="submit"]');
    const pushed = await bob.waitFor((f) => f.cmd === 'direct' && f.cid === cid, { from });
    assert.equal(pushed.fromPeerId, 'alice');
    assert.deepEqual(JSON.parse(pushed.msg), { _lctype: -1, _lctext: 'hello <b>from</b> the console' });
    await page.waitForSelector(`#history tbody tr[data-mid="${pushed.id}"]`);
    // Text, not markup.
    assert.equal(await page.textContent(`#history tbody tr[data-mid="${pushed.id}"] td.content`), 'hello <b>from</b> the console');
    assert.equal(await page.locator('#history tbody b').count(), 0);
    assert.match(await page.textContent('#send-result'), new RegExp(pushed.id));

    const before = bob.frames.length;
    await page.click(`#history tbody tr[data-mid="${pushed.id}"] button`);
    const patch = await bob.waitFor((f) => f.cmd === 'patch', { from: before });
    assert.equal(patch.patches[0].mid, pushed.id);
    assert.equal(patch.patches[0].recall, true);
    await page.waitForSelector(`#history tbody tr[data-mid="${pushed.id}"][data-recalled="yes"]`);
    assert.equal(await page.textContent(`#history tbody tr[data-mid="${pushed.id}"] td.content`), '(recalled)');
    await shot('recalled');
  });

  it('shows a client online with its device, and kicks it (4115)', async () => {
    await page.click('button[data-tab="clients"]');
    await page.fill('#client-id', 'bob');
    await page.click('#client-form button[type="submit"]');
    await page.waitForSelector('#client-state[data-online="yes"]');
    assert.equal(await rows('#client-sessions').count(), 1);
    assert.deepEqual(
      await page.$$eval('#client-sessions tbody tr', (trs) => [...trs[0].children].slice(0, 3).map((td) => td.textContent)),
      ['(none)', 'json', '2'],
    );
    await assertTableShot('client-online', '#client-sessions', 1);
    const from = bob.frames.length;
    await page.fill('#kick-reason', 'console test');
    await page.click('#kick');
    const closed = await bob.waitFor((f) => f.cmd === 'session' && f.op === 'closed', { from });
    assert.equal(closed.code, 4115);
    await page.waitForSelector('#client-state[data-online="no"]');
    assert.equal(await rows('#client-sessions').count(), 0);
    const online = await rest(server, 'POST', '/1.2/rtm/clients/check-online', { client_ids: ['alice', 'bob'] });
    assert.deepEqual(online.body.results, ['alice']);
  });

  it('creates a system conversation and broadcasts to its subscribers', async () => {
    await page.click('button[data-tab="system"]');
    await page.fill('#sys-name', 'Announcements');
    await page.click('#sys-create button[type="submit"]');
    await page.waitForFunction(() => document.getElementById('bc-conv').value !== '');
    const sys = await page.inputValue('#bc-conv');
    await page.waitForSelector(`#sys-list tr[data-cid="${sys}"]`);
    assert.deepEqual(await cellTexts('#sys-list', 1), ['Announcements']);
    const subscribed = await rest(server, 'POST', `/1.2/rtm/service-conversations/${sys}/subscribers`, { client_id: 'alice' });
    assert.equal(subscribed.status, 200, JSON.stringify(subscribed.body));
    const from = alice.frames.length;
    await page.fill('#bc-from', 'ops');
    await page.fill('#bc-text', 'maintenance at 10:00');
    await page.click('#broadcast-form button[type="submit"]');
    const got = await alice.waitFor((f) => f.cmd === 'direct' && f.cid === sys, { from });
    assert.deepEqual(JSON.parse(got.msg), { _lctype: -1, _lctext: 'maintenance at 10:00' });
    await page.waitForFunction(() => document.getElementById('bc-result').textContent !== '');
    assert.match(await page.textContent('#bc-result'), /^Broadcast sent: /);
    await assertTableShot('system', '#sys-list', 1);
  });

  it('switches to Chinese, remembers it after a reload, and keeps the sign-in', async () => {
    await page.click('#lang');
    assert.equal(await page.textContent('button[data-tab="conversations"]'), '对话');
    assert.equal(await page.textContent('button[data-tab="system"]'), '系统对话');
    assert.equal(await page.textContent('#lang'), 'English');
    assert.equal(await page.evaluate(() => document.documentElement.lang), 'zh-CN');
    assert.deepEqual(await cellTexts('#sys-list', 1), ['Announcements'], 'tables stay');
    await page.reload();
    await page.waitForSelector('body[data-signed-in="yes"]');
    assert.equal(await page.textContent('button[data-tab="clients"]'), '客户端');
    assert.equal(await page.textContent('#signout'), '退出');
    assert.equal(await page.textContent('.chart h3'), '在线会话数');
    await page.waitForFunction(() => Number(document.getElementById('chart-sessions').dataset.points) > 0);
    await shot('dashboard-zh');
    // Back to English for whoever uses this profile next.
    await page.click('#lang');
    assert.equal(await page.textContent('button[data-tab="clients"]'), 'Clients');
  });

  it('follows the browser language by default, as the demo does', async () => {
    for (const [locale, signIn, send] of [
      ['zh-CN', '登录', '发送'],
      ['en-GB', 'Sign in', 'Send'],
    ]) {
      const fresh = await browser.newContext({ locale });
      const p = await fresh.newPage();
      p.on('pageerror', (e) => problems.push(`${locale} pageerror: ${e.message}`));
      await p.goto(`${server.http}/console/`);
      assert.equal(await p.textContent('#signin h2'), signIn, locale);
      await p.goto(`${server.http}/demo/`);
      assert.equal(await p.textContent('#send'), send, `demo in ${locale}`);
      await fresh.close();
    }
  });

  it('never put the master key in a URL and reported no errors (CSP violations included)', () => {
    assert.ok(requested.length > 10, `${requested.length} requests`);
    const leaked = requested.filter((u) => u.includes(server.masterKey));
    assert.deepEqual(leaked, []);
    assert.deepEqual(problems, []);
    // The development app's key is printed once at start; nothing logs it afterwards.
    assert.ok(!server.stderr.slice(startupLog).includes(server.masterKey), 'the server logged the key');
  });
});

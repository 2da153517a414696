// Real headless Chromium (Debian package) + playwright-core: open the demo served by the real
// Confab server at http://HOST:PORT/demo/ in two pages and chat through it.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { startConfab, APP } from '../integration/confab.js';
import { checkIdentity } from '../integration/identity.js';

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const ARGS = ['--no-sandbox', '--headless', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

let server;
let browser;
const problems = [];

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: apt-get install -y chromium`);
  server = await startConfab();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
});
after(async () => {
  if (browser) await browser.close();
  if (server) {
    await server.stop();
    server.cleanup();
  }
});

async function openPage(name, room, lang) {
  const page = await browser.newPage();
  page.on('pageerror', (e) => problems.push(`${name}: ${e.message}`));
  await page.goto(`${server.http}/demo/?appId=${APP.id}&lang=${lang}`);
  await page.fill('#name', name);
  await page.fill('#room', room);
  await page.click('#join');
  await page.waitForSelector('#chat[data-joined="yes"]', { timeout: 10000 });
  await page.waitForSelector('#status[data-state="open"]');
  return page;
}

async function say(page, text) {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

describe('demo in two browser pages', { timeout: 60000 }, () => {
  it('serves the demo and the SDK from the server', async () => {
    const html = await fetch(`${server.http}/demo/`);
    assert.equal(html.status, 200);
    assert.match(await html.text(), /AV\.realtime\.js/);
    const js = await fetch(`${server.http}/demo/AV.realtime.js`);
    assert.equal(js.status, 200);
    assert.match(await js.text(), /AV/);
  });

  it('dist/AV.realtime.js in the page: every documented method returns its own object (===)', async () => {
    const page = await browser.newPage();
    page.on('pageerror', (e) => problems.push(`identity page: ${e.message}`));
    await page.goto(`${server.http}/demo/?appId=${APP.id}`);
    // the same checks as test/integration/identity.test.js, run by the page on the served SDK
    const { checks, callbacks, missing } = await page.evaluate(
      `(${checkIdentity.toString()})(AV.realtime, { appId: ${JSON.stringify(APP.id)}, server: location.origin })`,
    );
    await page.close();
    assert.deepEqual(checks.filter(([, ok]) => !ok).map(([label]) => label), [], 'checks that failed');
    assert.deepEqual(callbacks.filter(([, ok]) => !ok).map(([label]) => label), [], 'callbacks with a wrong argument');
    assert.equal(missing, 0, 'callbacks that never fired');
    assert.ok(checks.length > 60 && callbacks.length > 25, `${checks.length} checks, ${callbacks.length} callbacks`);
  });

  it('chats: send, receive, receipts, who is online, history, language', async () => {
    const room = 'room-' + Math.random().toString(36).slice(2, 8);
    const alice = await openPage('alice', room, 'zh');
    const bob = await openPage('bob', room, 'en');

    await say(alice, 'hello from <alice>');
    await bob.waitForSelector('li.theirs:has-text("hello from <alice>")', { timeout: 10000 });
    await alice.waitForSelector('li.mine .mark[data-status="delivered"]', { timeout: 10000 });

    await say(bob, '你好 alice');
    await alice.waitForSelector('li.theirs:has-text("你好 alice")', { timeout: 10000 });

    await bob.click('#online');
    await bob.waitForSelector('#online-list[data-online]');
    const online = (await bob.getAttribute('#online-list', 'data-online')).split(',').sort();
    assert.deepEqual(online, ['alice', 'bob']);

    // a third tab for bob's second visit sees the history
    const carol = await openPage('carol', room, 'en');
    await carol.waitForSelector('li.history:has-text("hello from <alice>")', { timeout: 10000 });
    await carol.waitForSelector('li.history:has-text("你好 alice")');
    const order = await carol.$$eval('li.history .bubble', (els) => els.map((e) => e.textContent));
    assert.deepEqual(order, ['hello from <alice>', '你好 alice']);

    // language switch
    assert.equal(await carol.textContent('#send'), 'Send');
    await carol.click('#lang');
    assert.equal(await carol.textContent('#send'), '发送');
    assert.deepEqual(problems, []);
  });
});

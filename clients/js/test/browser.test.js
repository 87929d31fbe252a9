// The portable suites again, in headless Chromium, the page on another
// origin than the servers (CORS is real); then what only a browser has:
// tabs sharing one feed connection, and the notes example in two contexts.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStatic } from './harness/static.js';
import { launch } from './harness/chromium.js';
import { suites } from './harness/suites.js';
import { ensureBinary, TestServer } from './harness/server.js';
import { SyncClient } from '../src/index.js';

ensureBinary();
const site = await startStatic();
const browser = await launch();
const context = await browser.newContext();
const page = await context.newPage();
const pageErrors = [];
page.on('pageerror', (error) => pageErrors.push(error));
await page.goto(`${site.url}/test/harness/browser.html`);
await page.waitForFunction(() => window.ready === true);

after(async () => {
  await browser.close();
  await site.close();
});

for (const suite of suites) {
  describe(`chromium: ${suite.name}`, () => {
    let names = [];
    before(async () => {
      names = await page.evaluate((name) => window.startSuite(name), suite.name);
    });
    for (const name of Object.keys(suite.tests)) {
      test(name, async () => {
        assert.ok(names.includes(name) || suite.name === 'queue', `the page knows ${name}`);
        if (!names.includes(name)) return; // browser-only adapters differ by name
        const failure = await page.evaluate(([s, t]) => window.runTest(s, t), [suite.name, name]);
        assert.equal(failure, null, failure ?? '');
      });
    }
  });
}

test('chromium: the page runs the IndexedDB queue store too', async () => {
  const names = await page.evaluate(() => window.startSuite('queue'));
  assert.ok(names.some((n) => n.includes('indexedDb')));
  for (const name of names.filter((n) => n.includes('indexedDb'))) {
    const failure = await page.evaluate(([s, t]) => window.runTest(s, t), ['queue', name]);
    assert.equal(failure, null, failure ?? '');
  }
});

test('chromium: no uncaught page errors', () => {
  assert.deepEqual(pageErrors.map(String), []);
});

test('chromium: two tabs share one feed connection, and a tab takes over when the leader closes', async () => {
  const server = await new TestServer().start();
  try {
    const client = new SyncClient({ url: server.url });
    const { token } = await client.register({ id: 'tabs@example.org', password: 'a long password' });
    const tabs = [];
    for (let i = 0; i < 2; i++) {
      const tab = await context.newPage();
      await tab.goto(`${site.url}/test/harness/tabs.html`);
      await tab.waitForFunction(() => window.ready === true);
      await tab.evaluate(([url, t]) => window.startShared(url, t), [server.url, token]);
      tabs.push(tab);
    }
    const roles = async () => Promise.all(tabs.map((t) => t.evaluate(() => window.feed.role)));
    await waitFor(async () => (await roles()).sort().join() === 'follower,leader', 'one leader, one follower');
    await waitFor(async () => (await Promise.all(tabs.map((t) => t.evaluate(() => window.feed.feed?.status)))).includes('live'), 'the leader is live');
    const leader = (await roles()).indexOf('leader');
    // The leader's tab goes to the background: the other tab still relies on it.
    await tabs[leader].evaluate(() => {
      Object.defineProperty(document, 'visibilityState', { value: 'hidden', configurable: true });
      document.dispatchEvent(new Event('visibilitychange'));
    });
    await client.stores.put('first', new TextEncoder().encode('x'));
    for (const tab of tabs) await waitFor(() => tab.evaluate(() => window.seen.includes('first')), 'both tabs hear of it, the leader hidden');
    const requests = await Promise.all(tabs.map((t) => t.evaluate(() => window.feedRequests)));
    assert.ok(requests[leader] > 0, 'the leader polls');
    assert.equal(requests[1 - leader], 0, 'the follower never polls');
    await tabs[leader].close();
    const survivor = tabs[1 - leader];
    await waitFor(() => survivor.evaluate(() => window.feed.role === 'leader'), 'the other tab takes over');
    await client.stores.put('second', new TextEncoder().encode('y'));
    await waitFor(() => survivor.evaluate(() => window.seen.includes('second')), 'the new leader hears of it');
    await survivor.close();
  } finally {
    await server.dispose();
  }
});

test('chromium: start, stop, start without waiting leaves one leader that hands over when stopped', async () => {
  const server = await new TestServer().start();
  try {
    const client = new SyncClient({ url: server.url });
    const { token } = await client.register({ id: 'strict@example.org', password: 'a long password' });
    const open = async (racy) => {
      const tab = await context.newPage();
      await tab.goto(`${site.url}/test/harness/tabs.html`);
      await tab.waitForFunction(() => window.ready === true);
      await tab.evaluate(([url, t, r]) => window.startShared(url, t, r), [server.url, token, racy]);
      return tab;
    };
    const first = await open(true);
    await waitFor(() => first.evaluate(() => window.feed.role === 'leader' && window.feedRequests > 0), 'the raced tab leads and polls');
    const second = await open(false);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(await second.evaluate(() => window.feed.role), 'follower');
    await first.evaluate(() => window.feed.stop());
    await waitFor(() => second.evaluate(() => window.feed.role === 'leader'), 'the lock was released on stop');
    await first.close();
    await second.close();
  } finally {
    await server.dispose();
  }
});

async function waitFor(check, what, ms = 15_000) {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('chromium: the notes example syncs two browser contexts live and merges a conflict', async () => {
  const server = await new TestServer().start();
  const devices = [await browser.newContext(), await browser.newContext()];
  try {
    const pages = [];
    for (const [i, device] of devices.entries()) {
      const p = await device.newPage();
      p.on('pageerror', (error) => pageErrors.push(error));
      await p.goto(`${site.url}/examples/notes/index.html?server=${encodeURIComponent(server.url)}`);
      await p.fill('#id', 'notes@example.org');
      await p.fill('#passphrase', 'notes passphrase words');
      await p.click(i === 0 ? '#create' : '#open');
      await p.waitForSelector('#status.live', { timeout: 15_000 });
      pages.push(p);
    }
    const [a, b] = pages;
    await a.click('#new');
    await a.fill('#title', 'Groceries');
    await a.fill('#body', 'milk');
    await a.click('#save');
    await b.waitForSelector('#list li:has-text("Groceries")', { timeout: 15_000 });
    await b.click('#list li:has-text("Groceries")');
    await waitFor(async () => (await b.inputValue('#body')) === 'milk', 'b opens the note');
    // Both edit; a saves first, b's save meets a newer version and merges.
    await b.fill('#body', 'milk\neggs');
    await a.fill('#body', 'milk\nbread');
    await a.click('#save');
    await b.waitForSelector('#note-state:has-text("another device")', { timeout: 15_000 });
    await b.click('#save');
    await waitFor(async () => (await b.inputValue('#body')) === 'milk\nbread\neggs', 'b merged');
    await waitFor(async () => (await a.inputValue('#body')) === 'milk\nbread\neggs', 'a sees the merge live');
    assert.equal(server.filesContain('Groceries') || server.filesContain('bread'), false, 'nothing readable on the server');
    if (process.env.NOTES_SCREENSHOT) {
      const shot = await browser.newPage({ viewport: { width: 1200, height: 350 } });
      await shot.goto(`${site.url}/examples/notes/side-by-side.html?server=${encodeURIComponent(server.url)}`);
      for (const side of ['#left', '#right']) {
        const frame = shot.frameLocator(side);
        await frame.locator('#id').fill('notes@example.org');
        await frame.locator('#passphrase').fill('notes passphrase words');
        await frame.locator('#open').click();
        await frame.locator('#status.live').waitFor({ timeout: 15_000 });
        await frame.locator('#list li:has-text("Groceries")').click();
      }
      await shot.screenshot({ path: process.env.NOTES_SCREENSHOT });
      await shot.close();
    }
  } finally {
    for (const device of devices) await device.close();
    await server.dispose();
  }
});

test('chromium: the notes example shares a note between two people, live both ways, and stops sharing', async () => {
  const server = await new TestServer().start();
  const people = [await browser.newContext(), await browser.newContext()];
  const ids = ['alice@example.org', 'bob@example.org'];
  try {
    const pages = [];
    for (const [i, person] of people.entries()) {
      const p = await person.newPage();
      p.on('pageerror', (error) => pageErrors.push(error));
      await p.goto(`${site.url}/examples/notes/index.html?server=${encodeURIComponent(server.url)}`);
      await p.fill('#id', ids[i]);
      await p.fill('#passphrase', `${ids[i]} passphrase words`);
      await p.click('#create');
      await p.waitForSelector('#status.live', { timeout: 15_000 });
      pages.push(p);
    }
    const [a, b] = pages;
    await a.click('#new');
    await a.fill('#title', 'Trip');
    await a.fill('#body', 'tickets');
    await a.click('#save');
    await a.click('#sharing summary');
    await a.fill('#share-id', ids[1]);
    await a.click('#share-check');
    await a.waitForSelector('#share-fingerprint:not([hidden])');
    await waitFor(async () => (await b.textContent('#my-number'))?.length > 0, 'bob shows his number');
    assert.equal(await a.textContent('#share-number'), await b.textContent('#my-number'), 'the safety numbers match');
    await a.click('#share-confirm');
    await a.waitForSelector('#share-state:has-text("Shared with")');
    // Bob sees it live, edits; Alice sees his edit live.
    await b.waitForSelector('#list li:has-text("Trip (shared with you)")', { timeout: 15_000 });
    await b.click('#list li:has-text("Trip")');
    await waitFor(async () => (await b.inputValue('#body')) === 'tickets', 'bob opens the note');
    await b.fill('#body', 'tickets\nhotel');
    await b.click('#save');
    await waitFor(async () => (await a.inputValue('#body')) === 'tickets\nhotel', 'alice sees bob\'s edit live');
    assert.equal(server.filesContain('Trip') || server.filesContain('hotel') || server.filesContain(ids[0]), false, 'nothing readable on the server');
    if (process.env.NOTES_SCREENSHOT) {
      const shot = await browser.newPage({ viewport: { width: 1200, height: 420 } });
      await shot.goto(`${site.url}/examples/notes/side-by-side.html?server=${encodeURIComponent(server.url)}`);
      for (const [side, i] of [['#left', 0], ['#right', 1]]) {
        const frame = shot.frameLocator(side);
        await frame.locator('#id').fill(ids[i]);
        await frame.locator('#passphrase').fill(`${ids[i]} passphrase words`);
        await frame.locator('#open').click();
        await frame.locator('#status.live').waitFor({ timeout: 15_000 });
        await frame.locator('#list li:has-text("Trip")').click();
      }
      await shot.frameLocator('#left').locator('#sharing summary').click();
      await shot.screenshot({ path: process.env.NOTES_SCREENSHOT });
      await shot.close();
    }
    // Alice stops sharing: the note leaves Bob's list, and what she writes next is not his to read.
    await a.click('#share-stop');
    await a.waitForSelector('#share-state:has-text("No longer shared")', { timeout: 15_000 });
    await waitFor(async () => (await b.locator('#list li:has-text("Trip")').count()) === 0, 'the note leaves bob\'s list');
    await a.fill('#body', 'tickets\nhotel\nsurprise for bob');
    await a.click('#save');
    await waitFor(async () => (await a.textContent('#note-state'))?.startsWith('version'), 'alice saved');
    assert.equal(await b.locator('#list li:has-text("Trip")').count(), 0);
  } finally {
    for (const person of people) await person.close();
    await server.dispose();
  }
});

// How long Vault.open takes (Argon2id 64 MiB × 3 passes, then the keys),
// in Node and in headless Chromium, against the real server on loopback.
//   node bench/open.mjs [rounds]      (default 5; test.sh runs it with 1)
// Prints one line per environment: median and slowest of the rounds.
import { TestServer } from '../test/harness/server.js';
import { startStatic } from '../test/harness/static.js';
import { launch } from '../test/harness/chromium.js';
import { SyncClient, Vault } from '../src/index.js';

const rounds = Number(process.argv[2] ?? 5);
const server = await new TestServer().start();
const id = `bench-${process.pid}@example.org`;
const passphrase = 'benchmark passphrase words';
await Vault.create(new SyncClient({ url: server.url }), { id, passphrase });

const report = (where, times) => {
  times.sort((a, b) => a - b);
  console.log(`Vault.open, ${where}: median ${times[Math.floor(times.length / 2)].toFixed(0)} ms, slowest ${times.at(-1).toFixed(0)} ms (${times.length} rounds)`);
};

const node = [];
for (let i = 0; i < rounds; i++) {
  const started = performance.now();
  await Vault.open(new SyncClient({ url: server.url }), { id, passphrase });
  node.push(performance.now() - started);
}
report('Node', node);

const site = await startStatic();
const browser = await launch();
try {
  const page = await browser.newPage();
  await page.goto(`${site.url}/test/harness/browser.html`);
  await page.waitForFunction(() => window.ready === true);
  const chromium = await page.evaluate(
    async ([url, id, passphrase, rounds]) => {
      const { SyncClient, Vault } = await import('/src/index.js');
      const times = [];
      for (let i = 0; i < rounds; i++) {
        const started = performance.now();
        await Vault.open(new SyncClient({ url }), { id, passphrase });
        times.push(performance.now() - started);
      }
      return times;
    },
    [server.url, id, passphrase, rounds],
  );
  report('headless Chromium', chromium);
} finally {
  await browser.close();
  await site.close();
  await server.dispose();
}

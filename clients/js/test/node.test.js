// Runs the portable suites in Node, each against its own real server.
import { test, describe, before, after } from 'node:test';
import { TestServer } from './harness/server.js';
import { suites } from './harness/suites.js';
import { memoryQueueStore, memoryState, SyncClient, Vault, SyncError } from '../src/index.js';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import assert from 'node:assert/strict';

let counter = 0;

for (const suite of suites) {
  describe(suite.name, () => {
    const server = new TestServer();
    const env = {
      get url() {
        return server.url;
      },
      unique: (prefix) => `${prefix}-${process.pid}-${++counter}@example.org`,
      restart: () => server.restart(),
      stop: () => server.stop(),
      start: () => server.restart(),
      restoreBackup: async () => {
        const copy = `${server.root}/restored-${++counter}`;
        server.cli(['backup', copy]);
        await server.restart(copy);
      },
      filesContain: async (text) => server.filesContain(text),
      resetToken: async (id) => server.cli(['reset-token', id]).trim(),
      addAccount: async (id, password) => void server.cli(['account', 'add', '--', id], `${password}\n`),
      queueStores: { memory: memoryQueueStore },
    };
    before(() => server.start());
    after(() => server.dispose());
    for (const [name, fn] of Object.entries(suite.tests)) test(name, () => fn(env));
  });
}

describe('format 1', () => {
  const fixture = JSON.parse(readFileSync(new URL('./fixtures/v1-vault.json', import.meta.url), 'utf8'));
  const text = (bytes) => new TextDecoder().decode(bytes);
  const startFixture = async () => {
    const server = new TestServer();
    mkdirSync(server.dataDir, { mode: 0o700 });
    execFileSync('tar', ['-xzf', new URL('./fixtures/v1-vault.tar.gz', import.meta.url).pathname, '-C', server.dataDir]);
    return server.start();
  };

  test('a format-1 vault is migrated in place, also when the first run is cut short', async () => {
    const server = await startFixture();
    try {
      const { id, passphrase } = fixture;
      // The first run loses its connection after moving one store.
      let deletes = 0;
      const flaky = new SyncClient({
        url: server.url,
        fetch: async (url, init) => {
          if (init?.method === 'DELETE' && /\/v1\/stores\/[0-9a-f]{64}$/.test(String(url)) && ++deletes === 2) throw new TypeError('connection reset');
          return fetch(url, init);
        },
      });
      // Without `migrate`, format 1 is never tried (its password costs a guesser only PBKDF2).
      const sent = [];
      const watching = new SyncClient({
        url: server.url,
        fetch: async (url, init) => {
          if (String(url).endsWith('/v1/sessions')) sent.push(JSON.parse(init.body).password);
          return fetch(url, init);
        },
      });
      await assert.rejects(Vault.open(watching, { id, passphrase }), (error) => error instanceof SyncError && error.code === 'invalid_credentials');
      assert.equal(sent.length, 1, 'one sign-in, with the format-2 password only');
      await assert.rejects(Vault.open(flaky, { id, passphrase, migrate: true }), (error) => error instanceof SyncError && error.code === 'network');
      const state = memoryState();
      const vault = await Vault.open(new SyncClient({ url: server.url }), { id, passphrase, migrate: true, state });
      assert.ok(vault.migrated, 'the second run finished the migration');
      for (const [name, want] of Object.entries(fixture.stores)) {
        const item = await vault.get(name);
        assert.equal(text(item.data), want.data, name);
        assert.deepEqual(item.meta, want.meta, name);
      }
      const doc = await vault.document(fixture.document.name).load('unused');
      assert.equal(text(doc.snapshot), fixture.document.snapshot);
      assert.deepEqual(doc.updates.map(text), fixture.document.updates);
      assert.deepEqual((await vault.list()).map((s) => s.name).sort(), ['empty meta', 'journal', 'shopping']);
      const left = (await vault.stores.list()).stores.map((s) => s.key);
      assert.deepEqual(left.filter((k) => !k.startsWith('v2.')), [], 'no format-1 store is left');
      // From now on the vault signs in with the format-2 password, and nothing needs moving.
      const again = await Vault.open(new SyncClient({ url: server.url }), { id, passphrase, migrate: true, state });
      assert.equal(again.migrated, null);
      // A device that has opened the account on format 2 never sends the format-1 password again,
      // even when a lying server answers the format-2 one with 401.
      sent.length = 0;
      const lying = new SyncClient({
        url: server.url,
        fetch: async (url, init) => {
          if (String(url).endsWith('/v1/sessions')) {
            sent.push(JSON.parse(init.body).password);
            return new Response(JSON.stringify({ error: 'invalid_credentials', message: 'no' }), { status: 401, headers: { 'Content-Type': 'application/json' } });
          }
          return fetch(url, init);
        },
      });
      await assert.rejects(Vault.open(lying, { id, passphrase, migrate: true, state }), (error) => error instanceof SyncError && error.code === 'invalid_credentials');
      assert.equal(sent.length, 1, 'no downgrade to format 1');
      assert.equal(text((await again.get('shopping')).data), fixture.stores.shopping.data);
      await server.restart();
      for (const needle of ['shopping', 'Shopping list', 'milk, eggs', 'SNAPSHOT-0', passphrase]) assert.equal(server.filesContain(needle), false, needle);
    } finally {
      await server.dispose();
    }
  });
});

describe('examples', () => {
  test('automerge: two devices converge through the log, with compactions', async (t) => {
    let demo;
    try {
      ({ demo } = await import('../examples/automerge/sync.mjs'));
    } catch (error) {
      if (error.code !== 'ERR_MODULE_NOT_FOUND') throw error;
      t.skip('run `npm install --prefix examples/automerge` first (.ci/run does)');
      return;
    }
    const server = await new TestServer().start();
    try {
      const result = await demo(server.url, { edits: 40, compactEvery: 10, log: () => {} });
      assert.deepEqual(result.items[0], result.items[1]);
      assert.equal(result.items[0].length, 40);
      assert.equal(result.compactions, 4);
      const shared = await demo(server.url, { edits: 20, compactEvery: 10, shared: true, log: () => {} });
      assert.deepEqual(shared.items[0], shared.items[1], 'two people converge on a shared document');
      assert.equal(shared.items[0].length, 20);
    } finally {
      await server.dispose();
    }
  });
});

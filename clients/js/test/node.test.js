// Runs the portable suites in Node, each against its own real server.
import { test, describe, before, after } from 'node:test';
import { TestServer } from './harness/server.js';
import { suites } from './harness/suites.js';
import { memoryQueueStore } from '../src/index.js';
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
      queueStores: { memory: memoryQueueStore },
    };
    before(() => server.start());
    after(() => server.dispose());
    for (const [name, fn] of Object.entries(suite.tests)) test(name, () => fn(env));
  });
}

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
    } finally {
      await server.dispose();
    }
  });
});

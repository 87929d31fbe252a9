// Runs the portable suites in Node, each against its own real server.
import { test, describe, before, after } from 'node:test';
import { TestServer } from './harness/server.js';
import { suites } from './harness/suites.js';
import { memoryQueueStore } from '../src/index.js';

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

// Store logs and the change feed through the plain client, against the real server.
import { SyncError, unframe } from '../../src/index.js';
import { deepEqual, equal, ok, rejects, text } from './assert.js';
import { account, bytes } from './accounts.js';


export default {
  name: 'logs',
  tests: {
    async 'logs: append, read after, pages, compact, 410'(env) {
      const { client } = await account(env);
      const first = await client.stores.put('doc', bytes('snapshot'));
      for (let i = 1; i <= 5; i++) {
        const a = await client.logs.append('doc', bytes(`u${i}`));
        equal(a.index, i);
        equal(a.logHead, i);
      }
      await rejects(client.logs.append('doc', bytes('x'), { ifLogHead: 3 }), 'precondition_failed', 412);
      const all = await client.logs.read('doc');
      deepEqual(all.entries.map((e) => text(e.data)), ['u1', 'u2', 'u3', 'u4', 'u5']);
      const page = await client.logs.readPage('doc', { after: 1, limit: 2 });
      deepEqual(page.entries.map((e) => e.index), [2, 3]);
      ok(page.more);
      const followed = await client.logs.read('doc', { after: 1 });
      equal(followed.entries.length, 4);
      equal((await client.stores.get('doc')).logHead, 5);
      const compacted = await client.logs.compact('doc', bytes('snapshot+1..3'), { ifMatch: first.token, upto: 3 });
      equal(compacted.logBase, 3);
      equal(await client.logs.compact('doc', bytes('late'), { ifMatch: first.token, upto: 4 }), null, 'a stale compaction is skipped');
      await rejects(client.logs.read('doc', { after: 1 }), 'gone', 410);
      deepEqual((await client.logs.read('doc')).entries.map((e) => e.index), [4, 5]);
      await rejects(client.logs.append('doc', new Uint8Array(0)), 'bad_request', 400);
      await rejects(client.logs.append('missing', bytes('x')), 'not_found', 404);
    },

    async 'unframe rejects a truncated answer'() {
      const framed = new Uint8Array([0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 104, 105]);
      deepEqual(unframe(framed).map((e) => [e.index, text(e.data)]), [[1, 'hi']]);
      let failed = false;
      try {
        unframe(framed.subarray(0, 13));
      } catch (error) {
        failed = error instanceof SyncError && error.code === 'bad_response';
      }
      ok(failed);
    },

    async 'changes: since, wait, limit, keyFor'(env) {
      const { client } = await account(env);
      const start = await client.changes({ since: 0 });
      equal(start.changes.length, 0);
      const key = await client.keyFor('my notes');
      ok(/^[0-9a-f]{64}$/.test(key));
      const waiting = client.changes({ since: start.seq, wait: 10 });
      await new Promise((r) => setTimeout(r, 200));
      const put = await client.stores.put(key, bytes('x'));
      const woke = await waiting;
      deepEqual(woke.changes.map((c) => [c.key, c.token, c.permission, c.logHead]), [[key, put.token, 'OWN', 0]]);
      equal(woke.generation, start.generation);
      await client.stores.put('second', bytes('y'));
      const limited = await client.changes({ since: start.seq, limit: 1 });
      ok(limited.more);
      equal(limited.changes.length, 1);
      await rejects(client.changes({ since: woke.seq + 1000 }), 'gone', 410);
    },
  },
};

// The offline queue: one adapter suite for every queue store, and queued
// vault writes replayed after a simulated restart of the app.
import { SyncClient, Vault, OfflineQueue, SyncError } from '../../src/index.js';
import { deepEqual, equal, ok, rejects, text } from './assert.js';

function adapterTests(kind) {
  return {
    async [`queue store (${kind}): order, remove, survives a new instance`](env) {
      const make = env.queueStores[kind];
      const name = env.unique('q');
      const store = make(name);
      const a = await store.add({ op: 'put', data: new Uint8Array([1, 2]) });
      const b = await store.add({ op: 'delete' });
      ok(b > a, 'ids increase');
      deepEqual((await store.list()).map((r) => r.op), ['put', 'delete']);
      deepEqual((await store.list())[0].data, new Uint8Array([1, 2]));
      await store.remove(a);
      deepEqual((await store.list()).map((r) => r.id), [b]);
      if (kind !== 'memory') deepEqual((await make(name).list()).map((r) => r.id), [b], 'a new instance sees it');
    },

    async [`queue (${kind}): replay in order, stop at a transient failure`](env) {
      const queue = new OfflineQueue(env.queueStores[kind](env.unique('q')));
      for (const n of [1, 2, 3]) await queue.add({ n, account: 'a' });
      await queue.add({ n: 99, account: 'b' });
      const mine = (w) => w.account === 'a';
      const done = [];
      const left = await queue.replay(mine, async (w) => {
        if (w.n === 2 && done.length === 1) throw new SyncError('network', 'down');
        done.push(w.n);
      });
      equal(left, 2);
      equal(await queue.replay(mine, async (w) => void done.push(w.n)), 0);
      deepEqual(done, [1, 2, 3], 'in order, and another account\'s write is left alone');
      equal(await queue.size(), 1);
      const refused = [];
      await queue.add({ n: 4, account: 'a' });
      await queue.replay(mine, async () => {
        throw new SyncError('forbidden', 'no', { status: 403 });
      }, (w) => refused.push(w.n));
      deepEqual(refused, [4]);
      await queue.add({ n: 5, account: 'a' });
      equal(await queue.replay(mine, async () => {
        throw new SyncError('unauthorized', 'signed out', { status: 401 });
      }), 1, 'a 401 keeps the write for after the next sign-in');
    },
  };
}

export default {
  name: 'queue',
  tests: {
    ...adapterTests('memory'),
    ...(globalThis.indexedDB ? adapterTests('indexedDb') : {}),

    async 'offline: two edits of one store make one write, the newest; later puts wait behind the queue'(env) {
      const id = env.unique('coalesce');
      const queueStore = env.queueStores.memory();
      const app = await Vault.create(new SyncClient({ url: env.url }), { id, passphrase: 'coalesce passphrase', queue: queueStore });
      await app.put('note', 'v1');
      await env.stop();
      equal((await app.put('note', 'edit 1')).queued, true);
      equal((await app.put('note', 'edit 2')).queued, true);
      equal(await app.queue.size(), 1, 'one write per store');
      const held = JSON.stringify(await queueStore.list());
      ok(!held.includes('edit 2') && !held.includes('note') && !held.includes(id), `the queue holds no plaintext: ${held.slice(0, 120)}`);
      await env.start();
      equal(await app.flush(), 0);
      equal(text((await app.get('note')).data), 'edit 2', 'the newest edit wins');
      deepEqual(app.rejected, []);
      // Signing out removes what is still queued from the device.
      await env.stop();
      equal((await app.put('note', 'never sent')).queued, true);
      await rejects(app.signOut(), 'network'); // the device forgets all the same
      equal(await app.queue.size(), 0, 'the unsent write is gone from the device');
      await env.start();
    },

    async 'offline: metadata survives a replay after a restart; a delete is never undone by a queued write; queues are per account'(env) {
      const id = env.unique('replay-meta');
      const queueStore = env.queueStores.memory();
      const app = await Vault.create(new SyncClient({ url: env.url }), { id, passphrase: 'replay passphrase', queue: queueStore });
      await app.put('list', 'A', { meta: { title: 'Shopping list' } });
      await app.put('doomed', 'x');
      await env.stop();
      equal((await app.put('list', 'A B')).queued, true);
      equal((await app.put('doomed', 'edited offline')).queued, true);
      await env.start();
      const restarted = await Vault.open(new SyncClient({ url: env.url }), { id, passphrase: 'replay passphrase', queue: queueStore });
      const list = await restarted.get('list');
      equal(text(list.data), 'A B');
      deepEqual(list.meta, { title: 'Shopping list' }, 'the replay kept the metadata');
      // Online again: a put right after queued writes is based on them, not in conflict with them.
      await env.stop();
      equal((await restarted.put('list', 'A B C')).queued, true);
      await env.start();
      const written = await restarted.put('list', 'A B C D');
      ok(written.written, 'no conflict with its own queued write');
      equal(text((await restarted.get('list')).data), 'A B C D');
      await restarted.delete('doomed');
      equal(await restarted.flush(), 0);
      equal(await restarted.get('doomed'), null, 'still deleted after the queue ran');
      // Another account on the same device does not replay this one's writes.
      await env.stop();
      equal((await restarted.put('diary', 'private')).queued, true);
      await env.start();
      const bob = await Vault.create(new SyncClient({ url: env.url }), { id: env.unique('bob'), passphrase: 'bob passphrase', queue: queueStore });
      equal(await bob.get('diary'), null, 'not written into another account');
      equal(await restarted.flush(), 0);
      equal(text((await restarted.get('diary')).data), 'private');
    },

    async 'offline: a write refused for want of a session stays queued; refused ones are reported'(env) {
      const id = env.unique('revoked');
      const queueStore = env.queueStores.memory();
      const app = await Vault.create(new SyncClient({ url: env.url }), { id, passphrase: 'revoked passphrase', queue: queueStore });
      await env.stop();
      equal((await app.put('note', 'offline')).queued, true);
      await env.start();
      await app.client.signOutEverywhere();
      equal(await app.flush(), 1, 'kept until signed in again');
      await Vault.open(app.client, { id, passphrase: 'revoked passphrase' }); // signs the same client in again
      equal(await app.flush(), 0);
      equal(text((await app.get('note')).data), 'offline');
      // A queued create that meets a store made meanwhile, with no resolver: reported, not lost silently.
      await env.stop();
      equal((await app.put('fresh', 'mine')).queued, true);
      await env.start();
      const other = await Vault.open(new SyncClient({ url: env.url }), { id, passphrase: 'revoked passphrase' });
      await other.put('fresh', 'theirs');
      equal(await app.flush(), 0);
      equal(app.rejected.length, 1);
      equal(app.rejected[0].error.code, 'precondition_failed');
      equal(app.rejected[0].write.data, 'mine', 'the write as it was given');
    },

    async 'writes made offline are replayed after an app restart, still conditional'(env) {
      const id = env.unique('offline');
      const kind = globalThis.indexedDB ? 'indexedDb' : 'memory';
      const storeName = env.unique('queue');
      const queueStore = env.queueStores[kind](storeName);
      const resolve = async (local, remote) => {
        const theirs = await remote();
        return `${text(theirs.data)} + ${typeof local === 'string' ? local : text(local)}`;
      };
      const other = await Vault.create(new SyncClient({ url: env.url }), { id, passphrase: 'offline passphrase' });
      const app = await Vault.open(new SyncClient({ url: env.url }), { id, passphrase: 'offline passphrase', queue: queueStore, resolve });
      await app.put('note', 'v1');
      await env.stop();
      equal((await app.put('note', 'offline edit')).queued, true);
      equal((await app.put('second', 'made offline')).queued, true);
      // The app restarts while the server is down; the queue persists (the
      // memory store stands in for persistence by being handed over).
      await env.start();
      await other.get('note');
      await other.put('note', 'v2 from another device');
      const restarted = await Vault.open(new SyncClient({ url: env.url }), {
        id,
        passphrase: 'offline passphrase',
        queue: kind === 'memory' ? queueStore : env.queueStores[kind](storeName),
        resolve,
      });
      equal(await restarted.flush(), 0);
      equal(text((await other.get('note')).data), 'v2 from another device + offline edit', 'the conflict was merged, not overwritten');
      equal(text((await other.get('second')).data), 'made offline');
    },
  },
};

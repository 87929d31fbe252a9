// The feed follower: live changes, resume after a server restart, 410 and
// a new generation (a restored backup) lead to a full resync.
import { SyncClient, Vault, Feed, memoryCursor, backoffDelay } from '../../src/index.js';
import { equal, ok, eventually } from './assert.js';

const bytes = (s) => new TextEncoder().encode(s);

async function follow(feed) {
  const seen = [];
  const statuses = [];
  feed.addEventListener('changes', (e) => seen.push(e.detail));
  feed.addEventListener('status', (e) => statuses.push(e.detail));
  feed.start();
  await eventually(() => feed.status === 'live', 10_000, 'live');
  return { seen, statuses };
}

export default {
  name: 'feed',
  tests: {
    async 'back-off: full jitter, capped, never under Retry-After'() {
      equal(backoffDelay(0, { random: () => 0.999 }), 499);
      equal(backoffDelay(10, { random: () => 0.999 }), 29_970);
      equal(backoffDelay(50, { random: () => 1 - 1e-9 }) <= 30_000, true);
      equal(backoffDelay(3, { random: () => 0, retryAfterSeconds: 7 }), 7000);
      for (let i = 0; i < 200; i++) {
        const d = backoffDelay(i % 12);
        ok(d >= 0 && d <= Math.min(30_000, 500 * 2 ** (i % 12)), `delay ${d}`);
      }
    },

    async 'changes arrive live, with names, and the feed resumes after a restart'(env) {
      const id = env.unique('feed');
      const vault = await Vault.create(new SyncClient({ url: env.url }), { id, passphrase: 'feed passphrase words' });
      const feed = vault.follow({ wait: 5, backoff: { baseMs: 50, capMs: 300 } });
      const { seen, statuses } = await follow(feed);
      equal(seen.length, 1, 'a first full listing');
      equal(seen[0].resync, true);
      await vault.put('todo', 'milk');
      await eventually(() => seen.some((b) => b.changes.some((c) => c.name === 'todo')), 10_000, 'live change');
      await env.restart();
      await vault.put('todo', 'milk, eggs').catch(async () => vault.put('todo', 'milk, eggs'));
      await eventually(() => seen.filter((b) => b.changes.some((c) => c.name === 'todo')).length >= 2, 15_000, 'change after restart');
      ok(statuses.includes('backoff') || statuses.includes('connecting'), statuses.join());
      equal(seen.filter((b) => b.resync).length, 1, 'a restart is not a resync');
      await feed.stop();
      equal(feed.status, 'stopped');
    },

    async 'the feed follows a stream: one request carries every change'(env) {
      const client = new SyncClient({ url: env.url });
      await client.register({ id: env.unique('streamed'), password: 'a long password' });
      const requests = [];
      const counting = new SyncClient({
        url: env.url,
        tokens: client.tokens,
        fetch: (u, i) => (String(u).includes('/v1/changes') && requests.push(new Headers(i?.headers).get('Accept')), fetch(u, i)),
      });
      const feed = new Feed(counting, { wait: 5 });
      const { seen } = await follow(feed);
      for (const key of ['s1', 's2', 's3']) {
        await client.stores.put(key, bytes(key));
        await eventually(() => seen.some((b) => b.changes.some((c) => c.key === key)), 10_000, key);
      }
      const streams = requests.filter((accept) => accept === 'text/event-stream');
      equal(streams.length, 1, `one stream for three changes (${requests.join()})`);
      ok(requests.length <= 3, `the first listing, one look, and the stream: no polls (${requests.length} requests)`);
      await feed.stop();
    },

    async 'a server without the stream is long-polled instead'(env) {
      const client = new SyncClient({ url: env.url });
      await client.register({ id: env.unique('polled'), password: 'a long password' });
      let polls = 0;
      // A proxy that drops Accept: the server answers the plain feed.
      const withoutStream = (u, i) => {
        if (String(u).includes('/v1/changes')) polls++;
        const headers = new Headers(i?.headers);
        headers.delete('Accept');
        return fetch(u, { ...i, headers });
      };
      const feed = new Feed(new SyncClient({ url: env.url, tokens: client.tokens, fetch: withoutStream }), { wait: 1 });
      const { seen } = await follow(feed);
      await client.stores.put('p1', bytes('x'));
      await eventually(() => seen.some((b) => b.changes.some((c) => c.key === 'p1')), 10_000, 'change by long-poll');
      equal(feed.streaming, false);
      ok(polls >= 3, `polled (${polls})`);
      await feed.stop();
    },

    async 'stop and start at once leave one loop; wait is at least 1 s'(env) {
      const client = new SyncClient({ url: env.url });
      await client.register({ id: env.unique('race'), password: 'a long password' });
      let polls = 0;
      const counting = new SyncClient({ url: env.url, tokens: client.tokens, fetch: (u, i) => (String(u).includes('/v1/changes') && polls++, fetch(u, i)) });
      const feed = new Feed(counting, { wait: 0 });
      equal(feed.wait, 1);
      const batches = [];
      feed.addEventListener('changes', (e) => batches.push(e.detail));
      feed.start();
      feed.stop();
      feed.start();
      await eventually(() => feed.status === 'live', 10_000, 'live');
      await new Promise((r) => setTimeout(r, 1500));
      ok(polls < 8, `a second loop would poll twice as often (${polls} polls)`);
      await client.stores.put('one', bytes('x'));
      await eventually(() => batches.some((b) => b.changes.some((c) => c.key === 'one')), 10_000, 'change');
      await new Promise((r) => setTimeout(r, 300));
      equal(batches.filter((b) => b.changes.some((c) => c.key === 'one')).length, 1, 'each change once');
      await feed.stop();
      equal(feed.status, 'stopped');
      // Signed out: the feed stops instead of polling forever.
      const before = polls;
      feed.start();
      await eventually(() => feed.status === 'live', 10_000, 'live again');
      await client.signOut();
      await eventually(() => feed.status === 'unauthorized', 70_000, 'unauthorized');
      const after = polls;
      await new Promise((r) => setTimeout(r, 1500));
      equal(polls, after, 'no more polls after a 401');
      ok(after > before);
    },

    async '410 and a new generation lead to a full resync'(env) {
      const client = new SyncClient({ url: env.url });
      await client.register({ id: env.unique('gen'), password: 'a long password' });
      await client.stores.put('kept', bytes('x'));
      const cursor = memoryCursor();
      const info = await client.info();
      await cursor.set({ seq: 1_000_000, generation: info.generation });
      const feed = new Feed(client, { cursor, wait: 2, backoff: { baseMs: 50, capMs: 300 } });
      const { seen } = await follow(feed);
      equal(seen[0].resync, true, '410 → resync');
      equal(seen[0].changes.length, 1);
      const before = (await cursor.get()).generation;
      await env.restoreBackup();
      await eventually(() => seen.length >= 2, 15_000, 'resync after restore');
      equal(seen[1].resync, true, 'new generation → resync');
      ok((await cursor.get()).generation !== before, 'the cursor takes the new generation');
      await feed.stop();
    },
  },
};

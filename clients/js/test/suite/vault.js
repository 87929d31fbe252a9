// End-to-end encryption: round trips, what the server's files hold,
// recovery, passphrase change, conflicts, documents.
import { SyncClient, Vault, padme } from '../../src/index.js';
import { deepEqual, equal, ok, rejects, text } from './assert.js';

const client = (env) => new SyncClient({ url: env.url });
const union = (a, b) => [...new Set([...a, ...b])].sort();
const json = (bytes) => JSON.parse(text(bytes));
const encode = (value) => new TextEncoder().encode(JSON.stringify(value));

export default {
  name: 'vault',
  tests: {
    async 'padme pads little and leaks little'() {
      deepEqual([0, 1, 2, 3, 9, 100, 1000, 1025].map(padme), [0, 1, 2, 3, 10, 104, 1024, 1088]);
      for (let n = 2; n < 5000; n += 7) ok(padme(n) >= n && padme(n) <= n * 1.12 + 2, `padme(${n})`);
    },

    async 'round trip; the server holds no plaintext, name, meta, id or passphrase'(env) {
      const id = env.unique('alice');
      const passphrase = 'Tr0ub4dor & 3 unguessable words';
      const vault = await Vault.create(client(env), { id, passphrase });
      const secret = 'PLAINTEXT-BODY-7f3a the quarterly numbers';
      await vault.put('Diary 2026', secret, { meta: { title: 'MY-META-TITLE-91c2' } });
      await vault.log('Diary 2026').append('LOG-ENTRY-PLAINTEXT-55e1');
      const item = await vault.get('Diary 2026');
      equal(text(item.data), secret);
      deepEqual(item.meta, { title: 'MY-META-TITLE-91c2' });
      equal(item.name, 'Diary 2026');
      equal(item.version, 1);
      deepEqual((await vault.log('Diary 2026').read()).entries.map((e) => text(e.data)), ['LOG-ENTRY-PLAINTEXT-55e1']);
      const listed = await vault.list();
      deepEqual(listed.map((s) => [s.name, s.meta]), [['Diary 2026', { title: 'MY-META-TITLE-91c2' }]]);
      // A second device opens the same data with the passphrase alone.
      const other = await Vault.open(client(env), { id, passphrase });
      equal(text((await other.get('Diary 2026')).data), secret);
      await rejects(Vault.open(client(env), { id, passphrase: 'not the passphrase at all' }), 'invalid_credentials', 401);
      await env.restart(); // checkpoints the WAL into the database file
      for (const needle of [secret, 'Diary 2026', 'MY-META-TITLE', 'LOG-ENTRY-PLAINTEXT', passphrase, id]) {
        equal(await env.filesContain(needle), false, `server files contain ${needle}:`);
      }
      ok(await env.filesContain(await vault.keyOf('Diary 2026')), 'the scan does see what the server stores (the derived key)');
    },

    async 'a body moved to another store does not open'(env) {
      const vault = await Vault.create(client(env), { id: env.unique('mallory'), passphrase: 'a long enough passphrase' });
      await vault.put('a', 'for a');
      await vault.put('b', 'for b');
      const a = await vault.keyOf('a');
      const b = await vault.keyOf('b');
      const stolen = await vault.client.stores.get(a);
      const target = await vault.client.stores.get(b);
      await vault.client.stores.put(b, stolen.data, { ifMatch: target.token });
      await rejects(vault.get('b'), 'decrypt_failed');
    },

    async 'recovery code survives a server-side reset; passphrase change re-wraps'(env) {
      const id = env.unique('bob');
      const vault = await Vault.create(client(env), { id, passphrase: 'first passphrase here' });
      await vault.put('keep', 'precious');
      const code = await vault.addRecoveryCode();
      ok(/^([0-9A-Z]{4}-){7}[0-9A-Z]{4}$/.test(code), code);
      await vault.changePassphrase({ id, passphrase: 'first passphrase here', newPassphrase: 'second passphrase here' });
      await rejects(Vault.open(client(env), { id, passphrase: 'first passphrase here' }), 'invalid_credentials');
      const reopened = await Vault.open(client(env), { id, passphrase: 'second passphrase here' });
      equal(text((await reopened.get('keep')).data), 'precious');
      await rejects(vault.changePassphrase({ id, passphrase: 'wrong passphrase!!', newPassphrase: 'x'.repeat(12) }), 'wrong_password', 403);
      const token = await env.resetToken(id);
      const recovered = await Vault.recover(client(env), { id, resetToken: token, recoveryCode: code.toLowerCase(), newPassphrase: 'third passphrase here' });
      equal(text((await recovered.get('keep')).data), 'precious');
      const again = await Vault.open(client(env), { id, passphrase: 'third passphrase here' });
      equal(text((await again.get('keep')).data), 'precious');
    },

    async 'conflict storm: 4 devices, 50 writes each, nothing lost'(env) {
      const id = env.unique('storm');
      const passphrase = 'storm passphrase words';
      const first = await Vault.create(client(env), { id, passphrase });
      await first.put('list', encode([]));
      const devices = [first];
      for (let i = 1; i < 4; i++) devices.push(await Vault.open(client(env), { id, passphrase }));
      let conflicts = 0;
      const resolve = async (local, remote, current) => {
        conflicts++;
        ok(current && current.token, 'the 412 tells the winner');
        const theirs = await remote();
        return encode(union(json(local), theirs ? json(theirs.data) : []));
      };
      await Promise.all(
        devices.map(async (vault, d) => {
          let mine = json((await vault.get('list')).data);
          for (let i = 0; i < 50; i++) {
            mine = union(mine, [`d${d}-${String(i).padStart(2, '0')}`]);
            await vault.put('list', encode(mine), { resolve });
            mine = json((await vault.get('list')).data);
          }
        }),
      );
      const final = json((await first.get('list')).data);
      equal(final.length, 200, 'every write survives');
      ok(conflicts > 0, 'the storm had conflicts');
    },

    async 'without a resolver a conflict is thrown, never overwritten'(env) {
      const id = env.unique('careful');
      const a = await Vault.create(client(env), { id, passphrase: 'careful passphrase' });
      const b = await Vault.open(client(env), { id, passphrase: 'careful passphrase' });
      await a.put('note', 'from a');
      await rejects(b.put('note', 'from b, blind'), 'precondition_failed', 412);
      const kept = await b.put('note', 'b keeps the remote', { resolve: () => null });
      ok(kept.skipped);
      equal(text((await b.get('note')).data), 'from a');
    },

    async 'passphrase change: the same passphrase is refused, a lost answer locks no one out'(env) {
      const id = env.unique('lost');
      const vault = await Vault.create(client(env), { id, passphrase: 'original passphrase' });
      await vault.put('keep', 'still here');
      await rejects(vault.changePassphrase({ id, passphrase: 'original passphrase', newPassphrase: 'original passphrase' }), 'bad_request');
      equal(text((await (await Vault.open(client(env), { id, passphrase: 'original passphrase' })).get('keep')).data), 'still here');
      // The server changes the password, but its answer never arrives.
      const dropping = new SyncClient({
        url: env.url,
        fetch: async (url, init) => {
          const response = await fetch(url, init);
          if (String(url).endsWith('/v1/account/password')) throw new TypeError('connection reset');
          return response;
        },
      });
      const flaky = await Vault.open(dropping, { id, passphrase: 'original passphrase' });
      await rejects(flaky.changePassphrase({ id, passphrase: 'original passphrase', newPassphrase: 'changed passphrase' }), 'network');
      const reopened = await Vault.open(client(env), { id, passphrase: 'changed passphrase' });
      equal(text((await reopened.get('keep')).data), 'still here', 'the new passphrase opens the data');
      // The next change leaves only the newest passphrase able to open the keys.
      await reopened.changePassphrase({ id, passphrase: 'changed passphrase', newPassphrase: 'third passphrase' });
      const ring = await reopened.client.stores.get(await reopened.client.keyFor('sync-node/keyring'));
      equal(JSON.parse(text(ring.data)).wraps.filter((w) => w.kind === 'passphrase').length, 1, 'one passphrase wrap left');
      await rejects(Vault.create(client(env), { id: env.unique('short'), passphrase: 'short' }), 'bad_request');
    },

    async 'the keyring is out of reach, and a lost keyring is never silently replaced'(env) {
      const id = env.unique('ring');
      const vault = await Vault.create(client(env), { id, passphrase: 'keyring passphrase' });
      await vault.put('data', 'sealed under the data key');
      await rejects(vault.put('sync-node/keyring', 'overwrite'), 'bad_request');
      await rejects(vault.delete('sync-node/keyring'), 'bad_request');
      // Someone deletes the keyring store behind the vault's back.
      const raw = client(env);
      await raw.signIn({ id, password: (await import('../../src/crypto.js').then((c) => c.fromPassphrase('keyring passphrase', id))).password });
      await raw.stores.delete(await raw.keyFor('sync-node/keyring'), { ifMatch: '*' });
      await rejects(Vault.open(client(env), { id, passphrase: 'keyring passphrase' }), 'keyring_missing');
    },

    async 'metadata: kept when not given, the winner\'s kept on a merge unless set'(env) {
      const id = env.unique('meta');
      const a = await Vault.create(client(env), { id, passphrase: 'metadata passphrase' });
      const b = await Vault.open(client(env), { id, passphrase: 'metadata passphrase' });
      await a.put('doc', 'v1', { meta: { title: 'First' } });
      await a.put('doc', 'v2');
      deepEqual((await b.get('doc')).meta, { title: 'First' }, 'a put without meta keeps it');
      await a.put('doc', 'v3', { meta: { title: 'Renamed by a' } });
      const merged = await b.put('doc', 'v2 + b', { resolve: async (local, remote) => new TextEncoder().encode(text((await remote()).data) + ' + b') });
      ok(merged.written);
      const item = await a.get('doc');
      equal(text(item.data), 'v3 + b');
      deepEqual(item.meta, { title: 'Renamed by a' }, 'the rename survives the merge');
    },

    async 'document: appends, pulls, compaction, a racing compaction skips'(env) {
      const id = env.unique('doc');
      const a = await Vault.create(client(env), { id, passphrase: 'document passphrase' });
      const b = await Vault.open(client(env), { id, passphrase: 'document passphrase' });
      const da = a.document('shared doc');
      const db = b.document('shared doc');
      deepEqual(await da.load('S0'), { snapshot: new TextEncoder().encode('S0'), updates: [] });
      await da.append('u1');
      await da.append('u2');
      const loaded = await db.load('ignored');
      equal(text(loaded.snapshot), 'S0');
      deepEqual(loaded.updates.map(text), ['u1', 'u2']);
      await db.append('u3');
      deepEqual((await da.pull()).updates.map(text), ['u3']);
      ok(await da.compact('S0+u1+u2+u3'), 'a compacts');
      equal(await db.compact('S0+u1+u2+u3 by b'), false, 'b raced and skips');
      await da.append('u4');
      const after = await db.pull();
      ok(after.reload, 'b reloads the body a wrote');
      equal(text(after.snapshot), 'S0+u1+u2+u3');
      deepEqual(after.updates.map(text), ['u4']);
      ok(await db.compact('S0+u1..u4 by b'), 'b compacts on top of a\'s body');
      await db.append('u5');
      await db.append('u6');
      await db.pull();
      ok(await db.compact('S0+u1..u6 by b'));
      const reload = await da.pull();
      ok(reload.reload, 'a is behind the compaction and must reload');
      equal(text(reload.snapshot), 'S0+u1..u6 by b');
      deepEqual(reload.updates, []);
      // The document is deleted and made again, with more entries than a saw.
      await b.delete('shared doc');
      const dc = b.document('shared doc');
      await dc.load('NEW');
      for (const u of ['n1', 'n2', 'n3', 'n4', 'n5', 'n6', 'n7', 'n8']) await dc.append(u);
      const recreated = await da.pull();
      ok(recreated.reload, 'a notices the new document');
      equal(text(recreated.snapshot), 'NEW');
      equal(recreated.updates.length, 8);
    },
  },
};

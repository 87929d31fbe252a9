// Sharing encrypted stores between accounts (SPEC §10): identities and
// fingerprints, sealed envelopes, members who read and write, removal with
// a re-key; and a server that substitutes identities, forges or replays
// envelopes.
import { SyncClient, Vault } from '../../src/index.js';
import { Sealer, StoreKeys, parseMeta } from '../../src/sealer.js';
import { deepEqual, equal, ok, rejects, text } from './assert.js';
import { rewrite, tamperer } from './tamper.js';

const client = (env, fetch) => new SyncClient({ url: env.url, fetch });

/** Up to three accounts (alice, bob, carol); `evil` sits between bob and the server. */
async function people(env, count = 3) {
  const ids = { alice: env.unique('alice'), bob: env.unique('bob'), carol: env.unique('carol') };
  const alice = await Vault.create(client(env), { id: ids.alice, passphrase: 'alice passphrase words' });
  const evil = tamperer();
  const bob = count > 1 ? await Vault.create(client(env, evil.fetch), { id: ids.bob, passphrase: 'bob passphrase words' }) : alice;
  const carol = count > 2 ? await Vault.create(client(env), { id: ids.carol, passphrase: 'carol passphrase words' }) : alice;
  return { ids, alice, bob, carol, evil };
}

export default {
  name: 'sharing',
  tests: {
    async 'two people share a store: fingerprints match, the member sees it by name, writes, appends; removal re-keys'(env) {
      const { ids, alice, bob, carol } = await people(env);
      await alice.put('notebook', 'first page', { meta: { title: 'Our notebook' } });
      await rejects(alice.share('notebook', ids.bob, 'WRITE'), 'identity_unverified');
      equal(await alice.fingerprint(ids.bob), await bob.myFingerprint(), 'the safety number both compare:');
      ok(/^(\d{5} ){11}\d{5}$/.test(await bob.myFingerprint()));
      await alice.share('notebook', ids.bob, 'WRITE');
      await alice.fingerprint(ids.carol);
      await alice.share('notebook', ids.carol, 'READ');
      const listed = await bob.list();
      deepEqual(listed.map((s) => [s.name, s.meta, s.permission]), [['notebook', { title: 'Our notebook' }, 'WRITE']]);
      const notebook = { key: listed[0].key };
      equal(text((await bob.get(notebook)).data), 'first page');
      ok((await bob.put(notebook, 'second page, by bob')).written);
      equal(text((await alice.get('notebook')).data), 'second page, by bob');
      await bob.log(notebook).append('an entry by bob');
      deepEqual((await alice.log('notebook').read()).entries.map((e) => text(e.data)), ['an entry by bob'], `rejected ${alice.rejectedEntries}:`);
      await rejects(carol.put(notebook, 'carol may only read'), 'forbidden', 403);
      // Alice removes bob: the store is re-keyed; carol reads on, bob's keys open nothing new.
      const bobKeys = new Map(bob.sharedKeys.get(notebook.key));
      await alice.unshare('notebook', ids.bob);
      await alice.put('notebook', 'after bob left');
      equal(text((await carol.get(notebook)).data), 'after bob left');
      equal(await bob.get(notebook), null, 'the server no longer serves bob');
      const body = await alice.stores.get(notebook.key);
      const withOldKeys = new Sealer(StoreKeys.shared(notebook.key, bobKeys, parseMeta(body.meta).wraps));
      await rejects(withOldKeys.openBody(body.data), 'decrypt_failed');
      await rejects(withOldKeys.openMeta(body.meta), 'decrypt_failed');
      // History stays readable to those who remain.
      deepEqual((await carol.log(notebook).read()).entries.map((e) => text(e.data)), ['an entry by bob']);
    },

    async 'share links: redeemed by the secret in the fragment, once; listed without secrets; confirmed by a share'(env) {
      const { ids, alice, bob, carol } = await people(env);
      await alice.put('board', 'pinned notes', { meta: { title: 'Board' } });
      const made = await alice.createLink('board', { permission: 'WRITE', url: 'https://app.example/open' });
      ok(made.url.startsWith('https://app.example/open#sync-node-link='), made.url);
      const secret = made.url.split('=')[1];
      equal(await env.filesContain(secret), false, 'the secret never reaches the server');
      deepEqual((await alice.links('board')).map((l) => [l.link, l.permission, l.uses]), [[made.link, 'WRITE', 1]]);
      await rejects(bob.redeem('https://app.example/open#nothing'), 'bad_request');
      const wrong = made.url.slice(0, -4) + (made.url.endsWith('AAAA') ? 'BBBB' : 'AAAA');
      await rejects(bob.redeem(wrong), 'not_found', 404);
      const joined = await bob.redeem(made.url);
      deepEqual([joined.name, joined.permission], ['board', 'WRITE']);
      equal(text((await bob.get({ key: joined.key })).data), 'pinned notes');
      await rejects(carol.redeem(made.url), 'not_found', 404);
      deepEqual(await alice.links('board'), [], 'used up');
      // The owner confirms bob (after comparing fingerprints): an envelope of his own, and his writes count.
      await alice.fingerprint(ids.bob);
      await alice.share('board', ids.bob, 'WRITE');
      await bob.get({ key: joined.key }); // the confirmation wrote a new version (the member list)
      ok((await bob.put({ key: joined.key }, 'pinned notes + bob')).written);
      equal(text((await alice.get('board')).data), 'pinned notes + bob');
      const fresh = await Vault.open(client(env), { id: ids.bob, passphrase: 'bob passphrase words' });
      equal(text((await fresh.get({ key: joined.key })).data), 'pinned notes + bob', 'another device of bob, through the envelope');
      // A revoked link is refused.
      const second = await alice.createLink('board');
      await alice.revokeLink('board', second.link);
      await rejects(carol.redeem(second.url), 'not_found', 404);
    },

    async 'a substituted identity is refused, and only an explicit trust follows a change'(env) {
      const { ids, alice, bob } = await people(env, 2);
      const mallory = await Vault.create(client(env), { id: env.unique('mallory'), passphrase: 'mallory passphrase words' });
      const evil = tamperer();
      const watcher = await Vault.open(client(env, evil.fetch), { id: ids.alice, passphrase: 'alice passphrase words' });
      const genuine = await watcher.fingerprint(ids.bob);
      equal(genuine, await bob.myFingerprint());
      // The server now serves mallory's identity for bob: it names mallory, so it does not even parse as bob's …
      const mallorys = await (await fetch(`${env.url}/v1/accounts/${encodeURIComponent(mallory.id)}/identity`, { headers: { Authorization: `Bearer ${await mallory.client.tokens.get()}` } })).arrayBuffer();
      evil.rules.push(async (request, pass) => {
        if (!request.url.includes(`/v1/accounts/${encodeURIComponent(ids.bob)}/identity`)) return null;
        const response = await pass();
        return rewrite(response, new Uint8Array(mallorys));
      });
      await rejects(watcher.fingerprint(ids.bob), 'integrity');
      await rejects(watcher.share('missing', ids.bob, 'READ'), 'integrity');
      evil.clear();
      // … and a new identity bob did not sign with his old key is a change the app must acknowledge.
      const fresh = await import('../../src/identity.js');
      const keys = await fresh.newIdentityKeys();
      const substitute = await fresh.identityDocument(ids.bob, keys);
      evil.rules.push(async (request, pass) => {
        if (!request.url.includes(`/v1/accounts/${encodeURIComponent(ids.bob)}/identity`)) return null;
        return rewrite(await pass(), substitute);
      });
      const error = await rejects(watcher.fingerprint(ids.bob), 'identity_changed');
      ok(/trustIdentity/.test(error.message));
      await alice.put('secret', 'not for mallory');
      await rejects(watcher.share('secret', ids.bob, 'READ'), 'identity_changed');
      const shown = await fresh.readIdentity(substitute, ids.bob);
      await watcher.trustIdentity(ids.bob, shown.fingerprint);
      equal(await watcher.fingerprint(ids.bob), shown.fingerprint, 'followed after the user compared it');
    },

  },
};

export const adversaries = {
  name: 'sharing adversaries',
  tests: {
    async 'an identity rotation is followed through the old key, and what was signed before still verifies'(env) {
      const { ids, alice, bob } = await people(env, 2);
      await alice.put('log', 'v1');
      await alice.fingerprint(ids.bob);
      await alice.share('log', ids.bob, 'READ');
      const key = await alice.keyOf('log');
      await alice.log('log').append('signed with the first key');
      const before = await bob.fingerprint(ids.alice);
      equal(text((await bob.get({ key })).data), 'v1');
      const after = await alice.rotateIdentity();
      ok(after !== before, 'a new fingerprint');
      equal(await bob.fingerprint(ids.alice), after, 'followed: signed by the key bob pinned');
      const fresh = await Vault.open(client(env), { id: ids.bob, passphrase: 'bob passphrase words', state: bob.state });
      equal(text((await fresh.get({ key })).data), 'v1', 'the version signed before the rotation verifies');
      deepEqual((await fresh.log({ key }).read()).entries.map((e) => text(e.data)), ['signed with the first key']);
      await alice.put('log', 'v2');
      equal(text((await fresh.get({ key })).data), 'v2', 'and what is signed after');
      equal(text((await alice.get('log')).data), 'v2');
    },

    async 'a forged or replayed envelope is refused'(env) {
      const { ids, alice, bob, carol, evil } = await people(env);
      await alice.put('doc', 'v1');
      await alice.fingerprint(ids.bob);
      await alice.fingerprint(ids.carol);
      await alice.share('doc', ids.bob, 'READ');
      await alice.share('doc', ids.carol, 'READ');
      const key = await alice.keyOf('doc');
      const bobFresh = async () => Vault.open(client(env, evil.fetch), { id: ids.bob, passphrase: 'bob passphrase words', state: bob.state });
      // Carol (a member, holding the key) forges an envelope to bob claiming to come from alice.
      const { sealEnvelope } = await import('../../src/envelope.js');
      const { newIdentityKeys, readIdentity } = await import('../../src/identity.js');
      const bobIdentity = await readIdentity(new Uint8Array(await (await fetch(`${env.url}/v1/accounts/${encodeURIComponent(ids.bob)}/identity`, { headers: { Authorization: `Bearer ${await carol.client.tokens.get()}` } })).arrayBuffer()), ids.bob);
      const forged = await sealEnvelope({ from: alice.id.toLowerCase(), location: key, keys: new Map([[1, crypto.getRandomValues(new Uint8Array(32))]]), permission: 'OWN', grantee: bobIdentity, signer: await newIdentityKeys() });
      evil.rules.push(async (request, pass) => {
        if (!request.url.endsWith(`/v1/stores/${key}/envelope`)) return null;
        return rewrite(await pass(), forged);
      });
      await rejects((await bobFresh()).get({ key }), 'integrity');
      evil.clear();
      // After a re-key, the server replays the old envelope: refused by the epoch pin.
      const v1 = await (await fetch(`${env.url}/v1/stores/${key}/envelope`, { headers: { Authorization: `Bearer ${await bob.client.tokens.get()}` } })).arrayBuffer();
      await alice.unshare('doc', ids.carol);
      equal(text((await (await bobFresh()).get({ key })).data), 'v1', 'bob reads under the new key');
      evil.rules.push(async (request, pass) => {
        if (!request.url.endsWith(`/v1/stores/${key}/envelope`)) return null;
        return rewrite(await pass(), new Uint8Array(v1));
      });
      await rejects((await bobFresh()).get({ key }), 'rollback');
    },

    async 'a READ member cannot forge a write others accept, and a junk entry does not break the document'(env) {
      const { ids, alice, bob, evil } = await people(env, 2);
      await alice.put('doc', 'by alice');
      const doc = alice.document('journal');
      await doc.load('S');
      await doc.append('u1');
      for (const name of ['doc', 'journal']) {
        await alice.fingerprint(ids.bob);
        await alice.share(name, ids.bob, 'READ');
      }
      const listed = await bob.list();
      const docKey = listed.find((s) => s.name === 'doc').key;
      const journalKey = listed.find((s) => s.name === 'journal').key;
      // A server that lets bob's writes through (it answers them with the owner's authority).
      const ownerToken = await alice.client.tokens.get();
      evil.rules.push(async (request) => {
        if (request.method === 'GET' || request.method === 'HEAD') return null;
        request.headers.Authorization = `Bearer ${ownerToken}`;
        return null;
      });
      await bob.get({ key: docKey });
      ok((await bob.put({ key: docKey }, 'forged by bob, a reader')).written, 'the server took it');
      await rejects(alice.get('doc'), 'integrity');
      await bob.log({ key: journalKey }).append('forged entry by bob');
      await alice.logs.append(journalKey, crypto.getRandomValues(new Uint8Array(300)));
      const before = alice.rejectedEntries;
      const loaded = await alice.document('journal').load('S');
      deepEqual(loaded.updates.map(text), ['u1'], 'the forged and the junk entries are left out');
      equal(alice.rejectedEntries - before, 2);
    },

    async 'the plain API cannot grant a vault store'(env) {
      const { ids, alice } = await people(env, 1);
      await alice.put('doc', 'x');
      await rejects(alice.client.stores.share(await alice.keyOf('doc'), ids.bob, 'READ'), 'bad_request');
    },
  },
};

export const members = {
  name: 'sharing members',
  tests: {
    async 'members who replay a list, re-wrap keys, sign lists, write after removal or break sequences are refused'(env) {
      const ids = { alice: env.unique('alice'), bob: env.unique('bob'), wendy: env.unique('wendy'), carol: env.unique('carol'), rita: env.unique('rita') };
      const alice = await Vault.create(client(env), { id: ids.alice, passphrase: 'alice passphrase words' });
      const ownerToken = await alice.client.tokens.get();
      // A server that lets its friends write the shared stores with the owner's authority.
      const shared = new Set();
      const colluding = () => {
        const evil = tamperer();
        evil.rules.push(async (request) => {
          const path = new URL(request.url).pathname;
          const aimed = [...shared].some((key) => path.startsWith(`/v1/stores/${key}`));
          if (aimed && request.method !== 'GET' && request.method !== 'HEAD') request.headers.Authorization = `Bearer ${ownerToken}`;
          return null;
        });
        return evil;
      };
      const open = async (name, fetch) => Vault.create(client(env, fetch), { id: ids[name], passphrase: `${name} passphrase words` });
      const bob = await open('bob', colluding().fetch);
      const wendy = await open('wendy', colluding().fetch);
      const carol = await open('carol');
      const rita = await open('rita', colluding().fetch);
      for (const name of ['bob', 'wendy', 'carol', 'rita']) await alice.fingerprint(ids[name]);
      const store = async (name, shares) => {
        await alice.put(name, `${name} v1`);
        for (const [who, p] of shares) await alice.share(name, ids[who], p);
        const key = await alice.keyOf(name);
        shared.add(key);
        return key;
      };

      // 1. Wendy replays the member list from before bob left: refused by everyone who saw the newer one.
      const plans = await store('plans', [['bob', 'WRITE'], ['wendy', 'WRITE'], ['carol', 'READ']]);
      await wendy.openStore(plans);
      const old = { members: wendy.known.get(plans).members, roster: wendy.known.get(plans).roster, wrapsSignature: wendy.known.get(plans).wrapsSignature };
      await alice.unshare('plans', ids.bob);
      await carol.get({ key: plans });
      await wendy.openStore(plans);
      Object.assign(wendy.known.get(plans), { members: old.members, roster: old.roster });
      await wendy.put({ key: plans }, 'with the old list').catch(() => undefined);
      await rejects(alice.get('plans'), 'rollback');
      await rejects(carol.get({ key: plans }), 'rollback');

      // 2. Wendy swaps the key wraps for bytes of her own: the owner's signature over them no longer holds.
      const budget = await store('budget', [['wendy', 'WRITE']]);
      await wendy.openStore(budget);
      for (const wrap of wendy.known.get(budget).keys.wraps) wrap.sealed = crypto.getRandomValues(new Uint8Array(wrap.sealed.length));
      ok((await wendy.put({ key: budget }, 'the owner locked out?')).written);
      await rejects(alice.get('budget'), 'decrypt_failed');
      await rejects(wendy.get({ key: budget }), 'integrity', undefined);

      // 3. Bob, removed, appends with his old key through a colluding server: not taken as history.
      const diary = await store('diary', [['bob', 'WRITE']]);
      await bob.get({ key: diary });
      await bob.log({ key: diary }).append('by bob, while a member');
      await alice.unshare('diary', ids.bob);
      await bob.appendEntry(diary, 'aaaaaaaaaaaaaaaa', 1, 'by bob, after his removal');
      const before = alice.rejectedEntries;
      deepEqual((await alice.log('diary').read()).entries.map((e) => text(e.data)), ['by bob, while a member']);
      equal(alice.rejectedEntries - before, 1);

      // 4. Rita, a reader, signs a list that makes her an owner: carol trusts only the owners she accepted.
      const board = await store('board', [['carol', 'READ'], ['rita', 'READ']]);
      await carol.get({ key: board });
      const seen = await rita.openStore(board);
      const grabbed = rita.known.get(board).members.map((m) => (m.id === ids.rita ? { ...m, p: 'OWN' } : m));
      await rita.writeBody(board, { data: 'rita rules', against: seen.token, members: grabbed });
      await rejects(carol.get({ key: board }), 'integrity');
      await rejects(alice.get('board'), 'integrity');

      // 5. Wendy appends to a writer sequence out of order: her entry is left out, the document still loads.
      const notes = await store('notes', [['wendy', 'WRITE']]);
      const doc = alice.document('notes');
      await doc.load('S');
      await doc.append('u1');
      await wendy.get({ key: notes });
      await wendy.appendEntry(notes, 'ffffffffffffffff', 7, 'out of order');
      const skipped = alice.rejectedEntries;
      deepEqual((await alice.document('notes').load('S')).updates.map(text), ['u1']);
      equal(alice.rejectedEntries - skipped, 1);

      // 6. Carol has seen wendy's identity only through signatures: she cannot seal to it unseen.
      await carol.put('mine', 'x');
      await rejects(carol.share('mine', ids.wendy, 'READ'), 'identity_unverified');
    },
  },
};

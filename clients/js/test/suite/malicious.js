// The server as an adversary: a tampering fetch between the client and the
// real server drops, reorders, duplicates and hides log entries, replays
// old versions and keyrings, swaps and strips metadata, changes key_salt
// and removes the recovery door. Each case ends in the documented error
// (or, for a hidden entry, in its writer appending it again); the control
// runs the same flows through an honest proxy.
import { SyncClient, Vault, memoryState } from '../../src/index.js';
import { Keyring, doorLocation, keyringBehind } from '../../src/keyring.js';
import { aesKey, derive, padme, passphraseSecret, recoverySecret, seal } from '../../src/crypto.js';
import { context, LABEL } from '../../src/labels.js';
import { deepEqual, equal, ok, rejects, text } from './assert.js';
import { capture, editLog, rewrite, serveSaved, tamperer } from './tamper.js';

const PASS = 'malicious server passphrase';

/** An account with an honest vault, and a second device of it behind `evil`. */
async function devices(env, name) {
  const id = env.unique(name);
  const honest = await Vault.create(new SyncClient({ url: env.url }), { id, passphrase: PASS });
  const evil = tamperer();
  const state = memoryState();
  const victim = await Vault.open(new SyncClient({ url: env.url, fetch: evil.fetch }), { id, passphrase: PASS, state });
  return { id, honest, evil, victim, state };
}

export default {
  name: 'malicious server',
  tests: {
    async 'control: the same flows through an honest proxy pass'(env) {
      const { honest, victim } = await devices(env, 'control');
      await honest.put('note', 'v1', { meta: { t: 1 } });
      await honest.put('note', 'v2');
      equal(text((await victim.get('note')).data), 'v2');
      deepEqual((await victim.list()).map((s) => [s.name, s.meta]), [['note', { t: 1 }]]);
      const a = honest.document('doc');
      const b = victim.document('doc');
      await a.load('S');
      await a.append('a1');
      deepEqual((await b.load('S')).updates.map(text), ['a1']);
      await b.append('b1');
      await a.append('a2');
      deepEqual((await b.pull()).updates.map(text), ['a2']);
      ok(await b.compact('S+a1+b1+a2'));
      const again = await a.pull();
      ok(again.reload);
      equal(b.reappended + a.reappended, 0);
    },

    async 'dropped, reordered and replayed log entries are refused'(env) {
      const { honest, evil, victim } = await devices(env, 'entries');
      const doc = honest.document('doc');
      await doc.load('S');
      for (const u of ['u1', 'u2', 'u3']) await doc.append(u);
      const key = await honest.keyOf('doc');
      const cases = {
        dropped: (entries) => entries.filter((e) => e.index !== 2),
        reordered: (entries) => entries.map((e, i) => ({ index: e.index, data: entries[i === 0 ? 1 : i === 1 ? 0 : i].data })),
        duplicated: (entries) => [entries[0], { index: 2, data: entries[0].data }, ...entries.slice(1).map((e) => ({ index: e.index + 1, data: e.data }))],
      };
      for (const [what, edit] of Object.entries(cases)) {
        evil.clear();
        evil.rules.push(editLog(key, edit));
        const error = await rejects(victim.document('doc').load('S'), 'integrity');
        ok(/missing|repeats/.test(error.message), `${what}: ${error.message}`);
        await rejects(victim.log('doc').read(), 'integrity');
      }
      evil.clear();
      deepEqual((await victim.document('doc').load('S')).updates.map(text), ['u1', 'u2', 'u3']);
    },

    async 'an entry the server hides from a compacting device is appended again by its writer'(env) {
      const { honest, evil, victim } = await devices(env, 'hidden');
      const a = victim.document('doc'); // behind the lying server
      const b = honest.document('doc');
      await a.load('S');
      await b.load('S');
      const hidden = await b.append('from b, hidden from a');
      await a.append('from a');
      const key = await honest.keyOf('doc');
      evil.rules.push(editLog(key, (entries) => entries.filter((e) => e.index !== hidden)));
      deepEqual((await a.pull()).updates.map(text), ['from a']);
      ok(await a.compact('S+from a'), 'a compacts what it saw: the server drops b\'s entry with it');
      evil.clear();
      const reload = await b.pull();
      ok(reload.reload);
      equal(b.reappended, 1, 'b found its acknowledged entry missing and appended it again');
      deepEqual((await a.pull()).updates.map(text), ['from b, hidden from a'], 'nothing is lost for good');
    },

    async 'an entry the server stored but called refused cannot hide a later one; a refused entry never blocks a load'(env) {
      const { id, honest, evil, victim } = await devices(env, 'refused');
      const a = victim.document('doc');
      await a.load('S');
      // The server stores the append, then says it refused it.
      let lied = false;
      evil.rules.push(async (request, pass) => {
        if (lied || request.method !== 'POST' || !request.url.endsWith('/log')) return null;
        lied = true;
        await pass();
        return new Response(JSON.stringify({ error: 'bad_request', message: 'refused' }), { status: 400, headers: { 'Content-Type': 'application/json' } });
      });
      await rejects(a.append('draft'), 'bad_request', 400);
      const second = await a.append('second');
      await honest.log('doc').append('third');
      // … and hides the acknowledged one from a device that compacts past it.
      const hider = tamperer();
      const key = await honest.keyOf('doc');
      hider.rules.push(editLog(key, (entries) => entries.filter((e) => e.index !== second)));
      const other = await Vault.open(new SyncClient({ url: env.url, fetch: hider.fetch }), { id, passphrase: PASS, state: memoryState() });
      const b = other.document('doc');
      await b.load('S');
      ok(await b.compact('S+draft+third'));
      evil.clear();
      const reload = await a.pull();
      ok(reload.reload);
      equal(a.reappended, 1, 'the acknowledged entry came back');
      hider.clear();
      deepEqual((await b.pull()).updates.map(text), ['second']);
      // An entry refused for good (too large) is not kept: later loads work.
      const max = (await honest.client.info()).max_entry_bytes;
      await rejects(a.append(new Uint8Array(max + 1)), 'payload_too_large', 413);
      await a.append('after the refusal');
      const loaded = await honest.document('doc').load('S');
      equal(text(loaded.updates.at(-1)), 'after the refusal');
      await a.load('S');
    },

    async 'a store incarnation older than the one seen is refused'(env) {
      const { honest, evil, victim } = await devices(env, 'incarnation');
      await honest.put('note', 'first incarnation');
      const token = await honest.client.tokens.get();
      const key = await honest.keyOf('note');
      const old = await capture(env.url, token, key);
      await honest.delete('note');
      await new Promise((r) => setTimeout(r, 5));
      await honest.put('note', 'second incarnation');
      equal(text((await victim.get('note')).data), 'second incarnation');
      evil.rules.push(serveSaved(key, old));
      await rejects(victim.get('note'), 'rollback');
    },

    async 'an old recovery code and the server\'s old copies cannot plant a keyring behind the passphrase door'(env) {
      const { id, honest, victim } = await devices(env, 'forged');
      const oldCode = await honest.addRecoveryCode();
      const token = await honest.client.tokens.get();
      const saved = new Map();
      for (const s of (await honest.stores.list()).stores) saved.set(s.key, await capture(env.url, token, s.key));
      await honest.addRecoveryCode(); // the old code is replaced …
      await honest.rotateKeys(); // … and the keys rotated
      await victim.put('before', 'the victim is current');
      const { keySalt } = await honest.client.account();
      // The attacker: the old code opens the server's old copy of its door, and the old keyring lists the passphrase door.
      const replay = { get: async (key) => (saved.has(key) ? { data: saved.get(key).body, token: 'old' } : honest.stores.get(key)) };
      const old = await keyringBehind(/** @type {any} */ (replay), keySalt, { kind: 'recovery', secret: await recoverySecret(oldCode) });
      const door = old.content.doors.find((d) => d.kind === 'passphrase');
      // A keyring of the attacker's, and the passphrase door's inside rewritten to lead there (its lock kept).
      const evil = await Keyring.create(honest.stores, keySalt, crypto.getRandomValues(new Uint8Array(32)));
      const current = await honest.stores.get(door.location);
      const lockLength = new DataView(current.data.buffer, current.data.byteOffset).getUint16(5);
      const pair = await crypto.subtle.generateKey({ name: 'ECDH', namedCurve: 'P-256' }, true, ['deriveBits']);
      const ephemeral = new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey));
      const doorPublic = await crypto.subtle.importKey('raw', Uint8Array.from(atob(door.public.replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0)), { name: 'ECDH', namedCurve: 'P-256' }, false, []);
      const shared = new Uint8Array(await crypto.subtle.deriveBits({ name: 'ECDH', public: doorPublic }, pair.privateKey, 256));
      const key = await aesKey(await derive(shared, LABEL.doorInside, keySalt, door.location, ephemeral));
      const json = new TextEncoder().encode(JSON.stringify({ ring: evil.location, ark: btoa(String.fromCharCode(...evil.ark)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, ''), version: 99 }));
      const plain = new Uint8Array(Math.max(256, padme(json.length + 4)));
      new DataView(plain.buffer).setUint32(0, json.length);
      plain.set(json, 4);
      const sealed = await seal(key, plain, context(LABEL.doorInside, keySalt, door.location));
      const forged = new Uint8Array(7 + lockLength + 65 + sealed.length);
      forged.set(current.data.subarray(0, 7 + lockLength));
      forged.set(ephemeral, 7 + lockLength);
      forged.set(sealed, 7 + lockLength + 65);
      await honest.stores.put(door.location, forged, { ifMatch: current.token, meta: current.meta });
      // The server drops the current keyring, so the victim goes through its door again.
      const apps = new Set((await honest.list()).map((s) => s.key));
      for (const s of (await honest.stores.list()).stores) if (!apps.has(s.key) && s.key !== door.location && s.key !== evil.location && !saved.has(s.key)) await honest.stores.delete(s.key, { ifMatch: '*' }).catch(() => {});
      const error = await rejects(victim.put('after', 'must not reach the attacker\'s keys'), 'decrypt_failed');
      ok(error);
      const planted = victim.keyringVersion;
      ok(planted < 99, 'the planted keyring was not adopted');
      ok(await doorLocation({ kind: 'passphrase', secret: await passphraseSecret(PASS, id, await honest.client.kdfSalt(id)) }, keySalt) === door.location);
    },

    async 'an older version of a store is refused once a newer one was seen'(env) {
      const { honest, evil, victim } = await devices(env, 'rollback');
      await honest.put('note', 'v1', { meta: { title: 'one' } });
      const token = await honest.client.tokens.get();
      const key = await honest.keyOf('note');
      const v1 = await capture(env.url, token, key);
      await honest.put('note', 'v2', { meta: { title: 'two' } });
      equal(text((await victim.get('note')).data), 'v2');
      evil.rules.push(serveSaved(key, v1));
      await rejects(victim.get('note'), 'rollback');
      // The listing too: the old metadata is an old version.
      evil.clear();
      evil.rules.push(async (request, pass) => {
        if (!request.url.includes('/v1/stores?') && !request.url.endsWith('/v1/stores')) return null;
        const response = await pass();
        const body = await response.json();
        for (const s of body.stores) if (s.key === key) s.meta = v1.headers['sync-meta'];
        return rewrite(response, JSON.stringify(body));
      });
      const listed = await victim.list();
      equal(listed.find((s) => s.key === key)?.error?.code, 'rollback');
    },

    async 'bodies and metadata cannot be swapped or mixed, nor metadata stripped'(env) {
      const { honest, evil, victim } = await devices(env, 'mixed');
      await honest.put('a', 'for a', { meta: { m: 'a' } });
      await honest.put('b', 'for b', { meta: { m: 'b' } });
      const token = await honest.client.tokens.get();
      const a = await honest.keyOf('a');
      const b = await honest.keyOf('b');
      evil.rules.push(serveSaved(b, await capture(env.url, token, a)));
      await rejects(victim.get('b'), 'decrypt_failed');
      // A new body with the old version's metadata.
      evil.clear();
      const old = await capture(env.url, token, a);
      await honest.put('a', 'for a, v2');
      evil.rules.push(async (request, pass) => {
        if (request.method !== 'GET' || !request.url.endsWith(`/v1/stores/${a}`)) return null;
        const response = await pass();
        return rewrite(response, new Uint8Array(await response.arrayBuffer()), { 'Sync-Meta': old.headers['sync-meta'] });
      });
      await rejects(victim.get('a'), 'integrity');
      // Metadata stripped: get and list say so, list does not hide the store.
      evil.clear();
      evil.rules.push(async (request, pass) => {
        if (request.method !== 'GET' || !request.url.includes('/v1/stores')) return null;
        const response = await pass();
        if (request.url.includes('/v1/stores?') || request.url.endsWith('/v1/stores')) {
          const body = await response.json();
          for (const s of body.stores) if (s.key === a) s.meta = null;
          return rewrite(response, JSON.stringify(body));
        }
        if (!request.url.endsWith(`/v1/stores/${a}`)) return response;
        return rewrite(response, new Uint8Array(await response.arrayBuffer()), { 'Sync-Meta': null });
      });
      await rejects(victim.get('a'), 'integrity');
      const listed = await victim.list();
      equal(listed.length, 2, 'both stores are listed');
      equal(listed.find((s) => s.key === a)?.error?.code, 'integrity');
      equal(listed.find((s) => s.key === b)?.name, 'b');
    },

    async 'a changed key_salt or an old keyring is reported, never followed'(env) {
      const { id, honest, evil, state } = await devices(env, 'pins');
      const open = () => Vault.open(new SyncClient({ url: env.url, fetch: evil.fetch }), { id, passphrase: PASS, state });
      evil.rules.push(async (request, pass) => {
        if (request.method !== 'POST' || !request.url.endsWith('/v1/sessions')) return null;
        const response = await pass();
        const body = await response.json();
        body.key_salt = 'ab'.repeat(32);
        return rewrite(response, JSON.stringify(body));
      });
      await rejects(open(), 'account_changed');
      evil.clear();
      // The key stores as they are now, then a rotation the device sees.
      const token = await honest.client.tokens.get();
      const saved = new Map();
      const apps = new Set((await honest.list()).map((s) => s.key));
      for (const s of (await honest.stores.list()).stores) if (!apps.has(s.key)) saved.set(s.key, await capture(env.url, token, s.key));
      await honest.rotateKeys();
      await open(); // pins the new keyring version
      evil.rules.push(async (request) => {
        const key = decodeURIComponent(new URL(request.url).pathname.replace('/v1/stores/', ''));
        const old = request.method === 'GET' && saved.get(key);
        return old ? new Response(old.body, { status: old.status, headers: old.headers }) : null;
      });
      await rejects(open(), 'rollback');
    },

    async 'a recovery door the server removed fails with what to do; the reset stays usable'(env) {
      const { id, honest } = await devices(env, 'door');
      await honest.put('keep', 'kept');
      const code = await honest.addRecoveryCode();
      const evil = tamperer();
      let signedIn = false;
      evil.rules.push(async (request, pass) => {
        if (request.method === 'POST' && request.url.endsWith('/v1/sessions')) {
          signedIn = true;
          return pass();
        }
        if (signedIn && request.method === 'GET' && request.url.includes('/v1/stores/')) {
          signedIn = false;
          return new Response(JSON.stringify({ error: 'not_found', message: 'gone' }), { status: 404, headers: { 'Content-Type': 'application/json' } });
        }
        return null;
      });
      const token = await env.resetToken(id);
      const error = await rejects(Vault.recover(new SyncClient({ url: env.url, fetch: evil.fetch }), { id, resetToken: token, recoveryCode: code, newPassphrase: 'after the reset passphrase' }), 'keyring_missing');
      ok(/retry with Vault.open/.test(error.message));
      const vault = await Vault.open(new SyncClient({ url: env.url }), { id, passphrase: 'after the reset passphrase', recoveryCode: code });
      equal(text((await vault.get('keep')).data), 'kept');
    },
  },
};

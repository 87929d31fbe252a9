// End-to-end encryption (format 2): round trips, what the server's files
// hold, recovery, passphrase changes and key rotation, conflicts,
// documents, operator-made accounts, and the API's edges.
import { SyncClient, Vault, padme, memoryState, SyncError, VAULT_PREFIX } from '../../src/index.js';
import { deepEqual, equal, ok, rejects, text } from './assert.js';
import { capture, tamperer } from './tamper.js';
import { argon2id } from 'hash-wasm';

const client = (env, fetch) => new SyncClient({ url: env.url, fetch });
const union = (a, b) => [...new Set([...a, ...b])].sort();
const json = (bytes) => JSON.parse(text(bytes));
const encode = (value) => new TextEncoder().encode(JSON.stringify(value));
const asText = (data) => (typeof data === 'string' ? data : text(data));

/** hex(HMAC-SHA256(key_salt, name)): what format 1 stored names as. */
async function saltedName(keySalt, name) {
  const raw = new Uint8Array(keySalt.match(/../g).map((h) => parseInt(h, 16)));
  const key = await crypto.subtle.importKey('raw', raw, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  return [...new Uint8Array(await crypto.subtle.sign('HMAC', key, new TextEncoder().encode(name)))].map((b) => b.toString(16).padStart(2, '0')).join('');
}

export const keys = {
  name: 'vault keys',
  tests: {
    async 'Argon2id is the one claimed: a known answer, and the password a sign-in sends is HKDF of Argon2id(64 MiB, 3 passes)'(env) {
      // The vector was computed with @noble/hashes (an audited, independent implementation).
      const known = await argon2id({ password: 'correct horse', salt: new Uint8Array(32).fill(7), iterations: 3, memorySize: 65536, parallelism: 1, hashLength: 32, outputType: 'hex' });
      equal(known, '47d7480973de7c25979f0fa0d209f12e2ee334f79bbb06462ac0afe857933414');
      const id = env.unique('argon');
      const passphrase = 'what the server sees words';
      let sent = null;
      const spy = tamperer();
      spy.rules.push(async (request) => {
        if (request.method === 'POST' && request.url.endsWith('/v1/accounts')) sent = JSON.parse(request.body).password;
        return null;
      });
      await Vault.create(client(env, spy.fetch), { id, passphrase });
      // Recompute from the public salt, independently of src/crypto.js.
      const salt = (await (await fetch(`${env.url}/v1/accounts/${encodeURIComponent(id)}/salt`)).json()).salt;
      const frame = (text) => {
        const bytes = typeof text === 'string' ? new TextEncoder().encode(text) : text;
        return [new Uint8Array([bytes.length >>> 24, (bytes.length >>> 16) & 255, (bytes.length >>> 8) & 255, bytes.length & 255]), bytes];
      };
      const parts = [new TextEncoder().encode('sync-node/v2/passphrase-salt'), ...frame(new Uint8Array(salt.match(/../g).map((h) => parseInt(h, 16)))), ...frame(id)];
      const joined = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
      parts.reduce((at, p) => (joined.set(p, at), at + p.length), 0);
      const argonSalt = new Uint8Array(await crypto.subtle.digest('SHA-256', joined));
      const master = await argon2id({ password: passphrase.normalize('NFKC'), salt: argonSalt, iterations: 3, memorySize: 65536, parallelism: 1, hashLength: 32, outputType: 'binary' });
      const hkdf = await crypto.subtle.importKey('raw', master, 'HKDF', false, ['deriveBits']);
      const info = new Uint8Array([...new TextEncoder().encode('sync-node/v2/server-password')]);
      const bits = new Uint8Array(await crypto.subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt: new Uint8Array(32), info }, hkdf, 256));
      const expected = btoa(String.fromCharCode(...bits)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
      equal(sent, expected, 'the sign-in value:');
      ok(!sent.includes(passphrase));
    },

    async 'every failure is a SyncError'(env) {
      const vault = await Vault.create(client(env), { id: env.unique('errors'), passphrase: 'error passphrase words' });
      await rejects(vault.put('x', /** @type {any} */ (42)), 'bad_request');
      await rejects(vault.get(/** @type {any} */ ('')), 'bad_request');
      await rejects(Vault.recover(client(env), { id: 'x', resetToken: 't', recoveryCode: 'nonsense', newPassphrase: 'a good long passphrase' }), 'invalid_recovery_code');
      await rejects(Vault.open(client(env), { id: '', passphrase: 'whatever passphrase' }), 'bad_request');
    },
    async 'recovery: the checksum is checked before the reset; the code works once; the keys rotate'(env) {
      const id = env.unique('bob');
      const vault = await Vault.create(client(env), { id, passphrase: 'first passphrase here' });
      await vault.put('keep', 'precious');
      const code = await vault.addRecoveryCode();
      ok(/^([0-9A-Z]{4}-){7}[0-9A-Z]{4}$/.test(code), code);
      const token = await env.resetToken(id);
      const typo = code.slice(0, 5) + (code[5] === 'A' ? 'B' : 'A') + code.slice(6);
      await rejects(Vault.recover(client(env), { id, resetToken: token, recoveryCode: typo, newPassphrase: 'third passphrase here' }), 'invalid_recovery_code');
      await rejects(Vault.recover(client(env), { id, resetToken: token, recoveryCode: code, newPassphrase: 'short' }), 'weak_passphrase');
      const before = vault.keyringVersion;
      const recovered = await Vault.recover(client(env), { id, resetToken: token, recoveryCode: code.toLowerCase(), newPassphrase: 'third passphrase here' });
      ok(recovered.recoveryCode && recovered.recoveryCode !== code, 'a new code replaces the used one');
      ok(recovered.keyringVersion > before, 'the keys rotated');
      equal(text((await recovered.get('keep')).data), 'precious');
      const again = await Vault.open(client(env), { id, passphrase: 'third passphrase here' });
      equal(text((await again.get('keep')).data), 'precious');
      await rejects(Vault.open(client(env), { id, passphrase: 'first passphrase here' }), 'invalid_credentials');
      // The used code opens nothing any more: a second reset with it fails, saying what to do.
      const second = await env.resetToken(id);
      const failed = await rejects(Vault.recover(client(env), { id, resetToken: second, recoveryCode: code, newPassphrase: 'fourth passphrase here' }), 'keyring_missing');
      ok(/retry with Vault.open/.test(failed.message), failed.message);
      // … and the new one still does, through Vault.open after that reset.
      const reopened = await Vault.open(client(env), { id, passphrase: 'fourth passphrase here', recoveryCode: recovered.recoveryCode });
      equal(text((await reopened.get('keep')).data), 'precious');
      ok(reopened.recoveryCode && reopened.recoveryCode !== recovered.recoveryCode);
    },

    async 'a passphrase change or rotation locks the old keys out of everything written afterwards'(env) {
      const id = env.unique('rotate');
      const vault = await Vault.create(client(env), { id, passphrase: 'old passphrase words' });
      await vault.addRecoveryCode(); // a door the rotations keep: an old keyring must not lead through it
      await vault.put('before', 'written before');
      // The server keeps a copy of every store as it is now.
      const token = await vault.client.tokens.get();
      const kept = new Map();
      for (const s of (await vault.stores.list()).stores) kept.set(s.key, await capture(env.url, token, s.key));
      await vault.changePassphrase({ passphrase: 'old passphrase words', newPassphrase: 'new passphrase words' });
      await vault.put('after', 'written after the change');
      await vault.put('before', 'rewritten after the change');
      await vault.rotateKeys();
      await vault.put('rotated', 'written after a rotation');
      // A server replaying its old copies to someone with the old passphrase.
      const evil = tamperer();
      evil.rules.push(async (request) => {
        const path = new URL(request.url).pathname;
        if (request.method === 'POST' && path === '/v1/sessions') {
          const keySalt = (await vault.client.account()).keySalt;
          return new Response(JSON.stringify({ token, expires: Date.now() + 1e6, key_salt: keySalt }), { status: 201, headers: { 'Content-Type': 'application/json' } });
        }
        const key = decodeURIComponent(path.replace('/v1/stores/', ''));
        const saved = request.method === 'GET' && kept.get(key);
        if (saved && !(await vault.stores.head(key))) return new Response(saved.body, { status: saved.status, headers: saved.headers });
        return null;
      });
      const attacker = await Vault.open(client(env, evil.fetch), { id, passphrase: 'old passphrase words', state: memoryState() });
      for (const name of ['after', 'before', 'rotated']) {
        await rejects(attacker.get(name), 'rollback', undefined);
      }
      equal(text((await vault.get('rotated')).data), 'written after a rotation');
      const fresh = await Vault.open(client(env), { id, passphrase: 'new passphrase words' });
      deepEqual((await fresh.list()).map((s) => s.name).sort(), ['after', 'before', 'rotated']);
      equal(text((await fresh.get('before')).data), 'rewritten after the change');
    },

    async 'two devices rotating: the one holding an older keyring rotates from the newer one, nothing is orphaned'(env) {
      const id = env.unique('two-rotations');
      const a = await Vault.create(client(env), { id, passphrase: 'two devices passphrase' });
      const b = await Vault.open(client(env), { id, passphrase: 'two devices passphrase' });
      await a.rotateKeys();
      await a.put('photos', 'written under the newer key');
      await b.put('notes', 'b writes after a rotated, unaware');
      await b.addRecoveryCode(); // from the keyring b read before a's rotation
      const fresh = await Vault.open(client(env), { id, passphrase: 'two devices passphrase' });
      equal(text((await fresh.get('photos')).data), 'written under the newer key');
      equal(text((await fresh.get('notes')).data), 'b writes after a rotated, unaware');
      equal(text((await b.get('photos')).data), 'written under the newer key');
      ok(fresh.keyringVersion >= 3);
    },

    async 'passphrase change: the same or a weak one is refused, a lost answer locks no one out'(env) {
      const id = env.unique('lost');
      const vault = await Vault.create(client(env), { id, passphrase: 'original passphrase' });
      await vault.put('keep', 'still here');
      await rejects(vault.changePassphrase({ passphrase: 'original passphrase', newPassphrase: 'original passphrase' }), 'bad_request');
      await rejects(vault.changePassphrase({ passphrase: 'original passphrase', newPassphrase: 'tiny' }), 'weak_passphrase');
      await rejects(vault.changePassphrase({ passphrase: 'wrong passphrase!!', newPassphrase: 'x1y2z3w4v5u6t7' }), 'wrong_password', 403);
      await vault.rotateKeys(); // a mistyped current passphrase changed nothing: the passphrase still opens after a rotation
      equal(text((await (await Vault.open(client(env), { id, passphrase: 'original passphrase' })).get('keep')).data), 'still here');
      equal(text((await (await Vault.open(client(env), { id, passphrase: 'original passphrase' })).get('keep')).data), 'still here');
      // The server changes the password, but its answer never arrives.
      let drops = 1;
      const dropping = client(env, async (url, init) => {
        const response = await fetch(url, init);
        if (String(url).endsWith('/v1/account/password') && drops-- > 0) throw new TypeError('connection reset');
        return response;
      });
      const flaky = await Vault.open(dropping, { id, passphrase: 'original passphrase' });
      await rejects(flaky.changePassphrase({ passphrase: 'original passphrase', newPassphrase: 'changed passphrase' }), 'network');
      // The user tries again: the server now says the old password is wrong, since the change was made.
      const retrying = await Vault.open(client(env), { id, passphrase: 'changed passphrase' }).catch(() => null);
      ok(retrying, 'the new passphrase opens after the lost answer');
      await flaky.changePassphrase({ passphrase: 'original passphrase', newPassphrase: 'changed passphrase' });
      const reopened = await Vault.open(client(env), { id, passphrase: 'changed passphrase' });
      equal(text((await reopened.get('keep')).data), 'still here', 'the new passphrase opens the data');
      await reopened.changePassphrase({ passphrase: 'changed passphrase', newPassphrase: 'third passphrase' });
      equal(text((await (await Vault.open(client(env), { id, passphrase: 'third passphrase' })).get('keep')).data), 'still here');
    },

    async 'the key stores are out of reach of the plain API, and a lost keyring is never silently replaced'(env) {
      const id = env.unique('ring');
      const vault = await Vault.create(client(env), { id, passphrase: 'keyring passphrase' });
      await vault.put('data', 'sealed under a store key');
      await rejects(vault.put('sync-node/keyring', 'overwrite'), 'bad_request');
      const plain = vault.client;
      const key = await vault.keyOf('data');
      await rejects(plain.stores.put(key, new Uint8Array([1]), { ifMatch: '*' }), 'bad_request');
      await rejects(plain.stores.delete(key, { ifMatch: '*' }), 'bad_request');
      await rejects(plain.logs.append(key, new Uint8Array([1])), 'bad_request');
      // Someone deletes every key store behind the vault's back.
      const apps = new Set((await vault.list()).map((s) => s.key));
      for (const s of (await vault.stores.list()).stores) if (!apps.has(s.key)) await vault.stores.delete(s.key, { ifMatch: '*' });
      await rejects(Vault.open(client(env), { id, passphrase: 'keyring passphrase' }), 'keyring_missing');
    },

    async 'an operator-made account is claimed by a vault, then opens with the passphrase'(env) {
      const id = env.unique('claimed');
      await env.addAccount(id, 'temporary password 1');
      await rejects(Vault.open(client(env), { id, passphrase: 'my own passphrase' }), 'invalid_credentials');
      const vault = await Vault.claim(client(env), { id, password: 'temporary password 1', passphrase: 'my own passphrase' });
      await vault.put('mine', 'claimed');
      await rejects(vault.client.signIn({ id, password: 'temporary password 1' }), 'invalid_credentials');
      const again = await Vault.open(client(env), { id, passphrase: 'my own passphrase' });
      equal(text((await again.get('mine')).data), 'claimed');
    },

  },
};

export default {
  name: 'vault',
  tests: {
    async 'padding: a floor of 256 bytes, then Padmé'(env) {
      deepEqual([0, 1, 2, 3, 9, 100, 1000, 1025].map(padme), [0, 1, 2, 3, 10, 104, 1024, 1088]);
      for (let n = 2; n < 5000; n += 7) ok(padme(n) >= n && padme(n) <= n * 1.12 + 2, `padme(${n})`);
      const vault = await Vault.create(client(env), { id: env.unique('pad'), passphrase: 'padding passphrase words' });
      const sizes = new Set();
      const metas = new Set();
      for (const n of [0, 1, 7, 64, 100]) {
        await vault.put(`s${n}`, 'x'.repeat(n), { meta: { t: 'y'.repeat(n) } });
        await vault.log(`s${n}`).append('z'.repeat(n || 1));
      }
      const apps = new Set((await vault.list()).map((s) => s.key));
      for (const s of (await vault.stores.list()).stores) {
        if (!apps.has(s.key)) continue;
        sizes.add(s.size);
        metas.add(s.meta.length);
        const page = await vault.logs.read(s.key);
        for (const e of page.entries) sizes.add(`entry ${e.data.length}`);
      }
      deepEqual([...sizes].map(String).sort(), ['289', 'entry 289'], 'bodies and entries up to the floor all have one size');
      equal(metas.size, 1, 'metadata up to the floor has one size');
      // The key stores (keyring, doors) look like app stores: a body length an app body can have, metadata of the same shape.
      await vault.addRecoveryCode();
      for (const s of (await vault.stores.list()).stores) {
        ok(s.size - 33 >= 256 && padme(s.size - 33) === s.size - 33, `a key store of ${s.size} bytes stands out`);
        ok(metas.has(s.meta.length), `metadata of ${s.meta.length} characters stands out`);
      }
    },

    async 'round trip; the server\'s files hold no name, content, metadata, id, passphrase or recovery code, and no name by HMAC guesses'(env) {
      const id = env.unique('alice');
      const passphrase = 'Tr0ub4dor & 3 unguessable words';
      const vault = await Vault.create(client(env), { id, passphrase });
      const code = await vault.addRecoveryCode();
      const secret = 'PLAINTEXT-BODY-7f3a the quarterly numbers';
      await vault.put('Diary 2026', secret, { meta: { title: 'MY-META-TITLE-91c2' } });
      await vault.log('Diary 2026').append('LOG-ENTRY-PLAINTEXT-55e1');
      const item = await vault.get('Diary 2026');
      equal(text(item.data), secret);
      deepEqual(item.meta, { title: 'MY-META-TITLE-91c2' });
      equal(item.name, 'Diary 2026');
      equal(item.version, 1);
      ok(item.key.startsWith(VAULT_PREFIX));
      deepEqual((await vault.log('Diary 2026').read()).entries.map((e) => text(e.data)), ['LOG-ENTRY-PLAINTEXT-55e1']);
      deepEqual((await vault.list()).map((s) => [s.name, s.meta]), [['Diary 2026', { title: 'MY-META-TITLE-91c2' }]], 'the key stores are not listed');
      // A second device opens the same data with the passphrase alone (NFKC: a composed é equals e + combining accent).
      const other = await Vault.open(client(env), { id, passphrase });
      equal(text((await other.get('Diary 2026')).data), secret);
      await rejects(Vault.open(client(env), { id, passphrase: 'not the passphrase at all' }), 'invalid_credentials', 401);
      const { keySalt } = await vault.client.account();
      await env.restart(); // checkpoints the WAL into the database file
      for (const needle of [secret, 'Diary 2026', 'MY-META-TITLE', 'LOG-ENTRY-PLAINTEXT', passphrase, id, code, code.replace(/-/g, '')]) {
        equal(await env.filesContain(needle), false, `server files contain ${needle}:`);
      }
      for (const name of ['Diary 2026', 'sync-node/keyring', 'keyring', 'Diary']) {
        equal(await env.filesContain(await saltedName(keySalt, name)), false, `a key_salt guess finds ${name}:`);
      }
      ok(await env.filesContain(item.key), 'the scan does see what the server stores (the location)');
    },

    async 'the passphrase is normalised (NFKC) and a weak one is refused'(env) {
      const id = env.unique('nfkc');
      await rejects(Vault.create(client(env), { id, passphrase: 'short' }), 'weak_passphrase');
      await rejects(Vault.create(client(env), { id, passphrase: 'aaaaaaaaaaaaaaaa' }), 'weak_passphrase');
      await rejects(Vault.create(client(env), { id, passphrase: id }), 'weak_passphrase');
      // Composed characters and a ligature, then the same words decomposed and spelled out.
      const vault = await Vault.create(client(env), { id, passphrase: '\ufb01ne caf\u00e9 au lait, s\u2019il vous pla\u00eet' });
      await vault.put('n', 'normalised');
      const decomposed = await Vault.open(client(env), { id, passphrase: 'fine cafe\u0301 au lait, s\u2019il vous plai\u0302t' });
      equal(text((await decomposed.get('n')).data), 'normalised');
    },

    async 'a body and metadata moved to another store do not open'(env) {
      const vault = await Vault.create(client(env), { id: env.unique('mallory'), passphrase: 'a long enough passphrase' });
      await vault.put('a', 'for a');
      await vault.put('b', 'for b');
      const a = await vault.stores.get(await vault.keyOf('a'));
      const b = await vault.stores.get(await vault.keyOf('b'));
      await vault.stores.put(b.key, a.data, { ifMatch: b.token, meta: a.meta });
      const error = await rejects(vault.get('b'), 'decrypt_failed');
      ok(error instanceof SyncError);
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
        ok(current && current.token && typeof current.logHead === 'number', 'the 412 tells the winner, camelCase');
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
      equal(json((await first.get('list')).data).length, 200, 'every write survives');
      ok(conflicts > 0, 'the storm had conflicts');
    },

    async 'without a resolver a conflict is thrown; local is what was given; delete says so'(env) {
      const id = env.unique('careful');
      const a = await Vault.create(client(env), { id, passphrase: 'careful passphrase' });
      const b = await Vault.open(client(env), { id, passphrase: 'careful passphrase' });
      await a.put('note', 'from a');
      await rejects(b.put('note', 'from b, blind'), 'precondition_failed', 412);
      let seen;
      const kept = await b.put('note', 'b keeps the remote', { resolve: (local) => void (seen = local) ?? null });
      ok(kept.skipped);
      equal(seen, 'b keeps the remote', 'a string stays a string');
      equal(text((await b.get('note')).data), 'from a');
      deepEqual(await a.delete('note'), { deleted: true });
      await rejects(a.log('never saved').append('x'), 'not_found', 404);
    },

    async 'metadata: kept when not given, the winner\'s kept on a merge unless set'(env) {
      const id = env.unique('meta');
      const a = await Vault.create(client(env), { id, passphrase: 'metadata passphrase' });
      const b = await Vault.open(client(env), { id, passphrase: 'metadata passphrase' });
      await a.put('doc', 'v1', { meta: { title: 'First' } });
      await a.put('doc', 'v2');
      deepEqual((await b.get('doc')).meta, { title: 'First' }, 'a put without meta keeps it');
      await a.put('doc', 'v3', { meta: { title: 'Renamed by a' } });
      const merged = await b.put('doc', 'v2 + b', { resolve: async (local, remote) => `${text((await remote()).data)} + b` });
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
      equal(da.reappended + db.reappended + dc.reappended, 0, 'an honest server drops nothing');
    },

    async 'the feed names every change, and leaves the key stores out'(env) {
      const id = env.unique('named');
      const vault = await Vault.create(client(env), { id, passphrase: 'feed names passphrase' });
      const feed = vault.follow({ wait: 1 });
      const names = [];
      const done = new Promise((resolve) => {
        feed.addEventListener('changes', (e) => {
          names.push(...e.detail.changes.map((c) => c.name));
          if (names.includes('todo')) resolve();
        });
      });
      feed.start();
      await vault.put('todo', 'milk');
      await vault.rotateKeys();
      await vault.put('todo', 'milk, eggs');
      await done;
      feed.stop();
      ok(names.length > 0 && names.every((n) => n === 'todo'), JSON.stringify(names));
    },

  },
};

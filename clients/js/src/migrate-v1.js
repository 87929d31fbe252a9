/**
 * Format 1 → format 2, in place. A format-1 vault (made by this library
 * before format 2) signs in with a PBKDF2-derived password and keeps one
 * data key for everything, at locations derived from `key_salt`. Opening
 * one with its passphrase moves every store it can open — body,
 * metadata and retained log entries — to format 2, then deletes the
 * format-1 copy, then the format-1 keyring, and last changes the server
 * password to the format-2 one. Each step can be cut short and run again:
 * a format-2 copy left by a cut-short run is made again from the
 * format-1 store, which is only deleted once its copy is complete.
 * The format-1 recovery code does not carry over (make a new one).
 * Format 1 could not tell whether the server dropped, replayed or
 * reordered its log entries or served an old body: the migration takes
 * that history as the server gives it. It runs only when the app asks
 * (`Vault.open({migrate: true})`), because it sends the format-1 password,
 * which costs a guesser one PBKDF2 instead of one Argon2id.
 */

import { SyncError } from './errors.js';
import { fromBase64url, fromUtf8, toBase64url, toHex, utf8 } from './bytes.js';
import { normaliseId, open, unpad } from './crypto.js';
import { Keyring, keyringBehind } from './keyring.js';
import { newWriter } from './sealer.js';
import { Stores } from './stores.js';
import { Logs } from './logs.js';

const subtle = globalThis.crypto.subtle;
/** @param {Uint8Array} bytes */
const source = (bytes) => /** @type {Uint8Array<ArrayBuffer>} */ (bytes);

/** Format 1's key derivation: PBKDF2-SHA256 600,000, then HKDF with plain labels. @param {string} passphrase @param {string} id */
async function v1Keys(passphrase, id) {
  const material = await subtle.importKey('raw', utf8(passphrase), 'PBKDF2', false, ['deriveBits']);
  const salt = utf8(`sync-node/v1/passphrase/${normaliseId(id)}`);
  const master = await subtle.deriveBits({ name: 'PBKDF2', hash: 'SHA-256', salt, iterations: 600_000 }, material, 256);
  const hkdf = await subtle.importKey('raw', master, 'HKDF', false, ['deriveBits', 'deriveKey']);
  const password = toBase64url(new Uint8Array(await subtle.deriveBits(hkdf1('sync-node/v1/server-password'), hkdf, 256)));
  return { password, kek: await aes1(hkdf, 'sync-node/v1/key-encryption') };
}

/** @param {string} info */
const hkdf1 = (info) => ({ name: 'HKDF', hash: 'SHA-256', salt: new Uint8Array(32), info: utf8(info) });
/** @param {CryptoKey} hkdf @param {string} info */
const aes1 = (hkdf, info) => subtle.deriveKey(hkdf1(info), hkdf, { name: 'AES-GCM', length: 256 }, false, ['encrypt', 'decrypt']);
/** @param {CryptoKey} key @param {Uint8Array} sealed @param {string} aad */
const open1 = (key, sealed, aad) => open(key, sealed, utf8(aad));

/** Format 1's store key for a name: HMAC(key_salt, name). @param {string} keySalt @param {string} name */
async function key1(keySalt, name) {
  const raw = new Uint8Array(keySalt.match(/../g)?.map((h) => parseInt(h, 16)) ?? []);
  const key = await subtle.importKey('raw', raw, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  return toHex(new Uint8Array(await subtle.sign('HMAC', key, utf8(name))));
}

/**
 * @typedef {object} Target what the migration writes format 2 through
 * @property {(name: string) => Promise<string>} keyOf
 * @property {(key: string, write: {data: Uint8Array, meta: any, name: string, clock: Record<string, number>, against: null}) => Promise<unknown>} writeBody
 * @property {(key: string, writer: string, counter: number, data: Uint8Array) => Promise<unknown>} appendEntry
 */

/**
 * Signs in with the format-1 password and migrates. `null` when that
 * password does not sign in either (a wrong passphrase).
 * @template {Target} V
 * @param {import('./client.js').SyncClient} client
 * @param {{id: string, passphrase: string, secret: Uint8Array, password: string, vaultFor: (keyring: Keyring) => Promise<V>}} options
 * @returns {Promise<{vault: V, moved: {stores: number, entries: number}}|null>}
 */
export async function migrateFromV1(client, { id, passphrase, secret, password, vaultFor }) {
  const old = await v1Keys(passphrase, id);
  let session;
  try {
    session = await client.signIn({ id, password: old.password });
  } catch (error) {
    if (error instanceof SyncError && error.code === 'invalid_credentials') return null;
    throw error;
  }
  const keySalt = session.keySalt;
  const stores = new Stores(client.transport, { vault: true });
  const logs = new Logs(client.transport, stores);
  const existing = await keyringBehind(stores, keySalt, { kind: 'passphrase', secret });
  const ringKey = await key1(keySalt, 'sync-node/keyring');
  const ring = await stores.get(ringKey);
  const moved = { stores: 0, entries: 0 };
  /** @type {Keyring} */
  let keyring;
  if (!ring || 'notModified' in ring) {
    // Cut short after the format-1 keyring went: the format-2 door is there.
    if (!existing) throw new SyncError('keyring_missing', 'this format-1 account has no keyring: its data key is gone (restore it from a backup)');
    keyring = existing;
  } else {
    const wraps = JSON.parse(fromUtf8(ring.data)).wraps ?? [];
    let dataKey = null;
    for (const w of wraps.filter((/** @type {any} */ w) => w.kind === 'passphrase')) {
      dataKey = await open1(old.kek, fromBase64url(w.wrapped), `sync-node/v1/wrap/passphrase/${keySalt}`).catch(() => null);
      if (dataKey) break;
    }
    if (!dataKey) throw new SyncError('decrypt_failed', 'the passphrase does not open this format-1 account\'s keys');
    const content = await aes1(await subtle.importKey('raw', source(dataKey), 'HKDF', false, ['deriveKey']), 'sync-node/v1/content');
    keyring = existing ?? (await Keyring.create(stores, keySalt, secret));
    const target = await vaultFor(keyring);
    for (const s of (await stores.list()).stores) {
      if (!/^[0-9a-f]{64}$/.test(s.key) || s.key === ringKey || !s.meta) continue;
      /** @type {{n: string, m: any}} */
      let named;
      try {
        named = JSON.parse(fromUtf8(unpad(await open1(content, fromBase64url(s.meta), `sync-node/v1/meta/${s.key}`))));
      } catch {
        continue; // not this account's format-1 store (shared by someone else, or the plain API's)
      }
      const body = await stores.get(s.key);
      if (!body || 'notModified' in body || body.data[0] !== 1) continue;
      const version = Number(new DataView(body.data.buffer, body.data.byteOffset).getBigUint64(1));
      const data = unpad(await open1(content, body.data.subarray(9), `sync-node/v1/body/${s.key}/${version}`));
      const page = await logs.read(s.key, { after: body.logBase });
      const entries = [];
      for (const e of page.entries) entries.push(unpad(await open1(content, e.data, `sync-node/v1/log/${s.key}`)));
      const location = await target.keyOf(named.n);
      await stores.delete(location, { ifMatch: '*' }).catch(() => undefined); // a copy a cut-short run left
      await target.writeBody(location, { data, meta: named.m, name: named.n, clock: {}, against: null });
      const writer = newWriter();
      for (let i = 0; i < entries.length; i++) await target.appendEntry(location, writer, i + 1, entries[i]);
      await stores.delete(s.key, { ifMatch: body.token });
      moved.stores += 1;
      moved.entries += entries.length;
    }
    await stores.delete(ringKey, { ifMatch: ring.token });
  }
  await client.changePassword({ password: old.password, newPassword: password });
  return { vault: await vaultFor(keyring), moved };
}

/**
 * `Vault`: the end-to-end encrypted API. Stores are addressed by name (the
 * key is derived from it, SPEC §3); bodies, metadata (with the name) and
 * log entries are sealed with AES-256-GCM under the account's data key
 * before they leave the device, padded with Padmé. The passphrase never
 * reaches the server. Design and threat model: README.md, "Encryption".
 */

import { SyncError } from './errors.js';
import { asBytes, concat, fromBase64url, fromUtf8, toBase64url, utf8 } from './bytes.js';
import { contentKey, fromPassphrase, fromRecoveryCode, newDataKey, newRecoveryCode, open, pad, seal, unpad } from './crypto.js';
import * as keyring from './keyring.js';
import { writeUntilWon } from './conflict.js';
import { Feed } from './feed.js';
import { SharedFeed } from './tabs.js';
import { OfflineQueue } from './queue.js';
import { LogDocument } from './document.js';

const BODY_FORMAT = 1;
const MAX_META_BYTES = 8000;

/**
 * @typedef {object} Item a decrypted store
 * @property {string} name
 * @property {string} key the store key on the server
 * @property {Uint8Array} data
 * @property {any} meta the app's metadata (JSON), or null
 * @property {string} token the version's token (its ETag)
 * @property {number} version how many writes through vaults this body has seen
 * @property {number} seq
 * @property {string|null} permission
 * @property {number} logHead
 * @property {number} logBase
 */

/** @typedef {import('./conflict.js').Resolve<Uint8Array>} Resolve */

export class Vault {
  /**
   * Use `Vault.create`, `Vault.open` or `Vault.recover`.
   * @param {import('./client.js').SyncClient} client @param {Uint8Array} dataKey @param {CryptoKey} content @param {string} keySalt
   * @param {{queue?: import('./queue.js').QueueStore, resolve?: Resolve}} options
   */
  constructor(client, dataKey, content, keySalt, options) {
    this.client = client;
    this.dataKey = dataKey;
    this.content = content;
    this.keySalt = keySalt;
    /** The default conflict resolver (also for queued writes replayed later). */
    this.resolve = options.resolve;
    this.queue = options.queue ? new OfflineQueue(options.queue) : null;
    /** @type {Map<string, {token: string|null, version: number}>} what this vault last saw of each key */
    this.seen = new Map();
    /** @type {Map<string, string>} key → name */
    this.names = new Map();
  }

  /**
   * Registers `id` and sets up its keys: the server gets a password
   * derived from the passphrase, never the passphrase.
   * @param {import('./client.js').SyncClient} client
   * @param {{id: string, passphrase: string, invite?: string, iterations?: number, queue?: import('./queue.js').QueueStore, resolve?: Resolve}} options
   */
  static async create(client, options) {
    const { password, kek } = await fromPassphrase(options.passphrase, options.id, options.iterations);
    const session = await client.register({ id: options.id, password, invite: options.invite });
    return Vault.#setUp(client, kek, session.keySalt, options);
  }

  /**
   * Signs in and opens the account's keys with the passphrase.
   * @param {import('./client.js').SyncClient} client
   * @param {{id: string, passphrase: string, iterations?: number, queue?: import('./queue.js').QueueStore, resolve?: Resolve}} options
   */
  static async open(client, options) {
    const { password, kek } = await fromPassphrase(options.passphrase, options.id, options.iterations);
    const session = await client.signIn({ id: options.id, password });
    return Vault.#setUp(client, kek, session.keySalt, options);
  }

  /**
   * After a server-side password reset: sets a new passphrase with the
   * reset token, and opens the keys with the recovery code (without one
   * the old data cannot be read: the server never had the key).
   * @param {import('./client.js').SyncClient} client
   * @param {{id: string, resetToken: string, recoveryCode: string, newPassphrase: string, iterations?: number, queue?: import('./queue.js').QueueStore, resolve?: Resolve}} options
   */
  static async recover(client, options) {
    const recoveryKek = await fromRecoveryCode(options.recoveryCode);
    const next = await fromPassphrase(options.newPassphrase, options.id, options.iterations);
    await client.confirmReset({ id: options.id, token: options.resetToken, newPassword: next.password });
    const session = await client.signIn({ id: options.id, password: next.password });
    const key = await client.keyFor(keyring.KEYRING_NAME);
    const dataKey = await updateKeyring(client, key, async (ring) => {
      if (!ring) throw new SyncError('not_found', 'this account has no keyring: there is no data to recover');
      const opened = await keyring.unwrap(ring, recoveryKek, 'recovery', session.keySalt);
      // The old passphrase is forgotten or compromised: only the new one and the recovery code open the keys now.
      const wraps = ring.wraps.filter((w) => w.kind !== 'passphrase');
      wraps.push(await keyring.wrap(next.kek, opened, 'passphrase', session.keySalt));
      return { ring: { v: 1, wraps }, dataKey: opened };
    });
    return new Vault(client, dataKey, await contentKey(dataKey), session.keySalt, options);
  }

  /**
   * @param {import('./client.js').SyncClient} client @param {CryptoKey} kek @param {string} keySalt
   * @param {{queue?: import('./queue.js').QueueStore, resolve?: Resolve}} options
   */
  static async #setUp(client, kek, keySalt, options) {
    const key = await client.keyFor(keyring.KEYRING_NAME);
    const dataKey = await updateKeyring(client, key, async (ring) => {
      if (ring) return { ring: null, dataKey: await keyring.unwrap(ring, kek, 'passphrase', keySalt) };
      // A new account (or one whose set-up was cut short): a new data key.
      const fresh = newDataKey();
      return { ring: { v: 1, wraps: [await keyring.wrap(kek, fresh, 'passphrase', keySalt)] }, dataKey: fresh };
    });
    const vault = new Vault(client, dataKey, await contentKey(dataKey), keySalt, options);
    if (vault.queue) await vault.flush().catch(() => undefined);
    return vault;
  }

  /**
   * Makes a recovery code (shown once to the user; it replaces an older
   * one). With it, `Vault.recover` opens the data after a password reset.
   */
  async addRecoveryCode() {
    const code = newRecoveryCode();
    const kek = await fromRecoveryCode(code);
    await updateKeyring(this.client, await this.keyOf(keyring.KEYRING_NAME), async (ring) => {
      if (!ring) throw new SyncError('not_found', 'the keyring is missing');
      const wraps = ring.wraps.filter((w) => w.kind !== 'recovery');
      wraps.push(await keyring.wrap(kek, this.dataKey, 'recovery', this.keySalt));
      return { ring: { v: 1, wraps }, dataKey: this.dataKey };
    });
    return code;
  }

  /**
   * Changes the passphrase: the data key is re-wrapped, no data is
   * re-encrypted. Every other session is signed out. Safe to cut short at
   * any point: the new wrap is added before the server password changes,
   * the old one removed after.
   * @param {{id: string, passphrase: string, newPassphrase: string, iterations?: number}} change
   */
  async changePassphrase({ id, passphrase, newPassphrase, iterations }) {
    const current = await fromPassphrase(passphrase, id, iterations);
    const next = await fromPassphrase(newPassphrase, id, iterations);
    const key = await this.keyOf(keyring.KEYRING_NAME);
    /** @param {(ring: keyring.Keyring) => Promise<keyring.Wrap[]>} edit */
    const rewrite = (edit) =>
      updateKeyring(this.client, key, async (ring) => {
        if (!ring) throw new SyncError('not_found', 'the keyring is missing');
        return { ring: { v: 1, wraps: await edit(ring) }, dataKey: this.dataKey };
      });
    const added = await keyring.wrap(next.kek, this.dataKey, 'passphrase', this.keySalt);
    await rewrite(async (ring) => [...ring.wraps, added]);
    try {
      await this.client.changePassword({ password: current.password, newPassword: next.password });
    } catch (error) {
      await rewrite(async (ring) => ring.wraps.filter((w) => w.wrapped !== added.wrapped));
      throw error;
    }
    await rewrite(async (ring) => {
      const kept = [];
      for (const w of ring.wraps) {
        const opensWithOld = w.kind === 'passphrase' && (await keyring.unwrap({ v: 1, wraps: [w] }, current.kek, 'passphrase', this.keySalt).then(() => true, () => false));
        if (!opensWithOld) kept.push(w);
      }
      return kept;
    });
  }

  /** The store key for a name. @param {string} name */
  async keyOf(name) {
    const key = await this.client.keyFor(name);
    this.names.set(key, name);
    return key;
  }

  /**
   * The decrypted store called `name`, or `null`.
   * @param {string} name @returns {Promise<Item|null>}
   */
  async get(name) {
    return this.getByKey(await this.keyOf(name));
  }

  /** @param {string} key @returns {Promise<Item|null>} */
  async getByKey(key) {
    const body = await this.client.stores.get(key);
    if (!body || 'notModified' in body) {
      this.seen.delete(key);
      return null;
    }
    const { version, data } = await this.#openBody(key, body.data);
    const { name, meta } = await this.#openMeta(key, body.meta ?? null);
    this.seen.set(key, { token: body.token, version });
    return { name, key, data, meta, token: body.token, version, seq: body.seq, permission: body.permission ?? null, logHead: body.logHead, logBase: body.logBase };
  }

  /**
   * Writes `data` (and `meta`, any JSON value) as the store `name`,
   * conditionally on the version this vault last read or wrote (or as a
   * new store if it has seen none). On a conflict, `resolve` (or the
   * vault's) decides what to write; without one the 412 is thrown.
   * With a queue, a write that cannot reach the server is queued and
   * `{queued: true}` returned.
   * @param {string} name @param {Uint8Array|string|ArrayBuffer|ArrayBufferView} data
   * @param {{meta?: any, resolve?: Resolve, base?: string|null}} [options] `base`: the token the data is based on, if not the last seen
   */
  async put(name, data, options = {}) {
    const key = await this.keyOf(name);
    const base = options.base !== undefined ? options.base : (this.seen.get(key)?.token ?? null);
    const meta = await this.#sealMeta(key, name, options.meta ?? null);
    const body = asBytes(data);
    try {
      return await this.#write(key, body, meta, base, options.resolve ?? this.resolve);
    } catch (error) {
      if (!(this.queue && error instanceof SyncError && error.transient)) throw error;
      await this.queue.add({ op: 'put', key, name, data: body, meta: options.meta ?? null, base });
      return { queued: true };
    }
  }

  /**
   * Deletes the store `name` (OWN required), if it is still at the
   * version last seen (else a 412 SyncError).
   * @param {string} name
   */
  async delete(name) {
    const key = await this.keyOf(name);
    await this.client.stores.delete(key, { ifMatch: this.seen.get(key)?.token ?? '*' });
    this.seen.delete(key);
  }

  /**
   * Every store of the vault you can see, decrypted names and metadata
   * (bodies are not downloaded). Stores that are not the vault's (no
   * sealed name) are left out.
   * @returns {Promise<{name: string, key: string, meta: any, token: string, size: number, seq: number, permission: string|null, logHead: number}[]>}
   */
  async list() {
    const { stores } = await this.client.stores.list();
    const items = [];
    for (const s of stores) {
      if (!s.meta) continue;
      try {
        const { name, meta } = await this.#openMeta(s.key, s.meta);
        items.push({ name, key: s.key, meta, token: s.token, size: s.size, seq: s.seq, permission: s.permission ?? null, logHead: s.logHead });
      } catch {
        // Not sealed by this account's key.
      }
    }
    return items;
  }

  /**
   * The log of store `name` (SPEC §9), entries sealed like bodies.
   * @param {string} name
   */
  log(name) {
    const vault = this;
    return {
      /** @param {Uint8Array|string} entry @param {{ifLogHead?: number}} [options] */
      async append(entry, options) {
        const key = await vault.keyOf(name);
        return vault.client.logs.append(key, await vault.sealEntry(key, asBytes(entry)), options);
      },
      /** @param {{after?: number}} [options] */
      async read(options) {
        const key = await vault.keyOf(name);
        const page = await vault.client.logs.read(key, options);
        const entries = [];
        for (const e of page.entries) entries.push({ index: e.index, data: await vault.openEntry(key, e.data) });
        return { ...page, entries };
      },
    };
  }

  /**
   * A CRDT document kept as snapshot (the body) plus updates (the log).
   * @param {string} name
   */
  document(name) {
    return new LogDocument(this, name);
  }

  /**
   * Follows the change feed; each change carries the store's `name` when
   * this vault can tell it. `shared: true` (browsers) shares one feed
   * connection between all tabs of the origin.
   * @param {ConstructorParameters<typeof Feed>[1] & {shared?: boolean, name?: string}} [options]
   */
  follow(options = {}) {
    const decorate = (/** @type {any[]} */ changes) => Promise.all(changes.map(async (c) => ({ ...c, name: await this.#nameOf(c.key, c.token) })));
    const feedOptions = { ...options, decorate };
    return options.shared ? new SharedFeed(this.client, feedOptions) : new Feed(this.client, feedOptions);
  }

  /**
   * Replays queued writes in order, each conditional as when it was made
   * (conflicts go to the vault's `resolve`). Returns how many still wait.
   * @param {(write: any, error: unknown) => void} [onFailure] for writes the server refused for good
   */
  async flush(onFailure) {
    if (!this.queue) return 0;
    return this.queue.replay(async (write) => {
      const meta = await this.#sealMeta(write.key, write.name, write.meta);
      await this.#write(write.key, write.data, meta, write.base, this.resolve);
    }, onFailure);
  }

  /** @param {string} key @param {Uint8Array} body @param {string} meta @param {string|null} base @param {Resolve} [resolve] */
  async #write(key, body, meta, base, resolve) {
    const outcome = await writeUntilWon({
      data: body,
      base,
      resolve,
      fetchRemote: async () => {
        const item = await this.getByKey(key);
        return item && { data: item.data, token: item.token };
      },
      write: async (data, against) => {
        const version = (this.seen.get(key)?.version ?? 0) + 1;
        const sealed = await this.#sealBody(key, version, data);
        const state = await this.client.stores.put(key, sealed, against === null ? { ifNoneMatch: '*', meta } : { ifMatch: against, meta });
        this.seen.set(key, { token: state.token, version });
        return state;
      },
    });
    if ('skipped' in outcome) return { skipped: true, current: outcome.current };
    return outcome.written;
  }

  /**
   * `data` sealed as the next version of the store `key`, for a write made
   * elsewhere (a compaction); `commit(token)` records that it was written.
   * @param {string} key @param {Uint8Array} data
   */
  async sealSnapshot(key, data) {
    const version = (this.seen.get(key)?.version ?? 0) + 1;
    return { sealed: await this.#sealBody(key, version, data), commit: (/** @type {string} */ token) => void this.seen.set(key, { token, version }) };
  }

  /** @param {string} key @param {number} version @param {Uint8Array} data */
  async #sealBody(key, version, data) {
    const header = new Uint8Array(9);
    header[0] = BODY_FORMAT;
    new DataView(header.buffer).setBigUint64(1, BigInt(version));
    return concat(header, await seal(this.content, pad(data), `sync-node/v1/body/${key}/${version}`));
  }

  /** @param {string} key @param {Uint8Array} bytes */
  async #openBody(key, bytes) {
    if (bytes.length < 9 || bytes[0] !== BODY_FORMAT) throw new SyncError('decrypt_failed', 'not a body sealed by this library');
    const version = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(1));
    const data = unpad(await open(this.content, bytes.subarray(9), `sync-node/v1/body/${key}/${version}`));
    return { version, data };
  }

  /** @param {string} key @param {string} name @param {any} meta */
  async #sealMeta(key, name, meta) {
    const sealed = toBase64url(await seal(this.content, pad(utf8(JSON.stringify({ n: name, m: meta }))), `sync-node/v1/meta/${key}`));
    if (sealed.length > MAX_META_BYTES) throw new SyncError('payload_too_large', 'the metadata is too large once sealed (at most about 5,000 bytes of JSON)', { status: 413 });
    return sealed;
  }

  /** @param {string} key @param {string|null} text */
  async #openMeta(key, text) {
    if (!text) return { name: this.names.get(key) ?? key, meta: null };
    const plain = unpad(await open(this.content, fromBase64url(text), `sync-node/v1/meta/${key}`));
    const { n, m } = JSON.parse(fromUtf8(plain));
    this.names.set(key, n);
    return { name: n, meta: m };
  }

  /** @param {string} key @param {Uint8Array} entry */
  sealEntry(key, entry) {
    return seal(this.content, pad(entry), `sync-node/v1/log/${key}`);
  }

  /** @param {string} key @param {Uint8Array} sealed */
  async openEntry(key, sealed) {
    return unpad(await open(this.content, sealed, `sync-node/v1/log/${key}`));
  }

  /** @param {string} key @param {string|null} token */
  async #nameOf(key, token) {
    const known = this.names.get(key);
    if (known || token === null) return known ?? null;
    try {
      const state = await this.client.stores.head(key);
      return state ? (await this.#openMeta(key, state.meta ?? null)).name : null;
    } catch {
      return null;
    }
  }
}

/**
 * Reads the keyring store, lets `edit` decide (given the keyring, or `null`
 * when there is none), and writes the result conditionally, re-reading on
 * a conflict.
 * @param {import('./client.js').SyncClient} client @param {string} key
 * @param {(ring: keyring.Keyring|null) => Promise<{ring: keyring.Keyring|null, dataKey: Uint8Array}>} edit
 */
async function updateKeyring(client, key, edit) {
  for (let attempt = 0; attempt < 10; attempt++) {
    const body = await client.stores.get(key);
    const current = body && !('notModified' in body) ? body : null;
    const { ring, dataKey } = await edit(current ? keyring.decode(current.data) : null);
    if (!ring) return dataKey;
    try {
      await client.stores.put(key, keyring.encode(ring), current ? { ifMatch: current.token } : { ifNoneMatch: '*' });
      return dataKey;
    } catch (error) {
      if (!(error instanceof SyncError && error.status === 412)) throw error;
    }
  }
  throw new SyncError('conflict_unresolved', 'the keyring kept changing under this write');
}

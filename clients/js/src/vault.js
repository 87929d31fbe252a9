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
/** Names the library keeps for itself (the keyring). */
const RESERVED = 'sync-node/';

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

/**
 * @typedef {(local: Uint8Array, remote: () => Promise<{data: Uint8Array, meta: any, token: string}|null>, current: import('./errors.js').CurrentState|null) => Uint8Array|{data: Uint8Array, meta: any}|null|undefined|Promise<Uint8Array|{data: Uint8Array, meta: any}|null|undefined>} Resolve
 *   On a conflict: `local` is what you tried to write, `await remote()`
 *   downloads the version that won (`null` if deleted since), `current` is
 *   its state as the 412 told it (no download). Return the bytes to write
 *   instead (or `{data, meta}` to change the metadata too), or `null` to
 *   keep the winner.
 */

/** @typedef {{queue?: import('./queue.js').QueueStore, resolve?: Resolve, iterations?: number}} VaultOptions */
/** @typedef {{written: true, token: string, version: number, created: boolean} | {skipped: true} | {queued: true}} PutResult */

export class Vault {
  /** @type {Uint8Array} the account data key; never leaves this object */
  #dataKey;

  /**
   * Use `Vault.create`, `Vault.open` or `Vault.recover`.
   * @param {import('./client.js').SyncClient} client @param {Uint8Array} dataKey @param {CryptoKey} content @param {string} keySalt
   * @param {VaultOptions} options
   */
  constructor(client, dataKey, content, keySalt, options) {
    this.client = client;
    this.#dataKey = dataKey;
    this.content = content;
    this.keySalt = keySalt;
    /** The default conflict resolver (also for queued writes replayed later). */
    this.resolve = options.resolve;
    this.queue = options.queue ? new OfflineQueue(options.queue) : null;
    /** @type {{write: any, error: unknown}[]} queued writes the server refused for good (403, 413, a 412 with no resolver …) */
    this.rejected = [];
    /** @type {Map<string, {token: string, version: number, meta: any}>} what this vault last saw of each key */
    this.seen = new Map();
    /** @type {Map<string, string>} key → name */
    this.names = new Map();
  }

  /**
   * Registers `id` and sets up its keys: the server gets a password
   * derived from the passphrase, never the passphrase.
   * @param {import('./client.js').SyncClient} client
   * @param {{id: string, passphrase: string, invite?: string} & VaultOptions} options
   */
  static async create(client, options) {
    const { password, kek } = await fromPassphrase(options.passphrase, options.id, options.iterations);
    const session = await client.register({ id: options.id, password, invite: options.invite });
    return Vault.#setUp(client, kek, session.keySalt, options, null);
  }

  /**
   * Signs in and opens the account's keys with the passphrase. With
   * `recoveryCode`, the keys may be opened with that instead (after a
   * server-side password reset), and the passphrase then opens them too.
   * @param {import('./client.js').SyncClient} client
   * @param {{id: string, passphrase: string, recoveryCode?: string} & VaultOptions} options
   */
  static async open(client, options) {
    const { password, kek } = await fromPassphrase(options.passphrase, options.id, options.iterations);
    const recovery = options.recoveryCode ? await fromRecoveryCode(options.recoveryCode) : null;
    const session = await client.signIn({ id: options.id, password });
    return Vault.#setUp(client, kek, session.keySalt, options, recovery);
  }

  /**
   * After a server-side password reset (the token from `RESET_HOOK`): sets
   * a new passphrase, then opens the keys with the recovery code and wraps
   * them for the new passphrase. Without a code the old data cannot be
   * read: the server never had the key. If the code is wrong, the reset
   * has still happened: call `Vault.open` with the new passphrase and the
   * right `recoveryCode` (no new reset needed).
   * @param {import('./client.js').SyncClient} client
   * @param {{id: string, resetToken: string, recoveryCode: string, newPassphrase: string} & VaultOptions} options
   */
  static async recover(client, options) {
    const recovery = await fromRecoveryCode(options.recoveryCode);
    const next = await fromPassphrase(options.newPassphrase, options.id, options.iterations);
    await client.confirmReset({ id: options.id, token: options.resetToken, newPassword: next.password });
    const session = await client.signIn({ id: options.id, password: next.password });
    return Vault.#setUp(client, next.kek, session.keySalt, options, recovery);
  }

  /**
   * Opens (or for a new account makes) the data key. With `recovery`, a
   * keyring the passphrase does not open is opened with it, and the
   * passphrase's wrap is replaced.
   * @param {import('./client.js').SyncClient} client @param {CryptoKey} kek @param {string} keySalt
   * @param {VaultOptions} options @param {CryptoKey|null} recovery
   */
  static async #setUp(client, kek, keySalt, options, recovery) {
    const key = await client.keyFor(keyring.KEYRING_NAME);
    const dataKey = await updateKeyring(client, key, async (ring) => {
      if (!ring) {
        // A new account (or one whose set-up was cut short): a new data
        // key, but never beside stores sealed under a key now lost.
        if ((await client.account()).storeCount > 0) {
          throw new SyncError('keyring_missing', 'this account has stores but no keyring: its data key is gone (restore the keyring store from a backup)');
        }
        const fresh = newDataKey();
        return { ring: { v: 1, wraps: [await keyring.wrap(kek, fresh, 'passphrase', keySalt)] }, dataKey: fresh };
      }
      try {
        return { ring: null, dataKey: await keyring.unwrap(ring, kek, 'passphrase', keySalt) };
      } catch (error) {
        if (!recovery) throw error;
      }
      const opened = await keyring.unwrap(ring, recovery, 'recovery', keySalt);
      // The old passphrase is forgotten or compromised: only the new one and the recovery code open the keys now.
      const wraps = ring.wraps.filter((w) => w.kind !== 'passphrase');
      wraps.push(await keyring.wrap(kek, opened, 'passphrase', keySalt));
      return { ring: { v: 1, wraps }, dataKey: opened };
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
    const wrap = await keyring.wrap(kek, this.#dataKey, 'recovery', this.keySalt);
    await this.#editKeyring(async (ring) => [...ring.wraps.filter((w) => w.kind !== 'recovery'), wrap]);
    return code;
  }

  /**
   * Changes the passphrase: the data key is re-wrapped, no data is
   * re-encrypted. Every other session is signed out. Safe to cut short at
   * any point: the new wrap is added before the server password changes,
   * and the old one removed only after the server confirmed the change.
   * @param {{id: string, passphrase: string, newPassphrase: string, iterations?: number}} change
   */
  async changePassphrase({ id, passphrase, newPassphrase, iterations }) {
    if (newPassphrase === passphrase) throw new SyncError('bad_request', 'the new passphrase is the same as the old one');
    const current = await fromPassphrase(passphrase, id, iterations);
    const next = await fromPassphrase(newPassphrase, id, iterations);
    const added = await keyring.wrap(next.kek, this.#dataKey, 'passphrase', this.keySalt);
    await this.#editKeyring(async (ring) => [...ring.wraps, added]);
    try {
      await this.client.changePassword({ password: current.password, newPassword: next.password });
    } catch (error) {
      // Only a definite refusal (a 4xx but a timeout) undoes the new wrap;
      // after any other failure the server may have changed the password,
      // and the wrap is needed.
      if (error instanceof SyncError && error.status >= 400 && error.status < 500 && error.status !== 408) {
        await this.#editKeyring(async (ring) => ring.wraps.filter((w) => w.wrapped !== added.wrapped));
      }
      throw error;
    }
    const opens = (/** @type {CryptoKey} */ kek, /** @type {keyring.Wrap} */ w) =>
      keyring.unwrap({ v: 1, wraps: [w] }, kek, 'passphrase', this.keySalt).then(() => true, () => false);
    // The server has the new password: only the new passphrase opens the
    // keys now (with any recovery code), also wraps left by a change whose
    // answer was lost.
    await this.#editKeyring(async (ring) => {
      const kept = [];
      for (const w of ring.wraps) if (w.kind !== 'passphrase' || (await opens(next.kek, w))) kept.push(w);
      return kept;
    });
  }

  /** @param {(ring: keyring.Keyring) => Promise<keyring.Wrap[]>} edit */
  async #editKeyring(edit) {
    await updateKeyring(this.client, await this.client.keyFor(keyring.KEYRING_NAME), async (ring) => {
      if (!ring) throw new SyncError('keyring_missing', 'the keyring store is missing');
      return { ring: { v: 1, wraps: await edit(ring) }, dataKey: this.#dataKey };
    });
  }

  /** The store key for a name. @param {string} name */
  async keyOf(name) {
    if (name.startsWith(RESERVED)) throw new SyncError('bad_request', `names starting with '${RESERVED}' are the library's`);
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
    this.seen.set(key, { token: body.token, version, meta });
    return { name, key, data, meta, token: body.token, version, seq: body.seq, permission: body.permission ?? null, logHead: body.logHead, logBase: body.logBase };
  }

  /**
   * Writes `data` as the store `name`, conditionally on the version this
   * vault last read or wrote (or as a new store if it has seen none).
   * `meta` (any JSON value) replaces the metadata; absent, the metadata
   * last seen is kept. On a conflict, `resolve` (or the vault's) decides
   * what to write; without one the 412 is thrown. With a queue, a write
   * that cannot reach the server (or that would overtake writes still
   * queued) is queued.
   * @param {string} name @param {Uint8Array|string|ArrayBuffer|ArrayBufferView} data
   * @param {{meta?: any, resolve?: Resolve, base?: string|null, queue?: false}} [options] `base`: the token the data is based on, if not the last seen; `queue: false`: never queue this write
   * @returns {Promise<PutResult>} `written`, `skipped` (the resolver kept the other version) or `queued`
   */
  async put(name, data, options = {}) {
    const key = await this.keyOf(name);
    const queue = options.queue === false ? null : this.queue;
    // Writes still queued go first (this one may depend on them) …
    const waiting = queue && (await queue.size()) > 0 && (await this.flush()) > 0;
    // … and the base is what this vault knows once they are written.
    const base = options.base !== undefined ? options.base : (this.seen.get(key)?.token ?? null);
    // `meta` undefined: not given (keep what is there); `knownMeta`: what
    // this vault saw, for a replay after a restart that forgot it.
    const knownMeta = this.seen.get(key)?.meta;
    const write = { op: 'put', account: this.keySalt, key, name, data: asBytes(data), meta: options.meta, knownMeta, base };
    if (queue && waiting) return this.#enqueue(write);
    try {
      return await this.#write(write, options.resolve ?? this.resolve);
    } catch (error) {
      if (!(queue && error instanceof SyncError && error.transient)) throw error;
      return this.#enqueue(write);
    }
  }

  /**
   * Queues a write; a put waiting for the same store is replaced (the new
   * data supersedes it, on the same base).
   * @param {{op: string, account: string, key: string, name: string, data: Uint8Array, meta: any, knownMeta: any, base: string|null}} write
   * @returns {Promise<PutResult>}
   */
  async #enqueue(write) {
    const queue = /** @type {OfflineQueue} */ (this.queue);
    const earlier = (await queue.store.list()).filter((w) => w.op === 'put' && w.key === write.key);
    for (const w of earlier) await queue.store.remove(w.id);
    const base = earlier.length > 0 ? earlier[0].base : write.base;
    const meta = write.meta === undefined && earlier.length > 0 ? earlier[earlier.length - 1].meta : write.meta;
    const knownMeta = write.knownMeta === undefined && earlier.length > 0 ? earlier[0].knownMeta : write.knownMeta;
    await queue.add({ ...write, base, meta, knownMeta });
    return { queued: true };
  }

  /**
   * Deletes the store `name` (OWN required), if it is still at the
   * version last seen, or (if this vault has not seen it) at the version
   * it finds now; else a 412 SyncError.
   * @param {string} name
   */
  async delete(name) {
    const key = await this.keyOf(name);
    // Queued writes of this store go first, so none can bring it back after.
    if (this.queue && (await this.queue.size()) > 0) await this.flush();
    const token = this.seen.get(key)?.token ?? (await this.client.stores.head(key))?.token;
    if (!token) throw new SyncError('not_found', `no store called ${name}`, { status: 404 });
    await this.client.stores.delete(key, { ifMatch: token });
    this.seen.delete(key);
    if (this.queue) {
      for (const w of await this.queue.store.list()) if (w.key === key && w.account === this.keySalt) await this.queue.store.remove(w.id);
    }
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
   * connection between all tabs of the origin (per account).
   * @param {ConstructorParameters<typeof Feed>[1] & {shared?: boolean, name?: string}} [options]
   */
  follow(options = {}) {
    const decorate = async (/** @type {any[]} */ changes) => {
      // Names this vault has not met yet come from one listing, not a request per store.
      if (changes.some((c) => c.token !== null && !this.names.has(c.key))) await this.list().catch(() => undefined);
      return changes.map((c) => ({ ...c, name: this.names.get(c.key) ?? null }));
    };
    const feedOptions = { ...options, decorate };
    if (!options.shared) return new Feed(this.client, feedOptions);
    return new SharedFeed(this.client, { name: `${this.client.transport.base}#${this.keySalt}`, ...feedOptions });
  }

  /**
   * Replays queued writes in order, each conditional as when it was made
   * (conflicts go to the vault's `resolve`). Writes the server refuses for
   * good are moved to `vault.rejected` (and handed to `onFailure`).
   * Returns how many still wait.
   * @param {(write: any, error: unknown) => void} [onFailure]
   */
  async flush(onFailure) {
    if (!this.queue) return 0;
    return this.queue.replay(
      // Writes queued by another account on this device wait for it.
      (write) => write.account === this.keySalt,
      async (write) => {
        const written = await this.#write(/** @type {any} */ (write), this.resolve);
        if (!('written' in written) && !('skipped' in written)) throw new SyncError('bad_response', 'a queued write neither won nor was skipped');
      },
      (write, error) => {
        this.rejected.push({ write, error });
        onFailure?.(write, error);
      },
    );
  }

  /**
   * One write through the conflict loop.
   * @param {{key: string, name: string, data: Uint8Array, meta: any, knownMeta?: any, base: string|null}} write
   *   `meta` undefined: keep the metadata (the last seen, or the winner's on a conflict)
   * @param {Resolve} [resolve]
   * @returns {Promise<PutResult>}
   */
  async #write({ key, name, data, meta, knownMeta, base }, resolve) {
    /** @typedef {{data: Uint8Array, meta: any}} Version */
    const outcome = await writeUntilWon({
      data: /** @type {Version} */ ({ data, meta: meta === undefined ? (this.seen.get(key)?.meta ?? knownMeta) : meta }),
      base,
      resolve:
        resolve &&
        (async (local, remote, current) => {
          const download = async () => {
            const r = await remote();
            return r && { data: r.data.data, meta: r.data.meta, token: r.token };
          };
          const merged = await resolve(local.data, download, current);
          if (merged === null || merged === undefined) return null;
          // Bytes (or a string), or {data, meta}.
          const given = typeof merged === 'object' && !ArrayBuffer.isView(merged) && 'data' in merged ? merged : { data: merged, meta: undefined };
          const data = asBytes(given.data);
          const chosen = given.meta !== undefined ? given.meta : meta;
          if (chosen !== undefined) return { data, meta: chosen };
          // Metadata not given: keep the winner's (the 412 carried it, sealed).
          const theirs = current?.meta ? await this.#openMeta(key, current.meta).then((m) => m.meta, () => local.meta) : local.meta;
          return { data, meta: theirs };
        }),
      fetchRemote: async () => {
        const item = await this.getByKey(key);
        return item && { data: { data: item.data, meta: item.meta }, token: item.token };
      },
      write: async (version, against) => {
        const number = (this.seen.get(key)?.version ?? 0) + 1;
        const sealed = await this.#sealBody(key, number, version.data);
        // Metadata this vault never saw, on a store that exists: leave it as it is.
        const sealedMeta = version.meta === undefined && against !== null ? undefined : await this.#sealMeta(key, name, version.meta ?? null);
        const state = await this.client.stores.put(key, sealed, against === null ? { ifNoneMatch: '*', meta: sealedMeta } : { ifMatch: against, meta: sealedMeta });
        this.seen.set(key, { token: state.token, version: number, meta: version.meta ?? this.seen.get(key)?.meta });
        return { written: /** @type {true} */ (true), token: state.token, version: number, created: state.created };
      },
    });
    if ('skipped' in outcome) return { skipped: true };
    return outcome.written;
  }

  /**
   * `data` sealed as the next version of the store `key`, for a write made
   * elsewhere (a compaction); `commit(token)` records that it was written.
   * @param {string} key @param {Uint8Array} data
   */
  async sealSnapshot(key, data) {
    const seen = this.seen.get(key);
    const version = (seen?.version ?? 0) + 1;
    return { sealed: await this.#sealBody(key, version, data), commit: (/** @type {string} */ token) => void this.seen.set(key, { token, version, meta: seen?.meta ?? null }) };
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

  /** Keeps the data key out of logs and JSON. */
  toJSON() {
    return { vault: this.client.transport.base };
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

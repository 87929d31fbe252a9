/**
 * `Vault`: the end-to-end encrypted API (format 2). Stores are addressed by
 * name; their locations come from a name key the server never sees. Each
 * store has its own random keys, wrapped under the account's data key;
 * bodies, metadata (with the name, bound to the body) and log entries
 * (bound to their author and position) are sealed with AES-256-GCM and
 * padded before they leave the device. The device pins what it has seen
 * (salts, keyring version, store versions) and refuses to be taken back.
 * Design and threat model: README.md, "Encryption".
 */

import { SyncError } from './errors.js';
import { asBytes, fromBase64url, fromUtf8, toBase64url, utf8 } from './bytes.js';
import { checkNewPassphrase, derive, newRecoveryCode, normaliseId, open, passphraseSecret, recoverySecret, seal, sha256 } from './crypto.js';
import { context, LABEL, VAULT_PREFIX } from './labels.js';
import { Keyring, keyringBehind } from './keyring.js';
import { Sealer, StoreKeys, newIncarnation, parseMeta } from './sealer.js';
import { Pins, defaultState, judges } from './state.js';
import { Stores } from './stores.js';
import { Logs } from './logs.js';
import { writeUntilWon } from './conflict.js';
import { Feed } from './feed.js';
import { SharedFeed } from './tabs.js';
import { OfflineQueue } from './queue.js';
import { LogDocument, verifyEntries } from './document.js';
import { migrateFromV1 } from './migrate-v1.js';
import { fingerprintOf, identityDocument, newIdentityKeys, readIdentity } from './identity.js';
import { checkSignature, openEnvelope, sealEnvelope } from './envelope.js';
import { entryStatement, formerWritersOf, metaStatement, notAWriter, ownersOf, rosterStatement, wrapsStatement, writersOf } from './authorship.js';
import { sign, verify } from './identity.js';
import { LINK_PARAMETER, checkLinkSignature, linkParts, newLinkSecret, openLinkEnvelope, sealLinkEnvelope, secretOf, verifierHash } from './links.js';

/** Names the library keeps for itself. */
const RESERVED = 'sync-node/';

/**
 * @typedef {object} Item a decrypted store
 * @property {string} name
 * @property {string} key the store's key on the server
 * @property {Uint8Array} data
 * @property {any} meta the app's metadata (JSON), or null
 * @property {string} token the version's token (its ETag)
 * @property {number} version 1 for a new store, +1 per write
 * @property {number} seq
 * @property {string|null} permission
 * @property {number} logHead
 * @property {number} logBase
 */

/**
 * A store in `vault.list()`: its name and metadata, or (when the server
 * stripped or damaged what only this account could have sealed) `error`.
 * @typedef {{name: string, key: string, meta: any, version: number, token: string, size: number, seq: number, permission: string|null, logHead: number} | {name: null, key: string, error: SyncError}} Listed
 */

/**
 * @typedef {(local: Uint8Array|string, remote: () => Promise<{data: Uint8Array, meta: any, token: string}|null>, current: import('./errors.js').CurrentState|null) => Uint8Array|string|{data: Uint8Array|string, meta: any}|null|undefined|Promise<Uint8Array|string|{data: Uint8Array|string, meta: any}|null|undefined>} Resolve
 *   On a conflict: `local` is what you tried to write (as you gave it),
 *   `await remote()` downloads the version that won (`null` if deleted
 *   since), `current` is its state as the 412 told it (no download).
 *   Return the data to write instead (or `{data, meta}` to change the
 *   metadata too), or `null` to keep the winner.
 */

/**
 * @typedef {object} VaultOptions
 * @property {import('./queue.js').QueueStore} [queue] where writes made offline wait (sealed)
 * @property {Resolve} [resolve] the default conflict resolver (also for queued writes)
 * @property {import('./state.js').StateStore} [state] where this device keeps its pins and unconfirmed log entries (default: `localStorage` in browsers, memory elsewhere)
 * @property {boolean} [migrate] let `open` migrate a format-1 vault (see README: turn it off once your users have migrated)
 */

/** @typedef {{written: true, token: string, version: number, created: boolean} | {skipped: true} | {queued: true}} PutResult */

/**
 * What this vault knows of one store: enough to write its next version.
 * @typedef {{token: string, name: string, meta: any, incarnation: string, version: number, clock: Record<string, number>, keys: StoreKeys,
 *   members: import('./authorship.js').Member[]|undefined, roster: {by: string, s: string, n: number}|undefined, wrapsSignature: {by: string, s: string}|undefined}} Known
 */

/** A store: by name (one of this vault's own), or by key (any store listed, shared ones included). @typedef {string|{key: string}} Target */

/**
 * A store as opened by the vault (internal): the item and what writing
 * it, or reading its log, takes.
 * @typedef {Item & {incarnation: string, clock: Record<string, number>, sealer: Sealer, writers: Set<string>, former: Map<string, {epoch: number, index: number}>}} Opened
 */

/** @typedef {{op: 'put', key: string, name: string, data: Uint8Array|string, meta: any, base: string|null}} QueuedPut */

export class Vault {
  /** @type {Keyring} */
  #keyring;
  /** @type {Uint8Array} the passphrase's secret: every rotation remakes its door, and reloads go through it */
  #passphrase;
  /** @type {{key: CryptoKey, tag: string}} */
  #device;

  /**
   * Use `Vault.create`, `Vault.open`, `Vault.recover` or `Vault.claim`.
   * @param {import('./client.js').SyncClient} client @param {string} id @param {Keyring} keyring @param {Uint8Array} passphrase the passphrase's secret
   * @param {{key: CryptoKey, tag: string}} device @param {Pins} pins @param {VaultOptions} options
   */
  constructor(client, id, keyring, passphrase, device, pins, options) {
    this.client = client;
    /** The account's id, as given. */
    this.id = id;
    this.#keyring = keyring;
    this.#passphrase = passphrase;
    this.#device = device;
    this.pins = pins;
    this.state = pins.state;
    /** The vault's own handles: they may write encrypted stores, which the plain `client.stores` refuses. */
    this.stores = new Stores(client.transport, { vault: true });
    this.logs = new Logs(client.transport, this.stores);
    /** The default conflict resolver (also for queued writes replayed later). */
    this.resolve = options.resolve;
    this.queue = options.queue ? new OfflineQueue(options.queue) : null;
    /** @type {{write: any, error: unknown}[]} queued writes the server refused for good (403, 413, a 412 with no resolver …) */
    this.rejected = [];
    /**
     * A new recovery code, made because the old one was just used (it
     * works once): show it to the user now. `null` otherwise.
     * @type {string|null}
     */
    this.recoveryCode = null;
    /** What a migration from format 1 did (`null` when none ran): `{stores, entries}` moved. */
    this.migrated = /** @type {{stores: number, entries: number}|null} */ (null);
    /**
     * Doors the last rotation found gone (`['recovery']` when the server
     * dropped the recovery door: make a new recovery code).
     * @type {import('./keyring.js').DoorKind[]}
     */
    this.missingDoors = [];
    /** @type {Map<string, Known>} */
    this.known = new Map();
    /** @type {Map<string, string>} location → name */
    this.names = new Map();
    /** @type {Set<string>} locations of the account's key stores (keyrings and doors, old ones too) met so far */
    this.keyStores = new Set(keyring.internal());
    /** Whether this account's identity is known to be published. */
    this.published = false;
    /** @type {Map<string, Map<number, Uint8Array>>} keys of stores shared with this account, by location */
    this.sharedKeys = new Map();
    /** @type {Map<string, string>} who shared each of those stores with this account */
    this.sharedFrom = new Map();
    /** @type {Map<string, Uint8Array[]>} signing keys of the identities met (now and before their rotations), by id */
    this.identities = new Map();
    /** Log entries left out because they do not open or are not signed by a writer of their store. */
    this.rejectedEntries = 0;
  }

  /**
   * Registers `id` and sets up its keys. The server gets a password
   * derived from the passphrase (Argon2id), never the passphrase.
   * @param {import('./client.js').SyncClient} client
   * @param {{id: string, passphrase: string, invite?: string} & VaultOptions} options
   */
  static async create(client, options) {
    checkNewPassphrase(options.passphrase, options.id);
    const { pins, secret, password } = await Vault.#derive(client, options.id, options.passphrase, options.state);
    const session = await client.register({ id: options.id, password, invite: options.invite });
    await pins.pinAccount('key_salt', session.keySalt, 'key_salt');
    const stores = new Stores(client.transport, { vault: true });
    const keyring = await Keyring.create(stores, session.keySalt, secret);
    return Vault.#ready(client, options.id, keyring, secret, pins, options);
  }

  /**
   * Signs in and opens the account's keys with the passphrase. With
   * `migrate: true`, a format-1 vault (made by an older client) is
   * migrated in place the first time.
   * With `recoveryCode`, a passphrase that no longer opens the keys (after
   * a server-side reset) is given a door again through the recovery code,
   * which is then used up: `vault.recoveryCode` holds its replacement.
   * @param {import('./client.js').SyncClient} client
   * @param {{id: string, passphrase: string, recoveryCode?: string} & VaultOptions} options
   */
  static async open(client, options) {
    const recovery = options.recoveryCode === undefined ? null : await recoverySecret(options.recoveryCode);
    const { pins, secret, password } = await Vault.#derive(client, options.id, options.passphrase, options.state);
    let session;
    try {
      session = await client.signIn({ id: options.id, password });
    } catch (error) {
      // Perhaps a format-1 vault, which signs in with another (cheaper to
      // guess) password: only tried when the app asks for it, and never
      // for an account this device has seen on format 2.
      if (!(error instanceof SyncError && error.code === 'invalid_credentials' && options.migrate === true && !(await pins.isFormat2()))) throw error;
      const vaultFor = async (/** @type {Keyring} */ keyring) => {
        await pins.pinAccount('key_salt', keyring.keySalt, 'key_salt');
        await pins.keyringVersion(keyring.version);
        return Vault.#ready(client, options.id, keyring, secret, pins, options);
      };
      const migrated = await migrateFromV1(client, { id: options.id, passphrase: options.passphrase, secret, password, vaultFor });
      if (!migrated) throw error;
      migrated.vault.migrated = migrated.moved;
      return migrated.vault;
    }
    await pins.pinAccount('key_salt', session.keySalt, 'key_salt');
    const stores = new Stores(client.transport, { vault: true });
    const keyring = await keyringBehind(stores, session.keySalt, { kind: 'passphrase', secret });
    if (keyring) {
      await pins.keyringVersion(keyring.version);
      return Vault.#ready(client, options.id, keyring, secret, pins, options);
    }
    if (!recovery) {
      throw new SyncError('keyring_missing', 'this passphrase signs in but opens no keys: after a password reset, open with the recovery code (recoveryCode); otherwise the server lost or withholds the keys');
    }
    return Vault.#recoverKeys(client, options.id, session.keySalt, recovery, secret, pins, options);
  }

  /**
   * After a server-side password reset (the token from `RESET_HOOK`): the
   * recovery code is checked (its checksum) before the token is spent;
   * then the new passphrase is set, the keys opened with the code and
   * rotated (nothing written from now on opens with anything from before),
   * and the code is used up: `vault.recoveryCode` holds its replacement.
   * @param {import('./client.js').SyncClient} client
   * @param {{id: string, resetToken: string, recoveryCode: string, newPassphrase: string} & VaultOptions} options
   */
  static async recover(client, options) {
    const recovery = await recoverySecret(options.recoveryCode);
    checkNewPassphrase(options.newPassphrase, options.id);
    const { pins, secret, password } = await Vault.#derive(client, options.id, options.newPassphrase, options.state);
    await client.confirmReset({ id: options.id, token: options.resetToken, newPassword: password });
    const session = await client.signIn({ id: options.id, password });
    await pins.pinAccount('key_salt', session.keySalt, 'key_salt');
    return Vault.#recoverKeys(client, options.id, session.keySalt, recovery, secret, pins, options);
  }

  /**
   * Takes over an account an operator made (`sync-node account add`, or
   * reset with `sync-node reset-token` and a temporary password): signs in
   * with the temporary password, makes the keys, and sets the password to
   * the one derived from `passphrase`. An account that already has keys
   * is opened instead (the temporary password must still work).
   * @param {import('./client.js').SyncClient} client
   * @param {{id: string, password: string, passphrase: string} & VaultOptions} options
   */
  static async claim(client, options) {
    checkNewPassphrase(options.passphrase, options.id);
    const { pins, secret, password } = await Vault.#derive(client, options.id, options.passphrase, options.state);
    const session = await client.signIn({ id: options.id, password: options.password });
    await pins.pinAccount('key_salt', session.keySalt, 'key_salt');
    const stores = new Stores(client.transport, { vault: true });
    const found = await keyringBehind(stores, session.keySalt, { kind: 'passphrase', secret });
    const listing = await stores.list();
    if (!found && listing.stores.some((s) => s.key.startsWith(VAULT_PREFIX))) {
      throw new SyncError('keyring_missing', 'this account already holds encrypted stores but this passphrase opens no keys: open it with its own passphrase');
    }
    const keyring = found ?? (await Keyring.create(stores, session.keySalt, secret));
    await client.changePassword({ password: options.password, newPassword: password });
    await pins.keyringVersion(keyring.version);
    return Vault.#ready(client, options.id, keyring, secret, pins, options);
  }

  /**
   * The passphrase's secret and server password, and this device's pins
   * for the account (the server's salt is pinned on first use).
   * @param {import('./client.js').SyncClient} client @param {string} id @param {string} passphrase
   * @param {import('./state.js').StateStore} [state]
   */
  static async #derive(client, id, passphrase, state) {
    if (typeof id !== 'string' || !id.trim()) throw new SyncError('bad_request', 'an id is needed');
    const pins = new Pins(state ?? defaultState(), `${client.transport.base}|${normaliseId(id)}`);
    const salt = await client.kdfSalt(id);
    await pins.pinAccount('server_salt', toBase64url(salt), 'passphrase salt');
    const secret = await passphraseSecret(passphrase, id, salt);
    const password = toBase64url(await derive(secret, LABEL.serverPassword));
    return { pins, secret, password };
  }

  /**
   * Opens the keys through the recovery door, then rotates them: a new
   * passphrase door, a new recovery code (the used one stops working) and
   * a new data key.
   * @param {import('./client.js').SyncClient} client @param {string} id @param {string} keySalt
   * @param {Uint8Array} recovery @param {Uint8Array} secret @param {Pins} pins @param {VaultOptions} options
   */
  static async #recoverKeys(client, id, keySalt, recovery, secret, pins, options) {
    const stores = new Stores(client.transport, { vault: true });
    const opened = await keyringBehind(stores, keySalt, { kind: 'recovery', secret: recovery });
    if (!opened) {
      throw new SyncError('keyring_missing', 'the recovery code opens nothing on this server: it is another account\'s or an old one, or the server dropped it; the reset is done, so retry with Vault.open, the new passphrase and the right recoveryCode');
    }
    await pins.keyringVersion(opened.version);
    const code = await newRecoveryCode();
    const rotation = await opened.rotate({ passphrase: secret, recovery: code.secret });
    await rotation.finish();
    await pins.keyringVersion(rotation.keyring.version);
    const vault = await Vault.#ready(client, id, rotation.keyring, secret, pins, options);
    vault.recoveryCode = code.code;
    return vault;
  }

  /**
   * @param {import('./client.js').SyncClient} client @param {string} id @param {Keyring} keyring
   * @param {Uint8Array} passphrase the passphrase's secret @param {Pins} pins @param {VaultOptions} options
   */
  static async #ready(client, id, keyring, passphrase, pins, options) {
    await pins.setFormat2();
    const vault = new Vault(client, id, keyring, passphrase, await keyring.deviceSecrets(), pins, options);
    // Every vault can be shared with: its identity exists and is published.
    if (!keyring.content.identity) await vault.#identityKeys();
    if (vault.queue) await vault.flush().catch(() => undefined);
    return vault;
  }

  /** The keyring's version (it grows with every rotation). */
  get keyringVersion() {
    return this.#keyring.version;
  }

  /**
   * Makes a recovery code (show it once to the user). It replaces the
   * older one, which stops opening anything written from now on.
   */
  async addRecoveryCode() {
    const code = await newRecoveryCode();
    await this.#rotate({ recovery: code.secret });
    return code.code;
  }

  /**
   * A new data key: nothing written from now on opens with anything this
   * account had before (an old keyring copy, an old passphrase, an old
   * recovery code). Each store moves to a new key at its next write.
   */
  async rotateKeys() {
    await this.#rotate({});
  }

  /**
   * Rotates from the current keyring (re-reading it first, and again if
   * another device rotated in between).
   * @param {{recovery?: Uint8Array, identity?: import('./identity.js').IdentityKeys, formerIdentity?: import('./identity.js').IdentityKeys}} change
   *   a new recovery code's secret, new identity keys (and the ones they replace, kept to open older envelopes)
   */
  async #rotate(change) {
    const rotation = await this.#startRotation({ passphrase: this.#passphrase, ...change });
    await rotation.finish();
    await this.#adopt(rotation.keyring);
    this.missingDoors = rotation.missing;
  }

  /** @param {{passphrase: Uint8Array, recovery?: Uint8Array, identity?: import('./identity.js').IdentityKeys, formerIdentity?: import('./identity.js').IdentityKeys}} secrets */
  async #startRotation(secrets) {
    for (let attempt = 0; ; attempt++) {
      await this.#ensureCurrent();
      try {
        return await this.#keyring.rotate(secrets);
      } catch (error) {
        if (!(error instanceof SyncError && error.code === 'stale_keyring') || attempt >= 3) throw error;
        await this.#reloadKeyring();
      }
    }
  }

  /**
   * Makes sure this vault writes under the account's current keys: when
   * the keyring it holds is gone or changed (another device rotated), it
   * reads the keyring its door leads to now. One conditional request.
   */
  async #ensureCurrent() {
    const found = await this.stores.get(this.#keyring.location, this.#keyring.token ? { ifNoneMatch: this.#keyring.token } : {});
    if (!found || !('notModified' in found)) await this.#reloadKeyring();
  }

  /** Reads the keyring the passphrase's door leads to now (never an older one: a pin). */
  async #reloadKeyring() {
    const since = Date.now();
    const keyring = await keyringBehind(this.stores, this.#keyring.keySalt, { kind: 'passphrase', secret: this.#passphrase });
    if (!keyring) throw new SyncError('keyring_missing', 'the keys were changed on another device (a passphrase change or a recovery): open the vault again');
    await this.#adopt(keyring, since);
  }

  /** @param {Keyring} keyring @param {number} [since] when the request that read it was sent */
  async #adopt(keyring, since) {
    if (since !== undefined && keyring.version < this.#keyring.version) return; // another tab moved on meanwhile: keep the newer
    await this.pins.keyringVersion(keyring.version, since);
    this.#keyring = keyring;
    for (const key of keyring.internal()) this.keyStores.add(key);
  }

  /**
   * Changes the passphrase (and rotates the keys, so the old passphrase
   * opens nothing written afterwards). Every other session is signed out.
   * Safe to cut short: the new door exists before the server password
   * changes, and the old one is removed only after the server confirmed.
   * @param {{passphrase: string, newPassphrase: string}} change
   */
  async changePassphrase({ passphrase, newPassphrase }) {
    if (normaliseId(newPassphrase ?? '') === normaliseId(passphrase ?? '')) throw new SyncError('bad_request', 'the new passphrase is the same as the old one');
    checkNewPassphrase(newPassphrase, this.id);
    const salt = await this.client.kdfSalt(this.id);
    const current = await passphraseSecret(passphrase, this.id, salt);
    // The current passphrase must be this vault's before anything changes.
    if (toBase64url(current) !== toBase64url(this.#passphrase)) {
      throw new SyncError('wrong_password', 'that is not the current passphrase (nothing was changed)', { status: 403 });
    }
    const next = await passphraseSecret(newPassphrase, this.id, salt);
    const passwords = { password: toBase64url(await derive(current, LABEL.serverPassword)), newPassword: toBase64url(await derive(next, LABEL.serverPassword)) };
    const rotation = await this.#startRotation({ passphrase: next });
    try {
      await this.client.changePassword(passwords);
    } catch (error) {
      // A refusal (a 4xx but a timeout) from a server that may still have
      // changed the password (an earlier try whose answer was lost, or a
      // lie): undo only while the old password still signs in; if the new
      // one does, the change is done.
      if (!(error instanceof SyncError && error.status >= 400 && error.status < 500 && error.status !== 408)) throw error;
      const signsIn = (/** @type {string} */ password) => this.client.signIn({ id: this.id, password }).then(() => true, () => false);
      if (await signsIn(passwords.password)) {
        await rotation.abort(current);
        throw error;
      }
      if (!(await signsIn(passwords.newPassword))) throw error; // both doors stay: each leads to a keyring
    }
    await rotation.finish();
    this.#passphrase = next;
    await this.#adopt(rotation.keyring);
    this.missingDoors = rotation.missing;
  }

  /**
   * This account's identity keys; made (with a rotation) and published
   * the first time they are needed.
   * @returns {Promise<import('./identity.js').IdentityKeys>}
   */
  async #identityKeys() {
    let keys = this.#keyring.content.identity;
    if (!keys) {
      await this.#rotate({ identity: await newIdentityKeys() });
      keys = /** @type {import('./identity.js').IdentityKeys} */ (this.#keyring.content.identity);
    }
    if (!this.published) {
      const own = await this.client.transport.request('GET', '/v1/account/identity', { expect: [404] });
      const current = own.status === 404 ? null : await readIdentity(new Uint8Array(await own.arrayBuffer()), this.id).catch(() => null);
      if (!current || toBase64url(current.sign) !== keys.signPublic) {
        const etag = own.headers.get('ETag');
        await this.client.transport.request('PUT', '/v1/account/identity', {
          body: await identityDocument(this.id, keys),
          headers: own.status === 404 ? { 'If-None-Match': '*' } : { 'If-Match': etag ?? '*' },
        });
      }
      this.published = true;
    }
    return keys;
  }

  /**
   * New identity keys, published as a rotation signed by the old signing
   * key: devices that pinned the old identity follow it without asking
   * (the fingerprint changes; show the new one). Envelopes already sealed
   * to the old key still open (the old keys stay in the keyring).
   */
  async rotateIdentity() {
    const previous = await this.#identityKeys();
    const next = await newIdentityKeys();
    const own = await this.client.transport.request('GET', '/v1/account/identity');
    await this.#rotate({ identity: next, formerIdentity: previous });
    await this.client.transport.request('PUT', '/v1/account/identity', {
      body: await identityDocument(this.id, next, previous),
      headers: { 'If-Match': own.headers.get('ETag') ?? '*' },
    });
    return this.myFingerprint();
  }

  /** This account's own fingerprint (show it to the people who share with it). */
  async myFingerprint() {
    const keys = await this.#identityKeys();
    return fingerprintOf(this.id, fromBase64url(keys.signPublic), fromBase64url(keys.agreePublic));
  }

  /**
   * The fingerprint of the account `id` (12 groups of 5 digits): show it,
   * and have both people compare it out of band before sharing. The
   * identity is pinned on this device the first time; a later one is
   * followed only when signed by the pinned key (a rotation), else
   * `identity_changed` (then compare again and call `trustIdentity`).
   * @param {string} id
   */
  async fingerprint(id) {
    const identity = await this.#identity(id);
    // Shown to the user: from now on this device may seal keys to it.
    await this.state.set(this.#identityPin(id), { sign: toBase64url(identity.sign), fingerprint: identity.fingerprint, verified: true });
    return identity.fingerprint;
  }

  /** Whether this device showed `id`'s current identity to the user (`fingerprint`, `trustIdentity`). @param {string} id */
  async #verified(id) {
    return (await this.state.get(this.#identityPin(id)))?.verified === true;
  }

  /**
   * Pins the identity `id` has now, after the user compared its
   * fingerprint out of band (`identity_changed` if it is not that one).
   * @param {string} id @param {string} fingerprint
   */
  async trustIdentity(id, fingerprint) {
    const identity = await this.#fetchIdentity(id);
    if (identity.fingerprint !== fingerprint) throw new SyncError('identity_changed', `the identity of ${id} has another fingerprint than the one given`);
    await this.state.set(this.#identityPin(id), { sign: toBase64url(identity.sign), fingerprint, verified: true });
  }

  /** @param {string} id */
  #identityPin(id) {
    return `${this.pins.scope}|identity|${normaliseId(id)}`;
  }

  /** @param {string} id @param {number} [version] */
  async #fetchIdentity(id, version) {
    const path = `/v1/accounts/${encodeURIComponent(id)}/identity${version ? `?version=${version}` : ''}`;
    const response = await this.client.transport.request('GET', path);
    const identity = await readIdentity(new Uint8Array(await response.arrayBuffer()), id);
    return { ...identity, version: Number(response.headers.get('Sync-Identity-Version') ?? 0) };
  }

  /**
   * The identity of `id`, checked against this device's pin (pinned on
   * first use; a rotation followed back to the pinned key, version by
   * version, each signed by the one before).
   * @param {string} id
   */
  async #identity(id) {
    const latest = await this.#fetchIdentity(id);
    const key = this.#identityPin(id);
    /** @type {{sign: string, fingerprint: string, verified?: boolean}|undefined} */
    const pinned = await this.state.get(key);
    if (!pinned) {
      // Seen, not verified: signatures are checked against it, but nothing is sealed to it before the user has seen it.
      await this.state.set(key, { sign: toBase64url(latest.sign), fingerprint: latest.fingerprint, verified: false });
      return latest;
    }
    let step = latest;
    for (let hops = 0; hops < 32; hops++) {
      if (toBase64url(step.sign) === pinned.sign) {
        if (step !== latest) await this.state.set(key, { ...pinned, sign: toBase64url(latest.sign), fingerprint: latest.fingerprint });
        return latest;
      }
      if (!step.previous || step.version <= 1) break;
      const before = await this.#fetchIdentity(id, step.version - 1);
      if (toBase64url(before.sign) !== toBase64url(step.previous)) break;
      step = before;
    }
    throw new SyncError('identity_changed', `the identity of ${id} changed (its fingerprint is now ${latest.fingerprint}) and no rotation signed by the key this device verified leads to it: compare the new fingerprint with ${id} out of band, then call vault.trustIdentity(id, fingerprint)`);
  }

  /**
   * Shares a store of this vault with the account `id`: its keys sealed
   * to `id`'s identity and signed by this account, granted in one request.
   * `id` must have been looked at on this device first (`fingerprint(id)`,
   * shown to the user), else `identity_unverified`. OWN required.
   * @param {Target} target @param {string} id @param {'READ'|'WRITE'|'OWN'} permission
   */
  async share(target, id, permission) {
    if (!['READ', 'WRITE', 'OWN'].includes(permission)) throw new SyncError('bad_request', 'permission is READ, WRITE or OWN');
    if (!(await this.#verified(id))) {
      throw new SyncError('identity_unverified', `this device has not shown ${id}'s fingerprint yet: call vault.fingerprint(id), have the user compare it, then share`);
    }
    const grantee = await this.#identity(id);
    const signer = await this.#identityKeys();
    const key = await this.keyOf(target);
    for (let attempt = 0; attempt < 5; attempt++) {
      const opened = await this.openStore(key);
      if (!opened) throw new SyncError('not_found', 'no such store', { status: 404 });
      const envelope = await sealEnvelope({ from: normaliseId(this.id), location: key, keys: opened.sealer.keys.raw, permission, grantee, signer });
      await this.stores.grant(key, [{ account: id, permission, envelope }]);
      // The member list (for re-keying later) lives in the sealed metadata.
      const me = normaliseId(this.id);
      const before = this.known.get(key)?.members ?? [{ id: me, p: 'OWN' }];
      const members = [...before.filter((m) => m.id !== normaliseId(id)), { id: normaliseId(id), p: permission }];
      try {
        await this.writeBody(key, { data: opened.data, against: opened.token, members });
        return;
      } catch (error) {
        if (!(error instanceof SyncError && error.status === 412)) throw error;
      }
    }
    throw new SyncError('conflict_unresolved', 'the store kept changing while it was being shared');
  }

  /**
   * Stops sharing a store with `id`, and re-keys it: the body is written
   * under a new key, which is sealed to every other member in the same
   * request that removes `id` (`If-Match` on the new body, so nothing is
   * written under another key in between). `id` reads nothing written
   * afterwards. OWN required.
   * @param {Target} target @param {string} id
   */
  async unshare(target, id) {
    return this.#rekey(target, normaliseId(id));
  }

  /**
   * Gives a shared store a new key, sealed to every member (after the
   * owner's passphrase or keys may have leaked: a rotation re-wraps a
   * shared store's key but does not change it, since its members hold
   * it). OWN required, by the account that made the store.
   * @param {Target} target
   */
  async rekey(target) {
    return this.#rekey(target, null);
  }

  /** @param {Target} target @param {string|null} gone a member to remove */
  async #rekey(target, gone) {
    const key = await this.keyOf(target);
    for (let attempt = 0; attempt < 5; attempt++) {
      const opened = await this.openStore(key);
      if (!opened) throw new SyncError('not_found', 'no such store', { status: 404 });
      const known = /** @type {Known} */ (this.known.get(key));
      if (known.keys.shared) throw new SyncError('forbidden', 'only the account that made this store can re-key it (this one holds it through a share)', { status: 403 });
      const me = normaliseId(this.id);
      const keys = await known.keys.rekeyed(this.#keyring);
      // The removed member stays on the list as GONE, so what it wrote before stays readable.
      const members = (known.members ?? [{ id: me, p: 'OWN' }]).map((m) => (m.id === gone && m.p !== 'GONE' ? { id: gone, p: 'GONE', w: m.p, e: keys.current, x: opened.logHead } : m));
      // Everyone who stays gets the new key, but this account (its own keyring wraps it).
      const others = members.filter((m) => m.id !== me && m.p !== 'GONE');
      const unseen = [];
      for (const m of others) if (!(await this.#verified(m.id))) unseen.push(m.id);
      if (unseen.length > 0) {
        throw new SyncError('identity_unverified', `this device has not shown the fingerprints of ${unseen.join(', ')}: call vault.fingerprint(id) for each and have the user compare them, then unshare again (nothing was changed)`);
      }
      const identities = [];
      for (const m of others) identities.push(await this.#identity(m.id));
      const signer = await this.#identityKeys();
      let written;
      try {
        written = await this.writeBody(key, { data: opened.data, against: opened.token, keys, members });
      } catch (error) {
        if (error instanceof SyncError && error.status === 412) continue;
        throw error;
      }
      /** @type {{account: string, permission: 'READ'|'WRITE'|'OWN'|null, envelope?: Uint8Array}[]} */
      const changes = gone ? [{ account: gone, permission: null }] : [];
      for (const [i, m] of others.entries()) {
        const permission = /** @type {'READ'|'WRITE'|'OWN'} */ (m.p);
        changes.push({ account: m.id, permission, envelope: await sealEnvelope({ from: me, location: key, keys: keys.raw, permission, grantee: identities[i], signer }) });
      }
      try {
        await this.stores.grant(key, changes, { ifMatch: written.token });
        return;
      } catch (error) {
        if (!(error instanceof SyncError && error.status === 412)) throw error;
      }
    }
    throw new SyncError('conflict_unresolved', 'the store kept changing while it was being re-keyed');
  }

  /**
   * A share link for a store (OWN required): `{url, link, expires, uses}`.
   * The URL's fragment holds the secret (the server never sees it); anyone
   * who has the URL and an account can redeem it until it is used up or
   * expires (defaults: one use, 7 days). Revoking it after use needs a
   * re-key (`unshare`), as the redeemer has the store's keys.
   * @param {Target} target
   * @param {{permission?: 'READ'|'WRITE', uses?: number, expires?: number, url?: string}} [options] `url`: the app's page the link opens
   */
  async createLink(target, options = {}) {
    const permission = options.permission ?? 'READ';
    if (permission !== 'READ' && permission !== 'WRITE') throw new SyncError('bad_request', 'a link grants READ or WRITE');
    const key = await this.keyOf(target);
    const opened = await this.openStore(key);
    if (!opened) throw new SyncError('not_found', 'no such store', { status: 404 });
    const secret = newLinkSecret();
    const parts = await linkParts(secret);
    const envelope = await sealLinkEnvelope({ from: normaliseId(this.id), location: key, keys: opened.sealer.keys.raw, permission, link: parts.link, key: parts.key, signer: await this.#identityKeys() });
    /** @type {Record<string, any>} */
    const json = { link: parts.link, verifier_hash: await verifierHash(parts.verifier), permission, envelope: toBase64url(envelope) };
    if (options.uses !== undefined) json.uses = options.uses;
    if (options.expires !== undefined) json.expires = options.expires;
    const made = await this.client.transport.json('POST', `/v1/stores/${encodeURIComponent(key)}/links`, { json });
    return { url: `${options.url ?? ''}#${LINK_PARAMETER}=${toBase64url(secret)}`, link: made.link, expires: made.expires, uses: made.uses };
  }

  /** The store's links that still work (no secrets). @param {Target} target @returns {Promise<{link: string, permission: string, uses: number, expires: number, created: number}[]>} */
  async links(target) {
    const key = await this.keyOf(target);
    return (await this.client.transport.json('GET', `/v1/stores/${encodeURIComponent(key)}/links`)).links;
  }

  /** Ends a link (whoever redeemed it keeps access until `unshare`). @param {Target} target @param {string} link */
  async revokeLink(target, link) {
    const key = await this.keyOf(target);
    await this.client.transport.request('DELETE', `/v1/stores/${encodeURIComponent(key)}/links/${encodeURIComponent(link)}`);
  }

  /**
   * Redeems a share link (this account gets the link's permission): the
   * store's keys come from the link, signed by the owner who made it
   * (pinned on first use), and are kept sealed on this device until an
   * owner seals them to this account's identity (`share`, after checking
   * its fingerprint). Returns `{key, name, permission}`.
   * @param {string} url
   */
  async redeem(url) {
    const parts = await linkParts(secretOf(url));
    const answer = await this.client.transport.json('POST', `/v1/links/${encodeURIComponent(parts.link)}/redeem`, { json: { verifier: toBase64url(parts.verifier) } });
    const key = answer?.key;
    if (typeof key !== 'string' || !key.startsWith(VAULT_PREFIX) || typeof answer.envelope !== 'string') throw new SyncError('bad_response', 'the redeem answer is not a vault store\'s');
    const content = await openLinkEnvelope(fromBase64url(answer.envelope), parts.key, key, parts.link);
    await this.#checkSigned((publicKey) => checkLinkSignature(content, publicKey), content.from);
    const sealed = await this.sealForDevice(LABEL.link, utf8(JSON.stringify({ from: content.from, keys: content.keys, epoch: content.epoch })));
    await this.state.set(`${this.pins.scope}|linked|${key}`, toBase64url(sealed));
    this.sharedKeys.delete(key);
    const opened = await this.openStore(key);
    return { key, name: opened?.name ?? null, permission: answer.permission };
  }

  /**
   * The location (store key) of a store: of a name of this vault's, or the
   * `key` of a store from `list()` (a shared one, say).
   * @param {Target} name
   */
  async keyOf(name) {
    if (typeof name === 'object' && name !== null && typeof name.key === 'string') {
      if (!name.key.startsWith(VAULT_PREFIX)) throw new SyncError('bad_request', 'not a vault store\'s key');
      return name.key;
    }
    if (typeof name !== 'string' || name.length === 0) throw new SyncError('bad_request', 'a store name is a non-empty string');
    if (name.startsWith(RESERVED)) throw new SyncError('bad_request', `names starting with '${RESERVED}' are the library's`);
    const key = await this.#keyring.locationOf(name);
    this.names.set(key, name);
    return key;
  }

  /**
   * The decrypted store called `name` (or `{key}` from `list()`), or `null`.
   * @param {Target} name @returns {Promise<Item|null>}
   */
  async get(name) {
    const opened = await this.openStore(await this.keyOf(name));
    if (!opened) return null;
    const { incarnation: _i, clock: _c, sealer: _s, ...item } = opened;
    return item;
  }

  /**
   * Reads and opens a store, checking that body and metadata belong
   * together and that the version is not older than one this device saw.
   * Internal (documents use it). @param {string} key @returns {Promise<Opened|null>}
   */
  async openStore(key) {
    const since = Date.now();
    const body = await this.stores.get(key);
    if (!body || 'notModified' in body) {
      this.known.delete(key);
      return null;
    }
    if (!body.meta) throw new SyncError('integrity', 'the server stripped this store\'s metadata (every vault store has some)');
    const keys = await this.#unwrap(key, body.meta);
    const sealer = new Sealer(keys);
    const content = await sealer.openMeta(body.meta);
    const writers = await this.#authorize(key, content, keys, body.meta, since);
    const former = formerWritersOf(content.u ?? []);
    const { header, data } = await sealer.openBody(body.data);
    if (content.i !== header.i || content.v !== header.v || content.h !== toBase64url(await sha256(body.data))) {
      throw new SyncError('integrity', 'this store\'s metadata belongs to another version of its body (the server mixed them)');
    }
    await this.pins.storeVersion(key, header.i, header.v, since);
    this.names.set(key, content.n);
    this.known.set(key, { token: body.token, name: content.n, meta: content.m, incarnation: header.i, version: header.v, clock: header.c, keys, members: content.u, roster: content.r, wrapsSignature: content.w });
    return {
      name: content.n,
      key,
      data,
      meta: content.m,
      token: body.token,
      version: header.v,
      seq: body.seq,
      permission: body.permission ?? null,
      logHead: body.logHead,
      logBase: body.logBase,
      incarnation: header.i,
      clock: header.c,
      sealer,
      writers,
      former,
    };
  }

  /**
   * Who may write this store, and whether this version's author may: on
   * a store only this account writes, this account; on a shared store,
   * the writers of its member list, which must be signed by an owner this
   * device trusts (this account, the member who shared the store with it,
   * or an owner of the list it accepted before). `integrity` otherwise.
   * @param {string} key @param {import('./sealer.js').MetaContent} content @param {StoreKeys} keys @param {string} metaText
   * @param {number} since when the request that read it was sent (pins raised since then do not judge it)
   */
  async #authorize(key, content, keys, metaText, since) {
    const me = normaliseId(this.id);
    const { wraps, epoch } = parseMeta(metaText);
    const wrapsHash = await sha256(wraps);
    const highest = Math.max(...keys.wraps.map((w) => w.epoch));
    if (epoch !== highest) throw new SyncError('integrity', 'this store\'s metadata is sealed under another key epoch than its newest');
    // Key epochs never go back on a device (a writer cannot carry old wraps past an owner's re-key).
    const epochPin = `${this.pins.scope}|wraps|${key}`;
    /** @type {{i: string, e: number, at?: number}|undefined} */
    const seenEpoch = await this.state.get(epochPin);
    if (judges(seenEpoch, since) && seenEpoch?.i === content.i && epoch < seenEpoch.e) throw new SyncError('rollback', `this store is at key epoch ${epoch}; this device has seen ${seenEpoch.e}`);
    const pin = `${this.pins.scope}|roster|${key}`;
    /** @type {{i: string, n: number, owners: string[], anchor?: string, at?: number}|undefined} */
    const pinned = await this.state.get(pin);
    const current = pinned?.i === content.i ? pinned : undefined;
    const anchor = keys.shared ? (current?.anchor ?? this.sharedFrom.get(key)) : me;
    let writers = new Set(anchor ? [anchor] : []);
    if (content.u) {
      const roster = content.r;
      const by = roster?.by ?? '';
      const signed = roster && Number.isSafeInteger(roster.n) && (await this.#verifyBy(by, fromBase64url(roster.s), rosterStatement(key, content.i, content.u, roster.n)));
      const owners = ownersOf(content.u);
      // A list this device accepted names the owners from then on; before that, the owner who shared the store (or this account).
      const trusted = current ? current.owners.includes(by) : by === me || by === anchor;
      if (!signed || !owners.has(by) || !trusted) {
        throw new SyncError('integrity', 'this store\'s member list is not signed by an owner this device trusts: refused');
      }
      if (current && judges(current, since) && roster.n < current.n) throw new SyncError('rollback', `an older member list (number ${roster.n}; this device has seen ${current.n}): refused`);
      const wrapper = content.w?.by ?? '';
      if (!content.w || !owners.has(wrapper) || !(await this.#verifyBy(wrapper, fromBase64url(content.w.s), wrapsStatement(key, content.i, wrapsHash, epoch)))) {
        throw new SyncError('integrity', 'this shared store\'s keys are not signed by one of its owners: refused');
      }
      if (!current || roster.n >= current.n) await this.state.set(pin, { i: content.i, n: roster.n, owners: [...owners], anchor, at: Date.now() });
      writers = writersOf(content.u);
    }
    if (!content.a || !content.s || !writers.has(content.a) || !(await this.#verifyBy(content.a, fromBase64url(content.s), metaStatement(key, content, wrapsHash, epoch)))) {
      throw notAWriter(content.a ?? 'nobody', 'this version');
    }
    if (!seenEpoch || seenEpoch.i !== content.i || epoch > seenEpoch.e) await this.state.set(epochPin, { i: content.i, e: epoch, at: Date.now() });
    return writers;
  }

  /**
   * Whether `author`'s identity signed `statement` (this account's own
   * keys for itself; others' identities as pinned).
   * @param {string} author @param {Uint8Array} signature @param {Uint8Array} statement
   */
  async #verifyBy(author, signature, statement) {
    for (const publicKey of await this.#signingKeysOf(author)) if (await verify(publicKey, signature, statement)) return true;
    return false;
  }

  /**
   * Runs `check` with each signing key `author` has had until one passes;
   * the last refusal otherwise.
   * @param {(publicKey: Uint8Array) => Promise<void>} check @param {string} author
   */
  async #checkSigned(check, author) {
    let refusal;
    for (const publicKey of await this.#signingKeysOf(author)) {
      try {
        return await check(publicKey);
      } catch (error) {
        refusal = error;
      }
    }
    throw refusal;
  }

  /**
   * The signing keys `author` has had: its identity now, and the ones
   * before it, each rotation signed by the key it replaced (what was
   * signed before a rotation still verifies).
   * @param {string} author @returns {Promise<Uint8Array[]>}
   */
  async #signingKeysOf(author) {
    if (author === normaliseId(this.id)) {
      const mine = [await this.#identityKeys(), ...(this.#keyring.content.formerIdentities ?? [])];
      return mine.map((k) => fromBase64url(k.signPublic));
    }
    let keys = this.identities.get(author);
    if (!keys) {
      const latest = await this.#identity(author);
      keys = [latest.sign];
      let step = latest;
      for (let hops = 0; hops < 8 && step.previous && step.version > 1; hops++) {
        const before = await this.#fetchIdentity(author, step.version - 1);
        if (toBase64url(before.sign) !== toBase64url(step.previous)) break;
        keys.push(before.sign);
        step = before;
      }
      this.identities.set(author, keys);
    }
    return keys;
  }

  /** Signs with this account's identity. @param {Uint8Array} statement */
  async #sign(statement) {
    return sign(await this.#identityKeys(), statement);
  }

  /**
   * A store's keys from its metadata; a data key this vault's keyring
   * lacks makes it read the current keyring first (another device may
   * have rotated), and only then is it `rollback`.
   * @param {string} key @param {string} meta
   */
  async #unwrap(key, meta) {
    const { wraps, epoch } = parseMeta(meta);
    const own = async () => {
      try {
        return await StoreKeys.unwrap(key, wraps, this.#keyring);
      } catch (error) {
        if (!(error instanceof SyncError && error.code === 'rollback')) throw error;
        await this.#reloadKeyring();
        return StoreKeys.unwrap(key, wraps, this.#keyring);
      }
    };
    try {
      return await own();
    } catch (error) {
      // Not wrapped under this account's keys: a store shared with it, or a rollback of its own keyring.
      if (!(error instanceof SyncError && (error.code === 'decrypt_failed' || error.code === 'rollback'))) throw error;
      const shared = await this.#sharedKeys(key, wraps, epoch).catch((failure) => {
        throw error.code === 'rollback' && failure instanceof SyncError && failure.code === 'decrypt_failed' ? error : failure;
      });
      return shared;
    }
  }

  /**
   * A store shared with this account: its keys from this account's
   * envelope, signed by the member who shared it (whose identity is
   * pinned on first use). A key epoch older than one this device saw is
   * `rollback`; an epoch newer than the envelope's makes it fetch the
   * envelope again.
   * @param {string} key @param {Uint8Array} wraps @param {number} needed the epoch the metadata is sealed under
   */
  async #sharedKeys(key, wraps, needed) {
    const cached = this.sharedKeys.get(key);
    if (cached && cached.has(needed)) return StoreKeys.shared(key, cached, wraps);
    const found = await this.stores.envelope(key);
    /** @type {{from: string, epoch: number, keys: Record<string, string>}} */
    let content;
    if (found) {
      // Sealed to this account's identity, or (before a rotation of it) to a former one.
      const candidates = [await this.#identityKeys(), ...[...(this.#keyring.content.formerIdentities ?? [])].reverse()];
      let opened = null;
      for (const me of candidates) {
        const mine = await fingerprintOf(this.id, fromBase64url(me.signPublic), fromBase64url(me.agreePublic));
        opened = await openEnvelope(found.data, me, mine, key).catch((error) => (candidates.at(-1) === me ? Promise.reject(error) : null));
        if (opened) break;
      }
      if (!opened) throw new SyncError('decrypt_failed', 'this account\'s envelope does not open');
      await this.#checkSigned((publicKey) => checkSignature(opened, publicKey), opened.from);
      content = opened;
    } else {
      // Keys from a share link this device redeemed (checked then), until an owner seals them to this account.
      const linked = await this.state.get(`${this.pins.scope}|linked|${key}`);
      if (!linked) throw new SyncError('decrypt_failed', 'this store does not open for this account: it is not shared with it (no envelope), or it is another account\'s', { status: 0 });
      content = JSON.parse(fromUtf8(await this.openForDevice(LABEL.link, fromBase64url(linked))));
    }
    const pinKey = `${this.pins.scope}|epoch|${key}`;
    const seen = (await this.state.get(pinKey)) ?? 0;
    if (content.epoch < seen) throw new SyncError('rollback', `the server served an envelope of key epoch ${content.epoch}; this device has seen ${seen}`);
    if (content.epoch > seen) await this.state.set(pinKey, content.epoch);
    const raw = new Map(Object.entries(content.keys).map(([epoch, b64]) => [Number(epoch), fromBase64url(b64)]));
    this.sharedKeys.set(key, raw);
    this.sharedFrom.set(key, content.from);
    if (!raw.has(needed)) throw new SyncError('decrypt_failed', `this account's envelope holds no key of epoch ${needed} (it was removed, or not re-sealed to yet)`);
    return StoreKeys.shared(key, raw, wraps);
  }

  /**
   * Writes `data` as the store `name`, conditionally on the version this
   * vault last read or wrote (or as a new store if it has seen none).
   * `meta` (any JSON value) replaces the metadata; absent, the metadata
   * last seen is kept. On a conflict, `resolve` (or the vault's) decides
   * what to write; without one the 412 is thrown. With a queue, a write
   * that cannot reach the server (or that would overtake writes still
   * queued) is queued.
   * @param {Target} name @param {Uint8Array|string|ArrayBuffer|ArrayBufferView} data
   * @param {{meta?: any, resolve?: Resolve, base?: string|null, queue?: false}} [options] `base`: the token the data is based on, if not the last seen; `queue: false`: never queue this write
   * @returns {Promise<PutResult>} `written`, `skipped` (the resolver kept the other version) or `queued`
   */
  async put(name, data, options = {}) {
    const key = await this.keyOf(name);
    const given = typeof data === 'string' ? data : asBytes(data);
    const queue = options.queue === false ? null : this.queue;
    // Writes still queued go first (this one may depend on them) …
    const waiting = queue && (await this.#queued()).length > 0 && (await this.flush()) > 0;
    // … and the base is what this vault knows once they are written.
    const base = options.base !== undefined ? options.base : (this.known.get(key)?.token ?? null);
    /** @type {QueuedPut} */
    const write = { op: 'put', key, name: typeof name === 'string' ? name : (this.names.get(key) ?? ''), data: given, meta: options.meta, base };
    if (queue && waiting) return this.#enqueue(write);
    try {
      return await this.#write(write, options.resolve ?? this.resolve);
    } catch (error) {
      if (!(queue && error instanceof SyncError && error.transient)) throw error;
      return this.#enqueue(write);
    }
  }

  /**
   * Deletes the store `name` (OWN required), if it is still at the
   * version last seen, or (if this vault has not seen it) at the version
   * it finds now; else a 412 SyncError. The store's incarnation is retired
   * on this device: the server can never bring it back.
   * @param {Target} name @returns {Promise<{deleted: true}>}
   */
  async delete(name) {
    const key = await this.keyOf(name);
    // Queued writes of this store go first, so none can bring it back after.
    if (this.queue && (await this.#queued()).length > 0) await this.flush();
    const token = this.known.get(key)?.token ?? (await this.stores.head(key))?.token;
    if (!token) throw new SyncError('not_found', `no store called ${this.names.get(key) ?? key}`, { status: 404 });
    await this.stores.delete(key, { ifMatch: token });
    this.known.delete(key);
    await this.pins.retire(key);
    for (const { record, write } of await this.#queued()) if (write.key === key) await this.queue?.store.remove(record.id);
    return { deleted: true };
  }

  /**
   * Every store of the vault you can see: decrypted names and metadata
   * (bodies are not downloaded). A store whose metadata the server
   * stripped or damaged is listed with `error` (code `integrity`,
   * `decrypt_failed` or `rollback`), never silently left out.
   * @returns {Promise<Listed[]>}
   */
  async list() {
    const since = Date.now();
    const { stores } = await this.stores.list();
    const internal = this.#keyring.internal();
    for (const key of internal) this.keyStores.add(key);
    /** @type {Listed[]} */
    const items = [];
    for (const s of stores) {
      if (!s.key.startsWith(VAULT_PREFIX) || internal.has(s.key)) continue;
      if (this.keyStores.has(s.key) || (s.meta && (await this.#keyring.isKeyStore(s.key, s.meta)))) {
        this.keyStores.add(s.key);
        continue;
      }
      try {
        if (!s.meta) throw new SyncError('integrity', 'the server stripped this store\'s metadata');
        const sealer = new Sealer(await this.#unwrap(s.key, s.meta));
        const content = await sealer.openMeta(s.meta);
        await this.#authorize(s.key, content, sealer.keys, s.meta, since);
        await this.pins.storeVersion(s.key, content.i, content.v, since);
        this.names.set(s.key, content.n);
        items.push({ name: content.n, key: s.key, meta: content.m, version: content.v, token: s.token, size: s.size, seq: s.seq, permission: s.permission ?? null, logHead: s.logHead });
      } catch (error) {
        if (!(error instanceof SyncError)) throw error;
        items.push({ name: null, key: s.key, error });
      }
    }
    return items;
  }

  /**
   * The log of store `name` (SPEC §9), low level: `append` adds an entry
   * signed into the store's sequence; `read` returns the retained entries
   * checked against the body's clock (a gap, a duplicate or a reordering
   * is an `integrity` error). For CRDTs, `document(name)` does more.
   * @param {Target} name
   */
  log(name) {
    const vault = this;
    /** @type {LogDocument|null} */
    let doc = null;
    const handle = () => (doc ??= new LogDocument(vault, name));
    return {
      /** @param {Uint8Array|string} entry */
      async append(entry) {
        const index = await handle().appendOnly(entry);
        return { index };
      },
      /** @returns {Promise<{entries: {index: number, writer: string, counter: number, data: Uint8Array}[], logHead: number, logBase: number}>} */
      async read() {
        const opened = await vault.openStore(await vault.keyOf(name));
        if (!opened) throw new SyncError('not_found', `no store called ${typeof name === 'string' ? name : name.key}: put it (or load a document) first`, { status: 404 });
        const page = await vault.logs.read(opened.key, { after: opened.logBase });
        const entries = await vault.openEntries(opened, page.entries);
        vault.rejectedEntries += verifyEntries({ ...opened.clock }, entries, normaliseId(vault.id));
        return { entries, logHead: page.logHead, logBase: page.logBase };
      },
    };
  }

  /**
   * Opens log entries of a store (internal). An entry sealed under a store
   * key this vault has not seen yet makes it read the store's keys again.
   * @param {Opened} opened @param {{index: number, data: Uint8Array}[]} raw
   */
  async openEntries(opened, raw) {
    const out = [];
    let sealer = opened.sealer;
    let writers = opened.writers;
    for (const e of raw) {
      let entry = await sealer.openEntry(opened.incarnation, e.data).catch(() => null);
      if (!entry && e.data[0] === 2 && new DataView(e.data.buffer, e.data.byteOffset).getUint32(1) > sealer.keys.current) {
        // Sealed under a key this vault has not seen yet: read the store's keys again.
        const fresh = await this.openStore(opened.key);
        if (fresh && fresh.incarnation === opened.incarnation) {
          sealer = fresh.sealer;
          writers = fresh.writers;
          entry = await sealer.openEntry(opened.incarnation, e.data).catch(() => null);
        }
      }
      // A writer's entries, or a removed writer's from before its removal (an older key epoch and a log index then taken).
      const gone = entry && opened.former.get(entry.author);
      const allowed = entry && (writers.has(entry.author) || (gone && entry.epoch < gone.epoch && e.index <= gone.index));
      const signed =
        entry &&
        allowed &&
        (await this.#verifyBy(entry.author, entry.signature, entryStatement(opened.key, opened.incarnation, entry.epoch, entry.writer, entry.counter, await sha256(entry.data))));
      if (!entry || !signed) {
        // Junk, or written by someone who may not write: left out, counted, never applied.
        this.rejectedEntries += 1;
        continue;
      }
      out.push({ index: e.index, writer: entry.writer, counter: entry.counter, author: entry.author, data: entry.data });
    }
    return out;
  }

  /**
   * Appends a sealed entry (internal; documents use it). A store whose key
   * predates the account's last rotation is first moved to a new key.
   * @param {string} key @param {string} writer @param {number} counter @param {Uint8Array|string} data
   * @returns {Promise<{key: string, index: number, logHead: number, logBytes: number, seq: number}>}
   */
  async appendEntry(key, writer, counter, data) {
    await this.#ensureCurrent();
    let known = this.known.get(key);
    if (!known) {
      await this.openStore(key);
      known = this.known.get(key);
    }
    if (!known) throw new SyncError('not_found', `no store called ${this.names.get(key) ?? key}: put it (or load a document) first`, { status: 404 });
    const fresh = known.members?.length ? await known.keys.rewrapped(this.#keyring) : await known.keys.fresh(this.#keyring);
    if (fresh !== known.keys) {
      const opened = await this.openStore(key);
      if (opened) await this.writeBody(key, { data: opened.data, clock: opened.clock, against: opened.token });
      return this.appendEntry(key, writer, counter, data);
    }
    const bytes = asBytes(data);
    const author = normaliseId(this.id);
    const signature = await this.#sign(entryStatement(key, known.incarnation, known.keys.current, writer, counter, await sha256(bytes)));
    const sealed = await new Sealer(known.keys).sealEntry(known.incarnation, { writer, counter, author, signature }, bytes);
    try {
      return await this.logs.append(key, sealed);
    } catch (error) {
      if (error instanceof SyncError && error.status === 404) {
        throw new SyncError('not_found', `no store called ${known.name}: put it (or load a document) first`, { status: 404 });
      }
      throw error;
    }
  }

  /**
   * Writes a new body of a store (internal): the next version, the clock
   * given (documents) or kept, the metadata kept unless given; `against`
   * is the token it replaces (`null`: create); `logBase` compacts.
   * @param {string} key
   * @param {{data: Uint8Array|string, clock?: Record<string, number>, meta?: any, name?: string, against: string|null, logBase?: number,
   *   keys?: StoreKeys, members?: {id: string, p: string}[]}} write `keys`: new store keys (a re-key); `members`: a shared store's new member list
   */
  async writeBody(key, { data, clock, meta, name, against, logBase, keys: newKeys, members }) {
    await this.#ensureCurrent();
    let known = this.known.get(key);
    if (against !== null && known?.token !== against) {
      await this.openStore(key).catch(() => null);
      known = this.known.get(key);
    }
    const base = against === null ? undefined : known;
    // A store of this account's alone moves to a new key after a rotation; a shared one keeps its key (its members hold it), wrapped anew.
    const keys = newKeys ?? (base ? await (base.members?.length ? base.keys.rewrapped(this.#keyring) : base.keys.fresh(this.#keyring)) : await StoreKeys.create(key, this.#keyring));
    const incarnation = base ? base.incarnation : newIncarnation();
    const version = base ? base.version + 1 : 1;
    const nextClock = clock ?? base?.clock ?? {};
    const nextName = name ?? known?.name ?? this.names.get(key);
    if (nextName === undefined) throw new SyncError('bad_request', 'a new store needs its name');
    const nextMeta = meta === undefined ? (known?.meta ?? null) : meta;
    const nextMembers = members ?? base?.members;
    const me = normaliseId(this.id);
    // A new member list is this (owning) account's to sign, with the next number; otherwise the owner's signature goes along.
    const roster = members ? { by: me, n: (base?.roster?.n ?? 0) + 1, s: '' } : base?.roster;
    if (members && roster) roster.s = toBase64url(await this.#sign(rosterStatement(key, incarnation, members, roster.n)));
    const wrapBytes = keys.wrapBytes();
    const wrapsHash = await sha256(wrapBytes);
    const owner = nextMembers?.some((m) => m.id === me && m.p === 'OWN') ?? false;
    // An owner signs the key wraps of a shared store; a writer carries the owner's signature along.
    const wrapsSignature = nextMembers?.length ? (owner ? { by: me, s: toBase64url(await this.#sign(wrapsStatement(key, incarnation, wrapsHash, keys.current))) } : base?.wrapsSignature) : undefined;
    const sealer = new Sealer(keys);
    const body = await sealer.sealBody({ i: incarnation, v: version, c: nextClock }, asBytes(data));
    const info = await this.client.info();
    /** @type {import('./sealer.js').MetaContent} */
    const content = { n: nextName, m: nextMeta, i: incarnation, v: version, h: toBase64url(await sha256(body)), a: me };
    if (nextMembers?.length && roster) Object.assign(content, { u: nextMembers, r: roster, w: wrapsSignature });
    content.s = toBase64url(await this.#sign(metaStatement(key, content, wrapsHash, keys.current)));
    const metaText = await sealer.sealMeta(content, info.max_meta_bytes ?? 8000);
    const state = await this.stores.put(key, body, against === null ? { ifNoneMatch: '*', meta: metaText } : { ifMatch: against, meta: metaText, logBase });
    this.known.set(key, { token: state.token, name: nextName, meta: nextMeta, incarnation, version, clock: nextClock, keys, members: nextMembers, roster, wrapsSignature });
    if (nextMembers?.length && roster) {
      // What this account wrote is what its devices trust next (an owner's own new list included).
      const pin = `${this.pins.scope}|roster|${key}`;
      /** @type {{i: string, n: number, owners: string[], anchor?: string}|undefined} */
      const pinned = await this.state.get(pin);
      if (!pinned || pinned.i !== incarnation || roster.n >= pinned.n) {
        await this.state.set(pin, { i: incarnation, n: roster.n, owners: [...ownersOf(nextMembers)], anchor: pinned?.i === incarnation ? pinned.anchor : keys.shared ? this.sharedFrom.get(key) : me, at: Date.now() });
      }
    }
    await this.pins.storeVersion(key, incarnation, version);
    return { token: state.token, version, created: state.created };
  }

  /**
   * A CRDT document kept as snapshot (the body) plus updates (the log).
   * @param {Target} name
   */
  document(name) {
    return new LogDocument(this, name);
  }

  /**
   * Follows the change feed; each change carries the store's `name` (the
   * vault's own key stores are left out). `shared: true` (browsers) shares
   * one feed connection between all tabs of the origin (per account).
   * @param {ConstructorParameters<typeof Feed>[1] & {shared?: boolean, name?: string}} [options]
   */
  follow(options = {}) {
    const decorate = async (/** @type {any[]} */ changes) => {
      // Names this vault has not met yet come from one listing, not a request per store.
      if (changes.some((c) => c.token !== null && !this.names.has(c.key) && !this.keyStores.has(c.key))) await this.list().catch(() => undefined);
      // Key stores are nobody's app data; a store gone that this vault never met is nothing the app knew.
      const mine = changes.filter((c) => !this.keyStores.has(c.key) && (c.token !== null || this.names.has(c.key)));
      return mine.map((c) => ({ ...c, name: this.names.get(c.key) ?? null }));
    };
    const feedOptions = { ...options, decorate };
    if (!options.shared) return new Feed(this.client, feedOptions);
    return new SharedFeed(this.client, { name: `${this.client.transport.base}#${this.#device.tag}`, ...feedOptions });
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
    /** @type {Map<number, QueuedPut>} */
    const opened = new Map();
    return this.queue.replay(
      // Writes queued by another account on this device wait for it.
      (record) => record.account === this.#device.tag,
      async (record) => {
        const write = await this.#openQueued(record);
        opened.set(record.id, write);
        const written = await this.#write(write, this.resolve);
        if (!('written' in written) && !('skipped' in written)) throw new SyncError('bad_response', 'a queued write neither won nor was skipped');
      },
      (record, error) => {
        const write = opened.get(record.id) ?? record;
        this.rejected.push({ write, error });
        onFailure?.(write, error);
      },
    );
  }

  /**
   * Signs out: queued writes are replayed if the server answers, and those
   * still waiting are removed from this device, with the entries kept for
   * re-appending; then the session ends (a `network` error when the
   * server cannot be reached: the device has forgotten everything all the
   * same, and the session expires on the server). Returns how many writes
   * were dropped unsent, and how many log entries were forgotten before a
   * snapshot confirmed them (from then on, the server could drop those
   * without this device noticing).
   * @returns {Promise<{writes: number, entries: number}>}
   */
  async signOut() {
    await this.flush().catch(() => undefined);
    const left = await this.#queued();
    for (const { record } of left) await this.queue?.store.remove(record.id);
    let entries = 0;
    for (const key of await this.state.keys(`${this.pins.scope}|outbox|`)) {
      entries += ((await this.state.get(key)) ?? []).length;
      await this.state.delete(key);
    }
    await this.client.signOut();
    return { writes: left.length, entries };
  }

  /** Seals what the device keeps for this account. @param {string} label @param {Uint8Array} plain */
  sealForDevice(label, plain) {
    return seal(this.#device.key, plain, context(label, this.#device.tag));
  }

  /** @param {string} label @param {Uint8Array} sealed */
  openForDevice(label, sealed) {
    return open(this.#device.key, sealed, context(label, this.#device.tag));
  }

  /** @param {QueuedPut} write */
  async #enqueue(write) {
    const queue = /** @type {OfflineQueue} */ (this.queue);
    const earlier = (await this.#queued()).filter((q) => q.write.op === 'put' && q.write.key === write.key);
    for (const q of earlier) await queue.store.remove(q.record.id);
    // A put waiting for the same store is replaced: the new data supersedes it, on the same base.
    const base = earlier.length > 0 ? earlier[0].write.base : write.base;
    const meta = write.meta === undefined && earlier.length > 0 ? earlier[earlier.length - 1].write.meta : write.meta;
    const text = typeof write.data === 'string';
    const plain = utf8(JSON.stringify({ ...write, base, meta, data: text ? write.data : toBase64url(/** @type {Uint8Array} */ (write.data)), text }));
    await queue.add({ account: this.#device.tag, sealed: toBase64url(await this.sealForDevice(LABEL.queue, plain)) });
    return /** @type {PutResult} */ ({ queued: true });
  }

  /** @param {Record<string, any>} record @returns {Promise<QueuedPut>} */
  async #openQueued(record) {
    const parsed = JSON.parse(fromUtf8(await this.openForDevice(LABEL.queue, fromBase64url(record.sealed))));
    return { ...parsed, data: parsed.text ? parsed.data : fromBase64url(parsed.data) };
  }

  /** This account's queued writes, opened, oldest first. */
  async #queued() {
    if (!this.queue) return [];
    const out = [];
    for (const record of await this.queue.store.list()) {
      if (record.account === this.#device.tag) out.push({ record, write: await this.#openQueued(record) });
    }
    return out;
  }

  /**
   * One write through the conflict loop.
   * @param {QueuedPut} write `meta` undefined: keep the metadata (the last seen, or the winner's on a conflict)
   * @param {Resolve} [resolve]
   * @returns {Promise<PutResult>}
   */
  async #write({ key, name, data, meta, base }, resolve) {
    /** @typedef {{data: Uint8Array|string, meta: any}} Version */
    const outcome = await writeUntilWon({
      data: /** @type {Version} */ ({ data, meta }),
      base,
      resolve:
        resolve &&
        (async (local, remote, current) => {
          const download = async () => {
            const r = await remote();
            return r && { data: /** @type {Uint8Array} */ (r.data.data), meta: r.data.meta, token: r.token };
          };
          const merged = await resolve(local.data, download, current);
          if (merged === null || merged === undefined) return null;
          const given = typeof merged === 'object' && !ArrayBuffer.isView(merged) && 'data' in merged ? merged : { data: merged, meta: undefined };
          // Metadata not given: keep the winner's (undefined keeps what the store has).
          return { data: given.data, meta: given.meta !== undefined ? given.meta : meta };
        }),
      fetchRemote: async () => {
        const item = await this.openStore(key);
        return item && { data: { data: item.data, meta: item.meta }, token: item.token };
      },
      write: async (version, against) => {
        const written = await this.writeBody(key, { data: version.data, meta: version.meta, name, against });
        return { written: /** @type {true} */ (true), ...written };
      },
    });
    if ('skipped' in outcome) return { skipped: true };
    return outcome.written;
  }

  /** Keeps the keys out of logs and JSON. */
  toJSON() {
    return { vault: this.client.transport.base };
  }
}

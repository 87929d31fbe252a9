/**
 * The account's keys (format 2). The keyring holds every data key epoch,
 * the name key and the list of doors; it is sealed under a random root
 * key and kept at a random location. Doors lead to it: a door sits at a
 * location derived from a secret (the passphrase's Argon2id output, or a
 * recovery code) and holds a door key locked under that secret, and,
 * under the door key, where the keyring is and its root key. Any device
 * that has the keyring can point every door at a new keyring (it keeps
 * the door keys), so keys rotate without knowing the recovery code; a
 * secret that is replaced loses its door, and what its old door led to
 * holds none of the keys made after. Nothing here is at a location the
 * server could compute, and every piece is authenticated.
 *
 *   door    = 2 ‖ AES-GCM(kek(secret), door key) ‖ AES-GCM(door key, {ring, ark, version})
 *   keyring = 2 ‖ AES-GCM(ark, pad({version, epoch, dataKeys, nameKey, doors}))
 */

import { SyncError } from './errors.js';
import { concat, fromBase64url, fromUtf8, toBase64url, toHex, utf8 } from './bytes.js';
import { aesKey, derive, hmacHex, open, pad, randomBytes, seal, unpad } from './crypto.js';
import { context, FORMAT, LABEL, VAULT_PREFIX } from './labels.js';

/** @typedef {'passphrase'|'recovery'} DoorKind */
/** @typedef {{kind: DoorKind, location: string, key: string}} DoorRef a door the keyring knows: its location and door key */
/** @typedef {{version: number, epoch: number, dataKeys: Record<string, string>, nameKey: string, doors: DoorRef[]}} AccountKeys */
/** @typedef {{kind: DoorKind, secret: Uint8Array}} DoorSecret */
/** @typedef {{ring: string, ark: string, version: number}} DoorInside */

const LOCK_BYTES = 12 + 32 + 16;

/** @param {Uint8Array} bytes */
function parseJson(bytes) {
  try {
    return JSON.parse(fromUtf8(bytes));
  } catch (cause) {
    throw new SyncError('integrity', 'a keyring part does not parse', { cause });
  }
}

/** Where a secret's door is. @param {DoorSecret} door @param {string} keySalt */
export async function doorLocation({ kind, secret }, keySalt) {
  return VAULT_PREFIX + toHex(await derive(secret, LABEL.doorLocation, kind, keySalt));
}

/** @param {DoorSecret} door @param {string} keySalt */
async function doorKek({ kind, secret }, keySalt) {
  return aesKey(await derive(secret, LABEL.doorKek, kind, keySalt));
}

/**
 * Reads and opens the door of `door`'s secret, or `null` when there is none.
 * @param {import('./stores.js').Stores} stores @param {string} keySalt @param {DoorSecret} door
 */
export async function openDoor(stores, keySalt, door) {
  const location = await doorLocation(door, keySalt);
  const found = await stores.get(location);
  if (!found || 'notModified' in found) return null;
  const bytes = found.data;
  if (bytes.length < 1 + LOCK_BYTES + 28 || bytes[0] !== FORMAT) throw new SyncError('integrity', 'a door of this account is malformed');
  const doorKey = await open(await doorKek(door, keySalt), bytes.subarray(1, 1 + LOCK_BYTES), context(LABEL.doorLock, keySalt, location));
  const inside = await openInside(doorKey, keySalt, location, bytes);
  return { location, doorKey, inside };
}

/** @param {Uint8Array} doorKey @param {string} keySalt @param {string} location @param {Uint8Array} bytes @returns {Promise<DoorInside>} */
async function openInside(doorKey, keySalt, location, bytes) {
  const inside = parseJson(await open(await aesKey(doorKey), bytes.subarray(1 + LOCK_BYTES), context(LABEL.doorInside, keySalt, location)));
  if (typeof inside?.ring !== 'string' || typeof inside.ark !== 'string' || !Number.isSafeInteger(inside.version)) throw new SyncError('integrity', 'a door of this account is malformed');
  return inside;
}

export class Keyring {
  /** @type {Map<number, Promise<CryptoKey>>} */
  #dataKeys = new Map();

  /**
   * @param {import('./stores.js').Stores} stores @param {string} keySalt
   * @param {string} location @param {Uint8Array} ark @param {AccountKeys} content
   */
  constructor(stores, keySalt, location, ark, content) {
    this.stores = stores;
    this.keySalt = keySalt;
    this.location = location;
    this.ark = ark;
    this.content = content;
  }

  get version() {
    return this.content.version;
  }

  /** The current data key epoch (store keys are wrapped under it). */
  get epoch() {
    return this.content.epoch;
  }

  /** @param {number} epoch */
  dataKey(epoch) {
    let key = this.#dataKeys.get(epoch);
    if (!key) {
      const raw = this.content.dataKeys[String(epoch)];
      if (!raw) return Promise.reject(new SyncError('rollback', `a store key is wrapped under data key ${epoch}, which this keyring (version ${this.version}) lacks: the server served an old keyring`));
      this.#dataKeys.set(epoch, (key = aesKey(fromBase64url(raw))));
    }
    return key;
  }

  /** The location of the store called `name` (nothing the server can compute). @param {string} name */
  async locationOf(name) {
    return VAULT_PREFIX + (await hmacHex(fromBase64url(this.content.nameKey), context(LABEL.storeName, name)));
  }

  /**
   * The `Sync-Meta` of a key store (the keyring or a door): shaped like an
   * app store's, sealed under a key from the name key, so the server
   * cannot tell key stores from app stores by their metadata, and devices
   * can (whichever keyring version they hold).
   * @param {string} location
   */
  async keyStoreMeta(location) {
    const marker = await aesKey(await derive(fromBase64url(this.content.nameKey), LABEL.keyStore));
    const sealed = await seal(marker, pad(utf8('{}')), context(LABEL.keyStore, location));
    return `${FORMAT}.${toBase64url(randomBytes(68))}.1.${toBase64url(sealed)}`;
  }

  /** Whether `meta` marks the store at `location` as one of this account's key stores. @param {string} location @param {string} meta */
  async isKeyStore(location, meta) {
    const parts = meta.split('.');
    if (parts.length !== 4) return false;
    const marker = await aesKey(await derive(fromBase64url(this.content.nameKey), LABEL.keyStore));
    return open(marker, fromBase64url(parts[3]), context(LABEL.keyStore, location)).then(
      () => true,
      () => false,
    );
  }

  /** Locations of the account's own key stores (the keyring and its doors), which are no app's stores. */
  internal() {
    return new Set([this.location, ...this.content.doors.map((d) => d.location)]);
  }

  /** A secret for sealing what the device keeps (queue, unconfirmed entries) and the tag that names this account there. */
  async deviceSecrets() {
    const nameKey = fromBase64url(this.content.nameKey);
    return { key: await aesKey(await derive(nameKey, LABEL.deviceKey)), tag: toHex(await derive(nameKey, LABEL.deviceTag)).slice(0, 32) };
  }

  /** Reads the keyring a door leads to. @param {import('./stores.js').Stores} stores @param {string} keySalt @param {DoorInside} inside */
  static async read(stores, keySalt, inside) {
    const found = await stores.get(inside.ring);
    if (!found || 'notModified' in found) throw new SyncError('keyring_missing', 'the account\'s keyring is missing (the server lost or withholds it)');
    const bytes = found.data;
    if (bytes.length < 29 || bytes[0] !== FORMAT) throw new SyncError('integrity', 'the keyring is malformed');
    const ark = fromBase64url(inside.ark);
    const content = parseJson(unpad(await open(await aesKey(ark), bytes.subarray(1), context(LABEL.keyring, keySalt, inside.ring))));
    if (!Number.isSafeInteger(content?.version) || content.version !== inside.version || !Array.isArray(content.doors) || typeof content.nameKey !== 'string') {
      throw new SyncError('integrity', 'the keyring does not match the door that leads to it');
    }
    return new Keyring(stores, keySalt, inside.ring, ark, content);
  }

  /**
   * Opens the keyring through a door, then looks through the keyring's
   * other doors for a newer keyring (a rotation cut short leaves one door
   * ahead) and follows it, pointing this door there too.
   * @param {import('./stores.js').Stores} stores @param {string} keySalt
   * @param {{location: string, doorKey: Uint8Array, inside: DoorInside}} door
   */
  static async open(stores, keySalt, door) {
    let ring = await Keyring.read(stores, keySalt, door.inside);
    for (const other of ring.content.doors) {
      if (other.location === door.location) continue;
      const found = await stores.get(other.location);
      if (!found || 'notModified' in found) continue;
      const inside = await openInside(fromBase64url(other.key), keySalt, other.location, found.data).catch(() => null);
      if (inside && inside.version > ring.version) {
        ring = await Keyring.read(stores, keySalt, inside);
        await ring.#pointDoor({ kind: 'passphrase', location: door.location, key: toBase64url(door.doorKey) });
      }
    }
    return ring;
  }

  /**
   * A new account's keyring: one data key, a name key, and a door for each
   * secret given.
   * @param {import('./stores.js').Stores} stores @param {string} keySalt @param {DoorSecret[]} doors
   */
  static async create(stores, keySalt, doors) {
    const empty = new Keyring(stores, keySalt, '', new Uint8Array(0), { version: 0, epoch: 0, dataKeys: {}, nameKey: toBase64url(randomBytes(32)), doors: [] });
    const { keyring } = await empty.rotate({ add: doors });
    return keyring;
  }

  /**
   * A new keyring with a new data key epoch (and a new root key and
   * location), reached by the doors kept and those added. The keyring and
   * the doors are written here, recovery doors first; `finish()` then
   * removes the doors dropped and the old keyring. A door of a kind in
   * `add` replaces the old door of that kind.
   * @param {{add?: DoorSecret[], drop?: DoorKind[]}} change
   */
  async rotate({ add = [], drop = [] }) {
    const epoch = this.epoch + 1;
    const replaced = new Set([...drop, ...add.map((d) => d.kind)]);
    const kept = this.content.doors.filter((d) => !replaced.has(d.kind));
    const fresh = [];
    for (const door of add) fresh.push({ secret: door, ref: { kind: door.kind, location: await doorLocation(door, this.keySalt), key: toBase64url(randomBytes(32)) } });
    /** @type {AccountKeys} */
    const content = {
      version: this.version + 1,
      epoch,
      dataKeys: { ...this.content.dataKeys, [String(epoch)]: toBase64url(randomBytes(32)) },
      nameKey: this.content.nameKey,
      doors: [...kept, ...fresh.map((f) => f.ref)],
    };
    const next = new Keyring(this.stores, this.keySalt, VAULT_PREFIX + toHex(randomBytes(32)), randomBytes(32), content);
    const sealed = await seal(await aesKey(next.ark), pad(utf8(JSON.stringify(content))), context(LABEL.keyring, this.keySalt, next.location));
    await this.stores.put(next.location, concat(new Uint8Array([FORMAT]), sealed), { ifNoneMatch: '*', meta: await next.keyStoreMeta(next.location) });
    const order = (/** @type {DoorRef} */ d) => (d.kind === 'recovery' ? 0 : 1);
    /** @type {DoorKind[]} doors the server no longer has (reported, left out of nothing else) */
    const missing = [];
    for (const ref of [...content.doors].sort((a, b) => order(a) - order(b))) {
      const made = fresh.find((f) => f.ref === ref);
      if (!(await next.#pointDoor(ref, made?.secret))) missing.push(ref.kind);
    }
    const dropped = this.content.doors.filter((d) => replaced.has(d.kind));
    const old = this.location;
    return {
      keyring: next,
      missing,
      finish: async () => {
        for (const d of dropped) await this.stores.delete(d.location, { ifMatch: '*' }).catch(ignoreMissing);
        if (old) await this.stores.delete(old, { ifMatch: '*' }).catch(ignoreMissing);
      },
    };
  }

  /**
   * Points a door at this keyring: a new door (with its secret) is made
   * with its lock; an existing one keeps its lock and gets a new inside.
   * False when an existing door is gone (the server dropped it).
   * @param {DoorRef} ref @param {DoorSecret} [secret]
   */
  async #pointDoor(ref, secret) {
    const doorKey = fromBase64url(ref.key);
    const inside = utf8(JSON.stringify({ ring: this.location, ark: toBase64url(this.ark), version: this.version }));
    const sealedInside = await seal(await aesKey(doorKey), inside, context(LABEL.doorInside, this.keySalt, ref.location));
    for (let attempt = 0; attempt < 5; attempt++) {
      const found = await this.stores.get(ref.location);
      const current = found && !('notModified' in found) ? found : null;
      let lock;
      if (secret) lock = await seal(await doorKek(secret, this.keySalt), doorKey, context(LABEL.doorLock, this.keySalt, ref.location));
      else if (current) lock = current.data.subarray(1, 1 + LOCK_BYTES);
      else return false;
      try {
        const meta = await this.keyStoreMeta(ref.location);
        await this.stores.put(ref.location, concat(new Uint8Array([FORMAT]), lock, sealedInside), current ? { ifMatch: current.token, meta } : { ifNoneMatch: '*', meta });
        return true;
      } catch (error) {
        if (!(error instanceof SyncError && error.status === 412)) throw error;
      }
    }
    throw new SyncError('conflict_unresolved', 'a door kept changing under this write: another device is changing the keys; open the vault again');
  }
}

/** @param {unknown} error */
function ignoreMissing(error) {
  if (!(error instanceof SyncError && (error.status === 404 || error.status === 412))) throw error;
}

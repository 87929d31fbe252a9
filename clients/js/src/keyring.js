/**
 * The account's keys (format 2). The keyring holds every data key epoch,
 * the name key and the account's doors; it is sealed under a random root
 * key and kept at a random location. Doors lead to it: a door sits at a
 * location derived from a secret (the passphrase's Argon2id output, or a
 * recovery code) and holds an ECDH P-256 private key locked under that
 * secret; its inside (where the keyring is, and its root key) is sealed
 * to the door's public key. The keyring keeps only the doors' public
 * keys, so a device can point the recovery door at a new keyring without
 * the recovery code, and no keyring, old or new, opens a door's inside.
 * Every rotation gives the passphrase door a new key pair (every vault
 * holds the passphrase's secret): an old keyring knows only old public
 * keys, so an inside forged with one does not open, and the passphrase
 * door cannot be forged at all. The recovery door keeps its key pair
 * until its code is replaced: recovery trusts it (see README).
 *
 * A rotation first rewrites the current keyring conditionally on the
 * version this device read (so two devices cannot rotate from one keyring,
 * and a device holding an old one learns it is old), then writes the new
 * keyring, then the doors (recovery first), and only then deletes the
 * old keyring and the replaced doors. Every piece is padded like an app
 * store's body and carries metadata shaped like an app store's.
 *
 *   door    = 2 ‖ u32 1 ‖ u16 n ‖ AES-GCM(kek(secret), PKCS#8 private key) (n bytes)
 *             ‖ ephemeral public key ‖ AES-GCM(ECDH(ephemeral, door key), pad({ring, ark, version}))
 *   keyring = 2 ‖ u32 1 ‖ AES-GCM(ark, pad({version, epoch, dataKeys, nameKey, doors, identity, formerIdentities}))
 */

import { SyncError } from './errors.js';
import { concat, fromBase64url, fromUtf8, toBase64url, toHex, utf8 } from './bytes.js';
import { aesKey, derive, hmacHex, META_FLOOR, open, pad, padme, PAD_FLOOR, randomBytes, seal, unpad } from './crypto.js';
import { context, FORMAT, LABEL, VAULT_PREFIX } from './labels.js';

const subtle = globalThis.crypto.subtle;
/** @param {Uint8Array} bytes */
const source = (bytes) => /** @type {Uint8Array<ArrayBuffer>} */ (bytes);
const ECDH = { name: 'ECDH', namedCurve: 'P-256' };
const POINT_BYTES = 65;
const HEAD_BYTES = 5;
const SEAL_OVERHEAD = 12 + 16;

/** @typedef {'passphrase'|'recovery'} DoorKind */
/** @typedef {{kind: DoorKind, location: string, public: string}} DoorRef a door the keyring knows: its location and public key */
/** @typedef {{version: number, epoch: number, dataKeys: Record<string, string>, nameKey: string, doors: DoorRef[], identity?: import('./identity.js').IdentityKeys, formerIdentities?: import('./identity.js').IdentityKeys[]}} AccountKeys */
/** @typedef {{kind: DoorKind, secret: Uint8Array}} DoorSecret */
/** @typedef {{ring: string, ark: string, version: number}} DoorInside */

/** The 5-byte head of every format-2 body: the format and a key epoch (1 for key stores). */
function head() {
  const out = new Uint8Array(HEAD_BYTES);
  out[0] = FORMAT;
  new DataView(out.buffer).setUint32(1, 1);
  return out;
}

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
 * The parts of a door body.
 * @param {Uint8Array} bytes
 */
function doorParts(bytes) {
  if (bytes.length < HEAD_BYTES + 2 || bytes[0] !== FORMAT) throw new SyncError('integrity', 'a door of this account is malformed');
  const lockLength = new DataView(bytes.buffer, bytes.byteOffset).getUint16(HEAD_BYTES);
  const at = HEAD_BYTES + 2 + lockLength;
  if (bytes.length < at + POINT_BYTES + SEAL_OVERHEAD) throw new SyncError('integrity', 'a door of this account is malformed');
  return { lock: bytes.subarray(HEAD_BYTES + 2, at), inside: bytes.subarray(at) };
}

/**
 * The key an inside is sealed under: ECDH of one side's private key and
 * the other's public key, through HKDF bound to the door and the
 * ephemeral key.
 * @param {CryptoKey} privateKey @param {CryptoKey} publicKey @param {Uint8Array} ephemeral raw @param {string} keySalt @param {string} location
 */
async function insideKey(privateKey, publicKey, ephemeral, keySalt, location) {
  const shared = new Uint8Array(await subtle.deriveBits({ name: 'ECDH', public: publicKey }, privateKey, 256));
  return aesKey(await derive(shared, LABEL.doorInside, keySalt, location, ephemeral));
}

/**
 * An inside sealed to a door's public key, padded so the whole door is as
 * long as an app store's body could be.
 * @param {Uint8Array} doorPublic raw @param {DoorInside} inside @param {string} keySalt @param {string} location @param {number} lockLength
 */
async function sealInside(doorPublic, inside, keySalt, location, lockLength) {
  const pair = /** @type {CryptoKeyPair} */ (await subtle.generateKey(ECDH, true, ['deriveBits']));
  const ephemeral = new Uint8Array(await subtle.exportKey('raw', pair.publicKey));
  const key = await insideKey(pair.privateKey, await subtle.importKey('raw', source(doorPublic), ECDH, false, []), ephemeral, keySalt, location);
  const json = utf8(JSON.stringify(inside));
  const fixed = HEAD_BYTES + 2 + lockLength + POINT_BYTES + SEAL_OVERHEAD;
  // The smallest length an app body can have that holds this door: 33 + a padded length.
  const total = HEAD_BYTES + SEAL_OVERHEAD + Math.max(PAD_FLOOR, padme(fixed + 4 + json.length - HEAD_BYTES - SEAL_OVERHEAD));
  const plain = new Uint8Array(total - fixed);
  new DataView(plain.buffer).setUint32(0, json.length);
  plain.set(json, 4);
  return concat(ephemeral, await seal(key, plain, context(LABEL.doorInside, keySalt, location)));
}

/** @param {CryptoKey} privateKey @param {Uint8Array} bytes the inside part @param {string} keySalt @param {string} location @returns {Promise<DoorInside>} */
async function openInside(privateKey, bytes, keySalt, location) {
  const ephemeral = bytes.slice(0, POINT_BYTES);
  let publicKey;
  try {
    publicKey = await subtle.importKey('raw', source(ephemeral), ECDH, false, []);
  } catch (cause) {
    throw new SyncError('decrypt_failed', 'a door of this account does not open', { cause });
  }
  const key = await insideKey(privateKey, publicKey, ephemeral, keySalt, location);
  const inside = parseJson(unpad(await open(key, bytes.subarray(POINT_BYTES), context(LABEL.doorInside, keySalt, location))));
  if (typeof inside?.ring !== 'string' || typeof inside.ark !== 'string' || !Number.isSafeInteger(inside.version)) throw new SyncError('integrity', 'a door of this account is malformed');
  return inside;
}

/**
 * Reads and opens the door of `door`'s secret: where it leads, or `null`
 * when there is no door there.
 * @param {import('./stores.js').Stores} stores @param {string} keySalt @param {DoorSecret} door
 * @returns {Promise<DoorInside|null>}
 */
export async function openDoor(stores, keySalt, door) {
  const location = await doorLocation(door, keySalt);
  const found = await stores.get(location);
  if (!found || 'notModified' in found) return null;
  const { lock, inside } = doorParts(found.data);
  const pkcs8 = await open(await doorKek(door, keySalt), lock, context(LABEL.doorLock, keySalt, location));
  let privateKey;
  try {
    privateKey = await subtle.importKey('pkcs8', source(pkcs8), ECDH, false, ['deriveBits']);
  } catch (cause) {
    throw new SyncError('integrity', 'a door of this account holds no key', { cause });
  }
  return openInside(privateKey, inside, keySalt, location);
}

/**
 * The keyring a secret's door leads to, or `null` when there is no door.
 * @param {import('./stores.js').Stores} stores @param {string} keySalt @param {DoorSecret} door
 */
export async function keyringBehind(stores, keySalt, door) {
  const inside = await openDoor(stores, keySalt, door);
  return inside && Keyring.read(stores, keySalt, inside);
}

export class Keyring {
  /** @type {Map<number, Promise<CryptoKey>>} */
  #dataKeys = new Map();

  /**
   * @param {import('./stores.js').Stores} stores @param {string} keySalt
   * @param {string} location @param {Uint8Array} ark @param {AccountKeys} content @param {string|null} token the keyring store's token as read
   */
  constructor(stores, keySalt, location, ark, content, token) {
    this.stores = stores;
    this.keySalt = keySalt;
    this.location = location;
    this.ark = ark;
    this.content = content;
    this.token = token;
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
   * The `Sync-Meta` of a key store (the keyring or a door): shaped like a
   * new app store's, sealed under a key from the name key, so the server
   * cannot tell key stores from app stores by their metadata, and devices
   * can (whichever keyring version they hold).
   * @param {string} location
   */
  async keyStoreMeta(location) {
    const sealed = await seal(await this.#marker(), pad(utf8('{}'), META_FLOOR), context(LABEL.keyStore, location));
    // Shaped like a new store's one wrap: key epoch 1, the current data key epoch, then sealed-looking bytes.
    const wrap = randomBytes(68);
    new DataView(wrap.buffer).setUint32(0, 1);
    new DataView(wrap.buffer).setUint32(4, this.epoch);
    return `${FORMAT}.${toBase64url(wrap)}.1.${toBase64url(sealed)}`;
  }

  /** Whether `meta` marks the store at `location` as one of this account's key stores. @param {string} location @param {string} meta */
  async isKeyStore(location, meta) {
    const parts = meta.split('.');
    if (parts.length !== 4 || /[^A-Za-z0-9_-]/.test(parts[3])) return false;
    return open(await this.#marker(), fromBase64url(parts[3]), context(LABEL.keyStore, location)).then(
      () => true,
      () => false,
    );
  }

  async #marker() {
    return aesKey(await derive(fromBase64url(this.content.nameKey), LABEL.keyStore));
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
    if (bytes.length < HEAD_BYTES + SEAL_OVERHEAD || bytes[0] !== FORMAT) throw new SyncError('integrity', 'the keyring is malformed');
    const ark = fromBase64url(inside.ark);
    const content = parseJson(unpad(await open(await aesKey(ark), bytes.subarray(HEAD_BYTES), context(LABEL.keyring, keySalt, inside.ring))));
    if (!Number.isSafeInteger(content?.version) || content.version !== inside.version || typeof content.nameKey !== 'string') {
      throw new SyncError('integrity', 'the keyring does not match the door that leads to it');
    }
    const kinds = Array.isArray(content.doors) ? content.doors.map((/** @type {any} */ d) => d?.kind) : [null];
    const epochs = Object.keys(content.dataKeys ?? {});
    if (kinds.some((/** @type {unknown} */ k) => k !== 'passphrase' && k !== 'recovery') || new Set(kinds).size !== kinds.length || !Number.isSafeInteger(content.epoch) || !epochs.includes(String(content.epoch))) {
      throw new SyncError('integrity', 'the keyring is malformed (its doors or data keys)');
    }
    return new Keyring(stores, keySalt, inside.ring, ark, content, found.token);
  }

  /**
   * A new account's keyring: one data key, a name key, and the
   * passphrase's door.
   * @param {import('./stores.js').Stores} stores @param {string} keySalt @param {Uint8Array} passphrase the passphrase's secret
   */
  static async create(stores, keySalt, passphrase) {
    const empty = new Keyring(stores, keySalt, '', new Uint8Array(0), { version: 0, epoch: 0, dataKeys: {}, nameKey: toBase64url(randomBytes(32)), doors: [] }, null);
    return (await empty.rotate({ passphrase })).keyring;
  }

  /**
   * A new keyring with a new data key epoch (and a new root key and
   * location). The passphrase door is made anew (a new key pair, locked
   * under `passphrase`: the current passphrase's secret, or a new one's);
   * a new recovery code's door replaces the old one; otherwise the
   * recovery door is kept and pointed at the new keyring.
   * `stale_keyring` when this keyring is no longer the current one
   * (another device rotated): read it again and retry. The keyring and
   * doors are written here; `finish()` then deletes the doors replaced
   * and the old keyring, or `abort()` points the old doors back and
   * deletes what was made.
   * @param {{passphrase: Uint8Array, recovery?: Uint8Array, identity?: import('./identity.js').IdentityKeys, formerIdentity?: import('./identity.js').IdentityKeys}} secrets
   *   `identity`: new identity keys (the account's first, or a rotation's, with the keys they replace in `formerIdentity`)
   */
  async rotate({ passphrase, recovery, identity, formerIdentity }) {
    const epoch = this.epoch + 1;
    /** @type {DoorSecret[]} */
    const add = [{ kind: 'passphrase', secret: passphrase }];
    if (recovery) add.push({ kind: 'recovery', secret: recovery });
    const replaced = new Set(add.map((d) => d.kind));
    const kept = this.content.doors.filter((d) => !replaced.has(d.kind));
    /** @type {{secret: DoorSecret, ref: DoorRef, privateKey: CryptoKey, publicKey: CryptoKey}[]} */
    const fresh = [];
    for (const secret of add) {
      const pair = /** @type {CryptoKeyPair} */ (await subtle.generateKey(ECDH, true, ['deriveBits']));
      const raw = new Uint8Array(await subtle.exportKey('raw', pair.publicKey));
      fresh.push({ secret, privateKey: pair.privateKey, publicKey: pair.publicKey, ref: { kind: secret.kind, location: await doorLocation(secret, this.keySalt), public: toBase64url(raw) } });
    }
    const location = VAULT_PREFIX + toHex(randomBytes(32));
    if (this.location) {
      // Claim this keyring for the rotation (rewritten as it is, on the token read): only one device rotates from it.
      try {
        const token = await this.#write(this.location, this.ark, this.content, this.token === null ? { ifNoneMatch: '*' } : { ifMatch: this.token });
        this.token = token;
      } catch (error) {
        if (error instanceof SyncError && (error.status === 412 || error.status === 404)) {
          throw new SyncError('stale_keyring', 'another device changed the keys since this one read them: open the vault again', { cause: error });
        }
        throw error;
      }
    }
    /** @type {AccountKeys} */
    const content = {
      version: this.version + 1,
      epoch,
      dataKeys: { ...this.content.dataKeys, [String(epoch)]: toBase64url(randomBytes(32)) },
      nameKey: this.content.nameKey,
      doors: [...kept, ...fresh.map((f) => f.ref)],
      identity: identity ?? this.content.identity,
      formerIdentities: [...(this.content.formerIdentities ?? []), ...(formerIdentity ? [formerIdentity] : [])],
    };
    const next = new Keyring(this.stores, this.keySalt, location, randomBytes(32), content, null);
    next.token = await next.#write(location, next.ark, content, { ifNoneMatch: '*' });
    /** @type {DoorKind[]} doors the server no longer has */
    const missing = [];
    const order = (/** @type {DoorRef} */ d) => (d.kind === 'recovery' ? 0 : 1);
    for (const ref of [...content.doors].sort((a, b) => order(a) - order(b))) {
      const made = fresh.find((f) => f.ref === ref);
      if (!(await next.#pointDoor(ref, made && { secret: made.secret, privateKey: made.privateKey }))) missing.push(ref.kind);
    }
    // Doors replaced at another location (a new passphrase or code) go at the end.
    const dropped = this.content.doors.filter((d) => replaced.has(d.kind) && !fresh.some((f) => f.ref.location === d.location));
    return {
      keyring: next,
      missing,
      finish: async () => {
        for (const d of dropped) await this.stores.delete(d.location, { ifMatch: '*' }).catch(ignoreMissing);
        if (this.location) await this.stores.delete(this.location, { ifMatch: '*' }).catch(ignoreMissing);
      },
      /** @param {Uint8Array} oldPassphrase the secret the old passphrase door is made again with */
      abort: async (oldPassphrase) => {
        const old = this.content.doors.find((d) => d.kind === 'passphrase');
        for (const ref of kept) await this.#pointDoor(ref);
        for (const f of fresh) if (f.ref.location !== old?.location) await this.stores.delete(f.ref.location, { ifMatch: '*' }).catch(ignoreMissing);
        if (old) await this.#remakeDoor(old, { kind: 'passphrase', secret: oldPassphrase });
        await this.stores.delete(location, { ifMatch: '*' }).catch(ignoreMissing);
      },
    };
  }

  /**
   * Makes a door again for this keyring, with a new key pair (its
   * reference in the keyring keeps the old public key, which only abort
   * uses: the door is then the one this keyring's holders come in by).
   * @param {DoorRef} ref @param {DoorSecret} secret
   */
  async #remakeDoor(ref, secret) {
    const pair = /** @type {CryptoKeyPair} */ (await subtle.generateKey(ECDH, true, ['deriveBits']));
    const raw = new Uint8Array(await subtle.exportKey('raw', pair.publicKey));
    await this.#pointDoor({ ...ref, public: toBase64url(raw) }, { secret, privateKey: pair.privateKey });
  }

  /**
   * Writes a keyring (this or another) sealed under `ark`; returns its token.
   * @param {string} location @param {Uint8Array} ark @param {AccountKeys} content @param {{ifMatch?: string, ifNoneMatch?: '*'}} condition
   */
  async #write(location, ark, content, condition) {
    const sealed = await seal(await aesKey(ark), pad(utf8(JSON.stringify(content))), context(LABEL.keyring, this.keySalt, location));
    const state = await this.stores.put(location, concat(head(), sealed), { ...condition, meta: await this.keyStoreMeta(location) });
    return state.token;
  }

  /**
   * Points a door at this keyring: a new door (its secret and private key
   * given) is made with its lock; an existing one keeps its lock and gets
   * a new inside, sealed to its public key. False when an existing door is
   * gone (the server dropped it).
   * @param {DoorRef} ref @param {{secret: DoorSecret, privateKey: CryptoKey}} [made]
   */
  async #pointDoor(ref, made) {
    const inside = { ring: this.location, ark: toBase64url(this.ark), version: this.version };
    const meta = await this.keyStoreMeta(ref.location);
    for (let attempt = 0; attempt < 5; attempt++) {
      const found = await this.stores.get(ref.location);
      const current = found && !('notModified' in found) ? found : null;
      let lock;
      if (made) {
        const pkcs8 = new Uint8Array(await subtle.exportKey('pkcs8', made.privateKey));
        lock = await seal(await doorKek(made.secret, this.keySalt), pkcs8, context(LABEL.doorLock, this.keySalt, ref.location));
      } else if (current) lock = doorParts(current.data).lock;
      else return false;
      const length = new Uint8Array(2);
      new DataView(length.buffer).setUint16(0, lock.length);
      const body = concat(head(), length, lock, await sealInside(fromBase64url(ref.public), inside, this.keySalt, ref.location, lock.length));
      try {
        await this.stores.put(ref.location, body, current ? { ifMatch: current.token, meta } : { ifNoneMatch: '*', meta });
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

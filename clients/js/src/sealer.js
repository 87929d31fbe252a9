/**
 * Per-store keys and the one place that seals and opens what a store
 * holds. A store has key epochs (a new one after the account's keys were
 * rotated, or after a member was removed); each epoch's key is random and
 * travels wrapped: under the account's data keys in the store's metadata,
 * or (sharing) sealed to a member. A `Sealer` binds every ciphertext to
 * its store's location, and entries to the store's incarnation too.
 *
 *   body   = 2 ‖ epoch u32 ‖ AES-GCM(store key, pad(header length u32 ‖ header JSON ‖ data))
 *   entry  = 2 ‖ epoch u32 ‖ AES-GCM(store key, pad(writer 8 bytes ‖ counter u32 ‖ data))
 *   meta   = "2." base64url(wraps) "." epoch "." base64url(AES-GCM(store key, pad(JSON)))
 *   wrap   = epoch u32 ‖ data-key epoch u32 ‖ AES-GCM(data key, store key)
 */

import { SyncError } from './errors.js';
import { asBytes, concat, fromBase64url, fromHex, fromUtf8, toBase64url, toHex, utf8 } from './bytes.js';
import { aesKey, META_FLOOR, open, pad, randomBytes, seal, unpad } from './crypto.js';
import { context, FORMAT, LABEL } from './labels.js';

const WRAP_BYTES = 8 + 12 + 32 + 16;

/**
 * What wraps and unwraps store keys: the account's keyring.
 * @typedef {{epoch: number, dataKey(epoch: number): Promise<CryptoKey>}} KeyWrapper
 */

/** The keys of one store, by epoch. */
export class StoreKeys {
  /**
   * @param {string} location
   * @param {Map<number, Uint8Array>} raw the keys by epoch
   * @param {{epoch: number, dataEpoch: number, sealed: Uint8Array}[]} wraps as found in (or made for) the metadata
   * @param {{shared?: boolean}} [options] `shared`: keys from an envelope (a member's): the
   *   wraps are the owners', carried along unopened, and only an owner makes new epochs
   */
  constructor(location, raw, wraps, options = {}) {
    this.location = location;
    this.raw = raw;
    this.wraps = wraps;
    this.shared = options.shared === true;
    /** @type {Map<number, Promise<CryptoKey>>} */
    this.cryptoKeys = new Map();
  }

  /** The newest epoch. */
  get current() {
    return Math.max(...this.raw.keys());
  }

  /** @param {number} epoch */
  key(epoch) {
    const raw = this.raw.get(epoch);
    if (!raw) throw new SyncError('decrypt_failed', `this device has no key of epoch ${epoch} for this store`);
    let key = this.cryptoKeys.get(epoch);
    if (!key) this.cryptoKeys.set(epoch, (key = aesKey(raw)));
    return key;
  }

  /** A new store's keys: one random key, wrapped under the current data key. @param {string} location @param {KeyWrapper} ring */
  static async create(location, ring) {
    const keys = new StoreKeys(location, new Map(), []);
    await keys.#add(1, ring);
    return keys;
  }

  /**
   * The keys in a store's metadata wraps, opened with the keyring.
   * @param {string} location @param {Uint8Array} wrapBytes @param {KeyWrapper} ring
   */
  static async unwrap(location, wrapBytes, ring) {
    const wraps = parseWraps(wrapBytes);
    const raw = new Map();
    for (const { epoch, dataEpoch, sealed } of wraps) {
      raw.set(epoch, await open(await ring.dataKey(dataEpoch), sealed, context(LABEL.storeKey, location, epoch, dataEpoch)));
    }
    return new StoreKeys(location, raw, wraps);
  }

  /**
   * A member's keys, from its envelope; the owners' wraps go along as they are.
   * @param {string} location @param {Map<number, Uint8Array>} raw @param {Uint8Array} wrapBytes
   */
  static shared(location, raw, wrapBytes) {
    return new StoreKeys(location, raw, parseWraps(wrapBytes), { shared: true });
  }

  /**
   * These keys and a new epoch, whatever the data key (an owner re-keys
   * the store after removing a member).
   * @param {KeyWrapper} ring
   */
  async rekeyed(ring) {
    const next = new StoreKeys(this.location, new Map(this.raw), [...this.wraps]);
    await next.#add(this.current + 1, ring);
    return next;
  }

  /**
   * These keys, with a new epoch when the newest was wrapped under a data
   * key older than the keyring's current one (the account's keys were
   * rotated since): what is written from now on is then out of reach of
   * anything from before the rotation.
   * @param {KeyWrapper} ring
   */
  async fresh(ring) {
    if (this.shared) return this;
    const newest = this.wraps.find((w) => w.epoch === this.current);
    if (newest && newest.dataEpoch >= ring.epoch) return this;
    const next = new StoreKeys(this.location, new Map(this.raw), [...this.wraps]);
    await next.#add(this.current + 1, ring);
    return next;
  }

  /**
   * These keys with the newest one wrapped (again) under the keyring's
   * current data key, in the same epoch: for a shared store, whose members
   * hold that key, after the owner's own keys rotated (a new epoch would
   * lock them out; a re-key, `unshare` or `rekey`, gives one to all).
   * @param {KeyWrapper} ring
   */
  async rewrapped(ring) {
    if (this.shared) return this;
    const newest = this.wraps.find((w) => w.epoch === this.current);
    if (newest && newest.dataEpoch >= ring.epoch) return this;
    const raw = /** @type {Uint8Array} */ (this.raw.get(this.current));
    const sealed = await seal(await ring.dataKey(ring.epoch), raw, context(LABEL.storeKey, this.location, this.current, ring.epoch));
    const wraps = [...this.wraps.filter((w) => w.epoch !== this.current), { epoch: this.current, dataEpoch: ring.epoch, sealed }];
    return new StoreKeys(this.location, new Map(this.raw), wraps);
  }

  /** @param {number} epoch @param {KeyWrapper} ring */
  async #add(epoch, ring) {
    const raw = randomBytes(32);
    const sealed = await seal(await ring.dataKey(ring.epoch), raw, context(LABEL.storeKey, this.location, epoch, ring.epoch));
    this.raw.set(epoch, raw);
    this.wraps.push({ epoch, dataEpoch: ring.epoch, sealed });
  }

  /** The wraps as the metadata carries them. */
  wrapBytes() {
    return concat(
      ...this.wraps.map((w) => {
        const head = new Uint8Array(8);
        new DataView(head.buffer).setUint32(0, w.epoch);
        new DataView(head.buffer).setUint32(4, w.dataEpoch);
        return concat(head, w.sealed);
      }),
    );
  }
}

/**
 * The header sealed inside every body: the store's incarnation (random,
 * new when a store is made again), the version (1, 2, 3 … per write) and,
 * for documents, the clock of log entries folded in (writer → counter).
 * @typedef {{i: string, v: number, c: Record<string, number>}} BodyHeader
 */

/**
 * The metadata sealed into `Sync-Meta`: name, the app's metadata, the
 * body it belongs to (incarnation, version, SHA-256 of the body bytes)
 * and, on a shared store, its members (id and permission), which an
 * owner re-seals the keys to after removing one.
 * The author (`a`, an account id) signs it all (`s`); a shared store's
 * member list carries its own signature by an owner (`r`).
 * On a shared store the key wraps carry an owner's signature too (`w`).
 * @typedef {{n: string, m: any, i: string, v: number, h: string, u?: import('./authorship.js').Member[], r?: {by: string, s: string, n: number}, w?: {by: string, s: string}, a?: string, s?: string}} MetaContent
 */

/** @param {Uint8Array} bytes @param {string} what */
function epochOf(bytes, what) {
  if (bytes.length < 5 + 28 || bytes[0] !== FORMAT) throw new SyncError('decrypt_failed', `not a ${what} sealed by this library (format ${FORMAT})`);
  return new DataView(bytes.buffer, bytes.byteOffset).getUint32(1);
}

/** @param {number} epoch */
function head(epoch) {
  const out = new Uint8Array(5);
  out[0] = FORMAT;
  new DataView(out.buffer).setUint32(1, epoch);
  return out;
}

/** Seals and opens what one store holds. */
export class Sealer {
  /** @param {StoreKeys} keys */
  constructor(keys) {
    this.keys = keys;
    this.location = keys.location;
  }

  /** @param {BodyHeader} header @param {Uint8Array} data */
  async sealBody(header, data) {
    const epoch = this.keys.current;
    const json = utf8(JSON.stringify(header));
    const length = new Uint8Array(4);
    new DataView(length.buffer).setUint32(0, json.length);
    const plain = pad(concat(length, json, data));
    return concat(head(epoch), await seal(await this.keys.key(epoch), plain, context(LABEL.body, this.location, epoch)));
  }

  /** @param {Uint8Array} bytes @returns {Promise<{header: BodyHeader, data: Uint8Array}>} */
  async openBody(bytes) {
    const epoch = epochOf(bytes, 'body');
    const plain = unpad(await open(await this.keys.key(epoch), bytes.subarray(5), context(LABEL.body, this.location, epoch)));
    const length = new DataView(plain.buffer, plain.byteOffset).getUint32(0);
    const header = parseJson(plain.subarray(4, 4 + length), 'body header');
    if (typeof header?.i !== 'string' || !Number.isSafeInteger(header.v) || typeof header.c !== 'object' || header.c === null) {
      throw new SyncError('integrity', 'a body header is malformed');
    }
    return { header, data: plain.slice(4 + length) };
  }

  /** @param {MetaContent} content @param {number} maxBytes */
  async sealMeta(content, maxBytes) {
    const epoch = this.keys.current;
    const sealed = await seal(await this.keys.key(epoch), pad(utf8(JSON.stringify(content)), META_FLOOR), context(LABEL.meta, this.location, epoch));
    const text = `${FORMAT}.${toBase64url(this.keys.wrapBytes())}.${epoch}.${toBase64url(sealed)}`;
    if (text.length > maxBytes) {
      throw new SyncError('payload_too_large', `the metadata is too large once sealed (${text.length} of at most ${maxBytes} bytes): keep the name and meta to a few kilobytes`, { status: 413 });
    }
    return text;
  }

  /** @param {string} text @returns {Promise<MetaContent>} */
  async openMeta(text) {
    const { epoch, sealed } = parseMeta(text);
    const content = parseJson(unpad(await open(await this.keys.key(epoch), sealed, context(LABEL.meta, this.location, epoch))), 'metadata');
    if (typeof content?.n !== 'string' || typeof content.i !== 'string' || !Number.isSafeInteger(content.v) || typeof content.h !== 'string') {
      throw new SyncError('integrity', 'sealed metadata is malformed');
    }
    return content;
  }

  /**
   * An entry: its writer and counter, its author (an account id) and the
   * author's signature, then the data.
   * @param {string} incarnation @param {{writer: string, counter: number, author: string, signature: Uint8Array}} by
   * @param {Uint8Array|string} data
   */
  async sealEntry(incarnation, { writer, counter, author, signature }, data) {
    const epoch = this.keys.current;
    const name = utf8(author);
    if (name.length > 255 || signature.length !== 64) throw new SyncError('bad_request', 'an author id of at most 255 bytes and a P-256 signature');
    const tag = new Uint8Array(13);
    tag.set(fromHex(writer), 0);
    new DataView(tag.buffer).setUint32(8, counter);
    tag[12] = name.length;
    const plain = pad(concat(tag, name, signature, asBytes(data)));
    return concat(head(epoch), await seal(await this.keys.key(epoch), plain, context(LABEL.entry, this.location, incarnation, epoch)));
  }

  /** @param {string} incarnation @param {Uint8Array} bytes */
  async openEntry(incarnation, bytes) {
    const epoch = epochOf(bytes, 'log entry');
    const plain = unpad(await open(await this.keys.key(epoch), bytes.subarray(5), context(LABEL.entry, this.location, incarnation, epoch)));
    const length = plain.length >= 13 ? plain[12] : 0;
    if (plain.length < 13 + length + 64) throw new SyncError('integrity', 'a log entry is malformed');
    return {
      epoch,
      writer: toHex(plain.subarray(0, 8)),
      counter: new DataView(plain.buffer, plain.byteOffset).getUint32(8),
      author: fromUtf8(plain.subarray(13, 13 + length)),
      signature: plain.slice(13 + length, 13 + length + 64),
      data: plain.slice(13 + length + 64),
    };
  }
}

/**
 * The wraps of a store's metadata, unopened.
 * @param {Uint8Array} wrapBytes
 */
function parseWraps(wrapBytes) {
  if (wrapBytes.length === 0 || wrapBytes.length % WRAP_BYTES !== 0) throw new SyncError('integrity', 'a store\'s key wraps are malformed');
  const view = new DataView(wrapBytes.buffer, wrapBytes.byteOffset, wrapBytes.byteLength);
  const wraps = [];
  for (let at = 0; at < wrapBytes.length; at += WRAP_BYTES) {
    wraps.push({ epoch: view.getUint32(at), dataEpoch: view.getUint32(at + 4), sealed: wrapBytes.slice(at + 8, at + WRAP_BYTES) });
  }
  return wraps;
}

/** The parts of a format-2 `Sync-Meta` value. @param {string} text */
export function parseMeta(text) {
  const parts = text.split('.');
  if (parts.length !== 4 || parts[0] !== String(FORMAT) || !/^\d+$/.test(parts[2])) throw new SyncError('integrity', 'the store\'s metadata is not format-2 metadata');
  try {
    return { wraps: fromBase64url(parts[1]), epoch: Number(parts[2]), sealed: fromBase64url(parts[3]) };
  } catch (cause) {
    throw new SyncError('integrity', 'the store\'s metadata is not format-2 metadata', { cause });
  }
}

/** A new writer id (per document or log handle): 8 random bytes, hex. */
export const newWriter = () => toHex(randomBytes(8));

/**
 * A new incarnation id: the time it was made (6 bytes, ms) and 10 random
 * bytes, hex, so a device can tell an older incarnation from a newer one
 * (as far as the creators' clocks agree).
 */
export function newIncarnation() {
  const time = new Uint8Array(8);
  new DataView(time.buffer).setBigUint64(0, BigInt(Date.now()));
  return toHex(time.subarray(2)) + toHex(randomBytes(10));
}

/** @param {Uint8Array} bytes @param {string} what */
function parseJson(bytes, what) {
  try {
    return JSON.parse(fromUtf8(bytes));
  } catch (cause) {
    throw new SyncError('integrity', `the ${what} does not parse`, { cause });
  }
}

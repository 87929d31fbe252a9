/**
 * Cryptographic building blocks, all on WebCrypto (browsers and Node ≥ 20):
 * the passphrase KDF and its split into a server password and a
 * key-encryption key, AES-256-GCM sealing with bound context, Padmé length
 * padding, and recovery codes. The design is in README.md, "Encryption".
 */

import { SyncError } from './errors.js';
import { concat, toBase64url, utf8 } from './bytes.js';

const subtle = globalThis.crypto.subtle;

/**
 * WebCrypto's types want views of plain ArrayBuffers; ours always are.
 * @param {Uint8Array} bytes
 */
const source = (bytes) => /** @type {Uint8Array<ArrayBuffer>} */ (bytes);

/** The shortest passphrase accepted (the server's own minimum for passwords). */
export const MIN_PASSPHRASE = 8;

/** PBKDF2-SHA256 iterations for the passphrase; lower values are refused. */
export const MIN_ITERATIONS = 600_000;

/**
 * The id as the server compares it (SPEC §1): trimmed, ASCII lower-case.
 * @param {string} id
 */
export function normaliseId(id) {
  return id.trim().replace(/[A-Z]/g, (c) => c.toLowerCase());
}

/**
 * What a passphrase yields: the password the server sees (it cannot be
 * turned back into the passphrase or the key-encryption key) and the
 * key-encryption key, which never leaves the device.
 * @param {string} passphrase @param {string} id @param {number} [iterations]
 * @returns {Promise<{password: string, kek: CryptoKey}>}
 */
export async function fromPassphrase(passphrase, id, iterations = MIN_ITERATIONS) {
  if (!Number.isSafeInteger(iterations) || iterations < MIN_ITERATIONS) {
    throw new RangeError(`at least ${MIN_ITERATIONS} PBKDF2 iterations`);
  }
  if ([...passphrase].length < MIN_PASSPHRASE) {
    throw new SyncError('bad_request', `a passphrase has at least ${MIN_PASSPHRASE} characters`);
  }
  const material = await subtle.importKey('raw', utf8(passphrase), 'PBKDF2', false, ['deriveBits']);
  const salt = utf8(`sync-node/v1/passphrase/${normaliseId(id)}`);
  const master = await subtle.deriveBits({ name: 'PBKDF2', hash: 'SHA-256', salt, iterations }, material, 256);
  const hkdf = await subtle.importKey('raw', master, 'HKDF', false, ['deriveBits', 'deriveKey']);
  const password = toBase64url(new Uint8Array(await subtle.deriveBits(hkdfParams('sync-node/v1/server-password'), hkdf, 256)));
  return { password, kek: await aesKey(hkdf, 'sync-node/v1/key-encryption') };
}

/** A recovery code: 160 random bits as 8 groups of 4 base32 characters. */
export function newRecoveryCode() {
  const bytes = globalThis.crypto.getRandomValues(new Uint8Array(20));
  const alphabet = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'; // Crockford: no I, L, O, U
  let bits = 0;
  let value = 0;
  let out = '';
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  return out.match(/.{4}/g)?.join('-') ?? out;
}

/**
 * The key-encryption key a recovery code yields (the code carries 160
 * bits of entropy, so no slow KDF is needed).
 * @param {string} code
 */
export async function fromRecoveryCode(code) {
  const cleaned = code.toUpperCase().replace(/[^0-9A-Z]/g, '').replace(/[IL]/g, '1').replace(/O/g, '0');
  if (cleaned.length !== 32) throw new SyncError('bad_request', 'a recovery code has 32 characters');
  const hkdf = await subtle.importKey('raw', utf8(cleaned), 'HKDF', false, ['deriveKey']);
  return aesKey(hkdf, 'sync-node/v1/recovery');
}

/** A new random account data key (raw bytes, kept only wrapped at rest). */
export function newDataKey() {
  return globalThis.crypto.getRandomValues(new Uint8Array(32));
}

/** The content key a data key yields (non-extractable). @param {Uint8Array} dataKey */
export async function contentKey(dataKey) {
  const hkdf = await subtle.importKey('raw', source(dataKey), 'HKDF', false, ['deriveKey']);
  return aesKey(hkdf, 'sync-node/v1/content');
}

/**
 * AES-256-GCM with a random 96-bit IV: returns IV ‖ ciphertext ‖ tag. The
 * context (`aad`) is authenticated, so a ciphertext moved to another store,
 * version or purpose does not open.
 * @param {CryptoKey} key @param {Uint8Array} plaintext @param {string} aad
 */
export async function seal(key, plaintext, aad) {
  const iv = globalThis.crypto.getRandomValues(new Uint8Array(12));
  const sealed = await subtle.encrypt({ name: 'AES-GCM', iv, additionalData: utf8(aad) }, key, source(plaintext));
  return concat(iv, new Uint8Array(sealed));
}

/** @param {CryptoKey} key @param {Uint8Array} sealed @param {string} aad */
export async function open(key, sealed, aad) {
  if (sealed.length < 28) throw new SyncError('decrypt_failed', 'too short to be a sealed message');
  try {
    const plain = await subtle.decrypt({ name: 'AES-GCM', iv: source(sealed.subarray(0, 12)), additionalData: utf8(aad) }, key, source(sealed.subarray(12)));
    return new Uint8Array(plain);
  } catch (cause) {
    throw new SyncError('decrypt_failed', 'the data does not open with this key and context (wrong key, or tampered with)', { cause });
  }
}

/**
 * Padmé (Nikitin et al., 2019): the padded length leaks O(log log n) bits
 * of the length, with at most 12 % overhead.
 * @param {number} length
 */
export function padme(length) {
  if (length < 2) return length;
  const e = Math.floor(Math.log2(length));
  const s = Math.floor(Math.log2(e)) + 1;
  const mask = 2 ** (e - s) - 1;
  return Math.ceil(length / (mask + 1)) * (mask + 1);
}

/** Frames `data` with its length and pads the frame to Padmé. @param {Uint8Array} data */
export function pad(data) {
  const out = new Uint8Array(padme(data.length + 4));
  new DataView(out.buffer).setUint32(0, data.length);
  out.set(data, 4);
  return out;
}

/** @param {Uint8Array} padded */
export function unpad(padded) {
  const length = padded.length >= 4 ? new DataView(padded.buffer, padded.byteOffset).getUint32(0) : -1;
  if (length < 0 || length + 4 > padded.length) throw new SyncError('decrypt_failed', 'bad padding');
  return padded.slice(4, 4 + length);
}

/** @param {string} info */
function hkdfParams(info) {
  return { name: 'HKDF', hash: 'SHA-256', salt: new Uint8Array(32), info: utf8(info) };
}

/** @param {CryptoKey} hkdf @param {string} info */
function aesKey(hkdf, info) {
  return subtle.deriveKey(hkdfParams(info), hkdf, { name: 'AES-GCM', length: 256 }, false, ['encrypt', 'decrypt']);
}

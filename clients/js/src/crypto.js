/**
 * Cryptographic building blocks: Argon2id for passphrases (hash-wasm, the
 * one runtime dependency: WebCrypto has no memory-hard KDF), and on
 * WebCrypto HKDF-SHA256, HMAC-SHA256, SHA-256 and AES-256-GCM sealing
 * bound to a context, padding (a floor, then Padmé), passphrase rules and
 * recovery codes with a checksum. The design is in README.md, "Encryption".
 */

import { argon2id } from 'hash-wasm';
import { SyncError } from './errors.js';
import { concat, toHex, utf8 } from './bytes.js';
import { context, LABEL } from './labels.js';

const subtle = globalThis.crypto.subtle;

/**
 * WebCrypto's types want views of plain ArrayBuffers; ours always are.
 * @param {Uint8Array} bytes
 */
const source = (bytes) => /** @type {Uint8Array<ArrayBuffer>} */ (bytes);

/** Argon2id cost of format 2 (RFC 9106's second recommended option). */
export const ARGON2 = Object.freeze({ memoryKiB: 64 * 1024, iterations: 3, parallelism: 1 });

/** The smallest padded length of a sealed body or log entry. */
export const PAD_FLOOR = 256;
/** The smallest padded length of sealed metadata (it also carries its author's signature). */
export const META_FLOOR = 512;

/** Passphrase floor: at least this many characters (after NFKC) … */
export const MIN_PASSPHRASE = 12;
/** … of which at least this many different ones. */
export const MIN_DISTINCT = 5;

/** @param {number} n */
export const randomBytes = (n) => globalThis.crypto.getRandomValues(new Uint8Array(n));

/** @param {Uint8Array} bytes */
export async function sha256(bytes) {
  return new Uint8Array(await subtle.digest('SHA-256', source(bytes)));
}

/**
 * The id as the server compares it (SPEC §3): trimmed, ASCII lower-case.
 * @param {string} id
 */
export function normaliseId(id) {
  return id.trim().replace(/[A-Z]/g, (c) => c.toLowerCase());
}

/**
 * A passphrase as it is hashed: Unicode NFKC, so the same words typed on
 * two keyboards give the same keys.
 * @param {string} passphrase
 */
export function normalisePassphrase(passphrase) {
  if (typeof passphrase !== 'string') throw new SyncError('bad_request', 'the passphrase must be a string');
  return passphrase.normalize('NFKC');
}

/**
 * Refuses a passphrase below the floor (checked when one is chosen, never
 * when one is used): at least `MIN_PASSPHRASE` characters, `MIN_DISTINCT`
 * different ones, and not the id.
 * @param {string} passphrase @param {string} id
 */
export function checkNewPassphrase(passphrase, id) {
  const chars = [...normalisePassphrase(passphrase)];
  if (chars.length < MIN_PASSPHRASE || new Set(chars).size < MIN_DISTINCT || normaliseId(chars.join('')) === normaliseId(id)) {
    throw new SyncError('weak_passphrase', `a passphrase needs at least ${MIN_PASSPHRASE} characters, ${MIN_DISTINCT} of them different, and must not be the id (a few random words are best)`);
  }
}

/**
 * Argon2id(NFKC(passphrase), SHA-256(label ‖ server salt ‖ id)): the
 * secret everything of an account hangs from. Slow on purpose (64 MiB, 3
 * passes).
 * @param {string} passphrase @param {string} id @param {Uint8Array} serverSalt from `GET /v1/accounts/{id}/salt`
 */
export async function passphraseSecret(passphrase, id, serverSalt) {
  const salt = await sha256(context(LABEL.passphraseSalt, serverSalt, normaliseId(id)));
  return argon2id({
    password: utf8(normalisePassphrase(passphrase)),
    salt,
    iterations: ARGON2.iterations,
    memorySize: ARGON2.memoryKiB,
    parallelism: ARGON2.parallelism,
    hashLength: 32,
    outputType: 'binary',
  });
}

/**
 * HKDF-SHA256 of `secret` for `info` (a label, with framed parts).
 * @param {Uint8Array} secret @param {string} label @param {...(string|Uint8Array|number)} parts
 */
export async function derive(secret, label, ...parts) {
  const hkdf = await subtle.importKey('raw', source(secret), 'HKDF', false, ['deriveBits']);
  const bits = await subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt: new Uint8Array(32), info: source(context(label, ...parts)) }, hkdf, 256);
  return new Uint8Array(bits);
}

/** An AES-256-GCM key from 32 secret bytes (not extractable). @param {Uint8Array} bytes */
export function aesKey(bytes) {
  return subtle.importKey('raw', source(bytes), { name: 'AES-GCM', length: 256 }, false, ['encrypt', 'decrypt']);
}

/** Hex HMAC-SHA256. @param {Uint8Array} key @param {Uint8Array} message */
export async function hmacHex(key, message) {
  const k = await subtle.importKey('raw', source(key), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  return toHex(new Uint8Array(await subtle.sign('HMAC', k, source(message))));
}

/**
 * AES-256-GCM with a random 96-bit IV: IV ‖ ciphertext ‖ tag, bound to
 * `aad` (from `context`), so a ciphertext moved elsewhere does not open.
 * @param {CryptoKey} key @param {Uint8Array} plaintext @param {Uint8Array} aad
 */
export async function seal(key, plaintext, aad) {
  const iv = randomBytes(12);
  const sealed = await subtle.encrypt({ name: 'AES-GCM', iv, additionalData: source(aad) }, key, source(plaintext));
  return concat(iv, new Uint8Array(sealed));
}

/** @param {CryptoKey} key @param {Uint8Array} sealed @param {Uint8Array} aad */
export async function open(key, sealed, aad) {
  if (sealed.length < 28) throw new SyncError('decrypt_failed', 'too short to be a sealed message');
  try {
    const plain = await subtle.decrypt({ name: 'AES-GCM', iv: source(sealed.subarray(0, 12)), additionalData: source(aad) }, key, source(sealed.subarray(12)));
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

/**
 * Frames `data` with its length and pads the frame to `floor`, or above
 * it to a Padmé length.
 * @param {Uint8Array} data @param {number} [floor]
 */
export function pad(data, floor = PAD_FLOOR) {
  const out = new Uint8Array(Math.max(floor, padme(data.length + 4)));
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

const BASE32 = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'; // Crockford: no I, L, O, U

/**
 * A recovery code: 144 random bits and a 16-bit checksum, as 8 groups of
 * 4 base32 characters. Returns the code and its secret.
 */
export async function newRecoveryCode() {
  const secret = randomBytes(18);
  const bytes = concat(secret, (await sha256(secret)).subarray(0, 2));
  let bits = 0;
  let value = 0;
  let out = '';
  for (const b of bytes) {
    value = ((value << 8) | b) & 0xffff;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  return { code: /** @type {string[]} */ (out.match(/.{4}/g)).join('-'), secret };
}

/**
 * The secret of a recovery code, checked against its checksum, so a typo
 * is caught before anything is spent (the reset token, say).
 * @param {string} code
 */
export async function recoverySecret(code) {
  if (typeof code !== 'string') throw new SyncError('invalid_recovery_code', 'a recovery code is a string');
  const cleaned = code.toUpperCase().replace(/[\s-]/g, '').replace(/[IL]/g, '1').replace(/O/g, '0');
  if (cleaned.length !== 32 || /[^0-9A-Z]/.test(cleaned) || /U/.test(cleaned)) {
    throw new SyncError('invalid_recovery_code', 'a recovery code has 32 characters (8 groups of 4): check it');
  }
  const bytes = new Uint8Array(20);
  let bits = 0;
  let value = 0;
  let at = 0;
  for (const c of cleaned) {
    value = ((value << 5) | BASE32.indexOf(c)) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      bytes[at++] = (value >>> (bits - 8)) & 255;
      bits -= 8;
    }
  }
  const secret = bytes.slice(0, 18);
  const check = (await sha256(secret)).subarray(0, 2);
  if (check[0] !== bytes[18] || check[1] !== bytes[19]) {
    throw new SyncError('invalid_recovery_code', 'this recovery code has a typo (its checksum does not match): check each group');
  }
  return secret;
}

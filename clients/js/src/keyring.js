/**
 * The keyring: the account's data key, wrapped under each key-encryption
 * key that may open it (one per passphrase, one per recovery code), kept
 * in one store of the account. The server sees only ciphertext.
 */

import { SyncError } from './errors.js';
import { fromBase64url, fromUtf8, toBase64url, utf8 } from './bytes.js';
import { open, seal } from './crypto.js';

/** The store name the keyring is kept under (its key is derived, SPEC §3). */
export const KEYRING_NAME = 'sync-node/keyring';

/** @typedef {{kind: 'passphrase'|'recovery', wrapped: string}} Wrap */
/** @typedef {{v: 1, wraps: Wrap[]}} Keyring */

/** @param {string} keySalt @param {Wrap['kind']} kind */
const context = (keySalt, kind) => `sync-node/v1/wrap/${kind}/${keySalt}`;

/** @param {CryptoKey} kek @param {Uint8Array} dataKey @param {Wrap['kind']} kind @param {string} keySalt @returns {Promise<Wrap>} */
export async function wrap(kek, dataKey, kind, keySalt) {
  return { kind, wrapped: toBase64url(await seal(kek, dataKey, context(keySalt, kind))) };
}

/**
 * The data key, opened with the first wrap of `kind` that `kek` opens.
 * @param {Keyring} keyring @param {CryptoKey} kek @param {Wrap['kind']} kind @param {string} keySalt
 */
export async function unwrap(keyring, kek, kind, keySalt) {
  for (const w of keyring.wraps.filter((w) => w.kind === kind)) {
    try {
      return await open(kek, fromBase64url(w.wrapped), context(keySalt, kind));
    } catch {
      // Another passphrase's wrap (mid-change): try the next.
    }
  }
  throw new SyncError('decrypt_failed', kind === 'recovery' ? 'the recovery code does not open this account\'s keys' : 'the passphrase does not open this account\'s keys');
}

/** @param {Keyring} keyring */
export const encode = (keyring) => utf8(JSON.stringify(keyring));

/** @param {Uint8Array} bytes @returns {Keyring} */
export function decode(bytes) {
  /** @type {any} */
  let parsed;
  try {
    parsed = JSON.parse(fromUtf8(bytes));
  } catch (cause) {
    throw new SyncError('decrypt_failed', 'the keyring store is not a keyring', { cause });
  }
  if (parsed?.v !== 1 || !Array.isArray(parsed.wraps)) throw new SyncError('decrypt_failed', 'the keyring store is not a keyring');
  return parsed;
}

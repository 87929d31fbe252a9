/**
 * Every label of format 2 in one place: the HKDF `info` strings keys are
 * derived with, and the associated data every sealed value is bound to
 * (`context`), so that a ciphertext moved to another purpose, store,
 * incarnation, author or position does not open. A label names a purpose;
 * the parts after it are length-framed, so no two contexts collide.
 */

import { concat, utf8 } from './bytes.js';

/** The client's data format: bodies, metadata, entries and keyrings start with it. */
export const FORMAT = 2;

/** Store keys of format-2 stores (a vault's own and those shared with it) start with this. */
export const VAULT_PREFIX = 'v2.';

const v2 = 'sync-node/v2/';

export const LABEL = Object.freeze({
  /** Argon2id salt: SHA-256(label ‖ server salt ‖ normalised id). */
  passphraseSalt: `${v2}passphrase-salt`,
  /** HKDF(master): the password the server sees. */
  serverPassword: `${v2}server-password`,
  /** HKDF(master or recovery secret): the key that locks a door. */
  doorKek: `${v2}door-kek`,
  /** HKDF(master or recovery secret): where the door is. */
  doorLocation: `${v2}door-location`,
  /** A door's lock (its door key, sealed under the kek). */
  doorLock: `${v2}door-lock`,
  /** A door's inside (where the keyring is, and the keyring's root key). */
  doorInside: `${v2}door-inside`,
  /** The keyring: data keys, the name key, the doors. */
  keyring: `${v2}keyring`,
  /** HKDF(name key): the key that marks the metadata of the account's key stores. */
  keyStore: `${v2}key-store`,
  /** HMAC(name key): a store's location from its name. */
  storeName: `${v2}store-name`,
  /** A store key wrapped under a data key (in the store's metadata). */
  storeKey: `${v2}store-key`,
  body: `${v2}body`,
  meta: `${v2}meta`,
  entry: `${v2}log-entry`,
  /** HKDF(name key): the key queued writes and unconfirmed entries are sealed under on the device. */
  deviceKey: `${v2}device-key`,
  /** HKDF(name key): the tag that says which account a queued record is for. */
  deviceTag: `${v2}device-tag`,
  queue: `${v2}queue`,
  /** What a published identity's signatures cover. */
  identity: `${v2}identity`,
  /** SHA-512 input of a fingerprint. */
  fingerprint: `${v2}fingerprint`,
  /** HKDF(ECDH) of an envelope, and what its signature covers. */
  envelope: `${v2}envelope`,
  /** What an author signs: a body's metadata (which holds the body's hash), a log entry, a member list. */
  metaSignature: `${v2}meta-signature`,
  entrySignature: `${v2}entry-signature`,
  roster: `${v2}roster`,
  wraps: `${v2}wraps`,
  /** HKDF(link secret): the link's id, verifier and key; what a link envelope is bound to and signed over. */
  linkId: `${v2}link-id`,
  linkVerifier: `${v2}link-verifier`,
  linkKey: `${v2}link-key`,
  link: `${v2}link`,
  linkSignature: `${v2}link-signature`,
  envelopeSignature: `${v2}envelope-signature`,
  outbox: `${v2}outbox`,
});

/**
 * The associated data for `label` and its parts: the label, then each part
 * as a 4-byte big-endian length and its bytes (strings as UTF-8).
 * @param {string} label @param {...(string|Uint8Array|number)} parts
 */
export function context(label, ...parts) {
  /** @type {Uint8Array[]} */
  const framed = [utf8(label)];
  for (const part of parts) {
    const bytes = typeof part === 'string' ? utf8(part) : typeof part === 'number' ? utf8(String(part)) : part;
    const length = new Uint8Array(4);
    new DataView(length.buffer).setUint32(0, bytes.length);
    framed.push(length, bytes);
  }
  return concat(...framed);
}

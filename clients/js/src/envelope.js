/**
 * Envelopes (format 2, SPEC §10.2): a store's keys sealed to one member's
 * identity and signed by the member who shares. The envelope is ECDH
 * (an ephemeral key and the grantee's agreement key) through HKDF to an
 * AES-GCM key; inside, the sharer's id, the store, its key epochs, the
 * permission and the grantee's fingerprint, with the sharer's signature
 * over all of it, so the server can neither read, forge, move nor replay
 * an envelope to someone else.
 *
 *   envelope = 2 ‖ ephemeral public key ‖ AES-GCM(pad({from, location, epoch, keys, permission, grantee, sig}))
 */

import { SyncError } from './errors.js';
import { concat, fromBase64url, fromUtf8, toBase64url, utf8 } from './bytes.js';
import { aesKey, derive, open, pad, seal, unpad } from './crypto.js';
import { context, FORMAT, LABEL } from './labels.js';
import { agreementKey, sign, verify } from './identity.js';

const subtle = globalThis.crypto.subtle;
/** @param {Uint8Array} bytes */
const source = (bytes) => /** @type {Uint8Array<ArrayBuffer>} */ (bytes);
const AGREE = { name: 'ECDH', namedCurve: 'P-256' };
const POINT_BYTES = 65;

/** @typedef {{from: string, location: string, epoch: number, keys: Record<string, string>, permission: string, grantee: string, sig: string}} EnvelopeContent */

/** A store's keys by epoch, in one canonical string (what signatures cover). @param {Record<string, string>} keys */
export const canonicalKeys = (keys) => Object.keys(keys).sort((a, b) => Number(a) - Number(b)).map((e) => `${e}:${keys[e]}`).join(',');

/** What the sharer signs. @param {Omit<EnvelopeContent, 'sig'|'from'> & {from: string}} c */
function statement(c) {
  return context(LABEL.envelopeSignature, c.from, c.location, c.epoch, c.permission, c.grantee, canonicalKeys(c.keys));
}

/** @param {CryptoKey} privateKey @param {CryptoKey} publicKey @param {Uint8Array} ephemeral @param {string} location @param {string} grantee */
async function envelopeKey(privateKey, publicKey, ephemeral, location, grantee) {
  const shared = new Uint8Array(await subtle.deriveBits({ name: 'ECDH', public: publicKey }, privateKey, 256));
  return aesKey(await derive(shared, LABEL.envelope, location, grantee, ephemeral));
}

/**
 * Seals a store's keys to a grantee.
 * @param {{from: string, location: string, keys: Map<number, Uint8Array>, permission: string,
 *   grantee: import('./identity.js').Identity, signer: import('./identity.js').IdentityKeys}} what
 */
export async function sealEnvelope({ from, location, keys, permission, grantee, signer }) {
  /** @type {Record<string, string>} */
  const raw = {};
  for (const [epoch, key] of keys) raw[String(epoch)] = toBase64url(key);
  const content = { from, location, epoch: Math.max(...keys.keys()), keys: raw, permission, grantee: grantee.fingerprint };
  const sig = toBase64url(await sign(signer, statement(content)));
  const pair = /** @type {CryptoKeyPair} */ (await subtle.generateKey(AGREE, true, ['deriveBits']));
  const ephemeral = new Uint8Array(await subtle.exportKey('raw', pair.publicKey));
  const theirs = await subtle.importKey('raw', source(grantee.agree), AGREE, false, []);
  const key = await envelopeKey(pair.privateKey, theirs, ephemeral, location, grantee.fingerprint);
  const sealed = await seal(key, pad(utf8(JSON.stringify({ ...content, sig }))), context(LABEL.envelope, location));
  return concat(new Uint8Array([FORMAT]), ephemeral, sealed);
}

/**
 * Opens an envelope addressed to this account (`me`: its identity keys
 * and fingerprint) for the store at `location`. The signature is checked
 * by `checkSignature` once the sharer's identity is known.
 * @param {Uint8Array} bytes @param {import('./identity.js').IdentityKeys} me @param {string} fingerprint @param {string} location
 * @returns {Promise<EnvelopeContent>}
 */
export async function openEnvelope(bytes, me, fingerprint, location) {
  if (bytes.length < 1 + POINT_BYTES + 28 || bytes[0] !== FORMAT) throw new SyncError('integrity', 'an envelope is malformed');
  const ephemeral = bytes.slice(1, 1 + POINT_BYTES);
  let publicKey;
  try {
    publicKey = await subtle.importKey('raw', source(ephemeral), AGREE, false, []);
  } catch (cause) {
    throw new SyncError('decrypt_failed', 'an envelope does not open', { cause });
  }
  const key = await envelopeKey(await agreementKey(me), publicKey, ephemeral, location, fingerprint);
  /** @type {any} */
  let content;
  try {
    content = JSON.parse(fromUtf8(unpad(await open(key, bytes.subarray(1 + POINT_BYTES), context(LABEL.envelope, location)))));
  } catch (cause) {
    if (cause instanceof SyncError) throw cause;
    throw new SyncError('integrity', 'an envelope does not parse', { cause });
  }
  if (content?.location !== location || content.grantee !== fingerprint || typeof content.from !== 'string' || typeof content.sig !== 'string' || !Number.isSafeInteger(content.epoch) || typeof content.keys !== 'object') {
    throw new SyncError('integrity', 'an envelope was made for another store or another member');
  }
  return content;
}

/** Whether the sharer's signing key signed this envelope. @param {EnvelopeContent} content @param {Uint8Array} sharerSign */
export async function checkSignature(content, sharerSign) {
  const { sig, ...signed } = content;
  if (!(await verify(sharerSign, fromBase64url(sig), statement(signed)))) {
    throw new SyncError('integrity', `an envelope claims to come from ${content.from} but is not signed by their identity`);
  }
}

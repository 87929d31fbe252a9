/**
 * Identities (format 2, SPEC §10.1): each account has a signing key pair
 * (ECDSA P-256) and a key-agreement key pair (ECDH P-256), their private
 * halves in the keyring (so the passphrase and the recovery code both
 * reach them). The published identity carries both public keys and is
 * signed by its signing key over them and the account's id (which it does
 * not contain: the server keeps only hashes of ids); a rotation is also
 * signed by the previous signing key, so a device that pinned the old one
 * follows it. P-256, not X25519/Ed25519: WebCrypto has it without caveat
 * in Node 20 and every current browser (Ed25519 and X25519 only from
 * Node 20.19.3 / Chromium 133-137).
 *
 * A fingerprint is 60 digits in 12 groups of 5 (as Signal and Etebase
 * show), from SHA-512 over the id and both public keys: two people
 * compare it out of band before sealing anything to each other.
 */

import { SyncError } from './errors.js';
import { fromBase64url, fromUtf8, toBase64url, utf8 } from './bytes.js';
import { normaliseId } from './crypto.js';
import { context, LABEL } from './labels.js';

const subtle = globalThis.crypto.subtle;
/** @param {Uint8Array} bytes */
const source = (bytes) => /** @type {Uint8Array<ArrayBuffer>} */ (bytes);
const SIGN = { name: 'ECDSA', namedCurve: 'P-256' };
const SIGNING = { name: 'ECDSA', hash: 'SHA-256' };
const AGREE = { name: 'ECDH', namedCurve: 'P-256' };

/** @typedef {{sign: string, agree: string, signPublic: string, agreePublic: string}} IdentityKeys private halves (PKCS#8) and public halves (raw), base64url */
/** @typedef {{id: string, sign: Uint8Array, agree: Uint8Array, previous: Uint8Array|null, fingerprint: string}} Identity a verified public identity */

/** A new identity's key pairs. @returns {Promise<IdentityKeys>} */
export async function newIdentityKeys() {
  const sign = /** @type {CryptoKeyPair} */ (await subtle.generateKey(SIGN, true, ['sign', 'verify']));
  const agree = /** @type {CryptoKeyPair} */ (await subtle.generateKey(AGREE, true, ['deriveBits']));
  const b64 = async (/** @type {'pkcs8'|'raw'} */ format, /** @type {CryptoKey} */ key) => toBase64url(new Uint8Array(await subtle.exportKey(format, key)));
  return { sign: await b64('pkcs8', sign.privateKey), agree: await b64('pkcs8', agree.privateKey), signPublic: await b64('raw', sign.publicKey), agreePublic: await b64('raw', agree.publicKey) };
}

/** The signing private key. @param {IdentityKeys} keys */
export function signingKey(keys) {
  return subtle.importKey('pkcs8', source(fromBase64url(keys.sign)), SIGN, false, ['sign']);
}

/** The key-agreement private key. @param {IdentityKeys} keys */
export function agreementKey(keys) {
  return subtle.importKey('pkcs8', source(fromBase64url(keys.agree)), AGREE, false, ['deriveBits']);
}

/** Signs `message` (a context) with an identity's signing key. @param {IdentityKeys} keys @param {Uint8Array} message */
export async function sign(keys, message) {
  return new Uint8Array(await subtle.sign(SIGNING, await signingKey(keys), source(message)));
}

/** Whether `signature` over `message` verifies under a raw signing public key. @param {Uint8Array} publicRaw @param {Uint8Array} signature @param {Uint8Array} message */
export async function verify(publicRaw, signature, message) {
  try {
    const key = await subtle.importKey('raw', source(publicRaw), SIGN, false, ['verify']);
    return await subtle.verify(SIGNING, key, source(signature), source(message));
  } catch {
    return false;
  }
}

/** @param {string} id @param {Uint8Array} signRaw @param {Uint8Array} agreeRaw @param {Uint8Array|null} previous */
const statement = (id, signRaw, agreeRaw, previous) => context(LABEL.identity, normaliseId(id), signRaw, agreeRaw, previous ?? new Uint8Array(0));

/**
 * The identity to publish: id, public keys, and signatures by this
 * signing key and (after a rotation) the previous one.
 * @param {string} id @param {IdentityKeys} keys @param {IdentityKeys} [previous]
 */
export async function identityDocument(id, keys, previous) {
  const signRaw = fromBase64url(keys.signPublic);
  const agreeRaw = fromBase64url(keys.agreePublic);
  const prevRaw = previous ? fromBase64url(previous.signPublic) : null;
  const message = statement(id, signRaw, agreeRaw, prevRaw);
  // The id is not written in (the server keeps only a hash of ids): the
  // signatures cover it, so the identity verifies only as this id's.
  const doc = {
    v: 2,
    sign: keys.signPublic,
    agree: keys.agreePublic,
    prev: previous ? previous.signPublic : null,
    sig: toBase64url(await sign(keys, message)),
    psig: previous ? toBase64url(await sign(previous, message)) : null,
  };
  return utf8(JSON.stringify(doc));
}

/**
 * A published identity, checked: well formed, signed by its own signing
 * key (and by the previous one it names) over `id` (so another account's
 * identity does not pass as this one's).
 * @param {Uint8Array} bytes @param {string} id @returns {Promise<Identity>}
 */
export async function readIdentity(bytes, id) {
  /** @type {any} */
  let doc;
  try {
    doc = JSON.parse(fromUtf8(bytes));
  } catch (cause) {
    throw new SyncError('integrity', 'the identity does not parse', { cause });
  }
  const bad = (/** @type {string} */ why) => new SyncError('integrity', `the identity of ${id} is not valid: ${why}`);
  if (doc?.v !== 2 || typeof doc.sign !== 'string' || typeof doc.agree !== 'string' || typeof doc.sig !== 'string') throw bad('malformed');
  const signRaw = fromBase64url(doc.sign);
  const agreeRaw = fromBase64url(doc.agree);
  const previous = typeof doc.prev === 'string' ? fromBase64url(doc.prev) : null;
  const message = statement(id, signRaw, agreeRaw, previous);
  if (!(await verify(signRaw, fromBase64url(doc.sig), message))) throw bad('its signature does not verify');
  if (previous && !(typeof doc.psig === 'string' && (await verify(previous, fromBase64url(doc.psig), message)))) throw bad('its rotation is not signed by the previous key');
  return { id: normaliseId(id), sign: signRaw, agree: agreeRaw, previous, fingerprint: await fingerprintOf(id, signRaw, agreeRaw) };
}

/** 12 groups of 5 digits. @param {string} id @param {Uint8Array} signRaw @param {Uint8Array} agreeRaw */
export async function fingerprintOf(id, signRaw, agreeRaw) {
  const hash = new Uint8Array(await subtle.digest('SHA-512', source(context(LABEL.fingerprint, normaliseId(id), signRaw, agreeRaw))));
  const groups = [];
  for (let i = 0; i < 12; i++) {
    let value = 0n;
    for (const b of hash.subarray(i * 5, i * 5 + 5)) value = (value << 8n) | BigInt(b);
    groups.push(String(value % 100000n).padStart(5, '0'));
  }
  return groups.join(' ');
}

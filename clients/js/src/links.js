/**
 * Share links on the client (SPEC §10.3): a secret that travels in a URL
 * fragment (never to the server) gives a link id, a verifier and a key
 * (HKDF, distinct labels). The server keeps the id, SHA-256 of the
 * verifier and the link's envelope: the store's keys sealed under the
 * link key and signed by the owner who made it, bound to the store and
 * the link id.
 *
 *   link envelope = 2 ‖ AES-GCM(link key, pad({from, location, epoch, keys, permission, link, sig}))
 */

import { SyncError } from './errors.js';
import { concat, fromBase64url, fromUtf8, toBase64url, toHex, utf8 } from './bytes.js';
import { aesKey, derive, open, pad, randomBytes, seal, sha256, unpad } from './crypto.js';
import { context, FORMAT, LABEL } from './labels.js';
import { sign, verify } from './identity.js';
import { canonicalKeys } from './envelope.js';

/** The fragment parameter a link URL carries its secret in. */
export const LINK_PARAMETER = 'sync-node-link';

/** @param {Uint8Array} secret */
export async function linkParts(secret) {
  return {
    link: toBase64url(await derive(secret, LABEL.linkId)),
    verifier: await derive(secret, LABEL.linkVerifier),
    key: await aesKey(await derive(secret, LABEL.linkKey)),
  };
}

/** A new link secret. */
export const newLinkSecret = () => randomBytes(32);

/** The secret in a link URL's fragment. @param {string} url */
export function secretOf(url) {
  const fragment = String(url).split('#')[1] ?? '';
  const value = new URLSearchParams(fragment).get(LINK_PARAMETER);
  let secret = null;
  try {
    secret = value ? fromBase64url(value) : null;
  } catch {
    secret = null;
  }
  if (!secret || secret.length !== 32) throw new SyncError('bad_request', `not a share link: its fragment has no ${LINK_PARAMETER}`);
  return secret;
}

/** @param {{from: string, location: string, epoch: number, keys: Record<string, string>, permission: string, link: string}} c */
function statement(c) {
  return context(LABEL.linkSignature, c.from, c.location, c.epoch, c.permission, c.link, canonicalKeys(c.keys));
}

/**
 * @param {{from: string, location: string, keys: Map<number, Uint8Array>, permission: string, link: string, key: CryptoKey,
 *   signer: import('./identity.js').IdentityKeys}} what
 */
export async function sealLinkEnvelope({ from, location, keys, permission, link, key, signer }) {
  /** @type {Record<string, string>} */
  const raw = {};
  for (const [epoch, k] of keys) raw[String(epoch)] = toBase64url(k);
  const content = { from, location, epoch: Math.max(...keys.keys()), keys: raw, permission, link };
  const sig = toBase64url(await sign(signer, statement(content)));
  return concat(new Uint8Array([FORMAT]), await seal(key, pad(utf8(JSON.stringify({ ...content, sig }))), context(LABEL.link, location, link)));
}

/**
 * Opens a link envelope; the signature is checked against the maker's
 * identity by `checkLinkSignature`.
 * @param {Uint8Array} bytes @param {CryptoKey} key @param {string} location @param {string} link
 */
export async function openLinkEnvelope(bytes, key, location, link) {
  if (bytes.length < 29 || bytes[0] !== FORMAT) throw new SyncError('integrity', 'a link envelope is malformed');
  /** @type {any} */
  let content;
  try {
    content = JSON.parse(fromUtf8(unpad(await open(key, bytes.subarray(1), context(LABEL.link, location, link)))));
  } catch (cause) {
    if (cause instanceof SyncError) throw cause;
    throw new SyncError('integrity', 'a link envelope does not parse', { cause });
  }
  if (content?.location !== location || content.link !== link || typeof content.from !== 'string' || typeof content.sig !== 'string') {
    throw new SyncError('integrity', 'a link envelope was made for another store or link');
  }
  return /** @type {{from: string, location: string, epoch: number, keys: Record<string, string>, permission: string, link: string, sig: string}} */ (content);
}

/** @param {{from: string, location: string, epoch: number, keys: Record<string, string>, permission: string, link: string, sig: string}} content @param {Uint8Array} makerSign */
export async function checkLinkSignature(content, makerSign) {
  const { sig, ...signed } = content;
  if (!(await verify(makerSign, fromBase64url(sig), statement(signed)))) throw new SyncError('integrity', `a link claims to come from ${content.from} but is not signed by their identity`);
}

/** SHA-256 of the verifier, hex, as the server keeps it. @param {Uint8Array} verifier */
export async function verifierHash(verifier) {
  return toHex(await sha256(verifier));
}

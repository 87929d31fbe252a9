/**
 * Who wrote what (format 2): the statements an author signs — a body's
 * metadata (which names the body's hash), a log entry, a shared store's
 * member list — and who may write a store: this account alone, or on a
 * shared store the members its member list, signed by an owner, says may.
 */

import { SyncError } from './errors.js';
import { context, LABEL } from './labels.js';

/**
 * A member: id and permission; a removed one is kept as `GONE` with the
 * permission it had (`w`), the key epoch its removal began (`e`) and the
 * log head then (`x`), so what it wrote before stays readable and nothing
 * after.
 * @typedef {{id: string, p: string, w?: string, e?: number, x?: number}} Member
 */

/** @param {Member[]} members */
const canonical = (members) => JSON.stringify([...members].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)).map((m) => [m.id, m.p, m.w ?? null, m.e ?? null, m.x ?? null]));

/**
 * What a metadata's author signs: everything in it but the signature,
 * and the key wraps and epoch it travels with (in clear in `Sync-Meta`).
 * @param {string} location @param {import('./sealer.js').MetaContent} content @param {Uint8Array} wrapsHash @param {number} epoch
 */
export function metaStatement(location, content, wrapsHash, epoch) {
  const { s: _signature, ...signed } = content;
  const fields = [signed.n, signed.m, signed.i, signed.v, signed.h, signed.a ?? null, signed.u ? canonical(signed.u) : null, signed.r ?? null, signed.w ?? null];
  return context(LABEL.metaSignature, location, wrapsHash, epoch, JSON.stringify(fields));
}

/**
 * What an owner signs of a member list: the store, its incarnation, the
 * list and its number (each new list has a higher one, so an old list
 * replayed is refused by a device that saw a newer).
 * @param {string} location @param {string} incarnation @param {Member[]} members @param {number} number
 */
export function rosterStatement(location, incarnation, members, number) {
  return context(LABEL.roster, location, incarnation, number, canonical(members));
}

/**
 * What an owner signs of a shared store's key wraps (only owners make
 * them; writers carry them along unchanged).
 * @param {string} location @param {string} incarnation @param {Uint8Array} wrapsHash @param {number} epoch
 */
export function wrapsStatement(location, incarnation, wrapsHash, epoch) {
  return context(LABEL.wraps, location, incarnation, wrapsHash, epoch);
}

/**
 * What an entry's author signs.
 * @param {string} location @param {string} incarnation @param {number} epoch @param {string} writer @param {number} counter @param {Uint8Array} dataHash
 */
export function entryStatement(location, incarnation, epoch, writer, counter, dataHash) {
  return context(LABEL.entrySignature, location, incarnation, epoch, writer, counter, dataHash);
}

/** The members who may write. @param {Member[]} members */
export function writersOf(members) {
  return new Set(members.filter((m) => m.p === 'WRITE' || m.p === 'OWN').map((m) => m.id));
}

/**
 * Removed writers: the key epoch and log index from which their entries are refused.
 * @param {Member[]} members @returns {Map<string, {epoch: number, index: number}>}
 */
export function formerWritersOf(members) {
  return new Map(
    members
      .filter((m) => m.p === 'GONE' && (m.w === 'WRITE' || m.w === 'OWN') && Number.isSafeInteger(m.e) && Number.isSafeInteger(m.x))
      .map((m) => [m.id, { epoch: /** @type {number} */ (m.e), index: /** @type {number} */ (m.x) }]),
  );
}

/** The members who own. @param {Member[]} members */
export function ownersOf(members) {
  return new Set(members.filter((m) => m.p === 'OWN').map((m) => m.id));
}

/** @param {string} author @param {string} what */
export function notAWriter(author, what) {
  return new SyncError('integrity', `${what} was written by ${author}, who may not write this store (or its signature does not verify): refused`);
}

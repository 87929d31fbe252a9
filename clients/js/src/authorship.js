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
 * permission it had (`w`) and the key epoch its removal began (`e`), so
 * what it wrote before stays readable.
 * @typedef {{id: string, p: string, w?: string, e?: number}} Member
 */

/** @param {Member[]} members */
const canonical = (members) => JSON.stringify([...members].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)).map((m) => [m.id, m.p, m.w ?? null, m.e ?? null]));

/**
 * What a metadata's author signs: everything in it but the signature.
 * @param {string} location @param {import('./sealer.js').MetaContent} content
 */
export function metaStatement(location, content) {
  const { s: _signature, ...signed } = content;
  return context(LABEL.metaSignature, location, JSON.stringify([signed.n, signed.m, signed.i, signed.v, signed.h, signed.a ?? null, signed.u ? canonical(signed.u) : null, signed.r ?? null]));
}

/** What an owner signs of a member list. @param {string} location @param {string} incarnation @param {Member[]} members */
export function rosterStatement(location, incarnation, members) {
  return context(LABEL.roster, location, incarnation, canonical(members));
}

/**
 * What an entry's author signs.
 * @param {string} location @param {string} incarnation @param {string} writer @param {number} counter @param {Uint8Array} dataHash
 */
export function entryStatement(location, incarnation, writer, counter, dataHash) {
  return context(LABEL.entrySignature, location, incarnation, writer, counter, dataHash);
}

/** The members who may write. @param {Member[]} members */
export function writersOf(members) {
  return new Set(members.filter((m) => m.p === 'WRITE' || m.p === 'OWN').map((m) => m.id));
}

/** Removed writers, and the key epoch from which their writes are refused. @param {Member[]} members */
export function formerWritersOf(members) {
  return new Map(members.filter((m) => m.p === 'GONE' && (m.w === 'WRITE' || m.w === 'OWN') && Number.isSafeInteger(m.e)).map((m) => [m.id, /** @type {number} */ (m.e)]));
}

/** The members who own. @param {Member[]} members */
export function ownersOf(members) {
  return new Set(members.filter((m) => m.p === 'OWN').map((m) => m.id));
}

/** @param {string} author @param {string} what */
export function notAWriter(author, what) {
  return new SyncError('integrity', `${what} was written by ${author}, who may not write this store (or its signature does not verify): refused`);
}

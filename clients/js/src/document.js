/**
 * `LogDocument`: a CRDT document (Automerge, Yjs …) kept as a snapshot
 * (the store body) plus small updates (its log), all sealed by the vault.
 * The app merges; this keeps track of which updates it has seen, appends
 * new ones, pulls others', and compacts: a new snapshot that folds in
 * every update seen so far, written only if no one else wrote the body
 * meanwhile.
 */

import { SyncError } from './errors.js';
import { asBytes } from './bytes.js';

export class LogDocument {
  /** @param {import('./vault.js').Vault} vault @param {string} name */
  constructor(vault, name) {
    this.vault = vault;
    this.name = name;
    /** @type {string|null} the body's token */
    this.token = null;
    /** Index of the last update this document has handed over (or folded in). */
    this.seenIndex = 0;
    /** Updates retained on the server that are not in the snapshot. */
    this.pending = 0;
    /** Another device wrote the body: the next pull reloads. */
    this.stale = false;
  }

  /**
   * Loads the snapshot and every update after it. A missing document is
   * created with `initial` (a snapshot of an empty document).
   * @param {Uint8Array|string} initial
   * @returns {Promise<{snapshot: Uint8Array, updates: Uint8Array[]}>}
   */
  async load(initial) {
    for (;;) {
      const item = await this.vault.get(this.name);
      if (!item) {
        const created = await this.vault.put(this.name, asBytes(initial), { base: null, resolve: () => null, queue: false });
        if ('skipped' in created) continue; // someone else created it first
        this.token = /** @type {any} */ (created).token;
        this.seenIndex = 0;
        this.pending = 0;
        return { snapshot: asBytes(initial), updates: [] };
      }
      this.token = item.token;
      this.seenIndex = item.logBase;
      this.stale = false;
      try {
        const page = await this.vault.log(this.name).read({ after: item.logBase });
        this.seenIndex = page.entries.at(-1)?.index ?? item.logBase;
        this.pending = page.entries.length;
        return { snapshot: item.data, updates: page.entries.map((e) => e.data) };
      } catch (error) {
        // Compacted between the two reads: start over.
        if (!(error instanceof SyncError && error.status === 410)) throw error;
      }
    }
  }

  /**
   * Appends one update made locally; the app has applied it already.
   * @param {Uint8Array|string} update
   */
  async append(update) {
    const written = await this.vault.log(this.name).append(update);
    // Right after what this device had seen: nothing of others' in between.
    if (written.index === this.seenIndex + 1) this.seenIndex = written.index;
    this.pending += 1;
    return written.index;
  }

  /**
   * Updates appended since the last load or pull (including this
   * device's own, which CRDTs apply idempotently). `reload` means another
   * device wrote the body (compacted, or replaced the document): the app
   * must merge `snapshot` into its state (a CRDT merge keeps its own
   * changes) and apply `updates`.
   * @returns {Promise<{updates: Uint8Array[]} | {reload: true, snapshot: Uint8Array, updates: Uint8Array[]}>}
   */
  async pull() {
    // A body written since (a compaction, or a document deleted and made
    // again) means a reload; the check costs a 304.
    if (!this.stale && this.token !== null) {
      const body = await this.vault.client.stores.get(await this.vault.keyOf(this.name), { ifNoneMatch: this.token });
      if (!(body && 'notModified' in body)) this.stale = true;
    }
    if (!this.stale) {
      try {
        const page = await this.vault.log(this.name).read({ after: this.seenIndex });
        // A head below what this device saw: the document was deleted and
        // made again; its log is another one.
        if (page.logHead >= this.seenIndex) {
          this.seenIndex = page.entries.at(-1)?.index ?? this.seenIndex;
          this.pending = Math.max(0, page.logHead - page.logBase);
          return { updates: page.entries.map((e) => e.data) };
        }
      } catch (error) {
        if (!(error instanceof SyncError && error.status === 410)) throw error;
      }
    }
    const loaded = await this.load(new Uint8Array(0));
    return { reload: true, ...loaded };
  }

  /**
   * Writes `snapshot`, which must contain every update up to the last one
   * this document handed over or appended, and drops those updates from
   * the log. Returns false (nothing written) when another device wrote the
   * body first, or the log has updates the snapshot lacks: pull (which
   * then reloads), then try later.
   * @param {Uint8Array|string} snapshot
   */
  async compact(snapshot) {
    if (this.token === null) throw new SyncError('bad_request', 'load the document before compacting it');
    if (this.stale) return false;
    let page;
    try {
      page = await this.vault.log(this.name).read({ after: this.seenIndex });
    } catch (error) {
      if (!(error instanceof SyncError && error.status === 410)) throw error;
      this.stale = true; // compacted past what this device has seen
      return false;
    }
    if (page.entries.length > 0 || page.logHead < this.seenIndex) return false; // updates the snapshot lacks, or another document
    const key = await this.vault.keyOf(this.name);
    const body = await this.vault.sealSnapshot(key, asBytes(snapshot));
    const state = await this.vault.client.logs.compact(key, body.sealed, { ifMatch: this.token, upto: page.logHead });
    if (!state) {
      // Another device wrote the body (a compaction, or a plain write):
      // what it holds is unknown here until the document is reloaded.
      this.stale = true;
      return false;
    }
    body.commit(state.token);
    this.token = state.token;
    this.seenIndex = page.logHead;
    this.pending = 0;
    return true;
  }
}

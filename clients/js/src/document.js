/**
 * `LogDocument`: a CRDT document (Automerge, Yjs …) kept as a snapshot
 * (the store body) plus small updates (its log), all sealed by the vault.
 *
 * Every entry carries its writer (random per document handle) and that
 * writer's counter (1, 2, 3 …), sealed and bound to the store's
 * incarnation; every snapshot records the clock it folded in (writer →
 * last counter). A reader applies a writer's entries only in counter
 * order, so a gap, a duplicate or a reordering is an `integrity` error,
 * never a silent loss. A document compacts only up to the last entry it
 * has read in order. Entries this device appended are kept (sealed, in
 * the vault's state store) until a snapshot says it folded them in; if
 * the server dropped one, the next `load` or `pull` appends it again.
 */

import { SyncError } from './errors.js';
import { asBytes, fromBase64url, fromUtf8, toBase64url, utf8 } from './bytes.js';
import { LABEL } from './labels.js';
import { newWriter } from './sealer.js';
import { normaliseId } from './crypto.js';

/** A clock's key: the author and its writer (one author cannot touch another's sequences). @param {{author: string, writer: string}} e */
export const clockKey = (e) => `${e.author}/${e.writer}`;

/**
 * Applies entries to a clock in order: each must be its writer's next.
 * A gap or a repeat in this account's own sequences is `integrity` (the
 * server dropped, replayed or reordered them); in another member's, the
 * entry is left out and counted (that member may have sent it so, to
 * break the document for everyone). Changes `clock` and `entries` in
 * place; returns how many were left out.
 * @param {Record<string, number>} clock @param {{index: number, author: string, writer: string, counter: number}[]} entries @param {string} me
 */
export function verifyEntries(clock, entries, me) {
  let left = 0;
  for (const e of [...entries]) {
    const key = clockKey(e);
    const last = clock[key] ?? 0;
    if (e.counter !== last + 1 && e.author !== me) {
      entries.splice(entries.indexOf(e), 1);
      left += 1;
      continue;
    }
    if (e.counter !== last + 1) {
      throw new SyncError(
        'integrity',
        e.counter <= last
          ? `log entry ${e.index} repeats one already seen (writer ${e.writer}, #${e.counter}): the server replayed it`
          : `log entries are missing before entry ${e.index} (writer ${e.writer} jumps from #${last} to #${e.counter}): the server dropped or reordered them`,
      );
    }
    clock[key] = e.counter;
  }
  return left;
}

/** @param {unknown} error @param {number} status */
const is = (error, status) => error instanceof SyncError && error.status === status;

/**
 * A refusal that says the entry was not stored (an honest server's 4xx
 * but a timeout, a throttle or a lost session). Anything else may have
 * stored it.
 * @param {unknown} error
 */
const refused = (error) => error instanceof SyncError && error.status >= 400 && error.status < 500 && ![401, 408, 429].includes(error.status);

export class LogDocument {
  /** @param {import('./vault.js').Vault} vault @param {import('./vault.js').Target} name */
  constructor(vault, name) {
    this.vault = vault;
    this.name = name;
    /** This handle's writer id, and its last counter. */
    this.writer = newWriter();
    this.counter = 0;
    /** @type {string|null} */
    this.key = null;
    /** @type {string|null} the body's token */
    this.token = null;
    /** @type {import('./vault.js').Opened|null} */
    this.opened = null;
    /** The clock of everything handed over (the snapshot's, plus entries read in order). */
    this.clock = /** @type {Record<string, number>} */ ({});
    /** Index of the last entry handed over in order. */
    this.seenIndex = 0;
    /** Updates retained on the server that are not in the snapshot. */
    this.pending = 0;
    /** Another device wrote the body: the next pull reloads. */
    this.stale = false;
    /** How many entries of this device were appended again because the server had dropped them. */
    this.reappended = 0;
    /** How many such entries the server then refused for good (they are reported here, not retried). */
    this.unrecoverable = 0;
    /** @type {{counter: number, data: Uint8Array}|null} an append whose answer never came */
    this.unsure = null;
  }

  /** This account's id as entries carry it. */
  #me() {
    return normaliseId(this.vault.id);
  }

  async #key() {
    return (this.key ??= await this.vault.keyOf(this.name));
  }

  /**
   * Loads the snapshot and every update after it. A missing document is
   * created with `initial` (a snapshot of an empty document).
   * @param {Uint8Array|string} initial
   * @returns {Promise<{snapshot: Uint8Array, updates: Uint8Array[]}>}
   */
  async load(initial) {
    const key = await this.#key();
    for (;;) {
      const item = await this.vault.openStore(key);
      if (!item) {
        try {
          if (typeof this.name !== 'string') throw new SyncError('not_found', 'this shared document does not exist (any more)', { status: 404 });
          const created = await this.vault.writeBody(key, { data: initial, clock: {}, name: this.name, against: null });
          this.token = created.token;
        } catch (error) {
          if (is(error, 412)) continue; // someone else created it first
          throw error;
        }
        this.opened = await this.vault.openStore(key);
        Object.assign(this, { clock: {}, seenIndex: 0, pending: 0, stale: false });
        return { snapshot: asBytes(initial), updates: [] };
      }
      let entries;
      try {
        const page = await this.vault.logs.read(key, { after: item.logBase });
        entries = await this.vault.openEntries(item, page.entries);
      } catch (error) {
        if (is(error, 410)) continue; // compacted between the two reads
        throw error;
      }
      this.clock = { ...item.clock };
      this.vault.rejectedEntries += verifyEntries(this.clock, entries, this.#me());
      Object.assign(this, { token: item.token, opened: item, seenIndex: entries.at(-1)?.index ?? item.logBase, pending: entries.length, stale: false });
      await this.#reconcile(item.clock, entries);
      return { snapshot: item.data, updates: entries.map((e) => e.data) };
    }
  }

  /**
   * Appends one update made locally; the app has applied it already.
   * @param {Uint8Array|string} update
   */
  async append(update) {
    if (this.token === null) throw new SyncError('bad_request', 'load the document before appending to it');
    const index = await this.appendOnly(update);
    // Right after what this device had read: nothing of others' in between.
    if (index === this.seenIndex + 1) {
      this.seenIndex = index;
      this.clock[clockKey({ author: this.#me(), writer: this.writer })] = this.counter;
    }
    this.pending += 1;
    return index;
  }

  /**
   * Appends without tracking the document (the low-level `vault.log`).
   * An earlier append whose answer never came is settled first: appended
   * again only if the log does not have it.
   * @param {Uint8Array|string} update
   */
  async appendOnly(update) {
    const key = await this.#key();
    if (this.unsure) {
      const unsure = this.unsure;
      const page = await this.vault.logs.read(key, { after: this.seenIndex }).catch(() => null);
      const opened = this.opened ?? (await this.vault.openStore(key));
      const landed = page && opened ? (await this.vault.openEntries(opened, page.entries)).some((e) => e.author === this.#me() && e.writer === this.writer && e.counter === unsure.counter) : false;
      if (!landed) await this.vault.appendEntry(key, this.writer, unsure.counter, unsure.data);
      this.unsure = null;
    }
    const counter = ++this.counter;
    const writer = this.writer;
    const data = asBytes(update);
    await this.#remember(counter, data);
    try {
      return (await this.vault.appendEntry(key, writer, counter, data)).index;
    } catch (error) {
      if (!refused(error)) {
        this.unsure = { counter, data }; // perhaps stored: settled before the next append
        throw error;
      }
      // Refused: this writer's sequence ends before it (a counter is never
      // used twice, and no reader waits for it); a new writer goes on.
      await this.#dropKept(writer, counter);
      this.writer = newWriter();
      this.counter = 0;
      throw error;
    }
  }

  /**
   * Updates appended since the last load or pull (including this
   * device's own, which CRDTs apply idempotently). `reload` means another
   * device wrote the body (compacted, or made the document again): the
   * app must merge `snapshot` into its state (a CRDT merge keeps its own
   * changes) and apply `updates`.
   * @returns {Promise<{updates: Uint8Array[]} | {reload: true, snapshot: Uint8Array, updates: Uint8Array[]}>}
   */
  async pull() {
    const key = await this.#key();
    // A body written since (a compaction, or a document made again) means a reload; the check costs a 304.
    if (!this.stale && this.token !== null) {
      const body = await this.vault.stores.get(key, { ifNoneMatch: this.token });
      if (!(body && 'notModified' in body)) this.stale = true;
    }
    if (!this.stale && this.opened) {
      try {
        const page = await this.vault.logs.read(key, { after: this.seenIndex });
        const entries = await this.vault.openEntries(this.opened, page.entries);
        this.vault.rejectedEntries += verifyEntries(this.clock, entries, this.#me());
        this.seenIndex = entries.at(-1)?.index ?? this.seenIndex;
        this.pending = Math.max(0, page.logHead - page.logBase);
        return { updates: entries.map((e) => e.data) };
      } catch (error) {
        if (!is(error, 410)) throw error;
      }
    }
    const loaded = await this.load(new Uint8Array(0));
    return { reload: true, ...loaded };
  }

  /**
   * Writes `snapshot`, which must contain every update handed over or
   * appended so far, with the clock of exactly those, and drops those
   * updates from the log (up to the last one read in order). Returns
   * false (nothing written) when another device wrote the body first, or
   * the log has updates not pulled yet: pull (which then reloads), merge,
   * and try later.
   * @param {Uint8Array|string} snapshot
   */
  async compact(snapshot) {
    if (this.token === null) throw new SyncError('bad_request', 'load the document before compacting it');
    if (this.stale) return false;
    const key = await this.#key();
    try {
      const page = await this.vault.logs.read(key, { after: this.seenIndex });
      if (page.entries.length > 0) return false; // updates the snapshot lacks
    } catch (error) {
      if (!is(error, 410)) throw error;
      this.stale = true; // compacted past what this device has seen
      return false;
    }
    const clock = { ...this.clock };
    try {
      const written = await this.vault.writeBody(key, { data: snapshot, clock, against: this.token, logBase: this.seenIndex });
      this.token = written.token;
    } catch (error) {
      if (!is(error, 412)) throw error;
      // Another device wrote the body: what it holds is unknown here until the document is reloaded.
      this.stale = true;
      return false;
    }
    this.opened = await this.vault.openStore(key);
    this.pending = 0;
    await this.#forget(clock);
    return true;
  }

  /** The state-store key prefix of this store's unconfirmed entries. */
  async #outboxPrefix() {
    return `${this.vault.pins.scope}|outbox|${await this.#key()}|`;
  }

  /** Keeps an entry (sealed) until a snapshot folds it in. @param {number} counter @param {Uint8Array} data */
  async #remember(counter, data) {
    const key = (await this.#outboxPrefix()) + this.writer;
    const kept = (await this.vault.state.get(key)) ?? [];
    const sealed = toBase64url(await this.vault.sealForDevice(LABEL.outbox, utf8(JSON.stringify({ c: counter, d: toBase64url(data) }))));
    await this.vault.state.set(key, [...kept, sealed]);
  }

  /** Every writer of this device with unconfirmed entries of this store. */
  async #outboxes() {
    const prefix = await this.#outboxPrefix();
    const out = [];
    for (const key of await this.vault.state.keys(prefix)) {
      const entries = [];
      for (const sealed of (await this.vault.state.get(key)) ?? []) {
        const { c, d } = JSON.parse(fromUtf8(await this.vault.openForDevice(LABEL.outbox, fromBase64url(sealed))));
        entries.push({ counter: c, data: fromBase64url(d), sealed });
      }
      out.push({ key, writer: key.slice(prefix.length), entries });
    }
    return out;
  }

  /**
   * After a load: entries of this device that the snapshot does not fold
   * in and the log does not hold were dropped by the server; they are
   * appended again (a tail only: one missing before another that is there
   * is an `integrity` error).
   * @param {Record<string, number>} folded the snapshot's clock
   * @param {{author: string, writer: string, counter: number}[]} entries the log after the snapshot
   */
  async #reconcile(folded, entries) {
    const key = await this.#key();
    for (const box of await this.#outboxes()) {
      const mine = clockKey({ author: this.#me(), writer: box.writer });
      const kept = box.entries.filter((e) => e.counter > (folded[mine] ?? 0));
      const present = new Set(entries.filter((e) => e.author === this.#me() && e.writer === box.writer).map((e) => e.counter));
      const missing = kept.filter((e) => !present.has(e.counter));
      if (missing.length > 0) {
        if (missing[0].counter <= Math.max(folded[mine] ?? 0, ...present)) {
          throw new SyncError('integrity', `the server dropped an entry of this device (writer ${box.writer}, #${missing[0].counter}) from the middle of the log`);
        }
        for (const [at, e] of missing.entries()) {
          try {
            await this.vault.appendEntry(key, box.writer, e.counter, e.data);
            this.reappended += 1;
          } catch (error) {
            if (!refused(error)) break; // kept, tried again at the next load
            // Refused for good: this entry and the writer's later ones (which
            // would follow a gap) are reported, not retried.
            const lost = missing.slice(at);
            for (const gone of lost) kept.splice(kept.indexOf(gone), 1);
            this.unrecoverable += lost.length;
            break;
          }
        }
      }
      await this.#keep(box.key, kept.map((e) => e.sealed));
    }
    this.unsure = null;
  }

  /** Forgets one kept entry (refused, so never in the log). @param {string} writer @param {number} counter */
  async #dropKept(writer, counter) {
    for (const box of await this.#outboxes()) {
      if (box.writer === writer) await this.#keep(box.key, box.entries.filter((e) => e.counter !== counter).map((e) => e.sealed));
    }
  }

  /** Drops the entries a snapshot folded in. @param {Record<string, number>} clock */
  async #forget(clock) {
    for (const box of await this.#outboxes()) {
      const mine = clockKey({ author: this.#me(), writer: box.writer });
      await this.#keep(box.key, box.entries.filter((e) => e.counter > (clock[mine] ?? 0)).map((e) => e.sealed));
    }
  }

  /** @param {string} key @param {string[]} sealed */
  async #keep(key, sealed) {
    if (sealed.length === 0) await this.vault.state.delete(key);
    else await this.vault.state.set(key, sealed);
  }
}

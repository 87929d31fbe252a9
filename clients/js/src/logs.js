/**
 * Store logs (SPEC §9): append an entry, read entries after an index
 * (unframing the answer and following `Sync-Log-More`), and compact by
 * writing a new body with `Sync-Log-Base`.
 */

import { SyncError } from './errors.js';
import { storePath } from './transport.js';

/** @typedef {{index: number, data: Uint8Array}} LogEntry */
/** @typedef {{entries: LogEntry[], logHead: number, logBase: number, more: boolean}} LogPage */

export class Logs {
  /**
   * @param {import('./transport.js').Transport} transport
   * @param {import('./stores.js').Stores} stores compactions are store writes
   */
  constructor(transport, stores) {
    this.transport = transport;
    this.stores = stores;
  }

  /**
   * Appends one entry (WRITE required). With `ifLogHead`, only if the log's
   * head is still that index (else a 412 `SyncError`).
   * @param {string} key @param {Uint8Array} data @param {{ifLogHead?: number}} [options]
   * @returns {Promise<{key: string, index: number, logHead: number, logBytes: number, seq: number}>}
   */
  async append(key, data, options = {}) {
    this.stores.guard(key);
    const info = await this.transport.info();
    if (data.length === 0 || data.length > info.max_entry_bytes) {
      throw new SyncError(data.length === 0 ? 'bad_request' : 'payload_too_large', `a log entry is 1 to ${info.max_entry_bytes} bytes, not ${data.length}`, {
        status: data.length === 0 ? 400 : 413,
      });
    }
    const headers = options.ifLogHead === undefined ? undefined : { 'If-Log-Head': String(options.ifLogHead) };
    const raw = await this.transport.json('POST', `${storePath(key)}/log`, { body: data, headers });
    return { key: raw.key, index: raw.index, logHead: raw.log_head, logBytes: raw.log_bytes, seq: raw.seq };
  }

  /**
   * One page of entries after `after` (default: the log's base). A 410
   * `SyncError` (code `gone`) means those entries were folded into the body:
   * re-read the body, then the log after its `logBase`.
   * @param {string} key @param {{after?: number, limit?: number, signal?: AbortSignal}} [options]
   * @returns {Promise<LogPage>}
   */
  async readPage(key, options = {}) {
    const query = [];
    if (options.after !== undefined) query.push(`after=${options.after}`);
    if (options.limit) query.push(`limit=${options.limit}`);
    const path = `${storePath(key)}/log${query.length ? `?${query.join('&')}` : ''}`;
    const response = await this.transport.request('GET', path, { signal: options.signal });
    const entries = unframe(new Uint8Array(await response.arrayBuffer()));
    return {
      entries,
      logHead: Number(response.headers.get('Sync-Log-Head') ?? 0),
      logBase: Number(response.headers.get('Sync-Log-Base') ?? 0),
      more: response.headers.get('Sync-Log-More') === '1',
    };
  }

  /**
   * Every retained entry after `after`, following `Sync-Log-More`.
   * @param {string} key @param {{after?: number}} [options] @returns {Promise<LogPage>}
   */
  async read(key, options = {}) {
    let page = await this.readPage(key, options);
    const entries = [...page.entries];
    while (page.more && page.entries.length > 0) {
      page = await this.readPage(key, { after: entries[entries.length - 1].index });
      entries.push(...page.entries);
    }
    return { ...page, entries, more: false };
  }

  /**
   * Writes `body` (the entries up to `upto` folded in) and drops those
   * entries, if the body is still at `ifMatch`; `null` when another write
   * won (412): skip, someone else compacted or wrote.
   * @param {string} key @param {Uint8Array} body @param {{ifMatch: string, upto: number, meta?: string|null}} options
   */
  async compact(key, body, { ifMatch, upto, meta }) {
    try {
      return await this.stores.put(key, body, { ifMatch, logBase: upto, meta });
    } catch (error) {
      if (error instanceof SyncError && error.status === 412) return null;
      throw error;
    }
  }
}

/**
 * Splits a log answer into entries: each an 8-byte big-endian index, a
 * 4-byte big-endian length, then the bytes.
 * @param {Uint8Array} bytes @returns {LogEntry[]}
 */
export function unframe(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const entries = [];
  let at = 0;
  while (at < bytes.length) {
    if (at + 12 > bytes.length) throw new SyncError('bad_response', 'a log answer ends inside an entry header');
    const index = Number(view.getBigUint64(at));
    const length = view.getUint32(at + 8);
    if (at + 12 + length > bytes.length) throw new SyncError('bad_response', 'a log answer ends inside an entry');
    entries.push({ index, data: bytes.slice(at + 12, at + 12 + length) });
    at += 12 + length;
  }
  return entries;
}

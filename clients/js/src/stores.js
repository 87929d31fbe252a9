/**
 * Stores (SPEC §4, §5): read, conditional writes, delete, listing that
 * follows `more`, and sharing. Bodies are bytes as they are on the server;
 * `Vault` encrypts on top of this.
 */

import { SyncError } from './errors.js';
import { storePath, storeState, unquote } from './transport.js';
import { VAULT_PREFIX } from './labels.js';
import { toBase64url } from './bytes.js';

/**
 * @typedef {import('./transport.js').StoreState} StoreState
 * @typedef {StoreState & {data: Uint8Array}} StoreBody
 * @typedef {{ifMatch?: string, ifNoneMatch?: '*', meta?: string|null, logBase?: number}} PutOptions
 *   `ifMatch`: the token the write is based on (`'*'`: overwrite whatever is
 *   there); `ifNoneMatch: '*'`: create only; `meta`: set (a string), clear
 *   (`null`) or leave unchanged (absent); `logBase`: also drop log entries up
 *   to this index (SPEC §9)
 */

export class Stores {
  /**
   * @param {import('./transport.js').Transport} transport
   * @param {{vault?: boolean}} [options] `vault`: this is a Vault's own handle, which may write
   *   the keys of encrypted stores (the plain API refuses them, so it cannot break a vault)
   */
  constructor(transport, options = {}) {
    this.transport = transport;
    this.vault = options.vault === true;
  }

  /** Refuses, on the plain API, a write to a Vault's store. @param {string} key */
  guard(key) {
    if (!this.vault && typeof key === 'string' && key.startsWith(VAULT_PREFIX)) {
      throw new SyncError('bad_request', `keys starting with '${VAULT_PREFIX}' are encrypted Vault stores: change them through the Vault (vault.put, vault.share …); a plain write would break their encryption`);
    }
  }

  /**
   * The store's body and state, or `null` when it does not exist for you.
   * With `ifNoneMatch` (a token you hold), `{notModified: true}` when it is
   * still current.
   * @param {string} key @param {{ifNoneMatch?: string, signal?: AbortSignal}} [options]
   * @returns {Promise<StoreBody|{notModified: true, token: string}|null>}
   */
  async get(key, options = {}) {
    const headers = options.ifNoneMatch ? { 'If-None-Match': quote(options.ifNoneMatch) } : undefined;
    const response = await this.transport.request('GET', storePath(key), { headers, expect: [304, 404], signal: options.signal });
    if (response.status === 404) return null;
    if (response.status === 304) return { notModified: true, token: unquote(response.headers.get('ETag') ?? '') };
    const data = new Uint8Array(await response.arrayBuffer());
    return { ...stateFromHeaders(key, response.headers, data.length), data };
  }

  /** The store's state without its body, or `null`. @param {string} key @returns {Promise<StoreState|null>} */
  async head(key) {
    const response = await this.transport.request('HEAD', storePath(key), { expect: [404] });
    if (response.status === 404) return null;
    return stateFromHeaders(key, response.headers, Number(response.headers.get('Content-Length') ?? 0));
  }

  /**
   * One conditional write. A 412 throws a `SyncError` whose `current` and
   * `etag` tell the version that won.
   * @param {string} key @param {Uint8Array} data @param {PutOptions} [options]
   * @returns {Promise<StoreState & {created: boolean}>}
   */
  async put(key, data, options = {}) {
    this.guard(key);
    await this.checkSize(data.length);
    /** @type {Record<string, string>} */
    const headers = {};
    if (options.ifMatch !== undefined) headers['If-Match'] = options.ifMatch === '*' ? '*' : quote(options.ifMatch);
    if (options.ifNoneMatch !== undefined) headers['If-None-Match'] = '*';
    if (options.meta !== undefined) headers['Sync-Meta'] = options.meta ?? '';
    if (options.logBase !== undefined) headers['Sync-Log-Base'] = String(options.logBase);
    const response = await this.transport.request('PUT', storePath(key), { body: data, headers });
    return { ...storeState(await response.json()), created: response.status === 201 };
  }

  /** OWN required. @param {string} key @param {{ifMatch?: string}} [options] */
  async delete(key, options = {}) {
    this.guard(key);
    const headers = options.ifMatch ? { 'If-Match': options.ifMatch === '*' ? '*' : quote(options.ifMatch) } : undefined;
    await this.transport.request('DELETE', storePath(key), { headers });
  }

  /**
   * One page of the stores you can see, in key order.
   * @param {{after?: string, limit?: number}} [options]
   * @returns {Promise<{seq: number, more: boolean, stores: StoreState[]}>}
   */
  async listPage(options = {}) {
    const query = [];
    if (options.limit) query.push(`limit=${options.limit}`);
    if (options.after !== undefined) query.push(`after=${encodeURIComponent(options.after)}`);
    const raw = await this.transport.json('GET', `/v1/stores${query.length ? `?${query.join('&')}` : ''}`);
    return { seq: raw.seq, more: raw.more, stores: raw.stores.map(storeState) };
  }

  /**
   * Every store you can see, following `more` page by page; `seq` is the
   * first page's (the feed cursor to start from, SPEC §4).
   * @param {{limit?: number}} [options]
   * @returns {Promise<{seq: number, stores: StoreState[]}>}
   */
  async list(options = {}) {
    const first = await this.listPage(options);
    const stores = [...first.stores];
    let page = first;
    while (page.more && page.stores.length > 0) {
      page = await this.listPage({ ...options, after: page.stores[page.stores.length - 1].key });
      stores.push(...page.stores);
    }
    return { seq: first.seq, stores };
  }

  /** OWN required. @param {string} key @returns {Promise<{account: string, permission: string, you: boolean}[]>} */
  async permissions(key) {
    return (await this.transport.json('GET', `${storePath(key)}/permissions`)).permissions;
  }

  /**
   * Grants `permission` to the account with id `account`, or revokes with
   * `null`. OWN required.
   * @param {string} key @param {string} account @param {'READ'|'WRITE'|'OWN'|null} permission
   */
  async share(key, account, permission) {
    this.guard(key);
    await this.transport.request('PUT', `${storePath(key)}/permissions`, { json: { account, permission } });
  }

  /**
   * Grants, changes and revokes in one request, all or none (SPEC §10.2),
   * each with an optional envelope (sealed bytes only its grantee reads);
   * with `ifMatch`, only while the body is that version. A Vault's own
   * handle only (the plain API refuses encrypted stores).
   * @param {string} key @param {{account: string, permission: 'READ'|'WRITE'|'OWN'|null, envelope?: Uint8Array}[]} changes
   * @param {{ifMatch?: string}} [options]
   */
  async grant(key, changes, options = {}) {
    this.guard(key);
    const json = { changes: changes.map((c) => (c.envelope ? { account: c.account, permission: c.permission, envelope: toBase64url(c.envelope) } : { account: c.account, permission: c.permission })) };
    const headers = options.ifMatch ? { 'If-Match': quote(options.ifMatch) } : undefined;
    await this.transport.request('PUT', `${storePath(key)}/permissions`, { json, headers });
  }

  /** The caller's own envelope on a store, or `null`. @param {string} key */
  async envelope(key) {
    const response = await this.transport.request('GET', `${storePath(key)}/envelope`, { expect: [404] });
    if (response.status === 404) return null;
    return { data: new Uint8Array(await response.arrayBuffer()), seq: Number(response.headers.get('Sync-Envelope-Seq') ?? 0) };
  }

  /** 413 before sending a body the server would refuse. @param {number} size */
  async checkSize(size) {
    const info = await this.transport.info();
    if (size > info.max_store_bytes) {
      throw new SyncError('payload_too_large', `the body is ${size} bytes; this server takes at most ${info.max_store_bytes}`, { status: 413 });
    }
  }
}

/** @param {string} token */
const quote = (token) => `"${token}"`;

/** @param {string} key @param {Headers} h @param {number} size @returns {StoreState} */
function stateFromHeaders(key, h, size) {
  const number = (/** @type {string} */ name) => Number(h.get(name) ?? 0);
  return {
    key,
    token: unquote(h.get('ETag') ?? ''),
    size,
    modified: Date.parse(h.get('Last-Modified') ?? '') || 0,
    seq: number('Sync-Seq'),
    meta: h.get('Sync-Meta'),
    permission: h.get('Sync-Permission'),
    logHead: number('Sync-Log-Head'),
    logBase: number('Sync-Log-Base'),
    logBytes: 0,
  };
}

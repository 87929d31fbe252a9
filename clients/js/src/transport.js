/**
 * The HTTP layer: one `request` that adds the bearer token, sends JSON or
 * bytes, and turns every error answer into a `SyncError` (SPEC §1). Also
 * the conversion of the server's snake_case store states to camelCase.
 */

import { SyncError } from './errors.js';

/**
 * @typedef {object} StoreState
 * @property {string} key
 * @property {string} token the store's current version (its ETag without quotes)
 * @property {number} size
 * @property {number} modified
 * @property {number} seq
 * @property {string|null} [meta]
 * @property {string|null} [permission]
 * @property {number} logHead
 * @property {number} logBase
 * @property {number} logBytes
 */

/** @param {any} raw @returns {StoreState} */
export function storeState(raw) {
  return {
    key: raw.key,
    token: raw.token,
    size: raw.size,
    modified: raw.modified,
    seq: raw.seq,
    meta: raw.meta ?? null,
    permission: raw.permission ?? null,
    logHead: raw.log_head ?? 0,
    logBase: raw.log_base ?? 0,
    logBytes: raw.log_bytes ?? 0,
  };
}

/** @param {string} key */
export const storePath = (key) => `/v1/stores/${encodeURIComponent(key)}`;

/** @param {string} value an ETag header value */
export const unquote = (value) => value.replace(/^W\//, '').replace(/^"|"$/g, '');

/**
 * @typedef {object} RequestOptions
 * @property {any} [json] a body sent as JSON
 * @property {Uint8Array} [body] a body sent as bytes
 * @property {Record<string, string>} [headers]
 * @property {boolean} [auth] send the session token (default true)
 * @property {AbortSignal} [signal]
 * @property {number[]} [expect] statuses that are answers, not errors (besides 2xx)
 */

export class Transport {
  /**
   * @param {object} options
   * @param {string} options.url the server's base URL
   * @param {import('./tokens.js').TokenStore} options.tokens
   * @param {typeof fetch} [options.fetch]
   * @param {(error: SyncError) => void} [options.onUnauthorized] called when a request with a token gets 401
   */
  constructor({ url, tokens, fetch: fetchImpl, onUnauthorized }) {
    this.base = url.replace(/\/+$/, '');
    this.tokens = tokens;
    this.fetch = fetchImpl ?? globalThis.fetch.bind(globalThis);
    this.onUnauthorized = onUnauthorized;
    /** @type {Promise<any>|null} */
    this.infoAnswer = null;
  }

  /** `GET /v1/info`, fetched once (the server's limits do not change while it runs; a failure is not kept). */
  info() {
    this.infoAnswer ??= this.json('GET', '/v1/info', { auth: false }).catch((error) => {
      this.infoAnswer = null;
      throw error;
    });
    return this.infoAnswer;
  }

  /**
   * @param {string} method @param {string} path @param {RequestOptions} [options]
   * @returns {Promise<Response>}
   */
  async request(method, path, options = {}) {
    const headers = { ...options.headers };
    /** @type {BodyInit|undefined} */
    let body;
    if (options.json !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(options.json);
    } else if (options.body !== undefined) {
      headers['Content-Type'] = 'application/octet-stream';
      body = /** @type {BodyInit} */ (options.body);
    }
    const token = options.auth === false ? null : await this.tokens.get();
    if (token) headers.Authorization = `Bearer ${token}`;
    let response;
    try {
      response = await this.fetch(this.base + path, { method, headers, body, signal: options.signal, cache: 'no-store' });
    } catch (cause) {
      if (options.signal?.aborted) throw cause;
      throw new SyncError('network', `no answer from ${this.base}`, { cause });
    }
    if (response.ok || options.expect?.includes(response.status)) return response;
    const error = await errorOf(response);
    if (response.status === 401 && token && error.code === 'unauthorized') this.onUnauthorized?.(error);
    throw error;
  }

  /** @param {string} method @param {string} path @param {RequestOptions} [options] */
  async json(method, path, options) {
    const response = await this.request(method, path, options);
    if (response.status === 204) return null;
    return readJson(response);
  }
}

/**
 * A 412's `current`, camelCase like every other state this library returns.
 * @param {any} raw @returns {import('./errors.js').CurrentState}
 */
function currentState(raw) {
  return { token: raw.token, size: raw.size, modified: raw.modified, seq: raw.seq, meta: raw.meta ?? null, logHead: raw.log_head ?? 0, logBase: raw.log_base ?? 0 };
}

/** @param {Response} response */
async function readJson(response) {
  try {
    return await response.json();
  } catch (cause) {
    throw new SyncError('bad_response', `unreadable answer to ${response.url}`, { status: response.status, cause });
  }
}

/** @param {Response} response @returns {Promise<SyncError>} */
async function errorOf(response) {
  /** @type {any} */
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not ours (a proxy's page): the status says enough.
  }
  const retry = response.headers.get('Retry-After');
  const etag = response.headers.get('ETag');
  return new SyncError(body?.error ?? `http_${response.status}`, body?.message ?? `HTTP ${response.status}`, {
    status: response.status,
    retryAfter: retry !== null && /^\d+$/.test(retry) ? Number(retry) : null,
    current: body?.current ? currentState(body.current) : null,
    etag: etag ? unquote(etag) : null,
  });
}

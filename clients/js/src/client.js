/**
 * `SyncClient`: the whole HTTP API of Sync Node (SPEC revision 2) as plain
 * calls, without encryption: sessions and accounts here, stores in
 * `client.stores`, logs in `client.logs`, the feed via `client.changes`.
 * The encrypted, high-level API (`Vault`) is built on it.
 */

import { Transport } from './transport.js';
import { memoryTokens } from './tokens.js';
import { Stores } from './stores.js';
import { Logs } from './logs.js';
import { fromHex, toHex, utf8 } from './bytes.js';
import { SyncError } from './errors.js';

/**
 * @typedef {object} Session
 * @property {string} token
 * @property {number} expires
 * @property {string} keySalt 64 hex chars (SPEC §3)
 */

/**
 * @typedef {object} Changes
 * @property {number} seq the cursor to pass as `since` next
 * @property {string} generation
 * @property {boolean} more
 * @property {{key: string, seq: number, token: string|null, permission: string|null, logHead: number|null}[]} changes
 */

export class SyncClient {
  /**
   * @param {object} options
   * @param {string} options.url the server, e.g. `https://sync.example.org`
   * @param {import('./tokens.js').TokenStore} [options.tokens] where the session token is kept (default: memory)
   * @param {(error: import('./errors.js').SyncError) => void} [options.onUnauthorized] called when the server rejects the token (expired, revoked)
   * @param {typeof fetch} [options.fetch] a fetch to use instead of the global one
   */
  constructor(options) {
    this.transport = new Transport({ ...options, tokens: options.tokens ?? memoryTokens() });
    this.stores = new Stores(this.transport);
    this.logs = new Logs(this.transport, this.stores);
    /** @type {string|undefined} the account's `key_salt`, once known */
    this.keySalt = undefined;
  }

  /** The token store in use. */
  get tokens() {
    return this.transport.tokens;
  }

  /** `GET /v1/info`: the server's limits and `generation` (cached). */
  info() {
    return this.transport.info();
  }

  /**
   * Creates an account and signs in (keeps the token).
   * @param {{id: string, password: string, invite?: string}} account
   * @returns {Promise<Session>}
   */
  async register({ id, password, invite }) {
    const json = invite === undefined ? { id, password } : { id, password, invite };
    return this.#keep(await this.transport.json('POST', '/v1/accounts', { json, auth: false }));
  }

  /** @param {{id: string, password: string}} credentials @returns {Promise<Session>} */
  async signIn({ id, password }) {
    return this.#keep(await this.transport.json('POST', '/v1/sessions', { json: { id, password }, auth: false }));
  }

  /** Ends this session (the token no longer works anywhere) and forgets it. */
  async signOut() {
    try {
      await this.transport.request('DELETE', '/v1/sessions/current', { expect: [401] });
    } finally {
      await this.tokens.set(null);
    }
  }

  /** Ends every session of the account, this one included. */
  async signOutEverywhere() {
    try {
      await this.transport.request('DELETE', '/v1/sessions', { expect: [401] });
    } finally {
      await this.tokens.set(null);
    }
  }

  /** `GET /v1/account`. @returns {Promise<{account: string, keySalt: string, storeCount: number, bytesUsed: number, quotaBytes: number|null}>} */
  async account() {
    const a = await this.transport.json('GET', '/v1/account');
    this.keySalt = a.key_salt;
    return { account: a.account, keySalt: a.key_salt, storeCount: a.store_count, bytesUsed: a.bytes_used, quotaBytes: a.quota_bytes };
  }

  /** Other sessions are revoked; this one stays. @param {{password: string, newPassword: string}} change */
  async changePassword({ password, newPassword }) {
    await this.transport.request('PUT', '/v1/account/password', { json: { password, new_password: newPassword } });
  }

  /** Asks the server to send a reset token to the owner of `id` (202 whether or not it exists). @param {string} id */
  async requestReset(id) {
    await this.transport.request('POST', '/v1/password-reset', { json: { id }, auth: false });
  }

  /** Sets a new password with a reset token; every session is revoked. @param {{id: string, token: string, newPassword: string}} reset */
  async confirmReset({ id, token, newPassword }) {
    await this.transport.request('POST', '/v1/password-reset/confirm', { json: { id, token, new_password: newPassword }, auth: false });
  }

  /** Deletes the account and the stores it alone owns. @param {{password: string}} confirm */
  async deleteAccount({ password }) {
    await this.transport.request('DELETE', '/v1/account', { json: { password } });
    await this.tokens.set(null);
  }

  /**
   * `GET /v1/changes`. @param {{since: number, wait?: number, limit?: number, signal?: AbortSignal}} query
   * @returns {Promise<Changes>}
   */
  async changes({ since, wait, limit, signal }) {
    let path = `/v1/changes?since=${since}`;
    if (wait) path += `&wait=${wait}`;
    if (limit) path += `&limit=${limit}`;
    return changesOf(await this.transport.json('GET', path, { signal }));
  }

  /**
   * Follows the feed as a stream of server-sent events (SPEC §6.1) from
   * `since`: yields `{type: 'open'}` once the server answers, then
   * `{type: 'changes', ...page}` for each page of changes as it is
   * committed, or `{type: 'gone'}` (the cursor is no longer covered: list
   * again from 0) after which it ends. It ends when the server ends the
   * stream (after an hour, or when it stops). `fetch` streaming carries
   * the `Authorization` header, which `EventSource` cannot. A server that
   * answers without a stream throws `SyncError('no_stream')`.
   * @param {{since: number, signal?: AbortSignal}} query
   * @returns {AsyncGenerator<{type: 'open'} | {type: 'gone'} | ({type: 'changes'} & Changes)>}
   */
  async *stream({ since, signal }) {
    const response = await this.transport.request('GET', `/v1/changes?since=${since}`, { headers: { Accept: 'text/event-stream' }, signal });
    if (!response.headers.get('Content-Type')?.startsWith('text/event-stream') || !response.body) {
      await response.body?.cancel().catch(() => undefined);
      throw new SyncError('no_stream', 'the server does not offer the feed as a stream');
    }
    yield { type: 'open' };
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffered = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffered += value.replaceAll('\r\n', '\n');
        if (buffered.length > MAX_EVENT_CHARS) throw new SyncError('bad_response', 'a feed event too large to be one');
        for (let end = buffered.indexOf('\n\n'); end >= 0; end = buffered.indexOf('\n\n')) {
          const event = parseEvent(buffered.slice(0, end));
          buffered = buffered.slice(end + 2);
          if (event.type === 'gone') {
            yield { type: 'gone' };
            return;
          }
          if (event.type === 'changes') yield { type: 'changes', ...changesOf(parseData(event.data)) };
        }
      }
    } finally {
      reader.cancel().catch(() => undefined);
    }
  }

  /**
   * The recommended store key for a name (SPEC §3): hex(HMAC-SHA256(key_salt,
   * name)), so the server never learns names. Needs a session.
   * @param {string} name
   */
  async keyFor(name) {
    if (!this.keySalt) await this.account();
    const key = await crypto.subtle.importKey('raw', fromHex(/** @type {string} */ (this.keySalt)), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
    return toHex(new Uint8Array(await crypto.subtle.sign('HMAC', key, utf8(name))));
  }

  /**
   * The server's passphrase-KDF salt for `id` (`GET /v1/accounts/{id}/salt`,
   * no session needed; every id has one).
   * @param {string} id @returns {Promise<Uint8Array>}
   */
  async kdfSalt(id) {
    const raw = await this.transport.json('GET', `/v1/accounts/${encodeURIComponent(id)}/salt`, { auth: false });
    if (typeof raw?.salt !== 'string' || !/^[0-9a-f]{64}$/.test(raw.salt)) throw new SyncError('bad_response', 'the server gave no passphrase salt (a server older than this client?)');
    return fromHex(raw.salt);
  }

  /** @param {any} raw @returns {Promise<Session>} */
  async #keep(raw) {
    await this.tokens.set(raw.token);
    this.keySalt = raw.key_salt;
    return { token: raw.token, expires: raw.expires, keySalt: raw.key_salt };
  }
}

/** The longest a stream's event may be (a page of 1000 changes is ~200 KB). */
const MAX_EVENT_CHARS = 8 * 1024 * 1024;

/** A feed page from the server's JSON. @param {any} raw @returns {Changes} */
function changesOf(raw) {
  if (!Array.isArray(raw?.changes) || typeof raw.seq !== 'number') throw new SyncError('bad_response', 'a feed page without changes or seq');
  return {
    seq: raw.seq,
    generation: raw.generation,
    more: raw.more,
    changes: raw.changes.map((/** @type {any} */ c) => ({
      key: c.key,
      seq: c.seq,
      token: c.token,
      permission: c.permission,
      logHead: c.log_head,
    })),
  };
}

/** One server-sent event's fields (comments and unknown fields skipped). @param {string} block */
function parseEvent(block) {
  let type = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'event') type = value;
    else if (field === 'data') data.push(value);
  }
  return { type: block.split('\n').every((line) => line.startsWith(':')) ? 'comment' : type, data: data.join('\n') };
}

/** @param {string} data */
function parseData(data) {
  try {
    return JSON.parse(data);
  } catch (cause) {
    throw new SyncError('bad_response', 'a feed event that is not JSON', { cause });
  }
}

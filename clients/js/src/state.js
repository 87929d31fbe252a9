/**
 * What a device remembers between sessions, so a malicious server cannot
 * quietly take it back in time: pins (the account's salts, the keyring
 * version, each store's incarnation and highest version) and unconfirmed
 * log entries (sealed). A state store is any `{get, set, delete}` (sync
 * or async) over JSON values; memory (the default: forgotten on reload)
 * and `localStorage` are built in.
 */

import { SyncError } from './errors.js';

/**
 * @typedef {object} StateStore
 * @property {(key: string) => any} get the value (JSON), or undefined
 * @property {(key: string, value: any) => void|Promise<void>} set
 * @property {(key: string) => void|Promise<void>} delete
 * @property {(prefix: string) => string[]|Promise<string[]>} keys the keys starting with `prefix`
 */

/** A state store that lasts as long as the page or process. @returns {StateStore} */
export function memoryState() {
  /** @type {Map<string, string>} */
  const values = new Map();
  return {
    get: (key) => (values.has(key) ? JSON.parse(/** @type {string} */ (values.get(key))) : undefined),
    set: (key, value) => void values.set(key, JSON.stringify(value)),
    delete: (key) => void values.delete(key),
    keys: (prefix) => [...values.keys()].filter((k) => k.startsWith(prefix)),
  };
}

/**
 * The default: `localStorage` where there is one (browsers: pins survive
 * reloads), else memory (Node: pass a persistent store of your own).
 * @returns {StateStore}
 */
export function defaultState() {
  try {
    if (globalThis.localStorage) return localStorageState();
  } catch {
    // Storage disabled (some private modes): memory it is.
  }
  return memoryState();
}

/**
 * A state store in `localStorage` under keys starting with `prefix`
 * (shared by the tabs of one origin; survives restarts).
 * @param {string} [prefix] @returns {StateStore}
 */
export function localStorageState(prefix = 'sync-node-state:') {
  const storage = () => globalThis.localStorage;
  return {
    get: (key) => {
      const raw = storage().getItem(prefix + key);
      return raw === null ? undefined : JSON.parse(raw);
    },
    set: (key, value) => storage().setItem(prefix + key, JSON.stringify(value)),
    delete: (key) => storage().removeItem(prefix + key),
    keys: (start) => {
      const out = [];
      for (let i = 0; i < storage().length; i++) {
        const k = storage().key(i);
        if (k?.startsWith(prefix + start)) out.push(k.slice(prefix.length));
      }
      return out;
    },
  };
}

/**
 * A store's pin: the incarnation this device last saw, the highest version
 * of it, the incarnations it saw end (deleted, or replaced by a new one),
 * and when it was last raised (`at`, ms on this device's clock).
 * @typedef {{incarnation: string, version: number, retired: string[], at?: number}} StorePin
 */

/**
 * Whether a pin may judge an answer to a request sent at `since`: one
 * raised after the request went out was raised by this device's own
 * writes or by another tab (the answer may honestly predate them), so it
 * judges only later requests. `since` undefined: always.
 * @param {{at?: number}|undefined} pin @param {number} [since]
 */
export const judges = (pin, since) => pin !== undefined && (since === undefined || (pin.at ?? 0) <= since);

/** Pins of one account on one server. */
export class Pins {
  /** @param {StateStore} state @param {string} scope server and account */
  constructor(state, scope) {
    this.state = state;
    this.scope = scope;
  }

  /**
   * Checks `value` against the pinned value of `name` (pinning it when
   * there is none): a change is `account_changed`, never followed.
   * @param {string} name @param {string} value @param {string} what
   */
  async pinAccount(name, value, what) {
    const key = `${this.scope}|account|${name}`;
    const pinned = await this.state.get(key);
    if (pinned === undefined) await this.state.set(key, value);
    else if (pinned !== value) {
      throw new SyncError('account_changed', `the server now gives another ${what} for this account than this device pinned: it was replaced (or the server lies); nothing was read or written`);
    }
  }

  /** Whether this device has opened the account on format 2 (then a format-1 sign-in is never tried). */
  async isFormat2() {
    return (await this.state.get(`${this.scope}|format`)) === 2;
  }

  async setFormat2() {
    if (!(await this.isFormat2())) await this.state.set(`${this.scope}|format`, 2);
  }

  /**
   * The highest keyring version seen; an older one is `rollback`.
   * @param {number} version @param {number} [since] when the request that read it was sent
   */
  async keyringVersion(version, since) {
    const key = `${this.scope}|keyring`;
    /** @type {{v: number, at?: number}|number|undefined} */
    const stored = await this.state.get(key);
    const pin = typeof stored === 'number' ? { v: stored } : stored;
    if (judges(pin, since) && version < /** @type {{v: number}} */ (pin).v) throw new SyncError('rollback', `the server served keyring version ${version}; this device has seen ${pin?.v}`);
    if (!pin || version > pin.v) await this.state.set(key, { v: version, at: Date.now() });
  }

  /**
   * Checks a store version against the pin and raises the pin. A lower
   * version of the same incarnation, or an incarnation seen retired, is
   * `rollback`.
   * @param {string} location @param {string} incarnation @param {number} version @param {number} [since] when the request that read it was sent
   */
  async storeVersion(location, incarnation, version, since) {
    const key = `${this.scope}|store|${location}`;
    /** @type {StorePin|undefined} */
    const stored = await this.state.get(key);
    const pin = judges(stored, since) ? stored : undefined;
    if (pin?.retired.includes(incarnation)) {
      throw new SyncError('rollback', 'the server served a store that this device saw deleted or replaced (an old incarnation)');
    }
    if (pin && pin.incarnation === incarnation && version < pin.version) {
      throw new SyncError('rollback', `the server served version ${version} of a store this device has seen at version ${pin.version}`);
    }
    // Incarnations start with their creation time: one made before the one pinned is an old one.
    if (pin && pin.incarnation !== incarnation && incarnation.slice(0, 12) < pin.incarnation.slice(0, 12)) {
      throw new SyncError('rollback', 'the server served an incarnation of this store made before the one this device saw');
    }
    const newer = !stored || (stored.incarnation === incarnation ? version > stored.version : incarnation.slice(0, 12) >= stored.incarnation.slice(0, 12));
    if (newer && !stored?.retired.includes(incarnation)) {
      const retired = stored && stored.incarnation !== incarnation ? [...stored.retired, stored.incarnation].slice(-32) : (stored?.retired ?? []);
      await this.state.set(key, { incarnation, version, retired, at: Date.now() });
    }
  }

  /** The store was deleted: its incarnation may never come back. @param {string} location */
  async retire(location) {
    const key = `${this.scope}|store|${location}`;
    /** @type {StorePin|undefined} */
    const pin = await this.state.get(key);
    if (pin && !pin.retired.includes(pin.incarnation)) await this.state.set(key, { ...pin, retired: [...pin.retired, pin.incarnation].slice(-32), at: Date.now() });
  }
}

/**
 * Where the session token lives between page loads. A token store is any
 * object with `get()` and `set(token|null)` (sync or async); two are built
 * in: memory (the default) and `localStorage`.
 */

/** @typedef {{get(): string|null|Promise<string|null>, set(token: string|null): void|Promise<void>}} TokenStore */

/** A token store that forgets on reload. @returns {TokenStore} */
export function memoryTokens() {
  /** @type {string|null} */
  let token = null;
  return {
    get: () => token,
    set: (value) => {
      token = value;
    },
  };
}

/**
 * A token store in `localStorage` under `name` (shared by the tabs of one
 * origin). @param {string} [name] @returns {TokenStore}
 */
export function localStorageTokens(name = 'sync-node-token') {
  return {
    get: () => globalThis.localStorage.getItem(name),
    set: (value) => {
      if (value === null) globalThis.localStorage.removeItem(name);
      else globalThis.localStorage.setItem(name, value);
    },
  };
}

/**
 * The conditional-write loop: write against the version the data is based
 * on; on 412 ask the app's `resolve` what to write instead (offering the
 * winner's state first, its body only if asked for), and try again until
 * the write wins or `resolve` gives up. From the second conflict on, a
 * short random pause (full jitter, at most a second) keeps writers that
 * keep colliding from starving one another.
 */

import { SyncError } from './errors.js';
import { backoffDelay, sleep } from './backoff.js';

/**
 * @template T
 * @typedef {(local: T, remote: () => Promise<Remote<T>|null>, current: import('./errors.js').CurrentState|null) => T|null|undefined|Promise<T|null|undefined>} Resolve
 *   Called on a conflict with what you tried to write (`local`), a function
 *   that downloads the version that won (`remote`; `null` if it was deleted
 *   since) and that version's state as the 412 told it (`current`: token,
 *   size, meta, seq; no download). Return what to write now (usually a
 *   merge), or `null` to give up and keep the winner.
 */

/** @template T @typedef {{data: T, token: string}} Remote */

/**
 * @template T, R
 * @param {object} o
 * @param {T} o.data what to write
 * @param {string|null} o.base the token it is based on (`null`: create)
 * @param {(data: T, base: string|null) => Promise<R>} o.write one conditional write
 * @param {() => Promise<Remote<T>|null>} o.fetchRemote downloads the current version
 * @param {Resolve<T>} [o.resolve] without one, a 412 is thrown
 * @param {number} [o.maxAttempts]
 * @returns {Promise<{written: R}|{skipped: true, current: import('./errors.js').CurrentState|null}>}
 */
export async function writeUntilWon({ data, base, write, fetchRemote, resolve, maxAttempts = 50 }) {
  let local = data;
  let against = base;
  for (let attempt = 0; attempt < maxAttempts; attempt++) {
    try {
      return { written: await write(local, against) };
    } catch (error) {
      if (!(error instanceof SyncError) || error.status !== 412 || !resolve) throw error;
      /** @type {Remote<T>|null|undefined} */
      let remote;
      const download = async () => (remote === undefined ? (remote = await fetchRemote()) : remote);
      const merged = await resolve(local, download, error.current);
      if (merged === null || merged === undefined) return { skipped: true, current: error.current };
      local = merged;
      if (attempt > 0) await sleep(backoffDelay(attempt - 1, { baseMs: 20, capMs: 1000 }));
      // Base the next try on what the app looked at: the downloaded body if
      // it asked for it, else the state the 412 reported (none: the store
      // is gone, so create it again).
      against = remote !== undefined ? (remote?.token ?? null) : (error.current?.token ?? null);
    }
  }
  throw new SyncError('conflict_unresolved', `no write won in ${maxAttempts} attempts`);
}

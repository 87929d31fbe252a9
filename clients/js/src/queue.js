/**
 * The offline write queue: writes that could not reach the server are kept
 * in order in a `QueueStore` and replayed, in order and each still
 * conditional, once it answers again (also after a restart of the app).
 * Two stores share one small interface: memory and IndexedDB.
 */

/**
 * @typedef {{id: number} & Record<string, any>} QueuedWrite
 * @typedef {object} QueueStore
 * @property {(record: Record<string, any>) => Promise<number>} add keeps a record; returns its id (ids increase)
 * @property {() => Promise<QueuedWrite[]>} list every record, oldest first
 * @property {(id: number) => Promise<void>} remove
 * @property {string} [lockName] a name shared by every instance over the same
 *   storage (tabs of one origin): replays then take a Web Lock by it, so two
 *   tabs never replay one queue at once
 */

/** A queue store that lasts as long as the page or process. @returns {QueueStore} */
export function memoryQueueStore() {
  /** @type {QueuedWrite[]} */
  const records = [];
  let next = 1;
  return {
    add: async (record) => {
      const id = next++;
      records.push({ ...structuredClone(record), id });
      return id;
    },
    list: async () => records.map((r) => structuredClone(r)),
    remove: async (id) => {
      const at = records.findIndex((r) => r.id === id);
      if (at >= 0) records.splice(at, 1);
    },
  };
}

/**
 * A queue store in IndexedDB (browsers): survives reloads and restarts.
 * @param {string} [name] the database name
 * @returns {QueueStore}
 */
export function indexedDbQueueStore(name = 'sync-node-queue') {
  /** @type {Promise<IDBDatabase>|null} */
  let opened = null;
  const db = () =>
    (opened ??= new Promise((resolve, reject) => {
      const request = globalThis.indexedDB.open(name, 1);
      request.onupgradeneeded = () => request.result.createObjectStore('writes', { keyPath: 'id', autoIncrement: true });
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    }));
  /** @template T @param {IDBTransactionMode} mode @param {(store: IDBObjectStore) => IDBRequest<T>} act @returns {Promise<T>} */
  const run = async (mode, act) => {
    const tx = (await db()).transaction('writes', mode);
    const request = act(tx.objectStore('writes'));
    return new Promise((resolve, reject) => {
      tx.oncomplete = () => resolve(request.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  };
  return {
    lockName: `sync-node-queue:${name}`,
    add: async (record) => Number(await run('readwrite', (s) => s.add({ ...record }))),
    list: async () => /** @type {QueuedWrite[]} */ (await run('readonly', (s) => s.getAll())),
    remove: async (id) => {
      await run('readwrite', (s) => s.delete(id));
    },
  };
}

export class OfflineQueue {
  /** @param {QueueStore} store */
  constructor(store) {
    this.store = store;
    /** @type {Promise<number>|null} */
    this.replaying = null;
  }

  /** @param {Record<string, any>} write */
  add(write) {
    return this.store.add(write);
  }

  /** How many writes wait (of every account). */
  async size() {
    return (await this.store.list()).length;
  }

  /**
   * Replays the queued writes in order with `execute`. A write that fails
   * with a transient error (no answer, 503, 429 …) or for want of a session
   * (401: sign in again, then replay) stops the replay and stays first in
   * line; one the server refuses for good is handed to `onFailure` and
   * taken out of the queue. One replay at a time (across tabs too, when
   * the store has a `lockName`). Returns how many remain.
   * Writes `mine` turns down are left for another replay.
   * @param {(write: QueuedWrite) => boolean} mine
   * @param {(write: QueuedWrite) => Promise<void>} execute
   * @param {(write: QueuedWrite, error: unknown) => void} [onFailure]
   */
  replay(mine, execute, onFailure) {
    const run = async () => {
      for (const write of (await this.store.list()).filter(mine)) {
        try {
          await execute(write);
        } catch (error) {
          const e = /** @type {any} */ (error);
          if (e?.transient || e?.status === 401) break;
          onFailure?.(write, error);
        }
        await this.store.remove(write.id);
      }
      return (await this.store.list()).filter(mine).length;
    };
    const locks = globalThis.navigator?.locks;
    const lockName = this.store.lockName;
    this.replaying ??= (locks && lockName ? locks.request(lockName, run) : run()).finally(() => {
      this.replaying = null;
    });
    return this.replaying;
  }
}

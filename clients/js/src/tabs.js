/**
 * One feed connection per origin, shared by all tabs: the tabs elect a
 * leader with a Web Lock; the leader alone runs a `Feed` and broadcasts
 * what it emits on a BroadcastChannel; the others listen. When the
 * leader's tab closes, its lock is released and another tab takes over,
 * from the shared persisted cursor. Where Web Locks or BroadcastChannel
 * are missing (Node), every instance simply leads.
 */

import { Feed } from './feed.js';

export class SharedFeed extends EventTarget {
  /**
   * @param {import('./client.js').SyncClient} client
   * @param {ConstructorParameters<typeof Feed>[1] & {name?: string}} [options]
   *   `name` tells apart feeds of different accounts or servers (default:
   *   the server URL); the cursor should be shared by the tabs too
   *   (e.g. `localStorageCursor`).
   */
  constructor(client, options = {}) {
    super();
    this.client = client;
    this.options = options;
    this.name = `sync-node-feed:${options.name ?? client.transport.base}`;
    /** @type {'leader'|'follower'|'stopped'} */
    this.role = 'stopped';
    /** @type {Feed|null} */
    this.feed = null;
    /** @type {BroadcastChannel|null} */
    this.channel = null;
    /** @type {(() => void)|null} */
    this.release = null;
  }

  /** Starts following, as leader or as follower. */
  start() {
    if (this.role !== 'stopped') return;
    const locks = globalThis.navigator?.locks;
    if (!locks || typeof BroadcastChannel === 'undefined') {
      this.#lead();
      return;
    }
    this.role = 'follower';
    const channel = new BroadcastChannel(this.name);
    this.channel = channel;
    channel.onmessage = (event) => {
      if (this.role === 'follower') this.dispatchEvent(new CustomEvent(event.data.type, { detail: event.data.detail }));
    };
    // This start's claim on the lock: stop() releases it, or withdraws it
    // while it still waits.
    const claim = new AbortController();
    const held = new Promise((resolve) => claim.signal.addEventListener('abort', resolve, { once: true }));
    this.release = () => claim.abort();
    locks
      .request(this.name, { signal: claim.signal }, async () => {
        if (claim.signal.aborted || this.channel !== channel) return;
        this.#lead();
        await held;
      })
      .catch(() => undefined); // withdrawn by stop()
  }

  #lead() {
    this.role = 'leader';
    // Other tabs rely on this one: hidden or not, it keeps polling.
    this.feed = new Feed(this.client, { ...this.options, pauseWhenHidden: false });
    for (const type of ['changes', 'status', 'error']) {
      this.feed.addEventListener(type, (event) => {
        const detail = /** @type {CustomEvent} */ (event).detail;
        this.dispatchEvent(new CustomEvent(type, { detail }));
        // Errors do not survive structured cloning whole: send their gist.
        const shared = type === 'error' ? { code: detail?.code, message: String(detail?.message ?? detail) } : detail;
        this.channel?.postMessage({ type, detail: shared });
      });
    }
    this.feed.start();
  }

  /** Stops following; a leader hands the feed to another tab. */
  async stop() {
    this.role = 'stopped';
    // Everything this start owns is taken now: a start() made while this
    // stop waits builds its own.
    const feed = this.feed;
    const release = this.release;
    this.feed = null;
    this.release = null;
    this.channel?.close();
    this.channel = null;
    await feed?.stop();
    release?.();
  }
}

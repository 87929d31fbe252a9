/**
 * The feed follower: follows `GET /v1/changes` from a persisted cursor and
 * emits what changed — as a stream of server-sent events where the server
 * offers one (one connection, pushed to; it resumes from the last event's
 * seq), else by long-polling. It backs off with full jitter on failures
 * (honouring `Retry-After`), pauses while the page is hidden or the
 * browser offline, and on a `410` or a new server `generation` starts over
 * with a full listing (`since=0`) flagged `resync`, after which the app
 * must re-check what it holds.
 *
 * Events (it is an EventTarget; `event.detail` carries the data):
 * - `changes`: `{changes, seq, resync}`
 * - `status`: `'connecting' | 'live' | 'paused' | 'backoff' | 'unauthorized' | 'stopped'`
 *   (`unauthorized`: the session ended; the feed has stopped, `start()` it
 *   again after signing in)
 * - `error`: the error before a back-off
 */

import { SyncError } from './errors.js';
import { backoffDelay, sleep } from './backoff.js';

/**
 * @typedef {{seq: number, generation: string|null}} Cursor
 * @typedef {{get(): Cursor|null|Promise<Cursor|null>, set(cursor: Cursor): void|Promise<void>}} CursorStore
 */

/** A cursor kept in memory. @returns {CursorStore} */
export function memoryCursor() {
  /** @type {Cursor|null} */
  let cursor = null;
  return { get: () => cursor, set: (c) => void (cursor = c) };
}

/** A cursor kept in `localStorage` under `name`. @param {string} name @returns {CursorStore} */
export function localStorageCursor(name) {
  return {
    get: () => JSON.parse(globalThis.localStorage.getItem(name) ?? 'null'),
    set: (c) => globalThis.localStorage.setItem(name, JSON.stringify(c)),
  };
}

export class Feed extends EventTarget {
  /**
   * @param {import('./client.js').SyncClient} client
   * @param {object} [options]
   * @param {CursorStore} [options.cursor] where the cursor persists (default: memory, starting with a full listing)
   * @param {boolean} [options.stream] follow the feed as a stream when the server offers it (default true; false: long-poll)
   * @param {number} [options.wait] long-poll seconds, 1 to 59 (below 60 so proxies keep the request; default 50)
   * @param {number} [options.limit] changes per answer
   * @param {boolean} [options.pauseWhenHidden] pause while the page is hidden (default true; offline always pauses)
   * @param {(changes: any[]) => Promise<any[]>|any[]} [options.decorate] adds to each change before it is emitted
   * @param {{baseMs?: number, capMs?: number}} [options.backoff]
   */
  constructor(client, options = {}) {
    super();
    this.client = client;
    this.cursor = options.cursor ?? memoryCursor();
    this.wait = Math.min(Math.max(Math.round(options.wait ?? 50), 1), 59);
    /** Whether to try the stream (cleared for good when the server offers none). */
    this.streaming = options.stream ?? true;
    this.limit = options.limit;
    this.pauseWhenHidden = options.pauseWhenHidden ?? true;
    this.decorate = options.decorate ?? ((/** @type {any[]} */ c) => c);
    this.backoff = options.backoff ?? {};
    /** @type {string} */
    this.status = 'stopped';
    /** @type {{abort: AbortController, done: Promise<void>}|null} the running loop */
    this.run = null;
    /** @type {AbortController|null} what the loop waits for now */
    this.currentStep = null;
    this.paused = false;
    this.onVisibility = () => {
      const hidden = this.pauseWhenHidden && globalThis.document?.visibilityState === 'hidden';
      this.#setPaused(hidden || globalThis.navigator?.onLine === false);
    };
  }

  /** Starts following (a feed already running goes on). */
  start() {
    if (this.run) return;
    globalThis.document?.addEventListener?.('visibilitychange', this.onVisibility);
    globalThis.addEventListener?.('online', this.onVisibility);
    globalThis.addEventListener?.('offline', this.onVisibility);
    this.onVisibility();
    const run = { abort: new AbortController(), done: Promise.resolve() };
    this.run = run;
    run.done = this.#loop(run);
  }

  /** Stops following; a poll in flight is aborted. Resolves once stopped. */
  async stop() {
    const run = this.run;
    if (!run) return;
    this.run = null;
    globalThis.document?.removeEventListener?.('visibilitychange', this.onVisibility);
    globalThis.removeEventListener?.('online', this.onVisibility);
    globalThis.removeEventListener?.('offline', this.onVisibility);
    run.abort.abort();
    await run.done;
  }

  /** @param {boolean} paused */
  #setPaused(paused) {
    if (paused === this.paused) return;
    this.paused = paused;
    // Wakes the loop from its poll or sleep: it pauses, or resumes at once.
    this.currentStep?.abort();
  }

  /** @param {string} status */
  #emitStatus(status) {
    if (status === this.status) return;
    this.status = status;
    this.dispatchEvent(new CustomEvent('status', { detail: status }));
  }

  /** @param {{abort: AbortController}} run */
  async #loop(run) {
    let failures = 0;
    const live = () => this.run === run && !run.abort.signal.aborted;
    while (live()) {
      // One controller per step, tied to the run's: stop() ends both.
      const step = new AbortController();
      this.currentStep = step;
      const stopped = () => step.abort();
      run.abort.signal.addEventListener('abort', stopped, { once: true });
      try {
        if (this.paused) {
          this.#emitStatus('paused');
          await sleep(60_000, step.signal);
          continue;
        }
        await this.#step(step.signal);
        failures = 0;
      } catch (error) {
        if (!live() || step.signal.aborted) continue;
        this.dispatchEvent(new CustomEvent('error', { detail: error }));
        if (error instanceof SyncError && error.status === 401) {
          // Signed out or revoked: polling again cannot help. Start again
          // after signing in.
          this.#emitStatus('unauthorized');
          if (this.run === run) this.run = null;
          break;
        }
        const retryAfter = error instanceof SyncError ? error.retryAfter : null;
        this.#emitStatus('backoff');
        await sleep(backoffDelay(failures++, { ...this.backoff, retryAfterSeconds: retryAfter }), step.signal);
      } finally {
        run.abort.signal.removeEventListener('abort', stopped);
      }
    }
    if (!this.run && this.status !== 'unauthorized') this.#emitStatus('stopped');
  }

  /** One answer from the feed. @param {AbortSignal} signal */
  async #step(signal) {
    const saved = await this.cursor.get();
    if (!saved) return this.#resync(signal);
    if (this.status !== 'live') this.#emitStatus('connecting');
    if (this.streaming) {
      try {
        return await this.#follow(saved, signal);
      } catch (error) {
        if (error instanceof SyncError && error.status === 410) return this.#resync(signal);
        if (!(error instanceof SyncError && error.code === 'no_stream')) throw error;
        // An older server, or a proxy in the way: long-poll from now on.
        this.streaming = false;
      }
    }
    let answer;
    try {
      answer = await this.client.changes({ since: saved.seq, wait: this.status === 'live' ? this.wait : 0, limit: this.limit, signal });
    } catch (error) {
      if (error instanceof SyncError && error.status === 410) return this.#resync(signal);
      throw error;
    }
    if (saved.generation !== null && answer.generation !== saved.generation) return this.#resync(signal);
    this.#emitStatus('live');
    if (answer.changes.length > 0) await this.#emit(answer.changes, answer.seq, false);
    await this.cursor.set({ seq: answer.seq, generation: answer.generation });
  }

  /**
   * Follows the stream from `saved` until the server ends it. A stream
   * ended within a second of opening (an account's oldest, evicted by its
   * newer ones) counts as a failure, so reconnecting backs off.
   * @param {Cursor} saved @param {AbortSignal} signal
   */
  async #follow(saved, signal) {
    // A stream says nothing until something changes, so each (re)connection
    // first asks once without waiting: a restored server (new generation)
    // or a forgotten cursor (410) is noticed at once, as when polling.
    const answer = await this.client.changes({ since: saved.seq, limit: this.limit, signal });
    if (saved.generation !== null && answer.generation !== saved.generation) return this.#resync(signal);
    if (answer.changes.length > 0) await this.#emit(answer.changes, answer.seq, false);
    let cursor = { seq: answer.seq, generation: answer.generation };
    await this.cursor.set(cursor);
    const opened = Date.now();
    for await (const item of this.client.stream({ since: cursor.seq, signal })) {
      if (item.type === 'open') {
        this.#emitStatus('live');
        continue;
      }
      if (item.type === 'gone') return this.#resync(signal);
      if (item.seq < cursor.seq) throw new SyncError('bad_response', `the feed went back from ${cursor.seq} to ${item.seq}`);
      if (cursor.generation !== null && item.generation !== cursor.generation) return this.#resync(signal);
      if (item.changes.length > 0) await this.#emit(item.changes, item.seq, false);
      cursor = { seq: item.seq, generation: item.generation };
      await this.cursor.set(cursor);
    }
    if (Date.now() - opened < 1000) throw new SyncError('stream_ended', 'the server ended the feed stream at once');
  }

  /**
   * Everything accessible now (`since=0`, all pages), emitted with
   * `resync: true`; the cursor then continues from there.
   * @param {AbortSignal} signal
   */
  async #resync(signal) {
    this.#emitStatus('connecting');
    let since = 0;
    let answer;
    const all = [];
    do {
      answer = await this.client.changes({ since, limit: this.limit, signal });
      all.push(...answer.changes);
      since = answer.seq;
    } while (answer.more);
    this.#emitStatus('live');
    await this.#emit(all, answer.seq, true);
    await this.cursor.set({ seq: answer.seq, generation: answer.generation });
  }

  /** @param {any[]} changes @param {number} seq @param {boolean} resync */
  async #emit(changes, seq, resync) {
    const decorated = await this.decorate(changes);
    this.dispatchEvent(new CustomEvent('changes', { detail: { changes: decorated, seq, resync } }));
  }
}

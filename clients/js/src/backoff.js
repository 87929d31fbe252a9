/**
 * Retry delays: exponential back-off with full jitter (a random delay
 * between 0 and min(cap, base · 2^attempt)), never shorter than what the
 * server asked for with `Retry-After`.
 */

/**
 * @param {number} attempt 0 for the first retry
 * @param {{baseMs?: number, capMs?: number, retryAfterSeconds?: number|null, random?: () => number}} [options]
 */
export function backoffDelay(attempt, { baseMs = 500, capMs = 30_000, retryAfterSeconds = null, random = Math.random } = {}) {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  const jittered = Math.floor(random() * ceiling);
  return retryAfterSeconds === null ? jittered : Math.max(jittered, retryAfterSeconds * 1000);
}

/** A sleep that an AbortSignal cuts short. @param {number} ms @param {AbortSignal} [signal] */
export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve(undefined);
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

// A small assert that runs in browsers and Node alike.
import { SyncError } from '../../src/index.js';

export function ok(value, message = 'expected a truthy value') {
  if (!value) throw new Error(message);
}

export function equal(actual, expected, message = '') {
  if (!Object.is(actual, expected)) throw new Error(`${message} expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
}

export function deepEqual(actual, expected, message = '') {
  const a = JSON.stringify(actual, (_, v) => (v instanceof Uint8Array ? [...v] : v));
  const e = JSON.stringify(expected, (_, v) => (v instanceof Uint8Array ? [...v] : v));
  if (a !== e) throw new Error(`${message} expected ${e}, got ${a}`);
}

/** Awaits `promise` and checks it failed with a SyncError of `code` (and `status`). */
export async function rejects(promise, code, status) {
  try {
    await promise;
  } catch (error) {
    if (!(error instanceof SyncError)) throw new Error(`expected SyncError ${code}, got ${error}`);
    equal(error.code, code, 'error code:');
    if (status !== undefined) equal(error.status, status, 'status:');
    return error;
  }
  throw new Error(`expected SyncError ${code}, but it succeeded`);
}

/** Polls `check` until it returns truthy or `ms` pass. */
export async function eventually(check, ms = 10_000, message = 'condition') {
  const end = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > end) throw new Error(`${message} not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export const text = (bytes) => new TextDecoder().decode(bytes);

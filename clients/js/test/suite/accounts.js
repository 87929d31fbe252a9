// What the plain-client suites share: a fresh account on the suite's server.
import { SyncClient } from '../../src/index.js';

export const PASSWORD = 'correct horse battery';
export const bytes = (s) => new TextEncoder().encode(s);

/** Registers a new id; returns its signed-in client and the id. */
export async function account(env, tokens) {
  const client = new SyncClient({ url: env.url, tokens });
  const id = env.unique('api');
  await client.register({ id, password: PASSWORD });
  return { client, id };
}

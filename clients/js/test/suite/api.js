// Sessions and accounts through the plain client, against the real server.
import { SyncClient, memoryTokens } from '../../src/index.js';
import { deepEqual, equal, ok, rejects } from './assert.js';
import { PASSWORD, account, bytes } from './accounts.js';


export default {
  name: 'api',
  tests: {
    async 'info publishes the limits'(env) {
      const info = await new SyncClient({ url: env.url }).info();
      equal(info.name, 'sync-node');
      ok(/^[0-9a-f]{32}$/.test(info.generation), 'generation');
      ok(info.max_entry_bytes > 0 && info.max_page === 1000);
    },

    async 'register, sign in, account, sign out, sign out everywhere'(env) {
      const tokens = memoryTokens();
      const { client, id } = await account(env, tokens);
      ok(/^[0-9a-f]{64}$/.test(client.keySalt), 'key_salt');
      await rejects(client.register({ id: id.toUpperCase(), password: PASSWORD }), 'account_exists', 409);
      const other = new SyncClient({ url: env.url });
      const session = await other.signIn({ id: ` ${id.toUpperCase()} `, password: PASSWORD });
      equal(session.keySalt, client.keySalt);
      const a = await client.account();
      equal(a.storeCount, 0);
      equal(a.keySalt, client.keySalt);
      await client.signOut();
      equal(await tokens.get(), null, 'token forgotten');
      await rejects(client.account(), 'unauthorized', 401);
      await other.signOutEverywhere();
      await rejects(other.account(), 'unauthorized', 401);
      await rejects(other.signIn({ id, password: 'wrong password!' }), 'invalid_credentials', 401);
    },

    async 'onUnauthorized hears of a revoked token'(env) {
      const heard = [];
      const client = new SyncClient({ url: env.url, onUnauthorized: (e) => heard.push(e.code) });
      const id = env.unique('unauth');
      await client.register({ id, password: PASSWORD });
      const elsewhere = new SyncClient({ url: env.url });
      await elsewhere.signIn({ id, password: PASSWORD });
      await elsewhere.signOutEverywhere();
      await rejects(client.stores.list(), 'unauthorized', 401);
      deepEqual(heard, ['unauthorized']);
    },

    async 'password change, reset and account deletion'(env) {
      const { client, id } = await account(env);
      await rejects(client.changePassword({ password: 'not the password', newPassword: 'another long one' }), 'wrong_password', 403);
      await client.changePassword({ password: PASSWORD, newPassword: 'another long one' });
      await client.signIn({ id, password: 'another long one' });
      await rejects(client.requestReset(id), 'not_configured', 501);
      const token = await env.resetToken(id);
      await rejects(client.confirmReset({ id, token: 'wrong', newPassword: 'third password' }), 'bad_request', 400);
      await client.confirmReset({ id, token, newPassword: 'third password' });
      await rejects(client.account(), 'unauthorized', 401);
      await client.signIn({ id, password: 'third password' });
      await client.stores.put('doomed-' + id, bytes('x'));
      await client.deleteAccount({ password: 'third password' });
      await rejects(client.signIn({ id, password: 'third password' }), 'invalid_credentials');
    },

    async 'throttling is a typed 429 with Retry-After'(env) {
      const { id } = await account(env);
      const client = new SyncClient({ url: env.url });
      for (let i = 0; i < 5; i++) await rejects(client.signIn({ id, password: `wrong guess ${i}` }), 'invalid_credentials', 401);
      const error = await rejects(client.signIn({ id, password: PASSWORD }), 'too_many_requests', 429);
      ok(error.retryAfter > 0, 'Retry-After in seconds');
      ok(error.transient, '429 is transient');
    },
  },
};

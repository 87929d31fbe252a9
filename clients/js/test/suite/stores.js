// Stores and sharing through the plain client, against the real server.
import { deepEqual, equal, ok, rejects, text } from './assert.js';
import { account, bytes } from './accounts.js';


export default {
  name: 'stores',
  tests: {
    async 'stores: conditional put, get, head, 304, delete'(env) {
      const { client } = await account(env);
      const created = await client.stores.put('s1', bytes('one'), { meta: 'hello' });
      ok(created.created);
      equal(created.size, 3);
      ok(/^[0-9a-f]{64}$/.test(created.token));
      const got = await client.stores.get('s1');
      equal(text(got.data), 'one');
      equal(got.token, created.token);
      equal(got.meta, 'hello');
      equal(got.permission, 'OWN');
      equal(got.seq, created.seq);
      const head = await client.stores.head('s1');
      equal(head.token, created.token);
      equal(head.size, 3);
      deepEqual(await client.stores.get('s1', { ifNoneMatch: created.token }), { notModified: true, token: created.token });
      await rejects(client.stores.put('s1', bytes('blind')), 'precondition_required', 428);
      const stale = await rejects(client.stores.put('s1', bytes('stale'), { ifMatch: 'f'.repeat(64) }), 'precondition_failed', 412);
      equal(stale.current.token, created.token);
      equal(stale.etag, created.token);
      const second = await client.stores.put('s1', bytes('two'), { ifMatch: created.token, meta: null });
      ok(!second.created);
      equal((await client.stores.get('s1')).meta, null);
      await rejects(client.stores.put('s1', bytes('x'), { ifNoneMatch: '*' }), 'precondition_failed', 412);
      await client.stores.delete('s1', { ifMatch: second.token });
      equal(await client.stores.get('s1'), null);
      equal(await client.stores.head('s1'), null);
      await rejects(client.stores.delete('s1'), 'not_found', 404);
    },

    async 'an oversized body is refused before it is sent'(env) {
      const { client } = await account(env);
      const info = await client.info();
      const error = await rejects(client.stores.put('big', new Uint8Array(info.max_store_bytes + 1)), 'payload_too_large', 413);
      ok(/at most/.test(error.message));
    },

    async 'list follows more across pages'(env) {
      const { client } = await account(env);
      for (const k of ['b', 'a', 'd', 'c', 'e']) await client.stores.put(`${k}-list`, bytes(k));
      const page = await client.stores.listPage({ limit: 2 });
      equal(page.stores.length, 2);
      ok(page.more);
      const all = await client.stores.list({ limit: 2 });
      deepEqual(all.stores.map((s) => s.key), ['a-list', 'b-list', 'c-list', 'd-list', 'e-list']);
      equal(all.seq, page.seq);
    },

    async 'sharing: grant, list permissions, revoke'(env) {
      const { client } = await account(env);
      const { client: friend, id: friendId } = await account(env);
      await client.stores.put('shared-' + friendId, bytes('for you'));
      await client.stores.share('shared-' + friendId, friendId, 'READ');
      const perms = await client.stores.permissions('shared-' + friendId);
      equal(perms.length, 2);
      equal(perms.filter((p) => p.you)[0].permission, 'OWN');
      equal(text((await friend.stores.get('shared-' + friendId)).data), 'for you');
      await rejects(friend.stores.put('shared-' + friendId, bytes('no'), { ifMatch: '*' }), 'forbidden', 403);
      await rejects(client.stores.share('shared-' + friendId, 'nobody-' + friendId, 'READ'), 'no_such_account', 404);
      await client.stores.share('shared-' + friendId, friendId, null);
      equal(await friend.stores.get('shared-' + friendId), null);
    },
  },
};

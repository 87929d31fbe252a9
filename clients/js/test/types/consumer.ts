// A small TypeScript app against the packed package: it must compile with
// the shipped .d.ts (strict), and misuse must not.
import { SyncClient, SyncError, Vault, memoryState, type Item } from 'sync-node-client';

export async function app(url: string): Promise<string | null> {
  const client = new SyncClient({ url });
  const vault = await Vault.open(client, { id: 'ada@example.org', passphrase: 'correct horse battery staple', state: memoryState() });
  const result = await vault.put('todo', 'milk', { meta: { title: 'Shopping' } });
  if ('written' in result) console.log(result.token.length, result.version);
  const item: Item | null = await vault.get('todo');
  for (const listed of await vault.list()) {
    if (listed.name === null) console.log(listed.error.code);
    else console.log(listed.meta, listed.version);
  }
  try {
    await vault.delete('todo');
  } catch (error) {
    if (error instanceof SyncError && error.code === 'rollback') return null;
  }
  return item ? new TextDecoder().decode(item.data) : null;
}

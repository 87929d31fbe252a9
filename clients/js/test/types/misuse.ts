// Must NOT compile: the types catch these mistakes.
import { SyncClient, Vault } from 'sync-node-client';

export async function misuse(client: SyncClient) {
  await Vault.open(client, { id: 'x', passphrase: 42 });
  const vault = await Vault.open(client, { id: 'x', passphrase: 'p' });
  await vault.put('todo', { not: 'bytes' });
}

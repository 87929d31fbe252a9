// An Automerge document synced between two devices through a Sync Node
// store log, end-to-end encrypted: every change is appended as one sealed
// log entry, the other device pulls and applies it, and every
// `compactEvery` edits the device that edited writes a snapshot
// (Automerge.save) that folds the log in.
//
//   npm install && node sync.mjs [server URL] [--shared]   (default http://localhost:8080)
//   --shared: the two devices are two people, the document shared from one to the other
import * as Automerge from '@automerge/automerge';
import { SyncClient, Vault } from '../../src/index.js';

/**
 * @param {string} url the server
 * @param {{edits?: number, compactEvery?: number, log?: (line: string) => void}} [options]
 */
export async function demo(url, { edits = 100, compactEvery = 20, shared = false, log = console.log } = {}) {
  const id = `automerge-${Date.now().toString(36)}@example.org`;
  const passphrase = 'automerge example passphrase';
  const vaults = [await Vault.create(new SyncClient({ url }), { id, passphrase })];
  // Two devices of one account, or (shared) two people: the second is another account the document is shared with.
  const second = shared ? `friend-${id}` : id;
  vaults.push(await (shared ? Vault.create : Vault.open)(new SyncClient({ url }), { id: second, passphrase }));
  const initial = Automerge.save(Automerge.from({ items: [] }));
  const target = 'shopping list';
  if (shared) {
    await vaults[0].document(target).load(initial);
    await vaults[0].fingerprint(second); // in an app: shown to both people, compared out of band
    await vaults[0].share(target, second, 'WRITE');
  }
  const devices = [];
  for (const [n, vault] of vaults.entries()) {
    const document = vault.document(shared && n === 1 ? { key: await vaults[0].keyOf(target) } : target);
    const { snapshot, updates } = await document.load(initial);
    const [doc] = Automerge.applyChanges(Automerge.load(snapshot), updates);
    devices.push({ document, doc });
  }
  let appendedBytes = 0;
  let compactions = 0;
  for (let i = 0; i < edits; i++) {
    const me = devices[i % 2];
    const other = devices[(i + 1) % 2];
    me.doc = Automerge.change(me.doc, (d) => {
      d.items.push(`item ${i} from device ${i % 2}`);
    });
    const change = /** @type {Uint8Array} */ (Automerge.getLastLocalChange(me.doc));
    await me.document.append(change);
    appendedBytes += change.length;
    await catchUp(other);
    if ((i + 1) % compactEvery === 0) {
      await catchUp(me);
      if (await me.document.compact(Automerge.save(me.doc))) compactions++;
    }
  }
  for (const device of devices) await catchUp(device);
  const [a, b] = devices.map((d) => d.doc.items.length);
  log(`${edits} edits, ${compactions} compactions, ${appendedBytes} bytes of changes appended; both devices hold ${a} and ${b} items`);
  return { items: devices.map((d) => [...d.doc.items]), compactions };
}

/** Applies what the other device appended (or reloads after its compaction). */
async function catchUp(device) {
  const pulled = await device.document.pull();
  const base = 'reload' in pulled ? Automerge.merge(Automerge.load(pulled.snapshot), device.doc) : device.doc;
  [device.doc] = Automerge.applyChanges(base, pulled.updates);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await demo(process.argv[2] ?? 'http://localhost:8080', { shared: process.argv.includes('--shared') });
}

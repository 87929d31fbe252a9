// Notes: a small end-to-end encrypted notes app on Sync Node. Each note is
// a store named `note:<id>`, its title in the (sealed) metadata. Changes
// from other devices arrive through the feed; a save that meets a newer
// version merges line by line instead of overwriting it.
import { SyncClient, Vault, SyncError } from '../../src/index.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
if (params.get('server')) $('server').value = params.get('server');

/** @type {Vault} */
let vault;
let current = null; // the open note's name
let dirty = false;

async function start(create) {
  $('problem').textContent = '';
  const client = new SyncClient({ url: $('server').value });
  const options = { id: $('id').value, passphrase: $('passphrase').value };
  try {
    vault = create ? await Vault.create(client, options) : await Vault.open(client, options);
  } catch (error) {
    $('problem').textContent = error instanceof SyncError && error.code === 'invalid_credentials' ? 'Unknown id or wrong passphrase.' : String(error.message);
    return;
  }
  $('signin').hidden = true;
  $('app').hidden = false;
  await refreshList();
  const feed = vault.follow({ wait: 25 });
  feed.addEventListener('status', (e) => {
    $('status').textContent = e.detail;
    $('status').className = e.detail;
  });
  feed.addEventListener('changes', async (e) => {
    if (!e.detail.changes.some((c) => c.name?.startsWith('note:'))) return;
    await refreshList();
    if (current && !dirty && e.detail.changes.some((c) => c.name === current)) await openNote(current);
    else if (current && e.detail.changes.some((c) => c.name === current)) $('note-state').textContent = 'changed on another device: saving will merge';
  });
  feed.start();
}

async function refreshList() {
  // A note whose metadata the server damaged is listed with `error`: shown, not hidden.
  const notes = (await vault.list()).filter((n) => n.name === null || n.name.startsWith('note:'));
  notes.sort((a, b) => (a.meta?.title ?? '').localeCompare(b.meta?.title ?? ''));
  $('list').replaceChildren(
    ...notes.map((n) => {
      const li = document.createElement('li');
      li.textContent = 'error' in n ? `⚠ damaged by the server (${n.error.code})` : n.meta?.title || 'Untitled';
      li.dataset.name = n.name;
      li.className = n.name === current ? 'current' : '';
      if (n.name !== null) li.onclick = () => openNote(n.name);
      return li;
    }),
  );
}

async function openNote(name) {
  const note = await vault.get(name);
  current = name;
  dirty = false;
  $('editor').hidden = false;
  $('title').value = note?.meta?.title ?? '';
  $('body').value = note ? new TextDecoder().decode(note.data) : '';
  $('note-state').textContent = note ? `version ${note.version}` : '';
  for (const li of $('list').children) li.className = li.dataset.name === name ? 'current' : '';
}

/** Keeps every line of the other version and adds this device's new lines. */
function mergeLines(local, remoteText) {
  const remoteLines = remoteText.split('\n');
  const added = local.split('\n').filter((line) => !remoteLines.includes(line));
  return [...remoteLines, ...added].join('\n');
}

async function save() {
  const name = current;
  const text = $('body').value;
  const result = await vault.put(name, text, {
    meta: { title: $('title').value },
    resolve: async (local, remote) => {
      const theirs = await remote();
      // `local` is what was saved (a string); the winner comes as bytes.
      return theirs ? mergeLines(local, new TextDecoder().decode(theirs.data)) : local;
    },
  });
  if ('skipped' in result) $('note-state').textContent = 'kept the other version';
  dirty = false;
  await openNote(name);
  await refreshList();
  return result;
}

$('signin').onsubmit = (e) => {
  e.preventDefault();
  start(false);
};
$('create').onclick = () => $('signin').reportValidity() && start(true);
$('new').onclick = async () => {
  current = `note:${crypto.randomUUID()}`;
  dirty = true;
  $('editor').hidden = false;
  $('title').value = 'New note';
  $('body').value = '';
  $('title').focus();
};
$('save').onclick = save;
$('title').oninput = $('body').oninput = () => {
  dirty = true;
  $('note-state').textContent = 'not saved';
};

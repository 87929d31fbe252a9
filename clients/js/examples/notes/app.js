// Notes: a small end-to-end encrypted notes app on Sync Node. Each note is
// a store named `note:<id>`, its title in the (sealed) metadata. Changes
// from other devices (and other people a note is shared with) arrive
// through the feed; a save that meets a newer version merges line by
// line instead of overwriting it. A note is shared after both people
// compared safety numbers, and unshared (re-keyed) in one click.
import { SyncClient, Vault, SyncError } from '../../src/index.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
if (params.get('server')) $('server').value = params.get('server');

/** @type {Vault} */
let vault;
let current = null; // the open note: {key, name}
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
  $('my-number').textContent = await vault.myFingerprint();
  await refreshList();
  const feed = vault.follow({ wait: 25 });
  feed.addEventListener('status', (e) => {
    $('status').textContent = e.detail;
    $('status').className = e.detail;
  });
  feed.addEventListener('changes', async (e) => {
    if (!e.detail.changes.some((c) => c.name?.startsWith('note:') || c.token === null)) return;
    await refreshList();
    const mine = current && e.detail.changes.find((c) => c.key === current.key);
    if (mine && mine.token === null) closeNote('no longer shared with you');
    else if (mine && !dirty) await openNote(current);
    else if (mine) $('note-state').textContent = 'changed on another device: saving will merge';
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
      const shared = n.permission && n.permission !== 'OWN' ? ' (shared with you)' : '';
      li.textContent = 'error' in n ? `⚠ damaged by the server (${n.error.code})` : `${n.meta?.title || 'Untitled'}${shared}`;
      li.dataset.key = n.key;
      li.className = n.key === current?.key ? 'current' : '';
      if (n.name !== null) li.onclick = () => openNote({ key: n.key, name: n.name });
      return li;
    }),
  );
}

async function openNote(note) {
  const item = await vault.get({ key: note.key }).catch(() => null);
  if (!item) return closeNote('this note is gone');
  current = note;
  dirty = false;
  $('editor').hidden = false;
  $('sharing').hidden = item.permission !== 'OWN';
  $('title').value = item.meta?.title ?? '';
  $('body').value = new TextDecoder().decode(item.data);
  $('note-state').textContent = `version ${item.version}`;
  for (const li of $('list').children) li.className = li.dataset.key === note.key ? 'current' : '';
}

function closeNote(why) {
  current = null;
  $('editor').hidden = true;
  $('share-state').textContent = '';
  $('list').title = why;
}

/** Keeps every line of the other version and adds this device's new lines. */
function mergeLines(local, remoteText) {
  const remoteLines = remoteText.split('\n');
  const added = local.split('\n').filter((line) => !remoteLines.includes(line));
  return [...remoteLines, ...added].join('\n');
}

async function save() {
  const note = current;
  const text = $('body').value;
  // A new note is written by name; one that exists (ours or shared with us) by its key.
  const target = note.created === false ? note.name : { key: note.key };
  const result = await vault.put(target, text, {
    meta: { title: $('title').value },
    resolve: async (local, remote) => {
      const theirs = await remote();
      // `local` is what was saved (a string); the winner comes as bytes.
      return theirs ? mergeLines(local, new TextDecoder().decode(theirs.data)) : local;
    },
  });
  if ('skipped' in result) $('note-state').textContent = 'kept the other version';
  dirty = false;
  current = { key: note.key, name: note.name };
  await openNote(current);
  await refreshList();
  return result;
}

$('share-check').onclick = async () => {
  $('share-state').textContent = '';
  try {
    $('share-number').textContent = await vault.fingerprint($('share-id').value);
    $('share-fingerprint').hidden = false;
  } catch (error) {
    $('share-state').textContent = error.code === 'no_such_account' ? 'No such account (or it has no keys yet).' : error.message;
  }
};
$('share-confirm').onclick = async () => {
  await vault.share({ key: current.key }, $('share-id').value, 'WRITE');
  $('share-state').textContent = `Shared with ${$('share-id').value}.`;
};
$('share-stop').onclick = async () => {
  await vault.unshare({ key: current.key }, $('share-id').value);
  $('share-state').textContent = `No longer shared with ${$('share-id').value}: the note has a new key.`;
};

$('signin').onsubmit = (e) => {
  e.preventDefault();
  start(false);
};
$('create').onclick = () => $('signin').reportValidity() && start(true);
$('new').onclick = async () => {
  const name = `note:${crypto.randomUUID()}`;
  current = { key: await vault.keyOf(name), name, created: false };
  $('sharing').hidden = true;
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

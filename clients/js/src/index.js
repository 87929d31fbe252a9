/**
 * Sync Node's JavaScript client: `SyncClient` for the plain HTTP API,
 * `Vault` for end-to-end encrypted stores, logs and documents, `Feed` and
 * `SharedFeed` to follow changes, the offline queue stores and the device
 * state stores (where a vault keeps its pins).
 */

export { SyncClient } from './client.js';
export { SyncError } from './errors.js';
export { memoryTokens, localStorageTokens } from './tokens.js';
export { Vault } from './vault.js';
export { LogDocument } from './document.js';
export { Feed, memoryCursor, localStorageCursor } from './feed.js';
export { SharedFeed } from './tabs.js';
export { OfflineQueue, memoryQueueStore, indexedDbQueueStore } from './queue.js';
export { backoffDelay } from './backoff.js';
export { padme, normaliseId, normalisePassphrase, MIN_PASSPHRASE, ARGON2, PAD_FLOOR, META_FLOOR } from './crypto.js';
export { memoryState, localStorageState } from './state.js';
export { VAULT_PREFIX } from './labels.js';
export { unframe } from './logs.js';

/** @typedef {import('./vault.js').Item} Item */
/** @typedef {import('./vault.js').Listed} Listed */
/** @typedef {import('./vault.js').PutResult} PutResult */
/** @typedef {import('./vault.js').Resolve} Resolve */
/** @typedef {import('./vault.js').VaultOptions} VaultOptions */
/** @typedef {import('./state.js').StateStore} StateStore */
/** @typedef {import('./queue.js').QueueStore} QueueStore */
/** @typedef {import('./errors.js').CurrentState} CurrentState */

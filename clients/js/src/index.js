/**
 * Sync Node's JavaScript client: `SyncClient` for the plain HTTP API,
 * `Vault` for end-to-end encrypted stores, logs and documents, `Feed` and
 * `SharedFeed` to follow changes, and the offline queue stores.
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
export { padme, normaliseId, MIN_ITERATIONS } from './crypto.js';
export { unframe } from './logs.js';

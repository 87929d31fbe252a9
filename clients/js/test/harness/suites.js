// The portable suites, run in Node and in Chromium alike.
import api from '../suite/api.js';
import stores from '../suite/stores.js';
import logs from '../suite/logs.js';
import vault, { keys as vaultKeys } from '../suite/vault.js';
import feed from '../suite/feed.js';
import queue from '../suite/queue.js';
import malicious from '../suite/malicious.js';
import sharing, { adversaries as sharingAdversaries, members as sharingMembers } from '../suite/sharing.js';

export const suites = [api, stores, logs, vault, vaultKeys, malicious, sharing, sharingAdversaries, sharingMembers, feed, queue];

// Runs the portable suites inside the page: the same tests as in Node,
// with the environment driven through the harness's /control endpoints.
import { suites } from './suites.js';
import { memoryQueueStore, indexedDbQueueStore } from '../../src/index.js';

let counter = 0;
const control = async (path, server, params = {}) => {
  const query = new URLSearchParams({ server, ...params });
  const response = await fetch(`/control/${path}?${query}`, { method: 'POST' });
  if (!response.ok) throw new Error(`control ${path}: ${await response.text()}`);
  return response.json();
};

const envs = new Map();

window.startSuite = async (name) => {
  const { url } = await control('start-server', name);
  const env = {
    url,
    unique: (prefix) => `${prefix}-b${Date.now().toString(36)}-${++counter}@example.org`,
    restart: () => control('restart', name),
    stop: () => control('stop', name),
    start: () => control('start', name),
    restoreBackup: () => control('restore', name),
    filesContain: async (text) => (await control('contains', name, { text })).found,
    resetToken: async (id) => (await control('reset-token', name, { id })).token,
    addAccount: async (id, password) => void (await control('add-account', name, { id, password })),
    queueStores: { memory: memoryQueueStore, indexedDb: indexedDbQueueStore },
  };
  envs.set(name, env);
  return Object.keys(suites.find((s) => s.name === name).tests);
};

window.runTest = async (suiteName, testName) => {
  try {
    await suites.find((s) => s.name === suiteName).tests[testName](envs.get(suiteName));
    return null;
  } catch (error) {
    return `${error?.name}: ${error?.message}\n${error?.stack ?? ''}`;
  }
};

window.ready = true;

// Syncs one Yjs document through a real Sync Node (the release build, started
// here on loopback with a temporary STATIC_ROOT), edited EDITS times, two ways:
//   appends: each edit's Yjs update is appended to the store's log (SPEC §9),
//            and every COMPACT_EVERY edits the whole state is written as the
//            new body with Sync-Log-Base (a compaction);
//   puts:    each edit writes the whole state as the store's new body.
// Prints, for each, the requests, the bytes of request bodies sent, and the
// time. Usage: cargo build --release && (cd bench/crdt && npm install && npm run bench)
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as Y from "yjs";

const EDITS = 1000;
const COMPACT_EVERY = 100;
const INITIAL_BYTES = 200_000; // about the 214 KB document of the published comparisons
const BIN = new URL("../../target/release/sync-node", import.meta.url).pathname;

function startServer() {
  const root = mkdtempSync(join(tmpdir(), "sync-node-crdt-"));
  const child = spawn(BIN, [], {
    env: { PORT: "0", BIND: "127.0.0.1", STATIC_ROOT: join(root, "data"), PBKDF2_ITERATIONS: "1000" },
    stdio: ["ignore", "ignore", "pipe"],
  });
  return new Promise((resolve, reject) => {
    let log = "";
    child.stderr.on("data", (chunk) => {
      log += chunk;
      const found = log.match(/listening on (http:\/\/\S+)/);
      if (found) resolve({ url: found[1], stop: () => { child.kill(); rmSync(root, { recursive: true, force: true }); } });
    });
    child.on("exit", () => reject(new Error(`sync-node exited: ${log}`)));
  });
}

// A deterministic stream of small edits: typing words at moving positions.
function* edits(seed) {
  let state = seed;
  const next = () => (state = (state * 1103515245 + 12345) % 2 ** 31);
  for (let i = 0; i < EDITS; i++) {
    const word = "lorem ipsum dolor sit amet consectetur adipiscing elit".split(" ")[next() % 8];
    yield { at: next(), text: `${word} ` };
  }
}

function documentWithText() {
  const doc = new Y.Doc();
  const text = doc.getText("body");
  const paragraph = "The quick brown fox jumps over the lazy dog while the sync server keeps every version safe. ";
  text.insert(0, paragraph.repeat(Math.ceil(INITIAL_BYTES / paragraph.length)).slice(0, INITIAL_BYTES));
  return doc;
}

async function run(server, token, mode) {
  const key = `doc-${mode}`;
  const doc = documentWithText();
  const text = doc.getText("body");
  const updates = [];
  doc.on("update", (update) => updates.push(update));
  let etag, logHead = 0, bytes = 0, requests = 0;
  const send = async (method, path, body, headers = {}) => {
    bytes += body.byteLength;
    requests += 1;
    const resp = await fetch(`${server.url}/v1/stores/${key}${path}`, {
      method, body, headers: { Authorization: `Bearer ${token}`, ...headers },
    });
    if (!resp.ok) throw new Error(`${method} ${path}: ${resp.status} ${await resp.text()}`);
    return resp;
  };
  const writeBody = async (extra = {}) => {
    const state = Y.encodeStateAsUpdate(doc);
    const resp = await send("PUT", "", state, etag ? { "If-Match": etag, ...extra } : { "If-None-Match": "*" });
    etag = resp.headers.get("ETag");
    await resp.arrayBuffer();
  };
  await writeBody();
  const started = performance.now();
  let edit = 0;
  for (const { at, text: typed } of edits(7)) {
    text.insert(at % (text.length + 1), typed);
    edit += 1;
    if (mode === "puts") {
      await writeBody();
    } else {
      const update = updates.pop();
      const resp = await send("POST", "/log", update, { "If-Log-Head": String(logHead) });
      logHead = (await resp.json()).log_head;
      if (edit % COMPACT_EVERY === 0) await writeBody({ "Sync-Log-Base": String(logHead) });
    }
    updates.length = 0;
  }
  const elapsed = performance.now() - started;
  const size = Y.encodeStateAsUpdate(doc).byteLength;
  return { mode, requests, bytes, elapsed, size };
}

const server = await startServer();
try {
  const resp = await fetch(`${server.url}/v1/accounts`, {
    method: "POST", body: JSON.stringify({ id: "crdt-bench", password: "benchmark password" }),
  });
  const { token } = await resp.json();
  const appends = await run(server, token, "appends");
  const puts = await run(server, token, "puts");
  console.log(`Yjs document of ${(appends.size / 1024).toFixed(0)} KiB at the end, ${EDITS} edits (${new Date().toISOString().slice(0, 10)})\n`);
  console.log("| sync by | requests | bytes sent | time | per edit |");
  console.log("|---|---:|---:|---:|---:|");
  for (const r of [appends, puts]) {
    console.log(`| ${r.mode === "appends" ? `log appends, compaction every ${COMPACT_EVERY}` : "whole-body PUTs"} | ${r.requests} | ${(r.bytes / 1024).toFixed(0)} KiB | ${(r.elapsed / 1000).toFixed(2)} s | ${(r.elapsed / EDITS).toFixed(2)} ms |`);
  }
  console.log(`\nwhole-body PUTs send ${(puts.bytes / appends.bytes).toFixed(1)} × the bytes and take ${(puts.elapsed / appends.elapsed).toFixed(1)} × the time.`);
} finally {
  server.stop();
}

// Starts the real sync-node binary for the client's tests: an ephemeral
// port, a temporary STATIC_ROOT, cheap server-side PBKDF2 (the client's
// own KDF stays at full cost). Node only.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, statSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const top = resolve(dirname(fileURLToPath(import.meta.url)), '../../../..');
export const binary = process.env.SYNC_NODE_BIN ?? join(top, 'target/debug/sync-node');

/** Builds the server binary once if it is missing (cargo test builds it too). */
export function ensureBinary() {
  try {
    statSync(binary);
  } catch {
    execFileSync('cargo', ['build', '--locked', '--quiet'], { cwd: top, stdio: 'inherit' });
  }
}

export class TestServer {
  constructor(env = {}) {
    this.root = mkdtempSync(join(tmpdir(), 'sync-node-js-'));
    this.env = env;
    this.port = 0;
    this.proc = null;
  }

  get dataDir() {
    return join(this.root, 'data');
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Starts (or restarts, on the same port) the server; resolves once it listens. */
  async start(dataDir = this.dataDir) {
    ensureBinary();
    const env = { ...process.env, STATIC_ROOT: dataDir, PORT: String(this.port), BIND: '127.0.0.1', PBKDF2_ITERATIONS: '1000', ...this.env };
    const proc = spawn(binary, [], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    this.output = '';
    await new Promise((resolveStart, reject) => {
      const timer = setTimeout(() => reject(new Error(`sync-node did not start: ${this.output}`)), 20_000);
      const scan = (chunk) => {
        this.output += chunk;
        const match = /listening on http:\/\/[^:]+:(\d+)/.exec(this.output);
        if (match) {
          clearTimeout(timer);
          this.port = Number(match[1]);
          resolveStart();
        }
      };
      proc.stdout.on('data', scan);
      proc.stderr.on('data', scan);
      proc.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`sync-node exited ${code}: ${this.output}`));
      });
    });
    return this;
  }

  /** SIGTERM and wait for the exit. */
  async stop() {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    await exited;
    this.proc = null;
  }

  async restart(dataDir) {
    await this.stop();
    // The port may linger for a moment after the old process exits.
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.start(dataDir);
      } catch (error) {
        if (attempt > 20) throw error;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /** Runs a sync-node command on the data directory; returns its stdout. */
  cli(args, input = '') {
    return execFileSync(binary, args, { env: { ...process.env, STATIC_ROOT: this.dataDir, ...this.env }, input }).toString();
  }

  /** Whether any file of the data directory (database, WAL, store files) holds `text`. */
  filesContain(text) {
    const needle = Buffer.from(text);
    const walk = (dir) =>
      readdirSync(dir, { withFileTypes: true }).some((entry) => {
        const path = join(dir, entry.name);
        return entry.isDirectory() ? walk(path) : readFileSync(path).includes(needle);
      });
    return walk(this.dataDir);
  }

  async dispose() {
    await this.stop();
    rmSync(this.root, { recursive: true, force: true });
  }
}

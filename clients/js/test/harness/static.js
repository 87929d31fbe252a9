// The page origin of the browser tests: serves this package's files, and
// /control/* endpoints through which pages drive the real servers (start,
// restart, stop, restore a backup, scan the data directory, reset tokens).
// Runs on another port than the servers, so every API call is cross-origin.
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { join, resolve, dirname, extname, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TestServer } from './server.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const types = { '.js': 'text/javascript', '.mjs': 'text/javascript', '.html': 'text/html', '.css': 'text/css', '.json': 'application/json', '.png': 'image/png' };

export async function startStatic() {
  /** @type {Map<string, TestServer>} */
  const servers = new Map();
  let restored = 0;
  const control = async (url) => {
    const name = url.searchParams.get('server') ?? 'default';
    if (url.pathname === '/control/start-server') {
      await servers.get(name)?.dispose();
      const server = new TestServer();
      servers.set(name, server);
      await server.start();
      return { url: server.url };
    }
    const server = servers.get(name);
    if (!server) throw new Error(`no server ${name}`);
    switch (url.pathname) {
      case '/control/restart':
      case '/control/start':
        await server.restart();
        return {};
      case '/control/stop':
        await server.stop();
        return {};
      case '/control/restore': {
        const copy = `${server.root}/restored-${++restored}`;
        server.cli(['backup', copy]);
        await server.restart(copy);
        return {};
      }
      case '/control/contains':
        return { found: server.filesContain(url.searchParams.get('text')) };
      case '/control/add-account':
        server.cli(['account', 'add', '--', url.searchParams.get('id')], `${url.searchParams.get('password')}\n`);
        return {};
      case '/control/reset-token':
        return { token: server.cli(['reset-token', url.searchParams.get('id')]).trim() };
      default:
        throw new Error(`unknown control ${url.pathname}`);
    }
  };
  const http = createServer(async (request, response) => {
    const url = new URL(request.url, 'http://localhost');
    try {
      if (url.pathname.startsWith('/control/')) {
        const body = JSON.stringify(await control(url));
        response.writeHead(200, { 'Content-Type': 'application/json' }).end(body);
        return;
      }
      const path = normalize(join(root, decodeURIComponent(url.pathname)));
      // The one runtime dependency is served to the pages (through their import map); nothing else of node_modules.
      const dependency = path.startsWith(join(root, 'node_modules/hash-wasm/dist/'));
      if (!path.startsWith(root) || (path.includes('node_modules') && !dependency)) throw Object.assign(new Error('outside'), { status: 403 });
      const file = await readFile(path);
      response.writeHead(200, { 'Content-Type': types[extname(path)] ?? 'application/octet-stream', 'Cache-Control': 'no-store' }).end(file);
    } catch (error) {
      response.writeHead(error.status ?? (error.code === 'ENOENT' ? 404 : 500), { 'Content-Type': 'text/plain' }).end(String(error.message));
    }
  });
  await new Promise((r) => http.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${http.address().port}`,
    servers,
    async close() {
      http.closeAllConnections();
      await new Promise((r) => http.close(r));
      for (const server of servers.values()) await server.dispose();
    },
  };
}

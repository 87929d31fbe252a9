// The shipped types: `npm pack` (which generates types/ from the JSDoc),
// install the tarball into a scratch TypeScript app, and compile a small
// consumer against it with strict settings; a file of deliberate misuse
// must fail to compile.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, copyFileSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const pkg = resolve(here, '..');
const tsc = join(pkg, 'node_modules/typescript/bin/tsc');

test('the packed package carries .d.ts files a strict TypeScript app compiles against', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'sync-node-types-'));
  try {
    const tarball = execFileSync('npm', ['pack', '--silent', '--pack-destination', scratch], { cwd: pkg }).toString().trim().split('\n').at(-1);
    const listing = execFileSync('tar', ['-tzf', join(scratch, tarball)]).toString();
    assert.match(listing, /package\/types\/index\.d\.ts/);
    assert.match(listing, /package\/types\/vault\.d\.ts/);
    const app = join(scratch, 'app');
    mkdirSync(join(app, 'node_modules/sync-node-client'), { recursive: true });
    execFileSync('tar', ['-xzf', join(scratch, tarball), '-C', join(app, 'node_modules/sync-node-client'), '--strip-components=1']);
    // Its dependency's types, as npm install would bring them.
    mkdirSync(join(app, 'node_modules/hash-wasm'), { recursive: true });
    execFileSync('cp', ['-r', join(pkg, 'node_modules/hash-wasm/.'), join(app, 'node_modules/hash-wasm')]);
    const config = { compilerOptions: { strict: true, noEmit: true, module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', lib: ['es2022', 'dom'], types: [] } };
    writeFileSync(join(app, 'package.json'), JSON.stringify({ type: 'module' }));
    writeFileSync(join(app, 'tsconfig.json'), JSON.stringify({ ...config, files: ['consumer.ts'] }));
    copyFileSync(join(here, 'types/consumer.ts'), join(app, 'consumer.ts'));
    const good = spawnSync(process.execPath, [tsc, '-p', app], { encoding: 'utf8' });
    assert.equal(good.status, 0, good.stdout + good.stderr);
    writeFileSync(join(app, 'tsconfig.json'), JSON.stringify({ ...config, files: ['misuse.ts'] }));
    copyFileSync(join(here, 'types/misuse.ts'), join(app, 'misuse.ts'));
    const bad = spawnSync(process.execPath, [tsc, '-p', app], { encoding: 'utf8' });
    assert.notEqual(bad.status, 0, 'misuse compiled');
    assert.match(bad.stdout, /misuse\.ts\(5,/, 'a number as passphrase is caught');
    assert.match(bad.stdout, /misuse\.ts\(7,/, 'an object as data is caught');
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
});

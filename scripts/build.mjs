// npm run build (also run by npm ci / npm install in a checkout, and by npm pack): compiles
// src/ to dist/ (JavaScript + .d.ts; relative .ts imports rewritten to .js) and copies every
// other file of src/ as it is (the dashboard, the report's client and styles, the mirror's
// worker: read or run next to the module that uses them). Plain JavaScript itself, so it needs
// nothing but typescript.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '..');
const dist = path.join(root, 'dist');
fs.rmSync(dist, { recursive: true, force: true }); // no stale modules from deleted sources
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const r = spawnSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.build.json')], { stdio: 'inherit' });
if (r.status !== 0) process.exit(r.status ?? 1);
for (const rel of assets(path.join(root, 'src'))) {
  fs.copyFileSync(path.join(root, 'src', rel), path.join(dist, rel));
}
fs.chmodSync(path.join(dist, 'cli', 'main.js'), 0o755);

/** The files below `dir` that tsc does not compile. */
function assets(dir, prefix = '') {
  return fs.readdirSync(path.join(dir, prefix), { withFileTypes: true }).flatMap((e) => {
    const rel = path.join(prefix, e.name);
    if (e.isDirectory()) return assets(dir, rel);
    return e.name.endsWith('.ts') ? [] : [rel];
  });
}

#!/usr/bin/env node
// Import cycles among the modules under src/ (type-only imports included: a cycle of types
// still ties two modules together). Prints each cycle and exits 1 when there is one; knip
// (.ci/run) does not look for cycles.
import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const SOURCE = /\.(ts|js|mjs)$/;

function sourceFiles(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(p);
    return SOURCE.test(e.name) && !e.name.endsWith('.d.ts') ? [p] : [];
  });
}

/** The files under src/ that `file` imports or re-exports from (relative specifiers only). */
function importsOf(file) {
  const src = ts.createSourceFile(file, fs.readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, false);
  const out = [];
  for (const s of src.statements) {
    const spec = (ts.isImportDeclaration(s) || ts.isExportDeclaration(s)) && s.moduleSpecifier;
    if (!spec || !ts.isStringLiteral(spec) || !spec.text.startsWith('.')) continue;
    const target = path.resolve(path.dirname(file), spec.text);
    if (fs.existsSync(target)) out.push(target);
  }
  return out;
}

const files = sourceFiles(path.join(root, 'src'));
const graph = new Map(files.map((f) => [f, importsOf(f)]));

// Depth-first search; a back edge to a module on the current path closes a cycle.
const cycles = [];
const state = new Map(); // file → 'open' while on the path, 'done' after
function visit(file, trail) {
  state.set(file, 'open');
  trail.push(file);
  for (const next of graph.get(file) ?? []) {
    if (state.get(next) === 'open') cycles.push([...trail.slice(trail.indexOf(next)), next]);
    else if (!state.has(next)) visit(next, trail);
  }
  trail.pop();
  state.set(file, 'done');
}
for (const f of files) if (!state.has(f)) visit(f, []);

for (const c of cycles) console.log(`import cycle: ${c.map((f) => path.relative(root, f)).join(' → ')}`);
console.log(`${files.length} modules under src/, ${cycles.length} import cycle(s)`);
process.exit(cycles.length ? 1 : 0);

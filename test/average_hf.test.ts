// keel average on Hugging Face model directories: the output is a directory that
// from_pretrained can load: the averaged model.safetensors plus the first input's config,
// generation and tokenizer files (byte for byte); weights and other files are not copied.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { readSafetensors, writeSafetensors } from '../src/io/safetensors.ts';
import { keel, tempRoot } from './helpers.ts';

const { fresh } = tempRoot('average-hf');
const SIDE = {
  'config.json': '{"model_type": "gpt2", "n_layer": 1}',
  'generation_config.json': '{"max_length": 20}',
  'tokenizer.json': '{"version": "1.0"}',
  'merges.txt': '#version: 0.2\nĠ t\n',
  'vocab.json': '{"a": 0}',
};

function hfDir(dir: string, scale: number): string {
  fs.mkdirSync(dir, { recursive: true });
  writeSafetensors(
    path.join(dir, 'model.safetensors'),
    [{ name: 'wte.weight', shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6], (x) => x * scale) }],
    { format: 'pt' },
  );
  for (const [n, text] of Object.entries(SIDE)) fs.writeFileSync(path.join(dir, n), text + (scale === 1 ? '' : ' '));
  fs.writeFileSync(path.join(dir, 'pytorch_model.bin'), 'old weights');
  fs.writeFileSync(path.join(dir, 'README.md'), 'card');
  return dir;
}

test("keel average of HF directories writes a loadable directory: averaged weights, the first input's side files", () => {
  const root = fresh('hf');
  const a = hfDir(path.join(root, 'step-100'), 1);
  const b = hfDir(path.join(root, 'step-200'), 3);
  const out = path.join(root, 'avg');
  const r = keel(['average', a, b, '-o', out, '--json']);
  assert.equal(r.status, 0, r.stderr);
  const s = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
  assert.deepEqual(s.copied, Object.keys(SIDE).sort());
  assert.deepEqual(fs.readdirSync(out).sort(), [...Object.keys(SIDE), 'model.safetensors'].sort());
  for (const n of Object.keys(SIDE)) assert.equal(fs.readFileSync(path.join(out, n), 'utf8'), fs.readFileSync(path.join(a, n), 'utf8'), n);
  const avg = readSafetensors(path.join(out, 'model.safetensors'));
  assert.deepEqual(Array.from(avg.tensors.get('wte.weight')!), [2, 4, 6, 8, 10, 12]);
  // A .safetensors output stays a single file.
  const file = path.join(root, 'avg.safetensors');
  assert.equal(keel(['average', a, b, '-o', file]).status, 0);
  assert.ok(fs.statSync(file).isFile());
});

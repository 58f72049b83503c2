// keel sample (deterministic for a seed, greedy = argmax, top-k respected), keel eval's default
// (the run's own validation split: the trainer's last val loss), keel --version and bare keel.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { pick } from '../src/model/sample.ts';
import { Rng } from '../src/util/rng.ts';
import { assertSeededSampling, keel, metrics, MICRO, tempRoot, writeCorpus, writeJson } from './helpers.ts';

const { root, fresh } = tempRoot('sample');
const corpus = writeCorpus(path.join(root, 'data'));
const micro = writeJson(path.join(root, 'micro.json'), MICRO);
const run = fresh('run');
const trained = keel(['train', { config: micro, data: corpus, batch: 4, steps: 40, evalTokens: 2000, out: run }]);
assert.equal(trained.status, 0, trained.stderr);

test('pick: greedy is the argmax; top-k never draws outside the k largest; temperature sharpens', () => {
  const logits = [0.1, 2.5, -1, 2.4, 0];
  assert.equal(pick(logits, { temperature: 0, topK: 0 }, new Rng(1)), 1);
  const rng = new Rng(7);
  const counts = [0, 0, 0, 0, 0];
  for (let i = 0; i < 4000; i++) counts[pick(logits, { temperature: 1, topK: 2 }, rng)]++;
  assert.deepEqual([counts[0], counts[2], counts[4]], [0, 0, 0]);
  // P(1)/P(3) = e^0.1 at temperature 1.
  assert.ok(Math.abs(counts[1] / counts[3] - Math.exp(0.1)) < 0.12, JSON.stringify(counts));
  let cold = 0;
  for (let i = 0; i < 2000; i++) cold += pick(logits, { temperature: 0.05, topK: 0 }, rng) === 1 ? 1 : 0;
  const p1 = Math.exp(2) / (1 + Math.exp(2)); // e^(0.1/0.05) : 1 against token 3; the rest ≈ 0
  assert.ok(Math.abs(cold / 2000 - p1) < 0.03, `${cold / 2000} vs ${p1}`);
});

test('keel sample: the same seed gives the same text, another seed other text; bytes only', () => {
  assertSeededSampling(run, 'The ', 60, [5, 6]);
  const greedy = keel(['sample', { checkpoint: run, prompt: 'The ', tokens: 20, temperature: 0 }]);
  assert.equal(greedy.status, 0, greedy.stderr);
  assert.ok(greedy.stdout.startsWith('The '));
  const bad = keel(['sample', { checkpoint: run, prompt: '' }]);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--prompt is empty/);
});

test("keel eval without --data scores the run's validation split: the trainer's final val loss", () => {
  const last = metrics(run)
    .filter((r) => typeof r.val_loss === 'number')
    .at(-1)!;
  const r = keel(['eval', { checkpoint: run, tokens: 2000, json: true }]);
  assert.equal(r.status, 0, r.stderr);
  const got = JSON.parse(r.stdout);
  assert.match(got.data, /validation split/);
  assert.ok(Math.abs(got.loss - (last.val_loss as number)) < 1e-9, `${got.loss} vs ${last.val_loss}`);
  const onFile = JSON.parse(keel(['eval', { checkpoint: run, data: corpus, tokens: 2000, json: true }]).stdout);
  assert.notEqual(onFile.loss, got.loss, 'with --data: the file from its start (training data)');
});

test("keel --version prints package.json's version; bare keel lists the commands", () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(import.meta.dirname, '..', 'package.json'), 'utf8'));
  const v = keel(['--version']);
  assert.equal(v.status, 0);
  assert.equal(v.stdout.trim(), pkg.version);
  const bare = keel([]);
  assert.equal(bare.status, 0);
  for (const c of ['train', 'eval', 'sample', 'serve']) assert.match(bare.stdout, new RegExp(`\\n  ${c} `));
});

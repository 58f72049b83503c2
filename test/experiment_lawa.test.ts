// `keel experiment lawa`: its measurements on hand-made curves, and a micro run end to end.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { firstReach, rises, runLawaExperiment, stepsToTargets } from '../src/experiments/lawa.ts';
import { writeLawaReport } from '../src/experiments/lawa_report.ts';
import { MICRO, tempRoot, writeCorpus } from './helpers.ts';

const { root, fresh } = tempRoot('exp-lawa');
const corpus = writeCorpus(path.join(root, 'data'));

test('steps to targets, first reach and rises on hand-made curves', () => {
  const c = { step: [10, 20, 30, 40, 50], raw: [3, 2.5, 2.6, 2.2, 2.0], lawa: [2.8, 2.3, 2.2, 2.1, 1.95], ema: [null, 2.6, 2.4, 2.3, 2.1] };
  assert.equal(firstReach(c.step, c.lawa, 2.5), 20);
  assert.equal(firstReach(c.step, c.ema, 2.0), null);
  assert.deepEqual(stepsToTargets(c), [
    { loss: 3, raw: 10, lawa: 10, ema: 20 },
    { loss: 2.5, raw: 20, lawa: 20, ema: 30 },
    { loss: 2.2, raw: 40, lawa: 30, ema: 50 },
    { loss: 2.0, raw: 50, lawa: 50, ema: null },
  ]);
  const r = rises(c.raw);
  assert.ok(Math.abs(r.total - 0.1) < 1e-12 && Math.abs(r.max - 0.1) < 1e-12);
  assert.deepEqual(rises(c.lawa), { total: 0, max: 0 });
});

test('a micro run writes results.json and report.html with raw, LAWA and EMA curves', async () => {
  const out = fresh('micro');
  const r = await runLawaExperiment({
    out,
    config: MICRO,
    configName: 'micro',
    data: corpus,
    lrs: [3e-2, 3e-3],
    steps: 12,
    batch: 2,
    k: 2,
    every: 2,
    ema: 0.9,
    evalEvery: 4,
    evalTokens: 257,
    progress: false,
  });
  writeLawaReport(out, r); // as `keel experiment lawa` does
  assert.equal(r.runs.length, 2);
  for (const run of r.runs) {
    assert.deepEqual(run.curve.step, [4, 8, 12]);
    assert.ok(run.curve.lawa.every((v) => typeof v === 'number'));
    assert.ok(run.targets.length > 0 && run.targets.every((t) => t.raw > 0));
  }
  const saved = JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8'));
  assert.equal(saved.runs.length, 2);
  const html = fs.readFileSync(path.join(out, 'report.html'), 'utf8');
  assert.match(html, /LAWA and EMA vs raw weights/);
  assert.match(html, /id="keel-data"/);
});

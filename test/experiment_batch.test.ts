// `keel experiment batch`: the critical-batch fit on synthetic (S, E) data with known S_min and
// E_min, the target-crossing interpolation, the rule fit, and a micro end-to-end run (2 batches ×
// 2 lrs × 1 ε: results.json, summaries, reuse, report.html) plus the command line's bad input.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../src/errors.ts';
import { crossing, fitCriticalBatch, fitRules, logSlope, runBatchExperiment, valueAt, type BatchExperimentOptions } from '../src/experiments/batch.ts';
import type { BatchResults } from '../src/experiments/batch_results.ts';
import { batchFindings, writeBatchReport } from '../src/experiments/batch_report.ts';
import { lrForBatch } from '../src/schedule/rules.ts';
import { keel, MICRO, tempRoot, writeCorpus } from './helpers.ts';

const { root, fresh } = tempRoot('experiment-batch');
const corpus = writeCorpus(path.join(root, 'data'));
const L0 = Math.log(256);

test('fitCriticalBatch recovers S_min, E_min and B_crit from exact and noisy hyperbolas', () => {
  const sMin = 120,
    eMin = 3000; // B_crit = 25
  const batches = [2, 4, 8, 16, 32, 64, 128];
  // (S/S_min − 1)(E/E_min − 1) = 1 with E = B·S ⇔ S = S_min(1 + E_min/(S_min·B)).
  const pts = batches.map((B) => ({ batch: B, steps: sMin * (1 + eMin / sMin / B) }));
  for (const p of pts) {
    const E = p.batch * p.steps;
    assert.ok(Math.abs((p.steps / sMin - 1) * (E / eMin - 1) - 1) < 1e-9);
  }
  const f = fitCriticalBatch(pts)!;
  assert.ok(Math.abs(f.s_min / sMin - 1) < 1e-4, `S_min ${f.s_min}`);
  assert.ok(Math.abs(f.e_min / eMin - 1) < 1e-4, `E_min ${f.e_min}`);
  assert.ok(Math.abs(f.b_crit / 25 - 1) < 1e-4, `B_crit ${f.b_crit}`);
  assert.ok(f.rms_log < 1e-6);
  // ±5 % multiplicative noise (fixed pattern): within 20 %.
  const noisy = pts.map((p, i) => ({ batch: p.batch, steps: p.steps * (1 + 0.05 * (i % 2 ? 1 : -1)) }));
  const g = fitCriticalBatch(noisy)!;
  assert.ok(Math.abs(g.b_crit / 25 - 1) < 0.2, `noisy B_crit ${g.b_crit}`);
  assert.ok(Math.abs(g.s_min / sMin - 1) < 0.2, `noisy S_min ${g.s_min}`);
  assert.equal(fitCriticalBatch([{ batch: 4, steps: 10 }]), null);
});

test('crossing interpolates linearly between the evaluations around the target', () => {
  const pts = [
    { step: 10, val_loss: 3 },
    { step: 20, val_loss: 2.5 },
    { step: 30, val_loss: 2.0 },
    { step: 40, val_loss: 2.2 },
  ];
  assert.equal(crossing(pts, 2.5, L0), 20);
  assert.ok(Math.abs(crossing(pts, 2.25, L0)! - 25) < 1e-9);
  assert.equal(crossing(pts, 1.9, L0), null);
  // Below the target at the first evaluation: interpolate from (0, L0).
  const f = crossing(pts, 4, L0)!;
  assert.ok(Math.abs(f - (10 * (L0 - 4)) / (L0 - 3)) < 1e-9);
  // Non-finite evaluations are skipped.
  assert.ok(
    Math.abs(
      crossing(
        [
          { step: 5, val_loss: 3 },
          { step: 10, val_loss: NaN },
          { step: 15, val_loss: 2 },
        ],
        2.5,
        L0,
      )! - 10,
    ) < 1e-9,
  );
  // valueAt: the b_simple series at the crossing step.
  const curve: [number, number][] = [
    [1, 2],
    [11, 4],
    [21, 10],
  ];
  assert.equal(valueAt(curve, 0), 2);
  assert.equal(valueAt(curve, 6), 3);
  assert.equal(valueAt(curve, 16), 7);
  assert.equal(valueAt(curve, 99), 10);
  assert.equal(valueAt([], 5), null);
});

test('fitRules ranks the generating rule first; logSlope measures the exponent', () => {
  const p = { bNoise: 8, eps: 1e-8, gradRms: 1e-3 };
  for (const rule of ['sqrt', 'sgd', 'linear'] as const) {
    const pts = [2, 4, 8, 16, 32, 64].map((B) => ({ batch: B, lr: 3e-3 * lrForBatch(rule, B, { baseLr: 1, baseBatch: 1, ...p }) }));
    const fits = fitRules(pts, p);
    assert.equal(fits[0].rule, rule);
    assert.ok(fits[0].rms_log2 < 1e-9);
    assert.ok(Math.abs(fits[0].scale - 3e-3) / 3e-3 < 1e-9);
  }
  assert.ok(Math.abs(logSlope([1, 4, 16].map((B) => ({ batch: B, lr: Math.sqrt(B) })))! - 0.5) < 1e-12);
});

const base = (out: string, over: Partial<BatchExperimentOptions> = {}): BatchExperimentOptions => ({
  out,
  batches: [2, 4],
  lrs: [2e-3, 8e-3],
  epsValues: [1e-8],
  tokens: 2048,
  config: MICRO,
  configName: 'micro',
  data: corpus,
  evalTokens: 257,
  evalPoints: 8,
  pilotBatch: 8,
  pilotSteps: 8,
  log: () => {},
  ...over,
});

test('micro end-to-end: pilot, 2 batches × 2 lrs × 1 ε, results.json, report, reuse', async () => {
  const out = fresh('e2e');
  const lines: string[] = [];
  const r = await runBatchExperiment(base(out, { log: (l) => lines.push(l) }));
  writeBatchReport(out, r); // as `keel experiment batch` does
  assert.equal(r.experiment, 'batch');
  assert.ok(r.complete);
  assert.ok(r.pilot && r.pilot.steps === 8);
  assert.ok(r.b_simple !== null && r.b_simple > 0, `b_simple ${r.b_simple}`);
  assert.equal(r.runs.length, 4);
  assert.equal(r.eps.length, 1);
  const e = r.eps[0];
  assert.deepEqual(
    e.rows.map((x) => x.batch),
    [2, 4],
  );
  assert.deepEqual(
    e.rows.map((x) => x.steps),
    [64, 32],
  );
  for (const row of e.rows) {
    assert.deepEqual(row.lrs_tried, [2e-3, 8e-3]);
    assert.ok(row.best_lr !== null);
    assert.ok(row.steps_to_target !== null, 'every batch reaches the default target');
    assert.equal(row.examples_to_target, row.steps_to_target! * row.batch);
    assert.ok(row.b_simple_at_target !== null && row.b_simple_at_target > 0);
  }
  assert.ok(e.target !== null && e.fit !== null);
  for (const run of r.runs) {
    assert.ok(fs.existsSync(path.join(out, run.run_dir, 'summary.json')));
    assert.ok(run.evals.length >= 4);
  }
  const saved = JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8')) as BatchResults;
  assert.equal(saved.runs.length, 4);
  const html = fs.readFileSync(path.join(out, 'report.html'), 'utf8');
  assert.match(html, /B_crit/);
  assert.match(html, /<svg/);
  assert.ok(batchFindings(r).length >= 3);
  // Rerun: everything reused, no training.
  const lines2: string[] = [];
  const r2 = await runBatchExperiment(base(out, { log: (l) => lines2.push(l) }));
  assert.ok(
    lines2.every((l) => !/^ε /.test(l)),
    lines2.join('\n'),
  );
  assert.deepEqual(
    r2.eps[0].rows.map((x) => x.best_lr),
    e.rows.map((x) => x.best_lr),
  );
  // Other settings: refused.
  await assert.rejects(runBatchExperiment(base(out, { tokens: 4096 })), UserError);
});

test('bad input is a UserError before anything is written', async () => {
  const out = fresh('bad');
  await assert.rejects(runBatchExperiment(base(out, { batches: [3, 4] })), UserError);
  await assert.rejects(runBatchExperiment(base(out, { batches: [4] })), UserError);
  await assert.rejects(runBatchExperiment(base(out, { tokens: 100 })), UserError);
  await assert.rejects(runBatchExperiment(base(out, { epsValues: [-1] })), UserError);
  assert.ok(!fs.existsSync(out));
  const cli = keel(['experiment', 'batch', { out, batches: '2,x' }]);
  assert.equal(cli.status, 2);
  assert.match(cli.stderr, /--batches/);
  const help = keel(['experiment', 'batch', '--help']);
  assert.equal(help.status, 0);
  assert.match(help.stdout, /--eps-values/);
});

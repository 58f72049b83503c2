// Learning-rate scaling rules (src/schedule/rules.ts), batch-size ramps (src/schedule/batch.ts)
// and `keel plan` (src/cli/plan.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { KAPPA2_OVER_BNOISE, lrForBatch, lrScale, signRho, surgePeak, type RuleParams } from '../src/schedule/rules.ts';
import { batchAt, parseBatchSpec, PRESET_ORIGINALS, roundToMicro, type BatchContext } from '../src/schedule/batch.ts';
import { keel, tempRoot, writeJson } from './helpers.ts';

const close = (a: number, b: number, rel = 1e-12, what = '') => assert.ok(Math.abs(a - b) <= rel * Math.abs(b), `${what} ${a} vs ${b}`);

// ---- rules --------------------------------------------------------------------------------

test('rules against hand-computed values; every rule gives baseLr at baseBatch', () => {
  const p: RuleParams = { baseLr: 1e-3, baseBatch: 64, bNoise: 256 };
  assert.equal(lrForBatch('none', 1024, p), 1e-3);
  close(lrForBatch('linear', 256, p), 4e-3);
  close(lrForBatch('sqrt', 256, p), 2e-3);
  close(lrForBatch('sqrt', 16, p), 5e-4);
  // sgd: (1/(1 + 256/256)) / (1/(1 + 256/64)) = 0.5/0.2
  close(lrForBatch('sgd', 256, p), 2.5e-3);
  close(lrForBatch('sgd', 16, p), (1e-3 * (1 / 17)) / 0.2);
  // signsgd and softsign, from the sign-descent model's own forms
  // (docs/batch-size.md#sign-descent-rules; evaluated by hand in Python):
  //   β = (1 + πκ²/(2B))^(−1/2), κ² = (1 + 4/π)·B_noise, β_n² = 1/(ρ − 1), ρ = 2 + π/2,
  //   η ∝ 1/[½(β_n/β + β/β_n)];  softsign: η ∝ √(B(B + B_κ))/(C·B + D·B_κ), B_κ = πκ²ν²/2, C/D = ρν².
  const q: RuleParams = { baseLr: 1e-3, baseBatch: 25, bNoise: 100 };
  close(lrForBatch('signsgd', 100, q), 0.001367190412031582, 1e-12, 'signsgd 100');
  close(lrForBatch('signsgd', 1000, q), 0.0013544814012633416, 1e-12, 'signsgd 1000');
  const s = { ...q, eps: 1e-5, gradRms: 2e-5 }; // ν² = 0.8
  close(lrForBatch('softsign', 100, s), 0.0013927370812714221, 1e-12, 'softsign 100');
  close(lrForBatch('softsign', 1000, s), 0.0014620618869819423, 1e-12, 'softsign 1000');
  for (const rule of ['none', 'linear', 'sqrt', 'sgd', 'signsgd', 'softsign'] as const) {
    assert.equal(lrForBatch(rule, 25, s), 1e-3, rule);
    close(lrScale(rule, 77, s) * 1e-3, lrForBatch(rule, 77, s), 1e-12, rule);
  }
});

test('signsgd: the surge peaks near B_noise, at (1 + 4/π)·B_noise; huge κ² gives the surge paper’s law', () => {
  const bn = 100;
  close(signRho(bn), 2 + Math.PI / 2);
  const peak = surgePeak(bn)!;
  close(peak, (1 + 4 / Math.PI) * bn);
  close(peak, KAPPA2_OVER_BNOISE * bn);
  const p = { baseLr: 1, baseBatch: 10, bNoise: bn };
  const at = (B: number) => lrForBatch('signsgd', B, p);
  assert.ok(at(peak) > at(peak * 0.9) && at(peak) > at(peak * 1.1), 'a maximum at the peak');
  assert.ok(at(1e6) < at(peak), 'falls past the peak');
  // Small B: √B scaling.
  close(at(0.01) / at(0.0025), 2, 1e-3, '√B at small B');
  // κ² → ∞: η ∝ 1/[½(√(B_noise/B) + √(B/B_noise))], peak at B_noise.
  const big = { ...p, kappa2: 1e9 * bn };
  const surge = (B: number) => 1 / (0.5 * (Math.sqrt(bn / B) + Math.sqrt(B / bn)));
  for (const B of [3, 30, 100, 300, 3000]) close(lrForBatch('signsgd', B, big), surge(B) / surge(10), 1e-6, `B ${B}`);
  // No surge when κ² ≤ (4/π)·B_noise.
  assert.equal(surgePeak(bn, 1, (4 / Math.PI) * bn * 0.99), null);
});

test('softsign: ε = 0 is signsgd, ε → ∞ is sgd, the surge fades as ε passes 0.886·g', () => {
  const base = { baseLr: 2e-3, baseBatch: 16, bNoise: 300, gradRms: 1e-4 };
  for (const B of [1, 4, 16, 64, 300, 1000, 1e5]) {
    assert.equal(lrForBatch('softsign', B, { ...base, eps: 0 }), lrForBatch('signsgd', B, base), `ε 0, B ${B}`);
    close(lrForBatch('softsign', B, { ...base, eps: 1e3 }), lrForBatch('sgd', B, base), 1e-6, `ε → ∞, B ${B}`);
  }
  const grid = Array.from({ length: 60 }, (_, i) => 2 ** (i / 4));
  const monotone = (eps: number) =>
    grid.every((B, i) => i === 0 || lrForBatch('softsign', B, { ...base, eps }) >= lrForBatch('softsign', grid[i - 1], { ...base, eps }));
  assert.equal(monotone(1e-5), false, 'ε ≪ g: a surge');
  assert.ok(surgePeak(300, 1 / (1 + 0.01)) !== null);
  assert.equal(monotone(1e-4), true, 'ε = g: no surge');
  const edge = (Math.sqrt(Math.PI) / 2) * 1e-4; // ε where ρν² = 2
  assert.notEqual(surgePeak(300, 1 / (1 + ((0.99 * edge) / 1e-4) ** 2)), null);
  assert.equal(surgePeak(300, 1 / (1 + ((1.01 * edge) / 1e-4) ** 2)), null);
});

test('rules refuse missing inputs with a clear message', () => {
  assert.throws(() => lrForBatch('sgd', 8, { baseLr: 1, baseBatch: 4 }), /B_noise.*missing/);
  assert.throws(() => lrForBatch('softsign', 8, { baseLr: 1, baseBatch: 4, bNoise: 3 }), /eps.*missing/);
  assert.throws(() => lrForBatch('softsign', 8, { baseLr: 1, baseBatch: 4, bNoise: 3, eps: 1e-8 }), /gradient RMS/);
  assert.throws(() => lrForBatch('linear', 0, { baseLr: 1, baseBatch: 4 }), /batch size/);
  assert.throws(() => lrForBatch('bogus' as 'none', 8, { baseLr: 1, baseBatch: 4 }), /unknown scaling rule/);
});

// ---- ramps --------------------------------------------------------------------------------

const ctx = (over: Partial<BatchContext>): BatchContext => ({ totalSteps: 1000, finalBatch: 64, microBatch: 8, ...over });

test('presets reproduce the documented numbers at their original scale', () => {
  const palm = parseBatchSpec('palm');
  const c = ctx({ totalSteps: 255_000, finalBatch: 2048, microBatch: 1 });
  assert.equal(batchAt(palm, 0, c), 512);
  assert.equal(batchAt(palm, 49_999, c), 512);
  assert.equal(batchAt(palm, 50_000, c), 1024);
  assert.equal(batchAt(palm, 114_999, c), 1024);
  assert.equal(batchAt(palm, 115_000, c), 2048);
  assert.equal(batchAt(palm, 254_999, c), 2048);

  const glm = parseBatchSpec('glm');
  const g = (seen: number) => batchAt(glm, 0, ctx({ finalBatch: 4224, microBatch: 1, totalSamples: 1e6, samplesSeen: seen }));
  assert.deepEqual([g(0), g(12_500), g(25_000), g(900_000)], [192, 2208, 4224, 4224]);

  // MT-NLG: 32 + 32 per 12000/59 samples of a 270000-sample run (12B of 270B tokens).
  const mt = parseBatchSpec('mtnlg');
  const m = (seen: number) => batchAt(mt, 0, ctx({ finalBatch: 1920, microBatch: 1, totalSamples: 270_000, samplesSeen: seen }));
  assert.deepEqual([m(0), m(203), m(204), m(6000), m(11_999), m(12_000), m(200_000)], [32, 32, 64, 32 + 32 * 29, 1888, 1920, 1920]);
  assert.equal(PRESET_ORIGINALS.mtnlg.totalTokens, 270e9);

  // GPT-3: 32k → 3.2M tokens over 12B of 300B: with 1000-token sequences, 32 → 3200 over 4%.
  const g3 = parseBatchSpec('gpt3');
  const t = (seen: number) => batchAt(g3, 0, ctx({ finalBatch: 3200, microBatch: 1, totalSamples: 300_000, samplesSeen: seen }));
  assert.deepEqual([t(0), t(6000), t(12_000), t(250_000)], [32, 1616, 3200, 3200]);

  // Default budget: totalSteps × finalBatch.
  assert.equal(batchAt(glm, 0, ctx({ finalBatch: 4224, microBatch: 1, totalSteps: 1000, samplesSeen: 0.025 * 4224 * 1000 })), 4224);
  assert.throws(() => batchAt(glm, 0, ctx({})), /samplesSeen/);
});

test('presets scale to the run: fractions of the run, multiples of the micro-batch, never below one', () => {
  const palm = parseBatchSpec('palm');
  // 1400 steps, final 64, micro 8: 16 until step 275 (50/255 of 1400 = 274.5), 32 until 631.4, then 64.
  const c = ctx({ totalSteps: 1400 });
  assert.deepEqual([batchAt(palm, 274, c), batchAt(palm, 275, c), batchAt(palm, 631, c), batchAt(palm, 632, c)], [16, 32, 32, 64]);
  // F/4 below one micro-batch: one micro-batch.
  assert.equal(batchAt(palm, 0, ctx({ finalBatch: 16, microBatch: 8 })), 8);
  for (const name of ['glm', 'mtnlg', 'gpt3']) {
    const spec = parseBatchSpec(name);
    let prev = 0;
    for (let seen = 0; seen <= 64_000; seen += 500) {
      const b = batchAt(spec, 0, ctx({ samplesSeen: seen }));
      assert.ok(b % 8 === 0 && b >= 8 && b <= 64 && b >= prev, `${name} at ${seen}: ${b}`);
      prev = b;
    }
    assert.equal(prev, 64);
  }
  assert.equal(roundToMicro(12, 8), 16, 'halves round up');
  assert.equal(roundToMicro(11.9, 8), 8);
  assert.equal(roundToMicro(1, 8), 8);
  assert.equal(roundToMicro(100, 8, 64), 64);
  assert.throws(() => batchAt(palm, 0, ctx({ finalBatch: 60 })), /multiple of the micro-batch/);
});

test('custom ramps: linear, steps, adaptive (monotone, clamped, rounded)', () => {
  const lin = parseBatchSpec('linear:8:64:10');
  assert.deepEqual(
    [0, 5, 10, 50].map((s) => batchAt(lin, s, ctx({}))),
    [8, 40, 64, 64],
  );
  assert.equal(batchAt(parseBatchSpec('linear:8:256:10'), 10, ctx({})), 256, 'custom ramps may exceed the final batch');
  const st = parseBatchSpec('steps:8@0,32@100,64@300');
  assert.deepEqual(
    [0, 99, 100, 299, 300, 999].map((s) => batchAt(st, s, ctx({}))),
    [8, 8, 32, 32, 64, 64],
  );
  const ad = parseBatchSpec('adaptive:8:64');
  const c = ctx({});
  let cur = batchAt(ad, 0, { ...c, bSimple: null });
  assert.equal(cur, 8);
  cur = batchAt(ad, 1, { ...c, bSimple: 20, current: cur });
  assert.equal(cur, 24);
  cur = batchAt(ad, 2, { ...c, bSimple: 10, current: cur });
  assert.equal(cur, 24, 'never decreases');
  cur = batchAt(ad, 3, { ...c, bSimple: 1e6, current: cur });
  assert.equal(cur, 64, 'clamped');
  assert.equal(batchAt(parseBatchSpec('adaptive'), 0, { ...c, bSimple: 3 }), 8, 'default MIN: one micro-batch');
  assert.equal(batchAt(parseBatchSpec('adaptive'), 0, { ...c, bSimple: 500 }), 64, 'default MAX: the final batch');
  assert.deepEqual(parseBatchSpec('constant'), { kind: 'constant' });
  assert.equal(batchAt(parseBatchSpec('constant'), 5, c), 64);
  for (const bad of ['linear:8:64', 'steps:8@10,4@5', 'steps:x', 'adaptive:64:8', 'palmy', 'linear:0:8:10']) {
    assert.throws(() => parseBatchSpec(bad), /batch schedule/, bad);
  }
});

// ---- keel plan ----------------------------------------------------------------------------

const { fresh } = tempRoot('plan');

test('keel plan --json: fields, ratios, per-rule learning rates, warnings', () => {
  const r = keel(['plan', { noiseScale: 100, baseLr: '1e-3', baseBatch: 25, eps: '1e-5', gradRms: '2e-5', batches: '25,100,1000', json: true }]);
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
  assert.equal(out.b_noise, 100);
  assert.equal(out.b_crit, 100);
  assert.deepEqual(
    out.rows.map((x: { batch: number }) => x.batch),
    [25, 100, 1000],
  );
  const [r25, r100, r1000] = out.rows;
  assert.equal(r100.steps_ratio, 2);
  assert.equal(r100.examples_ratio, 2);
  close(r25.steps_ratio, 5);
  close(r1000.examples_ratio, 11);
  // (S/S_min − 1)(E/E_min − 1) = 1 on every row.
  for (const row of out.rows) close((row.steps_ratio - 1) * (row.examples_ratio - 1), 1);
  assert.deepEqual(Object.keys(r25.lr).sort(), ['linear', 'sgd', 'signsgd', 'softsign', 'sqrt']);
  for (const v of Object.values(r25.lr)) assert.equal(v, 1e-3);
  close(r100.lr.linear, 4e-3);
  close(r100.lr.sqrt, 2e-3);
  close(r100.lr.sgd, (1e-3 * 0.5) / 0.2);
  close(r100.lr.signsgd, 0.001367190412031582);
  close(r100.lr.softsign, 0.0013927370812714221);
  // At 1000: linear 4e-2 vs signsgd 1.35e-3: a strong disagreement, warned in JSON and on stderr.
  assert.ok(
    out.warnings.some((w: string) => w.startsWith('batch 1000:')),
    JSON.stringify(out.warnings),
  );
  assert.ok(!out.warnings.some((w: string) => w.startsWith('batch 25:')));
  assert.match(r.stderr, /warning: batch 1000: the rules disagree/);
  close(out.surge_peak.signsgd, (1 + 4 / Math.PI) * 100);
});

test('keel plan: text table; no base gives no learning rates; softsign needs --eps', () => {
  const r = keel(['plan', { noiseScale: 64, batches: '8,64,512' }]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /B_crit ≈ B_noise = 64 sequences/);
  assert.match(r.stdout, /give --base-lr and --base-batch/);
  const j = JSON.parse(keel(['plan', { noiseScale: 64, json: true }]).stdout);
  assert.ok(j.rows.length >= 5 && j.rows.every((x: { lr: unknown }) => x.lr === null));
  assert.deepEqual(j.warnings, []);
  const k = JSON.parse(keel(['plan', { noiseScale: 64, baseLr: '1e-3', baseBatch: 8, json: true }]).stdout);
  assert.equal(k.rows[0].lr.softsign, null);
  assert.equal(typeof k.rows[0].lr.signsgd, 'number');
  const h = keel(['plan', '--help']);
  assert.equal(h.status, 0);
  assert.match(h.stdout, /--noise-scale/);
});

test('keel plan --from RUN_DIR reads the last b_simple and the run’s lr and batch', () => {
  const dir = fresh('run');
  fs.mkdirSync(dir, { recursive: true });
  const lines = [
    { step: 1, loss: 5, grad_norm: 1 },
    { step: 10, b_simple: 40, b_simple_tokens: 5120, noise_grad_rms: 3e-4 },
    { step: 20, b_simple: null },
    { step: 30, b_simple: 50, b_simple_tokens: 6400, noise_grad_rms: 2e-4 },
    { step: 31, loss: 4 },
  ];
  fs.writeFileSync(path.join(dir, 'metrics.jsonl'), lines.map((l) => JSON.stringify(l)).join('\n') + '\n{"b_simple": trunc');
  writeJson(path.join(dir, 'config.json'), { train: { lr: 2e-3, batch: 16, accum: 4 } });
  const r = keel(['plan', { from: dir, eps: '1e-4', batches: '64,128', json: true }]);
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.b_noise, 50);
  assert.equal(out.b_noise_tokens, 6400);
  assert.equal(out.base_lr, 2e-3);
  assert.equal(out.base_batch, 64);
  assert.equal(out.grad_rms, 2e-4);
  assert.equal(out.rows[0].lr.sgd, 2e-3);
  assert.equal(typeof out.rows[1].lr.softsign, 'number');
  // Flags override the run's base.
  const o = JSON.parse(keel(['plan', { from: dir, baseLr: '1e-3', baseBatch: 32, json: true }]).stdout);
  assert.equal(o.base_lr, 1e-3);
  assert.equal(o.base_batch, 32);
});

test('keel plan --from: a line Python wrote with a bare NaN still counts (one metrics reader for every tool)', () => {
  const dir = fresh('py-run');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'metrics.jsonl'), '{"step": 10, "b_simple": 40}\n{"step": 20, "b_simple": 70, "noise_grad_rms": 2e-4, "loss": NaN}\n');
  const r = keel(['plan', { from: dir, eps: '1e-4', baseLr: '1e-3', baseBatch: 32, json: true }]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).b_noise, 70);
});

test('keel plan: clear errors for missing inputs', () => {
  const none = keel(['plan']);
  assert.equal(none.status, 2);
  assert.match(none.stderr, /needs the gradient noise scale: --from RUN_DIR .* or --noise-scale B/);
  const both = keel(['plan', { noiseScale: 5, from: 'x' }]);
  assert.equal(both.status, 2);
  assert.match(both.stderr, /either --from RUN_DIR or --noise-scale B/);
  const half = keel(['plan', { noiseScale: 5, baseLr: '1e-3' }]);
  assert.equal(half.status, 2);
  assert.match(half.stderr, /--base-lr and --base-batch go together/);
  const eps = keel(['plan', { noiseScale: 5, eps: 1e-8 }]);
  assert.equal(eps.status, 2);
  assert.match(eps.stderr, /--grad-rms/);
  const dir = fresh('empty-run');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'metrics.jsonl'), '{"step":1,"loss":5}\n');
  const noNoise = keel(['plan', { from: dir }]);
  assert.equal(noNoise.status, 2);
  assert.match(noNoise.stderr, /no gradient-noise-scale records.*--accum 2 or more/);
  const missing = keel(['plan', { from: path.join(dir, 'nope') }]);
  assert.equal(missing.status, 2);
  assert.match(missing.stderr, /no such run directory/);
  const bad = keel(['plan', { noiseScale: -3 }]);
  assert.equal(bad.status, 2);
  const badList = keel(['plan', { noiseScale: 3, batches: '4,x' }]);
  assert.equal(badList.status, 2);
  assert.match(badList.stderr, /positive integers/);
});

// Per-tensor Adam-instability diagnostics (src/monitor/diagnostics.ts) against a plain float64
// reference written here from docs/stability.md#adam-instability: real optimizers (reference kernels) on a small
// tensor set over a few synthetic steps, every field compared; hand-made cases for each
// statistic's meaning; and the cost contract (buffers allocated once, work only near diagnosed steps).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { referenceKernels } from '../src/kernels/reference/index.ts';
import { Diagnostics, type DiagRecord, type TensorDiag } from '../src/monitor/diagnostics.ts';
import { adamw } from '../src/optim/adamw.ts';
import { lion } from '../src/optim/lion.ts';
import { sgd } from '../src/optim/momentum.ts';
import type { Optimizer, OptState, TensorSpec } from '../src/optim/types.ts';
import { Rng } from '../src/util/rng.ts';

const K = referenceKernels<Float32Array>();

function layout(specs: [string, number[], TensorSpec['kind']][]): { tensors: TensorSpec[]; n: number } {
  let offset = 0;
  const tensors = specs.map(([name, shape, kind]) => {
    const size = shape.reduce((a, b) => a * b, 1);
    const t = { name, shape, kind, offset, size };
    offset += size;
    return t;
  });
  return { tensors, n: offset };
}

const SMALL = layout([
  ['transformer.wte.weight', [16, 8], 'embedding'],
  ['transformer.h.0.attn.c_attn.weight', [12, 8], 'weight'],
  ['transformer.h.0.attn.c_attn.bias', [12], 'bias'],
  ['transformer.h.0.ln_1.weight', [8], 'gain'],
  ['transformer.h.1.mlp.c_fc.weight', [24, 8], 'weight'],
]);

/** Everything a reference needs about one step, as float64 copies. */
interface Snap {
  t: number;
  lr: number;
  g: number[];
  thetaBefore: number[];
  thetaAfter: number[];
  mBefore: number[] | null;
  vBefore: number[] | null;
  mAfter: number[] | null;
  vAfter: number[] | null;
}

/**
 * Synthetic gradients: a slowly rotating direction plus noise, per-tensor scales over 10 decades
 * (the embedding's are far below ε = 1e-8), the embedding's last four rows exactly zero (unused
 * tokens), every 7th coordinate of the bias zero.
 */
function gradients(rng: Rng, tensors: TensorSpec[], n: number, prev: Float32Array | null): Float32Array {
  const g = new Float32Array(n);
  const scale = [1e-10, 1e-2, 3e-3, 1e-4, 1];
  tensors.forEach((t, ti) => {
    for (let i = t.offset; i < t.offset + t.size; i++) {
      const coherent = prev ? 0.6 * prev[i] : 0;
      g[i] = coherent + scale[ti % scale.length] * rng.normal();
    }
  });
  const wte = tensors[0];
  for (let i = wte.offset + wte.size - 4 * 8; i < wte.offset + wte.size; i++) g[i] = 0;
  const bias = tensors[2];
  for (let i = bias.offset; i < bias.offset + bias.size; i += 7) g[i] = 0;
  return g;
}

/** Drives `opt` for `steps` steps, calling the diagnostics as the trainer does; returns the records and snapshots. */
function drive(opt: Optimizer, diag: Diagnostics, steps: number, seed = 1, lrOf = (s: number) => 1e-2 * (1 + s / 10)) {
  const { tensors, n } = SMALL;
  const rng = new Rng(seed);
  const params = new Float32Array(n);
  for (let i = 0; i < n; i++) params[i] = 0.1 * rng.normal();
  const state = opt.init(params, tensors);
  const snaps: Snap[] = [];
  const records = new Map<number, DiagRecord>();
  let g: Float32Array | null = null;
  const copy = (a: Float32Array | undefined) => (a ? Array.from(a) : null);
  for (let step = 1; step <= steps; step++) {
    g = gradients(rng, tensors, n, g);
    const lr = lrOf(step);
    const snap: Snap = {
      t: step,
      lr,
      g: Array.from(g),
      thetaBefore: Array.from(params),
      thetaAfter: [],
      mBefore: copy(state.slots.exp_avg ?? state.slots.momentum_buffer),
      vBefore: copy(state.slots.exp_avg_sq),
      mAfter: null,
      vAfter: null,
    };
    const watch = diag.wants(step) || diag.wants(step + 1);
    if (watch) diag.before(step, params, g, opt, state);
    opt.step(params, g, state, { lr });
    const rec = watch ? diag.after(step, params, opt, state, lr) : null;
    if (rec) records.set(step, rec);
    snap.thetaAfter = Array.from(params);
    snap.mAfter = copy(state.slots.exp_avg ?? state.slots.momentum_buffer);
    snap.vAfter = copy(state.slots.exp_avg_sq);
    snaps.push(snap);
  }
  return { records, snaps, state };
}

// ---- the reference: plain float64 loops, written from the definitions ----

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
const dot = (a: number[], b: number[]) => sum(a.map((x, i) => x * b[i]));
const rms = (a: number[]) => Math.sqrt(dot(a, a) / a.length);
const cosine = (a: number[], b: number[]) => dot(a, b) / Math.sqrt(dot(a, a) * dot(b, b));
function exactMedian(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const k = s.length;
  return k % 2 ? s[(k - 1) / 2] : (s[k / 2 - 1] + s[k / 2]) / 2;
}

interface RefOpts {
  adam?: { beta1: number; beta2: number; eps: number; mode: 'outside' | 'zero' };
  /** Decoupled decay λ to remove from Δθ for non-Adam optimizers, per tensor. */
  lambda?: (t: TensorSpec) => number;
  bins: number;
}

function reference(t: TensorSpec, cur: Snap, prev: Snap | null, o: RefOpts): Record<string, number | number[] | undefined> {
  const sl = (a: number[]) => a.slice(t.offset, t.offset + t.size);
  const g = sl(cur.g);
  const th = sl(cur.thetaAfter);
  const th0 = sl(cur.thetaBefore);
  const d = th.map((x, i) => x - th0[i]);
  const out: Record<string, number | number[] | undefined> = {
    grad_rms: rms(g),
    update_rms: rms(d),
    param_rms: rms(th),
    max_abs: Math.max(...th.map(Math.abs)),
    zero_frac: g.filter((x) => x === 0).length / g.length,
    cos_g: prev ? cosine(g, sl(prev.g)) : undefined,
    cos_u: prev
      ? cosine(
          d,
          sl(prev.thetaAfter).map((x, i) => x - sl(prev.thetaBefore)[i]),
        )
      : undefined,
  };
  if (cur.mBefore) out.cos_gm = cosine(g, sl(cur.mBefore));
  let r: number[];
  if (o.adam) {
    const { beta1, beta2, eps, mode } = o.adam;
    const mhat = sl(cur.mAfter!).map((m) => m / (1 - beta1 ** cur.t));
    const vhat = sl(cur.vAfter!).map((v) => v / (1 - beta2 ** cur.t));
    out.eps_frac = vhat.filter((v) => Math.sqrt(v) < eps).length / vhat.length;
    r = mhat.map((m, i) => (mode === 'outside' ? m / (Math.sqrt(vhat[i]) + eps) : vhat[i] === 0 ? 0 : m / Math.sqrt(vhat[i])));
    const vPrevHat = sl(cur.vBefore!).map((v) => v / (1 - beta2 ** (cur.t - 1)));
    const ratios = g.map((x, i) => (x * x) / vPrevHat[i]).filter((q, i) => vPrevHat[i] > 0 && Number.isFinite(q));
    out.decoupling = ratios.length ? exactMedian(ratios) : NaN;
  } else {
    const lam = o.lambda?.(t) ?? 0;
    r = th.map((x, i) => -(x - (1 - cur.lr * lam) * th0[i]) / cur.lr);
  }
  r = r.filter(Number.isFinite);
  const mean = sum(r) / r.length;
  const c = (p: number) => sum(r.map((x) => (x - mean) ** p)) / r.length;
  out.skewness = c(3) / c(2) ** 1.5;
  out.kurtosis = c(4) / c(2) ** 2;
  out.bimodality = ((out.skewness as number) ** 2 + 1) / (out.kurtosis as number);
  out.mass_near_1 = r.filter((x) => Math.abs(x) >= 0.9 && Math.abs(x) <= 1.1).length / r.length;
  const hist = new Array(o.bins).fill(0);
  const w = 4 / (o.bins - 1);
  for (const x of r) {
    const centre = Math.min(Math.max(x, -2), 2);
    // nearest centre −2 + i·w, ties upward
    hist[Math.min(o.bins - 1, Math.floor((centre + 2) / w + 0.5))]++;
  }
  out.hist = hist.map((h) => h / r.length);
  return out;
}

function close(actual: unknown, expected: number, what: string, rel = 2e-3, abs = 1e-12): void {
  if (!Number.isFinite(expected)) {
    assert.equal(actual, null, `${what}: expected null for ${expected}`);
    return;
  }
  assert.equal(typeof actual, 'number', `${what}: ${String(actual)}`);
  const a = actual as number;
  assert.ok(Math.abs(a - expected) <= rel * Math.abs(expected) + abs, `${what}: ${a} vs reference ${expected}`);
}

function compare(rec: DiagRecord, snaps: Snap[], o: RefOpts, expectKeys: string[]): void {
  const cur = snaps[rec.step - 1];
  const prev = rec.step >= 2 ? snaps[rec.step - 2] : null;
  for (const t of SMALL.tensors) {
    const got = rec.diag[t.name] as unknown as Record<string, unknown>;
    assert.ok(got, `${t.name} at step ${rec.step}`);
    assert.deepEqual(Object.keys(got).sort(), [...expectKeys, 'hist'].sort(), `${t.name} keys`);
    const ref = reference(t, cur, prev, o);
    for (const key of expectKeys) {
      const e = ref[key];
      if (e === undefined) assert.equal(got[key], null, `${t.name}.${key} at step ${rec.step}: no previous step`);
      else close(got[key], e as number, `${t.name}.${key} at step ${rec.step}`, key === 'kurtosis' || key === 'skewness' ? 5e-3 : 2e-3);
    }
    const h = got.hist as number[];
    const eh = ref.hist as number[];
    assert.equal(h.length, o.bins);
    h.forEach((x, i) => close(x, eh[i], `${t.name}.hist[${i}] at step ${rec.step}`, 6e-3));
  }
}

const ADAM_KEYS = [
  'grad_rms',
  'update_rms',
  'param_rms',
  'max_abs',
  'zero_frac',
  'eps_frac',
  'decoupling',
  'cos_g',
  'cos_gm',
  'cos_u',
  'skewness',
  'kurtosis',
  'bimodality',
  'mass_near_1',
];

test('diagnostics: AdamW (outside ε) matches the float64 reference on every field, every 3rd step', () => {
  const opt = adamw({ beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 }, { kernels: K });
  const diag = new Diagnostics(SMALL.tensors, SMALL.n, { every: 3 });
  const { records, snaps } = drive(opt, diag, 10);
  assert.deepEqual([...records.keys()], [3, 6, 9]);
  for (const rec of records.values()) compare(rec, snaps, { adam: { beta1: 0.9, beta2: 0.95, eps: 1e-8, mode: 'outside' }, bins: 41 }, ADAM_KEYS);
  // The scenario exercises what it should: the 1e-10-scale embedding is ε-dominated and frozen, the rest is not.
  const r9 = records.get(9)!;
  assert.equal(r9.diag['transformer.wte.weight'].eps_frac, 1);
  assert.equal(r9.diag['transformer.h.1.mlp.c_fc.weight'].eps_frac, 0);
  assert.equal(r9.diag['transformer.wte.weight'].zero_frac, 0.25);
  assert.ok(r9.diag['transformer.h.1.mlp.c_fc.weight'].cos_g! > 0.3, 'coherent gradients correlate');
  // Model-wide aggregates.
  const all = (k: 'g' | 'thetaAfter') => snaps[8][k];
  close(r9.diag_grad_rms, rms(all('g')), 'diag_grad_rms');
  close(r9.diag_zero_frac, all('g').filter((x) => x === 0).length / SMALL.n, 'diag_zero_frac');
  close(r9.diag_cos_g, cosine(snaps[8].g, snaps[7].g), 'diag_cos_g');
  close(r9.diag_max_abs, Math.max(...all('thetaAfter').map(Math.abs)), 'diag_max_abs');
  const kurts = Object.values(r9.diag).map((d: TensorDiag) => d.kurtosis!);
  assert.equal(r9.diag_kurtosis_max, Math.max(...kurts));
  assert.ok(r9.diag_eps_frac! > 0 && r9.diag_eps_frac! < 1);
});

test('diagnostics: every step (epsMode zero), step 1 has no time correlations and no decoupling', () => {
  const opt = adamw({ epsMode: 'zero', weightDecay: 0 }, { kernels: K });
  const diag = new Diagnostics(SMALL.tensors, SMALL.n, { every: 1, bins: 21 });
  const { records, snaps } = drive(opt, diag, 5, 3);
  assert.deepEqual([...records.keys()], [1, 2, 3, 4, 5]);
  const step1 = records.get(1)!.diag['transformer.h.0.attn.c_attn.weight'];
  assert.equal(step1.cos_g, null);
  assert.equal(step1.cos_u, null);
  assert.equal(step1.cos_gm, null, 'm_0 = 0');
  assert.equal(step1.decoupling, null, 'v_0 = 0: every coordinate excluded');
  for (const rec of records.values()) {
    if (rec.step === 1) continue;
    compare(rec, snaps, { adam: { beta1: 0.9, beta2: 0.95, eps: 1e-8, mode: 'zero' }, bins: 21 }, ADAM_KEYS);
  }
});

test('diagnostics: Lion (decay removed) gives r = ±1 exactly; no ε fields; momentum correlation present', () => {
  const opt = lion({ weightDecay: 0.5 }, { kernels: K });
  const diag = new Diagnostics(SMALL.tensors, SMALL.n, { every: 4 });
  const { records, snaps } = drive(opt, diag, 8, 5, () => 1e-3);
  assert.deepEqual([...records.keys()], [4, 8]);
  const keys = ADAM_KEYS.filter((k) => k !== 'eps_frac' && k !== 'decoupling');
  // Lion decays matrices and embeddings (decayEmbeddings defaults to true), never biases or gains.
  const lambda = (t: TensorSpec) => (t.kind === 'weight' || t.kind === 'embedding' ? 0.5 : 0);
  for (const rec of records.values()) {
    compare(rec, snaps, { lambda, bins: 41 }, keys);
    assert.equal(rec.diag_eps_frac, undefined);
    const w = rec.diag['transformer.h.1.mlp.c_fc.weight'];
    assert.equal(w.mass_near_1, 1, 'sign updates: all mass at ±1');
    assert.ok(w.bimodality! > 0.99, `bimodality ${w.bimodality}`);
    assert.ok(Math.abs(w.hist[10] + w.hist[30] - 1) < 2e-3, 'all of r in the bins centred on ±1');
  }
});

// ---- hand-made cases ----

const ONE = layout([['w', [100, 200], 'weight']]);

function oneStep(opt: Optimizer, g: Float32Array, theta?: Float32Array, every = 1): DiagRecord {
  const params = theta ?? new Float32Array(ONE.n).fill(0.5);
  const state = opt.init(params, ONE.tensors);
  const diag = new Diagnostics(ONE.tensors, ONE.n, { every });
  diag.before(1, params, g, opt, state);
  opt.step(params, g, state, { lr: 1e-3 });
  return diag.after(1, params, opt, state, 1e-3)!;
}

function gaussian(n: number, scale: number, seed = 9): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n }, () => scale * rng.normal());
}

test('diagnostics: every gradient below ε ⇒ eps_frac = 1 and r ≈ g/ε (Gaussian: kurtosis ≈ 3, unimodal)', () => {
  const rec = oneStep(adamw({ eps: 1e-8 }, { kernels: K }), gaussian(ONE.n, 1e-11));
  const d = rec.diag.w;
  assert.equal(d.eps_frac, 1);
  assert.ok(Math.abs(d.kurtosis! - 3) < 0.15, `kurtosis ${d.kurtosis}`);
  assert.ok(d.bimodality! < 5 / 9, `bimodality ${d.bimodality}`);
  assert.equal(d.mass_near_1, 0);
  assert.ok(d.update_rms! < 1e-3 * 0.5 * 0.1 * 1.01, 'only decay moves it: r ≈ 0');
});

test('diagnostics: r concentrated at ±1 (first Adam step, |g| ≫ ε) ⇒ bimodal, mass near 1', () => {
  const rec = oneStep(adamw({ eps: 1e-8 }, { kernels: K }), gaussian(ONE.n, 1e-2));
  const d = rec.diag.w;
  assert.equal(d.eps_frac, 0);
  assert.ok(d.bimodality! > 5 / 9, `bimodality ${d.bimodality}`);
  assert.ok(d.mass_near_1! > 0.99, `mass ${d.mass_near_1}`);
  assert.ok(d.hist[10] > 0.45 && d.hist[30] > 0.45, `hist ${d.hist}`);
  assert.ok(Math.abs(d.kurtosis! - 1) < 0.01, 'two points: kurtosis 1');
});

test('diagnostics: Gaussian r (SGD, r = g) ⇒ kurtosis ≈ 3, skewness ≈ 0, bimodality ≈ 1/3; zero_frac exact', () => {
  const g = gaussian(ONE.n, 0.5, 4);
  for (let i = 0; i < 2500; i++) g[i * 8] = 0; // exactly 2500 of 20000 coordinates
  const rec = oneStep(sgd({ momentum: 0, weightDecay: 0 }, { kernels: K }), g);
  const d = rec.diag.w;
  assert.equal(d.zero_frac, 0.125);
  assert.equal(d.eps_frac, undefined, 'no second moment: field omitted');
  assert.equal(d.cos_gm, undefined, 'stateless SGD: no momentum slot');
  // r = g: a Gaussian with an atom of 12.5% at 0, kurtosis 3/(1−0.125) = 3.43 (mixture with a point mass)
  assert.ok(Math.abs(d.kurtosis! - 3 / 0.875) < 0.15, `kurtosis ${d.kurtosis}`);
  assert.ok(Math.abs(d.skewness!) < 0.05, `skewness ${d.skewness}`);
  const pure = oneStep(sgd({ momentum: 0, weightDecay: 0 }, { kernels: K }), gaussian(ONE.n, 0.5, 5)).diag.w;
  assert.ok(Math.abs(pure.kurtosis! - 3) < 0.15, `kurtosis ${pure.kurtosis}`);
  assert.ok(Math.abs(pure.bimodality! - 1 / 3) < 0.03, `bimodality ${pure.bimodality}`);
  close(pure.grad_rms, 0.5, 'grad_rms', 0.02);
  close(pure.update_rms, 0.5e-3, 'update_rms', 0.02);
});

test('diagnostics: cost contract: buffers allocated once and reused; work only on diagnosed steps and the step before', () => {
  const { tensors, n } = SMALL;
  const diag = new Diagnostics(tensors, n); // defaults: every 50, 41 bins
  assert.equal(diag.options.every, 50);
  const watched = Array.from({ length: 1000 }, (_, i) => i + 1).filter((s) => diag.wants(s) || diag.wants(s + 1));
  assert.equal(watched.length, 40, 'two steps in every 50');
  const bytes = diag.bytes;
  assert.equal(bytes, 12 * n + 8 * 192 + 8 * 41 + 8 * 7 * tensors.length + 8 * 12, '3 float32 copies + scratch of the largest tensor');
  const opt = adamw({}, { kernels: K });
  // A run of 20 steps diagnosed every 5: same buffers afterwards (the Δθ buffers swap roles, none is new).
  const d5 = new Diagnostics(tensors, n, { every: 5 });
  const own = new Set(d5.buffers.map((b) => b.buffer));
  const r = drive(opt, d5, 20);
  assert.deepEqual([...r.records.keys()], [5, 10, 15, 20]);
  assert.deepEqual(new Set(d5.buffers.map((b) => b.buffer)), own);
  assert.equal(d5.bytes, bytes);
  // after() on a step that is not diagnosed returns nothing; a diagnosed step whose previous
  // step was not captured has no time correlations.
  const state: OptState = opt.init(new Float32Array(n), tensors);
  const params = new Float32Array(n).fill(0.1);
  const g = gradients(new Rng(1), tensors, n, null);
  const d = new Diagnostics(tensors, n, { every: 5 });
  d.before(4, params, g, opt, state);
  opt.step(params, g, state, { lr: 1e-3 });
  assert.equal(d.after(4, params, opt, state, 1e-3), null);
  d.before(10, params, g, opt, state); // step 9 never captured
  opt.step(params, g, state, { lr: 1e-3 });
  const rec = d.after(10, params, opt, state, 1e-3)!;
  assert.equal(rec.diag['transformer.h.1.mlp.c_fc.weight'].cos_g, null);
  assert.equal(rec.diag['transformer.h.1.mlp.c_fc.weight'].cos_u, null);
  assert.equal(typeof rec.diag['transformer.h.1.mlp.c_fc.weight'].cos_gm, 'number');
  // reset() (after a rollback) forgets the captured previous step.
  d.before(14, params, g, opt, state);
  opt.step(params, g, state, { lr: 1e-3 });
  d.after(14, params, opt, state, 1e-3);
  d.reset();
  d.before(15, params, g, opt, state);
  opt.step(params, g, state, { lr: 1e-3 });
  assert.equal(d.after(15, params, opt, state, 1e-3)!.diag_cos_u, null);
  assert.throws(() => new Diagnostics(tensors, n, { every: 0 }), /every must be a positive integer/);
  assert.throws(() => new Diagnostics(tensors, n + 1), /cover 436 elements/);
});

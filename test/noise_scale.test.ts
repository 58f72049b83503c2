// The online gradient noise scale (src/monitor/noise_scale.ts) and its kernel sqDiffCopy.
//
// Unbiasedness is checked on linear regression with Gaussian inputs and noise, where the true
// gradient G and the per-example covariance Σ are known in closed form:
//   y = xᵀw* + ε,  x ~ N(0, I_d),  ε ~ N(0, s²),  loss ½(xᵀw − y)²,  e = w − w*
//   g(x, ε) = x(xᵀe − ε);  G = E[g] = e;  E[ggᵀ] = ‖e‖²I + 2eeᵀ + s²I (Isserlis)
//   Σ = (‖e‖² + s²)I + eeᵀ,  so ‖G‖² = ‖e‖² and tr(Σ) = d(‖e‖² + s²) + ‖e‖²
// and on any subset J of coordinates ‖G_J‖² = Σ_J e_j², tr(Σ_J) = |J|(‖e‖² + s²) + Σ_J e_j².
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eachMode, nk } from './native_modes.ts';
import { sqDiffCopy } from '../src/kernels/reference/reduce.ts';
import { referenceKernels } from '../src/kernels/reference/index.ts';
import { NoiseScale, noiseGroupOf, noiseLogFields, type NoiseRecord } from '../src/monitor/noise_scale.ts';
import type { TensorSpec } from '../src/optim/types.ts';
import { GPT } from '../src/model/gpt.ts';
import { MICRO } from './helpers.ts';
import { randomBatch, Rng } from '../src/util/rng.ts';

const ref = referenceKernels<Float32Array>();

test('sqDiffCopy: native matches the reference in every mode, and copies', () => {
  const rng = new Rng(3);
  const N = 200_003; // several chunks at 2 threads, plus a vector tail
  const cur = Float32Array.from({ length: N }, () => rng.normal() * 0.1);
  const prev0 = Float32Array.from(cur, (c) => c - rng.normal() * 1e-3);
  let exact = 0;
  for (let i = 0; i < N; i++) exact += (cur[i] - prev0[i]) ** 2;
  const p = prev0.slice();
  assert.equal(sqDiffCopy(p, cur, N), exact);
  assert.deepEqual(p, cur);
  eachMode((mode) => {
    const q = prev0.slice();
    const s = nk.sqDiffCopy(q, cur, N);
    assert.ok(Math.abs(s - exact) <= 1e-12 * exact, `${mode}: ${s} vs ${exact}`);
    assert.deepEqual(q, cur, `${mode}: prev ← cur`);
    // Views and partial lengths: only the first n elements are read and written.
    const r = prev0.slice();
    const n = 37;
    let e2 = 0;
    for (let i = 5; i < 5 + n; i++) e2 += (cur[i] - prev0[i]) ** 2;
    const s2 = nk.sqDiffCopy(r.subarray(5), cur.subarray(5), n);
    assert.ok(Math.abs(s2 - e2) <= 1e-12 * e2, `${mode} view`);
    assert.equal(r[4], prev0[4]);
    assert.equal(r[5 + n], prev0[5 + n]);
    assert.deepEqual(r.subarray(5, 5 + n), cur.subarray(5, 5 + n));
    assert.equal(nk.sqDiffCopy(r, cur, 0), 0);
  });
  const f = (n: number) => new Float32Array(n);
  assert.throws(() => nk.sqDiffCopy(f(2), f(3), 3), /needs 3/);
  assert.throws(() => nk.sqDiffCopy(f(3), f(2), 3), /needs 3/);
  assert.throws(() => (nk.sqDiffCopy as (...a: unknown[]) => number)(f(2), f(2)), /expects 3 arguments/);
});

// ---- the linear-regression problem ----------------------------------------------------------

/** 20 coordinates in four tensors, one per group the estimator knows. */
const TENSORS: TensorSpec[] = [
  { name: 'transformer.wte.weight', shape: [5], kind: 'embedding', offset: 0, size: 5 },
  { name: 'transformer.h.0.ln_1.weight', shape: [3], kind: 'gain', offset: 5, size: 3 },
  { name: 'transformer.h.0.attn.c_attn.weight', shape: [6], kind: 'weight', offset: 8, size: 6 },
  { name: 'transformer.h.0.mlp.c_fc.weight', shape: [6], kind: 'weight', offset: 14, size: 6 },
];
const D = 20;
const S2 = 0.5; // noise variance s²
const E = Float64Array.from({ length: D }, (_, j) => 0.15 * Math.cos(1.3 * j) + 0.05); // e = w − w*
const E2 = E.reduce((a, x) => a + x * x, 0);
const truth = (J: number[]) => {
  const g2 = J.reduce((a, j) => a + E[j] * E[j], 0);
  return { g2, trace: J.length * (E2 + S2) + g2 };
};
const ALL = [...Array(D).keys()];
const GROUP_COORDS: Record<string, number[]> = {
  embeddings: [0, 1, 2, 3, 4],
  norms: [5, 6, 7],
  attention: [8, 9, 10, 11, 12, 13],
  mlp: [14, 15, 16, 17, 18, 19],
};

/** One optimizer step's accumulation: the buffer receives mean-of-micro-batch gradient / accum per micro-batch. */
function step(ns: NoiseScale, rng: Rng, grads: Float32Array, micro: number, accum: number, folded = false): NoiseRecord | null {
  grads.fill(0);
  ns.beginStep();
  const x = new Float64Array(D);
  for (let k = 0; k < accum; k++) {
    const gk = new Float64Array(D);
    for (let b = 0; b < micro; b++) {
      let r = 0;
      for (let j = 0; j < D; j++) {
        x[j] = rng.normal();
        r += x[j] * E[j];
      }
      r -= Math.sqrt(S2) * rng.normal();
      for (let j = 0; j < D; j++) gk[j] += (x[j] * r) / micro;
    }
    if (folded) for (let j = 0; j < D; j++) grads[j] = gk[j];
    else for (let j = 0; j < D; j++) grads[j] += gk[j] / accum;
    ns.afterMicro(grads, accum);
  }
  return ns.endStep(micro, accum, 128);
}

function meanSe(xs: number[]): [number, number] {
  const m = xs.reduce((a, b) => a + b, 0) / xs.length;
  const v = xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1);
  return [m, Math.sqrt(v / xs.length)];
}

test('the per-step estimates of ‖G‖² and tr(Σ) are unbiased (linear regression, known G and Σ)', () => {
  for (const [micro, accum] of [
    [4, 4],
    [2, 8],
    [8, 2],
  ] as const) {
    const ns = new NoiseScale(TENSORS, D, { beta: 0, kernels: ref });
    const rng = new Rng(100 + micro);
    const grads = new Float32Array(D);
    const reps = 4000;
    const g2s: number[] = [],
      trs: number[] = [];
    const groups: Record<string, { g2: number[]; tr: number[] }> = {};
    for (let i = 0; i < reps; i++) {
      const rec = step(ns, rng, grads, micro, accum)!;
      assert.equal(rec.b_small, micro);
      assert.equal(rec.b_big, micro * accum);
      g2s.push(rec.g2_step);
      trs.push(rec.trace_sigma_step);
      // β = 0: the smoothed values are this step's.
      assert.ok(Math.abs(rec.g2 - rec.g2_step) <= 1e-12 * Math.abs(rec.trace_sigma_step));
      for (const [name, e] of Object.entries(rec.groups!)) {
        (groups[name] ??= { g2: [], tr: [] }).g2.push(e.g2);
        groups[name].tr.push(e.trace_sigma);
      }
    }
    const t = truth(ALL);
    const [mg, seg] = meanSe(g2s);
    const [mt, set] = meanSe(trs);
    const tag = `B_small ${micro}, accum ${accum}`;
    assert.ok(Math.abs(mg - t.g2) < 4 * seg, `${tag}: mean ‖G‖² estimate ${mg} ± ${seg}, truth ${t.g2}`);
    assert.ok(Math.abs(mt - t.trace) < 4 * set, `${tag}: mean tr(Σ) estimate ${mt} ± ${set}, truth ${t.trace}`);
    // The estimates are informative, not just unbiased: the SE is a small fraction of the truth.
    assert.ok(seg < 0.1 * t.g2 && set < 0.05 * t.trace, `${tag}: standard errors ${seg}, ${set}`);
    assert.deepEqual(Object.keys(groups).sort(), ['attention', 'embeddings', 'mlp', 'norms']);
    for (const [name, J] of Object.entries(GROUP_COORDS)) {
      const tg = truth(J);
      const [a, sa] = meanSe(groups[name].g2);
      const [b, sb] = meanSe(groups[name].tr);
      assert.ok(Math.abs(a - tg.g2) < 4 * sa, `${tag} ${name}: ‖G‖² ${a} ± ${sa}, truth ${tg.g2}`);
      assert.ok(Math.abs(b - tg.trace) < 4 * sb, `${tag} ${name}: tr(Σ) ${b} ± ${sb}, truth ${tg.trace}`);
    }
  }
});

test('EMAs smooth separately with bias correction; B_simple converges to tr(Σ)/‖G‖²', () => {
  const beta = 0.98;
  const ns = new NoiseScale(TENSORS, D, { beta, kernels: ref });
  const rng = new Rng(7);
  const grads = new Float32Array(D);
  // Step 1: the bias-corrected EMA equals the raw estimate.
  const r1 = step(ns, rng, grads, 4, 4)!;
  assert.ok(Math.abs(r1.g2 - r1.g2_step) <= 1e-12 * (Math.abs(r1.g2_step) + 1e-300) + 1e-15);
  assert.ok(Math.abs(r1.trace_sigma - r1.trace_sigma_step) <= 1e-12 * Math.abs(r1.trace_sigma_step));
  assert.equal(r1.count, 1);
  // Step 2 by hand: EMA_2 = β(1−β)x1 + (1−β)x2, over 1 − β².
  const r2 = step(ns, rng, grads, 4, 4)!;
  const want = (beta * (1 - beta) * r1.g2_step + (1 - beta) * r2.g2_step) / (1 - beta * beta);
  assert.ok(Math.abs(r2.g2 - want) <= 1e-12 * Math.abs(r1.trace_sigma_step), `${r2.g2} vs ${want}`);
  // Ratio of smoothed values, not smoothed ratio.
  if (r2.g2 > 0) assert.equal(r2.b_simple, r2.trace_sigma / r2.g2);
  assert.equal(r2.b_simple_tokens, r2.b_simple === null ? null : r2.b_simple * 128);
  const bs: number[] = [];
  for (let i = 0; i < 3000; i++) {
    const r = step(ns, rng, grads, 4, 4)!;
    if (i >= 1000) bs.push(r.b_simple!);
  }
  const t = truth(ALL);
  const [m] = meanSe(bs);
  const b = t.trace / t.g2;
  assert.ok(Math.abs(m - b) < 0.1 * b, `mean smoothed B_simple ${m}, truth ${b}`);
});

test('group estimates sum to the model estimate; groups by tensor kind and name', () => {
  const ns = new NoiseScale(TENSORS, D, { beta: 0.9, kernels: ref });
  const rng = new Rng(11);
  const grads = new Float32Array(D);
  for (let i = 0; i < 20; i++) {
    const r = step(ns, rng, grads, 3, 3)!;
    const gs = Object.values(r.groups!);
    const g2 = gs.reduce((a, e) => a + e.g2, 0);
    const tr = gs.reduce((a, e) => a + e.trace_sigma, 0);
    assert.ok(Math.abs(g2 - r.g2) <= 1e-9 * r.trace_sigma, `Σ groups ‖G‖² ${g2} vs ${r.g2}`);
    assert.ok(Math.abs(tr - r.trace_sigma) <= 1e-9 * r.trace_sigma, `Σ groups tr(Σ) ${tr} vs ${r.trace_sigma}`);
    for (const e of gs) assert.equal(e.b_simple, e.g2 > 0 ? e.trace_sigma / e.g2 : null);
  }
  // 'model': no groups, same whole-model numbers.
  const a = new NoiseScale(TENSORS, D, { beta: 0.9, groups: 'model', kernels: ref });
  const b = new NoiseScale(TENSORS, D, { beta: 0.9, kernels: ref });
  const ra = step(a, new Rng(5), grads, 4, 2)!;
  const rb = step(b, new Rng(5), grads, 4, 2)!;
  assert.equal(ra.groups, undefined);
  assert.ok(Math.abs(ra.g2 - rb.g2) <= 1e-12 * rb.trace_sigma && Math.abs(ra.trace_sigma - rb.trace_sigma) <= 1e-12 * rb.trace_sigma);
  // Keel's GPT: every tensor lands in embeddings, attention, mlp or norms.
  const gpt = new GPT({ ...MICRO, qkNorm: true }, ref, { maxBatch: 1 });
  const byGroup: Record<string, string[]> = {};
  for (const t of gpt.layout.tensors) (byGroup[noiseGroupOf(t)] ??= []).push(t.name);
  assert.deepEqual(Object.keys(byGroup).sort(), ['attention', 'embeddings', 'mlp', 'norms']);
  assert.ok(byGroup.norms.includes('transformer.h.0.attn.q_norm.bias') && byGroup.norms.includes('transformer.ln_f.bias'));
  assert.ok(byGroup.attention.includes('transformer.h.0.attn.c_proj.bias') && byGroup.mlp.includes('transformer.h.0.mlp.c_proj.weight'));
  assert.deepEqual(byGroup.embeddings, ['transformer.wte.weight', 'transformer.wpe.weight']);
});

test('native and reference kernels give the same estimates; folded mode matches accumulated', () => {
  const grads = new Float32Array(D);
  const a = new NoiseScale(TENSORS, D, { beta: 0.9, kernels: ref });
  const b = new NoiseScale(TENSORS, D, { beta: 0.9 });
  const c = new NoiseScale(TENSORS, D, { beta: 0.9, folded: true });
  for (let i = 0; i < 5; i++) {
    const ra = step(a, new Rng(i), grads, 4, 3)!;
    const rb = step(b, new Rng(i), grads, 4, 3)!;
    const rc = step(c, new Rng(i), grads, 4, 3, true)!;
    const tol = 1e-4 * ra.trace_sigma; // float32 buffers: the fold rounds differently
    for (const r of [rb, rc]) {
      assert.ok(Math.abs(r.g2 - ra.g2) <= tol && Math.abs(r.trace_sigma - ra.trace_sigma) <= tol, `${r.g2} vs ${ra.g2}`);
    }
  }
});

test('accum < 2 gives null and says what it needs; a bad sequence of calls is refused', () => {
  const ns = new NoiseScale(TENSORS, D, { kernels: ref });
  const grads = new Float32Array(D);
  assert.equal(step(ns, new Rng(1), grads, 8, 1), null);
  assert.match(ns.reason!, /--accum ≥ 2/);
  assert.match(NoiseScale.requirement(1)!, /at least 2 micro-batches/);
  assert.equal(NoiseScale.requirement(2), null);
  assert.equal(ns.current(), null);
  ns.beginStep();
  ns.afterMicro(grads, 4);
  assert.equal(ns.endStep(8, 4, 128), null, 'one micro-batch seen, four announced');
  assert.match(ns.reason!, /saw 1 micro-batches/);
  assert.throws(() => ns.afterMicro(grads, 2), /before beginStep/);
  // Non-finite gradients leave the averages alone.
  const r = step(ns, new Rng(2), grads, 4, 2)!;
  ns.beginStep();
  grads.fill(NaN);
  ns.afterMicro(grads, 2);
  ns.afterMicro(grads, 2);
  assert.equal(ns.endStep(4, 2, 128), null);
  assert.match(ns.reason!, /non-finite/);
  assert.deepEqual(ns.current(), { b_simple: r.b_simple, g2: r.g2, trace_sigma: r.trace_sigma });
  assert.throws(() => new NoiseScale(TENSORS, D, { beta: 1 }), /beta/);
  assert.throws(() => new NoiseScale(TENSORS, D + 1), /cover 20/);
});

test('toJSON/fromJSON resumes the estimator exactly', () => {
  const grads = new Float32Array(D);
  const a = new NoiseScale(TENSORS, D, { beta: 0.95, kernels: ref });
  const rngA = new Rng(9);
  for (let i = 0; i < 10; i++) step(a, rngA, grads, 4, 2);
  const saved = JSON.parse(JSON.stringify(a.toJSON()));
  const rngB = new Rng(rngA.state());
  const b = NoiseScale.fromJSON(TENSORS, D, saved, ref);
  assert.equal(b.beta, 0.95);
  for (let i = 0; i < 5; i++) {
    const ra = step(a, rngA, grads, 4, 2);
    const rb = step(b, rngB, grads, 4, 2);
    assert.deepEqual(rb, ra);
  }
  const fields = noiseLogFields(step(a, rngA, grads, 4, 2)!);
  assert.deepEqual(Object.keys(fields).sort(), [
    'b_simple',
    'b_simple_attention',
    'b_simple_embeddings',
    'b_simple_mlp',
    'b_simple_norms',
    'b_simple_tokens',
    'noise_g2',
    'noise_grad_rms',
    'noise_trace_sigma',
  ]);
});

test('on the GPT: accumulated micro-batches give finite per-group estimates', () => {
  const model = new GPT(MICRO, nk, { maxBatch: 2 });
  model.init(1);
  const ns = new NoiseScale(model.layout.tensors, model.numParams, { beta: 0.9 });
  const rng = new Rng(4);
  const T = MICRO.blockSize;
  const tok = new Int32Array(2 * T),
    tgt = new Int32Array(2 * T);
  let rec: NoiseRecord | null = null;
  for (let s = 0; s < 3; s++) {
    model.zeroGrad();
    ns.beginStep();
    for (let m = 0; m < 3; m++) {
      randomBatch(rng, tok, tgt, MICRO.vocabSize);
      model.forward(tok, tgt, 2);
      model.backward(1 / 3);
      ns.afterMicro(model.grads, 3);
    }
    rec = ns.endStep(2, 3, T);
  }
  assert.ok(rec && Number.isFinite(rec.g2) && rec.trace_sigma > 0, JSON.stringify(rec));
  assert.deepEqual(Object.keys(rec.groups!).sort(), ['attention', 'embeddings', 'mlp', 'norms']);
  // |G_big|² is the accumulated gradient's squared norm.
  const big = nk.sumSquares(model.grads, model.numParams);
  const small = (rec.b_big * big - (rec.b_big - rec.b_small) * rec.g2_step) / rec.b_small; // invert 𝒢
  assert.ok(small > big, `|G_small|² ${small} exceeds |G_big|² ${big}`);
});

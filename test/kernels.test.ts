// Every kernel except matmul: the native addon (AVX2 and portable bodies, 1 and 2 threads)
// against its TypeScript twin on odd shapes, accumulate and aliasing semantics, argument
// checks; then float64 finite-difference checks of each backward on the reference. The
// optimizer kernels (adam, momentum, adafactor, triad) are tested in optim_kernels.test.ts.
//
// The portable bodies are selected with kernelsSetSimd(false) (KEEL_SIMD=0 does the same for
// a whole process); on a CPU without AVX2/FMA only the portable mode runs.
//
// Glossary: B batch, T time, C channels, NH heads (hs = C/NH), V vocabulary, BT = B·T.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eachMode, nk } from './native_modes.ts';
import * as ops from '../src/kernels/reference/ops.ts';
import { attentionBackward, attentionForward } from '../src/kernels/reference/attention.ts';
import { scale, sumSquares } from '../src/kernels/reference/optim.ts';
import { centralDifference, near, randomArrays } from './numeric.ts';

const { rng, ints, randn, randn64 } = randomArrays(20240611);

// Odd shapes: T = 1; T not a multiple of 4, 8 or 16; hs = 6, 8, 10 (not multiples of the
// vector width); one near the tiny model and one with hs = 64 (the small model's head).
const SHAPES = [
  { B: 2, T: 1, C: 24, NH: 3, V: 11 },
  { B: 3, T: 5, C: 24, NH: 3, V: 11 },
  { B: 3, T: 17, C: 24, NH: 4, V: 11 },
  { B: 1, T: 33, C: 20, NH: 2, V: 7 },
  { B: 2, T: 128, C: 128, NH: 4, V: 256 },
  { B: 1, T: 70, C: 128, NH: 2, V: 256 },
];

test('layernorm forward and backward (accumulating) match the reference', () => {
  for (const { B, T, C } of SHAPES) {
    const N = B * T;
    const inp = randn(N * C, 3),
      w = randn(C),
      b = randn(C),
      dout = randn(N * C);
    for (let i = 0; i < C; i++) inp[i] += 50; // a row with a large mean: variance by two passes
    const out0 = new Float32Array(N * C),
      mean0 = new Float32Array(N),
      rstd0 = new Float32Array(N);
    ops.layernormForward(out0, mean0, rstd0, inp, w, b, N, C);
    const dinp0 = randn(N * C),
      dw0 = randn(C),
      db0 = randn(C);
    const dinpW = dinp0.slice(),
      dwW = dw0.slice(),
      dbW = db0.slice();
    ops.layernormBackward(dinpW, dwW, dbW, dout, inp, w, mean0, rstd0, N, C);
    eachMode((m) => {
      const out = new Float32Array(N * C),
        mean = new Float32Array(N),
        rstd = new Float32Array(N);
      nk.layernormForward(out, mean, rstd, inp, w, b, N, C);
      near(out, out0, 2e-5, `${m} N=${N} C=${C} out`);
      near(mean, mean0, 1e-6, `${m} mean`);
      near(rstd, rstd0, 2e-5, `${m} rstd`);
      const dinp = dinp0.slice(),
        dw = dw0.slice(),
        db = db0.slice();
      nk.layernormBackward(dinp, dw, db, dout, inp, w, mean0, rstd0, N, C);
      near(dinp, dinpW, 2e-5, `${m} dinp`);
      near(dw, dwW, 2e-5, `${m} dweight`);
      near(db, dbW, 2e-5, `${m} dbias`);
    });
  }
});

test('attention forward (probabilities, zeros above the diagonal) and backward match the reference', () => {
  for (const { B, T, C, NH } of SHAPES) {
    const qkv = randn(B * T * 3 * C, 1.5),
      dout = randn(B * T * C);
    const out0 = new Float32Array(B * T * C),
      att0 = new Float32Array(B * NH * T * T);
    attentionForward(out0, att0, qkv, B, T, C, NH);
    const dqkv0 = randn(B * T * 3 * C);
    const dqkvW = dqkv0.slice();
    attentionBackward(dqkvW, dout, qkv, att0, B, T, C, NH);
    eachMode((m) => {
      const out = new Float32Array(B * T * C).fill(9),
        att = new Float32Array(B * NH * T * T).fill(9);
      nk.attentionForward(out, att, qkv, B, T, C, NH);
      near(out, out0, 2e-5, `${m} B=${B} T=${T} C=${C} NH=${NH} out`);
      near(att, att0, 2e-6, `${m} att`);
      for (let row = 0; row < B * NH * T; row++) {
        const t = row % T;
        for (let t2 = t + 1; t2 < T; t2++) assert.equal(att[row * T + t2], 0, `${m} att above the diagonal`);
      }
      const dqkv = dqkv0.slice();
      nk.attentionBackward(dqkv, dout, qkv, att0, B, T, C, NH);
      near(dqkv, dqkvW, 3e-5, `${m} dqkv`);
    });
  }
});

test('gelu (tanh form) forward and backward match the reference, including the tails', () => {
  const N = 4099; // not a multiple of the vector width
  const x = randn(N, 3);
  const special = [0, -0, 1e-8, -1e-8, 5, -5, 9, -9, 12, -12, 30, -30, 1e4, -1e4];
  special.forEach((v, i) => (x[i] = v));
  const dout = randn(N),
    d0 = randn(N);
  const y0 = new Float32Array(N),
    dW = d0.slice();
  ops.geluForward(y0, x, N);
  ops.geluBackward(dW, x, dout, N);
  eachMode((m) => {
    const y = new Float32Array(N);
    nk.geluForward(y, x, N);
    // Relative accuracy element by element. Far left (x ≲ −6) the reference's 1 + tanh(u)
    // cancels to 0 while the native σ(2u) form keeps the true ~1e−16…1e−30 value: the
    // absolute slack covers exactly that.
    for (let i = 0; i < N; i++) {
      assert.ok(Math.abs(y[i] - y0[i]) <= 2e-6 * Math.abs(y0[i]) + 1e-12, `${m} gelu(${x[i]}) = ${y[i]}, want ${y0[i]}`);
    }
    const d = d0.slice();
    nk.geluBackward(d, x, dout, N);
    near(d, dW, 2e-6, `${m} gelu backward`);
    const inplace = x.slice();
    nk.geluForward(inplace, inplace, N); // elementwise: in place is safe
    near(inplace, y0, 2e-6, `${m} gelu in place`);
  });
});

test('residual (out aliasing a or b) and accumulate', () => {
  for (const N of [1, 7, 8, 9, 100_003]) {
    const a = randn(N),
      b = randn(N);
    const sum = Float32Array.from(a, (v, i) => v + b[i]);
    eachMode((m) => {
      const out = new Float32Array(N);
      nk.residualForward(out, a, b, N);
      assert.deepEqual(out, sum, `${m} N=${N} residual`);
      const a2 = a.slice();
      nk.residualForward(a2, a2, b, N);
      assert.deepEqual(a2, sum, `${m} residual out = a`);
      const b2 = b.slice();
      nk.residualForward(b2, a, b2, N);
      assert.deepEqual(b2, sum, `${m} residual out = b`);
      const dst = a.slice();
      nk.accumulate(dst, b, N);
      assert.deepEqual(dst, sum, `${m} accumulate`);
      const ref = a.slice();
      ops.accumulate(ref, b, N);
      assert.deepEqual(ref, sum, 'reference accumulate');
    });
  }
});

test('encoder forward and backward (repeated tokens scatter-add) match the reference', () => {
  for (const { B, T, C, V } of SHAPES) {
    const toks = ints(B * T, Math.min(V, 3)); // few distinct tokens: many rows share a dwte row
    const wte = randn(V * C),
      wpe = randn(T * C),
      dout = randn(B * T * C);
    const out0 = new Float32Array(B * T * C);
    ops.encoderForward(out0, toks, wte, wpe, B, T, C);
    const dwte0 = randn(V * C),
      dwpe0 = randn(T * C);
    const dwteW = dwte0.slice(),
      dwpeW = dwpe0.slice();
    ops.encoderBackward(dwteW, dwpeW, dout, toks, B, T, C);
    eachMode((m) => {
      const out = new Float32Array(B * T * C);
      nk.encoderForward(out, toks, wte, wpe, B, T, C);
      assert.deepEqual(out, out0, `${m} encoder out`);
      const dwte = dwte0.slice(),
        dwpe = dwpe0.slice();
      nk.encoderBackward(dwte, dwpe, dout, toks, B, T, C);
      near(dwte, dwteW, 1e-6, `${m} B=${B} T=${T} C=${C} dwte`);
      near(dwpe, dwpeW, 1e-6, `${m} dwpe`);
    });
    // The embedding-gradient shrink: the lookup adds wteScale·dout to dwte; dwpe is untouched by it.
    const dwteS = dwte0.slice(),
      dwpeS = dwpe0.slice();
    ops.encoderBackward(dwteS, dwpeS, dout, toks, B, T, C, 0.3);
    near(dwpeS, dwpeW, 0, 'reference dwpe with wteScale');
    eachMode((m) => {
      const dwte = dwte0.slice(),
        dwpe = dwpe0.slice();
      nk.encoderBackward(dwte, dwpe, dout, toks, B, T, C, 0.3);
      near(dwte, dwteS, 1e-6, `${m} B=${B} T=${T} C=${C} dwte × 0.3`);
      near(dwpe, dwpeW, 1e-6, `${m} dwpe with wteScale`);
    });
  }
});

test('cross-entropy: losses, Σ loss, dlogits separate and in place, stability, NaN', () => {
  for (const { B, T, V } of SHAPES) {
    const BT = B * T;
    const logits = randn(BT * V, 3);
    logits[0] = 95; // e^95 overflows float: only the max-subtracted form survives
    logits[V] = -95;
    const targets = ints(BT, V);
    const l0 = new Float32Array(BT),
      dl0 = new Float32Array(BT * V);
    const sum0 = ops.crossEntropy(l0, dl0, logits, targets, BT, V, 0.25);
    eachMode((m) => {
      const losses = new Float32Array(BT);
      const s1 = nk.crossEntropy(losses, null, logits, targets, BT, V, 0);
      near(losses, l0, 2e-6, `${m} BT=${BT} V=${V} losses`);
      assert.ok(Math.abs(s1 - sum0) <= 1e-5 * Math.abs(sum0) + 1e-6, `${m} Σ loss ${s1} vs ${sum0}`);
      const dl = new Float32Array(BT * V);
      nk.crossEntropy(losses, dl, logits, targets, BT, V, 0.25);
      near(dl, dl0, 1e-6, `${m} dlogits`);
      const inplace = logits.slice();
      const s2 = nk.crossEntropy(losses, inplace, inplace, targets, BT, V, 0.25);
      near(inplace, dl0, 1e-6, `${m} dlogits in place`);
      near(losses, l0, 2e-6, `${m} losses (in place)`);
      assert.equal(s2, s1, `${m} Σ loss (in place)`);
    });
  }
  // A NaN logit must surface as a NaN loss (divergence detection relies on it).
  const V = 19,
    lg = randn(2 * V);
  lg[V + 3] = NaN;
  eachMode((m) => {
    const losses = new Float32Array(2);
    const s = nk.crossEntropy(losses, null, lg, new Int32Array([1, 2]), 2, V, 0);
    assert.ok(Number.isFinite(losses[0]) && Number.isNaN(losses[1]) && Number.isNaN(s), `${m} NaN propagation`);
  });
});

test('sumSquares and scale match the reference across the thread split', () => {
  const N = 200_003; // several chunks at 2 threads, plus a vector tail
  const g = randn(N, 0.1);
  let exact = 0;
  for (let i = 0; i < N; i++) exact += g[i] * g[i];
  assert.equal(sumSquares(g, N), exact);
  eachMode((mode) => {
    const ss = nk.sumSquares(g, N);
    assert.ok(Math.abs(ss - exact) <= 1e-12 * exact, `${mode} sumSquares ${ss} vs ${exact} (float64 accumulation)`);
    assert.equal(nk.sumSquares(g, 0), 0);
    const x = g.slice(),
      y = g.slice();
    nk.scale(x, N, -0.375);
    scale(y, N, -0.375);
    assert.deepEqual(x, y, `${mode} scale`);
  });
});

test('native kernels reject bad arguments with a JS error', () => {
  const f = (n: number) => new Float32Array(n);
  assert.throws(() => nk.geluForward(f(3), f(4), 4), /needs 4/);
  assert.throws(() => nk.geluForward(f(4), f(4), -1), /integer/);
  assert.throws(() => nk.residualForward(f(4), new Float64Array(4) as unknown as Float32Array, f(4), 4), /Float32Array/);
  assert.throws(() => nk.layernormForward(f(8), f(1), f(1), f(8), f(8), f(7), 1, 8), /needs 8/);
  assert.throws(() => nk.attentionForward(f(24), f(9), f(72), 1, 3, 8, 3), /divisible/);
  assert.throws(() => nk.attentionForward(f(24), f(8), f(72), 1, 3, 8, 2), /needs 18/);
  assert.throws(() => nk.encoderForward(f(8), new Int32Array([0, 5]), f(5 * 4), f(8), 1, 2, 4), /tokens\[1\] = 5/);
  assert.throws(() => nk.encoderBackward(f(20), f(8), f(8), new Int32Array([-1, 0]), 1, 2, 4), /tokens\[0\]/);
  assert.throws(() => nk.crossEntropy(f(1), null, f(4), new Int32Array([4]), 1, 4, 1), /targets\[0\] = 4/);
  assert.throws(() => nk.sumSquares(f(2), 3), /needs 3/);
  assert.throws(() => (nk.scale as (...a: unknown[]) => void)(f(2)), /expects 3 arguments/);
});

// ---- float64 finite-difference checks of the reference backwards -------------------------

/** Central differences of a scalar loss at `count` entries of x against the analytic gradient. */
function gradCheck(what: string, x: Float64Array, loss: () => number, grad: Float64Array, count = 30): void {
  const h = 1e-5;
  for (let j = 0; j < Math.min(count, x.length); j++) {
    const i = x.length <= count ? j : rng.int(x.length);
    const fd = centralDifference(x, i, loss, h);
    assert.ok(Math.abs(fd - grad[i]) <= 1e-7 * (1 + Math.abs(fd)), `${what}[${i}]: analytic ${grad[i]}, numeric ${fd}`);
  }
}
const dot = (a: Float64Array, b: Float64Array) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
};

test('finite differences (float64): layernorm, attention, gelu, encoder, cross-entropy', () => {
  const B = 2,
    T = 4,
    C = 6,
    NH = 2,
    V = 5,
    N = B * T;
  {
    const inp = randn64(N * C, 2),
      w = randn64(C),
      b = randn64(C),
      proj = randn64(N * C);
    const out = new Float64Array(N * C),
      mean = new Float64Array(N),
      rstd = new Float64Array(N);
    const L = () => (ops.layernormForward(out, mean, rstd, inp, w, b, N, C), dot(out, proj));
    L();
    const dinp = randn64(N * C),
      dw = new Float64Array(C),
      db = new Float64Array(C);
    const base = dinp.slice();
    ops.layernormBackward(dinp, dw, db, proj, inp, w, mean, rstd, N, C);
    for (let i = 0; i < dinp.length; i++) dinp[i] -= base[i]; // accumulated onto a non-zero buffer
    gradCheck('layernorm dinp', inp, L, dinp);
    gradCheck('layernorm dweight', w, L, dw);
    gradCheck('layernorm dbias', b, L, db);
  }
  {
    const qkv = randn64(N * 3 * C),
      proj = randn64(N * C);
    const out = new Float64Array(N * C),
      att = new Float64Array(B * NH * T * T);
    const L = () => (attentionForward(out, att, qkv, B, T, C, NH), dot(out, proj));
    L();
    const dqkv = new Float64Array(N * 3 * C);
    attentionBackward(dqkv, proj, qkv, att, B, T, C, NH);
    gradCheck('attention dqkv', qkv, L, dqkv, 144);
  }
  {
    const M = 40,
      x = randn64(M, 2.5),
      proj = randn64(M),
      out = new Float64Array(M),
      d = new Float64Array(M);
    const L = () => (ops.geluForward(out, x, M), dot(out, proj));
    ops.geluBackward(d, x, proj, M);
    gradCheck('gelu', x, L, d, M);
  }
  {
    const toks = Int32Array.from([0, 1, 1, 4, 0, 0, 2, 1]),
      wte = randn64(V * C),
      wpe = randn64(T * C);
    const proj = randn64(N * C),
      out = new Float64Array(N * C);
    const L = () => (ops.encoderForward(out, toks, wte, wpe, B, T, C), dot(out, proj));
    const dwte = new Float64Array(V * C),
      dwpe = new Float64Array(T * C);
    ops.encoderBackward(dwte, dwpe, proj, toks, B, T, C);
    gradCheck('encoder dwte', wte, L, dwte, V * C);
    gradCheck('encoder dwpe', wpe, L, dwpe, T * C);
  }
  {
    const logits = randn64(N * V, 2),
      targets = ints(N, V),
      losses = new Float64Array(N),
      s = 0.37;
    const L = () => s * ops.crossEntropy(losses, null, logits, targets, N, V, 0);
    const d = new Float64Array(N * V);
    ops.crossEntropy(losses, d, logits, targets, N, V, s);
    gradCheck('crossEntropy dlogits', logits, L, d, N * V);
  }
});

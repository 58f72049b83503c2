// Every non-matmul kernel: native (SIMD and portable bodies, 1 and 2 threads) against its
// TypeScript twin on odd shapes, accumulation and aliasing semantics, and a float64
// finite-difference check of each backward on the reference.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { referenceKernels } from '../src/kernels/reference/index.ts';
import { nativeKernels } from '../src/kernels/native.ts';
import type { Kernels } from '../src/kernels/types.ts';
import { Rng } from '../src/util/rng.ts';

const nk = nativeKernels();
const rk = referenceKernels<Float32Array>();
const r64 = referenceKernels<Float64Array>();
const setSimd = (on: boolean) => (nk as unknown as { opsSetSimd(on: boolean): boolean }).opsSetSimd(on);
const simdDefault = setSimd(true);
setSimd(simdDefault);
const threadsDefault = nk.threads();
after(() => {
  setSimd(simdDefault);
  nk.threads(threadsDefault);
});

const rng = new Rng(42);
const randn = (n: number, s = 1) => Float32Array.from({ length: n }, () => rng.normal() * s);
const tokens = (n: number, V: number) => Int32Array.from({ length: n }, () => rng.int(V));

function close(a: Float32Array | Float64Array, b: Float32Array | Float64Array, tol: number, what: string) {
  assert.equal(a.length, b.length, what);
  let scale = 0;
  for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]));
  for (let i = 0; i < a.length; i++) {
    if (!(Math.abs(a[i] - b[i]) <= tol * (1 + scale))) assert.fail(`${what}[${i}]: ${a[i]} vs ${b[i]}`);
  }
}

/** Runs `check(kernels)` on native in every mode, comparing with the same call on the reference. */
function modes(name: string, fn: (k: Kernels, mode: string) => void) {
  const simd = setSimd(true) ? [true, false] : [false];
  for (const s of simd) {
    for (const threads of [1, 2]) {
      setSimd(s);
      nk.threads(threads);
      fn(nk, `${name} simd=${s} threads=${threads}`);
    }
  }
  setSimd(simdDefault);
  nk.threads(threadsDefault);
}

const SHAPES = [
  { B: 1, T: 1, C: 8, NH: 2, V: 5 },
  { B: 3, T: 5, C: 24, NH: 3, V: 11 },
  { B: 2, T: 17, C: 36, NH: 4, V: 37 },
  { B: 2, T: 64, C: 128, NH: 4, V: 256 },
];

test('layernorm forward/backward match the reference', () => {
  for (const { B, T, C } of SHAPES) {
    const N = B * T;
    const inp = randn(N * C, 2), w = randn(C), b = randn(C), dout = randn(N * C);
    const want = { out: new Float32Array(N * C), mean: new Float32Array(N), rstd: new Float32Array(N) };
    rk.layernormForward(want.out, want.mean, want.rstd, inp, w, b, N, C);
    const d0 = randn(N * C), dw0 = randn(C), db0 = randn(C);
    const wd = { dinp: d0.slice(), dw: dw0.slice(), db: db0.slice() };
    rk.layernormBackward(wd.dinp, wd.dw, wd.db, dout, inp, w, want.mean, want.rstd, N, C);
    modes('layernorm', (k, m) => {
      const out = new Float32Array(N * C), mean = new Float32Array(N), rstd = new Float32Array(N);
      k.layernormForward(out, mean, rstd, inp, w, b, N, C);
      close(out, want.out, 1e-5, m + ' out');
      close(mean, want.mean, 1e-5, m + ' mean');
      close(rstd, want.rstd, 1e-5, m + ' rstd');
      const dinp = d0.slice(), dw = dw0.slice(), db = db0.slice();
      k.layernormBackward(dinp, dw, db, dout, inp, w, mean, rstd, N, C);
      close(dinp, wd.dinp, 1e-5, m + ' dinp');
      close(dw, wd.dw, 1e-5, m + ' dweight');
      close(db, wd.db, 1e-5, m + ' dbias');
    });
  }
});

test('attention forward/backward match the reference', () => {
  for (const { B, T, C, NH } of SHAPES) {
    const qkv = randn(B * T * 3 * C), dout = randn(B * T * C);
    const out0 = new Float32Array(B * T * C), att0 = new Float32Array(B * NH * T * T);
    rk.attentionForward(out0, att0, qkv, B, T, C, NH);
    const dq0 = randn(B * T * 3 * C);
    const dqWant = dq0.slice();
    rk.attentionBackward(dqWant, dout, qkv, att0, B, T, C, NH);
    modes('attention', (k, m) => {
      const out = new Float32Array(B * T * C), att = new Float32Array(B * NH * T * T).fill(7);
      k.attentionForward(out, att, qkv, B, T, C, NH);
      close(out, out0, 1e-5, m + ' out');
      close(att, att0, 1e-5, m + ' att (zeros above the diagonal)');
      const dq = dq0.slice();
      k.attentionBackward(dq, dout, qkv, att, B, T, C, NH);
      close(dq, dqWant, 2e-5, m + ' dqkv');
    });
  }
});

test('gelu, residual, accumulate, encoder match the reference', () => {
  for (const { B, T, C, V } of SHAPES) {
    const N = B * T * C + 3; // not a multiple of the vector width
    const x = randn(N, 3), dout = randn(N), d0 = randn(N);
    const g0 = new Float32Array(N);
    rk.geluForward(g0, x, N);
    const gd0 = d0.slice();
    rk.geluBackward(gd0, x, dout, N);
    const toks = tokens(B * T, V), wte = randn(V * C), wpe = randn(T * C), dEnc = randn(B * T * C);
    const e0 = new Float32Array(B * T * C);
    rk.encoderForward(e0, toks, wte, wpe, B, T, C);
    const dwte0 = randn(V * C), dwpe0 = randn(T * C);
    const dwteW = dwte0.slice(), dwpeW = dwpe0.slice();
    rk.encoderBackward(dwteW, dwpeW, dEnc, toks, B, T, C);
    modes('elementwise', (k, m) => {
      const g = new Float32Array(N);
      k.geluForward(g, x, N);
      close(g, g0, 2e-6, m + ' gelu');
      const gd = d0.slice();
      k.geluBackward(gd, x, dout, N);
      close(gd, gd0, 2e-6, m + ' gelu backward');
      const a = x.slice();
      k.residualForward(a, a, dout, N); // out aliases a
      close(a, Float32Array.from(x, (v, i) => v + dout[i]), 0, m + ' residual');
      const acc = d0.slice();
      k.accumulate(acc, dout, N);
      close(acc, Float32Array.from(d0, (v, i) => v + dout[i]), 0, m + ' accumulate');
      const e = new Float32Array(B * T * C);
      k.encoderForward(e, toks, wte, wpe, B, T, C);
      close(e, e0, 0, m + ' encoder');
      const dwte = dwte0.slice(), dwpe = dwpe0.slice();
      k.encoderBackward(dwte, dwpe, dEnc, toks, B, T, C);
      close(dwte, dwteW, 1e-6, m + ' dwte');
      close(dwpe, dwpeW, 1e-6, m + ' dwpe');
    });
  }
});

test('fused softmax cross-entropy: losses, in-place dlogits, large logits', () => {
  for (const { B, T, V } of SHAPES) {
    const BT = B * T;
    const logits = randn(BT * V, 4);
    logits[0] = 80; // stability: exp would overflow without max-subtraction
    const targets = tokens(BT, V);
    const l0 = new Float32Array(BT), d0 = new Float32Array(BT * V);
    const sum0 = rk.crossEntropy(l0, d0, logits, targets, BT, V, 0.5);
    modes('crossEntropy', (k, m) => {
      const losses = new Float32Array(BT);
      const sum = k.crossEntropy(losses, null, logits, targets, BT, V, 0);
      close(losses, l0, 1e-5, m + ' losses');
      assert.ok(Math.abs(sum - sum0) < 1e-4 * Math.abs(sum0) + 1e-5, `${m} sum ${sum} vs ${sum0}`);
      const inplace = logits.slice();
      k.crossEntropy(losses, inplace, inplace, targets, BT, V, 0.5);
      close(inplace, d0, 1e-6, m + ' dlogits in place');
    });
  }
});

test('adamw, sumSquares and scale match the reference', () => {
  const N = 1000003;
  const p0 = randn(N), g = randn(N, 0.1), m0 = randn(N, 0.01), v0 = Float32Array.from(randn(N, 0.01), (x) => x * x);
  const want = { p: p0.slice(), m: m0.slice(), v: v0.slice() };
  rk.adamw(want.p, g, want.m, want.v, N, 1e-3, 0.9, 0.95, 1e-8, 0.1, 7);
  const ss = rk.sumSquares(g, N);
  modes('optim', (k, mode) => {
    const p = p0.slice(), m = m0.slice(), v = v0.slice();
    k.adamw(p, g, m, v, N, 1e-3, 0.9, 0.95, 1e-8, 0.1, 7);
    close(p, want.p, 1e-6, mode + ' params');
    close(m, want.m, 1e-6, mode + ' m');
    close(v, want.v, 1e-6, mode + ' v');
    assert.ok(Math.abs(k.sumSquares(g, N) - ss) < 1e-6 * ss, mode + ' sumSquares');
    const s = g.slice();
    k.scale(s, N, 0.25);
    close(s, Float32Array.from(g, (x) => x * 0.25), 0, mode + ' scale');
  });
});

test('adamw reference: two steps worked out by hand', () => {
  // θ=1, g=0.5 then g=-0.25; lr 0.1, β1 0.9, β2 0.99, ε 1e-8, λ 0.1 (decayed: θ·(1 − lr·λ) first).
  const p = new Float64Array([1]), m = new Float64Array(1), v = new Float64Array(1);
  r64.adamw(p, new Float64Array([0.5]), m, v, 1, 0.1, 0.9, 0.99, 1e-8, 0.1, 1);
  // m = 0.05, v = 0.0025; m̂ = 0.5, v̂ = 0.25 → step = 0.5/0.5 = 1.
  assert.ok(Math.abs(p[0] - (1 * 0.99 - 0.1 * (0.5 / (0.5 + 1e-8)))) < 1e-15);
  const p1 = p[0];
  r64.adamw(p, new Float64Array([-0.25]), m, v, 1, 0.1, 0.9, 0.99, 1e-8, 0.1, 2);
  const m2 = 0.9 * 0.05 + 0.1 * -0.25, v2 = 0.99 * 0.0025 + 0.01 * 0.0625;
  const mh = m2 / (1 - 0.81), vh = v2 / (1 - 0.99 ** 2);
  assert.ok(Math.abs(p[0] - (p1 * 0.99 - (0.1 * mh) / (Math.sqrt(vh) + 1e-8))) < 1e-15);
});

/** Central differences of L = Σ w·f(x) against the analytic backward, in float64. */
function fdCheck(name: string, x: Float64Array, loss: () => number, grad: Float64Array, h = 1e-6) {
  for (let j = 0; j < Math.min(x.length, 24); j++) {
    const i = (j * 7919) % x.length;
    const o = x[i];
    x[i] = o + h;
    const lp = loss();
    x[i] = o - h;
    const lm = loss();
    x[i] = o;
    const fd = (lp - lm) / (2 * h);
    assert.ok(Math.abs(fd - grad[i]) <= 1e-6 * (1 + Math.abs(fd)), `${name}[${i}]: analytic ${grad[i]} vs numeric ${fd}`);
  }
}
const r = (n: number, s = 1) => Float64Array.from({ length: n }, () => rng.normal() * s);
const dot = (a: Float64Array, b: Float64Array) => a.reduce((s, v, i) => s + v * b[i], 0);

test('finite-difference checks of every backward (float64 reference)', () => {
  const B = 2, T = 5, C = 12, NH = 3, V = 7, N = B * T;
  // layernorm: inputs, gain, bias
  {
    const inp = r(N * C), w = r(C), b = r(C), proj = r(N * C);
    const out = new Float64Array(N * C), mean = new Float64Array(N), rstd = new Float64Array(N);
    const L = () => (r64.layernormForward(out, mean, rstd, inp, w, b, N, C), dot(out, proj));
    L();
    const di = new Float64Array(N * C), dw = new Float64Array(C), db = new Float64Array(C);
    r64.layernormBackward(di, dw, db, proj, inp, w, mean, rstd, N, C);
    fdCheck('layernorm dinp', inp, L, di);
    fdCheck('layernorm dweight', w, L, dw);
    fdCheck('layernorm dbias', b, L, db);
  }
  // attention
  {
    const qkv = r(N * 3 * C), proj = r(N * C);
    const out = new Float64Array(N * C), att = new Float64Array(B * NH * T * T);
    const L = () => (r64.attentionForward(out, att, qkv, B, T, C, NH), dot(out, proj));
    L();
    const d = new Float64Array(N * 3 * C);
    r64.attentionBackward(d, proj, qkv, att, B, T, C, NH);
    fdCheck('attention dqkv', qkv, L, d);
  }
  // gelu
  {
    const x = r(64, 2), proj = r(64), out = new Float64Array(64), d = new Float64Array(64);
    const L = () => (r64.geluForward(out, x, 64), dot(out, proj));
    r64.geluBackward(d, x, proj, 64);
    fdCheck('gelu', x, L, d);
  }
  // encoder
  {
    const toks = tokens(N, V), wte = r(V * C), wpe = r(T * C), proj = r(N * C), out = new Float64Array(N * C);
    const L = () => (r64.encoderForward(out, toks, wte, wpe, B, T, C), dot(out, proj));
    const dwte = new Float64Array(V * C), dwpe = new Float64Array(T * C);
    r64.encoderBackward(dwte, dwpe, proj, toks, B, T, C);
    fdCheck('encoder dwte', wte, L, dwte);
    fdCheck('encoder dwpe', wpe, L, dwpe);
  }
  // cross-entropy: gradient of the mean loss
  {
    const logits = r(N * V, 2), targets = tokens(N, V), losses = new Float64Array(N);
    const L = () => r64.crossEntropy(losses, null, logits, targets, N, V, 0) / N;
    const d = new Float64Array(N * V);
    r64.crossEntropy(losses, d, logits, targets, N, V, 1 / N);
    fdCheck('crossEntropy', logits, L, d);
  }
});

test('native kernels reject buffers that are too short', () => {
  assert.throws(() => nk.geluForward(new Float32Array(3), new Float32Array(4), 4), /elements|short/);
  assert.throws(() => nk.layernormForward(new Float32Array(8), new Float32Array(1), new Float32Array(1), new Float32Array(4), new Float32Array(8), new Float32Array(8), 1, 8));
});

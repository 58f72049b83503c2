// The optimizer kernels (adam, momentum, adafactor, triad): the native addon (AVX2 and
// portable bodies, 1 and 2 threads) against its float64 TypeScript twin on odd sizes and
// every mode, then values worked out by hand (which the reference must match too) and
// argument checks.
//
// The reference runs on Float32Array copies: it computes in float64 but stores the state in
// float32, exactly as the native kernels do, so both see the same rounded state.
// Parameter updates are compared on the step Δθ (relative to the largest step) plus the
// rounding of θ itself, so an error in the update cannot hide behind θ's magnitude.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eachMode, nk, simdModes } from './native_modes.ts';
import * as ref from '../src/kernels/reference/optim.ts';
import type { AdafactorCoefs, AdamCoefs, MomentumCoefs } from '../src/kernels/types.ts';
import { near, randomArrays } from './numeric.ts';
import { adamwCoefs } from '../src/optim/adamw.ts';
import { momentumCoefs } from '../src/optim/base.ts';

const { rng, randn } = randomArrays(777);

function noNaN(x: Float32Array, what: string): void {
  const i = x.findIndex((y) => Number.isNaN(y));
  assert.equal(i, -1, `${what}: NaN at ${i}`);
}

/**
 * Parameters after a step: |got − want| ≤ tol·max|want − before| + 3e-7·|want| (the update to
 * relative tol, plus a few float32 roundings of θ). Indices in `skip` are not compared.
 */
function nearStep(got: Float32Array, want: Float32Array, before: Float32Array, tol: number, what: string, skip?: Set<number>): void {
  let step = 0;
  for (let i = 0; i < want.length; i++) step = Math.max(step, Math.abs(want[i] - before[i]));
  for (let i = 0; i < got.length; i++) {
    if (skip?.has(i)) continue;
    const lim = tol * step + 3e-7 * Math.abs(want[i]);
    if (!(Math.abs(got[i] - want[i]) <= lim)) {
      assert.fail(`${what}[${i}]: got ${got[i]}, want ${want[i]} (before ${before[i]}, ±${lim}, max step ${step})`);
    }
  }
}

const TOL = 1e-5;

// ---- adam -----------------------------------------------------------------------------------

const adamwAt = (t: number, lr: number, beta1: number, beta2: number, eps: number, weightDecay: number, epsMode: AdamCoefs['epsMode']) =>
  adamwCoefs({ beta1, beta2, eps, weightDecay, epsMode }, lr, t);

/** AdaX (docs/optimizers.md#adax): v grows by (1 + β2) per step, no bias correction on m. */
function adaxCoefs(t: number, lr: number, epsMode: AdamCoefs['epsMode']): AdamCoefs {
  const b2 = 1e-4;
  return {
    beta1: 0.9,
    g1: 0.1,
    beta2: 1 + b2,
    g2: b2,
    mScale: 1,
    rootVScale: 1 / Math.sqrt(Math.expm1(t * Math.log1p(b2))),
    lr,
    eps: 1e-6,
    decay: 1,
    epsMode,
  };
}

test('adam matches the reference: every epsMode, odd sizes, AdamW and AdaX coefficients, zero coordinates', () => {
  for (const N of [1, 7, 1000, 100_003, 200_003]) {
    // Per coordinate a scale 10^−k (k = 0…9, so ε = 1e-8 dominates some) shared by g, m and
    // √v, so that r stays O(1) and the largest step does not swamp the tolerance.
    const sc = Array.from({ length: N }, () => 10 ** -rng.int(10));
    const p0 = randn(N),
      g = Float32Array.from(sc, (s) => s * rng.normal());
    const m0 = Float32Array.from(sc, (s) => 0.3 * s * rng.normal());
    const v0 = Float32Array.from(sc, (s) => s * s * (0.1 + rng.normal() ** 2));
    for (let i = 0; i < N; i += 17) g[i] = m0[i] = v0[i] = 0; // v̂ = 0: the 0/0 case of zero/atan2
    for (const epsMode of [0, 1, 2, 3] as const) {
      for (const [name, c] of [
        ['adamw', adamwAt(3, 1e-2, 0.9, 0.95, 1e-8, 0.1, epsMode)],
        ['adax', adaxCoefs(4, 1e-2, epsMode)],
      ] as const) {
        const pW = p0.slice(),
          mW = m0.slice(),
          vW = v0.slice();
        ref.adam(pW, g, mW, vW, N, c);
        eachMode((mode) => {
          const what = `N=${N} epsMode=${epsMode} ${name} ${mode}`;
          const p = p0.slice(),
            m = m0.slice(),
            v = v0.slice();
          nk.adam(p, g, m, v, N, c);
          noNaN(p, what);
          nearStep(p, pW, p0, TOL, `${what} θ`);
          near(m, mW, 1e-6, `${what} m`);
          near(v, vW, 1e-6, `${what} v`);
        });
      }
    }
  }
});

test('adam (AdamW coefficients): three steps against values worked out by hand', () => {
  const lr = 0.01,
    b1 = 0.9,
    b2 = 0.999,
    eps = 1e-8;
  const grads = [
    [0.5, -2, 0],
    [-0.25, 1, 3],
    [0.125, -0.5, -1],
  ];
  for (const wd of [0, 0.5]) {
    // By hand: m_t, v_t recurrences, bias corrections 1 − βᵗ, decoupled decay applied first.
    const want = [1, -0.5, 2];
    const m = [0, 0, 0],
      v = [0, 0, 0];
    const p64 = Float64Array.from(want),
      m64 = new Float64Array(3),
      v64 = new Float64Array(3);
    const p32 = Float32Array.from(want),
      m32 = new Float32Array(3),
      v32 = new Float32Array(3);
    grads.forEach((g, s) => {
      const t = s + 1;
      for (let i = 0; i < 3; i++) {
        m[i] = b1 * m[i] + (1 - b1) * g[i];
        v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
        const mhat = m[i] / (1 - b1 ** t),
          vhat = v[i] / (1 - b2 ** t);
        want[i] = want[i] * (1 - lr * wd) - (lr * mhat) / (Math.sqrt(vhat) + eps);
      }
      const c = adamwAt(t, lr, b1, b2, eps, wd, 0);
      ref.adam(p64, Float64Array.from(g), m64, v64, 3, c);
      nk.adam(p32, Float32Array.from(g), m32, v32, 3, c);
    });
    for (let i = 0; i < 3; i++) {
      assert.ok(Math.abs(p64[i] - want[i]) <= 1e-15, `wd=${wd} reference θ[${i}] ${p64[i]} vs ${want[i]}`);
      assert.ok(Math.abs(p32[i] - want[i]) <= 2e-7 * (1 + Math.abs(want[i])), `wd=${wd} native θ[${i}] ${p32[i]} vs ${want[i]}`);
    }
  }
});

test('adam step 1 by hand in each epsMode: m̂ = g and √v̂ = |g|', () => {
  // At t = 1 from zero state the bias corrections undo the EMA, so r depends on g and ε only:
  // outside g/(|g| + ε), inside g/√(g² + ε²), zero sign(g) (0 at g = 0), atan2 sign(g)·π/4.
  const lr = 0.01,
    eps = 1e-8,
    g = [0.5, -2, 0, 3e-9, -1e-12, 7, -0.001, 0, 1, -1, 2e-8];
  const n = g.length;
  const rOf: Record<number, (x: number) => number> = {
    0: (x) => x / (Math.abs(x) + eps),
    1: (x) => x / Math.sqrt(x * x + eps * eps),
    2: (x) => Math.sign(x),
    3: (x) => (Math.sign(x) * Math.PI) / 4,
  };
  for (const epsMode of [0, 1, 2, 3] as const) {
    const c = adamwAt(1, lr, 0.9, 0.95, eps, 0, epsMode);
    const p0 = Float32Array.from({ length: n }, (_, i) => 1 + i / 8);
    const want = Array.from(p0, (p, i) => p - lr * rOf[epsMode](g[i]));
    const p64 = Float64Array.from(p0);
    ref.adam(p64, Float64Array.from(g), new Float64Array(n), new Float64Array(n), n, c);
    for (let i = 0; i < n; i++) assert.ok(Math.abs(p64[i] - want[i]) <= 1e-12, `reference epsMode=${epsMode} θ[${i}]`);
    eachMode((mode) => {
      const p = p0.slice();
      nk.adam(p, Float32Array.from(g), new Float32Array(n), new Float32Array(n), n, c);
      for (let i = 0; i < n; i++) {
        assert.ok(Math.abs(p[i] - want[i]) <= 1e-6 * lr + 2e-7 * Math.abs(want[i]), `${mode} epsMode=${epsMode} θ[${i}]: ${p[i]} vs ${want[i]} (g ${g[i]})`);
      }
    });
  }
});

test('adam zero and atan2 modes: an all-zero gradient on zero state leaves θ exactly decayed, never NaN', () => {
  const N = 19; // two vectors of 8 plus a tail
  for (const epsMode of [2, 3] as const) {
    for (const wd of [0, 0.1]) {
      const c = adamwAt(1, 1e-2, 0.9, 0.95, 0, wd, epsMode); // ε = 0: only the guard prevents 0/0
      const p0 = randn(N);
      eachMode((mode) => {
        const p = p0.slice(),
          m = new Float32Array(N),
          v = new Float32Array(N);
        nk.adam(p, new Float32Array(N), m, v, N, c);
        const decay = Math.fround(c.decay);
        for (let i = 0; i < N; i++) assert.equal(p[i], Math.fround(p0[i] * decay), `${mode} epsMode=${epsMode} θ[${i}]`);
        assert.deepEqual(m, new Float32Array(N));
        assert.deepEqual(v, new Float32Array(N));
      });
      const p64 = Float64Array.from(p0);
      ref.adam(p64, new Float64Array(N), new Float64Array(N), new Float64Array(N), N, c);
      for (let i = 0; i < N; i++) assert.equal(p64[i], p0[i] * c.decay);
    }
  }
});

test('adam atan2 mode: r within 5e-7 relative of Math.atan2 over 12 decades, ±0 and NaN', () => {
  // β1 = β2 = 1 with g1 = g2 = 0 freeze m and v, so with θ = 0, lr = 1, decay = 1 the new θ is
  // exactly −atan2(m, √v) as the kernel computes it.
  const c: AdamCoefs = { beta1: 1, g1: 0, beta2: 1, g2: 0, mScale: 1, rootVScale: 1, lr: 1, eps: 0, decay: 1, epsMode: 3 };
  const N = 20_011;
  const m = Float32Array.from({ length: N }, () => rng.normal() * 10 ** (rng.int(13) - 10));
  const v = Float32Array.from({ length: N }, () => (rng.normal() * 10 ** (rng.int(13) - 10)) ** 2);
  const special: [number, number][] = [
    [0, 0],
    [-0, 0],
    [1, 0],
    [-1, 0],
    [0, 1],
    [-0, 4],
    [1, 1],
    [-1, 1],
    [3, 1e-30],
    [NaN, 1],
    [1, NaN],
  ];
  special.forEach(([mi, vi], i) => {
    m[i] = mi;
    v[i] = vi;
  });
  eachMode((mode) => {
    const p = new Float32Array(N);
    nk.adam(p, new Float32Array(N), m.slice(), v.slice(), N, c);
    for (let i = 0; i < N; i++) {
      const want = -Math.atan2(m[i], Math.fround(Math.sqrt(v[i])));
      if (Number.isNaN(want)) assert.ok(Number.isNaN(p[i]), `${mode} [${i}] NaN in, NaN out`);
      else if (want === 0)
        assert.equal(p[i], 0, `${mode} [${i}] atan2(${m[i]}, ${v[i]})`); // θ − r loses the sign of 0
      else assert.ok(Math.abs(p[i] - want) <= 5e-7 * Math.abs(want), `${mode} [${i}] atan2(${m[i]}, √${v[i]}) = ${p[i]}, want ${want}`);
    }
  });
});

// ---- momentum -------------------------------------------------------------------------------

type MomCase = { name: string; c: Omit<MomentumCoefs, 'block' | 'rmsScale' | 'skipZeroRows' | 'rmsFloor'> };
const MOM_CASES: MomCase[] = [
  { name: 'lion', c: { dirM: 0.9, dirG: 0.1, keepM: 0.99, addG: 0.01, lr: 3e-2, weightDecay: 0.1, phi: 0, eps: 0 } },
  { name: 'tiger', c: { dirM: 0.965, dirG: 0.035, keepM: 0.965, addG: 0.035, lr: 3e-2, weightDecay: 0.01, phi: 0, eps: 0 } },
  { name: 'softsign', c: { dirM: 0.9, dirG: 0.1, keepM: 0.9, addG: 0.1, lr: 3e-2, weightDecay: 0.05, phi: 1, eps: 1e-2 } },
  { name: 'sgd', c: { dirM: 0.9, dirG: 1, keepM: 0.9, addG: 1, lr: 3e-2, weightDecay: 0.01, phi: 2, eps: 0 } },
];

/**
 * Indices where sign(d) is ambiguous in float32 (|d| within rounding of 0): the float32 d of
 * the native kernel and the float64 d of the reference may then differ in sign.
 */
function signAmbiguous(c: MomentumCoefs, g: Float32Array, m: Float32Array): Set<number> {
  const s = new Set<number>();
  if (c.phi !== 0) return s;
  for (let i = 0; i < g.length; i++) {
    const a = c.dirM * m[i],
      b = c.dirG * g[i];
    if (a + b !== 0 && Math.abs(a + b) <= 1e-5 * (Math.abs(a) + Math.abs(b))) s.add(i);
  }
  return s;
}

test('momentum matches the reference: every phi, block 0 / row / N, rmsFloor, skipZeroRows, lr = 0', () => {
  // [N, blocks]: 140 800 = 1100 rows of 128 and 140 002 = 2 blocks of 70 001 split over threads.
  const sizes: [number, number[]][] = [
    [1, [0, 1]],
    [7, [0, 7, 1]],
    [1000, [0, 1000, 8]],
    [100_003, [0, 100_003]],
    [140_800, [0, 128, 140_800]],
    [140_002, [70_001]],
  ];
  let ambiguous = 0,
    compared = 0;
  for (const [N, blocks] of sizes) {
    for (const B of blocks) {
      const p0 = randn(N),
        g = randn(N),
        m0 = randn(N, 0.5);
      // Tiny θ in the first third of the blocks: RMS below rmsFloor there.
      const nb = B > 0 ? N / B : 1,
        bl = B > 0 ? B : N;
      for (let b = 0; b < Math.ceil(nb / 3); b++) for (let i = b * bl; i < (b + 1) * bl; i++) p0[i] *= 1e-5;
      // Every third block (when blocks are small) gets an exactly zero gradient; −0 counts as zero.
      if (B > 0 && nb > 2) for (let b = 1; b < nb; b += 3) for (let i = b * B; i < (b + 1) * B; i++) g[i] = i % 2 ? 0 : -0;
      for (let i = 5; i < N; i += 11) g[i] = m0[i] = 0; // d = 0: sign(0) = 0, softsign 0
      for (const mc of MOM_CASES) {
        // Blocks serve skipZeroRows (lazy rows) and rmsScale (Tiger's RMS-scaled η), alone or together.
        for (const [skipZeroRows, rmsScale] of B > 0
          ? [
              [false, true],
              [true, true],
              [true, false],
            ]
          : [[false, false]]) {
          for (const lr of [mc.c.lr, 0]) {
            const c: MomentumCoefs = { ...mc.c, lr, block: B, rmsScale, rmsFloor: 1e-3, skipZeroRows };
            const pW = p0.slice(),
              mW = m0.slice();
            ref.momentum(pW, g, mW, N, c);
            const skip = signAmbiguous(c, g, m0);
            ambiguous += skip.size;
            compared += N;
            eachMode((mode) => {
              const what = `N=${N} block=${B} ${mc.name} skip=${skipZeroRows} rms=${rmsScale} lr=${lr} ${mode}`;
              const p = p0.slice(),
                m = m0.slice();
              nk.momentum(p, g, m, N, c);
              noNaN(p, what);
              if (lr === 0) assert.deepEqual(p, p0, `${what}: lr = 0 leaves θ exactly`);
              else nearStep(p, pW, p0, TOL, `${what} θ`, skip);
              near(m, mW, 1e-6, `${what} m`);
            });
          }
        }
      }
    }
  }
  assert.ok(ambiguous <= compared * 1e-4, `${ambiguous} sign-ambiguous coordinates of ${compared}`);
});

test('momentum by hand: sign(0) = 0, Tiger per-block RMS, rmsFloor, skipZeroRows leaves m too', () => {
  const lr = 0.01;
  const base = momentumCoefs(0.9, 0.99, { lr, weightDecay: 0, phi: 0 });
  eachMode((mode) => {
    // Lion, no decay: θ moves by exactly η·sign(d), and not at all where d = 0.
    const p = Float32Array.of(1, 2, 3, -4, 5),
      g = Float32Array.of(0, 1, -1, 0, 2),
      m = Float32Array.of(0, 0, 0, 1, -20);
    nk.momentum(p, g, m, 5, base);
    const eta = Math.fround(lr);
    // d = 0.9·m + 0.1·g: 0, 0.1, −0.1, 0.9, −17.8
    assert.deepEqual(Array.from(p), [1, Math.fround(2 - eta), Math.fround(3 + eta), Math.fround(-4 - eta), Math.fround(5 + eta)], `${mode} sign`);
    assert.equal(m[0], 0, `${mode} m stays 0`);

    // Tiger with block 2: block 0 has RMS √((9 + 16)/2), block 1 is all zero (RMS 0 → floor).
    const tiger: MomentumCoefs = { ...base, dirM: 0.9, dirG: 0.1, keepM: 0.9, addG: 0.1, weightDecay: 0.01, block: 2, rmsScale: true, rmsFloor: 1e-3 };
    const pt = Float32Array.of(3, 4, 0, 0),
      gt = Float32Array.of(1, -1, 2, -3),
      mt = new Float32Array(4);
    nk.momentum(pt, gt, mt, 4, tiger);
    const eta0 = lr * Math.sqrt(12.5),
      eta1 = lr * 1e-3;
    const want = [3 - eta0 * (1 + 0.01 * 3), 4 - eta0 * (-1 + 0.01 * 4), -eta1, eta1];
    for (let i = 0; i < 4; i++) assert.ok(Math.abs(pt[i] - want[i]) <= 1e-6 * Math.abs(want[i]), `${mode} tiger θ[${i}] ${pt[i]} vs ${want[i]}`);

    // skipZeroRows: row 1 (zero gradient, non-zero momentum) is untouched, m included.
    const lazy: MomentumCoefs = { ...base, block: 3, rmsFloor: 1, skipZeroRows: true };
    const pl = Float32Array.of(1, 1, 1, 2, 2, 2),
      gl = Float32Array.of(1, 0, -1, 0, 0, -0),
      ml = Float32Array.of(1, 1, 1, 1, 1, 1);
    nk.momentum(pl, gl, ml, 6, lazy);
    assert.deepEqual(Array.from(pl.subarray(3)), [2, 2, 2], `${mode} skipped row θ`);
    assert.deepEqual(Array.from(ml.subarray(3)), [1, 1, 1], `${mode} skipped row m`);
    assert.deepEqual(
      Array.from(pl.subarray(0, 3)),
      [1, 1, 1].map((x) => Math.fround(x - eta)),
      `${mode} live row θ (d > 0)`,
    );
    const k99 = Math.fround(0.99),
      a01 = Math.fround(0.01);
    assert.deepEqual(Array.from(ml.subarray(0, 3)), [Math.fround(k99 + a01), k99, Math.fround(k99 - a01)], `${mode} live row m`);
  });
  eachMode((mode) => {
    // Softsign with ε = 0 is sign: d = 0 must give φ = 0 (not 0/0), d ≠ 0 exactly ±1.
    const soft: MomentumCoefs = { ...base, phi: 1, eps: 0 };
    const N = 19,
      p = Float32Array.from({ length: N }, (_, i) => 1 + i),
      g = new Float32Array(N),
      m = new Float32Array(N);
    g[3] = 1;
    g[12] = -2;
    nk.momentum(p, g, m, N, soft);
    const eta = Math.fround(lr);
    const want = Float32Array.from({ length: N }, (_, i) => (i === 3 ? Math.fround(4 - eta) : i === 12 ? Math.fround(13 + eta) : 1 + i));
    assert.deepEqual(p, want, `${mode} softsign ε = 0`);
  });
  // The reference agrees on the sign case.
  const p = Float64Array.of(1, 2),
    m = new Float64Array(2);
  ref.momentum(p, Float64Array.of(0, -3), m, 2, base);
  assert.deepEqual(Array.from(p), [1, 2 + lr]);
});

test('momentum: the AVX2 and portable bodies agree bit for bit (same float ops, no FMA)', (t) => {
  if (simdModes.length < 2) return t.skip('no AVX2/FMA on this CPU');
  const N = 100_003,
    p0 = randn(N),
    g = randn(N),
    m0 = randn(N);
  for (const mc of MOM_CASES) {
    for (const B of [0, 100_003]) {
      const c: MomentumCoefs = { ...mc.c, block: B, rmsScale: B > 0, rmsFloor: 1e-3, skipZeroRows: false };
      const out: { p: Float32Array; m: Float32Array }[] = [];
      eachMode((mode) => {
        if (!mode.endsWith('/2t')) return;
        const p = p0.slice(),
          m = m0.slice();
        nk.momentum(p, g, m, N, c);
        out.push({ p, m });
      });
      assert.deepEqual(out[0].m, out[1].m, `${mc.name} block=${B} m`);
      if (B === 0) assert.deepEqual(out[0].p, out[1].p, `${mc.name} θ`);
      else nearStep(out[0].p, out[1].p, p0, 1e-6, `${mc.name} block=${B} θ`); // Σθ² differs in order
    }
  }
});

// ---- adafactor ------------------------------------------------------------------------------

test('adafactor matches the reference: factored (batch 1, 2), unfactored, momentum, scaleParameter, clipping', () => {
  // [batch, rows, cols, factored]; 2 × 517 × 131 splits over both threads across a batch boundary.
  const shapes: [number, number, number, boolean][] = [
    [1, 7, 13, true],
    [2, 5, 9, true],
    [1, 1, 1, true],
    [2, 517, 131, true],
    [1, 1031, 131, true],
    [1, 1, 7, false],
    [3, 5, 7, false],
    [1, 1, 140_001, false],
  ];
  for (const [batch, rows, cols, factored] of shapes) {
    const N = batch * rows * cols;
    const p0 = randn(N, 0.05),
      grads = [randn(N, 0.01), randn(N, 0.02)];
    for (let i = 0; i < N; i += 13) grads[0][i] = 0;
    if (rows > 2) for (let j = 0; j < cols; j++) grads[1][cols + j] = 0; // a whole zero row: v̂ ≈ eps1-scale
    for (const beta1 of [0, 0.9]) {
      for (const scaleParameter of [true, false]) {
        for (const clipThreshold of [1, 0.3]) {
          const wd = scaleParameter ? 0.1 : 0;
          const vrLen = factored ? batch * rows : N;
          const st = {
            p: p0.slice(),
            vr: new Float32Array(vrLen),
            vc: factored ? new Float32Array(batch * cols) : null,
            mom: beta1 > 0 ? new Float32Array(N) : null,
          };
          const natives = new Map<string, typeof st>();
          for (let t = 1; t <= 2; t++) {
            const c: AdafactorCoefs = {
              beta2: 1 - t ** -0.8,
              eps1: 1e-30,
              clipThreshold,
              beta1,
              lr: 0.01 / Math.sqrt(t),
              scaleParameter,
              eps2: 1e-3,
              weightDecay: wd,
            };
            const before = st.p.slice();
            ref.adafactor(st.p, grads[t - 1], st.vr, st.vc, st.mom, batch, rows, cols, c);
            eachMode((mode) => {
              const what = `[${batch},${rows},${cols}] ${factored ? 'factored' : 'unfactored'} β1=${beta1} scale=${scaleParameter} clip=${clipThreshold} t=${t} ${mode}`;
              let s = natives.get(mode);
              if (!s)
                natives.set(
                  mode,
                  (s = { p: p0.slice(), vr: new Float32Array(vrLen), vc: st.vc && new Float32Array(batch * cols), mom: st.mom && new Float32Array(N) }),
                );
              nk.adafactor(s.p, grads[t - 1], s.vr, s.vc, s.mom, batch, rows, cols, c);
              noNaN(s.p, what);
              // Compare this step from the native's own previous state against the reference step.
              nearStep(s.p, st.p, before, TOL, `${what} θ`);
              near(s.vr, st.vr, 1e-6, `${what} vr`);
              if (st.vc) near(s.vc!, st.vc, 1e-6, `${what} vc`);
              if (st.mom) near(s.mom!, st.mom, 1e-6, `${what} mom`);
            });
          }
        }
      }
    }
  }
});

test('adafactor by hand: a 2×2 factored step from zero state, with and without the RMS clip', () => {
  // g = [[1, 2], [3, 4]], β2 = 0, eps1 = 0: row means of g² [2.5, 12.5], column means [5, 10],
  // mean(vr) 7.5, so v̂ = [[5/3, 10/3], [25/3, 50/3]] and u² = g²/v̂ = [0.6, 1.2, 1.08, 0.96]:
  // RMS(u) = √0.96. θ = 1 everywhere: RMS(θ) = 1, α = lr.
  const g = [1, 2, 3, 4],
    u = [0.6, 1.2, 1.08, 0.96].map((x, i) => Math.sign(g[i]) * Math.sqrt(x));
  const lr = 0.01,
    rmsU = Math.sqrt(0.96);
  for (const clipThreshold of [1, 0.5]) {
    const div = Math.max(1, rmsU / clipThreshold);
    const want = u.map((x) => 1 - (lr * x) / div);
    const c: AdafactorCoefs = { beta2: 0, eps1: 0, clipThreshold, beta1: 0, lr, scaleParameter: true, eps2: 1e-3, weightDecay: 0 };
    const p64 = new Float64Array(4).fill(1),
      vr64 = new Float64Array(2),
      vc64 = new Float64Array(2);
    ref.adafactor(p64, Float64Array.from(g), vr64, vc64, null, 1, 2, 2, c);
    assert.deepEqual(Array.from(vr64), [2.5, 12.5]);
    assert.deepEqual(Array.from(vc64), [5, 10]);
    for (let i = 0; i < 4; i++) assert.ok(Math.abs(p64[i] - want[i]) <= 1e-15, `reference clip=${clipThreshold} θ[${i}]`);
    eachMode((mode) => {
      const p = new Float32Array(4).fill(1),
        vr = new Float32Array(2),
        vc = new Float32Array(2);
      nk.adafactor(p, Float32Array.from(g), vr, vc, null, 1, 2, 2, c);
      assert.deepEqual(Array.from(vr), [2.5, 12.5], `${mode} vr`);
      assert.deepEqual(Array.from(vc), [5, 10], `${mode} vc`);
      for (let i = 0; i < 4; i++) {
        assert.ok(Math.abs(p[i] - want[i]) <= 1e-6 * lr + 1.2e-7, `${mode} clip=${clipThreshold} θ[${i}] ${p[i]} vs ${want[i]}`);
      }
    });
  }
});

// ---- triad ----------------------------------------------------------------------------------

test('triad is exact: a = fround(b + fround(s·c)) in every mode', () => {
  for (const N of [1, 7, 1000, 200_003]) {
    const b = randn(N),
      c = randn(N),
      s = 0.3713;
    const fs = Math.fround(s);
    const want = Float32Array.from(b, (x, i) => Math.fround(x + Math.fround(fs * c[i])));
    eachMode((mode) => {
      const a = new Float32Array(N).fill(NaN);
      nk.triad(a, b, c, N, s);
      assert.deepEqual(a, want, `${mode} N=${N}`);
    });
    const a64 = new Float64Array(N);
    ref.triad(a64, Float64Array.from(b), Float64Array.from(c), N, s);
    near(a64, want, 1e-7, `reference N=${N}`);
  }
});

// ---- argument checks ------------------------------------------------------------------------

test('optimizer kernels reject bad arguments with a JS error', () => {
  const f = (n: number) => new Float32Array(n);
  const ac = adamwAt(1, 1e-3, 0.9, 0.95, 1e-8, 0, 0);
  const mc: MomentumCoefs = { ...MOM_CASES[0].c, block: 0, rmsScale: false, rmsFloor: 0, skipZeroRows: false };
  const fc: AdafactorCoefs = { beta2: 0, eps1: 1e-30, clipThreshold: 1, beta1: 0, lr: 1e-2, scaleParameter: true, eps2: 1e-3, weightDecay: 0 };
  const { lr: _lr, ...noLr } = ac;
  assert.throws(() => nk.adam(f(4), f(4), f(4), f(3), 4, ac), /needs 4/);
  assert.throws(() => nk.adam(f(4), f(4), f(4), f(4), 4, noLr as AdamCoefs), /AdamCoefs\.lr must be a number/);
  assert.throws(() => nk.adam(f(4), f(4), f(4), f(4), 4, { ...ac, eps: '1e-8' } as unknown as AdamCoefs), /AdamCoefs\.eps must be a number/);
  assert.throws(() => nk.adam(f(4), f(4), f(4), f(4), 4, { ...ac, epsMode: 4 } as unknown as AdamCoefs), /epsMode must be an integer in \[0, 3\]/);
  assert.throws(() => nk.adam(f(4), f(4), f(4), f(4), 4, null as unknown as AdamCoefs), /must be an object/);
  assert.throws(() => nk.momentum(f(4), f(4), f(4), 4, { ...mc, phi: 3 } as unknown as MomentumCoefs), /phi must be an integer/);
  assert.throws(() => nk.momentum(f(4), f(4), f(4), 4, { ...mc, block: 3 }), /not a multiple of block/);
  assert.throws(() => nk.momentum(f(4), f(4), f(4), 4, { ...mc, skipZeroRows: true }), /skipZeroRows needs block > 0/);
  assert.throws(() => nk.momentum(f(4), f(4), f(4), 4, { ...mc, rmsScale: true }), /rmsScale needs block > 0/);
  assert.throws(() => nk.momentum(f(4), f(4), f(4), 4, { ...mc, skipZeroRows: 1 } as unknown as MomentumCoefs), /skipZeroRows must be a boolean/);
  assert.throws(() => ref.momentum(f(4), f(4), f(4), 4, { ...mc, block: 3 }), /block/);
  assert.throws(() => nk.adafactor(f(6), f(6), f(1), f(3), null, 1, 2, 3, fc), /needs 2/);
  assert.throws(() => nk.adafactor(f(6), f(6), f(2), f(2), null, 1, 2, 3, fc), /needs 3/);
  assert.throws(() => nk.adafactor(f(6), f(6), f(2), null, null, 1, 2, 3, fc), /needs 6/);
  assert.throws(() => nk.adafactor(f(6), f(6), f(2), f(3), f(5), 1, 2, 3, fc), /needs 6/);
  assert.throws(
    () => nk.adafactor(f(6), f(6), f(2), f(3), null, 1, 2, 3, { ...fc, scaleParameter: undefined } as unknown as AdafactorCoefs),
    /scaleParameter must be a boolean/,
  );
  assert.throws(() => nk.triad(f(4), f(4), f(3), 4, 1), /needs 4/);
  assert.throws(() => (nk.triad as (...a: unknown[]) => void)(f(4), f(4), f(4), 4), /expects 5 arguments/);
});

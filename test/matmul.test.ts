import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { nativeKernels } from '../src/kernels/native.ts';
import { matmulBackward, matmulForward, roundBf16 } from '../src/kernels/reference/matmul.ts';
import type { MatmulPrecision } from '../src/kernels/types.ts';
import { Rng } from '../src/util/rng.ts';

const nk = nativeKernels();
const rng = new Rng(1234);
const TOL = 1e-5;

/** Random floats; non-integers of mixed sign so that rounding actually happens. */
function rand(n: number, scale = 1): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = (rng.uniform() * 2 - 1) * scale;
  return a;
}

/**
 * A Float32Array view of `src` placed at an offset inside a larger buffer whose margins hold a
 * sentinel, so writes outside the view are caught.
 */
const PAD = 5;
const SENTINEL = 12345.5;
function view(src: Float64Array): Float32Array {
  const buf = new Float32Array(src.length + 2 * PAD).fill(SENTINEL);
  const v = buf.subarray(PAD, PAD + src.length);
  v.set(src);
  return v;
}
function assertMargins(v: Float32Array, what: string): void {
  const buf = new Float32Array(v.buffer);
  for (let i = 0; i < PAD; i++) {
    assert.equal(buf[i], SENTINEL, `${what}: wrote before the view`);
    assert.equal(buf[buf.length - 1 - i], SENTINEL, `${what}: wrote after the view`);
  }
}
const f64 = (a: Float32Array) => Float64Array.from(a);
const abs = (a: Float64Array) => a.map(Math.abs);

/** |got − want| ≤ TOL·(mag + 1e-30) elementwise, where mag bounds the size of the sum's terms. */
function assertClose(got: Float32Array, want: Float64Array, mag: Float64Array, what: string): void {
  assert.equal(got.length, want.length);
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i] - want[i]);
    if (!(err <= TOL * mag[i] + 1e-30)) {
      assert.fail(`${what}[${i}]: got ${got[i]}, want ${want[i]} (error ${err}, magnitude ${mag[i]})`);
    }
  }
}

function checkForward(BT: number, C: number, OC: number, withBias: boolean, what: string, precision: MatmulPrecision = 'fp32'): void {
  const inp = rand(BT * C),
    w = rand(OC * C),
    b = withBias ? rand(OC) : null;
  // Inputs rounded to float32 so the float64 reference sees exactly what the kernel sees.
  const inp32 = view(inp),
    w32 = view(w),
    b32 = b ? view(b) : null;
  const out = view(new Float64Array(BT * OC).fill(NaN)); // overwritten, never read
  nk.matmulForward(out, inp32, w32, b32, BT, C, OC, precision);

  const want = new Float64Array(BT * OC),
    mag = new Float64Array(BT * OC);
  matmulForward(want, f64(inp32), f64(w32), b32 ? f64(b32) : null, BT, C, OC, precision);
  matmulForward(mag, abs(f64(inp32)), abs(f64(w32)), b32 ? abs(f64(b32)) : null, BT, C, OC, precision);
  assertClose(out, want, mag, `${what} out`);
  for (const [v, name] of [
    [out, 'out'],
    [inp32, 'inp'],
    [w32, 'weight'],
  ] as const)
    assertMargins(v, `${what} ${name}`);
}

function checkBackward(BT: number, C: number, OC: number, withBias: boolean, what: string, precision: MatmulPrecision = 'fp32'): void {
  const inp32 = view(rand(BT * C)),
    w32 = view(rand(OC * C)),
    dout32 = view(rand(BT * OC));
  // Non-zero initial gradients: the kernel must add to them.
  const dinp32 = view(rand(BT * C, 3)),
    dw32 = view(rand(OC * C, 3)),
    db32 = withBias ? view(rand(OC, 3)) : null;
  const dinp = f64(dinp32),
    dw = f64(dw32),
    db = db32 ? f64(db32) : null;
  const mdinp = abs(dinp),
    mdw = abs(dw),
    mdb = db ? abs(db) : null;
  nk.matmulBackward(dinp32, dw32, db32, dout32, inp32, w32, BT, C, OC, precision);

  matmulBackward(dinp, dw, db, f64(dout32), f64(inp32), f64(w32), BT, C, OC, precision);
  matmulBackward(mdinp, mdw, mdb, abs(f64(dout32)), abs(f64(inp32)), abs(f64(w32)), BT, C, OC, precision);
  assertClose(dinp32, dinp, mdinp, `${what} dinp`);
  assertClose(dw32, dw, mdw, `${what} dweight`);
  if (db32 && db && mdb) assertClose(db32, db, mdb, `${what} dbias`);
  for (const [v, name] of [
    [dinp32, 'dinp'],
    [dw32, 'dweight'],
    [dout32, 'dout'],
  ] as const) {
    assertMargins(v, `${what} ${name}`);
  }
  if (db32) assertMargins(db32, `${what} dbias`);
}

// [BT, C, OC]. Odd and prime sizes hit every edge of the 6×16 tiles; C or BT above 256
// spans several K blocks, BT above 144 several M blocks, OC or C above 3072 several N
// blocks; [300, 256, 10] makes the dweight product split over columns (dbias then summed by
// one thread only).
const SHAPES: [number, number, number][] = [
  [1, 1, 1],
  [7, 13, 5],
  [33, 17, 65],
  [100, 129, 31],
  [6, 16, 16],
  [12, 32, 48],
  [37, 300, 20],
  [270, 9, 11],
  [150, 40, 33],
  [64, 200, 7],
  [3, 1, 17],
  [19, 2, 1],
  [300, 256, 10],
  [7, 5, 3100],
  [5, 3100, 3],
];
for (let i = 0; i < 4; i++) SHAPES.push([1 + rng.int(90), 1 + rng.int(90), 1 + rng.int(90)]);

// Every kernel this process may run (isa() and the paths below it); the others are skipped
// with the reason printed. 'avx512bf16' is avx512f for fp32 with native bf16 products; with
// every other kernel bf16 products are emulated on it.
const KERNEL_ISA = { avx512bf16: 'avx512bf16', avx512f: 'avx512f', 'avx2-fma': 'avx2', portable: 'portable' } as const;
type KernelName = keyof typeof KERNEL_ISA;
const ALL_KERNELS = Object.keys(KERNEL_ISA) as KernelName[];
const runnable = (k: KernelName) => nk.isaSupported().includes(KERNEL_ISA[k]);
const skipReason = (k: KernelName) => (runnable(k) ? false : `this process runs the ${nk.isa()} path; ${k} needs ${KERNEL_ISA[k]}`);
const threadsBefore = nk.threads();

after(() => {
  nk.matmulSetKernel('auto');
  nk.threads(threadsBefore);
});

describe('matmul: native vs reference', () => {
  test("a GPT-sized product on the pool's threads", () => {
    nk.matmulSetKernel('auto');
    checkForward(128, 96, 288, true, 'gpt');
    checkBackward(128, 96, 288, true, 'gpt');
    checkForward(128, 96, 288, true, 'gpt bf16', 'bf16');
    checkBackward(128, 96, 288, true, 'gpt bf16', 'bf16');
  });

  for (const nthreads of [...new Set([threadsBefore, 1])]) {
    for (const kernel of ALL_KERNELS) {
      for (const precision of ['fp32', 'bf16'] as const) {
        // The avx512bf16 selection runs avx512f for fp32: tested under that name.
        if (kernel === 'avx512bf16' && precision === 'fp32') continue;
        const name = `${kernel} ${precision}, ${nthreads} thread(s)`;
        test(name, { skip: skipReason(kernel) }, () => {
          assert.equal(nk.matmulSetKernel(kernel), kernel);
          const fp32Name = kernel === 'avx512bf16' ? 'avx512f' : kernel;
          assert.equal(nk.matmulKernel(), fp32Name);
          assert.equal(nk.matmulKernel('bf16'), kernel === 'avx512bf16' ? kernel : `${kernel}/bf16-emulated`);
          if (nthreads !== nk.threads()) nk.threads(nthreads);
          for (const [BT, C, OC] of SHAPES) {
            for (const withBias of [true, false]) {
              const what = `${name} ${BT}x${C}x${OC}${withBias ? ' +bias' : ''}`;
              checkForward(BT, C, OC, withBias, what, precision);
              checkBackward(BT, C, OC, withBias, what, precision);
            }
          }
        });
      }
    }
  }

  test('bf16 rounds the operands: nearest even, ties, NaN, infinities, subnormals', () => {
    // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even mantissa wins (1); 1 + 3·2^-8 rounds up.
    // Just below 2^-126 would round up to it, but fp32 subnormals flush to zero (keeping the
    // sign), as the AVX512-BF16 conversion does.
    const tiny = Math.fround(2 ** -126 - 2 ** -140);
    const xs = [1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8 + 2 ** -20), 3.4e38, Infinity, -Infinity, 1e-40, tiny, -1e-40, 0.1, 2 ** -126];
    const want = [1, 1 + 2 ** -6, -(1 + 2 ** -7), Infinity, Infinity, -Infinity, 0, 0, -0, 0.10009765625, 2 ** -126];
    assert.deepEqual(xs.map(roundBf16), want);
    assert.ok(Number.isNaN(roundBf16(NaN)));
    // Every kernel rounds the same way: a 1×1×1 product with weight 1 returns bf16(x) exactly.
    for (const kernel of ALL_KERNELS.filter(runnable)) {
      nk.matmulSetKernel(kernel);
      for (let i = 0; i < xs.length; i++) {
        const out = new Float32Array(1);
        nk.matmulForward(out, new Float32Array([xs[i]]), new Float32Array([1]), null, 1, 1, 1, 'bf16');
        assert.equal(out[0], Math.fround(want[i]) + 0, `${kernel} bf16(${xs[i]})`); // 0 + (−0) = +0
      }
      const nan = new Float32Array(1);
      nk.matmulForward(nan, new Float32Array([NaN]), new Float32Array([1]), null, 1, 1, 1, 'bf16');
      assert.ok(Number.isNaN(nan[0]), `${kernel} bf16(NaN)`);
    }
    nk.matmulSetKernel('auto');
  });

  test('each path gives the same bits on every run (fixed seed, path and threads)', () => {
    for (const kernel of ALL_KERNELS.filter(runnable)) {
      nk.matmulSetKernel(kernel);
      for (const precision of ['fp32', 'bf16'] as const) {
        const BT = 301,
          C = 97,
          OC = 130;
        const inp = view(rand(BT * C)),
          w = view(rand(OC * C)),
          dout = view(rand(BT * OC));
        const run = () => {
          const out = new Float32Array(BT * OC),
            dinp = new Float32Array(BT * C),
            dw = new Float32Array(OC * C);
          nk.matmulForward(out, inp, w, null, BT, C, OC, precision);
          nk.matmulBackward(dinp, dw, null, dout, inp, w, BT, C, OC, precision);
          return [out, dinp, dw];
        };
        assert.deepEqual(run(), run(), `${kernel} ${precision}`);
      }
    }
    nk.matmulSetKernel('auto');
  });

  test('the pool can shrink and grow between jobs (regression: new workers replayed the last job)', () => {
    nk.threads(1);
    checkForward(64, 32, 48, true, 'after shrink');
    nk.threads(2);
    checkForward(256, 64, 96, true, 'after grow');
    checkBackward(256, 64, 96, true, 'after grow');
    nk.threads(threadsBefore);
  });

  test('zero sizes', () => {
    // C = 0: out = bias; dbias still receives Σ dout.
    const out = new Float32Array(6).fill(NaN),
      bias = new Float32Array([1, 2, 3]);
    nk.matmulForward(out, new Float32Array(0), new Float32Array(0), bias, 2, 0, 3);
    assert.deepEqual([...out], [1, 2, 3, 1, 2, 3]);
    const db = new Float32Array([1, 1, 1]);
    nk.matmulBackward(new Float32Array(0), new Float32Array(0), db, new Float32Array([1, 2, 3, 4, 5, 6]), new Float32Array(0), new Float32Array(0), 2, 0, 3);
    assert.deepEqual([...db], [6, 8, 10]);
    nk.matmulForward(new Float32Array(0), new Float32Array(0), new Float32Array(12), null, 0, 4, 3);
  });
});

describe('matmul: argument checks', () => {
  const BT = 4,
    C = 3,
    OC = 5;
  const f = (n: number) => new Float32Array(n);
  test('a too-short buffer throws and writes nothing', () => {
    const out = f(BT * OC).fill(7);
    assert.throws(() => nk.matmulForward(out, f(BT * C - 1), f(OC * C), null, BT, C, OC), /argument 1/);
    assert.throws(() => nk.matmulForward(f(BT * OC - 1), f(BT * C), f(OC * C), null, BT, C, OC), /argument 0/);
    assert.throws(() => nk.matmulForward(out, f(BT * C), f(OC * C - 1), null, BT, C, OC), /argument 2/);
    assert.throws(() => nk.matmulForward(out, f(BT * C), f(OC * C), f(OC - 1), BT, C, OC), /argument 3/);
    assert.ok(out.every((x) => x === 7));
    const dinp = f(BT * C).fill(7);
    const args = () => [dinp, f(OC * C), f(OC), f(BT * OC), f(BT * C), f(OC * C)];
    for (let i = 0; i < 6; i++) {
      const a = args();
      a[i] = f(a[i].length - 1);
      assert.throws(() => nk.matmulBackward(a[0], a[1], a[2], a[3], a[4], a[5], BT, C, OC), new RegExp(`argument ${i}`));
    }
    assert.ok(dinp.every((x) => x === 7));
  });

  test('wrong types and sizes throw', () => {
    const bad = new Float64Array(BT * C) as unknown as Float32Array;
    assert.throws(() => nk.matmulForward(f(BT * OC), bad, f(OC * C), null, BT, C, OC), /Float32Array/);
    assert.throws(() => nk.matmulForward(f(BT * OC), f(BT * C), f(OC * C), null, -1, C, OC), /argument 4/);
    assert.throws(() => nk.matmulForward(f(BT * OC), f(BT * C), f(OC * C), null, BT, 1.5, OC), /argument 5/);
    assert.throws(() => nk.matmulSetKernel('sse9' as 'auto'), /matmulSetKernel/);
    assert.throws(() => nk.matmulForward(f(BT * OC), f(BT * C), f(OC * C), null, BT, C, OC, 'fp8' as 'bf16'), /precision/);
  });
});

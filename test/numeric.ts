// Numeric helpers shared by the kernel and model tests: seeded random arrays and batches, a
// scale-aware comparison and central differences.
import assert from 'node:assert/strict';
import type { GPTConfig } from '../src/model/config.ts';
import type { GPT } from '../src/model/gpt.ts';
import { Rng } from '../src/util/rng.ts';

/** Seeded generators of normal float32/float64 arrays and random token ids. */
export function randomArrays(seed: number) {
  const rng = new Rng(seed);
  return {
    rng,
    randn: (n: number, s = 1) => Float32Array.from({ length: n }, () => rng.normal() * s),
    randn64: (n: number, s = 1) => Float64Array.from({ length: n }, () => rng.normal() * s),
    ints: (n: number, V: number) => Int32Array.from({ length: n }, () => rng.int(V)),
  };
}

/** |got − want| ≤ tol·(1 + max|want|) elementwise (want's scale, so tiny entries are not over-judged). */
export function near(got: ArrayLike<number>, want: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  let mag = 0;
  for (let i = 0; i < want.length; i++) mag = Math.max(mag, Math.abs(want[i]));
  const lim = tol * (1 + mag);
  for (let i = 0; i < got.length; i++) {
    if (!(Math.abs(got[i] - want[i]) <= lim)) assert.fail(`${what}[${i}]: got ${got[i]}, want ${want[i]} (±${lim})`);
  }
}

/** (f(x + h) − f(x − h)) / 2h at x[i], which is restored afterwards. */
export function centralDifference(x: Float32Array | Float64Array, i: number, f: () => number, h: number): number {
  const x0 = x[i];
  x[i] = x0 + h;
  const plus = f();
  x[i] = x0 - h;
  const minus = f();
  x[i] = x0;
  return (plus - minus) / (2 * h);
}

/** B sequences of random tokens and random targets (all tokens drawn first). */
export function tokenBatch(cfg: GPTConfig, B: number, seed: number) {
  const rng = new Rng(seed);
  const n = B * cfg.blockSize;
  return {
    tokens: Int32Array.from({ length: n }, () => rng.int(cfg.vocabSize)),
    targets: Int32Array.from({ length: n }, () => rng.int(cfg.vocabSize)),
  };
}

/** Init, then perturb every parameter so gains ≠ 1 and biases ≠ 0 also get tested. */
export function perturb<F extends Float32Array | Float64Array>(m: GPT<F>, seed: number, scale: number): void {
  m.init(seed);
  const rng = new Rng(seed + 1);
  for (let i = 0; i < m.params.length; i++) m.params[i] += rng.normal() * scale;
}

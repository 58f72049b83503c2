// Numeric helpers shared by the kernel tests: seeded random arrays and a scale-aware comparison.
import assert from 'node:assert/strict';
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

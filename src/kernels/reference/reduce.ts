/** Reductions feeding the training monitors (twin of native/reduce.cc). */
import type { Floats } from '../types.ts';

/** Σ (cur − prev)² in float64, then prev ← cur. */
export function sqDiffCopy<F extends Floats>(prev: F, cur: F, N: number): number {
  let s = 0;
  for (let i = 0; i < N; i++) {
    const d = cur[i] - prev[i];
    s += d * d;
    prev[i] = cur[i];
  }
  return s;
}

/**
 * Reference (TypeScript twin) of native/optim.cc: AdamW, Σx² and scaling over a flat buffer
 * of N elements, in float64 arithmetic. Contracts: ../types.ts.
 */
import type { Floats } from '../types.ts';

/** One AdamW step (PyTorch semantics, t 1-based): θ ← θ·(1 − lr·λ) − lr·m̂/(√v̂ + ε). */
export function adamw<F extends Floats>(
  params: F, grads: F, m: F, v: F, N: number,
  lr: number, beta1: number, beta2: number, eps: number, weightDecay: number, t: number,
): void {
  const bc1 = 1 - Math.pow(beta1, t);
  const bc2 = 1 - Math.pow(beta2, t);
  for (let i = 0; i < N; i++) {
    const g = grads[i];
    const mi = beta1 * m[i] + (1 - beta1) * g;
    const vi = beta2 * v[i] + (1 - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const mhat = mi / bc1, vhat = vi / bc2;
    params[i] = params[i] * (1 - lr * weightDecay) - lr * mhat / (Math.sqrt(vhat) + eps);
  }
}

/** Σ x² in float64. */
export function sumSquares<F extends Floats>(x: F, N: number): number {
  let s = 0;
  for (let i = 0; i < N; i++) s += x[i] * x[i];
  return s;
}

/** x *= s. */
export function scale<F extends Floats>(x: F, N: number, s: number): void {
  for (let i = 0; i < N; i++) x[i] *= s;
}

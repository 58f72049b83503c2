/** TypeScript twins of native/optim.cc. */
import type { Floats } from '../types.ts';

export function adamw(
  params: Floats, grads: Floats, m: Floats, v: Floats, N: number,
  lr: number, beta1: number, beta2: number, eps: number, weightDecay: number, t: number,
): void {
  const bc1 = 1 - beta1 ** t;
  const bc2 = 1 - beta2 ** t;
  for (let i = 0; i < N; i++) {
    const g = grads[i];
    m[i] = beta1 * m[i] + (1 - beta1) * g;
    v[i] = beta2 * v[i] + (1 - beta2) * g * g;
    const mhat = m[i] / bc1;
    const vhat = v[i] / bc2;
    params[i] = params[i] * (1 - lr * weightDecay) - (lr * mhat) / (Math.sqrt(vhat) + eps);
  }
}

export function sumSquares(x: Floats, N: number): number {
  let s = 0;
  for (let i = 0; i < N; i++) s += x[i] * x[i];
  return s;
}

export function scale(x: Floats, N: number, s: number): void {
  for (let i = 0; i < N; i++) x[i] *= s;
}

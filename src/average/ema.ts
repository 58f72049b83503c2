/**
 * EMA of the weights (docs/averaging.md#ema): θ_ema ← β·θ_ema + (1−β)·θ after every step, with an
 * optional warm-up β_t = min(β, (1 + t)/(10 + t)) so the early average is not dominated by the
 * initialisation. One fused pass per step (the `lerp` kernel).
 */
import type { Kernels } from '../kernels/types.ts';

export class Ema {
  readonly weights: Float32Array;
  /** Updates so far. */
  t = 0;

  constructor(
    private readonly k: Kernels,
    n: number,
    readonly beta: number,
    readonly warmup = false,
  ) {
    this.weights = new Float32Array(n);
  }

  betaAt(t: number): number {
    return this.warmup ? Math.min(this.beta, (1 + t) / (10 + t)) : this.beta;
  }

  update(params: Float32Array): void {
    if (this.t === 0) this.weights.set(params);
    else this.k.lerp(this.weights, params, params.length, 1 - this.betaAt(this.t));
    this.t += 1;
  }
}

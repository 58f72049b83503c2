/**
 * AdaX (docs/optimizers.md#adax): a second moment with long-term memory and no first-moment bias
 * correction.
 *   m = β1·m + (1−β1)·g;  v = (1+β2)·v + β2·g²;  v̂ = v/((1+β2)ᵗ − 1);  θ = θ·(1 − η·λ) − η·m/(√v̂ + ε)
 * β2 is a growth rate (1e-4), not an EMA factor; the correction is expm1(t·log1p β2) for precision.
 */
import type { Floats } from '../kernels/types.ts';
import { adamFamily } from './adam_family.ts';
import { betaSpec, decayEmbeddingsSpec, lrSpec, resolveOptions, weightDecaySpec, type Schema } from './options.ts';
import type { FactoryContext, Optimizer } from './types.ts';

export interface AdaXOptions {
  lr?: number;
  beta1?: number;
  /** Growth rate of v per step (1e-4), NOT an EMA factor like Adam's 0.999. */
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  decayEmbeddings?: boolean;
}

export const adaxSchema: Schema = {
  lr: lrSpec(),
  beta1: betaSpec(0.9, 'first-moment decay β1'),
  beta2: { type: 'number', default: 1e-4, min: 0, max: 0.5, exclusiveMin: true, doc: 'growth rate of v (1e-4; not an EMA factor)' },
  eps: { type: 'number', default: 1e-6, min: 0, doc: 'ε outside the root' },
  weightDecay: weightDecaySpec(0),
  decayEmbeddings: decayEmbeddingsSpec(false),
};

export function adax<F extends Floats = Float32Array>(options: AdaXOptions = {}, ctx: FactoryContext<F> = {}): Optimizer<F> {
  const o = resolveOptions<Required<AdaXOptions>>('adax', adaxSchema, options as Record<string, unknown>);
  return adamFamily(
    'adax',
    o,
    (lr, t, decay) => ({
      beta1: o.beta1,
      g1: 1 - o.beta1,
      beta2: 1 + o.beta2,
      g2: o.beta2,
      mScale: 1,
      rootVScale: 1 / Math.sqrt(Math.expm1(t * Math.log1p(o.beta2))),
      lr,
      eps: o.eps,
      decay: decay ? 1 - lr * o.weightDecay : 1,
      epsMode: 0,
    }),
    ctx,
  );
}

/**
 * AdaX (docs/optimizers.md#adax): a second moment with long-term memory and no first-moment bias
 * correction.
 *   m = β1·m + (1−β1)·g;  v = (1+β2)·v + β2·g²;  v̂ = v/((1+β2)ᵗ − 1);  θ = θ·(1 − η·λ) − η·m/(√v̂ + ε)
 * β2 is a growth rate (1e-4), not an EMA factor; the correction is expm1(t·log1p β2) for precision.
 */
import type { Floats } from '../kernels/types.ts';
import { decays, defaultTensors, fullSlot, kernelsOr, names, newState, nonFiniteTensors, runs, stepLr, view } from './base.ts';
import { resolveOptions, type Schema } from './options.ts';
import type { FactoryContext, Optimizer, TensorSpec } from './types.ts';

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
  lr: { type: 'number', min: 0, doc: 'learning rate' },
  beta1: { type: 'number', default: 0.9, min: 0, max: 1, doc: 'first-moment decay β1' },
  beta2: { type: 'number', default: 1e-4, min: 0, max: 0.5, exclusiveMin: true, doc: 'growth rate of v (1e-4; not an EMA factor)' },
  eps: { type: 'number', default: 1e-6, min: 0, doc: 'ε outside the root' },
  weightDecay: { type: 'number', default: 0, min: 0, doc: 'decoupled weight decay λ (matrices)' },
  decayEmbeddings: { type: 'boolean', default: false, doc: 'also decay the embeddings' },
};

export function adax<F extends Floats = Float32Array>(options: AdaXOptions = {}, ctx: FactoryContext<F> = {}): Optimizer<F> {
  const o = resolveOptions<Required<AdaXOptions>>('adax', adaxSchema, options as Record<string, unknown>);
  const k = kernelsOr(ctx.kernels);
  const slots = (tensors: readonly TensorSpec[]) => [fullSlot('exp_avg', tensors), fullSlot('exp_avg_sq', tensors)];
  return {
    name: 'adax',
    options: o,
    microSteps: 1,
    ownsLr: false,
    foldsAccumulation: false,
    moments: { m: 'exp_avg', v: 'exp_avg_sq' },
    slots,
    init: (params, tensors = defaultTensors(params.length)) => newState(params, tensors, slots(tensors)),
    step(params, grads, state, so = {}) {
      const lr = stepLr('adax', so.lr ?? o.lr);
      state.t += 1;
      const skip = so.gradsFinite ? new Set<number>() : nonFiniteTensors(k, grads, state.tensors);
      const { exp_avg: m, exp_avg_sq: v } = state.slots;
      const rootVScale = 1 / Math.sqrt(Math.expm1(state.t * Math.log1p(o.beta2)));
      for (const r of runs(state.tensors, skip, (t) => decays(t, o.decayEmbeddings))) {
        k.adam(view(params, r.offset, r.size), view(grads, r.offset, r.size), view(m, r.offset, r.size), view(v, r.offset, r.size), r.size, {
          beta1: o.beta1, g1: 1 - o.beta1, beta2: 1 + o.beta2, g2: o.beta2, mScale: 1, rootVScale,
          lr, eps: o.eps, decay: r.key ? 1 - lr * o.weightDecay : 1, epsMode: 0,
        });
      }
      return { skipped: names(state.tensors, skip), applied: true };
    },
  };
}

/**
 * AdamW (docs/optimizers.md#adamw) with its four ε treatments:
 *   m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²;  m̂ = m/(1−β1ᵗ);  v̂ = v/(1−β2ᵗ)
 *   θ = θ·(1 − η·λ) − η·r,  r = m̂/(√v̂ + ε) | m̂/√(v̂ + ε²) | m̂/√v̂ (0 where v̂ = 0) | atan2(m̂, √v̂)
 * Weight decay applies to matrices (and embeddings with decayEmbeddings), never to biases or gains.
 */
import type { Floats } from '../kernels/types.ts';
import { decays, defaultTensors, fullSlot, kernelsOr, names, newState, nonFiniteTensors, runs, stepLr, view } from './base.ts';
import { resolveOptions, type Schema } from './options.ts';
import type { FactoryContext, Optimizer, TensorSpec } from './types.ts';

export const EPS_MODES = ['outside', 'inside', 'zero', 'atan2'] as const;
export type EpsMode = (typeof EPS_MODES)[number];

export interface AdamWOptions {
  /** Learning rate (a schedule may override it per step). */
  lr?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** Where ε goes: outside the root (PyTorch), inside it, nowhere (0/0 = 0), or the atan2 form. */
  epsMode?: EpsMode;
  weightDecay?: number;
  decayEmbeddings?: boolean;
}

export const adamwSchema: Schema = {
  lr: { type: 'number', min: 0, doc: 'learning rate' },
  beta1: { type: 'number', default: 0.9, min: 0, max: 1, exclusiveMax: true, doc: 'first-moment decay β1' },
  beta2: { type: 'number', default: 0.95, min: 0, max: 1, exclusiveMax: true, doc: 'second-moment decay β2' },
  eps: { type: 'number', default: 1e-8, min: 0, doc: 'ε (ignored by epsMode zero and atan2)' },
  epsMode: { type: 'enum', values: EPS_MODES, default: 'outside', doc: 'outside √v̂+ε (PyTorch), inside √(v̂+ε²), zero (0/0 = 0), atan2' },
  weightDecay: { type: 'number', default: 0.1, min: 0, doc: 'decoupled weight decay λ (matrices)' },
  decayEmbeddings: { type: 'boolean', default: false, doc: 'also decay the embeddings' },
};

/** The per-element coefficients of one AdamW step at (1-based) step t. */
function adamwCoefs(o: Required<Omit<AdamWOptions, 'lr'>>, lr: number, t: number, decay: boolean) {
  return {
    beta1: o.beta1, g1: 1 - o.beta1, beta2: o.beta2, g2: 1 - o.beta2,
    mScale: 1 / (1 - Math.pow(o.beta1, t)), rootVScale: 1 / Math.sqrt(1 - Math.pow(o.beta2, t)),
    lr, eps: o.eps, decay: decay ? 1 - lr * o.weightDecay : 1,
    epsMode: EPS_MODES.indexOf(o.epsMode) as 0 | 1 | 2 | 3,
  };
}

export function adamw<F extends Floats = Float32Array>(options: AdamWOptions = {}, ctx: FactoryContext<F> = {}): Optimizer<F> {
  const o = resolveOptions<Required<AdamWOptions>>('adamw', adamwSchema, options as Record<string, unknown>);
  const k = kernelsOr(ctx.kernels);
  const slots = (tensors: readonly TensorSpec[]) => [fullSlot('exp_avg', tensors), fullSlot('exp_avg_sq', tensors)];
  return {
    name: 'adamw',
    options: o,
    microSteps: 1,
    ownsLr: false,
    foldsAccumulation: false,
    moments: { m: 'exp_avg', v: 'exp_avg_sq' },
    slots,
    init: (params, tensors = defaultTensors(params.length)) => newState(params, tensors, slots(tensors)),
    step(params, grads, state, so = {}) {
      const lr = stepLr('adamw', so.lr ?? o.lr);
      state.t += 1;
      const skip = so.gradsFinite ? new Set<number>() : nonFiniteTensors(k, grads, state.tensors);
      const { exp_avg: m, exp_avg_sq: v } = state.slots;
      for (const r of runs(state.tensors, skip, (t) => decays(t, o.decayEmbeddings))) {
        const c = adamwCoefs(o, lr, state.t, r.key);
        k.adam(view(params, r.offset, r.size), view(grads, r.offset, r.size), view(m, r.offset, r.size), view(v, r.offset, r.size), r.size, c);
      }
      return { skipped: names(state.tensors, skip), applied: true };
    },
  };
}

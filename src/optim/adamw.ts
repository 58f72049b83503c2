/**
 * AdamW (docs/optimizers.md#adamw) with its four ε treatments:
 *   m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²;  m̂ = m/(1−β1ᵗ);  v̂ = v/(1−β2ᵗ)
 *   θ = θ·(1 − η·λ) − η·r,  r = m̂/(√v̂ + ε) | m̂/√(v̂ + ε²) | m̂/√v̂ (0 where v̂ = 0) | atan2(m̂, √v̂)
 * Weight decay applies to matrices (and embeddings with decayEmbeddings), never to biases or gains.
 */
import type { AdamCoefs, Floats } from '../kernels/types.ts';
import { adamFamily } from './adam_family.ts';
import { betaSpec, decayEmbeddingsSpec, lrSpec, resolveOptions, weightDecaySpec, type Schema } from './options.ts';
import type { FactoryContext, Optimizer } from './types.ts';

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
  lr: lrSpec(),
  beta1: betaSpec(0.9, 'first-moment decay β1', true),
  beta2: betaSpec(0.95, 'second-moment decay β2', true),
  eps: { type: 'number', default: 1e-8, min: 0, doc: 'ε (ignored by epsMode zero and atan2)' },
  epsMode: { type: 'enum', values: EPS_MODES, default: 'outside', doc: 'outside √v̂+ε (PyTorch), inside √(v̂+ε²), zero (0/0 = 0), atan2' },
  weightDecay: weightDecaySpec(0.1),
  decayEmbeddings: decayEmbeddingsSpec(false),
};

export function adamw<F extends Floats = Float32Array>(options: AdamWOptions = {}, ctx: FactoryContext<F> = {}): Optimizer<F> {
  const o = resolveOptions<Required<AdamWOptions>>('adamw', adamwSchema, options as Record<string, unknown>);
  const epsMode = EPS_MODES.indexOf(o.epsMode) as 0 | 1 | 2 | 3;
  return adamFamily('adamw', o, (lr, t, decay) => adamwCoefs({ ...o, weightDecay: decay ? o.weightDecay : 0, epsMode }, lr, t), ctx);
}

/** The `adam` kernel's coefficients of AdamW's step t: bias corrections 1/(1 − β1ᵗ), 1/√(1 − β2ᵗ), decoupled decay 1 − lr·λ. */
export function adamwCoefs(
  o: { beta1: number; beta2: number; eps: number; weightDecay: number; epsMode: AdamCoefs['epsMode'] },
  lr: number,
  t: number,
): AdamCoefs {
  const { beta1, beta2, eps, epsMode } = o;
  return {
    beta1,
    g1: 1 - beta1,
    beta2,
    g2: 1 - beta2,
    mScale: 1 / (1 - Math.pow(beta1, t)),
    rootVScale: 1 / Math.sqrt(1 - Math.pow(beta2, t)),
    lr,
    eps,
    decay: 1 - lr * o.weightDecay,
    epsMode,
  };
}

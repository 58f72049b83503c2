/**
 * AdamW over the flat parameter buffer, PyTorch semantics (techniques.md §5):
 *   m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;  θ ← θ·(1 − η·λ) − η·m̂/(√v̂ + ε).
 * Optax-style: `adamwInit` makes the state, `adamwStep` advances it; weight decay applies only
 * to the ranges of the buffer marked `decay` (matrices; not biases, gains, embeddings).
 */
import type { Floats, Kernels } from '../kernels/types.ts';
import type { ParamLayout } from '../model/params.ts';

export interface AdamWHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export const ADAMW_DEFAULTS: Omit<AdamWHyper, 'lr'> = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };

export interface AdamWState<F extends Floats = Float32Array> {
  /** Steps taken so far (the next step uses t + 1 for bias correction). */
  t: number;
  m: F; // first moment, same layout as params
  v: F; // second moment
}

/** A contiguous range of the flat buffer with one weight-decay setting. */
export interface ParamGroup {
  offset: number;
  size: number;
  decay: boolean;
}

/** Decay groups from a layout: matrices decay; biases, gains and (unless asked) embeddings do not. Adjacent ranges merge. */
export function decayGroups(layout: ParamLayout, decayEmbeddings = false): ParamGroup[] {
  const groups: ParamGroup[] = [];
  for (const t of layout.tensors) {
    const decay = t.kind === 'weight' || (decayEmbeddings && t.kind === 'embedding');
    const last = groups[groups.length - 1];
    if (last && last.decay === decay && last.offset + last.size === t.offset) last.size += t.size;
    else groups.push({ offset: t.offset, size: t.size, decay });
  }
  return groups;
}

export function adamwInit(n: number): AdamWState {
  return { t: 0, m: new Float32Array(n), v: new Float32Array(n) };
}

export function adamwStep<F extends Floats>(
  k: Kernels<F>, params: F, grads: F, state: AdamWState<F>, groups: ParamGroup[], h: AdamWHyper,
): void {
  state.t += 1;
  for (const g of groups) {
    const end = g.offset + g.size;
    k.adamw(
      params.subarray(g.offset, end) as F, grads.subarray(g.offset, end) as F,
      state.m.subarray(g.offset, end) as F, state.v.subarray(g.offset, end) as F, g.size,
      h.lr, h.beta1, h.beta2, h.eps, g.decay ? h.weightDecay : 0, state.t,
    );
  }
}

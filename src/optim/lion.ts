/**
 * Lion (docs/optimizers.md#lion): one momentum buffer, sign updates, no ε.
 *   u = sign(β1·m + (1−β1)·g);  θ = θ − η·(u + λθ);  m = β2·m + (1−β2)·g   (m updated after θ)
 * Use a learning rate 3–10× smaller and a weight decay 3–10× larger than AdamW's.
 */
import type { Floats } from '../kernels/types.ts';
import { decays, kernelsOr, momentumCoefs, names, nonFiniteTensors, optimizer, runs, stepLr, view } from './base.ts';
import { embeddingSchema, hybridAdamStep, momentumSlots, rowLength, type EmbeddingRemedies } from './embedding.ts';
import { betaSpec, decayEmbeddingsSpec, lrSpec, resolveOptions, weightDecaySpec, type Schema } from './options.ts';
import type { FactoryContext, Optimizer, TensorSpec } from './types.ts';

export interface LionOptions extends EmbeddingRemedies {
  lr?: number;
  beta1?: number;
  beta2?: number;
  weightDecay?: number;
  /** Decay embeddings too (default true, as in the paper's code). */
  decayEmbeddings?: boolean;
}

export const lionSchema: Schema = {
  lr: lrSpec('learning rate (3–10× below AdamW’s)'),
  beta1: betaSpec(0.9, 'interpolation β1 of the update direction'),
  beta2: betaSpec(0.99, 'momentum decay β2'),
  weightDecay: weightDecaySpec(0, 'decoupled weight decay λ (3–10× above AdamW’s)'),
  decayEmbeddings: decayEmbeddingsSpec(true),
  ...embeddingSchema,
};

export function lion<F extends Floats = Float32Array>(options: LionOptions = {}, ctx: FactoryContext<F> = {}): Optimizer<F> {
  const o = resolveOptions<Required<LionOptions>>('lion', lionSchema, options as Record<string, unknown>);
  const k = kernelsOr(ctx.kernels);
  const hybrid = o.embeddingOptimizer === 'adamw';
  const slots = momentumSlots(hybrid);
  return optimizer({
    name: 'lion',
    options: o,
    moments: { m: 'exp_avg', v: null },
    slots,
    step(params, grads, state, so = {}) {
      const lr = stepLr('lion', so.lr ?? o.lr);
      state.t += 1;
      const skip = so.gradsFinite ? new Set<number>() : nonFiniteTensors(k, grads, state.tensors);
      const m = state.slots.exp_avg;
      const coefs = (decay: boolean, lazyRow = 0) =>
        momentumCoefs(o.beta1, o.beta2, { lr, weightDecay: decay ? o.weightDecay : 0, phi: 0, block: lazyRow, skipZeroRows: lazyRow > 0 });
      // Embeddings get their own calls when a remedy applies to them.
      const special = (t: TensorSpec) => t.kind === 'embedding' && (hybrid || o.lazyEmbedding);
      const own = new Set(skip);
      state.tensors.forEach((t, i) => special(t) && own.add(i));
      for (const r of runs(state.tensors, own, (t) => decays(t, o.decayEmbeddings))) {
        k.momentum(view(params, r.offset, r.size), view(grads, r.offset, r.size), view(m, r.offset, r.size), r.size, coefs(r.key));
      }
      state.tensors.forEach((t, i) => {
        if (skip.has(i) || !special(t)) return;
        if (hybrid) {
          hybridAdamStep(k, params, grads, m, state.slots.exp_avg_sq, slots(state.tensors)[1], state.tensors, i, lr * o.embeddingLrScale, state.t, 1);
          return;
        }
        const c = coefs(decays(t, o.decayEmbeddings), rowLength(t));
        k.momentum(view(params, t.offset, t.size), view(grads, t.offset, t.size), view(m, t.offset, t.size), t.size, c);
      });
      return { skipped: names(state.tensors, skip), applied: true };
    },
  });
}

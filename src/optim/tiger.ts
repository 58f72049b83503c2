/**
 * Tiger (docs/optimizers.md#tiger): Lion with β1 = β2 = β, per-tensor learning rates, gradient
 * accumulation folded into the momentum (docs/optimizers.md#folded-accumulation) and a non-finite-gradient guard.
 *   micro-step t, k = accumSteps:  m = b1·m + (1−β)/k·g,  b1 = β on the first micro-step of a cycle, else 1
 *   on the last micro-step:        θ = θ − η·(sign(m) + λθ)
 *   η by kind: matrices lr·RMS(θ), embeddings lr·RMS(row) per row, biases and gains lr·biasLrScale with λ = 0.
 * The zero-init trap (RMS(θ) = 0 ⇒ η = 0, the tensor never moves) is closed by RMS floor rmsFloor.
 * Guard: a tensor with a NaN/Inf gradient keeps m, and θ shrinks toward its init centre:
 * θ = c + shrink·(θ − c), c = 1 for gains, 0 otherwise (also on accumulation micro-steps).
 */
import type { Floats, MomentumCoefs } from '../kernels/types.ts';
import { kernelsOr, momentumCoefs, names, nonFiniteTensors, optimizer, stepLr, view } from './base.ts';
import { embeddingSchema, hybridAdamStep, momentumSlots, rowLength, type EmbeddingRemedies } from './embedding.ts';
import { betaSpec, lrSpec, resolveOptions, weightDecaySpec, type Schema } from './options.ts';
import type { FactoryContext, Optimizer, TensorSpec } from './types.ts';

export interface TigerOptions extends EmbeddingRemedies {
  /** The global relative learning rate α (Su: peak 1e-3 to 2e-3). */
  lr?: number;
  beta?: number;
  weightDecay?: number;
  /** Micro-steps per update; the trainer sets it from --accum. */
  accumSteps?: number;
  rmsFloor?: number;
  biasLrScale?: number;
  shrink?: number;
}

export const tigerSchema: Schema = {
  lr: lrSpec('relative learning rate α (η = α·RMS(θ))'),
  beta: betaSpec(0.965, 'momentum β (the mean of Lion’s pair)'),
  weightDecay: weightDecaySpec(0.01, 'weight decay λ (matrices and embeddings), scaled by η'),
  accumSteps: { type: 'number', default: 1, min: 1, integer: true, doc: 'micro-steps per update, folded into m' },
  rmsFloor: { type: 'number', default: 1e-3, min: 0, doc: 'floor of RMS(θ) in η (zero-init tensors still move)' },
  biasLrScale: { type: 'number', default: 0.5, min: 0, doc: 'η of biases and gains = this × α, no decay' },
  shrink: betaSpec(0.99, 'non-finite guard: θ = c + shrink·(θ − c)'),
  ...embeddingSchema,
};

export function tiger<F extends Floats = Float32Array>(options: TigerOptions = {}, ctx: FactoryContext<F> = {}): Optimizer<F> {
  const o = resolveOptions<Required<TigerOptions>>('tiger', tigerSchema, options as Record<string, unknown>);
  const k = kernelsOr(ctx.kernels);
  const hybrid = o.embeddingOptimizer === 'adamw';
  const slots = momentumSlots(hybrid);
  const K = o.accumSteps;
  return optimizer({
    name: 'tiger',
    options: o,
    microSteps: K,
    foldsAccumulation: true,
    moments: { m: 'exp_avg', v: null },
    slots,
    step(params, grads, state, so = {}) {
      const alpha = stepLr('tiger', so.lr ?? o.lr);
      state.t += 1;
      const t = state.t;
      const b1 = (t - 1) % K === 0 ? o.beta : 1;
      const update = t % K === 0;
      const skip = so.gradsFinite ? new Set<number>() : nonFiniteTensors(k, grads, state.tensors);
      const m = state.slots.exp_avg;
      // block > 0: η = lr·max(RMS(θ_block), rmsFloor) per block; lazy rows skip zero-gradient rows.
      // m = b1·m + (1−β)/K·g: the g coefficients are not 1 − b1 (b1 is 1 inside a cycle).
      const g = (1 - o.beta) / K;
      const coefs = (lr: number, weightDecay: number, block: number, lazy = false) =>
        momentumCoefs(b1, b1, {
          dirG: g,
          addG: g,
          lr: update ? lr : 0,
          weightDecay,
          phi: 0,
          block,
          rmsScale: block > 0,
          rmsFloor: o.rmsFloor,
          skipZeroRows: lazy,
        });
      state.tensors.forEach((tn, i) => {
        if (tn.size === 0) return;
        if (skip.has(i)) return shrinkToward(params, tn, o.shrink);
        const call = (off: number, size: number, c: MomentumCoefs) => k.momentum(view(params, off, size), view(grads, off, size), view(m, off, size), size, c);
        if (tn.kind === 'bias' || tn.kind === 'gain') return call(tn.offset, tn.size, coefs(alpha * o.biasLrScale, 0, 0));
        if (tn.kind !== 'embedding') return call(tn.offset, tn.size, coefs(alpha, o.weightDecay, tn.size));
        if (hybrid) {
          return hybridAdamStep(k, params, grads, m, state.slots.exp_avg_sq, slots(state.tensors)[1], state.tensors, i, alpha * o.embeddingLrScale, t, K);
        }
        call(tn.offset, tn.size, coefs(alpha, o.weightDecay, rowLength(tn), o.lazyEmbedding));
      });
      return { skipped: names(state.tensors, skip), applied: update };
    },
  });
}

/** θ = c + s·(θ − c), c = 1 for gains (LayerNorm scales start at 1), else 0. */
function shrinkToward<F extends Floats>(params: F, t: TensorSpec, s: number): void {
  const c = t.kind === 'gain' ? 1 : 0;
  for (let j = t.offset, e = t.offset + t.size; j < e; j++) params[j] = c + s * (params[j] - c);
}

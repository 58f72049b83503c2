/**
 * The optimizers that are the `adam` kernel with their own coefficients (AdamW, AdaX): the same
 * state (m, v), the same non-finite guard and the same runs of decayed and undecayed tensors.
 */
import type { AdamCoefs, Floats } from '../kernels/types.ts';
import { decays, fullSlot, kernelsOr, names, nonFiniteTensors, optimizer, runs, stepLr, view } from './base.ts';
import type { FactoryContext, Optimizer, TensorSpec } from './types.ts';

/** The kernel's coefficients at (1-based) step t for a run that does or does not decay. */
export type AdamCoefsAt = (lr: number, t: number, decay: boolean) => AdamCoefs;

export function adamFamily<F extends Floats>(
  name: string,
  o: { lr: number; decayEmbeddings: boolean },
  coefs: AdamCoefsAt,
  ctx: FactoryContext<F>,
): Optimizer<F> {
  const k = kernelsOr(ctx.kernels);
  const slots = (tensors: readonly TensorSpec[]) => [fullSlot('exp_avg', tensors), fullSlot('exp_avg_sq', tensors)];
  return optimizer({
    name,
    options: o,
    moments: { m: 'exp_avg', v: 'exp_avg_sq' },
    slots,
    step(params, grads, state, so = {}) {
      const lr = stepLr(name, so.lr ?? o.lr);
      state.t += 1;
      const skip = so.gradsFinite ? new Set<number>() : nonFiniteTensors(k, grads, state.tensors);
      const { exp_avg: m, exp_avg_sq: v } = state.slots;
      for (const r of runs(state.tensors, skip, (t) => decays(t, o.decayEmbeddings))) {
        const c = coefs(lr, state.t, r.key);
        k.adam(view(params, r.offset, r.size), view(grads, r.offset, r.size), view(m, r.offset, r.size), view(v, r.offset, r.size), r.size, c);
      }
      return { skipped: names(state.tensors, skip), applied: true };
    },
  });
}

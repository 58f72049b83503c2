/**
 * The elementwise momentum optimizers without per-tensor policy: Signum/SignSGD, SoftSign and
 * SGD. Each is one call of the `momentum` kernel per run of tensors; only the coefficients differ.
 */
import type { Floats, MomentumCoefs } from '../kernels/types.ts';
import { decays, fullSlot, kernelsOr, momentumCoefs, names, nonFiniteTensors, optimizer, runs, stepLr, view } from './base.ts';
import { betaSpec, decayEmbeddingsSpec, lrSpec, resolveOptions, weightDecaySpec, type Schema } from './options.ts';
import type { FactoryContext, Optimizer, TensorSpec } from './types.ts';

interface Common {
  lr?: number;
  weightDecay?: number;
  decayEmbeddings?: boolean;
}

const common: Schema = {
  lr: lrSpec(),
  weightDecay: weightDecaySpec(0),
  decayEmbeddings: decayEmbeddingsSpec(false),
};

/** Momentum coefficients for one step, given resolved options and the run's decay flag. */
type Coefs<O> = (o: O, lr: number, decay: boolean) => MomentumCoefs;

function elementwise<O extends Common, F extends Floats>(
  name: string,
  schema: Schema,
  slot: string,
  coefs: Coefs<Required<O>>,
  options: O,
  ctx: FactoryContext<F>,
): Optimizer<F> {
  const o = resolveOptions<Required<O>>(name, schema, options as Record<string, unknown>);
  const k = kernelsOr(ctx.kernels);
  // Without momentum (SignSGD, plain SGD) there is no state: the kernel's m is the gradient
  // buffer itself, which m = 0·m + 1·g rewrites with its own values.
  const stateless = (o as Record<string, unknown>)[slot === 'momentum_buffer' ? 'momentum' : 'beta'] === 0;
  const slots = (tensors: readonly TensorSpec[]) => (stateless ? [] : [fullSlot(slot, tensors)]);
  return optimizer({
    name,
    options: o,
    moments: { m: stateless ? null : slot, v: null },
    slots,
    step(params, grads, state, so = {}) {
      const lr = stepLr(name, so.lr ?? o.lr);
      state.t += 1;
      const skip = so.gradsFinite ? new Set<number>() : nonFiniteTensors(k, grads, state.tensors);
      const m = stateless ? grads : state.slots[slot];
      for (const r of runs(state.tensors, skip, (t) => decays(t, o.decayEmbeddings === true))) {
        k.momentum(view(params, r.offset, r.size), view(grads, r.offset, r.size), view(m, r.offset, r.size), r.size, coefs(o, lr, r.key));
      }
      return { skipped: names(state.tensors, skip), applied: true };
    },
  });
}

export interface SignumOptions extends Common {
  /** Momentum β; 0 gives SignSGD, θ −= η·sign(g). */
  beta?: number;
}

export const signumSchema: Schema = {
  ...common,
  beta: betaSpec(0.9, 'momentum β (0 = SignSGD)'),
};
export const signsgdSchema: Schema = { ...signumSchema, beta: { ...signumSchema.beta, default: 0 } as Schema[string] };

const signCoefs: Coefs<Required<SignumOptions>> = (o, lr, decay) => momentumCoefs(o.beta, o.beta, { lr, weightDecay: decay ? o.weightDecay : 0, phi: 0 });

/** Signum (docs/optimizers.md#signum-and-signsgd): m = β·m + (1−β)·g;  θ = θ − η·(sign(m) + λθ). */
export function signum<F extends Floats = Float32Array>(options: SignumOptions = {}, ctx: FactoryContext<F> = {}): Optimizer<F> {
  return elementwise('signum', signumSchema, 'exp_avg', signCoefs, options, ctx);
}

/** SignSGD: Signum with β = 0, θ = θ − η·(sign(g) + λθ). */
export function signsgd<F extends Floats = Float32Array>(options: SignumOptions = {}, ctx: FactoryContext<F> = {}): Optimizer<F> {
  return elementwise('signsgd', signsgdSchema, 'exp_avg', signCoefs, options, ctx);
}

export interface SoftSignOptions extends Common {
  beta?: number;
  /** The ε of softsign(m, ε) = m/√(m² + ε²): Adam's ε in the SoftSign model (docs/optimizers.md#softsign). */
  eps?: number;
}

export const softsignSchema: Schema = {
  ...common,
  beta: betaSpec(0.9, 'momentum β'),
  eps: { type: 'number', default: 1e-8, min: 0, doc: 'ε of m/√(m² + ε²)' },
};

/** SoftSign (docs/optimizers.md#softsign): m = β·m + (1−β)·g;  θ = θ − η·(m/√(m² + ε²) + λθ). */
export function softsign<F extends Floats = Float32Array>(options: SoftSignOptions = {}, ctx: FactoryContext<F> = {}): Optimizer<F> {
  const coefs: Coefs<Required<SoftSignOptions>> = (o, lr, decay) =>
    momentumCoefs(o.beta, o.beta, { lr, weightDecay: decay ? o.weightDecay : 0, phi: 1, eps: o.eps });
  return elementwise('softsign', softsignSchema, 'exp_avg', coefs, options, ctx);
}

export interface SGDOptions extends Common {
  /** PyTorch convention: buf = μ·buf + g (no dampening). 0 = plain SGD. */
  momentum?: number;
}

export const sgdSchema: Schema = {
  ...common,
  momentum: betaSpec(0.9, 'momentum μ (buf = μ·buf + g)'),
};

/** SGD with momentum: buf = μ·buf + g;  θ = θ − η·(buf + λθ) (decoupled decay, unlike PyTorch's L2). */
export function sgd<F extends Floats = Float32Array>(options: SGDOptions = {}, ctx: FactoryContext<F> = {}): Optimizer<F> {
  // buf = μ·buf + g: both g coefficients are 1, not 1 − μ.
  const coefs: Coefs<Required<SGDOptions>> = (o, lr, decay) =>
    momentumCoefs(o.momentum, o.momentum, { dirG: 1, addG: 1, lr, weightDecay: decay ? o.weightDecay : 0, phi: 2 });
  return elementwise('sgd', sgdSchema, 'momentum_buffer', coefs, options, ctx);
}

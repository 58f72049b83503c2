/**
 * Adafactor (Shazeer & Stern 2018; docs/optimizers.md#adafactor), paper semantics:
 *   β̂2 = 1 − t^(−decayRate);  second moment factored into row and column accumulators for
 *   tensors with ≥ 2 dims (O(n + m) memory per n×m matrix, over the last two axes), a plain EMA
 *   for vectors;  u = g/√v̂ clipped to RMS ≤ clipThreshold;  optional momentum on the clipped u;
 *   step α = ρ·max(eps2, RMS(θ)) (scaleParameter) with ρ the relative step min(1e-2, 1/√t)
 *   (relativeStep) or the given lr.
 */
import { UserError } from '../errors.ts';
import type { Floats } from '../kernels/types.ts';
import { kernelsOr, names, nonFiniteTensors, optimizer, slotOffsets, stepLr, view } from './base.ts';
import { betaSpec, resolveOptions, weightDecaySpec, type Schema } from './options.ts';
import type { FactoryContext, Optimizer, SlotSpec, TensorSpec } from './types.ts';

export interface AdafactorOptions {
  /** Absolute learning rate ρ. Leave unset to use the relative step size. */
  lr?: number;
  /** ρ_t = min(1e-2, 1/√t) (or min(1e-6·t, 1/√t) with warmupInit); default: true when lr is unset. */
  relativeStep?: boolean;
  scaleParameter?: boolean;
  warmupInit?: boolean;
  /** c of β̂2_t = 1 − t^(−c), 0 < c ≤ 1 (HF writes it as −0.8). */
  decayRate?: number;
  eps1?: number;
  eps2?: number;
  clipThreshold?: number;
  /** Momentum on the clipped update; 0 keeps no first-moment buffer (the default). */
  beta1?: number;
  weightDecay?: number;
}

export const adafactorSchema: Schema = {
  lr: { type: 'number', min: 0, exclusiveMin: true, doc: 'absolute step ρ (unset: relative step)' },
  relativeStep: { type: 'boolean', doc: 'ρ = min(1e-2, 1/√t); default true when lr is unset' },
  scaleParameter: { type: 'boolean', default: true, doc: 'step α = ρ·max(eps2, RMS(θ))' },
  warmupInit: { type: 'boolean', default: false, doc: 'relative step min(1e-6·t, 1/√t)' },
  decayRate: { type: 'number', default: 0.8, doc: 'c in β̂2 = 1 − t^(−c), 0 < c ≤ 1' },
  eps1: { type: 'number', default: 1e-30, min: 0, doc: 'added to g² before the row/column means' },
  eps2: { type: 'number', default: 1e-3, min: 0, doc: 'floor of RMS(θ) in the parameter scale' },
  clipThreshold: { type: 'number', default: 1, min: 0, exclusiveMin: true, doc: 'update clipping d: u /= max(1, RMS(u)/d)' },
  beta1: betaSpec(0, 'momentum of the clipped update (0 = none, no buffer)'),
  weightDecay: weightDecaySpec(0, 'decoupled weight decay, θ·(1 − α·λ) (matrices)'),
};

/** Guards against the configuration traps of other libraries, with the fix in the message. */
function checkAdafactor(o: Required<AdafactorOptions>, given: AdafactorOptions): void {
  if (o.decayRate < 0) throw new UserError(`optimizer adafactor: decayRate is c in β̂2 = 1 − t^(−c) and must be positive (HF/optax write −0.8; use 0.8)`);
  if (!(o.decayRate > 0 && o.decayRate <= 1)) throw new UserError(`optimizer adafactor: decayRate must be in (0, 1], got ${o.decayRate}`);
  if (given.relativeStep === true && given.lr !== undefined) {
    throw new UserError('optimizer adafactor: relativeStep=true computes its own step size and would ignore lr; drop lr, or set relativeStep=false to use it');
  }
  if (o.warmupInit && !o.relativeStep) throw new UserError('optimizer adafactor: warmupInit only applies with relativeStep=true');
}

/** Factored tensors: [batch, rows, cols] over the last two axes; vectors (and scalars) are not. */
function dims(t: TensorSpec): { batch: number; rows: number; cols: number; factored: boolean } {
  const s = t.shape;
  if (s.length < 2) return { batch: 1, rows: 1, cols: t.size, factored: false };
  const rows = s[s.length - 2],
    cols = s[s.length - 1];
  return { batch: t.size / Math.max(1, rows * cols) || 0, rows, cols, factored: true };
}

export function adafactor<F extends Floats = Float32Array>(options: AdafactorOptions = {}, ctx: FactoryContext<F> = {}): Optimizer<F> {
  const o = resolveOptions<Required<AdafactorOptions>>('adafactor', adafactorSchema, options as Record<string, unknown>);
  if (o.relativeStep === undefined) o.relativeStep = o.lr === undefined;
  checkAdafactor(o, options);
  const k = kernelsOr(ctx.kernels);
  const slots = (tensors: readonly TensorSpec[]): SlotSpec[] => {
    const d = tensors.map(dims);
    const out: SlotSpec[] = [
      { name: 'exp_avg_sq_row', shapes: tensors.map((t, i) => (d[i].factored ? t.shape.slice(0, -1) : null)) },
      { name: 'exp_avg_sq_col', shapes: tensors.map((t, i) => (d[i].factored ? [...t.shape.slice(0, -2), d[i].cols] : null)) },
      { name: 'exp_avg_sq', shapes: tensors.map((t, i) => (d[i].factored ? null : t.shape)) },
    ];
    if (o.beta1 > 0) out.push({ name: 'exp_avg', shapes: tensors.map((t) => t.shape) });
    return out;
  };
  return optimizer({
    name: 'adafactor',
    options: o,
    ownsLr: o.relativeStep === true,
    moments: { m: o.beta1 > 0 ? 'exp_avg' : null, v: null },
    slots,
    step(params, grads, state, so = {}) {
      state.t += 1;
      const t = state.t;
      if (o.relativeStep && so.lr !== undefined) {
        throw new UserError('optimizer adafactor: relativeStep=true computes its own step size; do not pass a learning rate (schedule) to it');
      }
      const rho = o.relativeStep ? Math.min(o.warmupInit ? 1e-6 * t : 1e-2, 1 / Math.sqrt(t)) : stepLr('adafactor', so.lr ?? o.lr);
      const beta2 = 1 - Math.pow(t, -o.decayRate);
      const skip = so.gradsFinite ? new Set<number>() : nonFiniteTensors(k, grads, state.tensors);
      const specs = slots(state.tensors);
      const offs = Object.fromEntries(specs.map((s) => [s.name, slotOffsets(s)]));
      state.tensors.forEach((tn, i) => {
        if (skip.has(i) || tn.size === 0) return;
        const d = dims(tn);
        const at = (slot: string, n: number) => view(state.slots[slot], offs[slot][i], n);
        const vr = d.factored ? at('exp_avg_sq_row', d.batch * d.rows) : at('exp_avg_sq', tn.size);
        const vc = d.factored ? at('exp_avg_sq_col', d.batch * d.cols) : null;
        const mom = o.beta1 > 0 ? at('exp_avg', tn.size) : null;
        k.adafactor(view(params, tn.offset, tn.size), view(grads, tn.offset, tn.size), vr, vc, mom, d.batch, d.rows, d.cols, {
          beta2,
          eps1: o.eps1,
          clipThreshold: o.clipThreshold,
          beta1: o.beta1,
          lr: rho,
          scaleParameter: o.scaleParameter,
          eps2: o.eps2,
          weightDecay: tn.kind === 'weight' ? o.weightDecay : 0,
        });
      });
      return { skipped: names(state.tensors, skip), applied: true };
    },
  });
}

/** Pieces shared by the optimizers: tensor specs, state buffers, the non-finite guard, decay rule. */
import { UserError } from '../errors.ts';
import type { Floats, Kernels, MomentumCoefs } from '../kernels/types.ts';
import { nativeKernels } from '../kernels/native.ts';
import type { Optimizer, OptState, SlotSpec, TensorSpec } from './types.ts';

/** A buffer with no tensor list is one weight tensor of shape [n]. */
function defaultTensors(n: number): TensorSpec[] {
  return [{ name: 'param', shape: [n], kind: 'weight', offset: 0, size: n }];
}

/** Tensors must tile the buffer [0, n) in order: then full-size slots share the parameter layout. */
export function checkTensors(tensors: readonly TensorSpec[], n: number): void {
  let at = 0;
  for (const t of tensors) {
    const numel = t.shape.reduce((a, b) => a * b, 1);
    if (t.offset !== at || t.size !== numel || t.size < 0) {
      throw new UserError(
        `optimizer tensors must tile the parameter buffer in order: ${t.name} (offset ${t.offset}, size ${t.size}, shape [${t.shape}]) does not start at ${at} or does not match its shape`,
      );
    }
    at += t.size;
  }
  if (at !== n) throw new UserError(`optimizer tensors cover ${at} elements but the parameter buffer has ${n}`);
}

/** Every tensor with its own shape: the slot of an elementwise state (m, v). */
export function fullSlot(name: string, tensors: readonly TensorSpec[]): SlotSpec {
  return { name, shapes: tensors.map((t) => t.shape) };
}

export function slotSize(slot: SlotSpec): number {
  return slot.shapes.reduce((a, s) => a + (s ? s.reduce((x, y) => x * y, 1) : 0), 0);
}

/** Offset of each tensor's array inside a slot buffer (−1 where the tensor has none). */
export function slotOffsets(slot: SlotSpec): number[] {
  let at = 0;
  return slot.shapes.map((s) => {
    if (!s) return -1;
    const o = at;
    at += s.reduce((x, y) => x * y, 1);
    return o;
  });
}

function newState<F extends Floats>(params: F, tensors: readonly TensorSpec[], slots: SlotSpec[]): OptState<F> {
  checkTensors(tensors, params.length);
  const Ctor = params.constructor as { new (n: number): F };
  const bufs: Record<string, F> = {};
  for (const s of slots) bufs[s.name] = new Ctor(slotSize(s));
  return { t: 0, tensors, slots: bufs };
}

type Parts<F extends Floats> = Pick<Optimizer<F>, 'name' | 'options' | 'moments' | 'slots' | 'step'> &
  Partial<Pick<Optimizer<F>, 'microSteps' | 'ownsLr' | 'foldsAccumulation'>>;

/** An optimizer from its own parts; by default one micro-step, a given lr, fresh state from its slots. */
export function optimizer<F extends Floats>(parts: Parts<F>): Optimizer<F> {
  return {
    microSteps: 1,
    ownsLr: false,
    foldsAccumulation: false,
    ...parts,
    init: (params, tensors = defaultTensors(params.length)) => newState(params, tensors, parts.slots(tensors)),
  };
}

export function kernelsOr<F extends Floats>(k: Kernels<F> | undefined): Kernels<F> {
  return k ?? (nativeKernels() as unknown as Kernels<F>);
}

export function stepLr(name: string, lr: number | undefined): number {
  if (lr === undefined || !Number.isFinite(lr)) {
    throw new UserError(`optimizer ${name}: no learning rate: set the lr option or pass { lr } to step()`);
  }
  return lr;
}

/** Indices of tensors whose gradient holds NaN or ±Inf (Σg² is then not finite). */
export function nonFiniteTensors<F extends Floats>(k: Kernels<F>, grads: F, tensors: readonly TensorSpec[]): Set<number> {
  const bad = new Set<number>();
  if (Number.isFinite(k.sumSquares(grads, grads.length))) return bad;
  tensors.forEach((t, i) => {
    if (!Number.isFinite(k.sumSquares(grads.subarray(t.offset, t.offset + t.size) as F, t.size))) bad.add(i);
  });
  return bad;
}

/** Decoupled weight decay applies to matrices, and to embeddings when asked; never to biases or gains. */
export function decays(t: TensorSpec, decayEmbeddings: boolean): boolean {
  return t.kind === 'weight' || (decayEmbeddings && t.kind === 'embedding');
}

/**
 * Consecutive runs of tensors that share a key (e.g. "decays or not"), skipping the indices in
 * `skip`: elementwise optimizers make one kernel call per run instead of one per tensor.
 */
export function runs<K>(tensors: readonly TensorSpec[], skip: Set<number>, key: (t: TensorSpec) => K): { offset: number; size: number; key: K }[] {
  const out: { offset: number; size: number; key: K }[] = [];
  tensors.forEach((t, i) => {
    if (skip.has(i) || t.size === 0) return;
    const k = key(t);
    const last = out[out.length - 1];
    if (last && last.key === k && last.offset + last.size === t.offset) last.size += t.size;
    else out.push({ offset: t.offset, size: t.size, key: k });
  });
  return out;
}

export function view<F extends Floats>(buf: F, offset: number, size: number): F {
  return buf.subarray(offset, offset + size) as F;
}

export function names(tensors: readonly TensorSpec[], idx: Set<number>): string[] {
  return [...idx].sort((a, b) => a - b).map((i) => tensors[i].name);
}

/**
 * Coefficients of the `momentum` kernel in its usual form: direction dir·m + (1−dir)·g, then
 * m = keep·m + (1−keep)·g; no ε, no per-block learning rate. `c` gives the step's lr, decay and
 * update form (phi) and overrides anything else.
 */
export function momentumCoefs(dir: number, keep: number, c: Pick<MomentumCoefs, 'lr' | 'weightDecay' | 'phi'> & Partial<MomentumCoefs>): MomentumCoefs {
  return { dirM: dir, dirG: 1 - dir, keepM: keep, addG: 1 - keep, eps: 0, block: 0, rmsScale: false, rmsFloor: 0, skipZeroRows: false, ...c };
}

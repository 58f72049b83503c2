/**
 * The optimizer contract, optax style: an optimizer is a pair of functions over ONE flat
 * parameter buffer split into named tensors.
 *
 *   const opt = adamw({ lr: 1e-3 });
 *   const state = opt.init(params);                 // or opt.init(params, tensors)
 *   opt.step(params, grads, state);                 // in place; { lr } overrides the step's lr
 *
 * `init` is pure (fresh zeroed state); `step` updates params and state in place (the buffers
 * are large, so no copies). All state lives in `state.slots`: named Float32/Float64 buffers, each
 * the concatenation over tensors of that slot's per-tensor arrays, which is what checkpoints
 * save (see state.ts). A tensor's `kind` routes per-group behaviour: weight decay applies to
 * `weight` (and `embedding` when asked), Tiger scales learning rates by kind.
 */
import type { Floats, Kernels } from '../kernels/types.ts';
import type { ParamKind } from '../model/params.ts';

/** One tensor of the flat buffer: elements [offset, offset + size), row-major `shape`. */
export interface TensorSpec {
  name: string;
  shape: readonly number[];
  kind: ParamKind;
  offset: number;
  size: number;
}

/** A state buffer: per tensor, its shape in this slot, or null when the tensor has none. */
export interface SlotSpec {
  name: string;
  shapes: readonly (readonly number[] | null)[];
}

export interface OptState<F extends Floats = Float32Array> {
  /** Steps taken (micro-steps for Tiger with accumSteps > 1); the next step is t + 1. */
  t: number;
  tensors: readonly TensorSpec[];
  slots: Record<string, F>;
}

export interface StepOptions {
  /** Learning rate of this step (a schedule's value); default: the optimizer's `lr` option. */
  lr?: number;
  /**
   * The caller already knows every gradient is finite (e.g. it computed a finite global norm):
   * skips the per-tensor check.
   */
  gradsFinite?: boolean;
}

export interface StepResult {
  /** Tensors whose gradient had NaN/Inf: their step was skipped (and shrunk, for Tiger). */
  skipped: string[];
  /** False for accumulation micro-steps that only update the momentum (Tiger, accumSteps > 1). */
  applied: boolean;
}

export interface Optimizer<F extends Floats = Float32Array> {
  readonly name: string;
  /** Resolved options (defaults filled in), as given to the factory. */
  readonly options: Readonly<Record<string, unknown>>;
  /** Micro-steps per parameter update: Tiger folds gradient accumulation into its momentum. */
  readonly microSteps: number;
  /** It sets its own step size and takes no lr (Adafactor's relative step). */
  readonly ownsLr: boolean;
  /** It can fold gradient accumulation into its state (option accumSteps; Tiger). */
  readonly foldsAccumulation: boolean;
  /** Its state slots holding the first and second moments (diagnostics), null where it has none. */
  readonly moments: { m: string | null; v: string | null };
  /** The state layout for a given set of tensors. */
  slots(tensors: readonly TensorSpec[]): SlotSpec[];
  init(params: F, tensors?: readonly TensorSpec[]): OptState<F>;
  step(params: F, grads: F, state: OptState<F>, opts?: StepOptions): StepResult;
}

/** What every factory accepts besides its options: the kernels to run on (default: native). */
export interface FactoryContext<F extends Floats> {
  kernels?: Kernels<F>;
}

/**
 * Remedies for the Lion/Tiger embedding anomaly (docs/optimizers.md#embedding-drift), shared by both:
 *   lazyEmbedding      update only embedding rows whose gradient is not all zero (m included);
 *   embeddingOptimizer 'adamw': the Lion authors' hybrid, AdamW for the embeddings.
 * (Tying input and output embeddings, the third remedy, is built into Keel's GPT: every row of
 * wte gets a dense gradient through the softmax.)
 */
import type { Floats, Kernels } from '../kernels/types.ts';
import type { Schema } from './options.ts';
import type { SlotSpec, TensorSpec } from './types.ts';
import { fullSlot, slotOffsets, view } from './base.ts';

export interface EmbeddingRemedies {
  lazyEmbedding?: boolean;
  embeddingOptimizer?: 'same' | 'adamw';
  /** With embeddingOptimizer adamw: the embeddings' lr = this × the step's lr. */
  embeddingLrScale?: number;
}

export const embeddingSchema: Schema = {
  lazyEmbedding: { type: 'boolean', default: false, doc: 'update only embedding rows with a non-zero gradient (see docs/optimizers.md)' },
  embeddingOptimizer: { type: 'enum', values: ['same', 'adamw'], default: 'same', doc: 'adamw: AdamW for the embeddings (see docs/optimizers.md)' },
  embeddingLrScale: { type: 'number', default: 3, min: 0, doc: 'embeddings lr ÷ lr when embeddingOptimizer=adamw' },
};

/** AdamW's settings for the embeddings in the hybrid: LLM defaults, no decay. */
const HYBRID = { beta1: 0.9, beta2: 0.95, eps: 1e-8 };

/** Lion's and Tiger's state: the momentum, and with the hybrid the embeddings' second moment. */
export function momentumSlots(hybrid: boolean): (tensors: readonly TensorSpec[]) => SlotSpec[] {
  return (tensors) => [fullSlot('exp_avg', tensors), ...(hybrid ? [hybridSlot(tensors)] : [])];
}

/** The second-moment slot of the hybrid: embeddings only. */
function hybridSlot(tensors: readonly TensorSpec[]): SlotSpec {
  return { name: 'exp_avg_sq', shapes: tensors.map((t) => (t.kind === 'embedding' ? t.shape : null)) };
}

/** Elements per embedding row (the last axis): the kernel's block for per-row policies. */
export function rowLength(t: TensorSpec): number {
  return t.shape[t.shape.length - 1] ?? t.size;
}

/**
 * One AdamW (hybrid) step of embedding tensor `i`, with gradient accumulation folded into m and
 * v as Tiger folds m (docs/optimizers.md#folded-accumulation; k micro-steps per update; exact
 * for k = 1). `update` is false on micro-steps.
 */
export function hybridAdamStep<F extends Floats>(
  k: Kernels<F>,
  params: F,
  grads: F,
  m: F,
  v: F,
  vSlot: SlotSpec,
  tensors: readonly TensorSpec[],
  i: number,
  lr: number,
  t: number,
  accum: number,
): void {
  const tn = tensors[i];
  const vOff = slotOffsets(vSlot)[i];
  const first = (t - 1) % accum === 0;
  const update = t % accum === 0;
  const tu = Math.ceil(t / accum); // updates so far, counting this one
  k.adam(view(params, tn.offset, tn.size), view(grads, tn.offset, tn.size), view(m, tn.offset, tn.size), view(v, vOff, tn.size), tn.size, {
    beta1: first ? HYBRID.beta1 : 1,
    g1: (1 - HYBRID.beta1) / accum,
    beta2: first ? HYBRID.beta2 : 1,
    g2: (1 - HYBRID.beta2) / accum,
    mScale: 1 / (1 - Math.pow(HYBRID.beta1, tu)),
    rootVScale: 1 / Math.sqrt(1 - Math.pow(HYBRID.beta2, tu)),
    lr: update ? lr : 0,
    eps: HYBRID.eps,
    decay: 1,
    epsMode: 0,
  });
}

/** Every optimizer by name: factory, option schema, and the trainer's recommended defaults. */
import { UserError } from '../errors.ts';
import type { Floats } from '../kernels/types.ts';
import { adafactor, adafactorSchema } from './adafactor.ts';
import { adamw, adamwSchema } from './adamw.ts';
import { adax, adaxSchema } from './adax.ts';
import { lion, lionSchema } from './lion.ts';
import { sgd, sgdSchema, signsgd, signsgdSchema, signum, signumSchema, softsign, softsignSchema } from './momentum.ts';
import type { Schema } from './options.ts';
import { tiger, tigerSchema } from './tiger.ts';
import type { FactoryContext, Optimizer } from './types.ts';

export interface OptimizerEntry {
  summary: string;
  schema: Schema;
  create: <F extends Floats>(options: Record<string, unknown>, ctx?: FactoryContext<F>) => Optimizer<F>;
  /**
   * What `keel train` uses unless told otherwise: the best lr of `keel experiment optimizers`'
   * sweep on the tiny model at batch 16 (docs/optimizers.md#experiment-optimizers), plus option
   * overrides. Lion keeps the paper's
   * rule (lr 3–10× lower, weight decay 3–10× higher than AdamW's) at the edge nearest the sweep's
   * optimum (1.2e-3): lr ÷3, decay ×5. The sign family takes the same decay.
   */
  train: { lr: number; options: Record<string, unknown> };
}

export const OPTIMIZERS = {
  adamw: { summary: 'AdamW, PyTorch semantics, four ε treatments', schema: adamwSchema, create: adamw, train: { lr: 2e-3, options: {} } },
  adafactor: {
    summary: 'factored second moment, relative step, update clipping',
    schema: adafactorSchema,
    create: adafactor,
    train: { lr: 9e-2, options: { relativeStep: false } },
  },
  adax: { summary: 'AdaX: long-term-memory second moment', schema: adaxSchema, create: adax, train: { lr: 2e-3, options: {} } },
  lion: { summary: 'Lion: sign of interpolated momentum', schema: lionSchema, create: lion, train: { lr: 6.7e-4, options: { weightDecay: 0.5 } } },
  tiger: { summary: 'Tiger: Lion with β1 = β2, per-tensor RMS-scaled lr', schema: tigerSchema, create: tiger, train: { lr: 2e-2, options: {} } },
  signum: { summary: 'SignSGD with momentum', schema: signumSchema, create: signum, train: { lr: 4e-4, options: { weightDecay: 0.5 } } },
  signsgd: { summary: 'SignSGD: θ −= η·sign(g)', schema: signsgdSchema, create: signsgd, train: { lr: 6e-4, options: { weightDecay: 0.5 } } },
  softsign: {
    summary: 'SoftSign: m/√(m² + ε²), Adam-with-ε proxy',
    schema: softsignSchema,
    create: softsign,
    train: { lr: 4e-4, options: { weightDecay: 0.5, eps: 1e-5 } },
  },
  sgd: { summary: 'SGD with momentum', schema: sgdSchema, create: sgd, train: { lr: 0.1, options: {} } },
} satisfies Record<string, OptimizerEntry>;

export type OptimizerName = keyof typeof OPTIMIZERS;
export const OPTIMIZER_NAMES = Object.keys(OPTIMIZERS) as OptimizerName[];

export function optimizerEntry(name: string): OptimizerEntry {
  if (!(name in OPTIMIZERS)) throw new UserError(`unknown optimizer "${name}"; choose one of ${OPTIMIZER_NAMES.join(', ')}`);
  return OPTIMIZERS[name as OptimizerName];
}

/** Builds an optimizer by name (options are validated against its schema). */
export function createOptimizer<F extends Floats = Float32Array>(name: string, options: Record<string, unknown> = {}, ctx?: FactoryContext<F>): Optimizer<F> {
  return optimizerEntry(name).create(options, ctx);
}

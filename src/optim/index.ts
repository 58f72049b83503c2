/** The optimizer family: factories, the registry, state (de)serialisation. */
export type { Optimizer, OptState, SlotSpec, StepOptions, StepResult, TensorSpec } from './types.ts';
export { adamw, EPS_MODES, type AdamWOptions, type EpsMode } from './adamw.ts';
export { adafactor, type AdafactorOptions } from './adafactor.ts';
export { adax, type AdaXOptions } from './adax.ts';
export { lion, type LionOptions } from './lion.ts';
export { tiger, type TigerOptions } from './tiger.ts';
export { sgd, signsgd, signum, softsign, type SGDOptions, type SignumOptions, type SoftSignOptions } from './momentum.ts';
export { createOptimizer, OPTIMIZERS, OPTIMIZER_NAMES, optimizerEntry, type OptimizerName } from './registry.ts';
export { describeSchema, parseOptionText, type Schema } from './options.ts';
export { loadStateTensors, stateBytes, stateMetadata, stateTensors } from './state.ts';

/**
 * Keel's library entry point (`import … from 'keel'`): the optimizers, to drive on your own
 * Float32Arrays, the controller (step reports in, decisions out) for any training loop, plus the
 * kernels, the model and the safetensors reader/writer they build on.
 */
export * from './optim/index.ts';
export { nativeKernels } from './kernels/native.ts';
export { referenceKernels } from './kernels/reference/index.ts';
export type { Floats, Kernels } from './kernels/types.ts';
export { GPT } from './model/gpt.ts';
export { CONFIGS, type GPTConfig } from './model/config.ts';
export { paramLayout, type ParamLayout, type ParamSpec } from './model/params.ts';
export { readSafetensors, writeSafetensors } from './io/safetensors.ts';
export { UserError } from './errors.ts';
export { Controller, type ControllerState, type RestorePoint } from './control/controller.ts';
export { replayControlLog, type ReplayResult } from './control/replay.ts';
export { defaultPolicy, RUNGS, type Decision, type DecisionKind, type LrChange, type NoiseSums, type Policy, type RunFacts, type StepReport } from './control/types.ts';

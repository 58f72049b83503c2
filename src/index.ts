/**
 * Keel's library entry point (`import … from 'keel'`, compiled to dist/index.js): the pieces
 * the CLI is built from, for your own loop or tools.
 */
// Optimizers over one flat Float32Array of parameters (init/step; factories, registry, state I/O).
export * from './optim/index.ts';
// The controller: step reports in, decisions out (spikes, recovery ladder, batch ramp, LR rule).
export { Controller, type ControllerState, type RestorePoint } from './control/controller.ts';
export { replayControlLog, type ReplayResult } from './control/replay.ts';
export {
  defaultPolicy,
  RUNGS,
  type Decision,
  type DecisionKind,
  type LrChange,
  type NoiseSums,
  type Policy,
  type RunFacts,
  type StepReport,
} from './control/types.ts';
// Monitors: spike detection (online and over a whole log) and the gradient noise scale.
export { analyzeSeries, SPIKE_DEFAULTS, SpikeDetector, type AnalyzeOptions, type SpikeEvent, type SpikeOptions } from './monitor/spikes.ts';
export { NoiseScale, noiseFromSums, type NoiseEstimate, type NoiseRecord } from './monitor/noise_scale.ts';
// Batch-size ramps and LR rules for a batch.
export { batchAt, BATCH_PRESETS, parseBatchSpec, type BatchSpec } from './schedule/batch.ts';
export { lrForBatch, lrScale, SCALING_RULES, type ScalingRule } from './schedule/rules.ts';
// Weight averaging: LAWA and EMA in training, streaming averages of safetensors checkpoints.
export { Lawa } from './average/lawa.ts';
export { Ema } from './average/ema.ts';
export { averageCheckpoints, type AverageOptions, type AverageSummary } from './average/stream.ts';
export { OUTPUT_DTYPES, type OutputDtype } from './average/plan.ts';
// Files: safetensors, training logs (Keel's metrics.jsonl, JSONL, CSV, llm.c, TensorBoard), TensorBoard events.
export { readSafetensors, writeSafetensors } from './io/safetensors.ts';
export { readLog, type RunLog } from './io/logs.ts';
export { MetricsLog, readMetrics } from './io/metrics.ts';
export { TensorBoardWriter } from './io/tensorboard.ts';
// Data: corpora, tokenizers (bytes, GPT-2 BPE), nanoGPT token files, the deterministic batch cursor.
export { corpusSplits, loadCorpus, type Corpus } from './data/corpus.ts';
export { TOKENIZERS, tokenizerOf, type Tokenizer, type TokenizerName } from './data/tokenizer.ts';
export { TokenFile, type Tokens } from './data/tokens.ts';
export { Batcher, evalWindows, type Batch } from './data/batcher.ts';
// The model, its kernels and training.
export { nativeKernels } from './kernels/native.ts';
export { referenceKernels } from './kernels/reference/index.ts';
export type { Floats, Kernels } from './kernels/types.ts';
export { GPT } from './model/gpt.ts';
export { CONFIGS, type GPTConfig } from './model/config.ts';
export { paramLayout, type ParamLayout, type ParamSpec } from './model/params.ts';
export { sample } from './model/sample.ts';
export { loadModel, saveModel } from './model/checkpoint.ts';
export { train, type ProgressSink, type TrainHooks, type TrainOptions, type TrainSummary } from './train/trainer.ts';
export { withDefaults } from './train/options.ts';
export { UserError } from './errors.ts';

/**
 * The options of one training run (`keel train`'s flags, the experiments' settings) and what
 * the controller takes from them: its policy and the run's facts (src/control/types.ts).
 */
import type { Policy, RunFacts } from '../control/types.ts';
import type { GPTConfig } from '../model/config.ts';
import type { ScalingRule } from '../schedule/rules.ts';
import type { StabilityOptions } from './guards.ts';
import type { ScheduleKind } from './schedule.ts';

export interface TrainOptions extends StabilityOptions {
  /** Preset name or JSON path the model config came from (for the record). */
  configName: string;
  config: GPTConfig;
  /** Corpus file or directory; undefined = the built-in State of the Union corpus. */
  data?: string;
  steps: number;
  /** Sequences per micro-batch. */
  batch: number;
  /** Micro-batches per optimizer step. */
  accum: number;
  lr: number;
  minLr: number;
  warmup: number;
  schedule: ScheduleKind;
  /** With schedule 'piecewise': (step, multiplier of lr) points. */
  lrPoints?: [number, number][];
  /** Optimizer name (src/optim/registry.ts) and its options except lr (the schedule's). */
  optimizer: string;
  optimizerOptions: Record<string, unknown>;
  /** Batch-size ramp (src/schedule/batch.ts spec; undefined = constant batch × accum). */
  batchRamp?: string;
  /** LR rescaling when the batch changes (default none), relative to the final batch. */
  lrRule?: ScalingRule;
  /** B_noise in sequences for the sgd/signsgd/softsign rules. */
  bNoise?: number;
  /** Gradient noise scale from the micro-batches (default on; needs ≥ 2 micro-batches per step). */
  noiseScale?: boolean;
  /** Clip the global gradient norm to this (0 = off). */
  clip: number;
  evalEvery: number;
  evalTokens: number;
  checkpointEvery: number;
  keep: number;
  out: string;
  seed: number;
}

/** The controller's policy for these options (unset fields: the controller's defaults). */
export function policyOf(o: TrainOptions): Partial<Policy> & Pick<Policy, 'on_spike'> {
  return {
    on_spike: o.onSpike ?? 'none',
    spike_window: o.spikeWindow,
    spike_threshold: o.spikeThreshold,
    spike_jump: o.spikeJump,
    max_skips: o.maxSkips,
    rollback_steps: o.rollbackSteps,
    skip_batches: o.skipBatches,
    max_rollbacks: o.maxRollbacks,
    max_lr_cuts: o.maxLrCuts,
    batch_ramp: o.batchRamp,
    lr_rule: o.lrRule,
    b_noise: o.bNoise,
  };
}

/** The facts of the run the controller needs. */
export function runFactsOf(o: TrainOptions, params: number, eps: number): RunFacts {
  return { steps: o.steps, batch: o.batch * o.accum, micro_batch: o.batch, seq_len: o.config.blockSize, params, eps };
}

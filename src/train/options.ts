/**
 * The options of one training run, resolved once: one table (TRAIN_OPTIONS) names every option's
 * group, default and `keel train` flag; the CLI (new runs and --resume, where the saved options
 * are the defaults and given flags override them) and the experiments (withDefaults) all go
 * through it. Also what the controller takes from the options: its policy and the run's facts.
 *
 * The options stay one flat object, grouped by the table rather than nested: trainer.json and
 * config.json hold them as they are, so runs written by earlier versions resume unchanged.
 */
import path from 'node:path';
import type { Policy, RunFacts } from '../control/types.ts';
import type { GPTConfig } from '../model/config.ts';
import type { TokenizerName } from '../data/tokenizer.ts';
import type { MatmulPrecision } from '../kernels/types.ts';
import type { ScalingRule } from '../schedule/rules.ts';
import type { StabilityOptions } from '../guard/guards.ts';
import { parsePoints, parseSchedule, type ScheduleKind } from '../schedule/lr.ts';

export interface TrainOptions extends StabilityOptions {
  /** Preset name or JSON path the model config came from (for the record). */
  configName: string;
  config: GPTConfig;
  /** Matmul operands in bf16 (fp32 accumulation, master weights, gradients and state), or fp32 (default). */
  precision?: MatmulPrecision;
  /** Corpus file or directory; undefined = the built-in State of the Union corpus. */
  data?: string;
  /** Tokenizer (src/data/tokenizer.ts); undefined = gpt2 for nanoGPT token files, else bytes. */
  tokenizer?: TokenizerName;
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
  /** Also write the metrics as TensorBoard scalars into this directory. */
  tensorboard?: string;
  seed: number;
}

/** The controller's policy for these options (unset fields: the controller's defaults). */
export function policyOf(o: TrainOptions): Partial<Policy> & Pick<Policy, 'on_spike'> {
  return {
    on_spike: o.onSpike ?? 'none',
    spike_window: o.spikeWindow,
    spike_threshold: o.spikeThreshold,
    spike_jump: o.spikeJump,
    spike_min_rise: o.spikeMinRise,
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

const OPTION_GROUPS = ['model', 'data', 'schedule', 'optimizer', 'stability', 'averaging', 'output'] as const;
type OptionGroup = (typeof OPTION_GROUPS)[number];

interface OptionSpec {
  group: OptionGroup;
  /** Default of a new run (absent: unset, i.e. off or the component's own default, such as on_spike none). */
  default?: unknown;
  /** The `keel train` option attribute (commander's camelCase of the flag) when it differs from the key; null: no plain flag. */
  flag?: string | null;
  /** From the flag's value to the option's (parsing that needs more than the flag's own check). */
  parse?: (v: unknown) => unknown;
}

/**
 * Every option of a run, in resolution order. Options the CLI derives from several flags or
 * from other options (the model, the optimizer and its lr, the LAWA pair, the run directory)
 * have `flag: null` and are resolved by the CLI (src/cli/train.ts) before the rest.
 */
const TRAIN_OPTIONS: { readonly [K in keyof Required<TrainOptions>]: OptionSpec } = {
  configName: { group: 'model', flag: null },
  config: { group: 'model', flag: null },
  precision: { group: 'model' },
  data: { group: 'data', parse: (v) => path.resolve(String(v)) },
  tokenizer: { group: 'data' },
  batch: { group: 'data', default: 16 },
  accum: { group: 'data', default: 1 },
  seed: { group: 'data', default: 1337 },
  steps: { group: 'schedule', default: 1400 },
  lr: { group: 'schedule', flag: null },
  minLr: { group: 'schedule', flag: null },
  warmup: { group: 'schedule', default: 100 },
  schedule: { group: 'schedule', default: 'cosine', parse: (v) => parseSchedule(String(v)) },
  lrPoints: { group: 'schedule', parse: (v) => parsePoints(String(v)) },
  batchRamp: { group: 'schedule' },
  lrRule: { group: 'schedule' },
  bNoise: { group: 'schedule' },
  noiseScale: { group: 'schedule' },
  optimizer: { group: 'optimizer', flag: null },
  optimizerOptions: { group: 'optimizer', flag: null },
  clip: { group: 'optimizer', default: 1 },
  optSchedules: { group: 'optimizer', flag: 'optSchedule' },
  spikeWindow: { group: 'stability' },
  spikeThreshold: { group: 'stability' },
  spikeJump: { group: 'stability' },
  spikeMinRise: { group: 'stability' },
  onSpike: { group: 'stability' },
  maxSkips: { group: 'stability' },
  rollbackSteps: { group: 'stability' },
  skipBatches: { group: 'stability' },
  maxRollbacks: { group: 'stability' },
  maxLrCuts: { group: 'stability' },
  faults: { group: 'stability', flag: 'fault' },
  embedGradShrink: { group: 'stability' },
  embedGradShrinkRamp: { group: 'stability' },
  zLoss: { group: 'stability', flag: 'zloss' },
  gradPrecision: { group: 'stability' },
  lossScale: { group: 'stability' },
  diagEvery: { group: 'stability' },
  lawaK: { group: 'averaging', flag: null },
  lawaEvery: { group: 'averaging', flag: null },
  ema: { group: 'averaging' },
  emaWarmup: { group: 'averaging' },
  evalEvery: { group: 'output', default: 250 },
  evalTokens: { group: 'output', default: 65536 },
  checkpointEvery: { group: 'output', default: 500 },
  keep: { group: 'output', default: 3 },
  out: { group: 'output', flag: null },
  tensorboard: { group: 'output', parse: (v) => path.resolve(String(v)) },
};

/** A new run's default of an option (for flags' defaults and --help). */
export function defaultOf<K extends keyof TrainOptions>(key: K): TrainOptions[K] {
  return TRAIN_OPTIONS[key].default as TrainOptions[K];
}

/**
 * The options with a plain flag, resolved: the flag's value when given, else (resuming) the saved
 * value, else the table's default. `flags` are commander's parsed values; `given(attr)` says
 * whether the user typed that flag.
 */
export function resolveFlagOptions(flags: Record<string, unknown>, given: (attr: string) => boolean, saved?: Record<string, unknown>): Partial<TrainOptions> {
  const out: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(TRAIN_OPTIONS) as [string, OptionSpec][]) {
    if (spec.flag === null) continue;
    const attr = spec.flag ?? key;
    const v =
      given(attr) || !saved || saved[key] === undefined
        ? flags[attr] !== undefined && spec.parse
          ? spec.parse(flags[attr])
          : (flags[attr] ?? spec.default)
        : saved[key];
    if (v !== undefined) out[key] = v;
  }
  return out as Partial<TrainOptions>;
}

/** A run's options from the required ones and any others; the rest take the table's defaults (the experiments). */
export function withDefaults(o: Pick<TrainOptions, 'configName' | 'config' | 'lr' | 'out'> & Partial<TrainOptions>): TrainOptions {
  const defaults = Object.fromEntries(
    Object.entries(TRAIN_OPTIONS)
      .filter(([, s]) => s.default !== undefined)
      .map(([k, s]) => [k, s.default]),
  );
  return { optimizer: 'adamw', optimizerOptions: {}, minLr: o.lr / 10, ...defaults, ...definedOnly(o) } as TrainOptions;
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

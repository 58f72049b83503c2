/**
 * What `keel experiment batch` writes to OUT/results.json and each run's summary.json: the
 * grid's defaults, and the types that the runs (src/experiments/batch.ts) and the report
 * (src/experiments/batch_report.ts) share.
 */
import type { GPTConfig } from '../model/config.ts';
import type { ScalingRule } from '../schedule/rules.ts';
import { sig3 } from './common.ts';

export const DEFAULT_BATCHES = [2, 4, 8, 16, 32, 64];
/** 1e-4 … 0.2 in ×√2 steps (3 significant digits). */
export const DEFAULT_LRS = Array.from({ length: 23 }, (_, k) => sig3(1e-4 * 2 ** (k / 2)));
export const DEFAULT_LR_START = 1e-3;
/** Tokens per run: 2^18 (the largest default batch, 64 × 64 tokens, gets 64 steps; B = 2 gets 2048). */
export const DEFAULT_TOKENS = 262144;
export const TARGET_MARGIN = 0.05;
/** Final losses this close (nats) to the best are a tie for one seed. */
export const NEAR_TIE = 0.01;
export const RULES: ScalingRule[] = ['none', 'linear', 'sqrt', 'sgd', 'signsgd', 'softsign'];
export interface BatchSettings {
  configName: string;
  config: GPTConfig;
  data: string | null;
  tokens: number;
  evalTokens: number;
  evalPoints: number;
  /** Linear warm-up: this fraction of each run's steps (at least 1). */
  warmupFraction: number;
  schedule: 'constant';
  clip: number;
  optimizer: 'adamw';
  pilotBatch: number;
  pilotAccum: number;
  pilotSteps: number;
  pilotLr: number;
  pilotEps: number;
  seed: number;
  initialLoss: number;
  threads: number;
}

export interface EvalPoint {
  step: number;
  val_loss: number;
}

/** summary.json of one sweep run. */
export interface BatchRunRecord {
  eps: number;
  batch: number;
  lr: number;
  steps: number;
  tokens: number;
  diverged: boolean;
  val_loss: number | null;
  /** min(val_loss, L0); L0 when diverged. */
  final_loss: number;
  /** The evaluations over the run (step, val loss). */
  evals: EvalPoint[];
  /** Last logged b_simple (sequences) and median gradient RMS of the second half. */
  b_simple: number | null;
  /** (step, b_simple) at about evalPoints steps along the run: B_simple at the target loss. */
  b_curve?: [number, number][];
  grad_rms: number | null;
  wall_seconds: number;
  error?: string;
}

export interface PilotRecord {
  batch: number;
  accum: number;
  steps: number;
  lr: number;
  eps: number;
  b_simple: number | null;
  b_simple_final: number | null;
  grad_rms: number | null;
  val_loss: number | null;
  /** (step, b_simple) for the report. */
  curve: [number, number][];
  wall_seconds: number;
}

export interface BatchRow {
  batch: number;
  steps: number;
  lrs_tried: number[];
  best_lr: number | null;
  best_loss: number | null;
  /** The best lr is at the edge of the grid (the optimum may lie beyond). */
  at_grid_edge: boolean;
  /** Lowest and highest lr whose final loss is within NEAR_TIE nats of the best: how flat the valley is. */
  near_best_lrs: [number, number] | null;
  steps_to_target: number | null;
  examples_to_target: number | null;
  tokens_to_target: number | null;
  b_simple: number | null;
  /** The online b_simple of the best run at its crossing of the target (interpolated). */
  b_simple_at_target: number | null;
}

export interface CritFit {
  s_min: number;
  e_min: number;
  b_crit: number;
  /** rms of log(S_fit/S) over the batches. */
  rms_log: number;
  points: number;
}

export interface RuleFit {
  rule: ScalingRule;
  /** lr at B = 1 of the fitted curve (the constant factor). */
  scale: number;
  /** rms of log2(lr_best/lr_rule) over B. */
  rms_log2: number;
}

export interface EpsResult {
  eps: number;
  rows: BatchRow[];
  complete: boolean;
  target: number | null;
  fit: CritFit | null;
  /** B_crit / B_simple (pilot). */
  ratio: number | null;
  /** Median over the batches of b_simple at the target crossing, and B_crit / it. */
  b_simple_at_target: number | null;
  ratio_at_target: number | null;
  rules: RuleFit[];
  best_rule: ScalingRule | null;
  /** Slope of log lr_best vs log B (least squares): 0 = flat, 0.5 = sqrt, 1 = linear. */
  slope: number | null;
  /** Batch with the largest best lr when it is interior (a peak), else null. */
  peak_batch: number | null;
}

export interface BatchResults {
  version: 1;
  experiment: 'batch';
  settings: BatchSettings;
  grid: { batches: number[]; lrs: number[]; eps_values: number[]; lr_start: number; target_margin: number; target_override: number | null };
  params: number;
  pilot: PilotRecord | null;
  b_simple: number | null;
  grad_rms: number | null;
  complete: boolean;
  interrupted: boolean;
  eps: EpsResult[];
  runs: (BatchRunRecord & { run_dir: string })[];
  wall_seconds: number;
  updated: string;
}

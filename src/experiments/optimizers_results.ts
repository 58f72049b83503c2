/**
 * What `keel experiment optimizers` writes to OUT/results.json and each run's summary.json:
 * the types and constants that the runs (src/experiments/optimizers.ts) and the report
 * (src/experiments/optimizers_report.ts) share.
 */
import type { GPTConfig } from '../model/config.ts';

/** What results.json records about how the runs were made; a reused `out` must match it. */
export interface OptimizerExperimentSettings {
  configName: string;
  config: GPTConfig;
  data: string | null;
  steps: number;
  sweepSteps: number;
  batch: number;
  evalTokens: number;
  evalEvery: number;
  seed: number;
  schedule: 'cosine';
  clip: number;
}

/** summary.json of one run directory. */
export interface OptimizerRunRecord {
  optimizer: string;
  kind: 'sweep' | 'final';
  lr: number;
  steps: number;
  status: 'ok' | 'diverged';
  /** null when diverged (it scores as +∞). */
  val_loss: number | null;
  train_loss: number | null;
  tokens_per_s: number | null;
  /** Seconds in training steps (evaluation and checkpoints excluded). */
  seconds: number | null;
  /** Wall-clock seconds of the whole run. */
  wall_seconds: number;
  params: number;
  state_bytes: number;
  state_bytes_per_param: number;
  error?: string;
}

export interface SweepPoint {
  lr: number;
  factor: number;
  /** null = diverged (+∞). */
  val_loss: number | null;
  diverged: boolean;
  run_dir: string;
}

export interface OptimizerResult {
  optimizer: string;
  recommended_lr: number;
  /** Options besides lr, as the runs used them. */
  options: Record<string, unknown>;
  sweep: SweepPoint[];
  /** null until the sweep is complete, or when every sweep run diverged. */
  best_lr: number | null;
  /** The best lr is the smallest or largest of the grid: the optimum may lie outside it. */
  best_at_edge: boolean;
  status: 'ok' | 'diverged' | 'all_sweep_runs_diverged' | 'incomplete';
  /** Final run at best_lr (null until it ran, or when it diverged). */
  val_loss: number | null;
  train_loss: number | null;
  /** Optimizer state of the final run (from the trainer's actual buffers). */
  state_bytes: number | null;
  state_bytes_per_param: number | null;
  /** This optimizer's state bytes / AdamW's; null without both. */
  state_ratio_vs_adamw: number | null;
  /** Final val loss / AdamW's; null without both. */
  val_loss_ratio_vs_adamw: number | null;
  tokens_per_s: number | null;
  seconds: number | null;
  run_dir: string | null;
}

/** The paper's claim for Adafactor: state ≤ 5% of AdamW's at ≤ 3% higher validation loss. */
export interface AdafactorTarget {
  state_limit: number;
  val_loss_limit: number;
  /** adafactor / adamw; null when either final run is missing. */
  state_ratio: number | null;
  val_loss_ratio: number | null;
  adafactor_val_loss: number | null;
  adamw_val_loss: number | null;
  state_ok: boolean | null;
  val_loss_ok: boolean | null;
  met: boolean | null;
}

export interface OptimizerExperimentResults {
  version: 1;
  experiment: 'optimizers';
  settings: OptimizerExperimentSettings;
  lr_factors: number[];
  params: number;
  complete: boolean;
  interrupted: boolean;
  optimizers: OptimizerResult[];
  adafactor_target: AdafactorTarget;
  updated: string;
}

export const DEFAULT_LR_FACTORS = [1 / 3, 1, 3];
export const STATE_TARGET = 0.05;
export const VAL_LOSS_TARGET = 0.03;

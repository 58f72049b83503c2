/**
 * What `keel experiment lawa` writes to OUT/results.json: the types that the runs
 * (src/experiments/lawa.ts) and the report (src/experiments/lawa_report.ts) share.
 */
import type { GPTConfig } from '../model/config.ts';

export interface Curve {
  step: number[];
  raw: number[];
  lawa: (number | null)[];
  ema: (number | null)[];
}

export interface LawaRun {
  lr: number;
  run_dir: string;
  curve: Curve;
  /** For loss targets reached by the raw weights: first evaluation step of raw and of LAWA/EMA. */
  targets: { loss: number; raw: number; lawa: number | null; ema: number | null }[];
  /** Σ over evaluations of the rises of the validation loss (a spike measure), and the largest rise. */
  rises: Record<'raw' | 'lawa' | 'ema', { total: number; max: number }>;
  final: Record<'raw' | 'lawa' | 'ema', number | null>;
  best: Record<'raw' | 'lawa' | 'ema', number | null>;
}

/** How the runs were made (the options of src/experiments/lawa.ts with their defaults filled in). */
interface LawaSettings {
  configName: string;
  lrs: number[];
  steps: number;
  batch: number;
  k: number;
  every: number;
  ema: number;
  evalEvery: number;
  evalTokens: number;
  seed: number;
  config: GPTConfig;
  data: string | null;
}

export interface LawaResults {
  settings: LawaSettings;
  runs: LawaRun[];
}

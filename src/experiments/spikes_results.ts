/**
 * What `keel experiment spikes` writes to OUT/results.json and each run's summary.json: the
 * grid's variants and defaults, and the types that the runs (src/experiments/spikes.ts) and the
 * report (src/experiments/spikes_report.ts) share.
 */
import type { GPTConfig } from '../model/config.ts';
import type { ControlCounts, LeadStat, SpikeEventInfo } from '../monitor/spike_log.ts';
import { sig3 } from './common.ts';

export const SPIKE_VARIANTS = ['baseline', 'skip', 'rollback', 'qk-norm', 'z-loss', 'embed-shrink', 'atan2', 'eps-zero'] as const;
export type SpikeVariant = (typeof SPIKE_VARIANTS)[number];

/** What each variant changes relative to the baseline (AdamW, ε as given, recovery off). */
export const VARIANT_DOC: Record<SpikeVariant, string> = {
  baseline: 'AdamW, no mitigation',
  skip: 'skip the step on a loss or grad-norm spike (onSpike skip)',
  rollback: 'PaLM rollback and data skip on a spike (onSpike rollback)',
  'qk-norm': 'QK-layernorm (Wortsman et al.)',
  'z-loss': 'z-loss 1e-4·(log Z)² (Wortsman et al.)',
  'embed-shrink': 'token-embedding gradient × 0.1 (GLM-130B)',
  atan2: 'Adam-atan2: ε-free update atan2(m̂, √v̂)',
  'eps-zero': 'ε = 0 with 0/0 := 0',
};

/** The default model: small enough that the whole default grid takes minutes on 2 cores. */
export const SPIKE_CONFIG: GPTConfig = Object.freeze({ nLayer: 2, nHead: 4, nEmbd: 64, blockSize: 64, vocabSize: 256 });
export const SPIKE_CONFIG_NAME = 'spikes-small';
/**
 * 1e-3 … 1 in quarter decades (×1.78; 3 significant digits): three orders of magnitude, and
 * fine enough near the edge of stability (0.3–0.6 on the default model) that runs which spike
 * and recover, or spike and then diverge, fall on the grid (a ×√10 grid jumped from runs that
 * never spiked at 0.316 to one that never learned at 1).
 */
export const DEFAULT_LRS = Array.from({ length: 13 }, (_, k) => sig3(10 ** (-3 + k / 4)));
export const DEFAULT_EPS = [1e-8, 1e-5];
export const Z_LOSS = 1e-4;
export const EMBED_SHRINK = 0.1;
/** Bump when the offline analysis changes: older summaries are re-analysed from their metrics.jsonl. */
export const ANALYSIS_VERSION = 7;

/** What results.json records about how each run was made; a reused `out` must match it. */
export interface SpikeSettings {
  configName: string;
  config: GPTConfig;
  data: string | null;
  steps: number;
  batch: number;
  warmup: number;
  schedule: 'constant';
  clip: number;
  optimizer: 'adamw';
  evalTokens: number;
  seed: number;
  spikeWindow: number;
  spikeThreshold: number;
  spikeJump: number;
  diagEvery: number;
  zLoss: number;
  embedGradShrink: number;
  /** L0 = ln(vocabSize): the loss of a uniform prediction, the cap of a diverged run. */
  initialLoss: number;
  /** Kernel threads (KEEL_THREADS): training is bit-reproducible for a given seed and thread count. */
  threads: number;
}

/** summary.json of one run. */
export interface SpikeRunRecord {
  variant: SpikeVariant;
  eps: number;
  lr: number;
  steps: number;
  analysis_version: number;
  status: 'ok' | 'diverged';
  diverged: boolean;
  /** Step where the divergence began (null: not diverged, or no such stretch in the log). */
  diverged_at: number | null;
  /** Raw final validation loss; null when non-finite or the run stopped. */
  val_loss: number | null;
  train_loss: number | null;
  /** min(val_loss, L0); L0 when diverged. What LR sensitivity uses. */
  final_loss: number;
  first_loss: number | null;
  /** Spikes found offline before any divergence (the early excursion, if any, included). */
  spikes: number;
  events: SpikeEventInfo[];
  control: Record<LeadStat, ControlCounts>;
  /** The trainer's own detections (loss and grad norm) and recovery actions. */
  online_spikes: number;
  skipped_steps: number;
  rollbacks: number;
  /** Training-loss series in the order the steps ran (4 significant digits; null = non-finite). */
  loss_curve: (number | null)[];
  tokens_per_s: number | null;
  wall_seconds: number;
  error?: string;
}

export type SpikeRunResult = Omit<SpikeRunRecord, 'loss_curve'> & { run_dir: string };

export interface StatLeadSummary {
  stat: LeadStat;
  /** Spikes (and divergences) where the test could run, those with a precursor, their fraction. */
  testable: number;
  with_precursor: number;
  fraction: number | null;
  median_lead: number | null;
  /** The same test at ordinary steps: false-alarm rate. */
  control_tested: number;
  control_flagged: number;
  control_fraction: number | null;
}

export interface LeadSummary {
  spikes: number;
  testable: number;
  /** Spikes where at least one statistic moved. */
  with_any_precursor: number;
  any_fraction: number | null;
  median_lead: number | null;
  per_stat: StatLeadSummary[];
}

export interface VariantResult {
  /** "baseline", "skip", …; a further ε appears as its own entry with the same variant. */
  key: string;
  variant: SpikeVariant;
  eps: number;
  label: string;
  description: string;
  /** Runs done / planned. */
  runs: number;
  planned: number;
  complete: boolean;
  /** E over the lr grid of [min(final, L0) − min final]; null until the grid is complete. */
  lr_sensitivity: number | null;
  best_loss: number | null;
  best_lr: number | null;
  /** Spikes of all runs, early excursions included; and those early excursions alone. */
  spikes: number;
  early_spikes: number;
  runs_with_spikes: number;
  diverged: number;
  skipped_steps: number;
  rollbacks: number;
  lead: LeadSummary;
}

export interface SpikeResults {
  version: 1;
  experiment: 'spikes';
  settings: SpikeSettings;
  grid: { lrs: number[]; eps_values: number[]; variants: SpikeVariant[]; runs: number; description: string };
  params: number;
  complete: boolean;
  interrupted: boolean;
  runs: SpikeRunResult[];
  variants: VariantResult[];
  lead: LeadSummary;
  /** Seconds of all the runs' wall time (including runs done by earlier invocations). */
  wall_seconds: number;
  updated: string;
}

/**
 * `keel experiment spikes` as a library: provoke loss spikes on a small
 * model the way Wortsman et al. (2023) did — an lr sweep over several orders of magnitude with
 * no warm-up and a constant lr — then rerun the sweep with each mitigation, and measure
 *
 *   - spikes per run, counted offline from the training-loss series (analyzeSeries, the same
 *     detector settings for every run, recovery on or off);
 *   - the final validation loss, capped at the initial loss L0 = ln(vocab) for a run that
 *     diverged (Wortsman's convention);
 *   - LR sensitivity (Wortsman et al.): E_η[min(ℓ(η), L0) − min_η' ℓ(η')] over the lr grid,
 *     per variant, with ℓ the final validation loss;
 *   - whether the Adam diagnostics (src/monitor/diagnostics.ts) moved before each spike, and
 *     how many steps before (the lead time), next to how often the same test fires at ordinary
 *     steps without a spike (the control, i.e. the false-alarm rate).
 *
 * The grid: every variant runs the whole lr grid at the first ε of `epsValues` (the small one);
 * the baseline also runs it at every further ε, so the ε effect is visible without running
 * every mitigation twice. Every run is a normal run directory:
 *
 *   out/<variant>/eps-<ε>/lr-<lr>/   metrics.jsonl, config.json, report.html, summary.json
 *   out/results.json                 settings, grid, per-run and per-variant results (rewritten after every run)
 *   out/report.html                  tables, final loss vs lr, spikes per run, lead times, what was measured
 *
 * Checkpoints are deleted after each run (rollback uses in-memory snapshots). A finished run
 * leaves summary.json; running again with the same `out` and settings reuses it and redoes only
 * what is missing (an interrupted run is started over). The lr grid, ε values and variants are
 * not settings: a rerun with a wider grid reuses the runs it shares with the earlier one.
 *
 * Spike counting. The training-loss series is taken in the order the steps ran, except that
 * the steps a rollback abandons are dropped (its trigger step is kept, so a spike that
 * triggered a rollback is still counted, and the replay does not look like a jump), and analysed with a window of `spikeWindow` steps, threshold 6σ
 * and a 50 % jump over the EMA (the trainer's detector defaults), recovery back within 2σ.
 * The detector is blind while its window fills, which is exactly when a run without warm-up
 * blows up (at a high lr the loss climbs far above its initial value in the first steps and
 * comes back). So an early excursion counts as a spike too: the first loss after step 1,
 * within the first `spikeWindow` steps, more than EARLY_MARGIN (0.5 nats) above L0, lasting
 * until the loss is back below L0 (kind 'early').
 * A run that diverged (non-finite loss, or a final validation loss ≥ L0: no better than
 * chance) is cut at its divergence onset: the first step at which its loss, having once been
 * below L0 − EARLY_MARGIN, is back at L0 or above, or non-finite (step 1 when it never got
 * there). Spikes are counted before the onset only; the divergence itself is listed as an
 * event of kind 'divergence' (not counted in `spikes`).
 *
 * Lead time. For each spike (early excursion, divergence) starting at step S, and each watched
 * statistic (LEAD_STATS), take the diagnosed values before S — excluding the first
 * `spikeWindow` steps (early-training transients) and steps inside an earlier spike — and find
 * the earliest diagnosed step s_j such that every value from s_j through the last diagnosed
 * step s_k before S lies outside mean ± 3σ of all the diagnosed values before s_j (the
 * baseline; at least MIN_BASELINE = 8 of them). The last diagnosed step must be within
 * 2·diagEvery steps of S (else there is no coverage), and s_k needs MIN_BASELINE values before
 * it (else the event is not testable). Lead time = S − s_j; none when even s_k is inside the
 * band. A statistic that merely drifts as training goes on eventually leaves the band of its
 * own early values too; the control measures how often that happens: it repeats the test at
 * every ordinary diagnosed step c — past the first `spikeWindow` steps, not inside a spike,
 * and with no spike starting within the next `spikeWindow` steps — as if a spike started at
 * c + 1. The fraction of those that "have a precursor" is the false-alarm rate the precursor
 * fraction must beat.
 */
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.ts';
import { checkCorpusSize, loadCorpus } from '../data/corpus.ts';
import { readMetrics, type MetricsRecord } from '../io/metrics.ts';
import { nativeKernels } from '../kernels/native.ts';
import { validateConfig, type GPTConfig } from '../model/config.ts';
import { paramLayout } from '../model/params.ts';
import { formatNumber } from '../report/format.ts';
import { analyzeSeries, SPIKE_DEFAULTS } from '../monitor/spikes.ts';
import { createOptimizer } from '../optim/registry.ts';
import { RecoveryExhausted, TrainingDiverged, type TrainOptions } from '../train/trainer.ts';
import { withDefaults } from '../train/options.ts';
import { checkExperimentDir, checkSeed, trainRun, lrDirName, positiveInt, readSummary, sig3, writeResults, writeSummary } from './common.ts';
import { writeSpikeReport } from './spikes_report.ts';
import { ensureOutDir } from '../io/out_dir.ts';

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

/** Statistics watched for precursors: metrics.jsonl keys, `wte.` = the token embedding's own entry in `diag`. */
export const LEAD_STATS = ['diag_update_rms', 'diag_bimodality_max', 'diag_eps_frac', 'diag_cos_g', 'wte.update_rms', 'wte.eps_frac'] as const;
export type LeadStat = (typeof LEAD_STATS)[number];
const WTE = 'transformer.wte.weight';
export const LEAD_SIGMA = 3;
/** Nats above L0 that make an early loss rise an excursion; also what "has learned" means for the divergence onset. */
export const EARLY_MARGIN = 0.5;
/** Diagnosed values the precursor test's baseline needs at least. */
export const MIN_BASELINE = 8;
/**
 * How many diagnosed values before a candidate start form its baseline: all of them (the
 * measured default). A trailing window (e.g. 8) ignores slow drift, but on the default
 * experiment it gave more false alarms at ordinary steps (update RMS 15 % vs 8 %) for the
 * same precursor fraction: the statistics are smooth but wander.
 */
export const BASELINE_WINDOW = Infinity;
/** Bump when the offline analysis changes: older summaries are re-analysed from their metrics.jsonl. */
export const ANALYSIS_VERSION = 7;

export interface SpikeExperimentOptions {
  out: string;
  /** Default: all of SPIKE_VARIANTS. */
  variants?: string[];
  /** Default DEFAULT_LRS. */
  lrs?: number[];
  /** Default DEFAULT_EPS; the first is the one every variant uses, the others run the baseline only. */
  epsValues?: number[];
  /** Steps per run (default 300). */
  steps?: number;
  /** Sequences per step (default 8). */
  batch?: number;
  /** Linear warm-up steps (default 0: none, to provoke spikes). */
  warmup?: number;
  config?: GPTConfig;
  configName?: string;
  data?: string;
  /** Validation tokens of the final evaluation (default 65536). */
  evalTokens?: number;
  seed?: number;
  /** Spike detector window, online (skip/rollback) and offline (default 32). */
  spikeWindow?: number;
  /** Diagnostics every n steps (default 5). */
  diagEvery?: number;
  progress?: boolean;
  log?: (line: string) => void;
  shouldStop?: () => boolean;
}

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

export interface Precursor {
  /** Steps from the first anomalous diagnosed step to the spike's start; null = no precursor. */
  lead: number | null;
  /** 'up' / 'down': the side of the band the first anomalous value lies on. */
  direction?: 'up' | 'down';
  /** False when there were not enough diagnosed values before it (or none close to it). */
  testable: boolean;
}

export interface SpikeEventInfo {
  /** 'early': the loss rose above L0 + EARLY_MARGIN before the detector's window filled. */
  kind: 'early' | 'spike' | 'divergence';
  /** Training steps (as logged; after a rollback, steps repeat). */
  start: number;
  peak: number;
  end: number | null;
  recovered: boolean;
  /** Peak − pre-spike mean (nats) and in σ; for a divergence, the loss at onset − L0. */
  height: number;
  height_sigma: number | null;
  /** Position in the order the steps ran (1-based). */
  index: number;
  precursors: Record<LeadStat, Precursor>;
  /** Largest lead over the statistics; null when none moved. */
  lead: number | null;
}

export interface ControlCounts {
  /** Ordinary diagnosed steps tested and how many "had a precursor" there. */
  tested: number;
  flagged: number;
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

interface Resolved {
  out: string;
  variants: SpikeVariant[];
  lrs: number[];
  epsValues: number[];
  settings: SpikeSettings;
  progress: boolean;
  log: (line: string) => void;
  shouldStop?: () => boolean;
}

interface Plan {
  variant: SpikeVariant;
  eps: number;
  key: string;
  lrs: number[];
}

function numbers(name: string, values: number[] | undefined, fallback: number[], ok: (x: number) => boolean, what: string): number[] {
  const out = [...new Set((values ?? fallback).map((x) => x))];
  if (out.length === 0) throw new UserError(`${name} is empty: give one or more ${what}`);
  for (const x of out) if (!Number.isFinite(x) || !ok(x)) throw new UserError(`${name} must be ${what}, got ${x}`);
  return out;
}

/** Checks everything the runs need before anything is written; throws UserError naming the problem. */
export function resolveSpikeOptions(o: SpikeExperimentOptions): Resolved {
  const variants = [...new Set(o.variants ?? SPIKE_VARIANTS)];
  if (variants.length === 0) throw new UserError(`--variants is empty: name one or more of ${SPIKE_VARIANTS.join(', ')}`);
  for (const v of variants) {
    if (!(SPIKE_VARIANTS as readonly string[]).includes(v)) throw new UserError(`unknown variant "${v}"; choose from ${SPIKE_VARIANTS.join(', ')}`);
  }
  const lrs = numbers('--lrs', o.lrs, DEFAULT_LRS, (x) => x > 0, 'positive numbers').map(sig3).sort((a, b) => a - b);
  const epsValues = numbers('--eps-values', o.epsValues, DEFAULT_EPS, (x) => x >= 0, 'numbers ≥ 0');
  const config = validateConfig(o.config ?? SPIKE_CONFIG, '--config');
  if (config.qkNorm) throw new UserError('--config: leave qkNorm out; QK-layernorm is the qk-norm variant');
  const steps = positiveInt('--steps', o.steps ?? 300);
  const batch = positiveInt('--batch', o.batch ?? 8);
  const warmup = o.warmup ?? 0;
  if (!Number.isSafeInteger(warmup) || warmup < 0) throw new UserError(`--warmup must be a non-negative integer, got ${warmup}`);
  const evalTokens = positiveInt('--eval-tokens', o.evalTokens ?? 65536);
  if (evalTokens < config.blockSize + 1) {
    throw new UserError(`--eval-tokens ${evalTokens} is too few: one window needs block size + 1 = ${config.blockSize + 1} tokens`);
  }
  const spikeWindow = positiveInt('--spike-window', o.spikeWindow ?? 32);
  if (spikeWindow < 2) throw new UserError(`--spike-window must be at least 2, got ${spikeWindow}`);
  const diagEvery = positiveInt('--diag-every', o.diagEvery ?? 5);
  const seed = checkSeed(o.seed ?? 1337);
  const data = o.data === undefined ? undefined : path.resolve(o.data);
  checkCorpusSize(loadCorpus(data), config.blockSize); // bad data fails here, before out is touched
  for (const eps of epsValues) createOptimizer('adamw', { eps }); // options valid
  return {
    out: path.resolve(o.out),
    variants: variants as SpikeVariant[],
    lrs,
    epsValues,
    settings: {
      configName: o.configName ?? (o.config ? 'custom' : SPIKE_CONFIG_NAME),
      config,
      data: data ?? null,
      steps,
      batch,
      warmup,
      schedule: 'constant',
      clip: 1,
      optimizer: 'adamw',
      evalTokens,
      seed,
      spikeWindow,
      spikeThreshold: SPIKE_DEFAULTS.threshold,
      spikeJump: SPIKE_DEFAULTS.jump,
      diagEvery,
      zLoss: Z_LOSS,
      embedGradShrink: EMBED_SHRINK,
      initialLoss: Math.log(config.vocabSize),
      threads: nativeKernels().threads(),
    },
    progress: o.progress ?? false,
    log: o.log ?? ((line) => process.stderr.write(line + '\n')),
    shouldStop: o.shouldStop,
  };
}

/** The grid: every variant at the first ε, the baseline at every further ε. */
function plansOf(r: Resolved): Plan[] {
  const [small, ...others] = r.epsValues;
  const plans: Plan[] = [];
  for (const variant of r.variants) {
    plans.push({ variant, eps: small, key: variantKey(variant, small, r.epsValues), lrs: r.lrs });
    if (variant === 'baseline') for (const eps of others) plans.push({ variant, eps, key: variantKey(variant, eps, r.epsValues), lrs: r.lrs });
  }
  return plans;
}

function variantKey(variant: SpikeVariant, eps: number, epsValues: number[]): string {
  return eps === epsValues[0] ? variant : `${variant}@eps=${eps}`;
}

function gridDescription(r: Resolved): string {
  const [small, ...others] = r.epsValues;
  const lrs = r.lrs.map(String).join(', ');
  const base = `${r.variants.length} variant(s) (${r.variants.join(', ')}) × ${r.lrs.length} lr (${lrs}) at ε ${formatNumber(small)}`;
  return others.length && r.variants.includes('baseline') ? `${base}; the baseline also at ε ${others.map(formatNumber).join(', ')}` : base;
}

export function runDirOf(out: string, variant: SpikeVariant, eps: number, lr: number): string {
  return path.join(out, variant, `eps-${String(eps)}`, lrDirName(lr));
}

/** The trainer options of one run: the baseline plus the variant's one change. */
export function spikeTrainOptions(s: SpikeSettings, variant: SpikeVariant, eps: number, lr: number, dir: string): TrainOptions {
  const opt: Record<string, unknown> = { eps };
  if (variant === 'atan2') opt.epsMode = 'atan2';
  if (variant === 'eps-zero') opt.epsMode = 'zero';
  return withDefaults({
    configName: s.configName,
    config: variant === 'qk-norm' ? { ...s.config, qkNorm: true } : s.config,
    data: s.data ?? undefined,
    steps: s.steps,
    batch: s.batch,
    accum: 1,
    lr,
    minLr: lr,
    warmup: s.warmup,
    schedule: s.schedule,
    optimizer: s.optimizer,
    optimizerOptions: opt,
    clip: s.clip,
    evalEvery: 0,
    evalTokens: s.evalTokens,
    checkpointEvery: 0,
    keep: 1,
    out: dir,
    seed: s.seed,
    spikeWindow: s.spikeWindow,
    spikeThreshold: s.spikeThreshold,
    spikeJump: s.spikeJump,
    diagEvery: s.diagEvery,
    ...(variant === 'skip' ? { onSpike: 'skip' as const } : {}),
    ...(variant === 'rollback' ? { onSpike: 'rollback' as const } : {}),
    ...(variant === 'z-loss' ? { zLoss: s.zLoss } : {}),
    ...(variant === 'embed-shrink' ? { embedGradShrink: s.embedGradShrink } : {}),
  });
}

// ---------------------------------------------------------------------------------------------
// Offline analysis of one run's log.

/** A training step or a diagnosed step, at its position in the order the steps ran. */
export interface ChronoPoint {
  index: number;
  step: number;
}

export interface RunLog {
  losses: (ChronoPoint & { value: number })[];
  diag: (ChronoPoint & { values: Partial<Record<LeadStat, number>> })[];
}

const finiteOr = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/**
 * The log in the order the steps ran: training lines (`{step, loss, lr, …}`, loss null = NaN)
 * numbered 1, 2, …; a diagnostics line takes the number of the training line of its step just
 * before it (the trainer writes it right after that line).
 *
 * A rollback (`{event: 'rollback', step: n, to}`) abandons steps to+1 … n−1 and replays them
 * from the restored state: those abandoned lines are dropped, the spike step n that triggered
 * it is kept (it was seen), and the replay follows it. So the series is the trajectory the run
 * kept plus each rollback's trigger, with no artificial jump where the state was restored.
 */
export function parseRunLog(records: readonly MetricsRecord[]): RunLog {
  let losses: RunLog['losses'] = [];
  let diag: RunLog['diag'] = [];
  let n = 0;
  for (const r of records) {
    if (r.event === 'rollback' && typeof r.to === 'number') {
      const last = losses.at(-1);
      if (!last) continue;
      let from = losses.length - 2;
      while (from >= 0 && losses[from].step > r.to) from--;
      const dropped = new Set(losses.slice(from + 1, -1).map((p) => p.index));
      losses = [...losses.slice(0, from + 1), last];
      diag = diag.filter((d) => !dropped.has(d.index));
      continue;
    }
    if (typeof r.step !== 'number' || 'event' in r) continue;
    if ('diag' in r) {
      const last = losses.at(-1);
      if (!last || last.step !== r.step) continue;
      const values: Partial<Record<LeadStat, number>> = {};
      const wte = (r.diag as Record<string, Record<string, unknown>> | null)?.[WTE] ?? {};
      for (const stat of LEAD_STATS) {
        const v = stat.startsWith('wte.') ? finiteOr(wte[stat.slice(4)]) : finiteOr(r[stat]);
        if (v !== undefined) values[stat] = v;
      }
      diag.push({ index: last.index, step: r.step, values });
      continue;
    }
    if ('loss' in r && 'lr' in r) {
      const v = typeof r.loss === 'number' ? r.loss : NaN;
      losses.push({ index: ++n, step: r.step, value: v });
    }
  }
  // Number the kept lines 1, 2, … so index differences count steps of the kept series.
  const renumber = new Map(losses.map((p, i) => [p.index, i + 1]));
  return {
    losses: losses.map((p) => ({ ...p, index: renumber.get(p.index)! })),
    diag: diag.filter((d) => renumber.has(d.index)).map((d) => ({ ...d, index: renumber.get(d.index)! })),
  };
}

/**
 * Index (1-based, chronological) of a diverged run's onset: the first step at which the loss,
 * having been below L0 − EARLY_MARGIN at some earlier step (the run had learned something), is
 * back at L0 or above (or non-finite); the first step when it never got there. A diverged run
 * ends at chance level or worse, so its first return there is where the divergence began:
 * later dips below L0 are part of the divergence (large-lr runs oscillate wildly), not spikes.
 */
export function divergenceOnset(losses: readonly { index: number; value: number }[], l0: number): number | null {
  if (losses.length === 0) return null;
  let learned = false;
  for (const p of losses) {
    if (learned && !(p.value < l0)) return p.index;
    if (p.value < l0 - EARLY_MARGIN) learned = true;
  }
  return learned ? null : losses[0].index;
}

function meanStd(xs: readonly number[]): { mean: number; std: number } {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const m2 = xs.reduce((a, b) => a + (b - mean) ** 2, 0);
  return { mean, std: xs.length > 1 ? Math.sqrt(m2 / (xs.length - 1)) : 0 };
}

/**
 * The precursor test for one statistic before a spike at chronological index `start` (see the
 * module comment). `points` are the statistic's diagnosed values in order; `exclude` says which
 * indices may not serve (warm-up, earlier spikes). `coverage`: the last usable value must be at
 * most this many steps before `start`.
 */
export function precursorLead(
  points: readonly { index: number; value: number }[],
  start: number,
  opts: { sigma?: number; baseline?: number; coverage: number; exclude?: (index: number) => boolean },
): Precursor {
  const sigma = opts.sigma ?? LEAD_SIGMA;
  // Infinity: every earlier value is the baseline (at least MIN_BASELINE of them).
  const B = opts.baseline ?? BASELINE_WINDOW;
  const need = Number.isFinite(B) ? Math.max(B, 1) : MIN_BASELINE;
  const pts = points.filter((p) => p.index < start && Number.isFinite(p.value) && !(opts.exclude?.(p.index) ?? false));
  const k = pts.length - 1;
  if (pts.length < need + 1 || start - pts[k].index > opts.coverage) return { lead: null, testable: false };
  // The earliest j whose values j…k all lie outside the band of the (B) values before j.
  for (let j = need; j <= k; j++) {
    const { mean, std } = meanStd(pts.slice(Number.isFinite(B) ? j - B : 0, j).map((p) => p.value));
    const band = sigma * Math.max(std, 1e-12 * Math.abs(mean));
    let all = true;
    for (let i = j; i <= k; i++) {
      if (!(Math.abs(pts[i].value - mean) > band)) {
        all = false;
        break;
      }
    }
    if (all) return { lead: start - pts[j].index, direction: pts[j].value > mean ? 'up' : 'down', testable: true };
  }
  return { lead: null, testable: true };
}

export interface RunAnalysis {
  diverged_at: number | null;
  diverged_index: number | null;
  spikes: number;
  events: SpikeEventInfo[];
  control: Record<LeadStat, ControlCounts>;
  first_loss: number | null;
}

/** Spikes, early excursion, divergence, precursors and control of one run's log. */
export function analyzeRunLog(
  log: RunLog,
  o: { l0: number; window: number; threshold: number; jump: number; diagEvery: number; diverged: boolean; baseline?: number; sigma?: number },
): RunAnalysis {
  const byIndex = new Map(log.losses.map((p) => [p.index, p]));
  const stepAt = (index: number) => byIndex.get(index)?.step ?? index;
  const onset = o.diverged ? divergenceOnset(log.losses, o.l0) : null;
  const healthy = log.losses.filter((p) => onset === null || p.index < onset);
  const early = earlyExcursion(healthy, o.l0, o.window);
  // The detector's spikes; one that starts inside the early excursion is part of it.
  const found = analyzeSeries(healthy.map((p) => ({ step: p.index, value: p.value })), {
    // minRise 0: the counts are those the figures in docs/stability.md#experiment-spikes were measured with.
    metric: 'loss', window: o.window, threshold: o.threshold, jump: o.jump, minRise: 0,
  }).spikes.filter((sp) => !early || sp.start < early.start || sp.start >= (early.end ?? Infinity));
  const coverage = 2 * o.diagEvery;
  /** Intervals [start, end) of spikes (open ones to +∞) in chronological indices. */
  const intervals = [...found.map((sp) => [sp.start, sp.end ?? Infinity] as const), ...(early ? [[early.start, early.end ?? Infinity] as const] : [])];
  const inSpike = (i: number) => intervals.some(([x, y]) => i >= x && i < y);
  const series = Object.fromEntries(
    LEAD_STATS.map((stat) => [stat, log.diag.filter((d) => d.values[stat] !== undefined).map((d) => ({ index: d.index, value: d.values[stat]! }))]),
  ) as Record<LeadStat, { index: number; value: number }[]>;
  const exclude = (i: number) => i <= o.window || inSpike(i);
  const precursorsAt = (start: number): Record<LeadStat, Precursor> =>
    Object.fromEntries(
      LEAD_STATS.map((stat) => [stat, precursorLead(series[stat], start, { coverage, exclude, baseline: o.baseline, sigma: o.sigma })]),
    ) as Record<LeadStat, Precursor>;
  const leadOf = (p: Record<LeadStat, Precursor>) => {
    const leads = Object.values(p).map((x) => x.lead).filter((x): x is number => x !== null);
    return leads.length ? Math.max(...leads) : null;
  };

  const events: SpikeEventInfo[] = [];
  if (early) {
    const precursors = precursorsAt(early.start);
    events.push({
      kind: 'early', start: stepAt(early.start), peak: stepAt(early.peak), end: early.end === null ? null : stepAt(early.end), recovered: early.end !== null,
      height: early.height, height_sigma: null, index: early.start, precursors, lead: leadOf(precursors),
    });
  }
  for (const sp of found) {
    const precursors = precursorsAt(sp.start);
    events.push({
      kind: 'spike', start: stepAt(sp.start), peak: stepAt(sp.peak), end: sp.end === null ? null : stepAt(sp.end), recovered: sp.recovered,
      height: sp.height, height_sigma: Number.isFinite(sp.height_sigma) ? sp.height_sigma : null, index: sp.start, precursors, lead: leadOf(precursors),
    });
  }
  if (onset !== null) {
    const precursors = precursorsAt(onset);
    const v = byIndex.get(onset)!.value;
    events.push({
      kind: 'divergence', start: stepAt(onset), peak: stepAt(onset), end: null, recovered: false,
      height: Number.isFinite(v) ? v - o.l0 : Infinity, height_sigma: null, index: onset, precursors, lead: leadOf(precursors),
    });
  }
  // Control: ordinary diagnosed steps, no spike (or divergence) starting within `window` steps
  // after them (so a precursor's own early part is not counted as a false alarm).
  const starts = events.map((e) => e.index);
  const control = Object.fromEntries(LEAD_STATS.map((stat) => [stat, { tested: 0, flagged: 0 }])) as Record<LeadStat, ControlCounts>;
  const diagIdx = [...new Set(log.diag.map((d) => d.index))];
  for (const c of diagIdx) {
    if (onset !== null && c >= onset) continue;
    if (exclude(c)) continue;
    if (starts.some((st) => st > c && st <= c + o.window)) continue;
    for (const stat of LEAD_STATS) {
      const p = precursorLead(series[stat], c + 1, { coverage, exclude, baseline: o.baseline, sigma: o.sigma });
      if (!p.testable) continue;
      control[stat].tested++;
      if (p.lead !== null) control[stat].flagged++;
    }
  }
  const first = log.losses[0]?.value;
  return {
    diverged_at: onset === null ? null : stepAt(onset),
    diverged_index: onset,
    spikes: found.length + (early ? 1 : 0),
    events,
    control,
    first_loss: first !== undefined && Number.isFinite(first) ? first : null,
  };
}

/**
 * The no-warm-up instability the detector cannot see (its window is not full yet): the first
 * loss after step 1, among the first `window` steps, more than EARLY_MARGIN above L0 (or
 * non-finite); it lasts until the loss is back below L0. Chronological indices; null if none.
 */
export function earlyExcursion(
  losses: readonly { index: number; value: number }[],
  l0: number,
  window: number,
): { start: number; peak: number; end: number | null; height: number } | null {
  const i0 = losses.findIndex((p, i) => i > 0 && p.index <= window && !(p.value <= l0 + EARLY_MARGIN));
  if (i0 < 0) return null;
  let peak = losses[i0];
  let end: number | null = null;
  for (let i = i0; i < losses.length; i++) {
    const p = losses[i];
    if (i > i0 && Number.isFinite(p.value) && p.value < l0) {
      end = p.index;
      break;
    }
    if (Number.isFinite(peak.value) && !(p.value <= peak.value)) peak = p; // NaN counts as the largest
  }
  return { start: losses[i0].index, peak: peak.index, end, height: Number.isFinite(peak.value) ? peak.value - l0 : Infinity };
}

/** LR sensitivity (Wortsman et al.): mean over the grid of min(ℓ, L0) − min ℓ. */
export function lrSensitivity(finalLosses: readonly number[], l0: number): number | null {
  if (finalLosses.length === 0) return null;
  const capped = finalLosses.map((l) => (Number.isFinite(l) ? Math.min(l, l0) : l0));
  const best = Math.min(...capped);
  return capped.reduce((a, l) => a + (l - best), 0) / capped.length;
}

export function median(xs: readonly number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function summarizeLeads(runs: readonly Pick<SpikeRunRecord, 'events' | 'control'>[]): LeadSummary {
  const events = runs.flatMap((r) => r.events);
  const testable = events.filter((e) => Object.values(e.precursors).some((p) => p.testable));
  const withAny = testable.filter((e) => e.lead !== null);
  const per_stat: StatLeadSummary[] = LEAD_STATS.map((stat) => {
    const t = events.filter((e) => e.precursors[stat]?.testable);
    const leads = t.map((e) => e.precursors[stat].lead).filter((x): x is number => x !== null);
    const ct = runs.reduce((a, r) => a + (r.control[stat]?.tested ?? 0), 0);
    const cf = runs.reduce((a, r) => a + (r.control[stat]?.flagged ?? 0), 0);
    return {
      stat, testable: t.length, with_precursor: leads.length, fraction: t.length ? leads.length / t.length : null, median_lead: median(leads),
      control_tested: ct, control_flagged: cf, control_fraction: ct ? cf / ct : null,
    };
  });
  return {
    spikes: events.length,
    testable: testable.length,
    with_any_precursor: withAny.length,
    any_fraction: testable.length ? withAny.length / testable.length : null,
    median_lead: median(withAny.map((e) => e.lead!)),
    per_stat,
  };
}

// ---------------------------------------------------------------------------------------------

function readRecord(dir: string): SpikeRunRecord | undefined {
  return readSummary<SpikeRunRecord>(dir, (r) => (r.status === 'ok' || r.status === 'diverged') && Array.isArray(r.events));
}

const round4 = (x: number): number | null => (Number.isFinite(x) ? Number(x.toPrecision(4)) : null);

/** The record of a finished (or diverged) run from its log and the trainer's numbers. */
function recordOf(
  s: SpikeSettings,
  base: { variant: SpikeVariant; eps: number; lr: number },
  records: readonly MetricsRecord[],
  sum: { val_loss: number | null; train_loss: number | null; tokens_per_s: number | null; wall_seconds: number; error?: string },
): SpikeRunRecord {
  const l0 = s.initialLoss;
  const finiteVal = sum.val_loss !== null && Number.isFinite(sum.val_loss);
  const diverged = sum.error !== undefined || !finiteVal || sum.val_loss! >= l0;
  const log = parseRunLog(records);
  const a = analyzeRunLog(log, { l0, window: s.spikeWindow, threshold: s.spikeThreshold, jump: s.spikeJump, diagEvery: s.diagEvery, diverged });
  const events = records.filter((r) => typeof r.event === 'string');
  return {
    ...base,
    steps: s.steps,
    analysis_version: ANALYSIS_VERSION,
    status: diverged ? 'diverged' : 'ok',
    diverged,
    diverged_at: a.diverged_at,
    val_loss: finiteVal ? sum.val_loss : null,
    train_loss: sum.train_loss !== null && Number.isFinite(sum.train_loss) ? sum.train_loss : null,
    final_loss: diverged ? l0 : Math.min(sum.val_loss!, l0),
    first_loss: a.first_loss,
    spikes: a.spikes,
    events: a.events,
    control: a.control,
    online_spikes: events.filter((e) => e.event === 'spike').length,
    skipped_steps: events.filter((e) => e.event === 'skip_step').length,
    rollbacks: events.filter((e) => e.event === 'rollback').length,
    loss_curve: log.losses.map((p) => round4(p.value)),
    tokens_per_s: sum.tokens_per_s,
    wall_seconds: sum.wall_seconds,
    ...(sum.error !== undefined ? { error: sum.error } : {}),
  };
}

/** An earlier record whose analysis is outdated: redone from its metrics.jsonl (no training). */
function reanalyze(s: SpikeSettings, dir: string, old: SpikeRunRecord): SpikeRunRecord | undefined {
  const file = path.join(dir, 'metrics.jsonl');
  if (!fs.existsSync(file)) return undefined;
  return recordOf(s, { variant: old.variant, eps: old.eps, lr: old.lr }, readMetrics(file), {
    val_loss: old.val_loss, train_loss: old.train_loss, tokens_per_s: old.tokens_per_s, wall_seconds: old.wall_seconds,
    ...(old.error !== undefined ? { error: old.error } : old.status === 'diverged' && old.val_loss === null ? { error: 'diverged' } : {}),
  });
}

export async function runSpikeExperiment(opts: SpikeExperimentOptions): Promise<SpikeResults> {
  const r = resolveSpikeOptions(opts);
  checkExperimentDir(r.out, 'spikes', 'a spike experiment', r.settings);
  ensureOutDir(r.out, '--out'); // one line for an impossible --out (and no spin under /proc)
  const s = r.settings;
  const params = paramLayout(s.config).total;
  const plans = plansOf(r);
  const records = new Map<string, SpikeRunRecord>();
  const total = plans.reduce((a, p) => a + p.lrs.length, 0);
  let done = 0;
  let interrupted = false;

  const matches = (rec: SpikeRunRecord, p: Plan, lr: number) => rec.variant === p.variant && rec.eps === p.eps && rec.lr === lr && rec.steps === s.steps;
  const reuse = (dir: string, p: Plan, lr: number): SpikeRunRecord | undefined => {
    const old = readRecord(dir);
    if (!old || !matches(old, p, lr)) return undefined;
    if (old.analysis_version === ANALYSIS_VERSION) return old;
    const rec = reanalyze(s, dir, old);
    if (rec) writeSummary(dir, rec);
    return rec;
  };
  for (const p of plans) {
    for (const lr of p.lrs) {
      const dir = runDirOf(r.out, p.variant, p.eps, lr);
      const rec = reuse(dir, p, lr);
      if (rec) records.set(dir, rec);
    }
  }
  const save = () => {
    const results = assembleSpikeResults(r, plans, records, params, interrupted);
    writeResults(r.out, results);
    return results;
  };
  save();

  outer: for (const p of plans) {
    for (const lr of p.lrs) {
      const dir = runDirOf(r.out, p.variant, p.eps, lr);
      const tag = `[${String(++done).padStart(String(total).length)}/${total}] ${p.key} lr ${lr}`;
      const old = records.get(dir);
      if (old) {
        r.log(`${tag}: ${describe(old)} (done earlier)`);
        continue;
      }
      if (fs.existsSync(dir)) fs.rmSync(dir, { recursive: true, force: true }); // an unfinished run: start it over
      const t0 = performance.now();
      const trainOpts = spikeTrainOptions(s, p.variant, p.eps, lr, dir);
      let sum: { val_loss: number | null; train_loss: number | null; tokens_per_s: number | null; error?: string };
      try {
        const res = await trainRun(trainOpts, r.progress, r.shouldStop);
        if (res.interrupted) {
          interrupted = true;
          r.log(`${tag}: interrupted at step ${res.steps}`);
          break outer;
        }
        sum = { val_loss: res.val_loss, train_loss: res.train_loss, tokens_per_s: res.tokens_per_s };
      } catch (err) {
        // A run the recovery ladder stopped did not finish either: it scores like a diverged one.
        if (!(err instanceof TrainingDiverged || err instanceof RecoveryExhausted)) throw err;
        sum = { val_loss: null, train_loss: null, tokens_per_s: null, error: err.message };
      }
      fs.rmSync(path.join(dir, 'checkpoints'), { recursive: true, force: true });
      const rec = recordOf(s, { variant: p.variant, eps: p.eps, lr }, readMetrics(path.join(dir, 'metrics.jsonl')), {
        ...sum, wall_seconds: (performance.now() - t0) / 1000,
      });
      writeSummary(dir, rec);
      records.set(dir, rec);
      r.log(`${tag}: ${describe(rec)}`);
      save();
      if (r.shouldStop?.()) {
        interrupted = true;
        break outer;
      }
    }
  }
  const results = save();
  writeSpikeReport(r.out, results, (run) => records.get(path.join(r.out, run.run_dir))?.loss_curve ?? []);
  return results;
}

function describe(rec: SpikeRunRecord): string {
  const spikes = `${rec.spikes} spike${rec.spikes === 1 ? '' : 's'}`;
  const rec2 = rec.skipped_steps || rec.rollbacks ? `, ${rec.skipped_steps} skipped, ${rec.rollbacks} rollbacks` : '';
  if (rec.diverged) return `diverged${rec.diverged_at !== null ? ` at step ${rec.diverged_at}` : ''}, ${spikes} before${rec2}, ${rec.wall_seconds.toFixed(1)} s`;
  return `val loss ${rec.val_loss!.toFixed(4)}, ${spikes}${rec2}, ${rec.wall_seconds.toFixed(1)} s`;
}

function assembleSpikeResults(r: Resolved, plans: Plan[], records: Map<string, SpikeRunRecord>, params: number, interrupted: boolean): SpikeResults {
  const l0 = r.settings.initialLoss;
  const runs: SpikeRunResult[] = [];
  const variants: VariantResult[] = plans.map((p) => {
    const mine: SpikeRunRecord[] = [];
    for (const lr of p.lrs) {
      const dir = runDirOf(r.out, p.variant, p.eps, lr);
      const rec = records.get(dir);
      if (!rec) continue;
      mine.push(rec);
      const { loss_curve: _c, ...rest } = rec;
      runs.push({ ...rest, run_dir: path.relative(r.out, dir) });
    }
    const complete = mine.length === p.lrs.length;
    let best: SpikeRunRecord | undefined;
    for (const m of mine) if (!m.diverged && (best === undefined || m.final_loss < best.final_loss)) best = m;
    return {
      key: p.key,
      variant: p.variant,
      eps: p.eps,
      label: p.variant === 'baseline' && r.epsValues.length > 1 ? `baseline (ε ${formatNumber(p.eps)})` : p.variant,
      description: VARIANT_DOC[p.variant],
      runs: mine.length,
      planned: p.lrs.length,
      complete,
      lr_sensitivity: complete ? lrSensitivity(mine.map((m) => m.final_loss), l0) : null,
      best_loss: best?.final_loss ?? null,
      best_lr: best?.lr ?? null,
      spikes: mine.reduce((a, m) => a + m.spikes, 0),
      early_spikes: mine.reduce((a, m) => a + m.events.filter((e) => e.kind === 'early').length, 0),
      runs_with_spikes: mine.filter((m) => m.spikes > 0).length,
      diverged: mine.filter((m) => m.diverged).length,
      skipped_steps: mine.reduce((a, m) => a + m.skipped_steps, 0),
      rollbacks: mine.reduce((a, m) => a + m.rollbacks, 0),
      lead: summarizeLeads(mine),
    };
  });
  const all = [...records.values()];
  return {
    version: 1,
    experiment: 'spikes',
    settings: r.settings,
    grid: { lrs: r.lrs, eps_values: r.epsValues, variants: r.variants, runs: plans.reduce((a, p) => a + p.lrs.length, 0), description: gridDescription(r) },
    params,
    complete: variants.every((v) => v.complete),
    interrupted,
    runs,
    variants,
    lead: summarizeLeads(runs),
    wall_seconds: all.reduce((a, m) => a + m.wall_seconds, 0),
    updated: new Date().toISOString(),
  };
}

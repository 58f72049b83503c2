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
 *                                    (spikes_report.ts; the command writes it from the results)
 *
 * Checkpoints are deleted after each run (rollback uses in-memory snapshots). A finished run
 * leaves summary.json; running again with the same `out` and settings reuses it and redoes only
 * what is missing (an interrupted run is started over). The lr grid, ε values and variants are
 * not settings: a rerun with a wider grid reuses the runs it shares with the earlier one.
 *
 * The offline analysis of each run's log (spike counting, divergence onset, lead times) is
 * src/monitor/spike_log.ts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.ts';
import { checkCorpusSize, loadCorpus } from '../data/corpus.ts';
import { readMetrics, type MetricsRecord } from '../io/metrics.ts';
import { ensureOutDir } from '../io/out_dir.ts';
import { nativeKernels } from '../kernels/native.ts';
import { validateConfig, type GPTConfig } from '../model/config.ts';
import { paramLayout } from '../model/params.ts';
import { analyzeRunLog, LEAD_STATS, parseRunLog } from '../monitor/spike_log.ts';
import { SPIKE_DEFAULTS } from '../monitor/spikes.ts';
import { createOptimizer } from '../optim/registry.ts';
import { formatNumber } from '../report/format.ts';
import { withDefaults } from '../train/options.ts';
import type { TrainOptions } from '../train/trainer.ts';
import { checkExperimentDir, checkSeed, lrDirName, positiveInt, sig3, writeResults } from './common.ts';
import { Grid, readSummary, type Runner, runnerOf, type RunnerOptions, type RunOutcome, writeSummary, sharedOptions } from './grid.ts';
import {
  ANALYSIS_VERSION,
  DEFAULT_EPS,
  DEFAULT_LRS,
  EMBED_SHRINK,
  SPIKE_CONFIG,
  SPIKE_CONFIG_NAME,
  SPIKE_VARIANTS,
  VARIANT_DOC,
  Z_LOSS,
  type LeadSummary,
  type SpikeResults,
  type SpikeRunRecord,
  type SpikeRunResult,
  type SpikeSettings,
  type SpikeVariant,
  type StatLeadSummary,
  type VariantResult,
} from './spikes_results.ts';
import { median } from '../util/stats.ts';

export interface SpikeExperimentOptions extends RunnerOptions {
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
}

interface Resolved {
  out: string;
  variants: SpikeVariant[];
  lrs: number[];
  epsValues: number[];
  settings: SpikeSettings;
  runner: Runner;
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
function resolveSpikeOptions(o: SpikeExperimentOptions): Resolved {
  const variants = [...new Set(o.variants ?? SPIKE_VARIANTS)];
  if (variants.length === 0) throw new UserError(`--variants is empty: name one or more of ${SPIKE_VARIANTS.join(', ')}`);
  for (const v of variants) {
    if (!(SPIKE_VARIANTS as readonly string[]).includes(v)) throw new UserError(`unknown variant "${v}"; choose from ${SPIKE_VARIANTS.join(', ')}`);
  }
  const lrs = numbers('--lrs', o.lrs, DEFAULT_LRS, (x) => x > 0, 'positive numbers')
    .map(sig3)
    .sort((a, b) => a - b);
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
    runner: runnerOf(o),
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

function spikeRunDir(out: string, variant: SpikeVariant, eps: number, lr: number): string {
  return path.join(out, variant, `eps-${String(eps)}`, lrDirName(lr));
}

/** The trainer options of one run: the baseline plus the variant's one change. */
function spikeTrainOptions(s: SpikeSettings, variant: SpikeVariant, eps: number, lr: number, dir: string): TrainOptions {
  const opt: Record<string, unknown> = { eps };
  if (variant === 'atan2') opt.epsMode = 'atan2';
  if (variant === 'eps-zero') opt.epsMode = 'zero';
  return withDefaults({
    ...sharedOptions(s, dir),
    config: variant === 'qk-norm' ? { ...s.config, qkNorm: true } : s.config,
    steps: s.steps,
    batch: s.batch,
    accum: 1,
    lr,
    minLr: lr,
    warmup: s.warmup,
    schedule: s.schedule,
    optimizer: s.optimizer,
    optimizerOptions: opt,
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

/** LR sensitivity (Wortsman et al.): mean over the grid of min(ℓ, L0) − min ℓ. */
export function lrSensitivity(finalLosses: readonly number[], l0: number): number | null {
  if (finalLosses.length === 0) return null;
  const capped = finalLosses.map((l) => (Number.isFinite(l) ? Math.min(l, l0) : l0));
  const best = Math.min(...capped);
  return capped.reduce((a, l) => a + (l - best), 0) / capped.length;
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
      stat,
      testable: t.length,
      with_precursor: leads.length,
      fraction: t.length ? leads.length / t.length : null,
      median_lead: median(leads),
      control_tested: ct,
      control_flagged: cf,
      control_fraction: ct ? cf / ct : null,
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
    val_loss: old.val_loss,
    train_loss: old.train_loss,
    tokens_per_s: old.tokens_per_s,
    wall_seconds: old.wall_seconds,
    ...(old.error !== undefined ? { error: old.error } : old.status === 'diverged' && old.val_loss === null ? { error: 'diverged' } : {}),
  });
}

export async function runSpikeExperiment(opts: SpikeExperimentOptions): Promise<SpikeResults> {
  const r = resolveSpikeOptions(opts);
  checkExperimentDir(r.out, 'spikes', 'a spike experiment', r.settings);
  ensureOutDir(r.out, '--out'); // one line for an impossible --out (and no spin under /proc)
  const params = paramLayout(r.settings.config).total;
  const plans = plansOf(r);
  const save = () => {
    const results = assembleSpikeResults(r, plans, grid.records, params, grid.interrupted);
    writeResults(r.out, results);
    return results;
  };
  const grid: Grid<SpikeRunRecord> = new Grid({
    ...r.runner,
    describe,
    saved: save,
    total: plans.reduce((a, p) => a + p.lrs.length, 0),
  });
  for (const p of plans) for (const lr of p.lrs) reuseFinished(r.settings, grid, p, lr, spikeRunDir(r.out, p.variant, p.eps, lr));
  save();
  await grid.untilInterrupted(async () => {
    for (const p of plans) {
      for (const lr of p.lrs) {
        const dir = spikeRunDir(r.out, p.variant, p.eps, lr);
        await grid.run({
          dir,
          label: `${p.key} lr ${lr}`,
          options: () => spikeTrainOptions(r.settings, p.variant, p.eps, lr, dir),
          record: (o) => recordOf(r.settings, { variant: p.variant, eps: p.eps, lr }, readMetrics(path.join(dir, 'metrics.jsonl')), outcomeNumbers(o)),
        });
      }
    }
  });
  return save();
}

/** An earlier invocation's record of this run, re-analysed from its log when the analysis changed since. */
function reuseFinished(s: SpikeSettings, grid: Grid<SpikeRunRecord>, p: Plan, lr: number, dir: string): void {
  const old = readSummary<SpikeRunRecord>(dir, (x) => (x.status === 'ok' || x.status === 'diverged') && Array.isArray(x.events));
  if (!old || old.variant !== p.variant || old.eps !== p.eps || old.lr !== lr || old.steps !== s.steps) return;
  const rec = old.analysis_version === ANALYSIS_VERSION ? old : reanalyze(s, dir, old);
  if (!rec) return;
  if (rec !== old) writeSummary(dir, rec);
  grid.records.set(dir, rec);
}

function outcomeNumbers(o: RunOutcome): Parameters<typeof recordOf>[3] {
  const sum = o.summary;
  return {
    val_loss: sum?.val_loss ?? null,
    train_loss: sum?.train_loss ?? null,
    tokens_per_s: sum?.tokens_per_s ?? null,
    wall_seconds: o.wall_seconds,
    ...(o.error !== undefined ? { error: o.error } : {}),
  };
}

function describe(rec: SpikeRunRecord): string {
  const spikes = `${rec.spikes} spike${rec.spikes === 1 ? '' : 's'}`;
  const rec2 = rec.skipped_steps || rec.rollbacks ? `, ${rec.skipped_steps} skipped, ${rec.rollbacks} rollbacks` : '';
  if (rec.diverged)
    return `diverged${rec.diverged_at !== null ? ` at step ${rec.diverged_at}` : ''}, ${spikes} before${rec2}, ${rec.wall_seconds.toFixed(1)} s`;
  return `val loss ${rec.val_loss!.toFixed(4)}, ${spikes}${rec2}, ${rec.wall_seconds.toFixed(1)} s`;
}

function assembleSpikeResults(r: Resolved, plans: Plan[], records: Map<string, SpikeRunRecord>, params: number, interrupted: boolean): SpikeResults {
  const l0 = r.settings.initialLoss;
  const runs: SpikeRunResult[] = [];
  const variants: VariantResult[] = plans.map((p) => {
    const mine: SpikeRunRecord[] = [];
    for (const lr of p.lrs) {
      const dir = spikeRunDir(r.out, p.variant, p.eps, lr);
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
      lr_sensitivity: complete
        ? lrSensitivity(
            mine.map((m) => m.final_loss),
            l0,
          )
        : null,
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

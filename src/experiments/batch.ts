/**
 * `keel experiment batch` as a library: the critical batch size measured
 * by brute force, next to the online estimate B_simple (McCandlish et al. 2018;
 * docs/batch-size.md#noise-scale-estimator), and the optimal learning rate vs batch size at
 * several Adam ε (docs/batch-size.md#sign-descent-rules: sign-like vs SGD-like scaling).
 *
 *   1. Pilot: one run at `pilotBatch` sequences (micro-batch × accum, accum ≥ 2) measures the
 *      simple noise scale online; B_simple = median of the logged (EMA-smoothed) `b_simple`
 *      over the second half of the pilot; g = median `noise_grad_rms` there (the gradient RMS
 *      the ε values are compared with; with no --eps-values, ε ∈ {1e-8, g/4, 4g}).
 *   2. For every ε and batch B (sequences per step; micro-batch B/2 × accum 2, so every run
 *      also logs b_simple), a short lr sweep at a fixed token budget (`tokens`): the lr grid is
 *      a log grid (default ×√2 steps); the sweep starts at 3 neighbouring lrs (around the
 *      previous batch's best lr) and extends until the best lr has two evaluated lrs on each
 *      side (or the grid ends).
 *      Best lr = lowest final validation loss (a diverged run counts as L0 = ln V).
 *   3. At the best lr per B: steps S and examples E = B·S to reach a target validation loss,
 *      interpolated linearly between evaluations (`evalPoints` per run). The target is the
 *      highest "best loss reached" over the batches plus TARGET_MARGIN, so every batch crosses
 *      it (or --target). Fit S = S_min·(1 + B_crit/B) (equivalently (S/S_min − 1)(E/E_min − 1)
 *      = 1 with E_min = S_min·B_crit) by least squares on log S, and compare B_crit with B_simple.
 *   4. The best-lr-vs-B curve per ε is compared with the rules of src/schedule/rules.ts
 *      (B_noise = the pilot's B_simple, g = the pilot's gradient RMS), each with its best
 *      constant factor: the rms of log2(lr_best / lr_rule) over B says which shape fits.
 *
 * Every run is a normal run directory out/eps-<ε>/B-<B>/lr-<lr>/ with summary.json;
 * out/results.json is rewritten after every run, and a rerun with the same settings reuses
 * finished runs (the adaptive sweep is deterministic given them).
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
import { createOptimizer } from '../optim/registry.ts';
import { lrForBatch } from '../schedule/rules.ts';
import type { TrainOptions } from '../train/trainer.ts';
import { withDefaults } from '../train/options.ts';
import { checkExperimentDir, checkSeed, lrDirName, positiveInt, sig3, writeResults } from './common.ts';
import { Grid, type Runner, runnerOf, type RunnerOptions, type RunOutcome, writeSummary, sharedOptions } from './grid.ts';
import { SPIKE_CONFIG, SPIKE_CONFIG_NAME } from './spikes_results.ts';
import {
  DEFAULT_BATCHES,
  DEFAULT_LR_START,
  DEFAULT_LRS,
  DEFAULT_TOKENS,
  NEAR_TIE,
  RULES,
  TARGET_MARGIN,
  type BatchResults,
  type BatchRow,
  type BatchRunRecord,
  type BatchSettings,
  type CritFit,
  type EpsResult,
  type EvalPoint,
  type PilotRecord,
  type RuleFit,
} from './batch_results.ts';
import { median } from '../util/stats.ts';

export interface BatchExperimentOptions extends RunnerOptions {
  out: string;
  batches?: number[];
  /** The lr grid the sweep walks on (sorted; 3 significant digits). */
  lrs?: number[];
  /** Where the first batch's sweep starts (the grid value nearest to it). */
  lrStart?: number;
  /** Default: 1e-8, g/4, 4g with g the pilot's gradient RMS. */
  epsValues?: number[];
  /** Tokens per run (fixed budget). */
  tokens?: number;
  /** Target validation loss (default: from the runs, see the header). */
  target?: number;
  config?: GPTConfig;
  configName?: string;
  data?: string;
  evalTokens?: number;
  evalPoints?: number;
  pilotBatch?: number;
  pilotSteps?: number;
  seed?: number;
}

function numbers(name: string, values: number[] | undefined, fallback: number[], ok: (x: number) => boolean, what: string): number[] {
  const out = [...new Set(values ?? fallback)];
  if (out.length === 0) throw new UserError(`${name} is empty: give one or more ${what}`);
  for (const x of out) if (!Number.isFinite(x) || !ok(x)) throw new UserError(`${name} must be ${what}, got ${x}`);
  return out;
}

interface Resolved {
  out: string;
  batches: number[];
  lrs: number[];
  lrStart: number;
  epsValues: number[] | undefined;
  target: number | undefined;
  settings: BatchSettings;
  runner: Runner;
}

function resolveBatchOptions(o: BatchExperimentOptions): Resolved {
  const batches = numbers(
    '--batches',
    o.batches,
    DEFAULT_BATCHES,
    (x) => Number.isSafeInteger(x) && x >= 2 && x % 2 === 0,
    'even integers ≥ 2 (micro-batch B/2 × accum 2)',
  ).sort((a, b) => a - b);
  if (batches.length < 2) throw new UserError('--batches needs at least 2 batch sizes to fit S_min and B_crit');
  const lrs = numbers('--lrs', o.lrs, DEFAULT_LRS, (x) => x > 0, 'positive numbers')
    .map(sig3)
    .sort((a, b) => a - b);
  const lrStart = o.lrStart ?? DEFAULT_LR_START;
  if (!(lrStart > 0)) throw new UserError(`--lr-start must be positive, got ${lrStart}`);
  const epsValues = o.epsValues === undefined ? undefined : numbers('--eps-values', o.epsValues, [], (x) => x >= 0, 'numbers ≥ 0');
  for (const eps of epsValues ?? []) createOptimizer('adamw', { eps });
  const config = validateConfig(o.config ?? SPIKE_CONFIG, '--config');
  const tokens = positiveInt('--tokens', o.tokens ?? DEFAULT_TOKENS);
  const maxB = batches[batches.length - 1];
  if (tokens < maxB * config.blockSize * 4) {
    throw new UserError(
      `--tokens ${tokens} is too few: the largest batch (${maxB} × ${config.blockSize} tokens) needs at least 4 steps (${maxB * config.blockSize * 4} tokens)`,
    );
  }
  const evalTokens = positiveInt('--eval-tokens', o.evalTokens ?? 4096);
  if (evalTokens < config.blockSize + 1) throw new UserError(`--eval-tokens ${evalTokens} is too few: one window needs ${config.blockSize + 1} tokens`);
  const evalPoints = positiveInt('--eval-points', o.evalPoints ?? 20);
  const pilotBatch = positiveInt('--pilot-batch', o.pilotBatch ?? 32);
  if (pilotBatch < 4 || pilotBatch % 4 !== 0) throw new UserError(`--pilot-batch must be a multiple of 4 (4 micro-batches), got ${pilotBatch}`);
  const pilotSteps = positiveInt('--pilot-steps', o.pilotSteps ?? 120);
  if (o.target !== undefined && !(o.target > 0)) throw new UserError(`--target must be a positive loss, got ${o.target}`);
  const seed = checkSeed(o.seed ?? 1337);
  const data = o.data === undefined ? undefined : path.resolve(o.data);
  checkCorpusSize(loadCorpus(data), config.blockSize);
  return {
    out: path.resolve(o.out),
    batches,
    lrs,
    lrStart,
    epsValues,
    target: o.target,
    settings: {
      configName: o.configName ?? (o.config ? 'custom' : SPIKE_CONFIG_NAME),
      config,
      data: data ?? null,
      tokens,
      evalTokens,
      evalPoints,
      warmupFraction: 0.05,
      schedule: 'constant',
      clip: 1,
      optimizer: 'adamw',
      pilotBatch,
      pilotAccum: 4,
      pilotSteps,
      pilotLr: 2e-3,
      pilotEps: 1e-8,
      seed,
      initialLoss: Math.log(config.vocabSize),
      threads: nativeKernels().threads(),
    },
    runner: runnerOf(o),
  };
}

// ---------------------------------------------------------------------------------------------
// The analysis (pure functions, tested on synthetic data).

/**
 * The (interpolated) step at which the validation loss first reaches `target`: linear between
 * the last evaluation above it and the first at or below it; from (0, l0) when the first
 * evaluation is already below. Null when it never does.
 */
export function crossing(points: readonly EvalPoint[], target: number, l0: number): number | null {
  let prev: EvalPoint = { step: 0, val_loss: l0 };
  for (const p of points) {
    if (Number.isFinite(p.val_loss) && p.val_loss <= target) {
      if (!(prev.val_loss > target)) return p.step;
      const f = (prev.val_loss - target) / (prev.val_loss - p.val_loss);
      return prev.step + f * (p.step - prev.step);
    }
    if (Number.isFinite(p.val_loss)) prev = p;
  }
  return null;
}

/**
 * Fits S(B) = S_min·(1 + B_crit/B) — the same as (S/S_min − 1)(E/E_min − 1) = 1 with E = B·S
 * and E_min = S_min·B_crit — by least squares on log S: for a given B_crit the best log S_min is
 * the mean residual (closed form), and B_crit is found by a golden-section search on log B_crit
 * after a coarse scan (from 1e-4·min B to 1e4·max B). Needs ≥ 2 points.
 */
export function fitCriticalBatch(points: readonly { batch: number; steps: number }[]): CritFit | null {
  const pts = points.filter((p) => p.batch > 0 && p.steps > 0 && Number.isFinite(p.steps));
  if (pts.length < 2) return null;
  const logS = pts.map((p) => Math.log(p.steps));
  const evalAt = (lb: number) => {
    const bc = Math.exp(lb);
    const r = pts.map((p, i) => logS[i] - Math.log(1 + bc / p.batch));
    const m = r.reduce((a, x) => a + x, 0) / r.length;
    const sse = r.reduce((a, x) => a + (x - m) ** 2, 0);
    return { sse, logSmin: m, bc };
  };
  const bMin = Math.min(...pts.map((p) => p.batch)),
    bMax = Math.max(...pts.map((p) => p.batch));
  const lo = Math.log(bMin * 1e-4),
    hi = Math.log(bMax * 1e4);
  const N = 200;
  let bestK = 0,
    bestSse = Infinity;
  for (let k = 0; k <= N; k++) {
    const s = evalAt(lo + ((hi - lo) * k) / N).sse;
    if (s < bestSse) {
      bestSse = s;
      bestK = k;
    }
  }
  const h = (hi - lo) / N;
  let a = lo + h * Math.max(0, bestK - 1),
    b = lo + h * Math.min(N, bestK + 1);
  const g = (Math.sqrt(5) - 1) / 2;
  for (let it = 0; it < 100; it++) {
    const c = b - g * (b - a),
      d = a + g * (b - a);
    if (evalAt(c).sse < evalAt(d).sse) b = d;
    else a = c;
  }
  const e = evalAt((a + b) / 2);
  const sMin = Math.exp(e.logSmin);
  return { s_min: sMin, b_crit: e.bc, e_min: sMin * e.bc, rms_log: Math.sqrt(e.sse / pts.length), points: pts.length };
}

/** Each rule's shape with its best constant factor (least squares on log lr); sorted best first. */
export function fitRules(points: readonly { batch: number; lr: number }[], p: { bNoise: number; eps: number; gradRms: number }): RuleFit[] {
  if (points.length < 2) return [];
  const fits: RuleFit[] = [];
  for (const rule of RULES) {
    let f: number[];
    try {
      f = points.map((q) => lrForBatch(rule, q.batch, { baseLr: 1, baseBatch: 1, bNoise: p.bNoise, eps: p.eps, gradRms: p.gradRms }));
    } catch {
      continue;
    }
    const r = points.map((q, i) => Math.log2(q.lr / f[i]));
    const m = r.reduce((a, x) => a + x, 0) / r.length;
    fits.push({ rule, scale: 2 ** m, rms_log2: Math.sqrt(r.reduce((a, x) => a + (x - m) ** 2, 0) / r.length) });
  }
  return fits.sort((a, b) => a.rms_log2 - b.rms_log2);
}

export function logSlope(points: readonly { batch: number; lr: number }[]): number | null {
  if (points.length < 2) return null;
  const x = points.map((p) => Math.log(p.batch)),
    y = points.map((p) => Math.log(p.lr));
  const mx = x.reduce((a, v) => a + v, 0) / x.length,
    my = y.reduce((a, v) => a + v, 0) / y.length;
  const sxx = x.reduce((a, v) => a + (v - mx) ** 2, 0);
  return sxx > 0 ? x.reduce((a, v, i) => a + (v - mx) * (y[i] - my), 0) / sxx : null;
}

const sig2 = (x: number) => Number(x.toPrecision(2));

/** About n points of a series, the last included. */
function thin<T>(xs: T[], n: number): T[] {
  if (xs.length <= n) return xs;
  const every = Math.ceil(xs.length / n);
  return xs.filter((_, i) => i % every === 0 || i === xs.length - 1);
}

/** The series' value at `step` (linear between its points; the nearest end outside them). */
export function valueAt(curve: readonly [number, number][], step: number): number | null {
  if (curve.length === 0) return null;
  if (step <= curve[0][0]) return curve[0][1];
  for (let i = 1; i < curve.length; i++) {
    const [s1, v1] = curve[i];
    if (step <= s1) {
      const [s0, v0] = curve[i - 1];
      return v0 + ((v1 - v0) * (step - s0)) / (s1 - s0);
    }
  }
  return curve[curve.length - 1][1];
}

// ---------------------------------------------------------------------------------------------
// Running.

function batchRunDir(out: string, eps: number, batch: number, lr: number): string {
  return path.join(out, `eps-${String(eps)}`, `B-${batch}`, lrDirName(lr));
}

function stepsOf(s: BatchSettings, batch: number): number {
  return Math.max(1, Math.round(s.tokens / (batch * s.config.blockSize)));
}

function batchTrainOptions(s: BatchSettings, batch: number, eps: number, lr: number, dir: string): TrainOptions {
  const steps = stepsOf(s, batch);
  return withDefaults({
    ...sharedOptions(s, dir),
    steps,
    batch: batch / 2,
    accum: 2,
    lr,
    minLr: lr,
    warmup: Math.max(1, Math.round(s.warmupFraction * steps)),
    schedule: s.schedule,
    optimizer: s.optimizer,
    optimizerOptions: { eps },
    evalEvery: Math.max(1, Math.round(steps / s.evalPoints)),
  });
}

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

function logStats(records: readonly MetricsRecord[]) {
  const trainLines = records.filter((r) => num(r.loss) !== null && num(r.step) !== null);
  const evals: EvalPoint[] = records
    .filter((r) => r.loss === undefined && typeof r.val_loss === 'number' && num(r.step) !== null)
    .map((r) => ({ step: r.step as number, val_loss: r.val_loss as number }));
  const half = trainLines.slice(Math.floor(trainLines.length / 2));
  const bs = trainLines.map((r) => num(r.b_simple)).filter((x): x is number => x !== null);
  return {
    evals,
    b_simple_median: median(half.map((r) => num(r.b_simple)).filter((x): x is number => x !== null)),
    b_simple_final: bs.length ? bs[bs.length - 1] : null,
    grad_rms: median(half.map((r) => num(r.noise_grad_rms)).filter((x): x is number => x !== null)),
    curve: trainLines.filter((r) => num(r.b_simple) !== null).map((r) => [r.step as number, Number((r.b_simple as number).toPrecision(4))] as [number, number]),
  };
}

export async function runBatchExperiment(opts: BatchExperimentOptions): Promise<BatchResults> {
  const r = resolveBatchOptions(opts);
  checkExperimentDir(r.out, 'batch', 'a batch experiment', r.settings);
  ensureOutDir(r.out, '--out'); // one line for an impossible --out (and no spin under /proc)
  const params = paramLayout(r.settings.config).total;
  let pilot: PilotRecord | null = null;
  let epsValues: number[] = r.epsValues ?? [];
  const save = () => {
    const results = assembleBatchResults(r, epsValues, pilot, grid.records, params, grid.interrupted);
    writeResults(r.out, results);
    return results;
  };
  const gridOptions = { ...r.runner, saved: save };
  // Reused sweep runs are not logged: which ones the adaptive sweep visits again is its own business.
  const grid: Grid<BatchRunRecord> = new Grid({ ...gridOptions, describe: describeRun, logReused: false });
  const pilotGrid = new Grid<PilotRecord>({ ...gridOptions, saved: undefined, describe: describePilot });
  await grid.untilInterrupted(async () => {
    pilot = await runPilot(r, pilotGrid);
    epsValues = r.epsValues ?? pilotEps(pilot);
    reuseFinished(r, grid, epsValues);
    save();
    let firstCenter = nearestLr(r.lrs, r.lrStart);
    for (const eps of epsValues) {
      let center = firstCenter;
      for (const [bi, B] of r.batches.entries()) {
        center = await sweepLrs(r, grid, eps, B, center);
        if (bi === 0 && eps === epsValues[0]) firstCenter = center;
      }
    }
  });
  return save();
}

/** 1. The pilot run: B_simple and the gradient RMS that the default ε values are set from. */
function runPilot(r: Resolved, grid: Grid<PilotRecord>): Promise<PilotRecord> {
  const s = r.settings;
  const dir = path.join(r.out, 'pilot');
  grid.reuse(dir, (p) => p.steps === s.pilotSteps && p.batch === s.pilotBatch && Array.isArray(p.curve));
  return grid.run({
    dir,
    label: 'pilot',
    options: () =>
      withDefaults({
        ...sharedOptions(s, dir),
        steps: s.pilotSteps,
        batch: s.pilotBatch / s.pilotAccum,
        accum: s.pilotAccum,
        lr: s.pilotLr,
        minLr: s.pilotLr,
        warmup: Math.max(1, Math.round(s.warmupFraction * s.pilotSteps)),
        schedule: 'constant',
        optimizer: 'adamw',
        optimizerOptions: { eps: s.pilotEps },
      }),
    record: (o) => {
      const st = logStats(metricsOf(dir));
      return {
        batch: s.pilotBatch,
        accum: s.pilotAccum,
        steps: s.pilotSteps,
        lr: s.pilotLr,
        eps: s.pilotEps,
        b_simple: st.b_simple_median,
        b_simple_final: st.b_simple_final,
        grad_rms: st.grad_rms,
        val_loss: o.summary?.val_loss ?? null,
        curve: st.curve,
        wall_seconds: o.wall_seconds,
      };
    },
  });
}

/** With no --eps-values: 1e-8, g/4 and 4g for the pilot's gradient RMS g. */
function pilotEps(pilot: PilotRecord): number[] {
  const g = pilot.grad_rms;
  if (g === null || !(g > 0)) throw new UserError('the pilot measured no gradient RMS: give --eps-values');
  return [1e-8, sig2(g / 4), sig2(4 * g)];
}

/** Finished sweep runs of an earlier invocation (older summaries gain the b_simple curve from their log). */
function reuseFinished(r: Resolved, grid: Grid<BatchRunRecord>, epsValues: number[]): void {
  const s = r.settings;
  for (const eps of epsValues)
    for (const B of r.batches)
      for (const lr of r.lrs) {
        const dir = batchRunDir(r.out, eps, B, lr);
        const rec = grid.reuse(dir, (x) => x.eps === eps && x.batch === B && x.lr === lr && x.tokens === s.tokens && Array.isArray(x.evals));
        if (rec && rec.b_curve === undefined && fs.existsSync(path.join(dir, 'metrics.jsonl'))) {
          rec.b_curve = thin(logStats(metricsOf(dir)).curve, s.evalPoints * 2);
          writeSummary(dir, rec);
        }
      }
}

/** Index of the grid lr nearest to `lr` (on a log scale). */
function nearestLr(lrs: number[], lr: number): number {
  return lrs.reduce((bi, x, i) => (Math.abs(Math.log(x / lr)) < Math.abs(Math.log(lrs[bi] / lr)) ? i : bi), 0);
}

/**
 * 2. The lr sweep of one (ε, B): 3 neighbouring lrs around `center`, extended until the best
 * has two evaluated lrs on each side (or the grid ends). Returns the best lr's index.
 */
async function sweepLrs(r: Resolved, grid: Grid<BatchRunRecord>, eps: number, B: number, center: number): Promise<number> {
  const loss = new Map<number, number>();
  const run = async (k: number) => {
    const rec = await grid.run(sweepJob(r, eps, B, r.lrs[k]));
    loss.set(k, rec.final_loss);
  };
  const lo0 = Math.max(0, Math.min(center - 1, r.lrs.length - 3)),
    hi0 = Math.min(r.lrs.length - 1, lo0 + 2);
  for (let k = lo0; k <= hi0; k++) await run(k);
  for (;;) {
    const ks = [...loss.keys()].sort((a, b) => a - b);
    const best = ks.reduce((a, k) => (loss.get(k)! < loss.get(a)! ? k : a), ks[0]);
    // Two evaluated lrs on each side of the best: a flat valley otherwise stops the walk at a
    // shallow local minimum.
    if (best - ks[0] < 2 && ks[0] > 0) await run(ks[0] - 1);
    else if (ks[ks.length - 1] - best < 2 && ks[ks.length - 1] < r.lrs.length - 1) await run(ks[ks.length - 1] + 1);
    else return best;
  }
}

function sweepJob(r: Resolved, eps: number, B: number, lr: number) {
  const s = r.settings;
  const dir = batchRunDir(r.out, eps, B, lr);
  return {
    dir,
    label: `ε ${eps} B ${B} lr ${lr}`,
    options: () => batchTrainOptions(s, B, eps, lr, dir),
    record: (o: RunOutcome): BatchRunRecord => {
      const st = logStats(metricsOf(dir));
      const val = o.summary?.val_loss ?? null;
      const finite = val !== null && Number.isFinite(val);
      const diverged = !finite || val >= s.initialLoss;
      return {
        eps,
        batch: B,
        lr,
        steps: stepsOf(s, B),
        tokens: s.tokens,
        diverged,
        val_loss: finite ? val : null,
        final_loss: diverged ? s.initialLoss : Math.min(val, s.initialLoss),
        evals: st.evals,
        b_simple: st.b_simple_final,
        b_curve: thin(st.curve, s.evalPoints * 2),
        grad_rms: st.grad_rms,
        wall_seconds: o.wall_seconds,
        ...(o.error !== undefined ? { error: o.error } : {}),
      };
    },
  };
}

function metricsOf(dir: string): MetricsRecord[] {
  const file = path.join(dir, 'metrics.jsonl');
  return fs.existsSync(file) ? readMetrics(file) : [];
}

function describeRun(rec: BatchRunRecord): string {
  return `${rec.diverged ? 'diverged' : `val loss ${rec.val_loss!.toFixed(4)}`}, ${rec.steps} steps, ${rec.wall_seconds.toFixed(1)} s`;
}

function describePilot(p: PilotRecord): string {
  return `B_simple ${p.b_simple?.toPrecision(3)} sequences (median of the second half), gradient RMS ${p.grad_rms?.toPrecision(3)}, ${p.wall_seconds.toFixed(1)} s`;
}

/** The best run per (ε, B) among those that were run. */
function bestOf(runs: BatchRunRecord[]): BatchRunRecord | undefined {
  let best: BatchRunRecord | undefined;
  for (const m of runs) if (!m.diverged && (best === undefined || m.final_loss < best.final_loss)) best = m;
  return best;
}

function assembleBatchResults(
  r: Resolved,
  epsValues: number[],
  pilot: PilotRecord | null,
  records: Map<string, BatchRunRecord>,
  params: number,
  interrupted: boolean,
): BatchResults {
  const s = r.settings;
  const all = [...records.values()];
  const bNoise = pilot?.b_simple ?? null;
  const g = pilot?.grad_rms ?? null;
  const eps: EpsResult[] = epsValues.map((e) => {
    const rows0 = r.batches.map((B) => {
      const mine = all.filter((m) => m.eps === e && m.batch === B).sort((a, b) => a.lr - b.lr);
      const best = bestOf(mine);
      const bestLoss = best ? Math.min(...best.evals.map((p) => p.val_loss).filter(Number.isFinite), best.final_loss) : null;
      return { B, mine, best, bestLoss };
    });
    const complete = !interrupted && rows0.every((x) => x.best !== undefined);
    const reached = rows0.map((x) => x.bestLoss).filter((x): x is number => x !== null);
    const target = r.target ?? (reached.length ? Number((Math.max(...reached) + TARGET_MARGIN).toFixed(4)) : null);
    const rows: BatchRow[] = rows0.map(({ B, mine, best, bestLoss }) => {
      const S = best && target !== null ? crossing(best.evals, target, s.initialLoss) : null;
      const k = best ? r.lrs.indexOf(best.lr) : -1;
      return {
        batch: B,
        steps: stepsOf(s, B),
        lrs_tried: mine.map((m) => m.lr),
        best_lr: best?.lr ?? null,
        best_loss: bestLoss,
        at_grid_edge: k === 0 || k === r.lrs.length - 1,
        near_best_lrs: best
          ? ((xs: number[]) => [Math.min(...xs), Math.max(...xs)] as [number, number])(
              mine.filter((m) => !m.diverged && m.final_loss <= best.final_loss + NEAR_TIE).map((m) => m.lr),
            )
          : null,
        steps_to_target: S,
        examples_to_target: S === null ? null : S * B,
        tokens_to_target: S === null ? null : S * B * s.config.blockSize,
        b_simple: best?.b_simple ?? null,
        b_simple_at_target: best?.b_curve && S !== null ? valueAt(best.b_curve, S) : null,
      };
    });
    const fit = fitCriticalBatch(rows.filter((x) => x.steps_to_target !== null).map((x) => ({ batch: x.batch, steps: x.steps_to_target! })));
    const lrPts = rows.filter((x) => x.best_lr !== null).map((x) => ({ batch: x.batch, lr: x.best_lr! }));
    const rules = bNoise !== null && g !== null ? fitRules(lrPts, { bNoise, eps: e, gradRms: g }) : [];
    let peak: number | null = null;
    if (lrPts.length >= 3) {
      const mx = lrPts.reduce((a, p) => (p.lr > a.lr ? p : a), lrPts[0]);
      const i = lrPts.indexOf(mx);
      if (i > 0 && i < lrPts.length - 1 && lrPts[lrPts.length - 1].lr < mx.lr) peak = mx.batch;
    }
    const bAt = median(rows.map((x) => x.b_simple_at_target).filter((x): x is number => x !== null));
    return {
      eps: e,
      rows,
      complete,
      target,
      fit,
      ratio: fit && bNoise ? fit.b_crit / bNoise : null,
      b_simple_at_target: bAt,
      ratio_at_target: fit && bAt ? fit.b_crit / bAt : null,
      rules,
      best_rule: rules[0]?.rule ?? null,
      slope: logSlope(lrPts),
      peak_batch: peak,
    };
  });
  const runs = all.map((m) => ({ ...m, run_dir: path.relative(r.out, batchRunDir(r.out, m.eps, m.batch, m.lr)) }));
  return {
    version: 1,
    experiment: 'batch',
    settings: s,
    grid: { batches: r.batches, lrs: r.lrs, eps_values: epsValues, lr_start: r.lrStart, target_margin: TARGET_MARGIN, target_override: r.target ?? null },
    params,
    pilot,
    b_simple: bNoise,
    grad_rms: g,
    complete: !interrupted && pilot !== null && eps.length > 0 && eps.every((x) => x.complete),
    interrupted,
    eps,
    runs,
    wall_seconds: all.reduce((a, m) => a + m.wall_seconds, 0) + (pilot?.wall_seconds ?? 0),
    updated: new Date().toISOString(),
  };
}

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
import { nativeKernels } from '../kernels/native.ts';
import { validateConfig, type GPTConfig } from '../model/config.ts';
import { paramLayout } from '../model/params.ts';
import { createOptimizer } from '../optim/registry.ts';
import { lrForBatch, type ScalingRule } from '../schedule/rules.ts';
import { TrainingDiverged, type TrainOptions } from '../train/trainer.ts';
import { withDefaults } from '../train/options.ts';
import { checkExperimentDir, checkSeed, trainRun, lrDirName, positiveInt, readSummary, sig3, writeResults, writeSummary } from './common.ts';
import { SPIKE_CONFIG, SPIKE_CONFIG_NAME } from './spikes.ts';
import { writeBatchReport } from './batch_report.ts';
import { ensureOutDir } from '../io/out_dir.ts';

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

export interface BatchExperimentOptions {
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
  progress?: boolean;
  log?: (line: string) => void;
  shouldStop?: () => boolean;
}

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
  progress: boolean;
  log: (line: string) => void;
  shouldStop?: () => boolean;
}

export function resolveBatchOptions(o: BatchExperimentOptions): Resolved {
  const batches = numbers('--batches', o.batches, DEFAULT_BATCHES, (x) => Number.isSafeInteger(x) && x >= 2 && x % 2 === 0, 'even integers ≥ 2 (micro-batch B/2 × accum 2)')
    .sort((a, b) => a - b);
  if (batches.length < 2) throw new UserError('--batches needs at least 2 batch sizes to fit S_min and B_crit');
  const lrs = numbers('--lrs', o.lrs, DEFAULT_LRS, (x) => x > 0, 'positive numbers').map(sig3).sort((a, b) => a - b);
  const lrStart = o.lrStart ?? DEFAULT_LR_START;
  if (!(lrStart > 0)) throw new UserError(`--lr-start must be positive, got ${lrStart}`);
  const epsValues = o.epsValues === undefined ? undefined : numbers('--eps-values', o.epsValues, [], (x) => x >= 0, 'numbers ≥ 0');
  for (const eps of epsValues ?? []) createOptimizer('adamw', { eps });
  const config = validateConfig(o.config ?? SPIKE_CONFIG, '--config');
  const tokens = positiveInt('--tokens', o.tokens ?? DEFAULT_TOKENS);
  const maxB = batches[batches.length - 1];
  if (tokens < maxB * config.blockSize * 4) {
    throw new UserError(`--tokens ${tokens} is too few: the largest batch (${maxB} × ${config.blockSize} tokens) needs at least 4 steps (${maxB * config.blockSize * 4} tokens)`);
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
    progress: o.progress ?? false,
    log: o.log ?? ((line) => process.stderr.write(line + '\n')),
    shouldStop: o.shouldStop,
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
  const bMin = Math.min(...pts.map((p) => p.batch)), bMax = Math.max(...pts.map((p) => p.batch));
  let lo = Math.log(bMin * 1e-4), hi = Math.log(bMax * 1e4);
  const N = 200;
  let bestK = 0, bestSse = Infinity;
  for (let k = 0; k <= N; k++) {
    const s = evalAt(lo + ((hi - lo) * k) / N).sse;
    if (s < bestSse) { bestSse = s; bestK = k; }
  }
  const h = (hi - lo) / N;
  let a = lo + h * Math.max(0, bestK - 1), b = lo + h * Math.min(N, bestK + 1);
  const g = (Math.sqrt(5) - 1) / 2;
  for (let it = 0; it < 100; it++) {
    const c = b - g * (b - a), d = a + g * (b - a);
    if (evalAt(c).sse < evalAt(d).sse) b = d; else a = c;
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
  const x = points.map((p) => Math.log(p.batch)), y = points.map((p) => Math.log(p.lr));
  const mx = x.reduce((a, v) => a + v, 0) / x.length, my = y.reduce((a, v) => a + v, 0) / y.length;
  const sxx = x.reduce((a, v) => a + (v - mx) ** 2, 0);
  return sxx > 0 ? x.reduce((a, v, i) => a + (v - mx) * (y[i] - my), 0) / sxx : null;
}

function median(xs: number[]): number | null {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (s.length === 0) return null;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
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

export function runDirOf(out: string, eps: number, batch: number, lr: number): string {
  return path.join(out, `eps-${String(eps)}`, `B-${batch}`, lrDirName(lr));
}

export function stepsOf(s: BatchSettings, batch: number): number {
  return Math.max(1, Math.round(s.tokens / (batch * s.config.blockSize)));
}

export function batchTrainOptions(s: BatchSettings, batch: number, eps: number, lr: number, dir: string): TrainOptions {
  const steps = stepsOf(s, batch);
  return withDefaults({
    configName: s.configName,
    config: s.config,
    data: s.data ?? undefined,
    steps,
    batch: batch / 2,
    accum: 2,
    lr,
    minLr: lr,
    warmup: Math.max(1, Math.round(s.warmupFraction * steps)),
    schedule: s.schedule,
    optimizer: s.optimizer,
    optimizerOptions: { eps },
    clip: s.clip,
    evalEvery: Math.max(1, Math.round(steps / s.evalPoints)),
    evalTokens: s.evalTokens,
    checkpointEvery: 0,
    keep: 1,
    out: dir,
    seed: s.seed,
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

async function runOne(opts: TrainOptions, r: Resolved): Promise<{ records: MetricsRecord[]; val_loss: number | null; error?: string; interrupted: boolean }> {
  if (fs.existsSync(opts.out)) fs.rmSync(opts.out, { recursive: true, force: true });
  let val: number | null = null;
  let error: string | undefined;
  let interrupted = false;
  try {
    const res = await trainRun(opts, r.progress, r.shouldStop);
    interrupted = res.interrupted;
    val = res.val_loss;
  } catch (err) {
    if (!(err instanceof TrainingDiverged)) throw err;
    error = err.message;
  }
  fs.rmSync(path.join(opts.out, 'checkpoints'), { recursive: true, force: true });
  const file = path.join(opts.out, 'metrics.jsonl');
  return { records: fs.existsSync(file) ? readMetrics(file) : [], val_loss: val, error, interrupted };
}

class Interrupted extends Error {}

export async function runBatchExperiment(opts: BatchExperimentOptions): Promise<BatchResults> {
  const r = resolveBatchOptions(opts);
  const s = r.settings;
  checkExperimentDir(r.out, 'batch', 'a batch experiment', s);
  ensureOutDir(r.out, '--out'); // one line for an impossible --out (and no spin under /proc)
  const params = paramLayout(s.config).total;
  const records = new Map<string, BatchRunRecord>();
  let pilot: PilotRecord | null = null;
  let interrupted = false;
  let epsValues: number[] = r.epsValues ?? [];

  const save = () => {
    const results = assembleBatchResults(r, epsValues, pilot, records, params, interrupted);
    writeResults(r.out, results);
    return results;
  };

  try {
    // 1. Pilot.
    const pilotDir = path.join(r.out, 'pilot');
    pilot = readSummary<PilotRecord>(pilotDir, (p) => p.steps === s.pilotSteps && p.batch === s.pilotBatch && Array.isArray(p.curve)) ?? null;
    if (pilot) r.log(`pilot: B_simple ${pilot.b_simple?.toPrecision(3)} (done earlier)`);
    else {
      const t0 = performance.now();
      const po = withDefaults({
        configName: s.configName, config: s.config, data: s.data ?? undefined, steps: s.pilotSteps, batch: s.pilotBatch / s.pilotAccum, accum: s.pilotAccum,
        lr: s.pilotLr, minLr: s.pilotLr, warmup: Math.max(1, Math.round(s.warmupFraction * s.pilotSteps)), schedule: 'constant', optimizer: 'adamw',
        optimizerOptions: { eps: s.pilotEps }, clip: s.clip, evalEvery: 0, evalTokens: s.evalTokens, checkpointEvery: 0, keep: 1, out: pilotDir, seed: s.seed,
      });
      const res = await runOne(po, r);
      if (res.interrupted) throw new Interrupted();
      const st = logStats(res.records);
      pilot = {
        batch: s.pilotBatch, accum: s.pilotAccum, steps: s.pilotSteps, lr: s.pilotLr, eps: s.pilotEps, b_simple: st.b_simple_median, b_simple_final: st.b_simple_final,
        grad_rms: st.grad_rms, val_loss: res.val_loss, curve: st.curve, wall_seconds: (performance.now() - t0) / 1000,
      };
      writeSummary(pilotDir, pilot);
      r.log(`pilot: B_simple ${pilot.b_simple?.toPrecision(3)} sequences (median of the second half), gradient RMS ${pilot.grad_rms?.toPrecision(3)}, ${pilot.wall_seconds.toFixed(1)} s`);
    }
    if (r.epsValues === undefined) {
      const g = pilot.grad_rms;
      if (g === null || !(g > 0)) throw new UserError('the pilot measured no gradient RMS: give --eps-values');
      epsValues = [1e-8, sig2(g / 4), sig2(4 * g)];
    }
    // Reuse finished runs.
    for (const eps of epsValues) for (const B of r.batches) for (const lr of r.lrs) {
      const dir = runDirOf(r.out, eps, B, lr);
      const rec = readSummary<BatchRunRecord>(dir, (x) => x.eps === eps && x.batch === B && x.lr === lr && x.tokens === s.tokens && Array.isArray(x.evals));
      if (rec && rec.b_curve === undefined && fs.existsSync(path.join(dir, 'metrics.jsonl'))) {
        rec.b_curve = thin(logStats(readMetrics(path.join(dir, 'metrics.jsonl'))).curve, s.evalPoints * 2);
        writeSummary(dir, rec);
      }
      if (rec) records.set(dir, rec);
    }
    save();

    // 2. The sweeps.
    const nearest = (lr: number) => r.lrs.reduce((bi, x, i) => (Math.abs(Math.log(x / lr)) < Math.abs(Math.log(r.lrs[bi] / lr)) ? i : bi), 0);
    let firstCenter = nearest(r.lrStart);
    for (const eps of epsValues) {
      let center = firstCenter;
      for (const [bi, B] of r.batches.entries()) {
        const loss = new Map<number, number>();
        const run = async (k: number) => {
          const lr = r.lrs[k];
          const dir = runDirOf(r.out, eps, B, lr);
          let rec = records.get(dir);
          if (!rec) {
            const t0 = performance.now();
            const res = await runOne(batchTrainOptions(s, B, eps, lr, dir), r);
            if (res.interrupted) throw new Interrupted();
            const st = logStats(res.records);
            const diverged = res.error !== undefined || res.val_loss === null || !Number.isFinite(res.val_loss) || res.val_loss >= s.initialLoss;
            rec = {
              eps, batch: B, lr, steps: stepsOf(s, B), tokens: s.tokens, diverged, val_loss: res.val_loss !== null && Number.isFinite(res.val_loss) ? res.val_loss : null,
              final_loss: diverged ? s.initialLoss : Math.min(res.val_loss!, s.initialLoss), evals: st.evals, b_simple: st.b_simple_final, b_curve: thin(st.curve, s.evalPoints * 2), grad_rms: st.grad_rms,
              wall_seconds: (performance.now() - t0) / 1000, ...(res.error !== undefined ? { error: res.error } : {}),
            };
            writeSummary(dir, rec);
            records.set(dir, rec);
            r.log(`ε ${eps} B ${B} lr ${lr}: ${rec.diverged ? 'diverged' : `val loss ${rec.val_loss!.toFixed(4)}`}, ${rec.steps} steps, ${rec.wall_seconds.toFixed(1)} s`);
            save();
            if (r.shouldStop?.()) throw new Interrupted();
          }
          loss.set(k, rec.final_loss);
        };
        const lo0 = Math.max(0, Math.min(center - 1, r.lrs.length - 3)), hi0 = Math.min(r.lrs.length - 1, lo0 + 2);
        for (let k = lo0; k <= hi0; k++) await run(k);
        for (;;) {
          const ks = [...loss.keys()].sort((a, b) => a - b);
          const best = ks.reduce((a, k) => (loss.get(k)! < loss.get(a)! ? k : a), ks[0]);
          // Extend until the best has two evaluated lrs on each side (or the grid ends): a
          // flat valley otherwise stops the walk at a shallow local minimum.
          if (best - ks[0] < 2 && ks[0] > 0) await run(ks[0] - 1);
          else if (ks[ks.length - 1] - best < 2 && ks[ks.length - 1] < r.lrs.length - 1) await run(ks[ks.length - 1] + 1);
          else { center = best; break; }
        }
        if (bi === 0 && eps === epsValues[0]) firstCenter = center;
      }
    }
  } catch (err) {
    if (!(err instanceof Interrupted)) throw err;
    interrupted = true;
  }
  const results = save();
  writeBatchReport(r.out, results);
  return results;
}

/** The best run per (ε, B) among those that were run. */
function bestOf(runs: BatchRunRecord[]): BatchRunRecord | undefined {
  let best: BatchRunRecord | undefined;
  for (const m of runs) if (!m.diverged && (best === undefined || m.final_loss < best.final_loss)) best = m;
  return best;
}

function assembleBatchResults(r: Resolved, epsValues: number[], pilot: PilotRecord | null, records: Map<string, BatchRunRecord>, params: number, interrupted: boolean): BatchResults {
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
        batch: B, steps: stepsOf(s, B), lrs_tried: mine.map((m) => m.lr), best_lr: best?.lr ?? null, best_loss: bestLoss,
        at_grid_edge: k === 0 || k === r.lrs.length - 1,
        near_best_lrs: best ? ((xs: number[]) => [Math.min(...xs), Math.max(...xs)] as [number, number])(mine.filter((m) => !m.diverged && m.final_loss <= best.final_loss + NEAR_TIE).map((m) => m.lr)) : null,
        steps_to_target: S, examples_to_target: S === null ? null : S * B, tokens_to_target: S === null ? null : S * B * s.config.blockSize,
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
      eps: e, rows, complete, target, fit, ratio: fit && bNoise ? fit.b_crit / bNoise : null,
      b_simple_at_target: bAt, ratio_at_target: fit && bAt ? fit.b_crit / bAt : null,
      rules, best_rule: rules[0]?.rule ?? null,
      slope: logSlope(lrPts), peak_batch: peak,
    };
  });
  const runs = all.map((m) => ({ ...m, run_dir: path.relative(r.out, runDirOf(r.out, m.eps, m.batch, m.lr)) }));
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

/**
 * `keel experiment lawa` (seed 003): the tiny model at a high and a low learning rate,
 * each run evaluating its raw weights, LAWA (k latest snapshots every ν steps) and an EMA at
 * every evaluation. Measures, from the runs' metrics.jsonl: validation loss of the three over
 * training, the steps LAWA saves to reach given losses, and whether it damps evaluation spikes.
 * Results: OUT/results.json; the command writes OUT/report.html from them (src/experiments/lawa_report.ts).
 */
import path from 'node:path';
import { formatFixed } from '../report/format.ts';
import { UserError } from '../errors.ts';
import { CONFIGS, type GPTConfig } from '../model/config.ts';
import { readMetrics } from '../io/metrics.ts';
import { ensureOutDir } from '../io/out_dir.ts';
import { withDefaults } from '../train/options.ts';
import { writeResults } from './common.ts';
import { Grid, runnerOf, type RunnerOptions, sharedOptions } from './grid.ts';
import type { Curve, LawaResults, LawaRun } from './lawa_results.ts';

/** Not stoppable (no shouldStop): a stopped lawa experiment has no partial results to keep. */
export interface LawaExperimentOptions extends Omit<RunnerOptions, 'shouldStop'> {
  out: string;
  config?: GPTConfig;
  configName?: string;
  data?: string;
  lrs?: number[];
  steps?: number;
  batch?: number;
  k?: number;
  every?: number;
  ema?: number;
  evalEvery?: number;
  evalTokens?: number;
  seed?: number;
}

export async function runLawaExperiment(o: LawaExperimentOptions): Promise<LawaResults> {
  const s = {
    configName: o.configName ?? 'tiny',
    lrs: o.lrs ?? [6e-3, 1e-3],
    steps: o.steps ?? 800,
    batch: o.batch ?? 16,
    k: o.k ?? 6,
    every: o.every ?? 25,
    ema: o.ema ?? 0.99,
    evalEvery: o.evalEvery ?? 25,
    evalTokens: o.evalTokens ?? 32768,
    seed: o.seed ?? 1337,
  };
  const config = o.config ?? CONFIGS.tiny;
  if (s.lrs.length === 0 || s.lrs.some((x) => !(x > 0))) throw new UserError('--lrs: give positive learning rates, e.g. 6e-3,1e-3');
  if (!(s.ema > 0 && s.ema < 1)) throw new UserError(`--ema ${s.ema}: β must be in (0, 1)`);
  ensureOutDir(o.out, '--out'); // one line for an impossible --out (and no spin under /proc)
  const log = o.log ?? ((line: string) => process.stderr.write(`keel experiment lawa: ${line}\n`));
  // Not resumable: every run is trained afresh (results.json holds no settings to check against).
  const grid = new Grid<LawaRun>({ ...runnerOf({ progress: o.progress ?? true, log }), describe });
  for (const lr of s.lrs) {
    const dir = path.join(o.out, `lr-${lr}`);
    await grid.run({
      dir,
      label: `lr ${lr}, ${s.steps} steps (LAWA k=${s.k} every ${s.every}, EMA ${s.ema})`,
      keepCheckpoints: true,
      options: () =>
        withDefaults({
          ...sharedOptions({ ...s, config, data: o.data }, dir),
          steps: s.steps,
          batch: s.batch,
          lr,
          warmup: Math.min(100, Math.floor(s.steps / 10)),
          evalEvery: s.evalEvery,
          lawaK: s.k,
          lawaEvery: s.every,
          ema: s.ema,
        }),
      record: () => analyzeRun(lr, path.relative(o.out, dir), path.join(dir, 'metrics.jsonl')),
    });
  }
  const results: LawaResults = { settings: { ...s, config, data: o.data ?? null }, runs: [...grid.records.values()] };
  writeResults(o.out, results);
  return results;
}

function describe(run: LawaRun): string {
  return `final val loss raw ${formatFixed(run.final.raw, 4)}, LAWA ${formatFixed(run.final.lawa, 4)}, EMA ${formatFixed(run.final.ema, 4)}`;
}

/** The evaluation curves of a run and what the experiment measures on them. */
function analyzeRun(lr: number, runDir: string, metricsFile: string): LawaRun {
  const byStep = new Map<number, Record<string, unknown>>();
  for (const m of readMetrics(metricsFile)) if (typeof m.step === 'number' && 'val_loss' in m) byStep.set(m.step, m);
  const steps = [...byStep.keys()].sort((a, b) => a - b);
  const num = (v: unknown) => (typeof v === 'number' ? v : null);
  const curve: Curve = {
    step: steps,
    raw: steps.map((x) => num(byStep.get(x)!.val_loss) ?? NaN),
    lawa: steps.map((x) => num(byStep.get(x)!.val_loss_lawa)),
    ema: steps.map((x) => num(byStep.get(x)!.val_loss_ema)),
  };
  return {
    lr,
    run_dir: runDir,
    curve,
    targets: stepsToTargets(curve),
    rises: {
      raw: rises(curve.raw),
      lawa: rises(curve.lawa),
      ema: rises(curve.ema),
    },
    final: { raw: curve.raw.at(-1) ?? null, lawa: curve.lawa.at(-1) ?? null, ema: curve.ema.at(-1) ?? null },
    best: { raw: minOf(curve.raw), lawa: minOf(curve.lawa), ema: minOf(curve.ema) },
  };
}

const minOf = (xs: (number | null)[]) => {
  const f = xs.filter((x): x is number => x !== null && Number.isFinite(x));
  return f.length ? Math.min(...f) : null;
};

/** First step at which a curve is at or below `target` (null: never). */
export function firstReach(steps: number[], ys: (number | null)[], target: number): number | null {
  for (let i = 0; i < steps.length; i++) if (ys[i] !== null && ys[i]! <= target) return steps[i];
  return null;
}

/**
 * Loss targets: the raw curve's values at 20%, 40%, 60%, 80% and 100% of its evaluations (so the
 * raw weights reach each), with the first step each of raw, LAWA and EMA gets there.
 */
export function stepsToTargets(c: Curve): LawaRun['targets'] {
  const n = c.step.length;
  if (n === 0) return [];
  const idx = [0.2, 0.4, 0.6, 0.8, 1].map((f) => Math.max(0, Math.ceil(f * n) - 1));
  const losses = [...new Set(idx.map((i) => Math.min(...c.raw.slice(0, i + 1).filter(Number.isFinite))))];
  return losses.map((loss) => ({
    loss,
    raw: firstReach(c.step, c.raw, loss)!,
    lawa: firstReach(c.step, c.lawa, loss),
    ema: firstReach(c.step, c.ema, loss),
  }));
}

/** Rises between consecutive evaluations: their sum and the largest (0 for a monotone curve). */
export function rises(ys: (number | null)[]): { total: number; max: number } {
  let total = 0;
  let max = 0;
  let prev: number | null = null;
  for (const y of ys) {
    if (y === null || !Number.isFinite(y)) continue;
    if (prev !== null && y > prev) {
      total += y - prev;
      max = Math.max(max, y - prev);
    }
    prev = y;
  }
  return { total, max };
}

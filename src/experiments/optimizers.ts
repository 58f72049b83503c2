/**
 * `keel experiment optimizers` as a library: every optimizer on the same model and data, each at
 * its best learning rate from a short sweep, compared on validation loss, optimizer-state memory
 * and throughput.
 *
 * For each optimizer: sweep runs of `sweepSteps` steps at lr = recommended lr × each factor,
 * scored by their final validation loss (a diverged run scores +∞ and is recorded, not fatal),
 * then one final run of `steps` steps at the best lr. Every run is a normal run directory:
 *
 *   out/<optimizer>/lr-<lr>/   sweep runs (checkpoints pruned unless keepSweepCheckpoints)
 *   out/<optimizer>/final/     the final run
 *   out/results.json           settings and per-optimizer results, rewritten after every run
 *   out/report.html            table, validation-loss curves, memory and throughput (optimizers_report.ts;
 *                              the command writes it from the results)
 *
 * A finished run leaves `summary.json` in its directory; running again with the same `out` and
 * settings reuses those and redoes only what is missing (an interrupted run is started over).
 */
import path from 'node:path';
import { UserError } from '../errors.ts';
import { checkCorpusSize, loadCorpus } from '../data/corpus.ts';
import { CONFIGS, type GPTConfig } from '../model/config.ts';
import { paramLayout } from '../model/params.ts';
import { createOptimizer, OPTIMIZER_NAMES, optimizerEntry } from '../optim/registry.ts';
import { stateBytes } from '../optim/state.ts';
import { withDefaults } from '../train/options.ts';
import { checkExperimentDir, checkSeed, lrDirName, positiveInt, writeResults } from './common.ts';
import { Grid, type Runner, runnerOf, type RunnerOptions, type RunOutcome, sharedOptions } from './grid.ts';
import { ensureOutDir } from '../io/out_dir.ts';
import {
  DEFAULT_LR_FACTORS,
  STATE_TARGET,
  VAL_LOSS_TARGET,
  type OptimizerExperimentResults,
  type OptimizerExperimentSettings,
  type OptimizerResult,
  type OptimizerRunRecord,
  type SweepPoint,
} from './optimizers_results.ts';

export interface OptimizerExperimentOptions extends RunnerOptions {
  /** Experiment directory; reused (completed runs skipped) when it holds this experiment already. */
  out: string;
  /** Default: every optimizer of the registry. */
  optimizers?: string[];
  /** Steps of each final run (default 600). */
  steps?: number;
  /** Steps of each sweep run (default 150). */
  sweepSteps?: number;
  /** Sweep grid: the optimizer's recommended lr times each factor (default [1/3, 1, 3]). */
  lrFactors?: number[];
  /** Sequences per step (default 16). */
  batch?: number;
  /** Model (default the `tiny` preset) and the name it is recorded under. */
  config?: GPTConfig;
  configName?: string;
  /** Corpus file or directory; undefined = the built-in corpus. */
  data?: string;
  /** Validation tokens per evaluation (default 65536). */
  evalTokens?: number;
  /** Evaluate final runs every this many steps, for the curves (default steps/10; sweeps only at the end). */
  evalEvery?: number;
  seed?: number;
  /** Keep the sweep runs' checkpoints (default: pruned after the run; final runs keep theirs). */
  keepSweepCheckpoints?: boolean;
}

/** The sweep's learning rates: 3 significant digits, so the value and its directory name agree. */
export function sweepLrs(recommended: number, factors: number[]): { lr: number; factor: number }[] {
  const out: { lr: number; factor: number }[] = [];
  for (const factor of factors) {
    const lr = Number((recommended * factor).toPrecision(3));
    if (!out.some((p) => p.lr === lr)) out.push({ lr, factor });
  }
  return out.sort((a, b) => a.lr - b.lr);
}

interface Resolved {
  out: string;
  optimizers: string[];
  lrFactors: number[];
  settings: OptimizerExperimentSettings;
  keepSweepCheckpoints: boolean;
  runner: Runner;
}

/** Checks everything the runs need before anything is written; throws UserError naming the problem. */
function resolveOptimizerOptions(o: OptimizerExperimentOptions): Resolved {
  const optimizers = [...new Set(o.optimizers ?? OPTIMIZER_NAMES)];
  if (optimizers.length === 0) throw new UserError(`--optimizers is empty: name one or more of ${OPTIMIZER_NAMES.join(', ')}`);
  for (const name of optimizers) optimizerEntry(name); // unknown name → UserError listing the known ones
  const lrFactors = [...(o.lrFactors ?? DEFAULT_LR_FACTORS)];
  if (lrFactors.length === 0) throw new UserError('--lr-factors is empty: give one or more positive numbers, e.g. 0.333,1,3');
  for (const f of lrFactors) {
    if (!Number.isFinite(f) || f <= 0) throw new UserError(`--lr-factors must be positive numbers, got ${f}`);
  }
  const config = o.config ?? { ...CONFIGS.tiny };
  const steps = positiveInt('--steps', o.steps ?? 600);
  const sweepSteps = positiveInt('--sweep-steps', o.sweepSteps ?? 150);
  const batch = positiveInt('--batch', o.batch ?? 16);
  const evalTokens = positiveInt('--eval-tokens', o.evalTokens ?? 65536);
  if (evalTokens < config.blockSize + 1) {
    throw new UserError(`--eval-tokens ${evalTokens} is too few: one window needs block size + 1 = ${config.blockSize + 1} tokens`);
  }
  const evalEvery = positiveInt('evalEvery', o.evalEvery ?? Math.max(1, Math.round(steps / 10)));
  const seed = checkSeed(o.seed ?? 1337);
  const data = o.data === undefined ? undefined : path.resolve(o.data);
  checkCorpusSize(loadCorpus(data), config.blockSize); // bad data fails here, before out is touched
  for (const name of optimizers) runOptions(name, optimizerEntry(name).train.lr); // options valid
  return {
    out: path.resolve(o.out),
    optimizers,
    lrFactors,
    settings: {
      configName: o.configName ?? (o.config ? 'custom' : 'tiny'),
      config,
      data: data ?? null,
      steps,
      sweepSteps,
      batch,
      evalTokens,
      evalEvery,
      seed,
      schedule: 'cosine',
      clip: 1,
    },
    keepSweepCheckpoints: o.keepSweepCheckpoints ?? false,
    runner: runnerOf(o),
  };
}

/** Exact optimizer-state bytes for a model, without training (for runs that diverged before reporting it). */
function plannedStateBytes(name: string, options: Record<string, unknown>, config: GPTConfig): { bytes: number; params: number } {
  const layout = paramLayout(config);
  const opt = createOptimizer(name, options);
  return { bytes: stateBytes(opt.init(new Float32Array(layout.total), layout.tensors)), params: layout.total };
}

/**
 * The options a run is created with: the registry's recommended ones. An optimizer that refuses
 * to be built without an lr (Adafactor with relativeStep=false) also gets the run's peak lr; the
 * trainer still passes the schedule's lr at every step, which takes precedence.
 */
function runOptions(name: string, lr: number): Record<string, unknown> {
  const options = { ...optimizerEntry(name).train.options };
  try {
    createOptimizer(name, options);
    return options;
  } catch (err) {
    if (!(err instanceof UserError) || 'lr' in options) throw err;
    createOptimizer(name, { ...options, lr }); // throws its own message when lr is not the problem
    return { ...options, lr };
  }
}

interface Plan {
  name: string;
  recommendedLr: number;
  options: Record<string, unknown>;
  grid: { lr: number; factor: number }[];
}

export async function runOptimizerExperiment(opts: OptimizerExperimentOptions): Promise<OptimizerExperimentResults> {
  const r = resolveOptimizerOptions(opts);
  checkExperimentDir(r.out, 'optimizers', 'an optimizer experiment', r.settings);
  ensureOutDir(r.out, '--out'); // one line for an impossible --out (and no spin under /proc)
  const params = paramLayout(r.settings.config).total;
  const plans: Plan[] = r.optimizers.map((name) => {
    const entry = optimizerEntry(name);
    return { name, recommendedLr: entry.train.lr, options: { ...entry.train.options }, grid: sweepLrs(entry.train.lr, r.lrFactors) };
  });
  const save = () => {
    const results = assembleResults(r, plans, grid.records, params, grid.interrupted);
    writeResults(r.out, results);
    return results;
  };
  const grid: Grid<OptimizerRunRecord> = new Grid({
    ...r.runner,
    describe,
    saved: save,
    total: plans.reduce((a, p) => a + p.grid.length + 1, 0),
  });
  reuseFinished(r, plans, grid);
  save();
  await grid.untilInterrupted(async () => {
    for (const plan of plans) await sweepThenFinal(r, plan, grid);
  });
  return save();
}

/** Runs finished by an earlier invocation count in results.json from the start. */
function reuseFinished(r: Resolved, plans: Plan[], grid: Grid<OptimizerRunRecord>): void {
  const s = r.settings;
  for (const plan of plans) {
    for (const g of plan.grid)
      grid.reuse(path.join(r.out, plan.name, lrDirName(g.lr)), (rec) => finished(rec) && rec.steps === s.sweepSteps && rec.lr === g.lr);
    grid.reuse(path.join(r.out, plan.name, 'final'), (rec) => finished(rec) && rec.steps === s.steps);
  }
}

const finished = (rec: OptimizerRunRecord) => rec.status === 'ok' || rec.status === 'diverged';

/** One optimizer: the sweep, then the final run at its best lr (none when every sweep run diverged). */
async function sweepThenFinal(r: Resolved, plan: Plan, grid: Grid<OptimizerRunRecord>): Promise<void> {
  let best: { lr: number; loss: number } | undefined;
  for (const { lr } of plan.grid) {
    const rec = await grid.run(runJob(r, plan.name, 'sweep', lr));
    const loss = rec.val_loss ?? Infinity;
    if (loss < (best?.loss ?? Infinity)) best = { lr, loss };
  }
  if (!best) {
    grid.skip();
    r.runner.log(`${plan.name}: every sweep run diverged; no final run`);
    return;
  }
  const finalDir = path.join(r.out, plan.name, 'final');
  if (grid.records.get(finalDir)?.lr !== best.lr) grid.records.delete(finalDir); // a final run at another lr is redone
  await grid.run(runJob(r, plan.name, 'final', best.lr));
}

/** A sweep or final run of one optimizer at `lr`. */
function runJob(r: Resolved, name: string, kind: 'sweep' | 'final', lr: number) {
  const s = r.settings;
  const dir = path.join(r.out, name, kind === 'final' ? 'final' : lrDirName(lr));
  const steps = kind === 'final' ? s.steps : s.sweepSteps;
  const options = runOptions(name, lr);
  return {
    dir,
    label: `${name} ${kind} lr ${lr} (${steps} steps)`,
    keepCheckpoints: kind === 'final' || r.keepSweepCheckpoints,
    options: () =>
      withDefaults({
        ...sharedOptions(s, dir),
        steps,
        batch: s.batch,
        accum: 1,
        lr,
        minLr: lr / 10,
        warmup: Math.min(100, Math.floor(steps / 10)),
        schedule: s.schedule,
        optimizer: name,
        optimizerOptions: options,
        evalEvery: kind === 'final' ? s.evalEvery : 0,
      }),
    record: (o: RunOutcome) => runRecord(s, { optimizer: name, kind, lr, steps }, options, o),
  };
}

/** summary.json of a run; a run that diverged before reporting its state gets the planned state size. */
function runRecord(
  s: OptimizerExperimentSettings,
  base: Pick<OptimizerRunRecord, 'optimizer' | 'kind' | 'lr' | 'steps'>,
  options: Record<string, unknown>,
  o: RunOutcome,
): OptimizerRunRecord {
  const sum = o.summary;
  if (!sum) {
    const planned = plannedStateBytes(base.optimizer, options, s.config);
    return {
      ...base,
      status: 'diverged',
      val_loss: null,
      train_loss: null,
      tokens_per_s: null,
      seconds: null,
      wall_seconds: o.wall_seconds,
      params: planned.params,
      state_bytes: planned.bytes,
      state_bytes_per_param: planned.bytes / planned.params,
      error: o.error,
    };
  }
  const finite = sum.val_loss !== null && Number.isFinite(sum.val_loss);
  return {
    ...base,
    status: finite ? 'ok' : 'diverged',
    val_loss: finite ? sum.val_loss : null,
    train_loss: Number.isFinite(sum.train_loss) ? sum.train_loss : null,
    tokens_per_s: sum.tokens_per_s,
    seconds: sum.seconds,
    wall_seconds: o.wall_seconds,
    params: sum.params,
    state_bytes: sum.optimizer_state_bytes,
    state_bytes_per_param: sum.optimizer_state_bytes_per_param,
    ...(finite ? {} : { error: `validation loss is ${sum.val_loss}` }),
  };
}

function describe(rec: OptimizerRunRecord): string {
  if (rec.status === 'diverged') return `diverged (${rec.error ?? 'non-finite loss'})`;
  return `val loss ${rec.val_loss!.toFixed(4)}, ${Math.round(rec.tokens_per_s ?? 0)} tok/s, ${rec.wall_seconds.toFixed(1)} s`;
}

/** results.json from the runs so far (pure apart from the paths). */
function assembleResults(
  r: Resolved,
  plans: Plan[],
  records: Map<string, OptimizerRunRecord>,
  params: number,
  interrupted: boolean,
): OptimizerExperimentResults {
  const rel = (dir: string) => path.relative(r.out, dir);
  const optimizers: OptimizerResult[] = plans.map((plan) => {
    const sweep: SweepPoint[] = [];
    for (const { lr, factor } of plan.grid) {
      const dir = path.join(r.out, plan.name, lrDirName(lr));
      const rec = records.get(dir);
      if (rec) sweep.push({ lr, factor, val_loss: rec.val_loss, diverged: rec.status === 'diverged', run_dir: rel(dir) });
    }
    const sweepDone = sweep.length === plan.grid.length;
    let best: SweepPoint | undefined;
    for (const p of sweep) if (p.val_loss !== null && (best === undefined || p.val_loss < best.val_loss!)) best = p;
    const finalDir = path.join(r.out, plan.name, 'final');
    const finRec = records.get(finalDir);
    const fin = finRec && sweepDone && best && finRec.lr === best.lr ? finRec : undefined; // not a stale one
    const status: OptimizerResult['status'] = fin ? fin.status : sweepDone && !best ? 'all_sweep_runs_diverged' : 'incomplete';
    return {
      optimizer: plan.name,
      recommended_lr: plan.recommendedLr,
      options: plan.options,
      sweep,
      best_lr: sweepDone && best ? best.lr : null,
      best_at_edge: sweepDone && !!best && plan.grid.length > 1 && (best.lr === plan.grid[0].lr || best.lr === plan.grid[plan.grid.length - 1].lr),
      status,
      val_loss: fin?.val_loss ?? null,
      train_loss: fin?.train_loss ?? null,
      state_bytes: fin?.state_bytes ?? null,
      state_bytes_per_param: fin?.state_bytes_per_param ?? null,
      state_ratio_vs_adamw: null,
      val_loss_ratio_vs_adamw: null,
      tokens_per_s: fin?.tokens_per_s ?? null,
      seconds: fin?.seconds ?? null,
      run_dir: fin ? rel(finalDir) : null,
    };
  });
  const adamw = optimizers.find((o) => o.optimizer === 'adamw');
  for (const o of optimizers) {
    if (adamw?.state_bytes && o.state_bytes !== null) o.state_ratio_vs_adamw = o.state_bytes / adamw.state_bytes;
    if (adamw?.val_loss && o.val_loss !== null) o.val_loss_ratio_vs_adamw = o.val_loss / adamw.val_loss;
  }
  const af = optimizers.find((o) => o.optimizer === 'adafactor');
  const stateRatio = af?.state_ratio_vs_adamw ?? null;
  const valRatio = af?.val_loss_ratio_vs_adamw ?? null;
  const stateOk = stateRatio === null ? null : stateRatio <= STATE_TARGET;
  const valOk = valRatio === null ? null : valRatio <= 1 + VAL_LOSS_TARGET;
  const complete = optimizers.every((o) => o.status !== 'incomplete');
  return {
    version: 1,
    experiment: 'optimizers',
    settings: r.settings,
    lr_factors: r.lrFactors,
    params,
    complete,
    interrupted,
    optimizers,
    adafactor_target: {
      state_limit: STATE_TARGET,
      val_loss_limit: VAL_LOSS_TARGET,
      state_ratio: stateRatio,
      val_loss_ratio: valRatio,
      adafactor_val_loss: af?.val_loss ?? null,
      adamw_val_loss: adamw?.val_loss ?? null,
      state_ok: stateOk,
      val_loss_ok: valOk,
      met: stateOk === null || valOk === null ? null : stateOk && valOk,
    },
    updated: new Date().toISOString(),
  };
}

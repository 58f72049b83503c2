/**
 * The training loop. Each optimizer step runs the same named phases, in this order:
 *
 *   planStep        the step's batch and lr (what the controller set), faults, a snapshot when due
 *   accumulate      forward/backward over the micro-batches (noise-scale sums on the way)
 *   finishStep      fault, emulated precision: the gradient the optimizer sees, its norm
 *   ask             one step report to the controller (src/control), one decision back
 *   act             apply the update, or skip it, or roll back, or stop — as decided
 *   afterStep       averages, evaluation, checkpoint, progress
 *
 * All of it works on one Run (the parts, built once) and its RunState (what changes). Every
 * report and decision also goes to control.jsonl, so the controller's choices can be replayed
 * without the model (src/control/replay.ts).
 */
import fs from 'node:fs';
import path from 'node:path';
import { RecoveryExhausted, TrainingDiverged, UserError } from '../errors.ts';
import { Batcher } from '../data/batcher.ts';
import type { Tokens } from '../data/tokens.ts';
import { checkCorpusSize, corpusSplits, corpusTokenizer, loadCorpus, type Corpus } from '../data/corpus.ts';
import { MetricsLog } from '../io/metrics.ts';
import { writeFileAtomic } from '../io/atomic.ts';
import { removeTempCheckpoints } from '../io/run_layout.ts';
import { lockRunDir } from '../io/lock.ts';
import { TensorBoardWriter } from '../io/tensorboard.ts';
import { nativeKernels } from '../kernels/native.ts';
import type { Kernels } from '../kernels/types.ts';
import { GPT } from '../model/gpt.ts';
import { createOptimizer } from '../optim/registry.ts';
import { loadStateTensors, stateBytes, stateMetadata, stateTensors } from '../optim/state.ts';
import type { Optimizer, OptState } from '../optim/types.ts';
import { embeddingDrift } from '../monitor/embedding.ts';
import { Rng } from '../util/rng.ts';
import { Guards } from '../guard/guards.ts';
import { Diagnostics } from '../monitor/diagnostics.ts';
import { Lawa } from '../average/lawa.ts';
import { NoiseScale, noiseLogFields, type NoiseRecord } from '../monitor/noise_scale.ts';
import { Ema } from '../average/ema.ts';
import { copyTensors, modelMetadata, namedTensors } from '../model/checkpoint.ts';
import type { ParamLayout } from '../model/params.ts';
import { readSafetensors } from '../io/safetensors.ts';
import { Controller } from '../control/controller.ts';
import { finiteOrNull, REPORT_VERSION, type Decision, type Policy, type RunFacts, type StepReport } from '../control/types.ts';
import { learningRate, type ScheduleOptions } from '../schedule/lr.ts';
import { evaluate } from './evaluate.ts';
import {
  checkpointDir,
  listCheckpoints,
  loadCheckpoint,
  pruneCheckpoints,
  runDirOf,
  saveCheckpoint,
  type Checkpoint,
  type TrainerState,
} from './checkpoints.ts';
import { policyOf, runFactsOf, type TrainOptions } from './options.ts';
import { RestoreStore } from './restore.ts';
import { preflight, protectionNote, startLine } from './preflight.ts';
import { makeDirs } from '../io/out_dir.ts';

export type { TrainOptions } from './options.ts';

export interface TrainSummary {
  run_dir: string;
  steps: number;
  tokens: number;
  train_loss: number;
  val_loss: number | null;
  tokens_per_s: number;
  seconds: number;
  params: number;
  /** The last measured simple noise scale (sequences, tokens); null when not measured. */
  b_simple: number | null;
  b_simple_tokens: number | null;
  /** Spikes detected, steps skipped and rollbacks done (the recovery ladder, src/control/ladder.ts). */
  spikes: number;
  skipped_steps: number;
  rollbacks: number;
  optimizer: string;
  /** Bytes of optimizer state, and per parameter (AdamW: 8). */
  optimizer_state_bytes: number;
  optimizer_state_bytes_per_param: number;
  interrupted: boolean;
}

/** Where progress goes: the CLI passes its progress bar, tests and quiet callers nothing. */
export interface ProgressSink {
  update(step: number, fields?: Record<string, string | number>): void;
  log(line: string): void;
  done(): void;
}

/** Follows a run from outside: src/serve/mirror.ts sends it to keel serve (keel train --serve). */
export interface RunObserver {
  start(info: { policy: Policy; run: RunFacts; resumed: boolean }): void;
  step(report: StepReport, decision: Decision): void;
  evaluation(step: number, metrics: Record<string, number>): void;
  checkpoint(step: number, data: number, path: string): void;
}

export interface TrainHooks {
  /** Return true to stop after the current step (Ctrl-C), writing a checkpoint. */
  shouldStop?: () => boolean;
  progress?: ProgressSink | false;
  /** Follows the run's reports, decisions, evaluations and checkpoints (keel train --serve). */
  observer?: RunObserver;
}

/** The parts of a run, built once. */
interface Run {
  o: TrainOptions;
  dir: string;
  kernels: Kernels;
  model: GPT;
  batcher: Batcher;
  valTokens: Tokens;
  /** Rebuilt per step when --opt-schedule moves an option. */
  optimizer: Optimizer;
  baseOptions: Record<string, unknown>;
  opt: OptState;
  /** Tiger folds accumulation into its momentum: one optimizer call per micro-batch, no skip or rollback. */
  folds: boolean;
  guards: Guards;
  controller: Controller;
  restore: RestoreStore;
  noise: NoiseScale | null;
  diag: Diagnostics | null;
  lawa: Lawa | null;
  ema: Ema | null;
  /** Scratch for evaluating averages (the raw weights wait here) and LAWA's average. */
  scratch: Float32Array | null;
  lawaAvg: Float32Array | null;
  schedule: ScheduleOptions;
  faultRng: Rng;
  log: MetricsLog;
  control: MetricsLog;
  progress: ProgressSink | null;
  observer: RunObserver | null;
  s: RunState;
}

/** What changes as the run trains. */
interface RunState {
  step: number;
  tokens: number;
  elapsedMs: number;
  /** Batch and LR multiplier in effect: set by the controller's decisions. */
  batch: number;
  lrMultiplier: number;
  /** The batch of the previous step (batch_change events). */
  lastBatch: number | null;
  lastNoise: NoiseRecord | null;
  trainLoss: number;
  valLoss: number | null;
  skips: number;
  rollbacks: number;
  /** This session's training time and tokens (tokens/s). */
  trainMs: number;
  trainedTokens: number;
}

/** One step's plan. */
interface Plan {
  n: number;
  attempt: number;
  batch: number;
  accum: number;
  lr: number;
  gradFault: { scale: number } | null;
  cursorFrom: number;
  t0: number;
  /** The step report sent to the controller (ask). */
  report?: StepReport;
}

/** One step's gradient and what was measured on the way. */
interface Grad {
  loss: number;
  /** Σ over micro-batches of the mean (log Z)². */
  zsq: number;
  /** ‖g‖² of the step (folded: Σ over micro-batches). */
  norm2: number;
  gradNorm: number;
  zeroFrac: number | null;
  noise: NoiseRecord | null;
  skippedTensors: Set<string>;
  diagRecord: Record<string, unknown> | null;
}

/** Starts a new run in opts.out, or continues one from `resume` (a loaded checkpoint, or a checkpoint or run dir). */
export async function train(given: TrainOptions, hooks: TrainHooks = {}, resume?: string | Checkpoint): Promise<TrainSummary> {
  const ckpt = typeof resume === 'string' ? loadCheckpoint(resume) : resume;
  // Resolved once, so trainer.json, config.json and the checkpoints' metadata all name it.
  const opts: TrainOptions = { ...given, tokenizer: corpusTokenizer(given.data, given.tokenizer) };
  const place = openRunDir(opts, ckpt);
  let run: Run;
  try {
    run = setUp(opts, hooks, ckpt, place);
  } catch (e) {
    place.lock.release();
    throw e;
  }
  const { s } = run;
  const startStep = s.step;
  let interrupted = false;
  try {
    while (s.step < opts.steps) {
      const plan = planStep(run);
      const g = accumulate(run, plan);
      finishStep(run, plan, g);
      const d = ask(run, plan, g);
      if (act(run, plan, g, d) === 'rolled_back') continue;
      afterStep(run, plan, g);
      await new Promise((resolve) => setImmediate(resolve)); // let signal handlers (Ctrl-C) run
      if (hooks.shouldStop?.()) {
        interrupted = true;
        break;
      }
    }
    if (interrupted && s.step > startStep && !listCheckpoints(run.dir).includes(s.step)) save(run);
  } finally {
    run.progress?.done();
    run.log.close();
    run.control.close();
    place.lock.release();
  }
  return summarise(run, interrupted);
}

interface Place {
  dir: string;
  corpus: Corpus;
  lock: { release(): void };
}

/**
 * The run directory, made (a new run) or tidied (a resumed one: a kill during a checkpoint
 * leaves its temporary directory) and locked for this process; the corpus, checked first, so a
 * rejected corpus leaves no (empty) run directory behind.
 */
function openRunDir(o: TrainOptions, ckpt: Checkpoint | undefined): Place {
  const dir = ckpt ? runDirOf(ckpt.dir) : path.resolve(o.out);
  preflight(o, !ckpt, dir); // vocabulary, --out, memory: refused before anything is allocated or written
  const corpus = loadCorpus(o.data, o.tokenizer);
  checkCorpusSize(corpus, o.config.blockSize);
  if (!ckpt) prepareRunDir(dir);
  const lock = lockRunDir(dir);
  if (ckpt) removeTempCheckpoints(dir);
  return { dir, corpus, lock };
}

function setUp(o: TrainOptions, hooks: TrainHooks, ckpt: Checkpoint | undefined, { dir, corpus }: Place): Run {
  const cfg = o.config;
  const { train: trainTokens, val: valTokens } = corpusSplits(corpus);
  const kernels = nativeKernels();
  const model = new GPT(cfg, kernels, { maxBatch: o.batch, zLoss: o.zLoss ?? 0, precision: o.precision ?? 'fp32' });
  const batcher = new Batcher({ tokens: trainTokens, B: o.batch, T: cfg.blockSize, seed: o.seed });
  const guards = new Guards(o, o.steps);
  const policy = policyOf(o);
  const probe = createOptimizer(o.optimizer, o.optimizerOptions);
  // Skipping or rolling back a step needs the whole step's gradient first, so folding is only
  // for runs that never do either (the result is the same: Tiger's momentum is linear in g).
  const folds = probe.foldsAccumulation && o.accum > 1 && policy.on_spike === 'none' && !o.batchRamp;
  const baseOptions = folds ? { ...o.optimizerOptions, accumSteps: o.accum } : o.optimizerOptions;
  const optimizer = createOptimizer(o.optimizer, baseOptions);
  const opt = optimizer.init(model.params, model.layout.tensors);
  const facts = runFactsOf(o, model.numParams, Number(optimizer.options.eps ?? 0));
  const controller = ckpt?.state.controller ? Controller.fromJSON(ckpt.state.controller, policy, facts) : new Controller(policy, facts);
  const s = initialState(controller, ckpt);
  if (ckpt) {
    model.params.set(ckpt.params);
    loadStateTensors(optimizer, opt, ckpt.optimizer.tensors, ckpt.optimizer.metadata, ckpt.optimizer.path);
    ({ step: s.step, tokens: s.tokens, elapsedMs: s.elapsedMs } = ckpt.state);
    batcher.cursor = ckpt.state.cursor;
    guards.restore(ckpt.state.guard);
    if (!fs.existsSync(path.join(dir, 'config.json'))) writeConfig(dir, o, model, corpus.name, opt);
  } else {
    model.init(o.seed);
    writeConfig(dir, o, model, corpus.name, opt);
  }
  const lawa = o.lawaK ? new Lawa(model.numParams, o.lawaK, o.lawaEvery ?? 50) : null;
  const ema = o.ema ? new Ema(kernels, model.numParams, o.ema, o.emaWarmup ?? false) : null;
  if (ckpt) restoreAverages(ckpt.dir, model.layout, lawa, ema);
  const noise =
    o.noiseScale === false
      ? null
      : ckpt?.state.noise
        ? NoiseScale.fromJSON(model.layout.tensors, model.numParams, ckpt.state.noise as never)
        : new NoiseScale(model.layout.tensors, model.numParams, { folded: folds });
  const { log, control } = openLogs(o, dir, controller, ckpt, s.step);
  const restore = new RestoreStore(dir, controller, policy.on_spike === 'none' ? null : controller.policy.rollback_steps, model.numParams, opt.slots, (m) =>
    control.write(m),
  );
  restore.sync(); // a resumed run has no snapshots in memory
  const progress = hooks.progress || null;
  const observer = hooks.observer ?? null;
  observer?.start({ policy: controller.policy, run: controller.run, resumed: ckpt !== undefined });
  announce(progress, { model, s, corpus, dir, controller, resumed: ckpt !== undefined });
  return {
    o,
    dir,
    kernels,
    model,
    batcher,
    valTokens,
    optimizer,
    baseOptions,
    opt,
    folds,
    guards,
    controller,
    restore,
    noise,
    diag: o.diagEvery ? new Diagnostics(model.layout.tensors, model.numParams, { every: o.diagEvery }) : null,
    lawa,
    ema,
    scratch: lawa || ema ? new Float32Array(model.numParams) : null,
    lawaAvg: lawa ? new Float32Array(model.numParams) : null,
    schedule: { kind: o.schedule, lr: o.lr, minLr: o.minLr, warmup: o.warmup, steps: o.steps, points: o.lrPoints },
    // Random tokens for bad-batch fire drills: seeded, so a run with faults is reproducible.
    faultRng: new Rng(o.seed ^ 0x5eed),
    log,
    control,
    progress,
    observer,
    s,
  };
}

/** A fresh run's counters; a resumed one's step, tokens and time are then read from its checkpoint. */
function initialState(controller: Controller, ckpt: Checkpoint | undefined): RunState {
  return {
    step: 0,
    tokens: 0,
    elapsedMs: 0,
    batch: controller.inEffect.batch,
    lrMultiplier: controller.inEffect.lr_multiplier,
    lastBatch: ckpt?.state.batch?.last ?? null,
    lastNoise: null,
    trainLoss: NaN,
    valLoss: null,
    skips: 0,
    rollbacks: 0,
    trainMs: 0,
    trainedTokens: 0,
  };
}

/** metrics.jsonl (teed to TensorBoard when asked) and control.jsonl, each opened with the run's start or resume. */
function openLogs(o: TrainOptions, dir: string, controller: Controller, ckpt: Checkpoint | undefined, step: number) {
  const log = new MetricsLog(path.join(dir, 'metrics.jsonl'));
  if (o.tensorboard) log.tee(new TensorBoardWriter(o.tensorboard));
  const control = new MetricsLog(path.join(dir, 'control.jsonl'));
  if (ckpt) log.write({ event: 'resume', step, from: ckpt.dir });
  control.write(ckpt ? { t: 'resume', step, state: controller.toJSON() } : { t: 'start', policy: controller.policy, run: controller.run });
  return { log, control };
}

/**
 * The start line, then recovery's arming. The noise scale is measured only with ≥ 2 micro-batches
 * a step; otherwise nothing is said here (keel plan --from, which needs it, explains).
 */
function announce(
  progress: Run['progress'],
  r: { model: GPT; s: RunState; corpus: Place['corpus']; dir: string; controller: Controller; resumed: boolean },
): void {
  const { model, s, corpus } = r;
  const dataTokens = corpus.tokens.length + (corpus.val?.length ?? 0);
  const tokensPerStep = s.batch * model.config.blockSize;
  progress?.log(
    startLine({
      params: model.numParams,
      tokensPerStep,
      dataName: corpus.name,
      dataTokens,
      tokenizer: corpus.tokenizer,
      dir: r.dir,
      resumedAt: r.resumed ? s.step : undefined,
    }),
  );
  const armed = protectionNote(r.controller, s.step);
  if (armed) progress?.log(armed);
}

/** The step's batch and lr as the controller set them, the faults that fire, a snapshot when due. */
function planStep(run: Run): Plan {
  const { s, o, guards } = run;
  const n = s.step + 1;
  const attempt = run.controller.attempt;
  run.restore.snapshotIfDue(s.step, s.tokens, run.batcher.cursor, run.model.params, run.opt);
  let gradFault: Plan['gradFault'] = null;
  for (const f of guards.faults.startingAt(n, attempt)) {
    run.log.write({ event: 'fault', ...f, attempt });
    if (f.kind === 'bad-batch') guards.badBatchesLeft += f.n;
    if (f.kind === 'nan-grad') gradFault = { scale: NaN };
    if (f.kind === 'grad-scale') gradFault = { scale: f.x };
  }
  const B = s.batch;
  const accum = B / o.batch;
  if (B !== s.lastBatch && o.batchRamp) run.log.write({ event: 'batch_change', step: n, batch: B, accum, lr_scale: s.lrMultiplier });
  s.lastBatch = B;
  const lr = learningRate(run.schedule, n) * guards.faults.lrScale(n, attempt) * s.lrMultiplier;
  if (guards.schedules.length > 0) run.optimizer = createOptimizer(o.optimizer, { ...run.baseOptions, ...guards.scheduledOptions(n) });
  return { n, attempt, batch: B, accum, lr, gradFault, cursorFrom: run.batcher.cursor, t0: performance.now() };
}

/** Forward and backward over the step's micro-batches; folded runs also step the optimizer per micro-batch. */
function accumulate(run: Run, p: Plan): Grad {
  const { model, o, noise } = run;
  const g: Grad = { loss: 0, zsq: 0, norm2: 0, gradNorm: 0, zeroFrac: null, noise: null, skippedTensors: new Set(), diagRecord: null };
  if (!run.folds) model.zeroGrad();
  const measure = noise !== null && p.accum >= 2;
  if (measure) noise.beginStep();
  for (let micro = 0; micro < p.accum; micro++) {
    const batch = run.batcher.next();
    if (run.guards.badBatchesLeft > 0) {
      run.guards.badBatchesLeft -= 1;
      for (let i = 0; i < batch.inputs.length; i++) {
        batch.inputs[i] = run.faultRng.int(o.config.vocabSize);
        batch.targets[i] = run.faultRng.int(o.config.vocabSize);
      }
    }
    if (run.folds) model.zeroGrad();
    g.loss += model.forward(batch.inputs, batch.targets, o.batch);
    g.zsq += model.lastZLoss;
    model.backward(run.folds ? 1 : 1 / p.accum, run.guards.embedScale(p.n));
    if (measure) noise.afterMicro(model.grads, p.accum);
    if (run.folds) optimize(run, p, g, finishGradient(run, p, g), micro === p.accum - 1);
  }
  g.loss /= p.accum;
  g.noise = measure ? noise.endStep(o.batch, p.accum, o.config.blockSize) : null;
  if (g.noise) run.s.lastNoise = g.noise;
  return g;
}

/** The whole step's gradient (unless folded, where each micro-batch's was finished on its own) and its norm. */
function finishStep(run: Run, p: Plan, g: Grad): void {
  if (!run.folds) finishGradient(run, p, g);
  g.gradNorm = Math.sqrt(run.folds ? g.norm2 / p.accum : g.norm2);
}

/** Fault, emulated precision: the gradient as the optimizer will see it (the embedding shrink is in backward). Returns its ‖g‖². */
function finishGradient(run: Run, p: Plan, g: Grad): number {
  const { kernels, model, guards } = run;
  if (p.gradFault) kernels.scale(model.grads, model.grads.length, p.gradFault.scale);
  const z = guards.roundGradients(model.grads);
  if (z !== null) g.zeroFrac = z;
  const norm2 = kernels.sumSquares(model.grads, model.grads.length);
  g.norm2 += norm2;
  return norm2;
}

/** Clip, then one optimizer call (with diagnostics around the update-applying one). */
function optimize(run: Run, p: Plan, g: Grad, norm2: number, lastMicro = true): void {
  const { kernels, model, optimizer, opt, diag, o } = run;
  const finite = Number.isFinite(norm2);
  const norm = Math.sqrt(norm2);
  if (finite && o.clip > 0 && norm > o.clip) kernels.scale(model.grads, model.grads.length, o.clip / norm);
  // Diagnostics watch the update-applying call (and the one of the step before).
  const watch = diag !== null && lastMicro && (diag.wants(p.n) || diag.wants(p.n + 1));
  if (watch) diag.before(p.n, model.params, model.grads, optimizer, opt);
  const r = optimizer.step(model.params, model.grads, opt, { lr: optimizer.ownsLr ? undefined : p.lr, gradsFinite: finite });
  for (const name of r.skipped) g.skippedTensors.add(name);
  const rec = watch ? diag.after(p.n, model.params, optimizer, opt, p.lr) : null;
  if (rec) g.diagRecord = { ...rec };
}

/** One step report to the controller; its decision back. Both go to control.jsonl. */
function ask(run: Run, p: Plan, g: Grad): Decision {
  const n = g.noise;
  const report: StepReport = {
    v: REPORT_VERSION,
    step: p.n,
    attempt: p.attempt,
    loss: finiteOrNull(g.loss),
    grad_norm: finiteOrNull(g.gradNorm),
    nonfinite: { loss: !Number.isFinite(g.loss), grad: !Number.isFinite(g.norm2) },
    lr: run.optimizer.ownsLr ? null : p.lr,
    tokens: run.s.tokens + p.batch * run.o.config.blockSize,
    batch: p.batch,
    data: [p.cursorFrom, run.batcher.cursor],
    ...(n ? { noise: { g_small_sq: n.g_small_sq, g_big_sq: n.g_big_sq, b_small: n.b_small, b_big: n.b_big } } : {}),
  };
  run.control.write({ t: 'report', ...report });
  p.report = report;
  const d = run.controller.report(report);
  run.control.write({ t: 'decision', ...d });
  return d;
}

/** Carries out the decision: update (or not), log the step, and roll back or stop when told. */
function act(run: Run, p: Plan, g: Grad, d: Decision): 'next' | 'rolled_back' {
  const { s, log } = run;
  for (const f of d.spikes ?? []) log.write({ event: 'spike', step: p.n, ...f });
  // Folded runs applied their update already; their decisions can only say proceed or stop.
  if (d.apply && !run.folds) optimize(run, p, g, g.norm2);
  if (d.batch !== undefined) s.batch = d.batch;
  if (d.lr !== undefined) s.lrMultiplier = d.lr.multiplier;
  const ms = performance.now() - p.t0;
  const tokens = p.batch * run.o.config.blockSize;
  s.trainMs += ms;
  s.elapsedMs += ms;
  s.trainedTokens += tokens;
  log.write({
    step: p.n,
    loss: g.loss,
    lr: run.optimizer.ownsLr ? null : p.lr,
    grad_norm: g.gradNorm,
    tokens: s.tokens + tokens,
    tokens_per_s: (tokens / ms) * 1000,
    ms,
    ...(g.zeroFrac !== null ? { grad_zero_frac: g.zeroFrac } : {}),
    ...(run.model.zLoss > 0 ? { z_loss: g.zsq / p.accum } : {}),
    ...(g.noise ? noiseLogFields(g.noise) : {}),
    ...(run.o.batchRamp ? { batch: p.batch } : {}),
    ...(!d.apply ? { action: d.kind } : {}),
  });
  if (g.diagRecord) log.write(g.diagRecord);
  run.observer?.step(g.diagRecord ? { ...p.report!, diag: diagAggregates(g.diagRecord) } : p.report!, d);
  if (d.kind !== 'proceed' && d.kind !== 'skip')
    log.write({
      event: 'decision',
      step: p.n,
      kind: d.kind,
      rung: d.rung,
      reason: d.reason,
      ...(d.batch !== undefined ? { batch: d.batch } : {}),
      ...(d.lr ? { lr_multiplier: d.lr.multiplier, lr_steps: d.lr.steps } : {}),
    });
  if (d.kind === 'stop') stop(run, p, g, d);
  if (d.kind === 'rollback') {
    rollback(run, p, d);
    return 'rolled_back';
  }
  if (!d.apply) {
    s.skips += 1;
    log.write({ event: 'skip_step', step: p.n, rung: d.rung, reason: d.reason });
    run.progress?.log(`step ${p.n}: ${d.reason}`);
  }
  return 'next';
}

function rollback(run: Run, p: Plan, d: Decision): void {
  const { s } = run;
  const { to_step, skip_data } = d.rollback!;
  const r = run.restore.restore(to_step, run.model.params, run.optimizer, run.opt);
  s.step = r.step;
  s.tokens = r.tokens;
  run.batcher.cursor = skip_data[1];
  s.rollbacks += 1;
  run.diag?.reset();
  run.log.write({
    event: 'rollback',
    step: p.n,
    to: r.step,
    from: r.from,
    rung: d.rung,
    reason: d.reason,
    skip_batches: run.controller.policy.skip_batches,
    cursor_from: r.cursor,
    cursor_to: run.batcher.cursor,
    rollbacks: run.controller.rollbacks,
    dropped_checkpoints: r.dropped,
  });
  run.progress?.log(`step ${p.n}: ${d.reason}; rolled back to step ${r.step} (${r.from})`);
}

/** The controller said stop: log it, then leave with the message (the CLI exits 1 or 3). */
function stop(run: Run, p: Plan, g: Grad, d: Decision): never {
  const st = d.stop!;
  run.log.write({ event: 'stop', step: p.n, code: st.code, reason: d.reason, restore_step: st.restore_step, advice: st.advice });
  if (st.code === 'diverged') {
    throw new TrainingDiverged(`training diverged: loss is ${g.loss} at step ${p.n}; ${st.advice}`);
  }
  throw new RecoveryExhausted(`recovery stopped the run at step ${p.n}: ${d.reason}. To continue: ${st.advice}`);
}

/** A step that counts: advance, averages, nonfinite note, evaluation, checkpoint, progress. */
function afterStep(run: Run, p: Plan, g: Grad): void {
  const { s, o, log } = run;
  s.step = p.n;
  s.tokens += p.batch * o.config.blockSize;
  s.trainLoss = g.loss;
  run.lawa?.observe(s.step, run.model.params);
  run.ema?.update(run.model.params);
  if (g.skippedTensors.size > 0) {
    log.write({ event: 'nonfinite_grad', step: s.step, tensors: [...g.skippedTensors] });
    run.progress?.log(`step ${s.step}: non-finite gradient in ${g.skippedTensors.size} tensor(s); their update was skipped`);
  }
  const last = s.step === o.steps;
  if ((o.evalEvery > 0 && s.step % o.evalEvery === 0) || last) evaluateNow(run);
  const ms = performance.now() - p.t0;
  run.progress?.update(s.step, { loss: g.loss.toFixed(4), 'tok/s': Math.round(((p.batch * o.config.blockSize) / ms) * 1000) });
  if ((o.checkpointEvery > 0 && s.step % o.checkpointEvery === 0) || last) save(run);
}

/** The whole-model diag_* numbers of a diagnostics record (the per-tensor part stays in metrics.jsonl). */
function diagAggregates(rec: Record<string, unknown>): Record<string, number> {
  return Object.fromEntries(
    Object.entries(rec).filter((e): e is [string, number] => e[0].startsWith('diag_') && typeof e[1] === 'number' && Number.isFinite(e[1])),
  );
}

function evaluateNow(run: Run): void {
  const { s, model, lawa, lawaAvg, ema } = run;
  s.valLoss = evaluate(model, run.valTokens, run.o.evalTokens).loss;
  const averaged: Record<string, number> = {};
  if (lawa && lawaAvg && lawa.average(lawaAvg)) averaged.val_loss_lawa = evaluateWith(run, lawaAvg);
  if (ema && ema.t > 0) averaged.val_loss_ema = evaluateWith(run, ema.weights);
  run.log.write({ step: s.step, val_loss: s.valLoss, ...averaged, ...embeddingDrift(model.params, model.layout.byName.get('transformer.wte.weight')!) });
  run.observer?.evaluation(s.step, { val_loss: s.valLoss, ...averaged });
  run.progress?.log(`step ${s.step}: val loss ${s.valLoss.toFixed(4)}`);
}

/** Validation loss of other weights (an average): swapped into the model, then swapped back. */
function evaluateWith(run: Run, weights: Float32Array): number {
  const { model, scratch } = run;
  scratch!.set(model.params);
  model.params.set(weights);
  const l = evaluate(model, run.valTokens, run.o.evalTokens).loss;
  model.params.set(scratch!);
  return l;
}

function save(run: Run): void {
  const { s, o, optimizer, opt } = run;
  // Registered first, so the checkpoint's controller state knows the checkpoint (a resume can roll back to it).
  run.restore.add({ step: s.step, data: run.batcher.cursor, path: checkpointDir(run.dir, s.step) });
  run.observer?.checkpoint(s.step, run.batcher.cursor, checkpointDir(run.dir, s.step));
  const state: TrainerState = {
    version: 1,
    step: s.step,
    tokens: s.tokens,
    cursor: run.batcher.cursor,
    seed: o.seed,
    optimizerT: opt.t,
    optimizer: optimizer.name,
    elapsedMs: s.elapsedMs,
    config: o.config,
    options: { ...o, config: undefined },
    guard: run.guards.state(),
    noise: run.noise?.toJSON(),
    batch: { last: s.lastBatch },
    controller: run.controller.toJSON(),
  };
  const optimizerState = { tensors: stateTensors(optimizer, opt), metadata: stateMetadata(optimizer, opt) };
  const dir = saveCheckpoint(run.dir, { state, params: run.model.params, optimizer: optimizerState, extra: averageFiles(run) });
  pruneCheckpoints(run.dir, o.keep);
  run.restore.sync();
  run.log.write({ event: 'checkpoint', step: s.step, dir: path.relative(run.dir, dir) });
}

/** lawa.safetensors / ema.safetensors (loadable weights, same names as the model) and LAWA's ring. */
function averageFiles(run: Run) {
  const { lawa, lawaAvg, ema, model, s } = run;
  const meta = modelMetadata(run.o.config, run.o.tokenizer, s.step);
  const files: NonNullable<Parameters<typeof saveCheckpoint>[1]['extra']> = [];
  if (lawa && lawaAvg && lawa.average(lawaAvg)) {
    files.push({ file: 'lawa.safetensors', tensors: namedTensors(model.layout, lawaAvg), metadata: { ...meta, lawa_window: JSON.stringify(lawa.window) } });
    const st = lawa.stateTensors();
    files.push({ file: 'lawa_state.safetensors', tensors: st.tensors, metadata: st.metadata });
  }
  if (ema && ema.t > 0) {
    files.push({
      file: 'ema.safetensors',
      tensors: namedTensors(model.layout, ema.weights),
      metadata: { ...meta, ema_beta: String(ema.beta), ema_t: String(ema.t) },
    });
  }
  return files;
}

function summarise(run: Run, interrupted: boolean): TrainSummary {
  const { s, opt, model } = run;
  return {
    run_dir: run.dir,
    steps: s.step,
    tokens: s.tokens,
    train_loss: s.trainLoss,
    val_loss: s.valLoss,
    tokens_per_s: s.trainMs > 0 ? (s.trainedTokens / s.trainMs) * 1000 : 0,
    b_simple: s.lastNoise?.b_simple ?? null,
    b_simple_tokens: s.lastNoise?.b_simple_tokens ?? null,
    seconds: s.elapsedMs / 1000,
    params: model.numParams,
    spikes: run.controller.spikes,
    skipped_steps: s.skips,
    rollbacks: s.rollbacks,
    optimizer: run.optimizer.name,
    optimizer_state_bytes: stateBytes(opt),
    optimizer_state_bytes_per_param: stateBytes(opt) / model.numParams,
    interrupted,
  };
}

function writeConfig(dir: string, o: TrainOptions, model: GPT, data: string, opt: OptState): void {
  const { config: _c, ...rest } = o;
  writeFileAtomic(
    path.join(dir, 'config.json'),
    JSON.stringify(
      {
        model: o.config,
        params: model.numParams,
        data,
        train: rest,
        optimizer_state_bytes: stateBytes(opt),
        optimizer_state_bytes_per_param: stateBytes(opt) / model.numParams,
      },
      null,
      2,
    ) + '\n',
  );
}

/** LAWA's ring and the EMA weights of a checkpoint, when the run averages (exact resume). */
function restoreAverages(dir: string, layout: ParamLayout, lawa: Lawa | null, ema: Ema | null): void {
  const lawaFile = path.join(dir, 'lawa_state.safetensors');
  if (lawa && fs.existsSync(lawaFile)) {
    const f = readSafetensors(lawaFile);
    lawa.restore(f.tensors, f.metadata);
  }
  const emaFile = path.join(dir, 'ema.safetensors');
  if (ema && fs.existsSync(emaFile)) {
    const f = readSafetensors(emaFile);
    copyTensors(f, emaFile, layout, ema.weights);
    ema.t = Number(f.metadata.ema_t);
  }
}

function prepareRunDir(runDir: string): void {
  if (fs.existsSync(runDir)) {
    if (!fs.statSync(runDir).isDirectory()) throw new UserError(`--out ${runDir} exists and is not a directory`);
    if (listCheckpoints(runDir).length > 0) {
      throw new UserError(`--out ${runDir} already holds a run: continue it with --resume ${runDir} (or add --auto-resume), or pick another --out`);
    }
    if (fs.existsSync(path.join(runDir, 'metrics.jsonl'))) {
      throw new UserError(
        `--out ${runDir} holds a run that stopped before its first checkpoint: add --auto-resume to start it over there, or remove it (rm -r ${runDir})`,
      );
    }
  }
  makeDirs(runDir, '--out'); // not mkdirSync's recursive mode: it spins forever under /proc
}

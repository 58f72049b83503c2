/**
 * The training loop: data → forward/backward (with gradient accumulation) → clip → optimizer,
 * with evaluation, metrics, atomic checkpoints, bit-identical resume and a clean Ctrl-C.
 */
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.ts';
import { Batcher, splitCorpus } from '../data/batcher.ts';
import { checkCorpusSize, loadCorpus } from '../data/corpus.ts';
import { MetricsLog } from '../io/metrics.ts';
import { writeFileAtomic } from '../io/atomic.ts';
import { nativeKernels } from '../kernels/native.ts';
import type { GPTConfig } from '../model/config.ts';
import { GPT } from '../model/gpt.ts';
import { createOptimizer } from '../optim/registry.ts';
import { loadStateTensors, stateBytes, stateMetadata, stateTensors } from '../optim/state.ts';
import type { OptState } from '../optim/types.ts';
import { embeddingDrift } from '../monitor/embedding.ts';
import { createProgress } from '../cli/progress.ts';
import { writeReport } from '../report/html.ts';
import { learningRate, type ScheduleKind } from './schedule.ts';
import { evaluate } from './evaluate.ts';
import {
  listCheckpoints, loadCheckpoint, pruneCheckpoints, runDirOf, saveCheckpoint, type Checkpoint, type TrainerState,
} from './checkpoints.ts';

export interface TrainOptions {
  /** Preset name or JSON path the model config came from (for the record). */
  configName: string;
  config: GPTConfig;
  /** Corpus file or directory; undefined = the built-in State of the Union corpus. */
  data?: string;
  steps: number;
  /** Sequences per micro-batch. */
  batch: number;
  /** Micro-batches per optimizer step. */
  accum: number;
  lr: number;
  minLr: number;
  warmup: number;
  schedule: ScheduleKind;
  /** With schedule 'piecewise': (step, multiplier of lr) points. */
  lrPoints?: [number, number][];
  /** Optimizer name (src/optim/registry.ts) and its options except lr (the schedule's). */
  optimizer: string;
  optimizerOptions: Record<string, unknown>;
  /** Clip the global gradient norm to this (0 = off). */
  clip: number;
  evalEvery: number;
  evalTokens: number;
  checkpointEvery: number;
  keep: number;
  out: string;
  seed: number;
}

export interface TrainSummary {
  run_dir: string;
  steps: number;
  tokens: number;
  train_loss: number;
  val_loss: number | null;
  tokens_per_s: number;
  seconds: number;
  params: number;
  optimizer: string;
  /** Bytes of optimizer state, and per parameter (AdamW: 8). */
  optimizer_state_bytes: number;
  optimizer_state_bytes_per_param: number;
  interrupted: boolean;
}

export interface TrainHooks {
  /** Return true to stop after the current step (Ctrl-C), writing a checkpoint. */
  shouldStop?: () => boolean;
  /** Progress output; quiet runs (tests) pass false. */
  progress?: boolean;
  /** Write report.html at the end (default true). */
  report?: boolean;
}

/** Starts a new run in opts.out, or continues one from `resume` (a loaded checkpoint, or a checkpoint or run dir). */
export async function train(opts: TrainOptions, hooks: TrainHooks = {}, resume?: string | Checkpoint): Promise<TrainSummary> {
  const ckpt = typeof resume === 'string' ? loadCheckpoint(resume) : resume;
  const runDir = ckpt ? runDirOf(ckpt.dir) : path.resolve(opts.out);
  const cfg = opts.config;
  const T = cfg.blockSize;

  const corpus = loadCorpus(opts.data);
  checkCorpusSize(corpus, T);
  // Only after the data is known good: a rejected corpus leaves no (empty) run directory behind.
  if (!ckpt) prepareRunDir(runDir);
  const { train: trainTokens, val: valTokens } = splitCorpus(corpus.bytes);
  const kernels = nativeKernels();
  const model = new GPT(cfg, kernels, { maxBatch: opts.batch });
  const batcher = new Batcher({ tokens: trainTokens, B: opts.batch, T, seed: opts.seed });
  // Tiger folds accumulation into its momentum: it steps on every micro-batch.
  const folds = opts.optimizer === 'tiger';
  const optimizer = createOptimizer(opts.optimizer, folds ? { ...opts.optimizerOptions, accumSteps: opts.accum } : opts.optimizerOptions);
  // Adafactor's relative step size is its own schedule: it gets no lr.
  const ownLr = optimizer.options.relativeStep === true;
  const opt: OptState = optimizer.init(model.params, model.layout.tensors);
  let step = 0;
  let tokens = 0;
  let elapsedMs = 0;
  if (ckpt) {
    model.params.set(ckpt.params);
    loadStateTensors(optimizer, opt, ckpt.optimizer.tensors, ckpt.optimizer.metadata, ckpt.optimizer.path);
    step = ckpt.state.step;
    tokens = ckpt.state.tokens;
    elapsedMs = ckpt.state.elapsedMs;
    batcher.cursor = ckpt.state.cursor;
  } else {
    model.init(opts.seed);
    const { config: _c, ...rest } = opts;
    writeFileAtomic(
      path.join(runDir, 'config.json'),
      JSON.stringify({
        model: cfg, params: model.numParams, data: corpus.name, train: rest,
        optimizer_state_bytes: stateBytes(opt), optimizer_state_bytes_per_param: stateBytes(opt) / model.numParams,
      }, null, 2) + '\n',
    );
  }

  const log = new MetricsLog(path.join(runDir, 'metrics.jsonl'));
  if (ckpt) log.write({ event: 'resume', step, from: ckpt.dir });
  const tokensPerStep = opts.batch * opts.accum * T;
  const progress = hooks.progress === false ? null : createProgress({ total: opts.steps, label: 'train' });
  const schedule = { kind: opts.schedule, lr: opts.lr, minLr: opts.minLr, warmup: opts.warmup, steps: opts.steps, points: opts.lrPoints };

  const save = () => {
    const state: TrainerState = {
      version: 1, step, tokens, cursor: batcher.cursor, seed: opts.seed, optimizerT: opt.t, optimizer: optimizer.name,
      elapsedMs, config: cfg, options: { ...opts, config: undefined },
    };
    const optimizerState = { tensors: stateTensors(optimizer, opt), metadata: stateMetadata(optimizer, opt) };
    const dir = saveCheckpoint(runDir, { state, params: model.params, optimizer: optimizerState });
    pruneCheckpoints(runDir, opts.keep);
    log.write({ event: 'checkpoint', step, dir: path.relative(runDir, dir) });
  };

  let trainLoss = NaN;
  let valLoss: number | null = null;
  let trainMs = 0;
  let interrupted = false;
  const startStep = step;
  try {
    while (step < opts.steps) {
      const t0 = performance.now();
      const lr = learningRate(schedule, step + 1);
      let loss = 0;
      let sq = 0; // Σ over optimizer calls of ‖g‖² (one call, or one per micro-batch when folded)
      const skipped = new Set<string>();
      const optimize = () => {
        const norm2 = kernels.sumSquares(model.grads, model.grads.length);
        sq += norm2;
        const finite = Number.isFinite(norm2);
        const norm = Math.sqrt(norm2);
        if (finite && opts.clip > 0 && norm > opts.clip) kernels.scale(model.grads, model.grads.length, opts.clip / norm);
        const r = optimizer.step(model.params, model.grads, opt, { lr: ownLr ? undefined : lr, gradsFinite: finite });
        for (const n of r.skipped) skipped.add(n);
      };
      if (!folds) model.zeroGrad();
      for (let micro = 0; micro < opts.accum; micro++) {
        const batch = batcher.next();
        if (folds) model.zeroGrad();
        loss += model.forward(batch.inputs, batch.targets, opts.batch);
        model.backward(folds ? 1 : 1 / opts.accum);
        if (folds) optimize();
      }
      if (!folds) optimize();
      loss /= opts.accum;
      const gradNorm = Math.sqrt(folds ? sq / opts.accum : sq);
      const ms = performance.now() - t0;
      step += 1;
      tokens += tokensPerStep;
      trainMs += ms;
      elapsedMs += ms;
      trainLoss = loss;
      const tokPerS = (tokensPerStep / ms) * 1000;
      log.write({ step, loss, lr: ownLr ? null : lr, grad_norm: gradNorm, tokens, tokens_per_s: tokPerS, ms });
      if (skipped.size > 0) {
        log.write({ event: 'nonfinite_grad', step, tensors: [...skipped] });
        progress?.log(`step ${step}: non-finite gradient in ${skipped.size} tensor(s); their update was skipped`);
      }
      if (!Number.isFinite(loss)) {
        throw new TrainingDiverged(`training diverged: loss is ${loss} at step ${step}; lower --lr or raise --warmup`);
      }
      const last = step === opts.steps;
      if ((opts.evalEvery > 0 && step % opts.evalEvery === 0) || last) {
        valLoss = evaluate(model, valTokens, opts.evalTokens).loss;
        log.write({ step, val_loss: valLoss, ...embeddingDrift(model.params, model.layout.byName.get('transformer.wte.weight')!) });
        progress?.log(`step ${step}: val loss ${valLoss.toFixed(4)}`);
      }
      progress?.update(step, { loss: loss.toFixed(4), 'tok/s': Math.round(tokPerS) });
      if ((opts.checkpointEvery > 0 && step % opts.checkpointEvery === 0) || last) save();
      // Let signal handlers (Ctrl-C) run between steps.
      await new Promise((resolve) => setImmediate(resolve));
      if (hooks.shouldStop?.()) {
        interrupted = true;
        break;
      }
    }
    if (interrupted && step > startStep && !listCheckpoints(runDir).includes(step)) save();
  } finally {
    progress?.done();
    log.close();
  }
  if (hooks.report !== false) writeReport(runDir);
  return {
    run_dir: runDir,
    steps: step,
    tokens,
    train_loss: trainLoss,
    val_loss: valLoss,
    tokens_per_s: trainMs > 0 ? (((step - startStep) * tokensPerStep) / trainMs) * 1000 : 0,
    seconds: elapsedMs / 1000,
    params: model.numParams,
    optimizer: optimizer.name,
    optimizer_state_bytes: stateBytes(opt),
    optimizer_state_bytes_per_param: stateBytes(opt) / model.numParams,
    interrupted,
  };
}

/** The loss became NaN/inf: a clean message, not a stack trace. */
export class TrainingDiverged extends Error {}

function prepareRunDir(runDir: string): void {
  if (fs.existsSync(runDir)) {
    if (!fs.statSync(runDir).isDirectory()) throw new UserError(`--out ${runDir} exists and is not a directory`);
    if (listCheckpoints(runDir).length > 0 || fs.existsSync(path.join(runDir, 'metrics.jsonl'))) {
      throw new UserError(`--out ${runDir} already holds a run: continue it with --resume ${runDir}, or pick another --out`);
    }
  }
  fs.mkdirSync(runDir, { recursive: true });
}

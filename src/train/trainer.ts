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
import { SnapshotRing } from '../guard/snapshots.ts';
import { Rng } from '../util/rng.ts';
import { Guards, type StabilityOptions } from './guards.ts';
import { Diagnostics } from '../monitor/diagnostics.ts';
import { Lawa } from '../average/lawa.ts';
import { NoiseScale, noiseLogFields, noiseRequirement, type NoiseRecord } from '../monitor/noise_scale.ts';
import { batchAt, parseBatchSpec } from '../schedule/batch.ts';
import { lrScale, type ScalingRule } from '../schedule/rules.ts';
import { Ema } from '../average/ema.ts';
import { configToMetadata, copyTensors, namedTensors } from '../model/checkpoint.ts';
import type { ParamLayout } from '../model/params.ts';
import { readSafetensors } from '../io/safetensors.ts';
import { createProgress } from '../cli/progress.ts';
import { writeReport } from '../report/html.ts';
import { learningRate, type ScheduleKind } from './schedule.ts';
import { evaluate } from './evaluate.ts';
import {
  checkpointDir, listCheckpoints, loadCheckpoint, pruneCheckpoints, runDirOf, saveCheckpoint, type Checkpoint, type TrainerState,
} from './checkpoints.ts';

export interface TrainOptions extends StabilityOptions {
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
  /** Batch-size ramp (src/schedule/batch.ts spec; undefined = constant batch × accum). */
  batchRamp?: string;
  /** LR rescaling when the batch changes (default none), relative to the final batch. */
  lrRule?: ScalingRule;
  /** B_noise in sequences for the sgd/signsgd/softsign rules. */
  bNoise?: number;
  /** Gradient noise scale from the micro-batches (default on; needs ≥ 2 micro-batches per step). */
  noiseScale?: boolean;
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
  /** The last measured simple noise scale (sequences, tokens); null when not measured. */
  b_simple: number | null;
  b_simple_tokens: number | null;
  /** Spikes detected, steps skipped and rollbacks done (issue 4's recovery). */
  spikes: number;
  skipped_steps: number;
  rollbacks: number;
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
  const model = new GPT(cfg, kernels, { maxBatch: opts.batch, zLoss: opts.zLoss ?? 0 });
  const batcher = new Batcher({ tokens: trainTokens, B: opts.batch, T, seed: opts.seed });
  const guards = new Guards(opts, opts.steps);
  // Tiger folds accumulation into its momentum (one optimizer call per micro-batch). Skipping or
  // rolling back a step needs the whole step's gradient first, so recovery turns folding off
  // (the result is the same: Tiger's momentum update is linear in the gradient).
  const ramp = opts.batchRamp ? parseBatchSpec(opts.batchRamp) : null;
  const folds = opts.optimizer === 'tiger' && opts.accum > 1 && !guards.needsSnapshots && !ramp;
  const baseOptions = folds ? { ...opts.optimizerOptions, accumSteps: opts.accum } : opts.optimizerOptions;
  let optimizer = createOptimizer(opts.optimizer, baseOptions);
  // Adafactor's relative step size is its own schedule: it gets no lr.
  const ownLr = optimizer.options.relativeStep === true;
  const opt: OptState = optimizer.init(model.params, model.layout.tensors);
  const wte = model.layout.byName.get('transformer.wte.weight')!;
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
    guards.restore(ckpt.state.guard);
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
  const ring = guards.needsSnapshots
    ? new SnapshotRing(Math.max(1, Math.floor(guards.recovery.o.rollbackSteps / 2)), guards.recovery.o.rollbackSteps, model.numParams,
      Object.fromEntries(Object.entries(opt.slots).map(([k, v]) => [k, v.length])))
    : null;
  // Weight averages: side products, evaluated next to the raw weights and saved beside them.
  const lawa = opts.lawaK ? new Lawa(model.numParams, opts.lawaK, opts.lawaEvery ?? 50) : null;
  const ema = opts.ema ? new Ema(kernels, model.numParams, opts.ema, opts.emaWarmup ?? false) : null;
  if (ckpt) restoreAverages(ckpt.dir, model.layout, lawa, ema);
  const scratch = lawa || ema ? new Float32Array(model.numParams) : null;
  const lawaAvg = lawa ? new Float32Array(model.numParams) : null;
  // Batch ramp and noise scale: the batch of each step is a pure function of (step, what is
  // checkpointed), so a resumed run takes the same batches.
  const finalBatch = opts.batch * opts.accum;
  let samplesSeen = ckpt?.state.batch?.samplesSeen ?? step * finalBatch;
  let rampCurrent = ckpt?.state.batch?.current;
  let lastBatch = ckpt?.state.batch?.last ?? null;
  const noise = opts.noiseScale === false ? null
    : ckpt?.state.noise ? NoiseScale.fromJSON(model.layout.tensors, model.numParams, ckpt.state.noise as never)
    : new NoiseScale(model.layout.tensors, model.numParams, { folded: folds });
  let lastNoise: NoiseRecord | null = null;
  const noiseNote = noise && !ramp ? noiseRequirement(opts.accum) : null;
  const diag = opts.diagEvery ? new Diagnostics(model.layout.tensors, model.numParams, { every: opts.diagEvery }) : null;
  // Random tokens for bad-batch fire drills: seeded, so a run with faults is reproducible.
  const faultRng = new Rng(opts.seed ^ 0x5eed);

  const log = new MetricsLog(path.join(runDir, 'metrics.jsonl'));
  if (ckpt) log.write({ event: 'resume', step, from: ckpt.dir });

  const progress = hooks.progress === false ? null : createProgress({ total: opts.steps, label: 'train' });
  if (noiseNote) progress?.log(noiseNote);
  const schedule = { kind: opts.schedule, lr: opts.lr, minLr: opts.minLr, warmup: opts.warmup, steps: opts.steps, points: opts.lrPoints };

  const save = () => {
    const state: TrainerState = {
      version: 1, step, tokens, cursor: batcher.cursor, seed: opts.seed, optimizerT: opt.t, optimizer: optimizer.name,
      elapsedMs, config: cfg, options: { ...opts, config: undefined }, guard: guards.state(),
      noise: noise?.toJSON(), batch: { samplesSeen, current: rampCurrent, last: lastBatch },
    };
    const optimizerState = { tensors: stateTensors(optimizer, opt), metadata: stateMetadata(optimizer, opt) };
    const dir = saveCheckpoint(runDir, { state, params: model.params, optimizer: optimizerState, extra: averageFiles() });
    pruneCheckpoints(runDir, opts.keep);
    log.write({ event: 'checkpoint', step, dir: path.relative(runDir, dir) });
  };

  /** lawa.safetensors / ema.safetensors (loadable weights, same names as the model) and LAWA's ring. */
  const averageFiles = () => {
    const meta = { format: 'pt', config: configToMetadata(cfg), step: String(step) };
    const files: NonNullable<Parameters<typeof saveCheckpoint>[1]['extra']> = [];
    if (lawa && lawaAvg && lawa.average(lawaAvg)) {
      files.push({ file: 'lawa.safetensors', tensors: namedTensors(model.layout, lawaAvg), metadata: { ...meta, lawa_window: JSON.stringify(lawa.window) } });
      const st = lawa.stateTensors();
      files.push({ file: 'lawa_state.safetensors', tensors: st.tensors, metadata: st.metadata });
    }
    if (ema && ema.t > 0) {
      files.push({ file: 'ema.safetensors', tensors: namedTensors(model.layout, ema.weights), metadata: { ...meta, ema_beta: String(ema.beta), ema_t: String(ema.t) } });
    }
    return files;
  };

  /** Validation loss of other weights (an average): swapped into the model, then swapped back. */
  const evaluateWith = (weights: Float32Array): number => {
    scratch!.set(model.params);
    model.params.set(weights);
    const l = evaluate(model, valTokens, opts.evalTokens).loss;
    model.params.set(scratch!);
    return l;
  };

  /**
   * PaLM rollback at spike step `n`: the newest state at least R steps older (in memory, else a
   * checkpoint on disk; failing both, the oldest one before the spike), then skip S batches.
   */
  const rollback = (n: number): boolean => {
    const { rollbackSteps: R, skipBatches: S } = guards.recovery.o;
    const snap = ring?.atOrBefore(n - R) ?? ring?.oldestBefore(n);
    let from: 'memory' | 'checkpoint';
    if (snap) {
      model.params.set(snap.params);
      for (const [k, buf] of Object.entries(opt.slots)) buf.set(snap.slots[k]);
      opt.t = snap.optT;
      ({ step, tokens } = snap);
      batcher.cursor = snap.cursor;
      guards.restoreDetectors(snap.extra as Record<string, unknown>);
      from = 'memory';
    } else {
      const steps = listCheckpoints(runDir).filter((s) => s < n);
      const pickStep = steps.filter((s) => s <= n - R).at(-1) ?? steps[0];
      if (pickStep === undefined) return false;
      const c = loadCheckpoint(checkpointDir(runDir, pickStep));
      model.params.set(c.params);
      loadStateTensors(optimizer, opt, c.optimizer.tensors, c.optimizer.metadata, c.optimizer.path);
      ({ step, tokens } = c.state);
      batcher.cursor = c.state.cursor;
      if (c.state.guard) guards.restoreDetectors(c.state.guard.detectors);
      from = 'checkpoint';
    }
    const cursorFrom = batcher.cursor;
    batcher.cursor += S * (lastBatch ?? finalBatch) / opts.batch;
    ring?.dropAfter(step);
    // Checkpoints newer than the restored step belong to the abandoned trajectory.
    const dropped = listCheckpoints(runDir).filter((s) => s > step);
    for (const s of dropped) fs.rmSync(checkpointDir(runDir, s), { recursive: true, force: true });
    log.write({
      event: 'rollback', step: n, to: step, from, skip_batches: S, cursor_from: cursorFrom, cursor_to: batcher.cursor,
      rollbacks: guards.recovery.state.rollbacks, dropped_checkpoints: dropped,
    });
    progress?.log(`step ${n}: spike; rolled back to step ${step} (${from}) and skipped ${S} batches`);
    return true;
  };

  let trainLoss = NaN;
  let valLoss: number | null = null;
  let trainMs = 0;
  let trainedTokens = 0;
  let interrupted = false;
  let rollbacks = 0;
  const startStep = step;
  try {
    while (step < opts.steps) {
      const t0 = performance.now();
      const n = step + 1;
      if (ring?.due(step)) {
        ring.take({ step, tokens, cursor: batcher.cursor, optT: opt.t, extra: guards.detectorState() }, model.params, opt.slots);
      }
      let gradFault: { scale: number } | null = null;
      for (const f of guards.faults.startingAt(n)) {
        log.write({ event: 'fault', ...f });
        if (f.kind === 'bad-batch') guards.badBatchesLeft += f.n;
        if (f.kind === 'nan-grad') gradFault = { scale: NaN };
        if (f.kind === 'grad-scale') gradFault = { scale: f.x };
      }
      // This step's batch (a ramp) and the learning rate rescaled for it by the chosen rule.
      const B = ramp
        ? batchAt(ramp, step, { totalSteps: opts.steps, finalBatch, microBatch: opts.batch, samplesSeen, bSimple: noise?.current()?.b_simple ?? null, current: rampCurrent })
        : finalBatch;
      if (ramp?.kind === 'adaptive') rampCurrent = B;
      const accum = B / opts.batch;
      const tokensPerStep = B * T;
      const rule = opts.lrRule ?? 'none';
      const lrFactor = rule === 'none' ? 1
        : lrScale(rule, B, { baseBatch: finalBatch, bNoise: opts.bNoise, eps: Number(optimizer.options.eps ?? 0), gradRms: lastNoise?.grad_rms ?? undefined });
      if (B !== lastBatch && ramp) log.write({ event: 'batch_change', step: n, batch: B, accum, lr_scale: lrFactor });
      lastBatch = B;
      const lr = learningRate(schedule, n) * guards.faults.lrScale(n) * lrFactor;
      if (guards.schedules.length > 0) optimizer = createOptimizer(opts.optimizer, { ...baseOptions, ...guards.scheduledOptions(n) });

      let loss = 0;
      let zsq = 0; // Σ over micro-batches of the mean (log Z)²
      let sq = 0; // Σ over optimizer calls of ‖g‖² (one call, or one per micro-batch when folded)
      let zeroFrac: number | null = null;
      let diagRecord: Record<string, unknown> | null = null;
      const skipped = new Set<string>();
      /** Embedding shrink, emulated precision, fault: the gradient as the optimizer will see it. */
      const finishGradient = () => {
        const a = guards.embedScale(n);
        if (a !== 1) kernels.scale(model.grads.subarray(wte.offset, wte.offset + wte.size), wte.size, a);
        if (gradFault) kernels.scale(model.grads, model.grads.length, gradFault.scale);
        const z = guards.roundGradients(model.grads);
        if (z !== null) zeroFrac = z;
        const norm2 = kernels.sumSquares(model.grads, model.grads.length);
        sq += norm2;
        return norm2;
      };
      const optimize = (norm2: number, lastMicro = true) => {
        const finite = Number.isFinite(norm2);
        const norm = Math.sqrt(norm2);
        if (finite && opts.clip > 0 && norm > opts.clip) kernels.scale(model.grads, model.grads.length, opts.clip / norm);
        // Diagnostics watch the update-applying call (and the one of the step before).
        const watch = diag !== null && lastMicro && (diag.wants(n) || diag.wants(n + 1));
        if (watch) diag.before(n, model.params, model.grads, optimizer, opt);
        const r = optimizer.step(model.params, model.grads, opt, { lr: ownLr ? undefined : lr, gradsFinite: finite });
        for (const name of r.skipped) skipped.add(name);
        const rec = watch ? diag.after(n, model.params, optimizer, opt, lr) : null;
        if (rec) diagRecord = { ...rec };
      };
      if (!folds) model.zeroGrad();
      const measure = noise !== null && accum >= 2;
      if (measure) noise.beginStep();
      for (let micro = 0; micro < accum; micro++) {
        const batch = batcher.next();
        if (guards.badBatchesLeft > 0) {
          guards.badBatchesLeft -= 1;
          for (let i = 0; i < batch.inputs.length; i++) {
            batch.inputs[i] = faultRng.int(cfg.vocabSize);
            batch.targets[i] = faultRng.int(cfg.vocabSize);
          }
        }
        if (folds) model.zeroGrad();
        loss += model.forward(batch.inputs, batch.targets, opts.batch);
        zsq += model.lastZLoss;
        model.backward(folds ? 1 : 1 / accum);
        if (measure) noise.afterMicro(model.grads, accum);
        if (folds) optimize(finishGradient(), micro === accum - 1);
      }
      loss /= accum;
      const noiseRec = measure ? noise.endStep(opts.batch, accum, T) : null;
      if (noiseRec) lastNoise = noiseRec;
      const norm2 = folds ? sq : finishGradient();
      const gradNorm = Math.sqrt(folds ? sq / accum : norm2);
      const spikes = guards.observe(n, loss, gradNorm);
      for (const sp of spikes) log.write({ ...sp });
      const trouble = spikes.length > 0 || !Number.isFinite(norm2) || !Number.isFinite(loss);
      // Only a spike with recovery on needs to know whether an older state exists (a directory read).
      const canRollback = () => (ring?.oldestBefore(n) ?? null) !== null || listCheckpoints(runDir).some((s) => s < n);
      const action = folds ? 'apply' : guards.recovery.decide(trouble, trouble && guards.needsSnapshots && canRollback());
      if (action === 'apply' && !folds) optimize(norm2);

      const ms = performance.now() - t0;
      trainMs += ms;
      elapsedMs += ms;
      trainedTokens += tokensPerStep;
      const tokPerS = (tokensPerStep / ms) * 1000;
      log.write({
        step: n, loss, lr: ownLr ? null : lr, grad_norm: gradNorm, tokens: tokens + tokensPerStep, tokens_per_s: tokPerS, ms,
        ...(zeroFrac !== null ? { grad_zero_frac: zeroFrac } : {}),
        ...(model.zLoss > 0 ? { z_loss: zsq / accum } : {}),
        ...(noiseRec ? noiseLogFields(noiseRec) : {}),
        ...(ramp ? { batch: B } : {}),
        ...(action !== 'apply' ? { action } : {}),
      });
      if (diagRecord) log.write(diagRecord);
      if (action === 'rollback' && rollback(n)) {
        rollbacks += 1;
        diag?.reset();
        continue;
      }
      step = n;
      tokens += tokensPerStep;
      samplesSeen += B;
      trainLoss = loss;
      lawa?.observe(step, model.params);
      ema?.update(model.params);
      if (action !== 'apply') {
        guards.skips += 1;
        log.write({ event: 'skip_step', step, consecutive: guards.recovery.state.consecutiveSkips });
        progress?.log(`step ${step}: spike; step skipped`);
      }
      if (skipped.size > 0) {
        log.write({ event: 'nonfinite_grad', step, tensors: [...skipped] });
        progress?.log(`step ${step}: non-finite gradient in ${skipped.size} tensor(s); their update was skipped`);
      }
      if (!Number.isFinite(loss) && action === 'apply') {
        throw new TrainingDiverged(`training diverged: loss is ${loss} at step ${step}; lower --lr, raise --warmup, or use --on-spike skip|rollback`);
      }
      const last = step === opts.steps;
      if ((opts.evalEvery > 0 && step % opts.evalEvery === 0) || last) {
        valLoss = evaluate(model, valTokens, opts.evalTokens).loss;
        const averaged: Record<string, number> = {};
        if (lawa && lawaAvg && lawa.average(lawaAvg)) averaged.val_loss_lawa = evaluateWith(lawaAvg);
        if (ema && ema.t > 0) averaged.val_loss_ema = evaluateWith(ema.weights);
        log.write({ step, val_loss: valLoss, ...averaged, ...embeddingDrift(model.params, wte) });
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
    tokens_per_s: trainMs > 0 ? (trainedTokens / trainMs) * 1000 : 0,
    b_simple: lastNoise?.b_simple ?? null,
    b_simple_tokens: lastNoise?.b_simple_tokens ?? null,
    seconds: elapsedMs / 1000,
    params: model.numParams,
    spikes: guards.spikes,
    skipped_steps: guards.skips,
    rollbacks,
    optimizer: optimizer.name,
    optimizer_state_bytes: stateBytes(opt),
    optimizer_state_bytes_per_param: stateBytes(opt) / model.numParams,
    interrupted,
  };
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

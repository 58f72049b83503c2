/**
 * Batch-size schedules ("ramps", docs/batch-size.md#batch-size-presets): how many sequences each optimizer step
 * takes. `batchAt(spec, step, ctx)` is a pure function of its arguments, so a resumed run gets
 * exactly the batches of an uninterrupted one as long as the caller restores what it passes in
 * `ctx` (sequences consumed so far; the adaptive ramp's current batch and the last B_simple).
 *
 * Every result is a multiple of the micro-batch, rounded to the NEAREST multiple (halves up) and
 * never below one micro-batch, so the trainer runs result/microBatch micro-batches. Presets never
 * exceed `finalBatch` (which must itself be a multiple of the micro-batch); custom ramps give the
 * batches they name (rounded), which may exceed it.
 *
 * ## Presets, scaled to the run
 * The original schedules are in absolute numbers; Keel keeps their SHAPE: batch sizes become
 * fractions of the run's final batch F (the run's sequences per step), and step, sample or token
 * positions become fractions of the run's length. Progress p is measured as in the original:
 * PaLM in steps (step/totalSteps), the others in samples/tokens consumed, p = samplesSeen /
 * totalSamples with totalSamples = totalSteps·F by default (the run's nominal budget: since the
 * ramp takes smaller batches first, a run of fixed --steps consumes somewhat less). With a
 * fixed sequence length tokens and samples are proportional, so token fractions are sample
 * fractions.
 *
 *   palm   PaLM 540B (Chowdhery et al. 2022): 512 sequences until step 50k, 1024 until 115k,
 *          2048 to the end at 255k. Scaled: F/4 while step < 50/255·S, F/2 while step <
 *          115/255·S, then F (ratios 1:2:4, S = totalSteps, step = steps completed before this one).
 *   glm    GLM-130B (Zeng et al. 2022): linear warm-up from 192 to 4224 sequences over the first
 *          2.5% of samples. Scaled: F·(192 + 4032·min(1, p/0.025))/4224.
 *   mtnlg  MT-NLG 530B (Smith et al. 2022): batch 32 increased by 32 at regular intervals over
 *          the first 12B tokens, up to 1920 (Megatron's --rampup-batch-size 32 32 with ~5.86M
 *          samples of 2048 tokens). Total taken as the paper's 270B training tokens, so the ramp
 *          spans 12/270 = 4.44% of samples. Scaled (Megatron's formula): F·(32 + 32·⌊59·p/(12/270)⌋)/1920
 *          with 59 = (1920 − 32)/32 increments, capped at F.
 *   gpt3   GPT-3 175B (Brown et al. 2020): linear ramp from 32k tokens to the full 3.2M-token batch
 *          over the first 4–12B of its 300B tokens, "depending on model size"; Keel takes 12B (the
 *          175B model, whose batch is the 3.2M one), i.e. 4% of the run. Scaled:
 *          F·(0.01 + 0.99·min(1, p/0.04)) (32k/3.2M = 1/100).
 *
 * ## Custom ramps
 *   linear:FROM:TO:STEPS      FROM + (TO − FROM)·min(1, step/STEPS) sequences
 *   steps:B1@S1,B2@S2,…       B_i from step S_i on (S ascending; B1 before S1)
 *   adaptive[:MIN:MAX]        follows the measured B_simple (ctx.bSimple, sequences): the target
 *                             is B_simple itself (≈ the critical batch, the best time/compute
 *                             balance), clamped to [MIN, MAX] (default: one micro-batch, F),
 *                             rounded to the micro-batch, and never below ctx.current (monotone
 *                             non-decreasing: B_noise grows as the loss falls, and a shrinking
 *                             batch would undo the LR rescaling). With no measurement yet it
 *                             stays at ctx.current (initially MIN). Return value = the new
 *                             current: pass it back as ctx.current next step and checkpoint it.
 * For custom ramps, `step` is the number of optimizer steps completed before this one (0-based).
 */
import { UserError } from '../errors.ts';

export const BATCH_PRESETS = ['palm', 'glm', 'mtnlg', 'gpt3'] as const;
type BatchPreset = (typeof BATCH_PRESETS)[number];

export type BatchSpec =
  | { kind: 'constant' }
  | { kind: 'preset'; name: BatchPreset }
  | { kind: 'linear'; from: number; to: number; steps: number }
  | { kind: 'steps'; points: { batch: number; step: number }[] }
  | { kind: 'adaptive'; min?: number; max?: number };

export interface BatchContext {
  /** The run's optimizer steps (--steps). */
  totalSteps: number;
  /** Sequences per step at the end of the ramp (the run's batch × accum). */
  finalBatch: number;
  /** Sequences per micro-batch (--batch); every result is a multiple of it. */
  microBatch: number;
  /** Sequences consumed before this step (glm, mtnlg, gpt3). */
  samplesSeen?: number;
  /** The run's nominal sample budget; default totalSteps × finalBatch. */
  totalSamples?: number;
  /** adaptive: the latest measured B_simple in sequences (null/undefined: none yet). */
  bSimple?: number | null;
  /** adaptive: the batch in effect so far (its state); default MIN. */
  current?: number;
}

/** The original numbers of each preset (for docs and tests). */
export const PRESET_ORIGINALS = {
  palm: { batches: [512, 1024, 2048], untilSteps: [50_000, 115_000], totalSteps: 255_000 },
  glm: { from: 192, to: 4224, rampFraction: 0.025 },
  mtnlg: { from: 32, increment: 32, to: 1920, rampTokens: 12e9, totalTokens: 270e9 },
  gpt3: { fromTokens: 32_000, toTokens: 3_200_000, rampTokens: 12e9, totalTokens: 300e9 },
} as const;

/** Nearest multiple of micro (halves up), at least micro, at most max. */
export function roundToMicro(b: number, micro: number, max = Infinity): number {
  const m = Math.max(1, Math.round(b / micro)) * micro;
  return Math.min(m, Math.max(micro, Math.floor(max / micro) * micro));
}

/** Parses a --batch-schedule value; throws a UserError naming the problem. */
export function parseBatchSpec(text: string): BatchSpec {
  const s = text.trim();
  const bad = (why: string): never => {
    throw new UserError(
      `batch schedule "${text}": ${why} (expected constant, ${BATCH_PRESETS.join(', ')}, linear:FROM:TO:STEPS, steps:B1@S1,B2@S2,… or adaptive[:MIN:MAX])`,
    );
  };
  const posInt = (v: string, what: string, min = 1): number => {
    const n = Number(v);
    if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min) bad(`${what} must be an integer ≥ ${min}, got "${v}"`);
    return n;
  };
  if (s === '' || s === 'constant' || s === 'none') return { kind: 'constant' };
  if ((BATCH_PRESETS as readonly string[]).includes(s)) return { kind: 'preset', name: s as BatchPreset };
  const [head, ...rest] = s.split(':');
  if (head === 'linear') {
    if (rest.length !== 3) bad('linear needs FROM:TO:STEPS');
    return { kind: 'linear', from: posInt(rest[0], 'FROM'), to: posInt(rest[1], 'TO'), steps: posInt(rest[2], 'STEPS') };
  }
  if (head === 'steps') {
    if (rest.length !== 1 || rest[0].trim() === '') bad('steps needs B1@S1,B2@S2,…');
    const points = rest[0].split(',').map((p) => {
      const m = /^\s*(\d+)\s*@\s*(\d+)\s*$/.exec(p);
      if (!m) bad(`"${p}" is not BATCH@STEP`);
      return { batch: posInt(m![1], 'a batch'), step: posInt(m![2], 'a step', 0) };
    });
    for (let i = 1; i < points.length; i++) if (points[i].step <= points[i - 1].step) bad('steps must increase');
    return { kind: 'steps', points };
  }
  if (head === 'adaptive') {
    if (rest.length === 0) return { kind: 'adaptive' };
    if (rest.length !== 2) bad('adaptive takes MIN:MAX or nothing');
    const min = posInt(rest[0], 'MIN');
    const max = posInt(rest[1], 'MAX');
    if (max < min) bad('MAX must be ≥ MIN');
    return { kind: 'adaptive', min, max };
  }
  return bad('unknown schedule');
}

function checkContext(ctx: BatchContext): void {
  const { finalBatch: F, microBatch: m, totalSteps: S } = ctx;
  if (!(Number.isInteger(m) && m >= 1)) throw new UserError(`batch schedule: the micro-batch must be an integer ≥ 1, got ${m}`);
  if (!(Number.isInteger(F) && F >= m && F % m === 0))
    throw new UserError(`batch schedule: the final batch (${F}) must be a multiple of the micro-batch (${m})`);
  if (!(Number.isInteger(S) && S >= 1)) throw new UserError(`batch schedule: total steps must be an integer ≥ 1, got ${S}`);
}

/** Fraction of the nominal sample budget consumed before this step. */
function sampleProgress(ctx: BatchContext, name: string): number {
  if (ctx.samplesSeen === undefined || !(ctx.samplesSeen >= 0)) {
    throw new Error(`batch schedule ${name}: ctx.samplesSeen (sequences consumed before this step) is required`);
  }
  const total = ctx.totalSamples ?? ctx.totalSteps * ctx.finalBatch;
  return ctx.samplesSeen / total;
}

/** The unrounded batch of a preset at this point (sequences). */
function presetBatch(name: BatchPreset, step: number, ctx: BatchContext): number {
  const F = ctx.finalBatch;
  switch (name) {
    case 'palm': {
      const o = PRESET_ORIGINALS.palm;
      const f = step / ctx.totalSteps;
      if (f < o.untilSteps[0] / o.totalSteps) return (F * o.batches[0]) / o.batches[2];
      if (f < o.untilSteps[1] / o.totalSteps) return (F * o.batches[1]) / o.batches[2];
      return F;
    }
    case 'glm': {
      const o = PRESET_ORIGINALS.glm;
      const p = Math.min(1, sampleProgress(ctx, name) / o.rampFraction);
      return (F * (o.from + (o.to - o.from) * p)) / o.to;
    }
    case 'mtnlg': {
      const o = PRESET_ORIGINALS.mtnlg;
      const increments = (o.to - o.from) / o.increment; // 59
      const k = Math.floor((increments * sampleProgress(ctx, name)) / (o.rampTokens / o.totalTokens));
      return (F * Math.min(o.to, o.from + o.increment * k)) / o.to;
    }
    case 'gpt3': {
      const o = PRESET_ORIGINALS.gpt3;
      const r0 = o.fromTokens / o.toTokens;
      const p = Math.min(1, sampleProgress(ctx, name) / (o.rampTokens / o.totalTokens));
      return F * (r0 + (1 - r0) * p);
    }
  }
}

/**
 * Sequences for the optimizer step after `step` completed steps: a multiple of ctx.microBatch,
 * at least one micro-batch (presets: at most finalBatch; adaptive: in [MIN, MAX] rounded).
 */
export function batchAt(spec: BatchSpec, step: number, ctx: BatchContext): number {
  checkContext(ctx);
  const { finalBatch: F, microBatch: m } = ctx;
  const round = (b: number) => roundToMicro(b, m, F);
  switch (spec.kind) {
    case 'constant':
      return F;
    case 'preset':
      return round(presetBatch(spec.name, step, ctx));
    case 'linear':
      return roundToMicro(spec.from + (spec.to - spec.from) * Math.min(1, step / spec.steps), m);
    case 'steps': {
      let b = spec.points[0].batch;
      for (const p of spec.points) if (step >= p.step) b = p.batch;
      return roundToMicro(b, m);
    }
    case 'adaptive': {
      const lo = roundToMicro(spec.min ?? m, m);
      const hi = Math.max(lo, roundToMicro(spec.max ?? F, m));
      const current = Math.min(hi, Math.max(lo, ctx.current ?? lo));
      const b = ctx.bSimple;
      if (b === null || b === undefined || !Number.isFinite(b) || b <= 0) return current;
      const target = Math.min(hi, Math.max(lo, roundToMicro(b, m)));
      return Math.max(current, target);
    }
  }
}

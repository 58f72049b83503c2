/**
 * Online gradient noise scale from the micro-batches of gradient accumulation
 * (docs/batch-size.md#noise-scale-estimator, McCandlish et al. 2018, appendix A.1): no extra
 * forward or backward passes.
 *
 * With `--accum k ≥ 2` every optimizer step already holds k micro-batch gradients of
 * B_small = `microBatchSeqs` sequences each, and their mean, the step's gradient over
 * B_big = k·B_small sequences. The trainer sums them into ONE buffer (backward adds g_k/k per
 * micro-batch), so the estimator keeps a copy `prev` of that buffer as it was before each
 * micro-batch (one extra float per parameter) and, after the micro-batch's backward, gets the
 * micro-batch's own squared norm in one fused pass (`sqDiffCopy`: Σ(cur − prev)², prev ← cur):
 *
 *   ‖g_k‖² = k²·Σ(buf_k − buf_{k−1})²          |G_small|² = (1/k) Σ_k ‖g_k‖²
 *   |G_big|² = ‖buf_k‖² (= ‖prev‖² after the last micro-batch)
 *
 * and per step the unbiased estimates (E‖G_B‖² = ‖G‖² + tr(Σ)/B):
 *
 *   ‖G‖²  ≈ 𝒢 = (B_big·|G_big|² − B_small·|G_small|²) / (B_big − B_small)
 *   tr(Σ) ≈ 𝒮 = (|G_small|² − |G_big|²) / (1/B_small − 1/B_big)
 *
 * Each alone is very noisy (𝒢 is often negative early on), so each is smoothed by its OWN
 * exponential moving average, and only then divided: B_simple = EMA(𝒮)/EMA(𝒢). The EMAs start
 * at 0 and are bias-corrected like Adam's moments, x̂_t = EMA_t/(1 − βᵗ) with t the number of
 * steps that produced an estimate, so the reported g2 and trace_sigma are unbiased averages from
 * the first step on (the correction cancels in the ratio). β defaults to 0.95 (an averaging window
 * of about 1/(1−β) = 20 steps); β = 0 reports each step's raw estimates.
 *
 * Units: an "example" is one sequence (the loss is the mean over sequences and positions), so
 * tr(Σ) is the per-sequence covariance trace, B_simple is in sequences, and b_simple_tokens =
 * b_simple × T (sequence length).
 *
 * Groups ('layer-kind', the default): the same estimate restricted to the coordinates of
 * `embeddings` (kind embedding), `norms` (LayerNorm gains and biases: ln_*, *_norm.*),
 * `attention` (attn.* weights and biases), `mlp` (mlp.*) and `other` (anything else; absent for
 * Keel's GPT). Each group is a set of contiguous runs of the flat buffer, and the kernels run on
 * subarray views of the same two buffers, so groups cost a few extra calls, not extra passes;
 * the whole-model norms are the sums of the groups' (so g2 and trace_sigma are exactly the sums
 * of the groups' values). 'model' runs one call over the whole buffer and reports no groups.
 *
 * Folded accumulation (Tiger, where each micro-batch's gradient is in the buffer ALONE, at
 * scale 1, and nothing is summed): `folded: true` computes ‖g_k‖² directly and keeps the running
 * mean Σ g_k/k in `prev` (sumSquares + triad: two passes instead of one).
 *
 * Use (see `NoiseScale.requirement` for the message to print when it cannot run):
 *
 *   const noise = new NoiseScale(model.layout.tensors, model.numParams, { beta: 0.95 });
 *   // each step, with accum ≥ 2:
 *   model.zeroGrad(); noise.beginStep();
 *   for (micro…) { forward; model.backward(1 / accum); noise.afterMicro(model.grads, accum); }
 *   const rec = noise.endStep(batch, accum, T);       // before clipping / precision emulation
 *   if (rec) log.write({ step, ...noiseLogFields(rec) });
 *   // checkpoint: noise.toJSON(); resume: NoiseScale.fromJSON(tensors, n, json)
 */
import { UserError } from '../errors.ts';
import { nativeKernels } from '../kernels/native.ts';
import type { Kernels } from '../kernels/types.ts';
import type { TensorSpec } from '../optim/types.ts';

export type NoiseGroups = 'model' | 'layer-kind';
export type NoiseGroupName = 'embeddings' | 'attention' | 'mlp' | 'norms' | 'other';
const NOISE_GROUP_NAMES: readonly NoiseGroupName[] = ['embeddings', 'attention', 'mlp', 'norms', 'other'];
export const DEFAULT_NOISE_BETA = 0.95;

export interface NoiseScaleOptions {
  /** EMA factor of 𝒢 and 𝒮 per step, in [0, 1); default 0.95. */
  beta?: number;
  /** 'layer-kind' (default): also per parameter group; 'model': whole model only. */
  groups?: NoiseGroups;
  /** Each micro-batch's gradient is alone in the buffer at scale 1 (Tiger's folded accumulation). */
  folded?: boolean;
  /** Kernels to use (default: the native addon). */
  kernels?: Kernels<Float32Array>;
}

/** One group's (or the whole model's) smoothed estimates. */
export interface NoiseEstimate {
  /** tr(Σ)/‖G‖² in sequences; null while the smoothed ‖G‖² is not positive. */
  b_simple: number | null;
  /** Smoothed unbiased ‖G‖² (bias-corrected EMA). */
  g2: number;
  /** Smoothed unbiased tr(Σ) per sequence (bias-corrected EMA). */
  trace_sigma: number;
}

export interface NoiseRecord extends NoiseEstimate {
  /** b_simple × sequence length; null with b_simple. */
  b_simple_tokens: number | null;
  /** This step's raw (unsmoothed) estimates 𝒢 and 𝒮. */
  g2_step: number;
  trace_sigma_step: number;
  /** √(g2/N): RMS over parameters of the true gradient (the g of the softsign rule, `keel plan --grad-rms`). */
  grad_rms: number | null;
  /** B_small and B_big of this step, in sequences. */
  b_small: number;
  b_big: number;
  /** This step's raw sums: mean over micro-batches of ‖g_small‖², and ‖g_big‖² (a step report's noise sums). */
  g_small_sq: number;
  g_big_sq: number;
  /** Steps that contributed to the EMAs (this one included). */
  count: number;
  /** Per parameter group ('layer-kind'); groups with no parameters are absent. */
  groups?: Partial<Record<NoiseGroupName, NoiseEstimate>>;
}

/** Serialised state (checkpoint): the EMAs before bias correction and their count. */
export interface NoiseScaleState {
  version: 1;
  beta: number;
  groups: NoiseGroups;
  folded: boolean;
  count: number;
  /** [EMA of 𝒢, EMA of 𝒮] for the model and per group. */
  ema: { model: [number, number] } & Partial<Record<NoiseGroupName, [number, number]>>;
}

interface Run {
  offset: number;
  size: number;
  group: number; // index into this.groupNames
}

/** The parameter group of one tensor, by kind and nanoGPT name. */
export function noiseGroupOf(t: Pick<TensorSpec, 'name' | 'kind'>): NoiseGroupName {
  if (t.kind === 'embedding') return 'embeddings';
  if (/(^|\.)ln_[^.]*\.|_norm\./.test(t.name)) return 'norms';
  if (/(^|\.)attn\./.test(t.name)) return 'attention';
  if (/(^|\.)mlp\./.test(t.name)) return 'mlp';
  return t.kind === 'gain' ? 'norms' : 'other';
}

/** Why the estimator cannot run with this accumulation, or null when it can. */
function noiseRequirement(accum: number): string | null {
  if (!(Number.isInteger(accum) && accum >= 2)) {
    return `the gradient noise scale needs gradient accumulation with at least 2 micro-batches per step (--accum ≥ 2; got ${accum}): it compares one micro-batch's gradient with the step's, at no extra cost`;
  }
  return null;
}

export class NoiseScale {
  readonly n: number;
  readonly beta: number;
  readonly groupsMode: NoiseGroups;
  readonly folded: boolean;
  /** Why the last endStep returned null (null when it returned a record). */
  reason: string | null = 'no step measured yet';
  private readonly k: Kernels<Float32Array>;
  private readonly prev: Float32Array;
  private readonly runs: Run[];
  private readonly groupNames: NoiseGroupName[];
  private readonly small: Float64Array; // Σ over micro-batches of ‖g_k‖², per group
  private micro = 0;
  private started = false;
  private count = 0;
  private readonly emaG: Float64Array; // per group, then the model at index groupNames.length
  private readonly emaS: Float64Array;

  constructor(tensors: readonly TensorSpec[], n: number, opts: NoiseScaleOptions = {}) {
    const beta = opts.beta ?? DEFAULT_NOISE_BETA;
    if (!(beta >= 0 && beta < 1)) throw new UserError(`noise scale: beta must be in [0, 1), got ${beta}`);
    const groups = opts.groups ?? 'layer-kind';
    if (groups !== 'model' && groups !== 'layer-kind') throw new UserError(`noise scale: groups must be 'model' or 'layer-kind', got ${String(groups)}`);
    this.n = n;
    this.beta = beta;
    this.groupsMode = groups;
    this.folded = opts.folded ?? false;
    this.k = opts.kernels ?? nativeKernels();
    this.prev = new Float32Array(n);
    // Runs: maximal contiguous stretches of one group; the tensors must tile [0, n) in order.
    const runs: { offset: number; size: number; name: NoiseGroupName | null }[] = [];
    if (groups === 'model') {
      runs.push({ offset: 0, size: n, name: null });
    } else {
      let at = 0;
      for (const t of tensors) {
        if (t.offset !== at)
          throw new UserError(`noise scale: tensors must tile the gradient buffer in order (${t.name} starts at ${t.offset}, expected ${at})`);
        at += t.size;
        if (t.size === 0) continue;
        const name = noiseGroupOf(t);
        const last = runs.at(-1);
        if (last && last.name === name) last.size += t.size;
        else runs.push({ offset: t.offset, size: t.size, name });
      }
      if (at !== n) throw new UserError(`noise scale: tensors cover ${at} elements but the gradient buffer has ${n}`);
    }
    const names = NOISE_GROUP_NAMES.filter((g) => runs.some((r) => r.name === g));
    this.groupNames = names;
    this.runs = runs.map((r) => ({ offset: r.offset, size: r.size, group: r.name === null ? 0 : names.indexOf(r.name) }));
    const G = Math.max(1, names.length);
    this.small = new Float64Array(G);
    this.emaG = new Float64Array(names.length + 1);
    this.emaS = new Float64Array(names.length + 1);
  }

  /** Why a run with this accumulation cannot measure the noise scale (null when it can). */
  static requirement(accum: number): string | null {
    return noiseRequirement(accum);
  }

  /** Group names reported in records, in canonical order. */
  get groups(): readonly NoiseGroupName[] {
    return this.groupNames;
  }

  /**
   * Call at the start of a step, after zeroing the gradient buffer: the estimator takes the
   * buffer before the first micro-batch to be all zero.
   */
  beginStep(): void {
    // Accumulated mode needs no zeroing: the first micro-batch copies the buffer into prev.
    if (this.folded) this.prev.fill(0);
    this.small.fill(0);
    this.micro = 0;
    this.started = true;
  }

  /**
   * Call after each micro-batch's backward (before clipping, loss-scale or precision emulation
   * touch the buffer). Accumulated mode: `grads` is the running sum Σ g_j/accum; folded mode: it
   * is this micro-batch's gradient alone.
   */
  afterMicro(grads: Float32Array, accum: number): void {
    if (!this.started) throw new Error('NoiseScale.afterMicro called before beginStep');
    if (grads.length < this.n) throw new Error(`NoiseScale: gradient buffer has ${grads.length} elements, expected ${this.n}`);
    const { k, prev } = this;
    const G = this.groupNames.length;
    for (const r of this.runs) {
      const p = prev.subarray(r.offset, r.offset + r.size);
      const c = grads.subarray(r.offset, r.offset + r.size);
      let s: number;
      if (this.folded) {
        s = k.sumSquares(c, r.size);
        k.triad(p, p, c, r.size, 1 / accum);
      } else if (this.micro === 0) {
        // buf_0 = 0: Σ(cur − 0)² and prev ← cur, without a pass to zero prev first.
        s = k.sumSquares(c, r.size) * accum * accum;
        p.set(c);
      } else {
        s = k.sqDiffCopy(p, c, r.size) * accum * accum;
      }
      this.small[G === 0 ? 0 : r.group] += s;
    }
    this.micro += 1;
  }

  /**
   * Call after the last micro-batch: folds this step's estimates into the EMAs and returns the
   * record, or null (with `reason` set) when accum < 2, a norm is not finite (the step is then
   * left out of the averages), or the micro-batch count disagrees with `accum`.
   */
  endStep(microBatchSeqs: number, accum: number, seqLen: number): NoiseRecord | null {
    const started = this.started;
    this.started = false;
    const req = noiseRequirement(accum);
    if (req) return this.fail(req);
    if (!started || this.micro !== accum)
      return this.fail(`noise scale: saw ${this.micro} micro-batches, expected accum = ${accum} (call beginStep, then afterMicro once per micro-batch)`);
    if (!(microBatchSeqs >= 1)) throw new Error(`NoiseScale.endStep: microBatchSeqs must be ≥ 1, got ${microBatchSeqs}`);
    const bS = microBatchSeqs;
    const bB = accum * microBatchSeqs;
    const G = this.groupNames.length;
    // |G_big|² per group: ‖prev‖² over the group's runs (prev = the final accumulated buffer).
    const big = new Float64Array(Math.max(1, G));
    for (const r of this.runs) big[G === 0 ? 0 : r.group] += this.k.sumSquares(this.prev.subarray(r.offset, r.offset + r.size), r.size);
    let smallAll = 0;
    let bigAll = 0;
    for (let g = 0; g < Math.max(1, G); g++) {
      smallAll += this.small[g] / accum;
      bigAll += big[g];
    }
    if (!Number.isFinite(smallAll) || !Number.isFinite(bigAll)) return this.fail('noise scale: non-finite gradient norm; step left out of the averages');
    const est = (sm: number, bg: number) => noiseFromSums(sm, bg, bS, bB);
    this.count += 1;
    const b = this.beta;
    const corr = 1 - Math.pow(b, this.count);
    const fold = (i: number, x: [number, number]): NoiseEstimate => {
      this.emaG[i] = b * this.emaG[i] + (1 - b) * x[0];
      this.emaS[i] = b * this.emaS[i] + (1 - b) * x[1];
      return estimate(this.emaG[i] / corr, this.emaS[i] / corr);
    };
    let groups: NoiseRecord['groups'];
    if (G > 0) {
      groups = {};
      for (let g = 0; g < G; g++) groups[this.groupNames[g]] = fold(g, est(this.small[g] / accum, big[g]));
    }
    const raw = est(smallAll, bigAll);
    const all = fold(G, raw);
    this.reason = null;
    return {
      ...all,
      b_simple_tokens: all.b_simple === null ? null : all.b_simple * seqLen,
      g2_step: raw[0],
      trace_sigma_step: raw[1],
      grad_rms: all.g2 > 0 ? Math.sqrt(all.g2 / this.n) : null,
      b_small: bS,
      b_big: bB,
      g_small_sq: smallAll,
      g_big_sq: bigAll,
      count: this.count,
      ...(groups ? { groups } : {}),
    };
  }

  /** The current smoothed estimates without a new step (null before the first). */
  current(): NoiseEstimate | null {
    if (this.count === 0) return null;
    const corr = 1 - Math.pow(this.beta, this.count);
    const G = this.groupNames.length;
    return estimate(this.emaG[G] / corr, this.emaS[G] / corr);
  }

  toJSON(): NoiseScaleState {
    const G = this.groupNames.length;
    const ema: NoiseScaleState['ema'] = { model: [this.emaG[G], this.emaS[G]] };
    for (let g = 0; g < G; g++) ema[this.groupNames[g]] = [this.emaG[g], this.emaS[g]];
    return { version: 1, beta: this.beta, groups: this.groupsMode, folded: this.folded, count: this.count, ema };
  }

  /** Restores EMAs saved by toJSON (same tensors); the options come from the state. */
  static fromJSON(tensors: readonly TensorSpec[], n: number, state: NoiseScaleState, kernels?: Kernels<Float32Array>): NoiseScale {
    if (state?.version !== 1) throw new UserError('noise scale: unsupported saved state (expected version 1)');
    const ns = new NoiseScale(tensors, n, { beta: state.beta, groups: state.groups, folded: state.folded, kernels });
    ns.count = state.count;
    const G = ns.groupNames.length;
    const put = (i: number, v: [number, number] | undefined, what: string) => {
      if (!Array.isArray(v) || v.length !== 2 || !v.every((x) => typeof x === 'number')) throw new UserError(`noise scale: saved state lacks ${what}`);
      ns.emaG[i] = v[0];
      ns.emaS[i] = v[1];
    };
    put(G, state.ema.model, 'the model EMAs');
    for (let g = 0; g < G; g++) put(g, state.ema[ns.groupNames[g]], `the ${ns.groupNames[g]} EMAs`);
    ns.reason = state.count > 0 ? null : 'no step measured yet';
    return ns;
  }

  private fail(reason: string): null {
    this.reason = reason;
    return null;
  }
}

/**
 * Unbiased estimates [𝒢, 𝒮] of ‖G‖² and tr(Σ) from one step's sums: the mean ‖g_small‖² over
 * batches of bS sequences and ‖g_big‖² of their union of bB sequences (McCandlish et al. 2018, App. A).
 */
export function noiseFromSums(small: number, big: number, bS: number, bB: number): [number, number] {
  return [(bB * big - bS * small) / (bB - bS), (small - big) / (1 / bS - 1 / bB)];
}

function estimate(g2: number, tr: number): NoiseEstimate {
  return { b_simple: g2 > 0 ? tr / g2 : null, g2, trace_sigma: tr };
}

/**
 * The flat metrics.jsonl fields of a record (numbers or null; what `keel plan --from` and the
 * report read): b_simple, b_simple_tokens, noise_g2, noise_trace_sigma, noise_grad_rms and
 * b_simple_<group> per group.
 */
export function noiseLogFields(rec: NoiseRecord): Record<string, number | null> {
  const out: Record<string, number | null> = {
    b_simple: rec.b_simple,
    b_simple_tokens: rec.b_simple_tokens,
    noise_g2: rec.g2,
    noise_trace_sigma: rec.trace_sigma,
    noise_grad_rms: rec.grad_rms,
  };
  for (const [name, e] of Object.entries(rec.groups ?? {})) out[`b_simple_${name}`] = e.b_simple;
  return out;
}

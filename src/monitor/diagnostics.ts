/**
 * Per-tensor Adam-instability diagnostics (docs/stability.md#adam-instability, Molybog et al. 2023, Bai et al.
 * 2025), computed every `every` steps from the gradient, the optimizer state and the update:
 * what a spike's precursors look like, one metrics.jsonl line per diagnosed step.
 *
 * The trainer drives it around `optimizer.step`, on every step for which `wants(step)` or
 * `wants(step + 1)` holds (time correlations need the step before a diagnosed step):
 *
 *   const diag = new Diagnostics(model.layout.tensors, model.numParams, { every: 50 });
 *   ...
 *   const watch = diag.wants(step) || diag.wants(step + 1);      // step: 1-based, about to run
 *   if (watch) diag.before(step, params, grads, optimizer, state); // after clipping
 *   optimizer.step(params, grads, state, { lr });
 *   const rec = watch ? diag.after(step, params, optimizer, state, lr) : null;
 *   if (rec) log.write(rec);
 *
 * Record (one line): `{step, diag: {<tensor>: TensorDiag}, diag_<aggregate>: …}`, see
 * `TensorDiag` and `DiagRecord` for the keys. Numbers carry 4 significant digits (histogram
 * fractions 3); a statistic that is undefined (0/0, no previous step, no finite r) is null;
 * one that does not apply to the optimizer (ε-fraction without a second moment, cos(g, m)
 * without momentum) is left out.
 *
 * Definitions, per tensor of n coordinates, at step t (state after the step unless noted):
 *   grad_rms     √(Σg_t²/n), g_t as the optimizer receives it (after clipping)
 *   update_rms   √(ΣΔθ²/n), Δθ = θ_t − θ_{t−1} (weight decay included)
 *   param_rms    √(Σθ_t²/n);  max_abs  max |θ_t|
 *   zero_frac    #{g_t = 0}/n (exactly zero: underflow, dead units, unused embedding rows)
 *   eps_frac     #{√v̂_t < ε}/n (Adam family), v̂_t = v_t/(1 − β2ᵗ) (AdaX: v_t/((1+β2)ᵗ − 1));
 *                ε is the `eps` option, also in epsMode zero/atan2 where the update ignores it
 *   decoupling   median over coordinates with v̂_{t−1} > 0 of g_t²/v̂_{t−1} (Adam family; Bai et
 *                al.'s precursor: ≪ 1 for long means v decays as β2ᵏ). v̂ is BIAS-CORRECTED
 *                with t−1, so a stationary gradient gives ≈ 1 from the first steps on. Exact
 *                median: quickselect on a scratch copy of the tensor's ratios (average of the
 *                two middle values when their count is even); non-finite ratios are excluded
 *   cos_g        cos(g_t, g_{t−1});  cos_gm  cos(g_t, m_{t−1}) with m the optimizer's momentum
 *                slot (`exp_avg`, or SGD's `momentum_buffer`), before the step;
 *   cos_u        cos(Δθ_t, Δθ_{t−1}). The cosines need step t−1 captured (else null), and are
 *                null where a vector is all zero
 *   r            the per-coordinate update in units of the learning rate:
 *                  AdamW and AdaX: recomputed from the post-step state exactly as the step
 *                    used it, r = m̂/(√v̂ + ε) (or the epsMode's inside / zero / atan2 form),
 *                    so weight decay does not enter;
 *                  Lion, Signum, SignSGD, SoftSign, SGD (decay θ·(1 − lr·λ)): r = −(θ_t −
 *                    (1 − lr·λ)·θ_{t−1})/lr on tensors that decay, −Δθ/lr elsewhere: exactly
 *                    the direction φ (±1 for the sign optimizers);
 *                  others (Tiger, Adafactor, anything unknown): r = −Δθ/lr with `lr` the value
 *                    passed to after(): its scale is that of the nominal lr (Tiger multiplies
 *                    it by RMS(θ), Adafactor's relative step ignores it), so trust the shape
 *                    statistics (kurtosis, skewness, bimodality: scale-free) over hist and
 *                    mass_near_1 there.
 *                Non-finite r (e.g. 0/0 with ε = 0 in epsMode outside) is excluded.
 *   skewness     m3/m2^1.5 of r;  kurtosis  m4/m2² (NOT excess: a Gaussian gives 3), central
 *                moments from one pass of power sums in float64
 *   bimodality   Sarle's b = (skewness² + 1)/kurtosis of r, in (0, 1]; > 5/9 suggests two modes
 *                (±1 for the "r ≈ ±1" phase), a Gaussian gives 1/3
 *   mass_near_1  #{0.9 ≤ |r| ≤ 1.1}/#finite r
 *   hist         `bins` fractions of the finite r: bin i is centred on c_i = −2 + 4i/(bins−1)
 *                and holds r ∈ [c_i − w/2, c_i + w/2), w = 4/(bins−1) (41 bins: c = −2, −1.9,
 *                …, 2); r outside [−2, 2] is counted in the end bins
 * Aggregates over the whole model (top-level keys, so line charts can use them): diag_grad_rms,
 * diag_update_rms, diag_param_rms, diag_max_abs, diag_zero_frac, diag_eps_frac, diag_cos_g,
 * diag_cos_gm, diag_cos_u (over the concatenated buffers), diag_kurtosis_max and
 * diag_bimodality_max (over tensors).
 *
 * Cost: nothing on other steps. Memory, allocated once: three float32 copies of the parameter
 * buffer (g_{t−1}, Δθ_{t−1}, θ_{t−1}) and a float64 scratch the size of the largest tensor;
 * statistics that need the pre-step state (cos_gm, decoupling) are computed in before(),
 * so m_{t−1} and v_{t−1} are never copied.
 */
import { UserError } from '../errors.ts';
import { checkTensors, decays, slotOffsets } from '../optim/base.ts';
import type { Optimizer, OptState, TensorSpec } from '../optim/types.ts';
import { medianInPlace } from '../util/stats.ts';

export interface DiagOptions {
  /** Diagnose steps that are multiples of this (default 50); the step before each is captured. */
  every: number;
  /** Histogram bins of r over [−2, 2] (default 41: centres −2, −1.9, …, 2). */
  bins: number;
}

const DEFAULT_DIAG_OPTIONS: Readonly<DiagOptions> = { every: 50, bins: 41 };

/** Half-width of the histogram's range: r ∈ [−HIST_RANGE, HIST_RANGE]. */
const HIST_RANGE = 2;

/** One tensor's statistics at a diagnosed step (see the module comment for definitions). */
export interface TensorDiag {
  grad_rms: number | null;
  update_rms: number | null;
  param_rms: number | null;
  max_abs: number | null;
  zero_frac: number | null;
  /** Adam family only. */
  eps_frac?: number | null;
  /** Adam family only. */
  decoupling?: number | null;
  cos_g: number | null;
  /** Optimizers with a momentum slot only. */
  cos_gm?: number | null;
  cos_u: number | null;
  skewness: number | null;
  kurtosis: number | null;
  bimodality: number | null;
  mass_near_1: number | null;
  hist: number[];
}

/** One metrics.jsonl line. */
export interface DiagRecord {
  step: number;
  diag: Record<string, TensorDiag>;
  diag_grad_rms: number | null;
  diag_update_rms: number | null;
  diag_param_rms: number | null;
  diag_max_abs: number | null;
  diag_zero_frac: number | null;
  diag_eps_frac?: number | null;
  diag_cos_g: number | null;
  diag_cos_gm?: number | null;
  diag_cos_u: number | null;
  diag_kurtosis_max: number | null;
  diag_bimodality_max: number | null;
}

/** 4 significant digits (about 6 characters of JSON); non-finite → null. */
function round4(x: number): number | null {
  return Number.isFinite(x) ? Number(x.toPrecision(4)) : null;
}

const round3 = (x: number) => (x === 0 ? 0 : Number(x.toPrecision(3)));

/** Optimizers whose decoupled decay is θ·(1 − lr·λ) on `decays(t, decayEmbeddings)` tensors, with no per-tensor lr. */
const PLAIN_DECAY = new Set(['lion', 'signum', 'signsgd', 'softsign', 'sgd']);

/** How to read r from an Adam-family state: m̂ = mScale·m, √v̂ = rootVScale(t)·√v. */
interface AdamForm {
  eps: number;
  /** 0 outside, 1 inside, 2 zero, 3 atan2 (as the adam kernel). */
  mode: number;
  mScale(t: number): number;
  rootVScale(t: number): number;
}

function adamForm(opt: Optimizer): AdamForm | null {
  const o = opt.options as Record<string, unknown>;
  const num = (k: string) => (typeof o[k] === 'number' ? (o[k] as number) : NaN);
  const eps = num('eps');
  if (opt.name === 'adamw') {
    const b1 = num('beta1');
    const b2 = num('beta2');
    const mode = ['outside', 'inside', 'zero', 'atan2'].indexOf(String(o.epsMode ?? 'outside'));
    return { eps, mode: Math.max(mode, 0), mScale: (t) => 1 / (1 - Math.pow(b1, t)), rootVScale: (t) => 1 / Math.sqrt(1 - Math.pow(b2, t)) };
  }
  if (opt.name === 'adax') {
    const b2 = num('beta2');
    return { eps, mode: 0, mScale: () => 1, rootVScale: (t) => 1 / Math.sqrt(Math.expm1(t * Math.log1p(b2))) };
  }
  return null;
}

// Per-tensor accumulators of before() (float64, one row of ACC per tensor): slot offsets in a row.
const A = { G2: 0, ZERO: 1, GG: 2, GP2: 3, GM: 4, M2: 5, DEC: 6 } as const;
const ACC = 7;

/** What the diagnostics know about an optimizer, resolved once per optimizer object. */
interface OptView {
  opt: Optimizer;
  adam: AdamForm | null;
  /** Per tensor: offset of its momentum in the momentum slot, or −1. */
  mOff: Int32Array;
  mSlot: string | null;
  /** Whether Adam's m and v cover every tensor elementwise (full-size slots). */
  adamOk: boolean;
  /** Per tensor: the decay factor's λ to remove from Δθ (0 = none). */
  lambda: Float64Array;
}

export class Diagnostics {
  readonly options: Readonly<DiagOptions>;
  private readonly tensors: readonly TensorSpec[];
  private readonly n: number;
  /** g_{t−1}. */
  private gPrev: Float32Array;
  /** Δθ_{t−1}. */
  private dPrev: Float32Array;
  /** θ before the step being watched; becomes Δθ of that step and swaps with dPrev. */
  private work: Float32Array;
  /** g²/v̂ ratios of one tensor, for the median. */
  private readonly scratch: Float64Array;
  private readonly hist: Float64Array;
  private readonly acc: Float64Array;
  /** Per-tensor accumulators of after(). */
  private readonly upd: Float64Array;
  private gPrevStep = -1;
  private dPrevStep = -1;
  /** Step whose before() ran with wants(step), and whether g_{t−1} was available then. */
  private pendingStep = -1;
  private pendingHasPrevG = false;
  private view: OptView | null = null;

  constructor(tensors: readonly TensorSpec[], n: number, opts: Partial<DiagOptions> = {}) {
    const o = { ...DEFAULT_DIAG_OPTIONS, ...opts };
    if (!Number.isInteger(o.every) || o.every < 1) throw new UserError(`diagnostics: every must be a positive integer, got ${o.every}`);
    if (!Number.isInteger(o.bins) || o.bins < 2) throw new UserError(`diagnostics: bins must be an integer ≥ 2, got ${o.bins}`);
    checkTensors(tensors, n);
    this.options = o;
    this.tensors = tensors;
    this.n = n;
    this.gPrev = new Float32Array(n);
    this.dPrev = new Float32Array(n);
    this.work = new Float32Array(n);
    this.scratch = new Float64Array(tensors.reduce((a, t) => Math.max(a, t.size), 0));
    this.hist = new Float64Array(o.bins);
    this.acc = new Float64Array(tensors.length * ACC);
    this.upd = new Float64Array(U_SIZE);
  }

  /** True when step `step` (1-based, the step about to run) is diagnosed. */
  wants(step: number): boolean {
    return step >= 1 && step % this.options.every === 0;
  }

  /**
   * Forgets the captured previous step (call after a rollback or a resume that changes θ out of
   * band): the next diagnosed step then reports null time correlations instead of stale ones.
   */
  reset(): void {
    this.gPrevStep = this.dPrevStep = this.pendingStep = -1;
    this.pendingHasPrevG = false;
  }

  /** The buffers this instance holds (allocated once in the constructor; for tests and memory accounting). */
  get buffers(): readonly (Float32Array | Float64Array)[] {
    return [this.gPrev, this.dPrev, this.work, this.scratch, this.hist, this.acc, this.upd];
  }

  /** Bytes held by the buffers: 12 per parameter plus 8 per element of the largest tensor. */
  get bytes(): number {
    return this.buffers.reduce((a, b) => a + b.byteLength, 0);
  }

  /**
   * Before optimizer.step on every step for which wants(step) or wants(step + 1) holds (after
   * gradient clipping): the gradient statistics that need the pre-step state, and the copies
   * of g_t and θ_{t−1}.
   */
  before(step: number, params: Float32Array, grads: Float32Array, opt: Optimizer, state: OptState): void {
    this.checkSizes(params, grads);
    const diagnose = this.wants(step);
    if (diagnose) {
      const v = this.viewOf(opt, state);
      this.pendingStep = step;
      this.pendingHasPrevG = this.gPrevStep === step - 1;
      this.gradStats(grads, v, state);
    }
    if (this.wants(step + 1)) {
      this.gPrev.set(grads);
      this.gPrevStep = step;
    }
    this.work.set(params); // θ_{t−1}
  }

  /**
   * After optimizer.step on the same steps: the update and state statistics; the record when
   * wants(step), else null. `lr` is the learning rate the step used.
   */
  after(step: number, params: Float32Array, opt: Optimizer, state: OptState, lr: number): DiagRecord | null {
    this.checkSizes(params, params);
    const diagnose = this.wants(step) && this.pendingStep === step;
    const keep = this.wants(step + 1);
    let rec: DiagRecord | null = null;
    if (diagnose) rec = this.record(step, params, this.viewOf(opt, state), state, lr, keep);
    else if (keep) {
      const w = this.work;
      for (let i = 0; i < this.n; i++) w[i] = params[i] - w[i];
    }
    if (keep) {
      const d = this.dPrev;
      this.dPrev = this.work;
      this.work = d;
      this.dPrevStep = step;
    }
    this.pendingStep = -1;
    return rec;
  }

  private checkSizes(params: Float32Array, grads: Float32Array): void {
    if (params.length !== this.n || grads.length !== this.n) {
      throw new RangeError(`diagnostics: buffers of ${params.length}/${grads.length} elements, expected ${this.n}`);
    }
  }

  private viewOf(opt: Optimizer, state: OptState): OptView {
    if (this.view && this.view.opt === opt) return this.view;
    const T = this.tensors;
    if (state.tensors.length !== T.length || state.tensors.some((t, i) => t.offset !== T[i].offset || t.size !== T[i].size)) {
      throw new RangeError('diagnostics: the optimizer state was built over other tensors than the diagnostics');
    }
    const specs = opt.slots(state.tensors);
    const full = (name: string) => {
      const s = specs.find((x) => x.name === name);
      if (!s || !state.slots[name]) return null;
      const offs = slotOffsets(s);
      return Int32Array.from(T, (t, i) => (s.shapes[i] && offs[i] >= 0 && s.shapes[i]!.reduce((a, b) => a * b, 1) === t.size ? offs[i] : -1));
    };
    const mSlot = opt.moments.m !== null && full(opt.moments.m) !== null ? opt.moments.m : null;
    const mOff = mSlot ? full(mSlot)! : new Int32Array(T.length).fill(-1);
    let adam = adamForm(opt);
    const allFull = (o: Int32Array | null) => o?.every((x, i) => x === T[i].offset) === true;
    const { m, v } = opt.moments;
    const adamOk = adam !== null && m !== null && v !== null && allFull(full(m)) && allFull(full(v));
    if (!adamOk) adam = null;
    const o = opt.options as Record<string, unknown>;
    const wd = typeof o.weightDecay === 'number' ? o.weightDecay : 0;
    const lambda = Float64Array.from(T, (t) => (PLAIN_DECAY.has(opt.name) && decays(t, o.decayEmbeddings === true) ? wd : 0));
    this.view = { opt, adam, mOff, mSlot, adamOk, lambda };
    return this.view;
  }

  /** Σg², zeros, g·g_{t−1}, g·m_{t−1} and the decoupling median, per tensor, from the pre-step state. */
  private gradStats(g: Float32Array, v: OptView, state: OptState): void {
    const acc = this.acc;
    const m = v.mSlot ? state.slots[v.mSlot] : null;
    const vs = v.adam ? state.slots.exp_avg_sq : null;
    const vScale = v.adam && state.t > 0 ? v.adam.rootVScale(state.t) ** 2 : 0; // v̂_{t−1} = v·vScale
    const T = this.tensors;
    for (let ti = 0; ti < T.length; ti++) {
      const a = ti * ACC;
      const lo = T[ti].offset,
        hi = lo + T[ti].size;
      sumSqZeros(g, lo, hi, acc, a + A.G2);
      if (this.pendingHasPrevG) dotNorm(g, this.gPrev, lo, hi, 0, acc, a + A.GG);
      else acc[a + A.GG] = acc[a + A.GP2] = 0;
      const mo = v.mOff[ti];
      if (m && mo >= 0) dotNorm(g, m, lo, hi, mo - lo, acc, a + A.GM);
      else acc[a + A.GM] = acc[a + A.M2] = 0;
      acc[a + A.DEC] = vs && vScale > 0 ? medianInPlace(this.scratch, ratios(g, vs, lo, hi, vScale, this.scratch)) : NaN;
    }
  }

  private record(step: number, p: Float32Array, v: OptView, state: OptState, lr: number, keep: boolean): DiagRecord {
    const acc = this.acc;
    const hasPrevD = this.dPrevStep === step - 1;
    const hasPrevG = this.pendingHasPrevG;
    const adam = v.adam;
    const bins = this.options.bins;
    const h = this.hist;
    const u = this.upd;
    const diag: Record<string, TensorDiag> = {};
    const tot = { g2: 0, gg: 0, gp2: 0, gm: 0, m2: 0, d2: 0, dd: 0, dp2: 0, p2: 0, max: 0, zero: 0, eps: 0, kurt: -Infinity, bim: -Infinity };
    const T = this.tensors;
    for (let ti = 0; ti < T.length; ti++) {
      const t = T[ti];
      const a = ti * ACC;
      const lo = t.offset,
        hi = lo + t.size;
      // θ_{t−1} is in `work` (overwritten with Δθ_t when `keep`).
      updatePass(p, this.work, lo, hi, keep, u);
      if (hasPrevD) dotNorm(this.work, this.dPrev, lo, hi, 0, u, U_DD, keep ? null : p);
      h.fill(0);
      if (adam) adamR(state.slots.exp_avg, state.slots.exp_avg_sq, lo, hi, adam.mScale(state.t), adam.rootVScale(state.t), adam.eps, adam.mode, bins, h, u);
      else deltaR(p, this.work, lo, hi, keep, 1 - lr * v.lambda[ti], 1 / lr, bins, h, u);
      const n = t.size;
      const d2 = u[U_D2],
        p2 = u[U_P2],
        maxAbs = u[U_MAX],
        dd = hasPrevD ? u[U_DD] : 0,
        dp2 = hasPrevD ? u[U_DP2] : 0;
      const cnt = u[U_CNT];
      // Central moments from power sums (float64).
      const mu = u[U_S1] / cnt,
        e2 = u[U_S2] / cnt,
        e3 = u[U_S3] / cnt,
        e4 = u[U_S4] / cnt;
      const c2 = e2 - mu * mu;
      const c3 = e3 - 3 * mu * e2 + 2 * mu * mu * mu;
      const c4 = e4 - 4 * mu * e3 + 6 * mu * mu * e2 - 3 * mu * mu * mu * mu;
      const skew = c3 / Math.pow(c2, 1.5);
      const kurt = c4 / (c2 * c2);
      const bim = (skew * skew + 1) / kurt;
      const g2 = acc[a + A.G2];
      const rec = {
        grad_rms: round4(Math.sqrt(g2 / n)),
        update_rms: round4(Math.sqrt(d2 / n)),
        param_rms: round4(Math.sqrt(p2 / n)),
        max_abs: round4(maxAbs),
        zero_frac: round4(acc[a + A.ZERO] / n),
      } as TensorDiag;
      if (adam) {
        rec.eps_frac = round4(u[U_EPS] / n);
        rec.decoupling = round4(acc[a + A.DEC]);
      }
      rec.cos_g = hasPrevG ? round4(cos(acc[a + A.GG], g2, acc[a + A.GP2])) : null;
      if (v.mOff[ti] >= 0) rec.cos_gm = round4(cos(acc[a + A.GM], g2, acc[a + A.M2]));
      rec.cos_u = hasPrevD ? round4(cos(dd, d2, dp2)) : null;
      rec.skewness = round4(skew);
      rec.kurtosis = round4(kurt);
      rec.bimodality = round4(bim);
      rec.mass_near_1 = round4(u[U_NEAR] / cnt);
      rec.hist = Array.from(h, (c) => (cnt > 0 ? round3(c / cnt) : 0));
      diag[t.name] = rec;
      tot.g2 += g2;
      tot.gg += acc[a + A.GG];
      tot.gp2 += acc[a + A.GP2];
      if (v.mOff[ti] >= 0) {
        tot.gm += acc[a + A.GM];
        tot.m2 += acc[a + A.M2];
      }
      tot.d2 += d2;
      tot.dd += dd;
      tot.dp2 += dp2;
      tot.p2 += p2;
      tot.max = Math.max(tot.max, maxAbs);
      tot.zero += acc[a + A.ZERO];
      tot.eps += u[U_EPS];
      if (Number.isFinite(kurt)) tot.kurt = Math.max(tot.kurt, kurt);
      if (Number.isFinite(bim)) tot.bim = Math.max(tot.bim, bim);
    }
    const N = this.n;
    const out = {
      step,
      diag,
      diag_grad_rms: round4(Math.sqrt(tot.g2 / N)),
      diag_update_rms: round4(Math.sqrt(tot.d2 / N)),
      diag_param_rms: round4(Math.sqrt(tot.p2 / N)),
      diag_max_abs: round4(tot.max),
      diag_zero_frac: round4(tot.zero / N),
    } as DiagRecord;
    if (adam) out.diag_eps_frac = round4(tot.eps / N);
    out.diag_cos_g = hasPrevG ? round4(cos(tot.gg, tot.g2, tot.gp2)) : null;
    if (v.mSlot) out.diag_cos_gm = round4(cos(tot.gm, tot.g2, tot.m2));
    out.diag_cos_u = hasPrevD ? round4(cos(tot.dd, tot.d2, tot.dp2)) : null;
    out.diag_kurtosis_max = round4(tot.kurt);
    out.diag_bimodality_max = round4(tot.bim);
    return out;
  }
}

// ---- The passes: small monomorphic loops over one tensor's range [lo, hi), results in `out` ----

/** out[at] = Σg², out[at + 1] = #{g = 0}. */
function sumSqZeros(g: Float32Array, lo: number, hi: number, out: Float64Array, at: number): void {
  let s = 0,
    z = 0;
  for (let i = lo; i < hi; i++) {
    const x = g[i];
    s += x * x;
    if (x === 0) z++;
  }
  out[at] = s;
  out[at + 1] = z;
}

/**
 * out[at] = Σ a[i]·b[i + shift], out[at + 1] = Σ b[i + shift]². With `minus` given, a[i] is
 * read as minus[i] − a[i] (Δθ = θ_t − θ_{t−1} while `a` still holds θ_{t−1}).
 */
function dotNorm(
  a: Float32Array,
  b: Float32Array,
  lo: number,
  hi: number,
  shift: number,
  out: Float64Array,
  at: number,
  minus: Float32Array | null = null,
): void {
  let d = 0,
    n = 0;
  if (minus) {
    for (let i = lo; i < hi; i++) {
      const y = b[i + shift];
      d += (minus[i] - a[i]) * y;
      n += y * y;
    }
  } else {
    for (let i = lo; i < hi; i++) {
      const y = b[i + shift];
      d += a[i] * y;
      n += y * y;
    }
  }
  out[at] = d;
  out[at + 1] = n;
}

/** s[0, k) = the finite g²/v̂ with v̂ = v·vScale > 0; returns k. */
function ratios(g: Float32Array, v: Float32Array, lo: number, hi: number, vScale: number, s: Float64Array): number {
  let k = 0;
  for (let i = lo; i < hi; i++) {
    const vh = v[i] * vScale;
    if (vh > 0) {
      const q = (g[i] * g[i]) / vh;
      if (q < Infinity) s[k++] = q; // drops +Inf and NaN
    }
  }
  return k;
}

// Slots of the per-tensor update accumulator.
const U_D2 = 0,
  U_P2 = 1,
  U_MAX = 2,
  U_DD = 3,
  U_DP2 = 4,
  U_CNT = 5,
  U_S1 = 6,
  U_S2 = 7,
  U_S3 = 8,
  U_S4 = 9,
  U_NEAR = 10,
  U_EPS = 11;
const U_SIZE = 12;

/** ΣΔθ², Σθ², max|θ| with w = θ_{t−1}; when `keep`, w becomes Δθ. */
function updatePass(p: Float32Array, w: Float32Array, lo: number, hi: number, keep: boolean, u: Float64Array): void {
  let d2 = 0,
    p2 = 0,
    mx = 0;
  for (let i = lo; i < hi; i++) {
    const th = p[i];
    const d = th - w[i];
    d2 += d * d;
    p2 += th * th;
    const ab = th < 0 ? -th : th;
    if (ab > mx) mx = ab;
    if (keep) w[i] = d;
  }
  u[U_D2] = d2;
  u[U_P2] = p2;
  u[U_MAX] = mx;
}

/** Adds one finite r to the moments, the near-1 count and the histogram. */
function moments(u: Float64Array, h: Float64Array, bins: number, r: number): void {
  const r2 = r * r;
  u[U_CNT]++;
  u[U_S1] += r;
  u[U_S2] += r2;
  u[U_S3] += r2 * r;
  u[U_S4] += r2 * r2;
  const ar = r < 0 ? -r : r;
  if (ar >= 0.9 && ar <= 1.1) u[U_NEAR]++;
  let b = Math.floor((r + HIST_RANGE) * ((bins - 1) / (2 * HIST_RANGE)) + 0.5);
  if (b < 0) b = 0;
  else if (b >= bins) b = bins - 1;
  h[b]++;
}

function resetMoments(u: Float64Array): void {
  for (let j = U_CNT; j < U_SIZE; j++) u[j] = 0;
}

/** r = m̂/(√v̂ + ε) (or the epsMode form) from the post-step state; also counts √v̂ < ε. */
function adamR(
  m: Float32Array,
  v: Float32Array,
  lo: number,
  hi: number,
  mScale: number,
  rvScale: number,
  eps: number,
  mode: number,
  bins: number,
  h: Float64Array,
  u: Float64Array,
): void {
  resetMoments(u);
  let epsCount = 0;
  for (let i = lo; i < hi; i++) {
    const mh = m[i] * mScale;
    const rv = Math.sqrt(v[i]) * rvScale;
    if (rv < eps) epsCount++;
    let r: number;
    if (mode === 0) r = mh / (rv + eps);
    else if (mode === 1) r = mh / Math.sqrt(rv * rv + eps * eps);
    else if (mode === 2) r = rv === 0 ? 0 : mh / rv;
    else r = Math.atan2(mh, rv);
    if (r - r === 0) moments(u, h, bins, r); // finite
  }
  u[U_EPS] = epsCount;
}

/** r = −(θ_t − dec·θ_{t−1})/lr; θ_{t−1} is w, or θ_t − w when `keep` already turned w into Δθ. */
function deltaR(
  p: Float32Array,
  w: Float32Array,
  lo: number,
  hi: number,
  keep: boolean,
  dec: number,
  invLr: number,
  bins: number,
  h: Float64Array,
  u: Float64Array,
): void {
  resetMoments(u);
  for (let i = lo; i < hi; i++) {
    const th = p[i];
    const old = keep ? th - w[i] : w[i];
    const r = -(th - dec * old) * invLr;
    if (r - r === 0) moments(u, h, bins, r);
  }
  u[U_EPS] = 0;
}

/** a·b/(‖a‖‖b‖) from the dot product and the squared norms; NaN when either is zero. */
function cos(dot: number, a2: number, b2: number): number {
  return a2 > 0 && b2 > 0 ? dot / Math.sqrt(a2 * b2) : NaN;
}

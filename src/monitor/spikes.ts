/**
 * Loss-spike detection (docs/stability.md#spike-detection): an online detector the trainer feeds every step,
 * and an offline analysis of a whole series (`keel analyze`).
 *
 * Two tests, both one-sided (only upward moves are spikes: loss and gradient norm spike up):
 * - z-score against a rolling window of the last `window` accepted values:
 *   z = (x − mean) / std > threshold, with the sample std (n − 1) of the window *before* x;
 * - a relative jump against an EMA of the accepted values: x − ema > jump·|ema| (jump = 0.5:
 *   50 % above the EMA; 0 disables it).
 * The detector stays silent until the window holds `warmup` finite values (default: `window`,
 * i.e. until it is full; a run too short to fill its window gets a shorter warm-up from the
 * controller, and the window keeps growing to its full size; the jump test waits for the full
 * window). Once active, a
 * non-finite value (NaN, ±∞) is always a spike with z = +∞. A flagged value (and any non-finite
 * one) never enters the window or the EMA, so a spike cannot inflate σ and disarm the detector
 * while it lasts; a level shift that never comes back is therefore flagged at every step.
 *
 * Rolling statistics: the window is a ring buffer of float64. Its mean and sum of squared
 * deviations M2 are updated in O(1) per value (Welford's update when the window grows, the
 * replace-one form `mean' = mean + (x_new − x_old)/n`, `M2 += (x_new − x_old)(x_new − mean'
 * + x_old − mean)` once it is full) and recomputed exactly by two passes over the buffer, in
 * window order, every `window` replacements, so rounding drift stays bounded by one window's
 * worth of updates while the cost is amortised O(1) even for large windows. Everything the
 * arithmetic depends on is in toJSON(), so a restored detector continues bit-identically.
 */
import { UserError } from '../errors.ts';

export interface SpikeOptions {
  /** Values in the rolling window; the detector is inactive until it is full. */
  window: number;
  /** z-score above which a value is a spike. */
  threshold: number;
  /** Relative jump above the EMA that is a spike (0.5 = 50 % above); 0 disables the test. */
  jump: number;
  /** EMA decay for the jump test (0.98: a time constant of about 50 values). */
  emaBeta: number;
  /**
   * Values the window must hold before the detector tests (2 ≤ warmup ≤ window; default: the
   * window, i.e. only a full window tests). Until the window is full, mean and σ are those of
   * the values so far.
   */
  warmup?: number;
  /**
   * A z-test hit must also rise at least minRise·|mean| above the mean (0 or absent: off). On a
   * nearly flat series σ is tiny, and a 1e-4 bump on a loss of 3 would otherwise be a 33,000σ
   * spike; keel analyze uses 0.01.
   */
  minRise?: number;
}

export const SPIKE_DEFAULTS: SpikeOptions = Object.freeze({ window: 128, threshold: 6, jump: 0.5, emaBeta: 0.98 });

/** Names of loss-like metrics (cross-entropy in nats): `loss`, `train/loss`, `val_nll`, llm.c's `trl`/`tel`. */
export function isLossLike(metric: string): boolean {
  return /loss|nll|xent|entropy/i.test(metric) || /^(trl|tel)$/.test(metric);
}

/**
 * Defaults for one metric: SPIKE_DEFAULTS, but the jump test only for loss-like metrics. A loss
 * 50 % above its EMA is always a spike, whereas a gradient norm routinely doubles for a few
 * steps in healthy training (runs/main's grad_norm: 81 "spikes" in 2000 steps with jump 0.5,
 * 3 with the z test alone), and flagged values stay out of the EMA, so on a rising norm the
 * jump test feeds on itself.
 */
export function defaultSpikeOptions(metric: string): SpikeOptions {
  return { ...SPIKE_DEFAULTS, jump: isLossLike(metric) ? SPIKE_DEFAULTS.jump : 0 };
}

/** One flagged value; the trainer writes it to metrics.jsonl (z = +∞ and NaN become null there). */
export interface SpikeEvent {
  event: 'spike';
  step: number;
  metric: string;
  value: number;
  /** (value − mean) / std; +∞ for a non-finite value. */
  z: number;
  /** The window's mean and (floored) std before this value. */
  mean: number;
  std: number;
  /** Which test fired: 'z' when the z-score did (also for non-finite values), else 'jump'. */
  test: 'z' | 'jump';
}

/**
 * A window of identical values has σ = 0; flag against a tiny relative floor instead of
 * dividing by zero, so float noise at the 1e-12 level is not an "infinite-σ" spike.
 */
const STD_FLOOR_REL = 1e-9;

function validateSpikeOptions(o: SpikeOptions): SpikeOptions {
  if (!Number.isInteger(o.window) || o.window < 2) throw new UserError(`spike window must be an integer ≥ 2, got ${o.window}`);
  if (!(o.threshold > 0) || !Number.isFinite(o.threshold)) throw new UserError(`spike threshold must be a number > 0, got ${o.threshold}`);
  if (!(o.jump >= 0) || !Number.isFinite(o.jump)) throw new UserError(`spike jump must be a number ≥ 0 (0 disables it), got ${o.jump}`);
  if (!(o.emaBeta >= 0 && o.emaBeta < 1)) throw new UserError(`spike emaBeta must be in [0, 1), got ${o.emaBeta}`);
  if (o.warmup !== undefined && !(Number.isInteger(o.warmup) && o.warmup >= 2 && o.warmup <= o.window)) {
    throw new UserError(`spike warm-up must be an integer in [2, window ${o.window}], got ${o.warmup}`);
  }
  if (o.minRise !== undefined && !(o.minRise >= 0 && Number.isFinite(o.minRise)))
    throw new UserError(`spike minimum rise must be a number ≥ 0, got ${o.minRise}`);
  return o;
}

/** What toJSON() returns (JSON-safe: the window never holds a non-finite value). */
export interface SpikeDetectorState {
  version: 1;
  metric: string;
  options: SpikeOptions;
  buffer: number[];
  head: number;
  count: number;
  mean: number;
  m2: number;
  replaced: number;
  ema: number | null;
}

export class SpikeDetector {
  readonly metric: string;
  readonly options: SpikeOptions;
  /** Ring buffer of accepted values; `head` is the next slot to write (the oldest when full). */
  private buf: Float64Array;
  private head = 0;
  private count = 0;
  private mean_ = 0;
  private m2 = 0;
  /** Replacements since the last exact recomputation. */
  private replaced = 0;
  private ema: number | null = null;

  constructor(metric: string, opts: Partial<SpikeOptions> = {}) {
    this.metric = metric;
    this.options = validateSpikeOptions({ ...SPIKE_DEFAULTS, ...definedOnly(opts) });
    this.buf = new Float64Array(this.options.window);
  }

  /** Values needed before the detector tests: the warm-up window, else the full window. */
  get warmup(): number {
    return this.options.warmup ?? this.options.window;
  }

  /** True once the window holds `warmup` values: from the next value on, spikes are flagged. */
  get active(): boolean {
    return this.count >= this.warmup;
  }

  /** The window's current statistics (std floored as the z test uses it). */
  stats(): { count: number; mean: number; std: number; ema: number | null; active: boolean } {
    return { count: this.count, mean: this.mean_, std: this.std(), ema: this.ema, active: this.active };
  }

  /**
   * Feeds one value; returns an event when it is a spike. Inactive (never fires) until the
   * window is full. Non-finite values are spikes once active (z = +∞) and never enter the
   * window; flagged values do not enter the window or the EMA either.
   */
  observe(step: number, value: number): SpikeEvent | null {
    if (!Number.isFinite(value)) {
      if (!this.active) return null;
      return { event: 'spike', step, metric: this.metric, value, z: Infinity, mean: this.mean_, std: this.std(), test: 'z' };
    }
    if (this.active) {
      const std = this.std();
      const d = value - this.mean_;
      const z = std > 0 ? d / std : d > 0 ? Infinity : 0;
      const zHit = z > this.options.threshold && d > (this.options.minRise ?? 0) * Math.abs(this.mean_);
      const ema = this.ema!;
      // The jump test waits for the full window even after a shorter warm-up: its EMA (time
      // constant ~50 values, started at the first value) still leans on the first values then.
      const jumpHit = this.options.jump > 0 && this.count === this.options.window && value - ema > this.options.jump * Math.abs(ema);
      if (zHit || jumpHit) {
        return { event: 'spike', step, metric: this.metric, value, z, mean: this.mean_, std, test: zHit ? 'z' : 'jump' };
      }
    }
    this.accept(value);
    return null;
  }

  toJSON(): SpikeDetectorState {
    return {
      version: 1,
      metric: this.metric,
      options: { ...this.options },
      buffer: Array.from(this.buf),
      head: this.head,
      count: this.count,
      mean: this.mean_,
      m2: this.m2,
      replaced: this.replaced,
      ema: this.ema,
    };
  }

  static fromJSON(json: unknown): SpikeDetector {
    const j = json as Partial<SpikeDetectorState> | null;
    const bad = (why: string): never => {
      throw new UserError(`saved spike-detector state is invalid: ${why}`);
    };
    if (j === null || typeof j !== 'object') return bad('not an object');
    if (j.version !== 1) return bad(`unknown version ${String(j.version)}`);
    if (typeof j.metric !== 'string') return bad('no metric name');
    const d = new SpikeDetector(j.metric, j.options ?? bad('no options'));
    const W = d.options.window;
    const finite = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x);
    if (!Array.isArray(j.buffer) || j.buffer.length !== W || !j.buffer.every(finite)) return bad(`buffer must hold ${W} finite numbers`);
    if (!Number.isInteger(j.head) || j.head! < 0 || j.head! >= W) return bad('head out of range');
    if (!Number.isInteger(j.count) || j.count! < 0 || j.count! > W) return bad('count out of range');
    if (!finite(j.mean) || !finite(j.m2) || !Number.isInteger(j.replaced)) return bad('statistics are not finite numbers');
    if (j.ema !== null && !finite(j.ema)) return bad('ema is not a number');
    d.buf.set(j.buffer);
    d.head = j.head!;
    d.count = j.count!;
    d.mean_ = j.mean;
    d.m2 = j.m2;
    d.replaced = j.replaced!;
    d.ema = j.ema ?? null;
    return d;
  }

  private std(): number {
    if (this.count < 2) return 0;
    return Math.max(Math.sqrt(Math.max(this.m2, 0) / (this.count - 1)), STD_FLOOR_REL * Math.abs(this.mean_));
  }

  private accept(x: number): void {
    const W = this.options.window;
    const b = this.options.emaBeta;
    this.ema = this.ema === null ? x : b * this.ema + (1 - b) * x;
    if (this.count < W) {
      // Welford: grow the window by one.
      this.buf[this.head] = x;
      this.head = (this.head + 1) % W;
      this.count++;
      const d = x - this.mean_;
      this.mean_ += d / this.count;
      this.m2 += d * (x - this.mean_);
      return;
    }
    const old = this.buf[this.head];
    this.buf[this.head] = x;
    this.head = (this.head + 1) % W;
    if (++this.replaced >= W) {
      this.recompute();
      return;
    }
    const mean = this.mean_ + (x - old) / W;
    this.m2 += (x - old) * (x - mean + old - this.mean_);
    this.mean_ = mean;
    if (this.m2 < 0) this.m2 = 0;
  }

  /** Exact two-pass mean and M2 over the window, oldest to newest (independent of the ring's layout). */
  private recompute(): void {
    const W = this.options.window;
    let s = 0;
    for (let i = 0; i < W; i++) s += this.buf[(this.head + i) % W];
    const mean = s / W;
    let m2 = 0;
    for (let i = 0; i < W; i++) {
      const d = this.buf[(this.head + i) % W] - mean;
      m2 += d * d;
    }
    this.mean_ = mean;
    this.m2 = m2;
    this.replaced = 0;
  }
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

// ---------------------------------------------------------------------------------------------
// Offline analysis of a whole series.

export interface SpikeSummary {
  /** Step of the first flagged value. */
  start: number;
  /** Step of the largest value from start until recovery (a non-finite value counts as +∞). */
  peak: number;
  /** Recovery step: the first value after start back inside the pre-spike band; null if never. */
  end: number | null;
  /** Peak value − pre-spike mean, in the metric's units (nats for a loss); +∞ for a NaN/∞ peak. */
  height: number;
  /** height / pre-spike std. */
  height_sigma: number;
  recovered: boolean;
  /** The peak value and the pre-spike window statistics the spike is measured against. */
  value: number;
  mean: number;
  std: number;
  /** Values from start up to (not including) the recovery point. */
  points: number;
}

export interface SeriesSummary {
  metric: string;
  /** Points analysed (after merging re-logged steps) and their step range. */
  points: number;
  first_step: number | null;
  last_step: number | null;
  /** Step of the first value tested (the window was full); null if the series is too short. */
  active_from: number | null;
  spikes: number;
  recovered: number;
  not_recovered: number;
}

export interface AnalyzeOptions extends SpikeOptions {
  /** The pre-spike band a spike must come back into: value ≤ mean + recoverSigma·std. */
  recoverSigma: number;
}

/**
 * The smallest rise a z-test spike needs, as a fraction of the window mean: 1 %. Real loss spikes
 * are far larger; a late, nearly flat loss (σ ~ 1e-4 of the mean) would otherwise flag a 0.1 %
 * bump as a 6σ spike and roll back for it.
 */
export const MIN_RISE = 0.01;

export const ANALYZE_DEFAULTS: AnalyzeOptions = Object.freeze({ ...SPIKE_DEFAULTS, recoverSigma: 2, minRise: MIN_RISE });

/**
 * Runs the online detector over a series and groups its flags into spikes. Options default to
 * defaultSpikeOptions(metric) (the jump test only for loss-like names), recoverSigma 2 and
 * minRise 0.01 (a spike rises at least 1% above the window mean).
 *
 * A spike starts at a flagged value and lasts until recovery: the first later value that is
 * finite and ≤ mean + recoverSigma·std of the window *at the start* (the pre-spike band; 2σ by
 * default). Every flag before recovery belongs to the same spike, so consecutive flagged
 * values (and flags separated by a few elevated but unflagged values) merge into one. `peak`
 * is the largest value between start and recovery. A spike still open when the series ends is
 * "not recovered" (end null). Points are sorted by step; for a repeated step the last wins.
 */
export function analyzeSeries(
  points: readonly { step: number; value: number }[],
  opts: Partial<AnalyzeOptions> & { metric?: string } = {},
): { spikes: SpikeSummary[]; summary: SeriesSummary } {
  const metric = opts.metric ?? 'value';
  const o: AnalyzeOptions = { ...ANALYZE_DEFAULTS, ...defaultSpikeOptions(metric), ...definedOnly(opts) };
  if (!(o.recoverSigma >= 0) || !Number.isFinite(o.recoverSigma)) throw new UserError(`recoverSigma must be ≥ 0, got ${o.recoverSigma}`);
  const series = dedupeSorted(points);
  const det = new SpikeDetector(metric, o);
  const spikes: SpikeSummary[] = [];
  let open: SpikeSummary | null = null;
  let peakKey = -Infinity;
  let activeFrom: number | null = null;

  for (const { step, value } of series) {
    if (activeFrom === null && det.active) activeFrom = step;
    const ev = det.observe(step, value);
    if (open) {
      if (Number.isFinite(value) && value <= open.mean + o.recoverSigma * open.std) {
        open.end = step;
        open.recovered = true;
        open = null;
      } else {
        open.points++;
        const key = Number.isFinite(value) ? value : Infinity;
        if (key > peakKey) {
          peakKey = key;
          setPeak(open, step, value);
        }
        continue;
      }
    }
    if (ev) {
      open = { start: step, peak: step, end: null, height: 0, height_sigma: 0, recovered: false, value, mean: ev.mean, std: ev.std, points: 1 };
      peakKey = Number.isFinite(value) ? value : Infinity;
      setPeak(open, step, value);
      spikes.push(open);
    }
  }
  const recovered = spikes.filter((s) => s.recovered).length;
  return {
    spikes,
    summary: {
      metric,
      points: series.length,
      first_step: series.length ? series[0].step : null,
      last_step: series.length ? series[series.length - 1].step : null,
      active_from: activeFrom,
      spikes: spikes.length,
      recovered,
      not_recovered: spikes.length - recovered,
    },
  };
}

function setPeak(s: SpikeSummary, step: number, value: number): void {
  s.peak = step;
  s.value = value;
  s.height = Number.isFinite(value) ? value - s.mean : Infinity;
  s.height_sigma = s.std > 0 ? s.height / s.std : s.height > 0 ? Infinity : 0;
}

/** Sorted by step; for a step given more than once, the last point wins. */
function dedupeSorted(points: readonly { step: number; value: number }[]): { step: number; value: number }[] {
  const byStep = new Map<number, number>();
  for (const p of points) byStep.set(p.step, p.value);
  return [...byStep].map(([step, value]) => ({ step, value })).sort((a, b) => a.step - b.step);
}

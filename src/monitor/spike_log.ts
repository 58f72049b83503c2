/**
 * Offline analysis of one run's metrics.jsonl for `keel experiment spikes`: the loss series in
 * the order the steps ran, its spikes (the detectors of src/monitor/spikes.ts), the early
 * excursion a run without warm-up makes, a diverged run's onset, and whether the Adam
 * diagnostics (src/monitor/diagnostics.ts) moved before each spike (lead times, with a control).
 *
 * Spike counting. The training-loss series is taken in the order the steps ran, except that
 * the steps a rollback abandons are dropped (its trigger step is kept, so a spike that
 * triggered a rollback is still counted, and the replay does not look like a jump), and analysed with a window of `spikeWindow` steps, threshold 6σ
 * and a 50 % jump over the EMA (the trainer's detector defaults), recovery back within 2σ.
 * The detector is blind while its window fills, which is exactly when a run without warm-up
 * blows up (at a high lr the loss climbs far above its initial value in the first steps and
 * comes back). So an early excursion counts as a spike too: the first loss after step 1,
 * within the first `spikeWindow` steps, more than EARLY_MARGIN (0.5 nats) above L0, lasting
 * until the loss is back below L0 (kind 'early').
 * A run that diverged (non-finite loss, or a final validation loss ≥ L0: no better than
 * chance) is cut at its divergence onset: the first step at which its loss, having once been
 * below L0 − EARLY_MARGIN, is back at L0 or above, or non-finite (step 1 when it never got
 * there). Spikes are counted before the onset only; the divergence itself is listed as an
 * event of kind 'divergence' (not counted in `spikes`).
 *
 * Lead time. For each spike (early excursion, divergence) starting at step S, and each watched
 * statistic (LEAD_STATS), take the diagnosed values before S — excluding the first
 * `spikeWindow` steps (early-training transients) and steps inside an earlier spike — and find
 * the earliest diagnosed step s_j such that every value from s_j through the last diagnosed
 * step s_k before S lies outside mean ± 3σ of all the diagnosed values before s_j (the
 * baseline; at least MIN_BASELINE = 8 of them). The last diagnosed step must be within
 * 2·diagEvery steps of S (else there is no coverage), and s_k needs MIN_BASELINE values before
 * it (else the event is not testable). Lead time = S − s_j; none when even s_k is inside the
 * band. A statistic that merely drifts as training goes on eventually leaves the band of its
 * own early values too; the control measures how often that happens: it repeats the test at
 * every ordinary diagnosed step c — past the first `spikeWindow` steps, not inside a spike,
 * and with no spike starting within the next `spikeWindow` steps — as if a spike started at
 * c + 1. The fraction of those that "have a precursor" is the false-alarm rate the precursor
 * fraction must beat.
 */
import type { MetricsRecord } from '../io/metrics.ts';
import { meanStd } from '../util/stats.ts';
import { analyzeSeries } from './spikes.ts';

/** Statistics watched for precursors: metrics.jsonl keys, `wte.` = the token embedding's own entry in `diag`. */
export const LEAD_STATS = ['diag_update_rms', 'diag_bimodality_max', 'diag_eps_frac', 'diag_cos_g', 'wte.update_rms', 'wte.eps_frac'] as const;
export type LeadStat = (typeof LEAD_STATS)[number];
const WTE = 'transformer.wte.weight';
export const LEAD_SIGMA = 3;
/** Nats above L0 that make an early loss rise an excursion; also what "has learned" means for the divergence onset. */
export const EARLY_MARGIN = 0.5;
/** Diagnosed values the precursor test's baseline needs at least. */
export const MIN_BASELINE = 8;
/**
 * How many diagnosed values before a candidate start form its baseline: all of them (the
 * measured default). A trailing window (e.g. 8) ignores slow drift, but on the default
 * experiment it gave more false alarms at ordinary steps (update RMS 15 % vs 8 %) for the
 * same precursor fraction: the statistics are smooth but wander.
 */
const BASELINE_WINDOW = Infinity;

export interface Precursor {
  /** Steps from the first anomalous diagnosed step to the spike's start; null = no precursor. */
  lead: number | null;
  /** 'up' / 'down': the side of the band the first anomalous value lies on. */
  direction?: 'up' | 'down';
  /** False when there were not enough diagnosed values before it (or none close to it). */
  testable: boolean;
}

export interface SpikeEventInfo {
  /** 'early': the loss rose above L0 + EARLY_MARGIN before the detector's window filled. */
  kind: 'early' | 'spike' | 'divergence';
  /** Training steps (as logged; after a rollback, steps repeat). */
  start: number;
  peak: number;
  end: number | null;
  recovered: boolean;
  /** Peak − pre-spike mean (nats) and in σ; for a divergence, the loss at onset − L0. */
  height: number;
  height_sigma: number | null;
  /** Position in the order the steps ran (1-based). */
  index: number;
  precursors: Record<LeadStat, Precursor>;
  /** Largest lead over the statistics; null when none moved. */
  lead: number | null;
}

export interface ControlCounts {
  /** Ordinary diagnosed steps tested and how many "had a precursor" there. */
  tested: number;
  flagged: number;
}

/** A training step or a diagnosed step, at its position in the order the steps ran. */
interface ChronoPoint {
  index: number;
  step: number;
}

export interface RunLog {
  losses: (ChronoPoint & { value: number })[];
  diag: (ChronoPoint & { values: Partial<Record<LeadStat, number>> })[];
}

const finiteOr = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/**
 * The log in the order the steps ran: training lines (`{step, loss, lr, …}`, loss null = NaN)
 * numbered 1, 2, …; a diagnostics line takes the number of the training line of its step just
 * before it (the trainer writes it right after that line).
 *
 * A rollback (`{event: 'rollback', step: n, to}`) abandons steps to+1 … n−1 and replays them
 * from the restored state: those abandoned lines are dropped, the spike step n that triggered
 * it is kept (it was seen), and the replay follows it. So the series is the trajectory the run
 * kept plus each rollback's trigger, with no artificial jump where the state was restored.
 */
export function parseRunLog(records: readonly MetricsRecord[]): RunLog {
  let losses: RunLog['losses'] = [];
  let diag: RunLog['diag'] = [];
  let n = 0;
  for (const r of records) {
    if (r.event === 'rollback' && typeof r.to === 'number') {
      const last = losses.at(-1);
      if (!last) continue;
      let from = losses.length - 2;
      while (from >= 0 && losses[from].step > r.to) from--;
      const dropped = new Set(losses.slice(from + 1, -1).map((p) => p.index));
      losses = [...losses.slice(0, from + 1), last];
      diag = diag.filter((d) => !dropped.has(d.index));
      continue;
    }
    if (typeof r.step !== 'number' || 'event' in r) continue;
    if ('diag' in r) {
      const last = losses.at(-1);
      if (!last || last.step !== r.step) continue;
      const values: Partial<Record<LeadStat, number>> = {};
      const wte = (r.diag as Record<string, Record<string, unknown>> | null)?.[WTE] ?? {};
      for (const stat of LEAD_STATS) {
        const v = stat.startsWith('wte.') ? finiteOr(wte[stat.slice(4)]) : finiteOr(r[stat]);
        if (v !== undefined) values[stat] = v;
      }
      diag.push({ index: last.index, step: r.step, values });
      continue;
    }
    if ('loss' in r && 'lr' in r) {
      const v = typeof r.loss === 'number' ? r.loss : NaN;
      losses.push({ index: ++n, step: r.step, value: v });
    }
  }
  // Number the kept lines 1, 2, … so index differences count steps of the kept series.
  const renumber = new Map(losses.map((p, i) => [p.index, i + 1]));
  return {
    losses: losses.map((p) => ({ ...p, index: renumber.get(p.index)! })),
    diag: diag.filter((d) => renumber.has(d.index)).map((d) => ({ ...d, index: renumber.get(d.index)! })),
  };
}

/**
 * Index (1-based, chronological) of a diverged run's onset: the first step at which the loss,
 * having been below L0 − EARLY_MARGIN at some earlier step (the run had learned something), is
 * back at L0 or above (or non-finite); the first step when it never got there. A diverged run
 * ends at chance level or worse, so its first return there is where the divergence began:
 * later dips below L0 are part of the divergence (large-lr runs oscillate wildly), not spikes.
 */
export function divergenceOnset(losses: readonly { index: number; value: number }[], l0: number): number | null {
  if (losses.length === 0) return null;
  let learned = false;
  for (const p of losses) {
    if (learned && !(p.value < l0)) return p.index;
    if (p.value < l0 - EARLY_MARGIN) learned = true;
  }
  return learned ? null : losses[0].index;
}

/**
 * The precursor test for one statistic before a spike at chronological index `start` (see the
 * module comment). `points` are the statistic's diagnosed values in order; `exclude` says which
 * indices may not serve (warm-up, earlier spikes). `coverage`: the last usable value must be at
 * most this many steps before `start`.
 */
export function precursorLead(
  points: readonly { index: number; value: number }[],
  start: number,
  opts: { sigma?: number; baseline?: number; coverage: number; exclude?: (index: number) => boolean },
): Precursor {
  const sigma = opts.sigma ?? LEAD_SIGMA;
  // Infinity: every earlier value is the baseline (at least MIN_BASELINE of them).
  const B = opts.baseline ?? BASELINE_WINDOW;
  const need = Number.isFinite(B) ? Math.max(B, 1) : MIN_BASELINE;
  const pts = points.filter((p) => p.index < start && Number.isFinite(p.value) && !(opts.exclude?.(p.index) ?? false));
  const k = pts.length - 1;
  if (pts.length < need + 1 || start - pts[k].index > opts.coverage) return { lead: null, testable: false };
  // The earliest j whose values j…k all lie outside the band of the (B) values before j.
  for (let j = need; j <= k; j++) {
    const { mean, std } = meanStd(pts.slice(Number.isFinite(B) ? j - B : 0, j).map((p) => p.value));
    const band = sigma * Math.max(std, 1e-12 * Math.abs(mean));
    let all = true;
    for (let i = j; i <= k; i++) {
      if (!(Math.abs(pts[i].value - mean) > band)) {
        all = false;
        break;
      }
    }
    if (all) return { lead: start - pts[j].index, direction: pts[j].value > mean ? 'up' : 'down', testable: true };
  }
  return { lead: null, testable: true };
}

export interface RunAnalysis {
  diverged_at: number | null;
  diverged_index: number | null;
  spikes: number;
  events: SpikeEventInfo[];
  control: Record<LeadStat, ControlCounts>;
  first_loss: number | null;
}

/** Spikes, early excursion, divergence, precursors and control of one run's log. */
export function analyzeRunLog(
  log: RunLog,
  o: { l0: number; window: number; threshold: number; jump: number; diagEvery: number; diverged: boolean; baseline?: number; sigma?: number },
): RunAnalysis {
  const byIndex = new Map(log.losses.map((p) => [p.index, p]));
  const stepAt = (index: number) => byIndex.get(index)?.step ?? index;
  const onset = o.diverged ? divergenceOnset(log.losses, o.l0) : null;
  const healthy = log.losses.filter((p) => onset === null || p.index < onset);
  const early = earlyExcursion(healthy, o.l0, o.window);
  // The detector's spikes; one that starts inside the early excursion is part of it.
  const found = analyzeSeries(
    healthy.map((p) => ({ step: p.index, value: p.value })),
    {
      // minRise 0: the counts are those the experiment's README figures were measured with.
      metric: 'loss',
      window: o.window,
      threshold: o.threshold,
      jump: o.jump,
      minRise: 0,
    },
  ).spikes.filter((sp) => !early || sp.start < early.start || sp.start >= (early.end ?? Infinity));
  const coverage = 2 * o.diagEvery;
  /** Intervals [start, end) of spikes (open ones to +∞) in chronological indices. */
  const intervals = [...found.map((sp) => [sp.start, sp.end ?? Infinity] as const), ...(early ? [[early.start, early.end ?? Infinity] as const] : [])];
  const inSpike = (i: number) => intervals.some(([x, y]) => i >= x && i < y);
  const series = Object.fromEntries(
    LEAD_STATS.map((stat) => [stat, log.diag.filter((d) => d.values[stat] !== undefined).map((d) => ({ index: d.index, value: d.values[stat]! }))]),
  ) as Record<LeadStat, { index: number; value: number }[]>;
  const exclude = (i: number) => i <= o.window || inSpike(i);
  const lead = (stat: LeadStat, at: number) => precursorLead(series[stat], at, { coverage, exclude, baseline: o.baseline, sigma: o.sigma });
  const event = (kind: SpikeEventInfo['kind'], e: Omit<SpikeEventInfo, 'kind' | 'index' | 'precursors' | 'lead'>): SpikeEventInfo => {
    const precursors = Object.fromEntries(LEAD_STATS.map((stat) => [stat, lead(stat, e.start)])) as Record<LeadStat, Precursor>;
    const leads = Object.values(precursors)
      .map((x) => x.lead)
      .filter((x): x is number => x !== null);
    const step = { start: stepAt(e.start), peak: stepAt(e.peak), end: e.end === null ? null : stepAt(e.end) };
    return {
      kind,
      ...step,
      recovered: e.recovered,
      height: e.height,
      height_sigma: e.height_sigma,
      index: e.start,
      precursors,
      lead: leads.length ? Math.max(...leads) : null,
    };
  };
  const divergenceHeight = (v: number) => (Number.isFinite(v) ? v - o.l0 : Infinity);
  const events = [
    ...(early ? [event('early', { ...early, recovered: early.end !== null, height_sigma: null })] : []),
    ...found.map((sp) => event('spike', { ...sp, height_sigma: Number.isFinite(sp.height_sigma) ? sp.height_sigma : null })),
    ...(onset === null
      ? []
      : [
          event('divergence', {
            start: onset,
            peak: onset,
            end: null,
            recovered: false,
            height: divergenceHeight(byIndex.get(onset)!.value),
            height_sigma: null,
          }),
        ]),
  ];
  const control = controlCounts(log, events, { before: onset ?? Infinity, window: o.window, exclude, lead });
  const first = log.losses[0]?.value;
  return {
    diverged_at: onset === null ? null : stepAt(onset),
    diverged_index: onset,
    spikes: found.length + (early ? 1 : 0),
    events,
    control,
    first_loss: first !== undefined && Number.isFinite(first) ? first : null,
  };
}

/**
 * Control: how often each statistic flags ordinary diagnosed steps (before `before`, outside spikes),
 * no spike or divergence starting within `window` steps after them (so a precursor's own early
 * part is not counted as a false alarm).
 */
function controlCounts(
  log: RunLog,
  events: SpikeEventInfo[],
  o: { before: number; window: number; exclude: (i: number) => boolean; lead: (stat: LeadStat, at: number) => Precursor },
): Record<LeadStat, ControlCounts> {
  const starts = events.map((e) => e.index);
  const control = Object.fromEntries(LEAD_STATS.map((stat) => [stat, { tested: 0, flagged: 0 }])) as Record<LeadStat, ControlCounts>;
  for (const c of new Set(log.diag.map((d) => d.index))) {
    if (c >= o.before || o.exclude(c) || starts.some((st) => st > c && st <= c + o.window)) continue;
    for (const stat of LEAD_STATS) {
      const p = o.lead(stat, c + 1);
      if (!p.testable) continue;
      control[stat].tested++;
      if (p.lead !== null) control[stat].flagged++;
    }
  }
  return control;
}

/**
 * The no-warm-up instability the detector cannot see (its window is not full yet): the first
 * loss after step 1, among the first `window` steps, more than EARLY_MARGIN above L0 (or
 * non-finite); it lasts until the loss is back below L0. Chronological indices; null if none.
 */
export function earlyExcursion(
  losses: readonly { index: number; value: number }[],
  l0: number,
  window: number,
): { start: number; peak: number; end: number | null; height: number } | null {
  const i0 = losses.findIndex((p, i) => i > 0 && p.index <= window && !(p.value <= l0 + EARLY_MARGIN));
  if (i0 < 0) return null;
  let peak = losses[i0];
  let end: number | null = null;
  for (let i = i0; i < losses.length; i++) {
    const p = losses[i];
    if (i > i0 && Number.isFinite(p.value) && p.value < l0) {
      end = p.index;
      break;
    }
    if (Number.isFinite(peak.value) && !(p.value <= peak.value)) peak = p; // NaN counts as the largest
  }
  return { start: losses[i0].index, peak: peak.index, end, height: Number.isFinite(peak.value) ? peak.value - l0 : Infinity };
}

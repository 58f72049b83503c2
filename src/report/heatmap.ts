/**
 * The report's per-tensor diagnostics (src/monitor/diagnostics.ts) as heatmap data: x = the
 * diagnosed steps, y = the parameter tensors in layout order grouped by layer, one matrix per
 * statistic, plus the run's spikes and interventions as vertical markers, so a reader can see
 * what the tensors did in the steps before each spike. client.js draws them on plain canvases.
 *
 * The payload stays proportionate: at most HEATMAP_MAX_COLUMNS columns (a long run keeps every
 * k-th diagnosed step, the last one, and the two steps at or before each marker), and the
 * per-cell r histograms (for the hover readout) only while they fit HEATMAP_MAX_HIST_VALUES
 * numbers.
 */
import type { DiagStep, MetricEvent } from './metrics.ts';

interface HeatmapStat {
  key: string;
  label: string;
  /** Colour scale: sequential linear, sequential log10, or diverging around 0. */
  scale: 'linear' | 'log' | 'diverging';
  /** Fixed domain ends (else the data's range; diverging: ±max|v|). */
  min?: number;
  max?: number;
  /** A reference value marked on the colour bar (e.g. Sarle's 5/9). */
  ref?: number;
  refLabel?: string;
  doc: string;
}

/** The statistics the report knows how to colour, in menu order. */
const HEATMAP_STATS: readonly HeatmapStat[] = [
  {
    key: 'eps_frac',
    label: 'ε-dominated fraction',
    scale: 'linear',
    min: 0,
    max: 1,
    doc: 'fraction of coordinates with √v̂ < ε: the tensor has stopped moving (Molybog et al.)',
  },
  { key: 'update_rms', label: 'update RMS', scale: 'log', doc: '‖Δθ‖/√n' },
  {
    key: 'bimodality',
    label: 'bimodality of r',
    scale: 'linear',
    min: 0,
    max: 1,
    ref: 5 / 9,
    refLabel: '5/9',
    doc: "Sarle's b = (skew² + 1)/kurtosis of r = m̂/(√v̂+ε); > 5/9 suggests two modes (r ≈ ±1)",
  },
  { key: 'cos_g', label: 'cos(g_t, g_t−1)', scale: 'diverging', min: -1, max: 1, doc: 'time correlation of the gradient' },
  {
    key: 'decoupling',
    label: 'decoupling g²/v̂',
    scale: 'log',
    ref: 1,
    refLabel: '1',
    doc: 'median over coordinates of g_t²/v̂_t−1; ≪ 1 for long: v decays, the preconditioner grows (Bai et al.)',
  },
  { key: 'grad_rms', label: 'gradient RMS', scale: 'log', doc: '‖g‖/√n after clipping' },
  { key: 'kurtosis', label: 'kurtosis of r', scale: 'log', ref: 3, refLabel: 'Gaussian', doc: 'm4/m2² of r (not excess): 3 for a Gaussian, 1 for r = ±1' },
  { key: 'skewness', label: 'skewness of r', scale: 'diverging', doc: 'm3/m2^1.5 of r' },
  { key: 'mass_near_1', label: 'mass of |r| in [0.9, 1.1]', scale: 'linear', min: 0, max: 1, doc: 'fraction of coordinates whose update is ≈ ±lr' },
  { key: 'cos_gm', label: 'cos(g_t, m_t−1)', scale: 'diverging', min: -1, max: 1, doc: 'gradient against the momentum before the step' },
  { key: 'cos_u', label: 'cos(Δθ_t, Δθ_t−1)', scale: 'diverging', min: -1, max: 1, doc: 'time correlation of the update' },
  { key: 'zero_frac', label: 'zero-gradient fraction', scale: 'linear', min: 0, max: 1, doc: 'fraction of gradient coordinates exactly 0' },
  { key: 'max_abs', label: 'max |θ|', scale: 'log', doc: 'largest parameter magnitude (sign-optimizer drift)' },
  { key: 'param_rms', label: 'parameter RMS', scale: 'log', doc: '‖θ‖/√n' },
];

/** Drawn when the report opens (each can be switched to any other statistic). */
const HEATMAP_INITIAL = ['eps_frac', 'update_rms', 'bimodality', 'cos_g', 'decoupling'] as const;

export const HEATMAP_MAX_COLUMNS = 400;
const HEATMAP_MAX_HIST_VALUES = 300_000;
/** Routine events that would only clutter the heatmaps. */
const HEATMAP_UNMARKED_EVENTS: ReadonlySet<string> = new Set(['checkpoint', 'resume']);

export interface HeatmapPayload {
  /** Diagnosed steps drawn (columns), ascending. */
  steps: number[];
  /** Diagnosed steps logged but not drawn (long runs). */
  droppedColumns: number;
  /** Full tensor names (rows), in layout order. */
  tensors: string[];
  /** Row labels within their group (e.g. "attn.c_attn.weight"). */
  labels: string[];
  /** Consecutive rows of one layer (or the embeddings, or the final norm). */
  groups: { label: string; start: number; count: number }[];
  /** Statistics present in the log, in menu order. */
  stats: HeatmapStat[];
  /** Statistics drawn when the page opens. */
  initial: string[];
  /** stat → [row][column]; null: not logged or non-finite. */
  values: Record<string, (number | null)[][]>;
  /** [row][column] → r histogram fractions (bins centred on −2 … 2), or null when left out for size. */
  hist: (number[] | null)[][] | null;
  /** Spikes and interventions: everything with a step but routine checkpoints and resumes. */
  markers: { step: number; event: string; color: string }[];
}

/** "transformer.h.3.attn.c_attn.weight" → layer 3, "attn.c_attn.weight"; embeddings and the final norm get their own groups. */
export function tensorGroup(name: string): { group: string; label: string } {
  const bare = name.replace(/^transformer\./, '');
  const layer = /^h\.(\d+)\.(.+)$/.exec(bare);
  if (layer) return { group: `layer ${layer[1]}`, label: layer[2] };
  if (/^(wte|wpe)\./.test(bare)) return { group: 'embeddings', label: bare };
  if (/^ln_f\./.test(bare)) return { group: 'final', label: bare };
  const dot = bare.indexOf('.');
  return dot > 0 ? { group: bare.slice(0, dot), label: bare.slice(dot + 1) } : { group: '', label: bare };
}

/** Column indices to draw: all, or every k-th plus the last and the two at or before each marker. */
function pickColumns(steps: number[], markers: number[]): number[] {
  if (steps.length <= HEATMAP_MAX_COLUMNS) return steps.map((_, i) => i);
  const k = Math.ceil(steps.length / (HEATMAP_MAX_COLUMNS - 2 * Math.min(markers.length, HEATMAP_MAX_COLUMNS / 4)));
  const keep = new Set<number>();
  for (let i = 0; i < steps.length; i += k) keep.add(i);
  keep.add(steps.length - 1);
  for (const m of markers.slice(0, HEATMAP_MAX_COLUMNS / 4)) {
    let at = -1; // last column at or before the marker
    for (let lo = 0, hi = steps.length - 1; lo <= hi; ) {
      const mid = (lo + hi) >> 1;
      if (steps[mid] <= m) (at = mid), (lo = mid + 1);
      else hi = mid - 1;
    }
    if (at >= 0) keep.add(at);
    if (at >= 1) keep.add(at - 1);
  }
  return [...keep].sort((a, b) => a - b);
}

/** The heatmap payload, or undefined when the run logged no per-tensor diagnostics. */
export function buildHeatmaps(diag: DiagStep[], events: (MetricEvent & { color: string })[]): HeatmapPayload | undefined {
  if (diag.length === 0) return undefined;
  const markers = events
    .filter((e): e is MetricEvent & { color: string; step: number } => e.step !== null && !HEATMAP_UNMARKED_EVENTS.has(e.event))
    .map((e) => ({ step: e.step, event: e.event, color: e.color }));
  const cols = pickColumns(
    diag.map((d) => d.step),
    markers.map((m) => m.step),
  );
  const picked = cols.map((i) => diag[i]);

  const tensors: string[] = [];
  const seen = new Set<string>();
  for (const d of picked) for (const name of d.tensors.keys()) if (!seen.has(name)) seen.add(name), tensors.push(name);
  const labels: string[] = [];
  const groups: HeatmapPayload['groups'] = [];
  tensors.forEach((name, i) => {
    const g = tensorGroup(name);
    labels.push(g.label);
    const last = groups[groups.length - 1];
    if (last && last.label === g.group) last.count++;
    else groups.push({ label: g.group, start: i, count: 1 });
  });

  const stats = HEATMAP_STATS.filter((s) => picked.some((d) => [...d.tensors.values()].some((t) => typeof t.stats[s.key] === 'number')));
  const values: HeatmapPayload['values'] = {};
  for (const s of stats) values[s.key] = tensors.map((name) => picked.map((d) => d.tensors.get(name)?.stats[s.key] ?? null));
  let histCount = 0;
  for (const d of picked) for (const t of d.tensors.values()) histCount += t.hist?.length ?? 0;
  const hist = histCount > 0 && histCount <= HEATMAP_MAX_HIST_VALUES ? tensors.map((name) => picked.map((d) => d.tensors.get(name)?.hist ?? null)) : null;
  const keys = new Set(stats.map((s) => s.key));
  return {
    steps: picked.map((d) => d.step),
    droppedColumns: diag.length - picked.length,
    tensors,
    labels,
    groups,
    stats,
    initial: HEATMAP_INITIAL.filter((k) => keys.has(k)),
    values,
    hist,
    markers,
  };
}

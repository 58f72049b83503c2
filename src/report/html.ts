/**
 * report.html: one self-contained, offline file per run. uPlot's script and stylesheet are
 * inlined from node_modules at generation time and the (downsampled) series are embedded as
 * JSON, so the report can be mailed, archived or opened on a machine without network access.
 *
 * Panels are data, not code: a panel names the metric keys it plots, and keys the run never
 * logged are skipped, so new diagnostics only add entries to `defaultPanels` (or pass
 * `extraPanels`) without touching the renderer.
 *
 * Per-tensor diagnostics (`diag` lines, src/monitor/diagnostics.ts) add a section of heatmaps
 * (heatmap.ts builds their data, client.js draws them on canvases): tensors × diagnosed steps,
 * spikes and interventions marked.
 */
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { UserError } from '../errors.ts';
import { writeFileAtomic } from '../io/atomic.ts';
import { DEFAULT_MAX_POINTS, downsampleMinMax, type XY } from './downsample.ts';
import { loadRunMetrics, seriesOf, type MetricEvent, type RunMetrics } from './metrics.ts';
import { buildHeatmaps, type HeatmapPayload } from './heatmap.ts';
import { configFacts, summaryFacts, type Fact } from './summary.ts';

interface SeriesSpec {
  /** Field name in metrics.jsonl. */
  key: string;
  /** Legend text. */
  label: string;
  /** CSS colour; by default the panel's palette in order. */
  color?: string;
  /** Connect points across nulls (sparse series such as validation loss). */
  spanGaps?: boolean;
}

export interface PanelSpec {
  title: string;
  series: SeriesSpec[];
  /** Start on a logarithmic y axis (the viewer can toggle it). */
  logY?: boolean;
  /** Y-axis label; defaults to the title. */
  yLabel?: string;
  /** Draw the run's events (checkpoint, spike, resume, …) as vertical markers. */
  events?: boolean;
  /** Take a full row instead of sharing it. */
  wide?: boolean;
}

export const defaultPanels: readonly PanelSpec[] = [
  {
    title: 'Loss',
    yLabel: 'loss (nats)',
    wide: true,
    events: true,
    series: [
      { key: 'loss', label: 'train' },
      { key: 'val_loss', label: 'val', spanGaps: true },
      { key: 'val_loss_lawa', label: 'val (LAWA)', spanGaps: true },
      { key: 'val_loss_ema', label: 'val (EMA)', spanGaps: true },
    ],
  },
  { title: 'Learning rate', yLabel: 'lr', series: [{ key: 'lr', label: 'lr' }] },
  { title: 'Gradient norm', yLabel: 'global L2 norm', logY: true, series: [{ key: 'grad_norm', label: 'grad norm' }] },
  { title: 'Throughput', yLabel: 'tokens / s', series: [{ key: 'tokens_per_s', label: 'tokens/s' }] },
  {
    // McCandlish et al.'s simple noise scale (runs with --accum ≥ 2) next to the batch in use.
    title: 'Gradient noise scale',
    yLabel: 'sequences',
    logY: true,
    series: [
      { key: 'b_simple', label: 'B_simple', spanGaps: true },
      { key: 'batch', label: 'batch (ramp)', spanGaps: true },
    ],
  },
  {
    // The Lion/Tiger embedding anomaly (docs/optimizers.md#embedding-drift): rows drifting toward ±1/λ.
    title: 'Embedding rows (wte)',
    yLabel: 'RMS / max |θ|',
    logY: true,
    series: [
      { key: 'embed_row_rms_median', label: 'row RMS (median)', spanGaps: true },
      { key: 'embed_row_rms_max', label: 'row RMS (max)', spanGaps: true },
      { key: 'embed_max_abs', label: 'max |θ|', spanGaps: true },
    ],
  },
];

export interface ReportOptions {
  /** Page title; defaults to "Keel run <dir name>". */
  title?: string;
  /** Panels drawn after `defaultPanels`. */
  extraPanels?: PanelSpec[];
  /** Cap on points per series (min/max downsampling above it). */
  maxPoints?: number;
}

/** What the browser script receives. */
interface Payload {
  panels: PanelSpec[];
  data: Record<string, XY>;
  events: (MetricEvent & { color: string })[];
  /** Per-tensor diagnostics as heatmaps; absent when the run logged none. */
  heatmaps?: HeatmapPayload;
}

const EVENT_COLORS: Record<string, string> = {
  checkpoint: '#94a3b8',
  spike: '#dc2626',
  resume: '#16a34a',
  rollback: '#d97706',
  skip_step: '#9333ea',
  // The controller's other decisions (set_lr, set_batch) and the end of the recovery ladder.
  decision: '#0d9488',
  stop: '#111827',
};
const EXTRA_EVENT_COLORS = ['#0891b2', '#db2777', '#65a30d', '#7c3aed', '#ca8a04'];

/** Reads DIR/metrics.jsonl (and DIR/config.json if present), writes DIR/report.html, returns its path. */
export function writeReport(runDir: string, opts: ReportOptions = {}): string {
  const metrics = loadRunMetrics(path.join(runDir, 'metrics.jsonl'));
  const config = readConfig(path.join(runDir, 'config.json'));
  const title = opts.title ?? `Keel run ${path.basename(path.resolve(runDir))}`;
  const html = renderReport({
    title,
    runDir: path.resolve(runDir),
    metrics,
    config,
    panels: [...defaultPanels, ...(opts.extraPanels ?? [])],
    maxPoints: opts.maxPoints,
  });
  const file = path.join(runDir, 'report.html');
  writeFileAtomic(file, html); // temp file + fsync + rename: a viewer never sees half a report
  return file;
}

interface RenderInput {
  title: string;
  runDir: string;
  metrics: RunMetrics;
  config?: Record<string, unknown>;
  panels: readonly PanelSpec[];
  maxPoints?: number;
}

/** The whole HTML document as a string (pure apart from reading uPlot's files). */
function renderReport(input: RenderInput): string {
  const payload = buildPayload(input.metrics, input.panels, input.maxPoints ?? DEFAULT_MAX_POINTS);
  const facts = configFacts(input.config);
  const summary = summaryFacts(input.metrics);
  return `${pageHead(input.title, input.runDir, facts)}
<section class="summary">
<h2>Summary</h2>
${factTable(summary)}
</section>
<main id="panels"></main>
${payload.heatmaps ? heatmapSection(payload.heatmaps) : ''}
<noscript><p class="note">The charts need JavaScript; the numbers above do not.</p></noscript>
<p class="note">Drag across a chart to zoom, double-click to reset. Hover for values.</p>
${eventTable(payload.events)}
${configDetails(input.config)}
${chartScripts(payload)}
</body>
</html>
`;
}

/**
 * The top of every Keel page (run reports and experiment reports): the document head with the
 * inlined styles (plus a page's own CSS) and the header with the title, the directory and the facts.
 */
export function pageHead(title: string, dir: string, facts: Fact[], css = ''): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="keel">
<title>${escapeHtml(title)}</title>
${reportStyles()}${css ? `\n<style>${css}</style>` : ''}
</head>
<body>
<header>
<h1>${escapeHtml(title)}</h1>
<p class="sub">${escapeHtml(dir)} · generated ${escapeHtml(new Date().toISOString().replace('T', ' ').slice(0, 19))} UTC</p>
${factList(facts, 'facts')}
</header>`;
}

/** The payload the browser script draws from: panels name keys of `data` (a series each). */
export type ChartPayload = Payload;

/**
 * For other pages built from the same pieces (e.g. an experiment report): the two inlined
 * <style> elements every Keel report uses (uPlot's stylesheet and report.css).
 */
export function reportStyles(): string {
  return `<style>${inlineSafe(uplotAssets().css, 'style')}</style>
<style>${inlineSafe(readAsset('report.css'), 'style')}</style>`;
}

/**
 * The chart machinery as inlined <script> elements: the payload, uPlot and client.js, which
 * draws one chart per panel into the page's `<main id="panels">`. Place it at the end of <body>.
 */
export function chartScripts(payload: ChartPayload): string {
  const assets = uplotAssets();
  return `<script type="application/json" id="keel-data">${jsonForScript(payload)}</script>
<script>${inlineSafe(assets.js, 'script')}</script>
<script type="module">${inlineSafe(readAsset('client.js'), 'script')}</script>`;
}

/** A series as the charts embed it: min/max-downsampled to `maxPoints`, six significant digits. */
export function chartSeries(xy: XY, maxPoints = DEFAULT_MAX_POINTS): XY {
  return compact(downsampleMinMax(xy, maxPoints));
}

/** Panels with their series resolved against the data: missing keys and empty panels dropped. */
function buildPayload(metrics: RunMetrics, panels: readonly PanelSpec[], maxPoints: number): Payload {
  const data: Record<string, XY> = {};
  const kept: PanelSpec[] = [];
  for (const panel of panels) {
    const series = panel.series.filter((s) => {
      if (!(s.key in data)) {
        const xy = seriesOf(metrics.rows, s.key);
        if (!xy.y.some((v) => v !== null)) return false; // never logged, or only non-finite
        data[s.key] = compact(downsampleMinMax(xy, maxPoints));
      }
      return true;
    });
    if (series.length > 0) kept.push({ ...panel, series });
  }
  const events = colourEvents(metrics.events);
  const heatmaps = buildHeatmaps(metrics.diag, events);
  return heatmaps ? { panels: kept, data, events, heatmaps } : { panels: kept, data, events };
}

/** The container client.js fills with one heatmap card per statistic. */
function heatmapSection(h: HeatmapPayload): string {
  const every = h.steps.length > 1 ? h.steps[1] - h.steps[0] : null;
  const dropped =
    h.droppedColumns > 0
      ? ` ${h.droppedColumns} of ${h.droppedColumns + h.steps.length} diagnosed steps are not drawn (long run: every few are kept, and the two before each marker).`
      : '';
  return `<section class="heatmaps" id="heatmaps">
<h2>Per-tensor diagnostics</h2>
<p class="note">Rows: the ${h.tensors.length} parameter tensors in layout order, grouped by layer; columns: the ${h.steps.length} diagnosed steps${every ? ` (every ${every})` : ''}; colour: the statistic (log scale where the colour bar says so; grey: not logged). Dashed lines mark spikes and interventions. Hover a cell for all its statistics and its update histogram; switch a map's statistic with its menu.${dropped}</p>
<div id="heatmap-cards"></div>
</section>`;
}

/** Six significant digits are plenty for a chart and roughly halve the embedded JSON. */
function compact(xy: XY): XY {
  return { x: xy.x, y: xy.y.map((v) => (v === null ? null : Number(v.toPrecision(6)))) };
}

function colourEvents(events: MetricEvent[]): Payload['events'] {
  const colours = new Map(Object.entries(EVENT_COLORS));
  return events.map((e) => {
    if (!colours.has(e.event)) {
      const extra = colours.size - Object.keys(EVENT_COLORS).length;
      colours.set(e.event, EXTRA_EVENT_COLORS[extra % EXTRA_EVENT_COLORS.length]);
    }
    return { ...e, color: colours.get(e.event)! };
  });
}

function readConfig(file: string): Record<string, unknown> | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return undefined; // optional: a report of a bare metrics log is still useful
  }
  try {
    const v: unknown = JSON.parse(text);
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    throw new UserError(`${file} is not valid JSON; fix or remove it to write the report`);
  }
}

let cachedAssets: { js: string; css: string } | undefined;

/** uPlot's minified build, resolved the way Node resolves the dependency (works when installed as a package). */
export function uplotAssets(): { js: string; css: string } {
  if (!cachedAssets) {
    const require = createRequire(import.meta.url);
    const dist = path.dirname(require.resolve('uplot/dist/uPlot.iife.min.js'));
    cachedAssets = {
      js: fs.readFileSync(path.join(dist, 'uPlot.iife.min.js'), 'utf8'),
      css: fs.readFileSync(path.join(dist, 'uPlot.min.css'), 'utf8'),
    };
  }
  return cachedAssets;
}

/** The browser script and stylesheet live next to this module as plain files. */
function readAsset(name: string): string {
  return fs.readFileSync(new URL(`./${name}`, import.meta.url), 'utf8');
}

/** A literal "</script" inside inlined code would end the element early. */
function inlineSafe(code: string, tag: 'script' | 'style'): string {
  return code.replace(new RegExp(`</(${tag})`, 'gi'), '<\\/$1');
}

/** JSON inside <script>: escaping "<" keeps "</script>" and "<!--" in strings harmless. */
function jsonForScript(value: unknown): string {
  return JSON.stringify(value).replace(/</g, '\\u003c');
}

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function factList(facts: Fact[], cls: string): string {
  if (facts.length === 0) return '';
  const items = facts.map((f) => `<div><dt>${escapeHtml(f.label)}</dt><dd>${escapeHtml(f.value)}</dd></div>`);
  return `<dl class="${cls}">${items.join('')}</dl>`;
}

function factTable(facts: Fact[]): string {
  const rows = facts.map((f) => `<tr><th>${escapeHtml(f.label)}</th><td>${escapeHtml(f.value)}</td></tr>`);
  return `<table class="kv">${rows.join('')}</table>`;
}

function eventDetails(fields: Record<string, unknown>): string {
  return Object.entries(fields)
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(' ');
}

function eventTable(events: Payload['events']): string {
  if (events.length === 0) return '';
  const rows = events.map(
    (e) =>
      `<tr><td class="num">${e.step ?? ''}</td><td><span class="swatch" style="background:${e.color}"></span>${escapeHtml(e.event)}</td>` +
      `<td>${escapeHtml(eventDetails(e.fields))}</td></tr>`,
  );
  return `<section class="events"><details${events.length <= 20 ? ' open' : ''}><summary>Events (${events.length})</summary>
<table class="list"><thead><tr><th>step</th><th>event</th><th>details</th></tr></thead><tbody>${rows.join('')}</tbody></table>
</details></section>`;
}

function configDetails(config: Record<string, unknown> | undefined): string {
  if (!config) return '';
  return `<section class="config"><details><summary>config.json</summary><pre>${escapeHtml(JSON.stringify(config, null, 2))}</pre></details></section>`;
}

/**
 * The optimizer experiment's report.html: one offline file with the results table, the verdict
 * on the paper's Adafactor target, validation-loss curves of the final runs (uPlot, inlined via
 * src/report/html.ts) and bar views of optimizer-state memory and throughput. Everything shown
 * is computed from results.json and the final runs' metrics.jsonl; nothing is hard-coded.
 */
import path from 'node:path';
import { writeFileAtomic } from '../io/atomic.ts';
import { chartScripts, chartSeries, escapeHtml, pageHead, type ChartPayload, type PanelSpec } from '../report/html.ts';
import { formatFixed, formatNumber } from '../report/format.ts';
import { loadRunMetrics, seriesOf } from '../report/metrics.ts';
import type { XY } from '../report/downsample.ts';
import type { AdafactorTarget, OptimizerExperimentResults, OptimizerResult } from './optimizers_results.ts';
import { modelFacts, PALETTE } from './common.ts';

/** Writes OUT/report.html (atomically) and returns its path. */
export function writeOptimizerReport(outDir: string, results: OptimizerExperimentResults): string {
  const file = path.join(outDir, 'report.html');
  writeFileAtomic(file, renderOptimizerReport(outDir, results));
  return file;
}

const pct = (ratio: number, digits = 2) => `${(ratio * 100).toFixed(digits)}%`;

function formatBytes(n: number): string {
  if (n < 1000) return `${n} B`;
  if (n < 1e6) return `${Number((n / 1e3).toPrecision(3))} kB`;
  if (n < 1e9) return `${Number((n / 1e6).toPrecision(3))} MB`;
  return `${Number((n / 1e9).toPrecision(3))} GB`;
}

/** "1.24% higher" / "0.50% lower" for a ratio to AdamW. */
function relative(ratio: number): string {
  const d = (ratio - 1) * 100;
  return `${Math.abs(d).toFixed(2)}% ${d >= 0 ? 'higher' : 'lower'}`;
}

/** The paper's Adafactor target against the measured numbers, as one sentence (plain text). */
export function verdictText(t: AdafactorTarget, results?: Pick<OptimizerExperimentResults, 'optimizers'>): string {
  const claim = `Paper's target — Adafactor's optimizer state ≤ ${pct(t.state_limit, 0)} of AdamW's at ≤ ${pct(t.val_loss_limit, 0)} higher validation loss`;
  if (t.met === null || t.state_ratio === null || t.val_loss_ratio === null) {
    const have = new Set((results?.optimizers ?? []).filter((o) => o.val_loss !== null).map((o) => o.optimizer));
    const missing = ['adamw', 'adafactor'].filter((n) => !have.has(n));
    return `${claim}: not evaluated — it needs finished final runs of adamw and adafactor${missing.length ? ` (missing: ${missing.join(', ')})` : ''}.`;
  }
  const yn = (ok: boolean | null) => (ok ? 'yes' : 'no');
  const af = results?.optimizers.find((o) => o.optimizer === 'adafactor');
  const aw = results?.optimizers.find((o) => o.optimizer === 'adamw');
  const bytes = af?.state_bytes != null && aw?.state_bytes != null ? ` (${formatBytes(af.state_bytes)} vs ${formatBytes(aw.state_bytes)})` : '';
  return (
    `${claim}: ${t.met ? 'MET' : 'NOT MET'} on this run. ` +
    `State: ${pct(t.state_ratio)} of AdamW's${bytes} — ≤ ${pct(t.state_limit, 0)}: ${yn(t.state_ok)}. ` +
    `Validation loss: ${formatFixed(t.adafactor_val_loss, 4)} vs AdamW's ${formatFixed(t.adamw_val_loss, 4)}, ${relative(t.val_loss_ratio)} — ` +
    `≤ ${pct(t.val_loss_limit, 0)} higher: ${yn(t.val_loss_ok)}.`
  );
}

function ema(xy: XY, beta = 0.9): XY {
  let m = 0;
  let k = 0;
  const y = xy.y.map((v) => {
    if (v === null) return null;
    k++;
    m = beta * m + (1 - beta) * v;
    return m / (1 - beta ** k);
  });
  return { x: xy.x, y };
}

function payloadOf(outDir: string, results: OptimizerExperimentResults, colors: Map<string, string>): ChartPayload {
  const data: Record<string, XY> = {};
  const val: PanelSpec = { title: 'Validation loss of the final runs', yLabel: 'val loss (nats)', wide: true, series: [] };
  const trn: PanelSpec = { title: 'Training loss of the final runs (EMA 0.9)', yLabel: 'loss (nats)', wide: true, series: [] };
  for (const o of results.optimizers) {
    if (!o.run_dir) continue;
    let rows;
    try {
      rows = loadRunMetrics(path.join(outDir, o.run_dir, 'metrics.jsonl')).rows;
    } catch {
      continue; // a run directory moved or damaged: the table still has its numbers
    }
    const color = colors.get(o.optimizer)!;
    const v = seriesOf(rows, 'val_loss');
    if (v.y.some((y) => y !== null)) {
      data[`val_loss:${o.optimizer}`] = chartSeries(v);
      val.series.push({ key: `val_loss:${o.optimizer}`, label: o.optimizer, color, spanGaps: true });
    }
    const l = seriesOf(rows, 'loss');
    if (l.y.some((y) => y !== null)) {
      data[`loss:${o.optimizer}`] = chartSeries(ema(l));
      trn.series.push({ key: `loss:${o.optimizer}`, label: o.optimizer, color });
    }
  }
  return { panels: [val, trn].filter((p) => p.series.length > 0), data, events: [] };
}

function sweepCell(o: OptimizerResult): string {
  if (o.sweep.length === 0) return '—';
  return o.sweep
    .map((p) => {
      const text = `${formatNumber(p.lr)}: ${p.diverged ? 'diverged' : formatFixed(p.val_loss, 4)}`;
      return p.lr === o.best_lr ? `<b>${escapeHtml(text)}</b>` : escapeHtml(text);
    })
    .join('<br>');
}

function statusNote(o: OptimizerResult): string {
  switch (o.status) {
    case 'diverged':
      return 'final run diverged';
    case 'all_sweep_runs_diverged':
      return 'every sweep run diverged';
    case 'incomplete':
      return 'not run yet';
    default:
      return '';
  }
}

function resultsTable(results: OptimizerExperimentResults, colors: Map<string, string>): string {
  const head = [
    'optimizer',
    'best lr',
    'sweep (lr: val loss)',
    'final val loss',
    'Δ vs AdamW',
    'state MB',
    'state B/param',
    'state % of AdamW',
    'tokens/s',
    'train s',
  ];
  const num = (s: string) => `<td class="n">${s}</td>`;
  const rows = results.optimizers.map((o) => {
    const note = statusNote(o);
    const best = o.best_lr === null ? '—' : `${escapeHtml(formatNumber(o.best_lr))}${o.best_at_edge ? ' †' : ''}`;
    const finalCell = o.val_loss !== null ? formatFixed(o.val_loss, 4) : `<span class="muted">${escapeHtml(note || '—')}</span>`;
    return (
      `<tr><td><span class="swatch" style="background:${colors.get(o.optimizer)}"></span>${escapeHtml(o.optimizer)}</td>` +
      num(best) +
      `<td class="sweep">${sweepCell(o)}</td>` +
      num(finalCell) +
      num(
        o.val_loss_ratio_vs_adamw === null
          ? '—'
          : `${o.val_loss_ratio_vs_adamw >= 1 ? '+' : '−'}${Math.abs((o.val_loss_ratio_vs_adamw - 1) * 100).toFixed(2)}%`,
      ) +
      num(o.state_bytes === null ? '—' : (o.state_bytes / 1e6).toFixed(3)) +
      num(o.state_bytes_per_param === null ? '—' : o.state_bytes_per_param.toFixed(3)) +
      num(o.state_ratio_vs_adamw === null ? '—' : pct(o.state_ratio_vs_adamw)) +
      num(o.tokens_per_s === null ? '—' : Math.round(o.tokens_per_s).toLocaleString('en-US')) +
      num(o.seconds === null ? '—' : o.seconds.toFixed(1)) +
      '</tr>'
    );
  });
  return `<table class="list results"><thead><tr>${head.map((h) => `<th>${escapeHtml(h)}</th>`).join('')}</tr></thead>
<tbody>${rows.join('\n')}</tbody></table>`;
}

/** Horizontal bars, widths relative to the largest value. */
function bars(title: string, items: { name: string; value: number; label: string; color: string }[], note: string): string {
  if (items.length === 0) return '';
  const max = Math.max(...items.map((i) => i.value));
  const rows = items.map((i) => {
    const w = max > 0 ? Math.max(0.4, (i.value / max) * 100) : 0;
    return (
      `<div class="bar-row"><span class="bar-name">${escapeHtml(i.name)}</span>` +
      `<span class="bar"><span style="width:${w.toFixed(2)}%;background:${i.color}"></span></span>` +
      `<span class="bar-value">${escapeHtml(i.label)}</span></div>`
    );
  });
  return `<section class="bars"><h2>${escapeHtml(title)}</h2>${rows.join('')}<p class="note">${escapeHtml(note)}</p></section>`;
}

const EXTRA_CSS = `
table.results td.n { text-align: right; white-space: nowrap; padding-left: 12px; }
table.results th { white-space: nowrap; padding-left: 12px; }
table.results td.sweep { font-size: 12px; white-space: nowrap; padding-left: 12px; }
.muted { color: var(--muted); }
p.verdict { font-size: 15px; margin: 0; }
p.verdict.met { color: #166534; } p.verdict.not-met { color: #9a3412; }
.bar-row { display: grid; grid-template-columns: 9em 1fr 22em; gap: 10px; align-items: center; margin: 3px 0; }
.bar-name { font-weight: 600; }
.bar { background: var(--bg); border: 1px solid var(--line); border-radius: 3px; height: 16px; overflow: hidden; }
.bar > span { display: block; height: 100%; }
.bar-value { font-variant-numeric: tabular-nums; font-size: 12px; }
`;

function renderOptimizerReport(outDir: string, results: OptimizerExperimentResults): string {
  const colors = new Map(results.optimizers.map((o, i) => [o.optimizer, PALETTE[i % PALETTE.length]]));
  const s = results.settings;
  const c = s.config;
  const facts: [string, string][] = [
    ...modelFacts(s, results.params),
    ['final run', `${s.steps} steps`],
    ['sweep runs', `${s.sweepSteps} steps, lr × ${results.lr_factors.map((f) => formatNumber(f)).join(', ')}`],
    ['batch', `${s.batch} × ${c.blockSize} tokens`],
    ['schedule', `${s.schedule}, warm-up min(100, steps/10), min lr = lr/10, clip ${s.clip}`],
    ['eval', `${s.evalTokens.toLocaleString('en-US')} tokens, every ${s.evalEvery} steps (final runs)`],
    ['seed', String(s.seed)],
    ['status', results.complete ? 'complete' : results.interrupted ? 'interrupted (run again with the same --out to finish)' : 'incomplete'],
  ];

  const t = results.adafactor_target;
  const verdictClass = t.met === null ? '' : t.met ? ' met' : ' not-met';
  const payload = payloadOf(outDir, results, colors);
  const withState = results.optimizers.filter((o) => o.state_bytes !== null);
  const withSpeed = results.optimizers.filter((o) => o.tokens_per_s !== null);
  const title = 'Keel optimizer experiment';
  return `${pageHead(
    title,
    path.resolve(outDir),
    facts.map(([label, value]) => ({ label, value })),
    EXTRA_CSS,
  )}
<section class="verdict">
<h2>Adafactor vs the paper</h2>
<p class="verdict${verdictClass}">${escapeHtml(verdictText(t, results))}</p>
</section>
<section class="table">
<h2>Results</h2>
${resultsTable(results, colors)}
<p class="note">Each optimizer ran a sweep of short runs at its recommended lr × the factors above, scored by final validation loss
(diverged = +∞); the best lr (bold) then got the final run, whose numbers fill the other columns. Δ and % are relative to AdamW's final run.
State is the optimizer's own buffers, measured from the trainer (AdamW: two float32 moments, 8 B/param).
Tokens/s is the final run's mean over its training steps (evaluation excluded) and depends on the machine's load.
${results.optimizers.some((o) => o.best_at_edge) ? '† best lr at the edge of the sweep grid: the optimum may lie outside it.' : ''}</p>
</section>
<main id="panels"></main>
<noscript><p class="note">The charts need JavaScript; the numbers above do not.</p></noscript>
${bars(
  'Optimizer-state memory',
  withState.map((o) => ({
    name: o.optimizer,
    value: o.state_bytes!,
    label: `${formatBytes(o.state_bytes!)} · ${o.state_bytes_per_param!.toFixed(3)} B/param${o.state_ratio_vs_adamw === null ? '' : ` · ${pct(o.state_ratio_vs_adamw)} of AdamW`}`,
    color: colors.get(o.optimizer)!,
  })),
  'Bytes of optimizer state of the final run (all slots), excluding the parameters and gradients every optimizer needs.',
)}
${bars(
  'Throughput',
  withSpeed.map((o) => ({
    name: o.optimizer,
    value: o.tokens_per_s!,
    label: `${Math.round(o.tokens_per_s!).toLocaleString('en-US')} tokens/s`,
    color: colors.get(o.optimizer)!,
  })),
  'Training tokens per second of the final run (forward, backward, clipping and the optimizer step).',
)}
<section class="config"><details><summary>results.json</summary><pre>${escapeHtml(JSON.stringify(results, null, 2))}</pre></details></section>
${chartScripts(payload)}
</body>
</html>
`;
}

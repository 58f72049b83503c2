/** report.html of `keel experiment lawa`: curves of raw / LAWA / EMA and the measured tables. */
import path from 'node:path';
import { formatFixed } from '../report/format.ts';
import { writeFileAtomic } from '../io/atomic.ts';
import { chartScripts, chartSeries, escapeHtml, pageHead, type ChartPayload, type PanelSpec } from '../report/html.ts';
import type { XY } from '../report/downsample.ts';
import type { LawaResults, LawaRun } from './lawa_results.ts';

function payload(r: LawaResults): ChartPayload {
  const data: Record<string, XY> = {};
  const panels: PanelSpec[] = r.runs.map((run, i) => {
    const series = (['raw', 'lawa', 'ema'] as const).map((kind) => {
      const key = `${i}:${kind}`;
      const ys = run.curve[kind].map((y) => (y === null || !Number.isFinite(y) ? null : y));
      data[key] = chartSeries({ x: run.curve.step, y: ys });
      return { key, label: kind === 'raw' ? 'raw weights' : kind.toUpperCase(), spanGaps: true };
    });
    return { title: `Validation loss, lr ${run.lr}`, yLabel: 'val loss (nats)', wide: true, series };
  });
  return { panels, data, events: [] };
}

function targetsTable(run: LawaRun): string {
  const saved = (s: number | null, raw: number) => (s === null ? 'not reached' : `${s} (${raw - s >= 0 ? 'saves' : 'costs'} ${Math.abs(raw - s)})`);
  const rows = run.targets.map(
    (t) =>
      `<tr><td class="n">${formatFixed(t.loss, 4)}</td><td class="n">${t.raw}</td><td class="n">${saved(t.lawa, t.raw)}</td><td class="n">${saved(t.ema, t.raw)}</td></tr>`,
  );
  return `<table><tr><th>target val loss</th><th>raw reaches it at step</th><th>LAWA</th><th>EMA</th></tr>${rows.join('')}</table>`;
}

/** A few sentences computed from the numbers. */
export function lawaFindings(r: LawaResults): string[] {
  return r.runs.map((run) => {
    const early = run.targets[0];
    const last = run.targets.at(-1)!;
    const sv = (s: number | null, raw: number) => (s === null ? 'never reaches it' : `${raw - s >= 0 ? 'saves' : 'costs'} ${Math.abs(raw - s)} steps`);
    return (
      `lr ${run.lr}: to the raw weights' loss after ${early.raw} steps (${formatFixed(early.loss, 4)}) LAWA ${sv(early.lawa, early.raw)}, EMA ${sv(early.ema, early.raw)}; ` +
      `to the final raw loss (${formatFixed(last.loss, 4)}) LAWA ${sv(last.lawa, last.raw)}. Final: raw ${formatFixed(run.final.raw, 4)}, LAWA ${formatFixed(run.final.lawa, 4)}, EMA ${formatFixed(run.final.ema, 4)}. ` +
      `Evaluation-loss rises (spikes) sum to ${formatFixed(run.rises.raw.total, 4)} raw vs ${formatFixed(run.rises.lawa.total, 4)} LAWA (largest ${formatFixed(run.rises.raw.max, 4)} vs ${formatFixed(run.rises.lawa.max, 4)}): ` +
      `${run.rises.lawa.total < run.rises.raw.total ? 'LAWA damps them' : 'LAWA does not damp them here'}.`
    );
  });
}

export function writeLawaReport(outDir: string, r: LawaResults): string {
  const s = r.settings;
  const body = r.runs.map((run) => `<h2>lr ${run.lr}</h2>${targetsTable(run)}`).join('\n');
  const facts = [
    ['model', s.configName],
    ['optimizer', `AdamW, batch ${s.batch}, ${s.steps} steps, cosine after warm-up`],
    ['LAWA', `k = ${s.k} snapshots every ${s.every} steps`],
    ['EMA', `β = ${s.ema}`],
    ['evaluation', `every ${s.evalEvery} steps on ${s.evalTokens} validation tokens`],
  ];
  const html = `${pageHead(
    'LAWA and EMA vs raw weights',
    path.resolve(outDir),
    facts.map(([label, value]) => ({ label, value })),
  )}
<section class="findings"><h2>What we measured</h2><ul>${lawaFindings(r)
    .map((f) => `<li>${escapeHtml(f)}</li>`)
    .join('')}</ul></section>
${body}
<main id="panels"></main>
${chartScripts(payload(r))}</body></html>`;
  const file = path.join(outDir, 'report.html');
  writeFileAtomic(file, html);
  return file;
}

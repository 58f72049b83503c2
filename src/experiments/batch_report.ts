/**
 * The batch experiment's report.html: one offline file computed from results.json. Charts are
 * inline SVG with log axes (steps vs examples with the fitted hyperbola; best lr vs batch per ε
 * with each scaling rule at its best constant factor); the findings are sentences generated from
 * the numbers, including where they contradict the prediction.
 */
import path from 'node:path';
import { writeFileAtomic } from '../io/atomic.ts';
import { escapeHtml, reportStyles } from '../report/html.ts';
import { formatDuration, formatFixed, formatNumber } from '../report/format.ts';
import { lrForBatch } from '../schedule/rules.ts';
import { PALETTE } from './common.ts';
import { NEAR_TIE, type BatchResults, type EpsResult } from './batch_results.ts';

export function writeBatchReport(outDir: string, results: BatchResults): string {
  const file = path.join(outDir, 'report.html');
  writeFileAtomic(file, renderBatchReport(results));
  return file;
}

const p3 = (v: number | null | undefined) => (v === null || v === undefined || !Number.isFinite(v) ? '—' : formatNumber(Number(v.toPrecision(3))));

/** Sentences from the numbers. */
export function batchFindings(r: BatchResults): string[] {
  const out: string[] = [];
  const bs = r.b_simple;
  if (bs !== null) {
    const span = r.grid.batches[0] <= bs && bs <= r.grid.batches[r.grid.batches.length - 1];
    out.push(
      `The pilot measured B_simple ≈ ${p3(bs)} sequences online (median of its second half; gradient RMS ${p3(r.grad_rms)}); ` +
        `the batch grid ${r.grid.batches.join(', ')} ${span ? 'spans it' : 'does NOT span it — widen --batches'}.`,
    );
  }
  const e0 = r.eps[0];
  if (e0?.fit) {
    const f = e0.fit;
    const ratio = e0.ratio;
    const verdict =
      ratio === null
        ? ''
        : ratio > 0.5 && ratio < 2
          ? ' — within a factor 2, as the paper says (B_crit ≈ B_simple)'
          : ratio >= 2
            ? ` — B_crit is ${ratio.toFixed(1)}× B_simple: the online estimate UNDER-states the critical batch here`
            : ` — B_crit is ${(1 / ratio).toFixed(1)}× smaller than B_simple: the online estimate OVER-states it here`;
    out.push(
      `At ε ${formatNumber(e0.eps)}, the steps to reach val loss ${formatFixed(e0.target, 4)} fit S = S_min(1 + B_crit/B) with S_min ≈ ${p3(f.s_min)} steps, ` +
        `E_min ≈ ${p3(f.e_min)} sequences (${p3(f.e_min * r.settings.config.blockSize)} tokens), B_crit = E_min/S_min ≈ ${p3(f.b_crit)} sequences ` +
        `(rms error ${(100 * (Math.exp(f.rms_log) - 1)).toFixed(0)} % in S); B_crit/B_simple = ${p3(ratio)}${verdict}.` +
        (e0.b_simple_at_target !== null
          ? ` Measured where it applies — the online b_simple of the best runs at their target crossing, median over the batches — ` +
            `B_simple ≈ ${p3(e0.b_simple_at_target)}, so B_crit/B_simple(at target) = ${p3(e0.ratio_at_target)}.`
          : ''),
    );
    const maxB = r.grid.batches[r.grid.batches.length - 1];
    if (f.b_crit > 3 * maxB)
      out.push(`B_crit lies beyond the largest batch tried (${maxB}): the fit is an extrapolation (S still falls nearly ∝ 1/B over the grid).`);
    if (f.b_crit < r.grid.batches[0]) out.push(`B_crit lies below the smallest batch tried (${r.grid.batches[0]}): the fit is an extrapolation.`);
  }
  for (const e of r.eps) {
    if (e.rows.every((x) => x.best_lr === null)) continue;
    const lrs = e.rows.map((x) => `${x.batch}: ${x.best_lr ?? '—'}`).join(', ');
    const shape =
      e.peak_batch !== null
        ? `peaks at B = ${e.peak_batch} and falls after it (a surge, sign-like)`
        : e.slope === null
          ? ''
          : e.slope < 0.2
            ? 'is nearly flat (sign-like saturation)'
            : e.slope > 0.7
              ? 'grows nearly linearly (SGD-like)'
              : 'grows sub-linearly';
    const top = e.rules
      .slice(0, 3)
      .map((q) => `${q.rule} ${q.rms_log2.toFixed(2)}`)
      .join(', ');
    const edge = e.rows.filter((x) => x.at_grid_edge).map((x) => x.batch);
    const flat = e.rows
      .filter((x) => x.near_best_lrs && x.near_best_lrs[1] / x.near_best_lrs[0] > 1.5)
      .map((x) => `B ${x.batch}: ${x.near_best_lrs![0]}–${x.near_best_lrs![1]}`);
    const fitText =
      e !== r.eps[0] && e.fit
        ? ` Steps to val loss ${formatFixed(e.target, 4)}: B_crit ≈ ${p3(e.fit.b_crit)} (S_min ${p3(e.fit.s_min)}, rms error ${(100 * (Math.exp(e.fit.rms_log) - 1)).toFixed(0)} % in S), ` +
          `B_crit/B_simple ${p3(e.ratio)} (pilot), ${p3(e.ratio_at_target)} (at the target)${e.fit.b_crit < r.grid.batches[0] ? ', below the smallest batch: an extrapolation' : ''}.`
        : '';
    out.push(
      `ε ${formatNumber(e.eps)}:${fitText} best lr per B (${lrs}); log-log slope ${p3(e.slope)}; the curve ${shape}. ` +
        `Rules by rms of log2(lr_best/lr_rule) (one ×√2 grid step = 0.5): ${top}${e.best_rule ? ` — ${e.best_rule} fits best` : ''}.` +
        (edge.length ? ` Best lr at the edge of the grid for B = ${edge.join(', ')}: the optimum may lie beyond.` : '') +
        (flat.length
          ? ` Flat valleys (final loss within ${NEAR_TIE} nats of the best over a range of lrs: ${flat.join('; ')}): there the best lr is not resolved and the curve's shape is uncertain.`
          : ''),
    );
  }
  const withSlope = r.eps.filter((e) => e.slope !== null);
  if (withSlope.length >= 2) {
    const a = withSlope[0],
      b = withSlope[withSlope.length - 1];
    const rising = b.slope! > a.slope! + 0.1;
    out.push(
      `From ε ${formatNumber(a.eps)} to ${formatNumber(b.eps)} the slope of the best lr vs B goes ${p3(a.slope)} → ${p3(b.slope)}: ` +
        (rising
          ? 'steeper at large ε, the predicted move from sign-like toward SGD-like scaling.'
          : 'NOT steeper at large ε — this run does not show the predicted move toward SGD-like scaling (a discrete lr grid and one seed resolve slopes only coarsely).'),
    );
  }
  out.push('One seed, a discrete lr grid and short fixed-budget runs: differences of one grid step in the best lr, or ~0.02 nats in loss, are within noise.');
  return out;
}

interface Series {
  label: string;
  color: string;
  pts: [number, number][];
  dash?: boolean;
  markers?: boolean;
}

function logLogSvg(series: Series[], xLabel: string, yLabel: string): string {
  const all = series.flatMap((s) => s.pts).filter(([x, y]) => x > 0 && y > 0 && Number.isFinite(x) && Number.isFinite(y));
  if (all.length === 0) return '<p class="note">No data yet.</p>';
  const [W, H, L, R, T, B] = [760, 380, 70, 170, 14, 44]; // width, height; left, right, top, bottom margins
  const lx = all.map(([x]) => Math.log10(x)),
    ly = all.map(([, y]) => Math.log10(y));
  let x0 = Math.min(...lx),
    x1 = Math.max(...lx),
    y0 = Math.min(...ly),
    y1 = Math.max(...ly);
  if (x1 - x0 < 0.3) {
    x0 -= 0.15;
    x1 += 0.15;
  }
  if (y1 - y0 < 0.3) {
    y0 -= 0.15;
    y1 += 0.15;
  }
  const X = (x: number) => L + ((Math.log10(x) - x0) / (x1 - x0)) * (W - L - R);
  const Y = (y: number) => T + (1 - (Math.log10(y) - y0) / (y1 - y0)) * (H - T - B);
  const parts: string[] = [];
  const ticks = (a: number, b: number) => {
    const out: number[] = [];
    for (let k = Math.floor(a); k <= Math.ceil(b); k++)
      for (const m of [1, 2, 5]) {
        const v = m * 10 ** k;
        if (Math.log10(v) >= a - 1e-9 && Math.log10(v) <= b + 1e-9) out.push(v);
      }
    return out;
  };
  for (const v of ticks(x0, x1))
    parts.push(
      `<line x1="${X(v)}" x2="${X(v)}" y1="${T}" y2="${H - B}" stroke="#e5e7eb"/><text x="${X(v)}" y="${H - B + 16}" text-anchor="middle" font-size="11">${formatNumber(v)}</text>`,
    );
  for (const v of ticks(y0, y1))
    parts.push(
      `<line x1="${L}" x2="${W - R}" y1="${Y(v)}" y2="${Y(v)}" stroke="#e5e7eb"/><text x="${L - 6}" y="${Y(v) + 4}" text-anchor="end" font-size="11">${formatNumber(v)}</text>`,
    );
  series.forEach((s, i) => {
    const pts = s.pts.filter(
      ([x, y]) => x > 0 && y > 0 && Number.isFinite(x) && Number.isFinite(y) && Math.log10(y) >= y0 - 1e-9 && Math.log10(y) <= y1 + 1e-9,
    );
    if (pts.length === 0) return;
    const dash = s.dash ? ' stroke-dasharray="5 3"' : '';
    if (pts.length > 1)
      parts.push(
        `<polyline fill="none" stroke="${s.color}" stroke-width="${s.markers ? 2 : 1.3}"${dash} points="${pts.map(([x, y]) => `${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join(' ')}"/>`,
      );
    if (s.markers)
      for (const [x, y] of pts)
        parts.push(
          `<circle cx="${X(x).toFixed(1)}" cy="${Y(y).toFixed(1)}" r="3.5" fill="${s.color}"><title>${escapeHtml(`${s.label}: (${p3(x)}, ${p3(y)})`)}</title></circle>`,
        );
    const ly2 = T + 14 + i * 17;
    parts.push(
      `<line x1="${W - R + 10}" x2="${W - R + 30}" y1="${ly2 - 4}" y2="${ly2 - 4}" stroke="${s.color}" stroke-width="2"${dash}/><text x="${W - R + 36}" y="${ly2}" font-size="12">${escapeHtml(s.label)}</text>`,
    );
  });
  parts.push(`<text x="${(L + W - R) / 2}" y="${H - 6}" text-anchor="middle" font-size="12">${escapeHtml(xLabel)}</text>`);
  parts.push(
    `<text x="14" y="${(T + H - B) / 2}" text-anchor="middle" font-size="12" transform="rotate(-90 14 ${(T + H - B) / 2})">${escapeHtml(yLabel)}</text>`,
  );
  return `<svg viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img">${parts.join('')}</svg>`;
}

function seSvg(r: BatchResults): string {
  const series: Series[] = [];
  r.eps.forEach((e, i) => {
    const c = PALETTE[i % PALETTE.length];
    const pts = e.rows.filter((x) => x.steps_to_target !== null).map((x) => [x.examples_to_target!, x.steps_to_target!] as [number, number]);
    series.push({ label: `ε ${formatNumber(e.eps)} measured`, color: c, pts, markers: true });
    if (e.fit) {
      const f = e.fit;
      const b0 = r.grid.batches[0] / 2,
        b1 = r.grid.batches[r.grid.batches.length - 1] * 2;
      const curve: [number, number][] = [];
      for (let k = 0; k <= 40; k++) {
        const B = b0 * (b1 / b0) ** (k / 40);
        const S = f.s_min * (1 + f.b_crit / B);
        curve.push([S * B, S]);
      }
      series.push({ label: `fit (B_crit ${p3(f.b_crit)})`, color: c, pts: curve, dash: true });
    }
  });
  return logLogSvg(series, 'examples E to target (sequences, log)', 'steps S to target (log)');
}

function lrSvg(r: BatchResults, e: EpsResult): string {
  const pts = e.rows.filter((x) => x.best_lr !== null).map((x) => [x.batch, x.best_lr!] as [number, number]);
  const series: Series[] = [{ label: 'best lr (measured)', color: '#111827', pts, markers: true }];
  const bs = r.grid.batches;
  e.rules.forEach((q, i) => {
    const curve: [number, number][] = [];
    for (let k = 0; k <= 30; k++) {
      const B = bs[0] * (bs[bs.length - 1] / bs[0]) ** (k / 30);
      curve.push([B, q.scale * lrForBatch(q.rule, B, { baseLr: 1, baseBatch: 1, bNoise: r.b_simple ?? 1, eps: e.eps, gradRms: r.grad_rms ?? 1 })]);
    }
    series.push({ label: `${q.rule} (rms ${q.rms_log2.toFixed(2)})`, color: PALETTE[i % PALETTE.length], pts: curve, dash: i > 0 });
  });
  return logLogSvg(series, 'batch B (sequences, log)', 'learning rate (log)');
}

function renderBatchReport(r: BatchResults): string {
  const s = r.settings;
  const c = s.config;
  const tables = r.eps
    .map(
      (e) => `
<h3>ε ${escapeHtml(formatNumber(e.eps))} — target val loss ${formatFixed(e.target, 4)}</h3>
<table><thead><tr><th>B</th><th>steps</th><th>lrs tried</th><th>best lr</th><th>best val loss</th><th>steps to target</th><th>examples</th><th>tokens</th><th>b_simple at target</th><th>b_simple (end)</th></tr></thead><tbody>
${e.rows.map((x) => `<tr><td>${x.batch}</td><td>${x.steps}</td><td>${x.lrs_tried.join(', ')}</td><td>${x.best_lr ?? '—'}${x.at_grid_edge ? ' (grid edge)' : ''}${x.near_best_lrs && x.near_best_lrs[0] !== x.near_best_lrs[1] ? ` (tie ${x.near_best_lrs[0]}–${x.near_best_lrs[1]})` : ''}</td><td>${formatFixed(x.best_loss, 4)}</td><td>${p3(x.steps_to_target)}</td><td>${p3(x.examples_to_target)}</td><td>${p3(x.tokens_to_target)}</td><td>${p3(x.b_simple_at_target)}</td><td>${p3(x.b_simple)}</td></tr>`).join('\n')}
</tbody></table>
<p>Fit: ${e.fit ? `S_min ${p3(e.fit.s_min)} steps, E_min ${p3(e.fit.e_min)} sequences, B_crit ${p3(e.fit.b_crit)} sequences (B_crit/B_simple ${p3(e.ratio)}; B_simple at the target ${p3(e.b_simple_at_target)}, ratio ${p3(e.ratio_at_target)}), rms log error ${e.fit.rms_log.toFixed(3)}` : '—'}.
Rules (rms of log2 lr error, best constant each): ${e.rules.map((q) => `${q.rule} ${q.rms_log2.toFixed(2)}`).join(', ') || '—'}; slope ${p3(e.slope)}.</p>
${lrSvg(r, e)}`,
    )
    .join('\n');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>keel experiment batch</title>
${reportStyles()}
</head><body><main>
<h1>Batch size, critical batch and learning rate</h1>
<p>${escapeHtml(`${r.params.toLocaleString('en-US')} parameters (${s.configName}: ${c.nLayer} layers, C ${c.nEmbd}, T ${c.blockSize}), AdamW, constant lr after a ${Math.round(s.warmupFraction * 100)} % linear warm-up, clip ${s.clip}, ${s.tokens.toLocaleString('en-US')} tokens per run (steps = tokens / (B·T)), micro-batch B/2 × accum 2, ${s.evalPoints} evaluations per run on ${s.evalTokens} validation tokens, seed ${s.seed}, ${s.threads} thread(s). ${r.runs.length} runs, ${formatDuration(r.wall_seconds)} of training${r.complete ? '' : ' — INCOMPLETE'}.`)}</p>
<h2>What was measured</h2>
<ul>${batchFindings(r)
    .map((f) => `<li>${escapeHtml(f)}</li>`)
    .join('')}</ul>
<h2>Method</h2>
<p>Pilot: ${r.pilot ? escapeHtml(`B = ${r.pilot.batch} (${r.pilot.batch / r.pilot.accum} × accum ${r.pilot.accum}), ${r.pilot.steps} steps at lr ${r.pilot.lr}, ε ${r.pilot.eps}: B_simple ${p3(r.pilot.b_simple)} (median of the second half; last ${p3(r.pilot.b_simple_final)}), gradient RMS ${p3(r.pilot.grad_rms)}.`) : '—'}
For each ε and B, an lr sweep on the grid ${escapeHtml(r.grid.lrs.join(', '))}: three neighbouring lrs around the previous batch's best, extended until the best has two evaluated lrs on each side (or the grid ends); best = lowest final validation loss (diverged = ln V).
Steps to target: the first evaluation at or below the target, linearly interpolated with the one before. Target = the highest best-loss reached over the batches + ${r.grid.target_margin} nats${r.grid.target_override !== null ? ` (overridden: ${r.grid.target_override})` : ''}, so every batch crosses it. The warm-up is the same fraction of tokens for every batch, so it is fewer steps at large B (3 at B = 64 by default).
Fit: S = S_min(1 + B_crit/B), least squares on log S (≡ (S/S_min − 1)(E/E_min − 1) = 1, E_min = S_min·B_crit). Rules: src/schedule/rules.ts with B_noise = the pilot's B_simple and g = its gradient RMS, each scaled by its best constant.</p>
<h2>Steps vs examples to the target</h2>
${seSvg(r)}
<h2>Per ε: best lr vs batch</h2>
${tables}
<p class="note">Updated ${escapeHtml(r.updated)}.</p>
</main></body></html>
`;
}

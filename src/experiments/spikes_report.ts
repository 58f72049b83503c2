/**
 * The spike experiment's report.html: one offline file. Everything shown is computed from
 * results.json (and the runs' loss curves from their summary.json); the "what we measured"
 * paragraph is generated from the numbers, including where they contradict the stability notes
 * (docs/stability.md), never written by hand.
 *
 * Final loss vs lr is an inline SVG with a log-x axis (the uPlot charts of src/report are
 * linear in x); the training-loss curves per lr use the shared uPlot machinery.
 */
import path from 'node:path';
import { writeFileAtomic } from '../io/atomic.ts';
import { chartScripts, chartSeries, escapeHtml, pageHead, type ChartPayload, type PanelSpec } from '../report/html.ts';
import { mean } from '../util/stats.ts';
import { formatDuration, formatFixed, formatNumber } from '../report/format.ts';
import { modelFacts, PALETTE } from './common.ts';
import { readSummary } from './grid.ts';
import { EARLY_MARGIN, LEAD_SIGMA, LEAD_STATS, MIN_BASELINE, type LeadStat } from '../monitor/spike_log.ts';
import type { SpikeResults, SpikeRunRecord, SpikeRunResult, VariantResult } from './spikes_results.ts';

/** Writes OUT/report.html (atomically) and returns its path; each run's training-loss series is in its summary.json. */
export function writeSpikeReport(outDir: string, results: SpikeResults): string {
  const curves = (run: SpikeRunResult) => readSummary<SpikeRunRecord>(path.join(outDir, run.run_dir), () => true)?.loss_curve ?? [];
  const file = path.join(outDir, 'report.html');
  writeFileAtomic(file, renderSpikeReport(outDir, results, curves));
  return file;
}

const STAT_LABEL: Record<LeadStat, string> = {
  diag_update_rms: 'update RMS (model)',
  diag_bimodality_max: 'bimodality (max over tensors)',
  diag_eps_frac: 'ε-dominated fraction (model)',
  diag_cos_g: 'cos(g_t, g_t−1) (model)',
  'wte.update_rms': 'update RMS (token embedding)',
  'wte.eps_frac': 'ε-dominated fraction (token embedding)',
};

const pct = (v: number | null | undefined) => (v === null || v === undefined ? '—' : `${Math.round(v * 100)}%`);
const plural = (n: number, word: string, many = `${word}s`) => `${n} ${n === 1 ? word : many}`;
/** Loss differences below this (nats) are called a tie: one seed cannot resolve them. */
const TIE = 0.02;
const cmp = (d: number) => (Math.abs(d) < TIE ? 0 : Math.sign(d));

// ---------------------------------------------------------------------------------------------
// What we measured: sentences from the numbers.

const MITIGATION_CLAIM: Record<string, string> = {
  skip: 'skipping the step on an outlier (docs/stability.md#spike-detection)',
  rollback: 'rolling back and skipping data (PaLM; docs/stability.md#rollback-and-skipped-data)',
  'qk-norm': 'QK-layernorm (Wortsman et al.; docs/stability.md#qk-layernorm)',
  'z-loss': 'z-loss (Wortsman et al.; docs/stability.md#z-loss)',
  'embed-shrink': 'the embedding-gradient shrink (GLM-130B; docs/stability.md#embedding-gradient-shrink)',
  atan2: 'the ε-free Adam-atan2 update (docs/optimizers.md#adamw)',
  'eps-zero': 'ε = 0 (docs/optimizers.md#adamw)',
};

/** Counts below this are too small for one seed to tell a difference from chance. */
const SMALL_COUNT = 10;
/** Early blow-ups count as larger/smaller when their mean peak differs by more than this fraction. */
const EARLY_REL = 0.2;

/**
 * The early excursions of two variants at the lrs where both had one: mean peak height above
 * L0 and mean steps until the loss was back below L0 (recovered ones). sign: +1 when the
 * second's peaks are more than EARLY_REL higher, −1 lower, 0 otherwise.
 */
function compareEarly(base: readonly SpikeRunResult[], other: readonly SpikeRunResult[]): { text: string; sign: number } | null {
  const early = (r: SpikeRunResult) => r.events.find((e) => e.kind === 'early');
  const pairs = base.flatMap((b) => {
    const o = other.find((x) => x.lr === b.lr);
    const eb = early(b),
      eo = o && early(o);
    return eb && eo && Number.isFinite(eb.height) && Number.isFinite(eo.height) ? [{ lr: b.lr, b: eb, o: eo }] : [];
  });
  if (pairs.length === 0) return null;
  const hb = mean(pairs.map((p) => p.b.height))!,
    ho = mean(pairs.map((p) => p.o.height))!;
  const dur = (e: { start: number; end: number | null }) => (e.end === null ? [] : [e.end - e.start]);
  const db = mean(pairs.flatMap((p) => dur(p.b))),
    dO = mean(pairs.flatMap((p) => dur(p.o)));
  const sign = ho > hb * (1 + EARLY_REL) ? 1 : ho < hb * (1 - EARLY_REL) ? -1 : 0;
  const text =
    `early blow-ups at lr ${pairs.map((p) => formatNumber(p.lr)).join(', ')} peaked ${hb.toFixed(1)} → ${ho.toFixed(1)} nats above L0 on average` +
    (db !== null && dO !== null ? ` and took ${db.toFixed(1)} → ${dO.toFixed(1)} steps to fall back below it` : '');
  return { text, sign };
}

/** The generated findings, one plain-text paragraph each (also used by the CLI and tests). */
export function spikeFindings(results: SpikeResults): string[] {
  const out: string[] = [];
  const s = results.settings;
  const vs = results.variants;
  const l0 = s.initialLoss;
  const primaryEps = results.grid.eps_values[0];
  const base = vs.find((v) => v.variant === 'baseline' && v.eps === primaryEps);
  const done = results.runs.length;
  out.push(
    `${done} of ${results.grid.runs} runs finished (${formatDuration(results.wall_seconds)} of training wall time): ${results.grid.description}; ` +
      `${s.steps} steps each, constant lr, warm-up ${s.warmup}, batch ${s.batch}×${s.config.blockSize} tokens, clip ${s.clip}. ` +
      `A diverged run's final loss is capped at L0 = ln ${s.config.vocabSize} = ${l0.toFixed(3)} nats.`,
  );
  const totalSpikes = results.runs.reduce((a, r) => a + r.spikes, 0);
  const totalDiv = results.runs.filter((r) => r.diverged).length;
  if (totalSpikes === 0) {
    out.push(
      `No loss spikes were found in any run (detector: window ${s.spikeWindow}, ${s.spikeThreshold}σ or +${s.spikeJump * 100}% over the EMA; before the window fills, a rise of more than ${EARLY_MARGIN} nats above L0)` +
        (totalDiv ? `; ${plural(totalDiv, 'run')} diverged outright instead.` : '.') +
        ' The lead-time analysis therefore has no spikes to measure; raise the lr grid, lower the batch or run longer.',
    );
  }
  if (base) {
    const runs = results.runs.filter((r) => r.variant === 'baseline' && r.eps === primaryEps);
    const spiky = runs.filter((r) => r.spikes > 0).map((r) => formatNumber(r.lr));
    const div = runs.filter((r) => r.diverged).map((r) => formatNumber(r.lr));
    out.push(
      `Baseline (AdamW, ε ${primaryEps}): ${plural(base.spikes, 'spike')} over ${plural(base.runs, 'run')}` +
        (spiky.length ? ` (at lr ${spiky.join(', ')})` : '') +
        `, ${div.length ? `diverged at lr ${div.join(', ')}` : 'no run diverged'}; ` +
        `best final loss ${formatFixed(base.best_loss, 4)} at lr ${base.best_lr === null ? '—' : formatNumber(base.best_lr)}, LR sensitivity ${formatFixed(base.lr_sensitivity, 3)} nats.`,
    );
  }
  if (base) {
    for (const v of vs) if (v.variant !== 'baseline') out.push(mitigationFinding(results, v, base));
    for (const v of vs) if (v.variant === 'baseline' && v.eps !== primaryEps) out.push(epsFinding(v, base, primaryEps));
  }
  const precursors = precursorFinding(results);
  if (precursors) out.push(precursors);
  if (!results.complete)
    out.push(results.interrupted ? 'The experiment was interrupted: rerun the same command to finish it.' : 'The experiment is incomplete.');
  return out;
}

/** A mitigation against the baseline at the same ε: spikes, early blow-ups, divergences, LR sensitivity, and the stability notes' claim. */
function mitigationFinding(results: SpikeResults, v: VariantResult, base: VariantResult): string {
  const s = results.settings;
  const runsOf = (x: VariantResult) => results.runs.filter((r) => r.variant === x.variant && r.eps === x.eps);
  const claim = MITIGATION_CLAIM[v.variant];
  const parts: string[] = [];
  const dS = v.spikes - base.spikes;
  const split = `early excursions ${base.early_spikes} → ${v.early_spikes}, later spikes ${base.spikes - base.early_spikes} → ${v.spikes - v.early_spikes}`;
  parts.push(
    dS < 0
      ? `fewer spikes (${base.spikes} → ${v.spikes}: ${split})`
      : dS > 0
        ? `more spikes (${base.spikes} → ${v.spikes}: ${split})`
        : `as many spikes (${v.spikes}: ${split})`,
  );
  const early = compareEarly(runsOf(base), runsOf(v));
  if (early) parts.push(early.text);
  if (v.diverged !== base.diverged) parts.push(`${v.diverged < base.diverged ? 'fewer' : 'more'} diverged runs (${base.diverged} → ${v.diverged})`);
  let sensUp = false;
  let sensDown = false;
  if (v.lr_sensitivity !== null && base.lr_sensitivity !== null) {
    const d = cmp(v.lr_sensitivity - base.lr_sensitivity);
    parts.push(
      `LR sensitivity ${formatFixed(base.lr_sensitivity, 3)} → ${formatFixed(v.lr_sensitivity, 3)} nats (${d < 0 ? 'lower' : d > 0 ? 'higher' : `within ${TIE}: no change`})`,
    );
    sensUp = d > 0;
    sensDown = d < 0;
  }
  if (v.best_loss !== null && base.best_loss !== null) parts.push(`best final loss ${formatFixed(base.best_loss, 4)} → ${formatFixed(v.best_loss, 4)}`);
  const contradicts: string[] = [];
  const supports: string[] = [];
  if (dS > 0 || (dS === 0 && base.spikes > 0 && v.diverged >= base.diverged)) contradicts.push('it did not reduce the spike count');
  if (dS < 0) supports.push('fewer spikes');
  if (sensUp) contradicts.push('it raised the LR sensitivity');
  if (sensDown) supports.push('a lower LR sensitivity');
  if (early?.sign === 1) contradicts.push('its early blow-ups were larger');
  if (early?.sign === -1) supports.push('smaller early blow-ups');
  let verdict = '';
  if (contradicts.length) {
    verdict =
      ` This contradicts Keel's stability notes (docs/stability.md), which list ${claim} as a mitigation: ${contradicts.join(' and ')}` +
      (supports.length ? ` (in its favour: ${supports.join(', ')}).` : '.');
    if (v.variant === 'skip' || v.variant === 'rollback') {
      verdict += ` (Recovery acts after the spike is seen, so the flagged step itself is always counted, and the detector is blind for the first ${s.spikeWindow} steps, where the early excursions happen.)`;
    }
  } else if (supports.length) {
    verdict = ` Consistent with the stability notes' claim for ${claim}: ${supports.join(', ')}.`;
  }
  if (Math.max(v.spikes, base.spikes) < SMALL_COUNT && dS !== 0)
    verdict += ` With spike counts this small (${base.spikes} vs ${v.spikes}) one seed cannot separate the difference from chance.`;
  if (v.variant === 'skip' || v.variant === 'rollback') {
    // Interventions where there was nothing to mitigate: the baseline twin neither spiked nor diverged.
    const calm = results.runs
      .filter((r) => r.variant === v.variant && r.eps === v.eps)
      .filter((r) => {
        const twin = results.runs.find((b) => b.variant === 'baseline' && b.eps === v.eps && b.lr === r.lr);
        return twin && twin.spikes === 0 && !twin.diverged;
      });
    const acts = calm.reduce((a, r) => a + r.skipped_steps + r.rollbacks, 0);
    if (calm.length) {
      verdict += ` The online detectors (loss and gradient norm, window ${s.spikeWindow}) intervened ${acts} times (skipped steps + rollbacks) in the ${plural(calm.length, 'run')} whose baseline twin had no spike and did not diverge.`;
    }
  }
  return `${v.label} vs baseline: ${parts.join('; ')}.${verdict}`;
}

/** The baseline at a further ε against the baseline at the first. */
function epsFinding(v: VariantResult, base: VariantResult, primaryEps: number): string {
  const sens = v.lr_sensitivity !== null && base.lr_sensitivity !== null ? cmp(v.lr_sensitivity - base.lr_sensitivity) : null;
  const e = formatNumber(v.eps),
    e0 = formatNumber(primaryEps);
  let text =
    `ε ${e} vs ε ${e0} (baseline): ${v.spikes} vs ${base.spikes} spikes, ${v.diverged} vs ${base.diverged} diverged runs` +
    (sens !== null ? `, LR sensitivity ${formatFixed(v.lr_sensitivity, 3)} vs ${formatFixed(base.lr_sensitivity, 3)} nats` : '') +
    `, best final loss ${formatFixed(v.best_loss, 4)} vs ${formatFixed(base.best_loss, 4)}.`;
  // Worse = more spikes, more divergences, or a higher LR sensitivity (beyond the tie).
  const worse = v.spikes > base.spikes || v.diverged > base.diverged || sens === 1;
  const better = v.spikes < base.spikes || v.diverged < base.diverged || sens === -1;
  const larger = v.eps > primaryEps;
  const seed = 'the stability notes list lowering ε as a mitigation (docs/optimizers.md#adamw)';
  if (worse && !better)
    text += larger
      ? ` The larger ε was less stable, as expected: ${seed}.`
      : ` The smaller ε was less stable: this contradicts Keel's stability notes (docs/stability.md), which list lowering ε as a mitigation (docs/optimizers.md#adamw).`;
  else if (better && !worse)
    text += larger
      ? ` The larger ε was more stable: this contradicts Keel's stability notes (docs/stability.md), which list lowering ε as a mitigation (docs/optimizers.md#adamw); a large ε damps the update of coordinates whose gradient is below it, a lower effective lr.`
      : ` The smaller ε was more stable, as expected: ${seed}.`;
  else text += ` No consistent difference in stability, although ${seed}: not borne out at this scale.`;
  if ((worse || better) && Math.max(v.spikes, base.spikes) < SMALL_COUNT && sens !== 1 && sens !== -1 && v.diverged === base.diverged) {
    text += ` (Only the spike counts differ, ${base.spikes} vs ${v.spikes}: too few for one seed to tell from chance.)`;
  }
  return text;
}

/** The lead-time paragraph, with the control (false-alarm rate) and the stability notes' mechanism checked. */
function precursorFinding(results: SpikeResults): string | null {
  const lead = results.lead;
  const s = results.settings;
  if (lead.spikes === 0) return null;
  const kinds = results.runs.flatMap((r) => r.events.map((e) => e.kind));
  const count = (k: string) => kinds.filter((x) => x === k).length;
  const what = `${plural(lead.spikes, 'event')} (${count('spike')} detected spikes, ${count('early')} early excursions, ${count('divergence')} divergence onsets)`;
  if (lead.testable === 0) {
    return `Precursors: none of the ${what} had enough diagnosed steps before it to test (${MIN_BASELINE + 1} diagnosed steps after the first ${s.spikeWindow}, the last within ${2 * s.diagEvery} steps of the spike).`;
  }
  const ranked = lead.per_stat.filter((p) => p.testable > 0).sort((a, b) => (b.fraction ?? 0) - (a.fraction ?? 0));
  const line = ranked
    .map(
      (p) =>
        `${STAT_LABEL[p.stat]} ${p.with_precursor}/${p.testable} (${pct(p.fraction)}; median lead ${p.median_lead ?? '—'} steps; false alarms at ordinary steps ${pct(p.control_fraction)})`,
    )
    .join('; ');
  let text =
    `Precursors: of ${what}, ${lead.testable} had enough diagnosed steps before them to test; ` +
    `${lead.with_any_precursor} (${pct(lead.any_fraction)}) had at least one statistic outside mean ± ${LEAD_SIGMA}σ of its earlier values up to the spike` +
    (lead.median_lead !== null ? `, with a median lead of ${lead.median_lead} steps` : '') +
    `. Per statistic: ${line}.` +
    (lead.testable < SMALL_COUNT ? ` With ${plural(lead.testable, 'testable event')} this is anecdotal, not a rate.` : '');
  const informative = ranked.filter((p) => p.fraction !== null && p.control_fraction !== null && p.fraction > 2 * p.control_fraction && p.with_precursor >= 2);
  text += informative.length
    ? ` Fired before spikes at more than twice its false-alarm rate (and at least twice): ${informative.map((p) => STAT_LABEL[p.stat]).join(', ')}.`
    : ' No statistic fired before spikes at more than twice its false-alarm rate (and at least twice): as precursors they did not discriminate here.';
  const seedStats: LeadStat[] = ['diag_bimodality_max', 'diag_update_rms'];
  const weak = seedStats
    .map((st) => lead.per_stat.find((p) => p.stat === st)!)
    .filter((p) => p.testable > 0 && !(p.fraction !== null && p.control_fraction !== null && p.fraction > p.control_fraction));
  if (weak.length) {
    const few = lead.testable < SMALL_COUNT ? `On these ${lead.testable} events (too few to be conclusive) this` : 'This';
    text += ` ${few} contradicts the mechanism the stability notes describe (Molybog et al.: before a spike the update distribution turns bimodal and the update norm jumps) for ${weak
      .map((p) => STAT_LABEL[p.stat])
      .join(' and ')}, which moved before spikes no more often than at ordinary steps.`;
  }
  return text;
}

// ---------------------------------------------------------------------------------------------
// Pieces of the page.

function variantTable(results: SpikeResults, colors: Map<string, string>): string {
  const head = [
    'variant',
    'what',
    'LR sensitivity',
    'best final loss',
    'best lr',
    'spikes (early)',
    'runs with spikes',
    'diverged',
    'skipped',
    'rollbacks',
    'precursor',
    'median lead',
  ];
  const num = (s: string) => `<td class="n">${s}</td>`;
  const rows = results.variants.map(
    (v) =>
      `<tr><td><span class="swatch" style="background:${colors.get(v.key)}"></span>${escapeHtml(v.label)}</td>` +
      `<td class="muted desc">${escapeHtml(v.description)}</td>` +
      num(v.lr_sensitivity === null ? `<span class="muted">${v.runs}/${v.planned} runs</span>` : formatFixed(v.lr_sensitivity, 3)) +
      num(formatFixed(v.best_loss, 4)) +
      num(v.best_lr === null ? '—' : escapeHtml(formatNumber(v.best_lr))) +
      num(`${v.spikes} (${v.early_spikes})`) +
      num(`${v.runs_with_spikes}/${v.runs}`) +
      num(`${v.diverged}/${v.runs}`) +
      num(String(v.skipped_steps)) +
      num(String(v.rollbacks)) +
      num(v.lead.testable ? `${v.lead.with_any_precursor}/${v.lead.testable}` : '—') +
      num(v.lead.median_lead === null ? '—' : String(v.lead.median_lead)) +
      '</tr>',
  );
  return `<table class="list results"><thead><tr>${head.map((h) => `<th>${escapeHtml(h)}</th>`).join('')}</tr></thead><tbody>${rows.join('\n')}</tbody></table>`;
}

/** Final loss vs lr, log-x, one line per variant; diverged runs drawn at L0 as open markers. */
function lossVsLrSvg(results: SpikeResults, colors: Map<string, string>): string {
  const runs = results.runs;
  if (runs.length === 0) return '<p class="note">No finished runs yet.</p>';
  const [W, H, L, R, T, B] = [820, 420, 60, 170, 16, 44]; // width, height; left, right, top, bottom margins
  const lrs = results.grid.lrs;
  const lx = lrs.map(Math.log10);
  const x0 = Math.min(...lx),
    x1 = Math.max(...lx);
  const l0 = results.settings.initialLoss;
  const ys = runs.map((r) => r.final_loss);
  const y0 = Math.floor(Math.min(...ys) * 10) / 10 - 0.1,
    y1 = Math.ceil(l0 * 10) / 10 + 0.1;
  const X = (lr: number) => L + (x1 > x0 ? ((Math.log10(lr) - x0) / (x1 - x0)) * (W - L - R) : (W - L - R) / 2);
  const Y = (y: number) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const parts: string[] = [];
  for (let k = Math.ceil(x0 * 2) / 2; k <= x1 + 1e-9; k += 0.5) {
    const lr = 10 ** k;
    parts.push(
      `<line x1="${X(lr)}" x2="${X(lr)}" y1="${T}" y2="${H - B}" class="grid"/><text x="${X(lr)}" y="${H - B + 16}" text-anchor="middle">${escapeHtml(formatNumber(Number(lr.toPrecision(3))))}</text>`,
    );
  }
  const step = y1 - y0 > 3 ? 1 : y1 - y0 > 1.2 ? 0.5 : 0.2;
  for (let y = Math.ceil(y0 / step) * step; y <= y1 + 1e-9; y += step) {
    parts.push(
      `<line x1="${L}" x2="${W - R}" y1="${Y(y)}" y2="${Y(y)}" class="grid"/><text x="${L - 6}" y="${Y(y) + 4}" text-anchor="end">${y.toFixed(1)}</text>`,
    );
  }
  parts.push(
    `<line x1="${L}" x2="${W - R}" y1="${Y(l0)}" y2="${Y(l0)}" class="cap"/><text x="${W - R - 4}" y="${Y(l0) - 4}" text-anchor="end" class="muted">L0 (cap)</text>`,
  );
  results.variants.forEach((v, i) => {
    const pts = runs.filter((r) => r.variant === v.variant && r.eps === v.eps).sort((a, b) => a.lr - b.lr);
    if (pts.length === 0) return;
    const c = colors.get(v.key)!;
    const dash = v.variant === 'baseline' && v.eps !== results.grid.eps_values[0] ? ' stroke-dasharray="5 3"' : '';
    parts.push(
      `<polyline fill="none" stroke="${c}" stroke-width="1.6"${dash} points="${pts.map((p) => `${X(p.lr).toFixed(1)},${Y(p.final_loss).toFixed(1)}`).join(' ')}"/>`,
    );
    for (const p of pts) {
      const title = `${v.label}, lr ${p.lr}: ${p.diverged ? `diverged${p.diverged_at !== null ? ` at step ${p.diverged_at}` : ''} (capped at L0)` : `final val loss ${formatFixed(p.final_loss, 4)}`}; ${plural(p.spikes, 'spike')}`;
      parts.push(
        p.diverged
          ? `<circle cx="${X(p.lr).toFixed(1)}" cy="${Y(p.final_loss).toFixed(1)}" r="4" fill="#fff" stroke="${c}" stroke-width="1.6"><title>${escapeHtml(title)}</title></circle>`
          : `<circle cx="${X(p.lr).toFixed(1)}" cy="${Y(p.final_loss).toFixed(1)}" r="3" fill="${c}"><title>${escapeHtml(title)}</title></circle>`,
      );
    }
    const ly = T + 14 + i * 17;
    parts.push(
      `<line x1="${W - R + 12}" x2="${W - R + 32}" y1="${ly - 4}" y2="${ly - 4}" stroke="${c}" stroke-width="2"${dash}/><text x="${W - R + 38}" y="${ly}">${escapeHtml(v.label)}</text>`,
    );
  });
  parts.push(`<text x="${(L + W - R) / 2}" y="${H - 6}" text-anchor="middle">learning rate (log scale)</text>`);
  parts.push(`<text x="14" y="${(T + H - B) / 2}" text-anchor="middle" transform="rotate(-90 14 ${(T + H - B) / 2})">final val loss (nats)</text>`);
  return `<svg class="lrplot" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="final loss vs learning rate">${parts.join('')}</svg>`;
}

function spikeMatrix(results: SpikeResults, colors: Map<string, string>): string {
  const lrs = results.grid.lrs;
  const head = `<tr><th>variant</th>${lrs.map((lr) => `<th class="n">lr ${escapeHtml(formatNumber(lr))}</th>`).join('')}</tr>`;
  const rows = results.variants.map((v) => {
    const cells = lrs.map((lr) => {
      const r = results.runs.find((x) => x.variant === v.variant && x.eps === v.eps && x.lr === lr);
      if (!r) return '<td class="n muted">·</td>';
      const shade = r.spikes > 0 ? ` style="background:rgba(220,38,38,${Math.min(0.55, 0.12 + 0.1 * r.spikes)})"` : '';
      const div = r.diverged ? `<br><span class="div">diverged${r.diverged_at !== null ? ` @${r.diverged_at}` : ''}</span>` : '';
      const rec = r.skipped_steps || r.rollbacks ? `<br><span class="muted">${r.skipped_steps} skip · ${r.rollbacks} rb</span>` : '';
      const loss = r.diverged ? '' : `<br><span class="muted">${formatFixed(r.val_loss, 3)}</span>`;
      return `<td class="n"${shade} title="${escapeHtml(r.run_dir)}"><b>${r.spikes}</b>${loss}${div}${rec}</td>`;
    });
    return `<tr><td><span class="swatch" style="background:${colors.get(v.key)}"></span>${escapeHtml(v.label)}</td>${cells.join('')}</tr>`;
  });
  return `<table class="list matrix"><thead>${head}</thead><tbody>${rows.join('\n')}</tbody></table>`;
}

function leadTable(results: SpikeResults): string {
  const head = ['statistic', 'testable', 'with precursor', 'fraction', 'median lead (steps)', 'control: tested', 'control: fired', 'false-alarm rate'];
  const rows = results.lead.per_stat.map(
    (p) =>
      `<tr><td>${escapeHtml(STAT_LABEL[p.stat])} <span class="muted">${escapeHtml(p.stat)}</span></td>` +
      [p.testable, p.with_precursor, pct(p.fraction), p.median_lead ?? '—', p.control_tested, p.control_flagged, pct(p.control_fraction)]
        .map((x) => `<td class="n">${x}</td>`)
        .join('') +
      '</tr>',
  );
  return `<table class="list results"><thead><tr>${head.map((h) => `<th>${escapeHtml(h)}</th>`).join('')}</tr></thead><tbody>${rows.join('\n')}</tbody></table>`;
}

function spikeList(results: SpikeResults): string {
  const rows: string[] = [];
  for (const r of results.runs) {
    for (const e of r.events) {
      const leads = LEAD_STATS.map((st) => {
        const p = e.precursors[st];
        const v = !p?.testable ? '<span class="muted">n/a</span>' : p.lead === null ? 'none' : `${p.lead}${p.direction === 'down' ? '↓' : '↑'}`;
        return `<td class="n">${v}</td>`;
      });
      rows.push(
        `<tr><td>${escapeHtml(r.run_dir)}</td><td>${e.kind}</td><td class="n">${e.start}</td><td class="n">${e.peak}</td>` +
          `<td class="n">${e.end ?? '—'}</td><td class="n">${Number.isFinite(e.height) ? e.height.toFixed(2) : '∞'}</td>${leads.join('')}</tr>`,
      );
    }
  }
  if (rows.length === 0) return '<p class="note">No spikes or divergences.</p>';
  const head = ['run', 'kind', 'start', 'peak', 'recovered at', 'height (nats)', ...LEAD_STATS];
  return `<details${rows.length <= 40 ? ' open' : ''}><summary>Every spike and divergence (${rows.length}) with its lead time per statistic</summary>
<table class="list spikes"><thead><tr>${head.map((h) => `<th>${escapeHtml(h)}</th>`).join('')}</tr></thead><tbody>${rows.join('\n')}</tbody></table>
<p class="note">Lead in steps before the spike's start; ↑/↓: the statistic was above/below its band; none: inside the band at the last diagnosed step; n/a: not enough diagnosed steps before it (or none within ${2 * results.settings.diagEvery} steps).</p></details>`;
}

function payloadOf(results: SpikeResults, colors: Map<string, string>, curves: (run: SpikeRunResult) => (number | null)[]): ChartPayload {
  const data: ChartPayload['data'] = {};
  const panels: PanelSpec[] = [];
  for (const lr of results.grid.lrs) {
    const panel: PanelSpec = { title: `Training loss at lr ${formatNumber(lr)}`, yLabel: 'loss (nats)', logY: true, series: [] };
    for (const v of results.variants) {
      const run = results.runs.find((r) => r.variant === v.variant && r.eps === v.eps && r.lr === lr);
      if (!run) continue;
      const y = curves(run);
      if (!y.some((x) => x !== null)) continue;
      const key = `loss:${v.key}:${lr}`;
      data[key] = chartSeries({ x: y.map((_, i) => i + 1), y });
      panel.series.push({ key, label: v.label, color: colors.get(v.key) });
    }
    if (panel.series.length) panels.push(panel);
  }
  return { panels, data, events: [] };
}

const EXTRA_CSS = `
section.table { overflow-x: auto; }
td.desc { min-width: 18em; }
table.results td:first-child, table.matrix td:first-child { white-space: nowrap; }
table.results td.n, table.matrix td.n, table.spikes td.n { text-align: right; white-space: nowrap; padding-left: 10px; }
table.results th, table.matrix th, table.spikes th { white-space: nowrap; padding-left: 10px; }
table.matrix td { vertical-align: top; font-size: 12px; }
table.spikes { font-size: 12px; }
.muted { color: var(--muted); }
.div { color: #9a3412; font-weight: 600; }
ul.findings li { margin: 4px 0; }
svg.lrplot { max-width: 100%; height: auto; font: 11px system-ui, sans-serif; }
svg.lrplot .grid { stroke: #e5e7eb; }
svg.lrplot .cap { stroke: #9a3412; stroke-dasharray: 3 3; }
svg.lrplot .muted { fill: #9a3412; }
`;

function renderSpikeReport(outDir: string, results: SpikeResults, curves: (run: SpikeRunResult) => (number | null)[]): string {
  const colors = new Map(results.variants.map((v, i) => [v.key, PALETTE[i % PALETTE.length]]));
  const s = results.settings;
  const c = s.config;
  const facts: [string, string][] = [
    ...modelFacts(s, results.params),
    ['runs', `${results.runs.length} of ${results.grid.runs}`],
    ['steps', `${s.steps} per run, batch ${s.batch} × ${c.blockSize} tokens`],
    ['optimizer', `AdamW (β 0.9, 0.95, λ 0.1), clip ${s.clip}`],
    ['schedule', `constant lr, warm-up ${s.warmup}`],
    ['spike detector', `window ${s.spikeWindow}, ${s.spikeThreshold}σ or +${s.spikeJump * 100}% over EMA`],
    ['diagnostics', `every ${s.diagEvery} steps`],
    ['threads', String(s.threads)],
    ['L0', `ln ${c.vocabSize} = ${s.initialLoss.toFixed(3)}`],
    ['wall time', formatDuration(results.wall_seconds)],
    ['status', results.complete ? 'complete' : results.interrupted ? 'interrupted (run again with the same --out to finish)' : 'incomplete'],
  ];

  const title = 'Keel spike experiment';
  const payload = payloadOf(results, colors, curves);
  return `${pageHead(
    title,
    path.resolve(outDir),
    facts.map(([label, value]) => ({ label, value })),
    EXTRA_CSS,
  )}
<section class="findings">
<h2>What we measured</h2>
<ul class="findings">${spikeFindings(results)
    .map((p) => `<li>${escapeHtml(p)}</li>`)
    .join('\n')}</ul>
<p class="note">Generated from results.json. Grid: ${escapeHtml(results.grid.description)}.</p>
</section>
<section class="table">
<h2>Per variant</h2>
${variantTable(results, colors)}
<p class="note">LR sensitivity (Wortsman et al. 2023): the mean over the lr grid of min(final loss, L0) − the best final loss of the grid, with the final
validation loss of each run and L0 = ln ${c.vocabSize} for a diverged run (non-finite loss, or final loss ≥ L0). Spikes are counted offline in each run's
training loss (steps abandoned by a rollback dropped, its trigger kept), before any divergence, with the detector above; (early): of those, excursions
of the loss more than ${EARLY_MARGIN} nats above L0 in the first ${s.spikeWindow} steps, before the detector's window is full (the no-warm-up blow-up).
"precursor": events (spikes, excursions, divergence onsets) before which at least one watched statistic was outside its band, of those that could be tested.</p>
</section>
<section class="chart">
<h2>Final loss vs learning rate</h2>
${lossVsLrSvg(results, colors)}
<p class="note">Open markers: diverged runs, drawn at the cap L0. Dashed: the baseline at a larger ε. Hover a marker for its numbers.</p>
</section>
<section class="table">
<h2>Spikes per run</h2>
${spikeMatrix(results, colors)}
<p class="note">Bold: spikes found in the run's training loss (before any divergence); below it the final validation loss, or where it diverged; skips and rollbacks done by the trainer.</p>
</section>
<section class="table">
<h2>Did the diagnostics move before the spikes?</h2>
${leadTable(results)}
<p class="note">For each spike starting at step S and each statistic: the diagnosed values before S (every ${s.diagEvery} steps; the first ${s.spikeWindow} steps
and earlier spikes left out). The precursor starts at the earliest diagnosed step s from which every value up to the last one before S lies outside mean ± ${LEAD_SIGMA}σ
of all the diagnosed values before s (at least ${MIN_BASELINE}); lead = S − s. A statistic that drifts during training leaves that band too: the control runs the same test at
every ordinary diagnosed step (past the first ${s.spikeWindow}, not inside a spike) with no spike in the next ${s.spikeWindow} steps: a precursor is informative only when it fires before spikes clearly more often than there.</p>
${spikeList(results)}
</section>
<main id="panels"></main>
<noscript><p class="note">The charts need JavaScript; the numbers above do not.</p></noscript>
<section class="config"><details><summary>results.json</summary><pre>${escapeHtml(JSON.stringify(results, null, 2))}</pre></details></section>
${chartScripts(payload)}
</body>
</html>
`;
}

// The report's per-tensor diagnostics: metrics.jsonl lines with a `diag` object (as
// src/monitor/diagnostics.ts writes them) become heatmap data in the embedded payload
// (tensors × diagnosed steps, grouped by layer), spikes and interventions become markers, and
// the existing line charts and parsing are untouched.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { paramLayout } from '../src/model/params.ts';
import { HEATMAP_MAX_COLUMNS, tensorGroup, type HeatmapPayload } from '../src/report/heatmap.ts';
import { writeReport, type PanelSpec } from '../src/report/html.ts';
import { parseMetrics } from '../src/report/metrics.ts';
import { MICRO, tempRoot } from './helpers.ts';

const { fresh } = tempRoot('report-diag');

interface Payload {
  panels: PanelSpec[];
  data: Record<string, { x: number[]; y: (number | null)[] }>;
  events: { event: string; step: number | null; color: string }[];
  heatmaps?: HeatmapPayload;
}

function payloadOf(html: string): Payload {
  const m = html.match(/<script type="application\/json" id="keel-data">([\s\S]*?)<\/script>/);
  assert.ok(m, 'embedded data block');
  return JSON.parse(m[1]);
}

function report(lines: string[]): { html: string; p: Payload } {
  const dir = fresh('run');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'metrics.jsonl'), lines.join('\n') + '\n');
  const html = fs.readFileSync(writeReport(dir), 'utf8');
  return { html, p: payloadOf(html) };
}

const LAYOUT = paramLayout({ ...MICRO, nLayer: 2 }); // 2 embeddings, 2 × 12 per layer, 2 final: 28 tensors
const NAMES = LAYOUT.tensors.map((t) => t.name);

/** A deterministic stand-in for a diagnostics record: values encode (tensor, step) so the test can find them. */
function diagLine(step: number, bins = 41, names = NAMES): string {
  const diag: Record<string, unknown> = {};
  names.forEach((name, i) => {
    const hist = new Array(bins).fill(0);
    hist[(i + step / 50) % bins] = 1;
    diag[name] = {
      grad_rms: 1e-3 * (i + 1),
      update_rms: 1e-4 * (1 + step / 100),
      param_rms: 0.02,
      max_abs: 0.1 + i / 100,
      zero_frac: 0,
      eps_frac: name.includes('wte') ? Math.min(1, step / 250) : 0,
      decoupling: 10 ** -(i % 5),
      cos_g: step === 50 ? null : Math.sin(i + step),
      cos_gm: 0.5,
      cos_u: 0.1,
      skewness: 0,
      kurtosis: 3,
      bimodality: i === 0 && step >= 200 ? 0.9 : 0.3,
      mass_near_1: 0.01,
      hist,
    };
  });
  return JSON.stringify({ step, diag, diag_grad_rms: 1e-2, diag_eps_frac: step / 1000, diag_cos_g: null, diag_bimodality_max: 0.9 });
}

function trainLines(steps: number): string[] {
  return Array.from({ length: steps }, (_, i) =>
    JSON.stringify({ step: i + 1, loss: 5 - i / 200, lr: 1e-3, grad_norm: 1, tokens: 1024 * (i + 1), tokens_per_s: 5000, ms: 200 }),
  );
}

test('report: diag lines become per-tensor heatmaps; spikes and interventions become markers', () => {
  const lines = trainLines(500);
  for (let s = 50; s <= 500; s += 50) lines.push(diagLine(s));
  lines.push(JSON.stringify({ event: 'checkpoint', step: 250, dir: 'checkpoints/step-250' }));
  lines.push(JSON.stringify({ event: 'spike', step: 230, metric: 'loss', value: 9.1, z: 8.5 }));
  lines.push(JSON.stringify({ event: 'rollback', step: 240, to: 130 }));
  lines.push(
    diagLine(300)
      .replace('"step":300', '"step":300')
      .replace(/"param_rms":0.02/g, '"param_rms":0.03'),
  ); // replayed step: later line wins
  lines.push(diagLine(350).slice(0, 200)); // torn line
  const { html, p } = report(lines);

  const h = p.heatmaps!;
  assert.ok(h, 'heatmap payload present');
  assert.deepEqual(h.steps, [50, 100, 150, 200, 250, 300, 350, 400, 450, 500]);
  assert.equal(h.droppedColumns, 0);
  assert.deepEqual(h.tensors, NAMES, 'rows in layout order');
  assert.equal(h.labels[2], 'ln_1.weight');
  assert.equal(h.labels[4], 'attn.c_attn.weight');
  assert.deepEqual(h.groups, [
    { label: 'embeddings', start: 0, count: 2 },
    { label: 'layer 0', start: 2, count: 12 },
    { label: 'layer 1', start: 14, count: 12 },
    { label: 'final', start: 26, count: 2 },
  ]);
  assert.deepEqual(h.initial, ['eps_frac', 'update_rms', 'bimodality', 'cos_g', 'decoupling']);
  for (const k of ['eps_frac', 'update_rms', 'bimodality', 'cos_g', 'decoupling', 'kurtosis', 'cos_u', 'zero_frac', 'max_abs']) {
    assert.ok(
      h.stats.some((s) => s.key === k),
      `stat ${k} offered`,
    );
  }
  assert.equal(h.stats.find((s) => s.key === 'decoupling')!.scale, 'log');
  assert.equal(h.stats.find((s) => s.key === 'cos_g')!.scale, 'diverging');
  assert.equal(h.stats.find((s) => s.key === 'bimodality')!.ref, 5 / 9);

  // Values: [row][column], as logged.
  const wte = NAMES.indexOf('transformer.wte.weight');
  assert.deepEqual(h.values.eps_frac[wte], [0.2, 0.4, 0.6, 0.8, 1, 1, 1, 1, 1, 1]);
  assert.deepEqual(h.values.eps_frac[NAMES.indexOf('transformer.h.1.mlp.c_fc.weight')], new Array(10).fill(0));
  assert.equal(h.values.cos_g[3][0], null, 'null stays null');
  assert.equal(h.values.cos_g[3][1], Math.sin(3 + 100));
  assert.equal(h.values.bimodality[0][3], 0.9);
  assert.equal(h.values.param_rms[5][5], 0.03, 'the replayed step 300 wins');
  assert.equal(h.values.param_rms[5][4], 0.02);
  assert.equal(h.values.grad_rms[27][9], 0.028);
  const hist = h.hist![1][2]!; // tensor 1, step 150
  assert.equal(hist.length, 41);
  assert.equal(hist[(1 + 3) % 41], 1);

  // Markers: the spike and the rollback, not the routine checkpoint; colours as the line charts use.
  assert.deepEqual(
    h.markers.map((m) => [m.event, m.step]),
    [
      ['spike', 230],
      ['rollback', 240],
    ],
  );
  assert.equal(h.markers[0].color, p.events.find((e) => e.event === 'spike')!.color);

  // The section and the drawing code are in the page, still one offline file.
  assert.match(html, /<section class="heatmaps" id="heatmaps">/);
  assert.match(html, /28 parameter tensors/);
  assert.match(html, /every 50/);
  assert.ok(html.includes('heatmap-cards'));
  assert.doesNotMatch(html, /<script[^>]*\bsrc=/i);

  // The line charts are untouched: diag lines add only their top-level numbers to the rows.
  assert.deepEqual(
    p.panels.map((x) => x.title),
    ['Loss', 'Learning rate', 'Gradient norm', 'Throughput'],
  );
  assert.equal(p.data.loss.x.length, 500);
});

test('parseMetrics: diag records are collected apart from the numeric rows', () => {
  const m = parseMetrics(
    [
      '{"step": 1, "loss": 2}',
      '{"step": 50, "diag": {"w": {"grad_rms": 0.1, "cos_g": null, "eps_frac": NaN, "note": "x", "hist": [0.5, 0.5]}, "junk": 3}, "diag_grad_rms": 0.1}',
      '{"step": 50, "loss": 1.5}',
      '{"diag": {"w": {}}}',
    ].join('\n'),
  );
  assert.deepEqual(m.rows, [
    { step: 1, values: { loss: 2 } },
    { step: 50, values: { diag_grad_rms: 0.1, loss: 1.5 } },
  ]);
  assert.equal(m.diag.length, 1);
  assert.equal(m.diag[0].step, 50);
  assert.deepEqual([...m.diag[0].tensors.keys()], ['w']);
  assert.deepEqual(m.diag[0].tensors.get('w'), { stats: { grad_rms: 0.1, cos_g: null, eps_frac: null }, hist: [0.5, 0.5] });
  assert.equal(m.skippedLines, 1, 'a diag line without a step');
});

test('report: long runs keep at most HEATMAP_MAX_COLUMNS columns, including those just before each spike', () => {
  const names = NAMES;
  const lines = trainLines(10);
  for (let s = 10; s <= 10_000; s += 10) lines.push(diagLine(s, 41, names));
  lines.push(JSON.stringify({ event: 'spike', step: 7_777, metric: 'loss' }));
  const { p } = report(lines);
  const h = p.heatmaps!;
  assert.ok(h.steps.length <= HEATMAP_MAX_COLUMNS, `${h.steps.length} columns`);
  assert.equal(h.droppedColumns, 1000 - h.steps.length);
  assert.ok(h.steps.includes(7_770) && h.steps.includes(7_760), 'the two diagnosed steps before the spike');
  assert.equal(h.steps.at(-1), 10_000);
  assert.equal(h.steps[0], 10);
  assert.ok(h.steps.every((s, i) => i === 0 || s > h.steps[i - 1]));
  assert.equal(h.hist, null, '28 tensors × ~400 columns × 41 bins: histograms left out for size');
  assert.equal(h.values.eps_frac[0].length, h.steps.length);
});

test('report: no diag lines, no heatmaps; a typical run stays small', () => {
  const { html, p } = report(trainLines(20));
  assert.equal(p.heatmaps, undefined);
  assert.doesNotMatch(html, /id="heatmaps"/);
  // 1400 steps every 50 on a 28-tensor model: the heatmap payload is a few hundred kB at most.
  const lines = trainLines(1400);
  for (let s = 50; s <= 1400; s += 50) lines.push(diagLine(s));
  const big = report(lines);
  const size = JSON.stringify(big.p.heatmaps).length;
  assert.ok(size < 300_000, `${size} bytes`);
  assert.ok(big.p.heatmaps!.hist !== null);
});

test('tensorGroup: layers, embeddings, final norm, foreign names', () => {
  assert.deepEqual(tensorGroup('transformer.h.11.mlp.c_proj.bias'), { group: 'layer 11', label: 'mlp.c_proj.bias' });
  assert.deepEqual(tensorGroup('transformer.wpe.weight'), { group: 'embeddings', label: 'wpe.weight' });
  assert.deepEqual(tensorGroup('transformer.ln_f.bias'), { group: 'final', label: 'ln_f.bias' });
  assert.deepEqual(tensorGroup('encoder.w'), { group: 'encoder', label: 'w' });
  assert.deepEqual(tensorGroup('param'), { group: '', label: 'param' });
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { UserError } from '../src/errors.ts';
import { defaultPanels, writeReport, type PanelSpec } from '../src/report/html.ts';
import { downsampleMinMax } from '../src/report/downsample.ts';
import { parseMetrics } from '../src/report/metrics.ts';
import { configFacts } from '../src/report/summary.ts';

interface Payload {
  panels: PanelSpec[];
  data: Record<string, { x: number[]; y: (number | null)[] }>;
  events: { event: string; step: number | null; fields: Record<string, unknown>; color: string }[];
}

function tmpRun(lines: string[] | string, config?: unknown): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-report-'));
  fs.writeFileSync(path.join(dir, 'metrics.jsonl'), Array.isArray(lines) ? lines.join('\n') : lines);
  if (config !== undefined) fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  return dir;
}

function payloadOf(html: string): Payload {
  const m = html.match(/<script type="application\/json" id="keel-data">([\s\S]*?)<\/script>/);
  assert.ok(m, 'embedded data block');
  return JSON.parse(m[1]);
}

const train = (step: number, loss: number | null, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ step, loss, lr: 1e-3 * step, grad_norm: 1 + step / 10, tokens: 1024 * step, tokens_per_s: 5000 + step, ms: 200, ...extra });

function syntheticLines(): string[] {
  const lines: string[] = [];
  for (let s = 1; s <= 20; s++) {
    lines.push(train(s, s === 7 ? null : 5 - s / 10));
    if (s % 5 === 0) lines.push(JSON.stringify({ step: s, val_loss: 5.2 - s / 10 }));
  }
  lines.push(JSON.stringify({ event: 'checkpoint', step: 10, dir: 'checkpoints/step-10' }));
  lines.push(JSON.stringify({ event: 'resume', step: 10, from: 'checkpoints/step-10' }));
  lines.push(train(12, 9.75)); // replayed after the resume: the later value wins
  lines.push('{"step": 13, "loss": NaN, "lr": 0.013}'); // bare NaN, as Python writes it
  lines.push(JSON.stringify({ event: 'spike', step: 15, z: 8.5 }));
  lines.push('{"step": 21, "loss": 3.'); // torn last line
  return lines;
}

test('report: one self-contained HTML file with inlined uPlot and the merged data', () => {
  const dir = tmpRun(syntheticLines(), {
    model: { nLayer: 4, nHead: 4, nEmbd: 128, blockSize: 128, vocabSize: 256 },
    params: 816128,
    data: 'sotu',
    train: { steps: 20, batch: 8, lr: 0.001, seed: 1337 },
  });
  const file = writeReport(dir, { title: 'synthetic <run>' });
  assert.equal(file, path.join(dir, 'report.html'));
  assert.deepEqual(fs.readdirSync(dir).sort(), ['config.json', 'metrics.jsonl', 'report.html']); // no temp left
  const html = fs.readFileSync(file, 'utf8');

  const uplotJs = fs.readFileSync(createRequire(import.meta.url).resolve('uplot/dist/uPlot.iife.min.js'), 'utf8');
  assert.ok(html.includes(uplotJs.slice(0, 2000)), 'uPlot script inlined');
  assert.ok(html.includes('.u-legend'), 'uPlot stylesheet inlined');
  assert.doesNotMatch(html, /<script[^>]*\bsrc=/i);
  assert.doesNotMatch(html, /<link[^>]*\bhref=["']?(https?:)?\/\//i);
  assert.doesNotMatch(html, /(src|href)=["']?https?:/i);
  assert.ok(html.includes('synthetic &#60;run&#62;'), 'title escaped');
  assert.ok(html.includes('4 layers · 4 heads · C 128'), 'model facts in the header');
  assert.ok(html.includes('1,337'), 'seed shown exactly');

  const p = payloadOf(html);
  assert.deepEqual(
    p.panels.map((x) => x.title),
    ['Loss', 'Learning rate', 'Gradient norm', 'Throughput'],
  );
  assert.deepEqual(
    p.panels[0].series.map((s) => s.key),
    ['loss', 'val_loss'],
    'LAWA/EMA keys absent: skipped',
  );
  assert.equal(p.panels[2].logY, true);
  const loss = p.data.loss;
  assert.deepEqual(
    loss.x,
    Array.from({ length: 20 }, (_, i) => i + 1),
    'torn step 21 dropped',
  );
  assert.equal(loss.y[loss.x.indexOf(12)], 9.75, 'later line wins');
  assert.equal(loss.y[loss.x.indexOf(7)], null, 'null stays a gap');
  assert.equal(loss.y[loss.x.indexOf(13)], null, 'NaN becomes a gap');
  assert.deepEqual(p.data.val_loss.x, [5, 10, 15, 20]);
  assert.equal(p.data.lr.y[p.data.lr.x.indexOf(13)], 0.013);
  assert.deepEqual(
    p.events.map((e) => [e.event, e.step]),
    [
      ['checkpoint', 10],
      ['resume', 10],
      ['spike', 15],
    ],
  );
  assert.equal(p.events[2].fields.z, 8.5);

  assert.match(html, /best val loss<\/th><td>3\.2 \(step 20\)/);
  assert.match(html, /skipped lines<\/th><td>1 /);
  assert.match(html, /Events \(3\)/);
});

test('report: missing keys and empty panels are skipped; extra panels are added', () => {
  const lines = [1, 2, 3].map((s) => JSON.stringify({ step: s, loss: 3 - s / 10, noise_scale: 100 * s, tok: null }));
  const dir = tmpRun(lines);
  const extra: PanelSpec[] = [
    { title: 'Noise scale', yLabel: 'B_noise', logY: true, series: [{ key: 'noise_scale', label: 'B_noise' }] },
    { title: 'Never logged', series: [{ key: 'nothing_here', label: 'x' }] },
  ];
  const html = fs.readFileSync(writeReport(dir, { extraPanels: extra }), 'utf8');
  const p = payloadOf(html);
  assert.deepEqual(
    p.panels.map((x) => x.title),
    ['Loss', 'Noise scale'],
  );
  assert.deepEqual(p.data.noise_scale.y, [100, 200, 300]);
  assert.equal(defaultPanels.length, 6, 'defaults untouched by extra panels');
});

test('report: long runs are downsampled but keep their spikes', () => {
  const lines: string[] = [];
  for (let s = 1; s <= 30_000; s++) {
    const loss = s === 12_345 ? 50 : s === 23_456 ? 0.01 : 2 + Math.sin(s);
    lines.push(JSON.stringify({ step: s, loss }));
  }
  const dir = tmpRun(lines.join('\n') + '\n');
  const p = payloadOf(fs.readFileSync(writeReport(dir, { maxPoints: 1000 }), 'utf8'));
  const loss = p.data.loss;
  assert.ok(loss.x.length <= 1000 && loss.x.length > 900, `kept ${loss.x.length} points`);
  assert.equal(loss.y[loss.x.indexOf(12_345)], 50);
  assert.equal(loss.y[loss.x.indexOf(23_456)], 0.01);
  assert.equal(loss.x[0], 1);
  assert.equal(loss.x.at(-1), 30_000);
});

test('downsampleMinMax keeps every bucket extreme, the endpoints and gaps', () => {
  const n = 100_003;
  const x = Array.from({ length: n }, (_, i) => i * 10);
  const y: (number | null)[] = x.map((_, i) => Math.sin(i * 0.37) * Math.cos(i * 0.011));
  y[5_000] = 1e6;
  y[77_777] = -1e6;
  y[40_000] = null;
  const out = downsampleMinMax({ x, y }, 4000);
  assert.ok(out.x.length <= 4000, `${out.x.length} points`);
  assert.equal(out.x.length, out.y.length);
  assert.ok(
    out.x.every((v, i) => i === 0 || v > out.x[i - 1]),
    'x stays increasing',
  );
  assert.equal(out.y[out.x.indexOf(50_000)], 1e6);
  assert.equal(out.y[out.x.indexOf(777_770)], -1e6);
  assert.equal(out.y[out.x.indexOf(400_000)], null, 'gap survives');
  assert.deepEqual([out.x[0], out.x.at(-1)], [0, (n - 1) * 10]);
  const finite = y.filter((v): v is number => v !== null);
  const kept = out.y.filter((v): v is number => v !== null);
  assert.equal(Math.max(...kept), Math.max(...finite));
  assert.equal(Math.min(...kept), Math.min(...finite));
  const small = downsampleMinMax({ x: [1, 2], y: [3, null] });
  assert.deepEqual(small, { x: [1, 2], y: [3, null] });
});

test('report: missing or empty metrics give a UserError naming the file', () => {
  const missing = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-report-'));
  assert.throws(
    () => writeReport(missing),
    (e: unknown) => e instanceof UserError && /no metrics log at .*metrics\.jsonl/.test(e.message),
  );
  assert.throws(() => writeReport(path.join(missing, 'nope')), UserError);
  const empty = tmpRun('');
  assert.throws(
    () => writeReport(empty),
    (e: unknown) => e instanceof UserError && /file is empty/.test(e.message),
  );
  const eventsOnly = tmpRun([JSON.stringify({ event: 'resume', step: 3 }), 'garbage']);
  assert.throws(
    () => writeReport(eventsOnly),
    (e: unknown) => e instanceof UserError && /no lines with a numeric "step"/.test(e.message),
  );
  const badConfig = tmpRun([train(1, 2)]);
  fs.writeFileSync(path.join(badConfig, 'config.json'), '{oops');
  assert.throws(
    () => writeReport(badConfig),
    (e: unknown) => e instanceof UserError && /config\.json is not valid JSON/.test(e.message),
  );
  assert.ok(!fs.existsSync(path.join(empty, 'report.html')));
});

test('parseMetrics merges by step field by field and keeps events in order', () => {
  const m = parseMetrics(
    [
      '{"step": 2, "loss": 1, "lr": 0.1}',
      '{"step": 1, "loss": 2}',
      '{"step": 2, "val_loss": 1.5}',
      '{"step": 2, "loss": 0.5, "note": "text is not a metric"}',
      '[1, 2]',
      '{"event": "spike", "step": 2, "z": 9}',
      '{"event": "note"}',
    ].join('\n'),
  );
  assert.deepEqual(m.rows, [
    { step: 1, values: { loss: 2 } },
    { step: 2, values: { loss: 0.5, lr: 0.1, val_loss: 1.5 } },
  ]);
  assert.deepEqual(m.events, [
    { event: 'spike', step: 2, fields: { z: 9 } },
    { event: 'note', step: null, fields: {} },
  ]);
  assert.equal(m.skippedLines, 1);
});

test('configFacts finds keys at any depth and spelling', () => {
  const facts = configFacts({ model: 'tiny', optim: { batch_size: 32, learningRate: 0.0006 }, dataset: 'x.txt' });
  assert.deepEqual(facts, [
    { label: 'model', value: 'tiny' },
    { label: 'batch', value: '32' },
    { label: 'lr', value: '6e-4' },
    { label: 'data', value: 'x.txt' },
  ]);
  assert.deepEqual(configFacts(undefined), []);
});

test('configFacts states the optimizer, its options and its state memory (as the trainer writes config.json)', () => {
  const facts = configFacts({
    params: 1000,
    train: { optimizer: 'tiger', optimizerOptions: { beta: 0.9, lazyEmbedding: true } },
    optimizer_state_bytes: 4 * 2 ** 20,
    optimizer_state_bytes_per_param: 4,
  });
  const get = (label: string) => facts.find((f) => f.label === label)?.value;
  assert.equal(get('optimizer'), 'tiger');
  assert.equal(get('optimizer options'), 'beta=0.9 lazyEmbedding=true');
  assert.equal(get('optimizer state'), '4 MiB (4 B/param)');
});

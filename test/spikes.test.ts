// Loss-spike detection (src/monitor/spikes.ts), the log readers (src/io/logs.ts) and
// `keel analyze`: the detector on synthetic series with known spikes (precision and recall over
// many seeds), its contract (inactive until the window fills, NaN, σ not inflated, exact
// resume), and every reader on small files written here, TensorBoard included.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { SPIKE_DEFAULTS, SpikeDetector, analyzeSeries, defaultSpikeOptions, type SpikeEvent } from '../src/monitor/spikes.ts';
import { crc32c, maskedCrc32c, parseCsv, parseJsonl, readLog, resolveMetric } from '../src/io/logs.ts';
import { UserError } from '../src/errors.ts';
import { Rng } from '../src/util/rng.ts';
import { keel, tempRoot } from './helpers.ts';

const { fresh } = tempRoot('spikes');

// ---------------------------------------------------------------------------------------------
// Synthetic loss curves with known spikes.

interface TrueSpike {
  start: number;
  /** First step after the injected bump is over (exclusive); Infinity for a level shift. */
  end: number;
  height: number;
}

/**
 * A decaying loss curve 2.6 + 1.2·e^(−t/1200) with N(0, 0.03²) noise, and injected spikes every
 * 100–250 steps: a linear rise over 1–3 steps to a height of 0.2–3 nats (6.7–100σ of the noise;
 * the window's σ also holds the trend and earlier spikes' tails, so the smallest ones sit near
 * the 6σ threshold), then an exponential decay over 1–60 steps. The last spike is a level shift
 * that never comes back. 30 single-step bumps of 3σ are distractors that must not be flagged.
 */
function syntheticRun(seed: number, n = 3000): { values: number[]; truth: TrueSpike[] } {
  const rng = new Rng(seed);
  const noise = 0.03;
  const bump = new Float64Array(n);
  const truth: TrueSpike[] = [];
  const durations = [1, 2, 5, 15, 40, 60];
  let s = 300 + rng.int(100);
  while (s < n - 500) {
    const rise = 1 + rng.int(3);
    const d = durations[rng.int(durations.length)];
    const h = 0.2 + 2.8 * rng.uniform();
    for (let k = 0; k < rise; k++) bump[s + k] = (h * (k + 1)) / rise;
    for (let k = 0; k < d; k++) bump[s + rise + k] = h * Math.exp(-(k + 1) / (d / 4));
    truth.push({ start: s, end: s + rise + d, height: h });
    s += 100 + rng.int(150);
  }
  const shift = n - 200 - rng.int(100);
  const h = 0.5 + rng.uniform();
  for (let t = shift; t < n; t++) bump[t] = h;
  truth.push({ start: shift, end: Infinity, height: h });
  for (let i = 0; i < 30; i++) {
    const t = 200 + rng.int(n - 400);
    if (bump[t] === 0) bump[t] += 3 * noise;
  }
  const values = Array.from({ length: n }, (_, t) => 2.6 + 1.2 * Math.exp(-t / 1200) + noise * rng.normal() + bump[t]);
  return { values, truth };
}

/** Detections matched to true spikes: a detection counts when its start lies inside a true bump. */
function score(truth: TrueSpike[], detected: { start: number }[]): { tp: number; fp: number; fn: number; matches: Map<TrueSpike, number> } {
  const matches = new Map<TrueSpike, number>();
  let fp = 0;
  detected.forEach((d, i) => {
    const t = truth.find((t) => d.start >= t.start && d.start < t.end && !matches.has(t));
    if (t) matches.set(t, i);
    else fp++;
  });
  return { tp: matches.size, fp, fn: truth.length - matches.size, matches };
}

test('synthetic runs: precision and recall ≥ 0.95 over 20 seeds; recovery found, the level shift never recovers', () => {
  let tp = 0;
  let fp = 0;
  let fn = 0;
  let recoveredOk = 0;
  let recovering = 0;
  for (let seed = 1; seed <= 20; seed++) {
    const { values, truth } = syntheticRun(seed);
    const { spikes, summary } = analyzeSeries(
      values.map((value, step) => ({ step, value })),
      { metric: 'loss' },
    );
    const r = score(truth, spikes);
    tp += r.tp;
    fp += r.fp;
    fn += r.fn;
    assert.equal(summary.points, values.length);
    assert.equal(summary.active_from, SPIKE_DEFAULTS.window);
    // The level shift is detected and still open at the end.
    const shift = truth[truth.length - 1];
    const i = r.matches.get(shift);
    assert.ok(i !== undefined, `seed ${seed}: the level shift at ${shift.start} was missed`);
    assert.equal(spikes[i].recovered, false);
    assert.equal(spikes[i].end, null);
    assert.equal(spikes[i], spikes[spikes.length - 1], 'the never-recovering spike is the last one');
    for (const t of truth.slice(0, -1)) {
      const j = r.matches.get(t);
      if (j === undefined) continue;
      recovering++;
      const s = spikes[j];
      // Back within the pre-spike band no later than a few steps after the bump is over.
      if (s.recovered && s.end! <= t.end + 3 && s.peak >= t.start && s.peak < t.end) recoveredOk++;
      // The height is measured against the pre-spike window: within noise of the injected one.
      assert.ok(Math.abs(s.height - t.height) < 0.25, `seed ${seed}: height ${s.height} vs injected ${t.height}`);
      assert.ok(s.height_sigma > SPIKE_DEFAULTS.threshold);
    }
  }
  const precision = tp / (tp + fp);
  const recall = tp / (tp + fn);
  console.log(`# spikes: ${tp + fn} injected, ${tp + fp} detected; precision ${precision.toFixed(4)}, recall ${recall.toFixed(4)}`);
  assert.ok(precision >= 0.95, `precision ${precision}`);
  assert.ok(recall >= 0.95, `recall ${recall}`);
  assert.ok(recoveredOk / recovering >= 0.95, `recovery found for ${recoveredOk}/${recovering}`);
});

test('a clean series (noise and trend) has no spikes', () => {
  for (let seed = 100; seed < 110; seed++) {
    const rng = new Rng(seed);
    const pts = Array.from({ length: 5000 }, (_, step) => ({ step, value: 3 + 2 * Math.exp(-step / 800) + 0.05 * rng.normal() }));
    assert.deepEqual(analyzeSeries(pts).spikes, []);
  }
});

// ---------------------------------------------------------------------------------------------
// The online detector's contract.

function noise(n: number, seed = 7, mean = 3, sd = 0.1): number[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => mean + sd * rng.normal());
}

test('inactive until the window is full; then a huge value is flagged', () => {
  const d = new SpikeDetector('loss', { window: 16 });
  const xs = noise(15);
  xs.forEach((x, i) => assert.equal(d.observe(i, x), null));
  assert.equal(d.active, false);
  assert.equal(d.observe(15, 1e6), null, 'the 16th value fills the window and is not tested');
  assert.equal(d.active, true);
  // The 1e6 went into the window (it was not tested); refill with ordinary values first.
  const d2 = new SpikeDetector('loss', { window: 16 });
  noise(16).forEach((x, i) => d2.observe(i, x));
  const ev = d2.observe(16, 10);
  assert.ok(ev);
  assert.equal(ev.event, 'spike');
  assert.equal(ev.step, 16);
  assert.equal(ev.metric, 'loss');
  assert.equal(ev.value, 10);
  assert.equal(ev.test, 'z');
  assert.ok(ev.z > 6 && Math.abs(ev.z - (10 - ev.mean) / ev.std) < 1e-9);
});

test('non-finite values: ignored while filling, spikes with z = ∞ once active, never in the window', () => {
  const d = new SpikeDetector('loss', { window: 8 });
  const xs = noise(8);
  let step = 0;
  for (const x of xs) {
    assert.equal(d.observe(step++, NaN), null, 'NaN before the window is full: no event');
    assert.equal(d.observe(step++, x), null);
  }
  assert.equal(d.active, true, 'eight finite values fill a window of 8 (the NaNs did not count)');
  const before = d.stats();
  for (const bad of [NaN, Infinity, -Infinity]) {
    const ev = d.observe(step++, bad);
    assert.ok(ev);
    assert.equal(ev.z, Infinity);
    assert.equal(ev.test, 'z');
    assert.ok(Object.is(ev.value, bad));
  }
  assert.deepEqual(d.stats(), before);
  // The event serialises as JSON (z: ∞ → null), as the trainer writes it.
  assert.equal(JSON.parse(JSON.stringify(d.observe(step, NaN))).z, null);
});

test('a spike does not inflate σ: every value of a long plateau is flagged, the window is untouched', () => {
  const d = new SpikeDetector('loss', { window: 32, jump: 0 });
  noise(32).forEach((x, i) => d.observe(i, x));
  const before = d.stats();
  for (let i = 0; i < 200; i++) assert.ok(d.observe(32 + i, 5 + 0.01 * i), `step ${32 + i} flagged`);
  assert.deepEqual(d.stats(), before);
  // Ordinary values still go in and are not flagged.
  assert.equal(d.observe(300, before.mean), null);
});

test('the jump test flags a relative jump over the EMA that the z test misses; jump = 0 disables it', () => {
  const xs = Array.from({ length: 64 }, (_, i) => (i % 2 ? 1.4 : 1.0)); // mean 1.2, σ ≈ 0.2
  const on = new SpikeDetector('grad_norm', { window: 64, jump: 0.5 });
  const off = new SpikeDetector('grad_norm', { window: 64, jump: 0 });
  xs.forEach((x, i) => (on.observe(i, x), off.observe(i, x)));
  const ev = on.observe(64, 2.0); // z ≈ 4 < 6, but 2.0 > 1.5 × EMA (≈ 1.2)
  assert.ok(ev);
  assert.equal(ev.test, 'jump');
  assert.ok(ev.z < 6);
  assert.equal(off.observe(64, 2.0), null);
  // By default only loss-like metrics get the jump test (a gradient norm routinely doubles).
  assert.equal(defaultSpikeOptions('train/loss').jump, SPIKE_DEFAULTS.jump);
  assert.equal(defaultSpikeOptions('trl').jump, SPIKE_DEFAULTS.jump);
  assert.equal(defaultSpikeOptions('grad_norm').jump, 0);
});

test('rolling statistics stay exact over long runs (sliding Welford with periodic recomputation)', () => {
  const W = 50;
  const d = new SpikeDetector('x', { window: W, threshold: 1e9, jump: 0 });
  const rng = new Rng(3);
  const xs: number[] = [];
  for (let i = 0; i < 20_000; i++) {
    // Large offset, small spread: where naive sum-of-squares variance loses every digit.
    const x = 1e6 + Math.sin(i / 30) + 1e-3 * rng.normal();
    xs.push(x);
    d.observe(i, x);
    if (i % 997 === 0 && i >= W) {
      const win = xs.slice(-W);
      const mean = win.reduce((a, b) => a + b, 0) / W;
      const sd = Math.sqrt(win.reduce((a, b) => a + (b - mean) ** 2, 0) / (W - 1));
      const st = d.stats();
      assert.ok(Math.abs(st.mean - mean) < 1e-9, `mean at ${i}`);
      assert.ok(Math.abs(st.std - sd) / sd < 1e-6, `std at ${i}: ${st.std} vs ${sd}`);
    }
  }
});

test('toJSON / fromJSON: a restored detector continues identically', () => {
  const { values } = syntheticRun(42, 1200);
  const a = new SpikeDetector('loss', { window: 64, threshold: 5, jump: 0.3, emaBeta: 0.95 });
  values.slice(0, 500).forEach((v, i) => a.observe(i, v));
  const b = SpikeDetector.fromJSON(JSON.parse(JSON.stringify(a.toJSON())));
  assert.deepEqual(b.options, a.options);
  assert.equal(b.metric, 'loss');
  const evA: (SpikeEvent | null)[] = [];
  const evB: (SpikeEvent | null)[] = [];
  for (let i = 500; i < values.length; i++) {
    const v = i === 900 ? NaN : values[i];
    evA.push(a.observe(i, v));
    evB.push(b.observe(i, v));
  }
  assert.ok(
    evA.some((e) => e !== null),
    'the continuation includes spikes',
  );
  assert.deepEqual(evB, evA);
  assert.deepEqual(b.stats(), a.stats());
  assert.deepEqual(b.toJSON(), a.toJSON());
  assert.throws(() => SpikeDetector.fromJSON({ version: 2 }), UserError);
  assert.throws(() => SpikeDetector.fromJSON({ ...a.toJSON(), buffer: [1, 2] }), UserError);
  assert.throws(() => new SpikeDetector('loss', { window: 1 }), UserError);
});

test('analyzeSeries: consecutive flags merge, peak and recovery, re-logged steps, NaN peaks', () => {
  const base = noise(100, 11, 3, 0.05).map((value, step) => ({ step, value }));
  const pts = [
    ...base,
    { step: 100, value: 4 },
    { step: 101, value: 6 },
    { step: 102, value: 5 },
    { step: 103, value: 3.3 }, // still above the band (flagged or not): the same spike
    { step: 104, value: 4.5 },
    { step: 105, value: 3.0 }, // back in the band: recovered here
    ...noise(50, 12, 3, 0.05).map((value, i) => ({ step: 106 + i, value })),
    { step: 156, value: NaN },
    { step: 157, value: 9 },
  ];
  const { spikes, summary } = analyzeSeries(pts, { window: 100, metric: 'loss' });
  assert.equal(spikes.length, 2);
  const [a, b] = spikes;
  assert.equal(a.start, 100);
  assert.equal(a.peak, 101);
  assert.equal(a.end, 105);
  assert.equal(a.recovered, true);
  assert.equal(a.points, 5);
  assert.ok(Math.abs(a.height - (6 - a.mean)) < 1e-12);
  assert.ok(Math.abs(a.height_sigma - a.height / a.std) < 1e-9);
  assert.equal(b.start, 156);
  assert.equal(b.peak, 156, 'a NaN is the highest possible peak');
  assert.equal(b.height, Infinity);
  assert.equal(b.end, null);
  assert.equal(b.recovered, false);
  assert.deepEqual(
    { spikes: summary.spikes, recovered: summary.recovered, not_recovered: summary.not_recovered, points: summary.points },
    { spikes: 2, recovered: 1, not_recovered: 1, points: 158 },
  );
  // Re-logged steps: the later value wins (and input order does not matter).
  const relogged = [...pts, ...[102, 100, 104, 101, 103].map((step) => ({ step, value: 3 }))];
  const r = analyzeSeries(relogged, { window: 100 });
  assert.equal(r.spikes[0].start, 156);
  assert.equal(r.summary.points, 158);
  // Too short to ever be tested.
  assert.equal(analyzeSeries(base.slice(0, 50), { window: 100 }).summary.active_from, null);
});

// ---------------------------------------------------------------------------------------------
// Log readers.

test('JSONL: slash keys, re-logged steps (later wins), torn last line, Keel events and nulls', () => {
  const lines = [
    '{"step": 1, "train/loss": 5.0, "lr": 0.1}',
    '{"step": 2, "train/loss": 4.0, "eval": {"loss": 4.5}}',
    '{"event": "spike", "step": 2, "metric": "loss", "value": 9, "z": 8}',
    'not json',
    '{"train/loss": 3.0}',
    '{"step": 3, "train/loss": 3.5}',
    '{"step": 2, "train/loss": 3.9}',
    '{"step": 4, "train/loss": NaN, "grad_norm": Infinity}',
    '{"step": 5, "train/loss": null}',
    '{"step": 6, "train/lo',
  ];
  const log = parseJsonl(lines.join('\n'), 'run.jsonl');
  assert.deepEqual(log.metrics, ['eval/loss', 'lr', 'train/loss']);
  const s = log.series('train/loss');
  assert.deepEqual(s.slice(0, 3), [
    { step: 1, value: 5 },
    { step: 2, value: 3.9 },
    { step: 3, value: 3.5 },
  ]);
  assert.ok(Number.isNaN(s[3].value) && Number.isNaN(s[4].value));
  assert.equal(s.length, 5);
  assert.equal(resolveMetric(log, 'train/loss'), 'train/loss');
  assert.throws(() => resolveMetric(log, 'loss'), /ambiguous.*eval\/loss, train\/loss/);
  assert.throws(() => resolveMetric(log, 'acc'), /no metric "acc".*available: eval\/loss, lr, train\/loss/);
  assert.equal(resolveMetric(parseJsonl('{"step":1,"train/loss":1}'), 'loss'), 'train/loss');
});

test('CSV: header with a step column (any accepted name), quotes, re-logged rows, torn last row', () => {
  const text = [
    'Iteration,"train loss","note, with comma",val',
    '1,4.5,"a ""quoted"" note",',
    '2,4.25,b,4.9',
    '3,nan,c,',
    '2,4.0,"multi',
    'line",',
    '4,3.75,d,4.1',
    '5,3.',
  ].join('\r\n');
  const log = parseCsv(text, 'run.csv');
  assert.deepEqual(log.metrics, ['train loss', 'val']);
  const s = log.series('train loss');
  assert.deepEqual(
    s.map((p) => [p.step, p.value]),
    [
      [1, 4.5],
      [2, 4.0],
      [3, NaN],
      [4, 3.75],
    ],
  );
  assert.deepEqual(
    log.series('val').map((p) => p.step),
    [2, 4],
  );
  assert.throws(() => parseCsv('a,b\n1,2\n', 'x.csv'), /no step column/);
});

/** Test-only TensorBoard writer, independent of the reader: bitwise CRC-32C and hand-made protobuf. */
function crc32cBitwise(data: Uint8Array): number {
  let c = 0xffffffff;
  for (const byte of data) {
    c ^= byte;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}
const mask = (c: number) => ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;
function varint(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n % 128) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}
const field = (num: number, wire: number, body: number[]) => [...varint(num * 8 + wire), ...(wire === 2 ? varint(body.length) : []), ...body];
const f32 = (x: number) => [...Buffer.from(new Float32Array([x]).buffer)];
const f64 = (x: number) => [...Buffer.from(new Float64Array([x]).buffer)];
const str = (s: string) => [...Buffer.from(s, 'utf8')];
function tfRecord(data: number[]): Buffer {
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(data.length));
  const d = Buffer.from(data);
  const c1 = Buffer.alloc(4);
  c1.writeUInt32LE(mask(crc32cBitwise(len)));
  const c2 = Buffer.alloc(4);
  c2.writeUInt32LE(mask(crc32cBitwise(d)));
  return Buffer.concat([len, c1, d, c2]);
}
/** Event{wall_time, step, summary{value{tag, simple_value | tensor}}}. */
function scalarEvent(step: number, values: { tag: string; simple?: number; tensor?: number[] }[]): Buffer {
  const vals = values.flatMap((v) =>
    field(1, 2, [...field(1, 2, str(v.tag)), ...(v.simple !== undefined ? field(2, 5, f32(v.simple)) : field(8, 2, v.tensor!))]),
  );
  return tfRecord([...field(1, 1, f64(1.7e9 + step)), ...field(2, 0, varint(step)), ...field(5, 2, vals)]);
}

test('CRC-32C check value; masked CRC', () => {
  const check = Buffer.from('123456789');
  assert.equal(crc32c(check), 0xe3069283);
  assert.equal(crc32cBitwise(check), 0xe3069283);
  assert.equal(maskedCrc32c(check), mask(0xe3069283));
});

test('TensorBoard events: simple values and scalar tensors; truncated last record ignored; CRC mismatch is an error', () => {
  const dir = fresh('tb');
  fs.mkdirSync(dir, { recursive: true });
  const fileVersion = tfRecord([...field(1, 1, f64(1.7e9)), ...field(3, 2, str('brain.Event:2'))]);
  const records = [
    fileVersion,
    scalarEvent(1, [
      { tag: 'train/loss', simple: 5 },
      { tag: 'lr', simple: 0.5 },
    ]),
    // TensorProto{dtype=DT_FLOAT(1), tensor_shape={}, float_val packed [4.5]}
    scalarEvent(2, [{ tag: 'train/loss', tensor: [...field(1, 0, [1]), ...field(2, 2, []), ...field(5, 2, f32(4.5))] }]),
    // DT_DOUBLE(2) in tensor_content
    scalarEvent(3, [{ tag: 'train/loss', tensor: [...field(1, 0, [2]), ...field(4, 2, f64(4.25))] }]),
    // A non-scalar tensor (shape [2]) is not a scalar series.
    scalarEvent(3, [{ tag: 'hist', tensor: [...field(1, 0, [1]), ...field(2, 2, field(2, 2, field(1, 0, [2]))), ...field(5, 2, [...f32(1), ...f32(2)])] }]),
    scalarEvent(2, [{ tag: 'train/loss', simple: 4.0 }]), // re-logged after a restart: wins
  ];
  const whole = Buffer.concat(records);
  const next = scalarEvent(4, [{ tag: 'train/loss', simple: 3.9 }]);
  const file = path.join(dir, 'events.out.tfevents.1700000000.host.1.0');
  fs.writeFileSync(file, Buffer.concat([whole, next.subarray(0, next.length - 3)]));
  for (const spec of [file, dir]) {
    const log = readLog(spec);
    assert.equal(log.format, 'tfevents');
    assert.equal(log.file, file);
    assert.deepEqual(log.metrics, ['lr', 'train/loss']);
    assert.deepEqual(log.series('train/loss'), [
      { step: 1, value: 5 },
      { step: 2, value: 4 },
      { step: 3, value: 4.25 },
    ]);
  }
  // Header only partly written: also "not written yet".
  fs.writeFileSync(file, Buffer.concat([whole, next.subarray(0, 5)]));
  assert.equal(readLog(file).series('train/loss').length, 3);
  // A flipped byte inside a complete record: corruption, named.
  const bad = Buffer.from(whole);
  bad[fileVersion.length + 20] ^= 0x40;
  fs.writeFileSync(file, bad);
  assert.throws(
    () => readLog(file),
    (e: Error) => e instanceof UserError && /corrupt: record 1 .*data CRC/.test(e.message),
  );
  const badLen = Buffer.from(whole);
  badLen[fileVersion.length] ^= 0x01;
  fs.writeFileSync(file, badLen);
  assert.throws(() => readLog(file), /corrupt: record 1 .*length CRC/);
  // Content sniffing finds TFRecord framing without the name.
  const anon = path.join(dir, 'scalars.bin');
  fs.writeFileSync(anon, whole);
  assert.equal(readLog(anon).format, 'tfevents');
});

test('readLog: format by name then content; run directories; clear errors', () => {
  const dir = fresh('logs');
  fs.mkdirSync(dir, { recursive: true });
  const w = (name: string, text: string) => {
    const f = path.join(dir, name);
    fs.writeFileSync(f, text);
    return f;
  };
  assert.equal(readLog(w('a.txt', '{"step": 1, "loss": 2}\n')).format, 'jsonl');
  assert.equal(readLog(w('b.log', 's:1 trl:2.5 lr:0.1 norm:1.2\ns:1 tel:2.7\ns:2 trl:2.4\n')).format, 'llmc');
  assert.deepEqual(readLog(path.join(dir, 'b.log')).metrics, ['lr', 'norm', 'tel', 'trl']);
  assert.equal(readLog(w('c.dat', 'step,loss\n1,2\n')).format, 'csv');
  assert.equal(readLog(w('d.json', '[{"step": 1, "loss": 2}, {"step": 2, "loss": 1}]')).series('loss').length, 2);
  assert.throws(() => readLog(w('e.txt', 'hello world\n')), /cannot tell the format of .*e\.txt/);
  assert.throws(() => readLog(w('f.jsonl', '')), /is empty/);
  assert.throws(() => readLog(path.join(dir, 'missing.jsonl')), /no such file/);
  assert.throws(() => readLog(dir), /neither metrics\.jsonl nor an events\.out\.tfevents/);
  w('metrics.jsonl', '{"step": 1, "loss": 2}\n');
  assert.equal(readLog(dir).file, path.join(dir, 'metrics.jsonl'));
});

// ---------------------------------------------------------------------------------------------
// keel analyze.

test('keel analyze: table and --json on a Keel run; bad input exits 2 with one line', () => {
  const dir = fresh('run');
  fs.mkdirSync(dir, { recursive: true });
  const { values, truth } = syntheticRun(5, 1500);
  const lines = values.map((loss, step) => JSON.stringify({ step, loss: Number.isFinite(loss) ? loss : null, lr: null, grad_norm: 1 }));
  lines.splice(700, 0, JSON.stringify({ event: 'checkpoint', step: 700, dir: 'checkpoints/step-700' }));
  // A restart re-logs steps 1000–1099 with the same values: nothing changes.
  lines.push(...values.slice(1000, 1100).map((loss, i) => JSON.stringify({ step: 1000 + i, loss })));
  fs.writeFileSync(path.join(dir, 'metrics.jsonl'), lines.join('\n') + '\n');

  const j = keel(['analyze', dir, '--json']);
  assert.equal(j.status, 0, j.stderr);
  const out = JSON.parse(j.stdout.trim().split('\n').pop()!);
  assert.equal(out.metric, 'loss');
  assert.equal(out.points, 1500);
  assert.equal(out.file, path.join(dir, 'metrics.jsonl'));
  assert.deepEqual(
    out.spikes.map((s: { start: number }) => s.start),
    analyzeSeries(values.map((value, step) => ({ step, value }))).spikes.map((s) => s.start),
  );
  const r = score(truth, out.spikes);
  assert.equal(r.fp, 0);
  assert.equal(r.fn, 0);
  for (const s of out.spikes) for (const k of ['start', 'peak', 'end', 'height', 'height_sigma', 'recovered']) assert.ok(k in s, k);
  assert.equal(out.spikes.at(-1).end, null);
  assert.equal(out.summary.spikes, truth.length);
  assert.equal(out.summary.not_recovered, 1);

  const h = keel(['analyze', path.join(dir, 'metrics.jsonl'), { window: 64 }]);
  assert.equal(h.status, 0, h.stderr);
  assert.match(h.stdout, /start\s+peak\s+end\s+height \(nats\)\s+height \(σ\)/);
  assert.match(h.stdout, /not recovered/);
  assert.match(h.stdout, new RegExp(`${truth.length} spikes: ${truth.length - 1} recovered, 1 not recovered`));

  const bad = (args: string[], re: RegExp) => {
    const r = keel(['analyze', ...args]);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
    const errLines = r.stderr.trim().split('\n');
    assert.equal(errLines.length, 1, r.stderr);
    assert.match(errLines[0], re);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  };
  bad([path.join(dir, 'nope.jsonl')], /no such file/);
  bad([dir, '--metric', 'acc'], /no metric "acc".*available: grad_norm, loss/);
  bad([dir, '--window', '5000'], /needs more than --window 5000/);
  bad([dir, '--threshold', '-1'], /must be > 0/);
  const junk = path.join(dir, 'junk.txt');
  fs.writeFileSync(junk, 'hello\n');
  bad([junk], /cannot tell the format/);
});

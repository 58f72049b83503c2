// `keel experiment spikes`: the library on the micro model (grid, results.json, per-run
// summaries, LR sensitivity against a hand computation, reuse of finished runs, report.html),
// the offline analysis on a synthetic log with a planted precursor (lead time, control,
// divergence onset), and the command line's bad-input errors.
import { test, describe, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../src/errors.ts';
import { analyzeRunLog, divergenceOnset, earlyExcursion, LEAD_STATS, parseRunLog, precursorLead } from '../src/monitor/spike_log.ts';
import { lrSensitivity, runSpikeExperiment, summarizeLeads, type SpikeExperimentOptions } from '../src/experiments/spikes.ts';
import type { SpikeResults, SpikeRunRecord } from '../src/experiments/spikes_results.ts';
import { spikeFindings, writeSpikeReport } from '../src/experiments/spikes_report.ts';
import { keel, MICRO, tempRoot, writeCorpus, writeJson } from './helpers.ts';

const { root, fresh } = tempRoot('experiment-spikes');
const corpus = writeCorpus(path.join(root, 'data'));
const microJson = writeJson(path.join(root, 'micro.json'), MICRO);
const L0 = Math.log(256);

const base = (out: string, over: Partial<SpikeExperimentOptions> = {}): SpikeExperimentOptions => ({
  out,
  variants: ['baseline', 'skip', 'z-loss'],
  lrs: [1e-2, 3],
  epsValues: [1e-8, 1e-5],
  steps: 60,
  batch: 4,
  config: MICRO,
  configName: 'micro',
  data: corpus,
  evalTokens: 257,
  spikeWindow: 16,
  diagEvery: 4,
  log: () => {},
  ...over,
});

const readResults = (out: string): SpikeResults => JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8'));

describe('runSpikeExperiment on the micro model', () => {
  let out: string;
  let results: SpikeResults;
  const lines: string[] = [];
  before(async () => {
    out = fresh('exp');
    results = await runSpikeExperiment(base(out, { log: (l) => lines.push(l) }));
    writeSpikeReport(out, results); // as `keel experiment spikes` does
  });

  test('the grid: every variant at the first ε, the baseline also at the second', () => {
    assert.deepEqual(readResults(out).runs, results.runs, 'results.json holds what was returned');
    assert.equal(results.experiment, 'spikes');
    assert.equal(results.complete, true);
    assert.equal(results.interrupted, false);
    assert.deepEqual(results.grid.lrs, [0.01, 3]);
    assert.deepEqual(results.grid.eps_values, [1e-8, 1e-5]);
    assert.equal(results.grid.runs, 8);
    assert.match(results.grid.description, /baseline also at ε 1e-5/);
    assert.deepEqual(
      results.variants.map((v) => [v.key, v.eps]),
      [
        ['baseline', 1e-8],
        ['baseline@eps=0.00001', 1e-5],
        ['skip', 1e-8],
        ['z-loss', 1e-8],
      ],
    );
    assert.equal(results.runs.length, 8);
    assert.equal(lines.length, 8, lines.join('\n'));
    assert.match(lines[0], /^\[1\/8\] baseline lr 0\.01: val loss \d\.\d{4}, \d+ spikes?, /);
    assert.equal(results.settings.initialLoss, L0);
    assert.equal(results.settings.schedule, 'constant');
    assert.equal(results.settings.warmup, 0);
    for (const r of results.runs) {
      const dir = path.join(out, r.run_dir);
      assert.equal(r.run_dir, path.join(r.variant, `eps-${r.eps}`, `lr-${r.lr}`));
      const summary: SpikeRunRecord = JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8'));
      assert.equal(summary.final_loss, r.final_loss);
      // A run the recovery ladder stopped (src/control/ladder.ts) executed fewer steps: it is scored as diverged.
      const stopped = r.diverged && /^recovery stopped the run at step (\d+)/.exec(summary.error ?? '');
      assert.ok(summary.loss_curve.length >= (stopped ? Number(stopped[1]) : 60), 'one loss per executed step');
      assert.equal('loss_curve' in r, false, 'results.json leaves the curves in summary.json');
      assert.equal(fs.existsSync(path.join(dir, 'checkpoints')), false, 'checkpoints pruned');
      for (const k of [
        'variant',
        'lr',
        'eps',
        'val_loss',
        'train_loss',
        'final_loss',
        'diverged',
        'diverged_at',
        'spikes',
        'events',
        'skipped_steps',
        'rollbacks',
        'control',
      ]) {
        assert.ok(k in r, `${r.run_dir}: ${k}`);
      }
      assert.equal(r.spikes, r.events.filter((e) => e.kind === 'spike').length);
      for (const e of r.events) assert.deepEqual(Object.keys(e.precursors).sort(), [...LEAD_STATS].sort());
      if (r.diverged) assert.equal(r.final_loss, L0, 'a diverged run is capped at L0');
      else assert.equal(r.final_loss, Math.min(r.val_loss!, L0));
      const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
      assert.equal(cfg.train.lr, r.lr);
      assert.equal(cfg.train.warmup, 0);
      assert.equal(cfg.train.diagEvery, 4);
      assert.equal(cfg.train.optimizerOptions.eps, r.eps);
      assert.equal(cfg.train.onSpike, r.variant === 'skip' ? 'skip' : undefined);
      assert.equal(cfg.train.zLoss, r.variant === 'z-loss' ? 1e-4 : undefined);
    }
    const low = results.runs.filter((r) => r.lr === 0.01);
    const high = results.runs.filter((r) => r.lr === 3);
    assert.ok(
      low.every((r) => !r.diverged && r.val_loss! < L0),
      'lr 0.01 trains',
    );
    assert.ok(
      high.every((r) => r.diverged),
      `lr 3 diverges: ${high.map((r) => `${r.run_dir} ${r.val_loss}`).join(', ')}`,
    );
    assert.ok(
      high.every((r) => r.events.some((e) => e.kind === 'divergence')),
      'the divergence is an event',
    );
    const skip = results.runs.find((r) => r.variant === 'skip' && r.lr === 3)!;
    assert.ok(skip.skipped_steps > 0, 'the skip variant skipped steps at lr 3');
  });

  test('LR sensitivity: the mean over the grid of min(ℓ, L0) − min ℓ, from the per-run numbers', () => {
    for (const v of results.variants) {
      const runs = results.runs.filter((r) => r.variant === v.variant && r.eps === v.eps);
      assert.equal(runs.length, 2);
      // By hand: ℓ = the final validation loss, L0 when the run diverged.
      const l = runs.map((r) => (r.diverged ? L0 : Math.min(r.val_loss!, L0)));
      const best = Math.min(...l);
      const hand = (l[0] - best + (l[1] - best)) / 2;
      assert.ok(Math.abs(v.lr_sensitivity! - hand) < 1e-12, `${v.key}: ${v.lr_sensitivity} vs ${hand}`);
      assert.equal(v.best_loss, Math.min(...runs.filter((r) => !r.diverged).map((r) => r.final_loss)));
      assert.equal(v.best_lr, 0.01);
      assert.equal(
        v.spikes,
        runs.reduce((a, r) => a + r.spikes, 0),
      );
      assert.equal(v.diverged, 1);
    }
    assert.equal(lrSensitivity([3, 4, NaN], 5), (0 + 1 + 2) / 3, 'non-finite → L0');
    assert.equal(lrSensitivity([3, 7], 5), 1, 'capped at L0');
  });

  test('report.html: findings from the numbers, tables, the log-x chart, offline', () => {
    const html = fs.readFileSync(path.join(out, 'report.html'), 'utf8');
    assert.ok(html.includes('What we measured'));
    for (const f of spikeFindings(results))
      assert.ok(html.includes(f.replace(/&/g, '&#38;').replace(/</g, '&#60;').replace(/>/g, '&#62;').replace(/"/g, '&#34;').replace(/'/g, '&#39;')), f);
    assert.match(spikeFindings(results)[0], /^8 of 8 runs finished/);
    assert.ok(html.includes('<svg class="lrplot"'), 'final loss vs lr chart');
    assert.ok(html.includes('learning rate (log scale)'));
    assert.ok(html.includes('Spikes per run') && html.includes('Did the diagnostics move before the spikes?'));
    for (const v of results.variants) assert.ok(html.includes(v.lr_sensitivity!.toFixed(3)), `${v.key}'s LR sensitivity`);
    assert.doesNotMatch(html, /<script[^>]*\bsrc=/i);
    assert.doesNotMatch(html, /(src|href)=["']?https?:/i);
    const m = html.match(/<script type="application\/json" id="keel-data">([\s\S]*?)<\/script>/);
    assert.ok(m);
    const payload = JSON.parse(m[1]);
    assert.deepEqual(
      payload.panels.map((p: { title: string }) => p.title),
      ['Training loss at lr 0.01', 'Training loss at lr 3'],
    );
  });

  test('a second call reuses the finished runs; a missing one is redone; other settings are refused', async () => {
    const again: string[] = [];
    const dir = path.join(out, results.runs[2].run_dir);
    fs.rmSync(path.join(dir, 'summary.json'));
    const r = await runSpikeExperiment(base(out, { log: (l) => again.push(l) }));
    assert.equal(again.filter((l) => l.endsWith('(done earlier)')).length, 7, again.join('\n'));
    assert.deepEqual(
      r.runs.map((x) => x.final_loss),
      results.runs.map((x) => x.final_loss),
      'deterministic',
    );
    await assert.rejects(
      runSpikeExperiment(base(out, { steps: 61 })),
      (e: unknown) => e instanceof UserError && /other settings \(steps: 60 there, 61 now\)/.test(e.message),
    );
  });
});

// ---------------------------------------------------------------------------------------------
// The offline analysis on a synthetic log.

/** Deterministic noise, uniform in [−1, 1). */
function noise(i: number, salt: number): number {
  let x = (Math.imul(i + 1, 0x9e3779b1) ^ Math.imul(salt + 7, 0x85ebca6b)) >>> 0;
  x = Math.imul(x ^ (x >>> 15), 0x2c1b3c6d) >>> 0;
  x = Math.imul(x ^ (x >>> 12), 0x297a2d39) >>> 0;
  return ((x ^ (x >>> 15)) >>> 0) / 2 ** 31 - 1;
}

/** 200 steps of a flat, slightly noisy loss (3 nats) with one spike to 5 at steps 150–152; diagnostics every 5 steps. */
function syntheticLog(o: { precursorFrom?: number; divergeAt?: number } = {}): Record<string, unknown>[] {
  const recs: Record<string, unknown>[] = [];
  for (let step = 1; step <= 200; step++) {
    let loss = 3 + 0.02 * Math.sin(0.9 * step);
    if (step >= 150 && step <= 152) loss = 5;
    if (o.divergeAt !== undefined && step >= o.divergeAt) loss = step === 200 ? NaN : 8 + step;
    recs.push({ step, loss: Number.isFinite(loss) ? loss : null, lr: 0.1, grad_norm: 1 });
    if (step % 5 === 0) {
      const planted = o.precursorFrom !== undefined && step >= o.precursorFrom && step < 150;
      const update = planted ? 0.05 : 0.01 + 0.0005 * noise(step, 1);
      recs.push({
        step,
        diag: { 'transformer.wte.weight': { update_rms: 0.002 + 0.0001 * noise(step, 2), eps_frac: 0.1 + 0.01 * noise(step, 3) } },
        diag_update_rms: update,
        diag_bimodality_max: 0.4 + 0.02 * noise(step, 4),
        diag_eps_frac: 0.05 + 0.005 * noise(step, 5),
        diag_cos_g: 0.2 + 0.05 * noise(step, 6),
      });
    }
    if (step === 150) recs.push({ event: 'spike', step, metric: 'loss' }); // events are ignored by the analysis
  }
  return recs;
}

const ANALYZE = { l0: L0, window: 32, threshold: 6, jump: 0.5, diagEvery: 5, diverged: false };

describe('lead time on a synthetic log', () => {
  test('a planted precursor: update RMS jumps 15 steps before the spike, nothing else moves', () => {
    const log = parseRunLog(syntheticLog({ precursorFrom: 135 }));
    assert.equal(log.losses.length, 200);
    assert.equal(log.diag.length, 40);
    assert.deepEqual(log.diag[0], { index: 5, step: 5, values: log.diag[0].values });
    assert.equal(log.diag[0].values['wte.update_rms'], 0.002 + 0.0001 * noise(5, 2));
    const a = analyzeRunLog(log, ANALYZE);
    assert.equal(a.spikes, 1);
    assert.equal(a.diverged_at, null);
    const [e] = a.events;
    assert.equal(e.kind, 'spike');
    assert.equal(e.start, 150);
    assert.equal(e.end, 153, 'recovered at the first value back in the band');
    assert.ok(Math.abs(e.height - 2) < 0.05, `height ${e.height}`);
    // Diagnosed at 135, 140, 145 (all 0.05 against a baseline of 0.01 ± 0.0005): lead = 150 − 135.
    assert.deepEqual(e.precursors.diag_update_rms, { lead: 15, direction: 'up', testable: true });
    for (const st of LEAD_STATS.filter((s) => s !== 'diag_update_rms')) {
      assert.deepEqual(e.precursors[st], { lead: null, testable: true }, st);
    }
    assert.equal(e.lead, 15);
    // Control: ordinary diagnosed steps after the first 32 steps, none within 32 steps before the
    // spike (so the precursor's own first steps are not counted), none inside it.
    // Testable from the 9th usable value (35, 40, …, 75) on; not 118…149 (spike ahead) or 150…152 (inside it).
    const expected = log.diag.filter((d) => d.index >= 75 && (d.index < 118 || d.index >= 153)).length;
    assert.equal(expected, 19);
    assert.equal(a.control.diag_update_rms.tested, expected);
    assert.equal(a.control.diag_update_rms.flagged, 0, 'no false alarm on the flat series');
    const sum = summarizeLeads([a]);
    assert.equal(sum.spikes, 1);
    assert.equal(sum.with_any_precursor, 1);
    assert.equal(sum.median_lead, 15);
    const u = sum.per_stat.find((p) => p.stat === 'diag_update_rms')!;
    assert.equal(u.fraction, 1);
    assert.equal(u.control_fraction, 0);
  });

  test('no precursor planted: every statistic is testable and none moved', () => {
    const a = analyzeRunLog(parseRunLog(syntheticLog()), ANALYZE);
    assert.equal(a.spikes, 1);
    assert.equal(a.events[0].lead, null);
    for (const st of LEAD_STATS) assert.equal(a.events[0].precursors[st].testable, true);
  });

  test('precursorLead: the run must reach the last diagnosed step, and needs a baseline and coverage', () => {
    const pts = Array.from({ length: 20 }, (_, i) => ({ index: 5 * (i + 1), value: 1 + 0.01 * Math.sin(i) }));
    const planted = (values: Record<number, number>) => pts.map((p) => ({ ...p, value: values[p.index] ?? p.value }));
    assert.deepEqual(precursorLead(planted({ 90: 2, 95: 2, 100: 2 }), 101, { coverage: 10 }), { lead: 11, direction: 'up', testable: true });
    assert.deepEqual(precursorLead(planted({ 90: 0, 95: 0, 100: 0 }), 101, { coverage: 10 }), { lead: 11, direction: 'down', testable: true });
    assert.deepEqual(precursorLead(planted({ 90: 2, 95: 2 }), 101, { coverage: 10 }), { lead: null, testable: true }, 'back in the band at 100');
    assert.deepEqual(precursorLead(pts, 130, { coverage: 10 }), { lead: null, testable: false }, 'the last diagnosed step is 30 steps before');
    assert.deepEqual(precursorLead(pts.slice(0, 5), 26, { coverage: 10 }), { lead: null, testable: false }, 'fewer than 8 baseline values');
  });

  test('divergence: spikes are counted before the onset, the divergence is its own event', () => {
    const log = parseRunLog(syntheticLog({ divergeAt: 180 }));
    assert.equal(divergenceOnset(log.losses, L0), 180);
    const pts = (...v: number[]) => v.map((value, i) => ({ index: i + 1, value }));
    assert.equal(divergenceOnset(pts(6, 5, 4, 3), L0), null, 'never back at L0');
    assert.equal(divergenceOnset(pts(6, 5, 7, 4, 9), L0), 3, 'the first return to L0 after learning, later dips included');
    assert.equal(divergenceOnset(pts(6, 5, NaN), L0), 3, 'non-finite');
    assert.equal(divergenceOnset(pts(6, 7, 8), L0), 1, 'never learned');
    assert.equal(divergenceOnset(pts(5.3, 6, 4, 9), L0), 4, '5.3 is not below L0 − 0.5: it had not learned yet');
    const a = analyzeRunLog(log, { ...ANALYZE, diverged: true });
    assert.equal(a.diverged_at, 180);
    assert.equal(a.spikes, 1, 'only the spike at 150');
    assert.deepEqual(
      a.events.map((e) => [e.kind, e.start]),
      [
        ['spike', 150],
        ['divergence', 180],
      ],
    );
  });

  test('after a rollback the abandoned steps are dropped; the trigger and the replay stay, in the order they ran', () => {
    const recs = [
      ...Array.from({ length: 40 }, (_, i) => ({ step: i + 1, loss: 3 + 0.01 * Math.sin(i), lr: 0.1 })),
      { step: 41, loss: 9, lr: 0.1 },
      { step: 40, diag: {}, diag_update_rms: 1 }, // a stray diag line of another step is ignored
      { event: 'rollback', step: 41, to: 30 },
      ...Array.from({ length: 20 }, (_, i) => ({ step: 31 + i, loss: 3 + 0.01 * Math.sin(i + 40), lr: 0.1 })),
    ];
    const log = parseRunLog(recs);
    assert.equal(log.losses.length, 30 + 1 + 20, 'steps 31…40 of the abandoned stretch are gone');
    assert.deepEqual(
      log.losses.slice(29, 33).map((p) => [p.index, p.step]),
      [
        [30, 30],
        [31, 41],
        [32, 31],
        [33, 32],
      ],
    );
    const a = analyzeRunLog(log, { ...ANALYZE, window: 16 });
    assert.equal(a.spikes, 1, 'the trigger is a spike; the replay is not');
    assert.equal(a.events[0].start, 41);
    assert.equal(a.events[0].end, 31, 'recovery is reported as the (replayed) step it happened at');
  });

  test("the early excursion: the no-warm-up blow-up before the detector's window is full", () => {
    const curve = [5.55, 5.6, 8, 12, 7, 5.2, 4, 3.5, ...Array.from({ length: 60 }, (_, i) => 3 + 0.01 * Math.sin(i))];
    const losses = curve.map((value, i) => ({ index: i + 1, value }));
    assert.deepEqual(earlyExcursion(losses, L0, 32), { start: 3, peak: 4, end: 6, height: 12 - L0 });
    assert.equal(earlyExcursion(losses, L0, 2), null, 'only within the first `window` steps');
    assert.equal(
      earlyExcursion(
        losses.map((p) => ({ ...p, value: Math.min(p.value, 6) })),
        L0,
        32,
      ),
      null,
      'not more than 0.5 above L0',
    );
    assert.deepEqual(
      earlyExcursion(
        [
          { index: 1, value: 5.5 },
          { index: 2, value: NaN },
          { index: 3, value: 9 },
        ],
        L0,
        32,
      ),
      { start: 2, peak: 2, end: null, height: Infinity },
    );
    const log = parseRunLog(curve.map((loss, i) => ({ step: i + 1, loss, lr: 0.3 })));
    const a = analyzeRunLog(log, ANALYZE);
    assert.equal(a.spikes, 1);
    assert.deepEqual(
      a.events.map((e) => [e.kind, e.start, e.peak, e.end, e.recovered]),
      [['early', 3, 4, 6, true]],
    );
    assert.equal(a.events[0].precursors.diag_update_rms.testable, false, 'no baseline that early');
  });

  test('a steady linear drift is not a precursor; a sudden level change is (all-earlier and trailing baselines)', () => {
    const pts = Array.from({ length: 30 }, (_, i) => ({ index: 5 * (i + 1), value: 0.01 * (i + 1) + 0.001 * noise(i, 9) }));
    const jump = pts.map((p) => (p.index >= 140 ? { ...p, value: p.value + 1 } : p));
    for (const baseline of [undefined, 8]) {
      assert.deepEqual(precursorLead(pts, 151, { coverage: 10, baseline }), { lead: null, testable: true }, `drift, baseline ${baseline}`);
      assert.deepEqual(precursorLead(jump, 151, { coverage: 10, baseline }), { lead: 11, direction: 'up', testable: true }, `jump, baseline ${baseline}`);
    }
  });
});

describe('keel experiment spikes: command line', () => {
  test('--json prints results.json as the last stdout line', () => {
    const out = fresh('cli');
    const r = keel([
      'experiment',
      'spikes',
      {
        config: microJson,
        data: corpus,
        variants: 'baseline',
        lrs: 0.01,
        epsValues: 1e-8,
        steps: 40,
        batch: 2,
        evalTokens: 257,
        spikeWindow: 8,
        out,
        json: true,
      },
    ]);
    assert.equal(r.status, 0, r.stderr);
    const last = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
    assert.deepEqual(last, readResults(out));
    assert.equal(last.runs.length, 1);
    assert.match(r.stderr, /\[1\/1\] baseline lr 0\.01: val loss/);
    assert.match(r.stderr, /- 1 of 1 runs finished/);
    assert.ok(fs.existsSync(path.join(out, 'report.html')));
  });

  test('--help', () => {
    const r = keel(['experiment', 'spikes', '--help']);
    assert.equal(r.status, 0);
    for (const flag of ['--out', '--steps', '--lrs', '--eps-values', '--variants', '--batch', '--config', '--data', '--warmup', '--seed', '--json']) {
      assert.ok(r.stdout.includes(flag), flag);
    }
  });

  const bad = (name: string, args: string[], why: RegExp) =>
    test(name, () => {
      const out = fresh('bad');
      const r = keel(['experiment', 'spikes', { config: microJson, data: corpus, out }, ...args]);
      assert.equal(r.status, 2, `exit ${r.status}; stderr:\n${r.stderr}`);
      assert.doesNotMatch(r.stderr, /^ {4}at /m);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `one line:\n${r.stderr}`);
      assert.match(lines[0], why);
      assert.equal(fs.existsSync(out), false, '--out was created');
    });

  bad('unknown variant', ['--variants', 'baseline,qknorm'], /unknown variant "qknorm"; choose from baseline, skip/);
  bad('a non-positive lr', ['--lrs', '0.01,-1'], /--lrs must be positive numbers, got "-1"/);
  bad('a negative ε', ['--eps-values', '1e-8,-1e-5'], /--eps-values must be numbers ≥ 0, got "-1e-5"/);
  bad('empty lr list', ['--lrs', ' , '], /--lrs is empty/);
  bad('zero --steps', ['--steps', '0'], /--steps.*0/);
});

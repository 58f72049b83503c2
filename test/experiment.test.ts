// `keel experiment optimizers`: the library run on the micro model (sweep, best lr, final run,
// results.json, report.html, state memory from the actual optimizer buffers), reuse of finished
// runs, a diverged sweep point, and the command line's bad-input errors.
import { test, describe, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../src/errors.ts';
import { lrDirName } from '../src/experiments/common.ts';
import { runOptimizerExperiment, sweepLrs, type OptimizerExperimentOptions } from '../src/experiments/optimizers.ts';
import type { OptimizerExperimentResults } from '../src/experiments/optimizers_results.ts';
import { verdictText, writeOptimizerReport } from '../src/experiments/optimizers_report.ts';
import { readSafetensors } from '../src/io/safetensors.ts';
import { OPTIMIZERS } from '../src/optim/registry.ts';
import { paramLayout } from '../src/model/params.ts';
import { keel, MICRO, tempRoot, walk, writeCorpus, writeJson } from './helpers.ts';

const { root, fresh } = tempRoot('experiment');
const corpus = writeCorpus(path.join(root, 'data'));
const microJson = writeJson(path.join(root, 'micro.json'), MICRO);
const PARAMS = paramLayout(MICRO).total;

const base = (out: string, over: Partial<OptimizerExperimentOptions> = {}): OptimizerExperimentOptions => ({
  out,
  optimizers: ['adamw', 'adafactor'],
  lrFactors: [0.5, 1],
  sweepSteps: 6,
  steps: 12,
  batch: 2,
  config: MICRO,
  configName: 'micro',
  data: corpus,
  evalTokens: 257,
  evalEvery: 4,
  log: () => {},
  ...over,
});

const readResults = (out: string): OptimizerExperimentResults => JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8'));

/** Bytes of the optimizer state a checkpoint actually saved (every tensor is float32). */
function savedStateBytes(runDir: string): number {
  const ckpts = fs.readdirSync(path.join(runDir, 'checkpoints')).filter((n) => n.startsWith('step-'));
  assert.equal(ckpts.length, 1);
  const f = readSafetensors(path.join(runDir, 'checkpoints', ckpts[0], 'optimizer.safetensors'));
  return [...f.tensors.values()].reduce((a, t) => a + t.byteLength, 0);
}

describe('runOptimizerExperiment on the micro model', () => {
  let out: string;
  let results: OptimizerExperimentResults;
  const lines: string[] = [];
  before(async () => {
    out = fresh('exp');
    results = await runOptimizerExperiment(base(out, { log: (l) => lines.push(l) }));
    writeOptimizerReport(out, results); // as `keel experiment optimizers` does
  });

  test('results.json: a sweep per optimizer, the best lr, and a final run at it', () => {
    assert.deepEqual(readResults(out).optimizers, results.optimizers, 'results.json holds what was returned');
    assert.equal(results.complete, true);
    assert.equal(results.interrupted, false);
    assert.equal(results.params, PARAMS);
    assert.equal(results.settings.steps, 12);
    assert.equal(results.settings.sweepSteps, 6);
    assert.deepEqual(
      results.optimizers.map((o) => o.optimizer),
      ['adamw', 'adafactor'],
    );
    for (const o of results.optimizers) {
      const rec = OPTIMIZERS[o.optimizer as keyof typeof OPTIMIZERS].train.lr;
      assert.equal(o.recommended_lr, rec);
      assert.deepEqual(
        o.sweep.map((p) => p.lr),
        sweepLrs(rec, [0.5, 1]).map((p) => p.lr),
      );
      assert.deepEqual(
        o.sweep.map((p) => p.lr),
        [rec / 2, rec],
      );
      for (const p of o.sweep) {
        assert.equal(p.diverged, false);
        assert.ok(Number.isFinite(p.val_loss), `${o.optimizer} lr ${p.lr}: val loss ${p.val_loss}`);
        assert.equal(p.run_dir, path.join(o.optimizer, lrDirName(p.lr)));
        const summary = JSON.parse(fs.readFileSync(path.join(out, p.run_dir, 'summary.json'), 'utf8'));
        assert.equal(summary.val_loss, p.val_loss);
        assert.equal(summary.steps, 6);
        assert.equal(fs.existsSync(path.join(out, p.run_dir, 'checkpoints')), false, 'sweep checkpoints pruned');
        assert.ok(fs.existsSync(path.join(out, p.run_dir, 'metrics.jsonl')));
      }
      const best = o.sweep.reduce((a, b) => (b.val_loss! < a.val_loss! ? b : a));
      assert.equal(o.best_lr, best.lr);
      assert.equal(o.best_at_edge, true, 'with two grid points the best is always at an edge');
      assert.equal(o.status, 'ok');
      assert.equal(o.run_dir, path.join(o.optimizer, 'final'));
      const final = path.join(out, o.run_dir!);
      const evals = fs
        .readFileSync(path.join(final, 'metrics.jsonl'), 'utf8')
        .split('\n')
        .filter((l) => l.includes('"val_loss"'));
      assert.equal(evals.length, 3, 'final run evaluated every 4 of 12 steps');
      assert.equal(JSON.parse(evals[2]).val_loss, o.val_loss);
      const cfg = JSON.parse(fs.readFileSync(path.join(final, 'config.json'), 'utf8'));
      assert.equal(cfg.train.lr, o.best_lr);
      assert.equal(cfg.train.steps, 12);
      assert.equal(cfg.train.optimizer, o.optimizer);
      assert.ok(o.tokens_per_s! > 0 && o.seconds! > 0);
    }
    assert.equal(lines.length, 6, `one line per run:\n${lines.join('\n')}`);
    assert.match(lines[0], /^\[1\/6\] adamw sweep lr 0\.001 \(6 steps\): val loss \d\.\d{4}/);
    assert.match(lines[5], /^\[6\/6\] adafactor final lr /);
  });

  test("state memory: the trainer's actual buffers, Adafactor well below AdamW", () => {
    const [adamw, adafactor] = results.optimizers;
    for (const o of results.optimizers) {
      assert.equal(o.state_bytes, savedStateBytes(path.join(out, o.run_dir!)), `${o.optimizer}: state = what the checkpoint saved`);
      assert.equal(o.state_bytes_per_param, o.state_bytes! / PARAMS);
    }
    assert.equal(adamw.state_bytes, 8 * PARAMS, 'AdamW: two float32 moments');
    assert.ok(adafactor.state_bytes! < adamw.state_bytes! / 4, `adafactor ${adafactor.state_bytes} vs adamw ${adamw.state_bytes}`);
    assert.equal(adamw.state_ratio_vs_adamw, 1);
    assert.equal(adamw.val_loss_ratio_vs_adamw, 1);
    assert.equal(adafactor.state_ratio_vs_adamw, adafactor.state_bytes! / adamw.state_bytes!);
    assert.equal(adafactor.val_loss_ratio_vs_adamw, adafactor.val_loss! / adamw.val_loss!);

    const t = results.adafactor_target;
    assert.equal(t.state_ratio, adafactor.state_ratio_vs_adamw);
    assert.equal(t.val_loss_ratio, adafactor.val_loss_ratio_vs_adamw);
    assert.equal(t.state_ok, t.state_ratio! <= 0.05);
    assert.equal(t.val_loss_ok, t.val_loss_ratio! <= 1.03);
    assert.equal(t.met, t.state_ok && t.val_loss_ok);
    const verdict = verdictText(t, results);
    assert.match(verdict, t.met ? /: MET/ : /: NOT MET/);
    assert.ok(verdict.includes(`${(t.state_ratio! * 100).toFixed(2)}% of AdamW's`), verdict);
    assert.ok(verdict.includes(adafactor.val_loss!.toFixed(4)) && verdict.includes(adamw.val_loss!.toFixed(4)), verdict);
  });

  test('report.html: one offline file with the table, the verdict and the curves', () => {
    const html = fs.readFileSync(path.join(out, 'report.html'), 'utf8');
    assert.match(html, /<table class="list results">/);
    for (const h of ['best lr', 'final val loss', 'Δ vs AdamW', 'state MB', 'state B/param', 'state % of AdamW', 'tokens/s']) {
      assert.ok(html.includes(`<th>${h}</th>`), `column ${h}`);
    }
    for (const o of results.optimizers) {
      assert.ok(html.includes(o.val_loss!.toFixed(4)), `${o.optimizer}'s val loss in the table`);
      assert.ok(html.includes(Math.round(o.tokens_per_s!).toLocaleString('en-US')), `${o.optimizer}'s tokens/s`);
    }
    assert.ok(html.includes((results.optimizers[1].state_ratio_vs_adamw! * 100).toFixed(2) + '%'));
    assert.ok(html.includes('Adafactor vs the paper'));
    assert.ok(html.includes('Optimizer-state memory') && html.includes('Throughput'));
    assert.doesNotMatch(html, /<script[^>]*\bsrc=/i);
    assert.doesNotMatch(html, /(src|href)=["']?https?:/i);
    const m = html.match(/<script type="application\/json" id="keel-data">([\s\S]*?)<\/script>/);
    assert.ok(m, 'chart payload');
    const payload = JSON.parse(m[1]);
    assert.equal(payload.panels[0].title, 'Validation loss of the final runs');
    assert.deepEqual(
      payload.panels[0].series.map((s: { label: string }) => s.label),
      ['adamw', 'adafactor'],
    );
    assert.deepEqual(payload.data['val_loss:adamw'].x, [4, 8, 12]);
    assert.ok(html.includes('uPlot'), 'uPlot inlined');
  });

  test('a second call reuses the finished runs; a missing one is redone', async () => {
    const again: string[] = [];
    const lossBefore = readResults(out).optimizers.map((o) => o.val_loss);
    const sweepRun = path.join(out, 'adafactor', lrDirName(results.optimizers[1].sweep[0].lr));
    fs.rmSync(path.join(sweepRun, 'summary.json')); // as if that run had been cut off
    const r = await runOptimizerExperiment(base(out, { log: (l) => again.push(l) }));
    assert.equal(again.filter((l) => l.endsWith('(done earlier)')).length, 5, again.join('\n'));
    assert.doesNotMatch(again[3], /done earlier/, 'the run without summary.json ran again');
    assert.ok(fs.existsSync(path.join(sweepRun, 'summary.json')));
    assert.deepEqual(
      r.optimizers.map((o) => o.val_loss),
      lossBefore,
      'deterministic: the redone run gives the same numbers',
    );
    await assert.rejects(
      runOptimizerExperiment(base(out, { steps: 13 })),
      (e: unknown) => e instanceof UserError && /other settings \(steps: 12 there, 13 now\)/.test(e.message),
    );
  });
});

test('a diverged sweep run counts as +∞ and is recorded, not fatal', async () => {
  const out = fresh('diverge');
  const r = await runOptimizerExperiment(base(out, { optimizers: ['sgd'], lrFactors: [1, 1e30], steps: 6 }));
  writeOptimizerReport(out, r);
  const [sgd] = r.optimizers;
  const bad = sgd.sweep.find((p) => p.lr > 1e20)!;
  assert.equal(bad.diverged, true);
  assert.equal(bad.val_loss, null);
  const summary = JSON.parse(fs.readFileSync(path.join(out, bad.run_dir, 'summary.json'), 'utf8'));
  assert.equal(summary.status, 'diverged');
  assert.match(summary.error, /diverged|non-finite|NaN|Infinity/i);
  assert.equal(sgd.best_lr, OPTIMIZERS.sgd.train.lr);
  assert.equal(sgd.status, 'ok');
  assert.ok(Number.isFinite(sgd.val_loss));
  assert.equal(r.adafactor_target.met, null, 'no adamw/adafactor: the target is not evaluated');
  assert.match(verdictText(r.adafactor_target, r), /not evaluated.*missing: adamw, adafactor/);
  assert.match(fs.readFileSync(path.join(out, 'report.html'), 'utf8'), /diverged/);
});

test('Ctrl-C (shouldStop) ends the experiment after the run in flight; a second call continues it', async () => {
  const out = fresh('interrupt');
  const lines: string[] = [];
  const opts = base(out, { optimizers: ['adamw'], log: (l) => lines.push(l) });
  const r = await runOptimizerExperiment({ ...opts, shouldStop: () => lines.length >= 1 });
  assert.equal(r.interrupted, true);
  assert.equal(r.complete, false);
  assert.equal(lines.length, 1, lines.join('\n'));
  assert.equal(readResults(out).optimizers[0].sweep.length, 1, 'results.json holds the finished run');
  assert.equal(fs.existsSync(path.join(out, 'adamw', lrDirName(r.optimizers[0].sweep[0].lr * 2))), false, 'the next run was not started');
  const again: string[] = [];
  const r2 = await runOptimizerExperiment(base(out, { optimizers: ['adamw'], log: (l) => again.push(l) }));
  assert.equal(r2.interrupted, false);
  assert.equal(r2.complete, true);
  assert.equal(again.filter((l) => l.endsWith('(done earlier)')).length, 1, again.join('\n'));
  assert.equal(again.length, 3);
});

describe('keel experiment optimizers: command line', () => {
  test('--json prints results.json as the last stdout line', () => {
    const out = fresh('cli');
    const r = keel([
      'experiment',
      'optimizers',
      { config: microJson, data: corpus, optimizers: 'adamw', lrFactors: 1, steps: 4, sweepSteps: 2, batch: 2, evalTokens: 257, out, json: true },
    ]);
    assert.equal(r.status, 0, r.stderr);
    const last = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
    assert.deepEqual(last, readResults(out));
    assert.equal(last.optimizers[0].best_lr, OPTIMIZERS.adamw.train.lr);
    assert.match(r.stderr, /\[1\/2\] adamw sweep lr 0\.002 \(2 steps\)/);
    assert.ok(fs.existsSync(path.join(out, 'report.html')));
  });

  test('--help', () => {
    const r = keel(['experiment', 'optimizers', '--help']);
    assert.equal(r.status, 0);
    for (const flag of [
      '--out',
      '--optimizers',
      '--steps',
      '--sweep-steps',
      '--lr-factors',
      '--batch',
      '--config',
      '--data',
      '--eval-tokens',
      '--seed',
      '--json',
    ]) {
      assert.ok(r.stdout.includes(flag), flag);
    }
  });

  const bad = (name: string, args: string[], why: RegExp, setup?: (out: string) => void) =>
    test(name, () => {
      const out = fresh('bad');
      setup?.(out);
      const before = fs.existsSync(out) ? walk(out) : null;
      const r = keel(['experiment', 'optimizers', { config: microJson, data: corpus, out }, ...args]);
      assert.equal(r.status, 2, `exit ${r.status}; stderr:\n${r.stderr}`);
      assert.doesNotMatch(r.stderr, /^ {4}at /m);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `one line:\n${r.stderr}`);
      assert.match(lines[0], why);
      if (before === null) assert.equal(fs.existsSync(out), false, '--out was created');
      else assert.deepEqual(walk(out), before, '--out was changed');
    });

  bad('unknown optimizer', ['--optimizers', 'adamw,adamx'], /unknown optimizer "adamx"; choose one of adamw, adafactor/);
  bad('empty optimizer list', ['--optimizers', ' , '], /--optimizers is empty/);
  bad('empty lr factors', ['--lr-factors', ','], /--lr-factors is empty/);
  bad('a non-positive lr factor', ['--lr-factors', '1,-2'], /--lr-factors must be positive numbers, got "-2"/);
  bad('zero --steps', ['--steps', '0'], /--steps.*0/);
  bad('zero --sweep-steps', ['--sweep-steps', '0'], /--sweep-steps.*0/);
  bad('--eval-tokens below one window', ['--eval-tokens', '10'], /--eval-tokens 10 is too few/);
  bad('missing --data', ['--data', path.join(root, 'nope.txt')], /nope\.txt does not exist/);
  bad('an --out that is not an experiment', [], /is not empty and holds no results\.json/, (out) => writeCorpus(out, 'x', 'other.txt'));
});

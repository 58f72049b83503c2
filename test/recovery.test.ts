// Recovery end to end on a micro model: skip leaves the state untouched, rollback restores the
// state exactly and skips exactly the requested batches, faults fire once, the embedding
// gradient shrink and gradient-precision emulation act as specified; plus their parsers.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { parseFault } from '../src/guard/faults.ts';
import { bf16, fp16, roundGradients } from '../src/guard/precision.ts';
import { climb, emptyLadder } from '../src/control/ladder.ts';
import { defaultPolicy, recoveryDefaults } from '../src/control/types.ts';
import { readSafetensors } from '../src/io/safetensors.ts';
import { Guards, parseOptSchedule } from '../src/guard/guards.ts';
import { checkpointDir, loadCheckpoint } from '../src/train/checkpoints.ts';
import { train, type TrainOptions } from '../src/train/trainer.ts';
import { UserError } from '../src/errors.ts';
import { assertTrainRefuses, keel, metrics, MICRO, tempRoot, trainOptions, writeCorpus, writeJson } from './helpers.ts';

const { root, fresh } = tempRoot('recovery');
const corpus = writeCorpus(path.join(root, 'data'));
const microJson = writeJson(path.join(root, 'micro.json'), MICRO);
const quiet = { progress: false, report: false } as const;

function tensorsOf(file: string): Map<string, Float32Array> {
  return readSafetensors(file).tensors;
}

function sameState(dirA: string, dirB: string): void {
  for (const f of ['model.safetensors', 'optimizer.safetensors']) {
    const a = tensorsOf(path.join(dirA, f));
    const b = tensorsOf(path.join(dirB, f));
    assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
    for (const [k, v] of a) assert.deepEqual(b.get(k), v, `${f} ${k}`);
  }
}

/** Trains `opts` (its schedule spans opts.steps) but stops after `n` steps, as Ctrl-C would. */
function trainTo(opts: TrainOptions, n: number) {
  let done = 0;
  return train(opts, { ...quiet, shouldStop: () => ++done >= n });
}

const base = (out: string, over: Partial<TrainOptions> = {}) =>
  trainOptions(out, corpus, { steps: 12, checkpointEvery: 1, keep: 100, accum: 2, batch: 2, spikeWindow: 4, ...over });

test('skip: the spiky step leaves parameters and optimizer state exactly as they were', async () => {
  const a = await trainTo(base(fresh('plain'), { steps: 8 }), 7);
  const runB = fresh('skip');
  const b = await train(base(runB, { steps: 8, onSpike: 'skip', faults: ['8:nan-grad'] }), quiet);
  assert.equal(b.skipped_steps, 1);
  sameState(checkpointDir(a.run_dir, 7), checkpointDir(runB, 8));
  const ck = loadCheckpoint(checkpointDir(runB, 8));
  assert.equal(ck.state.cursor, 8 * 2, 'the skipped step still consumed its batches');
  assert.equal(ck.state.optimizerT, 7, 'the optimizer did not count the skipped step');
  const events = metrics(runB).filter((m) => m.event === 'skip_step' || m.event === 'fault');
  assert.deepEqual(
    events.map((e) => [e.event, e.step]),
    [
      ['fault', 8],
      ['skip_step', 8],
    ],
  );
});

test('rollback: restores the snapshot exactly and skips exactly S batches; the fault does not replay', async () => {
  // R = 4, snapshots every 2 steps; nan-grad at step 10 ⇒ back to the state after step 6.
  const run = fresh('rollback');
  const s = await train(base(run, { onSpike: 'rollback', rollbackSteps: 4, skipBatches: 3, faults: ['10:nan-grad'] }), quiet);
  assert.equal(s.rollbacks, 1);
  assert.equal(s.steps, 12);
  const rb = metrics(run).filter((m) => m.event === 'rollback');
  assert.equal(rb.length, 1);
  assert.deepEqual(
    { step: rb[0].step, to: rb[0].to, from: rb[0].from, cursor_from: rb[0].cursor_from, cursor_to: rb[0].cursor_to, skip: rb[0].skip_batches },
    { step: 10, to: 6, from: 'memory', cursor_from: 12, cursor_to: 12 + 3 * 2, skip: 3 },
  );
  // The same thing by hand: 6 plain steps, then the cursor moved 3 batches (of 2 micro-batches) on.
  const ref = fresh('ref');
  await trainTo(base(ref, { steps: 12 }), 6);
  const tj = path.join(checkpointDir(ref, 6), 'trainer.json');
  const state = JSON.parse(fs.readFileSync(tj, 'utf8'));
  state.cursor += 6;
  fs.writeFileSync(tj, JSON.stringify(state));
  await train(base(ref, { steps: 12 }), quiet, ref);
  for (const step of [7, 12]) sameState(checkpointDir(ref, step), checkpointDir(run, step));
  assert.equal(metrics(run).filter((m) => m.event === 'fault').length, 1, 'the fault fired once');
});

test('rollback falls back to an on-disk checkpoint after --resume (no snapshot in memory yet), and drops newer ones', async () => {
  const run = fresh('resume-rollback');
  await train(base(run, { steps: 9 }), quiet);
  // R = 8: snapshots every 4 steps, none taken between the resume at 9 and the spike at 10.
  const s = await train(base(run, { steps: 12, onSpike: 'rollback', rollbackSteps: 8, skipBatches: 2, faults: ['10:nan-grad'], maxRollbacks: 1 }), quiet, run);
  const rb = metrics(run).filter((m) => m.event === 'rollback');
  assert.equal(rb.length, 1);
  assert.deepEqual([rb[0].from, rb[0].to, rb[0].dropped_checkpoints], ['checkpoint', 2, [3, 4, 5, 6, 7, 8, 9]]);
  assert.equal(s.steps, 12);
  assert.equal(s.rollbacks, 1);
});

test('recovery policy: skips escalate to rollback, budgets are finite, and an exhausted ladder stops (never trains on)', () => {
  const at = (step: number, attempt = 0, canRollback = true) => ({ step, attempt, trouble: 'spike', canRollback });
  const p = defaultPolicy(100, { on_spike: 'skip', max_skips: 2, max_rollbacks: 1 });
  const r = emptyLadder();
  assert.deepEqual(
    [1, 2, 3].map((n) => climb(r, p, at(n))!.kind),
    ['skip', 'skip', 'rollback'],
  );
  // The spike returns at the same place after the rollback: the budget is spent, so stop.
  assert.equal(climb(r, p, at(3, 1))!.kind, 'stop');
  assert.equal(climb(r, p, { ...at(4, 1), trouble: null }), null);
  // Elsewhere, once the budget is spent: skips, then stop (the old policy trained on here).
  assert.deepEqual(
    [40, 41, 42].map((n) => climb(r, p, at(n, 1))!.kind),
    ['skip', 'skip', 'stop'],
  );
  const rb = emptyLadder();
  const pr = defaultPolicy(100, { on_spike: 'rollback', max_skips: 1, max_rollbacks: 1 });
  assert.deepEqual(
    [climb(rb, pr, at(10, 0, false))!.kind, climb(rb, pr, at(11))!.kind, climb(rb, pr, at(30, 1))!.kind, climb(rb, pr, at(31, 1))!.kind],
    ['skip', 'rollback', 'skip', 'stop'],
  );
  assert.deepEqual(recoveryDefaults(1400), { rollback_steps: 100, skip_batches: 200 });
  assert.deepEqual(recoveryDefaults(70), { rollback_steps: 5, skip_batches: 10 });
});

test("embedding-gradient shrink scales the lookup's share of the token embedding update, not the tied head's (SGD, no clipping)", async () => {
  const sgd = {
    optimizer: 'sgd',
    optimizerOptions: { momentum: 0 },
    lr: 0.1,
    minLr: 0.1,
    warmup: 0,
    schedule: 'constant' as const,
    clip: 0,
    steps: 1,
    accum: 1,
  };
  // One SGD step: Δ(α) = −lr·(head + α·lookup) is linear in α, so Δ(1) − Δ(0.5) = 2·(Δ(0.5) − Δ(0.25)).
  const wte = async (alpha: number) => {
    const run = await train(base(fresh(`shrink-${alpha}`), { ...sgd, embedGradShrink: alpha }), quiet);
    return tensorsOf(path.join(checkpointDir(run.run_dir, 1), 'model.safetensors')).get('transformer.wte.weight')!;
  };
  const [w1, wh, wq] = [await wte(1), await wte(0.5), await wte(0.25)];
  let lookupRows = 0;
  let headOnly = 0;
  for (let i = 0; i < w1.length; i++) {
    const hi = w1[i] - wh[i],
      lo = wh[i] - wq[i];
    assert.ok(Math.abs(hi - 2 * lo) < 1e-6, `${i}: ${hi} vs 2·${lo}`);
    if (Math.abs(hi) > 1e-4) lookupRows++;
    else if (hi === 0) headOnly++;
  }
  assert.ok(lookupRows > 50, `${lookupRows} coordinates with a lookup share`);
  assert.ok(headOnly > 50, `${headOnly} coordinates of rows the batch did not look up: the same update at every α`);
  const g = new Guards({ embedGradShrink: 0.1, embedGradShrinkRamp: 10 }, 100);
  assert.deepEqual(
    [1, 6, 11, 50].map((s) => Number(g.embedScale(s).toFixed(12))),
    [0.1, 0.55, 1, 1],
  );
});

test('gradient precision: bf16/fp16 round to nearest even, fp16 underflows below 2⁻²⁴ and overflows past 65504', () => {
  assert.equal(bf16(1 + 2 ** -8), 1); // tie → even
  assert.equal(bf16(1 + 3 * 2 ** -8), 1 + 2 ** -6);
  assert.equal(fp16(1 + 2 ** -11), 1);
  assert.equal(fp16(1 + 3 * 2 ** -11), 1 + 2 ** -9);
  assert.equal(fp16(2 ** -24), 2 ** -24);
  assert.equal(fp16(2 ** -26), 0);
  assert.equal(fp16(65504), 65504);
  assert.equal(fp16(70000), Infinity);
  const g = Float32Array.from([1e-9, 1e-3, 0, -2e-8]);
  assert.equal(roundGradients(g.slice(), 'fp16'), 0.75); // 1e-9, 0 and −2e-8 flush to zero
  assert.equal(roundGradients(g.slice(), 'fp16', 1024), 0.25); // the loss scale keeps them
  assert.equal(roundGradients(g.slice(), 'bf16'), 0.25);
});

test('parsers: faults and optimizer schedules', () => {
  assert.deepEqual(parseFault('5:lr-scale:10:3'), { step: 5, kind: 'lr-scale', x: 10, n: 3 });
  assert.deepEqual(parseFault('2:bad-batch:4'), { step: 2, kind: 'bad-batch', n: 4 });
  for (const bad of ['x:nan-grad', '0:nan-grad', '5:meteor', '5:grad-scale', '5:lr-scale:2', '5:bad-batch:0', '5:nan-grad:1']) {
    assert.throws(() => parseFault(bad), UserError, bad);
  }
  assert.deepEqual(parseOptSchedule('beta2=0.95:0.99'), { key: 'beta2', from: 0.95, to: 0.99 });
  assert.throws(() => parseOptSchedule('beta2=0.95'), UserError);
  const g = new Guards({ optSchedules: ['eps=1e-8:0'] }, 11);
  assert.deepEqual(g.scheduledOptions(6), { eps: 5e-9 });
});

test('CLI: stability flags are validated up front (exit 2, nothing written)', () => {
  assertTrainRefuses({ config: microJson, data: corpus, fresh }, [
    [['--fault', '3:meteor'], /unknown kind "meteor"/],
    [['--opt-schedule', 'beta3=0.9:0.99'], /adamw has no option "beta3"/],
    [['--opt-schedule', 'beta2=0.9:1.5'], /beta2 must be < 1/],
    [['--on-spike', 'panic'], /panic/],
    [['--loss-scale', '128'], /only with --grad-precision fp16/],
  ]);
});

test('CLI: a fire drill with --on-spike skip runs to the end and logs every action', () => {
  const out = fresh('drill');
  const r = keel([
    'train',
    { config: microJson, data: corpus, steps: 10, batch: 2, evalTokens: 257, out, gradPrecision: 'bf16', json: true },
    { spikeWindow: 4, onSpike: 'skip', fault: ['7:grad-scale:1e6', '8:bad-batch:1', '9:lr-scale:0:1'] },
  ]);
  assert.equal(r.status, 0, r.stderr);
  const s = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
  assert.equal(s.steps, 10);
  const m = metrics(out);
  assert.deepEqual(
    m.filter((x) => x.event === 'fault').map((x) => x.kind),
    ['grad-scale', 'bad-batch', 'lr-scale'],
  );
  assert.ok(
    m.some((x) => x.event === 'spike' && x.step === 7 && x.metric === 'grad_norm'),
    'the ×1e6 gradient is a spike',
  );
  assert.ok(m.some((x) => x.event === 'skip_step' && x.step === 7));
  assert.equal(m.find((x) => x.step === 9 && 'lr' in x)!.lr, 0);
  assert.ok(m.filter((x) => 'grad_zero_frac' in x).length === 10);
});

test('--diag-every: diagnostics lines in metrics.jsonl, one per diagnosed step, survive a rollback', async () => {
  const run = fresh('diag');
  await train(base(run, { diagEvery: 3, onSpike: 'rollback', rollbackSteps: 4, skipBatches: 1, faults: ['8:nan-grad'] }), quiet);
  const lines = metrics(run).filter((m) => 'diag' in m);
  // Steps 3, 6 (then rollback at 8 to step 4), 6 again, 9, 12.
  assert.deepEqual(
    lines.map((m) => m.step),
    [3, 6, 6, 9, 12],
  );
  const d = lines.at(-1)!.diag as Record<string, Record<string, unknown>>;
  assert.ok('transformer.h.0.attn.c_attn.weight' in d);
  assert.equal(typeof d['transformer.h.0.attn.c_attn.weight'].eps_frac, 'number');
});

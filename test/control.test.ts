// The controller alone (no model): determinism and JSON round trips, the recovery ladder on a
// simulated run that obeys its decisions, report validation; then with the trainer: replaying
// a run's control.jsonl reproduces every logged decision, and the fire drills (once, and sticky).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { Controller } from '../src/control/controller.ts';
import { replayControlLog } from '../src/control/replay.ts';
import type { Decision, Policy, RunFacts, StepReport } from '../src/control/types.ts';
import { UserError } from '../src/errors.ts';
import { readMetrics } from '../src/io/metrics.ts';
import { train } from '../src/train/trainer.ts';
import { keel, metrics, MICRO, stepReport, tempRoot, trainOptions, writeCorpus, writeJson } from './helpers.ts';

const { root, fresh } = tempRoot('control');
const corpus = writeCorpus(path.join(root, 'data'));
const microJson = writeJson(path.join(root, 'micro.json'), MICRO);
const RUN: RunFacts = { steps: 200, batch: 8, micro_batch: 4, seq_len: 16, params: 1000 };

/**
 * A simulated run that obeys the controller: loss ≈ 2 with a small deterministic wobble, and
 * `blowsUp(step, prev)` says whether the update before `step` (prev: applied? at which LR
 * multiplier?) wrecked it. Checkpoints every 10 steps.
 */
type Prev = { applied: boolean; lr: number };
function simulate(policy: Partial<Policy> & Pick<Policy, 'on_spike'>, blowsUp: (step: number, prev: Prev) => boolean, steps = 120) {
  const c = new Controller(policy, { ...RUN, steps });
  const decisions: Decision[] = [];
  let step = 0;
  let lr = c.inEffect.lr_multiplier;
  let data = 0;
  let prev: Prev = { applied: true, lr };
  while (step < steps && decisions.length < 2000) {
    if (step % 10 === 0) c.addRestorePoint({ step, data, path: `ckpt-${step}` });
    const n = step + 1;
    const bad = blowsUp(n, prev);
    const r = stepReport(n, {
      attempt: c.attempt,
      loss: bad ? 9 : 2 + 0.01 * Math.sin(n * 1.7),
      grad_norm: bad ? 50 : 1 + 0.01 * Math.cos(n),
      lr: 1e-3 * lr,
      tokens: n * 128,
      data: [data, data + 2],
    });
    const d = c.report(r);
    decisions.push(d);
    prev = { applied: d.apply, lr };
    if (d.lr) lr = d.lr.multiplier;
    if (d.kind === 'stop') break;
    if (d.kind === 'rollback') {
      step = d.rollback!.to_step;
      data = d.rollback!.skip_data[1];
      prev = { applied: true, lr };
      continue;
    }
    data += 2;
    step = n;
  }
  return { c, decisions, step };
}

const policy = { on_spike: 'rollback' as const, spike_window: 8, rollback_steps: 10, skip_batches: 5 };

test('controller: the same policy and reports give the same decisions, also across a JSON round trip', () => {
  // A bad batch at steps 40–41: gone once the rollback skips past its data.
  const badData = () => {
    let passes = 0;
    return (n: number) => (n === 40 ? ++passes : passes) === 1 && (n === 40 || n === 41);
  };
  const a = simulate(policy, badData());
  const b = simulate(policy, badData());
  assert.deepEqual(a.decisions, b.decisions);
  assert.equal(a.decisions.filter((d) => d.kind === 'rollback').length, 1);
  // Serialise mid-run and continue on the copy: it answers exactly as the original.
  const c = new Controller(policy, RUN);
  for (let n = 1; n <= 30; n++) {
    if (n % 10 === 1) c.addRestorePoint({ step: n - 1, data: 2 * (n - 1) });
    c.report(stepReport(n, { loss: 2 + 0.01 * n, data: [2 * n - 2, 2 * n] }));
  }
  const copy = Controller.fromJSON(JSON.parse(JSON.stringify(c.toJSON())));
  const r = (n: number, loss: number) => stepReport(n, { loss, data: [2 * n - 2, 2 * n] });
  for (const [n, loss] of [
    [31, 2.3],
    [32, 40],
  ] as const)
    assert.deepEqual(copy.report(r(n, loss)), c.report(r(n, loss)));
  assert.deepEqual(copy.toJSON(), c.toJSON());
});

test('ladder: a blow-up from one update returns after the rollback; skipping the updates there cures it', () => {
  // The update of step 50 wrecks the model whenever it is applied, whatever the data.
  const { decisions, step } = simulate(policy, (n, prev) => n === 51 && prev.applied);
  assert.deepEqual(
    decisions.filter((d) => d.kind === 'rollback').map((d) => d.rung),
    ['rollback', 'skip_updates'],
  );
  assert.ok(decisions.some((d) => d.kind === 'skip' && d.step === 50 && d.rung === 'skip_updates'));
  assert.equal(step, 120);
});

test('ladder: a blow-up over several steps gets LR cuts after skipping the updates, then recovers', () => {
  // Steps 51–55 blow up whenever the update before them ran at an LR multiplier above 0.05
  // (a sticky lr-scale fault, say): skipping 50–51 is not enough, two ×0.1 cuts are.
  const { decisions, step } = simulate(policy, (n, prev) => n >= 51 && n <= 55 && prev.applied && prev.lr > 0.05);
  const rb = decisions.filter((d) => d.kind === 'rollback');
  assert.deepEqual(
    rb.map((d) => d.rung),
    ['rollback', 'skip_updates', 'lower_lr', 'lower_lr'],
  );
  for (const d of rb) {
    assert.equal(d.rollback!.to_step, 40, 'the newest restore point at least R = 10 steps back');
    assert.equal(d.rollback!.skip_data[1] - d.rollback!.skip_data[0], 10, 'S = 5 steps of data (2 positions each) skipped');
  }
  assert.deepEqual(rb[0].rollback!.skip_data, [80, 90], 'from the data position of step 40');
  const cut = decisions.find((d) => d.kind === 'set_lr' && Math.abs(d.lr!.multiplier - 0.01) < 1e-12);
  assert.ok(cut && cut.lr!.steps !== null && cut.lr!.steps > 0, 'a limited LR cut, with its length');
  assert.ok(
    decisions.some((d) => d.kind === 'set_lr' && d.lr!.multiplier === 1 && d.lr!.steps === null),
    'the LR comes back after the region',
  );
  assert.equal(step, 120);
});

test('ladder: a spike nothing cures ends in stop, naming the checkpoint to go back to', () => {
  const { decisions, step } = simulate(policy, (n) => n >= 51 && n <= 53);
  const last = decisions.at(-1)!;
  assert.equal(last.kind, 'stop');
  assert.equal(last.apply, false);
  assert.equal(last.stop!.code, 'recovery_exhausted');
  assert.equal(last.stop!.restore_step, 40);
  assert.match(last.stop!.advice, /resume from ckpt-40 \(step 40\)/);
  assert.match(last.reason, /returned at the same place/);
  assert.deepEqual(
    decisions.filter((d) => d.kind === 'rollback').map((d) => d.rung),
    ['rollback', 'skip_updates', 'lower_lr', 'lower_lr'],
  );
  assert.ok(step < 53);
  // Budgets stay configurable: with one rollback allowed the stop comes at the first return.
  const one = simulate({ ...policy, max_rollbacks: 1 }, (n) => n === 51);
  assert.deepEqual(
    one.decisions.filter((d) => d.kind !== 'proceed').map((d) => d.kind),
    ['rollback', 'stop'],
  );
});

test('controller: on a nearly flat loss a 0.1 % bump is no spike (min rise 1 % of the mean); a 5 % one is; spike_min_rise 0 flags the bump', () => {
  // σ of the window ~ 1e-5 of the mean: the 0.1 % bump is a ~100σ z-score.
  const flagged = (extra: Partial<Policy>, bump: number) => {
    const c = new Controller({ on_spike: 'skip', spike_window: 16, ...extra }, RUN);
    const kinds: string[] = [];
    for (let n = 1; n <= 40; n++) kinds.push(c.report(stepReport(n, { loss: 3 * (1 + 1e-5 * Math.sin(n * 1.3) + (n === 30 ? bump : 0)) })).kind);
    return kinds.map((k, i) => [i + 1, k]).filter(([, k]) => k !== 'proceed');
  };
  assert.deepEqual(flagged({}, 1e-3), []);
  assert.deepEqual(flagged({}, 0.05), [[30, 'skip']]);
  assert.deepEqual(flagged({ spike_min_rise: 0 }, 1e-3), [[30, 'skip']]);
  assert.deepEqual(flagged({ spike_min_rise: 0.1 }, 0.05), [], 'a 5 % rise under a 10 % floor');
});

test('controller: late reports (an outage) are recorded as applied, a spike among them logged not acted on; the next live decision restates batch and LR', () => {
  const facts = { ...RUN, batch: 32, micro_batch: 4 };
  const c = new Controller({ ...policy, batch_ramp: 'linear:8:32:60' }, facts);
  const rep = (n: number, over: Partial<StepReport> = {}) => stepReport(n, { loss: 2 + 0.01 * Math.sin(n), batch: c.inEffect.batch, tokens: n * 64, ...over });
  for (let n = 1; n <= 20; n++) {
    c.report(rep(n));
    if (n % 10 === 0) c.addRestorePoint({ step: n, data: 2 * n, path: `ckpt-${n}` });
  }
  const before = c.inEffect;
  // Steps 21–40 ran while the server was away, with the batch the run had; step 25 spiked.
  const late = Array.from({ length: 20 }, (_, i) => c.report(rep(21 + i, { batch: before.batch, late: true, ...(i === 4 ? { loss: 40 } : {}) })));
  assert.deepEqual([...new Set(late.map((d) => d.kind))], ['proceed']);
  assert.ok(late.every((d) => d.apply && /reported late/.test(d.reason)));
  assert.equal(late[4].spikes?.[0].metric, 'loss', 'the late spike is flagged');
  assert.notEqual(c.inEffect.batch, before.batch, 'the ramp moved on during the outage');
  // The first live report: its decision carries the batch and LR the run has not heard of.
  const live = c.report(rep(41, { batch: before.batch }));
  assert.equal(live.kind, 'proceed');
  assert.equal(live.batch, c.inEffect.batch);
  assert.deepEqual(live.lr, { multiplier: c.inEffect.lr_multiplier, steps: null });
  const next = Controller.fromJSON(JSON.parse(JSON.stringify(c.toJSON())));
  assert.equal(next.report(rep(42)).batch, undefined, 'restated once');
  // A real spike after the outage is acted on again.
  assert.equal(c.report(rep(42)).kind, 'proceed');
  assert.equal(c.report(rep(43, { loss: 40 })).kind, 'rollback');
});

test("controller: spike_jump is the loss detector's; a gradient norm at 1.8× its EMA is no spike, a loss at 1.8× is", () => {
  const c = new Controller({ on_spike: 'skip', spike_window: 16, spike_jump: 0.5 }, RUN);
  const noisy = (n: number) => 1 + 0.3 * Math.sin(n * 2.1); // σ ~ 0.2: 1.8 is a z of ~4, under 6σ
  for (let n = 1; n <= 30; n++) c.report(stepReport(n, { loss: 2 * noisy(n), grad_norm: noisy(n) }));
  assert.equal(c.report(stepReport(31, { loss: 2, grad_norm: 1.8 })).kind, 'proceed');
  const d = c.report(stepReport(32, { loss: 3.6 }));
  assert.equal(d.kind, 'skip');
  assert.deepEqual(
    d.spikes?.map((s) => [s.metric, s.test]),
    [['loss', 'jump']],
  );
});

test('controller: on_spike none logs spikes and proceeds; a non-finite loss stops as diverged', () => {
  const c = new Controller({ on_spike: 'none', spike_window: 4 }, RUN);
  let d: Decision | null = null;
  for (let n = 1; n <= 6; n++) {
    d = c.report(stepReport(n, { loss: n === 6 ? 30 : 2 + 0.01 * n, lr: 1 }));
  }
  assert.equal(d!.kind, 'proceed');
  assert.equal(d!.spikes?.[0].metric, 'loss');
  const nan = c.report(stepReport(7, { loss: null, grad_norm: null, nonfinite: { loss: true, grad: true }, lr: 1 }));
  assert.equal(nan.kind, 'stop');
  assert.equal(nan.stop!.code, 'diverged');
});

test('controller: reports out of order, from a stale attempt or malformed are refused with the field named', () => {
  const c = new Controller({ on_spike: 'skip' }, RUN);
  const r = stepReport(1, { lr: 1, data: [0, 2] });
  assert.throws(
    () => c.report({ ...r, step: 2 }),
    (e: Error) => e instanceof UserError && /expected step 1/.test(e.message),
  );
  assert.throws(() => c.report({ ...r, attempt: 1 }), /expected attempt 0/);
  assert.throws(() => c.report({ ...r, v: 2 as 1 }), /version/);
  assert.throws(() => c.report({ ...r, data: [3, 1] }), /data/);
  assert.throws(() => new Controller({ on_spike: 'sometimes' as 'skip' }, RUN), /on_spike/);
  assert.throws(() => new Controller({ on_spike: 'none', lr_rule: 'sgd' }, RUN), /needs --b-noise/);
  assert.throws(() => new Controller({ on_spike: 'none' }, { ...RUN, batch: 6 }), /multiple of micro_batch/);
});

test("controller: an adaptive ramp follows B_simple from the reports' noise sums", () => {
  const c = new Controller({ on_spike: 'none', batch_ramp: 'adaptive:4:32' }, { ...RUN, batch: 32, micro_batch: 2 });
  assert.equal(c.inEffect.batch, 4);
  const batches: number[] = [];
  for (let n = 1; n <= 20; n++) {
    const B = c.inEffect.batch;
    // ‖G‖² = 1, tr Σ = 20 per sequence: E‖g_b‖² = 1 + 20/b.
    const noise = { g_small_sq: 1 + 20 / 2, g_big_sq: 1 + 20 / B, b_small: 2, b_big: B };
    const d = c.report(stepReport(n, { lr: 1, batch: B, noise }));
    if (d.batch !== undefined) assert.equal(d.kind, 'set_batch');
    batches.push(c.inEffect.batch);
  }
  assert.ok(Math.abs(c.bSimple! - 20) < 1e-9, `B_simple ${c.bSimple}`);
  assert.equal(batches.at(-1), 20);
});

const base = (out: string, over = {}) => trainOptions(out, corpus, { steps: 40, checkpointEvery: 5, keep: 100, accum: 2, batch: 2, spikeWindow: 8, ...over });

test("replay: a run's control.jsonl replayed through the controller alone gives exactly the logged decisions (rollbacks and a resume included)", async () => {
  const run = fresh('replay');
  const faults = ['15:lr-scale:1000:3:sticky', '30:nan-grad'];
  let n = 0;
  await train(base(run, { onSpike: 'rollback', rollbackSteps: 6, skipBatches: 3, faults }), { shouldStop: () => ++n >= 25 });
  const s = await train(base(run, { onSpike: 'rollback', rollbackSteps: 6, skipBatches: 3, faults }), {}, run);
  assert.equal(s.steps, 40);
  const lines = readMetrics(path.join(run, 'control.jsonl'));
  const r = replayControlLog(lines);
  assert.equal(r.firstMismatch, null, JSON.stringify(r.firstMismatch));
  assert.equal(r.compared, lines.filter((l) => l.t === 'decision').length);
  assert.ok(
    r.decisions.some((d) => d.kind === 'rollback'),
    'the drill rolled back',
  );
  assert.ok(lines.some((l) => l.t === 'resume'));
  // Another policy on the same reports: what on_spike none would have done (never a rollback).
  const none = replayControlLog(
    lines.slice(
      0,
      lines.findIndex((l) => l.t === 'decision' && l.kind === 'rollback'),
    ),
    { on_spike: 'none' },
  );
  assert.ok(none.decisions.every((d) => d.kind !== 'rollback'));
});

test('fire drill: a non-sticky lr-scale fires once (a replay runs at the normal LR); a sticky one fires on every pass', async () => {
  const once = fresh('once');
  await train(base(once, { onSpike: 'rollback', rollbackSteps: 6, skipBatches: 3, faults: ['15:lr-scale:1000:3'] }), {});
  const m = metrics(once);
  const lrs = (step: number) => m.filter((x) => x.step === step && 'lr' in x && 'loss' in x).map((x) => x.lr as number);
  const ref = fresh('ref');
  await train(base(ref), {});
  const plain = metrics(ref).find((x) => x.step === 15 && 'lr' in x)!.lr as number;
  assert.equal(m.filter((x) => x.event === 'fault').length, 1);
  assert.ok(lrs(15)[0] > 900 * plain);
  assert.ok(lrs(15).length >= 2, 'the spike rolled back over step 15');
  assert.ok(
    lrs(15)
      .slice(1)
      .every((lr) => lr === plain),
    `replayed lr ${lrs(15)}`,
  );
  const sticky = fresh('sticky');
  await train(base(sticky, { onSpike: 'rollback', rollbackSteps: 6, skipBatches: 3, faults: ['15:lr-scale:1000:3:sticky'] }), {}).catch(() => null);
  const f = metrics(sticky).filter((x) => x.event === 'fault');
  assert.ok(f.length >= 2, 'fired on the replay too');
  assert.deepEqual(
    f.map((x) => x.attempt),
    f.map((_, i) => i),
  );
});

test('CLI: a spike nothing cures stops with exit code 3, the step, the checkpoint to go back to, and every rung in metrics.jsonl', () => {
  const out = fresh('stop');
  const r = keel([
    'train',
    { config: microJson, data: corpus, steps: 40, batch: 2, accum: 2, evalTokens: 257, out, checkpointEvery: 5, keep: 100 },
    { spikeWindow: 8, onSpike: 'rollback', rollbackSteps: 6, skipBatches: 3, fault: '20:lr-scale:10000:8:sticky', maxLrCuts: 1 },
  ]);
  assert.equal(r.status, 3, r.stderr);
  const m = metrics(out);
  const stop = m.find((x) => x.event === 'stop')!;
  assert.match(r.stderr, new RegExp(`recovery stopped the run at step ${stop.step}`));
  assert.match(r.stderr, new RegExp(`resume from \\S*checkpoints/step-${stop.restore_step} \\(step ${stop.restore_step}\\)`));
  assert.deepEqual(
    m.filter((x) => x.event === 'rollback').map((x) => x.rung),
    ['rollback', 'skip_updates', 'lower_lr'],
  );
  assert.ok(m.some((x) => x.event === 'skip_step' && x.rung === 'skip_updates'));
  assert.ok(
    m.some((x) => x.event === 'decision' && (x.lr_multiplier as number) < 1),
    'the LR was cut',
  );
  assert.ok(fs.existsSync(path.join(out, 'report.html')), 'the report is written for a stopped run too');
  const ckpts = fs.readdirSync(path.join(out, 'checkpoints')).map((d) => Number(d.replace('step-', '')));
  assert.ok(
    ckpts.every((c) => c < (stop.step as number)),
    `the damaged state is not checkpointed: ${ckpts}`,
  );
});

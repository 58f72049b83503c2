// The trainer end to end on a micro model: bit-identical resume (with and without gradient
// accumulation), the run directory layout, checkpoint pruning, that training lowers the loss,
// Ctrl-C through the CLI, and the CLI's --json summary.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { listCheckpoints, loadCheckpoint } from '../src/train/checkpoints.ts';
import { train, type TrainOptions } from '../src/train/trainer.ts';
import { assertTrainRefuses, keel, keelAsync, metrics, MICRO, sleep, tempRoot, trainLines, trainOptions, walk, writeCorpus, writeJson } from './helpers.ts';

const { root, fresh } = tempRoot('train');
const corpus = writeCorpus(path.join(root, 'data'));
const microJson = writeJson(path.join(root, 'micro.json'), MICRO);
const quiet = { progress: false, report: false } as const;

const read = (f: string) => fs.readFileSync(f);

/** Runs `opts` but stops (as Ctrl-C would) once `stopAt` training lines are in metrics.jsonl. */
function trainUntil(opts: TrainOptions, stopAt: number) {
  return train(opts, { ...quiet, shouldStop: () => trainLines(path.resolve(opts.out)).length >= stopAt });
}

async function checkResumeIsBitIdentical(over: Partial<TrainOptions>) {
  const straight = trainOptions(fresh('straight'), corpus, { steps: 8, checkpointEvery: 4, ...over });
  const a = await train(straight, quiet);
  assert.equal(a.steps, 8);
  assert.equal(a.interrupted, false);

  // Same run, stopped after step 4 (the schedule still spans 8 steps), then resumed to 8.
  const split = { ...straight, out: fresh('split') };
  const first = await trainUntil(split, 4);
  assert.equal(first.interrupted, true);
  assert.equal(first.steps, 4);
  assert.deepEqual(listCheckpoints(split.out), [4]);
  const b = await train(split, quiet, split.out);
  assert.equal(b.steps, 8);
  assert.equal(b.interrupted, false);
  assert.equal(b.tokens, a.tokens);

  for (const f of ['model.safetensors', 'optimizer.safetensors']) {
    const fa = read(path.join(straight.out, 'checkpoints', 'step-8', f));
    const fb = read(path.join(split.out, 'checkpoints', 'step-8', f));
    assert.ok(fa.equals(fb), `${f} of the resumed run differs from the straight run's`);
  }
  // The step-4 checkpoints agree too (the interrupt wrote the same state the schedule did).
  for (const f of ['model.safetensors', 'optimizer.safetensors']) {
    assert.ok(read(path.join(straight.out, 'checkpoints', 'step-4', f)).equals(read(path.join(split.out, 'checkpoints', 'step-4', f))));
  }
  const pick = (dir: string) =>
    trainLines(dir)
      .filter((r) => r.step >= 5)
      .map((r) => ({ step: r.step, loss: r.loss, lr: r.lr, grad_norm: r.grad_norm, tokens: r.tokens }));
  const la = pick(straight.out);
  const lb = pick(split.out);
  assert.deepEqual(
    la.map((r) => r.step),
    [5, 6, 7, 8],
  );
  assert.deepEqual(lb, la);
  assert.equal(b.train_loss, a.train_loss);
  assert.equal(b.val_loss, a.val_loss);
  // The resumed run's log says so.
  assert.ok(metrics(split.out).some((r) => r.event === 'resume' && r.step === 4));

  // The comparison is sensitive: resuming the same checkpoint with another data seed diverges.
  const other = { ...straight, out: fresh('other-seed') };
  await trainUntil(other, 4);
  await train({ ...other, seed: straight.seed + 1 }, quiet, other.out);
  const fo = read(path.join(other.out, 'checkpoints', 'step-8', 'model.safetensors'));
  assert.ok(!fo.equals(read(path.join(straight.out, 'checkpoints', 'step-8', 'model.safetensors'))));
}

describe('resume', () => {
  test('4 steps + resume to 8 is bit-identical to 8 straight steps', () => checkResumeIsBitIdentical({}));
  test('... also with gradient accumulation (--accum 2)', () => checkResumeIsBitIdentical({ accum: 2, batch: 2 }));
  test('... with Tiger folding --accum 2 into its momentum', () =>
    checkResumeIsBitIdentical({ accum: 2, batch: 2, optimizer: 'tiger', lr: 1e-2, optimizerOptions: {} }));
  test('... with factored Adafactor (relative step) and with Lion + AdamW embeddings', async () => {
    await checkResumeIsBitIdentical({ optimizer: 'adafactor', optimizerOptions: { beta1: 0.9 } });
    await checkResumeIsBitIdentical({ optimizer: 'lion', lr: 1e-3, optimizerOptions: { embeddingOptimizer: 'adamw' } });
  });

  test('resuming from an explicit older checkpoint dir continues from that step', async () => {
    const opts = trainOptions(fresh('older'), corpus, { steps: 6, checkpointEvery: 2 });
    await train(opts, quiet);
    const ref = trainLines(opts.out).filter((r) => r.step > 4);
    const other = { ...opts, out: fresh('older-copy') };
    fs.mkdirSync(path.join(other.out, 'checkpoints'), { recursive: true });
    fs.cpSync(path.join(opts.out, 'checkpoints', 'step-4'), path.join(other.out, 'checkpoints', 'step-4'), { recursive: true });
    const r = await train(other, quiet, path.join(other.out, 'checkpoints', 'step-4'));
    assert.equal(r.steps, 6);
    assert.deepEqual(
      trainLines(other.out).map((x) => x.loss),
      ref.map((x) => x.loss),
    );
  });
});

describe('run directory', () => {
  test('layout: config.json, metrics.jsonl, checkpoints/step-N, report.html; --keep 2; no temp files', () => {
    const out = fresh('layout');
    const r = keel(['train', { config: microJson, data: corpus, steps: 8, batch: 4, evalEvery: 4, evalTokens: 257, checkpointEvery: 2, keep: 2, out }]);
    assert.equal(r.status, 0, r.stderr);
    assert.ok(fs.statSync(path.join(out, 'report.html')).size > 1000);
    const config = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
    assert.deepEqual(config.model, MICRO);
    assert.equal(config.train.steps, 8);

    // --keep 2: only the newest two checkpoints, each complete and loadable.
    assert.deepEqual(fs.readdirSync(path.join(out, 'checkpoints')).sort(), ['step-6', 'step-8']);
    for (const step of [6, 8]) {
      const dir = path.join(out, 'checkpoints', `step-${step}`);
      assert.deepEqual(fs.readdirSync(dir).sort(), ['model.safetensors', 'optimizer.safetensors', 'trainer.json']);
      const ck = loadCheckpoint(dir);
      assert.equal(ck.state.step, step);
      assert.deepEqual(ck.state.config, MICRO);
      assert.equal(ck.state.cursor, step); // one batch per step
    }
    // Nothing hidden (temporary names start with '.') anywhere in the run.
    assert.deepEqual(
      walk(out).filter((p) => path.basename(p).startsWith('.')),
      [],
    );
    assert.deepEqual(fs.readdirSync(out).sort(), ['checkpoints', 'config.json', 'control.jsonl', 'metrics.jsonl', 'report.html']);

    const recs = metrics(out);
    const lines = trainLines(out);
    assert.deepEqual(
      lines.map((l) => l.step),
      [1, 2, 3, 4, 5, 6, 7, 8],
    );
    for (const l of lines) {
      for (const key of ['step', 'loss', 'lr', 'grad_norm', 'tokens', 'ms']) {
        assert.equal(typeof l[key], 'number', `training line ${JSON.stringify(l)} lacks ${key}`);
      }
      assert.equal(l.tokens, l.step * 4 * MICRO.blockSize);
      assert.ok(Number.isFinite(l.loss) && l.grad_norm > 0 && l.lr > 0 && l.ms >= 0);
    }
    const evals = recs.filter((x) => 'val_loss' in x);
    assert.deepEqual(
      evals.map((x) => x.step),
      [4, 8],
    );
    for (const e of evals) assert.ok(typeof e.val_loss === 'number' && e.val_loss > 0);
    const ckEvents = recs.filter((x) => x.event === 'checkpoint');
    assert.deepEqual(
      ckEvents.map((x) => x.step),
      [2, 4, 6, 8],
    );
    assert.equal(ckEvents[3].dir, path.join('checkpoints', 'step-8'));
  });
});

test('training lowers the loss on a repetitive corpus (~30 steps)', async () => {
  const sentence = 'the cat sat on the mat and the dog sat on the log. ';
  const data = writeCorpus(path.join(root, 'rep'), sentence.repeat(300), 'rep.txt');
  const opts = trainOptions(fresh('learns'), data, {
    steps: 30,
    batch: 8,
    lr: 1e-2,
    minLr: 1e-3,
    warmup: 3,
    evalTokens: 513,
  });
  const r = await train(opts, quiet);
  const losses = trainLines(opts.out).map((l) => l.loss);
  assert.equal(losses.length, 30);
  assert.ok(Math.abs(losses[0] - Math.log(256)) < 0.1, `first loss ${losses[0]} should be ≈ ln 256`);
  const tail = losses.slice(-5).reduce((a, b) => a + b, 0) / 5;
  assert.ok(tail < losses[0] - 1.5, `loss went from ${losses[0]} to ${tail} (mean of the last 5)`);
  assert.ok(r.val_loss !== null && r.val_loss < losses[0] - 1.5, `val loss ${r.val_loss}`);
});

test('Ctrl-C writes a checkpoint at the last step, exits 130, and --resume continues', async () => {
  const out = fresh('sigint');
  const { child, done } = keelAsync(['train', { config: microJson, data: corpus, steps: 1000000, batch: 4, evalTokens: 257, checkpointEvery: 0, out }]);
  const deadline = Date.now() + 30_000;
  while (trainLines(out).length < 3) {
    assert.ok(Date.now() < deadline, 'no training lines within 30 s');
    assert.equal(child.exitCode, null, 'the trainer exited before the interrupt');
    await sleep(20);
  }
  child.kill('SIGINT');
  const r = await done;
  assert.equal(r.status, 130, `exit ${r.status} / ${r.signal}\n${r.stderr}`);
  assert.match(r.stderr, /resume/);
  assert.doesNotMatch(r.stderr, /^\s+at /m);

  const last = trainLines(out).at(-1)!.step;
  assert.ok(last >= 3);
  assert.equal(listCheckpoints(out).at(-1), last, 'the newest checkpoint is the last step trained');
  const ck = loadCheckpoint(out);
  assert.equal(ck.state.step, last);
  assert.equal(ck.state.cursor, last);
  assert.deepEqual(
    walk(out).filter((p) => path.basename(p).startsWith('.')),
    [],
  );

  // Resume (saved flags, steps overridden so it finishes now) runs to the requested step.
  const target = last + 3;
  const r2 = keel(['train', { resume: out, steps: target, json: true }]);
  assert.equal(r2.status, 0, r2.stderr);
  const summary = JSON.parse(r2.stdout.trim().split('\n').at(-1)!);
  assert.equal(summary.steps, target);
  assert.equal(summary.run_dir, path.resolve(out));
  assert.deepEqual(
    trainLines(out).map((l) => l.step),
    Array.from({ length: target }, (_, i) => i + 1),
  );
  assert.equal(listCheckpoints(out).at(-1), target);
});

test('--json: the last stdout line is the summary', () => {
  const out = fresh('json');
  const r = keel(['train', { config: microJson, data: corpus, steps: 5, batch: 4, accum: 2, evalTokens: 257, out, json: true }]);
  assert.equal(r.status, 0, r.stderr);
  const s = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
  assert.deepEqual(Object.keys(s).sort(), [
    'b_simple',
    'b_simple_tokens',
    'optimizer',
    'optimizer_state_bytes',
    'optimizer_state_bytes_per_param',
    'params',
    'rollbacks',
    'run_dir',
    'seconds',
    'skipped_steps',
    'spikes',
    'steps',
    'tokens',
    'tokens_per_s',
    'train_loss',
    'val_loss',
  ]);
  // AdamW keeps two float32 moments per parameter.
  assert.equal(s.optimizer, 'adamw');
  assert.equal(s.optimizer_state_bytes, 8 * s.params);
  assert.equal(s.optimizer_state_bytes_per_param, 8);
  // --accum 2: the noise scale is measured from the two micro-batches of every step.
  assert.ok(s.b_simple === null || s.b_simple_tokens === s.b_simple * MICRO.blockSize);
  assert.ok('b_simple' in trainLines(out).at(-1)!);
  assert.equal(s.run_dir, path.resolve(out));
  assert.equal(s.steps, 5);
  assert.equal(s.tokens, 5 * 2 * 4 * MICRO.blockSize);
  const lines = trainLines(out);
  assert.equal(s.train_loss, lines.at(-1)!.loss);
  assert.equal(
    s.val_loss,
    metrics(out)
      .filter((x) => 'val_loss' in x)
      .at(-1)!.val_loss,
  );
  assert.ok(s.tokens_per_s > 0 && s.seconds > 0);
});

test('--optimizer and --opt: Tiger with its options; bad options are one-line errors', () => {
  const out = fresh('tiger');
  const r = keel([
    'train',
    { config: microJson, data: corpus, steps: 3, batch: 2, accum: 2, evalTokens: 257, out, json: true },
    { optimizer: 'tiger', opt: ['beta=0.9', 'lazyEmbedding=true'], lr: 0.02, schedule: 'piecewise', lrPoints: '2:1' },
  ]);
  assert.equal(r.status, 0, r.stderr);
  // Piecewise from an implied (0, 0): half the lr at step 1, all of it from step 2 on.
  assert.deepEqual(
    trainLines(out).map((l) => l.lr),
    [0.01, 0.02, 0.02],
  );
  const s = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
  assert.equal(s.optimizer, 'tiger');
  assert.equal(s.optimizer_state_bytes, 4 * s.params);
  const cfg = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
  assert.deepEqual(cfg.train.optimizerOptions, { beta: 0.9, lazyEmbedding: true });
  assert.equal(loadCheckpoint(out).optimizer.metadata.optimizer, 'tiger');
  assertTrainRefuses({ config: microJson, data: corpus, fresh }, [
    [['--optimizer', 'lion', '--eps', '1e-8'], /lion has no option "eps"/],
    [['--optimizer', 'adamw', '--opt', 'epsMode=nowhere'], /epsMode must be one of/],
    [['--optimizer', 'adafactor', '--opt', 'relativeStep=true', '--lr', '1e-3'], /drop --lr/],
    [['--optimizer', 'nadam'], /nadam/],
  ]);
  // Resuming with another optimizer is refused.
  const e = keel(['train', { resume: out, steps: 4, optimizer: 'adamw' }]);
  assert.equal(e.status, 2);
  assert.match(e.stderr, /checkpoint holds tiger state/);
});

test('--precision bf16: trains, differs from fp32 only slightly, is saved with the run and kept on resume (bit-identical)', async () => {
  const opts = (out: string, over: Partial<TrainOptions> = {}) => trainOptions(out, corpus, { steps: 6, checkpointEvery: 3, ...over });
  const fp = await train(opts(fresh('fp32')), quiet);
  const bf = await train(opts(fresh('bf16'), { precision: 'bf16' }), quiet);
  assert.notEqual(bf.train_loss, fp.train_loss, 'bf16 operands change the numbers');
  assert.ok(Math.abs(bf.train_loss - fp.train_loss) < 0.05 * fp.train_loss, `${bf.train_loss} vs ${fp.train_loss}`);
  // Resume from step 3 without the flag: the saved precision carries over (CLI), and the run ends identically.
  const out = fresh('bf16-cli');
  const args = ['train', { config: microJson, data: corpus, steps: 6, batch: 4, evalTokens: 257, checkpointEvery: 3, precision: 'bf16' }];
  let r = keel([...args, { out }]);
  assert.equal(r.status, 0, r.stderr);
  const whole = read(path.join(out, 'checkpoints/step-6/model.safetensors'));
  const part = fresh('bf16-part');
  r = keel([...args, { steps: 6, out: part }]);
  fs.rmSync(path.join(part, 'checkpoints/step-6'), { recursive: true });
  r = keel(['train', { resume: path.join(part, 'checkpoints/step-3') }]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(loadCheckpoint(path.join(part, 'checkpoints/step-6')).state.options.precision, 'bf16');
  assert.deepEqual(read(path.join(part, 'checkpoints/step-6/model.safetensors')), whole);
});

// The trainer with the gradient noise scale and batch-size ramps: b_simple is logged and
// summarised, ramps set each step's batch and rescale the lr by the chosen rule, and both
// continue exactly across --resume.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { checkpointDir } from '../src/train/checkpoints.ts';
import { train, type TrainOptions } from '../src/train/trainer.ts';
import { assertTrainRefuses, MICRO, tempRoot, trainLines, trainOptions, writeCorpus, writeJson } from './helpers.ts';

const { root, fresh } = tempRoot('batch');
const corpus = writeCorpus(path.join(root, 'data'));
const microJson = writeJson(path.join(root, 'micro.json'), MICRO);
const quiet = { progress: false, report: false } as const;
const base = (out: string, over: Partial<TrainOptions> = {}) => trainOptions(out, corpus, { steps: 10, batch: 2, accum: 4, keep: 100, ...over });

test('noise scale: every step with ≥ 2 micro-batches logs b_simple; the summary carries the last', async () => {
  const out = fresh('noise');
  const s = await train(base(out), quiet);
  const lines = trainLines(out);
  assert.ok(
    lines.every((l) => 'b_simple' in l && 'b_simple_tokens' in l && 'b_simple_attention' in l),
    JSON.stringify(lines[0]),
  );
  const last = lines.at(-1)!;
  assert.equal(s.b_simple, last.b_simple);
  if (s.b_simple !== null) assert.equal(s.b_simple_tokens, s.b_simple * MICRO.blockSize);
  const one = await train(base(fresh('accum1'), { accum: 1, steps: 2 }), quiet);
  assert.equal(one.b_simple, null);
});

test('ramp: steps:2@0,4@3 with the linear rule: batch, micro-batches, tokens and lr per step', async () => {
  const out = fresh('ramp');
  const s = await train(base(out, { batchRamp: 'steps:2@0,4@3,8@6', lrRule: 'linear', schedule: 'constant', warmup: 0, lr: 1e-3, minLr: 1e-3 }), quiet);
  const lines = trainLines(out);
  assert.deepEqual(
    lines.map((l) => l.batch),
    [2, 2, 2, 4, 4, 4, 8, 8, 8, 8],
  );
  assert.deepEqual(
    lines.map((l) => l.lr),
    [2, 2, 2, 4, 4, 4, 8, 8, 8, 8].map((b) => (1e-3 * b) / 8),
  );
  assert.equal(s.tokens, (3 * 2 + 3 * 4 + 4 * 8) * MICRO.blockSize);
  // The data cursor counts micro-batches of 2: 3·1 + 3·2 + 4·4.
  const st = JSON.parse(fs.readFileSync(path.join(checkpointDir(out, 10), 'trainer.json'), 'utf8'));
  assert.equal(st.cursor, 3 + 6 + 16);
});

test('ramp and noise scale continue exactly across --resume', async () => {
  const over = { batchRamp: 'steps:2@0,8@4', lrRule: 'sqrt' as const, checkpointEvery: 5 };
  const a = fresh('straight');
  await train(base(a, over), quiet);
  const b = fresh('split');
  let n = 0;
  await train(base(b, over), { ...quiet, shouldStop: () => ++n >= 3 });
  await train(base(b, over), quiet, b);
  for (const f of ['model.safetensors', 'optimizer.safetensors']) {
    assert.ok(fs.readFileSync(path.join(checkpointDir(a, 10), f)).equals(fs.readFileSync(path.join(checkpointDir(b, 10), f))), f);
  }
  const pick = (dir: string) =>
    trainLines(dir)
      .filter((l) => l.step > 3)
      .map((l) => [l.step, l.batch, l.lr, l.b_simple]);
  assert.deepEqual(pick(b).slice(-7), pick(a).slice(-7));
});

test('CLI: --lr-rule sgd needs --b-noise; a bad --batch-ramp is a usage error', () => {
  assertTrainRefuses({ config: microJson, data: corpus, fresh }, [
    [['--lr-rule', 'sgd'], /needs --b-noise/],
    [['--batch-ramp', 'zigzag'], /zigzag/],
  ]);
});

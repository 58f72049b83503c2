// LAWA and EMA during training: the saved averages equal their definitions computed from the
// raw weights (bit for bit), training is unchanged, the averages are evaluated and logged, and
// they continue exactly across --resume. Plus the lerp kernel they use.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { readSafetensors } from '../src/io/safetensors.ts';
import { lerp } from '../src/kernels/reference/optim.ts';
import { checkpointDir, listCheckpoints } from '../src/train/checkpoints.ts';
import { train, type TrainOptions } from '../src/train/trainer.ts';
import { assertTrainRefuses, keel, metrics, MICRO, tempRoot, trainOptions, writeCorpus, writeJson } from './helpers.ts';
import { eachMode, nk } from './native_modes.ts';

const { root, fresh } = tempRoot('averaging');
const corpus = writeCorpus(path.join(root, 'data'));
const quiet = { progress: false, report: false } as const;
const base = (out: string, over: Partial<TrainOptions> = {}) => trainOptions(out, corpus, { steps: 12, keep: 100, ...over });

/** The flat weights of a safetensors file, in file (= layout) order. */
function flat(file: string): Float32Array {
  const f = readSafetensors(file);
  const parts = [...f.tensors.values()];
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

test('LAWA and EMA files equal their definitions over the raw weights; training is unchanged', async () => {
  const plain = fresh('plain');
  await train(base(plain, { checkpointEvery: 1 }), quiet);
  const avg = fresh('avg');
  await train(base(avg, { checkpointEvery: 6, lawaK: 3, lawaEvery: 2, ema: 0.9, evalEvery: 6 }), quiet);
  const w = (dir: string, s: number, file = 'model.safetensors') => flat(path.join(checkpointDir(dir, s), file));
  assert.deepEqual(w(avg, 12), w(plain, 12), 'averaging does not change training');
  // LAWA at 12: mean of the weights after steps 8, 10, 12 (float64 sum, rounded once).
  const snaps = [8, 10, 12].map((s) => w(plain, s));
  const want = Float32Array.from(snaps[0], (_, i) => (snaps[0][i] + snaps[1][i] + snaps[2][i]) / 3);
  assert.deepEqual(w(avg, 12, 'lawa.safetensors'), want);
  assert.deepEqual(JSON.parse(readSafetensors(path.join(checkpointDir(avg, 12), 'lawa.safetensors')).metadata.lawa_window), [8, 10, 12]);
  // EMA: starts from the weights after step 1, then θ_ema += (1 − β)(θ − θ_ema) in float32.
  const e = w(plain, 1).slice();
  for (let s = 2; s <= 12; s++) lerp(e, w(plain, s), e.length, 1 - 0.9);
  assert.deepEqual(w(avg, 12, 'ema.safetensors'), e);
  const evals = metrics(avg).filter((m) => 'val_loss' in m);
  assert.deepEqual(
    evals.map((m) => m.step),
    [6, 12],
  );
  for (const m of evals) assert.ok(typeof m.val_loss_lawa === 'number' && typeof m.val_loss_ema === 'number', JSON.stringify(m));
  // The averages are different weights, so (almost surely) a different loss.
  assert.notEqual(evals[1].val_loss_lawa, evals[1].val_loss);
});

test('LAWA and EMA continue exactly across --resume', async () => {
  const over = { checkpointEvery: 4, lawaK: 2, lawaEvery: 3, ema: 0.95, emaWarmup: true };
  const straight = fresh('straight');
  await train(base(straight, over), quiet);
  const split = fresh('split');
  let n = 0;
  await train(base(split, over), { ...quiet, shouldStop: () => ++n >= 5 });
  assert.deepEqual(listCheckpoints(split), [4, 5]);
  await train(base(split, over), quiet, split);
  for (const f of ['model.safetensors', 'lawa.safetensors', 'ema.safetensors']) {
    assert.deepEqual(flat(path.join(checkpointDir(split, 12), f)), flat(path.join(checkpointDir(straight, 12), f)), f);
  }
});

test('lerp kernel: native equals the float32 reference bit for bit', () => {
  for (const N of [1, 7, 1000, 200_003]) {
    const a = Float32Array.from({ length: N }, (_, i) => Math.sin(i)),
      b = Float32Array.from({ length: N }, (_, i) => Math.cos(i * 0.7));
    const want = a.slice();
    lerp(want, b, N, 0.001);
    eachMode((mode) => {
      const got = a.slice();
      nk.lerp(got, b, N, 0.001);
      assert.deepEqual(got, want, `${N} ${mode}`);
    });
  }
});

test('CLI: --lawa k[:every] and --ema write lawa.safetensors / ema.safetensors; bad values are one-line errors', () => {
  const microJson = writeJson(path.join(root, 'micro.json'), MICRO);
  const out = fresh('cli');
  const r = keel(['train', { config: microJson, data: corpus, steps: 4, batch: 2, evalTokens: 257, out, lawa: '2:2', ema: 0.99 }]);
  assert.equal(r.status, 0, r.stderr);
  for (const f of ['lawa.safetensors', 'lawa_state.safetensors', 'ema.safetensors']) assert.ok(fs.existsSync(path.join(checkpointDir(out, 4), f)), f);
  const ev = keel(['eval', { checkpoint: path.join(checkpointDir(out, 4), 'lawa.safetensors'), data: corpus, tokens: 257, json: true }]);
  assert.equal(ev.status, 0, ev.stderr);
  assertTrainRefuses({ config: microJson, data: corpus, fresh }, [
    [['--lawa', '0'], /--lawa 0: expected k\[:every\]/],
    [['--lawa', '3:x'], /--lawa 3:x/],
    [['--ema', '1'], /β must be in \(0, 1\)/],
  ]);
});

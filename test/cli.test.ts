// The command line as a user meets it: every user mistake is exit code 2 with one line on
// stderr naming the problem and nothing half-written; --help everywhere; `keel eval --json`
// against an independent float64 forward pass; `keel bench --json`.
import { test, describe, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { benchCommand } from '../src/cli/bench.ts';
import { evalCommand } from '../src/cli/eval.ts';
import { reportCommand } from '../src/cli/report.ts';
import { trainCommand } from '../src/cli/train.ts';
import { writeSafetensors } from '../src/io/safetensors.ts';
import { nativeKernels } from '../src/kernels/native.ts';
import { referenceKernels } from '../src/kernels/reference/index.ts';
import { configToMetadata, loadModel, namedTensors, saveModel } from '../src/model/checkpoint.ts';
import type { GPTConfig } from '../src/model/config.ts';
import { GPT } from '../src/model/gpt.ts';
import { paramLayout } from '../src/model/params.ts';
import { train } from '../src/train/trainer.ts';
import { assertUserError, keel, MICRO, tempRoot, trainOptions, walk, writeCorpus, writeJson } from './helpers.ts';

const { root, fresh } = tempRoot('cli');
const corpus = writeCorpus(path.join(root, 'data'));
const microJson = writeJson(path.join(root, 'micro.json'), MICRO);
const quiet = { progress: false, report: false } as const;
const quick = ['--steps', '2', '--batch', '2', '--eval-tokens', '257'];

/** A finished micro run (steps 4, checkpoints at 2 and 4) that tests copy and damage. */
let run: string;
before(async () => {
  run = fresh('run');
  await train(trainOptions(run, corpus, { steps: 4, checkpointEvery: 2, lr: 1e-2 }), quiet);
});

/** The copy of the finished run, for a test to damage. */
function copyRun(name: string): string {
  const dir = fresh(name);
  fs.cpSync(run, dir, { recursive: true });
  return dir;
}

/** Snapshot of every file of a directory (path → bytes), to check that a failed command changed nothing. */
function snapshot(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const p of walk(dir)) {
    const full = path.join(dir, p);
    if (fs.statSync(full).isFile()) out.set(p, fs.readFileSync(full).toString('base64'));
  }
  return out;
}

describe('user mistakes: exit 2, one clear line, nothing written', () => {
  const badData = (name: string, make: (dir: string) => string, why: RegExp) =>
    test(name, () => {
      const dir = fresh('bad-data');
      fs.mkdirSync(dir);
      const data = make(dir);
      const out = path.join(dir, 'out');
      assertUserError(keel(['train', { config: microJson, data }, ...quick, { out }]), why);
      assert.equal(fs.existsSync(out), false, `--out was created: ${fs.existsSync(out) ? walk(out) : ''}`);
    });

  badData('missing --data path', (d) => path.join(d, 'no-such.txt'), /no-such\.txt does not exist/);
  badData('empty data file', (d) => writeCorpus(d, '', 'empty.txt'), /empty\.txt is empty/);
  badData(
    'a directory with no files',
    (d) => {
      fs.mkdirSync(path.join(d, 'texts', 'sub'), { recursive: true });
      return path.join(d, 'texts');
    },
    /texts holds no non-empty files/,
  );
  badData(
    'a non-UTF-8 file',
    (d) => {
      const f = path.join(d, 'latin1.txt');
      fs.writeFileSync(f, Buffer.concat([Buffer.from('caf'), Buffer.from([0xe9]), Buffer.from(' au lait\n'.repeat(400))]));
      return f;
    },
    /latin1\.txt is not UTF-8 text \(invalid byte at offset 3/,
  );
  badData('a corpus too small for the block size', (d) => writeCorpus(d, 'tiny text', 'small.txt'), /small\.txt has 9 bytes, too few/);

  const badTrain = (name: string, args: string[], why: RegExp) =>
    test(name, () => {
      const out = fresh('bad-args');
      assertUserError(keel(['train', { data: corpus }, ...quick, { out }, ...args]), why);
      assert.equal(fs.existsSync(out), false, '--out was created');
    });

  badTrain('unknown key in a JSON config', ['--config', writeJson(path.join(root, 'unknown-key.json'), { ...MICRO, nLayers: 2 })], /unknown key "nLayers"/);
  badTrain(
    'wrong type in a JSON config',
    ['--config', writeJson(path.join(root, 'wrong-type.json'), { ...MICRO, nLayer: '4' })],
    /"nLayer" must be a positive integer, got "4"/,
  );
  badTrain(
    'missing key in a JSON config',
    ['--config', writeJson(path.join(root, 'missing-key.json'), { nLayer: 1, nHead: 2, nEmbd: 16, blockSize: 16 })],
    /missing key "vocabSize"/,
  );
  badTrain('a JSON config that does not parse', ['--config', writeCorpus(root, '{"nLayer": 1,', 'broken.json')], /broken\.json is not valid JSON/);
  badTrain('unknown preset name', ['--config', 'huge'], /unknown config "huge"/);
  badTrain('non-numeric --lr', ['--config', microJson, '--lr', 'fast'], /--lr.*"fast"/);
  badTrain('negative --steps', ['--config', microJson, '--steps', '-3'], /--steps.*-3/);
  badTrain('fractional --batch', ['--config', microJson, '--batch', '2.5'], /--batch.*2\.5/);
  badTrain('unknown flag', ['--config', microJson, '--frobnicate'], /unknown option '--frobnicate'/);
  badTrain('unknown --schedule', ['--config', microJson, '--schedule', 'zigzag'], /zigzag/);
  badTrain('--schedule piecewise without points', ['--config', microJson, '--schedule', 'piecewise'], /needs --lr-points/);
  badTrain('bad --lr-points', ['--config', microJson, '--schedule', 'piecewise', '--lr-points', '0:1,5'], /"5" is not STEP:MULTIPLIER/);
  badTrain('--lr-points without piecewise', ['--config', microJson, '--lr-points', '0:1'], /only with --schedule piecewise/);
  badTrain('unknown --optimizer', ['--config', microJson, '--optimizer', 'nadam'], /nadam/);
  badTrain('--opt without =', ['--config', microJson, '--opt', 'beta2'], /expected KEY=VALUE/);
  badTrain('--min-lr above --lr', ['--config', microJson, '--lr', '1e-3', '--min-lr', '1e-2'], /--min-lr .* is above --lr/);
  badTrain('--eval-tokens below one window', ['--config', microJson, '--eval-tokens', '10'], /--eval-tokens 10 is too few/);

  test('unknown command (commander adds a "did you mean" hint)', () => {
    const r = keel(['trian']);
    assert.equal(r.status, 2);
    assert.doesNotMatch(r.stderr, /^ {4}at /m);
    assert.match(r.stderr.split('\n')[0], /unknown command 'trian'/);
    assert.match(r.stderr, /Did you mean train\?/);
  });

  test('eval: missing checkpoint', () => {
    assertUserError(keel(['eval', { checkpoint: path.join(root, 'nowhere'), data: corpus }]), /nowhere does not exist/);
  });

  test('eval: --checkpoint is required', () => {
    assertUserError(keel(['eval', { data: corpus }]), /--checkpoint/);
  });

  test('eval: a run directory without checkpoints', () => {
    const dir = fresh('empty-run');
    fs.mkdirSync(dir);
    assertUserError(keel(['eval', { checkpoint: dir, data: corpus }]), /neither a checkpoint nor a run directory/);
  });

  test('eval: truncated model.safetensors (cut in half)', () => {
    const dir = copyRun('truncated');
    const file = path.join(dir, 'checkpoints', 'step-4', 'model.safetensors');
    const bytes = fs.readFileSync(file);
    fs.writeFileSync(file, bytes.subarray(0, bytes.length >> 1));
    assertUserError(keel(['eval', { checkpoint: dir, data: corpus }]), /model\.safetensors.*truncated/);
    assertUserError(keel(['eval', { checkpoint: file, data: corpus }]), /model\.safetensors.*truncated/);
    // Resuming from it fails the same way, and appends nothing to the run.
    const before_ = snapshot(dir);
    assertUserError(keel(['train', { resume: dir, steps: 6 }]), /model\.safetensors.*truncated/);
    assert.deepEqual(snapshot(dir), before_);
  });

  test('eval: a file that is not safetensors at all', () => {
    assertUserError(keel(['eval', { checkpoint: corpus, data: corpus }]), /header length .* over the .* limit|not a safetensors/);
  });

  test('eval: --tokens below one window', () => {
    assertUserError(keel(['eval', { checkpoint: run, data: corpus, tokens: 5 }]), /--tokens 5 is too few/);
  });

  test('resume: checkpoint missing optimizer.safetensors', () => {
    const dir = copyRun('no-optimizer');
    fs.rmSync(path.join(dir, 'checkpoints', 'step-4', 'optimizer.safetensors'));
    const before_ = snapshot(dir);
    assertUserError(keel(['train', { resume: dir, steps: 6 }]), /step-4 is incomplete: optimizer\.safetensors is missing/);
    assert.deepEqual(snapshot(dir), before_, 'the failed resume changed the run');
  });

  test('resume: trainer.json that is not JSON', () => {
    const dir = copyRun('bad-trainer');
    fs.writeFileSync(path.join(dir, 'checkpoints', 'step-4', 'trainer.json'), '{"version": 1, "st');
    assertUserError(keel(['train', { resume: dir, steps: 6 }]), /trainer\.json is not valid JSON/);
  });

  test('resume: model.safetensors of another architecture', () => {
    const dir = copyRun('foreign');
    const other: GPTConfig = { ...MICRO, nLayer: 2, nEmbd: 32 };
    const m = new GPT(other, nativeKernels(), { maxBatch: 1 });
    m.init(3);
    saveModel(path.join(dir, 'checkpoints', 'step-4', 'model.safetensors'), other, m.params);
    const before_ = snapshot(dir);
    assertUserError(keel(['train', { resume: dir, steps: 6 }]), /describe different models/);
    assert.deepEqual(snapshot(dir), before_);
  });

  test('resume: --config cannot change the model', () => {
    const dir = copyRun('reconfig');
    assertUserError(keel(['train', { resume: dir, config: 'tiny' }]), /--config cannot change when resuming/);
  });

  test('eval: tensor shapes that do not match the config in the metadata', () => {
    // Tensors of a C = 32 model under a header that claims the micro config.
    const wide: GPTConfig = { ...MICRO, nEmbd: 32 };
    const file = path.join(fresh('mismatch'), 'model.safetensors');
    fs.mkdirSync(path.dirname(file));
    const layout = paramLayout(wide);
    writeSafetensors(file, namedTensors(layout, new Float32Array(layout.total)), { format: 'pt', config: configToMetadata(MICRO) });
    assertUserError(keel(['eval', { checkpoint: file, data: corpus }]), /"transformer\.wte\.weight" has shape \[256,32\].*another architecture/);
  });

  test('eval: a tensor missing from the file', () => {
    const layout = paramLayout(MICRO);
    const file = path.join(fresh('missing-tensor'), 'model.safetensors');
    fs.mkdirSync(path.dirname(file));
    const tensors = namedTensors(layout, new Float32Array(layout.total)).filter((t) => t.name !== 'transformer.ln_f.bias');
    writeSafetensors(file, tensors, { format: 'pt', config: configToMetadata(MICRO) });
    assertUserError(keel(['eval', { checkpoint: file, data: corpus }]), /no tensor "transformer\.ln_f\.bias"/);
  });

  test('--out pointing at an existing run, without --resume', () => {
    const dir = copyRun('existing');
    const before_ = snapshot(dir);
    assertUserError(keel(['train', { config: microJson, data: corpus }, ...quick, { out: dir }]), /already holds a run: continue it with --resume/);
    assert.deepEqual(snapshot(dir), before_, 'the existing run was modified');
  });

  test('--out combined with --resume', () => {
    const dir = copyRun('out-and-resume');
    const out = fresh('elsewhere');
    assertUserError(keel(['train', { resume: dir, out }]), /--out cannot be combined with --resume/);
    assert.equal(fs.existsSync(out), false);
  });
});

describe('--help', () => {
  const commands: [string, () => Command][] = [
    ['train', trainCommand],
    ['eval', evalCommand],
    ['bench', benchCommand],
    ['report', reportCommand],
  ];

  test('keel --help lists every command', () => {
    const r = keel(['--help']);
    assert.equal(r.status, 0, r.stderr);
    for (const [name] of commands) assert.match(r.stdout, new RegExp(`^\\s+${name}\\b`, 'm'), `keel --help lacks ${name}`);
  });

  for (const [name, make] of commands) {
    test(`keel ${name} --help lists its flags`, () => {
      const r = keel([name, '--help']);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stderr, '');
      assert.match(r.stdout, new RegExp(`^Usage: keel ${name}`, 'm'));
      const flags = make().options.map((o) => o.long!);
      assert.ok(flags.includes('--json'), `${name} has no --json`);
      for (const flag of flags) assert.ok(r.stdout.includes(flag), `keel ${name} --help does not list ${flag}`);
    });
  }

  test('keel help train is the same as keel train --help', () => {
    const a = keel(['help', 'train']);
    assert.equal(a.status, 0);
    assert.equal(a.stdout, keel(['train', '--help']).stdout);
  });
});

/** Independent loss: the float64 TypeScript reference model, one window at a time. */
function referenceLoss(modelFile: string, bytes: Uint8Array, maxTokens: number): { loss: number; tokens: number } {
  const { config, params } = loadModel(modelFile);
  const T = config.blockSize;
  const ref = new GPT<Float64Array>(config, referenceKernels<Float64Array>(), { maxBatch: 1, ctor: Float64Array });
  ref.params.set(params);
  const n = Math.min(maxTokens, bytes.length);
  const windows = Math.floor((n - 1) / T);
  let sum = 0;
  for (let w = 0; w < windows; w++) {
    const inputs = Int32Array.from(bytes.subarray(w * T, w * T + T));
    const targets = Int32Array.from(bytes.subarray(w * T + 1, w * T + T + 1));
    sum += ref.forward(inputs, targets, 1);
  }
  return { loss: sum / windows, tokens: windows * T };
}

describe('keel eval --json', () => {
  test('a freshly initialised model scores ≈ ln 256', () => {
    const file = path.join(fresh('init'), 'model.safetensors');
    fs.mkdirSync(path.dirname(file));
    const m = new GPT(MICRO, nativeKernels(), { maxBatch: 1 });
    m.init(42);
    saveModel(file, MICRO, m.params);
    const r = keel(['eval', { checkpoint: file, data: corpus, tokens: 2049, json: true }]);
    assert.equal(r.status, 0, r.stderr);
    const got = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
    assert.deepEqual(Object.keys(got).sort(), ['data', 'loss', 'tokens']);
    assert.equal(got.data, corpus);
    assert.equal(got.tokens, 2048);
    assert.ok(Math.abs(got.loss - Math.log(256)) < 0.02, `fresh model loss ${got.loss} vs ln 256 = ${Math.log(256)}`);
  });

  test('tokens = ⌊(N−1)/T⌋·T and the loss matches a float64 reference forward pass', () => {
    const bytes = new Uint8Array(fs.readFileSync(corpus));
    const T = MICRO.blockSize;
    const modelFile = path.join(run, 'checkpoints', 'step-4', 'model.safetensors');
    for (const N of [17, 1000, 1601]) {
      const r = keel(['eval', { checkpoint: run, data: corpus, tokens: N, batch: 3, json: true }]);
      assert.equal(r.status, 0, r.stderr);
      const got = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
      assert.equal(got.tokens, Math.floor((N - 1) / T) * T, `--tokens ${N}`);
      const want = referenceLoss(modelFile, bytes, N);
      assert.equal(got.tokens, want.tokens);
      assert.ok(Math.abs(got.loss - want.loss) < 1e-5 * want.loss, `--tokens ${N}: keel ${got.loss} vs reference ${want.loss}`);
    }
  });

  test('--tokens beyond the file scores the whole file', () => {
    const small = writeCorpus(fresh('small'), 'abcdefghij'.repeat(10), 'small.txt'); // 100 bytes
    const r = keel(['eval', { checkpoint: run, data: small, tokens: 100000, json: true }]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout.trim()).tokens, Math.floor(99 / MICRO.blockSize) * MICRO.blockSize);
  });
});

test('keel bench --json prints the documented keys with positive numbers', () => {
  const r = keel(['bench', { config: microJson, steps: 3, warmup: 1, batch: 2, json: true }]);
  assert.equal(r.status, 0, r.stderr);
  const b = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
  for (const key of ['tokens_per_s', 'step_ms', 'params', 'model_gflops', 'matmul_gflops']) {
    assert.equal(typeof b[key], 'number', `${key}: ${b[key]}`);
    assert.ok(Number.isFinite(b[key]) && b[key] > 0, `${key} = ${b[key]}`);
  }
  assert.equal(b.config, microJson);
  assert.equal(b.batch, 2);
  assert.equal(b.params, paramLayout(MICRO).total);
  // tokens/s and ms/step describe the same steps: B·T tokens per step.
  assert.ok(Math.abs(b.tokens_per_s * b.step_ms - 2 * MICRO.blockSize * 1000) < 1e-6 * b.tokens_per_s * b.step_ms);
  assert.equal(b.optimizer, 'adamw');
  assert.equal(b.optimizer_state_bytes, 8 * b.params);
  assert.ok(b.optimizer_ms > 0 && b.optimizer_ms < b.step_ms);
});

test('keel bench --optimizer adafactor --opt beta1=0.9 times that optimizer', () => {
  const r = keel(['bench', { config: microJson, steps: 2, warmup: 1, batch: 2, optimizer: 'adafactor', opt: 'beta1=0.9', json: true }]);
  assert.equal(r.status, 0, r.stderr);
  const b = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
  assert.equal(b.optimizer, 'adafactor');
  // Momentum (4 B/param) plus the factored second moment: just above 4 B/param.
  assert.ok(b.optimizer_state_bytes > 4 * b.params && b.optimizer_state_bytes < 5 * b.params, String(b.optimizer_state_bytes));
});

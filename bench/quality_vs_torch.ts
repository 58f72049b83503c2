// Quality at equal wall time: the default `keel train` run (what `npm start` does) against the
// PyTorch peer trained for the same number of seconds on the same corpus, both scored on the
// peer's validation windows (first 64 windows of the last 5% of the corpus bytes).
//   node --import tsx bench/quality_vs_torch.ts [--json] [-- extra keel train flags]
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadCorpus } from '../src/data/corpus.ts';
import { nativeKernels } from '../src/kernels/native.ts';
import { loadModel } from '../src/model/checkpoint.ts';
import { GPT } from '../src/model/gpt.ts';
import { evaluate } from '../src/train/evaluate.ts';

const argv = process.argv.slice(2);
const json = argv.includes('--json');
const dash = argv.indexOf('--');
const extra = dash >= 0 ? argv.slice(dash + 1) : [];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-quality-'));
const corpusFile = path.join(tmp, 'corpus.txt');
const corpus = loadCorpus().tokens as Uint8Array; // bytes: the text itself
fs.writeFileSync(corpusFile, corpus);

const out = path.join(tmp, 'run');
const t0 = performance.now();
const k = spawnSync(process.execPath, ['bin/keel.js', 'train', '--out', out, '--json', ...extra], { encoding: 'utf8' });
const keelSeconds = (performance.now() - t0) / 1000;
if (k.status !== 0) throw new Error(k.stderr);
const summary = JSON.parse(k.stdout.trim().split('\n').pop()!);
const cfg = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));

const peer = spawnSync(
  '/usr/bin/python3',
  [path.resolve('bench/torch_gpt.py'), '--data', corpusFile, '--seconds', keelSeconds.toFixed(1), '--batch', String(cfg.train.batch), '--json'],
  { encoding: 'utf8', env: { ...process.env, OPENBLAS_NUM_THREADS: '2' } },
);
if (peer.status !== 0) throw new Error(peer.stderr);
const torch = JSON.parse(peer.stdout.trim().split('\n').pop()!);

// The peer's validation windows: bytes from int(0.95·len), first 64 windows of T.
const { config, params } = loadModel(path.join(summary.run_dir, 'checkpoints', `step-${summary.steps}`, 'model.safetensors'));
const val = corpus.subarray(Math.floor(corpus.length * 0.95));
const model = new GPT(config, nativeKernels(), { maxBatch: 16 });
model.params.set(params);
const keelVal = evaluate(model, val, 64 * config.blockSize + 1).loss;
const result = {
  seconds: keelSeconds,
  keel_steps: summary.steps,
  keel_tokens: summary.tokens,
  keel_val_loss: keelVal,
  torch_steps: torch.steps,
  torch_tokens: torch.tokens,
  torch_val_loss: torch.val_loss,
  torch: torch.engine,
};
if (json) console.log(JSON.stringify(result));
else {
  console.log(`wall time ${keelSeconds.toFixed(0)} s each`);
  console.log(`keel:    ${result.keel_steps} steps, ${result.keel_tokens} tokens, val loss ${keelVal.toFixed(4)}`);
  console.log(`pytorch: ${result.torch_steps} steps, ${result.torch_tokens} tokens, val loss ${Number(torch.val_loss).toFixed(4)}`);
}
fs.rmSync(tmp, { recursive: true, force: true });

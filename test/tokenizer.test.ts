// Tokenizers and nanoGPT token files: GPT-2's BPE round-trips text and gives GPT-2's known ids;
// .bin files read as nanoGPT writes them (uint16, train.bin + val.bin); a gpt2 run trains, samples
// deterministically, evaluates its own val.bin, and loads in the PyTorch parity script.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { Batcher } from '../src/data/batcher.ts';
import { corpusSplits, loadCorpus } from '../src/data/corpus.ts';
import { tokenizerOf } from '../src/data/tokenizer.ts';
import { TokenFile } from '../src/data/tokens.ts';
import { nativeKernels } from '../src/kernels/native.ts';
import { loadModel } from '../src/model/checkpoint.ts';
import { GPT } from '../src/model/gpt.ts';
import { sample } from '../src/model/sample.ts';
import { Rng } from '../src/util/rng.ts';
import { assertSeededSampling, assertUserError, englishText, keel, metrics, tempRoot, writeCorpus, writeJson } from './helpers.ts';

const { root, fresh } = tempRoot('tokenizer');
const gpt2 = tokenizerOf('gpt2');
const utf8 = (s: string) => new TextEncoder().encode(s);

/** A nanoGPT-style token file: the ids as little-endian uint16. */
function writeBin(file: string, ids: ArrayLike<number>): string {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const buf = Buffer.alloc(ids.length * 2);
  for (let i = 0; i < ids.length; i++) buf.writeUInt16LE(ids[i], 2 * i);
  fs.writeFileSync(file, buf);
  return file;
}

describe('gpt2 tokenizer', () => {
  test('GPT-2 ids of known strings; special-token names in text are plain text', () => {
    assert.deepEqual([...gpt2.encode(utf8('Hello world'))], [15496, 995]);
    assert.deepEqual([...gpt2.encode(utf8('hello <|endoftext|>'))].includes(50256), false);
    assert.equal(gpt2.decode([15496, 995, 50256]), 'Hello world<|endoftext|>');
    assert.equal(gpt2.alphabet, 50257);
    assert.equal(gpt2.vocabSize % 64, 0);
  });

  test('round trip: any UTF-8 text decodes back to itself', () => {
    for (const text of ['', ' ', '  leading and   inner  spaces\n\n\ttabs', 'héllo wörld – “quotes” ’', '数学 🚀 emoji 👩‍👩‍👧', englishText(5000, 3)]) {
      assert.equal(gpt2.decode(gpt2.encode(utf8(text))), text);
    }
  });

  test('decode: a character cut off at the end is U+FFFD, and does not leak into the next call', () => {
    const ids = [...gpt2.encode(utf8('’'))]; // one character, two tokens
    assert.equal(ids.length, 2);
    assert.equal(gpt2.decode(ids.slice(0, 1)), '\ufffd');
    assert.equal(gpt2.decode([15496]), 'Hello');
  });

  test('documents are joined with <|endoftext|>; bytes joins them with a blank line', () => {
    const docs = [utf8('one'), utf8('two')];
    assert.deepEqual([...gpt2.encodeDocuments(docs)], [...gpt2.encode(docs[0]), 50256, ...gpt2.encode(docs[1])]);
    assert.equal(Buffer.from(tokenizerOf('bytes').encodeDocuments(docs)).toString(), 'one\n\ntwo');
  });
});

describe('nanoGPT token files', () => {
  const ids = Uint16Array.from({ length: 5000 }, (_, i) => (i * 7919) % 50257);

  test('read as nanoGPT writes them; ranges are views; windows equal the in-memory ones', () => {
    const f = TokenFile.open(writeBin(fresh('t') + '.bin', ids), 50257);
    assert.equal(f.length, 5000);
    assert.deepEqual([...f.read(10, 5)], [...ids.subarray(10, 15)]);
    const tail = f.subarray(4000);
    assert.equal(tail.length, 1000);
    assert.deepEqual([...tail.read(0, 3)], [...ids.subarray(4000, 4003)]);
    const onFile = new Batcher({ tokens: f, B: 3, T: 32, seed: 9 });
    const inMemory = new Batcher({ tokens: ids, B: 3, T: 32, seed: 9 });
    for (let i = 0; i < 5; i++) {
      const [a, b] = [onFile.next(), inMemory.next()];
      assert.deepEqual(a.inputs, b.inputs);
      assert.deepEqual(a.targets, b.targets);
    }
  });

  test("a directory with train.bin and val.bin: nanoGPT's own split; a single .bin: the last 5 %", () => {
    const dir = fresh('nano');
    writeBin(path.join(dir, 'train.bin'), ids);
    writeBin(path.join(dir, 'val.bin'), ids.subarray(0, 700));
    fs.writeFileSync(path.join(dir, 'input.txt'), 'the text it came from');
    for (const spec of [dir, path.join(dir, 'train.bin')]) {
      const c = loadCorpus(spec);
      assert.equal(c.tokenizer, 'gpt2');
      const { train, val } = corpusSplits(c);
      assert.deepEqual([train.length, val.length], [5000, 700]);
    }
    const single = loadCorpus(writeBin(fresh('one') + '.bin', ids));
    assert.deepEqual([corpusSplits(single).train.length, corpusSplits(single).val.length], [4750, 250]);
  });

  test("refused with a reason: odd size, empty, ids beyond GPT-2's, char-level data, --tokenizer bytes", () => {
    const odd = fresh('odd') + '.bin';
    fs.writeFileSync(odd, Buffer.alloc(7));
    assert.throws(() => loadCorpus(odd), /odd number of bytes \(7\)/);
    const empty = fresh('empty') + '.bin';
    fs.writeFileSync(empty, '');
    assert.throws(() => loadCorpus(empty), /is empty/);
    const big = TokenFile.open(writeBin(fresh('big') + '.bin', [1, 2, 60000, 3]), 50257);
    assert.throws(() => big.read(0, 4), /token 60000 at position 2 is outside the tokenizer's 50257 ids/);
    const chars = fresh('shakespeare_char');
    writeBin(path.join(chars, 'train.bin'), [1, 2, 3]);
    fs.writeFileSync(path.join(chars, 'meta.pkl'), 'pickle');
    assert.throws(() => loadCorpus(chars), /meta\.pkl says .* character-level/);
    assert.throws(() => loadCorpus(path.join(root, 'one-2.bin'), 'bytes'), /needs --tokenizer gpt2/);
  });
});

describe('keel with --tokenizer gpt2 and nanoGPT data', () => {
  const text = englishText(40_000, 5);
  const dir = path.join(root, 'nanogpt');
  const tokens = gpt2.encode(utf8(text));
  const cut = Math.floor(tokens.length * 0.9); // nanoGPT's prepare.py splits 90/10
  writeBin(path.join(dir, 'train.bin'), tokens.subarray(0, cut));
  writeBin(path.join(dir, 'val.bin'), tokens.subarray(cut));
  const cfg = writeJson(path.join(root, 'gpt2-micro.json'), { nLayer: 1, nHead: 2, nEmbd: 16, blockSize: 16, vocabSize: 50304 });
  const run = path.join(root, 'run-gpt2');
  const trained = keel(['train', { config: cfg, data: dir, batch: 4, steps: 30, evalTokens: 1000, out: run }]);

  test('trains on train.bin, validates on val.bin; eval scores val.bin, equal to the trainer', () => {
    assert.equal(trained.status, 0, trained.stderr);
    assert.match(trained.stderr, /data .* gpt2 tokens/);
    const saved = JSON.parse(fs.readFileSync(path.join(run, 'config.json'), 'utf8'));
    assert.equal(saved.train.tokenizer, 'gpt2');
    const last = metrics(run)
      .filter((r) => typeof r.val_loss === 'number')
      .at(-1)!;
    const r = JSON.parse(keel(['eval', { checkpoint: run, tokens: 1000, json: true }]).stdout);
    assert.match(r.data, /validation split/);
    assert.ok(Math.abs(r.loss - (last.val_loss as number)) < 1e-9, `${r.loss} vs ${last.val_loss}`);
    assert.ok((last.val_loss as number) < Math.log(50257), 'it learned something');
  });

  test('keel sample: GPT-2 text, the same for a seed, another for another seed', () => {
    assertSeededSampling(run, 'the model', 30, [3, 4]);
  });

  test("sampling draws only ids below the limit (keel sample passes the tokenizer's alphabet)", () => {
    const { config, params } = loadModel(path.join(run, 'checkpoints', 'step-30', 'model.safetensors'));
    const model = new GPT(config, nativeKernels(), { maxBatch: 1 });
    model.params.set(params);
    // Temperature 1000: nearly uniform over 50,304 ids, so without the limit almost every draw would be ≥ 1000.
    const out = sample(model, Int32Array.of(464), { tokens: 50, temperature: 1000, topK: 0, limit: 1000 }, new Rng(1));
    assert.ok(
      out.every((t) => t < 1000),
      [...out].join(','),
    );
  });

  test("a text corpus with --tokenizer gpt2: a preset gets GPT-2's padded vocabulary; too small a vocabulary is refused", () => {
    const corpus = writeCorpus(fresh('text'));
    const out = fresh('preset');
    const r = keel(['train', { tokenizer: 'gpt2', data: corpus, steps: 2, batch: 2, evalTokens: 200, out }]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8')).model.vocabSize, 50304);
    const bytesCfg = writeJson(fresh('bytes') + '.json', { nLayer: 1, nHead: 2, nEmbd: 16, blockSize: 16, vocabSize: 256 });
    assertUserError(
      keel(['train', { config: bytesCfg, tokenizer: 'gpt2', data: corpus, out: fresh('refused') }]),
      /vocabSize 256 is smaller than the tokenizer's alphabet: gpt2 tokens take 50257 values/,
    );
    assertUserError(keel(['train', { data: dir, tokenizer: 'bytes', out: fresh('refused') }]), /needs --tokenizer gpt2/);
  });

  test('resume keeps the tokenizer; changing it is refused', () => {
    assertUserError(keel(['train', { resume: run, steps: 40, tokenizer: 'bytes' }]), /--tokenizer cannot change when resuming/);
    const r = keel(['train', { resume: run, steps: 32, evalTokens: 1000 }]);
    assert.equal(r.status, 0, r.stderr);
  });

  test('a gpt2 checkpoint loads in the PyTorch parity script: the same loss on val.bin', (t) => {
    const torch = spawnSync('/usr/bin/python3', ['-c', 'import torch'], { encoding: 'utf8' });
    if (torch.status !== 0) {
      t.skip("Debian's python3-torch is not installed (apt-get install python3-torch)");
      return;
    }
    const model = path.join(run, 'checkpoints', 'step-30', 'model.safetensors');
    const val = path.join(dir, 'val.bin');
    const py = spawnSync('/usr/bin/python3', ['scripts/torch_parity.py', model, val, '--tokens', '801'], { encoding: 'utf8' });
    assert.equal(py.status, 0, py.stderr);
    const expected = JSON.parse(py.stdout);
    assert.equal(expected.tokenizer, 'gpt2');
    const got = JSON.parse(keel(['eval', { checkpoint: model, data: val, tokens: 801, json: true }]).stdout);
    assert.equal(got.tokens, expected.tokens);
    assert.ok(Math.abs(got.loss - expected.loss) / expected.loss < 1e-4, `keel ${got.loss} vs torch ${expected.loss}`);
  });
});

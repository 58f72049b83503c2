// The memory estimate (src/train/memory.ts) against what a real model and optimizer allocate,
// and the refusal built on it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nativeKernels } from '../src/kernels/native.ts';
import type { GPTConfig } from '../src/model/config.ts';
import { CONFIGS } from '../src/model/config.ts';
import { GPT } from '../src/model/gpt.ts';
import { paramLayout } from '../src/model/params.ts';
import { createOptimizer, OPTIMIZER_NAMES, optimizerEntry } from '../src/optim/registry.ts';
import { stateBytes } from '../src/optim/state.ts';
import { UserError } from '../src/errors.ts';
import { activationFloats, checkMemory, modelMemory, optimizerStateBytes, paramCount, type MemoryItem } from '../src/train/memory.ts';

/** Bytes of every distinct typed-array buffer reachable from `root` (a model's params, grads, activations, scratch). */
function typedArrayBytes(root: unknown): number {
  const buffers = new Set<ArrayBufferLike>();
  const seen = new Set<object>();
  const walk = (v: unknown): void => {
    if (v === null || typeof v !== 'object' || seen.has(v)) return;
    seen.add(v);
    if (ArrayBuffer.isView(v)) {
      buffers.add(v.buffer);
      return;
    }
    for (const x of v instanceof Map ? v.values() : Object.values(v)) walk(x);
  };
  walk(root);
  return [...buffers].reduce((a, b) => a + b.byteLength, 0);
}

const CASES: [string, GPTConfig, number][] = [
  ['2 layers', { nLayer: 2, nHead: 2, nEmbd: 32, blockSize: 16, vocabSize: 256 }, 3],
  ['3 layers, qkNorm', { nLayer: 3, nHead: 4, nEmbd: 32, blockSize: 8, vocabSize: 256, qkNorm: true }, 2],
  ['1 layer, batch 1', { nLayer: 1, nHead: 2, nEmbd: 16, blockSize: 16, vocabSize: 256 }, 1],
];

test('parameters, gradients and activations: exactly the bytes of the Float32Arrays a GPT allocates', () => {
  for (const [name, cfg, batch] of CASES) {
    const model = new GPT(cfg, nativeKernels(), { maxBatch: batch });
    assert.equal(paramCount(cfg), paramLayout(cfg).total, `${name}: parameter count`);
    const est = modelMemory(cfg, batch);
    const modelBytes = est.filter((i) => !i.what.startsWith('token')).reduce((a, i) => a + i.bytes, 0);
    // Tolerance 0: every buffer is counted, none twice (the tied head is one buffer).
    assert.equal(modelBytes, typedArrayBytes(model), `${name}: estimate vs allocated typed arrays`);
  }
});

test('the estimate matches the process memory a tiny model takes (within 3%)', () => {
  // The typed arrays' own count, against the process's external memory, for a model big enough
  // (≈ 70 MB) that other allocations in between are noise.
  const cfg = CONFIGS.tiny;
  const batch = 8;
  const before = process.memoryUsage().arrayBuffers;
  const model = new GPT(cfg, nativeKernels(), { maxBatch: batch });
  const grown = process.memoryUsage().arrayBuffers - before;
  const est = (paramCount(cfg) * 2 + activationFloats(cfg, batch)) * 4;
  assert.ok(est > 50e6, `estimate ${est}`);
  assert.ok(Math.abs(grown - est) / est < 0.03, `arrayBuffers grew ${grown} bytes, estimate ${est}`);
  assert.ok(model.numParams > 0);
});

test("optimizer state: every optimizer's estimate equals what its init() allocates", () => {
  const cfg: GPTConfig = { nLayer: 3, nHead: 2, nEmbd: 16, blockSize: 8, vocabSize: 256 };
  const layout = paramLayout(cfg);
  const params = new Float32Array(layout.total);
  const variants: [string, Record<string, unknown>][] = [
    ...OPTIMIZER_NAMES.map((n) => [n, optimizerEntry(n).train.options] as [string, Record<string, unknown>]),
    ['adafactor', { ...optimizerEntry('adafactor').train.options, beta1: 0.9 }],
    ['lion', { embeddingOptimizer: 'adamw' }],
    ['sgd', { momentum: 0 }],
  ];
  for (const [name, options] of variants) {
    const real = stateBytes(createOptimizer(name, options).init(params, layout.tensors));
    assert.equal(optimizerStateBytes(cfg, name, options), real, `${name} ${JSON.stringify(options)}`);
  }
});

test('an estimate in the terabytes costs no allocation: nLayer 100000 and nEmbd 100000', () => {
  const before = process.memoryUsage().heapUsed;
  const deep = paramCount({ nLayer: 100_000, nHead: 4, nEmbd: 128, blockSize: 128, vocabSize: 256 });
  const wide = paramCount({ nLayer: 4, nHead: 4, nEmbd: 100_000, blockSize: 128, vocabSize: 256 });
  // 12C² + 13C per block, plus the embeddings and the final LayerNorm.
  assert.equal(deep, 100_000 * (12 * 128 * 128 + 13 * 128) + 256 * 128 + 128 * 128 + 2 * 128);
  assert.equal(wide, 4 * (12 * 1e10 + 13 * 1e5) + 256 * 1e5 + 128 * 1e5 + 2 * 1e5);
  assert.ok(process.memoryUsage().heapUsed - before < 50e6, 'the estimate itself allocated a lot');
});

test("checkMemory: refuses with the figure and the machine's memory, and the batch it suggests fits", () => {
  const cfg = CONFIGS.tiny;
  const itemsAt = (b: number): MemoryItem[] => modelMemory(cfg, b);
  const need = (b: number) => itemsAt(b).reduce((a, i) => a + i.bytes, 0);
  const avail = { bytes: need(10) + 1, source: 'test' };
  assert.doesNotThrow(() => checkMemory(itemsAt, cfg, 10, 'smaller', avail));
  let msg = '';
  try {
    checkMemory(itemsAt, cfg, 1000, 'smaller', avail);
  } catch (e) {
    assert.ok(e instanceof UserError);
    msg = e.message;
  }
  assert.match(msg, /needs about [\d.]+ [kMGT]B of memory .* but the machine has [\d.]+ MB \(test\)/);
  const fits = Number(/--batch (\d+) or less/.exec(msg)?.[1]);
  assert.equal(fits, 10, msg);
  // When not even one sequence fits: the model's own advice.
  assert.throws(() => checkMemory(itemsAt, cfg, 4, 'use a smaller model', { bytes: need(1) - 1, source: 'test' }), /: use a smaller model$/);
});

// The whole GPT: a float64 finite-difference check of every parameter tensor's gradient on
// the reference kernels, and native vs reference agreement on loss, gradients and a short
// AdamW trajectory (llm.c's test_gpt2 idea, with the TypeScript twin as the reference).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { referenceKernels } from '../src/kernels/reference/index.ts';
import { nativeKernels } from '../src/kernels/native.ts';
import type { GPTConfig } from '../src/model/config.ts';
import { GPT } from '../src/model/gpt.ts';
import { adamw } from '../src/optim/adamw.ts';
import { Rng } from '../src/util/rng.ts';
import { centralDifference, perturb, tokenBatch } from './numeric.ts';

test('finite-difference gradient check of the whole model (float64)', () => {
  const cfg: GPTConfig = { nLayer: 2, nHead: 2, nEmbd: 8, blockSize: 5, vocabSize: 11 };
  const B = 2;
  const model = new GPT<Float64Array>(cfg, referenceKernels<Float64Array>(), { maxBatch: B, ctor: Float64Array });
  perturb(model, 3, 0.3);
  const { tokens, targets } = tokenBatch(cfg, B, 9);
  model.zeroGrad();
  model.forward(tokens, targets, B);
  model.backward(1);
  const rng = new Rng(5);
  const h = 1e-6;
  let worst = 0;
  for (const t of model.layout.tensors) {
    // A few coordinates of every tensor (the embedding rows of tokens that occur included).
    for (let j = 0; j < 4; j++) {
      const i = t.offset + rng.int(t.size);
      const fd = centralDifference(model.params, i, () => model.forward(tokens, targets, B), h);
      const an = model.grads[i];
      const err = Math.abs(fd - an) / Math.max(1e-6, Math.abs(fd) + Math.abs(an));
      worst = Math.max(worst, err);
      assert.ok(err < 1e-5, `${t.name}[${i - t.offset}]: analytic ${an} vs numeric ${fd}`);
    }
  }
  assert.ok(worst < 1e-5);
});

test('native model matches the reference model: loss, every gradient, 3 AdamW steps', () => {
  const cfg: GPTConfig = { nLayer: 2, nHead: 3, nEmbd: 24, blockSize: 7, vocabSize: 37 };
  const B = 3;
  const nat = new GPT(cfg, nativeKernels(), { maxBatch: B });
  const ref = new GPT(cfg, referenceKernels<Float32Array>(), { maxBatch: B });
  perturb(nat, 11, 0.05);
  ref.params.set(nat.params);
  const opts = [adamw({ lr: 1e-2 }), adamw<Float32Array>({ lr: 1e-2 }, { kernels: referenceKernels<Float32Array>() })];
  const states = [opts[0].init(nat.params, nat.layout.tensors), opts[1].init(ref.params, ref.layout.tensors)];
  for (let step = 0; step < 3; step++) {
    const { tokens, targets } = tokenBatch(cfg, B, 100 + step);
    const losses = [nat, ref].map((m, i) => {
      m.zeroGrad();
      const loss = m.forward(tokens, targets, B);
      m.backward(1);
      if (step < 2) opts[i].step(m.params, m.grads, states[i]);
      return loss;
    });
    assert.ok(Math.abs(losses[0] - losses[1]) < 1e-5 * losses[1], `step ${step}: loss ${losses[0]} vs ${losses[1]}`);
    if (step === 0) {
      for (const t of nat.layout.tensors) {
        let maxDiff = 0;
        let maxAbs = 0;
        for (let i = t.offset; i < t.offset + t.size; i++) {
          maxDiff = Math.max(maxDiff, Math.abs(nat.grads[i] - ref.grads[i]));
          maxAbs = Math.max(maxAbs, Math.abs(ref.grads[i]));
        }
        assert.ok(maxDiff <= 1e-4 * maxAbs + 1e-7, `${t.name}: max |Δgrad| ${maxDiff} (max |grad| ${maxAbs})`);
      }
    }
  }
});

test('a smaller batch than maxBatch uses the leading rows and gives the same loss', () => {
  const cfg: GPTConfig = { nLayer: 1, nHead: 2, nEmbd: 16, blockSize: 8, vocabSize: 256 };
  const big = new GPT(cfg, nativeKernels(), { maxBatch: 4 });
  const one = new GPT(cfg, nativeKernels(), { maxBatch: 1 });
  big.init(1);
  one.params.set(big.params);
  const { tokens, targets } = tokenBatch(cfg, 1, 4);
  assert.equal(big.forward(tokens, targets, 1), one.forward(tokens, targets, 1));
  // A fresh model predicts nearly uniformly: loss ≈ ln V.
  assert.ok(Math.abs(one.forward(tokens, targets, 1) - Math.log(256)) < 0.05);
});

test('the whole model on every matmul path, fp32 and bf16: native vs reference, same bits per path', () => {
  const cfg: GPTConfig = { nLayer: 2, nHead: 3, nEmbd: 24, blockSize: 7, vocabSize: 37 };
  const B = 3;
  const nk = nativeKernels();
  const paths = { avx512bf16: 'avx512bf16', avx512f: 'avx512f', 'avx2-fma': 'avx2', portable: 'portable' } as const;
  const { tokens, targets } = tokenBatch(cfg, B, 100);
  try {
    for (const [kernel, isa] of Object.entries(paths) as [keyof typeof paths, string][]) {
      if (!nk.isaSupported().includes(isa as 'avx2')) {
        console.log(`# skipped ${kernel}: this process runs the ${nk.isa()} path`);
        continue;
      }
      nk.matmulSetKernel(kernel);
      for (const precision of ['fp32', 'bf16'] as const) {
        const run = (kernels: typeof nk | ReturnType<typeof referenceKernels<Float32Array>>) => {
          const m = new GPT(cfg, kernels, { maxBatch: B, precision });
          perturb(m, 11, 0.05);
          m.zeroGrad();
          const loss = m.forward(tokens, targets, B);
          m.backward(1);
          return { loss, grads: m.grads };
        };
        const a = run(nk),
          b = run(nk),
          ref = run(referenceKernels<Float32Array>());
        const what = `${kernel} ${precision}`;
        assert.equal(a.loss, b.loss, `${what}: loss differs between runs`);
        assert.deepEqual(a.grads, b.grads, `${what}: gradients differ between runs`);
        // bf16: an activation whose fp32 sum lands on the other side of a bf16 rounding
        // boundary than the float64 reference's differs by one bf16 ulp (2⁻⁸) downstream.
        const tol = precision === 'fp32' ? 1e-4 : 2e-2;
        assert.ok(Math.abs(a.loss - ref.loss) < (precision === 'fp32' ? 1e-5 : 1e-3) * ref.loss, `${what}: loss ${a.loss} vs ${ref.loss}`);
        let maxDiff = 0,
          maxAbs = 0;
        for (let i = 0; i < ref.grads.length; i++) {
          maxDiff = Math.max(maxDiff, Math.abs(a.grads[i] - ref.grads[i]));
          maxAbs = Math.max(maxAbs, Math.abs(ref.grads[i]));
        }
        assert.ok(maxDiff <= tol * maxAbs, `${what}: max |Δgrad| ${maxDiff} (max |grad| ${maxAbs})`);
      }
    }
  } finally {
    nk.matmulSetKernel('auto');
  }
});

/**
 * The training step that the monitor benches (bench/monitors.ts, bench/noise_scale.ts) wrap:
 * a GPT on native kernels, AdamW at a fixed lr, random tokens, clipping to norm 1 as the trainer does.
 */
import { nativeKernels } from '../src/kernels/native.ts';
import type { GPTConfig } from '../src/model/config.ts';
import { GPT } from '../src/model/gpt.ts';
import { adamw } from '../src/optim/adamw.ts';
import { randomBatch, Rng } from '../src/util/rng.ts';

const LR = 2e-3;

export function benchTraining(cfg: GPTConfig, batch: number) {
  const k = nativeKernels();
  const model = new GPT(cfg, k, { maxBatch: batch });
  model.init(1337);
  const optimizer = adamw({ lr: LR });
  const state = optimizer.init(model.params, model.layout.tensors);
  const rng = new Rng(7);
  const tokens = new Int32Array(batch * cfg.blockSize);
  const targets = new Int32Array(batch * cfg.blockSize);
  return {
    k,
    model,
    optimizer,
    state,
    lr: LR,
    /** Fresh random tokens and targets for the next forward. */
    randomize: () => randomBatch(rng, tokens, targets, cfg.vocabSize),
    /** Adds this batch's gradients, the loss scaled by `lossScale` (1/accum under accumulation). */
    forwardBackward(lossScale: number) {
      model.forward(tokens, targets, batch);
      model.backward(lossScale);
    },
    clip() {
      const norm = Math.sqrt(k.sumSquares(model.grads, model.grads.length));
      if (norm > 1) k.scale(model.grads, model.grads.length, 1 / norm);
    },
    step: () => optimizer.step(model.params, model.grads, state, { lr: LR, gradsFinite: true }),
  };
}

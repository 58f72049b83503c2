import { Command } from 'commander';
import { nativeKernels } from '../kernels/native.ts';
import type { MatmulPrecision } from '../kernels/types.ts';
import { resolveConfig, type GPTConfig } from '../model/config.ts';
import { GPT } from '../model/gpt.ts';
import { createOptimizer, optimizerEntry } from '../optim/registry.ts';
import { stateBytes } from '../optim/state.ts';
import { randomBatch, Rng } from '../util/rng.ts';
import { int } from './args.ts';
import { addOptimizerFlags, parseOptFlags } from './optimizer.ts';
import { UserError } from '../errors.ts';
import { checkMemory, modelMemory, optimizerStateBytes } from '../train/memory.ts';
import { median } from '../util/stats.ts';

/** What keel bench holds at once: the model, the optimizer's state and matmulGflops' buffers. */
function benchMemory(cfg: GPTConfig, batch: number, optimizer: string, options: Record<string, unknown>) {
  const BT = batch * cfg.blockSize;
  const C = cfg.nEmbd;
  return [
    ...modelMemory(cfg, batch),
    { what: `optimizer state (${optimizer})`, bytes: optimizerStateBytes(cfg, optimizer, options) },
    { what: 'matmul benchmark buffers', bytes: 4 * (2 * BT * C + 2 * 4 * C * C + BT * 4 * C) },
  ];
}

/**
 * Training FLOPs per token: 6 per parameter-multiply of every matmul (forward 2, backward 4),
 * plus causal attention (QKᵀ and AV over on average T/2 keys: 2·2·(T/2)·C forward, ×3 with backward).
 * The embedding lookups are not multiplies; the tied head is a V×C matmul.
 */
function flopsPerToken(cfg: GPTConfig): number {
  const { nLayer: L, nEmbd: C, blockSize: T, vocabSize: V } = cfg;
  const matmulParams = L * 12 * C * C + V * C;
  const attention = L * 2 * 2 * (T / 2) * C;
  return 6 * matmulParams + 3 * attention;
}

const pct = (x: number) => `${(100 * x).toFixed(0)}%`;

function runBench(
  cfg: GPTConfig,
  batch: number,
  steps: number,
  warmup: number,
  optimizerName = 'adamw',
  optimizerOptions: Record<string, unknown> = {},
  precision: MatmulPrecision = 'fp32',
) {
  const k = nativeKernels();
  const model = new GPT(cfg, k, { maxBatch: batch, precision });
  model.init(1);
  const rec = optimizerEntry(optimizerName).train;
  const optimizer = createOptimizer(optimizerName, { ...rec.options, ...optimizerOptions });
  const opt = optimizer.init(model.params, model.layout.tensors);
  const stepOpts = optimizer.options.relativeStep === true ? {} : { lr: rec.lr };
  const optTimes: number[] = [];
  const rng = new Rng(7);
  const n = batch * cfg.blockSize;
  const tokens = new Int32Array(n);
  const targets = new Int32Array(n);
  const times: number[] = [];
  for (let s = 0; s < warmup + steps; s++) {
    randomBatch(rng, tokens, targets, cfg.vocabSize);
    const t0 = performance.now();
    model.zeroGrad();
    model.forward(tokens, targets, batch);
    model.backward(1);
    const t1 = performance.now();
    optimizer.step(model.params, model.grads, opt, stepOpts);
    if (s >= warmup) optTimes.push(performance.now() - t1);
    if (s >= warmup) times.push(performance.now() - t0);
  }
  const stepMs = median(times)!;
  const tokensPerS = (n / stepMs) * 1000;
  return {
    tokensPerS,
    stepMs,
    params: model.numParams,
    modelGflops: (flopsPerToken(cfg) * tokensPerS) / 1e9,
    optimizer: optimizer.name,
    optimizerMs: median(optTimes)!,
    optimizerStateBytes: stateBytes(opt),
  };
}

/** GFLOP/s of the matmul kernel alone on the model's largest forward and backward shape. */
function matmulGflops(cfg: GPTConfig, batch: number, precision: MatmulPrecision = 'fp32'): number {
  const k = nativeKernels();
  const BT = batch * cfg.blockSize;
  const C = cfg.nEmbd;
  const OC = 4 * C;
  const inp = new Float32Array(BT * C).fill(0.5);
  const w = new Float32Array(OC * C).fill(0.01);
  const out = new Float32Array(BT * OC);
  const dinp = new Float32Array(BT * C);
  const dw = new Float32Array(OC * C);
  const times: number[] = [];
  for (let r = 0; r < 12; r++) {
    const t0 = performance.now();
    k.matmulForward(out, inp, w, null, BT, C, OC, precision);
    k.matmulBackward(dinp, dw, null, out, inp, w, BT, C, OC, precision);
    if (r >= 2) times.push(performance.now() - t0);
  }
  return (6 * BT * C * OC) / (median(times)! / 1000) / 1e9;
}

export function benchCommand(): Command {
  const cmd = new Command('bench')
    .description('median tokens/s of full training steps (forward + backward + optimizer) on random tokens')
    .option('--config <name|file>', 'model config', 'tiny')
    .option('--batch <n>', 'sequences per step', int(1), 8)
    .option('--steps <n>', 'timed steps', int(1), 30)
    .option('--warmup <n>', 'untimed warm-up steps', int(0), 5)
    .option('--precision <p>', 'matmul precision: fp32, or bf16 (bf16 operands, fp32 accumulation and state)', 'fp32')
    .option('--json', 'print {"tokens_per_s", "step_ms", "optimizer_ms", "config", "batch", "params", "isa", "peak_gflops", ...}');
  return addOptimizerFlags(cmd, 'adamw').action((o) => {
    const cfg = resolveConfig(o.config);
    const precision = o.precision as MatmulPrecision;
    if (precision !== 'fp32' && precision !== 'bf16') throw new UserError(`--precision must be fp32 or bf16, got ${o.precision}`);
    const options = { ...optimizerEntry(o.optimizer).train.options, ...parseOptFlags(o.optimizer, o.opt) };
    checkMemory((b) => benchMemory(cfg, b, o.optimizer, options), cfg, o.batch, 'pick a smaller --config');
    const k = nativeKernels();
    // Peak first, on idle cores, then the run it is compared with.
    const peak = k.matmulPeakGflops(precision);
    const r = runBench(cfg, o.batch, o.steps, o.warmup, o.optimizer, parseOptFlags(o.optimizer, o.opt), precision);
    const mm = matmulGflops(cfg, o.batch, precision);
    const out = {
      engine: 'keel',
      tokens_per_s: r.tokensPerS,
      step_ms: r.stepMs,
      config: o.config,
      batch: o.batch,
      params: r.params,
      optimizer: r.optimizer,
      optimizer_ms: r.optimizerMs,
      optimizer_state_bytes: r.optimizerStateBytes,
      model_gflops: r.modelGflops,
      matmul_gflops: mm,
      precision,
      isa: k.isa(),
      matmul_kernel: k.matmulKernel(precision),
      // The peak of the multiply-add instruction that kernel uses (FMA, or vdpbf16ps for
      // native bf16), measured in this run on the same threads.
      peak_gflops: peak,
      model_peak_fraction: r.modelGflops / peak,
      matmul_peak_fraction: mm / peak,
      threads: k.threads(),
    };
    if (o.json) process.stdout.write(JSON.stringify(out) + '\n');
    else {
      process.stdout.write(
        `keel ${o.config} B=${o.batch} T=${cfg.blockSize} ${precision}: ${Math.round(r.tokensPerS)} tok/s (${r.stepMs.toFixed(1)} ms/step), ` +
          `${r.optimizer} step ${r.optimizerMs.toFixed(2)} ms; ${r.modelGflops.toFixed(1)} model GFLOP/s ` +
          `(${pct(out.model_peak_fraction)} of peak); matmul kernel ${mm.toFixed(1)} GFLOP/s (${pct(out.matmul_peak_fraction)}); ` +
          `path ${out.isa}, kernel ${out.matmul_kernel}, peak ${peak.toFixed(0)} GFLOP/s on ${out.threads} threads\n`,
      );
    }
  });
}

// Where a training step's time goes: wraps every native kernel with a timer.
//   node --import tsx bench/profile.ts [tiny|small|FILE.json] [batch] [fp32|bf16]
import { nativeKernels } from '../src/kernels/native.ts';
import type { Kernels } from '../src/kernels/types.ts';
import { resolveConfig } from '../src/model/config.ts';
import { GPT } from '../src/model/gpt.ts';
import { adamw } from '../src/optim/adamw.ts';

const cfg = resolveConfig(process.argv[2] ?? 'tiny');
const B = Number(process.argv[3] ?? 8);
const precision = (process.argv[4] ?? 'fp32') as 'fp32' | 'bf16';
const native = nativeKernels();
const totals = new Map<string, number>();
const timed = {} as Record<string, unknown>;
for (const [name, fn] of Object.entries(native)) {
  if (typeof fn !== 'function') continue;
  timed[name] = (...a: unknown[]) => {
    const t0 = performance.now();
    const r = (fn as (...x: unknown[]) => unknown)(...a);
    totals.set(name, (totals.get(name) ?? 0) + performance.now() - t0);
    return r;
  };
}
const k = timed as unknown as Kernels;
const model = new GPT(cfg, k, { maxBatch: B, precision });
model.init(1);
const optimizer = adamw({ lr: 1e-3 }, { kernels: k });
const opt = optimizer.init(model.params, model.layout.tensors);
const n = B * cfg.blockSize;
const tokens = new Int32Array(n).map((_, i) => (i * 7919) % cfg.vocabSize);
const targets = new Int32Array(n).map((_, i) => (i * 104729) % cfg.vocabSize);
const steps = 10;
let wall = 0;
for (let s = 0; s < steps + 2; s++) {
  if (s === 2) {
    totals.clear();
    wall = 0;
  }
  const t0 = performance.now();
  model.zeroGrad();
  model.forward(tokens, targets, B);
  model.backward(1);
  optimizer.step(model.params, model.grads, opt);
  wall += performance.now() - t0;
}
const rows = [...totals].sort((a, b) => b[1] - a[1]);
const kernelMs = rows.reduce((s, r) => s + r[1], 0);
console.log(
  `${steps} steps, ${(wall / steps).toFixed(1)} ms/step; kernels ${(kernelMs / steps).toFixed(1)} ms, other ${((wall - kernelMs) / steps).toFixed(1)} ms`,
);
for (const [name, ms] of rows) console.log(`${name.padEnd(20)} ${(ms / steps).toFixed(2).padStart(8)} ms  ${((100 * ms) / wall).toFixed(1)}%`);

/**
 * Cost of the online gradient noise scale (src/monitor/noise_scale.ts) on real training steps
 * of the tiny model with gradient accumulation (forward + backward per micro-batch, clipping,
 * AdamW; native kernels, random tokens): per step the estimator runs beginStep, one afterMicro
 * (sqDiffCopy over the gradient buffer, one call per contiguous parameter-group run) per
 * micro-batch and endStep (Σ‖prev‖² per group, the EMAs). Steps alternate without / with the
 * estimator (the order flips every pair, so both arms see the same machine load). Two
 * estimates, in % of the plain step time, each the median over rounds:
 *   direct        time spent inside the estimator's calls over the plain step's time (robust
 *                 to machine noise)
 *   differential  step time with − without, over without (what a user sees; noisy when other
 *                 processes share the cores)
 * Goal: ≤ 3 %.
 *
 *   node --import tsx bench/noise_scale.ts [--accum 4] [--batch 8] [--rounds 8] [--groups layer-kind|model] [--config tiny] [--json]
 */
import { CONFIGS } from '../src/model/config.ts';
import { NoiseScale, type NoiseGroups } from '../src/monitor/noise_scale.ts';
import { median } from '../src/util/stats.ts';
import { opt, flag } from './args.ts';
import { benchTraining } from './training.ts';

const accum = Number(opt('accum', '4'));
const B = Number(opt('batch', '8'));
const rounds = Number(opt('rounds', '8'));
const groups = opt('groups', 'layer-kind') as NoiseGroups;
const cfgName = opt('config', 'tiny');
const json = flag('json');
const cfg = CONFIGS[cfgName];
if (!cfg || ![B, rounds].every((x) => Number.isInteger(x) && x >= 1) || !(Number.isInteger(accum) && accum >= 2) || !['layer-kind', 'model'].includes(groups)) {
  console.error('bench/noise_scale: --accum ≥ 2, --batch and --rounds positive integers; --groups layer-kind|model; --config tiny|small');
  process.exit(2);
}

const { model, ...train } = benchTraining(cfg, B);
const noise = new NoiseScale(model.layout.tensors, model.numParams, { groups });
let records = 0;

/** One training step as the trainer runs it; returns [step ms, ms inside the estimator]. */
function step(withNoise: boolean): [number, number] {
  const t0 = performance.now();
  let inNoise = 0;
  const timed = (f: () => void) => {
    const a = performance.now();
    f();
    inNoise += performance.now() - a;
  };
  model.zeroGrad();
  if (withNoise) timed(() => noise.beginStep());
  for (let m = 0; m < accum; m++) {
    train.randomize();
    train.forwardBackward(1 / accum);
    if (withNoise) timed(() => noise.afterMicro(model.grads, accum));
  }
  if (withNoise) {
    timed(() => {
      const rec = noise.endStep(B, accum, cfg.blockSize);
      if (rec) records += 1;
    });
  }
  train.clip();
  train.step();
  return [performance.now() - t0, inNoise];
}

step(false); // warm-up: first-touch of activations and optimizer state
step(true);
const direct: number[] = [];
const diff: number[] = [];
const plainMs: number[] = [];
const noiseMs: number[] = [];
for (let r = 0; r < rounds; r++) {
  let plain: number, withN: number, inside: number;
  if (r % 2 === 0) {
    [plain] = step(false);
    [withN, inside] = step(true);
  } else {
    [withN, inside] = step(true);
    [plain] = step(false);
  }
  direct.push((100 * inside) / plain);
  diff.push((100 * (withN - plain)) / plain);
  plainMs.push(plain);
  noiseMs.push(inside);
}

const out = {
  config: cfgName,
  params: model.numParams,
  batch: B,
  accum,
  groups,
  rounds,
  step_ms: median(plainMs)!,
  noise_ms: median(noiseMs)!,
  direct_pct: median(direct)!,
  differential_pct: median(diff)!,
  records,
};
if (json) {
  process.stdout.write(JSON.stringify(out) + '\n');
} else {
  process.stdout.write(
    `noise scale on ${cfgName} (${out.params} params), micro-batch ${B} × accum ${accum}, groups ${groups}, ${rounds} rounds\n` +
      `  plain step ${out.step_ms.toFixed(1)} ms; estimator ${out.noise_ms.toFixed(3)} ms per step\n` +
      `  direct ${out.direct_pct.toFixed(2)}%   differential ${out.differential_pct.toFixed(2)}%   (goal ≤ 3%)\n`,
  );
}

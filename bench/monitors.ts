/**
 * Cost of the per-tensor diagnostics (src/monitor/diagnostics.ts) at their cadence, on real
 * training steps of the tiny model (forward + backward + AdamW, native kernels, random tokens):
 * each round runs `every` steps without the diagnostics and `every` steps with them, alternating
 * step by step (the order flips every pair, so both arms see the same machine load), and the
 * "with" arm keeps its own step count, so each round holds exactly one diagnosed step and the
 * capture on the step before it, as in training. Two estimates, in % of the plain step time:
 *   direct        time spent inside before()/after() plus JSON.stringify of the record, summed
 *                 over a round, over the round's plain step time (robust to machine noise)
 *   differential  mean step time with − without, over without (what a user sees; noisy when
 *                 other processes share the cores)
 * Each is the median over rounds. Goal: ≤ 3 % at the default cadence (every 50).
 *
 *   node --import tsx bench/monitors.ts [--every 50] [--rounds 7] [--batch 16] [--config tiny] [--json]
 */
import { CONFIGS } from '../src/model/config.ts';
import { Diagnostics } from '../src/monitor/diagnostics.ts';
import { median } from '../src/util/stats.ts';
import { opt, flag } from './args.ts';
import { benchTraining } from './training.ts';

const every = Number(opt('every', '50'));
const rounds = Number(opt('rounds', '7'));
const B = Number(opt('batch', '16'));
const cfgName = opt('config', 'tiny');
const json = flag('json');
const cfg = CONFIGS[cfgName];
if (!cfg || ![every, rounds, B].every((x) => Number.isInteger(x) && x >= 1)) {
  console.error('bench/monitors: --every, --rounds, --batch must be positive integers; --config tiny|small');
  process.exit(2);
}

const { k, model, optimizer, state, lr, ...train } = benchTraining(cfg, B);
const diag = new Diagnostics(model.layout.tensors, model.numParams, { every });
let diagStep = 0; // the diagnostics' own step counter: "with" steps only, so the cadence is exact
let lineBytes = 0;

/** One training step (clipping as the trainer does); returns [step ms, ms inside the diagnostics]. */
function step(withDiag: boolean): [number, number] {
  train.randomize();
  const t0 = performance.now();
  model.zeroGrad();
  train.forwardBackward(1);
  train.clip();
  let inDiag = 0;
  const s = withDiag ? ++diagStep : 0;
  const watch = withDiag && (diag.wants(s) || diag.wants(s + 1));
  if (watch) {
    const a = performance.now();
    diag.before(s, model.params, model.grads, optimizer, state);
    inDiag += performance.now() - a;
  }
  train.step();
  if (watch) {
    const a = performance.now();
    const rec = diag.after(s, model.params, optimizer, state, lr);
    if (rec) lineBytes = JSON.stringify(rec).length + 1; // the trainer writes it as one line
    inDiag += performance.now() - a;
  }
  return [performance.now() - t0, inDiag];
}

for (let i = 0; i < 5; i++) step(false); // warm-up: JIT, page faults, thread pool
const direct: number[] = [];
const differential: number[] = [];
const plainMs: number[] = [];
const diagMsPerRound: number[] = [];
for (let r = 0; r < rounds; r++) {
  // Steps alternate between the arms (the order flips every pair) so both see the same load.
  const sum = { plain: 0, with: 0, inDiag: 0 };
  for (let i = 0; i < every; i++) {
    const order = (i + r) % 2 === 0 ? [false, true] : [true, false];
    for (const withDiag of order) {
      const [t, d] = step(withDiag);
      if (withDiag) (sum.with += t), (sum.inDiag += d);
      else sum.plain += t;
    }
  }
  const plain = sum.plain / every,
    withMs = sum.with / every;
  direct.push((100 * sum.inDiag) / sum.plain);
  differential.push((100 * (withMs - plain)) / plain);
  plainMs.push(plain);
  diagMsPerRound.push(sum.inDiag);
  if (!json) {
    console.log(
      `round ${r + 1}/${rounds}: plain ${plain.toFixed(1)} ms/step, with ${withMs.toFixed(1)} ms/step; diagnostics ${sum.inDiag.toFixed(1)} ms per ${every} steps → direct ${direct.at(-1)!.toFixed(2)} %, differential ${differential.at(-1)!.toFixed(2)} %`,
    );
  }
}

const out = {
  config: cfgName,
  batch: B,
  params: model.numParams,
  tensors: model.layout.tensors.length,
  every,
  rounds,
  step_ms: median(plainMs)!,
  diag_ms_per_period: median(diagMsPerRound)!,
  overhead_direct_pct: median(direct)!,
  overhead_differential_pct: median(differential)!,
  record_bytes: lineBytes,
  diag_buffer_bytes: diag.bytes,
  threads: k.threads(),
};
if (json) process.stdout.write(JSON.stringify(out) + '\n');
else {
  console.log(
    `${cfgName} B=${B} (${out.params} params, ${out.tensors} tensors, ${out.threads} threads): step ${out.step_ms.toFixed(1)} ms; ` +
      `diagnostics every ${every}: ${out.diag_ms_per_period.toFixed(1)} ms per period → overhead ${out.overhead_direct_pct.toFixed(2)} % (direct), ` +
      `${out.overhead_differential_pct.toFixed(2)} % (differential, median of ${rounds}); record ${(out.record_bytes / 1024).toFixed(1)} KiB/line; ` +
      `buffers ${(out.diag_buffer_bytes / 2 ** 20).toFixed(1)} MiB`,
  );
}

/**
 * The optimizer kernels against memory bandwidth, in one run on the same N: the fused AdamW
 * step (`adam`, outside mode) against a STREAM triad (`triad`), both multithreaded, median
 * ms over repetitions after warm-up, reported as GB/s of compulsory traffic:
 *   adam       reads θ, g, m, v; writes θ, m, v      28 B/element
 *   triad      reads b, c; writes a                  12 B/element (STREAM's count; the
 *              write-allocate read of a makes the real traffic 16 B)
 *   momentum   Lion: reads θ, g, m; writes θ, m      20 B/element
 * The goal is adam ≥ 80 % of triad's GB/s. Also, informative: adam's other ε modes, Tiger
 * (momentum with the per-tensor RMS pass, counted at the same 20 B) and Adafactor on one
 * 2048×2048 matrix (three passes over g; counted at its compulsory 12 B/element: θ, g read,
 * θ written).
 *
 *   node --import tsx bench/optim.ts [--n N] [--reps R] [--threads T] [--portable] [--json]
 *
 * Default N = 11 000 000 floats, about the `small` model's parameter count. Other processes
 * share the cores, so repeat runs differ by several percent.
 */
import { nativeKernels } from '../src/kernels/native.ts';
import type { AdamCoefs } from '../src/kernels/types.ts';
import { adamwCoefs } from '../src/optim/adamw.ts';
import { momentumCoefs } from '../src/optim/base.ts';
import { median } from '../src/util/stats.ts';
import { opt, flag, randomFloats } from './args.ts';

const json = flag('json');
const N = Number(opt('n', '11000000'));
const reps = Number(opt('reps', '11'));
if (!Number.isInteger(N) || N < 1 || !Number.isInteger(reps) || reps < 1) {
  console.error('bench/optim: --n and --reps must be positive integers');
  process.exit(2);
}

const nk = nativeKernels();
if (flag('threads')) nk.threads(Number(opt('threads', '2')));
const simd = nk.kernelsSetSimd(!flag('portable'));
const threads = nk.threads();

/** Median ms of `fn` over `reps` calls after two warm-up calls. */
function time(fn: () => void): number {
  fn();
  fn();
  const ms: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t0 = process.hrtime.bigint();
    fn();
    ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return median(ms)!;
}

interface Row {
  kernel: string;
  n: number;
  bytes_per_elem: number;
  ms: number;
  gbps: number;
}
const rows: Row[] = [];
function bench(kernel: string, n: number, bytesPerElem: number, fn: () => void): Row {
  const ms = time(fn);
  const row = { kernel, n, bytes_per_elem: bytesPerElem, ms, gbps: (n * bytesPerElem) / (ms * 1e6) };
  rows.push(row);
  if (!json) {
    console.log(
      `${kernel.padEnd(24)} ${String(n).padStart(9)} ${String(bytesPerElem).padStart(5)} B ${ms.toFixed(2).padStart(9)} ms ${row.gbps.toFixed(2).padStart(8)} GB/s`,
    );
  }
  return row;
}

if (!json) {
  console.log(`N=${N} threads=${threads} simd=${simd} reps=${reps} (median)`);
  console.log(`${'kernel'.padEnd(24)} ${'N'.padStart(9)} ${'bytes'.padStart(7)} ${'time'.padStart(12)} ${'rate'.padStart(13)}`);
}

// Triad first and again at the end: the ratio uses the better of the two, so a slow start
// (page faults, frequency ramp) does not flatter adam.
const a = new Float32Array(N),
  b = randomFloats(N),
  c = randomFloats(N);
const triad1 = bench('triad', N, 12, () => nk.triad(a, b, c, N, 0.5));

const p = randomFloats(N, 0.1),
  g = randomFloats(N, 0.01),
  m = new Float32Array(N),
  v = new Float32Array(N);
let t = 0;
const adamC = (epsMode: AdamCoefs['epsMode']): AdamCoefs => adamwCoefs({ beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, epsMode }, 1e-4, ++t);
const adam = bench('adam (AdamW, outside)', N, 28, () => nk.adam(p, g, m, v, N, adamC(0)));
bench('adam inside', N, 28, () => nk.adam(p, g, m, v, N, adamC(1)));
bench('adam zero', N, 28, () => nk.adam(p, g, m, v, N, adamC(2)));
bench('adam atan2', N, 28, () => nk.adam(p, g, m, v, N, adamC(3)));

const lion = momentumCoefs(0.9, 0.99, { lr: 1e-5, weightDecay: 0.1, phi: 0 });
bench('momentum (Lion, sign)', N, 20, () => nk.momentum(p, g, m, N, lion));
bench('momentum (Tiger, RMS θ)', N, 20, () =>
  nk.momentum(p, g, m, N, { ...lion, dirM: 0.965, dirG: 0.035, keepM: 0.965, addG: 0.035, block: N, rmsScale: true, rmsFloor: 1e-3 }),
);

const R = 2048,
  C = 2048,
  NA = R * C;
const ap = randomFloats(NA, 0.02),
  ag = randomFloats(NA, 0.01),
  vr = new Float32Array(R),
  vc = new Float32Array(C);
let ta = 0;
bench('adafactor 2048×2048', NA, 12, () => {
  ta++;
  nk.adafactor(ap, ag, vr, vc, null, 1, R, C, {
    beta2: 1 - ta ** -0.8,
    eps1: 1e-30,
    clipThreshold: 1,
    beta1: 0,
    lr: 1e-3,
    scaleParameter: true,
    eps2: 1e-3,
    weightDecay: 0,
  });
});

const triad2 = bench('triad (again)', N, 12, () => nk.triad(a, b, c, N, 0.5));
const triadBest = Math.max(triad1.gbps, triad2.gbps);
const ratio = adam.gbps / triadBest;
// STREAM counts 12 B per triad element, but writing `a` first reads its cache line (write-allocate):
// 16 B actually move. adam's 28 B include its own write-allocate-free updates (p, m, v are read first).
const ratioWA = adam.gbps / ((triadBest * 16) / 12);

if (json) {
  console.log(
    JSON.stringify({
      n: N,
      threads,
      simd,
      reps,
      rows,
      triad_gbps: triadBest,
      adam_gbps: adam.gbps,
      adam_over_triad: ratio,
      adam_over_triad_write_allocate: ratioWA,
    }),
  );
} else {
  console.log(`adam / triad = ${adam.gbps.toFixed(2)} / ${triadBest.toFixed(2)} GB/s = ${(ratio * 100).toFixed(1)} % (goal ≥ 80 %)`);
  console.log(`counting the triad's write-allocate (16 B/element): ${(ratioWA * 100).toFixed(1)} %`);
}

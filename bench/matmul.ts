/**
 * Matmul throughput on the GPT shapes that matter, in GFLOP/s (forward 2·BT·C·OC flops,
 * backward twice that), on the pool's threads and on one thread.
 *
 *   node --import tsx bench/matmul.ts [--json] [--rounds N] [--ms M] [--kernel auto|avx512bf16|avx512f|avx2-fma|portable]
 *                                     [--precision fp32|bf16]
 *                                     [--shape BTxCxOC]
 *
 * Each figure is timed over `rounds` rounds of at least `ms` milliseconds each; the table
 * shows the best and the median round (other processes share the cores, so the best is the
 * kernel and the median is what a busy machine gives).
 */
import { nativeKernels } from '../src/kernels/native.ts';
import { opt, flag } from './args.ts';

const json = flag('json');
const rounds = Number(opt('rounds', '7'));
const minMs = Number(opt('ms', '60'));
const nk = nativeKernels();
nk.matmulSetKernel(opt('kernel', 'auto') as 'auto');
const precision = opt('precision', 'fp32') as 'fp32' | 'bf16';
const kernel = nk.matmulKernel(precision);

interface Shape {
  model: string;
  BT: number;
  C: number;
  OC: number;
}
const only = opt('shape', '');
const SHAPES: Shape[] = only
  ? [(([BT, C, OC]) => ({ model: 'given', BT, C, OC }))(only.split('x').map(Number))]
  : [
      ...[
        [128, 384],
        [128, 128],
        [128, 512],
        [512, 128],
        [128, 256],
      ].map(([C, OC]) => ({ model: 'tiny', BT: 1024, C, OC })),
      ...[
        [384, 1152],
        [384, 384],
        [384, 1536],
        [1536, 384],
        [384, 256],
      ].map(([C, OC]) => ({ model: 'small', BT: 2048, C, OC })),
    ];

function rand(n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.random() * 2 - 1;
  return a;
}

/** GFLOP/s of `fn` (which does `flops` flops) per round: [best, median]. */
function measure(fn: () => void, flops: number): [number, number] {
  const t0 = performance.now();
  fn();
  const once = Math.max(performance.now() - t0, 1e-3);
  const reps = Math.max(1, Math.ceil(minMs / once));
  const rates: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const s = performance.now();
    for (let i = 0; i < reps; i++) fn();
    rates.push((flops * reps) / ((performance.now() - s) * 1e6));
  }
  rates.sort((a, b) => b - a);
  return [rates[0], rates[Math.floor(rates.length / 2)]];
}

interface Row extends Shape {
  threads: number;
  forward: { best: number; median: number };
  backward: { best: number; median: number };
}

function benchShape(s: Shape, threads: number): Row {
  const { BT, C, OC } = s;
  const inp = rand(BT * C),
    w = rand(OC * C),
    b = rand(OC),
    out = new Float32Array(BT * OC);
  const dout = rand(BT * OC),
    dinp = new Float32Array(BT * C),
    dw = new Float32Array(OC * C),
    db = new Float32Array(OC);
  const flops = 2 * BT * C * OC;
  const [fb, fm] = measure(() => nk.matmulForward(out, inp, w, b, BT, C, OC, precision), flops);
  const [bb, bm] = measure(() => nk.matmulBackward(dinp, dw, db, dout, inp, w, BT, C, OC, precision), 2 * flops);
  return { ...s, threads, forward: { best: fb, median: fm }, backward: { best: bb, median: bm } };
}

// Pool threads first, then one: pool.cc cannot grow the pool again after a parallel job
// (see test/matmul.test.ts), so the order matters.
const poolThreads = nk.threads();
const rows: Row[] = [];
for (const threads of poolThreads > 1 ? [poolThreads, 1] : [1]) {
  if (nk.threads() !== threads) nk.threads(threads);
  for (const s of SHAPES) rows.push(benchShape(s, threads));
}

if (json) {
  console.log(JSON.stringify({ kernel, precision, rounds, minMs, rows }, null, 2));
} else {
  const f = (x: number) => x.toFixed(1).padStart(6);
  console.log(`matmul kernel ${kernel}; GFLOP/s, best / median of ${rounds} rounds`);
  const head = [
    'model',
    '   BT',
    '    C',
    '   OC',
    ...rows.filter((r, i, a) => a.findIndex((q) => q.threads === r.threads) === i).flatMap((r) => [`fwd ${r.threads}t best/med`, `bwd ${r.threads}t best/med`]),
  ];
  console.log(head.join('  '));
  for (const s of SHAPES) {
    const cells = rows
      .filter((r) => r.model === s.model && r.C === s.C && r.OC === s.OC)
      .flatMap((r) => [`${f(r.forward.best)} /${f(r.forward.median)}`, `${f(r.backward.best)} /${f(r.backward.median)}`]);
    console.log(
      [s.model.padEnd(5), String(s.BT).padStart(5), String(s.C).padStart(5), String(s.OC).padStart(5), ...cells.map((c) => c.padStart(17))].join('  '),
    );
  }
}

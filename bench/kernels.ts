/**
 * Every non-matmul kernel on the tiny and small GPT shapes: µs per call (median over rounds)
 * and the rate that bounds it — GB/s of compulsory traffic for the memory-bound kernels,
 * GFLOP/s over the causal flops for attention (forward 2·B·NH·(T²/2)·hs·2, backward twice
 * that).
 *
 *   node --import tsx bench/kernels.ts [--json] [--rounds N] [--ms M] [--threads N] [--portable]
 *                                      [--only NAME,NAME]
 *
 * Glossary: B batch, T time, C channels, NH heads, hs = C/NH, V vocabulary, BT = B·T,
 * N parameters (AdamW and friends run over the whole flat parameter buffer).
 * Other processes share the two cores, so repeat runs differ by 10–20 %.
 */
import { nativeKernels } from '../src/kernels/native.ts';
import { adamw } from '../src/optim/adamw.ts';
import { median } from '../src/util/stats.ts';
import { opt, flag, randomFloats } from './args.ts';

const json = flag('json');
const rounds = Number(opt('rounds', '9'));
const minMs = Number(opt('ms', '20'));
const only = opt('only', '').split(',').filter(Boolean);

const nk = nativeKernels();
const threadsBefore = nk.threads();
if (flag('threads')) nk.threads(Number(opt('threads', String(threadsBefore))));
const simd = nk.kernelsSetSimd(!flag('portable'));

interface Model {
  name: string;
  B: number;
  T: number;
  C: number;
  NH: number;
  V: number;
  L: number;
}
const MODELS: Model[] = [
  { name: 'tiny', B: 8, T: 128, C: 128, NH: 4, V: 256, L: 4 },
  { name: 'small', B: 8, T: 256, C: 384, NH: 6, V: 256, L: 6 },
];

/** Median µs per call of `fn` over `rounds` rounds of at least `minMs` ms each. */
function time(fn: () => void): number {
  fn();
  let calls = 1;
  for (;;) {
    // calibrate a round to ~minMs
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < calls; i++) fn();
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    if (ms >= minMs / 4 || calls > 1e6) {
      calls = Math.max(1, Math.ceil((calls * minMs) / Math.max(ms, 1e-3)));
      break;
    }
    calls *= 4;
  }
  const us: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < calls; i++) fn();
    us.push(Number(process.hrtime.bigint() - t0) / 1e3 / calls);
  }
  return median(us)!;
}

interface Row {
  model: string;
  kernel: string;
  shape: string;
  us: number;
  rate: number;
  unit: 'GB/s' | 'GFLOP/s';
}
const rows: Row[] = [];

function bench(m: Model, kernel: string, shape: string, fn: () => void, amount: number, unit: Row['unit']) {
  if (only.length && !only.includes(kernel)) return;
  const us = time(fn);
  const rate = amount / (us * 1e3); // bytes or flops per ns = G/s
  rows.push({ model: m.name, kernel, shape, us, rate, unit });
  if (!json) console.log(`${m.name.padEnd(6)} ${kernel.padEnd(18)} ${shape.padEnd(22)} ${us.toFixed(1).padStart(9)} µs ${rate.toFixed(1).padStart(7)} ${unit}`);
}

if (!json) {
  console.log(`threads=${nk.threads()} simd=${simd}`);
  console.log(`${'model'.padEnd(6)} ${'kernel'.padEnd(18)} ${'shape'.padEnd(22)} ${'per call'.padStart(12)} ${'rate'.padStart(15)}`);
}

for (const m of MODELS) {
  const { B, T, C, NH, V, L } = m;
  const BT = B * T,
    hs = C / NH,
    F = 4; // F: bytes per float
  const N = V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C; // GPT-2 parameter count

  const inp = randomFloats(BT * C, 2),
    out = new Float32Array(BT * C),
    w = randomFloats(C),
    b = randomFloats(C);
  const mean = new Float32Array(BT),
    rstd = new Float32Array(BT),
    dout = randomFloats(BT * C),
    dinp = new Float32Array(BT * C);
  const dw = new Float32Array(C),
    db = new Float32Array(C);
  nk.layernormForward(out, mean, rstd, inp, w, b, BT, C);
  bench(m, 'layernormForward', `N=${BT} C=${C}`, () => nk.layernormForward(out, mean, rstd, inp, w, b, BT, C), 2 * BT * C * F, 'GB/s');
  bench(m, 'layernormBackward', `N=${BT} C=${C}`, () => nk.layernormBackward(dinp, dw, db, dout, inp, w, mean, rstd, BT, C), 4 * BT * C * F, 'GB/s');

  const N4 = BT * 4 * C,
    h = randomFloats(N4, 3),
    g = new Float32Array(N4),
    dh = randomFloats(N4),
    dg = new Float32Array(N4);
  bench(m, 'geluForward', `N=${N4}`, () => nk.geluForward(g, h, N4), 2 * N4 * F, 'GB/s');
  bench(m, 'geluBackward', `N=${N4}`, () => nk.geluBackward(dg, h, dh, N4), 4 * N4 * F, 'GB/s');

  bench(m, 'residualForward', `N=${BT * C}`, () => nk.residualForward(out, inp, dout, BT * C), 3 * BT * C * F, 'GB/s');
  bench(m, 'accumulate', `N=${BT * C}`, () => nk.accumulate(dinp, dout, BT * C), 3 * BT * C * F, 'GB/s');

  const tok = Int32Array.from({ length: BT }, () => Math.floor(Math.random() * V));
  const wte = randomFloats(V * C),
    wpe = randomFloats(T * C),
    dwte = new Float32Array(V * C),
    dwpe = new Float32Array(T * C);
  bench(m, 'encoderForward', `BT=${BT} C=${C}`, () => nk.encoderForward(out, tok, wte, wpe, B, T, C), 3 * BT * C * F, 'GB/s');
  bench(m, 'encoderBackward', `BT=${BT} C=${C}`, () => nk.encoderBackward(dwte, dwpe, dout, tok, B, T, C), 5 * BT * C * F, 'GB/s');

  const logits = randomFloats(BT * V, 4),
    losses = new Float32Array(BT),
    work = new Float32Array(BT * V);
  bench(m, 'crossEntropy', `BT=${BT} V=${V} loss`, () => nk.crossEntropy(losses, null, logits, tok, BT, V, 0), BT * V * F, 'GB/s');
  bench(
    m,
    'crossEntropy+grad',
    `BT=${BT} V=${V} inplace`,
    () => {
      work.set(logits); // the in-place gradient overwrites logits; copy cost excluded below
      nk.crossEntropy(losses, work, work, tok, BT, V, 1 / BT);
    },
    2 * BT * V * F,
    'GB/s',
  );
  const ce = rows[rows.length - 1];
  if (ce && ce.kernel === 'crossEntropy+grad' && ce.model === m.name) {
    const copyUs = time(() => work.set(logits));
    ce.us = Math.max(ce.us - copyUs, 1e-3);
    ce.rate = (2 * BT * V * F) / (ce.us * 1e3);
    if (!json)
      console.log(
        `${''.padEnd(6)} ${'  (minus the copy)'.padEnd(18)} ${''.padEnd(22)} ${ce.us.toFixed(1).padStart(9)} µs ${ce.rate.toFixed(1).padStart(7)} GB/s`,
      );
  }

  const qkv = randomFloats(BT * 3 * C),
    att = new Float32Array(B * NH * T * T),
    atty = new Float32Array(BT * C);
  const dqkv = new Float32Array(BT * 3 * C);
  const fwdFlops = 2 * B * NH * ((T * T) / 2) * hs * 2;
  nk.attentionForward(atty, att, qkv, B, T, C, NH);
  bench(m, 'attentionForward', `B=${B} T=${T} NH=${NH} hs=${hs}`, () => nk.attentionForward(atty, att, qkv, B, T, C, NH), fwdFlops, 'GFLOP/s');
  bench(m, 'attentionBackward', `B=${B} T=${T} NH=${NH} hs=${hs}`, () => nk.attentionBackward(dqkv, dout, qkv, att, B, T, C, NH), 2 * fwdFlops, 'GFLOP/s');

  const p = randomFloats(N, 0.1),
    gr = randomFloats(N, 0.01);
  const adamwOpt = adamw({ lr: 1e-3 }, { kernels: nk });
  const st = adamwOpt.init(p);
  bench(m, 'adamw', `N=${N}`, () => adamwOpt.step(p, gr, st, { gradsFinite: true }), 7 * N * F, 'GB/s');
  bench(m, 'sumSquares', `N=${N}`, () => nk.sumSquares(gr, N), N * F, 'GB/s');
  bench(m, 'scale', `N=${N}`, () => nk.scale(gr, N, 1), 2 * N * F, 'GB/s');
}

if (json) console.log(JSON.stringify({ threads: nk.threads(), simd, rows }, null, 2));
nk.threads(threadsBefore);

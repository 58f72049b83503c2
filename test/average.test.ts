// keel average: streamed checkpoint averaging (src/average/stream.ts, src/cli/average.ts) and the
// F16/BF16 encoders it rounds with (src/io/safetensors.ts). Every average is compared bit for bit
// with a float64 reference rounded by an independent exact (BigInt) rounding function.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../src/errors.ts';
import { averageCheckpoints, type AverageOptions } from '../src/average/stream.ts';
import { INDEX_FILE, lawaInputs } from '../src/average/inputs.ts';
import type { OutputDtype } from '../src/average/plan.ts';
import {
  DTYPE_SIZE,
  encodeFloats,
  encodeHeader,
  openSafetensors,
  parseHeader,
  readSafetensors,
  SafetensorsError,
  writeSafetensors,
  type DType,
} from '../src/io/safetensors.ts';
import { floatBitsToBf16Bits, floatBitsToHalfBits, floatToBf16Bits, floatToHalfBits, halfBitsToFloatBits } from '../src/util/float16.ts';
import { averageCommand } from '../src/cli/average.ts';
import { loadModel } from '../src/model/checkpoint.ts';
import { train } from '../src/train/trainer.ts';
import { Rng } from '../src/util/rng.ts';
import { keel, tempRoot, trainOptions, walk, writeCorpus } from './helpers.ts';

const { fresh } = tempRoot('average');

// ---------------------------------------------------------------------------------------------
// Exact reference rounding: x (a double) to a binary format with p significand bits (implicit
// bit included), minimum normal exponent emin and maximum exponent emax; nearest, ties to even;
// overflow to ±inf as IEEE 754 (round with unbounded exponent, then ≥ 2^(emax+1) is inf).

const FORMATS = { F32: [24, -126, 127], BF16: [8, -126, 127], F16: [11, -14, 15] } as const;

function exactRound(x: number, dtype: 'F32' | 'BF16' | 'F16'): number {
  const [p, emin, emax] = FORMATS[dtype];
  if (Number.isNaN(x) || x === 0 || !Number.isFinite(x)) return x;
  const sign = x < 0 ? -1 : 1;
  const dv = new DataView(new ArrayBuffer(8));
  dv.setFloat64(0, Math.abs(x));
  const bits = dv.getBigUint64(0);
  const be = Number(bits >> 52n);
  let M = bits & ((1n << 52n) - 1n);
  let E: number;
  if (be === 0) E = -1074;
  else {
    M |= 1n << 52n;
    E = be - 1075;
  }
  const e = E + M.toString(2).length - 1; // floor(log2 |x|)
  const q = Math.max(e, emin) - (p - 1); // exponent of the target's last significand bit
  let r: bigint;
  if (E >= q) r = M << BigInt(E - q);
  else {
    const s = BigInt(q - E);
    r = M >> s;
    const rem = M - (r << s);
    const half = 1n << (s - 1n);
    if (rem > half || (rem === half && (r & 1n) === 1n)) r++;
  }
  const v = Number(r) * 2 ** q;
  return v >= 2 ** (emax + 1) ? sign * Infinity : sign * v;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const bitsToF32 = (u: number) => ((u32[0] = u), f32[0]);
const f32Bits = (x: number) => ((f32[0] = x), u32[0]);
const bf16Value = (h: number) => bitsToF32(h << 16);
const f16Value = (h: number) => bitsToF32(halfBitsToFloatBits(h));

function sameValue(got: number, want: number, what: string): void {
  if (Number.isNaN(want)) assert.ok(Number.isNaN(got), `${what}: want NaN, got ${got}`);
  else assert.ok(Object.is(got, want), `${what}: got ${got}, want ${want}`);
}

// ---------------------------------------------------------------------------------------------
// Files by hand, in any dtype

interface Raw {
  name: string;
  dtype: DType;
  shape: number[];
  /** Values as doubles (each exactly representable in dtype) or raw bytes. */
  values: Float64Array;
}

/** Raw little-endian bytes of values that are exactly representable in dtype. */
function bytesOf(values: Float64Array, dtype: DType): Uint8Array {
  return encodeFloats(values, dtype); // exact for representable values (tested below)
}

function writeRaw(file: string, tensors: Raw[], metadata?: Record<string, string>): string {
  const h = encodeHeader(tensors, metadata);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, Buffer.concat([h.bytes, ...tensors.map((t) => bytesOf(t.values, t.dtype))]));
  return file;
}

/** A random value exactly representable in dtype: mostly normal numbers of varied scale, some specials. */
function randomValue(rng: Rng, dtype: DType): number {
  const r = rng.uniform();
  if (r < 0.02) return [NaN, Infinity, -Infinity, -0, 0][rng.int(5)];
  let x: number;
  if (r < 0.06)
    x = (rng.uniform() - 0.5) * 2 ** -(dtype === 'F16' ? 20 : 130); // subnormal territory
  else if (r < 0.08)
    x = (rng.uniform() - 0.5) * (dtype === 'F16' ? 130_000 : 6e38); // near overflow
  else x = rng.normal() * 2 ** (rng.int(16) - 8);
  switch (dtype) {
    case 'F64':
      return x;
    case 'F32':
      return Math.fround(x);
    case 'BF16':
      return bf16Value(floatToBf16Bits(x));
    case 'F16':
      return f16Value(floatToHalfBits(x));
  }
}

const SHAPES: Array<[string, number[]]> = [
  ['embed.weight', [13, 7]],
  ['h.0.attn.bias', [7]],
  ['scalar', []],
  ['empty', [0, 3]],
  ['h.0.mlp.weight', [5, 11]],
];

function randomTensors(rng: Rng, dtype: DType | ((name: string) => DType)): Raw[] {
  return SHAPES.map(([name, shape]) => {
    const dt = typeof dtype === 'function' ? dtype(name) : dtype;
    const n = shape.reduce((a, b) => a * b, 1);
    return { name, dtype: dt, shape, values: Float64Array.from({ length: n }, () => randomValue(rng, dt)) };
  });
}

/** The reference: (Σ wᵢxᵢ)/Σw in float64 as the module documents, per element. */
function reference(inputs: Raw[][], weights?: number[]): Map<string, Float64Array> {
  const w = weights ?? inputs.map(() => 1);
  const W = w.reduce((a, b) => a + b, 0);
  const out = new Map<string, Float64Array>();
  inputs[0].forEach((t, ti) => {
    const m = new Float64Array(t.values.length);
    for (let j = 0; j < m.length; j++) {
      let s = 0;
      let first = true;
      for (let i = 0; i < inputs.length; i++) {
        if (w[i] === 0) continue;
        const term = w[i] === 1 ? inputs[i][ti].values[j] : w[i] * inputs[i][ti].values[j];
        s = first ? term : s + term;
        first = false;
      }
      m[j] = W === 1 ? s : s / W;
    }
    out.set(t.name, m);
  });
  return out;
}

/** Decodes every element of every tensor of a file as a double (exact). */
function decodeFile(file: string): { dtypes: Map<string, DType>; values: Map<string, Float64Array>; metadata: Record<string, string> } {
  const r = openSafetensors(file);
  try {
    const dtypes = new Map<string, DType>();
    const values = new Map<string, Float64Array>();
    for (const t of r.infos) {
      const raw = new Uint8Array(t.end - t.begin);
      r.readInto(t.name, raw);
      const n = raw.byteLength / DTYPE_SIZE[t.dtype];
      let v: Float64Array;
      if (t.dtype === 'F64') v = new Float64Array(raw.buffer, 0, n);
      else if (t.dtype === 'F32') v = Float64Array.from(new Float32Array(raw.buffer, 0, n));
      else v = Float64Array.from(new Uint16Array(raw.buffer, 0, n), t.dtype === 'BF16' ? bf16Value : f16Value);
      dtypes.set(t.name, t.dtype);
      values.set(t.name, v);
    }
    return { dtypes, values, metadata: r.metadata };
  } finally {
    r.close();
  }
}

function assertAverage(file: string, inputs: Raw[][], outDtype: DType | null, weights?: number[]): void {
  const ref = reference(inputs, weights);
  const got = decodeFile(file);
  assert.deepEqual(
    [...got.values.keys()],
    inputs[0].map((t) => t.name),
    'names, in the first input order',
  );
  for (const t of inputs[0]) {
    const dt = outDtype ?? t.dtype;
    assert.equal(got.dtypes.get(t.name), dt, t.name);
    const want = ref.get(t.name)!;
    const have = got.values.get(t.name)!;
    assert.equal(have.length, want.length);
    for (let j = 0; j < want.length; j++) {
      const w = dt === 'F64' ? want[j] : exactRound(want[j], dt);
      sameValue(have[j], w, `${t.name}[${j}] (${dt}, mean ${want[j]})`);
    }
  }
}

/** A validator for assert.throws/rejects: a one-line UserError whose message has every word. */
function userError(words: (string | RegExp)[]) {
  return (e: unknown) => {
    assert.ok(e instanceof UserError, `expected a UserError, got ${e}`);
    for (const w of words) {
      if (typeof w === 'string') assert.ok(e.message.includes(w), `"${e.message}" should mention ${w}`);
      else assert.match(e.message, w);
    }
    assert.ok(!e.message.includes('\n'), 'one line');
    return true;
  };
}

function throwsUser(f: () => unknown, ...words: (string | RegExp)[]): void {
  assert.throws(f, userError(words));
}

async function rejectsUser(f: () => Promise<unknown>, ...words: (string | RegExp)[]): Promise<void> {
  await assert.rejects(f, userError(words));
}

/** Files and directories below dir whose names look like this module's temporaries. */
const leftovers = (dir: string) => walk(dir).filter((p) => /\.(tmp|old)-\d+-[0-9a-f]+$/.test(p));

const quiet: AverageOptions = { fsync: false };

// ---------------------------------------------------------------------------------------------

describe('rounding to bf16 and f16', () => {
  test('the exact reference agrees with Math.fround for float32', async () => {
    const rng = new Rng(1);
    for (let i = 0; i < 20000; i++) {
      const x = rng.normal() * 2 ** (rng.int(300) - 150);
      sameValue(exactRound(x, 'F32'), Math.fround(x), String(x));
    }
  });

  test('bf16: ties to even, no double rounding, overflow, subnormals, NaN, signed zero', async () => {
    const cases: Array<[number, number]> = [
      [1, 0x3f80],
      [1 + 2 ** -8, 0x3f80], // tie: to even (down)
      [1 + 3 * 2 ** -8, 0x3f82], // tie: to even (up)
      [1 + 2 ** -8 + 2 ** -30, 0x3f81], // just above a tie; via float32 it would be the tie, then 0x3f80
      [-(1 + 2 ** -8 + 2 ** -40), 0xbf81],
      [(2 - 2 ** -7) * 2 ** 127, 0x7f7f], // largest bf16
      [(2 - 2 ** -8) * 2 ** 127 - 2 ** 100, 0x7f7f],
      [(2 - 2 ** -8) * 2 ** 127, 0x7f80], // tie with 2^128: even is inf
      [3.4028234663852886e38, 0x7f80], // float32 max rounds to inf in bf16
      [1e300, 0x7f80],
      [-1e300, 0xff80],
      [Infinity, 0x7f80],
      [-Infinity, 0xff80],
      [2 ** -133, 0x0001], // smallest subnormal
      [2 ** -134, 0x0000], // tie with 0: even
      [2 ** -134 + 2 ** -160, 0x0001], // above the tie by less than float32 can hold
      [3 * 2 ** -134, 0x0002], // tie between 1 and 2 ulps: even
      [2 ** -126, 0x0080], // smallest normal
      [-0, 0x8000],
      [1e-300, 0x0000],
      [-1e-300, 0x8000],
    ];
    for (const [x, want] of cases) assert.equal(floatToBf16Bits(x), want, `bf16(${x}) = 0x${floatToBf16Bits(x).toString(16)}`);
    const nan = floatToBf16Bits(NaN);
    assert.ok((nan & 0x7f80) === 0x7f80 && (nan & 0x7f) !== 0, 'NaN stays NaN');
    assert.ok(Number.isNaN(bf16Value(floatBitsToBf16Bits(0x7f800001))), 'a NaN whose payload is in the low half stays NaN');
  });

  test('f16: ties to even, no double rounding, overflow, subnormals, NaN, signed zero', async () => {
    const cases: Array<[number, number]> = [
      [1, 0x3c00],
      [1 + 2 ** -11, 0x3c00],
      [1 + 3 * 2 ** -11, 0x3c02],
      [1 + 2 ** -11 + 2 ** -40, 0x3c01],
      [65504, 0x7bff],
      [65519.99, 0x7bff],
      [65520, 0x7c00], // tie with 2^16: even is inf
      [1e10, 0x7c00],
      [-1e10, 0xfc00],
      [2 ** -24, 0x0001],
      [2 ** -25, 0x0000], // tie with 0
      [2 ** -25 + 2 ** -60, 0x0001],
      [3 * 2 ** -25, 0x0002], // tie: even
      [5 * 2 ** -25, 0x0002], // tie: even
      [2 ** -14, 0x0400],
      [2 ** -14 - 2 ** -25, 0x0400], // tie between the largest subnormal and the smallest normal
      [2 ** -14 - 2 ** -24, 0x03ff],
      [-0, 0x8000],
      [1e-10, 0x0000],
      [Infinity, 0x7c00],
      [-Infinity, 0xfc00],
    ];
    for (const [x, want] of cases) assert.equal(floatToHalfBits(x), want, `f16(${x}) = 0x${floatToHalfBits(x).toString(16)}`);
    const nan = floatToHalfBits(NaN);
    assert.ok((nan & 0x7c00) === 0x7c00 && (nan & 0x3ff) !== 0, 'NaN stays NaN');
    assert.ok(Number.isNaN(f16Value(floatBitsToHalfBits(0x7f800001))), 'a NaN with a low payload stays NaN');
  });

  test('every bf16 and f16 value encodes to itself; random float32 and float64 match the exact reference', async () => {
    for (let h = 0; h < 65536; h++) {
      if (!Number.isNaN(bf16Value(h))) assert.equal(floatToBf16Bits(bf16Value(h)), h);
      if (!Number.isNaN(f16Value(h))) assert.equal(floatToHalfBits(f16Value(h)), h);
    }
    const rng = new Rng(2);
    for (let i = 0; i < 100_000; i++) {
      const u = rng.nextU32();
      const x = bitsToF32(u);
      if (Number.isNaN(x)) continue;
      sameValue(bf16Value(floatBitsToBf16Bits(u)), exactRound(x, 'BF16'), `bf16 bits 0x${u.toString(16)}`);
      sameValue(f16Value(floatBitsToHalfBits(u)), exactRound(x, 'F16'), `f16 bits 0x${u.toString(16)}`);
    }
    for (let i = 0; i < 50_000; i++) {
      // doubles within a few float32 ulps of bf16/f16 ties: the cases that double rounding gets wrong
      const base = rng.normal() * 2 ** (rng.int(60) - 30);
      const tieB = bf16Value(floatToBf16Bits(base)) + Math.sign(base) * Math.abs(base) * 2 ** -9;
      const tieH = f16Value(floatToHalfBits(base)) * (1 + 2 ** -12);
      for (const x of [tieB, tieB * (1 + 2 ** -30), tieB * (1 - 2 ** -30), tieH * (1 + 2 ** -35), tieH * (1 - 2 ** -35), base]) {
        sameValue(bf16Value(floatToBf16Bits(x)), exactRound(x, 'BF16'), `bf16(${x})`);
        sameValue(f16Value(floatToHalfBits(x)), exactRound(x, 'F16'), `f16(${x})`);
      }
    }
  });

  test('encodeFloats rounds arrays like the scalar functions, from float32 and float64', async () => {
    const rng = new Rng(3);
    const d = Float64Array.from({ length: 4099 }, () => rng.normal() * 2 ** (rng.int(40) - 20));
    d.set([NaN, Infinity, -0, 1 + 2 ** -8 + 2 ** -30, 65520, 2 ** -134 + 2 ** -160], 0);
    const f = Float32Array.from(d);
    for (const dtype of ['BF16', 'F16'] as const) {
      const enc = dtype === 'BF16' ? floatToBf16Bits : floatToHalfBits;
      const fromD = new Uint16Array(encodeFloats(d, dtype).buffer);
      const fromF = new Uint16Array(encodeFloats(f, dtype).buffer);
      for (let i = 0; i < d.length; i++) {
        if (Number.isNaN(d[i])) continue;
        assert.equal(fromD[i], enc(d[i]), `${dtype} from float64 [${i}]`);
        assert.equal(fromF[i], enc(f[i]), `${dtype} from float32 [${i}]`);
      }
    }
    assert.deepEqual(new Float64Array(encodeFloats(f, 'F64').buffer), Float64Array.from(f));
  });

  test('writeSafetensors writes BF16, F16 and F64 tensors that read back rounded', async () => {
    const file = fresh('dtypes') + '.safetensors';
    const data = new Float32Array([1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 70000, -0]);
    writeSafetensors(file, [
      { name: 'b', shape: [5], data, dtype: 'BF16' },
      { name: 'h', shape: [5], data, dtype: 'F16' },
      { name: 'd', shape: [5], data, dtype: 'F64' },
      { name: 'f', shape: [5], data },
    ]);
    const r = readSafetensors(file);
    assert.deepEqual(
      r.infos.map((i) => i.dtype),
      ['BF16', 'F16', 'F64', 'F32'],
    );
    assert.deepEqual(Array.from(r.tensors.get('b')!), [1, 1, 1 + 4 * 2 ** -8, 70144, -0]);
    assert.deepEqual(Array.from(r.tensors.get('h')!), [1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, Infinity, -0]);
    assert.deepEqual(r.tensors.get('d'), data);
    assert.deepEqual(r.tensors.get('f'), data);
  });
});

describe('averageCheckpoints: values', () => {
  const dtypes: DType[] = ['F32', 'F16', 'BF16', 'F64'];
  for (const dtype of dtypes) {
    test(`3 inputs in ${dtype}, dtype keep, equal the float64 reference rounded once (chunked and whole)`, async () => {
      const rng = new Rng(10 + dtypes.indexOf(dtype));
      const inputs = [0, 1, 2].map(() => randomTensors(rng, dtype));
      const files = inputs.map((t, i) => writeRaw(path.join(fresh(dtype), `in${i}.safetensors`), t, { format: 'pt', i: String(i) }));
      for (const chunkElements of [7, 1 << 20]) {
        const out = fresh(`${dtype}-out`) + '.safetensors';
        const s = await averageCheckpoints(files, out, { ...quiet, chunkElements });
        assertAverage(out, inputs, null);
        assert.deepEqual(readSafetensors(out).metadata, { format: 'pt', i: '0' }, 'metadata of the first input');
        assert.equal(s.tensors, SHAPES.length);
        assert.equal(s.bytes_in, 3 * inputs[0].reduce((a, t) => a + t.values.length * DTYPE_SIZE[dtype], 0));
        assert.equal(s.bytes_out, fs.statSync(out).size);
        assert.equal(s.sharded, false);
        assert.ok(s.peak_rss > 0);
      }
    });
  }

  for (const [inDtype, outDtype] of [
    ['F32', 'bf16'],
    ['F32', 'f16'],
    ['F64', 'bf16'],
    ['F64', 'f16'],
    ['BF16', 'f32'],
    ['F16', 'bf16'],
  ] as const) {
    test(`${inDtype} inputs → --dtype ${outDtype}`, async () => {
      const rng = new Rng(20);
      const inputs = [0, 1, 2].map(() => randomTensors(rng, inDtype));
      const files = inputs.map((t, i) => writeRaw(path.join(fresh('conv'), `in${i}.safetensors`), t));
      const out = fresh('conv-out') + '.safetensors';
      await averageCheckpoints(files, out, { ...quiet, dtype: outDtype, chunkElements: 5 });
      const dt = ({ f32: 'F32', bf16: 'BF16', f16: 'F16' } as const)[outDtype];
      assertAverage(out, inputs, dt);
    });
  }

  test('mixed dtypes within a checkpoint keep each tensor its own', async () => {
    const rng = new Rng(30);
    const pick = (name: string): DType => (name.includes('bias') ? 'F32' : name === 'scalar' ? 'F64' : 'BF16');
    const inputs = [0, 1].map(() => randomTensors(rng, pick));
    const files = inputs.map((t, i) => writeRaw(path.join(fresh('mixed'), `in${i}.safetensors`), t));
    const out = fresh('mixed-out') + '.safetensors';
    await averageCheckpoints(files, out, quiet);
    assertAverage(out, inputs, null);
  });

  test('weights: (Σ wᵢxᵢ)/Σw; a zero weight leaves an input out (even its NaN and inf)', async () => {
    const rng = new Rng(40);
    const inputs = [0, 1, 2].map(() => randomTensors(rng, 'F32'));
    const files = inputs.map((t, i) => writeRaw(path.join(fresh('w'), `in${i}.safetensors`), t));
    for (const weights of [
      [0.5, 2, 0.25],
      [1, 0, 3],
      [0, 0, 7],
      [1, 1, 1],
      [0.1, 0.2, 0.7],
    ]) {
      const out = fresh('w-out') + '.safetensors';
      const s = await averageCheckpoints(files, out, { ...quiet, weights, chunkElements: 6 });
      assert.deepEqual(s.weights, weights);
      assertAverage(out, inputs, null, weights);
    }
    // a NaN in a zero-weight input does not reach the output
    const nanIn = inputs[0].map((t) => ({ ...t, values: t.values.map(() => NaN) }));
    const nanFile = writeRaw(path.join(fresh('w'), 'nan.safetensors'), nanIn);
    const out = fresh('w-out') + '.safetensors';
    await averageCheckpoints([files[1], nanFile], out, { ...quiet, weights: [1, 0] });
    assertAverage(out, [inputs[1]], null);
  });

  test('1 to 5 float32 inputs, weighted and not, through both float32 kernels (native and TypeScript)', async () => {
    const rng = new Rng(43);
    const inputs = [0, 1, 2, 3, 4].map(() => randomTensors(rng, 'F32'));
    const files = inputs.map((t, i) => writeRaw(path.join(fresh('k'), `in${i}.safetensors`), t));
    for (const portable of [false, true]) {
      for (let k = 1; k <= 5; k++) {
        for (const weights of [undefined, [0.3, 1, 2.5, 0.125, 7].slice(0, k)]) {
          for (const chunkElements of [9, 1 << 20]) {
            const out = fresh('k-out') + '.safetensors';
            await averageCheckpoints(files.slice(0, k), out, { ...quiet, weights, chunkElements, portable });
            assertAverage(out, inputs.slice(0, k), null, weights);
          }
        }
      }
    }
  });

  test('the order of operations is the documented one (cancellation makes any other order visible)', async () => {
    const rng = new Rng(44);
    const n = 2000;
    for (const [dtype, k] of [
      ['F32', 2],
      ['F32', 3],
      ['F32', 4],
      ['F32', 5],
      ['F64', 3],
      ['BF16', 3],
    ] as const) {
      // per element: a big value, a second input that (nearly) cancels it, then small ones: the
      // documented order cancels first and keeps the small terms; most other orders lose them
      const cols = Array.from({ length: k }, () => new Float64Array(n));
      for (let j = 0; j < n; j++) {
        const big = (rng.uniform() < 0.5 ? -1 : 1) * (1 + rng.uniform()) * 2 ** (20 + rng.int(20));
        cols[0][j] = big;
        cols[1][j] = -big * (rng.uniform() < 0.3 ? 1 : 1 + 2 ** -(21 + rng.int(3))); // a + b: a few float32 ulps of a, or 0
        for (let i = 2; i < k; i++) cols[i][j] = rng.normal() * 2 ** -(10 + rng.int(30));
      }
      const inputs = cols.map((c) => {
        const v = c.map((x) => (dtype === 'F64' ? x : dtype === 'F32' ? Math.fround(x) : bf16Value(floatToBf16Bits(x))));
        return [{ name: 't', dtype, shape: [n], values: v } as Raw];
      });
      // weighted: the second weight equals the first, so that the cancellation survives the weights
      for (const weights of [undefined, Array.from({ length: k }, (_, i) => [0.3, 0.3, 0.9, 2.1, 0.6][i])]) {
        const files = inputs.map((t, i) => writeRaw(path.join(fresh('order'), `in${i}.safetensors`), t));
        for (const portable of [false, true]) {
          const out = fresh('order-out') + '.safetensors';
          await averageCheckpoints(files, out, { ...quiet, weights, chunkElements: 333, portable });
          assertAverage(out, inputs, null, weights);
        }
        // the test has teeth: other orders give other results here
        const ref = reference(inputs, weights).get('t')!;
        const rev = reference([...inputs].reverse(), weights && [...weights].reverse()).get('t')!;
        const w = weights ?? inputs.map(() => 1);
        const W = w.reduce((a, b) => a + b, 0);
        const pre = Float64Array.from(ref, (_, j) => inputs.reduce((s, t, i) => s + (w[i] / W) * t[0].values[j], 0));
        const round = (x: number) => (dtype === 'F64' ? x : exactRound(x, dtype));
        const differs = (o: Float64Array) => ref.some((x, j) => !Object.is(round(x), round(o[j])));
        if (dtype === 'BF16') continue; // 8-bit significands: everything cancels exactly, in any order
        if (k > 2) assert.ok(differs(rev), `${dtype} k=${k}: reversed order should differ somewhere`); // two terms commute
        // (k = 2: the few orders agree almost always; k = 4 equal weights: 1/4 scales exactly)
        if (k > 2 && (weights || k !== 4)) assert.ok(differs(pre), `${dtype} k=${k}: pre-normalized weights should differ somewhere`);
      }
    }
  });

  test('bad weights are UserErrors and write nothing', async () => {
    const rng = new Rng(41);
    const files = [0, 1].map((i) => writeRaw(path.join(fresh('bw'), `in${i}.safetensors`), randomTensors(rng, 'F32')));
    const out = fresh('bw-out') + '.safetensors';
    await rejectsUser(() => averageCheckpoints(files, out, { weights: [1] }), '1 weights for 2 inputs');
    await rejectsUser(() => averageCheckpoints(files, out, { weights: [1, -1] }), 'negative');
    await rejectsUser(() => averageCheckpoints(files, out, { weights: [0, 0] }), 'sum');
    await rejectsUser(() => averageCheckpoints(files, out, { weights: [1, NaN] }), 'finite');
    await rejectsUser(() => averageCheckpoints(files, out, { weights: [1e308, 1e308] }), 'sum');
    await rejectsUser(() => averageCheckpoints([], out), 'nothing to average');
    await rejectsUser(() => averageCheckpoints(files, out, { dtype: 'f8' as OutputDtype }), 'f8');
    assert.ok(!fs.existsSync(out));
  });

  test('identical inputs average to themselves, bit for bit (F32, F16, BF16: k·x is exact in float64)', async () => {
    const rng = new Rng(42);
    for (const dtype of ['F32', 'F16', 'BF16'] as const) {
      const t = randomTensors(rng, dtype);
      const file = writeRaw(path.join(fresh('same'), 'in.safetensors'), t);
      const out = fresh('same-out') + '.safetensors';
      await averageCheckpoints([file, file, file], out, quiet);
      const a = decodeFile(file).values;
      const b = decodeFile(out).values;
      for (const [name, v] of a) {
        const w = b.get(name)!;
        for (let j = 0; j < v.length; j++) sameValue(w[j], v[j], `${dtype} ${name}[${j}]`);
      }
    }
  });

  test('rounding through the average: bf16 ties to even and a mean that float32 would round twice', async () => {
    const dir = fresh('ties');
    const bf = (name: string, bits: number[]) =>
      writeRaw(path.join(dir, name), [{ name: 't', dtype: 'BF16', shape: [bits.length], values: Float64Array.from(bits, bf16Value) }]);
    const a = bf('a.safetensors', [0x3f80, 0x3f81, 0x0001, 0x7f7f]);
    const b = bf('b.safetensors', [0x3f81, 0x3f82, 0x0000, 0x7f7f]);
    const out = path.join(dir, 'out.safetensors');
    await averageCheckpoints([a, b], out, quiet);
    // means: 0x3f80.8 → 0x3f80 (even), 0x3f81.8 → 0x3f82 (even), half the smallest subnormal → 0, max stays max
    assert.deepEqual(Array.from(new Uint16Array(decodeRawBytes(out, 't'))), [0x3f80, 0x3f82, 0x0000, 0x7f7f]);
    // F32 inputs 1 + 2⁻⁸ and 1 + 2⁻⁸ + 2⁻²³: the mean 1 + 2⁻⁸ + 2⁻²⁴ is just above the bf16 tie
    // 1 + 2⁻⁸. Rounded to float32 first it would become the tie itself and then 0x3f80.
    const f = (name: string, v: number) => writeRaw(path.join(dir, name), [{ name: 't', dtype: 'F32', shape: [1], values: new Float64Array([v]) }]);
    const c = f('c.safetensors', 1 + 2 ** -8);
    const d = f('d.safetensors', 1 + 2 ** -8 + 2 ** -23);
    const out2 = path.join(dir, 'out2.safetensors');
    await averageCheckpoints([c, d], out2, { ...quiet, dtype: 'bf16' });
    assert.deepEqual(Array.from(new Uint16Array(decodeRawBytes(out2, 't'))), [0x3f81]);
    assert.equal(floatBitsToBf16Bits(f32Bits(Math.fround(1 + 2 ** -8 + 2 ** -24))), 0x3f80, 'the double-rounding answer');
    // f16 overflow: the mean of 65504 and 65536 is 65520, the tie between 65504 and 2¹⁶: inf (even)
    const g = f('g.safetensors', 65504);
    const h = f('h.safetensors', 65536);
    const out3 = path.join(dir, 'out3.safetensors');
    await averageCheckpoints([g, h], out3, { ...quiet, dtype: 'f16' });
    assert.deepEqual(Array.from(new Uint16Array(decodeRawBytes(out3, 't'))), [0x7c00], '65520 is the tie with 2^16: inf');
  });
});

function decodeRawBytes(file: string, name: string): ArrayBuffer {
  const r = openSafetensors(file);
  try {
    const t = r.infos.find((i) => i.name === name)!;
    const raw = new Uint8Array(t.end - t.begin);
    r.readInto(name, raw);
    return raw.buffer;
  } finally {
    r.close();
  }
}

// ---------------------------------------------------------------------------------------------

/** A sharded checkpoint directory as Hugging Face writes it. */
function writeSharded(dir: string, tensors: Raw[], shardOf: (name: string) => number, shards: number, extraIndexMeta = {}): string {
  const names = Array.from({ length: shards }, (_, i) => `model-${String(i + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`);
  const weightMap: Record<string, string> = {};
  let total = 0;
  names.forEach((file, s) => {
    const mine = tensors.filter((t) => shardOf(t.name) === s);
    writeRaw(path.join(dir, file), mine, { format: 'pt', shard: String(s) });
    for (const t of mine) {
      weightMap[t.name] = file;
      total += t.values.length * DTYPE_SIZE[t.dtype];
    }
  });
  const sorted = Object.fromEntries(Object.entries(weightMap).sort(([a], [b]) => (a < b ? -1 : 1)));
  fs.writeFileSync(path.join(dir, INDEX_FILE), JSON.stringify({ metadata: { total_size: total, ...extraIndexMeta }, weight_map: sorted }, null, 2));
  return dir;
}

describe('averageCheckpoints: sharded checkpoints', () => {
  const shardOf = (name: string) => (name.startsWith('h.') ? 1 : 0);

  test('sharded in → sharded out: same shard names and map, total_size, metadata copied, values exact', async () => {
    const rng = new Rng(50);
    const inputs = [0, 1, 2].map(() => randomTensors(rng, 'BF16'));
    const dirs = inputs.map((t, i) => writeSharded(fresh(`shard${i}`), t, shardOf, 2, { source: `run ${i}` }));
    for (const [dtype, size] of [
      ['keep', 2],
      ['f32', 4],
    ] as const) {
      const out = path.join(fresh('sharded-out'), 'avg');
      const s = await averageCheckpoints(dirs, out, { ...quiet, dtype, chunkElements: 8 });
      assert.equal(s.sharded, true);
      assert.equal(s.out, path.resolve(out));
      assert.deepEqual(fs.readdirSync(out).sort(), fs.readdirSync(dirs[0]).sort());
      const index = JSON.parse(fs.readFileSync(path.join(out, INDEX_FILE), 'utf8'));
      const index0 = JSON.parse(fs.readFileSync(path.join(dirs[0], INDEX_FILE), 'utf8'));
      assert.deepEqual(index.weight_map, index0.weight_map);
      const numel = inputs[0].reduce((a, t) => a + t.values.length, 0);
      assert.deepEqual(index.metadata, { total_size: numel * size, source: 'run 0' });
      let written = 0;
      for (const shard of new Set(Object.values(index.weight_map) as string[])) {
        const file = path.join(out, shard);
        written += fs.statSync(file).size;
        const mine = (ts: Raw[]) => ts.filter((t) => index.weight_map[t.name] === shard);
        assertAverage(file, inputs.map(mine), dtype === 'keep' ? null : 'F32');
        assert.deepEqual(readSafetensors(file).metadata, readSafetensors(path.join(dirs[0], shard)).metadata);
      }
      assert.equal(s.bytes_out, written + fs.statSync(path.join(out, INDEX_FILE)).size);
    }
  });

  test('round trip: the average of one sharded checkpoint is that checkpoint; an index.json path works too', async () => {
    const rng = new Rng(51);
    const t = randomTensors(rng, 'F32');
    const dir = writeSharded(fresh('one'), t, shardOf, 2);
    const out = path.join(fresh('one-out'), 'avg');
    await averageCheckpoints([path.join(dir, INDEX_FILE)], out, quiet);
    for (const f of fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors'))) {
      const a = readSafetensors(path.join(dir, f));
      const b = readSafetensors(path.join(out, f));
      assert.deepEqual(b.infos, a.infos);
      for (const [name, v] of a.tensors)
        assert.deepEqual(
          Buffer.from(b.tensors.get(name)!.buffer, b.tensors.get(name)!.byteOffset, v.byteLength),
          Buffer.from(v.buffer, v.byteOffset, v.byteLength),
        );
    }
  });

  test('a sharded first input and a single-file second input average; the output follows the first', async () => {
    const rng = new Rng(52);
    const inputs = [0, 1].map(() => randomTensors(rng, 'F16'));
    const a = writeSharded(fresh('mix-a'), inputs[0], shardOf, 2);
    const b = writeRaw(path.join(fresh('mix-b'), 'model.safetensors'), inputs[1]);
    const out = path.join(fresh('mix-out'), 'avg');
    await averageCheckpoints([a, path.dirname(b)], out, quiet);
    assert.ok(fs.existsSync(path.join(out, INDEX_FILE)));
    const out2 = fresh('mix-out2') + '.safetensors';
    await averageCheckpoints([b, a], out2, quiet);
    assertAverage(out2, [inputs[1], inputs[0]], null);
  });

  test('an existing output directory is replaced whole; a failed run leaves it as it was', async () => {
    const rng = new Rng(53);
    const dirs = [0, 1].map((i) => writeSharded(fresh(`rep${i}`), randomTensors(rng, 'F32'), shardOf, 2));
    const out = path.join(fresh('rep-out'), 'avg');
    fs.mkdirSync(out, { recursive: true });
    fs.writeFileSync(path.join(out, 'stale.txt'), 'old');
    await averageCheckpoints(dirs, out, quiet);
    assert.ok(!fs.existsSync(path.join(out, 'stale.txt')));
    const before = walk(out).map((p) => [p, fs.statSync(path.join(out, p)).size]);
    const bad = writeSharded(fresh('rep-bad'), randomTensors(rng, 'F64'), shardOf, 2);
    await rejectsUser(() => averageCheckpoints([dirs[0], bad], out, quiet), 'F32', 'F64');
    assert.deepEqual(
      walk(out).map((p) => [p, fs.statSync(path.join(out, p)).size]),
      before,
    );
    assert.deepEqual(leftovers(path.dirname(out)), []);
  });

  test('bad indexes are named', async () => {
    const rng = new Rng(54);
    const t = randomTensors(rng, 'F32');
    const cases: Array<[string, (dir: string) => void, string]> = [
      ['not JSON', (d) => fs.writeFileSync(path.join(d, INDEX_FILE), '{"weight_map": '), 'not valid JSON'],
      ['no weight_map', (d) => fs.writeFileSync(path.join(d, INDEX_FILE), '{"metadata": {}}'), 'weight_map'],
      ['missing shard', (d) => fs.rmSync(path.join(d, 'model-00002-of-00002.safetensors')), 'model-00002-of-00002.safetensors'],
      ['path in a shard name', (d) => editIndex(d, (w) => (w.scalar = '../model-00001-of-00002.safetensors')), 'plain file name'],
      ['unlisted tensor', (d) => editIndex(d, (w) => delete w.scalar), '"scalar"'],
      ['wrong shard', (d) => editIndex(d, (w) => (w['h.0.attn.bias'] = 'model-00001-of-00002.safetensors')), '"h.0.attn.bias"'],
      ['listed but absent', (d) => editIndex(d, (w) => (w.ghost = 'model-00001-of-00002.safetensors')), '"ghost"'],
    ];
    for (const [what, spoil, word] of cases) {
      const dir = writeSharded(fresh('badidx'), t, shardOf, 2);
      spoil(dir);
      const out = path.join(fresh('badidx-out'), 'avg');
      await assert.rejects(
        () => averageCheckpoints([dir], out, quiet),
        (e: unknown) => {
          assert.ok(e instanceof UserError, `${what}: ${e}`);
          assert.ok(e.message.includes(word), `${what}: "${e.message}" should mention ${word}`);
          return true;
        },
      );
      assert.ok(!fs.existsSync(out), what);
    }
  });
});

function editIndex(dir: string, f: (w: Record<string, string>) => void): void {
  const file = path.join(dir, INDEX_FILE);
  const index = JSON.parse(fs.readFileSync(file, 'utf8'));
  f(index.weight_map);
  fs.writeFileSync(file, JSON.stringify(index));
}

// ---------------------------------------------------------------------------------------------

describe('averageCheckpoints: mismatches, bad inputs, atomicity', () => {
  const rng = new Rng(60);
  const base = randomTensors(rng, 'F32');
  const dir = fresh('mm');
  const good = writeRaw(path.join(dir, 'good.safetensors'), base);
  const good2 = writeRaw(path.join(dir, 'good2.safetensors'), randomTensors(rng, 'F32'));

  const variant = (name: string, f: (t: Raw[]) => Raw[]) => writeRaw(path.join(dir, name), f(base.map((t) => ({ ...t }))));

  test('the first mismatch in names, shapes or dtypes is named, with both inputs', async () => {
    const missing = variant('missing.safetensors', (t) => t.filter((x) => x.name !== 'scalar'));
    await rejectsUser(
      () => averageCheckpoints([good, missing], path.join(dir, 'o1'), quiet),
      '"scalar"',
      'input 1',
      'input 2',
      'missing.safetensors',
      'not in',
    );
    const extra = variant('extra.safetensors', (t) => [...t, { name: 'z.extra', dtype: 'F32', shape: [1], values: new Float64Array(1) }]);
    await rejectsUser(() => averageCheckpoints([good, good2, extra], path.join(dir, 'o2'), quiet), '"z.extra"', 'input 3', 'not in input 1');
    const shape = variant('shape.safetensors', (t) => t.map((x) => (x.name === 'embed.weight' ? { ...x, shape: [7, 13] } : x)));
    await rejectsUser(() => averageCheckpoints([good, shape], path.join(dir, 'o3'), quiet), '"embed.weight"', '[13,7]', '[7,13]', 'input 2');
    const dtype = variant('dtype.safetensors', (t) =>
      t.map((x) => (x.name === 'h.0.attn.bias' ? { ...x, dtype: 'F16' as DType, values: x.values.map((v) => f16Value(floatToHalfBits(v))) } : x)),
    );
    await rejectsUser(() => averageCheckpoints([good, dtype], path.join(dir, 'o4'), quiet), '"h.0.attn.bias"', 'F32', 'F16', 'input 2');
    for (const o of ['o1', 'o2', 'o3', 'o4']) assert.ok(!fs.existsSync(path.join(dir, o)));
  });

  test('bad files, missing inputs and bad output paths are UserErrors that write nothing', async () => {
    const truncated = path.join(dir, 'truncated.safetensors');
    fs.writeFileSync(truncated, fs.readFileSync(good).subarray(0, fs.statSync(good).size - 3));
    const out = path.join(dir, 'never.safetensors');
    await assert.rejects(
      () => averageCheckpoints([good, truncated], out, quiet),
      (e: unknown) => e instanceof SafetensorsError && e.code === 'FileSizeMismatch',
    );
    await rejectsUser(() => averageCheckpoints([good, path.join(dir, 'nope.safetensors')], out, quiet), 'does not exist');
    await rejectsUser(() => averageCheckpoints([good, fresh('emptydir')], out, quiet), 'does not exist');
    const empty = fresh('emptydir2');
    fs.mkdirSync(empty);
    await rejectsUser(() => averageCheckpoints([good, empty], out, quiet), 'model.safetensors');
    await rejectsUser(() => averageCheckpoints([good, good2], good2, quiet), 'would overwrite input 2');
    await rejectsUser(() => averageCheckpoints([good, good2], dir, quiet), 'not a file');
    assert.ok(!fs.existsSync(out));
    assert.deepEqual(leftovers(dir), []);
  });

  test('a failure while streaming leaves no output and no temporary file; an existing output survives', async () => {
    const victim = path.join(dir, 'victim.safetensors');
    const out = path.join(dir, 'streamed.safetensors');
    for (const existing of [false, true]) {
      fs.copyFileSync(good2, victim);
      if (existing) fs.writeFileSync(out, 'previous content');
      // After the first tensor is written, the third input loses its tail: the next read fails.
      const progress = (done: number) => {
        if (done === 1) fs.truncateSync(victim, 200);
      };
      await assert.rejects(
        () => averageCheckpoints([good, good2, victim], out, { ...quiet, progress, chunkElements: 4 }),
        (e: unknown) => e instanceof SafetensorsError && e.code === 'FileError' && e.message.includes('victim'),
      );
      assert.equal(fs.existsSync(out), existing);
      if (existing) assert.equal(fs.readFileSync(out, 'utf8'), 'previous content');
      assert.deepEqual(leftovers(dir), []);
    }
    // sharded: no directory, no temporary directory
    const shardOf = (name: string) => (name.startsWith('h.') ? 1 : 0);
    const sdirs = [0, 1].map((i) => writeSharded(fresh(`atom${i}`), randomTensors(rng, 'F32'), shardOf, 2));
    const sout = path.join(fresh('atom-out'), 'avg');
    const victimShard = path.join(sdirs[1], 'model-00002-of-00002.safetensors');
    await assert.rejects(() => averageCheckpoints(sdirs, sout, { ...quiet, progress: (d) => d === 1 && fs.truncateSync(victimShard, 100) }), SafetensorsError);
    assert.ok(!fs.existsSync(sout));
    assert.deepEqual(leftovers(path.dirname(sout)), []);
  });

  test('the written header is a valid safetensors header, with fsync on (the default)', async () => {
    const out = path.join(dir, 'fsynced.safetensors');
    await averageCheckpoints([good, good2], out);
    const b = fs.readFileSync(out);
    const h = parseHeader(b, b.length);
    assert.equal(h.headerSize % 8, 0);
    assert.deepEqual(
      h.tensors.map((t) => t.name),
      base.map((t) => t.name),
    );
  });
});

// ---------------------------------------------------------------------------------------------

describe('keel average (CLI)', () => {
  const rng = new Rng(70);
  const dir = fresh('cli');
  const inputs = [0, 1, 2].map(() => randomTensors(rng, 'BF16'));
  const files = inputs.map((t, i) => writeRaw(path.join(dir, `in${i}.safetensors`), t, { format: 'pt' }));

  test('averages with --weights and --dtype; progress on stderr; --json summary last on stdout', async () => {
    const out = path.join(dir, 'avg.safetensors');
    const r = keel(['average', ...files, '-o', out, { weights: '1,2,3', dtype: 'f16', json: true }]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /average/);
    const lines = r.stdout.trim().split('\n');
    const s = JSON.parse(lines[lines.length - 1]);
    assert.equal(s.out, out);
    assert.equal(s.inputs, 3);
    assert.equal(s.tensors, SHAPES.length);
    assert.equal(s.dtype, 'f16');
    assert.deepEqual(s.weights, [1, 2, 3]);
    for (const k of ['bytes_in', 'bytes_out', 'seconds', 'peak_rss']) assert.equal(typeof s[k], 'number', k);
    assertAverage(out, inputs, 'F16', [1, 2, 3]);
    const plain = keel(['average', files[0], files[1], '-o', out]);
    assert.equal(plain.status, 0, plain.stderr);
    assert.match(plain.stdout, /averaged 2 checkpoints .* into .*avg\.safetensors/);
    assertAverage(out, inputs.slice(0, 2), null);
  });

  test('user mistakes: one line on stderr, exit 2, nothing written', async () => {
    const out = path.join(dir, 'bad.safetensors');
    const shape = writeRaw(
      path.join(dir, 'shape.safetensors'),
      inputs[0].map((t) => (t.name === 'h.0.mlp.weight' ? { ...t, shape: [11, 5] } : t)),
    );
    const cases: Array<[string[], RegExp]> = [
      [[files[0], files[1]], /-o OUT/],
      [[files[0], path.join(dir, 'missing.safetensors'), '-o', out], /does not exist/],
      [[files[0], files[1], '-o', out, '--weights', '1,x'], /comma-separated/],
      [[files[0], files[1], '-o', out, '--weights', '1,2,3'], /3 weights for 2 inputs/],
      [[files[0], files[1], '-o', out, '--dtype', 'f8'], /f8/],
      [[files[0], shape, '-o', out], /"h\.0\.mlp\.weight" has shape \[5,11\] in input 1 .* but \[11,5\] in input 2/],
      [['-o', out], /nothing to average/],
      [[files[0], '--k', '2', '-o', out], /--k goes with --lawa/],
    ];
    for (const [args, re] of cases) {
      const r = keel(['average', ...args]);
      assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re);
      assert.equal(
        r.stderr
          .trim()
          .split('\n')
          .filter((l) => !l.startsWith('(run with')).length,
        1,
        r.stderr,
      );
      assert.ok(!fs.existsSync(out));
    }
    assert.deepEqual(leftovers(dir), []);
  });

  test('--help documents every flag; keel --help lists the command', async () => {
    const r = keel(['average', '--help']);
    assert.equal(r.status, 0);
    assert.match(r.stdout, /^Usage: keel average/m);
    const flags = averageCommand().options.map((o) => o.long!);
    for (const flag of ['--out', '--weights', '--dtype', '--lawa', '--k', '--json']) assert.ok(flags.includes(flag), flag);
    for (const flag of flags) assert.ok(r.stdout.includes(flag), flag);
    assert.match(keel(['--help']).stdout, /^\s+average\b/m);
  });
});

describe('keel average --lawa', () => {
  test('equals the mean of the k latest model.safetensors of a Keel run, and loads as a model', async () => {
    const run = fresh('run');
    const corpus = writeCorpus(fresh('corpus'));
    await train(trainOptions(run, corpus, { steps: 6, checkpointEvery: 2, keep: 3 }), { progress: false });
    const l = lawaInputs(run, 2);
    assert.deepEqual(l.steps, [6, 4]);
    assert.equal(l.out, path.join(run, 'lawa-4-6.safetensors'));

    const r = keel(['average', { lawa: run, k: 2, json: true }]);
    assert.equal(r.status, 0, r.stderr);
    const s = JSON.parse(r.stdout.trim().split('\n').pop()!);
    assert.equal(s.out, path.resolve(run, 'lawa-4-6.safetensors'));
    const a = readSafetensors(path.join(run, 'checkpoints', 'step-6', 'model.safetensors'));
    const b = readSafetensors(path.join(run, 'checkpoints', 'step-4', 'model.safetensors'));
    const avg = readSafetensors(s.out);
    assert.deepEqual(avg.metadata, a.metadata, 'metadata of the newest checkpoint');
    assert.deepEqual(avg.infos, a.infos);
    for (const [name, x] of a.tensors) {
      const y = b.tensors.get(name)!;
      const want = Float32Array.from(x, (v, j) => (v + y[j]) / 2);
      assert.deepEqual(Buffer.from(avg.tensors.get(name)!.buffer, avg.tensors.get(name)!.byteOffset, want.byteLength), Buffer.from(want.buffer), name);
    }
    const model = loadModel(s.out);
    assert.equal(
      model.params.length,
      a.infos.reduce((n, t) => n + t.shape.reduce((p, d) => p * d, 1), 0),
    );

    const three = path.join(fresh('lawa3'), 'x.safetensors');
    const r3 = keel(['average', { lawa: run, k: 3 }, '-o', three, { dtype: 'bf16' }]);
    assert.equal(r3.status, 0, r3.stderr);
    const c = readSafetensors(path.join(run, 'checkpoints', 'step-2', 'model.safetensors'));
    const got = decodeFile(three).values;
    for (const [name, x] of a.tensors) {
      const y = b.tensors.get(name)!;
      const z = c.tensors.get(name)!;
      const g = got.get(name)!;
      for (let j = 0; j < x.length; j++) sameValue(g[j], exactRound((x[j] + y[j] + z[j]) / 3, 'BF16'), `${name}[${j}]`);
    }

    const tooMany = keel(['average', { lawa: run, k: 4 }]);
    assert.equal(tooMany.status, 2);
    assert.match(tooMany.stderr, /--k 4: .* has only 3 checkpoints \(steps 2, 4, 6\)/);
    const noK = keel(['average', { lawa: run }]);
    assert.equal(noK.status, 2);
    assert.match(noK.stderr, /--lawa needs --k/);
    const both = keel(['average', { lawa: run, k: 1 }, three]);
    assert.equal(both.status, 2);
    assert.match(both.stderr, /not both/);
    throwsUser(() => lawaInputs(fresh('norun'), 1), 'does not exist');
    assert.ok(!walk(run).some((p) => p.includes('.tmp-')));
  });
});

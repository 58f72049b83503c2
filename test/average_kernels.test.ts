// keel average's native bodies (native/average.cc) against the TypeScript conversions of
// src/io/safetensors.ts, value by value: widening every BF16 and F16 bit pattern, and rounding
// float64 values (ties, near-ties, subnormals, overflow, specials) to BF16, F16 and F32, on
// element counts and chunks that are not multiples of the 8-lane vectors. Each runs through
// both bodies: the AVX-512 one (skipped, with the reason, where this process cannot run it)
// and the scalar one (`portable`). Averaging one input with weight 1 is the identity in float64,
// so its output is exactly the conversion under test.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { averageCheckpoints } from '../src/average/stream.ts';
import type { OutputDtype } from '../src/average/plan.ts';
import { encodeHeader, openSafetensors, type DType } from '../src/io/safetensors.ts';
import { floatToBf16Bits, floatToHalfBits, halfBitsToFloatBits } from '../src/util/float16.ts';
import { nativeKernels } from '../src/kernels/native.ts';
import { Rng } from '../src/util/rng.ts';
import { tempRoot } from './helpers.ts';

const { root: dir } = tempRoot('average-kernels');
const isa = nativeKernels().isa();
const wide = isa === 'avx512f' || isa === 'avx512bf16';
const bodies = [
  { name: 'AVX-512', portable: false, skip: wide ? false : `this process runs the ${isa} path; the body needs avx512f` },
  { name: 'scalar', portable: true, skip: false },
] as const;

let files = 0;
function writeOne(dtype: DType, bytes: Uint8Array, n: number): string {
  const file = path.join(dir, `in${files++}.safetensors`);
  const h = encodeHeader([{ name: 't', dtype, shape: [n] }]);
  fs.writeFileSync(file, Buffer.concat([h.bytes, bytes]));
  return file;
}

async function averageOne(file: string, dtype: OutputDtype, portable: boolean, chunkElements: number): Promise<Uint8Array> {
  const out = path.join(dir, `out${files++}.safetensors`);
  await averageCheckpoints([file], out, { fsync: false, dtype, portable, chunkElements });
  const r = openSafetensors(out);
  const info = r.infos[0];
  const raw = new Uint8Array(info.end - info.begin);
  r.readInto('t', raw);
  r.close();
  return raw;
}

/** Float64 values that probe every rounding case of the 16-bit formats and float32. */
function hardDoubles(rng: Rng): Float64Array {
  const xs: number[] = [
    0,
    -0,
    Infinity,
    -Infinity,
    NaN,
    1,
    -1,
    65504,
    65520,
    65519.99,
    2 ** -24,
    2 ** -25,
    2 ** -25 + 2 ** -60,
    2 ** -133,
    2 ** -134,
    2 ** -149,
    2 ** -150,
    2 ** -150 + 2 ** -200,
    3.4028234663852886e38,
    3.5e38,
    1e300,
    -1e300,
    5e-324,
  ];
  // ties and near-ties of a format with `bits` significand bits, at every scale it covers
  const ties = (bits: number, emin: number, emax: number) => {
    for (let i = 0; i < 3000; i++) {
      const e = emin + rng.int(emax - emin);
      const q = Math.floor(rng.uniform() * 2 ** bits) + 2 ** (bits - 1); // a `bits`-bit significand
      const tie = (q + 0.5) * 2 ** (e - bits);
      const nudge = [0, 2 ** (e - 60), -(2 ** (e - 60)), 2 ** (e - bits - 26)][rng.int(4)];
      xs.push((rng.uniform() < 0.5 ? -1 : 1) * (tie + nudge));
    }
  };
  ties(8, -140, 128); // bf16, subnormals to overflow
  ties(11, -26, 17); // f16
  ties(24, -152, 128); // float32
  for (let i = 0; i < 20000; i++) xs.push(rng.normal() * 2 ** (rng.int(320) - 160));
  return Float64Array.from(xs);
}

describe('keel average native bodies: conversions value by value', () => {
  for (const body of bodies) {
    test(`${body.name}: every BF16 and F16 bit pattern widens exactly (→ F32)`, { skip: body.skip }, async () => {
      const n = 65536;
      const bits = Uint16Array.from({ length: n }, (_, h) => h);
      for (const dtype of ['BF16', 'F16'] as const) {
        const file = writeOne(dtype, new Uint8Array(bits.buffer), n);
        for (const chunkElements of [13, 1 << 20]) {
          const got = new Uint32Array((await averageOne(file, 'f32', body.portable, chunkElements)).slice().buffer);
          for (let h = 0; h < n; h++) {
            const want = dtype === 'BF16' ? (h << 16) >>> 0 : halfBitsToFloatBits(h);
            const isNaNBits = (u: number) => (u & 0x7fffffff) > 0x7f800000;
            if (isNaNBits(want)) assert.ok(isNaNBits(got[h]), `${dtype} 0x${h.toString(16)}: want NaN`);
            else assert.equal(got[h], want, `${dtype} 0x${h.toString(16)}`);
          }
        }
      }
    });

    test(`${body.name}: float64 rounds once to BF16, F16 and F32 (ties, subnormals, overflow, specials)`, { skip: body.skip }, async () => {
      const xs = hardDoubles(new Rng(7));
      const file = writeOne('F64', new Uint8Array(xs.buffer), xs.length);
      const f32 = new Float32Array(1);
      const u32 = new Uint32Array(f32.buffer);
      const want: Record<'bf16' | 'f16' | 'f32', (x: number) => number> = {
        bf16: floatToBf16Bits,
        f16: floatToHalfBits,
        f32: (x) => ((f32[0] = x), u32[0]),
      };
      for (const dtype of ['bf16', 'f16', 'f32'] as const) {
        const raw = await averageOne(file, dtype, body.portable, 29);
        const got = dtype === 'f32' ? new Uint32Array(raw.slice().buffer) : new Uint16Array(raw.slice().buffer);
        const nanOf =
          dtype === 'f32'
            ? (u: number) => (u & 0x7fffffff) > 0x7f800000
            : dtype === 'bf16'
              ? (u: number) => (u & 0x7fff) > 0x7f80
              : (u: number) => (u & 0x7fff) > 0x7c00;
        for (let i = 0; i < xs.length; i++) {
          if (Number.isNaN(xs[i])) assert.ok(nanOf(got[i]), `${dtype} of NaN`);
          else assert.equal(got[i], want[dtype](xs[i]), `${dtype} of ${xs[i]}`);
        }
      }
    });
  }
});

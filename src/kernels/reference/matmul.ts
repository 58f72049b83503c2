/** Plain-loop matmul, the reference for native/matmul.cc. Sums run in float64. */
import { floatBitsToBf16Bits } from '../../util/float16.ts';
import type { Floats, MatmulPrecision } from '../types.ts';

const bits = new Uint32Array(1);
const asFloat = new Float32Array(bits.buffer);

/**
 * A float32 value x rounded to the nearest bfloat16 as the matmul operands are (ties to even;
 * NaN stays NaN; float32 subnormals, |x| < 2⁻¹²⁶, flush to ±0 as the AVX512-BF16 hardware
 * does). Inputs that are not float32 values are first rounded to float32.
 */
export function roundBf16(x: number): number {
  asFloat[0] = x;
  const u = bits[0];
  bits[0] = (u & 0x7f800000) === 0 ? u & 0x80000000 : floatBitsToBf16Bits(u) << 16;
  return asFloat[0];
}

/** The operand as the product sees it: itself for fp32, a bf16-rounded float64 copy for bf16. */
function operand<F extends Floats>(x: F, precision: MatmulPrecision): Floats {
  return precision === 'bf16' ? Float64Array.from(x, roundBf16) : x;
}

/** out[BT,OC] = inp[BT,C] · weight[OC,C]ᵀ + bias[OC]. */
export function matmulForward<F extends Floats>(
  out: F,
  inp: F,
  weight: F,
  bias: F | null,
  BT: number,
  C: number,
  OC: number,
  prec: MatmulPrecision = 'fp32',
): void {
  const x = operand(inp, prec);
  const w = operand(weight, prec);
  for (let r = 0; r < BT; r++) {
    for (let o = 0; o < OC; o++) {
      let s = bias ? bias[o] : 0;
      for (let i = 0; i < C; i++) s += x[r * C + i] * w[o * C + i];
      out[r * OC + o] = s;
    }
  }
}

/** dinp += dout·weight;  dweight += doutᵀ·inp;  dbias += Σ_rows dout (unrounded). */
export function matmulBackward<F extends Floats>(
  dinp: F,
  dweight: F,
  dbias: F | null,
  dout: F,
  inp: F,
  weight: F,
  BT: number,
  C: number,
  OC: number,
  precision: MatmulPrecision = 'fp32',
): void {
  const d = operand(dout, precision),
    x = operand(inp, precision),
    w = operand(weight, precision);
  for (let r = 0; r < BT; r++) {
    for (let i = 0; i < C; i++) {
      let s = 0;
      for (let o = 0; o < OC; o++) s += d[r * OC + o] * w[o * C + i];
      dinp[r * C + i] += s;
    }
  }
  for (let o = 0; o < OC; o++) {
    for (let i = 0; i < C; i++) {
      let s = 0;
      for (let r = 0; r < BT; r++) s += d[r * OC + o] * x[r * C + i];
      dweight[o * C + i] += s;
    }
    if (dbias) {
      let s = 0;
      for (let r = 0; r < BT; r++) s += dout[r * OC + o];
      dbias[o] += s;
    }
  }
}

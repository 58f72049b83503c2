/**
 * Emulated low-precision gradients (docs/stability.md#low-precision-gradients): round float32 gradients to
 * bfloat16 or float16 (round to nearest even) before the optimizer, so the underflow of small
 * shallow-layer gradients can be studied on an fp32 trainer. fp16 multiplies by a loss scale
 * first and divides after (what mixed-precision training does); values below fp16's smallest
 * subnormal (2⁻²⁴ ≈ 6e-8) become 0, values above 65504 become ±Inf.
 */
import { floatToBf16Bits, floatToHalfBits, halfBitsToFloatBits } from '../util/float16.ts';

export type GradPrecision = 'fp32' | 'bf16' | 'fp16';
export const GRAD_PRECISIONS: GradPrecision[] = ['fp32', 'bf16', 'fp16'];

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The nearest bfloat16 value (as a number); NaN stays NaN. Rounding as in the safetensors writer. */
export function bf16(x: number): number {
  u32[0] = floatToBf16Bits(x) << 16;
  return f32[0];
}

/** The nearest float16 value (as a number): subnormals, overflow to ±Inf, NaN kept; rounded once. */
export function fp16(x: number): number {
  u32[0] = halfBitsToFloatBits(floatToHalfBits(x));
  return f32[0];
}

/** Rounds g in place; returns the fraction of coordinates that are exactly zero afterwards. */
export function roundGradients(g: Float32Array, precision: GradPrecision, lossScale = 1): number {
  let zeros = 0;
  if (precision === 'bf16') {
    for (let i = 0; i < g.length; i++) if ((g[i] = bf16(g[i])) === 0) zeros++;
  } else if (precision === 'fp16') {
    for (let i = 0; i < g.length; i++) if ((g[i] = fp16(g[i] * lossScale) / lossScale) === 0) zeros++;
  } else {
    for (let i = 0; i < g.length; i++) if (g[i] === 0) zeros++;
  }
  return zeros / g.length;
}

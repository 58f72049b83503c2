/**
 * Emulated low-precision gradients (techniques.md §1 item 8): round float32 gradients to
 * bfloat16 or float16 (round to nearest even) before the optimizer, so the underflow of small
 * shallow-layer gradients can be studied on an fp32 trainer. fp16 multiplies by a loss scale
 * first and divides after (what mixed-precision training does); values below fp16's smallest
 * subnormal (2⁻²⁴ ≈ 6e-8) become 0, values above 65504 become ±Inf.
 */
export type GradPrecision = 'fp32' | 'bf16' | 'fp16';
export const GRAD_PRECISIONS: GradPrecision[] = ['fp32', 'bf16', 'fp16'];

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 → nearest bfloat16 value (as float32); NaN stays NaN. */
export function bf16(x: number): number {
  f32[0] = x;
  const u = u32[0];
  if ((u & 0x7fffffff) > 0x7f800000) return x; // NaN
  u32[0] = ((u + 0x7fff + ((u >>> 16) & 1)) & 0xffff0000) >>> 0;
  return f32[0];
}

/** float32 → nearest float16 value (as float32), with subnormals, overflow to ±Inf, NaN kept. */
export function fp16(x: number): number {
  if (Number.isNaN(x)) return x;
  const a = Math.abs(x);
  if (a >= 65520) return x > 0 ? Infinity : -Infinity; // rounds past the largest half, 65504
  // Spacing of half values around a: 2^(e−10) for normals (e ≥ −14), 2^−24 for subnormals.
  f32[0] = a; // the exponent from the float32 bits (a value that rounds up to 2^k lands on 2^k anyway)
  const e = Math.max(-14, ((u32[0] >>> 23) & 0xff) - 127);
  const ulp = 2 ** (e - 10);
  const q = a / ulp;
  let r = Math.round(q);
  if (Math.abs(q - Math.trunc(q) - 0.5) < 1e-12 && r % 2 === 1) r -= 1; // ties to even
  const y = r * ulp;
  return x < 0 ? -y : y;
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

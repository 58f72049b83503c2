/**
 * The 16-bit float formats, bit by bit: bfloat16 (the top half of a float32) and IEEE binary16.
 * Widening is exact; narrowing rounds to nearest with ties to even, once (float64 inputs go
 * through round-to-odd float32, so there is no double rounding). Used by the safetensors
 * reader and writer (src/io/safetensors.ts), the TensorBoard reader (src/io/logs.ts), the
 * emulated gradient precision (src/guard/precision.ts) and the bf16 matmul reference.
 */

/** bfloat16 is the top half of a float32. */
export function bf16ToF32(src: Uint16Array): Float32Array {
  const bits = new Uint32Array(src.length);
  for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
  return new Float32Array(bits.buffer);
}

export function f16ToF32(src: Uint16Array): Float32Array {
  const bits = new Uint32Array(src.length);
  for (let i = 0; i < src.length; i++) bits[i] = halfBitsToFloatBits(src[i]);
  return new Float32Array(bits.buffer);
}

/** IEEE binary16 → binary32 bit pattern, exact (every half is a float). */
export function halfBitsToFloatBits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  let frac = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (frac << 13)) >>> 0; // inf, NaN (payload kept)
  if (exp !== 0) return (sign | ((exp - 15 + 127) << 23) | (frac << 13)) >>> 0;
  if (frac === 0) return sign >>> 0; // ±0
  // Subnormal half (frac × 2⁻²⁴): normalize, since it is a normal float32.
  let e = -14;
  while ((frac & 0x400) === 0) {
    frac <<= 1;
    e--;
  }
  return (sign | ((e + 127) << 23) | ((frac & 0x3ff) << 13)) >>> 0;
}

const F32_SCRATCH = new Float32Array(1);
const U32_SCRATCH = new Uint32Array(F32_SCRATCH.buffer);

/** float32 bit pattern → bfloat16 bit pattern: round to nearest even on the top 16 bits. */
export function floatBitsToBf16Bits(u: number): number {
  u >>>= 0;
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff; // NaN stays NaN (quiet)
  // Overflow carries into the exponent and lands exactly on ±inf; subnormals round alike.
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** float32 bit pattern → IEEE binary16 bit pattern, round to nearest even (overflow → ±inf). */
export function floatBitsToHalfBits(u: number): number {
  u >>>= 0;
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  const mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0); // inf; NaN stays NaN
  const e = exp - 127 + 15; // the half's biased exponent
  if (e >= 0x1f) return sign | 0x7c00; // ≥ 2¹⁶: beyond 65504 + half an ulp
  if (e <= 0) {
    // A half subnormal (frac × 2⁻²⁴) or zero. Below 2⁻²⁵ everything rounds to ±0.
    if (e < -10) return sign;
    const m = mant | 0x800000; // value = m × 2^(exp − 150) = (m >> (14 − e)) × 2⁻²⁴
    const shift = 14 - e; // 14 … 24
    let h = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1) === 1)) h++; // may become 0x400: the smallest normal
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) === 1)) h++; // a carry may reach 0x7c00: inf
  return sign | h;
}

/**
 * Rounds float64 values to float32 bit patterns with round-to-odd: truncate toward zero, and
 * set the last bit when the result is inexact. Rounding that (24 bits) to nearest-even in a
 * format of ≤ 22 bits (bf16: 8, f16: 11) equals rounding the float64 once: no double rounding.
 */
export function roundToOddBits(src: Float64Array, f32: Float32Array, u32: Uint32Array, n: number): void {
  f32.set(n === src.length ? src : src.subarray(0, n)); // nearest-even; fixed up where inexact
  for (let i = 0; i < n; i++) {
    const x = src[i];
    const f = f32[i];
    if (f !== x && !Number.isNaN(x)) {
      let u = u32[i];
      if (Math.abs(f) > Math.abs(x)) u--; // rounded away from zero (also ±inf): step back
      u32[i] = u | 1;
    }
  }
}

/** A float64 → bfloat16 bit pattern, rounded once (nearest even). */
export function floatToBf16Bits(x: number): number {
  return floatBitsToBf16Bits(oddBits(x));
}

/** A float64 → binary16 bit pattern, rounded once (nearest even). */
export function floatToHalfBits(x: number): number {
  return floatBitsToHalfBits(oddBits(x));
}

function oddBits(x: number): number {
  F32_SCRATCH[0] = x;
  const f = F32_SCRATCH[0];
  let u = U32_SCRATCH[0];
  if (f !== x && !Number.isNaN(x)) {
    if (Math.abs(f) > Math.abs(x)) u--;
    u = (u | 1) >>> 0;
  }
  return u;
}

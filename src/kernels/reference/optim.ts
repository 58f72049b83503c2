/**
 * Reference (TypeScript twin) of native/optim.cc: the Adam family, the sign/SGD momentum
 * family, Adafactor on one tensor, the STREAM triad, Σx² and scaling, in float64 arithmetic
 * written straight from the contracts in ../types.ts. State arrays are read back after each
 * store, so with Float32Array state the rounding of the stored state matches the native one.
 */
import type { AdafactorCoefs, AdamCoefs, Floats, MomentumCoefs } from '../types.ts';

/** One Adam-family step; r by epsMode (0 outside, 1 inside, 2 zero, 3 atan2). */
export function adam<F extends Floats>(params: F, grads: F, m: F, v: F, N: number, c: AdamCoefs): void {
  for (let i = 0; i < N; i++) {
    const g = grads[i];
    m[i] = c.beta1 * m[i] + c.g1 * g;
    v[i] = c.beta2 * v[i] + c.g2 * g * g;
    const mhat = c.mScale * m[i];
    const rootVhat = c.rootVScale * Math.sqrt(v[i]);
    let r: number;
    switch (c.epsMode) {
      case 0:
        r = mhat / (rootVhat + c.eps);
        break;
      case 1:
        r = mhat / Math.sqrt(rootVhat * rootVhat + c.eps * c.eps);
        break;
      case 2:
        r = rootVhat === 0 ? 0 : mhat / rootVhat;
        break;
      case 3:
        r = Math.atan2(mhat, rootVhat);
        break; // atan2(±0, 0) = ±0
      default:
        throw new RangeError(`adam: epsMode must be 0..3, got ${c.epsMode}`);
    }
    params[i] = c.decay * params[i] - c.lr * r;
  }
}

/** φ of `momentum`: 0 sign (sign(0) = 0), 1 softsign d/√(d² + ε²) (0 where that is 0/0), 2 identity. */
function phiOf(phi: number, d: number, eps: number): number {
  if (phi === 0) return Math.sign(d);
  if (phi === 1) {
    const s = d * d + eps * eps;
    return s === 0 ? 0 : d / Math.sqrt(s);
  }
  return d;
}

/** One momentum step of the sign/SGD family (Lion, Tiger, Signum, SoftSign, SGD). */
export function momentum<F extends Floats>(params: F, grads: F, m: F, N: number, c: MomentumCoefs): void {
  const B = c.block;
  if (!Number.isInteger(B) || B < 0 || (B > 0 && N % B !== 0)) {
    throw new RangeError(`momentum: block ${B} must be 0 or divide N = ${N}`);
  }
  if (c.skipZeroRows && B === 0) throw new RangeError('momentum: skipZeroRows needs block > 0');
  if (c.rmsScale && B === 0) throw new RangeError('momentum: rmsScale needs block > 0');
  const block = B === 0 ? N : B;
  for (let b0 = 0; b0 < N; b0 += block) {
    const b1 = b0 + block;
    if (c.skipZeroRows) {
      let zero = true;
      for (let i = b0; i < b1 && zero; i++) zero = grads[i] === 0;
      if (zero) continue;
    }
    let eta = c.lr;
    if (c.rmsScale) {
      let ss = 0;
      for (let i = b0; i < b1; i++) ss += params[i] * params[i];
      eta = c.lr * Math.max(Math.sqrt(ss / B), c.rmsFloor);
    }
    for (let i = b0; i < b1; i++) {
      const d = c.dirM * m[i] + c.dirG * grads[i];
      m[i] = c.keepM * m[i] + c.addG * grads[i];
      if (c.lr !== 0) params[i] = params[i] - eta * (phiOf(c.phi, d, c.eps) + c.weightDecay * params[i]);
    }
  }
}

/** One Adafactor step of one tensor [batch, rows, cols]; factored when vc is non-null. */
export function adafactor<F extends Floats>(
  params: F,
  grads: F,
  vr: F,
  vc: F | null,
  mom: F | null,
  batch: number,
  rows: number,
  cols: number,
  c: AdafactorCoefs,
): void {
  const N = batch * rows * cols;
  if (N === 0) return;
  const vhat = new Float64Array(N);
  if (vc) {
    for (let b = 0; b < batch; b++) {
      const base = b * rows * cols;
      for (let i = 0; i < rows; i++) {
        let s = 0;
        for (let j = 0; j < cols; j++) s += grads[base + i * cols + j] ** 2 + c.eps1;
        vr[b * rows + i] = c.beta2 * vr[b * rows + i] + (1 - c.beta2) * (s / cols);
      }
      for (let j = 0; j < cols; j++) {
        let s = 0;
        for (let i = 0; i < rows; i++) s += grads[base + i * cols + j] ** 2 + c.eps1;
        vc[b * cols + j] = c.beta2 * vc[b * cols + j] + (1 - c.beta2) * (s / rows);
      }
      let mean = 0;
      for (let i = 0; i < rows; i++) mean += vr[b * rows + i];
      mean /= rows;
      for (let i = 0; i < rows; i++) {
        for (let j = 0; j < cols; j++) vhat[base + i * cols + j] = (vr[b * rows + i] * vc[b * cols + j]) / mean;
      }
    }
  } else {
    for (let i = 0; i < N; i++) {
      vr[i] = c.beta2 * vr[i] + (1 - c.beta2) * (grads[i] ** 2 + c.eps1);
      vhat[i] = vr[i];
    }
  }
  const u = new Float64Array(N);
  let su = 0,
    sp = 0;
  for (let i = 0; i < N; i++) {
    u[i] = grads[i] / Math.sqrt(vhat[i]);
    su += u[i] * u[i];
    sp += params[i] * params[i];
  }
  const clip = Math.max(1, Math.sqrt(su / N) / c.clipThreshold);
  const alpha = c.scaleParameter ? c.lr * Math.max(c.eps2, Math.sqrt(sp / N)) : c.lr;
  for (let i = 0; i < N; i++) {
    let ui = u[i] / clip;
    if (mom) {
      mom[i] = c.beta1 * mom[i] + (1 - c.beta1) * ui;
      ui = mom[i];
    }
    params[i] = params[i] * (1 - alpha * c.weightDecay) - alpha * ui;
  }
}

/** dst += w·(src − dst), in float32 arithmetic for Float32Array like the native loop. */
export function lerp<F extends Floats>(dst: F, src: F, N: number, w: number): void {
  const f32 = dst instanceof Float32Array;
  const fw = f32 ? Math.fround(w) : w;
  for (let i = 0; i < N; i++) {
    dst[i] = f32 ? Math.fround(dst[i] + Math.fround(fw * Math.fround(src[i] - dst[i]))) : dst[i] + fw * (src[i] - dst[i]);
  }
}

/** STREAM triad a = b + s·c. */
export function triad<F extends Floats>(a: F, b: F, c: F, N: number, s: number): void {
  for (let i = 0; i < N; i++) a[i] = b[i] + s * c[i];
}

/** Σ x² in float64. */
export function sumSquares<F extends Floats>(x: F, N: number): number {
  let s = 0;
  for (let i = 0; i < N; i++) s += x[i] * x[i];
  return s;
}

/** x *= s. */
export function scale<F extends Floats>(x: F, N: number, s: number): void {
  for (let i = 0; i < N; i++) x[i] *= s;
}

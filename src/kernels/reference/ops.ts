/**
 * Reference (TypeScript twin) of native/ops.cc: LayerNorm, GELU, residual, accumulate,
 * encoder and fused softmax/cross-entropy. Plain loops accumulating in float64, generic over
 * Float32Array | Float64Array; with Float64Array buffers they are exact to float64 rounding
 * (the gradient checks run the whole model this way). Contracts: ../types.ts.
 *
 * Glossary: B batch, T time (sequence), C channels, V vocabulary, N rows (LayerNorm) or a
 * flat element count, BT = B*T rows.
 */
import type { Floats } from '../types.ts';

const LN_EPS = 1e-5;
const GELU_K = Math.sqrt(2 / Math.PI);
const GELU_A = 0.044715;

/** out[N,C] = (inp − mean)·rstd·weight + bias; saves mean[N], rstd[N] (biased variance). */
export function layernormForward<F extends Floats>(out: F, mean: F, rstd: F, inp: F, weight: F, bias: F, N: number, C: number): void {
  for (let r = 0; r < N; r++) {
    const o = r * C;
    let s = 0;
    for (let i = 0; i < C; i++) s += inp[o + i];
    const m = s / C;
    let v = 0;
    for (let i = 0; i < C; i++) {
      const d = inp[o + i] - m;
      v += d * d;
    }
    const rs = 1 / Math.sqrt(v / C + LN_EPS);
    for (let i = 0; i < C; i++) out[o + i] = (inp[o + i] - m) * rs * weight[i] + bias[i];
    mean[r] = m;
    rstd[r] = rs;
  }
}

/** Accumulates dinp[N,C], dweight[C], dbias[C]. */
export function layernormBackward<F extends Floats>(dinp: F, dweight: F, dbias: F, dout: F, inp: F, weight: F, mean: F, rstd: F, N: number, C: number): void {
  for (let r = 0; r < N; r++) {
    const o = r * C;
    const m = mean[r],
      rs = rstd[r];
    // dL/dnorm = weight·dout; the mean terms come from norm's dependence on mean and rstd.
    let sumDn = 0,
      sumDnN = 0;
    for (let i = 0; i < C; i++) {
      const n = (inp[o + i] - m) * rs;
      const dn = weight[i] * dout[o + i];
      sumDn += dn;
      sumDnN += dn * n;
    }
    const a = sumDn / C,
      c = sumDnN / C;
    for (let i = 0; i < C; i++) {
      const n = (inp[o + i] - m) * rs;
      const g = dout[o + i];
      dbias[i] += g;
      dweight[i] += n * g;
      dinp[o + i] += (weight[i] * g - a - n * c) * rs;
    }
  }
}

/** out = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))). */
export function geluForward<F extends Floats>(out: F, inp: F, N: number): void {
  for (let i = 0; i < N; i++) {
    const x = inp[i];
    out[i] = 0.5 * x * (1 + Math.tanh(GELU_K * (x + GELU_A * x * x * x)));
  }
}

/** dinp += gelu'(inp)·dout. */
export function geluBackward<F extends Floats>(dinp: F, inp: F, dout: F, N: number): void {
  for (let i = 0; i < N; i++) {
    const x = inp[i];
    const u = GELU_K * (x + GELU_A * x * x * x);
    const th = Math.tanh(u);
    const sech2 = 1 - th * th;
    const grad = 0.5 * (1 + th) + 0.5 * x * sech2 * GELU_K * (1 + 3 * GELU_A * x * x);
    dinp[i] += grad * dout[i];
  }
}

/** out = a + b (out may alias a or b). */
export function residualForward<F extends Floats>(out: F, a: F, b: F, N: number): void {
  for (let i = 0; i < N; i++) out[i] = a[i] + b[i];
}

/** dst += src. */
export function accumulate<F extends Floats>(dst: F, src: F, N: number): void {
  for (let i = 0; i < N; i++) dst[i] += src[i];
}

/** out[B,T,C] = wte[tokens[b,t]] + wpe[t]. */
export function encoderForward<F extends Floats>(out: F, tokens: Int32Array, wte: F, wpe: F, B: number, T: number, C: number): void {
  for (let r = 0; r < B * T; r++) {
    const e = tokens[r] * C,
      p = (r % T) * C,
      o = r * C;
    for (let i = 0; i < C; i++) out[o + i] = wte[e + i] + wpe[p + i];
  }
}

/** dwte[tokens[b,t]] += wteScale·dout[b,t];  dwpe[t] += dout[b,t]. */
export function encoderBackward<F extends Floats>(dwte: F, dwpe: F, dout: F, tokens: Int32Array, B: number, T: number, C: number, wteScale = 1): void {
  for (let r = 0; r < B * T; r++) {
    const e = tokens[r] * C,
      p = (r % T) * C,
      o = r * C;
    for (let i = 0; i < C; i++) {
      dwte[e + i] += wteScale * dout[o + i];
      dwpe[p + i] += dout[o + i];
    }
  }
}

/**
 * losses[i] = −log softmax(logits[i])[targets[i]]; lse (may be null) = log Z per row;
 * dlogits (may alias logits, may be null) = (softmax·(1 + 2·zCoef·lse) − onehot)·scale, the
 * gradient of scale·Σ (loss + zCoef·lse²). Returns Σ losses in float64.
 */
export function crossEntropy<F extends Floats>(
  losses: F,
  dlogits: F | null,
  logits: F,
  targets: Int32Array,
  BT: number,
  V: number,
  scale: number,
  zCoef = 0,
  lse: F | null = null,
): number {
  const e = new Float64Array(V);
  let total = 0;
  for (let r = 0; r < BT; r++) {
    const o = r * V;
    const tgt = targets[r];
    let mx = -Infinity;
    for (let i = 0; i < V; i++) mx = Math.max(mx, logits[o + i]);
    let sum = 0;
    for (let i = 0; i < V; i++) {
      e[i] = Math.exp(logits[o + i] - mx);
      sum += e[i];
    }
    const logZ = Math.log(sum) + mx;
    const loss = Math.log(sum) - (logits[o + tgt] - mx);
    losses[r] = loss;
    total += losses[r]; // the stored value, as the native kernel sums it
    if (lse) lse[r] = logZ;
    if (dlogits) {
      const zf = 1 + 2 * zCoef * logZ; // exactly 1 when zCoef = 0
      for (let i = 0; i < V; i++) dlogits[o + i] = ((e[i] / sum) * zf - (i === tgt ? 1 : 0)) * scale;
    }
  }
  return total;
}

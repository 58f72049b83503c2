/** TypeScript twins of native/ops.cc: plain loops, float64 arithmetic. */
import type { Floats } from '../types.ts';

const LN_EPS = 1e-5;
const GELU_K = Math.sqrt(2 / Math.PI);

export function layernormForward(out: Floats, mean: Floats, rstd: Floats, inp: Floats, weight: Floats, bias: Floats, N: number, C: number): void {
  for (let n = 0; n < N; n++) {
    const x = n * C;
    let m = 0;
    for (let i = 0; i < C; i++) m += inp[x + i];
    m /= C;
    let v = 0;
    for (let i = 0; i < C; i++) v += (inp[x + i] - m) ** 2;
    v /= C; // biased variance, as PyTorch
    const s = 1 / Math.sqrt(v + LN_EPS);
    for (let i = 0; i < C; i++) out[x + i] = (inp[x + i] - m) * s * weight[i] + bias[i];
    mean[n] = m;
    rstd[n] = s;
  }
}

export function layernormBackward(
  dinp: Floats, dweight: Floats, dbias: Floats, dout: Floats, inp: Floats, weight: Floats, mean: Floats, rstd: Floats, N: number, C: number,
): void {
  for (let n = 0; n < N; n++) {
    const x = n * C;
    // dnorm = dout·w; dx = rstd·(dnorm − mean(dnorm) − norm·mean(dnorm·norm))
    let meanD = 0;
    let meanDN = 0;
    for (let i = 0; i < C; i++) {
      const norm = (inp[x + i] - mean[n]) * rstd[n];
      const d = dout[x + i] * weight[i];
      meanD += d;
      meanDN += d * norm;
    }
    meanD /= C;
    meanDN /= C;
    for (let i = 0; i < C; i++) {
      const norm = (inp[x + i] - mean[n]) * rstd[n];
      const d = dout[x + i] * weight[i];
      dbias[i] += dout[x + i];
      dweight[i] += norm * dout[x + i];
      dinp[x + i] += rstd[n] * (d - meanD - norm * meanDN);
    }
  }
}

export function geluForward(out: Floats, inp: Floats, N: number): void {
  for (let i = 0; i < N; i++) {
    const x = inp[i];
    out[i] = 0.5 * x * (1 + Math.tanh(GELU_K * (x + 0.044715 * x * x * x)));
  }
}

export function geluBackward(dinp: Floats, inp: Floats, dout: Floats, N: number): void {
  for (let i = 0; i < N; i++) {
    const x = inp[i];
    const u = GELU_K * (x + 0.044715 * x * x * x);
    const t = Math.tanh(u);
    const du = GELU_K * (1 + 3 * 0.044715 * x * x);
    dinp[i] += (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du) * dout[i];
  }
}

export function residualForward(out: Floats, a: Floats, b: Floats, N: number): void {
  for (let i = 0; i < N; i++) out[i] = a[i] + b[i];
}

export function accumulate(dst: Floats, src: Floats, N: number): void {
  for (let i = 0; i < N; i++) dst[i] += src[i];
}

export function encoderForward(out: Floats, tokens: Int32Array, wte: Floats, wpe: Floats, B: number, T: number, C: number): void {
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const o = (b * T + t) * C;
      const e = tokens[b * T + t] * C;
      for (let i = 0; i < C; i++) out[o + i] = wte[e + i] + wpe[t * C + i];
    }
  }
}

export function encoderBackward(dwte: Floats, dwpe: Floats, dout: Floats, tokens: Int32Array, B: number, T: number, C: number): void {
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const o = (b * T + t) * C;
      const e = tokens[b * T + t] * C;
      for (let i = 0; i < C; i++) {
        dwte[e + i] += dout[o + i];
        dwpe[t * C + i] += dout[o + i];
      }
    }
  }
}

export function crossEntropy(
  losses: Floats, dlogits: Floats | null, logits: Floats, targets: Int32Array, BT: number, V: number, scale: number,
): number {
  let total = 0;
  for (let r = 0; r < BT; r++) {
    const o = r * V;
    let max = -Infinity;
    for (let i = 0; i < V; i++) max = Math.max(max, logits[o + i]);
    let sum = 0;
    for (let i = 0; i < V; i++) sum += Math.exp(logits[o + i] - max);
    const y = targets[r];
    const loss = Math.log(sum) + max - logits[o + y];
    losses[r] = loss;
    total += loss;
    if (dlogits) {
      for (let i = 0; i < V; i++) {
        const p = Math.exp(logits[o + i] - max) / sum;
        dlogits[o + i] = (p - (i === y ? 1 : 0)) * scale;
      }
    }
  }
  return total;
}

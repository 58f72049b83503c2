/** Plain-loop matmul, the reference for native/matmul.cc. Sums run in float64. */
import type { Floats } from '../types.ts';

/** out[BT,OC] = inp[BT,C] · weight[OC,C]ᵀ + bias[OC]. */
export function matmulForward<F extends Floats>(
  out: F, inp: F, weight: F, bias: F | null, BT: number, C: number, OC: number,
): void {
  for (let r = 0; r < BT; r++) {
    for (let o = 0; o < OC; o++) {
      let s = bias ? bias[o] : 0;
      for (let i = 0; i < C; i++) s += inp[r * C + i] * weight[o * C + i];
      out[r * OC + o] = s;
    }
  }
}

/** dinp += dout·weight;  dweight += doutᵀ·inp;  dbias += Σ_rows dout. */
export function matmulBackward<F extends Floats>(
  dinp: F, dweight: F, dbias: F | null, dout: F, inp: F, weight: F,
  BT: number, C: number, OC: number,
): void {
  for (let r = 0; r < BT; r++) {
    for (let i = 0; i < C; i++) {
      let s = 0;
      for (let o = 0; o < OC; o++) s += dout[r * OC + o] * weight[o * C + i];
      dinp[r * C + i] += s;
    }
  }
  for (let o = 0; o < OC; o++) {
    for (let i = 0; i < C; i++) {
      let s = 0;
      for (let r = 0; r < BT; r++) s += dout[r * OC + o] * inp[r * C + i];
      dweight[o * C + i] += s;
    }
    if (dbias) {
      let s = 0;
      for (let r = 0; r < BT; r++) s += dout[r * OC + o];
      dbias[o] += s;
    }
  }
}

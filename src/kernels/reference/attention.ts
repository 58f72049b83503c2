/**
 * Reference (TypeScript twin) of native/attention.cc: causal multi-head self-attention in
 * plain float64-accumulating loops. Contract: ../types.ts.
 *
 * Glossary: B batch, T time (sequence), C channels, NH heads, hs = C/NH head size.
 * qkv[B,T,3C] = q | k | v with head h at columns h·hs; att[B,NH,T,T]; out[B,T,C].
 */
import type { Floats } from '../types.ts';

/** Head size, qkv row length and the 1/√hs score scale. */
const dims = (C: number, NH: number) => ({ hs: C / NH, C3: 3 * C, scale: 1 / Math.sqrt(C / NH) });

/** out = softmax(q·kᵀ/√hs, causal)·v per head; att receives the probabilities (zeros above the diagonal). */
export function attentionForward<F extends Floats>(out: F, att: F, qkv: F, B: number, T: number, C: number, NH: number): void {
  const { hs, C3, scale } = dims(C, NH);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < NH; h++) {
      for (let t = 0; t < T; t++) {
        const q = (b * T + t) * C3 + h * hs;
        const row = ((b * NH + h) * T + t) * T;
        const s = new Float64Array(t + 1);
        let mx = -Infinity;
        for (let t2 = 0; t2 <= t; t2++) {
          const k = (b * T + t2) * C3 + C + h * hs;
          let dot = 0;
          for (let i = 0; i < hs; i++) dot += qkv[q + i] * qkv[k + i];
          s[t2] = dot * scale;
          mx = Math.max(mx, s[t2]);
        }
        let sum = 0;
        for (let t2 = 0; t2 <= t; t2++) {
          s[t2] = Math.exp(s[t2] - mx);
          sum += s[t2];
        }
        for (let t2 = 0; t2 < T; t2++) att[row + t2] = t2 <= t ? s[t2] / sum : 0;
        const acc = new Float64Array(hs);
        for (let t2 = 0; t2 <= t; t2++) {
          const p = s[t2] / sum,
            v = (b * T + t2) * C3 + 2 * C + h * hs;
          for (let i = 0; i < hs; i++) acc[i] += p * qkv[v + i];
        }
        const o = (b * T + t) * C + h * hs;
        for (let i = 0; i < hs; i++) out[o + i] = acc[i];
      }
    }
  }
}

/** Accumulates dqkv[B,T,3C] from dout[B,T,C] using the forward's qkv and att. */
export function attentionBackward<F extends Floats>(dqkv: F, dout: F, qkv: F, att: F, B: number, T: number, C: number, NH: number): void {
  const { hs, C3, scale } = dims(C, NH);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < NH; h++) {
      for (let t = 0; t < T; t++) {
        const row = ((b * NH + h) * T + t) * T;
        const go = (b * T + t) * C + h * hs;
        const q = (b * T + t) * C3 + h * hs;
        // dP[t2] = dout_t · v_t2; dv_t2 += P[t,t2]·dout_t
        const dp = new Float64Array(t + 1);
        let dot = 0;
        for (let t2 = 0; t2 <= t; t2++) {
          const v = (b * T + t2) * C3 + 2 * C + h * hs;
          let s = 0;
          for (let i = 0; i < hs; i++) {
            s += dout[go + i] * qkv[v + i];
            dqkv[v + i] += att[row + t2] * dout[go + i];
          }
          dp[t2] = s;
          dot += att[row + t2] * s;
        }
        // Softmax backward: dS = P ⊙ (dP − Σ P·dP), then through the 1/√hs scaling.
        for (let t2 = 0; t2 <= t; t2++) {
          const ds = att[row + t2] * (dp[t2] - dot) * scale;
          const k = (b * T + t2) * C3 + C + h * hs;
          for (let i = 0; i < hs; i++) {
            dqkv[q + i] += ds * qkv[k + i];
            dqkv[k + i] += ds * qkv[q + i];
          }
        }
      }
    }
  }
}

/** TypeScript twin of native/attention.cc: causal multi-head attention, plain loops. */
import type { Floats } from '../types.ts';

export function attentionForward(out: Floats, att: Floats, qkv: Floats, B: number, T: number, C: number, NH: number): void {
  const hs = C / NH;
  const scale = 1 / Math.sqrt(hs);
  const row = new Float64Array(T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < NH; h++) {
      for (let t = 0; t < T; t++) {
        const q = (b * T + t) * 3 * C + h * hs;
        let max = -Infinity;
        for (let s = 0; s <= t; s++) {
          const k = (b * T + s) * 3 * C + C + h * hs;
          let dot = 0;
          for (let i = 0; i < hs; i++) dot += qkv[q + i] * qkv[k + i];
          row[s] = dot * scale;
          max = Math.max(max, row[s]);
        }
        let sum = 0;
        for (let s = 0; s <= t; s++) sum += (row[s] = Math.exp(row[s] - max));
        const a = ((b * NH + h) * T + t) * T;
        for (let s = 0; s < T; s++) att[a + s] = s <= t ? row[s] / sum : 0;
        const o = (b * T + t) * C + h * hs;
        for (let i = 0; i < hs; i++) {
          let acc = 0;
          for (let s = 0; s <= t; s++) acc += att[a + s] * qkv[(b * T + s) * 3 * C + 2 * C + h * hs + i];
          out[o + i] = acc;
        }
      }
    }
  }
}

export function attentionBackward(dqkv: Floats, dout: Floats, qkv: Floats, att: Floats, B: number, T: number, C: number, NH: number): void {
  const hs = C / NH;
  const scale = 1 / Math.sqrt(hs);
  const datt = new Float64Array(T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < NH; h++) {
      for (let t = 0; t < T; t++) {
        const a = ((b * NH + h) * T + t) * T;
        const o = (b * T + t) * C + h * hs;
        const q = (b * T + t) * 3 * C + h * hs;
        // out = Σ_s att[s]·v[s]: datt[s] = dout·v[s], dv[s] += att[s]·dout.
        for (let s = 0; s <= t; s++) {
          const v = (b * T + s) * 3 * C + 2 * C + h * hs;
          let dot = 0;
          for (let i = 0; i < hs; i++) {
            dot += dout[o + i] * qkv[v + i];
            dqkv[v + i] += att[a + s] * dout[o + i];
          }
          datt[s] = dot;
        }
        // Softmax backward: dpre[s] = att[s]·(datt[s] − Σ_r att[r]·datt[r]).
        let inner = 0;
        for (let s = 0; s <= t; s++) inner += att[a + s] * datt[s];
        for (let s = 0; s <= t; s++) {
          const dpre = att[a + s] * (datt[s] - inner) * scale;
          const k = (b * T + s) * 3 * C + C + h * hs;
          for (let i = 0; i < hs; i++) {
            dqkv[q + i] += dpre * qkv[k + i];
            dqkv[k + i] += dpre * qkv[q + i];
          }
        }
      }
    }
  }
}

/**
 * Embedding drift monitor (docs/optimizers.md#embedding-drift): under sign optimizers with
 * weight decay a row whose momentum stays constant drifts to the fixed point −sign(m)/λ (±100 at λ = 0.01) while
 * the loss looks normal. Cheap enough for every evaluation: one pass over the embedding matrix.
 */
import type { ParamSpec } from '../model/params.ts';
import { medianInPlace } from '../util/stats.ts';

export interface EmbeddingDrift {
  /** max |θ| over the matrix. */
  embed_max_abs: number;
  /** Largest and median RMS over rows. */
  embed_row_rms_max: number;
  embed_row_rms_median: number;
  /** Rows whose RMS exceeds DRIFT_FACTOR × the median row RMS. */
  embed_drift_rows: number;
}

const DRIFT_FACTOR = 5;

export function embeddingDrift(params: Float32Array | Float64Array, t: ParamSpec): EmbeddingDrift {
  const C = t.shape[t.shape.length - 1];
  const rows = t.size / C;
  const rms = new Float64Array(rows);
  let maxAbs = 0;
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let j = t.offset + r * C, e = j + C; j < e; j++) {
      const x = params[j];
      s += x * x;
      const a = Math.abs(x);
      if (a > maxAbs) maxAbs = a;
    }
    rms[r] = Math.sqrt(s / C);
  }
  const mid = medianInPlace(Float64Array.from(rms), rows);
  let rmsMax = 0;
  let drift = 0;
  for (const x of rms) {
    if (x > rmsMax) rmsMax = x;
    if (x > DRIFT_FACTOR * mid) drift++;
  }
  return { embed_max_abs: maxAbs, embed_row_rms_max: rmsMax, embed_row_rms_median: mid, embed_drift_rows: drift };
}

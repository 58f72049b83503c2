/**
 * Embedding drift monitor (docs/optimizers.md#embedding-drift): under sign optimizers with
 * weight decay a row whose momentum stays constant drifts to the fixed point −sign(m)/λ (±100 at λ = 0.01) while
 * the loss looks normal. Cheap enough for every evaluation: one pass over the embedding matrix.
 */
import type { ParamSpec } from '../model/params.ts';

export interface EmbeddingDrift {
  /** max |θ| over the matrix. */
  embed_max_abs: number;
  /** Largest and median RMS over rows. */
  embed_row_rms_max: number;
  embed_row_rms_median: number;
  /** Rows whose RMS exceeds DRIFT_FACTOR × the median row RMS. */
  embed_drift_rows: number;
}

export const DRIFT_FACTOR = 5;

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
  const sorted = Float64Array.from(rms).sort();
  const median = rows % 2 ? sorted[(rows - 1) / 2] : (sorted[rows / 2 - 1] + sorted[rows / 2]) / 2;
  let drift = 0;
  for (const x of rms) if (x > DRIFT_FACTOR * median) drift++;
  return { embed_max_abs: maxAbs, embed_row_rms_max: sorted[rows - 1], embed_row_rms_median: median, embed_drift_rows: drift };
}

/**
 * Min/max bucket downsampling: long runs log hundreds of thousands of steps, but a chart is a
 * few thousand pixels wide. Averaging would hide exactly what a training report is for (loss
 * spikes, gradient-norm blow-ups), so each bucket keeps its extremes instead.
 */

export interface XY {
  x: number[];
  y: (number | null)[];
}

export const DEFAULT_MAX_POINTS = 4000;

/** The indices a bucket [lo, hi) contributes: its min, its max and its first gap, in x order. */
function bucketPicks(y: (number | null)[], lo: number, hi: number): number[] {
  let iMin = -1;
  let iMax = -1;
  let iGap = -1;
  for (let i = lo; i < hi; i++) {
    const v = y[i];
    if (v === null || !Number.isFinite(v)) {
      if (iGap < 0) iGap = i;
      continue;
    }
    if (iMin < 0 || v < (y[iMin] as number)) iMin = i;
    if (iMax < 0 || v > (y[iMax] as number)) iMax = i;
  }
  const picks = new Set([iMin, iMax, iGap]);
  picks.delete(-1);
  return [...picks].sort((a, b) => a - b);
}

/**
 * Reduces a series to at most maxPoints points, keeping the first and last point, each
 * bucket's minimum and maximum, and one null per bucket that had a gap (so gaps stay gaps).
 */
export function downsampleMinMax(series: XY, maxPoints = DEFAULT_MAX_POINTS): XY {
  const { x, y } = series;
  const n = x.length;
  if (n <= maxPoints) return { x: x.slice(), y: y.slice() };
  if (maxPoints < 8) throw new RangeError(`maxPoints must be at least 8, got ${maxPoints}`);
  const hasGap = y.some((v) => v === null || !Number.isFinite(v));
  const perBucket = hasGap ? 3 : 2;
  const buckets = Math.floor((maxPoints - 2) / perBucket);
  const interior = n - 2; // the endpoints are kept outside the buckets
  const keep: number[] = [0];
  for (let b = 0; b < buckets; b++) {
    const lo = 1 + Math.floor((b * interior) / buckets);
    const hi = 1 + Math.floor(((b + 1) * interior) / buckets);
    for (const i of bucketPicks(y, lo, hi)) keep.push(i);
  }
  keep.push(n - 1);
  return {
    x: keep.map((i) => x[i]),
    y: keep.map((i) => (Number.isFinite(y[i]) ? y[i] : null)),
  };
}

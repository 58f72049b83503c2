/**
 * Statistics shared by the monitors, the experiments, `keel bench` and bench/: one definition
 * each, so that "the median" means the same wherever it is reported.
 */

/** The middle value, or the mean of the two middle values for an even count; null for none. */
export function median(xs: readonly number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** The arithmetic mean; null for no values. */
export function mean(xs: readonly number[]): number | null {
  return xs.length ? xs.reduce((a, x) => a + x, 0) / xs.length : null;
}

/** Mean and sample standard deviation (n − 1 in the denominator; 0 for a single value). */
export function meanStd(xs: readonly number[]): { mean: number; std: number } {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const m2 = xs.reduce((a, b) => a + (b - mean) ** 2, 0);
  return { mean, std: xs.length > 1 ? Math.sqrt(m2 / (xs.length - 1)) : 0 };
}

/**
 * Exact median of s[0, k) by quickselect, for a scratch buffer too large to copy and sort (the
 * per-tensor ratios of src/monitor/diagnostics.ts); reorders it. NaN when k = 0.
 */
export function medianInPlace(s: Float64Array, k: number): number {
  if (k === 0) return NaN;
  const hiIdx = k >> 1;
  select(s, k, hiIdx);
  if (k & 1) return s[hiIdx];
  let lower = -Infinity;
  for (let i = 0; i < hiIdx; i++) if (s[i] > lower) lower = s[i];
  return (lower + s[hiIdx]) / 2;
}

/** Quickselect (Hoare partition, median-of-three pivot): s[idx] ends as the idx-th smallest, smaller ones before it. */
function select(s: Float64Array, k: number, idx: number): void {
  let lo = 0,
    hi = k - 1;
  while (hi > lo) {
    const mid = (lo + hi) >> 1;
    // Median of three into s[mid], then use it as the pivot.
    if (s[mid] < s[lo]) swap(s, mid, lo);
    if (s[hi] < s[lo]) swap(s, hi, lo);
    if (s[hi] < s[mid]) swap(s, hi, mid);
    const pivot = s[mid];
    let i = lo,
      j = hi;
    while (i <= j) {
      while (s[i] < pivot) i++;
      while (s[j] > pivot) j--;
      if (i <= j) {
        swap(s, i, j);
        i++;
        j--;
      }
    }
    // Now s[lo..j] ≤ pivot ≤ s[i..hi], and j < i.
    if (idx <= j) hi = j;
    else if (idx >= i) lo = i;
    else return; // j < idx < i: s[idx] equals the pivot
  }
}

function swap(s: Float64Array, a: number, b: number): void {
  const t = s[a];
  s[a] = s[b];
  s[b] = t;
}

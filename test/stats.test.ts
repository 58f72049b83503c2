// src/util/stats.ts: the one median (and its in-place twin for large scratch buffers), mean
// and sample standard deviation.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mean, meanStd, median, medianInPlace } from '../src/util/stats.ts';
import { Rng } from '../src/util/rng.ts';

/** The median by sorting a copy: the definition the others must match. */
function sortedMedian(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

test('medianInPlace: exact, odd and even counts, duplicates; median agrees', () => {
  const rng = new Rng(2);
  for (const k of [1, 2, 3, 10, 11, 1000, 1001]) {
    const xs = Array.from({ length: k }, () => (rng.int(4) === 0 ? 0.5 : rng.normal()));
    const s = new Float64Array(k + 5).fill(99);
    s.set(xs);
    assert.equal(medianInPlace(s, k), sortedMedian(xs), `k = ${k}`);
    assert.equal(median(xs), sortedMedian(xs), `k = ${k}`);
  }
  assert.ok(Number.isNaN(medianInPlace(new Float64Array(3), 0)));
  assert.equal(median([]), null);
});

test('median of an even count is the mean of the two middle values; input left as it was', () => {
  const xs = [4, 1, 3, 2];
  assert.equal(median(xs), 2.5);
  assert.deepEqual(xs, [4, 1, 3, 2]);
});

test('mean and meanStd: sample standard deviation, 0 for one value, null mean for none', () => {
  assert.equal(mean([1, 2, 6]), 3);
  assert.equal(mean([]), null);
  assert.deepEqual(meanStd([2, 4, 4, 4, 5, 5, 7, 9]), { mean: 5, std: Math.sqrt(32 / 7) });
  assert.deepEqual(meanStd([3]), { mean: 3, std: 0 });
});

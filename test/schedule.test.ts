// Learning-rate schedules, including Tiger's piecewise-linear one (docs/optimizers.md#tiger).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { UserError } from '../src/errors.ts';
import { learningRate, parsePoints, piecewiseLinear } from '../src/schedule/lr.ts';

const base = { lr: 1, minLr: 0.1, warmup: 10, steps: 110 };

test('warm-up then cosine, linear or constant', () => {
  for (const kind of ['cosine', 'linear', 'constant'] as const) {
    const s = { ...base, kind };
    assert.equal(learningRate(s, 5), 0.5);
    assert.equal(learningRate(s, 10), 1);
    assert.equal(learningRate(s, 110), kind === 'constant' ? 1 : 0.1);
  }
  assert.ok(Math.abs(learningRate({ ...base, kind: 'cosine' }, 60) - 0.55) < 1e-12); // halfway: (1 + 0.1)/2
  assert.ok(Math.abs(learningRate({ ...base, kind: 'linear' }, 60) - 0.55) < 1e-12);
});

test("piecewise: Su's example {40000: 1, 160000: 0.5, 640000: 0.1, 1280000: 0.01} warms up from zero", () => {
  const pts = [
    [40_000, 1],
    [160_000, 0.5],
    [640_000, 0.1],
    [1_280_000, 0.01],
  ] as const;
  assert.equal(piecewiseLinear(pts, 0), 0);
  assert.equal(piecewiseLinear(pts, 10_000), 0.25);
  assert.equal(piecewiseLinear(pts, 40_000), 1);
  assert.equal(piecewiseLinear(pts, 100_000), 0.75);
  assert.ok(Math.abs(piecewiseLinear(pts, 400_000) - 0.3) < 1e-12);
  assert.equal(piecewiseLinear(pts, 5_000_000), 0.01);
  assert.equal(piecewiseLinear([[0, 1]], 123), 1, 'the default {0: 1} is constant');
  assert.equal(
    learningRate(
      {
        ...base,
        kind: 'piecewise',
        lr: 2,
        points: [
          [0, 1],
          [10, 0],
        ],
      },
      5,
    ),
    1,
  );
});

test('--lr-points parsing: sorted, validated', () => {
  assert.deepEqual(parsePoints('100:1, 0:0,1400:0.1'), [
    [0, 0],
    [100, 1],
    [1400, 0.1],
  ]);
  for (const bad of ['100', '1:-1', 'a:1', '1:1,1:2', '']) assert.throws(() => parsePoints(bad), UserError, bad);
});

/**
 * Learning-rate schedules: linear warm-up, then cosine, linear or constant to `minLr`; or
 * piecewise linear through (step, multiplier) points (Tiger's schedule, docs/optimizers.md#tiger).
 */
import { UserError } from '../errors.ts';

export type ScheduleKind = 'cosine' | 'linear' | 'constant' | 'piecewise';
export const SCHEDULES: ScheduleKind[] = ['cosine', 'linear', 'constant', 'piecewise'];

export interface ScheduleOptions {
  kind: ScheduleKind;
  lr: number;
  minLr: number;
  warmup: number;
  steps: number;
  /** piecewise: (step, multiplier of lr) points, sorted by step. */
  points?: readonly (readonly [number, number])[];
}

/** The learning rate for 1-based step `step`. Warm-up ramps linearly from lr/warmup to lr. */
export function learningRate(s: ScheduleOptions, step: number): number {
  if (s.kind === 'piecewise') return s.lr * piecewiseLinear(s.points ?? [[0, 1]], step);
  if (step <= s.warmup) return (s.lr * step) / s.warmup;
  if (s.kind === 'constant') return s.lr;
  const span = Math.max(1, s.steps - s.warmup);
  const progress = Math.min(1, (step - s.warmup) / span);
  const decay = s.kind === 'cosine' ? 0.5 * (1 + Math.cos(Math.PI * progress)) : 1 - progress;
  return s.minLr + (s.lr - s.minLr) * decay;
}

/**
 * Su's piecewise-linear multiplier: linear between sorted (step, value) points, constant after
 * the last; a first point after step 0 gets (0, 0) in front, i.e. a linear warm-up from zero.
 */
export function piecewiseLinear(points: readonly (readonly [number, number])[], step: number): number {
  const pts = points.length && points[0][0] === 0 ? points : [[0, 0] as const, ...points];
  if (step >= pts[pts.length - 1][0]) return pts[pts.length - 1][1];
  let i = 1;
  while (pts[i][0] <= step) i++;
  const [s0, v0] = pts[i - 1],
    [s1, v1] = pts[i];
  return v0 + ((v1 - v0) * (step - s0)) / (s1 - s0);
}

/** Parses "0:0,100:1,1000:0.1" (step:multiplier, any order) into sorted points. */
export function parsePoints(text: string): [number, number][] {
  const pts = text.split(',').map((part) => {
    const m = /^\s*(\d+)\s*:\s*([^\s]+)\s*$/.exec(part);
    const v = m ? Number(m[2]) : NaN;
    if (!m || !Number.isFinite(v) || v < 0) {
      throw new UserError(`--lr-points: "${part}" is not STEP:MULTIPLIER with a step ≥ 0 and a multiplier ≥ 0 (e.g. 0:0,100:1,1400:0.1)`);
    }
    return [Number(m[1]), v] as [number, number];
  });
  pts.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < pts.length; i++) {
    if (pts[i][0] === pts[i - 1][0]) throw new UserError(`--lr-points: step ${pts[i][0]} is given twice`);
  }
  return pts;
}

export function parseSchedule(kind: string): ScheduleKind {
  if (!(SCHEDULES as string[]).includes(kind)) {
    throw new UserError(`unknown --schedule "${kind}" (use ${SCHEDULES.join(', ')})`);
  }
  return kind as ScheduleKind;
}

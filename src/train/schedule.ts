/** Learning-rate schedules: linear warm-up, then cosine, linear or constant to `minLr`. */
import { UserError } from '../errors.ts';

export type ScheduleKind = 'cosine' | 'linear' | 'constant';
export const SCHEDULES: ScheduleKind[] = ['cosine', 'linear', 'constant'];

export interface ScheduleOptions {
  kind: ScheduleKind;
  lr: number;
  minLr: number;
  warmup: number;
  steps: number;
}

/** The learning rate for 1-based step `step`. Warm-up ramps linearly from lr/warmup to lr. */
export function learningRate(s: ScheduleOptions, step: number): number {
  if (step <= s.warmup) return (s.lr * step) / s.warmup;
  if (s.kind === 'constant') return s.lr;
  const span = Math.max(1, s.steps - s.warmup);
  const progress = Math.min(1, (step - s.warmup) / span);
  const decay = s.kind === 'cosine' ? 0.5 * (1 + Math.cos(Math.PI * progress)) : 1 - progress;
  return s.minLr + (s.lr - s.minLr) * decay;
}

export function parseSchedule(kind: string): ScheduleKind {
  if (!(SCHEDULES as string[]).includes(kind)) {
    throw new UserError(`unknown --schedule "${kind}" (use ${SCHEDULES.join(', ')})`);
  }
  return kind as ScheduleKind;
}

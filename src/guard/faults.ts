/**
 * Fire drills: `--fault STEP:KIND[:ARG…]` injects a fault at an optimizer step so users can
 * test their recovery set-up (issue 4). Kinds:
 *   nan-grad          every gradient element NaN at STEP
 *   grad-scale:X      gradients × X at STEP (before clipping)
 *   lr-scale:X:N      learning rate × X for N steps from STEP
 *   bad-batch:N       N micro-batches of uniformly random tokens from STEP on
 * Each fault fires once, the first time its step is trained: a rollback that replays the step
 * does not replay the fault (like a hardware glitch, it is an event, not a property of the data).
 */
import { UserError } from '../errors.ts';

export type Fault =
  | { step: number; kind: 'nan-grad' }
  | { step: number; kind: 'grad-scale'; x: number }
  | { step: number; kind: 'lr-scale'; x: number; n: number }
  | { step: number; kind: 'bad-batch'; n: number };

const USAGE = 'expected STEP:KIND[:ARG…] with KIND nan-grad, grad-scale:X, lr-scale:X:N or bad-batch:N (e.g. --fault 300:grad-scale:1000)';

export function parseFault(text: string): Fault {
  const parts = text.split(':');
  const step = Number(parts[0]);
  if (!/^\d+$/.test(parts[0] ?? '') || step < 1) throw new UserError(`--fault ${text}: step must be a positive integer; ${USAGE}`);
  const num = (i: number, what: string, positiveInt = false) => {
    const v = Number(parts[i]);
    if (parts[i] === undefined || parts[i] === '' || !Number.isFinite(v) || (positiveInt && (!Number.isInteger(v) || v < 1))) {
      throw new UserError(`--fault ${text}: ${what} is missing or invalid; ${USAGE}`);
    }
    return v;
  };
  const arity = (n: number) => {
    if (parts.length !== n) throw new UserError(`--fault ${text}: wrong number of arguments; ${USAGE}`);
  };
  switch (parts[1]) {
    case 'nan-grad':
      arity(2);
      return { step, kind: 'nan-grad' };
    case 'grad-scale':
      arity(3);
      return { step, kind: 'grad-scale', x: num(2, 'X') };
    case 'lr-scale':
      arity(4);
      return { step, kind: 'lr-scale', x: num(2, 'X'), n: num(3, 'N', true) };
    case 'bad-batch':
      arity(3);
      return { step, kind: 'bad-batch', n: num(2, 'N', true) };
    default:
      throw new UserError(`--fault ${text}: unknown kind "${parts[1] ?? ''}"; ${USAGE}`);
  }
}

/** Which faults act at a step. Each fault fires once (by its first step); lr-scale spans N steps. */
export class FaultPlan {
  private readonly fired = new Set<number>();
  constructor(readonly faults: readonly Fault[]) {}

  /** Faults starting at `step` not fired yet; marks them fired. */
  startingAt(step: number): Fault[] {
    const out: Fault[] = [];
    this.faults.forEach((f, i) => {
      if (f.step === step && !this.fired.has(i)) {
        this.fired.add(i);
        out.push(f);
      }
    });
    return out;
  }

  /** The LR multiplier at `step` from lr-scale faults that fired. */
  lrScale(step: number): number {
    let s = 1;
    this.faults.forEach((f, i) => {
      if (f.kind === 'lr-scale' && this.fired.has(i) && step >= f.step && step < f.step + f.n) s *= f.x;
    });
    return s;
  }

  toJSON(): number[] {
    return [...this.fired].sort((a, b) => a - b);
  }

  restore(fired: readonly number[] | undefined): void {
    for (const i of fired ?? []) this.fired.add(i);
  }
}

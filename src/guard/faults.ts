/**
 * Fire drills: `--fault STEP:KIND[:ARG…]` injects a fault at an optimizer step so users can
 * test their recovery set-up. Kinds:
 *   nan-grad          every gradient element NaN at STEP
 *   grad-scale:X      gradients × X at STEP (before clipping)
 *   lr-scale:X:N      learning rate × X for N steps from STEP
 *   bad-batch:N       N micro-batches of uniformly random tokens from STEP on
 * Each fault fires once, the first time its step is trained: a rollback that replays the step
 * does not replay the fault (like a hardware glitch, it is an event, not a property of the data),
 * and an lr-scale cut short by a rollback does not resume on the replay. A `:sticky` suffix
 * makes a fault fire on every pass through its steps instead, so the recovery ladder's
 * escalation can be drilled (src/control/ladder.ts).
 */
import { UserError } from '../errors.ts';

export type Fault = (
  | { step: number; kind: 'nan-grad' }
  | { step: number; kind: 'grad-scale'; x: number }
  | { step: number; kind: 'lr-scale'; x: number; n: number }
  | { step: number; kind: 'bad-batch'; n: number }
) & { sticky?: true };

const USAGE = 'expected STEP:KIND[:ARG…][:sticky] with KIND nan-grad, grad-scale:X, lr-scale:X:N or bad-batch:N (e.g. --fault 300:grad-scale:1000)';

export function parseFault(text: string): Fault {
  const all = text.split(':');
  const sticky = all.at(-1) === 'sticky';
  const parts = sticky ? all.slice(0, -1) : all;
  const f = parseParts(text, parts);
  return sticky ? { ...f, sticky: true } : f;
}

function parseParts(text: string, parts: string[]): Fault {
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

/**
 * Which faults act at a step. A fault fires once (on the first pass through its step), a sticky
 * one on every pass; an lr-scale spans N steps of the attempt (the pass) it fired in.
 */
export class FaultPlan {
  /** Fault index → the attempt it last fired in. */
  private readonly fired = new Map<number, number>();
  constructor(readonly faults: readonly Fault[]) {}

  /** Faults that fire at `step` on this attempt; marks them fired. */
  startingAt(step: number, attempt: number): Fault[] {
    const out: Fault[] = [];
    this.faults.forEach((f, i) => {
      if (f.step === step && (f.sticky || !this.fired.has(i))) {
        this.fired.set(i, attempt);
        out.push(f);
      }
    });
    return out;
  }

  /** The LR multiplier at `step` on this attempt from lr-scale faults that fired in it. */
  lrScale(step: number, attempt: number): number {
    let s = 1;
    this.faults.forEach((f, i) => {
      if (f.kind === 'lr-scale' && this.fired.get(i) === attempt && step >= f.step && step < f.step + f.n) s *= f.x;
    });
    return s;
  }

  toJSON(): [number, number][] {
    return [...this.fired].sort((a, b) => a[0] - b[0]);
  }

  /** Restores toJSON's pairs (a bare index, as older checkpoints hold, fired on attempt 0). */
  restore(fired: readonly ([number, number] | number)[] | undefined): void {
    for (const e of fired ?? []) {
      if (typeof e === 'number') this.fired.set(e, 0);
      else this.fired.set(e[0], e[1]);
    }
  }
}

/**
 * What to do when a spike is detected (`--on-spike`, techniques.md §1 mitigations 1–2):
 *   none      log it and train on;
 *   skip      do not apply the step (moments untouched); after maxSkips consecutive skips the
 *             spike counts as confirmed and escalates to a rollback (while the budget lasts);
 *   rollback  PaLM: restore the full state from about R steps before the spike and skip the
 *             next S batches of data, at most maxRollbacks times.
 * When the rollback budget is spent the policy falls back to skipping, and after maxSkips
 * consecutive skips to training on: it never loops forever.
 */
export type OnSpike = 'none' | 'skip' | 'rollback';
export const ON_SPIKE: OnSpike[] = ['none', 'skip', 'rollback'];

export interface RecoveryOptions {
  onSpike: OnSpike;
  maxSkips: number;
  /** R: roll back to a state at least this many steps before the spike. */
  rollbackSteps: number;
  /** S: batches (optimizer steps' worth of data) skipped after a rollback. */
  skipBatches: number;
  maxRollbacks: number;
}

/**
 * PaLM's R ≈ 100 and S ≈ 200–500 are for runs of ~10⁵ steps; shorter runs scale them down:
 * R = clamp(steps/14, 5, 100), S = clamp(steps/7, 10, 500) (1400 steps: R 100, S 200).
 */
export function recoveryDefaults(steps: number): Pick<RecoveryOptions, 'rollbackSteps' | 'skipBatches'> {
  const clamp = (x: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, Math.round(x)));
  return { rollbackSteps: clamp(steps / 14, 5, 100), skipBatches: clamp(steps / 7, 10, 500) };
}

export type Action = 'apply' | 'skip' | 'rollback';

export interface RecoveryState {
  consecutiveSkips: number;
  rollbacks: number;
}

export class Recovery {
  state: RecoveryState = { consecutiveSkips: 0, rollbacks: 0 };

  constructor(readonly o: RecoveryOptions) {}

  /** The action for a step; `spike` is true when a detector fired or the gradient is not finite. */
  decide(spike: boolean, canRollback: boolean): Action {
    const s = this.state;
    if (!spike || this.o.onSpike === 'none') {
      s.consecutiveSkips = 0;
      return 'apply';
    }
    const rollbackLeft = canRollback && s.rollbacks < this.o.maxRollbacks;
    const confirmed = this.o.onSpike === 'rollback' || s.consecutiveSkips >= this.o.maxSkips;
    if (confirmed && rollbackLeft) {
      s.rollbacks += 1;
      s.consecutiveSkips = 0;
      return 'rollback';
    }
    if (s.consecutiveSkips < this.o.maxSkips) {
      s.consecutiveSkips += 1;
      return 'skip';
    }
    s.consecutiveSkips = 0;
    return 'apply';
  }
}

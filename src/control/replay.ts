/**
 * Replays a run's control log (control.jsonl: every message the controller got and every
 * decision it gave) through a fresh controller, with no model: the decisions must come out the
 * same, because a decision is a function of the policy and the messages alone. With a `policy`
 * override it answers "what would this policy have decided on the same reports" instead (the
 * reports stay those of the logged run, so only decisions up to the first divergence are exact).
 *
 * Lines: {t:'start', policy, run} | {t:'resume', state} | {t:'report', …report} |
 *        {t:'restore_point', step, data, path?} | {t:'drop_point', step} | {t:'decision', …decision}
 */
import { UserError } from '../errors.ts';
import { Controller } from './controller.ts';
import type { Decision, Policy, StepReport } from './types.ts';

export interface ReplayResult {
  /** Decisions the replay gave, in order. */
  decisions: Decision[];
  /** Logged decisions the replay compared against. */
  compared: number;
  /** The first decision that differs from the logged one (null when all agree). */
  firstMismatch: { index: number; logged: unknown; replayed: unknown } | null;
}

export function replayControlLog(lines: readonly Record<string, unknown>[], policy?: Partial<Policy>): ReplayResult {
  let c: Controller | null = null;
  const out: ReplayResult = { decisions: [], compared: 0, firstMismatch: null };
  let last: Decision | null = null;
  const need = (what: string): Controller => {
    if (!c) throw new UserError(`control log: a ${what} line before the start line`);
    return c;
  };
  for (const { t, ...m } of lines) {
    if (t === 'start') {
      const p = m.policy as Policy;
      c = new Controller({ ...p, ...policy }, m.run as never);
    } else if (t === 'resume') {
      const state = m.state as { policy: Policy; run: never };
      c = Controller.fromJSON(state, policy ? { ...state.policy, ...policy } : undefined);
    } else if (t === 'report') {
      last = need('report').report(m as unknown as StepReport);
      out.decisions.push(last);
    } else if (t === 'restore_point') {
      need('restore_point').addRestorePoint(m as never);
    } else if (t === 'drop_point') {
      need('drop_point').dropRestorePoint(m.step as number);
    } else if (t === 'decision') {
      if (!last) throw new UserError('control log: a decision line without a report before it');
      const replayed = JSON.stringify(last);
      if (replayed !== JSON.stringify(m) && !out.firstMismatch) out.firstMismatch = { index: out.compared, logged: m, replayed: JSON.parse(replayed) };
      out.compared += 1;
      last = null;
    }
  }
  return out;
}

/**
 * The recovery ladder (docs/stability.md#recovery-ladder; PaLM's rollback, escalated): what to do about a step in
 * trouble (a detector fired, or the loss or gradient is not finite), climbing one rung each time
 * the trouble comes back at the same place:
 *
 *   skip          do not apply the update (on_spike skip; at most max_skips in a row)
 *   rollback      restore a state ≥ R steps back and skip S steps of data (PaLM)
 *   skip_updates  the spike returned after a rollback: roll back again and skip the updates at the
 *                 spike's steps (and the one before the first: a loss measures the update before it)
 *   lower_lr      it still returns: roll back and multiply the LR by lr_cut over the region around
 *                 it (again, ×lr_cut², up to max_lr_cuts times)
 *   stop          nothing worked, or the rollback budget is spent: stop with a message (exit 3)
 *
 * "The same place": within SAME_PLACE of the steps the episode flagged, on an attempt after the
 * rollback it caused. Every rung that rolls back spends one of max_rollbacks. Pure state: the
 * caller (controller.ts) owns the detectors and the restore points and serialises this as JSON.
 */
import type { Policy, Rung } from './types.ts';

/** Steps around an episode's flagged steps that count as the same place. */
const SAME_PLACE = 5;

interface Episode {
  /** First and last step flagged in this episode. */
  first: number;
  last: number;
  rung: Rung;
  /** LR cuts applied so far (lower_lr). */
  cuts: number;
  /** The attempt its last rollback started: a return is a spike on this attempt or later. */
  attempt: number;
}

interface Zone {
  from: number;
  to: number;
}

interface LrZone extends Zone {
  factor: number;
}

export interface LadderState {
  consecutive_skips: number;
  rollbacks: number;
  episodes: Episode[];
  skip_zones: Zone[];
  lr_zones: LrZone[];
}

export function emptyLadder(): LadderState {
  return { consecutive_skips: 0, rollbacks: 0, episodes: [], skip_zones: [], lr_zones: [] };
}

export type Verdict =
  | { kind: 'skip'; rung: Rung; reason: string }
  | { kind: 'rollback'; rung: Rung; reason: string }
  | { kind: 'stop'; rung: 'stop'; reason: string };

export interface Situation {
  step: number;
  attempt: number;
  /** Why the step is in trouble (a person's sentence), or null when it is not. */
  trouble: string | null;
  /** Whether a restore point before this step exists. */
  canRollback: boolean;
}

const inZone = (zones: readonly Zone[], n: number) => zones.some((z) => n >= z.from && n <= z.to);
const range = (z: Zone) => (z.from === z.to ? `step ${z.from}` : `steps ${z.from}–${z.to}`);

/** The temporary LR factor at step n from lower_lr zones (1 outside them). */
export function lrZoneFactor(s: LadderState, n: number): number {
  let f = 1;
  for (const z of s.lr_zones) if (n >= z.from && n <= z.to) f *= z.factor;
  return f;
}

/** The ladder's verdict for one step, or null: apply the update. Updates `s`. */
export function climb(s: LadderState, p: Policy, x: Situation): Verdict | null {
  const n = x.step;
  if (inZone(s.skip_zones, n)) {
    return { kind: 'skip', rung: 'skip_updates', reason: `step ${n} is in a region whose updates are skipped (a spike returned there after a rollback)` };
  }
  if (x.trouble === null || p.on_spike === 'none') {
    if (x.trouble === null) s.consecutive_skips = 0;
    return null;
  }
  const ep = s.episodes.find((e) => x.attempt >= e.attempt && n >= e.first - SAME_PLACE && n <= e.last + SAME_PLACE);
  if (ep) return escalate(s, p, ep, x);
  const rollbackLeft = x.canRollback && s.rollbacks < p.max_rollbacks;
  if (p.on_spike === 'skip' && s.consecutive_skips < p.max_skips) return skip(s, x);
  if (rollbackLeft) {
    const first = n - s.consecutive_skips;
    s.episodes.push({ first, last: n, rung: 'rollback', cuts: 0, attempt: x.attempt + 1 });
    return rollback(s, 'rollback', `${x.trouble}; rolling back and skipping ${p.skip_batches} steps of data`);
  }
  if (s.consecutive_skips < p.max_skips) return skip(s, x);
  const why = !x.canRollback ? 'no earlier state to roll back to' : `the rollback budget (${p.max_rollbacks}) is spent`;
  return stop(`${x.trouble}; ${s.consecutive_skips} steps skipped in a row and ${why}`);
}

function skip(s: LadderState, x: Situation): Verdict {
  s.consecutive_skips += 1;
  return { kind: 'skip', rung: 'skip', reason: `${x.trouble}; update skipped` };
}

function rollback(s: LadderState, rung: Rung, reason: string): Verdict {
  s.rollbacks += 1;
  s.consecutive_skips = 0;
  return { kind: 'rollback', rung, reason };
}

function stop(reason: string): Verdict {
  return { kind: 'stop', rung: 'stop', reason };
}

/** The spike came back where an episode rolled back from: the next rung up. */
function escalate(s: LadderState, p: Policy, ep: Episode, x: Situation): Verdict {
  ep.first = Math.min(ep.first, x.step);
  ep.last = Math.max(ep.last, x.step);
  const back = `${x.trouble}; it returned at the same place after ${s.rollbacks} rollback(s) (rung ${ep.rung}${ep.cuts > 0 ? ` ×${ep.cuts}` : ''})`;
  if (!x.canRollback) return stop(`${back}, and there is no earlier state to roll back to`);
  if (s.rollbacks >= p.max_rollbacks) return stop(`${back}, and the rollback budget (${p.max_rollbacks}) is spent`);
  ep.attempt = x.attempt + 1;
  if (ep.rung === 'rollback') {
    ep.rung = 'skip_updates';
    const z = { from: Math.max(1, ep.first - 1), to: ep.last };
    s.skip_zones.push(z);
    return rollback(s, 'skip_updates', `${back}; rolling back and skipping the updates of ${range(z)}`);
  }
  if (ep.cuts < p.max_lr_cuts) {
    ep.rung = 'lower_lr';
    ep.cuts += 1;
    const z: LrZone = { from: Math.max(1, ep.first - 1 - SAME_PLACE), to: ep.last + SAME_PLACE, factor: p.lr_cut };
    s.lr_zones.push(z);
    const total = Math.pow(p.lr_cut, ep.cuts);
    return rollback(s, 'lower_lr', `${back}; rolling back and multiplying the LR by ${fmt(total)} over ${range(z)}`);
  }
  return stop(`${back}; every rung is spent (rollback, skipping the updates, ${p.max_lr_cuts} LR cut(s))`);
}

function fmt(x: number): string {
  return Number(x.toPrecision(3)).toString();
}

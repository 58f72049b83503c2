/**
 * The controller's wire types: what a training run tells the controller after each optimizer
 * step (a step report), what the controller answers (a decision), and the policy it follows.
 * Plain JSON in snake_case, shared by `keel train` (in-process), `keel serve` and the Python
 * client. JSON has no NaN or infinity: a non-finite loss or norm travels as null with its flag.
 */
import { UserError } from '../errors.ts';

export const REPORT_VERSION = 1;

/**
 * Noise-scale sums of one step (docs/batch-size.md#noise-scale-estimator): what micro-batches or
 * DDP ranks give for free.
 */
export interface NoiseSums {
  /** Mean over the small batches of ‖g_small‖² (one micro-batch's, or one rank's, gradient). */
  g_small_sq: number;
  /** ‖g_big‖² of the whole step's gradient. */
  g_big_sq: number;
  /** Sequences in one small batch and in the whole step. */
  b_small: number;
  b_big: number;
}

export interface StepReport {
  v: typeof REPORT_VERSION;
  /** The 1-based optimizer step this report is about (its gradient is computed, not applied yet). */
  step: number;
  /** 0 on the first pass; rises by one with every rollback (replayed steps report a new attempt). */
  attempt: number;
  /** Mean training loss of the step; null when not finite. */
  loss: number | null;
  /** Global gradient norm before clipping; null when not finite. */
  grad_norm: number | null;
  nonfinite: { loss: boolean; grad: boolean };
  /** The learning rate this step would apply (null: the optimizer sets its own step size). */
  lr: number | null;
  /** Tokens trained after this step. */
  tokens: number;
  /** Sequences in this step. */
  batch: number;
  /** Data positions this step consumed, [from, to) (Keel: micro-batch indices; any monotone counter). */
  data: [number, number];
  noise?: NoiseSums;
  /** Per-tensor diagnostics summary (stored and shown; the controller does not act on it). */
  diag?: Record<string, unknown>;
  /**
   * Sent after the fact: the server was away when the step ran and the run proceeded on its own
   * (the Python client marks what it kept through an outage). Recorded as applied, never acted on.
   */
  late?: boolean;
}

export type DecisionKind = 'proceed' | 'skip' | 'rollback' | 'set_lr' | 'set_batch' | 'stop';

/**
 * The multiplier of the scheduled learning rate. steps null: the standing multiplier from now on
 * (the LR rule for the batch in effect); steps k: a temporary factor on top of it for the next k
 * steps (recovery lowering the LR over a region), after which it lapses.
 */
export interface LrChange {
  multiplier: number;
  steps: number | null;
}

export interface Decision {
  v: typeof REPORT_VERSION;
  /** Sequence number of this decision within the run (0, 1, 2, …). */
  seq: number;
  /** The step and attempt of the report it answers. */
  step: number;
  attempt: number;
  kind: DecisionKind;
  /** Whether to apply this step's update (proceed, set_lr, set_batch: yes; skip, rollback, stop: no). */
  apply: boolean;
  /** Why, for a person. */
  reason: string;
  /** The ladder rung that chose this (recovery decisions only). */
  rung?: Rung;
  /** rollback: restore the state after step to_step, then skip the data positions [from, to). */
  rollback?: { to_step: number; skip_data: [number, number] };
  /** From the next step on (after a rollback: from to_step + 1). */
  lr?: LrChange;
  /** Sequences per step from the next step on. */
  batch?: number;
  /** stop: what a person should do; the run exits with code 3. */
  stop?: { code: 'recovery_exhausted' | 'diverged'; last_good_step: number; restore_step: number | null; advice: string };
  /** Spikes the detectors flagged in this report (logged by the caller). */
  spikes?: SpikeFlag[];
}

export interface SpikeFlag {
  metric: 'loss' | 'grad_norm';
  value: number | null;
  /** null for a non-finite value (z = +∞). */
  z: number | null;
  mean: number;
  std: number;
  test: 'z' | 'jump';
}

/** The rungs of the recovery ladder, in the order they are climbed. */
export const RUNGS = ['skip', 'rollback', 'skip_updates', 'lower_lr', 'stop'] as const;
export type Rung = (typeof RUNGS)[number];

export type OnSpike = 'none' | 'skip' | 'rollback';
export const ON_SPIKE: readonly OnSpike[] = ['none', 'skip', 'rollback'];

export interface Policy {
  /** What a spike starts with: none (log only), skip, or rollback (PaLM); the ladder climbs from there. */
  on_spike: OnSpike;
  /** Spike detector overrides (src/monitor/spikes.ts; unset: its per-metric defaults). */
  spike_window?: number;
  spike_threshold?: number;
  spike_jump?: number;
  /** A z-test hit must also rise this fraction of the window mean above it (default MIN_RISE, 0 = off). */
  spike_min_rise?: number;
  /** Consecutive skipped steps before a spike counts as confirmed (then: rollback). */
  max_skips: number;
  /** R: roll back to a state at least R steps before the spike. */
  rollback_steps: number;
  /** S: steps' worth of data skipped after a rollback. */
  skip_batches: number;
  /** Rollbacks in the whole run, every rung that rolls back included. */
  max_rollbacks: number;
  /** lower_lr rung: the factor per cut and how many cuts before stopping. */
  lr_cut: number;
  max_lr_cuts: number;
  /** Batch-size ramp (src/schedule/batch.ts spec); unset: constant. */
  batch_ramp?: string;
  /** LR rescaling when the batch changes (src/schedule/rules.ts). */
  lr_rule?: string;
  /** B_noise in sequences for the sgd/signsgd/softsign rules. */
  b_noise?: number;
}

/** Facts about the run the policy is applied to (fixed for the run). */
export interface RunFacts {
  /** Total optimizer steps planned. */
  steps: number;
  /** Sequences per step at the end of a ramp (the run's batch). */
  batch: number;
  /** Sequences per micro-batch: every batch the controller sets is a multiple of it. */
  micro_batch: number;
  /** Tokens per sequence. */
  seq_len: number;
  /** Number of parameters (the softsign rule's gradient RMS). */
  params: number;
  /** The optimizer's ε (the softsign rule). */
  eps?: number;
}

/**
 * PaLM's R ≈ 100 and S ≈ 200–500 are for runs of ~10⁵ steps; shorter runs scale them down:
 * R = clamp(steps/14, 5, 100), S = clamp(steps/7, 10, 500) (1400 steps: R 100, S 200).
 */
export function recoveryDefaults(steps: number): Pick<Policy, 'rollback_steps' | 'skip_batches'> {
  const clamp = (x: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, Math.round(x)));
  return { rollback_steps: clamp(steps / 14, 5, 100), skip_batches: clamp(steps / 7, 10, 500) };
}

/** The policy with every unset field at its default for a run of `steps` steps. */
export function defaultPolicy(steps: number, over: Partial<Policy> = {}): Policy {
  const defined = Object.fromEntries(Object.entries(over).filter(([, v]) => v !== undefined));
  const p: Policy = { on_spike: 'none', max_skips: 5, max_rollbacks: 5, lr_cut: 0.1, max_lr_cuts: 2, ...recoveryDefaults(steps), ...defined };
  validatePolicy(p);
  return p;
}

function validatePolicy(p: Policy): void {
  const bad = (why: string): never => {
    throw new UserError(`policy: ${why}`);
  };
  if (!ON_SPIKE.includes(p.on_spike)) bad(`on_spike must be one of ${ON_SPIKE.join(', ')}, got ${String(p.on_spike)}`);
  for (const k of ['max_skips', 'rollback_steps', 'skip_batches', 'max_rollbacks', 'max_lr_cuts'] as const) {
    if (!Number.isInteger(p[k]) || p[k] < 0) bad(`${k} must be an integer ≥ 0, got ${String(p[k])}`);
  }
  if (p.rollback_steps < 1) bad(`rollback_steps must be ≥ 1, got ${p.rollback_steps}`);
  if (!(p.lr_cut > 0 && p.lr_cut < 1)) bad(`lr_cut must be in (0, 1), got ${String(p.lr_cut)}`);
}

/** A finite number or null (JSON's spelling of a non-finite one). */
export function finiteOrNull(x: number): number | null {
  return Number.isFinite(x) ? x : null;
}

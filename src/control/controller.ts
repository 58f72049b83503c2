/**
 * The controller: one decision engine for spikes, recovery, batch size and learning rate
 * (docs/architecture.md#the-controller-contract). Built from a policy and the run's facts, fed one step
 * report per optimizer step, it answers with one decision. It is a deterministic function of
 * its policy and the messages it has seen (reports, restore points), and its whole state
 * serialises to JSON: `keel train` keeps it in checkpoints, `keel serve` in its database.
 *
 * What it keeps:
 *   - the spike detectors on loss and gradient norm (src/monitor/spikes.ts);
 *   - the recovery ladder (ladder.ts): budgets, episodes, zones of skipped updates and cut LR;
 *   - the gradient noise scale, an EMA of the reports' noise sums (docs/batch-size.md#noise-scale-estimator);
 *   - the batch ramp and the LR rule: the batch and LR multiplier the run should use next;
 *   - restore points the run told it about (snapshots, checkpoints), each with a copy of the
 *     trajectory state (detectors, ramp, batch, LR) as it was there, so a rollback restores
 *     the controller's view of the run along with the run's weights.
 * Recovery budgets, episodes and the noise EMA are not rolled back: they describe the run, not
 * a point of its trajectory.
 */
import { UserError } from '../errors.ts';
import { defaultSpikeOptions, MIN_RISE, SpikeDetector, type SpikeEvent, type SpikeOptions } from '../monitor/spikes.ts';
import { DEFAULT_NOISE_BETA, noiseFromSums } from '../monitor/noise_scale.ts';
import { batchAt, parseBatchSpec, type BatchSpec } from '../schedule/batch.ts';
import { lrScale, SCALING_RULES, type ScalingRule } from '../schedule/rules.ts';
import { climb, emptyLadder, lrZoneFactor, type LadderState, type Verdict } from './ladder.ts';
import {
  defaultPolicy,
  finiteOrNull,
  REPORT_VERSION,
  type Decision,
  type DecisionKind,
  type Policy,
  type RunFacts,
  type SpikeFlag,
  type StepReport,
} from './types.ts';

/** What a rollback restores of the controller: the detectors and the batch/LR plan at that point. */
interface Trajectory {
  /** The detectors' JSON, filled in when the trajectory is copied (trajectory()). */
  detectors: { loss: unknown; grad_norm: unknown };
  /** Sequences consumed so far (the ramps that follow samples). */
  samples: number;
  /** The adaptive ramp's batch so far. */
  ramp_current: number | null;
  /** The standing LR multiplier (the LR rule at the batch in effect). */
  rule_lr: number;
  /** What the run was last told: the batch and the LR multiplier of its next step. */
  batch: number;
  lr: number;
}

export interface RestorePoint {
  step: number;
  /** The data position to continue from after restoring it. */
  data: number;
  /** Where it is on disk (a checkpoint); absent for in-memory snapshots. */
  path?: string;
}

interface StoredPoint extends RestorePoint {
  trajectory: Trajectory;
}

export interface ControllerState {
  version: 1;
  policy: Policy;
  run: RunFacts;
  seq: number;
  attempt: number;
  next_step: number;
  trajectory: Trajectory;
  ladder: LadderState;
  noise: { count: number; g2: number; trace: number };
  points: StoredPoint[];
  spikes: number;
  /** Late reports came in: the next live decision restates the batch and LR multiplier. */
  resync?: boolean;
}

export class Controller {
  readonly policy: Policy;
  readonly run: RunFacts;
  private readonly ramp: BatchSpec | null;
  private readonly rule: ScalingRule;
  private loss!: SpikeDetector;
  private gradNorm!: SpikeDetector;
  private traj!: Trajectory;
  private ladder: LadderState = emptyLadder();
  private resync = false;
  private noise = { count: 0, g2: 0, trace: 0 };
  private points = new Map<number, StoredPoint>();
  private seq = 0;
  private attempt_ = 0;
  private nextStep = 1;
  private spikes_ = 0;

  constructor(policy: Partial<Policy> & Pick<Policy, 'on_spike'>, run: RunFacts) {
    checkRun(run);
    this.policy = defaultPolicy(run.steps, policy);
    this.run = { ...run };
    this.ramp = this.policy.batch_ramp ? parseBatchSpec(this.policy.batch_ramp) : null;
    this.rule = checkRule(this.policy);
    const det = (metric: 'loss' | 'grad_norm') => new SpikeDetector(metric, this.spikeOptions(metric));
    this.loss = det('loss');
    this.gradNorm = det('grad_norm');
    this.traj = { detectors: { loss: null, grad_norm: null }, samples: 0, ramp_current: null, rule_lr: 1, batch: 0, lr: 1 };
    const plan = this.plan(0);
    this.traj.batch = plan.batch;
    this.traj.lr = plan.lr;
  }

  /** The batch (sequences) and LR multiplier the run should use for its next step. */
  get inEffect(): { batch: number; lr_multiplier: number } {
    return { batch: this.traj.batch, lr_multiplier: this.traj.lr };
  }

  /** Rollbacks so far (every rung that rolls back). */
  get rollbacks(): number {
    return this.ladder.rollbacks;
  }

  /** Current attempt: rises with every rollback. */
  get attempt(): number {
    return this.attempt_;
  }

  /** Spikes flagged so far. */
  get spikes(): number {
    return this.spikes_;
  }

  /** The smoothed simple noise scale B_simple in sequences (null before a positive ‖G‖² estimate). */
  get bSimple(): number | null {
    const e = this.noiseEstimate();
    return e && e.g2 > 0 ? e.trace / e.g2 : null;
  }

  /** The run can restore the state after `p.step` (a snapshot or checkpoint it just took). */
  addRestorePoint(p: RestorePoint): void {
    if (!(Number.isInteger(p.step) && p.step >= 0 && p.step < this.nextStep)) {
      throw new UserError(`restore point: step must be an integer in [0, ${this.nextStep - 1}], got ${p.step}`);
    }
    if (!Number.isFinite(p.data)) throw new UserError(`restore point: data must be a number, got ${p.data}`);
    this.points.set(p.step, { ...p, trajectory: this.trajectory() });
  }

  /** The run can no longer restore `step` (its snapshot or checkpoint is gone). */
  dropRestorePoint(step: number): void {
    this.points.delete(step);
  }

  get restorePoints(): RestorePoint[] {
    return [...this.points.values()].sort((a, b) => a.step - b.step).map(({ trajectory: _t, ...p }) => p);
  }

  /** The decision for one step report. */
  report(r: StepReport): Decision {
    this.checkReport(r);
    const flags = this.observe(r);
    const trouble = describeTrouble(r, flags);
    const d = r.late === true ? this.recordLate(r, trouble) : this.decide(r, trouble);
    if (flags.length > 0) d.spikes = flags;
    return d;
  }

  private decide(r: StepReport, trouble: string | null): Decision {
    const target = this.rollbackTarget(r.step);
    const verdict = climb(this.ladder, this.policy, { step: r.step, attempt: r.attempt, trouble, canRollback: target !== null });
    const d = verdict ? this.recover(r, verdict, target) : this.proceed(r, trouble);
    if (this.resync) {
      // The run has not heard of the batch and LR the late reports' steps planned.
      d.batch ??= this.traj.batch;
      d.lr ??= { multiplier: this.traj.lr, steps: null };
      this.resync = false;
    }
    return d;
  }

  /**
   * A late report: the run already applied the step, so it is recorded as proceeded whatever it
   * shows (a spike is flagged and logged, not skipped or rolled back: the past cannot be), and the
   * next live decision restates the batch and LR the run should use.
   */
  private recordLate(r: StepReport, trouble: string | null): Decision {
    this.resync = true;
    const d = this.advance(r, 'proceed', '');
    return { ...d, kind: 'proceed', apply: true, reason: `${trouble ?? 'healthy step'}; reported late (the server was away): the run had applied it` };
  }

  /** Carries out the ladder's verdict; `target` is the restore point a rollback goes to (the ladder rolls back only when there is one). */
  private recover(r: StepReport, v: Verdict, target: StoredPoint | null): Decision {
    if (v.kind === 'skip') return this.advance(r, 'skip', v.reason, v.rung);
    if (v.kind === 'stop' || target === null) return this.stopDecision(r, 'recovery_exhausted', v.reason);
    this.traj = structuredClone(target.trajectory);
    this.restoreDetectors();
    for (const s of this.points.keys()) if (s > target.step) this.points.delete(s);
    this.attempt_ += 1;
    this.nextStep = target.step + 1;
    const width = r.data[1] - r.data[0];
    const skip: [number, number] = [target.data, target.data + this.policy.skip_batches * width];
    const lr = this.traj.rule_lr * lrZoneFactor(this.ladder, target.step + 1);
    this.traj.lr = lr;
    return this.decision(r, 'rollback', v.reason, {
      rung: v.rung,
      rollback: { to_step: target.step, skip_data: skip },
      lr: { multiplier: lr, steps: null },
      batch: this.traj.batch,
    });
  }

  private proceed(r: StepReport, trouble: string | null): Decision {
    if (trouble !== null && r.nonfinite.loss) return this.stopDecision(r, 'diverged', `training diverged: ${trouble}`);
    return this.advance(r, 'proceed', trouble ? `${trouble}; on_spike none: applied` : 'healthy step');
  }

  /**
   * A step that was not rolled back: its data is consumed, the next report is for the next step,
   * and the batch and LR multiplier of that step are planned; a change travels in the decision
   * (a proceed that changes them is a set_batch or set_lr; a skip carries them as they are).
   */
  private advance(r: StepReport, kind: 'proceed' | 'skip', reason: string, rung?: Verdict['rung']): Decision {
    this.traj.samples += r.batch;
    this.nextStep = r.step + 1;
    const next = this.plan(r.step);
    const batchChanged = next.batch !== this.traj.batch;
    const lrChanged = next.lr !== this.traj.lr;
    this.traj.batch = next.batch;
    this.traj.lr = next.lr;
    const changes: Partial<Decision> = {
      rung,
      ...(batchChanged ? { batch: next.batch } : {}),
      ...(lrChanged ? { lr: { multiplier: next.lr, steps: next.lrSteps } } : {}),
    };
    if (kind === 'skip' || (!batchChanged && !lrChanged)) return this.decision(r, kind, reason, changes);
    if (batchChanged) return this.decision(r, 'set_batch', `${next.why}: ${next.batch} sequences per step from step ${r.step + 1}`, changes);
    return this.decision(r, 'set_lr', `${next.lrWhy} from step ${r.step + 1}`, changes);
  }

  /** The batch and LR multiplier for the step after `step` completed steps. */
  private plan(step: number): { batch: number; lr: number; lrSteps: number | null; why: string; lrWhy: string } {
    const t = this.traj;
    const { batch: F, micro_batch: m, steps, params, eps } = this.run;
    let batch = F;
    let why = 'constant batch';
    if (this.ramp) {
      batch = batchAt(this.ramp, step, {
        totalSteps: steps,
        finalBatch: F,
        microBatch: m,
        samplesSeen: t.samples,
        bSimple: this.bSimple,
        current: t.ramp_current ?? undefined,
      });
      if (this.ramp.kind === 'adaptive') t.ramp_current = batch;
      why = `batch ramp ${this.policy.batch_ramp}`;
    }
    if (this.rule !== 'none') {
      const g2 = this.noiseEstimate()?.g2;
      const gradRms = g2 !== undefined && g2 > 0 ? Math.sqrt(g2 / params) : undefined;
      t.rule_lr = lrScale(this.rule, batch, { baseBatch: F, bNoise: this.policy.b_noise, eps: eps ?? 0, gradRms });
    }
    const zone = lrZoneFactor(this.ladder, step + 1);
    const lr = t.rule_lr * zone;
    const zoneEnd = this.ladder.lr_zones.filter((z) => step + 1 >= z.from && step + 1 <= z.to).reduce((e, z) => Math.min(e, z.to), Infinity);
    const lrSteps = zone !== 1 ? zoneEnd - step : null;
    const lrWhy =
      zone !== 1
        ? `recovery: LR × ${Number(zone.toPrecision(3))} through step ${zoneEnd} (a spike returned there)`
        : this.rule !== 'none'
          ? `LR rule ${this.rule} at batch ${batch}: LR × ${Number(t.rule_lr.toPrecision(4))}`
          : 'LR back to the schedule';
    return { batch, lr, lrSteps, why, lrWhy };
  }

  /** Feeds the detectors and the noise EMA; returns the spikes flagged. */
  private observe(r: StepReport): SpikeFlag[] {
    if (r.noise) this.foldNoise(r.noise.g_small_sq, r.noise.g_big_sq, r.noise.b_small, r.noise.b_big);
    const flags: SpikeFlag[] = [];
    const a = this.loss.observe(r.step, r.loss ?? NaN);
    const b = this.gradNorm.observe(r.step, r.grad_norm ?? NaN);
    for (const e of [a, b]) if (e) flags.push(toFlag(e));
    this.spikes_ += flags.length;
    return flags;
  }

  private foldNoise(small: number, big: number, bS: number, bB: number): void {
    if (!(Number.isFinite(small) && Number.isFinite(big) && bB > bS && bS > 0)) return;
    const [g, s] = noiseFromSums(small, big, bS, bB);
    const b = DEFAULT_NOISE_BETA;
    this.noise.count += 1;
    this.noise.g2 = b * this.noise.g2 + (1 - b) * g;
    this.noise.trace = b * this.noise.trace + (1 - b) * s;
  }

  private noiseEstimate(): { g2: number; trace: number } | null {
    if (this.noise.count === 0) return null;
    const corr = 1 - Math.pow(DEFAULT_NOISE_BETA, this.noise.count);
    return { g2: this.noise.g2 / corr, trace: this.noise.trace / corr };
  }

  /** PaLM: the newest restore point at least R steps before `step`; failing that, the oldest before it. */
  private rollbackTarget(step: number): StoredPoint | null {
    let newest: StoredPoint | null = null;
    let oldest: StoredPoint | null = null;
    for (const p of this.points.values()) {
      if (p.step >= step) continue;
      if (p.step <= step - this.policy.rollback_steps && (!newest || p.step > newest.step)) newest = p;
      if (!oldest || p.step < oldest.step) oldest = p;
    }
    return newest ?? oldest;
  }

  private stopDecision(r: StepReport, code: 'recovery_exhausted' | 'diverged', reason: string): Decision {
    const disk = [...this.points.values()].filter((p) => p.path !== undefined && p.step < r.step).sort((a, b) => b.step - a.step);
    const before = disk.find((p) => p.step <= r.step - this.policy.rollback_steps) ?? disk[0] ?? null;
    const where = before ? `resume from ${before.path} (step ${before.step})` : 'start over (no checkpoint on disk precedes the spike)';
    const advice =
      code === 'diverged'
        ? 'lower --lr, raise --warmup, or use --on-spike skip|rollback'
        : `${where} with a lower --lr or --clip or a longer --warmup, or raise --max-rollbacks / --max-lr-cuts`;
    return this.decision(r, 'stop', reason, {
      rung: code === 'diverged' ? undefined : 'stop',
      stop: { code, last_good_step: r.step - 1, restore_step: before?.step ?? null, advice },
    });
  }

  private decision(r: StepReport, kind: DecisionKind, reason: string, extra: Partial<Decision> = {}): Decision {
    const apply = kind === 'proceed' || kind === 'set_lr' || kind === 'set_batch';
    const d: Decision = { v: REPORT_VERSION, seq: this.seq++, step: r.step, attempt: r.attempt, kind, apply, reason };
    for (const [k, v] of Object.entries(extra)) if (v !== undefined) (d as unknown as Record<string, unknown>)[k] = v;
    return d;
  }

  private checkReport(r: StepReport): void {
    if (r === null || typeof r !== 'object') throw new UserError('step report: expected an object');
    if (r.v !== REPORT_VERSION) throw new UserError(`step report: unsupported version ${String(r.v)} (this controller reads ${REPORT_VERSION})`);
    if (r.step !== this.nextStep) throw new UserError(`step report: expected step ${this.nextStep}, got ${String(r.step)}`);
    if (r.attempt !== this.attempt_)
      throw new UserError(`step report: expected attempt ${this.attempt_} (after ${this.attempt_} rollback(s)), got ${String(r.attempt)}`);
    if (!(Number.isInteger(r.batch) && r.batch >= 1)) throw new UserError(`step report: batch must be an integer ≥ 1, got ${String(r.batch)}`);
    if (!Array.isArray(r.data) || r.data.length !== 2 || !(r.data[1] >= r.data[0])) throw new UserError('step report: data must be [from, to) with to ≥ from');
  }

  private spikeOptions(metric: 'loss' | 'grad_norm'): SpikeOptions {
    const p = this.policy;
    const o: SpikeOptions = {
      ...defaultSpikeOptions(metric),
      ...(p.spike_window !== undefined ? { window: p.spike_window } : {}),
      ...(p.spike_threshold !== undefined ? { threshold: p.spike_threshold } : {}),
      // The jump test is the loss's only (defaultSpikeOptions): a gradient norm routinely doubles.
      ...(p.spike_jump !== undefined && metric === 'loss' ? { jump: p.spike_jump } : {}),
      minRise: p.spike_min_rise ?? MIN_RISE,
    };
    const warmup = spikeWarmup(o.window, this.run.steps);
    return warmup === null ? o : { ...o, warmup };
  }

  /** Steps of history the detectors need before they test (the warm-up window, or the full window). */
  get detectorWarmup(): number {
    return this.loss.warmup;
  }

  /** The detectors' full rolling window. */
  get detectorWindow(): number {
    return this.loss.options.window;
  }

  /** A copy of the trajectory state, detectors included (between copies they live as objects). */
  private trajectory(): Trajectory {
    return { ...structuredClone(this.traj), detectors: { loss: this.loss.toJSON(), grad_norm: this.gradNorm.toJSON() } };
  }

  private restoreDetectors(): void {
    this.loss = SpikeDetector.fromJSON(this.traj.detectors.loss);
    this.gradNorm = SpikeDetector.fromJSON(this.traj.detectors.grad_norm);
  }

  toJSON(): ControllerState {
    return structuredClone({
      version: 1,
      policy: this.policy,
      run: this.run,
      seq: this.seq,
      attempt: this.attempt_,
      next_step: this.nextStep,
      trajectory: this.trajectory(),
      ladder: this.ladder,
      noise: this.noise,
      points: [...this.points.values()],
      spikes: this.spikes_,
      resync: this.resync,
    });
  }

  /**
   * Restores toJSON's state. A resumed run may change its policy or length (flags given on
   * resume override the saved ones): pass them to replace the saved ones; the state carries over.
   */
  static fromJSON(json: unknown, policy?: Partial<Policy> & Pick<Policy, 'on_spike'>, run?: RunFacts): Controller {
    const s = json as ControllerState;
    if (s === null || typeof s !== 'object' || s.version !== 1) throw new UserError('saved controller state is invalid or from an unknown version');
    const c = new Controller(policy ?? s.policy, run ?? s.run);
    c.seq = s.seq;
    c.attempt_ = s.attempt;
    c.nextStep = s.next_step;
    c.traj = structuredClone(s.trajectory);
    c.restoreDetectors();
    c.ladder = structuredClone(s.ladder);
    c.noise = { ...s.noise };
    c.points = new Map(s.points.map((p) => [p.step, structuredClone(p)]));
    c.spikes_ = s.spikes ?? 0;
    c.resync = s.resync ?? false;
    return c;
  }
}

/** The shortest warm-up window: fewer values make σ too noisy for a 6σ test. */
const MIN_SPIKE_WARMUP = 16;

/**
 * A shorter warm-up for a window the run cannot afford: when filling it would take more than
 * the run's first quarter, the detectors test from max(16, steps/4) values on (an 80-step run:
 * from step 21, not never). Null where the full window fits: long runs are unchanged.
 */
export function spikeWarmup(window: number, steps: number): number | null {
  if (window <= steps / 4) return null;
  const w = Math.min(window, Math.max(MIN_SPIKE_WARMUP, Math.floor(steps / 4)));
  return w < window ? w : null;
}

function toFlag(e: SpikeEvent): SpikeFlag {
  return { metric: e.metric as SpikeFlag['metric'], value: finiteOrNull(e.value), z: finiteOrNull(e.z), mean: e.mean, std: e.std, test: e.test };
}

/** A sentence saying what is wrong with the step, or null. */
function describeTrouble(r: StepReport, flags: readonly SpikeFlag[]): string | null {
  const parts: string[] = [];
  if (r.nonfinite.loss) parts.push(`loss is not finite at step ${r.step}`);
  else if (r.nonfinite.grad) parts.push(`gradient is not finite at step ${r.step}`);
  for (const f of flags) {
    if (f.value === null) continue;
    const how = f.test === 'z' ? `${f.z === null ? '∞' : f.z.toFixed(1)}σ above` : 'over 1.5× the EMA of';
    parts.push(`${f.metric} spike at step ${r.step}: ${f.value.toPrecision(4)}, ${how} its mean ${f.mean.toPrecision(4)}`);
  }
  return parts.length > 0 ? parts.join('; ') : null;
}

function checkRun(r: RunFacts): void {
  const posInt = (k: keyof RunFacts) => {
    const v = r[k];
    if (!(Number.isInteger(v) && (v as number) >= 1)) throw new UserError(`run: ${k} must be an integer ≥ 1, got ${String(v)}`);
  };
  for (const k of ['steps', 'batch', 'micro_batch', 'seq_len', 'params'] as const) posInt(k);
  if (r.batch % r.micro_batch !== 0) throw new UserError(`run: batch (${r.batch}) must be a multiple of micro_batch (${r.micro_batch})`);
}

function checkRule(p: Policy): ScalingRule {
  const rule = (p.lr_rule ?? 'none') as ScalingRule;
  if (!SCALING_RULES.includes(rule)) throw new UserError(`policy: lr_rule must be one of ${SCALING_RULES.join(', ')}, got ${String(p.lr_rule)}`);
  if (['sgd', 'signsgd', 'softsign'].includes(rule) && p.b_noise === undefined) {
    throw new UserError(
      `--lr-rule ${rule} needs --b-noise (the gradient noise scale in sequences; \`keel plan --from RUN\` reads it from a run with --accum ≥ 2)`,
    );
  }
  return rule;
}

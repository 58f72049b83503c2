/**
 * The stability machinery of one training run (issue 4, techniques.md §1), composed from
 * src/monitor and src/guard: spike detectors on loss and gradient norm, the recovery policy
 * (skip / rollback), fault injection, the embedding-gradient shrink, emulated gradient precision
 * and β/ε schedules. The trainer asks it what to do; its state goes into checkpoints.
 */
import { UserError } from '../errors.ts';
import { FaultPlan, parseFault, type Fault } from '../guard/faults.ts';
import { roundGradients, type GradPrecision } from '../guard/precision.ts';
import { Recovery, recoveryDefaults, type OnSpike, type RecoveryState } from '../guard/recovery.ts';
import { defaultSpikeOptions, SpikeDetector, type SpikeEvent, type SpikeOptions } from '../monitor/spikes.ts';

/** Stability options of `keel train`; every one is optional (off or a documented default). */
export interface StabilityOptions {
  spikeWindow?: number;
  spikeThreshold?: number;
  spikeJump?: number;
  onSpike?: OnSpike;
  maxSkips?: number;
  rollbackSteps?: number;
  skipBatches?: number;
  maxRollbacks?: number;
  /** `--fault` specs, e.g. "300:grad-scale:1000". */
  faults?: string[];
  /** GLM-130B: the token embedding's gradient × α (1 = off) ... */
  embedGradShrink?: number;
  /** ... ramping linearly back to 1 over this many steps (0 = constant α). */
  embedGradShrinkRamp?: number;
  /** z-loss coefficient (Wortsman et al.; 0 = off). */
  zLoss?: number;
  gradPrecision?: GradPrecision;
  lossScale?: number;
  /** `--opt-schedule KEY=FROM:TO`: an optimizer option moved linearly over the run. */
  optSchedules?: string[];
  /** LAWA: average of the k latest snapshots taken every lawaEvery steps (issue 6). */
  lawaK?: number;
  lawaEvery?: number;
  /** EMA of the weights with this β (0 / undefined = off), optionally with β warm-up. */
  ema?: number;
  emaWarmup?: boolean;
  /** Per-tensor Adam-instability diagnostics every n steps (0 = off; src/monitor/diagnostics.ts). */
  diagEvery?: number;
}

export interface GuardState {
  detectors: Record<string, unknown>;
  recovery: RecoveryState;
  faultsFired: number[];
  badBatchesLeft: number;
}

export interface OptSchedule {
  key: string;
  from: number;
  to: number;
}

export function parseOptSchedule(text: string): OptSchedule {
  const m = /^([A-Za-z][A-Za-z0-9]*)=([^:]+):([^:]+)$/.exec(text.trim());
  const from = m ? Number(m[2]) : NaN;
  const to = m ? Number(m[3]) : NaN;
  if (!m || !Number.isFinite(from) || !Number.isFinite(to)) {
    throw new UserError(`--opt-schedule ${text}: expected KEY=FROM:TO, e.g. --opt-schedule beta2=0.95:0.99`);
  }
  return { key: m[1], from, to };
}

export class Guards {
  readonly detectors: Record<'loss' | 'grad_norm', SpikeDetector>;
  readonly recovery: Recovery;
  readonly faults: FaultPlan;
  readonly schedules: OptSchedule[];
  badBatchesLeft = 0;
  spikes = 0;
  skips = 0;
  readonly spikeOptions: SpikeOptions;

  constructor(readonly o: StabilityOptions, readonly steps: number) {
    // The relative-jump test suits the loss; a gradient norm legitimately doubles for a step or
    // two and trends upward, so by default it only gets the z test (defaultSpikeOptions).
    const opts = (metric: string): SpikeOptions => ({
      ...defaultSpikeOptions(metric),
      ...(o.spikeWindow !== undefined ? { window: o.spikeWindow } : {}),
      ...(o.spikeThreshold !== undefined ? { threshold: o.spikeThreshold } : {}),
      ...(o.spikeJump !== undefined ? { jump: o.spikeJump } : {}),
    });
    this.spikeOptions = opts('loss');
    this.detectors = { loss: new SpikeDetector('loss', opts('loss')), grad_norm: new SpikeDetector('grad_norm', opts('grad_norm')) };
    const d = recoveryDefaults(steps);
    this.recovery = new Recovery({
      onSpike: o.onSpike ?? 'none',
      maxSkips: o.maxSkips ?? 5,
      rollbackSteps: o.rollbackSteps ?? d.rollbackSteps,
      skipBatches: o.skipBatches ?? d.skipBatches,
      maxRollbacks: o.maxRollbacks ?? 5,
    });
    this.faults = new FaultPlan((o.faults ?? []).map(parseFault));
    this.schedules = (o.optSchedules ?? []).map(parseOptSchedule);
  }

  get faultList(): readonly Fault[] {
    return this.faults.faults;
  }

  /** Whether recovery may need the full state of earlier steps (snapshots). */
  get needsSnapshots(): boolean {
    return this.recovery.o.onSpike !== 'none';
  }

  /** Feeds one step's loss and gradient norm to the detectors; returns the spikes found. */
  observe(step: number, loss: number, gradNorm: number): SpikeEvent[] {
    const out: SpikeEvent[] = [];
    const a = this.detectors.loss.observe(step, loss);
    const b = this.detectors.grad_norm.observe(step, gradNorm);
    if (a) out.push(a);
    if (b) out.push(b);
    this.spikes += out.length;
    return out;
  }

  /** Multiplier of the token embedding's gradient at 1-based step `step`. */
  embedScale(step: number): number {
    const a = this.o.embedGradShrink ?? 1;
    const ramp = this.o.embedGradShrinkRamp ?? 0;
    if (a === 1) return 1;
    return ramp > 0 ? a + (1 - a) * Math.min(1, (step - 1) / ramp) : a;
  }

  /** Rounds gradients to the emulated precision; the fraction of exactly-zero coordinates, or null when off. */
  roundGradients(g: Float32Array): number | null {
    const p = this.o.gradPrecision ?? 'fp32';
    return p === 'fp32' ? null : roundGradients(g, p, this.o.lossScale ?? 1);
  }

  /** Scheduled optimizer options at 1-based step `step` (linear from the first to the last step). */
  scheduledOptions(step: number): Record<string, number> {
    const f = this.steps > 1 ? (step - 1) / (this.steps - 1) : 1;
    return Object.fromEntries(this.schedules.map((s) => [s.key, s.from + (s.to - s.from) * f]));
  }

  detectorState(): Record<string, unknown> {
    return { loss: this.detectors.loss.toJSON(), grad_norm: this.detectors.grad_norm.toJSON() };
  }

  restoreDetectors(s: Record<string, unknown>): void {
    this.detectors.loss = SpikeDetector.fromJSON(s.loss);
    this.detectors.grad_norm = SpikeDetector.fromJSON(s.grad_norm);
  }

  state(): GuardState {
    return { detectors: this.detectorState(), recovery: { ...this.recovery.state }, faultsFired: this.faults.toJSON(), badBatchesLeft: this.badBatchesLeft };
  }

  restore(s: GuardState | undefined): void {
    if (!s) return;
    this.restoreDetectors(s.detectors);
    this.recovery.state = { ...s.recovery };
    this.faults.restore(s.faultsFired);
    this.badBatchesLeft = s.badBatchesLeft;
  }
}

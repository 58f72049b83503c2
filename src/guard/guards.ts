/**
 * What the trainer does to every step's gradient and optimizer on its own, with no decision
 * involved (docs/stability.md#how-it-works): fault injection (fire drills), the embedding-gradient shrink,
 * emulated gradient precision and β/ε schedules. Spike detection and recovery are the
 * controller's (src/control). Its state goes into checkpoints.
 */
import { UserError } from '../errors.ts';
import { FaultPlan, parseFault } from './faults.ts';
import { roundGradients, type GradPrecision } from './precision.ts';
import type { OnSpike } from '../control/types.ts';

/** Stability options of `keel train`; every one is optional (off or a documented default). */
export interface StabilityOptions {
  spikeWindow?: number;
  spikeThreshold?: number;
  spikeJump?: number;
  /** A z-test spike must also rise this fraction of the window mean above it (0 = off). */
  spikeMinRise?: number;
  onSpike?: OnSpike;
  maxSkips?: number;
  rollbackSteps?: number;
  skipBatches?: number;
  maxRollbacks?: number;
  /** The recovery ladder's lower_lr rung: LR cuts before stopping (src/control/ladder.ts). */
  maxLrCuts?: number;
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
  /** LAWA: average of the k latest snapshots taken every lawaEvery steps. */
  lawaK?: number;
  lawaEvery?: number;
  /** EMA of the weights with this β (0 / undefined = off), optionally with β warm-up. */
  ema?: number;
  emaWarmup?: boolean;
  /** Per-tensor Adam-instability diagnostics every n steps (0 = off; src/monitor/diagnostics.ts). */
  diagEvery?: number;
}

export interface GuardState {
  /** [fault index, attempt it last fired in] (older checkpoints: bare indices). */
  faultsFired: ([number, number] | number)[];
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
  readonly faults: FaultPlan;
  readonly schedules: OptSchedule[];
  badBatchesLeft = 0;

  constructor(
    readonly o: StabilityOptions,
    readonly steps: number,
  ) {
    this.faults = new FaultPlan((o.faults ?? []).map(parseFault));
    this.schedules = (o.optSchedules ?? []).map(parseOptSchedule);
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

  state(): GuardState {
    return { faultsFired: this.faults.toJSON(), badBatchesLeft: this.badBatchesLeft };
  }

  restore(s: GuardState | undefined): void {
    if (!s) return;
    this.faults.restore(s.faultsFired);
    this.badBatchesLeft = s.badBatchesLeft;
  }
}

/**
 * In-memory snapshots of the full training state for PaLM-style rollback: parameters, optimizer
 * state, step, tokens and data cursor (the controller keeps its own state per restore point). A ring of
 * preallocated buffers taken every `every` steps, deep enough to reach `reach` steps back, so a
 * rollback never needs a checkpoint newer than the spike.
 */
export interface TrainingState {
  step: number;
  tokens: number;
  cursor: number;
  optT: number;
}

interface Slot extends TrainingState {
  params: Float32Array;
  slots: Record<string, Float32Array>;
  used: boolean;
}

/** Snapshots a ring taken every ⌊reach/2⌋ steps holds (src/train/restore.ts); memory estimates use it too. */
export function snapshotDepth(reach: number): number {
  return Math.ceil(reach / Math.max(1, Math.floor(reach / 2))) + 2;
}

export class SnapshotRing {
  private readonly ring: Slot[];
  private next = 0;

  constructor(
    readonly every: number,
    reach: number,
    private readonly n: number,
    private readonly slotSizes: Record<string, number>,
  ) {
    const depth = Math.ceil(reach / every) + 2;
    this.ring = Array.from({ length: depth }, () => ({
      step: 0,
      tokens: 0,
      cursor: 0,
      optT: 0,
      used: false,
      params: new Float32Array(0),
      slots: {},
    }));
  }

  /** Bytes held when full (each snapshot is allocated on first use). */
  get bytesWhenFull(): number {
    const per = 4 * (this.n + Object.values(this.slotSizes).reduce((a, b) => a + b, 0));
    return per * this.ring.length;
  }

  due(step: number): boolean {
    return step % this.every === 0;
  }

  /** Takes a snapshot; returns the step of the one it overwrote (null when the slot was free). */
  take(s: TrainingState, params: Float32Array, slots: Record<string, Float32Array>): number | null {
    const slot = this.ring[this.next];
    const evicted = slot.used ? slot.step : null;
    this.next = (this.next + 1) % this.ring.length;
    if (slot.params.length !== params.length) slot.params = new Float32Array(params.length);
    slot.params.set(params);
    for (const [k, buf] of Object.entries(slots)) {
      if (slot.slots[k]?.length !== buf.length) slot.slots[k] = new Float32Array(buf.length);
      slot.slots[k].set(buf);
    }
    Object.assign(slot, { step: s.step, tokens: s.tokens, cursor: s.cursor, optT: s.optT, used: true });
    return evicted;
  }

  /** Steps held, ascending. */
  steps(): number[] {
    return this.ring
      .filter((s) => s.used)
      .map((s) => s.step)
      .sort((a, b) => a - b);
  }

  /** The snapshot of exactly `step`, or null. */
  at(step: number): Readonly<Slot> | null {
    return this.ring.find((s) => s.used && s.step === step) ?? null;
  }

  /** Forgets snapshots newer than `step` (after a rollback they describe an abandoned future). */
  dropAfter(step: number): void {
    for (const s of this.ring) if (s.used && s.step > step) s.used = false;
  }
}

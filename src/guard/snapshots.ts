/**
 * In-memory snapshots of the full training state for PaLM-style rollback: parameters, optimizer
 * state, step, tokens and data cursor, plus any small JSON state (spike detectors). A ring of
 * preallocated buffers taken every `every` steps, deep enough to reach `reach` steps back, so a
 * rollback never needs a checkpoint newer than the spike.
 */
export interface TrainingState {
  step: number;
  tokens: number;
  cursor: number;
  optT: number;
  extra: unknown;
}

interface Slot extends TrainingState {
  params: Float32Array;
  slots: Record<string, Float32Array>;
  used: boolean;
}

export class SnapshotRing {
  private readonly ring: Slot[];
  private next = 0;

  constructor(readonly every: number, reach: number, private readonly n: number, private readonly slotSizes: Record<string, number>) {
    const depth = Math.ceil(reach / every) + 2;
    this.ring = Array.from({ length: depth }, () => ({
      step: 0, tokens: 0, cursor: 0, optT: 0, extra: null, used: false,
      params: new Float32Array(0), slots: {},
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

  take(s: TrainingState, params: Float32Array, slots: Record<string, Float32Array>): void {
    const slot = this.ring[this.next];
    this.next = (this.next + 1) % this.ring.length;
    if (slot.params.length !== params.length) slot.params = new Float32Array(params.length);
    slot.params.set(params);
    for (const [k, buf] of Object.entries(slots)) {
      if (slot.slots[k]?.length !== buf.length) slot.slots[k] = new Float32Array(buf.length);
      slot.slots[k].set(buf);
    }
    Object.assign(slot, { step: s.step, tokens: s.tokens, cursor: s.cursor, optT: s.optT, extra: structuredClone(s.extra), used: true });
  }

  /** The newest snapshot at or before `step`, or null. */
  atOrBefore(step: number): Readonly<Slot> | null {
    let best: Slot | null = null;
    for (const s of this.ring) if (s.used && s.step <= step && (!best || s.step > best.step)) best = s;
    return best;
  }

  /** The oldest snapshot before `step`, or null (a fallback when none is old enough). */
  oldestBefore(step: number): Readonly<Slot> | null {
    let best: Slot | null = null;
    for (const s of this.ring) if (s.used && s.step < step && (!best || s.step < best.step)) best = s;
    return best;
  }

  /** Forgets snapshots newer than `step` (after a rollback they describe an abandoned future). */
  dropAfter(step: number): void {
    for (const s of this.ring) if (s.used && s.step > step) s.used = false;
  }
}

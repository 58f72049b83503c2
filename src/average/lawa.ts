/**
 * LAWA (Kaddour 2022; docs/averaging.md#lawa): the uniform average of the k latest snapshots of the
 * weights, taken every ν steps. A side product: training continues from its own weights.
 * The k snapshots live in a ring (k copies of the parameters; for Keel's models a few MB each),
 * which is also what a checkpoint saves so the average continues exactly after --resume.
 */
export class Lawa {
  private readonly ring: Float32Array[];
  private readonly steps: number[];
  /** Snapshots taken so far (the ring holds the last min(taken, k)). */
  taken = 0;

  constructor(
    readonly n: number,
    readonly k: number,
    readonly every: number,
  ) {
    this.ring = Array.from({ length: k }, () => new Float32Array(n));
    this.steps = Array<number>(k).fill(-1);
  }

  /** Takes a snapshot when `step` is a multiple of ν. */
  observe(step: number, params: Float32Array): void {
    if (step % this.every !== 0) return;
    const slot = this.taken % this.k;
    this.ring[slot].set(params);
    this.steps[slot] = step;
    this.taken += 1;
  }

  get count(): number {
    return Math.min(this.taken, this.k);
  }

  /** Steps of the snapshots averaged, oldest first. */
  get window(): number[] {
    return this.steps.filter((s) => s >= 0).sort((a, b) => a - b);
  }

  /** Writes the average into `out` (float64 sums, rounded once); false when there is no snapshot yet. */
  average(out: Float32Array): boolean {
    const c = this.count;
    if (c === 0) return false;
    const held = this.ring.slice(0, c);
    for (let i = 0; i < this.n; i++) {
      let s = 0;
      for (const r of held) s += r[i];
      out[i] = s / c;
    }
    return true;
  }

  /** The ring as named tensors (`snapshot.<slot>`) plus metadata, for a checkpoint. */
  stateTensors(): { tensors: { name: string; shape: number[]; data: Float32Array }[]; metadata: Record<string, string> } {
    const used = this.count;
    return {
      tensors: this.ring.slice(0, used).map((data, i) => ({ name: `snapshot.${i}`, shape: [this.n], data })),
      metadata: { k: String(this.k), every: String(this.every), taken: String(this.taken), steps: JSON.stringify(this.steps) },
    };
  }

  restore(tensors: Map<string, Float32Array>, metadata: Record<string, string>): void {
    this.taken = Number(metadata.taken);
    const steps = JSON.parse(metadata.steps) as number[];
    for (let i = 0; i < this.count; i++) {
      this.ring[i].set(tensors.get(`snapshot.${i}`)!);
      this.steps[i] = steps[i];
    }
  }
}

/**
 * The states a run can roll back to: in-memory snapshots (src/guard/snapshots.ts, taken every
 * R/2 steps when recovery is on) and the checkpoints on disk. Which one to restore is the
 * controller's choice (src/control/controller.ts); this module keeps the controller's list of
 * restore points equal to what really exists, and restores the one it names.
 */
import fs from 'node:fs';
import type { Controller, RestorePoint } from '../control/controller.ts';
import { SnapshotRing } from '../guard/snapshots.ts';
import { loadStateTensors } from '../optim/state.ts';
import type { Optimizer, OptState } from '../optim/types.ts';
import { checkpointDir, listCheckpoints, loadCheckpoint } from './checkpoints.ts';

/** What a restore gives back besides the weights and optimizer state it writes in place. */
export interface Restored {
  step: number;
  tokens: number;
  cursor: number;
  from: 'memory' | 'checkpoint';
  /** Checkpoint steps deleted because they belong to the abandoned trajectory. */
  dropped: number[];
}

export class RestoreStore {
  readonly ring: SnapshotRing | null;

  /** `record` gets every change told to the controller (control.jsonl: the replay needs them). */
  constructor(
    readonly runDir: string,
    readonly controller: Controller,
    rollbackSteps: number | null,
    params: number,
    slots: Record<string, Float32Array>,
    private readonly record: (message: Record<string, unknown>) => void,
  ) {
    this.ring =
      rollbackSteps === null
        ? null
        : new SnapshotRing(
            Math.max(1, Math.floor(rollbackSteps / 2)),
            rollbackSteps,
            params,
            Object.fromEntries(Object.entries(slots).map(([k, v]) => [k, v.length])),
          );
  }

  /** Before step `step` + 1: a snapshot when one is due. */
  snapshotIfDue(step: number, tokens: number, cursor: number, params: Float32Array, opt: OptState): void {
    if (!this.ring?.due(step)) return;
    this.ring.take({ step, tokens, cursor, optT: opt.t }, params, opt.slots);
    this.add({ step, data: cursor });
    this.sync();
  }

  /** Tells the controller about a state it can roll back to (a snapshot just taken, a checkpoint about to be written). */
  add(p: RestorePoint): void {
    this.controller.addRestorePoint(p);
    this.record({ t: 'restore_point', ...p });
  }

  /** Tells the controller which of its restore points are gone (evicted snapshots, pruned checkpoints). */
  sync(): void {
    const held = new Set([...(this.ring?.steps() ?? []), ...listCheckpoints(this.runDir)]);
    for (const p of this.controller.restorePoints) {
      if (held.has(p.step)) continue;
      this.controller.dropRestorePoint(p.step);
      this.record({ t: 'drop_point', step: p.step });
    }
  }

  /** Writes the state after `step` into params and the optimizer state. */
  restore(step: number, params: Float32Array, optimizer: Optimizer, opt: OptState): Restored {
    const snap = this.ring?.at(step) ?? null;
    let r: Omit<Restored, 'dropped'>;
    if (snap) {
      params.set(snap.params);
      for (const [k, buf] of Object.entries(opt.slots)) buf.set(snap.slots[k]);
      opt.t = snap.optT;
      r = { step, tokens: snap.tokens, cursor: snap.cursor, from: 'memory' };
    } else {
      const c = loadCheckpoint(checkpointDir(this.runDir, step));
      params.set(c.params);
      loadStateTensors(optimizer, opt, c.optimizer.tensors, c.optimizer.metadata, c.optimizer.path);
      r = { step, tokens: c.state.tokens, cursor: c.state.cursor, from: 'checkpoint' };
    }
    this.ring?.dropAfter(step);
    const dropped = listCheckpoints(this.runDir).filter((s) => s > step);
    for (const s of dropped) fs.rmSync(checkpointDir(this.runDir, s), { recursive: true, force: true });
    this.sync();
    return { ...r, dropped };
  }
}

/**
 * Optimizer state ↔ named tensors (for optimizer.safetensors): slot `s` of tensor `name` is
 * stored as `name.s` with its per-tensor shape (e.g. `transformer.h.0.mlp.c_fc.weight.exp_avg`,
 * or Adafactor's `….exp_avg_sq_row` of shape [rows]); the step count goes in the metadata.
 */
import { UserError } from '../errors.ts';
import type { TensorToWrite } from '../io/safetensors.ts';
import { slotOffsets } from './base.ts';
import type { Optimizer, OptState } from './types.ts';

export function stateTensors(opt: Optimizer, state: OptState): TensorToWrite[] {
  const out: TensorToWrite[] = [];
  for (const slot of opt.slots(state.tensors)) {
    const offs = slotOffsets(slot);
    const buf = state.slots[slot.name];
    slot.shapes.forEach((shape, i) => {
      if (!shape) return;
      const n = shape.reduce((a, b) => a * b, 1);
      out.push({ name: `${state.tensors[i].name}.${slot.name}`, shape, data: buf.subarray(offs[i], offs[i] + n) });
    });
  }
  return out;
}

/** Metadata that identifies the state: which optimizer, its options, the step count. */
export function stateMetadata(opt: Optimizer, state: OptState): Record<string, string> {
  return { optimizer: opt.name, options: JSON.stringify(opt.options), t: String(state.t) };
}

/**
 * Fills `state` (fresh from opt.init) from tensors read back; every expected tensor must be
 * there with its shape, and the file must come from the same optimizer.
 */
export function loadStateTensors(opt: Optimizer, state: OptState, tensors: Map<string, Float32Array>, metadata: Record<string, string>, source: string): void {
  const saved = metadata.optimizer ?? 'adamw';
  if (saved !== opt.name) {
    throw new UserError(`${source} holds ${saved} state but the optimizer is ${opt.name}: resume with --optimizer ${saved}`);
  }
  const t = Number(metadata.t);
  if (!Number.isInteger(t) || t < 0) throw new UserError(`${source}: metadata t (the step count) is missing or invalid`);
  for (const slot of opt.slots(state.tensors)) {
    const offs = slotOffsets(slot);
    const buf = state.slots[slot.name];
    slot.shapes.forEach((shape, i) => {
      if (!shape) return;
      const name = `${state.tensors[i].name}.${slot.name}`;
      const data = tensors.get(name);
      const n = shape.reduce((a, b) => a * b, 1);
      if (!data) throw new UserError(`${source} has no tensor "${name}" (saved with other optimizer options?)`);
      if (data.length !== n) throw new UserError(`${source}: "${name}" has ${data.length} elements, expected ${n}`);
      buf.set(data, offs[i]);
    });
  }
  state.t = t;
}

/** Bytes of optimizer state (all slots). */
export function stateBytes(state: OptState): number {
  return Object.values(state.slots).reduce((a, b) => a + b.byteLength, 0);
}

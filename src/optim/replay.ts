/**
 * Replays a recorded gradient trace through one optimizer, so its trajectory can be compared
 * with another framework's: `param` is the start, `grads[i]` the gradient of step i + 1.
 */
import type { Optimizer, TensorSpec } from './types.ts';

export function replay(opt: Optimizer, param: Float32Array, shape: readonly number[], grads: readonly Float32Array[]): Float32Array[] {
  const params = Float32Array.from(param);
  const tensor: TensorSpec = { name: 'param', shape, kind: 'weight', offset: 0, size: params.length };
  const state = opt.init(params, [tensor]);
  return grads.map((g) => {
    opt.step(params, g, state);
    return Float32Array.from(params);
  });
}

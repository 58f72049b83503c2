/** Plain TypeScript twins of the native kernels: slow, obvious, float64-capable. */
import type { Floats, Kernels } from '../types.ts';
import { matmulBackward, matmulForward } from './matmul.ts';
import * as ops from './ops.ts';
import { attentionBackward, attentionForward } from './attention.ts';
import { adafactor, adam, lerp, momentum, scale, sumSquares, triad } from './optim.ts';
import { sqDiffCopy } from './reduce.ts';

export function referenceKernels<F extends Floats = Float32Array>(): Kernels<F> {
  return {
    matmulForward,
    matmulBackward,
    layernormForward: ops.layernormForward,
    layernormBackward: ops.layernormBackward,
    attentionForward,
    attentionBackward,
    geluForward: ops.geluForward,
    geluBackward: ops.geluBackward,
    residualForward: ops.residualForward,
    accumulate: ops.accumulate,
    encoderForward: ops.encoderForward,
    encoderBackward: ops.encoderBackward,
    crossEntropy: ops.crossEntropy,
    adam,
    momentum,
    adafactor,
    triad,
    lerp,
    sumSquares,
    scale,
    sqDiffCopy,
  } as Kernels<F>;
}

/** Loads the C++ addon (built by node-gyp during `npm ci`) and exposes it as Kernels. */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import type { Kernels } from './types.ts';

export interface NativeAddon extends Kernels<Float32Array> {
  /** Sets (when given) and returns the number of kernel threads. */
  threads(n?: number): number;
  /** Name of the matmul micro-kernel selected at run time ("avx2-fma" or "portable"). */
  matmulKernel(): string;
  /**
   * Chooses the matmul micro-kernel ("auto" picks the best this CPU supports) and returns the
   * name now in effect; throws for "avx2-fma" on a CPU without AVX2/FMA.
   */
  /** Switches ops/attention/optim kernels between AVX2 and portable bodies; returns what is in effect. */
  opsSetSimd(on?: boolean): boolean;
  matmulSetKernel(name: 'auto' | 'avx2-fma' | 'portable'): string;
}

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
let addon: NativeAddon | undefined;

export function nativeKernels(): NativeAddon {
  if (!addon) {
    const require = createRequire(import.meta.url);
    const load = require('node-gyp-build') as (dir: string) => NativeAddon;
    try {
      addon = load(root);
    } catch (err) {
      throw new Error(`Keel's native addon is not built (${(err as Error).message.split('\n')[0]}). Run \`npm ci\` or \`npm run build:native\`.`);
    }
  }
  return addon;
}

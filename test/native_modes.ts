// The native addon in each of its modes (AVX2 or portable bodies × 1 or 2 threads), for the
// kernel tests; the addon's settings are restored after every use and when the file ends.
import { after } from 'node:test';
import { nativeKernels } from '../src/kernels/native.ts';

export const nk = nativeKernels();
const simdBefore = nk.opsSetSimd();
const threadsBefore = nk.threads();
after(() => {
  nk.opsSetSimd(simdBefore);
  nk.threads(threadsBefore);
});
export const simdModes = nk.opsSetSimd(true) ? [true, false] : [false];
nk.opsSetSimd(simdBefore);

/** Runs fn in every native mode (SIMD × threads), restoring the addon's settings after. */
export function eachMode(fn: (mode: string) => void): void {
  try {
    for (const simd of simdModes) {
      for (const threads of [1, 2]) {
        nk.opsSetSimd(simd);
        nk.threads(threads);
        fn(`${simd ? 'avx2' : 'portable'}/${threads}t`);
      }
    }
  } finally {
    nk.opsSetSimd(simdBefore);
    nk.threads(threadsBefore);
  }
}

// The native addon in each of its modes (every ops ISA level this process has — avx512f,
// avx2, portable — × 1 or 2 threads), for the kernel tests; the addon's settings are
// restored after every use and when the file ends. Levels above the process's ISA path are
// skipped (printed once).
import { after } from 'node:test';
import { nativeKernels } from '../src/kernels/native.ts';

export const nk = nativeKernels();
const isaBefore = nk.kernelsSetIsa();
const threadsBefore = nk.threads();
after(() => {
  nk.kernelsSetIsa(isaBefore);
  nk.threads(threadsBefore);
});
const LEVELS = ['avx512f', 'avx2', 'portable'] as const;
export const isaModes = LEVELS.filter((l) => nk.isaSupported().includes(l));
const missing = LEVELS.filter((l) => !isaModes.includes(l));
if (missing.length) console.log(`# kernel modes skipped: ${missing.join(', ')} (this process runs the ${nk.isa()} path)`);
/** Whether an AVX2-or-better mode exists (the SIMD bodies run at all). */
export const simdModes = isaModes.includes('avx2') ? [true, false] : [false];

/** Runs fn in every native mode (ops ISA level × threads), restoring the addon's settings after. */
export function eachMode(fn: (mode: string) => void): void {
  try {
    for (const level of isaModes) {
      for (const threads of [1, 2]) {
        nk.kernelsSetIsa(level);
        nk.threads(threads);
        fn(`${level}/${threads}t`);
      }
    }
  } finally {
    nk.kernelsSetIsa(isaBefore);
    nk.threads(threadsBefore);
  }
}

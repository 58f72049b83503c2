/** Loads the C++ addon (built by node-gyp during `npm ci`) and exposes it as Kernels. */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import type { DType } from '../io/safetensors.ts';
import type { Kernels, MatmulPrecision } from './types.ts';

/** Instruction-set paths, best first (native/isa.h). */
type IsaPath = 'avx512bf16' | 'avx512f' | 'avx2' | 'portable';
/** Names matmulSetKernel accepts; "avx512bf16" = avx512f for fp32 plus native bf16 products. */
type MatmulKernelName = 'auto' | 'avx512bf16' | 'avx512f' | 'avx2-fma' | 'portable';

export interface NativeAddon extends Kernels<Float32Array> {
  /** Sets (when given) and returns the number of kernel threads. */
  threads(n?: number): number;
  /** The ISA path this process runs: the CPU's best, or lower when KEEL_ISA says so. */
  isa(): IsaPath;
  /** The paths this process may use (isa() and every one below it), best first. */
  isaSupported(): IsaPath[];
  /**
   * Name of the matmul micro-kernel serving a precision (default fp32): "avx512f",
   * "avx2-fma", "portable", "avx512bf16" or "<fp32 kernel>/bf16-emulated".
   */
  matmulKernel(precision?: MatmulPrecision): string;
  /**
   * Chooses the matmul micro-kernel ("auto" picks the best this process's ISA path allows) and
   * returns the name now in effect; throws for a kernel above isa().
   */
  matmulSetKernel(name: MatmulKernelName): string;
  /** Measured peak GFLOP/s (pool threads) of the instruction the kernel for `precision` uses. */
  matmulPeakGflops(precision?: MatmulPrecision): number;
  /**
   * One chunk of `keel average` (src/average/stream.ts documents the arithmetic), on a libuv
   * thread: reads m elements of every input at its position, averages them with `weights` / W
   * and writes the m results at out.position, in sub-chunks that fit `scratch`. Rejects with a
   * Node-style fs error (code, errno, syscall) plus `input` (its index, −1 for the output) and
   * `eof` (the input ended early). The descriptors must stay open until it settles.
   */
  averageChunk(task: AverageChunkTask): Promise<void>;
  /**
   * Switches every kernel of native/ops.cc, attention.cc and optim.cc (all but the matmul, which
   * has matmulSetKernel) between SIMD and portable bodies; returns what is in effect.
   */
  kernelsSetSimd(on?: boolean): boolean;
  /**
   * Sets (when given; capped at isa()) and returns the ISA level of those same kernels:
   * "avx512f" (the AVX-512 bodies of attention, LayerNorm and GELU; the rest run AVX2), "avx2" or "portable".
   */
  kernelsSetIsa(level?: IsaPath): 'avx512f' | 'avx2' | 'portable';
}

/** The addon's own names for the two switches (native/ops.cc), older than what they switch. */
interface AddonSwitches {
  opsSetSimd(on?: boolean): boolean;
  opsSetIsa(level?: IsaPath): 'avx512f' | 'avx2' | 'portable';
}

interface AverageChunkTask {
  inputs: { fd: number; position: number }[];
  /** Every input's dtype (they agree). */
  dtype: DType;
  weights: number[];
  W: number;
  m: number;
  out: { fd: number; position: number; dtype: DType };
  scratch: ArrayBuffer;
  /** The scalar bodies even where AVX-512 is present. */
  portable: boolean;
}

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
let addon: NativeAddon | undefined;

export function nativeKernels(): NativeAddon {
  if (!addon) {
    const require = createRequire(import.meta.url);
    const load = require('node-gyp-build') as (dir: string) => Omit<NativeAddon, 'kernelsSetSimd' | 'kernelsSetIsa'> & AddonSwitches;
    try {
      const raw = load(root);
      addon = Object.assign(raw, { kernelsSetSimd: raw.opsSetSimd, kernelsSetIsa: raw.opsSetIsa });
    } catch (err) {
      throw new Error(`Keel's native addon is not built (${(err as Error).message.split('\n')[0]}). Run \`npm ci\` or \`npm run build:native\`.`);
    }
  }
  return addon;
}

/**
 * Weight averaging of safetensors checkpoints, streamed (docs/averaging.md#streaming-average;
 * `keel average`).
 *
 * Inputs are safetensors files, or directories holding `model.safetensors` or a sharded
 * checkpoint (`model.safetensors.index.json` as Hugging Face writes it: `weight_map` maps each
 * tensor to its shard file), in F32, F16, BF16 or F64. Headers are validated and compared up
 * front (names, shapes, dtypes; the first mismatch is named); then each tensor is streamed in
 * chunks of at most `chunkElements` elements, a few chunks in flight at once, each read (positioned
 * reads of every input), averaged and written (a positioned write) by the native addon on one of
 * libuv's threads, through a scratch buffer of about 1 MiB: the memory used is a few MiB, never a
 * whole tensor, let alone a model.
 *
 * Arithmetic, exactly (what the tests reproduce bit for bit): for each element, every input
 * value xᵢ is converted to float64 (exact for all four dtypes), then
 *
 *     m = (w₁·x₁ + w₂·x₂ + … + w_k·x_k) / (w₁ + w₂ + … + w_k)
 *
 * in float64, both sums left to right in input order, the first term taken as is (no 0 + …,
 * so −0 survives) and inputs with wᵢ = 0 left out of the numerator (so their NaNs and
 * infinities do not leak). Multiplying by wᵢ = 1 and dividing by a sum of 1 are exact
 * identities, so whether a kernel skips them changes nothing. m is rounded once to the output
 * dtype, to nearest with ties to even (F16/BF16 directly from the float64 value, without
 * double rounding through float32; see `encodeFloats`); an F64 output is m itself.
 * Why float64 rather than float32 accumulation: every input dtype converts to it exactly; the
 * accumulation error (at most about k·2⁻⁵³ of Σ|wᵢxᵢ|) is far below half a float32 ulp unless
 * the terms cancel, so the one final rounding decides the result; averaging identical
 * F32/F16/BF16 inputs returns them bit for bit (k·x is exact in float64 for k ≤ 2²⁹, so
 * k·x/k = x, which pre-normalized weights such as 1/3 would break); and F64 inputs keep their
 * precision (their mean is then within an ulp or so: float64 is all there is).
 *
 * The parts: inputs.ts (open and check), plan.ts (headers, index), pipeline.ts (the chunks
 * through the addon), writers.ts (atomic output).
 *
 * Kernels (native/average.cc): one body per (input dtype, output dtype), AVX-512 where the CPU
 * has it, else scalar (`portable: true` forces the scalar ones): the same operations in the same
 * order, hence the same bits, and F16/BF16 rounded as `encodeFloats` (src/io/safetensors.ts)
 * rounds them.
 *
 * Output mirrors the first input: a single file for single-file inputs; for a sharded first
 * input, a directory with the same shard file names, the same tensor → shard map, each shard's
 * `__metadata__` and an index whose `metadata.total_size` is the new data size. Tensors are
 * stored in the first input's order. The output is written under a temporary name next to
 * OUT (a file, or a directory for shards), fsynced and renamed into place: on any error
 * nothing is left at OUT (an existing OUT is replaced only at the very end).
 */
import { UserError } from '../errors.ts';
import type { SafetensorsReader } from '../io/safetensors.ts';
import { checkCompatible, openInput } from './inputs.ts';
import { Averager, numelOf } from './pipeline.ts';
import { checkOutPath, OUTPUT_DTYPES, planOutput, type OutputDtype } from './plan.ts';
import { writeSharded, writeSingle } from './writers.ts';

/**
 * Default chunk: 1 Mi elements, the unit handed to the addon (it reads, averages and writes it
 * in cache-sized sub-chunks); large enough that scheduling costs nothing next to the copying.
 */
export const DEFAULT_CHUNK_ELEMENTS = 1 << 20;

export interface AverageOptions {
  /** One non-negative weight per input with a positive sum (default: all 1, a uniform mean). */
  weights?: readonly number[];
  /** Output dtype; `keep` (default) keeps each tensor's input dtype. */
  dtype?: OutputDtype;
  /** Called after each tensor with the number done and the total. */
  progress?: (done: number, total: number) => void;
  /** Elements per read (default 2²⁰); small values exercise chunk boundaries in tests. */
  chunkElements?: number;
  /** fsync the output before the rename (default true; benchmarks compare both). */
  fsync?: boolean;
  /** Use the addon's scalar bodies instead of its AVX-512 ones (tests compare them). */
  portable?: boolean;
}

export interface AverageSummary {
  /** The path written (a file, or the directory of a sharded output). */
  out: string;
  inputs: number;
  tensors: number;
  /** Tensor bytes read from all inputs together. */
  bytes_in: number;
  /** Bytes written: every output file, headers and index included. */
  bytes_out: number;
  seconds: number;
  /** The process's peak resident set size so far, in bytes. */
  peak_rss: number;
  sharded: boolean;
  dtype: OutputDtype;
  weights: number[];
}

/** Averages `inputs` into `out`; see the module comment for the arithmetic and the layout. */
export async function averageCheckpoints(inputs: readonly string[], out: string, opts: AverageOptions = {}): Promise<AverageSummary> {
  const t0 = performance.now();
  const dtype = opts.dtype ?? 'keep';
  if (!OUTPUT_DTYPES.includes(dtype)) throw new UserError(`unknown output dtype ${dtype} (expected ${OUTPUT_DTYPES.join(', ')})`);
  if (inputs.length === 0) throw new UserError('nothing to average: give at least one input');
  const weights = checkWeights(opts.weights, inputs.length);
  const chunk = opts.chunkElements ?? DEFAULT_CHUNK_ELEMENTS;
  if (!Number.isSafeInteger(chunk) || chunk < 1) throw new RangeError(`chunkElements must be a positive integer, got ${chunk}`);
  const opened: SafetensorsReader[] = [];
  try {
    const sources = inputs.map((spec, i) => ({ ...openInput(spec, opened), position: i }));
    checkCompatible(sources);
    const plan = planOutput(sources[0], dtype);
    const target = checkOutPath(out, plan.sharded, sources);
    const total = sources[0].order.length;
    // (reduce, not Math.max(...xs): a checkpoint may hold more tensors than a call has arguments)
    const largest = sources[0].order.reduce((a, n) => Math.max(a, numelOf(sources[0].tensors.get(n)!.info)), 0);
    const work = new Averager(sources, weights, Math.max(1, Math.min(chunk, largest)), opts, (done) => opts.progress?.(done, total));
    if (plan.sharded) await writeSharded(target, plan, work);
    else await writeSingle(target, plan.files[0], work);
    return {
      out: target,
      inputs: inputs.length,
      tensors: total,
      bytes_in: work.bytesIn,
      bytes_out: work.bytesOut,
      seconds: (performance.now() - t0) / 1000,
      peak_rss: process.resourceUsage().maxRSS * 1024,
      sharded: plan.sharded,
      dtype,
      weights,
    };
  } finally {
    for (const r of opened) r.close();
  }
}

function checkWeights(weights: readonly number[] | undefined, k: number): number[] {
  if (weights === undefined) return new Array<number>(k).fill(1);
  if (weights.length !== k) throw new UserError(`${weights.length} weights for ${k} inputs: give one weight per input`);
  weights.forEach((w, i) => {
    if (typeof w !== 'number' || !Number.isFinite(w)) throw new UserError(`weight ${i + 1} is ${w}: weights must be finite numbers`);
    if (w < 0) throw new UserError(`weight ${i + 1} is ${w}: weights must not be negative`);
  });
  const sum = weights.reduce((a, b) => a + b, 0);
  if (!(sum > 0) || !Number.isFinite(sum)) throw new UserError(`the weights sum to ${sum}: the sum must be positive and finite`);
  return [...weights];
}

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
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { UserError } from '../errors.ts';
import { fsyncDir, writeAll } from '../io/atomic.ts';
import {
  DTYPE_SIZE,
  encodeHeader,
  endedEarly,
  fileError,
  openSafetensors,
  type DType,
  type EncodedHeader,
  type SafetensorsReader,
  type TensorInfo,
} from '../io/safetensors.ts';
import { nativeKernels } from '../kernels/native.ts';
import { checkpointDir, listCheckpoints } from '../io/run_layout.ts';

export type OutputDtype = 'keep' | 'f32' | 'bf16' | 'f16';
export const OUTPUT_DTYPES: readonly OutputDtype[] = ['keep', 'f32', 'bf16', 'f16'];

export const INDEX_FILE = 'model.safetensors.index.json';
const MODEL_FILE = 'model.safetensors';

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
    const work = new Averager(sources, weights, Math.max(1, Math.min(chunk, largest)), opts, (done) =>
      opts.progress?.(done, total),
    );
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

// ---------------------------------------------------------------------------------------------
// Inputs

interface Located {
  reader: SafetensorsReader;
  info: TensorInfo;
}

interface Source {
  /** As given, for messages. */
  spec: string;
  /** Index of the input (1-based in messages). */
  position: number;
  /** Set for a sharded checkpoint. */
  index?: { file: string; metadata: Record<string, unknown>; weightMap: Record<string, string> };
  /** Shard file names (sorted) and their readers; one unnamed entry for a single file. */
  shards: { name: string; reader: SafetensorsReader }[];
  tensors: Map<string, Located>;
  /** Tensor names in file order (shard by shard). */
  order: string[];
  /** Every path the input consists of (files, and its directory if one was given). */
  paths: string[];
}

const label = (s: Source) => `input ${s.position + 1} (${s.spec})`;

function openInput(spec: string, opened: SafetensorsReader[]): Source {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(spec);
  } catch {
    throw new UserError(`input ${spec} does not exist`);
  }
  let file = spec;
  const paths = [path.resolve(spec)];
  if (stat.isDirectory()) {
    const index = path.join(spec, INDEX_FILE);
    const single = path.join(spec, MODEL_FILE);
    if (fs.existsSync(index)) file = index;
    else if (fs.existsSync(single)) file = single;
    else throw new UserError(`input ${spec} is a directory without ${MODEL_FILE} or ${INDEX_FILE}`);
    paths.push(path.resolve(file));
  }
  return file.endsWith('.index.json') ? openSharded(spec, file, opened, paths) : openSingle(spec, file, opened, paths);
}

function openSingle(spec: string, file: string, opened: SafetensorsReader[], paths: string[]): Source {
  const reader = openSafetensors(file);
  opened.push(reader);
  const tensors = new Map(reader.infos.map((info) => [info.name, { reader, info }]));
  return { spec, position: 0, shards: [{ name: '', reader }], tensors, order: reader.infos.map((t) => t.name), paths };
}

function openSharded(spec: string, indexFile: string, opened: SafetensorsReader[], paths: string[]): Source {
  let index: unknown;
  try {
    index = JSON.parse(fs.readFileSync(indexFile, 'utf8'));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UserError(`${indexFile}: ${code ? `cannot read (${code})` : 'not valid JSON (truncated?)'}`);
  }
  const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isObject(index) || !isObject(index.weight_map)) throw new UserError(`${indexFile}: no "weight_map" object (not a sharded checkpoint index?)`);
  if (index.metadata !== undefined && index.metadata !== null && !isObject(index.metadata)) {
    throw new UserError(`${indexFile}: "metadata" must be an object`);
  }
  const weightMap = index.weight_map as Record<string, unknown>;
  const names = new Set<string>();
  for (const [tensor, shard] of Object.entries(weightMap)) {
    if (typeof shard !== 'string') throw new UserError(`${indexFile}: weight_map["${tensor}"] must be a file name, got ${JSON.stringify(shard)}`);
    if (shard === '' || shard === '.' || shard === '..' || shard !== path.basename(shard) || shard.includes('\\')) {
      throw new UserError(`${indexFile}: shard ${JSON.stringify(shard)} must be a plain file name next to the index`);
    }
    names.add(shard);
  }
  const dir = path.dirname(indexFile);
  const shards = [...names].sort().map((name) => {
    const reader = openSafetensors(path.join(dir, name));
    opened.push(reader);
    paths.push(path.resolve(dir, name));
    return { name, reader };
  });
  const tensors = new Map<string, Located>();
  const order: string[] = [];
  for (const { name, reader } of shards) {
    for (const info of reader.infos) {
      const listed = Object.hasOwn(weightMap, info.name) ? weightMap[info.name] : undefined;
      if (listed !== name) {
        const where = listed === undefined ? 'does not list it' : `puts it in ${listed}`;
        throw new UserError(`${indexFile}: shard ${name} holds tensor "${info.name}" but the index ${where}`);
      }
      tensors.set(info.name, { reader, info });
      order.push(info.name);
    }
  }
  for (const [tensor, shard] of Object.entries(weightMap)) {
    if (!tensors.has(tensor)) throw new UserError(`${indexFile}: tensor "${tensor}" is listed in ${shard as string}, which does not hold it`);
  }
  const metadata = (index.metadata ?? {}) as Record<string, unknown>;
  return { spec, position: 0, index: { file: indexFile, metadata, weightMap: weightMap as Record<string, string> }, shards, tensors, order, paths };
}

/** Same names, shapes and dtypes in every input; the first difference is named. */
function checkCompatible(sources: Source[]): void {
  const first = sources[0];
  for (const s of sources.slice(1)) {
    for (const name of first.order) {
      const a = first.tensors.get(name)!.info;
      const b = s.tensors.get(name)?.info;
      if (!b) throw new UserError(`tensor "${name}" is in ${label(first)} but not in ${label(s)}`);
      if (a.shape.length !== b.shape.length || a.shape.some((d, j) => d !== b.shape[j])) {
        throw new UserError(`tensor "${name}" has shape [${a.shape}] in ${label(first)} but [${b.shape}] in ${label(s)}`);
      }
      if (a.dtype !== b.dtype) throw new UserError(`tensor "${name}" is ${a.dtype} in ${label(first)} but ${b.dtype} in ${label(s)}`);
    }
    const extra = s.order.find((n) => !first.tensors.has(n));
    if (extra !== undefined) throw new UserError(`tensor "${extra}" is in ${label(s)} but not in ${label(first)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Output plan

interface OutFile {
  /** Shard file name; '' for a single-file output. */
  name: string;
  header: EncodedHeader;
}

interface Plan {
  sharded: boolean;
  files: OutFile[];
  /** Sharded: the index to write. */
  index?: { metadata: Record<string, unknown>; weight_map: Record<string, string> };
}

const OUT_DTYPE: Record<Exclude<OutputDtype, 'keep'>, DType> = { f32: 'F32', bf16: 'BF16', f16: 'F16' };

function planOutput(first: Source, dtype: OutputDtype): Plan {
  const files = first.shards.map(({ name, reader }) => {
    const entries = reader.infos.map((t) => ({ name: t.name, shape: t.shape, dtype: dtype === 'keep' ? t.dtype : OUT_DTYPE[dtype] }));
    const meta = Object.keys(reader.metadata).length > 0 ? reader.metadata : undefined;
    return { name, header: encodeHeader(entries, meta) };
  });
  if (!first.index) return { sharded: false, files };
  const totalSize = files.reduce((a, f) => a + f.header.dataSize, 0);
  return {
    sharded: true,
    files,
    index: { metadata: { ...first.index.metadata, total_size: totalSize }, weight_map: { ...first.index.weightMap } },
  };
}

/** OUT must not be (or contain) an input, and must not exist as the other kind of thing. */
function checkOutPath(out: string, sharded: boolean, sources: Source[]): string {
  const target = path.resolve(out);
  for (const s of sources) {
    for (const p of s.paths) {
      if (p === target || (sharded && p.startsWith(target + path.sep))) {
        throw new UserError(`the output ${out} would overwrite ${label(s)}: choose another path`);
      }
    }
  }
  let stat: fs.Stats | undefined;
  try {
    stat = fs.statSync(target);
  } catch {
    stat = undefined;
  }
  if (stat && sharded && !stat.isDirectory()) {
    throw new UserError(`the output ${out} exists and is not a directory; a sharded input makes a directory of shards`);
  }
  if (stat && !sharded && !stat.isFile()) {
    throw new UserError(`the output ${out} exists and is not a file; a single-file input makes a .safetensors file`);
  }
  return target;
}

// ---------------------------------------------------------------------------------------------
// Streaming

/** One chunk of one output tensor. */
interface Job {
  t: TensorInfo;
  srcs: Located[];
  /** First element of the chunk, and the element count. */
  start: number;
  m: number;
  /** Position of the chunk's bytes in the output file. */
  position: number;
  /** Last chunk of its tensor (progress counts tensors). */
  last: boolean;
}

/**
 * Chunks in flight. Each is read, averaged and written by the addon on one of libuv's threads;
 * one more than the cores keeps every core busy (one chunk's write copies into the page cache
 * while another is read and averaged) and one queued behind them while the main thread, in
 * order, collects a finished one. libuv has 4 threads by default: more would only queue.
 */
const IN_FLIGHT = Math.min(4, os.availableParallelism() + 1);

/**
 * Scratch per chunk in flight: the addon works through its chunk in sub-chunks that fit here
 * (every input's piece and the output piece), small enough to stay in the caches between the
 * read, the mean and the write.
 */
const SCRATCH_BYTES = 2 ** 20;

/** Marks a promise handled now (its rejection is awaited later), so Node does not abort on it. */
function quietly<T>(p: Promise<T>): Promise<T> {
  p.catch(() => {});
  return p;
}

/** What averageChunk rejects with (native/average.cc): a Node-style fs error, and where. */
interface ChunkError extends NodeJS.ErrnoException {
  /** Index into the chunk's inputs, or −1 for the output. */
  input: number;
  /** The input ended before the chunk did. */
  eof: boolean;
}

/**
 * Streams output files chunk by chunk: the addon reads every input's piece of a chunk
 * (positioned reads of the open readers' descriptors), averages it and writes it at its place
 * in the output, on libuv's threads, IN_FLIGHT chunks at a time; the main thread only hands out
 * chunks and collects them in order (progress, errors). Memory: IN_FLIGHT scratch buffers of
 * about SCRATCH_BYTES, whatever the model size.
 */
class Averager {
  bytesIn = 0;
  bytesOut = 0;
  readonly fsync: boolean;
  private done = 0;
  private readonly scratch: ArrayBuffer[];
  private readonly active: number[];
  private readonly activeWeights: number[];
  private readonly weightSum: number;
  private readonly portable: boolean;

  constructor(
    private readonly sources: Source[],
    weights: number[],
    private readonly chunk: number,
    opts: AverageOptions,
    private readonly onTensor: (done: number) => void,
  ) {
    this.fsync = opts.fsync ?? true;
    this.portable = opts.portable ?? false;
    this.active = weights.flatMap((w, i) => (w !== 0 ? [i] : []));
    this.activeWeights = this.active.map((i) => weights[i]);
    this.weightSum = weights.reduce((a, b) => a + b, 0);
    // at least 8 elements of every input and of the output (8 bytes each at most), with room
    // to align each piece: many inputs get a bigger buffer, not a failure
    const bytes = Math.max(SCRATCH_BYTES, 64 * (this.active.length + 2) + 8 * 8 * (this.active.length + 1));
    this.scratch = Array.from({ length: IN_FLIGHT }, () => new ArrayBuffer(bytes));
  }

  /** Writes `file` (header, then every tensor in its order) into the open `fd`. */
  async writeFile(fd: number, file: OutFile): Promise<void> {
    writeAllAt(fd, file.header.bytes, 0);
    this.bytesOut += file.header.bytes.byteLength;
    const jobs = this.jobs(file);
    const running: Promise<void>[] = [];
    try {
      for (let i = 0; i < jobs.length + IN_FLIGHT; i++) {
        // collect chunk i − IN_FLIGHT (in order) before its scratch takes chunk i
        if (i >= IN_FLIGHT) {
          await running[i - IN_FLIGHT];
          if (jobs[i - IN_FLIGHT].last) this.onTensor(++this.done);
        }
        if (i < jobs.length) running.push(quietly(this.run(jobs[i], fd, this.scratch[i % IN_FLIGHT])));
      }
    } finally {
      // On an error, let every chunk in flight end before the caller closes the files.
      await Promise.allSettled(running);
    }
  }

  /** The chunks of every tensor of `file`; an empty tensor is one job with m = 0. */
  private jobs(file: OutFile): Job[] {
    const jobs: Job[] = [];
    const dataStart = file.header.bytes.byteLength;
    for (const t of file.header.tensors) {
      const numel = numelOf(t);
      const srcs = this.active.map((i) => this.sources[i].tensors.get(t.name)!);
      const size = DTYPE_SIZE[t.dtype];
      for (let start = 0; start < numel || (numel === 0 && start === 0); start += this.chunk) {
        const m = Math.min(this.chunk, numel - start);
        jobs.push({ t, srcs, start, m, position: dataStart + t.begin + start * size, last: start + m >= numel });
      }
    }
    return jobs;
  }

  /** One chunk through the addon: the documented arithmetic, read and written in place. */
  private async run(job: Job, fd: number, scratch: ArrayBuffer): Promise<void> {
    const { t, srcs, start, m } = job;
    if (m === 0) return;
    const dtype = srcs[0].info.dtype; // (checkCompatible: the same in every input)
    const size = DTYPE_SIZE[dtype];
    const inputs = srcs.map(({ reader }) => ({ fd: reader.fd, position: reader.position(t.name, start * size, m * size) }));
    this.bytesIn += inputs.length * m * size;
    this.bytesOut += m * DTYPE_SIZE[t.dtype];
    const out = { fd, position: job.position, dtype: t.dtype };
    const task = { inputs, dtype, weights: this.activeWeights, W: this.weightSum, m, out, scratch, portable: this.portable };
    try {
      await nativeKernels().averageChunk(task);
    } catch (e) {
      const err = e as ChunkError;
      if (typeof err?.input !== 'number' || err.input < 0) throw e; // the output's error: the caller words it
      const file = srcs[err.input].reader.file;
      throw err.eof ? endedEarly(file) : fileError(file, err);
    }
  }
}

/** Positioned synchronous write of all of `bytes` (loops over short writes). */
function writeAllAt(fd: number, bytes: Uint8Array, position: number): void {
  for (let done = 0; done < bytes.byteLength; ) done += fs.writeSync(fd, bytes, done, bytes.byteLength - done, position + done);
}

function numelOf(t: { shape: readonly number[] }): number {
  return t.shape.reduce((a, b) => a * b, 1);
}

// ---------------------------------------------------------------------------------------------
// Atomic output

/** A hidden temporary name next to `target` (the convention of io/atomic.ts: isTempName). */
function tempPath(target: string, kind: 'tmp' | 'old'): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.${kind}-${process.pid}-${randomBytes(4).toString('hex')}`);
}

async function writeSingle(target: string, file: OutFile, work: Averager): Promise<void> {
  const parent = path.dirname(target);
  ioCall('create the directory of', target, () => fs.mkdirSync(parent, { recursive: true }));
  const tmp = tempPath(target, 'tmp');
  try {
    await writeOne(tmp, file, work);
    ioCall('write', target, () => fs.renameSync(tmp, target));
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  if (work.fsync) fsyncDir(parent);
}

async function writeSharded(target: string, plan: Plan, work: Averager): Promise<void> {
  const parent = path.dirname(target);
  ioCall('create the directory of', target, () => fs.mkdirSync(parent, { recursive: true }));
  const tmp = tempPath(target, 'tmp');
  ioCall('write', target, () => fs.mkdirSync(tmp));
  try {
    for (const f of plan.files) await writeOne(path.join(tmp, f.name), f, work);
    const index = Buffer.from(JSON.stringify(plan.index, null, 2) + '\n', 'utf8');
    ioCall('write', target, () => {
      const fd = fs.openSync(path.join(tmp, INDEX_FILE), 'wx');
      try {
        writeAll(fd, index);
        if (work.fsync) fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
    });
    work.bytesOut += index.byteLength;
    if (work.fsync) fsyncDir(tmp);
    ioCall('replace', target, () => {
      if (!fs.existsSync(target)) {
        fs.renameSync(tmp, target);
        return;
      }
      const old = tempPath(target, 'old');
      fs.renameSync(target, old);
      fs.renameSync(tmp, target);
      fs.rmSync(old, { recursive: true, force: true });
    });
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  if (work.fsync) fsyncDir(parent);
}

async function writeOne(file: string, plan: OutFile, work: Averager): Promise<void> {
  const fd = ioCall('write', file, () => fs.openSync(file, 'wx'));
  try {
    await ioCallAsync('write', file, async () => {
      await work.writeFile(fd, plan);
      if (work.fsync) fs.fsyncSync(fd);
    });
  } finally {
    fs.closeSync(fd);
  }
}

async function ioCallAsync<T>(op: string, target: string, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    return ioCall(op, target, () => {
      throw e;
    });
  }
}

/** File-system errors the user can act on (disk full, permissions) become one-line UserErrors. */
function ioCall<T>(op: string, target: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException)?.code;
    if (typeof code !== 'string' || e instanceof UserError) throw e;
    const hint: Record<string, string> = {
      ENOSPC: 'the disk is full',
      EDQUOT: 'the disk quota is exceeded',
      EACCES: 'permission denied',
      EPERM: 'permission denied',
      EROFS: 'the file system is read-only',
      ENOTDIR: 'a parent path is not a directory',
      EEXIST: 'it exists',
    };
    throw new UserError(`cannot ${op} ${target}: ${hint[code] ?? (e as Error).message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// LAWA on a Keel run

export interface LawaInputs {
  /** model.safetensors of the chosen checkpoints, newest first (the first's metadata is kept). */
  inputs: string[];
  /** Their steps, newest first. */
  steps: number[];
  /** Default output: RUN_DIR/lawa-<oldest>-<newest>.safetensors. */
  out: string;
}

/** The k latest checkpoints of a Keel run (RUN_DIR/checkpoints/step-N/model.safetensors). */
export function lawaInputs(runDir: string, k: number): LawaInputs {
  if (!Number.isSafeInteger(k) || k < 1) throw new UserError(`--k must be a positive integer, got ${k}`);
  if (!fs.existsSync(runDir) || !fs.statSync(runDir).isDirectory()) throw new UserError(`run directory ${runDir} does not exist`);
  const all = listCheckpoints(runDir);
  if (all.length === 0) throw new UserError(`${runDir} has no checkpoints (expected ${path.join(runDir, 'checkpoints', 'step-N')})`);
  if (k > all.length) {
    throw new UserError(`--k ${k}: ${runDir} has only ${all.length} checkpoint${all.length === 1 ? '' : 's'} (steps ${all.join(', ')})`);
  }
  const steps = all.slice(-k).reverse();
  const inputs = steps.map((s) => path.join(checkpointDir(runDir, s), MODEL_FILE));
  for (const f of inputs) if (!fs.existsSync(f)) throw new UserError(`checkpoint ${path.dirname(f)} is incomplete: ${MODEL_FILE} is missing`);
  return { inputs, steps, out: path.join(runDir, `lawa-${steps[steps.length - 1]}-${steps[0]}.safetensors`) };
}

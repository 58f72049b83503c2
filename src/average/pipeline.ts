/**
 * The streaming core of `keel average` (src/average/stream.ts has the arithmetic): output files
 * written chunk by chunk, each chunk read, averaged and written by the addon (native/average.cc)
 * on libuv's threads.
 */
import fs from 'node:fs';
import os from 'node:os';
import { DTYPE_SIZE, endedEarly, fileError, type TensorInfo } from '../io/safetensors.ts';
import { nativeKernels } from '../kernels/native.ts';
import type { Located, Source } from './inputs.ts';
import type { OutFile } from './plan.ts';

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
export class Averager {
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
    opts: { fsync?: boolean; portable?: boolean },
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

export function numelOf(t: { shape: readonly number[] }): number {
  return t.shape.reduce((a, b) => a * b, 1);
}

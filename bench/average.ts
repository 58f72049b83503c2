/**
 * `keel average` against plain I/O, in one run: three F32 checkpoints of ≥ 500 MB each (a GPT-2
 * medium-like layout: one 50304×1024 embedding, then transformer blocks of 1024×3072, 1024×1024,
 * 1024×4096 and 4096×1024 matrices with their biases and gains, until the size is reached) are
 * created in a temporary directory, then, alternating, each in a fresh child process:
 *
 *   io       read all three inputs tensor by tensor in chunks of the size averaging uses, and
 *            write one output of the same size (header + data) to a temp file, fsync, rename;
 *   average  averageCheckpoints(inputs, out) (fsync on, the default).
 *
 * Reports the best and the median time of each over the repetitions (default 5), the ratio
 * io/average of both (the goal is ≥ 80 %: averaging at 80 % of the speed of the I/O it cannot
 * avoid), GB/s, and the peak RSS of the averaging child (process.resourceUsage().maxRSS).
 * With --no-fsync both skip the fsync (page cache only), which isolates the compute overhead.
 * The files are deleted at the end. Right after creation (fsynced) the inputs sit in the page cache, so
 * reads run at memory speed: the hard case for the ratio (a cold disk would hide the
 * arithmetic behind the reads). The "io" side uses the chunk size averaging uses by default.
 *
 *   node --import tsx bench/average.ts [--mb 512] [--reps 5] [--dir DIR] [--no-fsync] [--json]
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { averageCheckpoints, DEFAULT_CHUNK_ELEMENTS } from '../src/average/stream.ts';
import { writeAll } from '../src/io/atomic.ts';
import { encodeHeader, openSafetensors, type TensorHeaderEntry } from '../src/io/safetensors.ts';
import { median } from '../src/util/stats.ts';
import { opt, flag } from './args.ts';

const fsync = !flag('no-fsync');

// ---------------------------------------------------------------------------------------------
// Child mode: one measurement, printed as JSON.

const args = process.argv.slice(2);
if (args[0] === '--child') {
  const [, mode, dir] = args;
  const inputs = [0, 1, 2].map((i) => path.join(dir, `in${i}.safetensors`));
  const out = path.join(dir, `out-${mode}.safetensors`);
  const t0 = performance.now();
  if (mode === 'average') await averageCheckpoints(inputs, out, { fsync });
  else plainIo(inputs, out);
  const seconds = (performance.now() - t0) / 1000;
  const size = fs.statSync(out).size;
  fs.rmSync(out);
  process.stdout.write(JSON.stringify({ mode, seconds, out_bytes: size, peak_rss: process.resourceUsage().maxRSS * 1024 }) + '\n');
  process.exit(0);
}

/** Reads every tensor of every input in chunks, writes one output of the first's size. */
function plainIo(inputs: string[], out: string): void {
  const readers = inputs.map((f) => openSafetensors(f));
  const first = readers[0];
  const header = encodeHeader(
    first.infos.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape })),
    first.metadata,
  );
  const buf = new Uint8Array(DEFAULT_CHUNK_ELEMENTS * 4);
  const tmp = path.join(path.dirname(out), `.${path.basename(out)}.tmp-${process.pid}`);
  const fd = fs.openSync(tmp, 'wx');
  writeAll(fd, header.bytes);
  for (const t of first.infos) {
    const bytes = t.end - t.begin;
    for (let start = 0; start < bytes; start += buf.byteLength) {
      const chunk = buf.subarray(0, Math.min(buf.byteLength, bytes - start));
      for (const r of readers) r.readInto(t.name, chunk, start);
      writeAll(fd, chunk);
    }
  }
  if (fsync) fs.fsyncSync(fd);
  fs.closeSync(fd);
  fs.renameSync(tmp, out);
  for (const r of readers) r.close();
}

// ---------------------------------------------------------------------------------------------
// Parent: create, measure, clean up.

const MB = Number(opt('mb', '512'));
const reps = Number(opt('reps', '5'));
const json = flag('json');
if (!(MB > 0) || !Number.isInteger(reps) || reps < 1) {
  console.error('bench/average: --mb must be positive and --reps a positive integer');
  process.exit(2);
}

const base = opt('dir', os.tmpdir());
const need = 5 * MB * 1e6 + 1e9; // three inputs, two outputs at once at worst, plus margin
const st = fs.statfsSync(base);
const free = st.bavail * st.bsize;
if (free < Math.max(4e9, need)) {
  console.log(`bench/average: skipped: ${(free / 1e9).toFixed(1)} GB free in ${base}, need ${(Math.max(4e9, need) / 1e9).toFixed(1)} GB`);
  process.exit(0);
}

function layout(bytes: number): TensorHeaderEntry[] {
  const C = 1024;
  const t: TensorHeaderEntry[] = [
    { name: 'wte.weight', dtype: 'F32', shape: [50304, C] },
    { name: 'wpe.weight', dtype: 'F32', shape: [1024, C] },
  ];
  let size = (50304 + 1024) * C * 4;
  for (let l = 0; size < bytes; l++) {
    const block: Array<[string, number[]]> = [
      ['ln_1.weight', [C]],
      ['ln_1.bias', [C]],
      ['attn.c_attn.weight', [C, 3 * C]],
      ['attn.c_attn.bias', [3 * C]],
      ['attn.c_proj.weight', [C, C]],
      ['attn.c_proj.bias', [C]],
      ['ln_2.weight', [C]],
      ['ln_2.bias', [C]],
      ['mlp.c_fc.weight', [C, 4 * C]],
      ['mlp.c_fc.bias', [4 * C]],
      ['mlp.c_proj.weight', [4 * C, C]],
      ['mlp.c_proj.bias', [C]],
    ];
    for (const [name, shape] of block) {
      t.push({ name: `h.${l}.${name}`, dtype: 'F32', shape });
      size += shape.reduce((a, b) => a * b, 1) * 4;
    }
  }
  return t;
}

/** Writes a checkpoint of pseudo-random weights (a per-file pool, read at shifting offsets). */
function createInput(file: string, tensors: TensorHeaderEntry[], seed: number): number {
  const header = encodeHeader(tensors, { format: 'pt' });
  const pool = new Float32Array((1 << 22) + 4096);
  let s = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < pool.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    pool[i] = ((s >>> 0) / 4294967296 - 0.5) * 0.04;
  }
  const fd = fs.openSync(file, 'w');
  writeAll(fd, header.bytes);
  let k = 0;
  for (const t of tensors) {
    let n = t.shape.reduce((a, b) => a * b, 1);
    while (n > 0) {
      const m = Math.min(n, 1 << 22);
      const off = (k++ * 97) % 4096;
      const part = pool.subarray(off, off + m);
      writeAll(fd, new Uint8Array(part.buffer, part.byteOffset, m * 4));
      n -= m;
    }
  }
  // On disk before the first measurement, so the kernel's background writeback of 1.5 GB of
  // new inputs does not run during (and slow down) the early repetitions; they stay cached.
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  return header.bytes.byteLength + header.dataSize;
}

const dir = fs.mkdtempSync(path.join(base, 'keel-bench-average-'));
const cleanup = () => fs.rmSync(dir, { recursive: true, force: true });
process.on('exit', cleanup);
process.on('SIGINT', () => process.exit(130));

const tensors = layout(MB * 1e6);
const tc = performance.now();
const sizes = [0, 1, 2].map((i) => createInput(path.join(dir, `in${i}.safetensors`), tensors, i + 1));
const createS = (performance.now() - tc) / 1000;
if (!json) {
  console.log(
    `bench/average: 3 inputs of ${(sizes[0] / 1e6).toFixed(0)} MB (${tensors.length} tensors, largest ${((50304 * 1024 * 4) / 1e6).toFixed(0)} MB) ` +
      `created in ${createS.toFixed(1)} s in ${dir}; fsync ${fsync ? 'on' : 'off'}; ${os.cpus().length} cores, load ${os.loadavg()[0].toFixed(1)}`,
  );
}

const self = fileURLToPath(import.meta.url);
function child(mode: 'io' | 'average'): { seconds: number; out_bytes: number; peak_rss: number } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', self, '--child', mode, dir, ...(fsync ? [] : ['--no-fsync'])], {
    encoding: 'utf8',
    cwd: path.dirname(path.dirname(self)),
  });
  if (r.status !== 0) throw new Error(`child ${mode} failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

const runs: Record<'io' | 'average', { seconds: number; out_bytes: number; peak_rss: number }[]> = { io: [], average: [] };
for (let r = 0; r < reps; r++) {
  for (const mode of ['io', 'average'] as const) {
    const m = child(mode);
    runs[mode].push(m);
    if (!json) console.log(`  rep ${r + 1} ${mode.padEnd(7)} ${m.seconds.toFixed(2)} s  peak RSS ${(m.peak_rss / 1e6).toFixed(0)} MB`);
  }
}
const best = (xs: { seconds: number }[]) => Math.min(...xs.map((x) => x.seconds));
const medianSeconds = (xs: { seconds: number }[]) => median(xs.map((x) => x.seconds))!;
const io = best(runs.io);
const avg = best(runs.average);
const traffic = sizes.reduce((a, b) => a + b, 0) + runs.average[0].out_bytes;
const result = {
  input_bytes: sizes[0],
  tensors: tensors.length,
  fsync,
  reps,
  io_s: io,
  average_s: avg,
  ratio: io / avg,
  io_median_s: medianSeconds(runs.io),
  average_median_s: medianSeconds(runs.average),
  ratio_median: medianSeconds(runs.io) / medianSeconds(runs.average),
  io_gbps: traffic / io / 1e9,
  average_gbps: traffic / avg / 1e9,
  average_peak_rss: Math.max(...runs.average.map((x) => x.peak_rss)),
  io_peak_rss: Math.max(...runs.io.map((x) => x.peak_rss)),
  load: os.loadavg()[0],
  io_runs: runs.io.map((x) => x.seconds),
  average_runs: runs.average.map((x) => x.seconds),
};
if (json) console.log(JSON.stringify(result));
else {
  console.log(
    `best: io ${io.toFixed(2)} s (${result.io_gbps.toFixed(2)} GB/s)  average ${avg.toFixed(2)} s (${result.average_gbps.toFixed(2)} GB/s)  ` +
      `ratio ${(100 * result.ratio).toFixed(0)}% (goal ≥ 80%)\n` +
      `median: io ${result.io_median_s.toFixed(2)} s  average ${result.average_median_s.toFixed(2)} s  ratio ${(100 * result.ratio_median).toFixed(0)}%\n` +
      `average peak RSS ${(result.average_peak_rss / 1e6).toFixed(0)} MB (io child ${(result.io_peak_rss / 1e6).toFixed(0)} MB: node + tsx alone)`,
  );
}

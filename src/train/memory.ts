/**
 * How much memory a run needs, worked out from the config before anything is allocated, and
 * the refusal when the machine does not have it (`--batch 100000000` or a config with
 * `nEmbd 100000` used to end in a RangeError stack trace or in swapping).
 *
 * Every figure mirrors an allocation in the code it names: the GPT's flat parameter and
 * gradient buffers and its activations for the largest micro-batch (src/model/gpt.ts), the
 * optimizer's state slots (each optimizer's `slots()`, src/optim), and what the trainer adds
 * (snapshot ring, averages, noise scale, diagnostics). test/memory.test.ts checks the model and
 * optimizer figures against the Float32Arrays a real model and optimizer allocate.
 *
 * Nothing here allocates in proportion to the model: the per-layer figures come from layouts
 * of a 1- and a 2-layer model (every block has the same tensors), so `nLayer 100000` is
 * estimated without building 1.2 million tensor descriptions.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '../errors.ts';
import type { GPTConfig } from '../model/config.ts';
import { paramLayout } from '../model/params.ts';
import { slotSize } from '../optim/base.ts';
import { createOptimizer } from '../optim/registry.ts';
import { snapshotDepth } from '../guard/snapshots.ts';
import type { TrainOptions } from './options.ts';

const F32 = 4;

/** One line item of an estimate, in bytes. */
export interface MemoryItem {
  what: string;
  bytes: number;
}

/** Floats of activations a GPT allocates for micro-batches of up to B sequences (GPT's constructor, item by item). */
export function activationFloats(cfg: GPTConfig, B: number): number {
  const { nLayer: L, nHead: NH, nEmbd: C, blockSize: T, vocabSize: V } = cfg;
  const BT = B * T;
  // Per block: ln1, qkv (3C), atty, attproj, res2, ln2, fch (4C), fchGelu (4C), fcproj = 17·BT·C;
  // ln1/ln2 mean and rstd = 4·BT; the attention matrix B·NH·T·T.
  const qk = cfg.qkNorm ? 2 * BT * C + 4 * BT * NH : 0;
  const perLayer = 17 * BT * C + 4 * BT + B * NH * T * T + qk;
  // The residual stream entering each block plus the last block's output: (L + 1)·BT·C.
  const stream = (L + 1) * BT * C;
  // Final LayerNorm (out, mean, rstd), logits BT·V, per-position losses and log-sum-exp.
  const head = BT * C + 2 * BT + BT * V + 2 * BT;
  // Backward scratch: dres, dC, dC2 (C each), d3C, d4C, d4C2.
  const scratch = 14 * BT * C;
  return L * perLayer + stream + head + scratch;
}

/** The largest single activation buffer (a typed array cannot exceed 2³² elements). */
function largestActivation(cfg: GPTConfig, B: number): number {
  const { nHead: NH, nEmbd: C, blockSize: T, vocabSize: V } = cfg;
  return Math.max(B * T * V, B * NH * T * T, B * T * 4 * C);
}

/** A quantity that grows linearly with the layer count, from its value at 1 and 2 layers. */
function linearInLayers(cfg: GPTConfig, f: (c: GPTConfig) => number): number {
  const one = f({ ...cfg, nLayer: 1 });
  const two = f({ ...cfg, nLayer: 2 });
  return one + (cfg.nLayer - 1) * (two - one);
}

/** Parameters of the model (what paramLayout(cfg).total gives, without building the layout). */
export function paramCount(cfg: GPTConfig): number {
  return linearInLayers(cfg, (c) => paramLayout(c).total);
}

/** Bytes of the optimizer's state for this model: the sum of its slots, float32 (what init allocates). */
export function optimizerStateBytes(cfg: GPTConfig, optimizer: string, options: Record<string, unknown> = {}): number {
  const opt = createOptimizer(optimizer, options);
  return linearInLayers(cfg, (c) => opt.slots(paramLayout(c).tensors).reduce((a, s) => a + slotSize(s), 0)) * F32;
}

/** Largest tensor of the model (diagnostics keep a float64 scratch of its size). */
function largestTensor(cfg: GPTConfig): number {
  return Math.max(...paramLayout({ ...cfg, nLayer: 1 }).tensors.map((t) => t.size));
}

/** The model itself: parameters, gradients and activations for micro-batches of `batch`. */
export function modelMemory(cfg: GPTConfig, batch: number): MemoryItem[] {
  const n = paramCount(cfg);
  return [
    { what: 'parameters', bytes: n * F32 },
    { what: 'gradients', bytes: n * F32 },
    { what: `activations (micro-batch ${batch})`, bytes: activationFloats(cfg, batch) * F32 },
    // The batcher's inputs and targets (int32), and an evaluation batch of the same size.
    { what: 'token batches', bytes: 4 * batch * cfg.blockSize * 4 },
  ];
}

/** Everything a `keel train` run holds at once (the corpus, already loaded by then, aside). */
export function trainingMemory(o: TrainOptions, rollbackSteps: number | null): MemoryItem[] {
  const n = paramCount(o.config);
  const state = optimizerStateBytes(o.config, o.optimizer, o.optimizerOptions);
  const items = [...modelMemory(o.config, o.batch), { what: `optimizer state (${o.optimizer})`, bytes: state }];
  // In-memory snapshots for rollback: parameters and optimizer state, a ring of snapshotDepth.
  if (rollbackSteps !== null) items.push({ what: 'rollback snapshots', bytes: snapshotDepth(rollbackSteps) * (n * F32 + state) });
  if (o.noiseScale !== false) items.push({ what: 'noise scale', bytes: n * F32 });
  const averages = (o.lawaK ?? 0) + (o.ema ? 1 : 0);
  if (averages > 0) items.push({ what: 'weight averages', bytes: (averages + 1 + (o.lawaK ? 1 : 0)) * n * F32 });
  if (o.diagEvery) items.push({ what: 'diagnostics', bytes: 3 * n * F32 + 8 * largestTensor(o.config) });
  return items;
}

/**
 * The memory a new allocation can use: MemAvailable (Linux), else the total; less when the
 * process's memory cgroup (a container, a Slurm job, a systemd unit) leaves less room, since
 * MemAvailable is the host's.
 */
function availableMemory(): { bytes: number; source: string } {
  const machine = machineMemory();
  const cg = cgroupRoom();
  return cg !== null && cg.bytes < machine.bytes ? cg : machine;
}

function machineMemory(): { bytes: number; source: string } {
  try {
    const m = /^MemAvailable:\s+(\d+)\s+kB/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
    if (m) return { bytes: Number(m[1]) * 1024, source: 'MemAvailable' };
  } catch {
    // Not Linux: fall through.
  }
  return { bytes: os.totalmem(), source: 'total memory' };
}

/** Limits at or above this are "no limit" (cgroup v1 writes 2⁶³ − 4096 for none). */
const NO_LIMIT = 2 ** 60;

/** The cgroup files of one hierarchy: limit, usage, and the memory.stat key of reclaimable page cache. */
const CGROUP_FILES = {
  v2: { limit: 'memory.max', usage: 'memory.current', cache: 'inactive_file' },
  v1: { limit: 'memory.limit_in_bytes', usage: 'memory.usage_in_bytes', cache: 'total_inactive_file' },
};

/**
 * Room left under the tightest memory limit on the process's cgroup path: limit − usage, the
 * inactive page cache counted as free (the kernel reclaims it before it kills). Every ancestor's
 * limit applies, so the path is walked up to the mount (which is the whole path inside a cgroup
 * namespace). Null where no limit is set or nothing is readable (not Linux, no cgroup mount).
 */
export function cgroupRoom(selfCgroup = '/proc/self/cgroup', mount = '/sys/fs/cgroup'): { bytes: number; source: string } | null {
  let lines: string[];
  try {
    lines = fs.readFileSync(selfCgroup, 'utf8').split('\n');
  } catch {
    return null;
  }
  let best: { bytes: number; source: string } | null = null;
  for (const line of lines) {
    const [, controllers, rel] = /^\d+:([^:]*):(.*)$/.exec(line) ?? [];
    const kind = controllers === '' ? 'v2' : controllers?.split(',').includes('memory') ? 'v1' : null;
    if (kind === null || rel === undefined) continue;
    const root = kind === 'v2' ? mount : path.join(mount, 'memory');
    for (let dir = path.resolve(root, `.${rel}`); dir === root || dir.startsWith(root + path.sep); dir = path.dirname(dir)) {
      const room = roomIn(dir, CGROUP_FILES[kind]);
      if (room !== null && (best === null || room.bytes < best.bytes)) best = room;
      if (dir === root) break;
    }
  }
  return best;
}

function roomIn(dir: string, f: (typeof CGROUP_FILES)['v1']): { bytes: number; source: string } | null {
  const read = (name: string) => {
    try {
      return fs.readFileSync(path.join(dir, name), 'utf8').trim();
    } catch {
      return null;
    }
  };
  const bytesOf = (s: string | null) => (s !== null && /^\d+$/.test(s) ? Number(s) : NaN); // "max" (v2: no limit) is NaN
  const limit = bytesOf(read(f.limit));
  const usage = bytesOf(read(f.usage));
  if (!(limit < NO_LIMIT) || !Number.isFinite(usage)) return null;
  const cache = Number(new RegExp(`^${f.cache} (\\d+)$`, 'm').exec(read('memory.stat') ?? '')?.[1] ?? 0);
  const bytes = Math.max(0, limit - usage + cache);
  return { bytes, source: `cgroup memory limit ${formatBytes(limit)}, ${formatBytes(Math.max(0, usage - cache))} in use` };
}

export function formatBytes(b: number): string {
  if (b >= 1e15) return `${(b / 1e15).toPrecision(3)} PB`;
  if (b >= 1e12) return `${(b / 1e12).toPrecision(3)} TB`;
  if (b >= 1e9) return `${(b / 1e9).toPrecision(3)} GB`;
  if (b >= 1e6) return `${(b / 1e6).toPrecision(3)} MB`;
  return `${(b / 1e3).toPrecision(3)} kB`;
}

/** Typed arrays hold at most 2³² elements (V8); a bigger buffer is a RangeError whatever the memory. */
const MAX_ELEMENTS = 2 ** 32;

/**
 * Refuses (UserError, exit 2) a run whose estimate at `batch` exceeds the machine's memory, or
 * whose largest buffer cannot be one typed array. The message gives the figure, the machine's
 * memory and the way out: the largest --batch that fits, or (when even one sequence does not)
 * `smallerModel`.
 */
export function checkMemory(itemsAt: (batch: number) => MemoryItem[], cfg: GPTConfig, batch: number, smallerModel: string, avail = availableMemory()): void {
  const need = (b: number) => itemsAt(b).reduce((a, i) => a + i.bytes, 0);
  const total = need(batch);
  if (total > avail.bytes) {
    const items = itemsAt(batch);
    const parts = items
      .filter((i) => i.bytes >= total / 100)
      .map((i) => `${i.what} ${formatBytes(i.bytes)}`)
      .join(', ');
    // The estimate is linear in the batch: need(b) = need(1) + (b − 1)·perSequence.
    const perSequence = need(2) - need(1);
    const fits = Math.floor((avail.bytes - need(1)) / perSequence) + 1;
    const fix = fits >= 1 ? `use --batch ${fits} or less (and --accum to keep the sequences per step)` : smallerModel;
    throw new UserError(
      `this needs about ${formatBytes(total)} of memory (${parts}) but the machine has ${formatBytes(avail.bytes)} (${avail.source}): ${fix}`,
    );
  }
  const biggest = Math.max(paramCount(cfg), largestActivation(cfg, batch));
  if (biggest > MAX_ELEMENTS) {
    throw new UserError(`one buffer of this model would hold ${biggest.toExponential(2)} floats, more than a typed array can (2^32): ${smallerModel}`);
  }
}

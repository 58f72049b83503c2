/**
 * The checkpoint store of a run directory: `checkpoints/step-<N>/` holding model.safetensors,
 * optimizer.safetensors (the optimizer's state per parameter, e.g. `<name>.exp_avg`) and trainer.json. Each checkpoint
 * is built under a temporary name and renamed into place, so one that exists is complete.
 */
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.ts';
import { writeDirAtomic } from '../io/atomic.ts';
import { readSafetensors, writeSafetensors, type TensorToWrite } from '../io/safetensors.ts';
import { configFromMetadata, copyTensors, modelMetadata, namedTensors } from '../model/checkpoint.ts';
import type { GPTConfig } from '../model/config.ts';
import { paramLayout } from '../model/params.ts';
import { checkpointDir, listCheckpoints, runDirOf, strayCheckpoints } from '../io/run_layout.ts';

export { checkpointDir, listCheckpoints, runDirOf };
import type { GuardState } from '../guard/guards.ts';

const CHECKPOINT_FILES = ['model.safetensors', 'optimizer.safetensors', 'trainer.json'] as const;

/** What trainer.json holds besides the tensors: enough to continue bit-identically. */
export interface TrainerState {
  version: 1;
  step: number;
  tokens: number;
  /** Index of the next training batch (the data cursor). */
  cursor: number;
  seed: number;
  /** Optimizer step count (bias correction); also in optimizer.safetensors' metadata. */
  optimizerT: number;
  /** Optimizer name (absent in checkpoints from before there was a choice: adamw). */
  optimizer?: string;
  /** Faults fired and bad batches left (src/guard/guards.ts). */
  guard?: GuardState;
  /** Noise-scale EMAs (src/monitor/noise_scale.ts). */
  noise?: unknown;
  /** The batch of the last step (the batch ramp's state is the controller's). */
  batch?: { last: number | null };
  /** The controller's state (src/control/controller.ts); absent in checkpoints from before it. */
  controller?: unknown;
  elapsedMs: number;
  config: GPTConfig;
  options: Record<string, unknown>;
}

/** The optimizer's state as stored: named tensors plus metadata (see src/optim/state.ts). */
interface StoredOptimizerState {
  tensors: TensorToWrite[];
  metadata: Record<string, string>;
}

export interface Checkpoint {
  dir: string;
  state: TrainerState;
  params: Float32Array;
  optimizer: { tensors: Map<string, Float32Array>; metadata: Record<string, string>; path: string };
}

export interface CheckpointToSave {
  state: TrainerState;
  params: Float32Array;
  optimizer: StoredOptimizerState;
  /** Further files of the checkpoint (LAWA and EMA weights and state), written in the same atomic step. */
  extra?: { file: string; tensors: TensorToWrite[]; metadata: Record<string, string> }[];
}

export function saveCheckpoint(runDir: string, ckpt: CheckpointToSave): string {
  const dir = checkpointDir(runDir, ckpt.state.step);
  const layout = paramLayout(ckpt.state.config);
  const meta = modelMetadata(ckpt.state.config, ckpt.state.options.tokenizer as string | undefined, ckpt.state.step);
  writeDirAtomic(dir, (tmp) => {
    writeSafetensors(path.join(tmp, 'model.safetensors'), namedTensors(layout, ckpt.params), meta);
    writeSafetensors(path.join(tmp, 'optimizer.safetensors'), ckpt.optimizer.tensors, { ...meta, ...ckpt.optimizer.metadata });
    for (const e of ckpt.extra ?? []) writeSafetensors(path.join(tmp, e.file), e.tensors, e.metadata);
    fs.writeFileSync(path.join(tmp, 'trainer.json'), JSON.stringify(ckpt.state, null, 2) + '\n');
  });
  return dir;
}

/** Deletes all but the newest `keep` checkpoints. */
export function pruneCheckpoints(runDir: string, keep: number): void {
  const steps = listCheckpoints(runDir);
  for (const step of steps.slice(0, Math.max(0, steps.length - keep))) {
    fs.rmSync(checkpointDir(runDir, step), { recursive: true, force: true });
  }
}

/**
 * A checkpoint directory, or a run directory (its newest checkpoint). Entries of a run's
 * checkpoints/ that are not named step-<N> (renamed ones) are never used; `note` gets one line
 * naming them (default: stderr), so the choice is not a silent surprise.
 */
export function resolveCheckpointDir(dir: string, note: (line: string) => void = (l) => process.stderr.write(`keel: ${l}\n`)): string {
  if (!fs.existsSync(dir)) throw new UserError(`checkpoint ${dir} does not exist`);
  if (fs.existsSync(path.join(dir, 'trainer.json')) || fs.existsSync(path.join(dir, 'model.safetensors'))) return dir;
  const steps = listCheckpoints(dir);
  const stray = strayCheckpoints(dir);
  const newest = steps.length > 0 ? checkpointDir(dir, steps[steps.length - 1]) : null;
  const names = stray.map((n) => path.join('checkpoints', n)).join(', ');
  const notNamed = `${names} ${stray.length === 1 ? 'is' : 'are'} not named step-<N> (renamed?)`;
  if (newest === null && stray.length === 0 && fs.existsSync(path.join(dir, 'metrics.jsonl'))) {
    throw new UserError(
      `${dir} holds a run that stopped before its first checkpoint: nothing to resume; start it over with --out ${dir} --auto-resume (or remove it)`,
    );
  }
  if (newest === null) {
    throw new UserError(`${dir} is neither a checkpoint nor a run directory with checkpoints${stray.length ? `: ${notNamed}` : ''}`);
  }
  if (stray.length > 0) note(`${notNamed} and not used; ${dir}: using ${path.relative(dir, newest)}`);
  return newest;
}

/** A checkpoint (or a run's newest); when the newest of a run is unreadable, the error names the older ones. */
export function loadCheckpoint(dirSpec: string): Checkpoint {
  const dir = resolveCheckpointDir(dirSpec);
  try {
    return readCheckpoint(dir);
  } catch (e) {
    const older = dir === dirSpec ? [] : listCheckpoints(dirSpec).slice(0, -1);
    if (!(e instanceof UserError) || older.length === 0) throw e;
    const prev = checkpointDir(dirSpec, older[older.length - 1]);
    throw new UserError(
      `${e.message}; older checkpoints: ${older.map((s) => `step-${s}`).join(', ')} (continue from one with --resume ${prev}, or let --auto-resume pick the newest readable one)`,
    );
  }
}

function readCheckpoint(dir: string): Checkpoint {
  for (const f of CHECKPOINT_FILES) {
    if (!fs.existsSync(path.join(dir, f))) throw new UserError(`checkpoint ${dir} is incomplete: ${f} is missing`);
  }
  let state: TrainerState;
  try {
    state = JSON.parse(fs.readFileSync(path.join(dir, 'trainer.json'), 'utf8'));
  } catch {
    throw new UserError(`checkpoint ${dir}: trainer.json is not valid JSON (truncated?)`);
  }
  if (state?.version !== 1 || typeof state.step !== 'number' || typeof state.cursor !== 'number') {
    throw new UserError(`checkpoint ${dir}: trainer.json is not a Keel trainer state (version 1)`);
  }
  const modelPath = path.join(dir, 'model.safetensors');
  const model = readSafetensors(modelPath);
  const config = configFromMetadata(model.metadata.config, modelPath);
  if (JSON.stringify(config) !== JSON.stringify(state.config)) {
    throw new UserError(`checkpoint ${dir}: model.safetensors and trainer.json describe different models`);
  }
  const layout = paramLayout(config);
  const params = new Float32Array(layout.total);
  copyTensors(model, modelPath, layout, params);
  const optPath = path.join(dir, 'optimizer.safetensors');
  const opt = readSafetensors(optPath);
  return { dir, state, params, optimizer: { tensors: opt.tensors, metadata: { t: String(state.optimizerT), ...opt.metadata }, path: optPath } };
}

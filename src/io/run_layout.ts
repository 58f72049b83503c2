/**
 * Where things live in a run directory (docs/architecture.md#run-directory):
 * checkpoints are `checkpoints/step-<N>/`, complete once they have that name.
 */
import fs from 'node:fs';
import path from 'node:path';
import { isTempName } from './atomic.ts';

export function checkpointDir(runDir: string, step: number): string {
  return path.join(runDir, 'checkpoints', `step-${step}`);
}

/** Steps of the complete checkpoints in a run directory, ascending. */
export function listCheckpoints(runDir: string): number[] {
  const root = path.join(runDir, 'checkpoints');
  if (!fs.existsSync(root)) return [];
  return fs
    .readdirSync(root)
    .map((n) => /^step-(\d+)$/.exec(n))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
}

/**
 * Entries of `checkpoints/` that are not checkpoints by name (`step-<N>`), such as a renamed
 * `step-900.bak`: never used, so callers report them rather than skip them silently. The
 * temporary names of a write in progress (or of a crash during one) are not listed.
 */
export function strayCheckpoints(runDir: string): string[] {
  const root = path.join(runDir, 'checkpoints');
  if (!fs.existsSync(root)) return [];
  return fs
    .readdirSync(root)
    .filter((n) => !/^step-\d+$/.test(n) && !isTempName(n))
    .sort();
}

/** The run directory of a checkpoint directory. */
export function runDirOf(ckptDir: string): string {
  return path.dirname(path.dirname(path.resolve(ckptDir)));
}

/** Temporary checkpoint directories a kill during a checkpoint left behind: never complete, so never used. */
export function removeTempCheckpoints(runDir: string): void {
  const root = path.join(runDir, 'checkpoints');
  if (!fs.existsSync(root)) return;
  for (const name of fs.readdirSync(root)) if (isTempName(name)) fs.rmSync(path.join(root, name), { recursive: true, force: true });
}

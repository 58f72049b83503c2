/**
 * Where things live in a run directory (../shared/docs/architecture.md, "Run directory"):
 * checkpoints are `checkpoints/step-<N>/`, complete once they have that name.
 */
import fs from 'node:fs';
import path from 'node:path';

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

/** The run directory of a checkpoint directory. */
export function runDirOf(ckptDir: string): string {
  return path.dirname(path.dirname(path.resolve(ckptDir)));
}

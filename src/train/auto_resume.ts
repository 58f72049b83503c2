/**
 * `keel train … --out DIR --auto-resume`: a scheduler restarts a job with the same command, so
 * one command must start or continue. DIR missing: start. DIR with checkpoints: continue from
 * the newest that loads (an unreadable newer one is reported and skipped). DIR holding a run
 * that died before its first checkpoint: start it over there (its logs are removed; nothing
 * else in DIR is touched).
 */
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.ts';
import { assertUnlocked } from '../io/lock.ts';
import { removeTempCheckpoints } from '../io/run_layout.ts';
import { checkpointDir, listCheckpoints, loadCheckpoint, type Checkpoint } from './checkpoints.ts';

/** What a run that never checkpointed leaves in its directory (all rewritten by a new run). */
const RUN_FILES = ['metrics.jsonl', 'control.jsonl', 'config.json', 'report.html'];

export type AutoResume = { kind: 'start' } | { kind: 'restart'; removed: string[] } | { kind: 'resume'; ckpt: Checkpoint; skipped: string[] };

export function autoResume(dir: string): AutoResume {
  if (!fs.existsSync(dir)) return { kind: 'start' };
  if (!fs.statSync(dir).isDirectory()) throw new UserError(`--out ${dir} exists and is not a directory`);
  const steps = listCheckpoints(dir);
  const skipped: string[] = [];
  for (const step of [...steps].reverse()) {
    try {
      return { kind: 'resume', ckpt: loadCheckpoint(checkpointDir(dir, step)), skipped };
    } catch (e) {
      if (!(e instanceof UserError)) throw e;
      skipped.push(`step-${step}: ${e.message}`);
    }
  }
  if (steps.length > 0) {
    throw new UserError(`--auto-resume: no checkpoint in ${dir} loads (${skipped.join('; ')}): nothing was changed; move the run away to start over`);
  }
  const present = RUN_FILES.filter((f) => fs.existsSync(path.join(dir, f)));
  if (present.length === 0) return { kind: 'start' };
  assertUnlocked(dir); // a run that is still writing its first steps is not dead
  for (const f of present) fs.rmSync(path.join(dir, f), { force: true });
  removeTempCheckpoints(dir); // only temporary ones can be left
  return { kind: 'restart', removed: present };
}

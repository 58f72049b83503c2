/**
 * Checking and creating an output directory (`keel train --out`) without surprises:
 * a path under a regular file, on a read-only file system or on /proc and /sys is refused with
 * one line before anything is written, and directories are created one level at a time.
 *
 * Why not `fs.mkdirSync(dir, { recursive: true })`: under /proc it never returns (Node 20 spins
 * at 100% CPU on `mkdirSync('/proc/x', { recursive: true })`: /proc answers ENOENT for a
 * directory that cannot exist, and the recursive walk retries forever).
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { UserError } from '../errors.ts';

/** statfs magic numbers of kernel pseudo file systems, where a run directory can never live. */
const PSEUDO_FS: Record<number, string> = {
  0x9fa0: 'procfs',
  0x62656572: 'sysfs',
  0x1cd1: 'devpts',
  0x64626720: 'debugfs',
  0x27e0eb: 'cgroupfs',
  0x63677270: 'cgroup2fs',
};

const WHY: Record<string, string> = {
  EROFS: 'the file system is read-only',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  ENOSPC: 'the disk is full',
  EDQUOT: 'the disk quota is exceeded',
  ENOTDIR: 'a parent path is not a directory',
  ENOENT: 'the directory cannot be created there',
};

function reason(e: unknown): string {
  const code = (e as NodeJS.ErrnoException)?.code ?? '';
  return WHY[code] ?? (code || String(e));
}

/** The nearest existing path at or above `dir` (following symlinks), and the missing levels below it. */
function nearestExisting(dir: string, flag: string): { existing: string; stat: fs.Stats; missing: string[] } {
  const missing: string[] = [];
  let at = path.resolve(dir);
  for (;;) {
    try {
      return { existing: at, stat: fs.statSync(at), missing };
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // ENOTDIR: a component above is a file; keep walking up to name it.
      if (code !== 'ENOENT' && code !== 'ENOTDIR') throw new UserError(`${flag} ${dir}: cannot look at ${at}: ${reason(e)}`);
      const up = path.dirname(at);
      if (up === at) throw new UserError(`${flag} ${dir}: no existing directory above it`);
      missing.unshift(at);
      at = up;
    }
  }
}

/**
 * Refuses (UserError) an output directory that cannot be created or written, writing nothing
 * that stays: the probe is an empty directory made and removed in the nearest existing parent.
 * `flag` names the option in messages (e.g. `--out`).
 */
export function checkOutDir(dir: string, flag: string): void {
  const { existing, stat, missing } = nearestExisting(dir, flag);
  const shown = `${flag} ${dir}`;
  if (!stat.isDirectory()) {
    throw new UserError(missing.length === 0 ? `${shown} exists and is not a directory` : `${shown}: ${existing} is not a directory`);
  }
  let type: number | undefined;
  try {
    type = Number(fs.statfsSync(existing).type);
  } catch {
    type = undefined; // statfs unsupported: the probe below still decides
  }
  if (type !== undefined && PSEUDO_FS[type])
    throw new UserError(`${shown}: ${existing} is on ${PSEUDO_FS[type]}, a kernel file system: pick a directory on a disk`);
  const probe = path.join(existing, `.keel-probe-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    fs.mkdirSync(probe);
  } catch (e) {
    throw new UserError(`${shown}: cannot write in ${existing}: ${reason(e)}`);
  }
  fs.rmdirSync(probe);
}

/** Creates `dir` and its missing parents, one level at a time; errors become one line (UserError). */
export function makeDirs(dir: string, flag: string): void {
  const { missing } = nearestExisting(dir, flag);
  for (const level of missing) {
    try {
      fs.mkdirSync(level);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST' && fs.statSync(level).isDirectory()) continue; // made meanwhile
      throw new UserError(`${flag} ${dir}: cannot create ${level}: ${reason(e)}`);
    }
  }
}

/** checkOutDir, then makeDirs: an output directory refused with one line, or made. */
export function ensureOutDir(dir: string, flag: string): void {
  checkOutDir(dir, flag);
  makeDirs(dir, flag);
}

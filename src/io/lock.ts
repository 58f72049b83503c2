/**
 * One writer per run directory: `DIR/.lock` holds the writer's pid, host and start time. A
 * second writer is refused with the holder's pid; a lock whose process is gone (killed with -9,
 * say) is taken over. Taking over renames the stale lock away first: of two processes that find
 * the same stale lock, one rename succeeds and the other finds a fresh lock held by the first.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '../errors.ts';

const LOCK_FILE = '.lock';

interface LockInfo {
  pid: number;
  host: string;
  started: string;
}

/** Locks `dir` for this process until release() (or the process exits). */
export function lockRunDir(dir: string): { release(): void } {
  const file = path.join(dir, LOCK_FILE);
  const mine: LockInfo = { pid: process.pid, host: os.hostname(), started: new Date().toISOString() };
  for (let tries = 0; tries < 3; tries++) {
    if (tryCreate(file, mine)) {
      const release = () => {
        if (readLock(file)?.pid === process.pid) fs.rmSync(file, { force: true });
        process.off('exit', release);
      };
      process.on('exit', release);
      return { release };
    }
    refuseIfHeld(dir, file);
    // Stale (its process is gone) or unreadable: move it aside, then try again.
    try {
      fs.renameSync(file, `${file}.stale-${process.pid}`);
      fs.rmSync(`${file}.stale-${process.pid}`, { force: true });
    } catch {
      // another process moved it first: try again
    }
  }
  throw new UserError(`cannot lock ${dir}: ${file} keeps changing (several keel processes starting at once?)`);
}

/** Refuses when a live process holds `dir`'s lock (before changing anything in it). */
export function assertUnlocked(dir: string): void {
  refuseIfHeld(dir, path.join(dir, LOCK_FILE));
}

/** The refusal for a lock held by another live process, or one on another host (which cannot be checked). */
function refuseIfHeld(dir: string, file: string): void {
  const held = readLock(file);
  if (!held || (held.pid === process.pid && held.host === os.hostname())) return;
  if (held.host !== os.hostname()) {
    throw new UserError(
      `${dir} is locked by pid ${held.pid} on host ${held.host} (since ${held.started}), which this machine cannot check: if that run is gone, remove ${file}`,
    );
  }
  if (alive(held.pid)) {
    throw new UserError(`${dir} is being written by another keel process (pid ${held.pid}, since ${held.started}): wait for it to finish or stop it`);
  }
}

function tryCreate(file: string, info: LockInfo): boolean {
  let fd: number;
  try {
    fd = fs.openSync(file, 'wx');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw new UserError(`cannot create ${file}: ${(e as Error).message}`);
  }
  try {
    fs.writeSync(fd, JSON.stringify(info) + '\n');
  } finally {
    fs.closeSync(fd);
  }
  return true;
}

function readLock(file: string): LockInfo | null {
  try {
    const info = JSON.parse(fs.readFileSync(file, 'utf8')) as LockInfo;
    return Number.isInteger(info.pid) && typeof info.host === 'string' ? info : null;
  } catch {
    return null; // gone, or torn by a kill between create and write: stale
  }
}

/** Whether the lock's process still runs: it exists and (where /proc tells) is a node process, not a reused pid. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false; // EPERM: it exists, owned by someone else
  }
  try {
    return /node|keel/.test(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8'));
  } catch {
    return true; // no /proc: trust the pid
  }
}

/**
 * `keel average`'s output, atomically: written under a hidden temporary name next to OUT (a
 * file, or a directory of shards), fsynced, renamed into place; on any error nothing is left
 * at OUT, and an existing OUT is replaced only at the very end.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.ts';
import { fsyncDir, ioError, writeAll } from '../io/atomic.ts';
import { INDEX_FILE } from './inputs.ts';
import type { Averager } from './pipeline.ts';
import type { OutFile, Plan } from './plan.ts';

/** A hidden temporary name next to `target` (the convention of io/atomic.ts: isTempName). */
function tempPath(target: string, kind: 'tmp' | 'old'): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.${kind}-${process.pid}-${randomBytes(4).toString('hex')}`);
}

export async function writeSingle(target: string, file: OutFile, work: Averager): Promise<void> {
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

export async function writeSharded(target: string, plan: Plan, work: Averager): Promise<void> {
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

/** File-system errors the user can act on (disk full, permissions) become one-line UserErrors (io/atomic.ts). */
function ioCall<T>(op: string, target: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw e instanceof UserError ? e : ioError(op, target, e);
  }
}

async function ioCallAsync<T>(op: string, target: string, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    throw e instanceof UserError ? e : ioError(op, target, e);
  }
}

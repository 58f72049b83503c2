/**
 * Crash-safe writes. A reader (or a resumed run) must never see a file or checkpoint directory
 * that looks complete but is not, so everything is built under a hidden temporary name in the
 * same directory (rename is only atomic within one file system), fsynced, then renamed into
 * place, and the parent directory is fsynced so that the rename itself survives a power cut.
 *
 * Temporary names start with '.' and contain '.tmp-', so listings of `step-<N>` directories
 * never pick them up; a crash can leave such a name behind, and it is safe to delete.
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { UserError } from '../errors.ts';

/** Bytes to write: one buffer, a string (UTF-8), or chunks written in order without joining. */
export type FileData = string | Uint8Array | readonly Uint8Array[];

/** Writes `data` to `file` so that `file` holds either its old content or all of `data`. */
export function writeFileAtomic(file: string, data: FileData): void {
  const dir = path.dirname(file);
  const tmp = tempPath(file, 'tmp');
  try {
    writeAndSync(tmp, data);
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw ioError('write', file, e);
  }
  fsyncDir(dir);
}

/**
 * Builds a directory: `fill(tmpDir)` writes its files under a temporary name next to
 * `finalDir`; then every file is fsynced and the directory is renamed into place. If
 * `finalDir` already exists it is moved aside first and deleted after the swap (between the
 * two renames a crash leaves no `finalDir`, never a partial one). If `fill` throws, the
 * temporary directory is removed and the error is rethrown unchanged.
 */
export function writeDirAtomic(finalDir: string, fill: (tmpDir: string) => void): void {
  const parent = path.dirname(finalDir);
  fs.mkdirSync(parent, { recursive: true });
  const tmp = tempPath(finalDir, 'tmp');
  fs.mkdirSync(tmp);
  try {
    fill(tmp);
    fsyncTree(tmp);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  try {
    swapInto(tmp, finalDir);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw ioError('replace', finalDir, e);
  }
}

/** True for names this module uses while writing (leftovers of a crash are safe to delete). */
export function isTempName(name: string): boolean {
  return name.startsWith('.') && /\.(tmp|old)-\d+-[0-9a-f]+$/.test(name);
}

function swapInto(tmp: string, finalDir: string): void {
  const parent = path.dirname(finalDir);
  if (!fs.existsSync(finalDir)) {
    fs.renameSync(tmp, finalDir);
    fsyncDir(parent);
    return;
  }
  const old = tempPath(finalDir, 'old');
  fs.renameSync(finalDir, old);
  fs.renameSync(tmp, finalDir);
  fsyncDir(parent);
  fs.rmSync(old, { recursive: true, force: true });
}

function tempPath(target: string, kind: 'tmp' | 'old'): string {
  const base = path.basename(target);
  const tag = `${process.pid}-${randomBytes(4).toString('hex')}`;
  return path.join(path.dirname(target), `.${base}.${kind}-${tag}`);
}

function writeAndSync(file: string, data: FileData): void {
  const fd = fs.openSync(file, 'wx'); // 'x': never clobber someone else's temp file
  try {
    const chunks = typeof data === 'string' ? [Buffer.from(data, 'utf8')] : data instanceof Uint8Array ? [data] : data;
    for (const chunk of chunks) writeAll(fd, chunk);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** writeSync may write less than asked (large buffers, signals): loop until done. */
export function writeAll(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.byteLength) {
    done += fs.writeSync(fd, bytes, done, bytes.byteLength - done);
  }
}

/** fsyncs every file and directory below `dir`, then `dir` itself. */
function fsyncTree(dir: string): void {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) fsyncTree(p);
    else if (entry.isFile()) fsyncFile(p);
  }
  fsyncDir(dir);
}

function fsyncFile(file: string): void {
  const fd = fs.openSync(file, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Makes a rename durable. Some platforms (Windows) cannot open or fsync a directory: skip. */
export function fsyncDir(dir: string): void {
  let fd: number;
  try {
    fd = fs.openSync(dir, 'r');
  } catch {
    return;
  }
  try {
    fs.fsyncSync(fd);
  } catch {
    // EINVAL/EPERM/EISDIR on file systems without directory fsync: nothing more can be done
  } finally {
    fs.closeSync(fd);
  }
}

/** Errors the user can act on (missing directory, disk full, no permission) become one line. */
export function ioError(op: string, target: string, e: unknown): unknown {
  const code = (e as NodeJS.ErrnoException)?.code;
  if (typeof code !== 'string') return e;
  const hint: Record<string, string> = {
    ENOENT: 'the directory does not exist',
    ENOSPC: 'the disk is full',
    EDQUOT: 'the disk quota is exceeded',
    EFBIG: 'the file is over the size limit',
    EACCES: 'permission denied',
    EPERM: 'permission denied',
    EROFS: 'the file system is read-only',
    ENOTDIR: 'a parent path is not a directory',
    EEXIST: 'it exists',
  };
  return new UserError(`cannot ${op} ${target}: ${hint[code] ?? (e as Error).message}`);
}

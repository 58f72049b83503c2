/**
 * metrics.jsonl: one JSON object per line, appended as training runs. Each record is one
 * write() of a whole line, so a crash loses at most the line being written, and readers treat
 * a line that does not parse as "not written yet" rather than corruption.
 *
 * Non-finite numbers (NaN, ±Infinity) are written as `null`, which is what JSON.stringify
 * does: JSON has no spelling for them, and a string such as "NaN" would turn a numeric column
 * into a mixed one for every downstream tool. So a diverged loss reads back as null.
 *
 * This module's reader is the one every consumer of a metrics log builds on (src/io/logs.ts,
 * src/report/metrics.ts, the experiments, keel plan). It is tolerant: a blank, torn or non-object
 * line is skipped, and the bare NaN / Infinity / -Infinity tokens that Python's json module
 * writes read as null too, the same as Keel's own spelling of a non-finite number.
 */
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.ts';
import { ioError, writeAll } from './atomic.ts';

export type MetricsRecord = Record<string, unknown>;

export class MetricsLog {
  private fd: number | null;
  /** Bytes of whole lines in the file: where a failed write is cut back to. */
  private size: number;
  private failed = false;
  /** Also given every record written, closed with the log (keel train --tensorboard). */
  private readonly tees: { write(r: MetricsRecord): void; close(): void }[] = [];

  /** Opens `file` for appending (creating it and its directory); a resumed run adds to it. */
  constructor(readonly file: string) {
    try {
      fs.mkdirSync(path.dirname(file), { recursive: true });
      this.fd = fs.openSync(file, 'a');
      endPartialLine(this.fd, file);
      this.size = fs.fstatSync(this.fd).size;
    } catch (e) {
      throw ioError('append to', file, e);
    }
  }

  /**
   * Appends one record as one line. A write that fails (a full disk) is cut back off, so the
   * log still ends with a whole line and a resumed run appends cleanly; the error is one line.
   */
  write(record: MetricsRecord): void {
    if (this.fd === null) throw new Error(`${this.file}: write after close`);
    const bytes = Buffer.from(JSON.stringify(record) + '\n', 'utf8');
    try {
      writeAll(this.fd, bytes);
    } catch (e) {
      this.failed = true;
      try {
        fs.ftruncateSync(this.fd, this.size);
      } catch {
        // not a regular file (or the file system refuses): nothing more to mend
      }
      throw ioError('append to', this.file, e);
    }
    this.size += bytes.byteLength;
    for (const tee of this.tees) tee.write(record);
  }

  tee(sink: { write(r: MetricsRecord): void; close(): void }): void {
    this.tees.push(sink);
  }

  /** Flushes to disk and closes; later calls do nothing. After a failed write it only closes. */
  close(): void {
    if (this.fd === null) return;
    try {
      if (!this.failed) fs.fsyncSync(this.fd);
    } finally {
      fs.closeSync(this.fd);
      this.fd = null;
      for (const tee of this.tees) tee.close();
    }
  }
}

/**
 * A run killed mid-write leaves a last line without '\n'; appending straight after it would
 * glue the next record onto the fragment and lose both, so end the fragment first.
 */
function endPartialLine(fd: number, file: string): void {
  const size = fs.fstatSync(fd).size;
  if (size === 0) return;
  const last = Buffer.alloc(1);
  const rfd = fs.openSync(file, 'r'); // the append descriptor cannot read
  try {
    fs.readSync(rfd, last, 0, 1, size - 1);
  } finally {
    fs.closeSync(rfd);
  }
  if (last[0] !== 0x0a) writeAll(fd, Buffer.from('\n'));
}

/**
 * Reads every record of a metrics file (parseMetricsLine for each line). A crash can leave a
 * truncated last line, and after a resume that fragment sits in the middle of the file.
 */
export function readMetrics(file: string): MetricsRecord[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file (is this a run directory?)' : (e as Error).message;
    throw new UserError(`cannot read ${file}: ${why}`);
  }
  const out: MetricsRecord[] = [];
  for (const line of text.split('\n')) {
    const record = parseMetricsLine(line);
    if (record) out.push(record);
  }
  return out;
}

/** A bare non-finite token where a JSON value stands (after `:`, `,` or `[`, before `,`, `}` or `]`). */
const BARE_NON_FINITE = /([:,[]\s*)-?(?:NaN|Infinity)(?=\s*[,}\]])/g;

/**
 * One line as a record; null for a line that is blank, not valid JSON (a torn line) or not an
 * object. Bare NaN / ±Infinity values read as null; they are only looked for in a line that
 * does not parse as it is, so a string that spells "NaN" is left alone.
 */
export function parseMetricsLine(line: string): MetricsRecord | null {
  const s = line.trim();
  if (!s.startsWith('{')) return null;
  const v = parseJson(s) ?? parseJson(s.replace(BARE_NON_FINITE, '$1null'));
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as MetricsRecord) : null;
}

function parseJson(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return null;
  }
}

/**
 * TensorBoard scalar event files (keel train --tensorboard DIR): `events.out.tfevents.<secs>.<host>`,
 * TFRecords (length, masked CRC-32C of it, data, masked CRC-32C of that) of Event protos:
 * Event{wall_time=1 double, step=2 int64, file_version=3 string, summary=5} →
 * Summary{value=1 repeated} → Value{tag=1 string, simple_value=2 float}. The reader is in
 * src/io/logs.ts (keel analyze); the two are tested against each other. One record per
 * metrics.jsonl record, appended as it is written: a crash cuts at most the last one, which
 * readers (TensorBoard's and Keel's) take as not written yet.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ioError, writeAll } from './atomic.ts';
import { maskedCrc32c } from './logs.ts';

export class TensorBoardWriter {
  private fd: number;
  readonly file: string;

  constructor(dir: string) {
    const secs = Math.floor(Date.now() / 1000);
    this.file = path.join(dir, `events.out.tfevents.${secs}.${os.hostname().replace(/[^\w.-]/g, '_')}`);
    try {
      fs.mkdirSync(dir, { recursive: true });
      this.fd = fs.openSync(this.file, 'a');
    } catch (e) {
      throw ioError('create', this.file, e);
    }
    this.record(event(Date.now() / 1000, 0, [str(3, 'brain.Event:2')]));
  }

  /** The record's finite top-level numbers as scalars at its step (records without a step, and events, are skipped). */
  write(rec: Record<string, unknown>): void {
    if (typeof rec.step !== 'number' || 'event' in rec) return;
    const values = Object.entries(rec)
      .filter((e): e is [string, number] => e[0] !== 'step' && typeof e[1] === 'number' && Number.isFinite(e[1]))
      .map(([tag, v]) => msg(1, [str(1, tag), float32(2, v)]));
    if (values.length > 0) this.record(event(Date.now() / 1000, rec.step, [msg(5, values)]));
  }

  close(): void {
    fs.closeSync(this.fd);
  }

  private record(data: Uint8Array): void {
    const head = Buffer.alloc(12);
    head.writeBigUInt64LE(BigInt(data.length), 0);
    head.writeUInt32LE(maskedCrc32c(head.subarray(0, 8)), 8);
    const tail = Buffer.alloc(4);
    tail.writeUInt32LE(maskedCrc32c(data), 0);
    try {
      writeAll(this.fd, Buffer.concat([head, data, tail]));
    } catch (e) {
      throw ioError('append to', this.file, e);
    }
  }
}

function event(wallTime: number, step: number, fields: Uint8Array[]): Uint8Array {
  const t = Buffer.alloc(9);
  t[0] = (1 << 3) | 1; // field 1, 64-bit
  t.writeDoubleLE(wallTime, 1);
  return Buffer.concat([t, varintField(2, step), ...fields]);
}

function varint(n: number): number[] {
  const out: number[] = [];
  let v = BigInt(Math.trunc(n)) & 0xffffffffffffffffn; // int64, two's complement
  do {
    const b = Number(v & 0x7fn);
    v >>= 7n;
    out.push(v ? b | 0x80 : b);
  } while (v);
  return out;
}

function varintField(field: number, n: number): Uint8Array {
  return Uint8Array.from([...varint(field << 3), ...varint(n)]);
}

/** A length-delimited field. */
function bytesField(field: number, data: Uint8Array): Uint8Array {
  return Buffer.concat([Uint8Array.from([...varint((field << 3) | 2), ...varint(data.length)]), data]);
}

const str = (field: number, s: string) => bytesField(field, Buffer.from(s, 'utf8'));
const msg = (field: number, parts: Uint8Array[]) => bytesField(field, Buffer.concat(parts));

function float32(field: number, v: number): Uint8Array {
  const b = Buffer.alloc(5);
  b[0] = (field << 3) | 5; // 32-bit
  b.writeFloatLE(v, 1);
  return b;
}

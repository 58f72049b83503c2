/**
 * Readers for training logs from Keel and elsewhere, all reduced to the same shape: named
 * scalar series of (step, value) points.
 *
 * - JSONL (Keel's metrics.jsonl, MaxText, wandb exports, …): one object per line, flat keys
 *   (`loss`, `train/loss`; nested objects are flattened with `/`) plus a step (`step`, `iter`,
 *   `iteration`, `global_step` or `_step`). Lines without a step, blank or unparsable lines (a
 *   torn last line) and Keel's event records (`{"event": …}`) are skipped. `null` reads as NaN
 *   (that is how Keel writes a diverged loss), and so do Python's bare `NaN`/`Infinity` tokens
 *   (the lines are read by src/io/metrics.ts's parseMetricsLine, which makes them null).
 * - llm.c text logs: `s:%d trl:%f lr:%f norm:%f` lines (step `s`, other `key:value` pairs).
 * - CSV with a header row: a step column (same names, any case) and numeric columns; quoted
 *   fields with `""` escapes; `nan`/`inf` spellings; empty cells are missing values.
 * - TensorBoard event files: TFRecord framing (u64 length, masked CRC-32C of the length, data,
 *   masked CRC-32C of the data; little-endian) around `Event` protobufs, decoded by hand:
 *   Event{wall_time=1 double, step=2 varint, summary=5} → Summary{value=1 repeated} →
 *   Value{tag=1, simple_value=2 float, tensor=8 (scalar float/double/half/int tensors)}.
 *   A truncated last record is "not written yet" and ignored; a CRC mismatch is corruption.
 *
 * In every format the last value written for a (metric, step) wins: a restarted job re-logs
 * the steps since its checkpoint.
 */
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.ts';
import { parseMetricsLine } from './metrics.ts';
import { halfBitsToFloatBits } from '../util/float16.ts';

export type LogFormat = 'jsonl' | 'llmc' | 'csv' | 'tfevents';

export const FORMAT_NAMES: Record<LogFormat, string> = {
  jsonl: 'JSONL',
  llmc: 'llm.c log',
  csv: 'CSV',
  tfevents: 'TensorBoard events',
};

interface Point {
  step: number;
  value: number;
}

export interface RunLog {
  /** The file read (a directory argument resolves to one file). */
  file: string;
  format: LogFormat;
  /** Metric names with at least one finite value, sorted. */
  metrics: string[];
  /** The points of one metric (exact name), sorted by step, one per step (the last written). */
  series(metric: string): Point[];
}

/** Column / key names accepted as the step, in order of preference. */
const STEP_KEYS = ['step', 'global_step', 'iter', 'iteration', '_step'];

/** metric → step → value; Map.set makes the last write win. */
class SeriesTable {
  private data = new Map<string, Map<number, number>>();

  set(metric: string, step: number, value: number): void {
    let m = this.data.get(metric);
    if (!m) this.data.set(metric, (m = new Map()));
    m.set(step, value);
  }

  toLog(file: string, format: LogFormat): RunLog {
    const metrics = [...this.data]
      .filter(([, m]) => [...m.values()].some(Number.isFinite))
      .map(([k]) => k)
      .sort();
    const data = this.data;
    return {
      file,
      format,
      metrics,
      series(metric: string): Point[] {
        const m = data.get(metric);
        if (!m) throw new UserError(`no metric "${metric}" in ${file}`);
        return [...m].map(([step, value]) => ({ step, value })).sort((a, b) => a.step - b.step);
      },
    };
  }
}

// ---------------------------------------------------------------------------------------------
// Entry point: a file or a directory, any supported format.

/**
 * Reads a log file, or a directory: its metrics.jsonl if it has one, else its newest
 * `events.out.tfevents.*` file. The format comes from the file name (`events.out.tfevents.*`,
 * `.csv`/`.tsv`, `.jsonl`/`.ndjson`/`.json`), else from the content.
 */
export function readLog(spec: string): RunLog {
  const file = resolveLogFile(spec);
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    throw new UserError(`cannot read ${file}: ${(e as Error).message}`);
  }
  if (buf.length === 0) throw new UserError(`${file} is empty`);
  const format = detectFormat(file, buf);
  switch (format) {
    case 'tfevents':
      return parseTfEvents(buf, file);
    case 'csv':
      return parseCsv(buf.toString('utf8'), file, /\.tsv$/i.test(file) ? '\t' : undefined);
    case 'llmc':
      return parseLlmc(buf.toString('utf8'), file);
    case 'jsonl':
      return parseJsonl(buf.toString('utf8'), file);
  }
}

function resolveLogFile(spec: string): string {
  let st: fs.Stats;
  try {
    st = fs.statSync(spec);
  } catch {
    throw new UserError(`${spec}: no such file or directory`);
  }
  // A device, FIFO or socket may never end (/dev/zero): refused, as keel train --data does.
  if (st.isFile()) return spec;
  if (!st.isDirectory()) throw new UserError(`${spec} is neither a regular file nor a directory: give a log file or a run directory`);
  const metrics = path.join(spec, 'metrics.jsonl');
  if (fs.existsSync(metrics)) return metrics;
  const events = fs
    .readdirSync(spec, { withFileTypes: true })
    .filter((e) => e.isFile() && e.name.startsWith('events.out.tfevents.'))
    .map((e) => ({ n: e.name, t: fs.statSync(path.join(spec, e.name)).mtimeMs }))
    .sort((a, b) => b.t - a.t || (a.n < b.n ? 1 : -1));
  if (events.length) return path.join(spec, events[0].n);
  throw new UserError(`${spec} is a directory with neither metrics.jsonl nor an events.out.tfevents.* file`);
}

function detectFormat(file: string, buf: Buffer): LogFormat {
  const base = path.basename(file);
  if (base.includes('tfevents')) return 'tfevents';
  if (/\.(csv|tsv)$/i.test(base)) return 'csv';
  const head = buf.subarray(0, 64 * 1024).toString('utf8');
  const first =
    head
      .split('\n')
      .find((l) => l.trim() !== '')
      ?.trim() ?? '';
  if (/\.(jsonl|ndjson|json)$/i.test(base)) return /^s:\d+\s/.test(first) ? 'llmc' : 'jsonl';
  if (looksLikeTfRecord(buf)) return 'tfevents';
  if (first.startsWith('{') || first.startsWith('[')) return 'jsonl';
  if (/^s:\d+\s/.test(first)) return 'llmc';
  if (first.includes(',') || first.includes('\t')) {
    const cols = splitCsvHeader(first);
    if (cols.some((c) => STEP_KEYS.includes(c.toLowerCase()))) return 'csv';
  }
  throw new UserError(
    `cannot tell the format of ${file}: expected JSONL with a "step" key, CSV with a step column, an llm.c log or a TensorBoard events.out.tfevents.* file`,
  );
}

function splitCsvHeader(line: string): string[] {
  const delim = line.includes('\t') && !line.includes(',') ? '\t' : ',';
  return parseCsvRows(line, delim)[0]?.fields.map((f) => f.trim()) ?? [];
}

// ---------------------------------------------------------------------------------------------
// Metric names.

/**
 * `name` itself if present, else the one metric whose last `/`-segment is `name`
 * (`loss` → `train/loss`). Ambiguous or missing: a UserError listing what there is.
 */
export function resolveMetric(log: Pick<RunLog, 'file' | 'metrics'>, name: string): string {
  if (log.metrics.includes(name)) return name;
  const matches = log.metrics.filter((m) => m.split('/').pop() === name);
  if (matches.length === 1) return matches[0];
  const list = (xs: string[]) => (xs.length > 30 ? [...xs.slice(0, 30), `… (${xs.length} in all)`] : xs).join(', ');
  if (matches.length > 1) throw new UserError(`metric "${name}" is ambiguous in ${log.file}: ${list(matches)}; pass one of them with --metric`);
  if (log.metrics.length === 0) throw new UserError(`${log.file} has no numeric series with a step`);
  throw new UserError(`no metric "${name}" in ${log.file}; available: ${list(log.metrics)}`);
}

// ---------------------------------------------------------------------------------------------
// JSONL and llm.c logs.

export function parseJsonl(text: string, file = '<jsonl>'): RunLog {
  const table = new SeriesTable();
  for (const rec of jsonRecords(text)) {
    if (typeof rec.event === 'string') continue; // Keel's event records (spike, checkpoint, resume, …)
    const flat: Record<string, unknown> = {};
    flatten(rec, '', flat);
    const stepKey = STEP_KEYS.find((k) => typeof flat[k] === 'number' && Number.isFinite(flat[k]));
    if (stepKey === undefined) continue;
    const step = flat[stepKey] as number;
    for (const [k, v] of Object.entries(flat)) {
      if (k === stepKey) continue;
      const x = jsonNumber(v);
      if (x !== undefined) table.set(k, step, x);
    }
  }
  return table.toLog(file, 'jsonl');
}

/** One object per line; a `.json` file holding one array of such objects is accepted too. */
function* jsonRecords(text: string): Generator<Record<string, unknown>> {
  if (text.trimStart().startsWith('[')) {
    let all: unknown = null;
    try {
      all = JSON.parse(text);
    } catch {
      /* not one array after all: read it line by line */
    }
    if (Array.isArray(all)) {
      for (const r of all) if (r !== null && typeof r === 'object' && !Array.isArray(r)) yield r as Record<string, unknown>;
      return;
    }
  }
  for (const line of text.split('\n')) {
    const rec = parseMetricsLine(line);
    if (rec) yield rec;
  }
}

function flatten(o: Record<string, unknown>, prefix: string, out: Record<string, unknown>): void {
  for (const [k, v] of Object.entries(o)) {
    const key = prefix + k;
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) flatten(v as Record<string, unknown>, key + '/', out);
    else out[key] = v;
  }
}

/** A JSON value as a metric value: numbers, and null (a non-finite number) as NaN. */
function jsonNumber(v: unknown): number | undefined {
  if (typeof v === 'number') return v;
  if (v === null) return NaN;
  return undefined;
}

/** llm.c's logger: `s:%d trl:%f lr:%f norm:%f` and `s:%d tel:%f` lines. */
function parseLlmc(text: string, file = '<llm.c log>'): RunLog {
  const table = new SeriesTable();
  for (const line of text.split('\n')) {
    const parts = line.trim().split(/\s+/);
    const m = /^s:(\d+)$/.exec(parts[0] ?? '');
    if (!m) continue;
    const step = Number(m[1]);
    for (const p of parts.slice(1)) {
      const i = p.indexOf(':');
      if (i <= 0) continue;
      const x = parseNumberCell(p.slice(i + 1));
      if (x !== undefined) table.set(p.slice(0, i), step, x);
    }
  }
  return table.toLog(file, 'llmc');
}

// ---------------------------------------------------------------------------------------------
// CSV.

/** A number in a text cell: decimal/exponent forms, `nan`, `inf`, `-inf`, `infinity` (any case). */
function parseNumberCell(cell: string): number | undefined {
  const s = cell.trim();
  if (s === '') return undefined;
  const l = s.toLowerCase();
  if (l === 'nan' || l === '-nan' || l === '+nan') return NaN;
  if (l === 'inf' || l === '+inf' || l === 'infinity' || l === '+infinity') return Infinity;
  if (l === '-inf' || l === '-infinity') return -Infinity;
  if (!/^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(s)) return undefined;
  return Number(s);
}

interface CsvRow {
  fields: string[];
  /** False for a last row without a line end; `quoted` if it ends inside a quoted field. */
  complete: boolean;
  quoted?: boolean;
}

/** Rows of a CSV text (RFC 4180 quoting: `"a,b"`, `""` for a quote, CRLF or LF). */
function parseCsvRows(text: string, delim: string): CsvRow[] {
  const rows: CsvRow[] = [];
  let fields: string[] = [];
  let field = '';
  let quoted = false;
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text[i];
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i += 2;
          continue;
        }
        quoted = false;
      } else field += c;
      i++;
      continue;
    }
    if (c === '"') quoted = true;
    else if (c === delim) {
      fields.push(field);
      field = '';
    } else if (c === '\n' || c === '\r') {
      fields.push(field);
      rows.push({ fields, complete: true });
      fields = [];
      field = '';
      if (c === '\r' && text[i + 1] === '\n') i++;
    } else field += c;
    i++;
  }
  if (field !== '' || fields.length > 0 || quoted) {
    // The last row has no line end: possibly cut off mid-write. Say so; the caller decides.
    fields.push(field);
    rows.push({ fields, complete: false, quoted });
  }
  return rows.filter((r) => !(r.fields.length === 1 && r.fields[0].trim() === ''));
}

export function parseCsv(text: string, file = '<csv>', delimiter?: string): RunLog {
  const body = text.replace(/^\uFEFF/, '');
  const firstLine = body.slice(0, body.search(/\r?\n|$/));
  const delim = delimiter ?? (firstLine.includes('\t') && !firstLine.includes(',') ? '\t' : ',');
  const rows = parseCsvRows(body, delim);
  if (rows.length === 0) throw new UserError(`${file} is empty`);
  const header = rows[0].fields.map((h) => h.trim());
  const lower = header.map((h) => h.toLowerCase());
  const stepKey = STEP_KEYS.find((k) => lower.includes(k));
  if (stepKey === undefined) {
    throw new UserError(`${file}: the CSV header has no step column (one of ${STEP_KEYS.join(', ')}); it has: ${header.join(', ')}`);
  }
  const stepCol = lower.indexOf(stepKey);
  const table = new SeriesTable();
  for (const row of rows.slice(1)) {
    // A last row cut off mid-write (inside quotes, or short of the header's columns) is not
    // written yet; a complete last row without a final newline is fine.
    if (!row.complete && (row.quoted || row.fields.length < header.length)) continue;
    const step = parseNumberCell(row.fields[stepCol] ?? '');
    if (step === undefined || !Number.isFinite(step)) continue;
    for (let c = 0; c < header.length && c < row.fields.length; c++) {
      if (c === stepCol || header[c] === '') continue;
      const x = parseNumberCell(row.fields[c]);
      if (x !== undefined) table.set(header[c], step, x);
    }
  }
  return table.toLog(file, 'csv');
}

// ---------------------------------------------------------------------------------------------
// TensorBoard event files.

const CRC32C_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32C (Castagnoli, reflected polynomial 0x82F63B78); crc32c("123456789") = 0xE3069283. */
export function crc32c(data: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = CRC32C_TABLE[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** TFRecord's masked CRC: ((crc >>> 15 | crc << 17) + 0xA282EAD8) mod 2³². */
export function maskedCrc32c(data: Uint8Array): number {
  const c = crc32c(data);
  return ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

function looksLikeTfRecord(buf: Buffer): boolean {
  return buf.length >= 12 && buf.readUInt32LE(8) === maskedCrc32c(buf.subarray(0, 8));
}

/**
 * The data of every complete record. A record cut short at the end of the file is "not
 * written yet" and dropped; a CRC mismatch anywhere is corruption (UserError).
 */
export function readTfRecords(buf: Uint8Array, file = '<tfrecord>'): Uint8Array[] {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const out: Uint8Array[] = [];
  let off = 0;
  while (off < buf.length) {
    if (buf.length - off < 12) break; // header not fully written
    const lenCrc = view.getUint32(off + 8, true);
    if (lenCrc !== maskedCrc32c(buf.subarray(off, off + 8))) {
      throw new UserError(`${file} is corrupt: record ${out.length} (byte ${off}) fails its length CRC`);
    }
    const len = Number(view.getBigUint64(off, true));
    const end = off + 12 + len + 4;
    if (end > buf.length) break; // data not fully written
    const data = buf.subarray(off + 12, off + 12 + len);
    if (view.getUint32(off + 12 + len, true) !== maskedCrc32c(data)) {
      throw new UserError(`${file} is corrupt: record ${out.length} (byte ${off}) fails its data CRC`);
    }
    out.push(data);
    off = end;
  }
  return out;
}

/** A minimal protobuf wire-format reader: fields of one message, unknown ones skipped. */
class Proto {
  private off: number;
  private view: DataView;

  constructor(
    readonly buf: Uint8Array,
    private readonly file: string,
  ) {
    this.off = 0;
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  get done(): boolean {
    return this.off >= this.buf.length;
  }

  fail(): never {
    throw new UserError(`${this.file} is corrupt: malformed protobuf in an event record`);
  }

  /** Varint as a JS number (exact below 2⁵³); int64 negatives (10 bytes) come out below 0. */
  varint(): number {
    let result = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.off >= this.buf.length) this.fail();
      const b = this.buf[this.off++];
      result += (b & 0x7f) * mul;
      if (!(b & 0x80)) return result >= 2 ** 63 ? result - 2 ** 64 : result;
      mul *= 128;
    }
    return this.fail();
  }

  tag(): { field: number; wire: number } {
    const t = this.varint();
    return { field: Math.floor(t / 8), wire: t & 7 };
  }

  bytes(): Uint8Array {
    const n = this.varint();
    if (n < 0 || this.off + n > this.buf.length) this.fail();
    const b = this.buf.subarray(this.off, this.off + n);
    this.off += n;
    return b;
  }

  double(): number {
    if (this.off + 8 > this.buf.length) this.fail();
    const x = this.view.getFloat64(this.off, true);
    this.off += 8;
    return x;
  }

  float(): number {
    if (this.off + 4 > this.buf.length) this.fail();
    const x = this.view.getFloat32(this.off, true);
    this.off += 4;
    return x;
  }

  skip(wire: number): void {
    if (wire === 0) this.varint();
    else if (wire === 1) this.need(8);
    else if (wire === 2) this.bytes();
    else if (wire === 5) this.need(4);
    else this.fail(); // groups (3, 4) are not used by TensorBoard; 6, 7 do not exist
  }

  private need(n: number): void {
    if (this.off + n > this.buf.length) this.fail();
    this.off += n;
  }
}

// TensorFlow DataType values used by scalar summaries.
const DT_FLOAT = 1;
const DT_DOUBLE = 2;
const DT_INT32 = 3;
const DT_INT64 = 9;
const DT_BFLOAT16 = 14;
const DT_HALF = 19;

function parseTfEvents(buf: Uint8Array, file = '<events>'): RunLog {
  const table = new SeriesTable();
  for (const rec of readTfRecords(buf, file)) {
    const ev = new Proto(rec, file);
    let step = 0;
    const summaries: Uint8Array[] = [];
    while (!ev.done) {
      const { field, wire } = ev.tag();
      if (field === 2 && wire === 0) step = ev.varint();
      else if (field === 5 && wire === 2) summaries.push(ev.bytes());
      else ev.skip(wire);
    }
    for (const s of summaries) {
      const summary = new Proto(s, file);
      while (!summary.done) {
        const { field, wire } = summary.tag();
        if (field === 1 && wire === 2) {
          const v = decodeValue(summary.bytes(), file);
          if (v) table.set(v.tag, step, v.value);
        } else summary.skip(wire);
      }
    }
  }
  return table.toLog(file, 'tfevents');
}

/** Summary.Value → (tag, scalar) when it holds a simple_value or a one-element numeric tensor. */
function decodeValue(bytes: Uint8Array, file: string): { tag: string; value: number } | null {
  const p = new Proto(bytes, file);
  let tag: string | null = null;
  let value: number | null = null;
  while (!p.done) {
    const { field, wire } = p.tag();
    if (field === 1 && wire === 2) tag = Buffer.from(p.bytes()).toString('utf8');
    else if (field === 2 && wire === 5) value = p.float();
    else if (field === 8 && wire === 2) value = decodeScalarTensor(p.bytes(), file);
    else p.skip(wire);
  }
  return tag !== null && value !== null ? { tag, value } : null;
}

/** TensorProto{dtype=1, tensor_shape=2, tensor_content=4, float_val=5, double_val=6, int_val=7, int64_val=10, half_val=13}. */
function decodeScalarTensor(bytes: Uint8Array, file: string): number | null {
  const p = new Proto(bytes, file);
  let dtype = 0;
  let numel = 1;
  let content: Uint8Array | null = null;
  const vals: number[] = [];
  const packed = (b: Uint8Array, read: (q: Proto) => number) => {
    const q = new Proto(b, file);
    while (!q.done) vals.push(read(q));
  };
  while (!p.done) {
    const { field, wire } = p.tag();
    if (field === 1 && wire === 0) dtype = p.varint();
    else if (field === 2 && wire === 2) numel = shapeNumel(p.bytes(), file);
    else if (field === 4 && wire === 2) content = p.bytes();
    else if (field === 5 && wire === 5) vals.push(p.float());
    else if (field === 5 && wire === 2) packed(p.bytes(), (q) => q.float());
    else if (field === 6 && wire === 1) vals.push(p.double());
    else if (field === 6 && wire === 2) packed(p.bytes(), (q) => q.double());
    else if ((field === 7 || field === 10 || field === 13) && wire === 0) vals.push(p.varint());
    else if ((field === 7 || field === 10 || field === 13) && wire === 2) packed(p.bytes(), (q) => q.varint());
    else p.skip(wire);
  }
  if (numel !== 1) return null;
  if (content) {
    const v = new DataView(content.buffer, content.byteOffset, content.byteLength);
    if (dtype === DT_FLOAT && content.length === 4) return v.getFloat32(0, true);
    if (dtype === DT_DOUBLE && content.length === 8) return v.getFloat64(0, true);
    if (dtype === DT_INT32 && content.length === 4) return v.getInt32(0, true);
    if (dtype === DT_INT64 && content.length === 8) return Number(v.getBigInt64(0, true));
    if (dtype === DT_HALF && content.length === 2) return halfToFloat(v.getUint16(0, true));
    if (dtype === DT_BFLOAT16 && content.length === 2) return bf16ToFloat(v.getUint16(0, true));
    return null;
  }
  if (vals.length !== 1) return null;
  if (dtype === DT_HALF) return halfToFloat(vals[0]);
  if (dtype === DT_BFLOAT16) return bf16ToFloat(vals[0]);
  if (dtype === DT_FLOAT || dtype === DT_DOUBLE || dtype === DT_INT32 || dtype === DT_INT64) return vals[0];
  return null;
}

/** TensorShapeProto{dim=2 repeated Dim{size=1}, unknown_rank=3} → element count. */
function shapeNumel(bytes: Uint8Array, file: string): number {
  const p = new Proto(bytes, file);
  let numel = 1;
  while (!p.done) {
    const { field, wire } = p.tag();
    if (field === 2 && wire === 2) {
      const d = new Proto(p.bytes(), file);
      let size = 0;
      while (!d.done) {
        const t = d.tag();
        if (t.field === 1 && t.wire === 0) size = d.varint();
        else d.skip(t.wire);
      }
      numel *= size;
    } else if (field === 3 && wire === 0) {
      if (p.varint()) return -1;
    } else p.skip(wire);
  }
  return numel;
}

const BITS = new Uint32Array(1);
const AS_FLOAT = new Float32Array(BITS.buffer);

function halfToFloat(h: number): number {
  BITS[0] = halfBitsToFloatBits(h);
  return AS_FLOAT[0];
}

function bf16ToFloat(b: number): number {
  BITS[0] = (b & 0xffff) << 16;
  return AS_FLOAT[0];
}

/**
 * safetensors reader and writer (https://github.com/huggingface/safetensors, format only).
 *
 * Layout: u64 little-endian N, N bytes of UTF-8 JSON (starts with '{', padded with spaces),
 * then the data region. Each JSON entry is `name: {dtype, shape, data_offsets: [begin, end)}`
 * with offsets relative to the data region; `__metadata__` is a string→string map.
 *
 * Every rule the format imposes is checked before any tensor is read, and each failure is a
 * `SafetensorsError` with a named code and a message that names the tensor: a bad file is a
 * mistake the user can fix (wrong path, truncated download), not a crash.
 *
 * Keel computes in float32 and writes F32 by default; it reads F32, F16, BF16 and F64 and writes
 * all four (F16/BF16 rounded to nearest, ties to even, once from float32 or float64 values; see
 * `encodeFloats`). Typed-array views assume a little-endian host (every platform Node ships for).
 */
import fs from 'node:fs';
import { UserError } from '../errors.ts';
import { writeFileAtomic } from './atomic.ts';
import { bf16ToF32, f16ToF32, floatBitsToHalfBits, roundToOddBits } from '../util/float16.ts';

export type DType = 'F32' | 'F16' | 'BF16' | 'F64';

/** Bytes per element. */
export const DTYPE_SIZE: Readonly<Record<DType, number>> = { F32: 4, F16: 2, BF16: 2, F64: 8 };

/** dtypes of the format that Keel recognizes but does not read (named in the error). */
const OTHER_DTYPES = new Set([
  'BOOL',
  'U8',
  'I8',
  'I16',
  'U16',
  'I32',
  'U32',
  'I64',
  'U64',
  'F8_E5M2',
  'F8_E4M3',
  'F8_E8M0',
  'F6_E2M3',
  'F6_E3M2',
  'F4',
  'C64',
]);

/** Same limit as the reference implementation: a larger header is almost surely garbage. */
export const MAX_HEADER_SIZE = 100_000_000;

export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  /** Byte offsets relative to the start of the data region, [begin, end). */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  /** N: the length of the JSON header in bytes; the data region starts at 8 + N. */
  headerSize: number;
  /** Sorted by `begin` (the order of the data in the file). */
  tensors: TensorInfo[];
  metadata: Record<string, string>;
}

export type SafetensorsErrorCode =
  | 'HeaderTooSmall'
  | 'HeaderTooLarge'
  | 'InvalidHeaderLength'
  | 'InvalidJson'
  | 'InvalidHeaderStart'
  | 'DuplicateKey'
  | 'InvalidTensorInfo'
  | 'InvalidDtype'
  | 'InvalidShape'
  | 'InvalidOffset'
  | 'TensorSizeMismatch'
  | 'HoleOrOverlap'
  | 'FileSizeMismatch'
  | 'InvalidMetadata'
  | 'TensorNotFound'
  | 'FileError';

export class SafetensorsError extends UserError {
  constructor(
    readonly code: SafetensorsErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'SafetensorsError';
  }
}

function fail(code: SafetensorsErrorCode, message: string): never {
  throw new SafetensorsError(code, message);
}

// ---------------------------------------------------------------------------------------------
// Header parsing

/**
 * Parses and validates the header. `buf` starts at the beginning of the file and holds at least
 * its first 8 + N bytes (or the whole file, if shorter); `fileSize` is the size of the whole file.
 * The length prefix is checked before `buf` must hold the JSON, so a caller may pass just the
 * first 8 bytes to learn that the file is bad.
 */
export function parseHeader(buf: Uint8Array, fileSize: number): SafetensorsHeader {
  const n = readHeaderLength(buf, fileSize);
  if (buf.byteLength < 8 + n) {
    throw new RangeError(`parseHeader needs the first ${8 + n} bytes of the file, got ${buf.byteLength}`);
  }
  const text = decodeHeaderText(buf.subarray(8, 8 + n));
  const root = parseJson(text);
  if (!(root instanceof Map)) fail('InvalidHeaderStart', 'the header JSON is not an object');
  let metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  for (const [key, value] of root) {
    if (key === '__metadata__') metadata = checkMetadata(value);
    else tensors.push(checkTensorEntry(key, value));
  }
  tensors.sort((a, b) => a.begin - b.begin || a.end - b.end);
  const dataSize = checkContiguous(tensors);
  if (8 + n + dataSize !== fileSize) {
    const what = 8 + n + dataSize > fileSize ? 'the file is truncated' : 'the file has trailing bytes';
    fail('FileSizeMismatch', `the header describes ${8 + n + dataSize} bytes but the file has ${fileSize}: ${what}`);
  }
  return { headerSize: n, tensors, metadata };
}

/** Reads N and checks it against the limit and the file size. */
function readHeaderLength(buf: Uint8Array, fileSize: number): number {
  if (fileSize < 8 || buf.byteLength < 8) {
    fail('HeaderTooSmall', `the file is ${fileSize} bytes, too short to hold the 8-byte header length`);
  }
  const n64 = new DataView(buf.buffer, buf.byteOffset, 8).getBigUint64(0, true);
  if (n64 > BigInt(MAX_HEADER_SIZE)) {
    fail('HeaderTooLarge', `the header length is ${n64} bytes, over the ${MAX_HEADER_SIZE}-byte limit (not a safetensors file?)`);
  }
  const n = Number(n64);
  if (n < 2) fail('HeaderTooSmall', `the header length is ${n} bytes; the smallest header, '{}', has 2`);
  if (8 + n > fileSize) {
    fail('InvalidHeaderLength', `the header length is ${n} bytes but only ${fileSize - 8} follow it (truncated file?)`);
  }
  return n;
}

function decodeHeaderText(bytes: Uint8Array): string {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    fail('InvalidJson', 'the header is not valid UTF-8');
  }
  if (text[0] !== '{') {
    fail('InvalidHeaderStart', `the header must start with '{' but starts with ${JSON.stringify(text.slice(0, 8))}`);
  }
  return text;
}

function checkMetadata(value: Json): Record<string, string> {
  if (value === null) return {}; // the reference reader accepts a null map
  if (!(value instanceof Map)) fail('InvalidMetadata', '__metadata__ must be an object of strings');
  const entries: [string, string][] = [];
  for (const [k, v] of value) {
    if (typeof v !== 'string') {
      fail('InvalidMetadata', `__metadata__.${k} must be a string, got ${describe(v)}`);
    }
    entries.push([k, v]);
  }
  return Object.fromEntries(entries); // fromEntries defines own properties, even '__proto__'
}

function checkTensorEntry(name: string, value: Json): TensorInfo {
  const where = `tensor ${JSON.stringify(name)}`;
  if (!(value instanceof Map)) fail('InvalidTensorInfo', `${where}: entry must be an object, got ${describe(value)}`);
  const dtype = checkDtype(where, value.get('dtype'));
  const shape = checkShape(where, value.get('shape'));
  const [begin, end] = checkOffsets(where, value.get('data_offsets'));
  const numel = shape.reduce((a, b) => a * b, 1);
  const nbytes = numel * DTYPE_SIZE[dtype];
  if (!Number.isSafeInteger(nbytes)) fail('InvalidShape', `${where}: shape [${shape}] is too large`);
  if (end - begin !== nbytes) {
    fail('TensorSizeMismatch', `${where}: shape [${shape}] of ${dtype} needs ${nbytes} bytes but data_offsets [${begin}, ${end}) hold ${end - begin}`);
  }
  return { name, dtype, shape, begin, end };
}

function checkDtype(where: string, v: Json | undefined): DType {
  if (typeof v !== 'string') fail('InvalidDtype', `${where}: dtype must be a string, got ${describe(v)}`);
  if (Object.hasOwn(DTYPE_SIZE, v)) return v as DType;
  const why = OTHER_DTYPES.has(v) ? 'is not supported' : 'is not a safetensors dtype';
  fail('InvalidDtype', `${where}: dtype ${v} ${why} (Keel reads F32, F16, BF16, F64)`);
}

function checkShape(where: string, v: Json | undefined): number[] {
  if (!Array.isArray(v)) fail('InvalidShape', `${where}: shape must be an array, got ${describe(v)}`);
  for (const d of v) {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
      fail('InvalidShape', `${where}: shape dimensions must be non-negative integers, got ${describe(d)}`);
    }
  }
  return v as number[];
}

function checkOffsets(where: string, v: Json | undefined): [number, number] {
  const ok = Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0);
  if (!ok) fail('InvalidOffset', `${where}: data_offsets must be two non-negative integers, got ${describe(v)}`);
  const [begin, end] = v as [number, number];
  if (end < begin) fail('InvalidOffset', `${where}: data_offsets [${begin}, ${end}) end before they begin`);
  return [begin, end];
}

/** Tensors (sorted by begin) must tile the data region from 0. Returns its size. */
function checkContiguous(sorted: TensorInfo[]): number {
  let expected = 0;
  let prev = '';
  for (const t of sorted) {
    if (t.begin !== expected) {
      const after = prev ? `after tensor ${JSON.stringify(prev)}, which ends at ${expected}` : 'at the data start, 0';
      const kind = t.begin > expected ? 'leaves a hole' : 'overlaps';
      fail('HoleOrOverlap', `tensor ${JSON.stringify(t.name)} begins at ${t.begin}: it ${kind} ${after}`);
    }
    expected = t.end;
    prev = t.name;
  }
  return expected;
}

// ---------------------------------------------------------------------------------------------
// A small JSON parser: JSON.parse silently keeps the last of two equal keys, and the format
// forbids duplicates. Objects become Maps so that names such as "__proto__" stay plain keys.

type Json = null | boolean | number | string | Json[] | Map<string, Json>;

const MAX_DEPTH = 64; // a real header nests 3 deep; deeper input is garbage, not a stack overflow
const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;

function parseJson(text: string): Json {
  const p = { text, pos: 0 };
  const value = parseValue(p, 0);
  skipWs(p);
  if (p.pos !== text.length) jsonFail(p, 'unexpected text after the header object');
  return value;
}

interface Cursor {
  text: string;
  pos: number;
}

function jsonFail(p: Cursor, what: string): never {
  fail('InvalidJson', `the header is not valid JSON: ${what} at character ${p.pos}`);
}

function skipWs(p: Cursor): void {
  while (p.pos < p.text.length) {
    const c = p.text.charCodeAt(p.pos);
    if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) break;
    p.pos++;
  }
}

function parseValue(p: Cursor, depth: number): Json {
  if (depth > MAX_DEPTH) jsonFail(p, `nesting deeper than ${MAX_DEPTH}`);
  skipWs(p);
  const c = p.text[p.pos];
  if (c === '{') return parseObject(p, depth);
  if (c === '[') return parseArray(p, depth);
  if (c === '"') return parseString(p);
  for (const [word, value] of [
    ['true', true],
    ['false', false],
    ['null', null],
  ] as const) {
    if (p.text.startsWith(word, p.pos)) {
      p.pos += word.length;
      return value;
    }
  }
  NUMBER.lastIndex = p.pos;
  const m = NUMBER.exec(p.text);
  if (!m) jsonFail(p, c === undefined ? 'unexpected end' : `unexpected ${JSON.stringify(c)}`);
  p.pos += m[0].length;
  return Number(m[0]);
}

function parseObject(p: Cursor, depth: number): Map<string, Json> {
  const out = new Map<string, Json>();
  p.pos++; // '{'
  skipWs(p);
  if (p.text[p.pos] === '}') {
    p.pos++;
    return out;
  }
  for (;;) {
    skipWs(p);
    if (p.text[p.pos] !== '"') jsonFail(p, 'expected a string key');
    const key = parseString(p);
    if (out.has(key)) fail('DuplicateKey', `the header has the key ${JSON.stringify(key)} twice`);
    skipWs(p);
    if (p.text[p.pos] !== ':') jsonFail(p, "expected ':'");
    p.pos++;
    out.set(key, parseValue(p, depth + 1));
    if (endOfList(p, '}')) return out;
  }
}

function parseArray(p: Cursor, depth: number): Json[] {
  const out: Json[] = [];
  p.pos++; // '['
  skipWs(p);
  if (p.text[p.pos] === ']') {
    p.pos++;
    return out;
  }
  for (;;) {
    out.push(parseValue(p, depth + 1));
    if (endOfList(p, ']')) return out;
  }
}

/** After an element: ',' continues (false), `close` ends (true), anything else is an error. */
function endOfList(p: Cursor, close: string): boolean {
  skipWs(p);
  const c = p.text[p.pos++];
  if (c === close) return true;
  if (c === ',') return false;
  p.pos--;
  return jsonFail(p, `expected ',' or '${close}'`);
}

/** Finds the closing quote, then lets JSON.parse decode (and check) the escapes. */
function parseString(p: Cursor): string {
  const start = p.pos++;
  for (;;) {
    const c = p.text.charCodeAt(p.pos);
    if (Number.isNaN(c)) jsonFail(p, 'unterminated string');
    if (c < 0x20) jsonFail(p, 'control character in a string');
    p.pos++;
    if (c === 0x5c)
      p.pos++; // backslash: skip the escaped character
    else if (c === 0x22) break;
  }
  try {
    return JSON.parse(p.text.slice(start, p.pos)) as string;
  } catch {
    p.pos = start;
    return jsonFail(p, 'bad escape in a string');
  }
}

function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v instanceof Map) return 'an object';
  const s = JSON.stringify(v);
  return s.length > 40 ? `${s.slice(0, 40)}…` : s;
}

// ---------------------------------------------------------------------------------------------
// dtype conversion

/** Converts a tensor's raw little-endian bytes to float32; views the bytes when F32 and aligned. */
function toFloat32(bytes: Uint8Array, dtype: DType): Float32Array {
  const size = DTYPE_SIZE[dtype];
  const n = bytes.byteLength / size;
  // Typed arrays need offsets aligned to their element size: copy when the data is not.
  // (new Uint8Array(view) copies; Buffer#slice would not: it returns a view.)
  const aligned = bytes.byteOffset % size === 0 ? bytes : new Uint8Array(bytes);
  switch (dtype) {
    case 'F32':
      return new Float32Array(aligned.buffer, aligned.byteOffset, n);
    case 'F64':
      return Float32Array.from(new Float64Array(aligned.buffer, aligned.byteOffset, n));
    case 'BF16':
      return bf16ToF32(new Uint16Array(aligned.buffer, aligned.byteOffset, n));
    case 'F16':
      return f16ToF32(new Uint16Array(aligned.buffer, aligned.byteOffset, n));
  }
}

// ---------------------------------------------------------------------------------------------
// Reading files

export interface SafetensorsFile {
  tensors: Map<string, Float32Array>;
  metadata: Record<string, string>;
  infos: TensorInfo[];
}

/** Reads a whole file into float32 tensors (F32 data aligned in the file is viewed, not copied). */
export function readSafetensors(file: string): SafetensorsFile {
  const buf = fileCall(file, () => fs.readFileSync(file));
  const header = inFile(file, () => parseHeader(buf, buf.byteLength));
  const data = buf.subarray(8 + header.headerSize);
  const tensors = new Map<string, Float32Array>();
  for (const t of header.tensors) tensors.set(t.name, toFloat32(data.subarray(t.begin, t.end), t.dtype));
  return { tensors, metadata: header.metadata, infos: header.tensors };
}

export interface SafetensorsReader {
  file: string;
  /** N: the JSON header's length; the data region starts at byte 8 + N. */
  headerSize: number;
  infos: TensorInfo[];
  metadata: Record<string, string>;
  /** Reads one tensor from disk, converted to float32. */
  read(name: string): Float32Array;
  /**
   * Fills `out` with the raw little-endian bytes of tensor `name` from byte `start` of the
   * tensor on (a positioned read, no allocation): streaming consumers read big tensors in chunks.
   */
  readInto(name: string, out: Uint8Array, start?: number): void;
  /**
   * The file position of bytes [start, start + length) of tensor `name`, checked like readInto,
   * for positioned reads of `fd` elsewhere (keel average reads on libuv's threads, in the addon).
   */
  position(name: string, start: number, length: number): number;
  /** The open file descriptor (valid until close). */
  readonly fd: number;
  close(): void;
}

/** Opens a file lazily: only the header is read now; tensors are read one at a time. */
export function openSafetensors(file: string): SafetensorsReader {
  const fd = fileCall(file, () => fs.openSync(file, 'r'));
  try {
    const size = fileCall(file, () => fs.fstatSync(fd).size);
    return makeReader(file, fd, readHeaderFromFd(file, fd, size));
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

function makeReader(file: string, fd: number, header: SafetensorsHeader): SafetensorsReader {
  const byName = new Map(header.tensors.map((t) => [t.name, t]));
  const dataStart = 8 + header.headerSize;
  /** The file position of byte `start` of tensor t, after checking that `out` fits in it. */
  const rangeStart = (t: TensorInfo, length: number, start: number): number => {
    if (!(Number.isSafeInteger(start) && start >= 0 && start + length <= t.end - t.begin)) {
      throw new RangeError(`${file}: bytes [${start}, ${start + length}) are outside tensor ${t.name} (${t.end - t.begin} bytes)`);
    }
    return dataStart + t.begin + start;
  };
  let open = true;
  const find = (name: string): TensorInfo => {
    if (!open) throw new Error(`${file}: read after close`);
    const t = byName.get(name);
    if (!t) fail('TensorNotFound', `${file}: no tensor named ${JSON.stringify(name)}`);
    return t;
  };
  return {
    file,
    headerSize: header.headerSize,
    infos: header.tensors,
    metadata: header.metadata,
    read(name: string): Float32Array {
      const t = find(name);
      return toFloat32(readAt(file, fd, dataStart + t.begin, t.end - t.begin), t.dtype);
    },
    readInto(name: string, out: Uint8Array, start = 0): void {
      fillAt(file, fd, rangeStart(find(name), out.byteLength, start), out);
    },
    position(name: string, start: number, length: number): number {
      return rangeStart(find(name), length, start);
    },
    fd,
    close(): void {
      if (open) fs.closeSync(fd);
      open = false;
    },
  };
}

/** Reads the length prefix, then (if it is plausible) the JSON, and validates both. */
function readHeaderFromFd(file: string, fd: number, size: number): SafetensorsHeader {
  return inFile(file, () => {
    const head = readAt(file, fd, 0, Math.min(8, size));
    const n = head.byteLength === 8 ? new DataView(head.buffer).getBigUint64(0, true) : 0n;
    // An implausible n is reported by parseHeader from the first 8 bytes alone.
    const plausible = n <= BigInt(MAX_HEADER_SIZE) && 8 + Number(n) <= size;
    return parseHeader(plausible ? readAt(file, fd, 0, 8 + Number(n)) : head, size);
  });
}

/** Reads exactly `length` bytes at `position` into a fresh (hence aligned) buffer. */
function readAt(file: string, fd: number, position: number, length: number): Uint8Array {
  return fillAt(file, fd, position, new Uint8Array(length));
}

/** Fills `out` from `position` on (readSync may return less than asked: loop). */
function fillAt(file: string, fd: number, position: number, out: Uint8Array): Uint8Array {
  const length = out.byteLength;
  let done = 0;
  while (done < length) {
    const got = fileCall(file, () => fs.readSync(fd, out, done, length - done, position + done));
    if (got === 0) throw endedEarly(file);
    done += got;
  }
  return out;
}

/** Prefixes format errors with the file name. */
function inFile<T>(file: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof SafetensorsError && !e.message.startsWith(`${file}:`)) {
      throw new SafetensorsError(e.code, `${file}: ${e.message}`);
    }
    throw e;
  }
}

/** Turns file-system errors into one-line user errors that name the file. */
function fileCall<T>(file: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw fileError(file, e);
  }
}

/**
 * The error to throw for `e`, raised while reading `file`: a file-system error (one with a
 * string `code`) becomes a one-line FileError naming the file; anything else is `e` itself.
 */
export function fileError(file: string, e: unknown): unknown {
  const code = (e as NodeJS.ErrnoException)?.code;
  const why: Record<string, string> = {
    ENOENT: 'no such file (check the path)',
    EISDIR: 'is a directory, not a .safetensors file',
    EACCES: 'permission denied',
    EPERM: 'permission denied',
    ERR_FS_FILE_TOO_LARGE: 'too large to read at once (use openSafetensors to stream it)',
  };
  return typeof code === 'string' ? new SafetensorsError('FileError', `${file}: ${why[code] ?? (e as Error).message}`) : e;
}

/** A read of `file` found its end before the range it asked for. */
export function endedEarly(file: string): SafetensorsError {
  return new SafetensorsError('FileError', `${file}: the file ended early (it changed or was truncated while being read)`);
}

/**
 * Encodes the first `n` values (default: all) as little-endian `dtype` bytes into `out` (fresh
 * when not given; it must be aligned to the dtype's size), each rounded once to nearest even:
 * F64 and, from float32 input, F32 are exact. `scratch` (≥ n floats) avoids an allocation when
 * rounding float64 values to F16/BF16.
 */
export function encodeFloats(src: Float32Array | Float64Array, dtype: DType, out?: Uint8Array, n = src.length, scratch?: Float32Array): Uint8Array {
  const size = DTYPE_SIZE[dtype];
  const bytes = out ?? new Uint8Array(n * size);
  if (bytes.byteLength < n * size) throw new RangeError(`encodeFloats: ${n} ${dtype} values need ${n * size} bytes, got ${bytes.byteLength}`);
  if (bytes.byteOffset % size !== 0) throw new RangeError(`encodeFloats: the output must be aligned to ${size} bytes`);
  const part = n === src.length ? src : src.subarray(0, n);
  if (dtype === 'F32') {
    new Float32Array(bytes.buffer, bytes.byteOffset, n).set(part);
    return bytes;
  }
  if (dtype === 'F64') {
    new Float64Array(bytes.buffer, bytes.byteOffset, n).set(part);
    return bytes;
  }
  const h = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
  let u32: Uint32Array;
  if (part instanceof Float32Array) {
    u32 = new Uint32Array(part.buffer, part.byteOffset, n);
  } else {
    const f32 = scratch && scratch.length >= n ? scratch : new Float32Array(n);
    u32 = new Uint32Array(f32.buffer, f32.byteOffset, n);
    roundToOddBits(part, f32, u32, n);
  }
  if (dtype === 'BF16') {
    for (let i = 0; i < n; i++) {
      const u = u32[i];
      h[i] = (u & 0x7fffffff) > 0x7f800000 ? (u >>> 16) | 0x40 : (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
    }
  } else {
    for (let i = 0; i < n; i++) h[i] = floatBitsToHalfBits(u32[i]);
  }
  return bytes;
}

// ---------------------------------------------------------------------------------------------
// Writing

export interface TensorToWrite {
  name: string;
  shape: readonly number[];
  data: Float32Array;
  /** Stored dtype (default F32); F16/BF16 round to nearest even, F64 widens exactly. */
  dtype?: DType;
}

/** What a header describes about a tensor to be written; offsets are assigned in order. */
export interface TensorHeaderEntry {
  name: string;
  dtype: DType;
  shape: readonly number[];
}

export interface EncodedHeader {
  /** The length prefix and the space-padded JSON: the file's first 8 + headerSize bytes. */
  bytes: Buffer;
  headerSize: number;
  /** The tensors with their offsets, in the given (= file) order. */
  tensors: TensorInfo[];
  /** Size of the data region that must follow. */
  dataSize: number;
}

/**
 * The header for tensors stored contiguously in the given order: with it written first, a
 * writer can stream the data (offsets follow from dtypes and shapes alone).
 */
export function encodeHeader(entries: readonly TensorHeaderEntry[], metadata?: Record<string, string>): EncodedHeader {
  const parts: string[] = [];
  if (metadata !== undefined) parts.push(`"__metadata__":${encodeMetadata(metadata)}`);
  const seen = new Set<string>();
  const tensors: TensorInfo[] = [];
  let offset = 0;
  for (const t of entries) {
    const numel = checkEntryToWrite(t, seen);
    const end = offset + numel * DTYPE_SIZE[t.dtype];
    parts.push(`${JSON.stringify(t.name)}:{"dtype":"${t.dtype}","shape":[${t.shape.join(',')}],"data_offsets":[${offset},${end}]}`);
    tensors.push({ name: t.name, dtype: t.dtype, shape: [...t.shape], begin: offset, end });
    offset = end;
  }
  const json = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  // Pad with spaces so that the data region starts 8-byte aligned (as the reference writer does).
  const n = Math.ceil(json.byteLength / 8) * 8;
  const bytes = Buffer.alloc(8 + n, 0x20);
  bytes.writeBigUInt64LE(BigInt(n), 0);
  bytes.set(json, 8);
  return { bytes, headerSize: n, tensors, dataSize: offset };
}

/** Header bytes (length prefix + padded JSON) and the data chunks, in file order. */
function encodeParts(tensors: readonly TensorToWrite[], metadata?: Record<string, string>): Uint8Array[] {
  const dtypeOf = (t: TensorToWrite): DType => t.dtype ?? 'F32';
  tensors.forEach((t) => {
    if (!Object.hasOwn(DTYPE_SIZE, dtypeOf(t))) throw new Error(`tensor ${t.name}: cannot write dtype ${t.dtype}`);
    const numel = t.shape.reduce((a, b) => a * b, 1);
    if (numel !== t.data.length) {
      throw new Error(`tensor ${t.name}: shape [${t.shape}] has ${numel} elements but the data has ${t.data.length}`);
    }
  });
  const header = encodeHeader(
    tensors.map((t) => ({ name: t.name, dtype: dtypeOf(t), shape: t.shape })),
    metadata,
  );
  const data = tensors.map((t) =>
    dtypeOf(t) === 'F32' ? new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength) : encodeFloats(t.data, dtypeOf(t)),
  );
  return [header.bytes, ...data];
}

function encodeMetadata(metadata: Record<string, string>): string {
  const parts = Object.entries(metadata).map(([k, v]) => {
    if (typeof v !== 'string') throw new TypeError(`safetensors metadata ${k} must be a string, got ${typeof v}`);
    return `${JSON.stringify(k)}:${JSON.stringify(v)}`;
  });
  return `{${parts.join(',')}}`;
}

/** Checks one entry to write; returns its element count. */
function checkEntryToWrite(t: TensorHeaderEntry, seen: Set<string>): number {
  if (t.name === '__metadata__') throw new Error('a tensor cannot be named __metadata__');
  if (seen.has(t.name)) throw new Error(`tensor ${t.name} is given twice`);
  seen.add(t.name);
  if (!Object.hasOwn(DTYPE_SIZE, t.dtype)) throw new Error(`tensor ${t.name}: cannot write dtype ${t.dtype}`);
  if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new Error(`tensor ${t.name}: shape [${t.shape}] must hold non-negative integers`);
  }
  const numel = t.shape.reduce((a, b) => a * b, 1);
  if (!Number.isSafeInteger(numel * DTYPE_SIZE[t.dtype])) throw new Error(`tensor ${t.name}: shape [${t.shape}] is too large`);
  return numel;
}

/** The file's bytes, for in-memory use and tests. Tensors are stored in the given order. */
export function encodeSafetensors(tensors: readonly TensorToWrite[], metadata?: Record<string, string>): Buffer {
  return Buffer.concat(encodeParts(tensors, metadata));
}

/** Writes tensors atomically: the file holds the old content or all of the new one. */
export function writeSafetensors(file: string, tensors: readonly TensorToWrite[], metadata?: Record<string, string>): void {
  writeFileAtomic(file, encodeParts(tensors, metadata));
}

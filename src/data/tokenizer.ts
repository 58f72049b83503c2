/**
 * Tokenizers: text ↔ token ids.
 *
 * - bytes: one token per UTF-8 byte (alphabet 256). Keel's default: no vocabulary to ship, and
 *   a small model's embedding stays small.
 * - gpt2: GPT-2's byte-level BPE (alphabet 50,257, id 50256 = <|endoftext|>), from the
 *   gpt-tokenizer package (its r50k_base encoding is GPT-2's). The model's vocabulary is padded
 *   to 50,304 (a multiple of 64, as nanoGPT does) so the vocabulary-sized matmuls tile evenly;
 *   ids ≥ 50,257 never occur in data and are never sampled.
 *
 * The tokenizer a model was trained with is recorded in its checkpoint's metadata (`tokenizer`;
 * absent in older checkpoints, which are all bytes).
 */
import { createRequire } from 'node:module';
import { UserError } from '../errors.ts';

export const TOKENIZERS = ['bytes', 'gpt2'] as const;
export type TokenizerName = (typeof TOKENIZERS)[number];

/** Token ids in memory: bytes fit in 8 bits, GPT-2 ids in 16 (as nanoGPT's .bin files store them). */
export type TokenArray = Uint8Array | Uint16Array;

export interface Tokenizer {
  name: TokenizerName;
  /** Ids the tokenizer produces: 0 … alphabet − 1. */
  alphabet: number;
  /** The vocabulary a preset model gets with this tokenizer (≥ alphabet). */
  vocabSize: number;
  /** Token ids of UTF-8 text (special-token names in the text are plain text). */
  encode(text: Uint8Array): TokenArray;
  /** Several documents as one stream, with the tokenizer's document separator between them. */
  encodeDocuments(docs: Uint8Array[]): TokenArray;
  /** Text of token ids; an incomplete UTF-8 sequence becomes U+FFFD. */
  decode(ids: ArrayLike<number>): string;
}

const BYTES: Tokenizer = {
  name: 'bytes',
  alphabet: 256,
  vocabSize: 256,
  encode: (text) => text,
  // A blank line between documents, so the last line of one never runs into the next.
  encodeDocuments: (docs) => joinArrays(docs, Uint8Array.of(10, 10), Uint8Array),
  decode: (ids) => Buffer.from(Uint8Array.from(ids)).toString('utf8'),
};

const GPT2_ALPHABET = 50257;
const GPT2_EOT = 50256;

interface Bpe {
  encode(text: string, options: { disallowedSpecial: Set<string> }): number[];
  /** Per token: its text, or its bytes when they are not whole UTF-8 characters. */
  bytePairEncodingCoreProcessor: { decodeNativeGenerator(ids: Iterable<number>): Iterable<string | Uint8Array> };
}

let bpe: Bpe | null = null;

/** gpt-tokenizer's GPT-2 encoding, loaded on first use (its tables take ~0.1 s). */
function gpt2Bpe(): Bpe {
  bpe ??= createRequire(import.meta.url)('gpt-tokenizer/cjs/encoding/r50k_base').default as Bpe;
  return bpe;
}

/**
 * gpt-tokenizer's own decode() streams byte tokens through one TextDecoder shared by every
 * call, so the bytes of a character cut off at the end surface at the start of the next call.
 * Keel joins each token's bytes and decodes them once (the package version is pinned for this).
 */
function gpt2Decode(ids: ArrayLike<number>): string {
  const list = Array.from(ids);
  for (const id of list) {
    if (!(Number.isInteger(id) && id >= 0 && id < GPT2_ALPHABET)) throw new UserError(`${id} is not a GPT-2 token id (0 … ${GPT2_ALPHABET - 1})`);
  }
  const enc = new TextEncoder();
  const parts = [...gpt2Bpe().bytePairEncodingCoreProcessor.decodeNativeGenerator(list)];
  return Buffer.concat(parts.map((p) => (typeof p === 'string' ? enc.encode(p) : p))).toString('utf8');
}

const GPT2: Tokenizer = {
  name: 'gpt2',
  alphabet: GPT2_ALPHABET,
  vocabSize: 50304,
  encode: (text) => Uint16Array.from(gpt2Bpe().encode(utf8(text), { disallowedSpecial: new Set() })),
  encodeDocuments: (docs) =>
    joinArrays(
      docs.map((d) => GPT2.encode(d)),
      Uint16Array.of(GPT2_EOT),
      Uint16Array,
    ),
  decode: gpt2Decode,
};

export function tokenizerOf(name: string): Tokenizer {
  if (name === 'bytes') return BYTES;
  if (name === 'gpt2') return GPT2;
  throw new UserError(`unknown tokenizer "${name}": use ${TOKENIZERS.join(' or ')}`);
}

/** The tokenizer recorded in a checkpoint's metadata (none: bytes, Keel's only one before gpt2). */
export function tokenizerOfMetadata(metadata: Record<string, string>, source: string): Tokenizer {
  const name = metadata.tokenizer ?? 'bytes';
  if (!(TOKENIZERS as readonly string[]).includes(name)) {
    throw new UserError(`${source} was trained with tokenizer "${name}", which this version of Keel does not know (it knows ${TOKENIZERS.join(', ')})`);
  }
  return tokenizerOf(name);
}

function utf8(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8');
}

function joinArrays<A extends TokenArray>(parts: A[], separator: A, make: new (n: number) => A): A {
  if (parts.length === 1) return parts[0];
  const total = parts.reduce((n, p) => n + p.length, 0) + separator.length * Math.max(0, parts.length - 1);
  const out = new make(total);
  let at = 0;
  parts.forEach((p, i) => {
    if (i > 0) {
      out.set(separator, at);
      at += separator.length;
    }
    out.set(p, at);
    at += p.length;
  });
  return out;
}

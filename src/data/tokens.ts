/**
 * Token streams: ids in memory (a typed array), or a nanoGPT-style token file read window by
 * window, so a file larger than memory (nanoGPT's OpenWebText train.bin is 17 GB) trains as
 * well as a small one.
 *
 * nanoGPT's format (its prepare.py scripts): the ids as little-endian uint16, nothing else —
 * no header, no count; GPT-2 BPE ids (< 50,257).
 */
import fs from 'node:fs';
import { UserError } from '../errors.ts';
import type { TokenArray } from './tokenizer.ts';

/** A token file, or a range of one. Reads are positioned (pread); the file is opened once. */
export class TokenFile {
  private constructor(
    readonly path: string,
    private readonly fd: number,
    /** First token of this range in the file. */
    private readonly offset: number,
    readonly length: number,
    /** Ids must be below this (the tokenizer's alphabet): checked on every read. */
    private readonly limit: number,
  ) {}

  static open(file: string, limit: number): TokenFile {
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch (e) {
      throw new UserError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? e}`);
    }
    const size = fs.fstatSync(fd).size;
    if (size % 2 !== 0) {
      fs.closeSync(fd);
      throw new UserError(`${file} has an odd number of bytes (${size}): a token file holds uint16 ids (nanoGPT's train.bin/val.bin)`);
    }
    if (size === 0) {
      fs.closeSync(fd);
      throw new UserError(`${file} is empty: a token file holds uint16 ids (nanoGPT's train.bin/val.bin)`);
    }
    return new TokenFile(file, fd, 0, size / 2, limit);
  }

  /** Tokens [begin, end) of this range, as a range of the same file (nothing is read). */
  subarray(begin: number, end = this.length): TokenFile {
    const b = Math.max(0, Math.min(begin, this.length));
    const e = Math.max(b, Math.min(end, this.length));
    return new TokenFile(this.path, this.fd, this.offset + b, e - b, this.limit);
  }

  /** Reads tokens [begin, begin + n) of this range. */
  read(begin: number, n: number): Uint16Array {
    if (begin < 0 || begin + n > this.length) throw new RangeError(`tokens [${begin}, ${begin + n}) outside a range of ${this.length}`);
    const out = new Uint16Array(n);
    const bytes = new Uint8Array(out.buffer);
    let done = 0;
    while (done < bytes.length) {
      const got = fs.readSync(this.fd, bytes, done, bytes.length - done, (this.offset + begin) * 2 + done);
      if (got === 0) throw new UserError(`${this.path} became shorter while training read it`);
      done += got;
    }
    if (!LITTLE_ENDIAN) for (let i = 0; i < n; i++) out[i] = (out[i] >> 8) | ((out[i] & 0xff) << 8);
    for (let i = 0; i < n; i++) {
      if (out[i] >= this.limit) {
        throw new UserError(
          `${this.path}: token ${out[i]} at position ${this.offset + begin + i} is outside the tokenizer's ${this.limit} ids: is it a GPT-2-tokenized nanoGPT file?`,
        );
      }
    }
    return out;
  }
}

const LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

/** Token ids in memory or in a token file. */
export type Tokens = TokenArray | TokenFile;

/** Copies tokens [begin, begin + n) of `src` into `into` from index `at`. */
export function copyTokens(src: Tokens, begin: number, n: number, into: Int32Array, at: number): void {
  into.set(src instanceof TokenFile ? src.read(begin, n) : src.subarray(begin, begin + n), at);
}

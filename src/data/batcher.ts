/**
 * Deterministic batching over a token stream (src/data/tokens.ts).
 *
 * Glossary: B = batch size (windows per batch), T = block size (tokens per window).
 *
 * Batch i is a pure function of (seed, i): its RNG is seeded from a hash of both, so the only
 * state a checkpoint needs is the cursor (the index of the next batch). Restoring the cursor,
 * or skipping ahead (e.g. past data that caused a loss spike), is O(1) and reproduces the same
 * future batches bit for bit.
 */
import { UserError } from '../errors.ts';
import { Rng, type RngState } from '../util/rng.ts';
import { copyTokens, type Tokens } from './tokens.ts';

/**
 * Splits a token stream into train and validation: the first ⌈(1 − f)·n⌉ tokens train, the last
 * ⌊f·n⌋ validate. A contiguous tail (not a random sample) keeps validation text unseen in
 * training and the split independent of any seed. Both parts are views, not copies.
 */
export function splitCorpus<A extends Tokens>(tokens: A, valFraction = 0.05): { train: A; val: A } {
  if (!(valFraction >= 0 && valFraction < 1)) {
    throw new UserError(`validation fraction ${valFraction} must be in [0, 1)`);
  }
  const cut = tokens.length - valLength(tokens.length, valFraction);
  return { train: tokens.subarray(0, cut) as A, val: tokens.subarray(cut) as A };
}

/** Tokens in the validation tail of an n-token stream: the one rule splitCorpus and minTokens share. */
export function valLength(n: number, valFraction = 0.05): number {
  return Math.floor(n * valFraction);
}

export interface Batch {
  /** (B, T) input tokens. */
  inputs: Int32Array;
  /** (B, T) next tokens: targets[b, t] = inputs[b, t + 1] within the window. */
  targets: Int32Array;
  /** Which batch this is (the cursor it was drawn at). */
  index: number;
}

export interface BatcherOptions {
  tokens: Tokens;
  B: number;
  T: number;
  seed: number;
}

export class Batcher {
  readonly tokens: Tokens;
  readonly B: number;
  readonly T: number;
  readonly seed: number;
  private next_ = 0;

  constructor({ tokens, B, T, seed }: BatcherOptions) {
    checkCount('batch size B', B);
    checkCount('block size T', T);
    if (!Number.isSafeInteger(seed)) throw new UserError(`seed ${seed} must be an integer`);
    if (tokens.length < T + 1) {
      throw new UserError(`the training text has ${tokens.length} tokens, fewer than one window of ${T + 1}: use a larger corpus or a smaller block size`);
    }
    this.tokens = tokens;
    this.B = B;
    this.T = T;
    this.seed = seed;
  }

  /** Index of the next batch next() returns. */
  get cursor(): number {
    return this.next_;
  }

  set cursor(i: number) {
    if (!Number.isSafeInteger(i) || i < 0) throw new UserError(`data cursor ${i} must be a non-negative integer`);
    this.next_ = i;
  }

  /** Draws batch `cursor` and advances the cursor. */
  next(): Batch {
    const batch = this.at(this.next_);
    this.next_++;
    return batch;
  }

  /** Batch `index`, without moving the cursor. */
  at(index: number): Batch {
    const { B, T, tokens } = this;
    const rng = batchRng(this.seed, index);
    const inputs = new Int32Array(B * T);
    const targets = new Int32Array(B * T);
    const starts = tokens.length - T; // a window [s, s + T] needs s ≤ len − T − 1
    const window = new Int32Array(T + 1);
    for (let b = 0; b < B; b++) {
      copyTokens(tokens, rng.int(starts), T + 1, window, 0);
      inputs.set(window.subarray(0, T), b * T);
      targets.set(window.subarray(1), b * T);
    }
    return { inputs, targets, index };
  }

  /** Skips n batches without drawing them. */
  skip(n: number): void {
    if (!Number.isSafeInteger(n) || n < 0) throw new UserError(`cannot skip ${n} batches: give a non-negative integer`);
    this.cursor = this.next_ + n;
  }

  /** What a checkpoint must store to reproduce the future batches. */
  state(): { cursor: number; seed: number } {
    return { cursor: this.next_, seed: this.seed };
  }
}

function checkCount(what: string, v: number): void {
  if (!Number.isSafeInteger(v) || v < 1) throw new UserError(`${what} must be a positive integer, got ${v}`);
}

/**
 * The RNG of batch `index`: 128 bits of xoshiro state, word k = mix(seed, index, k). For a
 * fixed seed the map index → word 0 is a bijection over 2³² indices (fmix32 and xor with a
 * constant are bijections), so distinct batches never share a state.
 */
function batchRng(seed: number, index: number): Rng {
  const words = [split(seed), split(index)];
  const state: RngState = [0, 0, 0, 0];
  for (let k = 0; k < 4; k++) {
    let h = fmix32(words[0][0] ^ Math.imul(k + 1, 0x9e3779b9));
    h = fmix32(h ^ words[0][1]);
    h = fmix32(h ^ words[1][0]);
    h = fmix32(h ^ words[1][1]);
    state[k] = h;
  }
  if ((state[0] | state[1] | state[2] | state[3]) === 0) state[0] = 1; // xoshiro's one bad state
  return new Rng(state);
}

/** An integer (possibly ≥ 2³² or negative) as [low 32 bits, high 32 bits]. */
function split(x: number): [number, number] {
  return [x >>> 0, Math.floor(x / 4294967296) >>> 0];
}

/** MurmurHash3's 32-bit finalizer: a bijection that mixes every input bit into every output bit. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export interface EvalBatch {
  /** (count, T) */
  inputs: Int32Array;
  /** (count, T) */
  targets: Int32Array;
  /** Windows in this group (≤ groupSize; the last group may be smaller). */
  count: number;
}

/** ⌊(N − 1)/T⌋ for N = min(maxTokens, len): the windows evalWindows yields. */
export function countEvalWindows(length: number, T: number, maxTokens = Infinity): number {
  const n = Math.min(maxTokens, length);
  return n < 1 ? 0 : Math.floor((n - 1) / T);
}

/**
 * Consecutive non-overlapping windows over the first N = min(maxTokens, len) tokens: window i
 * has inputs tokens[iT, iT + T) and targets tokens[iT + 1, iT + T + 1). Yielded in groups of
 * `groupSize` windows so a model can score them as batches.
 */
export function* evalWindows(tokens: Tokens, T: number, maxTokens: number, groupSize = 8): Generator<EvalBatch> {
  checkCount('block size T', T);
  checkCount('eval group size', groupSize);
  const windows = countEvalWindows(tokens.length, T, maxTokens);
  for (let first = 0; first < windows; first += groupSize) {
    const count = Math.min(groupSize, windows - first);
    const inputs = new Int32Array(count * T);
    const targets = new Int32Array(count * T);
    const window = new Int32Array(T + 1);
    for (let w = 0; w < count; w++) {
      copyTokens(tokens, (first + w) * T, T + 1, window, 0);
      inputs.set(window.subarray(0, T), w * T);
      targets.set(window.subarray(1), w * T);
    }
    yield { inputs, targets, count };
  }
}

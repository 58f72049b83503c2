/**
 * Text from a trained model: autoregressive sampling with temperature and top-k. Each new token
 * costs one forward pass over the last blockSize tokens (the window is right-padded: causal
 * attention makes the logits at position t depend on tokens ≤ t only, so the padding is never
 * seen). Deterministic for a seed: the draws come from src/util/rng.ts.
 */
import { UserError } from '../errors.ts';
import type { Rng } from '../util/rng.ts';
import type { GPT } from './gpt.ts';

export interface SampleOptions {
  tokens: number;
  /** 0: greedy (the most likely token). */
  temperature: number;
  /** Keep the k most likely tokens (0: all). */
  topK: number;
  /** Only tokens below this id (the tokenizer's alphabet; default: the whole vocabulary). */
  limit?: number;
}

/** `prompt` continued by `o.tokens` sampled tokens (the prompt not included). */
export function sample(model: GPT, prompt: Int32Array, o: SampleOptions, rng: Rng): Int32Array {
  const { blockSize: T, vocabSize: V } = model.config;
  if (prompt.length === 0) throw new UserError('sampling needs at least one prompt token');
  for (const t of prompt) if (t < 0 || t >= V) throw new UserError(`prompt token ${t} is outside the vocabulary (${V})`);
  const seq = Array.from(prompt);
  const window = new Int32Array(T);
  const out = new Int32Array(o.tokens);
  for (let i = 0; i < o.tokens; i++) {
    const ctx = seq.slice(-T);
    window.fill(0);
    window.set(ctx);
    model.forward(window, null, 1);
    const row = model.logits(1).subarray((ctx.length - 1) * V, (ctx.length - 1) * V + Math.min(V, o.limit ?? V));
    out[i] = pick(row, o, rng);
    seq.push(out[i]);
  }
  return out;
}

/** One token from a row of logits. */
export function pick(logits: ArrayLike<number>, o: Pick<SampleOptions, 'temperature' | 'topK'>, rng: Rng): number {
  const V = logits.length;
  let order = Array.from({ length: V }, (_, i) => i).sort((a, b) => logits[b] - logits[a] || a - b);
  if (o.temperature === 0) return order[0];
  if (o.topK > 0) order = order.slice(0, o.topK);
  const top = logits[order[0]];
  const w = order.map((i) => Math.exp((logits[i] - top) / o.temperature)); // shifted: no overflow
  let u = rng.uniform() * w.reduce((a, b) => a + b, 0);
  for (let j = 0; j < order.length; j++) {
    u -= w[j];
    if (u < 0) return order[j];
  }
  return order[order.length - 1];
}

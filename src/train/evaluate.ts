/** Mean next-token cross-entropy of a model over consecutive windows of a token stream. */
import { evalWindows } from '../data/batcher.ts';
import type { GPT } from '../model/gpt.ts';
import type { Tokens } from '../data/tokens.ts';

export interface EvalResult {
  /** Mean loss in nats per token. */
  loss: number;
  /** Target tokens scored. */
  tokens: number;
}

/** Scores the first ⌊(N−1)/T⌋ windows of the first N = min(maxTokens, len) tokens. */
export function evaluate(model: GPT, tokens: Tokens, maxTokens: number): EvalResult {
  const T = model.config.blockSize;
  let sum = 0;
  let count = 0;
  for (const batch of evalWindows(tokens, T, maxTokens, model.maxBatch)) {
    const mean = model.forward(batch.inputs, batch.targets, batch.count);
    sum += mean * batch.count * T;
    count += batch.count * T;
  }
  return { loss: count > 0 ? sum / count : NaN, tokens: count };
}

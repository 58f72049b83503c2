/** `keel sample --checkpoint DIR [--prompt TEXT] [--tokens N] [--temperature T] [--top-k K] [--seed S] [--json]`. */
import { Command } from 'commander';
import { UserError } from '../errors.ts';
import { nativeKernels } from '../kernels/native.ts';
import { loadModel } from '../model/checkpoint.ts';
import { GPT } from '../model/gpt.ts';
import { sample } from '../model/sample.ts';
import { Rng } from '../util/rng.ts';
import { float, int } from './args.ts';
import { modelFile } from './eval.ts';
import { tokenizerOfMetadata } from '../data/tokenizer.ts';

export function sampleCommand(): Command {
  return new Command('sample')
    .description(
      "continue a prompt with text sampled from a checkpoint, in the tokenizer it was trained with (ids beyond the tokenizer's, e.g. GPT-2's padding, are never drawn)",
    )
    .requiredOption('--checkpoint <dir|file>', 'checkpoint dir, run dir (newest checkpoint) or model.safetensors')
    .option('--prompt <text>', 'text to continue', '\n')
    .option('--tokens <n>', 'tokens to generate', int(1), 200)
    .option('--temperature <t>', 'softmax temperature (0: always the most likely token)', float(0), 0.8)
    .option('--top-k <k>', 'sample among the k most likely tokens (0: all)', int(0), 40)
    .option('--seed <n>', 'random seed: the same seed gives the same text', int(0), 1337)
    .option('--json', 'print {"prompt", "text", "tokens", "seed"}')
    .action((o: { checkpoint: string; prompt: string; tokens: number; temperature: number; topK: number; seed: number; json?: boolean }) => {
      const file = modelFile(o.checkpoint);
      const { config, params, metadata } = loadModel(file);
      const tokenizer = tokenizerOfMetadata(metadata, file);
      const prompt = Int32Array.from(tokenizer.encode(Buffer.from(o.prompt, 'utf8')));
      if (prompt.length === 0) throw new UserError('--prompt is empty: give at least one character');
      const model = new GPT(config, nativeKernels(), { maxBatch: 1 });
      model.params.set(params);
      const out = sample(model, prompt, { tokens: o.tokens, temperature: o.temperature, topK: o.topK, limit: tokenizer.alphabet }, new Rng(o.seed));
      const text = tokenizer.decode(out);
      if (o.json) process.stdout.write(JSON.stringify({ prompt: o.prompt, text, tokens: out.length, seed: o.seed }) + '\n');
      else process.stdout.write(o.prompt + text + '\n');
    });
}

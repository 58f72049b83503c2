import fs from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { UserError } from '../errors.ts';
import { corpusSplits, loadCorpus } from '../data/corpus.ts';
import { tokenizerOfMetadata, type TokenizerName } from '../data/tokenizer.ts';
import type { Tokens } from '../data/tokens.ts';
import { nativeKernels } from '../kernels/native.ts';
import { loadModel } from '../model/checkpoint.ts';
import { GPT } from '../model/gpt.ts';
import { resolveCheckpointDir } from '../train/checkpoints.ts';
import { evaluate } from '../train/evaluate.ts';
import { int } from './args.ts';

/** A checkpoint dir / run dir (newest checkpoint) / model.safetensors file → the weights file. */
export function modelFile(spec: string): string {
  if (fs.existsSync(spec) && fs.statSync(spec).isFile()) return spec;
  const dir = resolveCheckpointDir(spec);
  const file = path.join(dir, 'model.safetensors');
  if (!fs.existsSync(file)) throw new UserError(`checkpoint ${dir} is incomplete: model.safetensors is missing`);
  return file;
}

/**
 * The validation split of the corpus the checkpoint was trained on (its trainer.json names it; a
 * bare model file: the built-in corpus), split as training split it (src/data/corpus.ts).
 */
function validationSplit(modelPath: string, tokenizer: TokenizerName): { tokens: Tokens; name: string } {
  let data: string | undefined;
  try {
    const state = JSON.parse(fs.readFileSync(path.join(path.dirname(modelPath), 'trainer.json'), 'utf8'));
    data = state?.options?.data;
  } catch {
    // a bare model file: the built-in corpus
  }
  const c = loadCorpus(data, tokenizer);
  return { tokens: corpusSplits(c).val, name: `the validation split of ${c.name}` };
}

/** `--data`: a text from its start, or a nanoGPT directory's val.bin (its train.bin when it has none). */
function givenData(spec: string, tokenizer: TokenizerName): { tokens: Tokens; name: string } {
  const c = loadCorpus(spec, tokenizer);
  return c.val ? { tokens: c.val, name: `${spec} (val.bin)` } : { tokens: c.tokens, name: spec };
}

export function evalCommand(): Command {
  return new Command('eval')
    .description("mean next-token cross-entropy (nats) of a checkpoint over consecutive windows of its run's validation split, or of a text file")
    .requiredOption('--checkpoint <dir|file>', 'checkpoint dir, run dir (newest checkpoint) or model.safetensors')
    .option(
      '--data <file|dir>',
      'UTF-8 text or nanoGPT .bin tokens to score from the start, tokenized as the checkpoint was (default: the validation split of the corpus the checkpoint was trained on)',
    )
    .option('--tokens <n>', 'score the first N tokens: ⌊(N−1)/T⌋ windows of T = block size', int(2), 65536)
    .option('--batch <n>', 'windows per forward pass', int(1), 16)
    .option('--json', 'print {"loss", "tokens"}')
    .action((o) => {
      const file = modelFile(o.checkpoint);
      const { config, params, metadata } = loadModel(file);
      const tokenizer = tokenizerOfMetadata(metadata, file).name;
      if (o.tokens < config.blockSize + 1) {
        throw new UserError(`--tokens ${o.tokens} is too few: one window needs block size + 1 = ${config.blockSize + 1} tokens`);
      }
      const { tokens, name } = o.data ? givenData(o.data, tokenizer) : validationSplit(file, tokenizer);
      if (tokens.length < config.blockSize + 1) {
        const unit = tokenizer === 'bytes' ? 'bytes' : 'tokens';
        throw new UserError(`${name} has ${tokens.length} ${unit}; evaluation needs at least block size + 1 = ${config.blockSize + 1}`);
      }
      const model = new GPT(config, nativeKernels(), { maxBatch: o.batch });
      model.params.set(params);
      const r = evaluate(model, tokens, o.tokens);
      if (o.json) process.stdout.write(JSON.stringify({ loss: r.loss, tokens: r.tokens, data: name }) + '\n');
      else process.stdout.write(`loss ${r.loss.toFixed(6)} nats/token over ${r.tokens} tokens of ${name}\n`);
    });
}

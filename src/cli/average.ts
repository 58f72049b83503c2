/**
 * `keel average IN… -o OUT [--weights w1,w2,…] [--dtype keep|f32|bf16|f16] [--json]` and
 * `keel average --lawa RUN_DIR --k K [-o OUT]`: weight averaging of safetensors checkpoints,
 * streamed tensor by tensor (src/average/stream.ts).
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { UserError } from '../errors.ts';
import fs from 'node:fs';
import path from 'node:path';
import { averageCheckpoints } from '../average/stream.ts';
import { INDEX_FILE, lawaInputs } from '../average/inputs.ts';
import { OUTPUT_DTYPES, type OutputDtype } from '../average/plan.ts';
import { copySideFiles, hfSideFiles } from '../average/hf_files.ts';
import { int } from './args.ts';
import { createProgress, formatNumber, type Progress } from '../util/progress.ts';

function weightList(v: string): number[] {
  const parts = v.split(',').map((s) => s.trim());
  return parts.map((s) => {
    const n = Number(s);
    if (s === '' || !Number.isFinite(n)) throw new InvalidArgumentError(`expected comma-separated numbers, got "${v}"`);
    if (n < 0) throw new InvalidArgumentError(`weights must not be negative, got ${n}`);
    return n;
  });
}

const mb = (bytes: number) => `${formatNumber(bytes / 1e6)} MB`;

export function averageCommand(): Command {
  return new Command('average')
    .description(
      'average safetensors checkpoints tensor by tensor (streamed: memory stays a few MB whatever the model size); ' +
        'inputs are .safetensors files or directories holding model.safetensors or a sharded model.safetensors.index.json',
    )
    .argument('[inputs...]', 'checkpoints to average (F32, F16, BF16 or F64; same tensor names, shapes and dtypes)')
    .option(
      '-o, --out <path>',
      "output: a .safetensors file, or a directory of shards when the first input is sharded (replaced atomically if it exists); a Hugging Face directory as the first input and OUT not ending in .safetensors: a directory with model.safetensors (or the shards) and the first input's config, generation and tokenizer files",
    )
    .option('--weights <w1,w2,…>', 'non-negative weights, one per input, with a positive sum (default: uniform)', weightList)
    .addOption(new Option('--dtype <dtype>', "output dtype: keep (each tensor's input dtype), f32, bf16 or f16").choices(OUTPUT_DTYPES).default('keep'))
    .option('--lawa <run_dir>', 'LAWA: average the --k latest checkpoints of a Keel run (newest first; default -o RUN_DIR/lawa-<oldest>-<newest>.safetensors)')
    .option('--k <n>', 'with --lawa: how many of the latest checkpoints', int(1))
    .option(
      '--json',
      'print {"out", "inputs", "tensors", "bytes_in", "bytes_out", "seconds", "peak_rss", "sharded", "dtype", "weights", "copied"?} as the last line',
    )
    .addHelpText(
      'after',
      '\nArithmetic: per element, (Σ wᵢ·xᵢ) / Σ wᵢ in float64 (input order), rounded once to the output dtype\n' +
        '(nearest, ties to even). Metadata is copied from the first input; sharded inputs give sharded output\n' +
        'with the same shard names and an index.json whose metadata.total_size is updated.',
    )
    .action(async (inputs: string[], o: { out?: string; weights?: number[]; dtype: OutputDtype; lawa?: string; k?: number; json?: boolean }) => {
      let files = inputs;
      let out = o.out;
      if (o.lawa !== undefined) {
        if (inputs.length > 0) throw new UserError('give either input checkpoints or --lawa RUN_DIR, not both');
        if (o.k === undefined) throw new UserError('--lawa needs --k K: how many of the latest checkpoints to average');
        const lawa = lawaInputs(o.lawa, o.k);
        files = lawa.inputs;
        out ??= lawa.out;
      } else {
        if (o.k !== undefined) throw new UserError('--k goes with --lawa RUN_DIR');
        if (inputs.length === 0) throw new UserError('nothing to average: give input checkpoints (or --lawa RUN_DIR --k K)');
        if (out === undefined) throw new UserError('where to write? give -o OUT');
      }
      // Hugging Face directories in: a directory out, with the config and tokenizer files.
      const side = o.lawa === undefined ? hfSideFiles(files[0]) : [];
      const sharded = fs.existsSync(path.join(files[0], INDEX_FILE));
      const intoDir = side.length > 0 && !out!.endsWith('.safetensors');
      if (intoDir && !sharded) fs.mkdirSync(out!, { recursive: true });
      let bar: Progress | undefined;
      let summary;
      try {
        summary = await averageCheckpoints(files, intoDir && !sharded ? path.join(out!, 'model.safetensors') : out!, {
          weights: o.weights,
          dtype: o.dtype,
          progress: (done, total) => {
            bar ??= createProgress({ total, label: 'average' });
            bar.update(done);
          },
        });
      } finally {
        bar?.done();
      }
      if (intoDir) copySideFiles(files[0], out!, side);
      const full = { ...summary, ...(intoDir ? { out: path.resolve(out!), copied: side } : {}) };
      if (o.json) {
        process.stdout.write(JSON.stringify(full) + '\n');
      } else {
        process.stdout.write(
          `averaged ${summary.inputs} checkpoint${summary.inputs === 1 ? '' : 's'} (${summary.tensors} tensors, ${mb(summary.bytes_in)} read) ` +
            `into ${summary.out} (${mb(summary.bytes_out)}, dtype ${summary.dtype}) in ${summary.seconds.toFixed(2)} s; peak RSS ${mb(summary.peak_rss)}\n` +
            (intoDir ? `copied from ${files[0]}: ${side.join(', ')}\n` : ''),
        );
      }
    });
}

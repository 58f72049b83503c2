/** `keel experiment optimizers`: every optimizer at its best swept lr, compared in one report. */
import path from 'node:path';
import { Command } from 'commander';
import { UserError } from '../errors.ts';
import { DEFAULT_LR_FACTORS, runOptimizerExperiment } from '../experiments/optimizers.ts';
import { resolveConfig } from '../model/config.ts';
import { OPTIMIZER_NAMES } from '../optim/registry.ts';
import { int } from './args.ts';

function defaultOut(): string {
  const d = new Date();
  const p = (n: number) => String(n).padStart(2, '0');
  return `runs/experiment-optimizers-${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

/** "a,b,c" → ['a', 'b', 'c'] (blanks around commas ignored). */
function list(flag: string, v: string): string[] {
  const items = v.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (items.length === 0) throw new UserError(`${flag} is empty: give a comma-separated list`);
  return items;
}

function factors(v: string): number[] {
  return list('--lr-factors', v).map((s) => {
    const n = Number(s);
    if (!Number.isFinite(n) || n <= 0) throw new UserError(`--lr-factors must be positive numbers, got "${s}"`);
    return n;
  });
}

export function experimentCommand(): Command {
  const experiment = new Command('experiment').description('experiments that train several runs and write one report');
  const optimizers = new Command('optimizers')
    .description(
      'each optimizer on the same model and data at its best lr from a short sweep (recommended lr × factors); ' +
        'writes OUT/results.json and OUT/report.html (validation loss, optimizer-state memory, tokens/s, the Adafactor target)',
    )
    .option('--out <dir>', 'experiment directory; an unfinished one with the same settings is continued (default runs/experiment-optimizers-<date-time>)')
    .option('--optimizers <a,b,c>', `comma-separated (default all: ${OPTIMIZER_NAMES.join(',')})`)
    .option('--steps <n>', 'steps of each final run', int(1), 600)
    .option('--sweep-steps <n>', 'steps of each sweep run', int(1), 150)
    .option('--lr-factors <x,y,z>', 'sweep grid: the recommended lr times each factor', '0.333,1,3')
    .option('--batch <n>', 'sequences per step', int(1), 16)
    .option('--config <name|file>', 'model: tiny, small, or a JSON file {nLayer,nHead,nEmbd,blockSize,vocabSize}', 'tiny')
    .option('--data <file|dir>', 'UTF-8 text file or directory (default: State of the Union addresses)')
    .option('--eval-tokens <n>', 'validation tokens per evaluation', int(1), 65536)
    .option('--seed <n>', 'seed for init and data order', int(0), 1337)
    .option('--keep-sweep-checkpoints', 'keep the sweep runs\' checkpoints (default: only the final runs keep theirs)')
    .option('--json', 'print results.json as the last line of stdout')
    .action(async (o, cmd: Command) => {
      const names = o.optimizers === undefined ? undefined : list('--optimizers', o.optimizers);
      // The default grid is exactly 1/3, 1, 3; a typed-out grid is taken as given.
      const lrFactors = cmd.getOptionValueSource('lrFactors') === 'default' ? DEFAULT_LR_FACTORS : factors(o.lrFactors);
      const config = resolveConfig(o.config);
      const out = o.out ?? defaultOut();
      let stop = false;
      const onSigint = () => {
        if (stop) process.exit(130);
        stop = true;
        process.stderr.write('\nkeel: interrupt received, stopping the current run (Ctrl-C again to abort)\n');
      };
      process.on('SIGINT', onSigint);
      const results = await runOptimizerExperiment({
        out,
        optimizers: names,
        steps: o.steps,
        sweepSteps: o.sweepSteps,
        lrFactors,
        batch: o.batch,
        config,
        configName: o.config,
        data: o.data === undefined ? undefined : path.resolve(o.data),
        evalTokens: o.evalTokens,
        seed: o.seed,
        keepSweepCheckpoints: !!o.keepSweepCheckpoints,
        progress: true,
        shouldStop: () => stop,
      });
      process.off('SIGINT', onSigint);
      const dir = path.resolve(out);
      const lines = results.optimizers.map(
        (r) =>
          `  ${r.optimizer.padEnd(10)} best lr ${r.best_lr ?? '—'}  val loss ${r.val_loss?.toFixed(4) ?? r.status}` +
          (r.state_bytes === null ? '' : `  state ${(r.state_bytes / 1e6).toFixed(3)} MB`) +
          (r.tokens_per_s === null ? '' : `  ${Math.round(r.tokens_per_s)} tok/s`),
      );
      process.stderr.write(
        `${results.complete ? 'done' : 'stopped'}: ${dir}/report.html, results.json\n${lines.join('\n')}\n` +
          (results.interrupted ? `continue with: keel experiment optimizers --out ${out} (and the same settings)\n` : ''),
      );
      if (o.json) process.stdout.write(JSON.stringify(results) + '\n');
      if (results.interrupted) process.exit(130);
    });
  return experiment.addCommand(optimizers);
}

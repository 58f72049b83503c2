#!/usr/bin/env node
/** `keel <command>`: thin wrappers that parse flags, validate, and call library code. */
import fs from 'node:fs';
import { Command, CommanderError } from 'commander';
import { RecoveryExhausted, TrainingDiverged, UserError } from '../errors.ts';

/**
 * Each command's one-line summary (the listing of `keel --help`) and its module, imported only
 * when that command runs: `keel --help` loads commander and this file, not the trainer, the
 * kernels or the server (start-up close to bare Node's).
 */
const COMMANDS: Record<string, [summary: string, load: () => Promise<Command>]> = {
  train: ['train a GPT on a text corpus or nanoGPT token files', async () => (await import('./train.ts')).trainCommand()],
  eval: ['validation loss of a checkpoint', async () => (await import('./eval.ts')).evalCommand()],
  sample: ['continue a prompt with text sampled from a checkpoint', async () => (await import('./sample.ts')).sampleCommand()],
  bench: ['tokens/s of full training steps, and the fraction of peak FLOP/s', async () => (await import('./bench.ts')).benchCommand()],
  report: ["(re)write a run's report.html", async () => (await import('./report.ts')).reportCommand()],
  optim: ['optimizer tools (replay a gradient trace)', async () => (await import('./optim.ts')).optimCommand()],
  experiment: ['the experiments behind the claims: spikes, lawa, batch', async () => (await import('./experiment.ts')).experimentCommand()],
  analyze: ['find loss spikes in any training log', async () => (await import('./analyze.ts')).analyzeCommand()],
  average: ['streaming average of safetensors checkpoints', async () => (await import('./average.ts')).averageCommand()],
  plan: ['batch size and learning rates from the gradient noise scale', async () => (await import('./plan.ts')).planCommand()],
  serve: ['the controller over HTTP for PyTorch runs, with a dashboard', async () => (await import('./serve.ts')).serveCommand()],
};

const { version } = JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
const program = new Command('keel')
  .description('Keel: stable, efficient GPT training on the CPU')
  .version(version, '-V, --version', 'print the version')
  .showHelpAfterError('(run with --help for usage)')
  .exitOverride();
// The command asked for (also by `keel help NAME`) is the real one; the others are listed by name.
const [first, second] = process.argv.slice(2);
const wanted = first === 'help' ? second : first;
for (const [name, [summary, load]] of Object.entries(COMMANDS)) {
  program.addCommand(name === wanted ? (await load()).summary(summary) : new Command(name).summary(summary));
}
const exitOverride = (c: Command): void => {
  c.exitOverride();
  c.commands.forEach(exitOverride);
};
program.commands.forEach(exitOverride);

// `keel analyze … | head`: the reader left; that is not an error worth a stack trace.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(0);
  throw e;
});

if (process.argv.length <= 2) {
  program.outputHelp(); // bare `keel`: the command list
  process.exit(0);
}
try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // Help and version exit 0; usage mistakes exit 2 (commander already printed the message).
    process.exit(err.exitCode === 0 ? 0 : 2);
  }
  if (err instanceof UserError) {
    process.stderr.write(`keel: ${err.message}\n`);
    process.exit(2);
  }
  if (err instanceof TrainingDiverged) {
    process.stderr.write(`keel: ${err.message}\n`);
    process.exit(1);
  }
  if (err instanceof RecoveryExhausted) {
    process.stderr.write(`keel: ${err.message}\n`);
    process.exit(3);
  }
  throw err;
}

#!/usr/bin/env node
/** `keel <command>`: thin wrappers that parse flags, validate, and call library code. */
import fs from 'node:fs';
import { Command, CommanderError } from 'commander';
import { UserError } from '../errors.ts';
import { RecoveryExhausted, TrainingDiverged } from '../train/trainer.ts';
import { trainCommand } from './train.ts';
import { evalCommand } from './eval.ts';
import { benchCommand } from './bench.ts';
import { reportCommand } from './report.ts';
import { optimCommand } from './optim.ts';
import { experimentCommand } from './experiment.ts';
import { analyzeCommand } from './analyze.ts';
import { averageCommand } from './average.ts';
import { planCommand } from './plan.ts';
import { serveCommand } from './serve.ts';
import { sampleCommand } from './sample.ts';

const { version } = JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
const program = new Command('keel')
  .description('Keel: stable, efficient GPT training on the CPU')
  .version(version, '-V, --version', 'print the version')
  .showHelpAfterError('(run with --help for usage)')
  .exitOverride();
program.addCommand(trainCommand());
program.addCommand(evalCommand());
program.addCommand(sampleCommand());
program.addCommand(benchCommand());
program.addCommand(reportCommand());
program.addCommand(optimCommand());
program.addCommand(experimentCommand());
program.addCommand(analyzeCommand());
program.addCommand(averageCommand());
program.addCommand(planCommand());
program.addCommand(serveCommand());
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

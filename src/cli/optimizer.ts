/** The optimizer flags shared by `keel train`, `keel optim replay` and experiments. */
import { type Command, Option } from 'commander';
import { UserError } from '../errors.ts';
import { describeSchema, parseOptionText } from '../optim/options.ts';
import { OPTIMIZER_NAMES, OPTIMIZERS, optimizerEntry } from '../optim/registry.ts';
import { collect } from './args.ts';

export function addOptimizerFlags(cmd: Command, defaultName?: string): Command {
  const name = new Option('--optimizer <name>', 'optimizer').choices(OPTIMIZER_NAMES);
  return cmd
    .addOption(defaultName ? name.default(defaultName) : name.makeOptionMandatory())
    .option('--opt <key=value>', 'optimizer option, repeatable (see the list below), e.g. --opt epsMode=zero', collect)
    .addHelpText('after', optimizerHelp());
}

/** Every optimizer with its options, for the end of --help. */
function optimizerHelp(): string {
  const lines = ['', 'Optimizers and their --opt options (library API names):'];
  for (const name of OPTIMIZER_NAMES) {
    lines.push(`  ${name}: ${OPTIMIZERS[name].summary}`);
    for (const l of describeSchema(OPTIMIZERS[name].schema)) lines.push(`      ${l}`);
  }
  return lines.join('\n');
}

/** Parses repeated --opt KEY=VALUE into typed options of the named optimizer. */
export function parseOptFlags(name: string, texts: readonly string[] = []): Record<string, unknown> {
  const { schema } = optimizerEntry(name);
  const out: Record<string, unknown> = {};
  for (const text of texts) {
    const [k, v] = parseOptionText(name, schema, text);
    if (k in out) throw new UserError(`--opt ${k} is given twice`);
    out[k] = v;
  }
  return out;
}

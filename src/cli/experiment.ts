/**
 * `keel experiment optimizers`: every optimizer at its best swept lr, compared in one report.
 * `keel experiment spikes`: provoke loss spikes with an lr sweep, rerun with each mitigation.
 * `keel experiment lawa`: raw weights vs LAWA vs EMA at a high and a low lr.
 * `keel experiment batch`: the critical batch (steps/examples to a target loss) vs the online B_simple, and the best lr vs batch per ε.
 */
import path from 'node:path';
import { Command } from 'commander';
import { UserError } from '../errors.ts';
import { runOptimizerExperiment } from '../experiments/optimizers.ts';
import { DEFAULT_LR_FACTORS, type OptimizerExperimentResults } from '../experiments/optimizers_results.ts';
import { writeOptimizerReport } from '../experiments/optimizers_report.ts';
import { runSpikeExperiment } from '../experiments/spikes.ts';
import { DEFAULT_EPS, DEFAULT_LRS, SPIKE_CONFIG, SPIKE_CONFIG_NAME, SPIKE_VARIANTS, type SpikeResults } from '../experiments/spikes_results.ts';
import { spikeFindings, writeSpikeReport } from '../experiments/spikes_report.ts';
import { runLawaExperiment } from '../experiments/lawa.ts';
import { lawaFindings, writeLawaReport } from '../experiments/lawa_report.ts';
import { runBatchExperiment } from '../experiments/batch.ts';
import { DEFAULT_BATCHES, DEFAULT_LR_START, DEFAULT_LRS as BATCH_LRS, DEFAULT_TOKENS, type BatchResults } from '../experiments/batch_results.ts';
import { batchFindings, writeBatchReport } from '../experiments/batch_report.ts';
import { resolveConfig } from '../model/config.ts';
import { OPTIMIZER_NAMES } from '../optim/registry.ts';
import { int } from './args.ts';

function defaultOut(name = 'optimizers'): string {
  const d = new Date();
  const p = (n: number) => String(n).padStart(2, '0');
  return `runs/experiment-${name}-${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

/** "1e-3,0.01" → numbers; anything else names the flag and the bad item. */
function numberList(flag: string, v: string, ok: (n: number) => boolean, what: string): number[] {
  return list(flag, v).map((s) => {
    const n = Number(s);
    if (!Number.isFinite(n) || !ok(n)) throw new UserError(`${flag} must be ${what}, got "${s}"`);
    return n;
  });
}

/** Ctrl-C once: stop after the current step; twice: exit now. Returns the poll and the remover. */
function interruptible(): { shouldStop: () => boolean; done: () => void } {
  let stop = false;
  const onSigint = () => {
    if (stop) process.exit(130);
    stop = true;
    process.stderr.write('\nkeel: interrupt received, stopping the current run (Ctrl-C again to abort)\n');
  };
  process.on('SIGINT', onSigint);
  return { shouldStop: () => stop, done: () => process.off('SIGINT', onSigint) };
}

/**
 * Runs an experiment that Ctrl-C stops, then writes its report.html, prints where it is with
 * `lines` (and how to continue an interrupted one), and with --json results.json as the last
 * line of stdout. An interrupted experiment exits 130.
 */
async function runExperiment<R extends { complete: boolean; interrupted: boolean }>(
  name: string,
  out: string,
  json: boolean,
  run: (shouldStop: () => boolean) => Promise<R>,
  report: { write: (out: string, results: R) => string; lines: (results: R) => string[] },
): Promise<void> {
  const sig = interruptible();
  const results = await run(sig.shouldStop).finally(sig.done);
  report.write(out, results);
  process.stderr.write(
    `${results.complete ? 'done' : 'stopped'}: ${path.resolve(out)}/report.html, results.json\n${report.lines(results).join('\n')}\n` +
      (results.interrupted ? `continue with: keel experiment ${name} --out ${out} (and the same settings)\n` : ''),
  );
  if (json) process.stdout.write(JSON.stringify(results) + '\n');
  if (results.interrupted) process.exit(130);
}

/** "a,b,c" → ['a', 'b', 'c'] (blanks around commas ignored). */
function list(flag: string, v: string): string[] {
  const items = v
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
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
    .option('--out <dir>', 'experiment directory; an unfinished one with the same settings is continued (default: runs/experiment-optimizers-<date-time>)')
    .option('--optimizers <a,b,c>', `comma-separated (default: all, ${OPTIMIZER_NAMES.join(',')})`)
    .option('--steps <n>', 'steps of each final run', int(1), 600)
    .option('--sweep-steps <n>', 'steps of each sweep run', int(1), 150)
    .option('--lr-factors <x,y,z>', 'sweep grid: the recommended lr times each factor', '0.333,1,3')
    .option('--batch <n>', 'sequences per step', int(1), 16)
    .option('--config <name|file>', 'model: tiny, small, or a JSON file {nLayer,nHead,nEmbd,blockSize,vocabSize}', 'tiny')
    .option('--data <file|dir>', 'UTF-8 text file or directory (default: State of the Union addresses)')
    .option('--eval-tokens <n>', 'validation tokens per evaluation', int(1), 65536)
    .option('--seed <n>', 'seed for init and data order', int(0), 1337)
    .option('--keep-sweep-checkpoints', "keep the sweep runs' checkpoints (default: only the final runs keep theirs)")
    .option('--json', 'print results.json as the last line of stdout')
    .action(async (o, cmd: Command) => {
      const names = o.optimizers === undefined ? undefined : list('--optimizers', o.optimizers);
      // The default grid is exactly 1/3, 1, 3; a typed-out grid is taken as given.
      const lrFactors = cmd.getOptionValueSource('lrFactors') === 'default' ? DEFAULT_LR_FACTORS : factors(o.lrFactors);
      const config = resolveConfig(o.config);
      const out = o.out ?? defaultOut();
      const run = (shouldStop: () => boolean) =>
        runOptimizerExperiment({
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
          shouldStop,
        });
      const lines = (results: OptimizerExperimentResults) =>
        results.optimizers.map(
          (r) =>
            `  ${r.optimizer.padEnd(10)} best lr ${r.best_lr ?? '—'}  val loss ${r.val_loss?.toFixed(4) ?? r.status}` +
            (r.state_bytes === null ? '' : `  state ${(r.state_bytes / 1e6).toFixed(3)} MB`) +
            (r.tokens_per_s === null ? '' : `  ${Math.round(r.tokens_per_s)} tok/s`),
        );
      await runExperiment('optimizers', out, !!o.json, run, { write: writeOptimizerReport, lines });
    });
  return experiment.addCommand(optimizers).addCommand(spikesCommand()).addCommand(lawaCommand()).addCommand(batchCommand());
}

function spikesCommand(): Command {
  const c = SPIKE_CONFIG;
  return new Command('spikes')
    .description(
      'provoke loss spikes on a small model with an lr sweep over several orders of magnitude (constant lr, no warm-up, small and large ε), ' +
        'rerun the sweep with each mitigation, and measure spikes per run, final loss, LR sensitivity (Wortsman et al.) and the lead time ' +
        'of the Adam diagnostics before each spike; writes OUT/results.json and OUT/report.html',
    )
    .option('--out <dir>', 'experiment directory; an unfinished one with the same settings is continued (default: runs/experiment-spikes-<date-time>)')
    .option('--variants <a,b,c>', `comma-separated (default: all, ${SPIKE_VARIANTS.join(',')})`)
    .option('--lrs <x,y,z>', 'the lr grid (3 significant digits)', DEFAULT_LRS.join(','))
    .option('--eps-values <x,y>', 'AdamW ε: every variant runs at the first, the baseline also at the others', DEFAULT_EPS.join(','))
    .option('--steps <n>', 'steps per run', int(1), 300)
    .option('--batch <n>', 'sequences per step', int(1), 8)
    .option('--warmup <n>', 'linear warm-up steps (0 = none, which provokes spikes)', int(0), 0)
    .option(
      '--config <name|file>',
      `model: tiny, small, or a JSON file (default: ${SPIKE_CONFIG_NAME}: ${c.nLayer} layers, ${c.nHead} heads, C ${c.nEmbd}, T ${c.blockSize})`,
    )
    .option('--data <file|dir>', 'UTF-8 text file or directory (default: State of the Union addresses)')
    .option('--eval-tokens <n>', 'validation tokens of the final evaluation', int(1), 65536)
    .option('--spike-window <n>', 'spike detector window (online for skip/rollback, offline for counting)', int(2), 32)
    .option('--diag-every <n>', 'Adam diagnostics every n steps (lead times are measured in these)', int(1), 5)
    .option('--seed <n>', 'seed for init and data order', int(0), 1337)
    .option('--json', 'print results.json as the last line of stdout')
    .action(async (o) => {
      const variants = o.variants === undefined ? undefined : list('--variants', o.variants);
      const lrs = numberList('--lrs', o.lrs, (n) => n > 0, 'positive numbers');
      const epsValues = numberList('--eps-values', o.epsValues, (n) => n >= 0, 'numbers ≥ 0');
      const config = o.config === undefined ? undefined : resolveConfig(o.config);
      const out = o.out ?? defaultOut('spikes');
      const run = (shouldStop: () => boolean) =>
        runSpikeExperiment({
          out,
          variants,
          lrs,
          epsValues,
          steps: o.steps,
          batch: o.batch,
          warmup: o.warmup,
          config,
          configName: o.config,
          data: o.data === undefined ? undefined : path.resolve(o.data),
          evalTokens: o.evalTokens,
          spikeWindow: o.spikeWindow,
          diagEvery: o.diagEvery,
          seed: o.seed,
          progress: true,
          shouldStop,
        });
      const lines = (results: SpikeResults) => [
        ...results.variants.map(
          (v) =>
            `  ${v.label.padEnd(20)} LR sensitivity ${v.lr_sensitivity?.toFixed(3) ?? '—'}  best ${v.best_loss?.toFixed(4) ?? '—'}` +
            `  spikes ${v.spikes}  diverged ${v.diverged}/${v.runs}  precursor ${v.lead.with_any_precursor}/${v.lead.testable}`,
        ),
        ...spikeFindings(results).map((f) => `- ${f}`),
      ];
      await runExperiment('spikes', out, !!o.json, run, { write: writeSpikeReport, lines });
    });
}

function lawaCommand(): Command {
  return new Command('lawa')
    .description(
      'the tiny model at a high and a low lr: validation loss of the raw weights, LAWA and EMA over training; writes OUT/results.json and OUT/report.html',
    )
    .option('--out <dir>', 'experiment directory (default: runs/experiment-lawa-<date-time>)')
    .option('--lrs <a,b>', 'learning rates (default: 6e-3,1e-3: high and low)', (v) => numberList('--lrs', v, (n) => n > 0, 'positive numbers'))
    .option('--steps <n>', 'steps per run (default: 800)', int(1))
    .option('--batch <n>', 'sequences per step (default: 16)', int(1))
    .option('--k <n>', 'LAWA: snapshots averaged (default: 6)', int(1))
    .option('--every <n>', 'LAWA: steps between snapshots (default: 25)', int(1))
    .option('--ema <beta>', 'EMA β (default: 0.99)', (v) => numberList('--ema', v, (n) => n > 0 && n < 1, 'in (0, 1)')[0])
    .option('--eval-every <n>', 'steps between evaluations (default: 25)', int(1))
    .option('--eval-tokens <n>', 'validation tokens per evaluation (default: 32768)', int(2))
    .option('--config <name|file>', 'model: tiny, small, or a JSON file', 'tiny')
    .option('--data <file|dir>', 'UTF-8 text file or directory (default: State of the Union addresses)')
    .option('--seed <n>', 'seed (default: 1337)', int(0))
    .option('--json', 'print results.json as the last line of stdout')
    .action(async (o) => {
      const out = o.out ?? defaultOut('lawa');
      const r = await runLawaExperiment({
        out: out,
        config: resolveConfig(o.config),
        configName: o.config,
        data: o.data === undefined ? undefined : path.resolve(o.data),
        lrs: o.lrs,
        steps: o.steps,
        batch: o.batch,
        k: o.k,
        every: o.every,
        ema: o.ema,
        evalEvery: o.evalEvery,
        evalTokens: o.evalTokens,
        seed: o.seed,
      });
      writeLawaReport(out, r);
      for (const f of lawaFindings(r)) process.stderr.write(f + '\n');
      if (o.json) process.stdout.write(JSON.stringify(r) + '\n');
    });
}

function batchCommand(): Command {
  return new Command('batch')
    .description(
      'sweep the batch size (micro-batch B/2 × accum 2) with the lr tuned per batch by a short sweep at a fixed token budget; ' +
        'measure steps and examples to a target validation loss, fit S_min, E_min and B_crit = E_min/S_min and compare with the online B_simple ' +
        'of a pilot run; repeat the best-lr-vs-batch curve for several AdamW ε and compare it with the scaling rules; writes OUT/results.json and OUT/report.html',
    )
    .option('--out <dir>', 'experiment directory; an unfinished one with the same settings is continued (default: runs/experiment-batch-<date-time>)')
    .option('--batches <a,b,c>', 'batch sizes in sequences (even)', DEFAULT_BATCHES.join(','))
    .option('--lrs <x,y,z>', 'the lr grid the per-batch sweep walks on (3 significant digits)', BATCH_LRS.join(','))
    .option('--lr-start <x>', "where the first batch's sweep starts", String(DEFAULT_LR_START))
    .option('--eps-values <x,y,z>', "AdamW ε values (default: 1e-8, g/4, 4g with g the pilot's gradient RMS)")
    .option('--tokens <n>', 'training tokens per run (fixed budget)', int(1), DEFAULT_TOKENS)
    .option('--target <loss>', 'target validation loss (default: the highest best loss over the batches + 0.05)')
    .option('--config <name|file>', 'model: tiny, small, or a JSON file (default: spikes-small: 2 layers, 4 heads, C 64, T 64)')
    .option('--data <file|dir>', 'UTF-8 text file or directory (default: State of the Union addresses)')
    .option('--eval-tokens <n>', 'validation tokens per evaluation', int(1), 4096)
    .option('--eval-points <n>', 'evaluations per run', int(1), 20)
    .option('--pilot-steps <n>', 'steps of the pilot run', int(1), 120)
    .option('--pilot-batch <n>', 'sequences per step of the pilot (4 micro-batches)', int(4), 32)
    .option('--seed <n>', 'seed for init and data order', int(0), 1337)
    .option('--json', 'print results.json as the last line of stdout')
    .action(async (o) => {
      const num1 = (flag: string, v: string) => numberList(flag, v, (n) => n > 0, 'a positive number')[0];
      const config = o.config === undefined ? undefined : resolveConfig(o.config);
      const out = o.out ?? defaultOut('batch');
      const run = (shouldStop: () => boolean) =>
        runBatchExperiment({
          out,
          batches: numberList('--batches', o.batches, (n) => Number.isSafeInteger(n) && n >= 2 && n % 2 === 0, 'even integers ≥ 2'),
          lrs: numberList('--lrs', o.lrs, (n) => n > 0, 'positive numbers'),
          lrStart: num1('--lr-start', o.lrStart),
          epsValues: o.epsValues === undefined ? undefined : numberList('--eps-values', o.epsValues, (n) => n >= 0, 'numbers ≥ 0'),
          tokens: o.tokens,
          target: o.target === undefined ? undefined : num1('--target', o.target),
          config,
          configName: o.config,
          data: o.data === undefined ? undefined : path.resolve(o.data),
          evalTokens: o.evalTokens,
          evalPoints: o.evalPoints,
          pilotSteps: o.pilotSteps,
          pilotBatch: o.pilotBatch,
          seed: o.seed,
          progress: false,
          shouldStop,
        });
      const lines = (results: BatchResults) => batchFindings(results).map((f) => `- ${f}`);
      await runExperiment('batch', out, !!o.json, run, { write: writeBatchReport, lines });
    });
}

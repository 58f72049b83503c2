import path from 'node:path';
import { Command, Option } from 'commander';
import { RecoveryExhausted, UserError } from '../errors.ts';
import { resolveConfig } from '../model/config.ts';
import { isDeepStrictEqual } from 'node:util';
import { loadCheckpoint, type Checkpoint } from '../train/checkpoints.ts';
import { autoResume } from '../train/auto_resume.ts';
import { SCHEDULES } from '../schedule/lr.ts';
import { train, type TrainOptions } from '../train/trainer.ts';
import { createOptimizer, optimizerEntry } from '../optim/registry.ts';
import { collect, float, int } from './args.ts';
import { addOptimizerFlags, parseOptFlags } from './optimizer.ts';
import { GRAD_PRECISIONS } from '../guard/precision.ts';
import { ON_SPIKE } from '../control/types.ts';
import { Controller } from '../control/controller.ts';
import { defaultOf as D, policyOf, resolveFlagOptions, runFactsOf } from '../train/options.ts';
import { runDirOf } from '../train/checkpoints.ts';
import { writeReport } from '../report/html.ts';
import { createProgress } from '../util/progress.ts';
import { MIN_RISE, SPIKE_DEFAULTS } from '../monitor/spikes.ts';
import { Guards } from '../guard/guards.ts';
import { SCALING_RULES } from '../schedule/rules.ts';
import { findServer } from '../serve/home.ts';
import { Mirror } from '../serve/mirror.ts';
import { watchStopSignals } from './signals.ts';
import { corpusTokenizer } from '../data/corpus.ts';
import { TOKENIZERS, tokenizerOf, type TokenizerName } from '../data/tokenizer.ts';

/** `--lawa k[:every]`. */
function parseLawa(text: string): { lawaK: number; lawaEvery: number } {
  const m = /^(\d+)(?::(\d+))?$/.exec(text.trim());
  const k = m ? Number(m[1]) : 0;
  const every = m?.[2] !== undefined ? Number(m[2]) : 50;
  if (!m || k < 1 || every < 1) throw new UserError(`--lawa ${text}: expected k[:every] with positive integers, e.g. --lawa 5:50`);
  return { lawaK: k, lawaEvery: every };
}

/** --auto-resume: the checkpoint to continue from, or none (start, or start over, in --out). */
function startOrContinue(o: { out?: string; resume?: string }): Checkpoint | undefined {
  if (o.resume) throw new UserError('--auto-resume goes with --out DIR (the directory to start or continue), not with --resume');
  if (!o.out) throw new UserError('--auto-resume needs --out DIR: the directory to start the run in, or continue it from');
  const a = autoResume(path.resolve(o.out));
  if (a.kind === 'restart')
    process.stderr.write(`keel: ${o.out} held a run that stopped before its first checkpoint: starting it over (removed ${a.removed.join(', ')})\n`);
  if (a.kind !== 'resume') return undefined;
  for (const line of a.skipped) process.stderr.write(`keel: skipping unreadable checkpoint ${line}\n`);
  process.stderr.write(`keel: continuing ${o.out} from step ${a.ckpt.state.step}\n`);
  o.out = undefined; // the run continues in its own directory
  return a.ckpt;
}

/** keel train --serve [URL]: the run's reports and decisions mirrored to keel serve (named after its directory). */
function mirrorOf(flag: string | true, runDir: string, o: TrainOptions, progress: { log(line: string): void }): Mirror {
  const { url, token } = findServer(flag === true ? undefined : flag);
  const config = { source: 'keel train', run_dir: runDir, model: o.configName, optimizer: o.optimizer, steps: o.steps, batch: o.batch, accum: o.accum };
  return new Mirror(url, token, path.basename(runDir), config, (line) => progress.log(line));
}

function defaultOut(): string {
  const d = new Date();
  const p = (n: number) => String(n).padStart(2, '0');
  return `runs/${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

export function trainCommand(): Command {
  const cmd = new Command('train')
    .description('train a GPT on a text corpus (default: the built-in State of the Union corpus)')
    .option('--config <name|file>', 'model: tiny, small, or a JSON file {nLayer,nHead,nEmbd,blockSize,vocabSize}', 'tiny')
    .option(
      '--data <file|dir>',
      'UTF-8 text file or directory, or nanoGPT token files (a .bin, or a directory with train.bin and val.bin) (default: State of the Union addresses)',
    )
    .addOption(
      new Option(
        '--tokenizer <name>',
        "bytes: one token per UTF-8 byte; gpt2: GPT-2's BPE (a preset model's vocabulary becomes 50,304) (default: gpt2 for .bin data, else bytes)",
      ).choices(TOKENIZERS),
    )
    .addOption(
      new Option(
        '--precision <p>',
        'matmul operands: fp32, or bf16 (rounded to nearest even; fp32 accumulation, weights, gradients and optimizer state)',
      ).choices(['fp32', 'bf16']),
    )
    .option('--steps <n>', 'optimizer steps', int(1), D('steps'))
    .option('--batch <n>', 'sequences per micro-batch', int(1), D('batch'))
    .option('--accum <n>', 'micro-batches per optimizer step (gradient accumulation)', int(1), D('accum'))
    .option('--lr <x>', "peak learning rate (default: the optimizer's recommended one, AdamW 2e-3)", float(0, true))
    .option('--min-lr <x>', 'final learning rate of the decay (default: lr/10)', float(0))
    .option('--warmup <n>', 'linear warm-up steps', int(0), D('warmup'))
    .addOption(new Option('--schedule <kind>', 'learning-rate decay after warm-up; piecewise: see --lr-points').choices(SCHEDULES).default(D('schedule')))
    .option('--lr-points <s:m,…>', 'piecewise schedule: lr × m at step s, linear in between, e.g. 0:0,100:1,1400:0.1 (a first step > 0 starts from 0)')
    .option('--weight-decay <x>', 'same as --opt weightDecay=x (AdamW default 0.1, matrices only)', float(0))
    .option('--beta1 <x>', 'same as --opt beta1=x', float(0))
    .option('--beta2 <x>', 'same as --opt beta2=x', float(0))
    .option('--eps <x>', 'same as --opt eps=x', float(0))
    .option('--clip <x>', 'clip the global gradient norm (0 = off)', float(0), D('clip'))
    .option('--eval-every <n>', 'evaluate on the validation split every n steps (0 = only at the end)', int(0), D('evalEvery'))
    .option('--eval-tokens <n>', 'validation tokens per evaluation', int(2), D('evalTokens'))
    .option('--checkpoint-every <n>', 'write a checkpoint every n steps (0 = only at the end)', int(0), D('checkpointEvery'))
    .option('--keep <n>', 'checkpoints to keep', int(1), D('keep'))
    .option('--out <dir>', 'run directory (default: runs/<date-time>)')
    .option('--seed <n>', 'seed for init and data order', int(0), D('seed'))
    .option(
      '--auto-resume',
      "with --out DIR: continue from DIR's newest readable checkpoint if it has one, else start (over) there: one command for a scheduler to rerun",
    )
    .option('--resume <dir>', 'continue a run from its newest checkpoint (or this checkpoint dir); flags given override the saved ones')
    .option('--tensorboard <dir>', 'also write the metrics as TensorBoard scalar event files into DIR (tensorboard --logdir DIR)')
    .option(
      '--serve [url]',
      "also show the run in keel serve's dashboard (default: the server in $KEEL_HOME/serve.json or KEEL_URL; token: KEEL_TOKEN or that file)",
    )
    .option('--json', 'print a JSON summary as the last line of stdout')
    // Stability (docs/stability.md).
    .option('--spike-window <n>', `spike detector: rolling window of steps (default: ${SPIKE_DEFAULTS.window})`, int(2))
    .option('--spike-threshold <z>', `spike detector: z-score threshold (default: ${SPIKE_DEFAULTS.threshold})`, float(0, true))
    .option('--spike-jump <x>', `spike detector: relative jump over the EMA, 0 = off (default: ${SPIKE_DEFAULTS.jump})`, float(0))
    .option('--spike-min-rise <x>', `spike detector: a z-score spike must rise this fraction above the window mean, 0 = off (default: ${MIN_RISE})`, float(0))
    .addOption(
      new Option('--on-spike <action>', 'none: log spikes; skip: do not apply the step; rollback: PaLM rollback + skip data').choices(ON_SPIKE).default('none'),
    )
    .option('--max-skips <n>', 'consecutive skipped steps before a spike counts as confirmed (then: rollback)', int(1))
    .option('--rollback-steps <n>', 'roll back to a state at least this many steps before the spike (default: clamp(steps/14, 5, 100))', int(1))
    .option('--skip-batches <n>', 'batches skipped after a rollback (default: clamp(steps/7, 10, 500))', int(0))
    .option('--max-rollbacks <n>', 'rollback budget of the run, every rung that rolls back included (default: 5)', int(0))
    .option('--max-lr-cuts <n>', 'recovery ladder: LR cuts (×0.1 each) over a region where a spike keeps returning, before stopping (default: 2)', int(0))
    .option(
      '--fault <spec>',
      'fire drill, repeatable: STEP:nan-grad | STEP:grad-scale:X | STEP:lr-scale:X:N | STEP:bad-batch:N, fired once; add :sticky to fire on every replay',
      collect,
    )
    .option('--embed-grad-shrink <alpha>', "GLM-130B: the token lookup's share of the embedding gradient × alpha (1 = off)", float(0, true))
    .option('--embed-grad-shrink-ramp <n>', 'ramp the shrink linearly back to 1 over n steps', int(0))
    .option('--zloss <coef>', 'z-loss coef·(log Z)² on the output logits (Wortsman et al.: 1e-4)', float(0))
    .option('--qk-norm', 'LayerNorm on queries and keys before attention (new runs only)')
    .addOption(new Option('--grad-precision <p>', 'emulate bf16/fp16 gradients (rounded before the optimizer)').choices(GRAD_PRECISIONS))
    .option('--loss-scale <x>', 'fp16 emulation: loss scale (gradients × x before rounding, ÷ x after)', float(0, true))
    .option(
      '--batch-ramp <spec>',
      'batch-size ramp to batch × accum: palm | glm | mtnlg | gpt3 | linear:FROM:TO:STEPS | steps:B1@S1,… | adaptive[:MIN:MAX] (sequences)',
    )
    .addOption(
      new Option('--lr-rule <rule>', 'rescale the lr when the batch changes (the lr is tuned for the final batch)').choices(SCALING_RULES).default('none'),
    )
    .option('--b-noise <sequences>', 'gradient noise scale B_noise for the sgd/signsgd/softsign rules (see keel plan)', float(0, true))
    .option('--no-noise-scale', 'do not measure the gradient noise scale (it needs --accum ≥ 2)')
    .option('--lawa <k[:every]>', 'LAWA: also evaluate and save the average of the k latest snapshots taken every `every` steps (default: 50)')
    .option('--ema <beta>', 'also evaluate and save an EMA of the weights with this β (e.g. 0.999)', float(0, true))
    .option('--ema-warmup', 'EMA β warm-up: β_t = min(β, (1 + t)/(10 + t))')
    .option('--diag-every <n>', 'per-tensor Adam-instability diagnostics every n steps (0 = off; 50 is cheap: ~0.6% of step time)', int(0))
    .option('--opt-schedule <key=from:to>', 'move a numeric optimizer option linearly over the run, repeatable (e.g. beta2=0.95:0.99)', collect);
  return addOptimizerFlags(cmd, 'adamw').action(async (o, cmd: Command) => {
    const given = (key: string) => cmd.getOptionValueSource(key) === 'cli';
    // Read once: its saved options are the defaults here, and train() continues from it.
    const ckpt = o.autoResume ? startOrContinue(o) : o.resume ? loadCheckpoint(o.resume) : undefined;
    const opts = resolveOptions(o, given, ckpt);
    checkOptions(opts, o);
    await runTraining(opts, o, ckpt);
  });
}

/** The flags these functions read by name (commander's parsed values); the rest go through resolveFlagOptions. */
interface Flags extends Record<string, unknown> {
  config: string;
  data?: string;
  tokenizer?: TokenizerName;
  qkNorm?: boolean;
  optimizer: string;
  weightDecay?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  opt?: string[];
  lr?: number;
  minLr?: number;
  out?: string;
  lawa?: string;
  resume?: string;
  serve?: string | true;
  json?: boolean;
}

/** The model, its tokenizer and the optimizer: from the flags, or (resuming) fixed by the checkpoint. */
function resolveModel(o: Flags, given: (key: string) => boolean, ckpt: Checkpoint | undefined) {
  const base: Record<string, unknown> = ckpt?.state.options ?? {};
  const savedTokenizer = (base.tokenizer as TokenizerName | undefined) ?? 'bytes';
  if (ckpt && given('tokenizer') && o.tokenizer !== savedTokenizer) {
    throw new UserError(`--tokenizer cannot change when resuming: the checkpoint's model was trained on ${savedTokenizer} tokens`);
  }
  const tokenizer = ckpt ? savedTokenizer : corpusTokenizer(o.data, o.tokenizer);
  const fromFlags = () => ({ ...resolveConfig(o.config, tokenizerOf(tokenizer).vocabSize), ...(o.qkNorm ? { qkNorm: true } : {}) });
  // The same model given again (a scheduler's restart repeats the command) is not a change.
  if (ckpt && given('config') && !isDeepStrictEqual(fromFlags(), ckpt.state.config)) {
    throw new UserError('--config cannot change when resuming: the checkpoint fixes the model');
  }
  if (ckpt && o.qkNorm && !ckpt.state.config.qkNorm) throw new UserError('--qk-norm cannot change when resuming: the checkpoint fixes the model');
  const optimizer = ckpt && !given('optimizer') && base.optimizer !== undefined ? (base.optimizer as string) : o.optimizer;
  if (ckpt && given('optimizer') && optimizer !== (base.optimizer ?? 'adamw')) {
    throw new UserError(`--optimizer cannot change when resuming: the checkpoint holds ${base.optimizer ?? 'adamw'} state`);
  }
  return { tokenizer, config: ckpt ? ckpt.state.config : fromFlags(), optimizer };
}

/** Every option of the run: the flags given, else (resuming) the saved ones, else the defaults. */
function resolveOptions(o: Flags, given: (key: string) => boolean, ckpt: Checkpoint | undefined): TrainOptions {
  const base: Record<string, unknown> = ckpt?.state.options ?? {};
  const pick = <T>(key: string, fallback: T): T => (ckpt && !given(key) && base[key] !== undefined ? base[key] : fallback) as T;
  const { tokenizer, config, optimizer } = resolveModel(o, given, ckpt);
  const recommended = optimizerEntry(optimizer).train;
  const shorthands: Record<string, unknown> = { weightDecay: o.weightDecay, beta1: o.beta1, beta2: o.beta2, eps: o.eps };
  const optimizerOptions: Record<string, unknown> = {
    ...(ckpt ? (base.optimizerOptions as Record<string, unknown>) : recommended.options),
    ...Object.fromEntries(Object.entries(shorthands).filter(([, v]) => v !== undefined)),
    ...parseOptFlags(optimizer, o.opt),
  };
  // Validate now (one clear line), and catch Adafactor's own-step-size trap against --lr.
  if (createOptimizer(optimizer, optimizerOptions).ownsLr && given('lr')) {
    throw new UserError('adafactor with relativeStep=true sets its own step size; drop --lr, or add --opt relativeStep=false to use --lr');
  }
  const lr = pick<number>('lr', o.lr ?? recommended.lr);
  return {
    ...(resolveFlagOptions(o, given, ckpt ? base : undefined) as TrainOptions),
    configName: pick<string>('configName', o.config),
    config,
    tokenizer,
    lr,
    minLr: pick('minLr', o.minLr ?? lr / 10),
    optimizer,
    optimizerOptions,
    out: o.out ?? (base.out as string | undefined) ?? defaultOut(),
    ...(o.lawa !== undefined ? parseLawa(o.lawa) : { lawaK: pick('lawaK', undefined), lawaEvery: pick('lawaEvery', undefined) }),
  };
}

/** Combinations of flags that cannot work, refused before anything starts. */
function checkOptions(opts: TrainOptions, o: Flags): void {
  // Parse the stability flags now: a bad --fault or --opt-schedule is a usage error, not a crash mid-run.
  const guards = new Guards(opts, opts.steps);
  for (const f of guards.faults.faults) {
    if (f.step > opts.steps) throw new UserError(`--fault at step ${f.step} is after the last step (${opts.steps}): it would never fire`);
  }
  for (const sch of guards.schedules) {
    createOptimizer(opts.optimizer, { ...opts.optimizerOptions, [sch.key]: sch.from });
    createOptimizer(opts.optimizer, { ...opts.optimizerOptions, [sch.key]: sch.to });
  }
  // The controller checks its policy (ramp, LR rule, budgets) when built: build one now.
  new Controller(policyOf(opts), runFactsOf(opts, 1, 0));
  if (opts.ema !== undefined && opts.ema >= 1) throw new UserError(`--ema ${opts.ema}: β must be in (0, 1), e.g. 0.999`);
  if (opts.lossScale !== undefined && opts.gradPrecision !== 'fp16') throw new UserError('--loss-scale applies only with --grad-precision fp16');
  if (opts.schedule === 'piecewise' && !opts.lrPoints) throw new UserError('--schedule piecewise needs --lr-points, e.g. 0:0,100:1,1400:0.1');
  if (opts.schedule !== 'piecewise' && opts.lrPoints) throw new UserError('--lr-points applies only with --schedule piecewise');
  if (opts.minLr > opts.lr) throw new UserError(`--min-lr ${opts.minLr} is above --lr ${opts.lr}`);
  if (opts.evalTokens < opts.config.blockSize + 1) {
    throw new UserError(`--eval-tokens ${opts.evalTokens} is too few: one window needs block size + 1 = ${opts.config.blockSize + 1} tokens`);
  }
  if (o.resume && o.out) throw new UserError('--out cannot be combined with --resume: a resumed run continues in its own directory');
}

/** Trains, writes the report (also for a run the controller stopped) and prints the summary. */
async function runTraining(opts: TrainOptions, o: Flags, ckpt: Checkpoint | undefined): Promise<void> {
  const signals = watchStopSignals();
  const runDir = ckpt ? runDirOf(ckpt.dir) : path.resolve(opts.out);
  const progress = createProgress({ total: opts.steps, label: 'train' });
  const mirror = o.serve ? mirrorOf(o.serve, runDir, opts, progress) : undefined;
  let summary;
  try {
    summary = await train(opts, { shouldStop: signals.requested, progress, observer: mirror }, ckpt);
  } catch (err) {
    // A run the controller stopped still gets its report (its events say why).
    if (err instanceof RecoveryExhausted) writeReport(runDir);
    throw err;
  } finally {
    await mirror?.close();
  }
  signals.dispose();
  writeReport(runDir);
  const human =
    `${summary.interrupted ? 'interrupted at' : 'done:'} step ${summary.steps}, ${summary.tokens} tokens, ` +
    `train loss ${summary.train_loss.toFixed(4)}, val loss ${summary.val_loss?.toFixed(4) ?? 'n/a'}, ` +
    `${Math.round(summary.tokens_per_s)} tok/s, ${summary.seconds.toFixed(1)} s\n` +
    `run: ${summary.run_dir} (report.html, metrics.jsonl, checkpoints/)` +
    (summary.interrupted ? `\nresume with: keel train --resume ${summary.run_dir}` : '');
  process.stderr.write(human + '\n');
  if (o.json) {
    const { interrupted: _i, ...rest } = summary;
    process.stdout.write(JSON.stringify(rest) + '\n');
  }
  if (summary.interrupted) process.exit(signals.exitCode());
}

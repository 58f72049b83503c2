/**
 * `keel plan`: what batch size to train at, from a measured gradient noise scale
 * (docs/batch-size.md#how-it-works). Prints the critical batch, the steps/examples trade-off of
 * McCandlish et al.,
 * (S/S_min − 1)(E/E_min − 1) = 1, for a range of batch sizes, and the learning rate every scaling
 * rule (src/schedule/rules.ts) gives each batch from one tuned at --base-batch.
 *
 * B_crit = B_noise: the paper's empirical identification (B_crit = E_min/S_min ≈ B_simple). Then
 * S/S_min = 1 + B_noise/B and E/E_min = 1 + B/B_noise.
 *
 * `--from RUN_DIR` reads the last metrics.jsonl line with a positive numeric `b_simple` (and from
 * that line `b_simple_tokens` and `noise_grad_rms`, the latter as the default --grad-rms), and the
 * run's config.json for the defaults of --base-lr (train.lr) and --base-batch (train.batch ×
 * train.accum).
 */
import fs from 'node:fs';
import path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { UserError } from '../errors.ts';
import { readMetrics, type MetricsRecord } from '../io/metrics.ts';
import { formatNumber } from '../report/format.ts';
import { lrForBatch, PLAN_RULES, softsignNu2, surgePeak, type RuleParams } from '../schedule/rules.ts';
import { float } from './args.ts';

type PlanRule = (typeof PLAN_RULES)[number];

interface PlanRow {
  batch: number;
  steps_ratio: number;
  examples_ratio: number;
  lr: Record<PlanRule, number | null> | null;
}

interface Plan {
  b_noise: number;
  b_crit: number;
  b_noise_tokens: number | null;
  source: string;
  base_lr: number | null;
  base_batch: number | null;
  eps: number | null;
  grad_rms: number | null;
  surge_peak: { signsgd: number | null; softsign: number | null };
  rows: PlanRow[];
  warnings: string[];
}

interface PlanInputs {
  bNoise: number;
  bNoiseTokens?: number | null;
  source?: string;
  baseLr?: number;
  baseBatch?: number;
  eps?: number;
  gradRms?: number;
  kappa2?: number;
  batches?: number[];
  /** Warn where max/min of the rules' learning rates for a batch exceeds this (default: 3). */
  disagree?: number;
}

/** Powers of two from about B_noise/16 to 16·B_noise, plus the base batch. */
function defaultBatches(bNoise: number, baseBatch?: number): number[] {
  const lo = Math.max(0, Math.floor(Math.log2(bNoise / 16)));
  const hi = Math.max(lo + 4, Math.ceil(Math.log2(bNoise * 16)));
  const out = new Set<number>();
  for (let e = lo; e <= hi; e++) out.add(2 ** e);
  if (baseBatch) out.add(baseBatch);
  return [...out].sort((a, b) => a - b);
}

/** The plan as data (what --json prints). */
function makePlan(inp: PlanInputs): Plan {
  const bn = inp.bNoise;
  if (!(Number.isFinite(bn) && bn > 0)) throw new UserError(`the noise scale must be a positive number, got ${bn}`);
  const hasBase = inp.baseLr !== undefined && inp.baseBatch !== undefined;
  const softsignOk = inp.eps !== undefined && (inp.eps === 0 || inp.gradRms !== undefined);
  const batches = inp.batches ?? defaultBatches(bn, inp.baseBatch);
  const disagree = inp.disagree ?? 3;
  const params: RuleParams = {
    baseLr: inp.baseLr ?? 1,
    baseBatch: inp.baseBatch ?? 1,
    bNoise: bn,
    eps: inp.eps,
    gradRms: inp.gradRms,
    kappa2: inp.kappa2,
  };
  const warnings: string[] = [];
  const rows: PlanRow[] = batches.map((B) => {
    let lr: PlanRow['lr'] = null;
    if (hasBase) {
      lr = {} as Record<PlanRule, number | null>;
      for (const rule of PLAN_RULES) lr[rule] = rule === 'softsign' && !softsignOk ? null : lrForBatch(rule, B, params);
      const vals = PLAN_RULES.filter((r) => lr![r] !== null && lr![r]! > 0).map((r) => [r, lr![r]!] as const);
      if (vals.length >= 2) {
        const lo = vals.reduce((a, b) => (b[1] < a[1] ? b : a));
        const hi = vals.reduce((a, b) => (b[1] > a[1] ? b : a));
        if (hi[1] / lo[1] > disagree) {
          warnings.push(
            `batch ${B}: the rules disagree ${formatNumber(hi[1] / lo[1])}× (${hi[0]} ${formatNumber(hi[1])} vs ${lo[0]} ${formatNumber(lo[1])}); ` +
              `tune the learning rate near this batch instead of trusting a rule`,
          );
        }
      }
    }
    return { batch: B, steps_ratio: 1 + bn / B, examples_ratio: 1 + B / bn, lr };
  });
  const nu2 = softsignOk ? softsignNu2(inp.eps!, inp.gradRms ?? 1) : null;
  return {
    b_noise: bn,
    b_crit: bn,
    b_noise_tokens: inp.bNoiseTokens ?? null,
    source: inp.source ?? 'given',
    base_lr: hasBase ? inp.baseLr! : null,
    base_batch: hasBase ? inp.baseBatch! : null,
    eps: inp.eps ?? null,
    grad_rms: inp.gradRms ?? null,
    surge_peak: { signsgd: surgePeak(bn, 1, inp.kappa2), softsign: nu2 === null ? null : surgePeak(bn, nu2, inp.kappa2) },
    rows,
    warnings,
  };
}

interface RunInfo {
  bSimple: number;
  bSimpleTokens: number | null;
  gradRms: number | null;
  step: number | null;
  baseLr?: number;
  baseBatch?: number;
  file: string;
}

/** The last positive b_simple of a run (directory or metrics.jsonl) and the run's config defaults. */
function readRunNoise(from: string): RunInfo {
  if (!fs.existsSync(from)) throw new UserError(`--from ${from}: no such run directory or file`);
  const dir = fs.statSync(from).isDirectory() ? from : path.dirname(from);
  const file = fs.statSync(from).isDirectory() ? path.join(from, 'metrics.jsonl') : from;
  if (!fs.existsSync(file)) throw new UserError(`--from ${from}: no metrics.jsonl there (is it a keel train run directory?)`);
  let last: MetricsRecord | null = null;
  for (const r of readMetrics(file)) {
    if (typeof r.b_simple === 'number' && Number.isFinite(r.b_simple) && r.b_simple > 0) last = r;
  }
  if (!last) {
    throw new UserError(
      `${file} has no gradient-noise-scale records (positive "b_simple"): train with --accum 2 or more, which measures it from the micro-batches, or give --noise-scale B`,
    );
  }
  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : null);
  const info: RunInfo = {
    bSimple: last.b_simple as number,
    bSimpleTokens: num(last.b_simple_tokens),
    gradRms: num(last.noise_grad_rms),
    step: typeof last.step === 'number' ? last.step : null,
    file,
  };
  const cfgFile = path.join(dir, 'config.json');
  if (fs.existsSync(cfgFile)) {
    try {
      const train = (JSON.parse(fs.readFileSync(cfgFile, 'utf8')) as { train?: Record<string, unknown> }).train ?? {};
      const lr = num(train.lr);
      const batch = num(train.batch);
      const accum = num(train.accum) ?? 1;
      if (lr !== null && batch !== null) {
        info.baseLr = lr;
        info.baseBatch = batch * accum;
      }
    } catch {
      // A broken config.json only loses the defaults; --base-lr/--base-batch still work.
    }
  }
  return info;
}

function batchList(v: string): number[] {
  const parts = v
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  const out = parts.map((s) => {
    const n = Number(s);
    if (!/^\d+$/.test(s) || !Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(`expected positive integers separated by commas, got "${s}"`);
    return n;
  });
  if (out.length === 0) throw new InvalidArgumentError('expected at least one batch size');
  return [...new Set(out)].sort((a, b) => a - b);
}

export function planCommand(): Command {
  return new Command('plan')
    .description(
      'plan the batch size from the gradient noise scale: critical batch, steps/examples trade-off (S/S_min − 1)(E/E_min − 1) = 1, and the learning rate of each scaling rule (linear, sqrt, sgd, signsgd, softsign) per batch size',
    )
    .option('--from <run_dir>', 'read the last measured b_simple of a keel train run (with --accum ≥ 2) and its lr and batch as the base')
    .option('--noise-scale <B>', 'the gradient noise scale B_noise in sequences (instead of --from)', float(0, true))
    .option('--base-lr <lr>', 'learning rate tuned at --base-batch (every rule gives it there)', float(0, true))
    .option('--base-batch <B>', 'batch size (sequences per step) the base learning rate was tuned at', float(0, true))
    .option('--eps <eps>', 'Adam/SoftSign ε, for the softsign rule (0: same as signsgd)', float(0))
    .option('--grad-rms <g>', "RMS of the gradient per parameter, for the softsign rule (default: with --from: the run's noise_grad_rms)", float(0, true))
    .option(
      '--kappa2 <k>',
      'sign rules: mean-field κ² = σ²/g² at ε = 0, in sequences (default (1 + 4/π)·B_noise, which puts the surge peak there)',
      float(0, true),
    )
    .option('--batches <list>', 'batch sizes to tabulate, e.g. 8,16,32 (default: powers of two from B_noise/16 to 16·B_noise)', batchList)
    .option('--disagree <x>', "warn where the rules' learning rates for a batch differ by more than this factor", float(1, true), 3)
    .option(
      '--json',
      'print {"b_noise", "b_crit", "rows": [{"batch", "steps_ratio", "examples_ratio", "lr": {"linear", "sqrt", "sgd", "signsgd", "softsign"}}], "warnings", …}',
    )
    .action((o) => {
      if (o.from !== undefined && o.noiseScale !== undefined) throw new UserError('give either --from RUN_DIR or --noise-scale B, not both');
      if (o.from === undefined && o.noiseScale === undefined) {
        throw new UserError('keel plan needs the gradient noise scale: --from RUN_DIR (a run trained with --accum ≥ 2) or --noise-scale B');
      }
      const run = o.from !== undefined ? readRunNoise(o.from) : null;
      let baseLr: number | undefined = o.baseLr ?? run?.baseLr;
      let baseBatch: number | undefined = o.baseBatch ?? run?.baseBatch;
      if ((o.baseLr === undefined) !== (o.baseBatch === undefined) && !run) {
        throw new UserError(
          `--base-lr and --base-batch go together (the learning rate tuned at that batch); got only ${o.baseLr === undefined ? '--base-batch' : '--base-lr'}`,
        );
      }
      if (baseLr === undefined || baseBatch === undefined) baseLr = baseBatch = undefined;
      const gradRms: number | undefined = o.gradRms ?? run?.gradRms ?? undefined;
      if (o.eps !== undefined && o.eps > 0 && gradRms === undefined) {
        throw new UserError('the softsign rule needs the gradient RMS with --eps > 0: give --grad-rms g (or --from a run that logged noise_grad_rms)');
      }
      const plan = makePlan({
        bNoise: run ? run.bSimple : o.noiseScale,
        bNoiseTokens: run?.bSimpleTokens ?? null,
        source: run ? `${run.file}${run.step !== null ? ` (step ${run.step})` : ''}` : '--noise-scale',
        baseLr,
        baseBatch,
        eps: o.eps,
        gradRms,
        kappa2: o.kappa2,
        batches: o.batches,
        disagree: o.disagree,
      });
      for (const w of plan.warnings) process.stderr.write(`keel plan: warning: ${w}\n`);
      if (o.json) {
        process.stdout.write(JSON.stringify(plan) + '\n');
        return;
      }
      process.stdout.write(planText(plan));
    });
}

function planText(p: Plan): string {
  const f = formatNumber;
  const lines: string[] = [];
  const tok = p.b_noise_tokens !== null ? ` (${f(p.b_noise_tokens)} tokens)` : '';
  lines.push(`gradient noise scale B_noise = ${f(p.b_noise)} sequences${tok}, from ${p.source}`);
  lines.push(
    `critical batch B_crit ≈ B_noise = ${f(p.b_crit)} sequences: below it doubling the batch nearly halves the steps; above it, it mostly doubles the compute`,
  );
  const peak = (x: number | null) => (x === null ? 'none (the optimal lr rises monotonically)' : `${f(x)} sequences`);
  lines.push(
    `sign-like surge: the signsgd rule's lr peaks at ${peak(p.surge_peak.signsgd)}` +
      (p.eps !== null ? `; softsign (ε ${f(p.eps)}${p.grad_rms !== null ? `, grad RMS ${f(p.grad_rms)}` : ''}): ${peak(p.surge_peak.softsign)}` : ''),
  );
  const head = ['batch', 'S/S_min', 'E/E_min'];
  if (p.base_lr !== null) head.push(...PLAN_RULES);
  const rows = [
    head,
    ...p.rows.map((r) => {
      const cells = [String(r.batch), r.steps_ratio.toFixed(3), r.examples_ratio.toFixed(3)];
      if (r.lr) for (const rule of PLAN_RULES) cells.push(r.lr[rule] === null ? '—' : r.lr[rule]!.toPrecision(3));
      return cells;
    }),
  ];
  const widths = head.map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  lines.push('');
  for (const r of rows) lines.push('  ' + r.map((cell, c) => cell.padStart(widths[c])).join('  '));
  lines.push('');
  if (p.base_lr !== null) {
    lines.push(
      `learning rates: each rule gives ${f(p.base_lr)} at the base batch ${f(p.base_batch!)}` +
        (p.eps === null ? '; softsign needs --eps (and --grad-rms)' : ''),
    );
  } else {
    lines.push('give --base-lr and --base-batch (the learning rate tuned at some batch) for the learning rate of each rule');
  }
  return lines.join('\n') + '\n';
}

/**
 * Pieces every `keel experiment …` shares: an experiment directory that is either fresh or an
 * earlier run of the same experiment with the same settings (anything else is refused before it
 * is touched), per-run `summary.json` records that make an experiment resumable, the grid
 * runner that trains the runs, and input checks that throw UserError.
 */
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.ts';
import type { GPTConfig } from '../model/config.ts';
import { writeFileAtomic } from '../io/atomic.ts';
import { createProgress } from '../util/progress.ts';
import { writeReport } from '../report/html.ts';
import { RecoveryExhausted, TrainingDiverged } from '../errors.ts';
import { train, type TrainOptions, type TrainSummary } from '../train/trainer.ts';

const RESULTS = 'results.json';
const SUMMARY = 'summary.json';

/** Series colours of the experiment reports. */
export const PALETTE = ['#2563eb', '#ea580c', '#16a34a', '#9333ea', '#0891b2', '#db2777', '#65a30d', '#ca8a04', '#475569', '#dc2626'];

/** The first facts of an experiment's report: the model, its size and the data. */
export function modelFacts(s: { configName: string; config: GPTConfig; data: string | null }, params: number): [string, string][] {
  const c = s.config;
  return [
    ['model', `${s.configName}: ${c.nLayer} layers · ${c.nHead} heads · C ${c.nEmbd} · T ${c.blockSize}`],
    ['parameters', params.toLocaleString('en-US')],
    ['data', s.data ?? 'built-in corpus (State of the Union)'],
  ];
}

export function positiveInt(name: string, v: number): number {
  if (!Number.isSafeInteger(v) || v < 1) throw new UserError(`${name} must be a positive integer, got ${v}`);
  return v;
}

export function checkSeed(seed: number): number {
  if (!Number.isSafeInteger(seed) || seed < 0) throw new UserError(`--seed must be a non-negative integer, got ${seed}`);
  return seed;
}

/**
 * A fresh or compatible experiment directory; anything else is refused before it is touched.
 * `experiment` is results.json's `experiment` field, `what` names it in messages ("an optimizer
 * experiment"), and every key of `settings` must equal the saved one.
 */
export function checkExperimentDir(out: string, experiment: string, what: string, settings: object): void {
  const file = path.join(out, RESULTS);
  if (!fs.existsSync(out)) return;
  if (!fs.statSync(out).isDirectory()) throw new UserError(`--out ${out} exists and is not a directory`);
  if (!fs.existsSync(file)) {
    if (fs.readdirSync(out).length > 0) {
      throw new UserError(`--out ${out} is not empty and holds no ${RESULTS}: pick a new directory or an earlier experiment's`);
    }
    return;
  }
  let saved: { experiment?: unknown; settings?: Record<string, unknown> };
  try {
    saved = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    throw new UserError(`${file} is not valid JSON: fix or remove it, or pick another --out`);
  }
  if (saved === null || typeof saved !== 'object' || saved.experiment !== experiment || !saved.settings) {
    throw new UserError(`${file} is not ${what}'s results`);
  }
  const now = settings as Record<string, unknown>;
  const differs = Object.keys(now).filter((k) => JSON.stringify(saved.settings![k]) !== JSON.stringify(now[k]));
  if (differs.length > 0) {
    const show = (v: unknown) => JSON.stringify(v);
    const k = differs[0];
    throw new UserError(
      `--out ${out} holds an experiment with other settings (${k}: ${show(saved.settings[k])} there, ${show(now[k])} now): ` +
        'repeat its settings to continue it, or pick another --out',
    );
  }
}

/** DIR/summary.json when it is there, parses and `valid` accepts it; otherwise undefined (the run is redone). */
export function readSummary<T>(dir: string, valid: (rec: T) => boolean): T | undefined {
  try {
    const rec = JSON.parse(fs.readFileSync(path.join(dir, SUMMARY), 'utf8')) as T;
    return rec !== null && typeof rec === 'object' && valid(rec) ? rec : undefined;
  } catch {
    return undefined;
  }
}

export function writeSummary(dir: string, rec: unknown): void {
  writeFileAtomic(path.join(dir, SUMMARY), JSON.stringify(rec, null, 2) + '\n');
}

export function writeResults(out: string, results: unknown): void {
  writeFileAtomic(path.join(out, RESULTS), JSON.stringify(results, null, 2) + '\n');
}

/** "lr-0.00316": 3 significant digits, so the value and its directory name agree. */
export function lrDirName(lr: number): string {
  return `lr-${String(lr)}`;
}

/** A number rounded to 3 significant digits (grid values that name directories). */
export function sig3(x: number): number {
  return Number(x.toPrecision(3));
}

/** One run of an experiment: train() (with a progress bar when asked), then the run's report.html. */
async function trainRun(opts: TrainOptions, progress: boolean, shouldStop?: () => boolean): Promise<TrainSummary> {
  const sink = progress ? createProgress({ total: opts.steps, label: 'train' }) : false;
  const summary = await train(opts, { progress: sink, shouldStop });
  writeReport(summary.run_dir);
  return summary;
}

/** How an experiment reports and is stopped; every `keel experiment …` library call takes these. */
export interface RunnerOptions {
  /** The trainer's progress bar for each run (default false). */
  progress?: boolean;
  /** One line per run (default: stderr). */
  log?: (line: string) => void;
  /** Polled between steps (Ctrl-C): the current run stops, the experiment returns with interrupted. */
  shouldStop?: () => boolean;
}

/** RunnerOptions with their defaults: what a Grid is built with. */
export type Runner = Required<Omit<RunnerOptions, 'shouldStop'>> & Pick<RunnerOptions, 'shouldStop'>;

export function runnerOf(o: RunnerOptions): Runner {
  return { progress: o.progress ?? false, log: o.log ?? ((line) => process.stderr.write(line + '\n')), shouldStop: o.shouldStop };
}

/** How a run ended: the trainer's summary, or (summary null) the message it diverged with. */
export interface RunOutcome {
  summary: TrainSummary | null;
  error?: string;
  /** Wall-clock seconds of the whole run. */
  wall_seconds: number;
}

/** One run of a grid: where it goes, how it trains, and the record its summary.json keeps. */
export interface GridJob<R> {
  /** Absolute run directory. */
  dir: string;
  /** Names the run in its log line. */
  label: string;
  options: () => TrainOptions;
  record: (outcome: RunOutcome) => R;
  /** Keep the run's checkpoints (default: deleted after the run). */
  keepCheckpoints?: boolean;
}

export interface GridOptions<R> extends Runner {
  /** One line about a record, after "label: ". */
  describe: (rec: R) => string;
  /** Runs in all, for the "[i/n]" counter of the log lines; without it lines carry no counter. */
  total?: number;
  /** Log a line for each run an earlier invocation finished (default true). */
  logReused?: boolean;
  /** Called after every new record (results.json is rewritten there). */
  saved?: () => void;
}

/** Thrown inside Grid.untilInterrupted's body when the user stopped the experiment. */
class Interrupted extends Error {}

/**
 * The runs of an experiment, one after another: a run whose record an earlier invocation left
 * (`reuse`) is not trained again; an unfinished one is started over; a diverged one is recorded,
 * not fatal; Ctrl-C (shouldStop) stops the current run and the grid, leaving the records so far.
 */
export class Grid<R> {
  /** Run directory → record, finished runs only. */
  readonly records = new Map<string, R>();
  interrupted = false;
  private done = 0;

  constructor(private readonly o: GridOptions<R>) {}

  /** Takes DIR/summary.json as the run's record when `valid` accepts it. */
  reuse(dir: string, valid: (rec: R) => boolean): R | undefined {
    const rec = readSummary<R>(dir, valid);
    if (rec) this.records.set(dir, rec);
    return rec;
  }

  /** A planned run that will not happen (it still counts in the "[i/n]" counter). */
  skip(): void {
    this.done++;
  }

  /** The run's record: the reused one, or a new one from training it. Throws Interrupted. */
  async run(job: GridJob<R>): Promise<R> {
    const tag = this.tag(job.label);
    const old = this.records.get(job.dir);
    if (old) {
      if (this.o.logReused ?? true) this.o.log(`${tag}: ${this.o.describe(old)} (done earlier)`);
      return old;
    }
    if (this.o.shouldStop?.()) throw new Interrupted();
    fs.rmSync(job.dir, { recursive: true, force: true }); // an unfinished run: start it over
    const outcome = await this.train(job, tag);
    if (!job.keepCheckpoints) fs.rmSync(path.join(job.dir, 'checkpoints'), { recursive: true, force: true });
    const rec = job.record(outcome);
    writeSummary(job.dir, rec);
    this.records.set(job.dir, rec);
    this.o.log(`${tag}: ${this.o.describe(rec)}`);
    this.o.saved?.();
    return rec;
  }

  /** Runs `body`; an interruption inside it ends it and sets `interrupted`. */
  async untilInterrupted(body: () => Promise<void>): Promise<void> {
    try {
      await body();
    } catch (err) {
      if (!(err instanceof Interrupted)) throw err;
      this.interrupted = true;
    }
  }

  private async train(job: GridJob<R>, tag: string): Promise<RunOutcome> {
    const t0 = performance.now();
    const seconds = () => (performance.now() - t0) / 1000;
    try {
      const summary = await trainRun(job.options(), this.o.progress, this.o.shouldStop);
      if (summary.interrupted) {
        this.o.log(`${tag}: interrupted at step ${summary.steps}`);
        throw new Interrupted();
      }
      return { summary, wall_seconds: seconds() };
    } catch (err) {
      // A run the recovery ladder stopped did not finish either: it scores like a diverged one.
      if (!(err instanceof TrainingDiverged || err instanceof RecoveryExhausted)) throw err;
      return { summary: null, error: err.message, wall_seconds: seconds() };
    }
  }

  private tag(label: string): string {
    const n = this.o.total;
    return n === undefined ? label : `[${String(++this.done).padStart(String(n).length)}/${n}] ${label}`;
  }
}

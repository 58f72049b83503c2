/**
 * The grid runner of `keel experiment …`: trains each run of a grid, keeps a `summary.json` per
 * finished run so that a rerun resumes where the last one stopped, and turns divergence and
 * Ctrl-C into outcomes the experiment reports.
 */
import fs from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../io/atomic.ts';
import { createProgress } from '../util/progress.ts';
import { writeReport } from '../report/html.ts';
import { RecoveryExhausted, TrainingDiverged } from '../errors.ts';
import type { GPTConfig } from '../model/config.ts';
import { train, type TrainOptions, type TrainSummary } from '../train/trainer.ts';

const SUMMARY = 'summary.json';

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
/** What every run of an experiment takes from its settings. */
interface Shared {
  configName: string;
  config: GPTConfig;
  data?: string | null;
  clip?: number;
  evalTokens: number;
  seed: number;
}

/** The trainer options the runs of an experiment share: its model, data and seed, no checkpoints kept, no evaluation before the end. */
export function sharedOptions(s: Shared, dir: string) {
  const { configName, config, clip, evalTokens, seed } = s;
  return { configName, config, data: s.data ?? undefined, clip, evalTokens, seed, evalEvery: 0, checkpointEvery: 0, keep: 1, out: dir };
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

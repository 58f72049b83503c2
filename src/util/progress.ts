/**
 * Progress reporting for long jobs (training, evaluation, averaging).
 *
 * Three renderings of the same state, picked from the stream:
 * - a terminal gets one status line redrawn in place, at most 10 times a second, with log
 *   lines printed above it;
 * - a pipe or CI log gets plain lines only at milestones (every N% of the total) or after a
 *   quiet interval, and never a carriage return, so logs stay readable and small;
 * - `json: true` gets the plain-mode cadence as one JSON object per line, for tools.
 */
import { formatDuration, formatNumber } from '../report/format.ts';

export { formatDuration, formatNumber };

/** The part of a writable stream this module uses; tests pass a fake. */
export interface ProgressStream {
  write(chunk: string): unknown;
  isTTY?: boolean;
  /** Terminal width; read at every redraw so resizing is followed. */
  columns?: number;
}

export interface ProgressOptions {
  /** Step count at completion; 0 or non-finite for an open-ended job (no bar, no ETA). */
  total: number;
  label?: string;
  stream?: ProgressStream;
  /** One JSON object per line instead of text. */
  json?: boolean;
  /**
   * The step this job starts from, so a resumed run's rate counts only the steps done now.
   * Default: one less than the first step reported.
   */
  start?: number;
  /** Plain/JSON mode: print when another this-many percent of the total is done (default 10). */
  everyPercent?: number;
  /** Plain/JSON mode: print after this long without output even between milestones (default 10 s). */
  everyMs?: number;
  /** Clock in milliseconds; tests inject a fake one. */
  now?: () => number;
}

type ProgressFields = Record<string, number | string>;

export interface Progress {
  /** Reports that `step` of `total` is done; `fields` are shown after the count (loss, tok/s, …). */
  update(step: number, fields?: ProgressFields): void;
  /** Prints a whole line (an eval result, a warning) without breaking the status line. */
  log(line: string): void;
  /** Shows the final state and ends the status line; later calls do nothing. */
  done(): void;
}

const TTY_MIN_REDRAW_MS = 100; // ≤ 10 redraws per second
const CLEAR_EOL = '\x1b[K';
const BAR_MAX = 30;
const BAR_MIN = 10;
/**
 * Narrower than this, a redrawn status line is mostly escape codes (a terminal that reports 0
 * columns, as some CI pseudo-terminals and `stty cols 0` do, would get nothing else): such a
 * stream gets plain lines instead.
 */
const TTY_MIN_COLUMNS = 20;

interface State {
  label: string;
  total: number;
  step: number;
  fields: ProgressFields;
  elapsedMs: number;
  /** Steps per second since the start step, NaN before any progress. */
  rate: number;
}

const hasTotal = (s: State) => Number.isFinite(s.total) && s.total > 0;

function etaSeconds(s: State): number {
  if (!hasTotal(s) || !(s.rate > 0)) return NaN;
  return Math.max(0, s.total - s.step) / s.rate;
}

function fieldText(fields: ProgressFields): string {
  return Object.entries(fields)
    .map(([k, v]) => `${k} ${typeof v === 'number' ? formatNumber(v) : v}`)
    .join('  ');
}

/** Everything but the bar: "45% 450/1000  loss 2.345  tok/s 12.3k  1m23s eta 2m10s". */
function statusParts(s: State): { count: string; fields: string; time: string } {
  const count = hasTotal(s) ? `${Math.floor((100 * Math.min(s.step, s.total)) / s.total)}% ${s.step}/${s.total}` : `step ${s.step}`;
  const elapsed = formatDuration(s.elapsedMs / 1000);
  const time = hasTotal(s) ? `${elapsed} eta ${formatDuration(etaSeconds(s))}` : elapsed;
  return { count, fields: fieldText(s.fields), time };
}

/** A bar of `width` cells, filled in proportion to step/total. */
export function renderBar(fraction: number, width: number): string {
  const f = Math.min(1, Math.max(0, Number.isFinite(fraction) ? fraction : 0));
  const filled = Math.round(f * width);
  return '█'.repeat(filled) + '░'.repeat(width - filled);
}

/** The terminal status line, fitted to `columns` (a wrapped line could not be redrawn with \r). */
function ttyLine(s: State, columns: number): string {
  const p = statusParts(s);
  const text = [p.count, p.fields, p.time].filter(Boolean).join('  ');
  const head = s.label ? `${s.label} ` : '';
  const room = columns - 1 - head.length - text.length - 3;
  const barWidth = Math.min(BAR_MAX, room);
  const bar = hasTotal(s) && barWidth >= BAR_MIN ? `[${renderBar(s.step / s.total, barWidth)}] ` : '';
  const line = head + bar + text;
  return line.length > columns - 1 ? line.slice(0, Math.max(0, columns - 1)) : line;
}

/** A log-friendly line: "train 450/1000 (45%)  loss 2.345  elapsed 1m23s  eta 2m10s". */
function plainLine(s: State): string {
  const count = hasTotal(s) ? `${s.step}/${s.total} (${Math.floor((100 * Math.min(s.step, s.total)) / s.total)}%)` : `step ${s.step}`;
  const parts = [s.label ? `${s.label} ${count}` : count];
  const fields = fieldText(s.fields);
  if (fields) parts.push(fields);
  parts.push(`elapsed ${formatDuration(s.elapsedMs / 1000)}`);
  if (hasTotal(s)) parts.push(`eta ${formatDuration(etaSeconds(s))}`);
  return parts.join('  ');
}

function jsonRecord(s: State, done: boolean): string {
  const eta = etaSeconds(s);
  const record: Record<string, unknown> = {
    label: s.label,
    step: s.step,
    total: hasTotal(s) ? s.total : null,
    elapsed_s: Math.round(s.elapsedMs) / 1000,
    eta_s: Number.isFinite(eta) ? Math.round(eta * 10) / 10 : null,
    fields: s.fields,
  };
  if (done) record.done = true;
  return JSON.stringify(record);
}

export function createProgress(opts: ProgressOptions): Progress {
  const stream = opts.stream ?? process.stderr;
  const now = opts.now ?? (() => performance.now());
  // A terminal that reports no width (undefined) is taken as 80 columns; one that reports fewer
  // than TTY_MIN_COLUMNS (0 included) gets plain lines.
  const wide = () => stream.columns === undefined || stream.columns >= TTY_MIN_COLUMNS;
  let mode: 'json' | 'tty' | 'plain' = opts.json ? 'json' : stream.isTTY === true && wide() ? 'tty' : 'plain';
  /** A terminal narrowed below TTY_MIN_COLUMNS mid-run: finish the status line, then plain lines. */
  const followWidth = () => {
    if (mode !== 'tty' || wide()) return;
    if (onScreen) stream.write('\n');
    onScreen = false;
    mode = 'plain';
  };
  const t0 = now();
  const state: State = { label: opts.label ?? '', total: opts.total, step: 0, fields: {}, elapsedMs: 0, rate: NaN };
  let start = opts.start;
  let updated = false;
  let finished = false;
  let lastOutput = -Infinity; // clock time of the last redraw or printed line
  let onScreen = false; // tty: a status line is showing and must be cleared before other output
  let stale = false; // tty: the last update was throttled, so the screen lags behind
  let printedStep = NaN; // plain/json: step of the last printed line
  const milestone = hasTotal(state) ? Math.max(1, (state.total * (opts.everyPercent ?? 10)) / 100) : Infinity;
  const quietMs = opts.everyMs ?? 10_000;

  const refresh = (t: number) => {
    state.elapsedMs = t - t0;
    const done = state.step - (start ?? 0);
    state.rate = state.elapsedMs > 0 && done > 0 ? done / (state.elapsedMs / 1000) : NaN;
  };

  const redraw = (t: number) => {
    refresh(t);
    stream.write(`\r${ttyLine(state, stream.columns ?? 80)}${CLEAR_EOL}`);
    onScreen = true;
    stale = false;
    lastOutput = t;
  };

  const print = (t: number, isDone: boolean) => {
    refresh(t);
    stream.write((mode === 'json' ? jsonRecord(state, isDone) : plainLine(state)) + '\n');
    printedStep = state.step;
    lastOutput = t;
  };

  /** Plain/JSON cadence: first report, each milestone crossed, or a heartbeat after silence. */
  const duePlain = (t: number, previous: number) =>
    Number.isNaN(printedStep) || Math.floor(state.step / milestone) > Math.floor(previous / milestone) || t - lastOutput >= quietMs;

  return {
    update(step, fields = {}) {
      if (finished) return;
      followWidth();
      if (start === undefined) start = step - 1;
      const previous = Number.isNaN(printedStep) ? -Infinity : printedStep;
      state.step = step;
      state.fields = fields;
      updated = true;
      const t = now();
      if (mode === 'tty') {
        const last = hasTotal(state) && step >= state.total;
        if (last || t - lastOutput >= TTY_MIN_REDRAW_MS) redraw(t);
        else stale = true;
      } else if (duePlain(t, previous)) {
        print(t, false);
      }
    },
    log(line) {
      followWidth();
      if (mode === 'json') {
        stream.write(JSON.stringify({ label: state.label, log: line }) + '\n');
      } else if (mode === 'tty' && onScreen && !finished) {
        stream.write(`\r${CLEAR_EOL}${line}\n`);
        redraw(now()); // put the status line back under the new line
      } else {
        stream.write(line + '\n');
      }
    },
    done() {
      if (finished) return;
      finished = true;
      if (!updated) return;
      const t = now();
      if (mode === 'tty') {
        if (stale || !onScreen) redraw(t);
        stream.write('\n');
        onScreen = false;
      } else if (mode === 'json' || printedStep !== state.step) {
        print(t, true);
      }
    },
  };
}

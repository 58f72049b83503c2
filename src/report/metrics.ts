/**
 * Reading a run's metrics.jsonl into step-merged rows and a list of events.
 *
 * The log is append-only and written by a process that may crash or be resumed, so the reader
 * (lines parsed by src/io/metrics.ts's parseMetricsLine) is forgiving: a torn line (crash
 * mid-write) is skipped, a step logged twice keeps the later
 * value of each field (a resume replays steps after its checkpoint), and non-finite values
 * become null, which the charts draw as gaps.
 *
 * A line with a `diag` object (src/monitor/diagnostics.ts: `{step, diag: {<tensor>: {<stat>:
 * number | null, hist: number[]}}, diag_…}`) is collected separately into `diag`, one entry per
 * step (a later line for the same step replaces it); its top-level numeric fields are merged
 * into the step's row like any other line's.
 */
import fs from 'node:fs';
import { UserError } from '../errors.ts';
import { parseMetricsLine } from '../io/metrics.ts';

/** One step: every numeric field any line logged for it. null marks a non-finite value. */
export interface MetricRow {
  step: number;
  values: Record<string, number | null>;
}

/** A line with an "event" field: drawn as a marker, listed in a table. */
export interface MetricEvent {
  event: string;
  step: number | null;
  /** The line's other fields, for display. */
  fields: Record<string, unknown>;
}

/** One tensor's statistics at a diagnosed step: numbers (null = non-finite or undefined) and the r histogram. */
interface TensorStats {
  stats: Record<string, number | null>;
  hist?: number[];
}

/** One diagnosed step: per-tensor statistics, tensors in the order the line listed them (layout order). */
export interface DiagStep {
  step: number;
  tensors: Map<string, TensorStats>;
}

export interface RunMetrics {
  /** Sorted by step, one per distinct step. */
  rows: MetricRow[];
  /** Per-tensor diagnostics, sorted by step, one per distinct step (empty when none were logged). */
  diag: DiagStep[];
  /** In file order. */
  events: MetricEvent[];
  /** Lines that were not valid JSON objects (a torn last line is the usual one). */
  skippedLines: number;
}

/** Numbers keep their value, null/NaN/±Infinity become null; other types are not metrics. */
function metricValue(v: unknown): number | null | undefined {
  if (v === null) return null;
  if (typeof v === 'number') return Number.isFinite(v) ? v : null;
  return undefined;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The per-tensor part of a diag line; malformed entries are dropped, not fatal. */
function parseDiag(step: number, diag: Record<string, unknown>): DiagStep {
  const tensors = new Map<string, TensorStats>();
  for (const [name, entry] of Object.entries(diag)) {
    if (!isObject(entry)) continue;
    const stats: Record<string, number | null> = {};
    let hist: number[] | undefined;
    for (const [key, v] of Object.entries(entry)) {
      if (key === 'hist') {
        if (Array.isArray(v) && v.every((x) => typeof x === 'number' && Number.isFinite(x))) hist = v as number[];
        continue;
      }
      const value = metricValue(v);
      if (value !== undefined) stats[key] = value;
    }
    tensors.set(name, hist ? { stats, hist } : { stats });
  }
  return { step, tensors };
}

/** Parses the text of a metrics.jsonl file. Never throws on bad lines; counts them instead. */
export function parseMetrics(text: string): RunMetrics {
  const byStep = new Map<number, Record<string, number | null>>();
  const diagByStep = new Map<number, DiagStep>();
  const events: MetricEvent[] = [];
  let skippedLines = 0;
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const obj = parseMetricsLine(line);
    if (!obj) {
      skippedLines++;
      continue;
    }
    const step = typeof obj.step === 'number' && Number.isFinite(obj.step) ? obj.step : null;
    if (typeof obj.event === 'string') {
      const { event, step: _ignored, ...fields } = obj;
      events.push({ event, step, fields });
      continue;
    }
    if (step === null) {
      skippedLines++;
      continue;
    }
    if (isObject(obj.diag)) diagByStep.set(step, parseDiag(step, obj.diag));
    const row = byStep.get(step) ?? {};
    for (const [key, v] of Object.entries(obj)) {
      if (key === 'step' || key === 'diag') continue;
      const value = metricValue(v);
      if (value !== undefined) row[key] = value; // later lines overwrite field by field
    }
    byStep.set(step, row);
  }
  const rows = [...byStep.entries()].sort((a, b) => a[0] - b[0]).map(([step, values]) => ({ step, values }));
  const diag = [...diagByStep.values()].sort((a, b) => a.step - b.step);
  return { rows, diag, events, skippedLines };
}

/** Reads and parses DIR/metrics.jsonl; a missing or empty log is the user's to fix. */
export function loadRunMetrics(file: string): RunMetrics {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new UserError(`no metrics log at ${file}: is this a run directory written by "keel train --out"?`);
    }
    throw new UserError(`cannot read metrics log ${file}: ${code ?? String(err)}`);
  }
  const metrics = parseMetrics(text);
  if (metrics.rows.length === 0) {
    const why = text.trim() === '' ? 'the file is empty' : 'it has no lines with a numeric "step"';
    throw new UserError(`metrics log ${file} has nothing to report: ${why}`);
  }
  return metrics;
}

/** The (step, value) pairs of one key, in step order; steps that never logged it are absent. */
export function seriesOf(rows: MetricRow[], key: string): { x: number[]; y: (number | null)[] } {
  const x: number[] = [];
  const y: (number | null)[] = [];
  for (const row of rows) {
    const v = row.values[key];
    if (v === undefined) continue;
    x.push(row.step);
    y.push(v);
  }
  return { x, y };
}

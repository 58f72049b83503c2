/**
 * Reading a run's metrics.jsonl into step-merged rows and a list of events.
 *
 * The log is append-only and written by a process that may crash or be resumed, so the reader
 * is forgiving: a torn line (crash mid-write) is skipped, a step logged twice keeps the later
 * value of each field (a resume replays steps after its checkpoint), and non-finite values
 * become null, which the charts draw as gaps.
 */
import fs from 'node:fs';
import { UserError } from '../errors.ts';

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

export interface RunMetrics {
  /** Sorted by step, one per distinct step. */
  rows: MetricRow[];
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

/**
 * JSON.parse, but also accepting bare NaN / Infinity as values, which Python's json module and
 * hand-rolled writers emit for a diverged loss. They become null.
 */
function parseLine(line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    const patched = line.replace(/([:[,]\s*)-?(?:NaN|Infinity)(?=\s*[,}\]])/g, '$1null');
    if (patched === line) return undefined;
    try {
      return JSON.parse(patched);
    } catch {
      return undefined;
    }
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Parses the text of a metrics.jsonl file. Never throws on bad lines; counts them instead. */
export function parseMetrics(text: string): RunMetrics {
  const byStep = new Map<number, Record<string, number | null>>();
  const events: MetricEvent[] = [];
  let skippedLines = 0;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    const obj = parseLine(line);
    if (!isObject(obj)) {
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
    const row = byStep.get(step) ?? {};
    for (const [key, v] of Object.entries(obj)) {
      if (key === 'step') continue;
      const value = metricValue(v);
      if (value !== undefined) row[key] = value; // later lines overwrite field by field
    }
    byStep.set(step, row);
  }
  const rows = [...byStep.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([step, values]) => ({ step, values }));
  return { rows, events, skippedLines };
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

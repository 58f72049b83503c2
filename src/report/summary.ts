/**
 * The report's header: key facts pulled from config.json and summary numbers from the metrics.
 * config.json's layout belongs to the trainer and may grow or nest, so facts are found by key
 * name anywhere in it rather than by fixed paths.
 */
import { formatDuration, formatNumber } from './format.ts';
import type { RunMetrics } from './metrics.ts';

export interface Fact {
  label: string;
  value: string;
}

/** Flattens nested objects to [path, value] pairs, parents before children. */
function flatten(obj: unknown, prefix = ''): [string, unknown][] {
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) return [[prefix, obj]];
  const out: [string, unknown][] = prefix ? [[prefix, obj]] : [];
  for (const [k, v] of Object.entries(obj)) out.push(...flatten(v, prefix ? `${prefix}.${k}` : k));
  return out;
}

/** "batch_size", "batchSize" and "BatchSize" all normalise to "batchsize". */
const norm = (key: string) => key.toLowerCase().replace(/[_\-\s]/g, '');

function lastSegment(path: string): string {
  return norm(path.slice(path.lastIndexOf('.') + 1));
}

function find(entries: [string, unknown][], aliases: string[]): unknown {
  for (const alias of aliases) {
    const hit = entries.find(([path]) => lastSegment(path) === alias);
    if (hit) return hit[1];
  }
  return undefined;
}

function showValue(v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  // Counts and seeds are shown exactly (a seed of 1337 is not "1.34k"); rates compactly.
  if (typeof v === 'number') return Number.isSafeInteger(v) ? v.toLocaleString('en-US') : formatNumber(v);
  if (typeof v === 'string' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return v.map((e) => showValue(e) ?? '').join(', ');
  return undefined; // objects are shown only through dedicated formatters
}

/** A GPT shape such as "4 layers · 4 heads · C 128 · T 128 · V 256". */
function modelShape(entries: [string, unknown][]): string | undefined {
  const parts: [string[], (v: string) => string][] = [
    [['nlayer', 'nlayers', 'layers'], (v) => `${v} layers`],
    [['nhead', 'nheads', 'heads'], (v) => `${v} heads`],
    [['nembd', 'dmodel', 'width'], (v) => `C ${v}`],
    [['blocksize', 'contextlength', 'seqlen'], (v) => `T ${v}`],
    [['vocabsize', 'vocab'], (v) => `V ${v}`],
  ];
  const shown: string[] = [];
  for (const [aliases, fmt] of parts) {
    const v = find(entries, aliases);
    if (typeof v === 'number') shown.push(fmt(String(v)));
  }
  return shown.length ? shown.join(' · ') : undefined;
}

function modelFact(config: Record<string, unknown>, entries: [string, unknown][]): string | undefined {
  const name = [config.model, config.config, config.preset, config.modelName].find((v) => typeof v === 'string');
  const shape = modelShape(entries);
  if (name && shape) return `${name} (${shape})`;
  return (name as string | undefined) ?? shape;
}

/** Key facts for the header, in a fixed order; facts the config lacks are left out. */
export function configFacts(config: Record<string, unknown> | undefined): Fact[] {
  if (!config) return [];
  const entries = flatten(config);
  const facts: Fact[] = [];
  const add = (label: string, value: string | undefined) => {
    if (value) facts.push({ label, value });
  };
  add('model', modelFact(config, entries));
  const params = find(entries, ['params', 'nparams', 'numparams', 'parameters']);
  add('params', typeof params === 'number' ? formatNumber(params) : showValue(params));
  add('steps', showValue(find(entries, ['steps', 'maxsteps', 'iters', 'maxiters', 'totalsteps'])));
  add('batch', showValue(find(entries, ['batch', 'batchsize', 'microbatch'])));
  add('tokens / step', showValue(find(entries, ['tokensperstep', 'batchtokens'])));
  add('lr', showValue(find(entries, ['lr', 'learningrate', 'maxlr', 'peaklr'])));
  add('schedule', showValue(find(entries, ['schedule', 'lrschedule'])));
  add('optimizer', showValue(find(entries, ['optimizer', 'optim'])));
  const opts = find(entries, ['optimizeroptions']);
  if (opts && typeof opts === 'object' && Object.keys(opts).length > 0) {
    add(
      'optimizer options',
      Object.entries(opts)
        .map(([k, v]) => `${k}=${v}`)
        .join(' '),
    );
  }
  const stateBytes = find(entries, ['optimizerstatebytes']);
  const perParam = find(entries, ['optimizerstatebytesperparam']);
  if (typeof stateBytes === 'number') {
    const per = typeof perParam === 'number' ? ` (${formatNumber(perParam)} B/param)` : '';
    add('optimizer state', `${formatNumber(stateBytes / 2 ** 20)} MiB${per}`);
  }
  add('data', showValue(find(entries, ['data', 'dataset', 'corpus', 'datapath'])));
  add('seed', showValue(find(entries, ['seed'])));
  return facts;
}

function lastFinite(metrics: RunMetrics, key: string): { step: number; value: number } | undefined {
  for (let i = metrics.rows.length - 1; i >= 0; i--) {
    const v = metrics.rows[i].values[key];
    if (typeof v === 'number') return { step: metrics.rows[i].step, value: v };
  }
  return undefined;
}

function bestFinite(metrics: RunMetrics, key: string): { step: number; value: number } | undefined {
  let best: { step: number; value: number } | undefined;
  for (const row of metrics.rows) {
    const v = row.values[key];
    if (typeof v === 'number' && (!best || v < best.value)) best = { step: row.step, value: v };
  }
  return best;
}

function stats(metrics: RunMetrics, key: string): { count: number; sum: number } {
  let count = 0;
  let sum = 0;
  for (const row of metrics.rows) {
    const v = row.values[key];
    if (typeof v === 'number') {
      count++;
      sum += v;
    }
  }
  return { count, sum };
}

const atStep = (p: { step: number; value: number }) => `${formatNumber(p.value)} (step ${p.step})`;

/** Summary numbers over the merged rows; each is omitted when its metric was never logged. */
export function summaryFacts(metrics: RunMetrics): Fact[] {
  const facts: Fact[] = [];
  const add = (label: string, value: string | undefined) => {
    if (value) facts.push({ label, value });
  };
  add('last step', String(metrics.rows[metrics.rows.length - 1].step));
  const train = lastFinite(metrics, 'loss');
  add('final train loss', train && atStep(train));
  const bestVal = bestFinite(metrics, 'val_loss');
  add('best val loss', bestVal && atStep(bestVal));
  const finalVal = lastFinite(metrics, 'val_loss');
  add('final val loss', finalVal && atStep(finalVal));
  const tokens = lastFinite(metrics, 'tokens');
  add('tokens seen', tokens && formatNumber(tokens.value));
  const tps = stats(metrics, 'tokens_per_s');
  add('mean tokens/s', tps.count ? formatNumber(tps.sum / tps.count) : undefined);
  const ms = stats(metrics, 'ms');
  add('total time', ms.count ? `${formatDuration(ms.sum / 1000)} (sum of step times)` : undefined);
  const counts = new Map<string, number>();
  for (const e of metrics.events) counts.set(e.event, (counts.get(e.event) ?? 0) + 1);
  add('events', [...counts].map(([name, n]) => `${n} ${name}`).join(', '));
  if (metrics.skippedLines) add('skipped lines', `${metrics.skippedLines} (not valid JSON, e.g. a torn last line)`);
  return facts;
}

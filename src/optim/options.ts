/**
 * Typed option schemas: one table per optimizer drives defaults, validation, the CLI's
 * `--opt KEY=VALUE` parsing and the option lists in `--help`.
 */
import { UserError } from '../errors.ts';

type OptionSpec =
  | { type: 'number'; default?: number; min?: number; max?: number; exclusiveMin?: boolean; exclusiveMax?: boolean; integer?: boolean; doc: string }
  | { type: 'boolean'; default?: boolean; doc: string }
  | { type: 'enum'; values: readonly string[]; default?: string; doc: string };

export type Schema = Record<string, OptionSpec>;

/** The learning rate: no default, since the trainer or a schedule supplies it. */
export function lrSpec(doc = 'learning rate'): OptionSpec {
  return { type: 'number', min: 0, doc };
}

/** A decay or interpolation factor in [0, 1] (β, μ); `exclusiveMax` where 1 would divide by 0. */
export function betaSpec(value: number, doc: string, exclusiveMax = false): OptionSpec {
  return { type: 'number', default: value, min: 0, max: 1, ...(exclusiveMax && { exclusiveMax }), doc };
}

export function weightDecaySpec(value: number, doc = 'decoupled weight decay λ (matrices)'): OptionSpec {
  return { type: 'number', default: value, min: 0, doc };
}

export function decayEmbeddingsSpec(value: boolean): OptionSpec {
  return { type: 'boolean', default: value, doc: 'also decay the embeddings' };
}

export type OptionValue = number | boolean | string;

/** Fills defaults and checks every given option against the schema (unknown keys, types, ranges). */
export function resolveOptions<O>(name: string, schema: Schema, given: Record<string, unknown>): O {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(given)) {
    if (given[key] === undefined) continue;
    if (!(key in schema)) {
      throw new UserError(`optimizer ${name} has no option "${key}"; its options: ${Object.keys(schema).join(', ')}`);
    }
  }
  for (const [key, spec] of Object.entries(schema)) {
    const v = given[key] ?? spec.default;
    if (v !== undefined) checkValue(name, key, spec, v);
    out[key] = v;
  }
  return out as O;
}

function checkValue(name: string, key: string, spec: OptionSpec, v: unknown): void {
  const bad = (why: string) => new UserError(`optimizer ${name}: option ${key} ${why}`);
  if (spec.type === 'number') {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(`must be a finite number, got ${JSON.stringify(v)}`);
    if (spec.integer && !Number.isInteger(v)) throw bad(`must be an integer, got ${v}`);
    if (spec.min !== undefined && (spec.exclusiveMin ? v <= spec.min : v < spec.min)) {
      throw bad(`must be ${spec.exclusiveMin ? '>' : '≥'} ${spec.min}, got ${v}`);
    }
    if (spec.max !== undefined && (spec.exclusiveMax ? v >= spec.max : v > spec.max)) {
      throw bad(`must be ${spec.exclusiveMax ? '<' : '≤'} ${spec.max}, got ${v}`);
    }
  } else if (spec.type === 'boolean') {
    if (typeof v !== 'boolean') throw bad(`must be true or false, got ${JSON.stringify(v)}`);
  } else if (typeof v !== 'string' || !spec.values.includes(v)) {
    throw bad(`must be one of ${spec.values.join(', ')}, got ${JSON.stringify(v)}`);
  }
}

/** Parses the text of `--opt KEY=VALUE` by the option's type. */
export function parseOptionText(name: string, schema: Schema, text: string): [string, OptionValue] {
  const eq = text.indexOf('=');
  if (eq <= 0) throw new UserError(`--opt ${text}: expected KEY=VALUE, e.g. --opt beta2=0.99`);
  const key = text.slice(0, eq).trim();
  const raw = text.slice(eq + 1).trim();
  const spec = schema[key];
  if (!spec) throw new UserError(`optimizer ${name} has no option "${key}"; its options: ${Object.keys(schema).join(', ')}`);
  if (spec.type === 'number') {
    const v = Number(raw);
    if (raw === '' || !Number.isFinite(v)) throw new UserError(`--opt ${key}=${raw}: not a number`);
    return [key, v];
  }
  if (spec.type === 'boolean') {
    if (raw !== 'true' && raw !== 'false') throw new UserError(`--opt ${key}=${raw}: expected true or false`);
    return [key, raw === 'true'];
  }
  return [key, raw];
}

/** One line per option, for --help. */
export function describeSchema(schema: Schema): string[] {
  return Object.entries(schema).map(([key, s]) => {
    const def = s.default === undefined ? '' : ` (default ${showDefault(s.default)})`;
    const values = s.type === 'enum' ? ` [${s.values.join('|')}]` : '';
    return `${key}${values}${def}: ${s.doc}`;
  });
}

/** 1e-6 rather than 0.000001. */
function showDefault(v: number | boolean | string): string {
  return typeof v === 'number' && v !== 0 && Math.abs(v) < 1e-3 ? v.toExponential() : String(v);
}

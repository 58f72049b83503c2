/** Argument parsers for commander that reject bad values with one clear line. */
import { InvalidArgumentError } from 'commander';

export function int(min = 0): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!/^-?\d+$/.test(v.trim()) || !Number.isSafeInteger(n)) throw new InvalidArgumentError(`expected an integer, got "${v}"`);
    if (n < min) throw new InvalidArgumentError(`must be ≥ ${min}, got ${n}`);
    return n;
  };
}

export function float(min = -Infinity, exclusiveMin = false): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError(`expected a number, got "${v}"`);
    if (exclusiveMin ? n <= min : n < min) throw new InvalidArgumentError(`must be ${exclusiveMin ? '>' : '≥'} ${min}, got ${n}`);
    return n;
  };
}

/** Collects a repeatable flag's values in order (commander's argParser for `--opt`, `--fault`, …). */
export function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

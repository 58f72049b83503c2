/**
 * Pieces every `keel experiment …` shares: an experiment directory that is either fresh or an
 * earlier run of the same experiment with the same settings (anything else is refused before it
 * is touched), input checks that throw UserError, and the names and colours of grid values.
 * The runner that trains a grid is in grid.ts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.ts';
import type { GPTConfig } from '../model/config.ts';
import { writeFileAtomic } from '../io/atomic.ts';
const RESULTS = 'results.json';

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
